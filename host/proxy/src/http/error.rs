//! Why a stream ended without the upstream's answer, typed: who failed, the Envoy response
//! flag and details it is logged with, and whether a retry policy may retry it.
//! [`ProxyError::respond`] is the one place such an ending becomes a reply and an outcome
//! (the `response.*` properties the log phase and the access log read).

use crate::body::UpBody;
use crate::chain::HttpStream;
use crate::upstream::full;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use lateen_wasm::state::LocalResponse;

/// Who failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client: a malformed, oversized or too slow request.
    Downstream,
    /// The upstream cluster or its endpoints.
    Upstream,
    /// A filter answered the request itself (a fault abort, a rate limit, a denial, a
    /// plugin's own reply).
    Plugin,
    /// The proxy's config: no route, or a route to a cluster it does not have.
    Internal,
}

/// A stream that ended without an upstream response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The path does not parse, or the body broke off (400 DPE).
    #[error("bad request")]
    BadRequest,
    /// An HTTP/1.1 request framed by both Content-Length and Transfer-Encoding (400 DPE,
    /// as Envoy answers unless `allow_chunked_length` is set).
    #[error("both content-length and transfer-encoding")]
    ChunkedWithLength,
    /// A body over `limits.maxRequestBodyBytes` (413, as Envoy's buffer filter answers).
    #[error("request body over the limit")]
    PayloadTooLarge,
    /// The request was not received whole within `limits.requestTimeout` (408).
    #[error("request not received in time")]
    RequestTimeout,
    /// No frame of the request body for `limits.streamIdleTimeout` (408 SI, as Envoy's
    /// `stream_idle_timeout` answers).
    #[error("stream idle timeout")]
    StreamIdleTimeout,
    /// No route took the request (404 NR).
    #[error("no route")]
    NoRoute,
    /// The route decision names a cluster the snapshot does not have, or does not parse
    /// (503 NC).
    #[error("route decision names an unknown cluster")]
    NoCluster,
    /// The process's memory is at its limit: new requests are shed (503 OM,
    /// `x-envoy-overloaded`, as Envoy's `stop_accepting_requests`).
    #[error("overloaded")]
    Overloaded,
    /// The circuit breaker refused the request (503 UO, `x-envoy-overloaded`).
    #[error("upstream overflow")]
    Overflow,
    /// Every endpoint is ejected, or there is none (503 UH).
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    /// No connection could be made (503 UF; URX once retries were spent).
    #[error("upstream connection failure")]
    ConnectFailure { retried: bool },
    /// The connection broke before the response headers (503 UC; URX after retries).
    #[error("upstream reset before headers")]
    Reset { retried: bool },
    /// The route's timeout passed with no response (504 UT).
    #[error("upstream request timeout")]
    UpstreamTimeout,
    /// The upstream request cannot be built (an authority or path the URI refuses).
    #[error("invalid upstream request")]
    InvalidUpstreamRequest,
    /// A filter's local reply: its status, headers and body, and its flags (FI, RL, ...)
    /// from the `lateen.response_flags` property it set.
    #[error("local reply {} from a filter", .0.status)]
    Plugin(LocalResponse),
}

const CONNECT_FAILURE: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
const RESET: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
const OVERFLOW: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";

impl ProxyError {
    pub fn origin(&self) -> Origin {
        match self {
            Self::BadRequest
            | Self::ChunkedWithLength
            | Self::PayloadTooLarge
            | Self::RequestTimeout
            | Self::StreamIdleTimeout => Origin::Downstream,
            Self::NoRoute | Self::NoCluster | Self::InvalidUpstreamRequest | Self::Overloaded => {
                Origin::Internal
            }
            Self::Overflow
            | Self::NoHealthyUpstream
            | Self::ConnectFailure { .. }
            | Self::Reset { .. }
            | Self::UpstreamTimeout => Origin::Upstream,
            Self::Plugin(_) => Origin::Plugin,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest | Self::ChunkedWithLength => 400,
            Self::PayloadTooLarge => 413,
            Self::RequestTimeout | Self::StreamIdleTimeout => 408,
            Self::NoRoute => 404,
            Self::UpstreamTimeout => 504,
            Self::NoCluster
            | Self::Overloaded
            | Self::Overflow
            | Self::NoHealthyUpstream
            | Self::ConnectFailure { .. }
            | Self::Reset { .. }
            | Self::InvalidUpstreamRequest => 503,
            Self::Plugin(lr) => lr.status,
        }
    }

    /// Envoy's response flag (`-` for none); a plugin's reply carries its own.
    pub fn flag(&self) -> &'static str {
        match self {
            Self::BadRequest | Self::ChunkedWithLength | Self::InvalidUpstreamRequest => "DPE",
            Self::PayloadTooLarge | Self::RequestTimeout | Self::Plugin(_) => "-",
            Self::NoRoute => "NR",
            Self::StreamIdleTimeout => "SI",
            Self::Overloaded => "OM",
            Self::NoCluster => "NC",
            Self::Overflow => "UO",
            Self::NoHealthyUpstream => "UH",
            Self::ConnectFailure { retried: true } | Self::Reset { retried: true } => "URX",
            Self::ConnectFailure { retried: false } => "UF",
            Self::Reset { retried: false } => "UC",
            Self::UpstreamTimeout => "UT",
        }
    }

    /// Envoy's `response_code_details`.
    pub fn details(&self) -> &'static str {
        match self {
            Self::PayloadTooLarge => "request_payload_too_large",
            Self::ChunkedWithLength => "http1.content_length_and_chunked_not_allowed",
            Self::Overloaded => "overload",
            Self::RequestTimeout => "request_overall_timeout",
            Self::StreamIdleTimeout => "stream_idle_timeout",
            Self::Plugin(_) => "local_reply",
            e => lateen_model::access_log::details_for_flags(e.flag()),
        }
    }

    /// Whether a retry policy may retry it (`connect-failure`, `reset`, a per-try
    /// timeout): what failed was one try to one endpoint, not the request.
    pub fn retriable(&self) -> bool {
        matches!(
            self,
            Self::ConnectFailure { .. } | Self::Reset { .. } | Self::UpstreamTimeout
        )
    }

    fn body(&self) -> &'static str {
        match self {
            Self::BadRequest | Self::ChunkedWithLength => "Bad Request",
            Self::PayloadTooLarge => "Payload Too Large",
            Self::RequestTimeout => "request timeout",
            Self::StreamIdleTimeout => "stream timeout",
            Self::NoRoute | Self::Plugin(_) => "",
            Self::NoCluster => "route decision names an unknown cluster",
            Self::Overflow => OVERFLOW,
            Self::Overloaded => "envoy overloaded",
            Self::NoHealthyUpstream => "no healthy upstream",
            Self::ConnectFailure { .. } => CONNECT_FAILURE,
            Self::Reset { .. } => RESET,
            Self::UpstreamTimeout => "upstream request timeout",
            Self::InvalidUpstreamRequest => "invalid upstream request",
        }
    }

    /// The reply, without recording it on a stream (a request refused before its stream
    /// exists).
    pub fn response(self) -> Response<UpBody> {
        let (status, body, headers) = match self {
            Self::Plugin(lr) => (lr.status, lr.body, lr.headers),
            ref e => (
                e.status(),
                Bytes::from_static(e.body().as_bytes()),
                Vec::new(),
            ),
        };
        let mut r = Response::new(full(body.clone()));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        if !body.is_empty() {
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            );
        }
        super::header_map(&headers, r.headers_mut());
        r
    }

    /// Records the ending on the stream (code, flags, details: what the log phase and the
    /// access log read) and makes the reply.
    pub fn respond(self, s: &mut HttpStream) -> Response<UpBody> {
        match &self {
            Self::Plugin(lr) => s.set_local_outcome(lr),
            e => {
                s.set_outcome(e.status(), e.flag());
                s.state.response_code_details = e.details().into();
            }
        }
        let extra = match &self {
            Self::Overflow | Self::Overloaded => Some(("x-envoy-overloaded", "true")),
            // The rest of the request may never come: the connection is not reused.
            Self::RequestTimeout | Self::StreamIdleTimeout | Self::ChunkedWithLength => {
                Some(("connection", "close"))
            }
            _ => None,
        };
        let mut r = self.response();
        if let Some((k, v)) = extra {
            r.headers_mut().insert(k, HeaderValue::from_static(v));
        }
        r
    }
}

impl From<crate::tcp::ForwardError> for ProxyError {
    fn from(e: crate::tcp::ForwardError) -> Self {
        match e {
            crate::tcp::ForwardError::NoHealthyUpstream(_) => ProxyError::NoHealthyUpstream,
            _ => ProxyError::ConnectFailure { retried: false },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_says_who_failed_its_code_flag_and_details() {
        let cases: Vec<(ProxyError, Origin, u16, &str, &str, bool)> = vec![
            (
                ProxyError::BadRequest,
                Origin::Downstream,
                400,
                "DPE",
                "downstream_protocol_error",
                false,
            ),
            (
                ProxyError::StreamIdleTimeout,
                Origin::Downstream,
                408,
                "SI",
                "stream_idle_timeout",
                false,
            ),
            (
                ProxyError::Overloaded,
                Origin::Internal,
                503,
                "OM",
                "overload",
                false,
            ),
            (
                ProxyError::ChunkedWithLength,
                Origin::Downstream,
                400,
                "DPE",
                "http1.content_length_and_chunked_not_allowed",
                false,
            ),
            (
                ProxyError::PayloadTooLarge,
                Origin::Downstream,
                413,
                "-",
                "request_payload_too_large",
                false,
            ),
            (
                ProxyError::RequestTimeout,
                Origin::Downstream,
                408,
                "-",
                "request_overall_timeout",
                false,
            ),
            (
                ProxyError::NoRoute,
                Origin::Internal,
                404,
                "NR",
                "route_not_found",
                false,
            ),
            (
                ProxyError::NoCluster,
                Origin::Internal,
                503,
                "NC",
                "cluster_not_found",
                false,
            ),
            (
                ProxyError::Overflow,
                Origin::Upstream,
                503,
                "UO",
                "upstream_reset_before_response_started{overflow}",
                false,
            ),
            (
                ProxyError::NoHealthyUpstream,
                Origin::Upstream,
                503,
                "UH",
                "no_healthy_upstream",
                false,
            ),
            (
                ProxyError::ConnectFailure { retried: false },
                Origin::Upstream,
                503,
                "UF",
                "upstream_reset_before_response_started{connection_failure}",
                true,
            ),
            (
                ProxyError::ConnectFailure { retried: true },
                Origin::Upstream,
                503,
                "URX",
                "upstream_reset_before_response_started{connection_failure}",
                true,
            ),
            (
                ProxyError::Reset { retried: false },
                Origin::Upstream,
                503,
                "UC",
                "upstream_reset_before_response_started{connection_termination}",
                true,
            ),
            (
                ProxyError::UpstreamTimeout,
                Origin::Upstream,
                504,
                "UT",
                "upstream_response_timeout",
                true,
            ),
            (
                ProxyError::InvalidUpstreamRequest,
                Origin::Internal,
                503,
                "DPE",
                "downstream_protocol_error",
                false,
            ),
        ];
        for (e, origin, status, flag, details, retriable) in cases {
            let name = format!("{e:?}");
            assert_eq!(e.origin(), origin, "{name}");
            assert_eq!(e.status(), status, "{name}");
            assert_eq!(e.flag(), flag, "{name}");
            assert_eq!(e.details(), details, "{name}");
            assert_eq!(e.retriable(), retriable, "{name}");
            let r = e.response();
            assert_eq!(r.status().as_u16(), status, "{name}");
        }
    }

    #[test]
    fn a_plugin_reply_keeps_its_status_headers_and_body() {
        let lr = LocalResponse {
            status: 429,
            body: Bytes::from_static(b"slow down"),
            headers: vec![("x-ratelimited".into(), Bytes::from_static(b"1"))],
            details: String::new(),
            grpc_status: -1,
        };
        let e = ProxyError::Plugin(lr);
        assert_eq!(
            (e.origin(), e.status(), e.retriable()),
            (Origin::Plugin, 429, false)
        );
        let r = e.response();
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers()["x-ratelimited"], "1");
        assert_eq!(r.headers()["content-type"], "text/plain");
    }
}
