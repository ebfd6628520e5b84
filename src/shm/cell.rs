//! Typed cells for shared memory.
//!
//! Each kind of cell states the one ordering it uses, so code outside
//! `src/shm` never picks an ordering:
//! - [`Param32`]/[`Param64`]: written while a segment is being initialised
//!   (or rarely, for informational fields such as pids) and read `Relaxed`.
//!   Parameters become visible to other processes through the segment
//!   header's publication (see `header.rs`, SYNC POINT "segment published").
//! - [`Stat64`]: monotonic statistics (counts of steps, restarts). `Relaxed`:
//!   a reader only displays them and needs nothing else to be visible.
//! - [`VolatileCell`]: plain old data copied in and out whole with volatile
//!   accesses. It never hands out a reference into shared memory, so another
//!   process writing it concurrently can only make us read a garbage *value*,
//!   which `T: Pod` (every bit pattern valid) accepts and callers validate.

use std::cell::UnsafeCell;
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytemuck::Pod;

/// Aligns and pads `T` to 128 bytes: two cache lines, because Intel's
/// spatial prefetcher pulls lines in pairs. Keeps one writer's hot word from
/// sharing a line with another writer's.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct CachePadded<T>(pub T);

impl<T> Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A 32-bit parameter or informational field (see module docs). Relaxed.
#[repr(transparent)]
#[derive(Debug, Default)]
pub struct Param32(AtomicU32);

impl Param32 {
    /// Reads the value. Relaxed: see the module docs for why that suffices.
    #[inline]
    pub(crate) fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
    /// Writes the value. Relaxed: see the module docs.
    #[inline]
    pub(crate) fn set(&self, v: u32) {
        self.0.store(v, Ordering::Relaxed)
    }
}

/// A 64-bit parameter or informational field (see module docs). Relaxed.
#[repr(transparent)]
#[derive(Debug, Default)]
pub struct Param64(AtomicU64);

impl Param64 {
    /// Reads the value. Relaxed.
    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Writes the value. Relaxed.
    #[inline]
    pub(crate) fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed)
    }
}

/// A monotonic statistic, for display only. Relaxed.
#[repr(transparent)]
#[derive(Debug, Default)]
pub struct Stat64(AtomicU64);

impl Stat64 {
    /// Reads the statistic.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Overwrites the statistic (used when a role restores it after a restart).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed)
    }
    /// Adds to the statistic and returns the previous value. A single writer
    /// per statistic is the rule, so a plain load+store would do; the RMW
    /// keeps it right if an operator runs a second writer by mistake.
    #[inline]
    pub(crate) fn add(&self, n: u64) -> u64 {
        self.0.fetch_add(n, Ordering::Relaxed)
    }
}

/// Plain old data in shared memory, only ever copied in or out whole.
///
/// Invariant: no `&T` or `&mut T` into the cell is ever created; all access
/// goes through [`VolatileCell::read`] and [`VolatileCell::write`].
#[repr(transparent)]
pub struct VolatileCell<T: Pod>(UnsafeCell<T>);

impl<T: Pod> std::fmt::Debug for VolatileCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VolatileCell(..)")
    }
}

// SAFETY: the cell is only accessed by whole-value volatile copies of a
// `Pod` type; a concurrent writer (another thread or process) can only make a
// reader observe some bit pattern of `T`, all of which are valid.
unsafe impl<T: Pod> Sync for VolatileCell<T> {}

impl<T: Pod> VolatileCell<T> {
    /// Copies the value out.
    #[inline]
    pub(crate) fn read(&self) -> T {
        // SAFETY: the pointer comes from a live `UnsafeCell<T>`, so it is
        // valid and aligned for `T`; `T: Pod` makes every bit pattern a valid
        // `T`, so even a torn read by a racing writer yields a valid value.
        unsafe { std::ptr::read_volatile(self.0.get()) }
    }

    /// Copies `value` in.
    #[inline]
    pub(crate) fn write(&self, value: T) {
        // SAFETY: valid, aligned pointer from the cell; no reference into the
        // cell exists (type invariant), so this write aliases nothing.
        unsafe { std::ptr::write_volatile(self.0.get(), value) }
    }
}

/// Marker for types that may be placed in a shared-memory segment and viewed
/// through `&T` while other processes read and write the same bytes.
///
/// # Safety
/// Implementors must be `#[repr(C)]` (or transparent over such a type), with
/// every field one of: an atomic, a [`VolatileCell`], a `Param*`/`Stat64`
/// cell, a type that is itself `ShmSafe`, or an array of those. All-zero
/// bytes must be a valid value (a freshly created segment is zero-filled),
/// and so must every other bit pattern (a hostile process can write anything).
pub unsafe trait ShmSafe: Sync {}

// SAFETY: atomics are valid for every bit pattern and designed for sharing.
unsafe impl ShmSafe for AtomicU32 {}
// SAFETY: as above.
unsafe impl ShmSafe for AtomicU64 {}
// SAFETY: transparent over AtomicU32.
unsafe impl ShmSafe for Param32 {}
// SAFETY: transparent over AtomicU64.
unsafe impl ShmSafe for Param64 {}
// SAFETY: transparent over AtomicU64.
unsafe impl ShmSafe for Stat64 {}
// SAFETY: only whole-value volatile copies of a Pod type (see VolatileCell).
unsafe impl<T: Pod> ShmSafe for VolatileCell<T> {}
// SAFETY: repr(C) wrapper adding only alignment padding, which is never read.
unsafe impl<T: ShmSafe> ShmSafe for CachePadded<T> {}
// SAFETY: an array of ShmSafe elements is ShmSafe element-wise.
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_padded_is_two_lines() {
        assert_eq!(std::mem::size_of::<CachePadded<u32>>(), 128);
        assert_eq!(std::mem::align_of::<CachePadded<u32>>(), 128);
    }

    #[test]
    fn volatile_cell_round_trips() {
        let c = VolatileCell(UnsafeCell::new([1u64, 2, 3]));
        assert_eq!(c.read(), [1, 2, 3]);
        c.write([4, 5, 6]);
        assert_eq!(c.read(), [4, 5, 6]);
    }

    #[test]
    fn stat_adds() {
        let s = Stat64::default();
        assert_eq!(s.add(3), 0);
        assert_eq!(s.get(), 3);
    }
}
