//! A small, fast PRNG for sampling decisions (weights, percentages). Not for secrets.
//!
//! ```rust
//! use lateen_sdk::rng::Rng;
//! let mut rng = Rng::new(42);
//! // Sample 10% of requests.
//! let sampled = (0..10_000).filter(|_| rng.chance(10.0)).count();
//! assert!((800..1_200).contains(&sampled));
//! ```

/// xorshift64*. The same seed gives the same sequence.
///
/// ```
/// let mut r = lateen_sdk::rng::Rng::new(7);
/// assert_ne!(r.next_u64(), r.next_u64());
/// ```
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed. Any value works: the low bit is forced to 1, so zero is
    /// safe, and seeds `2n` and `2n + 1` give the same sequence.
    ///
    /// ```rust
    /// use lateen_sdk::rng::Rng;
    /// assert_eq!(Rng::new(5).next_u64(), Rng::new(5).next_u64());
    /// assert_eq!(Rng::new(0).next_u64(), Rng::new(1).next_u64());
    /// assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    /// ```
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    /// Seeded from the proxy-wasm clock, for use inside a filter. Only on wasm32.
    ///
    /// ```no_run
    /// let mut rng = lateen_sdk::rng::Rng::from_clock();
    /// assert!(rng.chance(100.0));
    /// ```
    #[cfg(all(target_arch = "wasm32", feature = "proxy-wasm"))]
    pub fn from_clock() -> Self {
        let nanos = proxy_wasm::hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(7, |d| d.as_nanos() as u64);
        Rng::new(nanos)
    }

    /// The next number, uniform over all `u64` values.
    ///
    /// ```rust
    /// let mut r = lateen_sdk::rng::Rng::new(9);
    /// let rolls: Vec<u64> = (0..1000).map(|_| r.next_u64() % 100).collect();
    /// assert!(rolls.iter().all(|n| *n < 100));
    /// assert!(rolls.iter().any(|n| *n < 50) && rolls.iter().any(|n| *n >= 50));
    /// ```
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
    /// let hits = (0..10_000).filter(|_| r.chance(25.0)).count();
    /// assert!((2_000..3_000).contains(&hits));
    /// ```
    pub fn chance(&mut self, percent: f64) -> bool {
        let per_million = (percent.clamp(0.0, 100.0) * 10_000.0).round() as u64;
        per_million > 0 && self.next_u64() % 1_000_000 < per_million
    }
}
