//! RequestAuthentication through the built-in wasm JWT filter: tokens verified against
//! inline, file and fetched key sets; claims in VirtualService matches and in
//! AuthorizationPolicy; Envoy's 401s; and rules refused with their line.

use lateen_e2e::*;
use serde_json::json;

fn request_authentication(spec: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\n\
         metadata: {{name: jwt, namespace: istio-system}}\nspec:\n{spec}\n"
    )
}

fn policy(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: {name}, namespace: istio-system}}\nspec:\n{spec}\n"
    )
}

/// Beta testers (a `groups` claim) go to v2, everyone else to v1.
const CLAIM_ROUTES: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - match: [{headers: {"@request.auth.claims.groups": {exact: beta}}}]
    route: [{destination: {host: svc.test, subset: v2}}]
  - route: [{destination: {host: svc.test, subset: v1}}]
"#;

async fn with_token(url: &str, token: &str) -> Resp {
    let bearer = format!("Bearer {token}");
    send("GET", url, &[("authorization", &bearer)], "")
        .await
        .unwrap()
}

#[tokio::test]
async fn tokens_are_verified_and_their_claims_route_and_authorize() {
    let idp = Issuer::rsa("https://idp.test", "k1");
    let forger = Issuer::rsa("https://idp.test", "k1");
    let stranger = Issuer::ec("https://other.test", "x");
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let yaml = mesh(&[&v1, &v2])
        + CLAIM_ROUTES
        + &request_authentication(&format!(
            "  jwtRules:\n  - issuer: https://idp.test\n    audiences: [shop]\n    \
             jwks: '{}'\n    outputPayloadToHeader: x-jwt-payload\n    \
             outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}]",
            Issuer::jwks(&[&idp])
        ))
        // Istio's "require a token" pattern, and a claim condition.
        + &policy(
            "admin-needs-token",
            "  action: DENY\n  rules:\n  - from: [{source: {notRequestPrincipals: [\"*\"]}}]\n    \
             to: [{operation: {paths: [\"/admin*\"]}}]",
        )
        + &policy(
            "admin-needs-role",
            "  action: DENY\n  rules:\n  - to: [{operation: {paths: [\"/admin*\"]}}]\n    \
             when: [{key: \"request.auth.claims[role]\", notValues: [admin]}]",
        );
    let proxy = Proxy::start(&yaml).await.unwrap();
    let url = proxy.url("/items");
    let shop = |extra: serde_json::Value| {
        let mut c = json!({"aud": "shop"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };

    // No token: allowed, routed by headers alone.
    let r = get(&url).await.unwrap();
    assert_eq!(r.status, 200, "{}", proxy.log());
    assert_eq!((v1.count(), v2.count()), (1, 0));

    // A good token: its claim routes to v2; the token is not forwarded; the payload and a
    // claim are.
    let token = idp.token("alice", shop(json!({"groups": ["dev", "beta"]})));
    let r = with_token(&url, &token).await;
    assert_eq!(r.status, 200, "{}", proxy.log());
    assert_eq!((v1.count(), v2.count()), (1, 1));
    let seen = v2.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("x-jwt-payload"), token.split('.').nth(1));
    assert_eq!(seen.header("x-jwt-sub"), Some("alice"));

    // The query parameter is read too.
    let r = get(&proxy.url(&format!("/items?access_token={token}")))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(v2.count(), 2);

    // Bad tokens: 401 with Envoy's reason; nothing reaches a backend.
    let before = v1.count() + v2.count();
    for (token, why) in [
        (
            idp.token("alice", shop(json!({"exp": jwt_now() - 3600}))),
            "Jwt is expired",
        ),
        (
            forger.token("alice", shop(json!({}))),
            "Jwt verification fails",
        ),
        (
            stranger.token("alice", shop(json!({}))),
            "Jwt issuer is not configured",
        ),
        (
            idp.token("alice", json!({})),
            "Audiences in Jwt are not allowed",
        ),
        (
            "not.a.jwt".to_string(),
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
    ] {
        let r = with_token(&url, &token).await;
        assert_eq!((r.status, r.body.as_str()), (401, why));
        assert!(r
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer")));
    }
    assert_eq!(v1.count() + v2.count(), before);

    // AuthorizationPolicy on the verified identity and claims.
    let admin = proxy.url("/admin/users");
    assert_eq!(get(&admin).await.unwrap().status, 403);
    let user = idp.token("bob", shop(json!({"role": "user"})));
    assert_eq!(with_token(&admin, &user).await.status, 403);
    let root = idp.token("carol", shop(json!({"role": "admin"})));
    let r = with_token(&admin, &root).await;
    assert_eq!(r.status, 200, "{}", proxy.log());
}

fn service_entry(host: &str, port: u16) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
         metadata: {{name: {host}, namespace: test}}\nspec:\n  hosts: [{host}]\n  \
         ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  \
         endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n"
    )
}

#[tokio::test]
async fn key_sets_are_fetched_through_a_service_entry_and_files_rotate() {
    let remote = Issuer::ec("https://remote.test", "r1");
    let old = Issuer::rsa("https://file.test", "f1");
    let new = Issuer::ec("https://file.test", "f2");
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("file.json");
    std::fs::write(&file, Issuer::jwks(&[&old])).unwrap();
    let server = FileServer::start(Issuer::jwks(&[&remote]).into_bytes()).await;
    let v1 = Backend::start("v1").await;
    let yaml = mesh(&[&v1])
        + &route_all("v1")
        + &service_entry("jwks.test", server.addr.port())
        // Nothing listens there: its keys can never be fetched.
        + &service_entry("down.test", free_port())
        + &request_authentication(&format!(
            "  jwtRules:\n  - issuer: https://remote.test\n    jwksUri: http://jwks.test/jwks.json\n  \
             - issuer: https://file.test\n    jwksUri: file://{}\n  \
             - issuer: https://down.test\n    jwksUri: http://down.test/keys\n    timeout: 1s",
            file.display()
        ));
    let proxy = Proxy::start(&yaml).await.unwrap();
    let url = proxy.url("/");

    let r = with_token(&url, &remote.token("alice", json!({}))).await;
    assert_eq!(r.status, 200, "{}", proxy.log());
    assert_eq!(
        with_token(&url, &old.token("alice", json!({})))
            .await
            .status,
        200
    );
    let down = Issuer::ec("https://down.test", "d");
    let r = with_token(&url, &down.token("alice", json!({}))).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "Jwks remote fetch is failed")
    );

    // The file's keys rotate: written aside and renamed in, as Kubernetes does.
    let tmp = keys.path().join(".file.json.tmp");
    std::fs::write(&tmp, Issuer::jwks(&[&new])).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while with_token(&url, &old.token("alice", json!({})))
        .await
        .status
        != 401
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated key set was not loaded: {}",
            proxy.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        with_token(&url, &new.token("alice", json!({})))
            .await
            .status,
        200
    );

    // A fetched set stays cached: the JWKS server going away does not fail requests.
    drop(server);
    assert_eq!(
        with_token(&url, &remote.token("bob", json!({})))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn rules_lateen_cannot_enforce_are_refused_with_their_line() {
    let check = |spec: &str, want: &[&str]| {
        let e = refused(
            "ra.yaml",
            request_authentication(spec).trim_start_matches("---\n"),
        );
        for w in want {
            assert!(e.contains(w), "`{w}` missing in: {e}");
        }
    };
    check(
        "  jwtRules:\n  - issuer: a\n    jwksUri: http://nowhere.test/keys",
        &[
            "ra.yaml:",
            "spec.jwtRules[0].jwksUri",
            "no ServiceEntry defines `nowhere.test` port 80",
        ],
    );
    check(
        "  jwtRules:\n  - issuer: a\n    jwks: '{\"keys\": []}'",
        &["spec.jwtRules[0].jwks", "JWKS has no usable key"],
    );
    check(
        "  jwtRules:\n  - jwks: '{\"keys\": []}'",
        &["spec.jwtRules[0].issuer", "issuer is required"],
    );
    check(
        "  jwtRules:\n  - issuer: a",
        &["spec.jwtRules[0].jwksUri", "set jwks or jwksUri"],
    );
    check(
        "  jwtRules:\n  - issuer: a\n    jwksUri: file:///nonexistent/jwks.json",
        &[
            "spec.jwtRules[0].jwksUri",
            "cannot read /nonexistent/jwks.json",
        ],
    );
    check(
        "  jwtRules:\n  - issuer: a\n    jwksUri: https://idp.test/keys",
        &["no ServiceEntry defines `idp.test` port 443"],
    );
}
