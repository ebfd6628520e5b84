//! The task pool as the supervisor sees it: progress, taking back a dead
//! worker's tasks at once, and the final handoff.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::job::{Counter, HandoffCtx, Job, JobError, JobHost, Place, Progress, RoleId};
use crate::outfile::{publish_working, write_atomic};
use crate::shm::taskq::{Reclaim, SlotState};
use crate::shm::{Access, RunName};

use super::client::{self, FINAL_NAME, PARTIAL_NAME, Recorder};
use super::layout::TasksSegments;
use super::relay;
use super::settings::TasksSettings;
use super::spec::{self, TaskWire};
use super::worker::quarantined;

/// The task pool's segments, held by the supervisor.
#[derive(Debug)]
pub(crate) struct TasksHost {
    segs: TasksSegments,
    out: PathBuf,
    run: RunName,
}

impl TasksHost {
    /// Creates the segments of a new run (and the relay's input array).
    pub(crate) fn create(at: Place<'_>, s: &TasksSettings) -> Result<Self, JobError> {
        if let Some(i) = &s.intake {
            // Before anything exists: a bad server fails the run here.
            super::intake::preflight(i)?;
        }
        // A working file of an earlier run of this name belongs to state
        // that no longer exists.
        let _ = std::fs::remove_file(at.out.join(PARTIAL_NAME));
        let input = match &s.relay {
            Some(r) => Some(match &r.data {
                Some(f) => {
                    f.check()?;
                    relay::read_data(&f.path).map_err(JobError::Failed)?
                }
                None => (0..r.elements)
                    .map(|i| relay::generated(s.seed, i))
                    .collect(),
            }),
            None => None,
        };
        let host = TasksHost {
            segs: TasksSegments::create(at.run, s, input.as_deref())?,
            out: at.out.to_path_buf(),
            run: at.run.clone(),
        };
        if let Err(e) = host.continue_from_results(at) {
            for n in host.segs.names() {
                let _ = crate::shm::segment::unlink(&n);
            }
            return Err(e);
        }
        Ok(host)
    }

    /// A run stopped earlier (SIGTERM, --duration) handed off what it had
    /// done; the same run started again continues with the rest: when OUT
    /// holds that run's summary.json, incomplete, for the same task file,
    /// its recorded tasks are carried into the new working file and not run
    /// again.
    fn continue_from_results(&self, at: Place<'_>) -> Result<(), JobError> {
        let s = self.segs.settings();
        let Some(f) = &s.tasks else { return Ok(()) };
        let Ok(text) = std::fs::read_to_string(at.out.join("summary.json")) else {
            return Ok(());
        };
        let Ok(prev) = serde_json::from_str::<Value>(&text) else {
            return Ok(());
        };
        let same_run = prev["run"].as_str() == Some(at.run.as_str())
            && prev["tasks"]["complete"] == false
            && prev["settings"]["tasks"]["tasks"]["sha256"].as_str() == Some(f.sha256.as_str());
        if !same_run {
            return Ok(());
        }
        let old = at.out.join(FINAL_NAME);
        let Ok(file) = std::fs::File::open(&old) else {
            return Ok(());
        };
        let mut st = super::layout::RecorderState::default();
        let mut kept = Vec::new();
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(|e| JobError::Failed(format!("{}: {e}", old.display())))?;
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| JobError::Failed(format!("{}: {e}", old.display())))?;
            if v["client"] != client::OWN_NAME {
                continue;
            }
            st.recorded += 1;
            st.own_recorded += 1;
            st.own_submitted += 1;
            match v["status"].as_str() {
                Some("ok") => st.ok += 1,
                Some("quarantined") => st.quarantined += 1,
                _ => st.errors += 1,
            }
            if v["attempts"].as_u64().unwrap_or(1) > 1 {
                st.retried += 1;
            }
            kept.extend_from_slice(line.as_bytes());
            kept.push(b'\n');
        }
        let partial = at.out.join(PARTIAL_NAME);
        std::fs::write(&partial, &kept)
            .map_err(|e| JobError::Failed(format!("{}: {e}", partial.display())))?;
        st.file_offset = kept.len() as u64;
        self.segs.control()?.recorder.commit(st);
        eprintln!(
            "run {}: continuing: {} of {} tasks were done by the earlier run (in {})",
            at.run,
            crate::units::thousands(st.own_recorded),
            crate::units::thousands(s.own_tasks()),
            old.display()
        );
        Ok(())
    }

    /// Opens the segments of an existing run.
    pub(crate) fn open(at: Place<'_>, s: &TasksSettings, access: Access) -> Result<Self, JobError> {
        Ok(TasksHost {
            segs: TasksSegments::open(at.run, s, access)?,
            out: at.out.to_path_buf(),
            run: at.run.clone(),
        })
    }

    fn relay_section(&self, ctx_seconds: f64) -> Result<Option<Value>, JobError> {
        let s = self.segs.settings();
        let (Some(r), Some((input, output))) = (&s.relay, self.segs.relay_arrays()?) else {
            return Ok(None);
        };
        let n = r.elements as usize;
        let mut words = vec![0u64; n];
        input.read_words(0, &mut words);
        let xs: Vec<f64> = words.iter().map(|w| f64::from_bits(*w)).collect();
        output.read_words(0, &mut words);
        let (want, want_red, single_s) = relay::single_process(r, &xs);
        let pool_red = match r.reduction() {
            Some(_) => {
                let parts = chunk_results(&self.out.join(PARTIAL_NAME), r.chunks())?;
                r.combine(&parts)
            }
            None => None,
        };
        let got: Vec<f64> = words.iter().map(|w| f64::from_bits(*w)).collect();
        let mismatches = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        let equal = mismatches == 0 && pool_red.map(f64::to_bits) == want_red.map(f64::to_bits);
        let bin = write_atomic(&self.out.join("relay.bin"), |w| {
            for x in &got {
                w.write_all(&x.to_le_bytes())?;
            }
            Ok(())
        })?;
        Ok(Some(json!({
            "stages": r.describe(),
            "elements": r.elements,
            "chunk": r.chunk,
            "chunks": r.chunks(),
            "result": pool_red,
            "single_process_result": want_red,
            "elements_differing": mismatches,
            "matches_single_process": equal,
            "single_process_seconds": single_s,
            "pool_seconds": ctx_seconds,
            "files": { "relay.bin": { "bytes": bin.bytes, "sha256": bin.sha256 } },
        })))
    }
}

/// The chunk results (reduction values) recorded in the working file, in
/// chunk order.
fn chunk_results(path: &Path, chunks: u64) -> Result<Vec<f64>, JobError> {
    let mut parts = vec![None; chunks as usize];
    let f = std::fs::File::open(path)
        .map_err(|e| JobError::Failed(format!("{}: {e}", path.display())))?;
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| JobError::Failed(format!("{}: {e}", path.display())))?;
        let v: Value = serde_json::from_str(&line).map_err(|e| JobError::Failed(e.to_string()))?;
        if v["client"] != client::OWN_NAME {
            continue;
        }
        let (Some(i), Some(bits)) = (
            v["line"].as_u64(),
            v["reply"]
                .as_str()
                .and_then(|r| u64::from_str_radix(r, 16).ok()),
        ) else {
            continue;
        };
        if let Some(p) = parts.get_mut((i as usize).wrapping_sub(1)) {
            *p = Some(f64::from_bits(bits));
        }
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            p.ok_or_else(|| JobError::Failed(format!("chunk {i} has no recorded result")))
        })
        .collect()
}

/// Percentile `q` of sorted values.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

impl JobHost for TasksHost {
    fn job(&self) -> &'static dyn Job {
        &super::JOB
    }
    fn kick(&self) {
        if let Ok(t) = self.segs.table() {
            t.kick();
        }
    }
    fn request_finish(&self) {
        if let Ok(c) = self.segs.control() {
            c.finish.set();
        }
        self.kick();
    }
    fn is_complete(&self) -> bool {
        self.segs.recorder_state().is_ok_and(|st| st.complete == 1)
    }
    fn prepare_resume(&self) {
        // A finish the dead supervisor asked for is asked again if it still
        // holds; one the client raised for its finished work stays.
        if let Ok(c) = self.segs.control()
            && self.segs.recorder_state().is_ok_and(|st| st.complete == 0)
        {
            c.finish.clear();
        }
    }
    fn role_exited(&self, role: &RoleId, failed: bool, stopping: bool) {
        if role.kind != "worker" {
            return;
        }
        let Ok(t) = self.segs.table() else { return };
        let s = self.segs.settings();
        // The worker is reaped: it can no longer write anything. Its tasks
        // go back to the queue now, not after a lease expires.
        let how = if failed && !stopping {
            Reclaim::Died {
                max_deaths: s.max_attempts,
            }
        } else {
            Reclaim::Stopped
        };
        t.reclaim(role.index, None, how, |_, deaths| {
            quarantined(deaths, role.index)
        });
    }
    fn progress(&self) -> Progress {
        let s = self.segs.settings();
        let (rec, census, stats) = match (self.segs.recorder_state(), self.segs.table()) {
            (Ok(rec), Ok(t)) => (
                rec,
                t.census(),
                Some((
                    t.stats().requeued.get(),
                    t.stats().quarantined.get(),
                    t.stats().returned.get(),
                )),
            ),
            _ => (Default::default(), [0; 7], None),
        };
        let total = s.has_own_work().then(|| s.own_tasks());
        let mut counters = vec![
            Counter::count("done", rec.recorded, "tasks", total),
            Counter::count("queued", census[SlotState::Queued as usize], "tasks", None),
            Counter::count(
                "in_flight",
                census[SlotState::Claimed as usize],
                "tasks",
                None,
            ),
            Counter::count("errors", rec.errors, "tasks", None),
            Counter::count("retried", stats.map_or(0, |s| s.0), "tasks", None),
            Counter::count("quarantined", stats.map_or(0, |s| s.1), "tasks", None),
            Counter::count("returned", stats.map_or(0, |s| s.2), "tasks", None),
        ];
        if s.intake.is_some()
            && let Ok(c) = self.segs.control()
        {
            let i = &c.intake;
            counters.push(Counter::count(
                "pulled",
                i.delivered.get(),
                "messages",
                None,
            ));
            counters.push(Counter::count(
                "redelivered",
                i.redelivered.get(),
                "messages",
                None,
            ));
            counters.push(Counter::count("acked", i.acked.get(), "messages", None));
            counters.push(Counter::count(
                "nats_connected",
                (i.link.get() == 2) as u64,
                "link",
                None,
            ));
        }
        if let Ok(t) = self.segs.table() {
            let mut buf = Vec::new();
            for w in 0..s.workers {
                let line = t.worker_current(w).and_then(|slot| {
                    t.read_task(slot, &mut buf).ok()?;
                    spec::decode::<TaskWire>(&buf).ok().map(|t| t.line)
                });
                if let Some(line) = line {
                    counters.push(Counter::count(&format!("worker {w}"), line, "line", None));
                }
            }
        }
        Progress {
            job: "tasks".into(),
            counters,
        }
    }
    fn handoff(&self, out: &Path, ctx: &HandoffCtx<'_>) -> Result<Value, JobError> {
        // Every role has exited: record what is done (as the client would),
        // then publish the working file.
        let mut rec = Recorder::attach(&self.segs, &self.out)?;
        rec.drain()?;
        let st = *rec.state();
        let working = rec.path().to_path_buf();
        drop(rec);
        (ctx.note)(&format!("writing {FINAL_NAME}"));
        let written = publish_working(&working, &out.join(FINAL_NAME))?;
        // Figures from the published file.
        let mut latency = Vec::new();
        let mut per_worker: BTreeMap<String, u64> = BTreeMap::new();
        let f = std::fs::File::open(&written.path)
            .map_err(|e| JobError::Failed(format!("{}: {e}", written.path.display())))?;
        for line in std::io::BufReader::new(f).lines() {
            let line = line.map_err(|e| JobError::Failed(e.to_string()))?;
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| JobError::Failed(format!("{}: {e}", written.path.display())))?;
            if let Some(l) = v["latency_s"].as_f64() {
                latency.push(l);
            }
            if let Some(w) = v["worker"].as_u64() {
                *per_worker.entry(format!("worker {w}")).or_default() += 1;
            }
        }
        latency.sort_by(f64::total_cmp);
        let (census, stats) = match self.segs.table() {
            Ok(t) => (
                t.census(),
                (
                    t.stats().requeued.get(),
                    t.stats().returned.get(),
                    t.stats().quarantined.get(),
                ),
            ),
            Err(_) => ([0; 7], (0, 0, 0)),
        };
        let s = self.segs.settings();
        Ok(json!({
            "tasks": s.tasks.as_ref().map(|f| f.path.display().to_string()),
            "own_tasks": s.own_tasks(),
            "submitted": st.own_submitted,
            "recorded": st.recorded,
            "completed": st.ok,
            "errors": st.errors,
            "quarantined": st.quarantined,
            "retried": st.retried,
            "requeued_after_worker_death": stats.0,
            "returned_at_stop": stats.1,
            "pending": census[SlotState::Queued as usize] + census[SlotState::Claimed as usize],
            "complete": st.complete == 1,
            "seconds": ctx.seconds,
            "tasks_per_second": if ctx.seconds > 0.0 { st.recorded as f64 / ctx.seconds } else { 0.0 },
            "latency_s": {
                "p50": percentile(&latency, 0.5),
                "p99": percentile(&latency, 0.99),
                "max": latency.last(),
            },
            "per_worker": per_worker,
            "workers": s.workers,
            "relay": self.relay_section(ctx.seconds)?,
            "from": s.intake.as_ref().map(|i| {
                let mut v = i.to_json();
                if let Ok(c) = self.segs.control() {
                    v["pulled"] = c.intake.delivered.get().into();
                    v["redelivered"] = c.intake.redelivered.get().into();
                    v["acked"] = c.intake.acked.get().into();
                }
                v
            }),
            "run": self.run.as_str(),
            "files": { FINAL_NAME: { "bytes": written.bytes, "sha256": written.sha256 } },
        }))
    }
    fn handoff_done(&self) {
        let _ = std::fs::remove_file(self.out.join(PARTIAL_NAME));
    }
    fn segment_names(&self) -> Vec<String> {
        self.segs.names()
    }
}
