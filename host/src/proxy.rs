//! The HTTP request path: downstream request → filter chain → route decision → cluster →
//! upstream → response back through the chain. Responses and flags follow Envoy.

use crate::body::{BoxError, ChannelBody, UpBody};
use crate::chain::{HttpStream, Verdict};
use crate::cluster::{hash_key, HashKey, Report};
use crate::retry::{RetryPolicy, TryOutcome};
use crate::upstream::full;
use crate::worker::WorkerCtx;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use lateen_wasm::state::{header, HeaderList, LocalResponse, StreamInfo};
use lateen_wasm::StreamState;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Mutex;

/// What the listener knows about a connection.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub listener: Arc<str>,
    pub protocol: &'static str,
    pub stats: Arc<lateen_core::stats::ListenerStats>,
    /// The TLS session, when the connection came over TLS.
    pub tls: Option<Arc<lateen_core::tls::server::TlsInfo>>,
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

/// An Envoy-style local reply, with its response flag.
fn reply(status: u16, body: &'static str, flag: &'static str) -> (Response<UpBody>, &'static str) {
    let mut r = Response::new(full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    if !body.is_empty() {
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    (r, flag)
}

fn local_reply(lr: LocalResponse) -> Response<UpBody> {
    let mut r = Response::new(full(lr.body.clone()));
    *r.status_mut() = StatusCode::from_u16(lr.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !lr.body.is_empty() {
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    header_map(&lr.headers, r.headers_mut());
    r
}

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
    let (parts, body) = req.into_parts();

    let mut headers: HeaderList = Vec::with_capacity(parts.headers.len() + 6);
    let authority = parts
        .uri
        .authority()
        .map(|a| Bytes::copy_from_slice(a.as_str().as_bytes()))
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .map(|h| Bytes::copy_from_slice(h.as_bytes()))
        })
        .unwrap_or_default();
    let raw = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // Before any filter or route sees it, as Envoy's normalize_path does.
    let Ok(path) = lateen_core::path::normalize(raw, chain.path).map(|p| p.into_owned()) else {
        return reply(400, "Bad Request", "DPE").0;
    };
    headers.push((":authority".into(), authority));
    headers.push((":path".into(), Bytes::from(path)));
    headers.push((
        ":method".into(),
        Bytes::copy_from_slice(parts.method.as_str().as_bytes()),
    ));
    let scheme: &'static [u8] = if conn.tls.is_some() {
        b"https"
    } else {
        b"http"
    };
    headers.push((":scheme".into(), Bytes::from_static(scheme)));
    for (k, v) in &parts.headers {
        // A client's own x-forwarded-client-cert is dropped (Istio's SANITIZE_SET), so an
        // upstream that trusts the header cannot be told a forged identity.
        if k == http::header::HOST || k == XFCC {
            continue;
        }
        headers.push((k.as_str().to_string(), Bytes::copy_from_slice(v.as_bytes())));
    }
    if let Some(xfcc) = conn
        .tls
        .as_ref()
        .and_then(|t| t.client_cert_details.clone())
    {
        headers.push((XFCC.into(), xfcc));
    }
    let client_ip = conn.peer.ip().to_string();
    match headers.iter_mut().find(|(k, _)| k == "x-forwarded-for") {
        Some((_, v)) => {
            *v = Bytes::from(format!("{}, {client_ip}", String::from_utf8_lossy(v)));
        }
        None => headers.push(("x-forwarded-for".into(), Bytes::from(client_ip))),
    }
    // Over TLS the proxy knows the scheme for sure; on plain HTTP a value set by a proxy in
    // front is kept.
    match headers.iter_mut().find(|(k, _)| k == "x-forwarded-proto") {
        Some((_, v)) if conn.tls.is_some() => *v = Bytes::from_static(scheme),
        Some(_) => {}
        None => headers.push(("x-forwarded-proto".into(), Bytes::from_static(scheme))),
    }
    let request_id = match header(&headers, "x-request-id") {
        Some(id) => String::from_utf8_lossy(id).into_owned(),
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            headers.push(("x-request-id".into(), Bytes::from(id.clone())));
            id
        }
    };
    let trace = ws
        .snap
        .tracer
        .as_ref()
        .map(|t| (t.clone(), t.begin(&mut headers, w.random())));
    let state = StreamState {
        req_headers: headers,
        info: Some(Arc::new(StreamInfo {
            request_id,
            source: conn.peer,
            destination: conn.local,
            protocol: conn.protocol,
            start: SystemTime::now(),
            listener: conn.listener.to_string(),
            tls: conn.tls.clone(),
        })),
        ..StreamState::default()
    };
    let eos = body.is_end_stream();
    let declared_length = body.size_hint().exact();
    let stream = Rc::new(Mutex::new(HttpStream::new(
        chain.clone(),
        state,
        w.upstream.clone(),
        w.random(),
    )));
    let mut s = stream.lock().await;
    s.access_log = ws.snap.access_log.clone();
    s.trace = trace;
    if let (Some(max), Some(n)) = (ws.snap.limits.max_request_body_bytes, declared_length) {
        if n > max {
            return too_large(&mut s);
        }
    }

    // Gateway httpsRedirect; listeners without it pay one lookup and nothing else.
    if conn.tls.is_none() {
        let listener = ws.snap.listener(&conn.listener);
        if let Some(l) = listener.filter(|l| !l.https_redirect.is_empty()) {
            if let Some(r) = https_redirect(&mut s, l) {
                return r;
            }
        }
    }
    if let Verdict::Respond(lr) = s.request_headers(eos).await {
        s.set_local_outcome(&lr);
        return local_reply(lr);
    }
    let prop = |s: &HttpStream, key: &str| {
        s.state
            .props
            .get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let Some(cluster_name) = prop(&s, "lateen.route.cluster") else {
        let (r, flag) = reply(404, "", "NR");
        s.set_outcome(404, flag);
        return r;
    };
    let timeout_ms: u64 = prop(&s, "lateen.route.timeout_ms")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let Some(cluster) = ws.snap.cluster(&cluster_name).cloned() else {
        tracing::warn!("route decision names unknown cluster {cluster_name}");
        let (r, flag) = reply(503, "route decision names an unknown cluster", "NC");
        s.set_outcome(503, flag);
        return r;
    };
    if let Some(down) = connect {
        return tunnel(&mut s, &cluster, down, &w).await;
    }
    // Upstream request from the (possibly rewritten) headers.
    let st = &s.state;
    let method =
        http::Method::from_bytes(header(&st.req_headers, ":method").map_or(&b"GET"[..], |v| v))
            .unwrap_or(http::Method::GET);
    let path = String::from_utf8_lossy(header(&st.req_headers, ":path").map_or(&b"/"[..], |v| v))
        .into_owned();
    let authority = header(&st.req_headers, ":authority")
        .cloned()
        .unwrap_or_default();
    let mut headers = HeaderMap::with_capacity(st.req_headers.len());
    header_map(&st.req_headers, &mut headers);
    if let Ok(v) = HeaderValue::from_bytes(&authority) {
        headers.insert(http::header::HOST, v);
    }
    let policy = RetryPolicy::from_property(prop(&s, "lateen.route.retry").as_deref());
    let mirrors = prop(&s, "lateen.route.mirror");
    let streamed: UpBody = if eos {
        full(Bytes::new())
    } else if chain.is_empty() {
        body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()
    } else {
        let (tx, rx) = ChannelBody::new(4);
        tokio::task::spawn_local(pump_request(stream.clone(), body, tx));
        rx.boxed_unsync()
    };
    // Envoy's request_timeout: the whole request must have arrived by then.
    let streamed = match (eos, ws.snap.limits.request_timeout) {
        (false, Some(t)) => crate::body::DeadlineBody::new(streamed, started + t).boxed_unsync(),
        _ => streamed,
    };
    drop(s);
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
    } else if body_limit.is_some() || (replayable && (policy.attempts > 0 || mirrors.is_some())) {
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
                if let Some(lr) = s.early_reply.take() {
                    s.set_local_outcome(&lr);
                    return local_reply(lr);
                }
                if e.is::<http_body_util::LengthLimitError>() {
                    return too_large(&mut s);
                }
                if crate::body::is_request_timeout(e.as_ref()) {
                    return request_timed_out(&mut s);
                }
                tracing::debug!("request body failed: {e}");
                let (r, flag) = reply(400, "", "DPE");
                s.set_outcome(400, flag);
                return r;
            }
        }
    } else {
        first_body = Some(streamed);
        None
    };
    if let (Some(m), Some(b)) = (&mirrors, &replay) {
        let limit = match timeout_ms {
            0 => MIRROR_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        mirror(&w, &ws, m, (&method, &path, &headers, b), limit);
    }

    // Tries: the first, then retries while the policy allows (replayable bodies only).
    // Circuit breaker (DestinationRule connectionPool): overflow is Envoy's 503 UO.
    let Some(_admitted) = cluster.admit() else {
        let (mut r, flag) = reply(
            503,
            "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            "UO",
        );
        r.headers_mut()
            .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
        stream.lock().await.set_outcome(503, flag);
        return r;
    };
    let deadline = (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms));
    // Consistent hashing (DestinationRule consistentHash) picks the first try's endpoint.
    let mut set_cookie: Option<String> = None;
    let hash = cluster.hash.as_ref().and_then(|hp| match &hp.key {
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
                // Envoy generates the cookie when it is absent and a ttl is set.
                (None, Some(ttl)) => {
                    let v = format!("{:016x}", w.random());
                    let p = cookie_path
                        .as_ref()
                        .map(|p| format!("; Path={p}"))
                        .unwrap_or_default();
                    set_cookie = Some(format!("{name}=\"{v}\"; Max-Age={ttl}{p}; HttpOnly"));
                    Some(hash_key(v.as_bytes()))
                }
                (None, None) => None,
            }
        }
    });
    let mut tried: Vec<String> = Vec::new();
    let mut last_ep;
    let mut attempt = 0u32;
    let (result, sent) = loop {
        attempt += 1;
        let mut ep = match hash {
            Some(h) if attempt == 1 => cluster.pick_hashed(h),
            _ => cluster.pick(w.random()),
        };
        if policy.ignore_previous_hosts {
            for _ in 0..3 {
                match ep {
                    Some(e) if tried.contains(&e.authority) => ep = cluster.pick(w.random()),
                    _ => break,
                }
            }
        }
        let Some(ep) = ep else {
            let (r, flag) = reply(503, "no healthy upstream", "UH");
            stream.lock().await.set_outcome(503, flag);
            return r;
        };
        tried.push(ep.authority.clone());
        last_ep = cluster.index_of(ep);
        let body = match (&replay, first_body.take()) {
            (Some(b), _) => full(b.clone()),
            (None, Some(b)) => b,
            (None, None) => full(Bytes::new()),
        };
        let mut req = Request::new(body);
        *req.method_mut() = method.clone();
        // Only a try that may be retried needs its own copy of the headers.
        *req.headers_mut() = if replay.is_some() && attempt <= policy.attempts {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };
        match format!("http://{}{}", ep.authority, path).parse() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => {
                tracing::warn!("cannot build upstream request: {e}");
                let (r, flag) = reply(503, "invalid upstream request", "DPE");
                stream.lock().await.set_outcome(503, flag);
                return r;
            }
        }
        let now = Instant::now();
        let remaining = deadline.map(|d| d.saturating_duration_since(now));
        let per_try = match (policy.per_try.is_zero(), remaining) {
            (true, r) => r,
            (false, None) => Some(policy.per_try),
            (false, Some(r)) => Some(policy.per_try.min(r)),
        };
        ep.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        cluster.stats.rq_total.inc();
        let upstream_active = cluster.stats.rq_active.track();
        let call = async {
            let _slot = cluster.connection_slot().await;
            w.upstream.send(&cluster, req).await
        };
        let result = match per_try {
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
        let overall_left = deadline.is_none_or(|d| Instant::now() < d);
        match outcome {
            TryOutcome::Response { status, .. } => cluster.stats.rq_xx.record(status),
            TryOutcome::PerTryTimeout if overall_left => cluster.stats.rq_per_try_timeout.inc(),
            TryOutcome::PerTryTimeout => cluster.stats.rq_timeout.inc(),
            _ => {}
        }
        if replay.is_some()
            && attempt <= policy.attempts
            && overall_left
            && policy.on.retriable(outcome)
        {
            tracing::debug!(cluster = %cluster_name, ?outcome, attempt, "retrying");
            cluster.stats.rq_retry.inc();
            tokio::time::sleep(crate::retry::backoff(attempt, w.random())).await;
            continue;
        }
        // A per-try timeout with the route deadline passed is the route's timeout.
        let retried = attempt > 1;
        break ((result, retried), now);
    };
    let (result, retried) = result;
    let mut s = stream.lock().await;
    let answered: Arc<dyn lateen_wasm::UpstreamCluster> = cluster.clone();
    s.state.upstream = Some((answered, last_ep));
    if let Some(lr) = s.early_reply.take() {
        s.set_local_outcome(&lr);
        return local_reply(lr);
    }
    let resp = match result {
        Err(_) => {
            let (r, flag) = reply(504, "upstream request timeout", "UT");
            s.set_outcome(504, flag);
            return r;
        }
        Ok(Err(e)) if crate::body::is_request_timeout(&e) => {
            return request_timed_out(&mut s);
        }
        Ok(Err(e)) => {
            let (r, flag) = if e.is_connect() {
                reply(
                    503,
                    "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                    if retried { "URX" } else { "UF" },
                )
            } else {
                reply(
                    503,
                    "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                    if retried { "URX" } else { "UC" },
                )
            };
            tracing::debug!(cluster = %cluster_name, "upstream error: {e}");
            s.set_outcome(503, flag);
            return r;
        }
        Ok(Ok(r)) => r,
    };
    let mut resp = resp;
    // The upstream switched protocols: once the 101 has gone down, the two connections
    // are spliced byte for byte.
    if let (Some(down), StatusCode::SWITCHING_PROTOCOLS) = (downstream_upgrade, resp.status()) {
        let up = hyper::upgrade::on(&mut resp);
        let idle = crate::tcp::idle_timeout(&cluster);
        let cluster_name = cluster.name.clone();
        tokio::task::spawn_local(async move {
            match tokio::try_join!(down, up) {
                Ok((down, up)) => {
                    let r = crate::tcp::splice(TokioIo::new(down), TokioIo::new(up), idle).await;
                    tracing::debug!(cluster = %cluster_name, ?r, "upgraded connection done");
                }
                Err(e) => tracing::debug!(cluster = %cluster_name, "upgrade failed: {e}"),
            }
        });
    }
    let service_time = sent.elapsed().as_millis();
    let (rparts, rbody) = resp.into_parts();
    let mut resp_headers = Vec::with_capacity(rparts.headers.len() + 2);
    resp_headers.push((
        ":status".to_string(),
        Bytes::from(rparts.status.as_u16().to_string()),
    ));
    resp_headers.extend(header_list(&rparts.headers));
    resp_headers.push((
        "x-envoy-upstream-service-time".into(),
        Bytes::from(service_time.to_string()),
    ));
    s.state.resp_headers = resp_headers;
    let reos = rbody.is_end_stream();
    if let Verdict::Respond(lr) = s.response_headers(reos).await {
        s.set_local_outcome(&lr);
        return local_reply(lr);
    }
    let mut rbody = rbody;
    let down_body: UpBody = if reos {
        full(Bytes::new())
    } else if chain.is_empty() {
        rbody
            .map_err(|e| -> BoxError { Box::new(e) })
            .boxed_unsync()
    } else {
        // Read the first frame before answering. Most responses are one frame: they then
        // pass the body callbacks here and leave in a single write, with no pump task (and
        // a plugin may still replace the whole response).
        drop(s);
        let first = rbody.frame().await;
        s = stream.lock().await;
        let whole = match &first {
            None => Some(Bytes::new()),
            Some(Ok(f)) if rbody.is_end_stream() => f.data_ref().cloned(),
            _ => None,
        };
        match whole {
            Some(data) => {
                s.state.resp_body_bytes += data.len() as u64;
                s.state.resp_body.extend_from_slice(&data);
                if let Verdict::Respond(lr) = s.response_body(true).await {
                    s.set_local_outcome(&lr);
                    return local_reply(lr);
                }
                full(Bytes::from(std::mem::take(&mut s.state.resp_body)))
            }
            None => {
                let (tx, rx) = ChannelBody::new(4);
                tokio::task::spawn_local(pump_response(stream.clone(), first, rbody, tx));
                rx.boxed_unsync()
            }
        }
    };
    let status = header(&s.state.resp_headers, ":status")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(rparts.status);
    s.set_outcome(status.as_u16(), "-");
    let mut out = Response::new(down_body);
    *out.status_mut() = status;
    header_map(&s.state.resp_headers, out.headers_mut());
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        out.headers_mut().append(http::header::SET_COOKIE, c);
    }
    out
}

// 413 for a body over `limits.maxRequestBodyBytes`, as Envoy's buffer filter answers.
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
            let (r, flag) = match e {
                crate::tcp::ForwardError::NoHealthyUpstream(_) => {
                    reply(503, "no healthy upstream", "UH")
                }
                _ => reply(
                    503,
                    "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                    "UF",
                ),
            };
            s.set_outcome(503, flag);
            return r;
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

fn too_large(s: &mut HttpStream) -> Response<UpBody> {
    let (r, _) = reply(413, "Payload Too Large", "-");
    s.set_outcome(413, "-");
    s.state.response_code_details = "request_payload_too_large".into();
    r
}

// Gateway `httpsRedirect`: 301 to the same host (without its port) and path over https,
// as Envoy's `require_tls: ALL` answers before any filter runs; `None` when the request's
// host is not one the listener redirects.
fn https_redirect(
    s: &mut HttpStream,
    l: &crate::snapshot::ListenerSpec,
) -> Option<Response<UpBody>> {
    let host = String::from_utf8_lossy(header(&s.state.req_headers, ":authority")?).into_owned();
    if !l.redirects(&host) {
        return None;
    }
    let path = header(&s.state.req_headers, ":path")
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_else(|| "/".into());
    let (mut r, _) = reply(301, "", "-");
    let location = format!("https://{}{path}", lateen_sdk::matcher::strip_port(&host));
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    s.set_outcome(301, "-");
    s.state.response_code_details = "direct_response".into();
    Some(r)
}

// 408 for a request not received whole within `limits.requestTimeout`, as Envoy answers.
fn request_timed_out(s: &mut HttpStream) -> Response<UpBody> {
    let (mut r, _) = reply(408, "request timeout", "-");
    r.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    s.set_outcome(408, "-");
    s.state.response_code_details = "request_overall_timeout".into();
    r
}

/// Largest request body kept for replays (retries, mirrors).
const REPLAY_LIMIT: u64 = 64 * 1024;

/// How long a mirror may take when its route sets no timeout.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(15);

// Sends fire-and-forget copies of a request to the mirror clusters, with Envoy's `-shadow`
// suffix on the host. A mirror's failure never reaches the client. Each runs as a task of
// the worker, not of the connection, so it is delivered after the client has gone; one
// not answered within `limit` (the route's timeout) is dropped and counted as the mirror
// cluster's `upstream_rq_timeout`.
fn mirror(
    w: &Rc<WorkerCtx>,
    ws: &crate::worker::WorkerSnapshot,
    clusters: &str,
    (method, path, headers, body): (&http::Method, &str, &HeaderMap, &Bytes),
    limit: Duration,
) {
    for name in clusters.split(',').filter(|c| !c.is_empty()) {
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
        let Ok(uri) = format!("http://{}{}", ep.authority, path).parse() else {
            continue;
        };
        *req.uri_mut() = uri;
        let w = w.clone();
        tokio::task::spawn_local(async move {
            match tokio::time::timeout(limit, w.upstream.send(&cluster, req)).await {
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

type Tx = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

// Feeds the request body through the chain into the upstream request.
async fn pump_request(stream: Rc<Mutex<HttpStream>>, mut body: Incoming, tx: Tx) {
    pump(&stream, None, &mut body, &tx, false).await;
}

// Feeds the upstream response body through the chain to the client.
async fn pump_response(
    stream: Rc<Mutex<HttpStream>>,
    first: Option<Result<Frame<Bytes>, hyper::Error>>,
    mut body: Incoming,
    tx: Tx,
) {
    pump(&stream, Some(first), &mut body, &tx, true).await;
}

// `first`, when given, is a frame already read from `body`.
async fn pump(
    stream: &Rc<Mutex<HttpStream>>,
    mut first: Option<Option<Result<Frame<Bytes>, hyper::Error>>>,
    body: &mut Incoming,
    tx: &Tx,
    response: bool,
) {
    loop {
        let frame = match first.take() {
            Some(f) => f,
            None => body.frame().await,
        };
        let mut s = stream.lock().await;
        let (data, trailers, eos) = match frame {
            None => (Bytes::new(), None, true),
            Some(Err(e)) => {
                let _ = tx.send(Err(Box::new(e))).await;
                return;
            }
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => {
                    let eos = body.is_end_stream();
                    (d, None, eos)
                }
                Err(f) => (Bytes::new(), f.into_trailers().ok(), false),
            },
        };
        let st = &mut s.state;
        let (buf, count) = if response {
            (&mut st.resp_body, &mut st.resp_body_bytes)
        } else {
            (&mut st.req_body, &mut st.req_body_bytes)
        };
        *count += data.len() as u64;
        buf.extend_from_slice(&data);
        let verdict = if response {
            s.response_body(eos).await
        } else {
            s.request_body(eos || trailers.is_some()).await
        };
        match verdict {
            Verdict::Buffer if trailers.is_none() => {}
            Verdict::Respond(lr) => {
                // Too late to change the response; before it, the handler answers with it.
                if !response {
                    s.early_reply = Some(lr);
                }
                let _ = tx.send(Err("stream stopped by a plugin".into())).await;
                return;
            }
            _ => {
                let out = std::mem::take(if response {
                    &mut s.state.resp_body
                } else {
                    &mut s.state.req_body
                });
                if !out.is_empty() && tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
                    return;
                }
            }
        }
        if let Some(t) = trailers {
            let list = header_list(&t);
            let mut map = HeaderMap::new();
            if response {
                s.state.resp_trailers = list;
                let _ = s.response_trailers().await;
                header_map(&s.state.resp_trailers, &mut map);
            } else {
                s.state.req_trailers = list;
                let _ = s.request_trailers().await;
                header_map(&s.state.req_trailers, &mut map);
            }
            let _ = tx.send(Ok(Frame::trailers(map))).await;
            return;
        }
        if eos {
            return;
        }
    }
}
