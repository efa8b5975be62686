//! Translation between the client protocol (wire) and the engine: what a
//! request's operation does to which object, engine values as replies,
//! engine errors as wire errors. The coordinator decides *where* and at
//! which level a request runs; this module only says *what* it is.

use meridian_client::wire::{self, Operation, ReplyValue, WireError};
use meridian_engine::{Error as EngineError, Kind, ObjectKey, ObjectState, Op, Value};

/// What a request addresses.
pub(crate) enum Target {
    /// The node's status (no object).
    Status,
    /// The harness's debug clock offset, in milliseconds (no object).
    DebugClockOffset(i64),
    /// One object, read or written.
    Object(ObjectKey, Action),
}

/// The operation's object and what it does to it.
pub(crate) fn translate(op: &Operation) -> Result<Target, WireError> {
    let (key, action) = match op {
        Operation::Status => return Ok(Target::Status),
        Operation::DebugClockOffset { offset_ms } => {
            return Ok(Target::DebugClockOffset(*offset_ms));
        }
        Operation::CounterIncr { key, delta } => {
            (object(Kind::Counter, key)?, Action::Write(Op::Incr(*delta)))
        }
        Operation::CounterRead { key } => (object(Kind::Counter, key)?, Action::Read),
        Operation::SetAdd { key, members } => (
            object(Kind::Set, key)?,
            Action::Write(Op::Add(members.clone())),
        ),
        Operation::SetRemove { key, members } => (
            object(Kind::Set, key)?,
            Action::Write(Op::Remove(members.clone())),
        ),
        Operation::SetRead { key } => (object(Kind::Set, key)?, Action::Read),
        Operation::RegisterPut { key, value } => (
            object(Kind::Register, key)?,
            Action::Write(Op::Put(value.clone())),
        ),
        Operation::RegisterGet { key } => (object(Kind::Register, key)?, Action::Read),
        Operation::Delete { kind, key } => {
            (object(engine_kind(*kind), key)?, Action::Write(Op::Delete))
        }
        Operation::Inspect { key, members } => (
            object(Kind::Register, key)?,
            Action::Inspect(members.clone()),
        ),
    };
    Ok(Target::Object(key, action))
}

/// The engine's type for a wire type.
pub(crate) fn engine_kind(kind: wire::Kind) -> Kind {
    match kind {
        wire::Kind::Counter => Kind::Counter,
        wire::Kind::Set => Kind::Set,
        wire::Kind::Register => Kind::Register,
    }
}

/// What a request does to its object.
pub(crate) enum Action {
    Write(Op),
    Read,
    /// What the key holds under every type, and which of these members its
    /// set holds (the object key's kind is only its routing identity).
    Inspect(Vec<Vec<u8>>),
}

pub(crate) fn invalid(message: impl Into<String>) -> WireError {
    WireError::InvalidArgument {
        message: message.into(),
    }
}

/// A poisoned engine is fatal ([`crate::fatal`]): the node stops instead
/// of answering.
pub(crate) fn engine_error(e: EngineError) -> WireError {
    match e {
        EngineError::Poisoned(reason) => crate::fatal::stop_the_node(&reason),
        EngineError::InvalidArgument(m) => WireError::InvalidArgument { message: m },
        EngineError::WrongType(m) => WireError::WrongType { message: m },
        EngineError::Shutdown => WireError::Unavailable {
            needed: 1,
            reachable: 0,
        },
        other => WireError::Internal {
            message: other.to_string(),
        },
    }
}

pub(crate) fn object(kind: Kind, key: &[u8]) -> Result<ObjectKey, WireError> {
    ObjectKey::new(kind, key.to_vec()).map_err(engine_error)
}

/// The value a request answers with, from the object's value.
pub(crate) fn reply_value(value: Value) -> ReplyValue {
    match value {
        Value::Counter(v) => ReplyValue::Counter { value: v },
        Value::Set(members) => ReplyValue::Set {
            count: members.len() as u64,
            members,
        },
        Value::Register(r) => ReplyValue::Register {
            hlc: r.as_ref().map(|r| wire::WireHlc {
                time: r.hlc.time,
                node: r.hlc.node.0,
            }),
            value: r.and_then(|r| r.value),
        },
    }
}

pub(crate) fn state_value(kind: Kind, state: Option<&ObjectState>) -> Value {
    match state {
        Some(s) => s.value(),
        None => match kind {
            Kind::Counter => Value::Counter(0),
            Kind::Set => Value::Set(Vec::new()),
            Kind::Register => Value::Register(None),
        },
    }
}
