//! The stream job: a producer sends vectors through a shared-memory ring to
//! a consumer that detects every dropout exactly and computes statistics.
//!
//! - [`settings`]: the options and the recorded settings;
//! - [`layout`]: the two segments;
//! - [`state`]: the consumer's committed analytics state;
//! - [`generate`]: vector generation and `--noise`;
//! - [`producer`], [`consumer`]: the role processes (crash safety is
//!   described in each);
//! - [`output`]: `stream.jsonl` / `stream.txt`;
//! - [`export`], [`wire`]: the export to NATS JetStream (`--export`): the
//!   export ring and its exporter role, and the message format;
//! - [`host`]: the supervisor's side (progress, handoff).

pub(crate) mod consumer;
pub mod export;
pub mod generate;
pub(crate) mod host;
pub mod layout;
pub(crate) mod output;
pub mod producer;
pub(crate) mod settings;
pub(crate) mod state;
pub mod wire;

use std::path::Path;

use clap::ArgMatches;
use serde_json::Value;

use crate::job::{Common, Job, JobError, JobSettings, RoleKind};
use crate::units::thousands;

pub use settings::{Distribution, Noise, Rate, StreamFormat, StreamSettings};

/// The stream job, as listed in the registry.
#[derive(Debug)]
pub struct StreamJob;

/// The stream job's value for the registry.
pub static JOB: StreamJob = StreamJob;

/// The stream job's role kinds.
pub(crate) static KINDS: [RoleKind; 3] = [
    RoleKind {
        name: "producer",
        about: "Stream role that generates vectors into the ring (normally started by `run`; options, if given, must match the run's)",
        multiple: false,
        options: settings::producer_options,
        check: settings::check_producer,
        run: producer::run,
    },
    RoleKind {
        name: "consumer",
        about: "Stream role that analyses the vectors (normally started by `run`; options, if given, must match the run's)",
        multiple: false,
        options: settings::consumer_options,
        check: settings::check_consumer,
        run: consumer::run,
    },
    RoleKind {
        name: "exporter",
        about: "Stream role that publishes the consumer's vectors and batch records to NATS JetStream (only with --export; normally started by `run`)",
        multiple: false,
        options: crate::job::no_options,
        check: crate::job::no_check,
        run: export::run,
    },
];

impl Job for StreamJob {
    fn name(&self) -> &'static str {
        "stream"
    }
    fn about(&self) -> &'static str {
        "producer and consumer stream vectors through a ring"
    }
    fn default_on(&self) -> bool {
        true
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
    fn result_files(&self) -> &'static [&'static str] {
        &["stream.jsonl", "stream.txt"]
    }
    fn summary_line(&self, st: &Value) -> String {
        let n = |k: &str| thousands(st[k].as_u64().unwrap_or(0));
        format!(
            "stream {} produced, {} received, {} dropped, {} filled, {} duplicates",
            n("produced"),
            n("received"),
            n("dropped"),
            n("filled"),
            n("duplicates")
        )
    }
    fn verify(&self, _dir: &Path, st: &Value) -> Result<String, JobError> {
        let get = |k: &str| {
            st[k].as_u64().ok_or_else(|| {
                JobError::Failed(format!("summary.json: stream field {k} is missing"))
            })
        };
        let (p, r, d) = (get("produced")?, get("received")?, get("dropped")?);
        if p != r + d {
            return Err(JobError::Failed(format!(
                "summary.json: stream produced {p} but received {r} + dropped {d} = {}",
                r + d
            )));
        }
        let dup = get("duplicates")?;
        if dup != 0 {
            return Err(JobError::Failed(format!(
                "summary.json: stream counted {dup} duplicates"
            )));
        }
        Ok(format!(
            "stream: {} produced = {} received + {} dropped, no duplicates",
            thousands(p),
            thousands(r),
            thousands(d)
        ))
    }
}
