//! # lateen-component
//!
//! Write a Lateen filter as a WebAssembly component (`wasm32-wasip2`), against the typed
//! `lateen:filter` world in `wit/filter.wit`: the host hands each callback typed `headers`
//! and `body` resources, and the filter returns an [`Action`]. Imports give the route
//! decision, the shared store, metrics, properties and logs.
//!
//! A filter implements [`Guest`] (its configurations) and [`GuestFilter`] /
//! [`GuestExchange`] (one configuration, one request), then exports them:
//!
//! ```no_run
//! use lateen_component::{export_filter, Action, Guest, GuestExchange, GuestFilter, Headers};
//!
//! struct Tagger;
//! struct Config { header: String }
//! struct Exchange { header: String }
//!
//! impl Guest for Tagger {
//!     type Filter = Config;
//!     type Exchange = Exchange;
//! }
//!
//! impl GuestFilter for Config {
//!     fn create(config: String) -> Result<lateen_component::Filter, String> {
//!         let header = if config.is_empty() { "x-tagged".to_string() } else { config };
//!         Ok(lateen_component::Filter::new(Config { header }))
//!     }
//!     fn exchange(&self) -> lateen_component::Exchange {
//!         lateen_component::Exchange::new(Exchange { header: self.header.clone() })
//!     }
//! }
//!
//! impl GuestExchange for Exchange {
//!     fn on_request_headers(&self, headers: &Headers, _end: bool) -> Action {
//!         headers.set(&self.header, "yes");
//!         Action::Continue
//!     }
//! }
//!
//! export_filter!(Tagger);
//! ```
//!
//! [`GuestExchange`]'s callbacks all default to [`Action::Continue`], so a filter writes
//! only those it needs.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "filter",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "lateen_component::bindings",
    });
}

pub use bindings::exports::lateen::filter::handler::{Exchange, Filter, Guest, GuestFilter};
pub use bindings::lateen::filter::types::{Action, Body, Headers, LocalResponse};
pub use bindings::lateen::filter::{log, metrics, properties, route_decision, shared_store};

/// One request and its response. Every callback defaults to [`Action::Continue`].
pub trait GuestExchange: 'static {
    /// The request headers arrived.
    fn on_request_headers(&self, headers: &Headers, end_of_stream: bool) -> Action {
        let _ = (headers, end_of_stream);
        Action::Continue
    }
    /// Request body bytes arrived; `body` holds all buffered so far.
    fn on_request_body(&self, body: &Body, end_of_stream: bool) -> Action {
        let _ = (body, end_of_stream);
        Action::Continue
    }
    /// The response headers arrived.
    fn on_response_headers(&self, headers: &Headers, end_of_stream: bool) -> Action {
        let _ = (headers, end_of_stream);
        Action::Continue
    }
    /// Response body bytes arrived; `body` holds all buffered so far.
    fn on_response_body(&self, body: &Body, end_of_stream: bool) -> Action {
        let _ = (body, end_of_stream);
        Action::Continue
    }
    /// The exchange is over.
    fn on_done(&self) {}
}

impl<T: GuestExchange> bindings::exports::lateen::filter::handler::GuestExchange for T {
    fn on_request_headers(&self, headers: &Headers, end_of_stream: bool) -> Action {
        GuestExchange::on_request_headers(self, headers, end_of_stream)
    }
    fn on_request_body(&self, body: &Body, end_of_stream: bool) -> Action {
        GuestExchange::on_request_body(self, body, end_of_stream)
    }
    fn on_response_headers(&self, headers: &Headers, end_of_stream: bool) -> Action {
        GuestExchange::on_response_headers(self, headers, end_of_stream)
    }
    fn on_response_body(&self, body: &Body, end_of_stream: bool) -> Action {
        GuestExchange::on_response_body(self, body, end_of_stream)
    }
    fn on_done(&self) {
        GuestExchange::on_done(self)
    }
}

/// Exports a type implementing [`Guest`] as the component's `handler`.
#[macro_export]
macro_rules! export_filter {
    ($t:ident) => {
        $crate::bindings::export!($t with_types_in $crate::bindings);
    };
}

/// Logs at info level: `info!("tagged {}", n)`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        $crate::log::log($crate::log::Level::Info, &format!($($arg)*))
    };
}
