//! The supervisor loop of `forkring run`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::control::{ControlError, ExitStatus, RoleState, RunPhase};
use crate::job::{JobHost, Registry, RoleId};
use crate::settings::RunSettings;
use crate::shm::segment::{self, Access, CreateError};
use crate::shm::{RunName, SpinPolicy};

use super::error::RunError;
use super::handoff::{self, EndCause};
use super::notify::Notifier;
use super::opened::{Hosts, OpenRun};
use super::policy::{Decision, RestartPolicy, RestartTracker};
use super::progress::Display;
use super::rolelog::RoleLogs;
use super::signals::Signals;
use super::spawn::spawn_role_piped;
use super::startup;

/// Options of `forkring run` beyond the recorded settings.
#[derive(Debug, Clone)]
pub(crate) struct RunOptions {
    /// Run name.
    pub(crate) name: RunName,
    /// The job settings (recorded in the control segment).
    pub(crate) settings: RunSettings,
    /// How long roles get to exit after a stop request before SIGKILL.
    pub(crate) stop_timeout: Duration,
    /// Restart limits.
    pub(crate) policy: RestartPolicy,
    /// End the run after this long.
    pub(crate) duration: Option<Duration>,
    /// No progress output.
    pub(crate) quiet: bool,
    /// Print the summary as JSON on stdout.
    pub(crate) json: bool,
    /// A new run may replace another run's results in the output directory.
    pub(crate) overwrite: bool,
    /// Whether `--seed` was given; when not, a resumed run keeps its
    /// recorded seed instead of refusing the fresh random one.
    pub(crate) seed_given: bool,
    /// `--group`: members of this group may read the run's segments
    /// (`status --user`). Checked by the caller: we are root or a member.
    pub(crate) group: Option<u32>,
}

impl RunOptions {
    /// The supervisor's own options, for `summary.json` (`supervisor`):
    /// those a resume may change, so they are not part of the recorded
    /// settings.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "duration_s": self.duration.map(|d| d.as_secs_f64()),
            "stop_timeout_s": self.stop_timeout.as_secs_f64(),
            "max_restarts": self.policy.max_restarts,
            "restart_window_s": self.policy.window.as_secs_f64(),
            "group": self.group,
        })
    }
}

/// Lifecycle of one role under this supervisor.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    /// Process `pid` is alive.
    Running { pid: u32 },
    /// Waiting for its backoff delay before a restart.
    Restarting { at: Instant },
    /// Exited normally: its work is done.
    Done,
    /// Died and will not be restarted (the run is stopping or gave up).
    Dead,
}

/// How the loop ended.
#[derive(Debug)]
enum Outcome {
    Ended(EndCause),
    GaveUp {
        role: RoleId,
        status: ExitStatus,
        cause: Option<String>,
    },
}

/// Refuses a new run that /dev/shm cannot hold, before creating anything.
fn check_shm_space(name: &RunName, settings: &RunSettings) -> Result<(), RunError> {
    let roles = settings.roles()?;
    let needed = crate::control::size(roles.len()) as u64 + settings.jobs_shm_bytes();
    let free = segment::shm_free_bytes().map_err(|errno| RunError::Os {
        what: "cannot read the free space of /dev/shm".into(),
        errno,
    })?;
    if needed > free {
        return Err(RunError::NoShmSpace {
            run: name.clone(),
            needed,
            free,
        });
    }
    Ok(())
}

/// Creates a new run or takes over a run whose supervisor died. Returns the
/// run and whether it was resumed.
fn open_or_create(opts: &RunOptions, registry: Registry) -> Result<(OpenRun, bool), RunError> {
    // Held until the new run exists (see `startup::Discarded`).
    let _discarded = match open_existing(opts, registry)? {
        Existing::Resume(c) => return Ok((c, true)),
        Existing::Absent => None,
        Existing::Discarded(d) => Some(d),
    };
    if !opts.overwrite {
        handoff::check_no_results(&opts.name, &opts.settings.out)?;
    }
    check_shm_space(&opts.name, &opts.settings)?;
    match OpenRun::create(&opts.name, &opts.settings) {
        Ok(c) => Ok((c, false)),
        // Another supervisor created it since we looked: it is live.
        Err(RunError::Control(ControlError::Create(CreateError::AlreadyExists { .. }))) => {
            match open_existing(opts, registry)? {
                Existing::Resume(c) => Ok((c, true)),
                _ => Err(RunError::CreatedMeanwhile(opts.name.clone())),
            }
        }
        Err(e) => Err(e),
    }
}

/// What `open_existing` found.
#[derive(Debug)]
enum Existing {
    /// No such run (or the leftovers of a handed-off one, removed).
    Absent,
    /// A run whose supervisor died, taken over.
    Resume(OpenRun),
    /// A run whose supervisor died while creating it, before any role
    /// started: removed; the lock keeps others away until the new run exists.
    Discarded(startup::Discarded),
}

/// Takes over run `opts.name` if it exists and its supervisor is dead. The
/// leftovers of a run that was already handed off, and a run whose
/// supervisor died while creating it, are removed, so the requested run
/// starts afresh.
fn open_existing(opts: &RunOptions, registry: Registry) -> Result<Existing, RunError> {
    if !segment::exists(&opts.name.segment(crate::control::PART)) {
        return Ok(Existing::Absent);
    }
    if let Some(d) = startup::half_made_control(&opts.name)? {
        return Ok(Existing::Discarded(d));
    }
    let cannot_resume = |e: RunError| match e {
        // A live supervisor is not damage: say so plainly.
        e @ RunError::Control(ControlError::Live { .. }) => e,
        e => RunError::CannotResume {
            run: opts.name.clone(),
            source: Box::new(e),
        },
    };
    let c = OpenRun::open(&opts.name, Access::ReadWrite, registry).map_err(cannot_resume)?;
    c.control.lock()?;
    previous_roles_gone(&c, opts.stop_timeout)?;
    if c.control.phase() == Some(RunPhase::HandedOff) {
        // Its supervisor finished the handoff and died while removing the
        // segments: finish that (by name: some are gone), control last.
        let control_name = c.control.segment().name().to_string();
        for n in segment_files_of(&opts.name)? {
            if n != control_name {
                let _ = segment::unlink(&n);
            }
        }
        let _ = segment::unlink(&control_name);
        eprintln!(
            "removed the leftovers of an earlier run {} (already handed off to {})",
            opts.name,
            c.settings.out.display()
        );
        return Ok(Existing::Absent);
    }
    if let Some(d) = startup::half_made_jobs(&c)? {
        return Ok(Existing::Discarded(d));
    }
    let mut requested = opts.settings.clone();
    if !opts.seed_given {
        for q in &mut requested.jobs {
            if let Some(r) = c.settings.job(q.job().name()) {
                q.adopt_seed(r);
            }
        }
    }
    let diffs = c.settings.differences(&requested);
    if !diffs.is_empty() {
        return Err(RunError::DifferentSettings {
            run: opts.name.clone(),
            diffs,
        });
    }
    c.control.take_over();
    Ok(Existing::Resume(c))
}

/// Waits until no process plays a role of `open`, whose supervisor lock we
/// just took. The dead supervisor's roles get SIGKILL from the kernel
/// (`PR_SET_PDEATHSIG`) when it dies, but a resume started at once can find
/// them still exiting: a role spawned now would find its slot taken, fail
/// and count as a restart. A slot still held after `timeout` (the
/// `--stop-timeout`, at most 10 s: a killed process exits in milliseconds)
/// is held by a process that does not die with the supervisor: refused,
/// with the pid the slot recorded (which may be stale).
fn previous_roles_gone(open: &OpenRun, timeout: Duration) -> Result<(), RunError> {
    let timeout = timeout.min(Duration::from_secs(10));
    let start = Instant::now();
    for r in open.roles.iter() {
        while open.control.role_alive(r.slot) {
            if start.elapsed() >= timeout {
                return Err(ControlError::RoleTaken {
                    run: open.run().clone(),
                    role: r.label(),
                    pid: open.control.role_view(r.slot).pid,
                }
                .into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

/// Creates (new run) or opens (resumed run) the jobs' segments.
fn job_hosts(open: &OpenRun, resumed: bool) -> Result<Vec<Box<dyn JobHost>>, RunError> {
    let how = if resumed {
        Hosts::Open(Access::ReadWrite)
    } else {
        Hosts::Create
    };
    match open.hosts(how) {
        Ok(jobs) => Ok(jobs),
        Err(e) if resumed => Err(RunError::CannotResume {
            run: open.run().clone(),
            source: Box::new(e.into()),
        }),
        Err(e) => {
            let _ = segment::unlink(open.control.segment().name());
            Err(e.into())
        }
    }
}

/// Lets group `gid` read every segment of the run (`--group`), before any
/// role starts. A new run that cannot be shared is removed: it never ran.
/// A resumed run keeps its segments (some may already be shared: a reader
/// accepts 0600 and 0640 alike).
fn share(
    open: &OpenRun,
    jobs: &[Box<dyn JobHost>],
    gid: u32,
    resumed: bool,
) -> Result<(), RunError> {
    let names: Vec<String> = std::iter::once(open.control.segment().name().to_string())
        .chain(jobs.iter().flat_map(|j| j.segment_names()))
        .collect();
    for n in &names {
        if let Err(errno) = segment::share_with_group(n, gid) {
            if !resumed {
                // The control segment last: it is what names the run.
                for m in names.iter().rev() {
                    let _ = segment::unlink(m);
                }
            }
            return Err(RunError::Share {
                name: n.clone(),
                gid,
                errno,
            });
        }
    }
    Ok(())
}

/// `forkring run`. `signals` must be installed before anything else (see
/// [`Signals::install`]) so that a stop request is never lost.
pub(crate) fn run(opts: RunOptions, signals: Signals, registry: Registry) -> Result<(), RunError> {
    let (open, resumed) = open_or_create(&opts, registry)?;
    let jobs = job_hosts(&open, resumed)?;
    if let Some(gid) = opts.group {
        share(&open, &jobs, gid, resumed)?;
    }
    if resumed {
        if matches!(
            open.control.phase(),
            Some(RunPhase::Stopping | RunPhase::HandingOff)
        ) {
            // The previous supervisor died while stopping: finish its stop.
            eprintln!(
                "run {}: its supervisor died while stopping it; handing off the results",
                opts.name
            );
            let out = open.settings.out.clone();
            handoff::hand_off_stopped(&open, &jobs, &out, registry, opts.json, opts.overwrite)?;
            return Ok(());
        }
        for j in &jobs {
            j.prepare_resume();
        }
    }
    let mut sup = Supervisor::new(opts, open, jobs, signals, resumed, registry);
    let outcome = sup.supervise();
    sup.finish(outcome)
}

struct Supervisor {
    opts: RunOptions,
    open: OpenRun,
    jobs: Vec<Box<dyn JobHost>>,
    registry: Registry,
    signals: Signals,
    /// By role slot.
    slots: BTreeMap<u32, Slot>,
    tracker: RestartTracker,
    display: Display,
    started: Instant,
    prior_seconds: f64,
    ready: bool,
    stop: Option<(EndCause, Instant)>,
    killed: bool,
    gave_up: Option<(RoleId, ExitStatus, Option<String>)>,
    /// The roles' stderr.
    logs: RoleLogs,
    interrupted: bool,
    /// systemd's notification socket, when started by systemd.
    notifier: Option<Notifier>,
}

impl Supervisor {
    fn new(
        opts: RunOptions,
        open: OpenRun,
        jobs: Vec<Box<dyn JobHost>>,
        signals: Signals,
        resumed: bool,
        registry: Registry,
    ) -> Self {
        let progress: Vec<_> = jobs.iter().map(|j| j.progress()).collect();
        // A job may set how often its figures are logged (the stream's
        // --rate-interval); the shortest wins.
        let interval = open
            .settings
            .jobs
            .iter()
            .filter_map(|j| j.log_interval())
            .min()
            .unwrap_or(super::progress::LOG_INTERVAL);
        let display = Display::new(opts.quiet, &progress, interval);
        let prior_seconds = if resumed {
            open.control.prior_seconds()
        } else {
            0.0
        };
        if resumed {
            display.log(&format!(
                "resuming run {} after its supervisor died ({})",
                opts.name,
                progress
                    .iter()
                    .map(|p| super::progress::describe(p, None))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
        if let Some(d) = opts.duration
            && prior_seconds > 0.0
        {
            // --duration counts the work of every supervisor of the run.
            let left = d.as_secs_f64() - prior_seconds;
            display.log(&if left > 0.0 {
                format!(
                    "--duration {:.1} s counts the run's earlier {prior_seconds:.1} s of work: {left:.1} s remain",
                    d.as_secs_f64()
                )
            } else {
                format!(
                    "--duration {:.1} s was already reached (the run has {prior_seconds:.1} s of work); finishing",
                    d.as_secs_f64()
                )
            });
        }
        let tracker = RestartTracker::new(opts.policy, open.roles.len());
        Supervisor {
            opts,
            open,
            jobs,
            registry,
            signals,
            slots: BTreeMap::new(),
            tracker,
            display,
            started: Instant::now(),
            prior_seconds,
            ready: false,
            stop: None,
            killed: false,
            gave_up: None,
            logs: RoleLogs::default(),
            interrupted: false,
            notifier: Notifier::from_env(),
        }
    }

    fn seconds(&self) -> f64 {
        self.prior_seconds + self.started.elapsed().as_secs_f64()
    }

    fn role(&self, slot: u32) -> RoleId {
        *self
            .open
            .roles
            .get(slot)
            .expect("slots come from the role table")
    }

    fn spawn(&mut self, slot: u32) {
        let role = self.role(slot);
        self.open.control.record_spawning(slot);
        match spawn_role_piped(&role, &self.opts.name) {
            Ok((pid, stderr)) => {
                let display = &self.display;
                self.logs
                    .add(slot, stderr, &mut |l: &str| display.passthrough(l));
                self.open.control.record_spawn(slot, pid);
                self.slots.insert(slot, Slot::Running { pid });
            }
            Err(e) => {
                // Treated like a crash: backoff, and the restart limit ends
                // a run that cannot start its roles at all.
                self.display.warn(&format!("cannot start {role}: {e}"));
                self.on_failure(slot, ExitStatus::Code(127));
            }
        }
    }

    fn supervise(&mut self) -> Outcome {
        let slots: Vec<u32> = self.open.roles.iter().map(|r| r.slot).collect();
        for &s in &slots {
            self.open.control.reset_role(s);
        }
        for s in slots {
            self.spawn(s);
        }
        loop {
            // Sleep until something happens: a role attaching (only while
            // starting), a signal, or the next tick.
            let tick = if self.ready {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(20)
            };
            let tick = self.until_next_event().map_or(tick, |d| d.min(tick));
            // Wake in time for the next systemd watchdog ping or status.
            let tick = self
                .notifier
                .as_ref()
                .map_or(tick, |n| n.until_due(Instant::now()).min(tick));
            let sigs = if self.ready {
                self.signals.wait(tick)
            } else {
                let _ = self
                    .open
                    .control
                    .attach_semaphore()
                    .wait(SpinPolicy::SLEEP, Instant::now() + tick);
                self.signals.wait(Duration::ZERO)
            };
            for s in sigs {
                match s {
                    Signal::SIGCHLD => {}
                    Signal::SIGINT => {
                        self.interrupted = true;
                        self.request_stop(EndCause::Signal("SIGINT".into()));
                    }
                    other => self.request_stop(EndCause::Signal(other.as_str().into())),
                }
            }
            self.reap();
            let display = &self.display;
            self.logs.pump(&mut |l: &str| display.passthrough(l));
            self.restart_due();
            self.coordinate();
            self.check_ready();
            self.enforce_stop_timeout();
            self.open.control.set_prior_seconds(self.seconds());
            let progress: Vec<_> = self.jobs.iter().map(|j| j.progress()).collect();
            let status = match (&self.stop, self.ready) {
                (Some(_), _) => "stopping",
                (None, true) => "running",
                (None, false) => "starting",
            };
            let restarts: u64 = handoff::restarts_by_role(&self.open).values().sum();
            self.display.update(&progress, restarts, status);
            if let Some(n) = &mut self.notifier {
                n.tick(Instant::now(), || {
                    format!("{status}: {}", self.display.line(&progress, restarts))
                });
            }

            let all_over = self
                .slots
                .values()
                .all(|s| matches!(s, Slot::Done | Slot::Dead));
            if all_over {
                self.display.finish();
                if let Some((role, status, cause)) = self.gave_up.take() {
                    return Outcome::GaveUp {
                        role,
                        status,
                        cause,
                    };
                }
                let cause = match &self.stop {
                    Some((c, _)) => c.clone(),
                    None => EndCause::Completed,
                };
                return Outcome::Ended(cause);
            }
        }
    }

    /// Time until the next due restart.
    fn until_next_event(&self) -> Option<Duration> {
        let now = Instant::now();
        self.slots
            .values()
            .filter_map(|s| match s {
                Slot::Restarting { at } => Some(at.saturating_duration_since(now)),
                _ => None,
            })
            .min()
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.on_exit(pid.as_raw() as u32, ExitStatus::Code(code))
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.on_exit(pid.as_raw() as u32, ExitStatus::Signal(sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    }

    fn on_exit(&mut self, pid: u32, status: ExitStatus) {
        let Some(slot) = self
            .slots
            .iter()
            .find(|(_, s)| **s == Slot::Running { pid })
            .map(|(r, _)| *r)
        else {
            return;
        };
        let role = self.role(slot);
        // Its last lines, before anything is decided on its exit.
        let display = &self.display;
        self.logs.drain(slot, &mut |l: &str| display.passthrough(l));
        self.open.control.record_exit(slot, status);
        // The process is reaped: it can no longer touch shared memory. Its
        // job may now take back what it held (the task pool requeues its
        // tasks at once).
        if let Some(j) = self.jobs.iter().find(|j| j.job().name() == role.job) {
            j.role_exited(&role, !status.success(), self.stop.is_some());
        }
        if status.success() {
            self.slots.insert(slot, Slot::Done);
            return;
        }
        if self.stop.is_some() {
            self.slots.insert(slot, Slot::Dead);
            return;
        }
        self.on_failure(slot, status);
    }

    fn on_failure(&mut self, slot: u32, status: ExitStatus) {
        let role = self.role(slot);
        match self.tracker.on_failure(slot, Instant::now()) {
            Decision::Restart { delay } => {
                self.open.control.record_restart(slot);
                self.display.log(&format!(
                    "{role} {status}; restarting in {} ms",
                    delay.as_millis()
                ));
                self.slots.insert(
                    slot,
                    Slot::Restarting {
                        at: Instant::now() + delay,
                    },
                );
            }
            Decision::GiveUp => {
                self.slots.insert(slot, Slot::Dead);
                let cause = self.logs.last_error(slot).map(str::to_string);
                self.gave_up = Some((role, status, cause));
                let p = self.opts.policy;
                self.display.warn(&format!(
                    "{role} {status}: more than {} within {:.1} s; stopping the run",
                    crate::units::plural(p.max_restarts as u64, "restart", "restarts"),
                    p.window.as_secs_f64()
                ));
                self.request_stop(EndCause::Signal("restart limit".into()));
            }
        }
    }

    fn restart_due(&mut self) {
        let now = Instant::now();
        let due: Vec<u32> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Restarting { at } if *at <= now))
            .map(|(r, _)| *r)
            .collect();
        for r in due {
            self.spawn(r);
        }
    }

    /// Cross-job rules: once every job that ends the run is complete, the
    /// others are asked to finish; and the whole run ends at `--duration`.
    fn coordinate(&mut self) {
        if self.stop.is_some() {
            return;
        }
        let mut enders = self
            .jobs
            .iter()
            .zip(&self.open.settings.jobs)
            .filter(|(_, s)| s.ends_run())
            .peekable();
        let ended = enders.peek().is_some() && enders.all(|(h, _)| h.is_complete());
        if ended {
            for (h, s) in self.jobs.iter().zip(&self.open.settings.jobs) {
                if !s.ends_run() {
                    h.request_finish();
                }
            }
        }
        // Counted over every supervisor of the run, so a resumed run does
        // not get the whole duration again.
        if let Some(d) = self.opts.duration
            && self.seconds() >= d.as_secs_f64()
        {
            self.display.log(&format!(
                "--duration {:.1} s reached; finishing",
                d.as_secs_f64()
            ));
            self.request_stop(EndCause::Duration);
        }
    }

    fn check_ready(&mut self) {
        if self.ready {
            return;
        }
        let all = self.slots.iter().all(|(r, s)| match s {
            Slot::Running { .. } => self.open.control.role_view(*r).state == RoleState::Attached,
            Slot::Done => true,
            _ => false,
        });
        if all && !self.slots.is_empty() {
            self.ready = true;
            self.open.control.set_phase(RunPhase::Running);
            if let Some(n) = &mut self.notifier {
                n.ready();
            }
            while self.open.control.attach_semaphore().try_wait() {}
        }
    }

    fn request_stop(&mut self, cause: EndCause) {
        if self.stop.is_some() {
            return;
        }
        // Bars off at once: the rest of the stop is logged line by line.
        self.display.finish();
        self.open.control.set_phase(RunPhase::Stopping);
        self.open.control.stop_flag().set();
        for j in &self.jobs {
            // --duration is the run's natural end: every job ends for good.
            // A signal or the restart limit only stops the roles; a resumed
            // run carries on.
            if cause == EndCause::Duration {
                j.request_finish();
            }
            j.kick();
        }
        for s in self.slots.values_mut() {
            if matches!(s, Slot::Restarting { .. }) {
                *s = Slot::Dead;
            }
        }
        if !matches!(cause, EndCause::Duration) {
            self.display.log(&format!(
                "stopping ({}); roles have {:.1} s to finish",
                match &cause {
                    EndCause::Signal(s) => s.as_str(),
                    _ => "end",
                },
                self.opts.stop_timeout.as_secs_f64()
            ));
        }
        if let Some(n) = &mut self.notifier {
            n.stopping();
        }
        self.stop = Some((cause, Instant::now() + self.opts.stop_timeout));
    }

    fn enforce_stop_timeout(&mut self) {
        let Some((_, deadline)) = &self.stop else {
            return;
        };
        if self.killed || Instant::now() < *deadline {
            return;
        }
        self.killed = true;
        for (slot, s) in &self.slots {
            if let Slot::Running { pid } = s {
                self.display.warn(&format!(
                    "{} (pid {pid}) did not stop in time; sending SIGKILL",
                    self.role(*slot)
                ));
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
        }
    }

    fn finish(mut self, outcome: Outcome) -> Result<(), RunError> {
        let seconds = self.seconds();
        self.open.control.set_prior_seconds(seconds);
        match outcome {
            Outcome::GaveUp {
                role,
                status,
                cause,
            } => {
                self.open.control.set_phase(RunPhase::Failed);
                let p = self.opts.policy;
                Err(RunError::RestartLimit {
                    run: self.opts.name.clone(),
                    role: role.label(),
                    status,
                    max: p.max_restarts,
                    window: p.window.as_secs_f64(),
                    cause,
                })
            }
            Outcome::Ended(cause) => {
                let out = self.open.settings.out.clone();
                if let Some(n) = &mut self.notifier {
                    n.status(&format!("handing off results to {}", out.display()));
                    n.stopping();
                }
                let display = &self.display;
                let note = |msg: &str| display.log(&format!("{msg} …"));
                let summary = handoff::write_results(
                    &self.open,
                    &self.jobs,
                    &out,
                    handoff::Ending {
                        seconds,
                        cause: &cause,
                        supervisor: self.opts.to_json(),
                        overwrite: self.opts.overwrite,
                    },
                    self.registry,
                    &note,
                )?;
                handoff::remove_segments(&self.open, &self.jobs);
                handoff::print_summary(&summary, self.registry, self.opts.json);
                if self.interrupted {
                    Err(RunError::Interrupted)
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Names of every /dev/shm file of `run`.
pub(crate) fn segment_files_of(run: &RunName) -> Result<Vec<String>, RunError> {
    let all = crate::shm::name::list_segments().map_err(RunError::ListShm)?;
    Ok(all
        .into_iter()
        .filter(|(r, _, _)| r == run)
        .map(|(_, _, f)| f)
        .collect())
}
