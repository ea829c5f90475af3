//! Real peers the tests start (Redis, Prometheus, an OCI registry, Chromium, an OTLP
//! receiver, a plugin file server, the mesh CA), each stopped when dropped.

use super::*;

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

/// The venv's Python that tests/run.sh makes (with opentelemetry-proto, h2 and
/// kubernetes-validate), or `$LATEEN_TEST_PYTHON`.
pub fn test_python() -> PathBuf {
    std::env::var_os("LATEEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| paths().target.join("py/bin/python"))
}

/// A real OTLP/HTTP trace receiver (`tests/otlp/receiver.py`, on the `opentelemetry-proto`
/// package from PyPI that tests/run.sh installs into `$CARGO_TARGET_DIR/py`).
pub struct OtlpReceiver {
    pub port: u16,
    _daemon: Daemon,
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let python = test_python();
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
