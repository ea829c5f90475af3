//! A hostile proxy-wasm plugin, on the raw ABI (no SDK): on every request it makes host
//! calls with pointers and lengths outside its memory, and reports the status of each in
//! the request header `x-hostile` (comma-separated). A host must answer such calls with an
//! error status (BadArgument, 2) rather than crash or kill the plugin. The last status is
//! that of a host call made from inside the plugin's allocator, which a host must refuse
//! (InternalFailure, 10). Then WASI calls a host must refuse without allocating for them:
//! `random_get` over 64 KiB (EINVAL, 28) and into memory it does not have (EFAULT, 21),
//! and an `fd_write` whose iovecs all point at one large buffer (written, the log capped: 0).

// The whole point of this plugin: it calls the raw proxy-wasm imports with bad pointers on purpose.
#![allow(unsafe_code)]

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_set_property(path: *const u8, path_size: usize, value: *const u8, size: usize) -> u32;
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn random_get(buf: *mut u8, len: usize) -> u16;
    fn fd_write(fd: u32, iovs: *const [usize; 2], n: usize, written: *mut usize) -> u16;
}

/// An address past any plugin memory (the host caps memories far below 4 GiB).
const FAR: usize = 0xFFFF_FF00;

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// When set, the allocator makes a host call, and keeps the status it got here.
static mut CALL_FROM_MALLOC: bool = false;
static mut STATUS_IN_MALLOC: u32 = u32::MAX;

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    // SAFETY: a wasm instance is single-threaded.
    unsafe {
        if CALL_FROM_MALLOC {
            let msg = b"from inside malloc";
            STATUS_IN_MALLOC = proxy_log(2, msg.as_ptr(), msg.len());
        }
    }
    let mut v = Vec::<u8>::with_capacity(size);
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context: u32, _root: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context: u32, _headers: usize, _eos: u32) -> u32 {
    let mut out_data: *mut u8 = std::ptr::null_mut();
    let mut out_size: usize = 0;
    let path = b":path";
    // SAFETY: the pointers are deliberately bad for the host; this module never
    // dereferences them itself.
    let statuses = unsafe {
        [
            // A log message outside memory.
            proxy_log(2, FAR as *const u8, 64),
            // A header name outside memory.
            proxy_get_header_map_value(0, FAR as *const u8, 16, &mut out_data, &mut out_size),
            // Return pointers outside memory.
            proxy_get_header_map_value(
                0,
                path.as_ptr(),
                path.len(),
                FAR as *mut *mut u8,
                FAR as *mut usize,
            ),
            // A length running past the end of memory.
            proxy_set_property(path.as_ptr(), path.len(), path.as_ptr(), usize::MAX >> 1),
        ]
    };
    // A host call from inside the allocator: the host hands us `:path` through it.
    // SAFETY: as above, and a wasm instance is single-threaded.
    let in_malloc = unsafe {
        CALL_FROM_MALLOC = true;
        proxy_get_header_map_value(0, path.as_ptr(), path.len(), &mut out_data, &mut out_size);
        CALL_FROM_MALLOC = false;
        STATUS_IN_MALLOC
    };
    let mut report: Vec<String> = statuses.iter().map(u32::to_string).collect();
    report.push(in_malloc.to_string());
    let mut small = [0u8; 16];
    let big = vec![b'x'; 1 << 20];
    let iovs = vec![[big.as_ptr() as usize, big.len()]; 4096];
    let mut written = 0usize;
    // SAFETY: as above.
    let wasi = unsafe {
        [
            random_get(small.as_mut_ptr(), 1 << 30),
            random_get(FAR as *mut u8, 64),
            fd_write(2, iovs.as_ptr(), iovs.len(), &mut written),
        ]
    };
    report.extend(wasi.iter().map(u16::to_string));
    let report = report.join(",");
    let name = b"x-hostile";
    // SAFETY: valid pointers into this module's memory.
    unsafe {
        proxy_add_header_map_value(0, name.as_ptr(), name.len(), report.as_ptr(), report.len());
    }
    0
}
