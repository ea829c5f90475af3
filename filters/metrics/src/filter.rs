//! proxy-wasm glue for the metrics filter: everything happens in `on_log`, in two host
//! calls (Lateen's request summary and its recording foreign function).

use crate::config::{
    MetricsConfig, Outcome, DURATION, REQUESTS_TOTAL, REQUEST_BYTES, RESPONSE_BYTES,
};
use lateen_sdk::metrics::labelled_name;
use lateen_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use lateen_sdk::proxy_wasm::types::{ContextType, LogLevel, MetricType};
use lateen_sdk::proxy_wasm::{self, hostcalls};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(MetricsRoot { shared: Rc::default() })
    });
}}

/// Metric ids of the four families, per label set (defining a metric is a host call).
type Ids = [u32; 4];

/// The host's summary of a finished request (see [`Outcome::decode`]), and its foreign
/// function that records one into the four families: two host calls per request in all.
const OUTCOME: [&str; 2] = ["lateen", "request_outcome"];
const OBSERVE: &str = "lateen_observe_request";
/// The host's measures, per family in [`Ids`] order: count, duration (ms), request and
/// response total size.
const MEASURES: [u32; 4] = [1, 2, 3, 4];

#[derive(Default)]
struct Shared {
    config: RefCell<Rc<MetricsConfig>>,
    /// Metric ids by the host's raw outcome: a request whose outcome was seen before
    /// builds no labels.
    ids: RefCell<HashMap<Vec<u8>, Ids>>,
}

struct MetricsRoot {
    shared: Rc<Shared>,
}

impl Context for MetricsRoot {}

impl RootContext for MetricsRoot {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match lateen_sdk::config::parse_or_default::<MetricsConfig>(&bytes) {
            Ok(c) => {
                *self.shared.config.borrow_mut() = Rc::new(c);
                // Label sets depend on the config.
                self.shared.ids.borrow_mut().clear();
                true
            }
            Err(e) => {
                proxy_wasm::hostcalls::log(LogLevel::Error, &format!("metrics: {e}")).ok();
                false
            }
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(MetricsStream {
            shared: self.shared.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct MetricsStream {
    shared: Rc<Shared>,
}

impl MetricsStream {
    fn ids(&self, raw: Vec<u8>) -> Option<Ids> {
        if let Some(ids) = self.shared.ids.borrow().get(&raw) {
            return Some(*ids);
        }
        let outcome = Outcome::decode(&raw);
        let config = self.shared.config.borrow().clone();
        // The labels part of the name, shared by the four families.
        let key = labelled_name("", &config.labels(&outcome));
        let define = |t, family: &str| hostcalls::define_metric(t, &format!("{family}{key}")).ok();
        let ids = [
            define(MetricType::Counter, REQUESTS_TOTAL)?,
            define(MetricType::Histogram, DURATION)?,
            define(MetricType::Histogram, REQUEST_BYTES)?,
            define(MetricType::Histogram, RESPONSE_BYTES)?,
        ];
        self.shared.ids.borrow_mut().insert(raw, ids);
        Some(ids)
    }
}

impl Context for MetricsStream {}

impl HttpContext for MetricsStream {
    fn on_log(&mut self) {
        let Some(raw) = self.get_property(OUTCOME.to_vec()) else {
            hostcalls::log(
                LogLevel::Error,
                "metrics: the host has no lateen.request_outcome",
            )
            .ok();
            return;
        };
        let Some(ids) = self.ids(raw) else {
            return;
        };
        let mut args = [0u8; 32];
        for (i, (id, measure)) in ids.iter().zip(MEASURES).enumerate() {
            args[i * 8..i * 8 + 4].copy_from_slice(&id.to_le_bytes());
            args[i * 8 + 4..i * 8 + 8].copy_from_slice(&measure.to_le_bytes());
        }
        if let Err(e) = hostcalls::call_foreign_function(OBSERVE, Some(&args)) {
            hostcalls::log(LogLevel::Error, &format!("metrics: {OBSERVE}: {e:?}")).ok();
        }
    }
}
