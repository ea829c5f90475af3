//! The metrics filter's configuration (built by the host from the Bootstrap and the
//! ServiceEntries) and the label computation, kept apart from the proxy-wasm glue so that
//! it is tested natively.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What an unknown label value reads, as in Istio.
pub const UNKNOWN: &str = "unknown";

/// The metric families and their kinds.
pub const REQUESTS_TOTAL: &str = "istio_requests_total";
pub const DURATION: &str = "istio_request_duration_milliseconds";
pub const REQUEST_BYTES: &str = "istio_request_bytes";
pub const RESPONSE_BYTES: &str = "istio_response_bytes";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `source` for a gateway or a sidecar's outbound traffic, `destination` for inbound.
    pub reporter: String,
    /// This proxy's workload.
    pub source: Peer,
    /// ServiceEntry host → namespace, for `destination_service_namespace`.
    pub services: BTreeMap<String, String>,
}

/// A workload's identity, for the `source_*` labels.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Peer {
    pub workload: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    pub principal: String,
}

/// What the filter learned of a finished stream. The labels are a function of it (and of
/// the config), so it is the key under which a label set's metric ids are cached.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct Outcome {
    /// `lateen.route.cluster`: `outbound|PORT|SUBSET|HOST`.
    pub cluster: Option<String>,
    pub response_code: Option<i64>,
    pub response_flags: Option<String>,
    pub grpc: bool,
    pub grpc_status: Option<String>,
    /// Labels `app` and `version` of the endpoint that answered.
    pub upstream_app: Option<String>,
    pub upstream_version: Option<String>,
}

impl Outcome {
    /// Parses the host's `lateen.request_outcome` property: cluster, response code, flags,
    /// `1` for gRPC, grpc-status, upstream `app` and `version` labels, NUL-separated, an
    /// empty field unknown.
    pub fn decode(raw: &[u8]) -> Outcome {
        let mut f = raw.split(|b| *b == 0).map(|f| {
            (!f.is_empty())
                .then(|| String::from_utf8(f.to_vec()).ok())
                .flatten()
        });
        let mut next = || f.next().flatten();
        let cluster = next();
        let response_code = next().and_then(|c| c.parse().ok());
        let response_flags = next();
        let grpc = next().is_some();
        Outcome {
            cluster,
            response_code,
            response_flags,
            grpc,
            grpc_status: next(),
            upstream_app: next(),
            upstream_version: next(),
        }
    }
}

fn or_unknown(v: &str) -> String {
    if v.is_empty() {
        UNKNOWN.to_string()
    } else {
        v.to_string()
    }
}

impl MetricsConfig {
    /// Istio's standard labels for a stream, in Istio's order.
    pub fn labels(&self, o: &Outcome) -> Vec<(&'static str, String)> {
        let (subset, host) = match o
            .cluster
            .as_deref()
            .map(|c| c.split('|').collect::<Vec<_>>())
        {
            Some(parts) if parts.len() == 4 => (parts[2].to_string(), parts[3].to_string()),
            _ => (String::new(), String::new()),
        };
        let service_name = host.split('.').next().unwrap_or_default().to_string();
        let namespace = self.services.get(&host).cloned().unwrap_or_else(|| {
            // Kubernetes service names: NAME.NAMESPACE.svc.cluster.local.
            let parts: Vec<&str> = host.split('.').collect();
            if parts.len() >= 3 && parts[2] == "svc" {
                parts[1].to_string()
            } else {
                String::new()
            }
        });
        let app = o.upstream_app.clone().unwrap_or_default();
        let version = o.upstream_version.clone().unwrap_or(subset);
        // The endpoint's app and version name its workload, as Istio's samples name
        // deployments (reviews-v1); unknown without an app label.
        let workload = match (app.is_empty(), version.is_empty()) {
            (true, _) => String::new(),
            (false, true) => app.clone(),
            (false, false) => format!("{app}-{version}"),
        };
        let s = &self.source;
        vec![
            ("reporter", or_unknown(&self.reporter)),
            ("source_workload", or_unknown(&s.workload)),
            ("source_workload_namespace", or_unknown(&s.namespace)),
            ("source_principal", or_unknown(&s.principal)),
            ("source_app", or_unknown(&s.app)),
            ("source_version", or_unknown(&s.version)),
            ("destination_workload", or_unknown(&workload)),
            ("destination_workload_namespace", or_unknown(&namespace)),
            ("destination_service", or_unknown(&host)),
            ("destination_service_name", or_unknown(&service_name)),
            ("destination_service_namespace", or_unknown(&namespace)),
            ("destination_app", or_unknown(&app)),
            ("destination_version", or_unknown(&version)),
            (
                "request_protocol",
                if o.grpc { "grpc" } else { "http" }.to_string(),
            ),
            ("response_code", o.response_code.unwrap_or(0).to_string()),
            // Istio leaves it empty for plain HTTP.
            (
                "grpc_response_status",
                o.grpc_status.clone().unwrap_or_default(),
            ),
            (
                "response_flags",
                o.response_flags
                    .clone()
                    .filter(|f| !f.is_empty())
                    .unwrap_or_else(|| "-".into()),
            ),
            // A source reporter cannot know the server's policy, as in Istio.
            ("connection_security_policy", UNKNOWN.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_from_the_host_property() {
        let raw = |fields: &[&str]| fields.join("\0").into_bytes();
        let o = Outcome::decode(&raw(&[
            "outbound|80|v2|svc.test",
            "503",
            "UO",
            "",
            "",
            "svc",
            "",
        ]));
        assert_eq!(o.cluster.as_deref(), Some("outbound|80|v2|svc.test"));
        assert_eq!(o.response_code, Some(503));
        assert_eq!(o.response_flags.as_deref(), Some("UO"));
        assert!(!o.grpc);
        assert_eq!(o.grpc_status, None);
        assert_eq!(o.upstream_app.as_deref(), Some("svc"));
        assert_eq!(o.upstream_version, None);
        let g = Outcome::decode(&raw(&["c", "200", "", "1", "14", "a", "v1"]));
        assert!(g.grpc);
        assert_eq!(g.grpc_status.as_deref(), Some("14"));
        assert_eq!(g.upstream_version.as_deref(), Some("v1"));
        assert_eq!(Outcome::decode(b""), Outcome::default());
    }

    #[test]
    fn labels_from_the_route_and_the_endpoint() {
        let cfg = MetricsConfig {
            reporter: "source".into(),
            source: Peer {
                workload: "ingress".into(),
                namespace: "istio-system".into(),
                ..Peer::default()
            },
            services: [("svc.test".to_string(), "test".to_string())].into(),
        };
        let o = Outcome {
            cluster: Some("outbound|80|v2|svc.test".into()),
            response_code: Some(503),
            response_flags: Some("UO".into()),
            upstream_app: Some("svc".into()),
            ..Outcome::default()
        };
        let l: BTreeMap<_, _> = cfg.labels(&o).into_iter().collect();
        assert_eq!(l["reporter"], "source");
        assert_eq!(l["source_workload"], "ingress");
        assert_eq!(l["source_app"], "unknown");
        assert_eq!(l["destination_service"], "svc.test");
        assert_eq!(l["destination_service_name"], "svc");
        assert_eq!(l["destination_service_namespace"], "test");
        assert_eq!(
            l["destination_version"], "v2",
            "the subset when no label says"
        );
        assert_eq!(l["destination_workload"], "svc-v2");
        assert_eq!(l["response_code"], "503");
        assert_eq!(l["response_flags"], "UO");
        assert_eq!(l["request_protocol"], "http");
        assert_eq!(l["grpc_response_status"], "");
        assert_eq!(l.len(), 18);

        let k8s = Outcome {
            cluster: Some("outbound|9080||reviews.bookinfo.svc.cluster.local".into()),
            ..Outcome::default()
        };
        let l: BTreeMap<_, _> = cfg.labels(&k8s).into_iter().collect();
        assert_eq!(l["destination_service_namespace"], "bookinfo");
        assert_eq!(l["destination_version"], "unknown");
        assert_eq!(l["response_flags"], "-");
    }
}
