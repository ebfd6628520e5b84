//! The IPC substrate: named POSIX shared-memory segments, cross-process
//! futex waiting, and the primitives built on them.
//!
//! Every atomic operation and every futex call of forkring lives in this
//! module. The rest of the crate uses the typed primitives exported here and
//! never chooses a memory ordering itself (clippy's `disallowed_types` keeps
//! it that way). Each Release/Acquire pair is marked on both sides with a
//! `// SYNC POINT: <what becomes visible>` comment.
//!
//! Rules that hold for everything in here:
//! - A segment is mapped `MAP_SHARED`; another process may write it at any
//!   time. Shared structs therefore contain only atomics ([`cell`]) or plain
//!   old data read and written by volatile *copies* ([`cell::VolatileCell`]),
//!   never references into racy memory.
//! - Every index, length or count read from a segment is read once into a
//!   local and bounds-checked before use. A corrupted segment yields an
//!   error, never undefined behaviour, a panic or a crash.
//! - Waits are bounded: every blocking call takes a deadline, so a caller can
//!   re-check its stop flag and the liveness of its peers.

#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

pub(crate) mod cell;
pub(crate) mod commit;
pub(crate) mod futex;
pub mod header;
pub(crate) mod hint;
pub(crate) mod journal;
pub mod layout;
pub(crate) mod lock;
pub(crate) mod name;
pub mod ring;
pub mod segment;
pub(crate) mod semaphore;
pub(crate) mod set;
pub(crate) mod taskq;
pub mod turn;
pub(crate) mod wait;

pub use cell::{CachePadded, Param32, Param64, Stat64, VolatileCell};
pub(crate) use commit::{Committed, CommittedBytes};
pub(crate) use journal::Journal;
pub use name::{RunName, RunNameError};
pub use ring::{Ring, RingConsumer, RingError, RingProducer};
pub use segment::{Access, CreateError, OpenError, Segment, SegmentSpec};
pub(crate) use semaphore::Semaphore;
pub use set::{CreatedSegments, SegmentsError};
pub(crate) use turn::Turn;
pub use wait::{AdaptiveSpin, Deadline, Flag, FutexCell, SpinPolicy, TimedOut, WaitPhase};
