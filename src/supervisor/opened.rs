//! A run as the supervisor, the roles and the operator verbs see it: its
//! control segment, its decoded settings and its role table, and the jobs'
//! segments opened or created through the job interface.

use crate::control::Control;
use crate::job::{JobHost, Place, Registry, RoleTable};
use crate::settings::RunSettings;
use crate::shm::{Access, CreatedSegments, RunName};

use super::error::RunError;

/// A run's control segment with its settings and role table.
#[derive(Debug)]
pub struct OpenRun {
    /// The control segment.
    pub control: Control,
    /// The recorded settings.
    pub(crate) settings: RunSettings,
    /// The role table (`control.role_count()` slots).
    pub roles: RoleTable,
}

/// How to get a run's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hosts {
    /// Create their segments (a new run).
    Create,
    /// Open the existing segments (a resumed run, `status`, `handoff`).
    Open(Access),
}

impl OpenRun {
    /// Opens and validates run `run`: the control segment, the settings
    /// (decoded with the jobs of `registry`) and the role table, which must
    /// have as many slots as the settings need.
    pub fn open(run: &RunName, access: Access, registry: Registry) -> Result<OpenRun, RunError> {
        let control = Control::open(run, access)?;
        let segment = || control.segment().name().to_string();
        let settings =
            RunSettings::decode(&control.settings_blob(), registry).map_err(|detail| {
                RunError::Settings {
                    segment: segment(),
                    detail,
                }
            })?;
        let roles = settings.roles().map_err(|e| RunError::Settings {
            segment: segment(),
            detail: e.to_string(),
        })?;
        if roles.len() != control.role_count() {
            return Err(RunError::RoleCount {
                segment: segment(),
                found: control.role_count(),
                expected: roles.len(),
            });
        }
        Ok(OpenRun {
            control,
            settings,
            roles,
        })
    }

    /// Creates the control segment of a new run (holding its supervisor
    /// lock). Fails with `Control(Create(AlreadyExists))` if it exists.
    pub fn create(run: &RunName, settings: &RunSettings) -> Result<OpenRun, RunError> {
        let roles = settings.roles()?;
        let control = Control::create(run, &settings.encode(), roles.len())?;
        Ok(OpenRun {
            control,
            settings: settings.clone(),
            roles,
        })
    }

    /// The run's name.
    pub(crate) fn run(&self) -> &RunName {
        self.control.run()
    }

    /// Where the jobs' segments and working files live.
    pub(crate) fn place(&self) -> Place<'_> {
        Place {
            run: self.control.run(),
            out: &self.settings.out,
        }
    }

    /// The run's jobs, in registry order. When creating fails part-way,
    /// every job segment created so far is removed (the control segment is
    /// the caller's).
    pub(crate) fn hosts(&self, how: Hosts) -> Result<Vec<Box<dyn JobHost>>, crate::job::JobError> {
        let mut guard = CreatedSegments::new();
        let mut jobs = Vec::with_capacity(self.settings.jobs.len());
        for j in &self.settings.jobs {
            let host = match how {
                Hosts::Create => j.create(self.place())?,
                Hosts::Open(a) => j.open(self.place(), a)?,
            };
            if how == Hosts::Create {
                guard.extend(host.segment_names().iter().map(String::as_str));
            }
            jobs.push(host);
        }
        guard.keep();
        Ok(jobs)
    }
}
