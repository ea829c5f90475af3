//! The benchmark's filter: with an empty config it does nothing (every callback continues);
//! with a config naming a header (`{"header": "x-bench"}`, read without a JSON parser to
//! keep the module minimal) it sets that request header to `1`. It measures what a
//! proxy-wasm filter costs by being there, and what one header operation adds.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { header: None }) });
}}

struct Root {
    header: Option<String>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&config);
        // `{"header": "NAME"}`: the value between the third and fourth quote.
        self.header = text.split('"').nth(3).map(str::to_string);
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            header: self.header.clone(),
        }))
    }
}

struct Stream {
    header: Option<String>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if let Some(h) = &self.header {
            self.set_http_request_header(h, Some("1"));
        }
        Action::Continue
    }
}
