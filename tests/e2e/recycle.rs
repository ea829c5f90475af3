//! Instance recycling: after N requests or past a linear-memory ceiling, new streams go to
//! a fresh instance while the old one drains, so no request fails.

use lateen_e2e::*;

fn plugin(name: &str, wasm: &str, annotations: &str, config: &str) -> String {
    format!(
        r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: {name}
  namespace: istio-system
  annotations: {{{annotations}}}
spec:
  url: file://{{{{WASM}}}}/{wasm}.wasm
  pluginConfig: {config}
"#
    )
}

/// `(status, whether the plugin tagged it)` for `n` requests from `c` concurrent clients.
async fn load(
    proxy: &Proxy,
    headers: &'static [(&'static str, &'static str)],
    n: usize,
    c: usize,
) -> Vec<u16> {
    let url = proxy.url("/");
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for _ in 0..n / c {
                    out.push(match send("GET", &url, headers, "").await {
                        Ok(r) => r.status,
                        Err(_) => 0,
                    });
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test]
async fn recycling_after_n_requests_under_load_fails_no_request() {
    let v1 = Backend::start("v1").await;
    let config = mesh(&[&v1])
        + &route_all("v1")
        + &plugin(
            "echo",
            "test_plugin_header_echo",
            "lateen.io/recycle-after-requests: \"25\"",
            "{value: tagged}",
        );
    let proxy = Proxy::start(&config).await.unwrap();
    let statuses = load(&proxy, &[], 800, 16).await;
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(failed, 0, "failed requests while recycling: {failed}");
    assert_eq!(v1.last().header("x-plugin-added"), Some("tagged"));
    let p = proxy.plugin("istio-system/echo").await;
    assert_eq!(p["recycle"]["afterRequests"], 25, "{p}");
    let recycles = p["stats"]["recycles"].as_u64().unwrap();
    // 800 streams at most 25 per instance: at least 31 fresh instances.
    assert!(recycles >= 31, "{p}");
    // Drained instances are gone: the current one (and at most one still draining).
    eventually("drained instances are dropped", || async {
        proxy.plugin("istio-system/echo").await["stats"]["instances"]
            .as_u64()
            .is_some_and(|n| n <= 2)
    })
    .await;
    let stats = proxy.stats().await;
    assert!(
        stats.lines().any(
            |l| l.starts_with("lateen_wasm_recycles_total{") && l.contains("istio-system/echo")
        ),
        "{stats}"
    );
}

#[tokio::test]
async fn a_plugin_whose_memory_only_grows_is_recycled_past_its_ceiling() {
    let v1 = Backend::start("v1").await;
    let config = mesh(&[&v1])
        + &route_all("v1")
        + &plugin(
            "leaky",
            "test_plugin_trap",
            "lateen.io/recycle-memory: 4Mi",
            "{}",
        );
    let proxy = Proxy::start(&config).await.unwrap();
    // 256 KiB leaked per request: 300 requests leak 75 MiB in all.
    let statuses = load(&proxy, &[("x-leak", "256")], 300, 4).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(v1.last().header("x-trap-plugin"), Some("passed"));
    let p = proxy.plugin("istio-system/leaky").await;
    assert!(p["stats"]["recycles"].as_u64().unwrap() >= 5, "{p}");
    assert_eq!(p["stats"]["traps"], 0, "{p}");
    // Memory stays near the ceiling instead of growing with the leak.
    let memory = p["stats"]["memoryBytes"].as_u64().unwrap();
    assert!(memory < 16 << 20, "{memory} bytes: {p}");

    // A ceiling that is not a size is refused with its line.
    let yaml = (mesh(&[&v1])
        + &plugin(
            "leaky",
            "test_plugin_trap",
            "lateen.io/recycle-memory: lots",
            "{}",
        ))
        .replace("{{PORT}}", &free_port().to_string())
        .replace("{{WASM}}", &paths().wasm_dir.display().to_string());
    let err = refused("recycle.yaml", &yaml);
    assert!(
        err.contains("recycle.yaml:")
            && err.contains("lateen.io/recycle-memory")
            && err.contains("lots"),
        "{err}"
    );
}
