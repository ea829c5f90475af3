//! Accepted connections: on a TLS port, the handshake (the server picked by SNI) or a
//! passthrough by SNI; then the HTTP version from ALPN, or on a plain port from the first
//! bytes (HTTP/2 prior knowledge or HTTP/1.1); then the connection is served until it ends
//! or the proxy drains.
//!
//! Sniffing here, rather than with hyper-util's `auto` connection, keeps an idle HTTP/1.1
//! connection small: `auto` holds room for an HTTP/2 connection state in every connection.

use crate::http::{self, ConnInfo};
use crate::worker::WorkerCtx;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use lateen_core::tls::server::{ListenerTls, ServerMode};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client opened with the HTTP/2 preface. Peeks, so nothing is consumed. An
/// HTTP/1.1 request differs from the preface by its second byte at the latest.
pub async fn sniff_h2(tcp: &TcpStream) -> bool {
    let mut buf = [0u8; PREFACE.len()];
    for _ in 0..100 {
        match tcp.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) if buf[..n] != PREFACE[..n] => return false,
            Ok(n) if n == PREFACE.len() => return true,
            // A preface split across packets: wait for the rest.
            Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    false
}

/// Executes HTTP/2 stream tasks on the worker's local set.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F: std::future::Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Serves one accepted connection; on shutdown, finishes the request in flight and closes.
pub async fn serve(
    tcp: TcpStream,
    conn: ConnInfo,
    ctx: Rc<WorkerCtx>,
    stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error> {
    let (limits, tls, forwards_tcp, capture) = {
        let ws = ctx.snapshot();
        let l = ws.snap.listener(&conn.listener);
        let tls = l.and_then(|l| l.tls.clone());
        let capture = l.and_then(|l| l.capture.clone());
        (ws.snap.limits, tls, l.is_some_and(|l| l.tcp), capture)
    };
    match capture {
        Some(lateen_model::Capture::Outbound(map)) => {
            return Box::pin(crate::sidecar::outbound(tcp, conn, ctx, stop, map)).await;
        }
        Some(lateen_model::Capture::Inbound(policy)) => {
            return Box::pin(crate::sidecar::inbound(tcp, conn, policy)).await;
        }
        None => {}
    }
    if forwards_tcp {
        tcp_proxy(tcp, &conn, &ctx).await;
        return Ok(());
    }
    if let Some(tls) = tls {
        return Box::pin(serve_tls(tcp, conn, ctx, stop, tls, limits)).await;
    }
    serve_plain_http(tcp, conn, ctx, stop, limits).await
}

/// Serves plain HTTP: HTTP/2 with prior knowledge, or HTTP/1.1.
pub async fn serve_plain_http(
    tcp: TcpStream,
    mut conn: ConnInfo,
    ctx: Rc<WorkerCtx>,
    stop: watch::Receiver<bool>,
    limits: lateen_model::Limits,
) -> Result<(), hyper::Error> {
    // A client that never finishes its preface is cut off like one that never finishes
    // its headers.
    let h2 = match tokio::time::timeout(limits.request_headers_timeout, sniff_h2(&tcp)).await {
        Ok(h2) => h2,
        Err(_) => return Ok(()),
    };
    if h2 {
        conn.protocol = "HTTP/2";
        // Boxed, so that HTTP/1.1 connections do not carry an HTTP/2 state's room.
        return Box::pin(serve_h2(
            TokioIo::new(tcp),
            Rc::new(conn),
            ctx,
            stop,
            limits,
        ))
        .await;
    }
    serve_h1(tcp, conn, ctx, stop, limits).await
}

/// Reads the ClientHello (SNI, ALPN) without consuming it, so that a passthrough
/// connection can be forwarded byte for byte; an error when it is not TLS.
pub async fn read_hello(tcp: &TcpStream) -> Result<lateen_core::tls::server::Hello, String> {
    // A ClientHello fits one TLS record (16 KiB) in practice.
    let mut buf = vec![0u8; 16 * 1024 + 5];
    let mut last = 0;
    loop {
        let n = tcp.peek(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the ClientHello".into());
        }
        if n > last {
            last = n;
            if let Some(hello) = lateen_core::tls::server::peek_hello(&buf[..n])? {
                return Ok(hello);
            }
            if n == buf.len() {
                return Err("ClientHello larger than 16 KiB".into());
            }
        }
        // The rest of the hello is still on its way.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A TLS port: PASSTHROUGH servers forward by SNI; the others terminate TLS and serve
/// HTTP/2 or HTTP/1.1 as ALPN chose.
async fn serve_tls(
    tcp: TcpStream,
    mut conn: ConnInfo,
    ctx: Rc<WorkerCtx>,
    stop: watch::Receiver<bool>,
    tls: Arc<ListenerTls>,
    limits: lateen_model::Limits,
) -> Result<(), hyper::Error> {
    let deadline = limits.request_headers_timeout;
    let stats = conn.stats.clone();
    if tls.has_passthrough() {
        let sni = match tokio::time::timeout(deadline, read_hello(&tcp)).await {
            Ok(Ok(hello)) => hello.sni,
            Ok(Err(e)) => {
                stats.ssl_connection_error.inc();
                tracing::debug!(peer = %conn.peer, "not a TLS ClientHello: {e}");
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        if tls.select(sni.as_deref()).map(|s| s.mode) == Some(ServerMode::Passthrough) {
            passthrough(tcp, sni, &conn, &ctx).await;
            return Ok(());
        }
    }
    let start = match tokio::time::timeout(
        deadline,
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp),
    )
    .await
    {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            stats.ssl_connection_error.inc();
            tracing::debug!(peer = %conn.peer, "TLS: {e}");
            return Ok(());
        }
        Err(_) => return Ok(()),
    };
    let sni = start.client_hello().server_name().map(str::to_string);
    let Some(config) = tls.select(sni.as_deref()).and_then(|s| s.config.clone()) else {
        // Envoy closes a connection that matches no filter chain.
        stats.no_filter_chain_match.inc();
        tracing::debug!(peer = %conn.peer, ?sni, "no TLS server for this SNI");
        return Ok(());
    };
    let stream = match tokio::time::timeout(deadline, start.into_stream(config)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            stats.ssl_connection_error.inc();
            tracing::debug!(peer = %conn.peer, "TLS handshake: {e}");
            return Ok(());
        }
        Err(_) => return Ok(()),
    };
    stats.ssl_handshake.inc();
    let info = lateen_core::tls::server::TlsInfo::of(stream.get_ref().1);
    let h2 = info.h2;
    conn.tls = Some(Arc::new(info));
    if h2 {
        conn.protocol = "HTTP/2";
        return Box::pin(serve_h2(
            TokioIo::new(stream),
            Rc::new(conn),
            ctx,
            stop,
            limits,
        ))
        .await;
    }
    serve_h1(stream, conn, ctx, stop, limits).await
}

/// Forwards a PASSTHROUGH connection to the cluster its SNI routes to.
async fn passthrough(tcp: TcpStream, sni: Option<String>, conn: &ConnInfo, ctx: &WorkerCtx) {
    let cluster = {
        let ws = ctx.snapshot();
        ws.snap
            .listener(&conn.listener)
            .and_then(|l| lateen_model::listener::select(&l.sni_routes, sni.as_deref()?))
            .and_then(|r| r.pick(ctx.random()))
            .and_then(|c| ws.snap.cluster(c))
            .cloned()
    };
    let Some(cluster) = cluster else {
        tracing::debug!(peer = %conn.peer, ?sni, "no tls route for this SNI; closing");
        return;
    };
    forward(tcp, &cluster, conn, ctx, "passthrough").await;
}

/// Forwards a connection on a TCP port by the first `tcp` route that takes its address.
async fn tcp_proxy(tcp: TcpStream, conn: &ConnInfo, ctx: &WorkerCtx) {
    let cluster = {
        let ws = ctx.snapshot();
        ws.snap
            .listener(&conn.listener)
            .and_then(|l| lateen_model::listener::select_tcp(&l.tcp_routes, conn.local.ip()))
            .and_then(|r| r.pick(ctx.random()))
            .and_then(|c| ws.snap.cluster(c))
            .cloned()
    };
    let Some(cluster) = cluster else {
        // Envoy closes a connection that matches no filter chain.
        conn.stats.no_filter_chain_match.inc();
        tracing::debug!(peer = %conn.peer, local = %conn.local, "no tcp route; closing");
        return;
    };
    forward(tcp, &cluster, conn, ctx, "tcp").await;
}

async fn forward(
    tcp: TcpStream,
    cluster: &crate::cluster::Cluster,
    conn: &ConnInfo,
    ctx: &WorkerCtx,
    what: &str,
) {
    match crate::tcp::forward(tcp, cluster, ctx.random()).await {
        Ok((up, down)) => {
            tracing::debug!(peer = %conn.peer, cluster = %cluster.name, up, down, "{what} done")
        }
        Err(e) => tracing::debug!(peer = %conn.peer, cluster = %cluster.name, "{what}: {e}"),
    }
}

async fn serve_h1<I>(
    io: I,
    mut conn: ConnInfo,
    ctx: Rc<WorkerCtx>,
    stop: watch::Receiver<bool>,
    limits: lateen_model::Limits,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if limits.allow_chunked_length {
        return serve_h1_io(TokioIo::new(io), Rc::new(conn), ctx, stop, limits).await;
    }
    // Content-Length with Transfer-Encoding is refused (Envoy's default): the watch tells
    // the request path what hyper does not.
    let flag = Arc::new(crate::framing::Flag::default());
    conn.framing = Some(flag.clone());
    let io = TokioIo::new(crate::framing::Watched::new(io, flag));
    serve_h1_io(io, Rc::new(conn), ctx, stop, limits).await
}

async fn serve_h1_io<I>(
    io: TokioIo<I>,
    conn: Rc<ConnInfo>,
    ctx: Rc<WorkerCtx>,
    stop: watch::Receiver<bool>,
    limits: lateen_model::Limits,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| http::handle(req, conn.clone(), ctx.clone()));
    let mut b = hyper::server::conn::http1::Builder::new();
    // Oversized or too many headers get 431; headers not received in time close the
    // connection (slowloris).
    b.timer(TokioTimer::new())
        .keep_alive(true)
        .max_buf_size(limits.max_request_headers_bytes.max(8192))
        .max_headers(limits.max_headers_count)
        .header_read_timeout(limits.request_headers_timeout);
    // Upgrades (WebSocket, CONNECT): the proxy hands the connection over to a byte splice
    // once the upstream agrees.
    until_stopped(b.serve_connection(io, svc).with_upgrades(), stop).await
}

async fn serve_h2<I>(
    io: TokioIo<I>,
    conn: Rc<ConnInfo>,
    ctx: Rc<WorkerCtx>,
    stop: watch::Receiver<bool>,
    limits: lateen_model::Limits,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let svc = service_fn(move |req| http::handle(req, conn.clone(), ctx.clone()));
    let mut b = hyper::server::conn::http2::Builder::new(LocalExec);
    // Rapid reset (CVE-2023-44487): a client that resets more than 20 streams before they
    // are served gets GOAWAY ENHANCE_YOUR_CALM, as does one that makes the server reset
    // more than 1024; streams beyond the limit are refused.
    b.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_request_headers_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024)
        // What one client can make the proxy buffer: 1 MiB per stream and per connection
        // (DATA past it is FLOW_CONTROL_ERROR).
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(1 << 20);
    until_stopped(b.serve_connection(io, svc), stop).await
}

/// A served connection that can be drained: hyper-util's `GracefulConnection`, which
/// HTTP/1.1 connections with upgrades lack.
trait Drain: std::future::Future<Output = Result<(), hyper::Error>> {
    fn drain(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> Drain for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn drain(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Drain for hyper::server::conn::http2::Connection<I, S, LocalExec>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    LocalExec: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn drain(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs a connection; on shutdown, lets the request in flight finish, then closes.
async fn until_stopped<C: Drain>(
    conn: C,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error> {
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().drain();
            conn.await
        }
    }
}
