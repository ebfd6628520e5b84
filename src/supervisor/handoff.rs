//! The final handoff: result files into the output directory, then the
//! segments out of /dev/shm.
//!
//! Order, and what a crash at each point leaves:
//! 1. phase := handing-off; each job writes its files atomically;
//! 2. `summary.json` is written last, atomically: its presence means the
//!    handoff is complete;
//! 3. phase := handed-off; job segments are unlinked, the control segment
//!    last.
//!
//! A supervisor killed during 1–2 leaves every segment in place: starting
//! `forkring run` again (or `forkring handoff`) redoes the handoff, which is
//! idempotent. Killed during 3, the control segment remains with phase
//! handed-off, and the next `forkring run` or `forkring clean` removes what is
//! left. If writing fails (disk full, directory gone), the segments stay and
//! the error names the command that retries.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::error::Failure;
use crate::outfile::write_atomic;
use crate::shm::segment;

use super::control::{Control, Phase};
use super::job::{HandoffContext, JobHost};
use super::role::Role;

/// Why the run ended, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndCause {
    /// Every job completed its work.
    Completed,
    /// A signal asked to stop.
    Signal(String),
    /// `--duration` elapsed.
    Duration,
    /// `forkring handoff` wrote the results of a run that had stopped.
    Manual,
}

impl EndCause {
    fn label(&self) -> Value {
        match self {
            EndCause::Completed => Value::Null,
            EndCause::Signal(s) => Value::String(s.clone()),
            EndCause::Duration => Value::String("duration".into()),
            EndCause::Manual => Value::String("handoff".into()),
        }
    }
}

/// Writes every job's files and `summary.json` into `out`. Returns the
/// summary. Segments are left alone (see [`remove_segments`]).
pub fn write_results(
    control: &Control,
    jobs: &[Box<dyn JobHost>],
    out: &Path,
    seconds: f64,
    cause: &EndCause,
) -> Result<Value, Failure> {
    control.set_phase(Phase::HandingOff);
    let ctx = HandoffContext { seconds };
    let mut summary = Map::new();
    summary.insert("run".into(), json!(control.run().as_str()));
    summary.insert(
        "jobs".into(),
        json!(jobs.iter().map(|j| j.name()).collect::<Vec<_>>()),
    );
    let complete = jobs.iter().all(|j| j.is_complete());
    summary.insert("complete".into(), json!(complete));
    summary.insert("stopped_by".into(), cause.label());
    summary.insert("seconds".into(), json!(seconds));
    let mut restarts = BTreeMap::new();
    for j in jobs {
        for r in j.roles() {
            restarts.insert(r.name(), control.role_view(*r).restarts);
        }
    }
    summary.insert("restarts".into(), json!(restarts));
    summary.insert("resumes".into(), json!(control.resumes()));
    summary.insert(
        "shm_bytes".into(),
        json!(jobs.iter().map(|j| j.shm_bytes()).sum::<u64>() + super::control::SIZE as u64),
    );
    summary.insert("out".into(), json!(out.display().to_string()));
    for j in jobs {
        let section = j.handoff(out, &ctx).map_err(|f| {
            Failure::runtime(format!(
                "handoff of the {} job failed: {}. The run's segments are kept; retry with `forkring handoff --run {} --out DIR`",
                j.name(),
                f.message,
                control.run()
            ))
        })?;
        summary.insert(j.name().into(), section);
    }
    let summary = Value::Object(summary);
    let text = serde_json::to_string_pretty(&summary).expect("JSON values serialise");
    write_atomic(&out.join("summary.json"), |w| {
        w.write_all(text.as_bytes())?;
        w.write_all(b"\n")
    })
    .map_err(|e| {
        Failure::runtime(format!(
            "{e}. The run's segments are kept; retry with `forkring handoff --run {} --out DIR`",
            control.run()
        ))
    })?;
    control.set_phase(Phase::HandedOff);
    for j in jobs {
        j.handoff_done();
    }
    Ok(summary)
}

/// Unlinks the jobs' segments, then the control segment.
pub fn remove_segments(control: &Control, jobs: &[Box<dyn JobHost>]) {
    for j in jobs {
        for name in j.segment_names() {
            let _ = segment::unlink(&name);
        }
    }
    let _ = segment::unlink(control.segment().name());
}

/// Restart counts by role name, for display.
pub fn restarts_by_role(control: &Control, jobs: &[Box<dyn JobHost>]) -> BTreeMap<Role, u64> {
    let mut m = BTreeMap::new();
    for j in jobs {
        for r in j.roles() {
            m.insert(*r, control.role_view(*r).restarts);
        }
    }
    m
}

/// A one-line human summary of a finished run.
pub fn summary_line(summary: &Value) -> String {
    let mut parts = Vec::new();
    let run = summary["run"].as_str().unwrap_or("?");
    let secs = summary["seconds"].as_f64().unwrap_or(0.0);
    if let Some(img) = summary.get("image") {
        parts.push(format!(
            "image {} {} ({} iterations, seed {})",
            img["size"].as_str().unwrap_or("?"),
            if img["complete"].as_bool() == Some(true) {
                "complete"
            } else {
                "partial"
            },
            img["iterations"],
            img["seed"],
        ));
    }
    if let Some(st) = summary.get("stream") {
        parts.push(format!(
            "stream {} produced, {} received, {} dropped, {} filled, {} duplicates",
            st["produced"], st["received"], st["dropped"], st["extrapolated"], st["duplicates"]
        ));
    }
    let restarts: u64 = summary["restarts"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let stopped = match summary["stopped_by"].as_str() {
        Some(s) => format!(", stopped by {s}"),
        None => String::new(),
    };
    format!(
        "run {run}: {} in {secs:.2} s, {restarts} restarts{stopped}; results in {}",
        parts.join("; "),
        summary["out"].as_str().unwrap_or("?")
    )
}
