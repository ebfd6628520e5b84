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
//! the command line names the command that retries.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::control::RunPhase;
use crate::job::{HandoffCtx, JobHost, Registry};
use crate::outfile::write_atomic;
use crate::shm::segment;

use super::error::RunError;
use super::opened::OpenRun;

/// `schema_version` of `summary.json` (documented in `docs/schemas.md`).
pub(crate) const SUMMARY_SCHEMA_VERSION: u32 = 2;

/// Why the run ended, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndCause {
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

/// Restart counts by role label, in slot order.
pub(crate) fn restarts_by_role(open: &OpenRun) -> BTreeMap<String, u64> {
    open.roles
        .iter()
        .map(|r| (r.label(), open.control.role_view(r.slot).restarts))
        .collect()
}

/// How a run ended, as `summary.json` records it.
pub(crate) struct Ending<'a> {
    /// Seconds of work over every supervisor of the run.
    pub(crate) seconds: f64,
    /// Why it ended.
    pub(crate) cause: &'a EndCause,
    /// The writing supervisor's own options (see
    /// [`super::run::RunOptions::to_json`]); null when `forkring handoff`
    /// writes.
    pub(crate) supervisor: Value,
    /// `--overwrite`: another run's results in `out` may be replaced.
    pub(crate) overwrite: bool,
}

/// Writes every job's files and `summary.json` into `out`. Returns the
/// summary. Segments are left alone (see [`remove_segments`]).
pub(crate) fn write_results(
    open: &OpenRun,
    jobs: &[Box<dyn JobHost>],
    out: &Path,
    ending: Ending<'_>,
    registry: Registry,
    note: &dyn Fn(&str),
) -> Result<Value, RunError> {
    let Ending {
        seconds,
        cause,
        supervisor,
        overwrite,
    } = ending;
    let control = &open.control;
    let run = control.run();
    // Another run may have handed off into `out` since this one started:
    // its results are not replaced without --overwrite (ours stay in the
    // segments; `forkring handoff --out` writes them elsewhere).
    if !overwrite {
        check_no_results(run, out)?;
    }
    // Results already here are this run's earlier ones, or --overwrite's:
    // result files this run does not write go once our summary.json is in
    // place (they would otherwise sit beside ours looking current).
    let replaces = out.join("summary.json").exists();
    control.set_phase(RunPhase::HandingOff);
    // The output directory may have been removed while the run worked: the
    // results go where they were asked for all the same.
    std::fs::create_dir_all(out).map_err(|err| RunError::Output {
        run: Some(run.clone()),
        source: crate::outfile::OutputError {
            op: "create directory",
            path: out.display().to_string(),
            err,
        },
    })?;
    // A supervisor of this run killed while writing left its temporary
    // files; nobody else writes these names for this run (we hold its lock).
    let names: Vec<&str> = jobs
        .iter()
        .flat_map(|j| j.job().result_files().iter().copied())
        .chain(["summary.json"])
        .collect();
    for p in crate::outfile::remove_stale_temps(out, &names) {
        note(&format!(
            "removed {}, left by a handoff that died",
            p.display()
        ));
    }
    let ctx = HandoffCtx { seconds, note };
    let mut summary = Map::new();
    summary.insert("schema_version".into(), json!(SUMMARY_SCHEMA_VERSION));
    summary.insert("run".into(), json!(run.as_str()));
    summary.insert("forkring_version".into(), json!(env!("CARGO_PKG_VERSION")));
    summary.insert("forkring_commit".into(), json!(env!("FORKRING_GIT_COMMIT")));
    summary.insert(
        "started".into(),
        json!(crate::units::rfc3339_utc(control.created_unix_ms())),
    );
    summary.insert(
        "jobs".into(),
        json!(jobs.iter().map(|j| j.job().name()).collect::<Vec<_>>()),
    );
    let complete = jobs.iter().all(|j| j.is_complete());
    summary.insert("complete".into(), json!(complete));
    summary.insert("stopped_by".into(), cause.label());
    summary.insert("seconds".into(), json!(seconds));
    summary.insert("restarts".into(), json!(restarts_by_role(open)));
    summary.insert("resumes".into(), json!(control.resumes()));
    // Shared memory by owner: the control segment, each job's segments,
    // and the whole run.
    let mut shm = Map::new();
    shm.insert("control".into(), json!(control.segment().len() as u64));
    for j in &open.settings.jobs {
        shm.insert(j.job().name().into(), json!(j.shm_bytes()));
    }
    shm.insert(
        "total".into(),
        json!(open.settings.jobs_shm_bytes() + control.segment().len() as u64),
    );
    summary.insert("shm_bytes".into(), Value::Object(shm));
    summary.insert("out".into(), json!(out.display().to_string()));
    summary.insert("supervisor".into(), supervisor);
    summary.insert(
        "settings".into(),
        Value::Object(
            open.settings
                .jobs
                .iter()
                .map(|j| (j.job().name().to_string(), j.to_json()))
                .collect(),
        ),
    );
    for j in jobs {
        let section = j.handoff(out, &ctx).map_err(|source| RunError::Handoff {
            run: run.clone(),
            job: j.job().name(),
            source: Box::new(source),
        })?;
        summary.insert(j.job().name().into(), section);
    }
    let summary = Value::Object(summary);
    let text = serde_json::to_string_pretty(&summary).expect("JSON values serialise");
    write_atomic(&out.join("summary.json"), |w| {
        w.write_all(text.as_bytes())?;
        w.write_all(b"\n")
    })
    .map_err(|source| RunError::Output {
        run: Some(run.clone()),
        source,
    })?;
    if replaces {
        for p in stale_results(out, registry, &summary) {
            if std::fs::remove_file(&p).is_ok() {
                note(&format!("removed {}, an earlier run's result", p.display()));
            }
        }
        let _ = crate::outfile::sync_dir(out);
    }
    control.set_phase(RunPhase::HandedOff);
    for j in jobs {
        j.handoff_done();
    }
    Ok(summary)
}

/// Result files (any job's) in `out` that `summary` does not list: an
/// earlier run's, which would otherwise sit beside ours looking current.
fn stale_results(out: &Path, registry: Registry, summary: &Value) -> Vec<std::path::PathBuf> {
    fn listed(v: &Value, names: &mut std::collections::BTreeSet<String>) {
        if let Some(o) = v.as_object() {
            for (k, x) in o {
                match (k.as_str(), x.as_object()) {
                    ("files", Some(files)) => names.extend(files.keys().cloned()),
                    _ => listed(x, names),
                }
            }
        }
    }
    let mut ours = std::collections::BTreeSet::new();
    listed(summary, &mut ours);
    registry
        .iter()
        .flat_map(|j| j.result_files().iter().copied())
        .filter(|f| !ours.contains(*f))
        .map(|f| out.join(f))
        .filter(|p| p.is_file())
        .collect()
}

/// Refuses to write run `name`'s results into a directory that holds
/// another run's (a `summary.json` naming another run, or unreadable):
/// checked before a new run creates anything, and again at its handoff
/// (another run may have written there meanwhile). The same run into its
/// own directory is fine: a resumed run, or one started again under its
/// name, replaces its own results (the task pool continues from them).
pub(crate) fn check_no_results(name: &crate::shm::RunName, out: &Path) -> Result<(), RunError> {
    let summary = out.join("summary.json");
    if !summary.is_file() {
        return Ok(());
    }
    let other = std::fs::read_to_string(&summary)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["run"].as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    if other == name.as_str() {
        return Ok(());
    }
    Err(RunError::WouldOverwrite {
        out: out.to_path_buf(),
        other,
    })
}

/// Unlinks the jobs' segments, then the control segment.
pub(crate) fn remove_segments(open: &OpenRun, jobs: &[Box<dyn JobHost>]) {
    for j in jobs {
        for name in j.segment_names() {
            let _ = segment::unlink(&name);
        }
    }
    let _ = segment::unlink(open.control.segment().name());
}

/// Writes the results of a run none of whose processes lives (the caller
/// holds its supervisor lock) into `out`, removes its segments and prints
/// the summary. Returns the summary.
pub(crate) fn hand_off_stopped(
    open: &OpenRun,
    jobs: &[Box<dyn JobHost>],
    out: &Path,
    registry: Registry,
    as_json: bool,
    overwrite: bool,
) -> Result<Value, RunError> {
    let out = crate::outfile::prepare_dir(out)
        .map_err(|source| RunError::Output { run: None, source })?;
    let note = |msg: &str| {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            eprintln!("{msg} …");
        }
    };
    // A run that completed its work before its supervisor died is complete,
    // whoever writes its results.
    let cause = if jobs.iter().all(|j| j.is_complete()) {
        EndCause::Completed
    } else {
        EndCause::Manual
    };
    let summary = write_results(
        open,
        jobs,
        &out,
        Ending {
            seconds: open.control.prior_seconds(),
            cause: &cause,
            supervisor: Value::Null,
            overwrite,
        },
        registry,
        &note,
    )?;
    remove_segments(open, jobs);
    print_summary(&summary, registry, as_json);
    Ok(summary)
}

/// Prints the summary: as JSON, or as one line.
pub(crate) fn print_summary(summary: &Value, registry: Registry, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(summary).expect("serialisable"));
    } else {
        println!("{}", summary_line(summary, registry));
    }
}

/// A human summary of a finished run: a line for the run, then one per job
/// (each fits 80 columns but for long paths).
pub(crate) fn summary_line(summary: &Value, registry: Registry) -> String {
    let run = summary["run"].as_str().unwrap_or("?");
    let secs = summary["seconds"].as_f64().unwrap_or(0.0);
    let restarts: u64 = summary["restarts"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let how = match summary["stopped_by"].as_str() {
        Some(s) => format!("stopped by {s}"),
        None => "complete".into(),
    };
    let mut text = format!(
        "run {run}: {how} after {secs:.2} s of work, {}; results in {}",
        crate::units::plural(restarts, "restart", "restarts"),
        summary["out"].as_str().unwrap_or("?")
    );
    for j in registry {
        if let Some(s) = summary.get(j.name()) {
            text += "\n  ";
            text += &j.summary_line(s);
        }
    }
    text
}
