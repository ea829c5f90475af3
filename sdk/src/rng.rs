//! A small, fast PRNG for sampling decisions (weights, percentages). Not for secrets.

/// xorshift64*.
///
/// ```
/// let mut r = lateen_sdk::rng::Rng::new(7);
/// assert_ne!(r.next_u64(), r.next_u64());
/// ```
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value; zero is adjusted).
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    /// Seeded from the proxy-wasm clock, for use inside a filter.
    #[cfg(target_arch = "wasm32")]
    pub fn from_clock() -> Self {
        let nanos = proxy_wasm::hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(7, |d| d.as_nanos() as u64);
        Rng::new(nanos)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `percent`/100, at per-million resolution (Istio's `Percent`).
    ///
    /// ```
    /// let mut r = lateen_sdk::rng::Rng::new(1);
    /// assert!(!r.chance(0.0));
    /// assert!(r.chance(100.0));
    /// ```
    pub fn chance(&mut self, percent: f64) -> bool {
        let per_million = (percent.clamp(0.0, 100.0) * 10_000.0).round() as u64;
        per_million > 0 && self.next_u64() % 1_000_000 < per_million
    }
}
