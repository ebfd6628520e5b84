//! The task pool's settings and its options of `forkring run`.

use std::path::{Path, PathBuf};

use clap::{ArgMatches, Args, FromArgMatches};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::job::{Common, Difference, Job, JobError, JobHost, JobSettings, Place, RoleKind};
use crate::shm::Access;

use super::JOB;
use super::host::TasksHost;
use super::intake::{IntakeOpts, IntakeSettings};
use super::relay::Relay;
use super::spec;

/// The ranges of the options (documented in `--help` and the README).
pub(crate) mod bounds {
    /// `--workers`.
    pub(crate) const WORKERS: (u32, u32) = (1, 1000);
    /// `--concurrency`.
    pub(crate) const CONCURRENCY: (u32, u32) = (1, 4096);
    /// `--queue`.
    pub(crate) const QUEUE: (u32, u32) = (1, 1 << 20);
    /// `--max-attempts`.
    pub(crate) const ATTEMPTS: (u32, u32) = (1, 100);
    /// `--task-max` and `--reply-max`, bytes.
    pub(crate) const BYTES: (u32, u32) = (256, 1 << 20);
}

/// A file the run reads, recorded with its checksum so that a resumed run
/// can refuse a file that changed under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileRef {
    /// Absolute path.
    pub(crate) path: PathBuf,
    /// SHA-256 of its content when the run was created.
    pub(crate) sha256: String,
}

impl FileRef {
    fn of(path: &Path, opt: &str) -> Result<FileRef, JobError> {
        let abs = std::fs::canonicalize(path)
            .map_err(|e| JobError::Usage(format!("{opt} {}: {e}", path.display())))?;
        let sha256 = crate::outfile::sha256_file(&abs)
            .map_err(|e| JobError::Usage(format!("{opt} {}: {e}", abs.display())))?;
        Ok(FileRef { path: abs, sha256 })
    }

    /// Checks that the file still has its recorded content.
    pub(crate) fn check(&self) -> Result<(), JobError> {
        let now = crate::outfile::sha256_file(&self.path)
            .map_err(|e| JobError::Failed(format!("{}: {e}", self.path.display())))?;
        if now != self.sha256 {
            return Err(JobError::Failed(format!(
                "{} changed since the run was created (SHA-256 {now}, recorded {}); a run's input files must stay as they were",
                self.path.display(),
                self.sha256
            )));
        }
        Ok(())
    }
}

/// The task pool's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TasksSettings {
    /// The run's own task file (`None`: a service for `forkring submit`).
    pub(crate) tasks: Option<FileRef>,
    /// The command table for `IP:COMMAND` tasks.
    pub(crate) table: Option<FileRef>,
    /// Tasks in the task file.
    pub(crate) task_count: u64,
    /// A relay pipeline over a numeric array, instead of a task file.
    pub(crate) relay: Option<Relay>,
    /// Worker processes.
    pub(crate) workers: u32,
    /// Simulated calls a worker keeps in flight.
    pub(crate) concurrency: u32,
    /// Slots of the task table.
    pub(crate) queue: u32,
    /// A task whose workers died this many times is quarantined.
    pub(crate) max_attempts: u32,
    /// Seconds an `exec` task may run.
    pub(crate) task_timeout: f64,
    /// Largest task, bytes (encoded).
    pub(crate) task_max: u32,
    /// Largest result, bytes (encoded; the reply is capped to fit).
    pub(crate) reply_max: u32,
    /// Seed (relay data).
    pub(crate) seed: u64,
    /// The intake from a NATS work queue (`--from`), instead of a file.
    pub(crate) intake: Option<IntakeSettings>,
}

/// A service's settings with the defaults of the command line (for
/// benchmarks and tests).
pub(crate) fn service(workers: u32, seed: u64) -> TasksSettings {
    TasksSettings {
        tasks: None,
        table: None,
        task_count: 0,
        relay: None,
        workers,
        concurrency: 16,
        queue: 1024,
        max_attempts: 3,
        task_timeout: 60.0,
        task_max: 1024,
        reply_max: 4096,
        seed,
        intake: None,
    }
}

impl TasksSettings {
    /// Checks every bound; the message names the option.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let int = |opt: &str, v: u32, (lo, hi): (u32, u32)| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "{opt} {v} is out of range; give {} to {}",
                    crate::units::thousands(lo.into()),
                    crate::units::thousands(hi.into())
                ))
            }
        };
        int("--workers", self.workers, bounds::WORKERS)?;
        int("--concurrency", self.concurrency, bounds::CONCURRENCY)?;
        int("--queue", self.queue, bounds::QUEUE)?;
        int("--max-attempts", self.max_attempts, bounds::ATTEMPTS)?;
        int("--task-max", self.task_max, bounds::BYTES)?;
        int("--reply-max", self.reply_max, bounds::BYTES)?;
        let (lo, hi) = (crate::units::MIN_SECONDS, crate::units::MAX_SECONDS);
        if !(self.task_timeout.is_finite() && (lo..=hi).contains(&self.task_timeout)) {
            return Err(format!(
                "--task-timeout {} is out of range; give {lo} to {hi:e} seconds",
                self.task_timeout
            ));
        }
        if self.tasks.is_some() && self.relay.is_some() {
            return Err("--tasks and --pipeline exclude each other; give one".into());
        }
        if let Some(r) = &self.relay {
            r.validate()?;
        }
        if let Some(i) = &self.intake {
            if self.tasks.is_some() || self.relay.is_some() {
                return Err(
                    "--from takes the tasks from NATS; it excludes --tasks and --pipeline".into(),
                );
            }
            i.validate()?;
        }
        Ok(())
    }

    /// Whether the run has work of its own (a file or a pipeline) and ends
    /// when it is done; otherwise it is a service.
    pub(crate) fn has_own_work(&self) -> bool {
        self.tasks.is_some() || self.relay.is_some()
    }

    /// Tasks the run's own client submits.
    pub(crate) fn own_tasks(&self) -> u64 {
        match &self.relay {
            Some(r) => r.chunks(),
            None => self.task_count,
        }
    }
}

const HEADING: &str = "Task pool job";

// (clap: no doc comment, which would become the help of `run`)
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct TaskOpts {
    /// File of tasks, one per line: `spin N`, `exec PROGRAM ARGS...` or
    /// `IP:COMMAND` (see --table) [default: none: serve `forkring submit`]
    #[arg(long, value_name = "FILE", help_heading = HEADING)]
    pub(crate) tasks: Option<PathBuf>,
    /// Command table for IP:COMMAND tasks (of --tasks or --from): lines
    /// `IP:COMMAND<TAB>SECONDS<TAB>REPLY`
    #[arg(long, value_name = "FILE", help_heading = HEADING)]
    pub(crate) table: Option<PathBuf>,
    /// Worker processes, 1 to 1,000 [default: 2]
    #[arg(value_parser = crate::units::whole_u32::<{ bounds::WORKERS.0 }, { bounds::WORKERS.1 }>, long, value_name = "N", help_heading = HEADING)]
    pub(crate) workers: Option<u32>,
    /// Simulated calls each worker keeps in flight, 1 to 4,096 [default: 16]
    #[arg(value_parser = crate::units::whole_u32::<{ bounds::CONCURRENCY.0 }, { bounds::CONCURRENCY.1 }>, long, value_name = "K", help_heading = HEADING)]
    pub(crate) concurrency: Option<u32>,
    /// Slots of the shared task table, 1 to 1,048,576; a full table makes
    /// submitters wait [default: 1,024]
    #[arg(value_parser = crate::units::whole_u32::<{ bounds::QUEUE.0 }, { bounds::QUEUE.1 }>, long, value_name = "SLOTS", help_heading = HEADING)]
    pub(crate) queue: Option<u32>,
    /// Quarantine a task after its worker died this many times, 1 to 100
    /// [default: 3]
    #[arg(value_parser = crate::units::whole_u32::<{ bounds::ATTEMPTS.0 }, { bounds::ATTEMPTS.1 }>, long, value_name = "N", help_heading = HEADING)]
    pub(crate) max_attempts: Option<u32>,
    /// Seconds an `exec` task may run before it is killed, 0.000001 to 1e9
    /// [default: 60]
    #[arg(long, value_name = "SECS", value_parser = crate::units::parse_seconds_f64, help_heading = HEADING)]
    pub(crate) task_timeout: Option<f64>,
    /// Largest task in bytes, 256 to 1,048,576; larger ones are refused at
    /// submission [default: 1,024]
    #[arg(value_parser = crate::units::whole_u32::<{ bounds::BYTES.0 }, { bounds::BYTES.1 }>, long, value_name = "BYTES", help_heading = HEADING)]
    pub(crate) task_max: Option<u32>,
    /// Largest result in bytes, 256 to 1,048,576; longer replies are cut
    /// [default: 4,096]
    #[arg(value_parser = crate::units::whole_u32::<{ bounds::BYTES.0 }, { bounds::BYTES.1 }>, long, value_name = "BYTES", help_heading = HEADING)]
    pub(crate) reply_max: Option<u32>,
    #[command(flatten)]
    pub(crate) relay: super::relay::RelayOpts,
    #[command(flatten)]
    pub(crate) intake: IntakeOpts,
}

/// The ids of every task pool option of `forkring run`.
const OPTION_IDS: [&str; 13] = [
    "tasks",
    "table",
    "workers",
    "concurrency",
    "queue",
    "max_attempts",
    "task_timeout",
    "task_max",
    "reply_max",
    "pipeline",
    "elements",
    "chunk",
    "data",
];

pub(super) fn run_options(cmd: clap::Command) -> clap::Command {
    TaskOpts::augment_args(cmd)
}

pub(super) fn options_given(m: &ArgMatches) -> Vec<String> {
    let mut v = crate::job::given(m, &OPTION_IDS);
    v.extend(crate::job::given(m, &super::intake::OPTION_IDS));
    v
}

pub(super) fn from_args(m: &ArgMatches, common: &Common) -> Result<TasksSettings, JobError> {
    let o = TaskOpts::from_arg_matches(m).map_err(|e| JobError::Usage(e.to_string()))?;
    let mut s = TasksSettings {
        tasks: None,
        table: None,
        task_count: 0,
        relay: o.relay.settings()?,
        workers: o.workers.unwrap_or(2),
        concurrency: o.concurrency.unwrap_or(16),
        queue: o.queue.unwrap_or(1024),
        max_attempts: o.max_attempts.unwrap_or(3),
        task_timeout: o.task_timeout.unwrap_or(60.0),
        task_max: o.task_max.unwrap_or(1024),
        reply_max: o.reply_max.unwrap_or(4096),
        seed: common.seed,
        intake: None,
    };
    s.intake = o.intake.settings(common.connect_timeout, s.max_attempts)?;
    if s.intake.is_some() && (o.tasks.is_some() || s.relay.is_some()) {
        return Err(JobError::Usage(
            "--from takes the tasks from NATS; it excludes --tasks and --pipeline".into(),
        ));
    }
    if o.tasks.is_some() && s.relay.is_some() {
        return Err(JobError::Usage(
            "--tasks and --pipeline exclude each other; give one".into(),
        ));
    }
    s.validate().map_err(JobError::Usage)?;
    if o.table.is_some() && o.tasks.is_none() && s.intake.is_none() {
        return Err(JobError::Usage(
            "--table applies to the IP:COMMAND tasks of --tasks; give --tasks FILE (or pass the table to `forkring submit`)".into(),
        ));
    }
    let table = match &o.table {
        Some(p) => {
            let t = spec::read_table(p).map_err(|e| JobError::Usage(e.to_string()))?;
            s.table = Some(FileRef::of(p, "--table")?);
            Some(t)
        }
        None => None,
    };
    if let Some(p) = &o.tasks {
        let tasks = spec::read_tasks(p, table.as_ref(), s.task_max)
            .map_err(|e| JobError::Usage(e.to_string()))?;
        s.tasks = Some(FileRef::of(p, "--tasks")?);
        s.task_count = tasks.len() as u64;
    }
    s.validate().map_err(JobError::Usage)?;
    Ok(s)
}

pub(super) fn decode(bytes: &[u8]) -> Result<Box<dyn JobSettings>, String> {
    let s: TasksSettings = crate::job::decode_bincode(bytes)?;
    s.validate()?;
    Ok(Box::new(s))
}

impl JobSettings for TasksSettings {
    fn job(&self) -> &'static dyn Job {
        &JOB
    }
    fn encode(&self) -> Vec<u8> {
        crate::job::encode_bincode(self)
    }
    fn clone_box(&self) -> Box<dyn JobSettings> {
        Box::new(self.clone())
    }
    fn roles(&self) -> Vec<(&'static RoleKind, u32)> {
        vec![(&super::KINDS[0], 1), (&super::KINDS[1], self.workers)]
    }
    fn shm_bytes(&self) -> u64 {
        super::layout::shm_bytes(self)
    }
    fn differences(&self, requested: &dyn JobSettings) -> Vec<Difference> {
        let Some(b) = requested.downcast::<TasksSettings>() else {
            return Vec::new();
        };
        let a = self;
        let file = |f: &Option<FileRef>| f.as_ref().map(|f| f.path.display().to_string());
        let sum = |f: &Option<FileRef>| f.as_ref().map(|f| f.sha256.clone());
        [
            Difference::of("--tasks", file(&a.tasks), file(&b.tasks)),
            Difference::of("--tasks (content)", sum(&a.tasks), sum(&b.tasks)),
            Difference::of("--table", file(&a.table), file(&b.table)),
            Difference::of("--table (content)", sum(&a.table), sum(&b.table)),
            Difference::of(
                "--pipeline",
                a.relay.as_ref().map(Relay::describe),
                b.relay.as_ref().map(Relay::describe),
            ),
            Difference::of("--workers", Some(a.workers), Some(b.workers)),
            Difference::of("--concurrency", Some(a.concurrency), Some(b.concurrency)),
            Difference::of("--queue", Some(a.queue), Some(b.queue)),
            Difference::of("--max-attempts", Some(a.max_attempts), Some(b.max_attempts)),
            Difference::of(
                "--task-timeout",
                Some(a.task_timeout.to_string()),
                Some(b.task_timeout.to_string()),
            ),
            Difference::of("--task-max", Some(a.task_max), Some(b.task_max)),
            Difference::of("--reply-max", Some(a.reply_max), Some(b.reply_max)),
            Difference::of(
                "--seed",
                a.relay.as_ref().map(|_| a.seed),
                b.relay.as_ref().map(|_| b.seed),
            ),
        ]
        .into_iter()
        .flatten()
        .chain(Difference::of_group(
            &[
                ("url", "--from"),
                ("tasks_subject", "--tasks-subject"),
                ("results_subject", "--results-subject"),
                ("tasks_stream", "--tasks-stream"),
                ("results_stream", "--results-stream"),
                ("consumer", "--consumer"),
                ("ack_wait_s", "--ack-wait"),
                ("drain", "--drain"),
            ],
            a.intake.as_ref().map(|i| i.to_json()).as_ref(),
            b.intake.as_ref().map(|i| i.to_json()).as_ref(),
        ))
        .collect()
    }
    fn adopt_seed(&mut self, recorded: &dyn JobSettings) {
        if let Some(r) = recorded.downcast::<TasksSettings>() {
            self.seed = r.seed;
        }
    }
    fn ends_run(&self) -> bool {
        self.has_own_work() || self.intake.as_ref().is_some_and(|i| i.drain)
    }
    fn to_json(&self) -> Value {
        json!({
            "tasks": self.tasks.as_ref().map(|f| json!({"path": f.path, "sha256": f.sha256})),
            "table": self.table.as_ref().map(|f| json!({"path": f.path, "sha256": f.sha256})),
            "task_count": self.task_count,
            "pipeline": self.relay.as_ref().map(Relay::to_json),
            "workers": self.workers,
            "concurrency": self.concurrency,
            "queue": self.queue,
            "max_attempts": self.max_attempts,
            "task_timeout_s": self.task_timeout,
            "task_max_bytes": self.task_max,
            "reply_max_bytes": self.reply_max,
            "seed": self.seed,
            "from": self.intake.as_ref().map(IntakeSettings::to_json),
        })
    }
    fn create(&self, at: Place<'_>) -> Result<Box<dyn JobHost>, JobError> {
        Ok(Box::new(TasksHost::create(at, self)?))
    }
    fn open(&self, at: Place<'_>, access: Access) -> Result<Box<dyn JobHost>, JobError> {
        Ok(Box::new(TasksHost::open(at, self, access)?))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
