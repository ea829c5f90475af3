//! The file source: watches the config directory (and the directories of `file://` plugins)
//! and, on a change, builds a new snapshot beside the running one and swaps it in. A change
//! that fails to load (YAML, references, sha256, compile, `on_configure`) changes nothing:
//! the last good snapshot keeps serving, and the failure is logged, counted and shown on
//! the admin API.

use crate::sources::Sources;
use notify::RecursiveMode;
use notify_debouncer_full::new_debouncer;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Watches the config path and rebuilds through the sources.
pub struct Reloader {
    pub sources: Arc<Sources>,
}

// What a reload would read: the config files' contents and the plugin modules' sizes and
// times. Several events for one change, or events for unrelated files (logs beside the
// config), then cause one reload at most.
fn fingerprint(dirs: &BTreeSet<PathBuf>, config: &Path, read_files: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // Certificates and keys by content: a rotation rewrites them in place or swaps a
    // Kubernetes secret's `..data` symlink.
    for f in read_files {
        f.hash(&mut h);
        std::fs::read(f).unwrap_or_default().hash(&mut h);
    }
    if let Ok(files) = lateen_config::source::config_files(config) {
        for f in files {
            f.hash(&mut h);
            std::fs::read(&f).unwrap_or_default().hash(&mut h);
        }
    }
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(d) else {
            continue;
        };
        let mut files: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        files.sort();
        for f in files {
            f.hash(&mut h);
            if let Ok(m) = std::fs::metadata(&f) {
                m.len().hash(&mut h);
                m.modified().ok().hash(&mut h);
            }
        }
    }
    h.finish()
}

impl Reloader {
    /// Loads and builds the config; swaps it in on success. Returns whether it did.
    pub fn reload(&self) -> bool {
        self.sources.reload_files()
    }

    /// Directories to watch: the config directory (or a config file's directory, so that
    /// editors' and Kubernetes' rename-based updates are seen) and every local plugin's.
    fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        let mut dirs = BTreeSet::new();
        let dir = if self.sources.config.is_dir() {
            self.sources.config.clone()
        } else {
            self.sources
                .config
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        };
        dirs.insert(dir);
        if let Some(p) = &self.sources.opts.pushed_dir {
            dirs.insert(p.clone());
        }
        let snap = self.sources.snapshots.load();
        for f in &snap.read_files {
            if let Some(parent) = f.parent() {
                dirs.insert(parent.to_path_buf());
            }
        }
        for p in snap
            .plugins
            .iter()
            .chain(snap.service_plugins.iter().map(|f| &f.plugin))
        {
            if let Some(path) = p.url.strip_prefix("file://") {
                if let Some(parent) = Path::new(path).parent() {
                    dirs.insert(parent.to_path_buf());
                }
            }
        }
        dirs
    }
}

/// Starts watching on a thread of its own; changes are debounced for `debounce`.
pub fn spawn(reloader: Reloader, debounce: Duration) -> notify::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut debouncer = new_debouncer(debounce, None, tx)?;
    let mut watched = BTreeSet::new();
    if let Some(p) = &reloader.sources.opts.pushed_dir {
        std::fs::create_dir_all(p)?;
    }
    for d in reloader.watch_dirs() {
        // A certificate directory that does not exist (yet) is not fatal.
        match debouncer.watch(&d, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(d);
            }
            Err(e) if !d.exists() => tracing::warn!("cannot watch {}: {e}", d.display()),
            Err(e) => return Err(e),
        }
    }
    let mut last = fingerprint(
        &watched,
        &reloader.sources.config,
        &reloader.sources.snapshots.load().read_files,
    );
    std::thread::Builder::new()
        .name("lateen-watch".into())
        .spawn(move || {
            for result in rx {
                match result {
                    // Opening and reading files (our own fingerprint among them) raise
                    // access events; only changes count, or each check would cause another.
                    Ok(events)
                        if events
                            .iter()
                            .all(|e| matches!(e.event.kind, notify::EventKind::Access(_))) =>
                    {
                        continue
                    }
                    Ok(_) => {}
                    Err(errors) => {
                        for e in errors {
                            tracing::warn!("watching the config: {e}");
                        }
                        continue;
                    }
                }
                let now = fingerprint(
                    &watched,
                    &reloader.sources.config,
                    &reloader.sources.snapshots.load().read_files,
                );
                if now == last {
                    continue;
                }
                last = now;
                if reloader.reload() {
                    // A new plugin may live in a directory not watched yet.
                    for d in reloader.watch_dirs() {
                        if !watched.contains(&d) {
                            match debouncer.watch(&d, RecursiveMode::NonRecursive) {
                                Ok(()) => {
                                    watched.insert(d);
                                }
                                Err(e) => tracing::warn!("cannot watch {}: {e}", d.display()),
                            }
                        }
                    }
                }
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(())
}
