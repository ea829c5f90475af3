//! The authorization filter's built .wasm on Lateen's runtime, through the filter test
//! harness: AuthorizationPolicy's DENY-then-ALLOW evaluation on real request attributes.

use lateen_harness::{build_filter, Action, Plugin, Request, Stream};
use serde_json::json;

fn authz(policies: serde_json::Value) -> Plugin {
    let wasm = build_filter(env!("CARGO_MANIFEST_DIR")).expect("build the authz filter");
    Plugin::load(wasm)
        .name("lateen/authz")
        .config_json(&json!({ "policies": policies }))
        .start()
        .expect("start the authz filter")
}

fn denied(s: &Stream, action: Action) -> bool {
    match s.local_response() {
        Some(r) => {
            assert_eq!(action, Action::Pause);
            assert_eq!(r.status, 403);
            assert_eq!(&r.body[..], b"RBAC: access denied");
            true
        }
        None => {
            assert_eq!(action, Action::Continue);
            false
        }
    }
}

fn get(p: &Plugin, path: &str, source: &str) -> bool {
    let mut s = p.stream();
    s.set_source(source.parse().unwrap());
    let action = s
        .send_request(Request::get(path).authority("shop.example.com"))
        .unwrap();
    denied(&s, action)
}

#[test]
fn deny_is_evaluated_before_allow() {
    let p = authz(json!([
        {"name": "shop.allow-all", "action": "ALLOW", "rules": [{}]},
        {"name": "shop.no-admin", "action": "DENY",
         "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}],
                    "from": [{"source": {"notIpBlocks": ["10.0.0.0/8"]}}]}]}
    ]));
    assert!(get(&p, "/admin/users", "192.0.2.1:5000"));
    assert!(
        !get(&p, "/admin/users", "10.9.8.7:5000"),
        "inside the block"
    );
    assert!(!get(&p, "/shop", "192.0.2.1:5000"));
}

#[test]
fn with_allow_policies_only_a_matching_request_passes() {
    let p = authz(json!([
        {"name": "shop.internal", "action": "ALLOW",
         "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}],
                    "to": [{"operation": {"methods": ["GET"]}}]}]}
    ]));
    assert!(!get(&p, "/", "10.1.2.3:40000"));
    assert!(get(&p, "/", "127.0.0.1:40000"));
    let mut s = p.stream();
    s.set_source("10.1.2.3:40000".parse().unwrap());
    let action = s.send_request(Request::post("/", "x")).unwrap();
    assert!(denied(&s, action), "POST is not allowed");
}

#[test]
fn an_allow_policy_without_rules_allows_nothing() {
    let p = authz(json!([{"name": "shop.nothing", "action": "ALLOW", "rules": null}]));
    assert!(get(&p, "/", "10.1.2.3:40000"));
}

#[test]
fn jwt_claims_left_by_the_jwt_filter_are_matched() {
    let p = authz(json!([
        {"name": "shop.admins", "action": "ALLOW",
         "rules": [{"when": [{"key": "request.auth.claims[groups]", "values": ["admin"]}]}]}
    ]));
    let with_claims = |claims: serde_json::Value| {
        let mut s = p.stream();
        s.set_property("request.auth.claims", claims.to_string());
        let action = s.send_request(Request::get("/")).unwrap();
        denied(&s, action)
    };
    assert!(!with_claims(
        json!({"sub": "ann", "groups": ["dev", "admin"]})
    ));
    assert!(with_claims(json!({"sub": "bob", "groups": ["dev"]})));
    assert!(get(&p, "/", "10.1.2.3:40000"), "no token, no claims");
}
