//! TCP forwarding, as Envoy's `tcp_proxy`: TLS connections routed by SNI without being
//! terminated (Gateway `tls.mode: PASSTHROUGH` with VirtualService `tls` routes), and plain
//! TCP (Gateway `protocol: TCP` with VirtualService `tcp` routes). A forwarded connection
//! ends when either side closes, or after the cluster's idle timeout without a byte.

use crate::cluster::Cluster;
use lateen_core::tls::server::host_match;
use std::cell::Cell;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

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

/// Why a forwarded connection ended badly (logged; the client sees a closed connection,
/// as with Envoy's tcp_proxy).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no healthy upstream in {0}")]
    NoHealthyUpstream(String),
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("connecting to {0}: timed out")]
    ConnectTimeout(String),
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A stream that notes when bytes last moved through it, for the idle timeout.
struct Watched<S> {
    inner: S,
    last: Rc<Cell<Instant>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.set(Instant::now());
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies both ways until both sides are done, or until `idle` passes with no byte read
/// from either side. Also splices upgraded HTTP connections (WebSocket).
pub async fn splice<A, B>(client: A, up: B, idle: Duration) -> Result<(u64, u64), ForwardError>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let last = Rc::new(Cell::new(Instant::now()));
    let mut a = Watched {
        inner: client,
        last: last.clone(),
    };
    let mut b = Watched {
        inner: up,
        last: last.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        let deadline = last.get() + idle;
        tokio::select! {
            r = &mut copy => return Ok(r?),
            _ = tokio::time::sleep_until(deadline.into()) => {
                if last.get() + idle <= Instant::now() {
                    return Err(ForwardError::Idle(idle));
                }
            }
        }
    }
}

/// Connects to an endpoint of `cluster` and copies bytes both ways until both sides close
/// or the connection idles past the cluster's `tcp.idleTimeout`. Returns the bytes sent
/// up and down.
pub async fn forward(
    client: TcpStream,
    cluster: &Cluster,
    random: u64,
) -> Result<(u64, u64), ForwardError> {
    let up = connect(cluster, random).await?;
    let _open = cluster.stats.cx_active.track();
    let _ = client.set_nodelay(true);
    splice(client, up, idle_timeout(cluster)).await
}

/// The cluster's `tcp.idleTimeout`.
pub fn idle_timeout(cluster: &Cluster) -> Duration {
    Duration::from_millis(cluster.conn.tcp_idle_timeout_ms.max(1))
}

/// A connection to an upstream: plain TCP, or TLS when the cluster originates it
/// (DestinationRule `tls`, or mesh mTLS).
pub enum UpStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for UpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection to an endpoint of `cluster`, within its connect timeout, with the
/// cluster's TLS when it has one; counted in the cluster's stats.
pub async fn connect(cluster: &Cluster, random: u64) -> Result<UpStream, ForwardError> {
    let up = connect_tcp(cluster, random).await?;
    let Some(tls) = &cluster.tls else {
        return Ok(UpStream::Plain(up));
    };
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let timeout = Duration::from_millis(cluster.conn.connect_timeout_ms);
    match tokio::time::timeout(timeout, connector.connect(tls.server_name.clone(), up)).await {
        Ok(Ok(s)) => Ok(UpStream::Tls(Box::new(s))),
        Ok(Err(e)) => {
            cluster.stats.cx_connect_fail.inc();
            Err(ForwardError::Connect(cluster.name.clone(), e))
        }
        Err(_) => {
            cluster.stats.cx_connect_fail.inc();
            Err(ForwardError::ConnectTimeout(cluster.name.clone()))
        }
    }
}

async fn connect_tcp(cluster: &Cluster, random: u64) -> Result<TcpStream, ForwardError> {
    let ep = cluster
        .pick(random)
        .ok_or_else(|| ForwardError::NoHealthyUpstream(cluster.name.clone()))?;
    let timeout = Duration::from_millis(cluster.conn.connect_timeout_ms);
    let up = match tokio::time::timeout(timeout, TcpStream::connect(&ep.authority)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            cluster.stats.cx_connect_fail.inc();
            return Err(ForwardError::Connect(ep.authority.clone(), e));
        }
        Err(_) => {
            cluster.stats.cx_connect_fail.inc();
            return Err(ForwardError::ConnectTimeout(ep.authority.clone()));
        }
    };
    cluster.stats.cx_total.inc();
    let _ = up.set_nodelay(true);
    Ok(up)
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
