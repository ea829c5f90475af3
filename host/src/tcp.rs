//! TCP forwarding: TLS connections routed by SNI without being terminated (Gateway
//! `tls.mode: PASSTHROUGH` with VirtualService `tls` routes), as Envoy's `tcp_proxy`.

use crate::cluster::Cluster;
use crate::tls::server::host_match;
use std::time::Duration;
use tokio::net::TcpStream;

/// A VirtualService `tls` route on one listener: the SNI names it takes and its weighted
/// clusters.
#[derive(Debug, Clone)]
pub struct SniRoute {
    /// Where it came from (`ns/name#index`), for logs and the admin API.
    pub name: String,
    pub sni_hosts: Vec<String>,
    /// `outbound|PORT|SUBSET|HOST` and weight.
    pub destinations: Vec<(String, u32)>,
}

/// The first route with a matching SNI host (Istio: first match wins).
pub fn select<'a>(routes: &'a [SniRoute], sni: &str) -> Option<&'a SniRoute> {
    routes
        .iter()
        .find(|r| r.sni_hosts.iter().any(|h| host_match(h, sni).is_some()))
}

impl SniRoute {
    /// A destination cluster by relative weight.
    pub fn pick(&self, random: u64) -> Option<&str> {
        let total: u64 = self.destinations.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return self.destinations.first().map(|(c, _)| c.as_str());
        }
        let mut r = random % total;
        for (c, w) in &self.destinations {
            if r < u64::from(*w) {
                return Some(c);
            }
            r -= u64::from(*w);
        }
        None
    }
}

/// Why a forwarded connection ended badly (logged; the client sees a closed connection,
/// as with Envoy's tcp_proxy).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no healthy upstream in {0}")]
    NoHealthyUpstream(String),
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("connecting to {0}: timed out")]
    ConnectTimeout(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Connects to an endpoint of `cluster` and copies bytes both ways until either side
/// closes. Returns the bytes sent up and down.
pub async fn forward(
    mut client: TcpStream,
    cluster: &Cluster,
    random: u64,
) -> Result<(u64, u64), ForwardError> {
    let ep = cluster
        .pick(random)
        .ok_or_else(|| ForwardError::NoHealthyUpstream(cluster.name.clone()))?;
    let timeout = Duration::from_millis(cluster.conn.connect_timeout_ms);
    let mut up = match tokio::time::timeout(timeout, TcpStream::connect(&ep.authority)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            cluster.stats.cx_connect_fail.inc();
            return Err(ForwardError::Connect(ep.authority.clone(), e));
        }
        Err(_) => {
            cluster.stats.cx_connect_fail.inc();
            return Err(ForwardError::ConnectTimeout(ep.authority.clone()));
        }
    };
    cluster.stats.cx_total.inc();
    let _open = cluster.stats.cx_active.track();
    let _ = up.set_nodelay(true);
    Ok(tokio::io::copy_bidirectional(&mut client, &mut up).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_route_and_weights() {
        let routes = vec![
            SniRoute {
                name: "a".into(),
                sni_hosts: vec!["api.example.com".into()],
                destinations: vec![("one".into(), 90), ("two".into(), 10)],
            },
            SniRoute {
                name: "b".into(),
                sni_hosts: vec!["*.example.com".into()],
                destinations: vec![("three".into(), 0)],
            },
        ];
        assert_eq!(select(&routes, "api.example.com").unwrap().name, "a");
        assert_eq!(select(&routes, "www.example.com").unwrap().name, "b");
        assert!(select(&routes, "other.test").is_none());
        let a = &routes[0];
        let picks: Vec<_> = (0..100).map(|r| a.pick(r).unwrap()).collect();
        assert_eq!(picks.iter().filter(|c| **c == "one").count(), 90);
        assert_eq!(routes[1].pick(7), Some("three"));
    }
}
