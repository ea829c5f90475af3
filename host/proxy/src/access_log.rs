//! The access-log writer: one line per request (formats in [`lateen_model::access_log`]),
//! written to stdout or a file through a buffer flushed every second, as Envoy's file sink
//! does.

use lateen_model::access_log::AccessLogSpec;
use lateen_wasm::state::StreamState;
use std::io::Write;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

/// A log sink: a buffered file, flushed every second and when dropped.
pub struct AccessLog {
    pub spec: AccessLogSpec,
    out: Mutex<std::io::BufWriter<std::fs::File>>,
}

/// How often buffered lines reach the file.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

impl AccessLog {
    /// Opens the spec's file for appending (`/dev/stdout` works) and starts its flusher.
    pub fn open(spec: &AccessLogSpec) -> std::io::Result<Arc<AccessLog>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.path)?;
        let log = Arc::new(AccessLog {
            spec: spec.clone(),
            out: Mutex::new(std::io::BufWriter::with_capacity(64 * 1024, file)),
        });
        let weak: Weak<AccessLog> = Arc::downgrade(&log);
        std::thread::Builder::new()
            .name("lateen-access-log".into())
            .spawn(move || loop {
                std::thread::sleep(FLUSH_EVERY);
                let Some(log) = weak.upgrade() else { return };
                log.flush();
            })?;
        Ok(log)
    }

    /// Logs one finished stream.
    pub fn record(&self, st: &StreamState) {
        let line = self.spec.encoding.line(st, SystemTime::now());
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = out.write_all(line.as_bytes()) {
            tracing::warn!("access log {}: {e}", self.spec.path.display());
        }
    }

    fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.flush();
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}
