//! The config the tests write: the usual Gateway, ServiceEntry and routes, Bootstraps.

use super::*;

/// The Gateway `istio-system/gw` on `{{PORT}}` (bound to 127.0.0.1) for every host: the
/// config of tests that need a valid config and no upstream.
pub const GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: {{PORT}}, name: http, protocol: HTTP}
    hosts: ["*"]
    bind: 127.0.0.1
"#;

/// The usual preamble: a Gateway on `{{PORT}}` and a ServiceEntry `svc.test` whose STATIC
/// endpoints are the given backends, labelled `version: <backend name>`, with a
/// DestinationRule subset per backend.
pub fn mesh(backends: &[&Backend]) -> String {
    let mut eps = String::new();
    let mut subsets = String::new();
    for b in backends {
        eps.push_str(&format!(
            "  - address: 127.0.0.1\n    ports: {{http: {}}}\n    labels: {{version: {}}}\n",
            b.port(),
            b.name
        ));
        subsets.push_str(&format!(
            "  - name: {0}\n    labels: {{version: {0}}}\n",
            b.name
        ));
    }
    // A subset no endpoint carries: `no healthy upstream`.
    subsets.push_str("  - name: empty\n    labels: {version: none}\n");
    format!(
        r#"{GATEWAY}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc, namespace: test}}
spec:
  hosts: [svc.test]
  ports:
  - {{number: 80, name: http, protocol: HTTP}}
  resolution: STATIC
  endpoints:
{eps}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc, namespace: test}}
spec:
  host: svc.test
  subsets:
{subsets}"#
    )
}

/// A Bootstrap in `istio-system` whose `spec` is `spec` (block YAML, indented two spaces).
pub fn bootstrap(spec: &str) -> String {
    format!(
        "---\napiVersion: lateen.io/v1alpha1\nkind: Bootstrap\n\
         metadata: {{name: lateen, namespace: istio-system}}\nspec:\n{spec}\n"
    )
}

/// A VirtualService on the gateway sending every request to `svc.test` subset `subset`.
pub fn route_all(subset: &str) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: test}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: svc.test, subset: {subset}}}}}]
"#
    )
}

/// A ServiceEntry `host` (HTTP, port 80) with one STATIC endpoint at 127.0.0.1:`port`,
/// and a VirtualService on `istio-system/gw` sending every request to it.
pub fn routed_to(host: &str, port: u16) -> String {
    let name = host.split('.').next().unwrap_or(host);
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: test}}
spec:
  hosts: [{host}]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: test}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: {host}}}}}]
"#
    )
}

/// A Gateway `istio-system/gw` on `{{PORT}}` taking mesh mTLS (ISTIO_MUTUAL) from any host.
pub const MTLS_GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: {{PORT}}, name: mtls, protocol: HTTPS}
    hosts: ["*"]
    bind: 127.0.0.1
    tls: {mode: ISTIO_MUTUAL}
"#;

/// A Bootstrap whose workload identity is `dir`'s `cert-chain.pem` and `key.pem` (as
/// `MeshCa::issue` writes them), trusting `root`.
pub fn identity_bootstrap(dir: &Path, root: &Path) -> String {
    bootstrap(&format!(
        "  identity: {{certChain: {d}/cert-chain.pem, privateKey: {d}/key.pem, rootCert: {r}}}",
        d = dir.display(),
        r = root.display()
    ))
}
