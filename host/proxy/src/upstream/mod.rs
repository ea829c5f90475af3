//! A worker's upstreams: its connection pools (HTTP/1.1 and HTTP/2, [`pool`]), the host
//! side of `proxy_http_call`, and the shared store of global rate limits ([`store`]).

use crate::body::{BoxError, UpBody};
use crate::cluster::Cluster;
use crate::live::Live;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use lateen_wasm::state::{CallResponse, PendingCall};
use pool::{PoolConfig, Pools};
use std::sync::Arc;

mod pool;
mod store;

pub use pool::SendError;
pub use store::take_blocking;

/// Largest http_call response body delivered to a plugin.
const CALL_BODY_LIMIT: usize = 4 << 20;

/// One worker's upstreams: its connection pools (one per cluster, as Envoy keeps them) and
/// its Redis connection.
pub struct Upstream {
    pools: Pools,
    snapshots: Arc<ArcSwap<Live>>,
    /// This worker's Redis connection (url, connection), made on first use.
    redis: tokio::sync::Mutex<Option<(String, redis::aio::ConnectionManager)>>,
}

impl Upstream {
    pub fn new(snapshots: Arc<ArcSwap<Live>>) -> Self {
        Upstream {
            pools: Pools::default(),
            snapshots,
            redis: tokio::sync::Mutex::new(None),
        }
    }

    /// Sends a request (origin-form URI, `host` set) to one endpoint of `cluster`, on
    /// the cluster's pool.
    pub async fn send(
        &self,
        cluster: &Cluster,
        endpoint: &str,
        req: http::Request<UpBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, SendError> {
        let key = (
            cluster.stats.id,
            cluster.conn,
            cluster.tls.as_ref().map_or(0, |t| t.id),
        );
        let pool = self.pools.get(key, || PoolConfig {
            settings: cluster.conn,
            tls: cluster.tls.clone(),
            stats: cluster.stats.clone(),
        });
        pool.send(endpoint, req).await
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
            .uri(path.as_str())
            .header(http::header::HOST, authority)
            .body(full(call.body.clone()))
            .ok()?;
        let fut = async {
            let resp = self.send(&cluster, &ep.authority, req).await.ok()?;
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
