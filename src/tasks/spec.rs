//! Task files, command tables, and the task and result records that travel
//! through the task table.
//!
//! A task file has one task per line (blank lines and lines starting with
//! `#` are skipped, but still counted: a task is known by its line number):
//! - `spin N`: N iterations of a loop the compiler cannot remove (CPU work);
//!   the reply is the loop's final value in hex.
//! - `exec PROGRAM [ARGS...]`: runs PROGRAM without a shell (the line is split
//!   like a POSIX shell splits words, quotes and backslashes included, with
//!   no expansion); the reply is its standard output, capped at
//!   `--reply-max`, and the result records its exit status.
//! - `IP:COMMAND`: a simulated remote call, looked up in the `--table` file,
//!   whose lines are `IP:COMMAND<TAB>SECONDS<TAB>REPLY`: the worker waits
//!   SECONDS, then replies REPLY. A command missing from the table gets an
//!   error result.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The longest a simulated remote call may take, seconds.
pub(crate) const MAX_CALL_SECONDS: f64 = 86_400.0;
/// The largest `spin` count.
pub(crate) const MAX_SPIN: u64 = 1_000_000_000_000;
/// Most task lines a file may hold.
pub(crate) const MAX_LINES: u64 = 100_000_000;

/// What a task does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum TaskSpec {
    /// CPU work: a loop of `n` iterations.
    Spin {
        /// Iterations.
        n: u64,
    },
    /// A program run without a shell.
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
    },
    /// A simulated remote call found in the table.
    Call {
        /// `IP:COMMAND`.
        key: String,
        /// How long the call takes, seconds.
        seconds: f64,
        /// What it replies.
        reply: String,
    },
    /// A remote call missing from the table: an error result.
    Unknown {
        /// `IP:COMMAND`.
        key: String,
    },
    /// A queued message that is not a task line: an error result.
    Invalid {
        /// Why, as the task file check would say it.
        error: String,
    },
    /// A queued message delivered more than `--max-attempts` times without
    /// a result (the runs that took it died): quarantined, not run.
    Poison {
        /// Deliveries so far.
        deliveries: u64,
        /// `--max-attempts`.
        max: u32,
    },
    /// A chunk of a relay pipeline over the run's data segment.
    Chunk {
        /// First element.
        start: u64,
        /// Elements.
        len: u32,
    },
}

impl TaskSpec {
    /// The kind's name, as in `tasks.jsonl`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            TaskSpec::Spin { .. } => "spin",
            TaskSpec::Exec { .. } => "exec",
            TaskSpec::Call { .. } | TaskSpec::Unknown { .. } => "call",
            TaskSpec::Chunk { .. } => "chunk",
            TaskSpec::Invalid { .. } => "invalid",
            TaskSpec::Poison { .. } => "unrun",
        }
    }
}

/// A task as it travels through the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskWire {
    /// The line of its client's file (1-based), or the chunk number.
    pub(crate) line: u64,
    /// The task as written (shown in `tasks.jsonl`).
    pub(crate) text: String,
    /// When it was queued (CLOCK_MONOTONIC ns).
    pub(crate) queued_ns: u64,
    /// What to do.
    pub(crate) spec: TaskSpec,
    /// The JetStream message it came from (`--from`).
    pub(crate) queue: Option<Queued>,
}

/// Where a task from a work queue came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Queued {
    /// The message's ack subject, kept here so that a restarted client can
    /// still acknowledge it.
    pub(crate) ack: String,
    /// Deliveries of the message, this one included.
    pub(crate) delivered: u64,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Status {
    /// It ran and succeeded (for `exec`: exit status 0).
    Ok,
    /// It ran and failed, or could not run.
    Error,
    /// Its workers died `--max-attempts` times while running it.
    Quarantined,
}

impl Status {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Quarantined => "quarantined",
        }
    }
}

/// A result as it travels through the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ResultWire {
    /// How it ended.
    pub(crate) status: Status,
    /// The reply (capped).
    pub(crate) reply: String,
    /// Whether the reply was cut at the cap.
    pub(crate) truncated: bool,
    /// Why it failed, if it did.
    pub(crate) error: Option<String>,
    /// For `exec`: the exit code, or 128 + the signal that killed it.
    pub(crate) exit_status: Option<i32>,
    /// The worker that ran it.
    pub(crate) worker: u32,
    /// When the worker started it (CLOCK_MONOTONIC ns).
    pub(crate) started_ns: u64,
    /// When the result was committed (CLOCK_MONOTONIC ns).
    pub(crate) done_ns: u64,
}

/// Bytes a result takes besides its reply and error (a generous bound of
/// the encoding's fixed part).
pub(crate) const RESULT_OVERHEAD: usize = 96;

/// Encodes a record for the table.
pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .expect("task records are plain data and always encode")
}

/// Decodes a record read from the table (untrusted bytes, bounded).
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let cfg = bincode::config::standard().with_limit::<{ 4 << 20 }>();
    let (v, used) = bincode::serde::decode_from_slice(bytes, cfg).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} bytes follow the record", bytes.len() - used));
    }
    Ok(v)
}

/// A command table: `IP:COMMAND` to (seconds, reply).
pub(crate) type Table = HashMap<String, (f64, String)>;

/// Why a task or table file was refused. Exit code 2: it is the user's
/// input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {detail}")]
pub(crate) struct FileError {
    /// The file.
    pub(crate) path: String,
    /// What is wrong, with the line number.
    pub(crate) detail: String,
}

fn read(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|e| FileError {
        path: path.display().to_string(),
        detail: format!("cannot read it: {e}"),
    })
}

/// Reads a command table.
pub(crate) fn read_table(path: &Path) -> Result<Table, FileError> {
    parse_table(&read(path)?).map_err(|detail| FileError {
        path: path.display().to_string(),
        detail,
    })
}

/// Parses a command table (see the module docs).
pub(crate) fn parse_table(text: &str) -> Result<Table, String> {
    let mut t = Table::new();
    let mut first: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, '\t');
        let (Some(key), Some(secs), Some(reply)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "line {n}: expected IP:COMMAND<TAB>SECONDS<TAB>REPLY, found {line:?}"
            ));
        };
        let key = key.trim();
        if !is_call(key) {
            return Err(format!(
                "line {n}: {key:?} is not IP:COMMAND (a host, a colon, a command)"
            ));
        }
        let seconds: f64 = secs
            .trim()
            .parse()
            .map_err(|_| format!("line {n}: {secs:?} is not a number of seconds"))?;
        if !(seconds.is_finite() && (0.0..=MAX_CALL_SECONDS).contains(&seconds)) {
            return Err(format!(
                "line {n}: {seconds} seconds is out of range; give 0 to {MAX_CALL_SECONDS}"
            ));
        }
        if let Some(prev) = first.insert(key.to_string(), n) {
            return Err(format!(
                "line {n}: {key} is listed twice (first on line {prev}); keep one"
            ));
        }
        t.insert(key.to_string(), (seconds, reply.to_string()));
    }
    Ok(t)
}

/// Whether `s` reads as `IP:COMMAND`.
fn is_call(s: &str) -> bool {
    match s.split_once(':') {
        Some((host, cmd)) => {
            !host.is_empty() && !host.contains(char::is_whitespace) && !cmd.trim().is_empty()
        }
        None => false,
    }
}

/// Parses one task line; `None` for a blank or comment line.
pub(crate) fn parse_line(line: &str, table: Option<&Table>) -> Result<Option<TaskSpec>, String> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    let (word, rest) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
    match word {
        "spin" => {
            let n: u64 = rest.trim().parse().map_err(|_| {
                format!(
                    "`spin N` needs a whole number of iterations, found {:?}",
                    rest.trim()
                )
            })?;
            if n > MAX_SPIN {
                return Err(format!("spin {n} is more than {MAX_SPIN} iterations"));
            }
            Ok(Some(TaskSpec::Spin { n }))
        }
        "exec" => {
            let argv =
                shlex::split(rest).ok_or_else(|| "`exec` has an unbalanced quote".to_string())?;
            if argv.is_empty() {
                return Err("`exec` needs a program to run".into());
            }
            Ok(Some(TaskSpec::Exec { argv }))
        }
        _ if is_call(t) => {
            let key = t.to_string();
            Ok(Some(match table.and_then(|tb| tb.get(&key)) {
                Some((seconds, reply)) => TaskSpec::Call {
                    key,
                    seconds: *seconds,
                    reply: reply.clone(),
                },
                None => TaskSpec::Unknown { key },
            }))
        }
        _ => Err(format!(
            "{t:?} is not a task; write `spin N`, `exec PROGRAM ARGS...` or `IP:COMMAND`"
        )),
    }
}

/// A task file's tasks: (line number, text, spec), in order.
pub(crate) type Tasks = Vec<(u64, String, TaskSpec)>;

/// Reads a task file, checking every line and the size of every task
/// against `task_max` bytes once encoded.
pub(crate) fn read_tasks(
    path: &Path,
    table: Option<&Table>,
    task_max: u32,
) -> Result<Tasks, FileError> {
    let text = read(path)?;
    parse_tasks(&text, table, task_max).map_err(|detail| FileError {
        path: path.display().to_string(),
        detail,
    })
}

/// Parses a task file's text (see [`read_tasks`]).
pub(crate) fn parse_tasks(
    text: &str,
    table: Option<&Table>,
    task_max: u32,
) -> Result<Tasks, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        if n > MAX_LINES {
            return Err(format!("more than {MAX_LINES} lines"));
        }
        let Some(spec) = parse_line(line, table).map_err(|e| format!("line {n}: {e}"))? else {
            continue;
        };
        let text = line.trim().to_string();
        let size = encode(&TaskWire {
            line: n,
            text: text.clone(),
            queued_ns: u64::MAX,
            spec: spec.clone(),
            queue: None,
        })
        .len();
        if size > task_max as usize {
            return Err(format!(
                "line {n}: the task takes {size} bytes, more than --task-max {task_max}; shorten it or raise --task-max"
            ));
        }
        out.push((n, text, spec));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables() {
        let t =
            parse_table("# comment\n10.0.0.1:uptime\t0.5\tup 3 days\n\n10.0.0.2:ls\t1\ta b\tc\n")
                .unwrap();
        assert_eq!(t["10.0.0.1:uptime"], (0.5, "up 3 days".to_string()));
        assert_eq!(t["10.0.0.2:ls"], (1.0, "a b\tc".to_string()));
        assert!(parse_table("a:b\t1\n").unwrap_err().starts_with("line 1:"));
        assert!(
            parse_table("a:b\tx\ty\n")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            parse_table("a:b\t-1\ty\n")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            parse_table("a:b\tnan\ty\n")
                .unwrap_err()
                .contains("out of range")
        );
        let dup = parse_table("a:b\t1\tx\na:b\t2\ty\n").unwrap_err();
        assert!(
            dup.contains("line 2") && dup.contains("first on line 1"),
            "{dup}"
        );
        assert!(
            parse_table("ab\t1\tx\n")
                .unwrap_err()
                .contains("not IP:COMMAND")
        );
    }

    #[test]
    fn task_lines() {
        let t = parse_table("h:c\t0.25\tpong\n").unwrap();
        assert_eq!(
            parse_line("spin 10", None),
            Ok(Some(TaskSpec::Spin { n: 10 }))
        );
        assert_eq!(
            parse_line("exec sh -c 'echo \"a b\"'", None),
            Ok(Some(TaskSpec::Exec {
                argv: vec!["sh".into(), "-c".into(), "echo \"a b\"".into()]
            }))
        );
        assert_eq!(
            parse_line("h:c", Some(&t)),
            Ok(Some(TaskSpec::Call {
                key: "h:c".into(),
                seconds: 0.25,
                reply: "pong".into()
            }))
        );
        assert_eq!(
            parse_line("h:other", Some(&t)),
            Ok(Some(TaskSpec::Unknown {
                key: "h:other".into()
            }))
        );
        assert_eq!(parse_line("  # c", None), Ok(None));
        assert!(parse_line("spin x", None).is_err());
        assert!(parse_line("exec", None).is_err());
        assert!(parse_line("exec 'a", None).is_err());
        assert!(
            parse_line("hello world", None)
                .unwrap_err()
                .contains("not a task")
        );
    }

    #[test]
    fn files_name_the_line_and_check_sizes() {
        let e = parse_tasks("spin 1\n\nbogus\n", None, 1024).unwrap_err();
        assert!(e.starts_with("line 3:"), "{e}");
        let long = format!("exec echo {}", "x".repeat(2000));
        let e = parse_tasks(&long, None, 1024).unwrap_err();
        assert!(e.contains("--task-max"), "{e}");
        let ok = parse_tasks("spin 1\n# c\nspin 2\n", None, 1024).unwrap();
        assert_eq!(ok.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn records_round_trip() {
        let w = TaskWire {
            line: 7,
            text: "spin 3".into(),
            queued_ns: 99,
            spec: TaskSpec::Spin { n: 3 },
            queue: None,
        };
        assert_eq!(decode::<TaskWire>(&encode(&w)), Ok(w));
        assert!(decode::<TaskWire>(&[0xff; 8]).is_err());
    }
}
