//! forkring: a supervisor for small multi-process systems whose roles talk
//! only through named POSIX shared-memory segments and futexes.
//!
//! Layers, each importing only those above it in this list:
//! - [`shm`]: the IPC substrate (segments, futex waiting, Turn, Semaphore,
//!   SPSC ring, committed records). The only module with atomics.
//! - [`control`]: a run's control segment: stop flag, role table, settings.
//! - [`nats`]: NATS JetStream connections (the only async code), for the
//!   jobs' bridges beyond one host.
//! - [`job`]: the job interface.
//! - [`image`], [`stream`], [`tasks`]: the jobs, each in its own folder.
//! - [`jobs`]: the registry, the only place that names the jobs.
//! - [`settings`]: a run's recorded settings.
//! - [`supervisor`]: `forkring run`: forks roles, restarts them, stops
//!   them, hands results over; knows jobs only through [`job`].
//! - [`ops`]: `status`, `clean`, `handoff`, `verify`.
//! - [`bench`]: `forkring bench`.
//! - [`cli`]: the command line, exit codes and operator hints.

pub mod bench;
pub mod cli;
pub mod clock;
pub mod control;
pub mod error;
pub mod exit;
pub mod image;
pub mod job;
pub mod jobs;
pub mod nats;
pub mod ops;
pub mod outfile;
pub mod procinfo;
pub mod settings;
pub mod shm;
pub mod stream;
pub mod supervisor;
pub mod tasks;
pub mod units;

/// forkring's version and the git commit it was built from (`build.rs`;
/// "unknown" when built outside a git checkout): `0.1.0 (commit 2e04509a1b)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FORKRING_GIT_COMMIT"),
    ")"
);
