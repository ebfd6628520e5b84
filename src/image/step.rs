//! One iteration of the image job, as a redo-logged transaction.
//!
//! Iteration `s` (with `n = W*H` pixels, `C = 2^24` colours):
//! 1. *plan*: draw `j` in `s..n` and `k` in `s..C` from (seed, s); read
//!    `positions[s], positions[j], colours[s], colours[k]`;
//! 2. *arm* the role's journal with the post-images (the values after the
//!    two swaps: `positions[s] = old positions[j]`, ...);
//! 3. *apply*: write the swaps, paint `pixels[positions[s]] =
//!    colours[s]`, set both mask bits;
//! 4. *commit*: publish `s + 1` on the turn (which also hands it over).
//!
//! This is a partial Fisher–Yates shuffle of positions and of colours, one
//! element per iteration: O(1) work in the worst case, no rejection of used
//! positions or colours, and the shuffled prefixes *are* the history.
//!
//! Crash safety (SIGKILL at any instruction): the commit point is the turn
//! store. A role restarted with the turn at `s`, when `s` is its own step,
//! looks at its journal: armed for `s` means steps 3 may be partly done, so
//! it re-applies the record (idempotent: absolute values) and commits; not
//! armed for `s` means nothing was changed yet, and the step is simply run
//! again. Journal order is enforced by `Journal::arm` (record, then armed
//! word, then a fence before the data stores). Either way the final image and
//! history are the same as in an uninterrupted run.
//!
//! Everything read from shared memory is validated before it is used as an
//! index: positions must be `< n`, journal records must match the step.

use crate::shm::turn::{Party, TurnToken};

use super::arrays::{has_prefetchw, prefetch, prefetch_write};
use super::layout::{COLOURS, ImageView, StepRecord};
use super::rng::swap_targets;

/// Shared image state that violates an invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// A shuffle entry is out of range.
    #[error("field positions[{index}] holds {value}, but the image has only {n} positions")]
    BadPosition {
        /// Entry index.
        index: u32,
        /// Value found.
        value: u32,
        /// Number of positions.
        n: u32,
    },
    /// A journal record does not belong to the step it is armed for.
    #[error("field journals[{party}] is armed for iteration {step} but holds {record:?}")]
    BadJournal {
        /// 0 for ping, 1 for pong.
        party: usize,
        /// The step it is armed for.
        step: u32,
        /// The record.
        record: StepRecord,
    },
    /// A journal's record fails its checksum.
    #[error("field journals[{party}]: {source}")]
    JournalChecksum {
        /// 0 for ping, 1 for pong.
        party: usize,
        /// The mismatch.
        source: crate::shm::commit::ChecksumMismatch,
    },
}

impl StepError {
    /// The part name of the segment the error is about.
    pub(crate) fn part(&self) -> &'static str {
        match self {
            StepError::BadPosition { .. } => "history",
            StepError::BadJournal { .. } | StepError::JournalChecksum { .. } => "image",
        }
    }
}

impl From<StepError> for crate::job::JobError {
    fn from(e: StepError) -> Self {
        crate::job::JobError::corrupt(e.part(), e.to_string())
    }
}

/// A record whose every index has been checked against the image size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidRecord(StepRecord);

impl ValidRecord {
    /// The record.
    pub fn get(&self) -> &StepRecord {
        &self.0
    }
}

/// What a role found when it attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Nothing was half done.
    Clean,
    /// Iteration `s` was half done by our previous incarnation and has been
    /// redone and committed.
    Redone(u32),
}

/// Executes iterations on a validated view.
#[derive(Debug, Clone, Copy)]
pub struct Stepper<'a> {
    v: ImageView<'a>,
    /// Whether the CPU has PREFETCHW.
    has_w: bool,
}

impl<'a> Stepper<'a> {
    /// A stepper over `v`.
    pub fn new(v: ImageView<'a>) -> Self {
        Stepper {
            v,
            has_w: has_prefetchw(),
        }
    }

    /// Checks a record against iteration `s` and the image size.
    pub(crate) fn validate(
        &self,
        r: StepRecord,
        s: u32,
        party: usize,
    ) -> Result<ValidRecord, StepError> {
        let n = self.v.n;
        let ok = r.step == s
            && s < n
            && (s..n).contains(&r.j)
            && (s..COLOURS).contains(&r.k)
            && r.pos_s < n
            && r.pos_j < n
            && r.col_s < COLOURS
            && r.col_k < COLOURS;
        if ok {
            Ok(ValidRecord(r))
        } else {
            Err(StepError::BadJournal {
                party,
                step: s,
                record: r,
            })
        }
    }

    /// Computes the record of iteration `s` from the current state.
    #[inline]
    pub fn plan(&self, s: u32) -> Result<ValidRecord, StepError> {
        let v = &self.v;
        debug_assert!(s < v.n);
        let (j, k) = swap_targets(v.seed, s, v.n);
        // SAFETY: s <= j < n = positions.len() and s <= k < 2^24 =
        // colours.len(): `swap_targets` guarantees both ranges.
        let (a, b, c, d) = unsafe {
            (
                v.positions.get_unchecked(s),
                v.positions.get_unchecked(j),
                v.colours.get_unchecked(s),
                v.colours.get_unchecked(k),
            )
        };
        // Values come from shared memory: check before using as indices.
        // (Colours are 24-bit by construction.)
        for (index, value) in [(s, a), (j, b)] {
            if value >= v.n {
                return Err(StepError::BadPosition {
                    index,
                    value,
                    n: v.n,
                });
            }
        }
        Ok(ValidRecord(StepRecord {
            step: s,
            j,
            k,
            pos_s: b,
            pos_j: a,
            col_s: d,
            col_k: c,
            pad: 0,
        }))
    }

    /// Writes a record's values (idempotent).
    #[inline]
    pub fn apply(&self, r: &ValidRecord) {
        let r = &r.0;
        let v = &self.v;
        // SAFETY: a ValidRecord has step, j, pos_s, pos_j < n and k, col_s,
        // col_k < 2^24 (checked in `plan`/`validate`); the caller holds the
        // turn, so no other process writes these arrays.
        unsafe {
            v.positions.set_unchecked(r.step, r.pos_s);
            v.positions.set_unchecked(r.j, r.pos_j);
            v.colours.set_unchecked(r.step, r.col_s);
            v.colours.set_unchecked(r.k, r.col_k);
            v.pixels.set_unchecked(r.pos_s, r.col_s);
            v.posmask.set_unchecked(r.pos_s);
            v.colmask.set_unchecked(r.col_s);
        }
    }

    /// Runs the iteration `token` holds the turn for and commits it,
    /// handing the turn over.
    #[inline]
    pub fn step(&self, token: TurnToken) -> Result<(), StepError> {
        let s = token.seq();
        let r = self.plan(s)?;
        self.v.ctl.journals[token.party().index()].arm(s as u64, r.0);
        self.apply(&r);
        self.v.ctl.turn.pass(token);
        Ok(())
    }

    /// Redoes our own half-done iteration, if any (call once after
    /// attaching, before waiting for the turn).
    pub(crate) fn recover(&self, party: Party) -> Result<Recovery, StepError> {
        let Some(token) = self.v.ctl.turn.try_take(party, self.v.n) else {
            return Ok(Recovery::Clean);
        };
        let s = token.seq();
        let armed = self.v.ctl.journals[party.index()]
            .armed_for(s as u64)
            .map_err(|source| StepError::JournalChecksum {
                party: party.index(),
                source,
            })?;
        let Some(rec) = armed else {
            return Ok(Recovery::Clean);
        };
        let r = self.validate(rec, s, party.index())?;
        self.apply(&r);
        self.v.ctl.turn.pass(token);
        self.v.ctl.stats[party.index()].redone.add(1);
        Ok(Recovery::Redone(s))
    }

    /// Prefetch hint for the far end of the pipeline: the two random
    /// shuffle entries iteration `t` will read and swap. Issues no load.
    #[inline]
    pub(crate) fn prefetch_far(&self, t: u32) {
        let v = &self.v;
        if t >= v.n {
            return;
        }
        let (j, k) = swap_targets(v.seed, t, v.n);
        prefetch_write(v.positions.addr(j), self.has_w);
        prefetch_write(v.colours.addr(k), self.has_w);
    }

    /// Prefetch hint for the near end: reads the shuffle entries of
    /// iteration `t` (fetched earlier by `prefetch_far`) to learn which
    /// pixel and mask words it will write, and fetches those. The peer may
    /// still move these entries before `t` runs; any value is a valid hint
    /// (`addr` clamps), and `plan` re-reads and validates everything.
    #[inline]
    pub(crate) fn prefetch_near(&self, t: u32) {
        let v = &self.v;
        if t >= v.n {
            return;
        }
        let (j, k) = swap_targets(v.seed, t, v.n);
        let b = v.positions.peek(j);
        let d = v.colours.peek(k);
        prefetch(v.positions.addr(t));
        prefetch(v.colours.addr(t));
        prefetch_write(v.pixels.addr(b), self.has_w);
        prefetch_write(v.posmask.addr(b), self.has_w);
        prefetch_write(v.colmask.addr(d), self.has_w);
    }
}
