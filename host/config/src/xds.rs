//! The ADS client's settings, read from the Bootstrap resource. The decoding of what a
//! control plane pushes lives in `lateen-xds`; this crate only says where to connect.

use std::collections::BTreeMap;

/// The ADS client's settings, resolved from the Bootstrap's `xds`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// `host:port`.
    pub address: String,
    pub node_id: String,
    pub node_cluster: String,
    /// Node metadata (ISTIO_VERSION, CLUSTER_ID, NAMESPACE, INSTANCE_IPS, LABELS, NAME, ...).
    pub metadata: BTreeMap<String, serde_json::Value>,
    pub initial_fetch_timeout: std::time::Duration,
}

/// The ADS client's settings, when the Bootstrap names a control plane.
pub fn client_config(
    res: &crate::compile::Resources,
) -> Result<Option<ClientConfig>, crate::ConfigError> {
    let Some(b) = &res.bootstrap else {
        return Ok(None);
    };
    let Some(x) = &b.spec.xds else {
        return Ok(None);
    };
    let (host, port) = x.address.rsplit_once(':').unwrap_or((&x.address, ""));
    if host.is_empty() || port.parse::<u16>().is_err() || x.address.contains("://") {
        return Err(b.info.error("spec.xds.address", "expected host:port"));
    }
    let n = &x.node;
    let w = b.spec.workload.clone().unwrap_or_default();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let name = w
        .name
        .or_else(|| env("POD_NAME"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "lateen".into());
    let ns = w
        .namespace
        .or_else(|| env("POD_NAMESPACE"))
        .unwrap_or_else(|| "default".into());
    let sidecar = b.spec.mode.as_deref() == Some("sidecar");
    let node_type = n
        .node_type
        .clone()
        .unwrap_or_else(|| if sidecar { "sidecar" } else { "router" }.into());
    if !matches!(node_type.as_str(), "router" | "sidecar") {
        return Err(b.info.error(
            "spec.xds.node.type",
            format!("`{node_type}`: expected router or sidecar"),
        ));
    }
    let ip =
        n.ip.clone()
            .or_else(|| env("INSTANCE_IP"))
            .unwrap_or_else(|| "127.0.0.1".into());
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(b
            .info
            .error("spec.xds.node.ip", format!("`{ip}` is not an IP address")));
    }
    let domain = n.domain.clone().unwrap_or_else(|| "cluster.local".into());
    let node_id =
        n.id.clone()
            .unwrap_or_else(|| format!("{node_type}~{ip}~{name}.{ns}~{ns}.svc.{domain}"));
    if node_id.split('~').count() != 4 {
        return Err(b.info.error(
            "spec.xds.node.id",
            format!("`{node_id}`: istiod expects TYPE~IP~ID~DOMAIN"),
        ));
    }
    let initial_fetch_timeout = match &x.initial_fetch_timeout {
        None => std::time::Duration::from_secs(15),
        Some(t) => std::time::Duration::from_millis(
            crate::compile::parse_duration_ms(t).ok_or_else(|| {
                b.info.error(
                    "spec.xds.initialFetchTimeout",
                    format!("`{t}` is not a duration"),
                )
            })?,
        ),
    };
    let mut metadata: BTreeMap<String, serde_json::Value> = BTreeMap::from([
        (
            "ISTIO_VERSION".into(),
            n.istio_version
                .clone()
                .unwrap_or_else(|| "1.24.0".into())
                .into(),
        ),
        (
            "CLUSTER_ID".into(),
            n.cluster_id
                .clone()
                .unwrap_or_else(|| "Kubernetes".into())
                .into(),
        ),
        ("NAMESPACE".into(), ns.clone().into()),
        // istiod reads INSTANCE_IPS as one comma-separated string.
        ("INSTANCE_IPS".into(), ip.clone().into()),
        ("LABELS".into(), serde_json::json!(w.labels)),
        ("NAME".into(), name.clone().into()),
    ]);
    metadata.extend(n.metadata.clone());
    Ok(Some(ClientConfig {
        address: x.address.clone(),
        node_id,
        node_cluster: n.cluster.clone().unwrap_or_else(|| format!("{name}.{ns}")),
        metadata,
        initial_fetch_timeout,
    }))
}
