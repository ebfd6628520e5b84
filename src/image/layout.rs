//! The image job's segments and their layouts.
//!
//! | segment | contents | bytes at 4096x4096 |
//! |---|---|---|
//! | `forkring.NAME.image` | [`ImageControl`]: parameters, the turn (= iteration counter), one redo journal and stats per role | 1 KiB |
//! | `forkring.NAME.pixels` | RGB8 image, row-major, always the current state | 48 MiB |
//! | `forkring.NAME.posmask` | 1 bit per position: painted | 2 MiB |
//! | `forkring.NAME.colmask` | 1 bit per 24-bit colour: used | 2 MiB |
//! | `forkring.NAME.history` | the position shuffle (W*H packed 24-bit entries) then the colour shuffle (2^24 entries); the first `iteration` entries of each are the history | 96 MiB |
//!
//! Every segment starts with the 128-byte header of `shm/header.rs`.

use bytemuck::{Pod, Zeroable};

use crate::shm::cell::ShmSafe;
use crate::shm::header::HEADER_SIZE;
use crate::shm::layout::Fingerprint;
use crate::shm::segment::{Access, OutOfBounds, Segment, SegmentSpec};
use crate::shm::{
    CachePadded, CreatedSegments, Journal, Param32, Param64, RunName, SegmentsError, Stat64, Turn,
};

use super::ImageSettings;

use super::arrays::{BitMask, Packed24, Pixels, mask_bytes, packed_bytes};

/// Layout version shared by the image job's segments (2: the journals'
/// records carry checksums).
pub(crate) const VERSION: u32 = 2;
/// Number of 24-bit colours.
pub(crate) const COLOURS: u32 = 1 << 24;

/// Part names of the image job's segments.
pub const PARTS: [&str; 5] = ["image", "pixels", "posmask", "colmask", "history"];

/// The redo record of one iteration: the *new* values of every entry the
/// iteration changes, so that applying it twice equals applying it once.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct StepRecord {
    /// The iteration `s`.
    pub(crate) step: u32,
    /// Position-shuffle swap target, in `s..pixels`.
    pub(crate) j: u32,
    /// Colour-shuffle swap target, in `s..2^24`.
    pub(crate) k: u32,
    /// New `positions[s]`: the position painted.
    pub(crate) pos_s: u32,
    /// New `positions[j]`.
    pub(crate) pos_j: u32,
    /// New `colours[s]`: the colour painted.
    pub(crate) col_s: u32,
    /// New `colours[k]`.
    pub(crate) col_k: u32,
    /// Zero.
    pub(crate) pad: u32,
}

const _: () = assert!(std::mem::size_of::<StepRecord>() == 32);

#[repr(C)]
#[derive(Debug, Default)]
struct ImageParams {
    /// Immutable after creation.
    width: Param32,
    /// Immutable after creation.
    height: Param32,
    /// Immutable after creation.
    seed: Param64,
}

/// Per-role statistics (display only).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct PartyStats {
    /// Half-done iterations this role redid from its journal after a restart.
    pub(crate) redone: Stat64,
    /// Times this role attached (1 + restarts).
    pub(crate) attaches: Stat64,
}

/// When the image was painted (CLOCK_MONOTONIC ns), for the summary and
/// `forkring bench image`: written once each, outside the step itself.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Timing {
    /// Just before iteration 0 (rewritten if iteration 0 is redone).
    pub(crate) first_step_ns: Param64,
    /// Just after the last iteration was committed.
    pub(crate) last_step_ns: Param64,
}

// SAFETY: repr(C) of Param cells.
unsafe impl ShmSafe for Timing {}

/// Body of the `image` segment.
#[repr(C)]
pub struct ImageControl {
    params: CachePadded<ImageParams>,
    /// Sequence = number of committed iterations; iteration `s` belongs to
    /// ping if `s` is even, to pong if odd. Publishing `s + 1` is the commit
    /// point of iteration `s` and hands the turn over in the same store.
    pub turn: Turn,
    /// Redo journal of ping (0) and pong (1); each on its own lines, written
    /// only by its role.
    pub journals: [CachePadded<Journal<StepRecord>>; 2],
    /// Statistics of ping (0) and pong (1).
    pub(crate) stats: [CachePadded<PartyStats>; 2],
    /// Start and end of the painting.
    pub(crate) timing: CachePadded<Timing>,
}

// SAFETY: repr(C); every field is ShmSafe.
unsafe impl ShmSafe for ImageControl {}
// SAFETY: repr(C) of Stat64 cells.
unsafe impl ShmSafe for PartyStats {}
// SAFETY: repr(C) of Param cells.
unsafe impl ShmSafe for ImageParams {}

impl std::fmt::Debug for ImageControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageControl")
            .field("iteration", &self.turn.seq())
            .finish_non_exhaustive()
    }
}

const CONTROL_BODY: usize = std::mem::size_of::<ImageControl>();
const _: () = assert!(CONTROL_BODY == 128 * 7);

const CONTROL_FP: u64 = Fingerprint::new("image")
    .num(CONTROL_BODY)
    .num(std::mem::offset_of!(ImageControl, turn))
    .num(std::mem::offset_of!(ImageControl, journals))
    .num(std::mem::offset_of!(ImageControl, stats))
    .num(std::mem::offset_of!(ImageControl, timing))
    .num(std::mem::size_of::<StepRecord>())
    .num(std::mem::offset_of!(StepRecord, j))
    .num(std::mem::offset_of!(StepRecord, k))
    .num(std::mem::offset_of!(StepRecord, pos_s))
    .num(std::mem::offset_of!(StepRecord, pos_j))
    .num(std::mem::offset_of!(StepRecord, col_s))
    .num(std::mem::offset_of!(StepRecord, col_k))
    .num(std::mem::size_of::<PartyStats>())
    .num(std::mem::size_of::<Timing>())
    .num(std::mem::size_of::<Journal<StepRecord>>())
    .bytes(crate::shm::commit::CHECKSUM_LAYOUT)
    .finish();
const PIXELS_FP: u64 = Fingerprint::new("pixels").num(3).finish();
const POSMASK_FP: u64 = Fingerprint::new("posmask").num(64).finish();
const COLMASK_FP: u64 = Fingerprint::new("colmask")
    .num(64)
    .num(COLOURS as usize)
    .finish();
const HISTORY_FP: u64 = Fingerprint::new("history")
    .bytes(b"xor-index,even-odd-halves")
    .num(super::arrays::ENTRY)
    .num(super::arrays::PACKED_SLACK)
    .num(COLOURS as usize)
    .finish();

fn round64(n: usize) -> usize {
    n.div_ceil(64) * 64
}

/// Offset of the colour shuffle inside the history segment.
fn colours_offset(pixels: u32) -> usize {
    HEADER_SIZE + round64(packed_bytes(pixels as usize))
}

/// The five segment specs for `settings`, in `PARTS` order.
pub(crate) fn specs(settings: &ImageSettings) -> [SegmentSpec; 5] {
    let n = settings.pixels() as usize;
    let spec = |part, fingerprint, body: usize| SegmentSpec {
        part,
        version: VERSION,
        fingerprint,
        size: Some(HEADER_SIZE + body),
    };
    [
        spec("image", CONTROL_FP, CONTROL_BODY),
        spec("pixels", PIXELS_FP, n * 3),
        spec("posmask", POSMASK_FP, mask_bytes(n)),
        spec("colmask", COLMASK_FP, mask_bytes(COLOURS as usize)),
        spec(
            "history",
            HISTORY_FP,
            colours_offset(settings.pixels()) - HEADER_SIZE + packed_bytes(COLOURS as usize),
        ),
    ]
}

/// Shared-memory bytes the image job needs for `settings`.
pub(crate) fn shm_bytes(settings: &ImageSettings) -> u64 {
    specs(settings)
        .iter()
        .map(|s| s.size.unwrap_or(0) as u64)
        .sum()
}

/// Errors of creating or opening the image segments.
pub(crate) type ImageSegmentError = SegmentsError;

/// The five mapped segments of an image job.
#[derive(Debug)]
pub struct ImageSegments {
    settings: ImageSettings,
    control: Segment,
    pixels: Segment,
    posmask: Segment,
    colmask: Segment,
    history: Segment,
}

/// Validated views of the image job's shared state.
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    /// The control block.
    pub ctl: &'a ImageControl,
    /// The image.
    pub(crate) pixels: Pixels<'a>,
    /// Painted positions.
    pub(crate) posmask: BitMask<'a>,
    /// Used colours.
    pub(crate) colmask: BitMask<'a>,
    /// Position shuffle; its first `iteration` entries are the positions
    /// painted, in order.
    pub(crate) positions: Packed24<'a>,
    /// Colour shuffle; its first `iteration` entries are the colours used.
    pub(crate) colours: Packed24<'a>,
    /// Width.
    pub(crate) width: u32,
    /// Height.
    pub(crate) height: u32,
    /// Number of pixels (= iterations of a complete run).
    pub n: u32,
    /// Seed.
    pub(crate) seed: u64,
}

impl ImageSegments {
    /// Creates the segments for a new run. On error, removes whatever it
    /// created.
    pub fn create(run: &RunName, settings: &ImageSettings) -> Result<Self, ImageSegmentError> {
        let specs = specs(settings);
        let mut guard = CreatedSegments::new();
        let mut made: Vec<Segment> = Vec::with_capacity(5);
        for (i, spec) in specs.iter().enumerate() {
            let seg = Segment::create(run, spec, |seg| {
                if i == 0 {
                    let c: &ImageControl = seg.body().expect("sized by spec");
                    c.params.width.set(settings.width);
                    c.params.height.set(settings.height);
                    c.params.seed.set(settings.seed);
                }
            })?;
            guard.add(seg.name());
            made.push(seg);
        }
        let me = Self::from_segments(settings, made)?;
        guard.keep();
        Ok(me)
    }

    /// Opens and validates the segments of an existing run.
    pub(crate) fn open(
        run: &RunName,
        settings: &ImageSettings,
        access: Access,
    ) -> Result<Self, ImageSegmentError> {
        let mut segs = Vec::with_capacity(5);
        for spec in specs(settings).iter() {
            segs.push(Segment::open(
                run,
                spec,
                access,
                std::time::Duration::from_secs(2),
            )?);
        }
        Self::from_segments(settings, segs)
    }

    fn from_segments(
        settings: &ImageSettings,
        segs: Vec<Segment>,
    ) -> Result<Self, ImageSegmentError> {
        let mut it = segs.into_iter();
        let mut next = || it.next().expect("five segments");
        let me = ImageSegments {
            settings: settings.clone(),
            control: next(),
            pixels: next(),
            posmask: next(),
            colmask: next(),
            history: next(),
        };
        let c: &ImageControl = me.control.body()?;
        let check = |field, found, expected| {
            SegmentsError::check_param(&me.control, field, found, expected)
        };
        check("width", c.params.width.get() as u64, settings.width as u64)?;
        check(
            "height",
            c.params.height.get() as u64,
            settings.height as u64,
        )?;
        check("seed", c.params.seed.get(), settings.seed)?;
        let iteration = c.turn.seq();
        if iteration > settings.pixels() {
            return Err(ImageSegmentError::Corrupt {
                segment: me.control.name().to_string(),
                detail: format!(
                    "field turn (iteration) is {iteration}, more than the {} pixels",
                    settings.pixels()
                ),
            });
        }
        me.view()?;
        Ok(me)
    }

    /// Views of the shared state (bounds validated against the segments).
    pub fn view(&self) -> Result<ImageView<'_>, ImageSegmentError> {
        let n = self.settings.pixels();
        let ctl: &ImageControl = self.control.body()?;
        // `region` checks the bounds; the constructors only add the element
        // count and alignment checks, which the layout satisfies.
        let misfit = |seg: &Segment, offset: usize, len: usize| {
            ImageSegmentError::Layout(OutOfBounds {
                name: seg.name().to_string(),
                offset,
                end: offset + len,
                len: seg.len(),
            })
        };
        let (px, pm, cm) = (
            n as usize * 3,
            mask_bytes(n as usize),
            mask_bytes(COLOURS as usize),
        );
        let (pp, cp) = (packed_bytes(n as usize), packed_bytes(COLOURS as usize));
        let co = colours_offset(n);
        let pixels = Pixels::new(self.pixels.region(HEADER_SIZE, px)?, n)
            .ok_or_else(|| misfit(&self.pixels, HEADER_SIZE, px))?;
        let posmask = BitMask::new(self.posmask.region(HEADER_SIZE, pm)?, n)
            .ok_or_else(|| misfit(&self.posmask, HEADER_SIZE, pm))?;
        let colmask = BitMask::new(self.colmask.region(HEADER_SIZE, cm)?, COLOURS)
            .ok_or_else(|| misfit(&self.colmask, HEADER_SIZE, cm))?;
        let positions = Packed24::new(self.history.region(HEADER_SIZE, pp)?, n)
            .ok_or_else(|| misfit(&self.history, HEADER_SIZE, pp))?;
        let colours = Packed24::new(self.history.region(co, cp)?, COLOURS)
            .ok_or_else(|| misfit(&self.history, co, cp))?;
        Ok(ImageView {
            ctl,
            pixels,
            posmask,
            colmask,
            positions,
            colours,
            width: self.settings.width,
            height: self.settings.height,
            n,
            seed: self.settings.seed,
        })
    }

    /// The settings these segments were opened with.
    pub(crate) fn settings(&self) -> &ImageSettings {
        &self.settings
    }

    /// Names of the segments.
    pub(crate) fn names(&self) -> [&str; 5] {
        [
            self.control.name(),
            self.pixels.name(),
            self.posmask.name(),
            self.colmask.name(),
            self.history.name(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_size_fits_the_budget() {
        let s = ImageSettings {
            width: 4096,
            height: 4096,
            seed: 0,
        };
        let bytes = shm_bytes(&s);
        assert!(bytes <= 150 * 1024 * 1024, "{bytes}");
        assert!(bytes >= 148 * 1024 * 1024, "{bytes}");
    }
}
