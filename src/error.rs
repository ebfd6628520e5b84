//! How commands fail: a one-line message and an exit code.
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

/// A command's failure. Deliberately not `Display`/`Error`, so that any error
/// type converts into it with `?`.
#[derive(Debug)]
pub struct Failure {
    /// Process exit code.
    pub code: i32,
    /// One-line cause, with what to do about it.
    pub message: String,
}

impl Failure {
    /// A runtime failure (exit 1).
    pub fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_FAILURE,
            message: message.into(),
        }
    }
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }
    /// A failure with an explicit exit code.
    pub fn with_code(code: i32, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::runtime(e.to_string())
    }
}

/// Result of a command.
pub type CmdResult = Result<(), Failure>;
