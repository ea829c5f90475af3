//! Phase 3, the route decision: what the router filter decided, read once from the
//! stream's properties into one typed value.

// A phase that ends the request returns its reply as the error: the response is the
// value the caller returns at once, not a failure to box.
#![allow(clippy::result_large_err)]

use super::error::ProxyError;
use super::UpBody;
use crate::chain::HttpStream;
use crate::cluster::Cluster;
use crate::retry::RetryPolicy;
use crate::worker::WorkerSnapshot;
use http::Response;
use lateen_sdk::route::{dotted, Decision};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// How long a mirror may take when its route sets no timeout.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(15);

/// Where and how a request goes upstream.
pub(super) struct Route {
    pub cluster: Arc<Cluster>,
    /// The route's timeout; 0: none.
    pub timeout_ms: u64,
    /// Istio's default policy is shared, not copied per request.
    pub retry: Cow<'static, RetryPolicy>,
    /// Clusters to mirror to (sampled by the router).
    pub mirrors: Vec<String>,
}

impl Route {
    /// A mirror not answered within this is dropped: the route's timeout, else 15 s.
    pub fn mirror_timeout(&self) -> Duration {
        match self.timeout_ms {
            0 => MIRROR_TIMEOUT,
            ms => Duration::from_millis(ms),
        }
    }
}

/// The route the filters chose: 404 NR when none did, 503 NC when it names a cluster the
/// snapshot does not have (or the decision does not parse).
pub(super) fn decide(s: &mut HttpStream, ws: &WorkerSnapshot) -> Result<Route, Response<UpBody>> {
    let props = &s.state.props;
    let decision = match Decision::from_properties(|path| props.get(dotted(path).as_ref())) {
        Ok(Some(d)) => d,
        Ok(None) => return Err(ProxyError::NoRoute.respond(s)),
        Err(e) => {
            tracing::warn!("route decision refused: {e}");
            return Err(ProxyError::NoCluster.respond(s));
        }
    };
    let Some(cluster) = ws.snap.cluster(&decision.cluster).cloned() else {
        tracing::warn!("route decision names unknown cluster {}", decision.cluster);
        return Err(ProxyError::NoCluster.respond(s));
    };
    Ok(Route {
        cluster,
        timeout_ms: decision.timeout_ms,
        retry: RetryPolicy::of(decision.retry.as_ref()),
        mirrors: decision.mirrors,
    })
}
