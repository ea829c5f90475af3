//! Retry policy (VirtualService `retries`), as Envoy applies it: which outcomes are retried,
//! how many times, and the jittered backoff between tries.

use std::borrow::Cow;
use std::time::Duration;

/// A route's retry policy, from the `lateen.route.retry` property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries allowed after the first try.
    pub attempts: u32,
    /// Per-try timeout; zero: none (only the route timeout applies).
    pub per_try: Duration,
    pub on: RetryOn,
    pub ignore_previous_hosts: bool,
}

/// The `retryOn` conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub five_xx: bool,
    pub gateway_error: bool,
    pub reset: bool,
    pub connect_failure: bool,
    pub retriable_4xx: bool,
    pub status_codes: Vec<u16>,
    /// gRPC statuses (from `grpc-status`): cancelled, deadline-exceeded, internal,
    /// resource-exhausted, unavailable.
    pub grpc: Vec<u32>,
}

/// How a try ended, for the retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    ConnectFailure,
    Reset,
    PerTryTimeout,
    Response {
        status: u16,
        grpc_status: Option<u32>,
    },
}

impl RetryOn {
    pub fn parse(s: &str) -> Self {
        let mut on = RetryOn::default();
        let mut codes_token = false;
        for tok in s.split(',').map(str::trim) {
            match tok {
                "5xx" => on.five_xx = true,
                "gateway-error" => on.gateway_error = true,
                "reset" => on.reset = true,
                "connect-failure" => on.connect_failure = true,
                "retriable-4xx" => on.retriable_4xx = true,
                "retriable-status-codes" => codes_token = true,
                "cancelled" => on.grpc.push(1),
                "deadline-exceeded" => on.grpc.push(4),
                "resource-exhausted" => on.grpc.push(8),
                "internal" => on.grpc.push(13),
                "unavailable" => on.grpc.push(14),
                // refused-stream: hyper retries a refused HTTP/2 stream on its own.
                t => {
                    if let Ok(code) = t.parse::<u16>() {
                        on.status_codes.push(code);
                    }
                }
            }
        }
        // Istio sets retriable_status_codes to 503 when it adds `retriable-status-codes`
        // without codes of its own.
        if codes_token && on.status_codes.is_empty() {
            on.status_codes.push(503);
        }
        on
    }

    pub fn retriable(&self, o: TryOutcome) -> bool {
        match o {
            TryOutcome::ConnectFailure => {
                self.connect_failure || self.five_xx || self.gateway_error || self.reset
            }
            TryOutcome::Reset => self.reset || self.five_xx || self.gateway_error,
            TryOutcome::PerTryTimeout => self.five_xx || self.gateway_error || self.reset,
            TryOutcome::Response {
                status,
                grpc_status,
            } => {
                (self.five_xx && status >= 500)
                    || (self.gateway_error && matches!(status, 502..=504))
                    || (self.retriable_4xx && status == 409)
                    || self.status_codes.contains(&status)
                    || grpc_status.is_some_and(|g| self.grpc.contains(&g))
            }
        }
    }
}

/// Istio's policy when a route sets none (parsed once: most routes use it).
pub fn istio_default() -> &'static RetryPolicy {
    static DEFAULT: std::sync::OnceLock<RetryPolicy> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(|| RetryPolicy::from(&lateen_sdk::route::RetryPolicy::default()))
}

impl From<&lateen_sdk::route::RetryPolicy> for RetryPolicy {
    /// The policy the route decision carries, with its conditions parsed for the tries.
    fn from(p: &lateen_sdk::route::RetryPolicy) -> Self {
        RetryPolicy {
            attempts: p.attempts,
            per_try: Duration::from_millis(p.per_try_timeout_ms),
            on: RetryOn::parse(&p.retry_on),
            ignore_previous_hosts: p.ignore_previous_hosts,
        }
    }
}

impl RetryPolicy {
    /// The decision's policy; `None` (the route sets none) is Istio's default, shared.
    pub fn of(decision: Option<&lateen_sdk::route::RetryPolicy>) -> Cow<'static, RetryPolicy> {
        match decision {
            None => Cow::Borrowed(istio_default()),
            Some(p) => Cow::Owned(p.into()),
        }
    }
}

/// Envoy's backoff before retry `n` (1-based): uniform in [0, (2^n - 1) × 25 ms], capped at
/// 250 ms.
pub fn backoff(n: u32, random: u64) -> Duration {
    let base = 25u64;
    let ceiling = (base * ((1u64 << n.min(10)) - 1)).min(250);
    Duration::from_millis(if ceiling == 0 {
        0
    } else {
        random % (ceiling + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(p: &str) -> Cow<'static, RetryPolicy> {
        let p = lateen_sdk::route::RetryPolicy::decode(p).expect("a valid policy");
        RetryPolicy::of(Some(&p))
    }

    #[test]
    fn default_policy_retries_connect_failures_and_503_only() {
        let p = RetryPolicy::of(None);
        assert_eq!(p.attempts, 2);
        assert!(p.on.retriable(TryOutcome::ConnectFailure));
        assert!(p.on.retriable(TryOutcome::Response {
            status: 503,
            grpc_status: None
        }));
        assert!(!p.on.retriable(TryOutcome::Response {
            status: 500,
            grpc_status: None
        }));
        assert!(p.on.retriable(TryOutcome::Response {
            status: 200,
            grpc_status: Some(14)
        }));
        assert!(!p.on.retriable(TryOutcome::PerTryTimeout));
    }

    #[test]
    fn property_round_trip_and_tokens() {
        let p = decoded("3;100;gateway-error,retriable-4xx,418;0");
        assert_eq!(
            (p.attempts, p.per_try, p.ignore_previous_hosts),
            (3, Duration::from_millis(100), false)
        );
        assert!(p.on.retriable(TryOutcome::Response {
            status: 504,
            grpc_status: None
        }));
        assert!(!p.on.retriable(TryOutcome::Response {
            status: 500,
            grpc_status: None
        }));
        assert!(p.on.retriable(TryOutcome::Response {
            status: 409,
            grpc_status: None
        }));
        assert!(p.on.retriable(TryOutcome::Response {
            status: 418,
            grpc_status: None
        }));
        assert!(p.on.retriable(TryOutcome::PerTryTimeout));
        assert!(decoded("0;0;5xx;1").attempts == 0);
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        assert!(backoff(1, u64::MAX) <= Duration::from_millis(25));
        assert!(backoff(2, u64::MAX) <= Duration::from_millis(75));
        assert!(backoff(8, u64::MAX) <= Duration::from_millis(250));
        assert_eq!(backoff(3, 0), Duration::ZERO);
    }
}
