//! Lateen's config compiler: Istio YAML files → validated [`compile::Resources`] → (in
//! [`compile`]) an immutable [`lateen_model::Snapshot`]. It reads files and builds data; it
//! opens no socket and starts no thread, so `lateen validate` runs nothing it checks.

pub mod compile;
pub mod envoyfilter;
pub mod resources;
pub mod scope;
pub mod source;
pub mod tls;
pub mod wasm_patch;
pub mod xds;

pub use source::{ConfigError, Doc, DocInfo};
