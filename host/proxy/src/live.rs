//! The installed configuration: a [`Snapshot`] (plain data) and what the proxy runs for it —
//! running clusters with their state, canary rollouts, the access-log writer, the tracer
//! and the resolver plugins' `http_call`s and shared-store takes go through. It is swapped
//! in atomically and a request keeps the one it started with.
//!
//! [`Live::install`] builds it from a new snapshot and the running one, taking over what
//! the new config leaves unchanged (see [`lateen_model::diff`]).

use crate::access_log::AccessLog;
use crate::cluster::Cluster;
use crate::rollout::Rollouts;
use crate::trace::Tracer;
use lateen_model::diff::Diff;
use lateen_model::Snapshot;
use lateen_wasm::{ClusterResolver, StoreTakeError};
use std::collections::HashMap;
use std::sync::Arc;

/// A snapshot as the proxy runs it. Reads of its config go through `Deref`
/// (`live.listeners`); `live.clusters` are the running clusters.
pub struct Live {
    pub config: Snapshot,
    /// The running cluster of each of the config's clusters.
    pub clusters: HashMap<String, Arc<Cluster>>,
    pub rollouts: Rollouts,
    /// Resolves `http_call` upstreams by this config's names; shared-store takes go to
    /// its Redis.
    pub resolver: Arc<dyn ClusterResolver>,
    /// The open access log (`None` when the config asks for none, and offline).
    pub access_log: Option<Arc<AccessLog>>,
    /// The running tracer, likewise.
    pub tracer: Option<Arc<Tracer>>,
}

impl std::ops::Deref for Live {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.config
    }
}

impl Live {
    /// The runtime for `config` without telemetry: fresh clusters, no file opened, no
    /// thread started (`lateen validate --dump`, and the first step of [`Live::install`]).
    pub fn offline(config: Snapshot) -> Live {
        let clusters = config
            .clusters
            .iter()
            .map(|(name, spec)| (name.clone(), Arc::new(Cluster::new(spec.clone()))))
            .collect();
        Live {
            rollouts: Rollouts::new(&config.plugins),
            resolver: Arc::new(Resolver {
                names: config.names(),
                redis_url: config.redis_url.clone(),
            }),
            clusters,
            access_log: None,
            tracer: None,
            config,
        }
    }

    /// The runtime for `config`, replacing `running`: the clusters `diff` finds unchanged
    /// keep their running state (outlier ejections, requests in flight, the round-robin
    /// cursor, connection slots), and the access log and the tracer are kept when their
    /// settings are unchanged (so a reload neither reopens the file nor restarts the
    /// exporter); the rest is made anew. The error names the setting that could not start.
    pub fn install(config: Snapshot, running: Option<&Live>) -> Result<(Live, Diff), String> {
        let diff = match running {
            Some(r) => lateen_model::diff::diff(&r.config, &config),
            None => Diff::initial(&config),
        };
        let mut live = Live::offline(config);
        crate::overload::configure(&live.config.limits);
        if let Some(r) = running {
            for name in &diff.clusters.unchanged {
                if let (Some(old), Some(new)) = (r.clusters.get(name), live.clusters.get_mut(name))
                {
                    *new = old.clone();
                }
            }
        }
        let t = &live.config.telemetry;
        live.access_log = match &t.access_log {
            None => None,
            Some(spec) => match running.and_then(|r| r.access_log.as_ref()) {
                Some(log) if log.spec == *spec => Some(log.clone()),
                _ => Some(AccessLog::open(spec).map_err(|e| {
                    format!(
                        "spec.telemetry.accessLog.file: cannot open {} for appending: {e}",
                        spec.path.display()
                    )
                })?),
            },
        };
        live.tracer = match &t.tracing {
            None => None,
            Some(spec) => match running.and_then(|r| r.tracer.as_ref()) {
                Some(tr) if tr.spec == *spec => Some(tr.clone()),
                _ => Some(Arc::new(Tracer::start(spec).map_err(|e| {
                    format!("spec.telemetry.tracing: cannot start the exporter: {e}")
                })?)),
            },
        };
        Ok((live, diff))
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }
}

/// The config's `http_call` names, and the Bootstrap's Redis for shared-store takes.
struct Resolver {
    names: Arc<dyn ClusterResolver>,
    redis_url: Option<String>,
}

impl ClusterResolver for Resolver {
    fn resolve(&self, upstream: &str) -> Option<String> {
        self.names.resolve(upstream)
    }

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
}

/// The resolver of whichever configuration is installed. Plugin instances outlive
/// snapshots (an EDS push or a route change keeps them), so their `http_call`s resolve
/// against the clusters of now, as Envoy's cluster manager answers them.
pub struct CurrentResolver(pub Arc<arc_swap::ArcSwap<Live>>);

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
