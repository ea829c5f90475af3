//! Istio's local rate-limit EnvoyFilter, served by the wasm rate-limit filter. (EnvoyFilter
//! patches that add wasm filters are [`crate::wasm_patch`].)
//!
//! Supported patches (the shapes of Istio's "Enabling Rate Limits using Envoy" task):
//! - `applyTo: HTTP_FILTER` whose value is `envoy.filters.http.local_ratelimit`, with its
//!   config as a `TypedStruct` (`udpa.type.v1` or `xds.type.v3`) or a direct `@type`:
//!   a filter-wide limit;
//! - `applyTo: HTTP_ROUTE` with `operation: MERGE` and
//!   `typed_per_filter_config["envoy.filters.http.local_ratelimit"]`, for the route named in
//!   `match.routeConfiguration.vhost.route.name` (or every route for `action: ANY`), with
//!   optional `route.rate_limits` actions for descriptors. A per-route limit replaces the
//!   filter-wide one on its route, as in Envoy.
//!
//! Fields read: `token_bucket`, `filter_enabled`, `filter_enforced` (both default to 0 %,
//! as in Envoy), `response_headers_to_add`, `descriptors`, `enable_x_ratelimit_headers`.

use super::compile::parse_duration_ms;
use super::resources::EnvoyFilterSpec;
use super::source::{ConfigError, Doc};
use lateen_ratelimit::config::{Descriptor, DescriptorAction, Key, Mode, Rule, TokenBucket};
use serde_json::Value;

const LOCAL_RATELIMIT: &str = "envoy.filters.http.local_ratelimit";
const LOCAL_RATELIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";

/// Rate-limit rules from one EnvoyFilter, in patch order.
pub fn rate_limit_rules(
    ef: &Doc<EnvoyFilterSpec>,
    gateway_mode: bool,
) -> Result<Vec<Rule>, ConfigError> {
    let mut filter_wide = Vec::new();
    let mut per_route = Vec::new();
    for (i, p) in ef.spec.config_patches.iter().enumerate() {
        let field = format!("spec.configPatches[{i}]");
        let err = |f: &str, m: String| ef.info.error(&format!("{field}{f}"), m);
        let context = p
            .matches
            .as_ref()
            .and_then(|m| m.get("context"))
            .and_then(Value::as_str)
            .unwrap_or("ANY");
        let applies = match context {
            "ANY" => true,
            "GATEWAY" => gateway_mode,
            "SIDECAR_INBOUND" | "SIDECAR_OUTBOUND" => !gateway_mode,
            other => {
                return Err(err(
                    ".match.context",
                    format!("unknown context `{other}`; expected ANY, GATEWAY, SIDECAR_INBOUND or SIDECAR_OUTBOUND"),
                ))
            }
        };
        let name = format!("{}.{i}", ef.info.key());
        match p.apply_to.as_str() {
            // Wasm filters are plugins (crate::wasm_patch).
            "HTTP_FILTER"
                if p.patch.value.as_ref().is_some_and(crate::wasm_patch::is_wasm_filter) => {}
            "HTTP_FILTER" => {
                let value = p.patch.value.as_ref().ok_or_else(|| err(".patch.value", "missing".into()))?;
                let fname = value.get("name").and_then(Value::as_str).unwrap_or("");
                if fname != LOCAL_RATELIMIT {
                    return Err(err(
                        ".patch.value.name",
                        format!("HTTP filter `{fname}` is not supported; Lateen serves `{LOCAL_RATELIMIT}` and wasm filters (`typed_config` of type `{}`)", crate::wasm_patch::WASM_TYPE),
                    ));
                }
                let cfg = unwrap_typed(value.get("typed_config"))
                    .map_err(|m| err(".patch.value.typed_config", m))?;
                if !applies {
                    continue;
                }
                if let Some(rule) = local_rate_limit(&name, cfg, Vec::new())
                    .map_err(|(f, m)| err(&format!(".patch.value.typed_config.{f}"), m))?
                {
                    filter_wide.push(rule);
                }
            }
            "HTTP_ROUTE" => {
                let op = p.patch.operation.as_deref().unwrap_or("");
                if op != "MERGE" {
                    return Err(err(".patch.operation", format!("`{op}` is not supported on HTTP_ROUTE; use MERGE")));
                }
                let value = p.patch.value.as_ref().ok_or_else(|| err(".patch.value", "missing".into()))?;
                let Some(per_filter) = value
                    .get("typed_per_filter_config")
                    .and_then(|t| t.get(LOCAL_RATELIMIT))
                else {
                    return Err(err(
                        ".patch.value",
                        format!("only typed_per_filter_config.{LOCAL_RATELIMIT} is supported on HTTP_ROUTE"),
                    ));
                };
                let cfg = unwrap_typed(Some(per_filter)).map_err(|m| {
                    err(&format!(".patch.value.typed_per_filter_config.{LOCAL_RATELIMIT}"), m)
                })?;
                let actions = route_actions(value).map_err(|m| err(".patch.value.route.rate_limits", m))?;
                let route = p
                    .matches
                    .as_ref()
                    .and_then(|m| m.pointer("/routeConfiguration/vhost/route"));
                let routes = match route {
                    Some(r) if r.get("action").and_then(Value::as_str) != Some("ANY") => {
                        match r.get("name").and_then(Value::as_str) {
                            Some(n) => vec![n.to_string()],
                            None => Vec::new(),
                        }
                    }
                    _ => Vec::new(),
                };
                if !applies {
                    continue;
                }
                if let Some(mut rule) = local_rate_limit(&name, cfg, actions).map_err(|(f, m)| {
                    err(&format!(".patch.value.typed_per_filter_config.{LOCAL_RATELIMIT}.{f}"), m)
                })? {
                    rule.routes = routes;
                    per_route.push(rule);
                }
            }
            other => {
                return Err(err(
                    ".applyTo",
                    format!("`{other}` patches are not supported; Lateen serves HTTP_FILTER (local rate limit, wasm) and HTTP_ROUTE (local rate limit) patches"),
                ))
            }
        }
    }
    // A per-route limit replaces the filter-wide one on its routes; `ANY` on all of them.
    if per_route.iter().any(|r| r.routes.is_empty()) {
        filter_wide.clear();
    }
    let overridden: Vec<String> = per_route.iter().flat_map(|r| r.routes.clone()).collect();
    for r in &mut filter_wide {
        r.except_routes = overridden.clone();
    }
    filter_wide.extend(per_route);
    Ok(filter_wide)
}

// The LocalRateLimit message inside a TypedStruct or a direct `@type`.
fn unwrap_typed(v: Option<&Value>) -> Result<&Value, String> {
    let v = v.ok_or("missing typed_config")?;
    let t = v.get("@type").and_then(Value::as_str).unwrap_or("");
    match t {
        "type.googleapis.com/udpa.type.v1.TypedStruct"
        | "type.googleapis.com/xds.type.v3.TypedStruct" => {
            let url = v.get("type_url").and_then(Value::as_str).unwrap_or("");
            if url != LOCAL_RATELIMIT_TYPE {
                return Err(format!("type_url `{url}` is not {LOCAL_RATELIMIT_TYPE}"));
            }
            v.get("value")
                .ok_or_else(|| "TypedStruct without value".to_string())
        }
        LOCAL_RATELIMIT_TYPE => Ok(v),
        other => Err(format!(
            "@type `{other}` is not supported; expected a TypedStruct or {LOCAL_RATELIMIT_TYPE}"
        )),
    }
}

fn bucket(v: &Value) -> Result<TokenBucket, (String, String)> {
    let num = |k: &str| v.get(k).and_then(Value::as_u64);
    let max_tokens = num("max_tokens").ok_or(("max_tokens".to_string(), "required".to_string()))?;
    let fill = v.get("fill_interval").and_then(Value::as_str).ok_or((
        "fill_interval".to_string(),
        "required (e.g. 60s)".to_string(),
    ))?;
    let fill_interval_ms = parse_duration_ms(fill).filter(|ms| *ms > 0).ok_or((
        "fill_interval".to_string(),
        format!("`{fill}` is not a positive duration"),
    ))?;
    Ok(TokenBucket {
        max_tokens,
        tokens_per_fill: num("tokens_per_fill").unwrap_or(1),
        fill_interval_ms,
    })
}

// Envoy's RuntimeFractionalPercent default_value, as a percentage (absent: 0 %).
fn fraction(v: Option<&Value>) -> f64 {
    let Some(d) = v.and_then(|v| v.get("default_value")) else {
        return 0.0;
    };
    let n = d.get("numerator").and_then(Value::as_f64).unwrap_or(0.0);
    let denom = match d
        .get("denominator")
        .and_then(Value::as_str)
        .unwrap_or("HUNDRED")
    {
        "TEN_THOUSAND" => 10_000.0,
        "MILLION" => 1_000_000.0,
        _ => 100.0,
    };
    (n / denom * 100.0).clamp(0.0, 100.0)
}

fn local_rate_limit(
    name: &str,
    cfg: &Value,
    actions: Vec<DescriptorAction>,
) -> Result<Option<Rule>, (String, String)> {
    let descriptors = match cfg.get("descriptors").and_then(Value::as_array) {
        None => Vec::new(),
        Some(ds) => ds
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let entries = d
                    .get("entries")
                    .and_then(Value::as_array)
                    .map(|es| {
                        es.iter()
                            .map(|e| {
                                (
                                    e.get("key")
                                        .and_then(Value::as_str)
                                        .unwrap_or("")
                                        .to_string(),
                                    e.get("value")
                                        .and_then(Value::as_str)
                                        .unwrap_or("")
                                        .to_string(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let tb = d
                    .get("token_bucket")
                    .ok_or((
                        format!("descriptors[{i}].token_bucket"),
                        "required".to_string(),
                    ))
                    .and_then(|b| {
                        bucket(b)
                            .map_err(|(f, m)| (format!("descriptors[{i}].token_bucket.{f}"), m))
                    })?;
                Ok::<_, (String, String)>(Descriptor {
                    entries,
                    token_bucket: tb,
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let Some(tb) = cfg.get("token_bucket") else {
        // No default bucket: Envoy does not limit (descriptors alone need one too).
        return Ok(None);
    };
    let token_bucket = bucket(tb).map_err(|(f, m)| (format!("token_bucket.{f}"), m))?;
    let response_headers = cfg
        .get("response_headers_to_add")
        .and_then(Value::as_array)
        .map(|hs| {
            hs.iter()
                .filter_map(|h| {
                    let h = h.get("header")?;
                    Some((
                        h.get("key")?.as_str()?.to_ascii_lowercase(),
                        h.get("value")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(Rule {
        name: name.to_string(),
        routes: Vec::new(),
        except_routes: Vec::new(),
        matches: Vec::new(),
        key: Key::None,
        token_bucket,
        descriptors,
        actions,
        enabled_percent: fraction(cfg.get("filter_enabled")),
        enforced_percent: fraction(cfg.get("filter_enforced")),
        response_headers,
        rate_limit_headers: cfg
            .get("enable_x_ratelimit_headers")
            .and_then(Value::as_str)
            == Some("DRAFT_VERSION_03"),
        mode: Mode::Local,
    }))
}

// `route.rate_limits[].actions[]` → descriptor actions.
fn route_actions(value: &Value) -> Result<Vec<DescriptorAction>, String> {
    let mut out = Vec::new();
    let Some(limits) = value
        .pointer("/route/rate_limits")
        .and_then(Value::as_array)
    else {
        return Ok(out);
    };
    for l in limits {
        for a in l
            .get("actions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(h) = a.get("request_headers") {
                out.push(DescriptorAction::RequestHeader {
                    header: h
                        .get("header_name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    key: h
                        .get("descriptor_key")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                });
            } else if a.get("remote_address").is_some() {
                out.push(DescriptorAction::RemoteAddress);
            } else if let Some(g) = a.get("generic_key") {
                out.push(DescriptorAction::Generic {
                    key: g
                        .get("descriptor_key")
                        .and_then(Value::as_str)
                        .unwrap_or("generic_key")
                        .to_string(),
                    value: g
                        .get("descriptor_value")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                });
            } else {
                return Err(format!(
                    "unsupported action {a}; supported: request_headers, remote_address, generic_key"
                ));
            }
        }
    }
    Ok(out)
}
