//! Building a filter crate to its `.wasm` from a test, once per test process.

use crate::HarnessError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The target proxy-wasm filters are built for.
pub const TARGET: &str = "wasm32-wasip1";
/// The target component-model filters (`lateen:filter`) are built for.
pub const COMPONENT_TARGET: &str = "wasm32-wasip2";
/// The Cargo profile filters are built with (`[profile.wasm]` in the workspace: LTO,
/// `panic = "abort"`, stripped). A crate made by `lateen new-filter` defines it too.
pub const PROFILE: &str = "wasm";

/// Builds the filter crate whose `Cargo.toml` is in `crate_dir` for `wasm32-wasip1` with the
/// `wasm` profile, as a `cdylib` (whatever crate types it declares), and returns the path of
/// its `.wasm`.
///
/// Cargo does the work, so a fresh build is a no-op; the result is remembered for the rest
/// of the test process, so tests running in parallel build once. The build uses the
/// `cargo` that runs the tests (`$CARGO`) and honours `CARGO_TARGET_DIR`.
///
/// ```no_run
/// let wasm = lateen_harness::build_filter(env!("CARGO_MANIFEST_DIR")).unwrap();
/// assert!(wasm.extension().is_some_and(|e| e == "wasm"));
/// ```
pub fn build_filter(crate_dir: impl AsRef<Path>) -> Result<PathBuf, HarnessError> {
    build(crate_dir.as_ref(), TARGET)
}

/// As [`build_filter`], for a component-model filter: builds for `wasm32-wasip2`, whose
/// linker makes the component.
///
/// ```no_run
/// let wasm = lateen_harness::build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
/// let plugin = lateen_harness::Plugin::load(wasm).start().unwrap();
/// ```
pub fn build_component(crate_dir: impl AsRef<Path>) -> Result<PathBuf, HarnessError> {
    build(crate_dir.as_ref(), COMPONENT_TARGET)
}

type Built = HashMap<(PathBuf, &'static str), Result<PathBuf, String>>;

fn build(dir: &Path, target: &'static str) -> Result<PathBuf, HarnessError> {
    static BUILT: OnceLock<Mutex<Built>> = OnceLock::new();
    let dir = dir.to_path_buf();
    // Held across the build: parallel tests of one crate wait for the first build.
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let result = built
        .entry((dir.clone(), target))
        .or_insert_with(|| cargo_build(&dir, target))
        .clone();
    result.map_err(|message| HarnessError::Build { dir, message })
}

fn cargo_build(dir: &Path, target: &str) -> Result<PathBuf, String> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(format!("no Cargo.toml in {}", dir.display()));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["rustc", "--lib", "--crate-type", "cdylib"])
        .args(["--target", target, "--profile", PROFILE])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains(target) && stderr.contains("target may not be installed") {
            format!(" (run `rustup target add {target}`)")
        } else {
            String::new()
        };
        return Err(format!("cargo build failed{hint}:\n{stderr}"));
    }
    // The artifact whose manifest is this crate's and that produced a .wasm.
    let manifest = manifest.canonicalize().unwrap_or(manifest);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let same_crate = msg["manifest_path"]
            .as_str()
            .map(|p| Path::new(p).canonicalize().unwrap_or_else(|_| p.into()))
            .is_some_and(|p| p == manifest);
        if !same_crate {
            continue;
        }
        let wasm = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"));
        if let Some(w) = wasm {
            return Ok(PathBuf::from(w));
        }
    }
    Err(format!(
        "cargo built {} but made no .wasm: does it have a library target?",
        manifest.display()
    ))
}
