//! A test plugin written only against the public `proxy-wasm` crate, as a plugin built for
//! Envoy would be. It exercises headers, bodies, local responses, http_call, properties and
//! metrics. Behaviour by request path:
//! - every request: adds `x-plugin-added: <config.value>`, removes `x-remove-me`, copies the
//!   `plugin_root_id` property into `x-plugin-root-id`, counts `header_echo_requests_total`;
//! - `/local`: answers 418 `local reply` itself;
//! - `/callout`: calls `config.callout` and adds `x-callout-status` / `x-callout-body`;
//! - `/replace…`: replaces the response body with `replaced body`.
//!
//! A config `"properties": ["source.principal", ...]` copies each property, when present,
//! into the request header `x-prop-<path with dots as dashes>`.
//!
//! A config with `"reject": true` makes on_configure return false; `"panic": true` makes it
//! panic (a trap).
//!
//! `x-plugin-root-streams` gives how many streams its root context has made, counting this
//! one: state that lives as long as the root. A root's end (on_done) counts in
//! `header_echo_roots_done_total`.
//!
//! At the end of every stream it counts the stream's response flags (the `response.flags`
//! property) in `header_echo_flags_<FLAGS>`, as a metrics plugin would label them.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use std::cell::Cell;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root {
            value: "yes".into(),
            callout: String::new(),
            counter: 0,
            properties: Vec::new(),
            streams: Cell::new(0),
        })
    });
}}

struct Root {
    value: String,
    callout: String,
    counter: u32,
    properties: Vec<String>,
    streams: Cell<u64>,
}

impl Context for Root {
    fn on_done(&mut self) -> bool {
        if let Ok(m) = hostcalls::define_metric(MetricType::Counter, "header_echo_roots_done_total")
        {
            let _ = hostcalls::increment_metric(m, 1);
        }
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let cfg: serde_json::Value = match self.get_plugin_configuration() {
            Some(b) if !b.is_empty() => match serde_json::from_slice(&b) {
                Ok(v) => v,
                Err(_) => return false,
            },
            _ => serde_json::json!({}),
        };
        if cfg["reject"].as_bool() == Some(true) {
            return false;
        }
        // A hostile config: the plugin panics (traps) while configuring.
        if cfg["panic"].as_bool() == Some(true) {
            panic!("header-echo: told to panic in on_configure");
        }
        if let Some(v) = cfg["value"].as_str() {
            self.value = v.to_string();
        }
        if let Some(c) = cfg["callout"].as_str() {
            self.callout = c.to_string();
        }
        if let Some(props) = cfg["properties"].as_array() {
            self.properties = props
                .iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect();
        }
        self.counter = hostcalls::define_metric(MetricType::Counter, "header_echo_requests_total")
            .unwrap_or(0);
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        self.streams.set(self.streams.get() + 1);
        Some(Box::new(Stream {
            root_streams: self.streams.get(),
            value: self.value.clone(),
            callout: self.callout.clone(),
            counter: self.counter,
            path: String::new(),
            properties: self.properties.clone(),
        }))
    }
}

struct Stream {
    root_streams: u64,
    value: String,
    callout: String,
    counter: u32,
    path: String,
    properties: Vec<String>,
}

impl Context for Stream {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, body_size: usize, _: usize) {
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_else(|| "none".into());
        let body = self
            .get_http_call_response_body(0, body_size)
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        self.add_http_request_header("x-callout-status", &status);
        self.add_http_request_header("x-callout-body", &body);
        self.resume_http_request();
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.counter != 0 {
            let _ = hostcalls::increment_metric(self.counter, 1);
        }
        self.path = self.get_http_request_header(":path").unwrap_or_default();
        self.add_http_request_header("x-plugin-added", &self.value.clone());
        self.set_http_request_header(
            "x-plugin-root-streams",
            Some(&self.root_streams.to_string()),
        );
        self.set_http_request_header("x-remove-me", None);
        if let Some(root) = self.get_property(vec!["plugin_root_id"]) {
            self.set_http_request_header("x-plugin-root-id", Some(&String::from_utf8_lossy(&root)));
        }
        for p in self.properties.clone() {
            if let Some(v) = self.get_property(p.split('.').collect()) {
                // Booleans and integers arrive as raw bytes; show them as hex.
                let text = match std::str::from_utf8(&v) {
                    Ok(t) if !t.is_empty() && !t.contains(char::is_control) => t.to_string(),
                    _ => v.iter().map(|b| format!("{b:02x}")).collect(),
                };
                self.set_http_request_header(
                    &format!("x-prop-{}", p.replace('.', "-")),
                    Some(&text),
                );
            }
        }
        match self.path.as_str() {
            "/local" => {
                self.send_http_response(418, vec![("x-local", "yes")], Some(b"local reply"));
                Action::Pause
            }
            "/callout" => {
                let headers = vec![
                    (":method", "GET"),
                    (":path", "/from-plugin"),
                    (":authority", "callout"),
                ];
                match self.dispatch_http_call(
                    &self.callout.clone(),
                    headers,
                    None,
                    vec![],
                    Duration::from_secs(5),
                ) {
                    Ok(_) => Action::Pause,
                    Err(_) => {
                        self.send_http_response(500, vec![], Some(b"dispatch failed"));
                        Action::Pause
                    }
                }
            }
            _ => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.set_http_response_header("x-response-plugin", Some("seen"));
        if self.path.starts_with("/replace") {
            self.set_http_response_header("content-length", None);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let flags = self
            .get_property(vec!["response", "flags"])
            .map(|f| String::from_utf8_lossy(&f).replace([',', '-'], "_"))
            .unwrap_or_else(|| "none".into());
        if let Ok(id) =
            hostcalls::define_metric(MetricType::Counter, &format!("header_echo_flags_{flags}"))
        {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        if !self.path.starts_with("/replace") {
            return Action::Continue;
        }
        if !eos {
            return Action::Pause;
        }
        self.set_http_response_body(0, size, b"replaced body");
        Action::Continue
    }
}
