//! The proxy-wasm ABI 0.2.1 host functions (module `env`) and the WASI preview1 subset
//! (module `wasi_snapshot_preview1`), one file per family. Every function a Rust-SDK plugin
//! imports is defined, so unmodified Envoy plugins link; each answers only statuses the
//! SDK accepts.

mod buffers;
mod calls;
pub mod headers;
mod metrics;
mod misc;
mod properties;
mod shared;
mod wasi;

use super::state::HostState;
use super::types::Status;
use wasmtime::{Caller, Linker, Result};

pub use headers::{decode_map, encode_map};
pub(crate) use misc::plugin_log;
pub use properties::property;

/// A plugin metric by id, cached in the VM (shared with the component host functions).
pub(crate) fn metric(s: &mut HostState, id: u32) -> Option<std::sync::Arc<super::shared::Metric>> {
    metrics::lookup(s, id as i32)
}

/// Adds every host function to `linker`.
pub fn define(linker: &mut Linker<HostState>) -> Result<()> {
    misc::define(linker)?;
    headers::define(linker)?;
    buffers::define(linker)?;
    properties::define(linker)?;
    calls::define(linker)?;
    shared::define(linker)?;
    metrics::define(linker)?;
    wasi::define(linker)?;
    Ok(())
}

pub(crate) type Ctx<'a> = Caller<'a, HostState>;

pub(crate) fn ok(s: Status) -> Result<i32> {
    Ok(s as i32)
}

/// A bad argument from the plugin (a buffer outside its memory, a string that is not
/// UTF-8): the host call fails with a status, and the plugin, not the host, decides what
/// to do, as in Envoy.
#[derive(Debug)]
pub(crate) struct GuestFault(&'static str);

impl std::fmt::Display for GuestFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for GuestFault {}

thread_local! {
    /// Set while the host runs the plugin's allocator (handing it data). A host call made
    /// from there would re-enter a host function that is half done, so it is refused.
    static IN_ALLOCATOR: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs a proxy-wasm host call, answering a guest fault with `BadArgument`, and a call from
/// inside the plugin's allocator with `InternalFailure`.
pub(crate) fn guest_fault(call: impl FnOnce() -> Result<i32>) -> Result<i32> {
    if IN_ALLOCATOR.get() {
        return ok(Status::InternalFailure);
    }
    match call() {
        Err(e) if e.is::<GuestFault>() => ok(Status::BadArgument),
        other => other,
    }
}

/// Runs a WASI call, answering a guest fault with `EFAULT`, and a call from inside the
/// plugin's allocator with `ENOTSUP`.
pub(crate) fn wasi_fault(call: impl FnOnce() -> Result<i32>) -> Result<i32> {
    const EFAULT: i32 = 21;
    const ENOTSUP: i32 = 58;
    if IN_ALLOCATOR.get() {
        return Ok(ENOTSUP);
    }
    match call() {
        Err(e) if e.is::<GuestFault>() => Ok(EFAULT),
        other => other,
    }
}

fn memory(caller: &Ctx<'_>) -> Result<wasmtime::Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::format_err!("plugin exports no memory"))
}

/// Borrows `len` bytes at `ptr` of guest memory, without a copy: host calls that only look
/// something up (a header, a property) read their argument in place. A zero length is
/// empty whatever the pointer (the SDK passes null or dangling pointers for empty slices).
pub(crate) fn borrow<'a>(caller: &'a Ctx<'_>, ptr: i32, len: i32) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    let mem = memory(caller)?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.data(caller)
        .get(start..start.saturating_add(len))
        .ok_or_else(|| GuestFault("plugin passed an out-of-bounds buffer").into())
}

/// Borrows `len` bytes at `ptr` of guest memory to write into, checked first.
pub(crate) fn borrow_mut<'a>(caller: &'a mut Ctx<'_>, ptr: i32, len: i32) -> Result<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    let mem = memory(caller)?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.data_mut(caller)
        .get_mut(start..start.saturating_add(len))
        .ok_or_else(|| GuestFault("plugin passed an out-of-bounds buffer").into())
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub(crate) fn read(caller: &Ctx<'_>, ptr: i32, len: i32) -> Result<Vec<u8>> {
    borrow(caller, ptr, len).map(<[u8]>::to_vec)
}

/// Borrows a UTF-8 string argument in place.
pub(crate) fn borrow_str<'a>(caller: &'a Ctx<'_>, ptr: i32, len: i32) -> Result<&'a str> {
    std::str::from_utf8(borrow(caller, ptr, len)?)
        .map_err(|_| GuestFault("plugin passed a string that is not UTF-8").into())
}

pub(crate) fn read_string(caller: &Ctx<'_>, ptr: i32, len: i32) -> Result<String> {
    borrow_str(caller, ptr, len).map(str::to_owned)
}

pub(crate) fn write_bytes(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> Result<()> {
    let mem = memory(caller)?;
    mem.write(caller, ptr as u32 as usize, bytes)
        .map_err(|_| GuestFault("plugin passed an out-of-bounds return pointer").into())
}

pub(crate) fn write_u32(caller: &mut Ctx<'_>, ptr: i32, v: u32) -> Result<()> {
    write_bytes(caller, ptr, &v.to_le_bytes())
}

pub(crate) fn write_u64(caller: &mut Ctx<'_>, ptr: i32, v: u64) -> Result<()> {
    write_bytes(caller, ptr, &v.to_le_bytes())
}

/// Hands `data` to the plugin: allocates exactly `data.len()` bytes with the plugin's own
/// allocator (the SDK frees it as such), copies, and writes pointer and size. Empty data is
/// returned as a null pointer, which the SDK reads as "no data".
pub(crate) fn give(caller: &mut Ctx<'_>, data: &[u8], ret_ptr: i32, ret_size: i32) -> Result<()> {
    let ptr = if data.is_empty() {
        0
    } else {
        // Taken out for the call and put back, not cloned: a TypedFunc clone costs atomic
        // reference counts in the engine's type registry, and this runs per host call.
        let alloc = caller
            .data_mut()
            .alloc
            .take()
            .ok_or_else(|| wasmtime::format_err!("plugin exports no allocator"))?;
        IN_ALLOCATOR.set(true);
        let p = alloc.call(&mut *caller, data.len() as i32);
        IN_ALLOCATOR.set(false);
        caller.data_mut().alloc = Some(alloc);
        let p = p?;
        if p == 0 {
            wasmtime::bail!("plugin allocator failed for {} bytes", data.len());
        }
        write_bytes(caller, p, data)?;
        p
    };
    write_u32(caller, ret_ptr, ptr as u32)?;
    write_u32(caller, ret_size, data.len() as u32)
}
