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
use super::wait::{Deadline, FutexCell, SpinPolicy, TimedOut, WaitPhase};

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
    pub(crate) fn owns(self, seq: u32) -> bool {
        (seq & 1 == 0) == (self == Party::Even)
    }
    /// 0 for `Even`, 1 for `Odd`.
    #[inline]
    pub(crate) fn index(self) -> usize {
        match self {
            Party::Even => 0,
            Party::Odd => 1,
        }
    }
    /// The other party.
    pub(crate) fn other(self) -> Party {
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

/// Proof that a party holds the turn for one step: made only by
/// [`Turn::wait`] or [`Turn::try_take`] when the sequence is the party's,
/// consumed by [`Turn::pass`]. A step therefore cannot run, or hand the turn
/// over, without holding it.
#[derive(Debug, PartialEq, Eq)]
pub struct TurnToken {
    seq: u32,
    party: Party,
}

impl TurnToken {
    /// The step this token allows.
    #[inline]
    pub(crate) fn seq(&self) -> u32 {
        self.seq
    }
    /// The party holding the turn.
    #[inline]
    pub(crate) fn party(&self) -> Party {
        self.party
    }
}

/// What a [`Turn::wait`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TurnWait {
    /// It is the caller's turn.
    Mine(TurnToken),
    /// The caller's `give_up` predicate held for `seq` (job finished or
    /// stopping).
    GaveUp(u32),
}

impl Turn {
    /// The current sequence number (Acquire: the previous step's writes are
    /// visible once we see its successor).
    #[inline]
    pub(crate) fn seq(&self) -> u32 {
        self.seq.load()
    }

    /// The turn for `party` if the current sequence is its own and
    /// `limit` has not been reached.
    #[inline]
    pub fn try_take(&self, party: Party, limit: u32) -> Option<TurnToken> {
        let seq = self.seq();
        (seq < limit && party.owns(seq)).then_some(TurnToken { seq, party })
    }

    /// Waits until it is `party`'s turn or `give_up(seq)` holds (checked on
    /// every observed value and on every wake-up). Returns at `deadline`
    /// with `TimedOut` otherwise, so the caller can re-check liveness.
    pub(crate) fn wait(
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
    pub(crate) fn wait_phase(
        &self,
        party: Party,
        mut give_up: impl FnMut(u32) -> bool,
        policy: SpinPolicy,
        deadline: impl Into<Deadline>,
    ) -> Result<(TurnWait, WaitPhase), TimedOut> {
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
            Ok((TurnWait::Mine(TurnToken { seq, party }), phase))
        }
    }

    /// Hands the turn over: publishes the token's step plus one and wakes
    /// the peer if it sleeps.
    #[inline]
    pub(crate) fn pass(&self, token: TurnToken) {
        let next = token.seq.wrapping_add(1);
        debug_assert_eq!(token.seq, self.seq.load_relaxed());
        // SYNC POINT: release of everything this step wrote; acquired by the
        // peer's `wait` (inside FutexCell::publish / wait_until).
        self.seq.publish(next);
    }

    /// Wakes a sleeping party so it re-checks its `give_up` condition.
    pub(crate) fn kick(&self) {
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
                        Ok(TurnWait::Mine(tok)) if tok.seq() < n => {
                            mine += 1;
                            t.pass(tok);
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
