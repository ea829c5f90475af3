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

lateen_harness::schema_tests!(Config);
