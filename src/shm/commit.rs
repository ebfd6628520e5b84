//! A crash-safe, double-buffered record: write the inactive copy, then flip
//! the generation. The generation store is the commit point.
//!
//! A writer killed at any instruction leaves either the old record (it died
//! before the flip) or the new one (after), never a mix, because the copy
//! being read is never the one being written.

use bytemuck::{Pod, Zeroable};
use std::sync::atomic::{AtomicU64, Ordering};

use super::cell::{ShmSafe, VolatileCell};

/// A committed record of type `T` with a single writer.
///
/// Invariant: `copies[generation % 2]` holds the committed record;
/// the other copy is scratch space owned by the writer.
#[repr(C)]
pub struct Committed<T: Pod> {
    /// Number of commits so far. Generation 0 selects copy 0, which in a fresh
    /// (zero-filled) segment is `T::zeroed()`.
    generation: AtomicU64,
    copies: [VolatileCell<T>; 2],
}

impl<T: Pod> std::fmt::Debug for Committed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committed")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

// SAFETY: repr(C): an AtomicU64 and VolatileCells of a Pod type; every bit
// pattern is valid and all-zero is the empty record.
unsafe impl<T: Pod> ShmSafe for Committed<T> {}

impl<T: Pod + Zeroable> Committed<T> {
    /// The committed record and its generation, for the writer itself (after
    /// a restart) or anyone while the writer is known to be stopped.
    pub fn load(&self) -> (u64, T) {
        // SYNC POINT: acquire side of `commit`: the copy selected by the
        // generation was completely written before the generation was
        // stored.
        let g = self.generation.load(Ordering::Acquire);
        (g, self.copies[(g & 1) as usize].read())
    }

    /// A consistent snapshot while the writer may be running (seqlock read):
    /// retries while the writer overwrote the copy we read. Gives up after a
    /// few tries (a writer committing faster than we can copy) with `None`.
    pub fn snapshot(&self) -> Option<T> {
        for _ in 0..64 {
            // SYNC POINT: acquire side of `commit`, as in `load`.
            let g = self.generation.load(Ordering::Acquire);
            let v = self.copies[(g & 1) as usize].read();
            // Order the copy before the re-check (seqlock reader fence).
            std::sync::atomic::fence(Ordering::Acquire);
            let g2 = self.generation.load(Ordering::Relaxed);
            // The copy we read is only rewritten by the commit after next.
            if g2.wrapping_sub(g) < 2 {
                return Some(v);
            }
            std::hint::spin_loop();
        }
        None
    }

    /// Commits `value` as the new record. Single writer only.
    pub fn commit(&self, value: T) {
        let g = self.generation.load(Ordering::Relaxed);
        self.copies[((g + 1) & 1) as usize].write(value);
        // SYNC POINT: release of the copy just written; acquired by `load`
        // and `snapshot`. This store is the commit point.
        self.generation.store(g.wrapping_add(1), Ordering::Release);
    }

    /// Number of commits so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Pod, Zeroable, Debug, PartialEq)]
    #[repr(C)]
    struct Rec {
        a: u64,
        b: u64,
    }

    fn fresh() -> Box<Committed<Rec>> {
        // SAFETY: Committed<Rec> is valid for all-zero bytes (ShmSafe).
        unsafe { Box::new_zeroed().assume_init() }
    }

    #[test]
    fn starts_zeroed_and_commits() {
        let c = fresh();
        assert_eq!(c.load(), (0, Rec { a: 0, b: 0 }));
        c.commit(Rec { a: 1, b: 2 });
        assert_eq!(c.load(), (1, Rec { a: 1, b: 2 }));
        c.commit(Rec { a: 3, b: 4 });
        assert_eq!(c.load(), (2, Rec { a: 3, b: 4 }));
        assert_eq!(c.snapshot(), Some(Rec { a: 3, b: 4 }));
    }

    #[test]
    fn interrupted_commit_leaves_old_record() {
        let c = fresh();
        c.commit(Rec { a: 1, b: 1 });
        // A writer that dies after writing the scratch copy but before the
        // flip: simulate by writing the scratch copy directly.
        c.copies[0].write(Rec { a: 9, b: 9 });
        assert_eq!(c.load(), (1, Rec { a: 1, b: 1 }));
    }
}
