//! VirtualService HTTP routes: the router's virtual hosts, faults, mirrors and retries.

use super::*;

/// `ns/name` for a gateway reference (`name` is in the VirtualService's namespace).
pub(super) fn qualify(r: &str, ns: &str) -> String {
    if r.contains('/') {
        r.to_string()
    } else {
        format!("{ns}/{r}")
    }
}

pub(super) fn gateway_refs(vs: &Doc<VirtualServiceSpec>) -> Vec<String> {
    vs.spec
        .gateways
        .iter()
        .filter(|g| *g != "mesh")
        .map(|g| qualify(g, &vs.info.namespace))
        .collect()
}

pub(super) fn virtual_host(
    vs: &Doc<VirtualServiceSpec>,
    res: &Resources,
    clusters: &HashMap<String, Arc<ClusterSpec>>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<VirtualHostConfig> {
    let before = errors.len();
    if vs.spec.hosts.is_empty() {
        errors.push(vs.info.error("spec.hosts", "at least one host is required"));
    }
    let mut routes = Vec::new();
    for (i, http) in vs.spec.http.iter().enumerate() {
        let field = format!("spec.http[{i}]");
        for f in http.unsupported_fields() {
            warnings.push(format!(
                "{}: {field}.{f} is not supported yet and is ignored",
                vs.info.key()
            ));
        }
        if !check_http_route(vs, &field, http, errors) {
            continue;
        }
        let at = RouteAt {
            vs,
            field: &field,
            res,
        };
        let dests = route_destinations(&at, http, clusters, errors, warnings);
        let (timeout_ms, retry) = route_timing(&at, http, errors);
        let mirrors = route_mirrors(&at, http, errors);
        let cors_max_age_s = route_cors(&at, http, errors);
        routes.push(RouteConfig {
            cors_policy: http.cors_policy.clone(),
            cors_max_age_s,
            retry,
            mirrors,
            name: http
                .name
                .clone()
                .unwrap_or_else(|| format!("{}.{i}", vs.info.name)),
            id: format!("{}#{i}", vs.info.key()),
            matches: http.matches.clone(),
            route: dests,
            timeout_ms,
            redirect: http.redirect.clone(),
            direct_response: http.direct_response.clone(),
            rewrite: http.rewrite.clone(),
            headers: http.headers.clone(),
        });
    }
    if errors.len() > before {
        return None;
    }
    Some(VirtualHostConfig {
        name: vs.info.key(),
        domains: vs
            .spec
            .hosts
            .iter()
            .map(|h| h.rsplit('/').next().unwrap_or(h).to_string())
            .collect(),
        routes,
    })
}

/// Where an http route is: its VirtualService, its field (`spec.http[i]`), and the
/// resources its destinations resolve against.
struct RouteAt<'a> {
    vs: &'a Doc<VirtualServiceSpec>,
    field: &'a str,
    res: &'a Resources,
}

/// Checks an http route's matches and its one action (destinations, a redirect or a
/// direct response); false when it cannot be compiled at all.
fn check_http_route(
    vs: &Doc<VirtualServiceSpec>,
    field: &str,
    http: &HttpRoute,
    errors: &mut Vec<ConfigError>,
) -> bool {
    for (m, mr) in http.matches.iter().enumerate() {
        if let Err(e) = lateen_sdk::matcher::CompiledMatch::compile(mr) {
            errors.push(
                vs.info
                    .error(&format!("{field}.match[{m}].{}", e.field), e.message),
            );
        }
    }
    let actions = [
        !http.route.is_empty(),
        http.redirect.is_some(),
        http.direct_response.is_some(),
    ];
    match actions.iter().filter(|a| **a).count() {
        0 => {
            errors.push(vs.info.error(
                &format!("{field}.route"),
                "a route needs destinations, a redirect or a directResponse",
            ));
            return false;
        }
        1 => {}
        _ => {
            errors.push(vs.info.error(
                field,
                "route, redirect and directResponse are mutually exclusive",
            ));
            return false;
        }
    }
    if let Some(d) = &http.direct_response {
        if !(200..=599).contains(&d.status) {
            errors.push(vs.info.error(
                &format!("{field}.directResponse.status"),
                "status must be 200-599",
            ));
        }
        if let Err(e) = d.body_bytes() {
            errors.push(vs.info.error(&format!("{field}.directResponse.body"), e));
        }
    }
    if let Some(r) = &http.redirect {
        if let Some(code) = r.redirect_code {
            if !matches!(code, 301 | 302 | 303 | 307 | 308) {
                errors.push(vs.info.error(
                    &format!("{field}.redirect.redirectCode"),
                    "redirectCode must be 301, 302, 303, 307 or 308",
                ));
            }
        }
        if let Some(d) = r.derive_port.as_deref() {
            if !matches!(d, "FROM_PROTOCOL_DEFAULT" | "FROM_REQUEST_PORT") {
                errors.push(vs.info.error(
                    &format!("{field}.redirect.derivePort"),
                    "expected FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT",
                ));
            }
        }
    }
    if let Some(rr) = http
        .rewrite
        .as_ref()
        .and_then(|r| r.uri_regex_rewrite.as_ref())
    {
        if let Err(e) = regex::Regex::new(&rr.pattern) {
            errors.push(vs.info.error(
                &format!("{field}.rewrite.uriRegexRewrite.match"),
                format!("invalid regex: {e}"),
            ));
        }
    }
    true
}

/// The weighted destination clusters of a route, each checked to exist.
fn route_destinations(
    at: &RouteAt<'_>,
    http: &HttpRoute,
    clusters: &HashMap<String, Arc<ClusterSpec>>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Vec<WeightedCluster> {
    let (vs, field, res) = (at.vs, at.field, at.res);
    let mut dests = Vec::new();
    for (j, d) in http.route.iter().enumerate() {
        let df = format!("{field}.route[{j}]");
        if let Some(w) = d.weight {
            if !(0..=i64::from(u32::MAX)).contains(&w) {
                errors.push(
                    vs.info
                        .error(&format!("{df}.weight"), "weight must be >= 0"),
                );
                continue;
            }
        }
        // A reference to something missing is a warning, as in Istio: the route stays,
        // and answers 503 NC (its cluster does not exist), while the rest applies.
        let cluster = match destination_cluster(&d.destination, &vs.info.namespace, res) {
            Ok(name) if clusters.contains_key(&name) => name,
            Ok(name) => {
                warnings.push(dangling_warning(
                    vs,
                    &format!("{df}.destination"),
                    &format!("no cluster `{name}`"),
                ));
                name
            }
            Err(e) => {
                warnings.push(dangling_warning(
                    vs,
                    &format!("{df}.destination.{}", e.field),
                    &e.message,
                ));
                e.cluster
            }
        };
        dests.push(WeightedCluster {
            cluster,
            weight: d.weight.unwrap_or(0) as u32,
            headers: d.headers.clone(),
        });
    }
    if dests.len() > 1 && dests.iter().all(|d| d.weight == 0) {
        errors.push(vs.info.error(
            &format!("{field}.route"),
            "with several destinations, weights must not all be 0",
        ));
    }
    dests
}

/// `FILE:LINE: VirtualService NS/NAME: FIELD: MESSAGE; the route answers 503 NC`.
fn dangling_warning(vs: &Doc<VirtualServiceSpec>, field: &str, message: &str) -> String {
    format!(
        "{}:{}: VirtualService {}: {field}: {message}; this route answers 503 NC (cluster not found)",
        vs.info.file.display(),
        vs.info.line_of(field),
        vs.info.key()
    )
}

/// The route's timeout (0: none) and retry policy, in the route decision's encoding.
fn route_timing(
    at: &RouteAt<'_>,
    http: &HttpRoute,
    errors: &mut Vec<ConfigError>,
) -> (u64, Option<String>) {
    let (vs, field) = (at.vs, at.field);
    let timeout_ms = match &http.timeout {
        None => 0,
        Some(t) => match parse_duration_ms(t) {
            Some(ms) => ms,
            None => {
                errors.push(vs.info.error(
                    &format!("{field}.timeout"),
                    format!("`{t}` is not a duration (e.g. 1.5s, 250ms)"),
                ));
                0
            }
        },
    };
    let retry = match &http.retries {
        None => None,
        Some(r) => match retry_property(r) {
            Ok(p) => Some(p),
            Err((f, m)) => {
                errors.push(vs.info.error(&format!("{field}.retries.{f}"), m));
                None
            }
        },
    };
    (timeout_ms, retry)
}

/// The mirror clusters (`mirror` and `mirrors[]`) with their percentages.
fn route_mirrors(
    at: &RouteAt<'_>,
    http: &HttpRoute,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, f64)> {
    let (vs, field, res) = (at.vs, at.field, at.res);
    let mut mirrors = Vec::new();
    for (j, (d, pct)) in mirror_destinations(http).into_iter().enumerate() {
        let mf = if http.mirror.is_some() && j == 0 {
            format!("{field}.mirror")
        } else {
            format!(
                "{field}.mirrors[{}]",
                j - usize::from(http.mirror.is_some())
            )
        };
        if !(0.0..=100.0).contains(&pct) {
            errors.push(
                vs.info
                    .error(&mf, format!("percentage {pct} is not within 0-100")),
            );
            continue;
        }
        match destination_cluster(&d, &vs.info.namespace, res) {
            Ok(name) => mirrors.push((name, pct)),
            Err(e) => errors.push(vs.info.error(&format!("{mf}.{}", e.field), e.message)),
        }
    }
    mirrors
}

/// The CORS policy's `maxAge` in seconds; its origins are checked to compile.
fn route_cors(at: &RouteAt<'_>, http: &HttpRoute, errors: &mut Vec<ConfigError>) -> Option<u64> {
    let (vs, field) = (at.vs, at.field);
    let cors_max_age_s = match http.cors_policy.as_ref().and_then(|c| c.max_age.as_ref()) {
        None => None,
        Some(t) => match parse_duration_ms(t) {
            Some(ms) => Some(ms / 1000),
            None => {
                errors.push(vs.info.error(
                    &format!("{field}.corsPolicy.maxAge"),
                    format!("`{t}` is not a duration"),
                ));
                None
            }
        },
    };
    if let Some(c) = &http.cors_policy {
        for (k, m) in c.allow_origins.iter().enumerate() {
            if let Err(e) = lateen_sdk::matcher::StrMatcher::compile(m, false, "") {
                errors.push(vs.info.error(
                    &format!("{field}.corsPolicy.allowOrigins[{k}]{}", e.field),
                    e.message,
                ));
            }
        }
    }
    cors_max_age_s
}

/// A VirtualService fault as the fault filter's configuration; `Err((field, message))`.
pub(super) fn route_fault(f: &HttpFaultInjection) -> Result<RouteFault, (&'static str, String)> {
    let pct = |p: &Option<Percent>, legacy: Option<i32>, field| {
        let v = p
            .as_ref()
            .map(|p| p.value)
            .or(legacy.map(f64::from))
            .unwrap_or(0.0);
        if (0.0..=100.0).contains(&v) {
            Ok(v)
        } else {
            Err((field, format!("percentage {v} is not within 0-100")))
        }
    };
    let delay = match &f.delay {
        None => None,
        Some(d) => {
            if d.exponential_delay.is_some() {
                return Err((
                    "delay.exponentialDelay",
                    "not supported; use fixedDelay".into(),
                ));
            }
            let Some(fixed) = &d.fixed_delay else {
                return Err(("delay.fixedDelay", "a delay needs fixedDelay".into()));
            };
            let ms = parse_duration_ms(fixed)
                .ok_or(("delay.fixedDelay", format!("`{fixed}` is not a duration")))?;
            Some(FaultDelayCfg {
                fixed_delay_ms: ms,
                percentage: pct(&d.percentage, d.percent, "delay.percentage")?,
            })
        }
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => {
            if a.http2_error.is_some() {
                return Err((
                    "abort.http2Error",
                    "not supported; use httpStatus or grpcStatus".into(),
                ));
            }
            let grpc_status = match &a.grpc_status {
                None => None,
                Some(name) => Some(grpc_code(name).ok_or((
                    "abort.grpcStatus",
                    format!("unknown gRPC status `{name}` (e.g. UNAVAILABLE)"),
                ))?),
            };
            let http_status = match (a.http_status, grpc_status) {
                (Some(s), _) if (200..=599).contains(&s) => s as u32,
                (Some(s), _) => return Err(("abort.httpStatus", format!("{s} is not 200-599"))),
                (None, Some(_)) => 200,
                (None, None) => {
                    return Err(("abort", "an abort needs httpStatus or grpcStatus".into()))
                }
            };
            Some(FaultAbortCfg {
                http_status,
                grpc_status,
                percentage: pct(&a.percentage, None, "abort.percentage")?,
            })
        }
    };
    Ok(RouteFault { delay, abort })
}

/// Mirror destinations of a route with their percentages (`mirror` + `mirrorPercentage`,
/// then `mirrors[]`; an unset percentage mirrors everything).
pub(super) fn mirror_destinations(http: &HttpRoute) -> Vec<(Destination, f64)> {
    let conv = |m: &lateen_sdk::istio::MirrorDestination| Destination {
        host: m.host.clone(),
        subset: m.subset.clone(),
        port: m.port.as_ref().map(|p| PortSelector { number: p.number }),
    };
    let mut out = Vec::new();
    if let Some(m) = &http.mirror {
        let pct = http
            .mirror_percentage
            .as_ref()
            .map(|p| p.value)
            .or(http.mirror_percent.map(f64::from))
            .unwrap_or(100.0);
        out.push((conv(m), pct));
    }
    for m in &http.mirrors {
        out.push((
            conv(&m.destination),
            m.percentage.as_ref().map_or(100.0, |p| p.value),
        ));
    }
    out
}

/// `HTTPRetry` as the route decision's retry policy, encoded by the SDK for the
/// `lateen.route.retry` property the router sets.
pub fn retry_property(r: &lateen_sdk::istio::HttpRetry) -> Result<String, (&'static str, String)> {
    use lateen_sdk::route::{RetryPolicy, DEFAULT_RETRY_ON, RETRY_ON_TOKENS};
    let per_try_timeout_ms = match &r.per_try_timeout {
        None => 0,
        Some(t) => {
            parse_duration_ms(t).ok_or(("perTryTimeout", format!("`{t}` is not a duration")))?
        }
    };
    let policy = RetryPolicy {
        attempts: r.attempts.unwrap_or(0),
        per_try_timeout_ms,
        retry_on: r
            .retry_on
            .clone()
            .unwrap_or_else(|| DEFAULT_RETRY_ON.to_string()),
        ignore_previous_hosts: r.retry_ignore_previous_hosts.unwrap_or(true),
    };
    if let Some(tok) = policy.unknown_condition() {
        return Err((
            "retryOn",
            format!(
                "unknown retry condition `{tok}`; expected {} or a status code",
                RETRY_ON_TOKENS.join(", ")
            ),
        ));
    }
    Ok(policy.encode())
}

/// Istio durations: `1.5s`, `250ms`, `2m`, `1h`.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        return None;
    };
    let v: f64 = num.parse().ok()?;
    (v >= 0.0 && v.is_finite()).then(|| (v * mult).round() as u64)
}
