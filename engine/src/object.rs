//! Objects: identity `(kind, key)`, the operations on them, the values
//! reads return, and the size limits enforced at the edge.

use std::fmt;

use crate::clock::Hlc;
use crate::crdt::map::{MAX_FIELD_BYTES, MAX_FIELD_VALUE_BYTES, MapLimitError};
use crate::error::{Error, Result};

/// The size limits (see [`meridian_limits`], which says why each value):
/// defined in that leaf crate because the client, which does not depend on
/// the engine, checks requests against the same numbers.
pub use meridian_limits::{
    MAX_KEY_BYTES, MAX_MEMBERS_PER_OP, MAX_MERGED_OBJECT_BYTES, MAX_OBJECT_BYTES, MAX_VALUE_BYTES,
};

/// A placement group: the set of objects sharing one replica set (one
/// placement rule). The engine numbers each group's deltas in a stream of
/// its own, so a node's version vectors only ever mention streams of groups
/// it replicates and stay contiguous. Group 0 is "everything else".
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Debug,
    Default,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct GroupId(pub u16);

/// Maps an object to its placement group.
pub type GroupFn = std::sync::Arc<dyn Fn(&ObjectKey) -> GroupId + Send + Sync>;

/// The type of an object; part of its identity.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Debug,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[repr(u8)]
pub enum Kind {
    Counter = 1,
    Set = 2,
    Register = 3,
    /// A Redis hash ([`crate::crdt::OrMap`]). Tag 4 was appended: data
    /// written before maps existed never holds it, so it reads unchanged.
    Map = 4,
}

impl Kind {
    pub fn tag(self) -> u8 {
        self as u8
    }

    pub fn from_tag(tag: u8) -> Option<Kind> {
        match tag {
            1 => Some(Kind::Counter),
            2 => Some(Kind::Set),
            3 => Some(Kind::Register),
            4 => Some(Kind::Map),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Set => "set",
            Kind::Register => "register",
            Kind::Map => "map",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An object's identity. Construct with [`ObjectKey::new`], which enforces
/// the key length limit.
#[derive(
    Clone, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct ObjectKey {
    kind: Kind,
    key: Vec<u8>,
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, String::from_utf8_lossy(&self.key))
    }
}

impl ObjectKey {
    pub fn new(kind: Kind, key: impl Into<Vec<u8>>) -> Result<ObjectKey> {
        let object = ObjectKey {
            kind,
            key: key.into(),
        };
        object.validate()?;
        Ok(object)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Checks a decoded key (e.g. from a peer) against the limits.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.key.len() > MAX_KEY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "key of {} bytes exceeds the {MAX_KEY_BYTES}-byte limit",
                self.key.len()
            )));
        }
        Ok(())
    }
}

/// A local operation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Op {
    /// Counter: add `delta` (negative to decrement).
    Incr(i64),
    /// Set: add members.
    Add(Vec<Vec<u8>>),
    /// Set: remove members (only the adds this replica has observed).
    Remove(Vec<Vec<u8>>),
    /// Register: write a value.
    Put(Vec<u8>),
    /// Map: set fields (`HSET`; a repeated field takes its last value).
    HSet(Vec<(Vec<u8>, Vec<u8>)>),
    /// Map: add to a field's integer value (`HINCRBY`).
    HIncr(Vec<u8>, i64),
    /// Map: remove fields (only the writes this replica has observed).
    HDel(Vec<Vec<u8>>),
    /// Any type: counter forgets what this replica observed; set and map
    /// remove every observed member or field; register writes a
    /// timestamped tombstone.
    Delete,
    /// Register: write a value and change its expiry (`SET … EX|PX|EXAT|
    /// PXAT|KEEPTTL`). [`Op::Put`] is `PutTtl(v, Ttl::Persist)`, as Redis's
    /// plain `SET` clears a TTL.
    PutTtl(Vec<u8>, Ttl),
    /// Any type: set a deadline (`EXPIRE` and friends). A deadline at or
    /// before the node's now expires the object at once.
    Expire(Deadline),
    /// Any type: remove the deadlines this replica observed (`PERSIST`).
    Persist,
}

/// When an object expires, as a write gives it: relative to the node's
/// clock when the write is applied (the client's clock is never used), or
/// absolute.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Deadline {
    /// Milliseconds after the node's now.
    In(u64),
    /// Unix milliseconds.
    At(u64),
}

impl Deadline {
    /// The deadline in Unix milliseconds, for a node whose clock reads `now_ms`.
    pub fn unix_ms(self, now_ms: u64) -> u64 {
        match self {
            Deadline::In(ms) => now_ms.saturating_add(ms),
            Deadline::At(ms) => ms,
        }
    }
}

/// What a register write does to the object's expiry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ttl {
    /// Keep the deadlines (`SET … KEEPTTL`).
    Keep,
    /// Remove the observed deadlines (plain `SET`).
    Persist,
    /// Replace the observed deadlines with this one (`SET … EX|PX|EXAT|PXAT`).
    Expire(Deadline),
}

impl Op {
    /// Checks the operation against the object's type and the size limits.
    pub(crate) fn validate(&self, kind: Kind) -> Result<()> {
        let fits = matches!(
            (self, kind),
            (Op::Incr(_), Kind::Counter)
                | (Op::Add(_) | Op::Remove(_), Kind::Set)
                | (Op::Put(_) | Op::PutTtl(..), Kind::Register)
                | (Op::HSet(_) | Op::HIncr(..) | Op::HDel(_), Kind::Map)
                | (Op::Delete | Op::Expire(_) | Op::Persist, _)
        );
        if !fits {
            return Err(Error::WrongType(format!(
                "{} does not apply to a {kind}",
                self.name()
            )));
        }
        match self {
            Op::Add(members) | Op::Remove(members) => {
                if members.len() > MAX_MEMBERS_PER_OP {
                    return Err(Error::InvalidArgument(format!(
                        "{} members in one operation exceeds the limit of {MAX_MEMBERS_PER_OP}",
                        members.len()
                    )));
                }
                if let Some(m) = members.iter().find(|m| m.len() > MAX_VALUE_BYTES) {
                    return Err(Error::InvalidArgument(format!(
                        "set member of {} bytes exceeds the {MAX_VALUE_BYTES}-byte limit",
                        m.len()
                    )));
                }
            }
            Op::HSet(pairs) => {
                if pairs.len() > MAX_MEMBERS_PER_OP {
                    return Err(Error::InvalidArgument(format!(
                        "{} fields in one operation exceeds the limit of {MAX_MEMBERS_PER_OP}",
                        pairs.len()
                    )));
                }
                for (f, v) in pairs {
                    check_field(f)?;
                    if v.len() > MAX_FIELD_VALUE_BYTES {
                        return Err(MapLimitError::ValueTooLarge { bytes: v.len() }.into());
                    }
                }
            }
            Op::HIncr(f, _) => check_field(f)?,
            Op::HDel(fields) => {
                if fields.len() > MAX_MEMBERS_PER_OP {
                    return Err(Error::InvalidArgument(format!(
                        "{} fields in one operation exceeds the limit of {MAX_MEMBERS_PER_OP}",
                        fields.len()
                    )));
                }
                for f in fields {
                    check_field(f)?;
                }
            }
            Op::Put(v) | Op::PutTtl(v, _) if v.len() > MAX_VALUE_BYTES => {
                return Err(Error::InvalidArgument(format!(
                    "value of {} bytes exceeds the {MAX_VALUE_BYTES}-byte limit",
                    v.len()
                )));
            }
            _ => {}
        }
        Ok(())
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::Incr(_) => "incr",
            Op::Add(_) => "add",
            Op::Remove(_) => "remove",
            Op::Put(_) => "put",
            Op::HSet(_) => "hset",
            Op::HIncr(..) => "hincrby",
            Op::HDel(_) => "hdel",
            Op::Delete => "delete",
            Op::PutTtl(..) => "put",
            Op::Expire(_) => "expire",
            Op::Persist => "persist",
        }
    }
}

/// A register's current content.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RegisterValue {
    /// `None` after a delete (a tombstone).
    pub value: Option<Vec<u8>>,
    /// Timestamp of the write that produced this content.
    pub hlc: Hlc,
}

/// What a read returns.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Value {
    Counter(i64),
    /// Members in ascending byte order.
    Set(Vec<Vec<u8>>),
    /// `None`: never written.
    Register(Option<RegisterValue>),
    /// A map's fields with their values, ascending by field, and how many
    /// fields the map holds. A read lists every field (`fields.len() ==
    /// count`); a write's value lists only the fields it touched that are
    /// present after it, so a write to a large map costs what it touches.
    Map {
        fields: Vec<(Vec<u8>, Vec<u8>)>,
        count: u64,
    },
}

/// Refuses a field name over [`MAX_FIELD_BYTES`].
fn check_field(field: &[u8]) -> Result<()> {
    if field.len() > MAX_FIELD_BYTES {
        return Err(MapLimitError::FieldTooLarge { bytes: field.len() }.into());
    }
    Ok(())
}
