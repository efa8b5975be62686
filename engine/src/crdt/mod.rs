//! The CRDTs: pure data types with delta mutators, no I/O and no clock
//! reads (timestamps are passed in).
//!
//! Every mutation returns a *delta*: a small state that, joined into any
//! replica, has the effect of the operation. Joins are commutative,
//! associative and idempotent, so deltas may arrive late, twice, out of
//! order, or through any peer; `engine/tests/crdt_laws.rs` property-tests
//! this for every type.

pub mod counter;
pub mod expiry;
pub mod map;
pub mod register;
pub mod set;

pub use counter::{Counter, Pn};
pub use expiry::Expiry;
pub use map::{MapDelta, MapLimitError, OrMap};
pub use register::Register;
pub use set::{DotSet, OrSet, Scope, SetDelta};

use crate::error::{Error, Result};
use crate::object::{Kind, RegisterValue, Value};

/// The delta of one operation (or a full state used as a delta).
#[derive(Clone, PartialEq, Eq, Hash, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Delta {
    Counter(Counter),
    Set(SetDelta),
    Register(Register),
    Map(MapDelta),
    /// A change of the addressed object's expiry (any kind): stored beside
    /// the object, not in it.
    Expiry(Expiry),
}

impl Delta {
    /// The kind of object the delta joins into; `None` for an expiry,
    /// which any kind has.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Delta::Counter(_) => Some(Kind::Counter),
            Delta::Set(_) => Some(Kind::Set),
            Delta::Register(_) => Some(Kind::Register),
            Delta::Map(_) => Some(Kind::Map),
            Delta::Expiry(_) => None,
        }
    }

    /// Whether the delta may be addressed to an object of `kind`.
    pub fn fits(&self, kind: Kind) -> bool {
        self.kind().is_none_or(|k| k == kind)
    }

    /// What the delta is, for messages.
    pub fn what(&self) -> &'static str {
        self.kind().map_or("expiry", Kind::as_str)
    }
}

/// The full state of one object.
#[derive(Clone, PartialEq, Eq, Hash, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ObjectState {
    Counter(Counter),
    Set(OrSet),
    Register(Register),
    Map(OrMap),
}

impl ObjectState {
    pub fn kind(&self) -> Kind {
        match self {
            ObjectState::Counter(_) => Kind::Counter,
            ObjectState::Set(_) => Kind::Set,
            ObjectState::Register(_) => Kind::Register,
            ObjectState::Map(_) => Kind::Map,
        }
    }

    /// Whether the state is the same as an absent object (no effect has
    /// ever been joined into it).
    pub fn is_empty(&self) -> bool {
        match self {
            ObjectState::Counter(c) => c == &Counter::new(),
            ObjectState::Set(s) => s.is_empty() && s.context().is_empty(),
            ObjectState::Register(_) => false,
            ObjectState::Map(m) => m.is_empty() && m.context().is_empty() && m.chains().is_empty(),
        }
    }

    /// The state as a delta that can be joined into any replica.
    pub fn to_delta(&self) -> Delta {
        match self {
            ObjectState::Counter(c) => Delta::Counter(c.clone()),
            ObjectState::Set(s) => Delta::Set(s.to_delta()),
            ObjectState::Register(r) => Delta::Register(r.clone()),
            ObjectState::Map(m) => Delta::Map(m.to_delta()),
        }
    }

    /// The state produced by joining `delta` into an absent object.
    pub fn from_delta(delta: &Delta) -> ObjectState {
        match delta {
            Delta::Counter(c) => ObjectState::Counter(c.clone()),
            Delta::Set(d) => {
                let mut s = OrSet::new();
                s.merge(d);
                ObjectState::Set(s)
            }
            Delta::Register(r) => ObjectState::Register(r.clone()),
            Delta::Map(d) => ObjectState::Map(OrMap::from_delta(d)),
            Delta::Expiry(_) => unreachable!("an expiry delta is not an object state"),
        }
    }

    /// Joins `delta`; returns whether anything changed.
    pub fn merge(&mut self, delta: &Delta) -> Result<bool> {
        match (self, delta) {
            (ObjectState::Counter(c), Delta::Counter(d)) => Ok(c.merge(d)),
            (ObjectState::Set(s), Delta::Set(d)) => Ok(s.merge(d)),
            (ObjectState::Register(r), Delta::Register(d)) => Ok(r.merge(d)),
            (ObjectState::Map(m), Delta::Map(d)) => Ok(m.merge(d)),
            (state, delta) => Err(Error::WrongType(format!(
                "cannot join a {} delta into a {}",
                delta.what(),
                state.kind()
            ))),
        }
    }

    /// Joins another full state; returns whether anything changed.
    pub fn join(&mut self, other: &ObjectState) -> Result<bool> {
        self.merge(&other.to_delta())
    }

    /// What a read returns.
    pub fn value(&self) -> Value {
        match self {
            ObjectState::Counter(c) => Value::Counter(c.value()),
            ObjectState::Set(s) => Value::Set(s.members().map(<[u8]>::to_vec).collect()),
            ObjectState::Register(r) => Value::Register(Some(RegisterValue {
                value: r.value.clone(),
                hlc: r.hlc,
            })),
            ObjectState::Map(m) => Value::Map {
                fields: m.get_all(),
                count: m.len() as u64,
            },
        }
    }
}

/// The value of an absent object of `kind`.
pub fn empty_value(kind: Kind) -> Value {
    match kind {
        Kind::Counter => Value::Counter(0),
        Kind::Set => Value::Set(Vec::new()),
        Kind::Register => Value::Register(None),
        Kind::Map => Value::Map {
            fields: Vec::new(),
            count: 0,
        },
    }
}
