//! Upstream clusters as the snapshot holds them: endpoints, load balancing, circuit
//! breakers, outlier detection, consistent hashing, connection settings and TLS. Plain
//! data; the proxy's running cluster (ejections, requests in flight, the round-robin
//! cursor) is built from it and kept while it is unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;

/// DestinationRule `outlierDetection`, in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Consecutive 5xx (and connection failures) before ejection; 0 = off.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 (and connection failures) before ejection; 0 = off.
    pub consecutive_gateway: u32,
    /// With `splitExternalLocalOriginErrors`: consecutive connect failures, resets and
    /// timeouts before ejection (they then no longer count as 5xx); 0 = not split.
    pub consecutive_local_origin: u32,
    pub base_ejection_ms: u64,
    /// Envoy returns ejected hosts at its analysis sweeps, every `interval`.
    pub interval_ms: u64,
    pub max_ejection_percent: u32,
    /// Below this share of healthy hosts, ejections are ignored (Envoy's panic threshold).
    pub min_health_percent: u32,
}

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

/// What a consistent-hash policy hashes (DestinationRule `consistentHash`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(String),
    /// A cookie; with a ttl, the proxy generates it when absent.
    Cookie {
        name: String,
        path: Option<String>,
        ttl_s: Option<u64>,
    },
    SourceIp,
    QueryParam(String),
}

/// A consistent-hash policy and its lookup table.
#[derive(Debug, PartialEq, Eq)]
pub struct HashPolicy {
    pub key: HashKey,
    table: HashTable,
}

#[derive(Debug, PartialEq, Eq)]
enum HashTable {
    /// Ketama-style ring: (point, endpoint) sorted by point.
    Ring(Vec<(u64, usize)>),
    /// Maglev lookup table (prime size).
    Maglev(Vec<usize>),
}

/// Hashes a key the way the lookup tables expect (xxHash64, as Envoy).
pub fn hash_key(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh64::xxh64(bytes, 0)
}

impl HashPolicy {
    /// A ring with at least `min_ring` points, shared out by endpoint weight.
    pub fn ring(key: HashKey, endpoints: &[EndpointSpec], min_ring: usize) -> Self {
        let total: u64 = endpoints
            .iter()
            .map(|e| u64::from(e.weight))
            .sum::<u64>()
            .max(1);
        let mut ring = Vec::new();
        for (i, e) in endpoints.iter().enumerate() {
            let points = (min_ring as u64 * u64::from(e.weight))
                .div_ceil(total)
                .max(1);
            for j in 0..points {
                ring.push((hash_key(format!("{}_{j}", e.authority).as_bytes()), i));
            }
        }
        ring.sort_unstable();
        HashPolicy {
            key,
            table: HashTable::Ring(ring),
        }
    }

    /// A Maglev table of `size` entries (rounded up to a prime, as Envoy requires one).
    pub fn maglev(key: HashKey, endpoints: &[EndpointSpec], size: usize) -> Self {
        let m = next_prime(size.max(endpoints.len().max(1) * 100).max(7));
        let n = endpoints.len();
        let mut table = vec![usize::MAX; m];
        if n > 0 {
            let perms: Vec<(usize, usize)> = endpoints
                .iter()
                .map(|e| {
                    let offset = hash_key(e.authority.as_bytes()) as usize % m;
                    let skip =
                        xxhash_rust::xxh64::xxh64(e.authority.as_bytes(), 1) as usize % (m - 1) + 1;
                    (offset, skip)
                })
                .collect();
            let mut next = vec![0usize; n];
            let mut filled = 0;
            'fill: loop {
                for i in 0..n {
                    // Weighted: an endpoint takes `weight` turns per round.
                    for _ in 0..endpoints[i].weight.max(1) {
                        let (offset, skip) = perms[i];
                        let mut c = (offset + next[i] * skip) % m;
                        while table[c] != usize::MAX {
                            next[i] += 1;
                            c = (offset + next[i] * skip) % m;
                        }
                        table[c] = i;
                        next[i] += 1;
                        filled += 1;
                        if filled == m {
                            break 'fill;
                        }
                    }
                }
            }
        }
        HashPolicy {
            key,
            table: HashTable::Maglev(table),
        }
    }

    /// The endpoint index for a hash, then the following ones (for skipping ejected hosts).
    pub fn candidates(&self, h: u64, n: usize) -> impl Iterator<Item = usize> + '_ {
        let (start, len) = match &self.table {
            HashTable::Ring(r) => (r.partition_point(|(p, _)| *p < h), r.len()),
            HashTable::Maglev(t) => ((h % t.len().max(1) as u64) as usize, t.len()),
        };
        (0..len.min(n * 64).max(1)).filter_map(move |k| match &self.table {
            HashTable::Ring(r) => r.get((start + k) % r.len().max(1)).map(|(_, i)| *i),
            HashTable::Maglev(t) => t.get((start + k) % t.len().max(1)).copied(),
        })
    }
}

fn next_prime(mut n: usize) -> usize {
    let is_prime = |n: usize| {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    };
    while !is_prime(n) {
        n += 1;
    }
    n
}

/// HTTP version spoken to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

/// One upstream endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// `host:port` to connect to (an IP for STATIC, a name for DNS).
    pub authority: String,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
}

impl EndpointSpec {
    pub fn new(authority: String, labels: BTreeMap<String, String>, weight: u32) -> Self {
        EndpointSpec {
            authority,
            labels,
            weight: weight.max(1),
        }
    }
}

/// A cluster: `outbound|PORT|SUBSET|HOST`.
#[derive(Debug)]
pub struct ClusterSpec {
    pub name: String,
    pub endpoints: Vec<EndpointSpec>,
    pub lb: LbPolicy,
    pub protocol: UpstreamProtocol,
    /// Circuit breaker: most requests in flight (connectionPool), `None` = unlimited.
    pub max_requests: Option<u64>,
    pub outlier: Option<OutlierPolicy>,
    pub hash: Option<HashPolicy>,
    /// Connection settings (connectionPool `tcp.connectTimeout`, `http.idleTimeout`).
    pub conn: ConnSettings,
    /// Upstream TLS (DestinationRule `trafficPolicy.tls`); `None`: plain TCP.
    pub tls: Option<Arc<lateen_core::tls::client::UpstreamTls>>,
}

impl ClusterSpec {
    /// A cluster with Istio's defaults: no limits, no outlier detection, a 10 s connect
    /// timeout and Envoy's 1 h idle timeouts.
    pub fn new(
        name: String,
        endpoints: Vec<EndpointSpec>,
        lb: LbPolicy,
        protocol: UpstreamProtocol,
    ) -> Self {
        ClusterSpec {
            name,
            endpoints,
            lb,
            protocol,
            max_requests: None,
            outlier: None,
            hash: None,
            conn: ConnSettings {
                protocol,
                connect_timeout_ms: 10_000,
                idle_timeout_ms: 3_600_000,
                tcp_idle_timeout_ms: 3_600_000,
                max_requests_per_connection: 0,
                max_connections: 0,
            },
            tls: None,
        }
    }
}

/// Equal when configured exactly alike (TLS by the identity of its material): a reload
/// keeps the running cluster then, with its state, as Envoy keeps an unchanged cluster.
impl PartialEq for ClusterSpec {
    fn eq(&self, other: &ClusterSpec) -> bool {
        self.name == other.name
            && self.endpoints == other.endpoints
            && self.lb == other.lb
            && self.protocol == other.protocol
            && self.max_requests == other.max_requests
            && self.outlier == other.outlier
            && self.hash == other.hash
            && self.conn == other.conn
            && self.tls.as_ref().map(|t| t.id) == other.tls.as_ref().map(|t| t.id)
    }
}

/// How connections to a cluster are made and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnSettings {
    pub protocol: UpstreamProtocol,
    /// Istio's default connectTimeout is 10 s.
    pub connect_timeout_ms: u64,
    /// Idle keep-alive connections are closed after this (Envoy's default: 1 h).
    pub idle_timeout_ms: u64,
    /// A forwarded TCP connection with no byte either way for this long is closed
    /// (`tcp.idleTimeout`; Envoy's tcp_proxy default: 1 h).
    pub tcp_idle_timeout_ms: u64,
    /// `http.maxRequestsPerConnection`: a connection is retired after this many
    /// requests; 0 = unlimited.
    pub max_requests_per_connection: u32,
    /// `tcp.maxConnections` (HTTP/1.1: connections in use at once); 0 = unlimited.
    pub max_connections: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistent_hash_tables_cover_every_endpoint() {
        let eps: Vec<EndpointSpec> = (0..3)
            .map(|i| EndpointSpec::new(format!("10.0.0.{i}:80"), BTreeMap::new(), 1))
            .collect();
        for build in [HashPolicy::ring, HashPolicy::maglev] {
            let p = build(HashKey::SourceIp, &eps, 1024);
            let seen: std::collections::BTreeSet<usize> = (0..60)
                .filter_map(|u| p.candidates(hash_key(format!("u{u}").as_bytes()), 3).next())
                .collect();
            assert_eq!(seen.len(), 3, "keys spread over every endpoint");
        }
    }
}
