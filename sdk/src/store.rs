//! The shared store: state shared by every proxy of a fleet (global rate limits), kept in
//! the Redis the proxy's Bootstrap names and reached through the host-managed cluster
//! [`CLUSTER`] with an ordinary `proxy_http_call`. Lateen's extension: in other proxy-wasm
//! hosts the cluster does not exist and `dispatch_http_call` fails, which a filter should
//! treat as "no global store" (the built-in rate-limit filter then lets requests through).
//!
//! Protocol: `POST` [`TAKE_PATH`] with a [`TakeRequest`] JSON body; the answer is 200 with a
//! [`TakeResponse`] JSON body, or a non-200 status when the store is unreachable.
//!
//! ```
//! let (headers, body) = lateen_sdk::store::take_call(&lateen_sdk::store::TakeRequest {
//!     key: "rl.per-user.alice".into(), max_tokens: 10, tokens_per_fill: 10, fill_interval_ms: 1000,
//! });
//! assert_eq!(headers[1], (":path", lateen_sdk::store::TAKE_PATH));
//! assert!(body.starts_with(b"{"));
//! ```

use serde::{Deserialize, Serialize};

/// The host-managed cluster name.
pub const CLUSTER: &str = "lateen.redis";
/// Takes one token from a shared token bucket.
pub const TAKE_PATH: &str = "/ratelimit/take";

/// Body of a take: the bucket and its parameters (the bucket is created full).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TakeRequest {
    pub key: String,
    pub max_tokens: u64,
    pub tokens_per_fill: u64,
    pub fill_interval_ms: u64,
}

/// Answer to a take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TakeResponse {
    pub allowed: bool,
    pub remaining: u64,
    /// Milliseconds until the next refill.
    pub reset_ms: u64,
}

/// Headers and body of a take call, ready for `dispatch_http_call(CLUSTER, ...)`.
pub fn take_call(req: &TakeRequest) -> (Vec<(&'static str, &'static str)>, Vec<u8>) {
    (
        vec![
            (":method", "POST"),
            (":path", TAKE_PATH),
            (":authority", CLUSTER),
        ],
        serde_json::to_vec(req).unwrap_or_default(),
    )
}
