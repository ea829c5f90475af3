//! Istio's Telemetry API: access logging and tracing turned on mesh-wide, off for one
//! namespace, providers from MeshConfig.

use lateen_e2e::*;
use serde_json::Value;

/// MeshConfig with a JSON access log file for the built-in `envoy` provider, and an
/// OTLP/HTTP tracing provider `otel` at `otlp_port`.
fn mesh_config(log: &std::path::Path, otlp_port: u16) -> String {
    format!(
        r#"---
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |-
    accessLogFile: {}
    accessLogEncoding: JSON
    accessLogFormat: '{{"code": "%RESPONSE_CODE%", "path": "%REQ(:PATH)%"}}'
    extensionProviders:
    - name: otel
      opentelemetry:
        service: 127.0.0.1
        port: {otlp_port}
        http: {{path: /v1/traces}}
"#,
        log.display()
    )
}

const MESH_WIDE: &str = r#"---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
  tracing:
  - providers: [{name: otel}]
    randomSamplingPercentage: 100
"#;

const TEAM_OFF: &str = r#"---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: team-a}
spec:
  accessLogging:
  - disabled: true
"#;

const WORKLOAD_ON: &str = r#"---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: gateway-logs, namespace: team-a}
spec:
  selector:
    matchLabels: {istio: ingressgateway}
  accessLogging:
  - providers: [{name: envoy}]
"#;

/// The gateway runs as a workload of namespace team-a.
fn workload() -> String {
    bootstrap(
        "  workload:\n    name: gw\n    namespace: team-a\n    labels: {istio: ingressgateway}",
    )
}

#[tokio::test]
async fn telemetry_turns_logs_and_traces_on_mesh_wide_and_off_for_a_namespace() {
    let rx = OtlpReceiver::start().await;
    let v1 = Backend::start("v1").await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let base = mesh(&[&v1]) + &workload() + &mesh_config(&log, rx.port) + &route_all("v1");
    let proxy = Proxy::start(&(base.clone() + MESH_WIDE))
        .await
        .expect("proxy starts");

    let t = "6bf92f3577b34da6a3ce929d0e0e4736";
    let r = send(
        "GET",
        &proxy.url("/logged"),
        &[("traceparent", &format!("00-{t}-00f067aa0ba902b7-00"))],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", proxy.log());
    // The envoy provider writes MeshConfig's file in its format.
    eventually("the access log line", || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["code"] == 200 && v["path"] == "/logged")
    })
    .await;
    // The caller said "not sampled", so no span; a new trace is sampled at 100 %.
    get(&proxy.url("/traced")).await.unwrap();
    eventually("a span at 100 % sampling", || async {
        rx.spans()
            .await
            .iter()
            .any(|s| s["attributes"].to_string().contains("/traced"))
    })
    .await;
    assert!(!rx.spans().await.iter().any(|s| s["trace_id"] == t));
    let dump = proxy.config_dump().await;
    assert_eq!(
        dump["telemetry"]["accessLog"],
        log.display().to_string(),
        "{dump}"
    );
    assert_eq!(dump["telemetry"]["tracing"]["sampling"], 100.0, "{dump}");

    // A namespace-level Telemetry turns the log off for this workload's namespace; tracing,
    // which it does not set, stays as the mesh level has it.
    proxy.rewrite(&(base.clone() + MESH_WIDE + TEAM_OFF));
    eventually("the access log off", || async {
        proxy.config_dump().await["telemetry"]["accessLog"].is_null()
    })
    .await;
    let dump = proxy.config_dump().await;
    assert_eq!(dump["telemetry"]["tracing"]["sampling"], 100.0, "{dump}");

    // A workload-level Telemetry (its selector matches this gateway) beats the namespace's.
    proxy.rewrite(&(base + MESH_WIDE + TEAM_OFF + WORKLOAD_ON));
    eventually("the access log on again for this workload", || async {
        proxy.config_dump().await["telemetry"]["accessLog"] == log.display().to_string()
    })
    .await;
}

#[test]
fn telemetry_fields_not_served_are_refused_with_their_line() {
    let yaml = (GATEWAY.to_string()
        + "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: istio-system}\nspec:\n  accessLogging:\n  - filter: {expression: \"response.code >= 500\"}\n")
        .replace("{{PORT}}", &free_port().to_string());
    let err = refused("telemetry.yaml", &yaml);
    assert!(
        err.contains("telemetry.yaml:")
            && err.contains("spec.accessLogging[0].filter")
            && err.contains("not served"),
        "{err}"
    );
}
