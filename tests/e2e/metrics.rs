//! Istio's standard metrics from the built-in wasm metrics filter, scraped by a real
//! Prometheus and checked with `promtool`.

use lateen_e2e::*;
use std::process::{Command, Stdio};

/// The gateway as the ingress workload, with routes to v1, v2 and an empty subset.
pub(crate) const GATEWAY_ROUTES: &str = r#"---
apiVersion: lateen.io/v1alpha1
kind: Bootstrap
metadata: {name: lateen, namespace: istio-system}
spec:
  workload: {name: ingress-gw, namespace: istio-system, labels: {app: ingress, istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: svc.test, subset: v2}}]
  - match: [{uri: {prefix: /down}}]
    route: [{destination: {host: svc.test, subset: empty}}]
  - route: [{destination: {host: svc.test, subset: v1}}]
"#;

#[tokio::test]
async fn istio_metrics_reach_a_real_prometheus() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let yaml = mesh(&[&v1, &v2]) + GATEWAY_ROUTES;
    let proxy = Proxy::start(&yaml).await.expect("proxy starts");
    for _ in 0..7 {
        assert_eq!(get(&proxy.url("/v1/x")).await.unwrap().status, 200);
    }
    for _ in 0..3 {
        assert_eq!(get(&proxy.url("/v2/x")).await.unwrap().status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&proxy.url("/down")).await.unwrap().status, 503);
    }

    // The exposition is valid Prometheus text.
    let text = proxy.stats().await;
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (tests/run.sh installs prometheus)");
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let lint =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // The findings allowed are the names others mandate: the unit in Istio's metric name,
    // and Envoy's counters without `_total` (kept as Envoy exports them, for its dashboards).
    let findings: Vec<&str> = lint
        .lines()
        .filter(|l| !l.is_empty())
        .filter(|l| {
            *l != r#"istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds""#
                && !(l.starts_with("envoy_")
                    && l.ends_with(r#" counter metrics should have "_total" suffix"#))
        })
        .collect();
    assert!(findings.is_empty(), "{findings:?}\n{text}");
    assert!(
        text.contains("# TYPE istio_requests_total counter"),
        "{text}"
    );

    // Prometheus scrapes the read-only stats port (Istio's 15090), which serves nothing else.
    let on_stats_port = |path: &str| format!("http://127.0.0.1:{}{path}", proxy.stats);
    assert_eq!(
        get(&on_stats_port("/config_dump")).await.unwrap().status,
        404
    );
    assert_eq!(
        get(&format!("http://127.0.0.1:{}/healthz/ready", proxy.health))
            .await
            .unwrap()
            .status,
        200
    );
    let prom = Prometheus::scraping(&format!("127.0.0.1:{}", proxy.stats)).await;
    let q = |promql: &'static str| {
        let prom = &prom;
        async move { prom.query(promql).await }
    };
    eventually("Prometheus to scrape the proxy", || async {
        q(r#"sum(istio_requests_total)"#).await == Some(12.0)
    })
    .await;
    let by = |v: &'static str| {
        let prom = &prom;
        async move {
            prom.query(&format!(
                r#"sum(istio_requests_total{{reporter="source",source_workload="ingress-gw",source_app="ingress",destination_service="svc.test",destination_service_name="svc",destination_service_namespace="test",destination_version="{v}",response_code="200",response_flags="-"}})"#
            ))
            .await
        }
    };
    assert_eq!(by("v1").await, Some(7.0));
    assert_eq!(by("v2").await, Some(3.0));
    assert_eq!(
        q(r#"sum(istio_requests_total{response_code="503",response_flags="UH",destination_version="empty"})"#).await,
        Some(2.0)
    );
    assert_eq!(
        q(r#"sum(istio_request_duration_milliseconds_count{destination_version="v1"})"#).await,
        Some(7.0)
    );
    // Every v1 response carries the backend's body, so response bytes are counted.
    let bytes = q(r#"sum(istio_response_bytes_sum{destination_version="v1"})"#)
        .await
        .unwrap();
    assert!(bytes >= 7.0 * "v1 GET /v1/x".len() as f64, "{bytes}");
    // Host stats: downstream requests by class, per-cluster upstream requests and
    // connections, and the metrics plugin's own cost.
    assert_eq!(
        q(r#"sum(envoy_http_downstream_rq_total)"#).await,
        Some(12.0)
    );
    assert_eq!(
        q(r#"sum(envoy_http_downstream_rq_xx{envoy_response_code_class="5"})"#).await,
        Some(2.0)
    );
    assert_eq!(
        q(r#"envoy_cluster_upstream_rq_xx{cluster_name="outbound|80|v1|svc.test",envoy_response_code_class="2"}"#).await,
        Some(7.0)
    );
    assert_eq!(
        q(r#"envoy_cluster_upstream_cx_active{cluster_name="outbound|80|v2|svc.test"}"#).await,
        Some(1.0)
    );
    assert!(q(r#"sum(lateen_wasm_callbacks_total{plugin="lateen/metrics"})"#).await >= Some(12.0));
    assert!(q(r#"sum(lateen_wasm_memory_bytes)"#).await > Some(0.0));
    assert_eq!(
        q(r#"sum(envoy_http_downstream_cx_total)"#).await,
        Some(12.0),
        "one connection per request from the test client"
    );
    assert_eq!(
        q(r#"sum(istio_requests_total{destination_workload="unknown",source_principal="unknown",connection_security_policy="unknown",request_protocol="http"})"#)
            .await,
        Some(12.0)
    );
}
