//! The log phase runs for every stream and every filter of its chain, whatever ended the
//! stream (Envoy calls each filter's log callback): local replies from a fault abort, a rate
//! limit and an authorization denial are counted in `istio_requests_total` with their codes
//! and response flags, as Istio counts them.

use lateen_e2e::*;

const ROUTES: &str = r#"---
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
  - name: aborted
    match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: svc.test, subset: v1}}]
  - name: limited
    match: [{uri: {prefix: /limited}}]
    route: [{destination: {host: svc.test, subset: v1}}]
  - name: rest
    route: [{destination: {host: svc.test, subset: v1}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: per-route, namespace: istio-system}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: GATEWAY}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          stat_prefix: http_local_rate_limiter
  - applyTo: HTTP_ROUTE
    match:
      context: GATEWAY
      routeConfiguration:
        vhost:
          route: {name: limited}
    patch:
      operation: MERGE
      value:
        typed_per_filter_config:
          envoy.filters.http.local_ratelimit:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
              token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 3600s}
              filter_enabled: {default_value: {numerator: 100, denominator: HUNDRED}}
              filter_enforced: {default_value: {numerator: 100, denominator: HUNDRED}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: istio-system}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
"#;

/// The sum of `istio_requests_total` over the series whose labels include all of `labels`.
fn requests(text: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn local_replies_are_counted_with_their_codes_and_flags() {
    let v1 = Backend::start("v1").await;
    let proxy = Proxy::start(&(mesh(&[&v1]) + ROUTES))
        .await
        .expect("proxy starts");
    let mut seen = Vec::new();
    for path in [
        "/abort", "/abort", "/limited", "/limited", "/limited", "/admin/x", "/admin/y", "/ok",
    ] {
        seen.push((path, get(&proxy.url(path)).await.unwrap().status));
    }
    assert_eq!(
        seen,
        [
            ("/abort", 418),
            ("/abort", 418),
            ("/limited", 200),
            ("/limited", 429),
            ("/limited", 429),
            ("/admin/x", 403),
            ("/admin/y", 403),
            ("/ok", 200),
        ]
    );
    let expect = [
        (
            &[("response_code", "418"), ("response_flags", "FI")][..],
            2.0,
        ),
        (
            &[("response_code", "429"), ("response_flags", "RL")][..],
            2.0,
        ),
        (&[("response_code", "403")][..], 2.0),
        (&[("response_code", "200")][..], 2.0),
    ];
    let mut text = String::new();
    for _ in 0..50 {
        text = proxy.stats().await;
        if expect.iter().all(|(l, n)| requests(&text, l) == *n) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let counted: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .collect();
    for (labels, n) in expect {
        assert_eq!(requests(&text, labels), n, "{labels:?}\n{counted:#?}");
    }
    assert_eq!(
        v1.count(),
        2,
        "only the two requests let through reach the upstream"
    );
}
