//! VirtualService routing through the wasm router: every match type, weights, timeouts and
//! Envoy's error responses.

use lateen_e2e::*;
use std::collections::HashMap;

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
const EDGE: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";

const ROUTES: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: down, namespace: test}
spec:
  hosts: [down.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: {{DOWN}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns, namespace: test}
spec:
  hosts: [dns.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
  endpoints: [{address: localhost, ports: {http: {{A}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: routes, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - name: exact
    match: [{uri: {exact: /exact}}]
    route: [{destination: {host: svc.test, subset: a}}]
  - name: prefix
    match: [{uri: {prefix: /pre}}]
    route: [{destination: {host: svc.test, subset: b}}]
  - name: regex
    match: [{uri: {regex: "/re/[0-9]+"}}]
    route: [{destination: {host: svc.test, subset: c}}]
  - name: icase
    match: [{uri: {exact: /CaSe}, ignoreUriCase: true}]
    route: [{destination: {host: svc.test, subset: a}}]
  - name: method
    match: [{uri: {prefix: /m}, method: {exact: POST}}]
    route: [{destination: {host: svc.test, subset: b}}]
  - name: authority
    match: [{authority: {exact: api.example.com}}]
    route: [{destination: {host: svc.test, subset: c}}]
  - name: hdr-exact
    match: [{headers: {x-env: {exact: dev}}}]
    route: [{destination: {host: svc.test, subset: a}}]
  - name: hdr-prefix
    match: [{headers: {x-env: {prefix: st}}}]
    route: [{destination: {host: svc.test, subset: b}}]
  - name: hdr-regex
    match: [{headers: {x-env: {regex: "p[a-z]+d"}}}]
    route: [{destination: {host: svc.test, subset: c}}]
  - name: hdr-present
    match: [{headers: {x-flag: {}}}]
    route: [{destination: {host: svc.test, subset: a}}]
  - name: without
    match: [{uri: {prefix: /without}, withoutHeaders: {x-block: {}}}]
    route: [{destination: {host: svc.test, subset: b}}]
  - name: without-fallback
    match: [{uri: {prefix: /without}}]
    route: [{destination: {host: svc.test, subset: c}}]
  - name: query
    match: [{queryParams: {v: {exact: "2"}}}]
    route: [{destination: {host: svc.test, subset: c}}]
  - name: cookie-exact
    match: [{cookies: {user: {exact: tester}}}]
    route: [{destination: {host: svc.test, subset: c}}]
  - name: cookie-absent
    match: [{uri: {prefix: /cookie-absent}, cookies: {session: {present: false}}}]
    route: [{destination: {host: svc.test, subset: a}}]
  - name: cookie-absent-fallback
    match: [{uri: {prefix: /cookie-absent}}]
    route: [{destination: {host: svc.test, subset: b}}]
  - name: cookie-contains
    match: [{cookies: {prefs: {contains: beta}}}]
    route: [{destination: {host: svc.test, subset: b}}]
  - name: cookie-regex
    match: [{cookies: {id: {regex: "[0-9]{3}"}}}]
    route: [{destination: {host: svc.test, subset: a}}]
  - name: ua-mobile
    match: [{userAgent: {device: mobile}}]
    route: [{destination: {host: svc.test, subset: b}}]
  - name: ua-os-browser
    match: [{userAgent: {os: [Windows], browser: [Edge]}}]
    route: [{destination: {host: svc.test, subset: c}}]
  - name: istio-cookie-header
    match: [{headers: {cookie: {regex: ".*group=gold.*"}}}]
    route: [{destination: {host: svc.test, subset: c}}]
  - name: istio-ua-header
    match: [{headers: {user-agent: {regex: ".*Firefox.*"}}}]
    route: [{destination: {host: svc.test, subset: a}}]
  - name: split
    match: [{uri: {prefix: /split}}]
    route:
    - {destination: {host: svc.test, subset: a}, weight: 90}
    - {destination: {host: svc.test, subset: b}, weight: 7}
    - {destination: {host: svc.test, subset: c}, weight: 3}
  - name: timeout
    match: [{uri: {prefix: /slow}}]
    timeout: 300ms
    route: [{destination: {host: svc.test, subset: a}}]
  - name: nohealthy
    match: [{uri: {prefix: /empty}}]
    route: [{destination: {host: svc.test, subset: empty}}]
  - name: down
    match: [{uri: {prefix: /down}}]
    route: [{destination: {host: down.test}}]
  - name: dns
    match: [{uri: {prefix: /dns}}]
    route: [{destination: {host: dns.test}}]
  - name: default
    match: [{uri: {prefix: /default}}]
    route: [{destination: {host: svc.test, subset: a}}]
"#;

/// (method, path, headers, expected backend)
type Case = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    &'static str,
);

struct Setup {
    a: Backend,
    b: Backend,
    c: Backend,
    proxy: Proxy,
}

async fn setup() -> Setup {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let yaml = mesh(&[&a, &b, &c])
        + &ROUTES
            .replace("{{DOWN}}", &free_port().to_string())
            .replace("{{A}}", &a.port().to_string());
    let proxy = Proxy::start(&yaml).await.expect("proxy starts");
    Setup { a, b, c, proxy }
}

#[tokio::test]
async fn every_match_type_routes_to_its_subset() {
    let s = setup().await;
    let cases: Vec<Case> = vec![
        ("GET", "/exact", vec![], "a"),
        ("GET", "/exact?q=1", vec![], "a"),
        ("GET", "/prefix/x", vec![], "b"),
        ("GET", "/pre", vec![], "b"),
        ("GET", "/re/123", vec![], "c"),
        ("GET", "/case", vec![], "a"),
        ("POST", "/m", vec![], "b"),
        ("GET", "/x", vec![("host", "api.example.com")], "c"),
        ("GET", "/h", vec![("x-env", "dev")], "a"),
        ("GET", "/h", vec![("x-env", "staging")], "b"),
        ("GET", "/h", vec![("x-env", "prod")], "c"),
        ("GET", "/h", vec![("x-flag", "")], "a"),
        ("GET", "/without", vec![], "b"),
        ("GET", "/without", vec![("x-block", "1")], "c"),
        ("GET", "/q?a=1&v=2", vec![], "c"),
        ("GET", "/k", vec![("cookie", "a=1; user=tester")], "c"),
        ("GET", "/cookie-absent", vec![], "a"),
        ("GET", "/cookie-absent", vec![("cookie", "session=x")], "b"),
        ("GET", "/k", vec![("cookie", "prefs=alpha-beta-gamma")], "b"),
        ("GET", "/k", vec![("cookie", "id=123")], "a"),
        ("GET", "/ua", vec![("user-agent", IPHONE)], "b"),
        ("GET", "/ua", vec![("user-agent", EDGE)], "c"),
        ("GET", "/k", vec![("cookie", "x=1; group=gold")], "c"),
        ("GET", "/ua", vec![("user-agent", FIREFOX)], "a"),
        ("GET", "/default", vec![], "a"),
        ("GET", "/dns", vec![], "a"),
    ];
    let mut wrong = Vec::new();
    for (method, path, headers, want) in &cases {
        let r = send(method, &s.proxy.url(path), headers, "")
            .await
            .expect("request");
        let got = r.header("x-backend").unwrap_or("none").to_string();
        if r.status != 200 || got != *want {
            wrong.push(format!(
                "{method} {path} {headers:?}: got {} from {got}, want {want}",
                r.status
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "misrouted:\n{}\n{}",
        wrong.join("\n"),
        s.proxy.log()
    );
}

#[tokio::test]
async fn weights_split_90_7_3() {
    let s = setup().await;
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..500 {
        let r = get(&s.proxy.url("/split")).await.expect("request");
        assert_eq!(r.status, 200);
        *counts
            .entry(r.header("x-backend").unwrap_or("none").into())
            .or_default() += 1;
    }
    let pct = |k: &str| f64::from(*counts.get(k).unwrap_or(&0)) / 5.0;
    for (k, want) in [("a", 90.0), ("b", 7.0), ("c", 3.0)] {
        assert!(
            (pct(k) - want).abs() <= 5.0,
            "{k}: {}% (want {want}±5) {counts:?}",
            pct(k)
        );
    }
}

#[tokio::test]
async fn envoy_responses_and_headers() {
    let s = setup().await;
    let r = get(&s.proxy.url("/nothing-matches")).await.unwrap();
    assert_eq!(r.status, 404, "no route");
    let r = get(&s.proxy.url("/empty")).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"));
    let r = get(&s.proxy.url("/down")).await.unwrap();
    assert_eq!(r.status, 503);
    assert!(r.body.contains("connection failure"), "{}", r.body);
    let r = get(&s.proxy.url("/slow/2000")).await.unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (504, "upstream request timeout")
    );

    let r = send(
        "GET",
        &s.proxy.url("/default"),
        &[("x-forwarded-for", "1.2.3.4")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(r
        .header("x-envoy-upstream-service-time")
        .is_some_and(|v| v.parse::<u64>().is_ok()));
    let seen = s.a.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("1.2.3.4, 127.0.0.1"));
    let id = seen.header("x-request-id").expect("x-request-id generated");
    assert_eq!(id.len(), 36, "uuid: {id}");
    send(
        "GET",
        &s.proxy.url("/default"),
        &[("x-request-id", "given-id")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(s.a.last().header("x-request-id"), Some("given-id"));
    let _ = (&s.b, &s.c);
}

#[tokio::test]
async fn http2_prior_knowledge_and_request_bodies() {
    let s = setup().await;
    let r = get_h2(&s.proxy.url("/default")).await.expect("h2c request");
    assert_eq!((r.status, r.header("x-backend")), (200, Some("a")));
    let body = "x".repeat(100_000);
    let r = send("POST", &s.proxy.url("/default/echo-body"), &[], &body)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body.len(),
        body.len(),
        "request body streamed through the chain intact"
    );
    assert_eq!(r.body, body);
    assert_eq!(s.a.last().method, "POST");
}

fn admin_route(a: &Backend, b: &Backend, normalization: Option<&str>) -> String {
    let boot = normalization
        .map(|n| bootstrap(&format!("  pathNormalization: {{normalization: {n}}}")))
        .unwrap_or_default();
    mesh(&[a, b])
        + &boot
        + r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /admin}}]
    route: [{destination: {host: svc.test, subset: b}}]
  - route: [{destination: {host: svc.test, subset: a}}]
"#
}

/// Paths are normalized before routing (Istio's default `pathNormalization: BASE`), so
/// `/public/../admin` is `/admin` to the routes and to the upstream alike.
#[tokio::test]
async fn request_paths_are_normalized_before_routing() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = Proxy::start(&admin_route(&a, &b, None))
        .await
        .expect("proxy starts");
    for (path, backend, seen) in [
        ("/public/../admin/x?q=/../y", "b", "/admin/x?q=/../y"),
        ("/%61dmin/./x", "b", "/admin/x"),
        ("/public/x", "a", "/public/x"),
        // BASE keeps repeated slashes.
        ("//admin", "a", "//admin"),
    ] {
        let r = get(&proxy.url(path)).await.expect("request");
        assert_eq!(r.header("x-backend"), Some(backend), "{path}");
        let last = if backend == "a" { a.last() } else { b.last() };
        assert_eq!(last.path, seen, "{path}");
    }
    let r = get(&proxy.url("/bad%zzescape")).await.expect("request");
    assert_eq!(r.status, 400, "a malformed escape is refused");
    // Without a verified client certificate, a client's x-forwarded-client-cert is dropped.
    let r = send(
        "GET",
        &proxy.url("/public/x"),
        &[("x-forwarded-client-cert", "URI=spiffe://forged")],
        "",
    )
    .await
    .expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(a.last().header("x-forwarded-client-cert"), None);

    // MERGE_SLASHES merges them too; NONE leaves paths alone.
    proxy.rewrite(&admin_route(&a, &b, Some("MERGE_SLASHES")));
    eventually("MERGE_SLASHES", || async {
        get(&proxy.url("//admin"))
            .await
            .is_ok_and(|r| r.header("x-backend") == Some("b"))
    })
    .await;
    assert_eq!(b.last().path, "/admin");
    proxy.rewrite(&admin_route(&a, &b, Some("NONE")));
    eventually("NONE", || async {
        get(&proxy.url("/public/../admin"))
            .await
            .is_ok_and(|r| r.header("x-backend") == Some("a"))
    })
    .await;
    assert_eq!(a.last().path, "/public/../admin");
}

#[test]
fn an_unknown_path_normalization_is_refused_with_its_line() {
    let err = refused(
        "paths.yaml",
        &bootstrap("  pathNormalization: {normalization: TIDY}"),
    );
    assert!(
        err.contains("paths.yaml:6") && err.contains("spec.pathNormalization.normalization"),
        "{err}"
    );
}
