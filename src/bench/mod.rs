//! `forkring bench`: measurements between two processes on this machine.
//!
//! Shared here: the description of the machine, the table and JSON output,
//! the peer process (our own executable re-exec'd as `bench-peer`), and the
//! cleanup registry that removes bench segments and kills the peer on every
//! exit path, including SIGINT/SIGTERM (through the `ctrlc` crate: the bench
//! parent is an ordinary short-lived command, unlike the supervisor, which
//! reads its signals from a signalfd).
//!
//! - [`transport`]: pass latency and message throughput, forkring's
//!   primitives against pipes, unix sockets and eventfds.
//! - [`image`]: the image job's stepping, solo and alternating, and the
//!   Python ping-pong system's size table (README).
//! - [`stream`]: the stream job against generation alone and against the
//!   same pipeline over a pipe and a unix socket; CPU at 1 kHz.
//! - [`minirun`]: a run's segments and real role processes, without the
//!   supervisor's display and pass, for the job benchmarks.
//! - [`peer`]: the `bench-peer` side of every measurement.

pub(crate) mod export;
pub(crate) mod image;
pub(crate) mod minirun;
pub(crate) mod peer;
pub(crate) mod stream;
pub(crate) mod tasks;
pub mod transport;

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use crate::exit::EXIT_INTERRUPTED;
use crate::shm::RunName;
use crate::shm::segment;

/// Why a benchmark failed. Typed like every library error; the command line
/// picks the exit code.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad arguments (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// A measurement failed, in the bench's own words.
    #[error("{0}")]
    Failed(String),
    /// SIGINT or SIGTERM.
    #[error("interrupted; bench peer killed and bench segments removed")]
    Interrupted,
    /// A job's code failed.
    #[error(transparent)]
    Job(#[from] crate::job::JobError),
    /// A segment.
    #[error(transparent)]
    Segments(#[from] crate::shm::SegmentsError),
    /// The control segment.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// A result file.
    #[error(transparent)]
    Output(#[from] crate::outfile::OutputError),
}

impl BenchError {
    /// A measurement failure.
    pub(crate) fn failed(msg: impl Into<String>) -> Self {
        BenchError::Failed(msg.into())
    }
    /// A usage error.
    pub(crate) fn usage(msg: impl Into<String>) -> Self {
        BenchError::Usage(msg.into())
    }
    /// Whether it is a usage error.
    pub(crate) fn is_usage(&self) -> bool {
        matches!(self, BenchError::Usage(_))
    }
}

macro_rules! via_segments {
    ($($t:ty),*) => {$(
        impl From<$t> for BenchError {
            fn from(e: $t) -> Self {
                BenchError::Segments(e.into())
            }
        }
    )*};
}
via_segments!(
    crate::shm::taskq::TableError,
    crate::shm::RingError,
    crate::shm::CreateError,
    crate::shm::OpenError,
    crate::shm::segment::OutOfBounds
);

impl From<crate::image::step::StepError> for BenchError {
    fn from(e: crate::image::step::StepError) -> Self {
        BenchError::Job(e.into())
    }
}

impl From<crate::stream::consumer::ConsumerError> for BenchError {
    fn from(e: crate::stream::consumer::ConsumerError) -> Self {
        BenchError::Job(e.into())
    }
}

// ---------------------------------------------------------------------------
// Cleanup on every exit path
// ---------------------------------------------------------------------------

/// What the interrupt handler must undo: segments to remove, peers to kill.
#[derive(Debug)]
struct Cleanup {
    segments: Vec<String>,
    peers: Vec<u32>,
}

static CLEANUP: Mutex<Cleanup> = Mutex::new(Cleanup {
    segments: Vec::new(),
    peers: Vec::new(),
});

fn cleanup() -> MutexGuard<'static, Cleanup> {
    CLEANUP.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Installs (once per process) a SIGINT/SIGTERM/SIGHUP handler that kills
/// the bench peers, removes the bench segments and exits with code 130.
pub fn install_interrupt_handler() -> Result<(), BenchError> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| ctrlc::set_handler(on_interrupt).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| BenchError::failed(format!("cannot install the SIGINT/SIGTERM handler: {e}")))
}

fn on_interrupt() {
    // Holding the lock until exit keeps the main thread from reaping a peer
    // (and its pid being reused) between our kill and our exit.
    let c = cleanup();
    for &pid in &c.peers {
        let _ = nix::sys::signal::kill(
            Pid::from_raw(pid as libc::pid_t),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for name in &c.segments {
        let _ = segment::unlink(name);
    }
    eprintln!("interrupted: bench peer killed and bench segments removed");
    std::process::exit(EXIT_INTERRUPTED);
}

/// Registers a process to kill on SIGINT/SIGTERM (until [`unregister_peer`]).
pub(crate) fn register_peer(pid: u32) {
    cleanup().peers.push(pid);
}

/// Forgets a process registered with [`register_peer`] (call before or
/// while reaping it, so that a reused pid is never signalled).
pub(crate) fn unregister_peer(pid: u32) {
    cleanup().peers.retain(|p| *p != pid);
}

/// "each figure is the best of 3 runs", or "one run per figure".
pub(crate) fn runs_note(repeat: u32) -> String {
    if repeat == 1 {
        "one run per figure".into()
    } else {
        format!("each figure is the best of {repeat} runs")
    }
}

/// The best (smallest) of `repeat` measurements of a duration, to keep
/// interference from other load on a shared machine out of the figure.
pub(crate) fn best_of<E>(
    repeat: u32,
    mut measure: impl FnMut() -> Result<f64, E>,
) -> Result<f64, E> {
    let mut best = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        best = best.min(measure()?);
    }
    Ok(best)
}

/// A scratch directory for a benchmark's files, removed on drop.
#[derive(Debug)]
pub(crate) struct Scratch(pub(crate) std::path::PathBuf);

impl Scratch {
    /// `$TMPDIR/forkring-bench-<pid>-<tag>`, created.
    pub(crate) fn new(tag: &str) -> Result<Scratch, BenchError> {
        let d = std::env::temp_dir().join(format!("forkring-bench-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&d)
            .map_err(|e| BenchError::failed(format!("{}: {e}", d.display())))?;
        Ok(Scratch(d))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `forkring run --name RUN --quiet --out DIR/out-TAG ARGS` to
/// completion (this executable), with the run's segments (`control` and
/// `parts`) removed on drop and on SIGINT whatever state it is left in.
/// Returns the output directory.
pub(crate) fn forkring_run(
    run: &RunName,
    parts: &[&str],
    dir: &std::path::Path,
    tag: &str,
    args: &[String],
) -> Result<PathBuf, BenchError> {
    use std::io::Read;
    let _guards: Vec<SegmentGuard> = std::iter::once(&"control")
        .chain(parts)
        .map(|p| SegmentGuard::new(run, p))
        .collect();
    let out = dir.join(format!("out-{tag}"));
    let mut child = std::process::Command::new("/proc/self/exe")
        .arg("run")
        .args(["--name", run.as_str(), "--quiet", "--out"])
        .arg(&out)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::failed(format!("cannot start a run: {e}")))?;
    register_peer(child.id());
    let st = child.wait();
    unregister_peer(child.id());
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let st = st.map_err(|e| BenchError::failed(format!("cannot wait for the run: {e}")))?;
    if !st.success() {
        return Err(BenchError::failed(format!(
            "the {tag} run {st}: {}",
            err.trim()
        )));
    }
    Ok(out)
}

/// The run name of this process's bench segments: `bench-<pid>`.
pub fn run_name() -> RunName {
    RunName::new(&format!("bench-{}", std::process::id())).expect("bench-<pid> is a valid run name")
}

/// Removes a bench segment when dropped, and on SIGINT/SIGTERM while alive.
/// Create the guard *before* the segment, so no window is left uncovered.
#[derive(Debug)]
pub struct SegmentGuard {
    name: String,
}

impl SegmentGuard {
    /// Registers segment `part` of `run` (as named in /dev/shm) for removal.
    pub(crate) fn new(run: &RunName, part: &str) -> SegmentGuard {
        let name = run.segment(part);
        cleanup().segments.push(name.clone());
        SegmentGuard { name }
    }
}

impl Drop for SegmentGuard {
    fn drop(&mut self) {
        let mut c = cleanup();
        let _ = segment::unlink(&self.name);
        c.segments.retain(|n| *n != self.name);
    }
}

// ---------------------------------------------------------------------------
// The peer process
// ---------------------------------------------------------------------------

/// How to start the peer: an executable that runs `bench-peer ARGS` as the
/// forkring binary does.
#[derive(Debug, Clone)]
pub struct Launcher {
    exe: PathBuf,
    env: Option<(OsString, OsString)>,
}

impl Launcher {
    /// Our own executable, `/proc/self/exe` (the forkring binary).
    pub(crate) fn this_executable() -> Launcher {
        Launcher {
            exe: PathBuf::from("/proc/self/exe"),
            env: None,
        }
    }

    /// Another executable (a bench harness re-exec'ing itself) that acts as
    /// the peer when `key=value` is in its environment.
    pub fn with_env(exe: PathBuf, key: &str, value: &str) -> Launcher {
        Launcher {
            exe,
            env: Some((key.into(), value.into())),
        }
    }
}

/// How often a blocked side re-checks that its peer is alive.
pub(crate) const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Idle checks without progress before a side gives up on its peer.
pub(crate) const MAX_IDLE_CHECKS: u32 = 60;

/// A running `bench-peer`: own process group, SIGKILL on our death, stdout
/// (its one-line report) and stderr (its error) captured. Killed and reaped
/// when dropped unless [`PeerProcess::finish`] reaped it.
#[derive(Debug)]
pub(crate) struct PeerProcess {
    what: String,
    child: Child,
    pid: u32,
    status: Option<ExitStatus>,
    watch: Option<std::thread::JoinHandle<()>>,
}

/// Something to do when the peer exits unsuccessfully while we may be
/// blocked waiting for it in a way that exit does not end (eventfd reads).
pub(crate) type Poke = Box<dyn FnOnce() + Send>;

impl PeerProcess {
    /// Starts `launcher bench-peer ARGS`. `inherit` are descriptors the peer
    /// gets under the same numbers (we create them close-on-exec; only the
    /// child clears the flag, so no other exec of this process leaks them).
    /// The caller must close its copies of the peer's ends afterwards, so
    /// that the peer's death reads as end-of-file.
    pub(crate) fn spawn(
        launcher: &Launcher,
        what: &str,
        args: &[String],
        inherit: &[BorrowedFd<'_>],
        poke: Option<Poke>,
    ) -> Result<PeerProcess, BenchError> {
        let mut cmd = Command::new(&launcher.exe);
        cmd.arg0("forkring")
            .arg("bench-peer")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for v in crate::supervisor::spawn::SUPERVISOR_ONLY_ENV {
            cmd.env_remove(v);
        }
        if let Some((k, v)) = &launcher.env {
            cmd.env(k, v);
        }
        let fds: Vec<RawFd> = inherit.iter().map(|fd| fd.as_raw_fd()).collect();
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe calls (fcntl, prctl, getppid) on a vector
        // allocated before the fork; it allocates nothing itself.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            })
        };
        // Register under the lock in which we spawn, so an interrupt either
        // comes before the child exists or finds its pid.
        let (child, pid) = {
            let mut c = cleanup();
            let child = cmd.spawn().map_err(|e| {
                BenchError::failed(format!(
                    "cannot start the bench peer {}: {e}",
                    launcher.exe.display()
                ))
            })?;
            let pid = child.id();
            c.peers.push(pid);
            (child, pid)
        };
        let watch = poke.map(|poke| {
            std::thread::spawn(move || {
                // WNOWAIT: only watch; the main thread reaps. ECHILD means it
                // reaped already, and then it no longer waits for us.
                let st = waitid(
                    Id::Pid(Pid::from_raw(pid as libc::pid_t)),
                    WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
                );
                if !matches!(st, Ok(WaitStatus::Exited(_, 0)) | Err(_)) {
                    poke();
                }
            })
        });
        Ok(PeerProcess {
            what: what.to_string(),
            child,
            pid,
            status: None,
            watch,
        })
    }

    /// Reaps the peer if it has exited. The pid leaves the cleanup registry
    /// in the same critical section, so the interrupt handler never signals
    /// a reaped (possibly reused) pid.
    fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            let mut c = cleanup();
            if let Ok(Some(st)) = self.child.try_wait() {
                c.peers.retain(|p| *p != self.pid);
                self.status = Some(st);
            }
        }
        if self.status.is_some()
            && let Some(w) = self.watch.take()
        {
            let _ = w.join();
        }
        self.status
    }

    /// Waits up to `timeout` for the peer to exit.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_reap() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn kill_and_reap(&mut self) {
        if self.status.is_some() {
            return;
        }
        {
            let mut c = cleanup();
            let _ = self.child.kill();
            if let Ok(st) = self.child.wait() {
                self.status = Some(st);
            }
            c.peers.retain(|p| *p != self.pid);
        }
        if let Some(w) = self.watch.take() {
            let _ = w.join();
        }
    }

    fn read_stream(r: Option<&mut impl Read>) -> String {
        let mut s = String::new();
        if let Some(r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    }

    /// The failure of a peer that exited with `st`.
    fn failure(&mut self, st: ExitStatus, context: &str) -> BenchError {
        let err = Self::read_stream(self.child.stderr.as_mut());
        let err = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .trim_start_matches("error: ")
            .to_string();
        let how = match (
            st.code(),
            std::os::unix::process::ExitStatusExt::signal(&st),
        ) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            _ => "ended".to_string(),
        };
        if err.is_empty() {
            BenchError::failed(format!("bench peer ({}) {how} {context}", self.what))
        } else {
            BenchError::failed(format!("bench peer ({}) {how} {context}: {err}", self.what))
        }
    }

    /// Called by a side that has waited [`IDLE_CHECK`] without progress;
    /// `idles` counts such calls for the current wait. Fails if the peer
    /// died or made no progress for [`MAX_IDLE_CHECKS`] checks.
    pub(crate) fn idle(&mut self, idles: &mut u32) -> Result<(), BenchError> {
        *idles += 1;
        if let Some(st) = self.try_reap() {
            return Err(self.failure(st, "before the measurement was complete"));
        }
        if *idles >= MAX_IDLE_CHECKS {
            return Err(BenchError::failed(format!(
                "bench peer ({}) made no progress for {} s; is the machine overloaded or the peer stopped?",
                self.what,
                (IDLE_CHECK * MAX_IDLE_CHECKS).as_secs()
            )));
        }
        Ok(())
    }

    /// The failure to report when the peer closed its end early (end of
    /// file, or a poke): it died or is dying, so wait for it and say why.
    pub(crate) fn gone(&mut self) -> BenchError {
        match self.wait_exit(Duration::from_secs(5)) {
            Some(st) => self.failure(st, "before the measurement was complete"),
            None => {
                self.kill_and_reap();
                BenchError::failed(format!(
                    "bench peer ({}) closed its end early but did not exit",
                    self.what
                ))
            }
        }
    }

    /// Waits for the peer to exit and returns its report (stdout), or its
    /// failure.
    pub(crate) fn finish(mut self) -> Result<String, BenchError> {
        let st = match self.wait_exit(Duration::from_secs(10)) {
            Some(st) => st,
            None => {
                self.kill_and_reap();
                return Err(BenchError::failed(format!(
                    "bench peer ({}) did not exit within 10 s after the measurement",
                    self.what
                )));
            }
        };
        if !st.success() {
            return Err(self.failure(st, "after the measurement"));
        }
        Ok(Self::read_stream(self.child.stdout.as_mut()))
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Makes an owned descriptor from a number inherited from the bench parent
/// (`--fd N` of `bench-peer`), after checking that it is open and not a
/// standard stream.
pub(crate) fn inherited_fd(fd: RawFd) -> Result<OwnedFd, BenchError> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only queries the descriptor's flags.
    if fd <= 2 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(BenchError::usage(format!(
            "--fd {fd} is not an inherited descriptor (bench-peer is started by `forkring bench`)"
        )));
    }
    // SAFETY: the descriptor is open (checked above) and was passed to this
    // process for the peer alone: nothing else in it owns or closes it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Keep it out of anything this process might exec.
    // SAFETY: sets a flag on a descriptor we own.
    unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(owned)
}

// ---------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------

/// What the figures were measured on.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    /// CPU model (`model name` of /proc/cpuinfo).
    pub(crate) cpu: String,
    /// Logical CPUs this process may run on.
    pub(crate) cpus: usize,
    /// Kernel release.
    pub(crate) kernel: String,
}

impl Machine {
    /// Reads /proc.
    pub(crate) fn detect() -> Machine {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            info.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        let cpu = field("model name")
            .or_else(|| field("Model"))
            .or_else(|| field("cpu model"))
            .unwrap_or_else(|| "unknown CPU".to_string());
        let listed = info
            .lines()
            .filter(|l| l.split(':').next().map(str::trim) == Some("processor"))
            .count();
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(listed.max(1));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        Machine { cpu, cpus, kernel }
    }

    /// One line: `CPU, N logical CPUs, Linux RELEASE`.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{}, {} logical CPU{}, Linux {}",
            self.cpu,
            self.cpus,
            if self.cpus == 1 { "" } else { "s" },
            self.kernel
        )
    }
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// A measured figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Figure {
    /// One-way pass latency in nanoseconds.
    LatencyNs(f64),
    /// Messages per second.
    MsgsPerS(f64),
}

impl Figure {
    /// How many times better than `base` (same kind): for latency
    /// `base / self`, for throughput `self / base`.
    pub(crate) fn ratio_to(self, base: Figure) -> Option<f64> {
        match (self, base) {
            (Figure::LatencyNs(x), Figure::LatencyNs(b)) if x > 0.0 => Some(b / x),
            (Figure::MsgsPerS(x), Figure::MsgsPerS(b)) if b > 0.0 => Some(x / b),
            _ => None,
        }
    }
}

/// One measurement, as printed.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// Mechanism name (`turn-spin`, `pipe`, ...).
    pub(crate) mechanism: &'static str,
    /// `pass` or `throughput`.
    pub(crate) kind: &'static str,
    /// Passes or messages measured.
    pub(crate) count: u64,
    /// Measured time.
    pub(crate) seconds: f64,
    /// The figure.
    pub(crate) figure: Figure,
    /// Ratio to the pipe of the same kind, when the pipe was measured.
    pub(crate) ratio_to_pipe: Option<f64>,
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn figure_text(f: Figure) -> String {
    match f {
        Figure::LatencyNs(ns) if ns >= 10_000.0 => format!("{:.1} µs one-way", ns / 1000.0),
        Figure::LatencyNs(ns) => format!("{ns:.1} ns one-way"),
        Figure::MsgsPerS(r) if r >= 1e6 => format!("{:.2} M msgs/s", r / 1e6),
        Figure::MsgsPerS(r) => format!("{:.1} k msgs/s", r / 1e3),
    }
}

/// Prints the table: a title, the machine, notes, then one line per row.
pub(crate) fn print_table(title: &str, machine: &Machine, notes: &[String], rows: &[Row]) {
    println!("{title}");
    println!("machine: {}", machine.describe());
    for n in notes {
        println!("{n}");
    }
    println!();
    let header = ["mechanism", "kind", "count", "result", "vs pipe"];
    let lines: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.mechanism.to_string(),
                r.kind.to_string(),
                thousands(r.count),
                figure_text(r.figure),
                match r.ratio_to_pipe {
                    Some(x) if x >= 100.0 => format!("{x:.0}x"),
                    Some(x) => format!("{x:.2}x"),
                    None => "-".to_string(),
                },
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for l in &lines {
        for (w, cell) in width.iter_mut().zip(l) {
            *w = (*w).max(cell.len());
        }
    }
    let print = |cells: [&str; 5]| {
        println!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4],
        )
    };
    print(header);
    for l in &lines {
        print([&l[0], &l[1], &l[2], &l[3], &l[4]]);
    }
}

/// Prints one JSON object per row, one per line.
pub(crate) fn print_json(machine: &Machine, rows: &[Row]) {
    for r in rows {
        let mut o = serde_json::Map::new();
        o.insert("mechanism".into(), r.mechanism.into());
        o.insert("kind".into(), r.kind.into());
        match r.figure {
            Figure::LatencyNs(ns) => o.insert("latency_ns".into(), ns.into()),
            Figure::MsgsPerS(x) => o.insert("msgs_per_s".into(), x.into()),
        };
        o.insert(
            "ratio_to_pipe".into(),
            r.ratio_to_pipe.map_or(serde_json::Value::Null, Into::into),
        );
        o.insert("count".into(), r.count.into());
        o.insert("seconds".into(), r.seconds.into());
        o.insert("cpu".into(), machine.cpu.clone().into());
        o.insert("cpus".into(), machine.cpus.into());
        println!("{}", serde_json::Value::Object(o));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10_000_000), "10,000,000");
    }

    #[test]
    fn ratios_point_the_right_way() {
        let pipe = Figure::LatencyNs(5000.0);
        assert_eq!(Figure::LatencyNs(50.0).ratio_to(pipe), Some(100.0));
        let pipe = Figure::MsgsPerS(1e6);
        assert_eq!(Figure::MsgsPerS(2.5e7).ratio_to(pipe), Some(25.0));
        assert_eq!(Figure::MsgsPerS(1.0).ratio_to(Figure::LatencyNs(1.0)), None);
    }

    #[test]
    fn machine_is_described() {
        let m = Machine::detect();
        assert!(m.cpus >= 1);
        assert!(!m.cpu.is_empty());
    }
}
