//! Test support for Lateen's end-to-end tests: real upstream servers on 127.0.0.1, the real
//! `lateen` binary on a temporary config, and a plain HTTP client.

mod jwt;
pub mod xds;
pub use jwt::{now as jwt_now, Issuer};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Polls `check` every 5 ms until it holds; panics naming `what` after 10 s. For anything
/// that changes over time (reloads, ticks, mirrors), as linkerd's `assert_eventually!`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Where the build put the binary and the wasm modules.
pub struct Paths {
    pub bin: PathBuf,
    pub wasm_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// `$CARGO_TARGET_DIR`: where tests/run.sh puts the Python venv, and the screenshot.
    pub target: PathBuf,
}

/// Finds `lateen` and the built filters from the test binary's own location
/// (`target/debug/deps/e2e-…`).
pub fn paths() -> Paths {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>")
        .to_path_buf();
    let target = profile_dir.parent().expect("target dir").to_path_buf();
    Paths {
        bin: profile_dir.join("lateen"),
        wasm_dir: target.join("wasm32-wasip1/wasm"),
        cache_dir: target.join("lateen-test-cache"),
        target,
    }
}

/// A wasm module built from this workspace (`lateen_router`, `test_plugin_trap`, ...).
pub fn wasm(name: &str) -> PathBuf {
    let p = paths().wasm_dir.join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: build the filters first (tests/run.sh does)",
        p.display()
    );
    p
}

/// A TCP server on a loopback port that greets each connection with `name` and a newline,
/// then echoes what it reads. Returns the port; it serves until the test's runtime ends.
pub async fn tcp_echo(name: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Runs `lateen validate` on `yaml`, written as `file_name` in a temporary directory,
/// asserts that the config is refused, and returns what it printed on stderr.
pub fn refused(file_name: &str, yaml: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join(file_name);
    std::fs::write(&cfg, yaml).expect("write config");
    let out = Command::new(paths().bin)
        .arg("validate")
        .arg(&cfg)
        .arg("--filters-dir")
        .arg(paths().wasm_dir)
        .output()
        .expect("lateen validate");
    assert!(
        !out.status.success(),
        "{file_name} must be refused:\n{yaml}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A request as a backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The client end of the connection the request came on (one per upstream connection).
    pub peer: SocketAddr,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An upstream server that names itself in `x-backend` and records what it saw.
/// `/slow/<ms>` answers after that delay; anything else at once.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a backend answers for special paths (anywhere in the path):
/// `/flaky/N/KEY`: 503 for the first N requests of KEY, then 200;
/// `/status/CODE`: that status; `/slowfirst/KEY`: the first request of KEY waits 1 s;
/// `/slow/MS`: waits MS; `…/chunks`: a three-frame body; `…/echo-body`: echoes the body.
fn special(path: &str, counts: &Mutex<std::collections::HashMap<String, u32>>) -> (u16, u64) {
    let seg = |marker: &str| path.split_once(marker).map(|(_, rest)| rest.to_string());
    let count = |key: &str| {
        let mut c = counts.lock().unwrap();
        let n = c.entry(key.to_string()).or_default();
        *n += 1;
        *n
    };
    if let Some(rest) = seg("/flaky/") {
        let mut it = rest.splitn(2, '/');
        let n: u32 = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let key = it.next().unwrap_or("");
        return (
            if count(&format!("flaky/{key}")) <= n {
                503
            } else {
                200
            },
            0,
        );
    }
    if let Some(rest) = seg("/status/") {
        return (
            rest.split('/')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(200),
            0,
        );
    }
    if let Some(key) = seg("/slowfirst/") {
        return (
            200,
            if count(&format!("slowfirst/{key}")) == 1 {
                1000
            } else {
                0
            },
        );
    }
    if let Some(ms) = seg("/slow/") {
        return (200, ms.parse().unwrap_or(0));
    }
    (200, 0)
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_with(name, None).await
    }

    /// A backend that answers every request with `status`.
    pub async fn failing(name: &str, status: u16) -> Backend {
        Self::start_with(name, Some(status)).await
    }

    async fn start_with(name: &str, fixed_status: Option<u16>) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let counts: Arc<Mutex<std::collections::HashMap<String, u32>>> = Arc::default();
        let (name2, seen2) = (name.to_string(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    return;
                };
                let (name, seen, counts) = (name2.clone(), seen2.clone(), counts.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (name, seen, counts) = (name.clone(), seen.clone(), counts.clone());
                        async move {
                            let path = req
                                .uri()
                                .path_and_query()
                                .map_or("/".into(), |p| p.to_string());
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.to_string(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                })
                                .collect();
                            let method = req.method().to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            seen.lock().unwrap().push(Seen {
                                method: method.clone(),
                                path: path.clone(),
                                headers,
                                peer,
                            });
                            let (status, delay_ms) = special(&path, &counts);
                            let status = fixed_status.unwrap_or(status);
                            if delay_ms > 0 {
                                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                            }
                            let text = if path.ends_with("/echo-body") {
                                String::from_utf8_lossy(&body).into_owned()
                            } else {
                                format!("{name} {method} {path}")
                            };
                            let body = if path.contains("/chunks") {
                                // Three chunks, 20 ms apart: a body that arrives in frames.
                                let chunks = futures_util::stream::unfold(0u8, |i| async move {
                                    if i == 3 {
                                        return None;
                                    }
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                    let frame =
                                        hyper::body::Frame::data(Bytes::from(format!("chunk{i};")));
                                    Some((Ok::<_, std::convert::Infallible>(frame), i + 1))
                                });
                                http_body_util::StreamBody::new(chunks).boxed_unsync()
                            } else {
                                Full::new(Bytes::from(text)).boxed_unsync()
                            };
                            let mut r = hyper::Response::new(body);
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            r.headers_mut().insert("x-backend", name.parse().unwrap());
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            seen,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests seen so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("backend saw a request")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running `lateen run` process on a temporary config directory.
pub struct Proxy {
    pub port: u16,
    pub admin: u16,
    /// The read-only `/stats/prometheus` port (Istio's 15090).
    pub stats: u16,
    /// The `/healthz/ready` port (Istio's 15021).
    pub health: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Proxy {
    /// Starts the proxy on `yaml` (written to `config.yaml`); `{{PORT}}` in it becomes the
    /// listener port and `{{WASM}}` the directory of built modules. Waits until ready.
    pub async fn start(yaml: &str) -> Result<Proxy> {
        Self::start_with(yaml, &[]).await
    }

    pub async fn start_with(yaml: &str, extra: &[&str]) -> Result<Proxy> {
        Self::start_env(yaml, extra, &[]).await
    }

    /// As `start_with`, with extra environment variables for the process.
    pub async fn start_env(yaml: &str, extra: &[&str], env: &[(&str, &str)]) -> Result<Proxy> {
        // Ports from `free_port` are free when picked, not when bound: a server another
        // test starts in between may take one. Such a start is retried on fresh ports.
        let mut attempt = 0;
        loop {
            match Self::start_once(yaml, extra, env).await {
                Err(e) if attempt < 3 && e.to_string().contains("Address already in use") => {
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    async fn start_once(yaml: &str, extra: &[&str], env: &[(&str, &str)]) -> Result<Proxy> {
        let mut proxy = Self::spawn(yaml, extra, env)?;
        proxy.wait_ready().await?;
        Ok(proxy)
    }

    /// Starts the process without waiting for it to be ready, for tests of what it does
    /// before then (the admin API during xDS's initial fetch).
    pub fn spawn(yaml: &str, extra: &[&str], env: &[(&str, &str)]) -> Result<Proxy> {
        let p = paths();
        let port = free_port();
        let admin = free_port();
        let (stats, health) = (free_port(), free_port());
        let dir = tempfile::tempdir()?;
        let yaml = yaml
            .replace("{{PORT}}", &port.to_string())
            .replace("{{WASM}}", &p.wasm_dir.display().to_string());
        std::fs::write(dir.path().join("config.yaml"), yaml)?;
        let log = std::fs::File::create(dir.path().join("lateen.log"))?;
        let child = Command::new(&p.bin)
            .arg("run")
            .arg("--config")
            .arg(dir.path().join("config.yaml"))
            .args(if extra.contains(&"--concurrency") {
                &[][..]
            } else {
                &["--concurrency", "1"][..]
            })
            .arg("--admin-address")
            .arg(format!("127.0.0.1:{admin}"))
            .arg("--stats-address")
            .arg(format!("127.0.0.1:{stats}"))
            .arg("--health-address")
            .arg(format!("127.0.0.1:{health}"))
            .arg("--filters-dir")
            .arg(&p.wasm_dir)
            .arg("--cache-dir")
            .arg(&p.cache_dir)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", p.bin.display()))?;
        Ok(Proxy {
            port,
            admin,
            stats,
            health,
            dir,
            child,
        })
    }

    /// Waits (up to 60 s) until `/ready` answers 200; fails if the process exits first.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("lateen exited with {status} before ready:\n{}", self.log());
            }
            if let Ok(r) = get(&format!("http://127.0.0.1:{}/ready", self.admin)).await {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("lateen not ready after 60s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replaces the config file the way editors and Kubernetes do (write, then rename), with
    /// the same substitutions as `start`.
    pub fn rewrite(&self, yaml: &str) {
        let yaml = yaml
            .replace("{{PORT}}", &self.port.to_string())
            .replace("{{WASM}}", &paths().wasm_dir.display().to_string());
        let tmp = self.dir.path().join(".config.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, self.dir.path().join("config.yaml")).expect("swap config");
    }

    /// One plugin's entry of `/plugins` (settings, rules, stats).
    pub async fn plugin(&self, name: &str) -> serde_json::Value {
        let r = get(&format!("http://127.0.0.1:{}/plugins", self.admin))
            .await
            .expect("GET /plugins");
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("/plugins is JSON");
        v["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in /plugins: {v}"))
    }

    /// `/config_dump` as JSON.
    pub async fn config_dump(&self) -> serde_json::Value {
        let r = get(&format!("http://127.0.0.1:{}/config_dump", self.admin))
            .await
            .expect("config_dump");
        serde_json::from_str(&r.body).expect("config_dump is JSON")
    }

    /// `/stats/prometheus`.
    pub async fn stats(&self) -> String {
        get(&format!("http://127.0.0.1:{}/stats/prometheus", self.admin))
            .await
            .expect("stats")
            .body
    }

    /// Host stats by Envoy name (`cluster.NAME.upstream_rq_retry`), from the admin API's
    /// `/stats?format=json`.
    pub async fn host_stats(&self) -> std::collections::BTreeMap<String, f64> {
        let r = get(&format!(
            "http://127.0.0.1:{}/stats?format=json",
            self.admin
        ))
        .await
        .expect("/stats");
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("/stats is JSON");
        v["stats"]
            .as_array()
            .expect("stats array")
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or_default().to_string(),
                    s["value"].as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect()
    }

    /// One host stat; panics with the whole list when it does not exist.
    pub async fn stat(&self, name: &str) -> f64 {
        let all = self.host_stats().await;
        match all.get(name) {
            Some(v) => *v,
            None => panic!("no stat {name} in {:#?}", all.keys().collect::<Vec<_>>()),
        }
    }

    /// Sends GETs to `/` (each must succeed) until `backend` sees a request whose `header` is
    /// `value`: the sign that a new configuration or module is serving.
    pub async fn wait_served(&self, backend: &Backend, header: &str, value: &str) {
        let what = format!("{header}: {value} at {}\n{}", backend.name, self.log());
        eventually(&what, || async {
            let r = get(&self.url("/")).await.expect("request");
            assert_eq!(
                r.status, 200,
                "a request failed while waiting for {header}: {value}"
            );
            backend
                .seen
                .lock()
                .unwrap()
                .last()
                .and_then(|s| s.header(header).map(str::to_string))
                == Some(value.to_string())
        })
        .await;
    }

    /// Waits (10 s at most) for a rejected reload and returns its error.
    pub async fn reload_error(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.config_dump().await["lastReloadError"].as_str() {
                return e.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no reload error reported:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lateen.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Reads a response's body to its end.
    pub async fn read(resp: hyper::Response<hyper::body::Incoming>) -> Result<Resp> {
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// GET `url`.
pub async fn get(url: &str) -> Result<Resp> {
    send("GET", url, &[], "").await
}

/// Sends a request over HTTP/1.1.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Result<Resp> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let mut b = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::from(body.to_string())))?;
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .context("request timed out")??;
    Resp::read(resp).await
}

/// Sends a GET over HTTP/2 with prior knowledge (h2c).
pub async fn get_h2(url: &str) -> Result<Resp> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = hyper::Request::builder()
        .uri(url)
        .body(Full::new(Bytes::new()))?;
    let resp = client.request(req).await?;
    Resp::read(resp).await
}

/// The usual preamble: a Gateway on `{{PORT}}` and a ServiceEntry `svc.test` whose STATIC
/// endpoints are the given backends, labelled `version: <backend name>`, with a
/// DestinationRule subset per backend.
pub fn mesh(backends: &[&Backend]) -> String {
    let mut eps = String::new();
    let mut subsets = String::new();
    for b in backends {
        eps.push_str(&format!(
            "  - address: 127.0.0.1\n    ports: {{http: {}}}\n    labels: {{version: {}}}\n",
            b.port(),
            b.name
        ));
        subsets.push_str(&format!(
            "  - name: {0}\n    labels: {{version: {0}}}\n",
            b.name
        ));
    }
    // A subset no endpoint carries: `no healthy upstream`.
    subsets.push_str("  - name: empty\n    labels: {version: none}\n");
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {{{{PORT}}}}, name: http, protocol: HTTP}}
    hosts: ["*"]
    bind: 127.0.0.1
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc, namespace: test}}
spec:
  hosts: [svc.test]
  ports:
  - {{number: 80, name: http, protocol: HTTP}}
  resolution: STATIC
  endpoints:
{eps}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc, namespace: test}}
spec:
  host: svc.test
  subsets:
{subsets}"#
    )
}

/// A Bootstrap in `istio-system` whose `spec` is `spec` (block YAML, indented two spaces).
pub fn bootstrap(spec: &str) -> String {
    format!(
        "---\napiVersion: lateen.io/v1alpha1\nkind: Bootstrap\n\
         metadata: {{name: lateen, namespace: istio-system}}\nspec:\n{spec}\n"
    )
}

/// A VirtualService on the gateway sending every request to `svc.test` subset `subset`.
pub fn route_all(subset: &str) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: test}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: svc.test, subset: {subset}}}}}]
"#
    )
}

/// A peer process the tests start (Redis, Prometheus, a registry): killed and reaped when
/// dropped, so servers stop by themselves.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `url` until it answers 200; panics naming `what` after `limit`.
async fn wait_ok(url: &str, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        if get(url).await.is_ok_and(|r| r.status == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A real `redis-server` on a free loopback port, stopped on drop.
pub struct Redis {
    pub port: u16,
    _daemon: Daemon,
}

impl Redis {
    pub async fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect(
                "redis-server is needed for the global rate-limit test (tests/run.sh installs it)",
            );
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Redis {
            port,
            _daemon: Daemon(child),
        }
    }
}

/// A real Prometheus (Debian's `prometheus`) scraping one target every second, with its
/// storage in a temporary directory; stopped on drop.
pub struct Prometheus {
    pub port: u16,
    _daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `http://TARGET/stats/prometheus`.
    pub async fn scraping(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs:\n\
                 - job_name: lateen\n  metrics_path: /stats/prometheus\n  \
                 static_configs: [{{targets: ['{target}']}}]\n"
            ),
        )
        .expect("prometheus config");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is needed for the metrics test (tests/run.sh installs it)");
        let me = Prometheus {
            port,
            _daemon: Daemon(child),
            _dir: dir,
        };
        wait_ok(
            &format!("http://127.0.0.1:{port}/-/ready"),
            Duration::from_secs(30),
            "prometheus",
        )
        .await;
        me
    }

    /// The value of an instant PromQL query with a single result, if it has one.
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let q = percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC);
        let r = get(&format!(
            "http://127.0.0.1:{}/api/v1/query?query={q}",
            self.port
        ))
        .await
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        let result = v["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

/// Serves `bytes` at every path on a loopback port until dropped (a plugin server).
pub struct FileServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// A test certificate authority and a server certificate it signed for 127.0.0.1 and
/// localhost.
pub struct TestPki {
    /// The CA certificate, PEM (what a client trusts).
    pub ca_pem: String,
    server: rustls::ServerConfig,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server params");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("server cert");
        let der_key =
            rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("server key der");
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], der_key)
            .expect("server config");
        TestPki {
            ca_pem: ca.pem(),
            server,
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl FileServer {
    pub async fn start(bytes: Vec<u8>) -> FileServer {
        Self::serve(bytes, None).await
    }

    /// The same over HTTPS, with a certificate from `pki`.
    pub async fn start_tls(bytes: Vec<u8>, pki: &TestPki) -> FileServer {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server.clone()));
        Self::serve(bytes, Some(acceptor)).await
    }

    async fn serve(bytes: Vec<u8>, tls: Option<tokio_rustls::TlsAcceptor>) -> FileServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let bytes = Bytes::from(bytes);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let bytes = bytes.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                        let bytes = bytes.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                bytes,
                            )))
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                        Some(acceptor) => {
                            // A client that does not trust the certificate fails the handshake.
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
            }
        });
        FileServer { addr, task }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A real OCI registry (Debian's `docker-registry`, the reference distribution registry) on a
/// free loopback port, with storage in a temporary directory; stopped on drop.
pub struct Registry {
    pub addr: SocketAddr,
    _daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub async fn start() -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is needed for the OCI test (tests/run.sh installs it)");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let daemon = Daemon(child);
        wait_ok(
            &format!("http://{addr}/v2/"),
            Duration::from_secs(15),
            "docker-registry",
        )
        .await;
        Registry {
            addr,
            _daemon: daemon,
            _dir: dir,
        }
    }

    /// Uploads a blob through the registry's HTTP API; returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        use sha2::Digest;
        let digest = format!("sha256:{}", hex_string(&sha2::Sha256::digest(bytes)));
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let start = hyper::Request::post(format!("http://{}/v2/{repo}/blobs/uploads/", self.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client.request(start).await.expect("start upload");
        assert_eq!(resp.status(), 202, "upload start");
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = if location.starts_with("http") {
            format!("{location}{sep}digest={digest}")
        } else {
            format!("http://{}{location}{sep}digest={digest}", self.addr)
        };
        let put = hyper::Request::put(url)
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::copy_from_slice(bytes)))
            .unwrap();
        let resp = client.request(put).await.expect("finish upload");
        assert_eq!(resp.status(), 201, "upload finish");
        digest
    }

    /// Pushes `module` as `repo:tag` in Istio's OCI format (a layer with the wasm media
    /// type).
    pub async fn push_wasm_image(&self, repo: &str, tag: &str, module: &[u8]) {
        let config = self.push_blob(repo, b"{}").await;
        let layer = self.push_blob(repo, module).await;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.module.wasm.config.v1+json","digest":"{config}","size":2}},
            "layers":[{{"mediaType":"application/vnd.module.wasm.content.layer.v1+wasm","digest":"{layer}","size":{}}}]}}"#,
            module.len()
        );
        self.put_manifest(
            repo,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .await;
    }

    /// Stores a manifest under `tag`.
    pub async fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, manifest: &str) {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let req = hyper::Request::put(format!("http://{}/v2/{repo}/manifests/{tag}", self.addr))
            .header("content-type", media_type)
            .body(Full::new(Bytes::from(manifest.to_string())))
            .unwrap();
        let resp = client.request(req).await.expect("put manifest");
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            status,
            201,
            "manifest refused: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

pub fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A client that keeps its connections (HTTP/1.1 keep-alive, or one HTTP/2 connection).
#[derive(Clone)]
pub struct KeepAlive {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl KeepAlive {
    pub fn http1() -> Self {
        KeepAlive {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn http2() -> Self {
        KeepAlive {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    pub async fn get(&self, url: &str) -> Result<Resp> {
        let req = hyper::Request::builder()
            .uri(url)
            .body(Full::new(Bytes::new()))?;
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .context("request timed out")??;
        Resp::read(resp).await
    }
}

/// Headless Chromium (Debian's `chromium`), run once per call.
pub struct Chromium;

impl Chromium {
    fn command() -> Command {
        let mut c = Command::new("chromium");
        // Root in CI has no user namespace sandbox; the page is our own admin UI.
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,800",
        ]);
        c.stdin(Stdio::null());
        c
    }

    fn run(mut c: Command, what: &str) -> std::process::Output {
        let out = c
            .output()
            .unwrap_or_else(|e| panic!("chromium ({what}): {e} (tests/run.sh installs chromium)"));
        assert!(
            out.status.success(),
            "chromium ({what}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The DOM after the page's scripts ran for `budget_ms` of virtual time.
    pub fn dump_dom(url: &str, budget_ms: u64) -> String {
        let mut c = Self::command();
        c.arg(format!("--virtual-time-budget={budget_ms}"))
            .arg("--dump-dom")
            .arg(url);
        String::from_utf8_lossy(&Self::run(c, "dump-dom").stdout).into_owned()
    }

    /// Saves a PNG screenshot of the page.
    pub fn screenshot(url: &str, budget_ms: u64, path: &Path) {
        let mut c = Self::command();
        c.arg(format!("--virtual-time-budget={budget_ms}"))
            .arg(format!("--screenshot={}", path.display()))
            .arg(url);
        Self::run(c, "screenshot");
    }
}

/// A real OTLP/HTTP trace receiver (`tests/otlp/receiver.py`, on the `opentelemetry-proto`
/// package from PyPI that tests/run.sh installs into `$CARGO_TARGET_DIR/py`).
pub struct OtlpReceiver {
    pub port: u16,
    _daemon: Daemon,
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let python = std::env::var_os("LATEEN_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| paths().target.join("py/bin/python"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("otlp/receiver.py");
        let port = free_port();
        let child = Command::new(&python)
            .arg(&script)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{} (tests/run.sh makes this venv): {e}", python.display()));
        let me = OtlpReceiver {
            port,
            _daemon: Daemon(child),
        };
        wait_ok(
            &format!("http://127.0.0.1:{port}/spans"),
            Duration::from_secs(30),
            "the OTLP receiver",
        )
        .await;
        me
    }

    /// `http://127.0.0.1:PORT/v1/traces`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    /// Every span received so far.
    pub async fn spans(&self) -> Vec<serde_json::Value> {
        let r = get(&format!("http://127.0.0.1:{}/spans", self.port))
            .await
            .expect("/spans");
        serde_json::from_str(&r.body).expect("spans JSON")
    }
}

/// A mesh CA made by the real `lateen ca init`, issuing workload certificates with
/// `lateen ca issue`; its files live in a temporary directory.
pub struct MeshCa {
    pub dir: tempfile::TempDir,
}

impl MeshCa {
    pub fn new(trust_domain: &str) -> MeshCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca");
        lateen(&[
            "ca",
            "init",
            "--dir",
            &ca.display().to_string(),
            "--trust-domain",
            trust_domain,
        ]);
        MeshCa { dir }
    }

    /// The root certificate (what peers trust).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("ca/root-cert.pem")
    }

    /// Issues (or re-issues, in place) `cert-chain.pem`, `key.pem` and `root-cert.pem`
    /// under `<ca dir>/<out>`; returns that directory.
    pub fn issue(&self, out: &str, ns: &str, sa: &str, dns: &[&str]) -> PathBuf {
        let out = self.dir.path().join(out);
        let ca = self.dir.path().join("ca").display().to_string();
        let o = out.display().to_string();
        let mut args = vec![
            "ca",
            "issue",
            "--ca",
            &ca,
            "--namespace",
            ns,
            "--service-account",
            sa,
            "--out",
            &o,
        ];
        for d in dns {
            args.extend(["--dns", d]);
        }
        lateen(&args);
        out
    }
}

/// Runs the `lateen` binary to completion; panics with its output when it fails.
/// `lateen validate FILE` with the test filters, as run (it may fail).
pub fn validate(file: &Path) -> std::process::Output {
    Command::new(paths().bin)
        .arg("validate")
        .arg(file)
        .arg("--filters-dir")
        .arg(paths().wasm_dir)
        .output()
        .expect("run lateen validate")
}

pub fn lateen(args: &[&str]) -> String {
    let out = Command::new(paths().bin)
        .args(args)
        .output()
        .expect("run lateen");
    assert!(
        out.status.success(),
        "lateen {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `curl` printed and how it ended.
#[derive(Debug)]
pub struct Curl {
    /// curl's exit code: 0 on success; 35 for a failed TLS handshake, 60 for a certificate
    /// it does not trust, 56 for a connection the peer closed.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real `curl` (with a 10 s limit) without blocking the test's runtime.
pub async fn curl(args: &[&str]) -> Curl {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(&args)
            .output()
            .expect("curl is installed (tests/run.sh installs it)");
        Curl {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("curl task")
}

/// One kept-alive HTTP/1.1 connection over TLS, made with rustls: for what curl cannot
/// show, such as a connection that outlives a certificate rotation.
pub struct TlsConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    /// The DNS SANs of the certificate the server presented.
    pub server_dns_sans: Vec<String>,
    /// The URI SANs (SPIFFE ids) of the certificate the server presented.
    pub server_uri_sans: Vec<String>,
}

impl TlsConn {
    /// Connects to 127.0.0.1:`port` with SNI `sni`, trusting `root`; presents the
    /// `cert-chain.pem`/`key.pem` of `identity` when given. Server names are not checked
    /// (mesh certificates carry SPIFFE ids); the chain is.
    pub async fn connect(
        port: u16,
        sni: &str,
        root: &Path,
        identity: Option<&Path>,
    ) -> Result<TlsConn> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(root)? {
            roots.add(c?)?;
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots)).build()?;
        let builder = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)));
        let cfg = match identity {
            Some(dir) => {
                let chain = CertificateDer::pem_file_iter(dir.join("cert-chain.pem"))?
                    .collect::<Result<Vec<_>, _>>()?;
                let key = PrivateKeyDer::from_pem_file(dir.join("key.pem"))?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from(sni.to_string())?, tcp)
            .await?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .context("no server certificate")?
            .clone();
        let (dns, uri) = cert_sans(&leaf);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(TlsConn {
            sender,
            server_dns_sans: dns,
            server_uri_sans: uri,
        })
    }

    /// A GET for `path` with `host`, on this connection.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Resp> {
        self.sender.ready().await?;
        let req = hyper::Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.sender.send_request(req))
            .await
            .context("request timed out")??;
        Resp::read(resp).await
    }
}

/// The DNS and URI SANs of a DER certificate, read with rcgen's parser.
pub fn cert_sans(der: &rustls_pki_types::CertificateDer<'_>) -> (Vec<String>, Vec<String>) {
    let params = rcgen::CertificateParams::from_ca_cert_der(der).expect("parse certificate");
    let mut dns = Vec::new();
    let mut uri = Vec::new();
    for san in params.subject_alt_names {
        match san {
            rcgen::SanType::DnsName(d) => dns.push(d.as_str().to_string()),
            rcgen::SanType::URI(u) => uri.push(u.as_str().to_string()),
            _ => {}
        }
    }
    (dns, uri)
}

/// Checks the chain and not the name: mesh peers are named by SPIFFE id.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A ServiceEntry `host` (HTTP, port 80) with one STATIC endpoint at 127.0.0.1:`port`,
/// and a VirtualService on `istio-system/gw` sending every request to it.
pub fn routed_to(host: &str, port: u16) -> String {
    let name = host.split('.').next().unwrap_or(host);
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: test}}
spec:
  hosts: [{host}]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: test}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: {host}}}}}]
"#
    )
}

/// A Gateway `istio-system/gw` on `{{PORT}}` taking mesh mTLS (ISTIO_MUTUAL) from any host.
pub const MTLS_GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: {{PORT}}, name: mtls, protocol: HTTPS}
    hosts: ["*"]
    bind: 127.0.0.1
    tls: {mode: ISTIO_MUTUAL}
"#;

/// A Bootstrap whose workload identity is `dir`'s `cert-chain.pem` and `key.pem` (as
/// `MeshCa::issue` writes them), trusting `root`.
pub fn identity_bootstrap(dir: &Path, root: &Path) -> String {
    bootstrap(&format!(
        "  identity: {{certChain: {d}/cert-chain.pem, privateKey: {d}/key.pem, rootCert: {r}}}",
        d = dir.display(),
        r = root.display()
    ))
}
