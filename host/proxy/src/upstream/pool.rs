//! One worker's upstream connection pools, on hyper's connection-level client
//! (`hyper::client::conn::{http1, http2}`). The worker is single-threaded, so a pool is
//! plain data behind a `RefCell`: no lock, and no task per request. An HTTP/1.1 connection
//! goes back to its pool as soon as the response headers arrive; it is taken again only
//! once hyper reports it ready, which is after that response's body has been read. One
//! task per worker closes connections idle past the cluster's idle timeout.

use crate::body::UpBody;
use crate::connector::{ConnectError, UpStream};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use lateen_core::stats::{ClusterStats, GaugeGuard};
use lateen_core::tls::client::UpstreamTls;
use lateen_model::cluster::{ConnSettings, UpstreamProtocol};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most connections kept per endpoint (idle or busy), as the former pool's idle cap.
const MAX_PER_ENDPOINT: usize = 1024;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("upstream handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl SendError {
    /// A failure to connect (Envoy's UF), as against a reset after connecting (UC/UR).
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_) | SendError::Handshake(_))
    }
}

/// What a pool connects with: the cluster's settings, TLS and stats.
pub struct PoolConfig {
    pub settings: ConnSettings,
    pub tls: Option<Arc<UpstreamTls>>,
    pub stats: Arc<ClusterStats>,
}

/// An HTTP/1.1 connection in the pool (busy until hyper says it is ready).
struct H1 {
    tx: http1::SendRequest<UpBody>,
    uses: u32,
    /// When the reaper first saw it ready with no request since.
    idle_since: Option<Instant>,
}

/// An HTTP/2 connection, shared by the requests to its endpoint.
struct H2 {
    tx: http2::SendRequest<UpBody>,
    uses: u32,
    last_used: Instant,
}

#[derive(Default)]
struct Conns {
    h1: VecDeque<H1>,
    h2: Vec<H2>,
    /// Held while an HTTP/2 connection is being made, so that concurrent requests share it.
    h2_connecting: Rc<tokio::sync::Mutex<()>>,
}

/// One cluster's connections (per settings and TLS config), by endpoint.
pub struct Pool {
    config: PoolConfig,
    conns: RefCell<HashMap<Box<str>, Conns>>,
}

/// Spawns connection futures on the worker's local task set.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F: std::future::Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

impl Pool {
    pub fn new(config: PoolConfig) -> Self {
        Pool {
            config,
            conns: RefCell::new(HashMap::new()),
        }
    }

    fn h2(&self) -> bool {
        self.config.settings.protocol == UpstreamProtocol::Http2
    }

    /// Sends `req` (origin-form URI, `host` set) to `authority`: on a ready pooled
    /// connection when there is one, else on a new one. A request a pooled connection
    /// gave back unsent (it was closing) goes on another, as hyper's legacy client did.
    pub async fn send(
        &self,
        authority: &str,
        req: http::Request<UpBody>,
    ) -> Result<http::Response<Incoming>, SendError> {
        if self.h2() {
            return self
                .send_h2(authority, to_h2(req, authority, self.config.tls.is_some()))
                .await;
        }
        let mut req = req;
        loop {
            let (mut conn, reused) = match self.checkout_h1(authority) {
                Some(c) => (c, true),
                None => {
                    let tx = self.connect_h1(authority).await?;
                    let conn = H1 {
                        tx,
                        uses: 0,
                        idle_since: None,
                    };
                    (conn, false)
                }
            };
            conn.uses += 1;
            match conn.tx.try_send_request(req).await {
                Ok(resp) => {
                    self.checkin_h1(authority, conn);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => req = r,
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    fn checkout_h1(&self, authority: &str) -> Option<H1> {
        let mut conns = self.conns.borrow_mut();
        let list = &mut conns.get_mut(authority)?.h1;
        // Oldest first: the one most likely to have finished its response.
        let mut i = 0;
        while i < list.len() {
            if list[i].tx.is_closed() {
                list.remove(i);
            } else if list[i].tx.is_ready() {
                return list.remove(i);
            } else {
                i += 1;
            }
        }
        None
    }

    fn checkin_h1(&self, authority: &str, conn: H1) {
        let max = self.config.settings.max_requests_per_connection;
        // A connection that has carried its `maxRequestsPerConnection` is dropped here:
        // hyper closes it once its response is done.
        if max > 0 && conn.uses >= max {
            return;
        }
        let mut conns = self.conns.borrow_mut();
        let entry = match conns.get_mut(authority) {
            Some(e) => e,
            None => conns.entry(authority.into()).or_default(),
        };
        if entry.h1.len() < MAX_PER_ENDPOINT {
            entry.h1.push_back(conn);
        }
    }

    async fn send_h2(
        &self,
        authority: &str,
        req: http::Request<UpBody>,
    ) -> Result<http::Response<Incoming>, SendError> {
        let tx = match self.shared_h2(authority) {
            Some(tx) => tx,
            None => {
                let lock = {
                    let mut conns = self.conns.borrow_mut();
                    let entry = conns.entry(authority.into()).or_default();
                    entry.h2_connecting.clone()
                };
                let _making = lock.lock().await;
                match self.shared_h2(authority) {
                    Some(tx) => tx,
                    None => self.connect_h2(authority).await?,
                }
            }
        };
        self.send_on_h2(authority, tx, req).await
    }

    async fn send_on_h2(
        &self,
        authority: &str,
        mut tx: http2::SendRequest<UpBody>,
        req: http::Request<UpBody>,
    ) -> Result<http::Response<Incoming>, SendError> {
        match tx.try_send_request(req).await {
            Ok(r) => Ok(r),
            // Refused unsent (the connection went away): once more, on a new connection.
            Err(mut e) => match e.take_message() {
                Some(req) => {
                    let mut tx = self.connect_h2(authority).await?;
                    Ok(tx.send_request(req).await?)
                }
                None => Err(SendError::Http(e.into_error())),
            },
        }
    }

    fn shared_h2(&self, authority: &str) -> Option<http2::SendRequest<UpBody>> {
        let mut conns = self.conns.borrow_mut();
        let entry = conns.get_mut(authority)?;
        entry.h2.retain(|c| !c.tx.is_closed());
        let max = self.config.settings.max_requests_per_connection;
        let c = entry
            .h2
            .iter_mut()
            .find(|c| c.tx.is_ready() && (max == 0 || c.uses < max))?;
        c.uses += 1;
        c.last_used = Instant::now();
        Some(c.tx.clone())
    }

    /// A new HTTP/1.1 connection, its task running on this worker.
    async fn connect_h1(&self, authority: &str) -> Result<http1::SendRequest<UpBody>, SendError> {
        let (io, open) = self.open(authority).await?;
        let (tx, conn) = http1::Builder::new()
            .handshake::<_, UpBody>(io)
            .await
            .map_err(SendError::Handshake)?;
        tokio::task::spawn_local(async move {
            let _open = open;
            // With upgrades, a 101 hands the connection to the WebSocket splice.
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream connection: {e}");
            }
        });
        Ok(tx)
    }

    /// A new HTTP/2 connection (prior knowledge, or h2 by ALPN: the TLS config of an
    /// HTTP/2 cluster offers only h2), kept for the requests after this one.
    async fn connect_h2(&self, authority: &str) -> Result<http2::SendRequest<UpBody>, SendError> {
        let (io, open) = self.open(authority).await?;
        let (tx, conn) = http2::Builder::new(LocalExec)
            .handshake::<_, UpBody>(io)
            .await
            .map_err(SendError::Handshake)?;
        tokio::task::spawn_local(async move {
            let _open = open;
            if let Err(e) = conn.await {
                tracing::debug!("upstream h2 connection: {e}");
            }
        });
        let mut conns = self.conns.borrow_mut();
        conns.entry(authority.into()).or_default().h2.push(H2 {
            tx: tx.clone(),
            uses: 1,
            last_used: Instant::now(),
        });
        Ok(tx)
    }

    /// A connection (TCP, then TLS when the cluster has it), counted in
    /// `upstream_cx_active` while the guard lives.
    async fn open(&self, authority: &str) -> Result<(TokioIo<UpStream>, GaugeGuard), SendError> {
        let c = &self.config;
        let io =
            crate::connector::connect(authority, &c.settings, c.tls.as_deref(), &c.stats).await?;
        Ok((TokioIo::new(io), c.stats.cx_active.track()))
    }

    /// Closes connections idle past the idle timeout, forgets closed ones; whether any
    /// connection is left.
    fn reap(&self, now: Instant) -> bool {
        let idle = Duration::from_millis(self.config.settings.idle_timeout_ms);
        let mut conns = self.conns.borrow_mut();
        conns.retain(|_, e| {
            e.h1.retain_mut(|c| {
                if c.tx.is_closed() {
                    return false;
                }
                if !c.tx.is_ready() {
                    c.idle_since = None;
                    return true;
                }
                let since = *c.idle_since.get_or_insert(now);
                now.duration_since(since) < idle
            });
            // Dropping the last handle lets hyper close an h2 connection once its
            // streams are done.
            e.h2.retain(|c| !c.tx.is_closed() && now.duration_since(c.last_used) < idle);
            !e.h1.is_empty() || !e.h2.is_empty() || Rc::strong_count(&e.h2_connecting) > 1
        });
        !conns.is_empty()
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.config.settings.idle_timeout_ms)
    }
}

/// An HTTP/2 request: `:authority` from `host` (as Envoy sends it, without a `host`
/// header), else the endpoint; `:scheme` by whether the connection is TLS.
fn to_h2(mut req: http::Request<UpBody>, endpoint: &str, tls: bool) -> http::Request<UpBody> {
    let host = req
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_owned))
        .unwrap_or_else(|| endpoint.to_string());
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let scheme = if tls { "https" } else { "http" };
    if let Ok(uri) = format!("{scheme}://{host}{path}").parse() {
        *req.uri_mut() = uri;
    } else if let Ok(uri) = format!("{scheme}://{endpoint}{path}").parse() {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = http::Version::HTTP_2;
    req
}

/// A pool's identity: the cluster (stats id), its connection settings and its TLS config
/// (0 for plain TCP).
pub type PoolKey = (u64, ConnSettings, u64);

/// The worker's pools, and its reaper.
#[derive(Default)]
pub struct Pools {
    pools: Rc<RefCell<HashMap<PoolKey, Rc<Pool>>>>,
    reaping: Rc<Cell<bool>>,
}

impl Pools {
    /// The pool for `key`, made with `config` when there is none. A new TLS config (a
    /// rotated certificate) gets a new pool; the old one's connections finish their
    /// requests and close.
    pub fn get(&self, key: PoolKey, config: impl FnOnce() -> PoolConfig) -> Rc<Pool> {
        if let Some(p) = self.pools.borrow().get(&key) {
            return p.clone();
        }
        let pool = Rc::new(Pool::new(config()));
        let mut pools = self.pools.borrow_mut();
        pools.retain(|k, _| !(k.0 == key.0 && k.1 == key.1));
        pools.insert(key, pool.clone());
        if !self.reaping.replace(true) {
            tokio::task::spawn_local(reaper(Rc::downgrade(&self.pools), self.reaping.clone()));
        }
        pool
    }
}

/// Every so often (half the shortest idle timeout, between 100 ms and 1 s), closes idle
/// connections and forgets pools left empty; ends when there are none, or the worker went.
async fn reaper(pools: Weak<RefCell<HashMap<PoolKey, Rc<Pool>>>>, reaping: Rc<Cell<bool>>) {
    loop {
        let tick = {
            let Some(p) = pools.upgrade() else { return };
            let min = p.borrow().values().map(|p| p.idle_timeout()).min();
            min.unwrap_or(Duration::from_secs(1))
                .div_f32(2.0)
                .clamp(Duration::from_millis(100), Duration::from_secs(1))
        };
        tokio::time::sleep(tick).await;
        let Some(p) = pools.upgrade() else { return };
        let now = Instant::now();
        let mut p = p.borrow_mut();
        p.retain(|_, pool| pool.reap(now) || Rc::strong_count(pool) > 1);
        if p.is_empty() {
            reaping.set(false);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::full;
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A server on 127.0.0.1 that counts its connections and answers each request with
    /// the authority it saw (`:authority` for HTTP/2, `host` for HTTP/1.1).
    async fn server(h2: bool) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let svc = hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                    let seen = req
                        .uri()
                        .authority()
                        .map(|a| a.to_string())
                        .or_else(|| {
                            let h = req.headers().get(http::header::HOST)?;
                            Some(h.to_str().ok()?.to_string())
                        })
                        .unwrap_or_default();
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(Bytes::from(seen)),
                    ))
                });
                let io = TokioIo::new(tcp);
                tokio::spawn(async move {
                    if h2 {
                        let b = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        );
                        let _ = b.serve_connection(io, svc).await;
                    } else {
                        let b = hyper::server::conn::http1::Builder::new();
                        let _ = b.serve_connection(io, svc).await;
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn pool(name: &str, protocol: UpstreamProtocol, max: u32, idle_ms: u64) -> Pool {
        Pool::new(PoolConfig {
            settings: ConnSettings {
                protocol,
                connect_timeout_ms: 1000,
                idle_timeout_ms: idle_ms,
                tcp_idle_timeout_ms: 1000,
                max_requests_per_connection: max,
                max_connections: 0,
            },
            tls: None,
            stats: lateen_core::stats::store().cluster(name),
        })
    }

    fn get(host: &str) -> http::Request<UpBody> {
        let mut req = http::Request::new(full(Bytes::new()));
        *req.uri_mut() = "/x?y=1".parse().unwrap();
        req.headers_mut()
            .insert(http::header::HOST, host.parse().unwrap());
        req
    }

    async fn body(resp: http::Response<Incoming>) -> String {
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    /// Runs `f` on a local task set, as a worker runs its requests.
    fn local<F: std::future::Future<Output = ()>>(f: F) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(tokio::task::LocalSet::new().run_until(f));
    }

    #[test]
    fn http1_requests_in_turn_reuse_one_connection() {
        local(async {
            let (addr, accepted) = server(false).await;
            let p = pool("pool-test-reuse", UpstreamProtocol::Http1, 0, 60_000);
            for _ in 0..5 {
                let resp = p.send(&addr, get("svc.test")).await.unwrap();
                assert_eq!(body(resp).await, "svc.test");
                // The connection task finishes the response before the next checkout.
                tokio::task::yield_now().await;
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 1);
            assert_eq!(p.config.stats.cx_total.get(), 1);
        });
    }

    #[test]
    fn http1_concurrent_requests_get_their_own_connections() {
        local(async {
            let (addr, accepted) = server(false).await;
            let p = pool("pool-test-concurrent", UpstreamProtocol::Http1, 0, 60_000);
            let (a, b) = tokio::join!(p.send(&addr, get("a")), p.send(&addr, get("b")));
            assert_eq!(body(a.unwrap()).await, "a");
            assert_eq!(body(b.unwrap()).await, "b");
            assert_eq!(accepted.load(Ordering::SeqCst), 2);
        });
    }

    #[test]
    fn max_requests_per_connection_retires_the_connection() {
        local(async {
            let (addr, accepted) = server(false).await;
            let p = pool("pool-test-max", UpstreamProtocol::Http1, 2, 60_000);
            for _ in 0..4 {
                let resp = p.send(&addr, get("svc.test")).await.unwrap();
                body(resp).await;
                tokio::task::yield_now().await;
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 2);
        });
    }

    #[test]
    fn idle_connections_close_after_the_idle_timeout() {
        local(async {
            let (addr, _) = server(false).await;
            let pools = Pools::default();
            let config = pool("pool-test-idle", UpstreamProtocol::Http1, 0, 200).config;
            let p = pools.get((7, config.settings, 0), || config);
            body(p.send(&addr, get("svc.test")).await.unwrap()).await;
            assert_eq!(p.config.stats.cx_active.get(), 1);
            tokio::time::sleep(Duration::from_millis(800)).await;
            assert_eq!(p.config.stats.cx_active.get(), 0, "the reaper closed it");
            // And a request after that connects anew.
            body(p.send(&addr, get("svc.test")).await.unwrap()).await;
            assert_eq!(p.config.stats.cx_total.get(), 2);
        });
    }

    #[test]
    fn http2_requests_share_one_connection_with_the_host_as_authority() {
        local(async {
            let (addr, accepted) = server(true).await;
            let p = pool("pool-test-h2", UpstreamProtocol::Http2, 0, 60_000);
            let sends = (0..8).map(|i| p.send(&addr, get(&format!("h{i}.test"))));
            let resps = futures_util::future::join_all(sends).await;
            for (i, r) in resps.into_iter().enumerate() {
                assert_eq!(body(r.unwrap()).await, format!("h{i}.test"));
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn a_refused_connection_is_a_connect_failure() {
        local(async {
            // Bound and dropped: nothing listens there.
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .to_string();
            let p = pool("pool-test-refused", UpstreamProtocol::Http1, 0, 60_000);
            let e = p.send(&addr, get("svc.test")).await.unwrap_err();
            assert!(e.is_connect(), "{e}");
            assert_eq!(p.config.stats.cx_connect_fail.get(), 1);
        });
    }
}
