//! NATS JetStream, for joining hosts: the stream job's exporter publishes
//! to it, the task pool's intake pulls from it.
//!
//! - [`names`]: URLs, subjects and names, checked before anything starts.
//! - [`session`]: a connection on a current-thread tokio runtime, the only
//!   async code in forkring, used only by the exporter and the intake (and
//!   the start-up check that runs before any segment is created).
//! - [`server`]: a local `nats-server` for the bench and the tests.

mod error;
pub(crate) mod names;
pub mod server;
pub(crate) mod session;

pub use error::NatsError;
pub use names::Endpoint;
