//! The engine's one error type. Variants say what the caller can do:
//! fix the input ([`Error::InvalidArgument`], [`Error::WrongType`]), retry
//! later ([`Error::ClockAhead`]), or stop and call an operator
//! ([`Error::Corruption`], [`Error::UnsupportedFormat`], [`Error::Io`],
//! [`Error::Poisoned`]).

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or breaks a limit; nothing was changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The operation does not apply to the object's type; nothing was changed.
    #[error("wrong type: {0}")]
    WrongType(String),

    /// A remote timestamp is further ahead of local physical time than
    /// `max_clock_offset`. Nothing was applied; retry once local time has
    /// caught up (the sender keeps the delta).
    #[error("remote timestamp is {ahead_ms} ms ahead of local time (limit {max_ms} ms)")]
    ClockAhead { ahead_ms: u64, max_ms: u64 },

    /// Stored bytes fail their checksum or do not decode. The engine refuses
    /// to serve rather than return wrong data.
    #[error("corruption in {path}: {detail}")]
    Corruption { path: PathBuf, detail: String },

    /// Stored bytes were written by a newer format than this build reads.
    #[error("unsupported format version {found} in {what} (this build reads up to {supported})")]
    UnsupportedFormat {
        what: &'static str,
        found: u8,
        supported: u8,
    },

    /// An I/O operation failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The object store (sled) failed.
    #[error("object store error: {0}")]
    Store(String),

    /// An fsync failed (of any log file, the log directory, a checkpoint
    /// or the object store), the log sync thread panicked, or an object
    /// store write failed after its log append: the engine no longer knows
    /// what is durable, fails every write still waiting to become durable,
    /// and refuses every further write until it is reopened. The message
    /// says which.
    #[error("engine refuses writes: {0}")]
    Poisoned(String),

    /// A merge (a peer's delta, a full-sync or read-repair state) would
    /// make a set larger than [`crate::MAX_MERGED_OBJECT_BYTES`]. Nothing
    /// was applied; the object stays as it was here (counted in
    /// `Metrics::oversized_merges`).
    #[error(
        "the merge would grow the set to {bytes} bytes, over the {limit}-byte merged-object bound"
    )]
    ObjectTooLarge { bytes: u64, limit: u64 },

    /// A merge would make a map hold more than
    /// [`crate::crdt::map::MAX_FIELDS_PER_MAP`] fields. Handled like
    /// [`Error::ObjectTooLarge`]: nothing was applied (counted in
    /// `Metrics::oversized_merges`), the delta is retried later.
    #[error("the merge would give the map {fields} fields, over the {limit}-field limit")]
    TooManyFields { fields: u64, limit: u64 },

    /// The engine is closing.
    #[error("engine is shut down")]
    Shutdown,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(path: impl Into<PathBuf>, detail: impl Into<String>) -> Error {
        Error::Corruption {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(source) => Error::Io {
                path: PathBuf::from("<object store>"),
                source,
            },
            sled::Error::Corruption { at, .. } => Error::Corruption {
                path: PathBuf::from("<object store>"),
                detail: format!("sled reports corruption at {at:?}"),
            },
            other => Error::Store(other.to_string()),
        }
    }
}
