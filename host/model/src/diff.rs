//! What changed between two snapshots: the one place a reload's differences are computed.
//!
//! A reload builds a whole new [`Snapshot`]; what holds state in the running proxy is then
//! carried over where the new config leaves it unchanged, as Envoy (and sozu) do:
//!
//! - **listeners** (bound ones, by name and address): each worker binds the added ones on
//!   its own socket and closes the removed ones, whose open connections finish as on a
//!   drain; unchanged ones keep their sockets.
//! - **clusters** (by name): an unchanged cluster keeps its running state — outlier
//!   ejections, requests in flight, the round-robin cursor, connection slots.
//! - **plugins** (canary versions included, by name and module): an unchanged plugin's VM
//!   (same module, identity, failure handling and recycling) keeps its instances on every
//!   worker, and so its state; its root contexts for configurations still in use stay.
//! - **service plugins** (by name, module and configuration): unchanged ones keep running.
//!
//! The runtime applies the result: `Live::install` for clusters and telemetry, each worker
//! for its listeners, VMs and (worker 0) service plugins.

use crate::{FilterSpec, PluginSpec, Snapshot};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The changes of one kind of thing, by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes<K> {
    pub added: Vec<K>,
    pub removed: Vec<K>,
    /// In both, configured differently: made anew.
    pub changed: Vec<K>,
    /// In both, configured alike: carried over.
    pub unchanged: Vec<K>,
}

impl<K> Default for Changes<K> {
    fn default() -> Self {
        Changes {
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
            unchanged: Vec::new(),
        }
    }
}

impl<K: Ord + Clone> Changes<K> {
    /// Compares two keyed sets, `same` telling whether an entry in both is unchanged.
    fn of<V>(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>, same: impl Fn(&V, &V) -> bool) -> Self {
        let mut c = Changes::default();
        for (k, v) in new {
            match old.get(k) {
                None => c.added.push(k.clone()),
                Some(o) if same(o, v) => c.unchanged.push(k.clone()),
                Some(_) => c.changed.push(k.clone()),
            }
        }
        c.removed = old
            .keys()
            .filter(|k| !new.contains_key(k))
            .cloned()
            .collect();
        c
    }

    /// Whether nothing was added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    pub fn is_unchanged(&self, k: &K) -> bool {
        self.unchanged.contains(k)
    }
}

/// A bound listener: its name and address.
pub type ListenerKey = (String, SocketAddr);

/// A plugin VM: the plugin's name and its module's sha256.
pub type VmKey = (String, String);

/// A service plugin: its name, its module's sha256 and its configuration.
pub type ServiceKey = (String, String, bytes::Bytes);

/// What changed from one snapshot to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub listeners: Changes<ListenerKey>,
    pub clusters: Changes<String>,
    pub plugins: Changes<VmKey>,
    pub service_plugins: Changes<ServiceKey>,
}

impl Diff {
    /// Everything is new (the first snapshot).
    pub fn initial(new: &Snapshot) -> Diff {
        diff(&Snapshot::default(), new)
    }
}

/// What changed from `old` to `new`.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Diff {
    Diff {
        listeners: Changes::of(&bound(old), &bound(new), |_, _| true),
        clusters: Changes::of(&keyed(&old.clusters), &keyed(&new.clusters), |a, b| {
            **a == **b
        }),
        plugins: Changes::of(&vms(old), &vms(new), |a, b| same_vm(a, b)),
        service_plugins: Changes::of(
            &services(&old.service_plugins),
            &services(&new.service_plugins),
            |_, _| true,
        ),
    }
}

/// The key a plugin's VM carries over by.
pub fn vm_key(p: &PluginSpec) -> VmKey {
    (p.name.clone(), p.module.sha256.clone())
}

/// The key a service plugin keeps running by.
pub fn service_key(f: &FilterSpec) -> ServiceKey {
    (
        f.plugin.name.clone(),
        f.plugin.module.sha256.clone(),
        f.configuration.clone(),
    )
}

/// Whether an instance of `old` can serve `new`: everything a VM is made from or acts on
/// outside its configuration is the same.
pub fn same_vm(old: &PluginSpec, new: &PluginSpec) -> bool {
    old.name == new.name
        && old.module.sha256 == new.module.sha256
        && old.identity == new.identity
        && old.fail == new.fail
        && old.recycle == new.recycle
}

/// The keys of the listeners a snapshot binds (what the listener diff compares, and what
/// each worker reconciles its open sockets with).
pub fn bound_listeners(s: &Snapshot) -> impl Iterator<Item = ListenerKey> + '_ {
    s.listeners
        .iter()
        .filter(|l| l.bind)
        .map(|l| (l.name.clone(), l.addr))
}

fn bound(s: &Snapshot) -> BTreeMap<ListenerKey, ()> {
    bound_listeners(s).map(|k| (k, ())).collect()
}

fn keyed<V: Clone>(m: &std::collections::HashMap<String, V>) -> BTreeMap<String, V> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Every plugin of `s` with a VM: the chain's and their canary versions.
pub fn with_canaries(s: &Snapshot) -> impl Iterator<Item = &Arc<PluginSpec>> {
    s.plugins.iter().chain(
        s.plugins
            .iter()
            .filter_map(|p| p.canary.as_ref().map(|c| &c.spec)),
    )
}

fn vms(s: &Snapshot) -> BTreeMap<VmKey, Arc<PluginSpec>> {
    with_canaries(s).map(|p| (vm_key(p), p.clone())).collect()
}

fn services(f: &[FilterSpec]) -> BTreeMap<ServiceKey, ()> {
    f.iter().map(|f| (service_key(f), ())).collect()
}

/// Names of `changes` for a log line: `+a -b ~c`.
pub fn summary<K: std::fmt::Debug>(changes: &Changes<K>) -> String {
    let mut parts = Vec::new();
    for (sign, ks) in [
        ('+', &changes.added),
        ('-', &changes.removed),
        ('~', &changes.changed),
    ] {
        for k in ks {
            parts.push(format!("{sign}{k:?}"));
        }
    }
    parts.join(" ")
}
