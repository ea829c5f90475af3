//! Router actions beyond forwarding: redirects, direct responses, rewrites and header
//! operations, as Istio documents them.

use lateen_e2e::*;

const VS: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: traffic, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - name: redirect-default
    match: [{uri: {prefix: /old}}]
    redirect: {uri: /new}
  - name: redirect-full
    match: [{uri: {prefix: /moved}}]
    redirect: {authority: example.com, scheme: https, redirectCode: 302, derivePort: FROM_PROTOCOL_DEFAULT}
  - name: direct
    match: [{uri: {exact: /maintenance}}]
    directResponse: {status: 503, body: {string: "down for maintenance"}}
  - name: prefix-rewrite
    match: [{uri: {prefix: /api/v1}}]
    rewrite: {uri: /v2, authority: backend.internal}
    route: [{destination: {host: svc.test, subset: a}}]
  - name: regex-rewrite
    match: [{uri: {prefix: /svc/}}]
    rewrite:
      uriRegexRewrite: {match: "^/svc/([^/]+)(/.*)$", rewrite: "\\2/instance/\\1"}
    route: [{destination: {host: svc.test, subset: a}}]
  - name: cors
    match: [{uri: {prefix: /cors}}]
    corsPolicy:
      allowOrigins: [{exact: "https://app.example.com"}, {regex: "https://.*\\.dev\\.example\\.com"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-token]
      exposeHeaders: [x-request-id]
      maxAge: 24h
      allowCredentials: true
    route: [{destination: {host: svc.test, subset: a}}]
  - name: headers
    match: [{uri: {prefix: /headers}}]
    headers:
      request:
        set: {x-set: route}
        add: {x-added: route}
        remove: [x-drop]
      response:
        set: {x-resp: "1"}
        remove: [x-backend]
    route:
    - destination: {host: svc.test, subset: a}
      headers:
        request: {set: {x-dest: a}}
        response: {add: {x-dest-resp: a}}
"#;

#[tokio::test]
async fn redirects_direct_responses_rewrites_and_headers() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&(mesh(&[&a]) + VS))
        .await
        .expect("proxy starts");

    let r = get(&proxy.url("/old/page?x=1")).await.unwrap();
    assert_eq!(r.status, 301, "{}", proxy.log());
    let want = format!("http://127.0.0.1:{}/new?x=1", proxy.port);
    assert_eq!(r.header("location"), Some(want.as_str()));
    let r = get(&proxy.url("/moved/here")).await.unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("https://example.com/moved/here"));

    let r = get(&proxy.url("/maintenance")).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (503, "down for maintenance"));
    assert!(
        a.seen.lock().unwrap().is_empty(),
        "redirects and direct responses never reach the upstream"
    );

    let r = get(&proxy.url("/api/v1/users?q=1")).await.unwrap();
    assert_eq!(r.status, 200);
    let seen = a.last();
    assert_eq!(seen.path, "/v2/users?q=1");
    assert_eq!(
        seen.header("x-envoy-original-path"),
        Some("/api/v1/users?q=1")
    );
    assert_eq!(seen.header("host"), Some("backend.internal"));

    get(&proxy.url("/svc/foo/v1/api")).await.unwrap();
    assert_eq!(a.last().path, "/v1/api/instance/foo");

    let r = send(
        "GET",
        &proxy.url("/headers"),
        &[("x-drop", "1"), ("x-set", "client")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let seen = a.last();
    assert_eq!(seen.header("x-set"), Some("route"));
    assert_eq!(seen.header("x-added"), Some("route"));
    assert_eq!(seen.header("x-drop"), None);
    assert_eq!(seen.header("x-dest"), Some("a"));
    assert_eq!(r.header("x-resp"), Some("1"));
    assert_eq!(r.header("x-dest-resp"), Some("a"));
    assert_eq!(r.header("x-backend"), None, "response header removed");
}

const FAULTS: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: faults, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /abort100}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: svc.test}}]
  - match: [{uri: {prefix: /abort50}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 50}}}
    route: [{destination: {host: svc.test}}]
  - match: [{uri: {prefix: /unset}}]
    fault: {abort: {httpStatus: 500}}
    route: [{destination: {host: svc.test}}]
  - match: [{uri: {prefix: /delay-abort}}]
    fault:
      delay: {fixedDelay: 200ms, percentage: {value: 100}}
      abort: {httpStatus: 500, percentage: {value: 100}}
    route: [{destination: {host: svc.test}}]
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 1s, percentage: {value: 100}}}
    route: [{destination: {host: svc.test}}]
  - match: [{uri: {prefix: /grpc}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: svc.test}}]
  - route: [{destination: {host: svc.test}}]
"#;

#[tokio::test]
async fn fault_injection_per_route() {
    let a = Backend::start("a").await;
    // header-echo counts response flags in on_log, as a metrics plugin would.
    let flags_plugin = r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: header-echo, namespace: istio-system}
spec:
  url: file://{{WASM}}/test_plugin_header_echo.wasm
"#;
    let proxy = Proxy::start(&(mesh(&[&a]) + FAULTS + flags_plugin))
        .await
        .expect("proxy starts");
    let stats_url = format!("http://127.0.0.1:{}/stats/prometheus", proxy.admin);
    let stats = || get(&stats_url);

    let r = get(&proxy.url("/abort100")).await.unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, "fault filter abort"),
        "{}",
        proxy.log()
    );
    let s = stats().await.unwrap().body;
    assert!(s.contains("header_echo_flags_FI 1"), "FI recorded:\n{s}");
    let r = get(&proxy.url("/other")).await.unwrap();
    assert_eq!(r.status, 200, "a fault applies only to its own route");
    for _ in 0..20 {
        assert_eq!(
            get(&proxy.url("/unset")).await.unwrap().status,
            200,
            "unset percentage is 0%"
        );
    }

    // 50% over N = 500: within 3σ (σ = √(500·¼) ≈ 11.2).
    let mut aborted = 0;
    for _ in 0..500 {
        let r = get(&proxy.url("/abort50")).await.unwrap();
        match r.status {
            418 => aborted += 1,
            200 => {}
            s => panic!("unexpected {s}"),
        }
    }
    assert!(
        (aborted as f64 - 250.0).abs() <= 3.0 * 11.2,
        "aborted {aborted}/500"
    );

    let started = std::time::Instant::now();
    let r = get(&proxy.url("/delay")).await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        took >= std::time::Duration::from_secs(1),
        "delayed {took:?}"
    );

    let started = std::time::Instant::now();
    let r = get(&proxy.url("/delay-abort")).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (500, "fault filter abort"));
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));

    // Delayed requests do not hold up others: five at once take far less than five delays
    // (the slack is for a loaded machine).
    let started = std::time::Instant::now();
    let many: Vec<_> = (0..5)
        .map(|_| {
            let url = proxy.url("/delay");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for m in many {
        assert_eq!(m.await.unwrap().unwrap().status, 200);
    }
    assert!(
        started.elapsed() < std::time::Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );

    let r = get(&proxy.url("/grpc")).await.unwrap();
    assert_eq!((r.status, r.header("grpc-status")), (200, Some("14")));
    let s = stats().await.unwrap().body;
    assert!(
        s.contains("header_echo_flags_DI_FI 1"),
        "DI,FI recorded:\n{s}"
    );
}

#[tokio::test]
async fn consistent_hash_by_header_and_generated_cookie() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let eps = [&a, &b, &c]
        .iter()
        .map(|x| {
            format!(
                "  - {{address: 127.0.0.1, ports: {{http: {}}}}}\n",
                x.port()
            )
        })
        .collect::<String>();
    let yaml = mesh(&[&a])
        + &format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: sticky, namespace: test}}
spec:
  hosts: [sticky.test, cookie.test]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
{eps}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: sticky, namespace: test}}
spec:
  host: sticky.test
  trafficPolicy:
    loadBalancer:
      consistentHash: {{httpHeaderName: x-user, maglev: {{tableSize: 65537}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: cookie, namespace: test}}
spec:
  host: cookie.test
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie: {{name: lateen-sticky, path: /, ttl: 3600s}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: test}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - match: [{{uri: {{prefix: /cookie}}}}]
    route: [{{destination: {{host: cookie.test}}}}]
  - route: [{{destination: {{host: sticky.test}}}}]
"#
        );
    let proxy = Proxy::start(&yaml).await.expect("proxy starts");
    let mut backends = std::collections::HashSet::new();
    for user in 0..12 {
        let id = format!("user-{user}");
        let first = send("GET", &proxy.url("/"), &[("x-user", &id)], "")
            .await
            .unwrap();
        let first = first.header("x-backend").unwrap().to_string();
        for _ in 0..4 {
            let r = send("GET", &proxy.url("/"), &[("x-user", &id)], "")
                .await
                .unwrap();
            assert_eq!(
                r.header("x-backend"),
                Some(first.as_str()),
                "{id} sticks to one host"
            );
        }
        backends.insert(first);
    }
    assert!(backends.len() >= 2, "users spread over hosts: {backends:?}");

    // No cookie yet: the proxy generates one; sending it back sticks to one host.
    let r = get(&proxy.url("/cookie")).await.unwrap();
    let set = r
        .header("set-cookie")
        .expect("generated cookie")
        .to_string();
    assert!(
        set.starts_with("lateen-sticky=\"")
            && set.contains("Max-Age=3600")
            && set.contains("Path=/"),
        "{set}"
    );
    let value = set.split(';').next().unwrap().to_string();
    let first = r.header("x-backend").unwrap().to_string();
    for _ in 0..6 {
        let r = send("GET", &proxy.url("/cookie"), &[("cookie", &value)], "")
            .await
            .unwrap();
        assert_eq!(r.header("x-backend"), Some(first.as_str()));
        assert!(
            r.header("set-cookie").is_none(),
            "no new cookie once the client has one"
        );
    }
}

#[tokio::test]
async fn port_level_settings_override_per_port() {
    let a = Backend::start("a").await;
    let yaml = mesh(&[&a])
        + &r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ports, namespace: test}
spec:
  hosts: [ports.test]
  ports: [{number: 80, name: http}, {number: 81, name: admin}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: {{A}}, admin: {{A}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ports, namespace: test}
spec:
  host: ports.test
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    portLevelSettings:
    - port: {number: 81}
      loadBalancer: {simple: RANDOM}
      connectionPool:
        tcp: {connectTimeout: 250ms}
        http: {idleTimeout: 30s}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: ports.test, port: {number: 81}}}]
"#
        .replace("{{A}}", &a.port().to_string());
    let proxy = Proxy::start(&yaml).await.expect("proxy starts");
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    let dump = get(&format!("http://127.0.0.1:{}/config_dump", proxy.admin))
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&dump.body).unwrap();
    let lb = |name: &str| {
        v["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["lb"].as_str().unwrap().to_string())
    };
    assert_eq!(
        lb("outbound|80||ports.test").as_deref(),
        Some("LeastRequest")
    );
    assert_eq!(lb("outbound|81||ports.test").as_deref(), Some("Random"));
    let cluster = |name: &str| {
        v["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(cluster("outbound|81||ports.test")["connectTimeoutMs"], 250);
    assert_eq!(cluster("outbound|81||ports.test")["idleTimeoutMs"], 30000);
    assert_eq!(
        cluster("outbound|80||ports.test")["connectTimeoutMs"],
        10000,
        "Istio's default"
    );
}

#[tokio::test]
async fn max_requests_per_connection_retires_upstream_connections() {
    let a = Backend::start("a").await;
    let yaml = mesh(&[&a])
        + &r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: capped, namespace: test}
spec:
  hosts: [capped.test]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: {{A}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: capped, namespace: test}
spec:
  host: capped.test
  trafficPolicy:
    connectionPool:
      http: {maxRequestsPerConnection: 2}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /capped}}]
    route: [{destination: {host: capped.test}}]
  - route: [{destination: {host: svc.test, subset: a}}]
"#
        .replace("{{A}}", &a.port().to_string());
    let proxy = Proxy::start(&yaml).await.expect("proxy starts");
    for _ in 0..6 {
        assert_eq!(get(&proxy.url("/capped")).await.unwrap().status, 200);
        assert_eq!(get(&proxy.url("/open")).await.unwrap().status, 200);
    }
    // Requests per upstream connection (the proxy's source port), per route.
    let per_conn = |prefix: &str| {
        let mut m = std::collections::HashMap::new();
        for s in a.seen.lock().unwrap().iter() {
            if s.path.starts_with(prefix) {
                *m.entry(s.peer).or_insert(0) += 1;
            }
        }
        m
    };
    let capped = per_conn("/capped");
    assert!(capped.values().all(|n| *n <= 2), "{capped:?}");
    assert_eq!(capped.values().sum::<i32>(), 6);
    let open = per_conn("/open");
    assert!(
        open.len() <= 2,
        "unlimited connections are kept alive: {open:?}"
    );
}
