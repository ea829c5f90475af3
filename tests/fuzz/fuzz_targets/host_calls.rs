//! The host-call boundary: the `test-plugin-hostcalls` guest makes the host calls the input
//! spells (any pointers, lengths, map types, ids), from a root context and from a stream.
//! The host must answer each with a status or a trap of that instance, never a panic.
//! LATEEN_FUZZ_GUEST names the guest module (built by tests/fuzz/run.sh).
#![no_main]

use bytes::Bytes;
use lateen_wasm::{CompiledModule, PluginIdentity, Runtime, RuntimeOptions, StreamState, Vm};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

struct Guest {
    rt: Runtime,
    module: CompiledModule,
    identity: Arc<PluginIdentity>,
}

fn guest() -> &'static Guest {
    static G: OnceLock<Guest> = OnceLock::new();
    G.get_or_init(|| {
        let path = std::env::var("LATEEN_FUZZ_GUEST")
            .expect("LATEEN_FUZZ_GUEST: path of test_plugin_hostcalls.wasm");
        let bytes = std::fs::read(&path).expect("read the guest module");
        let rt = Runtime::new(RuntimeOptions {
            cache_dir: None,
            memory_limit: 16 << 20,
            callback_timeout: Duration::from_millis(200),
            pool_instances: 4,
        })
        .expect("runtime");
        let module = rt.compile(&bytes).expect("compile the guest");
        Guest {
            rt,
            module,
            identity: Arc::new(PluginIdentity {
                name: "fuzz/hostcalls".into(),
                root_id: String::new(),
                vm_id: "fuzz".into(),
                env: Vec::new(),
                vm_configuration: Bytes::new(),
            }),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let g = guest();
    let resolver = lateen_model::names(&Default::default(), Default::default());
    let Ok(mut vm) = Vm::new(&g.rt, &g.module, g.identity.clone(), resolver) else {
        return;
    };
    let Ok(root) = vm.create_root(Bytes::copy_from_slice(data)) else {
        return;
    };
    let Ok(ctx) = vm.create_stream(root) else {
        return;
    };
    let h = |k: &str, v: &str| (k.to_string(), Bytes::copy_from_slice(v.as_bytes()));
    let mut st = Box::new(StreamState {
        req_headers: vec![
            h(":method", "GET"),
            h(":path", "/fuzz?q=1"),
            h(":authority", "fuzz.test"),
            h("user-agent", "libFuzzer"),
        ],
        resp_headers: vec![h(":status", "200"), h("content-type", "text/plain")],
        ..Default::default()
    });
    if vm.on_request_headers(ctx, &mut st, false).is_ok() {
        let _ = vm.on_response_headers(ctx, &mut st, true);
    }
    let _ = vm.finish_stream(ctx, &mut st);
    let _ = vm.take_pending_calls();
    let _ = vm.take_tick_requests();
    let _ = vm.take_remote_actions();
});
