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
