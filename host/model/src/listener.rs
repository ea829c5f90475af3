//! Listeners as the snapshot holds them: the address, the filter chain, TLS servers by
//! SNI, TCP and SNI routes, and what a sidecar's capture listeners do.

use crate::plugin::FilterSpec;
use lateen_core::tls::server::host_match;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A listener: HTTP, or TLS (terminated to HTTP, or passed through by SNI).
pub struct ListenerSpec {
    /// Envoy-style `ADDRESS_PORT`.
    pub name: String,
    pub addr: SocketAddr,
    pub filters: Vec<FilterSpec>,
    /// The servers of a TLS port, chosen by SNI; `None` for plain HTTP.
    pub tls: Option<Arc<lateen_core::tls::server::ListenerTls>>,
    /// VirtualService `tls` routes for the PASSTHROUGH servers.
    pub sni_routes: Vec<SniRoute>,
    /// Host patterns whose plain-HTTP requests get a 301 to https (Gateway `httpsRedirect`).
    pub https_redirect: Vec<String>,
    /// The port forwards TCP (Gateway servers with `protocol: TCP`) by `tcp_routes`.
    pub tcp: bool,
    pub tcp_routes: Vec<TcpRoute>,
    /// How request paths are normalized before its filters see them.
    pub path: lateen_core::path::PathNormalization,
    /// Whether a socket is bound for it. A sidecar's per-port HTTP listeners are not:
    /// the capture listener hands them connections.
    pub bind: bool,
    /// A sidecar's capture listener.
    pub capture: Option<Capture>,
}

/// What a sidecar's capture listener does with a redirected connection.
#[derive(Debug, Clone)]
pub enum Capture {
    /// Port 15001: by its original destination (`sidecar::OutboundMap`).
    Outbound(Arc<crate::sidecar::OutboundMap>),
    /// Port 15006: mTLS per PeerAuthentication, then to the app.
    Inbound(Arc<crate::sidecar::InboundPolicy>),
}

impl ListenerSpec {
    /// A bound plain-HTTP listener: no TLS, no TCP routes, no capture, default path
    /// normalization. Other kinds set their fields over it.
    pub fn http(name: String, addr: SocketAddr, filters: Vec<FilterSpec>) -> Self {
        ListenerSpec {
            name,
            addr,
            filters,
            tls: None,
            sni_routes: Vec::new(),
            https_redirect: Vec::new(),
            tcp: false,
            tcp_routes: Vec::new(),
            path: Default::default(),
            bind: true,
            capture: None,
        }
    }

    /// Whether a plain-HTTP request for `host` (the `:authority`, port included or not)
    /// must be redirected to https.
    pub fn redirects(&self, host: &str) -> bool {
        let name = lateen_sdk::matcher::strip_port(host);
        self.https_redirect
            .iter()
            .any(|p| lateen_core::tls::server::host_match(p, name).is_some())
    }
}

/// A VirtualService `tls` route on one listener: the SNI names it takes and its weighted
/// clusters.
#[derive(Debug, Clone)]
pub struct SniRoute {
    /// Where it came from (`ns/name#index`), for logs and the admin API.
    pub name: String,
    pub sni_hosts: Vec<String>,
    /// `outbound|PORT|SUBSET|HOST` and weight.
    pub destinations: Vec<(String, u32)>,
}

/// The first route with a matching SNI host (Istio: first match wins).
pub fn select<'a>(routes: &'a [SniRoute], sni: &str) -> Option<&'a SniRoute> {
    routes
        .iter()
        .find(|r| r.sni_hosts.iter().any(|h| host_match(h, sni).is_some()))
}

impl SniRoute {
    /// A destination cluster by relative weight.
    pub fn pick(&self, random: u64) -> Option<&str> {
        pick(&self.destinations, random)
    }
}

/// A VirtualService `tcp` route on one listener (its `port` and `gateways` matched when
/// the config was built).
#[derive(Debug, Clone)]
pub struct TcpRoute {
    pub name: String,
    /// `destinationSubnets` of its matches, any of which must hold the address the
    /// connection came to; empty: any address.
    pub destination_subnets: Vec<String>,
    pub destinations: Vec<(String, u32)>,
}

impl TcpRoute {
    pub fn pick(&self, random: u64) -> Option<&str> {
        pick(&self.destinations, random)
    }
}

/// The first `tcp` route that takes a connection to `local` (Istio: first match wins).
pub fn select_tcp(routes: &[TcpRoute], local: IpAddr) -> Option<&TcpRoute> {
    routes.iter().find(|r| {
        r.destination_subnets.is_empty()
            || r.destination_subnets
                .iter()
                .any(|s| lateen_authz::config::cidr_contains(s, local))
    })
}

/// A destination cluster by relative weight; with all weights 0, the first.
fn pick(destinations: &[(String, u32)], random: u64) -> Option<&str> {
    let total: u64 = destinations.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return destinations.first().map(|(c, _)| c.as_str());
    }
    let mut r = random % total;
    for (c, w) in destinations {
        if r < u64::from(*w) {
            return Some(c);
        }
        r -= u64::from(*w);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_route_and_weights() {
        let routes = vec![
            SniRoute {
                name: "a".into(),
                sni_hosts: vec!["api.example.com".into()],
                destinations: vec![("one".into(), 90), ("two".into(), 10)],
            },
            SniRoute {
                name: "b".into(),
                sni_hosts: vec!["*.example.com".into()],
                destinations: vec![("three".into(), 0)],
            },
        ];
        assert_eq!(select(&routes, "api.example.com").unwrap().name, "a");
        assert_eq!(select(&routes, "www.example.com").unwrap().name, "b");
        assert!(select(&routes, "other.test").is_none());
        let a = &routes[0];
        let picks: Vec<_> = (0..100).map(|r| a.pick(r).unwrap()).collect();
        assert_eq!(picks.iter().filter(|c| **c == "one").count(), 90);
        assert_eq!(routes[1].pick(7), Some("three"));
    }

    #[test]
    fn tcp_routes_by_destination_subnet() {
        let route = |name: &str, subnets: &[&str]| TcpRoute {
            name: name.into(),
            destination_subnets: subnets.iter().map(|s| s.to_string()).collect(),
            destinations: vec![(name.into(), 1)],
        };
        let routes = vec![
            route("private", &["10.0.0.0/8", "192.168.1.7"]),
            route("any", &[]),
        ];
        let at = |ip: &str| select_tcp(&routes, ip.parse().unwrap()).map(|r| r.name.as_str());
        assert_eq!(at("10.1.2.3"), Some("private"));
        assert_eq!(at("192.168.1.7"), Some("private"));
        assert_eq!(at("127.0.0.1"), Some("any"));
        assert_eq!(
            select_tcp(&routes[..1], "127.0.0.1".parse().unwrap()).map(|r| &r.name),
            None
        );
    }
}
