//! The access log: Istio's default text format, the JSON variant, a custom format, and a
//! bad format refused with its place.

use lateen_e2e::*;
use std::path::Path;
use std::time::Duration;

fn config(log: &Path, access_log: &str) -> String {
    bootstrap(&format!(
        "  telemetry:\n    accessLog:\n      file: {}\n{access_log}",
        log.display()
    )) + r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: test}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - name: down
    match: [{uri: {prefix: /down}}]
    route: [{destination: {host: svc.test, subset: empty}}]
  - name: v1
    route: [{destination: {host: svc.test, subset: v1}}]
"#
}

/// Waits for a line holding `needle` (the log is flushed every second).
async fn line_with(log: &Path, needle: &str) -> String {
    let mut found = None;
    eventually(&format!("a log line with {needle}"), || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        found = text
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_string);
        let done = found.is_some();
        async move { done }
    })
    .await;
    found.unwrap()
}

#[tokio::test]
async fn access_log_text_json_and_custom_formats() {
    let v1 = Backend::start("v1").await;
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("access.log");
    let proxy = Proxy::start(&(mesh(&[&v1]) + &config(&log, "")))
        .await
        .expect("proxy starts");
    let ok = send(
        "GET",
        &proxy.url("/v1/x"),
        &[("user-agent", "lateen-test"), ("x-request-id", "req-1")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);
    let down = send("GET", &proxy.url("/down"), &[("x-request-id", "req-2")], "")
        .await
        .unwrap();
    assert_eq!(down.status, 503);

    // Istio's default text format, field by field.
    let line = line_with(&log, "\"req-1\"").await;
    let re = regex::Regex::new(&format!(
        r#"^\[\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\] "GET /v1/x HTTP/1.1" 200 - via_upstream - "-" 0 \d+ \d+ \d+ "127.0.0.1" "lateen-test" "req-1" "127.0.0.1:{port}" "127.0.0.1:{up}" outbound\|80\|v1\|svc.test - 127.0.0.1:{port} 127.0.0.1:\d+ - v1$"#,
        port = proxy.port,
        up = v1.port()
    ))
    .unwrap();
    assert!(re.is_match(&line), "{line}");
    let line = line_with(&log, "\"req-2\"").await;
    assert!(line.contains("\" 503 UH no_healthy_upstream "), "{line}");
    assert!(line.ends_with(" down"), "route name last: {line}");

    // JSON encoding (Istio's keys) after a reload.
    proxy.rewrite(&(mesh(&[&v1]) + &config(&log, "      encoding: JSON")));
    // Each poll sends a request: the reload and the log's 1 s flush both come in between.
    let line = std::cell::RefCell::new(String::new());
    let polls = std::cell::Cell::new(0);
    eventually("a JSON line after the reload", || async {
        polls.set(polls.get() + 1);
        let id = format!("json-{}", polls.get());
        send("GET", &proxy.url("/v1/y"), &[("x-request-id", &id)], "")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let found = text
            .lines()
            .find(|l| l.starts_with('{') && l.contains("json-"))
            .map(str::to_string);
        found.map(|l| *line.borrow_mut() = l).is_some()
    })
    .await;
    let line = line.into_inner();
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line after the reload");
    assert_eq!(v["response_code"], 200, "numbers stay numbers: {v}");
    assert_eq!(v["response_code_details"], "via_upstream");
    assert_eq!(v["upstream_cluster"], "outbound|80|v1|svc.test");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/v1/y");
    assert_eq!(v["route_name"], "v1");
    assert_eq!(v["requested_server_name"], serde_json::Value::Null);

    // A custom format.
    proxy.rewrite(
        &(mesh(&[&v1])
            + &config(
                &log,
                r#"      format: "custom %REQ(X-REQUEST-ID)% %RESPONSE_CODE% %UPSTREAM_HOST% %%\n""#,
            )),
    );
    let custom = std::cell::RefCell::new(String::new());
    let polls = std::cell::Cell::new(0);
    eventually("a custom line after the reload", || async {
        polls.set(polls.get() + 1);
        let id = format!("custom-{}", polls.get());
        send("GET", &proxy.url("/v1/z"), &[("x-request-id", &id)], "")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let found = text
            .lines()
            .find(|l| l.starts_with("custom "))
            .map(str::to_string);
        found.map(|l| *custom.borrow_mut() = l).is_some()
    })
    .await;
    let custom = custom.into_inner();
    let re = regex::Regex::new(&format!(
        r#"^custom custom-\d+ 200 127.0.0.1:{} %$"#,
        v1.port()
    ))
    .unwrap();
    assert!(re.is_match(&custom), "{custom}");

    // A typo in an operator is refused with its place, and the running log stays.
    let bad = mesh(&[&v1]) + &config(&log, r#"      format: "%RESPONSE_COD%""#);
    let file = tmp.path().join("bad.yaml");
    std::fs::write(&file, bad.replace("{{PORT}}", "8080")).unwrap();
    let out = std::process::Command::new(paths().bin)
        .arg("validate")
        .arg(&file)
        .arg("--filters-dir")
        .arg(paths().wasm_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("spec.telemetry.accessLog.format")
            && err.contains("unknown command operator %RESPONSE_COD%"),
        "{err}"
    );
    assert!(err.contains("bad.yaml:"), "names the file and line: {err}");
}
