//! Bodies and configuration buffers.

use super::{give, guest_fault, ok, read, write_u32, Ctx};
use crate::state::HostState;
use crate::types::{buffer, Status};
use wasmtime::{Linker, Result};

fn get(s: &HostState, t: i32) -> Option<&[u8]> {
    Some(match t {
        buffer::HTTP_REQUEST_BODY => &s.cur.req_body,
        buffer::HTTP_RESPONSE_BODY => &s.cur.resp_body,
        buffer::HTTP_CALL_RESPONSE_BODY => s.call_response.as_ref().map(|r| &r.body[..])?,
        buffer::VM_CONFIGURATION => &s.plugin.vm_configuration,
        buffer::PLUGIN_CONFIGURATION => &s.plugin_configuration,
        _ => return None,
    })
}

/// The most a plugin may grow a body to: repeated appends cannot make the host allocate
/// without bound (a body the proxy received may be larger; it is never refused for that).
const MAX_BODY_BYTES: usize = 64 << 20;

pub(super) fn define(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Ctx<'_>,
         t: i32,
         start: i32,
         max: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let slice = get(c.data(), t).map(|b| {
                    // The SDK asks for config with max = u32::MAX: clamp, never fail.
                    let start = (start as u32 as usize).min(b.len());
                    let end = start.saturating_add(max as u32 as usize).min(b.len());
                    b[start..end].to_vec()
                });
                match slice {
                    Some(bytes) => {
                        give(&mut c, &bytes, ret_ptr, ret_size)?;
                        ok(Status::Ok)
                    }
                    None => ok(Status::NotFound),
                }
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut c: Ctx<'_>, t: i32, ret_len: i32, ret_flags: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let Some(len) = get(c.data(), t).map(<[u8]>::len) else {
                    return ok(Status::NotFound);
                };
                write_u32(&mut c, ret_len, len as u32)?;
                write_u32(&mut c, ret_flags, 0)?;
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Ctx<'_>, t: i32, start: i32, size: i32, ptr: i32, len: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let data = read(&c, ptr, len)?;
                let s = c.data_mut();
                let body = match t {
                    buffer::HTTP_REQUEST_BODY => &mut s.cur.req_body,
                    buffer::HTTP_RESPONSE_BODY => &mut s.cur.resp_body,
                    _ => return ok(Status::BadArgument),
                };
                // Replace [start, start+size) with the new bytes, as Envoy does.
                let start = (start as u32 as usize).min(body.len());
                let end = start.saturating_add(size as u32 as usize).min(body.len());
                let grown = body.len() - (end - start) + data.len();
                if grown > MAX_BODY_BYTES && grown > body.len() {
                    return ok(Status::BadArgument);
                }
                body.splice(start..end, data);
                ok(Status::Ok)
            })
        },
    )?;
    Ok(())
}
