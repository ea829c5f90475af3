//! The real `lateen run` process on a temporary config directory.

use super::*;

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
