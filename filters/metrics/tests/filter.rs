//! The metrics filter's built .wasm on Lateen's runtime, through the filter test harness:
//! Istio's standard metrics with their labels, recorded in on_log.

use lateen_harness::{build_filter, MetricValue, Plugin, Request, Response};
use serde_json::json;

fn metrics() -> Plugin {
    let wasm = build_filter(env!("CARGO_MANIFEST_DIR")).expect("build the metrics filter");
    Plugin::load(wasm)
        .name("lateen/metrics")
        .config_json(&json!({
            "reporter": "source",
            "source": {"workload": "ingressgateway", "namespace": "istio-system",
                       "app": "istio-ingressgateway", "version": "1.0"}
        }))
        .start()
        .expect("start the metrics filter")
}

fn request(p: &Plugin, cluster: &str, status: u16, flags: Option<&str>) {
    let mut s = p.stream();
    s.send_request(Request::post("/reviews/1", "12345"))
        .unwrap();
    // What the router and the host would have left on the stream.
    s.set_property("lateen.route.cluster", cluster.to_string());
    if let Some(f) = flags {
        s.set_property("lateen.response_flags", f.to_string());
    }
    s.send_response(Response::new(status).body("hello"))
        .unwrap();
    s.finish().unwrap();
}

#[test]
fn requests_are_counted_by_outcome_with_istios_labels() {
    let p = metrics();
    let reviews = "outbound|9080|v2|reviews.default.svc.cluster.local";
    request(&p, reviews, 200, None);
    request(&p, reviews, 200, None);
    request(&p, reviews, 503, Some("UF"));

    let series = p.labelled_metrics("istio_requests_total");
    assert_eq!(series.len(), 2, "one series per outcome: {series:?}");
    let ok = series
        .iter()
        .find(|(l, _)| l["response_code"] == "200")
        .expect("the 200 series");
    let labels = &ok.0;
    assert_eq!(ok.1, MetricValue::Value(2));
    assert_eq!(labels["reporter"], "source");
    assert_eq!(labels["source_workload"], "ingressgateway");
    assert_eq!(labels["source_workload_namespace"], "istio-system");
    assert_eq!(
        labels["destination_service"],
        "reviews.default.svc.cluster.local"
    );
    assert_eq!(labels["destination_service_name"], "reviews");
    assert_eq!(labels["destination_service_namespace"], "default");
    assert_eq!(labels["destination_version"], "v2");
    assert_eq!(labels["request_protocol"], "http");
    assert_eq!(labels["response_flags"], "-");

    let failed = series
        .iter()
        .find(|(l, _)| l["response_code"] == "503")
        .expect("the 503 series");
    assert_eq!(failed.1, MetricValue::Value(1));
    assert_eq!(failed.0["response_flags"], "UF");
}

#[test]
fn sizes_and_durations_are_histograms() {
    let p = metrics();
    request(
        &p,
        "outbound|80||ratings.default.svc.cluster.local",
        200,
        None,
    );
    let count = |family: &str| match p.labelled_metrics(family).first().map(|s| s.1) {
        Some(MetricValue::Histogram { count, .. }) => count,
        other => panic!("{family}: {other:?}"),
    };
    assert_eq!(count("istio_request_duration_milliseconds"), 1);
    assert_eq!(count("istio_request_bytes"), 1);
    assert_eq!(count("istio_response_bytes"), 1);
}

#[test]
fn a_request_with_no_route_is_counted_with_unknown_destination() {
    let p = metrics();
    let mut s = p.stream();
    s.send_request(Request::get("/nowhere")).unwrap();
    s.send_response(Response::new(404)).unwrap();
    s.finish().unwrap();
    let series = p.labelled_metrics("istio_requests_total");
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].0["destination_service"], "unknown");
    assert_eq!(series[0].0["response_code"], "404");
}
