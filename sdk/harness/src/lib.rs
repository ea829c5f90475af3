//! # lateen-harness
//!
//! Unit-test a built filter in-process, on Lateen's real wasm runtime (the same wasmtime
//! engine, host functions and limits the proxy uses), with no sockets and no proxy.
//!
//! A test builds the filter crate to `.wasm` ([`build_filter`]), starts it with a
//! configuration ([`Plugin`]), then drives requests through its callbacks ([`Stream`]) and
//! asserts on what it did: headers and bodies it changed, local responses, properties such
//! as the route decision, the http_calls it made (answered by the test), metrics, logs and
//! shared data. Time is the test's to move ([`Plugin::advance_clock`], [`Plugin::tick`]),
//! so delays and token buckets are tested without sleeping.
//!
//! It works with any proxy-wasm module, not only those built on `lateen-sdk`, and takes the
//! place of the unmaintained `proxy-wasm-test-framework`.
//!
//! ```no_run
//! use lateen_harness::{build_filter, Action, Plugin, Request, Response};
//!
//! let wasm = build_filter(env!("CARGO_MANIFEST_DIR")).unwrap();
//! let plugin = Plugin::load(wasm)
//!     .config_json(&serde_json::json!({"header": "x-client"}))
//!     .start()
//!     .unwrap();
//! let mut s = plugin.stream();
//! let action = s
//!     .send_request(Request::get("/").header("user-agent", "curl/8.5"))
//!     .unwrap();
//! assert_eq!(action, Action::Continue);
//! assert_eq!(s.request_header("x-client").as_deref(), Some("cli"));
//! s.send_response(Response::new(200)).unwrap();
//! s.finish().unwrap();
//! assert_eq!(plugin.counter("tagger_requests_total"), Some(1));
//! ```

mod build;
mod http;
mod plugin;
mod schema;
mod stream;

pub use build::{build_component, build_filter, COMPONENT_TARGET, PROFILE, TARGET};
pub use http::{HttpCall, Request, Response};
pub use lateen_wasm::state::LocalResponse;
pub use lateen_wasm::{Action, CallError, WasmError};
pub use plugin::{MetricValue, Plugin, PluginBuilder};
pub use schema::SchemaCheck;
pub use stream::Stream;

use std::path::PathBuf;

/// What can go wrong driving a plugin.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The filter crate did not build.
    #[error("cannot build the filter in {dir}: {message}")]
    Build { dir: PathBuf, message: String },
    /// The module file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Loading failed: the module does not compile or link, or the plugin rejected its
    /// configuration. `logs` holds what the plugin logged while starting (usually why).
    #[error("{source}{}", show_logs(logs))]
    Load {
        source: WasmError,
        logs: Vec<LogRecord>,
    },
    /// The configuration violates the config schema the module ships, so the proxy would
    /// refuse it at load. `field` is below the config's root (`.routes[0].prefix`, empty
    /// for the root).
    #[error("the configuration violates the plugin's config schema at `{}`: {message}", if field.is_empty() { "." } else { field.as_str() })]
    Schema { field: String, message: String },
    /// A callback trapped or ran past its deadline; the instance is unusable afterwards.
    #[error(transparent)]
    Callback(#[from] lateen_wasm::CallError),
    /// [`Plugin::answer_http_call`] named a token no waiting call has.
    #[error("no http_call with token {0} is waiting for an answer")]
    NoSuchCall(u32),
}

impl From<WasmError> for HarnessError {
    fn from(source: WasmError) -> Self {
        HarnessError::Load {
            source,
            logs: Vec::new(),
        }
    }
}

fn show_logs(logs: &[LogRecord]) -> String {
    logs.iter()
        .map(|l| format!("\n  plugin log [{:?}] {}", l.level, l.message))
        .collect()
}

/// proxy-wasm log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    fn from_raw(level: i32) -> Self {
        match level {
            i32::MIN..=0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => LogLevel::Critical,
        }
    }
}

/// One line a plugin logged (`proxy_log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub level: LogLevel,
    pub message: String,
}
