//! The stream job's segments and their layouts.
//!
//! | segment | contents |
//! |---|---|
//! | `forkring.NAME.stream` | [`StreamControl`]: parameters, the finish flag, the producer's committed record, then the consumer's committed state (variable size, see `state.rs`) |
//! | `forkring.NAME.ring` | the SPSC ring: control block, then `ring_slots` slots of `24 + 4 * dim` bytes, rounded up to 8 |
//!
//! A slot holds: sequence number, send time, scheduled time, checksum (u64
//! LE each; times in CLOCK_MONOTONIC ns, the scheduled time 0 with `--rate
//! max`), then `dim` f32 LE values. The checksum ([`slot_sum`]) covers every
//! other word of the slot; the consumer refuses a slot that fails it.

use bytemuck::{Pod, Zeroable};

use crate::shm::cell::ShmSafe;
use crate::shm::header::HEADER_SIZE;
use crate::shm::layout::Fingerprint;
use crate::shm::ring::{Ring, RingView};
use crate::shm::segment::{Access, OutOfBounds, Segment, SegmentSpec};
use crate::shm::{
    CachePadded, Committed, CommittedBytes, CreatedSegments, Flag, Param32, Param64, RingError,
    RunName, SegmentsError, Stat64,
};

use super::StreamSettings;
use super::export::ExportSegment;
use super::state::ConsumerState;

/// Layout version of the stream job's segments (2: slots carry their
/// scheduled time; the consumer state holds the rate window's timestamps;
/// 3: committed records and ring slots carry checksums).
pub(crate) const VERSION: u32 = 3;
/// Part names.
pub(crate) const PARTS: [&str; 2] = ["stream", "ring"];
/// Bytes of a slot's header (sequence, send time, scheduled time,
/// checksum).
pub const SLOT_HEADER: usize = 32;
/// Offset of the checksum in a slot.
pub(crate) const SLOT_SUM: usize = 24;

/// The checksum of a slot (`slot.len()` a multiple of 8): over every word
/// but the checksum itself, two independent lanes (a sum, and a sum
/// weighted by odd factors) that the compiler can vectorise. Catches any
/// change of one word and most of several; not a MAC.
#[inline]
pub(crate) fn slot_sum(slot: &[u8]) -> u64 {
    let (mut a, mut b) = (0x9e37_79b9_7f4a_7c15u64, 0u64);
    let words = slot
        .chunks_exact(8)
        .enumerate()
        .filter(|(i, _)| *i != SLOT_SUM / 8);
    for (i, c) in words {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        a = a.wrapping_add(w);
        b = b.wrapping_add(w.wrapping_mul(2 * i as u64 + 1));
    }
    a ^ b.rotate_left(32)
}

/// The producer's committed record. Commit point of a chunk of vectors: the
/// generation flip of [`Committed`]; the ring's head is published after it
/// (a restarted producer republishes `head` from here).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ProducerRecord {
    /// Ring position after the last committed slot.
    pub head: u32,
    /// 1 once the producer has used its last sequence number.
    pub finished: u32,
    /// Next sequence number = sequence numbers used so far (the produced
    /// count, dropped ones included).
    pub next_seq: u64,
    /// Vectors dropped by `--noise`.
    pub dropped: u64,
    /// Noise events (each drops `--noise-burst` vectors).
    pub drop_events: u64,
}

#[repr(C)]
#[derive(Debug, Default)]
struct StreamParams {
    dim: Param32,
    batch: Param32,
    rate_window: Param32,
    ring_slots: Param32,
    seed: Param64,
}

// SAFETY: repr(C) of Param cells.
unsafe impl ShmSafe for StreamParams {}

/// Per-role statistics (display only).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct StreamStats {
    /// Times the producer attached (1 + restarts).
    pub(crate) producer_attaches: Stat64,
    /// Times the consumer attached.
    pub(crate) consumer_attaches: Stat64,
    /// CPU time of producer processes that finished normally (ns).
    pub(crate) producer_cpu_ns: Stat64,
    /// CPU time of consumer processes that finished normally (ns).
    pub(crate) consumer_cpu_ns: Stat64,
}

// SAFETY: repr(C) of Stat64 cells.
unsafe impl ShmSafe for StreamStats {}

/// Fixed part of the `stream` segment's body.
#[repr(C)]
pub struct StreamControl {
    params: CachePadded<StreamParams>,
    /// Raised by the supervisor when the stream should end for good (the
    /// jobs that end the run are complete, or --duration): the producer
    /// commits its last record and exits, the consumer drains the ring and
    /// exits. A stop request (signal, restart limit) does not raise it: it
    /// raises the run's stop flag, so the stream stays resumable.
    pub(crate) finish: CachePadded<Flag>,
    /// The producer's record.
    pub producer: CachePadded<Committed<ProducerRecord>>,
    /// Statistics.
    pub(crate) stats: CachePadded<StreamStats>,
}

// SAFETY: repr(C); every field is ShmSafe.
unsafe impl ShmSafe for StreamControl {}

impl std::fmt::Debug for StreamControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamControl").finish_non_exhaustive()
    }
}

const CONTROL_BODY: usize = std::mem::size_of::<StreamControl>();
const _: () = assert!(CONTROL_BODY == 128 * 4);
/// Offset of the consumer's committed state in the `stream` segment.
const CONSUMER_OFFSET: usize = HEADER_SIZE + CONTROL_BODY;
const _: () = assert!(CONSUMER_OFFSET % 64 == 0);

const STREAM_FP: u64 = Fingerprint::new("stream")
    .num(CONTROL_BODY)
    .num(std::mem::offset_of!(StreamControl, finish))
    .num(std::mem::offset_of!(StreamControl, producer))
    .num(std::mem::size_of::<ProducerRecord>())
    .num(std::mem::offset_of!(ProducerRecord, finished))
    .num(std::mem::offset_of!(ProducerRecord, next_seq))
    .num(std::mem::offset_of!(ProducerRecord, dropped))
    .num(std::mem::offset_of!(ProducerRecord, drop_events))
    .num(std::mem::size_of::<StreamStats>())
    .num(CommittedBytes::COPIES_OFFSET)
    .num(super::state::HEADER_WORDS)
    .bytes(super::state::ENCODING)
    .bytes(crate::shm::commit::CHECKSUM_LAYOUT)
    .finish();
const RING_FP: u64 = Fingerprint::new("ring")
    .num(std::mem::size_of::<Ring>())
    .num(SLOT_HEADER)
    .finish();

/// The two segment specs for `s`, in `PARTS` order.
pub(crate) fn specs(s: &StreamSettings) -> [SegmentSpec; 2] {
    let consumer =
        CommittedBytes::region_bytes(ConsumerState::bytes(s.dim, s.rate_window, s.batch));
    [
        SegmentSpec {
            part: "stream",
            version: VERSION,
            fingerprint: STREAM_FP,
            size: Some(CONSUMER_OFFSET + consumer),
        },
        SegmentSpec {
            part: "ring",
            version: VERSION,
            fingerprint: RING_FP,
            size: Some(HEADER_SIZE + Ring::bytes_for(s.ring_slots, s.slot_size()).unwrap_or(0)),
        },
    ]
}

/// Shared-memory bytes of the stream job (the export ring included).
pub(crate) fn shm_bytes(s: &StreamSettings) -> u64 {
    let export = s
        .export
        .as_ref()
        .map(|x| super::export::spec(x, s.dim, s.batch));
    specs(s)
        .iter()
        .chain(export.iter())
        .map(|x| x.size.unwrap_or(0) as u64)
        .sum()
}

/// Errors of creating or opening the stream segments.
pub(crate) type StreamSegmentError = SegmentsError;

/// The mapped segments of a stream job.
#[derive(Debug)]
pub struct StreamSegments {
    settings: StreamSettings,
    control: Segment,
    ring: Segment,
    /// The export ring (with `--export`).
    export: Option<ExportSegment>,
}

impl StreamSegments {
    /// Creates the segments of a new run; removes what it made on error.
    pub fn create(run: &RunName, s: &StreamSettings) -> Result<Self, StreamSegmentError> {
        if Ring::bytes_for(s.ring_slots, s.slot_size()).is_none() {
            return Err(StreamSegmentError::Settings(format!(
                "ring of {} slots of {} bytes",
                s.ring_slots,
                s.slot_size()
            )));
        }
        let [cs, rs] = specs(s);
        let mut guard = CreatedSegments::new();
        let control = Segment::create(run, &cs, |seg| {
            let c: &StreamControl = seg.body().expect("sized by spec");
            c.params.dim.set(s.dim);
            c.params.batch.set(s.batch);
            c.params.rate_window.set(s.rate_window);
            c.params.ring_slots.set(s.ring_slots);
            c.params.seed.set(s.seed);
        })?;
        guard.add(control.name());
        let ring = Segment::create(run, &rs, |seg| {
            let r: &Ring = seg.body().expect("sized by spec");
            r.init(s.ring_slots, s.slot_size());
        })?;
        guard.add(ring.name());
        let export = match &s.export {
            Some(x) => {
                let e = ExportSegment::create(run, x, s.dim, s.batch)?;
                guard.add(e.name());
                Some(e)
            }
            None => None,
        };
        let me = StreamSegments {
            settings: s.clone(),
            control,
            ring,
            export,
        };
        me.validate()?;
        guard.keep();
        Ok(me)
    }

    /// Opens and validates the segments of an existing run.
    pub(crate) fn open(
        run: &RunName,
        s: &StreamSettings,
        access: Access,
    ) -> Result<Self, StreamSegmentError> {
        let [cs, rs] = specs(s);
        let wait = std::time::Duration::from_secs(2);
        let me = StreamSegments {
            settings: s.clone(),
            control: Segment::open(run, &cs, access, wait)?,
            ring: Segment::open(run, &rs, access, wait)?,
            export: match &s.export {
                Some(x) => Some(ExportSegment::open(run, x, s.dim, s.batch, access)?),
                None => None,
            },
        };
        me.validate()?;
        Ok(me)
    }

    fn validate(&self) -> Result<(), StreamSegmentError> {
        let c = self.control()?;
        let s = &self.settings;
        let check = |field, found, expected| {
            SegmentsError::check_param(&self.control, field, found, expected)
        };
        check("dim", c.params.dim.get() as u64, s.dim as u64)?;
        check("batch", c.params.batch.get() as u64, s.batch as u64)?;
        check(
            "rate_window",
            c.params.rate_window.get() as u64,
            s.rate_window as u64,
        )?;
        check(
            "ring_slots",
            c.params.ring_slots.get() as u64,
            s.ring_slots as u64,
        )?;
        check("seed", c.params.seed.get(), s.seed)?;
        let ring = self.ring_view()?;
        if ring.capacity() != s.ring_slots || ring.slot_size() != s.slot_size() as usize {
            return Err(StreamSegmentError::Param {
                segment: self.ring.name().to_string(),
                field: "slot_size",
                found: ring.slot_size() as u64,
                expected: s.slot_size() as u64,
            });
        }
        self.consumer_record()?;
        Ok(())
    }

    /// The settings.
    pub(crate) fn settings(&self) -> &StreamSettings {
        &self.settings
    }
    /// The fixed control block.
    pub fn control(&self) -> Result<&StreamControl, OutOfBounds> {
        self.control.body()
    }
    /// The producer's committed record, checked against its checksum (for
    /// the producer itself, or while it is stopped).
    pub(crate) fn producer_record(&self) -> Result<ProducerRecord, StreamSegmentError> {
        self.control()?
            .producer
            .load()
            .map(|(_, p)| p)
            .map_err(|e| self.corrupt(format!("field producer: {e}")))
    }
    /// A corruption of the `stream` segment.
    pub(crate) fn corrupt(&self, detail: String) -> StreamSegmentError {
        SegmentsError::corrupt(self.control.name(), detail)
    }
    /// The validated ring.
    pub fn ring_view(&self) -> Result<RingView<'_>, RingError> {
        RingView::new(&self.ring, HEADER_SIZE)
    }
    /// The consumer's committed state.
    pub(crate) fn consumer_record(&self) -> Result<CommittedBytes<'_>, StreamSegmentError> {
        let len = ConsumerState::bytes(
            self.settings.dim,
            self.settings.rate_window,
            self.settings.batch,
        );
        let region = self
            .control
            .region(CONSUMER_OFFSET, CommittedBytes::region_bytes(len))?;
        CommittedBytes::new(region, len).ok_or_else(|| {
            StreamSegmentError::Layout(OutOfBounds {
                name: self.control.name().to_string(),
                offset: CONSUMER_OFFSET,
                end: CONSUMER_OFFSET + CommittedBytes::region_bytes(len),
                len: self.control.len(),
            })
        })
    }
    /// The export ring, with `--export`.
    pub(crate) fn export(&self) -> Option<&ExportSegment> {
        self.export.as_ref()
    }
    /// Names of the segments.
    pub(crate) fn names(&self) -> Vec<&str> {
        let mut v = vec![self.control.name(), self.ring.name()];
        v.extend(self.export.as_ref().map(|e| e.name()));
        v
    }
}
