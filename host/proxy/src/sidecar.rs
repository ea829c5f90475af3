//! Sidecar mode. Both capture listeners get connections redirected by iptables
//! (`lateen iptables`) and read where they were going with SO_ORIGINAL_DST.
//!
//! - Outbound (Istio's `virtualOutbound`, 15001), for connections the app made: the HTTP
//!   chain of the service's port (routing by Host, with the mesh's VirtualServices), a TCP
//!   forward to the service's cluster (with mesh mTLS when its endpoints have sidecars), or,
//!   for destinations the mesh does not know, a passthrough to the original address
//!   (Istio's `PassthroughCluster` under `ALLOW_ANY`).
//! - Inbound (`virtualInbound`, 15006), for connections to the app: mTLS is terminated with
//!   the workload's certificate (the peer must present one from the mesh CA), plain text
//!   is taken or refused per PeerAuthentication (STRICT, PERMISSIVE, DISABLE, per port),
//!   and the bytes go to the app from 127.0.0.6, which the iptables rules let through.

use crate::http::ConnInfo;
use crate::worker::WorkerCtx;
use lateen_model::sidecar::{InboundPolicy, MtlsMode, OutboundMap, Target};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How long an inbound connection may stay silent before it is taken as plain text (a
/// protocol where the server speaks first); TLS clients speak first.
const DETECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Where the proxy's connections to its own app come from (Istio's inbound passthrough
/// source), so that iptables does not redirect them again.
const INBOUND_SOURCE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 6);

/// Serves a connection on the inbound capture port.
pub async fn inbound(
    tcp: TcpStream,
    conn: ConnInfo,
    policy: Arc<InboundPolicy>,
) -> Result<(), hyper::Error> {
    let Some(dst) = original_dst(&tcp) else {
        return Ok(());
    };
    if dst == conn.local {
        conn.stats.no_filter_chain_match.inc();
        return Ok(());
    }
    let mode = policy.mode(dst.port());
    let mut first = [0u8; 1];
    let tls_first = matches!(
        tokio::time::timeout(DETECT_TIMEOUT, tcp.peek(&mut first)).await,
        Ok(Ok(1)) if first[0] == 0x16
    );
    // A ClientHello is mesh mTLS when it carries Istio's ALPN; otherwise it is the app's
    // own TLS, passed through like plain text.
    let mesh = tls_first
        && match tokio::time::timeout(Duration::from_secs(10), crate::listener::read_hello(&tcp))
            .await
        {
            Ok(Ok(hello)) => hello.is_mesh(),
            _ => {
                conn.stats.ssl_connection_error.inc();
                return Ok(());
            }
        };
    let terminate = match (mesh, mode, &policy.tls) {
        (true, MtlsMode::Disable, _) | (false, MtlsMode::Permissive | MtlsMode::Disable, _) => None,
        (true, _, Some(cfg)) => Some(cfg.clone()),
        (true, _, None) | (false, MtlsMode::Strict, _) => {
            // Envoy: no filter chain takes plain text under STRICT.
            conn.stats.no_filter_chain_match.inc();
            tracing::debug!(peer = %conn.peer, %dst, mode = mode.name(), mesh, "inbound refused");
            return Ok(());
        }
    };
    let app = match connect_app(policy.app(dst)).await {
        Ok(app) => app,
        Err(e) => {
            tracing::debug!(%dst, "inbound: the app is not reachable: {e}");
            return Ok(());
        }
    };
    let idle = Duration::from_secs(3600);
    let r = match terminate {
        None => crate::tcp::splice(tcp, app, idle).await,
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        conn.stats.ssl_connection_error.inc();
                        tracing::debug!(peer = %conn.peer, "inbound mTLS: {e}");
                        return Ok(());
                    }
                    Err(_) => return Ok(()),
                };
            conn.stats.ssl_handshake.inc();
            let info = lateen_core::tls::server::TlsInfo::of(stream.get_ref().1);
            tracing::debug!(
                peer = %conn.peer,
                principal = info.peer.as_ref().and_then(|p| p.principal()).unwrap_or("-"),
                %dst,
                "inbound mTLS"
            );
            crate::tcp::splice(stream, app, idle).await
        }
    };
    tracing::debug!(%dst, ?r, "inbound done");
    Ok(())
}

/// A connection to the app at the address the client dialled, from 127.0.0.6.
async fn connect_app(dst: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match dst {
        SocketAddr::V4(_) => {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(SocketAddr::from((INBOUND_SOURCE, 0)))?;
            s
        }
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    let s = tokio::time::timeout(Duration::from_secs(10), socket.connect(dst))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = s.set_nodelay(true);
    Ok(s)
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
        None if map.registry_only => {
            // Envoy's BlackHoleCluster: counted, then closed.
            lateen_core::stats::store()
                .cluster(BLACK_HOLE)
                .cx_total
                .inc();
            tracing::debug!(%dst, "REGISTRY_ONLY: not a mesh service; closed");
            Ok(())
        }
        None => {
            passthrough(tcp, dst).await;
            Ok(())
        }
    }
}

/// Envoy's names for the clusters of unknown destinations, so dashboards built for Istio
/// show them.
const PASSTHROUGH: &str = "PassthroughCluster";
const BLACK_HOLE: &str = "BlackHoleCluster";

/// Connects to where the app wanted to go and copies bytes both ways.
async fn passthrough(tcp: TcpStream, dst: SocketAddr) {
    let stats = lateen_core::stats::store().cluster(PASSTHROUGH);
    let up = match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(dst)).await {
        Ok(Ok(up)) => up,
        Ok(Err(e)) => {
            stats.cx_connect_fail.inc();
            return tracing::debug!(%dst, "passthrough: {e}");
        }
        Err(_) => {
            stats.cx_connect_fail.inc();
            return tracing::debug!(%dst, "passthrough: connect timed out");
        }
    };
    stats.cx_total.inc();
    let _open = stats.cx_active.track();
    let _ = up.set_nodelay(true);
    // Envoy's tcp_proxy default idle timeout.
    let r = crate::tcp::splice(tcp, up, Duration::from_secs(3600)).await;
    tracing::debug!(%dst, ?r, "passthrough done");
}
