//! The harness on a plain proxy-wasm plugin (public `proxy-wasm` crate only, no
//! lateen-sdk): it passes, traps, loops and grows exactly as it would in the proxy.

use lateen_harness::{build_filter, Action, CallError, HarnessError, Plugin, Request};
use std::time::Duration;

fn trap_plugin() -> lateen_harness::PluginBuilder {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/plugins/trap");
    Plugin::load(build_filter(dir).expect("build the trap plugin"))
}

#[test]
fn a_plain_proxy_wasm_plugin_runs() {
    let p = trap_plugin().start().unwrap();
    let mut s = p.stream();
    assert_eq!(s.send_request(Request::get("/")).unwrap(), Action::Continue);
    assert_eq!(s.request_header("x-trap-plugin").as_deref(), Some("passed"));
}

#[test]
fn a_panic_is_a_trap_and_the_instance_is_then_unusable() {
    let p = trap_plugin().start().unwrap();
    let mut s = p.stream();
    let err = s
        .send_request(Request::get("/").header("x-trap", "1"))
        .unwrap_err();
    assert!(
        matches!(
            &err,
            HarnessError::Callback(CallError::Trap {
                phase: "on_request_headers",
                ..
            })
        ),
        "{err}"
    );
    assert!(p.broken().is_some());
    assert!(
        p.try_stream().is_err(),
        "a broken instance takes no new streams"
    );
}

#[test]
fn an_endless_loop_is_stopped_at_the_callback_deadline() {
    let p = trap_plugin()
        .callback_timeout(Duration::from_millis(50))
        .start()
        .unwrap();
    let mut s = p.stream();
    let err = s
        .send_request(Request::get("/").header("x-loop", "1"))
        .unwrap_err();
    assert!(
        matches!(&err, HarnessError::Callback(CallError::Timeout { .. })),
        "{err}"
    );
}

#[test]
fn a_memory_bomb_stops_at_the_memory_cap() {
    let p = trap_plugin().memory_limit(8 << 20).start().unwrap();
    let mut s = p.stream();
    let err = s
        .send_request(Request::get("/").header("x-grow", "1"))
        .unwrap_err();
    assert!(
        matches!(&err, HarnessError::Callback(CallError::Trap { .. })),
        "{err}"
    );
    assert!(p.memory_bytes() <= 8 << 20);
}

#[test]
fn answering_an_unknown_call_is_an_error() {
    let p = trap_plugin().start().unwrap();
    assert!(matches!(
        p.answer_http_call(42, None),
        Err(HarnessError::NoSuchCall(42))
    ));
}
