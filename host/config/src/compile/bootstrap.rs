//! Lateen's Bootstrap: the workload, path normalization, limits, access log and tracing.

use super::*;

/// The Bootstrap's `pathNormalization` (MeshConfig's): BASE unless it says otherwise.
pub(super) fn path_normalization(
    res: &Resources,
    errors: &mut Vec<ConfigError>,
) -> lateen_core::path::PathNormalization {
    let from_boot = res.bootstrap.as_ref().and_then(|boot| {
        let name = boot
            .spec
            .path_normalization
            .as_ref()
            .and_then(|p| p.normalization.clone())?;
        Some((
            name,
            boot.info.clone(),
            "spec.pathNormalization.normalization".to_string(),
        ))
    });
    // MeshConfig's, when the Bootstrap (its alias) does not set it.
    let from_mesh = || {
        let src = res.mesh.as_ref()?;
        let name = mesh::path_normalization(src)?.to_string();
        let at = if src.at.is_empty() {
            "pathNormalization.normalization".to_string()
        } else {
            format!("{}: pathNormalization.normalization", src.at)
        };
        Some((name, src.info.clone(), at))
    };
    let Some((name, info, at)) = from_boot.or_else(from_mesh) else {
        return Default::default();
    };
    lateen_core::path::PathNormalization::parse(&name).unwrap_or_else(|| {
        errors.push(info.error(
            &at,
            format!(
                "unknown `{name}`; expected NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES"
            ),
        ));
        Default::default()
    })
}

/// The Bootstrap's `limits`, checked.
pub(super) fn limits(res: &Resources, errors: &mut Vec<ConfigError>) -> lateen_model::Limits {
    let mut l = lateen_model::Limits::default();
    let Some(boot) = res.bootstrap.as_ref() else {
        return l;
    };
    let Some(spec) = boot.spec.limits.as_ref() else {
        return l;
    };
    let field = |f: &str| format!("spec.limits.{f}");
    if let Some(kb) = spec.max_request_headers_kb {
        if !(8..=8192).contains(&kb) {
            errors.push(boot.info.error(
                &field("maxRequestHeadersKb"),
                format!("{kb} is outside 8..8192"),
            ));
        }
        l.max_request_headers_bytes = kb.clamp(8, 8192) as usize * 1024;
    }
    if let Some(n) = spec.max_headers_count {
        if n == 0 {
            errors.push(
                boot.info
                    .error(&field("maxHeadersCount"), "must be at least 1"),
            );
        }
        l.max_headers_count = n.max(1) as usize;
    }
    if let Some(t) = &spec.request_headers_timeout {
        match parse_duration_ms(t) {
            Some(ms) if ms > 0 => l.request_headers_timeout = std::time::Duration::from_millis(ms),
            _ => errors.push(boot.info.error(
                &field("requestHeadersTimeout"),
                format!("`{t}` is not a positive duration (e.g. 10s, 500ms)"),
            )),
        }
    }
    l.max_request_body_bytes = spec.max_request_body_bytes;
    l.allow_chunked_length = spec.allow_chunked_length.unwrap_or(false);
    if let Some(t) = &spec.stream_idle_timeout {
        match parse_duration_ms(t) {
            Some(0) => l.stream_idle_timeout = None,
            Some(ms) => l.stream_idle_timeout = Some(std::time::Duration::from_millis(ms)),
            None => errors.push(boot.info.error(
                &field("streamIdleTimeout"),
                format!("`{t}` is not a duration (e.g. 5m, 30s; 0s turns it off)"),
            )),
        }
    }
    if let Some(n) = spec.max_connections {
        if n == 0 {
            errors.push(
                boot.info
                    .error(&field("maxConnections"), "must be at least 1"),
            );
        }
        l.max_connections = Some(n.max(1) as usize);
    }
    if let Some(n) = spec.max_heap_bytes {
        // A figure in KiB or MiB by mistake would shed every request.
        if n < 1 << 20 {
            errors.push(boot.info.error(
                &field("maxHeapBytes"),
                format!("{n} is below 1 MiB (1048576): the value is in bytes"),
            ));
        }
        l.max_heap_bytes = Some(n.max(1 << 20));
    }
    if let Some(t) = &spec.request_timeout {
        match parse_duration_ms(t) {
            Some(ms) if ms > 0 => l.request_timeout = Some(std::time::Duration::from_millis(ms)),
            _ => errors.push(boot.info.error(
                &field("requestTimeout"),
                format!("`{t}` is not a positive duration (e.g. 30s)"),
            )),
        }
    }
    if let Some(n) = spec.max_concurrent_streams {
        if n == 0 {
            errors.push(
                boot.info
                    .error(&field("maxConcurrentStreams"), "must be at least 1"),
            );
        }
        l.max_concurrent_streams = n.max(1);
    }
    l
}

/// The tracer the Bootstrap asks for (`telemetry.tracing`).
pub(super) fn tracer(
    res: &Resources,
    workload: &WorkloadInfo,
    errors: &mut Vec<ConfigError>,
) -> Option<lateen_model::TracingSpec> {
    let boot = res.bootstrap.as_ref()?;
    let spec = boot.spec.telemetry.as_ref()?.tracing.as_ref()?;
    let field = "spec.telemetry.tracing";
    let sampling = spec.sampling.unwrap_or(1.0);
    if !(0.0..=100.0).contains(&sampling) {
        errors.push(boot.info.error(
            &format!("{field}.sampling"),
            format!("{sampling} is not a percentage (0-100)"),
        ));
        return None;
    }
    let endpoint = &spec.otlp.endpoint;
    match endpoint.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
        _ => {
            errors.push(boot.info.error(
                &format!("{field}.otlp.endpoint"),
                format!("`{endpoint}` is not an http(s) URL"),
            ));
            return None;
        }
    }
    let service = spec
        .service_name
        .clone()
        .unwrap_or_else(|| service_name(workload));
    Some(lateen_model::TracingSpec {
        sampling,
        service,
        endpoint: endpoint.clone(),
    })
}

/// The service name spans carry: `NAME.NAMESPACE` of the workload, else `lateen`.
pub(super) fn service_name(workload: &WorkloadInfo) -> String {
    match (&workload.name, workload.namespaces.first()) {
        (Some(n), Some(ns)) => format!("{n}.{ns}"),
        (Some(n), None) => n.clone(),
        _ => "lateen".into(),
    }
}

/// The access log the Bootstrap asks for (`telemetry.accessLog`; an alias of MeshConfig's
/// `accessLogFile`, `accessLogEncoding`, `accessLogFormat`).
pub(super) fn access_log(res: &Resources, errors: &mut Vec<ConfigError>) -> Option<AccessLogSpec> {
    let boot = res.bootstrap.as_ref()?;
    let spec = boot.spec.telemetry.as_ref()?.access_log.as_ref()?;
    let field = "spec.telemetry.accessLog";
    let labels = spec
        .labels
        .as_ref()
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    log_spec(
        spec.file.as_deref(),
        spec.encoding.as_deref(),
        spec.format.as_deref(),
        labels,
        &mut |f, m| errors.push(boot.info.error(&format!("{field}.{f}"), m)),
    )
}

/// An access log: its file (default /dev/stdout), encoding (TEXT, the default, or JSON),
/// TEXT `format` or JSON `labels` (Istio's defaults when absent). `bad` gets a field
/// (`encoding`, `format`, `labels.KEY`) and what is wrong with it.
pub(super) fn log_spec(
    file: Option<&str>,
    encoding: Option<&str>,
    format: Option<&str>,
    labels: Option<Vec<(String, String)>>,
    bad: &mut dyn FnMut(&str, String),
) -> Option<AccessLogSpec> {
    use lateen_model::access_log::{Encoding, Format, ISTIO_JSON, ISTIO_TEXT};
    let encoding = match encoding.unwrap_or("TEXT") {
        "TEXT" => {
            if labels.is_some() {
                bad(
                    "labels",
                    "labels are for JSON encoding; TEXT takes `format`".into(),
                );
                return None;
            }
            match Format::parse(format.unwrap_or(ISTIO_TEXT)) {
                Ok(f) => Encoding::Text(f),
                Err(e) => {
                    bad("format", e.to_string());
                    return None;
                }
            }
        }
        "JSON" => {
            if format.is_some() {
                bad(
                    "format",
                    "JSON encoding takes `labels` (key: format)".into(),
                );
                return None;
            }
            let pairs: Vec<(String, String)> = match labels {
                Some(l) => l,
                None => ISTIO_JSON
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            let mut fields = Vec::new();
            for (k, v) in pairs {
                match Format::parse(&v) {
                    Ok(f) => fields.push((k, f)),
                    Err(e) => {
                        bad(&format!("labels.{k}"), e.to_string());
                        return None;
                    }
                }
            }
            Encoding::Json(fields)
        }
        other => {
            bad("encoding", format!("`{other}` is not TEXT or JSON"));
            return None;
        }
    };
    let path = file.unwrap_or("/dev/stdout");
    // Opened by the runtime when it installs the snapshot, not here.
    Some(AccessLogSpec {
        path: path.into(),
        encoding,
    })
}

/// The name (when the Bootstrap declares it), labels and namespaces of this proxy.
pub(super) struct WorkloadInfo {
    pub(super) name: Option<String>,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) namespaces: BTreeSet<String>,
}

impl WorkloadInfo {
    /// `name.namespace`, as the snapshot names its workload.
    pub(super) fn qualified_name(&self) -> Option<String> {
        self.name.as_ref().map(|n| match self.namespaces.first() {
            Some(ns) => format!("{n}.{ns}"),
            None => n.clone(),
        })
    }
}

pub(super) fn workload(res: &Resources) -> WorkloadInfo {
    if let Some(w) = res.bootstrap.as_ref().and_then(|b| b.spec.workload.clone()) {
        return WorkloadInfo {
            name: w.name,
            labels: w.labels,
            namespaces: w.namespace.into_iter().collect(),
        };
    }
    // Gateway mode: we are the workload every Gateway selects.
    let mut labels = BTreeMap::new();
    let mut namespaces = BTreeSet::new();
    for g in &res.gateways {
        labels.extend(g.spec.selector.clone());
        namespaces.insert(g.info.namespace.clone());
    }
    WorkloadInfo {
        name: None,
        labels,
        namespaces,
    }
}

/// Whether a resource with a workload `selector` (WasmPlugin, AuthorizationPolicy) applies
/// to this workload: its labels are among the workload's, and it lives in the root
/// namespace or in one of the workload's.
pub(super) fn selects(
    info: &DocInfo,
    selector: Option<&WorkloadSelector>,
    w: &WorkloadInfo,
) -> bool {
    let ns_ok = info.namespace == ROOT_NAMESPACE || w.namespaces.contains(&info.namespace);
    let labels_ok = selector.is_none_or(|s| {
        s.match_labels
            .iter()
            .all(|(k, v)| w.labels.get(k) == Some(v))
    });
    ns_ok && labels_ok
}

/// Annotations that put a new version of a WasmPlugin in progressive rollout. Annotations
/// rather than spec fields, so the resource stays valid for Istio's CRD schema.
pub mod canary_annotations {
    pub const URL: &str = "lateen.io/canary-url";
    pub const SHA256: &str = "lateen.io/canary-sha256";
    pub const PERCENT: &str = "lateen.io/canary-percent";
    pub const MAX_TRAP_PERCENT: &str = "lateen.io/canary-max-trap-percent";
    pub const MAX_5XX_PERCENT: &str = "lateen.io/canary-max-5xx-percent";
    pub const MIN_REQUESTS: &str = "lateen.io/canary-min-requests";
    pub const WINDOW: &str = "lateen.io/canary-window";
}
