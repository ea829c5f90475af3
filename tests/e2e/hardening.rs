//! Request hardening, on raw sockets: header limits, slow clients, request smuggling and
//! body limits are refused before anything reaches the upstream.

use lateen_e2e::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The gateway routing everything to v1, with these Bootstrap `limits` (YAML flow).
fn limited(v1: &Backend, limits: &str) -> String {
    mesh(&[v1]) + &bootstrap(&format!("  limits: {limits}")) + &route_all("v1")
}

const LIMITS: &str = "{maxRequestHeadersKb: 8, maxHeadersCount: 20, requestHeadersTimeout: 500ms, maxRequestBodyBytes: 1000}";

/// Sends raw bytes and returns what came back before the proxy closed or 3 s passed.
fn raw(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // One response is enough; keep-alive would hold the socket open.
                if out.windows(4).any(|w| w == b"\r\n\r\n") && !out.starts_with(b"HTTP/1.1 100") {
                    std::thread::sleep(Duration::from_millis(50));
                    if let Ok(n) = s.read(&mut buf) {
                        out.extend_from_slice(&buf[..n]);
                    }
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status(resp: &str) -> &str {
    resp.split(' ').nth(1).unwrap_or("")
}

#[tokio::test]
async fn limits_slow_clients_and_smuggling_are_refused() {
    let v1 = Backend::start("v1").await;
    let proxy = Proxy::start(&limited(&v1, LIMITS))
        .await
        .expect("proxy starts");
    let port = proxy.port;
    let seen_before = v1.count();
    let run = move |b: Vec<u8>| tokio::task::spawn_blocking(move || raw(port, &b));

    // A normal request passes.
    let ok = run(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec())
        .await
        .unwrap();
    assert_eq!(status(&ok), "200", "{ok}");

    // Too many headers, and headers too large: 431.
    let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..30 {
        many.extend_from_slice(format!("x-h{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let r = run(many).await.unwrap();
    assert_eq!(status(&r), "431", "too many headers: {r}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nx-big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let r = run(big.into_bytes()).await.unwrap();
    assert_eq!(status(&r), "431", "headers over 8 KiB: {r}");

    // Slowloris: headers never finished; the proxy gives up after the timeout.
    let started = Instant::now();
    let r = run(b"GET / HTTP/1.1\r\nHost: a\r\nx-slow: 1\r\n".to_vec())
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500) && took >= Duration::from_millis(450),
        "closed after {took:?}: {r}"
    );
    assert!(r.is_empty() || status(&r) == "408", "{r}");

    // Smuggling. Both Content-Length and Transfer-Encoding: the chunked framing wins
    // (RFC 9112 §6.3) and the conflicting Content-Length never reaches the upstream, which
    // gets the message re-framed, so the two cannot disagree on where it ends.
    let r = run(
        b"POST /clte HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
            .to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(status(&r), "200", "{r}");
    let seen = v1.last();
    assert_eq!(seen.path, "/clte");
    assert_ne!(seen.header("content-length"), Some("4"), "{seen:?}");
    // Two different Content-Lengths, and obs-fold, are refused with 400.
    for (what, req) in [
        (
            "two CLs",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        ),
        (
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: a\r\nx-folded: one\r\n two\r\n\r\n",
        ),
    ] {
        let r = run(req.as_bytes().to_vec()).await.unwrap();
        assert_eq!(status(&r), "400", "{what}: {r}");
    }

    // A body over the limit: 413, by its Content-Length or as it streams.
    let body = "x".repeat(2000);
    let r = run(format!(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes())
    .await
    .unwrap();
    assert_eq!(status(&r), "413", "{r}");
    let r = run(
        format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
            .into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(status(&r), "413", "chunked: {r}");

    // Only the normal request and the re-framed one reached the upstream.
    assert_eq!(v1.count(), seen_before + 2);
}

#[tokio::test]
async fn http2_stream_limit_and_rapid_reset() {
    let v1 = Backend::start("v1").await;
    let proxy = Proxy::start(&limited(&v1, "{maxConcurrentStreams: 10}"))
        .await
        .expect("proxy starts");
    let url = format!("http://127.0.0.1:{}/", proxy.port);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (resp, _) = client
        .send_request(http::Request::get(&url).body(()).unwrap(), true)
        .unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    // The stream limit is advertised in SETTINGS.
    assert_eq!(client.current_max_send_streams(), 10);

    // Rapid reset (CVE-2023-44487): streams opened and cancelled at once, in bulk.
    let mut opened = 0;
    for _ in 0..500 {
        let Ok(c) = client.clone().ready().await else {
            break;
        };
        client = c;
        match client.send_request(http::Request::get(&url).body(()).unwrap(), false) {
            Ok((_, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                opened += 1;
            }
            Err(_) => break,
        }
    }
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), conn)
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    let shown = format!("{ended:?}");
    // The proxy sends GOAWAY ENHANCE_YOUR_CALM and closes. When the client is still
    // writing resets at that moment, the close can reach it as a TCP reset, which on Linux
    // discards the unread GOAWAY, or as a broken pipe on its next write: that too is the
    // proxy ending the connection.
    let err = ended.err();
    let reset = err.as_ref().and_then(|e| e.get_io()).is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        )
    });
    let reason = err.as_ref().and_then(|e| e.reason());
    assert!(
        reason == Some(h2::Reason::ENHANCE_YOUR_CALM) || reset,
        "GOAWAY after {opened} reset streams: {shown}"
    );
    // Cancelled streams cost the upstream little: most never reached it.
    let forwarded = v1.count();
    assert!(
        forwarded < opened / 4,
        "{forwarded} of {opened} reset streams went upstream"
    );
    // Other clients are served as before.
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    assert_eq!(get_h2(&proxy.url("/")).await.unwrap().status, 200);
}

#[test]
fn the_admin_api_stays_on_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    // The refusal comes before the config is read.
    std::fs::write(dir.path().join("config.yaml"), route_all("v1")).unwrap();
    let out = std::process::Command::new(paths().bin)
        .arg("run")
        .arg("--config")
        .arg(dir.path())
        .args(["--admin-address", &format!("0.0.0.0:{}", free_port())])
        .args(["--stats-address", "off", "--health-address", "off"])
        .arg("--filters-dir")
        .arg(paths().wasm_dir)
        .env_remove("LATEEN_ADMIN_TOKEN")
        .output()
        .expect("lateen runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused to start: {err}");
    assert!(
        err.contains("reachable from the network") && err.contains("--admin-token"),
        "{err}"
    );
}

#[tokio::test]
async fn a_request_body_that_trickles_past_the_request_timeout_gets_408() {
    let v1 = Backend::start("v1").await;
    let proxy = Proxy::start(&limited(&v1, "{requestTimeout: 800ms}"))
        .await
        .expect("proxy starts");
    let port = proxy.port;
    // A whole body in time passes.
    let ok = tokio::task::spawn_blocking(move || {
        raw(
            port,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody",
        )
    })
    .await
    .unwrap();
    assert_eq!(status(&ok), "200", "{ok}");
    // 10 of 100 announced bytes, then silence (slow POST). Timed to the answer's first
    // bytes.
    let (r, took) = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = Instant::now();
        s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        let took = started.elapsed();
        let mut text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.ends_with("request timeout") {
            if let Ok(m) = s.read(&mut buf) {
                text.push_str(&String::from_utf8_lossy(&buf[..m]));
            }
        }
        (text, took)
    })
    .await
    .unwrap();
    assert_eq!(status(&r), "408", "{r}");
    assert!(r.ends_with("request timeout"), "{r}");
    assert!(
        took >= Duration::from_millis(750) && took < Duration::from_millis(2500),
        "{took:?}"
    );
}
