//! The task table: a bounded table of task slots in shared memory, fed by
//! submitting clients and drained by a pool of worker processes.
//!
//! Each slot has a state word (one `u64`, changed only by compare-and-swap)
//! and a body: the task's bytes, written by its submitter while it holds the
//! slot, and the result's bytes, written by the worker that holds the claim.
//! Every transition is one CAS of the state word, which is therefore the
//! commit point of each step:
//!
//! ```text
//! FREE ──reserve(client)──▶ FILLING ──publish──▶ QUEUED ──claim(w, inc)──▶ CLAIMED
//! CLAIMED ──complete(w, inc)──▶ DONE ──record──▶ RECORDED ──ack──▶ FREE
//!                               └──record, the recorder's own task──▶ FREE
//! CLAIMED ──requeue: the claimant is provably dead──▶ QUEUED   (deaths + 1)
//!         └──deaths reached the limit──▶ DONE (quarantined; result by the requeuer)
//! CLAIMED ──return: the run stops, the claimant was killed──▶ QUEUED (not a death)
//! FILLING ──abandon: the submitter is provably dead──▶ FREE
//! ```
//!
//! Who may write what:
//! - the slot header and task bytes: the submitter, while the slot is
//!   FILLING for its client index;
//! - the result bytes: the worker whose (index, incarnation) the CLAIMED
//!   word names, or a requeuer that quarantines the task of a claimant that
//!   is provably dead;
//! - nobody writes a slot's body in any other state.
//!
//! A claim names the worker's incarnation, so a late incarnation can never
//! complete over a newer claim: its CAS expects a word that no longer
//! exists. Requeueing is only done when the claimant cannot run any more
//! (reaped by the supervisor, or replaced by a successor that holds the
//! worker's liveness lock), so no dead claimant can still be writing the
//! body. The generation in the word is bumped on every return to FREE, so
//! a CAS never succeeds on a slot that was reused meanwhile (ABA).
//!
//! Everything read from the table is untrusted: lengths are checked against
//! the table's maxima, indices against its sizes; a corrupted word gives an
//! error or is skipped, never out-of-bounds access.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::cell::{CachePadded, Param32, Param64, ShmSafe, Stat64};
use super::commit::Committed;
use super::segment::{OutOfBounds, Region, Segment};
use super::wait::{Deadline, FutexCell, SpinPolicy, TimedOut};

/// Largest number of slots.
pub const MAX_SLOTS: u32 = 1 << 20;
/// Largest task or result size in bytes.
pub const MAX_BYTES: u32 = 1 << 20;
/// Largest number of clients (index 0 is the run's own client).
pub const MAX_CLIENTS: u32 = 64;
/// Largest number of workers (the run's role table bounds it anyway).
pub const MAX_WORKERS: u32 = 1024;
/// Attempts and deaths are counted up to this (8 bits each).
pub const MAX_COUNT: u32 = 255;

/// A slot's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Free for a submitter.
    Free,
    /// Held by a submitter writing the task.
    Filling,
    /// Waiting for a worker.
    Queued,
    /// Held by a worker.
    Claimed,
    /// The result is committed.
    Done,
    /// The result is recorded; waiting for its owner to take the reply.
    Recorded,
}

impl SlotState {
    fn code(self) -> u64 {
        match self {
            SlotState::Free => 0,
            SlotState::Filling => 1,
            SlotState::Queued => 2,
            SlotState::Claimed => 3,
            SlotState::Done => 4,
            SlotState::Recorded => 5,
        }
    }
    fn decode(c: u64) -> Option<SlotState> {
        Some(match c {
            0 => SlotState::Free,
            1 => SlotState::Filling,
            2 => SlotState::Queued,
            3 => SlotState::Claimed,
            4 => SlotState::Done,
            5 => SlotState::Recorded,
            _ => return None,
        })
    }
}

/// A decoded state word.
///
/// Bits: state 0..3, attempts 3..11, deaths 11..19, who 19..31 (the
/// worker of a CLAIMED or DONE word, the client of a FILLING one), inc
/// 31..47 (the claimant's incarnation), generation 47..64 (bumped on every return
/// to FREE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word {
    /// The state.
    pub state: SlotState,
    /// Claims so far.
    pub attempts: u32,
    /// Claimants that died holding it.
    pub deaths: u32,
    /// Worker (CLAIMED, DONE) or client (FILLING) index.
    pub who: u32,
    /// Claimant's incarnation (CLAIMED), low 16 bits.
    pub inc: u32,
    /// Reuse generation, low 17 bits.
    pub generation: u32,
}

const WHO_MASK: u64 = (1 << 12) - 1;
const INC_MASK: u64 = (1 << 16) - 1;
const GENERATION_MASK: u64 = (1 << 17) - 1;

impl Word {
    fn pack(&self) -> u64 {
        self.state.code()
            | (self.attempts.min(MAX_COUNT) as u64) << 3
            | (self.deaths.min(MAX_COUNT) as u64) << 11
            | (self.who as u64 & WHO_MASK) << 19
            | (self.inc as u64 & INC_MASK) << 31
            | (self.generation as u64 & GENERATION_MASK) << 47
    }
    fn unpack(v: u64) -> Option<Word> {
        Some(Word {
            state: SlotState::decode(v & 7)?,
            attempts: (v >> 3 & 0xff) as u32,
            deaths: (v >> 11 & 0xff) as u32,
            who: (v >> 19 & WHO_MASK) as u32,
            inc: (v >> 31 & INC_MASK) as u32,
            generation: (v >> 47 & GENERATION_MASK) as u32,
        })
    }
    fn with(self, state: SlotState) -> Word {
        Word { state, ..self }
    }
    fn freed(self) -> Word {
        Word {
            state: SlotState::Free,
            attempts: 0,
            deaths: 0,
            who: 0,
            inc: 0,
            generation: (self.generation + 1) & GENERATION_MASK as u32,
        }
    }
}

/// The table's sizes, fixed when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableParams {
    /// Number of slots.
    pub slots: u32,
    /// Largest task, bytes.
    pub task_max: u32,
    /// Largest result, bytes.
    pub result_max: u32,
    /// Number of client records.
    pub clients: u32,
    /// Number of worker records.
    pub workers: u32,
}

#[repr(C)]
#[derive(Debug, Default)]
struct RawParams {
    slots: Param32,
    task_max: Param32,
    result_max: Param32,
    clients: Param32,
    workers: Param32,
}

/// The table's fixed head.
#[repr(C)]
#[derive(Debug)]
struct Head {
    /// Immutable after creation.
    params: CachePadded<RawParams>,
    /// +1 on every transition to QUEUED; workers sleep on it.
    queued: CachePadded<FutexCell>,
    /// +1 on every transition to DONE; the recorder sleeps on it.
    done: CachePadded<FutexCell>,
    /// +1 on every transition to FREE; submitters of a full table sleep on
    /// it.
    freed: CachePadded<FutexCell>,
    /// Where claimers start scanning: a hint only (any value is safe).
    claim_hint: CachePadded<AtomicU32>,
    /// Where submitters start scanning: a hint only.
    reserve_hint: CachePadded<AtomicU32>,
    /// Requeued, returned and quarantined tasks (display only).
    stats: CachePadded<TableStats>,
}

/// Counters of rare events kept by the table (display only; the common
/// ones, claims and results, are counted per worker, on lines no other
/// process writes).
#[repr(C)]
#[derive(Debug, Default)]
pub struct TableStats {
    /// Tasks put back after their claimant died.
    pub requeued: Stat64,
    /// Tasks put back at a stop (their claimant was killed by the stop).
    pub returned: Stat64,
    /// Tasks quarantined.
    pub quarantined: Stat64,
}

// SAFETY: repr(C) of Stat64 cells.
unsafe impl ShmSafe for TableStats {}
// SAFETY: repr(C) of Param32 cells.
unsafe impl ShmSafe for RawParams {}
// SAFETY: repr(C); every field is ShmSafe.
unsafe impl ShmSafe for Head {}

/// What a client commits about its own submissions.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ClientProgress {
    /// Every line below this was accepted (published) by the table.
    pub next_line: u64,
}

/// One client's record.
#[repr(C)]
#[derive(Debug)]
struct ClientRec {
    /// The client's identity (non-zero); 0 when the record is free.
    identity: AtomicU64,
    /// +1 whenever one of the client's tasks becomes RECORDED.
    recorded: FutexCell,
    /// What the client has committed about its submissions.
    progress: Committed<ClientProgress>,
}

// SAFETY: repr(C); every field is ShmSafe.
unsafe impl ShmSafe for ClientRec {}

/// One worker's record.
#[repr(C)]
#[derive(Debug, Default)]
struct WorkerRec {
    /// Incarnations started so far; each claim names the current one.
    incarnation: AtomicU32,
    _pad: u32,
    /// The slot the worker works on last, + 1 (0: none). Display only.
    current: Param64,
    /// Results it committed.
    completed: Stat64,
}

// SAFETY: repr(C) of atomics and Param/Stat cells; the padding is a u32
// that nothing reads.
unsafe impl ShmSafe for WorkerRec {}

/// The fixed header of a slot's body.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct SlotHeader {
    /// The submitting client's index.
    owner: u32,
    /// Bytes of task.
    task_len: u32,
    /// Bytes of result.
    result_len: u32,
    _pad: u32,
    /// When the current claim was made (CLOCK_MONOTONIC ns), written by the
    /// claimant right after its claim: how soon a dead worker's task ran
    /// again is read from here.
    claimed_ns: u64,
    _pad2: u64,
}

const HEAD: usize = std::mem::size_of::<Head>();
const CLIENT: usize = std::mem::size_of::<CachePadded<ClientRec>>();
const WORKER: usize = std::mem::size_of::<CachePadded<WorkerRec>>();
/// Bytes per state word: a cache line each, so that workers claiming
/// neighbouring slots do not share a line.
const STATE: usize = 64;
const SLOT_HEADER: usize = std::mem::size_of::<SlotHeader>();
const _: () = assert!(CLIENT == 128 && WORKER == 128 && SLOT_HEADER == 32);

fn round64(n: usize) -> usize {
    n.div_ceil(64) * 64
}

/// Layout facts for a layout fingerprint: a build that places the table
/// differently refuses the segment.
pub const LAYOUT: [usize; 6] = [
    HEAD,
    CLIENT,
    WORKER,
    STATE,
    SLOT_HEADER,
    3 + 8 + 8 + 12 + 16 + 17,
];

impl TableParams {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), String> {
        let check = |what: &str, v: u32, lo: u32, hi: u32| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("{what} {v} is out of range ({lo} to {hi})"))
            }
        };
        check("slots", self.slots, 1, MAX_SLOTS)?;
        check("task_max", self.task_max, 8, MAX_BYTES)?;
        check("result_max", self.result_max, 8, MAX_BYTES)?;
        check("clients", self.clients, 1, MAX_CLIENTS)?;
        check("workers", self.workers, 1, MAX_WORKERS)
    }
    fn task_room(&self) -> usize {
        round64(self.task_max as usize)
    }
    fn body(&self) -> usize {
        round64(SLOT_HEADER + self.task_room() + self.result_max as usize)
    }
    fn clients_at(&self) -> usize {
        HEAD
    }
    fn workers_at(&self) -> usize {
        self.clients_at() + self.clients as usize * CLIENT
    }
    fn states_at(&self) -> usize {
        self.workers_at() + self.workers as usize * WORKER
    }
    fn bodies_at(&self) -> usize {
        self.states_at() + self.slots as usize * STATE
    }
    /// Bytes the table takes.
    pub fn bytes(&self) -> usize {
        self.bodies_at() + self.slots as usize * self.body()
    }
}

/// Why a table could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The table does not fit its segment or is misaligned.
    #[error(transparent)]
    Layout(#[from] OutOfBounds),
    /// A parameter in the segment is out of range or disagrees.
    #[error("segment {segment}: task table {detail}")]
    Params {
        /// Segment name.
        segment: String,
        /// What is wrong.
        detail: String,
    },
    /// A slot's word or header is corrupt.
    #[error("segment {segment}: task slot {slot}: {detail}")]
    Slot {
        /// Segment name.
        segment: String,
        /// The slot.
        slot: u32,
        /// What is wrong.
        detail: String,
    },
}

/// A slot reserved by a submitter (the FILLING word it holds).
#[derive(Debug, PartialEq, Eq)]
pub struct Reserved {
    /// The slot.
    pub slot: u32,
    word: u64,
}

/// A claim held by a worker (the CLAIMED word).
#[derive(Debug, PartialEq, Eq)]
pub struct Claim {
    /// The slot.
    pub slot: u32,
    /// The attempt this claim is (1 for the first).
    pub attempt: u32,
    /// Claimants that died holding the task before.
    pub deaths: u32,
    word: u64,
}

/// A slot seen in a given state, with the word to CAS against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The slot.
    pub slot: u32,
    /// Its decoded word.
    pub word: Word,
    raw: u64,
}

impl Seen {
    /// The raw word, for a record that must re-apply a transition after a
    /// crash ([`TaskTable::finish_raw`]).
    pub fn raw(&self) -> u64 {
        self.raw
    }
}

/// What to do with the claims of a worker that can no longer run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaim {
    /// It died: count a death; quarantine at `max_deaths`.
    Died {
        /// Deaths after which a task is quarantined.
        max_deaths: u32,
    },
    /// The run stopped and killed it: put its tasks back, not counted as a
    /// death.
    Stopped,
}

/// What a reclaim did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reclaimed {
    /// Slots put back in the queue.
    pub requeued: Vec<u32>,
    /// Slots quarantined: the caller must have written their result first
    /// (see [`TaskTable::reclaim`]).
    pub quarantined: Vec<u32>,
}

/// A validated view of a task table in a segment.
#[derive(Debug, Clone, Copy)]
pub struct TaskTable<'a> {
    head: &'a Head,
    /// Invariant: `params.bytes()` bytes from here lie in the segment's
    /// mapping, 64-aligned; `params` validated.
    base: Region<'a>,
    params: TableParams,
    segment: &'a str,
}

impl<'a> TaskTable<'a> {
    /// Writes the parameters of a freshly created (zeroed) table at byte
    /// `offset` of `seg`.
    pub fn init(seg: &Segment, offset: usize, p: &TableParams) -> Result<(), TableError> {
        let head: &Head = seg.view(offset)?;
        head.params.slots.set(p.slots);
        head.params.task_max.set(p.task_max);
        head.params.result_max.set(p.result_max);
        head.params.clients.set(p.clients);
        head.params.workers.set(p.workers);
        Ok(())
    }

    /// Validates the table at byte `offset` of `seg` against `expected`.
    pub fn new(
        seg: &'a Segment,
        offset: usize,
        expected: &TableParams,
    ) -> Result<Self, TableError> {
        let head: &Head = seg.view(offset)?;
        let found = TableParams {
            slots: head.params.slots.get(),
            task_max: head.params.task_max.get(),
            result_max: head.params.result_max.get(),
            clients: head.params.clients.get(),
            workers: head.params.workers.get(),
        };
        let bad = |detail: String| TableError::Params {
            segment: seg.name().to_string(),
            detail,
        };
        found.validate().map_err(bad)?;
        if found != *expected {
            return Err(bad(format!(
                "parameters are {found:?}, but the run's settings say {expected:?}"
            )));
        }
        if offset % 64 != 0 {
            return Err(bad(format!("offset {offset} is not 64-aligned")));
        }
        let base = seg.region(offset, found.bytes())?;
        Ok(TaskTable {
            head,
            base,
            params: found,
            segment: seg.name(),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &TableParams {
        &self.params
    }

    /// The table's statistics.
    pub fn stats(&self) -> &'a TableStats {
        &self.head.stats
    }

    fn at<T: ShmSafe>(&self, offset: usize) -> &'a T {
        debug_assert!(offset + std::mem::size_of::<T>() <= self.params.bytes());
        debug_assert!(offset % std::mem::align_of::<T>() == 0);
        // SAFETY: every caller passes an offset computed from the validated
        // params for an index below its bound, so `offset..offset+size` is
        // inside the region (type invariant); the region is 64-aligned and
        // the offsets are multiples of the types' alignment (64 or 128 for
        // records, 64 for state words); T is ShmSafe, so a shared reference
        // is sound while other processes write the same bytes; the
        // reference lives as long as the region borrows its segment ('a).
        unsafe { self.base.ptr().add(offset).cast::<T>().as_ref() }
    }

    fn state(&self, slot: u32) -> &'a AtomicU64 {
        debug_assert!(slot < self.params.slots);
        let slot = slot.min(self.params.slots - 1);
        self.at(self.params.states_at() + slot as usize * STATE)
    }

    fn client(&self, c: u32) -> &'a ClientRec {
        debug_assert!(c < self.params.clients);
        let c = c.min(self.params.clients - 1);
        let r: &CachePadded<ClientRec> = self.at(self.params.clients_at() + c as usize * CLIENT);
        r
    }

    fn worker(&self, w: u32) -> &'a WorkerRec {
        debug_assert!(w < self.params.workers);
        let w = w.min(self.params.workers - 1);
        let r: &CachePadded<WorkerRec> = self.at(self.params.workers_at() + w as usize * WORKER);
        r
    }

    /// Pointer to the body of `slot`.
    fn body(&self, slot: u32) -> *mut u8 {
        debug_assert!(slot < self.params.slots);
        let slot = slot.min(self.params.slots - 1) as usize;
        let off = self.params.bodies_at() + slot * self.params.body();
        self.base.ptr().as_ptr().wrapping_add(off)
    }

    fn header(&self, slot: u32) -> SlotHeader {
        let p = self.body(slot).cast::<SlotHeader>();
        // SAFETY: the body of a slot below `slots` lies in the region and
        // is 64-aligned (bodies are multiples of 64 from a 64-aligned
        // start); a volatile read of a Pod value yields some value even if a
        // hostile process writes it, and every field is checked by callers.
        unsafe { p.read_volatile() }
    }

    fn set_header(&self, slot: u32, h: SlotHeader) {
        let p = self.body(slot).cast::<SlotHeader>();
        // SAFETY: as in `header`; the caller holds the slot (FILLING or
        // CLAIMED), which the protocol gives it alone.
        unsafe { p.write_volatile(h) }
    }

    fn copy_in(&self, dst: *mut u8, bytes: &[u8], room: usize) {
        assert!(bytes.len() <= room, "caller checks the size");
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: i < len <= room, and `room` bytes from `dst` lie in
            // the slot's body; the caller holds the slot.
            unsafe { dst.add(i).write_volatile(*b) };
        }
    }

    fn copy_out(&self, src: *const u8, len: usize, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(len);
        for i in 0..len {
            // SAFETY: the caller checked len against the room of this area,
            // which lies in the slot's body; a volatile read of a byte.
            out.push(unsafe { src.add(i).read_volatile() });
        }
    }

    fn load(&self, slot: u32) -> u64 {
        // SYNC POINT: acquire side of every state CAS (Release): the body
        // written before the transition is visible.
        self.state(slot).load(Ordering::Acquire)
    }

    fn cas(&self, slot: u32, from: u64, to: u64) -> bool {
        // SYNC POINT: release of the body written before the transition;
        // acquire of what the previous writer published.
        self.state(slot)
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The decoded word of `slot`, or an error for a corrupt one.
    pub fn word(&self, slot: u32) -> Result<Seen, TableError> {
        let raw = self.load(slot);
        Word::unpack(raw)
            .map(|word| Seen { slot, word, raw })
            .ok_or_else(|| self.slot_error(slot, format!("state word {raw:#018x} is invalid")))
    }

    fn slot_error(&self, slot: u32, detail: String) -> TableError {
        TableError::Slot {
            segment: self.segment.to_string(),
            slot,
            detail,
        }
    }

    // -- clients ---------------------------------------------------------

    /// Takes the client record of `identity` (non-zero): the one already
    /// holding it, or a free one. `None` if every record is taken. Liveness
    /// is the caller's business (a lock per client index).
    pub fn client_record(&self, identity: u64) -> Option<u32> {
        debug_assert!(identity != 0);
        let n = self.params.clients;
        // The identity is only a mark of ownership: nothing is published
        // with it (the client's progress is a Committed record with its own
        // ordering), so Relaxed suffices.
        if let Some(c) =
            (0..n).find(|&c| self.client(c).identity.load(Ordering::Relaxed) == identity)
        {
            return Some(c);
        }
        (0..n).find(|&c| {
            self.client(c)
                .identity
                .compare_exchange(0, identity, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Sets client record `c`'s identity (the run's own client, at
    /// creation).
    pub fn set_client_identity(&self, c: u32, identity: u64) {
        self.client(c).identity.store(identity, Ordering::Relaxed);
    }

    /// The identity of client record `c` (0: free).
    pub fn client_identity(&self, c: u32) -> u64 {
        self.client(c).identity.load(Ordering::Relaxed)
    }

    /// What client `c` committed about its submissions.
    pub fn client_progress(&self, c: u32) -> Result<ClientProgress, TableError> {
        self.client(c)
            .progress
            .load()
            .map(|(_, p)| p)
            .map_err(|e| TableError::Params {
                segment: self.segment.to_string(),
                detail: format!("client record {c}: {e}"),
            })
    }

    /// Commits client `c`'s progress (its single writer is that client).
    pub fn commit_client_progress(&self, c: u32, p: ClientProgress) {
        self.client(c).progress.commit(p);
    }

    // -- workers ---------------------------------------------------------

    /// Starts a new incarnation of worker `w`; its claims name it.
    pub fn begin_incarnation(&self, w: u32) -> u32 {
        // Only worker w's own process (one at a time, by its role lock)
        // increments it, and its claims carry it: no ordering needed.
        self.worker(w)
            .incarnation
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
    }

    /// The slot worker `w` works on (display only).
    pub fn worker_current(&self, w: u32) -> Option<u32> {
        self.worker(w)
            .current
            .get()
            .checked_sub(1)
            .map(|s| s as u32)
    }

    // -- submitting --------------------------------------------------------

    /// Reserves a free slot for client `client`, or `None` if the table is
    /// full (wait with [`TaskTable::wait_freed`]).
    pub fn reserve(&self, client: u32) -> Option<Reserved> {
        let n = self.params.slots;
        let start = self.head.reserve_hint.load(Ordering::Relaxed) % n;
        for k in 0..n {
            let slot = (start + k) % n;
            let raw = self.load(slot);
            let Some(w) = Word::unpack(raw) else { continue };
            if w.state != SlotState::Free {
                continue;
            }
            let filling = Word {
                state: SlotState::Filling,
                who: client,
                ..w
            }
            .pack();
            if self.cas(slot, raw, filling) {
                self.head.reserve_hint.store(slot + 1, Ordering::Relaxed);
                self.set_header(
                    slot,
                    SlotHeader {
                        owner: client,
                        ..SlotHeader::default()
                    },
                );
                return Some(Reserved {
                    slot,
                    word: filling,
                });
            }
        }
        None
    }

    /// Writes the task into a reserved slot. Panics if it is larger than
    /// `task_max` (the caller checks sizes at submission).
    pub fn write_task(&self, r: &Reserved, task: &[u8]) {
        assert!(task.len() <= self.params.task_max as usize);
        let dst = self.body(r.slot).wrapping_add(SLOT_HEADER);
        self.copy_in(dst, task, self.params.task_room());
        let mut h = self.header(r.slot);
        h.task_len = task.len() as u32;
        h.result_len = 0;
        self.set_header(r.slot, h);
    }

    /// Publishes a reserved slot to the workers. `false` if the slot was
    /// taken from us (our client was declared dead meanwhile).
    pub fn publish(&self, r: Reserved) -> bool {
        let w = Word::unpack(r.word).expect("made by reserve");
        let queued = Word {
            state: SlotState::Queued,
            who: 0,
            ..w
        }
        .pack();
        // The CAS releases the header and the task bytes.
        if !self.cas(r.slot, r.word, queued) {
            return false;
        }
        // SYNC POINT: wakes workers sleeping on the queued epoch; the
        // slot's own CAS above carries the data.
        self.head.queued.fetch_add(1);
        true
    }

    /// Frees the FILLING slots of client `client` (a submitter that died,
    /// or restarts, before publishing them). Returns how many.
    pub fn abandon_filling(&self, client: u32) -> u32 {
        let mut n = 0;
        for slot in 0..self.params.slots {
            let raw = self.load(slot);
            if let Some(w) = Word::unpack(raw)
                && w.state == SlotState::Filling
                && w.who == client
                && self.cas(slot, raw, w.freed().pack())
            {
                n += 1;
            }
        }
        if n > 0 {
            self.head.freed.fetch_add(1);
        }
        n
    }

    /// The freed epoch, to wait on with [`TaskTable::wait_freed`].
    pub fn freed_epoch(&self) -> u32 {
        self.head.freed.load()
    }

    /// Waits until a slot was freed after `epoch` was read, or `deadline`.
    pub fn wait_freed(&self, epoch: u32, deadline: impl Into<Deadline>) -> Result<u32, TimedOut> {
        self.head
            .freed
            .wait_until(|v| v != epoch, SpinPolicy::SLEEP, deadline)
    }

    // -- working -----------------------------------------------------------

    /// Claims a queued task for worker `w` in incarnation `inc`, or `None`
    /// if none is queued (wait with [`TaskTable::wait_queued`]). Tasks whose
    /// claimants died `suspect_at` times or more are left to an idle worker
    /// unless `idle`: such a task runs alone, so that its next death is its
    /// own doing, not a neighbour's.
    pub fn claim(&self, w: u32, inc: u32, idle: bool, suspect_at: u32) -> Option<Claim> {
        let n = self.params.slots;
        let start = self.head.claim_hint.load(Ordering::Relaxed) % n;
        for k in 0..n {
            let slot = (start + k) % n;
            let raw = self.load(slot);
            let Some(word) = Word::unpack(raw) else {
                continue;
            };
            if word.state != SlotState::Queued || (word.deaths >= suspect_at && !idle) {
                continue;
            }
            let attempt = (word.attempts + 1).min(MAX_COUNT);
            let claimed = Word {
                state: SlotState::Claimed,
                attempts: attempt,
                who: w,
                inc,
                ..word
            };
            if self.cas(slot, raw, claimed.pack()) {
                let mut h = self.header(slot);
                h.claimed_ns = crate::clock::monotonic_ns();
                self.set_header(slot, h);
                self.head.claim_hint.store(slot + 1, Ordering::Relaxed);
                self.worker(w).current.set(slot as u64 + 1);
                return Some(Claim {
                    slot,
                    attempt,
                    deaths: word.deaths,
                    word: claimed.pack(),
                });
            }
        }
        None
    }

    /// The queued epoch, to wait on with [`TaskTable::wait_queued`].
    pub fn queued_epoch(&self) -> u32 {
        self.head.queued.load()
    }

    /// Waits until a task was queued after `epoch` was read, or `deadline`.
    pub fn wait_queued(
        &self,
        epoch: u32,
        policy: SpinPolicy,
        deadline: impl Into<Deadline>,
    ) -> Result<u32, TimedOut> {
        self.head
            .queued
            .wait_until(|v| v != epoch, policy, deadline)
    }

    /// Wakes everyone sleeping on the table, so they re-check their stop
    /// conditions.
    pub fn kick(&self) {
        self.head.queued.kick();
        self.head.done.kick();
        self.head.freed.kick();
        for c in 0..self.params.clients {
            self.client(c).recorded.kick();
        }
    }

    /// Reads the task of a slot we hold (a claim, or a DONE/RECORDED slot
    /// being recorded) into `out`. Errors on a corrupt length.
    pub fn read_task(&self, slot: u32, out: &mut Vec<u8>) -> Result<(), TableError> {
        let h = self.header(slot);
        if h.task_len > self.params.task_max {
            return Err(self.slot_error(
                slot,
                format!(
                    "task length {} is above {}",
                    h.task_len, self.params.task_max
                ),
            ));
        }
        self.copy_out(
            self.body(slot).wrapping_add(SLOT_HEADER),
            h.task_len as usize,
            out,
        );
        Ok(())
    }

    /// When the slot's current claim was made (CLOCK_MONOTONIC ns; for
    /// measurements: the claimant writes it after its claim).
    pub fn claimed_ns(&self, slot: u32) -> u64 {
        self.header(slot).claimed_ns
    }

    /// The owning client of a slot (validated against the table's clients).
    pub fn owner(&self, slot: u32) -> Result<u32, TableError> {
        let o = self.header(slot).owner;
        if o >= self.params.clients {
            return Err(self.slot_error(
                slot,
                format!("owner {o} is not a client below {}", self.params.clients),
            ));
        }
        Ok(o)
    }

    fn write_result(&self, slot: u32, result: &[u8]) {
        assert!(result.len() <= self.params.result_max as usize);
        let dst = self
            .body(slot)
            .wrapping_add(SLOT_HEADER + self.params.task_room());
        self.copy_in(dst, result, self.params.result_max as usize);
        let mut h = self.header(slot);
        h.result_len = result.len() as u32;
        self.set_header(slot, h);
    }

    /// Reads a slot's result into `out`.
    pub fn read_result(&self, slot: u32, out: &mut Vec<u8>) -> Result<(), TableError> {
        let h = self.header(slot);
        if h.result_len > self.params.result_max {
            return Err(self.slot_error(
                slot,
                format!(
                    "result length {} is above {}",
                    h.result_len, self.params.result_max
                ),
            ));
        }
        let src = self
            .body(slot)
            .wrapping_add(SLOT_HEADER + self.params.task_room());
        self.copy_out(src, h.result_len as usize, out);
        Ok(())
    }

    /// Commits `result` for a claim held by worker `w`. `false` if the
    /// claim was taken away (its incarnation is stale): the result is then
    /// dropped, never committed over a newer claim. Panics if the result is
    /// larger than `result_max` (callers cap it).
    pub fn complete(&self, w: u32, c: Claim, result: &[u8]) -> bool {
        // Only the holder of the CLAIMED word writes the result: check it
        // still is, then write, then commit by CAS.
        if self.load(c.slot) != c.word {
            return false;
        }
        self.write_result(c.slot, result);
        let done = Word::unpack(c.word)
            .expect("made by claim")
            .with(SlotState::Done)
            .pack();
        // The CAS releases the result.
        if !self.cas(c.slot, c.word, done) {
            return false;
        }
        self.worker(w).completed.add(1);
        self.worker(w).current.set(0);
        // SYNC POINT: wakes the recorder; the CAS above carries the data.
        self.head.done.fetch_add(1);
        true
    }

    /// Takes back the claims of worker `w` whose incarnation is not
    /// `keep_inc` (a successor's own claims are kept), because their
    /// claimant can no longer run: the caller has reaped it, or is its
    /// successor holding the worker's liveness lock. `quarantine(slot,
    /// deaths)` writes the quarantined result of a task whose claimants
    /// died `max_deaths` times, before it is committed as DONE.
    pub fn reclaim(
        &self,
        w: u32,
        keep_inc: Option<u32>,
        how: Reclaim,
        mut quarantine: impl FnMut(u32, u32) -> Vec<u8>,
    ) -> Reclaimed {
        let mut out = Reclaimed::default();
        let keep = keep_inc.map(|i| i & INC_MASK as u32);
        for slot in 0..self.params.slots {
            let raw = self.load(slot);
            let Some(word) = Word::unpack(raw) else {
                continue;
            };
            if word.state != SlotState::Claimed || word.who != w || Some(word.inc) == keep {
                continue;
            }
            match how {
                Reclaim::Stopped => {
                    let back = Word {
                        state: SlotState::Queued,
                        attempts: word.attempts.saturating_sub(1),
                        who: 0,
                        inc: 0,
                        ..word
                    };
                    if self.cas(slot, raw, back.pack()) {
                        self.head.stats.returned.add(1);
                        out.requeued.push(slot);
                    }
                }
                Reclaim::Died { max_deaths } => {
                    let deaths = (word.deaths + 1).min(MAX_COUNT);
                    if deaths >= max_deaths.max(1) {
                        // The claimant is dead: writing the result under its
                        // CLAIMED word is ours now.
                        let result = quarantine(slot, deaths);
                        let result = &result[..result.len().min(self.params.result_max as usize)];
                        self.write_result(slot, result);
                        let done = Word {
                            state: SlotState::Done,
                            deaths,
                            ..word
                        };
                        if self.cas(slot, raw, done.pack()) {
                            self.head.stats.quarantined.add(1);
                            out.quarantined.push(slot);
                        }
                    } else {
                        let back = Word {
                            state: SlotState::Queued,
                            deaths,
                            who: 0,
                            inc: 0,
                            ..word
                        };
                        if self.cas(slot, raw, back.pack()) {
                            self.head.stats.requeued.add(1);
                            out.requeued.push(slot);
                        }
                    }
                }
            }
        }
        self.worker(w).current.set(0);
        if !out.requeued.is_empty() {
            // SYNC POINT: wakes workers; the CASes above carry the state.
            self.head.queued.fetch_add(1);
        }
        if !out.quarantined.is_empty() {
            self.head.done.fetch_add(1);
        }
        out
    }

    // -- recording and acknowledging ---------------------------------------

    /// Every slot in `state`, in slot order (a scan; for the recorder, the
    /// handoff, status and a restarted client).
    pub fn in_state(&self, state: SlotState) -> Vec<Seen> {
        (0..self.params.slots)
            .filter_map(|slot| {
                let raw = self.load(slot);
                Word::unpack(raw)
                    .filter(|w| w.state == state)
                    .map(|word| Seen { slot, word, raw })
            })
            .collect()
    }

    /// Up to `max` slots in `state`, scanning circularly from slot `*from`
    /// and leaving `*from` just after the last one found (where the next
    /// scan should start). A caller that collects results as they come
    /// (the recorder) looks at the slots in submission order and stops
    /// early, instead of reading the whole table every time.
    pub fn next_in_state(&self, state: SlotState, from: &mut u32, max: usize) -> Vec<Seen> {
        let n = self.params.slots;
        let start = *from % n;
        let mut out = Vec::new();
        for k in 0..n {
            if out.len() >= max {
                break;
            }
            let slot = (start + k) % n;
            let raw = self.load(slot);
            if let Some(word) = Word::unpack(raw).filter(|w| w.state == state) {
                out.push(Seen { slot, word, raw });
                *from = slot + 1;
            }
        }
        out
    }

    /// Counts slots by state: free, filling, queued, claimed, done,
    /// recorded, corrupt.
    pub fn census(&self) -> [u64; 7] {
        let mut c = [0u64; 7];
        for slot in 0..self.params.slots {
            match Word::unpack(self.load(slot)) {
                Some(w) => c[w.state.code() as usize] += 1,
                None => c[6] += 1,
            }
        }
        c
    }

    /// The done epoch, to wait on with [`TaskTable::wait_done`].
    pub fn done_epoch(&self) -> u32 {
        self.head.done.load()
    }

    /// A bell that wakes whoever waits in [`TaskTable::wait_done`], for
    /// another thread of the recorder's process that hands it work.
    pub fn recorder_bell(&self) -> RecorderBell<'a> {
        RecorderBell(&self.head.done)
    }

    /// Waits until a result was committed after `epoch` was read.
    pub fn wait_done(&self, epoch: u32, deadline: impl Into<Deadline>) -> Result<u32, TimedOut> {
        self.head
            .done
            .wait_until(|v| v != epoch, SpinPolicy::SLEEP, deadline)
    }

    /// Moves a slot seen DONE to RECORDED (its owner takes the reply) or,
    /// with `free`, straight to FREE. Applies the transition only if the
    /// slot still holds the raw word `raw` (idempotent: a restarted recorder
    /// re-applies its committed transitions). Returns whether it applied.
    pub fn finish_raw(&self, slot: u32, raw: u64, free: bool) -> bool {
        if slot >= self.params.slots {
            return false;
        }
        let Some(w) = Word::unpack(raw) else {
            return false;
        };
        let to = match (w.state, free) {
            (SlotState::Done, false) => w.with(SlotState::Recorded),
            (SlotState::Done | SlotState::Recorded, true) => w.freed(),
            _ => return false,
        };
        if !self.cas(slot, raw, to.pack()) {
            return false;
        }
        if free {
            self.head.freed.fetch_add(1);
        } else if let Ok(owner) = self.owner(slot) {
            // SYNC POINT: wakes the owner; the CAS above carries the state.
            self.client(owner).recorded.fetch_add(1);
        }
        true
    }

    /// Client `c`'s recorded epoch, to wait on with
    /// [`TaskTable::wait_recorded`].
    pub fn recorded_epoch(&self, c: u32) -> u32 {
        self.client(c).recorded.load()
    }

    /// Waits until one of client `c`'s tasks was recorded after `epoch`.
    pub fn wait_recorded(
        &self,
        c: u32,
        epoch: u32,
        deadline: impl Into<Deadline>,
    ) -> Result<u32, TimedOut> {
        self.client(c)
            .recorded
            .wait_until(|v| v != epoch, SpinPolicy::SLEEP, deadline)
    }
}

/// Wakes the recorder as if a result had been committed (see
/// [`TaskTable::recorder_bell`]); it then finds no new result and looks at
/// what else it was given.
#[derive(Debug, Clone, Copy)]
pub struct RecorderBell<'a>(&'a FutexCell);

impl RecorderBell<'_> {
    /// Rings: moves the done epoch and wakes its sleepers.
    pub fn ring(&self) {
        self.0.fetch_add(1);
    }
}

/// How long a sleeping table user waits before re-checking liveness.
pub const SLICE: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::layout::Fingerprint;
    use crate::shm::segment::{SegmentSpec, unlink};
    use crate::shm::{RunName, header::HEADER_SIZE};

    fn table(tag: &str, p: TableParams) -> Segment {
        let run = RunName::new(&format!("ut-tq{tag}-{}", std::process::id())).unwrap();
        let spec = SegmentSpec {
            part: "tq",
            version: 1,
            fingerprint: Fingerprint::new("tq").finish(),
            size: Some(HEADER_SIZE + p.bytes()),
        };
        let seg = Segment::create(&run, &spec, |s| {
            TaskTable::init(s, HEADER_SIZE, &p).unwrap()
        })
        .unwrap();
        unlink(seg.name()).unwrap();
        seg
    }

    fn params(slots: u32) -> TableParams {
        TableParams {
            slots,
            task_max: 64,
            result_max: 64,
            clients: 4,
            workers: 4,
        }
    }

    #[test]
    fn words_round_trip() {
        let w = Word {
            state: SlotState::Claimed,
            attempts: 3,
            deaths: 2,
            who: 4095,
            inc: 65535,
            generation: 131_071,
        };
        assert_eq!(Word::unpack(w.pack()), Some(w));
        assert_eq!(w.freed().generation, 0);
        assert!(Word::unpack(7).is_none());
    }

    #[test]
    fn a_task_goes_round() {
        let p = params(4);
        let seg = table("round", p);
        let t = TaskTable::new(&seg, HEADER_SIZE, &p).unwrap();
        let c = t.client_record(42).unwrap();
        let r = t.reserve(c).unwrap();
        t.write_task(&r, b"spin 10");
        assert!(t.publish(r));
        let inc = t.begin_incarnation(1);
        let cl = t.claim(1, inc, true, 1).unwrap();
        assert_eq!(cl.attempt, 1);
        let mut buf = Vec::new();
        t.read_task(cl.slot, &mut buf).unwrap();
        assert_eq!(buf, b"spin 10");
        let slot = cl.slot;
        assert!(t.complete(1, cl, b"ok"));
        let done = t.in_state(SlotState::Done);
        assert_eq!(done.len(), 1);
        t.read_result(slot, &mut buf).unwrap();
        assert_eq!(buf, b"ok");
        assert!(t.finish_raw(slot, done[0].raw(), false));
        // Re-applying the same transition is a no-op.
        assert!(!t.finish_raw(slot, done[0].raw(), false));
        let rec = t.in_state(SlotState::Recorded);
        assert!(t.finish_raw(slot, rec[0].raw(), true));
        assert_eq!(t.census()[0], 4);
        assert_eq!(t.word(slot).unwrap().word.generation, 1);
    }

    #[test]
    fn a_dead_claimant_is_requeued_then_quarantined() {
        let p = params(2);
        let seg = table("dead", p);
        let t = TaskTable::new(&seg, HEADER_SIZE, &p).unwrap();
        let r = t.reserve(0).unwrap();
        t.write_task(&r, b"poison");
        assert!(t.publish(r));
        for round in 1..=3u32 {
            let inc = t.begin_incarnation(0);
            let c = t.claim(0, inc, true, 1).unwrap();
            assert_eq!(c.attempt, round);
            assert_eq!(c.deaths, round - 1);
            let stale = Claim { ..c };
            // The worker "dies": its claims are taken back by the reaper.
            let got = t.reclaim(0, None, Reclaim::Died { max_deaths: 3 }, |_, d| {
                format!("quarantined after {d} deaths").into_bytes()
            });
            // A late completion by the dead incarnation cannot commit.
            assert!(!t.complete(0, stale, b"late"));
            if round < 3 {
                assert_eq!(got.requeued.len(), 1);
            } else {
                assert_eq!(got.quarantined.len(), 1);
                let mut b = Vec::new();
                t.read_result(got.quarantined[0], &mut b).unwrap();
                assert_eq!(b, b"quarantined after 3 deaths");
            }
        }
        assert_eq!(t.in_state(SlotState::Done).len(), 1);
        assert_eq!(t.stats().quarantined.get(), 1);
    }

    #[test]
    fn a_successor_keeps_its_own_claims_and_a_stop_counts_no_death() {
        let p = params(4);
        let seg = table("succ", p);
        let t = TaskTable::new(&seg, HEADER_SIZE, &p).unwrap();
        for _ in 0..2 {
            let r = t.reserve(0).unwrap();
            t.write_task(&r, b"x");
            assert!(t.publish(r));
        }
        let old = t.begin_incarnation(2);
        let _c1 = t.claim(2, old, true, 1).unwrap();
        let new = t.begin_incarnation(2);
        let c2 = t.claim(2, new, true, 1).unwrap();
        let got = t.reclaim(2, Some(new), Reclaim::Died { max_deaths: 3 }, |_, _| vec![]);
        assert_eq!(got.requeued.len(), 1);
        assert_eq!(t.word(c2.slot).unwrap().word.state, SlotState::Claimed);
        let got = t.reclaim(2, None, Reclaim::Stopped, |_, _| vec![]);
        assert_eq!(got.requeued, vec![c2.slot]);
        assert_eq!(t.word(c2.slot).unwrap().word.deaths, 0);
    }

    #[test]
    fn full_table_and_abandoned_filling() {
        let p = params(2);
        let seg = table("full", p);
        let t = TaskTable::new(&seg, HEADER_SIZE, &p).unwrap();
        let a = t.reserve(1).unwrap();
        let _b = t.reserve(1).unwrap();
        assert!(t.reserve(1).is_none());
        let e = t.freed_epoch();
        assert_eq!(t.abandon_filling(1), 2);
        assert_ne!(t.freed_epoch(), e);
        // The abandoned reservation can no longer be published.
        assert!(!t.publish(a));
    }

    #[test]
    fn many_workers_complete_every_task_exactly_once() {
        let p = TableParams {
            slots: 64,
            task_max: 16,
            result_max: 16,
            clients: 1,
            workers: 3,
        };
        let seg = table("many", p);
        let n = 20_000u64;
        std::thread::scope(|s| {
            for w in 0..3u32 {
                let seg = &seg;
                s.spawn(move || {
                    let t = TaskTable::new(seg, HEADER_SIZE, &p).unwrap();
                    let inc = t.begin_incarnation(w);
                    let mut buf = Vec::new();
                    loop {
                        let e = t.queued_epoch();
                        match t.claim(w, inc, true, 1) {
                            Some(c) => {
                                t.read_task(c.slot, &mut buf).unwrap();
                                if buf == b"end" {
                                    // Leave the end marker for the others.
                                    let _ = t.reclaim(w, None, Reclaim::Stopped, |_, _| vec![]);
                                    return;
                                }
                                let reply = buf.clone();
                                assert!(t.complete(w, c, &reply));
                            }
                            None => {
                                let _ = t.wait_queued(
                                    e,
                                    SpinPolicy::HANDOFF,
                                    Duration::from_millis(50),
                                );
                            }
                        }
                    }
                });
            }
            let t = TaskTable::new(&seg, HEADER_SIZE, &p).unwrap();
            let mut seen = vec![false; n as usize];
            let mut sent = 0u64;
            let mut got = 0u64;
            let mut buf = Vec::new();
            while got < n {
                while sent < n {
                    let Some(r) = t.reserve(0) else { break };
                    t.write_task(&r, &sent.to_le_bytes());
                    assert!(t.publish(r));
                    sent += 1;
                }
                let e = t.done_epoch();
                let done = t.in_state(SlotState::Done);
                for d in &done {
                    t.read_result(d.slot, &mut buf).unwrap();
                    let id = u64::from_le_bytes(buf[..8].try_into().unwrap());
                    assert!(!seen[id as usize], "task {id} completed twice");
                    seen[id as usize] = true;
                    assert!(t.finish_raw(d.slot, d.raw(), true));
                    got += 1;
                }
                if done.is_empty() {
                    let _ = t.wait_done(e, Duration::from_millis(50));
                }
            }
            for _ in 0..3 {
                let r = loop {
                    if let Some(r) = t.reserve(0) {
                        break r;
                    }
                    std::thread::yield_now();
                };
                t.write_task(&r, b"end");
                assert!(t.publish(r));
            }
            assert!(seen.iter().all(|s| *s));
        });
    }
}
