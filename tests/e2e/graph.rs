//! The live service graph page, loaded in headless Chromium after real traffic.

use lateen_e2e::*;
use std::collections::HashMap;
use std::time::Duration;

/// The attributes of every `<g class="KIND" ...>` element in a DOM dump.
fn elements(dom: &str, kind: &str) -> Vec<HashMap<String, String>> {
    let tag = regex::Regex::new(&format!(r#"<g class="{kind}"([^>]*)>"#)).unwrap();
    let attr = regex::Regex::new(r#"([\w-]+)="([^"]*)""#).unwrap();
    tag.captures_iter(dom)
        .map(|c| {
            attr.captures_iter(&c[1])
                .map(|a| (a[1].to_string(), a[2].to_string()))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn service_graph_page_shows_services_versions_and_rates() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let proxy = Proxy::start(&(mesh(&[&v1, &v2]) + crate::metrics::GATEWAY_ROUTES))
        .await
        .expect("proxy starts");
    // Traffic over two sampling periods: 20 to v1, 10 to v2, 5 failing (no endpoint).
    for round in 0..2 {
        for i in 0..20 {
            let path = match i % 4 {
                0 | 1 => "/v1",
                2 => "/v2",
                _ if round == 0 && i < 8 => "/down",
                _ => "/v1",
            };
            get(&proxy.url(path)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    // The figures, read at once from /graph.json: rates cover the last 10 s, and the
    // browser below may start later than that on a loaded machine.
    let graph: serde_json::Value = serde_json::from_str(
        &get(&format!("http://127.0.0.1:{}/graph.json", proxy.admin))
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    let json_edge = |from: &str, to: &str| {
        graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"] == from && e["target"] == to)
            .unwrap_or_else(|| panic!("edge {from} → {to} in {graph}"))
            .clone()
    };
    let into = json_edge("src:ingress-gw.istio-system", "svc:svc.test");
    assert_eq!(into["requests"], 40, "{into}");
    // 2 of the 40 requests failed: a 5 % error rate into the service.
    assert!(
        (into["errorRate"].as_f64().unwrap() - 2.0 / 40.0).abs() < 1e-6,
        "{into}"
    );
    let (v1, v2) = (
        json_edge("svc:svc.test", "ver:svc.test:v1"),
        json_edge("svc:svc.test", "ver:svc.test:v2"),
    );
    assert!(v1["rps"].as_f64() > v2["rps"].as_f64(), "{v1} {v2}");
    assert_eq!(v1["errorRate"], 0.0);
    assert_eq!(
        json_edge("svc:svc.test", "ver:svc.test:empty")["errorRate"],
        1.0
    );

    let page = format!("http://127.0.0.1:{}/ui/graph", proxy.admin);
    let dom = tokio::task::spawn_blocking({
        let page = page.clone();
        move || Chromium::dump_dom(&page, 3000)
    })
    .await
    .unwrap();
    assert!(
        regex::Regex::new(r#"<body[^>]*data-updates="[1-9]"#)
            .unwrap()
            .is_match(&dom),
        "the page fetched /graph.json at least once:\n{dom}"
    );
    let nodes: HashMap<String, String> = elements(&dom, "node")
        .into_iter()
        .map(|n| (n["data-id"].clone(), n["data-kind"].clone()))
        .collect();
    for (id, kind) in [
        ("src:ingress-gw.istio-system", "source"),
        ("svc:svc.test", "service"),
        ("ver:svc.test:v1", "version"),
        ("ver:svc.test:v2", "version"),
        ("ver:svc.test:empty", "version"),
    ] {
        assert_eq!(
            nodes.get(id).map(String::as_str),
            Some(kind),
            "{id} in {nodes:?}"
        );
    }
    let edges = elements(&dom, "edge");
    let edge = |from: &str, to: &str| {
        edges
            .iter()
            .find(|e| e["data-source"] == from && e["data-target"] == to)
            .unwrap_or_else(|| panic!("edge {from} → {to} in {edges:?}"))
            .clone()
    };
    let num = |e: &HashMap<String, String>, k: &str| -> f64 {
        e[k].parse().unwrap_or_else(|_| panic!("{k} of {e:?}"))
    };
    // The page draws each edge with its figures (their values were checked above; the
    // window may have moved on since).
    let into_service = edge("src:ingress-gw.istio-system", "svc:svc.test");
    assert!(num(&into_service, "data-rps") > 0.0, "{into_service:?}");
    let err = num(&into_service, "data-error-rate");
    assert!((0.0..=1.0).contains(&err), "{into_service:?}");
    assert!(num(&into_service, "data-p99-ms") > 0.0, "{into_service:?}");
    for to in ["ver:svc.test:v1", "ver:svc.test:v2", "ver:svc.test:empty"] {
        let e = edge("svc:svc.test", to);
        assert!((0.0..=1.0).contains(&num(&e, "data-error-rate")), "{e:?}");
    }

    // A screenshot for people, kept beside the build output.
    let shot = paths().target.join("service-graph.png");
    let _ = std::fs::remove_file(&shot);
    tokio::task::spawn_blocking({
        let shot = shot.clone();
        move || Chromium::screenshot(&page, 3000, &shot)
    })
    .await
    .unwrap();
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
