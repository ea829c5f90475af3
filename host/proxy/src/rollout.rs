//! Canary rollouts as they run: the counts of one canary's streams over a sliding window,
//! and the rollback when a rate passes its threshold ([`lateen_model::Canary`] holds the
//! settings). One per canary of an installed snapshot, shared by every worker.

use lateen_model::Canary;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The rollout state of one canary.
pub struct Rollout {
    pub canary: Arc<Canary>,
    /// Since the config loaded, for the admin API.
    pub requests: AtomicU64,
    pub traps: AtomicU64,
    pub five_xx: AtomicU64,
    pub rolled_back: AtomicBool,
    window: Window,
}

/// The rollouts of a snapshot's canaries, by the canary they run.
#[derive(Default)]
pub struct Rollouts(HashMap<usize, Arc<Rollout>>);

impl Rollouts {
    /// A fresh rollout for each canary of `plugins`.
    pub fn new(plugins: &[Arc<lateen_model::PluginSpec>]) -> Self {
        Rollouts(
            plugins
                .iter()
                .filter_map(|p| p.canary.as_ref())
                .map(|c| (Arc::as_ptr(c) as usize, Arc::new(Rollout::new(c.clone()))))
                .collect(),
        )
    }

    pub fn get(&self, canary: &Arc<Canary>) -> Option<&Arc<Rollout>> {
        self.0.get(&(Arc::as_ptr(canary) as usize))
    }
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

impl Rollout {
    pub fn new(canary: Arc<Canary>) -> Self {
        Rollout {
            window: Window::new(canary.window_ms),
            canary,
            requests: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            five_xx: AtomicU64::new(0),
            rolled_back: AtomicBool::new(false),
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
        if n < self.canary.min_requests.max(1) || self.rolled_back.load(Ordering::Relaxed) {
            return;
        }
        let pct = |x: u64| x as f64 * 100.0 / n as f64;
        if (pct(traps) > self.canary.max_trap_percent || pct(fives) > self.canary.max_5xx_percent)
            && !self.rolled_back.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                plugin = %self.canary.spec.name,
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
            && (random % 1_000_000) < (self.canary.percent.clamp(0.0, 100.0) * 10_000.0) as u64
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
