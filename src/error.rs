//! How commands end: every library error, typed. `cli.rs` turns an
//! [`Error`] into a one-line message with what to do, and an exit code
//! (`exit.rs`).

use crate::bench::BenchError;
use crate::job::JobError;
use crate::supervisor::error::RunError;

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
