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
