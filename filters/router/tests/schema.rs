//! The router's configuration schema, `schema.json`: generated from `RouterConfig` by
//! schemars, checked in, and embedded in the .wasm (`lateen_sdk::config_schema!` in lib.rs),
//! where the host checks each plugin configuration against it before `on_configure` runs.
//!
//! `cargo test -p lateen-router --features schema --test schema`; after changing the config
//! types, rerun it with `LATEEN_UPDATE_SCHEMAS=1` to rewrite `schema.json`.

use lateen_router::table::RouterConfig as Config;
use serde_json::{json, Value};

/// Configs the router takes (from its tests).
fn valid() -> Vec<Value> {
    vec![
        json!({"virtualHosts": [
            {"name": "default/reviews", "domains": ["reviews", "reviews.default.svc.cluster.local"], "routes": [
                {"name": "jason", "id": "default/reviews#0",
                 "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                 "route": [{"cluster": "outbound|80|v2|reviews"}], "timeoutMs": 1500},
                {"name": "beta-cookie", "id": "default/reviews#1",
                 "match": [{"cookies": {"beta": {"exact": "1"}}}],
                 "route": [{"cluster": "outbound|80|v3|reviews"}]},
                {"name": "moved", "id": "default/reviews#2",
                 "match": [{"uri": {"prefix": "/old"}}],
                 "redirect": {"uri": "/new", "redirectCode": 308}},
                {"name": "split", "id": "default/reviews#3",
                 "route": [
                     {"cluster": "outbound|80|v1|reviews", "weight": 90},
                     {"cluster": "outbound|80|v2|reviews", "weight": 7},
                     {"cluster": "outbound|80|v3|reviews", "weight": 3}],
                 "headers": {
                     "request": {"set": {"x-routed-by": "lateen"}, "remove": ["x-debug"]},
                     "response": {"add": {"x-served-by": "reviews"}}}}
            ]}
        ]}),
        json!({"virtualHosts": [
            {"name": "ns/a", "domains": ["*"], "routes": [
                {"name": "cookie", "match": [{"cookies": {"user": {"exact": "tester"}}}], "route": [{"cluster": "c3"}]},
                {"name": "split", "route": [{"cluster": "c1", "weight": 90}, {"cluster": "c2", "weight": 7}, {"cluster": "c3", "weight": 3}]}]},
            {"name": "ns/b", "domains": ["api.example.com"], "routes": [
                {"name": "api", "match": [{"uri": {"prefix": "/v1"}}], "route": [{"cluster": "api"}], "timeoutMs": 250}]},
            {"name": "ns/c", "domains": ["*.example.com"], "routes": [{"name": "wild", "route": [{"cluster": "wild"}]}]}
        ]}),
        json!({"virtualHosts": [{"name": "v", "domains": ["*"], "routes": [
            {"name": "r", "match": [{"uri": {"prefix": "/old"}}], "redirect": {"uri": "/new"}},
            {"name": "d", "match": [{"uri": {"prefix": "/down"}}], "directResponse": {"status": 503, "body": {"string": "maintenance"}}},
            {"name": "f", "route": [{"cluster": "c", "headers": {"request": {"set": {"x-d": "1"}}}}],
             "rewrite": {"uriRegexRewrite": {"match": "^/v1/(.*)", "rewrite": "/\\1"}},
             "retry": "{\"attempts\":2}", "mirrors": [["outbound|80||shadow", 25.0]],
             "corsPolicy": {"allowOrigins": [{"exact": "https://a.com"}, {"regex": "https://.*\\.b\\.com"}],
                            "allowMethods": ["GET", "POST"], "allowCredentials": true, "maxAge": "24h"},
             "corsMaxAgeS": 86400}]}]}),
    ]
}

/// A config the router refuses: `url` is no field of a match.
fn invalid() -> Value {
    json!({"virtualHosts": [{"name": "v", "domains": ["*"], "routes": [
        {"name": "r", "match": [{"url": {"prefix": "/"}}], "route": [{"cluster": "c"}]}]}]})
}

lateen_harness::schema_tests!(Config);
