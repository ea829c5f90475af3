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

// The rest is the same in every built-in filter's tests/schema.rs.

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.json");

fn rerun() -> String {
    format!(
        "rerun with LATEEN_UPDATE_SCHEMAS=1 to rewrite it: \
         LATEEN_UPDATE_SCHEMAS=1 cargo test -p {} --features schema --test schema",
        env!("CARGO_PKG_NAME")
    )
}

fn updating() -> bool {
    std::env::var("LATEEN_UPDATE_SCHEMAS").as_deref() == Ok("1")
}

fn generated() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(Config)).unwrap() + "\n"
}

#[test]
fn schema_json_is_generated_from_the_config_types() {
    let generated = generated();
    if updating() {
        std::fs::write(SCHEMA, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(SCHEMA).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{SCHEMA} is not what the config types generate; {}",
        rerun()
    );
}

/// The checked-in schema (while updating, the one being written), as the host compiles it.
fn checked_in() -> jsonschema::Validator {
    let text = if updating() {
        generated()
    } else {
        std::fs::read_to_string(SCHEMA).unwrap_or_else(|e| panic!("{SCHEMA}: {e}; {}", rerun()))
    };
    let schema: Value = serde_json::from_str(&text).expect("schema.json is JSON");
    jsonschema::validator_for(&schema).expect("schema.json is a JSON Schema")
}

fn errors(v: &jsonschema::Validator, config: &Value) -> Vec<String> {
    v.iter_errors(config)
        .map(|e| format!("at `{}`: {e}", e.instance_path()))
        .collect()
}

#[test]
fn realistic_configs_pass_the_schema() {
    let v = checked_in();
    for config in valid() {
        assert_eq!(errors(&v, &config), Vec::<String>::new(), "{config:#}");
        // The filter takes it too, and the config the host serialises from it passes.
        let parsed: Config = lateen_sdk::config::parse(config.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{e}: {config:#}"));
        let serialised = serde_json::to_value(&parsed).unwrap();
        assert_eq!(
            errors(&v, &serialised),
            Vec::<String>::new(),
            "{serialised:#}"
        );
    }
    // The host checks an absent configuration as `{}`; the filter takes it as the default.
    assert_eq!(errors(&v, &json!({})), Vec::<String>::new());
    lateen_sdk::config::parse::<Config>(b"{}").expect("`{}` is the default configuration");
    let default = serde_json::to_value(Config::default()).unwrap();
    assert_eq!(errors(&v, &default), Vec::<String>::new(), "{default:#}");
}

#[test]
fn an_invalid_config_fails_the_schema_as_it_fails_the_filter() {
    let v = checked_in();
    let config = invalid();
    assert!(!v.is_valid(&config), "the schema accepts {config:#}");
    assert!(
        lateen_sdk::config::parse::<Config>(config.to_string().as_bytes()).is_err(),
        "the filter accepts {config:#}"
    );
}
