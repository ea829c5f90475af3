//! proxy-wasm glue: root context compiles the table, each request asks it for a decision.

use crate::table::{Rng, RouteTable, RouterConfig};
use lateen_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use lateen_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use lateen_sdk::proxy_wasm::{self, hostcalls};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(RouterRoot { table: None, rng: Rc::new(RefCell::new(Rng::new(1))) })
    });
}}

struct RouterRoot {
    table: Option<Rc<RouteTable>>,
    rng: Rc<RefCell<Rng>>,
}

impl Context for RouterRoot {}

impl RootContext for RouterRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let cfg: RouterConfig = match lateen_sdk::config::parse_or_default(&bytes) {
            Ok(c) => c,
            Err(e) => {
                log::error(&e.to_string());
                return false;
            }
        };
        match RouteTable::compile(&cfg) {
            Ok(t) => {
                self.table = Some(Rc::new(t));
                let seed = self
                    .get_current_time()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(7);
                *self.rng.borrow_mut() = Rng::new(seed);
                true
            }
            Err(e) => {
                log::error(&format!("router: {e}"));
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RouterStream {
            table: self.table.clone(),
            rng: self.rng.clone(),
        }))
    }
}

struct RouterStream {
    table: Option<Rc<RouteTable>>,
    rng: Rc<RefCell<Rng>>,
}

impl Context for RouterStream {}

impl HttpContext for RouterStream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let Some(table) = &self.table else {
            return Action::Continue;
        };
        // Bytes variant: a non-UTF-8 header must not panic the router.
        let headers: Vec<(String, String)> = self
            .get_http_request_headers_bytes()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        if let Some(decision) = table.decide(&headers, || self.rng.borrow_mut().next_u64()) {
            if let Err(status) = decision.apply() {
                log::error(&format!("router: host refused route decision: {status:?}"));
            }
        }
        // No decision: the host answers 404 (NR), as Envoy's router does.
        Action::Continue
    }
}

mod log {
    use super::*;
    pub fn error(msg: &str) {
        let _ = hostcalls::log(LogLevel::Error, msg);
    }
}
