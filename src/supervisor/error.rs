//! Errors of the supervisor and of the operator verbs (`status`, `clean`,
//! `handoff`, `verify`): typed, with neutral messages. The command line
//! (`cli.rs`) picks the exit code and adds what to do.

use nix::errno::Errno;

use crate::control::{ControlError, ExitStatus};
use crate::job::{Difference, JobError, TooManyRoles};
use crate::outfile::OutputError;
use crate::shm::RunName;

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn joined(d: &[Difference]) -> String {
    d.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A failure of `forkring run` or of an operator verb.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad arguments (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The control segment.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The settings recorded in the control segment cannot be decoded.
    #[error("segment {segment}: field settings is unreadable ({detail})")]
    Settings {
        /// Segment name.
        segment: String,
        /// What was wrong.
        detail: String,
    },
    /// The role table does not match the recorded settings.
    #[error(
        "segment {segment}: field role_count is {found}, but the run's settings need {expected} roles"
    )]
    RoleCount {
        /// Segment name.
        segment: String,
        /// Slots in the segment.
        found: u32,
        /// Slots the settings need.
        expected: u32,
    },
    /// The run would have too many roles.
    #[error(transparent)]
    TooManyRoles(#[from] TooManyRoles),
    /// /dev/shm cannot hold the run.
    #[error("run {run} needs {:.1} MiB in /dev/shm, {:.1} MiB free", mib(*needed), mib(*free))]
    NoShmSpace {
        /// The run.
        run: RunName,
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// A system call failed.
    #[error("{what}: {errno}")]
    Os {
        /// What was attempted.
        what: String,
        /// The error.
        errno: Errno,
    },
    /// Listing /dev/shm failed.
    #[error("cannot list /dev/shm: {0}")]
    ListShm(std::io::Error),
    /// A run exists and could be taken over, but its segments are unusable.
    #[error("{source}. Run {run} exists but cannot be resumed")]
    CannotResume {
        /// The run.
        run: RunName,
        /// Why.
        source: Box<RunError>,
    },
    /// A run exists with other settings.
    #[error("run {run} exists with different settings ({})", joined(.diffs))]
    DifferentSettings {
        /// The run.
        run: RunName,
        /// What differs.
        diffs: Vec<Difference>,
    },
    /// Another supervisor created the run while we looked.
    #[error("run {0} was being created by another supervisor")]
    CreatedMeanwhile(RunName),
    /// A job failed.
    #[error(transparent)]
    Job(#[from] JobError),
    /// A role exceeded the restart limit (exit code 3).
    #[error(
        "role {role} {status}, and the run had more than {} within {window:.1} s; gave up{}",
        crate::units::plural(u64::from(*max), "restart", "restarts"),
        cause.as_ref().map(|c| format!(". The cause, as the role last reported it: {c}")).unwrap_or_default()
    )]
    RestartLimit {
        /// The run.
        run: RunName,
        /// The role that failed last.
        role: String,
        /// How it ended.
        status: ExitStatus,
        /// `--max-restarts`.
        max: u32,
        /// `--restart-window`, seconds.
        window: f64,
        /// The last error line the role printed, if any.
        cause: Option<String>,
    },
    /// The run was stopped by SIGINT (exit code 130).
    #[error("interrupted by SIGINT; results so far were handed off")]
    Interrupted,
    /// A job's part of the handoff failed.
    #[error("handoff of the {job} job failed: {source}")]
    Handoff {
        /// The run.
        run: RunName,
        /// The job.
        job: &'static str,
        /// Why.
        source: Box<JobError>,
    },
    /// Writing `summary.json` or preparing the output directory failed.
    #[error("{source}")]
    Output {
        /// The run, when the failure keeps its segments for a retry.
        run: Option<RunName>,
        /// Why.
        source: OutputError,
    },
    /// No such run.
    #[error("no run named {0} (nothing in /dev/shm/forkring.{0}.*)")]
    NoSuchRun(RunName),
    /// The run has no such role.
    #[error("run {run} has no role {role} (its roles: {roles})")]
    NoSuchRole {
        /// The run.
        run: RunName,
        /// The role asked for.
        role: String,
        /// The roles it has.
        roles: String,
    },
    /// A live supervisor holds the run.
    #[error("run {run} is live (supervisor pid {pid})")]
    Live {
        /// The run.
        run: RunName,
        /// Its supervisor's pid, if readable.
        pid: String,
    },
    /// A live process holds a segment.
    #[error("/dev/shm/{segment} is in use by a live process (a benchmark or a run being created)")]
    InUse {
        /// The segment.
        segment: String,
    },
    /// A role of a stopped run still runs.
    #[error("role {role} of run {run} is still running (pid {pid})")]
    RoleRunning {
        /// The run.
        run: RunName,
        /// The role.
        role: String,
        /// Its pid.
        pid: u32,
    },
    /// A file named like a segment of the run is not ours to remove: not a
    /// regular file, or another user's run that is not provably a dead
    /// forkring run.
    #[error("/dev/shm/{file} {detail}; not removing run {run}")]
    NotOurs {
        /// The run.
        run: RunName,
        /// The file.
        file: String,
        /// What it is.
        detail: String,
    },
    /// Sharing a segment with a group (`run --group`) failed.
    #[error("cannot share /dev/shm/{name} with group {gid} (chown, chmod 0640): {errno}")]
    Share {
        /// The segment.
        name: String,
        /// The group.
        gid: u32,
        /// The error.
        errno: Errno,
    },
    /// Removing a segment failed.
    #[error("cannot remove /dev/shm/{name}: {errno}")]
    Remove {
        /// The segment.
        name: String,
        /// The error.
        errno: Errno,
    },
    /// `status NAME` could not read the run (the list marks it instead).
    #[error("run {run} is unreadable: {detail}")]
    Unreadable {
        /// The run.
        run: RunName,
        /// Why.
        detail: String,
        /// Whether a file of the run is not ours (another user's, a FIFO):
        /// `clean` would not remove it.
        foreign: bool,
    },
    /// A new run would replace another run's results.
    #[error("{} already holds the results of run {other} (summary.json); writing this run's results there would replace them", out.display())]
    WouldOverwrite {
        /// The output directory.
        out: std::path::PathBuf,
        /// The run named in that summary.json ("?" if unreadable).
        other: String,
    },
    /// Writing to stdout failed (a closed pipe: the reader is gone).
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
    /// `verify` found a problem.
    #[error("verify {dir}: {detail}")]
    Verify {
        /// The directory.
        dir: String,
        /// What is wrong.
        detail: String,
    },
}

impl RunError {
    /// A `Verify` error.
    pub(crate) fn verify(dir: &std::path::Path, detail: impl Into<String>) -> Self {
        RunError::Verify {
            dir: dir.display().to_string(),
            detail: detail.into(),
        }
    }
}
