//! `forkring run`: the supervisor.

pub mod control;
pub mod handoff;
pub mod job;
pub mod notify;
pub mod policy;
pub mod progress;
pub mod role;
pub mod run;
pub mod signals;
pub mod spawn;
