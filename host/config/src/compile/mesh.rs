//! MeshConfig, Istio's mesh-wide settings, as Istio ships them: the `mesh` key of the
//! `istio-system/istio` ConfigMap, or a `mesh` file (what that ConfigMap mounts as). Lateen
//! reads the access log (`accessLogFile`, `accessLogEncoding`, `accessLogFormat`), tracing
//! (`enableTracing`, `defaultProviders.tracing` naming an `extensionProviders` entry of
//! type `opentelemetry` over HTTP, `defaultConfig.tracing.sampling`) and
//! `pathNormalization`. Other fields are listed in a warning, so a mesh config copied from
//! a cluster loads. Where the Bootstrap sets the same thing (its `telemetry.accessLog`,
//! `telemetry.tracing`, `pathNormalization`), it is an alias: setting both is an error.

use super::*;
use crate::source::RawDoc;
use serde_json::Value;

/// MeshConfig as loaded: parsed once, where it came from.
#[derive(Debug, Clone)]
pub struct MeshSource {
    pub info: Arc<DocInfo>,
    /// The MeshConfig, a mapping.
    pub value: Value,
    /// Where a field's error points: the `mesh` key of the ConfigMap, or the file.
    pub at: String,
}

impl MeshSource {
    /// Parses MeshConfig text; the error names where it came from.
    fn parse(info: Arc<DocInfo>, text: &str, at: &str) -> Result<MeshSource, ConfigError> {
        let mut src = MeshSource {
            info,
            value: Value::Null,
            at: at.to_string(),
        };
        src.value = match serde_saphyr::from_str(text) {
            Ok(Value::Null) => Value::Object(Default::default()),
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return Err(src.error("", "MeshConfig must be a mapping")),
            Err(e) => {
                let msg = e.to_string();
                return Err(src.error("", msg.lines().next().unwrap_or("invalid YAML")));
            }
        };
        Ok(src)
    }

    /// A `mesh` file.
    pub fn file(path: &Path, text: &str) -> Result<MeshSource, ConfigError> {
        let mut info = DocInfo::synthetic(&path.display().to_string(), "MeshConfig", "mesh");
        info.file = path.to_path_buf();
        info.start_line = 1;
        MeshSource::parse(Arc::new(info), text, "")
    }

    fn error(&self, field: &str, message: impl Into<String>) -> ConfigError {
        let field = if self.at.is_empty() {
            field.to_string()
        } else {
            format!("{}: {field}", self.at)
        };
        self.info.error(&field, message)
    }

    fn str_at(&self, path: &str) -> Option<&str> {
        self.value.pointer(path).and_then(Value::as_str)
    }

    /// `accessLogFile`, when set and not empty.
    pub(super) fn str_at_file(&self) -> Option<&str> {
        self.str_at("/accessLogFile").filter(|f| !f.is_empty())
    }
}

/// The istio ConfigMap (`istio-system/istio`).
pub(super) fn is_mesh_config_map(info: &DocInfo) -> bool {
    info.name == "istio" && info.namespace == ROOT_NAMESPACE
}

#[derive(serde::Deserialize)]
struct ConfigMap {
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// The MeshConfig of the istio ConfigMap; `None` when it has no `mesh` key.
pub(super) fn from_config_map(d: &RawDoc) -> Result<Option<MeshSource>, ConfigError> {
    let cm: ConfigMap = d.whole()?;
    cm.data
        .get("mesh")
        .map(|text| MeshSource::parse(d.info.clone(), text, "data.mesh"))
        .transpose()
}

/// Fields this module reads; the others are reported once.
const READ: &[&str] = &[
    "accessLogFile",
    "accessLogEncoding",
    "accessLogFormat",
    "enableTracing",
    "defaultConfig",
    "extensionProviders",
    "defaultProviders",
    "pathNormalization",
];

/// The MeshConfig, with a warning for what it sets that Lateen does not read.
pub(super) fn parse<'a>(res: &'a Resources, warnings: &mut Vec<String>) -> Option<&'a MeshSource> {
    let src = res.mesh.as_ref()?;
    let unread: Vec<&str> = src
        .value
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .map(String::as_str)
        .filter(|k| !READ.contains(k))
        .collect();
    if !unread.is_empty() {
        warnings.push(format!(
            "{}:{}: MeshConfig: not read by Lateen: {}",
            src.info.file.display(),
            src.info.line_of(&src.at),
            unread.join(", ")
        ));
    }
    Some(src)
}

/// The access log MeshConfig turns on (`accessLogFile`; empty: off).
pub(super) fn access_log(src: &MeshSource, errors: &mut Vec<ConfigError>) -> Option<AccessLogSpec> {
    let file = src.str_at_file()?;
    envoy_log(src, Some(file), &mut |f, m| errors.push(src.error(f, m)))
}

/// An access log in MeshConfig's `accessLogEncoding` and `accessLogFormat` (a format string
/// for TEXT, a JSON object of key to format for JSON) to `file` (default /dev/stdout): what
/// MeshConfig's own log and the Telemetry API's built-in `envoy` provider write. `bad` gets
/// the MeshConfig field and what is wrong with it.
pub(super) fn envoy_log(
    src: &MeshSource,
    file: Option<&str>,
    bad: &mut dyn FnMut(&str, String),
) -> Option<AccessLogSpec> {
    let encoding = src.str_at("/accessLogEncoding");
    let format = src.str_at("/accessLogFormat").filter(|f| !f.is_empty());
    let (format, labels) = match (encoding, format) {
        (Some("JSON"), Some(f)) => match serde_json::from_str::<BTreeMap<String, String>>(f) {
            Ok(l) => (None, Some(l.into_iter().collect())),
            Err(e) => {
                bad(
                    "accessLogFormat",
                    format!("with JSON encoding, a JSON object of key to format: {e}"),
                );
                return None;
            }
        },
        (_, f) => (f, None),
    };
    super::bootstrap::log_spec(file, encoding, format, labels, &mut |f, m| {
        bad(&format!("accessLog{}", capitalize(f)), m)
    })
}

fn capitalize(f: &str) -> String {
    let mut c = f.chars();
    match c.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// Tracing to the default tracing provider (`defaultProviders.tracing`, the first name
/// there), when tracing is on (`enableTracing`, default true) and the provider is
/// `opentelemetry` over HTTP (`http.path`, default `/v1/traces`). Others are warned of.
pub(super) fn tracing(
    src: &MeshSource,
    workload: &WorkloadInfo,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<lateen_model::TracingSpec> {
    let v = &src.value;
    if v.pointer("/enableTracing").and_then(Value::as_bool) == Some(false) {
        return None;
    }
    let name = v
        .pointer("/defaultProviders/tracing")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)?;
    let providers = v
        .pointer("/extensionProviders")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(p) = providers.iter().find(|p| p["name"] == name) else {
        errors.push(src.error(
            "defaultProviders.tracing",
            format!("no extensionProviders entry is named `{name}`"),
        ));
        return None;
    };
    let Some(otel) = p.get("opentelemetry") else {
        let kind = p
            .as_object()
            .and_then(|o| o.keys().find(|k| *k != "name").cloned())
            .unwrap_or_default();
        warnings.push(format!(
            "{}:{}: MeshConfig: tracing provider `{name}` is `{kind}`; Lateen exports to \
             opentelemetry (OTLP/HTTP) providers only, so tracing is off",
            src.info.file.display(),
            src.info.line_of(&src.at)
        ));
        return None;
    };
    let (Some(service), Some(port)) = (
        otel.get("service").and_then(Value::as_str),
        otel.get("port").and_then(Value::as_u64),
    ) else {
        errors.push(src.error(
            &format!("extensionProviders[{name}].opentelemetry"),
            "service and port are required",
        ));
        return None;
    };
    let Some(http) = otel.get("http") else {
        warnings.push(format!(
            "{}:{}: MeshConfig: provider `{name}` exports OTLP over gRPC, which Lateen does \
             not yet; set `opentelemetry.http` (OTLP/HTTP) to trace",
            src.info.file.display(),
            src.info.line_of(&src.at)
        ));
        return None;
    };
    let path = http
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("/v1/traces");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let sampling = v
        .pointer("/defaultConfig/tracing/sampling")
        .and_then(Value::as_f64)
        .unwrap_or(1.0);
    if !(0.0..=100.0).contains(&sampling) {
        errors.push(src.error(
            "defaultConfig.tracing.sampling",
            format!("{sampling} is not a percentage (0-100)"),
        ));
        return None;
    }
    Some(lateen_model::TracingSpec {
        sampling,
        service: super::bootstrap::service_name(workload),
        endpoint: format!("http://{service}:{port}{path}"),
    })
}

/// `pathNormalization.normalization`, when set.
pub(super) fn path_normalization(src: &MeshSource) -> Option<&str> {
    src.str_at("/pathNormalization/normalization")
}
