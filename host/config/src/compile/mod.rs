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
mod envoy_filter;
mod gateways;
mod isolate;
mod listeners;
mod mesh;
mod plugins;
mod routes;
mod security;
mod sidecar;
mod telemetry;
mod xds_build;
// The resource concerns, each a module; what the rest of the crate names is re-exported.
pub use self::isolate::isolate;
pub use self::{bootstrap::*, plugins::*, routes::*};
use self::{
    chain::*, clusters::*, envoy_filter::*, gateways::*, listeners::*, security::*, sidecar::*,
};

/// Every resource of a config path, typed and located.
#[derive(Default, Clone)]
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
    pub telemetries: Vec<Doc<TelemetryApiSpec>>,
    pub bootstrap: Option<Doc<BootstrapSpec>>,
    /// MeshConfig: the `istio` ConfigMap's `mesh` key, or a `mesh` file.
    pub mesh: Option<mesh::MeshSource>,
    pub warnings: Vec<String>,
}

const NETWORKING: &[&str] = &[
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// Reads and types every document under `path`.
pub fn load(path: &Path) -> Result<Resources, Vec<ConfigError>> {
    let (res, errors) = load_partial(path);
    if errors.is_empty() {
        Ok(res)
    } else {
        Err(errors)
    }
}

/// Reads every document under `path`, keeping those that type: the resources, and the
/// errors (each names its resource where it has one; see [`isolate`]).
pub fn load_partial(path: &Path) -> (Resources, Vec<ConfigError>) {
    let mut res = Resources::default();
    let mut errors = Vec::new();
    let files = match config_files(path) {
        Ok(f) => f,
        Err(e) => return (res, vec![e]),
    };
    if files.is_empty() {
        return (
            res,
            vec![ConfigError {
                file: path.to_path_buf(),
                doc: 0,
                line: 0,
                resource: None,
                field: String::new(),
                message: "no .yaml or .yml files found".into(),
            }],
        );
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
        // A `mesh` file is MeshConfig as the istio ConfigMap's `mesh` key holds it (the
        // file that ConfigMap mounts as).
        if file.file_name().is_some_and(|n| n == "mesh") {
            match mesh::MeshSource::file(&file, &text) {
                Ok(m) => res.mesh = Some(m),
                Err(e) => errors.push(e),
            }
            continue;
        }
        add_documents(&mut res, &file, &text, &mut errors);
    }
    (res, errors)
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
            // Istio 1.30's successor of WasmPlugin: served as one.
            ("TrafficExtension", "extensions.istio.io/v1alpha1") => {
                d.typed::<TrafficExtensionSpec>().and_then(|t| match t.spec.as_wasm_plugin() {
                    Some(spec) => {
                        res.wasm_plugins.push(Doc { info: t.info, meta: t.meta, spec });
                        Ok(())
                    }
                    None if t.spec.lua.is_some() => Err(t.info.error(
                        "spec.lua",
                        "Lua extensions are not served: Lateen runs wasm (set spec.wasm)",
                    )),
                    None => Err(t.info.error("spec", "one of wasm or lua is required")),
                })
            }
            ("Bootstrap", "lateen.io/v1alpha1") => d.typed().map(|t| {
                res.bootstrap = Some(t);
            }),
            ("EnvoyFilter", a) if NETWORKING.contains(&a) => {
                d.typed().map(|t| res.envoy_filters.push(t))
            }
            ("Sidecar", a) if NETWORKING.contains(&a) => d.typed().map(|t| res.sidecars.push(t)),
            ("Telemetry", "telemetry.istio.io/v1" | "telemetry.istio.io/v1alpha1") => {
                d.typed().map(|t| res.telemetries.push(t))
            }
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
            // Istio's own ConfigMap: MeshConfig under `mesh`.
            ("ConfigMap", "v1") if mesh::is_mesh_config_map(&d.info) => {
                mesh::from_config_map(&d).map(|m| res.mesh = m)
            }
            // Kinds a directory exported from a cluster holds beside Istio's: skipped, so
            // that it loads.
            ("ConfigMap" | "Secret" | "Service" | "ServiceAccount" | "Namespace", "v1")
            | ("Deployment" | "DaemonSet" | "StatefulSet", "apps/v1") => {
                res.warnings.push(format!(
                    "{}:{}: {api} {kind} {}: skipped (Lateen does not read this kind{})",
                    d.info.file.display(),
                    d.info.line_of("kind"),
                    d.info.key(),
                    if kind == "ConfigMap" {
                        "; MeshConfig is read from istio-system/istio"
                    } else {
                        ""
                    }
                ));
                Ok(())
            }
            _ => Err(d.info.error(
                "kind",
                format!(
                    "unknown resource `{api}` `{kind}`; Lateen accepts Gateway, VirtualService, \
                     DestinationRule, ServiceEntry, EnvoyFilter and Sidecar ({}), WasmPlugin \
                     and TrafficExtension (extensions.istio.io/v1alpha1), AuthorizationPolicy, RequestAuthentication \
                     and PeerAuthentication (security.istio.io/v1, v1beta1), Telemetry \
                     (telemetry.istio.io/v1, v1alpha1) and Bootstrap (lateen.io/v1alpha1)",
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
    let (clusters, aliases, redis_url) =
        all_clusters(res, xds, &tls_ctx, &mut errors, &mut warnings);
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

    // Listeners: one per (bind, port) across every Gateway server.
    let (mut by_addr, servers_at) = gateway_addresses(res, opts, &mut errors);
    let mut builtins = Builtins::load(res, &workload, &clusters, &tls_ctx, (rt, opts), &mut errors);
    // MeshConfig is the documented way; the Bootstrap's fields are its aliases.
    let mesh_cfg = mesh::parse(res, &mut warnings);
    let both = |what: &str, boot: &str, mesh: &str| {
        res.bootstrap.as_ref().map(|b| {
            b.info.error(
                boot,
                format!("{what} is set here and in MeshConfig ({mesh}); set it in one place (MeshConfig is Istio's)"),
            )
        })
    };
    let access_log = match (
        access_log(res, &mut errors),
        mesh_cfg.and_then(|m| mesh::access_log(m, &mut errors)),
    ) {
        (Some(_), Some(_)) => {
            errors.extend(both(
                "the access log",
                "spec.telemetry.accessLog",
                "accessLogFile",
            ));
            None
        }
        (a, b) => a.or(b),
    };
    // The Telemetry API, where it says anything, decides over both.
    let decided = telemetry::resolve(res, mesh_cfg, &workload, &mut errors);
    let access_log = decided.access_log.unwrap_or(access_log);
    let tracer = match (
        tracer(res, &workload, &mut errors),
        mesh_cfg.and_then(|m| mesh::tracing(m, &workload, &mut errors, &mut warnings)),
    ) {
        (Some(_), Some(_)) => {
            errors.extend(both(
                "tracing",
                "spec.telemetry.tracing",
                "defaultProviders.tracing",
            ));
            None
        }
        (a, b) => a.or(b),
    };
    let tracer = decided.tracing.unwrap_or(tracer);
    let limits = limits(res, &mut errors);
    let sidecar = sidecar_mode(res, &mut errors);
    if sidecar {
        if !by_addr.is_empty() {
            // A sidecar serves its workload's traffic; Gateways configure gateways.
            warnings.push(
                "sidecar mode: Gateway servers are ignored (they configure gateways)".to_string(),
            );
            by_addr.clear();
        }
        builtins.refuse_inbound(res, &mut errors);
    }
    let chain = builtins.chain(rt, opts, &plugins);
    let inp = GatewayInputs {
        res,
        clusters: &clusters,
        workload: &workload,
        tls_ctx: &tls_ctx,
        chain: &chain,
    };
    let mut fault_filter: Option<Arc<PluginSpec>> = None;
    let (listeners, xds_built) = all_listeners(
        &inp,
        (by_addr, servers_at),
        xds.map(|set| (set, previous, &resolver)),
        sidecar,
        &mut fault_filter,
        &mut errors,
        &mut warnings,
    );
    let probed = xds_built.probed.into_iter().collect();
    probe_chains(
        &listeners,
        &plugins,
        probed,
        previous,
        (rt, opts),
        &resolver,
        &mut errors,
    );
    errors.dedup();
    if !errors.is_empty() {
        return Err(errors);
    }
    warn_unplaced(&plugins, &listeners, &mut warnings);
    Ok(Snapshot {
        version,
        workload: workload.qualified_name(),
        listeners,
        clusters,
        rule_errors,
        refused: Vec::new(),
        plugins: plugins
            .into_iter()
            .map(|l| l.spec)
            .chain(xds_built.plugins)
            .chain(builtins.into_plugins(fault_filter))
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

/// Every listener of the snapshot: the Gateway ones (one per address), the control
/// plane's, and in sidecar mode the sidecar's own; with the mesh-wide path normalization on
/// those from the files (xDS listeners carry their own).
fn all_listeners(
    inp: &GatewayInputs<'_>,
    (by_addr, servers_at): Addresses<'_>,
    xds: Option<(
        &lateen_model::xds::XdsSet,
        Option<&Snapshot>,
        &Arc<dyn lateen_wasm::ClusterResolver>,
    )>,
    sidecar: bool,
    fault_filter: &mut Option<Arc<PluginSpec>>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> (Vec<ListenerSpec>, xds_build::Built) {
    let res = inp.res;
    let mut listeners: Vec<ListenerSpec> = by_addr
        .iter()
        .map(|(addr, gws)| {
            let servers = servers_at.get(addr).map_or(&[][..], Vec::as_slice);
            gateway_listener(inp, *addr, gws, servers, fault_filter, errors, warnings)
        })
        .collect();
    let mut xds_built = xds
        .map(|(set, previous, resolver)| {
            xds_build::listeners(
                set,
                inp.chain,
                previous,
                resolver,
                fault_filter,
                errors,
                warnings,
            )
        })
        .unwrap_or_default();
    let path = path_normalization(res, errors);
    for l in &mut listeners {
        l.path = path;
    }
    // The caller keeps the rest of what the control plane built (its plugins, its probes).
    listeners.append(&mut xds_built.listeners);
    // Checked in either mode, so a bad one is reported wherever it is loaded.
    let sc = sidecar_resource(res, inp.workload, errors);
    if sidecar {
        let side = sidecar_side(inp, sc, path, fault_filter, errors, warnings);
        listeners.extend(side);
    } else {
        warn_sidecar_resources(res, warnings);
    }
    check_gateway_refs(res, &by_addr, sidecar, errors, warnings);
    (listeners, xds_built)
}

/// The clusters of the files and of the control plane, the host aliases, and the Redis
/// URL (whose `lateen.redis` cluster joins the aliases).
fn all_clusters(
    res: &Resources,
    xds: Option<&lateen_model::xds::XdsSet>,
    tls_ctx: &TlsContext,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> (Clusters, HashMap<String, String>, Option<String>) {
    let (mut clusters, mut aliases) = build_clusters(res, tls_ctx, errors);
    if let Some(set) = xds {
        xds_build::clusters(set, &mut clusters, errors, warnings);
    }
    warn_duplicate_destination_rules(res, warnings);
    let redis_url = redis_url(res, errors);
    if redis_url.is_some() {
        aliases.insert(
            lateen_ratelimit::config::REDIS_CLUSTER.to_string(),
            lateen_ratelimit::config::REDIS_CLUSTER.to_string(),
        );
    }
    (clusters, aliases, redis_url)
}

/// Resources that configure a sidecar's inbound side, loaded in gateway mode: ignored,
/// and said so.
fn warn_sidecar_resources(res: &Resources, warnings: &mut Vec<String>) {
    if let Some(s) = res.sidecars.first() {
        warnings.push(format!(
            "{}: Sidecar resources configure sidecars (ignored in gateway mode)",
            s.info.key()
        ));
    }
    if let Some(pa) = res.peer_authentications.first() {
        warnings.push(format!(
            "{}: PeerAuthentication governs a sidecar's inbound side; a gateway's TLS is its \
             Gateway servers' (ignored in gateway mode)",
            pa.info.key()
        ));
    }
}

/// Istio's local rate-limit EnvoyFilters, for every listener of this workload, and the
/// built-in filter that serves them (loaded only when there are rules).
fn ratelimit_filter(
    res: &Resources,
    workload: &WorkloadInfo,
    rt: &Runtime,
    opts: &BuildOptions,
    errors: &mut Vec<ConfigError>,
) -> (RateLimitConfig, Option<Arc<PluginSpec>>) {
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
    (rate_limits, ratelimit_filter)
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
            load_plugin(
                &wp.info,
                &wp.spec,
                // A TrafficExtension keeps the module's fields under `spec.wasm`.
                if wp.info.kind == "TrafficExtension" {
                    "spec.wasm"
                } else {
                    "spec"
                },
                wp.info.key(),
                rt,
                opts,
            ),
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
    plugins.extend(envoy_filter_plugins(res, workload, rt, opts, errors));
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
