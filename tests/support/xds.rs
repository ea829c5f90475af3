//! A fake xDS control plane: a real tonic ADS server on 127.0.0.1 serving state of the world
//! as go-control-plane does (answer a request when the server's version of that type is
//! not the one the client has; EDS, RDS and ECDS filtered to the names requested), and
//! builders for the resources the conformance tests push.

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    address, async_data_source, config_source, data_source, socket_address, Address,
    AggregatedConfigSource, AsyncDataSource, ConfigSource, DataSource, ExtensionConfigSource,
    HealthStatus, HttpUri, RemoteDataSource, SocketAddress, TypedExtensionConfig,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, weighted_cluster, Route, RouteAction, RouteConfiguration,
    RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::extensions::wasm::v3::{
    plugin_config, EnvironmentVariables, PluginConfig, VmConfig,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Any, StringValue, UInt32Value};
use prost::{Message, Name};
use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const EXTENSION: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

pub fn any<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

/// One type's resources at a version, by name.
#[derive(Clone, Default)]
struct Typed {
    version: String,
    resources: BTreeMap<String, Any>,
}

#[derive(Default)]
struct State {
    types: BTreeMap<String, Typed>,
    /// Every request received, in order, over every stream.
    requests: Vec<DiscoveryRequest>,
    nonce: u64,
    streams: u64,
}

/// The control plane. Dropping it stops the server.
pub struct ControlPlane {
    pub port: u16,
    state: Arc<Mutex<State>>,
    /// Bumped on every push, so open streams send what changed.
    pushed: watch::Sender<u64>,
    /// Bumped to end every open stream with an error (the server "restarts").
    kill: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Service {
    state: Arc<Mutex<State>>,
    pushed: watch::Receiver<u64>,
    kill: watch::Receiver<u64>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

/// Per stream and type: what the client asked for and what was sent.
#[derive(Default)]
struct Sub {
    names: Vec<String>,
    sent_version: Option<String>,
    sent_nonce: String,
}

impl Service {
    /// The response for `type_url` if the client does not have the server's version yet.
    fn response_for(&self, type_url: &str, sub: &mut Sub) -> Option<DiscoveryResponse> {
        let mut st = self.state.lock().unwrap();
        let typed = st.types.get(type_url).cloned()?;
        if sub.sent_version.as_deref() == Some(typed.version.as_str()) {
            return None;
        }
        st.nonce += 1;
        let nonce = format!("n{}", st.nonce);
        let wildcard = matches!(type_url, LISTENER | CLUSTER);
        let resources = typed
            .resources
            .iter()
            .filter(|(n, _)| wildcard || sub.names.contains(n))
            .map(|(_, r)| r.clone())
            .collect();
        sub.sent_version = Some(typed.version.clone());
        sub.sent_nonce = nonce.clone();
        Some(DiscoveryResponse {
            version_info: typed.version,
            resources,
            type_url: type_url.into(),
            nonce,
            ..Default::default()
        })
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel::<Result<DiscoveryResponse, Status>>();
        let svc = self.clone();
        svc.state.lock().unwrap().streams += 1;
        tokio::spawn(async move {
            let mut subs: BTreeMap<String, Sub> = BTreeMap::new();
            let (mut pushed, mut kill) = (svc.pushed.clone(), svc.kill.clone());
            kill.borrow_and_update();
            loop {
                tokio::select! {
                    msg = incoming.message() => {
                        let Ok(Some(req)) = msg else { return };
                        svc.state.lock().unwrap().requests.push(req.clone());
                        let sub = subs.entry(req.type_url.clone()).or_default();
                        // A stale nonce: the client has not seen the latest response yet.
                        if !req.response_nonce.is_empty() && req.response_nonce != sub.sent_nonce {
                            continue;
                        }
                        let names_changed = sub.names != req.resource_names;
                        sub.names = req.resource_names.clone();
                        if req.error_detail.is_some() {
                            continue; // NACK: wait for the next push.
                        }
                        if names_changed || req.response_nonce.is_empty() {
                            sub.sent_version = None;
                        }
                        if let Some(r) = svc.response_for(&req.type_url, sub) {
                            let _ = tx.send(Ok(r));
                        }
                    }
                    r = pushed.changed() => {
                        if r.is_err() { return }
                        for (t, sub) in subs.iter_mut() {
                            if let Some(r) = svc.response_for(t, sub) {
                                let _ = tx.send(Ok(r));
                            }
                        }
                    }
                    r = kill.changed() => {
                        if r.is_ok() {
                            let _ = tx.send(Err(Status::unavailable("control plane restarting")));
                        }
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented("delta xDS is not served here"))
    }
}

impl ControlPlane {
    pub async fn start() -> ControlPlane {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind control plane");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let (pushed, pushed_rx) = watch::channel(0);
        let (kill, kill_rx) = watch::channel(0);
        let svc = Service {
            state: state.clone(),
            pushed: pushed_rx,
            kill: kill_rx,
        };
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(
                    AggregatedDiscoveryServiceServer::new(svc)
                        .max_decoding_message_size(64 << 20)
                        .max_encoding_message_size(256 << 20),
                )
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        ControlPlane {
            port,
            state,
            pushed,
            kill,
            task,
        }
    }

    /// Sets one type's resources at `version` and pushes them to open streams.
    pub fn set(&self, type_url: &str, version: &str, resources: Vec<(String, Any)>) {
        {
            let mut st = self.state.lock().unwrap();
            st.types.insert(
                type_url.into(),
                Typed {
                    version: version.into(),
                    resources: resources.into_iter().collect(),
                },
            );
        }
        self.pushed.send_modify(|n| *n += 1);
    }

    /// Ends every open stream with UNAVAILABLE.
    pub fn kill_streams(&self) {
        self.kill.send_modify(|n| *n += 1);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<DiscoveryRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Streams opened so far.
    pub fn streams(&self) -> u64 {
        self.state.lock().unwrap().streams
    }

    /// The last request of `type_url` that answered a response (an ACK or NACK).
    pub fn last_reply(&self, type_url: &str) -> Option<DiscoveryRequest> {
        self.requests()
            .into_iter()
            .rev()
            .find(|r| r.type_url == type_url && !r.response_nonce.is_empty())
    }
}

pub fn socket(ip: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port.into())),
            ..Default::default()
        })),
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: 2, // V3
        ..Default::default()
    }
}

/// An EDS cluster.
pub fn eds_cluster(name: &str) -> (String, Any) {
    let c = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    };
    (name.into(), any(&c))
}

/// A load assignment: `(port, weight)` endpoints on 127.0.0.1.
pub fn endpoints(cluster: &str, eps: &[(u16, u32)]) -> (String, Any) {
    let eps: Vec<_> = eps
        .iter()
        .map(|(p, w)| (*p, *w, HealthStatus::Unknown))
        .collect();
    endpoints_with_health(cluster, &eps)
}

/// A load assignment: `(port, weight, health)` endpoints on 127.0.0.1.
pub fn endpoints_with_health(cluster: &str, eps: &[(u16, u32, HealthStatus)]) -> (String, Any) {
    let la = ClusterLoadAssignment {
        cluster_name: cluster.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: eps
                .iter()
                .map(|(port, w, h)| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket("127.0.0.1", *port)),
                        ..Default::default()
                    })),
                    load_balancing_weight: Some(UInt32Value { value: *w }),
                    health_status: *h as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    (cluster.into(), any(&la))
}

/// A listener on 127.0.0.1:`port` whose routes come from RDS `routes`, with ECDS wasm
/// filters named `filters` before the router.
pub fn listener(name: &str, port: u16, routes: &str, filters: &[&str]) -> (String, Any) {
    let mut http_filters: Vec<HttpFilter> = filters
        .iter()
        .map(|f| HttpFilter {
            name: (*f).into(),
            config_type: Some(http_filter::ConfigType::ConfigDiscovery(
                ExtensionConfigSource {
                    config_source: Some(ads()),
                    // As istiod lists them for a WasmPlugin.
                    type_urls: vec![
                        Wasm::type_url(),
                        "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC".into(),
                    ],
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .collect();
    http_filters.push(HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            any(&Router::default()),
        )),
        ..Default::default()
    });
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: routes.into(),
        })),
        http_filters,
        ..Default::default()
    };
    let l = Listener {
        name: name.into(),
        address: Some(socket("127.0.0.1", port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    (name.into(), any(&l))
}

/// A route: prefix match to weighted clusters.
pub fn route(prefix: &str, clusters: &[(&str, u32)]) -> Route {
    let spec = if let [(c, _)] = clusters {
        route_action::ClusterSpecifier::Cluster((*c).into())
    } else {
        route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: clusters
                .iter()
                .map(|(c, w)| weighted_cluster::ClusterWeight {
                    name: (*c).into(),
                    weight: Some(UInt32Value { value: *w }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    };
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(spec),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A route configuration with one `*` virtual host.
pub fn route_config(name: &str, routes: Vec<Route>) -> (String, Any) {
    let rc = RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    };
    (name.into(), any(&rc))
}

/// An ECDS wasm filter config: a local module, its configuration as a StringValue.
pub fn wasm_filter(
    name: &str,
    file: &std::path::Path,
    config: &str,
    fail_open: bool,
) -> (String, Any) {
    let code = async_data_source::Specifier::Local(DataSource {
        specifier: Some(data_source::Specifier::Filename(file.display().to_string())),
        ..Default::default()
    });
    wasm_filter_with(name, code, config, fail_open)
}

/// An ECDS wasm filter config whose module is fetched from `uri` and checked by `sha256`.
pub fn wasm_filter_remote(name: &str, uri: &str, sha256: &str, config: &str) -> (String, Any) {
    let code = async_data_source::Specifier::Remote(RemoteDataSource {
        http_uri: Some(HttpUri {
            uri: uri.into(),
            ..Default::default()
        }),
        sha256: sha256.into(),
        ..Default::default()
    });
    wasm_filter_with(name, code, config, false)
}

/// A WasmPlugin `istio-system/NAME` with `url: oci://...`, no sha256 and no pluginConfig,
/// as istiod renders it for ECDS: an empty `Any` configuration, a remote `http_uri` with
/// cluster `_`, and the pull policy and resource version in the VM's environment.
pub fn wasm_filter_istiod(
    name: &str,
    oci: &str,
    pull_policy: &str,
    version: &str,
) -> (String, Any) {
    let mut env = std::collections::HashMap::new();
    env.insert(
        "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION".to_string(),
        version.to_string(),
    );
    env.insert(
        "ISTIO_META_WASM_IMAGE_PULL_POLICY".to_string(),
        pull_policy.to_string(),
    );
    let w = Wasm {
        config: Some(PluginConfig {
            name: format!("istio-system.{name}"),
            configuration: Some(Any::default()),
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                runtime: "envoy.wasm.runtime.v8".into(),
                code: Some(AsyncDataSource {
                    specifier: Some(async_data_source::Specifier::Remote(RemoteDataSource {
                        http_uri: Some(HttpUri {
                            uri: oci.into(),
                            timeout: Some(envoy_types::pb::google::protobuf::Duration {
                                seconds: 30,
                                nanos: 0,
                            }),
                            http_upstream_type: Some(
                                envoy_types::pb::envoy::config::core::v3::http_uri::HttpUpstreamType::Cluster(
                                    "_".into(),
                                ),
                            ),
                        }),
                        ..Default::default()
                    })),
                }),
                environment_variables: Some(EnvironmentVariables {
                    key_values: env,
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }),
    };
    extension_config(name, &w)
}

/// The ECDS resource `name` carrying `w`.
fn extension_config(name: &str, w: &Wasm) -> (String, Any) {
    let tec = TypedExtensionConfig {
        name: name.into(),
        typed_config: Some(any(w)),
    };
    (name.into(), any(&tec))
}

fn wasm_filter_with(
    name: &str,
    code: async_data_source::Specifier,
    config: &str,
    fail_open: bool,
) -> (String, Any) {
    let w = Wasm {
        config: Some(PluginConfig {
            name: name.into(),
            root_id: name.into(),
            configuration: Some(any(&StringValue {
                value: config.into(),
            })),
            failure_policy: if fail_open { 3 } else { 2 },
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                vm_id: name.into(),
                runtime: "envoy.wasm.runtime.v8".into(),
                code: Some(AsyncDataSource {
                    specifier: Some(code),
                }),
                ..Default::default()
            })),
            ..Default::default()
        }),
    };
    extension_config(name, &w)
}

/// Names the requests of a type carried, for assertions.
pub fn names(r: &DiscoveryRequest) -> BTreeSet<String> {
    r.resource_names.iter().cloned().collect()
}
