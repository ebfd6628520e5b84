//! The job interface: everything the supervisor, `status`, `clean`,
//! `handoff`, `verify` and the progress display need from a job, and nothing
//! more. A job is a folder (`src/image/`, `src/stream/`, ...) that exports
//! one value implementing [`Job`]; the registry (`src/jobs.rs`) lists those
//! values, and is the only place that names the jobs.
//!
//! The three layers of a job:
//! - [`Job`]: the kind of job, static: its name, its role kinds, its options
//!   of `forkring run`, how to decode its recorded settings, its one-line
//!   summary and its checks for `verify`.
//! - [`JobSettings`]: one run's settings of the job, recorded in the control
//!   segment: how many of each role, how much shared memory, how to create
//!   or open the job's segments.
//! - [`JobHost`]: the job's segments as held by the supervisor (or by
//!   `status` and `handoff`): progress, finishing, the final handoff.
//!
//! Roles are (job, role kind, index): `ping 0` of the image job, `worker 3`
//! of the task pool. A role process gets a [`RoleCtx`].

mod error;
mod progress;
mod role;

use std::any::Any;
use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use clap::ArgMatches;
use serde_json::Value;

use crate::shm::{Access, RunName};

pub use error::JobError;
pub use progress::{Counter, CounterValue, Progress};
pub use role::{RoleCtx, RoleId, RoleKind, RoleTable, TooManyRoles, no_check, no_options};

/// The jobs a binary knows, in the order their sections and roles appear.
pub type Registry = &'static [&'static dyn Job];

/// Settings every job of a run shares, decided by `forkring run` itself.
#[derive(Debug, Clone)]
pub struct Common {
    /// Seed of every random choice (given, or drawn and recorded).
    pub seed: u64,
    /// Seconds a job that connects to NATS (`--export`, `--from`) gives the
    /// server to answer at start-up.
    pub connect_timeout: f64,
}

/// Where a job's segments and working files live.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The run.
    pub run: &'a RunName,
    /// The run's output directory (absolute).
    pub out: &'a Path,
}

/// A setting that differs between a recorded run and a request to resume
/// it, as the user would type it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The option, e.g. `--size`.
    pub option: String,
    /// The recorded value (`None`: the run has none).
    pub recorded: Option<String>,
    /// The requested value (`None`: not asked for).
    pub requested: Option<String>,
}

impl Difference {
    /// Compares one option; `None` when equal.
    pub fn of<T: PartialEq + ToString>(
        option: &str,
        recorded: Option<T>,
        requested: Option<T>,
    ) -> Option<Difference> {
        (recorded != requested).then(|| Difference {
            option: option.to_string(),
            recorded: recorded.map(|v| v.to_string()),
            requested: requested.map(|v| v.to_string()),
        })
    }
}

impl Difference {
    /// Compares a group of options recorded as one JSON object (e.g.
    /// `--export` and its `--export-*` options): `fields` maps each key to
    /// its option; the first is the group's switch, named alone when only
    /// one side has the group. Keys not listed (derived values, start-up
    /// timeouts a resume may change) are not compared.
    pub(crate) fn of_group(
        fields: &[(&str, &str)],
        recorded: Option<&serde_json::Value>,
        requested: Option<&serde_json::Value>,
    ) -> Vec<Difference> {
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        match (recorded, requested) {
            (Some(a), Some(b)) => fields
                .iter()
                .filter_map(|(k, opt)| Difference::of(opt, Some(text(&a[*k])), Some(text(&b[*k]))))
                .collect(),
            (a, b) => {
                let (k, opt) = fields[0];
                Difference::of(opt, a.map(|a| text(&a[k])), b.map(|b| text(&b[k])))
                    .into_iter()
                    .collect()
            }
        }
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rec = self.recorded.as_deref();
        let req = self.requested.as_deref();
        match (rec, req) {
            (Some(a), Some(b)) => write!(f, "{}: the run has {a}, you asked for {b}", self.option),
            (None, Some(b)) => write!(f, "{}: the run has none, you asked for {b}", self.option),
            (Some(a), None) => write!(f, "{}: the run has {a}, you did not give it", self.option),
            (None, None) => write!(f, "{}", self.option),
        }
    }
}

/// Facts the handoff records beside each job's own figures, and where it
/// says what it is doing.
pub struct HandoffCtx<'a> {
    /// Seconds the run has worked, over all supervisors.
    pub seconds: f64,
    /// Tells the operator what the handoff is doing now ("writing
    /// image.png"): a line on the terminal or in the log.
    pub note: &'a dyn Fn(&str),
}

impl std::fmt::Debug for HandoffCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoffCtx")
            .field("seconds", &self.seconds)
            .finish_non_exhaustive()
    }
}

/// An extra subcommand a job brings (`render` for the image job, `submit`
/// for the task pool).
#[derive(Debug)]
pub struct JobCommand {
    /// The subcommand's definition (its name, help and options).
    pub(crate) command: fn() -> clap::Command,
    /// Runs it.
    pub run: fn(&ArgMatches) -> Result<(), JobError>,
}

/// A kind of job, as listed in the registry. Implementations are stateless
/// values (`pub static JOB: ImageJob`).
pub trait Job: Debug + Sync + 'static {
    /// The name used in `--jobs`, in `summary.json` and in `status`.
    fn name(&self) -> &'static str;
    /// One line for `--help`.
    fn about(&self) -> &'static str;
    /// Whether `forkring run` without `--jobs` runs this job.
    fn default_on(&self) -> bool {
        false
    }
    /// The kinds of role process the job runs. Kind names are unique
    /// across the registry: each is a subcommand.
    fn role_kinds(&self) -> &'static [RoleKind];
    /// Adds the job's options to `forkring run`.
    fn run_options(&self, cmd: clap::Command) -> clap::Command {
        cmd
    }
    /// The job's options of `forkring run` that were given (for "option
    /// given, but the job is not in --jobs").
    fn options_given(&self, _m: &ArgMatches) -> Vec<String> {
        Vec::new()
    }
    /// The settings `forkring run`'s options ask for, every value checked
    /// against its documented range (a [`JobError::Usage`] otherwise).
    fn settings(&self, m: &ArgMatches, common: &Common) -> Result<Box<dyn JobSettings>, JobError>;
    /// Settings recorded in a control segment (untrusted bytes): decoded
    /// with a size limit, then checked against the same ranges.
    fn decode(&self, bytes: &[u8]) -> Result<Box<dyn JobSettings>, String>;
    /// Extra subcommands.
    fn commands(&self) -> &'static [JobCommand] {
        &[]
    }
    /// The result files the job may write into the output directory.
    fn result_files(&self) -> &'static [&'static str];
    /// One line describing the job's section of `summary.json`.
    fn summary_line(&self, section: &Value) -> String;
    /// Checks the job's result files in `dir` by the job's own rules (the
    /// files' sizes and checksums are checked by `verify` itself). Returns
    /// what was found, in one line.
    fn verify(&self, dir: &Path, section: &Value) -> Result<String, JobError>;
}

/// One run's settings of a job: typed inside the job, opaque outside it.
pub trait JobSettings: Debug + Send + Sync + Any {
    /// The job these settings belong to.
    fn job(&self) -> &'static dyn Job;
    /// Encodes for the control segment (decoded by [`Job::decode`]).
    fn encode(&self) -> Vec<u8>;
    /// A copy.
    fn clone_box(&self) -> Box<dyn JobSettings>;
    /// How many processes of each role kind the run needs.
    fn roles(&self) -> Vec<(&'static RoleKind, u32)>;
    /// Shared-memory bytes of the job's segments.
    fn shm_bytes(&self) -> u64;
    /// Differences from `requested` (settings of the same job), as the user
    /// would type them.
    fn differences(&self, requested: &dyn JobSettings) -> Vec<Difference>;
    /// Takes the recorded seed (a resume without `--seed` keeps it).
    fn adopt_seed(&mut self, _recorded: &dyn JobSettings) {}
    /// Whether the run ends when this job completes: when every such job of
    /// a run is complete, the others are asked to finish.
    fn ends_run(&self) -> bool;
    /// How often the job's figures should be logged, if it has a say.
    fn log_interval(&self) -> Option<Duration> {
        None
    }
    /// Every setting, for `summary.json` and `status --json`.
    fn to_json(&self) -> Value;
    /// Creates the job's segments for a new run. Nothing is left behind on
    /// error.
    fn create(&self, at: Place<'_>) -> Result<Box<dyn JobHost>, JobError>;
    /// Opens the job's segments of an existing run.
    fn open(&self, at: Place<'_>, access: Access) -> Result<Box<dyn JobHost>, JobError>;
    /// For the job's own downcast ([`RoleCtx::settings`]).
    fn as_any(&self) -> &dyn Any;
}

impl dyn JobSettings {
    /// The settings as the job's own type, if they are.
    pub fn downcast<T: JobSettings>(&self) -> Option<&T> {
        self.as_any().downcast_ref()
    }
}

/// A job's segments, held by the supervisor, `status` or `handoff`.
pub trait JobHost: Debug {
    /// The job.
    fn job(&self) -> &'static dyn Job;
    /// Wakes every process sleeping on one of the job's futex words, so that
    /// it re-checks the stop flag.
    fn kick(&self);
    /// Asks the job to finish on its own terms (the stream drains its ring);
    /// used when the run ends for a reason other than a stop request.
    fn request_finish(&self);
    /// Whether the job has done all its work.
    fn is_complete(&self) -> bool;
    /// Called when a supervisor takes over a run whose supervisor died,
    /// before roles start: undo requests that belonged to the dead one.
    fn prepare_resume(&self) {}
    /// Called as soon as the supervisor has reaped a process of one of the
    /// job's roles, before any restart: `failed` if it died or exited
    /// non-zero, `stopping` if the run was stopping (it may have been
    /// killed at the stop timeout).
    fn role_exited(&self, _role: &RoleId, _failed: bool, _stopping: bool) {}
    /// Current progress.
    fn progress(&self) -> Progress;
    /// Writes the job's result files into `out` (atomically) and returns its
    /// section of `summary.json`. Called once every role has exited.
    fn handoff(&self, out: &Path, ctx: &HandoffCtx<'_>) -> Result<Value, JobError>;
    /// Called once `summary.json` is in place: remove working files the
    /// handoff kept so that it could be retried.
    fn handoff_done(&self) {}
    /// Names of the job's segments.
    fn segment_names(&self) -> Vec<String>;
}

/// The long names (`--size`) of the options among `ids` that were given on
/// the command line, as opposed to defaulted.
pub fn given(m: &ArgMatches, ids: &[&str]) -> Vec<String> {
    ids.iter()
        .filter(|id| {
            matches!(
                m.try_get_raw(id).map(|_| m.value_source(id)),
                Ok(Some(clap::parser::ValueSource::CommandLine))
            )
        })
        .map(|id| format!("--{}", id.replace('_', "-")))
        .collect()
}

/// Limit of one job's encoded settings.
const SETTINGS_LIMIT: usize = 16 * 1024;

/// Encodes a job's settings (bincode, standard configuration).
pub fn encode_bincode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .expect("settings are plain data and always encode")
}

/// Decodes a job's settings from untrusted bytes: bounded, and every byte
/// must belong to the value.
pub fn decode_bincode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let cfg = bincode::config::standard().with_limit::<SETTINGS_LIMIT>();
    let (v, used) = bincode::serde::decode_from_slice(bytes, cfg).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} bytes follow the settings", bytes.len() - used));
    }
    Ok(v)
}
