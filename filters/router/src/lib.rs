//! Lateen's built-in router filter.
//!
//! Evaluates VirtualService http routes (compiled by the host into this filter's JSON
//! configuration, see [`table::RouterConfig`]) and tells the host where to send the request
//! through the route-decision properties of [`lateen_sdk::route`]. It never forwards anything
//! itself: connecting, pooling, retries and timeouts stay in the host.

pub mod table;

#[cfg(target_arch = "wasm32")]
mod filter;
