//! The task pool's segments and their layouts.
//!
//! | segment | contents |
//! |---|---|
//! | `forkring.NAME.tasks` | [`TasksControl`] (the finish flag, the time base, the recorder's committed state), then the task table (`shm/taskq.rs`): clients, workers, one state word per slot, slot bodies |
//! | `forkring.NAME.relay` | only with `--pipeline`: the input array, then the output array, `--elements` f64 LE each |

use bytemuck::{Pod, Zeroable};

use crate::shm::cell::ShmSafe;
use crate::shm::header::HEADER_SIZE;
use crate::shm::layout::Fingerprint;
use crate::shm::segment::{Access, Region, Segment, SegmentSpec};
use crate::shm::taskq::{self, MAX_CLIENTS, TableParams, TaskTable};
use crate::shm::{
    CachePadded, Committed, CreatedSegments, Flag, Param64, RunName, SegmentsError, Stat64,
};

use super::settings::TasksSettings;

/// Layout version of the task pool's segments (2: committed records carry
/// checksums).
pub(crate) const VERSION: u32 = 2;

/// Transitions the recorder commits with a chunk of records (see
/// `client.rs`).
pub(crate) const PENDING: usize = 64;

/// One committed transition: slot `slot` goes from the raw word `raw` to
/// RECORDED, or to FREE if `free` is 1.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct Pending {
    pub(crate) slot: u32,
    pub(crate) free: u32,
    pub(crate) raw: u64,
}

/// What the recorder (the run's client role) has committed. Commit point of
/// a chunk of records: the generation flip of [`Committed`]; the chunk's
/// slot transitions are applied after it (a restarted recorder re-applies
/// them; each is a CAS from the recorded word, so twice is once).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct RecorderState {
    /// Length of the working file `.tasks.partial` covered by this state.
    pub(crate) file_offset: u64,
    /// Lines in it.
    pub(crate) recorded: u64,
    /// Of which: ok, error, quarantined.
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) quarantined: u64,
    /// Recorded tasks with more than one attempt.
    pub(crate) retried: u64,
    /// Recorded tasks of the run's own client.
    pub(crate) own_recorded: u64,
    /// The run's own client: every task line below this is accepted.
    pub(crate) next_line: u64,
    /// Own tasks accepted (published) so far.
    pub(crate) own_submitted: u64,
    /// 1 once every own task is recorded (and the relay's check is done).
    pub(crate) complete: u32,
    /// Entries of `pending` in use.
    pub(crate) pending_len: u32,
    /// Transitions to apply after this state is committed.
    pub(crate) pending: [Pending; PENDING],
}

impl Default for RecorderState {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

/// Fixed part of the `tasks` segment.
#[repr(C)]
pub(crate) struct TasksControl {
    /// Raised when the run ends for good (its own work done elsewhere,
    /// --duration): the client stops submitting, workers finish what they
    /// hold and exit.
    pub(crate) finish: CachePadded<Flag>,
    /// CLOCK_MONOTONIC ns and Unix ms at creation: monotonic task times
    /// are shown as UTC from these.
    pub(crate) mono_base_ns: CachePadded<Param64>,
    pub(crate) unix_base_ms: CachePadded<Param64>,
    /// The recorder's committed state.
    pub(crate) recorder: CachePadded<Committed<RecorderState>>,
    /// The intake's counters (`--from`; display only).
    pub(crate) intake: CachePadded<IntakeStats>,
}

/// Counters of the intake from NATS, for progress and `status`.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct IntakeStats {
    /// Messages taken from the queue (deliveries).
    pub(crate) delivered: Stat64,
    /// Of which deliveries after the first (a run died holding them, or
    /// their ack wait passed).
    pub(crate) redelivered: Stat64,
    /// Results published and their messages acknowledged.
    pub(crate) acked: Stat64,
    /// The link: 0 not started, 1 connecting, 2 up, 3 down.
    pub(crate) link: Stat64,
}

// SAFETY: repr(C) of Stat64 cells.
unsafe impl ShmSafe for IntakeStats {}

// SAFETY: repr(C); every field is ShmSafe.
unsafe impl ShmSafe for TasksControl {}

impl std::fmt::Debug for TasksControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TasksControl").finish_non_exhaustive()
    }
}

const CONTROL: usize = std::mem::size_of::<TasksControl>();
/// Offset of the task table in the `tasks` segment.
const TABLE_AT: usize = (HEADER_SIZE + CONTROL).div_ceil(128) * 128;

const TASKS_FP: u64 = {
    let mut f = Fingerprint::new("tasks")
        .num(CONTROL)
        .num(std::mem::size_of::<RecorderState>())
        .num(std::mem::offset_of!(RecorderState, complete))
        .num(std::mem::offset_of!(RecorderState, pending))
        .num(std::mem::size_of::<Pending>())
        .num(std::mem::offset_of!(TasksControl, intake))
        .num(TABLE_AT)
        .bytes(crate::shm::commit::CHECKSUM_LAYOUT);
    let mut i = 0;
    while i < taskq::LAYOUT.len() {
        f = f.num(taskq::LAYOUT[i]);
        i += 1;
    }
    f.finish()
};
const RELAY_FP: u64 = Fingerprint::new("relay")
    .num(8)
    .bytes(b"input,output f64 LE")
    .finish();

/// The task table's parameters for `s`.
pub(crate) fn table_params(s: &TasksSettings) -> TableParams {
    TableParams {
        slots: s.queue,
        task_max: s.task_max,
        result_max: s.reply_max,
        clients: MAX_CLIENTS,
        workers: s.workers,
    }
}

fn specs(s: &TasksSettings) -> (SegmentSpec, Option<SegmentSpec>) {
    let tasks = SegmentSpec {
        part: "tasks",
        version: VERSION,
        fingerprint: TASKS_FP,
        size: Some(TABLE_AT + table_params(s).bytes()),
    };
    let relay = s.relay.as_ref().map(|r| SegmentSpec {
        part: "relay",
        version: VERSION,
        fingerprint: RELAY_FP,
        size: Some(HEADER_SIZE + 16 * r.elements as usize),
    });
    (tasks, relay)
}

/// Shared-memory bytes of the task pool.
pub(crate) fn shm_bytes(s: &TasksSettings) -> u64 {
    let (t, r) = specs(s);
    t.size.unwrap_or(0) as u64 + r.and_then(|r| r.size).unwrap_or(0) as u64
}

/// The task pool's mapped segments.
#[derive(Debug)]
pub(crate) struct TasksSegments {
    settings: TasksSettings,
    tasks: Segment,
    relay: Option<Segment>,
}

/// The identity of the run's own client (record 0 of the table).
pub(crate) const OWN_CLIENT: u64 = 1;

impl TasksSegments {
    /// Creates the segments of a new run (the relay's input filled from
    /// `input`); removes what it made on error.
    pub(crate) fn create(
        run: &RunName,
        s: &TasksSettings,
        input: Option<&[f64]>,
    ) -> Result<Self, SegmentsError> {
        let (ts, rs) = specs(s);
        let p = table_params(s);
        p.validate().map_err(SegmentsError::Settings)?;
        let mut guard = CreatedSegments::new();
        let mut init_err = None;
        let tasks = Segment::create(run, &ts, |seg| {
            let c: &TasksControl = seg.body().expect("sized by spec");
            c.mono_base_ns.set(crate::clock::monotonic_ns());
            c.unix_base_ms.set(crate::units::unix_ms());
            if let Err(e) = TaskTable::init(seg, TABLE_AT, &p) {
                init_err = Some(e);
            }
        })?;
        guard.add(tasks.name());
        if let Some(e) = init_err {
            return Err(SegmentsError::corrupt(tasks.name(), e.to_string()));
        }
        let relay = match rs {
            Some(rs) => {
                let seg = Segment::create(run, &rs, |_| {})?;
                guard.add(seg.name());
                if let Some(input) = input {
                    let r = seg.region(HEADER_SIZE, 8 * input.len())?;
                    let words: Vec<u64> = input.iter().map(|x| x.to_bits()).collect();
                    r.write_words(0, &words);
                }
                Some(seg)
            }
            None => None,
        };
        let me = TasksSegments {
            settings: s.clone(),
            tasks,
            relay,
        };
        me.table()?.set_client_identity(0, OWN_CLIENT);
        guard.keep();
        Ok(me)
    }

    /// Opens and validates the segments of an existing run.
    pub(crate) fn open(
        run: &RunName,
        s: &TasksSettings,
        access: Access,
    ) -> Result<Self, SegmentsError> {
        let (ts, rs) = specs(s);
        let wait = std::time::Duration::from_secs(2);
        let me = TasksSegments {
            settings: s.clone(),
            tasks: Segment::open(run, &ts, access, wait)?,
            relay: match rs {
                Some(rs) => Some(Segment::open(run, &rs, access, wait)?),
                None => None,
            },
        };
        me.table()?;
        Ok(me)
    }

    /// The settings.
    pub(crate) fn settings(&self) -> &TasksSettings {
        &self.settings
    }

    /// The fixed control block.
    pub(crate) fn control(&self) -> Result<&TasksControl, SegmentsError> {
        Ok(self.tasks.body()?)
    }

    /// The recorder's committed state, checked against its checksum.
    pub(crate) fn recorder_state(&self) -> Result<RecorderState, SegmentsError> {
        self.control()?
            .recorder
            .load()
            .map(|(_, st)| st)
            .map_err(|e| SegmentsError::corrupt(self.tasks.name(), format!("field recorder: {e}")))
    }

    /// The validated task table.
    pub(crate) fn table(&self) -> Result<TaskTable<'_>, SegmentsError> {
        TaskTable::new(&self.tasks, TABLE_AT, &table_params(&self.settings))
            .map_err(|e| SegmentsError::corrupt(self.tasks.name(), e.to_string()))
    }

    /// The `tasks` segment (its file carries the clients' liveness locks).
    pub(crate) fn tasks_segment(&self) -> &Segment {
        &self.tasks
    }

    /// The relay's input and output arrays.
    pub(crate) fn relay_arrays(&self) -> Result<Option<(Region<'_>, Region<'_>)>, SegmentsError> {
        let (Some(seg), Some(r)) = (&self.relay, &self.settings.relay) else {
            return Ok(None);
        };
        let n = 8 * r.elements as usize;
        Ok(Some((
            seg.region(HEADER_SIZE, n)?,
            seg.region(HEADER_SIZE + n, n)?,
        )))
    }

    /// Names of the segments.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut v = vec![self.tasks.name().to_string()];
        v.extend(self.relay.as_ref().map(|r| r.name().to_string()));
        v
    }
}
