//! Access-log formats: Envoy's command operators (Istio's default text format, or JSON),
//! parsed at config load and rendered per stream. The writer is the proxy's.

use lateen_wasm::state::StreamState;
use std::path::PathBuf;
use std::time::SystemTime;

/// Istio's default text format (`meshConfig.accessLogFormat` unset).
pub const ISTIO_TEXT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// Istio's default JSON format (`accessLogEncoding: JSON`), key by key.
pub const ISTIO_JSON: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
];

/// A command operator.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    StartTime,
    /// `REQ(NAME?ALT):MAX`: a request header, or `ALT` when absent, cut to MAX chars.
    Req(String, Option<String>, Option<usize>),
    Resp(String, Option<String>, Option<usize>),
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamLocalAddress,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    RequestedServerName,
    RouteName,
}

impl Op {
    fn numeric(&self) -> bool {
        matches!(
            self,
            Op::ResponseCode | Op::BytesReceived | Op::BytesSent | Op::Duration
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Text(String),
    Op(Op),
}

/// A parsed format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format(Vec<Token>);

/// Why a format string was refused.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("unknown command operator %{0}%")]
    Unknown(String),
    #[error("unterminated command operator at byte {0} (a literal % is written %%)")]
    Unterminated(usize),
    #[error("{0}: expected NAME, NAME?ALTERNATIVE, optionally followed by :MAX_LENGTH")]
    BadHeader(String),
}

fn header_op(
    arg: &str,
    rest: &str,
    whole: &str,
) -> Result<(String, Option<String>, Option<usize>), FormatError> {
    let bad = || FormatError::BadHeader(whole.to_string());
    let max = match rest.strip_prefix(':') {
        Some(n) => Some(n.parse().map_err(|_| bad())?),
        None if rest.is_empty() => None,
        None => return Err(bad()),
    };
    let (name, alt) = match arg.split_once('?') {
        Some((n, a)) => (n, Some(a.to_ascii_lowercase())),
        None => (arg, None),
    };
    if name.is_empty() {
        return Err(bad());
    }
    Ok((name.to_ascii_lowercase(), alt, max))
}

fn parse_op(s: &str) -> Result<Op, FormatError> {
    for (prefix, resp) in [("REQ(", false), ("RESP(", true)] {
        if let Some(body) = s.strip_prefix(prefix) {
            let (arg, rest) = body
                .split_once(')')
                .ok_or_else(|| FormatError::BadHeader(s.to_string()))?;
            let (n, a, m) = header_op(arg, rest, s)?;
            return Ok(if resp {
                Op::Resp(n, a, m)
            } else {
                Op::Req(n, a, m)
            });
        }
    }
    Ok(match s {
        "START_TIME" => Op::StartTime,
        "PROTOCOL" => Op::Protocol,
        "RESPONSE_CODE" => Op::ResponseCode,
        "RESPONSE_FLAGS" => Op::ResponseFlags,
        "RESPONSE_CODE_DETAILS" => Op::ResponseCodeDetails,
        "CONNECTION_TERMINATION_DETAILS" => Op::ConnectionTerminationDetails,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => Op::UpstreamTransportFailureReason,
        "BYTES_RECEIVED" => Op::BytesReceived,
        "BYTES_SENT" => Op::BytesSent,
        "DURATION" => Op::Duration,
        "UPSTREAM_HOST" => Op::UpstreamHost,
        "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => Op::UpstreamCluster,
        "UPSTREAM_LOCAL_ADDRESS" => Op::UpstreamLocalAddress,
        "DOWNSTREAM_LOCAL_ADDRESS" => Op::DownstreamLocalAddress,
        "DOWNSTREAM_REMOTE_ADDRESS" => Op::DownstreamRemoteAddress,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamRemoteAddressWithoutPort,
        "REQUESTED_SERVER_NAME" => Op::RequestedServerName,
        "ROUTE_NAME" => Op::RouteName,
        other => return Err(FormatError::Unknown(other.to_string())),
    })
}

impl Format {
    /// Parses Envoy's format syntax: text with `%OPERATOR%` and `%%` for a literal `%`.
    pub fn parse(s: &str) -> Result<Format, FormatError> {
        let mut out = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        let mut at = 0;
        while let Some(i) = rest.find('%') {
            text.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('%') {
                text.push('%');
                at += i + 2;
                rest = r;
                continue;
            }
            let end = after.find('%').ok_or(FormatError::Unterminated(at + i))?;
            if !text.is_empty() {
                out.push(Token::Text(std::mem::take(&mut text)));
            }
            out.push(Token::Op(parse_op(&after[..end])?));
            at += i + end + 2;
            rest = &after[end + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            out.push(Token::Text(text));
        }
        Ok(Format(out))
    }
}

/// How log lines are encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    Text(Format),
    /// Keys in order, each with its format.
    Json(Vec<(String, Format)>),
}

/// Envoy's `%RESPONSE_CODE_DETAILS%` for a response flag, for replies the host made.
pub fn details_for_flags(flags: &str) -> &'static str {
    match flags {
        "NR" => "route_not_found",
        "NC" => "cluster_not_found",
        "UH" => "no_healthy_upstream",
        "UF" | "URX" => "upstream_reset_before_response_started{connection_failure}",
        "UC" => "upstream_reset_before_response_started{connection_termination}",
        "UO" => "upstream_reset_before_response_started{overflow}",
        "UT" => "upstream_response_timeout",
        "FI" => "fault_filter_abort",
        "RL" => "request_rate_limited",
        "DPE" => "downstream_protocol_error",
        _ => "local_reply",
    }
}

// One operator's value; `None` is Envoy's `-` (null in JSON).
fn value(op: &Op, st: &StreamState, end: SystemTime) -> Option<String> {
    let info = st.info.as_deref();
    let header =
        |list: &lateen_wasm::HeaderList, name: &str, alt: &Option<String>, max: &Option<usize>| {
            let find = |n: &str| {
                lateen_wasm::state::header(list, n).map(|v| String::from_utf8_lossy(v).into_owned())
            };
            let v = find(name).or_else(|| alt.as_deref().and_then(find))?;
            Some(match max {
                Some(m) => v.chars().take(*m).collect(),
                None => v,
            })
        };
    match op {
        Op::StartTime => info.map(|i| humantime::format_rfc3339_millis(i.start).to_string()),
        Op::Req(n, a, m) => header(&st.req_headers, n, a, m),
        Op::Resp(n, a, m) => header(&st.resp_headers, n, a, m),
        Op::Protocol => info.map(|i| i.protocol.to_string()),
        Op::ResponseCode => Some(st.response_code.unwrap_or(0).to_string()),
        Op::ResponseFlags => Some(if st.response_flags.is_empty() {
            "-".into()
        } else {
            st.response_flags.clone()
        }),
        Op::ResponseCodeDetails => {
            (!st.response_code_details.is_empty()).then(|| st.response_code_details.clone())
        }
        Op::ConnectionTerminationDetails | Op::UpstreamTransportFailureReason => None,
        Op::RequestedServerName | Op::UpstreamLocalAddress => None,
        Op::BytesReceived => Some(st.req_body_bytes.to_string()),
        Op::BytesSent => Some(st.resp_body_bytes.to_string()),
        Op::Duration => info.map(|i| {
            end.duration_since(i.start)
                .unwrap_or_default()
                .as_millis()
                .to_string()
        }),
        Op::UpstreamHost => st.upstream_endpoint().map(|(_, e)| e.authority.to_string()),
        Op::UpstreamCluster => st.upstream_endpoint().map(|(c, _)| c.to_string()),
        Op::DownstreamLocalAddress => info.map(|i| i.destination.to_string()),
        Op::DownstreamRemoteAddress => info.map(|i| i.source.to_string()),
        Op::DownstreamRemoteAddressWithoutPort => info.map(|i| i.source.ip().to_string()),
        Op::RouteName => st
            .props
            .get("lateen.route.name")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|v| !v.is_empty()),
    }
}

impl Encoding {
    /// One log line (with its newline) for a finished stream.
    pub fn line(&self, st: &StreamState, end: SystemTime) -> String {
        match self {
            Encoding::Text(f) => {
                let mut out = f.render(st, end);
                if !out.ends_with('\n') {
                    out.push('\n');
                }
                out
            }
            Encoding::Json(fields) => {
                let mut map = serde_json::Map::new();
                for (k, f) in fields {
                    let v = match f.0.as_slice() {
                        // A lone operator keeps its type: numbers stay numbers, `-` is null.
                        [Token::Op(op)] => match value(op, st, end) {
                            None => serde_json::Value::Null,
                            Some(v) if op.numeric() => v
                                .parse::<u64>()
                                .map_or(serde_json::Value::String(v), Into::into),
                            Some(v) => v.into(),
                        },
                        _ => f.render(st, end).into(),
                    };
                    map.insert(k.clone(), v);
                }
                let mut out = serde_json::Value::Object(map).to_string();
                out.push('\n');
                out
            }
        }
    }
}

impl Format {
    /// The format filled in for a stream, `-` for what is unknown.
    fn render(&self, st: &StreamState, end: SystemTime) -> String {
        let mut out = String::new();
        for t in &self.0 {
            match t {
                Token::Text(s) => out.push_str(s),
                Token::Op(op) => out.push_str(value(op, st, end).as_deref().unwrap_or("-")),
            }
        }
        out
    }
}

/// What the config asks for (Bootstrap `telemetry.accessLog`): plain data. The runtime
/// opens the file when it installs a snapshot, and keeps the open
/// log across reloads that leave this unchanged; `lateen validate` opens nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSpec {
    pub path: PathBuf,
    pub encoding: Encoding,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn istio_formats_parse_and_bad_operators_are_named() {
        assert!(Format::parse(ISTIO_TEXT).is_ok());
        for (_, f) in ISTIO_JSON {
            assert!(Format::parse(f).is_ok(), "{f}");
        }
        let e = Format::parse("%RESPONSE_COD%").unwrap_err();
        assert_eq!(e.to_string(), "unknown command operator %RESPONSE_COD%");
        assert!(Format::parse("100%% %DURATION").is_err());
        assert!(Format::parse("%REQ(x-a):ten%").is_err());
    }

    #[test]
    fn lines_render_headers_alternatives_and_missing_values() {
        let st = StreamState {
            req_headers: vec![
                (":method".into(), Bytes::from_static(b"GET")),
                (":path".into(), Bytes::from_static(b"/a/long/path")),
            ],
            response_code: Some(404),
            response_flags: "NR".into(),
            response_code_details: "route_not_found".into(),
            ..StreamState::default()
        };
        let f = Format::parse("%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH):7% 100%% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_HOST%").unwrap();
        assert_eq!(
            Encoding::Text(f).line(&st, SystemTime::now()),
            "GET /a/long 100% 404 NR route_not_found -\n"
        );
        let json = Encoding::Json(vec![
            ("code".into(), Format::parse("%RESPONSE_CODE%").unwrap()),
            ("host".into(), Format::parse("%UPSTREAM_HOST%").unwrap()),
            ("m".into(), Format::parse("%REQ(:METHOD)% x").unwrap()),
        ]);
        assert_eq!(
            json.line(&st, SystemTime::now()),
            "{\"code\":404,\"host\":null,\"m\":\"GET x\"}\n"
        );
    }
}
