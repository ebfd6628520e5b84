//! The settings of a run: its output directory and each job's settings.
//!
//! They are recorded in the run's control segment when the run is created:
//! bincode of the output directory and, per job, its name and the bytes its
//! [`JobSettings::encode`] made. Roles read their job's settings from there
//! (one source of truth), and a supervisor that resumes a run compares the
//! recorded settings with its own command line and refuses on any
//! difference ([`RunSettings::differences`]).

use std::path::PathBuf;

use crate::job::TooManyRoles;
use crate::job::{Difference, JobSettings, Registry, RoleTable};

/// Largest settings blob decoded from a control segment.
const DECODE_LIMIT: usize = 64 * 1024;

/// Everything recorded about a run.
#[derive(Debug)]
pub struct RunSettings {
    /// Output directory of the final handoff (absolute).
    pub out: PathBuf,
    /// The jobs' settings, in registry order.
    pub jobs: Vec<Box<dyn JobSettings>>,
}

impl Clone for RunSettings {
    fn clone(&self) -> Self {
        RunSettings {
            out: self.out.clone(),
            jobs: self.jobs.iter().map(|j| j.clone_box()).collect(),
        }
    }
}

/// The recorded jobs' names, and one job's settings if the run has it.
pub(crate) type OneJob = (Vec<String>, Option<Box<dyn JobSettings>>);

/// The encoded form.
type Encoded = (PathBuf, Vec<(String, Vec<u8>)>);

impl RunSettings {
    /// The settings of job `name`, if the run has it.
    pub(crate) fn job(&self, name: &str) -> Option<&dyn JobSettings> {
        self.jobs
            .iter()
            .find(|j| j.job().name() == name)
            .map(|j| j.as_ref())
    }

    /// The jobs' names, in order.
    pub(crate) fn job_names(&self) -> Vec<&'static str> {
        self.jobs.iter().map(|j| j.job().name()).collect()
    }

    /// The run's role table.
    pub(crate) fn roles(&self) -> Result<RoleTable, TooManyRoles> {
        RoleTable::of(&self.jobs)
    }

    /// Shared-memory bytes of every job's segments (the control segment
    /// not included).
    pub(crate) fn jobs_shm_bytes(&self) -> u64 {
        self.jobs.iter().map(|j| j.shm_bytes()).sum()
    }

    /// Differences between the recorded settings (`self`) and requested
    /// ones, as the user would type them.
    pub(crate) fn differences(&self, requested: &RunSettings) -> Vec<Difference> {
        let mut d = Vec::new();
        d.extend(Difference::of(
            "--out",
            Some(self.out.display().to_string()),
            Some(requested.out.display().to_string()),
        ));
        d.extend(Difference::of(
            "--jobs",
            Some(self.job_names().join(",")),
            Some(requested.job_names().join(",")),
        ));
        for a in &self.jobs {
            if let Some(b) = requested.job(a.job().name()) {
                d.extend(a.differences(b));
            }
        }
        d
    }

    /// Encodes for the control segment.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let e: Encoded = (
            self.out.clone(),
            self.jobs
                .iter()
                .map(|j| (j.job().name().to_string(), j.encode()))
                .collect(),
        );
        bincode::serde::encode_to_vec(&e, bincode::config::standard())
            .expect("paths and byte vectors always encode")
    }

    /// The names of the recorded jobs and the settings of `job` among them,
    /// decoded without a registry (for a job's own commands, such as
    /// `forkring submit`). `None` if the run does not have `job`.
    pub(crate) fn decode_one(bytes: &[u8], job: &dyn crate::job::Job) -> Result<OneJob, String> {
        let cfg = bincode::config::standard().with_limit::<DECODE_LIMIT>();
        let ((_, jobs), _): (Encoded, usize) =
            bincode::serde::decode_from_slice(bytes, cfg).map_err(|e| e.to_string())?;
        let names = jobs.iter().map(|(n, _)| n.clone()).collect();
        let mine = match jobs.iter().find(|(n, _)| n == job.name()) {
            Some((_, blob)) => Some(job.decode(blob)?),
            None => None,
        };
        Ok((names, mine))
    }

    /// Decodes bytes read from a control segment (untrusted: bounded, every
    /// error reported, never a panic). Each job checks its own settings
    /// against the ranges of the command line.
    pub(crate) fn decode(bytes: &[u8], registry: Registry) -> Result<Self, String> {
        let cfg = bincode::config::standard().with_limit::<DECODE_LIMIT>();
        let ((out, jobs), _): (Encoded, usize) =
            bincode::serde::decode_from_slice(bytes, cfg).map_err(|e| e.to_string())?;
        if !out.is_absolute() {
            return Err(format!(
                "output directory {} is not absolute",
                out.display()
            ));
        }
        if jobs.is_empty() {
            return Err("the run has no jobs".into());
        }
        let mut decoded: Vec<Box<dyn JobSettings>> = Vec::new();
        for (name, blob) in &jobs {
            let job = registry
                .iter()
                .find(|j| j.name() == name)
                .ok_or_else(|| format!("job {name:?} is unknown to this forkring"))?;
            if decoded.iter().any(|d| d.job().name() == name) {
                return Err(format!("job {name} is recorded twice"));
            }
            decoded.push(job.decode(blob).map_err(|e| format!("job {name}: {e}"))?);
        }
        // Registry order, whatever the blob says.
        decoded.sort_by_key(|d| {
            registry
                .iter()
                .position(|j| j.name() == d.job().name())
                .unwrap_or(usize::MAX)
        });
        Ok(RunSettings { out, jobs: decoded })
    }
}
