//! The rate-limit filter's configuration schema, `schema.json`: generated from `RateLimitConfig` by
//! schemars, checked in, and embedded in the .wasm (`lateen_sdk::config_schema!` in lib.rs),
//! where the host checks each plugin configuration against it before `on_configure` runs.
//!
//! `cargo test -p lateen-ratelimit --features schema --test schema`; after changing the config
//! types, rerun it with `LATEEN_UPDATE_SCHEMAS=1` to rewrite `schema.json`.

use lateen_ratelimit::config::RateLimitConfig as Config;
use serde_json::{json, Value};

/// Configs the rate-limit filter takes (from its tests, and one with descriptors).
fn valid() -> Vec<Value> {
    vec![
        json!({"rules": [{
            "name": "per-user",
            "key": {"header": "x-user"},
            "tokenBucket": {"maxTokens": 3, "tokensPerFill": 1, "fillIntervalMs": 1000},
            "rateLimitHeaders": true
        }]}),
        json!({"rules": [
            {"name": "one-route", "routes": ["default/other#0"],
             "tokenBucket": {"maxTokens": 1, "tokensPerFill": 1, "fillIntervalMs": 60000}},
            {"name": "fleet", "mode": "global",
             "tokenBucket": {"maxTokens": 100, "tokensPerFill": 10, "fillIntervalMs": 1000}}
        ]}),
        json!({"rules": [{
            "name": "default/api", "exceptRoutes": ["default/api#1"], "key": "sourceIp",
            "match": [{"uri": {"prefix": "/api"}, "method": {"exact": "POST"}}],
            "tokenBucket": {"maxTokens": 10, "tokensPerFill": 10, "fillIntervalMs": 1000},
            "actions": [{"requestHeader": {"header": "x-tenant", "key": "tenant"}},
                        "remoteAddress", {"generic": {"key": "generic_key", "value": "api"}}],
            "descriptors": [{"entries": [["tenant", "free"]],
                             "tokenBucket": {"maxTokens": 1, "tokensPerFill": 1, "fillIntervalMs": 1000}}],
            "enabledPercent": 100.0, "enforcedPercent": 50,
            "responseHeaders": [["x-local-rate-limit", "true"]]
        }]}),
    ]
}

/// A config the rate-limit filter refuses: a bucket size that is not a number.
fn invalid() -> Value {
    json!({"rules": [{"name": "r",
        "tokenBucket": {"maxTokens": "ten", "tokensPerFill": 1, "fillIntervalMs": 1000}}]})
}

lateen_harness::schema_tests!(Config);
