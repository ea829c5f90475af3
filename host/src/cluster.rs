//! Upstream clusters: endpoints and load balancing. Connection pools live per worker in
//! [`crate::upstream`]; the state here is shared by all workers and lock-free.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Load-balancing policy (DestinationRule `loadBalancer.simple`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
}

impl LbPolicy {
    /// Parses Istio's names; `UNSPECIFIED` is round robin, as in Istio.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ROUND_ROBIN" | "UNSPECIFIED" | "" => LbPolicy::RoundRobin,
            "LEAST_REQUEST" | "LEAST_CONN" => LbPolicy::LeastRequest,
            "RANDOM" => LbPolicy::Random,
            _ => return None,
        })
    }
}

/// HTTP version spoken to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
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
}

impl Endpoint {
    pub fn new(authority: String, labels: BTreeMap<String, String>, weight: u32) -> Self {
        Endpoint {
            authority,
            labels,
            weight: weight.max(1),
            active: AtomicUsize::new(0),
        }
    }
}

/// A cluster: `outbound|PORT|SUBSET|HOST`.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub lb: LbPolicy,
    pub protocol: UpstreamProtocol,
    /// Weighted round-robin schedule: endpoint indexes repeated by weight.
    schedule: Vec<usize>,
    cursor: AtomicUsize,
}

impl Cluster {
    pub fn new(
        name: String,
        endpoints: Vec<Endpoint>,
        lb: LbPolicy,
        protocol: UpstreamProtocol,
    ) -> Self {
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
            name,
            endpoints,
            lb,
            protocol,
            schedule,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Picks an endpoint; `None` when the cluster has none (503 `no healthy upstream`).
    pub fn pick(&self, random: u64) -> Option<&Endpoint> {
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

    fn cluster(lb: LbPolicy, weights: &[u32]) -> Cluster {
        let eps = weights
            .iter()
            .enumerate()
            .map(|(i, w)| Endpoint::new(format!("10.0.0.{i}:80"), BTreeMap::new(), *w))
            .collect();
        Cluster::new("c".into(), eps, lb, UpstreamProtocol::Http1)
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
    fn least_request_prefers_idle() {
        let c = cluster(LbPolicy::LeastRequest, &[1, 1]);
        c.endpoints[0].active.store(10, Ordering::Relaxed);
        // random picks a=0, b=1
        let e = c.pick(1u64 << 32).unwrap();
        assert!(e.authority.ends_with(".1:80"));
        assert!(cluster(LbPolicy::Random, &[]).pick(3).is_none());
    }
}
