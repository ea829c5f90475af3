//! Sidecar injection, as `istioctl kube-inject` does it: every pod template in a set of
//! Kubernetes manifests gets the interception init container (`lateen iptables --apply`),
//! the `lateen-proxy` container in sidecar mode, and their volumes. Other resources pass
//! through unchanged.

use serde_json::{json, Map, Value};

/// How to inject.
#[derive(Debug, Clone)]
pub struct Options {
    /// The image holding the `lateen` binary.
    pub image: String,
    /// The uid (and gid) the proxy runs as; the init container's rules exempt it.
    pub proxy_uid: u32,
    /// ConfigMap with the sidecar's config (a key per file, mounted at /etc/lateen/config).
    pub config_map: String,
    /// Secret with the workload identity (`cert-chain.pem`, `key.pem`, `root-cert.pem`, as
    /// `lateen ca issue` writes them), mounted at /etc/certs.
    pub identity_secret: String,
    /// How long the proxy drains on SIGTERM.
    pub drain_time: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            image: "lateen:latest".into(),
            proxy_uid: 1337,
            config_map: "lateen-sidecar".into(),
            identity_secret: "lateen-identity".into(),
            drain_time: "5s".into(),
        }
    }
}

/// Why a manifest could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("document {doc} ({kind}): {what}")]
    Malformed {
        doc: usize,
        kind: String,
        what: String,
    },
}

/// The annotation that opts a pod out, as in Istio.
const INJECT_ANNOTATION: &str = "sidecar.istio.io/inject";
const PROXY: &str = "lateen-proxy";
const INIT: &str = "lateen-init";

/// Injects every document; returns them with how many pod templates got a sidecar.
pub fn inject(docs: Vec<Value>, o: &Options) -> Result<(Vec<Value>, usize), InjectError> {
    let mut injected = 0;
    let mut out = Vec::with_capacity(docs.len());
    for (i, mut doc) in docs.into_iter().enumerate() {
        let kind = doc["kind"].as_str().unwrap_or("").to_string();
        let template = match kind.as_str() {
            "Pod" => Some(&mut doc),
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                doc.get_mut("spec").and_then(|s| s.get_mut("template"))
            }
            "CronJob" => doc
                .get_mut("spec")
                .and_then(|s| s.get_mut("jobTemplate"))
                .and_then(|s| s.get_mut("spec"))
                .and_then(|s| s.get_mut("template")),
            _ => None,
        };
        if let Some(t) = template {
            let err = |what: &str| InjectError::Malformed {
                doc: i + 1,
                kind: kind.clone(),
                what: what.into(),
            };
            if inject_pod(t, o).map_err(|w| err(&w))? {
                injected += 1;
            }
        }
        out.push(doc);
    }
    Ok((out, injected))
}

fn object<'a>(v: &'a mut Value, key: &str) -> Result<&'a mut Map<String, Value>, String> {
    let m = v.as_object_mut().ok_or("not an object")?;
    let e = m.entry(key).or_insert_with(|| json!({}));
    if e.is_null() {
        *e = json!({});
    }
    e.as_object_mut()
        .ok_or_else(|| format!("`{key}` is not a map"))
}

fn list<'a>(m: &'a mut Map<String, Value>, key: &str) -> Result<&'a mut Vec<Value>, String> {
    let e = m.entry(key).or_insert_with(|| json!([]));
    if e.is_null() {
        *e = json!([]);
    }
    e.as_array_mut()
        .ok_or_else(|| format!("`{key}` is not a list"))
}

/// Injects one pod template (`metadata` + `spec`); false when it opts out or already has
/// the proxy.
fn inject_pod(t: &mut Value, o: &Options) -> Result<bool, String> {
    let meta = object(t, "metadata")?;
    let opted_out = meta
        .get("annotations")
        .and_then(|a| a.get(INJECT_ANNOTATION))
        .and_then(Value::as_str)
        == Some("false");
    if opted_out {
        return Ok(false);
    }
    let spec = object(t, "spec")?;
    let has_proxy = spec
        .get("containers")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["name"] == PROXY));
    if has_proxy {
        return Ok(false);
    }
    let uid = o.proxy_uid;
    list(spec, "initContainers")?.push(json!({
        "name": INIT,
        "image": o.image,
        "command": ["lateen"],
        "args": ["iptables", "--apply", "--proxy-uid", uid.to_string(),
                 "--exclude-inbound-ports", "15020,15021,15090"],
        // Only the network namespace's rules are changed: NET_ADMIN and NET_RAW, as root.
        "securityContext": {
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
        },
    }));
    list(spec, "containers")?.push(json!({
        "name": PROXY,
        "image": o.image,
        "command": ["lateen"],
        "args": ["run", "--config", "/etc/lateen/config", "--cache-dir", "/var/lib/lateen",
                 "--stats-address", "0.0.0.0:15090", "--health-address", "0.0.0.0:15021",
                 "--drain-time", o.drain_time],
        "ports": [
            {"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"},
            {"name": "status-port", "containerPort": 15021, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": 15021},
            "periodSeconds": 2,
            "failureThreshold": 30,
        },
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": {
            "runAsUser": uid,
            "runAsGroup": uid,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "lateen-config", "mountPath": "/etc/lateen/config", "readOnly": true},
            {"name": "lateen-identity", "mountPath": "/etc/certs", "readOnly": true},
            {"name": "lateen-cache", "mountPath": "/var/lib/lateen"},
        ],
    }));
    let volumes = list(spec, "volumes")?;
    volumes.push(json!({"name": "lateen-config", "configMap": {"name": o.config_map}}));
    volumes.push(json!({"name": "lateen-identity", "secret": {"secretName": o.identity_secret}}));
    volumes.push(json!({"name": "lateen-cache", "emptyDir": {}}));
    // The label auto mTLS reads, and a record of the injection.
    let meta = object(t, "metadata")?;
    object_in(meta, "labels")?.insert("security.istio.io/tlsMode".into(), json!("istio"));
    object_in(meta, "annotations")?.insert(
        "lateen.io/status".into(),
        json!(json!({"initContainers": [INIT], "containers": [PROXY],
                     "volumes": ["lateen-config", "lateen-identity", "lateen-cache"]})
        .to_string()),
    );
    Ok(true)
}

fn object_in<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Map<String, Value>, String> {
    let e = m.entry(key).or_insert_with(|| json!({}));
    if e.is_null() {
        *e = json!({});
    }
    e.as_object_mut()
        .ok_or_else(|| format!("`metadata.{key}` is not a map"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(annotations: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}, "annotations": annotations},
                                     "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}})
    }

    #[test]
    fn pod_templates_get_the_proxy_once() {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}});
        let (out, n) = inject(
            vec![deployment(json!({})), svc.clone()],
            &Options::default(),
        )
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(out[1], svc, "other kinds pass through");
        let t = &out[0]["spec"]["template"];
        let names: Vec<_> = t["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["web", "lateen-proxy"]);
        assert_eq!(t["spec"]["initContainers"][0]["args"][3], "1337");
        assert_eq!(
            t["metadata"]["labels"]["security.istio.io/tlsMode"],
            "istio"
        );
        assert_eq!(t["spec"]["volumes"].as_array().unwrap().len(), 3);
        // Injecting again changes nothing.
        let (again, n) = inject(out.clone(), &Options::default()).unwrap();
        assert_eq!((again, n), (out, 0));
    }

    #[test]
    fn opted_out_pods_and_malformed_specs() {
        let (out, n) = inject(
            vec![deployment(json!({"sidecar.istio.io/inject": "false"}))],
            &Options::default(),
        )
        .unwrap();
        assert_eq!(n, 0);
        assert_eq!(
            out[0],
            deployment(json!({"sidecar.istio.io/inject": "false"}))
        );
        let mut bad = deployment(json!({}));
        bad["spec"]["template"]["spec"]["containers"] = json!("web");
        let e = inject(vec![bad], &Options::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "document 1 (Deployment): `containers` is not a list"
        );
    }
}
