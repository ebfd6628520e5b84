//! A role process: `forkring <kind> --run NAME --index I`. The one place
//! where roles start: open the run, check the role's options, claim its
//! slot, hand it a [`RoleCtx`].

use clap::ArgMatches;

use crate::job::{Registry, RoleCtx};
use crate::shm::{Access, RunName};

use super::error::RunError;
use super::opened::OpenRun;

/// Set in every role the supervisor starts, so a role knows the supervisor
/// shows its figures (a role started by hand prints its own).
pub(crate) const SUPERVISED_ENV: &str = "FORKRING_SUPERVISED";

/// Runs role `kind` `index` of run `run` until its work is done or the run
/// stops. `m` holds the role's own options.
pub(crate) fn run_role(
    registry: Registry,
    kind: &str,
    run: &RunName,
    index: u32,
    m: &ArgMatches,
) -> Result<(), RunError> {
    let open = OpenRun::open(run, Access::ReadWrite, registry)?;
    let Some((role, role_kind)) = open.roles.find(kind, index) else {
        let roles: Vec<String> = open.roles.iter().map(|r| r.label()).collect();
        return Err(RunError::NoSuchRole {
            run: run.clone(),
            role: format!("{kind} {index}"),
            roles: roles.join(", "),
        });
    };
    let role = *role;
    let settings = open
        .settings
        .job(role.job)
        .expect("the role table is made from the run's jobs");
    (role_kind.check)(m, settings, run)?;
    open.control.claim_role(role.slot, &role.label())?;
    let ctx = RoleCtx::new(
        run,
        role,
        &open.settings.out,
        settings,
        &open.control,
        &open.roles,
        std::env::var_os(SUPERVISED_ENV).is_some(),
    );
    (role_kind.run)(&ctx)?;
    Ok(())
}
