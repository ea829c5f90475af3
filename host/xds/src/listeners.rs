//! Listener: the HTTP connection manager (path normalization, its route configuration
//! by RDS) and its HTTP filters: wasm (inline or an extension config, ECDS) and the router.

use super::*;

/// LDS.
// `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action` as the one of
// Istio's four normalizations they spell (istiod renders its `pathNormalization` so).
pub(crate) fn path_normalization(hcm: &HttpConnectionManager) -> Result<PathNormalization, String> {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::PathWithEscapedSlashesAction as Action;
    let normalize = hcm.normalize_path.as_ref().is_some_and(|b| b.value);
    let unescape = match Action::try_from(hcm.path_with_escaped_slashes_action) {
        Ok(Action::ImplementationSpecificDefault | Action::KeepUnchanged) => false,
        Ok(Action::UnescapeAndForward) => true,
        _ => {
            return Err(format!(
                "path_with_escaped_slashes_action: {} is not supported by Lateen \
                 (KEEP_UNCHANGED or UNESCAPE_AND_FORWARD)",
                hcm.path_with_escaped_slashes_action
            ))
        }
    };
    Ok(match (normalize, hcm.merge_slashes, unescape) {
        (false, false, false) => PathNormalization::None,
        (true, false, false) => PathNormalization::Base,
        (true, true, false) => PathNormalization::MergeSlashes,
        (true, true, true) => PathNormalization::DecodeAndMergeSlashes,
        _ => {
            return Err(
                "normalize_path: Lateen normalizes as Istio's NONE, BASE (normalize_path), \
                 MERGE_SLASHES (and merge_slashes) or DECODE_AND_MERGE_SLASHES (and \
                 UNESCAPE_AND_FORWARD); this combination is none of them"
                    .into(),
            )
        }
    })
}

pub fn listener(any: &Any) -> Result<XdsListener, String> {
    let mut l: Listener = unpack(any)?;
    let at = format!("Listener `{}`", l.name);
    only!(
        &mut l,
        at,
        [name, address, filter_chains, stat_prefix, traffic_direction]
    );
    let (host, port) = socket_addr(l.address.as_mut(), &format!("{at}: address"))?;
    let ip = host
        .parse()
        .map_err(|_| format!("{at}: address: `{host}` is not an IP address"))?;
    let [chain] = l.filter_chains.as_mut_slice() else {
        return Err(format!(
            "{at}: filter_chains: expected exactly one filter chain, got {}",
            l.filter_chains.len()
        ));
    };
    let cat = format!("{at}: filter_chains[0]");
    only!(chain, cat, [filters, name]);
    let [f] = chain.filters.as_mut_slice() else {
        return Err(format!(
            "{cat}.filters: expected one HTTP connection manager, got {} filters",
            chain.filters.len()
        ));
    };
    let fat = format!("{cat}.filters[0]");
    let Some(filter::ConfigType::TypedConfig(tc)) = &f.config_type else {
        return Err(format!("{fat}: expected a typed_config"));
    };
    let mut hcm: HttpConnectionManager = unpack(tc).map_err(|e| format!("{fat}: {e}"))?;
    only!(
        &mut hcm,
        fat,
        [
            stat_prefix,
            route_specifier,
            http_filters,
            codec_type,
            normalize_path,
            merge_slashes,
            path_with_escaped_slashes_action
        ]
    );
    let path = path_normalization(&hcm).map_err(|e| format!("{fat}.{e}"))?;
    // AUTO, HTTP1 and HTTP2: Lateen's listeners detect HTTP/1.1 and h2c themselves.
    if hcm.codec_type == 3 {
        return Err(format!(
            "{fat}.codec_type: HTTP3 is not supported by Lateen"
        ));
    }
    let routes = match &mut hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            ads_or_unset(rds.config_source.as_ref(), &format!("{fat}.rds"))?;
            Routes::Rds(rds.route_config_name.clone())
        }
        Some(RouteSpecifier::RouteConfig(rc)) => Routes::Inline(Arc::new(
            route_config_of(rc).map_err(|e| format!("{fat}.route_config{e}"))?,
        )),
        _ => return Err(format!("{fat}: expected rds or route_config")),
    };
    let filters = http_filters(&mut hcm.http_filters, &fat)?;
    Ok(XdsListener {
        name: l.name,
        addr: SocketAddr::new(ip, port),
        routes,
        filters,
        path,
    })
}

/// The HTTP filters of a connection manager: wasm filters (inline or by ECDS), then the
/// router, which must come last.
fn http_filters(
    hfs: &mut [envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter],
    fat: &str,
) -> Result<Vec<HttpFilter>, String> {
    let mut filters = Vec::new();
    let n = hfs.len();
    for (i, hf) in hfs.iter_mut().enumerate() {
        let hat = format!("{fat}.http_filters[{i}] `{}`", hf.name);
        only!(hf, hat, [name, config_type, is_optional]);
        let last = i + 1 == n;
        match &hf.config_type {
            Some(http_filter::ConfigType::TypedConfig(tc)) if tc.type_url == Router::type_url() => {
                if !last {
                    return Err(format!("{hat}: the router must be the last HTTP filter"));
                }
            }
            Some(http_filter::ConfigType::TypedConfig(tc)) if tc.type_url == Wasm::type_url() => {
                filters.push(HttpFilter::Wasm(Arc::new(
                    wasm(&hf.name, tc).map_err(|e| format!("{hat}: {e}"))?,
                )));
            }
            Some(http_filter::ConfigType::TypedConfig(tc)) => {
                return Err(format!(
                    "{hat}: filter type `{}` is not supported; Lateen runs \
                     envoy.extensions.filters.http.wasm.v3.Wasm and the router",
                    tc.type_url
                ))
            }
            Some(http_filter::ConfigType::ConfigDiscovery(d)) => {
                ads_or_unset(d.config_source.as_ref(), &format!("{hat}.config_discovery"))?;
                if d.default_config.is_some() {
                    return Err(format!(
                        "{hat}.config_discovery.default_config: not supported by Lateen"
                    ));
                }
                if !d.type_urls.iter().any(|t| *t == Wasm::type_url())
                    || !d
                        .type_urls
                        .iter()
                        .all(|t| *t == Wasm::type_url() || t == RBAC_TYPE)
                {
                    return Err(format!(
                        "{hat}.config_discovery.type_urls: must name {} (and may name \
                         RBAC, as istiod does)",
                        Wasm::type_url()
                    ));
                }
                filters.push(HttpFilter::Discovered {
                    name: hf.name.clone(),
                    optional: hf.is_optional,
                });
            }
            None => return Err(format!("{hat}: no configuration")),
        }
        if last
            && !matches!(&hf.config_type,
                Some(http_filter::ConfigType::TypedConfig(tc)) if tc.type_url == Router::type_url())
        {
            return Err(format!(
                "{hat}: the last HTTP filter must be envoy.filters.http.router"
            ));
        }
    }
    if n == 0 {
        return Err(format!(
            "{fat}.http_filters: empty; the last HTTP filter must be the router"
        ));
    }
    Ok(filters)
}

/// ECDS.
pub fn extension(any: &Any) -> Result<XdsWasm, String> {
    let tec: TypedExtensionConfig = unpack(any)?;
    let at = format!("TypedExtensionConfig `{}`", tec.name);
    let tc = tec
        .typed_config
        .as_ref()
        .ok_or_else(|| format!("{at}: no typed_config"))?;
    if tc.type_url == RBAC_TYPE {
        return Err(format!(
            "{at}: an RBAC filter config (istio-agent's stand-in for a module it could not \
             fetch) is not supported; Lateen fetches modules itself, so send the Wasm config"
        ));
    }
    wasm(&tec.name, tc).map_err(|e| format!("{at}: {e}"))
}

/// The HTTP RBAC filter, which istiod lists beside Wasm in every WasmPlugin's ECDS
/// `type_urls` (istio-agent stands it in for a module it could not fetch).
pub(crate) const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";

/// What istiod tells istio-agent in a wasm VM's environment; the agent strips them before
/// Envoy sees the config, and so does Lateen, which does the agent's part itself.
pub(crate) const PULL_SECRET_ENV: &str = "ISTIO_META_WASM_IMAGE_PULL_SECRET";
pub(crate) const RESOURCE_VERSION_ENV: &str = "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION";

pub(crate) fn string_value(any: Option<&Any>) -> Result<Vec<u8>, String> {
    let Some(any) = any else {
        return Ok(Vec::new());
    };
    // istiod sends an empty Any for a WasmPlugin without pluginConfig.
    if any.type_url.is_empty() && any.value.is_empty() {
        return Ok(Vec::new());
    }
    if any.type_url == StringValue::type_url() {
        return Ok(StringValue::decode(any.value.as_slice())
            .map_err(|e| format!("cannot decode StringValue: {e}"))?
            .value
            .into_bytes());
    }
    Err(format!(
        "configuration: `{}` is not supported; pass a google.protobuf.StringValue (Istio's \
         form, usually JSON)",
        any.type_url
    ))
}

pub(crate) fn wasm(name: &str, any: &Any) -> Result<XdsWasm, String> {
    let w: Wasm = unpack(any)?;
    let mut pc = w.config.ok_or("config: missing")?;
    only!(
        &mut pc,
        "config",
        [name, root_id, configuration, fail_open, failure_policy, vm]
    );
    let Some(plugin_config::Vm::VmConfig(vm)) = &mut pc.vm else {
        return Err("config.vm_config: missing".into());
    };
    only!(
        vm,
        "config.vm_config",
        [
            vm_id,
            runtime,
            code,
            configuration,
            environment_variables,
            allow_precompiled
        ]
    );
    if !matches!(
        vm.runtime.as_str(),
        "" | "envoy.wasm.runtime.v8" | "envoy.wasm.runtime.wasmtime"
    ) {
        return Err(format!(
            "config.vm_config.runtime: `{}` is not a wasm runtime Lateen stands in for",
            vm.runtime
        ));
    }
    let (url, sha256) = match vm.code.as_ref().and_then(|c| c.specifier.as_ref()) {
        Some(async_data_source::Specifier::Local(DataSource {
            specifier: Some(data_source::Specifier::Filename(f)),
            ..
        })) => (format!("file://{f}"), None),
        Some(async_data_source::Specifier::Remote(r)) => {
            let uri = r
                .http_uri
                .as_ref()
                .map(|u| u.uri.clone())
                .unwrap_or_default();
            let oci = uri.starts_with("oci://");
            if !(oci || uri.starts_with("http://") || uri.starts_with("https://")) {
                return Err(format!(
                    "config.vm_config.code.remote.http_uri: `{uri}` is not an http(s) or oci URL"
                ));
            }
            // An OCI reference pins its module by tag or digest (istiod passes the
            // WasmPlugin's optional sha256 as it is); an http(s) one needs the sha256, as
            // in Envoy.
            match (r.sha256.is_empty(), oci) {
                (true, true) => (uri, None),
                (true, false) => {
                    return Err(
                        "config.vm_config.code.remote.sha256: required for an http(s) module"
                            .into(),
                    )
                }
                (false, _) => (uri, Some(r.sha256.clone())),
            }
        }
        _ => {
            return Err("config.vm_config.code: expected local.filename or remote.http_uri".into())
        }
    };
    let mut env = vm
        .environment_variables
        .as_ref()
        .map(|e| {
            let mut env: Vec<(String, String)> = e.key_values.clone().into_iter().collect();
            for k in &e.host_env_keys {
                env.push((k.clone(), std::env::var(k).unwrap_or_default()));
            }
            env.sort();
            env
        })
        .unwrap_or_default();
    let fail_open = pc.fail_open || pc.failure_policy == FailurePolicy::FailOpen as i32;
    // istiod carries the WasmPlugin's imagePullPolicy and resource version in the VM's
    // environment, for the agent; the plugin does not see them.
    let take = |env: &mut Vec<(String, String)>, key: &str| {
        let i = env.iter().position(|(k, _)| k == key)?;
        Some(env.remove(i).1)
    };
    let pull_policy = take(&mut env, PULL_POLICY_ENV);
    let resource_version = take(&mut env, RESOURCE_VERSION_ENV);
    if take(&mut env, PULL_SECRET_ENV).is_some() {
        return Err(format!(
            "config.vm_config.environment_variables.{PULL_SECRET_ENV}: image pull secrets \
             are not supported over xDS yet (Lateen pulls anonymously)"
        ));
    }
    Ok(XdsWasm {
        pull_policy,
        resource_version,
        name: name.to_string(),
        root_id: pc.root_id.clone(),
        vm_id: vm.vm_id.clone(),
        url,
        sha256,
        configuration: string_value(pc.configuration.as_ref())
            .map_err(|e| format!("config.{e}"))?,
        vm_configuration: string_value(vm.configuration.as_ref())
            .map_err(|e| format!("config.vm_config.{e}"))?,
        env,
        fail_open,
    })
}
