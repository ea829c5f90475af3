//! HTTP/1.1 upgrades: a real WebSocket client and server (tokio-tungstenite) talking
//! through the proxy, which routes the handshake like any request and then splices the
//! connection, closing it after the cluster's `tcp.idleTimeout` without traffic.

use futures_util::{SinkExt, StreamExt};
use lateen_e2e::*;
use std::time::{Duration, Instant};
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

fn config(port: u16) -> String {
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
"#
    )
}

#[tokio::test]
async fn websockets_pass_through_and_idle_ones_close() {
    let server = ws_server("chat").await;
    let proxy = Proxy::start(&config(server)).await.unwrap();
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

    // A path no route takes: the handshake gets the proxy's 404, no upgrade.
    let tcp = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    let err = tokio_tungstenite::client_async(format!("ws://chat.test:{}/nope", proxy.port), tcp)
        .await
        .expect_err("no route");
    assert!(err.to_string().contains("404"), "{err}");

    // Idle past tcp.idleTimeout: the proxy closes the spliced connection.
    let started = Instant::now();
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
