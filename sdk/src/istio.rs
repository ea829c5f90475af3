//! Istio's HTTP match types, as they appear in a VirtualService, plus Lateen's cookie and
//! user-agent matchers.
//!
//! Field names and semantics follow the Istio API reference (`networking.istio.io/v1`,
//! `HTTPMatchRequest`, `StringMatch`). The two extensions live on a match next to Istio's own
//! fields and are ignored by Istio's CRD-less readers:
//!
//! ```yaml
//! match:
//! - cookies:
//!     user: {exact: tester}        # also prefix, regex, contains; {} = present
//!     beta: {present: false}       # absent
//!   userAgent:
//!     device: mobile               # mobile | desktop | bot
//!     os: [iOS, Android]           # iOS Android Windows macOS Linux ChromeOS
//!     browser: [Chrome, Safari]    # Chrome Firefox Safari Edge Opera
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Istio `StringMatch`: exactly one of `exact`, `prefix`, `regex`. An empty match (`{}`)
/// means "present with any value" where Istio allows it (headers, query parameters).
///
/// ```
/// let m: lateen_sdk::istio::StringMatch = serde_json::from_str(r#"{"prefix":"/api"}"#).unwrap();
/// assert_eq!(m.prefix.as_deref(), Some("/api"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 syntax; must match the whole value, as in Envoy's `safe_regex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl StringMatch {
    /// How many of `exact`/`prefix`/`regex` are set (valid: 0 or 1).
    ///
    /// ```
    /// let m = lateen_sdk::istio::StringMatch { exact: Some("a".into()), ..Default::default() };
    /// assert_eq!(m.set_count(), 1);
    /// ```
    pub fn set_count(&self) -> usize {
        [
            self.exact.is_some(),
            self.prefix.is_some(),
            self.regex.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }
}

/// Lateen extension: a cookie condition. `{}` means the cookie is present;
/// `present: false` means it is absent.
///
/// ```
/// let m: lateen_sdk::istio::CookieMatch = serde_json::from_str(r#"{"contains":"beta"}"#).unwrap();
/// assert_eq!(m.contains.as_deref(), Some("beta"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// Lateen extension: user-agent families. Every field that is set must hold; within a list,
/// any entry may match. Names are case-insensitive.
///
/// ```
/// let m: lateen_sdk::istio::UserAgentMatch = serde_json::from_str(r#"{"device":"mobile"}"#).unwrap();
/// assert_eq!(m.device.as_deref(), Some("mobile"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserAgentMatch {
    /// `mobile` (phones and tablets), `desktop` or `bot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `iOS`, `Android`, `Windows`, `macOS`, `Linux`, `ChromeOS`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub os: Vec<String>,
    /// `Chrome`, `Firefox`, `Safari`, `Edge`, `Opera`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub browser: Vec<String>,
}

/// Istio `HTTPMatchRequest` plus the `cookies` and `userAgent` extensions. All conditions set
/// in one match must hold; the matches of a route are alternatives.
///
/// ```
/// let m: lateen_sdk::istio::HttpMatchRequest = serde_json::from_str(
///     r#"{"uri":{"prefix":"/r"},"headers":{"x-env":{"exact":"dev"}}}"#).unwrap();
/// assert!(m.headers.contains_key("x-env"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Kept for completeness of Istio's schema; the host filters on gateways before the
    /// router sees a route, so the router ignores it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cookies: BTreeMap<String, CookieMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<UserAgentMatch>,
}

/// Istio `HTTPRedirect`.
///
/// ```
/// let r: lateen_sdk::istio::HttpRedirect = serde_json::from_str(r#"{"uri":"/new","redirectCode":302}"#).unwrap();
/// assert_eq!(r.redirect_code, Some(302));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// `FROM_PROTOCOL_DEFAULT` or `FROM_REQUEST_PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Default 301.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u32>,
}

/// Istio `RegexRewrite`: `match` is RE2, `rewrite` may use `\1`-style groups.
///
/// ```
/// let r: lateen_sdk::istio::RegexRewrite = serde_json::from_str(r#"{"match":"^/v1/(.*)","rewrite":"/\\1"}"#).unwrap();
/// assert_eq!(r.pattern, "^/v1/(.*)");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    #[serde(rename = "match")]
    pub pattern: String,
    pub rewrite: String,
}

/// Istio `HTTPRewrite`.
///
/// ```
/// let r: lateen_sdk::istio::HttpRewrite = serde_json::from_str(r#"{"uri":"/v2"}"#).unwrap();
/// assert_eq!(r.uri.as_deref(), Some("/v2"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// Istio `Headers.HeaderOperations`.
///
/// ```
/// let h: lateen_sdk::istio::HeaderOperations = serde_json::from_str(r#"{"set":{"x-a":"1"},"remove":["x-b"]}"#).unwrap();
/// assert_eq!(h.remove, vec!["x-b".to_string()]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Istio `Headers`: operations on the request and on the response.
///
/// ```
/// let h: lateen_sdk::istio::Headers = serde_json::from_str(r#"{"response":{"add":{"x-a":"1"}}}"#).unwrap();
/// assert!(h.request.is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Istio `HTTPBody`: `string` or base64 `bytes`.
///
/// ```
/// let b: lateen_sdk::istio::HttpBody = serde_json::from_str(r#"{"string":"hi"}"#).unwrap();
/// assert_eq!(b.string.as_deref(), Some("hi"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

/// Istio `HTTPDirectResponse`.
///
/// ```
/// let d: lateen_sdk::istio::HttpDirectResponse = serde_json::from_str(r#"{"status":503,"body":{"string":"down"}}"#).unwrap();
/// assert_eq!(d.status, 503);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    pub status: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

impl HttpDirectResponse {
    /// The body bytes (`bytes` is base64, as in Istio).
    ///
    /// ```
    /// let d: lateen_sdk::istio::HttpDirectResponse =
    ///     serde_json::from_str(r#"{"status":200,"body":{"bytes":"aGk="}}"#).unwrap();
    /// assert_eq!(d.body_bytes().unwrap(), b"hi");
    /// ```
    pub fn body_bytes(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        match &self.body {
            None => Ok(Vec::new()),
            Some(HttpBody {
                string: Some(s),
                bytes: None,
            }) => Ok(s.as_bytes().to_vec()),
            Some(HttpBody {
                string: None,
                bytes: Some(b),
            }) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("body.bytes is not base64: {e}")),
            Some(HttpBody {
                string: None,
                bytes: None,
            }) => Ok(Vec::new()),
            Some(_) => Err("set only one of body.string and body.bytes".into()),
        }
    }
}

/// Istio `Percent`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// Istio `HTTPFaultInjection.Delay`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
    /// Deprecated integer form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
}

/// Istio `HTTPFaultInjection.Abort`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// Istio `HTTPFaultInjection`.
///
/// ```
/// let f: lateen_sdk::istio::HttpFaultInjection = serde_json::from_str(
///     r#"{"abort":{"httpStatus":503,"percentage":{"value":10}}}"#).unwrap();
/// assert_eq!(f.abort.unwrap().http_status, Some(503));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// gRPC status code by Istio/gRPC name (`UNAVAILABLE` → 14).
///
/// ```
/// assert_eq!(lateen_sdk::istio::grpc_code("UNAVAILABLE"), Some(14));
/// ```
pub fn grpc_code(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

/// Istio `HTTPRetry`.
///
/// ```
/// let r: lateen_sdk::istio::HttpRetry = serde_json::from_str(r#"{"attempts":3,"retryOn":"5xx"}"#).unwrap();
/// assert_eq!(r.attempts, Some(3));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

/// Istio `Destination` (for mirrors).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorDestination {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortNumber>,
}

/// `port: {number: N}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortNumber {
    pub number: u32,
}

/// Istio `HTTPMirrorPolicy` (an entry of `mirrors`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    pub destination: MirrorDestination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// Istio `CorsPolicy`.
///
/// ```
/// let c: lateen_sdk::istio::CorsPolicy = serde_json::from_str(
///     r#"{"allowOrigins":[{"exact":"https://a.com"}],"allowMethods":["GET"],"maxAge":"24h"}"#).unwrap();
/// assert_eq!(c.allow_methods, vec!["GET".to_string()]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    /// Deprecated exact origins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// `FORWARD` (default) or `IGNORE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched_preflights: Option<String>,
}
