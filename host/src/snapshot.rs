//! The immutable runtime configuration. A config source compiles resources into one
//! `Snapshot`; it is swapped in atomically and a request keeps the one it started with.

use crate::cluster::Cluster;
use crate::wasm::{ClusterResolver, CompiledModule, PluginIdentity};
use bytes::Bytes;
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
}

/// A canary version of a plugin: it takes `percent` of new streams until its trap rate or
/// the 5xx rate of its streams passes a threshold, then it is rolled back (for the life of
/// this snapshot). Promotion is a config change.
pub struct Canary {
    pub spec: Arc<PluginSpec>,
    pub percent: f64,
    pub max_trap_percent: f64,
    pub max_5xx_percent: f64,
    /// Streams seen before the rates are judged.
    pub min_requests: u64,
    pub requests: AtomicU64,
    pub traps: AtomicU64,
    pub five_xx: AtomicU64,
    pub rolled_back: AtomicBool,
}

impl Canary {
    /// Records a finished canary stream and rolls back when a rate passes its threshold.
    pub fn record(&self, trapped: bool, status: Option<u16>) {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let traps = self.traps.load(Ordering::Relaxed) + u64::from(trapped);
        if trapped {
            self.traps.fetch_add(1, Ordering::Relaxed);
        }
        let five = if status.is_some_and(|s| s >= 500) {
            self.five_xx.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.five_xx.load(Ordering::Relaxed)
        };
        if n < self.min_requests || self.rolled_back.load(Ordering::Relaxed) {
            return;
        }
        let pct = |x: u64| x as f64 * 100.0 / n as f64;
        if (pct(traps) > self.max_trap_percent || pct(five) > self.max_5xx_percent)
            && !self.rolled_back.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                plugin = %self.spec.name,
                "canary rolled back after {n} streams: {:.1}% traps, {:.1}% 5xx",
                pct(traps),
                pct(five)
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
}

/// An HTTP listener.
pub struct ListenerSpec {
    /// Envoy-style `ADDRESS_PORT`.
    pub name: String,
    pub addr: SocketAddr,
    pub filters: Vec<FilterSpec>,
}

/// The compiled configuration.
pub struct Snapshot {
    pub version: u64,
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
}

impl Snapshot {
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }

    /// Resolver for `proxy_http_call` upstream names.
    pub fn resolver(
        clusters: &HashMap<String, Arc<Cluster>>,
        aliases: HashMap<String, String>,
    ) -> Arc<dyn ClusterResolver> {
        Arc::new(Names {
            clusters: clusters.keys().cloned().collect(),
            aliases,
        })
    }
}

struct Names {
    clusters: std::collections::HashSet<String>,
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
