//! A one-record redo journal for multi-word updates whose commit point is
//! elsewhere (the image job commits by passing its [`Turn`](super::Turn)).
//!
//! Protocol for step `s`:
//! 1. `arm(s, rec)`: write the record (the *new* values the step will store,
//!    so re-applying it is idempotent), then publish `armed = s + 1`.
//! 2. apply the record to the data;
//! 3. commit by publishing the step counter `s + 1` (outside this type).
//!
//! Recovery after a crash: if the committed counter is `s` and
//! `armed_for() == Some(s)`, the step may be partly applied: re-apply the
//! record, then commit. If the journal is not armed for `s`, the step had not
//! started changing data and is simply run again.
//!
//! The record carries a checksum of itself and of the `armed` value it is
//! written for, stored with the record before `armed` is published: a stray
//! write into the record, or an `armed` word rewritten to point at a stale
//! record, is reported ([`ChecksumMismatch`]) instead of re-applied.

use bytemuck::Pod;
use std::sync::atomic::{AtomicU64, Ordering, compiler_fence};

use super::cell::{ShmSafe, VolatileCell};
use super::commit::{ChecksumMismatch, Sum};

/// The checksum of `rec` armed as `armed`.
fn sum_of<T: Pod>(armed: u64, rec: &T) -> u64 {
    let mut s = Sum::new(armed);
    s.bytes(bytemuck::bytes_of(rec));
    s.finish()
}

/// A redo journal holding one record of type `T`.
#[repr(C)]
pub struct Journal<T: Pod> {
    /// `s + 1` once the record for step `s` is complete; 0 when never armed.
    armed: AtomicU64,
    record: VolatileCell<T>,
    /// Checksum of `record` and of the `armed` value it was written for.
    sum: VolatileCell<u64>,
}

impl<T: Pod> std::fmt::Debug for Journal<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("armed", &self.armed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

// SAFETY: repr(C): an AtomicU64 and a VolatileCell of a Pod type.
unsafe impl<T: Pod> ShmSafe for Journal<T> {}

impl<T: Pod> Journal<T> {
    /// Records `rec` as the redo record of step `step`. Returns once the
    /// record is armed and ordered before any store the caller makes next.
    #[inline]
    pub fn arm(&self, step: u64, rec: T) {
        let armed = step.wrapping_add(1);
        self.record.write(rec);
        self.sum.write(sum_of(armed, &rec));
        // SYNC POINT: release of the record and its checksum; acquired by
        // `armed_for` (in the restarted process that recovers).
        self.armed.store(armed, Ordering::Release);
        // Ordering against a kill, not against another thread: the data
        // stores the caller makes next must not come before the `armed`
        // store in the instruction stream, or a SIGKILL between them would
        // leave changed data with no armed record. A killed process's
        // executed stores are never lost (on any CPU they drain from the
        // store buffer), so only the order the compiler emits matters; a
        // compiler fence is the documented tool for ordering against an
        // asynchronous interruption and costs no instruction. Visibility to
        // the restarted process comes from its parent's waitpid and fork.
        compiler_fence(Ordering::SeqCst);
    }

    /// The armed record if the journal is armed for step `step`; an error
    /// if it is armed for `step` but the record fails its checksum.
    pub(crate) fn armed_for(&self, step: u64) -> Result<Option<T>, ChecksumMismatch> {
        // SYNC POINT: acquire side of `arm`: the record and its checksum
        // were written before `armed`.
        let a = self.armed.load(Ordering::Acquire);
        if a != step.wrapping_add(1) {
            return Ok(None);
        }
        let rec = self.record.read();
        let (stored, computed) = (self.sum.read(), sum_of(a, &rec));
        if stored != computed {
            return Err(ChecksumMismatch {
                generation: a,
                stored,
                computed,
            });
        }
        Ok(Some(rec))
    }

    #[cfg(test)]
    /// The step the journal was last armed for, if any (for diagnostics).
    pub(crate) fn last_armed(&self) -> Option<u64> {
        let a = self.armed.load(Ordering::Relaxed);
        a.checked_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_and_query() {
        // SAFETY: Journal<[u64; 2]> is valid for all-zero bytes.
        let j: Box<Journal<[u64; 2]>> = unsafe { Box::new_zeroed().assume_init() };
        assert_eq!(j.armed_for(0), Ok(None));
        assert_eq!(j.last_armed(), None);
        j.arm(0, [1, 2]);
        assert_eq!(j.armed_for(0), Ok(Some([1, 2])));
        assert_eq!(j.armed_for(1), Ok(None));
        j.arm(7, [3, 4]);
        assert_eq!(j.armed_for(7), Ok(Some([3, 4])));
        assert_eq!(j.last_armed(), Some(7));
        // A stray write into the record.
        j.record.write([3, 5]);
        assert!(j.armed_for(7).is_err());
        j.record.write([3, 4]);
        assert_eq!(j.armed_for(7), Ok(Some([3, 4])));
        // `armed` rewritten to another step: the record was not written for
        // it.
        j.armed.store(9, Ordering::Relaxed);
        assert!(j.armed_for(8).is_err());
        assert_eq!(j.armed_for(7), Ok(None));
    }
}
