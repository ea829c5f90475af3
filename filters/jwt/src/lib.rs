//! Lateen's built-in JWT filter: Istio's `RequestAuthentication`, as Envoy's `jwt_authn`
//! filter enforces it. Tokens are read from the places each rule names (by default
//! `Authorization: Bearer` and `?access_token=`), checked against the issuer's JSON Web
//! Key Set (inline, from a file, or fetched from a cluster and cached), and their claims
//! published for the router (`@request.auth.claims.*` matches) and the authorization
//! filter (`requestPrincipals`, `request.auth.*`). A request without a token passes; an
//! invalid token gets 401.
//!
//! Token logic (`config`, `jwks`) is plain Rust with native unit tests; `filter` is the
//! proxy-wasm glue.

pub mod config;
pub mod jwks;

// Embeds schema.json (tests/schema.rs keeps it in step) so the host checks configs on load.
lateen_sdk::config_schema!("../schema.json");

#[cfg(target_arch = "wasm32")]
mod filter;
