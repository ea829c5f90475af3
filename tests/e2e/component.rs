//! A component-model filter (`lateen:filter`, filters/ua-tagger-component) in a live
//! proxy: in one chain with proxy-wasm modules, ordered by phase, hot-reloaded.

use lateen_e2e::*;

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 \
                      (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

fn config(v1: &Backend, tagger_phase: &str, header: &str) -> String {
    let component = paths()
        .target
        .join("wasm32-wasip2/wasm/ua_tagger_component.wasm");
    assert!(
        component.exists(),
        "{} is missing: build it first (filters/build.sh does)",
        component.display()
    );
    mesh(&[v1])
        + &route_all("v1")
        + &format!(
            r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: tagger, namespace: istio-system}}
spec:
  selector:
    matchLabels: {{istio: ingressgateway}}
  url: file://{component}
  phase: {tagger_phase}
  pluginConfig: {{header: {header}}}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: echo, namespace: istio-system}}
spec:
  selector:
    matchLabels: {{istio: ingressgateway}}
  url: file://{{{{WASM}}}}/test_plugin_header_echo.wasm
  phase: AUTHZ
  pluginConfig:
    value: hello
    properties: [request.headers.{header}]
"#,
            component = component.display()
        )
}

async fn from_iphone(proxy: &Proxy) -> Resp {
    send("GET", &proxy.url("/"), &[("user-agent", IPHONE)], "")
        .await
        .unwrap()
}

#[tokio::test]
async fn a_component_runs_in_one_chain_with_modules_in_phase_order_and_hot_reloads() {
    let v1 = Backend::start("v1").await;
    let proxy = Proxy::start(&config(&v1, "AUTHN", "x-client"))
        .await
        .unwrap();

    // AUTHN (the component) before AUTHZ (the proxy-wasm module): the module sees the tag.
    assert_eq!(from_iphone(&proxy).await.status, 200);
    let seen = v1.last();
    assert_eq!(seen.header("x-client"), Some("mobile"));
    assert_eq!(seen.header("x-plugin-added"), Some("hello"));
    assert_eq!(
        seen.header("x-prop-request-headers-x-client"),
        Some("mobile")
    );

    // The component's metric, exported with its labels.
    let stats = proxy.stats().await;
    assert!(
        stats.contains("ua_tagger_requests_total{device=\"mobile\"} 1"),
        "{stats}"
    );
    let dump = proxy.config_dump().await;
    let filters = dump["listeners"][0]["filters"].to_string();
    let at = |name: &str| {
        filters
            .find(name)
            .unwrap_or_else(|| panic!("{name}: {filters}"))
    };
    assert!(
        at("istio-system/tagger") < at("istio-system/echo"),
        "{filters}"
    );

    // STATS runs after AUTHZ: now the module runs first and sees no tag yet; and the new
    // config's header is in effect, with no restart.
    proxy.rewrite(&config(&v1, "STATS", "x-device"));
    proxy.wait_served(&v1, "x-device", "other").await;
    assert_eq!(from_iphone(&proxy).await.status, 200);
    let seen = v1.last();
    assert_eq!(seen.header("x-device"), Some("mobile"));
    assert_eq!(seen.header("x-client"), None);
    assert_eq!(seen.header("x-prop-request-headers-x-device"), None);
    assert_eq!(seen.header("x-plugin-added"), Some("hello"));

    // A config the component refuses is reported, and the running one keeps serving.
    proxy.rewrite(
        &config(&v1, "STATS", "x-device").replace("{header: x-device}", "{heder: x-device}"),
    );
    let err = proxy.reload_error().await;
    assert!(
        err.contains("heder") || err.contains("pluginConfig"),
        "{err}"
    );
    assert_eq!(from_iphone(&proxy).await.status, 200);
    assert_eq!(v1.last().header("x-device"), Some("mobile"));
}
