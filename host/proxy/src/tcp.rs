//! TCP forwarding, as Envoy's `tcp_proxy`: TLS connections routed by SNI without being
//! terminated (Gateway `tls.mode: PASSTHROUGH` with VirtualService `tls` routes), and plain
//! TCP (Gateway `protocol: TCP` with VirtualService `tcp` routes). A forwarded connection
//! ends when either side closes, or after the cluster's idle timeout without a byte.

use crate::cluster::Cluster;
use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

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
