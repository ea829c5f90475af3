//! proxy-wasm glue for the fault filter.

use crate::config::{AbortReply, FaultConfig, ABORT_BODY};
use lateen_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use lateen_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use lateen_sdk::proxy_wasm::{self, hostcalls};
use lateen_sdk::rng::Rng;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(FaultRoot {
            shared: Rc::new(Shared {
                config: RefCell::new(Rc::new(FaultConfig::default())),
                rng: RefCell::new(Rng::new(1)),
                sleepers: RefCell::new(Vec::new()),
                ticking: Cell::new(false),
            }),
        })
    });
}}

/// A delayed stream and what to do when its delay is over.
struct Sleeper {
    wake: SystemTime,
    context: u32,
    abort: Option<AbortReply>,
}

struct Shared {
    config: RefCell<Rc<FaultConfig>>,
    rng: RefCell<Rng>,
    sleepers: RefCell<Vec<Sleeper>>,
    ticking: Cell<bool>,
}

struct FaultRoot {
    shared: Rc<Shared>,
}

fn send_abort(a: &AbortReply) {
    let (status, headers) = a.reply();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = if a.grpc_status.is_some() {
        None
    } else {
        Some(ABORT_BODY)
    };
    let _ = hostcalls::send_http_response(status, headers, body);
}

impl Context for FaultRoot {}

impl RootContext for FaultRoot {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match lateen_sdk::config::parse_or_default::<FaultConfig>(&bytes) {
            Ok(c) => {
                *self.shared.config.borrow_mut() = Rc::new(c);
                *self.shared.rng.borrow_mut() = Rng::from_clock();
                true
            }
            Err(e) => {
                let _ = hostcalls::log(LogLevel::Error, &format!("fault: {e}"));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let now = self.get_current_time();
        let due: Vec<Sleeper> = {
            let mut s = self.shared.sleepers.borrow_mut();
            let (due, wait) = s.drain(..).partition(|x| x.wake <= now);
            *s = wait;
            due
        };
        for sl in due {
            if hostcalls::set_effective_context(sl.context).is_err() {
                continue;
            }
            match &sl.abort {
                Some(a) => send_abort(a),
                None => {
                    let _ = hostcalls::resume_http_request();
                }
            }
        }
        if self.shared.sleepers.borrow().is_empty() {
            self.set_tick_period(Duration::ZERO);
            self.shared.ticking.set(false);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FaultStream {
            id: context_id,
            shared: self.shared.clone(),
        }))
    }
}

struct FaultStream {
    id: u32,
    shared: Rc<Shared>,
}

impl Context for FaultStream {}

impl HttpContext for FaultStream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(route) = self.get_property(lateen_sdk::route::ROUTE_ID.to_vec()) else {
            return Action::Continue;
        };
        let config = self.shared.config.borrow().clone();
        let Some(fault) = config.routes.get(String::from_utf8_lossy(&route).as_ref()) else {
            return Action::Continue;
        };
        let outcome = fault.roll(&mut self.shared.rng.borrow_mut());
        // Envoy's response flags, for the access log and metrics: DI delay, FI abort.
        let flags = match (outcome.delay_ms.is_some(), outcome.abort.is_some()) {
            (true, true) => Some("DI,FI"),
            (true, false) => Some("DI"),
            (false, true) => Some("FI"),
            (false, false) => None,
        };
        if let Some(f) = flags {
            let _ = hostcalls::set_property(
                lateen_sdk::route::RESPONSE_FLAGS.to_vec(),
                Some(f.as_bytes()),
            );
        }
        if let Some(ms) = outcome.delay_ms {
            self.shared.sleepers.borrow_mut().push(Sleeper {
                wake: self.get_current_time() + Duration::from_millis(ms),
                context: self.id,
                abort: outcome.abort,
            });
            if !self.shared.ticking.replace(true) {
                // From a stream context the host applies the period to our root.
                let _ = hostcalls::set_tick_period(Duration::from_millis(1));
            }
            return Action::Pause;
        }
        if let Some(a) = &outcome.abort {
            send_abort(a);
            return Action::Pause;
        }
        Action::Continue
    }
}
