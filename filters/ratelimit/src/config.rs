//! Configuration: rules, their keys and token buckets.

use lateen_sdk::istio::HttpMatchRequest;
use serde::{Deserialize, Serialize};

/// The filter's configuration.
///
/// ```json
/// {"rules": [{"name": "per-user", "key": {"header": "x-user"},
///             "tokenBucket": {"maxTokens": 10, "tokensPerFill": 10, "fillIntervalMs": 1000},
///             "rateLimitHeaders": true}]}
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One rate limit. Every rule that applies to a request takes a token; the first empty
/// bucket rejects it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Names the bucket (with the key's value).
    pub name: String,
    /// Route names (`lateen.route.name`) it applies to; empty = every route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Route names it does not apply to (a per-route limit replaces a filter-wide one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_routes: Vec<String>,
    /// Istio matches, any of which selects the request; empty = every request.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequest>,
    /// What separates buckets; default: one bucket for the rule.
    #[serde(default)]
    pub key: Key,
    pub token_bucket: TokenBucket,
    /// Descriptor buckets: requests whose descriptor entries match use that bucket instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub descriptors: Vec<Descriptor>,
    /// How a request's descriptor entries are built (Envoy's route `rate_limits` actions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<DescriptorAction>,
    /// Share of requests the rule looks at (Envoy `filter_enabled`), 0–100.
    #[serde(default = "hundred")]
    pub enabled_percent: f64,
    /// Share of over-limit requests actually rejected (`filter_enforced`), 0–100.
    #[serde(default = "hundred")]
    pub enforced_percent: f64,
    /// Headers added to rejected responses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers: Vec<(String, String)>,
    /// Add `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset`.
    #[serde(default)]
    pub rate_limit_headers: bool,
    /// `local` (this proxy) or `global` (shared by every proxy through the host's Redis).
    #[serde(default)]
    pub mode: Mode,
}

/// Where a rule's buckets live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Proxy-wasm shared data: one bucket per proxy.
    #[default]
    Local,
    /// The host-managed `lateen.redis` cluster: one bucket for every proxy using that Redis.
    Global,
}

/// Global mode's store: the host-managed cluster and its protocol (see `lateen_sdk::store`).
pub use lateen_sdk::store::{TakeRequest, TakeResponse, CLUSTER as REDIS_CLUSTER, TAKE_PATH};

fn hundred() -> f64 {
    100.0
}

/// What a bucket is keyed on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Key {
    /// One bucket for the rule.
    #[default]
    None,
    /// The client address (`source.address` without the port).
    SourceIp,
    /// The request path (without the query).
    Path,
    /// A request header's value.
    Header(String),
    /// A cookie's value.
    Cookie(String),
}

/// Envoy's `token_bucket`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenBucket {
    pub max_tokens: u64,
    pub tokens_per_fill: u64,
    pub fill_interval_ms: u64,
}

/// A descriptor: entries that must all be present on the request, and its bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Descriptor {
    pub entries: Vec<(String, String)>,
    pub token_bucket: TokenBucket,
}

/// One `rate_limits` action: how a descriptor entry is produced from the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum DescriptorAction {
    /// `request_headers`: entry `descriptor_key = <header value>`; absent header: the
    /// descriptor is not produced.
    RequestHeader { header: String, key: String },
    /// `remote_address`: entry `remote_address = <client ip>`.
    RemoteAddress,
    /// `generic_key`: entry `key = value` (key defaults to `generic_key`).
    Generic { key: String, value: String },
}
