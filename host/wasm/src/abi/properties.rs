//! Properties: the attributes Envoy exposes (`request.*`, `source.*`, `destination.*`,
//! `response.*`, `plugin_*`), plus whatever plugins set (filter state, including the route
//! decision). Strings are raw bytes; integers are 8-byte little-endian, as in Envoy.

use super::{borrow, give, guest_fault, ok, read, Ctx};
use crate::state::HostState;
use crate::types::Status;
use bytes::Bytes;
use std::time::UNIX_EPOCH;
use wasmtime::{Linker, Result};

fn int(v: i64) -> Bytes {
    Bytes::copy_from_slice(&v.to_le_bytes())
}

/// The approximate uncompressed size of a header block, as Envoy's `*.total_size` counts.
fn headers_size(h: &crate::HeaderList) -> u64 {
    h.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
}

fn header<'a>(s: &'a HostState, name: &str) -> Option<&'a Bytes> {
    s.cur
        .req_headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Resolves a dotted property path for the current stream.
pub fn property(s: &HostState, path: &str) -> Option<Bytes> {
    if let Some(v) = s.cur.props.get(path) {
        return Some(v.clone());
    }
    let info = s.cur.info.as_deref();
    let v = match path {
        "plugin_name" => Bytes::from(s.plugin.name.clone()),
        "plugin_root_id" => Bytes::from(s.plugin.root_id.clone()),
        "plugin_vm_id" => Bytes::from(s.plugin.vm_id.clone()),
        "request.path" => header(s, ":path")?.clone(),
        "request.url_path" => {
            let p = header(s, ":path")?;
            let end = p.iter().position(|b| *b == b'?').unwrap_or(p.len());
            p.slice(..end)
        }
        "request.query" => {
            let p = header(s, ":path")?;
            let start = p.iter().position(|b| *b == b'?').map_or(p.len(), |i| i + 1);
            p.slice(start..)
        }
        "request.host" => header(s, ":authority")?.clone(),
        "request.method" => header(s, ":method")?.clone(),
        "request.scheme" => header(s, ":scheme")?.clone(),
        "request.useragent" => header(s, "user-agent")?.clone(),
        "request.referer" => header(s, "referer")?.clone(),
        "request.id" => Bytes::from(info?.request_id.clone()),
        "request.protocol" => Bytes::from_static(info?.protocol.as_bytes()),
        "request.time" => {
            let t = info?.start.duration_since(UNIX_EPOCH).ok()?;
            int(t.as_nanos() as i64)
        }
        "source.address" => Bytes::from(info?.source.to_string()),
        "source.port" => int(i64::from(info?.source.port())),
        "destination.address" => Bytes::from(info?.destination.to_string()),
        "destination.port" => int(i64::from(info?.destination.port())),
        "response.code" => int(i64::from(s.cur.response_code?)),
        "response.flags" => match s.cur.props.get("lateen.response_flags") {
            Some(f) if s.cur.response_flags.is_empty() => f.clone(),
            _ => Bytes::from(s.cur.response_flags.clone()),
        },
        "response.code_details" if !s.cur.response_code_details.is_empty() => {
            Bytes::from(s.cur.response_code_details.clone())
        }
        "request.size" => int(s.cur.req_body_bytes as i64),
        "request.total_size" => {
            int((headers_size(&s.cur.req_headers) + s.cur.req_body_bytes) as i64)
        }
        "response.size" => int(s.cur.resp_body_bytes as i64),
        "response.total_size" => {
            int((headers_size(&s.cur.resp_headers) + s.cur.resp_body_bytes) as i64)
        }
        // Envoy serialises durations as int64 nanoseconds.
        "request.duration" => int(info?
            .start
            .elapsed()
            .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)),
        // The downstream TLS session (Envoy's `connection.*` attributes).
        "connection.mtls" => {
            let peer = info?.tls.as_ref().is_some_and(|t| t.peer.is_some());
            Bytes::from_static(if peer { &[1] } else { &[0] })
        }
        "connection.tls_version" => Bytes::from_static(info?.tls.as_ref()?.version.as_bytes()),
        "connection.requested_server_name" => Bytes::from(info?.tls.as_ref()?.sni.clone()?),
        "connection.uri_san_peer_certificate" => Bytes::from(peer(info)?.uri_sans.first()?.clone()),
        "connection.dns_san_peer_certificate" => Bytes::from(peer(info)?.dns_sans.first()?.clone()),
        "connection.subject_peer_certificate" => Bytes::from(peer(info)?.subject.clone()),
        "connection.sha256_peer_certificate_digest" => {
            Bytes::from(info?.tls.as_ref()?.peer_fingerprint.clone()?)
        }
        // Istio's principal of the peer: its SPIFFE id without `spiffe://`.
        "source.principal" => Bytes::from(peer(info)?.principal()?.to_string()),
        "upstream.address" => Bytes::from(s.cur.upstream_endpoint()?.1.authority.to_string()),
        "listener_name" | "xds.listener_name" => Bytes::from(info?.listener.clone()),
        "lateen.request_outcome" => Bytes::from(request_outcome(s)),
        // Envoy's names for the route decision.
        "route_name" | "xds.route_name" => s.cur.props.get("lateen.route.name")?.clone(),
        "cluster_name" | "xds.cluster_name" => s.cur.props.get("lateen.route.cluster")?.clone(),
        _ => {
            if let Some(key) = path.strip_prefix("lateen.upstream.labels.") {
                // The labels of the endpoint that answered (ServiceEntry endpoint labels).
                let (_, e) = s.cur.upstream_endpoint()?;
                return e.labels.get(key).cloned().map(Bytes::from);
            }
            let name = path.strip_prefix("request.headers.")?;
            header(s, name)?.clone()
        }
    };
    Some(v)
}

/// What a metrics filter labels a finished request by, in one host call instead of seven:
/// cluster, response code (decimal), response flags, `1` for gRPC, grpc-status (header or
/// trailer), and the answering endpoint's `app` and `version` labels, NUL-separated, each
/// empty when unknown.
fn request_outcome(s: &HostState) -> Vec<u8> {
    let grpc = header(s, "content-type").is_some_and(|c| c.starts_with(b"application/grpc"));
    let grpc_status = || {
        let find = |h: &crate::HeaderList| {
            h.iter()
                .find(|(k, _)| k == "grpc-status")
                .map(|(_, v)| v.clone())
        };
        find(&s.cur.resp_headers).or_else(|| find(&s.cur.resp_trailers))
    };
    let code = s.cur.response_code.map(|c| Bytes::from(c.to_string()));
    let fields = [
        property(s, "lateen.route.cluster"),
        code,
        property(s, "response.flags"),
        grpc.then(|| Bytes::from_static(b"1")),
        grpc.then(grpc_status).flatten(),
        property(s, "lateen.upstream.labels.app"),
        property(s, "lateen.upstream.labels.version"),
    ];
    let mut out = Vec::with_capacity(64);
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        if let Some(f) = f {
            out.extend_from_slice(f);
        }
    }
    out
}

fn peer(info: Option<&crate::state::StreamInfo>) -> Option<&lateen_core::tls::CertIdentity> {
    info?.tls.as_ref()?.peer.as_ref()
}

fn path_of(raw: &[u8]) -> String {
    // Segments are NUL-separated; Lateen keys them by dotted path.
    String::from_utf8_lossy(raw).replace('\0', ".")
}

/// Runs `f` on the dotted form of a path; a short path (every one Envoy defines) is
/// rewritten on the stack, as this runs several times per request and plugin.
fn with_path<R>(raw: &[u8], f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; 128];
    if let Some(dst) = buf.get_mut(..raw.len()) {
        for (d, s) in dst.iter_mut().zip(raw) {
            *d = if *s == 0 { b'.' } else { *s };
        }
        if let Ok(p) = std::str::from_utf8(dst) {
            return f(p);
        }
    }
    f(&path_of(raw))
}

pub(super) fn define(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Ctx<'_>, pp: i32, pl: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let value = with_path(borrow(&c, pp, pl)?, |p| property(c.data(), p));
                match value {
                    Some(v) => {
                        give(&mut c, &v, ret_ptr, ret_size)?;
                        ok(Status::Ok)
                    }
                    None => ok(Status::NotFound),
                }
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Ctx<'_>, pp: i32, pl: i32, vp: i32, vl: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let path = path_of(&read(&c, pp, pl)?);
                let value = Bytes::from(read(&c, vp, vl)?);
                c.data_mut().cur.props.insert(path, value);
                ok(Status::Ok)
            })
        },
    )?;
    Ok(())
}
