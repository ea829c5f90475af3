//! Resources → validated set → [`Snapshot`]. Validation names the file, document, line and
//! field of every problem; a snapshot is only produced when there are none.

use super::envoyfilter;
use super::resources::*;
use super::scope;
use super::source::{config_files, read_documents, ConfigError, Doc, DocInfo};
use super::tls::TlsContext;
use bytes::Bytes;
use lateen_core::tls::server::{ListenerTls, ServerMode, TlsServer};
use lateen_fault::config::{
    Abort as FaultAbortCfg, Delay as FaultDelayCfg, FaultConfig, RouteFault,
};
use lateen_model::access_log::AccessLogSpec;
use lateen_model::cluster::{
    ClusterSpec, ConnSettings, EndpointSpec, HashKey, HashPolicy, LbPolicy, OutlierPolicy,
    UpstreamProtocol,
};
use lateen_model::listener::SniRoute;
use lateen_model::{FailStrategy, FilterSpec, ListenerSpec, Phase, PluginSpec, Snapshot};
use lateen_ratelimit::config::RateLimitConfig;
use lateen_router::table::{
    RouteConfig, RouteTable, RouterConfig, VirtualHostConfig, WeightedCluster,
};
use lateen_sdk::istio::{grpc_code, HttpFaultInjection, Percent};
use lateen_wasm::schema;
use lateen_wasm::{PluginIdentity, Runtime, Vm};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod bootstrap;
mod chain;
mod clusters;
mod listeners;
mod plugins;
mod routes;
mod security;
mod sidecar;
mod xds_build;
// The resource concerns, each a module; what the rest of the crate names is re-exported.
pub use self::{bootstrap::*, plugins::*, routes::*};
use self::{chain::*, clusters::*, listeners::*, security::*, sidecar::*};

/// Every resource of a config path, typed and located.
#[derive(Default)]
pub struct Resources {
    pub gateways: Vec<Doc<GatewaySpec>>,
    pub virtual_services: Vec<Doc<VirtualServiceSpec>>,
    pub destination_rules: Vec<Doc<DestinationRuleSpec>>,
    pub service_entries: Vec<Doc<ServiceEntrySpec>>,
    pub wasm_plugins: Vec<Doc<WasmPluginSpec>>,
    pub envoy_filters: Vec<Doc<EnvoyFilterSpec>>,
    pub authorization_policies: Vec<Doc<AuthorizationPolicySpec>>,
    pub request_authentications: Vec<Doc<RequestAuthenticationSpec>>,
    pub peer_authentications: Vec<Doc<PeerAuthenticationSpec>>,
    pub sidecars: Vec<Doc<SidecarSpec>>,
    pub bootstrap: Option<Doc<BootstrapSpec>>,
    pub warnings: Vec<String>,
}

const NETWORKING: &[&str] = &[
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// Reads and types every document under `path`.
pub fn load(path: &Path) -> Result<Resources, Vec<ConfigError>> {
    let mut res = Resources::default();
    let mut errors = Vec::new();
    let files = config_files(path).map_err(|e| vec![e])?;
    if files.is_empty() {
        return Err(vec![ConfigError {
            file: path.to_path_buf(),
            doc: 0,
            line: 0,
            resource: None,
            field: String::new(),
            message: "no .yaml or .yml files found".into(),
        }]);
    }
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(ConfigError {
                    file: file.clone(),
                    doc: 0,
                    line: 0,
                    resource: None,
                    field: String::new(),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        add_documents(&mut res, &file, &text, &mut errors);
    }
    if errors.is_empty() {
        Ok(res)
    } else {
        Err(errors)
    }
}

/// Reads and types the documents of one file's text (`file` names it in errors). The
/// loader's entry point for text that is not on disk (fuzzing, tools).
pub fn parse(file: &Path, text: &str) -> Result<Resources, Vec<ConfigError>> {
    let mut res = Resources::default();
    let mut errors = Vec::new();
    add_documents(&mut res, file, text, &mut errors);
    if errors.is_empty() {
        Ok(res)
    } else {
        Err(errors)
    }
}

fn add_documents(res: &mut Resources, file: &Path, text: &str, errors: &mut Vec<ConfigError>) {
    let (docs, errs) = read_documents(file, text);
    errors.extend(errs);
    for d in docs {
        let api = d.envelope.api_version.as_str();
        let kind = d.envelope.kind.as_str();
        let r = match (kind, api) {
            ("Gateway", a) if NETWORKING.contains(&a) => d.typed().map(|t| res.gateways.push(t)),
            ("VirtualService", a) if NETWORKING.contains(&a) => {
                d.typed().map(|t| res.virtual_services.push(t))
            }
            ("DestinationRule", a) if NETWORKING.contains(&a) => {
                d.typed().map(|t| res.destination_rules.push(t))
            }
            ("ServiceEntry", a) if NETWORKING.contains(&a) => {
                d.typed().map(|t| res.service_entries.push(t))
            }
            ("WasmPlugin", "extensions.istio.io/v1alpha1") => {
                d.typed().map(|t| res.wasm_plugins.push(t))
            }
            ("Bootstrap", "lateen.io/v1alpha1") => d.typed().map(|t| {
                res.bootstrap = Some(t);
            }),
            ("EnvoyFilter", a) if NETWORKING.contains(&a) => {
                d.typed().map(|t| res.envoy_filters.push(t))
            }
            ("Sidecar", a) if NETWORKING.contains(&a) => d.typed().map(|t| res.sidecars.push(t)),
            ("WorkloadEntry" | "WorkloadGroup" | "ProxyConfig", a) if NETWORKING.contains(&a) => {
                Err(d.info.error("kind", format!("{kind} is not supported yet")))
            }
            ("AuthorizationPolicy", "security.istio.io/v1" | "security.istio.io/v1beta1") => {
                d.typed().map(|t| res.authorization_policies.push(t))
            }
            ("RequestAuthentication", "security.istio.io/v1" | "security.istio.io/v1beta1") => {
                d.typed().map(|t| res.request_authentications.push(t))
            }
            ("PeerAuthentication", "security.istio.io/v1" | "security.istio.io/v1beta1") => {
                d.typed().map(|t| res.peer_authentications.push(t))
            }
            _ => Err(d.info.error(
                "kind",
                format!(
                    "unknown resource `{api}` `{kind}`; expected Gateway, VirtualService, \
                     DestinationRule, ServiceEntry ({}), WasmPlugin \
                     (extensions.istio.io/v1alpha1) or Bootstrap (lateen.io/v1alpha1)",
                    NETWORKING.join(", ")
                ),
            )),
        };
        if let Err(e) = r {
            errors.push(e);
        }
    }
}

/// How to build a snapshot.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Directory holding the built-in filters (`lateen_router.wasm`).
    pub builtin_filters: PathBuf,
    /// Overrides every Gateway server's bind address (tests, local runs).
    pub bind_override: Option<IpAddr>,
    /// Fetches `http://` plugin modules (the host's `fetch` module); `None` refuses them.
    pub remote: Option<Arc<dyn ModuleSource>>,
    /// Where modules pushed through the admin API live (`pushed://NAME` URLs).
    pub pushed_dir: Option<PathBuf>,
}

/// Where remote plugin modules come from. The config layer asks; the host fetches (config
/// code touches no socket).
pub trait ModuleSource: Send + Sync + std::fmt::Debug {
    /// The module at `url`, checked against `sha256` when given. `always` (imagePullPolicy
    /// `Always`) fetches even when a cached copy exists.
    fn fetch(&self, url: &str, sha256: Option<&str>, always: bool) -> Result<Vec<u8>, String>;
}

const ROOT_NAMESPACE: &str = "istio-system";

/// Compiles resources into a snapshot: clusters, listeners with their filter chains and
/// compiled plugins. Each plugin's `on_configure` is run once here, so a config a plugin
/// rejects never reaches a worker.
pub fn build(
    res: &Resources,
    rt: &Runtime,
    opts: &BuildOptions,
    version: u64,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, Vec<ConfigError>> {
    build_with(res, None, rt, opts, version, previous)
}

/// [`build`] with what an xDS control plane pushed beside the files: its clusters join the
/// ServiceEntry ones, its listeners the Gateway ones, under the same plugins and router.
pub fn build_with(
    res: &Resources,
    xds: Option<&lateen_model::xds::XdsSet>,
    rt: &Runtime,
    opts: &BuildOptions,
    version: u64,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut warnings = res.warnings.clone();
    let tls_ctx = TlsContext::new(res);
    let (mut clusters, mut aliases) = build_clusters(res, &tls_ctx, &mut errors);
    if let Some(set) = xds {
        xds_build::clusters(set, &mut clusters, &mut errors, &mut warnings);
    }
    warn_duplicate_destination_rules(res, &mut warnings);
    let redis_url = redis_url(res, &mut errors);
    if redis_url.is_some() {
        aliases.insert(
            lateen_ratelimit::config::REDIS_CLUSTER.to_string(),
            lateen_ratelimit::config::REDIS_CLUSTER.to_string(),
        );
    }
    let workload = workload(res);
    // Probes of plugin configurations resolve names only: validating reaches no store.
    let resolver = lateen_model::names(&clusters, aliases.clone());

    // Plugins that apply to this workload, compiled once each.
    let mut rule_errors = Vec::new();
    let plugins = workload_plugins(
        res,
        &workload,
        &clusters,
        &resolver,
        previous,
        (rt, opts),
        &mut errors,
        (&mut warnings, &mut rule_errors),
    );

    let service_plugins = service_plugins(res, rt, opts, &resolver, &mut errors);

    let router = match load_router(rt, &opts.builtin_filters) {
        Ok(r) => Some(r),
        Err(e) => {
            errors.push(e);
            None
        }
    };

    // Listeners: one per (bind, port) across every Gateway server.
    let mut by_addr: BTreeMap<SocketAddr, BTreeSet<String>> = BTreeMap::new();
    let mut servers_at: BTreeMap<SocketAddr, Vec<(&Doc<GatewaySpec>, usize)>> = BTreeMap::new();
    for gw in &res.gateways {
        for (i, server) in gw.spec.servers.iter().enumerate() {
            let field = format!("spec.servers[{i}]");
            let proto = server.port.protocol.to_ascii_uppercase();
            if !matches!(
                proto.as_str(),
                "HTTP" | "HTTP2" | "GRPC" | "HTTPS" | "TLS" | "TCP" | ""
            ) {
                errors.push(gw.info.error(
                    &format!("{field}.port.protocol"),
                    format!(
                        "protocol `{}` is not supported yet; expected HTTP, HTTP2, GRPC, HTTPS, \
                         TLS or TCP",
                        server.port.protocol
                    ),
                ));
                continue;
            }
            let Ok(port) = u16::try_from(server.port.number) else {
                errors.push(
                    gw.info
                        .error(&format!("{field}.port.number"), "port must be 1-65535"),
                );
                continue;
            };
            let ip = match (&opts.bind_override, &server.bind) {
                (Some(ip), _) => *ip,
                (None, Some(b)) => match b.parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => {
                        errors.push(gw.info.error(
                            &format!("{field}.bind"),
                            format!("`{b}` is not an IP address (unix sockets are not supported)"),
                        ));
                        continue;
                    }
                },
                (None, None) => IpAddr::from([0, 0, 0, 0]),
            };
            by_addr
                .entry(SocketAddr::new(ip, port))
                .or_default()
                .insert(gw.info.key());
            servers_at
                .entry(SocketAddr::new(ip, port))
                .or_default()
                .push((gw, i));
        }
    }

    // Istio's local rate-limit EnvoyFilters, for every listener of this workload.
    let mut rate_limits = RateLimitConfig::default();
    for ef in &res.envoy_filters {
        let selected = ef.spec.workload_selector.as_ref().is_none_or(|s| {
            s.labels
                .iter()
                .all(|(k, v)| workload.labels.get(k) == Some(v))
        });
        let ns_ok =
            ef.info.namespace == ROOT_NAMESPACE || workload.namespaces.contains(&ef.info.namespace);
        match envoyfilter::rate_limit_rules(ef, true) {
            Ok(rules) if selected && ns_ok => rate_limits.rules.extend(rules),
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    let mut ratelimit_filter: Option<Arc<PluginSpec>> = None;
    if !rate_limits.rules.is_empty() {
        match load_builtin(rt, &opts.builtin_filters, "ratelimit", Phase::PostRoute) {
            Ok(f) => ratelimit_filter = Some(f),
            Err(e) => errors.push(e),
        }
    }

    let jwt = jwt_filter(res, &workload, &clusters, &tls_ctx, rt, opts, &mut errors);
    let authz = authz_filter(res, &workload, rt, opts, &mut errors);
    let metrics = metrics_filter(res, &workload, rt, opts, &mut errors);
    let access_log = access_log(res, &mut errors);
    let tracer = tracer(res, &workload, &mut errors);
    let limits = limits(res, &mut errors);
    let gateway_keys: BTreeSet<String> = res.gateways.iter().map(|g| g.info.key()).collect();
    let mut listeners = Vec::new();
    let mut vs_bound: BTreeSet<String> = BTreeSet::new();
    let mut fault_filter: Option<Arc<PluginSpec>> = None;
    let sidecar = match res.bootstrap.as_ref().and_then(|b| b.spec.mode.as_deref()) {
        None | Some("gateway") => false,
        Some("sidecar") => true,
        Some(other) => {
            if let Some(b) = &res.bootstrap {
                errors.push(b.info.error(
                    "spec.mode",
                    format!("unknown mode `{other}`; expected gateway or sidecar"),
                ));
            }
            false
        }
    };
    if sidecar && !by_addr.is_empty() {
        // A sidecar serves its workload's traffic; Gateways configure gateways.
        warnings.push(
            "sidecar mode: Gateway servers are ignored (they configure gateways)".to_string(),
        );
        by_addr.clear();
    }
    // A sidecar enforces AuthorizationPolicy and RequestAuthentication on its inbound HTTP
    // chain, which it does not have yet (inbound is forwarded as TCP): refused rather than
    // left unenforced, and kept out of the outbound chains, where Istio never runs them.
    let (jwt, authz) = if sidecar {
        for (selected, kind, info) in [
            (
                authz.is_some(),
                "AuthorizationPolicy",
                res.authorization_policies.first().map(|d| &d.info),
            ),
            (
                jwt.is_some(),
                "RequestAuthentication",
                res.request_authentications.first().map(|d| &d.info),
            ),
        ] {
            if let (true, Some(info)) = (selected, info) {
                errors.push(info.error(
                    "kind",
                    format!(
                        "{kind} on a sidecar is enforced on inbound HTTP, which Lateen's sidecar \
                         forwards as TCP for now; refused rather than left unenforced"
                    ),
                ));
            }
        }
        (None, None)
    } else {
        (jwt, authz)
    };
    let chain = ChainParts {
        rt,
        opts,
        plugins: &plugins,
        jwt: &jwt,
        authz: &authz,
        router: &router,
        ratelimit: ratelimit_filter.as_ref().map(|f| (f, &rate_limits)),
        metrics: &metrics,
    };
    for (addr, gws) in &by_addr {
        let mut vhosts = Vec::new();
        for vs in &res.virtual_services {
            let refs = gateway_refs(vs);
            if !refs.iter().any(|r| gws.contains(r)) {
                continue;
            }
            vs_bound.insert(vs.info.key());
            if let Some(vh) = virtual_host(vs, res, &clusters, &mut errors, &mut warnings) {
                vhosts.push(vh);
            }
        }
        let faults = route_faults(
            res.virtual_services
                .iter()
                .filter(|vs| gateway_refs(vs).iter().any(|r| gws.contains(r))),
            &mut errors,
        );
        let filters = chain.assemble(
            ListenerAt {
                class: lateen_model::ListenerClass::Gateway,
                port: addr.port(),
                gateways: gws,
            },
            vhosts,
            &faults,
            &mut fault_filter,
            &mut errors,
        );
        let servers = servers_at.get(addr).map_or(&[][..], Vec::as_slice);
        let (tls, https_redirect) = listener_tls(servers, &tls_ctx, &mut errors);
        let sni_routes = sni_routes(*addr, gws, res, &mut errors);
        let tcp = tcp_port(servers, &mut errors);
        let tcp_routes = if tcp {
            tcp_routes(*addr, gws, res, &workload, &mut errors)
        } else {
            Vec::new()
        };
        if tcp && tcp_routes.is_empty() {
            warnings.push(format!(
                "listener {addr}: TCP servers and no VirtualService tcp route; connections \
                 are closed"
            ));
        }
        if tls.as_ref().is_some_and(|t| t.has_passthrough()) && sni_routes.is_empty() {
            warnings.push(format!(
                "listener {addr}: PASSTHROUGH servers and no VirtualService tls route; \
                 passthrough connections are closed"
            ));
        }
        listeners.push(ListenerSpec {
            path: Default::default(),
            name: format!("{}_{}", addr.ip(), addr.port()),
            addr: *addr,
            filters,
            tls,
            sni_routes,
            https_redirect,
            tcp,
            tcp_routes,
            bind: true,
            capture: None,
        });
    }
    let xds_built = xds
        .map(|set| {
            xds_build::listeners(
                set,
                &chain,
                previous,
                &resolver,
                opts.bind_override,
                &mut fault_filter,
                &mut errors,
                &mut warnings,
            )
        })
        .unwrap_or_default();
    // The mesh-wide setting for listeners from the files; xDS ones carry their own.
    let path = path_normalization(res, &mut errors);
    for l in &mut listeners {
        l.path = path;
    }
    listeners.extend(xds_built.listeners);
    // Checked in either mode, so a bad one is reported wherever it is loaded.
    let sc = sidecar_resource(res, &workload, &mut errors);
    if !sidecar {
        if let Some(s) = res.sidecars.first() {
            warnings.push(format!(
                "{}: Sidecar resources configure sidecars (ignored in gateway mode)",
                s.info.key()
            ));
        }
    }
    if sidecar {
        listeners.extend(
            sidecar_listeners(res, sc, &clusters, &chain, &mut fault_filter, &mut errors)
                .into_iter()
                .map(|l| ListenerSpec { path, ..l }),
        );
        let mut policy = inbound_policy(res, &workload, &tls_ctx, &mut errors, &mut warnings);
        if let Some(sc) = sc {
            policy.endpoints = ingress_endpoints(sc, &mut errors);
        }
        listeners.push(ListenerSpec {
            path,
            capture: Some(lateen_model::Capture::Inbound(Arc::new(policy))),
            ..ListenerSpec::http(
                "virtualInbound".into(),
                SocketAddr::new(IpAddr::from([0, 0, 0, 0]), INBOUND_CAPTURE_PORT),
                Vec::new(),
            )
        });
    } else if let Some(pa) = res.peer_authentications.first() {
        warnings.push(format!(
            "{}: PeerAuthentication governs a sidecar's inbound side; a gateway's TLS is its \
             Gateway servers' (ignored in gateway mode)",
            pa.info.key()
        ));
    }
    // Gateways referenced by a VirtualService must exist (Istio's analyzer: IST0101).
    for vs in &res.virtual_services {
        for (i, r) in vs.spec.gateways.iter().enumerate() {
            if r == "mesh" {
                continue;
            }
            let key = qualify(r, &vs.info.namespace);
            if !gateway_keys.contains(&key) {
                errors.push(vs.info.error(
                    &format!("spec.gateways[{i}]"),
                    format!("gateway `{key}` is not defined"),
                ));
            }
        }
        if !sidecar
            && !vs_bound.contains(&vs.info.key())
            && !vs.spec.gateways.iter().any(|g| g != "mesh")
        {
            warnings.push(format!(
                "{}: VirtualService binds to no gateway (only `mesh`); it applies to sidecars, \
                 not to this gateway",
                vs.info.key()
            ));
        }
    }

    // Run every plugin's on_configure once per distinct configuration, off the request path
    // (a plugin on several listeners with the same config is probed once).
    let mut probed: BTreeSet<(*const PluginSpec, Bytes)> = xds_built.probed.into_iter().collect();
    for listener in &listeners {
        for f in &listener.filters {
            if !probed.insert((Arc::as_ptr(&f.plugin), f.configuration.clone())) {
                continue;
            }
            // A scoped plugin's default is probed only where it runs; its rules were
            // probed one by one when loaded.
            if f.scope.as_ref().is_some_and(|s| s.default.is_none()) {
                continue;
            }
            // Accepted by the running snapshot as it is (module, identity, configuration):
            // a push that changes only endpoints or other routes does not re-run it.
            if previous.is_some_and(|p| configured_before(p, f)) {
                continue;
            }
            let where_ = plugins
                .iter()
                .find(|l| Arc::ptr_eq(&l.spec, &f.plugin))
                .map(|l| l.info.clone());
            // The configurations the host generates for its built-in filters are checked
            // against the filters' schemas too: a mismatch is a Lateen bug, named here.
            if let (Some(schema), None) = (&f.plugin.schema, &where_) {
                let value: serde_json::Value =
                    serde_json::from_slice(&f.configuration).unwrap_or_default();
                if let Some(v) = schema.check(Some(&value)).into_iter().next() {
                    errors.push(ConfigError {
                        file: opts.builtin_filters.clone(),
                        doc: 0,
                        line: 0,
                        resource: Some(format!("listener {}", listener.name)),
                        field: format!("{}{}", f.plugin.name, v.field),
                        message: format!(
                            "generated configuration violates the filter's schema: {}",
                            v.message
                        ),
                    });
                }
            }
            if let Err(e) = probe(rt, &f.plugin, &f.configuration, resolver.clone()) {
                let field = if matches!(e, lateen_wasm::WasmError::ConfigureRejected) {
                    "spec.pluginConfig"
                } else {
                    "spec.url"
                };
                errors.push(match &where_ {
                    Some(info) => info.error(field, e.to_string()),
                    None => ConfigError {
                        file: opts.builtin_filters.clone(),
                        doc: 0,
                        line: 0,
                        resource: Some(format!("listener {}", listener.name)),
                        field: "router".into(),
                        message: e.to_string(),
                    },
                });
            }
        }
    }
    errors.dedup();
    if !errors.is_empty() {
        return Err(errors);
    }
    // A scope that takes no listener is almost always a mistake (a wrong port): say so.
    for Loaded {
        spec: p,
        info,
        gateways,
        ..
    } in &plugins
    {
        if (!p.traffic.is_empty() || !gateways.is_empty())
            && !listeners
                .iter()
                .any(|l| l.filters.iter().any(|f| Arc::ptr_eq(&f.plugin, p)))
        {
            warnings.push(format!(
                "{}:{}: WasmPlugin {}: its match or targetRefs take no listener of this proxy, \
                 so it runs nowhere",
                info.file.display(),
                info.line_of(if gateways.is_empty() {
                    "spec.match"
                } else {
                    "spec.targetRefs"
                }),
                p.name
            ));
        }
    }
    Ok(Snapshot {
        version,
        workload: workload
            .name
            .as_ref()
            .map(|n| match workload.namespaces.first() {
                Some(ns) => format!("{n}.{ns}"),
                None => n.clone(),
            }),
        listeners,
        clusters,
        rule_errors,
        plugins: plugins
            .into_iter()
            .map(|l| l.spec)
            .chain(xds_built.plugins)
            .chain(router)
            .chain(ratelimit_filter)
            .chain(fault_filter)
            .chain(authz.map(|a| a.plugin))
            .chain(jwt.map(|j| j.plugin))
            .chain(metrics.map(|m| m.plugin))
            .collect(),
        service_plugins,
        aliases,
        redis_url,
        warnings,
        telemetry: lateen_model::Telemetry {
            access_log,
            tracing: tracer,
        },
        limits,
        read_files: tls_ctx.files(),
    })
}

/// Warns of DestinationRules after the first for the same host (the first one wins).
fn warn_duplicate_destination_rules(res: &Resources, warnings: &mut Vec<String>) {
    let mut seen_dr: BTreeMap<&str, String> = BTreeMap::new();
    for dr in &res.destination_rules {
        if let Some(first) = seen_dr.get(dr.spec.host.as_str()) {
            warnings.push(format!(
                "{}: ignored: DestinationRule {first} already configures host `{}` (the first one wins)",
                dr.info.key(),
                dr.spec.host
            ));
        } else {
            seen_dr.insert(&dr.spec.host, dr.info.key());
        }
    }
}

/// The Bootstrap's Redis (`spec.redis.address`) as a `redis://` URL.
fn redis_url(res: &Resources, errors: &mut Vec<ConfigError>) -> Option<String> {
    res.bootstrap
        .as_ref()
        .and_then(|b| b.spec.redis.as_ref().map(|r| (b, r)))
        .map(|(b, r)| {
            if r.address.contains("://") || !r.address.contains(':') {
                errors.push(b.info.error("spec.redis.address", "expected host:port"));
            }
            format!("redis://{}/", r.address)
        })
}

/// The WasmPlugins that select this workload, each loaded with its canary, placement,
/// traffic selectors, scope and recycling, in Istio's order (phase, then priority, then
/// name). A plugin with a bad field is refused alone, with its error.
#[allow(clippy::too_many_arguments)]
fn workload_plugins(
    res: &Resources,
    workload: &WorkloadInfo,
    clusters: &HashMap<String, Arc<ClusterSpec>>,
    resolver: &Arc<dyn lateen_wasm::ClusterResolver>,
    previous: Option<&Snapshot>,
    (rt, opts): (&Runtime, &BuildOptions),
    errors: &mut Vec<ConfigError>,
    (warnings, rule_errors): (&mut Vec<String>, &mut Vec<ConfigError>),
) -> Vec<Loaded> {
    let mut plugins: Vec<Loaded> = Vec::new();
    for wp in &res.wasm_plugins {
        if !selects(&wp.info, wp.spec.selector.as_ref(), workload) {
            continue;
        }
        let parsed = (
            load_plugin(&wp.info, &wp.spec, "spec", wp.info.key(), rt, opts),
            canary(wp, rt, opts),
            placement(wp),
            traffic(wp),
            scope::parse(wp),
            recycle(wp),
        );
        match parsed {
            (Ok((mut spec, cfg)), Ok(c), Ok(p), Ok(t), Ok(sc), Ok(r)) => {
                spec.canary = c;
                spec.placement = p;
                spec.traffic = t;
                spec.recycle = r;
                let spec = Arc::new(spec);
                for g in &sc.gateways {
                    if !res.gateways.iter().any(|gw| gw.info.key() == *g) {
                        warnings.push(format!(
                            "{}:{}: WasmPlugin {}: targetRefs Gateway `{g}` does not exist, so \
                             it attaches to nothing there",
                            wp.info.file.display(),
                            wp.info.line_of("spec.targetRefs"),
                            wp.info.key()
                        ));
                    }
                }
                let rules = (!sc.rules.is_empty()).then(|| {
                    scoped_rules(
                        res,
                        wp,
                        &spec,
                        &sc,
                        clusters,
                        previous,
                        rt,
                        resolver,
                        warnings,
                        rule_errors,
                    )
                });
                plugins.push(Loaded {
                    spec,
                    config: cfg,
                    info: wp.info.clone(),
                    gateways: sc.gateways,
                    rules: rules.map(|r| (r, sc.default_disabled)),
                });
            }
            (a, b, c, d, e, f) => errors.extend(
                [a.err(), b.err(), c.err(), d.err(), e.err(), f.err()]
                    .into_iter()
                    .flatten(),
            ),
        }
    }
    plugins.sort_by(|a, b| {
        (a.spec.phase, -a.spec.priority, &a.spec.name).cmp(&(
            b.spec.phase,
            -b.spec.priority,
            &b.spec.name,
        ))
    });

    plugins
}

/// The Bootstrap's service plugins (singletons, no stream), each probed once.
fn service_plugins(
    res: &Resources,
    rt: &Runtime,
    opts: &BuildOptions,
    resolver: &Arc<dyn lateen_wasm::ClusterResolver>,
    errors: &mut Vec<ConfigError>,
) -> Vec<FilterSpec> {
    let mut service_plugins = Vec::new();
    if let Some(b) = &res.bootstrap {
        for (i, sp) in b.spec.service_plugins.iter().enumerate() {
            let as_wasm = WasmPluginSpec {
                url: sp.url.clone(),
                sha256: sp.sha256.clone(),
                plugin_config: sp.plugin_config.clone(),
                vm_config: sp.vm_config.clone(),
                ..WasmPluginSpec::default()
            };
            let prefix = format!("spec.servicePlugins[{i}]");
            let name = format!("{}/{}", b.info.namespace, sp.name);
            match load_plugin(&b.info, &as_wasm, &prefix, name, rt, opts) {
                Ok((spec, cfg)) => {
                    let spec = Arc::new(spec);
                    if let Err(e) = probe(rt, &spec, &cfg, resolver.clone()) {
                        errors.push(
                            b.info
                                .error(&format!("{prefix}.pluginConfig"), e.to_string()),
                        );
                    }
                    service_plugins.push(FilterSpec {
                        plugin: spec,
                        configuration: cfg,
                        scope: None,
                    });
                }
                Err(e) => errors.push(e),
            }
        }
    }

    service_plugins
}

/// Whether `prev` runs `f`'s module with the same identity and configuration.
fn configured_before(prev: &Snapshot, f: &FilterSpec) -> bool {
    let (a, b) = (&f.plugin, &f.plugin.identity);
    prev.listeners.iter().flat_map(|l| &l.filters).any(|g| {
        let (p, i) = (&g.plugin, &g.plugin.identity);
        g.scope.is_none() == f.scope.is_none()
            && p.module.sha256 == a.module.sha256
            && (&i.name, &i.root_id, &i.vm_id, &i.env, &i.vm_configuration)
                == (&b.name, &b.root_id, &b.vm_id, &b.env, &b.vm_configuration)
            && g.configuration == f.configuration
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("1.5s"), Some(1500));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("2m"), Some(120_000));
        assert_eq!(parse_duration_ms("x"), None);
    }
}
