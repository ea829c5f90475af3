//! The token bucket arithmetic, as Envoy's local rate limit does it: the bucket starts
//! full and gains `tokens_per_fill` at every whole `fill_interval`, up to `max_tokens`.

use crate::config::TokenBucket;

/// A bucket's state: tokens left and the time of the last fill (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub tokens: u64,
    pub last_fill_ms: u64,
}

impl State {
    /// Serialized as 16 little-endian bytes for shared data.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.tokens.to_le_bytes());
        b[8..].copy_from_slice(&self.last_fill_ms.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        Some(State {
            tokens: u64::from_le_bytes(b.get(..8)?.try_into().ok()?),
            last_fill_ms: u64::from_le_bytes(b.get(8..16)?.try_into().ok()?),
        })
    }
}

/// The result of taking a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    pub allowed: bool,
    pub remaining: u64,
    /// Milliseconds until the next fill.
    pub reset_ms: u64,
    pub next: State,
}

/// Takes one token from `state` (a missing state is a full bucket) at `now_ms`.
pub fn take(tb: &TokenBucket, state: Option<State>, now_ms: u64) -> Take {
    let interval = tb.fill_interval_ms.max(1);
    let mut s = state.unwrap_or(State {
        tokens: tb.max_tokens,
        last_fill_ms: now_ms,
    });
    let fills = now_ms.saturating_sub(s.last_fill_ms) / interval;
    if fills > 0 {
        s.tokens = s
            .tokens
            .saturating_add(fills.saturating_mul(tb.tokens_per_fill))
            .min(tb.max_tokens);
        s.last_fill_ms += fills * interval;
    }
    let allowed = s.tokens > 0;
    if allowed {
        s.tokens -= 1;
    }
    Take {
        allowed,
        remaining: s.tokens,
        reset_ms: (s.last_fill_ms + interval).saturating_sub(now_ms),
        next: s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TB: TokenBucket = TokenBucket {
        max_tokens: 3,
        tokens_per_fill: 2,
        fill_interval_ms: 1000,
    };

    #[test]
    fn drains_then_refills_by_interval() {
        let mut s = None;
        let mut allowed = 0;
        for _ in 0..5 {
            let t = take(&TB, s, 10_000);
            allowed += t.allowed as u32;
            s = Some(t.next);
        }
        assert_eq!(allowed, 3);
        // Half an interval later: still empty.
        let t = take(&TB, s, 10_500);
        assert!(!t.allowed);
        assert_eq!(t.reset_ms, 500);
        // One interval: two tokens.
        let t1 = take(&TB, Some(t.next), 11_000);
        let t2 = take(&TB, Some(t1.next), 11_001);
        let t3 = take(&TB, Some(t2.next), 11_002);
        assert!(t1.allowed && t2.allowed && !t3.allowed);
        // A long pause refills only up to max_tokens.
        let t = take(&TB, Some(t3.next), 100_000);
        assert_eq!((t.allowed, t.remaining), (true, 2));
        assert_eq!(State::decode(&t.next.encode()), Some(t.next));
    }
}
