//! The image job: ping and pong take strict turns painting an all-RGB image
//! in shared memory.
//!
//! - [`layout`]: the five segments and their layouts;
//! - [`arrays`]: typed access to pixels, masks and the packed shuffles;
//! - [`rng`]: per-iteration randomness keyed by (seed, iteration);
//! - [`step`]: one iteration as a redo-logged transaction (crash safety);
//! - [`role`]: the ping/pong processes;
//! - [`host`]: the supervisor's side (progress, handoff);
//! - [`history`]: the `history.bin` format.

pub mod arrays;
pub mod history;
pub mod host;
pub mod layout;
pub mod render;
pub mod rng;
pub mod role;
pub mod step;
