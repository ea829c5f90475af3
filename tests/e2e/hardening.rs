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

/// Writes `parts` to a new connection, `gap` apart, then reads until the proxy closes or
/// `wait` passes; off the test's runtime, which serves the backends.
async fn exchange(port: u16, parts: Vec<Vec<u8>>, gap: Duration, wait: Duration) -> String {
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(wait)).unwrap();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(gap);
            }
            s.write_all(p).unwrap();
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap()
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
    // The upper bound is raw()'s own 3 s read timeout: the proxy closed, the client did not.
    assert!(
        took < Duration::from_millis(2950) && took >= Duration::from_millis(450),
        "closed after {took:?}: {r}"
    );
    assert!(r.is_empty() || status(&r) == "408", "{r}");

    // Smuggling. Both Content-Length and Transfer-Encoding, in either order: 400 and the
    // connection closed, as Envoy answers (unless allowChunkedLength), whatever the split.
    for req in [
        "POST /clte HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /tecl HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n",
    ] {
        let r = run(req.as_bytes().to_vec()).await.unwrap();
        assert_eq!(status(&r), "400", "{req}: {r}");
        assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
    }
    let split = exchange(
        port,
        vec![
            b"POST /split HTTP/1.1\r\nHost: a\r\nContent-Len".to_vec(),
            b"gth: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ],
        Duration::from_millis(50),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status(&split), "400", "split: {split}");
    // A chunked request alone, and a body holding what looks like the two fields, pass on
    // one keep-alive connection.
    let body = "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n";
    let two = format!(
        "POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        body.len()
    );
    let r = exchange(
        port,
        vec![two.into_bytes()],
        Duration::ZERO,
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(r.matches("HTTP/1.1 200").count(), 2, "{r}");
    assert_eq!(v1.last().path, "/chunked");
    // A Transfer-Encoding that does not end in chunked, two different Content-Lengths,
    // obs-fold and a bare CR in a value are refused with 400.
    for (what, req) in [
        (
            "gzip TE",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabcd",
        ),
        (
            "two CLs",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        ),
        (
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: a\r\nx-folded: one\r\n two\r\n\r\n",
        ),
        ("bare CR", "GET / HTTP/1.1\r\nHost: a\r\nx-cr: a\rb\r\n\r\n"),
    ] {
        let r = run(req.as_bytes().to_vec()).await.unwrap();
        assert_eq!(status(&r), "400", "{what}: {r}");
    }
    // A request line over the header limit: 431 (414 past hyper's 64 KiB URI cap).
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(20_000));
    let r = run(long.into_bytes()).await.unwrap();
    assert!(matches!(status(&r), "431" | "414"), "long URI: {r}");

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

    // Only the normal request and the two on one connection reached the upstream.
    assert_eq!(v1.count(), seen_before + 3);
}

#[tokio::test]
async fn allow_chunked_length_lets_the_chunked_framing_win() {
    let v1 = Backend::start("v1").await;
    let proxy = Proxy::start(&limited(&v1, "{allowChunkedLength: true}"))
        .await
        .expect("proxy starts");
    let port = proxy.port;
    let r = tokio::task::spawn_blocking(move || {
        raw(port, b"POST /clte HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    })
    .await
    .unwrap();
    assert_eq!(status(&r), "200", "{r}");
    // The conflicting length never reaches the upstream, which gets the message re-framed.
    let seen = v1.last();
    assert_eq!(seen.path, "/clte");
    assert_ne!(seen.header("content-length"), Some("4"), "{seen:?}");
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
        took >= Duration::from_millis(750) && took < Duration::from_millis(4500),
        "{took:?}"
    );
}

#[tokio::test]
async fn overload_caps_connections_and_sheds_requests_at_the_memory_limit() {
    let v1 = Backend::start("v1").await;
    // 1 MiB of anonymous memory: the proxy is over it from the start.
    let proxy = Proxy::start(&limited(&v1, "{maxConnections: 3, maxHeapBytes: 1048576}"))
        .await
        .expect("proxy starts");
    let r = get(&proxy.url("/")).await.unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("x-envoy-overloaded"), Some("true"), "{r:?}");
    assert_eq!(r.body, "envoy overloaded");
    assert_eq!(v1.count(), 0, "a shed request never goes upstream");

    // Raised by a reload: served again.
    proxy.rewrite(&limited(
        &v1,
        "{maxConnections: 3, maxHeapBytes: 68719476736}",
    ));
    eventually("requests are accepted again", || async {
        get(&proxy.url("/")).await.unwrap().status == 200
    })
    .await;

    // Three connections held open, each shown served by a request on it (kept alive); a
    // fourth is closed at accept, and counted. The connections of the requests above may
    // still hold their slots for a moment: wait until none is open.
    let port = proxy.port;
    let active = format!("http.127.0.0.1_{port}.downstream_cx_active");
    eventually("earlier connections closed", || async {
        proxy.stat(&active).await == 0.0
    })
    .await;
    let held: Vec<TcpStream> = tokio::task::spawn_blocking(move || {
        (0..3)
            .map(|i| {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                let r = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert_eq!(status(&r), "200", "held connection {i}: {r}");
                s
            })
            .collect()
    })
    .await
    .unwrap();
    let r = tokio::task::spawn_blocking(move || {
        raw(
            port,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(r.is_empty(), "a fourth connection past maxConnections: {r}");
    let overflow = format!("listener.127.0.0.1_{port}.downstream_global_cx_overflow");
    assert!(proxy.stat(&overflow).await >= 1.0);
    // Released slots are reused.
    drop(held);
    eventually(
        "a new connection is served once the others closed",
        || async { get(&proxy.url("/")).await.is_ok_and(|r| r.status == 200) },
    )
    .await;
}

/// Runs one attack of tests/h2/abuse.py (raw frames from hyperframe and hpack) against
/// `port`, and returns its JSON report.
fn h2_abuse(port: u16, attack: &str) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("h2/abuse.py");
    let out = std::process::Command::new(test_python())
        .arg(&script)
        .arg(port.to_string())
        .arg(attack)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} (tests/run.sh makes the venv): {e}",
                test_python().display()
            )
        });
    assert!(
        out.status.success(),
        "{attack}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{attack}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Anonymous resident memory of a process, in KiB.
fn rss_anon_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

// HTTP/2 error codes (RFC 9113 §7).
const FLOW_CONTROL_ERROR: u64 = 3;
const REFUSED_STREAM: u64 = 7;

#[tokio::test]
async fn http2_frame_floods_and_oversized_headers_are_cut_off() {
    let v1 = Backend::start("v1").await;
    // `/held` waits 5 s in a fault delay before its body is read: the window attack's route.
    let held = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /held}}]
    fault: {delay: {fixedDelay: 5s, percentage: {value: 100}}}
    route: [{destination: {host: svc.test, subset: v1}}]
  - route: [{destination: {host: svc.test, subset: v1}}]
"#;
    let proxy = Proxy::start(
        &(mesh(&[&v1])
            + &bootstrap("  limits: {maxConcurrentStreams: 10, maxRequestHeadersKb: 16}")
            + held),
    )
    .await
    .expect("proxy starts");
    let port = proxy.port;
    let abuse = |attack: &'static str| tokio::task::spawn_blocking(move || h2_abuse(port, attack));
    let rss_before = rss_anon_kb(proxy.pid());

    // CONTINUATION flood (CVE-2024-27316 class): the connection is closed long before the
    // 20000 frames are all sent, and nothing reaches the upstream.
    let r = abuse("continuation").await.unwrap();
    assert!(
        r["closed"] == true || !r["goaway"].is_null(),
        "continuation flood: {r}"
    );
    assert!(r["sent_frames"].as_u64().unwrap() < 20_000, "{r}");
    assert!(r["statuses"]["1"] != 200, "{r}");

    // A header block that decodes to ~8 MB from ~6 KB on the wire (HPACK references to one
    // dynamic-table entry): refused by its decoded size, never forwarded.
    let r = abuse("amplify").await.unwrap();
    let refused = r["statuses"]["1"] == 431
        || !r["resets"]["1"].is_null()
        || !r["goaway"].is_null()
        || r["closed"] == true;
    assert!(
        refused && r["statuses"]["1"] != 200,
        "amplified headers: {r}"
    );

    // PING and SETTINGS floods from a client that never reads: the proxy does not queue
    // the answers without bound (it stops reading until the client does).
    for attack in ["ping", "settings"] {
        let r = abuse(attack).await.unwrap();
        let grown = rss_anon_kb(proxy.pid()).saturating_sub(rss_before);
        assert!(
            grown < 64 * 1024,
            "{attack} flood grew the proxy by {grown} KiB: {r}"
        );
    }

    // DATA past the advertised flow-control window: FLOW_CONTROL_ERROR.
    let r = abuse("window").await.unwrap();
    assert!(
        r["goaway"] == FLOW_CONTROL_ERROR || r["resets"]["1"] == FLOW_CONTROL_ERROR,
        "window overrun: {r}"
    );

    // Streams past SETTINGS_MAX_CONCURRENT_STREAMS are refused, the others kept.
    let r = abuse("streams").await.unwrap();
    assert_eq!(r["limit"], 10, "{r}");
    let refused = r["resets"]
        .as_object()
        .unwrap()
        .values()
        .filter(|c| **c == REFUSED_STREAM)
        .count();
    assert!(refused >= 5, "streams over the limit: {r}");

    // Through all of it, other clients are served.
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    assert_eq!(get_h2(&proxy.url("/")).await.unwrap().status, 200);
    assert!(!proxy.log().contains("panicked"), "{}", proxy.log());
}

#[tokio::test]
async fn a_body_that_stalls_past_the_stream_idle_timeout_is_cut() {
    let v1 = Backend::start("v1").await;
    let proxy = Proxy::start(&limited(&v1, "{streamIdleTimeout: 500ms}"))
        .await
        .expect("proxy starts");
    let port = proxy.port;
    // A request body that stops after 10 of 100 bytes: 408 `stream timeout`, flag SI.
    let r = exchange(
        port,
        vec![b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789".to_vec()],
        Duration::ZERO,
        Duration::from_secs(4),
    )
    .await;
    assert_eq!(status(&r), "408", "{r}");
    assert!(r.ends_with("stream timeout"), "{r}");
    // A body that keeps coming, frame after frame, is not cut, however long it takes in all.
    let mut parts = vec![
        b"POST /echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\nConnection: close\r\n\r\n"
            .to_vec(),
    ];
    parts.extend(b"12345678".iter().map(|b| vec![*b]));
    let r = exchange(
        port,
        parts,
        Duration::from_millis(150),
        Duration::from_secs(4),
    )
    .await;
    assert_eq!(status(&r), "200", "{r}");
    assert!(r.ends_with("12345678"), "{r}");
    // A response body the upstream stops sending: the client gets the first frame, then
    // the stream is cut before the upstream's 5 s pause ends (its second frame never comes).
    let r = exchange(
        port,
        vec![b"GET /stall HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()],
        Duration::ZERO,
        Duration::from_secs(8),
    )
    .await;
    assert_eq!(status(&r), "200", "{r}");
    assert!(r.contains("stall0;") && !r.contains("stall1;"), "{r}");
}
