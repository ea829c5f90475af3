//! Process lifecycle: graceful shutdown on SIGTERM.

use lateen_e2e::*;
use std::time::Duration;

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let a = Backend::start("a").await;
    let yaml = mesh(&[&a])
        + r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: svc.test}}]
"#;
    let mut proxy = Proxy::start(&yaml).await.expect("proxy starts");
    let url = proxy.url("/slow/700");
    let inflight = tokio::spawn(async move { get(&url).await });
    // In flight: the backend has it (it counts a request before its delay).
    eventually("the request reached the backend", || async {
        a.count() == 1
    })
    .await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let r = inflight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "a GET /slow/700");
    let code = tokio::task::spawn_blocking(move || {
        let c = proxy.wait(Duration::from_secs(10));
        (c, proxy.log())
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "{}", code.1);
}
