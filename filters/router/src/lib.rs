//! Lateen's built-in router filter.
//!
//! Evaluates VirtualService http routes (compiled by the host into this filter's JSON
//! configuration, see [`table::RouterConfig`]) and tells the host where to send the request
//! through the route-decision properties of [`lateen_sdk::route`]. It never forwards anything
//! itself: connecting, pooling, retries and timeouts stay in the host.

pub mod table;

// Embeds schema.json (tests/schema.rs keeps it in step) so the host checks configs on load.
lateen_sdk::config_schema!("../schema.json");

#[cfg(target_arch = "wasm32")]
mod filter;
