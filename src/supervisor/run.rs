//! The supervisor loop of `forkring run`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::error::{CmdResult, EXIT_INTERRUPTED, EXIT_RESTART_LIMIT, Failure};
use crate::settings::RunSettings;
use crate::shm::segment::{self, Access, CreateError};
use crate::shm::{RunName, SpinPolicy};

use super::control::{Control, ControlError, Phase, RoleState};
use super::handoff::{self, EndCause};
use super::job::{Hosts, JobHost};
use super::notify::Notifier;
use super::policy::{Decision, RestartPolicy, RestartTracker};
use super::progress::Display;
use super::role::{ExitStatus, Role};
use super::signals::Signals;
use super::spawn::spawn_role;

/// Options of `forkring run` beyond the recorded settings.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run name.
    pub name: RunName,
    /// The job settings (recorded in the control segment).
    pub settings: RunSettings,
    /// How long roles get to exit after a stop request before SIGKILL.
    pub stop_timeout: Duration,
    /// Restart limits.
    pub policy: RestartPolicy,
    /// End the run after this long.
    pub duration: Option<Duration>,
    /// No progress output.
    pub quiet: bool,
    /// Print the summary as JSON on stdout.
    pub json: bool,
    /// Whether `--seed` was given; when not, a resumed run keeps its
    /// recorded seed instead of refusing the fresh random one.
    pub seed_given: bool,
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
    GaveUp { role: Role, status: ExitStatus },
}

/// Shared-memory bytes a new run with `settings` needs.
pub fn shm_needed(settings: &RunSettings) -> u64 {
    super::control::SIZE as u64
        + settings
            .image
            .as_ref()
            .map_or(0, crate::image::layout::shm_bytes)
        + settings
            .stream
            .as_ref()
            .map_or(0, crate::stream::layout::shm_bytes)
}

/// Refuses a new run that /dev/shm cannot hold, before creating anything.
fn check_shm_space(name: &RunName, settings: &RunSettings) -> Result<(), Failure> {
    let needed = shm_needed(settings);
    let free = segment::shm_free_bytes()
        .map_err(|e| Failure::runtime(format!("cannot read the free space of /dev/shm: {e}")))?;
    if needed > free {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        return Err(Failure::runtime(format!(
            "run {name} needs {:.1} MiB in /dev/shm, {:.1} MiB free; free space (`forkring clean`), enlarge the tmpfs, or with docker use --shm-size",
            mib(needed),
            mib(free)
        )));
    }
    Ok(())
}

/// Creates a new run or takes over a run whose supervisor died.
fn open_or_create(opts: &RunOptions) -> Result<(Control, bool), Failure> {
    if let Some(c) = open_existing(opts)? {
        return Ok((c, true));
    }
    check_shm_space(&opts.name, &opts.settings)?;
    match Control::create(&opts.name, &opts.settings) {
        Ok(c) => Ok((c, false)),
        // Another supervisor created it since we looked: it is live.
        Err(ControlError::Create(CreateError::AlreadyExists { .. })) => {
            open_existing(opts)?.map(|c| (c, true)).ok_or_else(|| {
                Failure::runtime(format!(
                    "run {} was being created by another supervisor",
                    opts.name
                ))
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Takes over run `opts.name` if it exists and its supervisor is dead
/// (`None` if it does not exist). The leftovers of a run that was already
/// handed off are removed, so the requested run starts afresh.
fn open_existing(opts: &RunOptions) -> Result<Option<Control>, Failure> {
    if !segment::exists(&opts.name.segment(super::control::PART)) {
        return Ok(None);
    }
    let c = Control::open(&opts.name, Access::ReadWrite).map_err(|e| {
        Failure::runtime(format!(
            "{e}. Run {0} exists but cannot be resumed; discard it with `forkring clean {0}`",
            opts.name
        ))
    })?;
    c.lock()?;
    if c.phase() == Some(Phase::HandedOff) {
        // Its supervisor finished the handoff and died while removing the
        // segments: finish that (by name: some are gone), control last.
        let control_name = c.segment().name().to_string();
        for n in segment_files_of(&opts.name)? {
            if n != control_name {
                let _ = segment::unlink(&n);
            }
        }
        let _ = segment::unlink(&control_name);
        eprintln!(
            "forkring: removed the leftovers of an earlier run {} (already handed off to {})",
            opts.name,
            c.settings().out.display()
        );
        return Ok(None);
    }
    let mut requested = opts.settings.clone();
    if !opts.seed_given {
        let rec = c.settings();
        if let (Some(r), Some(q)) = (&rec.image, &mut requested.image) {
            q.seed = r.seed;
        }
        if let (Some(r), Some(q)) = (&rec.stream, &mut requested.stream) {
            q.seed = r.seed;
        }
    }
    let diffs = c.settings().differences(&requested);
    if !diffs.is_empty() {
        return Err(Failure::runtime(format!(
            "run {0} exists with different settings ({1}); resume it with the same settings, or discard it with `forkring clean {0}`",
            opts.name,
            diffs.join("; ")
        )));
    }
    c.take_over();
    Ok(Some(c))
}

/// Creates (new run) or opens (resumed run) the jobs' segments.
fn job_hosts(control: &Control, resumed: bool) -> Result<Vec<Box<dyn JobHost>>, Failure> {
    let how = if resumed {
        Hosts::Open(Access::ReadWrite)
    } else {
        Hosts::Create
    };
    match super::job::hosts(control, how) {
        Ok(jobs) => Ok(jobs),
        Err(f) if resumed => {
            let run = control.run();
            Err(Failure::runtime(format!(
                "{}. Run {run} cannot be resumed; discard it with `forkring clean {run}`",
                f.message
            )))
        }
        Err(f) => {
            let _ = segment::unlink(control.segment().name());
            Err(f)
        }
    }
}

/// `forkring run`. `signals` must be installed before anything else (see
/// [`Signals::install`]) so that a stop request is never lost.
pub fn run(opts: RunOptions, signals: Signals) -> CmdResult {
    let (control, resumed) = open_or_create(&opts)?;
    let jobs = job_hosts(&control, resumed)?;
    if resumed {
        if matches!(control.phase(), Some(Phase::Stopping | Phase::HandingOff)) {
            // The previous supervisor died while stopping: finish its stop.
            println!(
                "run {}: its supervisor died while stopping it; handing off the results",
                opts.name
            );
            return crate::ops::hand_off_stopped(
                &control,
                &jobs,
                &control.settings().out,
                opts.json,
            );
        }
        for j in &jobs {
            j.prepare_resume();
        }
    }
    let mut sup = Supervisor::new(opts, control, jobs, signals, resumed);
    let outcome = sup.supervise();
    sup.finish(outcome)
}

struct Supervisor {
    opts: RunOptions,
    control: Control,
    jobs: Vec<Box<dyn JobHost>>,
    signals: Signals,
    slots: BTreeMap<Role, Slot>,
    tracker: RestartTracker,
    display: Display,
    started: Instant,
    prior_seconds: f64,
    ready: bool,
    stop: Option<(EndCause, Instant)>,
    killed: bool,
    gave_up: Option<(Role, ExitStatus)>,
    interrupted: bool,
    /// systemd's notification socket, when started by systemd.
    notifier: Option<Notifier>,
}

impl Supervisor {
    fn new(
        opts: RunOptions,
        control: Control,
        jobs: Vec<Box<dyn JobHost>>,
        signals: Signals,
        resumed: bool,
    ) -> Self {
        let progress: Vec<_> = jobs.iter().map(|j| j.progress()).collect();
        // A stream's --rate-interval sets how often its rate is logged.
        let interval = control
            .settings()
            .stream
            .as_ref()
            .map_or(super::progress::LOG_INTERVAL, |s| {
                Duration::from_secs_f64(s.rate_interval)
            });
        let display = Display::new(opts.quiet, opts.json, &progress, interval);
        let prior_seconds = if resumed {
            control.prior_seconds()
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
        let tracker = RestartTracker::new(opts.policy);
        Supervisor {
            opts,
            control,
            jobs,
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
            interrupted: false,
            notifier: Notifier::from_env(),
        }
    }

    fn seconds(&self) -> f64 {
        self.prior_seconds + self.started.elapsed().as_secs_f64()
    }

    fn spawn(&mut self, role: Role) {
        match spawn_role(role, &self.opts.name) {
            Ok(pid) => {
                self.control.record_spawn(role, pid);
                self.slots.insert(role, Slot::Running { pid });
            }
            Err(e) => {
                // Treated like a crash: backoff, and the restart limit ends
                // a run that cannot start its roles at all.
                self.display.warn(&format!("cannot start {role}: {e}"));
                self.on_failure(role, ExitStatus::Code(127));
            }
        }
    }

    fn supervise(&mut self) -> Outcome {
        for j in &self.jobs {
            for &r in j.roles() {
                self.control.reset_role(r);
            }
        }
        let roles: Vec<Role> = self
            .jobs
            .iter()
            .flat_map(|j| j.roles().iter().copied())
            .collect();
        for r in roles {
            self.spawn(r);
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
            self.restart_due();
            self.coordinate();
            self.check_ready();
            self.enforce_stop_timeout();
            self.control.set_prior_seconds(self.seconds());
            let progress: Vec<_> = self.jobs.iter().map(|j| j.progress()).collect();
            let status = match (&self.stop, self.ready) {
                (Some(_), _) => "stopping",
                (None, true) => "running",
                (None, false) => "starting",
            };
            let restarts: u64 = handoff::restarts_by_role(&self.control, &self.jobs)
                .values()
                .sum();
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
                if let Some((role, status)) = self.gave_up {
                    return Outcome::GaveUp { role, status };
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
        let mut next: Option<Duration> = None;
        for s in self.slots.values() {
            if let Slot::Restarting { at } = s {
                let d = at.saturating_duration_since(now);
                next = Some(next.map_or(d, |n: Duration| n.min(d)));
            }
        }
        next
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
        let Some(role) = self
            .slots
            .iter()
            .find(|(_, s)| **s == Slot::Running { pid })
            .map(|(r, _)| *r)
        else {
            return;
        };
        self.control.record_exit(role, status);
        if status.success() {
            self.slots.insert(role, Slot::Done);
            return;
        }
        if self.stop.is_some() {
            self.slots.insert(role, Slot::Dead);
            return;
        }
        self.on_failure(role, status);
    }

    fn on_failure(&mut self, role: Role, status: ExitStatus) {
        match self.tracker.on_failure(role, Instant::now()) {
            Decision::Restart { delay } => {
                self.control.record_restart(role);
                self.display.log(&format!(
                    "{role} {status}; restarting in {} ms",
                    delay.as_millis()
                ));
                self.slots.insert(
                    role,
                    Slot::Restarting {
                        at: Instant::now() + delay,
                    },
                );
            }
            Decision::GiveUp => {
                self.slots.insert(role, Slot::Dead);
                self.gave_up = Some((role, status));
                let p = self.opts.policy;
                self.display.warn(&format!(
                    "{role} {status}: more than {} restarts within {:.1} s; stopping the run",
                    p.max_restarts,
                    p.window.as_secs_f64()
                ));
                self.request_stop(EndCause::Signal("restart limit".into()));
            }
        }
    }

    fn restart_due(&mut self) {
        let now = Instant::now();
        let due: Vec<Role> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Restarting { at } if *at <= now))
            .map(|(r, _)| *r)
            .collect();
        for r in due {
            self.spawn(r);
        }
    }

    /// Cross-job rules: the stream ends when the image is complete, and the
    /// whole run ends at `--duration`.
    fn coordinate(&mut self) {
        if self.stop.is_some() {
            return;
        }
        let image_done = self
            .jobs
            .iter()
            .any(|j| j.name() == "image" && j.is_complete());
        if image_done {
            for j in &self.jobs {
                if j.name() != "image" {
                    j.request_finish();
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
            Slot::Running { .. } => self.control.role_view(*r).state == RoleState::Attached,
            Slot::Done => true,
            _ => false,
        });
        if all && !self.slots.is_empty() {
            self.ready = true;
            self.control.set_phase(Phase::Running);
            if let Some(n) = &mut self.notifier {
                n.ready();
            }
            while self.control.attach_semaphore().try_wait() {}
        }
    }

    fn request_stop(&mut self, cause: EndCause) {
        if self.stop.is_some() {
            return;
        }
        self.control.set_phase(Phase::Stopping);
        self.control.stop_flag().set();
        for j in &self.jobs {
            // --duration is the run's natural end: the stream ends for good.
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
        for (role, s) in &self.slots {
            if let Slot::Running { pid } = s {
                self.display.warn(&format!(
                    "{role} (pid {pid}) did not stop in time; sending SIGKILL"
                ));
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
        }
    }

    fn finish(mut self, outcome: Outcome) -> CmdResult {
        let seconds = self.seconds();
        self.control.set_prior_seconds(seconds);
        match outcome {
            Outcome::GaveUp { role, status } => {
                self.control.set_phase(Phase::Failed);
                let p = self.opts.policy;
                Err(Failure::with_code(
                    EXIT_RESTART_LIMIT,
                    format!(
                        "role {role} {status}, and the run had more than {} restarts within {:.1} s; gave up. \
                         The segments are kept: fix the cause, then run the same `forkring run --name {}` to resume, or discard them with `forkring clean {}`",
                        p.max_restarts,
                        p.window.as_secs_f64(),
                        self.opts.name,
                        self.opts.name
                    ),
                ))
            }
            Outcome::Ended(cause) => {
                let out = self.control.settings().out.clone();
                if let Some(n) = &mut self.notifier {
                    n.status(&format!("handing off results to {}", out.display()));
                    n.stopping();
                }
                let summary =
                    handoff::write_results(&self.control, &self.jobs, &out, seconds, &cause)?;
                handoff::remove_segments(&self.control, &self.jobs);
                if self.opts.json {
                    println!("{}", serde_json::to_string(&summary).expect("serialisable"));
                } else {
                    println!("{}", handoff::summary_line(&summary));
                }
                if self.interrupted {
                    Err(Failure::with_code(
                        EXIT_INTERRUPTED,
                        "interrupted by SIGINT; results so far were handed off",
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Removes every segment of `run` if no supervisor is alive. Returns the
/// names removed.
pub fn clean_run(run: &RunName) -> Result<Vec<String>, Failure> {
    let names: Vec<String> = segment_files_of(run)?;
    if names.is_empty() {
        return Ok(names);
    }
    // The supervisor lock lives on the control file whatever its content, so
    // probe it raw (the segment may be corrupt). Holding the lock while
    // removing keeps a supervisor from starting on the run meanwhile.
    let control_name = run.segment(super::control::PART);
    let _guard = match segment::open_raw(&control_name) {
        Ok(fd) => {
            use std::os::fd::AsFd;
            match crate::shm::lock::try_lock(fd.as_fd(), super::control::SUPERVISOR_LOCK_BYTE) {
                Ok(true) => Some(fd),
                Ok(false) => {
                    let pid = Control::open(run, Access::ReadOnly)
                        .map(|c| c.supervisor_pid().to_string())
                        .unwrap_or_else(|_| "unknown".into());
                    return Err(Failure::runtime(format!(
                        "run {run} is live (supervisor pid {pid}); stop it first (SIGTERM), then clean"
                    )));
                }
                Err(e) => return Err(Failure::runtime(format!("cannot lock {control_name}: {e}"))),
            }
        }
        Err(_) => {
            // No control file (a benchmark's segments, or a run half
            // removed): each segment's creator holds its byte 0 while alive.
            for n in &names {
                if let Ok(fd) = segment::open_raw(n) {
                    use std::os::fd::AsFd;
                    if crate::shm::lock::is_locked(fd.as_fd(), 0).unwrap_or(false) {
                        return Err(Failure::runtime(format!(
                            "/dev/shm/{n} is in use by a live process (a benchmark or a run being created); not cleaning run {run}"
                        )));
                    }
                }
            }
            None
        }
    };
    for n in names.iter().filter(|n| **n != control_name) {
        segment::unlink(n).map_err(|e| Failure::runtime(format!("cannot remove {n}: {e}")))?;
    }
    segment::unlink(&control_name)
        .map_err(|e| Failure::runtime(format!("cannot remove {control_name}: {e}")))?;
    Ok(names)
}

/// Names of every /dev/shm file of `run`.
pub fn segment_files_of(run: &RunName) -> Result<Vec<String>, Failure> {
    let all = crate::shm::name::list_segments()
        .map_err(|e| Failure::runtime(format!("cannot list /dev/shm: {e}")))?;
    Ok(all
        .into_iter()
        .filter(|(r, _, _)| r == run)
        .map(|(_, _, f)| f)
        .collect())
}
