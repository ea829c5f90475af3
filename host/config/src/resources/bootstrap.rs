//! `lateen.io/v1alpha1 Bootstrap`: Lateen's own settings (workload, telemetry, limits,
//! identity, the control plane, service plugins).

use super::*;

/// `lateen.io/v1alpha1 Bootstrap`: what Istio keeps in the mesh config and the pod spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapSpec {
    /// `gateway` (default) or `sidecar`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub workload: Option<Workload>,
    #[serde(default)]
    pub admin: Option<AdminSpec>,
    /// Singleton plugins (Envoy's WasmService): a root context only, run once per proxy for
    /// background work on ticks and http_calls.
    #[serde(default)]
    pub service_plugins: Vec<ServicePluginSpec>,
    /// Redis for state shared by several proxies (global rate limits).
    #[serde(default)]
    pub redis: Option<RedisSpec>,
    #[serde(default)]
    pub telemetry: Option<TelemetrySpec>,
    /// Limits on what clients may send (Envoy's HTTP connection manager settings).
    #[serde(default)]
    pub limits: Option<LimitsSpec>,
    /// How request paths are normalized, as MeshConfig's `pathNormalization`.
    #[serde(default)]
    pub path_normalization: Option<PathNormalizationSpec>,
    /// The workload's mesh identity (what istio-agent writes to `/etc/certs`).
    #[serde(default)]
    pub identity: Option<IdentitySpec>,
    /// Where `credentialName` secrets live: `DIR/NAME/tls.crt`, `tls.key` and `ca.crt`, as a
    /// Kubernetes TLS secret mounted as a volume. Default: `credentials/` beside the config.
    #[serde(default)]
    pub credentials_dir: Option<String>,
    /// An xDS control plane (ADS) to take listeners, routes, clusters, endpoints and wasm
    /// filters from, beside the files.
    #[serde(default)]
    pub xds: Option<XdsSpec>,
}

/// Where the ADS server is and who this proxy is to it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct XdsSpec {
    /// `host:port` of the ADS server (plaintext gRPC, as istiod's 15010).
    pub address: String,
    #[serde(default)]
    pub node: NodeSpec,
    /// How long the start waits for the first complete config before it opens the
    /// listeners it has (Envoy's `initial_fetch_timeout`, default 15s; `0s`: do not wait).
    #[serde(default)]
    pub initial_fetch_timeout: Option<String>,
}

/// The xDS node, as istiod reads it. Unset fields come from the Bootstrap workload and the
/// environment Istio's injector sets (`INSTANCE_IP`, `POD_NAME`, `POD_NAMESPACE`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// The whole node id; default `TYPE~IP~NAME.NAMESPACE~NAMESPACE.svc.DOMAIN`.
    #[serde(default)]
    pub id: Option<String>,
    /// `router` (default in gateway mode) or `sidecar` (default in sidecar mode).
    #[serde(default, rename = "type")]
    pub node_type: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    /// Cluster DNS domain (default `cluster.local`).
    #[serde(default)]
    pub domain: Option<String>,
    /// `node.cluster` (Envoy's service cluster); default `NAME.NAMESPACE`.
    #[serde(default)]
    pub cluster: Option<String>,
    /// `CLUSTER_ID` metadata (default `Kubernetes`).
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// `ISTIO_VERSION` metadata (default `1.24.0`).
    #[serde(default)]
    pub istio_version: Option<String>,
    /// More metadata, merged over the generated keys.
    #[serde(default)]
    pub metadata: BTreeMap<String, Value>,
}

/// The workload certificate, key and mesh roots, and the trust domain.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentitySpec {
    /// Default `/etc/certs/cert-chain.pem`.
    #[serde(default)]
    pub cert_chain: Option<String>,
    /// Default `/etc/certs/key.pem`.
    #[serde(default)]
    pub private_key: Option<String>,
    /// Default `/etc/certs/root-cert.pem`.
    #[serde(default)]
    pub root_cert: Option<String>,
    /// Default `cluster.local`.
    #[serde(default)]
    pub trust_domain: Option<String>,
}

/// Request limits: what Envoy's `max_request_headers_kb`, `common_http_protocol_options`
/// and the buffer filter's `max_request_bytes` set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsSpec {
    /// Request headers, in KiB (default 60, Envoy's; at least 8). Larger: 431.
    #[serde(default)]
    pub max_request_headers_kb: Option<u32>,
    /// Request headers, in number (default 100). More: 431.
    #[serde(default)]
    pub max_headers_count: Option<u32>,
    /// Time to receive a request's headers (default 30s); slower clients are closed. It
    /// also bounds how long an idle keep-alive connection waits for its next request, since
    /// hyper starts the clock when it waits for a request head.
    #[serde(default)]
    pub request_headers_timeout: Option<String>,
    /// Request body bytes (default unlimited). Larger: 413. With a limit, bodies are
    /// buffered up to it before they go upstream (as Envoy's buffer filter does).
    #[serde(default)]
    pub max_request_body_bytes: Option<u64>,
    /// HTTP/2 streams open at once per connection (default 100), advertised in SETTINGS.
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    /// Time for a whole request, body included, to arrive (Envoy's `request_timeout`;
    /// default off). Later: 408.
    #[serde(default)]
    pub request_timeout: Option<String>,
    /// Accept HTTP/1.1 requests with both Content-Length and Transfer-Encoding: chunked
    /// (Envoy's `allow_chunked_length`; default false: 400).
    #[serde(default)]
    pub allow_chunked_length: Option<bool>,
    /// Downstream connections open at once across listeners (Envoy's
    /// `global_downstream_max_connections`; default unlimited). Past it: closed at accept.
    #[serde(default)]
    pub max_connections: Option<u64>,
    /// Anonymous resident memory, in bytes, at which new requests get 503 with
    /// `x-envoy-overloaded` (Envoy's `fixed_heap` + `stop_accepting_requests`; default off).
    #[serde(default)]
    pub max_heap_bytes: Option<u64>,
    /// The longest gap between two frames of a request or response body (Envoy's
    /// `stream_idle_timeout`; default 5m, `0s` turns it off). A request body: 408; a
    /// response body: the stream is reset.
    #[serde(default)]
    pub stream_idle_timeout: Option<String>,
}

/// MeshConfig's `pathNormalization`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathNormalizationSpec {
    /// NONE, BASE (the default), MERGE_SLASHES or DECODE_AND_MERGE_SLASHES.
    #[serde(default)]
    pub normalization: Option<String>,
}

/// What the proxy reports.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetrySpec {
    /// Istio's standard metrics through the built-in metrics filter (default true, as
    /// Istio's telemetry is on by default).
    #[serde(default)]
    pub metrics: Option<bool>,
    /// The access log (Istio's `meshConfig.accessLogFile`/`Format`/`Encoding`).
    #[serde(default)]
    pub access_log: Option<AccessLogSpec>,
    #[serde(default)]
    pub tracing: Option<TracingSpec>,
}

/// Tracing (Istio's `meshConfig.defaultConfig.tracing` and its OpenTelemetry provider).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingSpec {
    /// Percentage of new traces sampled, 0-100 (Istio's default: 1).
    #[serde(default)]
    pub sampling: Option<f64>,
    /// `service.name` of the spans; default `NAME.NAMESPACE` of the workload.
    #[serde(default)]
    pub service_name: Option<String>,
    pub otlp: OtlpSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtlpSpec {
    /// OTLP/HTTP traces URL, e.g. `http://otel-collector:4318/v1/traces`.
    pub endpoint: String,
}

/// Where and how requests are logged.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogSpec {
    /// A file path; default `/dev/stdout`.
    #[serde(default)]
    pub file: Option<String>,
    /// `TEXT` (default) or `JSON`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// TEXT: Envoy's format string (default: Istio's).
    #[serde(default)]
    pub format: Option<String>,
    /// JSON: key → format string (default: Istio's JSON keys).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisSpec {
    /// `host:port`.
    pub address: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePluginSpec {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub plugin_config: Option<Value>,
    #[serde(default)]
    pub vm_config: Option<VmConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminSpec {
    #[serde(default)]
    pub address: Option<String>,
}
