//! xDS conformance: a fake ADS control plane (a tonic server in tests/support/xds.rs), the
//! real binary and real upstreams on loopback.

use lateen_e2e::xds::*;
use lateen_e2e::*;
use prost::Message;
use sha2::Digest;

fn bootstrap_for(cp: &ControlPlane) -> String {
    bootstrap(&format!(
        "  workload: {{name: gw-1, namespace: edge, labels: {{app: gw, version: v1}}}}\n\
         \x20 xds:\n\
         \x20   address: 127.0.0.1:{}\n\
         \x20   node: {{ip: 10.0.0.7, clusterId: east}}\n\
         \x20   initialFetchTimeout: 20s",
        cp.port
    ))
}

/// CDS (c1 → backend a), EDS, LDS (listener on `lport`, RDS `r1`) and RDS at `version`.
fn push_all(cp: &ControlPlane, version: &str, lport: u16, a: &Backend, filters: &[&str]) {
    cp.set(CLUSTER, version, vec![eds_cluster("c1")]);
    cp.set(ENDPOINT, version, vec![endpoints("c1", &[(a.port(), 1)])]);
    cp.set(
        LISTENER,
        version,
        vec![listener("l1", lport, "r1", filters)],
    );
    cp.set(
        ROUTE,
        version,
        vec![route_config("r1", vec![route("/", &[("c1", 1)])])],
    );
}

async fn served_by(url: &str) -> Option<String> {
    let r = get(url).await.ok()?;
    (r.status == 200)
        .then(|| r.header("x-backend").map(str::to_string))
        .flatten()
}

fn acked(cp: &ControlPlane, t: &str, version: &str) -> bool {
    cp.last_reply(t)
        .is_some_and(|r| r.version_info == version && r.error_detail.is_none())
}

#[tokio::test]
async fn ads_first_request_carries_the_node_then_traffic_follows_the_push() {
    let cp = ControlPlane::start().await;
    let a = Backend::start("a").await;
    let lport = free_port();
    let mut proxy = Proxy::spawn(&bootstrap_for(&cp), &[], &[]).expect("lateen spawns");

    // 1. The first request: the node, empty version and nonce, clusters first.
    eventually("the first ADS request", || async {
        !cp.requests().is_empty()
    })
    .await;
    let first = cp.requests()[0].clone();
    assert_eq!(
        first.type_url, CLUSTER,
        "CDS is asked for first, as Envoy does"
    );
    assert_eq!(first.version_info, "");
    assert_eq!(first.response_nonce, "");
    let node = first.node.expect("the first request carries the node");
    assert_eq!(node.id, "router~10.0.0.7~gw-1.edge~edge.svc.cluster.local");
    assert_eq!(node.cluster, "gw-1.edge");
    let md = node.metadata.expect("node metadata").fields;
    let text = |k: &str| match md.get(k).and_then(|v| v.kind.clone()) {
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => s,
        other => panic!("metadata {k}: {other:?}"),
    };
    assert_eq!(text("NAMESPACE"), "edge");
    assert_eq!(text("INSTANCE_IPS"), "10.0.0.7");
    assert_eq!(text("CLUSTER_ID"), "east");
    assert_eq!(text("NAME"), "gw-1");
    assert!(!text("ISTIO_VERSION").is_empty());
    match md.get("LABELS").and_then(|v| v.kind.clone()) {
        Some(envoy_types::pb::google::protobuf::value::Kind::StructValue(s)) => {
            assert!(s.fields.contains_key("app") && s.fields.contains_key("version"))
        }
        other => panic!("LABELS: {other:?}"),
    }
    let later: Vec<_> = cp.requests().into_iter().skip(1).collect();
    assert!(
        later.iter().all(|r| r.node.is_none()),
        "the node goes on the first request only"
    );

    // Until the first config comes, the admin API answers PRE_INITIALIZING (as Envoy's
    // does) and no listener is bound.
    let admin = |p: &str| format!("http://127.0.0.1:{}{p}", proxy.admin);
    eventually("the admin API up during the initial fetch", || async {
        get(&admin("/ready"))
            .await
            .is_ok_and(|r| r.status == 503 && r.body.trim() == "PRE_INITIALIZING")
    })
    .await;
    let info = get(&admin("/server_info")).await.expect("/server_info");
    let info: serde_json::Value = serde_json::from_str(&info.body).expect("JSON");
    assert_eq!(info["state"], "PRE_INITIALIZING", "{info}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", lport)).is_err(),
        "no listener before the first config"
    );

    // 2. Push in Envoy's order; the start waits for it, then traffic flows.
    push_all(&cp, "v1", lport, &a, &[]);
    proxy
        .wait_ready()
        .await
        .expect("proxy starts once the push came");
    let url = format!("http://127.0.0.1:{lport}/hello");
    assert_eq!(served_by(&url).await.as_deref(), Some("a"));
    for t in [CLUSTER, ENDPOINT, LISTENER, ROUTE] {
        eventually(&format!("{t} ACKed at v1"), || async {
            acked(&cp, t, "v1")
        })
        .await;
    }
    // EDS and RDS subscribe by the names the clusters and listeners give.
    let eds = cp.last_reply(ENDPOINT).expect("EDS request");
    assert_eq!(names(&eds), ["c1".to_string()].into());
    let rds = cp.last_reply(ROUTE).expect("RDS request");
    assert_eq!(names(&rds), ["r1".to_string()].into());

    // The proxy sends each ACK before it records the version in its status.
    eventually("the dump shows v1 for clusters and routes", || async {
        let dump = proxy.config_dump().await;
        dump["xds"]["types"]["Cluster"]["version"] == "v1"
            && dump["xds"]["types"]["RouteConfiguration"]["version"] == "v1"
    })
    .await;
    let dump = proxy.config_dump().await;
    assert_eq!(dump["xds"]["state"], "CONNECTED");
    assert!(dump["xds"]["nodeId"]
        .as_str()
        .is_some_and(|n| n.starts_with("router~")));
    // `lateen proxy-status` shows each type SYNCED at its version.
    let out = std::process::Command::new(paths().bin)
        .args([
            "proxy-status",
            "--admin",
            &format!("127.0.0.1:{}", proxy.admin),
        ])
        .output()
        .expect("proxy-status runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("Cluster ") && l.contains("SYNCED") && l.contains("v1")),
        "{text}"
    );
}

#[tokio::test]
async fn ads_updates_removals_and_nacks() {
    let cp = ControlPlane::start().await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lport = free_port();
    push_all(&cp, "v1", lport, &a, &[]);
    let proxy = Proxy::start(&bootstrap_for(&cp))
        .await
        .expect("proxy starts");
    let url = |p: &str| format!("http://127.0.0.1:{lport}{p}");
    assert_eq!(served_by(&url("/x")).await.as_deref(), Some("a"));

    // 3. EDS and RDS updates take effect on the same stream.
    cp.set(CLUSTER, "v2", vec![eds_cluster("c1"), eds_cluster("c2")]);
    cp.set(
        ENDPOINT,
        "v2",
        vec![
            endpoints("c1", &[(b.port(), 1)]),
            endpoints("c2", &[(a.port(), 1)]),
        ],
    );
    cp.set(
        ROUTE,
        "v2",
        vec![route_config(
            "r1",
            vec![route("/two", &[("c2", 1)]), route("/", &[("c1", 1)])],
        )],
    );
    eventually("EDS moves c1 to b", || async {
        served_by(&url("/x")).await.as_deref() == Some("b")
    })
    .await;
    eventually("RDS adds /two → c2", || async {
        served_by(&url("/two")).await.as_deref() == Some("a")
    })
    .await;
    for t in [CLUSTER, ENDPOINT, ROUTE] {
        eventually(&format!("{t} ACKed at v2"), || async {
            acked(&cp, t, "v2")
        })
        .await;
    }
    assert_eq!(cp.streams(), 1, "updates came without a reconnect");

    // Endpoint health and weights: an UNHEALTHY endpoint takes no traffic; weights split.
    use envoy_types::pb::envoy::config::core::v3::HealthStatus;
    cp.set(
        ENDPOINT,
        "v2h",
        vec![
            endpoints_with_health(
                "c1",
                &[
                    (a.port(), 1, HealthStatus::Unhealthy),
                    (b.port(), 1, HealthStatus::Healthy),
                ],
            ),
            endpoints_with_health(
                "c2",
                &[
                    (a.port(), 3, HealthStatus::Unknown),
                    (b.port(), 1, HealthStatus::Healthy),
                ],
            ),
        ],
    );
    eventually("EDS v2h ACKed", || async { acked(&cp, ENDPOINT, "v2h") }).await;
    let mut to_a = 0;
    for _ in 0..40 {
        assert_eq!(
            served_by(&url("/x")).await.as_deref(),
            Some("b"),
            "a is unhealthy"
        );
        if served_by(&url("/two")).await.as_deref() == Some("a") {
            to_a += 1;
        }
    }
    assert_eq!(to_a, 30, "weights 3:1 under round robin");

    // 4. A cluster left out of the state of the world is removed.
    cp.set(CLUSTER, "v3", vec![eds_cluster("c1")]);
    eventually("c2 removed", || async {
        get(&url("/two")).await.is_ok_and(|r| r.status == 503)
    })
    .await;
    let clusters = get(&format!("http://127.0.0.1:{}/clusters", proxy.admin))
        .await
        .expect("clusters");
    assert!(!clusters.body.contains("c2::"), "{}", clusters.body);
    assert!(clusters.body.contains("c1::"), "{}", clusters.body);
    eventually("EDS unsubscribes from c2", || async {
        cp.last_reply(ENDPOINT)
            .is_some_and(|r| names(&r) == ["c1".to_string()].into())
    })
    .await;

    // LDS adds a listener (bound without a restart) and removes one (closed).
    let lport2 = free_port();
    cp.set(LISTENER, "v2", vec![listener("l2", lport2, "r1", &[])]);
    eventually("l2 serves on its new port", || async {
        served_by(&format!("http://127.0.0.1:{lport2}/x"))
            .await
            .as_deref()
            == Some("b")
    })
    .await;
    eventually("l1 closed", || async { get(&url("/x")).await.is_err() }).await;
    let url = |p: &str| format!("http://127.0.0.1:{lport2}{p}");

    // 5. An invalid update is NACKed with the old version, naming what is wrong; the old
    // config keeps serving.
    let mut bad = envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(
        eds_cluster("c1").1.value.as_slice(),
    )
    .expect("decode");
    bad.lb_policy = 2; // RING_HASH
    cp.set(CLUSTER, "v4", vec![("c1".into(), any(&bad))]);
    eventually("CDS v4 NACKed", || async {
        cp.last_reply(CLUSTER)
            .is_some_and(|r| r.error_detail.is_some())
    })
    .await;
    let nack = cp.last_reply(CLUSTER).expect("NACK");
    assert_eq!(
        nack.version_info, "v3",
        "a NACK carries the version still serving"
    );
    let msg = nack.error_detail.expect("error_detail").message;
    assert!(
        msg.contains("Cluster `c1`") && msg.contains("lb_policy"),
        "{msg}"
    );
    assert_eq!(served_by(&url("/x")).await.as_deref(), Some("b"));
    // The NACK is sent before the proxy records it in its status.
    eventually("server_info shows the NACK of v4", || async {
        let info = get(&format!("http://127.0.0.1:{}/server_info", proxy.admin))
            .await
            .expect("server_info");
        let v: serde_json::Value = serde_json::from_str(&info.body).expect("json");
        v["xds"]["types"]["Cluster"]["version"] == "v3"
            && v["xds"]["types"]["Cluster"]["lastNack"]["version"] == "v4"
    })
    .await;

    // A field outside the subset is refused by name.
    let mut r = route("/", &[("c1", 1)]);
    r.stat_prefix = "unsupported".into();
    cp.set(ROUTE, "v5", vec![route_config("r1", vec![r])]);
    eventually("RDS v5 NACKed", || async {
        cp.last_reply(ROUTE)
            .is_some_and(|r| r.error_detail.is_some())
    })
    .await;
    let msg = cp
        .last_reply(ROUTE)
        .and_then(|r| r.error_detail)
        .expect("NACK")
        .message;
    assert!(
        msg.contains("RouteConfiguration `r1`") && msg.contains("stat_prefix"),
        "{msg}"
    );
    assert_eq!(
        served_by(&url("/two")).await,
        None,
        "v2 routes stay as they were"
    );
    assert_eq!(served_by(&url("/x")).await.as_deref(), Some("b"));
}

#[tokio::test]
async fn ads_wasm_filter_from_ecds() {
    let cp = ControlPlane::start().await;
    let a = Backend::start("a").await;
    let lport = free_port();
    let echo = wasm("test_plugin_header_echo");
    push_all(&cp, "v1", lport, &a, &["echo"]);
    cp.set(
        EXTENSION,
        "v1",
        vec![wasm_filter(
            "echo",
            &echo,
            r#"{"value":"from-ecds"}"#,
            false,
        )],
    );
    let _proxy = Proxy::start(&bootstrap_for(&cp))
        .await
        .expect("proxy starts");
    let url = format!("http://127.0.0.1:{lport}/w");
    assert_eq!(served_by(&url).await.as_deref(), Some("a"));
    assert_eq!(a.last().header("x-plugin-added"), Some("from-ecds"));
    eventually("ECDS ACKed", || async { acked(&cp, EXTENSION, "v1") }).await;
    assert_eq!(
        names(&cp.last_reply(EXTENSION).expect("ECDS request")),
        ["echo".to_string()].into()
    );

    // A new configuration for the filter applies.
    cp.set(
        EXTENSION,
        "v2",
        vec![wasm_filter("echo", &echo, r#"{"value":"second"}"#, false)],
    );
    eventually("the new filter config", || async {
        served_by(&url).await.is_some() && a.last().header("x-plugin-added") == Some("second")
    })
    .await;

    // A remote module (http_uri with sha256), fetched through the plugin fetcher; a wrong
    // sha256 is NACKed naming it.
    let bytes = std::fs::read(&echo).expect("module");
    let sha = hex_string(&sha2::Sha256::digest(&bytes));
    let server = FileServer::start(bytes).await;
    let uri = format!("http://{}/echo.wasm", server.addr);
    cp.set(
        EXTENSION,
        "r1",
        vec![wasm_filter_remote(
            "echo",
            &uri,
            &sha,
            r#"{"value":"remote"}"#,
        )],
    );
    eventually("the remote module", || async {
        served_by(&url).await.is_some() && a.last().header("x-plugin-added") == Some("remote")
    })
    .await;
    let wrong = "0".repeat(64);
    cp.set(
        EXTENSION,
        "r2",
        vec![wasm_filter_remote("echo", &uri, &wrong, r#"{"value":"x"}"#)],
    );
    eventually("ECDS r2 NACKed", || async {
        cp.last_reply(EXTENSION)
            .is_some_and(|r| r.error_detail.is_some())
    })
    .await;
    let msg = cp
        .last_reply(EXTENSION)
        .and_then(|r| r.error_detail)
        .expect("NACK")
        .message;
    assert!(msg.contains("sha256"), "{msg}");
    cp.set(
        EXTENSION,
        "v2",
        vec![wasm_filter("echo", &echo, r#"{"value":"second"}"#, false)],
    );
    eventually("back to the local module", || async {
        served_by(&url).await.is_some() && a.last().header("x-plugin-added") == Some("second")
    })
    .await;

    // The plugin takes effect before its ACK is sent: wait for the ACK, or the r2 NACK
    // still last would pass for v3's.
    eventually("ECDS v2 ACKed", || async {
        cp.last_reply(EXTENSION)
            .is_some_and(|r| r.error_detail.is_none() && r.version_info == "v2")
    })
    .await;
    // A module that is not wasm: FAIL_CLOSED NACKs it and the filter keeps running ...
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not a wasm module").expect("write");
    cp.set(
        EXTENSION,
        "v3",
        vec![wasm_filter("echo", &junk, "{}", false)],
    );
    eventually("ECDS v3 NACKed", || async {
        cp.last_reply(EXTENSION)
            .is_some_and(|r| r.error_detail.is_some())
    })
    .await;
    let nack = cp.last_reply(EXTENSION).expect("NACK");
    assert_eq!(nack.version_info, "v2");
    let msg = nack.error_detail.expect("detail").message;
    assert!(msg.contains("echo"), "{msg}");
    assert_eq!(served_by(&url).await.as_deref(), Some("a"));
    assert_eq!(a.last().header("x-plugin-added"), Some("second"));

    // ... while FAIL_OPEN accepts it and skips the filter.
    cp.set(
        EXTENSION,
        "v4",
        vec![wasm_filter("echo", &junk, "{}", true)],
    );
    eventually("ECDS v4 ACKed", || async { acked(&cp, EXTENSION, "v4") }).await;
    assert_eq!(served_by(&url).await.as_deref(), Some("a"));
    assert_eq!(
        a.last().header("x-plugin-added"),
        None,
        "the filter is skipped"
    );
}

#[tokio::test]
async fn ads_reconnects_and_keeps_serving() {
    let cp = ControlPlane::start().await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lport = free_port();
    push_all(&cp, "v1", lport, &a, &[]);
    let proxy = Proxy::start(&bootstrap_for(&cp))
        .await
        .expect("proxy starts");
    let url = format!("http://127.0.0.1:{lport}/r");
    for t in [CLUSTER, ENDPOINT, LISTENER, ROUTE] {
        eventually(&format!("{t} ACKed"), || async { acked(&cp, t, "v1") }).await;
    }
    let before = cp.requests().len();

    // 7. The stream dies; requests keep being served while the client reconnects.
    cp.kill_streams();
    for _ in 0..20 {
        assert_eq!(served_by(&url).await.as_deref(), Some("a"));
    }
    eventually("a second stream", || async { cp.streams() >= 2 }).await;
    // The new stream resubscribes with the versions it has, and the node again. The stream
    // is counted when it opens, its first request a moment later: wait for that.
    // Its resubscriptions come as a burst the control plane records one by one: wait for
    // the last one checked below (the route) as well.
    eventually(
        "a request on the new stream, and its route resubscription",
        || async {
            let again = cp.requests();
            let again = &again[before.min(again.len())..];
            again.iter().any(|r| r.node.is_some())
                && again
                    .iter()
                    .any(|r| r.type_url == ROUTE && names(r) == ["r1".to_string()].into())
        },
    )
    .await;
    let again: Vec<_> = cp.requests().into_iter().skip(before).collect();
    let first = again
        .iter()
        .find(|r| r.node.is_some())
        .expect("node on the new stream");
    assert_eq!(first.type_url, CLUSTER);
    assert_eq!(first.version_info, "v1");
    assert_eq!(first.response_nonce, "", "nonces do not outlive a stream");
    assert!(again
        .iter()
        .any(|r| r.type_url == ROUTE && names(r) == ["r1".to_string()].into()));

    // And pushes on the new stream apply.
    cp.set(ENDPOINT, "v2", vec![endpoints("c1", &[(b.port(), 1)])]);
    eventually("EDS v2 on the new stream", || async {
        served_by(&url).await.as_deref() == Some("b")
    })
    .await;
    let dump = proxy.config_dump().await;
    assert_eq!(dump["xds"]["state"], "CONNECTED");
    assert!(dump["xds"]["connects"].as_u64() >= Some(2));
}

fn files_with_plugin(cp: &ControlPlane, a: &Backend, value: &str) -> String {
    mesh(&[a])
        + &bootstrap_for(cp)
        + &format!(
            r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: header-echo, namespace: istio-system}}
spec:
  url: file://{{{{WASM}}}}/test_plugin_header_echo.wasm
  pluginConfig: {{value: {value}}}
"#
        )
}

#[tokio::test]
async fn ads_and_files_make_one_config() {
    let cp = ControlPlane::start().await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lport = free_port();
    // Clusters from both sources: c1 from CDS, the ServiceEntry's from the files.
    push_all(&cp, "v1", lport, &b, &[]);
    cp.set(
        ROUTE,
        "v1",
        vec![route_config(
            "r1",
            vec![
                route("/file", &[("outbound|80|a|svc.test", 1)]),
                route("/", &[("c1", 1)]),
            ],
        )],
    );
    let proxy = Proxy::start(&files_with_plugin(&cp, &a, "one"))
        .await
        .expect("proxy starts");
    let url = |p: &str| format!("http://127.0.0.1:{lport}{p}");
    assert_eq!(served_by(&url("/file")).await.as_deref(), Some("a"));
    // A WasmPlugin from the files runs on the xDS listener too.
    assert_eq!(a.last().header("x-plugin-added"), Some("one"));
    assert_eq!(served_by(&url("/")).await.as_deref(), Some("b"));

    // A file change rebuilds with the xDS state kept, and the reverse.
    proxy.rewrite(&files_with_plugin(&cp, &a, "two"));
    eventually("the file change on the xDS listener", || async {
        served_by(&url("/file")).await.as_deref() == Some("a")
            && a.last().header("x-plugin-added") == Some("two")
    })
    .await;
    assert_eq!(served_by(&url("/")).await.as_deref(), Some("b"));
    cp.set(ENDPOINT, "v2", vec![endpoints("c1", &[(a.port(), 1)])]);
    eventually("EDS after the file change", || async {
        served_by(&url("/")).await.as_deref() == Some("a")
            && a.last().header("x-plugin-added") == Some("two")
    })
    .await;
}

#[test]
fn bad_xds_bootstrap_settings_are_refused_with_their_line() {
    let err = refused(
        "xds.yaml",
        &bootstrap("  xds:\n    address: http://istiod:15010\n"),
    );
    assert!(
        err.contains("xds.yaml:7") && err.contains("spec.xds.address") && err.contains("host:port"),
        "{err}"
    );
    let err = refused(
        "xds.yaml",
        &bootstrap("  xds:\n    address: istiod:15010\n    node: {type: gateway}\n"),
    );
    assert!(
        err.contains("spec.xds.node.type") && err.contains("router or sidecar"),
        "{err}"
    );
}

/// A WasmPlugin as istiod sends it over ECDS (an `oci://` module without sha256, an empty
/// configuration, the pull policy in the VM's environment) runs. An unrelated push reuses
/// the loaded plugin (no pull, even under `Always`); a new version of the config pulls
/// again, and with the registry gone the cached module serves.
#[tokio::test]
async fn ads_wasm_plugin_from_oci_as_istiod_sends_it() {
    let registry = Registry::start().await;
    let echo = std::fs::read(wasm("test_plugin_header_echo")).expect("header-echo module");
    registry.push_wasm_image("plugins/echo", "v1", &echo).await;
    let oci = format!("oci://{}/plugins/echo:v1", registry.addr);
    let cp = ControlPlane::start().await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lport = free_port();
    push_all(&cp, "v1", lport, &a, &["echo"]);
    cp.set(
        EXTENSION,
        "v1",
        vec![wasm_filter_istiod("echo", &oci, "Always", "1")],
    );
    let proxy = Proxy::start(&bootstrap_for(&cp))
        .await
        .expect("proxy starts");
    let url = format!("http://127.0.0.1:{lport}/w");
    assert_eq!(served_by(&url).await.as_deref(), Some("a"));
    assert_eq!(
        a.last().header("x-plugin-added"),
        Some("yes"),
        "the plugin runs with its default (empty) configuration"
    );
    eventually("ECDS ACKed", || async { acked(&cp, EXTENSION, "v1") }).await;

    // The registry goes away; an EDS push rebuilds without pulling.
    drop(registry);
    cp.set(ENDPOINT, "v2", vec![endpoints("c1", &[(b.port(), 1)])]);
    eventually("EDS v2", || async {
        served_by(&url).await.as_deref() == Some("b")
    })
    .await;
    eventually("EDS v2 ACKed", || async { acked(&cp, ENDPOINT, "v2") }).await;
    assert_eq!(b.last().header("x-plugin-added"), Some("yes"));
    assert!(
        !proxy.log().contains("fetching oci://"),
        "an unrelated push pulled the module:\n{}",
        proxy.log()
    );

    // A new resource version pulls again (Always); the registry is gone, so the cached
    // module serves, with a warning.
    cp.set(
        EXTENSION,
        "v2",
        vec![wasm_filter_istiod("echo", &oci, "Always", "2")],
    );
    eventually("ECDS v2 ACKed", || async { acked(&cp, EXTENSION, "v2") }).await;
    assert!(
        proxy.log().contains("using the cached module"),
        "{}",
        proxy.log()
    );
    assert_eq!(served_by(&url).await.as_deref(), Some("b"));
    assert_eq!(b.last().header("x-plugin-added"), Some("yes"));
}
