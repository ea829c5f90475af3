//! Cluster and ClusterLoadAssignment (EDS): load balancing, circuit breakers, outlier
//! detection, upstream TLS and protocol; endpoints with their weights and locality.

use super::*;

/// CDS.
pub fn cluster(any: &Any) -> Result<XdsCluster, String> {
    let mut c: Cluster = unpack(any)?;
    let at = format!("Cluster `{}`", c.name);
    only!(
        &mut c,
        at,
        [
            name,
            alt_stat_name,
            cluster_discovery_type,
            eds_cluster_config,
            connect_timeout,
            lb_policy,
            load_assignment,
            circuit_breakers,
            max_requests_per_connection,
            http2_protocol_options,
            dns_lookup_family,
            dns_refresh_rate,
            respect_dns_ttl,
        ]
    );
    let kind = match &c.cluster_discovery_type {
        None => cluster::DiscoveryType::Static,
        Some(cluster::ClusterDiscoveryType::Type(t)) => cluster::DiscoveryType::try_from(*t)
            .map_err(|_| format!("{at}: type: unknown discovery type {t}"))?,
        Some(_) => {
            return Err(format!(
                "{at}: cluster_type: custom cluster types are not supported"
            ))
        }
    };
    let endpoints = match kind {
        cluster::DiscoveryType::Eds => {
            let eds = c.eds_cluster_config.clone().unwrap_or_default();
            ads_or_unset(
                eds.eds_config.as_ref(),
                &format!("{at}: eds_cluster_config.eds_config"),
            )?;
            ClusterEndpoints::Eds(if eds.service_name.is_empty() {
                c.name.clone()
            } else {
                eds.service_name
            })
        }
        cluster::DiscoveryType::Static
        | cluster::DiscoveryType::StrictDns
        | cluster::DiscoveryType::LogicalDns => {
            let la = c
                .load_assignment
                .as_mut()
                .ok_or_else(|| format!("{at}: load_assignment: required for a {kind:?} cluster"))?;
            ClusterEndpoints::Static(Arc::new(
                endpoints_of(la).map_err(|e| format!("{at}: load_assignment{e}"))?,
            ))
        }
        other => return Err(format!("{at}: type: {other:?} clusters are not supported")),
    };
    let lb = match cluster::LbPolicy::try_from(c.lb_policy) {
        Ok(cluster::LbPolicy::RoundRobin) => LbPolicy::RoundRobin,
        Ok(cluster::LbPolicy::LeastRequest) => LbPolicy::LeastRequest,
        Ok(cluster::LbPolicy::Random) => LbPolicy::Random,
        _ => {
            return Err(format!(
                "{at}: lb_policy: only ROUND_ROBIN, LEAST_REQUEST and RANDOM are supported"
            ))
        }
    };
    // Envoy's circuit-breaker defaults for the default priority.
    let (mut max_requests, mut max_connections) = (1024u64, 1024u32);
    if let Some(cb) = &mut c.circuit_breakers {
        only!(cb, format!("{at}: circuit_breakers"), [thresholds]);
        for (i, t) in cb.thresholds.iter_mut().enumerate() {
            let tat = format!("{at}: circuit_breakers.thresholds[{i}]");
            only!(
                t,
                tat,
                [
                    priority,
                    max_connections,
                    max_requests,
                    max_pending_requests,
                    max_retries
                ]
            );
            if t.priority != 0 {
                continue; // HIGH priority: Lateen has no route priorities, so it never applies.
            }
            if let Some(v) = &t.max_requests {
                max_requests = u64::from(v.value);
            }
            if let Some(v) = &t.max_connections {
                max_connections = v.value;
            }
        }
    }
    Ok(XdsCluster {
        name: c.name.clone(),
        lb,
        connect_timeout_ms: c.connect_timeout.as_ref().map_or(5000, duration_ms),
        http2: c.http2_protocol_options.is_some(),
        max_requests,
        max_connections,
        max_requests_per_connection: c
            .max_requests_per_connection
            .as_ref()
            .map_or(0, |v| v.value),
        endpoints,
    })
}

/// EDS: `(service name, endpoints)`.
pub fn load_assignment(any: &Any) -> Result<(String, Vec<XdsEndpoint>), String> {
    let mut la: ClusterLoadAssignment = unpack(any)?;
    let eps = endpoints_of(&mut la)
        .map_err(|e| format!("ClusterLoadAssignment `{}`{e}", la.cluster_name))?;
    Ok((la.cluster_name, eps))
}

pub(crate) fn endpoints_of(la: &mut ClusterLoadAssignment) -> Result<Vec<XdsEndpoint>, String> {
    only!(la, "", [cluster_name, endpoints, policy]);
    let mut out = Vec::new();
    for (li, loc) in la.endpoints.iter_mut().enumerate() {
        let at = format!(".endpoints[{li}]");
        only!(
            loc,
            at,
            [locality, lb_endpoints, load_balancing_weight, priority]
        );
        if loc.priority != 0 {
            return Err(format!(
                "{at}.priority: {}: priority failover is not supported by Lateen",
                loc.priority
            ));
        }
        for (ei, lbe) in loc.lb_endpoints.iter_mut().enumerate() {
            let eat = format!("{at}.lb_endpoints[{ei}]");
            only!(
                lbe,
                eat,
                [host_identifier, health_status, load_balancing_weight]
            );
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &mut lbe.host_identifier else {
                return Err(format!("{eat}: expected an endpoint"));
            };
            only!(ep, format!("{eat}.endpoint"), [address, hostname]);
            let (host, port) =
                socket_addr(ep.address.as_mut(), &format!("{eat}.endpoint.address"))?;
            let authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let healthy = matches!(
                HealthStatus::try_from(lbe.health_status),
                Ok(HealthStatus::Unknown | HealthStatus::Healthy)
            );
            out.push(XdsEndpoint {
                authority,
                weight: lbe
                    .load_balancing_weight
                    .as_ref()
                    .map_or(1, |w| w.value.max(1)),
                healthy,
            });
        }
    }
    Ok(out)
}
