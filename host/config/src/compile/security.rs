//! AuthorizationPolicy and RequestAuthentication: the authz and JWT filters' configurations.

use super::*;

/// The AuthorizationPolicies that apply to this workload, as the built-in authz filter's
/// configuration; `None` when there are none. Checked here, so that a policy Lateen cannot
/// enforce is refused with its line rather than half-enforced.
pub(super) fn authz_filter(
    res: &Resources,
    w: &WorkloadInfo,
    rt: &Runtime,
    opts: &BuildOptions,
    errors: &mut Vec<ConfigError>,
) -> Option<FilterSpec> {
    use lateen_authz::config::{self as authz, Action, AuthzConfig, Policy};
    let mut cfg = AuthzConfig::default();
    for ap in &res.authorization_policies {
        let before = errors.len();
        let action = match ap.spec.action.as_deref().unwrap_or("ALLOW") {
            "ALLOW" => Action::Allow,
            "DENY" => Action::Deny,
            "AUDIT" => Action::Audit,
            "CUSTOM" => {
                errors.push(ap.info.error(
                    "spec.action",
                    "CUSTOM (an external authorizer) is not supported yet; refused rather than \
                     skipped",
                ));
                continue;
            }
            other => {
                errors.push(ap.info.error(
                    "spec.action",
                    format!("unknown action `{other}`; expected ALLOW, DENY or AUDIT"),
                ));
                continue;
            }
        };
        if ap.spec.target_ref.is_some() || !ap.spec.target_refs.is_empty() {
            errors.push(ap.info.error(
                "spec.targetRefs",
                "targetRefs are not supported yet; use selector",
            ));
        }
        for (i, rule) in ap.spec.rules.iter().flatten().enumerate() {
            for (f, from) in rule.from.iter().enumerate() {
                let at = format!("spec.rules[{i}].from[{f}].source");
                let s = &from.source;
                for (field, blocks) in [
                    ("ipBlocks", &s.ip_blocks),
                    ("notIpBlocks", &s.not_ip_blocks),
                    ("remoteIpBlocks", &s.remote_ip_blocks),
                    ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
                ] {
                    for b in blocks.iter().filter(|b| !authz::valid_cidr(b)) {
                        errors.push(ap.info.error(
                            &format!("{at}.{field}"),
                            format!("`{b}` is not an IP address or CIDR range"),
                        ));
                    }
                }
            }
            for (c, cond) in rule.when.iter().enumerate() {
                if !authz::supported_key(&cond.key) {
                    errors.push(ap.info.error(
                        &format!("spec.rules[{i}].when[{c}].key"),
                        format!(
                            "unsupported key `{}`; expected request.headers[NAME], source.ip, \
                             remote.ip, source.namespace, source.principal, destination.ip, \
                             destination.port, connection.sni, request.auth.principal, \
                             request.auth.audiences, request.auth.presenter or \
                             request.auth.claims[NAME]",
                            cond.key
                        ),
                    ));
                }
                if cond.values.is_empty() && cond.not_values.is_empty() {
                    errors.push(ap.info.error(
                        &format!("spec.rules[{i}].when[{c}]"),
                        "set values or notValues",
                    ));
                }
            }
        }
        if errors.len() > before || !selects(&ap.info, ap.spec.selector.as_ref(), w) {
            continue;
        }
        cfg.policies.push(Policy {
            name: format!("{}.{}", ap.info.namespace, ap.info.name),
            action,
            rules: ap.spec.rules.clone(),
        });
    }
    if cfg.is_empty() {
        return None;
    }
    let plugin = match load_builtin(rt, &opts.builtin_filters, "authz", Phase::Authz) {
        Ok(p) => p,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    match serde_json::to_vec(&cfg) {
        Ok(json) => Some(FilterSpec {
            plugin,
            configuration: Bytes::from(json),
            scope: None,
        }),
        Err(e) => {
            errors.push(ConfigError {
                file: PathBuf::new(),
                doc: 0,
                line: 0,
                resource: None,
                field: String::new(),
                message: format!("cannot encode the authorization policies: {e}"),
            });
            None
        }
    }
}

/// Envoy's default for how long a fetched JWKS is used (`remote_jwks.cache_duration`).
pub(super) const JWKS_CACHE_MS: u64 = 600_000;

/// The JWT filter for the RequestAuthentication rules that select this workload. Key sets
/// given inline or as `file://` are read and checked here; `http(s)://` ones are fetched
/// by the filter through the ServiceEntry cluster of their host.
pub(super) fn jwt_filter(
    res: &Resources,
    w: &WorkloadInfo,
    clusters: &HashMap<String, Arc<ClusterSpec>>,
    files: &TlsContext,
    rt: &Runtime,
    opts: &BuildOptions,
    errors: &mut Vec<ConfigError>,
) -> Option<FilterSpec> {
    use lateen_jwt::config::JwtConfig;
    let mut cfg = JwtConfig::default();
    for ra in &res.request_authentications {
        if ra.spec.target_ref.is_some() || !ra.spec.target_refs.is_empty() {
            errors.push(ra.info.error(
                "spec.targetRefs",
                "targetRefs are not supported yet; use selector",
            ));
            continue;
        }
        let selected = selects(&ra.info, ra.spec.selector.as_ref(), w);
        for (i, rule) in ra.spec.jwt_rules.iter().enumerate() {
            let before = errors.len();
            let provider = jwt_provider(ra, i, rule, (clusters, files), errors);
            if selected && errors.len() == before {
                cfg.providers.push(provider);
            }
        }
    }
    if cfg.providers.is_empty() {
        return None;
    }
    let plugin = match load_builtin(rt, &opts.builtin_filters, "jwt", Phase::Authn) {
        Ok(p) => p,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    match serde_json::to_vec(&cfg) {
        Ok(json) => Some(FilterSpec {
            plugin,
            configuration: Bytes::from(json),
            scope: None,
        }),
        Err(e) => {
            errors.push(ConfigError {
                file: PathBuf::new(),
                doc: 0,
                line: 0,
                resource: None,
                field: String::new(),
                message: format!("cannot encode the JWT rules: {e}"),
            });
            None
        }
    }
}

/// One `jwtRules` entry as the JWT filter's provider: issuer, audiences, where the token
/// is read from, what is forwarded, and the key set (inline, from a file, or fetched
/// through the cluster of its host).
fn jwt_provider(
    ra: &Doc<RequestAuthenticationSpec>,
    i: usize,
    rule: &JwtRule,
    (clusters, files): (&HashMap<String, Arc<ClusterSpec>>, &TlsContext),
    errors: &mut Vec<ConfigError>,
) -> lateen_jwt::config::Provider {
    use lateen_jwt::config as jwt;
    let at = |f: &str| format!("spec.jwtRules[{i}].{f}");
    if rule.issuer.is_empty() {
        errors.push(ra.info.error(&at("issuer"), "issuer is required"));
    }
    for (h, loc) in rule.from_headers.iter().enumerate() {
        if http::HeaderName::from_bytes(loc.name.as_bytes()).is_err() {
            errors.push(ra.info.error(
                &at(&format!("fromHeaders[{h}].name")),
                format!("`{}` is not a header name", loc.name),
            ));
        }
    }
    let timeout_ms = match &rule.timeout {
        None => 5_000,
        Some(t) => match parse_duration_ms(t) {
            Some(ms) if ms > 0 => ms,
            _ => {
                errors.push(ra.info.error(
                    &at("timeout"),
                    format!("`{t}` is not a positive duration (e.g. 5s)"),
                ));
                0
            }
        },
    };
    let mut provider = jwt::Provider {
        name: format!("{}/{}#{i}", ra.info.namespace, ra.info.name),
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        from_headers: rule
            .from_headers
            .iter()
            .map(|h| jwt::HeaderLocation {
                name: h.name.to_ascii_lowercase(),
                prefix: h.prefix.clone(),
            })
            .collect(),
        from_params: rule.from_params.clone(),
        from_cookies: rule.from_cookies.clone(),
        forward_original_token: rule.forward_original_token,
        output_payload_to_header: rule.output_payload_to_header.clone(),
        output_claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .map(|c| jwt::ClaimToHeader {
                header: c.header.to_ascii_lowercase(),
                claim: c.claim.clone(),
            })
            .collect(),
        ..Default::default()
    };
    match (&rule.jwks, &rule.jwks_uri) {
        (Some(_), Some(_)) => errors.push(
            ra.info
                .error(&at("jwks"), "set one of jwks and jwksUri, not both"),
        ),
        (None, None) => errors.push(ra.info.error(
            &at("jwksUri"),
            "set jwks or jwksUri (OpenID discovery from the issuer is not supported)",
        )),
        (Some(text), None) => {
            if let Err(e) = lateen_jwt::jwks::Jwks::parse(text.as_bytes()) {
                errors.push(ra.info.error(&at("jwks"), e.to_string()));
            }
            provider.jwks = Some(text.clone());
        }
        (None, Some(uri)) => match jwks_source(uri, &ra.info, clusters, files) {
            Ok(JwksSource::Inline(text)) => provider.jwks = Some(text),
            Ok(JwksSource::Remote(cluster, authority, path)) => {
                provider.remote = Some(jwt::Remote {
                    cluster,
                    authority,
                    path,
                    timeout_ms,
                    cache_ms: JWKS_CACHE_MS,
                })
            }
            Err(msg) => errors.push(ra.info.error(&at("jwksUri"), msg)),
        },
    }
    provider
}

pub(super) enum JwksSource {
    /// The key set's text (read from a file).
    Inline(String),
    /// Fetch from this cluster: cluster name, `:authority`, `:path`.
    Remote(String, String, String),
}

/// Where a `jwksUri` leads: a file (read and checked now) or a ServiceEntry host.
pub(super) fn jwks_source(
    uri: &str,
    info: &DocInfo,
    clusters: &HashMap<String, Arc<ClusterSpec>>,
    files: &TlsContext,
) -> Result<JwksSource, String> {
    if let Some(path) = uri.strip_prefix("file://") {
        let path = files.track(info, path);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        lateen_jwt::jwks::Jwks::parse(text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(JwksSource::Inline(text));
    }
    let parsed: http::Uri = uri
        .parse()
        .map_err(|e| format!("`{uri}` is not a URL: {e}"))?;
    let (https, default_port) = match parsed.scheme_str() {
        Some("http") => (false, 80),
        Some("https") => (true, 443),
        _ => {
            return Err(format!(
                "`{uri}`: expected an http://, https:// or file:// URL"
            ))
        }
    };
    let host = parsed.host().unwrap_or_default();
    let port = parsed.port_u16().unwrap_or(default_port);
    let name = lateen_sdk::route::outbound_cluster(u32::from(port), "", host);
    let cluster = clusters.get(&name).ok_or_else(|| {
        format!(
            "no ServiceEntry defines `{host}` port {port}, so the key set cannot be fetched; \
             add one (the proxy reaches only the services it knows)"
        )
    })?;
    if https && cluster.tls.is_none() {
        return Err(format!(
            "`{uri}` is https but cluster {name} has plain TCP; add a DestinationRule with \
             trafficPolicy.tls.mode SIMPLE for `{host}`"
        ));
    }
    let path = parsed
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let authority = match parsed.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    Ok(JwksSource::Remote(name, authority, path))
}
