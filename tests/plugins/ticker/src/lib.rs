//! A service plugin: no HTTP context, only a root that ticks every 100 ms and, on each tick,
//! calls the cluster named in its configuration at `/tick/N`. Each answer's status is kept in
//! shared data under `ticker.last_status`.

use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::LogLevel;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Ticker { cluster: String::new(), n: 0 })
    });
}}

struct Ticker {
    cluster: String,
    n: u32,
}

impl Context for Ticker {
    fn on_http_call_response(&mut self, _: u32, _: usize, _: usize, _: usize) {
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_else(|| "failed".into());
        let _ = self.set_shared_data("ticker.last_status", Some(status.as_bytes()), None);
    }
}

impl RootContext for Ticker {
    fn on_configure(&mut self, _: usize) -> bool {
        self.cluster = self
            .get_plugin_configuration()
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .trim()
                    .trim_matches('"')
                    .to_string()
            })
            .unwrap_or_default();
        self.set_tick_period(Duration::from_millis(100));
        !self.cluster.is_empty()
    }

    fn on_tick(&mut self) {
        self.n += 1;
        let path = format!("/tick/{}", self.n);
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", "ticker"),
        ];
        let _ = self.dispatch_http_call(
            &self.cluster.clone(),
            headers,
            None,
            vec![],
            Duration::from_secs(1),
        );
    }
}
