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
use tokio::sync::Mutex;

type Tx = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

/// Feeds the request body through the chain into the upstream request.
pub(super) async fn request(stream: Rc<Mutex<HttpStream>>, mut body: Incoming, tx: Tx) {
    pump(&stream, None, &mut body, &tx, false).await;
}

/// Feeds the upstream response body through the chain to the client.
pub(super) async fn response(
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
