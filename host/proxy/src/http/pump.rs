//! The body pumps: a body that streams passes the chain's body callbacks frame by frame,
//! on a task of its own.

use super::{header_list, header_map};
use crate::body::BoxError;
use crate::chain::{HttpStream, Verdict};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::Mutex;

type Tx = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>;
type Next = Option<Result<Frame<Bytes>, BoxError>>;

/// The next frame of `body`; a [`crate::body::StreamIdleTimeout`] error when none comes
/// within `idle` (Envoy's `stream_idle_timeout`).
pub(super) async fn next_frame(body: &mut Incoming, idle: Option<Duration>) -> Next {
    let frame = match idle {
        None => body.frame().await,
        Some(t) => match tokio::time::timeout(t, body.frame()).await {
            Ok(f) => f,
            Err(_) => return Some(Err(Box::new(crate::body::StreamIdleTimeout))),
        },
    };
    frame.map(|f| f.map_err(|e| -> BoxError { Box::new(e) }))
}

/// Feeds the request body through the chain into the upstream request. (Its idle time is
/// bounded where the upstream request reads it, [`crate::body::TimedBody`].)
pub(super) async fn request(stream: Rc<Mutex<HttpStream>>, mut body: Incoming, tx: Tx) {
    pump(&stream, None, &mut body, &tx, false, None).await;
}

/// Feeds the upstream response body through the chain to the client; a gap longer than
/// `idle` between two frames resets the stream.
pub(super) async fn response(
    stream: Rc<Mutex<HttpStream>>,
    first: Next,
    mut body: Incoming,
    tx: Tx,
    idle: Option<Duration>,
) {
    pump(&stream, Some(first), &mut body, &tx, true, idle).await;
}

// `first`, when given, is a frame already read from `body`.
async fn pump(
    stream: &Rc<Mutex<HttpStream>>,
    mut first: Option<Next>,
    body: &mut Incoming,
    tx: &Tx,
    response: bool,
    idle: Option<Duration>,
) {
    loop {
        let frame = match first.take() {
            Some(f) => f,
            None => next_frame(body, idle).await,
        };
        let mut s = stream.lock().await;
        let (data, trailers, eos) = match frame {
            None => (Bytes::new(), None, true),
            Some(Err(e)) => {
                let _ = tx.send(Err(e)).await;
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
