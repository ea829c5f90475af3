//! The xDS source: a state-of-the-world ADS client. It subscribes to clusters and listeners
//! (wildcard), then to the endpoints, routes and wasm filter configs they name, and hands
//! each accepted push to [`Sources::apply_xds`]. A push is ACKed only once its snapshot is
//! serving; one that fails to decode or build is NACKed with the reason, and the last good
//! config keeps serving. A lost stream is reopened with jittered backoff while the
//! running snapshot keeps serving.

use crate::sources::Sources;
use envoy_types::pb::envoy::config::core::v3::{node, Node};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::{value::Kind, Any, ListValue, Struct, Value};
use lateen_config::xds::ClientConfig;
use lateen_model::xds::XdsSet;
use lateen_xds as model;
use prost::{Message, Name};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// A NACK sent, for `/config_dump` and `lateen proxy-status`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Nack {
    /// The version refused.
    pub version: String,
    pub nonce: String,
    pub error: String,
    pub at: String,
}

/// One type URL's state, as `istioctl proxy-status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeStatus {
    /// The version last ACKed (serving).
    pub version: String,
    /// The nonce of the last response.
    pub nonce: String,
    pub resources: usize,
    /// Names subscribed to (empty: wildcard).
    pub subscribed: Vec<String>,
    pub acks: u64,
    pub nacks: u64,
    pub last_nack: Option<Nack>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusInner {
    server: String,
    node_id: String,
    /// CONNECTING, CONNECTED or DISCONNECTED.
    state: String,
    since: String,
    last_error: Option<String>,
    connects: u64,
    types: BTreeMap<String, TypeStatus>,
}

/// The client's state, shared with the admin API.
#[derive(Default)]
pub struct XdsStatus {
    inner: Mutex<StatusInner>,
    /// Every subscribed type has been answered once and applied (or the wait timed out).
    pub initialized: AtomicBool,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl XdsStatus {
    fn with<R>(&self, f: impl FnOnce(&mut StatusInner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn set_state(&self, state: &str, error: Option<String>) {
        self.with(|s| {
            s.state = state.into();
            s.since = now();
            if error.is_some() {
                s.last_error = error;
            }
            if state == "CONNECTED" {
                s.connects += 1;
            }
        });
    }

    /// The status as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        self.with(|s| serde_json::to_value(&*s).unwrap_or_default())
    }
}

/// Starts the client on a thread of its own.
pub fn spawn(sources: Arc<Sources>, cfg: ClientConfig) -> std::io::Result<Arc<XdsStatus>> {
    let status = Arc::new(XdsStatus::default());
    status.with(|s| {
        s.server = cfg.address.clone();
        s.node_id = cfg.node_id.clone();
        s.state = "CONNECTING".into();
        s.since = now();
    });
    let st = status.clone();
    crate::spawn_runtime_thread("lateen-xds".into(), move || run(sources, cfg, st))?;
    Ok(status)
}

/// What the client keeps across streams.
struct Client {
    sources: Arc<Sources>,
    cfg: ClientConfig,
    status: Arc<XdsStatus>,
    /// What is serving.
    applied: XdsSet,
    /// Per type: the version ACKed last.
    versions: BTreeMap<&'static str, String>,
    /// Per type: the nonce of its last response on this stream.
    nonces: BTreeMap<&'static str, String>,
    /// Per non-wildcard type: the names subscribed to.
    names: BTreeMap<&'static str, BTreeSet<String>>,
    /// Types answered at least once since the start.
    answered: BTreeSet<&'static str>,
}

async fn run(sources: Arc<Sources>, cfg: ClientConfig, status: Arc<XdsStatus>) {
    let mut c = Client {
        sources,
        cfg,
        status,
        applied: XdsSet::default(),
        versions: BTreeMap::new(),
        nonces: BTreeMap::new(),
        names: BTreeMap::new(),
        answered: BTreeSet::new(),
    };
    let mut failures = 0u32;
    loop {
        let got_response = match c.session().await {
            Ok(got) => {
                c.status
                    .set_state("DISCONNECTED", Some("the server closed the stream".into()));
                got
            }
            Err((got, e)) => {
                tracing::warn!("xDS stream to {}: {e}", c.cfg.address);
                c.status.set_state("DISCONNECTED", Some(e));
                got
            }
        };
        failures = if got_response { 1 } else { failures + 1 };
        // Exponential backoff from 0.5 s to 30 s, with full jitter so that replicas that
        // lost the same server do not come back in step.
        let cap = Duration::from_millis(500)
            .saturating_mul(1u32 << failures.min(6))
            .min(Duration::from_secs(30));
        let wait = cap.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        tokio::time::sleep(wait).await;
        c.status.set_state("CONNECTING", None);
    }
}

fn to_value(v: &serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

type SessionError = (bool, String);

impl Client {
    fn node(&self) -> Node {
        Node {
            id: self.cfg.node_id.clone(),
            cluster: self.cfg.node_cluster.clone(),
            metadata: Some(Struct {
                fields: self
                    .cfg
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), to_value(v)))
                    .collect(),
            }),
            user_agent_name: "lateen".into(),
            user_agent_version_type: Some(node::UserAgentVersionType::UserAgentVersion(
                env!("CARGO_PKG_VERSION").into(),
            )),
            ..Default::default()
        }
    }

    fn request(&self, type_url: &'static str) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: self.versions.get(type_url).cloned().unwrap_or_default(),
            resource_names: self
                .names
                .get(type_url)
                .map(|n| n.iter().cloned().collect())
                .unwrap_or_default(),
            type_url: type_url.into(),
            response_nonce: self.nonces.get(type_url).cloned().unwrap_or_default(),
            ..Default::default()
        }
    }

    /// Whether the client subscribes to a type now: wildcard types always, the others
    /// once something names a resource of theirs.
    fn subscribed(&self, t: &str) -> bool {
        matches!(t, model::CLUSTER | model::LISTENER)
            || self.names.get(t).is_some_and(|n| !n.is_empty())
    }

    /// One ADS stream, until it ends. Returns whether any response came.
    async fn session(&mut self) -> Result<bool, SessionError> {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.cfg.address))
                .map_err(|e| (false, format!("bad address: {e}")))?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| {
            (
                false,
                format!("cannot connect: {}", crate::fetch::chain(&e)),
            )
        })?;
        let mut client =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
        let (tx, rx) = mpsc::unbounded_channel::<DiscoveryRequest>();
        self.nonces.clear();
        // The node goes on the first request of each stream; CDS first, as Envoy does.
        let mut first = true;
        for t in model::TYPES {
            if !self.subscribed(t) {
                continue;
            }
            let mut req = self.request(t);
            if first {
                req.node = Some(self.node());
                first = false;
            }
            let _ = tx.send(req);
        }
        let mut stream = client
            .stream_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .map_err(|e| (false, format!("stream refused: {e}")))?
            .into_inner();
        self.status.set_state("CONNECTED", None);
        tracing::info!("xDS: connected to {}", self.cfg.address);
        let mut got = false;
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    got = true;
                    self.handle(resp, &tx).await;
                    // The response and the state it replaced are dropped by now.
                    crate::sources::trim();
                }
                Ok(None) => return Ok(got),
                Err(e) => return Err((got, format!("stream error: {e}"))),
            }
        }
    }

    async fn handle(
        &mut self,
        resp: DiscoveryResponse,
        tx: &mpsc::UnboundedSender<DiscoveryRequest>,
    ) {
        let Some(&t) = model::TYPES.iter().find(|t| **t == resp.type_url) else {
            // Not a type Lateen asked for: refuse it by name (it is never silently dropped).
            let _ = tx.send(DiscoveryRequest {
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                error_detail: Some(envoy_types::pb::google::rpc::Status {
                    code: tonic::Code::InvalidArgument as i32,
                    message: format!("type {} is not supported by Lateen", resp.type_url),
                    details: Vec::new(),
                }),
                ..Default::default()
            });
            return;
        };
        self.nonces.insert(t, resp.nonce.clone());
        let started = std::time::Instant::now();
        let mut candidate = self.applied.clone();
        let result = match decode_into(&mut candidate, t, &resp.resources) {
            Ok(()) => {
                prune(&mut candidate);
                // Off the stream's runtime: a build compiles modules and may fetch remote
                // ones with a runtime of its own.
                let (sources, set) = (self.sources.clone(), candidate.clone());
                tokio::task::spawn_blocking(move || sources.apply_xds(set))
                    .await
                    .unwrap_or_else(|e| Err(format!("building the snapshot failed: {e}")))
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(version) => {
                self.applied = candidate;
                self.versions.insert(t, resp.version_info.clone());
                self.answered.insert(t);
                let _ = tx.send(self.request(t));
                tracing::info!(
                    "xDS: ACK {} version {} ({} resources, snapshot {version}, {} ms)",
                    model::short(t),
                    resp.version_info,
                    resp.resources.len(),
                    started.elapsed().as_millis()
                );
                self.status.with(|s| {
                    let ts = s.types.entry(model::short(t).into()).or_default();
                    ts.version = resp.version_info.clone();
                    ts.nonce = resp.nonce.clone();
                    ts.acks += 1;
                    ts.resources = resp.resources.len();
                });
                self.resubscribe(tx);
            }
            Err(error) => {
                tracing::error!(
                    "xDS: NACK {} version {}: {error}",
                    model::short(t),
                    resp.version_info
                );
                let mut req = self.request(t);
                req.error_detail = Some(envoy_types::pb::google::rpc::Status {
                    code: tonic::Code::InvalidArgument as i32,
                    message: error.clone(),
                    details: Vec::new(),
                });
                let _ = tx.send(req);
                self.status.with(|s| {
                    let ts = s.types.entry(model::short(t).into()).or_default();
                    ts.nonce = resp.nonce.clone();
                    ts.nacks += 1;
                    ts.last_nack = Some(Nack {
                        version: resp.version_info.clone(),
                        nonce: resp.nonce.clone(),
                        error,
                        at: now(),
                    });
                });
            }
        }
        self.check_initialized();
    }

    /// Follows what the applied clusters and listeners name: EDS, RDS and ECDS requests
    /// change when their name sets do.
    fn resubscribe(&mut self, tx: &mpsc::UnboundedSender<DiscoveryRequest>) {
        for (t, want) in [
            (model::ENDPOINT, self.applied.endpoint_names()),
            (model::ROUTE, self.applied.route_names()),
            (model::EXTENSION, self.applied.extension_names()),
        ] {
            if self.names.get(t) != Some(&want) {
                let was_empty = self.names.get(t).is_none_or(BTreeSet::is_empty);
                self.names.insert(t, want.clone());
                // An empty name list would mean "everything" for these types; unsubscribing
                // from the last name is sent as such only once subscribed.
                if !(want.is_empty() && was_empty) {
                    let _ = tx.send(self.request(t));
                }
                self.status.with(|s| {
                    s.types
                        .entry(model::short(t).into())
                        .or_default()
                        .subscribed = want.into_iter().collect();
                });
            }
        }
    }

    /// Every subscribed type answered once: the start may open its listeners.
    fn check_initialized(&self) {
        if model::TYPES
            .iter()
            .all(|t| !self.subscribed(t) || self.answered.contains(t))
        {
            self.status.initialized.store(true, Ordering::Release);
        }
    }
}

/// Decodes a response's resources into `set`. Clusters and listeners are state of the
/// world (what a response leaves out is removed); the others are updated by name.
fn decode_into(set: &mut XdsSet, t: &str, resources: &[Any]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    let mut errors = Vec::new();
    if matches!(t, model::CLUSTER | model::LISTENER) {
        match t {
            model::CLUSTER => set.clusters.clear(),
            _ => set.listeners.clear(),
        }
    }
    for (i, raw) in resources.iter().enumerate() {
        // A resource may come wrapped in a discovery `Resource` (names, TTLs).
        let unwrapped;
        let any = if raw.type_url == Resource::type_url() {
            match Resource::decode(raw.value.as_slice()) {
                Ok(Resource {
                    resource: Some(r), ..
                }) => {
                    unwrapped = r;
                    &unwrapped
                }
                _ => {
                    errors.push(format!("resources[{i}]: an empty or bad Resource wrapper"));
                    continue;
                }
            }
        } else {
            raw
        };
        let name = model::resource_name(t, any).unwrap_or_else(|| format!("resources[{i}]"));
        if !seen.insert(name.clone()) {
            errors.push(format!("{} `{name}` appears twice", model::short(t)));
            continue;
        }
        let r = match t {
            model::LISTENER => model::listener(any).map(|l| {
                set.listeners.insert(name, Arc::new(l));
            }),
            model::ROUTE => model::route_configuration(any).map(|r| {
                set.routes.insert(name, Arc::new(r));
            }),
            model::CLUSTER => model::cluster(any).map(|c| {
                set.clusters.insert(name, Arc::new(c));
            }),
            model::ENDPOINT => model::load_assignment(any).map(|(n, e)| {
                set.endpoints.insert(n, Arc::new(e));
            }),
            _ => model::extension(any).map(|w| {
                set.extensions.insert(name, Arc::new(w));
            }),
        };
        if let Err(e) = r {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Drops routes, endpoints and filter configs nothing names any more.
fn prune(set: &mut XdsSet) {
    let (r, e, x) = (
        set.route_names(),
        set.endpoint_names(),
        set.extension_names(),
    );
    set.routes.retain(|n, _| r.contains(n));
    set.endpoints.retain(|n, _| e.contains(n));
    set.extensions.retain(|n, _| x.contains(n));
}
