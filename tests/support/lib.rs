//! Test support for Lateen's end-to-end tests: real upstream servers on 127.0.0.1, the real
//! `lateen` binary on a temporary config, and a plain HTTP client.

mod jwt;
pub mod xds;
pub use jwt::{now as jwt_now, Issuer};
mod backend;
mod client;
mod peers;
mod proxy;
mod yaml;
pub use backend::*;
pub use client::*;
pub use peers::*;
pub use proxy::*;
pub use yaml::*;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Polls `check` every 5 ms until it holds; panics naming `what` after 10 s. For anything
/// that changes over time (reloads, ticks, mirrors), as linkerd's `assert_eventually!`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Where the build put the binary and the wasm modules.
pub struct Paths {
    pub bin: PathBuf,
    pub wasm_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// `$CARGO_TARGET_DIR`: where tests/run.sh puts the Python venv, and the screenshot.
    pub target: PathBuf,
}

/// Finds `lateen` and the built filters from the test binary's own location
/// (`target/debug/deps/e2e-…`).
pub fn paths() -> Paths {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>")
        .to_path_buf();
    let target = profile_dir.parent().expect("target dir").to_path_buf();
    Paths {
        bin: profile_dir.join("lateen"),
        wasm_dir: target.join("wasm32-wasip1/wasm"),
        cache_dir: target.join("lateen-test-cache"),
        target,
    }
}

/// A wasm module built from this workspace (`lateen_router`, `test_plugin_trap`, ...).
pub fn wasm(name: &str) -> PathBuf {
    let p = paths().wasm_dir.join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: build the filters first (tests/run.sh does)",
        p.display()
    );
    p
}

/// Runs `lateen validate` on `yaml`, written as `file_name` in a temporary directory,
/// asserts that the config is refused, and returns what it printed on stderr.
pub fn refused(file_name: &str, yaml: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join(file_name);
    std::fs::write(&cfg, yaml).expect("write config");
    let out = Command::new(paths().bin)
        .arg("validate")
        .arg(&cfg)
        .arg("--filters-dir")
        .arg(paths().wasm_dir)
        .output()
        .expect("lateen validate");
    assert!(
        !out.status.success(),
        "{file_name} must be refused:\n{yaml}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Runs the `lateen` binary to completion; panics with its output when it fails.
/// `lateen validate FILE` with the test filters, as run (it may fail).
pub fn validate(file: &Path) -> std::process::Output {
    Command::new(paths().bin)
        .arg("validate")
        .arg(file)
        .arg("--filters-dir")
        .arg(paths().wasm_dir)
        .output()
        .expect("run lateen validate")
}

pub fn lateen(args: &[&str]) -> String {
    let out = Command::new(paths().bin)
        .args(args)
        .output()
        .expect("run lateen");
    assert!(
        out.status.success(),
        "lateen {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
