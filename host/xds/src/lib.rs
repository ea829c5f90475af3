//! xDS resources → Lateen's own model. The ADS client (`lateen::xds`) decodes what a control
//! plane pushes with these functions, keeps the result in an [`XdsSet`], and `lateen_config::compile`
//! builds the snapshot from it beside the YAML resources. Nothing here touches a socket.
//!
//! The subset is documented in `docs/xds.md`. A resource that sets a field outside it is
//! refused with the field's name (the client NACKs it); nothing is silently ignored.

// Control planes still send the deprecated forms (`exact_match`, `fail_open`,
// `http2_protocol_options`), so they are read like their replacements.
#![allow(deprecated)]

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
use lateen_config::compile::retry_property;
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

// After the macros above: `macro_rules!` is in scope for what follows it.
mod clusters;
mod listeners;
mod routes;
#[cfg(test)]
mod tests;
pub use self::{clusters::*, listeners::*, routes::*};
