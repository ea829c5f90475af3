//! xDS resources → Lateen's own model. The ADS client (`crate::xds`) decodes what a control
//! plane pushes with these functions, keeps the result in an [`XdsSet`], and `compile`
//! builds the snapshot from it beside the YAML resources. Nothing here touches a socket.
//!
//! The subset is documented in `docs/xds.md`. A resource that sets a field outside it is
//! refused with the field's name (the client NACKs it); nothing is silently ignored.

// Control planes still send the deprecated forms (`exact_match`, `fail_open`,
// `http2_protocol_options`), so they are read like their replacements.
#![allow(deprecated)]

use super::compile::retry_property;
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    address, async_data_source, config_source, data_source, header_value_option, socket_address,
    Address, ConfigSource, DataSource, HeaderValueOption, HealthStatus, TypedExtensionConfig,
};
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action, route, route_action, route_match::PathSpecifier, HeaderMatcher,
    RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::wasm::v3::{plugin_config, FailurePolicy};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::{Any, StringValue};
use lateen_core::path::PathNormalization;
use lateen_model::cluster::LbPolicy;
use lateen_model::xds::{
    ClusterEndpoints, HttpFilter, Routes, XdsCluster, XdsEndpoint, XdsListener, XdsWasm,
    PULL_POLICY_ENV,
};
use lateen_router::table::{RouteConfig, VirtualHostConfig, WeightedCluster};
use lateen_sdk::istio::{
    HeaderOperations, Headers, HttpBody, HttpDirectResponse, HttpMatchRequest, HttpRedirect,
    HttpRetry, HttpRewrite, StringMatch,
};
use lateen_sdk::route::DEFAULT_RETRY_ON;
use prost::{Message, Name};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const EXTENSION: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// Every type Lateen subscribes to, in the order Envoy does (clusters before listeners).
pub const TYPES: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, EXTENSION];

/// Short name of a type URL (`Cluster`), for logs and errors.
pub fn short(type_url: &str) -> &str {
    type_url.rsplit('.').next().unwrap_or(type_url)
}

/// The ADS client's settings, resolved from the Bootstrap's `xds`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// `host:port`.
    pub address: String,
    pub node_id: String,
    pub node_cluster: String,
    /// Node metadata (ISTIO_VERSION, CLUSTER_ID, NAMESPACE, INSTANCE_IPS, LABELS, NAME, ...).
    pub metadata: BTreeMap<String, serde_json::Value>,
    pub initial_fetch_timeout: std::time::Duration,
}

/// The ADS client's settings, when the Bootstrap names a control plane.
pub fn client_config(
    res: &super::compile::Resources,
) -> Result<Option<ClientConfig>, super::ConfigError> {
    let Some(b) = &res.bootstrap else {
        return Ok(None);
    };
    let Some(x) = &b.spec.xds else {
        return Ok(None);
    };
    let (host, port) = x.address.rsplit_once(':').unwrap_or((&x.address, ""));
    if host.is_empty() || port.parse::<u16>().is_err() || x.address.contains("://") {
        return Err(b.info.error("spec.xds.address", "expected host:port"));
    }
    let n = &x.node;
    let w = b.spec.workload.clone().unwrap_or_default();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let name = w
        .name
        .or_else(|| env("POD_NAME"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "lateen".into());
    let ns = w
        .namespace
        .or_else(|| env("POD_NAMESPACE"))
        .unwrap_or_else(|| "default".into());
    let sidecar = b.spec.mode.as_deref() == Some("sidecar");
    let node_type = n
        .node_type
        .clone()
        .unwrap_or_else(|| if sidecar { "sidecar" } else { "router" }.into());
    if !matches!(node_type.as_str(), "router" | "sidecar") {
        return Err(b.info.error(
            "spec.xds.node.type",
            format!("`{node_type}`: expected router or sidecar"),
        ));
    }
    let ip =
        n.ip.clone()
            .or_else(|| env("INSTANCE_IP"))
            .unwrap_or_else(|| "127.0.0.1".into());
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(b
            .info
            .error("spec.xds.node.ip", format!("`{ip}` is not an IP address")));
    }
    let domain = n.domain.clone().unwrap_or_else(|| "cluster.local".into());
    let node_id =
        n.id.clone()
            .unwrap_or_else(|| format!("{node_type}~{ip}~{name}.{ns}~{ns}.svc.{domain}"));
    if node_id.split('~').count() != 4 {
        return Err(b.info.error(
            "spec.xds.node.id",
            format!("`{node_id}`: istiod expects TYPE~IP~ID~DOMAIN"),
        ));
    }
    let initial_fetch_timeout = match &x.initial_fetch_timeout {
        None => std::time::Duration::from_secs(15),
        Some(t) => std::time::Duration::from_millis(
            super::compile::parse_duration_ms(t).ok_or_else(|| {
                b.info.error(
                    "spec.xds.initialFetchTimeout",
                    format!("`{t}` is not a duration"),
                )
            })?,
        ),
    };
    let mut metadata: BTreeMap<String, serde_json::Value> = BTreeMap::from([
        (
            "ISTIO_VERSION".into(),
            n.istio_version
                .clone()
                .unwrap_or_else(|| "1.24.0".into())
                .into(),
        ),
        (
            "CLUSTER_ID".into(),
            n.cluster_id
                .clone()
                .unwrap_or_else(|| "Kubernetes".into())
                .into(),
        ),
        ("NAMESPACE".into(), ns.clone().into()),
        // istiod reads INSTANCE_IPS as one comma-separated string.
        ("INSTANCE_IPS".into(), ip.clone().into()),
        ("LABELS".into(), serde_json::json!(w.labels)),
        ("NAME".into(), name.clone().into()),
    ]);
    metadata.extend(n.metadata.clone());
    Ok(Some(ClientConfig {
        address: x.address.clone(),
        node_id,
        node_cluster: n.cluster.clone().unwrap_or_else(|| format!("{name}.{ns}")),
        metadata,
        initial_fetch_timeout,
    }))
}

/// Decodes an `Any` of type `T`.
fn unpack<T: Message + Name + Default>(any: &Any) -> Result<T, String> {
    if any.type_url != T::type_url() {
        return Err(format!(
            "expected a {}, got `{}`",
            T::full_name(),
            any.type_url
        ));
    }
    T::decode(any.value.as_slice()).map_err(|e| format!("cannot decode {}: {e}", T::full_name()))
}

/// The resource's name, to key the set by (and to name it in a NACK).
pub fn resource_name(type_url: &str, any: &Any) -> Option<String> {
    Some(match type_url {
        LISTENER => unpack::<Listener>(any).ok()?.name,
        ROUTE => unpack::<RouteConfiguration>(any).ok()?.name,
        CLUSTER => unpack::<Cluster>(any).ok()?.name,
        ENDPOINT => unpack::<ClusterLoadAssignment>(any).ok()?.cluster_name,
        EXTENSION => unpack::<TypedExtensionConfig>(any).ok()?.name,
        _ => return None,
    })
}

/// Names the fields of a prost message that are not at their defaults, from its `Debug`
/// form (prost has no reflection). Used on a copy whose supported fields were cleared.
fn set_fields<T: Debug + Default + PartialEq>(rest: &T) -> Option<String> {
    if *rest == T::default() {
        return None;
    }
    let text = format!("{rest:?}");
    let body = text
        .find('{')
        .map_or("", |i| text[i + 1..].trim_end_matches('}'));
    // Split the top level on `, ` outside brackets and strings.
    let (mut depth, mut quoted, mut escaped, mut start) = (0i32, false, false, 0);
    let mut parts = Vec::new();
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '{' | '[' | '(' if !quoted => depth += 1,
            '}' | ']' | ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    let names: Vec<&str> = parts
        .iter()
        .filter_map(|p| p.split_once(": "))
        .filter(|(_, v)| !matches!(v.trim(), "\"\"" | "None" | "[]" | "{}" | "0" | "false"))
        .map(|(k, _)| k.trim().trim_start_matches("r#"))
        .collect();
    Some(if names.is_empty() {
        "an unknown field".into()
    } else {
        names.join(", ")
    })
}

/// Refuses a message (`&mut`) that sets anything but the named fields. The named fields
/// are taken out for the check and put back, so a large message is never copied.
macro_rules! only {
    ($msg:expr, $at:expr, [$($field:ident),* $(,)?]) => {{
        let rest = {
            let msg = &mut *$msg;
            $( let $field = std::mem::take(&mut msg.$field); )*
            let rest = set_fields(&*msg);
            $( msg.$field = $field; )*
            rest
        };
        if let Some(f) = rest {
            return Err(format!("{}: not supported by Lateen: {f}", $at));
        }
    }};
}

fn ads_or_unset(cs: Option<&ConfigSource>, at: &str) -> Result<(), String> {
    match cs.and_then(|c| c.config_source_specifier.as_ref()) {
        None | Some(config_source::ConfigSourceSpecifier::Ads(_)) => Ok(()),
        Some(_) => Err(format!(
            "{at}: only `ads: {{}}` config sources are supported (everything comes over the \
             one ADS stream)"
        )),
    }
}

fn duration_ms(d: &envoy_types::pb::google::protobuf::Duration) -> u64 {
    let ms = d.seconds.max(0) as u64 * 1000 + (d.nanos.max(0) as u64).div_ceil(1_000_000);
    ms.max(u64::from(d.seconds > 0 || d.nanos > 0))
}

fn socket_addr(a: Option<&mut Address>, at: &str) -> Result<(String, u16), String> {
    let Some(address::Address::SocketAddress(sa)) = a.and_then(|a| a.address.as_mut()) else {
        return Err(format!("{at}: expected a socket_address"));
    };
    only!(sa, at, [address, port_specifier, protocol]);
    if sa.protocol != 0 {
        return Err(format!("{at}.protocol: only TCP is supported"));
    }
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => {
            u16::try_from(p).map_err(|_| format!("{at}.port_value: {p} is not a port"))?
        }
        _ => return Err(format!("{at}: expected port_value")),
    };
    Ok((sa.address.clone(), port))
}

/// LDS.
// `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action` as the one of
// Istio's four normalizations they spell (istiod renders its `pathNormalization` so).
fn path_normalization(hcm: &HttpConnectionManager) -> Result<PathNormalization, String> {
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
    let mut filters = Vec::new();
    let n = hcm.http_filters.len();
    for (i, hf) in hcm.http_filters.iter_mut().enumerate() {
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
    Ok(XdsListener {
        name: l.name,
        addr: SocketAddr::new(ip, port),
        routes,
        filters,
        path,
    })
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
const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";

/// What istiod tells istio-agent in a wasm VM's environment; the agent strips them before
/// Envoy sees the config, and so does Lateen, which does the agent's part itself.
const PULL_SECRET_ENV: &str = "ISTIO_META_WASM_IMAGE_PULL_SECRET";
const RESOURCE_VERSION_ENV: &str = "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION";

fn string_value(any: Option<&Any>) -> Result<Vec<u8>, String> {
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

fn wasm(name: &str, any: &Any) -> Result<XdsWasm, String> {
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

/// RDS.
pub fn route_configuration(any: &Any) -> Result<Vec<VirtualHostConfig>, String> {
    let mut rc: RouteConfiguration = unpack(any)?;
    route_config_of(&mut rc).map_err(|e| format!("RouteConfiguration `{}`{e}", rc.name))
}

fn route_config_of(rc: &mut RouteConfiguration) -> Result<Vec<VirtualHostConfig>, String> {
    only!(rc, "", [name, virtual_hosts, validate_clusters]);
    if rc.validate_clusters.as_ref().is_some_and(|v| v.value) {
        return Err(
            ": validate_clusters: true is not supported by Lateen (a route to a \
                    missing cluster answers 503 at request time)"
                .into(),
        );
    }
    let mut out = Vec::with_capacity(rc.virtual_hosts.len());
    for (vi, vh) in rc.virtual_hosts.iter_mut().enumerate() {
        let at = format!(": virtual_hosts[{vi}] `{}`", vh.name);
        only!(vh, at, [name, domains, routes]);
        if vh.domains.is_empty() {
            return Err(format!("{at}.domains: empty"));
        }
        let mut routes = Vec::with_capacity(vh.routes.len());
        for (ri, r) in vh.routes.iter_mut().enumerate() {
            let rat = format!("{at}.routes[{ri}]");
            let mut route = xds_route(r).map_err(|e| format!("{rat}{e}"))?;
            route.id = format!("xds:{}/{}#{ri}", rc.name, vh.name);
            routes.push(route);
        }
        out.push(VirtualHostConfig {
            name: vh.name.clone(),
            // Envoy matches `host:port` domains too; Lateen's router compares the host with
            // its port stripped, so a port in a domain is dropped here.
            domains: vh
                .domains
                .iter()
                .map(|d| match d.rsplit_once(':') {
                    Some((h, p)) if p.parse::<u16>().is_ok() && !h.ends_with(']') => h.into(),
                    _ => d.clone(),
                })
                .collect(),
            routes,
        });
    }
    Ok(out)
}

fn string_matcher(m: &mut StringMatcher, at: &str) -> Result<StringMatch, String> {
    only!(m, at, [match_pattern, ignore_case]);
    let case = |s: &str| {
        if m.ignore_case {
            format!("(?i){s}")
        } else {
            s.to_string()
        }
    };
    let exact_or = |s: &str, regex: String| -> StringMatch {
        if m.ignore_case {
            StringMatch {
                regex: Some(regex),
                ..Default::default()
            }
        } else {
            StringMatch {
                exact: Some(s.to_string()),
                ..Default::default()
            }
        }
    };
    Ok(match &m.match_pattern {
        Some(MatchPattern::Exact(s)) => exact_or(s, case(&regex::escape(s))),
        Some(MatchPattern::Prefix(s)) if !m.ignore_case => StringMatch {
            prefix: Some(s.clone()),
            ..Default::default()
        },
        Some(MatchPattern::Prefix(s)) => regex_match(case(&format!("{}.*", regex::escape(s)))),
        Some(MatchPattern::Suffix(s)) => regex_match(case(&format!(".*{}", regex::escape(s)))),
        Some(MatchPattern::Contains(s)) => regex_match(case(&format!(".*{}.*", regex::escape(s)))),
        Some(MatchPattern::SafeRegex(r)) => regex_match(case(&r.regex)),
        _ => {
            return Err(format!(
                "{at}: expected exact, prefix, suffix, contains or safe_regex"
            ))
        }
    })
}

fn regex_match(r: String) -> StringMatch {
    // `(?s)` so that `.` spans any byte a header value may hold.
    StringMatch {
        regex: Some(format!("(?s){r}")),
        ..Default::default()
    }
}

/// A header matcher: into `headers` or (inverted) `without_headers`.
fn header_matcher(h: &mut HeaderMatcher, m: &mut HttpMatchRequest, at: &str) -> Result<(), String> {
    only!(h, at, [name, invert_match, header_match_specifier]);
    let name = h.name.to_ascii_lowercase();
    let (sm, mut invert) = match &mut h.header_match_specifier {
        Some(HeaderMatchSpecifier::ExactMatch(s)) => (
            StringMatch {
                exact: Some(s.clone()),
                ..Default::default()
            },
            false,
        ),
        Some(HeaderMatchSpecifier::PrefixMatch(s)) => (
            StringMatch {
                prefix: Some(s.clone()),
                ..Default::default()
            },
            false,
        ),
        Some(HeaderMatchSpecifier::SuffixMatch(s)) => {
            (regex_match(format!(".*{}", regex::escape(s))), false)
        }
        Some(HeaderMatchSpecifier::ContainsMatch(s)) => {
            (regex_match(format!(".*{}.*", regex::escape(s))), false)
        }
        Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => (regex_match(r.regex.clone()), false),
        Some(HeaderMatchSpecifier::StringMatch(s)) => {
            (string_matcher(s, &format!("{at}.string_match"))?, false)
        }
        // present_match: false means "absent"; no specifier means "present".
        Some(HeaderMatchSpecifier::PresentMatch(p)) => (StringMatch::default(), !*p),
        None => (StringMatch::default(), false),
        Some(HeaderMatchSpecifier::RangeMatch(_)) => {
            return Err(format!("{at}: range_match is not supported by Lateen"))
        }
    };
    invert ^= h.invert_match;
    let into = if invert {
        &mut m.without_headers
    } else {
        &mut m.headers
    };
    if into.insert(name, sm).is_some() {
        return Err(format!(
            "{at}: `{}` is matched twice in one route; Lateen keeps one condition per header",
            h.name
        ));
    }
    Ok(())
}

fn xds_route(
    r: &mut envoy_types::pb::envoy::config::route::v3::Route,
) -> Result<RouteConfig, String> {
    only!(
        r,
        "",
        [
            name,
            r#match,
            action,
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
        ]
    );
    let rm = r.r#match.as_mut().ok_or(".match: missing")?;
    only!(
        rm,
        ".match",
        [path_specifier, case_sensitive, headers, query_parameters]
    );
    let mut m = HttpMatchRequest {
        ignore_uri_case: rm.case_sensitive.as_ref().is_some_and(|c| !c.value),
        ..Default::default()
    };
    m.uri = Some(match &rm.path_specifier {
        Some(PathSpecifier::Prefix(p)) => StringMatch {
            prefix: Some(p.clone()),
            ..Default::default()
        },
        Some(PathSpecifier::Path(p)) => StringMatch {
            exact: Some(p.clone()),
            ..Default::default()
        },
        Some(PathSpecifier::SafeRegex(re)) => StringMatch {
            regex: Some(re.regex.clone()),
            ..Default::default()
        },
        _ => {
            return Err(
                ".match: expected prefix, path or safe_regex (others are not supported)".into(),
            )
        }
    });
    if m.uri
        .as_ref()
        .is_some_and(|u| u.prefix.as_deref() == Some(""))
    {
        m.uri = None;
    }
    for (i, h) in rm.headers.iter_mut().enumerate() {
        header_matcher(h, &mut m, &format!(".match.headers[{i}]"))?;
    }
    for (i, q) in rm.query_parameters.iter_mut().enumerate() {
        let at = format!(".match.query_parameters[{i}]");
        let sm = match &mut q.query_parameter_match_specifier {
            Some(QueryParameterMatchSpecifier::StringMatch(s)) => string_matcher(s, &at)?,
            Some(QueryParameterMatchSpecifier::PresentMatch(true)) => StringMatch::default(),
            _ => {
                return Err(format!(
                    "{at}: expected string_match or present_match: true"
                ))
            }
        };
        m.query_params.insert(q.name.clone(), sm);
    }
    let mut rc = RouteConfig {
        name: r.name.clone(),
        matches: vec![m],
        headers: header_ops(r)?,
        ..Default::default()
    };
    match &mut r.action {
        Some(route::Action::Route(a)) => route_action(a, &mut rc)?,
        Some(route::Action::Redirect(red)) => {
            only!(
                red,
                ".redirect",
                [
                    host_redirect,
                    port_redirect,
                    response_code,
                    scheme_rewrite_specifier,
                    path_rewrite_specifier
                ]
            );
            let code = match red.response_code {
                0 => 301,
                1 => 302,
                2 => 303,
                3 => 307,
                4 => 308,
                c => return Err(format!(".redirect.response_code: unknown code {c}")),
            };
            let uri = match &red.path_rewrite_specifier {
                None => None,
                Some(redirect_action::PathRewriteSpecifier::PathRedirect(p)) => Some(p.clone()),
                Some(_) => {
                    return Err(".redirect: only path_redirect rewrites the path in Lateen".into())
                }
            };
            rc.redirect = Some(HttpRedirect {
                uri,
                authority: (!red.host_redirect.is_empty()).then(|| red.host_redirect.clone()),
                port: (red.port_redirect != 0).then_some(red.port_redirect),
                derive_port: None,
                scheme: match &red.scheme_rewrite_specifier {
                    Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)) => {
                        Some("https".into())
                    }
                    Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s)) => {
                        Some(s.clone())
                    }
                    _ => None,
                },
                redirect_code: Some(code),
            });
        }
        Some(route::Action::DirectResponse(d)) => {
            only!(d, ".direct_response", [status, body]);
            let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                None => None,
                Some(data_source::Specifier::InlineString(s)) => Some(s.clone()),
                Some(data_source::Specifier::InlineBytes(b)) => {
                    Some(String::from_utf8_lossy(b).into_owned())
                }
                Some(_) => {
                    return Err(
                        ".direct_response.body: expected inline_string or inline_bytes".into(),
                    )
                }
            };
            rc.direct_response = Some(HttpDirectResponse {
                status: d.status,
                body: body.map(|s| HttpBody {
                    string: Some(s),
                    bytes: None,
                }),
            });
        }
        _ => return Err(": expected route, redirect or direct_response".into()),
    }
    Ok(rc)
}

fn route_action(
    a: &mut envoy_types::pb::envoy::config::route::v3::RouteAction,
    rc: &mut RouteConfig,
) -> Result<(), String> {
    only!(
        a,
        ".route",
        [
            cluster_specifier,
            timeout,
            retry_policy,
            prefix_rewrite,
            host_rewrite_specifier
        ]
    );
    rc.route = match &mut a.cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => vec![WeightedCluster {
            cluster: c.clone(),
            weight: 1,
            headers: None,
        }],
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
            only!(w, ".route.weighted_clusters", [clusters, total_weight]);
            let mut out = Vec::new();
            for (i, cw) in w.clusters.iter_mut().enumerate() {
                only!(
                    cw,
                    format!(".route.weighted_clusters.clusters[{i}]"),
                    [name, weight]
                );
                out.push(WeightedCluster {
                    cluster: cw.name.clone(),
                    weight: cw.weight.as_ref().map_or(0, |w| w.value),
                    headers: None,
                });
            }
            if out.iter().all(|w| w.weight == 0) {
                return Err(".route.weighted_clusters: every weight is 0".into());
            }
            out
        }
        _ => return Err(".route: expected cluster or weighted_clusters".into()),
    };
    // Envoy's route timeout is 15 s when unset; 0 disables it.
    rc.timeout_ms = a.timeout.as_ref().map_or(15_000, duration_ms);
    // No retry policy: Envoy does not retry (Istio's 2 attempts come from istiod).
    let retry = match &mut a.retry_policy {
        None => HttpRetry {
            attempts: Some(0),
            ..Default::default()
        },
        Some(p) => {
            only!(
                p,
                ".route.retry_policy",
                [
                    retry_on,
                    num_retries,
                    per_try_timeout,
                    retriable_status_codes
                ]
            );
            let mut on: Vec<String> = p
                .retry_on
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            on.extend(p.retriable_status_codes.iter().map(u32::to_string));
            HttpRetry {
                attempts: Some(p.num_retries.as_ref().map_or(1, |n| n.value)),
                per_try_timeout: p
                    .per_try_timeout
                    .as_ref()
                    .map(|d| format!("{}ms", duration_ms(d))),
                retry_on: Some(if on.is_empty() {
                    DEFAULT_RETRY_ON.to_string()
                } else {
                    on.join(",")
                }),
                ..Default::default()
            }
        }
    };
    rc.retry =
        Some(retry_property(&retry).map_err(|(f, m)| format!(".route.retry_policy.{f}: {m}"))?);
    let uri = (!a.prefix_rewrite.is_empty()).then(|| a.prefix_rewrite.clone());
    let authority = match &a.host_rewrite_specifier {
        None => None,
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(h.clone()),
        Some(_) => {
            return Err(".route: only host_rewrite_literal rewrites the host in Lateen".into())
        }
    };
    if uri.is_some() || authority.is_some() {
        rc.rewrite = Some(HttpRewrite {
            uri,
            authority,
            uri_regex_rewrite: None,
        });
    }
    Ok(())
}

fn header_ops(
    r: &envoy_types::pb::envoy::config::route::v3::Route,
) -> Result<Option<Headers>, String> {
    fn ops(
        add: &[HeaderValueOption],
        remove: &[String],
        at: &str,
    ) -> Result<Option<HeaderOperations>, String> {
        let mut o = HeaderOperations {
            remove: remove.to_vec(),
            ..Default::default()
        };
        for (i, hv) in add.iter().enumerate() {
            let Some(h) = &hv.header else {
                return Err(format!("{at}[{i}]: no header"));
            };
            // The deprecated `append` wins when set, as in Envoy.
            let append = match (&hv.append, hv.append_action) {
                (Some(a), _) => a.value,
                (None, a)
                    if a == header_value_option::HeaderAppendAction::AppendIfExistsOrAdd as i32 =>
                {
                    true
                }
                (None, a)
                    if a == header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd
                        as i32 =>
                {
                    false
                }
                _ => {
                    return Err(format!(
                        "{at}[{i}].append_action: only APPEND_IF_EXISTS_OR_ADD and \
                         OVERWRITE_IF_EXISTS_OR_ADD are supported"
                    ))
                }
            };
            let value = if h.raw_value.is_empty() {
                h.value.clone()
            } else {
                String::from_utf8_lossy(&h.raw_value).into_owned()
            };
            if append { &mut o.add } else { &mut o.set }.insert(h.key.clone(), value);
        }
        Ok((o != HeaderOperations::default()).then_some(o))
    }
    let request = ops(
        &r.request_headers_to_add,
        &r.request_headers_to_remove,
        ".request_headers_to_add",
    )?;
    let response = ops(
        &r.response_headers_to_add,
        &r.response_headers_to_remove,
        ".response_headers_to_add",
    )?;
    Ok((request.is_some() || response.is_some()).then_some(Headers { request, response }))
}

/// CDS.
pub fn cluster(any: &Any) -> Result<XdsCluster, String> {
    let mut c: Cluster = unpack(any)?;
    let at = format!("Cluster `{}`", c.name);
    only!(
        &mut c,
        at,
        [
            name,
            alt_stat_name,
            cluster_discovery_type,
            eds_cluster_config,
            connect_timeout,
            lb_policy,
            load_assignment,
            circuit_breakers,
            max_requests_per_connection,
            http2_protocol_options,
            dns_lookup_family,
            dns_refresh_rate,
            respect_dns_ttl,
        ]
    );
    let kind = match &c.cluster_discovery_type {
        None => cluster::DiscoveryType::Static,
        Some(cluster::ClusterDiscoveryType::Type(t)) => cluster::DiscoveryType::try_from(*t)
            .map_err(|_| format!("{at}: type: unknown discovery type {t}"))?,
        Some(_) => {
            return Err(format!(
                "{at}: cluster_type: custom cluster types are not supported"
            ))
        }
    };
    let endpoints = match kind {
        cluster::DiscoveryType::Eds => {
            let eds = c.eds_cluster_config.clone().unwrap_or_default();
            ads_or_unset(
                eds.eds_config.as_ref(),
                &format!("{at}: eds_cluster_config.eds_config"),
            )?;
            ClusterEndpoints::Eds(if eds.service_name.is_empty() {
                c.name.clone()
            } else {
                eds.service_name
            })
        }
        cluster::DiscoveryType::Static
        | cluster::DiscoveryType::StrictDns
        | cluster::DiscoveryType::LogicalDns => {
            let la = c
                .load_assignment
                .as_mut()
                .ok_or_else(|| format!("{at}: load_assignment: required for a {kind:?} cluster"))?;
            ClusterEndpoints::Static(Arc::new(
                endpoints_of(la).map_err(|e| format!("{at}: load_assignment{e}"))?,
            ))
        }
        other => return Err(format!("{at}: type: {other:?} clusters are not supported")),
    };
    let lb = match cluster::LbPolicy::try_from(c.lb_policy) {
        Ok(cluster::LbPolicy::RoundRobin) => LbPolicy::RoundRobin,
        Ok(cluster::LbPolicy::LeastRequest) => LbPolicy::LeastRequest,
        Ok(cluster::LbPolicy::Random) => LbPolicy::Random,
        _ => {
            return Err(format!(
                "{at}: lb_policy: only ROUND_ROBIN, LEAST_REQUEST and RANDOM are supported"
            ))
        }
    };
    // Envoy's circuit-breaker defaults for the default priority.
    let (mut max_requests, mut max_connections) = (1024u64, 1024u32);
    if let Some(cb) = &mut c.circuit_breakers {
        only!(cb, format!("{at}: circuit_breakers"), [thresholds]);
        for (i, t) in cb.thresholds.iter_mut().enumerate() {
            let tat = format!("{at}: circuit_breakers.thresholds[{i}]");
            only!(
                t,
                tat,
                [
                    priority,
                    max_connections,
                    max_requests,
                    max_pending_requests,
                    max_retries
                ]
            );
            if t.priority != 0 {
                continue; // HIGH priority: Lateen has no route priorities, so it never applies.
            }
            if let Some(v) = &t.max_requests {
                max_requests = u64::from(v.value);
            }
            if let Some(v) = &t.max_connections {
                max_connections = v.value;
            }
        }
    }
    Ok(XdsCluster {
        name: c.name.clone(),
        lb,
        connect_timeout_ms: c.connect_timeout.as_ref().map_or(5000, duration_ms),
        http2: c.http2_protocol_options.is_some(),
        max_requests,
        max_connections,
        max_requests_per_connection: c
            .max_requests_per_connection
            .as_ref()
            .map_or(0, |v| v.value),
        endpoints,
    })
}

/// EDS: `(service name, endpoints)`.
pub fn load_assignment(any: &Any) -> Result<(String, Vec<XdsEndpoint>), String> {
    let mut la: ClusterLoadAssignment = unpack(any)?;
    let eps = endpoints_of(&mut la)
        .map_err(|e| format!("ClusterLoadAssignment `{}`{e}", la.cluster_name))?;
    Ok((la.cluster_name, eps))
}

fn endpoints_of(la: &mut ClusterLoadAssignment) -> Result<Vec<XdsEndpoint>, String> {
    only!(la, "", [cluster_name, endpoints, policy]);
    let mut out = Vec::new();
    for (li, loc) in la.endpoints.iter_mut().enumerate() {
        let at = format!(".endpoints[{li}]");
        only!(
            loc,
            at,
            [locality, lb_endpoints, load_balancing_weight, priority]
        );
        if loc.priority != 0 {
            return Err(format!(
                "{at}.priority: {}: priority failover is not supported by Lateen",
                loc.priority
            ));
        }
        for (ei, lbe) in loc.lb_endpoints.iter_mut().enumerate() {
            let eat = format!("{at}.lb_endpoints[{ei}]");
            only!(
                lbe,
                eat,
                [host_identifier, health_status, load_balancing_weight]
            );
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &mut lbe.host_identifier else {
                return Err(format!("{eat}: expected an endpoint"));
            };
            only!(ep, format!("{eat}.endpoint"), [address, hostname]);
            let (host, port) =
                socket_addr(ep.address.as_mut(), &format!("{eat}.endpoint.address"))?;
            let authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let healthy = matches!(
                HealthStatus::try_from(lbe.health_status),
                Ok(HealthStatus::Unknown | HealthStatus::Healthy)
            );
            out.push(XdsEndpoint {
                authority,
                weight: lbe
                    .load_balancing_weight
                    .as_ref()
                    .map_or(1, |w| w.value.max(1)),
                healthy,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::{Route, RouteAction, RouteMatch, VirtualHost};

    fn any<T: Message + Name>(m: &T) -> Any {
        Any {
            type_url: T::type_url(),
            value: m.encode_to_vec(),
        }
    }

    #[test]
    fn clusters_take_envoy_defaults_and_refuse_what_lateen_lacks() {
        use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
        use envoy_types::pb::envoy::config::cluster::v3::CircuitBreakers;
        use envoy_types::pb::google::protobuf::UInt32Value;
        let eds = Cluster {
            name: "c".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            ..Default::default()
        };
        let c = super::cluster(&any(&eds)).expect("valid");
        assert_eq!(
            (c.max_requests, c.max_connections, c.connect_timeout_ms),
            (1024, 1024, 5000)
        );
        assert_eq!(c.endpoints, ClusterEndpoints::Eds("c".into()));

        let mut limited = eds.clone();
        limited.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                max_requests: Some(UInt32Value { value: 10 }),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(
            super::cluster(&any(&limited)).expect("valid").max_requests,
            10
        );

        let mut ring = eds.clone();
        ring.lb_policy = cluster::LbPolicy::RingHash as i32;
        let err = super::cluster(&any(&ring)).unwrap_err();
        assert!(
            err.contains("Cluster `c`") && err.contains("lb_policy"),
            "{err}"
        );

        let mut outlier = eds;
        outlier.outlier_detection = Some(Default::default());
        let err = super::cluster(&any(&outlier)).unwrap_err();
        assert!(err.contains("outlier_detection"), "{err}");
    }

    #[test]
    fn listeners_need_the_router_last_and_only_wasm_before_it() {
        use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain};
        use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
            HttpFilter, Rds,
        };
        let with = |filters: Vec<HttpFilter>| {
            let hcm = HttpConnectionManager {
                route_specifier: Some(RouteSpecifier::Rds(Rds {
                    config_source: None,
                    route_config_name: "r".into(),
                })),
                http_filters: filters,
                ..Default::default()
            };
            let l = Listener {
                name: "l".into(),
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(
                        envoy_types::pb::envoy::config::core::v3::SocketAddress {
                            address: "127.0.0.1".into(),
                            port_specifier: Some(socket_address::PortSpecifier::PortValue(80)),
                            ..Default::default()
                        },
                    )),
                }),
                filter_chains: vec![FilterChain {
                    filters: vec![Filter {
                        name: "hcm".into(),
                        config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            };
            listener(&any(&l))
        };
        let router = HttpFilter {
            name: "router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                any(&Router::default()),
            )),
            ..Default::default()
        };
        let l = with(vec![router.clone()]).expect("valid");
        assert!(matches!(l.routes, Routes::Rds(ref n) if n == "r"));
        assert!(l.filters.is_empty());

        let other = HttpFilter {
            name: "cors".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors".into(),
                value: Vec::new(),
            })),
            ..Default::default()
        };
        let err = with(vec![other, router.clone()]).unwrap_err();
        assert!(
            err.contains("`cors`") && err.contains("not supported"),
            "{err}"
        );
        let err = with(vec![router.clone(), router]).unwrap_err();
        assert!(err.contains("must be the last"), "{err}");
    }

    #[test]
    fn names_unsupported_fields() {
        let r = Route {
            name: "r".into(),
            stat_prefix: "x".into(),
            ..Default::default()
        };
        let mut rest = r.clone();
        rest.name.clear();
        assert_eq!(set_fields(&rest).as_deref(), Some("stat_prefix"));
        assert_eq!(set_fields(&Route::default()), None);
    }

    #[test]
    fn route_configuration_maps_matches_and_weights() {
        let rc = RouteConfiguration {
            name: "rc".into(),
            virtual_hosts: vec![VirtualHost {
                name: "vh".into(),
                domains: vec!["example.com:8080".into(), "*".into()],
                routes: vec![Route {
                    name: "r0".into(),
                    r#match: Some(RouteMatch {
                        path_specifier: Some(PathSpecifier::Prefix("/api".into())),
                        headers: vec![HeaderMatcher {
                            name: "X-Env".into(),
                            invert_match: true,
                            header_match_specifier: Some(HeaderMatchSpecifier::ExactMatch(
                                "dev".into(),
                            )),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                            "c1".into(),
                        )),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let vhs = route_configuration(&any(&rc)).expect("valid");
        assert_eq!(vhs[0].domains, ["example.com", "*"]);
        let r = &vhs[0].routes[0];
        assert_eq!(
            r.matches[0].uri.as_ref().and_then(|u| u.prefix.as_deref()),
            Some("/api")
        );
        assert!(r.matches[0].without_headers.contains_key("x-env"));
        assert_eq!(r.route[0].cluster, "c1");
        assert_eq!(r.timeout_ms, 15_000);
        assert_eq!(
            r.retry.as_deref().map(|s| s.split(';').next()),
            Some(Some("0"))
        );

        let mut bad = rc.clone();
        bad.virtual_hosts[0].routes[0].stat_prefix = "s".into();
        let err = route_configuration(&any(&bad)).unwrap_err();
        assert!(
            err.contains("RouteConfiguration `rc`")
                && err.contains("routes[0]")
                && err.contains("stat_prefix"),
            "{err}"
        );
    }

    // A WasmPlugin as istiod renders it for ECDS (pilot/pkg/model/wasm.go).
    fn istiod_wasm(env: &[(&str, &str)]) -> Any {
        use envoy_types::pb::envoy::config::core::v3::AsyncDataSource;
        use envoy_types::pb::envoy::config::core::v3::{HttpUri, RemoteDataSource};
        use envoy_types::pb::envoy::extensions::wasm::v3::{
            EnvironmentVariables, PluginConfig, VmConfig,
        };
        let w = Wasm {
            config: Some(PluginConfig {
                name: "istio-system.echo".into(),
                configuration: Some(Any::default()),
                vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                    runtime: "envoy.wasm.runtime.v8".into(),
                    code: Some(AsyncDataSource {
                        specifier: Some(async_data_source::Specifier::Remote(RemoteDataSource {
                            http_uri: Some(HttpUri {
                                uri: "oci://reg.example/echo:v1".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })),
                    }),
                    environment_variables: Some(EnvironmentVariables {
                        key_values: env
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        };
        any(&TypedExtensionConfig {
            name: "echo".into(),
            typed_config: Some(any(&w)),
        })
    }

    #[test]
    fn ecds_takes_wasm_plugins_as_istiod_renders_them() {
        let w = extension(&istiod_wasm(&[
            ("ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION", "7"),
            ("ISTIO_META_WASM_IMAGE_PULL_POLICY", "Always"),
            ("GREETING", "hi"),
        ]))
        .expect("istiod's form is accepted");
        assert_eq!(w.url, "oci://reg.example/echo:v1");
        assert_eq!(w.sha256, None);
        assert!(w.configuration.is_empty());
        assert_eq!(w.pull_policy.as_deref(), Some("Always"));
        assert_eq!(w.resource_version.as_deref(), Some("7"));
        // The agent's variables are not the plugin's.
        assert_eq!(w.env, [("GREETING".to_string(), "hi".to_string())]);

        let err = extension(&istiod_wasm(&[("ISTIO_META_WASM_IMAGE_PULL_SECRET", "s")]))
            .expect_err("no pull secrets yet");
        assert!(err.contains("ISTIO_META_WASM_IMAGE_PULL_SECRET"), "{err}");

        let rbac = any(&TypedExtensionConfig {
            name: "echo".into(),
            typed_config: Some(Any {
                type_url: RBAC_TYPE.into(),
                value: Vec::new(),
            }),
        });
        let err = extension(&rbac).expect_err("RBAC stand-ins are refused");
        assert!(
            err.contains("TypedExtensionConfig `echo`") && err.contains("RBAC"),
            "{err}"
        );
    }
}
