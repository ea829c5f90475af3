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
//! | `lateen.route.name`        | the HTTPRoute's `name`, or `VSNAME.INDEX` without one |
//! | `lateen.route.timeout_ms`  | upstream timeout in milliseconds, `0` = none     |
//! | `lateen.route.id`          | unique route id `namespace/vs#index`, the key fault and rate-limit configs use |
//! | `lateen.route.retry`       | `ATTEMPTS;PER_TRY_TIMEOUT_MS;RETRY_ON;IGNORE_PREVIOUS_HOSTS(0/1)`; absent = Istio's default policy (2 attempts on `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with 503) |
//! | `lateen.route.mirror`      | comma-separated clusters to mirror this request to (already sampled) |
//! | `lateen.response_flags`    | Envoy response flags a filter records for the stream (`FI`, `DI`, `RL`, ...), read back as `response.flags` |
//!
//! Filters that run after the router read the same paths (e.g. to scope a policy to a route).
//!
//! Only Lateen's host acts on these properties. In another host filters can still set and
//! read them, but nothing routes on them.
//!
//! ```rust
//! use lateen_sdk::route::{outbound_cluster, Decision, TIMEOUT_MS};
//! let d = Decision {
//!     cluster: outbound_cluster(9080, "v2", "reviews.default.svc.cluster.local"),
//!     route_name: "default/reviews/canary".into(),
//!     timeout_ms: 1500,
//! };
//! let props = d.properties();
//! assert_eq!(props[2], (TIMEOUT_MS, b"1500".to_vec()));
//! ```
//!
//! A filter after the router reads a property back:
//!
//! ```no_run
//! use lateen_sdk::{proxy_wasm::hostcalls, route};
//! let id = hostcalls::get_property(route::ROUTE_ID.to_vec()).unwrap();
//! let id = id.map(|b| String::from_utf8_lossy(&b).into_owned());
//! println!("route id: {id:?}");
//! ```

/// Property path of the chosen cluster.
///
/// ```rust
/// assert_eq!(lateen_sdk::route::CLUSTER.join("."), "lateen.route.cluster");
/// ```
pub const CLUSTER: &[&str] = &["lateen", "route", "cluster"];
/// Property path of the chosen route's name.
///
/// ```rust
/// assert_eq!(lateen_sdk::route::ROUTE_NAME.join("."), "lateen.route.name");
/// ```
pub const ROUTE_NAME: &[&str] = &["lateen", "route", "name"];
/// Property path of the upstream timeout, in milliseconds.
///
/// ```rust
/// assert_eq!(lateen_sdk::route::TIMEOUT_MS.join("."), "lateen.route.timeout_ms");
/// ```
pub const TIMEOUT_MS: &[&str] = &["lateen", "route", "timeout_ms"];
/// Property path of the route's retry policy
/// (`ATTEMPTS;PER_TRY_TIMEOUT_MS;RETRY_ON;IGNORE_PREVIOUS_HOSTS`).
///
/// ```rust
/// assert_eq!(lateen_sdk::route::RETRY.join("."), "lateen.route.retry");
/// ```
pub const RETRY: &[&str] = &["lateen", "route", "retry"];
/// Property path of the clusters to mirror to (comma-separated).
///
/// ```rust
/// assert_eq!(lateen_sdk::route::MIRROR.join("."), "lateen.route.mirror");
/// ```
pub const MIRROR: &[&str] = &["lateen", "route", "mirror"];
/// Property path of the response flags a filter records (`FI`, `DI`, `RL`). Lateen's host
/// reports them as `response.flags` and in its access log.
///
/// ```rust
/// assert_eq!(lateen_sdk::route::RESPONSE_FLAGS.join("."), "lateen.response_flags");
/// ```
pub const RESPONSE_FLAGS: &[&str] = &["lateen", "response_flags"];
/// Property path of the route's unique id (`namespace/vs#index`).
///
/// ```rust
/// assert_eq!(lateen_sdk::route::ROUTE_ID.join("."), "lateen.route.id");
/// ```
pub const ROUTE_ID: &[&str] = &["lateen", "route", "id"];

/// A route decision, as the router sets it: the cluster, the route name and the timeout.
/// The router sets [`ROUTE_ID`], [`RETRY`] and [`MIRROR`] on its own.
///
/// ```
/// let d = lateen_sdk::route::Decision {
///     cluster: "outbound|80|v1|reviews".into(),
///     route_name: "default/reviews/r0".into(),
///     timeout_ms: 0,
/// };
/// assert_eq!(d.properties()[0].0, lateen_sdk::route::CLUSTER);
/// assert_eq!(d.properties()[0].1, b"outbound|80|v1|reviews");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// The cluster to forward to, `outbound|PORT|SUBSET|HOST` (see [`outbound_cluster`]).
    pub cluster: String,
    /// The route's name (the HTTPRoute's `name`), as access logs and `route_name` show it.
    pub route_name: String,
    /// Upstream timeout in milliseconds; `0` means none.
    pub timeout_ms: u64,
}

impl Decision {
    /// The `(path, value)` pairs to set, in order: [`CLUSTER`], [`ROUTE_NAME`],
    /// [`TIMEOUT_MS`]. Values are UTF-8.
    ///
    /// ```rust
    /// use lateen_sdk::route::{Decision, ROUTE_NAME, TIMEOUT_MS};
    /// let d = Decision { route_name: "r".into(), ..Default::default() };
    /// let props = d.properties();
    /// assert_eq!(props.len(), 3);
    /// assert_eq!(props[1], (ROUTE_NAME, b"r".to_vec()));
    /// assert_eq!(props[2], (TIMEOUT_MS, b"0".to_vec()));
    /// ```
    pub fn properties(&self) -> Vec<(&'static [&'static str], Vec<u8>)> {
        vec![
            (CLUSTER, self.cluster.as_bytes().to_vec()),
            (ROUTE_NAME, self.route_name.as_bytes().to_vec()),
            (TIMEOUT_MS, self.timeout_ms.to_string().into_bytes()),
        ]
    }

    /// Sets the decision on the current stream through `proxy_set_property`. Call it from a
    /// stream context, in the request-headers phase.
    ///
    /// ```no_run
    /// let d = lateen_sdk::route::Decision {
    ///     cluster: lateen_sdk::route::outbound_cluster(80, "", "web"),
    ///     ..Default::default()
    /// };
    /// d.apply().expect("host accepted the decision");
    /// ```
    #[cfg(feature = "proxy-wasm")]
    pub fn apply(&self) -> Result<(), proxy_wasm::types::Status> {
        for (path, value) in self.properties() {
            proxy_wasm::hostcalls::set_property(path.to_vec(), Some(&value))?;
        }
        Ok(())
    }
}

/// Builds an Istio cluster name: `outbound|PORT|SUBSET|HOST`. An empty subset means the
/// whole service.
///
/// ```
/// assert_eq!(lateen_sdk::route::outbound_cluster(9080, "v1", "reviews.default.svc.cluster.local"),
///            "outbound|9080|v1|reviews.default.svc.cluster.local");
/// assert_eq!(lateen_sdk::route::outbound_cluster(80, "", "web"), "outbound|80||web");
/// ```
pub fn outbound_cluster(port: u32, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}
