//! The consumer: reads the ring, detects every gap exactly from sequence
//! numbers, fills gaps by linear interpolation, computes batch and rate
//! statistics, and writes one record per batch.
//!
//! Crash safety. The consumer's commit point is `CommittedBytes::commit` of
//! its [`ConsumerState`], which holds its ring position, every running
//! figure and the length of its output file. A chunk of vectors is handled
//! as: read slots → update the state in memory and format output → write
//! the output bytes to the file → commit the state → release the slots to
//! the producer. A consumer killed anywhere restarts from the committed
//! state: it truncates the file back to the committed length and reads the
//! same slots again (they were not released), so no vector is lost and none
//! is counted twice.
//!
//! With `--export`, the vectors the chunk produced (gaps filled in) and its
//! batch records go to the export ring first: the export writer commits
//! before the consumer does (see `export.rs`), and skips on replay what its
//! own record already covers.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use crate::job::{JobError, RoleCtx};
use crate::shm::ring::{RingConsumer, RingError};
use crate::shm::{Access, CommittedBytes, SpinPolicy};

use super::{Rate, StreamFormat, StreamSettings};

use super::export::{ExportWriter, WriterError};
use super::layout::{
    ProducerRecord, SLOT_HEADER, SLOT_SUM, StreamSegmentError, StreamSegments, slot_sum,
};
use super::output::{self, BatchRecord};
use super::state::{ConsumerState, StateError, interpolate};

/// Errors of the consumer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsumerError {
    /// Segment problem.
    #[error(transparent)]
    Segment(#[from] StreamSegmentError),
    /// Ring problem.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// Corrupt committed state.
    #[error(transparent)]
    State(#[from] StateError),
    /// A slot holds a sequence number the producer never handed out.
    #[error(
        "segment ring: a slot holds sequence number {seq}, but the producer has only used {bound}"
    )]
    Sequence {
        /// Sequence number found.
        seq: u64,
        /// Producer's next sequence number.
        bound: u64,
    },
    /// A slot fails its checksum.
    #[error(
        "segment ring: the slot at position {position} fails its checksum (stored {stored:#018x}, computed {computed:#018x})"
    )]
    SlotChecksum {
        /// Ring position of the slot.
        position: u32,
        /// Checksum in the slot.
        stored: u64,
        /// Checksum of the slot as read.
        computed: u64,
    },
    /// A gap longer than the dropouts the producer has committed.
    #[error(
        "segment ring: sequence {seq} follows {last}, a gap of {gap}, but the producer has committed only {unfilled} dropouts not yet filled"
    )]
    Gap {
        /// Sequence number found (or the produced count at the end).
        seq: u64,
        /// Last sequence number accounted for.
        last: i64,
        /// Missing sequence numbers.
        gap: u64,
        /// Dropouts committed by the producer and not yet filled.
        unfilled: u64,
    },
    /// Handing vectors to the exporter.
    #[error(transparent)]
    Export(#[from] WriterError),
    /// The output file is inconsistent with the committed state.
    #[error("{path}: {detail}")]
    Output {
        /// File.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The working file is gone or cut short although records were
    /// committed to it: they are lost.
    #[error(
        "{path} {detail}; the stream's per-batch records committed so far ({committed} bytes) are lost (the figures are still in the segments)"
    )]
    Lost {
        /// File.
        path: String,
        /// What is wrong.
        detail: String,
        /// Committed bytes.
        committed: u64,
    },
}

impl From<ConsumerError> for JobError {
    fn from(e: ConsumerError) -> Self {
        match e {
            ConsumerError::Segment(s) => JobError::Segments(s),
            ConsumerError::Ring(r) => r.into(),
            ConsumerError::State(s) => JobError::corrupt("stream", s.to_string()),
            e @ (ConsumerError::Sequence { .. }
            | ConsumerError::Gap { .. }
            | ConsumerError::SlotChecksum { .. }) => JobError::corrupt("ring", e.to_string()),
            e @ ConsumerError::Output { .. } => JobError::Failed(e.to_string()),
            e @ ConsumerError::Lost { .. } => JobError::Lost(e.to_string()),
            ConsumerError::Export(WriterError::Job(j)) => j,
            ConsumerError::Export(WriterError::Ring(r)) => r.into(),
            ConsumerError::Export(e @ WriterError::Stopped) => JobError::Failed(e.to_string()),
        }
    }
}

/// The producer's committed record while the producer may be running: a
/// seqlock snapshot, retried while the producer keeps overtaking the read;
/// an error if the record fails its checksum.
fn producer_record(segs: &StreamSegments) -> Result<ProducerRecord, ConsumerError> {
    let ctl = segs.control().map_err(StreamSegmentError::from)?;
    let corrupt = |detail: String| ConsumerError::Segment(segs.corrupt(detail));
    for _ in 0..1000 {
        match ctl.producer.snapshot() {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => std::thread::yield_now(),
            Err(e) => return Err(corrupt(format!("field producer: {e}"))),
        }
    }
    Err(corrupt(
        "field producer: the record changed during each of 64000 reads".into(),
    ))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ConsumerError + '_ {
    move |e| ConsumerError::Output {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// The consumer's analytics, independent of where vectors come from: gap
/// detection, interpolation, batch and rate statistics, and the formatted
/// output they produce. The ring consumer below and the pipe/socket
/// consumers of `forkring bench stream` run this same code.
#[derive(Debug)]
pub(crate) struct Analyzer {
    settings: StreamSettings,
    st: ConsumerState,
    /// Formatted output not yet written.
    pending: Vec<u8>,
    fill: Vec<f32>,
    cur: Vec<f32>,
    /// What the export writer is still to be given (with `--export`).
    tap: Option<Tap>,
}

/// Vectors and batch records in the order the analytics produced them,
/// for the export writer.
#[derive(Debug, Default)]
struct Tap {
    events: Vec<TapEvent>,
    /// Values of the vectors, `dim` per event.
    values: Vec<f32>,
}

#[derive(Debug)]
enum TapEvent {
    Vector {
        seq: u64,
        batch: u64,
        filled: bool,
    },
    /// The record as a JSON object (`stream.jsonl`'s line without its
    /// newline).
    Batch {
        batch: u64,
        json: Vec<u8>,
    },
}

impl Tap {
    /// Hands everything to `w`, in order, and empties the tap.
    fn drain_into(&mut self, w: &mut ExportWriter<'_>, dim: usize) -> Result<(), WriterError> {
        let mut at = 0;
        for e in self.events.drain(..) {
            match e {
                TapEvent::Vector { seq, batch, filled } => {
                    w.vector(seq, batch, &self.values[at..at + dim], filled)?;
                    at += dim;
                }
                TapEvent::Batch { batch, json } => w.batch_record(batch, &json)?,
            }
        }
        self.values.clear();
        Ok(())
    }
}

impl Analyzer {
    /// Analytics continuing from `st`.
    pub(crate) fn new(settings: StreamSettings, st: ConsumerState) -> Self {
        let dim = settings.dim as usize;
        Analyzer {
            settings,
            st,
            pending: Vec::with_capacity(1 << 16),
            fill: vec![0.0; dim],
            cur: vec![0.0; dim],
            tap: None,
        }
    }

    /// Keeps what the export writer needs from now on.
    fn tap(&mut self) {
        self.tap = Some(Tap::default());
    }

    /// The state.
    pub(crate) fn state(&self) -> &ConsumerState {
        &self.st
    }
    /// The state, for the caller's own bookkeeping (ring position, file
    /// offset).
    pub(crate) fn state_mut(&mut self) -> &mut ConsumerState {
        &mut self.st
    }
    /// Takes the output formatted so far.
    pub(crate) fn take_output(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.pending, Vec::with_capacity(1 << 16))
    }
    /// Whether output is waiting to be written.
    pub(crate) fn has_output(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Handles one slot as stored in the ring or sent over a pipe: sequence
    /// number, send time, scheduled time (u64 LE each), then `dim` f32 LE
    /// values.
    #[inline]
    pub(crate) fn on_slot(&mut self, slot: &[u8]) {
        let word = |i: usize| u64::from_le_bytes(slot[i..i + 8].try_into().expect("slot header"));
        let (seq, sent, due) = (word(0), word(8), word(16));
        for (d, c) in self.cur.iter_mut().zip(slot[SLOT_HEADER..].chunks_exact(4)) {
            *d = f32::from_le_bytes(c.try_into().expect("4 bytes"));
        }
        self.on_vector(seq, sent, due);
    }

    /// Sequence number of a slot.
    #[inline]
    pub(crate) fn slot_seq(slot: &[u8]) -> u64 {
        u64::from_le_bytes(slot[..8].try_into().expect("slot header"))
    }

    /// Updates the state with vector `seq` (in `self.cur`), sent at `sent`
    /// and scheduled for `due` (0: no schedule).
    fn on_vector(&mut self, seq: u64, sent: u64, due: u64) {
        let st = &mut self.st;
        if seq < st.expected {
            st.duplicates += 1;
            return;
        }
        if seq > st.expected {
            st.gaps += 1;
            for missing in st.expected..seq {
                if self.st.has_last {
                    interpolate(
                        self.st.last_seq,
                        &self.st.last,
                        seq,
                        &self.cur,
                        missing,
                        &mut self.fill,
                    );
                } else {
                    // No vector before the gap: hold the first one constant.
                    self.fill.copy_from_slice(&self.cur);
                }
                let v = std::mem::take(&mut self.fill);
                self.push(missing, &v, true);
                self.fill = v;
            }
        }
        // Into the rate window first, so the batch this vector closes
        // counts it.
        self.st.add_rate_sample(sent, due);
        let v = std::mem::take(&mut self.cur);
        self.push(seq, &v, false);
        self.st.has_last = true;
        self.st.last_seq = seq;
        self.st.last.copy_from_slice(&v);
        self.cur = v;
    }

    /// Adds vector `seq` to the open batch and closes the batch when full.
    fn push(&mut self, seq: u64, v: &[f32], filled: bool) {
        let f = self.settings.format;
        if self.st.batch_len == 0 {
            output::batch_start(f, &mut self.pending, self.st.batches, seq, v.len());
        }
        output::row(f, &mut self.pending, seq, v, filled);
        if let Some(t) = &mut self.tap {
            t.events.push(TapEvent::Vector {
                seq,
                batch: self.st.batches,
                filled,
            });
            t.values.extend_from_slice(v);
        }
        self.st.add_to_batch(seq, v, filled);
        self.st.expected = seq + 1;
        if filled {
            self.st.filled += 1;
        } else {
            self.st.received += 1;
        }
        if self.st.batch_len >= self.settings.batch {
            self.close_batch();
        }
    }

    fn close_batch(&mut self) {
        let (mean, std) = self.st.batch_mean_std();
        let filled_seqs = self.st.batch_filled_ranges();
        let sent_ns = self.st.has_last.then_some(self.st.last_ts);
        let r = BatchRecord {
            schema_version: output::JSONL_SCHEMA_VERSION,
            batch: self.st.batches,
            first_seq: self.st.batch_first,
            last_seq: self.st.expected - 1,
            received: self.st.batch_len - self.st.batch_filled,
            filled: self.st.batch_filled,
            filled_seqs: &filled_seqs,
            sent_ns,
            time_utc: sent_ns.map(crate::clock::monotonic_to_utc),
            mean: &mean,
            std: &std,
            window: self.st.window_stats().into(),
        };
        let at = self.pending.len();
        output::batch_end(self.settings.format, &mut self.pending, &r);
        if let Some(t) = &mut self.tap {
            // The line just written, when it is JSON; else the record as
            // JSON for the export alone.
            let json = match self.settings.format {
                StreamFormat::Jsonl => self.pending[at..].trim_ascii_end().to_vec(),
                StreamFormat::Text => serde_json::to_vec(&r).expect("a batch record is JSON"),
            };
            t.events.push(TapEvent::Batch {
                batch: r.batch,
                json,
            });
        }
        self.st.batches += 1;
        self.st.batch_len = 0;
        self.st.batch_filled = 0;
    }

    /// Ends the stream at `produced` sequence numbers: fills the numbers
    /// dropped at the very end (holding the last vector) and closes the last
    /// partial batch. Marks the state finished.
    pub(crate) fn finish_at(&mut self, produced: u64) {
        if produced > self.st.expected {
            self.st.gaps += 1;
            for missing in self.st.expected..produced {
                let mut v = std::mem::take(&mut self.fill);
                if self.st.has_last {
                    v.copy_from_slice(&self.st.last);
                } else {
                    v.iter_mut().for_each(|x| *x = 0.0);
                }
                self.push(missing, &v, true);
                self.fill = v;
            }
        }
        if self.st.batch_len > 0 {
            self.close_batch();
        }
        self.st.finished = true;
    }

    /// Refreshes the published rate figures (before a commit).
    pub(crate) fn update_rates(&mut self) {
        self.st.published = self.st.window_stats();
    }
}

/// The consumer's working state, attached to a run.
#[derive(Debug)]
pub(crate) struct Consumer<'a> {
    segs: &'a StreamSegments,
    record: CommittedBytes<'a>,
    ring: RingConsumer<'a>,
    an: Analyzer,
    words: Vec<u64>,
    file: File,
    path: PathBuf,
    /// Producer's next sequence number as last read: every slot's sequence
    /// number must be below it.
    bound: u64,
    /// The slot being handled, copied out of the ring.
    slot: Vec<u64>,
    /// The export ring's writer (with `--export`, in the consumer role).
    export: Option<ExportWriter<'a>>,
}

impl<'a> Consumer<'a> {
    /// Attaches to the run: loads the committed state, truncates the
    /// working output file `dir/.stream.partial` back to the committed
    /// length, and resumes the ring at the committed position.
    pub(crate) fn attach(segs: &'a StreamSegments, dir: &Path) -> Result<Self, ConsumerError> {
        let s = segs.settings().clone();
        let record = segs.consumer_record()?;
        let mut words = vec![0u64; ConsumerState::words(s.dim, s.rate_window, s.batch)];
        record
            .load(&mut words)
            .map_err(|e| segs.corrupt(format!("field consumer state: {e}")))?;
        let st = ConsumerState::decode(&words, s.dim, s.rate_window, s.batch)?;
        let path = dir.join(output::PARTIAL_NAME);
        let lost = |path: &Path, detail: String| ConsumerError::Lost {
            path: path.display().to_string(),
            detail,
            committed: st.file_offset,
        };
        // Create the file only for a stream that has written nothing yet: a
        // missing file with committed records is data lost, not a new start.
        let mut file = match OpenOptions::new()
            .create(st.file_offset == 0)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(lost(&path, "is missing".into()));
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let len = file.metadata().map_err(io_err(&path))?.len();
        if len < st.file_offset {
            return Err(lost(
                &path,
                format!(
                    "is {len} bytes, shorter than committed: it was truncated or replaced behind forkring's back"
                ),
            ));
        }
        file.set_len(st.file_offset).map_err(io_err(&path))?;
        file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
        let ring = RingConsumer::resume_at(segs.ring_view()?, st.tail)?;
        Ok(Consumer {
            bound: producer_record(segs)?.next_seq,
            segs,
            record,
            ring,
            slot: vec![0; s.slot_size() as usize / 8],
            an: Analyzer::new(s, st),
            words,
            file,
            path,
            export: None,
        })
    }

    /// From now on, hands every vector and batch record to `w` before each
    /// commit.
    pub(crate) fn export_to(&mut self, w: ExportWriter<'a>) {
        self.an.tap();
        self.export = Some(w);
    }

    /// The state as last processed (committed after each chunk).
    pub(crate) fn state(&self) -> &ConsumerState {
        self.an.state()
    }
    /// The ring side, for waiting.
    pub(crate) fn ring(&mut self) -> &mut RingConsumer<'a> {
        &mut self.ring
    }

    fn producer(&self) -> Result<ProducerRecord, ConsumerError> {
        producer_record(self.segs)
    }

    /// Handles up to `max` available slots, then writes, commits and
    /// releases them. Returns how many were handled.
    pub(crate) fn process_available(&mut self, max: u32) -> Result<u32, ConsumerError> {
        let n = self.ring.available(1)?.min(max);
        if n == 0 {
            return Ok(0);
        }
        for k in 0..n {
            self.ring.copy_slot(k, &mut self.slot);
            let slot: &[u8] = bytemuck::cast_slice(&self.slot);
            let stored =
                u64::from_le_bytes(slot[SLOT_SUM..SLOT_HEADER].try_into().expect("slot header"));
            let computed = slot_sum(slot);
            if stored != computed {
                return Err(ConsumerError::SlotChecksum {
                    position: self.ring.tail().wrapping_add(k),
                    stored,
                    computed,
                });
            }
            let seq = Analyzer::slot_seq(slot);
            if seq >= self.bound {
                // Untrusted: the producer commits its next sequence number
                // before publishing a slot, so a larger one is corrupt.
                let bound = self.producer()?.next_seq;
                self.bound = bound;
                if seq >= bound {
                    return Err(ConsumerError::Sequence { seq, bound });
                }
            }
            if seq > self.an.state().expected {
                self.check_gap(seq, self.producer()?)?;
            }
            self.an.on_slot(bytemuck::cast_slice(&self.slot));
        }
        let st = self.an.state_mut();
        st.tail = st.tail.wrapping_add(n);
        self.commit()?;
        self.ring.release(n);
        Ok(n)
    }

    /// A gap up to `seq` (exclusive) can only consist of dropouts the
    /// producer counted: it commits its drop count before publishing the
    /// slot after them. A longer gap means corrupt shared memory, and
    /// filling it could take unbounded time and memory.
    fn check_gap(&self, seq: u64, p: ProducerRecord) -> Result<(), ConsumerError> {
        let st = self.an.state();
        let gap = seq.saturating_sub(st.expected);
        let unfilled = p.dropped.saturating_sub(st.filled);
        if gap > unfilled {
            return Err(ConsumerError::Gap {
                seq,
                last: st.expected as i64 - 1,
                gap,
                unfilled,
            });
        }
        Ok(())
    }

    /// Hands the tapped vectors and records to the export writer and
    /// commits it (before the consumer's own commit).
    fn export(&mut self) -> Result<(), ConsumerError> {
        if let (Some(w), Some(t)) = (&mut self.export, &mut self.an.tap) {
            t.drain_into(w, self.an.settings.dim as usize)?;
            if self.an.st.finished {
                w.close()?;
            } else {
                w.commit()?;
            }
        }
        Ok(())
    }

    /// Writes pending output, then commits the state (the commit point).
    fn commit(&mut self) -> Result<(), ConsumerError> {
        self.export()?;
        if self.an.has_output() {
            let out = self.an.take_output();
            self.file.write_all(&out).map_err(io_err(&self.path))?;
            self.an.state_mut().file_offset += out.len() as u64;
        }
        self.an.update_rates();
        self.an.state().encode(&mut self.words);
        self.record.commit(&self.words);
        Ok(())
    }

    /// If the producer has finished and everything it published is read:
    /// ends the stream (see [`Analyzer::finish_at`]) and commits it.
    /// Returns whether the stream is finished.
    pub(crate) fn finish_if_done(&mut self) -> Result<bool, ConsumerError> {
        if self.an.state().finished {
            return Ok(true);
        }
        let p = self.producer()?;
        if p.finished != 1 || self.ring.tail() != p.head || self.ring.available(1)? != 0 {
            return Ok(false);
        }
        self.finish_at(p)?;
        Ok(true)
    }

    /// Ends the stream at `p.next_seq` sequence numbers and commits; also
    /// used by the handoff when the consumer died.
    pub(crate) fn finish_at(&mut self, p: ProducerRecord) -> Result<(), ConsumerError> {
        self.check_gap(p.next_seq, p)?;
        self.an.finish_at(p.next_seq);
        self.commit()?;
        self.file.sync_all().map_err(io_err(&self.path))?;
        Ok(())
    }

    /// Path of the working output file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The final output name for the run's format.
pub(crate) fn final_name(f: StreamFormat) -> &'static str {
    output::file_name(f)
}

/// Slots handled per commit.
pub(crate) const CHUNK: u32 = 256;
/// How often a waiting consumer re-checks its supervisor.
const LIVENESS_SLICE: Duration = Duration::from_millis(200);

/// One log line with the consumer's live figures.
pub(crate) fn rate_line(st: &ConsumerState) -> String {
    use crate::units::thousands;
    format!(
        "{}, {} received, {} filled, {} gaps, {} batches",
        output::window_text(&st.window_stats().into()),
        thousands(st.received),
        thousands(st.filled),
        thousands(st.gaps),
        thousands(st.batches)
    )
}

/// `None` if the run is stopping while the export ring was full
/// (`--export-policy block`): nothing of the chunk was committed, and a
/// resumed run or the handoff takes it from the committed state.
fn unless_stopped<T>(r: Result<T, ConsumerError>) -> Result<Option<T>, JobError> {
    match r {
        Err(ConsumerError::Export(WriterError::Stopped)) => Ok(None),
        r => Ok(Some(r?)),
    }
}

/// Runs the consumer until the producer has finished and the ring is
/// drained.
pub(crate) fn run(ctx: &RoleCtx<'_>) -> Result<(), JobError> {
    let s: &StreamSettings = ctx.settings()?;
    let segs = StreamSegments::open(ctx.run, s, Access::ReadWrite)?;
    let mut c = Consumer::attach(&segs, ctx.out)?;
    if let (Some(x), Some(seg)) = (&s.export, segs.export()) {
        let live: super::export::Liveness<'_> = Box::new(|| {
            if ctx.stop().is_set() {
                return Err(WriterError::Stopped);
            }
            Ok(ctx.require_supervisor()?)
        });
        c.export_to(ExportWriter::attach(seg, x, ctx.run, s.dim, s.batch, live)?);
    }
    segs.control()?.stats.consumer_attaches.add(1);
    ctx.attached();

    // Under the supervisor, it prints the live figures; by hand, we do.
    let by_hand = !ctx.supervised();
    let policy = if s.rate == Rate::Max {
        SpinPolicy::handoff()
    } else {
        SpinPolicy::SLEEP
    };
    let interval = Duration::from_secs_f64(s.rate_interval);
    let mut next_log = Instant::now() + interval;
    let capacity = c.ring().view().capacity();
    loop {
        let Some(n) = unless_stopped(c.process_available(CHUNK))? else {
            return Ok(());
        };
        if by_hand && Instant::now() >= next_log {
            println!("forkring consumer: {}", rate_line(c.state()));
            next_log += interval;
        }
        if n > 0 {
            continue;
        }
        let Some(done) = unless_stopped(c.finish_if_done())? else {
            return Ok(());
        };
        if done {
            segs.control()?
                .stats
                .consumer_cpu_ns
                .add(crate::clock::process_cpu_ns());
            return Ok(());
        }
        if ctx.stop().is_set() && !ctx.peer_alive("producer", 0) {
            // Stopping and the producer is gone for good: the ring is
            // drained; the handoff completes the stream from our state.
            return Ok(());
        }
        // Ask to be woken once the open batch could be completed (or after a
        // slice), so a slow stream does not wake us for every vector.
        let want = s
            .batch
            .saturating_sub(c.state().batch_len)
            .clamp(1, (capacity / 2).max(1));
        let mut timeout = LIVENESS_SLICE;
        if by_hand {
            timeout = timeout.min(next_log.saturating_duration_since(Instant::now()));
        }
        if c.ring().wait_available(want, policy, timeout)?.is_err() {
            ctx.require_supervisor()?;
        }
    }
}
