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

lateen_harness::schema_tests!(Config);
