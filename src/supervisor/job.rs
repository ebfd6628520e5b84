//! What the supervisor needs from a job.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Failure;
use crate::image::host::ImageHost;
use crate::shm::Access;
use crate::stream::host::StreamHost;

use super::control::Control;
use super::role::Role;

/// A job's progress, sampled from its segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Progress {
    /// The image job.
    Image {
        /// Committed iterations.
        iteration: u64,
        /// Iterations of a complete image.
        total: u64,
        /// Half-done iterations redone after restarts (ping, pong).
        redone: [u64; 2],
    },
    /// The stream job.
    Stream {
        /// Sequence numbers used (including dropped ones).
        produced: u64,
        /// Vectors the consumer received.
        received: u64,
        /// Vectors dropped by `--noise`.
        dropped: u64,
        /// Vectors filled in by interpolation.
        extrapolated: u64,
        /// Batches written.
        batches: u64,
        /// Sliding-window rate mean (vectors/s), if known.
        rate_mean: Option<f64>,
        /// Sliding-window rate standard deviation, if known.
        rate_std: Option<f64>,
        /// Whether the producer has finished.
        producer_done: bool,
    },
}

/// Facts the handoff records beside each job's own figures.
#[derive(Debug, Clone)]
pub struct HandoffContext {
    /// Seconds the run has worked, over all supervisors.
    pub seconds: f64,
}

/// A job as seen by the supervisor.
pub trait JobHost: std::fmt::Debug {
    /// "image" or "stream".
    fn name(&self) -> &'static str;
    /// The roles the job runs.
    fn roles(&self) -> &'static [Role];
    /// Wakes every process sleeping on one of the job's futex words, so that
    /// it re-checks the stop flag.
    fn kick(&self);
    /// Asks the job to finish on its own terms (the stream drains its ring);
    /// used when the run ends for a reason other than a stop request.
    fn request_finish(&self);
    /// Whether the job has done all its work.
    fn is_complete(&self) -> bool;
    /// Called when a supervisor takes over a run whose supervisor died,
    /// before roles start: undo requests that belonged to the dead one.
    fn prepare_resume(&self) {}
    /// Called once `summary.json` is in place: remove working files the
    /// handoff kept so that it could be retried.
    fn handoff_done(&self) {}
    /// Current progress.
    fn progress(&self) -> Progress;
    /// Shared-memory bytes of the job's segments.
    fn shm_bytes(&self) -> u64;
    /// Writes the job's result files into `out` (atomically) and returns
    /// its section of `summary.json`. Called once every role has exited.
    fn handoff(&self, out: &Path, ctx: &HandoffContext) -> Result<serde_json::Value, Failure>;
    /// Names of the job's segments.
    fn segment_names(&self) -> Vec<String>;
}

/// How to get a run's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hosts {
    /// Create their segments (a new run).
    Create,
    /// Open the existing segments (a resumed run, `status`, `handoff`).
    Open(Access),
}

/// The jobs of the run `control` describes, in a fixed order (image, then
/// stream). When creating fails part-way, whatever was created is removed.
pub fn hosts(control: &Control, how: Hosts) -> Result<Vec<Box<dyn JobHost>>, Failure> {
    let run = control.run();
    let s = control.settings();
    let mut jobs: Vec<Box<dyn JobHost>> = Vec::new();
    let mut add = || -> Result<(), Failure> {
        if let Some(img) = &s.image {
            jobs.push(Box::new(match how {
                Hosts::Create => ImageHost::create(run, img)?,
                Hosts::Open(a) => ImageHost::open(run, img, a)?,
            }));
        }
        if let Some(st) = &s.stream {
            jobs.push(Box::new(match how {
                Hosts::Create => StreamHost::create(run, st, &s.out)?,
                Hosts::Open(a) => StreamHost::open(run, st, &s.out, a)?,
            }));
        }
        Ok(())
    };
    match add() {
        Ok(()) => Ok(jobs),
        Err(f) => {
            if how == Hosts::Create {
                for j in &jobs {
                    for name in j.segment_names() {
                        let _ = crate::shm::segment::unlink(&name);
                    }
                }
            }
            Err(f)
        }
    }
}
