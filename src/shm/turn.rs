//! A two-party turn: strict alternation between party 0 and party 1.
//!
//! The turn word is a sequence number: step `s` belongs to party `s % 2`.
//! A party waits until the sequence is its own, does its step, and hands the
//! turn over by publishing `s + 1`. Because the sequence only ever grows and
//! its parity *is* whose turn it is, a party killed at any instruction cannot
//! leave the turn inconsistent: either it published `s + 1` or it did not.
//! Users may therefore make the published sequence their commit point (the
//! image job does).

use super::cell::{CachePadded, ShmSafe};
use super::wait::{Deadline, FutexCell, Phase, SpinPolicy, TimedOut};

/// One of the two parties of a [`Turn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    /// Owns even sequence numbers (ping).
    Even,
    /// Owns odd sequence numbers (pong).
    Odd,
}

impl Party {
    /// Whether step `seq` belongs to this party.
    #[inline]
    pub fn owns(self, seq: u32) -> bool {
        (seq & 1 == 0) == (self == Party::Even)
    }
    /// 0 for `Even`, 1 for `Odd`.
    #[inline]
    pub fn index(self) -> usize {
        match self {
            Party::Even => 0,
            Party::Odd => 1,
        }
    }
    /// The other party.
    pub fn other(self) -> Party {
        match self {
            Party::Even => Party::Odd,
            Party::Odd => Party::Even,
        }
    }
}

/// The shared turn word, alone on its cache lines.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Turn {
    seq: CachePadded<FutexCell>,
}

// SAFETY: repr(C) over a padded FutexCell.
unsafe impl ShmSafe for Turn {}

/// What a [`Turn::wait`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnWait {
    /// It is the caller's turn for step `seq`.
    Mine(u32),
    /// The caller's `give_up` predicate held for `seq` (job finished or
    /// stopping).
    GaveUp(u32),
}

impl Turn {
    /// The current sequence number (Acquire: the previous step's writes are
    /// visible once we see its successor).
    #[inline]
    pub fn seq(&self) -> u32 {
        self.seq.load()
    }

    /// Waits until it is `party`'s turn or `give_up(seq)` holds (checked on
    /// every observed value and on every wake-up). Returns at `deadline`
    /// with `TimedOut` otherwise, so the caller can re-check liveness.
    pub fn wait(
        &self,
        party: Party,
        give_up: impl FnMut(u32) -> bool,
        policy: SpinPolicy,
        deadline: impl Into<Deadline>,
    ) -> Result<TurnWait, TimedOut> {
        self.wait_phase(party, give_up, policy, deadline)
            .map(|(w, _)| w)
    }

    /// Like [`Turn::wait`], also reporting the phase in which the wait
    /// ended (for `AdaptiveSpin`).
    pub fn wait_phase(
        &self,
        party: Party,
        mut give_up: impl FnMut(u32) -> bool,
        policy: SpinPolicy,
        deadline: impl Into<Deadline>,
    ) -> Result<(TurnWait, Phase), TimedOut> {
        let mut gave_up = false;
        let (seq, phase) = self.seq.wait_until_phase(
            |s| {
                if party.owns(s) {
                    true
                } else if give_up(s) {
                    gave_up = true;
                    true
                } else {
                    false
                }
            },
            policy,
            deadline,
        )?;
        if gave_up && !party.owns(seq) {
            Ok((TurnWait::GaveUp(seq), phase))
        } else {
            Ok((TurnWait::Mine(seq), phase))
        }
    }

    /// Hands the turn over: publishes `next` (normally the step just done
    /// plus one) and wakes the peer if it sleeps.
    #[inline]
    pub fn pass(&self, next: u32) {
        debug_assert_eq!(next, self.seq.load_relaxed().wrapping_add(1));
        // SYNC POINT: release of everything this step wrote; acquired by the
        // peer's `wait` (inside FutexCell::publish / wait_until).
        self.seq.publish(next);
    }

    /// Sets the sequence without the step check: used once when a job's
    /// segments are created or repaired.
    pub fn reset(&self, seq: u32) {
        self.seq.publish(seq);
    }

    /// Wakes a sleeping party so it re-checks its `give_up` condition.
    pub fn kick(&self) {
        self.seq.kick();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn parity() {
        assert!(Party::Even.owns(0));
        assert!(Party::Odd.owns(1));
        assert!(!Party::Odd.owns(2));
        assert_eq!(Party::Even.other(), Party::Odd);
    }

    #[test]
    fn alternates_between_threads() {
        let t = Arc::new(Turn::default());
        let n = 20_000u32;
        let spawn = |party: Party| {
            let t = t.clone();
            std::thread::spawn(move || {
                let mut mine = 0;
                loop {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    match t.wait(party, |s| s >= n, SpinPolicy::HANDOFF, deadline) {
                        Ok(TurnWait::Mine(s)) if s < n => {
                            mine += 1;
                            t.pass(s + 1);
                        }
                        Ok(_) => return mine,
                        Err(e) => panic!("timed out at {e:?}"),
                    }
                }
            })
        };
        let a = spawn(Party::Even);
        let b = spawn(Party::Odd);
        assert_eq!(a.join().unwrap(), n / 2);
        assert_eq!(b.join().unwrap(), n / 2);
        assert_eq!(t.seq(), n);
    }
}
