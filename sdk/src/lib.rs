//! # lateen-sdk
//!
//! The crate filter authors build Lateen filters with. It sits on top of the public
//! [`proxy_wasm`] crate (re-exported here), so a filter stays an ordinary proxy-wasm module
//! that any proxy-wasm host can load, and adds:
//!
//! - [`claims`]: the verified JWT claims other filters match on;
//! - [`config`]: typed plugin configuration (serde) with errors that name the field;
//! - [`istio`]: Istio's match types (`StringMatch`, `HTTPMatchRequest`) plus Lateen's
//!   first-class cookie and user-agent matchers, and [`matcher`] to compile and evaluate them;
//! - [`route`]: the route-decision contract — the property paths the router sets and the
//!   host reads to pick a cluster;
//! - [`metrics`]: labelled metric names, which Lateen exports as Prometheus labels;
//! - [`useragent`]: browser / OS / device classification of a `user-agent` header;
//! - [`store`]: the shared store (global rate limits) through a host-managed cluster;
//! - [`rng`]: a cheap PRNG for sampling percentages and weights.
//!
//! Everything except [`route`] and [`store`] works in any proxy-wasm host. [`route`]'s
//! properties are Lateen's: in Envoy they are ordinary filter-state properties that nothing
//! reads; [`store`]'s cluster exists only in Lateen.

pub mod claims;
pub mod config;
pub mod istio;
pub mod matcher;
pub mod metrics;
pub mod rng;
pub mod route;
pub mod store;
pub mod useragent;

pub use proxy_wasm;
