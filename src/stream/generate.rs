//! Vector generation and dropout simulation.
//!
//! A vector's values depend only on (seed, sequence number): a restarted
//! producer regenerates exactly the vectors it had not committed.

use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::time::Duration;

use super::{Distribution, Noise, StreamSettings};

/// Generates the vector of any sequence number.
#[derive(Debug, Clone)]
pub struct Generator {
    key: u64,
    distribution: Distribution,
    dim: usize,
}

impl Generator {
    /// A generator for the stream settings.
    pub fn new(s: &StreamSettings) -> Self {
        Generator {
            key: s.seed ^ 0x7374_7265_616d_0000, // "stream"
            distribution: s.distribution,
            dim: s.dim as usize,
        }
    }

    /// Values per vector.
    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    /// Fills `out` with the values of vector `seq`.
    #[inline]
    pub(crate) fn fill(&self, seq: u64, out: &mut [f32]) {
        let mut rng =
            Xoshiro256PlusPlus::seed_from_u64(self.key ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        match self.distribution {
            Distribution::Normal => out.iter_mut().for_each(|x| *x = rng.sample(StandardNormal)),
            Distribution::Uniform => out.iter_mut().for_each(|x| *x = rng.random::<f32>()),
        }
    }
}

/// Decides which vectors `--noise` drops: a drop event every X seconds, X
/// uniform in [low, high], each dropping `burst` consecutive vectors.
#[derive(Debug, Clone)]
pub(crate) struct NoiseClock {
    cfg: Noise,
    rng: Xoshiro256PlusPlus,
    /// Monotonic ns of the next drop event.
    next_at: u64,
    /// Vectors still to drop in the current event.
    remaining: u32,
}

impl NoiseClock {
    /// Starts the clock at `now_ns`; `salt` varies the schedule between
    /// producer incarnations.
    pub(crate) fn new(cfg: Noise, now_ns: u64, salt: u64) -> Self {
        let mut n = NoiseClock {
            cfg,
            rng: Xoshiro256PlusPlus::seed_from_u64(salt),
            next_at: 0,
            remaining: 0,
        };
        n.next_at = now_ns + n.interval();
        n
    }

    fn interval(&mut self) -> u64 {
        let x: f64 = self.rng.random();
        let secs = self.cfg.low + (self.cfg.high - self.cfg.low) * x;
        Duration::from_secs_f64(secs).as_nanos() as u64
    }

    /// Whether the vector stamped `now_ns` is dropped; sets `event` when it
    /// starts a new drop event.
    #[inline]
    pub(crate) fn drop_now(&mut self, now_ns: u64, event: &mut bool) -> bool {
        if self.remaining == 0 && now_ns >= self.next_at {
            self.remaining = self.cfg.burst;
            self.next_at = now_ns + self.interval();
            *event = true;
        }
        if self.remaining > 0 {
            self.remaining -= 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Rate, StreamFormat};

    fn settings(d: Distribution) -> StreamSettings {
        StreamSettings {
            dim: 50,
            distribution: d,
            rate: Rate::Max,
            count: None,
            noise: None,
            batch: 100,
            rate_window: 100,
            rate_interval: 1.0,
            format: StreamFormat::Jsonl,
            ring_slots: 64,
            seed: 3,
            export: None,
        }
    }

    #[test]
    fn deterministic_per_sequence_number() {
        let g = Generator::new(&settings(Distribution::Normal));
        let (mut a, mut b, mut c) = ([0f32; 50], [0f32; 50], [0f32; 50]);
        g.fill(7, &mut a);
        g.fill(7, &mut b);
        g.fill(8, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn distributions_look_right() {
        for d in [Distribution::Normal, Distribution::Uniform] {
            let g = Generator::new(&settings(d));
            let mut v = [0f32; 50];
            let (mut sum, mut sq, mut n) = (0f64, 0f64, 0f64);
            for s in 0..2000 {
                g.fill(s, &mut v);
                for &x in &v {
                    sum += x as f64;
                    sq += (x as f64).powi(2);
                    n += 1.0;
                }
            }
            let mean = sum / n;
            let var = sq / n - mean * mean;
            match d {
                Distribution::Normal => assert!(
                    mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
                    "{mean} {var}"
                ),
                Distribution::Uniform => {
                    assert!((mean - 0.5).abs() < 0.01 && (var - 1.0 / 12.0).abs() < 0.005)
                }
            }
        }
    }

    #[test]
    fn noise_drops_bursts_on_schedule() {
        let cfg = Noise {
            low: 1.0,
            high: 1.0,
            burst: 3,
        };
        let mut n = NoiseClock::new(cfg, 0, 1);
        let mut dropped = Vec::new();
        let mut events = 0;
        for t in 0..25u64 {
            let mut ev = false;
            // one vector every 0.1 s
            if n.drop_now(t * 100_000_000, &mut ev) {
                dropped.push(t);
            }
            events += ev as u32;
        }
        assert_eq!(dropped, vec![10, 11, 12, 20, 21, 22]);
        assert_eq!(events, 2);
    }
}
