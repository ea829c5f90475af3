//! Plugin metrics: counters, gauges and histograms, exported by the host.

use super::{guest_fault, ok, read_string, write_u64, Ctx};
use crate::shared::{Metric, MetricKind};
use crate::state::HostState;
use crate::types::{metric, Status};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use wasmtime::{Linker, Result};

pub(super) fn lookup(s: &mut HostState, id: i32) -> Option<Arc<Metric>> {
    let idx = id as u32 as usize;
    if let Some(Some(m)) = s.metrics.get(idx) {
        return Some(m.clone());
    }
    let m = s.shared.metric(id as u32)?;
    if s.metrics.len() <= idx {
        s.metrics.resize(idx + 1, None);
    }
    s.metrics[idx] = Some(m.clone());
    Some(m)
}

/// The foreign function that records a finished request into plugin metrics in one host
/// call: its argument is (metric id, measure) pairs of little-endian u32s, the measure one
/// of [`MEASURE_COUNT`] (adds 1), [`MEASURE_DURATION_MS`], [`MEASURE_REQUEST_BYTES`] or
/// [`MEASURE_RESPONSE_BYTES`] (Envoy's `request.duration` in ms, `request.total_size`,
/// `response.total_size`, recorded into a histogram). A metrics filter otherwise makes
/// seven host calls for this (three property reads, four metric updates).
pub const OBSERVE_REQUEST: &str = "lateen_observe_request";
pub const MEASURE_COUNT: u32 = 1;
pub const MEASURE_DURATION_MS: u32 = 2;
pub const MEASURE_REQUEST_BYTES: u32 = 3;
pub const MEASURE_RESPONSE_BYTES: u32 = 4;

fn int_property(s: &HostState, path: &str) -> u64 {
    super::property(s, path)
        .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
        .map_or(0, |b| i64::from_le_bytes(b).max(0) as u64)
}

/// Applies [`OBSERVE_REQUEST`]'s pairs; a malformed argument, an unknown measure or a
/// metric of the wrong kind changes nothing and answers `BadArgument`, an unknown id
/// `NotFound`.
pub(super) fn observe_request(s: &mut HostState, args: &[u8]) -> Status {
    if !args.len().is_multiple_of(8) {
        return Status::BadArgument;
    }
    let pairs = || {
        args.chunks_exact(8).map(|p| {
            let id = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
            (id, u32::from_le_bytes([p[4], p[5], p[6], p[7]]))
        })
    };
    // Checked whole first, so that a bad pair records nothing.
    for (id, measure) in pairs() {
        let Some(m) = lookup(s, id as i32) else {
            return Status::NotFound;
        };
        let fits = match measure {
            MEASURE_COUNT => m.kind == MetricKind::Counter,
            MEASURE_DURATION_MS | MEASURE_REQUEST_BYTES | MEASURE_RESPONSE_BYTES => {
                m.kind == MetricKind::Histogram
            }
            _ => false,
        };
        if !fits {
            return Status::BadArgument;
        }
    }
    for (id, measure) in pairs() {
        let Some(m) = lookup(s, id as i32) else {
            continue;
        };
        match measure {
            MEASURE_COUNT => {
                m.value.fetch_add(1, Ordering::Relaxed);
            }
            MEASURE_DURATION_MS => m.record(int_property(s, "request.duration") / 1_000_000),
            MEASURE_REQUEST_BYTES => m.record(int_property(s, "request.total_size")),
            _ => m.record(int_property(s, "response.total_size")),
        }
    }
    Status::Ok
}

pub(super) fn define(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Ctx<'_>, t: i32, np: i32, nl: i32, ret_id: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let kind = match t {
                    metric::COUNTER => MetricKind::Counter,
                    metric::GAUGE => MetricKind::Gauge,
                    metric::HISTOGRAM => MetricKind::Histogram,
                    _ => return ok(Status::BadArgument),
                };
                let name = read_string(&c, np, nl)?;
                let Some((id, _)) = c.data().shared.define_metric(kind, &name) else {
                    tracing::warn!(target: "lateen::plugin", plugin = %c.data().plugin.name,
                        "define_metric refused: too many plugin metrics");
                    return ok(Status::InternalFailure);
                };
                super::write_u32(&mut c, ret_id, id)?;
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Ctx<'_>, id: i32, ret: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let Some(m) = lookup(c.data_mut(), id) else {
                    return ok(Status::NotFound);
                };
                let v = match m.kind {
                    MetricKind::Histogram => return ok(Status::BadArgument),
                    _ => m.value.load(Ordering::Relaxed) as u64,
                };
                write_u64(&mut c, ret, v)?;
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_record_metric",
        |mut c: Ctx<'_>, id: i32, v: i64| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                match lookup(c.data_mut(), id) {
                    Some(m) => {
                        m.record(v as u64);
                        ok(Status::Ok)
                    }
                    None => ok(Status::NotFound),
                }
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut c: Ctx<'_>, id: i32, offset: i64| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                match lookup(c.data_mut(), id) {
                    Some(m) if m.kind == MetricKind::Histogram => ok(Status::BadArgument),
                    Some(m) => {
                        m.value.fetch_add(offset, Ordering::Relaxed);
                        ok(Status::Ok)
                    }
                    None => ok(Status::NotFound),
                }
            })
        },
    )?;
    Ok(())
}
