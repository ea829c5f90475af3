//! Sidecar mode in network namespaces the test makes: a client namespace and a server
//! namespace joined by a veth pair, each with its sidecar and the interception rules of
//! `lateen iptables`. The client app (curl and bash, as uid 1000) only knows the server's
//! address; its sidecar routes with the mesh's VirtualService, forwards TCP and passes
//! unknown destinations through, speaking mTLS (certificates from `lateen ca`) to the
//! server's sidecar, which takes only mTLS under PeerAuthentication STRICT and plain text
//! too under PERMISSIVE.

use lateen_e2e::*;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A network namespace, deleted (with its processes' sockets) on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Result<Netns, String> {
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip (apt-get install iproute2)");
        if out.status.success() {
            Ok(Netns(name))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }

    /// Runs a command in the namespace; panics when it fails.
    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} in {}: {}",
            self.0,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs a command as the unprivileged app (uid and gid 1000), which the proxy's
    /// iptables rules intercept.
    fn app(&self, args: &[&str]) -> Output {
        let mut c = self.cmd("setpriv");
        c.args(["--reuid=1000", "--regid=1000", "--clear-groups"])
            .args(args);
        c.output().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server namespace's app: HTTP on 8080 and 9999, HTTPS on 8443 (its own TLS, with the
/// certificate and key given), each answering with the client's address, its port and the
/// path, and a TCP greeter-echo on 5432.
const SERVER: &str = r#"
import http.server, socket, socketserver, ssl, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("from=%s port=%d path=%s" % (self.client_address[0], self.server.server_address[1], self.path)).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"db\n")
        while True:
            d = self.request.recv(1024)
            if not d:
                return
            self.request.sendall(d)
ip = sys.argv[1]
socketserver.ThreadingTCPServer.allow_reuse_address = True
for port in (8080, 9999, 8443):
    s = http.server.ThreadingHTTPServer((ip, port), H)
    if port == 8443:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        s.socket = ctx.wrap_socket(s.socket, server_side=True)
    threading.Thread(target=s.serve_forever, daemon=True).start()
socketserver.ThreadingTCPServer((ip, 5432), Echo).serve_forever()
"#;

/// A sidecar's Bootstrap: its workload and the identity `lateen ca issue` made for it.
fn bootstrap(name: &str, certs: &std::path::Path, root: &std::path::Path) -> String {
    format!(
        r#"apiVersion: lateen.io/v1alpha1
kind: Bootstrap
metadata: {{name: lateen, namespace: istio-system}}
spec:
  mode: sidecar
  workload: {{name: {name}, namespace: shop, labels: {{app: {name}}}}}
  identity: {{certChain: {c}/cert-chain.pem, privateKey: {c}/key.pem, rootCert: {r}}}
"#,
        c = certs.display(),
        r = root.display()
    )
}

/// The server's PeerAuthentication, and a Sidecar whose ingress port 7070 goes to the
/// app's 8080.
fn server_config(mode: &str) -> String {
    format!(
        r#"---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: shop}}
spec:
  mtls: {{mode: {mode}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  ingress:
  - port: {{number: 7070, protocol: TCP, name: tcp-alias}}
    defaultEndpoint: "0.0.0.0:8080"
"#
    )
}

/// A Sidecar for the client that knows only the web service, and closes the rest.
const CLIENT_SIDECAR: &str = r#"---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress:
  - hosts: ["./web.shop.svc.cluster.local"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#;

/// The mesh as the client's sidecar sees it; the server's endpoints have a sidecar (the
/// label auto mTLS reads).
fn client_config(server_ip: &str) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: shop}}
spec:
  hosts: [web.shop.svc.cluster.local]
  addresses: [{server_ip}]
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {server_ip}, labels: {{security.istio.io/tlsMode: istio}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [db.shop.svc.cluster.local]
  addresses: [{server_ip}]
  ports: [{{number: 5432, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: {server_ip}, labels: {{security.istio.io/tlsMode: istio}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: shop}}
spec:
  hosts: [web.shop.svc.cluster.local]
  http:
  - match: [{{uri: {{prefix: /teapot}}}}]
    directResponse: {{status: 418, body: {{string: "short and stout"}}}}
  - route: [{{destination: {{host: web.shop.svc.cluster.local}}}}]
    headers: {{response: {{set: {{x-sidecar: lateen}}}}}}
"#
    )
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_client_app_reaches_a_server_through_its_sidecar_unaware() {
    let id = std::process::id() % 100_000;
    let client = match Netns::new(format!("ltc{id}")) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("skipping: the kernel refuses network namespaces here: {e}");
            return;
        }
    };
    let server = Netns::new(format!("lts{id}")).expect("a second namespace");
    let (vc, vs) = (format!("ltvc{id}"), format!("ltvs{id}"));
    let ip = |args: &[&str]| {
        let st = Command::new("ip").args(args).status().unwrap();
        assert!(st.success(), "ip {args:?}");
    };
    ip(&["link", "add", &vc, "type", "veth", "peer", "name", &vs]);
    ip(&["link", "set", &vc, "netns", &client.0]);
    ip(&["link", "set", &vs, "netns", &server.0]);
    let (client_ip, server_ip) = ("10.77.0.1", "10.77.0.2");
    for (ns, dev, addr) in [(&client, &vc, client_ip), (&server, &vs, server_ip)] {
        ns.run(&["ip", "addr", "add", &format!("{addr}/24"), "dev", dev]);
        ns.run(&["ip", "link", "set", dev, "up"]);
        ns.run(&["ip", "link", "set", "lo", "up"]);
    }

    let p = paths();
    let ca = MeshCa::new("cluster.local");
    let dir = tempfile::tempdir().unwrap();
    let start = |ns: &Netns, name: &str, yaml: String| {
        let cfg = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&cfg, yaml).unwrap();
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        Proc(
            ns.cmd(p.bin.to_str().unwrap())
                .args(["run", "--config"])
                .arg(&cfg)
                .args(["--concurrency", "1", "--filters-dir"])
                .arg(&p.wasm_dir)
                .arg("--cache-dir")
                .arg(&p.cache_dir)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let app_certs = ca.issue("app", "shop", "app-tls", &[]);
    let _app = Proc(
        server
            .cmd("python3")
            .args(["-c", SERVER, server_ip])
            .arg(app_certs.join("cert-chain.pem"))
            .arg(app_certs.join("key.pem"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client_certs = ca.issue("client", "shop", "client", &[]);
    let server_certs = ca.issue("server", "shop", "web", &[]);
    let client_yaml = || bootstrap("client", &client_certs, &ca.root()) + &client_config(server_ip);
    let _client_sidecar = start(&client, "client", client_yaml());
    let server_yaml =
        |mode: &str| bootstrap("web", &server_certs, &ca.root()) + &server_config(mode);
    let _server_sidecar = start(&server, "server", server_yaml("STRICT"));
    let logs = || {
        ["client", "server"]
            .map(|n| {
                std::fs::read_to_string(dir.path().join(format!("{n}.log"))).unwrap_or_default()
            })
            .join("\n---\n")
    };
    // Both sidecars ready, and the server's app up, before the rules go in.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = |ns: &Netns| {
            ns.app(&["curl", "-sf", "http://127.0.0.1:15000/ready"])
                .status
                .success()
        };
        let up = client.app(&["curl", "-sf", &format!("http://{server_ip}:9999/")]);
        if ready(&client) && ready(&server) && up.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sidecars or server not up: {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let bin = p.bin.to_str().unwrap();
    client.run(&[
        bin,
        "iptables",
        "--proxy-uid",
        "0",
        "--outbound-only",
        "--apply",
    ]);
    server.run(&[bin, "iptables", "--proxy-uid", "0", "--apply"]);

    // HTTP/1.1 to the server's address: routed by the mesh VirtualService, over mTLS to
    // the server's sidecar, which hands it to the app from 127.0.0.6.
    let r = text(&client.app(&["curl", "-si", &format!("http://{server_ip}:8080/hello")]));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}\n{}", logs());
    assert!(r.contains("x-sidecar: lateen"), "{r}");
    assert!(r.ends_with("from=127.0.0.6 port=8080 path=/hello"), "{r}");
    // A route the client's sidecar answers itself.
    let r = text(&client.app(&["curl", "-si", &format!("http://{server_ip}:8080/teapot")]));
    assert!(
        r.starts_with("HTTP/1.1 418") && r.ends_with("short and stout"),
        "{r}"
    );
    // HTTP/2 with prior knowledge from the app; HTTP/1.1 to the server.
    let r = text(&client.app(&[
        "curl",
        "-si",
        "--http2-prior-knowledge",
        &format!("http://{server_ip}:8080/h2"),
    ]));
    assert!(
        r.starts_with("HTTP/2 200") && r.contains("x-sidecar: lateen"),
        "{r}"
    );
    // TCP to the database port: forwarded to its cluster, over mTLS too.
    let r = text(&client.app(&[
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{server_ip}/5432; head -n1 <&3; echo ping >&3; head -n1 <&3"),
    ]));
    assert_eq!(r, "db\nping\n", "{}", logs());

    // A port the mesh does not know: passed through in plain text, which the server's
    // sidecar refuses under STRICT...
    let plain = |port: u16| {
        client.app(&[
            "curl",
            "-s",
            "--max-time",
            "5",
            &format!("http://{server_ip}:{port}/x"),
        ])
    };
    let r = plain(9999);
    assert!(!r.status.success(), "plain text under STRICT: {}", text(&r));
    // The app's own TLS (no mesh ALPN) is not mesh mTLS: refused under STRICT too.
    let app_tls = || {
        client.app(&[
            "curl",
            "-sk",
            "--max-time",
            "5",
            &format!("https://{server_ip}:8443/tls"),
        ])
    };
    assert!(!app_tls().status.success(), "app TLS under STRICT");
    // ...and takes under PERMISSIVE, once the server's config says so.
    let tmp = dir.path().join(".server.yaml.tmp");
    std::fs::write(&tmp, server_yaml("PERMISSIVE")).unwrap();
    std::fs::rename(&tmp, dir.path().join("server.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let r = loop {
        let r = plain(9999);
        if r.status.success() {
            break text(&r);
        }
        assert!(
            Instant::now() < deadline,
            "PERMISSIVE not applied: {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(r, "from=127.0.0.6 port=9999 path=/x");
    // Under PERMISSIVE the app's own TLS passes through the server's sidecar untouched.
    let r = app_tls();
    assert!(r.status.success(), "app TLS under PERMISSIVE: {}", logs());
    assert_eq!(text(&r), "from=127.0.0.6 port=8443 path=/tls");
    // mTLS keeps working under PERMISSIVE.
    let r = text(&client.app(&["curl", "-s", &format!("http://{server_ip}:8080/again")]));
    assert_eq!(r, "from=127.0.0.6 port=8080 path=/again");
    // The server's Sidecar ingress: port 7070 goes to the app's 8080.
    assert_eq!(text(&plain(7070)), "from=127.0.0.6 port=8080 path=/x");

    // The client's Sidecar: only the web service, and nothing unknown.
    let tmp = dir.path().join(".client.yaml.tmp");
    std::fs::write(&tmp, client_yaml() + CLIENT_SIDECAR).unwrap();
    std::fs::rename(&tmp, dir.path().join("client.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while plain(9999).status.success() {
        assert!(
            Instant::now() < deadline,
            "REGISTRY_ONLY not applied: {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = text(&client.app(&["curl", "-s", &format!("http://{server_ip}:8080/still")]));
    assert_eq!(r, "from=127.0.0.6 port=8080 path=/still");
    // The database is not in the egress list: closed like any unknown destination.
    let r = client.app(&[
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{server_ip}/5432; timeout 5 head -n1 <&3"),
    ]);
    assert_eq!(text(&r), "", "db reached despite the egress list");

    // The client's sidecar saw it all: its stats name the clusters.
    let stats = text(&client.app(&["curl", "-s", "http://127.0.0.1:15090/stats/prometheus"]));
    let count = |cluster: &str| {
        stats
            .lines()
            .find(|l| {
                l.starts_with("envoy_cluster_upstream_cx_total{")
                    && l.contains(&format!("cluster_name=\"{cluster}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        count("outbound|8080||web.shop.svc.cluster.local") >= 1.0,
        "{stats}"
    );
    assert_eq!(
        count("outbound|5432||db.shop.svc.cluster.local"),
        1.0,
        "{stats}"
    );
    // Unknown destinations under Envoy's names: passed through before the client's
    // Sidecar, closed after it.
    assert!(count("PassthroughCluster") >= 2.0, "{stats}");
    assert!(count("BlackHoleCluster") >= 2.0, "{stats}");
    // And the server's sidecar terminated mTLS.
    let stats = text(&server.app(&["curl", "-s", "http://127.0.0.1:15000/stats"]));
    let handshakes = stats
        .lines()
        .find_map(|l| l.strip_prefix("listener.virtualInbound.ssl.handshake: "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    let dump = text(&server.app(&["curl", "-s", "http://127.0.0.1:15000/config_dump"]));
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let inbound = dump["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == "virtualInbound"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(inbound["capture"]["mtls"], "PERMISSIVE", "{dump}");
    assert_eq!(inbound["capture"]["identity"], true, "{dump}");
    // One for the pooled HTTP connection, one for the TCP one.
    assert!(handshakes.is_some_and(|n| n >= 2.0), "{stats}");
    assert!(
        stats.contains("listener.virtualInbound.no_filter_chain_match: "),
        "{stats}"
    );
}

#[test]
fn policies_a_sidecar_cannot_enforce_yet_are_refused() {
    let e = refused(
        "sidecar.yaml",
        "apiVersion: lateen.io/v1alpha1\nkind: Bootstrap\nmetadata: {name: lateen, namespace: istio-system}\n\
         spec: {mode: sidecar}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: deny-all, namespace: istio-system}\nspec: {action: DENY, rules: [{}]}\n",
    );
    assert!(
        e.contains("sidecar.yaml:7") && e.contains("refused rather than left unenforced"),
        "{e}"
    );
}

#[test]
fn sidecar_resources_lateen_cannot_honour_are_refused_with_their_line() {
    let e = refused(
        "sc.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: shop}\n\
         spec:\n  egress:\n  - hosts: [web.shop]\n    bind: 127.0.0.2\n  \
         outboundTrafficPolicy: {mode: SOMETIMES}\n",
    );
    for want in [
        "sc.yaml:6: document 1 (Sidecar shop/default): field `spec.egress[0].hosts[0]`: \
         `web.shop` is not `namespace/host`",
        "sc.yaml:7: document 1 (Sidecar shop/default): field `spec.egress[0].bind`: not \
         supported yet",
        "sc.yaml:8: document 1 (Sidecar shop/default): field \
         `spec.outboundTrafficPolicy.mode`: unknown mode `SOMETIMES`",
    ] {
        assert!(e.contains(want), "`{want}` missing in: {e}");
    }
}
