//! Compiled Istio matchers: regexes are compiled once, when the configuration is loaded,
//! never per request. Evaluation is pure and natively testable through [`RequestView`].
//!
//! ```rust
//! use lateen_sdk::{istio::HttpMatchRequest, matcher::CompiledMatch};
//!
//! let m: HttpMatchRequest = serde_json::from_str(
//!     r#"{"method": {"exact": "GET"}, "cookies": {"beta": {}}}"#,
//! )
//! .unwrap();
//! let m = CompiledMatch::compile(&m).unwrap();
//!
//! let req = |cookie: &str| {
//!     vec![
//!         (":method".to_string(), "GET".to_string()),
//!         ("cookie".to_string(), cookie.to_string()),
//!     ]
//! };
//! assert!(m.matches(&req("beta=1; theme=dark")));
//! assert!(!m.matches(&req("theme=dark")));
//! ```

use crate::istio::{CookieMatch, HttpMatchRequest, StringMatch, UserAgentMatch};
use crate::useragent;
use regex::Regex;

/// A host without its port, as Istio compares hosts: `a.test:8080` → `a.test`,
/// `[::1]:80` → `[::1]`; a host without a port is returned as it is.
///
/// ```
/// use lateen_sdk::matcher::strip_port;
/// assert_eq!(strip_port("shop.example.com:8443"), "shop.example.com");
/// assert_eq!(strip_port("[::1]:80"), "[::1]");
/// ```
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |i| &authority[..=i]);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// What a matcher can see of a request. The router implements it over the proxy-wasm
/// header map; tests implement it over plain vectors. `[(String, String)]` and
/// `Vec<(String, String)>` implement it with header names compared case-insensitively.
///
/// ```rust
/// use lateen_sdk::{istio::HttpMatchRequest, matcher::{CompiledMatch, RequestView}};
///
/// struct Req {
///     headers: Vec<(String, String)>,
///     port: u32,
/// }
///
/// impl RequestView for Req {
///     fn header(&self, name: &str) -> Option<&str> {
///         self.headers.header(name)
///     }
///     fn port(&self) -> Option<u32> {
///         Some(self.port)
///     }
/// }
///
/// let m: HttpMatchRequest = serde_json::from_str(r#"{"port": 8080}"#).unwrap();
/// let m = CompiledMatch::compile(&m).unwrap();
/// assert!(m.matches(&Req { headers: vec![], port: 8080 }));
/// assert!(!m.matches(&Req { headers: vec![], port: 9090 }));
/// ```
pub trait RequestView {
    /// A request header by lower-case name, including the pseudo-headers `:path`, `:method`,
    /// `:authority` and `:scheme`.
    ///
    /// ```rust
    /// use lateen_sdk::matcher::RequestView;
    /// let req = vec![("X-Env".to_string(), "dev".to_string())];
    /// assert_eq!(req.header("x-env"), Some("dev"));
    /// assert_eq!(req.header(":path"), None);
    /// ```
    fn header(&self, name: &str) -> Option<&str>;
    /// The listener port the request arrived on, if known. The default knows none.
    ///
    /// ```rust
    /// use lateen_sdk::matcher::RequestView;
    /// let req: Vec<(String, String)> = vec![];
    /// assert_eq!(req.port(), None);
    /// ```
    fn port(&self) -> Option<u32> {
        None
    }
    /// The values of a claim of the request's verified JWT ([`crate::claims::values`]);
    /// none when the request carries no verified token. The default has none.
    ///
    /// ```rust
    /// use lateen_sdk::{claims, matcher::RequestView};
    ///
    /// struct WithToken(serde_json::Value);
    /// impl RequestView for WithToken {
    ///     fn header(&self, _name: &str) -> Option<&str> {
    ///         None
    ///     }
    ///     fn claim(&self, path: &[String]) -> Vec<String> {
    ///         claims::values(&self.0, path)
    ///     }
    /// }
    ///
    /// let req = WithToken(serde_json::json!({"org": {"tier": "gold"}}));
    /// assert_eq!(req.claim(&["org".into(), "tier".into()]), ["gold"]);
    /// let plain: Vec<(String, String)> = vec![];
    /// assert!(plain.claim(&["org".into()]).is_empty());
    /// ```
    fn claim(&self, _path: &[String]) -> Vec<String> {
        Vec::new()
    }
}

/// Istio's header name for a JWT claim match: `@request.auth.claims.a.b` → `a.b`.
///
/// ```rust
/// use lateen_sdk::{istio::HttpMatchRequest, matcher::{CompiledMatch, CLAIM_HEADER_PREFIX}};
/// let json = format!(r#"{{"headers": {{"{CLAIM_HEADER_PREFIX}role": {{"exact": "admin"}}}}}}"#);
/// let m: HttpMatchRequest = serde_json::from_str(&json).unwrap();
/// assert!(CompiledMatch::compile(&m).unwrap().uses_claims());
/// ```
pub const CLAIM_HEADER_PREFIX: &str = "@request.auth.claims.";

/// Header pairs as text, as `get_http_request_headers_bytes` returns them: a UTF-8 value
/// keeps its buffer (no copy), any other is read lossily, so a stray byte cannot panic a
/// filter.
///
/// ```rust
/// use lateen_sdk::matcher::text_headers;
/// let h = text_headers(vec![("x-a".into(), b"1".to_vec()), ("x-b".into(), vec![0xff])]);
/// assert_eq!(h, [("x-a".to_string(), "1".to_string()), ("x-b".into(), "\u{fffd}".into())]);
/// ```
pub fn text_headers(pairs: Vec<(String, Vec<u8>)>) -> Vec<(String, String)> {
    pairs
        .into_iter()
        .map(|(k, v)| {
            let v = String::from_utf8(v)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            (k, v)
        })
        .collect()
}

impl RequestView for [(String, String)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl RequestView for Vec<(String, String)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

/// Why a match could not be compiled.
///
/// ```rust
/// use lateen_sdk::{istio::HttpMatchRequest, matcher::CompiledMatch};
/// let m: HttpMatchRequest =
///     serde_json::from_str(r#"{"headers": {"x-env": {"regex": "("}}}"#).unwrap();
/// let err = CompiledMatch::compile(&m).unwrap_err();
/// assert_eq!(err.field, "headers.x-env.regex");
/// assert!(err.to_string().starts_with("headers.x-env.regex: invalid regex"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchError {
    /// Field path inside the match (`headers.x-env.regex`).
    pub field: String,
    /// What was wrong there.
    pub message: String,
}

impl std::fmt::Display for MatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for MatchError {}

/// A compiled `StringMatch`.
///
/// ```rust
/// use lateen_sdk::matcher::StrMatcher;
/// assert!(StrMatcher::Any.matches(""));
/// assert!(StrMatcher::Prefix("/api".into()).matches("/api/v1"));
/// assert!(!StrMatcher::Exact("/api".into()).matches("/api/v1"));
/// ```
#[derive(Debug, Clone)]
pub enum StrMatcher {
    /// `{}`: present with any value.
    Any,
    /// The value must equal this.
    Exact(String),
    /// The value must start with this.
    Prefix(String),
    /// Anchored, so it must match the whole value as in Envoy's `safe_regex`.
    Regex(Regex),
}

impl StrMatcher {
    /// Compiles a `StringMatch`; `field` names it in errors. With `ignore_case`, `exact` and
    /// `prefix` are lower-cased, so lower-case the value before [`matches`](Self::matches).
    ///
    /// ```
    /// use lateen_sdk::{istio::StringMatch, matcher::StrMatcher};
    /// let m = StrMatcher::compile(&StringMatch { regex: Some("v[12]".into()), ..Default::default() },
    ///                             false, "uri").unwrap();
    /// assert!(m.matches("v1") && !m.matches("v10"));
    ///
    /// let m = StrMatcher::compile(&StringMatch { exact: Some("/Login".into()), ..Default::default() },
    ///                             true, "uri").unwrap();
    /// assert!(m.matches("/login") && !m.matches("/Login"));
    ///
    /// let both = StringMatch { exact: Some("a".into()), prefix: Some("a".into()), ..Default::default() };
    /// assert_eq!(StrMatcher::compile(&both, false, "uri").unwrap_err().field, "uri");
    /// ```
    pub fn compile(m: &StringMatch, ignore_case: bool, field: &str) -> Result<Self, MatchError> {
        if m.set_count() > 1 {
            return Err(MatchError {
                field: field.into(),
                message: "set only one of exact, prefix, regex".into(),
            });
        }
        let lower = |s: &str| {
            if ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        Ok(if let Some(e) = &m.exact {
            StrMatcher::Exact(lower(e))
        } else if let Some(p) = &m.prefix {
            StrMatcher::Prefix(lower(p))
        } else if let Some(r) = &m.regex {
            StrMatcher::Regex(compile_regex(r, field)?)
        } else {
            StrMatcher::Any
        })
    }

    /// Whether `value` matches.
    ///
    /// ```rust
    /// use lateen_sdk::{istio::StringMatch, matcher::StrMatcher};
    /// let m = StrMatcher::compile(&StringMatch { prefix: Some("v".into()), ..Default::default() },
    ///                             false, "x").unwrap();
    /// assert!(m.matches("v2"));
    /// assert!(!m.matches("V2"));
    /// ```
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StrMatcher::Any => true,
            StrMatcher::Exact(e) => value == e,
            StrMatcher::Prefix(p) => value.starts_with(p.as_str()),
            StrMatcher::Regex(r) => r.is_match(value),
        }
    }
}

fn compile_regex(r: &str, field: &str) -> Result<Regex, MatchError> {
    Regex::new(&format!("^(?:{r})$")).map_err(|e| MatchError {
        field: format!("{field}.regex"),
        message: format!("invalid regex: {e}"),
    })
}

#[derive(Debug, Clone)]
enum CookieCond {
    Present(bool),
    Exact(String),
    Prefix(String),
    Contains(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
struct CompiledUa {
    device: Option<String>,
    os: Vec<String>,
    browser: Vec<String>,
}

/// A compiled `HTTPMatchRequest`. Build it with [`CompiledMatch::compile`]; evaluate it with
/// [`CompiledMatch::matches`].
///
/// ```rust
/// use lateen_sdk::{istio::HttpMatchRequest, matcher::CompiledMatch};
/// let m: HttpMatchRequest = serde_json::from_str(
///     r#"{"uri": {"exact": "/login"}, "queryParams": {"next": {}}}"#).unwrap();
/// let m = CompiledMatch::compile(&m).unwrap();
/// assert!(m.matches(&vec![(":path".to_string(), "/login?next=/home".to_string())]));
/// assert!(!m.matches(&vec![(":path".to_string(), "/login".to_string())]));
/// ```
#[derive(Debug, Clone)]
pub struct CompiledMatch {
    uri: Option<StrMatcher>,
    ignore_uri_case: bool,
    scheme: Option<StrMatcher>,
    method: Option<StrMatcher>,
    authority: Option<StrMatcher>,
    headers: Vec<(String, StrMatcher)>,
    without_headers: Vec<(String, StrMatcher)>,
    /// `@request.auth.claims.*` entries of `headers` / `withoutHeaders`: claim path, matcher.
    claims: Vec<(Vec<String>, StrMatcher)>,
    without_claims: Vec<(Vec<String>, StrMatcher)>,
    query: Vec<(String, StrMatcher)>,
    cookies: Vec<(String, CookieCond)>,
    user_agent: Option<CompiledUa>,
    port: Option<u32>,
}

const KNOWN_DEVICES: &[&str] = &["mobile", "desktop", "bot", "other"];
const KNOWN_OS: &[&str] = &[
    "ios", "android", "windows", "macos", "linux", "chromeos", "other",
];
const KNOWN_BROWSERS: &[&str] = &[
    "chrome",
    "firefox",
    "safari",
    "edge",
    "opera",
    "internet explorer",
    "other",
];

impl CompiledMatch {
    /// Compiles a match, checking every regex and every user-agent family name.
    ///
    /// ```
    /// use lateen_sdk::{istio::HttpMatchRequest, matcher::CompiledMatch};
    /// let m: HttpMatchRequest = serde_json::from_str(r#"{"uri":{"prefix":"/a"}}"#).unwrap();
    /// let m = CompiledMatch::compile(&m).unwrap();
    /// let req = vec![(":path".to_string(), "/a/b".to_string())];
    /// assert!(m.matches(&req));
    /// ```
    pub fn compile(m: &HttpMatchRequest) -> Result<Self, MatchError> {
        let ic = m.ignore_uri_case;
        // `@request.auth.claims.a.b` entries are claim matches (claim names keep their case).
        let claims = |entries: &std::collections::BTreeMap<String, StringMatch>, what: &str| {
            entries
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(CLAIM_HEADER_PREFIX)?, k, v)))
                .map(|(path, k, v)| {
                    StrMatcher::compile(v, false, &format!("{what}.{k}"))
                        .map(|c| (path.split('.').map(String::from).collect(), c))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let map = |entries: &std::collections::BTreeMap<String, StringMatch>, what: &str| {
            entries
                .iter()
                .filter(|(k, _)| !k.starts_with(CLAIM_HEADER_PREFIX))
                .map(|(k, v)| {
                    StrMatcher::compile(v, false, &format!("{what}.{k}"))
                        .map(|c| (k.to_ascii_lowercase(), c))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let cookies = m
            .cookies
            .iter()
            .map(|(name, c)| compile_cookie(name, c).map(|c| (name.clone(), c)))
            .collect::<Result<Vec<_>, _>>()?;
        let compiled = CompiledMatch {
            uri: m
                .uri
                .as_ref()
                .map(|u| StrMatcher::compile(u, ic, "uri"))
                .transpose()?,
            ignore_uri_case: ic,
            scheme: m
                .scheme
                .as_ref()
                .map(|u| StrMatcher::compile(u, false, "scheme"))
                .transpose()?,
            method: m
                .method
                .as_ref()
                .map(|u| StrMatcher::compile(u, false, "method"))
                .transpose()?,
            authority: m
                .authority
                .as_ref()
                .map(|u| StrMatcher::compile(u, false, "authority"))
                .transpose()?,
            headers: map(&m.headers, "headers")?,
            without_headers: map(&m.without_headers, "withoutHeaders")?,
            claims: claims(&m.headers, "headers")?,
            without_claims: claims(&m.without_headers, "withoutHeaders")?,
            query: map(&m.query_params, "queryParams")?,
            cookies,
            user_agent: m.user_agent.as_ref().map(compile_ua).transpose()?,
            port: m.port,
        };
        Ok(compiled)
    }

    /// Whether any condition reads JWT claims (so the router fetches them only then).
    ///
    /// ```rust
    /// use lateen_sdk::{istio::HttpMatchRequest, matcher::CompiledMatch};
    /// let compile = |json: &str| {
    ///     CompiledMatch::compile(&serde_json::from_str::<HttpMatchRequest>(json).unwrap()).unwrap()
    /// };
    /// assert!(compile(r#"{"withoutHeaders": {"@request.auth.claims.banned": {}}}"#).uses_claims());
    /// assert!(!compile(r#"{"headers": {"x-env": {}}}"#).uses_claims());
    /// ```
    pub fn uses_claims(&self) -> bool {
        !self.claims.is_empty() || !self.without_claims.is_empty()
    }

    /// The `uri.prefix` of this match, if it is a prefix match (for prefix rewrites).
    ///
    /// ```
    /// use lateen_sdk::{istio::HttpMatchRequest, matcher::CompiledMatch};
    /// let m: HttpMatchRequest = serde_json::from_str(r#"{"uri":{"prefix":"/a"}}"#).unwrap();
    /// assert_eq!(CompiledMatch::compile(&m).unwrap().uri_prefix(), Some("/a"));
    /// ```
    pub fn uri_prefix(&self) -> Option<&str> {
        match &self.uri {
            Some(StrMatcher::Prefix(p)) => Some(p),
            _ => None,
        }
    }

    /// Whether every condition of this match holds for `req`. An empty match holds for
    /// every request.
    ///
    /// ```rust
    /// use lateen_sdk::{istio::HttpMatchRequest, matcher::CompiledMatch};
    /// let m: HttpMatchRequest = serde_json::from_str(
    ///     r#"{"authority": {"prefix": "api."}, "withoutHeaders": {"x-debug": {"exact": "1"}}}"#,
    /// ).unwrap();
    /// let m = CompiledMatch::compile(&m).unwrap();
    /// let req = |debug: &str| vec![
    ///     (":authority".to_string(), "api.example.com".to_string()),
    ///     ("x-debug".to_string(), debug.to_string()),
    /// ];
    /// assert!(m.matches(&req("0")));
    /// assert!(!m.matches(&req("1")));
    ///
    /// let any = CompiledMatch::compile(&HttpMatchRequest::default()).unwrap();
    /// assert!(any.matches(&Vec::<(String, String)>::new()));
    /// ```
    pub fn matches<R: RequestView + ?Sized>(&self, req: &R) -> bool {
        if let Some(p) = self.port {
            if req.port() != Some(p) {
                return false;
            }
        }
        if let Some(uri) = &self.uri {
            let full = req.header(":path").unwrap_or("/");
            // Envoy: prefix sees the whole :path; exact and regex see it without the query.
            let target = match uri {
                StrMatcher::Prefix(_) => full,
                _ => full.split_once('?').map_or(full, |(p, _)| p),
            };
            let ok = if self.ignore_uri_case {
                uri.matches(&target.to_ascii_lowercase())
            } else {
                uri.matches(target)
            };
            if !ok {
                return false;
            }
        }
        for (m, name) in [
            (&self.scheme, ":scheme"),
            (&self.method, ":method"),
            (&self.authority, ":authority"),
        ] {
            if let Some(m) = m {
                match req.header(name) {
                    Some(v) if m.matches(v) => {}
                    _ => return false,
                }
            }
        }
        for (name, m) in &self.headers {
            match req.header(name) {
                Some(v) if m.matches(v) => {}
                _ => return false,
            }
        }
        for (name, m) in &self.without_headers {
            if let Some(v) = req.header(name) {
                if m.matches(v) {
                    return false;
                }
            }
        }
        // A claim with several values (a list) matches when any of them does.
        for (path, m) in &self.claims {
            if !req.claim(path).iter().any(|v| m.matches(v)) {
                return false;
            }
        }
        for (path, m) in &self.without_claims {
            if req.claim(path).iter().any(|v| m.matches(v)) {
                return false;
            }
        }
        if !self.query.is_empty() {
            let path = req.header(":path").unwrap_or("");
            let query = path.split_once('?').map_or("", |(_, q)| q);
            for (name, m) in &self.query {
                let found = query_param(query, name);
                match found {
                    Some(v) if m.matches(v) => {}
                    _ => return false,
                }
            }
        }
        if !self.cookies.is_empty() {
            let header = req.header("cookie").unwrap_or("");
            for (name, cond) in &self.cookies {
                let value = cookie(header, name);
                let ok = match cond {
                    CookieCond::Present(want) => value.is_some() == *want,
                    CookieCond::Exact(e) => value == Some(e.as_str()),
                    CookieCond::Prefix(p) => value.is_some_and(|v| v.starts_with(p.as_str())),
                    CookieCond::Contains(c) => value.is_some_and(|v| v.contains(c.as_str())),
                    CookieCond::Regex(r) => value.is_some_and(|v| r.is_match(v)),
                };
                if !ok {
                    return false;
                }
            }
        }
        if let Some(ua) = &self.user_agent {
            let info = useragent::classify(req.header("user-agent").unwrap_or(""));
            if let Some(d) = &ua.device {
                if !d.eq_ignore_ascii_case(info.device) {
                    return false;
                }
            }
            if !ua.os.is_empty() && !ua.os.iter().any(|o| o.eq_ignore_ascii_case(info.os)) {
                return false;
            }
            if !ua.browser.is_empty()
                && !ua
                    .browser
                    .iter()
                    .any(|b| b.eq_ignore_ascii_case(info.browser))
            {
                return false;
            }
        }
        true
    }
}

fn compile_cookie(name: &str, c: &CookieMatch) -> Result<CookieCond, MatchError> {
    let field = format!("cookies.{name}");
    let set = [
        c.exact.is_some(),
        c.prefix.is_some(),
        c.contains.is_some(),
        c.regex.is_some(),
        c.present.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set > 1 {
        return Err(MatchError {
            field,
            message: "set only one of exact, prefix, contains, regex, present".into(),
        });
    }
    Ok(if let Some(e) = &c.exact {
        CookieCond::Exact(e.clone())
    } else if let Some(p) = &c.prefix {
        CookieCond::Prefix(p.clone())
    } else if let Some(s) = &c.contains {
        CookieCond::Contains(s.clone())
    } else if let Some(r) = &c.regex {
        CookieCond::Regex(compile_regex(r, &field)?)
    } else {
        CookieCond::Present(c.present.unwrap_or(true))
    })
}

fn compile_ua(ua: &UserAgentMatch) -> Result<CompiledUa, MatchError> {
    let check = |v: &str, known: &[&str], field: &str| {
        if known.contains(&v.to_ascii_lowercase().as_str()) {
            Ok(())
        } else {
            Err(MatchError {
                field: format!("userAgent.{field}"),
                message: format!("unknown value `{v}`; expected one of {}", known.join(", ")),
            })
        }
    };
    if let Some(d) = &ua.device {
        check(d, KNOWN_DEVICES, "device")?;
    }
    for o in &ua.os {
        check(o, KNOWN_OS, "os")?;
    }
    for b in &ua.browser {
        check(b, KNOWN_BROWSERS, "browser")?;
    }
    Ok(CompiledUa {
        device: ua.device.clone(),
        os: ua.os.clone(),
        browser: ua.browser.clone(),
    })
}

/// The value of cookie `name` in a `cookie` header (`a=1; b=2`). Surrounding double quotes
/// are removed.
///
/// ```
/// assert_eq!(lateen_sdk::matcher::cookie("a=1; user=tester", "user"), Some("tester"));
/// assert_eq!(lateen_sdk::matcher::cookie("a=1", "user"), None);
/// assert_eq!(lateen_sdk::matcher::cookie(r#"s="x y""#, "s"), Some("x y"));
/// ```
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

/// The raw value of query parameter `name` (`a=1&b=2`). A bare `a` yields `Some("")`.
///
/// ```
/// assert_eq!(lateen_sdk::matcher::query_param("a=1&b=2", "b"), Some("2"));
/// assert_eq!(lateen_sdk::matcher::query_param("debug&b=2", "debug"), Some(""));
/// assert_eq!(lateen_sdk::matcher::query_param("a=1", "b"), None);
/// ```
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|part| match part.split_once('=') {
            Some((k, v)) if k == name => Some(v),
            None if part == name => Some(""),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_port_handles_v6() {
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
    }

    fn req(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn compile(json: &str) -> CompiledMatch {
        CompiledMatch::compile(&serde_json::from_str(json).expect("json")).expect("compile")
    }

    #[test]
    fn uri_prefix_is_plain_string_prefix() {
        let m = compile(r#"{"uri":{"prefix":"/api"}}"#);
        assert!(m.matches(&req(&[(":path", "/api")])));
        assert!(m.matches(&req(&[(":path", "/apiv2/x")])));
        assert!(!m.matches(&req(&[(":path", "/ap")])));
    }

    #[test]
    fn uri_exact_ignores_query_and_case_option() {
        let m = compile(r#"{"uri":{"exact":"/Login"},"ignoreUriCase":true}"#);
        assert!(m.matches(&req(&[(":path", "/login?next=/")])));
        assert!(m.matches(&req(&[(":path", "/LOGIN")])));
        assert!(!m.matches(&req(&[(":path", "/login/x")])));
        let m = compile(r#"{"uri":{"exact":"/Login"}}"#);
        assert!(!m.matches(&req(&[(":path", "/login")])));
    }

    #[test]
    fn regex_is_anchored() {
        let m = compile(r#"{"uri":{"regex":"/v[0-9]+/.*"}}"#);
        assert!(m.matches(&req(&[(":path", "/v1/x")])));
        assert!(!m.matches(&req(&[(":path", "/api/v1/x")])));
    }

    #[test]
    fn headers_presence_and_without() {
        let m = compile(r#"{"headers":{"X-Env":{}},"withoutHeaders":{"x-debug":{"exact":"1"}}}"#);
        assert!(m.matches(&req(&[("x-env", "")])));
        assert!(!m.matches(&req(&[])));
        assert!(!m.matches(&req(&[("x-env", "a"), ("x-debug", "1")])));
        assert!(m.matches(&req(&[("x-env", "a"), ("x-debug", "2")])));
    }

    #[test]
    fn method_authority_query() {
        let m = compile(
            r#"{"method":{"exact":"POST"},"authority":{"prefix":"api."},"queryParams":{"v":{"exact":"2"}}}"#,
        );
        let ok = req(&[
            (":method", "POST"),
            (":authority", "api.x"),
            (":path", "/?a=1&v=2"),
        ]);
        assert!(m.matches(&ok));
        let bad = req(&[
            (":method", "GET"),
            (":authority", "api.x"),
            (":path", "/?v=2"),
        ]);
        assert!(!m.matches(&bad));
        let bad = req(&[
            (":method", "POST"),
            (":authority", "api.x"),
            (":path", "/?v=3"),
        ]);
        assert!(!m.matches(&bad));
    }

    #[test]
    fn cookies() {
        let m = compile(r#"{"cookies":{"user":{"exact":"tester"},"beta":{"present":false}}}"#);
        assert!(m.matches(&req(&[("cookie", "a=b; user=tester")])));
        assert!(!m.matches(&req(&[("cookie", "user=tester; beta=1")])));
        assert!(!m.matches(&req(&[("cookie", "user=other")])));
        let m = compile(r#"{"cookies":{"s":{"contains":"gold"}}}"#);
        assert!(m.matches(&req(&[("cookie", "s=xgoldx")])));
        let m = compile(r#"{"cookies":{"s":{"regex":"[a-c]+"}}}"#);
        assert!(m.matches(&req(&[("cookie", "s=abc")])));
        assert!(!m.matches(&req(&[("cookie", "s=abcd")])));
        let m = compile(r#"{"cookies":{"s":{}}}"#);
        assert!(m.matches(&req(&[("cookie", "s=")])));
        assert!(!m.matches(&req(&[])));
    }

    #[test]
    fn user_agent_families() {
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
        let desktop = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let m = compile(r#"{"userAgent":{"device":"mobile"}}"#);
        assert!(m.matches(&req(&[("user-agent", iphone)])));
        assert!(!m.matches(&req(&[("user-agent", desktop)])));
        let m = compile(r#"{"userAgent":{"os":["windows"],"browser":["Chrome","Firefox"]}}"#);
        assert!(m.matches(&req(&[("user-agent", desktop)])));
        assert!(!m.matches(&req(&[("user-agent", iphone)])));
    }

    #[test]
    fn jwt_claims_match_through_the_request_view() {
        struct WithClaims(Vec<(String, String)>, serde_json::Value);
        impl RequestView for WithClaims {
            fn header(&self, name: &str) -> Option<&str> {
                self.0.header(name)
            }
            fn claim(&self, path: &[String]) -> Vec<String> {
                crate::claims::values(&self.1, path)
            }
        }
        let m: HttpMatchRequest = serde_json::from_str(
            r#"{"headers": {"@request.auth.claims.Groups": {"exact": "admin"},
                            "@request.auth.claims.org.tier": {"prefix": "gold"}},
                "withoutHeaders": {"@request.auth.claims.banned": {}}}"#,
        )
        .unwrap();
        let m = CompiledMatch::compile(&m).unwrap();
        assert!(m.uses_claims());
        let req = |c: serde_json::Value| WithClaims(vec![], c);
        let ok = serde_json::json!({"Groups": ["dev", "admin"], "org": {"tier": "gold-2"}});
        assert!(m.matches(&req(ok.clone())));
        // Claim names keep their case; a header of that name does not count.
        assert!(!m.matches(&req(
            serde_json::json!({"groups": ["admin"], "org": {"tier": "gold"}})
        )));
        let mut banned = ok.clone();
        banned["banned"] = true.into();
        assert!(!m.matches(&req(banned)));
        let headers_only = vec![(
            "@request.auth.claims.groups".to_string(),
            "admin".to_string(),
        )];
        assert!(!m.matches(&headers_only));
    }

    #[test]
    fn compile_errors_name_the_field() {
        let e = CompiledMatch::compile(
            &serde_json::from_str(r#"{"headers":{"x":{"regex":"("}}}"#).unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.field, "headers.x.regex");
        let e = CompiledMatch::compile(
            &serde_json::from_str(r#"{"userAgent":{"os":["beos"]}}"#).unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.field, "userAgent.os");
        let e = CompiledMatch::compile(
            &serde_json::from_str(r#"{"uri":{"exact":"/","prefix":"/"}}"#).unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.field, "uri");
    }
}
