//! proxy-wasm glue for the metrics filter: everything happens in `on_log`.

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

#[derive(Default)]
struct Shared {
    config: RefCell<Rc<MetricsConfig>>,
    /// Metric ids by outcome: a request whose outcome was seen before builds no labels.
    ids: RefCell<HashMap<Outcome, Ids>>,
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

fn int(v: Option<Vec<u8>>) -> Option<i64> {
    let b: [u8; 8] = v?.as_slice().try_into().ok()?;
    Some(i64::from_le_bytes(b))
}

fn text(v: Option<Vec<u8>>) -> Option<String> {
    v.and_then(|b| String::from_utf8(b).ok())
}

impl MetricsStream {
    fn ids(&self, outcome: Outcome) -> Option<Ids> {
        if let Some(ids) = self.shared.ids.borrow().get(&outcome) {
            return Some(*ids);
        }
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
        self.shared.ids.borrow_mut().insert(outcome, ids);
        Some(ids)
    }
}

impl Context for MetricsStream {}

impl HttpContext for MetricsStream {
    fn on_log(&mut self) {
        let grpc = self
            .get_http_request_header("content-type")
            .is_some_and(|c| c.starts_with("application/grpc"));
        let grpc_status = if grpc {
            self.get_http_response_header("grpc-status")
                .or_else(|| self.get_http_response_trailer("grpc-status"))
        } else {
            None
        };
        let outcome = Outcome {
            cluster: text(self.get_property(vec!["lateen", "route", "cluster"])),
            response_code: int(self.get_property(vec!["response", "code"])),
            response_flags: text(self.get_property(vec!["response", "flags"])),
            grpc,
            grpc_status,
            upstream_app: text(self.get_property(vec!["lateen", "upstream", "labels", "app"])),
            upstream_version: text(
                self.get_property(vec!["lateen", "upstream", "labels", "version"]),
            ),
        };
        let Some([total, duration, req_bytes, resp_bytes]) = self.ids(outcome) else {
            return;
        };
        let nanos = int(self.get_property(vec!["request", "duration"])).unwrap_or(0);
        let size = |p: &str| int(self.get_property(vec![p, "total_size"])).unwrap_or(0);
        let _ = hostcalls::increment_metric(total, 1);
        let _ = hostcalls::record_metric(duration, (nanos / 1_000_000).max(0) as u64);
        let _ = hostcalls::record_metric(req_bytes, size("request").max(0) as u64);
        let _ = hostcalls::record_metric(resp_bytes, size("response").max(0) as u64);
    }
}
