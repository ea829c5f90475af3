//! What host functions see: the plugin's identity, the stream being processed and the
//! side effects a callback asks for (local response, http calls, ticks).

use crate::shared::Shared;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use wasmtime::{Memory, StoreLimits, TypedFunc};

/// A header list as proxy-wasm sees it: lower-case names, pseudo-headers first, repeated
/// names kept in order.
pub type HeaderList = Vec<(String, Bytes)>;

/// The first value of a (lower-case) header in a header list.
pub fn header<'a>(list: &'a HeaderList, name: &str) -> Option<&'a Bytes> {
    list.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Who a plugin is: fixed for the life of a VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginIdentity {
    /// `namespace/name` of the WasmPlugin (or `lateen/router` for the built-in).
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    /// `vmConfig.env`, as WASI environ.
    pub env: Vec<(String, String)>,
    pub vm_configuration: Bytes,
}

/// Per-stream facts that never change while it runs, exposed as properties.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub request_id: String,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub protocol: &'static str,
    pub start: SystemTime,
    pub listener: String,
    /// The downstream TLS session, when there is one.
    pub tls: Option<std::sync::Arc<lateen_core::tls::server::TlsInfo>>,
}

/// A local reply a plugin asked for with `proxy_send_local_response`.
#[derive(Debug, Clone)]
pub struct LocalResponse {
    pub status: u16,
    pub details: String,
    pub body: Bytes,
    pub headers: HeaderList,
    pub grpc_status: i32,
}

/// Everything a stream's callbacks read and write. The chain owns it and swaps it into the
/// VM's store for the length of one callback.
#[derive(Debug, Default)]
pub struct StreamState {
    pub req_headers: HeaderList,
    pub req_trailers: HeaderList,
    pub resp_headers: HeaderList,
    pub resp_trailers: HeaderList,
    /// The body buffered so far on each side (what `get_buffer_bytes` reads).
    pub req_body: Vec<u8>,
    pub resp_body: Vec<u8>,
    /// Properties set by plugins (`proxy_set_property`), keyed by dotted path.
    /// FxHash: looked up several times per request, by keys plugins choose (not the network).
    pub props: rustc_hash::FxHashMap<String, Bytes>,
    pub info: Option<Arc<StreamInfo>>,
    pub local_response: Option<LocalResponse>,
    pub resume_request: bool,
    pub resume_response: bool,
    pub reset: bool,
    /// Response code once known, for `response.code`.
    pub response_code: Option<u16>,
    pub response_flags: String,
    /// Envoy's `%RESPONSE_CODE_DETAILS%`: `via_upstream`, or why the proxy answered itself.
    pub response_code_details: String,
    /// Body bytes received from the client and from the upstream (`request.size`,
    /// `response.size`).
    pub req_body_bytes: u64,
    pub resp_body_bytes: u64,
    /// The cluster and endpoint index of the last try (`upstream.address`, endpoint labels).
    pub upstream: Option<(Arc<dyn UpstreamCluster>, usize)>,
}

impl StreamState {
    /// The cluster's name and the endpoint that answered the last try, once there was one.
    pub fn upstream_endpoint(&self) -> Option<(&str, UpstreamEndpoint<'_>)> {
        let (c, i) = self.upstream.as_ref()?;
        Some((c.cluster_name(), c.endpoint(*i)?))
    }
}

/// The upstream cluster a stream was sent to, as plugins and the log phase see it. The
/// proxy's clusters implement it: this crate knows nothing of load balancing or pools.
pub trait UpstreamCluster: Send + Sync + std::fmt::Debug {
    /// Envoy's cluster name (`outbound|80|v1|svc.test`).
    fn cluster_name(&self) -> &str;
    /// Endpoint `index` of the cluster, if it has one so numbered.
    fn endpoint(&self, index: usize) -> Option<UpstreamEndpoint<'_>>;
}

/// One endpoint of an [`UpstreamCluster`].
#[derive(Debug, Clone, Copy)]
pub struct UpstreamEndpoint<'a> {
    /// `host:port` the proxy connects to.
    pub authority: &'a str,
    /// The ServiceEntry endpoint's labels (`lateen.upstream.labels.*`).
    pub labels: &'a std::collections::BTreeMap<String, String>,
}

/// An http_call a plugin issued, waiting for the driver to send it.
#[derive(Debug)]
pub struct PendingCall {
    pub token: u32,
    pub context_id: u32,
    pub cluster: String,
    pub headers: HeaderList,
    pub body: Bytes,
    pub timeout: Duration,
}

/// The answer to an http_call, visible during `proxy_on_http_call_response`.
#[derive(Debug, Default)]
pub struct CallResponse {
    pub headers: HeaderList,
    pub body: Bytes,
    pub trailers: HeaderList,
}

/// Something a callback asked of another stream (after `proxy_set_effective_context`):
/// typically a root context resuming a paused stream from `on_tick`.
#[derive(Debug)]
pub enum RemoteAction {
    Resume {
        context: u32,
        response: bool,
    },
    LocalResponse {
        context: u32,
        response: LocalResponse,
    },
}

/// Looks up cluster names for `proxy_http_call` (the snapshot's clusters).
pub trait ClusterResolver: Send + Sync {
    /// The canonical cluster name for an upstream a plugin named: an Istio cluster name, or a
    /// bare ServiceEntry host.
    fn resolve(&self, upstream: &str) -> Option<String>;

    /// One take from the shared (global) token store, for component filters, whose
    /// `shared-store.take` import is synchronous. The proxy answers it from the Bootstrap's
    /// Redis; without one the store is not configured.
    fn shared_store_take(
        &self,
        _req: &lateen_sdk::store::TakeRequest,
    ) -> Result<lateen_sdk::store::TakeResponse, StoreTakeError> {
        Err(StoreTakeError::NotConfigured)
    }
}

/// Why a [`ClusterResolver::shared_store_take`] gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreTakeError {
    #[error("no shared store is configured")]
    NotConfigured,
    #[error("the shared store is unavailable: {0}")]
    Unavailable(String),
}

/// The store data of one VM.
pub struct HostState {
    pub plugin: Arc<PluginIdentity>,
    pub shared: Arc<Shared>,
    pub clusters: Arc<dyn ClusterResolver>,
    pub limits: StoreLimits,
    pub memory: Option<Memory>,
    pub alloc: Option<TypedFunc<i32, i32>>,
    /// The stream whose callback is running (swapped in and out by the chain).
    pub cur: Box<StreamState>,
    /// Context the current callback runs for (changed by `proxy_set_effective_context`).
    pub active_context: u32,
    /// Context whose stream state is swapped into `cur` (0: none).
    pub cur_context: u32,
    /// Actions aimed at other streams, for the driver to deliver.
    pub remote: Vec<RemoteAction>,
    /// Plugin configuration of the root context being configured.
    pub plugin_configuration: Bytes,
    pub call_response: Option<CallResponse>,
    pub pending_calls: Vec<PendingCall>,
    pub next_token: u32,
    /// Tick periods requested per root context since the driver last looked.
    pub tick_requests: Vec<(u32, Duration)>,
    /// Metric ids → metric, cached per VM so increments take no lock.
    pub metrics: Vec<Option<Arc<crate::shared::Metric>>>,
    pub log_level: i32,
    /// When set, plugin logs are kept here instead of going to the process log (the filter
    /// test harness asserts on them).
    pub log_capture: Option<Vec<(i32, String)>>,
    /// Added to the wall clock plugins read, so a test can move time forward without
    /// sleeping. Always zero in the proxy.
    pub clock_offset: Duration,
    /// Linear memory a component instance holds, as its limiter last allowed.
    pub component_memory: usize,
}

impl wasmtime::ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.limits.memory_growing(current, desired, maximum)?;
        if ok {
            self.component_memory =
                self.component_memory - current.min(self.component_memory) + desired;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl HostState {
    pub fn new(
        plugin: Arc<PluginIdentity>,
        shared: Arc<Shared>,
        clusters: Arc<dyn ClusterResolver>,
        limits: StoreLimits,
    ) -> Self {
        HostState {
            plugin,
            shared,
            clusters,
            limits,
            memory: None,
            alloc: None,
            cur: Box::default(),
            active_context: 0,
            cur_context: 0,
            remote: Vec::new(),
            plugin_configuration: Bytes::new(),
            call_response: None,
            pending_calls: Vec::new(),
            next_token: 1,
            tick_requests: Vec::new(),
            metrics: Vec::new(),
            log_level: 2,
            log_capture: None,
            clock_offset: Duration::ZERO,
            component_memory: 0,
        }
    }
}
