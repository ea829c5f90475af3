//! Plugins as the snapshot holds them: a loaded module, where it sits in a listener's chain,
//! the traffic it applies to, and the configuration of each filter that runs it.

use bytes::Bytes;
use lateen_wasm::{CompiledModule, PluginIdentity};
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
    pub xds: Option<Arc<crate::xds::XdsWasm>>,
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

    /// The filter Envoy (and Istio's EnvoyFilter `subFilter`) knows it as.
    pub fn envoy_name(self) -> &'static str {
        match self {
            Builtin::Router => "envoy.filters.http.router",
            Builtin::Ratelimit => "envoy.filters.http.local_ratelimit",
            Builtin::Fault => "envoy.filters.http.fault",
            Builtin::Metrics => "istio.stats",
        }
    }

    /// By its short name (`router`, as placements say it) or its Envoy name.
    pub fn named(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| {
            b.plugin_name().trim_start_matches("lateen/") == name || b.envoy_name() == name
        })
    }

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
        let anchor = Builtin::named(name.trim()).ok_or_else(bad)?;
        Ok(Placement { before, anchor })
    }
}

/// A canary version of a plugin: it takes `percent` of new streams until its trap rate or
/// the 5xx rate of its streams, over the last `window_ms`, passes a threshold; then it is
/// rolled back (for the life of this snapshot). Promotion is a config change. The counts
/// are the runtime's (the proxy's rollout state), kept per installed snapshot.
pub struct Canary {
    pub spec: Arc<PluginSpec>,
    pub percent: f64,
    pub max_trap_percent: f64,
    pub max_5xx_percent: f64,
    /// Streams in the window before the rates are judged.
    pub min_requests: u64,
    /// The sliding window the rates are judged over.
    pub window_ms: u64,
}

/// One filter of a listener's chain: a plugin and the configuration of its root context.
#[derive(Clone)]
pub struct FilterSpec {
    pub plugin: Arc<PluginSpec>,
    pub configuration: Bytes,
    /// `matchRules`: per host, route and service configurations of the same plugin.
    pub scope: Option<Arc<crate::scope::Scope>>,
}
