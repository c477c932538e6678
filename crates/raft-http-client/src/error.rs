//! What can go wrong, and what to do about it.

use crate::types::Versioned;

/// An error from the cluster or from the way to it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A conditional write whose condition did not hold: nothing was written. `current` is
    /// what the key holds (`None`: absent); read-modify-write again from it.
    #[error("precondition failed: the key {}", match .current { Some(v) => format!("holds {:?} at revision {}", v.value, v.revision), None => "is absent".into() })]
    PreconditionFailed {
        /// The key's value and revision when the write was applied.
        current: Option<Versioned>,
    },
    /// The key does not exist.
    #[error("no such key")]
    NotFound,
    /// The cluster answered with an error (see `docs/http-api.md` for the codes).
    #[error("{status} {code}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The stable error code, e.g. `bad_request`, `no_leader`.
        code: String,
        /// What happened and what to do.
        message: String,
    },
    /// No endpoint could be reached, or every try was answered with an error worth
    /// retrying, until the retries ran out.
    #[error("no endpoint could serve the request after {tries} tries: {last}")]
    Unavailable {
        /// How many requests were sent.
        tries: u32,
        /// The last failure.
        last: String,
    },
    /// The request was sent but no answer came (a timeout, a connection lost): a write may
    /// or may not have been applied; read before retrying it.
    #[error("no answer from {endpoint}: {message} (a write may or may not have been applied)")]
    Unknown {
        /// The endpoint that was asked.
        endpoint: String,
        /// What happened.
        message: String,
    },
    /// The answer was not what the API documents.
    #[error("unexpected answer from {endpoint}: {message}")]
    Decode {
        /// The endpoint that answered.
        endpoint: String,
        /// What was wrong.
        message: String,
    },
    /// The client was set up wrongly (no endpoints, a bad address).
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// The API error code, if the cluster answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            Error::PreconditionFailed { .. } => Some("precondition_failed"),
            Error::NotFound => Some("key_not_found"),
            _ => None,
        }
    }
}
