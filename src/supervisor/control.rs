//! The control segment of a run: `forkring.NAME.control`.
//!
//! It holds who supervises the run, the run-wide stop flag, the attach
//! semaphore, one slot per role, and the run's settings. It is created first
//! and unlinked last, and its file carries the liveness locks (see
//! `shm/lock.rs`): byte 0 is held by the live supervisor, byte `1 + role` by
//! the live role process.
//!
//! Commit points and crash behaviour:
//! - settings: written once before the header is published; immutable after.
//! - supervisor pid/phase, role pids/states/restarts: informational. They are
//!   read for display and for messages only; liveness decisions use the locks,
//!   so a stale pid left by a killed process is harmless.
//! - stop flag: raised by the supervisor; a role that sees it finishes its
//!   current step and exits 0. A supervisor that resumes a run lowers it.

use std::time::Duration;

use crate::settings::RunSettings;
use crate::shm::cell::ShmSafe;
use crate::shm::layout::Fingerprint;
use crate::shm::lock;
use crate::shm::segment::{self, Access, CreateError, OpenError, Segment, SegmentSpec};
use crate::shm::{CachePadded, Flag, Param32, Param64, RunName, Semaphore, Stat64, VolatileCell};

use super::role::{ExitStatus, ROLE_COUNT, Role};

/// Part name of the control segment.
pub const PART: &str = "control";
/// Layout version of the control segment.
pub const VERSION: u32 = 1;
/// Capacity of the settings blob.
pub const SETTINGS_MAX: usize = 8192;
/// Byte of the control file locked by the live supervisor.
pub const SUPERVISOR_LOCK_BYTE: u64 = 0;

/// Phase of a run, as recorded by its supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Phase {
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

impl Phase {
    fn decode(v: u32) -> Option<Phase> {
        Some(match v {
            0 => Phase::Starting,
            1 => Phase::Running,
            2 => Phase::Stopping,
            3 => Phase::HandingOff,
            4 => Phase::HandedOff,
            5 => Phase::Failed,
            _ => return None,
        })
    }
    /// Lower-case name for display.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::HandingOff => "handing-off",
            Phase::HandedOff => "handed-off",
            Phase::Failed => "failed",
        }
    }
}

/// State of a role slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RoleState {
    /// Not part of the run, or not started yet.
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
    pub fn name(self) -> &'static str {
        match self {
            RoleState::Idle => "idle",
            RoleState::Starting => "starting",
            RoleState::Attached => "running",
            RoleState::Done => "done",
            RoleState::Failed => "failed",
        }
    }
}

/// One role's slot.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RoleSlot {
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
pub struct SupervisorInfo {
    /// Pid of the current (or last) supervisor. Informational.
    pid: Param32,
    /// A `Phase`.
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

/// Body of the control segment (after the 128-byte header).
#[repr(C)]
pub struct ControlBody {
    supervisor: CachePadded<SupervisorInfo>,
    /// Run-wide stop flag; roles also sleep on their job's words, which the
    /// supervisor kicks after raising this.
    stop: CachePadded<Flag>,
    /// Posted by each role process once it has attached to its segments.
    attach: CachePadded<Semaphore>,
    roles: [CachePadded<RoleSlot>; ROLE_COUNT],
    /// Length of the encoded settings; untrusted, checked against
    /// `SETTINGS_MAX`.
    settings_len: Param32,
    _pad: Param32,
    settings: VolatileCell<[u8; SETTINGS_MAX]>,
}

// SAFETY: repr(C); every field is ShmSafe.
unsafe impl ShmSafe for ControlBody {}

impl std::fmt::Debug for ControlBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlBody").finish_non_exhaustive()
    }
}

const BODY_SIZE: usize = std::mem::size_of::<ControlBody>();
const _: () = assert!(BODY_SIZE == 9216);

/// Total size of the control segment.
pub const SIZE: usize = crate::shm::header::HEADER_SIZE + BODY_SIZE;

const FINGERPRINT: u64 = Fingerprint::new(PART)
    .num(BODY_SIZE)
    .num(std::mem::size_of::<RoleSlot>())
    .num(std::mem::offset_of!(ControlBody, stop))
    .num(std::mem::offset_of!(ControlBody, attach))
    .num(std::mem::offset_of!(ControlBody, roles))
    .num(std::mem::offset_of!(ControlBody, settings_len))
    .num(std::mem::offset_of!(ControlBody, settings))
    .num(ROLE_COUNT)
    .finish();

/// The control segment's spec.
pub fn spec() -> SegmentSpec {
    SegmentSpec {
        part: PART,
        version: VERSION,
        fingerprint: FINGERPRINT,
        size: Some(SIZE),
    }
}

/// Errors of creating, opening or taking over a control segment.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Creation failed.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// Opening or validation failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The settings blob is invalid.
    #[error("segment {name}: field settings is unreadable ({detail}); run `forkring clean {run}`")]
    Settings {
        /// Segment name.
        name: String,
        /// Run name.
        run: String,
        /// What was wrong.
        detail: String,
    },
    /// A live supervisor owns the run.
    #[error(
        "run {run} is already running (supervisor pid {pid}); pick another --name or stop it first"
    )]
    Live {
        /// Run name.
        run: String,
        /// Pid recorded by that supervisor.
        pid: u32,
    },
    /// A live process already plays this role.
    #[error("role {role} of run {run} is already running (pid {pid})")]
    RoleTaken {
        /// Run name.
        run: String,
        /// The role.
        role: Role,
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

/// A mapped control segment with its decoded settings.
#[derive(Debug)]
pub struct Control {
    run: RunName,
    seg: Segment,
    settings: RunSettings,
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Control {
    /// Creates the control segment of a new run, takes the supervisor lock
    /// and records `settings`. Fails with `AlreadyExists` if the run exists.
    pub fn create(run: &RunName, settings: &RunSettings) -> Result<Control, ControlError> {
        let blob = settings.encode().map_err(|e| ControlError::Settings {
            name: run.segment(PART),
            run: run.to_string(),
            detail: e.to_string(),
        })?;
        if blob.len() > SETTINGS_MAX {
            return Err(ControlError::Settings {
                name: run.segment(PART),
                run: run.to_string(),
                detail: format!(
                    "{} bytes encoded, at most {SETTINGS_MAX} fit (is --out very long?)",
                    blob.len()
                ),
            });
        }
        let mut lock_err = None;
        let seg = Segment::create(run, &spec(), |seg| {
            // Lock before publishing: whoever sees the segment initialised
            // also sees it owned.
            match lock::try_lock(seg.fd(), SUPERVISOR_LOCK_BYTE) {
                Ok(true) => {}
                Ok(false) => lock_err = Some(std::io::Error::other("lock taken during creation")),
                Err(e) => lock_err = Some(e),
            }
            let body: &ControlBody = seg.body().expect("control body fits by construction");
            let mut bytes = [0u8; SETTINGS_MAX];
            bytes[..blob.len()].copy_from_slice(&blob);
            body.settings.write(bytes);
            body.settings_len.set(blob.len() as u32);
            body.supervisor.pid.set(std::process::id());
            body.supervisor
                .start_ticks
                .set(crate::procinfo::own_start_ticks());
            body.supervisor.created_unix_ms.set(now_unix_ms());
            body.supervisor.phase.set(Phase::Starting as u32);
        })?;
        if let Some(err) = lock_err {
            let _ = segment::unlink(seg.name());
            return Err(ControlError::Lock {
                name: seg.name().to_string(),
                err,
            });
        }
        Ok(Control {
            run: run.clone(),
            seg,
            settings: settings.clone(),
        })
    }

    /// Opens and validates an existing control segment and decodes its
    /// settings.
    pub fn open(run: &RunName, access: Access) -> Result<Control, ControlError> {
        let seg = Segment::open(run, &spec(), access, Duration::from_secs(2))?;
        let body: &ControlBody = seg.body().map_err(|e| ControlError::Settings {
            name: seg.name().to_string(),
            run: run.to_string(),
            detail: e.to_string(),
        })?;
        let len = body.settings_len.get() as usize;
        if len == 0 || len > SETTINGS_MAX {
            return Err(ControlError::Settings {
                name: seg.name().to_string(),
                run: run.to_string(),
                detail: format!("settings_len is {len}, expected 1..={SETTINGS_MAX}"),
            });
        }
        let bytes = body.settings.read();
        // Untrusted bytes: decoded with a size limit, then checked against
        // every bound the command line enforces.
        let settings = RunSettings::decode(&bytes[..len])
            .map_err(|e| e.to_string())
            .and_then(|s| s.validate().map(|()| s))
            .map_err(|detail| ControlError::Settings {
                name: seg.name().to_string(),
                run: run.to_string(),
                detail,
            })?;
        Ok(Control {
            run: run.clone(),
            seg,
            settings,
        })
    }

    /// Takes the supervisor lock of a run whose supervisor died, records us
    /// as its supervisor and lowers the stop flag (`lock` then `take_over`).
    /// Fails with `Live` if a supervisor holds the lock.
    pub fn adopt(&self) -> Result<(), ControlError> {
        self.lock()?;
        self.take_over();
        Ok(())
    }

    /// Takes the supervisor lock (released when this handle is dropped)
    /// without changing anything in the run. Fails with `Live` if a
    /// supervisor holds it.
    pub fn lock(&self) -> Result<(), ControlError> {
        match lock::try_lock(self.seg.fd(), SUPERVISOR_LOCK_BYTE) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ControlError::Live {
                    run: self.run.to_string(),
                    pid: self.body().supervisor.pid.get(),
                });
            }
            Err(err) => {
                return Err(ControlError::Lock {
                    name: self.seg.name().to_string(),
                    err,
                });
            }
        }
        Ok(())
    }

    /// Records us as the run's supervisor (after `lock`), counts a resume
    /// and lowers the stop flag.
    pub fn take_over(&self) {
        let s = &self.body().supervisor;
        s.pid.set(std::process::id());
        s.start_ticks.set(crate::procinfo::own_start_ticks());
        s.resumes.add(1);
        self.body().stop.clear();
    }

    /// Takes the lock of `role` for the calling role process and records its
    /// pid. Fails with `RoleTaken` if a live process plays it.
    pub fn claim_role(&self, role: Role) -> Result<(), ControlError> {
        match lock::try_lock(self.seg.fd(), role.lock_byte()) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ControlError::RoleTaken {
                    run: self.run.to_string(),
                    role,
                    pid: self.slot(role).pid.get(),
                });
            }
            Err(err) => {
                return Err(ControlError::Lock {
                    name: self.seg.name().to_string(),
                    err,
                });
            }
        }
        let slot = self.slot(role);
        slot.pid.set(std::process::id());
        slot.start_ticks.set(crate::procinfo::own_start_ticks());
        slot.state.set(RoleState::Starting as u32);
        Ok(())
    }

    /// Marks `role` attached and posts the attach semaphore.
    pub fn mark_attached(&self, role: Role) {
        self.slot(role).state.set(RoleState::Attached as u32);
        self.body().attach.post();
    }

    /// Whether a live supervisor holds the run (lock probe; works read-only).
    pub fn supervisor_alive(&self) -> bool {
        lock::is_locked(self.seg.fd(), SUPERVISOR_LOCK_BYTE).unwrap_or(false)
    }

    /// `Ok` while a live supervisor holds the run; otherwise the error a
    /// role stops with (it is resumed when a supervisor starts again).
    pub fn require_supervisor(&self) -> Result<(), crate::error::Failure> {
        if self.supervisor_alive() {
            return Ok(());
        }
        let run = &self.run;
        Err(crate::error::Failure::runtime(format!(
            "the supervisor of run {run} is gone; stopping (start `forkring run --name {run}` with the same settings to resume)"
        )))
    }

    /// Whether a live process holds `role`'s lock.
    pub fn role_alive(&self, role: Role) -> bool {
        lock::is_locked(self.seg.fd(), role.lock_byte()).unwrap_or(false)
    }

    /// The run's name.
    pub fn run(&self) -> &RunName {
        &self.run
    }
    /// The recorded settings.
    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }
    /// The segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }
    fn body(&self) -> &ControlBody {
        self.seg
            .body()
            .expect("validated at open: the segment has exactly SIZE bytes")
    }
    fn slot(&self, role: Role) -> &RoleSlot {
        &self.body().roles[role.index()]
    }

    /// The run-wide stop flag.
    pub fn stop_flag(&self) -> &Flag {
        &self.body().stop
    }
    /// The attach semaphore.
    pub fn attach_semaphore(&self) -> &Semaphore {
        &self.body().attach
    }

    /// Records the phase.
    pub fn set_phase(&self, p: Phase) {
        self.body().supervisor.phase.set(p as u32);
    }
    /// The recorded phase (`None` if the field is corrupt).
    pub fn phase(&self) -> Option<Phase> {
        Phase::decode(self.body().supervisor.phase.get())
    }
    /// Pid recorded by the current or last supervisor.
    pub fn supervisor_pid(&self) -> u32 {
        self.body().supervisor.pid.get()
    }
    /// How many times a supervisor resumed this run.
    pub fn resumes(&self) -> u64 {
        self.body().supervisor.resumes.get()
    }
    /// Creation time (ms since the Unix epoch).
    pub fn created_unix_ms(&self) -> u64 {
        self.body().supervisor.created_unix_ms.get()
    }
    /// Seconds of work done by earlier supervisors of this run.
    pub fn prior_seconds(&self) -> f64 {
        let v = f64::from_bits(self.body().supervisor.prior_seconds.get());
        if v.is_finite() && v >= 0.0 { v } else { 0.0 }
    }
    /// Records the seconds of work done so far (survives a supervisor crash).
    pub fn set_prior_seconds(&self, s: f64) {
        self.body().supervisor.prior_seconds.set(s.to_bits());
    }

    /// Records that the supervisor started `pid` for `role`.
    pub fn record_spawn(&self, role: Role, pid: u32) {
        let slot = self.slot(role);
        slot.pid.set(pid);
        slot.start_ticks.set(0);
        slot.state.set(RoleState::Starting as u32);
    }
    /// Records how `role` ended.
    pub fn record_exit(&self, role: Role, status: ExitStatus) {
        let slot = self.slot(role);
        if status.success() {
            slot.state.set(RoleState::Done as u32);
        } else {
            slot.state.set(RoleState::Failed as u32);
            slot.last_exit.set(status.encode());
        }
    }
    /// Counts a restart of `role`.
    pub fn record_restart(&self, role: Role) {
        self.slot(role).restarts.add(1);
    }
    /// Forgets that `role` finished (a resumed run starts its roles again).
    pub fn reset_role(&self, role: Role) {
        self.slot(role).state.set(RoleState::Idle as u32);
    }

    /// Snapshot of a role slot for display.
    pub fn role_view(&self, role: Role) -> RoleView {
        let slot = self.slot(role);
        RoleView {
            role,
            pid: slot.pid.get(),
            state: RoleState::decode(slot.state.get()),
            restarts: slot.restarts.get(),
            last_exit: ExitStatus::decode(slot.last_exit.get()),
            alive: self.role_alive(role),
        }
    }
}

/// A role slot as shown by `status`.
#[derive(Debug, Clone)]
pub struct RoleView {
    /// The role.
    pub role: Role,
    /// Last recorded pid.
    pub pid: u32,
    /// Recorded state.
    pub state: RoleState,
    /// Restarts so far.
    pub restarts: u64,
    /// Last abnormal exit.
    pub last_exit: Option<ExitStatus>,
    /// Whether a live process holds the role's lock.
    pub alive: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ImageSettings;

    fn settings() -> RunSettings {
        RunSettings {
            out: "/tmp/out".into(),
            image: Some(ImageSettings {
                width: 8,
                height: 8,
                seed: 1,
            }),
            stream: None,
        }
    }

    #[test]
    fn create_open_claim() {
        let run = RunName::new(&format!("ut-ctl-{}", std::process::id())).unwrap();
        let c = Control::create(&run, &settings()).unwrap();
        assert!(!c.stop_flag().is_set());
        // A second handle is another open file description: it sees the lock.
        let other = Control::open(&run, Access::ReadWrite).unwrap();
        assert_eq!(other.settings(), &settings());
        assert!(other.supervisor_alive());
        assert!(matches!(other.adopt(), Err(ControlError::Live { .. })));
        other.claim_role(Role::Ping).unwrap();
        let third = Control::open(&run, Access::ReadOnly).unwrap();
        assert!(third.role_alive(Role::Ping));
        assert!(!third.role_alive(Role::Pong));
        let fourth = Control::open(&run, Access::ReadWrite).unwrap();
        assert!(matches!(
            fourth.claim_role(Role::Ping),
            Err(ControlError::RoleTaken { .. })
        ));
        drop(other);
        // The role lock died with its holder's open file description.
        fourth.claim_role(Role::Ping).unwrap();
        drop(c);
        assert!(!third.supervisor_alive());
        fourth.adopt().unwrap();
        assert_eq!(fourth.resumes(), 1);
        segment::unlink(&run.segment(PART)).unwrap();
    }
}
