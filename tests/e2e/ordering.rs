//! Where plugins run: placed next to built-in filters (`lateen.io/placement`), scoped by
//! WasmPlugin `match`, and the effective order `lateen proxy-config plugins` shows.

use lateen_e2e::*;
use std::process::Command;

/// The header-echo test plugin as WasmPlugin `name`: it tags requests with
/// `x-plugin-added: NAME` and copies the property `prop` (a part of the route decision),
/// when it is set, into `x-prop-<prop with dashes>`.
fn echo(name: &str, annotations: &str, prop: &str) -> String {
    format!(
        r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: {name}
  namespace: istio-system
  annotations: {{{annotations}}}
spec:
  selector:
    matchLabels: {{istio: ingressgateway}}
  url: file://{{{{WASM}}}}/test_plugin_header_echo.wasm
  phase: AUTHN
  pluginConfig:
    value: {name}
    properties: [{prop}]
"#
    )
}

#[tokio::test]
async fn plugins_are_placed_next_to_built_in_filters() {
    let v1 = Backend::start("v1").await;
    let config = mesh(&[&v1])
        + &route_all("v1")
        + &echo("early", "", "lateen.route.name")
        + &echo("late", "lateen.io/placement: after:router", "lateen.route.cluster")
        // No fault filter in this chain: its place is before the next built-in there.
        + &echo("last", "lateen.io/placement: after:fault", "lateen.route.id");
    let proxy = Proxy::start(&config).await.unwrap();
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);

    let seen = v1.last();
    let values = |name: &str| -> Vec<&str> {
        seen.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(values("x-plugin-added"), ["early", "late", "last"]);
    // Only the plugins after the router see its decision.
    assert_eq!(values("x-prop-lateen-route-name"), Vec::<&str>::new());
    assert_eq!(
        values("x-prop-lateen-route-cluster"),
        ["outbound|80|v1|svc.test"]
    );
    assert_eq!(values("x-prop-lateen-route-id").len(), 1);

    let out = Command::new(paths().bin)
        .args(["proxy-config", "plugins", "--admin"])
        .arg(format!("127.0.0.1:{}", proxy.admin))
        .output()
        .expect("lateen proxy-config");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(
            "istio-system/early -> lateen/router -> istio-system/late -> istio-system/last -> lateen/metrics"
        ),
        "{table}"
    );
    assert!(table.contains("after:router"), "{table}");
}

#[tokio::test]
async fn a_bad_placement_is_refused_with_its_line() {
    let v1 = Backend::start("v1").await;
    let yaml = (mesh(&[&v1]) + &echo("odd", "lateen.io/placement: beside:router", "x"))
        .replace("{{PORT}}", &free_port().to_string())
        .replace("{{WASM}}", &paths().wasm_dir.display().to_string());
    let err = refused("placement.yaml", &yaml);
    assert!(
        err.contains("placement.yaml:")
            && err.contains("metadata.annotations.lateen.io/placement")
            && err.contains("beside:router"),
        "{err}"
    );
}

/// The header-echo test plugin as WasmPlugin `name` with a `match`.
fn echo_matching(name: &str, matches: &str) -> String {
    format!(
        r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: {name}, namespace: istio-system}}
spec:
  selector:
    matchLabels: {{istio: ingressgateway}}
  url: file://{{{{WASM}}}}/test_plugin_header_echo.wasm
  match: {matches}
  pluginConfig: {{value: {name}}}
"#
    )
}

#[tokio::test]
async fn match_ports_and_modes_scope_plugins_and_a_scope_taking_nothing_is_reported() {
    let v1 = Backend::start("v1").await;
    let config = mesh(&[&v1])
        + &route_all("v1")
        + &echo_matching("this-port", "[{ports: [{number: {{PORT}}}]}]")
        // A gateway listener is both client and server side, as in Istio.
        + &echo_matching("server-mode", "[{mode: SERVER}]")
        + &echo_matching("other-port", "[{mode: CLIENT, ports: [{number: 1}]}]");
    let proxy = Proxy::start(&config).await.unwrap();
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    let seen = v1.last();
    let added: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(k, _)| k == "x-plugin-added")
        .map(|(_, v)| v.as_str())
        .collect();
    // Plugins of one phase and priority run by name; other-port's match takes nothing here.
    assert_eq!(added, ["server-mode", "this-port"]);

    // lateen validate says which scope takes nothing.
    let yaml = config
        .replace("{{PORT}}", &proxy.port.to_string())
        .replace("{{WASM}}", &paths().wasm_dir.display().to_string());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scoped.yaml"), &yaml).unwrap();
    let out = validate(&dir.path().join("scoped.yaml"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "WasmPlugin istio-system/other-port: its match or targetRefs take no listener"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("istio-system/this-port:"), "{stdout}");

    // A mode Istio does not have is refused with its line.
    for (bad, field) in [
        ("[{mode: SIDEWAYS}]", "spec.match[0].mode"),
        ("[{ports: [{number: 0}]}]", "spec.match[0].ports[0].number"),
    ] {
        let yaml = (mesh(&[&v1]) + &echo_matching("odd", bad))
            .replace("{{PORT}}", &free_port().to_string())
            .replace("{{WASM}}", &paths().wasm_dir.display().to_string());
        let err = refused("scoped.yaml", &yaml);
        assert!(err.contains("scoped.yaml:") && err.contains(field), "{err}");
    }
}
