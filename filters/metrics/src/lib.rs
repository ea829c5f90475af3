//! Lateen's built-in metrics filter: Istio's standard metrics (`istio_requests_total`,
//! `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`)
//! with Istio's labels, recorded in `on_log` through proxy-wasm metrics.
//!
//! proxy-wasm metrics have no labels, so each label set is its own metric whose name
//! carries the labels ([`lateen_sdk::metrics::labelled_name`]). Lateen's exporter turns
//! those names back into Prometheus labels.

pub mod config;

#[cfg(target_arch = "wasm32")]
mod filter;
