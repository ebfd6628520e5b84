//! Typed access to the image job's bulk data in shared memory.
//!
//! All of it is written by one role at a time (whoever holds the turn), so
//! plain loads and stores suffice; visibility to the other role comes from
//! the turn's Release/Acquire. Indices are validated by the caller (see
//! `step.rs`): the `unsafe` accessors take an index the caller has checked,
//! and `debug_assert!` it.
//!
//! The shuffle arrays are packed 24-bit entries stored XOR their own index,
//! so that a zero-filled segment already holds the identity permutation and
//! creation needs no initialisation pass. Even logical indices live in the
//! first half of the array and odd ones in the second: iteration `s` writes
//! entry `s`, ping does the even iterations and pong the odd ones, so each
//! role's sequential entries stay in its own cache instead of bouncing
//! between the two cores every iteration.

use std::marker::PhantomData;
use std::ptr::NonNull;

pub(crate) use crate::shm::hint::{has_prefetchw, prefetch, prefetch_write};
use crate::shm::segment::Region;

/// Bytes per packed entry.
pub(crate) const ENTRY: usize = 3;
/// Slack after a packed array so that an unaligned 4-byte read of the last
/// entry stays inside the segment.
pub(crate) const PACKED_SLACK: usize = 8;

/// Bytes a packed array of `len` entries occupies, slack included.
pub(crate) const fn packed_bytes(len: usize) -> usize {
    len * ENTRY + PACKED_SLACK
}

/// A permutation of `0..len` (or a prefix being shuffled), packed as 24-bit
/// little-endian entries stored XOR their logical index, even indices in the
/// first half and odd ones in the second.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packed24<'a> {
    /// Invariant: `packed_bytes(len)` bytes from `ptr` are mapped.
    ptr: NonNull<u8>,
    /// Invariant: `len <= 2^24`.
    len: u32,
    /// Number of even indices, `ceil(len / 2)`: where the odd half starts.
    half: u32,
    _m: PhantomData<&'a ()>,
}

// SAFETY: points into a shared mapping; access is governed by the turn.
unsafe impl Send for Packed24<'_> {}
// SAFETY: as above.
unsafe impl Sync for Packed24<'_> {}

impl<'a> Packed24<'a> {
    /// Views `len` entries at the start of `region`, or `None` if the region
    /// is too small or `len > 2^24`.
    pub(crate) fn new(region: Region<'a>, len: u32) -> Option<Self> {
        (len <= 1 << 24 && region.len() >= packed_bytes(len as usize)).then_some(Packed24 {
            ptr: region.ptr(),
            len,
            half: len.div_ceil(2),
            _m: PhantomData,
        })
    }

    /// Physical slot of logical index `i`: a bijection of `0..len`.
    #[inline]
    fn slot(&self, i: u32) -> usize {
        debug_assert!(i < self.len);
        ((i & 1) * self.half + (i >> 1)) as usize
    }

    /// Entry `i`.
    ///
    /// # Safety
    /// `i < self.len()`.
    #[inline]
    pub(crate) unsafe fn get_unchecked(&self, i: u32) -> u32 {
        debug_assert!(i < self.len);
        let p = self.ptr.as_ptr().wrapping_add(self.slot(i) * ENTRY);
        // SAFETY: i < len, so slot(i) < len and bytes 3*slot..3*slot+4 are
        // inside packed_bytes(len) (the slack covers the 4th byte of the
        // last entry). An unaligned read of a u32 is fine for an integer.
        let raw = unsafe { p.cast::<u32>().read_unaligned() };
        (u32::from_le(raw) ^ i) & 0xff_ffff
    }

    /// Sets entry `i` to `v` (only the low 24 bits are kept).
    ///
    /// # Safety
    /// `i < self.len()`, and the caller holds the turn (no other writer).
    #[inline]
    pub(crate) unsafe fn set_unchecked(&self, i: u32, v: u32) {
        debug_assert!(i < self.len);
        let b = ((v ^ i) & 0xff_ffff).to_le_bytes();
        let p = self.ptr.as_ptr().wrapping_add(self.slot(i) * ENTRY);
        // SAFETY: i < len, so slot(i) < len and its three bytes are in
        // bounds; exactly three bytes are written, leaving the neighbouring
        // entries alone.
        unsafe { p.copy_from_nonoverlapping(b.as_ptr(), ENTRY) };
    }

    /// Entry `i` read while the other role may be writing the array (a
    /// prefetch hint): a volatile read, so any value may come back but
    /// nothing is assumed about it. `i` is clamped into range.
    #[inline]
    pub(crate) fn peek(&self, i: u32) -> u32 {
        if self.len == 0 {
            return 0;
        }
        let i = i.min(self.len - 1);
        let p = self.ptr.as_ptr().wrapping_add(self.slot(i) * ENTRY);
        // SAFETY: slot(i) < len, so four bytes from p lie inside
        // packed_bytes(len); a volatile unaligned read of plain bytes.
        let raw = unsafe { p.cast::<[u8; 4]>().read_volatile() };
        (u32::from_le_bytes(raw) ^ i) & 0xff_ffff
    }

    /// Logical index of physical slot `slot` (`< len`): the inverse of
    /// `slot`.
    #[inline]
    fn index(&self, slot: u32) -> u32 {
        if slot < self.half {
            2 * slot
        } else {
            2 * (slot - self.half) + 1
        }
    }

    /// Calls `f(i, value)` for every entry whose value is not its own index
    /// `i` (in storage order) until `f` returns `false`. Every other entry
    /// holds its index: stored XOR the index, it is zero bytes, so whole
    /// zero words are skipped and a barely shuffled array is read at memory
    /// speed. For the handoff's audit, once the roles stopped.
    pub(crate) fn for_each_moved(&self, mut f: impl FnMut(u32, u32) -> bool) {
        let len = self.len as usize;
        let bytes = len * ENTRY;
        let base = self.ptr.as_ptr();
        // Slots below this one are done.
        let mut next = 0usize;
        let mut at = 0usize;
        while at < bytes {
            // SAFETY: at < len * 3, and packed_bytes(len) = len * 3 + 8
            // bytes from ptr are mapped (type invariant): the 8 bytes from
            // `at` are inside. An unaligned read of plain bytes.
            let word = unsafe { base.add(at).cast::<u64>().read_unaligned() };
            if word != 0 {
                let last = ((at + 7) / ENTRY).min(len - 1);
                for slot in (at / ENTRY).max(next)..=last {
                    // SAFETY: slot < len: its 3 bytes and one more (slack
                    // for the last) are inside packed_bytes(len).
                    let raw = unsafe { base.add(slot * ENTRY).cast::<[u8; 4]>().read_unaligned() };
                    let raw = u32::from_le_bytes(raw) & 0xff_ffff;
                    if raw != 0 {
                        let i = self.index(slot as u32);
                        if !f(i, raw ^ i) {
                            return;
                        }
                    }
                }
                next = last + 1;
            }
            at += 8;
        }
    }

    /// Entry `i`, or `None` if `i` is out of range.
    pub(crate) fn get(&self, i: u32) -> Option<u32> {
        // SAFETY: checked just before.
        (i < self.len).then(|| unsafe { self.get_unchecked(i) })
    }

    /// Address of entry `i` for a prefetch hint (any `i` is fine).
    #[inline]
    pub(crate) fn addr(&self, i: u32) -> *const u8 {
        if self.len == 0 {
            return self.ptr.as_ptr();
        }
        self.ptr
            .as_ptr()
            .wrapping_add(self.slot(i.min(self.len - 1)) * ENTRY)
    }
}

/// A bitmask of `len` bits, stored in u64 words.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BitMask<'a> {
    /// Invariant: `words(len) * 8` bytes from `ptr` are mapped, 8-aligned.
    ptr: NonNull<u64>,
    len: u32,
    _m: PhantomData<&'a ()>,
}

// SAFETY: as for Packed24.
unsafe impl Send for BitMask<'_> {}
// SAFETY: as for Packed24.
unsafe impl Sync for BitMask<'_> {}

/// Bytes of a bitmask of `len` bits.
pub(crate) const fn mask_bytes(len: usize) -> usize {
    len.div_ceil(64) * 8
}

impl<'a> BitMask<'a> {
    /// Views a mask of `len` bits at the start of `region`.
    pub(crate) fn new(region: Region<'a>, len: u32) -> Option<Self> {
        let ok =
            region.len() >= mask_bytes(len as usize) && (region.ptr().as_ptr() as usize) % 8 == 0;
        ok.then_some(BitMask {
            ptr: region.ptr().cast(),
            len,
            _m: PhantomData,
        })
    }

    /// Sets bit `i`.
    ///
    /// # Safety
    /// `i < len`, and the caller holds the turn.
    #[inline]
    pub(crate) unsafe fn set_unchecked(&self, i: u32) {
        debug_assert!(i < self.len);
        let w = self.ptr.as_ptr().wrapping_add((i / 64) as usize);
        // SAFETY: i < len, so word i/64 is inside mask_bytes(len), aligned.
        let old = unsafe { w.read() };
        // SAFETY: as above; the caller holds the turn, so nobody else writes.
        unsafe { w.write(old | 1u64 << (i % 64)) };
    }

    /// Bit `i`, or `None` if out of range.
    #[cfg(test)]
    fn get(&self, i: u32) -> Option<bool> {
        (i < self.len).then(|| {
            let p = self.ptr.as_ptr().wrapping_add((i / 64) as usize);
            // SAFETY: i < len, so the word is in bounds and aligned.
            let w = unsafe { p.read() };
            w >> (i % 64) & 1 == 1
        })
    }

    /// Number of set bits among the first `len` (bits beyond `len` in the
    /// last word are ignored).
    pub(crate) fn count_ones(&self) -> u64 {
        let words = (self.len as usize).div_ceil(64);
        let mut n = 0u64;
        for w in 0..words {
            let p = self.ptr.as_ptr().wrapping_add(w);
            // SAFETY: w < words(len), inside the mask, aligned.
            let mut v = unsafe { p.read() };
            let lo = w * 64;
            if lo + 64 > self.len as usize {
                v &= (1u64 << (self.len as usize - lo)) - 1;
            }
            n += v.count_ones() as u64;
        }
        n
    }

    /// The mask's words in order, bits beyond `len` in the last one cleared
    /// (for the handoff's audit, once the roles stopped).
    pub(crate) fn words(&self) -> impl Iterator<Item = u64> + '_ {
        let len = self.len as usize;
        (0..len.div_ceil(64)).map(move |w| {
            let p = self.ptr.as_ptr().wrapping_add(w);
            // SAFETY: w < words(len), inside the mask, aligned.
            let v = unsafe { p.read() };
            let lo = w * 64;
            if lo + 64 > len {
                v & ((1u64 << (len - lo)) - 1)
            } else {
                v
            }
        })
    }

    /// Address of the word holding bit `i`, for a prefetch hint.
    #[inline]
    pub(crate) fn addr(&self, i: u32) -> *const u8 {
        self.ptr
            .as_ptr()
            .wrapping_add((i.min(self.len.saturating_sub(1)) / 64) as usize)
            .cast()
    }
}

/// RGB8 pixels, row-major, 3 bytes each: exactly the PNG's raw rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pixels<'a> {
    /// Invariant: `3 * len` bytes from `ptr` are mapped.
    ptr: NonNull<u8>,
    len: u32,
    _m: PhantomData<&'a ()>,
}

// SAFETY: as for Packed24.
unsafe impl Send for Pixels<'_> {}
// SAFETY: as for Packed24.
unsafe impl Sync for Pixels<'_> {}

impl<'a> Pixels<'a> {
    /// Views `len` pixels at the start of `region`.
    pub(crate) fn new(region: Region<'a>, len: u32) -> Option<Self> {
        (region.len() >= len as usize * 3).then_some(Pixels {
            ptr: region.ptr(),
            len,
            _m: PhantomData,
        })
    }

    /// Paints pixel `p` with colour `c` (0xRRGGBB).
    ///
    /// # Safety
    /// `p < len`, and the caller holds the turn.
    #[inline]
    pub(crate) unsafe fn set_unchecked(&self, p: u32, c: u32) {
        debug_assert!(p < self.len);
        let rgb = [(c >> 16) as u8, (c >> 8) as u8, c as u8];
        let dst = self.ptr.as_ptr().wrapping_add(p as usize * 3);
        // SAFETY: p < len, so bytes 3p..3p+3 are in bounds.
        unsafe { dst.copy_from_nonoverlapping(rgb.as_ptr(), 3) };
    }

    /// Copies every pixel out (for the handoff, once the roles stopped).
    pub(crate) fn to_vec(self) -> Vec<u8> {
        let n = self.len as usize * 3;
        let mut v = vec![0u8; n];
        // SAFETY: 3*len bytes from ptr are mapped (invariant); `v` is a
        // fresh allocation, so the ranges do not overlap.
        unsafe { self.ptr.as_ptr().copy_to_nonoverlapping(v.as_mut_ptr(), n) };
        v
    }

    /// Address of pixel `p`, for a prefetch hint.
    #[inline]
    pub(crate) fn addr(&self, p: u32) -> *const u8 {
        self.ptr
            .as_ptr()
            .wrapping_add(p.min(self.len.saturating_sub(1)) as usize * 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_identity_and_updates() {
        let mut buf = vec![0u64; 64];
        let bytes = buf.len() * 8;
        let region = Region::from_raw_for_tests(buf.as_mut_ptr().cast(), bytes);
        let a = Packed24::new(region, 100).unwrap();
        for i in 0..100 {
            assert_eq!(a.get(i), Some(i));
        }
        // SAFETY: indices < 100, single-threaded.
        unsafe {
            a.set_unchecked(5, 0xabcdef);
            a.set_unchecked(6, 1);
        }
        assert_eq!(a.get(5), Some(0xabcdef));
        assert_eq!(a.get(6), Some(1));
        assert_eq!(a.get(4), Some(4));
        assert_eq!(a.get(7), Some(7));
        assert_eq!(a.get(100), None);
        let mut moved = Vec::new();
        a.for_each_moved(|i, v| {
            moved.push((i, v));
            true
        });
        moved.sort();
        assert_eq!(moved, vec![(5, 0xabcdef), (6, 1)]);
        // Odd lengths: the halves still form a bijection.
        let b = Packed24::new(region, 7).unwrap();
        let mut slots: Vec<usize> = (0..7).map(|i| b.slot(i)).collect();
        slots.sort();
        assert_eq!(slots, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn mask_counts() {
        let mut buf = vec![0u64; 4];
        let region = Region::from_raw_for_tests(buf.as_mut_ptr().cast(), 32);
        let m = BitMask::new(region, 130).unwrap();
        // SAFETY: indices < 130.
        unsafe {
            m.set_unchecked(0);
            m.set_unchecked(64);
            m.set_unchecked(129);
        }
        assert_eq!(m.count_ones(), 3);
        assert_eq!(m.get(64), Some(true));
        assert_eq!(m.get(65), Some(false));
        assert_eq!(m.get(130), None);
    }
}
