//! xDS push benchmark (run by tests/bench/xds.sh, in release): the time from a push to
//! traffic following it, for N routes and N endpoints, over ADS and, side by side, over
//! the file source (the same routes and endpoints as a VirtualService and a ServiceEntry);
//! and the memory an EDS cluster takes per 1,000 endpoints.
//!
//! A push here: the route `/probe` (the last of N, so the router walks all of them) or the
//! endpoints of the cluster behind `/r0` move from backend `a` to backend `b`. The clock
//! starts when the control plane is handed the new version (or the file is renamed into
//! place) and stops at the first response from `b`, polled on a keep-alive connection.

use lateen_e2e::xds::*;
use lateen_e2e::*;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;

fn bootstrap_for(cp: &ControlPlane) -> String {
    bootstrap(&format!(
        "  workload: {{name: bench, namespace: default}}\n\
         \x20 xds: {{address: 127.0.0.1:{}, initialFetchTimeout: 120s}}",
        cp.port
    ))
}

/// N routes `/r{i}` → c1, then `/probe` → `probe_to`.
fn routes(n: usize, probe_to: &str) -> (String, envoy_types::pb::google::protobuf::Any) {
    let mut rs: Vec<_> = (0..n.saturating_sub(1))
        .map(|i| route(&format!("/r{i}/"), &[("c1", 1)]))
        .collect();
    rs.push(route("/probe", &[(probe_to, 1)]));
    route_config("r1", rs)
}

/// N endpoints, all on `port` (so every pick reaches the one backend).
fn eps(cluster: &str, n: usize, port: u16) -> (String, envoy_types::pb::google::protobuf::Any) {
    endpoints(cluster, &vec![(port, 1); n])
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Polls `url` until `b` answers; returns the time since `t0`.
async fn until_b(client: &KeepAlive, url: &str, t0: Instant) -> Duration {
    loop {
        if let Ok(r) = client.get(url).await {
            if r.header("x-backend") == Some("b") {
                return t0.elapsed();
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no switch to b at {url}"
        );
    }
}

/// Polls until `a` answers again (between rounds, untimed).
async fn until_a(client: &KeepAlive, url: &str) {
    let t0 = Instant::now();
    while client
        .get(url)
        .await
        .ok()
        .and_then(|r| r.header("x-backend").map(str::to_string))
        .as_deref()
        != Some("a")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no switch back to a"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

struct Row {
    n: usize,
    xds_route: f64,
    xds_eds: f64,
    file_route: f64,
    file_eds: f64,
}

async fn over_xds(n: usize, a: &Backend, b: &Backend) -> (f64, f64) {
    let cp = ControlPlane::start().await;
    let lport = free_port();
    cp.set(CLUSTER, "0", vec![eds_cluster("c1"), eds_cluster("c2")]);
    cp.set(
        ENDPOINT,
        "0",
        vec![eps("c1", n, a.port()), endpoints("c2", &[(b.port(), 1)])],
    );
    cp.set(LISTENER, "0", vec![listener("l1", lport, "r1", &[])]);
    cp.set(ROUTE, "0", vec![routes(n, "c1")]);
    let _proxy = Proxy::start(&bootstrap_for(&cp))
        .await
        .expect("proxy starts");
    let client = KeepAlive::http1();
    let probe = format!("http://127.0.0.1:{lport}/probe");
    let r0 = format!("http://127.0.0.1:{lport}/r0/x");
    until_a(&client, &probe).await;
    let (mut route_t, mut eds_t) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let v = format!("{round}");
        let t0 = Instant::now();
        cp.set(ROUTE, &format!("{v}b"), vec![routes(n, "c2")]);
        route_t.push(until_b(&client, &probe, t0).await);
        cp.set(ROUTE, &format!("{v}a"), vec![routes(n, "c1")]);
        until_a(&client, &probe).await;

        let t0 = Instant::now();
        cp.set(
            ENDPOINT,
            &format!("{v}b"),
            vec![eps("c1", n, b.port()), endpoints("c2", &[(b.port(), 1)])],
        );
        eds_t.push(until_b(&client, &r0, t0).await);
        cp.set(
            ENDPOINT,
            &format!("{v}a"),
            vec![eps("c1", n, a.port()), endpoints("c2", &[(b.port(), 1)])],
        );
        until_a(&client, &r0).await;
    }
    (median(route_t), median(eds_t))
}

/// The same N routes and N endpoints as YAML: a ServiceEntry (one endpoint line each) and
/// a VirtualService with N http routes.
fn yaml(n: usize, probe_subset: &str, c1_port: u16, a: &Backend, b: &Backend) -> String {
    let mut y = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: {{PORT}}, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    bind: 127.0.0.1\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: c1, namespace: default}\nspec:\n  hosts: [c1.bench]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints:\n",
    );
    for _ in 0..n {
        y.push_str(&format!(
            "  - {{address: 127.0.0.1, ports: {{http: {c1_port}}}}}\n"
        ));
    }
    for (name, port) in [("a", a.port()), ("b", b.port())] {
        y.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{name}.bench]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n"
        ));
    }
    y.push_str("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: default}\nspec:\n  hosts: [\"*\"]\n  gateways: [istio-system/gw]\n  http:\n");
    for i in 0..n.saturating_sub(1) {
        y.push_str(&format!(
            "  - match: [{{uri: {{prefix: /r{i}/}}}}]\n    route: [{{destination: {{host: c1.bench}}}}]\n"
        ));
    }
    y.push_str(&format!(
        "  - match: [{{uri: {{prefix: /probe}}}}]\n    route: [{{destination: {{host: {probe_subset}.bench}}}}]\n"
    ));
    y
}

async fn over_files(n: usize, a: &Backend, b: &Backend) -> (f64, f64) {
    let proxy = Proxy::start(&yaml(n, "a", a.port(), a, b))
        .await
        .expect("proxy starts");
    let client = KeepAlive::http1();
    let probe = proxy.url("/probe");
    let r0 = proxy.url("/r0/x");
    until_a(&client, &probe).await;
    let (mut route_t, mut eds_t) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let text = yaml(n, "b", a.port(), a, b);
        let t0 = Instant::now();
        proxy.rewrite(&text);
        route_t.push(until_b(&client, &probe, t0).await);
        proxy.rewrite(&yaml(n, "a", a.port(), a, b));
        until_a(&client, &probe).await;

        let text = yaml(n, "a", b.port(), a, b);
        let t0 = Instant::now();
        proxy.rewrite(&text);
        eds_t.push(until_b(&client, &r0, t0).await);
        proxy.rewrite(&yaml(n, "a", a.port(), a, b));
        until_a(&client, &r0).await;
    }
    (median(route_t), median(eds_t))
}

/// RSS of a proxy with one EDS cluster of 10 endpoints, then of 100,010.
async fn memory(a: &Backend) -> (u64, u64) {
    let cp = ControlPlane::start().await;
    let lport = free_port();
    cp.set(CLUSTER, "0", vec![eds_cluster("c1")]);
    cp.set(ENDPOINT, "0", vec![eps("c1", 10, a.port())]);
    cp.set(LISTENER, "0", vec![listener("l1", lport, "r1", &[])]);
    cp.set(
        ROUTE,
        "0",
        vec![route_config("r1", vec![route("/", &[("c1", 1)])])],
    );
    let proxy = Proxy::start(&bootstrap_for(&cp))
        .await
        .expect("proxy starts");
    let client = KeepAlive::http1();
    let url = format!("http://127.0.0.1:{lport}/");
    client.get(&url).await.expect("served");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(proxy.pid());
    // Distinct addresses, so nothing can be shared between endpoints.
    let many: Vec<(u16, u32)> = (0..100_000u32)
        .map(|i| (20_000 + (i % 40_000) as u16, 1 + i % 3))
        .chain(std::iter::repeat_n((a.port(), 1), 10))
        .collect();
    cp.set(ENDPOINT, "1", vec![endpoints("c1", &many)]);
    let t0 = Instant::now();
    while cp
        .last_reply(ENDPOINT)
        .is_none_or(|r| r.version_info != "1")
    {
        assert!(t0.elapsed() < Duration::from_secs(120), "EDS not ACKed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = client.get(&url).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    (before, rss_kib(proxy.pid()))
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10, 1_000, 10_000]
    } else {
        sizes
    };
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let mut rows = Vec::new();
    for &n in &sizes {
        let (xds_route, xds_eds) = over_xds(n, &a, &b).await;
        let (file_route, file_eds) = over_files(n, &a, &b).await;
        rows.push(Row {
            n,
            xds_route,
            xds_eds,
            file_route,
            file_eds,
        });
        eprintln!("N = {n}: done");
    }
    println!("\nPush to traffic (median of {ROUNDS}, ms): N routes and N endpoints in the config;");
    println!("a route push moves /probe (the last route), an endpoint push moves N endpoints.\n");
    println!(
        "{:>8} | {:>12} {:>12} {:>6} | {:>12} {:>12} {:>6}",
        "N", "xDS route", "file route", "ratio", "xDS EDS", "file EDS", "ratio"
    );
    for r in &rows {
        println!(
            "{:>8} | {:>12.1} {:>12.1} {:>6.2} | {:>12.1} {:>12.1} {:>6.2}",
            r.n,
            r.xds_route,
            r.file_route,
            r.xds_route / r.file_route,
            r.xds_eds,
            r.file_eds,
            r.xds_eds / r.file_eds
        );
    }
    let (before, after) = memory(&a).await;
    println!(
        "\nMemory: RSS {before} KiB with 10 endpoints, {after} KiB with 100,010: {:.1} KiB per 1,000 endpoints",
        (after.saturating_sub(before)) as f64 / 100.0
    );
}
