//! Errors of talking to NATS. Neutral messages; the command line adds what
//! to do and picks the exit code.

use super::names::Endpoint;

/// A NATS failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NatsError {
    /// No connection within the time allowed.
    #[error("cannot reach the NATS server at {url} within {timeout_s} s: {detail}")]
    Unreachable {
        /// The server.
        url: Endpoint,
        /// The limit, seconds (0: none).
        timeout_s: f64,
        /// The client's words.
        detail: String,
    },
    /// The server runs without JetStream.
    #[error("the NATS server at {url} does not have JetStream enabled")]
    NoJetStream {
        /// The server.
        url: Endpoint,
    },
    /// JetStream refused a request (permissions, a name in use).
    #[error("JetStream refused {what}: {detail}")]
    Refused {
        /// What was asked.
        what: String,
        /// The server's words.
        detail: String,
    },
    /// An existing stream or consumer does not fit.
    #[error("JetStream stream {stream} cannot be used: {detail}")]
    Mismatch {
        /// The stream.
        stream: String,
        /// Why.
        detail: String,
    },
    /// Anything else, in the client's words.
    #[error("NATS: {what}: {detail}")]
    Failed {
        /// What was being done.
        what: String,
        /// The client's words.
        detail: String,
    },
}
