//! Router actions beyond forwarding: redirects, direct responses, rewrites and header
//! operations, as Istio documents them.

use lateen_e2e::*;

const VS: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: traffic, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - name: redirect-default
    match: [{uri: {prefix: /old}}]
    redirect: {uri: /new}
  - name: redirect-full
    match: [{uri: {prefix: /moved}}]
    redirect: {authority: example.com, scheme: https, redirectCode: 302, derivePort: FROM_PROTOCOL_DEFAULT}
  - name: direct
    match: [{uri: {exact: /maintenance}}]
    directResponse: {status: 503, body: {string: "down for maintenance"}}
  - name: prefix-rewrite
    match: [{uri: {prefix: /api/v1}}]
    rewrite: {uri: /v2, authority: backend.internal}
    route: [{destination: {host: svc.test, subset: a}}]
  - name: regex-rewrite
    match: [{uri: {prefix: /svc/}}]
    rewrite:
      uriRegexRewrite: {match: "^/svc/([^/]+)(/.*)$", rewrite: "\\2/instance/\\1"}
    route: [{destination: {host: svc.test, subset: a}}]
  - name: headers
    match: [{uri: {prefix: /headers}}]
    headers:
      request:
        set: {x-set: route}
        add: {x-added: route}
        remove: [x-drop]
      response:
        set: {x-resp: "1"}
        remove: [x-backend]
    route:
    - destination: {host: svc.test, subset: a}
      headers:
        request: {set: {x-dest: a}}
        response: {add: {x-dest-resp: a}}
"#;

#[tokio::test]
async fn redirects_direct_responses_rewrites_and_headers() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&(mesh(&[&a]) + VS))
        .await
        .expect("proxy starts");

    let r = get(&proxy.url("/old/page?x=1")).await.unwrap();
    assert_eq!(r.status, 301, "{}", proxy.log());
    let want = format!("http://127.0.0.1:{}/new?x=1", proxy.port);
    assert_eq!(r.header("location"), Some(want.as_str()));
    let r = get(&proxy.url("/moved/here")).await.unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("https://example.com/moved/here"));

    let r = get(&proxy.url("/maintenance")).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (503, "down for maintenance"));
    assert!(
        a.seen.lock().unwrap().is_empty(),
        "redirects and direct responses never reach the upstream"
    );

    let r = get(&proxy.url("/api/v1/users?q=1")).await.unwrap();
    assert_eq!(r.status, 200);
    let seen = a.last();
    assert_eq!(seen.path, "/v2/users?q=1");
    assert_eq!(
        seen.header("x-envoy-original-path"),
        Some("/api/v1/users?q=1")
    );
    assert_eq!(seen.header("host"), Some("backend.internal"));

    get(&proxy.url("/svc/foo/v1/api")).await.unwrap();
    assert_eq!(a.last().path, "/v1/api/instance/foo");

    let r = send(
        "GET",
        &proxy.url("/headers"),
        &[("x-drop", "1"), ("x-set", "client")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let seen = a.last();
    assert_eq!(seen.header("x-set"), Some("route"));
    assert_eq!(seen.header("x-added"), Some("route"));
    assert_eq!(seen.header("x-drop"), None);
    assert_eq!(seen.header("x-dest"), Some("a"));
    assert_eq!(r.header("x-resp"), Some("1"));
    assert_eq!(r.header("x-dest-resp"), Some("a"));
    assert_eq!(r.header("x-backend"), None, "response header removed");
}
