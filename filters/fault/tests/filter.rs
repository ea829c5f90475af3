//! The fault filter's built .wasm on Lateen's runtime, through the filter test harness.

use lateen_harness::{build_filter, Action, HarnessError, LogLevel, Plugin, Request, WasmError};
use serde_json::json;
use std::time::Duration;

fn plugin(config: serde_json::Value) -> Plugin {
    let wasm = build_filter(env!("CARGO_MANIFEST_DIR")).expect("build the fault filter");
    Plugin::load(wasm)
        .name("lateen/fault")
        .config_json(&config)
        .start()
        .expect("start the fault filter")
}

fn on_route(p: &Plugin, route: &str) -> (lateen_harness::Stream, Action) {
    let mut s = p.stream();
    s.set_property("lateen.route.id", route.to_string());
    let action = s.send_request(Request::get("/ratings/1")).expect("request");
    (s, action)
}

#[test]
fn abort_answers_with_the_status_and_envoys_body_on_its_route_only() {
    let p = plugin(json!({"routes": {
        "default/ratings#0": {"abort": {"httpStatus": 503, "percentage": 100.0}}
    }}));
    let (s, action) = on_route(&p, "default/ratings#0");
    assert_eq!(action, Action::Pause);
    let reply = s.local_response().expect("an abort reply");
    assert_eq!(reply.status, 503);
    assert_eq!(&reply.body[..], b"fault filter abort");
    assert_eq!(s.property("lateen.response_flags").as_deref(), Some("FI"));

    let (s, action) = on_route(&p, "default/reviews#0");
    assert_eq!(action, Action::Continue);
    assert!(s.local_response().is_none());
    assert_eq!(s.property("lateen.response_flags"), None);
}

#[test]
fn grpc_abort_is_http_200_with_grpc_status() {
    let p = plugin(json!({"routes": {
        "default/grpc#0": {"abort": {"grpcStatus": 14, "percentage": 100.0}}
    }}));
    let (s, _) = on_route(&p, "default/grpc#0");
    let reply = s.local_response().expect("an abort reply");
    assert_eq!(reply.status, 200);
    let grpc = reply.headers.iter().find(|(k, _)| k == "grpc-status");
    assert_eq!(grpc.map(|(_, v)| &v[..]), Some(&b"14"[..]));
}

#[test]
fn delay_pauses_until_the_clock_passes_it_then_resumes() {
    let p = plugin(json!({"routes": {
        "default/ratings#0": {"delay": {"fixedDelayMs": 2000, "percentage": 100.0}}
    }}));
    let (s, action) = on_route(&p, "default/ratings#0");
    assert_eq!(action, Action::Pause);
    assert_eq!(s.property("lateen.response_flags").as_deref(), Some("DI"));
    assert!(p.tick_period().is_some(), "the delay needs ticks");

    p.advance_clock(Duration::from_millis(1500));
    assert!(p.tick().unwrap());
    assert!(!s.request_resumed(), "resumed 500 ms early");

    p.advance_clock(Duration::from_millis(600));
    assert!(p.tick().unwrap());
    assert!(s.request_resumed());
    assert!(s.local_response().is_none());
    assert_eq!(p.tick_period(), None, "ticks stop when nobody sleeps");
}

#[test]
fn delay_then_abort_answers_after_the_delay() {
    let p = plugin(json!({"routes": {"default/ratings#0": {
        "delay": {"fixedDelayMs": 100, "percentage": 100.0},
        "abort": {"httpStatus": 418, "percentage": 100.0}
    }}}));
    let (s, action) = on_route(&p, "default/ratings#0");
    assert_eq!(action, Action::Pause);
    assert!(s.local_response().is_none(), "aborted before the delay");
    p.advance_clock(Duration::from_millis(100));
    p.tick().unwrap();
    assert_eq!(s.local_response().map(|r| r.status), Some(418));
    assert_eq!(
        s.property("lateen.response_flags").as_deref(),
        Some("DI,FI")
    );
}

#[test]
fn zero_percent_never_fires() {
    let p = plugin(json!({"routes": {
        "default/ratings#0": {"abort": {"httpStatus": 503, "percentage": 0.0}}
    }}));
    for _ in 0..200 {
        let (s, action) = on_route(&p, "default/ratings#0");
        assert_eq!(action, Action::Continue);
        assert!(s.local_response().is_none());
    }
}

#[test]
fn a_config_with_an_unknown_field_fails_the_schema() {
    let wasm = build_filter(env!("CARGO_MANIFEST_DIR")).unwrap();
    let err = Plugin::load(wasm)
        .config_json(&json!({"routes": {"r": {"abort": {"httpStatuss": 503, "percentage": 1.0}}}}))
        .start()
        .err()
        .expect("rejected");
    let HarnessError::Schema { field, message } = &err else {
        panic!("{err}");
    };
    assert_eq!(field, ".routes.r.abort", "{err}");
    assert!(message.contains("httpStatuss"), "{err}");
}

#[test]
fn a_config_with_an_unknown_field_is_rejected_and_the_log_names_it() {
    let wasm = build_filter(env!("CARGO_MANIFEST_DIR")).unwrap();
    let err = Plugin::load(wasm)
        .skip_schema()
        .config_json(&json!({"routes": {"r": {"abort": {"httpStatuss": 503, "percentage": 1.0}}}}))
        .start()
        .err()
        .expect("rejected");
    let HarnessError::Load { source, logs } = &err else {
        panic!("{err}");
    };
    assert!(matches!(source, WasmError::ConfigureRejected), "{err}");
    assert!(
        logs.iter()
            .any(|l| l.level == LogLevel::Error && l.message.contains("httpStatuss")),
        "{err}"
    );
}
