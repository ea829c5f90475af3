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
//!     ..Default::default()
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

/// The dotted name of a property path (`lateen.route.cluster` for [`CLUSTER`]), for hosts
/// that key stream properties by it. The route decision's are joined once, not per call.
///
/// ```
/// use lateen_sdk::route::{dotted, CLUSTER};
/// assert_eq!(dotted(CLUSTER), "lateen.route.cluster");
/// assert_eq!(dotted(&["a", "b"]), "a.b");
/// ```
pub fn dotted(path: &[&str]) -> std::borrow::Cow<'static, str> {
    static NAMES: std::sync::OnceLock<Vec<(&'static [&'static str], String)>> =
        std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        [
            CLUSTER,
            ROUTE_NAME,
            TIMEOUT_MS,
            RETRY,
            MIRROR,
            ROUTE_ID,
            RESPONSE_FLAGS,
        ]
        .into_iter()
        .map(|p| (p, p.join(".")))
        .collect()
    });
    match names.iter().find(|(p, _)| *p == path) {
        Some((_, name)) => std::borrow::Cow::Borrowed(name.as_str()),
        None => std::borrow::Cow::Owned(path.join(".")),
    }
}

/// Retry conditions Lateen acts on: Envoy's `retry_on` tokens, as Istio passes them (a
/// status code is accepted too, as in `retriable-status-codes`).
pub const RETRY_ON_TOKENS: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "refused-stream",
    "retriable-4xx",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// The conditions of Istio's retry policy for a route that sets none.
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// A route's retry policy (Istio `HTTPRetry`), as the host applies it. It travels in the
/// [`RETRY`] property as `ATTEMPTS;PER_TRY_TIMEOUT_MS;RETRY_ON;IGNORE_PREVIOUS_HOSTS(0/1)`;
/// [`RetryPolicy::encode`] and [`RetryPolicy::decode`] are the one place that format is
/// written and read.
///
/// ```
/// use lateen_sdk::route::RetryPolicy;
/// let p = RetryPolicy { attempts: 3, per_try_timeout_ms: 200, retry_on: "5xx".into(), ignore_previous_hosts: true };
/// assert_eq!(p.encode(), "3;200;5xx;1");
/// assert_eq!(RetryPolicy::decode(&p.encode()), Ok(p));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try (Istio's `attempts`).
    pub attempts: u32,
    /// Timeout of each try in milliseconds; `0`: the route's timeout only.
    pub per_try_timeout_ms: u64,
    /// Comma-separated [`RETRY_ON_TOKENS`] and status codes.
    pub retry_on: String,
    /// Whether a retry avoids the hosts already tried (Istio's `retryIgnorePreviousHosts`,
    /// true by default).
    pub ignore_previous_hosts: bool,
}

impl Default for RetryPolicy {
    /// Istio's policy for a route that sets none: 2 attempts on [`DEFAULT_RETRY_ON`].
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            per_try_timeout_ms: 0,
            retry_on: DEFAULT_RETRY_ON.into(),
            ignore_previous_hosts: true,
        }
    }
}

/// Why a route-decision property could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The property's path, dotted (`lateen.route.retry`).
    pub property: String,
    /// What was wrong with its value.
    pub message: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.property, self.message)
    }
}

impl std::error::Error for DecodeError {}

fn bad(path: &[&str], message: impl Into<String>) -> DecodeError {
    DecodeError {
        property: path.join("."),
        message: message.into(),
    }
}

impl RetryPolicy {
    /// The [`RETRY`] property's value.
    pub fn encode(&self) -> String {
        format!(
            "{};{};{};{}",
            self.attempts,
            self.per_try_timeout_ms,
            self.retry_on,
            u8::from(self.ignore_previous_hosts)
        )
    }

    /// Reads a [`RETRY`] property's value.
    ///
    /// ```
    /// use lateen_sdk::route::RetryPolicy;
    /// assert!(RetryPolicy::decode("3;x;5xx;1").is_err());
    /// assert_eq!(RetryPolicy::decode("0;0;;0").unwrap().attempts, 0);
    /// ```
    pub fn decode(value: &str) -> Result<Self, DecodeError> {
        let mut parts = value.splitn(4, ';');
        let mut number = |what: &str| -> Result<u64, DecodeError> {
            let v = parts.next().unwrap_or("");
            v.parse()
                .map_err(|_| bad(RETRY, format!("{what} `{v}` is not a number")))
        };
        let attempts =
            u32::try_from(number("attempts")?).map_err(|_| bad(RETRY, "attempts out of range"))?;
        let per_try_timeout_ms = number("per-try timeout")?;
        let retry_on = parts.next().unwrap_or("").to_string();
        let ignore_previous_hosts = match parts.next() {
            Some("1") | None => true,
            Some("0") => false,
            Some(v) => return Err(bad(RETRY, format!("`{v}` is not 0 or 1"))),
        };
        Ok(RetryPolicy {
            attempts,
            per_try_timeout_ms,
            retry_on,
            ignore_previous_hosts,
        })
    }

    /// The first `retry_on` token that is neither a [`RETRY_ON_TOKENS`] entry nor a
    /// status code, if any.
    ///
    /// ```
    /// use lateen_sdk::route::RetryPolicy;
    /// let p = RetryPolicy { retry_on: "5xx,418,bogus".into(), ..Default::default() };
    /// assert_eq!(p.unknown_condition(), Some("bogus"));
    /// ```
    pub fn unknown_condition(&self) -> Option<&str> {
        self.retry_on
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .find(|t| !RETRY_ON_TOKENS.contains(t) && t.parse::<u16>().is_err())
    }
}

/// A route decision: what the router tells the host about where and how a request goes.
/// [`Decision::properties`] writes it as stream properties and [`Decision::from_properties`]
/// reads it back: the one definition of that encoding.
///
/// ```
/// let d = lateen_sdk::route::Decision {
///     cluster: "outbound|80|v1|reviews".into(),
///     route_name: "default/reviews/r0".into(),
///     ..Default::default()
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
    /// The route's unique id (`namespace/vs#index`); empty: not set.
    pub route_id: String,
    /// The retry policy; `None`: Istio's default ([`RetryPolicy::default`]).
    pub retry: Option<RetryPolicy>,
    /// Clusters to mirror this request to, already sampled by their percentages.
    pub mirrors: Vec<String>,
}

impl Decision {
    /// The `(path, value)` pairs to set, in order: [`CLUSTER`], [`ROUTE_NAME`],
    /// [`TIMEOUT_MS`], then [`ROUTE_ID`], [`RETRY`] and [`MIRROR`] when the decision has
    /// them. Values are UTF-8.
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
        let mut out = vec![
            (CLUSTER, self.cluster.as_bytes().to_vec()),
            (ROUTE_NAME, self.route_name.as_bytes().to_vec()),
            (TIMEOUT_MS, self.timeout_ms.to_string().into_bytes()),
        ];
        if !self.route_id.is_empty() {
            out.push((ROUTE_ID, self.route_id.as_bytes().to_vec()));
        }
        if let Some(r) = &self.retry {
            out.push((RETRY, r.encode().into_bytes()));
        }
        if !self.mirrors.is_empty() {
            out.push((MIRROR, self.mirrors.join(",").into_bytes()));
        }
        out
    }

    /// Reads a decision back from the stream's properties (`get` answers a property's
    /// value by its path). `Ok(None)`: no cluster was chosen (Envoy's `NR`). A value that
    /// does not parse is an error naming the property.
    ///
    /// ```
    /// use lateen_sdk::route::{Decision, RetryPolicy};
    /// let d = Decision {
    ///     cluster: "outbound|80||web".into(),
    ///     retry: Some(RetryPolicy { attempts: 1, ..Default::default() }),
    ///     mirrors: vec!["outbound|80||shadow".into()],
    ///     ..Default::default()
    /// };
    /// let props = d.properties();
    /// let back = Decision::from_properties(|path| {
    ///     props.iter().find(|(p, _)| *p == path).map(|(_, v)| v.clone())
    /// });
    /// assert_eq!(back, Ok(Some(d)));
    /// ```
    pub fn from_properties<V: AsRef<[u8]>>(
        mut get: impl FnMut(&'static [&'static str]) -> Option<V>,
    ) -> Result<Option<Decision>, DecodeError> {
        let mut text = |path: &'static [&'static str]| -> Result<Option<String>, DecodeError> {
            get(path)
                .map(|v| {
                    std::str::from_utf8(v.as_ref())
                        .map(str::to_string)
                        .map_err(|_| bad(path, "not UTF-8"))
                })
                .transpose()
        };
        let Some(cluster) = text(CLUSTER)? else {
            return Ok(None);
        };
        let timeout_ms = match text(TIMEOUT_MS)? {
            None => 0,
            Some(t) => t
                .parse()
                .map_err(|_| bad(TIMEOUT_MS, format!("`{t}` is not a number")))?,
        };
        Ok(Some(Decision {
            cluster,
            route_name: text(ROUTE_NAME)?.unwrap_or_default(),
            timeout_ms,
            route_id: text(ROUTE_ID)?.unwrap_or_default(),
            retry: text(RETRY)?.map(|r| RetryPolicy::decode(&r)).transpose()?,
            mirrors: text(MIRROR)?
                .map(|m| {
                    m.split(',')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(d: &Decision) -> Result<Option<Decision>, DecodeError> {
        let props = d.properties();
        Decision::from_properties(|path| {
            props
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn every_field_survives_the_round_trip() {
        let full = Decision {
            cluster: outbound_cluster(9080, "v2", "reviews.default.svc.cluster.local"),
            route_name: "canary".into(),
            timeout_ms: 1500,
            route_id: "default/reviews#2".into(),
            retry: Some(RetryPolicy {
                attempts: 3,
                per_try_timeout_ms: 250,
                retry_on: "gateway-error,reset,418".into(),
                ignore_previous_hosts: false,
            }),
            mirrors: vec!["outbound|80||a".into(), "outbound|80|v1|b".into()],
        };
        assert_eq!(round_trip(&full), Ok(Some(full.clone())));
        let bare = Decision {
            cluster: "outbound|80||web".into(),
            ..Default::default()
        };
        assert_eq!(round_trip(&bare), Ok(Some(bare.clone())));
        assert_eq!(Decision::from_properties(|_| None::<Vec<u8>>), Ok(None));
    }

    #[test]
    fn bad_values_name_their_property() {
        let e = Decision::from_properties(|p| match p {
            p if p == CLUSTER => Some(b"outbound|80||web".to_vec()),
            p if p == TIMEOUT_MS => Some(b"soon".to_vec()),
            _ => None,
        })
        .unwrap_err();
        assert_eq!(e.property, "lateen.route.timeout_ms");
        let e = RetryPolicy::decode("2;0;5xx;maybe").unwrap_err();
        assert_eq!(e.property, "lateen.route.retry");
        assert_eq!(
            RetryPolicy::decode("2;0;5xx").map(|p| p.ignore_previous_hosts),
            Ok(true)
        );
    }
}
