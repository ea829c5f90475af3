//! A misbehaving test plugin (public `proxy-wasm` crate only): `x-trap` makes it panic
//! (a trap), `x-loop` makes it spin forever (stopped by the host's deadline), `x-grow`
//! makes it allocate without bound (stopped by the memory cap), `x-leak: KIB` leaks that
//! much memory per request (a plugin whose memory only grows). With the plugin
//! configuration `{"trapEvery": N}` it also traps on every Nth request an instance serves
//! (the soak's misbehaving plugin). Otherwise it tags the request with
//! `x-trap-plugin: passed`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::Cell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { every: 0, served: Rc::new(Cell::new(0)) })
    });
}}

struct Root {
    every: u64,
    served: Rc<Cell<u64>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        // `{"trapEvery": N}`, read without a JSON parser to keep this plugin SDK-only.
        let config = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&config);
        self.every = text
            .split_once("\"trapEvery\"")
            .and_then(|(_, rest)| {
                let digits: String = rest
                    .trim_start_matches([' ', ':'])
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().ok()
            })
            .unwrap_or(0);
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Trap {
            every: self.every,
            served: self.served.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Trap {
    every: u64,
    served: Rc<Cell<u64>>,
}

impl Context for Trap {}

impl HttpContext for Trap {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.get_http_request_header("x-trap").is_some() {
            panic!("trap requested");
        }
        let n = self.served.get() + 1;
        self.served.set(n);
        if self.every > 0 && n.is_multiple_of(self.every) {
            panic!("trap on request {n} (trapEvery {})", self.every);
        }
        if self.get_http_request_header("x-loop").is_some() {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if self.get_http_request_header("x-grow").is_some() {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        if let Some(kib) = self
            .get_http_request_header("x-leak")
            .and_then(|v| v.parse::<usize>().ok())
        {
            std::mem::forget(std::hint::black_box(vec![1u8; kib << 10]));
        }
        self.set_http_request_header("x-trap-plugin", Some("passed"));
        Action::Continue
    }
}
