//! A crash-safe, double-buffered record: write the inactive copy, then flip
//! the generation. The generation store is the commit point.
//!
//! A writer killed at any instruction leaves either the old record (it died
//! before the flip) or the new one (after), never a mix, because the copy
//! being read is never the one being written.

use bytemuck::{Pod, Zeroable};
use std::sync::atomic::{AtomicU64, Ordering, fence};

/// The commit both record types share: `write(next)` fills the scratch copy
/// of generation `next`, then the store of `next` commits it.
#[inline]
fn flip(generation: &AtomicU64, write: impl FnOnce(u64)) {
    let next = generation.load(Ordering::Relaxed).wrapping_add(1);
    // The scratch copy is the one a reader selected two commits ago: order
    // our previous generation store before these writes, so a reader that
    // sees any of them also sees the generation move.
    fence(Ordering::Release);
    write(next);
    // SYNC POINT: release of the copy just written; acquired by `load` and
    // by `seqlock_read`. This store is the commit point.
    generation.store(next, Ordering::Release);
}

/// The seqlock read both record types share: `read(g)` copies the copy of
/// generation `g` out; the read is accepted once the generation did not move
/// meanwhile. Gives up after a few tries (a writer committing faster than we
/// can copy) with `false`.
#[inline]
fn seqlock_read(generation: &AtomicU64, mut read: impl FnMut(u64)) -> bool {
    for _ in 0..64 {
        // SYNC POINT: acquire side of `flip`: the copy selected by the
        // generation was completely written before the generation was stored.
        let g = generation.load(Ordering::Acquire);
        read(g);
        // Order the copy before the re-check (seqlock reader fence).
        fence(Ordering::Acquire);
        // The copy we read is rewritten by the next commit but one, which
        // starts only after the next commit stored g + 1 (see `flip`): an
        // unchanged generation proves the copy intact.
        if generation.load(Ordering::Relaxed) == g {
            return true;
        }
        std::hint::spin_loop();
    }
    false
}

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
        // SYNC POINT: acquire side of `flip`: the copy selected by the
        // generation was completely written before the generation was
        // stored.
        let g = self.generation.load(Ordering::Acquire);
        (g, self.copies[(g & 1) as usize].read())
    }

    /// A consistent snapshot while the writer may be running (seqlock read):
    /// retries while the writer overwrote the copy we read. Gives up after a
    /// few tries (a writer committing faster than we can copy) with `None`.
    pub(crate) fn snapshot(&self) -> Option<T> {
        let mut v = None;
        seqlock_read(&self.generation, |g| {
            v = Some(self.copies[(g & 1) as usize].read())
        })
        .then_some(v)
        .flatten()
    }

    /// Commits `value` as the new record. Single writer only.
    pub fn commit(&self, value: T) {
        flip(&self.generation, |next| {
            self.copies[(next & 1) as usize].write(value)
        });
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
    fn snapshots_are_never_torn() {
        // Writer commits records with a == b; a reader must never see a
        // mix of two records.
        // The writer keeps committing until the reader has checked enough
        // snapshots taken while it runs (on a loaded machine the reader may
        // start late), or for at most 30 s.
        use std::sync::atomic::AtomicBool;
        let c: std::sync::Arc<Committed<Rec>> = std::sync::Arc::from(fresh());
        let enough = std::sync::Arc::new(AtomicBool::new(false));
        let (w, done) = (c.clone(), enough.clone());
        let writer = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) && start.elapsed().as_secs() < 30 {
                for _ in 0..1000 {
                    i += 1;
                    w.commit(Rec { a: i, b: i });
                }
            }
            i
        });
        let mut seen = 0u64;
        while !writer.is_finished() && seen < 10_000 {
            if let Some(r) = c.snapshot() {
                assert_eq!(r.a, r.b, "torn snapshot");
                seen += 1;
            }
        }
        enough.store(true, Ordering::Relaxed);
        let commits = writer.join().unwrap();
        assert!(seen > 0, "no snapshot in {commits} commits");
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

/// A crash-safe, double-buffered record of `len` bytes whose size is known
/// only at run time (it depends on a job's parameters). Same protocol as
/// [`Committed`]: write the scratch copy, then flip the generation.
///
/// Layout inside its region: the generation (8 bytes), 56 bytes of padding,
/// copy 0 (`len` bytes), copy 1 (`len` bytes); `len` is a multiple of 8.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommittedBytes<'a> {
    generation: &'a AtomicU64,
    /// Invariant: `2 * len` bytes from here lie in the mapping, 8-aligned.
    copies: std::ptr::NonNull<u64>,
    /// Record length in bytes; a multiple of 8.
    len: usize,
}

// SAFETY: the copies are only accessed by volatile word copies (see below);
// the generation is an atomic.
unsafe impl Send for CommittedBytes<'_> {}
// SAFETY: as above.
unsafe impl Sync for CommittedBytes<'_> {}

impl<'a> CommittedBytes<'a> {
    /// Offset of copy 0 from the start of the region.
    pub(crate) const COPIES_OFFSET: usize = 64;

    /// Bytes a record of `len` bytes needs (generation, padding, 2 copies).
    pub(crate) const fn region_bytes(len: usize) -> usize {
        Self::COPIES_OFFSET + 2 * len
    }

    /// Views a record of `len` bytes in `region`; `None` if `len` is not a
    /// multiple of 8 or the region is too small or misaligned.
    pub(crate) fn new(region: super::segment::Region<'a>, len: usize) -> Option<Self> {
        let base = region.ptr();
        if len % 8 != 0
            || region.len() < Self::region_bytes(len)
            || base.as_ptr() as usize % 64 != 0
        {
            return None;
        }
        // SAFETY: the region is at least 64 bytes and 64-aligned, so an
        // AtomicU64 fits at its start; atomics are valid for every bit
        // pattern and may be shared with other processes. The reference
        // lives as long as the region borrows its segment ('a).
        let generation = unsafe { base.cast::<AtomicU64>().as_ref() };
        let copies = base
            .as_ptr()
            .wrapping_add(Self::COPIES_OFFSET)
            .cast::<u64>();
        Some(CommittedBytes {
            generation,
            copies: std::ptr::NonNull::new(copies)?,
            len,
        })
    }

    fn copy_ptr(&self, which: u64) -> *mut u64 {
        self.copies
            .as_ptr()
            .wrapping_add((which & 1) as usize * self.len / 8)
    }

    fn read_copy(&self, which: u64, out: &mut [u64]) {
        let src = self.copy_ptr(which);
        for (i, w) in out.iter_mut().enumerate() {
            // SAFETY: i < len/8, so the word is inside this copy (type
            // invariant); a volatile read of a plain u64 from shared memory
            // yields some u64 even if a writer races with us.
            *w = unsafe { src.add(i).read_volatile() };
        }
    }

    /// The committed record (for its writer, or while the writer is
    /// stopped). `out` must hold `len / 8` words.
    pub(crate) fn load(&self, out: &mut [u64]) -> u64 {
        assert_eq!(out.len() * 8, self.len);
        // SYNC POINT: acquire side of `flip`.
        let g = self.generation.load(Ordering::Acquire);
        self.read_copy(g, out);
        g
    }

    /// A consistent snapshot while the writer may be running (seqlock
    /// read); `false` if the writer kept overtaking us.
    pub(crate) fn snapshot(&self, out: &mut [u64]) -> bool {
        assert_eq!(out.len() * 8, self.len);
        seqlock_read(self.generation, |g| self.read_copy(g, out))
    }

    /// Commits `value` (`len / 8` words). Single writer only.
    pub(crate) fn commit(&self, value: &[u64]) {
        assert_eq!(value.len() * 8, self.len);
        flip(self.generation, |next| {
            let dst = self.copy_ptr(next);
            for (i, w) in value.iter().enumerate() {
                // SAFETY: i < len/8, inside the scratch copy, which no reader
                // selects until `flip` stores the generation.
                unsafe { dst.add(i).write_volatile(*w) };
            }
        });
    }
}

#[cfg(test)]
mod bytes_tests {
    use super::*;
    use crate::shm::segment::Region;

    #[test]
    fn commit_and_load_words() {
        // 64-byte alignment for the test buffer.
        let mut aligned = vec![0u8; 64 * 4];
        let off = aligned.as_ptr().align_offset(64);
        let region = Region::from_raw_for_tests(aligned[off..].as_mut_ptr(), 64 + 48);
        let c = CommittedBytes::new(region, 24).unwrap();
        let mut out = [0u64; 3];
        assert_eq!(c.load(&mut out), 0);
        assert_eq!(out, [0, 0, 0]);
        c.commit(&[1, 2, 3]);
        c.commit(&[4, 5, 6]);
        assert_eq!(c.load(&mut out), 2);
        assert_eq!(out, [4, 5, 6]);
        assert!(c.snapshot(&mut out));
        assert_eq!(out, [4, 5, 6]);
        assert!(CommittedBytes::new(region, 20).is_none());
    }
}
