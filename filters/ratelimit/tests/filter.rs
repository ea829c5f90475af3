//! The rate-limit filter's built .wasm on Lateen's runtime, through the filter test
//! harness: local token buckets on the plugin's clock, and the global store's protocol.

use lateen_harness::{build_filter, Action, LogLevel, Plugin, Request, Response, Stream};
use serde_json::json;
use std::time::Duration;

fn ratelimit(rule: serde_json::Value) -> Plugin {
    let wasm = build_filter(env!("CARGO_MANIFEST_DIR")).expect("build the rate-limit filter");
    Plugin::load(wasm)
        .name("lateen/ratelimit")
        .config_json(&json!({"rules": [rule]}))
        .start()
        .expect("start the rate-limit filter")
}

fn as_user(p: &Plugin, user: &str) -> (Stream, Action) {
    let mut s = p.stream();
    s.set_property("lateen.route.id", "default/api#0");
    let action = s
        .send_request(Request::get("/api").header("x-user", user))
        .expect("request");
    (s, action)
}

#[test]
fn a_local_bucket_per_header_value_refills_on_the_plugins_clock() {
    let p = ratelimit(json!({
        "name": "per-user",
        "key": {"header": "x-user"},
        "tokenBucket": {"maxTokens": 3, "tokensPerFill": 1, "fillIntervalMs": 1000},
        "rateLimitHeaders": true
    }));
    for i in 0..3 {
        let (s, action) = as_user(&p, "alice");
        assert_eq!(action, Action::Continue, "request {i} is within the bucket");
        assert!(s.local_response().is_none());
    }
    let (s, action) = as_user(&p, "alice");
    assert_eq!(action, Action::Pause);
    let reply = s.local_response().expect("429");
    assert_eq!(reply.status, 429);
    assert_eq!(&reply.body[..], b"local_rate_limited");
    let header = |name: &str| {
        reply
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("x-envoy-ratelimited").as_deref(), Some("true"));
    assert_eq!(header("x-ratelimit-limit").as_deref(), Some("3"));
    assert_eq!(header("x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(s.property("lateen.response_flags").as_deref(), Some("RL"));

    // Another key has its own bucket.
    assert_eq!(as_user(&p, "bob").1, Action::Continue);

    // One fill interval later, one more token.
    p.advance_clock(Duration::from_millis(1000));
    let (mut s, action) = as_user(&p, "alice");
    assert_eq!(action, Action::Continue);
    s.send_response(Response::new(200)).unwrap();
    assert_eq!(
        s.response_header("x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(as_user(&p, "alice").1, Action::Pause);
}

#[test]
fn other_routes_are_not_limited() {
    let p = ratelimit(json!({
        "name": "one-route",
        "routes": ["default/other#0"],
        "tokenBucket": {"maxTokens": 1, "tokensPerFill": 1, "fillIntervalMs": 60000}
    }));
    for _ in 0..5 {
        assert_eq!(as_user(&p, "alice").1, Action::Continue);
    }
}

fn global() -> Plugin {
    ratelimit(json!({
        "name": "fleet",
        "mode": "global",
        "tokenBucket": {"maxTokens": 100, "tokensPerFill": 10, "fillIntervalMs": 1000}
    }))
}

#[test]
fn a_global_rule_asks_the_shared_store_and_obeys_its_answer() {
    let p = global();
    let (s, action) = as_user(&p, "alice");
    assert_eq!(action, Action::Pause, "waits for the store");
    let calls = s.http_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.cluster, "lateen.redis");
    assert_eq!(call.header(":method"), Some("POST"));
    assert_eq!(call.header(":path"), Some("/ratelimit/take"));
    let take: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(take["maxTokens"], 100);
    assert_eq!(take["fillIntervalMs"], 1000);
    assert!(take["key"]
        .as_str()
        .unwrap()
        .starts_with("lateen.rl.fleet."));

    p.answer_http_call(
        call.token,
        Some(Response::new(200).body(r#"{"allowed":false,"remaining":0,"resetMs":400}"#)),
    )
    .unwrap();
    assert_eq!(s.local_response().map(|r| r.status), Some(429));

    let (s, _) = as_user(&p, "alice");
    let token = s.http_calls()[0].token;
    p.answer_http_call(
        token,
        Some(Response::new(200).body(r#"{"allowed":true,"remaining":99,"resetMs":0}"#)),
    )
    .unwrap();
    assert!(s.request_resumed());
    assert!(s.local_response().is_none());
}

#[test]
fn an_unreachable_store_fails_open_and_says_so() {
    let p = global();
    let (s, _) = as_user(&p, "alice");
    let token = s.http_calls()[0].token;
    p.answer_http_call(token, None).unwrap();
    assert!(s.request_resumed());
    assert!(s.local_response().is_none());
    assert!(p
        .logs()
        .iter()
        .any(|l| l.level == LogLevel::Warn && l.message.contains("global store unavailable")));
}
