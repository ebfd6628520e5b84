//! Role identities and what a role process gets from the run.
//!
//! A role is (job, role kind, index). The run's role table lists them in a
//! fixed order, every job in registry order, its kinds in declaration
//! order, indices counting up; a role's position in that list is its slot in
//! the control segment (pid, state, restarts, liveness lock).

use std::fmt;
use std::path::Path;

use clap::ArgMatches;

use crate::control::{Control, MAX_ROLES};
use crate::shm::{Flag, RunName};

use super::{JobError, JobSettings};

/// A kind of role process (ping, producer, worker).
#[derive(Debug)]
pub struct RoleKind {
    /// Its name: the subcommand `forkring <name> --run NAME --index I` that
    /// runs it. Unique across the registry.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Whether a run may have several (then they are shown with their
    /// index: `worker 3`; otherwise just `ping`).
    pub multiple: bool,
    /// Adds the role's own options to its subcommand.
    pub options: fn(clap::Command) -> clap::Command,
    /// Checks those options against the run's settings of the job, before
    /// the role's slot is claimed (a role takes its settings from the run).
    pub check: fn(&ArgMatches, &dyn JobSettings, &RunName) -> Result<(), JobError>,
    /// The role's work. It attaches to its segments, calls
    /// [`RoleCtx::attached`], and returns when the work is done or the run
    /// stops.
    pub run: fn(&RoleCtx<'_>) -> Result<(), JobError>,
}

/// Adds no options (for [`RoleKind::options`]).
pub fn no_options(cmd: clap::Command) -> clap::Command {
    cmd
}

/// Checks nothing (for [`RoleKind::check`]).
pub fn no_check(_: &ArgMatches, _: &dyn JobSettings, _: &RunName) -> Result<(), JobError> {
    Ok(())
}

/// One role of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleId {
    /// Position in the run's role table = slot in the control segment.
    pub slot: u32,
    /// The job's name.
    pub(crate) job: &'static str,
    /// The role kind's name.
    pub(crate) kind: &'static str,
    /// Index among the roles of this kind, from 0.
    pub index: u32,
    /// Whether the kind may have several roles.
    multiple: bool,
}

impl RoleId {
    /// How messages, `status` and `summary.json` name the role: `ping`, or
    /// `worker 3` for kinds that come several to a run.
    pub fn label(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for RoleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.multiple {
            write!(f, "{} {}", self.kind, self.index)
        } else {
            f.write_str(self.kind)
        }
    }
}

/// The run's roles, in slot order.
#[derive(Debug, Clone)]
pub struct RoleTable {
    roles: Vec<(RoleId, &'static RoleKind)>,
}

/// Too many roles for one run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the run would have {0} role processes; at most {MAX_ROLES} are allowed")]
pub struct TooManyRoles(pub u64);

impl RoleTable {
    /// The table of a run with these jobs (in the run's job order).
    pub(crate) fn of(jobs: &[Box<dyn JobSettings>]) -> Result<RoleTable, TooManyRoles> {
        let total: u64 = jobs
            .iter()
            .flat_map(|j| j.roles())
            .map(|(_, n)| n as u64)
            .sum();
        if total > MAX_ROLES as u64 {
            return Err(TooManyRoles(total));
        }
        let mut roles = Vec::with_capacity(total as usize);
        for j in jobs {
            let job = j.job().name();
            for (kind, n) in j.roles() {
                for index in 0..n {
                    let slot = roles.len() as u32;
                    roles.push((
                        RoleId {
                            slot,
                            job,
                            kind: kind.name,
                            index,
                            multiple: kind.multiple,
                        },
                        kind,
                    ));
                }
            }
        }
        Ok(RoleTable { roles })
    }

    /// Number of roles.
    pub(crate) fn len(&self) -> u32 {
        self.roles.len() as u32
    }
    /// Every role, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &RoleId> {
        self.roles.iter().map(|(r, _)| r)
    }
    /// The role in slot `slot`.
    pub(crate) fn get(&self, slot: u32) -> Option<&RoleId> {
        self.roles.get(slot as usize).map(|(r, _)| r)
    }
    /// The role `kind` `index`, with its kind.
    pub(crate) fn find(&self, kind: &str, index: u32) -> Option<(&RoleId, &'static RoleKind)> {
        self.roles
            .iter()
            .find(|(r, _)| r.kind == kind && r.index == index)
            .map(|(r, k)| (r, *k))
    }
}

/// What a role process gets from its run.
#[derive(Debug)]
pub struct RoleCtx<'a> {
    /// The run.
    pub run: &'a RunName,
    /// This role.
    pub role: RoleId,
    /// The run's output directory (absolute).
    pub(crate) out: &'a Path,
    settings: &'a dyn JobSettings,
    control: &'a Control,
    table: &'a RoleTable,
    supervised: bool,
}

impl<'a> RoleCtx<'a> {
    /// Made by the role runner once the role's slot is claimed.
    pub(crate) fn new(
        run: &'a RunName,
        role: RoleId,
        out: &'a Path,
        settings: &'a dyn JobSettings,
        control: &'a Control,
        table: &'a RoleTable,
        supervised: bool,
    ) -> Self {
        RoleCtx {
            run,
            role,
            out,
            settings,
            control,
            table,
            supervised,
        }
    }

    /// The job's settings as its own type. The runner gives a role kind its
    /// own job's settings, so this only fails on a programming error, and
    /// then says so.
    pub fn settings<T: JobSettings>(&self) -> Result<&'a T, JobError> {
        self.settings.downcast::<T>().ok_or_else(|| {
            JobError::Failed(format!(
                "role {} was given the settings of another job",
                self.role
            ))
        })
    }
    /// The run-wide stop flag.
    pub fn stop(&self) -> &'a Flag {
        self.control.stop_flag()
    }
    /// Tells the supervisor that this role has attached to its segments.
    pub fn attached(&self) {
        self.control.mark_attached(self.role.slot);
    }
    /// Whether a live supervisor holds the run.
    pub(crate) fn supervisor_alive(&self) -> bool {
        self.control.supervisor_alive()
    }
    /// `Ok` while a live supervisor holds the run; otherwise the error a
    /// role stops with (it is resumed when a supervisor starts again).
    pub fn require_supervisor(&self) -> Result<(), JobError> {
        if self.supervisor_alive() {
            Ok(())
        } else {
            Err(JobError::SupervisorGone {
                run: self.run.clone(),
            })
        }
    }
    /// Whether a live process plays role `kind` `index` of this run.
    pub(crate) fn peer_alive(&self, kind: &str, index: u32) -> bool {
        self.table
            .find(kind, index)
            .is_some_and(|(r, _)| self.control.role_alive(r.slot))
    }
    /// Whether the supervisor started this role (it then shows the role's
    /// figures; a role started by hand prints its own).
    pub(crate) fn supervised(&self) -> bool {
        self.supervised
    }
}
