//! Lateen's built-in authorization filter: Istio's `AuthorizationPolicy` (ALLOW, DENY and
//! AUDIT), evaluated on request headers as Envoy's RBAC filter does: a matching DENY policy
//! denies; otherwise, when ALLOW policies exist, one must match; AUDIT policies only mark
//! the request. A denied request gets 403 `RBAC: access denied`.
//!
//! The policy logic (`config`) is plain Rust with native unit tests; `filter` is the
//! proxy-wasm glue that reads the request's attributes.

pub mod config;

// Embeds schema.json (tests/schema.rs keeps it in step) so the host checks configs on load.
lateen_sdk::config_schema!("../schema.json");

#[cfg(target_arch = "wasm32")]
mod filter;
