//! WasmPlugin scoping: Istio `targetRefs` (Gateways) and Lateen's `matchRules` extension
//! (in the style of Higress): an ordered list of domain, route and service selectors, each
//! with its own configuration or `configDisable`, the first match winning.
//!
//! A rule whose configuration is refused (by the plugin's schema or its `on_configure`)
//! keeps the configuration it had in the running snapshot, and the rest of the change
//! applies; the refusal is reported by `lateen validate` and on the admin API.

use super::resources::{VirtualServiceSpec, WasmPluginSpec};
use super::source::{ConfigError, Doc, DocInfo};
use bytes::Bytes;
use lateen_model::scope::{Coverage, DomainMatch, Rule, RuleAction};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

/// A WasmPlugin's parsed scope, before its configurations are checked.
#[derive(Debug, Default)]
pub struct ScopeConfig {
    /// `targetRefs` Gateways (`namespace/name`); empty: every listener.
    pub gateways: Vec<String>,
    pub rules: Vec<RuleConfig>,
    /// `defaultConfigDisable: true`: off where no rule matches.
    pub default_disabled: bool,
}

/// One `matchRules` entry as written.
#[derive(Debug)]
pub struct RuleConfig {
    pub index: usize,
    pub domains: Vec<String>,
    /// `(virtualService key, route name)` pairs; no name selects every route.
    pub routes: Vec<(String, Option<String>)>,
    pub services: Vec<String>,
    /// `None` with `configDisable: true`.
    pub config: Option<Bytes>,
}

impl RuleConfig {
    pub fn label(&self) -> String {
        format!("matchRules[{}]", self.index)
    }

    pub fn field(&self) -> String {
        format!("spec.matchRules[{}]", self.index)
    }

    /// What identifies the rule across config versions: its selectors, so a reordered
    /// list still finds each rule's last good configuration.
    pub fn key(&self) -> String {
        format!("{:?}|{:?}|{:?}", self.domains, self.routes, self.services)
    }
}

/// Reads `targetRefs`, `matchRules` and `defaultConfigDisable`; the refused shapes come
/// back with their field and line.
pub fn parse(wp: &Doc<WasmPluginSpec>) -> Result<ScopeConfig, ConfigError> {
    let info = &wp.info;
    let s = &wp.spec;
    let mut out = ScopeConfig {
        default_disabled: s.default_config_disable.unwrap_or(false),
        ..ScopeConfig::default()
    };
    if s.target_ref.is_some() && s.target_refs.is_some() {
        return Err(info.error("spec.targetRef", "give targetRef or targetRefs, not both"));
    }
    let (refs, field) = match (&s.target_ref, &s.target_refs) {
        (Some(r), _) => (vec![r.clone()], "spec.targetRef"),
        (_, Some(Value::Array(a))) => (a.clone(), "spec.targetRefs"),
        (_, Some(_)) => return Err(info.error("spec.targetRefs", "expected a list")),
        (None, None) => (Vec::new(), ""),
    };
    for (i, r) in refs.iter().enumerate() {
        let at = if field == "spec.targetRef" {
            field.to_string()
        } else {
            format!("{field}[{i}]")
        };
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
        let group = r.get("group").and_then(Value::as_str).unwrap_or("");
        if kind != "Gateway"
            || !matches!(
                group,
                "" | "gateway.networking.k8s.io" | "networking.istio.io"
            )
        {
            return Err(info.error(
                &format!("{at}.kind"),
                format!(
                    "`{group}/{kind}`: Lateen attaches plugins to Gateways only \
                     (kind: Gateway); scope routes, hosts and services with matchRules"
                ),
            ));
        }
        let name = r
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| info.error(&format!("{at}.name"), "a Gateway name is required"))?;
        let ns = r
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or(&info.namespace);
        out.gateways.push(format!("{ns}/{name}"));
    }
    let Some(rules) = &s.match_rules else {
        if out.default_disabled {
            return Err(info.error(
                "spec.defaultConfigDisable",
                "with no matchRules the plugin would run nowhere",
            ));
        }
        return Ok(out);
    };
    let rules = rules
        .as_array()
        .ok_or_else(|| info.error("spec.matchRules", "expected a list of rules"))?;
    for (index, r) in rules.iter().enumerate() {
        out.rules.push(parse_rule(info, index, r)?);
    }
    Ok(out)
}

fn parse_rule(info: &DocInfo, index: usize, r: &Value) -> Result<RuleConfig, ConfigError> {
    let at = |f: &str| format!("spec.matchRules[{index}]{f}");
    let obj = r
        .as_object()
        .ok_or_else(|| info.error(&at(""), "expected a rule (domain, route, service, config)"))?;
    if let Some(k) = obj.keys().find(|k| {
        !matches!(
            k.as_str(),
            "domain" | "route" | "service" | "config" | "configDisable"
        )
    }) {
        return Err(info.error(
            &at(&format!(".{k}")),
            "unknown field; expected domain, route, service, config or configDisable",
        ));
    }
    let strings = |key: &str| -> Result<Vec<String>, ConfigError> {
        let Some(v) = obj.get(key) else {
            return Ok(Vec::new());
        };
        let items = v
            .as_array()
            .ok_or_else(|| info.error(&at(&format!(".{key}")), "expected a list"))?;
        items
            .iter()
            .enumerate()
            .map(|(j, x)| {
                x.as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        info.error(&at(&format!(".{key}[{j}]")), "expected a non-empty string")
                    })
            })
            .collect()
    };
    let domains = strings("domain")?;
    let services = strings("service")?;
    let mut routes = Vec::new();
    if let Some(v) = obj.get("route") {
        let items = v
            .as_array()
            .ok_or_else(|| info.error(&at(".route"), "expected a list"))?;
        for (j, x) in items.iter().enumerate() {
            let f = at(&format!(".route[{j}]"));
            // `VS` or `NS/VS` alone selects every route of the VirtualService.
            let (vs, name) = match x {
                Value::String(s) => (s.clone(), None),
                Value::Object(o) => {
                    if let Some(k) = o.keys().find(|k| *k != "virtualService" && *k != "name") {
                        return Err(info.error(
                            &format!("{f}.{k}"),
                            "unknown field; expected virtualService and name",
                        ));
                    }
                    let vs = o
                        .get("virtualService")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| {
                            info.error(
                                &format!("{f}.virtualService"),
                                "a VirtualService is required",
                            )
                        })?;
                    let name = match o.get("name") {
                        None => None,
                        Some(Value::String(n)) if !n.is_empty() => Some(n.clone()),
                        Some(_) => {
                            return Err(info
                                .error(&format!("{f}.name"), "expected the name of an http route"))
                        }
                    };
                    (vs.to_string(), name)
                }
                _ => {
                    return Err(info.error(
                        &f,
                        "expected {virtualService: NAME, name: ROUTE} or a VirtualService name",
                    ))
                }
            };
            let key = if vs.contains('/') {
                vs
            } else {
                format!("{}/{vs}", info.namespace)
            };
            routes.push((key, name));
        }
    }
    if domains.is_empty() && routes.is_empty() && services.is_empty() {
        return Err(info.error(
            &at(""),
            "a rule needs a domain, route or service selector (pluginConfig is the default)",
        ));
    }
    let disable = match obj.get("configDisable") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(info.error(&at(".configDisable"), "expected true or false")),
    };
    let config = match (obj.get("config"), disable) {
        (_, true) => None,
        (Some(c), false) => Some(Bytes::from(serde_json::to_vec(c).unwrap_or_default())),
        (None, false) => {
            return Err(info.error(&at(""), "a rule needs config, or configDisable: true"))
        }
    };
    Ok(RuleConfig {
        index,
        domains,
        routes,
        services,
        config,
    })
}

/// Route ids (`namespace/name#index`) a rule's route selectors name, with a warning for
/// each selector that names nothing.
pub fn route_ids(
    info: &DocInfo,
    rule: &RuleConfig,
    vss: &[Doc<VirtualServiceSpec>],
    warnings: &mut Vec<String>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for (j, (key, name)) in rule.routes.iter().enumerate() {
        let Some(vs) = vss.iter().find(|v| v.info.key() == *key) else {
            warnings.push(nothing(
                info,
                &format!("{}.route[{j}]", rule.field()),
                &format!("VirtualService `{key}` does not exist"),
            ));
            continue;
        };
        let before = ids.len();
        for (i, http) in vs.spec.http.iter().enumerate() {
            if name
                .as_ref()
                .is_none_or(|n| http.name.as_deref() == Some(n.as_str()))
            {
                ids.push(format!("{key}#{i}"));
            }
        }
        if ids.len() == before {
            warnings.push(nothing(
                info,
                &format!("{}.route[{j}].name", rule.field()),
                &format!(
                    "VirtualService `{key}` has no http route named `{}`",
                    name.as_deref().unwrap_or("")
                ),
            ));
        }
    }
    ids
}

/// Warns about domain and service selectors no VirtualService host or cluster can match.
pub fn check_selectors(
    info: &DocInfo,
    rule: &RuleConfig,
    hosts: &BTreeSet<String>,
    services: &BTreeSet<&str>,
    warnings: &mut Vec<String>,
) {
    for (j, d) in rule.domains.iter().enumerate() {
        let sel = DomainMatch::parse(d);
        if hosts.iter().all(|h| sel.coverage(h) == Coverage::None) {
            warnings.push(nothing(
                info,
                &format!("{}.domain[{j}]", rule.field()),
                &format!("no VirtualService serves a host `{d}` matches"),
            ));
        }
    }
    for (j, s) in rule.services.iter().enumerate() {
        if !services.contains(s.as_str()) {
            warnings.push(nothing(
                info,
                &format!("{}.service[{j}]", rule.field()),
                &format!(
                    "no cluster serves `{s}` (expected a destination host as written in a route)"
                ),
            ));
        }
    }
}

fn nothing(info: &DocInfo, field: &str, why: &str) -> String {
    format!(
        "{}:{}: WasmPlugin {}: {field}: {why}, so the rule matches nothing",
        info.file.display(),
        info.line_of(field),
        info.key()
    )
}

/// A rule whose configuration was refused: its last good one from the running snapshot
/// (found by selectors), or a failed rule.
pub fn isolate(message: &str, previous: Option<&Rule>) -> RuleAction {
    match previous.map(|r| &r.action) {
        Some(RuleAction::Config(c)) => RuleAction::Config(c.clone()),
        _ => RuleAction::Failed(format!("{message} (no earlier configuration to keep)")),
    }
}

/// Builds a runtime rule.
pub fn rule(
    rc: &RuleConfig,
    routes: Vec<String>,
    action: RuleAction,
    error: Option<String>,
) -> Rule {
    Rule {
        label: rc.label(),
        key: rc.key(),
        domains: rc.domains.iter().map(|d| DomainMatch::parse(d)).collect(),
        routes,
        services: rc.services.clone(),
        action,
        error,
    }
}

/// Every rule of a loaded plugin shares one list across the listeners it is on.
pub type Rules = Arc<Vec<Rule>>;
