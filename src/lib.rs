//! forkring: a supervisor for small multi-process systems whose roles talk
//! only through named POSIX shared-memory segments and futexes.
//!
//! - [`shm`]: the IPC substrate (segments, futex waiting, Turn, Semaphore,
//!   SPSC ring, committed records). The only module with atomics.
//! - [`supervisor`]: `forkring run`: forks roles, restarts them, stops them,
//!   hands results over.
//! - [`image`]: the ping/pong image job.
//! - [`stream`]: the producer/consumer stream job.
//! - [`bench`]: `forkring bench`.
//! - [`cli`]: the command line.

pub mod bench;
pub mod cli;
pub mod clock;
pub mod error;
pub mod image;
pub mod ops;
pub mod outfile;
pub mod procinfo;
pub mod settings;
pub mod shm;
pub mod stream;
pub mod supervisor;
