//! Phases 4 and 5: the upstream request (headers, body, mirrors), then upstream selection
//! (circuit breaker, consistent hash or load balancer) and the tries, with retries and
//! timeouts, until an answer or an Envoy-style failure.

// A phase that ends the request returns its reply as the error: the response is the
// value the caller returns at once, not a failure to box.
#![allow(clippy::result_large_err)]

use super::error::ProxyError;
use super::route::Route;
use super::{header_map, ConnInfo};
use crate::body::{BoxError, ChannelBody, UpBody};
use crate::chain::HttpStream;
use crate::cluster::{Cluster, Endpoint, Report};
use crate::retry::{RetryPolicy, TryOutcome};
use crate::upstream::full;
use crate::worker::{WorkerCtx, WorkerSnapshot};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use lateen_model::cluster::{hash_key, HashKey};
use lateen_wasm::state::header;
use lateen_wasm::StreamState;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, MutexGuard};

/// Largest request body kept for replays (retries, mirrors).
const REPLAY_LIMIT: u64 = 64 * 1024;

/// The upstream request as the filters left it.
pub(super) struct UpstreamRequest {
    pub method: http::Method,
    /// Path and query.
    pub path: String,
    /// The headers, `host` from `:authority`.
    pub headers: HeaderMap,
}

impl UpstreamRequest {
    /// From the (possibly rewritten) request headers.
    pub fn from_state(st: &StreamState) -> Self {
        let method =
            http::Method::from_bytes(header(&st.req_headers, ":method").map_or(&b"GET"[..], |v| v))
                .unwrap_or(http::Method::GET);
        let path =
            String::from_utf8_lossy(header(&st.req_headers, ":path").map_or(&b"/"[..], |v| v))
                .into_owned();
        let authority = header(&st.req_headers, ":authority")
            .cloned()
            .unwrap_or_default();
        let mut headers = HeaderMap::with_capacity(st.req_headers.len());
        header_map(&st.req_headers, &mut headers);
        if let Ok(v) = HeaderValue::from_bytes(&authority) {
            headers.insert(http::header::HOST, v);
        }
        UpstreamRequest {
            method,
            path,
            headers,
        }
    }
}

/// The request body: `(whole, streamed)`. A small body (or one under a body limit) is read
/// whole, so that it can be replayed for retries and mirrors as Envoy buffers it; a large
/// or unknown-length one streams through the chain, with one try.
#[allow(clippy::too_many_arguments)]
pub(super) async fn request_body(
    stream: &Rc<Mutex<HttpStream>>,
    body: Incoming,
    eos: bool,
    chain_empty: bool,
    headers: &HeaderMap,
    route: &Route,
    ws: &WorkerSnapshot,
    started: tokio::time::Instant,
) -> Result<(Option<Bytes>, Option<UpBody>), Response<UpBody>> {
    let streamed: UpBody = if eos {
        full(Bytes::new())
    } else if chain_empty {
        body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()
    } else {
        let (tx, rx) = ChannelBody::new(4);
        tokio::task::spawn_local(super::pump::request(stream.clone(), body, tx));
        rx.boxed_unsync()
    };
    // Envoy's request_timeout: the whole request must have arrived by then; its
    // stream_idle_timeout: no gap between two frames longer than that.
    let limits = &ws.snap.limits;
    let streamed = match (eos, limits.request_timeout, limits.stream_idle_timeout) {
        (false, deadline, idle) if deadline.is_some() || idle.is_some() => {
            crate::body::TimedBody::new(streamed, deadline.map(|t| started + t), idle)
                .boxed_unsync()
        }
        _ => streamed,
    };
    // A small body is kept whole so that it can be replayed for retries and mirrors (Envoy
    // buffers for the same reason); a large or unknown-length one streams, with one try.
    let replayable = eos
        || headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n <= REPLAY_LIMIT);
    // With a body limit, the body is buffered up to it (as Envoy's buffer filter does), so
    // that an oversized one is refused before anything goes upstream.
    let body_limit = ws.snap.limits.max_request_body_bytes;
    let mut first_body = None;
    let replay: Option<Bytes> = if eos {
        Some(Bytes::new())
    } else if body_limit.is_some()
        || (replayable && (route.retry.attempts > 0 || !route.mirrors.is_empty()))
    {
        let cap = body_limit.map_or(REPLAY_LIMIT, |l| {
            l.max(if replayable { REPLAY_LIMIT } else { 0 })
        });
        match Limited::new(streamed, usize::try_from(cap).unwrap_or(usize::MAX))
            .collect()
            .await
        {
            Ok(c) => Some(c.to_bytes()),
            Err(e) => {
                let mut s = stream.lock().await;
                let err = if let Some(lr) = s.early_reply.take() {
                    ProxyError::Plugin(lr)
                } else if e.is::<http_body_util::LengthLimitError>() {
                    ProxyError::PayloadTooLarge
                } else if crate::body::is_request_timeout(e.as_ref()) {
                    ProxyError::RequestTimeout
                } else if crate::body::is_stream_idle_timeout(e.as_ref()) {
                    ProxyError::StreamIdleTimeout
                } else {
                    tracing::debug!("request body failed: {e}");
                    ProxyError::BadRequest
                };
                return Err(err.respond(&mut s));
            }
        }
    } else {
        first_body = Some(streamed);
        None
    };
    Ok((replay, first_body))
}

/// What the upstream answered, and what the response phase needs besides.
pub(super) struct Answered {
    pub resp: Response<Incoming>,
    /// When the answering try was sent (`x-envoy-upstream-service-time`).
    pub sent: Instant,
    /// A consistent-hash cookie the proxy generated, to set on the response.
    pub set_cookie: Option<String>,
}

/// Sends the request upstream: admission by the circuit breaker (503 UO), then tries
/// while the retry policy allows (replayable bodies only), each to an endpoint picked by
/// consistent hashing (first try) or the load balancer, bounded by the per-try and route
/// timeouts. Returns the answer with the stream locked for the response phase.
pub(super) async fn forward<'a>(
    stream: &'a Rc<Mutex<HttpStream>>,
    conn: &ConnInfo,
    w: &WorkerCtx,
    route: &Route,
    up: UpstreamRequest,
    replay: Option<Bytes>,
    mut first_body: Option<UpBody>,
) -> Result<(Answered, MutexGuard<'a, HttpStream>), Response<UpBody>> {
    let cluster = &route.cluster;
    let policy = &route.retry;
    let UpstreamRequest {
        method,
        path,
        mut headers,
    } = up;
    // Circuit breaker (DestinationRule connectionPool): overflow is Envoy's 503 UO.
    let Some(_admitted) = cluster.admit() else {
        return Err(ProxyError::Overflow.respond(&mut *stream.lock().await));
    };
    let deadline =
        (route.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(route.timeout_ms));
    let (hash, set_cookie) = consistent_hash(cluster, &headers, &path, conn, w);
    let mut tried: Vec<String> = Vec::new();
    let mut attempt = 0u32;
    let (result, retried, sent, last_ep) = loop {
        attempt += 1;
        let hash = hash.filter(|_| attempt == 1);
        let Some(ep) = pick(cluster, hash, policy.ignore_previous_hosts, &tried, w) else {
            return Err(ProxyError::NoHealthyUpstream.respond(&mut *stream.lock().await));
        };
        tried.push(ep.authority.clone());
        let body = match (&replay, first_body.take()) {
            (Some(b), _) => full(b.clone()),
            (None, Some(b)) => b,
            (None, None) => full(Bytes::new()),
        };
        let may_retry = replay.is_some() && attempt <= policy.attempts;
        // Only a try that may be retried needs its own copy of the headers.
        let try_headers = if may_retry {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };
        let Some(req) = upstream_request(&method, &path, try_headers, body) else {
            let e = ProxyError::InvalidUpstreamRequest;
            return Err(e.respond(&mut *stream.lock().await));
        };
        let now = Instant::now();
        let (result, outcome) = try_once(cluster, ep, req, per_try(policy, deadline, now), w).await;
        let overall_left = deadline.is_none_or(|d| Instant::now() < d);
        match outcome {
            TryOutcome::Response { status, .. } => cluster.stats.rq_xx.record(status),
            TryOutcome::PerTryTimeout if overall_left => cluster.stats.rq_per_try_timeout.inc(),
            // A per-try timeout with the route deadline passed is the route's timeout.
            TryOutcome::PerTryTimeout => cluster.stats.rq_timeout.inc(),
            _ => {}
        }
        if may_retry && overall_left && policy.on.retriable(outcome) {
            tracing::debug!(cluster = %cluster.name, ?outcome, attempt, "retrying");
            cluster.stats.rq_retry.inc();
            tokio::time::sleep(crate::retry::backoff(attempt, w.random())).await;
            continue;
        }
        break (result, attempt > 1, now, cluster.index_of(ep));
    };
    let mut s = stream.lock().await;
    let answered: Arc<dyn lateen_wasm::UpstreamCluster> = cluster.clone();
    s.state.upstream = Some((answered, last_ep));
    if let Some(lr) = s.early_reply.take() {
        return Err(ProxyError::Plugin(lr).respond(&mut s));
    }
    let err = match result {
        Ok(Ok(resp)) => {
            let answered = Answered {
                resp,
                sent,
                set_cookie,
            };
            return Ok((answered, s));
        }
        Err(_) => ProxyError::UpstreamTimeout,
        Ok(Err(e)) if crate::body::is_request_timeout(&e) => ProxyError::RequestTimeout,
        Ok(Err(e)) if crate::body::is_stream_idle_timeout(&e) => ProxyError::StreamIdleTimeout,
        Ok(Err(e)) => {
            tracing::debug!(cluster = %cluster.name, "upstream error: {e}");
            if e.is_connect() {
                ProxyError::ConnectFailure { retried }
            } else {
                ProxyError::Reset { retried }
            }
        }
    };
    Err(err.respond(&mut s))
}

/// What one try returned: the response, a transport error, or the per-try timeout.
type TryResult =
    Result<Result<Response<Incoming>, crate::upstream::SendError>, tokio::time::error::Elapsed>;

/// The key consistent hashing (DestinationRule `consistentHash`) picks the first try's
/// endpoint by, and the cookie to set when the proxy generated it (Envoy generates the
/// cookie when it is absent and a `ttl` is set).
fn consistent_hash(
    cluster: &Cluster,
    headers: &HeaderMap,
    path: &str,
    conn: &ConnInfo,
    w: &WorkerCtx,
) -> (Option<u64>, Option<String>) {
    let Some(hp) = cluster.hash.as_ref() else {
        return (None, None);
    };
    let key = match &hp.key {
        HashKey::Header(h) => headers.get(h.as_str()).map(|v| hash_key(v.as_bytes())),
        HashKey::SourceIp => Some(hash_key(conn.peer.ip().to_string().as_bytes())),
        HashKey::QueryParam(q) => path
            .split_once('?')
            .and_then(|(_, query)| lateen_sdk::matcher::query_param(query, q))
            .map(|v| hash_key(v.as_bytes())),
        HashKey::Cookie {
            name,
            path: cookie_path,
            ttl_s,
        } => {
            let existing = headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|c| lateen_sdk::matcher::cookie(c, name));
            match (existing, ttl_s) {
                (Some(v), _) => Some(hash_key(v.as_bytes())),
                (None, Some(ttl)) => {
                    let v = format!("{:016x}", w.random());
                    let p = cookie_path
                        .as_ref()
                        .map(|p| format!("; Path={p}"))
                        .unwrap_or_default();
                    let cookie = format!("{name}=\"{v}\"; Max-Age={ttl}{p}; HttpOnly");
                    return (Some(hash_key(v.as_bytes())), Some(cookie));
                }
                (None, None) => None,
            }
        }
    };
    (key, None)
}

/// The endpoint of one try: by the hash when there is one, else by the load balancer,
/// avoiding (up to three draws) the hosts already tried when the policy asks to.
fn pick<'c>(
    cluster: &'c Cluster,
    hash: Option<u64>,
    avoid_tried: bool,
    tried: &[String],
    w: &WorkerCtx,
) -> Option<&'c Endpoint> {
    let mut ep = match hash {
        Some(h) => cluster.pick_hashed(h),
        None => cluster.pick(w.random()),
    };
    if avoid_tried {
        for _ in 0..3 {
            match ep {
                Some(e) if tried.contains(&e.authority) => ep = cluster.pick(w.random()),
                _ => break,
            }
        }
    }
    ep
}

fn upstream_request(
    method: &http::Method,
    path: &str,
    headers: HeaderMap,
    body: UpBody,
) -> Option<Request<UpBody>> {
    // Origin-form; the pool makes it absolute for HTTP/2.
    let uri = match path.parse::<http::Uri>() {
        Ok(uri) => uri,
        Err(e) => {
            tracing::warn!("cannot build upstream request: {e}");
            return None;
        }
    };
    let mut req = Request::new(body);
    *req.method_mut() = method.clone();
    *req.headers_mut() = headers;
    *req.uri_mut() = uri;
    Some(req)
}

/// A try's timeout: the per-try timeout, bounded by what is left of the route's.
fn per_try(policy: &RetryPolicy, deadline: Option<Instant>, now: Instant) -> Option<Duration> {
    let remaining = deadline.map(|d| d.saturating_duration_since(now));
    match (policy.per_try.is_zero(), remaining) {
        (true, r) => r,
        (false, None) => Some(policy.per_try),
        (false, Some(r)) => Some(policy.per_try.min(r)),
    }
}

/// One try to one endpoint: its request counted in flight (for least-request and the
/// cluster's stats), a connection slot (the circuit breaker's), the outcome reported to
/// outlier detection.
async fn try_once(
    cluster: &Cluster,
    ep: &Endpoint,
    req: Request<UpBody>,
    timeout: Option<Duration>,
    w: &WorkerCtx,
) -> (TryResult, TryOutcome) {
    ep.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    cluster.stats.rq_total.inc();
    let upstream_active = cluster.stats.rq_active.track();
    let call = async {
        let _slot = cluster.connection_slot().await;
        w.upstream.send(cluster, &ep.authority, req).await
    };
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, call).await,
        None => Ok(call.await),
    };
    ep.active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    drop(upstream_active);
    let outcome = match &result {
        Err(_) => TryOutcome::PerTryTimeout,
        Ok(Err(e)) if e.is_connect() => TryOutcome::ConnectFailure,
        Ok(Err(_)) => TryOutcome::Reset,
        Ok(Ok(r)) => TryOutcome::Response {
            status: r.status().as_u16(),
            grpc_status: r
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()?.parse().ok()),
        },
    };
    cluster.report(
        ep,
        match outcome {
            TryOutcome::Response { status, .. } if status >= 500 => Report::Status(status),
            TryOutcome::Response { .. } => Report::Success,
            _ => Report::LocalFailure,
        },
    );
    (result, outcome)
}

// Sends fire-and-forget copies of a request to the mirror clusters, with Envoy's `-shadow`
// suffix on the host. A mirror's failure never reaches the client. Each runs as a task of
// the worker, not of the connection, so it is delivered after the client has gone; one
// not answered within `limit` (the route's timeout) is dropped and counted as the mirror
// cluster's `upstream_rq_timeout`.
pub(super) fn mirror(
    w: &Rc<WorkerCtx>,
    ws: &crate::worker::WorkerSnapshot,
    clusters: &[String],
    (method, path, headers, body): (&http::Method, &str, &HeaderMap, &Bytes),
    limit: Duration,
) {
    for name in clusters {
        let Some(cluster) = ws.snap.cluster(name).cloned() else {
            continue;
        };
        let Some(ep) = cluster.pick(w.random()) else {
            continue;
        };
        let mut h = headers.clone();
        if let Some(host) = h.get(http::header::HOST).and_then(|v| v.to_str().ok()) {
            let shadow = match host.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("{name}-shadow:{port}")
                }
                _ => format!("{host}-shadow"),
            };
            if let Ok(v) = HeaderValue::from_str(&shadow) {
                h.insert(http::header::HOST, v);
            }
        }
        let mut req = Request::new(full(body.clone()));
        *req.method_mut() = method.clone();
        *req.headers_mut() = h;
        let Ok(uri) = path.parse::<http::Uri>() else {
            continue;
        };
        *req.uri_mut() = uri;
        let w = w.clone();
        let endpoint = ep.authority.clone();
        tokio::task::spawn_local(async move {
            let send = w.upstream.send(&cluster, &endpoint, req);
            match tokio::time::timeout(limit, send).await {
                Ok(Ok(resp)) => {
                    // Drain so the connection returns to the pool.
                    let _ = resp.into_body().collect().await;
                }
                Ok(Err(e)) => tracing::debug!(cluster = %cluster.name, "mirror failed: {e}"),
                Err(_) => cluster.stats.rq_timeout.inc(),
            }
        });
    }
}
