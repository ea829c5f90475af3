//! ServiceEntry and DestinationRule: clusters, endpoints and traffic policy.

use super::*;

pub(super) fn se_for<'a>(
    res: &'a Resources,
    host: &str,
    ns: &str,
) -> Option<(&'a Doc<ServiceEntrySpec>, String)> {
    let fq = format!("{host}.{ns}.svc.cluster.local");
    for candidate in [host, fq.as_str()] {
        if let Some(se) = res
            .service_entries
            .iter()
            .find(|se| se.spec.hosts.iter().any(|h| h == candidate))
        {
            return Some((se, candidate.to_string()));
        }
    }
    None
}

pub(super) fn dr_for<'a>(
    res: &'a Resources,
    host: &str,
    ns: &str,
) -> Option<&'a Doc<DestinationRuleSpec>> {
    res.destination_rules.iter().find(|dr| {
        dr.spec.host == host
            || format!("{}.{}.svc.cluster.local", dr.spec.host, dr.info.namespace) == host
            || (dr.spec.host == host.split('.').next().unwrap_or("") && dr.info.namespace == ns)
    })
}

/// A destination that refers to something the config does not have: a host no
/// ServiceEntry declares (without a port to reach it by DNS), a port its ServiceEntry does
/// not declare, a subset no DestinationRule defines. Istio accepts the route, which answers
/// 503 NC; `cluster` is the name the route then carries, which no cluster has.
#[derive(Debug)]
pub(super) struct Dangling {
    pub(super) field: &'static str,
    pub(super) message: String,
    pub(super) cluster: String,
}

/// The cluster name a destination refers to, or what it refers to that is missing.
pub(super) fn destination_cluster(
    d: &Destination,
    ns: &str,
    res: &Resources,
) -> Result<String, Dangling> {
    destination_cluster_checked(d, ns, res).map_err(|(field, message)| {
        let port = d.port.as_ref().map_or(80, |p| p.number);
        let subset = d.subset.clone().unwrap_or_default();
        Dangling {
            field,
            message,
            cluster: format!("outbound|{port}|{subset}|{}", d.host),
        }
    })
}

fn destination_cluster_checked(
    d: &Destination,
    ns: &str,
    res: &Resources,
) -> Result<String, (&'static str, String)> {
    let subset = d.subset.clone().unwrap_or_default();
    let (host, port) = match se_for(res, &d.host, ns) {
        Some((se, host)) => {
            let port = match (&d.port, se.spec.ports.as_slice()) {
                (Some(p), ports) => {
                    if !ports.iter().any(|sp| sp.number == p.number) {
                        return Err((
                            "port",
                            format!("ServiceEntry {} has no port {}", se.info.key(), p.number),
                        ));
                    }
                    p.number
                }
                (None, [only]) => only.number,
                (None, _) => {
                    return Err((
                        "port",
                        format!(
                            "ServiceEntry {} declares several ports; set destination.port.number",
                            se.info.key()
                        ),
                    ))
                }
            };
            (host, port)
        }
        None => match &d.port {
            Some(p) => (d.host.clone(), p.number),
            None => {
                return Err((
                    "host",
                    format!(
                        "no ServiceEntry declares `{}`; declare it, or set destination.port.number \
                         to reach it by DNS",
                        d.host
                    ),
                ))
            }
        },
    };
    if !subset.is_empty() {
        let defined = dr_for(res, &host, ns)
            .is_some_and(|dr| dr.spec.subsets.iter().any(|s| s.name == subset));
        if !defined {
            return Err((
                "subset",
                format!("subset `{subset}` of `{host}` is not defined by any DestinationRule"),
            ));
        }
    }
    Ok(format!("outbound|{port}|{subset}|{host}"))
}

/// A trafficPolicy as it applies to `port`: its `portLevelSettings` entry for the port, if
/// any, replaces the load balancer, connection pool and outlier detection it sets.
pub(super) fn at_port(tp: &TrafficPolicy, port: u32) -> TrafficPolicy {
    let mut eff = tp.clone();
    if let Some(p) = tp
        .port_level_settings
        .iter()
        .find(|p| p.port.as_ref().is_some_and(|n| n.number == port))
    {
        if p.load_balancer.is_some() {
            eff.load_balancer = p.load_balancer.clone();
        }
        if p.connection_pool.is_some() {
            eff.connection_pool = p.connection_pool.clone();
        }
        if p.outlier_detection.is_some() {
            eff.outlier_detection = p.outlier_detection.clone();
        }
        if p.tls.is_some() {
            eff.tls = p.tls.clone();
        }
    }
    eff
}

/// What upstream TLS needs to know of the service: its host (the default SNI), the
/// ServiceEntry's subjectAltNames, and whether it speaks HTTP/2 (ALPN).
pub(super) struct Service<'a> {
    pub(super) host: &'a str,
    pub(super) sans: &'a [String],
    pub(super) h2: bool,
}

/// The upstream TLS of a cluster from a trafficPolicy's `tls` (already laid over by the
/// port's settings), built now so that a bad file fails the config, not a request.
pub(super) fn cluster_tls(
    tp: Option<&TrafficPolicy>,
    svc: &Service<'_>,
    ctx: &TlsContext,
    info: &DocInfo,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<lateen_core::tls::client::UpstreamTls>> {
    let t = tp?.tls.as_ref()?;
    let at = format!("{at}.tls");
    match ctx.client(t, svc.host, svc.sans, svc.h2, info, &at) {
        Ok(Some(s)) => match ctx.upstream(&s) {
            Ok(u) => Some(u),
            Err(e) => {
                errors.push(info.error(&at, e.to_string()));
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// Connection settings from a trafficPolicy's connectionPool (`tcp.connectTimeout`,
/// `http.idleTimeout`, else `tcp.idleTimeout`).
pub(super) fn conn_settings(
    tp: Option<&TrafficPolicy>,
    mut base: ConnSettings,
    dr: &Option<&Doc<DestinationRuleSpec>>,
    errors: &mut Vec<ConfigError>,
) -> ConnSettings {
    let Some(cp) = tp.and_then(|t| t.connection_pool.as_ref()) else {
        return base;
    };
    let mut dur = |v: Option<&String>, field: &str| -> Option<u64> {
        let t = v?;
        match parse_duration_ms(t) {
            Some(ms) if ms > 0 => Some(ms),
            _ => {
                if let Some(d) = dr {
                    errors.push(d.info.error(
                        &format!("spec.trafficPolicy.connectionPool.{field}"),
                        format!("`{t}` is not a positive duration"),
                    ));
                }
                None
            }
        }
    };
    if let Some(ms) = dur(
        cp.tcp.as_ref().and_then(|t| t.connect_timeout.as_ref()),
        "tcp.connectTimeout",
    ) {
        base.connect_timeout_ms = ms;
    }
    let tcp_idle = dur(
        cp.tcp.as_ref().and_then(|t| t.idle_timeout.as_ref()),
        "tcp.idleTimeout",
    );
    if let Some(ms) = tcp_idle {
        base.tcp_idle_timeout_ms = ms;
    }
    let idle = dur(
        cp.http.as_ref().and_then(|h| h.idle_timeout.as_ref()),
        "http.idleTimeout",
    )
    .or(tcp_idle);
    if let Some(ms) = idle {
        base.idle_timeout_ms = ms;
    }
    if let Some(n) = cp.tcp.as_ref().and_then(|t| t.max_connections) {
        base.max_connections = n.min(u32::MAX as u64) as u32;
    }
    if let Some(n) = cp.http.as_ref().and_then(|h| h.max_requests_per_connection) {
        // Istio: 0 means unlimited; 1 turns keep-alive off.
        base.max_requests_per_connection = n.min(u32::MAX as u64) as u32;
    }
    // h2UpgradePolicy: UPGRADE speaks HTTP/2 (prior knowledge) to an HTTP/1.1 port.
    if cp
        .http
        .as_ref()
        .and_then(|h| h.h2_upgrade_policy.as_deref())
        == Some("UPGRADE")
    {
        base.protocol = UpstreamProtocol::Http2;
    }
    base
}

/// The consistent-hash policy of a trafficPolicy, if any.
pub(super) fn hash_policy(
    tp: &TrafficPolicy,
    endpoints: &[EndpointSpec],
    info: &DocInfo,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<HashPolicy> {
    let ch = tp.load_balancer.as_ref()?.consistent_hash.as_ref()?;
    let at = format!("{at}.loadBalancer.consistentHash");
    let mut keys = Vec::new();
    if let Some(h) = &ch.http_header_name {
        keys.push(HashKey::Header(h.to_ascii_lowercase()));
    }
    if let Some(c) = &ch.http_cookie {
        let ttl_s = match &c.ttl {
            None => None,
            Some(t) => match parse_duration_ms(t) {
                Some(ms) => Some(ms / 1000),
                None => {
                    errors.push(info.error(
                        &format!("{at}.httpCookie.ttl"),
                        format!("`{t}` is not a duration"),
                    ));
                    None
                }
            },
        };
        keys.push(HashKey::Cookie {
            name: c.name.clone(),
            path: c.path.clone(),
            ttl_s,
        });
    }
    if ch.use_source_ip == Some(true) {
        keys.push(HashKey::SourceIp);
    }
    if let Some(q) = &ch.http_query_parameter_name {
        keys.push(HashKey::QueryParam(q.clone()));
    }
    if keys.len() != 1 {
        errors.push(info.error(
            &at,
            "set exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
        ));
        return None;
    }
    let key = keys.remove(0);
    Some(match (&ch.maglev, &ch.ring_hash) {
        (Some(m), None) => {
            HashPolicy::maglev(key, endpoints, m.table_size.unwrap_or(65537) as usize)
        }
        (None, r) => HashPolicy::ring(
            key,
            endpoints,
            r.as_ref()
                .and_then(|r| r.minimum_ring_size)
                .or(ch.minimum_ring_size)
                .unwrap_or(1024)
                .min(1 << 20) as usize,
        ),
        (Some(_), Some(_)) => {
            errors.push(info.error(&at, "set only one of ringHash and maglev"));
            return None;
        }
    })
}

/// Circuit-breaker limit and outlier policy of a trafficPolicy.
pub(super) fn upstream_policies(
    tp: Option<&TrafficPolicy>,
    info: &DocInfo,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> (Option<u64>, Option<OutlierPolicy>) {
    let Some(tp) = tp else { return (None, None) };
    // HTTP/1: connections in use plus requests waiting for one; HTTP/2: http2MaxRequests.
    let max_requests = tp.connection_pool.as_ref().and_then(|cp| {
        let conns = cp.tcp.as_ref().and_then(|t| t.max_connections);
        let pending = cp.http.as_ref().and_then(|h| h.http1_max_pending_requests);
        let h2 = cp.http.as_ref().and_then(|h| h.http2_max_requests);
        let h1 = conns.map(|c| c + pending.unwrap_or(1024));
        match (h1, h2) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    });
    let outlier = tp.outlier_detection.as_ref().map(|o| {
        let mut dur = |v: &Option<String>, field: &str, default: u64| match v {
            None => default,
            Some(t) => parse_duration_ms(t).unwrap_or_else(|| {
                errors.push(info.error(
                    &format!("{at}.outlierDetection.{field}"),
                    format!("`{t}` is not a duration"),
                ));
                default
            }),
        };
        OutlierPolicy {
            // Istio: consecutive5xxErrors defaults to 5; consecutiveErrors is its old name.
            consecutive_5xx: o
                .consecutive5xx_errors
                .or(o.consecutive_errors)
                .unwrap_or(5),
            consecutive_gateway: o.consecutive_gateway_errors.unwrap_or(0),
            // Envoy's default for consecutive_local_origin_failure is 5.
            consecutive_local_origin: if o.split_external_local_origin_errors == Some(true) {
                o.consecutive_local_origin_failures.unwrap_or(5).max(1)
            } else {
                0
            },
            base_ejection_ms: dur(&o.base_ejection_time, "baseEjectionTime", 30_000),
            interval_ms: dur(&o.interval, "interval", 10_000),
            max_ejection_percent: o.max_ejection_percent.unwrap_or(10).min(100),
            min_health_percent: o.min_health_percent.unwrap_or(0).min(100),
        }
    });
    (max_requests, outlier)
}

pub(super) fn lb_of(tp: Option<&TrafficPolicy>) -> Option<&str> {
    tp?.load_balancer.as_ref()?.simple.as_deref()
}

pub(super) type Clusters = HashMap<String, Arc<ClusterSpec>>;

/// Every cluster the files define: one per ServiceEntry host and port, and per subset of
/// its DestinationRule; destinations on hosts no ServiceEntry declares, reached by DNS.
/// With the aliases: a host's short name for its first port's cluster.
pub(super) fn build_clusters(
    res: &Resources,
    tls: &TlsContext,
    errors: &mut Vec<ConfigError>,
) -> (Clusters, HashMap<String, String>) {
    let mut clusters = HashMap::new();
    let mut aliases = HashMap::new();
    for se in &res.service_entries {
        service_entry_clusters(se, res, tls, (&mut clusters, &mut aliases), errors);
    }
    dns_destination_clusters(res, tls, &mut clusters, errors);
    (clusters, aliases)
}

/// A load-balancer name as the policy; an unknown one is reported and round robin used.
fn lb_parse(
    s: Option<&str>,
    info: &DocInfo,
    field: &str,
    errors: &mut Vec<ConfigError>,
) -> LbPolicy {
    let s = s.unwrap_or("ROUND_ROBIN");
    LbPolicy::parse(s).unwrap_or_else(|| {
        let msg = if s == "PASSTHROUGH" {
            "PASSTHROUGH forwards to the caller's original destination, which only a \
             sidecar has; a gateway cannot use it"
                .to_string()
        } else {
            format!("unknown load balancer `{s}`; expected ROUND_ROBIN, LEAST_REQUEST or RANDOM")
        };
        errors.push(info.error(field, msg));
        LbPolicy::RoundRobin
    })
}

/// One host and port of a ServiceEntry, as its clusters are built.
struct HostPort<'a> {
    se: &'a Doc<ServiceEntrySpec>,
    host: &'a str,
    port: &'a ServicePort,
    proto: UpstreamProtocol,
}

impl HostPort<'_> {
    /// The endpoints with all of `labels` (a subset's); without endpoints, the host itself
    /// (resolved at connect time) for the whole service.
    fn endpoints(&self, labels: &BTreeMap<String, String>) -> Vec<EndpointSpec> {
        let (se, host, port) = (self.se, self.host, self.port);
        if se.spec.endpoints.is_empty() {
            if labels.is_empty() {
                return vec![EndpointSpec::new(
                    format!("{host}:{}", port.target_port.unwrap_or(port.number)),
                    BTreeMap::new(),
                    1,
                )];
            }
            return Vec::new();
        }
        se.spec
            .endpoints
            .iter()
            .filter(|e| labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
            .map(|e| {
                let p = e
                    .ports
                    .get(&port.name)
                    .copied()
                    .or(port.target_port)
                    .unwrap_or(port.number);
                let addr = if e.address.contains(':') && !e.address.starts_with('[') {
                    format!("[{}]:{p}", e.address)
                } else {
                    format!("{}:{p}", e.address)
                };
                EndpointSpec::new(addr, e.labels.clone(), e.weight.unwrap_or(1))
            })
            .collect()
    }

    fn service(&self) -> Service<'_> {
        Service {
            host: self.host,
            sans: &self.se.spec.subject_alt_names,
            h2: self.proto == UpstreamProtocol::Http2,
        }
    }

    /// Istio's auto mTLS: endpoints labelled as having a sidecar get ISTIO_MUTUAL unless a
    /// DestinationRule says otherwise.
    fn has_sidecars(&self) -> bool {
        let eps = &self.se.spec.endpoints;
        !eps.is_empty()
            && eps.iter().all(|e| {
                e.labels
                    .get("security.istio.io/tlsMode")
                    .map(String::as_str)
                    == Some("istio")
            })
    }
}

/// A ServiceEntry's clusters: per port and host, the service's and its subsets'.
fn service_entry_clusters(
    se: &Doc<ServiceEntrySpec>,
    res: &Resources,
    tls: &TlsContext,
    (clusters, aliases): (&mut Clusters, &mut HashMap<String, String>),
    errors: &mut Vec<ConfigError>,
) {
    let resolution = se.spec.resolution.as_deref().unwrap_or("NONE");
    if !matches!(resolution, "STATIC" | "DNS" | "DNS_ROUND_ROBIN" | "NONE") {
        errors.push(se.info.error(
            "spec.resolution",
            format!(
                "unknown resolution `{resolution}`; expected STATIC, DNS, DNS_ROUND_ROBIN or NONE"
            ),
        ));
        return;
    }
    if resolution == "STATIC" && se.spec.endpoints.is_empty() {
        errors.push(
            se.info
                .error("spec.endpoints", "STATIC resolution needs endpoints"),
        );
    }
    for (pi, port) in se.spec.ports.iter().enumerate() {
        if u16::try_from(port.number).is_err() || port.number == 0 {
            errors.push(
                se.info
                    .error(&format!("spec.ports[{pi}].number"), "port must be 1-65535"),
            );
            continue;
        }
        let proto = match port
            .protocol
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("HTTP2" | "GRPC" | "GRPC-WEB") => UpstreamProtocol::Http2,
            _ => UpstreamProtocol::Http1,
        };
        for host in &se.spec.hosts {
            let hp = HostPort {
                se,
                host,
                port,
                proto,
            };
            let name = format!("outbound|{}||{host}", port.number);
            aliases.entry(host.clone()).or_insert_with(|| name.clone());
            let dr = dr_for(res, host, &se.info.namespace);
            let base = Base::of(&hp, dr, tls, errors);
            if let Some(dr) = dr {
                for (si, subset) in dr.spec.subsets.iter().enumerate() {
                    let c = subset_cluster(&hp, dr, (si, subset), &base, tls, errors);
                    clusters.insert(c.name.clone(), Arc::new(c));
                }
            }
            clusters.insert(name, Arc::new(base.cluster));
        }
    }
}

/// The service's cluster at one port, and what its subsets inherit from it.
struct Base<'a> {
    cluster: ClusterSpec,
    /// The rule's policy with this port's portLevelSettings laid over it.
    eff: Option<TrafficPolicy>,
    rule: Option<&'a Doc<DestinationRuleSpec>>,
    pol: (Option<u64>, Option<OutlierPolicy>),
}

impl<'a> Base<'a> {
    fn of(
        hp: &HostPort<'_>,
        dr: Option<&'a Doc<DestinationRuleSpec>>,
        tls: &TlsContext,
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        let number = hp.port.number;
        let eff = dr
            .and_then(|d| d.spec.traffic_policy.as_ref())
            .map(|t| at_port(t, number));
        let (lb, pol) = match dr {
            Some(d) => (
                lb_parse(
                    lb_of(eff.as_ref()),
                    &d.info,
                    "spec.trafficPolicy.loadBalancer.simple",
                    errors,
                ),
                upstream_policies(eff.as_ref(), &d.info, "spec.trafficPolicy", errors),
            ),
            None => (LbPolicy::RoundRobin, (None, None)),
        };
        let name = format!("outbound|{number}||{}", hp.host);
        let mut c = ClusterSpec::new(name, hp.endpoints(&BTreeMap::new()), lb, hp.proto);
        (c.max_requests, c.outlier) = pol;
        c.conn = conn_settings(eff.as_ref(), c.conn, &dr, errors);
        let svc = hp.service();
        if let (Some(d), Some(t)) = (dr, eff.as_ref()) {
            c.hash = hash_policy(t, &c.endpoints, &d.info, "spec.trafficPolicy", errors);
            c.tls = cluster_tls(Some(t), &svc, tls, &d.info, "spec.trafficPolicy", errors);
        }
        if hp.has_sidecars() && eff.as_ref().is_none_or(|t| t.tls.is_none()) {
            let auto = TrafficPolicy {
                tls: Some(ClientTlsSettings {
                    mode: Some("ISTIO_MUTUAL".into()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            c.tls = cluster_tls(
                Some(&auto),
                &svc,
                tls,
                &hp.se.info,
                "spec.endpoints",
                errors,
            );
        }
        Base {
            cluster: c,
            eff,
            rule: dr,
            pol,
        }
    }
}

/// A subset's cluster: its endpoints by label; its trafficPolicy replaces the rule's,
/// field by field (load balancer, connection pool, outlier detection, hashing, TLS).
fn subset_cluster(
    hp: &HostPort<'_>,
    dr: &Doc<DestinationRuleSpec>,
    (si, subset): (usize, &Subset),
    base: &Base<'_>,
    tls: &TlsContext,
    errors: &mut Vec<ConfigError>,
) -> ClusterSpec {
    let at = format!("spec.subsets[{si}].trafficPolicy");
    let eff = subset
        .traffic_policy
        .as_ref()
        .map(|t| at_port(t, hp.port.number));
    let lb = match lb_of(eff.as_ref()) {
        Some(s) => lb_parse(
            Some(s),
            &dr.info,
            &format!("{at}.loadBalancer.simple"),
            errors,
        ),
        None => base.cluster.lb,
    };
    let name = format!("outbound|{}|{}|{}", hp.port.number, subset.name, hp.host);
    let mut c = ClusterSpec::new(name, hp.endpoints(&subset.labels), lb, hp.proto);
    let sub = upstream_policies(eff.as_ref(), &dr.info, &at, errors);
    let has = |f: fn(&TrafficPolicy) -> bool| eff.as_ref().is_some_and(f);
    let pool = has(|t| t.connection_pool.is_some());
    c.max_requests = if pool { sub.0 } else { base.pol.0 };
    let base_conn = conn_settings(base.eff.as_ref(), c.conn, &Some(dr), errors);
    c.conn = if pool {
        conn_settings(eff.as_ref(), c.conn, &Some(dr), errors)
    } else {
        base_conn
    };
    c.outlier = if has(|t| t.outlier_detection.is_some()) {
        sub.1
    } else {
        base.pol.1
    };
    let sub_lb = eff.as_ref().filter(|t| t.load_balancer.is_some());
    c.hash = match (sub_lb, base.rule.zip(base.eff.as_ref())) {
        (Some(t), _) => hash_policy(t, &c.endpoints, &dr.info, &at, errors),
        (None, Some((d, t))) => hash_policy(t, &c.endpoints, &d.info, "spec.trafficPolicy", errors),
        (None, None) => None,
    };
    c.tls = if has(|t| t.tls.is_some()) {
        cluster_tls(eff.as_ref(), &hp.service(), tls, &dr.info, &at, errors)
    } else {
        base.cluster.tls.clone()
    };
    c
}

/// Destinations on hosts no ServiceEntry declares are reached by DNS at their port.
fn dns_destination_clusters(
    res: &Resources,
    tls: &TlsContext,
    clusters: &mut Clusters,
    errors: &mut Vec<ConfigError>,
) {
    for vs in &res.virtual_services {
        let http = vs.spec.http.iter().flat_map(|http| {
            http.route
                .iter()
                .map(|d| d.destination.clone())
                .chain(mirror_destinations(http).into_iter().map(|(d, _)| d))
        });
        let tls_routes = vs
            .spec
            .tls
            .iter()
            .flat_map(|t| t.route.iter().map(|d| d.destination.clone()));
        for d in http.chain(tls_routes) {
            if se_for(res, &d.host, &vs.info.namespace).is_some() {
                continue;
            }
            let Some(port) = &d.port else {
                continue;
            };
            let subset = d.subset.clone().unwrap_or_default();
            let name = format!("outbound|{}|{subset}|{}", port.number, d.host);
            if clusters.contains_key(&name) {
                continue;
            }
            let mut c = ClusterSpec::new(
                name.clone(),
                vec![EndpointSpec::new(
                    format!("{}:{}", d.host, port.number),
                    BTreeMap::new(),
                    1,
                )],
                LbPolicy::RoundRobin,
                UpstreamProtocol::Http1,
            );
            // A DestinationRule may still set TLS for a host reached by DNS (an external
            // https service).
            if let Some(dr) = dr_for(res, &d.host, &vs.info.namespace) {
                let tp = dr
                    .spec
                    .traffic_policy
                    .as_ref()
                    .map(|t| at_port(t, port.number));
                c.tls = cluster_tls(
                    tp.as_ref(),
                    &Service {
                        host: &d.host,
                        sans: &[],
                        h2: false,
                    },
                    tls,
                    &dr.info,
                    "spec.trafficPolicy",
                    errors,
                );
            }
            clusters.insert(name, Arc::new(c));
        }
    }
}
