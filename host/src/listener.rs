//! Accepted connections: picks the HTTP version from the first bytes (HTTP/2 prior
//! knowledge or HTTP/1.1) and serves the connection until it ends or the proxy drains.
//!
//! Sniffing here, rather than with hyper-util's `auto` connection, keeps an idle HTTP/1.1
//! connection small: `auto` holds room for an HTTP/2 connection state in every connection.

use crate::proxy::{self, ConnInfo};
use crate::worker::WorkerCtx;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use std::rc::Rc;
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
    mut conn: ConnInfo,
    ctx: Rc<WorkerCtx>,
    stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error> {
    let limits = ctx.snapshot().snap.limits;
    // A client that never finishes its preface is cut off like one that never finishes
    // its headers.
    let h2 = match tokio::time::timeout(limits.request_headers_timeout, sniff_h2(&tcp)).await {
        Ok(h2) => h2,
        Err(_) => return Ok(()),
    };
    if h2 {
        conn.protocol = "HTTP/2";
        // Boxed, so that HTTP/1.1 connections do not carry an HTTP/2 state's room.
        return Box::pin(serve_h2(tcp, Rc::new(conn), ctx, stop, limits)).await;
    }
    let conn = Rc::new(conn);
    let svc = service_fn(move |req| proxy::handle(req, conn.clone(), ctx.clone()));
    let mut b = hyper::server::conn::http1::Builder::new();
    // Oversized or too many headers get 431; headers not received in time close the
    // connection (slowloris).
    b.timer(TokioTimer::new())
        .keep_alive(true)
        .max_buf_size(limits.max_request_headers_bytes.max(8192))
        .max_headers(limits.max_headers_count)
        .header_read_timeout(limits.request_headers_timeout);
    until_stopped(b.serve_connection(TokioIo::new(tcp), svc), stop).await
}

async fn serve_h2(
    tcp: TcpStream,
    conn: Rc<ConnInfo>,
    ctx: Rc<WorkerCtx>,
    stop: watch::Receiver<bool>,
    limits: crate::snapshot::Limits,
) -> Result<(), hyper::Error> {
    let svc = service_fn(move |req| proxy::handle(req, conn.clone(), ctx.clone()));
    let mut b = hyper::server::conn::http2::Builder::new(LocalExec);
    // Rapid reset (CVE-2023-44487): a client that resets more than 20 streams before they
    // are served gets GOAWAY ENHANCE_YOUR_CALM, as does one that makes the server reset
    // more than 1024; streams beyond the limit are refused.
    b.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_request_headers_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024);
    until_stopped(b.serve_connection(TokioIo::new(tcp), svc), stop).await
}

/// Runs a connection; on shutdown, lets the request in flight finish, then closes.
async fn until_stopped<C: GracefulConnection>(
    conn: C,
    mut stop: watch::Receiver<bool>,
) -> Result<(), C::Error> {
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}
