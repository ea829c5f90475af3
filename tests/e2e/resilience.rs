//! The upstream side under trouble: retries and per-try timeouts, mirrors (delivered after
//! the client has gone, bounded by the route's timeout), outlier detection and circuit
//! breaking, and cluster state kept across reloads.

use lateen_e2e::*;

const RETRIES: &str = r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: half-down, namespace: test}
spec:
  hosts: [half-down.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: {{DOWN}}}}
  - {address: 127.0.0.1, ports: {http: {{A}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: retries, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /r5xx}}]
    retries: {attempts: 3, retryOn: 5xx}
    route: [{destination: {host: svc.test, subset: a}}]
  - match: [{uri: {prefix: /none}}]
    retries: {attempts: 0}
    route: [{destination: {host: svc.test, subset: a}}]
  - match: [{uri: {prefix: /pertry}}]
    retries: {attempts: 2, perTryTimeout: 200ms, retryOn: gateway-error}
    route: [{destination: {host: svc.test, subset: a}}]
  - match: [{uri: {prefix: /halfdown}}]
    route: [{destination: {host: half-down.test}}]
  - match: [{uri: {prefix: /mirror}}]
    mirror: {host: svc.test, subset: b}
    mirrorPercentage: {value: 100}
    route: [{destination: {host: svc.test, subset: a}}]
  - route: [{destination: {host: svc.test, subset: a}}]
"#;

fn count(b: &Backend, needle: &str) -> usize {
    b.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.contains(needle))
        .count()
}

#[tokio::test]
async fn retries_per_try_timeouts_and_mirrors() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let yaml = mesh(&[&a, &b])
        + &RETRIES
            .replace("{{DOWN}}", &free_port().to_string())
            .replace("{{A}}", &a.port().to_string());
    let proxy = Proxy::start(&yaml).await.expect("proxy starts");

    // Istio's default policy: 2 retries on 503 (retriable-status-codes) and connect failures.
    assert_eq!(
        get(&proxy.url("/d/flaky/2/k1")).await.unwrap().status,
        200,
        "{}",
        proxy.log()
    );
    assert_eq!(count(&a, "flaky/2/k1"), 3);
    assert_eq!(get(&proxy.url("/d/flaky/3/k2")).await.unwrap().status, 503);
    assert_eq!(count(&a, "flaky/3/k2"), 3, "1 try + 2 retries");
    assert_eq!(get(&proxy.url("/d/status/500")).await.unwrap().status, 500);
    assert_eq!(count(&a, "status/500"), 1, "500 is not retried by default");

    // retryOn 5xx with 3 attempts.
    assert_eq!(
        get(&proxy.url("/r5xx/flaky/3/k3")).await.unwrap().status,
        200
    );
    assert_eq!(count(&a, "flaky/3/k3"), 4);
    // A small POST body is kept and replayed on the retry.
    let r = send(
        "POST",
        &proxy.url("/r5xx/flaky/1/kp/echo-body"),
        &[],
        "payload",
    )
    .await
    .unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "payload"));
    assert_eq!(count(&a, "flaky/1/kp"), 2);
    // attempts: 0 disables retries.
    assert_eq!(
        get(&proxy.url("/none/flaky/1/k4")).await.unwrap().status,
        503
    );
    assert_eq!(count(&a, "flaky/1/k4"), 1);

    // A slow first try (3 s) is cut by perTryTimeout and retried: the answer comes well
    // before the first try would have.
    let started = std::time::Instant::now();
    let r = get(&proxy.url("/pertry/slowfirst/k5")).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(count(&a, "slowfirst/k5"), 2);
    // Envoy's cluster stats count the retries (2 + 2 + 3 + 1 + 1) and the cut try.
    assert_eq!(
        proxy
            .stat("cluster.outbound|80|a|svc.test.upstream_rq_retry")
            .await,
        9.0
    );
    assert_eq!(
        proxy
            .stat("cluster.outbound|80|a|svc.test.upstream_rq_per_try_timeout")
            .await,
        1.0
    );

    // One endpoint refuses connections: the default policy retries on another host.
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/halfdown")).await.unwrap().status, 200);
    }

    // Mirror: the client gets a's answer, b gets a copy with the -shadow host.
    let r = send(
        "GET",
        &proxy.url("/mirror/x"),
        &[("host", "shop.example.com")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.header("x-backend"), Some("a"));
    eventually("the mirror", || async { count(&b, "/mirror/x") > 0 }).await;
    assert_eq!(b.last().header("host"), Some("shop.example.com-shadow"));
    // Requests with a body are mirrored too.
    send("POST", &proxy.url("/mirror/post"), &[], "data")
        .await
        .unwrap();
    eventually("the POST mirror", || async {
        count(&b, "/mirror/post") > 0
    })
    .await;
    assert_eq!(b.last().method, "POST");
}

#[tokio::test]
async fn outlier_detection_and_circuit_breaking() {
    let (a, bad) = (
        Backend::start("a").await,
        Backend::failing("bad", 500).await,
    );
    let yaml = mesh(&[&a, &bad])
        + &r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pool, namespace: test}
spec:
  hosts: [pool.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: {{A}}}}
  - {address: 127.0.0.1, ports: {http: {{BAD}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: allbad, namespace: test}
spec:
  hosts: [allbad.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: {{BAD}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pool, namespace: test}
spec:
  host: pool.test
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: allbad, namespace: test}
spec:
  host: allbad.test
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, baseEjectionTime: 60s, maxEjectionPercent: 100}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cb, namespace: test}
spec:
  hosts: [cb.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: {{A}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cb, namespace: test}
spec:
  host: cb.test
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /pool}}]
    route: [{destination: {host: pool.test}}]
  - match: [{uri: {prefix: /allbad}}]
    route: [{destination: {host: allbad.test}}]
  - route: [{destination: {host: cb.test}}]
"#
        .replace("{{A}}", &a.port().to_string())
        .replace("{{BAD}}", &bad.port().to_string());
    let proxy = Proxy::start(&yaml).await.expect("proxy starts");

    // The failing endpoint is ejected after 2 consecutive 5xx; then only `a` answers.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(get(&proxy.url("/pool")).await.unwrap().status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 500).count(),
        2,
        "{statuses:?}"
    );
    assert!(statuses[10..].iter().all(|s| *s == 200), "{statuses:?}");
    // With every host ejected: no healthy upstream.
    assert_eq!(get(&proxy.url("/allbad")).await.unwrap().status, 500);
    let r = get(&proxy.url("/allbad")).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"));
    for cluster in ["pool.test", "allbad.test"] {
        let stat = |s: &str| format!("cluster.outbound|80||{cluster}.outlier_detection.{s}");
        assert_eq!(proxy.stat(&stat("ejections_enforced_total")).await, 1.0);
        assert_eq!(proxy.stat(&stat("ejections_active")).await, 1.0);
    }

    // Circuit breaker: 1 connection + 1 pending; concurrent slow requests overflow.
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            // Long enough that all six reach the proxy before the first is answered, on a
            // loaded machine too.
            let url = proxy.url("/slow/2000");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let mut overflow = 0;
    let mut ok = 0;
    for c in calls {
        let r = c.await.unwrap().unwrap();
        match r.status {
            200 => ok += 1,
            503 => {
                assert_eq!(r.header("x-envoy-overloaded"), Some("true"));
                assert!(r.body.ends_with("reset reason: overflow"), "{}", r.body);
                overflow += 1;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(ok, 2, "max 1 connection + 1 pending in flight");
    assert_eq!(overflow, 4);
    let cb = |s: &str| format!("cluster.outbound|80||cb.test.{s}");
    assert_eq!(proxy.stat(&cb("upstream_rq_pending_overflow")).await, 4.0);
    assert_eq!(proxy.stat(&cb("upstream_rq_pending_total")).await, 1.0);
    assert_eq!(proxy.stat(&cb("upstream_cx_total")).await, 1.0);
    // The pending request waited for the one connection: the two ran one after the other.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(3990),
        "{:?}",
        started.elapsed()
    );
}

/// A shadow request does not depend on the downstream connection: curl closes its
/// connection after each response, and every mirror still arrives.
#[tokio::test]
async fn mirrors_arrive_when_the_client_closes_after_each_response() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let yaml = mesh(&[&a, &b])
        + r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: svc.test, subset: a}}]
    mirror: {host: svc.test, subset: b}
    mirrorPercentage: {value: 100}
"#;
    // Two workers: a connection and its mirror may be served by either.
    let proxy = Proxy::start_with(&yaml, &["--concurrency", "2"])
        .await
        .unwrap();
    for i in 0..20 {
        let url = proxy.url(&format!("/shadowed/{i}"));
        // Off the test's runtime, which serves the backends.
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(url)
                .output()
        })
        .await
        .expect("join")
        .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
    eventually("20 of 20 mirrors", || async { b.count() == 20 }).await;
    assert_eq!(a.count(), 20);
    // No mirror is sent twice.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(b.count(), 20);
}

/// A mirror the shadow cluster does not answer within the route's timeout is dropped and
/// counted, and never holds the client's response.
#[tokio::test]
async fn a_mirror_past_the_route_timeout_is_dropped_and_counted() {
    let a = Backend::start("a").await;
    // Accepts and reads, never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            held.push(c);
        }
    });
    let yaml = mesh(&[&a])
        + &format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: silent, namespace: test}}
spec:
  hosts: [silent.test]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {silent_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: test}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: svc.test, subset: a}}}}]
    timeout: 2s
    mirror: {{host: silent.test}}
    mirrorPercentage: {{value: 100}}
"#
        );
    let proxy = Proxy::start(&yaml).await.unwrap();
    assert_eq!(get(&proxy.url("/x")).await.unwrap().status, 200);
    // The response came before the mirror timed out: it did not wait for the mirror (a
    // clock bound would only hold on an idle machine).
    let stat = "cluster.outbound|80||silent.test.upstream_rq_timeout";
    assert_eq!(
        proxy.host_stats().await.get(stat).copied().unwrap_or(0.0),
        0.0
    );
    eventually("the mirror's timeout counted", || async {
        proxy.host_stats().await.get(stat) == Some(&1.0)
    })
    .await;
}

/// A reload that does not change a cluster keeps its state, as Envoy keeps an unchanged
/// cluster: an ejected endpoint stays ejected and the cluster's stats keep counting.
#[tokio::test]
async fn an_ejected_endpoint_stays_ejected_across_an_unrelated_reload() {
    let (a, bad) = (
        Backend::start("a").await,
        Backend::failing("bad", 500).await,
    );
    let yaml = mesh(&[&a])
        + &r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pool, namespace: test}
spec:
  hosts: [pool.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: {{A}}}}
  - {address: 127.0.0.1, ports: {http: {{BAD}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pool, namespace: test}
spec:
  host: pool.test
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: pool.test}}]
"#
        .replace("{{A}}", &a.port().to_string())
        .replace("{{BAD}}", &bad.port().to_string());
    let proxy = Proxy::start(&yaml).await.expect("proxy starts");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(&proxy.url("/x")).await.unwrap().status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 500).count(),
        1,
        "{statuses:?}"
    );
    let stat = |s: &str| format!("cluster.outbound|80||pool.test.{s}");
    assert_eq!(
        proxy
            .stat(&stat("outlier_detection.ejections_active"))
            .await,
        1.0
    );
    let before = proxy.stat(&stat("upstream_rq_total")).await;

    // An unrelated change: a new ServiceEntry nobody routes to.
    proxy.rewrite(
        &(yaml.clone()
            + r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: unrelated, namespace: test}
spec:
  hosts: [unrelated.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: 9}}]
"#),
    );
    eventually("the reload", || async {
        proxy
            .stats()
            .await
            .contains("config_reload_total{result=\"success\"} 1")
    })
    .await;
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/x")).await.unwrap().status, 200);
    }
    assert_eq!(
        bad.count(),
        1,
        "the ejected endpoint got no request after the reload"
    );
    assert_eq!(
        proxy
            .stat(&stat("outlier_detection.ejections_active"))
            .await,
        1.0
    );
    assert_eq!(proxy.stat(&stat("upstream_rq_total")).await, before + 10.0);
}
