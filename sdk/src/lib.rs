//! # lateen-sdk
//!
//! The crate filter authors build Lateen filters with. It sits on top of the public
//! [`proxy_wasm`] crate (re-exported here), so a filter stays an ordinary proxy-wasm module
//! that any proxy-wasm host can load, and adds:
//!
//! - [`claims`]: the verified JWT claims other filters match on;
//! - [`config`]: typed plugin configuration (serde) with errors that name the field, and
//!   [`config_schema!`] to ship a JSON Schema that Lateen checks configs against at load;
//! - [`istio`]: Istio's match types (`StringMatch`, `HTTPMatchRequest`) plus Lateen's
//!   first-class cookie and user-agent matchers, and [`matcher`] to compile and evaluate them;
//! - [`route`]: the route-decision contract — the property paths the router sets and the
//!   host reads to pick a cluster;
//! - [`metrics`]: labelled metric names, which Lateen exports as Prometheus labels;
//! - [`useragent`]: browser / OS / device classification of a `user-agent` header;
//! - [`store`]: the shared store (global rate limits) through a host-managed cluster;
//! - [`rng`]: a cheap PRNG for sampling percentages and weights.
//!
//! ## Portability
//!
//! The crate makes only standard proxy-wasm host calls, so a filter built with it loads in
//! any proxy-wasm host. What differs per host is whether anything reads or sets the
//! properties and names it defines:
//!
//! - [`config`], [`istio`], [`matcher`], [`useragent`] and [`rng`]: plain Rust, the same
//!   in every host (`Rng::from_clock` reads the standard proxy-wasm clock).
//! - [`claims`]: [`claims::values`] works anywhere. The [`claims::CLAIMS`] and
//!   [`claims::PRINCIPAL`] properties are set by Lateen's JWT filter; where it does not run,
//!   they are absent (Envoy's own `jwt_authn` does not set them).
//! - [`metrics`]: the names work in any host. Only Lateen's exporter parses them into
//!   labels; elsewhere a labelled name is just a long metric name.
//! - [`route`]: filters can set and read these properties in any host, but only Lateen's
//!   host routes on them (cluster, timeout, retry, mirror) and reports
//!   `lateen.response_flags` as `response.flags`. In Envoy they are ordinary filter-state
//!   properties that nothing reads.
//! - [`store`]: Lateen only. The [`store::CLUSTER`] cluster (`lateen.redis`) exists only
//!   there; elsewhere `dispatch_http_call` to it fails, which a filter should treat as
//!   "no global store".
//!
//! ## Example
//!
//! Parse a route from the plugin configuration, match a request and build the decision:
//!
//! ```rust
//! use lateen_sdk::{config, istio::HttpMatchRequest, matcher::CompiledMatch, route};
//!
//! #[derive(serde::Deserialize)]
//! struct Cfg {
//!     #[serde(rename = "match")]
//!     when: HttpMatchRequest,
//!     host: String,
//! }
//!
//! let cfg: Cfg = config::parse(
//!     br#"{"match": {"headers": {"x-env": {"exact": "dev"}}}, "host": "reviews"}"#,
//! )
//! .unwrap();
//! let m = CompiledMatch::compile(&cfg.when).unwrap();
//! assert!(m.matches(&vec![("x-env".to_string(), "dev".to_string())]));
//! assert!(!m.matches(&vec![("x-env".to_string(), "prod".to_string())]));
//!
//! let d = route::Decision {
//!     cluster: route::outbound_cluster(9080, "", &cfg.host),
//!     ..Default::default()
//! };
//! assert_eq!(d.cluster, "outbound|9080||reviews");
//! ```

#![warn(missing_docs)]

pub mod claims;
pub mod config;
pub mod istio;
pub mod matcher;
pub mod metrics;
pub mod rng;
pub mod route;
pub mod store;
pub mod useragent;

/// The upstream `proxy-wasm` crate, so filters use the same version as the SDK.
#[cfg(feature = "proxy-wasm")]
pub use proxy_wasm;
