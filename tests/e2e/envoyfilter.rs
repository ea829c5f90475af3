//! EnvoyFilter wasm patches, as Istio users add wasm filters without WasmPlugin: an
//! `HTTP_FILTER` patch of type `envoy.extensions.filters.http.wasm.v3.Wasm`.

use lateen_e2e::*;
use std::process::Command;

/// An EnvoyFilter `name` adding the header-echo test plugin with `operation` next to
/// `sub` (a subFilter name; empty: none), its configuration a StringValue holding `value`.
fn echo_filter(name: &str, operation: &str, sub: &str, value: &str, root_id: &str) -> String {
    let sub = if sub.is_empty() {
        String::new()
    } else {
        format!(
            "\n      listener:\n        filterChain:\n          filter:\n            name: envoy.filters.network.http_connection_manager\n            subFilter: {{name: {sub}}}"
        )
    };
    format!(
        r#"---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: {name}, namespace: istio-system}}
spec:
  workloadSelector:
    labels: {{istio: ingressgateway}}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: GATEWAY{sub}
    patch:
      operation: {operation}
      value:
        name: {name}.wasm
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
          value:
            config:
              root_id: {root_id}
              configuration:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: '{{"value": "{value}"}}'
              vm_config:
                vm_id: {name}
                runtime: envoy.wasm.runtime.v8
                code: {{local: {{filename: "{{{{WASM}}}}/test_plugin_header_echo.wasm"}}}}
"#
    )
}

#[tokio::test]
async fn envoy_filter_wasm_patches_run_where_they_are_inserted() {
    let v1 = Backend::start("v1").await;
    let config = mesh(&[&v1])
        + &route_all("v1")
        + &echo_filter(
            "second",
            "INSERT_BEFORE",
            "envoy.filters.http.router",
            "second",
            "second_root",
        )
        + &echo_filter("first", "INSERT_FIRST", "", "first", "first_root");
    let proxy = Proxy::start(&config).await.expect("proxy starts");
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    let seen = v1.last();
    let values = |name: &str| -> Vec<String> {
        seen.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    // The StringValue reached each plugin as it is (JSON text the plugin parses), in the
    // order the patches put them; the root context has the patch's root_id (each plugin
    // sets the header, the last one's stays).
    assert_eq!(values("x-plugin-added"), ["first", "second"], "{seen:?}");
    assert_eq!(values("x-plugin-root-id"), ["second_root"]);

    let out = Command::new(paths().bin)
        .args(["proxy-config", "plugins", "--admin"])
        .arg(format!("127.0.0.1:{}", proxy.admin))
        .output()
        .expect("lateen proxy-config");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(
            "istio-system/first/first.wasm -> istio-system/second/second.wasm -> lateen/router"
        ),
        "{table}"
    );

    // A config change through the patch is hot-loaded like any plugin's.
    proxy.rewrite(
        &(mesh(&[&v1])
            + &route_all("v1")
            + &echo_filter(
                "second",
                "INSERT_BEFORE",
                "envoy.filters.http.router",
                "changed",
                "second_root",
            )
            + &echo_filter("first", "INSERT_FIRST", "", "first", "first_root")),
    );
    eventually("the changed configuration serving", || async {
        assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
        v1.last()
            .headers
            .iter()
            .any(|(k, v)| k == "x-plugin-added" && v == "changed")
    })
    .await;
}

#[tokio::test]
async fn a_wasm_patch_lateen_cannot_serve_is_refused_with_its_field_and_line() {
    let v1 = Backend::start("v1").await;
    let good = echo_filter("f", "INSERT_BEFORE", "envoy.filters.http.router", "v", "r");
    for (what, yaml, field) in [
        (
            "an unknown subFilter",
            good.replace("envoy.filters.http.router", "envoy.filters.http.cors"),
            "subFilter.name",
        ),
        (
            "an unknown VM field",
            good.replace("vm_id: f", "vm_id: f\n                knob: 1"),
            "vm_config.knob",
        ),
        (
            "an operation not served",
            good.replace("INSERT_BEFORE", "REPLACE"),
            "patch.operation",
        ),
    ] {
        let yaml = (mesh(&[&v1]) + &yaml)
            .replace("{{PORT}}", &free_port().to_string())
            .replace("{{WASM}}", &paths().wasm_dir.display().to_string());
        let err = refused("envoyfilter.yaml", &yaml);
        assert!(
            err.contains("envoyfilter.yaml:") && err.contains(field),
            "{what}: {err}"
        );
    }
}
