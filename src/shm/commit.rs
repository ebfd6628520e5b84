//! A crash-safe, double-buffered record: write the inactive copy, then flip
//! the generation. The generation store is the commit point.
//!
//! A writer killed at any instruction leaves either the old record (it died
//! before the flip) or the new one (after), never a mix, because the copy
//! being read is never the one being written.
//!
//! Each copy carries a checksum of itself and of the generation that selects
//! it, written with the copy, before the flip: the checksum is part of what
//! the flip commits, so a crash leaves it exactly as valid as the copy. A
//! reader recomputes it and refuses a copy that does not match
//! ([`ChecksumMismatch`]): a stray write into a committed record, or a
//! rewritten generation, is reported instead of used. The record of
//! generation 0 (a fresh, zero-filled segment) is the all-zero copy with the
//! checksum 0. This guards against accidents, not against a process that
//! recomputes the checksum (see docs/threat-model.md).

use bytemuck::{Pod, Zeroable};
use std::sync::atomic::{AtomicU64, Ordering, fence};

/// Layout tag of the checksummed records, for the fingerprints of the
/// segments that hold them: a build without checksums (or with another
/// function) refuses such a segment instead of misreading it.
pub(crate) const CHECKSUM_LAYOUT: &[u8] = b"committed:copy+sum(gen,words) mix64 v1";

/// A committed copy whose checksum does not match its content and
/// generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the committed record of generation {generation} fails its checksum (stored {stored:#018x}, computed {computed:#018x})"
)]
pub struct ChecksumMismatch {
    /// The generation that selects the copy.
    pub generation: u64,
    /// The checksum stored next to the copy.
    pub stored: u64,
    /// The checksum of the copy as read.
    pub computed: u64,
}

/// Incremental checksum over 64-bit words, keyed by a generation (or step):
/// a multiply-xorshift mix per word, strong enough that a random change of
/// any bits of the words or of the key goes unnoticed with probability about
/// 2^-64. Not a MAC.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sum(u64);

impl Sum {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    const M: u64 = 0xff51_afd7_ed55_8ccd;

    /// A checksum keyed by `key`.
    #[inline]
    pub(crate) fn new(key: u64) -> Self {
        Sum((key ^ Self::K).wrapping_mul(Self::M))
    }
    /// Adds a word.
    #[inline]
    pub(crate) fn word(&mut self, w: u64) {
        let h = (self.0 ^ w).wrapping_mul(Self::M);
        self.0 = h ^ (h >> 29);
    }
    /// Adds bytes (in 8-byte little-endian words, the last one zero-padded).
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(last));
        }
    }
    /// The checksum.
    #[inline]
    pub(crate) fn finish(self) -> u64 {
        let h = (self.0 ^ (self.0 >> 32)).wrapping_mul(Self::K);
        h ^ (h >> 31)
    }
}

/// Checks a copy read for `generation` whose checksum over its words is
/// `computed` (ignored for generation 0) and whose stored checksum is
/// `stored`. Generation 0 selects the never-written copy: valid only all
/// zero with a zero checksum (`all_zero`).
#[inline]
fn check(
    generation: u64,
    stored: u64,
    computed: impl FnOnce() -> u64,
    all_zero: impl FnOnce() -> bool,
) -> Result<(), ChecksumMismatch> {
    if generation == 0 {
        if stored == 0 && all_zero() {
            return Ok(());
        }
        return Err(ChecksumMismatch {
            generation,
            stored,
            computed: 0,
        });
    }
    let computed = computed();
    if computed == stored {
        Ok(())
    } else {
        Err(ChecksumMismatch {
            generation,
            stored,
            computed,
        })
    }
}

/// The checksum of a `Pod` value committed as `generation`.
fn sum_of<T: Pod>(generation: u64, v: &T) -> u64 {
    let mut s = Sum::new(generation);
    s.bytes(bytemuck::bytes_of(v));
    s.finish()
}

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
/// Invariant: `copies[generation % 2]` holds the committed record and
/// `sums[generation % 2]` its checksum; the other copy and checksum are
/// scratch space owned by the writer.
#[repr(C)]
pub struct Committed<T: Pod> {
    /// Number of commits so far. Generation 0 selects copy 0, which in a fresh
    /// (zero-filled) segment is `T::zeroed()` with checksum 0.
    generation: AtomicU64,
    copies: [VolatileCell<T>; 2],
    /// Checksum of each copy and of the generation it was written for.
    sums: [VolatileCell<u64>; 2],
}

impl<T: Pod> std::fmt::Debug for Committed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committed")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

// SAFETY: repr(C): an AtomicU64 and VolatileCells of Pod types; every bit
// pattern is valid and all-zero is the empty record.
unsafe impl<T: Pod> ShmSafe for Committed<T> {}

impl<T: Pod + Zeroable> Committed<T> {
    /// Copy `g % 2` and its stored checksum.
    #[inline]
    fn read_copy(&self, g: u64) -> (T, u64) {
        let i = (g & 1) as usize;
        (self.copies[i].read(), self.sums[i].read())
    }

    /// Checks a copy read for generation `g`.
    fn verify(g: u64, v: &T, stored: u64) -> Result<(), ChecksumMismatch> {
        check(
            g,
            stored,
            || sum_of(g, v),
            || bytemuck::bytes_of(v).iter().all(|&b| b == 0),
        )
    }

    /// The committed record and its generation, for the writer itself (after
    /// a restart) or anyone while the writer is known to be stopped; an
    /// error if the copy fails its checksum.
    pub fn load(&self) -> Result<(u64, T), ChecksumMismatch> {
        // SYNC POINT: acquire side of `flip`: the copy selected by the
        // generation, and its checksum, were completely written before the
        // generation was stored.
        let g = self.generation.load(Ordering::Acquire);
        let (v, stored) = self.read_copy(g);
        Self::verify(g, &v, stored)?;
        Ok((g, v))
    }

    /// A consistent snapshot while the writer may be running (seqlock read):
    /// retries while the writer overwrote the copy we read. `Ok(None)` if it
    /// gives up after a few tries (a writer committing faster than we can
    /// copy); an error if an intact copy fails its checksum.
    pub(crate) fn snapshot(&self) -> Result<Option<T>, ChecksumMismatch> {
        let mut v = None;
        if !seqlock_read(&self.generation, |g| v = Some((g, self.read_copy(g)))) {
            return Ok(None);
        }
        match v {
            Some((g, (v, stored))) => Self::verify(g, &v, stored).map(|()| Some(v)),
            None => Ok(None),
        }
    }

    /// Commits `value` as the new record. Single writer only.
    pub fn commit(&self, value: T) {
        flip(&self.generation, |next| {
            let i = (next & 1) as usize;
            self.copies[i].write(value);
            // The checksum belongs to the copy: written before the flip, like
            // the copy itself, so the flip commits both or neither.
            self.sums[i].write(sum_of(next, &value));
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
        assert_eq!(c.load(), Ok((0, Rec { a: 0, b: 0 })));
        c.commit(Rec { a: 1, b: 2 });
        assert_eq!(c.load(), Ok((1, Rec { a: 1, b: 2 })));
        c.commit(Rec { a: 3, b: 4 });
        assert_eq!(c.load(), Ok((2, Rec { a: 3, b: 4 })));
        assert_eq!(c.snapshot(), Ok(Some(Rec { a: 3, b: 4 })));
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
            if let Some(r) = c.snapshot().expect("no corruption") {
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
        c.sums[0].write(0x1234);
        assert_eq!(c.load(), Ok((1, Rec { a: 1, b: 1 })));
    }

    #[test]
    fn corruption_is_refused() {
        let c = fresh();
        c.commit(Rec { a: 1, b: 1 });
        c.commit(Rec { a: 2, b: 2 });
        // A stray write into the committed copy.
        c.copies[0].write(Rec { a: 2, b: 3 });
        let e = c.load().unwrap_err();
        assert_eq!(e.generation, 2);
        assert!(c.snapshot().is_err());
        c.copies[0].write(Rec { a: 2, b: 2 });
        assert!(c.load().is_ok());
        // A rewritten generation selects a copy whose checksum was made for
        // another generation.
        c.generation.store(4, Ordering::Relaxed);
        assert!(c.load().is_err());
        // Generation 0 selects the never-written copy: only all zero is valid.
        c.generation.store(0, Ordering::Relaxed);
        assert!(c.load().is_err());
        let z = fresh();
        z.copies[0].write(Rec { a: 0, b: 7 });
        assert!(z.load().is_err());
        let z = fresh();
        z.sums[0].write(1);
        assert!(z.load().is_err());
    }
}

/// A crash-safe, double-buffered record of `len` bytes whose size is known
/// only at run time (it depends on a job's parameters). Same protocol as
/// [`Committed`]: write the scratch copy and its checksum, then flip the
/// generation.
///
/// Layout inside its region: the generation (8 bytes), the checksum of copy
/// 0 (8), the checksum of copy 1 (8), 40 bytes of padding, copy 0 (`len`
/// bytes), copy 1 (`len` bytes); `len` is a multiple of 8.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommittedBytes<'a> {
    generation: &'a AtomicU64,
    /// Invariant: 2 words from here lie in the mapping, 8-aligned (the
    /// checksums of copy 0 and copy 1).
    sums: std::ptr::NonNull<u64>,
    /// Invariant: `2 * len` bytes from here lie in the mapping, 8-aligned.
    copies: std::ptr::NonNull<u64>,
    /// Record length in bytes; a multiple of 8.
    len: usize,
}

// SAFETY: the copies and checksums are only accessed by volatile word copies
// (see below); the generation is an atomic.
unsafe impl Send for CommittedBytes<'_> {}
// SAFETY: as above.
unsafe impl Sync for CommittedBytes<'_> {}

impl<'a> CommittedBytes<'a> {
    /// Offset of copy 0 from the start of the region.
    pub(crate) const COPIES_OFFSET: usize = 64;
    /// Offset of the checksum of copy 0 (copy 1's follows it).
    const SUMS_OFFSET: usize = 8;

    /// Bytes a record of `len` bytes needs (generation, checksums, padding,
    /// 2 copies).
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
        let at = |offset: usize| {
            std::ptr::NonNull::new(base.as_ptr().wrapping_add(offset).cast::<u64>())
        };
        Some(CommittedBytes {
            generation,
            sums: at(Self::SUMS_OFFSET)?,
            copies: at(Self::COPIES_OFFSET)?,
            len,
        })
    }

    fn copy_ptr(&self, which: u64) -> *mut u64 {
        self.copies
            .as_ptr()
            .wrapping_add((which & 1) as usize * self.len / 8)
    }

    fn sum_ptr(&self, which: u64) -> *mut u64 {
        self.sums.as_ptr().wrapping_add((which & 1) as usize)
    }

    /// Copies copy `which` into `out`; returns its stored checksum and the
    /// checksum of what was read, keyed by `which` as the generation.
    fn read_copy(&self, which: u64, out: &mut [u64]) -> (u64, u64) {
        let src = self.copy_ptr(which);
        let mut sum = Sum::new(which);
        for (i, w) in out.iter_mut().enumerate() {
            // SAFETY: i < len/8, so the word is inside this copy (type
            // invariant); a volatile read of a plain u64 from shared memory
            // yields some u64 even if a writer races with us.
            *w = unsafe { src.add(i).read_volatile() };
            sum.word(*w);
        }
        // SAFETY: the checksum word of copy `which` is inside the region and
        // 8-aligned (type invariant); any u64 is a valid value.
        let stored = unsafe { self.sum_ptr(which).read_volatile() };
        (stored, sum.finish())
    }

    fn verify(g: u64, out: &[u64], stored: u64, computed: u64) -> Result<(), ChecksumMismatch> {
        check(g, stored, || computed, || out.iter().all(|&w| w == 0))
    }

    /// The committed record (for its writer, or while the writer is
    /// stopped) and its generation; an error if it fails its checksum.
    /// `out` must hold `len / 8` words.
    pub(crate) fn load(&self, out: &mut [u64]) -> Result<u64, ChecksumMismatch> {
        assert_eq!(out.len() * 8, self.len);
        // SYNC POINT: acquire side of `flip`: the copy selected by the
        // generation, and its checksum, were written before it was stored.
        let g = self.generation.load(Ordering::Acquire);
        let (stored, computed) = self.read_copy(g, out);
        Self::verify(g, out, stored, computed)?;
        Ok(g)
    }

    /// A consistent snapshot while the writer may be running (seqlock
    /// read); `Ok(false)` if the writer kept overtaking us, an error if an
    /// intact copy fails its checksum.
    pub(crate) fn snapshot(&self, out: &mut [u64]) -> Result<bool, ChecksumMismatch> {
        assert_eq!(out.len() * 8, self.len);
        let mut read = (0, 0, 0);
        if !seqlock_read(self.generation, |g| {
            let (stored, computed) = self.read_copy(g, out);
            read = (g, stored, computed);
        }) {
            return Ok(false);
        }
        let (g, stored, computed) = read;
        Self::verify(g, out, stored, computed).map(|()| true)
    }

    /// Commits `value` (`len / 8` words). Single writer only.
    pub(crate) fn commit(&self, value: &[u64]) {
        assert_eq!(value.len() * 8, self.len);
        flip(self.generation, |next| {
            let dst = self.copy_ptr(next);
            let mut sum = Sum::new(next);
            for (i, w) in value.iter().enumerate() {
                // SAFETY: i < len/8, inside the scratch copy, which no reader
                // selects until `flip` stores the generation.
                unsafe { dst.add(i).write_volatile(*w) };
                sum.word(*w);
            }
            // The checksum belongs to the copy: written before the flip.
            // SAFETY: the scratch copy's checksum word, inside the region and
            // 8-aligned (type invariant); no reader uses it until the flip.
            unsafe { self.sum_ptr(next).write_volatile(sum.finish()) };
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
        assert_eq!(c.load(&mut out), Ok(0));
        assert_eq!(out, [0, 0, 0]);
        c.commit(&[1, 2, 3]);
        c.commit(&[4, 5, 6]);
        assert_eq!(c.load(&mut out), Ok(2));
        assert_eq!(out, [4, 5, 6]);
        assert_eq!(c.snapshot(&mut out), Ok(true));
        assert_eq!(out, [4, 5, 6]);
        assert!(CommittedBytes::new(region, 20).is_none());
        // A stray write into the committed copy (copy 0, generation 2).
        // SAFETY: word 1 of copy 0 lies inside the test buffer.
        unsafe { c.copy_ptr(0).add(1).write_volatile(7) };
        assert_eq!(c.load(&mut out).unwrap_err().generation, 2);
        assert!(c.snapshot(&mut out).is_err());
        // SAFETY: as above.
        unsafe { c.copy_ptr(0).add(1).write_volatile(5) };
        assert_eq!(c.load(&mut out), Ok(2));
        // A rewritten generation.
        c.generation.store(3, Ordering::Relaxed);
        assert!(c.load(&mut out).is_err());
        c.generation.store(0, Ordering::Relaxed);
        assert!(c.load(&mut out).is_err());
    }
}
