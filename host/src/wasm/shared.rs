//! Host-side state shared by every VM of the process: shared data (with CAS), shared queues
//! and plugin-defined metrics. Workers read and write it concurrently; each structure takes a
//! short lock, never across a guest call.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Result of a shared-data write.
#[derive(Debug, PartialEq, Eq)]
pub enum SetResult {
    Ok,
    CasMismatch,
}

/// Kind of a plugin metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Histogram bucket bounds (Envoy's defaults, in the unit the plugin records).
pub const HISTOGRAM_BOUNDS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// One plugin metric.
#[derive(Debug)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    pub value: AtomicI64,
    pub buckets: Vec<AtomicU64>,
    pub sum: AtomicU64,
    pub count: AtomicU64,
}

impl Metric {
    pub fn record(&self, v: u64) {
        match self.kind {
            MetricKind::Histogram => {
                let i = HISTOGRAM_BOUNDS.partition_point(|b| *b < v as f64);
                if let Some(b) = self.buckets.get(i) {
                    b.fetch_add(1, Ordering::Relaxed);
                }
                self.sum.fetch_add(v, Ordering::Relaxed);
                self.count.fetch_add(1, Ordering::Relaxed);
            }
            _ => self.value.store(v as i64, Ordering::Relaxed),
        }
    }
}

#[derive(Default)]
struct Queue {
    vm_id: String,
    name: String,
    items: VecDeque<Bytes>,
}

/// Process-wide plugin state.
/// Metric ids by name, and the metrics by id - 1.
type MetricTable = (HashMap<String, u32>, Vec<Arc<Metric>>);

#[derive(Default)]
pub struct Shared {
    data: RwLock<HashMap<String, (Bytes, u32)>>,
    queues: Mutex<Vec<Queue>>,
    metrics: RwLock<MetricTable>,
}

impl Shared {
    /// Value and CAS token of a key.
    pub fn get(&self, key: &str) -> Option<(Bytes, u32)> {
        self.data
            .read()
            .ok()
            .and_then(|d| d.get(key).map(|(v, c)| (v.clone(), *c)))
    }

    /// Sets a key. `cas == 0` writes unconditionally; otherwise it must equal the current
    /// token (a missing key has no token, so any non-zero cas fails).
    pub fn set(&self, key: &str, value: Option<Bytes>, cas: u32) -> SetResult {
        let Ok(mut d) = self.data.write() else {
            return SetResult::CasMismatch;
        };
        let current = d.get(key).map(|(_, c)| *c);
        if cas != 0 && current != Some(cas) {
            return SetResult::CasMismatch;
        }
        match value {
            None => {
                d.remove(key);
            }
            Some(v) => {
                // Tokens start at 1 and skip 0, which means "no cas".
                let next = current.map_or(1, |c| c.wrapping_add(1).max(1));
                d.insert(key.to_string(), (v, next));
            }
        }
        SetResult::Ok
    }

    /// Registers (or finds) a queue; ids start at 1.
    pub fn register_queue(&self, vm_id: &str, name: &str) -> u32 {
        let Ok(mut q) = self.queues.lock() else {
            return 0;
        };
        if let Some(i) = q.iter().position(|x| x.vm_id == vm_id && x.name == name) {
            return i as u32 + 1;
        }
        q.push(Queue {
            vm_id: vm_id.to_string(),
            name: name.to_string(),
            items: VecDeque::new(),
        });
        q.len() as u32
    }

    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        let q = self.queues.lock().ok()?;
        q.iter()
            .position(|x| x.vm_id == vm_id && x.name == name)
            .map(|i| i as u32 + 1)
    }

    /// `None` if the queue does not exist, `Some(None)` if it is empty.
    pub fn dequeue(&self, id: u32) -> Option<Option<Bytes>> {
        let mut q = self.queues.lock().ok()?;
        let queue = q.get_mut((id as usize).checked_sub(1)?)?;
        Some(queue.items.pop_front())
    }

    pub fn enqueue(&self, id: u32, v: Bytes) -> bool {
        let Ok(mut q) = self.queues.lock() else {
            return false;
        };
        match (id as usize).checked_sub(1).and_then(|i| q.get_mut(i)) {
            Some(queue) => {
                queue.items.push_back(v);
                true
            }
            None => false,
        }
    }

    /// Defines a metric (idempotent by name); ids start at 1.
    pub fn define_metric(&self, kind: MetricKind, name: &str) -> (u32, Arc<Metric>) {
        if let Ok(m) = self.metrics.read() {
            if let Some(id) = m.0.get(name) {
                return (*id, m.1[*id as usize - 1].clone());
            }
        }
        let mut m = match self.metrics.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some(id) = m.0.get(name) {
            return (*id, m.1[*id as usize - 1].clone());
        }
        let metric = Arc::new(Metric {
            name: name.to_string(),
            kind,
            value: AtomicI64::new(0),
            buckets: if kind == MetricKind::Histogram {
                (0..=HISTOGRAM_BOUNDS.len())
                    .map(|_| AtomicU64::new(0))
                    .collect()
            } else {
                Vec::new()
            },
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        });
        m.1.push(metric.clone());
        let id = m.1.len() as u32;
        m.0.insert(name.to_string(), id);
        (id, metric)
    }

    pub fn metric(&self, id: u32) -> Option<Arc<Metric>> {
        let m = self.metrics.read().ok()?;
        m.1.get((id as usize).checked_sub(1)?).cloned()
    }

    /// Every metric, for the exporter.
    pub fn all_metrics(&self) -> Vec<Arc<Metric>> {
        self.metrics.read().map(|m| m.1.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_semantics() {
        let s = Shared::default();
        assert_eq!(
            s.set("k", Some(Bytes::from("a")), 5),
            SetResult::CasMismatch
        );
        assert_eq!(s.set("k", Some(Bytes::from("a")), 0), SetResult::Ok);
        let (_, cas) = s.get("k").unwrap();
        assert_eq!(s.set("k", Some(Bytes::from("b")), cas), SetResult::Ok);
        assert_eq!(
            s.set("k", Some(Bytes::from("c")), cas),
            SetResult::CasMismatch
        );
        assert_eq!(s.get("k").unwrap().0, Bytes::from("b"));
    }

    #[test]
    fn queues_and_metrics() {
        let s = Shared::default();
        let id = s.register_queue("vm", "q");
        assert_eq!(s.resolve_queue("vm", "q"), Some(id));
        assert_eq!(s.dequeue(id), Some(None));
        assert!(s.enqueue(id, Bytes::from("x")));
        assert_eq!(s.dequeue(id), Some(Some(Bytes::from("x"))));
        assert_eq!(s.dequeue(99), None);
        let (a, m) = s.define_metric(MetricKind::Histogram, "h");
        assert_eq!(s.define_metric(MetricKind::Histogram, "h").0, a);
        m.record(7);
        assert_eq!(m.count.load(Ordering::Relaxed), 1);
        assert_eq!(m.buckets[3].load(Ordering::Relaxed), 1, "7 falls in le=10");
    }
}
