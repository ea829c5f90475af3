//! Outbound calls: http_call to named clusters; gRPC answers with the error statuses the SDK
//! hands back to the plugin as `Err`, and so does a foreign function other than Lateen's.

use super::{borrow, guest_fault, headers::decode_map, ok, read, read_string, write_u32, Ctx};
use crate::state::{HostState, PendingCall};
use crate::types::Status;
use bytes::Bytes;
use std::time::Duration;
use wasmtime::{Linker, Result};

pub(super) fn define(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Ctx<'_>,
         up: i32,
         upl: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         tp: i32,
         tl: i32,
         timeout_ms: i32,
         ret_token: i32|
         -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let upstream = read_string(&c, up, upl)?;
                let Some(headers) = decode_map(&read(&c, hp, hl)?) else {
                    return ok(Status::BadArgument);
                };
                let body = Bytes::from(read(&c, bp, bl)?);
                if decode_map(&read(&c, tp, tl)?).is_none() {
                    return ok(Status::BadArgument);
                }
                // Envoy requires these three pseudo-headers on a callout.
                for required in [":method", ":path", ":authority"] {
                    if !headers.iter().any(|(k, _)| k == required) {
                        tracing::warn!(target: "lateen::plugin", plugin = %c.data().plugin.name,
                        "http_call to {upstream} lacks {required}");
                        return ok(Status::BadArgument);
                    }
                }
                let Some(cluster) = c.data().clusters.resolve(&upstream) else {
                    tracing::warn!(target: "lateen::plugin", plugin = %c.data().plugin.name,
                    "http_call to unknown cluster {upstream}");
                    return ok(Status::BadArgument);
                };
                let s = c.data_mut();
                let token = s.next_token;
                s.next_token = s.next_token.wrapping_add(1).max(1);
                s.pending_calls.push(PendingCall {
                    token,
                    context_id: s.active_context,
                    cluster,
                    headers,
                    body,
                    timeout: Duration::from_millis(u64::from(timeout_ms as u32).max(1)),
                });
                write_u32(&mut c, ret_token, token)?;
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |_: Ctx<'_>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32|
         -> Result<i32> { guest_fault(|| -> Result<i32> { ok(Status::InternalFailure) }) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_: Ctx<'_>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32|
         -> Result<i32> { guest_fault(|| -> Result<i32> { ok(Status::InternalFailure) }) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> { ok(Status::NotFound) })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |_: Ctx<'_>, _: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> { ok(Status::NotFound) })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_close",
        |_: Ctx<'_>, _: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> { ok(Status::NotFound) })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: Ctx<'_>, ret_code: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                write_u32(&mut c, ret_code, 0)?;
                write_u32(&mut c, ret_ptr, 0)?;
                write_u32(&mut c, ret_size, 0)?;
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: Ctx<'_>,
         np: i32,
         nl: i32,
         ap: i32,
         al: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                if borrow(&c, np, nl)? != super::metrics::OBSERVE_REQUEST.as_bytes() {
                    return ok(Status::NotFound);
                }
                let args = read(&c, ap, al)?;
                let status = super::metrics::observe_request(c.data_mut(), &args);
                if status == Status::Ok {
                    // Nothing to answer: an empty result.
                    write_u32(&mut c, ret_ptr, 0)?;
                    write_u32(&mut c, ret_size, 0)?;
                }
                ok(status)
            })
        },
    )?;
    Ok(())
}
