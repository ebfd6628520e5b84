//! The control segment of a run: `forkring.NAME.control`.
//!
//! It holds who supervises the run, the run-wide stop flag, the attach
//! semaphore, the run's settings (an opaque blob here; `settings.rs` decodes
//! it), and the role table: one slot per role process, sized when the run is
//! created from its jobs' settings and recorded in `role_count`. It is
//! created first and unlinked last, and its file carries the liveness locks
//! (see `shm/lock.rs`): byte 0 is held by the live supervisor, byte
//! `1 + slot` by the live process of that role slot.
//!
//! Commit points and crash behaviour:
//! - settings and `role_count`: written once before the header is
//!   published; immutable after.
//! - supervisor pid/phase, role pids/states/restarts: informational. They are
//!   read for display and for messages only; liveness decisions use the locks,
//!   so a stale pid left by a killed process is harmless.
//! - stop flag: raised by the supervisor; a role that sees it finishes its
//!   current step and exits 0. A supervisor that resumes a run lowers it.

use std::fmt;
use std::time::Duration;

use crate::shm::cell::ShmSafe;
use crate::shm::header::HEADER_SIZE;
use crate::shm::layout::Fingerprint;
use crate::shm::lock;
use crate::shm::segment::{Access, CreateError, OpenError, Segment, SegmentSpec};
use crate::shm::{
    CachePadded, CreatedSegments, Flag, Param32, Param64, RunName, Semaphore, Stat64, VolatileCell,
};

/// Part name of the control segment.
pub(crate) const PART: &str = "control";
/// Layout version of the control segment (2: the role table is sized per
/// run).
pub(crate) const VERSION: u32 = 2;
/// Capacity of the settings blob.
pub(crate) const SETTINGS_MAX: usize = 8192;
/// The most role processes a run may have.
pub(crate) const MAX_ROLES: u32 = 1024;
/// Byte of the control file locked by the live supervisor.
pub(crate) const SUPERVISOR_LOCK_BYTE: u64 = 0;

/// Phase of a run, as recorded by its supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RunPhase {
    /// Segments being created, roles starting.
    Starting = 0,
    /// Roles attached and working.
    Running = 1,
    /// A stop was requested; waiting for roles to exit.
    Stopping = 2,
    /// Writing the output files.
    HandingOff = 3,
    /// Output written; segments are being removed.
    HandedOff = 4,
    /// Gave up (restart limit); segments kept for inspection or resume.
    Failed = 5,
}

impl RunPhase {
    fn decode(v: u32) -> Option<RunPhase> {
        Some(match v {
            0 => RunPhase::Starting,
            1 => RunPhase::Running,
            2 => RunPhase::Stopping,
            3 => RunPhase::HandingOff,
            4 => RunPhase::HandedOff,
            5 => RunPhase::Failed,
            _ => return None,
        })
    }
    /// Lower-case name for display.
    pub(crate) fn name(self) -> &'static str {
        match self {
            RunPhase::Starting => "starting",
            RunPhase::Running => "running",
            RunPhase::Stopping => "stopping",
            RunPhase::HandingOff => "handing-off",
            RunPhase::HandedOff => "handed-off",
            RunPhase::Failed => "failed",
        }
    }
}

/// State of a role slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum RoleState {
    /// Not started yet.
    Idle = 0,
    /// Process started, not yet attached to its segments.
    Starting = 1,
    /// Attached and working.
    Attached = 2,
    /// Exited normally: its work is done.
    Done = 3,
    /// Died; a restart is pending or the run gave up.
    Failed = 4,
}

impl RoleState {
    fn decode(v: u32) -> RoleState {
        match v {
            1 => RoleState::Starting,
            2 => RoleState::Attached,
            3 => RoleState::Done,
            4 => RoleState::Failed,
            _ => RoleState::Idle,
        }
    }
    /// Lower-case name for display.
    pub(crate) fn name(self) -> &'static str {
        match self {
            RoleState::Idle => "idle",
            RoleState::Starting => "starting",
            RoleState::Attached => "running",
            RoleState::Done => "done",
            RoleState::Failed => "failed",
        }
    }
}

/// How a process ended, packed into a u32 for the control segment:
/// 0 = none yet, `0x1_0000 | code` = exited, `0x2_0000 | signal` = killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// Whether this is a normal, successful exit.
    pub(crate) fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
    /// Packs for the control segment.
    pub(crate) fn encode(self) -> u32 {
        match self {
            ExitStatus::Code(c) => 0x1_0000 | (c as u32 & 0xff),
            ExitStatus::Signal(s) => 0x2_0000 | (s as u32 & 0xff),
        }
    }
    /// Unpacks (untrusted input: unknown encodings give `None`).
    pub(crate) fn decode(v: u32) -> Option<ExitStatus> {
        match v >> 16 {
            1 => Some(ExitStatus::Code((v & 0xff) as i32)),
            2 => Some(ExitStatus::Signal((v & 0xff) as i32)),
            _ => None,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Code(c) => write!(f, "exited with status {c}"),
            ExitStatus::Signal(s) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

/// One role's slot.
#[repr(C)]
#[derive(Debug, Default)]
struct RoleSlot {
    /// Pid of the current (or last) process of the role. Informational.
    pid: Param32,
    /// A `RoleState`.
    state: Param32,
    /// Start ticks of that process (with `pid`, identifies it).
    start_ticks: Param64,
    /// Restarts so far, over all supervisors of the run.
    restarts: Stat64,
    /// Last abnormal exit (`ExitStatus::encode`), 0 if none.
    last_exit: Param32,
    _pad: Param32,
}

// SAFETY: repr(C) of Param/Stat cells.
unsafe impl ShmSafe for RoleSlot {}

/// The supervisor's own record.
#[repr(C)]
#[derive(Debug, Default)]
struct SupervisorInfo {
    /// Pid of the current (or last) supervisor. Informational.
    pid: Param32,
    /// A `RunPhase`.
    phase: Param32,
    /// Start ticks of that supervisor.
    start_ticks: Param64,
    /// Number of times a supervisor took the run over after the previous
    /// one died.
    resumes: Stat64,
    /// Wall-clock creation time of the run (ms since the Unix epoch).
    created_unix_ms: Param64,
    /// Seconds of work accumulated by previous supervisors (f64 bits).
    prior_seconds: Param64,
}

// SAFETY: repr(C) of Param/Stat cells.
unsafe impl ShmSafe for SupervisorInfo {}

/// Sizes of the variable parts, immutable after creation.
#[repr(C)]
#[derive(Debug, Default)]
struct TableInfo {
    /// Number of role slots after the body; untrusted, checked against
    /// `MAX_ROLES` and the segment size on open.
    role_count: Param32,
    /// Length of the encoded settings; untrusted, checked against
    /// `SETTINGS_MAX`.
    settings_len: Param32,
}

// SAFETY: repr(C) of Param cells.
unsafe impl ShmSafe for TableInfo {}

/// Fixed body of the control segment (after the 128-byte header); the role
/// table follows it.
#[repr(C)]
struct ControlBody {
    supervisor: CachePadded<SupervisorInfo>,
    /// Run-wide stop flag; roles also sleep on their job's words, which the
    /// supervisor kicks after raising this.
    stop: CachePadded<Flag>,
    /// Posted by each role process once it has attached to its segments.
    attach: CachePadded<Semaphore>,
    table: CachePadded<TableInfo>,
    settings: VolatileCell<[u8; SETTINGS_MAX]>,
}

// SAFETY: repr(C); every field is ShmSafe.
unsafe impl ShmSafe for ControlBody {}

const BODY_SIZE: usize = std::mem::size_of::<ControlBody>();
const _: () = assert!(BODY_SIZE == 128 * 4 + SETTINGS_MAX);
const SLOT_SIZE: usize = std::mem::size_of::<CachePadded<RoleSlot>>();
const _: () = assert!(SLOT_SIZE == 128);
/// Offset of role slot 0.
const ROLES_OFFSET: usize = HEADER_SIZE + BODY_SIZE;
const _: () = assert!(ROLES_OFFSET % 128 == 0);

const FINGERPRINT: u64 = Fingerprint::new(PART)
    .num(BODY_SIZE)
    .num(std::mem::offset_of!(ControlBody, stop))
    .num(std::mem::offset_of!(ControlBody, attach))
    .num(std::mem::offset_of!(ControlBody, table))
    .num(std::mem::offset_of!(ControlBody, settings))
    .num(std::mem::size_of::<SupervisorInfo>())
    .num(std::mem::size_of::<RoleSlot>())
    .num(std::mem::offset_of!(RoleSlot, restarts))
    .num(std::mem::offset_of!(RoleSlot, last_exit))
    .num(SLOT_SIZE)
    .finish();

/// Total size of a control segment with `roles` role slots.
pub(crate) fn size(roles: u32) -> usize {
    ROLES_OFFSET + roles as usize * SLOT_SIZE
}

fn spec(size: Option<usize>) -> SegmentSpec {
    SegmentSpec {
        part: PART,
        version: VERSION,
        fingerprint: FINGERPRINT,
        size,
    }
}

/// Errors of creating, opening and using a control segment. Neutral: the
/// command line adds what to do.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Creation failed.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// Opening or validation failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A field of the segment is out of range.
    #[error("segment {name}: field {field} is unreadable ({detail})")]
    Field {
        /// Segment name.
        name: String,
        /// The field.
        field: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The settings or the role table do not fit.
    #[error("run {run}: {detail}")]
    TooLarge {
        /// Run name.
        run: RunName,
        /// What does not fit.
        detail: String,
    },
    /// A live supervisor owns the run.
    #[error("run {run} is already running (supervisor pid {pid})")]
    Live {
        /// Run name.
        run: RunName,
        /// Pid recorded by that supervisor.
        pid: u32,
    },
    /// A live process already plays this role.
    #[error("role {role} of run {run} is already running (its slot is held; pid {pid} recorded)")]
    RoleTaken {
        /// Run name.
        run: RunName,
        /// The role's label.
        role: String,
        /// Pid recorded by that process.
        pid: u32,
    },
    /// A lock operation failed.
    #[error("segment {name}: locking failed: {err}")]
    Lock {
        /// Segment name.
        name: String,
        /// The error.
        err: std::io::Error,
    },
}

impl ControlError {
    /// Whether the control file's name is taken by something that is not
    /// one of our segments (see `OpenError::is_foreign`).
    pub(crate) fn is_foreign(&self) -> bool {
        matches!(self, ControlError::Open(e) if e.is_foreign())
    }

    /// Whether the segment exists but cannot be used as it is (corrupt,
    /// uninitialised, or from another version).
    pub(crate) fn is_damage(&self) -> bool {
        match self {
            ControlError::Open(e) => {
                !matches!(e, OpenError::NotFound { .. } | OpenError::Os { .. }) && !e.is_foreign()
            }
            ControlError::Field { .. } => true,
            _ => false,
        }
    }
}

/// A mapped control segment.
#[derive(Debug)]
pub struct Control {
    run: RunName,
    seg: Segment,
    /// Number of role slots; validated against the segment size on open.
    roles: u32,
}

impl Control {
    /// Creates the control segment of a new run with `roles` role slots,
    /// takes the supervisor lock and records the settings blob. Fails with
    /// `Create(AlreadyExists)` if the run exists.
    pub(crate) fn create(
        run: &RunName,
        settings: &[u8],
        roles: u32,
    ) -> Result<Control, ControlError> {
        if settings.is_empty() || settings.len() > SETTINGS_MAX {
            return Err(ControlError::TooLarge {
                run: run.clone(),
                detail: format!(
                    "the settings take {} bytes encoded, at most {SETTINGS_MAX} fit (is --out very long?)",
                    settings.len()
                ),
            });
        }
        if roles == 0 || roles > MAX_ROLES {
            return Err(ControlError::TooLarge {
                run: run.clone(),
                detail: format!("{roles} role processes, at most {MAX_ROLES} are allowed"),
            });
        }
        let mut lock_err = None;
        let seg = Segment::create(run, &spec(Some(size(roles))), |seg| {
            // Lock before publishing: whoever sees the segment initialised
            // also sees it owned.
            match lock::try_lock(seg.fd(), SUPERVISOR_LOCK_BYTE) {
                Ok(true) => {}
                Ok(false) => lock_err = Some(std::io::Error::other("lock taken during creation")),
                Err(e) => lock_err = Some(e),
            }
            let body: &ControlBody = seg.body().expect("control body fits by construction");
            let mut bytes = [0u8; SETTINGS_MAX];
            bytes[..settings.len()].copy_from_slice(settings);
            body.settings.write(bytes);
            body.table.settings_len.set(settings.len() as u32);
            body.table.role_count.set(roles);
            body.supervisor.pid.set(std::process::id());
            body.supervisor
                .start_ticks
                .set(crate::procinfo::own_start_ticks());
            body.supervisor.created_unix_ms.set(crate::units::unix_ms());
            body.supervisor.phase.set(RunPhase::Starting as u32);
        })?;
        let mut guard = CreatedSegments::new();
        guard.add(seg.name());
        if let Some(err) = lock_err {
            return Err(ControlError::Lock {
                name: seg.name().to_string(),
                err,
            });
        }
        guard.keep();
        Ok(Control {
            run: run.clone(),
            seg,
            roles,
        })
    }

    /// Opens and validates an existing control segment.
    pub fn open(run: &RunName, access: Access) -> Result<Control, ControlError> {
        let seg = Segment::open(run, &spec(None), access, Duration::from_secs(2))?;
        let field = |field, detail: String| ControlError::Field {
            name: seg.name().to_string(),
            field,
            detail,
        };
        let body: &ControlBody = seg.body().map_err(|e| field("body", e.to_string()))?;
        let roles = body.table.role_count.get();
        if roles == 0 || roles > MAX_ROLES {
            return Err(field(
                "role_count",
                format!("{roles}, expected 1..={MAX_ROLES}"),
            ));
        }
        if seg.len() != size(roles) {
            return Err(field(
                "role_count",
                format!(
                    "{roles} slots need {} bytes, the segment has {}",
                    size(roles),
                    seg.len()
                ),
            ));
        }
        let len = body.table.settings_len.get() as usize;
        if len == 0 || len > SETTINGS_MAX {
            return Err(field(
                "settings_len",
                format!("{len}, expected 1..={SETTINGS_MAX}"),
            ));
        }
        Ok(Control {
            run: run.clone(),
            seg,
            roles,
        })
    }

    /// The recorded settings blob (untrusted bytes: decode with a limit).
    pub(crate) fn settings_blob(&self) -> Vec<u8> {
        let b = self.body();
        let len = (b.table.settings_len.get() as usize).min(SETTINGS_MAX);
        b.settings.read()[..len].to_vec()
    }

    /// Number of role slots.
    pub(crate) fn role_count(&self) -> u32 {
        self.roles
    }

    /// Takes the supervisor lock (released when this handle is dropped)
    /// without changing anything in the run. Fails with `Live` if a
    /// supervisor holds it.
    pub(crate) fn lock(&self) -> Result<(), ControlError> {
        match lock::try_lock(self.seg.fd(), SUPERVISOR_LOCK_BYTE) {
            Ok(true) => Ok(()),
            Ok(false) => Err(ControlError::Live {
                run: self.run.clone(),
                pid: self.body().supervisor.pid.get(),
            }),
            Err(err) => Err(ControlError::Lock {
                name: self.seg.name().to_string(),
                err,
            }),
        }
    }

    /// Records us as the run's supervisor (after `lock`), counts a resume
    /// and lowers the stop flag.
    pub(crate) fn take_over(&self) {
        let s = &self.body().supervisor;
        s.pid.set(std::process::id());
        s.start_ticks.set(crate::procinfo::own_start_ticks());
        s.resumes.add(1);
        self.body().stop.clear();
    }

    /// Takes the lock of role slot `slot` (labelled `label` in messages) for
    /// the calling role process and records its pid. Fails with
    /// `RoleTaken` if a live process plays it.
    pub(crate) fn claim_role(&self, slot: u32, label: &str) -> Result<(), ControlError> {
        match lock::try_lock(self.seg.fd(), lock_byte(slot)) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ControlError::RoleTaken {
                    run: self.run.clone(),
                    role: label.to_string(),
                    pid: self.slot(slot).pid.get(),
                });
            }
            Err(err) => {
                return Err(ControlError::Lock {
                    name: self.seg.name().to_string(),
                    err,
                });
            }
        }
        let s = self.slot(slot);
        s.pid.set(std::process::id());
        s.start_ticks.set(crate::procinfo::own_start_ticks());
        s.state.set(RoleState::Starting as u32);
        Ok(())
    }

    /// Marks role slot `slot` attached and posts the attach semaphore.
    pub(crate) fn mark_attached(&self, slot: u32) {
        self.slot(slot).state.set(RoleState::Attached as u32);
        self.body().attach.post();
    }

    /// Whether a live supervisor holds the run (lock probe; works read-only).
    pub(crate) fn supervisor_alive(&self) -> bool {
        lock::is_locked(self.seg.fd(), SUPERVISOR_LOCK_BYTE).unwrap_or(false)
    }

    /// Whether a live process holds role slot `slot`'s lock.
    pub(crate) fn role_alive(&self, slot: u32) -> bool {
        slot < self.roles && lock::is_locked(self.seg.fd(), lock_byte(slot)).unwrap_or(false)
    }

    /// The run's name.
    pub(crate) fn run(&self) -> &RunName {
        &self.run
    }
    /// The segment.
    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }
    fn body(&self) -> &ControlBody {
        self.seg
            .body()
            .expect("validated at open: the segment holds the body")
    }
    fn slot(&self, slot: u32) -> &RoleSlot {
        debug_assert!(slot < self.roles, "role slot {slot} of {}", self.roles);
        // Out-of-range slots are a caller's bug; map them to the last slot
        // rather than outside the segment.
        let i = slot.min(self.roles - 1) as usize;
        let s: &CachePadded<RoleSlot> = self
            .seg
            .view(ROLES_OFFSET + i * SLOT_SIZE)
            .expect("validated at open: the segment holds role_count slots");
        s
    }

    /// The run-wide stop flag.
    pub(crate) fn stop_flag(&self) -> &Flag {
        &self.body().stop
    }
    /// The attach semaphore.
    pub(crate) fn attach_semaphore(&self) -> &Semaphore {
        &self.body().attach
    }

    /// Records the phase.
    pub fn set_phase(&self, p: RunPhase) {
        self.body().supervisor.phase.set(p as u32);
    }
    /// The recorded phase (`None` if the field is corrupt).
    pub(crate) fn phase(&self) -> Option<RunPhase> {
        RunPhase::decode(self.body().supervisor.phase.get())
    }
    /// Pid recorded by the current or last supervisor.
    pub(crate) fn supervisor_pid(&self) -> u32 {
        self.body().supervisor.pid.get()
    }
    /// How many times a supervisor resumed this run.
    pub(crate) fn resumes(&self) -> u64 {
        self.body().supervisor.resumes.get()
    }
    /// Creation time (ms since the Unix epoch).
    pub(crate) fn created_unix_ms(&self) -> u64 {
        self.body().supervisor.created_unix_ms.get()
    }
    /// Seconds of work done by earlier supervisors of this run.
    pub(crate) fn prior_seconds(&self) -> f64 {
        let v = f64::from_bits(self.body().supervisor.prior_seconds.get());
        if v.is_finite() && v >= 0.0 { v } else { 0.0 }
    }
    /// Records the seconds of work done so far (survives a supervisor crash).
    pub(crate) fn set_prior_seconds(&self, s: f64) {
        self.body().supervisor.prior_seconds.set(s.to_bits());
    }

    /// Records that the supervisor is about to start role slot `slot`
    /// (before the fork: the child may claim the slot and attach before
    /// the parent runs again, and what it writes must not be overwritten).
    pub(crate) fn record_spawning(&self, slot: u32) {
        let s = self.slot(slot);
        s.pid.set(0);
        s.start_ticks.set(0);
        s.state.set(RoleState::Starting as u32);
    }
    /// Records that the supervisor started `pid` for role slot `slot`
    /// (after the fork; the child writes the same pid when it claims the
    /// slot, and its start time and state are its own).
    pub(crate) fn record_spawn(&self, slot: u32, pid: u32) {
        self.slot(slot).pid.set(pid);
    }
    /// Records how role slot `slot` ended.
    pub(crate) fn record_exit(&self, slot: u32, status: ExitStatus) {
        let s = self.slot(slot);
        if status.success() {
            s.state.set(RoleState::Done as u32);
        } else {
            s.state.set(RoleState::Failed as u32);
            s.last_exit.set(status.encode());
        }
    }
    /// Counts a restart of role slot `slot`.
    pub(crate) fn record_restart(&self, slot: u32) {
        self.slot(slot).restarts.add(1);
    }
    /// Forgets that role slot `slot` finished (a resumed run starts its
    /// roles again).
    pub(crate) fn reset_role(&self, slot: u32) {
        self.slot(slot).state.set(RoleState::Idle as u32);
    }

    /// Whether no role process of the run ever started: the run's phase is
    /// still `Starting` and every role slot is as creation left it (no pid
    /// recorded by a role or after a fork, no restart, no exit, no live
    /// holder). A supervisor records a slot before each fork and a role
    /// records its pid before it touches anything, so such a run holds
    /// nothing but what its creation wrote.
    pub(crate) fn no_role_started(&self) -> bool {
        self.phase() == Some(RunPhase::Starting)
            && (0..self.roles).all(|i| {
                let s = self.slot(i);
                s.pid.get() == 0
                    && s.start_ticks.get() == 0
                    && s.restarts.get() == 0
                    && s.last_exit.get() == 0
                    && matches!(
                        RoleState::decode(s.state.get()),
                        RoleState::Idle | RoleState::Starting
                    )
                    && !self.role_alive(i)
            })
    }

    /// Snapshot of role slot `slot` for display.
    pub fn role_view(&self, slot: u32) -> RoleView {
        let s = self.slot(slot);
        RoleView {
            pid: s.pid.get(),
            state: RoleState::decode(s.state.get()),
            restarts: s.restarts.get(),
            last_exit: ExitStatus::decode(s.last_exit.get()),
            alive: self.role_alive(slot),
        }
    }
}

/// Byte of the control file whose OFD lock the live process of role slot
/// `slot` holds.
fn lock_byte(slot: u32) -> u64 {
    1 + slot as u64
}

/// A role slot as shown by `status`.
#[derive(Debug, Clone)]
pub struct RoleView {
    /// Last recorded pid.
    pub pid: u32,
    /// Recorded state.
    pub(crate) state: RoleState,
    /// Restarts so far.
    pub(crate) restarts: u64,
    /// Last abnormal exit.
    pub(crate) last_exit: Option<ExitStatus>,
    /// Whether a live process holds the role's lock.
    pub alive: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_open_claim() {
        let run = RunName::new(&format!("ut-ctl-{}", std::process::id())).unwrap();
        let c = Control::create(&run, b"settings", 3).unwrap();
        assert!(!c.stop_flag().is_set());
        // A second handle is another open file description: it sees the lock.
        let other = Control::open(&run, Access::ReadWrite).unwrap();
        assert_eq!(other.settings_blob(), b"settings");
        assert_eq!(other.role_count(), 3);
        assert!(other.supervisor_alive());
        assert!(matches!(other.lock(), Err(ControlError::Live { .. })));
        other.claim_role(0, "ping").unwrap();
        let third = Control::open(&run, Access::ReadOnly).unwrap();
        assert!(third.role_alive(0));
        assert!(!third.role_alive(1));
        assert!(!third.role_alive(3), "out of range is never alive");
        let fourth = Control::open(&run, Access::ReadWrite).unwrap();
        assert!(matches!(
            fourth.claim_role(0, "ping"),
            Err(ControlError::RoleTaken { .. })
        ));
        fourth.claim_role(2, "worker 1").unwrap();
        drop(other);
        // The role lock died with its holder's open file description.
        fourth.claim_role(0, "ping").unwrap();
        drop(c);
        assert!(!third.supervisor_alive());
        fourth.lock().unwrap();
        fourth.take_over();
        assert_eq!(fourth.resumes(), 1);
        crate::shm::segment::unlink(&run.segment(PART)).unwrap();
    }

    #[test]
    fn role_table_bounds() {
        let run = RunName::new(&format!("ut-ctlb-{}", std::process::id())).unwrap();
        assert!(matches!(
            Control::create(&run, b"s", MAX_ROLES + 1),
            Err(ControlError::TooLarge { .. })
        ));
        assert!(matches!(
            Control::create(&run, b"s", 0),
            Err(ControlError::TooLarge { .. })
        ));
        assert!(!crate::shm::segment::exists(&run.segment(PART)));
        let c = Control::create(&run, b"s", MAX_ROLES).unwrap();
        assert_eq!(c.segment().len(), size(MAX_ROLES));
        crate::shm::segment::unlink(&run.segment(PART)).unwrap();
    }

    #[test]
    fn exit_status_round_trip() {
        for e in [
            ExitStatus::Code(0),
            ExitStatus::Code(3),
            ExitStatus::Signal(9),
        ] {
            assert_eq!(ExitStatus::decode(e.encode()), Some(e));
        }
        assert_eq!(ExitStatus::decode(0), None);
        assert_eq!(ExitStatus::Signal(9).to_string(), "killed by SIGKILL");
        assert_eq!(ExitStatus::Code(1).to_string(), "exited with status 1");
    }
}
