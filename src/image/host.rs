//! The image job as the supervisor sees it: progress and the final handoff.

use std::path::Path;

use serde_json::json;

use crate::job::{Counter, HandoffCtx, Job, JobError, JobHost, Progress};
use crate::outfile::{encode_png, write_atomic};
use crate::shm::turn::Party;
use crate::shm::{Access, RunName};

use super::ImageSettings;
use super::audit::audit;
use super::history::{self, HistoryHeader};
use super::layout::{ImageSegmentError, ImageSegments};

/// The image job's segments, held by the supervisor.
#[derive(Debug)]
pub(crate) struct ImageHost {
    segs: ImageSegments,
}

impl ImageHost {
    /// Creates the segments of a new run.
    pub(crate) fn create(run: &RunName, s: &ImageSettings) -> Result<Self, ImageSegmentError> {
        Ok(ImageHost {
            segs: ImageSegments::create(run, s)?,
        })
    }
    /// Opens the segments of an existing run.
    pub(crate) fn open(
        run: &RunName,
        s: &ImageSettings,
        access: Access,
    ) -> Result<Self, ImageSegmentError> {
        Ok(ImageHost {
            segs: ImageSegments::open(run, s, access)?,
        })
    }
}

impl JobHost for ImageHost {
    fn job(&self) -> &'static dyn Job {
        &super::JOB
    }
    fn kick(&self) {
        if let Ok(v) = self.segs.view() {
            v.ctl.turn.kick();
        }
    }
    fn request_finish(&self) {
        // The image finishes by itself; an early end is a stop request.
    }
    fn is_complete(&self) -> bool {
        self.segs
            .view()
            .map(|v| v.ctl.turn.seq() >= v.n)
            .unwrap_or(false)
    }
    fn progress(&self) -> Progress {
        let total = self.segs.settings().pixels() as u64;
        let (iteration, redone) = match self.segs.view() {
            Ok(v) => (
                v.ctl.turn.seq().min(v.n) as u64,
                v.ctl.stats[0].redone.get() + v.ctl.stats[1].redone.get(),
            ),
            Err(_) => (0, 0),
        };
        Progress {
            job: "image".into(),
            counters: vec![
                Counter::count("iterations", iteration, "iterations", Some(total)),
                Counter::count("redone", redone, "iterations", None),
            ],
        }
    }
    fn handoff(&self, out: &Path, ctx: &HandoffCtx<'_>) -> Result<serde_json::Value, JobError> {
        let v = self.segs.view()?;
        // Every role has exited. One killed mid-step left its journal armed:
        // redo and commit that step, as the role itself would on restart, so
        // that the image and the history agree.
        let stepper = super::step::Stepper::new(v);
        for party in [Party::Even, Party::Odd] {
            stepper.recover(party)?;
        }
        let count = v.ctl.turn.seq();
        if count > v.n {
            return Err(JobError::corrupt(
                self.segs.names()[0],
                format!(
                    "field turn (iteration) is {count}, more than {} pixels",
                    v.n
                ),
            ));
        }
        // Before anything is written: the segments must agree with each
        // other (the turn, the masks, the replayed history, the pixels), or
        // the handoff refuses and keeps them.
        (ctx.note)("checking the image segments");
        let pixels = v.pixels.to_vec();
        audit(&v, count, &pixels).map_err(|e| {
            let names = self.segs.names();
            let name = super::layout::PARTS
                .iter()
                .position(|p| *p == e.part)
                .map_or(e.part, |i| names[i]);
            JobError::corrupt(name, e.to_string())
        })?;
        (ctx.note)("writing image.png");
        let png = write_atomic(&out.join("image.png"), |w| {
            encode_png(w, v.width, v.height, &pixels)
        })?;
        let header = HistoryHeader {
            width: v.width,
            height: v.height,
            seed: v.seed,
            count: count as u64,
        };
        (ctx.note)("writing history.bin");
        let hist = write_atomic(&out.join("history.bin"), |w| {
            history::write(w, header, |i| {
                let i = i as u32;
                match (v.positions.get(i), v.colours.get(i)) {
                    (Some(p), Some(c)) if p < v.n => Ok((p, c)),
                    (p, _) => Err(std::io::Error::other(format!(
                        "segment history: field positions[{i}] is {p:?}, not a position below {}",
                        v.n
                    ))),
                }
            })
        })?;
        let complete = count == v.n;
        let (t0, t1) = (
            v.ctl.timing.first_step_ns.get(),
            v.ctl.timing.last_step_ns.get(),
        );
        let stepping = (complete && t1 > t0).then(|| (t1 - t0) as f64 / 1e9);
        Ok(json!({
            "width": v.width,
            "height": v.height,
            "size": format!("{}x{}", v.width, v.height),
            "seed": v.seed,
            "iterations": count,
            "complete": complete,
            "seconds": ctx.seconds,
            "iterations_per_second": if ctx.seconds > 0.0 { count as f64 / ctx.seconds } else { 0.0 },
            "stepping_seconds": stepping,
            "redone": { "ping": v.ctl.stats[0].redone.get(), "pong": v.ctl.stats[1].redone.get() },
            "files": {
                "image.png": { "bytes": png.bytes, "sha256": png.sha256 },
                "history.bin": { "bytes": hist.bytes, "sha256": hist.sha256 },
            },
        }))
    }
    fn segment_names(&self) -> Vec<String> {
        self.segs.names().iter().map(|s| s.to_string()).collect()
    }
}
