//! `lateen validate`: bad input is reported with file, document, line and field, and the
//! exit code is non-zero.

use lateen_e2e::*;
use std::process::Command;

fn validate(yaml: &str) -> (i32, String) {
    let p = paths();
    let dir = tempfile::tempdir().unwrap();
    let yaml = yaml
        .replace("{{PORT}}", "18080")
        .replace("{{WASM}}", &p.wasm_dir.display().to_string());
    std::fs::write(dir.path().join("config.yaml"), yaml).unwrap();
    let out = Command::new(&p.bin)
        .arg("validate")
        .arg(dir.path())
        .arg("--filters-dir")
        .arg(&p.wasm_dir)
        .arg("--cache-dir")
        .arg(&p.cache_dir)
        .output()
        .expect("run lateen validate");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

const GW: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 18080, name: http, protocol: HTTP}
    hosts: ["*"]
"#;

#[test]
fn good_config_validates() {
    let yaml = format!(
        "{GW}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: istio-system}}\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - route: [{{destination: {{host: example.test, port: {{number: 80}}}}}}]\n"
    );
    let (code, out) = validate(&yaml);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok (1 listener(s)"), "{out}");
}

/// Validating is reading: a config with an access-log file and an OTLP exporter validates
/// without creating the file (the proxy opens it when it runs the config).
#[test]
fn validate_opens_no_access_log() {
    let logs = tempfile::tempdir().unwrap();
    let file = logs.path().join("access.log");
    let yaml = format!(
        "{GW}---\napiVersion: lateen.io/v1alpha1\nkind: Bootstrap\nmetadata: {{name: lateen, namespace: istio-system}}\nspec:\n  telemetry:\n    accessLog: {{file: {}}}\n    tracing: {{otlp: {{endpoint: \"http://127.0.0.1:9/v1/traces\"}}}}\n",
        file.display()
    );
    let (code, out) = validate(&yaml);
    assert_eq!(code, 0, "{out}");
    assert!(!file.exists(), "validate created {}", file.display());
}

#[test]
fn yaml_syntax_error_names_file_and_line() {
    let yaml = format!("{GW}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\n   namespace: bad-indent\n");
    let (code, out) = validate(&yaml);
    assert_ne!(code, 0);
    // Document 2 starts on line 10; the bad line is 14.
    assert!(out.contains("config.yaml:14: document 2"), "{out}");
}

#[test]
fn unknown_field_names_line_and_field() {
    let yaml = format!(
        "{GW}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: istio-system}}\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {{host: example.test, port: {{number: 80}}}}\n      weigth: 10\n"
    );
    let (code, out) = validate(&yaml);
    assert_ne!(code, 0);
    assert!(out.contains("config.yaml:19: document 2 (VirtualService istio-system/vs): field `spec.http[0].route[0].weigth`: unknown field `weigth`"), "{out}");
    assert!(out.contains("weigth"), "{out}");
}

/// A subset no DestinationRule defines is a dangling reference: a warning naming the file,
/// line and field (the route answers 503 NC), not a refusal.
#[test]
fn undefined_subset_names_the_field() {
    let yaml = format!(
        "{GW}---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: se, namespace: istio-system}}\nspec:\n  hosts: [svc.test]\n  ports: [{{number: 80, name: http}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: istio-system}}\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - route:\n    - destination:\n        host: svc.test\n        subset: v9\n"
    );
    let (code, out) = validate(&yaml);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("config.yaml:29: VirtualService istio-system/vs: spec.http[0].route[0].destination.subset: subset `v9`"),
        "{out}"
    );
}

#[test]
fn plugin_errors_sha256_and_rejected_config() {
    let plugin = |extra: &str| {
        format!(
            "{GW}---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: p, namespace: istio-system}}\nspec:\n  url: file://{{{{WASM}}}}/test_plugin_header_echo.wasm\n{extra}"
        )
    };
    let (code, out) = validate(&plugin(
        "  sha256: 0000000000000000000000000000000000000000000000000000000000000000\n",
    ));
    assert_ne!(code, 0);
    assert!(
        out.contains("field `spec.sha256`: sha256 mismatch"),
        "{out}"
    );
    let (code, out) = validate(&plugin("  pluginConfig: {reject: true}\n"));
    assert_ne!(code, 0);
    assert!(out.contains("field `spec.pluginConfig`"), "{out}");
    assert!(out.contains("on_configure returned false"), "{out}");
    let (code, out) = validate(&plugin("  pluginConfig: {value: fine}\n"));
    assert_eq!(code, 0, "{out}");
}

#[test]
fn unsupported_kinds_are_refused() {
    let yaml = format!("{GW}---\napiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {{name: wg}}\nspec: {{}}\n");
    let (code, out) = validate(&yaml);
    assert_ne!(code, 0);
    assert!(out.contains("WorkloadGroup is not supported yet"), "{out}");
}

#[test]
fn an_unknown_kind_lists_every_kind_lateen_accepts_and_cluster_kinds_are_skipped() {
    let yaml = format!(
        "{GW}---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w}}\nspec: {{}}\n"
    );
    let (code, out) = validate(&yaml);
    assert_ne!(code, 0);
    for kind in [
        "Gateway",
        "VirtualService",
        "DestinationRule",
        "ServiceEntry",
        "EnvoyFilter",
        "Sidecar",
        "WasmPlugin",
        "AuthorizationPolicy",
        "RequestAuthentication",
        "PeerAuthentication",
        "Bootstrap",
    ] {
        assert!(out.contains(kind), "{kind} missing from: {out}");
    }
    // A ConfigMap and a Deployment, as in a directory exported from a cluster: skipped with
    // a warning, and the rest is valid.
    let yaml = format!(
        "{GW}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app-settings, namespace: default}}\ndata: {{a: b}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app, namespace: default}}\nspec: {{}}\n"
    );
    let (code, out) = validate(&yaml);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ConfigMap default/app-settings: skipped"),
        "{out}"
    );
    assert!(out.contains("Deployment default/app: skipped"), "{out}");
}

// `lateen validate samples/DIR`: whether it passed, and what it printed.
fn validate_sample(dir: &str) -> (bool, String) {
    let p = paths();
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    let out = Command::new(&p.bin)
        .arg("validate")
        .arg(samples.join(dir))
        .arg("--filters-dir")
        .arg(&p.wasm_dir)
        .arg("--cache-dir")
        .arg(&p.cache_dir)
        // The xDS sample's node IP comes from here when set, as in a pod.
        .env_remove("INSTANCE_IP")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn shipped_samples_validate() {
    let (ok, text) = validate_sample("demo");
    assert!(ok, "{text}");
    assert!(
        text.contains("ok (1 listener(s), 4 cluster(s), 2 plugin(s))"),
        "{text}"
    );
    // The xDS sample: a Bootstrap only; its node id is istiod's form.
    let (ok, text) = validate_sample("xds");
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "xds: istiod.istio-system.svc:15010 as node router~127.0.0.1~istio-ingressgateway.\
             istio-system~istio-system.svc.cluster.local"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_route_to_something_missing_is_a_warning_and_answers_503_nc() {
    let v1 = Backend::start("v1").await;
    let yaml = mesh(&[&v1])
        + r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /typo}}]
    route: [{destination: {host: nowhere.test}}]
  - match: [{uri: {prefix: /nosubset}}]
    route: [{destination: {host: svc.test, subset: v9}}]
  - route: [{destination: {host: svc.test, subset: v1}}]
"#;
    // `lateen validate` passes, and says what is missing and where.
    let (code, out) = validate(&yaml);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("config.yaml:") && out.contains("no ServiceEntry declares `nowhere.test`"),
        "{out}"
    );
    assert!(
        out.contains("subset `v9`") && out.contains("503 NC"),
        "{out}"
    );
    // The proxy serves the rest; the dangling routes answer 503 NC, as in Envoy.
    let proxy = Proxy::start(&yaml).await.expect("proxy starts");
    assert_eq!(get(&proxy.url("/ok")).await.unwrap().status, 200);
    for path in ["/typo", "/nosubset"] {
        let r = get(&proxy.url(path)).await.unwrap();
        assert_eq!(r.status, 503, "{path}: {r:?}");
    }
    assert_eq!(v1.count(), 1);
    let dump = proxy.config_dump().await;
    let warnings = dump["warnings"].to_string();
    assert!(warnings.contains("nowhere.test"), "{dump}");
}

#[test]
fn a_mesh_file_beside_the_resources_is_mesh_config() {
    let p = paths();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), GW).unwrap();
    std::fs::write(
        dir.path().join("mesh"),
        "accessLogFile: /dev/stdout\naccessLogEncoding: XML\n",
    )
    .unwrap();
    let out = Command::new(&p.bin)
        .arg("validate")
        .arg(dir.path())
        .arg("--filters-dir")
        .arg(&p.wasm_dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("/mesh:") && text.contains("accessLogEncoding") && text.contains("XML"),
        "{text}"
    );
}
