//! AuthorizationPolicy rules and their evaluation, with Istio's semantics:
//! - a policy matches when any of its rules does; `rules: [{}]` matches every request and
//!   an ALLOW policy without rules matches none (allow-nothing);
//! - a rule matches when any `from` source, any `to` operation and every `when` condition
//!   match; an absent list matches;
//! - within a source or operation every field that is set must match; `notX` fields match
//!   when the value is absent or none of them matches;
//! - values match exactly, by prefix (`abc*`), by suffix (`*abc`) or by presence (`*`).
//!
//! Field names are Istio's (camelCase), so the host deserialises the YAML rules straight
//! into these types.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

pub const DENIED_BODY: &[u8] = b"RBAC: access denied";

/// The filter's whole configuration: the policies that apply to this workload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuthzConfig {
    /// None when absent, as for an empty configuration (which the host checks as `{}`).
    #[serde(default)]
    pub policies: Vec<Policy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    Allow,
    Deny,
    Audit,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Policy {
    /// `namespace.name`, as Envoy names RBAC policies.
    pub name: String,
    pub action: Action,
    /// `None`: the policy has no `rules` field (ALLOW: allow nothing).
    pub rules: Option<Vec<Rule>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub from: Vec<From>,
    #[serde(default)]
    pub to: Vec<To>,
    #[serde(default)]
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct From {
    pub source: Source,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct To {
    pub operation: Operation,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub not_ports: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub not_values: Vec<String>,
}

/// What a request offers to the policies.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Istio's principal of the mTLS peer (`cluster.local/ns/NS/sa/SA`).
    pub principal: Option<String>,
    pub source_ip: Option<IpAddr>,
    /// The client's address as Envoy's `remote.ip` (this proxy trusts no forwarding
    /// hops, so it is the connection's peer).
    pub remote_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub destination_port: Option<u16>,
    pub host: String,
    pub method: String,
    /// The path without its query string.
    pub path: String,
    pub sni: Option<String>,
    /// Lower-cased request headers.
    pub headers: Vec<(String, String)>,
    /// `iss/sub` of the request's verified JWT (RequestAuthentication).
    pub request_principal: Option<String>,
    /// The verified JWT's payload.
    pub claims: Option<serde_json::Value>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Values of a claim of the verified JWT (none without one).
    fn claim(&self, path: &[&str]) -> Vec<String> {
        self.claims
            .as_ref()
            .map(|c| lateen_sdk::claims::values(c, path))
            .unwrap_or_default()
    }

    /// The namespace part of the principal.
    fn namespace(&self) -> Option<&str> {
        let p = self.principal.as_deref()?;
        let rest = p.split("/ns/").nth(1)?;
        Some(rest.split('/').next().unwrap_or(rest))
    }
}

/// Istio's string match: exact, `prefix*`, `*suffix`, or `*` (any non-empty value).
pub fn value_matches(pattern: &str, v: &str) -> bool {
    if pattern == "*" {
        return !v.is_empty();
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return v.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return v.ends_with(suffix);
    }
    pattern == v
}

/// An IP range: `10.0.0.0/8`, or one address.
pub fn cidr_contains(block: &str, ip: IpAddr) -> bool {
    let (addr, len) = match block.split_once('/') {
        Some((a, l)) => (a, l.parse::<u32>().ok()),
        None => (block, None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let len = len.unwrap_or(32).min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let len = len.unwrap_or(128).min(128);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Checks a block is a valid address or CIDR (for config validation).
pub fn valid_cidr(block: &str) -> bool {
    let (addr, len) = match block.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (block, None),
    };
    match (addr.parse::<IpAddr>(), len.map(str::parse::<u32>)) {
        (Ok(_), None) => true,
        (Ok(IpAddr::V4(_)), Some(Ok(l))) => l <= 32,
        (Ok(IpAddr::V6(_)), Some(Ok(l))) => l <= 128,
        _ => false,
    }
}

fn text_in(set: &[String], v: &str) -> bool {
    set.iter().any(|p| value_matches(p, v))
}

/// `in`: the value is present and matches one of `set`; an empty `set` matches anything.
fn any_of(set: &[String], v: Option<&str>, m: fn(&str, &str) -> bool) -> bool {
    set.is_empty() || v.is_some_and(|v| set.iter().any(|p| m(p, v)))
}

/// `not in`: absent, or matches none of `set`.
fn none_of(set: &[String], v: Option<&str>, m: fn(&str, &str) -> bool) -> bool {
    set.is_empty() || v.is_none_or(|v| !set.iter().any(|p| m(p, v)))
}

fn host_matches(p: &str, v: &str) -> bool {
    value_matches(&p.to_ascii_lowercase(), &v.to_ascii_lowercase())
}

fn ip_in(blocks: &[String], ip: Option<IpAddr>, negate: bool) -> bool {
    if blocks.is_empty() {
        return true;
    }
    let hit = ip.is_some_and(|ip| blocks.iter().any(|b| cidr_contains(b, ip)));
    hit != negate
}

impl Source {
    fn matches(&self, r: &Request) -> bool {
        let p = r.principal.as_deref();
        let rp = r.request_principal.as_deref();
        let ns = r.namespace();
        any_of(&self.principals, p, value_matches)
            && none_of(&self.not_principals, p, value_matches)
            && any_of(&self.namespaces, ns, value_matches)
            && none_of(&self.not_namespaces, ns, value_matches)
            && ip_in(&self.ip_blocks, r.source_ip, false)
            && ip_in(&self.not_ip_blocks, r.source_ip, true)
            && ip_in(&self.remote_ip_blocks, r.remote_ip, false)
            && ip_in(&self.not_remote_ip_blocks, r.remote_ip, true)
            && any_of(&self.request_principals, rp, value_matches)
            && none_of(&self.not_request_principals, rp, value_matches)
    }
}

impl Operation {
    fn matches(&self, r: &Request) -> bool {
        let host = Some(r.host.as_str());
        let port = r.destination_port.map(|p| p.to_string());
        any_of(&self.hosts, host, host_matches)
            && none_of(&self.not_hosts, host, host_matches)
            && any_of(&self.ports, port.as_deref(), |a, b| a == b)
            && none_of(&self.not_ports, port.as_deref(), |a, b| a == b)
            && any_of(&self.methods, Some(&r.method), value_matches)
            && none_of(&self.not_methods, Some(&r.method), value_matches)
            && any_of(&self.paths, Some(&r.path), value_matches)
            && none_of(&self.not_paths, Some(&r.path), value_matches)
    }
}

/// The condition keys Lateen evaluates.
pub fn supported_key(key: &str) -> bool {
    header_key(key).is_some()
        || claim_key(key).is_some()
        || matches!(
            key,
            "source.ip"
                | "remote.ip"
                | "source.namespace"
                | "source.principal"
                | "destination.ip"
                | "destination.port"
                | "connection.sni"
                | "request.auth.principal"
                | "request.auth.audiences"
                | "request.auth.presenter"
        )
}

/// `request.auth.claims[a][b]` → `["a", "b"]` (nested claims, one name per bracket).
fn claim_key(key: &str) -> Option<Vec<&str>> {
    let rest = key
        .strip_prefix("request.auth.claims[")?
        .strip_suffix(']')?;
    let path: Vec<&str> = rest.split("][").collect();
    path.iter()
        .all(|p| !p.is_empty() && !p.contains(['[', ']']))
        .then_some(path)
}

fn header_key(key: &str) -> Option<&str> {
    key.strip_prefix("request.headers[")?.strip_suffix(']')
}

impl Condition {
    fn matches(&self, r: &Request) -> bool {
        let ips = |ip: Option<IpAddr>| {
            ip_in(&self.values, ip, false) && ip_in(&self.not_values, ip, true)
        };
        let text = |v: Option<&str>| {
            any_of(&self.values, v, value_matches) && none_of(&self.not_values, v, value_matches)
        };
        // A claim with several values (a list) matches when any of them does; `notValues`
        // when none does.
        let texts = |vs: Vec<String>| {
            (self.values.is_empty() || vs.iter().any(|v| text_in(&self.values, v)))
                && (self.not_values.is_empty() || !vs.iter().any(|v| text_in(&self.not_values, v)))
        };
        if let Some(h) = header_key(&self.key) {
            return text(r.header(h));
        }
        if let Some(path) = claim_key(&self.key) {
            return texts(r.claim(&path));
        }
        match self.key.as_str() {
            "source.ip" => ips(r.source_ip),
            "remote.ip" => ips(r.remote_ip),
            "destination.ip" => ips(r.destination_ip),
            "source.namespace" => text(r.namespace()),
            "source.principal" => text(r.principal.as_deref()),
            "destination.port" => text(r.destination_port.map(|p| p.to_string()).as_deref()),
            "connection.sni" => text(r.sni.as_deref()),
            "request.auth.principal" => text(r.request_principal.as_deref()),
            "request.auth.audiences" => texts(r.claim(&["aud"])),
            "request.auth.presenter" => texts(r.claim(&["azp"])),
            _ => false,
        }
    }
}

impl Rule {
    fn matches(&self, r: &Request) -> bool {
        (self.from.is_empty() || self.from.iter().any(|f| f.source.matches(r)))
            && (self.to.is_empty() || self.to.iter().any(|t| t.operation.matches(r)))
            && self.when.iter().all(|c| c.matches(r))
    }
}

impl Policy {
    pub fn matches(&self, r: &Request) -> bool {
        self.rules
            .as_ref()
            .is_some_and(|rules| rules.iter().any(|rule| rule.matches(r)))
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `None`: allowed. `Some(policy)`: denied by that DENY policy, or `Some("none")` when
    /// ALLOW policies exist and none matched (Envoy's wording).
    pub denied_by: Option<String>,
    /// AUDIT policies that matched.
    pub audited: Vec<String>,
}

impl AuthzConfig {
    /// Envoy's order: DENY first, then ALLOW; AUDIT never changes the outcome.
    pub fn evaluate(&self, r: &Request) -> Decision {
        let audited = self
            .policies
            .iter()
            .filter(|p| p.action == Action::Audit && p.matches(r))
            .map(|p| p.name.clone())
            .collect();
        if let Some(p) = self
            .policies
            .iter()
            .find(|p| p.action == Action::Deny && p.matches(r))
        {
            return Decision {
                denied_by: Some(p.name.clone()),
                audited,
            };
        }
        let mut allows = self.policies.iter().filter(|p| p.action == Action::Allow);
        let any_allow = self.policies.iter().any(|p| p.action == Action::Allow);
        let denied_by = (any_allow && !allows.any(|p| p.matches(r))).then(|| "none".to_string());
        Decision { denied_by, audited }
    }

    /// Whether any policy needs the request's attributes at all.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Rule {
        serde_json::from_str(json).expect("rule")
    }

    fn policy(name: &str, action: Action, rules: Option<Vec<Rule>>) -> Policy {
        Policy {
            name: name.into(),
            action,
            rules,
        }
    }

    fn req(principal: Option<&str>, method: &str, path: &str) -> Request {
        Request {
            principal: principal.map(String::from),
            source_ip: "10.1.2.3".parse().ok(),
            remote_ip: "10.1.2.3".parse().ok(),
            destination_port: Some(8443),
            host: "shop.example.com".into(),
            method: method.into(),
            path: path.into(),
            headers: vec![("x-user".into(), "alice".into())],
            ..Request::default()
        }
    }

    #[test]
    fn string_and_ip_matching() {
        assert!(value_matches("/api/*", "/api/x"));
        assert!(value_matches("*.png", "/a.png"));
        assert!(value_matches("*", "x"));
        assert!(!value_matches("*", ""));
        assert!(!value_matches("/api", "/api/x"));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(cidr_contains("10.0.0.0/8", ip("10.9.9.9")));
        assert!(!cidr_contains("10.0.0.0/8", ip("11.0.0.1")));
        assert!(cidr_contains("10.1.2.3", ip("10.1.2.3")));
        assert!(cidr_contains("0.0.0.0/0", ip("1.2.3.4")));
        assert!(cidr_contains("::1/128", ip("::1")));
        assert!(!cidr_contains("10.0.0.0/8", ip("::1")));
        assert!(valid_cidr("192.168.0.0/16") && valid_cidr("::/0") && !valid_cidr("10.0.0.0/33"));
        assert!(!valid_cidr("ten.0.0.0/8"));
    }

    #[test]
    fn request_principals_and_jwt_claims() {
        let cfg = AuthzConfig {
            policies: vec![policy(
                "shop.jwt",
                Action::Allow,
                Some(vec![rule(
                    r#"{"from":[{"source":{"requestPrincipals":["https://idp.test/*"],
                                           "notRequestPrincipals":["*/mallory"]}}],
                        "when":[{"key":"request.auth.claims[groups]","values":["admin"]},
                                {"key":"request.auth.claims[org][tier]","notValues":["free"]},
                                {"key":"request.auth.audiences","values":["shop"]}]}"#,
                )]),
            )],
        };
        let with = |principal: &str, claims: serde_json::Value| Request {
            request_principal: Some(principal.into()),
            claims: Some(claims),
            ..req(None, "GET", "/")
        };
        let good = serde_json::json!({"groups": ["dev", "admin"], "aud": "shop",
                                      "org": {"tier": "gold"}});
        assert_eq!(
            cfg.evaluate(&with("https://idp.test/alice", good.clone()))
                .denied_by,
            None
        );
        // No token at all: no request principal, so the ALLOW does not match.
        assert!(cfg.evaluate(&req(None, "GET", "/")).denied_by.is_some());
        assert!(cfg
            .evaluate(&with("https://other.test/alice", good.clone()))
            .denied_by
            .is_some());
        assert!(cfg
            .evaluate(&with("https://idp.test/mallory", good.clone()))
            .denied_by
            .is_some());
        let mut free = good.clone();
        free["org"]["tier"] = "free".into();
        assert!(cfg
            .evaluate(&with("https://idp.test/alice", free))
            .denied_by
            .is_some());
        let mut dev = good.clone();
        dev["groups"] = serde_json::json!(["dev"]);
        assert!(cfg
            .evaluate(&with("https://idp.test/alice", dev))
            .denied_by
            .is_some());
        let mut aud = good;
        aud["aud"] = serde_json::json!(["other", "shop"]);
        assert_eq!(
            cfg.evaluate(&with("https://idp.test/alice", aud)).denied_by,
            None
        );
    }

    #[test]
    fn deny_before_allow_and_allow_nothing() {
        let allow_frontend = policy(
            "shop.allow",
            Action::Allow,
            Some(vec![rule(
                r#"{"from":[{"source":{"principals":["cluster.local/ns/shop/sa/frontend"]}}],
                    "to":[{"operation":{"methods":["GET"],"paths":["/api/*"]}}]}"#,
            )]),
        );
        let deny_admin = policy(
            "shop.deny",
            Action::Deny,
            Some(vec![rule(
                r#"{"to":[{"operation":{"paths":["/api/admin*"]}}]}"#,
            )]),
        );
        let cfg = AuthzConfig {
            policies: vec![allow_frontend.clone(), deny_admin],
        };
        let fe = Some("cluster.local/ns/shop/sa/frontend");
        assert_eq!(cfg.evaluate(&req(fe, "GET", "/api/items")).denied_by, None);
        assert_eq!(
            cfg.evaluate(&req(fe, "GET", "/api/admin"))
                .denied_by
                .as_deref(),
            Some("shop.deny")
        );
        assert_eq!(
            cfg.evaluate(&req(fe, "POST", "/api/items"))
                .denied_by
                .as_deref(),
            Some("none")
        );
        assert_eq!(
            cfg.evaluate(&req(None, "GET", "/api/items"))
                .denied_by
                .as_deref(),
            Some("none"),
            "no mTLS: no principal"
        );
        // No policies: allowed. An ALLOW policy without rules: nothing is allowed.
        assert_eq!(
            AuthzConfig::default()
                .evaluate(&req(None, "GET", "/"))
                .denied_by,
            None
        );
        let nothing = AuthzConfig {
            policies: vec![policy("ns.nothing", Action::Allow, None)],
        };
        assert!(nothing.evaluate(&req(fe, "GET", "/")).denied_by.is_some());
        // `rules: [{}]` allows everything.
        let all = AuthzConfig {
            policies: vec![policy("ns.all", Action::Allow, Some(vec![Rule::default()]))],
        };
        assert_eq!(all.evaluate(&req(None, "GET", "/")).denied_by, None);
    }

    #[test]
    fn negations_namespaces_ports_hosts_and_conditions() {
        let fe = Some("cluster.local/ns/shop/sa/frontend");
        let m = |json: &str, r: &Request| rule(json).matches(r);
        let r = req(fe, "GET", "/");
        assert!(m(r#"{"from":[{"source":{"namespaces":["shop"]}}]}"#, &r));
        assert!(!m(
            r#"{"from":[{"source":{"notNamespaces":["shop"]}}]}"#,
            &r
        ));
        assert!(m(
            r#"{"from":[{"source":{"notPrincipals":["*"]}}]}"#,
            &req(None, "GET", "/")
        ));
        assert!(m(
            r#"{"from":[{"source":{"ipBlocks":["10.0.0.0/8"]}}]}"#,
            &r
        ));
        assert!(!m(
            r#"{"from":[{"source":{"notRemoteIpBlocks":["10.1.0.0/16"]}}]}"#,
            &r
        ));
        assert!(m(
            r#"{"to":[{"operation":{"ports":["8443"],"hosts":["*.EXAMPLE.com"]}}]}"#,
            &r
        ));
        assert!(!m(
            r#"{"to":[{"operation":{"notHosts":["shop.example.com"]}}]}"#,
            &r
        ));
        assert!(m(
            r#"{"when":[{"key":"request.headers[X-User]","values":["ali*"]}]}"#,
            &r
        ));
        assert!(!m(
            r#"{"when":[{"key":"request.headers[x-user]","notValues":["alice"]}]}"#,
            &r
        ));
        assert!(m(
            r#"{"when":[{"key":"source.ip","values":["10.1.0.0/16"]}]}"#,
            &r
        ));
        assert!(m(
            r#"{"when":[{"key":"destination.port","values":["8443"]}]}"#,
            &r
        ));
        assert!(m(
            r#"{"when":[{"key":"source.namespace","values":["shop"]}]}"#,
            &r
        ));
        // Every condition must hold; any from and any to.
        assert!(!m(
            r#"{"when":[{"key":"source.namespace","values":["shop"]},{"key":"request.headers[x-user]","values":["bob"]}]}"#,
            &r
        ));
        assert!(m(
            r#"{"from":[{"source":{"namespaces":["other"]}},{"source":{"namespaces":["shop"]}}]}"#,
            &r
        ));
        assert!(supported_key("request.headers[x]") && supported_key("request.auth.claims[a][b]"));
        assert!(!supported_key("request.auth.claims[]") && !supported_key("request.auth.foo"));
    }

    #[test]
    fn audit_only_marks() {
        let cfg = AuthzConfig {
            policies: vec![policy(
                "ns.audit",
                Action::Audit,
                Some(vec![rule(
                    r#"{"to":[{"operation":{"methods":["DELETE"]}}]}"#,
                )]),
            )],
        };
        let d = cfg.evaluate(&req(None, "DELETE", "/x"));
        assert_eq!(d.denied_by, None);
        assert_eq!(d.audited, ["ns.audit"]);
        assert!(cfg.evaluate(&req(None, "GET", "/x")).audited.is_empty());
    }
}
