//! The shared store behind global rate limits: an atomic token bucket in Redis, reached by
//! the host-managed `lateen.redis` cluster (proxy-wasm filters, by `http_call`) or by a
//! blocking take (component filters).

use super::Upstream;
use bytes::Bytes;
use lateen_wasm::state::{CallResponse, PendingCall};

/// One take from the shared store, waiting at most `timeout` for Redis. For component
/// filters, whose `shared-store.take` import is synchronous: a new connection per call
/// keeps no state on the worker, at the price of a connect per take.
pub fn take_blocking(
    url: &str,
    req: &lateen_sdk::store::TakeRequest,
    timeout: std::time::Duration,
) -> Result<lateen_sdk::store::TakeResponse, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_connection_with_timeout(timeout)
        .map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let (allowed, remaining, reset): (u64, u64, i64) = redis::Script::new(TAKE_SCRIPT)
        .key(&req.key)
        .arg(req.max_tokens)
        .arg(req.tokens_per_fill)
        .arg(req.fill_interval_ms.max(1))
        .invoke(&mut conn)
        .map_err(|e| e.to_string())?;
    Ok(lateen_sdk::store::TakeResponse {
        allowed: allowed == 1,
        remaining,
        reset_ms: reset.max(0) as u64,
    })
}

/// Atomic token bucket in Redis, timed by the Redis server's clock so that every proxy
/// agrees. Same arithmetic as the local bucket: refills of `per` tokens at whole intervals.
const TAKE_SCRIPT: &str = r"
local max = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = tonumber(s[1])
local last = tonumber(s[2])
if tokens == nil or last == nil then tokens = max; last = now end
local fills = math.floor((now - last) / interval)
if fills > 0 then
  tokens = math.min(max, tokens + fills * per)
  last = last + fills * interval
end
local allowed = 0
if tokens > 0 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'last', last)
redis.call('PEXPIRE', KEYS[1], interval * (math.ceil(max / math.max(per, 1)) + 1))
return {allowed, tokens, last + interval - now}
";

impl Upstream {
    async fn redis(&self, url: &str) -> Result<redis::aio::ConnectionManager, String> {
        let mut g = self.redis.lock().await;
        if let Some((u, c)) = &*g {
            if u == url {
                return Ok(c.clone());
            }
        }
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let conn = redis::aio::ConnectionManager::new(client)
            .await
            .map_err(|e| e.to_string())?;
        *g = Some((url.to_string(), conn.clone()));
        Ok(conn)
    }

    // The host-managed `lateen.redis` cluster (global rate limits).
    pub(super) async fn redis_call(&self, url: &str, call: &PendingCall) -> CallResponse {
        use lateen_ratelimit::config::{TakeRequest, TakeResponse, TAKE_PATH};
        let reply = |status: u16, body: Vec<u8>| CallResponse {
            headers: vec![(":status".into(), Bytes::from(status.to_string()))],
            body: Bytes::from(body),
            trailers: Vec::new(),
        };
        let path = call
            .headers
            .iter()
            .find(|(k, _)| k == ":path")
            .map(|(_, v)| v.clone());
        if path.as_deref() != Some(TAKE_PATH.as_bytes()) {
            return reply(404, b"unknown lateen.redis operation".to_vec());
        }
        let Ok(req) = serde_json::from_slice::<TakeRequest>(&call.body) else {
            return reply(400, b"invalid take request".to_vec());
        };
        let conn = match self.redis(url).await {
            Ok(c) => c,
            Err(e) => return reply(503, e.into_bytes()),
        };
        let mut conn = conn;
        let r: Result<(u64, u64, i64), _> = redis::Script::new(TAKE_SCRIPT)
            .key(&req.key)
            .arg(req.max_tokens)
            .arg(req.tokens_per_fill)
            .arg(req.fill_interval_ms.max(1))
            .invoke_async(&mut conn)
            .await;
        match r {
            Ok((allowed, remaining, reset)) => reply(
                200,
                serde_json::to_vec(&TakeResponse {
                    allowed: allowed == 1,
                    remaining,
                    reset_ms: reset.max(0) as u64,
                })
                .unwrap_or_default(),
            ),
            Err(e) => reply(503, e.to_string().into_bytes()),
        }
    }
}
