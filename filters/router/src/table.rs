//! The route table: virtual hosts, first-match routes and weighted destinations. Pure logic,
//! natively unit-tested; the wasm glue in `filter.rs` only feeds it headers.

use lateen_sdk::istio::{
    CorsPolicy, HeaderOperations, Headers, HttpDirectResponse, HttpMatchRequest, HttpRedirect,
    HttpRewrite,
};
use lateen_sdk::matcher::{strip_port, StrMatcher};
use lateen_sdk::matcher::{CompiledMatch, MatchError, RequestView};
use lateen_sdk::route::{Decision, RetryPolicy};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// The router's configuration: what the host generates from the VirtualServices bound to a
/// listener. Destinations are already resolved to cluster names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RouterConfig {
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHostConfig>,
}

/// One VirtualService as the router sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RouteConfig {
    /// The HTTPRoute's name (Envoy's route name).
    pub name: String,
    /// Unique id of the route in the config (`ns/vs#index`), the key other filters use.
    #[serde(default)]
    pub id: String,
    /// Alternatives; empty matches every request.
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    #[serde(default)]
    pub route: Vec<WeightedCluster>,
    /// Upstream timeout in milliseconds, 0 for none.
    #[serde(default)]
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    /// The retry policy as the `lateen.route.retry` property value; `None`: Istio's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    /// Mirrors: cluster and percentage (0-100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<(String, f64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    /// `corsPolicy.maxAge` in seconds (the host parses the duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_max_age_s: Option<u64>,
}

/// A destination: cluster, relative weight and its own header operations.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct WeightedCluster {
    pub cluster: String,
    #[serde(default)]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// The compiled table.
#[derive(Debug)]
pub struct RouteTable {
    hosts: Vec<VirtualHost>,
    /// Some match reads JWT claims (`@request.auth.claims.*`).
    pub uses_claims: bool,
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

/// What a route does with a request.
#[derive(Debug)]
pub enum Action {
    /// Forward to one of the weighted clusters.
    Forward {
        clusters: Vec<Destination>,
        total_weight: u64,
    },
    Redirect(HttpRedirect),
    Direct {
        status: u32,
        body: Vec<u8>,
    },
}

/// A compiled destination.
#[derive(Debug)]
pub struct Destination {
    pub cluster: String,
    weight: u64,
    pub headers: Option<Headers>,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub id: String,
    matches: Vec<CompiledMatch>,
    pub action: Action,
    pub timeout_ms: u64,
    pub rewrite: Option<Rewrite>,
    pub headers: Option<Headers>,
    pub retry: Option<RetryPolicy>,
    pub mirrors: Vec<(String, f64)>,
    pub cors: Option<Cors>,
}

/// A compiled `CorsPolicy`.
#[derive(Debug)]
pub struct Cors {
    origins: Vec<StrMatcher>,
    methods: String,
    allow_headers: String,
    expose_headers: String,
    max_age: Option<u64>,
    credentials: bool,
    ignore_unmatched_preflights: bool,
}

/// What CORS asks of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsAction {
    /// Not a CORS request, or an origin that is not allowed: nothing to add.
    None,
    /// Answer a preflight locally (200 with these headers).
    Preflight(Vec<(String, String)>),
    /// A preflight from an origin that is not allowed, with `unmatchedPreflights: IGNORE`:
    /// answer 200 without CORS headers.
    IgnoredPreflight,
    /// Add these headers to the response.
    Response(Vec<(String, String)>),
}

impl Cors {
    fn compile(c: &CorsPolicy, max_age: Option<u64>) -> Result<Self, String> {
        let mut origins = c
            .allow_origins
            .iter()
            .enumerate()
            .map(|(i, m)| {
                StrMatcher::compile(m, false, &format!("corsPolicy.allowOrigins[{i}]"))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        origins.extend(c.allow_origin.iter().map(|o| {
            if o == "*" {
                StrMatcher::Any
            } else {
                StrMatcher::Exact(o.clone())
            }
        }));
        Ok(Cors {
            origins,
            methods: c.allow_methods.join(","),
            allow_headers: c.allow_headers.join(","),
            expose_headers: c.expose_headers.join(","),
            max_age,
            credentials: c.allow_credentials.unwrap_or(false),
            ignore_unmatched_preflights: c.unmatched_preflights.as_deref() == Some("IGNORE"),
        })
    }

    /// Envoy's CORS filter for one request.
    pub fn evaluate(
        &self,
        method: &str,
        origin: Option<&str>,
        request_method: Option<&str>,
    ) -> CorsAction {
        let Some(origin) = origin else {
            return CorsAction::None;
        };
        let preflight = method == "OPTIONS" && request_method.is_some();
        let allowed = self.origins.iter().any(|m| m.matches(origin));
        if !allowed {
            return if preflight && self.ignore_unmatched_preflights {
                CorsAction::IgnoredPreflight
            } else {
                CorsAction::None
            };
        }
        let mut h = vec![(
            "access-control-allow-origin".to_string(),
            origin.to_string(),
        )];
        if self.credentials {
            h.push(("access-control-allow-credentials".into(), "true".into()));
        }
        if preflight {
            if !self.methods.is_empty() {
                h.push(("access-control-allow-methods".into(), self.methods.clone()));
            }
            if !self.allow_headers.is_empty() {
                h.push((
                    "access-control-allow-headers".into(),
                    self.allow_headers.clone(),
                ));
            }
            if let Some(age) = self.max_age {
                h.push(("access-control-max-age".into(), age.to_string()));
            }
            CorsAction::Preflight(h)
        } else {
            if !self.expose_headers.is_empty() {
                h.push((
                    "access-control-expose-headers".into(),
                    self.expose_headers.clone(),
                ));
            }
            CorsAction::Response(h)
        }
    }
}

/// A compiled `HTTPRewrite`.
#[derive(Debug)]
pub struct Rewrite {
    uri: Option<String>,
    pub authority: Option<String>,
    regex: Option<(Regex, String)>,
}

/// The route chosen for a request.
pub struct Selected<'a> {
    pub route: &'a Route,
    /// The chosen destination, for forwarding routes.
    pub destination: Option<&'a Destination>,
    /// The `uri.prefix` of the match that matched, for prefix rewrites.
    pub matched_prefix: Option<&'a str>,
}

impl Selected<'_> {
    /// The decision the host acts on (forwarding routes only); the caller samples the
    /// route's mirrors into it.
    pub fn decision(&self) -> Option<Decision> {
        self.destination.map(|d| Decision {
            cluster: d.cluster.clone(),
            route_name: self.route.name.clone(),
            timeout_ms: self.route.timeout_ms,
            route_id: self.route.id.clone(),
            retry: self.route.retry.clone(),
            mirrors: Vec::new(),
        })
    }
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
                let at =
                    |what: &str| format!("virtualHosts[{vi}] ({}) routes[{ri}]{what}", vh.name);
                let action = match (&r.redirect, &r.direct_response, r.route.is_empty()) {
                    (Some(rd), None, true) => Action::Redirect(rd.clone()),
                    (None, Some(d), true) => Action::Direct {
                        status: d.status,
                        body: d
                            .body_bytes()
                            .map_err(|e| format!("{}: {e}", at(".directResponse")))?,
                    },
                    (None, None, false) => {
                        // Istio: a single destination with no weight gets 100; weights are relative.
                        let single = r.route.len() == 1;
                        let clusters: Vec<Destination> = r
                            .route
                            .iter()
                            .map(|d| Destination {
                                cluster: d.cluster.clone(),
                                weight: if single { 1 } else { u64::from(d.weight) },
                                headers: d.headers.clone(),
                            })
                            .collect();
                        let total_weight = clusters.iter().map(|d| d.weight).sum();
                        Action::Forward {
                            clusters,
                            total_weight,
                        }
                    }
                    (None, None, true) => return Err(format!("{}: no destination", at(""))),
                    _ => {
                        return Err(format!(
                            "{}: route, redirect and directResponse are exclusive",
                            at("")
                        ))
                    }
                };
                let rewrite = match &r.rewrite {
                    None => None,
                    Some(rw) => Some(Rewrite {
                        uri: rw.uri.clone(),
                        authority: rw.authority.clone(),
                        regex: match &rw.uri_regex_rewrite {
                            None => None,
                            Some(rr) => Some((
                                Regex::new(&rr.pattern).map_err(|e| {
                                    format!(
                                        "{}: invalid regex: {e}",
                                        at(".rewrite.uriRegexRewrite.match")
                                    )
                                })?,
                                re2_substitution(&rr.rewrite),
                            )),
                        },
                    }),
                };
                routes.push(Route {
                    name: r.name.clone(),
                    id: r.id.clone(),
                    matches,
                    action,
                    timeout_ms: r.timeout_ms,
                    rewrite,
                    headers: r.headers.clone(),
                    retry: r
                        .retry
                        .as_deref()
                        .map(RetryPolicy::decode)
                        .transpose()
                        .map_err(|e| format!("{}: {e}", at("retry")))?,
                    mirrors: r.mirrors.clone(),
                    cors: match &r.cors_policy {
                        None => None,
                        Some(c) => Some(
                            Cors::compile(c, r.cors_max_age_s)
                                .map_err(|e| format!("{}: {e}", at("")))?,
                        ),
                    },
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
        let uses_claims = hosts
            .iter()
            .flat_map(|h| &h.routes)
            .flat_map(|r| &r.matches)
            .any(CompiledMatch::uses_claims);
        Ok(RouteTable { hosts, uses_claims })
    }

    /// Picks the route for a request. `roll` supplies a uniformly random u64 for weighted
    /// destinations (only called when a route has more than one).
    pub fn select<R: RequestView + ?Sized>(
        &self,
        req: &R,
        roll: impl FnOnce() -> u64,
    ) -> Option<Selected<'_>> {
        let authority = req.header(":authority").unwrap_or("");
        let host = strip_port(authority).to_ascii_lowercase();
        let vh = self.select_host(&host)?;
        let (route, matched) = vh.routes.iter().find_map(|r| {
            if r.matches.is_empty() {
                return Some((r, None));
            }
            r.matches
                .iter()
                .find(|m| m.matches(req))
                .map(|m| (r, Some(m)))
        })?;
        let destination = match &route.action {
            Action::Forward {
                clusters,
                total_weight,
            } => Some(if clusters.len() == 1 || *total_weight == 0 {
                &clusters[0]
            } else {
                let mut pick = roll() % total_weight;
                let mut chosen = &clusters[0];
                for d in clusters {
                    if pick < d.weight {
                        chosen = d;
                        break;
                    }
                    pick -= d.weight;
                }
                chosen
            }),
            _ => None,
        };
        Some(Selected {
            route,
            destination,
            matched_prefix: matched.and_then(CompiledMatch::uri_prefix),
        })
    }

    /// The decision for a request, for forwarding routes.
    pub fn decide<R: RequestView + ?Sized>(
        &self,
        req: &R,
        roll: impl FnOnce() -> u64,
    ) -> Option<Decision> {
        self.select(req, roll)?.decision()
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

impl Rewrite {
    /// The rewritten `:path` (query kept), or `None` if the path is unchanged.
    pub fn path(&self, path: &str, matched_prefix: Option<&str>) -> Option<String> {
        let (p, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let new = if let Some(uri) = &self.uri {
            // Istio: a prefix match has its prefix replaced; otherwise the whole path.
            match matched_prefix {
                Some(prefix) if p.len() >= prefix.len() => format!("{uri}{}", &p[prefix.len()..]),
                _ => uri.clone(),
            }
        } else if let Some((re, with)) = &self.regex {
            re.replace_all(p, with.as_str()).into_owned()
        } else {
            return None;
        };
        Some(match query {
            Some(q) => format!("{new}?{q}"),
            None => new,
        })
    }
}

/// The `location` of a redirect, as Envoy builds it. The query string is kept unless the new
/// `uri` has its own.
pub fn redirect_location(r: &HttpRedirect, scheme: &str, authority: &str, path: &str) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(scheme);
    let (req_host, req_port) = match authority.rsplit_once(':') {
        Some((h, p))
            if !h.ends_with(']') && p.bytes().all(|b| b.is_ascii_digit()) || h.ends_with(']') =>
        {
            (h, Some(p))
        }
        _ => (authority, None),
    };
    let host = r.authority.as_deref().unwrap_or(req_host);
    let port = match (r.port, r.derive_port.as_deref()) {
        (Some(p), _) => Some(p.to_string()),
        (None, Some("FROM_PROTOCOL_DEFAULT")) => None,
        (None, Some("FROM_REQUEST_PORT")) => req_port.map(str::to_string),
        // An authority rewrite drops the request's port, as Envoy's host_redirect does.
        (None, _) if r.authority.is_some() => None,
        (None, _) => req_port.map(str::to_string),
    };
    let default_port = matches!(
        (scheme, port.as_deref()),
        ("http", Some("80")) | ("https", Some("443"))
    );
    let (p, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let new_path = match &r.uri {
        Some(u) if u.contains('?') => u.clone(),
        Some(u) => match query {
            Some(q) => format!("{u}?{q}"),
            None => u.clone(),
        },
        None => match query {
            Some(q) => format!("{p}?{q}"),
            None => p.to_string(),
        },
    };
    match port {
        Some(port) if !default_port => format!("{scheme}://{host}:{port}{new_path}"),
        _ => format!("{scheme}://{host}{new_path}"),
    }
}

/// Applies header operations through the given accessors, in Envoy's order: set, add, remove.
pub fn apply_header_ops(
    ops: &HeaderOperations,
    mut set: impl FnMut(&str, &str),
    mut add: impl FnMut(&str, &str),
    mut remove: impl FnMut(&str),
) {
    for (k, v) in &ops.set {
        set(k, v);
    }
    for (k, v) in &ops.add {
        add(k, v);
    }
    for k in &ops.remove {
        remove(k);
    }
}

// RE2/Envoy substitutions use `\1`; the regex crate uses `${1}`.
fn re2_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(d)) if d.is_ascii_digit() => {
                out.push_str(&format!("${{{d}}}"));
                chars.next();
            }
            ('$', _) => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
}

pub use lateen_sdk::rng::Rng;

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
    fn redirects_keep_the_query() {
        let r = |json: &str| -> HttpRedirect { serde_json::from_str(json).unwrap() };
        assert_eq!(
            redirect_location(&r(r#"{"uri":"/new"}"#), "http", "a.com:8080", "/old?x=1"),
            "http://a.com:8080/new?x=1"
        );
        assert_eq!(
            redirect_location(
                &r(r#"{"authority":"b.com","scheme":"https"}"#),
                "http",
                "a.com:8080",
                "/p"
            ),
            "https://b.com/p"
        );
        assert_eq!(
            redirect_location(
                &r(r#"{"port":9443,"scheme":"https"}"#),
                "http",
                "a.com:8080",
                "/p"
            ),
            "https://a.com:9443/p"
        );
        assert_eq!(
            redirect_location(
                &r(r#"{"derivePort":"FROM_PROTOCOL_DEFAULT"}"#),
                "http",
                "a.com:8080",
                "/p"
            ),
            "http://a.com/p"
        );
        assert_eq!(
            redirect_location(
                &r(r#"{"authority":"b.com","derivePort":"FROM_REQUEST_PORT"}"#),
                "http",
                "a.com:8080",
                "/p"
            ),
            "http://b.com:8080/p"
        );
    }

    #[test]
    fn rewrites() {
        let rw = Rewrite {
            uri: Some("/v2".into()),
            authority: None,
            regex: None,
        };
        assert_eq!(
            rw.path("/v1/users?x=1", Some("/v1")),
            Some("/v2/users?x=1".into())
        );
        assert_eq!(rw.path("/exact", None), Some("/v2".into()));
        let rw = Rewrite {
            uri: None,
            authority: None,
            regex: Some((
                Regex::new("^/service/([^/]+)(/.*)$").unwrap(),
                re2_substitution("\\2/instance/\\1"),
            )),
        };
        assert_eq!(
            rw.path("/service/foo/v1/api?q", None),
            Some("/v1/api/instance/foo?q".into())
        );
    }

    #[test]
    fn redirect_and_direct_routes() {
        let t = table(
            r#"{"virtualHosts":[{"name":"v","domains":["*"],"routes":[
            {"name":"r","match":[{"uri":{"prefix":"/old"}}],"redirect":{"uri":"/new"}},
            {"name":"d","match":[{"uri":{"prefix":"/down"}}],"directResponse":{"status":503,"body":{"string":"maintenance"}}},
            {"name":"f","route":[{"cluster":"c","headers":{"request":{"set":{"x-d":"1"}}}}]}]}]}"#,
        );
        let s = t.select(&req(&[(":path", "/old/x")]), || 0).unwrap();
        assert!(matches!(s.route.action, Action::Redirect(_)) && s.decision().is_none());
        assert_eq!(s.matched_prefix, Some("/old"));
        let s = t.select(&req(&[(":path", "/down")]), || 0).unwrap();
        assert!(
            matches!(&s.route.action, Action::Direct { status: 503, body } if body == b"maintenance")
        );
        let s = t.select(&req(&[(":path", "/")]), || 0).unwrap();
        assert_eq!(s.decision().unwrap().cluster, "c");
        assert!(s.destination.unwrap().headers.is_some());
        let bad = serde_json::from_str::<RouterConfig>(
            r#"{"virtualHosts":[{"name":"v","domains":["*"],"routes":[
            {"name":"x","redirect":{"uri":"/n"},"route":[{"cluster":"c"}]}]}]}"#,
        )
        .unwrap();
        assert!(RouteTable::compile(&bad).unwrap_err().contains("exclusive"));
    }

    #[test]
    fn cors_preflight_and_actual_requests() {
        let c: CorsPolicy = serde_json::from_str(
            r#"{"allowOrigins":[{"exact":"https://a.com"},{"regex":"https://.*\\.b\\.com"}],
                "allowMethods":["GET","POST"],"allowHeaders":["x-token"],"exposeHeaders":["x-id"],
                "allowCredentials":true}"#,
        )
        .unwrap();
        let cors = Cors::compile(&c, Some(86400)).unwrap();
        let CorsAction::Preflight(h) =
            cors.evaluate("OPTIONS", Some("https://a.com"), Some("POST"))
        else {
            panic!("preflight expected");
        };
        assert!(h.contains(&("access-control-allow-methods".into(), "GET,POST".into())));
        assert!(h.contains(&("access-control-max-age".into(), "86400".into())));
        let CorsAction::Response(h) = cors.evaluate("GET", Some("https://x.b.com"), None) else {
            panic!("response headers expected");
        };
        assert!(h.contains(&("access-control-expose-headers".into(), "x-id".into())));
        assert_eq!(
            cors.evaluate("GET", Some("https://evil.com"), None),
            CorsAction::None
        );
        assert_eq!(cors.evaluate("GET", None, None), CorsAction::None);
    }
}
