//! Logging, time, timers, stream control and local responses.

use super::{guest_fault, headers::decode_map, ok, read, read_string, write_u32, write_u64, Ctx};
use crate::state::{HostState, LocalResponse, RemoteAction};
use crate::types::{log_level_name, stream, Status};
use bytes::Bytes;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime::{Linker, Result};

/// Logs a plugin message under target `lateen::plugin`, at the plugin's level.
pub(crate) fn plugin_log(plugin: &str, level: i32, msg: &str) {
    match level {
        0 => tracing::trace!(target: "lateen::plugin", plugin, "{msg}"),
        1 => tracing::debug!(target: "lateen::plugin", plugin, "{msg}"),
        2 => tracing::info!(target: "lateen::plugin", plugin, "{msg}"),
        3 => tracing::warn!(target: "lateen::plugin", plugin, "{msg}"),
        _ => {
            tracing::error!(target: "lateen::plugin", plugin, level = log_level_name(level), "{msg}")
        }
    }
}

// Resumes the effective context's stream: the one being called, or another one (a root
// context resuming a paused stream from on_tick).
fn resume(s: &mut HostState, response: bool) {
    if s.active_context == s.cur_context {
        if response {
            s.cur.resume_response = true;
        } else {
            s.cur.resume_request = true;
        }
    } else {
        let context = s.active_context;
        s.remote.push(RemoteAction::Resume { context, response });
    }
}

pub(super) fn define(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_log",
        |mut c: Ctx<'_>, level: i32, p: i32, n: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let msg = read(&c, p, n)?;
                let s = c.data_mut();
                if level >= s.log_level {
                    let msg = String::from_utf8_lossy(&msg);
                    match &mut s.log_capture {
                        Some(kept) => kept.push((level, msg.into_owned())),
                        None => plugin_log(&s.plugin.name, level, &msg),
                    }
                }
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: Ctx<'_>, ret: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let level = c.data().log_level.clamp(0, 5) as u32;
                write_u32(&mut c, ret, level)?;
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Ctx<'_>, ret: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let now = (SystemTime::now() + c.data().clock_offset)
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                write_u64(&mut c, ret, now)?;
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Ctx<'_>, ms: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let s = c.data_mut();
                let ctx = s.active_context;
                s.tick_requests
                    .push((ctx, Duration::from_millis(u64::from(ms as u32))));
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: Ctx<'_>, t: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                match t {
                    stream::HTTP_REQUEST => resume(c.data_mut(), false),
                    stream::HTTP_RESPONSE => resume(c.data_mut(), true),
                    _ => {}
                }
                ok(Status::Ok)
            })
        },
    )?;
    // ABI 0.1.0 names.
    l.func_wrap(
        "env",
        "proxy_continue_request",
        |mut c: Ctx<'_>| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                resume(c.data_mut(), false);
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_continue_response",
        |mut c: Ctx<'_>| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                resume(c.data_mut(), true);
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_clear_route_cache",
        |_: Ctx<'_>| -> Result<i32> { guest_fault(|| -> Result<i32> { ok(Status::Ok) }) },
    )?;
    l.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: Ctx<'_>, _t: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                c.data_mut().cur.reset = true;
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Ctx<'_>,
         status: i32,
         dp: i32,
         dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         grpc_status: i32|
         -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let details = read_string(&c, dp, dl).unwrap_or_default();
                let body = Bytes::from(read(&c, bp, bl)?);
                let Some(headers) = decode_map(&read(&c, hp, hl)?) else {
                    return ok(Status::BadArgument);
                };
                let Ok(status) = u16::try_from(status) else {
                    return ok(Status::BadArgument);
                };
                if !(200..=599).contains(&status) {
                    return ok(Status::BadArgument);
                }
                let response = LocalResponse {
                    status,
                    details,
                    body,
                    headers,
                    grpc_status,
                };
                let s = c.data_mut();
                if s.active_context == s.cur_context {
                    s.cur.local_response = Some(response);
                } else {
                    let context = s.active_context;
                    s.remote
                        .push(RemoteAction::LocalResponse { context, response });
                }
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: Ctx<'_>, ctx: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                c.data_mut().active_context = ctx as u32;
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap("env", "proxy_done", |_: Ctx<'_>| -> Result<i32> {
        guest_fault(|| -> Result<i32> { ok(Status::Ok) })
    })?;
    Ok(())
}
