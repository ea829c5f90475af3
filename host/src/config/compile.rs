//! Resources → validated set → [`Snapshot`]. Validation names the file, document, line and
//! field of every problem; a snapshot is only produced when there are none.

use super::envoyfilter;
use super::resources::*;
use super::scope;
use super::source::{config_files, read_documents, ConfigError, Doc, DocInfo};
use super::tls::TlsContext;
use crate::access_log::AccessLogSpec;
use crate::cluster::{
    Cluster, ConnSettings, Endpoint, HashKey, HashPolicy, LbPolicy, OutlierPolicy, UpstreamProtocol,
};
use crate::snapshot::{FailStrategy, FilterSpec, ListenerSpec, Phase, PluginSpec, Snapshot};
use crate::tcp::SniRoute;
use bytes::Bytes;
use lateen_core::tls::server::{ListenerTls, ServerMode, TlsServer};
use lateen_fault::config::{
    Abort as FaultAbortCfg, Delay as FaultDelayCfg, FaultConfig, RouteFault,
};
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

#[path = "compile_xds.rs"]
mod xds_build;

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
    xds: Option<&super::xds::XdsSet>,
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
    let redis_url = res
        .bootstrap
        .as_ref()
        .and_then(|b| b.spec.redis.as_ref().map(|r| (b, r)))
        .map(|(b, r)| {
            if r.address.contains("://") || !r.address.contains(':') {
                errors.push(b.info.error("spec.redis.address", "expected host:port"));
            }
            format!("redis://{}/", r.address)
        });
    if redis_url.is_some() {
        aliases.insert(
            lateen_ratelimit::config::REDIS_CLUSTER.to_string(),
            lateen_ratelimit::config::REDIS_CLUSTER.to_string(),
        );
    }
    let workload = workload(res);
    let resolver = Snapshot::resolver(&clusters, aliases, redis_url.clone());

    // Plugins that apply to this workload, compiled once each.
    let mut plugins: Vec<Loaded> = Vec::new();
    let mut rule_errors = Vec::new();
    for wp in &res.wasm_plugins {
        if !selects(&wp.info, wp.spec.selector.as_ref(), &workload) {
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
                        &clusters,
                        previous,
                        rt,
                        &resolver,
                        &mut warnings,
                        &mut rule_errors,
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
                class: crate::snapshot::ListenerClass::Gateway,
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
            capture: Some(crate::snapshot::Capture::Inbound(Arc::new(policy))),
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
        resolver,
        redis_url,
        warnings,
        telemetry: crate::snapshot::Telemetry {
            access_log,
            tracing: tracer,
        },
        access_log: None,
        tracer: None,
        limits,
        read_files: tls_ctx.files(),
    })
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

/// Istio's outbound and inbound capture ports.
const OUTBOUND_CAPTURE_PORT: u16 = 15001;
const INBOUND_CAPTURE_PORT: u16 = 15006;

/// The workload's PeerAuthentication, resolved as Istio does: the mesh-wide policy (root
/// namespace, no selector), then the namespace's (no selector), then the workload's (a
/// selector that matches), each mode other than UNSET overriding the one before; port
/// modes from the workload's policy. Default PERMISSIVE.
fn inbound_policy(
    res: &Resources,
    w: &WorkloadInfo,
    tls: &TlsContext,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> crate::sidecar::InboundPolicy {
    use crate::sidecar::{InboundPolicy, MtlsMode};
    let parse = |pa: &Doc<PeerAuthenticationSpec>,
                 m: &MtlsSpec,
                 at: &str,
                 errors: &mut Vec<ConfigError>| {
        match m.mode.as_deref().unwrap_or("UNSET") {
            "UNSET" => None,
            "STRICT" => Some(MtlsMode::Strict),
            "PERMISSIVE" => Some(MtlsMode::Permissive),
            "DISABLE" => Some(MtlsMode::Disable),
            other => {
                errors.push(pa.info.error(
                    at,
                    format!(
                        "unknown mode `{other}`; expected UNSET, STRICT, PERMISSIVE or DISABLE"
                    ),
                ));
                None
            }
        }
    };
    let level = |pa: &Doc<PeerAuthenticationSpec>| -> Option<u8> {
        if !selects(&pa.info, pa.spec.selector.as_ref(), w) {
            return None;
        }
        Some(
            match (&pa.spec.selector, pa.info.namespace == ROOT_NAMESPACE) {
                (None, true) => 0,
                (None, false) => 1,
                (Some(_), _) => 2,
            },
        )
    };
    let mut policy = InboundPolicy {
        mode: MtlsMode::Permissive,
        ports: BTreeMap::new(),
        tls: None,
        endpoints: BTreeMap::new(),
    };
    // Least specific first; within a level, the first resource wins (so it goes last).
    let mut applied: Vec<(u8, &Doc<PeerAuthenticationSpec>)> = res
        .peer_authentications
        .iter()
        .rev()
        .filter_map(|pa| level(pa).map(|l| (l, pa)))
        .collect();
    applied.sort_by_key(|(l, _)| *l);
    let mut strict_at: Option<(&Doc<PeerAuthenticationSpec>, String)> = None;
    for (l, pa) in &applied {
        if let Some(m) = pa.spec.mtls.as_ref() {
            if let Some(mode) = parse(pa, m, "spec.mtls.mode", errors) {
                policy.mode = mode;
                if mode == MtlsMode::Strict {
                    strict_at = Some((pa, "spec.mtls.mode".into()));
                }
            }
        }
        for (port, m) in &pa.spec.port_level_mtls {
            let at = format!("spec.portLevelMtls.{port}.mode");
            if *l < 2 {
                errors.push(pa.info.error(
                    &format!("spec.portLevelMtls.{port}"),
                    "portLevelMtls needs a selector (as in Istio)",
                ));
                continue;
            }
            let Ok(p) = port.parse::<u16>() else {
                errors.push(
                    pa.info
                        .error(&format!("spec.portLevelMtls.{port}"), "not a port number"),
                );
                continue;
            };
            if let Some(mode) = parse(pa, m, &at, errors) {
                policy.ports.insert(p, mode);
                if mode == MtlsMode::Strict {
                    strict_at = Some((pa, at));
                }
            }
        }
    }
    // The workload's identity, as an ISTIO_MUTUAL server.
    let settings = ServerTlsSettings {
        mode: Some("ISTIO_MUTUAL".into()),
        ..Default::default()
    };
    let info = res.bootstrap.as_ref().map(|b| &b.info);
    let built = info.map(|info| {
        tls.server(&settings, info, "spec.identity")
            .map_err(|e| e.message)
            .and_then(|s| {
                let s = s.ok_or_else(|| "no identity".to_string())?;
                lateen_core::tls::server::server_config(&s).map_err(|e| e.to_string())
            })
    });
    let problem = match built {
        Some(Ok(cfg)) => {
            policy.tls = Some(cfg);
            None
        }
        Some(Err(e)) => Some(e),
        None => Some("no Bootstrap".to_string()),
    };
    match (problem, strict_at) {
        (None, _) => {}
        (Some(e), Some((pa, at))) => errors.push(pa.info.error(
            &at,
            format!("STRICT needs the workload's identity (Bootstrap identity): {e}"),
        )),
        (Some(e), None) => warnings.push(format!(
            "sidecar inbound: no workload identity ({e}); only plain text is taken"
        )),
    }
    policy
}

/// Whether a ServiceEntry port speaks HTTP (served by the HTTP chain) rather than bytes.
fn http_protocol(p: &ServicePort) -> bool {
    matches!(
        p.protocol
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref(),
        Some("HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB")
    )
}

/// A sidecar's outbound side: one HTTP listener (unbound) per HTTP service port, routing
/// by Host with the VirtualServices bound to `mesh` (and straight to the service
/// otherwise), and the capture listener on 15001 that hands redirected connections to
/// them, to a TCP forward, or through to where they were going.
fn sidecar_listeners(
    res: &Resources,
    sc: Option<&Doc<SidecarSpec>>,
    clusters: &HashMap<String, Arc<Cluster>>,
    chain: &ChainParts<'_>,
    fault_filter: &mut Option<Arc<PluginSpec>>,
    errors: &mut Vec<ConfigError>,
) -> Vec<ListenerSpec> {
    use crate::sidecar::{OutboundMap, Service, Target};
    let mesh_vs: Vec<&Doc<VirtualServiceSpec>> = res
        .virtual_services
        .iter()
        .filter(|vs| vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh"))
        .collect();
    let mut map = OutboundMap {
        registry_only: sc
            .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode.as_deref())
            == Some("REGISTRY_ONLY"),
        ..OutboundMap::default()
    };
    // HTTP port → (host, the plain IPs it is reached by).
    let mut http: BTreeMap<u16, Vec<(String, Vec<String>)>> = BTreeMap::new();
    for se in &res.service_entries {
        let mut addresses = se.spec.addresses.clone();
        addresses.extend(
            se.spec
                .endpoints
                .iter()
                .filter(|e| e.address.parse::<IpAddr>().is_ok())
                .map(|e| e.address.clone()),
        );
        for host in &se.spec.hosts {
            for port in &se.spec.ports {
                let Ok(number) = u16::try_from(port.number) else {
                    continue;
                };
                let cluster = lateen_sdk::route::outbound_cluster(port.number, "", host);
                if !clusters.contains_key(&cluster)
                    || sc.is_some_and(|sc| !egress_allows(sc, &se.info.namespace, host, number))
                {
                    continue;
                }
                let target = if http_protocol(port) {
                    let ips = addresses
                        .iter()
                        .filter(|a| a.parse::<IpAddr>().is_ok())
                        .cloned()
                        .collect();
                    http.entry(number).or_default().push((host.clone(), ips));
                    Target::Http(format!("0.0.0.0_{number}").into())
                } else {
                    Target::Tcp(cluster)
                };
                map.services.push(Service {
                    host: host.clone(),
                    port: number,
                    addresses: addresses.clone(),
                    target,
                });
            }
        }
    }
    let mut listeners = Vec::new();
    for (port, hosts) in http {
        let domains = |host: &str, ips: &[String]| {
            let mut d = vec![host.to_string(), format!("{host}:{port}")];
            for ip in ips {
                d.push(ip.clone());
                d.push(format!("{ip}:{port}"));
            }
            d
        };
        let mut vhosts = Vec::new();
        let mut used: Vec<&Doc<VirtualServiceSpec>> = Vec::new();
        for (host, ips) in &hosts {
            let vs = mesh_vs
                .iter()
                .find(|vs| vs.spec.hosts.iter().any(|h| h == host));
            match vs {
                Some(vs) => {
                    let mut warnings = Vec::new();
                    if let Some(mut vh) = virtual_host(vs, res, clusters, errors, &mut warnings) {
                        vh.domains = domains(host, ips);
                        vhosts.push(vh);
                        used.push(vs);
                    }
                }
                None => vhosts.push(VirtualHostConfig {
                    name: format!("{host}:{port}"),
                    domains: domains(host, ips),
                    routes: vec![RouteConfig {
                        name: "default".into(),
                        id: format!("{host}:{port}#default"),
                        route: vec![WeightedCluster {
                            cluster: lateen_sdk::route::outbound_cluster(u32::from(port), "", host),
                            weight: 100,
                            headers: None,
                        }],
                        ..Default::default()
                    }],
                }),
            }
        }
        let faults = route_faults(used.into_iter(), errors);
        let filters = chain.assemble(
            ListenerAt {
                class: crate::snapshot::ListenerClass::SidecarOutbound,
                port,
                gateways: &BTreeSet::new(),
            },
            vhosts,
            &faults,
            fault_filter,
            errors,
        );
        // Not bound: the capture listener hands it connections.
        listeners.push(ListenerSpec {
            bind: false,
            ..ListenerSpec::http(
                format!("0.0.0.0_{port}"),
                SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port),
                filters,
            )
        });
    }
    listeners.push(ListenerSpec {
        capture: Some(crate::snapshot::Capture::Outbound(Arc::new(map))),
        ..ListenerSpec::http(
            "virtualOutbound".into(),
            SocketAddr::new(IpAddr::from([0, 0, 0, 0]), OUTBOUND_CAPTURE_PORT),
            Vec::new(),
        )
    });
    listeners
}

/// The Sidecar resource of this workload, as Istio picks it: one in the workload's
/// namespace whose `workloadSelector` matches, else that namespace's without a selector,
/// else the root namespace's. Fields Lateen does not act on are refused with their line.
fn sidecar_resource<'a>(
    res: &'a Resources,
    w: &WorkloadInfo,
    errors: &mut Vec<ConfigError>,
) -> Option<&'a Doc<SidecarSpec>> {
    for sc in &res.sidecars {
        let s = &sc.spec;
        let mut refused: Vec<String> = Vec::new();
        let mut refuse = |field: String| refused.push(field);
        if s.inbound_connection_pool.is_some() {
            refuse("spec.inboundConnectionPool".into());
        }
        if s.outbound_traffic_policy
            .as_ref()
            .is_some_and(|p| p.egress_proxy.is_some())
        {
            refuse("spec.outboundTrafficPolicy.egressProxy".into());
        }
        for (i, l) in s.ingress.iter().enumerate() {
            for (set, f) in [
                (l.bind.is_some(), "bind"),
                (l.capture_mode.is_some(), "captureMode"),
                (l.tls.is_some(), "tls"),
                (l.connection_pool.is_some(), "connectionPool"),
            ] {
                if set {
                    refuse(format!("spec.ingress[{i}].{f}"));
                }
            }
        }
        for (i, l) in s.egress.iter().enumerate() {
            for (set, f) in [
                (l.bind.is_some(), "bind"),
                (l.capture_mode.is_some(), "captureMode"),
            ] {
                if set {
                    refuse(format!("spec.egress[{i}].{f}"));
                }
            }
            for (j, h) in l.hosts.iter().enumerate() {
                if !h.contains('/') {
                    errors.push(sc.info.error(
                        &format!("spec.egress[{i}].hosts[{j}]"),
                        format!("`{h}` is not `namespace/host` (`*/*`, `./*`, `ns/host`)"),
                    ));
                }
            }
        }
        for field in refused {
            errors.push(
                sc.info
                    .error(&field, "not supported yet; refused rather than ignored"),
            );
        }
        if let Some(m) = s
            .outbound_traffic_policy
            .as_ref()
            .and_then(|p| p.mode.as_deref())
        {
            if !matches!(m, "ALLOW_ANY" | "REGISTRY_ONLY") {
                errors.push(sc.info.error(
                    "spec.outboundTrafficPolicy.mode",
                    format!("unknown mode `{m}`; expected ALLOW_ANY or REGISTRY_ONLY"),
                ));
            }
        }
    }
    let in_ns = |sc: &&Doc<SidecarSpec>| w.namespaces.contains(&sc.info.namespace);
    res.sidecars
        .iter()
        .find(|sc| {
            in_ns(sc)
                && sc
                    .spec
                    .workload_selector
                    .as_ref()
                    .is_some_and(|s| s.labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
        })
        .or_else(|| {
            res.sidecars
                .iter()
                .find(|sc| in_ns(sc) && sc.spec.workload_selector.is_none())
        })
        .or_else(|| {
            res.sidecars.iter().find(|sc| {
                sc.info.namespace == ROOT_NAMESPACE && sc.spec.workload_selector.is_none()
            })
        })
}

/// Whether a Sidecar's `egress` lets the workload reach `host` (of a ServiceEntry in
/// `ns`) on `port`: `namespace/host` with `*`, `.` (the Sidecar's namespace) or a name,
/// and `*`, `*.suffix` or an exact host.
fn egress_allows(sc: &Doc<SidecarSpec>, ns: &str, host: &str, port: u16) -> bool {
    sc.spec.egress.is_empty()
        || sc.spec.egress.iter().any(|l| {
            l.port.as_ref().is_none_or(|p| p.number == u32::from(port))
                && l.hosts.iter().any(|h| {
                    let Some((hns, hhost)) = h.split_once('/') else {
                        return false;
                    };
                    let ns_ok = match hns {
                        "*" => true,
                        "." => ns == sc.info.namespace,
                        "~" => false,
                        other => other == ns,
                    };
                    ns_ok
                        && (hhost == "*"
                            || hhost == host
                            || hhost
                                .strip_prefix('*')
                                .is_some_and(|suffix| host.ends_with(suffix)))
                })
        })
}

/// Sidecar `ingress` ports and where they go.
fn ingress_endpoints(
    sc: &Doc<SidecarSpec>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<u16, crate::sidecar::AppEndpoint> {
    use crate::sidecar::AppEndpoint;
    let mut out = BTreeMap::new();
    for (i, l) in sc.spec.ingress.iter().enumerate() {
        let Ok(port) = u16::try_from(l.port.number) else {
            errors.push(sc.info.error(
                &format!("spec.ingress[{i}].port.number"),
                "port must be 1-65535",
            ));
            continue;
        };
        let target = l.port.target_port.and_then(|p| u16::try_from(p).ok());
        let endpoint = match l.default_endpoint.as_deref() {
            None => AppEndpoint::Dialled(target.unwrap_or(port)),
            Some(e) => match e.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
                Some(("127.0.0.1", Ok(p))) => AppEndpoint::Loopback(p),
                Some(("0.0.0.0", Ok(p))) => AppEndpoint::Dialled(p),
                _ => {
                    errors.push(sc.info.error(
                        &format!("spec.ingress[{i}].defaultEndpoint"),
                        format!(
                            "`{e}`: expected 127.0.0.1:PORT or 0.0.0.0:PORT (unix sockets are \
                             not supported)"
                        ),
                    ));
                    continue;
                }
            },
        };
        out.insert(port, endpoint);
    }
    out
}

/// A WasmPlugin as loaded for this snapshot.
struct Loaded {
    spec: Arc<PluginSpec>,
    /// `pluginConfig`, the default configuration.
    config: Bytes,
    info: Arc<DocInfo>,
    /// `targetRefs` Gateways; empty: every listener.
    gateways: Vec<String>,
    /// `matchRules`, and whether the default is off (`defaultConfigDisable`).
    rules: Option<(scope::Rules, bool)>,
}

impl Loaded {
    fn needs_route(&self) -> bool {
        self.rules.as_ref().is_some_and(|(r, _)| {
            r.iter()
                .any(|r| !r.routes.is_empty() || !r.services.is_empty())
        })
    }

    /// Its filter on a listener whose route table is `routes`.
    fn filter(&self, routes: &Option<Arc<RouteTable>>) -> FilterSpec {
        FilterSpec {
            plugin: self.spec.clone(),
            configuration: self.config.clone(),
            scope: self.rules.as_ref().map(|(rules, off)| {
                Arc::new(crate::scope::Scope {
                    rules: rules.clone(),
                    default: (!off).then(|| self.config.clone()),
                    routes: routes.clone(),
                })
            }),
        }
    }
}

/// A listener as WasmPlugin `match` and `targetRefs` see it.
struct ListenerAt<'a> {
    class: crate::snapshot::ListenerClass,
    port: u16,
    /// The Gateways (`namespace/name`) whose servers it serves.
    gateways: &'a BTreeSet<String>,
}

impl ListenerAt<'_> {
    fn takes(&self, l: &Loaded) -> bool {
        l.spec.applies_to(self.class, self.port)
            && (l.gateways.is_empty() || l.gateways.iter().any(|g| self.gateways.contains(g)))
    }
}

/// The rules of a scoped plugin: each rule's configuration is checked on its own, and a
/// refused one keeps its configuration from `previous` (rule isolation).
#[allow(clippy::too_many_arguments)]
fn scoped_rules(
    res: &Resources,
    wp: &Doc<WasmPluginSpec>,
    spec: &Arc<PluginSpec>,
    sc: &scope::ScopeConfig,
    clusters: &HashMap<String, Arc<crate::cluster::Cluster>>,
    previous: Option<&Snapshot>,
    rt: &Runtime,
    resolver: &Arc<dyn lateen_wasm::ClusterResolver>,
    warnings: &mut Vec<String>,
    rule_errors: &mut Vec<ConfigError>,
) -> scope::Rules {
    let hosts: BTreeSet<String> = res
        .virtual_services
        .iter()
        .flat_map(|v| v.spec.hosts.iter().cloned())
        .collect();
    let services: BTreeSet<&str> = clusters
        .keys()
        .map(|c| crate::scope::cluster_host(c))
        .collect();
    let before: Option<&crate::scope::Scope> = previous.and_then(|p| {
        p.listeners
            .iter()
            .flat_map(|l| &l.filters)
            .find(|f| f.plugin.name == spec.name && f.scope.is_some())
            .and_then(|f| f.scope.as_deref())
    });
    let mut out = Vec::new();
    for rc in &sc.rules {
        let ids = scope::route_ids(&wp.info, rc, &res.virtual_services, warnings);
        scope::check_selectors(&wp.info, rc, &hosts, &services, warnings);
        let violation = match (&spec.schema, &rc.config) {
            (Some(schema), Some(cfg)) => {
                let value: serde_json::Value = serde_json::from_slice(cfg).unwrap_or_default();
                schema.check(Some(&value)).into_iter().next()
            }
            _ => None,
        };
        let refused = |err: ConfigError, rule_errors: &mut Vec<ConfigError>| {
            let last = before.and_then(|b| b.rules.iter().find(|r| r.key == rc.key()));
            let action = scope::isolate(&err.message, last);
            let shown = err.to_string();
            rule_errors.push(err);
            (action, Some(shown))
        };
        let (action, error) = match (&rc.config, violation) {
            (None, _) => (crate::scope::RuleAction::Disable, None),
            (Some(_), Some(v)) => refused(
                wp.info.error(
                    &format!("{}.config{}", rc.field(), v.field),
                    format!("violates the plugin's config schema: {}", v.message),
                ),
                rule_errors,
            ),
            (Some(cfg), None) => match probe(rt, spec, cfg, resolver.clone()) {
                Ok(()) => (crate::scope::RuleAction::Config(cfg.clone()), None),
                Err(e) => refused(
                    wp.info
                        .error(&format!("{}.config", rc.field()), e.to_string()),
                    rule_errors,
                ),
            },
        };
        out.push(scope::rule(rc, ids, action, error));
    }
    Arc::new(out)
}

/// The filters every HTTP listener's chain is made of, in Istio's order.
struct ChainParts<'a> {
    rt: &'a Runtime,
    opts: &'a BuildOptions,
    plugins: &'a [Loaded],
    jwt: &'a Option<FilterSpec>,
    authz: &'a Option<FilterSpec>,
    router: &'a Option<Arc<PluginSpec>>,
    ratelimit: Option<(&'a Arc<PluginSpec>, &'a RateLimitConfig)>,
    metrics: &'a Option<FilterSpec>,
}

impl ChainParts<'_> {
    /// A listener's chain: WasmPlugins by phase, JWT and authorization where Istio puts
    /// jwt_authn and RBAC, the router with `vhosts`, rate limits, faults (loading the
    /// fault filter on first use) and metrics.
    fn assemble(
        &self,
        listener: ListenerAt<'_>,
        vhosts: Vec<VirtualHostConfig>,
        faults: &FaultConfig,
        fault_filter: &mut Option<Arc<PluginSpec>>,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<FilterSpec> {
        let (rt, opts) = (self.rt, self.opts);
        let router_cfg = RouterConfig {
            virtual_hosts: vhosts,
        };
        // Scoped plugins before the router look a request's route up in this table.
        let routes = self
            .plugins
            .iter()
            .any(|l| l.needs_route() && listener.takes(l))
            .then(|| RouteTable::compile(&router_cfg).ok().map(Arc::new))
            .flatten();
        let mut filters: Vec<FilterSpec> = self
            .plugins
            .iter()
            .filter(|l| l.spec.placement.is_none() && listener.takes(l))
            .map(|l| l.filter(&routes))
            .collect();
        // Istio's order: AUTHN plugins, jwt_authn, AUTHZ plugins, RBAC, then the rest.
        if let Some(j) = self.jwt {
            let at = filters
                .iter()
                .position(|f| f.plugin.phase > Phase::Authn)
                .unwrap_or(filters.len());
            filters.insert(at, j.clone());
        }
        if let Some(a) = self.authz {
            let at = filters
                .iter()
                .position(|f| f.plugin.phase > Phase::Authz)
                .unwrap_or(filters.len());
            filters.insert(at, a.clone());
        }
        if let Some(router) = self.router {
            match serde_json::to_vec(&router_cfg) {
                Ok(json) => filters.push(FilterSpec {
                    plugin: router.clone(),
                    configuration: Bytes::from(json),
                    scope: None,
                }),
                Err(e) => errors.push(ConfigError {
                    file: PathBuf::new(),
                    doc: 0,
                    line: 0,
                    resource: None,
                    field: String::new(),
                    message: format!("cannot encode router configuration: {e}"),
                }),
            }
        }
        if let Some((f, json)) = self
            .ratelimit
            .and_then(|(f, rl)| Some((f, serde_json::to_vec(rl).ok()?)))
        {
            filters.push(FilterSpec {
                plugin: f.clone(),
                configuration: Bytes::from(json),
                scope: None,
            });
        }
        if !faults.routes.is_empty() {
            if fault_filter.is_none() {
                match load_builtin(rt, &opts.builtin_filters, "fault", Phase::PostRoute) {
                    Ok(f) => *fault_filter = Some(f),
                    Err(e) => errors.push(e),
                }
            }
            if let (Some(f), Ok(json)) = (&*fault_filter, serde_json::to_vec(faults)) {
                filters.push(FilterSpec {
                    plugin: f.clone(),
                    configuration: Bytes::from(json),
                    scope: None,
                });
            }
        }
        if let Some(m) = self.metrics {
            filters.push(m.clone());
        }
        self.place(&mut filters, &listener, &routes);
        filters
    }

    /// Inserts the plugins with a `lateen.io/placement` next to their built-in filter, in
    /// phase and priority order among themselves. A built-in that is not in this chain (no
    /// faults configured, metrics off) still has its place: before the next built-in that
    /// is there, or at the end.
    fn place(
        &self,
        filters: &mut Vec<FilterSpec>,
        listener: &ListenerAt<'_>,
        routes: &Option<Arc<RouteTable>>,
    ) {
        let index_of = |filters: &[FilterSpec], b: crate::snapshot::Builtin| {
            filters
                .iter()
                .position(|f| f.plugin.name == b.plugin_name())
        };
        let mut after_count: HashMap<crate::snapshot::Builtin, usize> = HashMap::new();
        for l in self.plugins {
            let Some(place) = l.spec.placement else {
                continue;
            };
            if !listener.takes(l) {
                continue;
            }
            let spec = l.filter(routes);
            let at = match index_of(filters, place.anchor) {
                Some(i) if place.before => i,
                Some(i) => {
                    let n = after_count.entry(place.anchor).or_default();
                    *n += 1;
                    i + *n
                }
                None => crate::snapshot::Builtin::ALL
                    .into_iter()
                    .filter(|b| *b > place.anchor)
                    .find_map(|b| index_of(filters, b))
                    .unwrap_or(filters.len()),
            };
            filters.insert(at.min(filters.len()), spec);
        }
    }
}

/// The `fault` settings of the http routes of `vss`, by route id.
fn route_faults<'a>(
    vss: impl Iterator<Item = &'a Doc<VirtualServiceSpec>>,
    errors: &mut Vec<ConfigError>,
) -> FaultConfig {
    let mut faults = FaultConfig::default();
    for vs in vss {
        for (i, http) in vs.spec.http.iter().enumerate() {
            let Some(f) = &http.fault else { continue };
            match route_fault(f) {
                Ok(rf) => {
                    faults.routes.insert(format!("{}#{i}", vs.info.key()), rf);
                }
                Err((field, msg)) => {
                    errors.push(vs.info.error(&format!("spec.http[{i}].fault.{field}"), msg))
                }
            }
        }
    }
    faults
}

/// The TLS side of a listener from its Gateway servers: all plain HTTP (with
/// `httpsRedirect` hosts), or all TLS (HTTPS terminated, or TLS passed through). A port
/// that mixes them is an error, as in Istio.
fn listener_tls(
    servers: &[(&Doc<GatewaySpec>, usize)],
    ctx: &TlsContext,
    errors: &mut Vec<ConfigError>,
) -> (Option<Arc<ListenerTls>>, Vec<String>) {
    let mut tls = ListenerTls::default();
    let mut redirect = Vec::new();
    let mut plain: Option<String> = None;
    // Where the port's first TLS server is, to point at when a port mixes TLS and plain.
    let mut first_tls: Option<(&Doc<GatewaySpec>, usize)> = None;
    let hosts_of = |server: &Server| -> Vec<String> {
        // `ns/host` scopes a host to a namespace's VirtualServices; SNI sees the host.
        let h: Vec<String> = server
            .hosts
            .iter()
            .map(|h| h.rsplit('/').next().unwrap_or(h).to_string())
            .collect();
        if h.is_empty() {
            vec!["*".into()]
        } else {
            h
        }
    };
    for (gw, i) in servers {
        let server = &gw.spec.servers[*i];
        let field = format!("spec.servers[{i}]");
        let proto = server.port.protocol.to_ascii_uppercase();
        let terminating = matches!(proto.as_str(), "HTTPS" | "TLS");
        let Some(t) = server.tls.as_ref().filter(|_| terminating) else {
            if terminating {
                errors.push(gw.info.error(
                    &format!("{field}.tls"),
                    format!("a {proto} server needs tls settings (mode and certificates)"),
                ));
                continue;
            }
            if let Some(t) = &server.tls {
                if t.mode.is_some() && !t.https_redirect {
                    errors.push(gw.info.error(
                        &format!("{field}.tls.mode"),
                        format!("TLS on a {proto} port; set port.protocol HTTPS to terminate TLS"),
                    ));
                }
                if t.https_redirect {
                    redirect.extend(hosts_of(server));
                }
            }
            plain = Some(gw.info.key());
            continue;
        };
        let settings = match ctx.server(t, &gw.info, &format!("{field}.tls")) {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if proto == "TLS" && settings.mode != ServerMode::Passthrough {
            errors.push(gw.info.error(
                &format!("{field}.tls.mode"),
                "a TLS port that terminates TLS forwards TCP, which needs VirtualService tcp \
                 routes (not supported yet); use PASSTHROUGH, or protocol HTTPS",
            ));
            continue;
        }
        let config = if settings.mode == ServerMode::Passthrough {
            None
        } else {
            match lateen_core::tls::server::server_config(&settings) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(gw.info.error(&format!("{field}.tls"), e.to_string()));
                    continue;
                }
            }
        };
        first_tls.get_or_insert((*gw, *i));
        tls.servers.push(TlsServer {
            hosts: hosts_of(server),
            mode: settings.mode,
            config,
        });
    }
    if let (Some(plain), Some((gw, i))) = (&plain, first_tls) {
        errors.push(gw.info.error(
            &format!("spec.servers[{i}].port.number"),
            format!(
                "port {} serves TLS here and plain HTTP in Gateway {plain}; one port speaks \
                 one of them",
                gw.spec.servers[i].port.number
            ),
        ));
    }
    let tls = (!tls.servers.is_empty()).then(|| Arc::new(tls));
    (tls, redirect)
}

/// The VirtualService `tls` routes of a listener's Gateways, in order.
fn sni_routes(
    addr: SocketAddr,
    gws: &BTreeSet<String>,
    res: &Resources,
    errors: &mut Vec<ConfigError>,
) -> Vec<SniRoute> {
    let mut routes = Vec::new();
    for vs in &res.virtual_services {
        if !gateway_refs(vs).iter().any(|r| gws.contains(r)) {
            continue;
        }
        for (i, t) in vs.spec.tls.iter().enumerate() {
            let field = format!("spec.tls[{i}]");
            let mut hosts = Vec::new();
            for (m, mr) in t.matches.iter().enumerate() {
                if mr.port.is_some_and(|p| p != u32::from(addr.port())) {
                    continue;
                }
                let on_gw = mr.gateways.is_empty()
                    || mr
                        .gateways
                        .iter()
                        .any(|g| gws.contains(&qualify(g, &vs.info.namespace)));
                if !on_gw {
                    continue;
                }
                if mr.sni_hosts.is_empty() {
                    errors.push(vs.info.error(
                        &format!("{field}.match[{m}].sniHosts"),
                        "at least one SNI host is required",
                    ));
                }
                hosts.extend(mr.sni_hosts.iter().cloned());
            }
            if hosts.is_empty() {
                continue;
            }
            let Some(destinations) = weighted_destinations(&t.route, vs, &field, res, errors)
            else {
                continue;
            };
            routes.push(SniRoute {
                name: format!("{}#{i}", vs.info.key()),
                sni_hosts: hosts,
                destinations,
            });
        }
    }
    routes
}

/// The clusters and relative weights of a `tcp` or `tls` route; `None` (reported) when it
/// has none.
fn weighted_destinations(
    route: &[RouteDestination],
    vs: &Doc<VirtualServiceSpec>,
    field: &str,
    res: &Resources,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<(String, u32)>> {
    let mut destinations = Vec::new();
    for (r, rd) in route.iter().enumerate() {
        match destination_cluster(&rd.destination, &vs.info.namespace, res) {
            Ok(c) => {
                let w = rd.weight.unwrap_or(if route.len() == 1 { 100 } else { 0 });
                destinations.push((c, w.clamp(0, i64::from(u32::MAX)) as u32));
            }
            Err((f, msg)) => errors.push(
                vs.info
                    .error(&format!("{field}.route[{r}].destination.{f}"), msg),
            ),
        }
    }
    if destinations.is_empty() {
        errors.push(vs.info.error(
            &format!("{field}.route"),
            "at least one destination is required",
        ));
        return None;
    }
    Some(destinations)
}

/// Whether a port's Gateway servers forward TCP. A port serves one protocol family: TCP
/// beside HTTP or TLS servers is an error.
fn tcp_port(servers: &[(&Doc<GatewaySpec>, usize)], errors: &mut Vec<ConfigError>) -> bool {
    let is_tcp = |(gw, i): &(&Doc<GatewaySpec>, usize)| {
        gw.spec.servers[*i]
            .port
            .protocol
            .eq_ignore_ascii_case("TCP")
    };
    let tcp = servers.iter().filter(|s| is_tcp(s)).count();
    if tcp > 0 && tcp < servers.len() {
        if let Some((gw, i)) = servers.iter().find(|s| is_tcp(s)) {
            errors.push(gw.info.error(
                &format!("spec.servers[{i}].port.protocol"),
                format!(
                    "port {} forwards TCP here and serves HTTP or TLS in another server; one \
                     port speaks one protocol",
                    gw.spec.servers[*i].port.number
                ),
            ));
        }
    }
    tcp == servers.len() && tcp > 0
}

/// The VirtualService `tcp` routes of a TCP listener's Gateways, in order. A route applies
/// when one of its matches fits this port, gateway and workload (`sourceLabels`,
/// `sourceNamespace`); no matches: always. `destinationSubnets` are checked per connection.
fn tcp_routes(
    addr: SocketAddr,
    gws: &BTreeSet<String>,
    res: &Resources,
    w: &WorkloadInfo,
    errors: &mut Vec<ConfigError>,
) -> Vec<crate::tcp::TcpRoute> {
    let mut routes = Vec::new();
    for vs in &res.virtual_services {
        if !gateway_refs(vs).iter().any(|r| gws.contains(r)) {
            continue;
        }
        for (i, t) in vs.spec.tcp.iter().enumerate() {
            let field = format!("spec.tcp[{i}]");
            let mut subnets = Vec::new();
            let mut applies = t.matches.is_empty();
            let mut any_address = false;
            for (m, mr) in t.matches.iter().enumerate() {
                for sn in mr
                    .destination_subnets
                    .iter()
                    .filter(|sn| !lateen_authz::config::valid_cidr(sn))
                {
                    errors.push(vs.info.error(
                        &format!("{field}.match[{m}].destinationSubnets"),
                        format!("`{sn}` is not an IP address or CIDR range"),
                    ));
                }
                let fits = mr.port.is_none_or(|p| p == u32::from(addr.port()))
                    && (mr.gateways.is_empty()
                        || mr
                            .gateways
                            .iter()
                            .any(|g| gws.contains(&qualify(g, &vs.info.namespace))))
                    && mr
                        .source_labels
                        .iter()
                        .all(|(k, v)| w.labels.get(k) == Some(v))
                    && mr
                        .source_namespace
                        .as_ref()
                        .is_none_or(|ns| w.namespaces.contains(ns));
                if !fits {
                    continue;
                }
                applies = true;
                if mr.destination_subnets.is_empty() {
                    any_address = true;
                }
                subnets.extend(mr.destination_subnets.iter().cloned());
            }
            if !applies {
                continue;
            }
            // One fitting match without subnets takes every address.
            if any_address {
                subnets.clear();
            }
            let Some(destinations) = weighted_destinations(&t.route, vs, &field, res, errors)
            else {
                continue;
            };
            routes.push(crate::tcp::TcpRoute {
                name: format!("{}#{i}", vs.info.key()),
                destination_subnets: subnets,
                destinations,
            });
        }
    }
    routes
}

/// The AuthorizationPolicies that apply to this workload, as the built-in authz filter's
/// configuration; `None` when there are none. Checked here, so that a policy Lateen cannot
/// enforce is refused with its line rather than half-enforced.
fn authz_filter(
    res: &Resources,
    w: &WorkloadInfo,
    rt: &Runtime,
    opts: &BuildOptions,
    errors: &mut Vec<ConfigError>,
) -> Option<FilterSpec> {
    use lateen_authz::config::{self as authz, Action, AuthzConfig, Policy};
    let mut cfg = AuthzConfig::default();
    for ap in &res.authorization_policies {
        let before = errors.len();
        let action = match ap.spec.action.as_deref().unwrap_or("ALLOW") {
            "ALLOW" => Action::Allow,
            "DENY" => Action::Deny,
            "AUDIT" => Action::Audit,
            "CUSTOM" => {
                errors.push(ap.info.error(
                    "spec.action",
                    "CUSTOM (an external authorizer) is not supported yet; refused rather than \
                     skipped",
                ));
                continue;
            }
            other => {
                errors.push(ap.info.error(
                    "spec.action",
                    format!("unknown action `{other}`; expected ALLOW, DENY or AUDIT"),
                ));
                continue;
            }
        };
        if ap.spec.target_ref.is_some() || !ap.spec.target_refs.is_empty() {
            errors.push(ap.info.error(
                "spec.targetRefs",
                "targetRefs are not supported yet; use selector",
            ));
        }
        for (i, rule) in ap.spec.rules.iter().flatten().enumerate() {
            for (f, from) in rule.from.iter().enumerate() {
                let at = format!("spec.rules[{i}].from[{f}].source");
                let s = &from.source;
                for (field, blocks) in [
                    ("ipBlocks", &s.ip_blocks),
                    ("notIpBlocks", &s.not_ip_blocks),
                    ("remoteIpBlocks", &s.remote_ip_blocks),
                    ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
                ] {
                    for b in blocks.iter().filter(|b| !authz::valid_cidr(b)) {
                        errors.push(ap.info.error(
                            &format!("{at}.{field}"),
                            format!("`{b}` is not an IP address or CIDR range"),
                        ));
                    }
                }
            }
            for (c, cond) in rule.when.iter().enumerate() {
                if !authz::supported_key(&cond.key) {
                    errors.push(ap.info.error(
                        &format!("spec.rules[{i}].when[{c}].key"),
                        format!(
                            "unsupported key `{}`; expected request.headers[NAME], source.ip, \
                             remote.ip, source.namespace, source.principal, destination.ip, \
                             destination.port, connection.sni, request.auth.principal, \
                             request.auth.audiences, request.auth.presenter or \
                             request.auth.claims[NAME]",
                            cond.key
                        ),
                    ));
                }
                if cond.values.is_empty() && cond.not_values.is_empty() {
                    errors.push(ap.info.error(
                        &format!("spec.rules[{i}].when[{c}]"),
                        "set values or notValues",
                    ));
                }
            }
        }
        if errors.len() > before || !selects(&ap.info, ap.spec.selector.as_ref(), w) {
            continue;
        }
        cfg.policies.push(Policy {
            name: format!("{}.{}", ap.info.namespace, ap.info.name),
            action,
            rules: ap.spec.rules.clone(),
        });
    }
    if cfg.is_empty() {
        return None;
    }
    let plugin = match load_builtin(rt, &opts.builtin_filters, "authz", Phase::Authz) {
        Ok(p) => p,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    match serde_json::to_vec(&cfg) {
        Ok(json) => Some(FilterSpec {
            plugin,
            configuration: Bytes::from(json),
            scope: None,
        }),
        Err(e) => {
            errors.push(ConfigError {
                file: PathBuf::new(),
                doc: 0,
                line: 0,
                resource: None,
                field: String::new(),
                message: format!("cannot encode the authorization policies: {e}"),
            });
            None
        }
    }
}

/// Envoy's default for how long a fetched JWKS is used (`remote_jwks.cache_duration`).
const JWKS_CACHE_MS: u64 = 600_000;

/// The JWT filter for the RequestAuthentication rules that select this workload. Key sets
/// given inline or as `file://` are read and checked here; `http(s)://` ones are fetched
/// by the filter through the ServiceEntry cluster of their host.
fn jwt_filter(
    res: &Resources,
    w: &WorkloadInfo,
    clusters: &HashMap<String, Arc<Cluster>>,
    files: &TlsContext,
    rt: &Runtime,
    opts: &BuildOptions,
    errors: &mut Vec<ConfigError>,
) -> Option<FilterSpec> {
    use lateen_jwt::config::{self as jwt, JwtConfig};
    let mut cfg = JwtConfig::default();
    for ra in &res.request_authentications {
        if ra.spec.target_ref.is_some() || !ra.spec.target_refs.is_empty() {
            errors.push(ra.info.error(
                "spec.targetRefs",
                "targetRefs are not supported yet; use selector",
            ));
            continue;
        }
        let selected = selects(&ra.info, ra.spec.selector.as_ref(), w);
        for (i, rule) in ra.spec.jwt_rules.iter().enumerate() {
            let at = |f: &str| format!("spec.jwtRules[{i}].{f}");
            let before = errors.len();
            if rule.issuer.is_empty() {
                errors.push(ra.info.error(&at("issuer"), "issuer is required"));
            }
            for (h, loc) in rule.from_headers.iter().enumerate() {
                if http::HeaderName::from_bytes(loc.name.as_bytes()).is_err() {
                    errors.push(ra.info.error(
                        &at(&format!("fromHeaders[{h}].name")),
                        format!("`{}` is not a header name", loc.name),
                    ));
                }
            }
            let timeout_ms = match &rule.timeout {
                None => 5_000,
                Some(t) => match parse_duration_ms(t) {
                    Some(ms) if ms > 0 => ms,
                    _ => {
                        errors.push(ra.info.error(
                            &at("timeout"),
                            format!("`{t}` is not a positive duration (e.g. 5s)"),
                        ));
                        0
                    }
                },
            };
            let mut provider = jwt::Provider {
                name: format!("{}/{}#{i}", ra.info.namespace, ra.info.name),
                issuer: rule.issuer.clone(),
                audiences: rule.audiences.clone(),
                from_headers: rule
                    .from_headers
                    .iter()
                    .map(|h| jwt::HeaderLocation {
                        name: h.name.to_ascii_lowercase(),
                        prefix: h.prefix.clone(),
                    })
                    .collect(),
                from_params: rule.from_params.clone(),
                from_cookies: rule.from_cookies.clone(),
                forward_original_token: rule.forward_original_token,
                output_payload_to_header: rule.output_payload_to_header.clone(),
                output_claim_to_headers: rule
                    .output_claim_to_headers
                    .iter()
                    .map(|c| jwt::ClaimToHeader {
                        header: c.header.to_ascii_lowercase(),
                        claim: c.claim.clone(),
                    })
                    .collect(),
                ..Default::default()
            };
            match (&rule.jwks, &rule.jwks_uri) {
                (Some(_), Some(_)) => errors.push(
                    ra.info
                        .error(&at("jwks"), "set one of jwks and jwksUri, not both"),
                ),
                (None, None) => errors.push(ra.info.error(
                    &at("jwksUri"),
                    "set jwks or jwksUri (OpenID discovery from the issuer is not supported)",
                )),
                (Some(text), None) => {
                    if let Err(e) = lateen_jwt::jwks::Jwks::parse(text.as_bytes()) {
                        errors.push(ra.info.error(&at("jwks"), e.to_string()));
                    }
                    provider.jwks = Some(text.clone());
                }
                (None, Some(uri)) => match jwks_source(uri, &ra.info, clusters, files) {
                    Ok(JwksSource::Inline(text)) => provider.jwks = Some(text),
                    Ok(JwksSource::Remote(cluster, authority, path)) => {
                        provider.remote = Some(jwt::Remote {
                            cluster,
                            authority,
                            path,
                            timeout_ms,
                            cache_ms: JWKS_CACHE_MS,
                        })
                    }
                    Err(msg) => errors.push(ra.info.error(&at("jwksUri"), msg)),
                },
            }
            if selected && errors.len() == before {
                cfg.providers.push(provider);
            }
        }
    }
    if cfg.providers.is_empty() {
        return None;
    }
    let plugin = match load_builtin(rt, &opts.builtin_filters, "jwt", Phase::Authn) {
        Ok(p) => p,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    match serde_json::to_vec(&cfg) {
        Ok(json) => Some(FilterSpec {
            plugin,
            configuration: Bytes::from(json),
            scope: None,
        }),
        Err(e) => {
            errors.push(ConfigError {
                file: PathBuf::new(),
                doc: 0,
                line: 0,
                resource: None,
                field: String::new(),
                message: format!("cannot encode the JWT rules: {e}"),
            });
            None
        }
    }
}

enum JwksSource {
    /// The key set's text (read from a file).
    Inline(String),
    /// Fetch from this cluster: cluster name, `:authority`, `:path`.
    Remote(String, String, String),
}

/// Where a `jwksUri` leads: a file (read and checked now) or a ServiceEntry host.
fn jwks_source(
    uri: &str,
    info: &DocInfo,
    clusters: &HashMap<String, Arc<Cluster>>,
    files: &TlsContext,
) -> Result<JwksSource, String> {
    if let Some(path) = uri.strip_prefix("file://") {
        let path = files.track(info, path);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        lateen_jwt::jwks::Jwks::parse(text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(JwksSource::Inline(text));
    }
    let parsed: http::Uri = uri
        .parse()
        .map_err(|e| format!("`{uri}` is not a URL: {e}"))?;
    let (https, default_port) = match parsed.scheme_str() {
        Some("http") => (false, 80),
        Some("https") => (true, 443),
        _ => {
            return Err(format!(
                "`{uri}`: expected an http://, https:// or file:// URL"
            ))
        }
    };
    let host = parsed.host().unwrap_or_default();
    let port = parsed.port_u16().unwrap_or(default_port);
    let name = lateen_sdk::route::outbound_cluster(u32::from(port), "", host);
    let cluster = clusters.get(&name).ok_or_else(|| {
        format!(
            "no ServiceEntry defines `{host}` port {port}, so the key set cannot be fetched; \
             add one (the proxy reaches only the services it knows)"
        )
    })?;
    if https && cluster.tls.is_none() {
        return Err(format!(
            "`{uri}` is https but cluster {name} has plain TCP; add a DestinationRule with \
             trafficPolicy.tls.mode SIMPLE for `{host}`"
        ));
    }
    let path = parsed
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let authority = match parsed.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    Ok(JwksSource::Remote(name, authority, path))
}

/// The Bootstrap's `pathNormalization` (MeshConfig's): BASE unless it says otherwise.
fn path_normalization(
    res: &Resources,
    errors: &mut Vec<ConfigError>,
) -> lateen_core::path::PathNormalization {
    let Some(boot) = res.bootstrap.as_ref() else {
        return Default::default();
    };
    let Some(name) = boot
        .spec
        .path_normalization
        .as_ref()
        .and_then(|p| p.normalization.as_deref())
    else {
        return Default::default();
    };
    lateen_core::path::PathNormalization::parse(name).unwrap_or_else(|| {
        errors.push(boot.info.error(
            "spec.pathNormalization.normalization",
            format!(
                "unknown `{name}`; expected NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES"
            ),
        ));
        Default::default()
    })
}

/// The Bootstrap's `limits`, checked.
fn limits(res: &Resources, errors: &mut Vec<ConfigError>) -> crate::snapshot::Limits {
    let mut l = crate::snapshot::Limits::default();
    let Some(boot) = res.bootstrap.as_ref() else {
        return l;
    };
    let Some(spec) = boot.spec.limits.as_ref() else {
        return l;
    };
    let field = |f: &str| format!("spec.limits.{f}");
    if let Some(kb) = spec.max_request_headers_kb {
        if !(8..=8192).contains(&kb) {
            errors.push(boot.info.error(
                &field("maxRequestHeadersKb"),
                format!("{kb} is outside 8..8192"),
            ));
        }
        l.max_request_headers_bytes = kb.clamp(8, 8192) as usize * 1024;
    }
    if let Some(n) = spec.max_headers_count {
        if n == 0 {
            errors.push(
                boot.info
                    .error(&field("maxHeadersCount"), "must be at least 1"),
            );
        }
        l.max_headers_count = n.max(1) as usize;
    }
    if let Some(t) = &spec.request_headers_timeout {
        match parse_duration_ms(t) {
            Some(ms) if ms > 0 => l.request_headers_timeout = std::time::Duration::from_millis(ms),
            _ => errors.push(boot.info.error(
                &field("requestHeadersTimeout"),
                format!("`{t}` is not a positive duration (e.g. 10s, 500ms)"),
            )),
        }
    }
    l.max_request_body_bytes = spec.max_request_body_bytes;
    if let Some(t) = &spec.request_timeout {
        match parse_duration_ms(t) {
            Some(ms) if ms > 0 => l.request_timeout = Some(std::time::Duration::from_millis(ms)),
            _ => errors.push(boot.info.error(
                &field("requestTimeout"),
                format!("`{t}` is not a positive duration (e.g. 30s)"),
            )),
        }
    }
    if let Some(n) = spec.max_concurrent_streams {
        if n == 0 {
            errors.push(
                boot.info
                    .error(&field("maxConcurrentStreams"), "must be at least 1"),
            );
        }
        l.max_concurrent_streams = n.max(1);
    }
    l
}

/// The tracer the Bootstrap asks for (`telemetry.tracing`).
fn tracer(
    res: &Resources,
    workload: &WorkloadInfo,
    errors: &mut Vec<ConfigError>,
) -> Option<crate::trace::TracingSpec> {
    let boot = res.bootstrap.as_ref()?;
    let spec = boot.spec.telemetry.as_ref()?.tracing.as_ref()?;
    let field = "spec.telemetry.tracing";
    let sampling = spec.sampling.unwrap_or(1.0);
    if !(0.0..=100.0).contains(&sampling) {
        errors.push(boot.info.error(
            &format!("{field}.sampling"),
            format!("{sampling} is not a percentage (0-100)"),
        ));
        return None;
    }
    let endpoint = &spec.otlp.endpoint;
    match endpoint.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
        _ => {
            errors.push(boot.info.error(
                &format!("{field}.otlp.endpoint"),
                format!("`{endpoint}` is not an http(s) URL"),
            ));
            return None;
        }
    }
    let service = spec.service_name.clone().unwrap_or_else(|| {
        match (&workload.name, workload.namespaces.first()) {
            (Some(n), Some(ns)) => format!("{n}.{ns}"),
            (Some(n), None) => n.clone(),
            _ => "lateen".into(),
        }
    });
    Some(crate::trace::TracingSpec {
        sampling,
        service,
        endpoint: endpoint.clone(),
    })
}

/// The access log the Bootstrap asks for (`telemetry.accessLog`).
fn access_log(res: &Resources, errors: &mut Vec<ConfigError>) -> Option<AccessLogSpec> {
    use crate::access_log::{Encoding, Format, ISTIO_JSON, ISTIO_TEXT};
    let boot = res.bootstrap.as_ref()?;
    let spec = boot.spec.telemetry.as_ref()?.access_log.as_ref()?;
    let field = "spec.telemetry.accessLog";
    let mut bad = |f: &str, m: String| errors.push(boot.info.error(&format!("{field}.{f}"), m));
    let encoding = match spec.encoding.as_deref().unwrap_or("TEXT") {
        "TEXT" => {
            if spec.labels.is_some() {
                bad(
                    "labels",
                    "labels are for JSON encoding; TEXT takes `format`".into(),
                );
                return None;
            }
            match Format::parse(spec.format.as_deref().unwrap_or(ISTIO_TEXT)) {
                Ok(f) => Encoding::Text(f),
                Err(e) => {
                    bad("format", e.to_string());
                    return None;
                }
            }
        }
        "JSON" => {
            if spec.format.is_some() {
                bad(
                    "format",
                    "JSON encoding takes `labels` (key: format)".into(),
                );
                return None;
            }
            let pairs: Vec<(String, String)> = match &spec.labels {
                Some(l) => l.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                None => ISTIO_JSON
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            let mut fields = Vec::new();
            for (k, v) in pairs {
                match Format::parse(&v) {
                    Ok(f) => fields.push((k, f)),
                    Err(e) => {
                        bad(&format!("labels.{k}"), e.to_string());
                        return None;
                    }
                }
            }
            Encoding::Json(fields)
        }
        other => {
            bad("encoding", format!("`{other}` is not TEXT or JSON"));
            return None;
        }
    };
    let path = spec.file.as_deref().unwrap_or("/dev/stdout");
    // Opened by the runtime when it installs the snapshot, not here.
    Some(AccessLogSpec {
        path: path.into(),
        encoding,
    })
}

fn probe(
    rt: &Runtime,
    plugin: &PluginSpec,
    cfg: &Bytes,
    resolver: Arc<dyn lateen_wasm::ClusterResolver>,
) -> Result<(), lateen_wasm::WasmError> {
    let mut vm = Vm::new(rt, &plugin.module, plugin.identity.clone(), resolver)?;
    vm.create_root(cfg.clone()).map(|_| ())
}

/// The built-in metrics filter with its configuration: this workload as the source, and
/// the namespaces of the ServiceEntry hosts. `None` when the Bootstrap turns metrics off.
fn metrics_filter(
    res: &Resources,
    workload: &WorkloadInfo,
    rt: &Runtime,
    opts: &BuildOptions,
    errors: &mut Vec<ConfigError>,
) -> Option<FilterSpec> {
    let boot = res.bootstrap.as_ref().map(|b| &b.spec);
    if boot.and_then(|b| b.telemetry.as_ref()?.metrics) == Some(false) {
        return None;
    }
    let label = |k: &str| workload.labels.get(k).cloned().unwrap_or_default();
    let config = lateen_metrics::config::MetricsConfig {
        reporter: "source".into(),
        source: lateen_metrics::config::Peer {
            workload: workload.name.clone().unwrap_or_default(),
            namespace: workload
                .namespaces
                .iter()
                .next()
                .cloned()
                .unwrap_or_default(),
            app: label("app"),
            version: label("version"),
            principal: String::new(),
        },
        services: res
            .service_entries
            .iter()
            .flat_map(|se| {
                se.spec
                    .hosts
                    .iter()
                    .map(|h| (h.clone(), se.info.namespace.clone()))
            })
            .collect(),
    };
    let plugin = match load_builtin(rt, &opts.builtin_filters, "metrics", Phase::PostRoute) {
        Ok(p) => p,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    let json = serde_json::to_vec(&config).unwrap_or_default();
    Some(FilterSpec {
        plugin,
        configuration: Bytes::from(json),
        scope: None,
    })
}

/// The name (when the Bootstrap declares it), labels and namespaces of this proxy.
struct WorkloadInfo {
    name: Option<String>,
    labels: BTreeMap<String, String>,
    namespaces: BTreeSet<String>,
}

fn workload(res: &Resources) -> WorkloadInfo {
    if let Some(w) = res.bootstrap.as_ref().and_then(|b| b.spec.workload.clone()) {
        return WorkloadInfo {
            name: w.name,
            labels: w.labels,
            namespaces: w.namespace.into_iter().collect(),
        };
    }
    // Gateway mode: we are the workload every Gateway selects.
    let mut labels = BTreeMap::new();
    let mut namespaces = BTreeSet::new();
    for g in &res.gateways {
        labels.extend(g.spec.selector.clone());
        namespaces.insert(g.info.namespace.clone());
    }
    WorkloadInfo {
        name: None,
        labels,
        namespaces,
    }
}

/// Whether a resource with a workload `selector` (WasmPlugin, AuthorizationPolicy) applies
/// to this workload: its labels are among the workload's, and it lives in the root
/// namespace or in one of the workload's.
fn selects(info: &DocInfo, selector: Option<&WorkloadSelector>, w: &WorkloadInfo) -> bool {
    let ns_ok = info.namespace == ROOT_NAMESPACE || w.namespaces.contains(&info.namespace);
    let labels_ok = selector.is_none_or(|s| {
        s.match_labels
            .iter()
            .all(|(k, v)| w.labels.get(k) == Some(v))
    });
    ns_ok && labels_ok
}

/// Annotations that put a new version of a WasmPlugin in progressive rollout. Annotations
/// rather than spec fields, so the resource stays valid for Istio's CRD schema.
pub mod canary_annotations {
    pub const URL: &str = "lateen.io/canary-url";
    pub const SHA256: &str = "lateen.io/canary-sha256";
    pub const PERCENT: &str = "lateen.io/canary-percent";
    pub const MAX_TRAP_PERCENT: &str = "lateen.io/canary-max-trap-percent";
    pub const MAX_5XX_PERCENT: &str = "lateen.io/canary-max-5xx-percent";
    pub const MIN_REQUESTS: &str = "lateen.io/canary-min-requests";
    pub const WINDOW: &str = "lateen.io/canary-window";
}

/// WasmPlugin `match` (Istio's `TrafficSelector`s), and `type: NETWORK` refused rather
/// than ignored.
fn traffic(wp: &Doc<WasmPluginSpec>) -> Result<Vec<crate::snapshot::TrafficSelector>, ConfigError> {
    let s = &wp.spec;
    if let Some(t) = s
        .plugin_type
        .as_deref()
        .filter(|t| *t != "HTTP" && *t != "UNSPECIFIED_PLUGIN_TYPE")
    {
        return Err(wp.info.error(
            "spec.type",
            format!("type `{t}`: Lateen runs HTTP plugins only"),
        ));
    }
    let Some(m) = &s.matches else {
        return Ok(Vec::new());
    };
    let items = m.as_array().ok_or_else(|| {
        wp.info
            .error("spec.match", "expected a list of traffic selectors")
    })?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = |f: &str| format!("spec.match[{i}]{f}");
        if let Some(k) = item
            .as_object()
            .and_then(|o| o.keys().find(|k| *k != "mode" && *k != "ports"))
        {
            return Err(wp.info.error(
                &at(&format!(".{k}")),
                "unknown field; expected mode or ports",
            ));
        }
        let (client, server) = match item.get("mode").and_then(|v| v.as_str()).unwrap_or("UNDEFINED") {
            "UNDEFINED" | "CLIENT_AND_SERVER" => (true, true),
            "CLIENT" => (true, false),
            "SERVER" => (false, true),
            other => {
                return Err(wp.info.error(
                    &at(".mode"),
                    format!("unknown mode `{other}`; expected CLIENT, SERVER, CLIENT_AND_SERVER or UNDEFINED"),
                ))
            }
        };
        let mut ports = Vec::new();
        for (j, p) in item
            .get("ports")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let n = p
                .get("number")
                .and_then(|n| n.as_u64())
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    wp.info.error(
                        &at(&format!(".ports[{j}].number")),
                        "expected a port number",
                    )
                })?;
            ports.push(n);
        }
        out.push(crate::snapshot::TrafficSelector {
            client,
            server,
            ports,
        });
    }
    Ok(out)
}

/// Annotations that recycle a plugin's instances: after N streams, or past a linear-memory
/// ceiling (`64Mi`, `1Gi`, `500Ki` or bytes).
pub const RECYCLE_REQUESTS_ANNOTATION: &str = "lateen.io/recycle-after-requests";
pub const RECYCLE_MEMORY_ANNOTATION: &str = "lateen.io/recycle-memory";

fn recycle(wp: &Doc<WasmPluginSpec>) -> Result<crate::snapshot::Recycle, ConfigError> {
    let ann = &wp.meta.annotations;
    let field = |k: &str| format!("metadata.annotations.{k}");
    let after_requests = match ann.get(RECYCLE_REQUESTS_ANNOTATION) {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    wp.info.error(
                        &field(RECYCLE_REQUESTS_ANNOTATION),
                        format!("`{v}`: expected a positive number of requests"),
                    )
                })?,
        ),
    };
    let memory_bytes = match ann.get(RECYCLE_MEMORY_ANNOTATION) {
        None => None,
        Some(v) => Some(parse_quantity(v).filter(|n| *n > 0).ok_or_else(|| {
            wp.info.error(
                &field(RECYCLE_MEMORY_ANNOTATION),
                format!("`{v}`: expected a size such as 64Mi, 1Gi or a number of bytes"),
            )
        })?),
    };
    Ok(crate::snapshot::Recycle {
        after_requests,
        memory_bytes,
    })
}

// A Kubernetes-style binary quantity: `64Mi`, `1Gi`, `512Ki`, or bytes.
fn parse_quantity(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = match v.len().checked_sub(2).map(|i| v.split_at(i)) {
        Some((n, "Ki")) => (n, 1u64 << 10),
        Some((n, "Mi")) => (n, 1 << 20),
        Some((n, "Gi")) => (n, 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// The annotation that places a plugin next to a built-in filter instead of by phase.
pub const PLACEMENT_ANNOTATION: &str = "lateen.io/placement";

fn placement(wp: &Doc<WasmPluginSpec>) -> Result<Option<crate::snapshot::Placement>, ConfigError> {
    match wp.meta.annotations.get(PLACEMENT_ANNOTATION) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|e: String| {
            wp.info
                .error(&format!("metadata.annotations.{PLACEMENT_ANNOTATION}"), e)
        }),
    }
}

fn canary(
    wp: &Doc<WasmPluginSpec>,
    rt: &Runtime,
    opts: &BuildOptions,
) -> Result<Option<Arc<crate::snapshot::Canary>>, ConfigError> {
    use canary_annotations as a;
    let ann = &wp.meta.annotations;
    let Some(url) = ann.get(a::URL) else {
        return Ok(None);
    };
    let num = |key: &str, default: f64| -> Result<f64, ConfigError> {
        match ann.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| (0.0..=100.0).contains(x) || key == a::MIN_REQUESTS)
                .ok_or_else(|| {
                    wp.info.error(
                        &format!("metadata.annotations.{key}"),
                        format!("`{v}` is not a number in range"),
                    )
                }),
        }
    };
    let spec = WasmPluginSpec {
        url: url.clone(),
        sha256: ann.get(a::SHA256).cloned(),
        ..wp.spec.clone()
    };
    let (mut cspec, _) = load_plugin(
        &wp.info,
        &spec,
        "spec",
        format!("{} (canary)", wp.info.key()),
        rt,
        opts,
    )
    .map_err(|mut e| {
        e.field = format!("metadata.annotations.{}", a::URL);
        e
    })?;
    cspec.identity = Arc::new(PluginIdentity {
        vm_id: format!("{} (canary)", wp.info.key()),
        ..(*cspec.identity).clone()
    });
    let window_ms = match ann.get(a::WINDOW) {
        None => 60_000,
        Some(v) => parse_duration_ms(v).filter(|ms| *ms > 0).ok_or_else(|| {
            wp.info.error(
                &format!("metadata.annotations.{}", a::WINDOW),
                format!("`{v}` is not a positive duration"),
            )
        })?,
    };
    Ok(Some(Arc::new(crate::snapshot::Canary::new(
        Arc::new(cspec),
        num(a::PERCENT, 10.0)?,
        num(a::MAX_TRAP_PERCENT, 1.0)?,
        num(a::MAX_5XX_PERCENT, 5.0)?,
        num(a::MIN_REQUESTS, 20.0)? as u64,
        window_ms,
    ))))
}

/// Loads a plugin module described at `prefix` (`spec` for a WasmPlugin,
/// `spec.servicePlugins[i]` for a service plugin) of a document.
fn load_plugin(
    info: &DocInfo,
    s: &WasmPluginSpec,
    prefix: &str,
    name: String,
    rt: &Runtime,
    opts: &BuildOptions,
) -> Result<(PluginSpec, Bytes), ConfigError> {
    let at = |f: &str| format!("{prefix}.{f}");
    let remote_url = ["http://", "https://", "oci://"]
        .iter()
        .any(|p| s.url.starts_with(p));
    let (bytes, path, local) = if remote_url {
        let remote = opts.remote.as_ref().ok_or_else(|| {
            info.error(
                &at("url"),
                "remote plugin URLs are not enabled in this mode",
            )
        })?;
        let always = match s.image_pull_policy.as_deref() {
            // Istio: an unset policy pulls `latest` OCI tags every time.
            None | Some("UNSPECIFIED_POLICY") => {
                s.url.starts_with("oci://") && (s.url.ends_with(":latest") || !oci_has_tag(&s.url))
            }
            Some("IfNotPresent") => false,
            Some("Always") => true,
            Some(other) => {
                return Err(info.error(
                    &at("imagePullPolicy"),
                    format!("unknown policy `{other}`; expected IfNotPresent or Always"),
                ))
            }
        };
        let bytes = remote
            .fetch(&s.url, s.sha256.as_deref(), always)
            .map_err(|m| info.error(&at("url"), m))?;
        (bytes, PathBuf::from(&s.url), false)
    } else if let Some(name) = s.url.strip_prefix("pushed://") {
        let dir = opts.pushed_dir.as_ref().ok_or_else(|| {
            info.error(
                &at("url"),
                "pushed:// modules need a module cache (--cache-dir)",
            )
        })?;
        let path = pushed_path(dir, name).map_err(|m| info.error(&at("url"), m))?;
        let bytes = std::fs::read(&path).map_err(|e| {
            info.error(
                &at("url"),
                format!("no module pushed as `{name}` ({e}); push it with `lateen push`"),
            )
        })?;
        (bytes, path, true)
    } else {
        let path = plugin_path(&s.url, &info.file).map_err(|m| info.error(&at("url"), m))?;
        let bytes = std::fs::read(&path)
            .map_err(|e| info.error(&at("url"), format!("cannot read {}: {e}", path.display())))?;
        (bytes, path, true)
    };
    let sha = hex::encode(Sha256::digest(&bytes));
    if let Some(want) = &s.sha256 {
        if !want.eq_ignore_ascii_case(&sha) {
            return Err(info.error(
                &at("sha256"),
                format!(
                    "sha256 mismatch: {} has {sha}, expected {want}",
                    path.display()
                ),
            ));
        }
    }
    let module = rt
        .compile(&bytes)
        .map_err(|e| info.error(&at("url"), e.to_string()))?;
    let schema = schema::find(&bytes, local.then_some(path.as_path()))
        .map_err(|m| info.error(&at("url"), m))?
        .map(Arc::new);
    if let Some(schema) = &schema {
        if let Some(v) = schema.check(s.plugin_config.as_ref()).into_iter().next() {
            return Err(info.error(
                &format!("{}{}", at("pluginConfig"), v.field),
                format!("violates the plugin's config schema: {}", v.message),
            ));
        }
    }
    let phase = match s.phase.as_deref().unwrap_or("UNSPECIFIED_PHASE") {
        "AUTHN" => Phase::Authn,
        "AUTHZ" => Phase::Authz,
        "STATS" => Phase::Stats,
        "UNSPECIFIED_PHASE" | "UNSPECIFIED" => Phase::Unspecified,
        other => {
            return Err(info.error(
                &at("phase"),
                format!(
                    "unknown phase `{other}`; expected AUTHN, AUTHZ, STATS or UNSPECIFIED_PHASE"
                ),
            ))
        }
    };
    let fail = match s.fail_strategy.as_deref().unwrap_or("FAIL_CLOSE") {
        // FAIL_RELOAD fails the request like FAIL_CLOSE; every strategy gets a fresh
        // instance (with backoff) for new streams after a trap.
        "FAIL_CLOSE" | "FAIL_RELOAD" => FailStrategy::Close,
        "FAIL_OPEN" => FailStrategy::Open,
        other => {
            return Err(info.error(
                &at("failStrategy"),
                format!(
                    "unknown failStrategy `{other}`; expected FAIL_CLOSE, FAIL_OPEN or FAIL_RELOAD"
                ),
            ))
        }
    };
    let env = s
        .vm_config
        .as_ref()
        .map(|v| {
            v.env
                .iter()
                .map(|e| {
                    let value = match e.value_from.as_deref() {
                        Some("HOST") => std::env::var(&e.name).unwrap_or_default(),
                        _ => e.value.clone().unwrap_or_default(),
                    };
                    (e.name.clone(), value)
                })
                .collect()
        })
        .unwrap_or_default();
    let cfg = match &s.plugin_config {
        Some(v) => Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
        None => Bytes::new(),
    };
    let identity = PluginIdentity {
        name: name.clone(),
        root_id: s.plugin_name.clone().unwrap_or_else(|| name.clone()),
        vm_id: name.clone(),
        env,
        vm_configuration: Bytes::new(),
    };
    Ok((
        PluginSpec {
            name,
            url: s.url.clone(),
            module: Arc::new(module),
            identity: Arc::new(identity),
            fail,
            phase,
            priority: s.priority.unwrap_or(0),
            canary: None,
            placement: None,
            traffic: Vec::new(),
            recycle: crate::snapshot::Recycle::default(),
            schema,
            xds: None,
        },
        cfg,
    ))
}

// Whether an oci:// reference names a tag or digest (else it means `latest`).
fn oci_has_tag(url: &str) -> bool {
    let path = url.trim_start_matches("oci://");
    let last = path.rsplit('/').next().unwrap_or("");
    last.contains(':') || last.contains('@')
}

/// The file of a pushed module; names are `[A-Za-z0-9._-]+` so they cannot escape `dir`.
pub fn pushed_path(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(dir.join(format!("{name}.wasm")))
    } else {
        Err(format!(
            "invalid pushed module name `{name}` (letters, digits, . _ -)"
        ))
    }
}

/// `file:///abs/x.wasm`, or `file://rel/x.wasm` relative to the YAML file's directory.
fn plugin_path(url: &str, yaml: &Path) -> Result<PathBuf, String> {
    let Some(rest) = url.strip_prefix("file://") else {
        let scheme = url.split("://").next().unwrap_or(url);
        return Err(format!(
            "url scheme `{scheme}` is not supported; use file://, http://, oci:// or pushed://"
        ));
    };
    let p = PathBuf::from(rest);
    Ok(if p.is_absolute() {
        p
    } else {
        yaml.parent().unwrap_or(Path::new(".")).join(p)
    })
}

fn load_router(rt: &Runtime, dir: &Path) -> Result<Arc<PluginSpec>, ConfigError> {
    load_builtin(rt, dir, "router", Phase::Router)
}

/// Loads a built-in filter (`lateen_<name>.wasm`) from the filters directory.
fn load_builtin(
    rt: &Runtime,
    dir: &Path,
    name: &str,
    phase: Phase,
) -> Result<Arc<PluginSpec>, ConfigError> {
    let path = dir.join(format!("lateen_{name}.wasm"));
    let err = |m: String| ConfigError {
        file: path.clone(),
        doc: 0,
        line: 0,
        resource: Some(format!("built-in {name} filter")),
        field: String::new(),
        message: m,
    };
    let bytes = std::fs::read(&path).map_err(|e| {
        err(format!(
            "cannot read the built-in {name} filter: {e}; build the filters \
             (bash filters/build.sh) or pass --filters-dir"
        ))
    })?;
    let module = rt.compile(&bytes).map_err(|e| err(e.to_string()))?;
    let schema = schema::find(&bytes, None).map_err(err)?.map(Arc::new);
    let full = format!("lateen/{name}");
    Ok(Arc::new(PluginSpec {
        name: full.clone(),
        url: format!("file://{}", path.display()),
        module: Arc::new(module),
        identity: Arc::new(PluginIdentity {
            name: full.clone(),
            root_id: name.into(),
            vm_id: full,
            env: Vec::new(),
            vm_configuration: Bytes::new(),
        }),
        fail: FailStrategy::Close,
        phase,
        priority: 0,
        canary: None,
        placement: None,
        traffic: Vec::new(),
        recycle: crate::snapshot::Recycle::default(),
        schema,
        xds: None,
    }))
}

/// `ns/name` for a gateway reference (`name` is in the VirtualService's namespace).
fn qualify(r: &str, ns: &str) -> String {
    if r.contains('/') {
        r.to_string()
    } else {
        format!("{ns}/{r}")
    }
}

fn gateway_refs(vs: &Doc<VirtualServiceSpec>) -> Vec<String> {
    vs.spec
        .gateways
        .iter()
        .filter(|g| *g != "mesh")
        .map(|g| qualify(g, &vs.info.namespace))
        .collect()
}

fn virtual_host(
    vs: &Doc<VirtualServiceSpec>,
    res: &Resources,
    clusters: &HashMap<String, Arc<Cluster>>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<VirtualHostConfig> {
    let mut routes = Vec::new();
    let before = errors.len();
    if vs.spec.hosts.is_empty() {
        errors.push(vs.info.error("spec.hosts", "at least one host is required"));
    }
    for (i, http) in vs.spec.http.iter().enumerate() {
        let field = format!("spec.http[{i}]");
        for f in http.unsupported_fields() {
            warnings.push(format!(
                "{}: {field}.{f} is not supported yet and is ignored",
                vs.info.key()
            ));
        }
        for (m, mr) in http.matches.iter().enumerate() {
            if let Err(e) = lateen_sdk::matcher::CompiledMatch::compile(mr) {
                errors.push(
                    vs.info
                        .error(&format!("{field}.match[{m}].{}", e.field), e.message),
                );
            }
        }
        let actions = [
            !http.route.is_empty(),
            http.redirect.is_some(),
            http.direct_response.is_some(),
        ];
        match actions.iter().filter(|a| **a).count() {
            0 => {
                errors.push(vs.info.error(
                    &format!("{field}.route"),
                    "a route needs destinations, a redirect or a directResponse",
                ));
                continue;
            }
            1 => {}
            _ => {
                errors.push(vs.info.error(
                    &field,
                    "route, redirect and directResponse are mutually exclusive",
                ));
                continue;
            }
        }
        if let Some(d) = &http.direct_response {
            if !(200..=599).contains(&d.status) {
                errors.push(vs.info.error(
                    &format!("{field}.directResponse.status"),
                    "status must be 200-599",
                ));
            }
            if let Err(e) = d.body_bytes() {
                errors.push(vs.info.error(&format!("{field}.directResponse.body"), e));
            }
        }
        if let Some(r) = &http.redirect {
            if let Some(code) = r.redirect_code {
                if !matches!(code, 301 | 302 | 303 | 307 | 308) {
                    errors.push(vs.info.error(
                        &format!("{field}.redirect.redirectCode"),
                        "redirectCode must be 301, 302, 303, 307 or 308",
                    ));
                }
            }
            if let Some(d) = r.derive_port.as_deref() {
                if !matches!(d, "FROM_PROTOCOL_DEFAULT" | "FROM_REQUEST_PORT") {
                    errors.push(vs.info.error(
                        &format!("{field}.redirect.derivePort"),
                        "expected FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT",
                    ));
                }
            }
        }
        if let Some(rr) = http
            .rewrite
            .as_ref()
            .and_then(|r| r.uri_regex_rewrite.as_ref())
        {
            if let Err(e) = regex::Regex::new(&rr.pattern) {
                errors.push(vs.info.error(
                    &format!("{field}.rewrite.uriRegexRewrite.match"),
                    format!("invalid regex: {e}"),
                ));
            }
        }
        let mut dests = Vec::new();
        for (j, d) in http.route.iter().enumerate() {
            let df = format!("{field}.route[{j}]");
            if let Some(w) = d.weight {
                if !(0..=i64::from(u32::MAX)).contains(&w) {
                    errors.push(
                        vs.info
                            .error(&format!("{df}.weight"), "weight must be >= 0"),
                    );
                    continue;
                }
            }
            match destination_cluster(&d.destination, &vs.info.namespace, res) {
                Ok(name) => {
                    if !clusters.contains_key(&name) {
                        errors.push(
                            vs.info.error(
                                &format!("{df}.destination"),
                                format!("no cluster `{name}`"),
                            ),
                        );
                    }
                    dests.push(WeightedCluster {
                        cluster: name,
                        weight: d.weight.unwrap_or(0) as u32,
                        headers: d.headers.clone(),
                    });
                }
                Err((sub, msg)) => {
                    errors.push(vs.info.error(&format!("{df}.destination.{sub}"), msg))
                }
            }
        }
        if dests.len() > 1 && dests.iter().all(|d| d.weight == 0) {
            errors.push(vs.info.error(
                &format!("{field}.route"),
                "with several destinations, weights must not all be 0",
            ));
        }
        let timeout_ms = match &http.timeout {
            None => 0,
            Some(t) => match parse_duration_ms(t) {
                Some(ms) => ms,
                None => {
                    errors.push(vs.info.error(
                        &format!("{field}.timeout"),
                        format!("`{t}` is not a duration (e.g. 1.5s, 250ms)"),
                    ));
                    0
                }
            },
        };
        let retry = match &http.retries {
            None => None,
            Some(r) => match retry_property(r) {
                Ok(p) => Some(p),
                Err((f, m)) => {
                    errors.push(vs.info.error(&format!("{field}.retries.{f}"), m));
                    None
                }
            },
        };
        let mut mirrors = Vec::new();
        for (j, (d, pct)) in mirror_destinations(http).into_iter().enumerate() {
            let mf = if http.mirror.is_some() && j == 0 {
                format!("{field}.mirror")
            } else {
                format!(
                    "{field}.mirrors[{}]",
                    j - usize::from(http.mirror.is_some())
                )
            };
            if !(0.0..=100.0).contains(&pct) {
                errors.push(
                    vs.info
                        .error(&mf, format!("percentage {pct} is not within 0-100")),
                );
                continue;
            }
            match destination_cluster(&d, &vs.info.namespace, res) {
                Ok(name) => mirrors.push((name, pct)),
                Err((sub, msg)) => errors.push(vs.info.error(&format!("{mf}.{sub}"), msg)),
            }
        }
        let cors_max_age_s = match http.cors_policy.as_ref().and_then(|c| c.max_age.as_ref()) {
            None => None,
            Some(t) => match parse_duration_ms(t) {
                Some(ms) => Some(ms / 1000),
                None => {
                    errors.push(vs.info.error(
                        &format!("{field}.corsPolicy.maxAge"),
                        format!("`{t}` is not a duration"),
                    ));
                    None
                }
            },
        };
        if let Some(c) = &http.cors_policy {
            for (k, m) in c.allow_origins.iter().enumerate() {
                if let Err(e) = lateen_sdk::matcher::StrMatcher::compile(m, false, "") {
                    errors.push(vs.info.error(
                        &format!("{field}.corsPolicy.allowOrigins[{k}]{}", e.field),
                        e.message,
                    ));
                }
            }
        }
        routes.push(RouteConfig {
            cors_policy: http.cors_policy.clone(),
            cors_max_age_s,
            retry,
            mirrors,
            name: http
                .name
                .clone()
                .unwrap_or_else(|| format!("{}.{i}", vs.info.name)),
            id: format!("{}#{i}", vs.info.key()),
            matches: http.matches.clone(),
            route: dests,
            timeout_ms,
            redirect: http.redirect.clone(),
            direct_response: http.direct_response.clone(),
            rewrite: http.rewrite.clone(),
            headers: http.headers.clone(),
        });
    }
    if errors.len() > before {
        return None;
    }
    Some(VirtualHostConfig {
        name: vs.info.key(),
        domains: vs
            .spec
            .hosts
            .iter()
            .map(|h| h.rsplit('/').next().unwrap_or(h).to_string())
            .collect(),
        routes,
    })
}

/// A VirtualService fault as the fault filter's configuration; `Err((field, message))`.
fn route_fault(f: &HttpFaultInjection) -> Result<RouteFault, (&'static str, String)> {
    let pct = |p: &Option<Percent>, legacy: Option<i32>, field| {
        let v = p
            .as_ref()
            .map(|p| p.value)
            .or(legacy.map(f64::from))
            .unwrap_or(0.0);
        if (0.0..=100.0).contains(&v) {
            Ok(v)
        } else {
            Err((field, format!("percentage {v} is not within 0-100")))
        }
    };
    let delay = match &f.delay {
        None => None,
        Some(d) => {
            if d.exponential_delay.is_some() {
                return Err((
                    "delay.exponentialDelay",
                    "not supported; use fixedDelay".into(),
                ));
            }
            let Some(fixed) = &d.fixed_delay else {
                return Err(("delay.fixedDelay", "a delay needs fixedDelay".into()));
            };
            let ms = parse_duration_ms(fixed)
                .ok_or(("delay.fixedDelay", format!("`{fixed}` is not a duration")))?;
            Some(FaultDelayCfg {
                fixed_delay_ms: ms,
                percentage: pct(&d.percentage, d.percent, "delay.percentage")?,
            })
        }
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => {
            if a.http2_error.is_some() {
                return Err((
                    "abort.http2Error",
                    "not supported; use httpStatus or grpcStatus".into(),
                ));
            }
            let grpc_status = match &a.grpc_status {
                None => None,
                Some(name) => Some(grpc_code(name).ok_or((
                    "abort.grpcStatus",
                    format!("unknown gRPC status `{name}` (e.g. UNAVAILABLE)"),
                ))?),
            };
            let http_status = match (a.http_status, grpc_status) {
                (Some(s), _) if (200..=599).contains(&s) => s as u32,
                (Some(s), _) => return Err(("abort.httpStatus", format!("{s} is not 200-599"))),
                (None, Some(_)) => 200,
                (None, None) => {
                    return Err(("abort", "an abort needs httpStatus or grpcStatus".into()))
                }
            };
            Some(FaultAbortCfg {
                http_status,
                grpc_status,
                percentage: pct(&a.percentage, None, "abort.percentage")?,
            })
        }
    };
    Ok(RouteFault { delay, abort })
}

/// Mirror destinations of a route with their percentages (`mirror` + `mirrorPercentage`,
/// then `mirrors[]`; an unset percentage mirrors everything).
fn mirror_destinations(http: &HttpRoute) -> Vec<(Destination, f64)> {
    let conv = |m: &lateen_sdk::istio::MirrorDestination| Destination {
        host: m.host.clone(),
        subset: m.subset.clone(),
        port: m.port.as_ref().map(|p| PortSelector { number: p.number }),
    };
    let mut out = Vec::new();
    if let Some(m) = &http.mirror {
        let pct = http
            .mirror_percentage
            .as_ref()
            .map(|p| p.value)
            .or(http.mirror_percent.map(f64::from))
            .unwrap_or(100.0);
        out.push((conv(m), pct));
    }
    for m in &http.mirrors {
        out.push((
            conv(&m.destination),
            m.percentage.as_ref().map_or(100.0, |p| p.value),
        ));
    }
    out
}

/// `HTTPRetry` as the route decision's retry policy, encoded by the SDK for the
/// `lateen.route.retry` property the router sets.
pub(crate) fn retry_property(
    r: &lateen_sdk::istio::HttpRetry,
) -> Result<String, (&'static str, String)> {
    use lateen_sdk::route::{RetryPolicy, DEFAULT_RETRY_ON, RETRY_ON_TOKENS};
    let per_try_timeout_ms = match &r.per_try_timeout {
        None => 0,
        Some(t) => {
            parse_duration_ms(t).ok_or(("perTryTimeout", format!("`{t}` is not a duration")))?
        }
    };
    let policy = RetryPolicy {
        attempts: r.attempts.unwrap_or(0),
        per_try_timeout_ms,
        retry_on: r
            .retry_on
            .clone()
            .unwrap_or_else(|| DEFAULT_RETRY_ON.to_string()),
        ignore_previous_hosts: r.retry_ignore_previous_hosts.unwrap_or(true),
    };
    if let Some(tok) = policy.unknown_condition() {
        return Err((
            "retryOn",
            format!(
                "unknown retry condition `{tok}`; expected {} or a status code",
                RETRY_ON_TOKENS.join(", ")
            ),
        ));
    }
    Ok(policy.encode())
}

/// Istio durations: `1.5s`, `250ms`, `2m`, `1h`.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        return None;
    };
    let v: f64 = num.parse().ok()?;
    (v >= 0.0 && v.is_finite()).then(|| (v * mult).round() as u64)
}

fn se_for<'a>(
    res: &'a Resources,
    host: &str,
    ns: &str,
) -> Option<(&'a Doc<ServiceEntrySpec>, String)> {
    let fq = format!("{host}.{ns}.svc.cluster.local");
    for candidate in [host, fq.as_str()] {
        if let Some(se) = res
            .service_entries
            .iter()
            .find(|se| se.spec.hosts.iter().any(|h| h == candidate))
        {
            return Some((se, candidate.to_string()));
        }
    }
    None
}

fn dr_for<'a>(res: &'a Resources, host: &str, ns: &str) -> Option<&'a Doc<DestinationRuleSpec>> {
    res.destination_rules.iter().find(|dr| {
        dr.spec.host == host
            || format!("{}.{}.svc.cluster.local", dr.spec.host, dr.info.namespace) == host
            || (dr.spec.host == host.split('.').next().unwrap_or("") && dr.info.namespace == ns)
    })
}

/// The cluster name a destination refers to; `Err((field, message))` otherwise.
fn destination_cluster(
    d: &Destination,
    ns: &str,
    res: &Resources,
) -> Result<String, (&'static str, String)> {
    let subset = d.subset.clone().unwrap_or_default();
    let (host, port) = match se_for(res, &d.host, ns) {
        Some((se, host)) => {
            let port = match (&d.port, se.spec.ports.as_slice()) {
                (Some(p), ports) => {
                    if !ports.iter().any(|sp| sp.number == p.number) {
                        return Err((
                            "port",
                            format!("ServiceEntry {} has no port {}", se.info.key(), p.number),
                        ));
                    }
                    p.number
                }
                (None, [only]) => only.number,
                (None, _) => {
                    return Err((
                        "port",
                        format!(
                            "ServiceEntry {} declares several ports; set destination.port.number",
                            se.info.key()
                        ),
                    ))
                }
            };
            (host, port)
        }
        None => match &d.port {
            Some(p) => (d.host.clone(), p.number),
            None => {
                return Err((
                    "host",
                    format!(
                        "no ServiceEntry declares `{}`; declare it, or set destination.port.number \
                         to reach it by DNS",
                        d.host
                    ),
                ))
            }
        },
    };
    if !subset.is_empty() {
        let defined = dr_for(res, &host, ns)
            .is_some_and(|dr| dr.spec.subsets.iter().any(|s| s.name == subset));
        if !defined {
            return Err((
                "subset",
                format!("subset `{subset}` of `{host}` is not defined by any DestinationRule"),
            ));
        }
    }
    Ok(format!("outbound|{port}|{subset}|{host}"))
}

/// A trafficPolicy as it applies to `port`: its `portLevelSettings` entry for the port, if
/// any, replaces the load balancer, connection pool and outlier detection it sets.
fn at_port(tp: &TrafficPolicy, port: u32) -> TrafficPolicy {
    let mut eff = tp.clone();
    if let Some(p) = tp
        .port_level_settings
        .iter()
        .find(|p| p.port.as_ref().is_some_and(|n| n.number == port))
    {
        if p.load_balancer.is_some() {
            eff.load_balancer = p.load_balancer.clone();
        }
        if p.connection_pool.is_some() {
            eff.connection_pool = p.connection_pool.clone();
        }
        if p.outlier_detection.is_some() {
            eff.outlier_detection = p.outlier_detection.clone();
        }
        if p.tls.is_some() {
            eff.tls = p.tls.clone();
        }
    }
    eff
}

/// What upstream TLS needs to know of the service: its host (the default SNI), the
/// ServiceEntry's subjectAltNames, and whether it speaks HTTP/2 (ALPN).
struct Service<'a> {
    host: &'a str,
    sans: &'a [String],
    h2: bool,
}

/// The upstream TLS of a cluster from a trafficPolicy's `tls` (already laid over by the
/// port's settings), built now so that a bad file fails the config, not a request.
fn cluster_tls(
    tp: Option<&TrafficPolicy>,
    svc: &Service<'_>,
    ctx: &TlsContext,
    info: &DocInfo,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<lateen_core::tls::client::UpstreamTls>> {
    let t = tp?.tls.as_ref()?;
    let at = format!("{at}.tls");
    match ctx.client(t, svc.host, svc.sans, svc.h2, info, &at) {
        Ok(Some(s)) => match ctx.upstream(&s) {
            Ok(u) => Some(u),
            Err(e) => {
                errors.push(info.error(&at, e.to_string()));
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// Connection settings from a trafficPolicy's connectionPool (`tcp.connectTimeout`,
/// `http.idleTimeout`, else `tcp.idleTimeout`).
fn conn_settings(
    tp: Option<&TrafficPolicy>,
    mut base: ConnSettings,
    dr: &Option<&Doc<DestinationRuleSpec>>,
    errors: &mut Vec<ConfigError>,
) -> ConnSettings {
    let Some(cp) = tp.and_then(|t| t.connection_pool.as_ref()) else {
        return base;
    };
    let mut dur = |v: Option<&String>, field: &str| -> Option<u64> {
        let t = v?;
        match parse_duration_ms(t) {
            Some(ms) if ms > 0 => Some(ms),
            _ => {
                if let Some(d) = dr {
                    errors.push(d.info.error(
                        &format!("spec.trafficPolicy.connectionPool.{field}"),
                        format!("`{t}` is not a positive duration"),
                    ));
                }
                None
            }
        }
    };
    if let Some(ms) = dur(
        cp.tcp.as_ref().and_then(|t| t.connect_timeout.as_ref()),
        "tcp.connectTimeout",
    ) {
        base.connect_timeout_ms = ms;
    }
    let tcp_idle = dur(
        cp.tcp.as_ref().and_then(|t| t.idle_timeout.as_ref()),
        "tcp.idleTimeout",
    );
    if let Some(ms) = tcp_idle {
        base.tcp_idle_timeout_ms = ms;
    }
    let idle = dur(
        cp.http.as_ref().and_then(|h| h.idle_timeout.as_ref()),
        "http.idleTimeout",
    )
    .or(tcp_idle);
    if let Some(ms) = idle {
        base.idle_timeout_ms = ms;
    }
    if let Some(n) = cp.tcp.as_ref().and_then(|t| t.max_connections) {
        base.max_connections = n.min(u32::MAX as u64) as u32;
    }
    if let Some(n) = cp.http.as_ref().and_then(|h| h.max_requests_per_connection) {
        // Istio: 0 means unlimited; 1 turns keep-alive off.
        base.max_requests_per_connection = n.min(u32::MAX as u64) as u32;
    }
    // h2UpgradePolicy: UPGRADE speaks HTTP/2 (prior knowledge) to an HTTP/1.1 port.
    if cp
        .http
        .as_ref()
        .and_then(|h| h.h2_upgrade_policy.as_deref())
        == Some("UPGRADE")
    {
        base.protocol = UpstreamProtocol::Http2;
    }
    base
}

/// The consistent-hash policy of a trafficPolicy, if any.
fn hash_policy(
    tp: &TrafficPolicy,
    endpoints: &[Endpoint],
    info: &DocInfo,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<HashPolicy> {
    let ch = tp.load_balancer.as_ref()?.consistent_hash.as_ref()?;
    let at = format!("{at}.loadBalancer.consistentHash");
    let mut keys = Vec::new();
    if let Some(h) = &ch.http_header_name {
        keys.push(HashKey::Header(h.to_ascii_lowercase()));
    }
    if let Some(c) = &ch.http_cookie {
        let ttl_s = match &c.ttl {
            None => None,
            Some(t) => match parse_duration_ms(t) {
                Some(ms) => Some(ms / 1000),
                None => {
                    errors.push(info.error(
                        &format!("{at}.httpCookie.ttl"),
                        format!("`{t}` is not a duration"),
                    ));
                    None
                }
            },
        };
        keys.push(HashKey::Cookie {
            name: c.name.clone(),
            path: c.path.clone(),
            ttl_s,
        });
    }
    if ch.use_source_ip == Some(true) {
        keys.push(HashKey::SourceIp);
    }
    if let Some(q) = &ch.http_query_parameter_name {
        keys.push(HashKey::QueryParam(q.clone()));
    }
    if keys.len() != 1 {
        errors.push(info.error(
            &at,
            "set exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
        ));
        return None;
    }
    let key = keys.remove(0);
    Some(match (&ch.maglev, &ch.ring_hash) {
        (Some(m), None) => {
            HashPolicy::maglev(key, endpoints, m.table_size.unwrap_or(65537) as usize)
        }
        (None, r) => HashPolicy::ring(
            key,
            endpoints,
            r.as_ref()
                .and_then(|r| r.minimum_ring_size)
                .or(ch.minimum_ring_size)
                .unwrap_or(1024)
                .min(1 << 20) as usize,
        ),
        (Some(_), Some(_)) => {
            errors.push(info.error(&at, "set only one of ringHash and maglev"));
            return None;
        }
    })
}

/// Circuit-breaker limit and outlier policy of a trafficPolicy.
fn upstream_policies(
    tp: Option<&TrafficPolicy>,
    info: &DocInfo,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> (Option<u64>, Option<OutlierPolicy>) {
    let Some(tp) = tp else { return (None, None) };
    // HTTP/1: connections in use plus requests waiting for one; HTTP/2: http2MaxRequests.
    let max_requests = tp.connection_pool.as_ref().and_then(|cp| {
        let conns = cp.tcp.as_ref().and_then(|t| t.max_connections);
        let pending = cp.http.as_ref().and_then(|h| h.http1_max_pending_requests);
        let h2 = cp.http.as_ref().and_then(|h| h.http2_max_requests);
        let h1 = conns.map(|c| c + pending.unwrap_or(1024));
        match (h1, h2) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    });
    let outlier = tp.outlier_detection.as_ref().map(|o| {
        let mut dur = |v: &Option<String>, field: &str, default: u64| match v {
            None => default,
            Some(t) => parse_duration_ms(t).unwrap_or_else(|| {
                errors.push(info.error(
                    &format!("{at}.outlierDetection.{field}"),
                    format!("`{t}` is not a duration"),
                ));
                default
            }),
        };
        OutlierPolicy {
            // Istio: consecutive5xxErrors defaults to 5; consecutiveErrors is its old name.
            consecutive_5xx: o
                .consecutive5xx_errors
                .or(o.consecutive_errors)
                .unwrap_or(5),
            consecutive_gateway: o.consecutive_gateway_errors.unwrap_or(0),
            // Envoy's default for consecutive_local_origin_failure is 5.
            consecutive_local_origin: if o.split_external_local_origin_errors == Some(true) {
                o.consecutive_local_origin_failures.unwrap_or(5).max(1)
            } else {
                0
            },
            base_ejection_ms: dur(&o.base_ejection_time, "baseEjectionTime", 30_000),
            interval_ms: dur(&o.interval, "interval", 10_000),
            max_ejection_percent: o.max_ejection_percent.unwrap_or(10).min(100),
            min_health_percent: o.min_health_percent.unwrap_or(0).min(100),
        }
    });
    (max_requests, outlier)
}

fn lb_of(tp: Option<&TrafficPolicy>) -> Option<&str> {
    tp?.load_balancer.as_ref()?.simple.as_deref()
}

fn build_clusters(
    res: &Resources,
    tls: &TlsContext,
    errors: &mut Vec<ConfigError>,
) -> (HashMap<String, Arc<Cluster>>, HashMap<String, String>) {
    let mut clusters = HashMap::new();
    let mut aliases = HashMap::new();
    let lb_parse = |s: Option<&str>, info: &DocInfo, field: &str, errors: &mut Vec<ConfigError>| {
        let s = s.unwrap_or("ROUND_ROBIN");
        LbPolicy::parse(s).unwrap_or_else(|| {
            let msg = if s == "PASSTHROUGH" {
                "PASSTHROUGH forwards to the caller's original destination, which only a \
                 sidecar has; a gateway cannot use it"
                    .to_string()
            } else {
                format!(
                    "unknown load balancer `{s}`; expected ROUND_ROBIN, LEAST_REQUEST or RANDOM"
                )
            };
            errors.push(info.error(field, msg));
            LbPolicy::RoundRobin
        })
    };
    for se in &res.service_entries {
        let resolution = se.spec.resolution.as_deref().unwrap_or("NONE");
        if !matches!(resolution, "STATIC" | "DNS" | "DNS_ROUND_ROBIN" | "NONE") {
            errors.push(se.info.error(
                "spec.resolution",
                format!("unknown resolution `{resolution}`; expected STATIC, DNS, DNS_ROUND_ROBIN or NONE"),
            ));
            continue;
        }
        if resolution == "STATIC" && se.spec.endpoints.is_empty() {
            errors.push(
                se.info
                    .error("spec.endpoints", "STATIC resolution needs endpoints"),
            );
        }
        for (pi, port) in se.spec.ports.iter().enumerate() {
            if u16::try_from(port.number).is_err() || port.number == 0 {
                errors.push(
                    se.info
                        .error(&format!("spec.ports[{pi}].number"), "port must be 1-65535"),
                );
                continue;
            }
            let proto = match port
                .protocol
                .as_deref()
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                Some("HTTP2" | "GRPC" | "GRPC-WEB") => UpstreamProtocol::Http2,
                _ => UpstreamProtocol::Http1,
            };
            for host in &se.spec.hosts {
                let endpoints_for = |labels: &BTreeMap<String, String>| -> Vec<Endpoint> {
                    if se.spec.endpoints.is_empty() {
                        if labels.is_empty() {
                            return vec![Endpoint::new(
                                format!("{host}:{}", port.target_port.unwrap_or(port.number)),
                                BTreeMap::new(),
                                1,
                            )];
                        }
                        return Vec::new();
                    }
                    se.spec
                        .endpoints
                        .iter()
                        .filter(|e| labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
                        .map(|e| {
                            let p = e
                                .ports
                                .get(&port.name)
                                .copied()
                                .or(port.target_port)
                                .unwrap_or(port.number);
                            let addr = if e.address.contains(':') && !e.address.starts_with('[') {
                                format!("[{}]:{p}", e.address)
                            } else {
                                format!("{}:{p}", e.address)
                            };
                            Endpoint::new(addr, e.labels.clone(), e.weight.unwrap_or(1))
                        })
                        .collect()
                };
                let dr = dr_for(res, host, &se.info.namespace);
                // The rule's policy with this port's portLevelSettings laid over it.
                let base_eff = dr
                    .and_then(|d| d.spec.traffic_policy.as_ref())
                    .map(|t| at_port(t, port.number));
                let base_lb = match dr {
                    Some(d) => lb_parse(
                        lb_of(base_eff.as_ref()),
                        &d.info,
                        "spec.trafficPolicy.loadBalancer.simple",
                        errors,
                    ),
                    None => LbPolicy::RoundRobin,
                };
                let base_pol = match dr {
                    Some(d) => {
                        upstream_policies(base_eff.as_ref(), &d.info, "spec.trafficPolicy", errors)
                    }
                    None => (None, None),
                };
                let name = format!("outbound|{}||{host}", port.number);
                aliases.entry(host.clone()).or_insert_with(|| name.clone());
                let mut c = Cluster::new(
                    name.clone(),
                    endpoints_for(&BTreeMap::new()),
                    base_lb,
                    proto,
                );
                (c.max_requests, c.outlier) = base_pol;
                c.conn = conn_settings(base_eff.as_ref(), c.conn, &dr, errors);
                let base_tp = dr.and_then(|d| base_eff.as_ref().map(|t| (d, t)));
                let svc = Service {
                    host,
                    sans: &se.spec.subject_alt_names,
                    h2: proto == UpstreamProtocol::Http2,
                };
                if let Some((d, t)) = base_tp {
                    c.hash = hash_policy(t, &c.endpoints, &d.info, "spec.trafficPolicy", errors);
                    c.tls = cluster_tls(Some(t), &svc, tls, &d.info, "spec.trafficPolicy", errors);
                }
                // Istio's auto mTLS: endpoints labelled as having a sidecar get ISTIO_MUTUAL
                // unless a DestinationRule says otherwise.
                let has_sidecars = !se.spec.endpoints.is_empty()
                    && se.spec.endpoints.iter().all(|e| {
                        e.labels
                            .get("security.istio.io/tlsMode")
                            .map(String::as_str)
                            == Some("istio")
                    });
                if has_sidecars && base_eff.as_ref().is_none_or(|t| t.tls.is_none()) {
                    let auto = TrafficPolicy {
                        tls: Some(ClientTlsSettings {
                            mode: Some("ISTIO_MUTUAL".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    c.tls = cluster_tls(Some(&auto), &svc, tls, &se.info, "spec.endpoints", errors);
                }
                let base_tls = c.tls.clone();
                clusters.insert(name, Arc::new(c));
                if let Some(dr) = dr {
                    for (si, subset) in dr.spec.subsets.iter().enumerate() {
                        let sub_eff = subset
                            .traffic_policy
                            .as_ref()
                            .map(|t| at_port(t, port.number));
                        let lb = match lb_of(sub_eff.as_ref()) {
                            Some(s) => lb_parse(
                                Some(s),
                                &dr.info,
                                &format!("spec.subsets[{si}].trafficPolicy.loadBalancer.simple"),
                                errors,
                            ),
                            None => base_lb,
                        };
                        let name = format!("outbound|{}|{}|{host}", port.number, subset.name);
                        let eps = endpoints_for(&subset.labels);
                        let mut c = Cluster::new(name.clone(), eps, lb, proto);
                        // A subset's trafficPolicy replaces the rule's, field by field.
                        let sub = upstream_policies(
                            sub_eff.as_ref(),
                            &dr.info,
                            &format!("spec.subsets[{si}].trafficPolicy"),
                            errors,
                        );
                        let has = |f: fn(&TrafficPolicy) -> bool| sub_eff.as_ref().is_some_and(f);
                        c.max_requests = if has(|t| t.connection_pool.is_some()) {
                            sub.0
                        } else {
                            base_pol.0
                        };
                        let base_conn = conn_settings(base_eff.as_ref(), c.conn, &Some(dr), errors);
                        c.conn = if has(|t| t.connection_pool.is_some()) {
                            conn_settings(sub_eff.as_ref(), c.conn, &Some(dr), errors)
                        } else {
                            base_conn
                        };
                        c.outlier = if has(|t| t.outlier_detection.is_some()) {
                            sub.1
                        } else {
                            base_pol.1
                        };
                        let sub_lb = sub_eff.as_ref().filter(|t| t.load_balancer.is_some());
                        c.hash = match (sub_lb, base_tp) {
                            (Some(t), _) => hash_policy(
                                t,
                                &c.endpoints,
                                &dr.info,
                                &format!("spec.subsets[{si}].trafficPolicy"),
                                errors,
                            ),
                            (None, Some((d, t))) => {
                                hash_policy(t, &c.endpoints, &d.info, "spec.trafficPolicy", errors)
                            }
                            (None, None) => None,
                        };
                        c.tls = if has(|t| t.tls.is_some()) {
                            cluster_tls(
                                sub_eff.as_ref(),
                                &svc,
                                tls,
                                &dr.info,
                                &format!("spec.subsets[{si}].trafficPolicy"),
                                errors,
                            )
                        } else {
                            base_tls.clone()
                        };
                        clusters.insert(name, Arc::new(c));
                    }
                }
            }
        }
    }
    // Destinations on hosts no ServiceEntry declares are reached by DNS at their port.
    for vs in &res.virtual_services {
        let http = vs.spec.http.iter().flat_map(|http| {
            http.route
                .iter()
                .map(|d| d.destination.clone())
                .chain(mirror_destinations(http).into_iter().map(|(d, _)| d))
        });
        let tls_routes = vs
            .spec
            .tls
            .iter()
            .flat_map(|t| t.route.iter().map(|d| d.destination.clone()));
        for d in http.chain(tls_routes) {
            if se_for(res, &d.host, &vs.info.namespace).is_some() {
                continue;
            }
            let Some(port) = &d.port else {
                continue;
            };
            let subset = d.subset.clone().unwrap_or_default();
            let name = format!("outbound|{}|{subset}|{}", port.number, d.host);
            if clusters.contains_key(&name) {
                continue;
            }
            let mut c = Cluster::new(
                name.clone(),
                vec![Endpoint::new(
                    format!("{}:{}", d.host, port.number),
                    BTreeMap::new(),
                    1,
                )],
                LbPolicy::RoundRobin,
                UpstreamProtocol::Http1,
            );
            // A DestinationRule may still set TLS for a host reached by DNS (an external
            // https service).
            if let Some(dr) = dr_for(res, &d.host, &vs.info.namespace) {
                let tp = dr
                    .spec
                    .traffic_policy
                    .as_ref()
                    .map(|t| at_port(t, port.number));
                c.tls = cluster_tls(
                    tp.as_ref(),
                    &Service {
                        host: &d.host,
                        sans: &[],
                        h2: false,
                    },
                    tls,
                    &dr.info,
                    "spec.trafficPolicy",
                    errors,
                );
            }
            clusters.insert(name, Arc::new(c));
        }
    }
    (clusters, aliases)
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
