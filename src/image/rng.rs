//! Per-iteration randomness: a counter-based generator keyed by
//! (seed, iteration), so any process can compute any step's draws without
//! shared generator state. That is what makes the job deterministic whoever
//! does which step, and lets a role know its next step's draws in advance
//! (to prefetch).

/// SplitMix64's output function (Steele, Lea, Flood 2014).
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The draws of one iteration: SplitMix64 positioned at a counter that is
/// unique per (iteration, draw).
#[derive(Debug, Clone)]
pub(crate) struct StepRng {
    key: u64,
    counter: u64,
}

impl StepRng {
    /// The generator of iteration `step` under `seed`.
    #[inline]
    pub(crate) fn new(seed: u64, step: u32) -> Self {
        StepRng {
            key: mix(seed ^ 0x666f_726b_7269_6e67), // "forkring"
            // 2^32 draws per step available; a step uses 2 (plus a retry
            // with probability below 2^-39).
            counter: (step as u64) << 32,
        }
    }

    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        mix(self.key.wrapping_add(self.counter.wrapping_mul(GOLDEN)))
    }

    /// A uniform integer in `0..range` (`range >= 1`), exactly unbiased
    /// (Lemire 2019). The retry branch is taken with probability below
    /// `range / 2^64 <= 2^-40`, independent of how full the image is, so
    /// the cost is O(1).
    #[inline]
    pub(crate) fn below(&mut self, range: u32) -> u32 {
        debug_assert!(range >= 1);
        let range = range as u64;
        loop {
            let m = self.next_u64() as u128 * range as u128;
            let lo = m as u64;
            if lo < range {
                let threshold = range.wrapping_neg() % range;
                if lo < threshold {
                    continue;
                }
            }
            return (m >> 64) as u32;
        }
    }
}

/// The two swap targets of iteration `step`: `j` in `step..pixels` for the
/// position shuffle and `k` in `step..2^24` for the colour shuffle.
#[inline]
pub(crate) fn swap_targets(seed: u64, step: u32, pixels: u32) -> (u32, u32) {
    debug_assert!(step < pixels);
    let mut rng = StepRng::new(seed, step);
    let j = step + rng.below(pixels - step);
    let k = step + rng.below((1u32 << 24) - step);
    (j, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        for step in [0u32, 1, 100, 999] {
            let a = swap_targets(7, step, 1000);
            assert_eq!(a, swap_targets(7, step, 1000));
            assert!(a.0 >= step && a.0 < 1000);
            assert!(a.1 >= step && a.1 < (1 << 24));
        }
        assert_ne!(swap_targets(7, 3, 1000), swap_targets(8, 3, 1000));
        assert_eq!(swap_targets(1, 999, 1000).0, 999);
    }

    #[test]
    fn roughly_uniform() {
        let mut counts = [0u32; 10];
        let mut rng = StepRng::new(42, 0);
        for _ in 0..100_000 {
            counts[rng.below(10) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
