//! The admin API's JSON views of the running config: `/listeners`, `/routes`,
//! `/clusters?format=json`, `/plugins` and `/server_info`. Field names are camelCase and
//! stable: `lateen proxy-config` and users' scripts read them.

use lateen_model::scope::{DomainMatch, RuleAction};
use lateen_model::{FailStrategy, PluginSpec};
use lateen_proxy::live::Live;
use lateen_router::table::RouterConfig;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// The built-in router's name in chains.
const ROUTER: &str = "lateen/router";

fn phase(p: &PluginSpec) -> String {
    format!("{:?}", p.phase).to_uppercase()
}

/// WasmPlugin's `failStrategy` name.
pub(super) fn fail(p: &PluginSpec) -> &'static str {
    match p.fail {
        FailStrategy::Close => "FAIL_CLOSE",
        FailStrategy::Open => "FAIL_OPEN",
    }
}

/// Listeners with their filter chains, in order.
pub fn listeners(snap: &Live) -> Value {
    let ls: Vec<Value> = snap
        .listeners
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "address": l.addr.ip().to_string(),
                "port": l.addr.port(),
                "protocol": "HTTP",
                "filters": l.filters.iter().map(|f| json!({
                    "name": f.plugin.name,
                    "phase": phase(&f.plugin),
                    "priority": f.plugin.priority,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "listeners": ls })
}

/// Each listener with a router and the route table it runs.
fn router_configs(
    snap: &Live,
) -> impl Iterator<Item = (&lateen_model::ListenerSpec, RouterConfig)> {
    snap.listeners.iter().filter_map(|l| {
        let router = l.filters.iter().find(|f| f.plugin.name == ROUTER)?;
        let cfg = serde_json::from_slice::<RouterConfig>(&router.configuration).ok()?;
        Some((l, cfg))
    })
}

/// Each listener's route table, as the router filter runs it.
pub fn routes(snap: &Live) -> Value {
    let mut out = Vec::new();
    for (l, cfg) in router_configs(snap) {
        let vhosts: Vec<Value> = cfg
            .virtual_hosts
            .iter()
            .map(|vh| {
                json!({
                    "virtualService": vh.name,
                    "domains": vh.domains,
                    "routes": vh.routes.iter().map(|r| json!({
                        "name": r.name,
                        "id": r.id,
                        "match": r.matches,
                        "destinations": r.route.iter().map(|d| json!({
                            "cluster": d.cluster, "weight": d.weight,
                        })).collect::<Vec<_>>(),
                        "redirect": r.redirect.is_some(),
                        "directResponse": r.direct_response.as_ref().map(|d| d.status),
                        "timeoutMs": r.timeout_ms,
                        "retry": r.retry,
                        "mirrors": r.mirrors.iter().map(|(c, p)| json!({"cluster": c, "percent": p})).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        out.push(json!({ "listener": l.name, "virtualHosts": vhosts }));
    }
    json!({ "routes": out })
}

/// Clusters with their settings, stats and endpoints (health, load, ejections).
pub fn clusters(snap: &Live) -> Value {
    let mut names: Vec<&String> = snap.clusters.keys().collect();
    names.sort();
    let now = lateen_proxy::cluster::now_ms();
    let cs: Vec<Value> = names
        .into_iter()
        .map(|n| {
            let c = &snap.clusters[n];
            let s = &c.stats;
            json!({
                "name": c.name,
                "lb": format!("{:?}", c.lb).to_uppercase(),
                "protocol": match c.protocol {
                    lateen_model::cluster::UpstreamProtocol::Http1 => "HTTP/1.1",
                    lateen_model::cluster::UpstreamProtocol::Http2 => "HTTP/2",
                },
                "connectTimeoutMs": c.conn.connect_timeout_ms,
                "maxRequests": c.max_requests,
                "maxConnections": c.conn.max_connections,
                "maxRequestsPerConnection": c.conn.max_requests_per_connection,
                "outlierDetection": c.outlier.is_some(),
                "stats": {
                    "upstreamRqTotal": s.rq_total.get(),
                    "upstreamRqActive": s.rq_active.get(),
                    "upstreamRq2xx": s.rq_xx.get(2),
                    "upstreamRq4xx": s.rq_xx.get(4),
                    "upstreamRq5xx": s.rq_xx.get(5),
                    "upstreamCxTotal": s.cx_total.get(),
                    "upstreamCxActive": s.cx_active.get(),
                    "upstreamCxConnectFail": s.cx_connect_fail.get(),
                    "upstreamRqPendingActive": s.rq_pending_active.get(),
                    "upstreamRqPendingOverflow": s.rq_pending_overflow.get(),
                    "upstreamRqRetry": s.rq_retry.get(),
                    "upstreamRqTimeout": s.rq_timeout.get(),
                    "ejectionsEnforcedTotal": s.ejections_enforced_total.get(),
                },
                "endpoints": c.endpoints.iter().map(|e| json!({
                    "address": e.authority,
                    "labels": e.labels,
                    "weight": e.weight,
                    "health": if e.ejected(now) { "EJECTED" } else { "HEALTHY" },
                    "rqActive": e.active.load(Ordering::Relaxed),
                    "ejections": e.ejection_count(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "clusters": cs })
}

/// A scoped plugin's `matchRules`: selectors and state. `STALE` serves the last good
/// configuration after a newer one was refused; `FAILED` has none and follows the
/// failStrategy.
fn rules(snap: &Live, p: &PluginSpec) -> Value {
    let Some(scope) = snap
        .listeners
        .iter()
        .flat_map(|l| &l.filters)
        .find(|f| f.plugin.name == p.name)
        .and_then(|f| f.scope.as_ref())
    else {
        return Value::Null;
    };
    let list: Vec<Value> = scope
        .rules
        .iter()
        .map(|r| {
            let state = match (&r.action, &r.error) {
                (RuleAction::Disable, _) => "DISABLED",
                (RuleAction::Failed(_), _) => "FAILED",
                (RuleAction::Config(_), Some(_)) => "STALE",
                (RuleAction::Config(_), None) => "ACTIVE",
            };
            json!({
                "name": r.label,
                "domains": r.domains.iter().map(|d| match d {
                    DomainMatch::Any => "*".to_string(),
                    DomainMatch::Exact(e) => e.clone(),
                    DomainMatch::Suffix(s) => format!("*{s}"),
                }).collect::<Vec<_>>(),
                "routes": r.routes,
                "services": r.services,
                "state": state,
                "error": r.error,
            })
        })
        .collect();
    json!({ "defaultEnabled": scope.default.is_some(), "matchRules": list })
}

/// Plugins: identity, placement, state and per-plugin counters.
pub fn plugins(snap: &Live) -> Value {
    let store = lateen_core::stats::store();
    let entry = |p: &PluginSpec, kind: &str| {
        let st = store.plugin(&p.name);
        let listeners: Vec<&str> = snap
            .listeners
            .iter()
            .filter(|l| l.filters.iter().any(|f| f.plugin.name == p.name))
            .map(|l| l.name.as_str())
            .collect();
        json!({
            "name": p.name,
            "kind": kind,
            "url": p.url,
            "sha256": p.module.sha256,
            "phase": phase(p),
            "priority": p.priority,
            "placement": p.placement.map(|pl| format!(
                "{}:{}",
                if pl.before { "before" } else { "after" },
                pl.anchor.plugin_name().trim_start_matches("lateen/")
            )),
            "failStrategy": fail(p),
            "recycle": {
                "afterRequests": p.recycle.after_requests,
                "memoryBytes": p.recycle.memory_bytes,
            },
            "listeners": listeners,
            "rules": rules(snap, p),
            "state": if st.instances.get() > 0 { "RUNNING" } else { "LOADED" },
            "canary": p.canary.as_ref().map(|c| json!({
                "url": c.spec.url,
                "sha256": c.spec.module.sha256,
                "percent": c.percent,
                "state": if snap.rollouts.get(c).is_some_and(|r| r.rolled_back.load(Ordering::Relaxed)) { "ROLLED_BACK" } else { "ACTIVE" },
            })),
            "stats": {
                "instances": st.instances.get(),
                "callbacks": st.callbacks.get(),
                "cpuSeconds": st.cpu_ns.get() as f64 / 1e9,
                "memoryBytes": st.memory_bytes.get(),
                "traps": st.traps.get(),
                "deadlineTimeouts": st.timeouts.get(),
                "recycles": st.recycles.get(),
            },
        })
    };
    let mut all: Vec<Value> = snap.plugins.iter().map(|p| entry(p, "http")).collect();
    all.extend(
        snap.service_plugins
            .iter()
            .map(|f| entry(&f.plugin, "service")),
    );
    // The order filters run in: a listener's chain, the same for every route it serves.
    let chains: Vec<Value> = snap
        .listeners
        .iter()
        .filter(|l| !l.filters.is_empty())
        .map(|l| {
            json!({
                "listener": l.name,
                "filters": l.filters.iter().map(|f| f.plugin.name.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "plugins": all, "chains": chains, "routes": route_order(snap) })
}

/// The effective chain of every route: a scoped plugin shows the rule (or rules) that
/// take the route's requests, and is left out where it is off.
fn route_order(snap: &Live) -> Vec<Value> {
    let mut out = Vec::new();
    for (l, cfg) in router_configs(snap) {
        for vh in &cfg.virtual_hosts {
            for r in &vh.routes {
                let clusters: Vec<String> = r.route.iter().map(|d| d.cluster.clone()).collect();
                let filters: Vec<String> = l
                    .filters
                    .iter()
                    .filter_map(|f| {
                        let Some(scope) = &f.scope else {
                            return Some(f.plugin.name.clone());
                        };
                        let on = scope.on_route(&r.id, &vh.domains, &clusters);
                        if on.iter().all(Option::is_none) {
                            return None;
                        }
                        let labels: Vec<&str> = on.iter().map(|o| o.unwrap_or("off")).collect();
                        Some(format!("{} ({})", f.plugin.name, labels.join("|")))
                    })
                    .collect();
                out.push(json!({
                    "listener": l.name,
                    "virtualService": vh.name,
                    "route": if r.name.is_empty() { r.id.clone() } else { r.name.clone() },
                    "routeId": r.id,
                    "filters": filters,
                }));
            }
        }
    }
    out
}
