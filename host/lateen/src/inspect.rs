//! `lateen proxy-config` and `lateen proxy-status`: the admin API's JSON views rendered
//! as istioctl-style tables.

use serde_json::Value;
use std::fmt::Write;

/// What `proxy-config` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Listeners,
    Routes,
    Clusters,
    Endpoints,
    Plugins,
}

impl Kind {
    /// The admin path that serves this view.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Listeners => "/listeners",
            Kind::Routes => "/routes",
            Kind::Clusters | Kind::Endpoints => "/clusters?format=json",
            Kind::Plugins => "/plugins",
        }
    }
}

/// Left-aligned columns separated by two spaces, as istioctl prints them.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().map_or(&[], Vec::as_slice)
}

/// `outbound|PORT|SUBSET|HOST` → (host, port, subset, direction).
fn cluster_parts(name: &str) -> (String, String, String, String) {
    let parts: Vec<&str> = name.split('|').collect();
    match parts.as_slice() {
        [dir, port, subset, host] => (
            host.to_string(),
            port.to_string(),
            if subset.is_empty() { "-" } else { subset }.to_string(),
            dir.to_string(),
        ),
        _ => (name.to_string(), "-".into(), "-".into(), "-".into()),
    }
}

// One line per match alternative, as istioctl's MATCH column: `/prefix*`, `/exact`, `~regex`.
fn match_summary(m: &Value) -> String {
    let alts = m.as_array().map_or(&[][..], Vec::as_slice);
    if alts.is_empty() {
        return "/*".into();
    }
    let one = |a: &Value| {
        let uri = &a["uri"];
        let mut s = if let Some(p) = uri["prefix"].as_str() {
            format!("{p}*")
        } else if let Some(e) = uri["exact"].as_str() {
            e.to_string()
        } else if let Some(r) = uri["regex"].as_str() {
            format!("~{r}")
        } else {
            "/*".to_string()
        };
        // The other conditions by kind, with their keys: `headers: x-user`, `cookies: user`.
        let mut extra = Vec::new();
        if let Some(o) = a.as_object() {
            for (k, v) in o.iter().filter(|(k, _)| k.as_str() != "uri") {
                match v.as_object() {
                    Some(m) if !m.is_empty() => {
                        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
                        extra.push(format!("{k}: {}", keys.join(",")));
                    }
                    _ => extra.push(format!("{k}: {v}")),
                }
            }
        }
        if !extra.is_empty() {
            let _ = write!(s, " ({})", extra.join("; "));
        }
        s
    };
    alts.iter().map(one).collect::<Vec<_>>().join(", ")
}

/// Renders one view as a table.
pub fn render(kind: Kind, v: &Value) -> String {
    match kind {
        Kind::Listeners => listeners(v),
        Kind::Routes => routes(v),
        Kind::Clusters => clusters(v),
        Kind::Endpoints => endpoints(v),
        Kind::Plugins => plugins(v),
    }
}

/// Listeners: address, port, protocol and filter chain.
fn listeners(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v, "listeners")
        .iter()
        .map(|l| {
            let filters: Vec<String> = items(l, "filters").iter().map(|f| s(&f["name"])).collect();
            vec![
                s(&l["address"]),
                s(&l["port"]),
                s(&l["protocol"]),
                filters.join(" → "),
            ]
        })
        .collect();
    table(&["ADDRESSES", "PORT", "PROTOCOL", "FILTER CHAIN"], &rows)
}

/// Routes: per listener and domain, each route's match and destinations.
fn routes(v: &Value) -> String {
    let mut rows = Vec::new();
    for l in items(v, "routes") {
        for vh in items(l, "virtualHosts") {
            let domains: Vec<String> = items(vh, "domains").iter().map(s).collect();
            for r in items(vh, "routes") {
                let all = items(r, "destinations");
                // A lone destination without a weight takes all the traffic.
                let dests: Vec<String> = all
                    .iter()
                    .map(|d| match d["weight"].as_u64() {
                        Some(0) | None if all.len() == 1 => {
                            format!("{} 100%", s(&d["cluster"]))
                        }
                        _ => format!("{} {}%", s(&d["cluster"]), s(&d["weight"])),
                    })
                    .collect();
                let dest = if !dests.is_empty() {
                    dests.join(", ")
                } else if r["redirect"].as_bool() == Some(true) {
                    "redirect".into()
                } else {
                    format!("direct response {}", s(&r["directResponse"]))
                };
                rows.push(vec![
                    s(&l["listener"]),
                    domains.join(","),
                    match_summary(&r["match"]),
                    dest,
                    s(&vh["virtualService"]),
                ]);
            }
        }
    }
    table(
        &[
            "LISTENER",
            "DOMAINS",
            "MATCH",
            "DESTINATIONS",
            "VIRTUAL SERVICE",
        ],
        &rows,
    )
}

/// Clusters: the Istio name split into columns, load balancer, endpoints, requests.
fn clusters(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v, "clusters")
        .iter()
        .map(|c| {
            let (host, port, subset, dir) = cluster_parts(c["name"].as_str().unwrap_or(""));
            vec![
                host,
                port,
                subset,
                dir,
                s(&c["lb"]),
                items(c, "endpoints").len().to_string(),
                s(&c["stats"]["upstreamRqTotal"]),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE FQDN",
            "PORT",
            "SUBSET",
            "DIRECTION",
            "LB",
            "ENDPOINTS",
            "REQUESTS",
        ],
        &rows,
    )
}

/// Endpoints with their outlier-detection health.
fn endpoints(v: &Value) -> String {
    let mut rows = Vec::new();
    for c in items(v, "clusters") {
        for e in items(c, "endpoints") {
            let health = s(&e["health"]);
            rows.push(vec![
                s(&e["address"]),
                if health == "EJECTED" {
                    "UNHEALTHY".into()
                } else {
                    "HEALTHY".into()
                },
                if health == "EJECTED" {
                    "FAILED".into()
                } else {
                    "OK".into()
                },
                s(&c["name"]),
            ]);
        }
    }
    table(&["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"], &rows)
}

/// Plugins, then the effective filter order per listener and per route.
fn plugins(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v, "plugins")
        .iter()
        .map(|p| {
            let st = &p["stats"];
            let sha = s(&p["sha256"]);
            let place = match p["placement"].as_str() {
                Some(pl) => pl.to_string(),
                None => s(&p["phase"]),
            };
            vec![
                s(&p["name"]),
                place,
                s(&p["priority"]),
                s(&p["state"]),
                sha.get(..12).unwrap_or(&sha).to_string(),
                format!("{:.3}", st["cpuSeconds"].as_f64().unwrap_or(0.0)),
                format!("{}", st["memoryBytes"].as_i64().unwrap_or(0) / 1024),
                s(&st["traps"]),
                s(&p["url"]),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "NAME", "PHASE", "PRIORITY", "STATE", "SHA256", "CPU(s)", "MEM(KiB)", "TRAPS", "URL",
        ],
        &rows,
    );
    let chains: Vec<Vec<String>> = items(v, "chains")
        .iter()
        .map(|c| {
            let names: Vec<String> = c["filters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            vec![s(&c["listener"]), names.join(" -> ")]
        })
        .collect();
    if !chains.is_empty() {
        out.push_str("\nEffective order per listener:\n");
        out.push_str(&table(&["LISTENER", "ORDER"], &chains));
    }
    // Per route: scoped plugins (matchRules) with the rule that serves the route,
    // `a|b` when it depends on the request; a plugin off there is left out.
    let routes: Vec<Vec<String>> = items(v, "routes")
        .iter()
        .map(|r| {
            let names: Vec<String> = r["filters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            vec![
                s(&r["listener"]),
                s(&r["virtualService"]),
                s(&r["route"]),
                names.join(" -> "),
            ]
        })
        .collect();
    if !routes.is_empty() {
        out.push_str("\nEffective order per route:\n");
        out.push_str(&table(
            &["LISTENER", "VIRTUAL SERVICE", "ROUTE", "ORDER"],
            &routes,
        ));
    }
    out
}

/// `proxy-status`: one row for the proxy, as istioctl's per-proxy line.
pub fn render_status(admin: &str, info: &Value) -> String {
    let status = match info["lastReloadError"].as_str() {
        None => "SYNCED".to_string(),
        Some(e) => format!("STALE ({})", e.lines().next().unwrap_or(e)),
    };
    table(
        &[
            "NAME",
            "ADMIN",
            "STATE",
            "CONFIG VERSION",
            "LISTENERS",
            "CLUSTERS",
            "PLUGINS",
            "RELOADS OK/FAILED",
            "STATUS",
            "LATEEN VERSION",
        ],
        &[vec![
            info["workload"].as_str().unwrap_or("-").to_string(),
            admin.to_string(),
            s(&info["state"]),
            s(&info["configVersion"]),
            s(&info["listeners"]),
            s(&info["clusters"]),
            s(&info["plugins"]),
            format!(
                "{}/{}",
                s(&info["reloads"]["success"]),
                s(&info["reloads"]["failure"])
            ),
            status,
            s(&info["version"]),
        ]],
    ) + &render_xds(&info["xds"])
}

/// The xDS stream and each type's state, as `istioctl proxy-status` shows them: SYNCED
/// (the last response was ACKed), NACKED (it was refused; the version shown still serves)
/// or NOT SENT (nothing came yet).
fn render_xds(x: &Value) -> String {
    if x.is_null() {
        return String::new();
    }
    let mut out = format!(
        "\nxDS {} ({}): {} since {}, {} connect(s){}\n",
        s(&x["server"]),
        s(&x["nodeId"]),
        s(&x["state"]),
        s(&x["since"]),
        s(&x["connects"]),
        x["lastError"]
            .as_str()
            .map(|e| format!(", last error: {e}"))
            .unwrap_or_default()
    );
    let rows: Vec<Vec<String>> = [
        "Cluster",
        "ClusterLoadAssignment",
        "Listener",
        "RouteConfiguration",
        "TypedExtensionConfig",
    ]
    .iter()
    .map(|t| {
        let ts = &x["types"][*t];
        let nacked = ts["lastNack"]["nonce"]
            .as_str()
            .is_some_and(|n| Some(n) == ts["nonce"].as_str());
        let status = if nacked {
            "NACKED"
        } else if ts["version"].as_str().unwrap_or("").is_empty() {
            "NOT SENT"
        } else {
            "SYNCED"
        };
        vec![
            (*t).to_string(),
            status.to_string(),
            ts["version"]
                .as_str()
                .filter(|v| !v.is_empty())
                .unwrap_or("-")
                .to_string(),
            ts["nonce"]
                .as_str()
                .filter(|v| !v.is_empty())
                .unwrap_or("-")
                .to_string(),
            s(&ts["resources"]),
            format!("{}/{}", s(&ts["acks"]), s(&ts["nacks"])),
            ts["lastNack"]["error"].as_str().unwrap_or("-").to_string(),
        ]
    })
    .collect();
    out += &table(
        &[
            "TYPE",
            "STATUS",
            "VERSION",
            "NONCE",
            "RESOURCES",
            "ACKS/NACKS",
            "LAST NACK",
        ],
        &rows,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn clusters_split_their_names_into_columns() {
        let v = json!({"clusters": [{"name": "outbound|80|v1|reviews.default.svc.cluster.local",
            "lb": "ROUNDROBIN", "endpoints": [{}, {}], "stats": {"upstreamRqTotal": 7}}]});
        let out = render(Kind::Clusters, &v);
        let mut lines = out.lines();
        assert!(lines.next().unwrap().starts_with("SERVICE FQDN"));
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "reviews.default.svc.cluster.local",
                "80",
                "v1",
                "outbound",
                "ROUNDROBIN",
                "2",
                "7"
            ]
        );
    }

    #[test]
    fn routes_show_matches_and_weights() {
        let v = json!({"routes": [{"listener": "0.0.0.0_8080", "virtualHosts": [{"virtualService": "default/reviews",
            "domains": ["*"], "routes": [{"match": [{"uri": {"prefix": "/api"}}],
            "destinations": [{"cluster": "outbound|80|v1|r", "weight": 90}, {"cluster": "outbound|80|v2|r", "weight": 10}]}]}]}]});
        let out = render(Kind::Routes, &v);
        assert!(out.contains("/api*"), "{out}");
        let v = json!({"routes": [{"listener": "l", "virtualHosts": [{"virtualService": "d/vs", "domains": ["*"],
            "routes": [{"match": [{"cookies": {"user": {"exact": "t"}}}], "destinations": [{"cluster": "c", "weight": 0}]}]}]}]});
        let lone = render(Kind::Routes, &v);
        assert!(
            lone.contains("/* (cookies: user)") && lone.contains("c 100%"),
            "{lone}"
        );
        assert!(
            out.contains("outbound|80|v1|r 90%, outbound|80|v2|r 10%"),
            "{out}"
        );
    }
}
