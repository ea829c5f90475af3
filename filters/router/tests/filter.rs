//! The router's built .wasm on Lateen's runtime, through the filter test harness: the
//! route decision it hands the host, and what it does to requests and responses.

use lateen_harness::{build_filter, Action, Plugin, Request, Response, Stream};
use serde_json::json;

fn router(config: serde_json::Value) -> Plugin {
    let wasm = build_filter(env!("CARGO_MANIFEST_DIR")).expect("build the router");
    Plugin::load(wasm)
        .name("lateen/router")
        .config_json(&config)
        .start()
        .expect("start the router")
}

fn reviews() -> Plugin {
    router(json!({"virtualHosts": [
        {"name": "default/reviews", "domains": ["reviews", "reviews.default.svc.cluster.local"], "routes": [
            {"name": "jason", "id": "default/reviews#0",
             "match": [{"headers": {"end-user": {"exact": "jason"}}}],
             "route": [{"cluster": "outbound|80|v2|reviews"}], "timeoutMs": 1500},
            {"name": "beta-cookie", "id": "default/reviews#1",
             "match": [{"cookies": {"beta": {"exact": "1"}}}],
             "route": [{"cluster": "outbound|80|v3|reviews"}]},
            {"name": "moved", "id": "default/reviews#2",
             "match": [{"uri": {"prefix": "/old"}}],
             "redirect": {"uri": "/new", "redirectCode": 308}},
            {"name": "split", "id": "default/reviews#3",
             "route": [
                 {"cluster": "outbound|80|v1|reviews", "weight": 90},
                 {"cluster": "outbound|80|v2|reviews", "weight": 7},
                 {"cluster": "outbound|80|v3|reviews", "weight": 3}],
             "headers": {
                 "request": {"set": {"x-routed-by": "lateen"}, "remove": ["x-debug"]},
                 "response": {"add": {"x-served-by": "reviews"}}}}
        ]}
    ]}))
}

fn send(p: &Plugin, request: Request) -> (Stream, Action) {
    let mut s = p.stream();
    let action = s.send_request(request).expect("request callbacks");
    (s, action)
}

#[test]
fn a_header_match_picks_its_cluster_route_and_timeout() {
    let p = reviews();
    let (s, action) = send(
        &p,
        Request::get("/reviews/1")
            .authority("reviews")
            .header("end-user", "jason"),
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(
        s.property("lateen.route.cluster").as_deref(),
        Some("outbound|80|v2|reviews")
    );
    assert_eq!(s.property("lateen.route.name").as_deref(), Some("jason"));
    assert_eq!(
        s.property("lateen.route.id").as_deref(),
        Some("default/reviews#0")
    );
    assert_eq!(
        s.property("lateen.route.timeout_ms").as_deref(),
        Some("1500")
    );
}

#[test]
fn a_cookie_match_routes_and_other_cookies_do_not() {
    let p = reviews();
    let (s, _) = send(
        &p,
        Request::get("/")
            .authority("reviews")
            .header("cookie", "a=b; beta=1"),
    );
    assert_eq!(
        s.property("lateen.route.cluster").as_deref(),
        Some("outbound|80|v3|reviews")
    );
    let (s, _) = send(
        &p,
        Request::get("/")
            .authority("reviews")
            .header("cookie", "beta=10"),
    );
    assert_eq!(s.property("lateen.route.name").as_deref(), Some("split"));
}

#[test]
fn an_unknown_host_gets_no_decision_so_the_host_answers_404() {
    let p = reviews();
    let (s, action) = send(&p, Request::get("/").authority("ratings"));
    assert_eq!(action, Action::Continue);
    assert_eq!(s.property("lateen.route.cluster"), None);
    assert!(s.local_response().is_none());
}

#[test]
fn a_redirect_is_answered_by_the_router_with_the_query_kept() {
    let p = reviews();
    let (s, action) = send(&p, Request::get("/old/page?x=1").authority("reviews"));
    assert_eq!(action, Action::Pause);
    let reply = s.local_response().expect("a redirect");
    assert_eq!(reply.status, 308);
    let location = reply.headers.iter().find(|(k, _)| k == "location");
    assert_eq!(
        location.map(|(_, v)| String::from_utf8_lossy(v).into_owned()),
        Some("http://reviews/new?x=1".to_string())
    );
}

#[test]
fn header_operations_apply_to_the_request_and_to_the_response() {
    let p = reviews();
    let (mut s, _) = send(
        &p,
        Request::get("/")
            .authority("reviews")
            .header("x-debug", "1"),
    );
    assert_eq!(s.request_header("x-routed-by").as_deref(), Some("lateen"));
    assert_eq!(s.request_header("x-debug"), None);
    s.send_response(Response::new(200).header("x-served-by", "upstream"))
        .unwrap();
    let served: Vec<_> = s
        .response_headers_now()
        .into_iter()
        .filter(|(k, _)| k == "x-served-by")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        served,
        ["upstream", "reviews"],
        "add keeps the upstream's value"
    );
}

#[test]
fn weights_split_90_7_3() {
    let p = reviews();
    let mut counts = std::collections::HashMap::<String, u32>::new();
    let n = 4000;
    for _ in 0..n {
        let (s, _) = send(&p, Request::get("/").authority("reviews"));
        *counts
            .entry(s.property("lateen.route.cluster").expect("a decision"))
            .or_default() += 1;
    }
    let share = |v: &str| f64::from(counts[&format!("outbound|80|{v}|reviews")]) / f64::from(n);
    // Binomial standard deviation at n = 4000 is under 0.5 points; allow 4 of them.
    assert!((share("v1") - 0.90).abs() < 0.02, "{counts:?}");
    assert!((share("v2") - 0.07).abs() < 0.016, "{counts:?}");
    assert!((share("v3") - 0.03).abs() < 0.011, "{counts:?}");
}

#[test]
fn a_bad_regex_is_refused_at_configure_with_its_place() {
    let wasm = build_filter(env!("CARGO_MANIFEST_DIR")).unwrap();
    let err = Plugin::load(wasm)
        .config_json(
            &json!({"virtualHosts": [{"name": "ns/a", "domains": ["*"], "routes": [
            {"name": "r", "match": [{"uri": {"regex": "("}}], "route": [{"cluster": "c"}]}]}]}),
        )
        .start()
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("routes[0].match[0].uri.regex"),
        "{err}"
    );
}
