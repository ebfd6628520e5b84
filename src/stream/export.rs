//! Export to NATS JetStream (`--export nats://HOST:PORT`): the consumer
//! hands every vector it saw (gaps filled in) and every batch record to an
//! export ring; the `exporter` role publishes them.
//!
//! Why a second ring rather than a second reader of the producer's ring:
//! the exporter must send what the consumer saw, filled-in vectors and
//! batch records included, which only the consumer knows. So the chain is
//! producer → ring → consumer → export ring → exporter, each ring with one
//! writer and one reader, neither of which can see a torn or skipped slot.
//! With `--export-policy block` a full export ring holds the consumer, whose
//! full ring holds the producer: the producer is bounded by the slowest.
//! With `drop` the consumer never waits on the export ring: a message that
//! finds it full is counted as dropped, exactly.
//!
//! Segment `forkring.NAME.export`: [`ExportControl`] (parameters, the
//! closed flag, the writer's and the exporter's committed records,
//! statistics), then a ring whose slots each hold one message: `u32` bytes
//! used, `u16` kind (1 vectors, 2 batch record), `u16` id length, the
//! `Nats-Msg-Id`, then the payload (see `wire.rs` for vectors; a batch
//! record is JSON).
//!
//! Crash safety, two commit points:
//! - The writer (consumer side): messages are written beyond the ring's
//!   head, then [`WriterRecord`] is committed (head, the next sequence
//!   number and batch to export, drop counts), then the head is published.
//!   The consumer commits its own state only after this, so a consumer
//!   killed anywhere replays vectors the writer record already covers: the
//!   writer skips them (`seq < next_seq`). Nothing is exported twice, no
//!   drop is counted twice.
//! - The exporter: a message is published with `Nats-Msg-Id`; once
//!   JetStream acknowledges it, [`ExporterRecord`] (tail and counts) is
//!   committed, then the ring's tail is released. An exporter killed
//!   anywhere republishes from the committed tail: at most the messages
//!   that were in flight, which the server drops as duplicates within its
//!   deduplication window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::job::{JobError, RoleCtx};
use crate::nats::names::{self, Endpoint};
use crate::nats::session::{self, Connect, LinkState, Session, StreamSpec};
use crate::shm::cell::ShmSafe;
use crate::shm::header::HEADER_SIZE;
use crate::shm::layout::Fingerprint;
use crate::shm::ring::{Ring, RingConsumer, RingProducer, RingView};
use crate::shm::segment::{Access, Segment, SegmentSpec};
use crate::shm::{
    CachePadded, Committed, Flag, Param32, RunName, SegmentsError, SpinPolicy, Stat64,
};

use super::wire;

/// Largest `--dim` that can be exported: a batch record (mean and std of
/// every component, as JSON) must fit one NATS message.
pub(crate) const MAX_DIM: u32 = 4096;
/// Bytes of vector data per message at most (well below the server's
/// default `max_payload` of 1 MiB).
const DATA_MAX: usize = 512 * 1024;
/// Most vectors per message.
const MAX_VECTORS: u32 = 4096;
/// Bytes of a slot's prefix (used, kind, id length).
const SLOT_PREFIX: usize = 8;
/// Longest message id: a run name (32) and a number.
const ID_MAX: usize = 64;
/// Kinds of slot.
const KIND_VECTORS: u16 = 1;
const KIND_STATS: u16 = 2;
/// Messages the exporter keeps in flight.
const WINDOW: usize = 256;
/// Bounds of `--export-buffer` (messages, a power of two).
pub(crate) const BUFFER: (u32, u32) = (4, 4096);
/// With `drop`, how long a closed stream waits for an unreachable server
/// before the messages still buffered are counted as dropped.
pub(crate) const ABANDON_AFTER: Duration = Duration::from_secs(10);
/// How often a waiting side re-checks its stop flag and supervisor.
const LIVENESS: Duration = Duration::from_millis(200);

/// What happens when the server is unreachable or slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum ExportPolicy {
    /// Lossless: a full export buffer holds the consumer, then the
    /// producer.
    Block,
    /// The stream runs at full speed; what does not fit the buffer is
    /// counted as dropped.
    Drop,
}

impl ExportPolicy {
    fn name(self) -> &'static str {
        match self {
            ExportPolicy::Block => "block",
            ExportPolicy::Drop => "drop",
        }
    }
}

/// The export's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportSettings {
    /// The server.
    pub(crate) url: Endpoint,
    /// Subject of the vectors; batch records go to `SUBJECT.stats`.
    pub(crate) subject: String,
    /// The JetStream stream (found by subject, or created).
    pub(crate) stream: String,
    /// Whether the user named it.
    pub(crate) stream_named: bool,
    /// Block or drop.
    pub(crate) policy: ExportPolicy,
    /// Messages the export ring holds.
    pub(crate) buffer: u32,
    /// Seconds to connect at start-up.
    pub(crate) connect_timeout: f64,
}

const HEADING: &str = "Stream: export to NATS JetStream";

// (clap: no doc comment, which would become the help of `run`)
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ExportOpts {
    /// Publish every vector and batch record to NATS JetStream on this
    /// server (adds the `exporter` role), e.g. nats://127.0.0.1:4222
    #[arg(long, value_name = "URL", help_heading = HEADING)]
    pub(crate) export: Option<String>,
    /// Subject of the vectors; the batch records go to SUBJECT.stats
    /// [default: forkring.vectors]
    #[arg(long, value_name = "SUBJECT", help_heading = HEADING)]
    pub(crate) export_subject: Option<String>,
    /// JetStream stream to publish to [default: the stream that captures
    /// the subject, else one created as the subject in upper case]
    #[arg(long, value_name = "NAME", help_heading = HEADING)]
    pub(crate) export_stream: Option<String>,
    /// When the server is unreachable or slow: block (lossless: the stream
    /// waits) or drop (the stream runs on; what is not exported is
    /// counted) [default: block]
    #[arg(long, value_name = "POLICY", help_heading = HEADING)]
    pub(crate) export_policy: Option<ExportPolicy>,
    /// Messages buffered in shared memory for the exporter, a power of two
    /// from 4 to 4,096 [default: 64]
    #[arg(value_parser = crate::units::whole_u32::<{ BUFFER.0 }, { BUFFER.1 }>, long, value_name = "MESSAGES", help_heading = HEADING)]
    pub(crate) export_buffer: Option<u32>,
}

/// Ids of the export options, for "given without --jobs stream".
pub(crate) const OPTION_IDS: [&str; 5] = [
    "export",
    "export_subject",
    "export_stream",
    "export_policy",
    "export_buffer",
];

impl ExportOpts {
    /// The settings if `--export` is given; every value checked.
    pub(crate) fn settings(
        &self,
        connect_timeout: f64,
        dim: u32,
    ) -> Result<Option<ExportSettings>, JobError> {
        let Some(url) = &self.export else {
            let stray = [
                ("--export-subject", self.export_subject.is_some()),
                ("--export-stream", self.export_stream.is_some()),
                ("--export-policy", self.export_policy.is_some()),
                ("--export-buffer", self.export_buffer.is_some()),
            ];
            if let Some((opt, _)) = stray.iter().find(|(_, given)| *given) {
                return Err(JobError::Usage(format!(
                    "{opt} applies to the export; give --export nats://HOST:PORT too"
                )));
            }
            return Ok(None);
        };
        let usage = JobError::Usage;
        let url = Endpoint::parse("--export", url).map_err(usage)?;
        let subject = names::subject(
            "--export-subject",
            self.export_subject.as_deref().unwrap_or("forkring.vectors"),
        )
        .map_err(usage)?;
        let (stream, stream_named) = match &self.export_stream {
            Some(n) => (names::name("--export-stream", n).map_err(usage)?, true),
            None => (names::stream_for(&subject), false),
        };
        let s = ExportSettings {
            url,
            subject,
            stream,
            stream_named,
            policy: self.export_policy.unwrap_or(ExportPolicy::Block),
            buffer: self.export_buffer.unwrap_or(64),
            connect_timeout,
        };
        s.validate(dim).map_err(usage)?;
        Ok(Some(s))
    }
}

/// The start-up check, before any segment exists: the server answers
/// within `--connect-timeout`, runs JetStream, and the stream exists or
/// can be created.
pub(crate) fn preflight(x: &ExportSettings) -> Result<(), JobError> {
    let timeout = Duration::from_secs_f64(x.connect_timeout);
    session::preflight(&x.url, timeout, "exporter", &[x.stream_spec()])?;
    Ok(())
}

impl ExportSettings {
    /// Checks every value (settings decoded from a segment are untrusted).
    pub(crate) fn validate(&self, dim: u32) -> Result<(), String> {
        Endpoint::parse("--export", self.url.as_str())?;
        names::subject("--export-subject", &self.subject)?;
        names::name("--export-stream", &self.stream)?;
        crate::units::check_connect_timeout(self.connect_timeout)?;
        let (lo, hi) = BUFFER;
        if !self.buffer.is_power_of_two() || !(lo..=hi).contains(&self.buffer) {
            return Err(format!(
                "--export-buffer {} is not a power of two from {} to {}",
                self.buffer,
                crate::units::thousands(lo.into()),
                crate::units::thousands(hi.into())
            ));
        }
        if dim > MAX_DIM {
            return Err(format!(
                "--export takes --dim up to {MAX_DIM} (a batch record of {dim} components would not fit one NATS message); lower --dim or drop --export"
            ));
        }
        Ok(())
    }

    /// Subject of the batch records.
    pub(crate) fn stats_subject(&self) -> String {
        format!("{}.stats", self.subject)
    }

    fn stream_spec(&self) -> StreamSpec {
        StreamSpec {
            name: self.stream.clone(),
            named: self.stream_named,
            subjects: vec![self.subject.clone(), self.stats_subject()],
            work_queue: false,
            duplicate_window: Duration::ZERO,
            option: "--export-stream",
        }
    }

    /// For `summary.json`.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "url": self.url.as_str(),
            "subject": self.subject,
            "stats_subject": self.stats_subject(),
            "stream": self.stream,
            "policy": self.policy.name(),
            "buffer": self.buffer,
            "connect_timeout_s": self.connect_timeout,
        })
    }
}

/// Vectors per message for `dim` and `batch`.
pub(crate) fn vectors_per_message(dim: u32, batch: u32) -> u32 {
    let by_size = (DATA_MAX / (4 * dim as usize)).max(1) as u32;
    by_size.min(batch).min(MAX_VECTORS)
}

/// Largest batch record we send, bytes: mean and std of every component
/// (a JSON number takes at most 24 characters and a comma), the rest of
/// the record, and room for the filled-in ranges; longer ranges are left
/// out of the exported record (see [`ExportWriter::batch_record`]).
fn stats_max(dim: u32) -> usize {
    16 * 1024 + 2 * 26 * dim as usize
}

/// Bytes of one slot of the export ring.
fn slot_size(dim: u32, batch: u32) -> u32 {
    let data = wire::message_len(32, dim, vectors_per_message(dim, batch));
    let body = data.max(stats_max(dim));
    ((SLOT_PREFIX + ID_MAX + body).next_multiple_of(8)) as u32
}

/// Layout version of the export segment (2: committed records carry
/// checksums).
pub(crate) const VERSION: u32 = 2;
/// Part name.
pub(crate) const PART: &str = "export";

/// The writer's committed record (the consumer's side).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct WriterRecord {
    /// Ring position after the last committed message.
    pub head: u32,
    /// 1 once the stream has ended and its last message is committed.
    pub closed: u32,
    /// Next sequence number to export: every lower one was exported or
    /// dropped.
    pub next_seq: u64,
    /// Next batch whose record is to be exported.
    pub next_batch: u64,
    /// Messages handed to the exporter.
    pub messages: u64,
    /// Vectors in them.
    pub vectors: u64,
    /// Vectors dropped (`drop`: the buffer was full).
    pub dropped_vectors: u64,
    /// Messages dropped (vectors and batch records).
    pub dropped_messages: u64,
}

/// The exporter's committed record.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ExporterRecord {
    /// Ring position after the last acknowledged message.
    pub tail: u32,
    /// 1 once every message is acknowledged (or abandoned) and the stream
    /// is closed.
    pub finished: u32,
    /// Messages acknowledged by JetStream.
    pub messages: u64,
    /// Vectors in them.
    pub vectors: u64,
    /// Of the messages, those JetStream had already stored (a republish
    /// after an exporter restart or a lost acknowledgement).
    pub duplicates: u64,
    /// Messages given up at the end (`drop`, server unreachable).
    pub abandoned_messages: u64,
    /// Vectors in them.
    pub abandoned_vectors: u64,
}

#[repr(C)]
#[derive(Debug, Default)]
struct ExportParams {
    slots: Param32,
    slot_size: Param32,
    max_vectors: Param32,
    dim: Param32,
}

// SAFETY: repr(C) of Param32 cells.
unsafe impl ShmSafe for ExportParams {}

/// Display-only counters.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct ExportStats {
    /// Times the exporter attached.
    pub(crate) attaches: Stat64,
    /// Publishes that failed and were retried.
    pub(crate) retries: Stat64,
    /// The link: 0 not started, 1 connecting, 2 up, 3 down.
    pub(crate) link: Stat64,
}

// SAFETY: repr(C) of Stat64 cells.
unsafe impl ShmSafe for ExportStats {}

/// Fixed part of the export segment.
#[repr(C)]
pub struct ExportControl {
    params: CachePadded<ExportParams>,
    /// The writer's record.
    pub writer: CachePadded<Committed<WriterRecord>>,
    /// The exporter's record.
    pub exporter: CachePadded<Committed<ExporterRecord>>,
    /// Statistics.
    pub(crate) stats: CachePadded<ExportStats>,
    /// Raised with the writer's last commit (also recorded in it).
    pub(crate) closed: CachePadded<Flag>,
}

// SAFETY: repr(C); every field is ShmSafe.
unsafe impl ShmSafe for ExportControl {}

impl std::fmt::Debug for ExportControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportControl").finish_non_exhaustive()
    }
}

const CONTROL: usize = std::mem::size_of::<ExportControl>();
const RING_AT: usize = (HEADER_SIZE + CONTROL).div_ceil(128) * 128;

const EXPORT_FP: u64 = Fingerprint::new("export")
    .num(CONTROL)
    .num(std::mem::size_of::<WriterRecord>())
    .num(std::mem::size_of::<ExporterRecord>())
    .num(std::mem::offset_of!(ExportControl, exporter))
    .num(std::mem::offset_of!(ExportControl, closed))
    .num(std::mem::size_of::<Ring>())
    .num(RING_AT)
    .num(SLOT_PREFIX)
    .num(wire::VERSION as usize)
    .bytes(crate::shm::commit::CHECKSUM_LAYOUT)
    .finish();

/// The segment spec for these settings.
pub(crate) fn spec(x: &ExportSettings, dim: u32, batch: u32) -> SegmentSpec {
    SegmentSpec {
        part: PART,
        version: VERSION,
        fingerprint: EXPORT_FP,
        size: Some(RING_AT + Ring::bytes_for(x.buffer, slot_size(dim, batch)).unwrap_or(0)),
    }
}

/// The mapped export segment.
#[derive(Debug)]
pub(crate) struct ExportSegment {
    seg: Segment,
}

impl ExportSegment {
    /// Creates it for a new run.
    pub(crate) fn create(
        run: &RunName,
        x: &ExportSettings,
        dim: u32,
        batch: u32,
    ) -> Result<Self, SegmentsError> {
        let slot = slot_size(dim, batch);
        let seg = Segment::create(run, &spec(x, dim, batch), |seg| {
            let c: &ExportControl = seg.body().expect("sized by spec");
            c.params.slots.set(x.buffer);
            c.params.slot_size.set(slot);
            c.params.max_vectors.set(vectors_per_message(dim, batch));
            c.params.dim.set(dim);
            let r: &Ring = seg.view(RING_AT).expect("sized by spec");
            r.init(x.buffer, slot);
        })?;
        let me = ExportSegment { seg };
        if let Err(e) = me.validate(x, dim, batch) {
            let _ = crate::shm::segment::unlink(me.seg.name());
            return Err(e);
        }
        Ok(me)
    }

    /// Opens and validates it.
    pub(crate) fn open(
        run: &RunName,
        x: &ExportSettings,
        dim: u32,
        batch: u32,
        access: Access,
    ) -> Result<Self, SegmentsError> {
        let seg = Segment::open(run, &spec(x, dim, batch), access, Duration::from_secs(2))?;
        let me = ExportSegment { seg };
        me.validate(x, dim, batch)?;
        Ok(me)
    }

    fn validate(&self, x: &ExportSettings, dim: u32, batch: u32) -> Result<(), SegmentsError> {
        let c = self.control()?;
        let check = |f, found: u32, want: u32| {
            SegmentsError::check_param(&self.seg, f, found as u64, want as u64)
        };
        check("slots", c.params.slots.get(), x.buffer)?;
        check("slot_size", c.params.slot_size.get(), slot_size(dim, batch))?;
        check(
            "max_vectors",
            c.params.max_vectors.get(),
            vectors_per_message(dim, batch),
        )?;
        check("dim", c.params.dim.get(), dim)?;
        let r = self.ring_view()?;
        check("ring capacity", r.capacity(), x.buffer)?;
        check(
            "ring slot size",
            r.slot_size() as u32,
            slot_size(dim, batch),
        )?;
        Ok(())
    }

    /// The control block.
    pub(crate) fn control(&self) -> Result<&ExportControl, SegmentsError> {
        Ok(self.seg.body()?)
    }

    /// The ring.
    pub(crate) fn ring_view(&self) -> Result<RingView<'_>, SegmentsError> {
        Ok(RingView::new(&self.seg, RING_AT)?)
    }

    /// The segment's name.
    pub(crate) fn name(&self) -> &str {
        self.seg.name()
    }

    /// Wakes both sides.
    pub(crate) fn kick(&self) {
        if let Ok(v) = self.ring_view() {
            v.control().kick();
        }
        if let Ok(c) = self.control() {
            c.closed.kick();
        }
    }

    /// The export's figures for progress, `status` and `summary.json`:
    /// what the exporter has acknowledged, what was dropped, and what is
    /// still waiting, in vectors; `total` is every vector the consumer
    /// has seen (received and filled in).
    pub(crate) fn figures(&self, total: u64) -> Option<ExportFigures> {
        let c = self.control().ok()?;
        let w = c.writer.snapshot().ok()??;
        let e = c.exporter.snapshot().ok()??;
        let exported = e.vectors;
        // Untrusted counts: saturating, so a corrupt record shows odd
        // figures rather than an overflow.
        let dropped = w.dropped_vectors.saturating_add(e.abandoned_vectors);
        Some(ExportFigures {
            exported,
            dropped,
            pending: total.saturating_sub(exported.saturating_add(dropped)),
            messages: e.messages,
            duplicates: e.duplicates,
            retries: c.stats.retries.get(),
            attaches: c.stats.attaches.get(),
            connected: c.stats.link.get() == 2,
            finished: e.finished == 1,
        })
    }
}

/// See [`ExportSegment::figures`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExportFigures {
    /// Vectors JetStream acknowledged.
    pub(crate) exported: u64,
    /// Vectors not exported and never to be.
    pub(crate) dropped: u64,
    /// Vectors not exported yet.
    pub(crate) pending: u64,
    /// Messages acknowledged (vectors and batch records).
    pub(crate) messages: u64,
    /// Of which already stored (republished).
    pub(crate) duplicates: u64,
    /// Publishes retried.
    pub(crate) retries: u64,
    /// Times the exporter attached (1 + its restarts).
    pub(crate) attaches: u64,
    /// Whether the exporter is connected.
    pub(crate) connected: bool,
    /// Whether the exporter is done.
    pub(crate) finished: bool,
}

impl ExportFigures {
    /// For `summary.json`.
    pub(crate) fn to_json(self, x: &ExportSettings) -> Value {
        let mut v = x.to_json();
        v["exported_vectors"] = self.exported.into();
        v["dropped_vectors"] = self.dropped.into();
        v["pending_vectors"] = self.pending.into();
        v["messages"] = self.messages.into();
        v["duplicates"] = self.duplicates.into();
        v["retries"] = self.retries.into();
        v["exporter_attaches"] = self.attaches.into();
        v["finished"] = self.finished.into();
        v
    }
}

/// Why the writer stopped waiting for room.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriterError {
    /// The run is stopping: the rest is left to a resumed run (or counted
    /// as pending by the handoff).
    #[error("the run is stopping")]
    Stopped,
    /// The supervisor is gone, or another failure of the wait.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The ring.
    #[error(transparent)]
    Ring(#[from] crate::shm::RingError),
}

/// What the writer calls while it waits for room: `Err` ends the wait.
pub(crate) type Liveness<'a> = Box<dyn Fn() -> Result<(), WriterError> + 'a>;

/// The consumer's side of the export ring.
pub(crate) struct ExportWriter<'a> {
    ring: RingProducer<'a>,
    ctl: &'a ExportControl,
    rec: WriterRecord,
    policy: ExportPolicy,
    run: String,
    dim: u32,
    max_vectors: u32,
    /// Message being built.
    cur: Option<Cur>,
    msg: wire::Builder,
    /// Slots written beyond the head, not yet published.
    staged: u32,
    /// A batch record being built (reused).
    json: Vec<u8>,
    /// Next sequence number not yet handed to the writer (in the message
    /// being built or beyond): ≥ `rec.next_seq`, which counts only what is
    /// staged, so a commit while the message is built never covers it.
    seen_seq: u64,
    /// Called while waiting for room: an error ends the wait.
    liveness: Liveness<'a>,
}

impl std::fmt::Debug for ExportWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportWriter")
            .field("rec", &self.rec)
            .finish_non_exhaustive()
    }
}

impl<'a> ExportWriter<'a> {
    /// Attaches at the committed head.
    pub(crate) fn attach(
        seg: &'a ExportSegment,
        x: &ExportSettings,
        run: &RunName,
        dim: u32,
        batch: u32,
        liveness: Liveness<'a>,
    ) -> Result<Self, JobError> {
        let ctl = seg.control()?;
        let (_, rec) = ctl
            .writer
            .load()
            .map_err(|e| SegmentsError::corrupt(seg.name(), format!("field writer: {e}")))?;
        let ring = RingProducer::resume_at(seg.ring_view()?, rec.head)?;
        Ok(ExportWriter {
            ring,
            ctl,
            rec,
            policy: x.policy,
            run: run.as_str().to_string(),
            dim,
            max_vectors: vectors_per_message(dim, batch),
            cur: None,
            msg: wire::Builder::default(),
            staged: 0,
            json: Vec::new(),
            seen_seq: rec.next_seq,
            liveness,
        })
    }

    /// Adds vector `seq` of batch `batch` (a replay of one already
    /// exported or dropped is skipped).
    pub(crate) fn vector(
        &mut self,
        seq: u64,
        batch: u64,
        values: &[f32],
        filled: bool,
    ) -> Result<(), WriterError> {
        if seq < self.seen_seq {
            return Ok(());
        }
        if let Some(c) = self.cur
            && (c.batch != batch || c.first + c.n != seq || c.n == self.max_vectors as u64)
        {
            self.flush()?;
        }
        let c = match &mut self.cur {
            Some(c) => c,
            None => {
                // `drop` and no room now: the message is dropped whole, so
                // its vectors are only counted, not copied (the cost of a
                // slow server to the stream stays small).
                let dropping = self.policy == ExportPolicy::Drop
                    && self.ring.free(self.staged + 1)? < self.staged + 1;
                if !dropping {
                    self.msg
                        .start(&self.run, self.dim, batch, seq, self.max_vectors);
                }
                self.cur.insert(Cur {
                    batch,
                    first: seq,
                    n: 0,
                    dropping,
                })
            }
        };
        c.n += 1;
        if !c.dropping {
            let pushed = self.msg.push(values, filled);
            debug_assert!(pushed, "a full message is flushed above");
        }
        self.seen_seq = seq + 1;
        Ok(())
    }

    /// Adds the record of batch `batch`, `record` being its JSON object as
    /// the consumer wrote it; `"run"` is added in front (a replay is
    /// skipped). The batch's vectors go first.
    pub(crate) fn batch_record(&mut self, batch: u64, record: &[u8]) -> Result<(), WriterError> {
        if batch < self.rec.next_batch {
            return Ok(());
        }
        self.flush()?;
        if self.policy == ExportPolicy::Drop && self.ring.free(self.staged + 1)? < self.staged + 1 {
            // Counted without being built (see `vector`).
            self.rec.dropped_messages += 1;
            Covers::Batch(batch + 1).apply(&mut self.rec);
            return Ok(());
        }
        debug_assert!(record.first() == Some(&b'{') && record.len() > 2);
        let mut json = std::mem::take(&mut self.json);
        json.clear();
        json.extend_from_slice(b"{\"run\":");
        serde_json::to_writer(&mut json, &self.run).expect("JSON to a Vec");
        json.push(b',');
        json.extend_from_slice(record.get(1..).unwrap_or_default());
        if json.len() > stats_max(self.dim) {
            // Very many filled-in ranges: leave them out rather than lose
            // the record.
            let mut v: Value = serde_json::from_slice(&json).expect("our own JSON");
            let n = v["filled_seqs"].as_array().map_or(0, Vec::len);
            v["filled_seqs"] = Value::Null;
            v["filled_seqs_omitted"] = n.into();
            json = serde_json::to_vec(&v).expect("JSON to a Vec");
        }
        let id = format!("{}:stats:{batch}", self.run);
        let r = self.stage(KIND_STATS, &id, &json, 0, Covers::Batch(batch + 1));
        self.json = json;
        r
    }

    /// Sends the message being built.
    fn flush(&mut self) -> Result<(), WriterError> {
        let Some(Cur {
            first, n, dropping, ..
        }) = self.cur.take()
        else {
            return Ok(());
        };
        if dropping {
            self.rec.dropped_messages += 1;
            self.rec.dropped_vectors += n;
            Covers::Seq(first + n).apply(&mut self.rec);
            return Ok(());
        }
        debug_assert_eq!(n, self.msg.count() as u64);
        let mut msg = std::mem::take(&mut self.msg);
        let id = format!("{}:{first}", self.run);
        let r = self.stage(KIND_VECTORS, &id, msg.finish(), n, Covers::Seq(first + n));
        self.msg = msg;
        r
    }

    /// Writes one message into the next free slot beyond the head; with
    /// `block`, first publishes what is staged and waits while the ring is
    /// full; with `drop`, counts it as dropped instead.
    /// The message counts in the record (`covers`) only once it is
    /// staged or dropped, never while the writer waits for room.
    fn stage(
        &mut self,
        kind: u16,
        id: &str,
        payload: &[u8],
        vectors: u64,
        covers: Covers,
    ) -> Result<(), WriterError> {
        let need = self.staged + 1;
        let mut free = self.ring.free(need)?;
        if free < need {
            match self.policy {
                ExportPolicy::Drop => {
                    self.rec.dropped_messages += 1;
                    self.rec.dropped_vectors += vectors;
                    covers.apply(&mut self.rec);
                    return Ok(());
                }
                ExportPolicy::Block => {
                    self.publish_staged();
                    loop {
                        match self.ring.wait_free(1, SpinPolicy::SLEEP, LIVENESS)? {
                            Ok(f) => {
                                free = f;
                                break;
                            }
                            Err(_) => (self.liveness)()?,
                        }
                    }
                }
            }
        }
        debug_assert!(free > self.staged);
        let slot = self.ring.slot_mut(self.staged);
        let used = SLOT_PREFIX + id.len() + payload.len();
        assert!(
            used <= slot.len() && id.len() <= ID_MAX,
            "export message fits its slot"
        );
        slot[0..4].copy_from_slice(&(used as u32).to_le_bytes());
        slot[4..6].copy_from_slice(&kind.to_le_bytes());
        slot[6..8].copy_from_slice(&(id.len() as u16).to_le_bytes());
        slot[8..8 + id.len()].copy_from_slice(id.as_bytes());
        slot[8 + id.len()..used].copy_from_slice(payload);
        self.staged += 1;
        self.rec.messages += 1;
        self.rec.vectors += vectors;
        covers.apply(&mut self.rec);
        Ok(())
    }

    /// Commits the record and publishes the staged messages.
    fn publish_staged(&mut self) {
        self.rec.head = self.rec.head.wrapping_add(self.staged);
        // Commit point, then publication (see the module docs).
        self.ctl.writer.commit(self.rec);
        self.ring.publish(self.staged);
        self.staged = 0;
    }

    /// Sends the message being built and commits (before the consumer
    /// commits its own state).
    pub(crate) fn commit(&mut self) -> Result<(), WriterError> {
        self.flush()?;
        self.publish_staged();
        Ok(())
    }

    /// The stream has ended: commits the last messages and closes.
    pub(crate) fn close(&mut self) -> Result<(), WriterError> {
        self.flush()?;
        self.rec.closed = 1;
        self.publish_staged();
        self.ctl.closed.set();
        self.ring.flush_wake();
        Ok(())
    }
}

/// The message being built by [`ExportWriter`].
#[derive(Debug, Clone, Copy)]
struct Cur {
    /// Its batch.
    batch: u64,
    /// Its first sequence number.
    first: u64,
    /// Vectors in it.
    n: u64,
    /// `drop` found the ring full when it began: it is only counted.
    dropping: bool,
}

/// What a message moves forward in [`WriterRecord`] once staged.
#[derive(Debug, Clone, Copy)]
enum Covers {
    /// Every sequence number below this one.
    Seq(u64),
    /// Every batch record below this one.
    Batch(u64),
}

impl Covers {
    fn apply(self, rec: &mut WriterRecord) {
        match self {
            Covers::Seq(n) => rec.next_seq = rec.next_seq.max(n),
            Covers::Batch(n) => rec.next_batch = rec.next_batch.max(n),
        }
    }
}

/// A message read back from the export ring.
struct Outgoing {
    kind: u16,
    id: String,
    payload: bytes::Bytes,
    vectors: u64,
}

/// A message published and not yet acknowledged.
struct Inflight {
    ack: async_nats::jetstream::context::PublishAckFuture,
    kind: u16,
    vectors: u64,
}

/// Runs the exporter of the run.
pub(crate) fn run(ctx: &RoleCtx<'_>) -> Result<(), JobError> {
    let s: &super::StreamSettings = ctx.settings()?;
    let Some(x) = &s.export else {
        return Err(JobError::Usage(format!(
            "run {} does not export its stream (it was started without --export)",
            ctx.run
        )));
    };
    let seg = ExportSegment::open(ctx.run, x, s.dim, s.batch, Access::ReadWrite)?;
    let ctl = seg.control()?;
    let (_, rec) = ctl
        .exporter
        .load()
        .map_err(|e| SegmentsError::corrupt(seg.name(), format!("field exporter: {e}")))?;
    let ring = RingConsumer::resume_at(seg.ring_view()?, rec.tail)?;
    ctl.stats.attaches.add(1);
    ctx.attached();
    if rec.finished == 1 {
        return Ok(());
    }
    if x.policy == ExportPolicy::Drop {
        // `drop` promises the stream its full speed: on a host whose cores
        // the stream keeps busy, the exporter gets what is left over (and
        // what it cannot send is counted as dropped), not an equal share.
        // SAFETY: setpriority(PRIO_PROCESS, 0, n) takes integers only and
        // changes only this process's nice value; failure leaves it as it
        // was, which is harmless.
        let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, DROP_NICE) };
    }
    let session = Session::connect(&x.url, Connect::Retry, "exporter", ACK_TIMEOUT)?;
    let mut ex = Exporter {
        ctx,
        x,
        ctl,
        segment: seg.name().to_string(),
        max_vectors: vectors_per_message(s.dim, s.batch) as u64,
        ring,
        rec,
        session: &session,
        inflight: VecDeque::new(),
        buf: Vec::new(),
        link: LinkState::Connecting,
        last_ack: Instant::now(),
    };
    session.block_on(ex.run())
}

/// The exporter's nice value with `--export-policy drop`.
const DROP_NICE: libc::c_int = 10;

/// How long the exporter waits for an acknowledgement before it publishes
/// again (with the same ids).
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed publish.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

struct Exporter<'a, 'c> {
    ctx: &'a RoleCtx<'c>,
    x: &'a ExportSettings,
    ctl: &'a ExportControl,
    segment: String,
    max_vectors: u64,
    ring: RingConsumer<'a>,
    rec: ExporterRecord,
    session: &'a Session,
    inflight: VecDeque<Inflight>,
    buf: Vec<u8>,
    link: LinkState,
    last_ack: Instant,
}

impl Exporter<'_, '_> {
    async fn run(&mut self) -> Result<(), JobError> {
        let ctx = self.ctx;
        let keep_going = || !ctx.stop().is_set() && ctx.supervisor_alive();
        if session::ensure_streams_retrying(self.session, &[self.x.stream_spec()], &keep_going)
            .await?
            .is_none()
        {
            return Ok(());
        }
        let mut idle = Duration::from_millis(1);
        let mut next_check = Instant::now() + LIVENESS;
        loop {
            self.report_link();
            if self.ctx.stop().is_set() {
                // Stopping: what is not acknowledged stays in the ring for
                // a resumed run (or counts as pending in the handoff).
                return Ok(());
            }
            if Instant::now() >= next_check {
                self.ctx.require_supervisor()?;
                next_check = Instant::now() + LIVENESS;
            }
            let avail = self.ring.available(WINDOW as u32)? as usize;
            while self.inflight.len() < avail.min(WINDOW) {
                let m = self.read(self.inflight.len() as u32)?;
                let subject = if m.kind == KIND_VECTORS {
                    self.x.subject.clone()
                } else {
                    self.x.stats_subject()
                };
                let msg = async_nats::jetstream::message::PublishMessage::build()
                    .payload(m.payload)
                    .message_id(m.id);
                match self.session.js().send_publish(subject, msg).await {
                    Ok(ack) => self.inflight.push_back(Inflight {
                        ack,
                        kind: m.kind,
                        vectors: m.vectors,
                    }),
                    Err(_) => {
                        self.failed().await;
                        break;
                    }
                }
            }
            if let Some(f) = self.inflight.pop_front() {
                match f.ack.await {
                    Ok(ack) => {
                        self.rec.tail = self.rec.tail.wrapping_add(1);
                        self.rec.messages += 1;
                        self.rec.vectors += f.vectors;
                        self.rec.duplicates += ack.duplicate as u64;
                        // Commit point, then release (see the module docs).
                        self.ctl.exporter.commit(self.rec);
                        self.ring.release(1);
                        self.last_ack = Instant::now();
                        debug_assert!(f.kind == KIND_VECTORS || f.vectors == 0);
                    }
                    Err(_) => self.failed().await,
                }
                idle = Duration::from_millis(1);
                continue;
            }
            if self.ctl.closed.is_set() && self.ring.available(1)? == 0 {
                self.rec.finished = 1;
                self.ctl.exporter.commit(self.rec);
                return Ok(());
            }
            if self.ctl.closed.is_set()
                && self.x.policy == ExportPolicy::Drop
                && self.last_ack.elapsed() >= ABANDON_AFTER
            {
                return self.abandon();
            }
            tokio::time::sleep(idle).await;
            idle = (idle * 2).min(Duration::from_millis(20));
        }
    }

    fn report_link(&mut self) {
        let now = self.session.state();
        if now != self.link {
            self.link = now;
            self.ctl.stats.link.set(now as u64 + 1);
        }
    }

    /// A publish failed: everything in flight is published again, with
    /// the same ids, after a pause.
    async fn failed(&mut self) {
        self.inflight.clear();
        self.ctl.stats.retries.add(1);
        tokio::time::sleep(RETRY_PAUSE).await;
    }

    /// `drop`, stream closed, server unreachable for [`ABANDON_AFTER`]: the
    /// messages still buffered count as dropped.
    fn abandon(&mut self) -> Result<(), JobError> {
        let n = self.ring.available(u32::MAX)?;
        let (mut msgs, mut vectors) = (0u64, 0u64);
        for k in 0..n {
            let m = self.read(k)?;
            msgs += 1;
            vectors += m.vectors;
        }
        eprintln!(
            "forkring exporter: {} unreachable for {} s after the stream ended; {} vectors in {} messages are not exported (--export-policy drop)",
            self.x.url,
            ABANDON_AFTER.as_secs(),
            crate::units::thousands(vectors),
            crate::units::thousands(msgs)
        );
        self.rec.tail = self.rec.tail.wrapping_add(n);
        self.rec.abandoned_messages += msgs;
        self.rec.abandoned_vectors += vectors;
        self.rec.finished = 1;
        self.ctl.exporter.commit(self.rec);
        self.ring.release(n);
        Ok(())
    }

    /// Reads the `k`-th unacknowledged message, checking every field
    /// (shared memory is untrusted).
    fn read(&mut self, k: u32) -> Result<Outgoing, JobError> {
        let slot = self.ring.view().slot_size();
        let bad =
            |what: String| JobError::corrupt(&self.segment, format!("export slot {k}: {what}"));
        let mut head = [0u8; SLOT_PREFIX];
        self.ring.copy_slot_bytes(k, &mut head);
        let used = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_le_bytes([head[4], head[5]]);
        let id_len = u16::from_le_bytes([head[6], head[7]]) as usize;
        if used > slot || id_len > ID_MAX || SLOT_PREFIX + id_len > used {
            return Err(bad(format!(
                "lengths out of range (used {used}, id {id_len}, slot {slot})"
            )));
        }
        self.buf.resize(used.next_multiple_of(8), 0);
        self.ring.copy_slot_bytes(k, &mut self.buf);
        let id = std::str::from_utf8(&self.buf[SLOT_PREFIX..SLOT_PREFIX + id_len])
            .map_err(|_| bad("the message id is not UTF-8".into()))?
            .to_string();
        let payload = &self.buf[SLOT_PREFIX + id_len..used];
        let vectors = match kind {
            KIND_VECTORS => {
                let v = wire::peek_count(payload).map_err(|e| bad(e.to_string()))? as u64;
                if v == 0 || v > self.max_vectors {
                    return Err(bad(format!("{v} vectors in one message")));
                }
                v
            }
            KIND_STATS => 0,
            other => return Err(bad(format!("unknown kind {other}"))),
        };
        Ok(Outgoing {
            kind,
            id,
            payload: bytes::Bytes::copy_from_slice(payload),
            vectors,
        })
    }
}
