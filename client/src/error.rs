//! The client's one error type.
//!
//! Every variant says what a caller can do about it. The key question after
//! a failed write is whether it may still take effect:
//!
//! - **definite** ([`Error::is_definite`] is `true`): the request had no
//!   effect anywhere. It is safe to retry, to report "not done", or to pick
//!   another course.
//! - **indeterminate** (`false`): the request may have been applied, may be
//!   applied later, or may never be applied. Retrying a counter increment
//!   after an indeterminate error can count twice; re-reading the object is
//!   the way to find out.
//!
//! The client never retries a write on its own once any of its bytes may
//! have reached a server (docs/architecture.md section 7, "errors are honest").

use crate::wire::WireError;

/// Everything that can go wrong with a Meridian request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Fewer replicas were reachable than the consistency level needs;
    /// nothing was attempted. Definite. Retry later or use a weaker level.
    #[error("unavailable: needed {needed} replicas, {reachable} reachable")]
    Unavailable { needed: u32, reachable: u32 },

    /// The deadline passed before enough replicas acknowledged. Indeterminate:
    /// a write may still take effect. `acked` of `needed` durable
    /// acknowledgements had arrived at the server; both are 0 when the
    /// client's own deadline expired (the server never answered).
    #[error("{}", timeout_message(*.acked, *.needed))]
    Timeout { acked: u32, needed: u32 },

    /// The key holds, or the request needs, another type of object. Definite.
    #[error("wrong type: {0}")]
    WrongType(String),

    /// The request was malformed or exceeded a limit (key, value or object
    /// size, timeout, a debug operation the node does not allow). Definite:
    /// checked before anything happened, often before anything was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The access token was refused. Definite. Check `token` in client.toml.
    #[error("unauthorized: {0}")]
    Unauthorized(String),

    /// A server limit (connections, requests in flight) refused the request.
    /// Definite. Back off and retry.
    #[error("overloaded: {0}")]
    Overloaded(String),

    /// The server failed while handling the request. Indeterminate.
    #[error("internal server error: {0}")]
    Internal(String),

    /// The client configuration is unusable (file, field, certificate or key).
    /// Definite: nothing was sent.
    #[error("configuration: {0}")]
    Config(String),

    /// No node could be reached and authenticated, or the connection broke
    /// before the request was sent. Definite: nothing was sent. `node` names
    /// the node(s) tried; `message` says what went wrong with each.
    #[error("could not reach {node}: {message}")]
    Connect { node: String, message: String },

    /// The connection broke after the request was (possibly) sent.
    /// Indeterminate: a write may have been applied.
    #[error("connection lost after the request was sent (it may have taken effect): {0}")]
    ConnectionLost(String),

    /// The server's answer was malformed or did not fit the request.
    /// Indeterminate.
    #[error("protocol error: {0}")]
    Protocol(String),
}

fn timeout_message(acked: u32, needed: u32) -> String {
    if needed == 0 {
        "timed out waiting for the server (client deadline); the request may still take effect"
            .to_owned()
    } else {
        format!(
            "timed out with {acked} of {needed} acknowledgements; the request may still take effect"
        )
    }
}

impl Error {
    /// Whether the request certainly had no effect. `false` means it may have
    /// taken effect (or may still): see the module docs.
    pub fn is_definite(&self) -> bool {
        match self {
            Error::Unavailable { .. }
            | Error::WrongType(_)
            | Error::InvalidArgument(_)
            | Error::Unauthorized(_)
            | Error::Overloaded(_)
            | Error::Config(_)
            | Error::Connect { .. } => true,
            Error::Timeout { .. }
            | Error::Internal(_)
            | Error::ConnectionLost(_)
            | Error::Protocol(_) => false,
        }
    }

    /// A stable, machine-readable name for the error, for logs and JSON
    /// output (`meridian cli --json`). One of `unavailable`, `timeout`,
    /// `wrong_type`, `invalid_argument`, `unauthorized`, `overloaded`,
    /// `internal`, `connect`, `connection_lost`, `protocol`, `config`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unavailable { .. } => "unavailable",
            Error::Timeout { .. } => "timeout",
            Error::WrongType(_) => "wrong_type",
            Error::InvalidArgument(_) => "invalid_argument",
            Error::Unauthorized(_) => "unauthorized",
            Error::Overloaded(_) => "overloaded",
            Error::Internal(_) => "internal",
            Error::Config(_) => "config",
            Error::Connect { .. } => "connect",
            Error::ConnectionLost(_) => "connection_lost",
            Error::Protocol(_) => "protocol",
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Unavailable { needed, reachable } => {
                Error::Unavailable { needed, reachable }
            }
            WireError::Timeout { acked, needed } => Error::Timeout { acked, needed },
            WireError::WrongType { message } => Error::WrongType(message),
            WireError::InvalidArgument { message } => Error::InvalidArgument(message),
            WireError::Unauthorized { message } => Error::Unauthorized(message),
            WireError::Overloaded { message } => Error::Overloaded(message),
            WireError::Internal { message } => Error::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Error> {
        vec![
            Error::Unavailable {
                needed: 2,
                reachable: 1,
            },
            Error::Timeout {
                acked: 1,
                needed: 2,
            },
            Error::WrongType("w".into()),
            Error::InvalidArgument("i".into()),
            Error::Unauthorized("u".into()),
            Error::Overloaded("o".into()),
            Error::Internal("x".into()),
            Error::Config("c".into()),
            Error::Connect {
                node: "n".into(),
                message: "m".into(),
            },
            Error::ConnectionLost("l".into()),
            Error::Protocol("p".into()),
        ]
    }

    #[test]
    fn codes_are_the_documented_ones() {
        let codes: Vec<_> = all().iter().map(Error::code).collect();
        assert_eq!(
            codes,
            [
                "unavailable",
                "timeout",
                "wrong_type",
                "invalid_argument",
                "unauthorized",
                "overloaded",
                "internal",
                "config",
                "connect",
                "connection_lost",
                "protocol"
            ]
        );
    }

    #[test]
    fn definiteness_agrees_with_the_wire() {
        let wire = [
            WireError::Unavailable {
                needed: 2,
                reachable: 1,
            },
            WireError::Timeout {
                acked: 0,
                needed: 2,
            },
            WireError::WrongType {
                message: String::new(),
            },
            WireError::InvalidArgument {
                message: String::new(),
            },
            WireError::Unauthorized {
                message: String::new(),
            },
            WireError::Overloaded {
                message: String::new(),
            },
            WireError::Internal {
                message: String::new(),
            },
        ];
        for w in wire {
            assert_eq!(Error::from(w.clone()).is_definite(), w.is_definite(), "{w}");
        }
        let indeterminate: Vec<_> = all()
            .into_iter()
            .filter(|e| !e.is_definite())
            .map(|e| e.code())
            .collect();
        assert_eq!(
            indeterminate,
            ["timeout", "internal", "connection_lost", "protocol"]
        );
    }

    #[test]
    fn client_deadline_timeout_reads_well() {
        let e = Error::Timeout {
            acked: 0,
            needed: 0,
        };
        assert!(e.to_string().contains("client deadline"), "{e}");
        let e = Error::Timeout {
            acked: 1,
            needed: 2,
        };
        assert!(e.to_string().contains("1 of 2"), "{e}");
    }
}
