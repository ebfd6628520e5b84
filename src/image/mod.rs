//! The image job: ping and pong take strict turns painting an all-RGB image
//! in shared memory.
//!
//! - [`settings`]: `--size`, the recorded settings;
//! - [`layout`]: the five segments and their layouts;
//! - [`arrays`]: typed access to pixels, masks and the packed shuffles;
//! - [`rng`]: per-iteration randomness keyed by (seed, iteration);
//! - [`step`]: one iteration as a redo-logged transaction (crash safety);
//! - [`role`]: the ping/pong processes;
//! - [`host`]: the supervisor's side (progress, handoff);
//! - [`audit`]: the handoff's checks of the segments before a result;
//! - [`history`]: the `history.bin` format;
//! - [`render`]: `forkring render` and the checks of `forkring verify`.

pub(crate) mod arrays;
pub(crate) mod audit;
pub mod history;
pub(crate) mod host;
pub mod layout;
pub(crate) mod render;
pub(crate) mod rng;
pub(crate) mod role;
pub(crate) mod settings;
pub mod step;

use std::path::Path;

use clap::ArgMatches;
use serde_json::Value;

use crate::job::{Common, Job, JobCommand, JobError, JobSettings, RoleKind};

pub use settings::ImageSettings;

/// The image job, as listed in the registry.
#[derive(Debug)]
pub struct ImageJob;

/// The image job's value for the registry.
pub static JOB: ImageJob = ImageJob;

impl Job for ImageJob {
    fn name(&self) -> &'static str {
        "image"
    }
    fn about(&self) -> &'static str {
        "ping and pong take strict turns painting an all-RGB image"
    }
    fn default_on(&self) -> bool {
        true
    }
    fn role_kinds(&self) -> &'static [RoleKind] {
        &role::KINDS
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
        &render::COMMANDS
    }
    fn result_files(&self) -> &'static [&'static str] {
        &["image.png", "history.bin"]
    }
    fn summary_line(&self, s: &Value) -> String {
        format!(
            "image {} {} ({} iterations, seed {})",
            s["size"].as_str().unwrap_or("?"),
            if s["complete"].as_bool() == Some(true) {
                "complete"
            } else {
                "partial"
            },
            crate::units::thousands(s["iterations"].as_u64().unwrap_or(0)),
            s["seed"],
        )
    }
    fn verify(&self, dir: &Path, section: &Value) -> Result<String, JobError> {
        render::verify_dir(dir, section)
    }
}
