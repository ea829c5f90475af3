//! The sample component filter on Lateen's runtime, through the filter test harness: the
//! same harness, and the same assertions, as a proxy-wasm filter.

use lateen_harness::{build_component, Action, MetricValue, Plugin, Request, Response};
use serde_json::json;

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 \
                      (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                      (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

fn plugin(config: serde_json::Value) -> Result<Plugin, lateen_harness::HarnessError> {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR"))?;
    Plugin::load(wasm).config_json(&config).start()
}

#[test]
fn tags_each_device_class_and_counts_it() {
    let p = plugin(json!({"header": "x-client"})).unwrap();
    for (ua, class) in [(IPHONE, "mobile"), (CHROME, "desktop"), (IPHONE, "mobile")] {
        let mut s = p.stream();
        let action = s
            .send_request(Request::get("/").header("user-agent", ua))
            .unwrap();
        assert_eq!(action, Action::Continue);
        assert_eq!(s.request_header("x-client").as_deref(), Some(class));
        s.send_response(Response::new(200)).unwrap();
        s.finish().unwrap();
    }
    let mut series = p.labelled_metrics("ua_tagger_requests_total");
    series.sort_by(|a, b| a.0["device"].cmp(&b.0["device"]));
    assert_eq!(series.len(), 2, "{series:?}");
    assert_eq!(series[0].0["device"], "desktop");
    assert_eq!(series[0].1, MetricValue::Value(1));
    assert_eq!(series[1].0["device"], "mobile");
    assert_eq!(series[1].1, MetricValue::Value(2));
}

#[test]
fn the_default_header_is_x_device() {
    let p = plugin(json!({})).unwrap();
    let mut s = p.stream();
    s.send_request(Request::get("/")).unwrap();
    assert_eq!(s.request_header("x-device").as_deref(), Some("other"));
}

#[test]
fn a_bad_config_is_refused_with_the_reason_logged() {
    let err = plugin(json!({"heder": "x"})).err().expect("refused");
    assert!(err.to_string().contains("heder"), "{err}");
}
