//! The xDS part of a snapshot: CDS/EDS clusters and LDS listeners, with their RDS routes and
//! ECDS wasm filters, built into the same runtime types as the YAML resources. Routes go to
//! the same router filter; wasm filters run on the same runtime.

use super::{load_envoy_wasm, probe, ChainParts, ListenerAt};
use crate::source::{ConfigError, DocInfo};
use bytes::Bytes;
use lateen_model::cluster::{ClusterSpec, EndpointSpec, UpstreamProtocol};
use lateen_model::xds::{ClusterEndpoints, HttpFilter, Routes, XdsSet, XdsWasm};
use lateen_model::{FilterSpec, ListenerSpec, PluginSpec, Snapshot};
use lateen_wasm::{ClusterResolver, Runtime};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

fn error(kind: &str, name: &str, field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: PathBuf::from("xds"),
        doc: 0,
        line: 0,
        resource: Some(format!("{kind} {name}")),
        field: field.into(),
        message: message.into(),
    }
}

/// CDS clusters, with their endpoints from EDS (or their own load assignment). Unhealthy
/// endpoints are kept out of rotation, as Envoy does.
pub(super) fn clusters(
    set: &XdsSet,
    clusters: &mut HashMap<String, Arc<ClusterSpec>>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) {
    for c in set.clusters.values() {
        if clusters.contains_key(&c.name) {
            errors.push(error(
                "Cluster",
                &c.name,
                "name",
                "a ServiceEntry already defines a cluster of this name",
            ));
            continue;
        }
        let eps = match &c.endpoints {
            ClusterEndpoints::Static(e) => Some(e.clone()),
            ClusterEndpoints::Eds(n) => {
                let e = set.endpoints.get(n).cloned();
                if e.is_none() {
                    warnings.push(format!(
                        "xDS Cluster {}: no ClusterLoadAssignment `{n}` yet, so no endpoints",
                        c.name
                    ));
                }
                e
            }
        };
        let endpoints = eps
            .iter()
            .flat_map(|e| e.iter())
            .filter(|e| e.healthy)
            .map(|e| EndpointSpec::new(e.authority.clone(), BTreeMap::new(), e.weight))
            .collect();
        let proto = if c.http2 {
            UpstreamProtocol::Http2
        } else {
            UpstreamProtocol::Http1
        };
        let mut cl = ClusterSpec::new(c.name.clone(), endpoints, c.lb, proto);
        cl.max_requests = Some(c.max_requests);
        cl.conn.connect_timeout_ms = c.connect_timeout_ms;
        cl.conn.max_connections = c.max_connections;
        cl.conn.max_requests_per_connection = c.max_requests_per_connection;
        clusters.insert(c.name.clone(), Arc::new(cl));
    }
}

/// What the LDS listeners add to a snapshot.
#[derive(Default)]
pub(super) struct Built {
    pub listeners: Vec<ListenerSpec>,
    /// Their wasm filters' plugins (for `/plugins`).
    pub plugins: Vec<Arc<PluginSpec>>,
    /// Filters whose `on_configure` already ran here.
    pub probed: Vec<(*const PluginSpec, Bytes)>,
}

/// LDS listeners. One whose RDS or (required) ECDS config has not come yet is warming, as
/// in Envoy: its previous version keeps serving, or it waits.
pub(super) fn listeners(
    set: &XdsSet,
    chain: &ChainParts<'_>,
    previous: Option<&Snapshot>,
    resolver: &Arc<dyn ClusterResolver>,
    fault_filter: &mut Option<Arc<PluginSpec>>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Built {
    let mut out = Built::default();
    let no_gateways = BTreeSet::new();
    for l in set.listeners.values() {
        let addr = SocketAddr::new(
            chain.opts.bind_override.unwrap_or(l.addr.ip()),
            l.addr.port(),
        );
        let (vhosts, mut waiting) = match &l.routes {
            Routes::Inline(v) => (Some(v.clone()), None),
            Routes::Rds(n) => match set.routes.get(n) {
                Some(v) => (Some(v.clone()), None),
                None => (None, Some(format!("RouteConfiguration `{n}`"))),
            },
        };
        let mut wasm_filters = Vec::new();
        for f in &l.filters {
            let w = match f {
                HttpFilter::Wasm(w) => w.clone(),
                HttpFilter::Discovered { name, optional } => match set.extensions.get(name) {
                    Some(w) => w.clone(),
                    None if *optional => continue,
                    None => {
                        waiting = Some(format!("TypedExtensionConfig `{name}`"));
                        continue;
                    }
                },
            };
            // An unchanged config takes the plugin the previous build loaded: no fetch, no
            // load and no probe on an unrelated push (an EDS update), and its instances
            // stay (an `Always` OCI module is pulled again when its config changes, as
            // istio-agent does).
            let before = previous.and_then(|p| {
                p.plugins
                    .iter()
                    .find(|s| s.xds.as_deref() == Some(&*w))
                    .cloned()
            });
            let built = match before {
                Some(plugin) => Ok(FilterSpec {
                    plugin,
                    configuration: Bytes::from(w.configuration.clone()),
                    scope: None,
                }),
                None => wasm_filter(&w, chain.rt, chain.opts, resolver),
            };
            match built {
                Ok(f) => {
                    out.probed
                        .push((Arc::as_ptr(&f.plugin), f.configuration.clone()));
                    out.plugins.push(f.plugin.clone());
                    wasm_filters.push(f);
                }
                // failure_policy FAIL_OPEN: a filter that cannot load is skipped.
                Err(e) if w.fail_open => warnings.push(format!(
                    "xDS wasm filter `{}` on listener {} is skipped (FAIL_OPEN): {e}",
                    w.name, l.name
                )),
                Err(e) => errors.push(error("TypedExtensionConfig", &w.name, "typed_config", e)),
            }
        }
        let (Some(vhosts), None) = (vhosts, &waiting) else {
            let what = waiting.unwrap_or_default();
            match previous.and_then(|p| p.listener(&l.name)) {
                Some(prev) => {
                    warnings.push(format!(
                        "xDS Listener {}: waiting for {what}; its previous version keeps serving",
                        l.name
                    ));
                    out.listeners.push(ListenerSpec {
                        path: prev.path,
                        ..ListenerSpec::http(prev.name.clone(), prev.addr, prev.filters.clone())
                    });
                }
                None => warnings.push(format!(
                    "xDS Listener {}: warming, waiting for {what}",
                    l.name
                )),
            }
            continue;
        };
        let mut filters = chain.assemble(
            ListenerAt {
                class: lateen_model::ListenerClass::Gateway,
                port: addr.port(),
                gateways: &no_gateways,
            },
            Arc::unwrap_or_clone(vhosts),
            &Default::default(),
            fault_filter,
            errors,
        );
        // The HTTP connection manager's filters run before its router, in its order.
        let at = chain
            .router
            .as_ref()
            .and_then(|r| filters.iter().position(|f| Arc::ptr_eq(&f.plugin, r)))
            .unwrap_or(filters.len());
        filters.splice(at..at, wasm_filters);
        out.listeners.push(ListenerSpec {
            path: l.path,
            ..ListenerSpec::http(l.name.clone(), addr, filters)
        });
    }
    out
}

/// Loads an xDS wasm filter as a WasmPlugin would be (fetch, sha256, compile, schema), with
/// Envoy's plugin identity, and runs its `on_configure` once.
fn wasm_filter(
    w: &Arc<XdsWasm>,
    rt: &Runtime,
    opts: &super::BuildOptions,
    resolver: &Arc<dyn ClusterResolver>,
) -> Result<FilterSpec, String> {
    let info = DocInfo::synthetic("xds", "TypedExtensionConfig", &w.name);
    let name = format!("xds/{}", w.name);
    let mut p = load_envoy_wasm(&info, w, None, "typed_config", name, rt, opts)
        .map_err(|e| format!("{}: {}", e.field, e.message))?;
    p.xds = Some(w.clone());
    let configuration = Bytes::from(w.configuration.clone());
    probe(rt, &p, &configuration, resolver.clone()).map_err(|e| format!("on_configure: {e}"))?;
    Ok(FilterSpec {
        plugin: Arc::new(p),
        configuration,
        scope: None,
    })
}
