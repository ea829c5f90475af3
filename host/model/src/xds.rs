//! What an xDS control plane has pushed and Lateen has accepted, decoded from Envoy's
//! protos into plain data (listeners, routes, clusters, endpoints, wasm filter configs).
//! The config compiler builds the snapshot from it beside the YAML resources.

use crate::cluster::LbPolicy;
use lateen_core::path::PathNormalization;
use lateen_router::table::VirtualHostConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

/// What the control plane has pushed and Lateen has accepted, by resource name.
#[derive(Debug, Clone, Default)]
pub struct XdsSet {
    pub listeners: BTreeMap<String, Arc<XdsListener>>,
    pub routes: BTreeMap<String, Arc<Vec<VirtualHostConfig>>>,
    pub clusters: BTreeMap<String, Arc<XdsCluster>>,
    pub endpoints: BTreeMap<String, Arc<Vec<XdsEndpoint>>>,
    pub extensions: BTreeMap<String, Arc<XdsWasm>>,
}

impl XdsSet {
    /// Route configurations the listeners name (the RDS subscription).
    pub fn route_names(&self) -> BTreeSet<String> {
        self.listeners
            .values()
            .filter_map(|l| match &l.routes {
                Routes::Rds(n) => Some(n.clone()),
                Routes::Inline(_) => None,
            })
            .collect()
    }

    /// Load assignments the EDS clusters name (the EDS subscription).
    pub fn endpoint_names(&self) -> BTreeSet<String> {
        self.clusters
            .values()
            .filter_map(|c| match &c.endpoints {
                ClusterEndpoints::Eds(n) => Some(n.clone()),
                ClusterEndpoints::Static(_) => None,
            })
            .collect()
    }

    /// Filter configs the listeners discover by name (the ECDS subscription).
    pub fn extension_names(&self) -> BTreeSet<String> {
        self.listeners
            .values()
            .flat_map(|l| l.filters.iter())
            .filter_map(|f| match f {
                HttpFilter::Discovered { name, .. } => Some(name.clone()),
                HttpFilter::Wasm(_) => None,
            })
            .collect()
    }

    /// Whether nothing has been pushed.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty() && self.clusters.is_empty()
    }
}

/// An LDS listener with one HTTP connection manager.
#[derive(Debug, Clone)]
pub struct XdsListener {
    pub name: String,
    pub addr: SocketAddr,
    pub routes: Routes,
    /// The HTTP filters before the router, in order.
    pub filters: Vec<HttpFilter>,
    /// From the HTTP connection manager's path settings (Envoy's default: none).
    pub path: PathNormalization,
}

#[derive(Debug, Clone)]
pub enum Routes {
    /// RDS by name.
    Rds(String),
    Inline(Arc<Vec<VirtualHostConfig>>),
}

#[derive(Debug, Clone)]
pub enum HttpFilter {
    /// ECDS: the filter's config comes as a `TypedExtensionConfig` of this name.
    Discovered {
        name: String,
        /// `is_optional`: a missing config skips the filter instead of failing requests.
        optional: bool,
    },
    Wasm(Arc<XdsWasm>),
}

/// The VM environment variable in which istiod passes a WasmPlugin's `imagePullPolicy`.
pub const PULL_POLICY_ENV: &str = "ISTIO_META_WASM_IMAGE_PULL_POLICY";

/// A proxy-wasm filter (`envoy.extensions.filters.http.wasm.v3.Wasm`).
#[derive(Debug, Clone, PartialEq)]
pub struct XdsWasm {
    /// `IfNotPresent` or `Always` for an `oci://` module (istiod's `PULL_POLICY_ENV`).
    pub pull_policy: Option<String>,
    /// The WasmPlugin's resource version (istiod's `RESOURCE_VERSION_ENV`): a new one makes
    /// the config differ, so an `Always` module is pulled again.
    pub resource_version: Option<String>,
    /// The extension config's (or HTTP filter's) name.
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    /// `file:///path`, `http(s)://...` or `oci://...`.
    pub url: String,
    pub sha256: Option<String>,
    /// The plugin configuration, as the plugin reads it in `on_configure`.
    pub configuration: Vec<u8>,
    pub vm_configuration: Vec<u8>,
    pub env: Vec<(String, String)>,
    /// FAIL_OPEN: a module that cannot load is skipped, and a trap skips the filter.
    pub fail_open: bool,
}

/// A CDS cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsCluster {
    pub name: String,
    pub lb: LbPolicy,
    pub connect_timeout_ms: u64,
    pub http2: bool,
    /// Circuit breakers of the default priority (Envoy's defaults: 1024 each).
    pub max_requests: u64,
    pub max_connections: u32,
    pub max_requests_per_connection: u32,
    pub endpoints: ClusterEndpoints,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClusterEndpoints {
    /// From EDS, under this service name.
    Eds(String),
    /// STATIC / STRICT_DNS / LOGICAL_DNS: the cluster's own load assignment.
    Static(Arc<Vec<XdsEndpoint>>),
}

/// One endpoint of a load assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsEndpoint {
    /// `host:port`.
    pub authority: String,
    pub weight: u32,
    /// HEALTHY or UNKNOWN (Envoy load-balances over both); others are kept out of rotation.
    pub healthy: bool,
}
