//! The immutable runtime configuration. A config source compiles resources into one
//! `Snapshot`; it is swapped in atomically and a request keeps the one it started with.

use crate::cluster::Cluster;
use bytes::Bytes;
use lateen_wasm::{ClusterResolver, CompiledModule, PluginIdentity, StoreTakeError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Where a plugin sits in the chain (WasmPlugin `phase`). The router runs after every
/// phase, so header changes made by any plugin are seen by routing, as in Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Authn,
    Authz,
    Stats,
    Unspecified,
    Router,
    /// Built-in filters that act on the route decision (fault).
    PostRoute,
}

/// What to do when a plugin fails (WasmPlugin `failStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailStrategy {
    /// Requests the plugin should have handled get a 503.
    Close,
    /// The plugin is skipped for the failed request.
    Open,
}

/// A loaded plugin module with its identity.
pub struct PluginSpec {
    pub name: String,
    pub url: String,
    pub module: Arc<CompiledModule>,
    pub identity: Arc<PluginIdentity>,
    pub fail: FailStrategy,
    pub phase: Phase,
    pub priority: i64,
    /// A progressive rollout of a new version of this plugin.
    pub canary: Option<Arc<Canary>>,
    /// Where the `lateen.io/placement` annotation puts it relative to a built-in filter,
    /// instead of by phase.
    pub placement: Option<Placement>,
    /// WasmPlugin `match`: the traffic it applies to; empty means all.
    pub traffic: Vec<TrafficSelector>,
    /// When its instances are replaced by fresh ones (the old one drains).
    pub recycle: Recycle,
    /// The JSON Schema its configurations are checked against at load.
    pub schema: Option<Arc<lateen_wasm::schema::ConfigSchema>>,
    /// The xDS wasm filter config it was loaded from: a build whose config is the same
    /// takes this plugin over instead of fetching and loading the module again.
    pub xds: Option<Arc<crate::config::xds::XdsWasm>>,
}

/// Instance recycling (`lateen.io/recycle-after-requests`, `lateen.io/recycle-memory`): a
/// cure for plugins whose memory only grows. `None`: never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recycle {
    /// Streams an instance serves before new streams go to a fresh one.
    pub after_requests: Option<u64>,
    /// Linear memory past which new streams go to a fresh instance.
    pub memory_bytes: Option<u64>,
}

/// One entry of a WasmPlugin's `match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficSelector {
    /// Applies to a gateway or outbound (client-side) listener.
    pub client: bool,
    /// Applies to a gateway or inbound (server-side) listener.
    pub server: bool,
    /// Listener ports; empty means any.
    pub ports: Vec<u16>,
}

/// What a listener is, for WasmPlugin `match.mode` (Istio's listener classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerClass {
    Gateway,
    SidecarOutbound,
}

impl PluginSpec {
    /// Whether its `match` takes a listener of `class` on `port`. A gateway listener is
    /// both client and server side, as in Istio.
    pub fn applies_to(&self, class: ListenerClass, port: u16) -> bool {
        self.traffic.is_empty()
            || self.traffic.iter().any(|t| {
                let mode = match class {
                    ListenerClass::Gateway => t.client || t.server,
                    ListenerClass::SidecarOutbound => t.client,
                };
                mode && (t.ports.is_empty() || t.ports.contains(&port))
            })
    }
}

/// A plugin placed just before or after a built-in filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub before: bool,
    pub anchor: Builtin,
}

/// The built-in filters a plugin can be placed next to, in their chain order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Builtin {
    Router,
    Ratelimit,
    Fault,
    Metrics,
}

impl Builtin {
    pub const ALL: [Builtin; 4] = [
        Builtin::Router,
        Builtin::Ratelimit,
        Builtin::Fault,
        Builtin::Metrics,
    ];

    /// The name it has in a chain (`lateen/router`, ...).
    pub fn plugin_name(self) -> &'static str {
        match self {
            Builtin::Router => "lateen/router",
            Builtin::Ratelimit => "lateen/ratelimit",
            Builtin::Fault => "lateen/fault",
            Builtin::Metrics => "lateen/metrics",
        }
    }
}

impl std::str::FromStr for Placement {
    type Err = String;

    /// `before:router`, `after:metrics`, ...
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}`: expected before:NAME or after:NAME, NAME one of router, ratelimit, fault, metrics"
            )
        };
        let (side, name) = s.split_once(':').ok_or_else(bad)?;
        let before = match side.trim() {
            "before" => true,
            "after" => false,
            _ => return Err(bad()),
        };
        let anchor = Builtin::ALL
            .into_iter()
            .find(|b| b.plugin_name().trim_start_matches("lateen/") == name.trim())
            .ok_or_else(bad)?;
        Ok(Placement { before, anchor })
    }
}

/// A canary version of a plugin: it takes `percent` of new streams until its trap rate or
/// the 5xx rate of its streams, over the last `window`, passes a threshold; then it is
/// rolled back (for the life of this snapshot). Promotion is a config change.
pub struct Canary {
    pub spec: Arc<PluginSpec>,
    pub percent: f64,
    pub max_trap_percent: f64,
    pub max_5xx_percent: f64,
    /// Streams in the window before the rates are judged.
    pub min_requests: u64,
    /// Since the config loaded, for the admin API.
    pub requests: AtomicU64,
    pub traps: AtomicU64,
    pub five_xx: AtomicU64,
    pub rolled_back: AtomicBool,
    window: Window,
}

/// Buckets of a sliding window.
const BUCKETS: usize = 6;

/// Counts over the last `BUCKETS × bucket_ms` milliseconds, in time buckets that are
/// reused round-robin.
struct Window {
    bucket_ms: u64,
    buckets: [Bucket; BUCKETS],
}

#[derive(Default)]
struct Bucket {
    /// Which bucket of time (now / bucket_ms) the counts belong to.
    epoch: AtomicU64,
    requests: AtomicU64,
    traps: AtomicU64,
    five_xx: AtomicU64,
}

impl Window {
    fn new(window_ms: u64) -> Self {
        Window {
            bucket_ms: (window_ms / BUCKETS as u64).max(1),
            buckets: Default::default(),
        }
    }

    /// Adds a stream at `now`; returns the window's (requests, traps, 5xx).
    fn add(&self, now: u64, trapped: bool, five_xx: bool) -> (u64, u64, u64) {
        let epoch = now / self.bucket_ms + 1; // 0 marks a bucket never used
        let b = &self.buckets[epoch as usize % BUCKETS];
        // The first stream of a new time bucket clears what it held; a stream of another
        // worker landing between the swap and the stores is lost, which a rate can bear.
        if b.epoch.load(Ordering::Relaxed) != epoch
            && b.epoch.swap(epoch, Ordering::Relaxed) != epoch
        {
            b.requests.store(0, Ordering::Relaxed);
            b.traps.store(0, Ordering::Relaxed);
            b.five_xx.store(0, Ordering::Relaxed);
        }
        b.requests.fetch_add(1, Ordering::Relaxed);
        b.traps.fetch_add(u64::from(trapped), Ordering::Relaxed);
        b.five_xx.fetch_add(u64::from(five_xx), Ordering::Relaxed);
        self.buckets
            .iter()
            .filter(|b| {
                let e = b.epoch.load(Ordering::Relaxed);
                e <= epoch && e + BUCKETS as u64 > epoch
            })
            .fold((0, 0, 0), |(n, t, f), b| {
                (
                    n + b.requests.load(Ordering::Relaxed),
                    t + b.traps.load(Ordering::Relaxed),
                    f + b.five_xx.load(Ordering::Relaxed),
                )
            })
    }
}

impl Canary {
    pub fn new(
        spec: Arc<PluginSpec>,
        percent: f64,
        max_trap_percent: f64,
        max_5xx_percent: f64,
        min_requests: u64,
        window_ms: u64,
    ) -> Self {
        Canary {
            spec,
            percent,
            max_trap_percent,
            max_5xx_percent,
            min_requests,
            requests: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            five_xx: AtomicU64::new(0),
            rolled_back: AtomicBool::new(false),
            window: Window::new(window_ms),
        }
    }

    /// The sliding window's length.
    pub fn window_ms(&self) -> u64 {
        self.window.bucket_ms * BUCKETS as u64
    }

    /// Records a finished canary stream and rolls back when a rate passes its threshold.
    pub fn record(&self, trapped: bool, status: Option<u16>) {
        self.record_at(crate::cluster::now_ms(), trapped, status);
    }

    fn record_at(&self, now: u64, trapped: bool, status: Option<u16>) {
        let five = status.is_some_and(|s| s >= 500);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.traps.fetch_add(u64::from(trapped), Ordering::Relaxed);
        self.five_xx.fetch_add(u64::from(five), Ordering::Relaxed);
        let (n, traps, fives) = self.window.add(now, trapped, five);
        if n < self.min_requests.max(1) || self.rolled_back.load(Ordering::Relaxed) {
            return;
        }
        let pct = |x: u64| x as f64 * 100.0 / n as f64;
        if (pct(traps) > self.max_trap_percent || pct(fives) > self.max_5xx_percent)
            && !self.rolled_back.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                plugin = %self.spec.name,
                "canary rolled back after {n} streams in {} ms: {:.1}% traps, {:.1}% 5xx",
                self.window_ms(),
                pct(traps),
                pct(fives)
            );
        }
    }

    /// Whether this stream should use the canary.
    pub fn pick(&self, random: u64) -> bool {
        !self.rolled_back.load(Ordering::Relaxed)
            && (random % 1_000_000) < (self.percent.clamp(0.0, 100.0) * 10_000.0) as u64
    }
}

/// One filter of a listener's chain: a plugin and the configuration of its root context.
#[derive(Clone)]
pub struct FilterSpec {
    pub plugin: Arc<PluginSpec>,
    pub configuration: Bytes,
    /// `matchRules`: per host, route and service configurations of the same plugin.
    pub scope: Option<Arc<crate::scope::Scope>>,
}

/// A listener: HTTP, or TLS (terminated to HTTP, or passed through by SNI).
pub struct ListenerSpec {
    /// Envoy-style `ADDRESS_PORT`.
    pub name: String,
    pub addr: SocketAddr,
    pub filters: Vec<FilterSpec>,
    /// The servers of a TLS port, chosen by SNI; `None` for plain HTTP.
    pub tls: Option<Arc<lateen_core::tls::server::ListenerTls>>,
    /// VirtualService `tls` routes for the PASSTHROUGH servers.
    pub sni_routes: Vec<crate::tcp::SniRoute>,
    /// Host patterns whose plain-HTTP requests get a 301 to https (Gateway `httpsRedirect`).
    pub https_redirect: Vec<String>,
    /// The port forwards TCP (Gateway servers with `protocol: TCP`) by `tcp_routes`.
    pub tcp: bool,
    pub tcp_routes: Vec<crate::tcp::TcpRoute>,
    /// How request paths are normalized before its filters see them.
    pub path: lateen_core::path::PathNormalization,
    /// Whether a socket is bound for it. A sidecar's per-port HTTP listeners are not:
    /// the capture listener hands them connections.
    pub bind: bool,
    /// A sidecar's capture listener.
    pub capture: Option<Capture>,
}

/// What a sidecar's capture listener does with a redirected connection.
#[derive(Debug, Clone)]
pub enum Capture {
    /// Port 15001: by its original destination (`sidecar::OutboundMap`).
    Outbound(Arc<crate::sidecar::OutboundMap>),
    /// Port 15006: mTLS per PeerAuthentication, then to the app.
    Inbound(Arc<crate::sidecar::InboundPolicy>),
}

impl ListenerSpec {
    /// A bound plain-HTTP listener: no TLS, no TCP routes, no capture, default path
    /// normalization. Other kinds set their fields over it.
    pub fn http(name: String, addr: SocketAddr, filters: Vec<FilterSpec>) -> Self {
        ListenerSpec {
            name,
            addr,
            filters,
            tls: None,
            sni_routes: Vec::new(),
            https_redirect: Vec::new(),
            tcp: false,
            tcp_routes: Vec::new(),
            path: Default::default(),
            bind: true,
            capture: None,
        }
    }

    /// Whether a plain-HTTP request for `host` (the `:authority`, port included or not)
    /// must be redirected to https.
    pub fn redirects(&self, host: &str) -> bool {
        let name = lateen_sdk::matcher::strip_port(host);
        self.https_redirect
            .iter()
            .any(|p| lateen_core::tls::server::host_match(p, name).is_some())
    }
}

/// The compiled configuration.
pub struct Snapshot {
    pub version: u64,
    /// `name.namespace` of the workload, when the Bootstrap names it.
    pub workload: Option<String>,
    pub listeners: Vec<ListenerSpec>,
    pub clusters: HashMap<String, Arc<Cluster>>,
    pub plugins: Vec<Arc<PluginSpec>>,
    /// Singleton plugins run once per proxy (on worker 0), not per worker.
    pub service_plugins: Vec<FilterSpec>,
    pub resolver: Arc<dyn ClusterResolver>,
    /// `redis://host:port/` of the Bootstrap's Redis, served to plugins as the
    /// `lateen.redis` cluster.
    pub redis_url: Option<String>,
    pub warnings: Vec<String>,
    /// `matchRules` entries whose configuration was refused: each keeps its last good
    /// configuration (or fails its requests); the rest of the change applied.
    pub rule_errors: Vec<crate::config::source::ConfigError>,
    /// What the config asks of the access log and the tracer.
    pub telemetry: Telemetry,
    /// The open access log, made from `telemetry` by [`Snapshot::start_telemetry`] when
    /// the snapshot is installed (`None` until then, and in `lateen validate`).
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// The running tracer, made likewise.
    pub tracer: Option<Arc<crate::trace::Tracer>>,
    pub limits: Limits,
    /// Files the config read besides its YAML (certificates, keys, JWKS); the watcher
    /// reloads when one changes (rotation).
    pub read_files: Vec<std::path::PathBuf>,
}

/// The telemetry a snapshot asks for, as plain data (Bootstrap `telemetry`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Telemetry {
    pub access_log: Option<crate::access_log::AccessLogSpec>,
    pub tracing: Option<crate::trace::TracingSpec>,
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
        }
    }
}

impl Snapshot {
    /// Opens the access log and starts the tracer this snapshot asks for, taking over
    /// `running`'s when their settings are unchanged (so a reload neither reopens the file
    /// nor restarts the exporter). The error names the setting that could not start.
    pub fn start_telemetry(&mut self, running: Option<&Snapshot>) -> Result<(), String> {
        self.access_log = match &self.telemetry.access_log {
            None => None,
            Some(spec) => match running.and_then(|r| r.access_log.as_ref()) {
                Some(log) if log.spec == *spec => Some(log.clone()),
                _ => Some(crate::access_log::AccessLog::open(spec).map_err(|e| {
                    format!(
                        "spec.telemetry.accessLog.file: cannot open {} for appending: {e}",
                        spec.path.display()
                    )
                })?),
            },
        };
        self.tracer = match &self.telemetry.tracing {
            None => None,
            Some(spec) => match running.and_then(|r| r.tracer.as_ref()) {
                Some(t) if t.spec == *spec => Some(t.clone()),
                _ => Some(Arc::new(crate::trace::Tracer::start(spec).map_err(
                    |e| format!("spec.telemetry.tracing: cannot start the exporter: {e}"),
                )?)),
            },
        };
        Ok(())
    }

    /// Takes over `running`'s clusters that this snapshot configures the same way, so
    /// that their state survives the swap (see [`Cluster::same_config`]). Returns how many
    /// were kept.
    pub fn keep_unchanged_clusters(&mut self, running: &Snapshot) -> usize {
        let mut kept = 0;
        for (name, new) in &mut self.clusters {
            if let Some(old) = running.clusters.get(name) {
                if !Arc::ptr_eq(old, new) && old.same_config(new) {
                    *new = old.clone();
                    kept += 1;
                }
            }
        }
        kept
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerSpec> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// Resolver for `proxy_http_call` upstream names.
    pub fn resolver(
        clusters: &HashMap<String, Arc<Cluster>>,
        aliases: HashMap<String, String>,
        redis_url: Option<String>,
    ) -> Arc<dyn ClusterResolver> {
        Arc::new(Names {
            clusters: clusters.keys().cloned().collect(),
            aliases,
            redis_url,
        })
    }
}

/// The resolver of whichever snapshot is current. Plugin instances outlive snapshots (an
/// EDS push or a route change keeps them), so their `http_call`s resolve against the
/// clusters of now, as Envoy's cluster manager answers them.
pub struct CurrentResolver(pub Arc<arc_swap::ArcSwap<Snapshot>>);

impl ClusterResolver for CurrentResolver {
    fn resolve(&self, upstream: &str) -> Option<String> {
        self.0.load().resolver.resolve(upstream)
    }

    fn shared_store_take(
        &self,
        req: &lateen_sdk::store::TakeRequest,
    ) -> Result<lateen_sdk::store::TakeResponse, StoreTakeError> {
        self.0.load().resolver.shared_store_take(req)
    }
}

struct Names {
    clusters: std::collections::HashSet<String>,
    aliases: HashMap<String, String>,
    redis_url: Option<String>,
}

impl ClusterResolver for Names {
    fn shared_store_take(
        &self,
        req: &lateen_sdk::store::TakeRequest,
    ) -> Result<lateen_sdk::store::TakeResponse, StoreTakeError> {
        let url = self
            .redis_url
            .as_deref()
            .ok_or(StoreTakeError::NotConfigured)?;
        crate::upstream::take_blocking(url, req, std::time::Duration::from_millis(100))
            .map_err(StoreTakeError::Unavailable)
    }

    fn resolve(&self, upstream: &str) -> Option<String> {
        if self.clusters.contains(upstream) {
            return Some(upstream.to_string());
        }
        self.aliases.get(upstream).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::Window;

    #[test]
    fn the_window_forgets_old_streams() {
        let w = Window::new(60_000); // six buckets of 10 s
        for t in 0..10 {
            w.add(t * 100, true, false);
        }
        assert_eq!(w.add(5_000, false, true), (11, 10, 1));
        // 55 s later the first bucket is still in the window...
        assert_eq!(w.add(55_000, false, false), (12, 10, 1));
        // ...and at 60 s it has slid out.
        assert_eq!(w.add(60_000, false, false), (2, 0, 0));
        // A bucket reused after a long gap starts from zero.
        assert_eq!(w.add(600_000, false, false), (1, 0, 0));
    }
}
