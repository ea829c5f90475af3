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
//!
//! Inside a filter, send it and read the answer in `on_http_call_response`:
//!
//! ```no_run
//! use lateen_sdk::{proxy_wasm::hostcalls, store};
//! use std::time::Duration;
//! let (headers, body) = store::take_call(&store::TakeRequest {
//!     key: "rl.global".into(), max_tokens: 100, tokens_per_fill: 100, fill_interval_ms: 1000,
//! });
//! match hostcalls::dispatch_http_call(store::CLUSTER, headers, Some(&body), vec![],
//!                                     Duration::from_millis(200)) {
//!     Ok(token) => println!("take sent, call {token}"),
//!     Err(_) => println!("no global store here: let the request through"),
//! }
//! ```

use serde::{Deserialize, Serialize};

/// The host-managed cluster name. It exists only in Lateen.
///
/// ```rust
/// assert_eq!(lateen_sdk::store::CLUSTER, "lateen.redis");
/// ```
pub const CLUSTER: &str = "lateen.redis";
/// Path of the call that takes one token from a shared token bucket.
///
/// ```rust
/// assert_eq!(lateen_sdk::store::TAKE_PATH, "/ratelimit/take");
/// ```
pub const TAKE_PATH: &str = "/ratelimit/take";

/// Body of a take: the bucket and its parameters (the bucket is created full).
///
/// ```rust
/// let req = lateen_sdk::store::TakeRequest {
///     key: "k".into(), max_tokens: 5, tokens_per_fill: 1, fill_interval_ms: 200,
/// };
/// let json = serde_json::to_string(&req).unwrap();
/// assert_eq!(json, r#"{"key":"k","maxTokens":5,"tokensPerFill":1,"fillIntervalMs":200}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TakeRequest {
    /// The bucket's name, shared by every proxy that uses the same Redis.
    pub key: String,
    /// The bucket's capacity.
    pub max_tokens: u64,
    /// Tokens added at each fill.
    pub tokens_per_fill: u64,
    /// Milliseconds between fills.
    pub fill_interval_ms: u64,
}

/// Answer to a take.
///
/// ```rust
/// let r: lateen_sdk::store::TakeResponse =
///     serde_json::from_str(r#"{"allowed":false,"remaining":0,"resetMs":350}"#).unwrap();
/// assert!(!r.allowed);
/// assert_eq!(r.reset_ms, 350);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TakeResponse {
    /// Whether a token was taken, so the request may pass.
    pub allowed: bool,
    /// Tokens left in the bucket.
    pub remaining: u64,
    /// Milliseconds until the next refill.
    pub reset_ms: u64,
}

/// Headers and body of a take call, ready for `dispatch_http_call(CLUSTER, ...)`.
///
/// ```rust
/// use lateen_sdk::store::{take_call, TakeRequest, CLUSTER};
/// let req = TakeRequest { key: "k".into(), max_tokens: 1, tokens_per_fill: 1, fill_interval_ms: 1 };
/// let (headers, body) = take_call(&req);
/// assert_eq!(headers, [(":method", "POST"), (":path", "/ratelimit/take"), (":authority", CLUSTER)]);
/// assert_eq!(serde_json::from_slice::<TakeRequest>(&body).unwrap(), req);
/// ```
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
