//! The proxy-wasm runtime: wasmtime engine and module cache ([`engine`]), per-worker VMs
//! ([`vm`]), the ABI host functions ([`abi`]) and the state they work on.

pub mod abi;
pub mod component;
pub mod engine;
pub mod shared;
pub mod state;
pub mod types;
pub mod vm;

pub use engine::{CompiledModule, Runtime, RuntimeOptions, WasmError};
pub use state::{ClusterResolver, HeaderList, PluginIdentity, StreamState};
pub use types::Action;
pub use vm::{CallError, Vm};
