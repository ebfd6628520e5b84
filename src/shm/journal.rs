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

use bytemuck::Pod;
use std::sync::atomic::{AtomicU64, Ordering, compiler_fence};

use super::cell::{ShmSafe, VolatileCell};

/// A redo journal holding one record of type `T`.
#[repr(C)]
pub struct Journal<T: Pod> {
    /// `s + 1` once the record for step `s` is complete; 0 when never armed.
    armed: AtomicU64,
    record: VolatileCell<T>,
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
        self.record.write(rec);
        // SYNC POINT: release of the record; acquired by `armed_for` (in the
        // restarted process that recovers).
        self.armed.store(step.wrapping_add(1), Ordering::Release);
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

    /// The armed record if the journal is armed for step `step`.
    pub(crate) fn armed_for(&self, step: u64) -> Option<T> {
        // SYNC POINT: acquire side of `arm`.
        let a = self.armed.load(Ordering::Acquire);
        (a == step.wrapping_add(1)).then(|| self.record.read())
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
        assert_eq!(j.armed_for(0), None);
        assert_eq!(j.last_armed(), None);
        j.arm(0, [1, 2]);
        assert_eq!(j.armed_for(0), Some([1, 2]));
        assert_eq!(j.armed_for(1), None);
        j.arm(7, [3, 4]);
        assert_eq!(j.armed_for(7), Some([3, 4]));
        assert_eq!(j.last_armed(), Some(7));
    }
}
