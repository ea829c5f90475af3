//! Per-worker upstream connection pools (keep-alive, HTTP/1.1 and h2c) and the host side
//! of `proxy_http_call`.

use crate::body::{BoxError, UpBody};
use crate::cluster::UpstreamProtocol;
use crate::snapshot::Snapshot;
use crate::wasm::state::{CallResponse, PendingCall};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;

/// Largest http_call response body delivered to a plugin.
const CALL_BODY_LIMIT: usize = 4 << 20;

/// One worker's upstream clients.
pub struct Upstream {
    h1: Client<HttpConnector, UpBody>,
    h2: Client<HttpConnector, UpBody>,
    snapshots: Arc<ArcSwap<Snapshot>>,
}

impl Upstream {
    pub fn new(snapshots: Arc<ArcSwap<Snapshot>>) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        // Istio's default connectTimeout.
        conn.set_connect_timeout(Some(Duration::from_secs(10)));
        conn.enforce_http(true);
        let h1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(conn.clone());
        let h2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_only(true)
            .build(conn);
        Upstream { h1, h2, snapshots }
    }

    pub fn client(&self, p: UpstreamProtocol) -> &Client<HttpConnector, UpBody> {
        match p {
            UpstreamProtocol::Http1 => &self.h1,
            UpstreamProtocol::Http2 => &self.h2,
        }
    }

    /// Sends a plugin's http_call to its cluster; `None` on failure or timeout (the plugin
    /// then sees zero headers, as the spec says).
    pub async fn http_call(&self, call: &PendingCall) -> Option<CallResponse> {
        let snap = self.snapshots.load_full();
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
        let client = self.client(cluster.protocol);
        let fut = async {
            let resp = client.request(req).await.ok()?;
            let (parts, body) = resp.into_parts();
            let collected = Limited::new(body, CALL_BODY_LIMIT).collect().await.ok()?;
            let trailers = collected
                .trailers()
                .map(crate::proxy::header_list)
                .unwrap_or_default();
            let mut headers = vec![(
                ":status".to_string(),
                Bytes::from(parts.status.as_u16().to_string()),
            )];
            headers.extend(crate::proxy::header_list(&parts.headers));
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
