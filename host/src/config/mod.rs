//! Configuration: Istio YAML files → validated [`Resources`] → (in `compile`) an immutable
//! [`lateen_model::Snapshot`]. Nothing here touches a socket.

pub mod compile;
pub mod envoyfilter;
pub mod resources;
pub mod scope;
pub mod source;
pub mod tls;
pub mod xds;

pub use source::{ConfigError, Doc, DocInfo};
