//! Per-worker upstream connection pools (keep-alive, HTTP/1.1 and h2c) and the host side
//! of `proxy_http_call`.

use crate::body::{BoxError, UpBody};
use crate::cluster::Cluster;
use crate::connector::{Connector, PerConnectionLimit};
use crate::live::Live;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lateen_model::cluster::{ConnSettings, UpstreamProtocol};
use lateen_wasm::state::{CallResponse, PendingCall};
use std::sync::Arc;
use std::time::Duration;

/// Largest http_call response body delivered to a plugin.
const CALL_BODY_LIMIT: usize = 4 << 20;

/// A pool's identity: the cluster (stats id), its connection settings and its TLS config
/// (0 for plain TCP).
type PoolKey = (u64, ConnSettings, u64);

/// One worker's upstream clients: one pool per distinct connection settings (protocol,
/// connect timeout, idle timeout), so clusters with the defaults share one.
pub struct Upstream {
    /// Pools by cluster (stats id) and settings: Envoy keeps one pool per cluster, and
    /// the connector counts the cluster's connections.
    clients: std::cell::RefCell<std::collections::HashMap<PoolKey, Client<Connector, UpBody>>>,
    snapshots: Arc<ArcSwap<Live>>,
    /// This worker's Redis connection (url, connection), made on first use.
    redis: tokio::sync::Mutex<Option<(String, redis::aio::ConnectionManager)>>,
}

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
    pub fn new(snapshots: Arc<ArcSwap<Live>>) -> Self {
        Upstream {
            clients: Default::default(),
            snapshots,
            redis: tokio::sync::Mutex::new(None),
        }
    }

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
    async fn redis_call(&self, url: &str, call: &PendingCall) -> CallResponse {
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

    /// The pool for a cluster (cheap to clone).
    fn client(&self, cluster: &Cluster) -> Client<Connector, UpBody> {
        let s = &cluster.conn;
        // A new TLS config (a rotated certificate) gets a new pool; the old one's
        // connections finish their requests and idle out.
        let key = (
            cluster.stats.id,
            *s,
            cluster.tls.as_ref().map_or(0, |t| t.id),
        );
        if let Some(c) = self.clients.borrow().get(&key) {
            return c.clone();
        }
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_millis(s.connect_timeout_ms)));
        conn.enforce_http(true);
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(Duration::from_millis(s.idle_timeout_ms))
            .pool_max_idle_per_host(1024);
        if s.protocol == UpstreamProtocol::Http2 {
            b.http2_only(true);
        }
        let client = b.build(Connector {
            inner: conn,
            stats: cluster.stats.clone(),
            tls: cluster.tls.clone(),
        });
        let mut clients = self.clients.borrow_mut();
        // The pool of a replaced TLS config goes; requests in flight hold their own handle.
        clients.retain(|k, _| !(k.0 == key.0 && k.1 == key.1));
        clients.insert(key, client.clone());
        client
    }

    /// Sends a request on the cluster's pool, retiring the connection when it reaches
    /// `maxRequestsPerConnection`.
    pub async fn send(
        &self,
        cluster: &Cluster,
        mut req: http::Request<UpBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        let client = self.client(cluster);
        let limit = PerConnectionLimit::watch(&mut req, cluster.conn.max_requests_per_connection);
        let resp = client.request(req).await?;
        if let Some(l) = limit {
            l.count();
        }
        Ok(resp)
    }

    /// Sends a plugin's http_call to its cluster; `None` on failure or timeout (the plugin
    /// then sees zero headers, as the spec says).
    pub async fn http_call(&self, call: &PendingCall) -> Option<CallResponse> {
        let snap = self.snapshots.load_full();
        if call.cluster == lateen_ratelimit::config::REDIS_CLUSTER {
            let url = snap.redis_url.clone()?;
            return tokio::time::timeout(call.timeout, self.redis_call(&url, call))
                .await
                .ok();
        }
        let cluster = snap.cluster(&call.cluster)?.clone();
        let ep = cluster.pick(rand::random())?;
        let mut method = "GET".to_string();
        let mut path = "/".to_string();
        let mut authority = ep.authority.clone();
        let mut builder = http::Request::builder();
        for (k, v) in &call.headers {
            match k.as_str() {
                ":method" => method = String::from_utf8_lossy(v).into_owned(),
                ":path" => path = String::from_utf8_lossy(v).into_owned(),
                ":authority" => authority = String::from_utf8_lossy(v).into_owned(),
                k if k.starts_with(':') => {}
                _ => builder = builder.header(k.as_str(), v.as_ref()),
            }
        }
        let req = builder
            .method(method.as_str())
            .uri(format!("http://{}{}", ep.authority, path))
            .header(http::header::HOST, authority)
            .body(full(call.body.clone()))
            .ok()?;
        let fut = async {
            let resp = self.send(&cluster, req).await.ok()?;
            let (parts, body) = resp.into_parts();
            let collected = Limited::new(body, CALL_BODY_LIMIT).collect().await.ok()?;
            let trailers = collected
                .trailers()
                .map(crate::http::header_list)
                .unwrap_or_default();
            let mut headers = vec![(
                ":status".to_string(),
                Bytes::from(parts.status.as_u16().to_string()),
            )];
            headers.extend(crate::http::header_list(&parts.headers));
            Some(CallResponse {
                headers,
                body: collected.to_bytes(),
                trailers,
            })
        };
        match tokio::time::timeout(call.timeout, fut).await {
            Ok(r) => r,
            Err(_) => {
                tracing::debug!(cluster = %call.cluster, "http_call timed out");
                None
            }
        }
    }
}

/// A complete body.
pub fn full(b: Bytes) -> UpBody {
    Full::new(b)
        .map_err(|e: std::convert::Infallible| -> BoxError { match e {} })
        .boxed_unsync()
}
