//! The overload manager's two actions Lateen takes (Envoy's `overload_manager`): a global
//! cap on downstream connections (`global_downstream_max_connections`: past it a new
//! connection is closed at once), and a heap high-water mark (`fixed_heap` with
//! `stop_accepting_requests`): while the process's memory is at or over it, new requests
//! get 503 with `x-envoy-overloaded` and flag `OM`, so that the process sheds load before
//! the kernel kills it. Both are process-wide, set from the snapshot on each install.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

/// How often the memory in use is read (Envoy's `refresh_interval` default is 1 s; a
/// tenth of that reacts before a burst of allocations gets far).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

static MAX_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
static MAX_HEAP: AtomicU64 = AtomicU64::new(0);
static SHEDDING: AtomicBool = AtomicBool::new(false);
static SAMPLER: Once = Once::new();

/// Applies a snapshot's limits; a memory limit starts the sampler on first use.
pub fn configure(limits: &lateen_model::Limits) {
    MAX_CONNECTIONS.store(limits.max_connections.unwrap_or(0), Ordering::Relaxed);
    let heap = limits.max_heap_bytes.unwrap_or(0);
    MAX_HEAP.store(heap, Ordering::Relaxed);
    if heap == 0 {
        SHEDDING.store(false, Ordering::Relaxed);
        return;
    }
    sample();
    SAMPLER.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("lateen-overload".into())
            .spawn(|| loop {
                std::thread::sleep(SAMPLE_EVERY);
                sample();
            });
        if let Err(e) = spawned {
            tracing::warn!("overload: cannot start the memory sampler: {e}");
        }
    });
}

/// Reads the memory in use and sets whether new requests are shed.
fn sample() {
    let max = MAX_HEAP.load(Ordering::Relaxed);
    let over = max != 0 && anonymous_bytes().is_some_and(|used| used >= max);
    if SHEDDING.swap(over, Ordering::Relaxed) != over {
        if over {
            tracing::warn!(
                max_heap_bytes = max,
                "overload: memory at its limit, shedding new requests"
            );
        } else {
            tracing::info!("overload: memory below its limit again, accepting requests");
        }
    }
}

/// Resident memory that is not file-backed (heap, stacks, wasm instances): what grows
/// with load. `RssAnon` of `/proc/self/status`, in kB.
fn anonymous_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb = line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    Some(kb * 1024)
}

/// Whether new requests are shed (one relaxed load per request).
pub fn shedding() -> bool {
    SHEDDING.load(Ordering::Relaxed)
}

/// A downstream connection counted against the global cap; released on drop.
pub struct ConnectionSlot(());

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A slot for a new downstream connection, or `None` when the global cap is reached.
pub fn admit() -> Option<ConnectionSlot> {
    let max = MAX_CONNECTIONS.load(Ordering::Relaxed);
    let before = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    if max != 0 && before >= max {
        CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Some(ConnectionSlot(()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_memory_in_use_is_read() {
        let used = super::anonymous_bytes().expect("/proc/self/statm");
        assert!(used > 0);
    }
}
