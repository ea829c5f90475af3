//! The route table: virtual hosts, first-match routes and weighted destinations. Pure logic,
//! natively unit-tested; the wasm glue in `filter.rs` only feeds it headers.

use lateen_sdk::istio::HttpMatchRequest;
use lateen_sdk::matcher::{CompiledMatch, MatchError, RequestView};
use lateen_sdk::route::Decision;
use serde::{Deserialize, Serialize};

/// The router's configuration: what the host generates from the VirtualServices bound to a
/// listener. Destinations are already resolved to cluster names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouterConfig {
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHostConfig>,
}

/// One VirtualService as the router sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHostConfig {
    /// `namespace/name` of the VirtualService.
    pub name: String,
    /// Hosts it serves: exact names, `*.suffix`, or `*`.
    pub domains: Vec<String>,
    pub routes: Vec<RouteConfig>,
}

/// One HTTPRoute.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteConfig {
    pub name: String,
    /// Alternatives; empty matches every request.
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    pub route: Vec<WeightedCluster>,
    /// Upstream timeout in milliseconds, 0 for none.
    #[serde(default)]
    pub timeout_ms: u64,
}

/// A destination: cluster and relative weight.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedCluster {
    pub cluster: String,
    #[serde(default)]
    pub weight: u32,
}

/// The compiled table.
#[derive(Debug)]
pub struct RouteTable {
    hosts: Vec<VirtualHost>,
}

#[derive(Debug)]
struct VirtualHost {
    domains: Vec<Domain>,
    routes: Vec<Route>,
}

#[derive(Debug)]
enum Domain {
    Any,
    Exact(String),
    /// `*.example.com` → `.example.com`
    Suffix(String),
}

#[derive(Debug)]
struct Route {
    name: String,
    matches: Vec<CompiledMatch>,
    clusters: Vec<(String, u64)>,
    total_weight: u64,
    timeout_ms: u64,
}

impl RouteTable {
    /// Compiles a configuration; errors name the virtual host, route and field.
    pub fn compile(cfg: &RouterConfig) -> Result<Self, String> {
        let mut hosts = Vec::new();
        for (vi, vh) in cfg.virtual_hosts.iter().enumerate() {
            let mut routes = Vec::new();
            for (ri, r) in vh.routes.iter().enumerate() {
                let matches = r
                    .matches
                    .iter()
                    .enumerate()
                    .map(|(mi, m)| {
                        CompiledMatch::compile(m).map_err(|MatchError { field, message }| {
                            format!(
                                "virtualHosts[{vi}] ({}) routes[{ri}].match[{mi}].{field}: {message}",
                                vh.name
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if r.route.is_empty() {
                    return Err(format!(
                        "virtualHosts[{vi}] ({}) routes[{ri}]: no destination",
                        vh.name
                    ));
                }
                // Istio: a single destination with no weight gets 100; weights are relative.
                let clusters: Vec<(String, u64)> = if r.route.len() == 1 {
                    vec![(r.route[0].cluster.clone(), 1)]
                } else {
                    r.route
                        .iter()
                        .map(|d| (d.cluster.clone(), u64::from(d.weight)))
                        .collect()
                };
                let total_weight = clusters.iter().map(|(_, w)| w).sum();
                routes.push(Route {
                    name: r.name.clone(),
                    matches,
                    clusters,
                    total_weight,
                    timeout_ms: r.timeout_ms,
                });
            }
            let domains = vh
                .domains
                .iter()
                .map(|d| {
                    let d = d.to_ascii_lowercase();
                    if d == "*" {
                        Domain::Any
                    } else if let Some(s) = d.strip_prefix('*') {
                        Domain::Suffix(s.to_string())
                    } else {
                        Domain::Exact(d)
                    }
                })
                .collect();
            hosts.push(VirtualHost { domains, routes });
        }
        Ok(RouteTable { hosts })
    }

    /// Picks the route for a request. `roll` supplies a uniformly random u64 for weighted
    /// destinations (only called when a route has more than one).
    pub fn decide<R: RequestView + ?Sized>(
        &self,
        req: &R,
        roll: impl FnOnce() -> u64,
    ) -> Option<Decision> {
        let authority = req.header(":authority").unwrap_or("");
        let host = strip_port(authority).to_ascii_lowercase();
        let vh = self.select_host(&host)?;
        let route = vh
            .routes
            .iter()
            .find(|r| r.matches.is_empty() || r.matches.iter().any(|m| m.matches(req)))?;
        let cluster = if route.clusters.len() == 1 {
            &route.clusters[0].0
        } else if route.total_weight == 0 {
            // All weights zero: Istio treats this as invalid; send to the first.
            &route.clusters[0].0
        } else {
            let mut pick = roll() % route.total_weight;
            let mut chosen = &route.clusters[0].0;
            for (c, w) in &route.clusters {
                if pick < *w {
                    chosen = c;
                    break;
                }
                pick -= w;
            }
            chosen
        };
        Some(Decision {
            cluster: cluster.clone(),
            route_name: route.name.clone(),
            timeout_ms: route.timeout_ms,
        })
    }

    // Envoy's order: exact domain, then the longest suffix wildcard, then `*`.
    fn select_host(&self, host: &str) -> Option<&VirtualHost> {
        let mut best: Option<(&VirtualHost, usize)> = None;
        for vh in &self.hosts {
            for d in &vh.domains {
                let score = match d {
                    Domain::Exact(e) if e == host => usize::MAX,
                    Domain::Suffix(s) if host.ends_with(s.as_str()) && host.len() > s.len() => {
                        s.len() + 1
                    }
                    Domain::Any => 0,
                    _ => continue,
                };
                if best.is_none_or(|(_, b)| score > b) {
                    best = Some((vh, score));
                }
            }
        }
        best.map(|(vh, _)| vh)
    }
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        // [v6]:port
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &authority[..h.len() + 1]);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// xorshift64*: cheap and good enough to split traffic by weight.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(json: &str) -> RouteTable {
        RouteTable::compile(&serde_json::from_str(json).expect("json")).expect("compile")
    }

    fn req(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const CFG: &str = r#"{"virtualHosts":[
      {"name":"ns/a","domains":["*"],"routes":[
        {"name":"cookie","match":[{"cookies":{"user":{"exact":"tester"}}}],"route":[{"cluster":"c3"}]},
        {"name":"split","route":[{"cluster":"c1","weight":90},{"cluster":"c2","weight":7},{"cluster":"c3","weight":3}]}]},
      {"name":"ns/b","domains":["api.example.com"],"routes":[
        {"name":"api","match":[{"uri":{"prefix":"/v1"}}],"route":[{"cluster":"api"}],"timeoutMs":250}]},
      {"name":"ns/c","domains":["*.example.com"],"routes":[{"name":"wild","route":[{"cluster":"wild"}]}]}
    ]}"#;

    #[test]
    fn host_selection_prefers_exact_then_suffix_then_any() {
        let t = table(CFG);
        let d = t
            .decide(
                &req(&[(":authority", "api.example.com:8080"), (":path", "/v1/x")]),
                || 0,
            )
            .unwrap();
        assert_eq!((d.cluster.as_str(), d.timeout_ms), ("api", 250));
        let d = t
            .decide(
                &req(&[(":authority", "www.example.com"), (":path", "/")]),
                || 0,
            )
            .unwrap();
        assert_eq!(d.cluster, "wild");
        let d = t
            .decide(&req(&[(":authority", "other"), (":path", "/")]), || 0)
            .unwrap();
        assert_eq!(d.cluster, "c1");
        // exact host chosen, but no route in it matches: no decision (404), no fallback.
        assert!(t
            .decide(
                &req(&[(":authority", "api.example.com"), (":path", "/v2")]),
                || 0
            )
            .is_none());
    }

    #[test]
    fn first_match_wins_and_weights_are_relative() {
        let t = table(CFG);
        let d = t
            .decide(
                &req(&[(":authority", "x"), ("cookie", "user=tester")]),
                || 0,
            )
            .unwrap();
        assert_eq!(d.route_name, "cookie");
        let mut rng = Rng::new(42);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..100_000 {
            let d = t
                .decide(&req(&[(":authority", "x")]), || rng.next_u64())
                .unwrap();
            *counts.entry(d.cluster).or_insert(0u32) += 1;
        }
        let pct = |c: &str| f64::from(counts[c]) / 1000.0;
        assert!((pct("c1") - 90.0).abs() < 1.0, "{counts:?}");
        assert!((pct("c2") - 7.0).abs() < 1.0, "{counts:?}");
        assert!((pct("c3") - 3.0).abs() < 1.0, "{counts:?}");
    }

    #[test]
    fn bad_regex_is_reported_with_its_place() {
        let cfg: RouterConfig = serde_json::from_str(
            r#"{"virtualHosts":[{"name":"ns/a","domains":["*"],"routes":[{"name":"r","match":[{"uri":{"regex":"("}}],"route":[{"cluster":"c"}]}]}]}"#,
        )
        .unwrap();
        let e = RouteTable::compile(&cfg).unwrap_err();
        assert!(e.contains("routes[0].match[0].uri.regex"), "{e}");
    }

    #[test]
    fn strip_port_handles_v6() {
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
    }
}
