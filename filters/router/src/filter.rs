//! proxy-wasm glue: root context compiles the table, each request asks it for a decision.

use crate::table::{
    apply_header_ops, redirect_location, Action as RouteAction, CorsAction, Rng, RouteTable,
    RouterConfig,
};
use lateen_sdk::istio::{HeaderOperations, Headers};
use lateen_sdk::matcher::{text_headers, RequestView};
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

/// A request as the route matchers see it: headers, and the verified JWT's claims.
struct View<'a> {
    headers: &'a [(String, String)],
    claims: Option<serde_json::Value>,
}

impl RequestView for View<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.header(name)
    }

    fn claim(&self, path: &[String]) -> Vec<String> {
        self.claims
            .as_ref()
            .map(|c| lateen_sdk::claims::values(c, path))
            .unwrap_or_default()
    }
}

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
            response_ops: Vec::new(),
        }))
    }
}

struct RouterStream {
    table: Option<Rc<RouteTable>>,
    rng: Rc<RefCell<Rng>>,
    /// Response header operations of the chosen route and destination.
    response_ops: Vec<HeaderOperations>,
}

impl RouterStream {
    fn request_ops(&self, ops: &HeaderOperations) {
        apply_header_ops(
            ops,
            |k, v| self.set_http_request_header(k, Some(v)),
            |k, v| self.add_http_request_header(k, v),
            |k| self.set_http_request_header(k, None),
        );
    }
}

fn response_of(h: &Option<Headers>) -> Option<HeaderOperations> {
    h.as_ref().and_then(|h| h.response.clone())
}

impl Context for RouterStream {}

impl HttpContext for RouterStream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let Some(table) = &self.table else {
            return Action::Continue;
        };
        // Bytes variant: a non-UTF-8 header must not panic the router.
        let headers = text_headers(self.get_http_request_headers_bytes());
        let table = table.clone();
        let claims = if table.uses_claims {
            hostcalls::get_property(lateen_sdk::claims::CLAIMS.to_vec())
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice(&b).ok())
        } else {
            None
        };
        let view = View {
            headers: &headers,
            claims,
        };
        // The host's early route lookup (for scoped plugins before the router) left its
        // roll: use it so both pick the same weighted destination.
        let roll = hostcalls::get_property(vec!["lateen.route.roll"])
            .ok()
            .flatten()
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok());
        let Some(sel) = table.select(&view, || {
            roll.unwrap_or_else(|| self.rng.borrow_mut().next_u64())
        }) else {
            // No decision: the host answers 404 (NR), as Envoy's router does.
            return Action::Continue;
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| v.as_str())
        };
        // CORS first: a preflight is answered here; an allowed origin gets response headers.
        let mut cors_headers = Vec::new();
        if let Some(cors) = &sel.route.cors {
            let origin = headers
                .iter()
                .find(|(k, _)| k == "origin")
                .map(|(_, v)| v.as_str());
            let req_method = headers
                .iter()
                .find(|(k, _)| k == "access-control-request-method")
                .map(|(_, v)| v.as_str());
            match cors.evaluate(header(":method"), origin, req_method) {
                CorsAction::Preflight(h) => {
                    let refs: Vec<(&str, &str)> =
                        h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    self.send_http_response(200, refs, None);
                    return Action::Pause;
                }
                CorsAction::IgnoredPreflight => {
                    self.send_http_response(200, vec![], None);
                    return Action::Pause;
                }
                CorsAction::Response(h) => cors_headers = h,
                CorsAction::None => {}
            }
        }
        match &sel.route.action {
            RouteAction::Redirect(r) => {
                let location =
                    redirect_location(r, header(":scheme"), header(":authority"), header(":path"));
                let code = r.redirect_code.unwrap_or(301);
                self.send_http_response(code, vec![("location", location.as_str())], None);
                return Action::Pause;
            }
            RouteAction::Direct { status, body } => {
                self.send_http_response(*status, vec![], Some(body));
                return Action::Pause;
            }
            RouteAction::Forward { .. } => {}
        }
        if let Some(rw) = &sel.route.rewrite {
            let path = header(":path");
            if let Some(new) = rw.path(path, sel.matched_prefix) {
                self.set_http_request_header("x-envoy-original-path", Some(path));
                self.set_http_request_header(":path", Some(&new));
            }
            if let Some(a) = &rw.authority {
                self.set_http_request_header(":authority", Some(a));
            }
        }
        // Destination-level operations first, then the route's (Envoy's order).
        let dest_headers = sel.destination.and_then(|d| d.headers.clone());
        for h in [&dest_headers, &sel.route.headers] {
            if let Some(ops) = h.as_ref().and_then(|h| h.request.as_ref()) {
                self.request_ops(ops);
            }
        }
        self.response_ops = [response_of(&dest_headers), response_of(&sel.route.headers)]
            .into_iter()
            .flatten()
            .collect();
        if !cors_headers.is_empty() {
            self.response_ops.push(HeaderOperations {
                set: cors_headers.into_iter().collect(),
                ..HeaderOperations::default()
            });
        }
        if let Some(mut decision) = sel.decision() {
            if !sel.route.mirrors.is_empty() {
                let mut rng = self.rng.borrow_mut();
                decision.mirrors = sel
                    .route
                    .mirrors
                    .iter()
                    .filter(|(_, pct)| rng.chance(*pct))
                    .map(|(c, _)| c.clone())
                    .collect();
            }
            if let Err(status) = decision.apply() {
                log::error(&format!("router: host refused route decision: {status:?}"));
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        for ops in &self.response_ops {
            apply_header_ops(
                ops,
                |k, v| self.set_http_response_header(k, Some(v)),
                |k, v| self.add_http_response_header(k, v),
                |k| self.set_http_response_header(k, None),
            );
        }
        Action::Continue
    }
}

mod log {
    use super::*;
    pub fn error(msg: &str) {
        let _ = hostcalls::log(LogLevel::Error, msg);
    }
}
