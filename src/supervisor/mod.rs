//! `forkring run`: the supervisor. It knows jobs only through the job
//! interface (`crate::job`).
//!
//! - [`opened`]: a run's control segment, settings and role table; the
//!   jobs' segments through the interface;
//! - [`run`]: the supervisor loop;
//! - [`role`]: the start of every role process;
//! - [`spawn`], [`policy`], [`signals`], [`notify`], [`progress`]: starting
//!   roles, restart policy, signals, systemd, the display;
//! - [`handoff`]: the final handoff;
//! - [`error`]: what can go wrong, typed.

pub(crate) mod error;
pub(crate) mod handoff;
pub(crate) mod notify;
pub mod opened;
pub(crate) mod policy;
pub(crate) mod progress;
pub(crate) mod role;
pub(crate) mod rolelog;
pub(crate) mod run;
pub(crate) mod signals;
pub(crate) mod spawn;
pub(crate) mod startup;
