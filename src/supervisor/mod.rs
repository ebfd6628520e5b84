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

pub mod error;
pub mod handoff;
pub mod notify;
pub mod opened;
pub mod policy;
pub mod progress;
pub mod role;
pub mod run;
pub mod signals;
pub mod spawn;
