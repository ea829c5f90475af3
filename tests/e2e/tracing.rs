//! Tracing across two chained proxies: W3C and B3 propagation, spans exported over
//! OTLP/HTTP to a real receiver, parent/child ids checked end to end.

use lateen_e2e::*;
use serde_json::Value;

fn tracing(service: &str, otlp: &str) -> String {
    bootstrap(&format!(
        "  telemetry:\n    tracing:\n      sampling: 100\n      serviceName: {service}\n      otlp: {{endpoint: \"{otlp}\"}}"
    ))
}

/// The spans of one trace, once `n` of them arrived.
async fn trace(rx: &OtlpReceiver, trace_id: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let spans: Vec<Value> = rx
            .spans()
            .await
            .into_iter()
            .filter(|s| s["trace_id"] == trace_id)
            .collect();
        if spans.len() >= n {
            return spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {n} spans of trace {trace_id}: {spans:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn by_service<'a>(spans: &'a [Value], service: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["service"] == service)
        .unwrap_or_else(|| panic!("a {service} span in {spans:?}"))
}

#[tokio::test]
async fn traces_cross_two_proxies_in_w3c_and_b3() {
    let rx = OtlpReceiver::start().await;
    let backend = Backend::start("v1").await;
    let b =
        Proxy::start(&(mesh(&[&backend]) + &tracing("gw-b", &rx.endpoint()) + &route_all("v1")))
            .await
            .expect("proxy b starts");
    let a = Proxy::start(
        &(mesh(&[&backend]) + &tracing("gw-a", &rx.endpoint()) + &routed_to("b.test", b.port)),
    )
    .await
    .expect("proxy a starts");

    // An unsampled caller: propagated as unsampled, and never exported.
    let quiet = "0af7651916cd43dd8448eb211c80319c";
    let r = send(
        "GET",
        &a.url("/quiet"),
        &[("traceparent", &format!("00-{quiet}-b7ad6b7169203331-00"))],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", a.log());
    let seen = backend.last();
    let tp = seen.header("traceparent").unwrap();
    assert!(
        tp.starts_with(&format!("00-{quiet}-")) && tp.ends_with("-00"),
        "{tp}"
    );
    assert_eq!(seen.header("x-b3-sampled"), Some("0"));

    // W3C from the client: client → a → b → backend, one trace.
    let t = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let r = send(
        "GET",
        &a.url("/w3c?q=1"),
        &[
            ("traceparent", &format!("00-{t}-{client_span}-01")),
            ("tracestate", "vendor=x"),
        ],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let seen = backend.last();
    let spans = trace(&rx, t, 2).await;
    let (sa, sb) = (by_service(&spans, "gw-a"), by_service(&spans, "gw-b"));
    assert_eq!(sa["parent_span_id"], client_span, "a is the client's child");
    assert_eq!(sb["parent_span_id"], sa["span_id"], "b is a's child");
    let b_span = sb["span_id"].as_str().unwrap();
    assert_eq!(
        seen.header("traceparent"),
        Some(format!("00-{t}-{b_span}-01").as_str()),
        "the backend's parent is b"
    );
    assert_eq!(seen.header("tracestate"), Some("vendor=x"));
    assert_eq!(seen.header("x-b3-traceid"), Some(t));
    assert_eq!(seen.header("x-b3-spanid"), Some(b_span));
    assert_eq!(seen.header("x-b3-parentspanid"), sa["span_id"].as_str());
    // The usual attributes.
    assert_eq!(sa["name"], format!("127.0.0.1:{}/w3c", a.port));
    assert_eq!(sa["attributes"]["http.method"], "GET");
    assert_eq!(sa["attributes"]["http.status_code"], 200);
    assert_eq!(sa["attributes"]["upstream_cluster"], "outbound|80||b.test");
    assert_eq!(
        sb["attributes"]["upstream_cluster"],
        "outbound|80|v1|svc.test"
    );
    assert_eq!(
        sa["attributes"]["guid:x-request-id"],
        sb["attributes"]["guid:x-request-id"]
    );
    assert_eq!(sa["kind"], 2, "SPAN_KIND_SERVER");
    assert!(sa["end"].as_u64() >= sa["start"].as_u64());

    // B3 single header with a 64-bit trace id: answered in kind.
    let r = send(
        "GET",
        &a.url("/b3"),
        &[("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-1")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let seen = backend.last();
    let long = "000000000000000080f198ee56343ba8";
    let spans = trace(&rx, long, 2).await;
    let (sa, sb) = (by_service(&spans, "gw-a"), by_service(&spans, "gw-b"));
    assert_eq!(sa["parent_span_id"], "e457b5a2e4d86bd1");
    assert_eq!(sb["parent_span_id"], sa["span_id"]);
    let b3 = seen.header("b3").unwrap();
    assert_eq!(
        b3,
        format!(
            "{long}-{}-1-{}",
            sb["span_id"].as_str().unwrap(),
            sa["span_id"].as_str().unwrap()
        )
    );

    // B3 multi headers.
    let r = send(
        "GET",
        &a.url("/b3multi"),
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let spans = trace(&rx, "463ac35c9f6413ad48485a3953bb6124", 2).await;
    assert_eq!(
        by_service(&spans, "gw-a")["parent_span_id"],
        "a2fb4a1d1a96d312"
    );

    // No context: a starts the trace (a root span) and b continues it.
    assert_eq!(get(&a.url("/fresh")).await.unwrap().status, 200);
    let tp = backend.last().header("traceparent").unwrap().to_string();
    let fresh = tp.split('-').nth(1).unwrap().to_string();
    let spans = trace(&rx, &fresh, 2).await;
    assert_eq!(by_service(&spans, "gw-a")["parent_span_id"], "");

    // The unsampled trace never left the proxies.
    assert!(rx.spans().await.iter().all(|s| s["trace_id"] != quiet));
}

/// MeshConfig as Istio ships it, in the istio ConfigMap's `mesh` key: access log and
/// tracing switched on the way Istio users do it, without Lateen's Bootstrap.
fn mesh_config(mesh: &str) -> String {
    let indented: String = mesh.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |-\n{indented}"
    )
}

#[tokio::test]
async fn mesh_config_turns_on_the_access_log_and_tracing() {
    let rx = OtlpReceiver::start().await;
    let backend = Backend::start("v1").await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let mesh_yaml = format!(
        r#"accessLogFile: {}
accessLogEncoding: JSON
accessLogFormat: '{{"code": "%RESPONSE_CODE%", "path": "%REQ(:PATH)%"}}'
enableTracing: true
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
  tracing: {{sampling: 100}}
defaultProviders:
  tracing: [otel]
extensionProviders:
- name: otel
  opentelemetry:
    service: 127.0.0.1
    port: {}
    http: {{path: /v1/traces}}
enablePrometheusMerge: true"#,
        log.display(),
        rx.port
    );
    let yaml = mesh(&[&backend]) + &mesh_config(&mesh_yaml) + &route_all("v1");
    let proxy = Proxy::start(&yaml).await.expect("proxy starts");
    let t = "5bf92f3577b34da6a3ce929d0e0e4736";
    let r = send(
        "GET",
        &proxy.url("/meshed"),
        &[("traceparent", &format!("00-{t}-00f067aa0ba902b7-01"))],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", proxy.log());
    // Sampled at 100 %, exported to the provider MeshConfig names.
    let spans = trace(&rx, t, 1).await;
    assert_eq!(spans.len(), 1, "{spans:?}");
    // The access log in the MeshConfig's JSON format (flushed at least every second).
    eventually("the JSON access log line", || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["code"] == 200 && v["path"] == "/meshed")
    })
    .await;
    // What it does not read is said, not refused.
    let dump = proxy.config_dump().await;
    let warnings = dump["warnings"].to_string();
    assert!(
        warnings.contains("not read by Lateen: enablePrometheusMerge"),
        "{warnings}"
    );
}

#[test]
fn the_bootstrap_and_mesh_config_cannot_both_set_the_access_log() {
    let yaml = (GATEWAY.to_string()
        + &bootstrap("  telemetry:\n    accessLog: {file: /dev/stdout}")
        + &mesh_config("accessLogFile: /dev/stdout"))
        .replace("{{PORT}}", &free_port().to_string());
    let err = refused("both.yaml", &yaml);
    assert!(
        err.contains("spec.telemetry.accessLog") && err.contains("MeshConfig"),
        "{err}"
    );
}
