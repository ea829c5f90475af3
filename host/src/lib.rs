//! Lateen: a WebAssembly-first service-mesh proxy.
//!
//! Data flow: `listener` (accept, codec) → `chain` (drives the wasm filters of a stream) →
//! route decision → `cluster` (endpoints, load balancing, upstream pools). `config` turns
//! Istio YAML into an immutable [`snapshot::Snapshot`]; `wasm` is the proxy-wasm runtime.

pub mod wasm;
pub mod config;
pub mod cluster;
pub mod snapshot;
pub mod admin;
pub mod body;
pub mod chain;
pub mod proxy;
pub mod upstream;
pub mod worker;
pub mod backend;
