//! The authorization filter's configuration schema, `schema.json`: generated from `AuthzConfig` by
//! schemars, checked in, and embedded in the .wasm (`lateen_sdk::config_schema!` in lib.rs),
//! where the host checks each plugin configuration against it before `on_configure` runs.
//!
//! `cargo test -p lateen-authz --features schema --test schema`; after changing the config
//! types, rerun it with `LATEEN_UPDATE_SCHEMAS=1` to rewrite `schema.json`.

use lateen_authz::config::AuthzConfig as Config;
use serde_json::{json, Value};

/// Configs the authorization filter takes (from its tests).
fn valid() -> Vec<Value> {
    vec![
        json!({"policies": [
            {"name": "shop.allow-all", "action": "ALLOW", "rules": [{}]},
            {"name": "shop.no-admin", "action": "DENY",
             "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}],
                        "from": [{"source": {"notIpBlocks": ["10.0.0.0/8"]}}]}]}
        ]}),
        json!({"policies": [
            {"name": "shop.internal", "action": "ALLOW",
             "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}],
                        "to": [{"operation": {"methods": ["GET"]}}]}]},
            {"name": "shop.nothing", "action": "ALLOW", "rules": null},
            {"name": "shop.audit", "action": "AUDIT"}
        ]}),
        json!({"policies": [
            {"name": "shop.admins", "action": "ALLOW",
             "rules": [{"when": [{"key": "request.auth.claims[groups]", "values": ["admin"]}]}]}
        ]}),
    ]
}

/// A config the authorization filter refuses: an action Istio does not have.
fn invalid() -> Value {
    json!({"policies": [{"name": "shop.x", "action": "PERMIT", "rules": [{}]}]})
}

lateen_harness::schema_tests!(Config);
