//! Lateen's foundations, below the wasm runtime, the config compiler and the proxy:
//!
//! - [`stats`]: the process-wide store of Envoy-named counters and gauges.
//! - [`prometheus`]: the text-format helpers both the stats and plugin metrics use.
//! - [`path`]: request-path normalization as Istio's `pathNormalization` asks for.
//! - [`tls`]: rustls configs and workload identity from certificate files.

pub mod path;
pub mod prometheus;
pub mod stats;
pub mod tls;
