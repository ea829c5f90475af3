//! Distributed tracing: W3C trace context and B3 (multi and single header) propagation, one
//! span per request, exported over OTLP/HTTP (protobuf) in batches from a background thread.
//!
//! As Envoy's tracer, the proxy takes the incoming context (or starts a trace), makes its
//! own span a child of the caller's, and sends its span id upstream in every format, so
//! that a chain of proxies and apps shares one trace whichever headers each one reads.

use bytes::Bytes;
use lateen_model::TracingSpec;
use lateen_wasm::state::StreamState;
use lateen_wasm::HeaderList;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime};

/// The caller's trace context, from whichever header carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub trace_id: [u8; 16],
    pub parent: Option<[u8; 8]>,
    /// The caller's sampling decision, if it made one.
    pub sampled: Option<bool>,
    /// A `b3` single header came in: answer in kind.
    pub b3_single: bool,
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    (out != [0u8; N]).then_some(out)
}

// A 64-bit B3 trace id is the low half of a 128-bit one.
fn trace_id(s: &str) -> Option<[u8; 16]> {
    match s.len() {
        32 => hex_bytes(s),
        16 => hex_bytes::<8>(s).map(|low| {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            id
        }),
        _ => None,
    }
}

fn b3_sampled(v: &str) -> Option<bool> {
    match v {
        "1" | "true" | "d" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn get<'a>(h: &'a HeaderList, name: &str) -> Option<&'a str> {
    lateen_wasm::state::header(h, name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
}

/// Reads the incoming context: `traceparent`, then `b3`, then the `x-b3-*` headers. A
/// malformed header is ignored (a new trace starts), as the W3C spec asks.
pub fn extract(h: &HeaderList) -> Option<Incoming> {
    if let Some(tp) = get(h, "traceparent") {
        let parts: Vec<&str> = tp.split('-').collect();
        if let [version, trace, span, flags] = parts.as_slice() {
            if *version == "00" {
                let flags = (flags.len() == 2)
                    .then(|| u8::from_str_radix(flags, 16).ok())
                    .flatten();
                if let (Some(trace_id), Some(span), Some(flags)) =
                    (hex_bytes::<16>(trace), hex_bytes::<8>(span), flags)
                {
                    return Some(Incoming {
                        trace_id,
                        parent: Some(span),
                        sampled: Some(flags & 1 == 1),
                        b3_single: false,
                    });
                }
            }
        }
    }
    if let Some(b3) = get(h, "b3") {
        let parts: Vec<&str> = b3.split('-').collect();
        if parts.len() >= 2 {
            if let (Some(trace_id), Some(span)) = (trace_id(parts[0]), hex_bytes::<8>(parts[1])) {
                return Some(Incoming {
                    trace_id,
                    parent: Some(span),
                    sampled: parts.get(2).and_then(|s| b3_sampled(s)),
                    b3_single: true,
                });
            }
        }
    }
    let trace = get(h, "x-b3-traceid").and_then(trace_id)?;
    Some(Incoming {
        trace_id: trace,
        parent: get(h, "x-b3-spanid").and_then(hex_bytes::<8>),
        sampled: if get(h, "x-b3-flags") == Some("1") {
            Some(true)
        } else {
            get(h, "x-b3-sampled").and_then(b3_sampled)
        },
        b3_single: false,
    })
}

/// This proxy's span, from the request's start.
#[derive(Debug, Clone)]
pub struct SpanStart {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub sampled: bool,
    pub start: SystemTime,
}

fn set(h: &mut HeaderList, name: &str, value: String) {
    h.retain(|(k, _)| k != name);
    h.push((name.to_string(), Bytes::from(value)));
}

/// Writes this span's context into the request headers for the upstream: `traceparent`
/// (with `tracestate` passed on untouched), the `x-b3-*` headers, and `b3` when the caller
/// used it.
pub fn inject(h: &mut HeaderList, s: &SpanStart, b3_single: bool) {
    let trace = hex::encode(s.trace_id);
    let span = hex::encode(s.span_id);
    let flag = if s.sampled { "1" } else { "0" };
    set(h, "traceparent", format!("00-{trace}-{span}-0{flag}"));
    set(h, "x-b3-traceid", trace.clone());
    set(h, "x-b3-spanid", span.clone());
    set(h, "x-b3-sampled", flag.to_string());
    match s.parent {
        Some(p) => set(h, "x-b3-parentspanid", hex::encode(p)),
        None => h.retain(|(k, _)| k != "x-b3-parentspanid"),
    }
    if b3_single {
        let parent = s
            .parent
            .map(|p| format!("-{}", hex::encode(p)))
            .unwrap_or_default();
        set(h, "b3", format!("{trace}-{span}-{flag}{parent}"));
    }
}

/// Spans waiting for export, at most; more are dropped (tracing never slows requests).
const QUEUE: usize = 8192;
/// A batch leaves when it has this many spans, or after `LINGER`.
const BATCH: usize = 512;
const LINGER: Duration = Duration::from_millis(200);

/// The running tracer: its settings and its exporter thread.
pub struct Tracer {
    pub spec: TracingSpec,
    tx: SyncSender<Span>,
}

impl Tracer {
    /// Starts the exporter thread; it flushes and stops when the tracer is dropped.
    pub fn start(spec: &TracingSpec) -> std::io::Result<Tracer> {
        let (tx, rx) = sync_channel(QUEUE);
        let (url, svc) = (spec.endpoint.clone(), spec.service.clone());
        std::thread::Builder::new()
            .name("lateen-otlp".into())
            .spawn(move || export_loop(rx, &url, &svc))?;
        Ok(Tracer {
            spec: spec.clone(),
            tx,
        })
    }

    /// Starts this proxy's span for a request, and rewrites its trace headers.
    pub fn begin(&self, h: &mut HeaderList, random: u64) -> SpanStart {
        let incoming = extract(h);
        let mut trace_id = [0u8; 16];
        // Any `b3` header is rewritten, even when another format carried the context:
        // a stale one would name the wrong parent to the next hop.
        let b3_single = get(h, "b3").is_some();
        let (parent, sampled) = match &incoming {
            Some(i) => {
                trace_id = i.trace_id;
                (i.parent, i.sampled)
            }
            None => {
                trace_id[..8].copy_from_slice(&rand::random::<u64>().to_be_bytes());
                trace_id[8..].copy_from_slice(&random.to_be_bytes());
                (None, None)
            }
        };
        let sampled =
            sampled.unwrap_or_else(|| (random % 10_000) as f64 / 100.0 < self.spec.sampling);
        let span_id = loop {
            let id = rand::random::<u64>();
            if id != 0 {
                break id.to_be_bytes();
            }
        };
        let s = SpanStart {
            trace_id,
            span_id,
            parent,
            sampled,
            start: SystemTime::now(),
        };
        inject(h, &s, b3_single);
        s
    }

    /// Ends a sampled span with what the stream did, and queues it for export.
    pub fn finish(&self, s: &SpanStart, st: &StreamState) {
        if !s.sampled {
            return;
        }
        let req = |n: &str| get(&st.req_headers, n).unwrap_or("").to_string();
        let authority = req(":authority");
        let path = req(":path");
        let code = st.response_code.unwrap_or(0);
        let mut attrs = vec![
            kv("http.method", req(":method")),
            kv("http.url", format!("http://{authority}{path}")),
            kv(
                "http.protocol",
                st.info.as_ref().map_or("", |i| i.protocol).to_string(),
            ),
            kv_int("http.status_code", i64::from(code)),
            kv("user_agent", req("user-agent")),
            kv("guid:x-request-id", req("x-request-id")),
            kv("response_flags", st.response_flags.clone()),
            kv("component", "proxy".into()),
            kv_int("request_size", st.req_body_bytes as i64),
            kv_int("response_size", st.resp_body_bytes as i64),
        ];
        if let Some(i) = &st.info {
            attrs.push(kv("peer.address", i.source.ip().to_string()));
        }
        if let Some((c, e)) = st.upstream_endpoint() {
            attrs.push(kv("upstream_cluster", c.to_string()));
            attrs.push(kv("upstream_address", e.authority.to_string()));
        }
        let nanos = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        };
        let path_only = path.split('?').next().unwrap_or("");
        let span = Span {
            trace_id: s.trace_id.to_vec(),
            span_id: s.span_id.to_vec(),
            parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: format!("{authority}{path_only}"),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: nanos(s.start),
            end_time_unix_nano: nanos(SystemTime::now()),
            attributes: attrs,
            status: Some(Status {
                code: if code >= 500 || code == 0 {
                    status::StatusCode::Error as i32
                } else {
                    status::StatusCode::Unset as i32
                },
                message: String::new(),
            }),
            ..Span::default()
        };
        // A full queue drops the span rather than slow the request.
        let _ = self.tx.try_send(span);
    }
}

fn kv(key: &str, v: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..KeyValue::default()
    }
}

fn kv_int(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..KeyValue::default()
    }
}

// Collects spans into batches and posts them; returns when every sender is gone.
fn export_loop(rx: Receiver<Span>, url: &str, service: &str) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let (connector, _) = crate::connector::https_connector();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let mut batch: Vec<Span> = Vec::new();
    let mut first: Option<Instant> = None;
    loop {
        let wait = first.map_or(LINGER, |t| LINGER.saturating_sub(t.elapsed()));
        let closed = match rx.recv_timeout(wait) {
            Ok(s) => {
                first.get_or_insert_with(Instant::now);
                batch.push(s);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let due = first.is_some_and(|t| t.elapsed() >= LINGER) || batch.len() >= BATCH;
        if !batch.is_empty() && (due || closed) {
            let body = encode(service, std::mem::take(&mut batch));
            first = None;
            let sent = rt.block_on(post(&client, url, body));
            if let Err(e) = sent {
                tracing::warn!("exporting spans to {url}: {e}");
            }
        }
        if closed {
            return;
        }
    }
}

fn encode(service: &str, spans: Vec<Span>) -> Bytes {
    use prost::Message;
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service.to_string())],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(
                    opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                        name: "lateen".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    },
                ),
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    };
    Bytes::from(req.encode_to_vec())
}

async fn post<C>(
    client: &hyper_util::client::legacy::Client<C, http_body_util::Full<Bytes>>,
    url: &str,
    body: Bytes,
) -> Result<(), String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(http_body_util::Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| "timed out after 5 s".to_string())?
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {}", resp.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderList {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Bytes::from(v.to_string())))
            .collect()
    }

    #[test]
    fn contexts_are_read_from_w3c_and_both_b3_forms() {
        let w3c = extract(&h(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]))
        .unwrap();
        assert_eq!(
            hex::encode(w3c.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            w3c.parent.map(hex::encode).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(w3c.sampled, Some(true));
        let single = extract(&h(&[("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-0")])).unwrap();
        assert_eq!(
            hex::encode(single.trace_id),
            "000000000000000080f198ee56343ba8"
        );
        assert_eq!(single.sampled, Some(false));
        assert!(single.b3_single);
        let multi = extract(&h(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ]))
        .unwrap();
        assert_eq!(multi.sampled, None);
        assert_eq!(
            multi.parent.map(hex::encode).as_deref(),
            Some("a2fb4a1d1a96d312")
        );
        // Malformed: a new trace.
        assert_eq!(
            extract(&h(&[("traceparent", "00-zz-00f067aa0ba902b7-01")])),
            None
        );
        assert_eq!(
            extract(&h(&[(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
            )])),
            None
        );
    }

    #[test]
    fn injection_writes_every_format_with_the_new_span() {
        let mut headers = h(&[
            ("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-1"),
            ("tracestate", "k=v"),
        ]);
        let s = SpanStart {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: Some([3; 8]),
            sampled: true,
            start: SystemTime::now(),
        };
        inject(&mut headers, &s, true);
        let g = |n| get(&headers, n).unwrap().to_string();
        assert_eq!(
            g("traceparent"),
            format!("00-{}-{}-01", "01".repeat(16), "02".repeat(8))
        );
        assert_eq!(g("x-b3-parentspanid"), "03".repeat(8));
        assert_eq!(
            g("b3"),
            format!(
                "{}-{}-1-{}",
                "01".repeat(16),
                "02".repeat(8),
                "03".repeat(8)
            )
        );
        assert_eq!(g("tracestate"), "k=v");
    }
}
