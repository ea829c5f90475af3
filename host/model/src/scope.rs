//! Per-request plugin scoping (`matchRules`): one plugin module, several configurations,
//! and the rule that applies to a request chosen from its host, route and cluster. Every
//! configuration is a root context of the same instance, so scopes cost no extra VM.

use bytes::Bytes;
use lateen_router::table::RouteTable;
use lateen_sdk::matcher::{strip_port, RequestView};
use lateen_wasm::state::{header, StreamState};
use std::sync::Arc;

/// A filter's rules, in order (the first match wins), and its default.
#[derive(Debug)]
pub struct Scope {
    pub rules: Arc<Vec<Rule>>,
    /// The configuration when no rule matches; `None` (`defaultConfigDisable`) turns the
    /// plugin off there.
    pub default: Option<Bytes>,
    /// The listener's route table, to learn the route of a request the router has not run
    /// on yet (a plugin before the router), as Envoy knows the route before its filters.
    pub routes: Option<Arc<RouteTable>>,
}

/// One `matchRules` entry. Within a kind any selector may match; every kind given must.
#[derive(Debug)]
pub struct Rule {
    /// `matchRules[N]`, how the admin API and logs name it.
    pub label: String,
    /// Its selectors, which find its last good configuration in the next version.
    pub key: String,
    pub domains: Vec<DomainMatch>,
    /// Route ids (`namespace/virtualservice#index`) of the routes it selects.
    pub routes: Vec<String>,
    /// Service hosts: a request matches when its cluster is one of theirs.
    pub services: Vec<String>,
    pub action: RuleAction,
    /// Why its newest configuration was refused (it keeps serving the last good one).
    pub error: Option<String>,
}

/// What a rule does to the requests it selects.
#[derive(Debug, Clone)]
pub enum RuleAction {
    /// Run the plugin with this configuration.
    Config(Bytes),
    /// `configDisable: true`: skip the plugin.
    Disable,
    /// The rule's configuration was refused and it has no earlier good one: its requests
    /// are handled by the plugin's failStrategy.
    Failed(String),
}

/// A domain selector: exact (`api.example.com`), suffix (`*.example.com`) or any (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainMatch {
    Any,
    Exact(String),
    /// `*.example.com` kept as `.example.com`.
    Suffix(String),
}

impl DomainMatch {
    pub fn parse(s: &str) -> Self {
        let s = s.to_ascii_lowercase();
        if s == "*" {
            DomainMatch::Any
        } else if let Some(rest) = s.strip_prefix('*') {
            DomainMatch::Suffix(rest.to_string())
        } else {
            DomainMatch::Exact(s)
        }
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            DomainMatch::Any => true,
            DomainMatch::Exact(e) => e.eq_ignore_ascii_case(host),
            DomainMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

/// How much of a route's traffic a selector takes: what `proxy-config plugins` shows per
/// route, where only the route's hosts and destinations are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Coverage {
    None,
    Some,
    All,
}

impl DomainMatch {
    /// How much of a VirtualService host pattern (`a.test`, `*.a.test`, `*`) it takes.
    pub fn coverage(&self, pattern: &str) -> Coverage {
        match (self, DomainMatch::parse(pattern)) {
            (DomainMatch::Any, _) => Coverage::All,
            (s, DomainMatch::Exact(h)) if s.matches(&h) => Coverage::All,
            (_, DomainMatch::Exact(_)) => Coverage::None,
            (DomainMatch::Exact(_), DomainMatch::Any) => Coverage::Some,
            (DomainMatch::Suffix(_), DomainMatch::Any) => Coverage::Some,
            (DomainMatch::Exact(e), p @ DomainMatch::Suffix(_)) => {
                if p.matches(e) {
                    Coverage::Some
                } else {
                    Coverage::None
                }
            }
            (DomainMatch::Suffix(a), DomainMatch::Suffix(b)) => {
                if b.ends_with(a.as_str()) {
                    Coverage::All
                } else if a.ends_with(&b) {
                    Coverage::Some
                } else {
                    Coverage::None
                }
            }
        }
    }
}

/// What a request's rule is chosen from.
#[derive(Debug, Default)]
pub struct RequestFacts<'a> {
    /// `:authority` without its port.
    pub host: &'a str,
    /// The route id, once known.
    pub route: Option<&'a str>,
    /// The chosen cluster, once known.
    pub cluster: Option<&'a str>,
}

/// The rule chosen for a request: `Rule(i)` is `rules[i]`; `Default` the default config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Rule(usize),
    Default,
}

/// The host part of a cluster name (`outbound|80|v1|reviews.default.svc.cluster.local`).
pub fn cluster_host(cluster: &str) -> &str {
    cluster.rsplit('|').next().unwrap_or(cluster)
}

impl Rule {
    /// Whether it needs the request's route or cluster.
    fn needs_route(&self) -> bool {
        !self.routes.is_empty() || !self.services.is_empty()
    }

    pub fn matches(&self, f: &RequestFacts<'_>) -> bool {
        (self.domains.is_empty() || self.domains.iter().any(|d| d.matches(f.host)))
            && (self.routes.is_empty()
                || f.route.is_some_and(|r| self.routes.iter().any(|x| x == r)))
            && (self.services.is_empty()
                || f.cluster
                    .is_some_and(|c| self.services.iter().any(|s| s == cluster_host(c))))
    }
}

impl Rule {
    /// How much of a route's traffic the rule takes, from the route's id, its virtual
    /// host's domains and its destination clusters.
    pub fn coverage(&self, route: &str, domains: &[String], clusters: &[String]) -> Coverage {
        let mut c = Coverage::All;
        if !self.routes.is_empty() && !self.routes.iter().any(|r| r == route) {
            return Coverage::None;
        }
        if !self.domains.is_empty() {
            let per: Vec<Coverage> = domains
                .iter()
                .map(|d| {
                    self.domains
                        .iter()
                        .map(|m| m.coverage(d))
                        .max()
                        .unwrap_or(Coverage::None)
                })
                .collect();
            c = c.min(combine(&per));
        }
        if !self.services.is_empty() {
            let per: Vec<Coverage> = clusters
                .iter()
                .map(|cl| {
                    if self.services.iter().any(|s| s == cluster_host(cl)) {
                        Coverage::All
                    } else {
                        Coverage::None
                    }
                })
                .collect();
            c = c.min(combine(&per));
        }
        c
    }
}

// All parts covered: all; none: none; else some.
fn combine(per: &[Coverage]) -> Coverage {
    if per.is_empty() || per.iter().all(|c| *c == Coverage::None) {
        Coverage::None
    } else if per.iter().all(|c| *c == Coverage::All) {
        Coverage::All
    } else {
        Coverage::Some
    }
}

impl Scope {
    /// What the plugin runs with on a route: the rules that may take some of its
    /// requests, in order, ending with the one (or the default) that takes the rest.
    /// `None` in the list means the plugin is off there.
    pub fn on_route(
        &self,
        route: &str,
        domains: &[String],
        clusters: &[String],
    ) -> Vec<Option<&str>> {
        let mut out = Vec::new();
        for r in self.rules.iter() {
            let label = match r.action {
                RuleAction::Disable => None,
                _ => Some(r.label.as_str()),
            };
            match r.coverage(route, domains, clusters) {
                Coverage::None => {}
                Coverage::Some => out.push(label),
                Coverage::All => {
                    out.push(label);
                    return out;
                }
            }
        }
        out.push(self.default.as_ref().map(|_| "default"));
        out
    }

    /// Whether choosing needs the route decision.
    pub fn needs_route(&self) -> bool {
        self.rules.iter().any(Rule::needs_route)
    }

    pub fn choose(&self, facts: &RequestFacts<'_>) -> Choice {
        self.rules
            .iter()
            .position(|r| r.matches(facts))
            .map_or(Choice::Default, Choice::Rule)
    }

    /// The rule for a stream. When the router has not decided yet, the listener's route
    /// table is consulted; the roll it used is left in `lateen.route.roll`, so the router
    /// picks the same weighted destination.
    pub fn choose_for(&self, st: &mut StreamState) -> Choice {
        let authority = header(&st.req_headers, ":authority")
            .or_else(|| header(&st.req_headers, "host"))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let host = strip_port(&authority).to_ascii_lowercase();
        if !self.needs_route() {
            return self.choose(&RequestFacts {
                host: &host,
                ..RequestFacts::default()
            });
        }
        let prop = |st: &StreamState, k: &str| {
            st.props
                .get(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let mut route = prop(st, "lateen.route.id");
        let mut cluster = prop(st, "lateen.route.cluster");
        if route.is_none() {
            if let Some(table) = &self.routes {
                let roll = match prop(st, ROLL).and_then(|r| r.parse::<u64>().ok()) {
                    Some(r) => r,
                    None => {
                        let r = rand::random::<u64>();
                        st.props.insert(ROLL.into(), Bytes::from(r.to_string()));
                        r
                    }
                };
                let view = StateView(st);
                if let Some(sel) = table.select(&view, || roll) {
                    route = Some(sel.route.id.clone());
                    cluster = sel.destination.map(|d| d.cluster.clone());
                }
            }
        }
        self.choose(&RequestFacts {
            host: &host,
            route: route.as_deref(),
            cluster: cluster.as_deref(),
        })
    }
}

/// The property that carries a stream's weighted-destination roll from the host's early
/// route lookup to the router filter.
pub const ROLL: &str = "lateen.route.roll";

/// A stream's request as the route table reads it.
struct StateView<'a>(&'a StreamState);

impl RequestView for StateView<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.0.req_headers, name).and_then(|v| std::str::from_utf8(v).ok())
    }

    fn claim(&self, path: &[String]) -> Vec<String> {
        self.0
            .props
            .get(&lateen_sdk::claims::CLAIMS.join("."))
            .and_then(|b| serde_json::from_slice(b).ok())
            .map(|c: serde_json::Value| lateen_sdk::claims::values(&c, path))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(domains: &[&str], routes: &[&str], services: &[&str]) -> Rule {
        Rule {
            label: "r".into(),
            key: String::new(),
            error: None,
            domains: domains.iter().map(|d| DomainMatch::parse(d)).collect(),
            routes: routes.iter().map(|s| s.to_string()).collect(),
            services: services.iter().map(|s| s.to_string()).collect(),
            action: RuleAction::Disable,
        }
    }

    #[test]
    fn coverage_of_a_route() {
        let r = rule(&["*.blog.test"], &[], &[]);
        let d = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(r.coverage("x", &d(&["a.blog.test"]), &[]), Coverage::All);
        assert_eq!(r.coverage("x", &d(&["*.blog.test"]), &[]), Coverage::All);
        assert_eq!(r.coverage("x", &d(&["*"]), &[]), Coverage::Some);
        assert_eq!(
            r.coverage("x", &d(&["a.blog.test", "shop.test"]), &[]),
            Coverage::Some
        );
        assert_eq!(r.coverage("x", &d(&["shop.test"]), &[]), Coverage::None);
        let s = rule(&[], &["ns/vs#0"], &["api.test"]);
        let split = d(&["outbound|80||api.test", "outbound|80|v1|svc.test"]);
        assert_eq!(s.coverage("ns/vs#0", &[], &split), Coverage::Some);
        assert_eq!(s.coverage("ns/vs#1", &[], &split), Coverage::None);
        assert_eq!(s.coverage("ns/vs#0", &[], &split[..1]), Coverage::All);
    }

    #[test]
    fn domains() {
        assert!(DomainMatch::parse("*.Example.com").matches("a.example.COM"));
        assert!(!DomainMatch::parse("*.example.com").matches("example.com"));
        assert!(DomainMatch::parse("api.example.com").matches("API.example.com"));
        assert!(!DomainMatch::parse("api.example.com").matches("web.example.com"));
        assert!(DomainMatch::parse("*").matches("anything"));
    }

    #[test]
    fn first_match_wins_and_kinds_are_and() {
        let scope = Scope {
            rules: Arc::new(vec![
                rule(&["a.test"], &["ns/vs#1"], &[]),
                rule(&[], &[], &["reviews.default.svc.cluster.local"]),
                rule(&["a.test"], &[], &[]),
            ]),
            default: None,
            routes: None,
        };
        let facts = |host, route, cluster| RequestFacts {
            host,
            route,
            cluster,
        };
        assert_eq!(
            scope.choose(&facts("a.test", Some("ns/vs#1"), None)),
            Choice::Rule(0)
        );
        assert_eq!(
            scope.choose(&facts("a.test", Some("ns/vs#0"), None)),
            Choice::Rule(2)
        );
        assert_eq!(
            scope.choose(&facts(
                "a.test",
                Some("ns/vs#0"),
                Some("outbound|9080|v2|reviews.default.svc.cluster.local")
            )),
            Choice::Rule(1)
        );
        assert_eq!(scope.choose(&facts("b.test", None, None)), Choice::Default);
    }
}
