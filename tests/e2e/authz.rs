//! AuthorizationPolicy through the built-in wasm authz filter: DENY before ALLOW, AUDIT,
//! conditions, the mTLS peer's principal, selectors, and policies refused with their line.

use lateen_e2e::*;

fn policy(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: {name}, namespace: istio-system}}\nspec:\n{spec}\n"
    )
}

#[tokio::test]
async fn deny_before_allow_with_conditions_audit_and_selectors() {
    let v1 = Backend::start("v1").await;
    let yaml = mesh(&[&v1])
        + &route_all("v1")
        + &policy(
            "deny-admin",
            "  action: DENY\n  rules:\n  - to: [{operation: {paths: [\"/admin*\"]}}]",
        )
        + &policy(
            "allow-reads",
            "  action: ALLOW\n  rules:\n  - to: [{operation: {methods: [GET, HEAD]}}]\n  \
             - to: [{operation: {methods: [POST]}}]\n    when: [{key: \"request.headers[x-team]\", values: [\"pay*\"]}]",
        )
        + &policy(
            "audit-deletes",
            "  action: AUDIT\n  rules:\n  - to: [{operation: {methods: [GET], paths: [\"/audited\"]}}]",
        )
        // Selects another workload: never applied here.
        + &policy(
            "elsewhere",
            "  selector: {matchLabels: {app: somewhere-else}}\n  action: DENY\n  rules: [{}]",
        );
    let proxy = Proxy::start(&yaml).await.unwrap();

    let r = get(&proxy.url("/items")).await.unwrap();
    assert_eq!(r.status, 200, "{}", proxy.log());
    // DENY wins even though ALLOW matches the GET.
    let r = get(&proxy.url("/admin/users")).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (403, "RBAC: access denied"));
    // No ALLOW policy matches a POST without the team header...
    let r = send("POST", &proxy.url("/items"), &[], "x").await.unwrap();
    assert_eq!(r.status, 403);
    // ...and one does with it.
    let r = send("POST", &proxy.url("/items"), &[("x-team", "payments")], "x")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let r = send(
        "DELETE",
        &proxy.url("/items"),
        &[("x-team", "payments")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403);
    // AUDIT only marks.
    assert_eq!(get(&proxy.url("/audited")).await.unwrap().status, 200);
    let paths: Vec<String> = v1
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(
        paths,
        ["/items", "/items", "/audited"],
        "denied requests never reach the backend"
    );
    assert!(proxy
        .log()
        .contains("rbac audit: GET /audited matched istio-system.audit-deletes"));
    // The config dump lists the filter in the chain.
    let dump = proxy.config_dump().await.to_string();
    assert!(dump.contains("lateen/authz"), "{dump}");
}

#[tokio::test]
async fn principals_come_from_the_mtls_peer() {
    let ca = MeshCa::new("cluster.local");
    let server = ca.issue("gw", "istio-system", "gateway", &[]);
    let frontend = ca.issue("fe", "shop", "frontend", &[]);
    let intruder = ca.issue("in", "other", "intruder", &[]);
    let backend = Backend::start("app").await;
    let yaml = MTLS_GATEWAY.to_string()
        + &routed_to("svc.test", backend.port())
        + &policy(
            "shop-only",
            "  selector: {matchLabels: {istio: ingressgateway}}\n  rules:\n  - from: [{source: {namespaces: [shop]}}]\n    to: [{operation: {paths: [\"/api/*\"]}}]",
        )
        + &identity_bootstrap(&server, &ca.root());
    let proxy = Proxy::start(&yaml).await.unwrap();
    let mut fe = TlsConn::connect(proxy.port, "svc.test", &ca.root(), Some(&frontend))
        .await
        .unwrap();
    assert_eq!(
        fe.get("svc.test", "/api/cart").await.unwrap().status,
        200,
        "{}",
        proxy.log()
    );
    assert_eq!(fe.get("svc.test", "/other").await.unwrap().status, 403);
    let mut stranger = TlsConn::connect(proxy.port, "svc.test", &ca.root(), Some(&intruder))
        .await
        .unwrap();
    let r = stranger.get("svc.test", "/api/cart").await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn policies_lateen_cannot_enforce_are_refused_with_their_line() {
    let check = |spec: &str, want: &[&str]| {
        let e = refused("ap.yaml", policy("p", spec).trim_start_matches("---\n"));
        for w in want {
            assert!(e.contains(w), "`{w}` missing in: {e}");
        }
    };
    check(
        "  rules:\n  - when: [{key: \"request.auth.tokenid\", values: [x]}]",
        &[
            "ap.yaml:6",
            "spec.rules[0].when[0].key",
            "request.auth.tokenid",
        ],
    );
    check(
        "  action: CUSTOM\n  provider: {name: ext}",
        &["ap.yaml:5", "spec.action", "CUSTOM"],
    );
    check(
        "  rules:\n  - from: [{source: {ipBlocks: [\"10.0.0.0/40\"]}}]",
        &["spec.rules[0].from[0].source.ipBlocks", "10.0.0.0/40"],
    );
    check(
        "  rules:\n  - to: [{operation: {method: [GET]}}]",
        &["unknown field `method`"],
    );
}
