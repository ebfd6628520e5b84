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

pub mod procinfo;
pub mod shm;
