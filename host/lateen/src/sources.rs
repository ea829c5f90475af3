//! The config sources behind the one snapshot: the YAML files (watched by `watch`) and an
//! xDS control plane (the `xds` client). Either source's change builds a new snapshot from
//! the last good state of both, and swaps it in; a change that fails to build changes
//! nothing.

use arc_swap::ArcSwap;
use lateen_config::compile::{self, BuildOptions, Resources};
use lateen_model::diff::{summary, Diff};
use lateen_model::xds::XdsSet;
use lateen_proxy::live::Live;
use lateen_wasm::Runtime;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

/// Reload outcomes of the files, for `/stats/prometheus` and `/config_dump`.
#[derive(Default)]
pub struct ReloadStatus {
    pub success: std::sync::atomic::AtomicU64,
    pub failure: std::sync::atomic::AtomicU64,
    /// Errors of the last failed reload, cleared by the next good one.
    pub last_error: Mutex<Option<String>>,
}

/// Called after each build, once the old state is dropped: the binary returns the memory a
/// large push freed to the OS (its allocator keeps freed pages of an idle thread otherwise).
static TRIM: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what [`TRIM`] calls (once per process).
pub fn set_trim(f: fn()) {
    let _ = TRIM.set(f);
}

/// Returns freed memory to the OS, if the binary said how.
pub fn trim() {
    if let Some(f) = TRIM.get() {
        f();
    }
}

/// The sources and the snapshot they build.
pub struct Sources {
    pub config: PathBuf,
    pub snapshots: Arc<ArcSwap<Live>>,
    pub rt: Arc<Runtime>,
    pub opts: BuildOptions,
    pub status: Arc<ReloadStatus>,
    /// The files as last built into a snapshot.
    files: Mutex<Arc<Resources>>,
    /// What the control plane pushed, as last built into a snapshot.
    xds: Mutex<Option<Arc<XdsSet>>>,
    /// One build at a time, so versions follow the order of the swaps.
    building: Mutex<()>,
    /// Told after every swap, so workers follow listener changes at once.
    changed: tokio::sync::watch::Sender<()>,
}

impl Sources {
    /// `files` are the resources the running snapshot was built from.
    pub fn new(
        config: PathBuf,
        snapshots: Arc<ArcSwap<Live>>,
        rt: Arc<Runtime>,
        opts: BuildOptions,
        status: Arc<ReloadStatus>,
        files: Resources,
    ) -> Self {
        Sources {
            config,
            snapshots,
            rt,
            opts,
            status,
            files: Mutex::new(Arc::new(files)),
            xds: Mutex::new(None),
            building: Mutex::new(()),
            changed: tokio::sync::watch::Sender::new(()),
        }
    }

    /// A receiver that sees every snapshot swap from now on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// The files changed: loads and builds them with the current xDS state; swaps the
    /// result in on success. Returns whether it did.
    pub fn reload_files(&self) -> bool {
        let _one = self.building.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.snapshots.load_full();
        let version = current.version + 1;
        let xds = self
            .xds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let build = |res: &Resources| {
            compile::build_with(
                res,
                xds.as_deref(),
                &self.rt,
                &self.opts,
                version,
                Some(&current.config),
            )
        };
        let (res, load_errors) = compile::load_partial(&self.config);
        let first = if load_errors.is_empty() {
            build(&res).map(|snap| (res.clone(), snap))
        } else {
            Err(load_errors)
        };
        // A refused resource alone (as istiod refuses one that fails validation): it keeps
        // its last good version and the rest of the change applies.
        let built = first
            .or_else(|errors: Vec<lateen_config::ConfigError>| {
                let last = self
                    .files
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let isolated =
                    compile::isolate(&res, &last, &errors).ok_or_else(|| errors.clone())?;
                // Still refused without them: the change fails as a whole, for what it said.
                let mut snap = build(&isolated).map_err(|_| errors.clone())?;
                snap.refused = errors;
                Ok((isolated, snap))
            })
            .map_err(|errors: Vec<lateen_config::ConfigError>| joined(&errors, "\n"))
            .and_then(|(res, snap)| Ok((res, Live::install(snap, Some(&current))?)));
        match built {
            Ok((res, live)) => {
                *self.files.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(res);
                self.install(live);
                self.status.success.fetch_add(1, Ordering::Relaxed);
                let refused = &self.snapshots.load().refused;
                if let Ok(mut e) = self.status.last_error.lock() {
                    *e = (!refused.is_empty()).then(|| {
                        format!(
                            "refused, each keeps its last good version:\n{}",
                            joined(refused, "\n")
                        )
                    });
                }
                tracing::info!("configuration reloaded (version {version})");
                drop(current);
                trim();
                true
            }
            Err(text) => {
                tracing::error!(
                    "configuration change rejected, version {} keeps serving:\n{text}",
                    current.version
                );
                self.status.failure.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut e) = self.status.last_error.lock() {
                    *e = Some(text);
                }
                false
            }
        }
    }

    /// The control plane pushed: builds `set` with the last good files; swaps the result in
    /// on success. The error is what to NACK with.
    pub fn apply_xds(&self, set: XdsSet) -> Result<u64, String> {
        let _one = self.building.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.snapshots.load_full();
        let version = current.version + 1;
        let files = self
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let snap = compile::build_with(
            &files,
            Some(&set),
            &self.rt,
            &self.opts,
            version,
            Some(&current.config),
        )
        .map_err(|errors| joined(&errors, "; "))?;
        let live = Live::install(snap, Some(&current))?;
        *self.xds.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(set));
        self.install(live);
        tracing::info!("xDS configuration applied (version {version})");
        drop(current);
        trim();
        Ok(version)
    }

    fn install(&self, (live, diff): (Live, Diff)) {
        tracing::debug!(
            "{} unchanged cluster(s) keep their state",
            diff.clusters.unchanged.len()
        );
        if !diff.listeners.is_empty() {
            // Each worker follows: it binds the new listeners and closes the removed ones.
            tracing::info!("listeners change: {}", summary(&diff.listeners));
        }
        for w in &live.warnings {
            tracing::warn!("{w}");
        }
        for e in &live.refused {
            tracing::error!("resource refused, it keeps its last good version: {e}");
        }
        for e in &live.rule_errors {
            tracing::error!("rule refused, it keeps its last good configuration: {e}");
        }
        self.snapshots.store(Arc::new(live));
        self.changed.send_replace(());
    }
}

/// Build errors as one text, for the log and the reload status (`\n`) or a NACK (`; `).
fn joined(errors: &[lateen_config::ConfigError], separator: &str) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}
