//! The proxy-wasm runtime: wasmtime engine and module cache ([`engine`]), per-worker VMs
//! ([`vm`]), the ABI host functions ([`abi`]), component filters ([`component`]) and the
//! state they work on ([`state`], [`shared`]); plugin config schemas ([`schema`]) and the
//! Prometheus exposition of plugin metrics ([`metrics`]).
//!
//! It knows nothing of the proxy: host functions reach clusters, the shared token store and
//! the upstream that answered through the traits in [`state`] ([`ClusterResolver`],
//! [`UpstreamCluster`]), which the proxy implements. The unit-test harness of `sdk/harness`
//! runs filters on this crate alone.

pub mod abi;
pub mod component;
pub mod engine;
pub mod metrics;
pub mod schema;
pub mod shared;
pub mod state;
pub mod types;
pub mod vm;

pub use engine::{CompiledModule, Runtime, RuntimeOptions, WasmError};
pub use state::{
    ClusterResolver, HeaderList, PluginIdentity, StoreTakeError, StreamState, UpstreamCluster,
    UpstreamEndpoint,
};
pub use types::Action;
pub use vm::{CallError, Vm};
