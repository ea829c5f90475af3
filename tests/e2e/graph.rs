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
    let into_service = edge("src:ingress-gw.istio-system", "svc:svc.test");
    assert!(num(&into_service, "data-rps") > 0.0, "{into_service:?}");
    // 2 of the 40 requests failed: a 5 % error rate into the service.
    let err = num(&into_service, "data-error-rate");
    assert!((err - 2.0 / 40.0).abs() < 1e-6, "{into_service:?}");
    assert!(num(&into_service, "data-p99-ms") > 0.0, "{into_service:?}");
    let to_v1 = edge("svc:svc.test", "ver:svc.test:v1");
    let to_v2 = edge("svc:svc.test", "ver:svc.test:v2");
    assert!(
        num(&to_v1, "data-rps") > num(&to_v2, "data-rps"),
        "{to_v1:?} {to_v2:?}"
    );
    assert_eq!(num(&to_v1, "data-error-rate"), 0.0);
    assert_eq!(
        num(
            &edge("svc:svc.test", "ver:svc.test:empty"),
            "data-error-rate"
        ),
        1.0
    );

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
