//! Errors of a job's code: typed, with neutral messages. What to do about
//! them (`forkring clean NAME`, `forkring handoff`, ...) is added at the
//! command line, which also picks the exit code.

use crate::control::ControlError;
use crate::outfile::OutputError;
use crate::shm::{RunName, SegmentsError};

/// A job's failure.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job's segments are missing, damaged or do not fit.
    #[error(transparent)]
    Segments(#[from] SegmentsError),
    /// The run's control segment.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A result or working file.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// Bad input from the user (an option, a file of tasks): exit code 2.
    #[error("{0}")]
    Usage(String),
    /// Bad input read from a file named by the user, or a failure the job
    /// reports in its own words (exit code 1).
    #[error("{0}")]
    Failed(String),
    /// NATS: unreachable, no JetStream, a refused or unfit stream.
    #[error(transparent)]
    Nats(#[from] crate::nats::NatsError),
    /// Results the run committed are gone (a working file removed behind
    /// forkring's back); no retry can bring them back.
    #[error("{0}")]
    Lost(String),
    /// A role process found its supervisor gone.
    #[error("the supervisor of run {run} is gone")]
    SupervisorGone {
        /// The run.
        run: RunName,
    },
}

impl JobError {
    /// A corruption found in `segment`.
    pub(crate) fn corrupt(segment: &str, detail: impl Into<String>) -> Self {
        JobError::Segments(SegmentsError::corrupt(segment, detail))
    }
}

impl From<crate::shm::RingError> for JobError {
    fn from(e: crate::shm::RingError) -> Self {
        JobError::Segments(e.into())
    }
}

impl From<crate::shm::taskq::TableError> for JobError {
    fn from(e: crate::shm::taskq::TableError) -> Self {
        JobError::Segments(e.into())
    }
}

impl From<crate::shm::segment::OutOfBounds> for JobError {
    fn from(e: crate::shm::segment::OutOfBounds) -> Self {
        JobError::Segments(e.into())
    }
}
