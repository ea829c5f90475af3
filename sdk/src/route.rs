//! The route-decision contract between the router filter and the host.
//!
//! The router (or any filter before the host forwards) sets these stream properties with
//! `proxy_set_property`; the host reads them once the request-headers phase of the chain has
//! finished. Values are UTF-8 strings. A decision that names a cluster the snapshot does not
//! have is answered by the host with `503` and response flag `NC`; no decision at all is a
//! `404` with flag `NR`, as in Envoy.
//!
//! | property path              | value                                            |
//! |----------------------------|--------------------------------------------------|
//! | `lateen.route.cluster`     | cluster name, `outbound\|PORT\|SUBSET\|HOST`     |
//! | `lateen.route.name`        | route name (`VS-namespace/VS-name/route-name`)   |
//! | `lateen.route.timeout_ms`  | upstream timeout in milliseconds, `0` = none     |
//! | `lateen.route.id`          | unique route id `namespace/vs#index`, the key fault and rate-limit configs use |
//! | `lateen.route.retry`       | `ATTEMPTS;PER_TRY_TIMEOUT_MS;RETRY_ON;IGNORE_PREVIOUS_HOSTS(0/1)`; absent = Istio's default policy (2 attempts on `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with 503) |
//! | `lateen.route.mirror`      | comma-separated clusters to mirror this request to (already sampled) |
//! | `lateen.response_flags`    | Envoy response flags a filter records for the stream (`FI`, `DI`, `RL`, ...), read back as `response.flags` |
//!
//! Filters that run after the router read the same paths (e.g. to scope a policy to a route).

/// Property path of the chosen cluster.
pub const CLUSTER: &[&str] = &["lateen", "route", "cluster"];
/// Property path of the chosen route's name.
pub const ROUTE_NAME: &[&str] = &["lateen", "route", "name"];
/// Property path of the upstream timeout, in milliseconds.
pub const TIMEOUT_MS: &[&str] = &["lateen", "route", "timeout_ms"];
/// Property path of the route's retry policy.
pub const RETRY: &[&str] = &["lateen", "route", "retry"];
/// Property path of the clusters to mirror to.
pub const MIRROR: &[&str] = &["lateen", "route", "mirror"];
/// Property path of the response flags a filter records (`FI`, `DI`, `RL`).
pub const RESPONSE_FLAGS: &[&str] = &["lateen", "response_flags"];
/// Property path of the route's unique id (`namespace/vs#index`).
pub const ROUTE_ID: &[&str] = &["lateen", "route", "id"];

/// A route decision, as the router sets it.
///
/// ```
/// let d = lateen_sdk::route::Decision {
///     cluster: "outbound|80|v1|reviews".into(),
///     route_name: "default/reviews/r0".into(),
///     timeout_ms: 0,
/// };
/// assert_eq!(d.properties()[0].0, lateen_sdk::route::CLUSTER);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub cluster: String,
    pub route_name: String,
    pub timeout_ms: u64,
}

impl Decision {
    /// The `(path, value)` pairs to set, in order.
    pub fn properties(&self) -> Vec<(&'static [&'static str], Vec<u8>)> {
        vec![
            (CLUSTER, self.cluster.as_bytes().to_vec()),
            (ROUTE_NAME, self.route_name.as_bytes().to_vec()),
            (TIMEOUT_MS, self.timeout_ms.to_string().into_bytes()),
        ]
    }

    /// Sets the decision on the current stream through `proxy_set_property`.
    ///
    /// ```no_run
    /// # let d = lateen_sdk::route::Decision::default();
    /// d.apply().expect("host accepted the decision");
    /// ```
    pub fn apply(&self) -> Result<(), proxy_wasm::types::Status> {
        for (path, value) in self.properties() {
            proxy_wasm::hostcalls::set_property(path.to_vec(), Some(&value))?;
        }
        Ok(())
    }
}

/// Builds an Istio cluster name: `outbound|PORT|SUBSET|HOST`.
///
/// ```
/// assert_eq!(lateen_sdk::route::outbound_cluster(9080, "v1", "reviews.default.svc.cluster.local"),
///            "outbound|9080|v1|reviews.default.svc.cluster.local");
/// ```
pub fn outbound_cluster(port: u32, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}
