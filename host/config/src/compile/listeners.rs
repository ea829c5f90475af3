//! Gateway listeners: server TLS, SNI routes for passthrough, and TCP routes.

use super::*;

/// The TLS side of a listener from its Gateway servers: all plain HTTP (with
/// `httpsRedirect` hosts), or all TLS (HTTPS terminated, or TLS passed through). A port
/// that mixes them is an error, as in Istio.
pub(super) fn listener_tls(
    servers: &[(&Doc<GatewaySpec>, usize)],
    ctx: &TlsContext,
    errors: &mut Vec<ConfigError>,
) -> (Option<Arc<ListenerTls>>, Vec<String>) {
    let mut tls = ListenerTls::default();
    let mut redirect = Vec::new();
    let mut plain: Option<String> = None;
    // Where the port's first TLS server is, to point at when a port mixes TLS and plain.
    let mut first_tls: Option<(&Doc<GatewaySpec>, usize)> = None;
    let hosts_of = |server: &Server| -> Vec<String> {
        // `ns/host` scopes a host to a namespace's VirtualServices; SNI sees the host.
        let h: Vec<String> = server
            .hosts
            .iter()
            .map(|h| h.rsplit('/').next().unwrap_or(h).to_string())
            .collect();
        if h.is_empty() {
            vec!["*".into()]
        } else {
            h
        }
    };
    for (gw, i) in servers {
        let server = &gw.spec.servers[*i];
        let field = format!("spec.servers[{i}]");
        let proto = server.port.protocol.to_ascii_uppercase();
        let terminating = matches!(proto.as_str(), "HTTPS" | "TLS");
        let Some(t) = server.tls.as_ref().filter(|_| terminating) else {
            if terminating {
                errors.push(gw.info.error(
                    &format!("{field}.tls"),
                    format!("a {proto} server needs tls settings (mode and certificates)"),
                ));
                continue;
            }
            if let Some(t) = &server.tls {
                if t.mode.is_some() && !t.https_redirect {
                    errors.push(gw.info.error(
                        &format!("{field}.tls.mode"),
                        format!("TLS on a {proto} port; set port.protocol HTTPS to terminate TLS"),
                    ));
                }
                if t.https_redirect {
                    redirect.extend(hosts_of(server));
                }
            }
            plain = Some(gw.info.key());
            continue;
        };
        let settings = match ctx.server(t, &gw.info, &format!("{field}.tls")) {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if proto == "TLS" && settings.mode != ServerMode::Passthrough {
            errors.push(gw.info.error(
                &format!("{field}.tls.mode"),
                "a TLS port that terminates TLS forwards TCP, which needs VirtualService tcp \
                 routes (not supported yet); use PASSTHROUGH, or protocol HTTPS",
            ));
            continue;
        }
        let config = if settings.mode == ServerMode::Passthrough {
            None
        } else {
            match lateen_core::tls::server::server_config(&settings) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(gw.info.error(&format!("{field}.tls"), e.to_string()));
                    continue;
                }
            }
        };
        first_tls.get_or_insert((*gw, *i));
        tls.servers.push(TlsServer {
            hosts: hosts_of(server),
            mode: settings.mode,
            config,
        });
    }
    if let (Some(plain), Some((gw, i))) = (&plain, first_tls) {
        errors.push(gw.info.error(
            &format!("spec.servers[{i}].port.number"),
            format!(
                "port {} serves TLS here and plain HTTP in Gateway {plain}; one port speaks \
                 one of them",
                gw.spec.servers[i].port.number
            ),
        ));
    }
    let tls = (!tls.servers.is_empty()).then(|| Arc::new(tls));
    (tls, redirect)
}

/// The VirtualService `tls` routes of a listener's Gateways, in order.
pub(super) fn sni_routes(
    addr: SocketAddr,
    gws: &BTreeSet<String>,
    res: &Resources,
    errors: &mut Vec<ConfigError>,
) -> Vec<SniRoute> {
    let mut routes = Vec::new();
    for vs in &res.virtual_services {
        if !gateway_refs(vs).iter().any(|r| gws.contains(r)) {
            continue;
        }
        for (i, t) in vs.spec.tls.iter().enumerate() {
            let field = format!("spec.tls[{i}]");
            let mut hosts = Vec::new();
            for (m, mr) in t.matches.iter().enumerate() {
                if mr.port.is_some_and(|p| p != u32::from(addr.port())) {
                    continue;
                }
                let on_gw = mr.gateways.is_empty()
                    || mr
                        .gateways
                        .iter()
                        .any(|g| gws.contains(&qualify(g, &vs.info.namespace)));
                if !on_gw {
                    continue;
                }
                if mr.sni_hosts.is_empty() {
                    errors.push(vs.info.error(
                        &format!("{field}.match[{m}].sniHosts"),
                        "at least one SNI host is required",
                    ));
                }
                hosts.extend(mr.sni_hosts.iter().cloned());
            }
            if hosts.is_empty() {
                continue;
            }
            let Some(destinations) = weighted_destinations(&t.route, vs, &field, res, errors)
            else {
                continue;
            };
            routes.push(SniRoute {
                name: format!("{}#{i}", vs.info.key()),
                sni_hosts: hosts,
                destinations,
            });
        }
    }
    routes
}

/// The clusters and relative weights of a `tcp` or `tls` route; `None` (reported) when it
/// has none.
pub(super) fn weighted_destinations(
    route: &[RouteDestination],
    vs: &Doc<VirtualServiceSpec>,
    field: &str,
    res: &Resources,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<(String, u32)>> {
    let mut destinations = Vec::new();
    for (r, rd) in route.iter().enumerate() {
        match destination_cluster(&rd.destination, &vs.info.namespace, res) {
            Ok(c) => {
                let w = rd.weight.unwrap_or(if route.len() == 1 { 100 } else { 0 });
                destinations.push((c, w.clamp(0, i64::from(u32::MAX)) as u32));
            }
            Err(e) => errors.push(vs.info.error(
                &format!("{field}.route[{r}].destination.{}", e.field),
                e.message,
            )),
        }
    }
    if destinations.is_empty() {
        errors.push(vs.info.error(
            &format!("{field}.route"),
            "at least one destination is required",
        ));
        return None;
    }
    Some(destinations)
}

/// Whether a port's Gateway servers forward TCP. A port serves one protocol family: TCP
/// beside HTTP or TLS servers is an error.
pub(super) fn tcp_port(
    servers: &[(&Doc<GatewaySpec>, usize)],
    errors: &mut Vec<ConfigError>,
) -> bool {
    let is_tcp = |(gw, i): &(&Doc<GatewaySpec>, usize)| {
        gw.spec.servers[*i]
            .port
            .protocol
            .eq_ignore_ascii_case("TCP")
    };
    let tcp = servers.iter().filter(|s| is_tcp(s)).count();
    if tcp > 0 && tcp < servers.len() {
        if let Some((gw, i)) = servers.iter().find(|s| is_tcp(s)) {
            errors.push(gw.info.error(
                &format!("spec.servers[{i}].port.protocol"),
                format!(
                    "port {} forwards TCP here and serves HTTP or TLS in another server; one \
                     port speaks one protocol",
                    gw.spec.servers[*i].port.number
                ),
            ));
        }
    }
    tcp == servers.len() && tcp > 0
}

/// The VirtualService `tcp` routes of a TCP listener's Gateways, in order. A route applies
/// when one of its matches fits this port, gateway and workload (`sourceLabels`,
/// `sourceNamespace`); no matches: always. `destinationSubnets` are checked per connection.
pub(super) fn tcp_routes(
    addr: SocketAddr,
    gws: &BTreeSet<String>,
    res: &Resources,
    w: &WorkloadInfo,
    errors: &mut Vec<ConfigError>,
) -> Vec<lateen_model::listener::TcpRoute> {
    let mut routes = Vec::new();
    for vs in &res.virtual_services {
        if !gateway_refs(vs).iter().any(|r| gws.contains(r)) {
            continue;
        }
        for (i, t) in vs.spec.tcp.iter().enumerate() {
            let field = format!("spec.tcp[{i}]");
            let mut subnets = Vec::new();
            let mut applies = t.matches.is_empty();
            let mut any_address = false;
            for (m, mr) in t.matches.iter().enumerate() {
                for sn in mr
                    .destination_subnets
                    .iter()
                    .filter(|sn| !lateen_authz::config::valid_cidr(sn))
                {
                    errors.push(vs.info.error(
                        &format!("{field}.match[{m}].destinationSubnets"),
                        format!("`{sn}` is not an IP address or CIDR range"),
                    ));
                }
                let fits = mr.port.is_none_or(|p| p == u32::from(addr.port()))
                    && (mr.gateways.is_empty()
                        || mr
                            .gateways
                            .iter()
                            .any(|g| gws.contains(&qualify(g, &vs.info.namespace))))
                    && mr
                        .source_labels
                        .iter()
                        .all(|(k, v)| w.labels.get(k) == Some(v))
                    && mr
                        .source_namespace
                        .as_ref()
                        .is_none_or(|ns| w.namespaces.contains(ns));
                if !fits {
                    continue;
                }
                applies = true;
                if mr.destination_subnets.is_empty() {
                    any_address = true;
                }
                subnets.extend(mr.destination_subnets.iter().cloned());
            }
            if !applies {
                continue;
            }
            // One fitting match without subnets takes every address.
            if any_address {
                subnets.clear();
            }
            let Some(destinations) = weighted_destinations(&t.route, vs, &field, res, errors)
            else {
                continue;
            };
            routes.push(lateen_model::listener::TcpRoute {
                name: format!("{}#{i}", vs.info.key()),
                destination_subnets: subnets,
                destinations,
            });
        }
    }
    routes
}
