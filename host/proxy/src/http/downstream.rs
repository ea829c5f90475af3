//! Phase 1, the downstream request: what the proxy makes of a request before any filter
//! sees it.

// A phase that ends the request returns its reply as the error: the response is the
// value the caller returns at once, not a failure to box.
#![allow(clippy::result_large_err)]

use super::error::ProxyError;
use super::{https_redirect, ConnInfo, UpBody, XFCC};
use crate::chain::{Chain, HttpStream};
use crate::worker::{WorkerCtx, WorkerSnapshot};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use lateen_wasm::state::{header, HeaderList, StreamInfo};
use lateen_wasm::StreamState;
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Mutex;

/// A request as the filters will see it: the stream (its state holds the request headers)
/// and the body still to read.
pub(super) struct Downstream {
    pub stream: Rc<Mutex<HttpStream>>,
    pub body: Incoming,
    /// The request ends with its headers.
    pub eos: bool,
}

/// Normalizes the path (before any filter or route sees it, as Envoy's `normalize_path`
/// does), builds the pseudo-headers, appends `x-forwarded-for`, sets `x-forwarded-proto`
/// and `x-forwarded-client-cert` (SANITIZE_SET), makes the request id and the trace
/// context; refuses a body declared over the limit and answers the Gateway's
/// `httpsRedirect`.
pub(super) fn request(
    req: Request<Incoming>,
    conn: &ConnInfo,
    w: &WorkerCtx,
    ws: &WorkerSnapshot,
    chain: &Rc<Chain>,
) -> Result<Downstream, Response<UpBody>> {
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
        return Err(ProxyError::BadRequest.response());
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
    let mut s = HttpStream::new(chain.clone(), state, w.upstream.clone(), w.random());
    s.access_log = ws.snap.access_log.clone();
    s.trace = trace;
    if crate::overload::shedding() {
        return Err(ProxyError::Overloaded.respond(&mut s));
    }
    // hyper let the chunked framing win and dropped the length; Envoy refuses the request.
    if parts.headers.contains_key(http::header::TRANSFER_ENCODING)
        && conn.framing.as_ref().is_some_and(|f| f.take())
    {
        return Err(ProxyError::ChunkedWithLength.respond(&mut s));
    }
    if let (Some(max), Some(n)) = (ws.snap.limits.max_request_body_bytes, declared_length) {
        if n > max {
            return Err(ProxyError::PayloadTooLarge.respond(&mut s));
        }
    }
    // Gateway httpsRedirect; listeners without it pay one lookup and nothing else.
    if conn.tls.is_none() {
        let listener = ws.snap.listener(&conn.listener);
        if let Some(l) = listener.filter(|l| !l.https_redirect.is_empty()) {
            if let Some(r) = https_redirect(&mut s, l) {
                return Err(r);
            }
        }
    }
    Ok(Downstream {
        stream: Rc::new(Mutex::new(s)),
        body,
        eos,
    })
}
