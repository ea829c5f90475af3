//! WasmPlugins and the built-in filters: modules, identity, selectors, recycling, placement,
//! canaries, and the metrics filter's configuration.

use super::*;

pub(super) fn probe(
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
pub(super) fn metrics_filter(
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

/// WasmPlugin `match` (Istio's `TrafficSelector`s), and `type: NETWORK` refused rather
/// than ignored.
pub(super) fn traffic(
    wp: &Doc<WasmPluginSpec>,
) -> Result<Vec<lateen_model::TrafficSelector>, ConfigError> {
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
        out.push(lateen_model::TrafficSelector {
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

pub(super) fn recycle(wp: &Doc<WasmPluginSpec>) -> Result<lateen_model::Recycle, ConfigError> {
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
    Ok(lateen_model::Recycle {
        after_requests,
        memory_bytes,
    })
}

// A Kubernetes-style binary quantity: `64Mi`, `1Gi`, `512Ki`, or bytes.
pub(super) fn parse_quantity(v: &str) -> Option<u64> {
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

pub(super) fn placement(
    wp: &Doc<WasmPluginSpec>,
) -> Result<Option<lateen_model::Placement>, ConfigError> {
    match wp.meta.annotations.get(PLACEMENT_ANNOTATION) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|e: String| {
            wp.info
                .error(&format!("metadata.annotations.{PLACEMENT_ANNOTATION}"), e)
        }),
    }
}

pub(super) fn canary(
    wp: &Doc<WasmPluginSpec>,
    rt: &Runtime,
    opts: &BuildOptions,
) -> Result<Option<Arc<lateen_model::Canary>>, ConfigError> {
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
    Ok(Some(Arc::new(lateen_model::Canary {
        spec: Arc::new(cspec),
        percent: num(a::PERCENT, 10.0)?,
        max_trap_percent: num(a::MAX_TRAP_PERCENT, 1.0)?,
        max_5xx_percent: num(a::MAX_5XX_PERCENT, 5.0)?,
        min_requests: num(a::MIN_REQUESTS, 20.0)? as u64,
        window_ms,
    })))
}

/// Loads a plugin module described at `prefix` (`spec` for a WasmPlugin,
/// `spec.servicePlugins[i]` for a service plugin) of a document.
pub(super) fn load_plugin(
    info: &DocInfo,
    s: &WasmPluginSpec,
    prefix: &str,
    name: String,
    rt: &Runtime,
    opts: &BuildOptions,
) -> Result<(PluginSpec, Bytes), ConfigError> {
    let at = |f: &str| format!("{prefix}.{f}");
    let (bytes, path, local) = plugin_bytes(info, s, prefix, opts)?;
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
        .load(&bytes)
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
    let (phase, fail) = phase_and_fail(info, s, prefix)?;
    let env = plugin_env(s);
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
            module,
            identity: Arc::new(identity),
            fail,
            phase,
            priority: s.priority.unwrap_or(0),
            canary: None,
            placement: None,
            traffic: Vec::new(),
            recycle: lateen_model::Recycle::default(),
            schema,
            xds: None,
        },
        cfg,
    ))
}

/// Loads an Envoy wasm filter (from xDS, or an EnvoyFilter patch) as a WasmPlugin would be
/// (fetch, sha256, compile, schema), with Envoy's plugin identity (root id, VM id, VM
/// configuration, environment) and fail policy. `inline`: the module itself, when the
/// filter carries its code.
pub(super) fn load_envoy_wasm(
    info: &DocInfo,
    w: &lateen_model::xds::XdsWasm,
    inline: Option<&[u8]>,
    prefix: &str,
    name: String,
    rt: &Runtime,
    opts: &BuildOptions,
) -> Result<PluginSpec, ConfigError> {
    let spec = WasmPluginSpec {
        url: if inline.is_some() {
            format!("inline:{}", w.name)
        } else {
            w.url.clone()
        },
        sha256: w.sha256.clone(),
        // Without one, Istio's default (an untagged or `latest` OCI reference is pulled).
        image_pull_policy: w.pull_policy.clone(),
        // Checked against the module's schema when it is JSON.
        plugin_config: serde_json::from_slice(&w.configuration).ok(),
        inline_code: inline.map(<[u8]>::to_vec),
        ..Default::default()
    };
    let (mut p, _) = load_plugin(info, &spec, prefix, name.clone(), rt, opts)?;
    p.fail = if w.fail_open {
        FailStrategy::Open
    } else {
        FailStrategy::Close
    };
    p.identity = Arc::new(PluginIdentity {
        name: name.clone(),
        root_id: w.root_id.clone(),
        vm_id: if w.vm_id.is_empty() {
            name
        } else {
            w.vm_id.clone()
        },
        env: w.env.clone(),
        vm_configuration: Bytes::from(w.vm_configuration.clone()),
    });
    Ok(p)
}

/// A plugin's module: fetched (http, https, oci), pushed (`pushed://NAME`) or read from a
/// file beside the document; with its path and whether it is local (a schema may sit
/// beside a local one).
fn plugin_bytes(
    info: &DocInfo,
    s: &WasmPluginSpec,
    prefix: &str,
    opts: &BuildOptions,
) -> Result<(Vec<u8>, PathBuf, bool), ConfigError> {
    let at = |f: &str| format!("{prefix}.{f}");
    if let Some(code) = &s.inline_code {
        return Ok((code.clone(), PathBuf::from(&s.url), false));
    }
    let remote_url = ["http://", "https://", "oci://"]
        .iter()
        .any(|p| s.url.starts_with(p));
    if remote_url {
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
        Ok((bytes, PathBuf::from(&s.url), false))
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
        Ok((bytes, path, true))
    } else {
        let path = plugin_path(&s.url, &info.file).map_err(|m| info.error(&at("url"), m))?;
        let bytes = std::fs::read(&path)
            .map_err(|e| info.error(&at("url"), format!("cannot read {}: {e}", path.display())))?;
        Ok((bytes, path, true))
    }
}

/// `phase` and `failStrategy`.
fn phase_and_fail(
    info: &DocInfo,
    s: &WasmPluginSpec,
    prefix: &str,
) -> Result<(Phase, FailStrategy), ConfigError> {
    let at = |f: &str| format!("{prefix}.{f}");
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
    Ok((phase, fail))
}

/// `vmConfig.env`: literal values, or the host's (`valueFrom: HOST`).
fn plugin_env(s: &WasmPluginSpec) -> Vec<(String, String)> {
    s.vm_config
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
        .unwrap_or_default()
}

// Whether an oci:// reference names a tag or digest (else it means `latest`).
pub(super) fn oci_has_tag(url: &str) -> bool {
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
pub(super) fn plugin_path(url: &str, yaml: &Path) -> Result<PathBuf, String> {
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

pub(super) fn load_router(rt: &Runtime, dir: &Path) -> Result<Arc<PluginSpec>, ConfigError> {
    load_builtin(rt, dir, "router", Phase::Router)
}

/// Loads a built-in filter (`lateen_<name>.wasm`) from the filters directory.
pub(super) fn load_builtin(
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
    let module = rt.load(&bytes).map_err(|e| err(e.to_string()))?;
    let schema = schema::find(&bytes, None).map_err(err)?.map(Arc::new);
    let full = format!("lateen/{name}");
    Ok(Arc::new(PluginSpec {
        name: full.clone(),
        url: format!("file://{}", path.display()),
        module,
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
        recycle: lateen_model::Recycle::default(),
        schema,
        xds: None,
    }))
}

/// Runs every plugin's on_configure once per distinct configuration, off the request path
/// (a plugin on several listeners with the same config is probed once; `probed` holds
/// those already probed, by xDS).
pub(super) fn probe_chains(
    listeners: &[ListenerSpec],
    plugins: &[Loaded],
    mut probed: BTreeSet<(*const PluginSpec, Bytes)>,
    previous: Option<&Snapshot>,
    (rt, opts): (&Runtime, &BuildOptions),
    resolver: &Arc<dyn lateen_wasm::ClusterResolver>,
    errors: &mut Vec<ConfigError>,
) {
    for listener in listeners {
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
}

/// A scope that takes no listener is almost always a mistake (a wrong port): say so.
pub(super) fn warn_unplaced(
    plugins: &[Loaded],
    listeners: &[ListenerSpec],
    warnings: &mut Vec<String>,
) {
    for Loaded {
        spec: p,
        info,
        gateways,
        ..
    } in plugins
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
}
