//! The task pool job: a client and N worker processes over a task table in
//! shared memory. Every submitted task ends with exactly one recorded
//! result, and a killed worker's tasks run again as soon as the supervisor
//! has reaped it.
//!
//! - [`settings`]: the options and the recorded settings;
//! - [`spec`]: task files, command tables, the records in the table;
//! - [`layout`]: the segments (the table itself is `shm/taskq.rs`);
//! - [`client`]: the client role: submits the run's tasks, records every
//!   result;
//! - [`worker`]: the worker role;
//! - [`submit`]: `forkring submit`, an external client;
//! - [`relay`]: relay pipelines over a numeric array;
//! - [`host`]: the supervisor's side (progress, requeue, handoff).

pub(crate) mod client;
pub(crate) mod host;
pub(crate) mod layout;
pub(crate) mod relay;
pub mod settings;
pub(crate) mod spec;
pub(crate) mod submit;
pub(crate) mod worker;

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;

use clap::ArgMatches;
use serde_json::Value;

use crate::job::{Common, Job, JobCommand, JobError, JobSettings, RoleKind, no_check, no_options};
use crate::units::thousands;

pub use settings::TasksSettings;

/// The task pool, as listed in the registry.
#[derive(Debug)]
pub struct TasksJob;

/// The task pool's value for the registry.
pub static JOB: TasksJob = TasksJob;

/// The task pool's role kinds.
pub(crate) static KINDS: [RoleKind; 2] = [
    RoleKind {
        name: "client",
        about: "Task pool role that submits the run's tasks and records every result (normally started by `run`)",
        multiple: false,
        options: no_options,
        check: no_check,
        run: client::run,
    },
    RoleKind {
        name: "worker",
        about: "Task pool role that claims tasks and runs them (normally started by `run`)",
        multiple: true,
        options: no_options,
        check: no_check,
        run: worker::run,
    },
];

impl Job for TasksJob {
    fn name(&self) -> &'static str {
        "tasks"
    }
    fn about(&self) -> &'static str {
        "a client and --workers N worker processes run tasks from a shared table"
    }
    fn role_kinds(&self) -> &'static [RoleKind] {
        &KINDS
    }
    fn run_options(&self, cmd: clap::Command) -> clap::Command {
        settings::run_options(cmd)
    }
    fn options_given(&self, m: &ArgMatches) -> Vec<String> {
        settings::options_given(m)
    }
    fn settings(&self, m: &ArgMatches, common: &Common) -> Result<Box<dyn JobSettings>, JobError> {
        Ok(Box::new(settings::from_args(m, common)?))
    }
    fn decode(&self, bytes: &[u8]) -> Result<Box<dyn JobSettings>, String> {
        settings::decode(bytes)
    }
    fn commands(&self) -> &'static [JobCommand] {
        &submit::COMMANDS
    }
    fn result_files(&self) -> &'static [&'static str] {
        &["tasks.jsonl", "relay.bin"]
    }
    fn summary_line(&self, s: &Value) -> String {
        let n = |k: &str| thousands(s[k].as_u64().unwrap_or(0));
        let mut line = format!(
            "tasks {} recorded ({} ok, {} errors, {} quarantined, {} retried)",
            n("recorded"),
            n("completed"),
            n("errors"),
            n("quarantined"),
            n("retried"),
        );
        if let Some(p) = s["latency_s"]["p50"].as_f64() {
            line += &format!(", latency p50 {:.3} s", p);
        }
        if let Some(ok) = s["relay"]["matches_single_process"].as_bool() {
            line += if ok {
                ", relay result matches a single process"
            } else {
                ", relay result DIFFERS from a single process"
            };
        }
        line
    }
    fn verify(&self, dir: &Path, section: &Value) -> Result<String, JobError> {
        let path = dir.join(client::FINAL_NAME);
        let fail = |d: String| JobError::Failed(format!("{}: {d}", client::FINAL_NAME));
        let f = std::fs::File::open(&path).map_err(|e| fail(e.to_string()))?;
        let mut ids = HashSet::new();
        let mut n = 0u64;
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| fail(e.to_string()))?;
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| fail(format!("line {} is not JSON: {e}", i + 1)))?;
            let id = v["id"]
                .as_str()
                .ok_or_else(|| fail(format!("line {} has no id", i + 1)))?;
            if !ids.insert(id.to_string()) {
                return Err(fail(format!(
                    "task {id} is recorded twice (line {})",
                    i + 1
                )));
            }
            if v["attempts"].as_u64().unwrap_or(0) < 1 {
                return Err(fail(format!("task {id} has no attempt")));
            }
            n += 1;
        }
        if let Some(want) = section["recorded"].as_u64()
            && want != n
        {
            return Err(fail(format!(
                "{n} tasks, but summary.json says {want} were recorded"
            )));
        }
        if section["relay"]["matches_single_process"] == false {
            return Err(JobError::Failed(
                "summary.json: the relay result differs from the single-process computation".into(),
            ));
        }
        Ok(format!("tasks: {} tasks, each recorded once", thousands(n)))
    }
}
