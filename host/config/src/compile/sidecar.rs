//! Sidecar mode: the capture listeners, the Sidecar resource, PeerAuthentication and the
//! inbound policy.

use super::*;

/// Istio's outbound and inbound capture ports.
pub(super) const OUTBOUND_CAPTURE_PORT: u16 = 15001;
pub(super) const INBOUND_CAPTURE_PORT: u16 = 15006;

/// The workload's PeerAuthentication, resolved as Istio does: the mesh-wide policy (root
/// namespace, no selector), then the namespace's (no selector), then the workload's (a
/// selector that matches), each mode other than UNSET overriding the one before; port
/// modes from the workload's policy. Default PERMISSIVE.
pub(super) fn inbound_policy(
    res: &Resources,
    w: &WorkloadInfo,
    tls: &TlsContext,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> lateen_model::sidecar::InboundPolicy {
    use lateen_model::sidecar::{InboundPolicy, MtlsMode};
    let mut policy = InboundPolicy {
        mode: MtlsMode::Permissive,
        ports: BTreeMap::new(),
        tls: None,
        endpoints: BTreeMap::new(),
    };
    // Least specific first; within a level, the first resource wins (so it goes last).
    let mut applied: Vec<(u8, &Doc<PeerAuthenticationSpec>)> = res
        .peer_authentications
        .iter()
        .rev()
        .filter_map(|pa| peer_auth_level(pa, w).map(|l| (l, pa)))
        .collect();
    applied.sort_by_key(|(l, _)| *l);
    let mut strict_at: Option<(&Doc<PeerAuthenticationSpec>, String)> = None;
    for (l, pa) in &applied {
        if let Some(m) = pa.spec.mtls.as_ref() {
            if let Some(mode) = mtls_mode(pa, m, "spec.mtls.mode", errors) {
                policy.mode = mode;
                if mode == MtlsMode::Strict {
                    strict_at = Some((pa, "spec.mtls.mode".into()));
                }
            }
        }
        for (port, m) in &pa.spec.port_level_mtls {
            let at = format!("spec.portLevelMtls.{port}.mode");
            if *l < 2 {
                errors.push(pa.info.error(
                    &format!("spec.portLevelMtls.{port}"),
                    "portLevelMtls needs a selector (as in Istio)",
                ));
                continue;
            }
            let Ok(p) = port.parse::<u16>() else {
                errors.push(
                    pa.info
                        .error(&format!("spec.portLevelMtls.{port}"), "not a port number"),
                );
                continue;
            };
            if let Some(mode) = mtls_mode(pa, m, &at, errors) {
                policy.ports.insert(p, mode);
                if mode == MtlsMode::Strict {
                    strict_at = Some((pa, at));
                }
            }
        }
    }
    let problem = workload_identity(res, tls)
        .map(|cfg| policy.tls = Some(cfg))
        .err();
    match (problem, strict_at) {
        (None, _) => {}
        (Some(e), Some((pa, at))) => errors.push(pa.info.error(
            &at,
            format!("STRICT needs the workload's identity (Bootstrap identity): {e}"),
        )),
        (Some(e), None) => warnings.push(format!(
            "sidecar inbound: no workload identity ({e}); only plain text is taken"
        )),
    }
    policy
}

/// A PeerAuthentication mode; `None` for UNSET (inherit) and for an unknown one, which is
/// reported at `at`.
fn mtls_mode(
    pa: &Doc<PeerAuthenticationSpec>,
    m: &MtlsSpec,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<lateen_model::sidecar::MtlsMode> {
    use lateen_model::sidecar::MtlsMode;
    match m.mode.as_deref().unwrap_or("UNSET") {
        "UNSET" => None,
        "STRICT" => Some(MtlsMode::Strict),
        "PERMISSIVE" => Some(MtlsMode::Permissive),
        "DISABLE" => Some(MtlsMode::Disable),
        other => {
            errors.push(pa.info.error(
                at,
                format!("unknown mode `{other}`; expected UNSET, STRICT, PERMISSIVE or DISABLE"),
            ));
            None
        }
    }
}

/// How specific a PeerAuthentication is for workload `w`: 0 mesh-wide, 1 namespace,
/// 2 workload; `None` when it does not apply to `w`.
fn peer_auth_level(pa: &Doc<PeerAuthenticationSpec>, w: &WorkloadInfo) -> Option<u8> {
    if !selects(&pa.info, pa.spec.selector.as_ref(), w) {
        return None;
    }
    Some(
        match (&pa.spec.selector, pa.info.namespace == ROOT_NAMESPACE) {
            (None, true) => 0,
            (None, false) => 1,
            (Some(_), _) => 2,
        },
    )
}

/// The workload's identity (Bootstrap `identity`) as an ISTIO_MUTUAL server config.
fn workload_identity(
    res: &Resources,
    tls: &TlsContext,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let settings = ServerTlsSettings {
        mode: Some("ISTIO_MUTUAL".into()),
        ..Default::default()
    };
    let info = &res.bootstrap.as_ref().ok_or("no Bootstrap")?.info;
    let server = tls
        .server(&settings, info, "spec.identity")
        .map_err(|e| e.message)?
        .ok_or("no identity")?;
    lateen_core::tls::server::server_config(&server).map_err(|e| e.to_string())
}

/// Whether a ServiceEntry port speaks HTTP (served by the HTTP chain) rather than bytes.
pub(super) fn http_protocol(p: &ServicePort) -> bool {
    matches!(
        p.protocol
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref(),
        Some("HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB")
    )
}

/// A sidecar's outbound side: one HTTP listener (unbound) per HTTP service port, routing
/// by Host with the VirtualServices bound to `mesh` (and straight to the service
/// otherwise), and the capture listener on 15001 that hands redirected connections to
/// them, to a TCP forward, or through to where they were going.
pub(super) fn sidecar_listeners(
    res: &Resources,
    sc: Option<&Doc<SidecarSpec>>,
    clusters: &HashMap<String, Arc<ClusterSpec>>,
    chain: &ChainParts<'_>,
    fault_filter: &mut Option<Arc<PluginSpec>>,
    errors: &mut Vec<ConfigError>,
) -> Vec<ListenerSpec> {
    let mesh_vs: Vec<&Doc<VirtualServiceSpec>> = res
        .virtual_services
        .iter()
        .filter(|vs| vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh"))
        .collect();
    let (map, http) = outbound_services(res, sc, clusters);
    let mut listeners = Vec::new();
    for (port, hosts) in http {
        let (vhosts, used) = outbound_vhosts(port, &hosts, &mesh_vs, res, clusters, errors);
        let faults = route_faults(used.into_iter(), errors);
        let filters = chain.assemble(
            ListenerAt {
                class: lateen_model::ListenerClass::SidecarOutbound,
                port,
                gateways: &BTreeSet::new(),
            },
            vhosts,
            &faults,
            fault_filter,
            errors,
        );
        // Not bound: the capture listener hands it connections.
        listeners.push(ListenerSpec {
            bind: false,
            ..ListenerSpec::http(
                format!("0.0.0.0_{port}"),
                SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port),
                filters,
            )
        });
    }
    listeners.push(ListenerSpec {
        capture: Some(lateen_model::Capture::Outbound(Arc::new(map))),
        ..ListenerSpec::http(
            "virtualOutbound".into(),
            SocketAddr::new(IpAddr::from([0, 0, 0, 0]), OUTBOUND_CAPTURE_PORT),
            Vec::new(),
        )
    });
    listeners
}

/// Per HTTP port, the hosts served there and the plain IPs each is reached by.
type HttpPorts = BTreeMap<u16, Vec<(String, Vec<String>)>>;

/// Where the capture listener sends each ServiceEntry host and port the Sidecar lets out:
/// to the HTTP listener of its port, or to a TCP forward to its cluster.
fn outbound_services(
    res: &Resources,
    sc: Option<&Doc<SidecarSpec>>,
    clusters: &HashMap<String, Arc<ClusterSpec>>,
) -> (lateen_model::sidecar::OutboundMap, HttpPorts) {
    use lateen_model::sidecar::{OutboundMap, Service, Target};
    let mut map = OutboundMap {
        registry_only: sc
            .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode.as_deref())
            == Some("REGISTRY_ONLY"),
        ..OutboundMap::default()
    };
    // HTTP port → (host, the plain IPs it is reached by).
    let mut http = HttpPorts::new();
    for se in &res.service_entries {
        let mut addresses = se.spec.addresses.clone();
        addresses.extend(
            se.spec
                .endpoints
                .iter()
                .filter(|e| e.address.parse::<IpAddr>().is_ok())
                .map(|e| e.address.clone()),
        );
        for host in &se.spec.hosts {
            for port in &se.spec.ports {
                let Ok(number) = u16::try_from(port.number) else {
                    continue;
                };
                let cluster = lateen_sdk::route::outbound_cluster(port.number, "", host);
                if !clusters.contains_key(&cluster)
                    || sc.is_some_and(|sc| !egress_allows(sc, &se.info.namespace, host, number))
                {
                    continue;
                }
                let target = if http_protocol(port) {
                    let ips = addresses
                        .iter()
                        .filter(|a| a.parse::<IpAddr>().is_ok())
                        .cloned()
                        .collect();
                    http.entry(number).or_default().push((host.clone(), ips));
                    Target::Http(format!("0.0.0.0_{number}").into())
                } else {
                    Target::Tcp(cluster)
                };
                map.services.push(Service {
                    host: host.clone(),
                    port: number,
                    addresses: addresses.clone(),
                    target,
                });
            }
        }
    }
    (map, http)
}

/// The virtual hosts of one outbound HTTP port: a host's `mesh` VirtualService where there
/// is one (with the VirtualServices used, for their faults), else straight to the service.
fn outbound_vhosts<'a>(
    port: u16,
    hosts: &[(String, Vec<String>)],
    mesh_vs: &[&'a Doc<VirtualServiceSpec>],
    res: &Resources,
    clusters: &HashMap<String, Arc<ClusterSpec>>,
    errors: &mut Vec<ConfigError>,
) -> (Vec<VirtualHostConfig>, Vec<&'a Doc<VirtualServiceSpec>>) {
    let domains = |host: &str, ips: &[String]| {
        let mut d = vec![host.to_string(), format!("{host}:{port}")];
        for ip in ips {
            d.push(ip.clone());
            d.push(format!("{ip}:{port}"));
        }
        d
    };
    let mut vhosts = Vec::new();
    let mut used: Vec<&Doc<VirtualServiceSpec>> = Vec::new();
    for (host, ips) in hosts {
        let vs = mesh_vs
            .iter()
            .find(|vs| vs.spec.hosts.iter().any(|h| h == host));
        match vs {
            Some(vs) => {
                let mut warnings = Vec::new();
                if let Some(mut vh) = virtual_host(vs, res, clusters, errors, &mut warnings) {
                    vh.domains = domains(host, ips);
                    vhosts.push(vh);
                    used.push(vs);
                }
            }
            None => vhosts.push(VirtualHostConfig {
                name: format!("{host}:{port}"),
                domains: domains(host, ips),
                routes: vec![RouteConfig {
                    name: "default".into(),
                    id: format!("{host}:{port}#default"),
                    route: vec![WeightedCluster {
                        cluster: lateen_sdk::route::outbound_cluster(u32::from(port), "", host),
                        weight: 100,
                        headers: None,
                    }],
                    ..Default::default()
                }],
            }),
        }
    }
    (vhosts, used)
}

/// The Sidecar resource of this workload, as Istio picks it: one in the workload's
/// namespace whose `workloadSelector` matches, else that namespace's without a selector,
/// else the root namespace's. Fields Lateen does not act on are refused with their line.
pub(super) fn sidecar_resource<'a>(
    res: &'a Resources,
    w: &WorkloadInfo,
    errors: &mut Vec<ConfigError>,
) -> Option<&'a Doc<SidecarSpec>> {
    for sc in &res.sidecars {
        let s = &sc.spec;
        let mut refused: Vec<String> = Vec::new();
        let mut refuse = |field: String| refused.push(field);
        if s.inbound_connection_pool.is_some() {
            refuse("spec.inboundConnectionPool".into());
        }
        if s.outbound_traffic_policy
            .as_ref()
            .is_some_and(|p| p.egress_proxy.is_some())
        {
            refuse("spec.outboundTrafficPolicy.egressProxy".into());
        }
        for (i, l) in s.ingress.iter().enumerate() {
            for (set, f) in [
                (l.bind.is_some(), "bind"),
                (l.capture_mode.is_some(), "captureMode"),
                (l.tls.is_some(), "tls"),
                (l.connection_pool.is_some(), "connectionPool"),
            ] {
                if set {
                    refuse(format!("spec.ingress[{i}].{f}"));
                }
            }
        }
        for (i, l) in s.egress.iter().enumerate() {
            for (set, f) in [
                (l.bind.is_some(), "bind"),
                (l.capture_mode.is_some(), "captureMode"),
            ] {
                if set {
                    refuse(format!("spec.egress[{i}].{f}"));
                }
            }
            for (j, h) in l.hosts.iter().enumerate() {
                if !h.contains('/') {
                    errors.push(sc.info.error(
                        &format!("spec.egress[{i}].hosts[{j}]"),
                        format!("`{h}` is not `namespace/host` (`*/*`, `./*`, `ns/host`)"),
                    ));
                }
            }
        }
        for field in refused {
            errors.push(
                sc.info
                    .error(&field, "not supported yet; refused rather than ignored"),
            );
        }
        if let Some(m) = s
            .outbound_traffic_policy
            .as_ref()
            .and_then(|p| p.mode.as_deref())
        {
            if !matches!(m, "ALLOW_ANY" | "REGISTRY_ONLY") {
                errors.push(sc.info.error(
                    "spec.outboundTrafficPolicy.mode",
                    format!("unknown mode `{m}`; expected ALLOW_ANY or REGISTRY_ONLY"),
                ));
            }
        }
    }
    let in_ns = |sc: &&Doc<SidecarSpec>| w.namespaces.contains(&sc.info.namespace);
    res.sidecars
        .iter()
        .find(|sc| {
            in_ns(sc)
                && sc
                    .spec
                    .workload_selector
                    .as_ref()
                    .is_some_and(|s| s.labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
        })
        .or_else(|| {
            res.sidecars
                .iter()
                .find(|sc| in_ns(sc) && sc.spec.workload_selector.is_none())
        })
        .or_else(|| {
            res.sidecars.iter().find(|sc| {
                sc.info.namespace == ROOT_NAMESPACE && sc.spec.workload_selector.is_none()
            })
        })
}

/// Whether a Sidecar's `egress` lets the workload reach `host` (of a ServiceEntry in
/// `ns`) on `port`: `namespace/host` with `*`, `.` (the Sidecar's namespace) or a name,
/// and `*`, `*.suffix` or an exact host.
pub(super) fn egress_allows(sc: &Doc<SidecarSpec>, ns: &str, host: &str, port: u16) -> bool {
    sc.spec.egress.is_empty()
        || sc.spec.egress.iter().any(|l| {
            l.port.as_ref().is_none_or(|p| p.number == u32::from(port))
                && l.hosts.iter().any(|h| {
                    let Some((hns, hhost)) = h.split_once('/') else {
                        return false;
                    };
                    let ns_ok = match hns {
                        "*" => true,
                        "." => ns == sc.info.namespace,
                        "~" => false,
                        other => other == ns,
                    };
                    ns_ok
                        && (hhost == "*"
                            || hhost == host
                            || hhost
                                .strip_prefix('*')
                                .is_some_and(|suffix| host.ends_with(suffix)))
                })
        })
}

/// Sidecar `ingress` ports and where they go.
pub(super) fn ingress_endpoints(
    sc: &Doc<SidecarSpec>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<u16, lateen_model::sidecar::AppEndpoint> {
    use lateen_model::sidecar::AppEndpoint;
    let mut out = BTreeMap::new();
    for (i, l) in sc.spec.ingress.iter().enumerate() {
        let Ok(port) = u16::try_from(l.port.number) else {
            errors.push(sc.info.error(
                &format!("spec.ingress[{i}].port.number"),
                "port must be 1-65535",
            ));
            continue;
        };
        let target = l.port.target_port.and_then(|p| u16::try_from(p).ok());
        let endpoint = match l.default_endpoint.as_deref() {
            None => AppEndpoint::Dialled(target.unwrap_or(port)),
            Some(e) => match e.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
                Some(("127.0.0.1", Ok(p))) => AppEndpoint::Loopback(p),
                Some(("0.0.0.0", Ok(p))) => AppEndpoint::Dialled(p),
                _ => {
                    errors.push(sc.info.error(
                        &format!("spec.ingress[{i}].defaultEndpoint"),
                        format!(
                            "`{e}`: expected 127.0.0.1:PORT or 0.0.0.0:PORT (unix sockets are \
                             not supported)"
                        ),
                    ));
                    continue;
                }
            },
        };
        out.insert(port, endpoint);
    }
    out
}

/// The Bootstrap's `mode`: a sidecar, or a gateway (the default).
pub(super) fn sidecar_mode(res: &Resources, errors: &mut Vec<ConfigError>) -> bool {
    match res.bootstrap.as_ref().and_then(|b| b.spec.mode.as_deref()) {
        None | Some("gateway") => false,
        Some("sidecar") => true,
        Some(other) => {
            if let Some(b) = &res.bootstrap {
                errors.push(b.info.error(
                    "spec.mode",
                    format!("unknown mode `{other}`; expected gateway or sidecar"),
                ));
            }
            false
        }
    }
}

/// A sidecar enforces AuthorizationPolicy and RequestAuthentication on its inbound HTTP
/// chain, which it does not have yet (inbound is forwarded as TCP): refused rather than
/// left unenforced, and kept out of the outbound chains, where Istio never runs them.
pub(super) fn refuse_inbound_policies(
    res: &Resources,
    authz: bool,
    jwt: bool,
    errors: &mut Vec<ConfigError>,
) {
    for (selected, kind, info) in [
        (
            authz,
            "AuthorizationPolicy",
            res.authorization_policies.first().map(|d| &d.info),
        ),
        (
            jwt,
            "RequestAuthentication",
            res.request_authentications.first().map(|d| &d.info),
        ),
    ] {
        if let (true, Some(info)) = (selected, info) {
            errors.push(info.error(
                "kind",
                format!(
                    "{kind} on a sidecar is enforced on inbound HTTP, which Lateen's sidecar \
                     forwards as TCP for now; refused rather than left unenforced"
                ),
            ));
        }
    }
}

/// A sidecar's listeners: the outbound ones (by the Sidecar resource `sc`, or every
/// service) and the inbound capture, with its PeerAuthentication policy and ports.
pub(super) fn sidecar_side(
    inp: &super::gateways::GatewayInputs<'_>,
    sc: Option<&Doc<SidecarSpec>>,
    path: lateen_core::path::PathNormalization,
    fault_filter: &mut Option<Arc<PluginSpec>>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Vec<ListenerSpec> {
    let res = inp.res;
    let mut listeners: Vec<ListenerSpec> =
        sidecar_listeners(res, sc, inp.clusters, inp.chain, fault_filter, errors)
            .into_iter()
            .map(|l| ListenerSpec { path, ..l })
            .collect();
    let mut policy = inbound_policy(res, inp.workload, inp.tls_ctx, errors, warnings);
    if let Some(sc) = sc {
        policy.endpoints = ingress_endpoints(sc, errors);
    }
    listeners.push(ListenerSpec {
        path,
        capture: Some(lateen_model::Capture::Inbound(Arc::new(policy))),
        ..ListenerSpec::http(
            "virtualInbound".into(),
            SocketAddr::new(IpAddr::from([0, 0, 0, 0]), INBOUND_CAPTURE_PORT),
            Vec::new(),
        )
    });
    listeners
}
