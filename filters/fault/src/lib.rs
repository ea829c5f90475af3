//! Lateen's built-in fault filter: Istio's VirtualService `fault.delay` and `fault.abort`,
//! applied to the route they are configured on. It runs after the router and finds the
//! route through the `lateen.route.id` property.
//!
//! A delay pauses the stream; the root context resumes it from `on_tick` (ticking every
//! millisecond only while a delayed request is waiting). Delay and abort are drawn
//! independently; when both hit, the abort is answered after the delay, as in Envoy.

pub mod config;

// Embeds schema.json (tests/schema.rs keeps it in step) so the host checks configs on load.
lateen_sdk::config_schema!("../schema.json");

#[cfg(target_arch = "wasm32")]
mod filter;
