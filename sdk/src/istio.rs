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
//!
//! The types deserialize from the JSON form of that YAML (camelCase names):
//!
//! ```rust
//! use lateen_sdk::istio::HttpMatchRequest;
//! let m: HttpMatchRequest = serde_json::from_str(r#"{
//!     "cookies": {"user": {"exact": "tester"}, "beta": {"present": false}},
//!     "userAgent": {"device": "mobile", "os": ["iOS", "Android"]}
//! }"#).unwrap();
//! assert_eq!(m.cookies["user"].exact.as_deref(), Some("tester"));
//! assert_eq!(m.cookies["beta"].present, Some(false));
//! assert_eq!(m.user_agent.unwrap().os, ["iOS", "Android"]);
//!
//! // Unknown fields are rejected, so typos do not pass silently.
//! assert!(serde_json::from_str::<HttpMatchRequest>(r#"{"url": {"prefix": "/"}}"#).is_err());
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// The value must equal this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value must start with this.
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieMatch {
    /// The cookie's value must equal this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The cookie's value must start with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The cookie's value must contain this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// The cookie's whole value must match this RE2 regex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `true`: the cookie must be present (any value); `false`: it must be absent.
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// A name for this match. Matching ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Condition on the path (`:path`). `prefix` sees the query string too;
    /// `exact` and `regex` see the path without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// Condition on the scheme (`:scheme`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    /// Condition on the method (`:method`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// Condition on the authority (`:authority`, the `Host` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Headers that must be present and match, by name. A key
    /// `@request.auth.claims.NAME` matches a JWT claim instead (see [`crate::claims`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    /// Headers that must not match; an absent header passes. Claim keys work here too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Query parameters that must be present and match, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Match `uri.exact` and `uri.prefix` without regard to case.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
    /// The listener port the request must have arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Kept for completeness of Istio's schema; the host filters on gateways before the
    /// router sees a route, so the router ignores it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Istio `sourceLabels`: labels the calling workload must have.
    /// [`CompiledMatch`](crate::matcher::CompiledMatch) does not evaluate it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Istio `sourceNamespace`: the calling workload's namespace.
    /// [`CompiledMatch`](crate::matcher::CompiledMatch) does not evaluate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Lateen extension: cookie conditions, by cookie name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cookies: BTreeMap<String, CookieMatch>,
    /// Lateen extension: user-agent families.
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    /// Replaces the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replaces the authority (host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Replaces the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// `FROM_PROTOCOL_DEFAULT` or `FROM_REQUEST_PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<String>,
    /// Replaces the scheme (`http` or `https`).
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    /// RE2 regex to find in the path (Istio's `match`).
    #[serde(rename = "match")]
    pub pattern: String,
    /// The replacement; `\1` stands for the first group.
    pub rewrite: String,
}

/// Istio `HTTPRewrite`.
///
/// ```
/// let r: lateen_sdk::istio::HttpRewrite = serde_json::from_str(r#"{"uri":"/v2"}"#).unwrap();
/// assert_eq!(r.uri.as_deref(), Some("/v2"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// Replaces the path, or only the part a `uri.prefix` match matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replaces the authority (`Host` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Rewrites the path with a regex.
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Headers to set, replacing any value they had.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Headers to append.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Names of headers to remove.
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// Operations on the request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    /// Operations on the response headers.
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    /// The body as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// The body as base64 (see [`HttpDirectResponse::body_bytes`]).
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    /// HTTP status of the reply.
    pub status: u32,
    /// Body of the reply; none means empty.
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
///
/// ```rust
/// let p: lateen_sdk::istio::Percent = serde_json::from_str(r#"{"value": 0.5}"#).unwrap();
/// assert_eq!(p.value, 0.5);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    /// A percentage, `0.0` to `100.0`.
    #[serde(default)]
    pub value: f64,
}

/// Istio `HTTPFaultInjection.Delay`.
///
/// ```rust
/// let d: lateen_sdk::istio::FaultDelay =
///     serde_json::from_str(r#"{"fixedDelay": "5s", "percentage": {"value": 10}}"#).unwrap();
/// assert_eq!(d.fixed_delay.as_deref(), Some("5s"));
/// assert_eq!(d.percentage.unwrap().value, 10.0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// How long to delay, as a duration (`5s`, `100ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<String>,
    /// Istio's `exponentialDelay`, a duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential_delay: Option<String>,
    /// Share of requests to delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
    /// Deprecated integer form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
}

/// Istio `HTTPFaultInjection.Abort`.
///
/// ```rust
/// let a: lateen_sdk::istio::FaultAbort = serde_json::from_str(r#"{"grpcStatus": "UNAVAILABLE"}"#).unwrap();
/// assert_eq!(a.grpc_status.as_deref(), Some("UNAVAILABLE"));
/// assert_eq!(a.http_status, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// HTTP status to reply with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    /// gRPC status name to reply with (`UNAVAILABLE`); see [`grpc_code`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// Istio's `http2Error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
    /// Share of requests to abort.
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    /// Delay requests before forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Answer requests with an error instead of forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// gRPC status code by Istio/gRPC name (`UNAVAILABLE` → 14). Names are upper case;
/// an unknown name gives `None`.
///
/// ```
/// assert_eq!(lateen_sdk::istio::grpc_code("UNAVAILABLE"), Some(14));
/// assert_eq!(lateen_sdk::istio::grpc_code("OK"), Some(0));
/// assert_eq!(lateen_sdk::istio::grpc_code("unavailable"), None);
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// How many retries a request may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Timeout of each try, as a duration (`2s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Comma-separated conditions that cause a retry (`5xx`, `connect-failure`, status codes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    /// Istio's `retryRemoteLocalities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    /// Whether a retry avoids the hosts already tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Istio's `backoff`: the base interval between tries, a duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

/// Istio `Destination` (for mirrors).
///
/// ```rust
/// let d: lateen_sdk::istio::MirrorDestination =
///     serde_json::from_str(r#"{"host": "reviews", "subset": "v2", "port": {"number": 9080}}"#).unwrap();
/// assert_eq!(d.subset.as_deref(), Some("v2"));
/// assert_eq!(d.port.unwrap().number, 9080);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorDestination {
    /// The service to mirror to (`reviews` or `reviews.default.svc.cluster.local`).
    pub host: String,
    /// A subset of the service's DestinationRule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortNumber>,
}

/// `port: {number: N}`.
///
/// ```rust
/// let p: lateen_sdk::istio::PortNumber = serde_json::from_str(r#"{"number": 80}"#).unwrap();
/// assert_eq!(p.number, 80);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortNumber {
    /// The port number.
    pub number: u32,
}

/// Istio `HTTPMirrorPolicy` (an entry of `mirrors`).
///
/// ```rust
/// let m: lateen_sdk::istio::HttpMirrorPolicy =
///     serde_json::from_str(r#"{"destination": {"host": "shadow"}, "percentage": {"value": 25}}"#).unwrap();
/// assert_eq!(m.destination.host, "shadow");
/// assert_eq!(m.percentage.unwrap().value, 25.0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    /// Where to send the copies.
    pub destination: MirrorDestination,
    /// Share of requests to mirror; absent means all of them.
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Origins that may make requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    /// Deprecated exact origins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin: Vec<String>,
    /// Methods for `Access-Control-Allow-Methods`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Headers for `Access-Control-Allow-Headers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Headers for `Access-Control-Expose-Headers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long browsers may cache a preflight, as a duration (`24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// Value of `Access-Control-Allow-Credentials`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// `FORWARD` (default) or `IGNORE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched_preflights: Option<String>,
}
