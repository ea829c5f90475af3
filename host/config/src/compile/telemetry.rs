//! Istio's Telemetry API (`telemetry.istio.io` Telemetry), access logging and tracing,
//! resolved for this proxy as Istio does: the most specific level that says anything wins —
//! a workload-level Telemetry (`selector` matching the workload, in its namespace), then a
//! namespace-level one (no selector, in the workload's namespace), then the mesh-wide one
//! (no selector, in the root namespace). Providers are MeshConfig's `extensionProviders`
//! (`envoyFileAccessLog`, `opentelemetry` over HTTP) and the built-in `envoy` access log
//! (MeshConfig's `accessLogFile`, default `/dev/stdout`, with its encoding and format).
//! Not served yet, refused with their line: `filter`, `match`, `customTags`, `metrics`,
//! `targetRefs`.

use super::*;
use serde_json::Value;

/// What the Telemetry resources decide for this proxy; `None` where none says anything
/// (MeshConfig's and the Bootstrap's settings then apply).
#[derive(Default)]
pub(super) struct Decided {
    pub(super) access_log: Option<Option<AccessLogSpec>>,
    pub(super) tracing: Option<Option<lateen_model::TracingSpec>>,
}

/// The level of a Telemetry for this workload (higher is more specific); `None` when it
/// does not apply.
fn level(t: &Doc<TelemetryApiSpec>, workload: &WorkloadInfo) -> Option<u8> {
    let ns = &t.info.namespace;
    match &t.spec.selector {
        Some(s) => {
            let labels = s
                .match_labels
                .iter()
                .all(|(k, v)| workload.labels.get(k) == Some(v));
            (labels && (workload.namespaces.contains(ns) || ns == ROOT_NAMESPACE)).then_some(3)
        }
        None if workload.namespaces.contains(ns) && ns != ROOT_NAMESPACE => Some(2),
        None if ns == ROOT_NAMESPACE => Some(1),
        None => None,
    }
}

/// Refuses the fields Lateen does not serve yet, by their path.
fn refuse_unserved(t: &Doc<TelemetryApiSpec>, errors: &mut Vec<ConfigError>) -> bool {
    let mut bad = Vec::new();
    if t.spec.target_refs.is_some() {
        bad.push("spec.targetRefs".to_string());
    }
    if t.spec.metrics.is_some() {
        bad.push("spec.metrics".to_string());
    }
    for (i, a) in t.spec.access_logging.iter().enumerate() {
        if a.filter.is_some() {
            bad.push(format!("spec.accessLogging[{i}].filter"));
        }
        if a.matches.is_some() {
            bad.push(format!("spec.accessLogging[{i}].match"));
        }
    }
    for (i, tr) in t.spec.tracing.iter().enumerate() {
        if tr.custom_tags.is_some() {
            bad.push(format!("spec.tracing[{i}].customTags"));
        }
        if tr.matches.is_some() {
            bad.push(format!("spec.tracing[{i}].match"));
        }
    }
    for f in &bad {
        errors.push(t.info.error(f, "not served by Lateen yet"));
    }
    !bad.is_empty()
}

/// The access logging and tracing the Telemetry resources give this workload.
pub(super) fn resolve(
    res: &Resources,
    mesh: Option<&mesh::MeshSource>,
    workload: &WorkloadInfo,
    errors: &mut Vec<ConfigError>,
) -> Decided {
    let mut applying: Vec<(u8, &Doc<TelemetryApiSpec>)> = Vec::new();
    for t in &res.telemetries {
        if refuse_unserved(t, errors) {
            continue;
        }
        if let Some(l) = level(t, workload) {
            applying.push((l, t));
        }
    }
    // Most specific first; within a level, by name (Istio takes the oldest; files have no age).
    applying.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.info.key().cmp(&b.1.info.key()))
    });
    let mut out = Decided::default();
    if let Some(t) = applying
        .iter()
        .find(|(_, t)| !t.spec.access_logging.is_empty())
    {
        out.access_log = Some(access_log(t.1, mesh, errors));
    }
    if let Some(t) = applying.iter().find(|(_, t)| !t.spec.tracing.is_empty()) {
        out.tracing = Some(tracing(t.1, mesh, workload, errors));
    }
    out
}

fn providers(mesh: Option<&mesh::MeshSource>) -> Vec<Value> {
    mesh.and_then(|m| {
        m.value
            .pointer("/extensionProviders")
            .and_then(Value::as_array)
            .cloned()
    })
    .unwrap_or_default()
}

fn default_provider(mesh: Option<&mesh::MeshSource>, kind: &str) -> Option<String> {
    mesh.and_then(|m| {
        m.value
            .pointer(&format!("/defaultProviders/{kind}"))
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_string)
    })
}

fn access_log(
    t: &Doc<TelemetryApiSpec>,
    mesh: Option<&mesh::MeshSource>,
    errors: &mut Vec<ConfigError>,
) -> Option<AccessLogSpec> {
    let entry = &t.spec.access_logging[0];
    if entry.disabled == Some(true) {
        return None;
    }
    let field = "spec.accessLogging[0].providers";
    let name = entry
        .providers
        .first()
        .map(|p| p.name.clone())
        .or_else(|| default_provider(mesh, "accessLogging"))
        .unwrap_or_else(|| "envoy".into());
    if entry.providers.len() > 1 {
        errors.push(
            t.info
                .error(field, "Lateen writes one access log: name one provider"),
        );
        return None;
    }
    let mut bad =
        |f: &str, m: String| errors.push(t.info.error(&format!("{field}: {name}.{f}"), m));
    if name == "envoy" {
        // The built-in provider: MeshConfig's file (default stdout), encoding and format.
        return match mesh {
            Some(m) => mesh::envoy_log(m, m.str_at_file(), &mut bad),
            None => bootstrap::log_spec(None, None, None, None, &mut bad),
        };
    }
    let all = providers(mesh);
    let Some(p) = all.iter().find(|p| p["name"] == name.as_str()) else {
        bad(
            "",
            "no MeshConfig extensionProviders entry has this name".into(),
        );
        return None;
    };
    let Some(f) = p.get("envoyFileAccessLog") else {
        bad(
            "",
            "Lateen writes envoyFileAccessLog providers (and the built-in envoy) only".into(),
        );
        return None;
    };
    let path = f.get("path").and_then(Value::as_str);
    let fmt = f.get("logFormat");
    let text = fmt.and_then(|l| l.get("text")).and_then(Value::as_str);
    let labels: Option<Vec<(String, String)>> = fmt
        .and_then(|l| l.get("labels"))
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        });
    let encoding = if labels.is_some() { "JSON" } else { "TEXT" };
    bootstrap::log_spec(path, Some(encoding), text, labels, &mut bad)
}

fn tracing(
    t: &Doc<TelemetryApiSpec>,
    mesh: Option<&mesh::MeshSource>,
    workload: &WorkloadInfo,
    errors: &mut Vec<ConfigError>,
) -> Option<lateen_model::TracingSpec> {
    let entry = &t.spec.tracing[0];
    let field = "spec.tracing[0]";
    if entry.disable_span_reporting == Some(true) {
        return None;
    }
    let name = entry
        .providers
        .first()
        .map(|p| p.name.clone())
        .or_else(|| default_provider(mesh, "tracing"));
    let Some(name) = name else {
        errors.push(t.info.error(
            &format!("{field}.providers"),
            "no provider named and no MeshConfig defaultProviders.tracing",
        ));
        return None;
    };
    let all = providers(mesh);
    let Some(p) = all.iter().find(|p| p["name"] == name.as_str()) else {
        errors.push(t.info.error(
            &format!("{field}.providers"),
            format!("no MeshConfig extensionProviders entry is named `{name}`"),
        ));
        return None;
    };
    let otel = p.get("opentelemetry").filter(|o| o.get("http").is_some());
    let (Some(service), Some(port)) = (
        otel.and_then(|o| o.get("service")).and_then(Value::as_str),
        otel.and_then(|o| o.get("port")).and_then(Value::as_u64),
    ) else {
        errors.push(t.info.error(
            &format!("{field}.providers"),
            format!("provider `{name}`: Lateen exports to opentelemetry providers over HTTP (service, port, http) only"),
        ));
        return None;
    };
    let path = otel
        .and_then(|o| o.pointer("/http/path"))
        .and_then(Value::as_str)
        .unwrap_or("/v1/traces");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let sampling = entry
        .random_sampling_percentage
        .or_else(|| {
            mesh.and_then(|m| m.value.pointer("/defaultConfig/tracing/sampling"))
                .and_then(Value::as_f64)
        })
        .unwrap_or(1.0);
    if !(0.0..=100.0).contains(&sampling) {
        errors.push(t.info.error(
            &format!("{field}.randomSamplingPercentage"),
            format!("{sampling} is not a percentage (0-100)"),
        ));
        return None;
    }
    Some(lateen_model::TracingSpec {
        sampling,
        service: bootstrap::service_name(workload),
        endpoint: format!("http://{service}:{port}{path}"),
    })
}
