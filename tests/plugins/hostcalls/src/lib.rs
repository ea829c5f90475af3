//! A proxy-wasm module that turns its plugin configuration into host calls, for fuzzing the
//! host-call boundary (`tests/fuzz`, target `host_calls`). The configuration is read as
//! 21-byte ops: a selector byte picks one of the ABI's host functions or WASI's, then five
//! little-endian u32 arguments. An argument with its top bit set is passed as it is (any
//! pointer, any length); otherwise it is folded into an in-bounds place in a scratch buffer
//! that holds the configuration's first bytes, so valid calls are made too. The ops run in
//! `on_configure` (root context) and again in each stream's header callbacks.

// The whole point of this plugin: it calls the raw proxy-wasm imports with arbitrary pointers.
#![allow(unsafe_code)]

use std::cell::RefCell;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, p: usize, n: usize) -> u32;
    fn proxy_get_property(pp: usize, pn: usize, rp: usize, rn: usize) -> u32;
    fn proxy_set_property(pp: usize, pn: usize, vp: usize, vn: usize) -> u32;
    fn proxy_get_header_map_value(t: u32, kp: usize, kn: usize, rp: usize, rn: usize) -> u32;
    fn proxy_add_header_map_value(t: u32, kp: usize, kn: usize, vp: usize, vn: usize) -> u32;
    fn proxy_replace_header_map_value(t: u32, kp: usize, kn: usize, vp: usize, vn: usize) -> u32;
    fn proxy_remove_header_map_value(t: u32, kp: usize, kn: usize) -> u32;
    fn proxy_get_header_map_pairs(t: u32, rp: usize, rn: usize) -> u32;
    fn proxy_set_header_map_pairs(t: u32, p: usize, n: usize) -> u32;
    fn proxy_get_header_map_size(t: u32, rn: usize) -> u32;
    fn proxy_get_buffer_bytes(t: u32, start: usize, max: usize, rp: usize, rn: usize) -> u32;
    fn proxy_get_buffer_status(t: u32, rn: usize, rflags: usize) -> u32;
    fn proxy_set_buffer_bytes(t: u32, start: usize, size: usize, p: usize, n: usize) -> u32;
    fn proxy_get_shared_data(kp: usize, kn: usize, rp: usize, rn: usize, rcas: usize) -> u32;
    fn proxy_set_shared_data(kp: usize, kn: usize, vp: usize, vn: usize, cas: u32) -> u32;
    fn proxy_register_shared_queue(np: usize, nn: usize, rid: usize) -> u32;
    fn proxy_resolve_shared_queue(vp: usize, vn: usize, np: usize, nn: usize, rid: usize) -> u32;
    fn proxy_enqueue_shared_queue(id: u32, vp: usize, vn: usize) -> u32;
    fn proxy_dequeue_shared_queue(id: u32, rp: usize, rn: usize) -> u32;
    fn proxy_define_metric(t: u32, np: usize, nn: usize, rid: usize) -> u32;
    fn proxy_increment_metric(id: u32, by: i64) -> u32;
    fn proxy_record_metric(id: u32, v: u64) -> u32;
    fn proxy_get_metric(id: u32, rv: usize) -> u32;
    fn proxy_http_call(
        up: usize,
        un: usize,
        hp: usize,
        hn: usize,
        bp: usize,
        bn: usize,
        tp: usize,
        tn: usize,
        timeout: u32,
        rtoken: usize,
    ) -> u32;
    fn proxy_send_local_response(
        status: u32,
        dp: usize,
        dn: usize,
        bp: usize,
        bn: usize,
        hp: usize,
        hn: usize,
        grpc: i32,
    ) -> u32;
    fn proxy_set_tick_period_milliseconds(ms: u32) -> u32;
    fn proxy_get_current_time_nanoseconds(rt: usize) -> u32;
    fn proxy_set_effective_context(ctx: u32) -> u32;
    fn proxy_continue_stream(t: u32) -> u32;
    fn proxy_close_stream(t: u32) -> u32;
    fn proxy_get_log_level(rl: usize) -> u32;
    fn proxy_call_foreign_function(
        np: usize,
        nn: usize,
        ap: usize,
        an: usize,
        rp: usize,
        rn: usize,
    ) -> u32;
    fn proxy_clear_route_cache() -> u32;
    fn proxy_continue_request() -> u32;
    fn proxy_continue_response() -> u32;
    fn proxy_done() -> u32;
    fn proxy_get_status(rc: usize, rp: usize, rn: usize) -> u32;
    fn proxy_grpc_call(
        up: usize,
        un: usize,
        sp: usize,
        sn: usize,
        mp: usize,
        mn: usize,
        ip: usize,
        in_: usize,
        bp: usize,
        bn: usize,
        timeout: u32,
        rtoken: usize,
    ) -> u32;
    fn proxy_grpc_stream(
        up: usize,
        un: usize,
        sp: usize,
        sn: usize,
        mp: usize,
        mn: usize,
        ip: usize,
        in_: usize,
        rtoken: usize,
    ) -> u32;
    fn proxy_grpc_send(token: u32, p: usize, n: usize, eos: u32) -> u32;
    fn proxy_grpc_cancel(token: u32) -> u32;
    fn proxy_grpc_close(token: u32) -> u32;
}

// The WASI preview1 functions a plugin's std may import.
#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn fd_write(fd: u32, iovs: usize, n: usize, rwritten: usize) -> u32;
    fn fd_read(fd: u32, iovs: usize, n: usize, rread: usize) -> u32;
    fn fd_seek(fd: u32, offset: i64, whence: u32, rpos: usize) -> u32;
    fn fd_fdstat_get(fd: u32, rstat: usize) -> u32;
    fn fd_prestat_get(fd: u32, rstat: usize) -> u32;
    fn fd_prestat_dir_name(fd: u32, p: usize, n: usize) -> u32;
    fn random_get(p: usize, n: usize) -> u32;
    fn clock_time_get(id: u32, precision: u64, rt: usize) -> u32;
    fn clock_res_get(id: u32, rt: usize) -> u32;
    fn environ_sizes_get(rcount: usize, rsize: usize) -> u32;
    fn environ_get(ptrs: usize, buf: usize) -> u32;
    fn args_sizes_get(rcount: usize, rsize: usize) -> u32;
    fn args_get(ptrs: usize, buf: usize) -> u32;
    fn poll_oneoff(subs: usize, events: usize, n: usize, rn: usize) -> u32;
}

/// The name of the host's one foreign function, so that fuzzed calls reach it.
const OBSERVE: &[u8] = b"lateen_observe_request";

const SCRATCH: usize = 4096;
/// Ops run per callback, so one input cannot make a run crawl.
const MAX_OPS: usize = 48;

thread_local! {
    static OPS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
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
pub extern "C" fn proxy_on_configure(_root: u32, size: usize) -> u32 {
    let mut p: *mut u8 = std::ptr::null_mut();
    let mut n: usize = 0;
    // SAFETY: the host writes an allocation of ours and its length.
    let config = unsafe {
        if proxy_get_buffer_bytes(
            7,
            0,
            size,
            &mut p as *mut _ as usize,
            &mut n as *mut _ as usize,
        ) != 0
            || p.is_null()
        {
            return 1;
        }
        Vec::from_raw_parts(p, n, n)
    };
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        let k = config.len().min(SCRATCH);
        b[..k].copy_from_slice(&config[..k]);
    });
    OPS.with(|o| *o.borrow_mut() = config);
    run();
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context: u32, _headers: usize, _eos: u32) -> u32 {
    run();
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_context: u32, _headers: usize, _eos: u32) -> u32 {
    run();
    0
}

fn run() {
    let ops = OPS.with(|o| o.borrow().clone());
    let base = BUF.with(|b| b.borrow_mut().as_mut_ptr() as usize);
    for op in ops.chunks_exact(21).take(MAX_OPS) {
        let a: [u32; 5] = std::array::from_fn(|i| {
            u32::from_le_bytes([op[1 + i * 4], op[2 + i * 4], op[3 + i * 4], op[4 + i * 4]])
        });
        call(op[0], a, base);
    }
}

/// A pointer: raw when the top bit is set, else inside the scratch buffer.
fn ptr(a: u32, base: usize) -> usize {
    if a & 0x8000_0000 != 0 {
        (a & 0x7FFF_FFFF) as usize
    } else {
        base + (a as usize % SCRATCH)
    }
}

/// A length: raw when the top bit is set, else small enough to stay in the buffer mostly.
fn len(a: u32) -> usize {
    if a & 0x8000_0000 != 0 {
        (a & 0x7FFF_FFFF) as usize
    } else {
        a as usize % (SCRATCH / 4)
    }
}

fn call(sel: u8, a: [u32; 5], base: usize) {
    let p = |i: usize| ptr(a[i], base);
    let n = |i: usize| len(a[i]);
    // SAFETY: the host checks every pointer and length; this module only passes them.
    unsafe {
        match sel % 56 {
            0 => proxy_log(a[0] % 7, p(1), n(2)),
            1 => proxy_get_property(p(0), n(1), p(2), p(3)),
            2 => proxy_set_property(p(0), n(1), p(2), n(3)),
            3 => proxy_get_header_map_value(a[0] % 8, p(1), n(2), p(3), p(4)),
            4 => proxy_add_header_map_value(a[0] % 8, p(1), n(2), p(3), n(4)),
            5 => proxy_replace_header_map_value(a[0] % 8, p(1), n(2), p(3), n(4)),
            6 => proxy_remove_header_map_value(a[0] % 8, p(1), n(2)),
            7 => proxy_get_header_map_pairs(a[0] % 8, p(1), p(2)),
            8 => proxy_set_header_map_pairs(a[0] % 8, p(1), n(2)),
            9 => proxy_get_header_map_size(a[0] % 8, p(1)),
            10 => proxy_get_buffer_bytes(a[0] % 10, n(1), n(2), p(3), p(4)),
            11 => proxy_get_buffer_status(a[0] % 10, p(1), p(2)),
            12 => proxy_set_buffer_bytes(a[0] % 10, n(1), n(2), p(3), n(4)),
            13 => proxy_get_shared_data(p(0), n(1), p(2), p(3), p(4)),
            14 => proxy_set_shared_data(p(0), n(1), p(2), n(3), a[4] % 4),
            15 => proxy_register_shared_queue(p(0), n(1), p(2)),
            16 => proxy_resolve_shared_queue(p(0), n(1), p(2), n(3), p(4)),
            17 => proxy_enqueue_shared_queue(a[0] % 8, p(1), n(2)),
            18 => proxy_dequeue_shared_queue(a[0] % 8, p(1), p(2)),
            19 => proxy_define_metric(a[0] % 4, p(1), n(2), p(3)),
            20 => proxy_increment_metric(a[0] % 8, i64::from(a[1] as i32)),
            21 => proxy_record_metric(a[0] % 8, u64::from(a[1])),
            22 => proxy_get_metric(a[0] % 8, p(1)),
            23 => proxy_http_call(
                p(0),
                n(1),
                p(2),
                n(3),
                p(4),
                n(0),
                p(1),
                n(2),
                a[3] % 100,
                p(4),
            ),
            24 => proxy_send_local_response(
                a[0] % 600,
                p(1),
                n(2),
                p(3),
                n(4),
                p(0),
                n(1),
                a[2] as i32 % 20,
            ),
            25 => proxy_set_tick_period_milliseconds(a[0] % 1000),
            26 => proxy_get_current_time_nanoseconds(p(0)),
            27 => proxy_set_effective_context(a[0] % 8),
            28 => proxy_continue_stream(a[0] % 4),
            29 => proxy_close_stream(a[0] % 4),
            30 => proxy_get_log_level(p(0)),
            31 if a[0] & 1 == 0 => proxy_call_foreign_function(
                OBSERVE.as_ptr() as usize,
                OBSERVE.len(),
                p(1),
                n(2),
                p(3),
                p(4),
            ),
            31 => proxy_call_foreign_function(p(0), n(1), p(2), n(3), p(4), p(0)),
            32 => proxy_clear_route_cache(),
            33 => proxy_continue_request(),
            34 => proxy_continue_response(),
            35 => proxy_done(),
            36 => proxy_get_status(p(0), p(1), p(2)),
            37 => proxy_grpc_call(
                p(0),
                n(1),
                p(2),
                n(3),
                p(4),
                n(0),
                p(1),
                n(2),
                p(3),
                n(4),
                a[0] % 100,
                p(1),
            ),
            38 => proxy_grpc_stream(p(0), n(1), p(2), n(3), p(4), n(0), p(1), n(2), p(3)),
            39 => proxy_grpc_send(a[0], p(1), n(2), a[3] & 1),
            40 => proxy_grpc_cancel(a[0]),
            41 => proxy_grpc_close(a[0]),
            42 => fd_write(a[0] % 4, p(1), n(2) % 64, p(3)),
            43 => fd_read(a[0] % 4, p(1), n(2), p(3)),
            44 => fd_seek(a[0] % 4, i64::from(a[1] as i32), a[2] % 3, p(3)),
            45 => fd_fdstat_get(a[0] % 4, p(1)),
            46 => fd_prestat_get(a[0] % 4, p(1)),
            47 => fd_prestat_dir_name(a[0] % 4, p(1), n(2)),
            48 => random_get(p(0), n(1)),
            49 => clock_time_get(a[0] % 5, u64::from(a[1]), p(2)),
            50 => clock_res_get(a[0] % 5, p(1)),
            51 => environ_sizes_get(p(0), p(1)),
            52 => environ_get(p(0), p(1)),
            53 => args_sizes_get(p(0), p(1)),
            54 => args_get(p(0), p(1)),
            _ => poll_oneoff(p(0), p(1), n(2), p(3)),
        };
    }
}
