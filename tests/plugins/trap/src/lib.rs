//! A misbehaving test plugin (public `proxy-wasm` crate only): `x-trap` makes it panic
//! (a trap), `x-loop` makes it spin forever (stopped by the host's deadline), `x-grow`
//! makes it allocate without bound (stopped by the memory cap), `x-leak: KIB` leaks that
//! much memory per request (a plugin whose memory only grows). Otherwise it tags the
//! request with `x-trap-plugin: passed`.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Trap) });
}}

struct Trap;

impl Context for Trap {}

impl HttpContext for Trap {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.get_http_request_header("x-trap").is_some() {
            panic!("trap requested");
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
