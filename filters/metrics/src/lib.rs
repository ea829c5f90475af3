//! Lateen's built-in metrics filter: Istio's standard metrics (`istio_requests_total`,
//! `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`)
//! with Istio's labels, recorded in `on_log` through proxy-wasm metrics.
//!
//! proxy-wasm metrics have no labels, so each label set is its own metric whose name
//! carries the labels ([`lateen_sdk::metrics::labelled_name`]). Lateen's exporter turns
//! those names back into Prometheus labels.

pub mod config;

// Embeds schema.json (tests/schema.rs keeps it in step) so the host checks configs on load.
lateen_sdk::config_schema!("../schema.json");

#[cfg(target_arch = "wasm32")]
mod filter;
