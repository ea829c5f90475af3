//! Drives one HTTP stream through a listener's wasm filters: request headers, body and
//! trailers in chain order, the response in reverse order, then on_done/on_log/on_delete.
//! Each worker owns its plugin instances ([`VmSlot`]), so no lock is taken to call in.

mod slot;
mod stream;

use crate::upstream::Upstream;
use bytes::Bytes;
use lateen_model::scope::{Choice, RuleAction, Scope};
use lateen_model::{FailStrategy, FilterSpec, PluginSpec};
use lateen_wasm::state::{LocalResponse, PendingCall, RemoteAction};
use lateen_wasm::{Action, ClusterResolver, Runtime, StreamState, Vm, WasmError};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

use self::slot::*;
pub use self::slot::{Instance, RootRef, VmSlot};
pub use self::stream::HttpStream;

/// One filter of a chain on one worker.
struct ChainFilter {
    slot: Rc<VmSlot>,
    /// The configuration when no `matchRules` entry applies; `None`: the plugin is off then
    /// (`defaultConfigDisable`).
    default: Option<Bytes>,
    /// Root context for `default` (on the instance generation it names), so the
    /// per-request path does not hash the configuration.
    root: RootCache,
    /// A canary version in progressive rollout: its instances and root.
    canary: Option<CanaryFilter>,
    /// `matchRules`, and the root context of each rule's configuration.
    scope: Option<Arc<Scope>>,
    rule_roots: Vec<RootCache>,
}

/// A filter's root context, which also keeps it alive while the chain is in use.
type RootCache = RefCell<Option<Rc<RootRef>>>;

struct CanaryFilter {
    rollout: Arc<crate::rollout::Rollout>,
    slot: Rc<VmSlot>,
    root: RootCache,
    rule_roots: Vec<RootCache>,
}

/// A listener's filter chain on one worker.
pub struct Chain {
    filters: Vec<ChainFilter>,
    /// How the listener normalizes request paths before the filters see them.
    pub path: lateen_core::path::PathNormalization,
}

impl Chain {
    /// The chain of `specs` over this worker's VM `slots`; canary versions count their
    /// streams in `rollouts`.
    pub fn new(
        specs: &[FilterSpec],
        slots: &HashMap<*const PluginSpec, Rc<VmSlot>>,
        rollouts: &crate::rollout::Rollouts,
    ) -> Self {
        Chain {
            filters: specs
                .iter()
                .filter_map(|f| {
                    let default = match &f.scope {
                        Some(sc) => sc.default.clone(),
                        None => Some(f.configuration.clone()),
                    };
                    // Each cache starts with the root a kept instance already runs for its
                    // configuration: the new chain takes it over before the old lets go.
                    let default_cache =
                        |s: &VmSlot| RefCell::new(default.as_ref().and_then(|c| s.live_root(c)));
                    let canary = f.plugin.canary.as_ref().and_then(|c| {
                        let rollout = rollouts.get(c)?;
                        slots.get(&Arc::as_ptr(&c.spec)).map(|s| CanaryFilter {
                            rollout: rollout.clone(),
                            slot: s.clone(),
                            root: default_cache(s),
                            rule_roots: rule_caches(f, s),
                        })
                    });
                    let s = slots.get(&Arc::as_ptr(&f.plugin))?;
                    Some(ChainFilter {
                        slot: s.clone(),
                        root: default_cache(s),
                        default: default.clone(),
                        canary,
                        rule_roots: rule_caches(f, s),
                        scope: f.scope.clone(),
                    })
                })
                .collect(),
            path: Default::default(),
        }
    }

    /// The chain, for a listener that normalizes paths so.
    pub fn with_path(mut self, path: lateen_core::path::PathNormalization) -> Self {
        self.path = path;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Makes its filters' instances and default root contexts now, when the config
    /// changed, so that the first request after a start or a change does not pay for
    /// instantiation and `on_configure`. A failure is left for the request path, which
    /// handles it by the plugin's failStrategy.
    pub fn warm(&self) {
        for f in &self.filters {
            let Some(config) = &f.default else { continue };
            let Ok(inst) = f.slot.instance() else {
                continue;
            };
            let current = f
                .root
                .borrow()
                .as_ref()
                .is_some_and(|r| r.generation == inst.generation);
            if current {
                continue;
            }
            match f.slot.root(&inst, config) {
                Ok(r) => *f.root.borrow_mut() = Some(r),
                Err(e) => tracing::debug!(plugin = %f.slot.spec.name, "not warmed: {e}"),
            }
        }
    }
}

// One root cache per `matchRules` entry, taken over as the default's is.
fn rule_caches(f: &FilterSpec, slot: &VmSlot) -> Vec<RootCache> {
    f.scope.as_ref().map_or_else(Vec::new, |sc| {
        sc.rules
            .iter()
            .map(|r| match &r.action {
                RuleAction::Config(c) => RefCell::new(slot.live_root(c)),
                _ => RefCell::new(None),
            })
            .collect()
    })
}

/// What the chain decided for a phase.
pub enum Verdict {
    Continue,
    /// A plugin answered locally.
    Respond(LocalResponse),
    /// Body: a filter is buffering; do not forward yet.
    Buffer,
}
