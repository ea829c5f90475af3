//! `lateen new-filter`: the crate it makes passes its own tests on the harness, builds, and
//! hot-loads into a running proxy from the WasmPlugin it ships, as the README's walk-through
//! does.

use lateen_e2e::*;
use std::process::Command;

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 \
                      (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

/// Runs `lateen new-filter NAME [extra]` in a temporary directory, then the crate's own
/// tests (they build the .wasm and run it on the harness); returns the directory (kept
/// while the guard lives) and the built module.
fn scaffold_and_test(name: &str, extra: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let p = paths();
    let tmp = tempfile::tempdir().unwrap();
    let new_filter = || {
        Command::new(&p.bin)
            .args(["new-filter", name, "--dir"])
            .arg(tmp.path())
            .args(extra)
            .env("CARGO_TARGET_DIR", &p.target)
            .output()
            .expect("run lateen new-filter")
    };
    let out = new_filter();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tmp.path().join(name);
    for f in [
        "Cargo.toml",
        "src/lib.rs",
        "tests/filter.rs",
        "README.md",
        "wasmplugin.yaml",
    ] {
        assert!(dir.join(f).is_file(), "{f} was not made");
    }
    let again = new_filter();
    assert!(!again.status.success(), "an existing crate was overwritten");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // The target directory is shared, so Lateen's runtime is not built again.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["test", "--offline"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &p.target)
        .output()
        .expect("run cargo test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok."),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let triple = if extra.contains(&"--component") {
        "wasm32-wasip2"
    } else {
        "wasm32-wasip1"
    };
    let wasm = p
        .target
        .join(format!("{triple}/wasm/{}.wasm", name.replace('-', "_")));
    assert!(wasm.is_file(), "{} was not built", wasm.display());
    (tmp, wasm)
}

/// Starts a gateway, adds the crate's WasmPlugin to its config and checks the filter tags
/// requests and counts them.
async fn hot_load(dir: &std::path::Path, wasm: &std::path::Path, metric: &str) {
    let v1 = Backend::start("v1").await;
    let config = mesh(&[&v1]) + &route_all("v1");
    let proxy = Proxy::start(&config).await.unwrap();
    let r = send("GET", &proxy.url("/"), &[("user-agent", IPHONE)], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(v1.last().header("x-device"), None);

    let plugin = std::fs::read_to_string(dir.join("wasmplugin.yaml")).unwrap();
    assert!(
        plugin.contains(&format!("url: file://{}", wasm.display())),
        "{plugin}"
    );
    proxy.rewrite(&format!("{config}---\n{plugin}"));
    proxy.wait_served(&v1, "x-device", "other").await;
    let r = send("GET", &proxy.url("/"), &[("user-agent", IPHONE)], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(v1.last().header("x-device"), Some("mobile"));
    let stats = proxy.stats().await;
    assert!(
        stats.contains(&format!("{metric}{{device=\"mobile\"}} 1")),
        "{stats}"
    );
}

#[tokio::test]
async fn a_new_filter_tests_green_then_hot_loads_into_a_running_proxy() {
    let (tmp, wasm) = scaffold_and_test("ua-tagger", &[]);
    let dir = tmp.path().join("ua-tagger");
    hot_load(&dir, &wasm, "ua_tagger_requests_total").await;

    // The crate ships its config schema in the module: a header name the schema refuses is
    // caught when the config loads, with its line.
    assert!(dir.join("schema.json").is_file());
    let v1 = Backend::start("v1").await;
    let plugin = std::fs::read_to_string(dir.join("wasmplugin.yaml"))
        .unwrap()
        .replace("header: x-device", "header: Not A Header");
    let yaml = (mesh(&[&v1]) + "---\n" + &plugin)
        .replace("{{PORT}}", &free_port().to_string())
        .replace("{{WASM}}", &paths().wasm_dir.display().to_string());
    let err = refused("scaffold.yaml", &yaml);
    let line = yaml
        .lines()
        .position(|l| l.contains("Not A Header"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("scaffold.yaml:{line}"))
            && err.contains("spec.pluginConfig.header")
            && err.contains("config schema"),
        "{err}"
    );
}

#[tokio::test]
async fn a_new_component_filter_tests_green_then_hot_loads_into_a_running_proxy() {
    let (tmp, wasm) = scaffold_and_test("device-tag", &["--component"]);
    hot_load(
        &tmp.path().join("device-tag"),
        &wasm,
        "device_tag_requests_total",
    )
    .await;
}
