//! The upstream connector: hyper-util's `HttpConnector`, TLS on top when the cluster's
//! DestinationRule asks for it, and a per-connection request counter, so that
//! `maxRequestsPerConnection` can retire a connection from the pool.

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{
    capture_connection, CaptureConnection, Connected, Connection, HttpConnector,
};
use hyper_util::rt::TokioIo;
use lateen_core::stats::{ClusterStats, GaugeGuard};
use lateen_core::tls::client::UpstreamTls;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

/// Requests sent on one connection so far; travels in the connection's metadata.
#[derive(Clone, Default)]
struct Uses(Arc<AtomicU32>);

/// An `HttpConnector` whose connections count their requests and feed their cluster's
/// connection stats.
#[derive(Clone)]
pub struct Connector {
    pub inner: HttpConnector,
    pub stats: Arc<ClusterStats>,
    pub tls: Option<Arc<UpstreamTls>>,
}

type ConnectFuture = Pin<
    Box<dyn Future<Output = Result<CountedIo, Box<dyn std::error::Error + Send + Sync>>> + Send>,
>;

impl tower_service::Service<Uri> for Connector {
    type Response = CountedIo;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let stats = self.stats.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let io = match connecting.await {
                Ok(io) => io,
                Err(e) => {
                    stats.cx_connect_fail.inc();
                    return Err(e.into());
                }
            };
            let io = match tls {
                None => Io::Plain(io),
                Some(tls) => {
                    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                    match connector
                        .connect(tls.server_name.clone(), io.into_inner())
                        .await
                    {
                        Ok(s) => Io::Tls(Box::new(TokioIo::new(s))),
                        Err(e) => {
                            // A failed handshake is a connect failure, as Envoy counts it.
                            stats.cx_connect_fail.inc();
                            return Err(format!("upstream TLS: {e}").into());
                        }
                    }
                }
            };
            stats.cx_total.inc();
            Ok(CountedIo {
                io,
                uses: Uses::default(),
                _open: stats.cx_active.track(),
            })
        })
    }
}

/// A plain or TLS upstream connection.
enum Io {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

/// A connection with its request counter.
pub struct CountedIo {
    io: Io,
    uses: Uses,
    /// Counts the connection in `upstream_cx_active` while it lives.
    _open: GaugeGuard,
}

impl Connection for CountedIo {
    fn connected(&self) -> Connected {
        let c = match &self.io {
            Io::Plain(io) => io.connected(),
            Io::Tls(io) => {
                let (tcp, session) = io.inner().get_ref();
                let c = tcp.connected();
                if session.alpn_protocol() == Some(b"h2") {
                    c.negotiated_h2()
                } else {
                    c
                }
            }
        };
        c.extra(self.uses.clone())
    }
}

/// Forwards to the plain or TLS stream.
macro_rules! each_io {
    ($self:ident, $io:ident => $e:expr) => {
        match &mut $self.io {
            Io::Plain($io) => $e,
            Io::Tls(boxed) => {
                let $io = &mut **boxed;
                $e
            }
        }
    };
}

impl Read for CountedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        each_io!(self, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl Write for CountedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each_io!(self, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_io!(self, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_io!(self, io => Pin::new(io).poll_shutdown(cx))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each_io!(self, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }
}

/// Watches which pooled connection a request goes out on, when the cluster limits
/// requests per connection.
pub struct PerConnectionLimit {
    capture: CaptureConnection,
    max: u32,
}

impl PerConnectionLimit {
    /// `None` when the limit is off (0), so unlimited clusters pay nothing.
    pub fn watch<B>(req: &mut http::Request<B>, max: u32) -> Option<Self> {
        (max > 0).then(|| PerConnectionLimit {
            capture: capture_connection(req),
            max,
        })
    }

    /// Counts the request against its connection and poisons the connection (the pool
    /// then closes it instead of reusing it) once it has carried `max` requests.
    pub fn count(&self) {
        let meta = self.capture.connection_metadata();
        let Some(connected) = meta.as_ref() else {
            return;
        };
        let mut ext = http::Extensions::new();
        connected.get_extras(&mut ext);
        if let Some(uses) = ext.get::<Uses>() {
            if uses.0.fetch_add(1, Ordering::Relaxed) + 1 >= self.max {
                connected.poison();
            }
        }
    }
}

/// A connector for http:// and https:// with the system's trust roots (or the bundle named
/// by SSL_CERT_FILE); without roots, the reason, and https:// then fails.
pub fn https_connector() -> (
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Option<String>,
) {
    let (tls, no_roots) = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => (b, None),
        Err(e) => {
            let empty = rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            (
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(empty),
                Some(e.to_string()),
            )
        }
    };
    (
        tls.https_or_http().enable_http1().enable_http2().build(),
        no_roots,
    )
}
