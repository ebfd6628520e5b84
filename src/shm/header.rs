//! The header every segment starts with.
//!
//! Layout (128 bytes, little-endian, `#[repr(C)]`):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | `magic` = `"FORKRING"`; 0 while the creator initialises |
//! | 8 | 4 | `layout_version` of this segment kind |
//! | 12 | 4 | `header_size` = 128 |
//! | 16 | 8 | `total_size` of the segment in bytes |
//! | 24 | 8 | `fingerprint` of the layout (see `layout.rs`) |
//! | 32 | 4 | `creator_pid` |
//! | 36 | 4 | reserved |
//! | 40 | 8 | `creator_start_ticks` (field 22 of /proc/PID/stat) |
//! | 48 | 16 | `kind`: the segment's part name, ASCII, NUL-padded |
//! | 64 | 64 | reserved |
//!
//! The creator writes every other field, initialises the body, and stores
//! `magic` last with Release: a non-zero magic means "initialised".

use std::sync::atomic::{AtomicU64, Ordering};

use super::cell::{Param32, Param64, ShmSafe};

/// `"FORKRING"` as a little-endian u64.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"FORKRING");
/// Size of [`SegmentHeader`]; bodies start at this offset.
pub const HEADER_SIZE: usize = 128;
/// Longest part name that fits the `kind` field.
pub(crate) const MAX_KIND_LEN: usize = 16;

/// The segment header. See the module docs for the layout.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct SegmentHeader {
    /// 0 until the creator publishes the segment, then [`MAGIC`].
    magic: AtomicU64,
    layout_version: Param32,
    header_size: Param32,
    total_size: Param64,
    fingerprint: Param64,
    creator_pid: Param32,
    _reserved0: Param32,
    creator_start_ticks: Param64,
    kind: [Param64; 2],
    _reserved: [Param64; 8],
}

// SAFETY: repr(C); only atomics and Param cells.
unsafe impl ShmSafe for SegmentHeader {}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() == HEADER_SIZE);
const _: () = assert!(std::mem::offset_of!(SegmentHeader, layout_version) == 8);
const _: () = assert!(std::mem::offset_of!(SegmentHeader, total_size) == 16);
const _: () = assert!(std::mem::offset_of!(SegmentHeader, fingerprint) == 24);
const _: () = assert!(std::mem::offset_of!(SegmentHeader, creator_pid) == 32);
const _: () = assert!(std::mem::offset_of!(SegmentHeader, creator_start_ticks) == 40);
const _: () = assert!(std::mem::offset_of!(SegmentHeader, kind) == 48);

/// A plain copy of a header's fields, read after publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderFields {
    /// Magic found.
    pub(crate) magic: u64,
    /// Layout version.
    pub(crate) layout_version: u32,
    /// Header size.
    pub(crate) header_size: u32,
    /// Total segment size claimed by the header.
    pub(crate) total_size: u64,
    /// Layout fingerprint.
    pub(crate) fingerprint: u64,
    /// Creator's pid.
    pub(crate) creator_pid: u32,
    /// Creator's start time in clock ticks since boot.
    pub(crate) creator_start_ticks: u64,
    /// Part name (lossy: non-UTF-8 bytes are replaced).
    pub(crate) kind: String,
}

impl SegmentHeader {
    /// Fills in every field but `magic`.
    pub(super) fn write_fields(
        &self,
        kind: &str,
        version: u32,
        total: u64,
        fingerprint: u64,
        pid: u32,
        start_ticks: u64,
    ) {
        debug_assert!(kind.len() <= MAX_KIND_LEN);
        let mut k = [0u8; MAX_KIND_LEN];
        let n = kind.len().min(MAX_KIND_LEN);
        k[..n].copy_from_slice(&kind.as_bytes()[..n]);
        self.layout_version.set(version);
        self.header_size.set(HEADER_SIZE as u32);
        self.total_size.set(total);
        self.fingerprint.set(fingerprint);
        self.creator_pid.set(pid);
        self.creator_start_ticks.set(start_ticks);
        self.kind[0].set(u64::from_le_bytes(k[..8].try_into().expect("8 bytes")));
        self.kind[1].set(u64::from_le_bytes(k[8..].try_into().expect("8 bytes")));
    }

    /// Marks the segment initialised. Everything the creator wrote before is
    /// visible to whoever sees the magic.
    pub(super) fn publish(&self) {
        // SYNC POINT "segment published": release of the header fields and
        // of the body the creator initialised; acquired by `magic()`.
        self.magic.store(MAGIC, Ordering::Release);
    }

    /// The magic (0 while initialising).
    pub(crate) fn magic(&self) -> u64 {
        // SYNC POINT "segment published": acquire side of `publish`.
        self.magic.load(Ordering::Acquire)
    }

    /// Copies the fields out (call after `magic()` returned non-zero).
    pub(crate) fn fields(&self) -> HeaderFields {
        let mut k = [0u8; MAX_KIND_LEN];
        k[..8].copy_from_slice(&self.kind[0].get().to_le_bytes());
        k[8..].copy_from_slice(&self.kind[1].get().to_le_bytes());
        let end = k.iter().position(|&b| b == 0).unwrap_or(MAX_KIND_LEN);
        HeaderFields {
            magic: self.magic(),
            layout_version: self.layout_version.get(),
            header_size: self.header_size.get(),
            total_size: self.total_size.get(),
            fingerprint: self.fingerprint.get(),
            creator_pid: self.creator_pid.get(),
            creator_start_ticks: self.creator_start_ticks.get(),
            kind: String::from_utf8_lossy(&k[..end]).into_owned(),
        }
    }
}
