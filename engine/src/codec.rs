//! rkyv encoding with a format version byte, always validated (bytecheck)
//! before use. Every stored or transmitted payload is
//! `[format version][rkyv archive]`; a version above [`FORMAT_VERSION`]
//! is reported as [`Error::UnsupportedFormat`], garbage as a decode error.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;

use crate::error::Error;

/// The encoding this build writes and the newest it reads.
pub const FORMAT_VERSION: u8 = 1;

/// Types this module can encode.
pub trait Encode:
    for<'a> rkyv::Serialize<HighSerializer<Vec<u8>, ArenaHandle<'a>, rancor::Error>>
{
}
impl<T> Encode for T where
    T: for<'a> rkyv::Serialize<HighSerializer<Vec<u8>, ArenaHandle<'a>, rancor::Error>>
{
}

/// Appends the archive of `value` (no version byte) to `out`, in place:
/// archives are position independent and, with rkyv's `unaligned` format,
/// need no alignment, so they can follow a header in the same buffer.
pub fn archive_into<T: Encode>(value: &T, out: &mut Vec<u8>) {
    let buf = std::mem::take(out);
    *out = rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, buf)
        .expect("serializing into a growable buffer cannot fail");
}

/// Appends `[FORMAT_VERSION][archive of value]` to `out`.
pub fn encode_into<T: Encode>(value: &T, out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION);
    archive_into(value, out);
}

/// `[FORMAT_VERSION][archive of value]`.
pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_into(value, &mut out);
    out
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Written by a newer format.
    Unsupported(u8),
    /// Empty, truncated or not a valid archive.
    Malformed(String),
}

impl DecodeError {
    /// As an engine error about `what` stored at `path`.
    pub(crate) fn into_error(self, what: &'static str, path: &std::path::Path) -> Error {
        match self {
            DecodeError::Unsupported(found) => Error::UnsupportedFormat {
                what,
                found,
                supported: FORMAT_VERSION,
            },
            DecodeError::Malformed(detail) => Error::corruption(path, format!("{what}: {detail}")),
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Unsupported(v) => write!(
                f,
                "format version {v} is newer than this build reads ({FORMAT_VERSION})"
            ),
            DecodeError::Malformed(m) => write!(f, "malformed: {m}"),
        }
    }
}

/// Validates and decodes `[version][archive]`.
pub fn decode<T>(bytes: &[u8]) -> Result<T, DecodeError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
{
    let (&version, archive) = bytes
        .split_first()
        .ok_or_else(|| DecodeError::Malformed("empty payload".into()))?;
    if version > FORMAT_VERSION {
        return Err(DecodeError::Unsupported(version));
    }
    if version == 0 {
        return Err(DecodeError::Malformed("format version 0".into()));
    }
    rkyv::from_bytes::<T, rancor::Error>(archive).map_err(|e| DecodeError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::{Dot, StreamId};

    #[test]
    fn round_trip_and_rejections() {
        let dot = Dot::new(StreamId(3), 9);
        let bytes = encode(&dot);
        assert_eq!(decode::<Dot>(&bytes).unwrap(), dot);
        let mut newer = bytes.clone();
        newer[0] = FORMAT_VERSION + 1;
        assert_eq!(
            decode::<Dot>(&newer),
            Err(DecodeError::Unsupported(FORMAT_VERSION + 1))
        );
        assert!(matches!(decode::<Dot>(&[]), Err(DecodeError::Malformed(_))));
        assert!(matches!(
            decode::<Dot>(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Malformed(_))
        ));
    }
}
