//! Plugins built with the public proxy-wasm crate, loaded unchanged through WasmPlugin.

use lateen_e2e::*;
use std::time::{Duration, Instant};

fn header_echo_config(a: &Backend, b: &Backend, c: &Backend) -> String {
    mesh(&[a, b, c])
        + r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: header-echo, namespace: istio-system}
spec:
  selector:
    matchLabels: {istio: ingressgateway}
  url: file://{{WASM}}/test_plugin_header_echo.wasm
  pluginName: echo-root
  pluginConfig:
    value: hello
    callout: outbound|80|b|svc.test
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /routed}, headers: {x-plugin-added: {exact: hello}}}]
    route: [{destination: {host: svc.test, subset: c}}]
  - route: [{destination: {host: svc.test, subset: a}}]
"#
}

#[tokio::test]
async fn proxy_wasm_plugin_headers_bodies_local_reply_and_http_call() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let proxy = Proxy::start(&header_echo_config(&a, &b, &c))
        .await
        .expect("proxy starts");

    // Request headers added and removed; response header added.
    let r = send("GET", &proxy.url("/plain"), &[("x-remove-me", "1")], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", proxy.log());
    assert_eq!(r.header("x-response-plugin"), Some("seen"));
    let seen = a.last();
    assert_eq!(seen.header("x-plugin-added"), Some("hello"));
    assert_eq!(seen.header("x-remove-me"), None);
    assert_eq!(seen.header("x-plugin-root-id"), Some("echo-root"));

    // The router sees headers a plugin set.
    let r = get(&proxy.url("/routed")).await.unwrap();
    assert_eq!(r.header("x-backend"), Some("c"));

    // Local response: the upstream never sees it.
    let before = a.seen.lock().unwrap().len();
    let r = get(&proxy.url("/local")).await.unwrap();
    assert_eq!(
        (r.status, r.body.as_str(), r.header("x-local")),
        (418, "local reply", Some("yes"))
    );
    assert_eq!(a.seen.lock().unwrap().len(), before);

    // http_call to a named cluster, answer folded into the request.
    let r = get(&proxy.url("/callout")).await.unwrap();
    assert_eq!(r.status, 200, "{}", proxy.log());
    let seen = a.last();
    assert_eq!(seen.header("x-callout-status"), Some("200"));
    assert_eq!(seen.header("x-callout-body"), Some("b GET /from-plugin"));
    assert_eq!(b.last().path, "/from-plugin");

    // Response body replaced after buffering to the end of the stream: a one-frame body,
    // and one that arrives in three frames.
    let r = get(&proxy.url("/replace")).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "replaced body"));
    let r = get(&proxy.url("/replace/chunks")).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "replaced body"));
    // A streamed body the plugin does not touch passes frame by frame.
    let r = get(&proxy.url("/plain/chunks")).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "chunk0;chunk1;chunk2;"));

    // Plugin metrics are exported by the host.
    let stats = get(&format!(
        "http://127.0.0.1:{}/stats/prometheus",
        proxy.admin
    ))
    .await
    .unwrap();
    let line = stats
        .body
        .lines()
        .find(|l| l.starts_with("header_echo_requests_total "))
        .unwrap_or_else(|| panic!("metric missing:\n{}", stats.body));
    let n: u64 = line.split(' ').nth(1).unwrap().parse().unwrap();
    assert_eq!(n, 7, "one increment per request");

    // The config dump lists the plugin with its sha256.
    let dump = get(&format!("http://127.0.0.1:{}/config_dump", proxy.admin))
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&dump.body).unwrap();
    let names: Vec<&str> = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "istio-system/header-echo",
            "lateen/router",
            "lateen/metrics"
        ]
    );
    assert_eq!(v["plugins"][0]["sha256"].as_str().unwrap().len(), 64);
}

fn trap_config(a: &Backend, strategy: &str) -> String {
    mesh(&[a])
        + &format!(
            r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: trap, namespace: istio-system}}
spec:
  url: file://{{{{WASM}}}}/test_plugin_trap.wasm
  failStrategy: {strategy}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: test}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: svc.test}}}}]
"#
        )
}

#[tokio::test]
async fn trapping_plugin_fail_close() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&trap_config(&a, "FAIL_CLOSE"))
        .await
        .expect("proxy starts");
    for (header, what) in [
        ("x-trap", "panic"),
        ("x-loop", "endless loop"),
        ("x-grow", "memory bomb"),
    ] {
        let started = Instant::now();
        let r = send("GET", &proxy.url("/"), &[(header, "1")], "")
            .await
            .unwrap();
        assert_eq!(r.status, 503, "{what} under FAIL_CLOSE\n{}", proxy.log());
        // Well under the client's own 20 s: the host stopped it, the client did not.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what} was stopped in time"
        );
        // The next request gets a fresh instance and passes.
        let r = get(&proxy.url("/")).await.unwrap();
        assert_eq!(r.status, 200, "after {what}\n{}", proxy.log());
        assert_eq!(a.last().header("x-trap-plugin"), Some("passed"));
    }
    // Per-plugin counters: the panic and the memory bomb trap, the loop hits the deadline.
    let stat = |s: &str| format!("wasm.istio-system/trap.{s}");
    assert_eq!(proxy.stat(&stat("traps.trap")).await, 2.0);
    assert_eq!(proxy.stat(&stat("traps.deadline")).await, 1.0);
    assert!(proxy.stat(&stat("cpu_seconds")).await > 0.0);
    assert!(proxy.stat(&stat("memory_bytes")).await > 0.0);
}

#[tokio::test]
async fn trapping_plugin_fail_open() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&trap_config(&a, "FAIL_OPEN"))
        .await
        .expect("proxy starts");
    let r = send("GET", &proxy.url("/"), &[("x-trap", "1")], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "skipped under FAIL_OPEN\n{}", proxy.log());
    assert_eq!(a.last().header("x-trap-plugin"), None);
    let r = get(&proxy.url("/")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(a.last().header("x-trap-plugin"), Some("passed"));
}

/// The `/tick/N` paths the ticker plugin called at `b`, in order.
fn ticks(b: &Backend) -> Vec<String> {
    b.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.starts_with("/tick/"))
        .map(|s| s.path.clone())
        .collect()
}

#[tokio::test]
async fn service_plugin_ticks_and_calls_out() {
    let a = Backend::start("a").await;
    let yaml = mesh(&[&a])
        + r#"---
apiVersion: lateen.io/v1alpha1
kind: Bootstrap
metadata: {name: bootstrap, namespace: istio-system}
spec:
  workload:
    namespace: istio-system
    labels: {istio: ingressgateway}
  servicePlugins:
  - name: ticker
    url: file://{{WASM}}/test_plugin_ticker.wasm
    pluginConfig: "outbound|80||svc.test"
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
    let proxy = Proxy::start_with(&yaml, &["--concurrency", "2"])
        .await
        .expect("proxy starts");
    eventually("three ticks", || async { ticks(&a).len() >= 3 }).await;
    // Once per proxy, not once per worker: the tick counter runs 1, 2, 3...
    assert_eq!(
        &ticks(&a)[..3],
        ["/tick/1", "/tick/2", "/tick/3"],
        "{}",
        proxy.log()
    );
    let dump = proxy.config_dump().await;
    assert!(dump.to_string().contains("istio-system/ticker"), "{dump}");
}

/// A WasmPlugin's root context starts when the config loads, before any request, on every
/// worker (as Envoy creates it per worker thread at config time): its ticks run without
/// traffic.
#[tokio::test]
async fn wasm_plugin_roots_start_before_the_first_request() {
    let a = Backend::start("a").await;
    let yaml = mesh(&[&a])
        + r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: ticker, namespace: istio-system}
spec:
  url: file://{{WASM}}/test_plugin_ticker.wasm
  pluginConfig: "outbound|80||svc.test"
"#;
    let proxy = Proxy::start_with(&yaml, &["--concurrency", "2"])
        .await
        .expect("proxy starts");
    // No request goes through the proxy; each worker's root ticks and counts 1, 2, ...
    eventually("both workers' roots tick", || async {
        ticks(&a).iter().filter(|p| *p == "/tick/2").count() == 2
    })
    .await;
    assert_eq!(
        ticks(&a).iter().filter(|p| *p == "/tick/1").count(),
        2,
        "one root per worker: {:?}\n{}",
        ticks(&a),
        proxy.log()
    );
}

/// A root whose configuration leaves the config ends: its ticks stop (no tick reaches a
/// deleted root), while the new configuration's root ticks on the kept instance.
#[tokio::test]
async fn a_replaced_root_stops_ticking() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let ticker = |subset: &str| {
        mesh(&[&a, &b])
            + &format!(
                r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: ticker, namespace: istio-system}}
spec:
  url: file://{{{{WASM}}}}/test_plugin_ticker.wasm
  pluginConfig: "outbound|80|{subset}|svc.test"
"#
            )
    };
    let proxy = Proxy::start(&ticker("a")).await.expect("proxy starts");
    eventually("ticks at a", || async { ticks(&a).len() >= 2 }).await;

    proxy.rewrite(&ticker("b"));
    eventually("ticks at b", || async { ticks(&b).len() >= 2 }).await;
    // A tick already under way when the root ended may still land: a second of grace.
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let at_a = ticks(&a).len();
    let at_b = ticks(&b).len();
    eventually("the new root ticks on", || async {
        ticks(&b).len() >= at_b + 3
    })
    .await;
    assert_eq!(ticks(&a).len(), at_a, "the old root still ticks");
    let log = proxy.log();
    assert!(
        !log.contains("on_tick failed") && !log.contains("panicked"),
        "{log}"
    );
}

#[tokio::test]
async fn bad_pointers_in_host_calls_get_an_error_status() {
    let a = Backend::start("a").await;
    let yaml = mesh(&[&a])
        + r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: hostile, namespace: istio-system}
spec:
  url: file://{{WASM}}/test_plugin_hostile.wasm
  failStrategy: FAIL_CLOSE
"# + &route_all("a");
    let proxy = Proxy::start(&yaml).await.expect("proxy starts");
    for _ in 0..3 {
        let r = get(&proxy.url("/")).await.unwrap();
        assert_eq!(r.status, 200, "{}", proxy.log());
        // Each out-of-memory pointer or length: BadArgument (2), not a trap; a host call
        // from inside the plugin's allocator: InternalFailure (10); random_get over 64 KiB
        // EINVAL (28), out of memory EFAULT (21); fd_write of 4096 × 1 MiB: written (0).
        assert_eq!(a.last().header("x-hostile"), Some("2,2,2,2,10,28,21,0"));
    }
    let stat = |s: &str| format!("wasm.istio-system/hostile.{s}");
    assert_eq!(proxy.stat(&stat("traps.trap")).await, 0.0);
    assert_eq!(
        proxy.stat(&stat("instances")).await,
        1.0,
        "one instance, never replaced"
    );
}

#[tokio::test]
async fn a_traffic_extension_runs_its_wasm_as_a_wasm_plugin_and_lua_is_refused() {
    let a = Backend::start("a").await;
    let ext = |body: &str| {
        format!(
            "---\napiVersion: extensions.istio.io/v1alpha1\nkind: TrafficExtension\nmetadata: {{name: echo, namespace: istio-system}}\nspec:\n  selector:\n    matchLabels: {{istio: ingressgateway}}\n  phase: AUTHN\n{body}"
        )
    };
    let wasm = ext(
        "  wasm:\n    url: file://{{WASM}}/test_plugin_header_echo.wasm\n    pluginName: echo_root\n    pluginConfig: {value: from-extension}\n    failStrategy: FAIL_OPEN\n",
    );
    let proxy = Proxy::start(&(mesh(&[&a]) + &wasm + &route_all("a")))
        .await
        .expect("proxy starts");
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    assert_eq!(a.last().header("x-plugin-added"), Some("from-extension"));
    assert_eq!(a.last().header("x-plugin-root-id"), Some("echo_root"));

    let lua = (mesh(&[&a])
        + &ext("  lua:\n    inlineCode: |\n      function envoy_on_request(h) end\n"))
        .replace("{{PORT}}", &free_port().to_string());
    let err = refused("extension.yaml", &lua);
    assert!(
        err.contains("extension.yaml:") && err.contains("spec.lua") && err.contains("Lua"),
        "{err}"
    );
}
