//! Kubernetes packaging: the gateway and workload manifests in `samples/kubernetes`, and
//! what `lateen inject` makes of them, validated against the Kubernetes schemas with
//! `kubernetes-validate --strict` (PyPI); the gateway's embedded config with
//! `lateen validate`.

use lateen_e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/kubernetes")
}

/// `kubernetes-validate --strict` from the test venv (tests/run.sh installs it).
fn kubernetes_validate(files: &[&Path]) -> std::process::Output {
    let tool = test_python().with_file_name("kubernetes-validate");
    Command::new(&tool)
        .args(["--strict", "--quiet", "-k", "1.30.0"])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (tests/run.sh installs it)", tool.display()))
}

fn inject(input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(paths().bin)
        .args(["inject", "-f"])
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn manifests_and_injected_workloads_validate_against_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let injected = dir.path().join("app-injected.yaml");
    let out = inject(
        &samples().join("app.yaml"),
        &injected,
        &[
            "--image",
            "registry.example/lateen:0.1.0",
            "--drain-time",
            "20s",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("injected 1 pod template(s)"));

    let gateway = samples().join("gateway.yaml");
    let app = samples().join("app.yaml");
    let out = kubernetes_validate(&[&gateway, &app, &injected]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator does reject what Kubernetes would.
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(&injected).unwrap();
    std::fs::write(&broken, text.replacen("containers:", "contaners:", 1)).unwrap();
    assert!(!kubernetes_validate(&[&broken]).status.success());

    // What inject added.
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"];
    let init = &pod["spec"]["initContainers"][0];
    assert_eq!(init["name"], "lateen-init");
    assert_eq!(init["image"], "registry.example/lateen:0.1.0");
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN", "NET_RAW"])
    );
    let proxy = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "lateen-proxy")
        .unwrap();
    assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    let args: Vec<&str> = proxy["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["--drain-time", "20s"]),
        "{args:?}"
    );
    assert_eq!(
        pod["metadata"]["labels"]["security.istio.io/tlsMode"],
        "istio"
    );
    // The app container and the Service are untouched.
    assert_eq!(pod["spec"]["containers"][0]["image"], "nginx:1.27");

    // Injecting the injected output adds nothing.
    let twice = dir.path().join("twice.yaml");
    let out = inject(&injected, &twice, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("injected 0 pod template(s)"));
}

#[test]
fn the_gateway_configmap_holds_a_valid_lateen_config() {
    let text = std::fs::read_to_string(samples().join("gateway.yaml")).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in cm["data"].as_object().unwrap() {
        std::fs::write(dir.path().join(name), value.as_str().unwrap()).unwrap();
    }
    let out = Command::new(paths().bin)
        .args(["validate"])
        .arg(dir.path())
        .arg("--filters-dir")
        .arg(paths().wasm_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
