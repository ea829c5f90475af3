//! `telemetry.istio.io`: Telemetry.

use super::*;

/// `telemetry.istio.io Telemetry` (v1, v1alpha1): access logging and tracing, at the mesh
/// (root namespace, no selector), namespace (no selector) or workload (`selector`) level.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetryApiSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_refs: Option<Value>,
    #[serde(default)]
    pub access_logging: Vec<TelemetryAccessLogging>,
    #[serde(default)]
    pub tracing: Vec<TelemetryTracing>,
    #[serde(default)]
    pub metrics: Option<Value>,
}

/// A Telemetry provider reference (a MeshConfig `extensionProviders` name, or `envoy`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRef {
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetryAccessLogging {
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub filter: Option<Value>,
    #[serde(default, rename = "match")]
    pub matches: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetryTracing {
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub random_sampling_percentage: Option<f64>,
    #[serde(default)]
    pub disable_span_reporting: Option<bool>,
    #[serde(default)]
    pub custom_tags: Option<Value>,
    #[serde(default, rename = "match")]
    pub matches: Option<Value>,
    #[serde(default)]
    pub use_request_id_for_trace_sampling: Option<bool>,
}
