//! The admin API's JSON views and the `lateen proxy-config` / `proxy-status` CLI that reads
//! them, against a running proxy.

use lateen_e2e::*;
use serde_json::Value;
use std::process::Command;

const SPLIT: &str = r#"---
apiVersion: lateen.io/v1alpha1
kind: Bootstrap
metadata: {name: lateen, namespace: istio-system}
spec:
  workload: {name: ingress-gw, namespace: istio-system}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: split, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - name: api
    match: [{uri: {prefix: /api}}]
    route:
    - {destination: {host: svc.test, subset: v1}, weight: 90}
    - {destination: {host: svc.test, subset: v2}, weight: 10}
  - route: [{destination: {host: svc.test, subset: v1}}]
"#;

async fn view(proxy: &Proxy, path: &str) -> Value {
    let r = get(&format!("http://127.0.0.1:{}{path}", proxy.admin))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(paths().bin)
        .args(args)
        .output()
        .expect("lateen runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn admin_views_and_proxy_config_cli() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let proxy = Proxy::start(&(mesh(&[&v1, &v2]) + SPLIT))
        .await
        .expect("proxy starts");
    for _ in 0..5 {
        assert_eq!(get(&proxy.url("/other")).await.unwrap().status, 200);
    }

    let listeners = view(&proxy, "/listeners").await;
    let l = &listeners["listeners"][0];
    assert_eq!(l["port"], proxy.port);
    let chain: Vec<&str> = l["filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(chain.contains(&"lateen/router"), "{chain:?}");
    assert_eq!(chain.last(), Some(&"lateen/metrics"), "{chain:?}");

    let routes = view(&proxy, "/routes").await;
    let vh = &routes["routes"][0]["virtualHosts"][0];
    assert_eq!(vh["virtualService"], "test/split");
    let api = &vh["routes"][0];
    assert_eq!(api["name"], "api");
    assert_eq!(api["destinations"][0]["cluster"], "outbound|80|v1|svc.test");
    assert_eq!(api["destinations"][0]["weight"], 90);
    assert_eq!(api["destinations"][1]["weight"], 10);

    let clusters = view(&proxy, "/clusters?format=json").await;
    let v1c = clusters["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "outbound|80|v1|svc.test")
        .expect("the v1 cluster");
    assert_eq!(v1c["stats"]["upstreamRqTotal"], 5);
    assert_eq!(v1c["stats"]["upstreamRq2xx"], 5);
    assert_eq!(v1c["endpoints"][0]["health"], "HEALTHY");
    assert_eq!(
        v1c["endpoints"][0]["address"],
        format!("127.0.0.1:{}", v1.port())
    );

    let plugins = view(&proxy, "/plugins").await;
    let router = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "lateen/router")
        .expect("the router plugin");
    assert_eq!(router["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(router["state"], "RUNNING");
    assert!(router["stats"]["callbacks"].as_u64().unwrap() >= 5);
    assert!(router["stats"]["memoryBytes"].as_i64().unwrap() > 0);

    // The CLI renders the same views as tables.
    let admin = format!("127.0.0.1:{}", proxy.admin);
    let (ok, out) = cli(&["proxy-config", "clusters", "--admin", &admin]);
    assert!(ok, "{out}");
    assert!(out.starts_with("SERVICE FQDN"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("svc.test") && l.contains(" v1 "))
        .unwrap_or_else(|| panic!("a v1 row in\n{out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols,
        ["svc.test", "80", "v1", "outbound", "ROUNDROBIN", "1", "5"]
    );

    let (ok, out) = cli(&["proxy-config", "routes", "--admin", &admin]);
    assert!(ok, "{out}");
    assert!(
        out.contains("/api*")
            && out.contains("outbound|80|v1|svc.test 90%, outbound|80|v2|svc.test 10%"),
        "{out}"
    );
    let (ok, out) = cli(&["proxy-config", "endpoints", "--admin", &admin]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("127.0.0.1:{}  HEALTHY", v2.port())),
        "{out}"
    );
    let (ok, out) = cli(&["proxy-config", "plugins", "--admin", &admin]);
    assert!(
        ok && out.contains("lateen/router") && out.contains("RUNNING"),
        "{out}"
    );
    let (ok, out) = cli(&["proxy-config", "listeners", "--json", "--admin", &admin]);
    assert!(ok, "{out}");
    let parsed: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(parsed, listeners);

    let (ok, out) = cli(&["proxy-status", "--admin", &admin]);
    assert!(ok, "{out}");
    let row: Vec<&str> = out
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..3],
        ["ingress-gw.istio-system", admin.as_str(), "LIVE"],
        "{out}"
    );
    assert!(out.contains("SYNCED"), "{out}");

    // A proxy that is not there: a clear error, not a panic.
    let closed = format!("127.0.0.1:{}", free_port());
    let (ok, out) = cli(&["proxy-config", "clusters", "--admin", &closed]);
    assert!(!ok);
    assert!(
        out.contains(&format!("reaching the admin API at {closed}")),
        "{out}"
    );
}
