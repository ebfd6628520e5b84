//! `forkring submit --run NAME FILE`: an external client of a live task
//! pool. It submits FILE's tasks and prints every reply as it completes.
//!
//! Idempotent by (client identity, line). The identity is `--id ID`, or
//! derived from FILE's absolute path and content, so the same command names
//! the same client. Its record in the table holds the next line to submit
//! (committed after each batch); a restarted `submit` also finds its lines
//! published after the last commit in the table, so it resubmits nothing
//! that was accepted. Replies stay in the table (RECORDED) until the client
//! takes them: a killed `submit` run again collects the ones it missed. A
//! reply printed just before a kill may be printed again (at least once);
//! the run's `tasks.jsonl` records each task exactly once.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, value_parser};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::control::{Control, RunPhase};
use crate::job::{JobCommand, JobError};
use crate::settings::RunSettings;
use crate::shm::taskq::{ClientProgress, SLICE, SlotState, TaskTable};
use crate::shm::{Access, RunName};

use super::client::{accepted_lines, client_name};
use super::layout::{OWN_CLIENT, TasksSegments};
use super::settings::TasksSettings;
use super::spec::{self, ResultWire, TaskWire};

/// The task pool's commands.
pub(crate) static COMMANDS: [JobCommand; 1] = [JobCommand {
    command,
    run: submit,
}];

fn command() -> clap::Command {
    clap::Command::new("submit")
        .about("Submit a file of tasks to a live task pool and print each reply as it completes")
        .long_about(
            "Submit a file of tasks to a live `forkring run --jobs tasks` (a service started without \
             --tasks, or any tasks run) and print each reply as it completes. Run again after a kill, \
             it resubmits nothing already accepted and collects the replies it missed. Exits 0 once \
             every task has a result, 1 if the run stops first.",
        )
        .arg(
            Arg::new("run")
                .long("run")
                .required_unless_present("to")
                .conflicts_with("to")
                .value_name("NAME")
                .value_parser(|s: &str| RunName::new(s).map_err(|e| e.to_string()))
                .help("The run to submit to (see `forkring status`)"),
        )
        .arg(
            Arg::new("to")
                .long("to")
                .value_name("URL")
                .help("Instead of a run: queue the tasks on a NATS JetStream work queue (nats://HOST:PORT), for the runs started with --from to take; creates the queue's stream if missing. Each line's Nats-Msg-Id is the client identity and the line number, so the same command queues nothing twice within the stream's dedup window"),
        )
        .arg(
            Arg::new("tasks_subject")
                .long("tasks-subject")
                .requires("to")
                .value_name("SUBJECT")
                .help("With --to: the subject of the queue [default: forkring.tasks]"),
        )
        .arg(
            Arg::new("tasks_stream")
                .long("tasks-stream")
                .requires("to")
                .value_name("NAME")
                .help("With --to: the queue's stream [default: the stream that captures the subject, else one created as the subject in upper case]"),
        )
        .arg(
            Arg::new("connect_timeout")
                .long("connect-timeout")
                .requires("to")
                .value_name("SECS")
                .default_value("5")
                .hide_default_value(true)
                .value_parser(crate::units::parse_connect_timeout)
                .help("With --to: seconds to reach the server, 0.001 to 3600 [default: 5]"),
        )
        .arg(
            Arg::new("file")
                .value_name("FILE")
                .required(true)
                .value_parser(value_parser!(PathBuf))
                .help("Tasks, one per line: `spin N`, `exec PROGRAM ARGS...` or `IP:COMMAND`"),
        )
        .arg(
            Arg::new("table")
                .long("table")
                .value_name("FILE")
                .value_parser(value_parser!(PathBuf))
                .help("Command table for IP:COMMAND tasks: lines `IP:COMMAND<TAB>SECONDS<TAB>REPLY`"),
        )
        .arg(
            Arg::new("id")
                .long("id")
                .value_name("ID")
                .help("This client's identity [default: from FILE's path and content]"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print each reply as one JSON object per line"),
        )
}

fn identity_of(id: Option<&String>, path: &std::path::Path, content: &[u8]) -> u64 {
    let mut h = Sha256::new();
    match id {
        Some(id) => {
            h.update(b"id\0");
            h.update(id.as_bytes());
        }
        None => {
            h.update(b"file\0");
            h.update(path.as_os_str().as_encoded_bytes());
            h.update(b"\0");
            h.update(content);
        }
    }
    let d = h.finalize();
    // Never 0 (a free record) or the run's own client.
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) | 1 << 63
}

fn submit(m: &ArgMatches) -> Result<(), JobError> {
    let file = m.get_one::<PathBuf>("file").expect("required");
    let as_json = m.get_flag("json");
    if let Some(url) = m.get_one::<String>("to") {
        return submit_to_queue(m, url, file, as_json);
    }
    let run = m.get_one::<RunName>("run").expect("required unless --to");
    // The run: live, with a task pool.
    let control = match Control::open(run, Access::ReadWrite) {
        Ok(c) => c,
        Err(crate::control::ControlError::Open(crate::shm::OpenError::NotFound { .. })) => {
            return Err(JobError::Failed(format!(
                "no run named {run} (nothing in /dev/shm/forkring.{run}.*); start one with `forkring run --jobs tasks --name {run}`"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let (jobs, settings) =
        RunSettings::decode_one(&control.settings_blob(), &super::JOB).map_err(|e| {
            JobError::corrupt(
                control.segment().name(),
                format!("field settings is unreadable ({e})"),
            )
        })?;
    let Some(settings) = settings else {
        return Err(JobError::Usage(format!(
            "run {run} has no task pool (its jobs: {}); submit to a run started with `--jobs tasks`",
            jobs.join(",")
        )));
    };
    let s: &TasksSettings = settings
        .downcast::<TasksSettings>()
        .expect("decoded by the task pool's own decoder");
    if !control.supervisor_alive() {
        return Err(JobError::SupervisorGone { run: run.clone() });
    }
    // The file, checked whole before anything is submitted.
    let path = std::fs::canonicalize(file)
        .map_err(|e| JobError::Usage(format!("{}: {e}", file.display())))?;
    let content =
        std::fs::read(&path).map_err(|e| JobError::Usage(format!("{}: {e}", path.display())))?;
    let table_map = match m.get_one::<PathBuf>("table") {
        Some(t) => Some(spec::read_table(t).map_err(|e| JobError::Usage(e.to_string()))?),
        None => None,
    };
    let text = String::from_utf8(content.clone())
        .map_err(|_| JobError::Usage(format!("{}: not UTF-8 text", path.display())))?;
    let tasks = spec::parse_tasks(&text, table_map.as_ref(), s.task_max)
        .map_err(|d| JobError::Usage(format!("{}: {d}", path.display())))?;
    let segs = TasksSegments::open(run, s, Access::ReadWrite)?;
    let table = segs.table()?;
    let identity = identity_of(m.get_one::<String>("id"), &path, &content);
    debug_assert!(identity != OWN_CLIENT);
    let c = table.client_record(identity).ok_or_else(|| {
        JobError::Failed(format!(
            "run {run} has no free client record (every one of {} is taken by another identity)",
            table.params().clients
        ))
    })?;
    // One live process per client: the lock dies with its holder.
    let byte = 1 + c as u64;
    match crate::shm::lock::try_lock(segs.tasks_segment().fd().as_fd(), byte) {
        Ok(true) => {}
        Ok(false) => {
            return Err(JobError::Failed(format!(
                "another `forkring submit` with this identity ({}) is running against run {run}",
                client_name(c, identity)
            )));
        }
        Err(e) => {
            return Err(JobError::Failed(format!(
                "cannot lock the client record: {e}"
            )));
        }
    }
    let name = client_name(c, identity);
    let mut progress = table.client_progress(c)?;
    table.abandon_filling(c);
    let accepted = accepted_lines(&table, c, progress.next_line)?;
    let mut next = tasks.partition_point(|(line, _, _)| *line < progress.next_line);
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    let mut res = Vec::new();
    let total = tasks.len();
    let mut printed = 0usize;
    loop {
        let epoch = table.recorded_epoch(c);
        let freed = table.freed_epoch();
        let mut progressed = false;
        while next < tasks.len() {
            let (line, text, spec) = &tasks[next];
            if !accepted.contains_key(line) {
                let Some(r) = table.reserve(c) else { break };
                buf = spec::encode(&TaskWire {
                    line: *line,
                    text: text.clone(),
                    queued_ns: crate::clock::monotonic_ns(),
                    spec: spec.clone(),
                    queue: None,
                });
                table.write_task(&r, &buf);
                if !table.publish(r) {
                    return Err(JobError::Failed(
                        "a slot being filled was taken away".into(),
                    ));
                }
                progressed = true;
            }
            next += 1;
        }
        let next_line = tasks.get(next).map_or(u64::MAX, |t| t.0);
        if next_line != progress.next_line {
            progress = ClientProgress { next_line };
            table.commit_client_progress(c, progress);
        }
        // Replies recorded for us: print, then take them (the slot is
        // freed only after the line was written).
        for seen in table.in_state(SlotState::Recorded) {
            if table.owner(seen.slot)? != c {
                continue;
            }
            table.read_task(seen.slot, &mut buf)?;
            table.read_result(seen.slot, &mut res)?;
            let (t, r): (TaskWire, ResultWire) = (
                spec::decode(&buf).map_err(|e| JobError::corrupt("tasks", e))?,
                spec::decode(&res).map_err(|e| JobError::corrupt("tasks", e))?,
            );
            print_reply(&mut out, &name, &t, &r, seen.word.attempts, as_json)?;
            table.finish_raw(seen.slot, seen.raw(), true);
            printed += 1;
            progressed = true;
        }
        let all_accepted = next >= tasks.len();
        if all_accepted && !owns_any(&table, c)? {
            out.flush().ok();
            if !as_json {
                eprintln!(
                    "forkring submit: {total} tasks of {} have a result ({printed} printed now)",
                    path.display()
                );
            }
            return Ok(());
        }
        if progressed {
            continue;
        }
        let stopping = !control.supervisor_alive()
            || matches!(
                control.phase(),
                Some(
                    RunPhase::Stopping
                        | RunPhase::HandingOff
                        | RunPhase::HandedOff
                        | RunPhase::Failed
                )
            );
        if stopping {
            return Err(JobError::Failed(format!(
                "run {run} stopped before every task had a result; run the same `forkring submit` against the run when it is live again to collect the rest"
            )));
        }
        // Wait for a reply; with tasks left to submit, for room in the full
        // table (replies are then taken on the next round).
        if all_accepted {
            let _ = table.wait_recorded(c, epoch, SLICE);
        } else {
            let _ = table.wait_freed(freed, SLICE / 10);
        }
    }
}

/// `forkring submit --to URL FILE`: queues FILE's task lines.
fn submit_to_queue(
    m: &ArgMatches,
    url: &str,
    file: &std::path::Path,
    as_json: bool,
) -> Result<(), JobError> {
    use crate::nats::names;
    let usage = JobError::Usage;
    let url = crate::nats::Endpoint::parse("--to", url).map_err(usage)?;
    let subject = names::subject(
        "--tasks-subject",
        m.get_one::<String>("tasks_subject")
            .map_or("forkring.tasks", String::as_str),
    )
    .map_err(usage)?;
    let (stream, named) = match m.get_one::<String>("tasks_stream") {
        Some(n) => (names::name("--tasks-stream", n).map_err(usage)?, true),
        None => (names::stream_for(&subject), false),
    };
    let timeout = *m.get_one::<f64>("connect_timeout").expect("has a default");
    let path = std::fs::canonicalize(file)
        .map_err(|e| JobError::Usage(format!("{}: {e}", file.display())))?;
    let content =
        std::fs::read(&path).map_err(|e| JobError::Usage(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8(content.clone())
        .map_err(|_| JobError::Usage(format!("{}: not UTF-8 text", path.display())))?;
    let table_map = match m.get_one::<PathBuf>("table") {
        Some(t) => Some(spec::read_table(t).map_err(|e| JobError::Usage(e.to_string()))?),
        None => None,
    };
    // Checked whole before anything is queued (the size against the
    // largest --task-max, as the run's own check comes later).
    let tasks = spec::parse_tasks(&text, table_map.as_ref(), super::settings::bounds::BYTES.1)
        .map_err(|d| JobError::Usage(format!("{}: {d}", path.display())))?;
    let identity = identity_of(m.get_one::<String>("id"), &path, &content);
    let lines: Vec<(String, String)> = tasks
        .iter()
        .map(|(line, text, _)| (format!("{identity:016x}/{line}"), text.clone()))
        .collect();
    let q = super::intake::Queue {
        url: &url,
        subject: &subject,
        stream: &stream,
        named,
        timeout: std::time::Duration::from_secs_f64(timeout),
    };
    let (stored, duplicates) = q.enqueue(&lines)?;
    if as_json {
        println!(
            "{}",
            json!({
                "url": url.as_str(),
                "subject": subject,
                "stream": stream,
                "queued": stored,
                "duplicates": duplicates,
            })
        );
    } else {
        println!(
            "forkring submit: queued {stored} tasks of {} on {subject} at {url}{}",
            path.display(),
            if duplicates > 0 {
                format!(" ({duplicates} were already queued: not queued again)")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Whether client `c` still has a task in the table.
fn owns_any(table: &TaskTable<'_>, c: u32) -> Result<bool, JobError> {
    for st in [
        SlotState::Filling,
        SlotState::Queued,
        SlotState::Claimed,
        SlotState::Done,
        SlotState::Recorded,
    ] {
        for seen in table.in_state(st) {
            if table.owner(seen.slot)? == c {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn print_reply(
    out: &mut impl Write,
    client: &str,
    t: &TaskWire,
    r: &ResultWire,
    attempts: u32,
    as_json: bool,
) -> Result<(), JobError> {
    let res = if as_json {
        let v = json!({
            "id": format!("{client}/{}", t.line),
            "line": t.line,
            "task": t.text,
            "status": r.status.name(),
            "reply": r.reply,
            "reply_truncated": r.truncated,
            "error": r.error,
            "exit_status": r.exit_status,
            "attempts": attempts.max(1),
            "worker": r.worker,
        });
        writeln!(out, "{v}")
    } else {
        match &r.error {
            Some(e) => writeln!(out, "line {} {}: {e}", t.line, r.status.name()),
            None => writeln!(out, "line {} {}: {}", t.line, r.status.name(), r.reply),
        }
    };
    res.and_then(|()| out.flush())
        .map_err(|e| JobError::Failed(format!("cannot write to standard output: {e}")))
}
