//! TCP forwarding, as Envoy's `tcp_proxy`: TLS connections routed by SNI without being
//! terminated (Gateway `tls.mode: PASSTHROUGH` with VirtualService `tls` routes), and plain
//! TCP (Gateway `protocol: TCP` with VirtualService `tcp` routes). A forwarded connection
//! ends when either side closes, or after the cluster's idle timeout without a byte.

use crate::cluster::Cluster;
use crate::connector::{ConnectError, UpStream};
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
    #[error(transparent)]
    Connect(#[from] ConnectError),
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

/// A connection to an endpoint of `cluster` (picked by its load balancer), with the
/// cluster's TLS when it has one.
pub async fn connect(cluster: &Cluster, random: u64) -> Result<UpStream, ForwardError> {
    let ep = cluster
        .pick(random)
        .ok_or_else(|| ForwardError::NoHealthyUpstream(cluster.name.clone()))?;
    let tls = cluster.tls.as_deref();
    Ok(crate::connector::connect(&ep.authority, &cluster.conn, tls, &cluster.stats).await?)
}
