//! Exit codes.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failure; the message says what and what to do |
//! | 2 | usage error: bad arguments or options |
//! | 3 | the run gave up: a role exceeded the restart limit |
//! | 130 | interrupted by SIGINT (Ctrl-C); the results so far were handed off |

/// Exit code of a failure.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code of a usage error.
pub const EXIT_USAGE: i32 = 2;
/// Exit code when the restart limit was exceeded.
pub const EXIT_RESTART_LIMIT: i32 = 3;
/// Exit code after a SIGINT-initiated stop.
pub const EXIT_INTERRUPTED: i32 = 130;
