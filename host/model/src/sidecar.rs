//! What a sidecar's capture listeners do, as the snapshot holds it: the services the app
//! may reach (outbound, 15001) and the workload's PeerAuthentication (inbound, 15006).

use std::net::SocketAddr;
use std::sync::Arc;

/// What serves a service port.
#[derive(Debug, Clone)]
pub enum Target {
    /// The (unbound) HTTP listener of that port, by name.
    Http(Arc<str>),
    /// A TCP forward to this cluster.
    Tcp(String),
}

/// One port of one ServiceEntry host, and the addresses the app may reach it by.
#[derive(Debug, Clone)]
pub struct Service {
    pub host: String,
    pub port: u16,
    /// ServiceEntry `addresses` (VIPs, CIDRs) and its endpoints' addresses.
    pub addresses: Vec<String>,
    pub target: Target,
}

/// Original destinations to services.
#[derive(Debug, Clone, Default)]
pub struct OutboundMap {
    pub services: Vec<Service>,
    /// Sidecar `outboundTrafficPolicy: REGISTRY_ONLY`: destinations the mesh does not know
    /// are closed (Istio's BlackHoleCluster) instead of passed through.
    pub registry_only: bool,
}

impl OutboundMap {
    /// The service the app meant, if the mesh knows it.
    pub fn lookup(&self, dst: SocketAddr) -> Option<&Service> {
        self.services.iter().find(|s| {
            s.port == dst.port()
                && s.addresses
                    .iter()
                    .any(|a| lateen_authz::config::cidr_contains(a, dst.ip()))
        })
    }
}

/// PeerAuthentication's mTLS mode for a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtlsMode {
    /// mTLS only; plain text is refused.
    Strict,
    /// mTLS or plain text (Istio's default).
    Permissive,
    /// Plain text only: TLS is passed to the app as it is.
    Disable,
}

impl MtlsMode {
    pub fn name(self) -> &'static str {
        match self {
            MtlsMode::Strict => "STRICT",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Disable => "DISABLE",
        }
    }
}

/// What the inbound capture does, from the workload's PeerAuthentication.
#[derive(Debug, Clone)]
pub struct InboundPolicy {
    pub mode: MtlsMode,
    pub ports: std::collections::BTreeMap<u16, MtlsMode>,
    /// The workload's certificate and the mesh roots it checks peers against; `None`
    /// without an identity (then only plain text is taken).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Sidecar `ingress` ports whose `defaultEndpoint` sends them elsewhere.
    pub endpoints: std::collections::BTreeMap<u16, AppEndpoint>,
}

/// Where an inbound port goes (Sidecar `ingress[].defaultEndpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEndpoint {
    /// `127.0.0.1:PORT`.
    Loopback(u16),
    /// `0.0.0.0:PORT`: the address the client dialled, on this port.
    Dialled(u16),
}

impl InboundPolicy {
    pub fn mode(&self, port: u16) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.mode)
    }

    /// The app's address for a connection the client dialled to `dst`.
    pub fn app(&self, dst: SocketAddr) -> SocketAddr {
        match self.endpoints.get(&dst.port()) {
            Some(AppEndpoint::Loopback(p)) => SocketAddr::from(([127, 0, 0, 1], *p)),
            Some(AppEndpoint::Dialled(p)) => SocketAddr::new(dst.ip(), *p),
            None => dst,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_level_modes_override_the_workload_mode() {
        let p = InboundPolicy {
            mode: MtlsMode::Strict,
            ports: [(8080, MtlsMode::Disable)].into_iter().collect(),
            tls: None,
            endpoints: [
                (7070, AppEndpoint::Dialled(8080)),
                (9000, AppEndpoint::Loopback(9001)),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(p.mode(8080), MtlsMode::Disable);
        assert_eq!(p.mode(9090), MtlsMode::Strict);
        let at = |s: &str| p.app(s.parse().unwrap()).to_string();
        assert_eq!(at("10.0.0.5:7070"), "10.0.0.5:8080");
        assert_eq!(at("10.0.0.5:9000"), "127.0.0.1:9001");
        assert_eq!(at("10.0.0.5:80"), "10.0.0.5:80");
    }

    #[test]
    fn original_destinations_find_their_service() {
        let map = OutboundMap {
            services: vec![
                Service {
                    host: "web.mesh".into(),
                    port: 80,
                    addresses: vec!["10.96.0.10".into(), "10.1.0.0/16".into()],
                    target: Target::Http("0.0.0.0_80".into()),
                },
                Service {
                    host: "db.mesh".into(),
                    port: 5432,
                    addresses: vec!["10.96.0.20".into()],
                    target: Target::Tcp("outbound|5432||db.mesh".into()),
                },
            ],
            registry_only: false,
        };
        let at = |s: &str| map.lookup(s.parse().unwrap()).map(|s| s.host.as_str());
        assert_eq!(at("10.96.0.10:80"), Some("web.mesh"));
        assert_eq!(at("10.1.2.3:80"), Some("web.mesh"));
        assert_eq!(at("10.96.0.20:5432"), Some("db.mesh"));
        assert_eq!(at("10.96.0.20:80"), None, "a known address on another port");
        assert_eq!(at("8.8.8.8:53"), None);
    }
}
