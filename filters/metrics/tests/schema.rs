//! The metrics filter's configuration schema, `schema.json`: generated from `MetricsConfig` by
//! schemars, checked in, and embedded in the .wasm (`lateen_sdk::config_schema!` in lib.rs),
//! where the host checks each plugin configuration against it before `on_configure` runs.
//!
//! `cargo test -p lateen-metrics --features schema --test schema`; after changing the config
//! types, rerun it with `LATEEN_UPDATE_SCHEMAS=1` to rewrite `schema.json`.

use lateen_metrics::config::MetricsConfig as Config;
use serde_json::{json, Value};

/// Configs the metrics filter takes (from its tests).
fn valid() -> Vec<Value> {
    vec![
        json!({
            "reporter": "source",
            "source": {"workload": "ingressgateway", "namespace": "istio-system",
                       "app": "istio-ingressgateway", "version": "1.0"}
        }),
        json!({
            "reporter": "destination",
            "source": {"workload": "reviews-v2", "namespace": "default", "app": "reviews",
                       "version": "v2", "principal": "spiffe://cluster.local/ns/default/sa/reviews"},
            "services": {"svc.test": "test"}
        }),
    ]
}

/// A config the metrics filter refuses: an unknown field.
fn invalid() -> Value {
    json!({"reporter": "source", "reporters": "destination"})
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
