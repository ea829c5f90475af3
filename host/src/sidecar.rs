//! Sidecar mode's outbound capture (Istio's `virtualOutbound`, port 15001): connections the
//! app made to anywhere arrive here, redirected by iptables (`lateen iptables`). Their
//! original destination (SO_ORIGINAL_DST) picks what serves them: the HTTP chain of the
//! service's port (routing by Host, with the mesh's VirtualServices), a TCP forward to the
//! service's cluster, or, for destinations the mesh does not know, a passthrough to the
//! original address (Istio's `PassthroughCluster` under `ALLOW_ANY`).

use crate::proxy::ConnInfo;
use crate::worker::WorkerCtx;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

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

/// The destination the app dialled, before iptables redirected it here.
pub fn original_dst(tcp: &TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(tcp);
    let addr = match tcp.local_addr().ok()? {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    };
    addr.ok()?.as_socket()
}

/// Serves a connection on the outbound capture port.
pub async fn outbound(
    tcp: TcpStream,
    mut conn: ConnInfo,
    ctx: Rc<WorkerCtx>,
    stop: watch::Receiver<bool>,
    map: Arc<OutboundMap>,
) -> Result<(), hyper::Error> {
    let Some(dst) = original_dst(&tcp) else {
        tracing::debug!(peer = %conn.peer, "outbound capture: no original destination");
        return Ok(());
    };
    // Dialled the capture port itself (no redirect): forwarding would loop.
    if dst == conn.local {
        conn.stats.no_filter_chain_match.inc();
        return Ok(());
    }
    match map.lookup(dst).map(|s| s.target.clone()) {
        Some(Target::Http(listener)) => {
            conn.listener = listener;
            conn.local = dst;
            let limits = ctx.snapshot().snap.limits;
            crate::listener::serve_plain_http(tcp, conn, ctx, stop, limits).await
        }
        Some(Target::Tcp(cluster)) => {
            let cluster = ctx.snapshot().snap.cluster(&cluster).cloned();
            if let Some(cluster) = cluster {
                match crate::tcp::forward(tcp, &cluster, ctx.random()).await {
                    Ok((up, down)) => {
                        tracing::debug!(%dst, cluster = %cluster.name, up, down, "outbound tcp done")
                    }
                    Err(e) => tracing::debug!(%dst, cluster = %cluster.name, "outbound tcp: {e}"),
                }
            }
            Ok(())
        }
        None => {
            passthrough(tcp, dst).await;
            Ok(())
        }
    }
}

/// Connects to where the app wanted to go and copies bytes both ways.
async fn passthrough(tcp: TcpStream, dst: SocketAddr) {
    let up = match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(dst)).await {
        Ok(Ok(up)) => up,
        Ok(Err(e)) => return tracing::debug!(%dst, "passthrough: {e}"),
        Err(_) => return tracing::debug!(%dst, "passthrough: connect timed out"),
    };
    let _ = up.set_nodelay(true);
    // Envoy's tcp_proxy default idle timeout.
    let r = crate::tcp::splice(tcp, up, Duration::from_secs(3600)).await;
    tracing::debug!(%dst, ?r, "passthrough done");
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        let at = |s: &str| map.lookup(s.parse().unwrap()).map(|s| s.host.as_str());
        assert_eq!(at("10.96.0.10:80"), Some("web.mesh"));
        assert_eq!(at("10.1.2.3:80"), Some("web.mesh"));
        assert_eq!(at("10.96.0.20:5432"), Some("db.mesh"));
        assert_eq!(at("10.96.0.20:80"), None, "a known address on another port");
        assert_eq!(at("8.8.8.8:53"), None);
    }
}
