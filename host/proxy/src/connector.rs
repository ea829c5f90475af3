//! Upstream connections: TCP within the cluster's connect timeout, then TLS when its
//! DestinationRule (or mesh mTLS) asks for it, counted in the cluster's stats. The HTTP
//! pools ([`crate::upstream`]) and TCP forwarding ([`crate::tcp`]) both connect here. Also
//! the https client of the control-plane side (plugin fetches, trace export).

use lateen_core::stats::ClusterStats;
use lateen_core::tls::client::UpstreamTls;
use lateen_model::cluster::ConnSettings;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Why a connection to an endpoint could not be made (Envoy counts each as
/// `upstream_cx_connect_fail`).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("connecting to {0}: timed out")]
    Timeout(String),
    #[error("TLS handshake with {0}: {1}")]
    Tls(String, #[source] std::io::Error),
}

/// A connection to an upstream: plain TCP, or TLS when the cluster originates it.
pub enum UpStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connects to `authority` (an IP or a name, with its port), TCP and TLS both within the
/// connect timeout. Counts `upstream_cx_total` on success and `upstream_cx_connect_fail`
/// on any failure; the caller holds `upstream_cx_active` while the connection lives.
pub async fn connect(
    authority: &str,
    settings: &ConnSettings,
    tls: Option<&UpstreamTls>,
    stats: &ClusterStats,
) -> Result<UpStream, ConnectError> {
    let timeout = Duration::from_millis(settings.connect_timeout_ms);
    let r = match tokio::time::timeout(timeout, connect_inner(authority, tls)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout(authority.to_string())),
    };
    match &r {
        Ok(_) => stats.cx_total.inc(),
        Err(_) => stats.cx_connect_fail.inc(),
    }
    r
}

async fn connect_inner(
    authority: &str,
    tls: Option<&UpstreamTls>,
) -> Result<UpStream, ConnectError> {
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| ConnectError::Io(authority.to_string(), e))?;
    // Requests are small writes that must leave at once.
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(UpStream::Plain(tcp));
    };
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    match connector.connect(tls.server_name.clone(), tcp).await {
        Ok(s) => Ok(UpStream::Tls(Box::new(s))),
        Err(e) => Err(ConnectError::Tls(authority.to_string(), e)),
    }
}

/// Forwards to the plain or TLS stream.
macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            UpStream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            UpStream::Tls(boxed) => {
                let $s = Pin::new(boxed.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for UpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        each!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for UpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        each!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        each!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpStream::Plain(s) => s.is_write_vectored(),
            UpStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, s => s.poll_shutdown(cx))
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
