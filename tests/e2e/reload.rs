//! Hot reload: config and plugin configuration change under load with no failed request; a
//! bad change changes nothing.

use lateen_e2e::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn config(a: &Backend, b: &Backend, subset: &str, value: &str) -> String {
    mesh(&[a, b])
        + &format!(
            r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: header-echo, namespace: istio-system}}
spec:
  url: file://{{{{WASM}}}}/test_plugin_header_echo.wasm
  pluginConfig: {{value: {value}}}
"#
        )
        + &route_all(subset)
}

#[tokio::test]
async fn config_and_plugin_changes_under_load_fail_no_request() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = Proxy::start_with(&config(&a, &b, "a", "one"), &["--concurrency", "2"])
        .await
        .expect("proxy starts");
    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, results, url) = (stop.clone(), results.clone(), proxy.url("/"));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = get(&url).await;
                let entry = match r {
                    Ok(r) => (r.status, r.header("x-backend").unwrap_or("").to_string()),
                    Err(e) => (0, e.to_string()),
                };
                results.lock().unwrap().push(entry);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Route and plugin config change together.
    proxy.rewrite(&config(&a, &b, "b", "two"));
    eventually("the new route and plugin config", || async {
        b.seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.header("x-plugin-added") == Some("two"))
    })
    .await;

    // A broken change is rejected and the running config keeps serving.
    proxy.rewrite(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken\n",
    );
    let e = proxy.reload_error().await;
    assert!(e.contains("config.yaml:"), "{e}");
    let n = results.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let results = results.lock().unwrap().clone();
    let failed: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        results[n..].iter().all(|(_, backend)| backend == "b"),
        "still on the last good config"
    );
    let stats = proxy.stats().await;
    assert!(
        stats.contains("config_reload_total{result=\"failure\"} 1"),
        "{stats}"
    );
    assert!(
        !stats.contains("config_reload_total{result=\"success\"} 0"),
        "{stats}"
    );
    // The load ran through both changes (a count of requests would measure the machine).
    assert!(
        n > 0 && results.len() > n,
        "load ran: {n} requests before the broken change, {} in all",
        results.len()
    );
}

// `header_echo_roots_done_total`: the header-echo root contexts that ended.
async fn roots_done(proxy: &Proxy) -> u64 {
    proxy
        .stats()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("header_echo_roots_done_total "))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

fn root_streams(seen: &Seen) -> u64 {
    seen.header("x-plugin-root-streams")
        .and_then(|v| v.parse().ok())
        .expect("x-plugin-root-streams")
}

/// A change that leaves a plugin alone keeps its instance and root context, and so its
/// state, as Envoy keeps a VM across listener updates; a new plugin configuration gets a
/// new root, and the old root ends (on_done) once no chain uses it.
#[tokio::test]
async fn unchanged_plugins_keep_their_state_across_config_changes() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = Proxy::start(&config(&a, &b, "a", "one"))
        .await
        .expect("proxy starts");
    for n in 1..=3 {
        let r = get(&proxy.url("/")).await.expect("request");
        assert_eq!(r.status, 200);
        assert_eq!(root_streams(&a.last()), n, "one root counts every stream");
    }

    // A route change: the root carries on counting.
    proxy.rewrite(&config(&a, &b, "b", "one"));
    proxy.wait_served(&b, "x-plugin-added", "one").await;
    let first_on_b = b.seen.lock().unwrap()[0].clone();
    assert_eq!(
        root_streams(&first_on_b),
        a.seen.lock().unwrap().len() as u64 + 1,
        "the root survived the route change: it counted every request to a"
    );
    assert_eq!(roots_done(&proxy).await, 0, "no root ended");

    // A new configuration: a new root, counting from 1; the old one ends.
    proxy.rewrite(&config(&a, &b, "b", "two"));
    proxy.wait_served(&b, "x-plugin-added", "two").await;
    let first_two = b
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.header("x-plugin-added") == Some("two"))
        .cloned()
        .expect("a request with the new configuration");
    assert_eq!(root_streams(&first_two), 1, "a fresh root");
    eventually("the old root ended", || async {
        roots_done(&proxy).await == 1
    })
    .await;
    // And the new root carries on counting across a route change back.
    proxy.rewrite(&config(&a, &b, "a", "two"));
    let before = a.seen.lock().unwrap().len();
    proxy.wait_served(&a, "x-plugin-added", "two").await;
    let first_back = a.seen.lock().unwrap()[before].clone();
    assert!(
        root_streams(&first_back) > 1,
        "the second root kept counting"
    );
    assert_eq!(roots_done(&proxy).await, 1);
}

#[tokio::test]
async fn a_plugin_that_panics_in_on_configure_keeps_its_last_good_version() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = Proxy::start(&config(&a, &b, "a", "one"))
        .await
        .expect("proxy starts");
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    assert_eq!(a.last().header("x-plugin-added"), Some("one"));
    // The new config's plugin traps in on_configure: that WasmPlugin is refused alone and
    // keeps its last good version; the route change beside it applies.
    proxy.rewrite(&config(&a, &b, "b", "two, panic: true"));
    let e = proxy.reload_error().await;
    assert!(
        e.contains("header-echo") && e.contains("on_configure"),
        "{e}"
    );
    eventually("the new route", || async {
        get(&proxy.url("/")).await.unwrap().header("x-backend") == Some("b")
    })
    .await;
    assert_eq!(
        b.last().header("x-plugin-added"),
        Some("one"),
        "with the plugin's last good config"
    );
}

#[tokio::test]
async fn a_changed_plugin_module_is_hot_loaded() {
    let a = Backend::start("a").await;
    let yaml = mesh(&[&a])
        + r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: local-plugin, namespace: istio-system}
spec:
  url: file://plugin.wasm
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: svc.test}}]
"#;
    // The plugin file sits beside the config; start with header-echo.
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("plugin.wasm");
    std::fs::copy(wasm("test_plugin_header_echo"), &plugin).unwrap();
    let yaml = yaml.replace(
        "file://plugin.wasm",
        &format!("file://{}", plugin.display()),
    );
    let proxy = Proxy::start(&yaml).await.expect("proxy starts");
    get(&proxy.url("/")).await.unwrap();
    assert_eq!(a.last().header("x-plugin-added"), Some("yes"));

    // Swap the module the way a deployment does: write beside, then rename over.
    let tmp = dir.path().join(".plugin.wasm.tmp");
    std::fs::copy(wasm("test_plugin_trap"), &tmp).unwrap();
    std::fs::rename(&tmp, &plugin).unwrap();
    proxy.wait_served(&a, "x-trap-plugin", "passed").await;
    let dump = get(&format!("http://127.0.0.1:{}/config_dump", proxy.admin))
        .await
        .unwrap();
    assert!(
        dump.body.contains(&sha256_of(&plugin)),
        "config dump shows the new sha256"
    );

    // A broken module is rejected; the last good one keeps serving.
    std::fs::write(&tmp, b"\0asm\x01\0\0\0garbage").unwrap();
    std::fs::rename(&tmp, &plugin).unwrap();
    let e = proxy.reload_error().await;
    assert!(e.contains("does not compile"), "{e}");
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    assert_eq!(a.last().header("x-trap-plugin"), Some("passed"));
}

fn sha256_of(p: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn http_plugin_urls_are_verified_cached_and_survive_the_server() {
    let a = Backend::start("a").await;
    let module = std::fs::read(wasm("test_plugin_header_echo")).unwrap();
    let sha = sha256_of(&wasm("test_plugin_header_echo"));
    let server = FileServer::start(module).await;
    let server_addr = server.addr;
    let cfg = |sha: &str, route_name: &str| {
        mesh(&[&a])
            + &format!(
                r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: remote, namespace: istio-system}}
spec:
  url: http://{}/plugins/header-echo.wasm
  sha256: {sha}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: test}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - name: {route_name}
    route: [{{destination: {{host: svc.test}}}}]
"#,
                server_addr
            )
    };
    let proxy = Proxy::start(&cfg(&sha, "first"))
        .await
        .expect("proxy starts");
    get(&proxy.url("/")).await.unwrap();
    assert_eq!(a.last().header("x-plugin-added"), Some("yes"));

    // The server goes away; a config change still loads, from the cache.
    drop(server);
    proxy.rewrite(&cfg(&sha, "second"));
    eventually("the reload from the cache", || async {
        proxy
            .stats()
            .await
            .contains("config_reload_total{result=\"success\"} 1")
    })
    .await;
    get(&proxy.url("/")).await.unwrap();
    assert_eq!(a.last().header("x-plugin-added"), Some("yes"));

    // A wrong sha256 is refused and the running config stays.
    proxy.rewrite(&cfg(&"0".repeat(64), "third"));
    let e = proxy.reload_error().await;
    assert!(e.contains("spec.url") && e.contains("sha256"), "{e}");
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
}

#[tokio::test]
async fn https_plugin_urls_verify_the_server_certificate() {
    let a = Backend::start("a").await;
    let module = std::fs::read(wasm("test_plugin_header_echo")).unwrap();
    let sha = sha256_of(&wasm("test_plugin_header_echo"));
    let (pki, stranger) = (TestPki::new(), TestPki::new());
    let server = FileServer::start_tls(module, &pki).await;
    let dir = tempfile::tempdir().unwrap();
    let trusted = dir.path().join("ca.pem");
    let untrusted = dir.path().join("other-ca.pem");
    std::fs::write(&trusted, &pki.ca_pem).unwrap();
    std::fs::write(&untrusted, &stranger.ca_pem).unwrap();
    let yaml = mesh(&[&a])
        + &format!(
            r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: remote, namespace: istio-system}}
spec:
  url: https://localhost:{}/plugins/header-echo.wasm
  sha256: {sha}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: test}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: svc.test}}}}]
"#,
            server.addr.port()
        );
    // A server whose certificate the proxy does not trust: the config is refused.
    let refused = Proxy::start_env(
        &yaml,
        &[],
        &[("SSL_CERT_FILE", untrusted.to_str().unwrap())],
    )
    .await
    .err()
    .expect("an untrusted server is refused")
    .to_string();
    assert!(
        refused.contains("spec.url") && refused.contains("certificate"),
        "{refused}"
    );
    // Trusted through SSL_CERT_FILE: the module loads and runs.
    let proxy = Proxy::start_env(&yaml, &[], &[("SSL_CERT_FILE", trusted.to_str().unwrap())])
        .await
        .expect("proxy starts");
    get(&proxy.url("/")).await.unwrap();
    assert_eq!(a.last().header("x-plugin-added"), Some("yes"));
}

#[tokio::test]
async fn pushed_modules_are_hot_loaded_and_pushes_need_the_token() {
    let a = Backend::start("a").await;
    let vs = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: svc.test}}]
"#;
    let proxy = Proxy::start_with(&(mesh(&[&a]) + vs), &["--admin-token", "s3cret"])
        .await
        .expect("proxy starts");
    let name = format!("echo-{}", proxy.port);
    let push = |file: &str, token: Option<&str>| {
        let mut cmd = std::process::Command::new(paths().bin);
        cmd.arg("push").arg(wasm(file)).args([
            "--name",
            &name,
            "--admin",
            &format!("127.0.0.1:{}", proxy.admin),
        ]);
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        cmd.env_remove("LATEEN_ADMIN_TOKEN")
            .output()
            .expect("run lateen push")
    };
    let out = push("test_plugin_header_echo", None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
    let out = push("test_plugin_header_echo", Some("s3cret"));
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("pushed://{name}")));

    // A config that references the pushed module by name.
    proxy.rewrite(
        &(mesh(&[&a])
            + vs
            + &format!(
                "---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: pushed, namespace: istio-system}}\nspec:\n  url: pushed://{name}\n"
            )),
    );
    proxy.wait_served(&a, "x-plugin-added", "yes").await;
    // Pushing a new module under the same name swaps it in.
    assert!(push("test_plugin_trap", Some("s3cret")).status.success());
    proxy.wait_served(&a, "x-trap-plugin", "passed").await;

    // A push whose sha256 does not match is refused.
    let r = send(
        "POST",
        &format!("http://127.0.0.1:{}/plugins/{name}", proxy.admin),
        &[
            ("x-sha256", &"0".repeat(64)),
            ("authorization", "Bearer s3cret"),
        ],
        "\0asm junk",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.body.contains("sha256 mismatch"), "{}", r.body);
}

#[tokio::test]
async fn oci_plugins_from_a_real_registry_in_both_image_formats() {
    let registry = Registry::start().await;
    let a = Backend::start("a").await;
    let echo = std::fs::read(wasm("test_plugin_header_echo")).unwrap();
    let trap = std::fs::read(wasm("test_plugin_trap")).unwrap();

    // Istio's OCI format: a layer with the wasm media type.
    registry.push_wasm_image("plugins/echo", "v1", &echo).await;

    // The Docker-image format: one gzipped tar layer holding plugin.wasm.
    let mut tarball = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut tarball, flate2::Compression::default());
        let mut t = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(trap.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, "plugin.wasm", &trap[..]).unwrap();
        t.into_inner().unwrap().finish().unwrap();
    }
    let config = registry.push_blob("plugins/trap", b"{}").await;
    let layer = registry.push_blob("plugins/trap", &tarball).await;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{config}","size":2}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{layer}","size":{}}}]}}"#,
        tarball.len()
    );
    registry
        .put_manifest(
            "plugins/trap",
            "latest",
            "application/vnd.docker.distribution.manifest.v2+json",
            &manifest,
        )
        .await;

    let yaml = mesh(&[&a])
        + &format!(
            r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: echo, namespace: istio-system}}
spec:
  url: oci://{0}/plugins/echo:v1
  sha256: {1}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: trap, namespace: istio-system}}
spec:
  url: oci://{0}/plugins/trap
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: test}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: svc.test}}}}]
"#,
            registry.addr,
            sha256_of(&wasm("test_plugin_header_echo"))
        );
    // A sha256 that does not match the pulled module is refused.
    let bad = yaml.replacen(
        &sha256_of(&wasm("test_plugin_header_echo")),
        &"0".repeat(64),
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        bad.replace("{{PORT}}", "18099")
            .replace("{{WASM}}", &paths().wasm_dir.display().to_string()),
    )
    .unwrap();
    let out = std::process::Command::new(paths().bin)
        .arg("validate")
        .arg(dir.path())
        .arg("--filters-dir")
        .arg(paths().wasm_dir)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("sha256 mismatch"),
        "{text}"
    );

    let proxy = Proxy::start(&yaml)
        .await
        .expect("proxy starts with OCI plugins");
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    let seen = a.last();
    assert_eq!(
        seen.header("x-plugin-added"),
        Some("yes"),
        "wasm-layer image"
    );
    assert_eq!(
        seen.header("x-trap-plugin"),
        Some("passed"),
        "docker-format image"
    );
}

#[tokio::test]
async fn configmap_symlink_swaps_are_picked_up() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    // The proxy starts on a plain file; the test then lays the directory out the way a
    // Kubernetes ConfigMap volume does: config.yaml -> ..data/config.yaml, ..data -> ..v1.
    let proxy = Proxy::start(&(mesh(&[&a, &b]) + &route_all("a")))
        .await
        .expect("proxy starts");
    let dir = proxy.dir.path().to_path_buf();
    let port = proxy.port.to_string();
    let write_version = |v: &str, subset: &str| {
        let vdir = dir.join(format!("..{v}"));
        std::fs::create_dir_all(&vdir).unwrap();
        std::fs::write(
            vdir.join("config.yaml"),
            (mesh(&[&a, &b]) + &route_all(subset)).replace("{{PORT}}", &port),
        )
        .unwrap();
        // Atomic switch of ..data, as kubelet does it.
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..{v}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
    };
    write_version("v1", "a");
    let link = dir.join("config.yaml");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("..data/config.yaml", &link).unwrap();
    assert_eq!(
        get(&proxy.url("/")).await.unwrap().header("x-backend"),
        Some("a")
    );

    write_version("v2", "b");
    eventually("the symlink swap", || async {
        let r = get(&proxy.url("/")).await.unwrap();
        assert_eq!(r.status, 200);
        r.header("x-backend") == Some("b")
    })
    .await;
}

#[tokio::test]
async fn twenty_plugin_swaps_under_keepalive_http1_and_http2_load() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = Proxy::start_with(&config(&a, &b, "a", "v0"), &["--concurrency", "2"])
        .await
        .expect("proxy starts");
    let stop = Arc::new(AtomicBool::new(false));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut load = Vec::new();
    for (i, client) in [
        KeepAlive::http1(),
        KeepAlive::http1(),
        KeepAlive::http2(),
        KeepAlive::http2(),
    ]
    .into_iter()
    .enumerate()
    {
        let (stop, failures, count, url) = (
            stop.clone(),
            failures.clone(),
            count.clone(),
            proxy.url("/"),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).await {
                    Ok(r) if r.status == 200 => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("client {i}: {} {}", r.status, r.body)),
                    Err(e) => failures.lock().unwrap().push(format!("client {i}: {e:#}")),
                }
            }
        }));
    }
    // 20 swaps of the plugin's configuration (a new root context and instances each time),
    // each one served before the next.
    let mut swap_ms = Vec::new();
    for v in 1..=20 {
        let want = format!("v{v}");
        let started = Instant::now();
        proxy.rewrite(&config(&a, &b, "a", &want));
        eventually(&want, || async {
            let seen = a.seen.lock().unwrap();
            seen.last().and_then(|s| s.header("x-plugin-added")) == Some(want.as_str())
        })
        .await;
        swap_ms.push(started.elapsed().as_millis());
    }
    swap_ms.sort_unstable();
    println!(
        "swap latency (file written -> first request on the new version): median {} ms, max {} ms",
        swap_ms[10], swap_ms[19]
    );
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Every request was served by some configured version, never by a broken one.
    let versions: Vec<String> = (0..=20).map(|v| format!("v{v}")).collect();
    for s in a.seen.lock().unwrap().iter() {
        let v = s.header("x-plugin-added").unwrap_or("none").to_string();
        assert!(
            versions.contains(&v),
            "request served without a known plugin version: {v}"
        );
    }
    // Each swap was seen by a request of the load: it ran through all of them.
    assert!(count.load(Ordering::Relaxed) >= 20, "load ran");
}

#[tokio::test]
async fn progressive_rollout_rolls_a_trapping_canary_back() {
    let a = Backend::start("a").await;
    let yaml = mesh(&[&a])
        + r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: rollout
  namespace: istio-system
  annotations:
    lateen.io/canary-url: file://{{WASM}}/test_plugin_trap.wasm
    lateen.io/canary-percent: "50"
    lateen.io/canary-max-trap-percent: "10"
    lateen.io/canary-min-requests: "10"
spec:
  url: file://{{WASM}}/test_plugin_header_echo.wasm
  failStrategy: FAIL_OPEN
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: svc.test}}]
"#;
    let proxy = Proxy::start(&yaml).await.expect("proxy starts");
    // Every request asks the canary (the trap plugin) to trap.
    let mut by_canary = 0;
    for _ in 0..60 {
        let r = send("GET", &proxy.url("/"), &[("x-trap", "1")], "")
            .await
            .unwrap();
        assert_eq!(
            r.status, 200,
            "FAIL_OPEN: a trapping canary costs no request"
        );
        if a.last().header("x-plugin-added").is_none() {
            by_canary += 1;
        }
    }
    assert!(
        by_canary >= 5,
        "the canary took its share before the rollback: {by_canary}"
    );
    let dump = get(&format!("http://127.0.0.1:{}/config_dump", proxy.admin))
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&dump.body).unwrap();
    let canary = &v["plugins"][0]["canary"];
    assert_eq!(canary["state"], "rolled_back", "{canary}");
    assert!(canary["traps"].as_u64().unwrap() >= 10, "{canary}");
    let stats = get(&format!(
        "http://127.0.0.1:{}/stats/prometheus",
        proxy.admin
    ))
    .await
    .unwrap();
    assert!(
        stats
            .body
            .contains("lateen_canary_rolled_back{plugin=\"istio-system/rollout\"} 1"),
        "{}",
        stats.body
    );
    // After the rollback every stream runs the stable version.
    for _ in 0..30 {
        send("GET", &proxy.url("/"), &[("x-trap", "1")], "")
            .await
            .unwrap();
        assert_eq!(a.last().header("x-plugin-added"), Some("yes"));
    }
}

/// A VirtualService `name` for host `host` sending everything to subset `subset`, with
/// `extra` appended to its http route (a match, say).
fn team_vs(name: &str, host: &str, subset: &str, extra: &str) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: test}}
spec:
  hosts: [{host}]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: svc.test, subset: {subset}}}}}]{extra}
"#
    )
}

#[tokio::test]
async fn a_refused_resource_keeps_its_last_good_version_while_the_rest_applies() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let base = mesh(&[&v1, &v2]);
    let proxy = Proxy::start(
        &(base.clone()
            + &team_vs("team-a", "a.test", "v1", "")
            + &team_vs("team-b", "b.test", "v1", "")),
    )
    .await
    .expect("proxy starts");
    let served = |host: &'static str| {
        let url = proxy.url("/");
        async move {
            send("GET", &url, &[("host", host)], "")
                .await
                .unwrap()
                .header("x-backend")
                .map(str::to_string)
        }
    };
    assert_eq!(served("a.test").await.as_deref(), Some("v1"));

    // team-a's new version is invalid (a regex that does not compile) and would send a to
    // v2; team-b's moves b to v2. team-b applies; team-a keeps serving its last good version.
    proxy.rewrite(
        &(base.clone()
            + &team_vs(
                "team-a",
                "a.test",
                "v2",
                "\n    match: [{uri: {regex: \"(unclosed\"}}]",
            )
            + &team_vs("team-b", "b.test", "v2", "")),
    );
    eventually("team-b's change applied", || async {
        served("b.test").await.as_deref() == Some("v2")
    })
    .await;
    assert_eq!(
        served("a.test").await.as_deref(),
        Some("v1"),
        "a keeps its last good version"
    );
    let e = proxy.reload_error().await;
    assert!(
        e.contains("refused") && e.contains("VirtualService test/team-a"),
        "{e}"
    );
    let dump = proxy.config_dump().await;
    assert_eq!(
        dump["refused"][0]["resource"], "VirtualService test/team-a",
        "{dump}"
    );

    // A new resource that is refused has no last good version: it is left out, and the
    // others still apply.
    proxy.rewrite(
        &(base
            + &team_vs("team-a", "a.test", "v1", "")
            + &team_vs("team-b", "b.test", "v1", "")
            + &team_vs("team-c", "c.test", "v1", "\n    weigth: 1")),
    );
    eventually("team-b back on v1", || async {
        served("b.test").await.as_deref() == Some("v1")
    })
    .await;
    let dump = proxy.config_dump().await;
    assert_eq!(
        dump["refused"][0]["resource"], "VirtualService test/team-c",
        "{dump}"
    );
    assert_eq!(served("c.test").await, None, "team-c is not served: {dump}");
}
