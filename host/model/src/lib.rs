//! The snapshot: Lateen's configuration as plain data. The config compiler (`lateen-config`)
//! builds it from Istio YAML and xDS; the proxy (`lateen-proxy`) runs it, building from it
//! what holds state (running clusters, the access-log writer, the tracer) and keeping that
//! across reloads whose config left it unchanged. Nothing here opens a socket or a file,
//! or starts a thread.

pub mod access_log;
pub mod cluster;
pub mod diff;
pub mod error;
pub mod listener;
pub mod plugin;
pub mod scope;
pub mod sidecar;
pub mod xds;

pub use cluster::ClusterSpec;
pub use error::ConfigError;
pub use listener::{Capture, ListenerSpec, SniRoute, TcpRoute};
pub use plugin::{
    Builtin, Canary, FailStrategy, FilterSpec, ListenerClass, Phase, Placement, PluginSpec,
    Recycle, TrafficSelector,
};

use lateen_wasm::ClusterResolver;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The compiled configuration.
#[derive(Default)]
pub struct Snapshot {
    pub version: u64,
    /// `name.namespace` of the workload, when the Bootstrap names it.
    pub workload: Option<String>,
    pub listeners: Vec<ListenerSpec>,
    pub clusters: HashMap<String, Arc<ClusterSpec>>,
    pub plugins: Vec<Arc<PluginSpec>>,
    /// Singleton plugins run once per proxy (on worker 0), not per worker.
    pub service_plugins: Vec<FilterSpec>,
    /// Names plugins may give `http_call` besides cluster names (bare ServiceEntry hosts),
    /// and the cluster each stands for.
    pub aliases: HashMap<String, String>,
    /// `redis://host:port/` of the Bootstrap's Redis, served to plugins as the
    /// `lateen.redis` cluster.
    pub redis_url: Option<String>,
    pub warnings: Vec<String>,
    /// `matchRules` entries whose configuration was refused: each keeps its last good
    /// configuration (or fails its requests); the rest of the change applied.
    pub rule_errors: Vec<ConfigError>,
    /// Resources of the last change that were refused: each keeps its last good version
    /// (or is absent if it had none); the rest of the change applied.
    pub refused: Vec<ConfigError>,
    /// What the config asks of the access log and the tracer.
    pub telemetry: Telemetry,
    pub limits: Limits,
    /// Files the config read besides its YAML (certificates, keys, JWKS); the watcher
    /// reloads when one changes (rotation).
    pub read_files: Vec<std::path::PathBuf>,
}

/// The telemetry a snapshot asks for, as plain data (Bootstrap `telemetry`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Telemetry {
    pub access_log: Option<crate::access_log::AccessLogSpec>,
    pub tracing: Option<TracingSpec>,
}

/// What clients may send (Bootstrap `limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_request_headers_bytes: usize,
    pub max_headers_count: usize,
    pub request_headers_timeout: std::time::Duration,
    pub max_request_body_bytes: Option<u64>,
    pub max_concurrent_streams: u32,
    /// Time for the whole request to arrive (Envoy's `request_timeout`); off by default.
    pub request_timeout: Option<std::time::Duration>,
    /// Accept an HTTP/1.1 request framed by both Content-Length and Transfer-Encoding
    /// (Envoy's `allow_chunked_length`): the length is dropped and the connection closed
    /// after it. Off by default: such a request gets 400.
    pub allow_chunked_length: bool,
    /// Downstream connections open at once, all listeners and workers together (Envoy's
    /// `global_downstream_max_connections`); past it new ones are closed. Off by default.
    pub max_connections: Option<usize>,
    /// The process's anonymous resident memory at which new requests are shed with 503
    /// (Envoy's `fixed_heap` monitor with `stop_accepting_requests`). Off by default.
    pub max_heap_bytes: Option<u64>,
    /// The longest gap between two frames of a body (Envoy's `stream_idle_timeout`,
    /// default 5 minutes; `None` turns it off).
    pub stream_idle_timeout: Option<std::time::Duration>,
}

impl Default for Limits {
    /// Envoy's header limits, and hyper's 30 s header timeout against slow clients.
    fn default() -> Self {
        Limits {
            max_request_headers_bytes: 60 * 1024,
            max_headers_count: 100,
            request_headers_timeout: std::time::Duration::from_secs(30),
            max_request_body_bytes: None,
            max_concurrent_streams: 100,
            request_timeout: None,
            allow_chunked_length: false,
            max_connections: None,
            max_heap_bytes: None,
            stream_idle_timeout: Some(std::time::Duration::from_secs(300)),
        }
    }
}

/// What the config asks for (Bootstrap `telemetry.tracing`): plain data. The runtime
/// starts the exporter when it installs a snapshot, and keeps it
/// across reloads that leave this unchanged; `lateen validate` starts nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSpec {
    /// Percentage of new traces sampled (Istio's `tracing.sampling`).
    pub sampling: f64,
    pub service: String,
    /// The OTLP/HTTP endpoint spans are exported to.
    pub endpoint: String,
}

impl Snapshot {
    pub fn cluster(&self, name: &str) -> Option<&Arc<ClusterSpec>> {
        self.clusters.get(name)
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerSpec> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// Whom a plugin's `http_call` upstream names, by this snapshot's clusters and
    /// aliases. Its shared store answers "not configured": the proxy's resolver adds the
    /// Redis one; validating a config reaches no store.
    pub fn names(&self) -> Arc<dyn ClusterResolver> {
        names(&self.clusters, self.aliases.clone())
    }
}

/// The `http_call` names of a set of clusters and aliases.
pub fn names(
    clusters: &HashMap<String, Arc<ClusterSpec>>,
    aliases: HashMap<String, String>,
) -> Arc<dyn ClusterResolver> {
    Arc::new(Names {
        clusters: clusters.keys().cloned().collect(),
        aliases,
    })
}

struct Names {
    clusters: HashSet<String>,
    aliases: HashMap<String, String>,
}

impl ClusterResolver for Names {
    fn resolve(&self, upstream: &str) -> Option<String> {
        if self.clusters.contains(upstream) {
            return Some(upstream.to_string());
        }
        self.aliases.get(upstream).cloned()
    }
}
