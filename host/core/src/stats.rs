//! Host statistics: Envoy-named counters and gauges for listeners, clusters and plugins.
//!
//! Stats are kept by name in one process-wide store, so they survive snapshot swaps, as
//! Envoy's stats store keeps a cluster's counters across config updates. Hot paths hold an
//! `Arc` to their entry and only touch relaxed atomics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Increments and returns the count before this increment.
    pub fn inc_prev(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Increments now and decrements when the guard drops.
    pub fn track(self: &Arc<Self>) -> GaugeGuard {
        self.inc();
        GaugeGuard(self.clone())
    }
}

/// Holds one unit of a gauge.
pub struct GaugeGuard(Arc<Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counters by response class: 1xx .. 5xx.
#[derive(Debug, Default)]
pub struct ByClass([Counter; 5]);

impl ByClass {
    pub fn record(&self, status: u16) {
        if let Some(c) = self.0.get(usize::from(status / 100).wrapping_sub(1)) {
            c.inc();
        }
    }
    pub fn get(&self, class: usize) -> u64 {
        self.0.get(class.wrapping_sub(1)).map_or(0, Counter::get)
    }
}

/// One HTTP listener (Envoy's `http.PREFIX.*`, the prefix being the listener name).
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub cx_total: Counter,
    pub cx_active: Arc<Gauge>,
    pub rq_total: Counter,
    pub rq_active: Arc<Gauge>,
    pub rq_xx: ByClass,
    /// TLS handshakes completed (Envoy's `listener.ADDR.ssl.handshake`).
    pub ssl_handshake: Counter,
    /// TLS handshakes that failed (`ssl.connection_error`).
    pub ssl_connection_error: Counter,
    /// Connections whose SNI matched no server (`no_filter_chain_match`).
    pub no_filter_chain_match: Counter,
    /// Connections closed at accept because the global connection cap was reached
    /// (`downstream_global_cx_overflow`).
    pub global_cx_overflow: Counter,
}

/// One upstream cluster (Envoy's `cluster.NAME.*`).
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Tells clusters apart in per-cluster connection pools.
    pub id: u64,
    pub rq_total: Counter,
    pub rq_active: Arc<Gauge>,
    pub rq_xx: ByClass,
    pub cx_total: Counter,
    pub cx_active: Arc<Gauge>,
    pub cx_connect_fail: Counter,
    pub rq_pending_total: Counter,
    pub rq_pending_active: Arc<Gauge>,
    pub rq_pending_overflow: Counter,
    pub rq_retry: Counter,
    pub rq_timeout: Counter,
    pub rq_per_try_timeout: Counter,
    pub ejections_enforced_total: Counter,
    pub ejections_active: Gauge,
}

/// How many plugin callbacks share one timed sample in [`PluginStats::cpu_ns`]. Reading the
/// clock twice per callback cost about 5% of a request with four filters (a request makes
/// some 28 callbacks), more than the estimate is worth.
pub const CPU_SAMPLE_EVERY: u64 = 16;

/// One plugin, summed over its instances on every worker.
#[derive(Debug, Default)]
pub struct PluginStats {
    pub callbacks: Counter,
    /// Time spent inside the plugin's callbacks, estimated from one callback in
    /// [`CPU_SAMPLE_EVERY`] (timed, then scaled). Callbacks run to completion on a worker
    /// thread, so this is the plugin's CPU time (plus any preemption by the kernel).
    pub cpu_ns: Counter,
    /// Linear memory of the live instances.
    pub memory_bytes: Gauge,
    pub instances: Gauge,
    pub traps: Counter,
    /// Callbacks stopped by the epoch deadline.
    pub timeouts: Counter,
    /// Instances replaced by `recycle-after-requests` or `recycle-memory`.
    pub recycles: Counter,
}

/// Every stat, by name.
#[derive(Default)]
pub struct Store {
    listeners: Mutex<BTreeMap<String, Arc<ListenerStats>>>,
    clusters: Mutex<BTreeMap<String, Arc<ClusterStats>>>,
    plugins: Mutex<BTreeMap<String, Arc<PluginStats>>>,
    next_id: AtomicU64,
}

static STORE: LazyLock<Store> = LazyLock::new(Store::default);

/// The process-wide store.
pub fn store() -> &'static Store {
    &STORE
}

// The entry for `name`, made by `new` the first time.
fn entry<T>(map: &Mutex<BTreeMap<String, Arc<T>>>, name: &str, new: impl FnOnce() -> T) -> Arc<T> {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    m.entry(name.to_string())
        .or_insert_with(|| Arc::new(new()))
        .clone()
}

fn all<T>(map: &Mutex<BTreeMap<String, Arc<T>>>) -> Vec<(String, Arc<T>)> {
    let m = map.lock().unwrap_or_else(|p| p.into_inner());
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl Store {
    pub fn listener(&self, name: &str) -> Arc<ListenerStats> {
        entry(&self.listeners, name, ListenerStats::default)
    }

    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        entry(&self.clusters, name, || ClusterStats {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            ..ClusterStats::default()
        })
    }

    pub fn plugin(&self, name: &str) -> Arc<PluginStats> {
        entry(&self.plugins, name, PluginStats::default)
    }

    pub fn listeners(&self) -> Vec<(String, Arc<ListenerStats>)> {
        all(&self.listeners)
    }

    pub fn clusters(&self) -> Vec<(String, Arc<ClusterStats>)> {
        all(&self.clusters)
    }

    pub fn plugins(&self) -> Vec<(String, Arc<PluginStats>)> {
        all(&self.plugins)
    }

    /// Every stat as one flat list of samples, for the Prometheus and Envoy renderings.
    pub fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for (name, l) in self.listeners() {
            listener_samples(&name, &l, &mut out);
        }
        for (name, c) in self.clusters() {
            cluster_samples(&name, &c, &mut out);
        }
        for (name, p) in self.plugins() {
            plugin_samples(&name, &p, &mut out);
        }
        out
    }
}

/// Adds one sample: its family, Envoy name, labels and value.
fn sample(
    out: &mut Vec<Sample>,
    family: &'static Family,
    envoy: String,
    labels: Vec<(&'static str, String)>,
    value: f64,
) {
    out.push(Sample {
        family,
        envoy,
        labels,
        value,
    })
}

/// A listener's connection, request and TLS stats (Envoy's `http.NAME.*`, `listener.NAME.*`).
fn listener_samples(name: &str, l: &ListenerStats, out: &mut Vec<Sample>) {
    let mut push = |f: &'static Family, e: String, lab: Vec<(&'static str, String)>, v: f64| {
        sample(out, f, e, lab, v)
    };
    let name = name.to_string();
    let lab = || vec![("envoy_http_conn_manager_prefix", name.clone())];
    let n = |stat: &str| format!("http.{name}.{stat}");
    push(
        &DOWNSTREAM_CX_TOTAL,
        n("downstream_cx_total"),
        lab(),
        l.cx_total.get() as f64,
    );
    push(
        &DOWNSTREAM_CX_ACTIVE,
        n("downstream_cx_active"),
        lab(),
        l.cx_active.get() as f64,
    );
    push(
        &DOWNSTREAM_RQ_TOTAL,
        n("downstream_rq_total"),
        lab(),
        l.rq_total.get() as f64,
    );
    push(
        &DOWNSTREAM_RQ_ACTIVE,
        n("downstream_rq_active"),
        lab(),
        l.rq_active.get() as f64,
    );
    let llab = || vec![("envoy_listener_address", name.clone())];
    let ln = |stat: &str| format!("listener.{name}.{stat}");
    for (family, stat, v) in [
        (&SSL_HANDSHAKE, "ssl.handshake", &l.ssl_handshake),
        (
            &SSL_CONNECTION_ERROR,
            "ssl.connection_error",
            &l.ssl_connection_error,
        ),
        (
            &NO_FILTER_CHAIN_MATCH,
            "no_filter_chain_match",
            &l.no_filter_chain_match,
        ),
        (
            &GLOBAL_CX_OVERFLOW,
            "downstream_global_cx_overflow",
            &l.global_cx_overflow,
        ),
    ] {
        push(family, ln(stat), llab(), v.get() as f64);
    }
    for class in 1..=5 {
        let mut labels = lab();
        labels.push(("envoy_response_code_class", class.to_string()));
        push(
            &DOWNSTREAM_RQ_XX,
            n(&format!("downstream_rq_{class}xx")),
            labels,
            l.rq_xx.get(class) as f64,
        );
    }
}

/// A cluster's upstream request, connection and outlier stats (`cluster.NAME.*`).
fn cluster_samples(name: &str, c: &ClusterStats, out: &mut Vec<Sample>) {
    let mut push = |f: &'static Family, e: String, lab: Vec<(&'static str, String)>, v: f64| {
        sample(out, f, e, lab, v)
    };
    let name = name.to_string();
    let lab = || vec![("cluster_name", name.clone())];
    let n = |stat: &str| format!("cluster.{name}.{stat}");
    let counters: [(&'static Family, &str, u64); 12] = [
        (&UPSTREAM_RQ_TOTAL, "upstream_rq_total", c.rq_total.get()),
        (&UPSTREAM_CX_TOTAL, "upstream_cx_total", c.cx_total.get()),
        (
            &UPSTREAM_CX_CONNECT_FAIL,
            "upstream_cx_connect_fail",
            c.cx_connect_fail.get(),
        ),
        (
            &UPSTREAM_RQ_PENDING_TOTAL,
            "upstream_rq_pending_total",
            c.rq_pending_total.get(),
        ),
        (
            &UPSTREAM_RQ_PENDING_OVERFLOW,
            "upstream_rq_pending_overflow",
            c.rq_pending_overflow.get(),
        ),
        (&UPSTREAM_RQ_RETRY, "upstream_rq_retry", c.rq_retry.get()),
        (
            &UPSTREAM_RQ_TIMEOUT,
            "upstream_rq_timeout",
            c.rq_timeout.get(),
        ),
        (
            &UPSTREAM_RQ_PER_TRY_TIMEOUT,
            "upstream_rq_per_try_timeout",
            c.rq_per_try_timeout.get(),
        ),
        (
            &EJECTIONS_ENFORCED,
            "outlier_detection.ejections_enforced_total",
            c.ejections_enforced_total.get(),
        ),
        (
            &UPSTREAM_RQ_ACTIVE,
            "upstream_rq_active",
            c.rq_active.get().max(0) as u64,
        ),
        (
            &UPSTREAM_CX_ACTIVE,
            "upstream_cx_active",
            c.cx_active.get().max(0) as u64,
        ),
        (
            &UPSTREAM_RQ_PENDING_ACTIVE,
            "upstream_rq_pending_active",
            c.rq_pending_active.get().max(0) as u64,
        ),
    ];
    for (family, stat, v) in counters {
        push(family, n(stat), lab(), v as f64);
    }
    push(
        &EJECTIONS_ACTIVE,
        n("outlier_detection.ejections_active"),
        lab(),
        c.ejections_active.get() as f64,
    );
    for class in 1..=5 {
        let mut labels = lab();
        labels.push(("envoy_response_code_class", class.to_string()));
        push(
            &UPSTREAM_RQ_XX,
            n(&format!("upstream_rq_{class}xx")),
            labels,
            c.rq_xx.get(class) as f64,
        );
    }
}

/// A plugin's callbacks, CPU, memory, instances, recycles and traps (`wasm.NAME.*`).
fn plugin_samples(name: &str, p: &PluginStats, out: &mut Vec<Sample>) {
    let mut push = |f: &'static Family, e: String, lab: Vec<(&'static str, String)>, v: f64| {
        sample(out, f, e, lab, v)
    };
    let name = name.to_string();
    let lab = || vec![("plugin", name.clone())];
    let n = |stat: &str| format!("wasm.{name}.{stat}");
    push(
        &WASM_CALLBACKS,
        n("callbacks"),
        lab(),
        p.callbacks.get() as f64,
    );
    push(
        &WASM_CPU,
        n("cpu_seconds"),
        lab(),
        p.cpu_ns.get() as f64 / 1e9,
    );
    push(
        &WASM_MEMORY,
        n("memory_bytes"),
        lab(),
        p.memory_bytes.get() as f64,
    );
    push(
        &WASM_INSTANCES,
        n("instances"),
        lab(),
        p.instances.get() as f64,
    );
    push(
        &WASM_RECYCLES,
        n("recycles"),
        lab(),
        p.recycles.get() as f64,
    );
    for (reason, v) in [("trap", p.traps.get()), ("deadline", p.timeouts.get())] {
        let mut labels = lab();
        labels.push(("reason", reason.to_string()));
        push(&WASM_TRAPS, n(&format!("traps.{reason}")), labels, v as f64);
    }
}

/// A Prometheus metric family.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: &'static str,
}

/// One value: its family (Prometheus name), its Envoy stat name and its labels.
#[derive(Debug)]
pub struct Sample {
    pub family: &'static Family,
    pub envoy: String,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

macro_rules! families {
    ($($id:ident = $name:literal, $kind:literal, $help:literal;)*) => {
        $(static $id: Family = Family { name: $name, kind: $kind, help: $help };)*
    };
}

families! {
    DOWNSTREAM_CX_TOTAL = "envoy_http_downstream_cx_total", "counter", "Downstream connections accepted.";
    DOWNSTREAM_CX_ACTIVE = "envoy_http_downstream_cx_active", "gauge", "Downstream connections open.";
    DOWNSTREAM_RQ_TOTAL = "envoy_http_downstream_rq_total", "counter", "Downstream requests received.";
    DOWNSTREAM_RQ_ACTIVE = "envoy_http_downstream_rq_active", "gauge", "Downstream requests in progress.";
    DOWNSTREAM_RQ_XX = "envoy_http_downstream_rq_xx", "counter", "Downstream responses by status class.";
    SSL_HANDSHAKE = "envoy_listener_ssl_handshake", "counter", "Downstream TLS handshakes completed.";
    SSL_CONNECTION_ERROR = "envoy_listener_ssl_connection_error", "counter", "Downstream TLS handshakes that failed.";
    NO_FILTER_CHAIN_MATCH = "envoy_listener_no_filter_chain_match", "counter", "Downstream TLS connections whose SNI matched no server.";
    GLOBAL_CX_OVERFLOW = "envoy_listener_downstream_global_cx_overflow", "counter", "Downstream connections closed at accept: the global connection cap was reached.";
    UPSTREAM_RQ_TOTAL = "envoy_cluster_upstream_rq_total", "counter", "Upstream requests sent, tries included.";
    UPSTREAM_RQ_ACTIVE = "envoy_cluster_upstream_rq_active", "gauge", "Upstream requests in progress.";
    UPSTREAM_RQ_XX = "envoy_cluster_upstream_rq_xx", "counter", "Upstream responses by status class.";
    UPSTREAM_CX_TOTAL = "envoy_cluster_upstream_cx_total", "counter", "Upstream connections made.";
    UPSTREAM_CX_ACTIVE = "envoy_cluster_upstream_cx_active", "gauge", "Upstream connections open.";
    UPSTREAM_CX_CONNECT_FAIL = "envoy_cluster_upstream_cx_connect_fail", "counter", "Upstream connections that failed to connect.";
    UPSTREAM_RQ_PENDING_TOTAL = "envoy_cluster_upstream_rq_pending_total", "counter", "Upstream requests that waited for a connection.";
    UPSTREAM_RQ_PENDING_ACTIVE = "envoy_cluster_upstream_rq_pending_active", "gauge", "Upstream requests waiting for a connection.";
    UPSTREAM_RQ_PENDING_OVERFLOW = "envoy_cluster_upstream_rq_pending_overflow", "counter", "Requests refused by the circuit breaker (503 UO).";
    UPSTREAM_RQ_RETRY = "envoy_cluster_upstream_rq_retry", "counter", "Upstream retries.";
    UPSTREAM_RQ_TIMEOUT = "envoy_cluster_upstream_rq_timeout", "counter", "Upstream requests that hit the route timeout.";
    UPSTREAM_RQ_PER_TRY_TIMEOUT = "envoy_cluster_upstream_rq_per_try_timeout", "counter", "Upstream tries that hit the per-try timeout.";
    EJECTIONS_ENFORCED = "envoy_cluster_outlier_detection_ejections_enforced_total", "counter", "Hosts ejected by outlier detection.";
    EJECTIONS_ACTIVE = "envoy_cluster_outlier_detection_ejections_active", "gauge", "Hosts ejected now.";
    WASM_CALLBACKS = "lateen_wasm_callbacks_total", "counter", "Plugin callbacks run.";
    WASM_CPU = "lateen_wasm_cpu_seconds_total", "counter", "Time spent in plugin callbacks (one callback in 16 is timed and counts for 16).";
    WASM_MEMORY = "lateen_wasm_memory_bytes", "gauge", "Linear memory of a plugin's live instances.";
    WASM_INSTANCES = "lateen_wasm_instances", "gauge", "A plugin's live instances.";
    WASM_RECYCLES = "lateen_wasm_recycles_total", "counter", "Plugin instances recycled (request count or memory ceiling); the old one drains.";
    WASM_TRAPS = "lateen_wasm_traps_total", "counter", "Plugin traps, by reason (trap or deadline).";
}

/// Appends the samples in the Prometheus text format: one HELP/TYPE per family.
pub fn write_prometheus(samples: &[Sample], out: &mut String) {
    use std::fmt::Write;
    let mut last = "";
    for s in samples_by_family(samples) {
        if s.family.name != last {
            last = s.family.name;
            let _ = writeln!(out, "# HELP {} {}", s.family.name, s.family.help);
            let _ = writeln!(out, "# TYPE {} {}", s.family.name, s.family.kind);
        }
        let labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", crate::prometheus::escape(v)))
            .collect();
        let _ = writeln!(out, "{}{{{}}} {}", s.family.name, labels.join(","), s.value);
    }
}

// Prometheus wants a family's samples together.
fn samples_by_family(samples: &[Sample]) -> Vec<&Sample> {
    let mut v: Vec<&Sample> = samples.iter().collect();
    v.sort_by_key(|s| s.family.name);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_grouped_and_labelled() {
        let st = Store::default();
        st.cluster("outbound|80||a").rq_total.add(3);
        st.cluster("outbound|80||a").rq_xx.record(503);
        st.listener("http.8080").rq_total.inc();
        let mut out = String::new();
        write_prometheus(&st.samples(), &mut out);
        assert!(
            out.contains("envoy_cluster_upstream_rq_total{cluster_name=\"outbound|80||a\"} 3\n")
        );
        assert!(out.contains(
            "envoy_cluster_upstream_rq_xx{cluster_name=\"outbound|80||a\",envoy_response_code_class=\"5\"} 1\n"
        ));
        assert_eq!(
            out.matches("# TYPE envoy_cluster_upstream_rq_xx counter")
                .count(),
            1
        );
        assert!(out.contains(
            "envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"http.8080\"} 1\n"
        ));
    }
}
