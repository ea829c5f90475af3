//! HTTP/1.1 upgrades: a real WebSocket client and server (tokio-tungstenite) talking
//! through the proxy, which routes the handshake like any request and then splices the
//! connection, closing it after the cluster's `tcp.idleTimeout` without traffic; and
//! CONNECT, terminated by the proxy and tunnelled to a TCP server.

use futures_util::{SinkExt, StreamExt};
use lateen_e2e::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket server that answers each text message with `NAME: MESSAGE`.
async fn ws_server(name: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if let Message::Text(t) = m {
                        if ws
                            .send(Message::text(format!("{name}: {t}")))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

fn config(port: u16, db: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {{{{PORT}}}}, name: http, protocol: HTTP}}
    hosts: ["*"]
    bind: 127.0.0.1
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: chat, namespace: test}}
spec:
  hosts: [chat.test]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: test}}
spec:
  hosts: [db.test]
  ports: [{{number: 5432, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {db}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: chat, namespace: test}}
spec:
  host: chat.test
  trafficPolicy: {{connectionPool: {{tcp: {{idleTimeout: 700ms}}}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: chat, namespace: test}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - match: [{{uri: {{prefix: /chat}}}}]
    route: [{{destination: {{host: chat.test}}}}]
  - match: [{{method: {{exact: CONNECT}}, authority: {{exact: "db.test:5432"}}}}]
    route: [{{destination: {{host: db.test, port: {{number: 5432}}}}}}]
"#
    )
}

#[tokio::test]
async fn websockets_pass_through_and_idle_ones_close() {
    let server = ws_server("chat").await;
    let proxy = Proxy::start(&config(server, free_port())).await.unwrap();
    let connect = || async {
        let tcp = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        tokio_tungstenite::client_async(format!("ws://chat.test:{}/chat", proxy.port), tcp).await
    };

    let (mut ws, resp) = connect().await.expect("handshake through the proxy");
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an answer")
            .unwrap()
            .unwrap();
        assert_eq!(m.into_text().unwrap().as_str(), format!("chat: hello {i}"));
    }
    // The idle clock runs from the last byte spliced: the answer just read.
    let started = Instant::now();

    // A path no route takes: the handshake gets the proxy's 404, no upgrade.
    let tcp = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    let err = tokio_tungstenite::client_async(format!("ws://chat.test:{}/nope", proxy.port), tcp)
        .await
        .expect_err("no route");
    assert!(err.to_string().contains("404"), "{err}");

    // Idle past tcp.idleTimeout: the proxy closes the spliced connection.
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("closed by the proxy");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_)))),
        "no message expected: {end:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!(
        proxy
            .stat("cluster.outbound|80||chat.test.upstream_rq_1xx")
            .await,
        1.0
    );
}

#[tokio::test]
async fn connect_is_terminated_and_tunnelled_to_the_routed_service() {
    let db = tcp_echo("db").await;
    let proxy = Proxy::start(&config(ws_server("chat").await, db))
        .await
        .unwrap();
    let tunnel = |target: &'static str| {
        let port = proxy.port;
        async move {
            let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut r = BufReader::new(s);
            let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
            r.get_mut().write_all(req.as_bytes()).await.unwrap();
            let mut status = String::new();
            r.read_line(&mut status).await.unwrap();
            // The rest of the response head.
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap() == 0 || line == "\r\n" {
                    break;
                }
            }
            (status, r)
        }
    };
    let (status, mut r) = tunnel("db.test:5432").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut greeting = String::new();
    r.read_line(&mut greeting).await.unwrap();
    assert_eq!(greeting, "db\n");
    r.get_mut().write_all(b"SELECT 1;").await.unwrap();
    let mut echo = [0u8; 9];
    r.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"SELECT 1;");

    // CONNECT to a target no route takes: 404, no tunnel.
    let (status, _) = tunnel("elsewhere.test:22").await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
}
