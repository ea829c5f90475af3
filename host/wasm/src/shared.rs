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
    /// The write would take shared data past its budget.
    Full,
}

/// Budgets for what plugins keep in host memory, which no instance's memory cap covers: a
/// plugin that grows them without bound would take the whole proxy down with it. Past a
/// budget the host call fails and the plugin sees an error status.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// Bytes of keys and values in shared data.
    pub data_bytes: usize,
    /// Shared queues in the process.
    pub queues: usize,
    /// Items waiting in one queue.
    pub queue_items: usize,
    /// Bytes waiting in all queues.
    pub queue_bytes: usize,
    /// Plugin-defined metrics (each is a Prometheus series).
    pub metrics: usize,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            data_bytes: 64 << 20,
            queues: 1024,
            queue_items: 10_000,
            queue_bytes: 64 << 20,
            metrics: 100_000,
        }
    }
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

/// Result of an enqueue.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    Ok,
    NotFound,
    /// The queue, or all queues together, hold as much as their budget allows.
    Full,
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

/// Shared data and the bytes its keys and values take.
type DataTable = (HashMap<String, (Bytes, u32)>, usize);

#[derive(Default)]
pub struct Shared {
    data: RwLock<DataTable>,
    /// The queues and the bytes waiting in them.
    queues: Mutex<(Vec<Queue>, usize)>,
    metrics: RwLock<MetricTable>,
    budgets: Budgets,
}

impl Shared {
    pub fn with_budgets(budgets: Budgets) -> Self {
        Shared {
            budgets,
            ..Shared::default()
        }
    }

    /// Value and CAS token of a key.
    pub fn get(&self, key: &str) -> Option<(Bytes, u32)> {
        self.data
            .read()
            .ok()
            .and_then(|d| d.0.get(key).map(|(v, c)| (v.clone(), *c)))
    }

    /// Sets a key. `cas == 0` writes unconditionally; otherwise it must equal the current
    /// token (a missing key has no token, so any non-zero cas fails).
    pub fn set(&self, key: &str, value: Option<Bytes>, cas: u32) -> SetResult {
        let Ok(mut guard) = self.data.write() else {
            return SetResult::CasMismatch;
        };
        let (d, bytes) = &mut *guard;
        let old = d.get(key).map(|(v, c)| (key.len() + v.len(), *c));
        let current = old.map(|(_, c)| c);
        if cas != 0 && current != Some(cas) {
            return SetResult::CasMismatch;
        }
        let freed = old.map_or(0, |(n, _)| n);
        match value {
            None => {
                d.remove(key);
                *bytes -= freed;
            }
            Some(v) => {
                let after = *bytes - freed + key.len() + v.len();
                if after > self.budgets.data_bytes {
                    return SetResult::Full;
                }
                *bytes = after;
                // Tokens start at 1 and skip 0, which means "no cas".
                let next = current.map_or(1, |c| c.wrapping_add(1).max(1));
                d.insert(key.to_string(), (v, next));
            }
        }
        SetResult::Ok
    }

    /// Registers (or finds) a queue; ids start at 1. `None` past the queue budget.
    pub fn register_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        let mut guard = self.queues.lock().ok()?;
        let q = &mut guard.0;
        if let Some(i) = q.iter().position(|x| x.vm_id == vm_id && x.name == name) {
            return Some(i as u32 + 1);
        }
        if q.len() >= self.budgets.queues {
            return None;
        }
        q.push(Queue {
            vm_id: vm_id.to_string(),
            name: name.to_string(),
            items: VecDeque::new(),
        });
        Some(q.len() as u32)
    }

    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        let q = self.queues.lock().ok()?;
        q.0.iter()
            .position(|x| x.vm_id == vm_id && x.name == name)
            .map(|i| i as u32 + 1)
    }

    /// `None` if the queue does not exist, `Some(None)` if it is empty.
    pub fn dequeue(&self, id: u32) -> Option<Option<Bytes>> {
        let mut guard = self.queues.lock().ok()?;
        let (q, bytes) = &mut *guard;
        let queue = q.get_mut((id as usize).checked_sub(1)?)?;
        let item = queue.items.pop_front();
        *bytes -= item.as_ref().map_or(0, Bytes::len);
        Some(item)
    }

    pub fn enqueue(&self, id: u32, v: Bytes) -> Enqueued {
        let Ok(mut guard) = self.queues.lock() else {
            return Enqueued::NotFound;
        };
        let (q, bytes) = &mut *guard;
        let Some(queue) = (id as usize).checked_sub(1).and_then(|i| q.get_mut(i)) else {
            return Enqueued::NotFound;
        };
        if queue.items.len() >= self.budgets.queue_items
            || *bytes + v.len() > self.budgets.queue_bytes
        {
            return Enqueued::Full;
        }
        *bytes += v.len();
        queue.items.push_back(v);
        Enqueued::Ok
    }

    /// Defines a metric (idempotent by name); ids start at 1. `None` past the budget.
    pub fn define_metric(&self, kind: MetricKind, name: &str) -> Option<(u32, Arc<Metric>)> {
        if let Ok(m) = self.metrics.read() {
            if let Some(id) = m.0.get(name) {
                return Some((*id, m.1[*id as usize - 1].clone()));
            }
        }
        let mut m = match self.metrics.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some(id) = m.0.get(name) {
            return Some((*id, m.1[*id as usize - 1].clone()));
        }
        if m.1.len() >= self.budgets.metrics {
            return None;
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
        Some((id, metric))
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
        let id = s.register_queue("vm", "q").unwrap();
        assert_eq!(s.resolve_queue("vm", "q"), Some(id));
        assert_eq!(s.dequeue(id), Some(None));
        assert_eq!(s.enqueue(id, Bytes::from("x")), Enqueued::Ok);
        assert_eq!(s.dequeue(id), Some(Some(Bytes::from("x"))));
        assert_eq!(s.dequeue(99), None);
        let (a, m) = s.define_metric(MetricKind::Histogram, "h").unwrap();
        assert_eq!(s.define_metric(MetricKind::Histogram, "h").unwrap().0, a);
        m.record(7);
        assert_eq!(m.count.load(Ordering::Relaxed), 1);
        assert_eq!(m.buckets[3].load(Ordering::Relaxed), 1, "7 falls in le=10");
    }

    #[test]
    fn budgets_bound_what_plugins_keep_in_the_host() {
        let s = Shared::with_budgets(Budgets {
            data_bytes: 10,
            queues: 1,
            queue_items: 2,
            queue_bytes: 5,
            metrics: 1,
        });
        let v = |t: &'static str| Some(Bytes::from(t));
        assert_eq!(s.set("k", v("1234"), 0), SetResult::Ok); // 5 bytes
        assert_eq!(s.set("j", v("1234"), 0), SetResult::Ok); // 10: the whole budget
        assert_eq!(s.set("i", v(""), 0), SetResult::Full);
        assert_eq!(s.get("i"), None);
        // Replacing a value counts the difference; removing frees.
        assert_eq!(s.set("k", v("1"), 0), SetResult::Ok); // 7
        assert_eq!(s.set("i", v("1"), 0), SetResult::Ok); // 9
        assert_eq!(s.set("j", None, 0), SetResult::Ok); // 4
        assert_eq!(s.set("h", v("12345"), 0), SetResult::Ok); // 10

        let q = s.register_queue("vm", "q").unwrap();
        assert_eq!(s.register_queue("vm", "q"), Some(q), "finding one is free");
        assert_eq!(s.register_queue("vm", "other"), None);
        assert_eq!(s.enqueue(q, Bytes::from("abc")), Enqueued::Ok);
        assert_eq!(s.enqueue(q, Bytes::from("abc")), Enqueued::Full, "bytes");
        assert_eq!(s.enqueue(q, Bytes::from("ab")), Enqueued::Ok);
        assert_eq!(s.enqueue(q, Bytes::new()), Enqueued::Full, "items");
        assert_eq!(s.dequeue(q), Some(Some(Bytes::from("abc"))));
        assert_eq!(s.enqueue(q, Bytes::from("abc")), Enqueued::Ok);

        assert!(s.define_metric(MetricKind::Counter, "a").is_some());
        assert!(s.define_metric(MetricKind::Counter, "a").is_some());
        assert!(s.define_metric(MetricKind::Counter, "b").is_none());
    }
}
