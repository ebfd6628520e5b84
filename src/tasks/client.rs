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

use std::collections::{HashMap, VecDeque};
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
    /// How the run's own client is named in the records: `client`, or the
    /// tasks subject of `--from`.
    own_name: String,
    /// Whether to keep the own records just made for [`take_own`]
    /// (`--from`: they are published and acknowledged).
    ///
    /// [`take_own`]: Recorder::take_own
    track_own: bool,
    own_out: Vec<OwnRecord>,
}

/// A record of the run's own client, as written to the working file.
#[derive(Debug)]
pub(crate) struct OwnRecord {
    /// The task's line (with `--from`: its stream sequence number).
    pub(crate) line: u64,
    /// Whether it was quarantined.
    pub(crate) quarantined: bool,
    /// The JSON line, without its newline.
    pub(crate) json: Vec<u8>,
    /// Where it is in the working file.
    pub(crate) span: Span,
    /// The task's ack subject (`--from`).
    pub(crate) ack: Option<String>,
}

/// Where a record sits in the working file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    /// Byte offset.
    pub(crate) offset: u64,
    /// Bytes, without the newline.
    pub(crate) len: u64,
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
        let st = segs.recorder_state()?;
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
            own_name: segs
                .settings()
                .intake
                .as_ref()
                .map_or_else(|| OWN_NAME.to_string(), |i| i.tasks_subject.clone()),
            track_own: segs.settings().intake.is_some(),
            own_out: Vec::new(),
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

    /// Lines of the run's own client recorded in the working file, with
    /// where each record is.
    pub(crate) fn own_records(&self) -> Result<HashMap<u64, Span>, JobError> {
        use std::io::BufRead;
        let f = File::open(&self.path)
            .map_err(|e| JobError::Failed(format!("{}: {e}", self.path.display())))?;
        let mut out = HashMap::new();
        let mut offset = 0u64;
        for line in std::io::BufReader::new(f).lines() {
            let line =
                line.map_err(|e| JobError::Failed(format!("{}: {e}", self.path.display())))?;
            let at = offset;
            offset += line.len() as u64 + 1;
            if offset > self.st.file_offset {
                break;
            }
            let v: serde_json::Value = serde_json::from_str(&line)
                .map_err(|e| JobError::Failed(format!("{}: {e}", self.path.display())))?;
            if v["client"] == self.own_name.as_str()
                && let Some(l) = v["line"].as_u64()
            {
                out.insert(
                    l,
                    Span {
                        offset: at,
                        len: line.len() as u64,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Reads the record at `span` of the working file.
    pub(crate) fn read_record(&self, span: Span) -> Result<Vec<u8>, JobError> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; span.len as usize];
        self.file
            .read_exact_at(&mut buf, span.offset)
            .map_err(|e| JobError::Failed(format!("{}: {e}", self.path.display())))?;
        Ok(buf)
    }

    /// The own records made since the last call (only with `--from`).
    pub(crate) fn take_own(&mut self) -> Vec<OwnRecord> {
        std::mem::take(&mut self.own_out)
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
            let own = owner == 0;
            let name = if own {
                self.own_name.clone()
            } else {
                client_name(owner, self.table.client_identity(owner))
            };
            let at = lines.len();
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
            let mut line = line;
            if let Some(q) = &task.queue {
                line["delivered"] = q.delivered.into();
            }
            serde_json::to_writer(&mut lines, &line).expect("JSON to a Vec");
            if own && self.track_own {
                self.own_out.push(OwnRecord {
                    line: task.line,
                    quarantined: res.status == spec::Status::Quarantined,
                    json: lines[at..].to_vec(),
                    span: Span {
                        offset: self.st.file_offset + at as u64,
                        len: (lines.len() - at) as u64,
                    },
                    ack: task.queue.as_ref().map(|q| q.ack.clone()),
                });
            }
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
    if let Some(i) = &s.intake {
        return run_queue(ctx, s, i, &segs);
    }
    let own = own_tasks(s)?;
    let mut rec = Recorder::attach(&segs, ctx.out)?;
    table.abandon_filling(0);
    // Own lines published after the last commit, and own lines already in
    // the working file (carried over from an earlier, stopped run): not to
    // be submitted again.
    let accepted = accepted_lines(&table, 0, rec.state().next_line)?;
    let recorded = rec.own_records()?;
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
                if recorded.contains_key(line) {
                    next += 1;
                    continue;
                }
                if accepted.contains_key(line) {
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
                    queue: None,
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
/// CLAIMED, DONE or RECORDED), with their ack subjects (`--from`).
pub(crate) fn accepted_lines(
    table: &TaskTable<'_>,
    c: u32,
    from: u64,
) -> Result<HashMap<u64, Option<String>>, JobError> {
    let mut out = HashMap::new();
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
                out.insert(t.line, t.queue.map(|q| q.ack));
            }
        }
    }
    Ok(out)
}

/// Submits one task of the run's own client; `false` if the table is full.
fn submit_own(
    table: &TaskTable<'_>,
    scratch: &mut Vec<u8>,
    wire: &TaskWire,
) -> Result<bool, JobError> {
    let Some(r) = table.reserve(0) else {
        return Ok(false);
    };
    scratch.clear();
    scratch.extend(spec::encode(wire));
    table.write_task(&r, scratch);
    if !table.publish(r) {
        return Err(JobError::Failed(
            "the client lost a slot it was filling; another process abandoned it".into(),
        ));
    }
    Ok(true)
}

/// The client with `--from`: tasks come from the intake thread, results go
/// back to it to be published and acknowledged.
///
/// Crash safety: what the client holds in memory is rebuilt on restart.
/// Tasks in the table carry their ack subjects; results in the working
/// file are found by stream sequence. A message delivered again is
/// matched against both: running → only its newer ack subject is kept;
/// recorded → its result is published again (the results stream drops
/// the duplicate) and it is acknowledged.
fn run_queue(
    ctx: &RoleCtx<'_>,
    s: &TasksSettings,
    q: &super::intake::IntakeSettings,
    segs: &TasksSegments,
) -> Result<(), JobError> {
    use super::intake::{FromIntake, Intake, ToIntake};
    let table = segs.table()?;
    let ctl = segs.control()?;
    let commands = match &s.table {
        Some(t) => {
            t.check()?;
            Some(spec::read_table(&t.path).map_err(|e| JobError::Failed(e.to_string()))?)
        }
        None => None,
    };
    let mut rec = Recorder::attach(segs, ctx.out)?;
    table.abandon_filling(0);
    // seq → ack subject of every own task in the table.
    let mut running: HashMap<u64, Option<String>> = accepted_lines(&table, 0, 0)?;
    // seq → record of every result this run recorded. Kept after the ack:
    // a redelivery can cross it (the ack wait ran out while the task ran,
    // e.g. across a client restart, whose new intake does not extend the
    // wait of tasks already in the table), and a message delivered again
    // after its result was recorded is answered from here, never run again.
    let mut recorded: HashMap<u64, Span> = rec.own_records()?;
    let mut backlog: VecDeque<super::intake::Delivery> = VecDeque::new();
    let stats = &ctl.intake;
    ctx.attached();
    std::thread::scope(|scope| {
        let intake = Intake::start(scope, q.clone(), table.recorder_bell());
        // Results recorded before a restart whose acks may be lost: the
        // redelivery of their messages finds them in `recorded`.
        let mut scratch = Vec::new();
        let mut drained = false;
        let mut room_sent = usize::MAX;
        let result = (|| -> Result<(), JobError> {
            loop {
                let stopping = ctx.stop().is_set() || ctl.finish.is_set();
                let epoch = table.done_epoch();
                let mut progress = 0usize;
                while let Some(m) = intake.try_recv() {
                    progress += 1;
                    match m {
                        FromIntake::Task(d) => {
                            stats.delivered.add(1);
                            if d.delivered > 1 {
                                stats.redelivered.add(1);
                            }
                            if let Some(a) = running.get_mut(&d.seq) {
                                *a = Some(d.ack);
                            } else if let Some(span) = recorded.get(&d.seq) {
                                let json = rec.read_record(*span)?;
                                let term = serde_json::from_slice::<serde_json::Value>(&json)
                                    .is_ok_and(|v| v["status"] == "quarantined");
                                intake.send(ToIntake::Result {
                                    seq: d.seq,
                                    ack: d.ack,
                                    json,
                                    term,
                                });
                            } else {
                                backlog.push_back(d);
                            }
                        }
                        FromIntake::Acked => {
                            stats.acked.add(1);
                        }
                        FromIntake::Drained => drained = true,
                        FromIntake::Link(l) => stats.link.set(l as u64 + 1),
                        FromIntake::Failed(e) => return Err(e.into()),
                    }
                }
                while !stopping && let Some(d) = backlog.front() {
                    let (text, spec) = match &d.text {
                        Ok(t) if d.delivered > q.max_attempts as u64 => (
                            t.clone(),
                            TaskSpec::Poison {
                                deliveries: d.delivered,
                                max: q.max_attempts,
                            },
                        ),
                        Ok(t) => match spec::parse_line(t, commands.as_ref()) {
                            Ok(Some(sp)) => (t.clone(), sp),
                            Ok(None) => (
                                t.clone(),
                                TaskSpec::Invalid {
                                    error: "the message is blank or a comment, not a task".into(),
                                },
                            ),
                            Err(e) => (t.clone(), TaskSpec::Invalid { error: e }),
                        },
                        Err(e) => (String::new(), TaskSpec::Invalid { error: e.clone() }),
                    };
                    let mut wire = TaskWire {
                        line: d.seq,
                        text,
                        queued_ns: monotonic_ns(),
                        spec,
                        queue: Some(spec::Queued {
                            ack: d.ack.clone(),
                            delivered: d.delivered,
                        }),
                    };
                    if spec::encode(&wire).len() > s.task_max as usize {
                        wire.spec = TaskSpec::Invalid {
                            error: format!(
                                "the task is larger than --task-max {} bytes",
                                s.task_max
                            ),
                        };
                        wire.text = wire.text.chars().take(64).collect();
                    }
                    if !submit_own(&table, &mut scratch, &wire)? {
                        break;
                    }
                    running.insert(d.seq, Some(d.ack.clone()));
                    backlog.pop_front();
                    progress += 1;
                }
                progress += rec.record_done()?;
                for o in rec.take_own() {
                    let ack = running.remove(&o.line).flatten().or(o.ack);
                    recorded.insert(o.line, o.span);
                    if let Some(ack) = ack {
                        intake.send(ToIntake::Result {
                            seq: o.line,
                            ack,
                            json: o.json,
                            term: o.quarantined,
                        });
                    }
                }
                let room = (s.queue as usize).saturating_sub(running.len() + backlog.len());
                let room = if stopping { 0 } else { room };
                if room != room_sent {
                    intake.send(ToIntake::Room(room));
                    room_sent = room;
                }
                let idle = running.is_empty() && backlog.is_empty();
                if q.drain && drained && idle && rec.state().complete == 0 {
                    rec.drain()?;
                    rec.mark_complete();
                }
                if rec.state().complete == 1 || (stopping && progress == 0) {
                    rec.drain()?;
                    intake.send(ToIntake::Close);
                    return Ok(());
                }
                if progress > 0 {
                    continue;
                }
                if table.wait_done(epoch, SLICE).is_err() {
                    ctx.require_supervisor()?;
                }
            }
        })();
        intake.send(ToIntake::Close);
        result
    })
}
