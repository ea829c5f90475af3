//! Body types: what the proxy sends upstream and downstream.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body sent upstream and downstream.
pub type UpBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body fed frame by frame from a task (the one running the filters over the stream).
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
}

impl ChannelBody {
    pub fn new(depth: usize) -> (mpsc::Sender<Result<Frame<Bytes>, BoxError>>, Self) {
        let (tx, rx) = mpsc::channel(depth);
        (tx, ChannelBody { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The whole request did not arrive in time (Envoy's `request_timeout`): answered 408.
#[derive(Debug)]
pub struct RequestTimeout;

impl std::fmt::Display for RequestTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request timeout")
    }
}

impl std::error::Error for RequestTimeout {}

/// No frame of a body for the stream idle timeout (Envoy's `stream_idle_timeout`): a
/// request body gets 408, a response body the stream reset.
#[derive(Debug)]
pub struct StreamIdleTimeout;

impl std::fmt::Display for StreamIdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stream timeout")
    }
}

impl std::error::Error for StreamIdleTimeout {}

/// A body bounded in time: it fails with [`RequestTimeout`] if it has not ended by a
/// deadline (a client trickling its body, slow POST, cannot hold a request open), and with
/// [`StreamIdleTimeout`] when no frame comes for the idle time.
pub struct TimedBody<B> {
    inner: B,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    idle: Option<(std::time::Duration, Pin<Box<tokio::time::Sleep>>)>,
}

impl<B> TimedBody<B> {
    pub fn new(
        inner: B,
        deadline: Option<tokio::time::Instant>,
        idle: Option<std::time::Duration>,
    ) -> Self {
        TimedBody {
            inner,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            idle: idle.map(|t| (t, Box::pin(tokio::time::sleep(t)))),
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some((t, sleep)) = this.idle.as_mut() {
                sleep.as_mut().reset(tokio::time::Instant::now() + *t);
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if let Some(sleep) = this.deadline.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(Box::new(RequestTimeout))));
            }
        }
        if let Some((_, sleep)) = this.idle.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(Box::new(StreamIdleTimeout))));
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `e` or one of its causes is a [`StreamIdleTimeout`].
pub fn is_stream_idle_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<StreamIdleTimeout>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Whether `e` or one of its causes is a [`RequestTimeout`].
pub fn is_request_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<RequestTimeout>() {
            return true;
        }
        cur = e.source();
    }
    false
}
