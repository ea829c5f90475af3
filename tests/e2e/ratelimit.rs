//! Local rate limiting by the wasm rate-limit filter: Istio's EnvoyFilter shapes (filter-wide
//! and per route, with descriptors) and Lateen's WasmPlugin shape.

use lateen_e2e::*;

const VS: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - name: limited
    match: [{uri: {prefix: /limited}}]
    route: [{destination: {host: svc.test}}]
  - name: free
    route: [{destination: {host: svc.test}}]
"#;

// Verbatim from Istio's "Enabling Rate Limits using Envoy" task (gateway context).
const FILTER_WIDE: &str = r#"---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: filter-local-ratelimit-svc, namespace: istio-system}
spec:
  workloadSelector:
    labels: {istio: ingressgateway}
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        context: GATEWAY
        listener:
          filterChain:
            filter:
              name: "envoy.filters.network.http_connection_manager"
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
              token_bucket:
                max_tokens: 4
                tokens_per_fill: 4
                fill_interval: 60s
              filter_enabled:
                runtime_key: local_rate_limit_enabled
                default_value:
                  numerator: 100
                  denominator: HUNDRED
              filter_enforced:
                runtime_key: local_rate_limit_enforced
                default_value:
                  numerator: 100
                  denominator: HUNDRED
              response_headers_to_add:
                - append: false
                  header:
                    key: x-local-rate-limit
                    value: 'true'
"#;

#[tokio::test]
async fn istio_filter_wide_local_rate_limit_is_shared_by_workers() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start_with(&(mesh(&[&a]) + VS + FILTER_WIDE), &["--concurrency", "2"])
        .await
        .expect("proxy starts");
    let mut statuses = Vec::new();
    for _ in 0..10 {
        // A new connection each time, spread over both workers by SO_REUSEPORT.
        let r = get(&proxy.url("/anything")).await.unwrap();
        if r.status == 429 {
            assert_eq!(r.body, "local_rate_limited");
            assert_eq!(r.header("x-envoy-ratelimited"), Some("true"));
            assert_eq!(r.header("x-local-rate-limit"), Some("true"));
        }
        statuses.push(r.status);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        ok,
        4,
        "one bucket of 4 for the whole proxy: {statuses:?}\n{}",
        proxy.log()
    );
    assert!(statuses[4..].iter().all(|s| *s == 429), "{statuses:?}");
}

const PER_ROUTE: &str = r#"---
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
        route:
          rate_limits:
          - actions:
            - request_headers: {header_name: x-user, descriptor_key: user}
        typed_per_filter_config:
          envoy.filters.http.local_ratelimit:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
              token_bucket: {max_tokens: 3, tokens_per_fill: 3, fill_interval: 60s}
              filter_enabled: {default_value: {numerator: 100, denominator: HUNDRED}}
              filter_enforced: {default_value: {numerator: 100, denominator: HUNDRED}}
              enable_x_ratelimit_headers: DRAFT_VERSION_03
              descriptors:
              - entries: [{key: user, value: alice}]
                token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s}
"#;

#[tokio::test]
async fn istio_per_route_limit_with_descriptors() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&(mesh(&[&a]) + VS + PER_ROUTE))
        .await
        .expect("proxy starts");
    let status = |r: &Resp| r.status;
    // Unlimited route.
    for _ in 0..6 {
        assert_eq!(status(&get(&proxy.url("/free")).await.unwrap()), 200);
    }
    // alice has her own bucket of 1.
    let alice = [("x-user", "alice")];
    assert_eq!(
        send("GET", &proxy.url("/limited"), &alice, "")
            .await
            .unwrap()
            .status,
        200
    );
    let r = send("GET", &proxy.url("/limited"), &alice, "")
        .await
        .unwrap();
    assert_eq!(r.status, 429, "{}", proxy.log());
    assert_eq!(r.header("x-ratelimit-limit"), Some("1"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    // Everyone else shares the route's default bucket of 3.
    let mut ok = 0;
    for _ in 0..5 {
        ok += (send("GET", &proxy.url("/limited"), &[("x-user", "bob")], "")
            .await
            .unwrap()
            .status
            == 200) as u32;
    }
    assert_eq!(ok, 3);
}

#[tokio::test]
async fn wasmplugin_rate_limit_keyed_by_header() {
    let a = Backend::start("a").await;
    let plugin = r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: ratelimit, namespace: istio-system}
spec:
  url: file://{{WASM}}/lateen_ratelimit.wasm
  pluginConfig:
    rules:
    - name: per-user
      key: {header: x-user}
      match: [{uri: {prefix: /limited}}]
      tokenBucket: {maxTokens: 2, tokensPerFill: 2, fillIntervalMs: 60000}
      rateLimitHeaders: true
"#;
    let proxy = Proxy::start(&(mesh(&[&a]) + VS + plugin))
        .await
        .expect("proxy starts");
    let alice = [("x-user", "alice")];
    let r = send("GET", &proxy.url("/limited"), &alice, "")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.header("x-ratelimit-remaining")),
        (200, Some("1")),
        "{}",
        proxy.log()
    );
    assert_eq!(
        send("GET", &proxy.url("/limited"), &alice, "")
            .await
            .unwrap()
            .status,
        200
    );
    let r = send("GET", &proxy.url("/limited"), &alice, "")
        .await
        .unwrap();
    assert_eq!((r.status, r.body.as_str()), (429, "local_rate_limited"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    // bob has his own bucket; other paths are not limited.
    assert_eq!(
        send("GET", &proxy.url("/limited"), &[("x-user", "bob")], "")
            .await
            .unwrap()
            .status,
        200
    );
    for _ in 0..4 {
        assert_eq!(
            send("GET", &proxy.url("/free"), &alice, "")
                .await
                .unwrap()
                .status,
            200
        );
    }
}

#[tokio::test]
async fn global_limit_is_shared_by_two_proxies_through_redis() {
    let redis = Redis::start().await;
    let a = Backend::start("a").await;
    let config = mesh(&[&a])
        + VS
        + &format!(
            r#"---
apiVersion: lateen.io/v1alpha1
kind: Bootstrap
metadata: {{name: bootstrap, namespace: istio-system}}
spec:
  workload:
    namespace: istio-system
    labels: {{istio: ingressgateway}}
  redis: {{address: "127.0.0.1:{}"}}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: ratelimit, namespace: istio-system}}
spec:
  url: file://{{{{WASM}}}}/lateen_ratelimit.wasm
  pluginConfig:
    rules:
    - name: shared
      mode: global
      tokenBucket: {{maxTokens: 5, tokensPerFill: 5, fillIntervalMs: 60000}}
      rateLimitHeaders: true
"#,
            redis.port
        );
    let p1 = Proxy::start(&config).await.expect("first proxy starts");
    let p2 = Proxy::start(&config).await.expect("second proxy starts");
    let mut ok = [0, 0];
    for i in 0..12 {
        let p = if i % 2 == 0 { &p1 } else { &p2 };
        let r = get(&p.url("/anything")).await.unwrap();
        match r.status {
            200 => ok[i % 2] += 1,
            429 => assert_eq!(r.body, "local_rate_limited"),
            s => panic!("unexpected {s}\n{}\n{}", p1.log(), p2.log()),
        }
    }
    assert_eq!(
        ok[0] + ok[1],
        5,
        "one limit of 5 across both proxies: {ok:?}\n{}",
        p1.log()
    );
    assert!(
        ok[0] > 0 && ok[1] > 0,
        "both proxies served from the shared bucket: {ok:?}"
    );

    // Redis gone: the filter fails open (Envoy's default), counts each such request, and
    // logs one line for them rather than one per request.
    drop(redis);
    for _ in 0..10 {
        let r = get(&p1.url("/anything")).await.unwrap();
        assert_eq!(
            r.status,
            200,
            "fail open while the store is down: {}",
            p1.log()
        );
    }
    let stats = p1.stats().await;
    let allowed: f64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("ratelimit_failure_mode_allowed "))
        .unwrap_or_else(|| panic!("no ratelimit_failure_mode_allowed in\n{stats}"))
        .parse()
        .unwrap();
    assert_eq!(allowed, 10.0, "{stats}");
    let lines = p1.log().matches("global store unavailable").count();
    assert!((1..=2).contains(&lines), "{lines} log lines:\n{}", p1.log());
}
