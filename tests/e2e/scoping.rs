//! One plugin, many scopes: WasmPlugin `matchRules` (per route, domain and service, first
//! match wins), `configDisable`, `targetRefs` Gateways, and rule isolation on reload.

use lateen_e2e::*;
use std::process::Command;

/// Three VirtualServices and a second service, `api.test`, on backend `api`:
/// - `test/shop` (shop.test): route `cart` (/cart) and route `home`, both to v1;
/// - `test/blog` (*.blog.test) to v1;
/// - `test/split` (split.test): 50/50 between v1 and api.test.
fn sites(v1: &Backend, api: &Backend) -> String {
    mesh(&[v1])
        + &format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: test}}
spec:
  hosts: [api.test]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop, namespace: test}}
spec:
  hosts: [shop.test]
  gateways: [istio-system/gw]
  http:
  - name: cart
    match: [{{uri: {{prefix: /cart}}}}]
    route: [{{destination: {{host: svc.test, subset: v1}}}}]
  - name: home
    route: [{{destination: {{host: svc.test, subset: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: blog, namespace: test}}
spec:
  hosts: ["*.blog.test", other.test]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: svc.test, subset: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: split, namespace: test}}
spec:
  hosts: [split.test]
  gateways: [istio-system/gw]
  http:
  - route:
    - {{destination: {{host: svc.test, subset: v1}}, weight: 50}}
    - {{destination: {{host: api.test}}, weight: 50}}
"#,
            api.port()
        )
}

/// The header-echo plugin (it adds `x-plugin-added: VALUE`) as `tagger` in the root
/// namespace, in the AUTHN phase (before the router), with `rules` as its `matchRules`.
fn tagger(default: &str, rules: &str) -> String {
    format!(
        r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: tagger, namespace: istio-system}}
spec:
  selector:
    matchLabels: {{istio: ingressgateway}}
  url: file://{{{{WASM}}}}/test_plugin_header_echo.wasm
  phase: AUTHN
  pluginConfig: {{value: {default}}}
  matchRules:
{rules}"#
    )
}

const RULES: &str = r#"  - route: [{virtualService: test/shop, name: cart}]
    config: {value: cart}
  - route: [test/shop]
    config: {value: shop}
  - domain: ["*.blog.test"]
    config: {value: blog}
  - domain: [other.test]
    configDisable: true
  - service: [api.test]
    config: {value: api}
"#;

/// What the tagger added to the request `backend` saw last (none: the plugin was off).
fn tag(backend: &Backend) -> Option<String> {
    backend.last().header("x-plugin-added").map(str::to_string)
}

async fn get_host(proxy: &Proxy, host: &str, path: &str) -> Resp {
    send("GET", &proxy.url(path), &[("host", host)], "")
        .await
        .unwrap()
}

#[tokio::test]
async fn one_plugin_serves_a_config_per_route_host_and_service() {
    let (v1, api) = (Backend::start("v1").await, Backend::start("api").await);
    let proxy = Proxy::start(&(sites(&v1, &api) + &tagger("default", RULES)))
        .await
        .unwrap();
    for (host, path, want) in [
        // Two routes of one VirtualService; the first matching rule wins.
        ("shop.test", "/cart/1", Some("cart")),
        ("shop.test", "/", Some("shop")),
        // Two hosts: a wildcard rule, and a disabled scope.
        ("www.blog.test", "/", Some("blog")),
        ("other.test", "/", None),
    ] {
        let r = get_host(&proxy, host, path).await;
        assert_eq!(r.status, 200, "{host}{path}");
        assert_eq!(tag(&v1).as_deref(), want, "{host}{path}");
    }
    // A service rule on a split route, with the plugin before the router: the rule and the
    // router agree on the destination of every request.
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let r = get_host(&proxy, "split.test", "/").await;
        let backend = r.header("x-backend").unwrap_or("").to_string();
        let got = match backend.as_str() {
            "api" => tag(&api),
            _ => tag(&v1),
        };
        let want = if backend == "api" { "api" } else { "default" };
        assert_eq!(got.as_deref(), Some(want), "request to {backend}");
        *seen.entry(backend).or_insert(0) += 1;
    }
    assert_eq!(
        seen.len(),
        2,
        "both destinations of the split were used: {seen:?}"
    );

    // One instance serves every scope: one root context per configuration.
    let tagger = proxy.plugin("istio-system/tagger").await;
    let rules = tagger["rules"]["matchRules"].as_array().unwrap();
    assert_eq!(rules.len(), 5, "{tagger}");
    assert_eq!(rules[0]["routes"], serde_json::json!(["test/shop#0"]));
    assert_eq!(rules[3]["state"], "DISABLED");
    assert_eq!(rules[4]["state"], "ACTIVE");
    // The effective order per route: the rule that serves it, `a|b` where it depends on
    // the request.
    let out = Command::new(paths().bin)
        .args(["proxy-config", "plugins", "--admin"])
        .arg(format!("127.0.0.1:{}", proxy.admin))
        .output()
        .expect("lateen proxy-config");
    let table = String::from_utf8_lossy(&out.stdout);
    let row = |vs: &str, route: &str| -> String {
        table
            .lines()
            .find(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.get(1) == Some(&vs) && cols.get(2) == Some(&route)
            })
            .unwrap_or_else(|| panic!("no row for {vs} {route}:\n{table}"))
            .to_string()
    };
    for (vs, route, want) in [
        (
            "test/shop",
            "cart",
            "istio-system/tagger (matchRules[0]) -> lateen/router",
        ),
        (
            "test/shop",
            "home",
            "istio-system/tagger (matchRules[1]) -> lateen/router",
        ),
        (
            "test/blog",
            "blog.0",
            "istio-system/tagger (matchRules[2]|off|default) -> lateen/router",
        ),
        (
            "test/split",
            "split.0",
            "istio-system/tagger (matchRules[4]|default) -> lateen/router",
        ),
    ] {
        let line = row(vs, route);
        assert!(line.contains(want), "{vs} {route}: {line}");
    }

    // The proxy runs one worker here.
    assert_eq!(
        tagger["stats"]["instances"].as_f64(),
        Some(1.0),
        "one instance per worker whatever the number of scopes: {tagger}"
    );
}

#[tokio::test]
async fn default_config_disable_and_gateway_target_refs() {
    let (v1, api) = (Backend::start("v1").await, Backend::start("api").await);
    let only_shop = tagger("default", "  - domain: [shop.test]\n    config: {value: shop}\n")
        .replace(
            "  phase: AUTHN\n",
            "  phase: AUTHN\n  defaultConfigDisable: true\n  targetRefs: [{kind: Gateway, group: networking.istio.io, name: gw, namespace: istio-system}]\n",
        );
    let proxy = Proxy::start(&(sites(&v1, &api) + &only_shop))
        .await
        .unwrap();
    assert_eq!(get_host(&proxy, "shop.test", "/").await.status, 200);
    assert_eq!(tag(&v1).as_deref(), Some("shop"));
    // No rule matches and the default is off.
    assert_eq!(get_host(&proxy, "www.blog.test", "/").await.status, 200);
    assert_eq!(tag(&v1), None);
    // Where it is off, the per-route order leaves it out.
    let table = lateen(&[
        "proxy-config",
        "plugins",
        "--admin",
        &format!("127.0.0.1:{}", proxy.admin),
    ]);
    let blog = table
        .lines()
        .find(|l| l.contains("test/blog ") && l.contains("blog.0"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(!blog.contains("tagger"), "{blog}");
    let shop = table
        .lines()
        .find(|l| l.contains("test/shop") && l.contains("home"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        shop.contains("istio-system/tagger (matchRules[0])"),
        "{shop}"
    );

    // A targetRef to a Gateway this proxy does not serve: the plugin is nowhere.
    proxy.rewrite(&(sites(&v1, &api) + &only_shop.replace("name: gw,", "name: elsewhere,")));
    eventually("the plugin leaves the listener", || async {
        get_host(&proxy, "shop.test", "/").await.status == 200 && tag(&v1).is_none()
    })
    .await;
}

#[tokio::test]
async fn scopes_that_match_nothing_are_reported_and_bad_rules_refused_with_their_line() {
    let (v1, api) = (Backend::start("v1").await, Backend::start("api").await);
    let rules = r#"  - route: [{virtualService: test/shop, name: checkout}]
    config: {value: a}
  - route: [test/nowhere]
    config: {value: b}
  - domain: [nobody.example]
    config: {value: c}
  - service: [ghost.test]
    config: {value: d}
  - domain: ["*.blog.test"]
    config: {value: e}
"#;
    let yaml = (sites(&v1, &api) + &tagger("default", rules))
        .replace("{{PORT}}", &free_port().to_string())
        .replace("{{WASM}}", &paths().wasm_dir.display().to_string());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scoped.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = validate(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let line_of = |needle: &str| yaml.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for (field, why, needle) in [
        (
            "matchRules[0].route[0].name",
            "has no http route named `checkout`",
            "checkout",
        ),
        (
            "matchRules[1].route[0]",
            "`test/nowhere` does not exist",
            "nowhere",
        ),
        (
            "matchRules[2].domain[0]",
            "nobody.example",
            "nobody.example",
        ),
        ("matchRules[3].service[0]", "ghost.test", "ghost.test"),
    ] {
        let want = format!(
            "scoped.yaml:{}: WasmPlugin istio-system/tagger: spec.{field}",
            line_of(needle)
        );
        let line = stdout
            .lines()
            .find(|l| l.contains(&want))
            .unwrap_or_else(|| panic!("no `{want}` in:\n{stdout}"));
        assert!(
            line.contains(why) && line.contains("matches nothing"),
            "{line}"
        );
    }
    assert!(!stdout.contains("matchRules[4]"), "{stdout}");

    for (bad, field) in [
        ("  - config: {value: x}\n", "spec.matchRules[0]"),
        ("  - domain: [a.test]\n", "spec.matchRules[0]"),
        (
            "  - domain: [a.test]\n    path: /x\n    configDisable: true\n",
            "spec.matchRules[0].path",
        ),
        (
            "  - route: [{virtualService: test/shop, name: 7}]\n    configDisable: true\n",
            "spec.matchRules[0].route[0].name",
        ),
    ] {
        let yaml = (sites(&v1, &api) + &tagger("default", bad))
            .replace("{{PORT}}", &free_port().to_string())
            .replace("{{WASM}}", &paths().wasm_dir.display().to_string());
        let err = refused("scoped.yaml", &yaml);
        assert!(
            err.contains("scoped.yaml:") && err.contains(field),
            "{bad}: {err}"
        );
    }
    let yaml = (sites(&v1, &api)
        + &tagger("default", "  - domain: [a.test]\n    configDisable: true\n"))
        .replace(
            "  phase: AUTHN\n",
            "  phase: AUTHN\n  targetRefs: [{kind: Service, name: svc}]\n",
        )
        .replace("{{PORT}}", &free_port().to_string())
        .replace("{{WASM}}", &paths().wasm_dir.display().to_string());
    let err = refused("scoped.yaml", &yaml);
    assert!(
        err.contains("spec.targetRefs[0].kind") && err.contains("Gateways only"),
        "{err}"
    );
}

#[tokio::test]
async fn an_invalid_rule_keeps_its_last_good_config_while_the_others_update() {
    let (v1, api) = (Backend::start("v1").await, Backend::start("api").await);
    let proxy = Proxy::start(&(sites(&v1, &api) + &tagger("default", RULES)))
        .await
        .unwrap();
    assert_eq!(get_host(&proxy, "shop.test", "/cart").await.status, 200);
    assert_eq!(tag(&v1).as_deref(), Some("cart"));

    // The cart rule's new config is refused by the plugin (on_configure fails); the blog
    // rule and the default change; a new first rule with a refused config has nothing to
    // keep. Rules are found by their selectors, so the shifted ones keep their state.
    let changed = "  - domain: [split.test]\n    config: {reject: true}\n".to_string()
        + &RULES
            .replace(
                "config: {value: cart}",
                "config: {value: cart2, reject: true}",
            )
            .replace("config: {value: blog}", "config: {value: blog2}");
    proxy.rewrite(&(sites(&v1, &api) + &tagger("default2", &changed)));
    eventually("the other rules update", || async {
        get_host(&proxy, "www.blog.test", "/").await.status == 200
            && tag(&v1).as_deref() == Some("blog2")
    })
    .await;
    assert_eq!(get_host(&proxy, "shop.test", "/cart").await.status, 200);
    assert_eq!(
        tag(&v1).as_deref(),
        Some("cart"),
        "the refused rule keeps its config"
    );
    assert_eq!(get_host(&proxy, "shop.test", "/").await.status, 200);
    assert_eq!(tag(&v1).as_deref(), Some("shop"));
    // The new rule has no good config: its requests follow failStrategy (FAIL_CLOSE).
    assert_eq!(get_host(&proxy, "split.test", "/").await.status, 503);

    let rules = proxy.plugin("istio-system/tagger").await["rules"]["matchRules"].clone();
    assert_eq!(rules[0]["state"], "FAILED", "{rules}");
    assert_eq!(rules[1]["state"], "STALE", "{rules}");
    let error = rules[1]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("spec.matchRules[1].config") && error.contains("config.yaml:"),
        "{error}"
    );
    assert_eq!(rules[3]["state"], "ACTIVE", "{rules}");
}

/// The header-echo plugin copied into `dir` with a schema file beside it.
fn with_schema(dir: &std::path::Path) -> std::path::PathBuf {
    let wasm = dir.join("echo.wasm");
    std::fs::copy(paths().wasm_dir.join("test_plugin_header_echo.wasm"), &wasm).unwrap();
    std::fs::write(
        dir.join("echo.schema.json"),
        r#"{"type": "object", "additionalProperties": false,
            "properties": {"value": {"type": "string", "maxLength": 16},
                           "reject": {"type": "boolean"}}}"#,
    )
    .unwrap();
    wasm
}

fn schema_plugin(wasm: &std::path::Path, config: &str, rules: &str) -> String {
    format!(
        r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: tagger, namespace: istio-system}}
spec:
  selector:
    matchLabels: {{istio: ingressgateway}}
  url: file://{}
  pluginConfig:
{config}
  matchRules:
{rules}"#,
        wasm.display()
    )
}

#[tokio::test]
async fn a_config_that_violates_the_plugin_schema_is_refused_with_its_line() {
    let (v1, api) = (Backend::start("v1").await, Backend::start("api").await);
    let plugin_dir = tempfile::tempdir().unwrap();
    let wasm = with_schema(plugin_dir.path());
    let rule = "  - domain: [shop.test]\n    config: {value: shop}\n";

    // The default config: the whole change is refused, naming the field and its line.
    let yaml = (sites(&v1, &api) + &schema_plugin(&wasm, "    value: 7", rule))
        .replace("{{PORT}}", &free_port().to_string());
    let err = refused("schema.yaml", &yaml);
    let line = yaml.lines().position(|l| l == "    value: 7").unwrap() + 1;
    assert!(
        err.contains(&format!("schema.yaml:{line}"))
            && err.contains("spec.pluginConfig.value")
            && err.contains("config schema"),
        "{err}"
    );

    // A rule: it alone keeps its last good config, and says why on the admin API.
    let proxy =
        Proxy::start(&(sites(&v1, &api) + &schema_plugin(&wasm, "    value: default", rule)))
            .await
            .unwrap();
    assert_eq!(get_host(&proxy, "shop.test", "/").await.status, 200);
    assert_eq!(tag(&v1).as_deref(), Some("shop"));
    let bad_rule = "  - domain: [shop.test]\n    config: {value: shop, colour: red}\n";
    proxy.rewrite(&(sites(&v1, &api) + &schema_plugin(&wasm, "    value: other", bad_rule)));
    eventually("the default updates", || async {
        get_host(&proxy, "www.blog.test", "/").await.status == 200
            && tag(&v1).as_deref() == Some("other")
    })
    .await;
    assert_eq!(get_host(&proxy, "shop.test", "/").await.status, 200);
    assert_eq!(tag(&v1).as_deref(), Some("shop"));
    let rule0 = proxy.plugin("istio-system/tagger").await["rules"]["matchRules"][0].clone();
    assert_eq!(rule0["state"], "STALE", "{rule0}");
    let error = rule0["error"].as_str().unwrap_or("");
    assert!(
        error.contains("spec.matchRules[0].config") && error.contains("colour"),
        "{error}"
    );

    // lateen validate fails on the refused rule, with its line.
    let yaml = (sites(&v1, &api) + &schema_plugin(&wasm, "    value: other", bad_rule))
        .replace("{{PORT}}", &free_port().to_string());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), &yaml).unwrap();
    let out = validate(&dir.path().join("rules.yaml"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = yaml.lines().position(|l| l.contains("colour")).unwrap() + 1;
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("rules.yaml:{line}"))
            && stderr.contains("spec.matchRules[0].config"),
        "{stderr}"
    );
}
