//! The HTTP request path, as phases (Pingora's `ProxyHttp` is the model). [`serve`] calls
//! them in order; each is a function of its own module:
//!
//! 1. **downstream request** ([`downstream::request`]): path normalization, pseudo-headers,
//!    `x-forwarded-for`/`-proto`, `x-forwarded-client-cert`, the request id, the trace
//!    context; the body limit and the Gateway's `httpsRedirect`.
//! 2. **request filters**: the wasm chain's request callbacks ([`crate::chain`]).
//! 3. **route decision** ([`route::decide`]): what the router filter decided, typed.
//! 4. **upstream request** ([`forward::UpstreamRequest`], [`forward::request_body`]): the
//!    headers as the filters left them, and the body, kept whole for retries and mirrors or
//!    streamed through the chain; mirrors are sent ([`forward::mirror`]).
//! 5. **upstream selection and forwarding** ([`forward::forward`]): the circuit breaker,
//!    consistent hashing or the load balancer, tries with retries and timeouts.
//! 6. **response filters** ([`respond::response`]): protocol upgrades, the chain's
//!    response callbacks, the response body.
//! 7. **log**: when the stream ends, however it ended, every filter's log callback, the
//!    access log and the span ([`crate::chain::HttpStream`]'s log phase).
//!
//! Every failure is a [`error::ProxyError`], which makes the Envoy-style reply and records
//! its response flag and details (the one place that does).

mod downstream;
pub mod error;
mod forward;
mod pump;
mod respond;
mod route;

use crate::body::UpBody;
use crate::chain::{HttpStream, Verdict};
use crate::upstream::full;
use crate::worker::WorkerCtx;
use bytes::Bytes;
use error::ProxyError;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use lateen_wasm::state::{header, HeaderList};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

/// What the listener knows about a connection.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub listener: Arc<str>,
    pub protocol: &'static str,
    pub stats: Arc<lateen_core::stats::ListenerStats>,
    /// The TLS session, when the connection came over TLS.
    pub tls: Option<Arc<lateen_core::tls::server::TlsInfo>>,
    /// On an HTTP/1.1 connection, set when a header block framed by both Content-Length
    /// and Transfer-Encoding went by ([`crate::framing`]).
    pub framing: Option<Arc<crate::framing::Flag>>,
}

/// A lower-cased proxy-wasm header list from an http header map.
pub fn header_list(h: &HeaderMap) -> HeaderList {
    h.iter()
        .map(|(k, v)| (k.as_str().to_string(), Bytes::copy_from_slice(v.as_bytes())))
        .collect()
}

fn header_map(list: &HeaderList, into: &mut HeaderMap) {
    for (k, v) in list {
        if k.starts_with(':') {
            continue;
        }
        // from_maybe_shared: the value keeps the list's buffer instead of being copied.
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_maybe_shared(v.clone()),
        ) {
            (Ok(n), Ok(v)) => {
                into.append(n, v);
            }
            _ => tracing::debug!("dropping invalid header {k:?} set by a plugin"),
        }
    }
}

const XFCC: &str = "x-forwarded-client-cert";

/// Serves one request. Never fails: every error becomes an Envoy-style reply.
pub async fn handle(
    req: Request<Incoming>,
    conn: Rc<ConnInfo>,
    w: Rc<WorkerCtx>,
) -> Result<Response<UpBody>, Infallible> {
    let stats = conn.stats.clone();
    stats.rq_total.inc();
    let _active = stats.rq_active.track();
    // Boxed: hyper keeps a connection's request-future slot for the connection's life, so
    // an inline (large) future would cost every idle keep-alive connection its size.
    let resp = Box::pin(serve(req, conn, w)).await;
    stats.rq_xx.record(resp.status().as_u16());
    Ok(resp)
}

/// Whether an HTTP/1.1 request asks to switch protocols (`Connection: upgrade` with an
/// `Upgrade` header, as a WebSocket handshake does).
fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.headers().contains_key(http::header::UPGRADE)
        && req
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// One request through the phases above.
async fn serve(
    mut req: Request<Incoming>,
    conn: Rc<ConnInfo>,
    w: Rc<WorkerCtx>,
) -> Response<UpBody> {
    let started = tokio::time::Instant::now();
    let ws = w.snapshot();
    let chain = ws.chain(&conn.listener);
    // Envoy (as Istio configures it) lets WebSocket upgrades through every HTTP route.
    let downstream_upgrade = wants_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    // HTTP/1.1 CONNECT is terminated here: routed like a request, then tunnelled over TCP.
    let connect = (req.method() == http::Method::CONNECT
        && req.version() == http::Version::HTTP_11)
        .then(|| hyper::upgrade::on(&mut req));

    // 1. Downstream request.
    let down = match downstream::request(req, &conn, &w, &ws, &chain) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let stream = down.stream;
    let mut s = stream.lock().await;

    // 2. Request filters.
    if let Verdict::Respond(lr) = s.request_headers(down.eos).await {
        return ProxyError::Plugin(lr).respond(&mut s);
    }

    // 3. Route decision.
    let route = match route::decide(&mut s, &ws) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Some(tunnelled) = connect {
        return tunnel(&mut s, &route.cluster, tunnelled, &w).await;
    }

    // 4. Upstream request: headers, body, mirrors.
    let up = forward::UpstreamRequest::from_state(&s.state);
    drop(s);
    let body = forward::request_body(
        &stream,
        down.body,
        down.eos,
        chain.is_empty(),
        &up.headers,
        &route,
        &ws,
        started,
    )
    .await;
    let (replay, streamed) = match body {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(b) = replay.as_ref().filter(|_| !route.mirrors.is_empty()) {
        let request = (&up.method, up.path.as_str(), &up.headers, b);
        forward::mirror(&w, &ws, &route.mirrors, request, route.mirror_timeout());
    }

    // 5. Upstream selection and forwarding.
    let (answered, s) =
        match forward::forward(&stream, &conn, &w, &route, up, replay, streamed).await {
            Ok(a) => a,
            Err(r) => return r,
        };

    // 6. Response filters; 7. the log phase runs when the stream drops.
    respond::response(
        &stream,
        s,
        answered,
        chain.is_empty(),
        downstream_upgrade,
        &route.cluster,
        ws.snap.limits.stream_idle_timeout,
    )
    .await
}

/// Terminates a CONNECT: a TCP connection to an endpoint of the routed cluster, a 200 to
/// the client, then bytes both ways (Envoy's `connect_config`).
async fn tunnel(
    s: &mut HttpStream,
    cluster: &Arc<crate::cluster::Cluster>,
    down: hyper::upgrade::OnUpgrade,
    w: &WorkerCtx,
) -> Response<UpBody> {
    let up = match crate::tcp::connect(cluster, w.random()).await {
        Ok(up) => up,
        Err(e) => {
            tracing::debug!(cluster = %cluster.name, "CONNECT: {e}");
            return ProxyError::from(e).respond(s);
        }
    };
    let cluster = cluster.clone();
    tokio::task::spawn_local(async move {
        let _open = cluster.stats.cx_active.track();
        match down.await {
            Ok(down) => {
                let idle = crate::tcp::idle_timeout(&cluster);
                let r = crate::tcp::splice(TokioIo::new(down), up, idle).await;
                tracing::debug!(cluster = %cluster.name, ?r, "CONNECT tunnel done");
            }
            Err(e) => tracing::debug!(cluster = %cluster.name, "CONNECT: no upgrade: {e}"),
        }
    });
    s.set_outcome(200, "-");
    Response::new(full(Bytes::new()))
}

// Gateway `httpsRedirect`: 301 to the same host (without its port) and path over https,
// as Envoy's `require_tls: ALL` answers before any filter runs; `None` when the request's
// host is not one the listener redirects.
fn https_redirect(s: &mut HttpStream, l: &lateen_model::ListenerSpec) -> Option<Response<UpBody>> {
    let host = String::from_utf8_lossy(header(&s.state.req_headers, ":authority")?).into_owned();
    if !l.redirects(&host) {
        return None;
    }
    let path = header(&s.state.req_headers, ":path")
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_else(|| "/".into());
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    let location = format!("https://{}{path}", lateen_sdk::matcher::strip_port(&host));
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    s.set_outcome(301, "-");
    s.state.response_code_details = "direct_response".into();
    Some(r)
}
