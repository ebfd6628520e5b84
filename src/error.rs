//! How commands end: every library error, typed, and the exit codes.
//! `cli.rs` turns an [`Error`] into a one-line message with what to do, and
//! an exit code.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failure; the message says what and what to do |
//! | 2 | usage error: bad arguments or options |
//! | 3 | the run gave up: a role exceeded the restart limit |
//! | 130 | interrupted by SIGINT (Ctrl-C); the results so far were handed off |

use crate::bench::BenchError;
use crate::job::JobError;
use crate::supervisor::error::RunError;

/// Exit code of a failure.
pub(crate) const EXIT_FAILURE: i32 = 1;
/// Exit code of a usage error.
pub(crate) const EXIT_USAGE: i32 = 2;
/// Exit code when the restart limit was exceeded.
pub(crate) const EXIT_RESTART_LIMIT: i32 = 3;
/// Exit code after a SIGINT-initiated stop.
pub(crate) const EXIT_INTERRUPTED: i32 = 130;

/// Every error a command can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The supervisor or an operator verb.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A job (a role process, a job's own command).
    #[error(transparent)]
    Job(#[from] JobError),
    /// A benchmark.
    #[error(transparent)]
    Bench(#[from] BenchError),
}

/// A command's end as the operator sees it: a one-line message (the error
/// and what to do about it) and an exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Process exit code.
    pub(crate) code: i32,
    /// One-line cause, with what to do about it.
    pub message: String,
}
