//! The fault filter's configuration schema, `schema.json`: generated from `FaultConfig` by
//! schemars, checked in, and embedded in the .wasm (`lateen_sdk::config_schema!` in lib.rs),
//! where the host checks each plugin configuration against it before `on_configure` runs.
//!
//! `cargo test -p lateen-fault --features schema --test schema`; after changing the config
//! types, rerun it with `LATEEN_UPDATE_SCHEMAS=1` to rewrite `schema.json`.

use lateen_fault::config::FaultConfig as Config;
use serde_json::{json, Value};

/// Configs the fault filter takes (from its tests).
fn valid() -> Vec<Value> {
    vec![
        json!({"routes": {
            "default/ratings#0": {"abort": {"httpStatus": 503, "percentage": 100.0}}
        }}),
        json!({"routes": {
            "default/grpc#0": {"abort": {"grpcStatus": 14, "percentage": 100.0}}
        }}),
        json!({"routes": {"default/ratings#0": {
            "delay": {"fixedDelayMs": 100, "percentage": 100.0},
            "abort": {"httpStatus": 418, "percentage": 100.0}
        }}}),
    ]
}

/// A config the fault filter refuses: a misspelt field.
fn invalid() -> Value {
    json!({"routes": {"r": {"abort": {"httpStatuss": 503, "percentage": 1.0}}}})
}

fn check() -> lateen_harness::SchemaCheck {
    let generated = serde_json::to_value(schemars::schema_for!(Config)).unwrap();
    lateen_harness::SchemaCheck::new(
        concat!(env!("CARGO_MANIFEST_DIR"), "/schema.json"),
        env!("CARGO_PKG_NAME"),
        generated,
    )
}

/// The filter's own parser; the config it serialises back is what the host sends.
fn parse(config: &Value) -> Result<Value, String> {
    let c: Config =
        lateen_sdk::config::parse(config.to_string().as_bytes()).map_err(|e| e.to_string())?;
    serde_json::to_value(c).map_err(|e| e.to_string())
}

#[test]
fn schema_json_is_generated_from_the_config_types() {
    check().is_generated();
}

#[test]
fn realistic_configs_pass_the_schema() {
    let default = serde_json::to_value(Config::default()).unwrap();
    check().accepts(&valid(), parse, default);
}

#[test]
fn an_invalid_config_fails_the_schema_as_it_fails_the_filter() {
    check().refuses(&invalid(), parse);
}
