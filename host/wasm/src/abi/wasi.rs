//! The WASI preview1 subset a proxy-wasm plugin may import: stdout/stderr go to the log,
//! clocks, randomness, the plugin's own environment (`vmConfig.env`), empty args and
//! proc_exit. Everything else a plugin's std might link answers ENOSYS/EBADF; a plugin has
//! no file system or sockets.

use super::{borrow, borrow_mut, wasi_fault, write_bytes, write_u32, write_u64, Ctx};
use crate::state::HostState;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use wasmtime::{Linker, Result};

const M: &str = "wasi_snapshot_preview1";
const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;
/// The most bytes one `random_get` may ask for (Envoy's limit).
const MAX_RANDOM_GET: u32 = 64 * 1024;
/// The most of one `fd_write` that reaches the log.
const MAX_LOG_LINE: usize = 64 * 1024;

pub(super) fn define(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        M,
        "fd_write",
        |mut c: Ctx<'_>, fd: i32, iovs: i32, n: i32, ret: i32| -> Result<i32> {
            wasi_fault(|| -> Result<i32> {
                if fd != 1 && fd != 2 {
                    return Ok(EBADF);
                }
                let raw = borrow(&c, iovs, n.saturating_mul(8))?;
                // The iovecs may all point at the same large buffer: the bytes reported
                // written are the sum, the text kept for the log is capped.
                let mut text = Vec::new();
                let mut written = 0u32;
                for iov in raw.chunks_exact(8) {
                    let p = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                    let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                    let bytes = borrow(&c, p, len)?;
                    written = written.saturating_add(bytes.len() as u32);
                    let room = MAX_LOG_LINE.saturating_sub(text.len());
                    text.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
                let msg = String::from_utf8_lossy(&text);
                let msg = msg.trim_end();
                if !msg.is_empty() {
                    super::misc::plugin_log(
                        &c.data().plugin.name,
                        if fd == 1 { 2 } else { 4 },
                        msg,
                    );
                }
                write_u32(&mut c, ret, written)?;
                Ok(ESUCCESS)
            })
        },
    )?;
    l.func_wrap(
        M,
        "clock_time_get",
        |mut c: Ctx<'_>, id: i32, _precision: i64, ret: i32| -> Result<i32> {
            wasi_fault(|| -> Result<i32> {
                let ns = match id {
                    0 => SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64),
                    1..=3 => monotonic_ns(),
                    _ => return Ok(EINVAL),
                };
                write_u64(&mut c, ret, ns)?;
                Ok(ESUCCESS)
            })
        },
    )?;
    l.func_wrap(
        M,
        "clock_res_get",
        |mut c: Ctx<'_>, _id: i32, ret: i32| -> Result<i32> {
            wasi_fault(|| -> Result<i32> {
                write_u64(&mut c, ret, 1)?;
                Ok(ESUCCESS)
            })
        },
    )?;
    l.func_wrap(
        M,
        "random_get",
        |mut c: Ctx<'_>, p: i32, n: i32| -> Result<i32> {
            wasi_fault(|| -> Result<i32> {
                // Envoy's cap; checked before anything is sized from the guest's length, and
                // the bytes go straight into guest memory, so the host allocates nothing.
                if n as u32 > MAX_RANDOM_GET {
                    return Ok(EINVAL);
                }
                rand::fill(borrow_mut(&mut c, p, n)?);
                Ok(ESUCCESS)
            })
        },
    )?;
    l.func_wrap(
        M,
        "environ_sizes_get",
        |mut c: Ctx<'_>, ret_count: i32, ret_size: i32| -> Result<i32> {
            wasi_fault(|| -> Result<i32> {
                let env = &c.data().plugin.env;
                let count = env.len() as u32;
                let size = env
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 2)
                    .sum::<usize>() as u32;
                write_u32(&mut c, ret_count, count)?;
                write_u32(&mut c, ret_size, size)?;
                Ok(ESUCCESS)
            })
        },
    )?;
    l.func_wrap(
        M,
        "environ_get",
        |mut c: Ctx<'_>, ptrs: i32, buf: i32| -> Result<i32> {
            wasi_fault(|| -> Result<i32> {
                let env = c.data().plugin.env.clone();
                let mut off = buf as u32;
                for (i, (k, v)) in env.iter().enumerate() {
                    let entry = format!("{k}={v}\0");
                    // Offsets wrap like the guest's own u32 arithmetic; the writes are
                    // bounds-checked against its memory.
                    let slot = (ptrs as u32).wrapping_add((i as u32).wrapping_mul(4));
                    write_u32(&mut c, slot as i32, off)?;
                    write_bytes(&mut c, off as i32, entry.as_bytes())?;
                    off = off.wrapping_add(entry.len() as u32);
                }
                Ok(ESUCCESS)
            })
        },
    )?;
    l.func_wrap(
        M,
        "args_sizes_get",
        |mut c: Ctx<'_>, ret_count: i32, ret_size: i32| -> Result<i32> {
            wasi_fault(|| -> Result<i32> {
                write_u32(&mut c, ret_count, 0)?;
                write_u32(&mut c, ret_size, 0)?;
                Ok(ESUCCESS)
            })
        },
    )?;
    l.func_wrap(M, "args_get", |_: Ctx<'_>, _: i32, _: i32| -> Result<i32> {
        wasi_fault(|| -> Result<i32> { Ok(ESUCCESS) })
    })?;
    l.func_wrap(M, "proc_exit", |c: Ctx<'_>, code: i32| -> Result<()> {
        Err(wasmtime::format_err!(
            "plugin {} called proc_exit({code})",
            c.data().plugin.name
        ))
    })?;
    l.func_wrap(M, "sched_yield", |_: Ctx<'_>| -> Result<i32> {
        wasi_fault(|| -> Result<i32> { Ok(ESUCCESS) })
    })?;
    l.func_wrap(M, "fd_close", |_: Ctx<'_>, _: i32| -> Result<i32> {
        wasi_fault(|| -> Result<i32> { Ok(EBADF) })
    })?;
    l.func_wrap(
        M,
        "fd_fdstat_get",
        |_: Ctx<'_>, _: i32, _: i32| -> Result<i32> { wasi_fault(|| -> Result<i32> { Ok(EBADF) }) },
    )?;
    l.func_wrap(
        M,
        "fd_prestat_get",
        |_: Ctx<'_>, _: i32, _: i32| -> Result<i32> { wasi_fault(|| -> Result<i32> { Ok(EBADF) }) },
    )?;
    l.func_wrap(
        M,
        "fd_prestat_dir_name",
        |_: Ctx<'_>, _: i32, _: i32, _: i32| -> Result<i32> {
            wasi_fault(|| -> Result<i32> { Ok(EBADF) })
        },
    )?;
    l.func_wrap(
        M,
        "fd_seek",
        |_: Ctx<'_>, _: i32, _: i64, _: i32, _: i32| -> Result<i32> {
            wasi_fault(|| -> Result<i32> { Ok(EBADF) })
        },
    )?;
    l.func_wrap(
        M,
        "fd_read",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32| -> Result<i32> {
            wasi_fault(|| -> Result<i32> { Ok(EBADF) })
        },
    )?;
    l.func_wrap(
        M,
        "poll_oneoff",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32| -> Result<i32> {
            wasi_fault(|| -> Result<i32> { Ok(ENOSYS) })
        },
    )?;
    Ok(())
}

fn monotonic_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}
