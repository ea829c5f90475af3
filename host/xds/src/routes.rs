//! RouteConfiguration: virtual hosts and routes, their matches and actions, decoded into
//! the router filter's table.

use super::*;

/// RDS.
pub fn route_configuration(any: &Any) -> Result<Vec<VirtualHostConfig>, String> {
    let mut rc: RouteConfiguration = unpack(any)?;
    route_config_of(&mut rc).map_err(|e| format!("RouteConfiguration `{}`{e}", rc.name))
}

pub(crate) fn route_config_of(
    rc: &mut RouteConfiguration,
) -> Result<Vec<VirtualHostConfig>, String> {
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

pub(crate) fn string_matcher(m: &mut StringMatcher, at: &str) -> Result<StringMatch, String> {
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

pub(crate) fn regex_match(r: String) -> StringMatch {
    // `(?s)` so that `.` spans any byte a header value may hold.
    StringMatch {
        regex: Some(format!("(?s){r}")),
        ..Default::default()
    }
}

/// A header matcher: into `headers` or (inverted) `without_headers`.
pub(crate) fn header_matcher(
    h: &mut HeaderMatcher,
    m: &mut HttpMatchRequest,
    at: &str,
) -> Result<(), String> {
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

pub(crate) fn xds_route(
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
    let m = route_match(rm)?;
    let mut rc = RouteConfig {
        name: r.name.clone(),
        matches: vec![m],
        headers: header_ops(r)?,
        ..Default::default()
    };
    match &mut r.action {
        Some(route::Action::Route(a)) => route_action(a, &mut rc)?,
        Some(route::Action::Redirect(red)) => rc.redirect = Some(redirect(red)?),
        Some(route::Action::DirectResponse(d)) => rc.direct_response = Some(direct_response(d)?),
        _ => return Err(": expected route, redirect or direct_response".into()),
    }
    Ok(rc)
}

/// A route's match: path (prefix, exact or regex), case, headers and query parameters.
fn route_match(
    rm: &mut envoy_types::pb::envoy::config::route::v3::RouteMatch,
) -> Result<HttpMatchRequest, String> {
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
    Ok(m)
}

/// A redirect action as Istio's HTTPRedirect.
fn redirect(
    red: &mut envoy_types::pb::envoy::config::route::v3::RedirectAction,
) -> Result<HttpRedirect, String> {
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
        Some(_) => return Err(".redirect: only path_redirect rewrites the path in Lateen".into()),
    };
    Ok(HttpRedirect {
        uri,
        authority: (!red.host_redirect.is_empty()).then(|| red.host_redirect.clone()),
        port: (red.port_redirect != 0).then_some(red.port_redirect),
        derive_port: None,
        scheme: match &red.scheme_rewrite_specifier {
            Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)) => {
                Some("https".into())
            }
            Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s)) => Some(s.clone()),
            _ => None,
        },
        redirect_code: Some(code),
    })
}

/// A direct response with an inline body.
fn direct_response(
    d: &mut envoy_types::pb::envoy::config::route::v3::DirectResponseAction,
) -> Result<HttpDirectResponse, String> {
    only!(d, ".direct_response", [status, body]);
    let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
        None => None,
        Some(data_source::Specifier::InlineString(s)) => Some(s.clone()),
        Some(data_source::Specifier::InlineBytes(b)) => {
            Some(String::from_utf8_lossy(b).into_owned())
        }
        Some(_) => {
            return Err(".direct_response.body: expected inline_string or inline_bytes".into())
        }
    };
    Ok(HttpDirectResponse {
        status: d.status,
        body: body.map(|s| HttpBody {
            string: Some(s),
            bytes: None,
        }),
    })
}

pub(crate) fn route_action(
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

pub(crate) fn header_ops(
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
