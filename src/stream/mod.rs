//! The stream job: a producer sends vectors through a shared-memory ring to
//! a consumer that detects every dropout exactly and computes statistics.
//!
//! - [`layout`]: the two segments;
//! - [`state`]: the consumer's committed analytics state;
//! - [`generate`]: vector generation and `--noise`;
//! - [`producer`], [`consumer`]: the role processes (crash safety is
//!   described in each);
//! - [`output`]: `stream.jsonl` / `stream.txt`;
//! - [`host`]: the supervisor's side (progress, handoff).

pub mod consumer;
pub mod generate;
pub mod host;
pub mod layout;
pub mod output;
pub mod producer;
pub mod state;
