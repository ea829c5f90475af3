//! Phase 6, the response: protocol upgrades, the chain's response callbacks and the body
//! back to the client.

use super::error::ProxyError;
use super::forward::Answered;
use super::{header_list, header_map};
use crate::body::{BoxError, ChannelBody, UpBody};
use crate::chain::{HttpStream, Verdict};
use crate::cluster::Cluster;
use crate::upstream::full;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use lateen_wasm::state::header;
use std::rc::Rc;
use std::sync::Arc;
use tokio::sync::{Mutex, MutexGuard};

/// Splices an upgraded connection, runs the response filters over the headers and the
/// body (a one-frame body passes them here and leaves in one write; a longer one is pumped
/// through them), and builds the response to the client.
pub(super) async fn response<'a>(
    stream: &'a Rc<Mutex<HttpStream>>,
    mut s: MutexGuard<'a, HttpStream>,
    answered: Answered,
    chain_empty: bool,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
    cluster: &Arc<Cluster>,
    idle: Option<std::time::Duration>,
) -> Response<UpBody> {
    let Answered {
        resp,
        sent,
        set_cookie,
    } = answered;
    let mut resp = resp;
    // The upstream switched protocols: once the 101 has gone down, the two connections
    // are spliced byte for byte.
    if let (Some(down), StatusCode::SWITCHING_PROTOCOLS) = (downstream_upgrade, resp.status()) {
        let up = hyper::upgrade::on(&mut resp);
        let idle = crate::tcp::idle_timeout(cluster);
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
        return ProxyError::Plugin(lr).respond(&mut s);
    }
    let mut rbody = rbody;
    let down_body: UpBody = if reos {
        full(Bytes::new())
    } else if chain_empty {
        match idle {
            Some(_) => crate::body::TimedBody::new(rbody, None, idle).boxed_unsync(),
            None => rbody
                .map_err(|e| -> BoxError { Box::new(e) })
                .boxed_unsync(),
        }
    } else {
        // Read the first frame before answering. Most responses are one frame: they then
        // pass the body callbacks here and leave in a single write, with no pump task (and
        // a plugin may still replace the whole response).
        drop(s);
        let first = super::pump::next_frame(&mut rbody, idle).await;
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
                    return ProxyError::Plugin(lr).respond(&mut s);
                }
                full(Bytes::from(std::mem::take(&mut s.state.resp_body)))
            }
            None => {
                let (tx, rx) = ChannelBody::new(4);
                tokio::task::spawn_local(super::pump::response(
                    stream.clone(),
                    first,
                    rbody,
                    tx,
                    idle,
                ));
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
