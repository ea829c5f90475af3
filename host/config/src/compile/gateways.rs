//! Gateway listeners: one per (bind, port) across every Gateway server, with the
//! VirtualServices bound to those Gateways as its routes.

use super::*;

/// The Gateway servers at each address: the Gateways (`namespace/name`) listening there,
/// and each server by its Gateway and index.
pub(super) type Addresses<'a> = (
    BTreeMap<SocketAddr, BTreeSet<String>>,
    BTreeMap<SocketAddr, Vec<(&'a Doc<GatewaySpec>, usize)>>,
);

/// Groups every Gateway server by the address it listens on (`--bind` replaces the bind).
pub(super) fn gateway_addresses<'a>(
    res: &'a Resources,
    opts: &BuildOptions,
    errors: &mut Vec<ConfigError>,
) -> Addresses<'a> {
    let mut by_addr: BTreeMap<SocketAddr, BTreeSet<String>> = BTreeMap::new();
    let mut servers_at: BTreeMap<SocketAddr, Vec<(&Doc<GatewaySpec>, usize)>> = BTreeMap::new();
    for gw in &res.gateways {
        for (i, server) in gw.spec.servers.iter().enumerate() {
            let field = format!("spec.servers[{i}]");
            let proto = server.port.protocol.to_ascii_uppercase();
            if !matches!(
                proto.as_str(),
                "HTTP" | "HTTP2" | "GRPC" | "HTTPS" | "TLS" | "TCP" | ""
            ) {
                errors.push(gw.info.error(
                    &format!("{field}.port.protocol"),
                    format!(
                        "protocol `{}` is not supported yet; expected HTTP, HTTP2, GRPC, HTTPS, \
                         TLS or TCP",
                        server.port.protocol
                    ),
                ));
                continue;
            }
            let Ok(port) = u16::try_from(server.port.number) else {
                errors.push(
                    gw.info
                        .error(&format!("{field}.port.number"), "port must be 1-65535"),
                );
                continue;
            };
            let ip = match (&opts.bind_override, &server.bind) {
                (Some(ip), _) => *ip,
                (None, Some(b)) => match b.parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => {
                        errors.push(gw.info.error(
                            &format!("{field}.bind"),
                            format!("`{b}` is not an IP address (unix sockets are not supported)"),
                        ));
                        continue;
                    }
                },
                (None, None) => IpAddr::from([0, 0, 0, 0]),
            };
            by_addr
                .entry(SocketAddr::new(ip, port))
                .or_default()
                .insert(gw.info.key());
            servers_at
                .entry(SocketAddr::new(ip, port))
                .or_default()
                .push((gw, i));
        }
    }
    (by_addr, servers_at)
}

/// What a Gateway listener is built from besides its address.
pub(super) struct GatewayInputs<'a> {
    pub(super) res: &'a Resources,
    pub(super) clusters: &'a HashMap<String, Arc<ClusterSpec>>,
    pub(super) workload: &'a WorkloadInfo,
    pub(super) tls_ctx: &'a TlsContext,
    pub(super) chain: &'a ChainParts<'a>,
}

/// The listener at `addr`, serving the Gateways `gws` (their `servers` there): its
/// filter chain with the bound VirtualServices' routes and faults, TLS by SNI, passthrough
/// and TCP routes.
pub(super) fn gateway_listener(
    inp: &GatewayInputs<'_>,
    addr: SocketAddr,
    gws: &BTreeSet<String>,
    servers: &[(&Doc<GatewaySpec>, usize)],
    fault_filter: &mut Option<Arc<PluginSpec>>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> ListenerSpec {
    let res = inp.res;
    let mut vhosts = Vec::new();
    for vs in &res.virtual_services {
        let refs = gateway_refs(vs);
        if !refs.iter().any(|r| gws.contains(r)) {
            continue;
        }
        if let Some(vh) = virtual_host(vs, res, inp.clusters, errors, warnings) {
            vhosts.push(vh);
        }
    }
    let faults = route_faults(
        res.virtual_services
            .iter()
            .filter(|vs| gateway_refs(vs).iter().any(|r| gws.contains(r))),
        errors,
    );
    let filters = inp.chain.assemble(
        ListenerAt {
            class: lateen_model::ListenerClass::Gateway,
            port: addr.port(),
            gateways: gws,
        },
        vhosts,
        &faults,
        fault_filter,
        errors,
    );
    let (tls, https_redirect) = listener_tls(servers, inp.tls_ctx, errors);
    let sni_routes = sni_routes(addr, gws, res, errors);
    let tcp = tcp_port(servers, errors);
    let tcp_routes = if tcp {
        tcp_routes(addr, gws, res, inp.workload, errors)
    } else {
        Vec::new()
    };
    if tcp && tcp_routes.is_empty() {
        warnings.push(format!(
            "listener {addr}: TCP servers and no VirtualService tcp route; connections \
             are closed"
        ));
    }
    if tls.as_ref().is_some_and(|t| t.has_passthrough()) && sni_routes.is_empty() {
        warnings.push(format!(
            "listener {addr}: PASSTHROUGH servers and no VirtualService tls route; \
             passthrough connections are closed"
        ));
    }
    ListenerSpec {
        path: Default::default(),
        name: format!("{}_{}", addr.ip(), addr.port()),
        addr,
        filters,
        tls,
        sni_routes,
        https_redirect,
        tcp,
        tcp_routes,
        bind: true,
        capture: None,
    }
}

/// Gateways referenced by a VirtualService must exist (Istio's analyzer: IST0101); a
/// VirtualService bound to no Gateway (only `mesh`) is named in a gateway's warnings.
pub(super) fn check_gateway_refs(
    res: &Resources,
    bound_gateways: &BTreeMap<SocketAddr, BTreeSet<String>>,
    sidecar: bool,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) {
    let gateway_keys: BTreeSet<String> = res.gateways.iter().map(|g| g.info.key()).collect();
    let bound = |vs: &Doc<VirtualServiceSpec>| {
        let refs = gateway_refs(vs);
        bound_gateways
            .values()
            .any(|gws| refs.iter().any(|r| gws.contains(r)))
    };
    for vs in &res.virtual_services {
        for (i, r) in vs.spec.gateways.iter().enumerate() {
            if r == "mesh" {
                continue;
            }
            let key = qualify(r, &vs.info.namespace);
            if !gateway_keys.contains(&key) {
                errors.push(vs.info.error(
                    &format!("spec.gateways[{i}]"),
                    format!("gateway `{key}` is not defined"),
                ));
            }
        }
        if !sidecar && !bound(vs) && !vs.spec.gateways.iter().any(|g| g != "mesh") {
            warnings.push(format!(
                "{}: VirtualService binds to no gateway (only `mesh`); it applies to sidecars, \
                 not to this gateway",
                vs.info.key()
            ));
        }
    }
}
