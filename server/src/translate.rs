//! Translation between the client protocol (wire) and the engine: what a
//! request's operation does to which object, engine values as replies,
//! engine errors as wire errors. The coordinator decides *where* and at
//! which level a request runs; this module only says *what* it is.

use meridian_client::wire::{self, Operation, ReplyValue, WireError};
use meridian_engine::{Deadline, Error as EngineError, Kind, ObjectKey, Op, Ttl, Value};

/// What a request addresses.
pub(crate) enum Target {
    /// The node's status (no object).
    Status,
    /// The harness's debug clock offset, in milliseconds (no object).
    DebugClockOffset(i64),
    /// One object, read or written.
    Object(ObjectKey, Access),
    /// A page of the keys this node stores (`Operation::Scan`).
    Scan,
}

/// Whether a request reads or writes its object. The write's engine
/// operation is made by [`engine_op`] only where the write is applied, so
/// a request's members are moved into the engine, never copied (a set add
/// may carry 16 MiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Write,
    Read,
    /// What the key holds under every type, and which of the request's
    /// members its set holds (`Operation::Inspect`).
    Inspect,
    /// A page of a set's members (`Operation::SetPage`).
    SetPage,
    /// Whether the object is present and its time to live
    /// (`Operation::Ttl`).
    Ttl,
}

/// The operation's object and whether it reads or writes it.
pub(crate) fn translate(op: &Operation) -> Result<Target, WireError> {
    let (kind, key, access) = match op {
        Operation::Status => return Ok(Target::Status),
        Operation::DebugClockOffset { offset_ms } => {
            return Ok(Target::DebugClockOffset(*offset_ms));
        }
        Operation::Scan { .. } => return Ok(Target::Scan),
        Operation::SetPage { key, .. } => (Kind::Set, key, Access::SetPage),
        Operation::CounterIncr { key, .. } => (Kind::Counter, key, Access::Write),
        Operation::CounterRead { key } => (Kind::Counter, key, Access::Read),
        Operation::SetAdd { key, .. } | Operation::SetRemove { key, .. } => {
            (Kind::Set, key, Access::Write)
        }
        Operation::SetRead { key } => (Kind::Set, key, Access::Read),
        Operation::RegisterPut { key, .. } => (Kind::Register, key, Access::Write),
        Operation::RegisterGet { key } => (Kind::Register, key, Access::Read),
        Operation::Delete { kind, key } => (engine_kind(*kind), key, Access::Write),
        // The key's every type: the register's identity only routes it.
        Operation::Inspect { key, .. } | Operation::Probe { key, .. } => {
            (Kind::Register, key, Access::Inspect)
        }
        Operation::MapSet { key, .. }
        | Operation::MapIncr { key, .. }
        | Operation::MapRemove { key, .. } => (Kind::Map, key, Access::Write),
        Operation::MapRead { key } => (Kind::Map, key, Access::Read),
        Operation::RegisterPutTtl { key, .. } => (Kind::Register, key, Access::Write),
        Operation::Expire { kind, key, .. } | Operation::Persist { kind, key } => {
            (engine_kind(*kind), key, Access::Write)
        }
        Operation::Ttl { kind, key } => (engine_kind(*kind), key, Access::Ttl),
    };
    Ok(Target::Object(object(kind, key)?, access))
}

/// The engine operation of a write, taking the request's payload. `None`
/// for reads and the object-less operations.
pub(crate) fn engine_op(op: Operation) -> Option<Op> {
    Some(match op {
        Operation::CounterIncr { delta, .. } => Op::Incr(delta),
        Operation::SetAdd { members, .. } => Op::Add(members),
        Operation::SetRemove { members, .. } => Op::Remove(members),
        Operation::RegisterPut { value, .. } => Op::Put(value),
        Operation::Delete { .. } => Op::Delete,
        Operation::MapSet { pairs, .. } => Op::HSet(pairs),
        Operation::MapIncr { field, delta, .. } => Op::HIncr(field, delta),
        Operation::MapRemove { fields, .. } => Op::HDel(fields),
        Operation::RegisterPutTtl { value, ttl, .. } => Op::PutTtl(value, engine_ttl(ttl)),
        Operation::Expire { deadline, .. } => Op::Expire(engine_deadline(deadline)),
        Operation::Persist { .. } => Op::Persist,
        Operation::MapRead { .. } | Operation::Probe { .. } | Operation::Ttl { .. } => {
            return None;
        }
        Operation::CounterRead { .. }
        | Operation::SetRead { .. }
        | Operation::RegisterGet { .. }
        | Operation::Status
        | Operation::DebugClockOffset { .. }
        | Operation::Inspect { .. }
        | Operation::Scan { .. }
        | Operation::SetPage { .. } => return None,
    })
}

/// The engine's deadline for a wire deadline: the node turns a relative
/// one into Unix milliseconds with its own clock, when it applies it.
pub(crate) fn engine_deadline(deadline: wire::Deadline) -> Deadline {
    match deadline {
        wire::Deadline::In(ms) => Deadline::In(ms),
        wire::Deadline::At(ms) => Deadline::At(ms),
    }
}

/// The engine's TTL change for a register write's.
pub(crate) fn engine_ttl(ttl: wire::Ttl) -> Ttl {
    match ttl {
        wire::Ttl::Keep => Ttl::Keep,
        wire::Ttl::Persist => Ttl::Persist,
        wire::Ttl::Expire(d) => Ttl::Expire(engine_deadline(d)),
    }
}

/// Whether a write changes only the object's expiry (answered with its
/// TTL, [`ReplyValue::Ttl`], rather than its value).
pub(crate) fn is_expiry_write(op: &Op) -> bool {
    matches!(op, Op::Expire(_) | Op::Persist)
}

/// Whether `value` shows its object present (a register with a value, a
/// counter not at 0, a set with a member, a map with a field).
pub(crate) fn value_present(value: &Value) -> bool {
    match value {
        Value::Counter(v) => *v != 0,
        Value::Set(members) => !members.is_empty(),
        Value::Register(r) => r.as_ref().is_some_and(|r| r.value.is_some()),
        Value::Map { count, .. } => *count > 0,
    }
}

/// Whether the object of `kind` is present in an inspection of its key:
/// [`value_present`] from point reads, whatever the object's size.
pub(crate) fn inspected_present(kind: Kind, i: &meridian_engine::Inspection) -> bool {
    match kind {
        Kind::Counter => i.counter != 0,
        Kind::Set => i.set_count > 0,
        Kind::Register => i.register.is_some(),
        Kind::Map => i.map_count > 0,
    }
}

/// The `Ttl` answer: whether the object is present, and its next deadline
/// (`deadline_ms`, Unix ms) seen from `now_ms`.
pub(crate) fn ttl_reply(exists: bool, deadline_ms: Option<u64>, now_ms: u64) -> ReplyValue {
    ReplyValue::Ttl {
        exists,
        deadline_ms,
        remaining_ms: deadline_ms.map(|d| d.saturating_sub(now_ms)),
    }
}

/// The engine's type for a wire type.
pub(crate) fn engine_kind(kind: wire::Kind) -> Kind {
    match kind {
        wire::Kind::Counter => Kind::Counter,
        wire::Kind::Set => Kind::Set,
        wire::Kind::Register => Kind::Register,
        wire::Kind::Map => Kind::Map,
    }
}

/// The wire's type for an engine type.
pub(crate) fn wire_kind(kind: Kind) -> wire::Kind {
    match kind {
        Kind::Counter => wire::Kind::Counter,
        Kind::Set => wire::Kind::Set,
        Kind::Register => wire::Kind::Register,
        Kind::Map => wire::Kind::Map,
    }
}

/// The objects a scan page visits for a request's `count`: 0 is
/// [`wire::DEFAULT_SCAN_COUNT`], more than [`wire::MAX_SCAN_COUNT`] is
/// capped to it.
pub(crate) fn scan_steps(count: u32) -> usize {
    match count {
        0 => wire::DEFAULT_SCAN_COUNT as usize,
        n => n.min(wire::MAX_SCAN_COUNT) as usize,
    }
}

/// The members a set page lists for a request's `count`: 0 or more than
/// [`wire::MAX_SET_PAGE_MEMBERS`] is that maximum.
pub(crate) fn set_page_members(count: u32) -> usize {
    match count {
        0 => wire::MAX_SET_PAGE_MEMBERS as usize,
        n => n.min(wire::MAX_SET_PAGE_MEMBERS) as usize,
    }
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

/// Most members a set write's reply lists. A write answers with the set's
/// new state so a client sees its effect, but a write of one member to a
/// set of a million must not answer with a million: past this (or
/// [`MAX_WRITE_REPLY_MEMBER_BYTES`]) the reply carries the count alone
/// (`members` empty, `count` exact). 1024 covers every set a person reads
/// in a terminal.
pub const MAX_WRITE_REPLY_MEMBERS: usize = 1024;

/// Most member bytes a set write's reply lists (see
/// [`MAX_WRITE_REPLY_MEMBERS`]): 64 KiB keeps a write's answer the size of
/// a request's, whatever the set's.
pub const MAX_WRITE_REPLY_MEMBER_BYTES: usize = 64 << 10;

/// The value a write answers with: [`reply_value`], except that a set past
/// [`MAX_WRITE_REPLY_MEMBERS`] or [`MAX_WRITE_REPLY_MEMBER_BYTES`] is
/// answered with its count and no members.
pub(crate) fn write_reply_value(value: Value) -> ReplyValue {
    match value {
        Value::Set(members)
            if members.len() > MAX_WRITE_REPLY_MEMBERS
                || members.iter().map(Vec::len).sum::<usize>() > MAX_WRITE_REPLY_MEMBER_BYTES =>
        {
            ReplyValue::Set {
                count: members.len() as u64,
                members: Vec::new(),
            }
        }
        other => reply_value(other),
    }
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
        Value::Map { fields, count } => ReplyValue::Map { fields, count },
    }
}

/// Largest set a read's reply lists, in bytes (each member counted with
/// 16 bytes of framing): the reply must fit one client frame
/// ([`wire::MAX_FRAME_BYTES`]) with room for the envelope. A set merges
/// can grow past one write's limit ([`meridian_engine::MAX_MERGED_OBJECT_BYTES`],
/// review C4); reading one larger than this is refused with a clear error
/// rather than a reply no client can take.
pub const MAX_READ_REPLY_BYTES: usize = wire::MAX_FRAME_BYTES - (1 << 20);

/// A read's reply: the value, or for a set over [`MAX_READ_REPLY_BYTES`]
/// an `InvalidArgument` error that says so and what still works.
pub(crate) fn read_reply_value(value: Value) -> Result<ReplyValue, WireError> {
    if let Value::Set(members) = &value {
        let bytes: usize = members.iter().map(|m| m.len() + 16).sum();
        if bytes > MAX_READ_REPLY_BYTES {
            return Err(WireError::InvalidArgument {
                message: format!(
                    "the set has {} members taking {bytes} bytes, over the \
                     {MAX_READ_REPLY_BYTES}-byte limit of a read's reply; list it page by \
                     page instead (SSCAN over RESP, Set::page / Operation::SetPage in the \
                     client, `meridian cli smembers --paged`); its size and members can \
                     still be checked (SCARD, SISMEMBER), or members removed",
                    members.len()
                ),
            });
        }
    }
    if let Value::Map { fields, .. } = &value {
        let bytes: usize = fields.iter().map(|(f, v)| f.len() + v.len() + 32).sum();
        if bytes > MAX_READ_REPLY_BYTES {
            return Err(WireError::InvalidArgument {
                message: format!(
                    "the map has {} fields taking {bytes} bytes, over the \
                     {MAX_READ_REPLY_BYTES}-byte limit of a read's reply; its fields can \
                     still be read one by one (HGET, HMGET, HLEN) or removed",
                    fields.len()
                ),
            });
        }
    }
    Ok(reply_value(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_set_writes_answer_with_a_count() {
        let small = Value::Set(vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            write_reply_value(small.clone()),
            ReplyValue::Set {
                members: vec![b"a".to_vec(), b"b".to_vec()],
                count: 2
            }
        );
        let many = Value::Set(
            (0..=MAX_WRITE_REPLY_MEMBERS as u32)
                .map(|i| i.to_be_bytes().to_vec())
                .collect(),
        );
        assert_eq!(
            write_reply_value(many),
            ReplyValue::Set {
                members: Vec::new(),
                count: MAX_WRITE_REPLY_MEMBERS as u64 + 1
            }
        );
        let big = Value::Set(vec![vec![1; MAX_WRITE_REPLY_MEMBER_BYTES], vec![2]]);
        assert_eq!(
            write_reply_value(big),
            ReplyValue::Set {
                members: Vec::new(),
                count: 2
            }
        );
        // Reads always list every member.
        assert!(
            matches!(reply_value(small), ReplyValue::Set { members, .. } if members.len() == 2)
        );
    }

    #[test]
    fn writes_move_their_payload_into_the_engine_op() {
        let op = Operation::SetAdd {
            key: b"k".to_vec(),
            members: vec![b"m".to_vec()],
        };
        assert!(matches!(
            translate(&op),
            Ok(Target::Object(_, Access::Write))
        ));
        assert_eq!(engine_op(op), Some(Op::Add(vec![b"m".to_vec()])));
        assert_eq!(engine_op(Operation::SetRead { key: b"k".to_vec() }), None);
    }
}
