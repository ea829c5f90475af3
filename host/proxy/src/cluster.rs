//! Running upstream clusters: a [`ClusterSpec`] from the snapshot and the state the proxy
//! keeps for it (requests in flight, outlier ejections, the round-robin cursor, connection
//! slots). Connection pools live per worker in [`crate::upstream`]; the state here is
//! shared by all workers and lock-free.

use lateen_core::stats::ClusterStats;
use lateen_model::cluster::{ClusterSpec, EndpointSpec, LbPolicy, OutlierPolicy, UpstreamProtocol};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Milliseconds since the process started: the clock for ejections.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The first analysis sweep (every `interval` since start) at or after `t`: when Envoy
/// returns an ejected host.
fn sweep_after(t: u64, interval: u64) -> u64 {
    if interval == 0 {
        return t;
    }
    t.div_ceil(interval) * interval
}

/// How a try with an endpoint went, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Success,
    Status(u16),
    /// Connection failure, reset or timeout (counted as a 5xx/gateway error, as Envoy does
    /// unless local-origin errors are split).
    LocalFailure,
}

/// One upstream endpoint.
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port` to connect to (an IP for STATIC, a name for DNS).
    pub authority: String,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
    /// Requests in flight, for LEAST_REQUEST.
    pub active: AtomicUsize,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// Ejected until this `now_ms()`; 0 = not ejected.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

impl Endpoint {
    fn new(spec: &EndpointSpec) -> Self {
        Endpoint {
            authority: spec.authority.clone(),
            labels: spec.labels.clone(),
            weight: spec.weight.max(1),
            active: AtomicUsize::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            consecutive_local: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }

    /// Times outlier detection ejected this endpoint.
    pub fn ejection_count(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Whether outlier detection has this endpoint out of rotation now.
    pub fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }
}

/// A running cluster: its spec (reached through `Deref`: `cluster.lb`, `cluster.conn`) and
/// the state shared by every worker.
#[derive(Debug)]
pub struct Cluster {
    pub spec: Arc<ClusterSpec>,
    /// The spec's endpoints, each with its state (shadows `spec.endpoints`).
    pub endpoints: Vec<Endpoint>,
    /// Weighted round-robin schedule: endpoint indexes repeated by weight.
    schedule: Vec<usize>,
    cursor: AtomicUsize,
    /// Requests in flight across all endpoints.
    pub in_flight: AtomicUsize,
    /// HTTP/1.1 connections in use, bounded by `tcp.maxConnections`; made on first use.
    slots: OnceLock<tokio::sync::Semaphore>,
    /// Envoy's `cluster.NAME.*` stats, kept across snapshots.
    pub stats: Arc<ClusterStats>,
}

impl std::ops::Deref for Cluster {
    type Target = ClusterSpec;

    fn deref(&self) -> &ClusterSpec {
        &self.spec
    }
}

impl lateen_wasm::UpstreamCluster for Cluster {
    fn cluster_name(&self) -> &str {
        &self.name
    }

    fn endpoint(&self, index: usize) -> Option<lateen_wasm::UpstreamEndpoint<'_>> {
        let e = self.endpoints.get(index)?;
        Some(lateen_wasm::UpstreamEndpoint {
            authority: &e.authority,
            labels: &e.labels,
        })
    }
}

/// A request admitted by the circuit breaker; releases its slot when dropped.
pub struct Admitted<'a>(&'a Cluster);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Cluster {
    /// Whether `spec` configures this cluster exactly as it runs now. A reload keeps the
    /// running cluster then, with its state: outlier ejections, requests in flight, the
    /// round-robin cursor and connection slots, as Envoy keeps an unchanged cluster.
    pub fn same_config(&self, spec: &ClusterSpec) -> bool {
        *self.spec == *spec
    }

    /// The running cluster for a spec, with fresh state (its stats are kept by name).
    pub fn new(spec: Arc<ClusterSpec>) -> Self {
        let endpoints: Vec<Endpoint> = spec.endpoints.iter().map(Endpoint::new).collect();
        let g = endpoints.iter().fold(0, |g, e| gcd(g, e.weight));
        let mut schedule = Vec::new();
        // Interleave so that consecutive picks spread over endpoints.
        let reps: Vec<u32> = endpoints.iter().map(|e| e.weight / g.max(1)).collect();
        let max = reps.iter().copied().max().unwrap_or(0).min(1000);
        for round in 0..max {
            for (i, r) in reps.iter().enumerate() {
                if *r > round {
                    schedule.push(i);
                }
            }
        }
        Cluster {
            stats: lateen_core::stats::store().cluster(&spec.name),
            spec,
            endpoints,
            schedule,
            cursor: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            slots: OnceLock::new(),
        }
    }

    /// Waits for one of the cluster's `tcp.maxConnections` HTTP/1.1 connections: a
    /// request admitted beyond them is a pending request, as in Envoy. `None` when the
    /// cluster has no such limit (HTTP/2 multiplexes, bounded by `http2MaxRequests`).
    pub async fn connection_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        if self.conn.max_connections == 0 || self.conn.protocol == UpstreamProtocol::Http2 {
            return None;
        }
        let slots = self
            .slots
            .get_or_init(|| tokio::sync::Semaphore::new(self.conn.max_connections as usize));
        if let Ok(permit) = slots.try_acquire() {
            return Some(permit);
        }
        self.stats.rq_pending_total.inc();
        let _pending = self.stats.rq_pending_active.track();
        slots.acquire().await.ok()
    }

    /// The index of one of this cluster's endpoints.
    pub fn index_of(&self, ep: &Endpoint) -> usize {
        self.endpoints
            .iter()
            .position(|e| std::ptr::eq(e, ep))
            .unwrap_or(0)
    }

    /// Picks by consistent hash, skipping ejected endpoints.
    pub fn pick_hashed(&self, h: u64) -> Option<&Endpoint> {
        let policy = self.hash.as_ref()?;
        let now = now_ms();
        let panic = self.outlier.is_some_and(|p| self.panicking(&p, now));
        policy
            .candidates(h, self.endpoints.len())
            .filter_map(|i| self.endpoints.get(i))
            .find(|e| panic || !e.ejected(now))
    }

    /// Whether fewer than `minHealthPercent` of the hosts are healthy, in which case
    /// Envoy balances over all of them, ejected or not.
    fn panicking(&self, p: &OutlierPolicy, now: u64) -> bool {
        if p.min_health_percent == 0 {
            return false;
        }
        let healthy = self.endpoints.iter().filter(|e| !e.ejected(now)).count();
        healthy * 100 < p.min_health_percent as usize * self.endpoints.len()
    }

    /// Admits a request under the circuit breaker, or `None` on overflow (503 UO).
    pub fn admit(&self) -> Option<Admitted<'_>> {
        let n = self.in_flight.fetch_add(1, Ordering::Relaxed) as u64;
        let guard = Admitted(self);
        match self.max_requests {
            Some(max) if n >= max => {
                self.stats.rq_pending_overflow.inc();
                None
            }
            _ => Some(guard),
        }
    }

    /// Feeds outlier detection with the outcome of a try.
    pub fn report(&self, ep: &Endpoint, r: Report) {
        let Some(p) = self.outlier else { return };
        let split = p.consecutive_local_origin > 0;
        let (five, gateway) = match r {
            Report::Success | Report::Status(0..=499) => {
                ep.consecutive_5xx.store(0, Ordering::Relaxed);
                ep.consecutive_gateway.store(0, Ordering::Relaxed);
                ep.consecutive_local.store(0, Ordering::Relaxed);
                return;
            }
            Report::Status(s) => (true, matches!(s, 502..=504)),
            Report::LocalFailure if split => {
                let n = ep.consecutive_local.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= p.consecutive_local_origin {
                    self.eject(ep, &p);
                }
                return;
            }
            Report::LocalFailure => (true, true),
        };
        let c5 = if five {
            ep.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        };
        let cg = if gateway {
            ep.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            ep.consecutive_gateway.store(0, Ordering::Relaxed);
            0
        };
        let trip = (p.consecutive_5xx > 0 && c5 >= p.consecutive_5xx)
            || (p.consecutive_gateway > 0 && cg >= p.consecutive_gateway);
        if trip {
            self.eject(ep, &p);
        }
    }

    fn eject(&self, ep: &Endpoint, p: &OutlierPolicy) {
        let now = now_ms();
        if ep.ejected(now) {
            return;
        }
        let ejected = self.endpoints.iter().filter(|e| e.ejected(now)).count();
        // Envoy ejects at least one host whatever max_ejection_percent says.
        let allowed = ejected == 0
            || (ejected + 1) * 100 <= p.max_ejection_percent as usize * self.endpoints.len();
        if !allowed {
            return;
        }
        let times = ep.ejections.fetch_add(1, Ordering::Relaxed) as u64 + 1;
        let until = sweep_after(now + p.base_ejection_ms * times, p.interval_ms);
        ep.ejected_until.store(until, Ordering::Relaxed);
        ep.consecutive_5xx.store(0, Ordering::Relaxed);
        ep.consecutive_gateway.store(0, Ordering::Relaxed);
        ep.consecutive_local.store(0, Ordering::Relaxed);
        self.stats.ejections_enforced_total.inc();
        tracing::info!(cluster = %self.name, endpoint = %ep.authority, "outlier ejected for {} ms", until - now);
    }

    /// Endpoints ejected now (`outlier_detection.ejections_active`).
    pub fn ejected_now(&self) -> usize {
        let now = now_ms();
        self.endpoints.iter().filter(|e| e.ejected(now)).count()
    }

    /// Picks an endpoint that is not ejected; `None` when there is none (503 `no healthy
    /// upstream`).
    pub fn pick(&self, random: u64) -> Option<&Endpoint> {
        let Some(p) = self.outlier else {
            return self.pick_any(random);
        };
        let now = now_ms();
        if self.panicking(&p, now) {
            return self.pick_any(random);
        }
        let mut r = random;
        for _ in 0..self.endpoints.len().max(1) * 2 {
            let e = self.pick_any(r)?;
            if !e.ejected(now) {
                return Some(e);
            }
            r = r.rotate_left(17).wrapping_add(0x9E37_79B9_7F4A_7C15);
        }
        self.endpoints.iter().find(|e| !e.ejected(now))
    }

    fn pick_any(&self, random: u64) -> Option<&Endpoint> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            return self.endpoints.first();
        }
        let idx = match self.lb {
            LbPolicy::RoundRobin => {
                let c = self.cursor.fetch_add(1, Ordering::Relaxed);
                self.schedule[c % self.schedule.len()]
            }
            LbPolicy::Random => self.schedule[(random % self.schedule.len() as u64) as usize],
            LbPolicy::LeastRequest => {
                // Power of two choices, as Envoy does by default.
                let a = (random % n as u64) as usize;
                let b = ((random >> 32) % n as u64) as usize;
                let load = |i: usize| {
                    self.endpoints[i].active.load(Ordering::Relaxed) as u64 * 1000
                        / u64::from(self.endpoints[i].weight)
                };
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
        };
        self.endpoints.get(idx)
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lateen_model::cluster::{hash_key, HashKey, HashPolicy};

    fn spec(lb: LbPolicy, weights: &[u32]) -> ClusterSpec {
        let eps = weights
            .iter()
            .enumerate()
            .map(|(i, w)| EndpointSpec::new(format!("10.0.0.{i}:80"), BTreeMap::new(), *w))
            .collect();
        ClusterSpec::new("c".into(), eps, lb, UpstreamProtocol::Http1)
    }

    fn cluster(lb: LbPolicy, weights: &[u32]) -> Cluster {
        Cluster::new(Arc::new(spec(lb, weights)))
    }

    #[test]
    fn round_robin_honours_weights() {
        let c = cluster(LbPolicy::RoundRobin, &[1, 3]);
        let mut counts = [0; 2];
        for _ in 0..400 {
            let e = c.pick(0).unwrap();
            counts[if e.authority.ends_with(".0:80") { 0 } else { 1 }] += 1;
        }
        assert_eq!(counts, [100, 300]);
    }

    #[test]
    fn outliers_are_ejected_and_the_breaker_overflows() {
        let mut s = spec(LbPolicy::RoundRobin, &[1, 1]);
        s.outlier = Some(OutlierPolicy {
            consecutive_5xx: 2,
            consecutive_gateway: 0,
            consecutive_local_origin: 0,
            base_ejection_ms: 60_000,
            interval_ms: 10_000,
            max_ejection_percent: 100,
            min_health_percent: 0,
        });
        s.max_requests = Some(1);
        let c = Cluster::new(Arc::new(s));
        let bad = &c.endpoints[1];
        c.report(bad, Report::Status(500));
        assert!(!bad.ejected(now_ms()));
        c.report(bad, Report::LocalFailure);
        assert!(bad.ejected(now_ms()));
        for _ in 0..10 {
            assert!(c.pick(7).unwrap().authority.ends_with(".0:80"));
        }
        c.report(&c.endpoints[0], Report::Status(503));
        c.report(&c.endpoints[0], Report::Status(503));
        assert!(c.pick(7).is_none(), "every host ejected");
        let first = c.admit();
        assert!(first.is_some());
        assert!(c.admit().is_none(), "second concurrent request overflows");
        drop(first);
        assert!(c.admit().is_some());
    }

    #[test]
    fn ejections_end_at_a_sweep_and_split_local_origin_errors() {
        assert_eq!(sweep_after(12_001, 5_000), 15_000);
        assert_eq!(sweep_after(15_000, 5_000), 15_000);
        assert_eq!(sweep_after(7, 0), 7);

        let mut s = spec(LbPolicy::RoundRobin, &[1, 1, 1, 1]);
        let policy = OutlierPolicy {
            consecutive_5xx: 2,
            consecutive_gateway: 0,
            consecutive_local_origin: 3,
            base_ejection_ms: 60_000,
            interval_ms: 7_000,
            max_ejection_percent: 100,
            min_health_percent: 60,
        };
        s.outlier = Some(policy);
        let c = Cluster::new(Arc::new(s));
        let e = &c.endpoints[0];
        // Split: local failures count apart from 5xx and need 3 in a row.
        c.report(e, Report::LocalFailure);
        c.report(e, Report::LocalFailure);
        c.report(e, Report::Status(500));
        assert!(!e.ejected(now_ms()));
        c.report(e, Report::LocalFailure);
        let now = now_ms();
        assert!(e.ejected(now));
        let until = e.ejected_until.load(Ordering::Relaxed);
        assert_eq!(until % 7_000, 0, "returns at an interval sweep");
        assert!(until >= now + 60_000 && until < now + 67_000);
        // 3 of 4 healthy (75%) is above minHealthPercent: the ejected host is skipped.
        assert!((0..20).all(|r| !std::ptr::eq(c.pick(r).unwrap(), e)));
        // 2 of 4 (50%) is below it: Envoy's panic mode balances over every host.
        c.report(&c.endpoints[1], Report::Status(500));
        c.report(&c.endpoints[1], Report::Status(500));
        assert!(c.endpoints[1].ejected(now_ms()));
        let picked: std::collections::HashSet<_> = (0..40)
            .map(|r| c.pick(r).unwrap().authority.clone())
            .collect();
        assert_eq!(picked.len(), 4, "{picked:?}");
    }

    #[test]
    fn consistent_hash_is_stable_and_spreads() {
        for build in [HashPolicy::ring, HashPolicy::maglev] {
            let mut s = spec(LbPolicy::RoundRobin, &[1, 1, 1]);
            s.hash = Some(build(HashKey::SourceIp, &s.endpoints, 1024));
            let c = Cluster::new(Arc::new(s));
            let mut seen = std::collections::HashSet::new();
            for user in 0..60 {
                let h = hash_key(format!("user-{user}").as_bytes());
                let first = c.pick_hashed(h).unwrap().authority.clone();
                assert_eq!(c.pick_hashed(h).unwrap().authority, first);
                seen.insert(first);
            }
            assert_eq!(seen.len(), 3, "keys spread over every endpoint");
        }
    }

    #[test]
    fn least_request_prefers_idle() {
        let c = cluster(LbPolicy::LeastRequest, &[1, 1]);
        c.endpoints[0].active.store(10, Ordering::Relaxed);
        // random picks a=0, b=1
        let e = c.pick(1u64 << 32).unwrap();
        assert!(e.authority.ends_with(".1:80"));
        assert!(cluster(LbPolicy::Random, &[]).pick(3).is_none());
    }
}
