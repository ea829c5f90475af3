//! TLS end to end: Gateway servers terminating TLS (SNI, MUTUAL, versions, ALPN), the
//! https redirect, SNI passthrough, upstream TLS, and mesh mTLS between two proxies with
//! certificates from the built-in CA, rotated without a restart. Clients are the real
//! `curl` and a rustls client; certificates come from `lateen ca`.

use lateen_e2e::*;
use std::path::Path;

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A Gateway with two HTTPS servers on one port (SNI picks the certificate) and an HTTP
/// server on another that redirects to https, routed to one backend.
fn gateway_yaml(a: &Path, b: &Path, root: &Path, http_port: u16, backend: &Backend) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {{{{PORT}}}}, name: https-a, protocol: HTTPS}}
    hosts: [a.example.test]
    bind: 127.0.0.1
    tls: {{mode: SIMPLE, serverCertificate: {a}/cert-chain.pem, privateKey: {a}/key.pem}}
  - port: {{number: {{{{PORT}}}}, name: https-b, protocol: HTTPS}}
    hosts: ["*.secure.test"]
    bind: 127.0.0.1
    tls:
      mode: MUTUAL
      serverCertificate: {b}/cert-chain.pem
      privateKey: {b}/key.pem
      caCertificates: {root}
      minProtocolVersion: TLSV1_3
  - port: {{number: {http_port}, name: http, protocol: HTTP}}
    hosts: ["*"]
    bind: 127.0.0.1
    tls: {{httpsRedirect: true}}
{routes}---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: props, namespace: istio-system}}
spec:
  url: file://{{{{WASM}}}}/test_plugin_header_echo.wasm
  pluginConfig:
    properties: [source.principal, connection.tls_version, connection.requested_server_name, connection.mtls]
"#,
        a = p(a),
        b = p(b),
        root = p(root),
        routes = routed_to("svc.test", backend.port()),
    )
}

#[tokio::test]
async fn gateway_terminates_tls_by_sni_with_mutual_versions_alpn_and_redirect() {
    let ca = MeshCa::new("cluster.local");
    let a = ca.issue("a", "istio-system", "gw", &["a.example.test"]);
    let b = ca.issue("b", "istio-system", "gw", &["*.secure.test"]);
    let client = ca.issue("client", "shop", "cart", &[]);
    let backend = Backend::start("v1").await;
    let http_port = free_port();
    let proxy = Proxy::start(&gateway_yaml(&a, &b, &ca.root(), http_port, &backend))
        .await
        .unwrap();
    let port = proxy.port.to_string();
    let root = p(&ca.root());
    let resolve = |host: &str| format!("{host}:{port}:127.0.0.1");

    // SIMPLE: the certificate of a.example.test, over HTTP/2 by ALPN.
    let r = curl(&[
        "-v",
        "--http2",
        "--cacert",
        &root,
        "--resolve",
        &resolve("a.example.test"),
        "-w",
        "%{http_code} %{http_version}",
        "-o",
        "/dev/null",
        &format!("https://a.example.test:{port}/hello"),
    ])
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "200 2", "{r:?}");
    let seen = backend.last();
    assert_eq!(seen.path, "/hello");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        seen.header("x-prop-connection-tls_version"),
        Some("TLSv1.3")
    );
    assert_eq!(
        seen.header("x-prop-connection-requested_server_name"),
        Some("a.example.test")
    );
    assert_eq!(
        seen.header("x-prop-connection-mtls"),
        Some("00"),
        "no client cert"
    );
    assert_eq!(seen.header("x-prop-source-principal"), None);
    // HTTP/1.1 when the client offers only that.
    let r = curl(&[
        "--http1.1",
        "--cacert",
        &root,
        "--resolve",
        &resolve("a.example.test"),
        "-w",
        "%{http_code} %{http_version}",
        "-o",
        "/dev/null",
        &format!("https://a.example.test:{port}/"),
    ])
    .await;
    assert_eq!(r.stdout, "200 1.1", "{r:?}");

    // SNI picks the other server: its certificate is the wildcard one.
    let conn = TlsConn::connect(proxy.port, "api.secure.test", &ca.root(), Some(&client))
        .await
        .unwrap();
    assert_eq!(conn.server_dns_sans, ["*.secure.test"]);
    let conn = TlsConn::connect(proxy.port, "a.example.test", &ca.root(), None)
        .await
        .unwrap();
    assert_eq!(conn.server_dns_sans, ["a.example.test"]);

    // MUTUAL: without a client certificate the handshake fails...
    let url_b = format!("https://api.secure.test:{port}/b");
    let r = curl(&[
        "--cacert",
        &root,
        "--resolve",
        &resolve("api.secure.test"),
        &url_b,
    ])
    .await;
    assert_ne!(
        r.code, 0,
        "MUTUAL must refuse a client without a certificate: {r:?}"
    );
    // ...with one from the mesh CA it passes, and the plugin sees the client's identity.
    let cert = p(&client.join("cert-chain.pem"));
    let key = p(&client.join("key.pem"));
    let with_cert = [
        "--cacert",
        &root,
        "--cert",
        &cert,
        "--key",
        &key,
        "--resolve",
        &resolve("api.secure.test"),
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
    ];
    let r = curl(&[&with_cert[..], &[url_b.as_str()]].concat()).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "200"), "{r:?}");
    let seen = backend.last();
    assert_eq!(seen.path, "/b");
    assert_eq!(
        seen.header("x-prop-source-principal"),
        Some("cluster.local/ns/shop/sa/cart")
    );
    assert_eq!(seen.header("x-prop-connection-mtls"), Some("01"));
    // The upstream learns the verified client certificate from x-forwarded-client-cert,
    // never from what the client sent in it (Istio's SANITIZE_SET).
    let forged = ["-H", "x-forwarded-client-cert: URI=spiffe://forged"];
    let r = curl(&[&with_cert[..], &forged[..], &[url_b.as_str()]].concat()).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "200"), "{r:?}");
    let xfcc = backend
        .last()
        .header("x-forwarded-client-cert")
        .unwrap_or_default()
        .to_string();
    assert!(
        xfcc.starts_with("Hash=")
            && xfcc.contains(";Subject=\"")
            && xfcc.contains(";URI=spiffe://cluster.local/ns/shop/sa/cart")
            && !xfcc.contains("forged"),
        "{xfcc}"
    );
    // minProtocolVersion TLSV1_3: a TLS 1.2 client is refused.
    let r = curl(&[&with_cert[..], &["--tls-max", "1.2", url_b.as_str()]].concat()).await;
    assert_ne!(r.code, 0, "TLS 1.2 must be refused: {r:?}");
    // A client certificate from another CA is refused.
    let other = MeshCa::new("cluster.local");
    let stranger = other.issue("s", "shop", "cart", &[]);
    let r = curl(&[
        "--cacert",
        &root,
        "--cert",
        &p(&stranger.join("cert-chain.pem")),
        "--key",
        &p(&stranger.join("key.pem")),
        "--resolve",
        &resolve("api.secure.test"),
        &url_b,
    ])
    .await;
    assert_ne!(
        r.code, 0,
        "a certificate from another CA must be refused: {r:?}"
    );

    // An SNI no server takes: the connection is closed and counted.
    let r = curl(&[
        "--cacert",
        &root,
        "--resolve",
        &resolve("other.test"),
        &format!("https://other.test:{port}/"),
    ])
    .await;
    assert_ne!(r.code, 0, "{r:?}");
    let listener = format!("127.0.0.1_{port}");
    assert!(
        proxy
            .stat(&format!("listener.{listener}.no_filter_chain_match"))
            .await
            >= 1.0
    );
    assert!(
        proxy
            .stat(&format!("listener.{listener}.ssl.handshake"))
            .await
            >= 5.0
    );

    // httpsRedirect: 301 to https, same host without the port, same path and query.
    let before = backend.count();
    let r = curl(&[
        "-H",
        "host: a.example.test:8080",
        "-w",
        "%{http_code} %{redirect_url}",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{http_port}/path?q=1"),
    ])
    .await;
    assert_eq!(r.stdout, "301 https://a.example.test/path?q=1", "{r:?}");
    assert_eq!(
        backend.count(),
        before,
        "a redirect never reaches the backend"
    );
}

#[tokio::test]
async fn passthrough_forwards_tls_by_sni_without_terminating_it() {
    // The upstream terminates TLS itself, with a certificate the proxy never sees.
    let pki = TestPki::new();
    let upstream = FileServer::start_tls(b"from the tls upstream".to_vec(), &pki).await;
    let plain = Backend::start("plain").await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  servers:
  - port: {{number: {{{{PORT}}}}, name: tls, protocol: TLS}}
    hosts: [localhost, other.test]
    bind: 127.0.0.1
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: up, namespace: test}}
spec:
  hosts: [up.test]
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {up}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: pt, namespace: test}}
spec:
  hosts: [localhost]
  gateways: [istio-system/gw]
  tls:
  - match: [{{sniHosts: [localhost], port: {{{{PORT}}}}}}]
    route: [{{destination: {{host: up.test, port: {{number: 443}}}}}}]
"#,
        up = upstream.addr.port(),
    );
    let proxy = Proxy::start(&yaml).await.unwrap();
    // The client checks the upstream's own certificate (for `localhost`, signed by the
    // test CA): the bytes went through the proxy untouched. (rustls rather than curl: the
    // test CA's subject equals its leaf's issuer, which OpenSSL takes for self-signed.)
    let mut conn = TlsConn::connect(proxy.port, "localhost", &ca_file, None)
        .await
        .unwrap();
    assert_eq!(conn.server_dns_sans, ["localhost"]);
    let r = conn.get("localhost", "/any").await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "from the tls upstream"));
    // An SNI that a server accepts but no tls route takes is closed.
    let r = curl(&[
        "-k",
        "--resolve",
        &format!("other.test:{}:127.0.0.1", proxy.port),
        &format!("https://other.test:{}/", proxy.port),
    ])
    .await;
    assert_ne!(r.code, 0, "{r:?}");
    let dump = proxy.config_dump().await;
    let l = &dump["listeners"][0];
    assert_eq!(l["tls"][0]["mode"], "PASSTHROUGH", "{l}");
    assert_eq!(
        l["sniRoutes"][0]["destinations"][0][0],
        "outbound|443||up.test"
    );
    // Plain HTTP on a TLS port is not forwarded.
    assert!(get(&proxy.url("/")).await.is_err());
    assert_eq!(plain.count(), 0);
    let up = proxy
        .stat("cluster.outbound|443||up.test.upstream_cx_total")
        .await;
    assert_eq!(up, 1.0, "one forwarded connection");
}

/// Proxy B: a Gateway that takes mesh mTLS (ISTIO_MUTUAL) with its workload identity and
/// routes to a backend; a plugin shows the caller's identity to the backend.
fn server_proxy_yaml(identity: &Path, root: &Path, backend: &Backend) -> String {
    MTLS_GATEWAY.to_string()
        + &routed_to("svc.test", backend.port())
        + r#"---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: props, namespace: istio-system}
spec:
  url: file://{{WASM}}/test_plugin_header_echo.wasm
  pluginConfig:
    properties: [source.principal, connection.uri_san_peer_certificate]
"# + &identity_bootstrap(identity, root)
}

/// Proxy A: a plain HTTP gateway whose cluster `b.mesh` is proxy B, reached over
/// ISTIO_MUTUAL with its own workload identity; `sans` are the DestinationRule's
/// subjectAltNames.
fn client_proxy_yaml(identity: &Path, root: &Path, b_port: u16, sans: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  servers:
  - port: {{number: {{{{PORT}}}}, name: http, protocol: HTTP}}
    hosts: ["*"]
    bind: 127.0.0.1
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: b, namespace: test}}
spec:
  hosts: [b.mesh]
  ports: [{{number: 443, name: https, protocol: HTTPS}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{https: {b_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: b, namespace: test}}
spec:
  host: b.mesh
  trafficPolicy:
    tls: {{mode: ISTIO_MUTUAL, subjectAltNames: [{sans}]}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: test}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: b.mesh}}}}]
{boot}"#,
        boot = identity_bootstrap(identity, root),
    )
}

#[tokio::test]
async fn mesh_mtls_between_two_proxies_with_spiffe_identities_and_rotation() {
    let ca = MeshCa::new("cluster.local");
    let a_id = ca.issue("a", "shop", "frontend", &[]);
    let b_id = ca.issue("b", "shop", "backend", &["before.rotation"]);
    let backend = Backend::start("app").await;
    let b = Proxy::start(&server_proxy_yaml(&b_id, &ca.root(), &backend))
        .await
        .unwrap();
    let a = Proxy::start(&client_proxy_yaml(
        &a_id,
        &ca.root(),
        b.port,
        "spiffe://cluster.local/ns/shop/sa/backend",
    ))
    .await
    .unwrap();

    // A → B over mTLS: each proxy presents its workload certificate and checks the other's.
    let r = get(&a.url("/through-the-mesh")).await.unwrap();
    assert_eq!(r.status, 200, "{}", a.log());
    let seen = backend.last();
    assert_eq!(seen.path, "/through-the-mesh");
    assert_eq!(
        seen.header("x-prop-source-principal"),
        Some("cluster.local/ns/shop/sa/frontend")
    );
    assert_eq!(
        seen.header("x-prop-connection-uri_san_peer_certificate"),
        Some("spiffe://cluster.local/ns/shop/sa/frontend")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));

    // A client without a mesh certificate cannot reach B.
    let r = curl(&["-k", &format!("https://127.0.0.1:{}/", b.port)]).await;
    assert_ne!(r.code, 0, "{r:?}");
    // B's identity is not the one A's DestinationRule names: A refuses it (503 UF).
    a.rewrite(&client_proxy_yaml(
        &a_id,
        &ca.root(),
        b.port,
        "spiffe://cluster.local/ns/shop/sa/someone-else",
    ));
    eventually("A refuses B's identity", || async {
        get(&a.url("/x")).await.is_ok_and(|r| r.status == 503)
    })
    .await;
    let r = get(&a.url("/x")).await.unwrap();
    assert!(r.body.contains("connect"), "{}", r.body);

    // Rotation: B's certificate is re-issued in place. A connection opened before keeps
    // working; new connections get the new certificate; B never restarts.
    let mut old = TlsConn::connect(b.port, "b.mesh", &ca.root(), Some(&a_id))
        .await
        .unwrap();
    assert_eq!(old.server_dns_sans, ["before.rotation"]);
    assert_eq!(old.get("b.mesh", "/one").await.unwrap().status, 200);
    let pid = b.pid();
    ca.issue("b", "shop", "backend", &["after.rotation"]);
    eventually("new connections get the rotated certificate", || async {
        TlsConn::connect(b.port, "b.mesh", &ca.root(), Some(&a_id))
            .await
            .is_ok_and(|c| c.server_dns_sans == ["after.rotation"])
    })
    .await;
    assert_eq!(old.get("b.mesh", "/two").await.unwrap().status, 200);
    assert_eq!(backend.last().path, "/two");
    assert_eq!(b.pid(), pid);
    assert_eq!(
        old.server_uri_sans,
        ["spiffe://cluster.local/ns/shop/sa/backend"]
    );
}

#[tokio::test]
async fn upstream_simple_tls_checks_the_name_or_subject_alt_names() {
    let pki = TestPki::new();
    let upstream = FileServer::start_tls(b"secret".to_vec(), &pki).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let yaml = |tls: &str| {
        format!(
            r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  servers:
  - port: {{number: {{{{PORT}}}}, name: http, protocol: HTTP}}
    hosts: ["*"]
    bind: 127.0.0.1
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: up, namespace: test}}
spec:
  hosts: [localhost]
  ports: [{{number: 443, name: https, protocol: HTTPS}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{https: {up}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: up, namespace: test}}
spec:
  host: localhost
  trafficPolicy:
    tls: {tls}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: test}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: localhost}}}}]
"#,
            up = upstream.addr.port()
        )
    };
    let ca = p(&ca_file);
    // The SNI defaults to the service host, whose name the certificate carries.
    let proxy = Proxy::start(&yaml(&format!("{{mode: SIMPLE, caCertificates: {ca}}}")))
        .await
        .unwrap();
    let r = get(&proxy.url("/")).await.unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "secret"),
        "{}",
        proxy.log()
    );
    // A SAN the certificate does not carry: the handshake is refused, 503 UF.
    proxy.rewrite(&yaml(&format!(
        "{{mode: SIMPLE, caCertificates: {ca}, subjectAltNames: [other.test]}}"
    )));
    eventually("a wrong subjectAltName fails the upstream", || async {
        get(&proxy.url("/")).await.is_ok_and(|r| r.status == 503)
    })
    .await;
    // The SAN it does carry.
    proxy.rewrite(&yaml(&format!(
        "{{mode: SIMPLE, caCertificates: {ca}, sni: localhost, subjectAltNames: [\"127.0.0.1\", localhost]}}"
    )));
    eventually("the right subjectAltName passes", || async {
        get(&proxy.url("/")).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    // Plain HTTP to a TLS upstream (no tls) fails; a CA that did not sign it fails too.
    let other = MeshCa::new("cluster.local");
    proxy.rewrite(&yaml(&format!(
        "{{mode: SIMPLE, caCertificates: {}}}",
        p(&other.root())
    )));
    eventually("an untrusted upstream certificate fails", || async {
        get(&proxy.url("/")).await.is_ok_and(|r| r.status == 503)
    })
    .await;
    assert!(
        proxy
            .stat("cluster.outbound|443||localhost.upstream_cx_connect_fail")
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn bad_tls_config_is_refused_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    let write = |tls: &str| {
        std::fs::write(
            &cfg,
            format!(
                "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  servers:\n  - port: {{number: 8443, name: https, protocol: HTTPS}}\n    hosts: [\"*\"]\n    tls: {tls}\n"
            ),
        )
        .unwrap();
    };
    let validate = || {
        let out = std::process::Command::new(paths().bin)
            .args(["validate", &p(&cfg), "--filters-dir"])
            .arg(paths().wasm_dir)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
    };
    write("{mode: SIMPLE, serverCertificate: /nonexistent/cert.pem, privateKey: /nonexistent/key.pem}");
    let e = validate();
    assert!(
        e.contains("gw.yaml:8")
            && e.contains("spec.servers[0].tls")
            && e.contains("/nonexistent/cert.pem"),
        "{e}"
    );
    write("{mode: MUTUAL, serverCertificate: c.pem, privateKey: k.pem}");
    let e = validate();
    assert!(
        e.contains("spec.servers[0].tls.caCertificates") && e.contains("MUTUAL"),
        "{e}"
    );
    write("{mode: SIMPLE, credentialName: gw-cert}");
    let e = validate();
    assert!(e.contains("credentials/gw-cert/tls.crt"), "{e}");
    // A key that is not the certificate's.
    let ca = MeshCa::new("cluster.local");
    let one = ca.issue("one", "ns", "a", &[]);
    let two = ca.issue("two", "ns", "b", &[]);
    write(&format!(
        "{{mode: SIMPLE, serverCertificate: {}/cert-chain.pem, privateKey: {}/key.pem}}",
        p(&one),
        p(&two)
    ));
    let e = validate();
    assert!(e.contains("does not match the certificate"), "{e}");
    write(&format!(
        "{{mode: SIMPLE, serverCertificate: {0}/cert-chain.pem, privateKey: {0}/key.pem, minProtocolVersion: TLSV9}}",
        p(&one)
    ));
    let e = validate();
    assert!(e.contains("unknown TLS protocol version `TLSV9`"), "{e}");
    // One port cannot speak plain HTTP for one server and TLS for another: the error
    // points at the TLS server (the second, on line 11).
    std::fs::write(
        &cfg,
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  servers:\n  - port: {{number: 8443, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n  - hosts: [\"*\"]\n    tls: {{mode: SIMPLE, serverCertificate: {0}/cert-chain.pem, privateKey: {0}/key.pem}}\n    port:\n      number: 8443\n      name: https\n      protocol: HTTPS\n",
            p(&one)
        ),
    )
    .unwrap();
    let e = validate();
    assert!(
        e.contains("gw.yaml:11")
            && e.contains("spec.servers[1].port.number")
            && e.contains("plain HTTP in Gateway istio-system/gw"),
        "{e}"
    );
}
