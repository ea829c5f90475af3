//! Lateen's built-in rate-limit filter.
//!
//! Token buckets per rule and per descriptor key (nothing, the client address, a header,
//! the path or a cookie). Local mode keeps each bucket in proxy-wasm shared data, updated
//! with compare-and-swap, so every worker of one proxy draws from the same bucket (Envoy's
//! local rate limit is per proxy, not per worker). A rejected request gets 429
//! `local_rate_limited` with `x-envoy-ratelimited: true`, the rule's extra headers and,
//! when asked, `x-ratelimit-limit/remaining/reset`.
//!
//! The host feeds it from Istio's local rate-limit EnvoyFilter (`envoy.filters.http.
//! local_ratelimit`, filter-wide and per route) or from a WasmPlugin's `pluginConfig`
//! ([`config::RateLimitConfig`]).

pub mod bucket;
pub mod config;

// Embeds schema.json (tests/schema.rs keeps it in step) so the host checks configs on load.
lateen_sdk::config_schema!("../schema.json");

#[cfg(target_arch = "wasm32")]
mod filter;
