//! Shared data (with CAS) and shared queues, process-wide.

use super::{give, guest_fault, ok, read, read_string, write_u32, Ctx};
use crate::shared::{Enqueued, SetResult};
use crate::state::HostState;
use crate::types::Status;
use bytes::Bytes;
use wasmtime::{Linker, Result};

pub(super) fn define(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Ctx<'_>,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_size: i32,
         ret_cas: i32|
         -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let key = read_string(&c, kp, kl)?;
                match c.data().shared.get(&key) {
                    Some((v, cas)) => {
                        give(&mut c, &v, ret_ptr, ret_size)?;
                        write_u32(&mut c, ret_cas, cas)?;
                        ok(Status::Ok)
                    }
                    None => ok(Status::NotFound),
                }
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |c: Ctx<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let key = read_string(&c, kp, kl)?;
                // remove_shared_data sends a null value; an empty Vec comes with a dangling pointer.
                let value = if vp == 0 && vl == 0 {
                    None
                } else {
                    Some(Bytes::from(read(&c, vp, vl)?))
                };
                match c.data().shared.set(&key, value, cas as u32) {
                    SetResult::Ok => ok(Status::Ok),
                    SetResult::CasMismatch => ok(Status::CasMismatch),
                    SetResult::Full => {
                        tracing::warn!(target: "lateen::plugin", plugin = %c.data().plugin.name,
                            "set_shared_data refused: shared data is at its budget");
                        ok(Status::InternalFailure)
                    }
                }
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: Ctx<'_>, np: i32, nl: i32, ret_id: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let name = read_string(&c, np, nl)?;
                let Some(id) = c
                    .data()
                    .shared
                    .register_queue(&c.data().plugin.vm_id, &name)
                else {
                    tracing::warn!(target: "lateen::plugin", plugin = %c.data().plugin.name,
                        "register_shared_queue refused: too many queues");
                    return ok(Status::InternalFailure);
                };
                write_u32(&mut c, ret_id, id)?;
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: Ctx<'_>, vp: i32, vl: i32, np: i32, nl: i32, ret_id: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let vm_id = read_string(&c, vp, vl)?;
                let name = read_string(&c, np, nl)?;
                match c.data().shared.resolve_queue(&vm_id, &name) {
                    Some(id) => {
                        write_u32(&mut c, ret_id, id)?;
                        ok(Status::Ok)
                    }
                    None => ok(Status::NotFound),
                }
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: Ctx<'_>, id: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                match c.data().shared.dequeue(id as u32) {
                    None => ok(Status::NotFound),
                    Some(None) => ok(Status::Empty),
                    Some(Some(v)) => {
                        give(&mut c, &v, ret_ptr, ret_size)?;
                        ok(Status::Ok)
                    }
                }
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |c: Ctx<'_>, id: i32, vp: i32, vl: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let v = Bytes::from(read(&c, vp, vl)?);
                match c.data().shared.enqueue(id as u32, v) {
                    Enqueued::Ok => ok(Status::Ok),
                    Enqueued::NotFound => ok(Status::NotFound),
                    Enqueued::Full => ok(Status::InternalFailure),
                }
            })
        },
    )?;
    Ok(())
}
