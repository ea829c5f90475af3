//! The YAML resources Lateen reads, as plain serde data. Field names follow the Istio API
//! reference (`networking.istio.io/v1`, `extensions.istio.io/v1alpha1`). Fields of Istio's
//! schema that Lateen does not act on yet are accepted (so copied YAML loads) and reported
//! as warnings; unknown fields are errors, so a typo never passes silently.

use lateen_sdk::istio::{
    Headers, HttpDirectResponse, HttpFaultInjection, HttpMatchRequest, HttpMirrorPolicy,
    HttpRedirect, HttpRetry, HttpRewrite, MirrorDestination, Percent,
};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// `apiVersion`, `kind` and `metadata`, read first to pick the typed spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
}

/// A whole resource with its typed spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Typed<S> {
    #[allow(dead_code)]
    pub api_version: String,
    #[allow(dead_code)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: S,
    #[serde(default)]
    #[allow(dead_code)]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

// ---- networking.istio.io ----

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    pub port: ServerPort,
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Address to bind; Lateen defaults to 0.0.0.0.
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default)]
    pub default_endpoint: Option<String>,
}

/// Istio's `ServerTLSSettings`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    #[serde(default)]
    pub https_redirect: bool,
    /// PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH, ISTIO_MUTUAL, OPTIONAL_MUTUAL.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub server_certificate: Option<String>,
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub ca_certificates: Option<String>,
    #[serde(default)]
    pub ca_crl: Option<String>,
    /// A Kubernetes TLS secret; Lateen reads it from the credentials directory.
    #[serde(default)]
    pub credential_name: Option<String>,
    #[serde(default)]
    pub credential_names: Vec<String>,
    #[serde(default)]
    pub tls_certificates: Vec<Value>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default)]
    pub verify_certificate_hash: Vec<String>,
    #[serde(default)]
    pub min_protocol_version: Option<String>,
    #[serde(default)]
    pub max_protocol_version: Option<String>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
}

/// Istio's `ClientTLSSettings` (DestinationRule `trafficPolicy.tls`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub client_certificate: Option<String>,
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub ca_certificates: Option<String>,
    #[serde(default)]
    pub ca_crl: Option<String>,
    #[serde(default)]
    pub credential_name: Option<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerPort {
    pub number: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub target_port: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
    #[serde(default)]
    pub tls: Vec<TlsRoute>,
    #[serde(default)]
    pub export_to: Vec<String>,
}

/// A VirtualService `tls` route: TLS connections routed by SNI, not terminated.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    #[serde(rename = "match")]
    pub matches: Vec<TlsMatchAttributes>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    pub sni_hosts: Vec<String>,
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub source_namespace: Option<String>,
}

/// A VirtualService `tcp` route: TCP connections forwarded as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    #[serde(default, rename = "match")]
    pub matches: Vec<L4MatchAttributes>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub source_namespace: Option<String>,
}

/// A weighted destination of a `tcp` or `tls` route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    pub destination: Destination,
    #[serde(default)]
    pub weight: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    /// Istio duration (`1.5s`, `250ms`).
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub redirect: Option<HttpRedirect>,
    #[serde(default)]
    pub direct_response: Option<HttpDirectResponse>,
    #[serde(default)]
    pub rewrite: Option<HttpRewrite>,
    #[serde(default)]
    pub headers: Option<Headers>,
    // Accepted, not acted on yet (reported as warnings).
    #[serde(default)]
    pub delegate: Option<Value>,
    #[serde(default)]
    pub retries: Option<HttpRetry>,
    #[serde(default)]
    pub fault: Option<HttpFaultInjection>,
    #[serde(default)]
    pub mirror: Option<MirrorDestination>,
    #[serde(default)]
    pub mirrors: Vec<HttpMirrorPolicy>,
    #[serde(default)]
    pub mirror_percentage: Option<Percent>,
    #[serde(default)]
    pub mirror_percent: Option<u32>,
    #[serde(default)]
    pub cors_policy: Option<lateen_sdk::istio::CorsPolicy>,
}

impl HttpRoute {
    /// Names of set fields Lateen does not act on yet.
    pub fn unsupported_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (set, name) in [(self.delegate.is_some(), "delegate")] {
            if set {
                out.push(name);
            }
        }
        out
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    pub destination: Destination,
    #[serde(default)]
    pub weight: Option<i64>,
    #[serde(default)]
    pub headers: Option<Headers>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    pub host: String,
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    pub number: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    pub host: String,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub workload_selector: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    #[serde(default)]
    pub tunnel: Option<Value>,
    #[serde(default)]
    pub proxy_protocol: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// ROUND_ROBIN (default), LEAST_REQUEST, RANDOM, PASSTHROUGH, UNSPECIFIED.
    #[serde(default)]
    pub simple: Option<String>,
    #[serde(default)]
    pub consistent_hash: Option<ConsistentHash>,
    #[serde(default)]
    pub locality_lb_setting: Option<Value>,
    #[serde(default)]
    pub warmup_duration_secs: Option<Value>,
    #[serde(default)]
    pub warmup: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub location: Option<String>,
    /// NONE, STATIC, DNS, DNS_ROUND_ROBIN.
    #[serde(default)]
    pub resolution: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntry>,
    #[serde(default)]
    pub workload_selector: Option<Value>,
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    pub number: u32,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub target_port: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    #[serde(default)]
    pub address: String,
    /// Port name → endpoint port.
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub locality: Option<String>,
    #[serde(default)]
    pub service_account: Option<String>,
}

// ---- extensions.istio.io ----

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmPluginSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<Value>,
    #[serde(default)]
    pub target_refs: Option<Value>,
    pub url: String,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    #[serde(default)]
    pub image_pull_secret: Option<String>,
    #[serde(default)]
    pub plugin_config: Option<Value>,
    #[serde(default)]
    pub plugin_name: Option<String>,
    /// AUTHN, AUTHZ, STATS, UNSPECIFIED_PHASE.
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub priority: Option<i64>,
    /// FAIL_CLOSE (default), FAIL_OPEN.
    #[serde(default)]
    pub fail_strategy: Option<String>,
    #[serde(default)]
    pub vm_config: Option<VmConfig>,
    #[serde(default, rename = "match")]
    pub matches: Option<Value>,
    #[serde(default, rename = "type")]
    pub plugin_type: Option<String>,
    /// Lateen extension (Higress style): per domain, route and service configurations.
    #[serde(default)]
    pub match_rules: Option<Value>,
    /// Lateen extension: where no rule matches, the plugin is off.
    #[serde(default)]
    pub default_config_disable: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmConfig {
    #[serde(default)]
    pub env: Vec<EnvVar>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    /// INLINE (default) or HOST (the value comes from the proxy's own environment).
    #[serde(default)]
    pub value_from: Option<String>,
}

// ---- security.istio.io ----

/// `security.istio.io AuthorizationPolicy`, served by the built-in authz filter. The rules
/// are the filter's own types, so what the YAML says is what the filter evaluates.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<Value>,
    #[serde(default)]
    pub target_refs: Vec<Value>,
    /// ALLOW (default), DENY, AUDIT, CUSTOM.
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub provider: Option<Value>,
    /// Absent: an ALLOW policy allows nothing.
    #[serde(default)]
    pub rules: Option<Vec<lateen_authz::config::Rule>>,
}

/// `networking.istio.io Sidecar`: what a sidecar's outbound side knows, where its inbound
/// ports go, and whether unknown destinations pass.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSpec {
    #[serde(default)]
    pub workload_selector: Option<SidecarSelector>,
    #[serde(default)]
    pub ingress: Vec<IngressListener>,
    #[serde(default)]
    pub egress: Vec<EgressListener>,
    #[serde(default)]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    #[serde(default)]
    pub inbound_connection_pool: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressListener {
    pub port: SidecarPort,
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub capture_mode: Option<String>,
    /// `127.0.0.1:PORT`, or `0.0.0.0:PORT` (the address the client dialled).
    #[serde(default)]
    pub default_endpoint: Option<String>,
    #[serde(default)]
    pub tls: Option<Value>,
    #[serde(default)]
    pub connection_pool: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarPort {
    pub number: u32,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub target_port: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressListener {
    #[serde(default)]
    pub port: Option<SidecarPort>,
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub capture_mode: Option<String>,
    /// `namespace/host`: `*`, `.` (the Sidecar's namespace) or a name, then `*`, `*.suffix`
    /// or a host.
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// ALLOW_ANY (default) or REGISTRY_ONLY.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub egress_proxy: Option<Value>,
}

/// `security.istio.io PeerAuthentication`: whether a sidecar's inbound side takes mTLS
/// only (STRICT), mTLS or plain text (PERMISSIVE), or plain text (DISABLE).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub mtls: Option<MtlsSpec>,
    /// Port number → its own mode (with a selector only, as in Istio).
    #[serde(default)]
    pub port_level_mtls: BTreeMap<String, MtlsSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MtlsSpec {
    /// UNSET (inherit), DISABLE, PERMISSIVE, STRICT.
    #[serde(default)]
    pub mode: Option<String>,
}

/// `security.istio.io RequestAuthentication`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<Value>,
    #[serde(default)]
    pub target_refs: Vec<Value>,
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    #[serde(default)]
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub jwks: Option<String>,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    #[serde(default)]
    pub output_payload_to_header: Option<String>,
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// JWKS fetch timeout (default 5s).
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

// ---- Lateen's own ----

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

/// `networking.istio.io EnvoyFilter`. Lateen serves the patches Istio's rate-limit task
/// uses (see `envoyfilter.rs`); other patches are refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyFilterSpec {
    #[serde(default)]
    pub workload_selector: Option<EnvoyFilterSelector>,
    #[serde(default)]
    pub target_refs: Option<Value>,
    #[serde(default)]
    pub config_patches: Vec<EnvoyConfigObjectPatch>,
    #[serde(default)]
    pub priority: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyFilterSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyConfigObjectPatch {
    pub apply_to: String,
    #[serde(default, rename = "match")]
    pub matches: Option<Value>,
    pub patch: EnvoyPatch,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyPatch {
    #[serde(default)]
    pub operation: Option<String>,
    /// Envoy configuration (snake_case, as Envoy spells it).
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub filter_class: Option<String>,
}

/// Istio `ConnectionPoolSettings`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPool {
    #[serde(default)]
    pub tcp: Option<TcpPool>,
    #[serde(default)]
    pub http: Option<HttpPool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpPool {
    #[serde(default)]
    pub max_connections: Option<u64>,
    #[serde(default)]
    pub connect_timeout: Option<String>,
    #[serde(default)]
    pub tcp_keepalive: Option<Value>,
    #[serde(default)]
    pub max_connection_duration: Option<String>,
    #[serde(default)]
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPool {
    #[serde(default)]
    pub http1_max_pending_requests: Option<u64>,
    #[serde(default)]
    pub http2_max_requests: Option<u64>,
    #[serde(default)]
    pub max_requests_per_connection: Option<u64>,
    #[serde(default)]
    pub max_retries: Option<u64>,
    #[serde(default)]
    pub idle_timeout: Option<String>,
    #[serde(default)]
    pub h2_upgrade_policy: Option<String>,
    #[serde(default)]
    pub use_client_protocol: Option<bool>,
    #[serde(default)]
    pub max_concurrent_streams: Option<u64>,
}

/// Istio `OutlierDetection`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default)]
    pub consecutive_errors: Option<u32>,
    #[serde(default)]
    pub consecutive5xx_errors: Option<u32>,
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default)]
    pub consecutive_local_origin_failures: Option<u32>,
    #[serde(default)]
    pub split_external_local_origin_errors: Option<bool>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub base_ejection_time: Option<String>,
    #[serde(default)]
    pub max_ejection_percent: Option<u32>,
    #[serde(default)]
    pub min_health_percent: Option<u32>,
}

/// Istio `LoadBalancerSettings.ConsistentHashLB`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHash {
    #[serde(default)]
    pub http_header_name: Option<String>,
    #[serde(default)]
    pub http_cookie: Option<HashCookie>,
    #[serde(default)]
    pub use_source_ip: Option<bool>,
    #[serde(default)]
    pub http_query_parameter_name: Option<String>,
    #[serde(default)]
    pub ring_hash: Option<RingHashSpec>,
    #[serde(default)]
    pub maglev: Option<MaglevSpec>,
    /// Deprecated: `ringHash.minimumRingSize`.
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashCookie {
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub ttl: Option<String>,
    #[serde(default)]
    pub attributes: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHashSpec {
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaglevSpec {
    #[serde(default)]
    pub table_size: Option<u64>,
}

/// Istio `TrafficPolicy.PortTrafficPolicy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    #[serde(default)]
    pub port: Option<PortSelector>,
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
}
