//! TCP proxying: a Gateway `protocol: TCP` port forwarding by VirtualService `tcp` routes to
//! weighted ServiceEntry subsets, `destinationSubnets`, and DestinationRule
//! `tcp.idleTimeout`, with real TCP servers on 127.0.0.1.

use lateen_e2e::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn config(a: u16, b: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {{{{PORT}}}}, name: tcp, protocol: TCP}}
    hosts: ["*"]
    bind: 127.0.0.1
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: test}}
spec:
  hosts: [db.test]
  ports: [{{number: 5432, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: {a}}}, labels: {{version: a}}}}
  - {{address: 127.0.0.1, ports: {{tcp: {b}}}, labels: {{version: b}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: db, namespace: test}}
spec:
  host: db.test
  trafficPolicy: {{connectionPool: {{tcp: {{idleTimeout: 600ms}}}}}}
  subsets:
  - {{name: a, labels: {{version: a}}}}
  - {{name: b, labels: {{version: b}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: test}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  tcp:
  # Not for connections to 127.0.0.1: skipped.
  - match: [{{destinationSubnets: [10.0.0.0/8]}}]
    route: [{{destination: {{host: db.test, subset: b, port: {{number: 5432}}}}}}]
  - match: [{{port: {{{{PORT}}}}}}]
    route:
    - {{destination: {{host: db.test, subset: a, port: {{number: 5432}}}}, weight: 75}}
    - {{destination: {{host: db.test, subset: b, port: {{number: 5432}}}}, weight: 25}}
"#
    )
}

/// Connects through the proxy and reads the backend's greeting.
async fn open(port: u16) -> (BufReader<TcpStream>, String) {
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line))
        .await
        .expect("greeting in time")
        .unwrap();
    (r, line.trim().to_string())
}

#[tokio::test]
async fn tcp_routes_split_by_weight_and_idle_connections_close() {
    let (a, b) = (tcp_echo("a").await, tcp_echo("b").await);
    let proxy = Proxy::start(&config(a, b)).await.unwrap();

    // Bytes go both ways unchanged.
    let (mut c, _) = open(proxy.port).await;
    c.get_mut()
        .write_all(b"hello through lateen")
        .await
        .unwrap();
    let mut buf = [0u8; 20];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello through lateen");
    drop(c);

    // 75/25 over 200 connections (the 10.0.0.0/8 route never takes them).
    let mut to_a = 0;
    for _ in 0..200 {
        let (_, name) = open(proxy.port).await;
        match name.as_str() {
            "a" => to_a += 1,
            "b" => {}
            other => panic!("unexpected backend {other:?}"),
        }
    }
    assert!((130..=170).contains(&to_a), "{to_a} of 200 went to a");

    // A busy connection outlives the 600 ms idle timeout...
    let (mut busy, _) = open(proxy.port).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        busy.get_mut().write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        busy.read_exact(&mut one).await.unwrap();
        // Far inside the timeout, so that a stalled scheduler does not make it idle.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and an idle one is closed after it. The clock starts before the connection
    // does, so that the time taken to open it does not count against the bound.
    let started = Instant::now();
    let (mut idle, _) = open(proxy.port).await;
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection is closed")
        .unwrap();
    assert_eq!(n, 0);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "closed after {waited:?}, before the idle timeout"
    );

    let dump = proxy.config_dump().await;
    let listener = &dump["listeners"][0];
    assert_eq!(listener["tcp"], true, "{dump}");
    assert_eq!(listener["tcpRoutes"].as_array().map(Vec::len), Some(2));
}

#[test]
fn a_port_mixing_tcp_and_http_is_refused() {
    let e = refused(
        "gw.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\n\
         spec:\n  servers:\n  - port: {number: 9000, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n  \
         - port: {number: 9000, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
    );
    assert!(
        e.contains("spec.servers[0].port.protocol") && e.contains("one port speaks one protocol"),
        "{e}"
    );
}
