//! The live service graph: who this proxy sends traffic to, by service and version, with
//! rps, error rate and p99 on each edge. It is computed from the proxy's own Istio metrics
//! (`istio_request_duration_milliseconds`, which counts every request with its labels),
//! sampled every second; rates are over the last [`WINDOW`].

use lateen_core::prometheus::parse_name;
use lateen_wasm::shared::{MetricKind, Shared, HISTOGRAM_BOUNDS};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far back rates look.
pub const WINDOW: Duration = Duration::from_secs(10);
/// How often the sampler runs.
pub const PERIOD: Duration = Duration::from_secs(1);

const FAMILY: &str = "istio_request_duration_milliseconds";

/// An edge of the versioned graph: source workload → service → version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    source: String,
    service: String,
    service_label: String,
    version: String,
}

/// Cumulative counts of one edge.
#[derive(Debug, Clone, Default)]
struct Counts {
    requests: u64,
    errors: u64,
    /// Per-bucket (not cumulative) counts, `HISTOGRAM_BOUNDS` then +Inf.
    buckets: Vec<u64>,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.requests += o.requests;
        self.errors += o.errors;
        if self.buckets.len() < o.buckets.len() {
            self.buckets.resize(o.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
    }

    fn minus(&self, o: Option<&Counts>) -> Counts {
        let Some(o) = o else { return self.clone() };
        Counts {
            requests: self.requests.saturating_sub(o.requests),
            errors: self.errors.saturating_sub(o.errors),
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, b)| b.saturating_sub(o.buckets.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }
}

type Sample = BTreeMap<Key, Counts>;

/// The sampler's history.
#[derive(Default)]
pub struct Graph {
    history: Mutex<VecDeque<(Instant, Sample)>>,
}

fn label<'a>(labels: &'a [(String, String)], k: &str) -> &'a str {
    labels
        .iter()
        .find(|(n, _)| n == k)
        .map_or("unknown", |(_, v)| v.as_str())
}

// The current cumulative counts by edge.
fn read(shared: &Shared) -> Sample {
    let mut out = Sample::new();
    for m in shared.all_metrics() {
        if m.kind != MetricKind::Histogram {
            continue;
        }
        let s = parse_name(&m.name);
        if s.family != FAMILY {
            continue;
        }
        let l = &s.labels;
        let src = label(l, "source_workload");
        let src_ns = label(l, "source_workload_namespace");
        let service = label(l, "destination_service").to_string();
        let service_label = match (
            label(l, "destination_service_name"),
            label(l, "destination_service_namespace"),
        ) {
            ("unknown", _) => service.clone(),
            (n, "unknown") => n.to_string(),
            (n, ns) => format!("{n}.{ns}"),
        };
        let key = Key {
            source: if src_ns == "unknown" {
                src.to_string()
            } else {
                format!("{src}.{src_ns}")
            },
            service,
            service_label,
            version: label(l, "destination_version").to_string(),
        };
        let requests = m.count.load(Ordering::Relaxed);
        let c = Counts {
            requests,
            errors: if label(l, "response_code").starts_with('5') {
                requests
            } else {
                0
            },
            buckets: m
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        };
        out.entry(key).or_default().add(&c);
    }
    out
}

/// The q-quantile of per-bucket counts, interpolated inside the bucket as Prometheus'
/// `histogram_quantile` does; `None` without data.
fn quantile(q: f64, buckets: &[u64]) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut cum = 0u64;
    for (i, n) in buckets.iter().enumerate() {
        let before = cum;
        cum += n;
        if cum as f64 >= rank && *n > 0 {
            let lo = match i {
                0 => 0.0,
                _ => HISTOGRAM_BOUNDS.get(i - 1).copied().unwrap_or(0.0),
            };
            // Past the last bound, the last bound is the best estimate (as Prometheus).
            let Some(hi) = HISTOGRAM_BOUNDS.get(i) else {
                return Some(lo);
            };
            return Some(lo + (hi - lo) * (rank - before as f64) / *n as f64);
        }
    }
    HISTOGRAM_BOUNDS.last().copied()
}

impl Graph {
    /// Records the current counts and forgets those older than the window.
    pub fn sample(&self, shared: &Shared) {
        let now = Instant::now();
        let s = read(shared);
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.push_back((now, s));
        while h
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW + PERIOD)
        {
            h.pop_front();
        }
    }

    /// The graph as `/graph.json` serves it: nodes and edges with rates over the window.
    pub fn render(&self, shared: &Shared, proxy: &str) -> Value {
        let now = Instant::now();
        let current = read(shared);
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        // The oldest sample inside the window is the base; with none yet, rates cover
        // everything counted so far over one period.
        let base = h.iter().find(|(t, _)| now.duration_since(*t) <= WINDOW);
        let (base, secs) = match base {
            Some((t, s)) if now.duration_since(*t) >= Duration::from_millis(200) => {
                (Some(s), now.duration_since(*t).as_secs_f64())
            }
            _ => (None, PERIOD.as_secs_f64()),
        };
        let mut nodes: BTreeMap<String, Value> = BTreeMap::new();
        let mut to_service: BTreeMap<(String, String), Counts> = BTreeMap::new();
        let mut to_version: BTreeMap<(String, String), Counts> = BTreeMap::new();
        for (k, total) in &current {
            let delta = total.minus(base.and_then(|b| b.get(k)));
            let src = format!("src:{}", k.source);
            let svc = format!("svc:{}", k.service);
            let ver = format!("ver:{}:{}", k.service, k.version);
            let short = k
                .service_label
                .split('.')
                .next()
                .unwrap_or(&k.service_label);
            nodes.insert(
                src.clone(),
                json!({"id": src, "kind": "source", "label": k.source}),
            );
            nodes.insert(
                svc.clone(),
                json!({"id": svc, "kind": "service", "label": k.service_label}),
            );
            nodes.insert(
                ver.clone(),
                json!({"id": ver, "kind": "version", "label": format!("{short} {}", k.version)}),
            );
            to_service
                .entry((src, svc.clone()))
                .or_default()
                .add(&delta);
            to_version.entry((svc, ver)).or_default().add(&delta);
        }
        let edge = |(from, to): (String, String), c: Counts| {
            json!({
                "source": from,
                "target": to,
                "rps": c.requests as f64 / secs,
                "errorRate": if c.requests == 0 { 0.0 } else { c.errors as f64 / c.requests as f64 },
                "p99Ms": quantile(0.99, &c.buckets),
                "requests": c.requests,
            })
        };
        let edges: Vec<Value> = to_service
            .into_iter()
            .chain(to_version)
            .map(|(k, c)| edge(k, c))
            .collect();
        json!({
            "proxy": proxy,
            "windowSeconds": secs.min(WINDOW.as_secs_f64()),
            "generatedAtMs": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            "nodes": nodes.into_values().collect::<Vec<_>>(),
            "edges": edges,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        // 100 requests between 5 and 10 ms: p99 is near the top of that bucket.
        let mut b = vec![0; HISTOGRAM_BOUNDS.len() + 1];
        b[3] = 100;
        let p99 = quantile(0.99, &b).unwrap();
        assert!((p99 - 9.95).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.99, &[0, 0]), None);
    }

    #[test]
    fn edges_carry_rates_and_errors_per_version() {
        let shared = Shared::default();
        let name = |code: &str, v: &str| {
            lateen_sdk::metrics::labelled_name(
                FAMILY,
                &[
                    ("source_workload", "gw"),
                    ("source_workload_namespace", "istio-system"),
                    ("destination_service", "reviews.default.svc.cluster.local"),
                    ("destination_service_name", "reviews"),
                    ("destination_service_namespace", "default"),
                    ("destination_version", v),
                    ("response_code", code),
                ],
            )
        };
        let g = Graph::default();
        let (_, ok) = shared
            .define_metric(MetricKind::Histogram, &name("200", "v1"))
            .unwrap();
        let (_, bad) = shared
            .define_metric(MetricKind::Histogram, &name("503", "v2"))
            .unwrap();
        for _ in 0..9 {
            ok.record(3);
        }
        bad.record(3);
        let v = g.render(&shared, "gw");
        let edges = v["edges"].as_array().unwrap();
        let find = |to: &str| edges.iter().find(|e| e["target"] == to).unwrap().clone();
        let svc = find("svc:reviews.default.svc.cluster.local");
        assert_eq!(svc["source"], "src:gw.istio-system");
        assert_eq!(svc["requests"], 10);
        assert!((svc["errorRate"].as_f64().unwrap() - 0.1).abs() < 1e-9);
        let v2 = find("ver:reviews.default.svc.cluster.local:v2");
        assert_eq!(v2["errorRate"], 1.0);
        assert!(v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["label"] == "reviews v1" && n["kind"] == "version"));
    }
}
