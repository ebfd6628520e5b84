//! The client role: submits the run's own tasks (its task file, or its
//! relay chunks) and records every result, its own and those of external
//! `forkring submit` clients, in the working file `.tasks.partial`, which
//! the handoff publishes as `tasks.jsonl`.
//!
//! Crash safety. The client's commit point is the generation flip of its
//! [`RecorderState`]: the working file's committed length, its counters,
//! the next own task line, and the slot transitions of the chunk just
//! recorded. A chunk of results is handled as: read the DONE slots, format
//! their lines, write them to the file, commit the state, then apply the
//! transitions (own tasks: DONE → FREE; an external client's: DONE →
//! RECORDED, for it to take the reply). A client killed anywhere restarts
//! from the committed state: it cuts the file back to the committed length,
//! re-applies the committed transitions (each a CAS from the recorded
//! word: twice is once), and finds the slots it had not yet recorded still
//! DONE. No result is lost and none is recorded twice.
//!
//! Submissions are idempotent by (client, line). A task is accepted when its
//! slot is published (QUEUED). Every commit records the next own line; a
//! restarted client also scans the table for its own lines published after
//! the last commit (they cannot have been freed: freeing follows a commit),
//! and abandons the slots it was still filling.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::clock::monotonic_ns;
use crate::job::{JobError, RoleCtx};
use crate::outfile::open_working;
use crate::shm::taskq::{SLICE, SlotState, TaskTable};
use crate::shm::{Access, Committed};

use super::layout::{OWN_CLIENT, PENDING, Pending, RecorderState, TasksControl, TasksSegments};
use super::relay::Relay;
use super::settings::TasksSettings;
use super::spec::{self, ResultWire, TaskSpec, TaskWire, Tasks};

/// Name of the working file in the output directory while the run lives.
pub(crate) const PARTIAL_NAME: &str = ".tasks.partial";
/// Name of the published file.
pub(crate) const FINAL_NAME: &str = "tasks.jsonl";

/// How the run's own client names its tasks.
pub(crate) const OWN_NAME: &str = "client";

/// The name of client record `c` with `identity`, as shown in task ids.
pub(crate) fn client_name(c: u32, identity: u64) -> String {
    if c == 0 && identity == OWN_CLIENT {
        OWN_NAME.to_string()
    } else {
        format!("submit-{identity:016x}")
    }
}

/// The run's own tasks: from its task file, or its relay chunks.
pub(crate) fn own_tasks(s: &TasksSettings) -> Result<Tasks, JobError> {
    if let Some(r) = &s.relay {
        return Ok(chunks(r));
    }
    let Some(f) = &s.tasks else {
        return Ok(Vec::new());
    };
    f.check()?;
    let table = match &s.table {
        Some(t) => {
            t.check()?;
            Some(spec::read_table(&t.path).map_err(|e| JobError::Failed(e.to_string()))?)
        }
        None => None,
    };
    spec::read_tasks(&f.path, table.as_ref(), s.task_max)
        .map_err(|e| JobError::Failed(e.to_string()))
}

fn chunks(r: &Relay) -> Tasks {
    (0..r.chunks())
        .map(|i| {
            let start = i * r.chunk as u64;
            let len = (r.elements - start).min(r.chunk as u64) as u32;
            (
                i + 1,
                format!("chunk {i}: elements {start}..{}", start + len as u64),
                TaskSpec::Chunk { start, len },
            )
        })
        .collect()
}

/// The recorder: the committed state and the working file.
pub(crate) struct Recorder<'a> {
    table: TaskTable<'a>,
    ctl: &'a TasksControl,
    record: &'a Committed<RecorderState>,
    st: RecorderState,
    file: File,
    path: PathBuf,
    mono_base_ns: u64,
    unix_base_ms: u64,
    task: Vec<u8>,
    result: Vec<u8>,
    /// Where the next scan for results starts (a hint).
    scan_from: u32,
}

impl std::fmt::Debug for Recorder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<'a> Recorder<'a> {
    /// Attaches: loads the committed state, re-applies its transitions,
    /// cuts the working file in `dir` back to the committed length.
    pub(crate) fn attach(segs: &'a TasksSegments, dir: &Path) -> Result<Self, JobError> {
        let table = segs.table()?;
        let ctl = segs.control()?;
        let record: &Committed<RecorderState> = &ctl.recorder;
        let (_, st) = record.load();
        if st.pending_len as usize > PENDING || st.file_offset < st.recorded {
            return Err(JobError::corrupt(
                "tasks",
                format!(
                    "recorder state is invalid (pending {}, file offset {}, recorded {})",
                    st.pending_len, st.file_offset, st.recorded
                ),
            ));
        }
        for p in &st.pending[..st.pending_len as usize] {
            table.finish_raw(p.slot, p.raw, p.free == 1);
        }
        let path = dir.join(PARTIAL_NAME);
        let file =
            open_working(&path, st.file_offset).map_err(|e| JobError::Failed(e.to_string()))?;
        Ok(Recorder {
            table,
            ctl,
            record,
            st,
            file,
            path,
            mono_base_ns: ctl.mono_base_ns.get(),
            unix_base_ms: ctl.unix_base_ms.get(),
            task: Vec::new(),
            result: Vec::new(),
            scan_from: 0,
        })
    }

    /// The committed state (as last committed by us).
    pub(crate) fn state(&self) -> &RecorderState {
        &self.st
    }

    /// The working file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Lines of the run's own client recorded in the working file.
    pub(crate) fn own_lines(&self) -> Result<HashSet<u64>, JobError> {
        use std::io::BufRead;
        let f = File::open(&self.path)
            .map_err(|e| JobError::Failed(format!("{}: {e}", self.path.display())))?;
        let mut out = HashSet::new();
        let mut read = 0u64;
        for line in std::io::BufReader::new(f).lines() {
            let line =
                line.map_err(|e| JobError::Failed(format!("{}: {e}", self.path.display())))?;
            read += line.len() as u64 + 1;
            if read > self.st.file_offset {
                break;
            }
            let v: serde_json::Value = serde_json::from_str(&line)
                .map_err(|e| JobError::Failed(format!("{}: {e}", self.path.display())))?;
            if v["client"] == OWN_NAME
                && let Some(l) = v["line"].as_u64()
            {
                out.insert(l);
            }
        }
        Ok(out)
    }

    fn utc(&self, mono_ns: u64) -> String {
        let ms = self.unix_base_ms as i64 + (mono_ns as i64 - self.mono_base_ns as i64) / 1_000_000;
        crate::units::rfc3339_utc(ms.max(0) as u64)
    }

    /// Records up to one chunk of DONE slots and commits. Returns how many.
    pub(crate) fn record_done(&mut self) -> Result<usize, JobError> {
        let done = self
            .table
            .next_in_state(SlotState::Done, &mut self.scan_from, PENDING);
        if done.is_empty() {
            return Ok(0);
        }
        let mut lines = Vec::with_capacity(256 * done.len().min(PENDING));
        let mut st = self.st;
        st.pending_len = 0;
        for seen in done {
            let owner = self.table.owner(seen.slot)?;
            self.table.read_task(seen.slot, &mut self.task)?;
            self.table.read_result(seen.slot, &mut self.result)?;
            let task: TaskWire = spec::decode(&self.task).map_err(|e| {
                JobError::corrupt(
                    "tasks",
                    format!("task slot {}: task unreadable: {e}", seen.slot),
                )
            })?;
            let res: ResultWire = spec::decode(&self.result).map_err(|e| {
                JobError::corrupt(
                    "tasks",
                    format!("task slot {}: result unreadable: {e}", seen.slot),
                )
            })?;
            let name = client_name(owner, self.table.client_identity(owner));
            let line = json!({
                "id": format!("{name}/{}", task.line),
                "client": name,
                "line": task.line,
                "task": task.text,
                "kind": task.spec.kind(),
                "status": res.status.name(),
                "reply": res.reply,
                "reply_truncated": res.truncated,
                "error": res.error,
                "exit_status": res.exit_status,
                "attempts": seen.word.attempts.max(1),
                "worker_deaths": seen.word.deaths,
                "worker": res.worker,
                "queued": self.utc(task.queued_ns),
                "started": self.utc(res.started_ns),
                "done": self.utc(res.done_ns),
                "latency_s": res.done_ns.saturating_sub(task.queued_ns) as f64 / 1e9,
                "run_s": res.done_ns.saturating_sub(res.started_ns) as f64 / 1e9,
            });
            serde_json::to_writer(&mut lines, &line).expect("JSON to a Vec");
            lines.push(b'\n');
            st.recorded += 1;
            match res.status {
                spec::Status::Ok => st.ok += 1,
                spec::Status::Error => st.errors += 1,
                spec::Status::Quarantined => st.quarantined += 1,
            }
            if seen.word.attempts > 1 {
                st.retried += 1;
            }
            let own = owner == 0;
            if own {
                st.own_recorded += 1;
            }
            st.pending[st.pending_len as usize] = Pending {
                slot: seen.slot,
                free: own as u32,
                raw: seen.raw(),
            };
            st.pending_len += 1;
        }
        self.file
            .write_all(&lines)
            .map_err(|e| JobError::Failed(format!("{}: {e}", self.path.display())))?;
        st.file_offset += lines.len() as u64;
        self.commit(st);
        for p in &st.pending[..st.pending_len as usize] {
            self.table.finish_raw(p.slot, p.raw, p.free == 1);
        }
        Ok(st.pending_len as usize)
    }

    /// Commits `st` (the commit point).
    pub(crate) fn commit(&mut self, st: RecorderState) {
        self.record.commit(st);
        self.st = st;
    }

    /// Records every DONE slot, then marks the client's work complete and
    /// syncs the file (the end of the run's own work; also used by the
    /// handoff when no client is left).
    pub(crate) fn drain(&mut self) -> Result<(), JobError> {
        while self.record_done()? > 0 {}
        self.file
            .sync_all()
            .map_err(|e| JobError::Failed(format!("{}: {e}", self.path.display())))
    }

    /// Marks the run's own work complete.
    pub(crate) fn mark_complete(&mut self) {
        let mut st = self.st;
        st.complete = 1;
        st.pending_len = 0;
        self.commit(st);
        self.ctl.finish.set();
    }
}

/// Runs the run's client.
pub(crate) fn run(ctx: &RoleCtx<'_>) -> Result<(), JobError> {
    let s: &TasksSettings = ctx.settings()?;
    let segs = TasksSegments::open(ctx.run, s, Access::ReadWrite)?;
    let table = segs.table()?;
    let ctl = segs.control()?;
    let own = own_tasks(s)?;
    let mut rec = Recorder::attach(&segs, ctx.out)?;
    table.abandon_filling(0);
    // Own lines published after the last commit, and own lines already in
    // the working file (carried over from an earlier, stopped run): not to
    // be submitted again.
    let accepted = accepted_lines(&table, 0, rec.state().next_line)?;
    let recorded = rec.own_lines()?;
    let mut next = own.partition_point(|(line, _, _)| *line < rec.state().next_line);
    let mut submitted = rec.state().own_submitted;
    let total = own.len() as u64;
    ctx.attached();
    let mut scratch = Vec::new();
    loop {
        let stopping = ctx.stop().is_set() || ctl.finish.is_set();
        let epoch = table.done_epoch();
        let mut progress = 0usize;
        if !stopping {
            while next < own.len() {
                let (line, text, spec) = &own[next];
                if recorded.contains(line) {
                    next += 1;
                    continue;
                }
                if accepted.contains(line) {
                    next += 1;
                    submitted += 1;
                    continue;
                }
                let Some(r) = table.reserve(0) else { break };
                scratch.clear();
                scratch.extend(spec::encode(&TaskWire {
                    line: *line,
                    text: text.clone(),
                    queued_ns: monotonic_ns(),
                    spec: spec.clone(),
                }));
                table.write_task(&r, &scratch);
                if !table.publish(r) {
                    return Err(JobError::Failed(
                        "the client lost a slot it was filling; another process abandoned it"
                            .into(),
                    ));
                }
                next += 1;
                submitted += 1;
                progress += 1;
            }
        }
        let next_line = own.get(next).map_or(u64::MAX, |t| t.0);
        if rec.state().next_line != next_line || rec.state().own_submitted != submitted {
            let mut st = *rec.state();
            st.next_line = next_line;
            st.own_submitted = submitted;
            st.pending_len = 0;
            rec.commit(st);
        }
        progress += rec.record_done()?;
        if s.has_own_work() && rec.state().own_recorded >= total && rec.state().complete == 0 {
            rec.drain()?;
            rec.mark_complete();
        }
        if rec.state().complete == 1 || (stopping && progress == 0) {
            rec.drain()?;
            return Ok(());
        }
        if progress > 0 {
            continue;
        }
        if table.wait_done(epoch, SLICE).is_err() {
            ctx.require_supervisor()?;
        }
    }
}

/// Lines of client `c` at or after `from` already published (QUEUED,
/// CLAIMED, DONE or RECORDED).
pub(crate) fn accepted_lines(
    table: &TaskTable<'_>,
    c: u32,
    from: u64,
) -> Result<HashSet<u64>, JobError> {
    let mut out = HashSet::new();
    let mut buf = Vec::new();
    for st in [
        SlotState::Queued,
        SlotState::Claimed,
        SlotState::Done,
        SlotState::Recorded,
    ] {
        for seen in table.in_state(st) {
            if table.owner(seen.slot)? != c {
                continue;
            }
            table.read_task(seen.slot, &mut buf)?;
            let t: TaskWire = spec::decode(&buf)
                .map_err(|e| JobError::corrupt("tasks", format!("task slot {}: {e}", seen.slot)))?;
            if t.line >= from {
                out.insert(t.line);
            }
        }
    }
    Ok(out)
}
