//! Data access for the command families: requests through the coordinator
//! at the command's level, the Redis type of a key, and Meridian's errors
//! as RESP errors.
//!
//! # One Redis type per key over `(kind, key)` objects
//! A Redis key is the four Meridian objects `(register, key)`,
//! `(counter, key)`, `(set, key)` and `(map, key)`. An object is *present*
//! when a read shows it: a register with a value, a counter whose value is
//! not 0, a set with a member, a map with a field (Meridian keeps no
//! separate "exists" bit: a counter at 0 and a deleted one read the same).
//! Type-checked commands read all four (one `Probe`, at the command's
//! level) and then:
//! * string commands (`GET`, `SET`, ... ) on a key with a set or map, set
//!   commands on a key with a string or map, and hash commands on a key
//!   with a string or set: `-WRONGTYPE`;
//! * `SET` on a key holding a counter: `-WRONGTYPE` (the command that
//!   created the key fixed its type, as in Redis Active-Active; `DEL` it
//!   first); `INCR` on a key holding a register: `-ERR value is not an
//!   integer or out of range`;
//! * `GET` of a counter: its decimal value.
//!
//! The check is not a lock: two regions can concurrently create two types
//! under one key. Then `TYPE` says `string` before `hash` before `set`,
//! every family's commands answer `-WRONGTYPE` where another family's
//! object coexists, `GET` prefers the register to the counter, and `DEL` deletes
//! every object present.

use bytes::Bytes;
use meridian_client::wire::{
    Consistency, Kind, Operation, ReplyValue, Request, Response, WireError,
};

use super::RespServer;
use super::frame::Reply;
use crate::coordinator::WriteRecord;

/// Redis's wrong-type error, verbatim.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// A command's access to data: the node, the level, and where the
/// connection keeps its last write (for `WAIT`).
#[derive(Debug)]
pub struct Data<'a> {
    pub server: &'a RespServer,
    pub level: Consistency,
    pub last_write: &'a mut Option<WriteRecord>,
    /// The connection's open `SCAN`/`SSCAN` cursors.
    pub cursors: &'a mut super::cursors::Cursors,
    /// Writes this command completed (a later failure is then partial).
    pub writes_done: usize,
}

/// A failed request: the RESP error to answer.
#[derive(Debug)]
pub struct Failed(pub Reply);

impl From<String> for Failed {
    fn from(s: String) -> Failed {
        Failed(Reply::Error(s))
    }
}

impl From<&str> for Failed {
    fn from(s: &str) -> Failed {
        Failed(Reply::Error(s.to_owned()))
    }
}

/// A RESP error for a failed coordinator request (docs/resp.md lists them).
/// `write`: whether the request was a write (a timeout is then
/// indeterminate).
pub fn error_reply(e: &WireError, write: bool) -> Reply {
    Reply::Error(match e {
        WireError::Unavailable { needed, reachable } => format!(
            "NOREPLICAS not enough replicas reachable for this level: needs {needed}, {reachable} reachable (nothing was done)"
        ),
        WireError::Timeout { acked, needed } if write => format!(
            "INDETERMINATE timed out with {acked} of {needed} durable acknowledgements: the write may still take effect"
        ),
        WireError::Timeout { acked, needed } => format!(
            "TRYAGAIN read timed out with {acked} of {needed} replicas answering (nothing was changed)"
        ),
        WireError::Internal { message } if write => {
            format!("INDETERMINATE internal error: {message}: the write may still take effect")
        }
        WireError::Internal { message } => format!("ERR internal error: {message}"),
        WireError::WrongType { .. } => WRONGTYPE.to_owned(),
        WireError::InvalidArgument { message } => format!("ERR {message}"),
        WireError::Unauthorized { message } => format!("NOPERM {message}"),
        WireError::Overloaded { message } => format!("TRYAGAIN overloaded: {message}"),
    })
}

/// The error of a command that failed after `writes_done` of its writes
/// took effect: not a clean failure, so said with a prefix no client
/// retries.
pub fn after_writes(writes_done: usize, reply: Reply) -> Reply {
    match &reply {
        Reply::Error(text) if writes_done > 0 && !text.starts_with("INDETERMINATE") => {
            Reply::Error(format!(
                "INDETERMINATE {writes_done} earlier write(s) of this command took effect, then: {text}"
            ))
        }
        _ => reply,
    }
}

/// What a key holds (see the module docs for "present").
#[derive(Clone, Debug, Default)]
pub struct Present {
    pub register: Option<Vec<u8>>,
    pub counter: i64,
    /// How many members the set holds.
    pub set_count: u64,
    /// For each member the command asked about, whether the set holds it.
    pub members_present: Vec<bool>,
    /// How many fields the map holds.
    pub map_count: u64,
    /// For each field the command asked about, its value in the map.
    pub map_values: Vec<Option<Vec<u8>>>,
}

impl From<meridian_engine::Inspection> for Present {
    fn from(i: meridian_engine::Inspection) -> Present {
        Present {
            register: i.register,
            counter: i.counter,
            set_count: i.set_count,
            members_present: i.members_present,
            map_count: i.map_count,
            map_values: i.map_values,
        }
    }
}

impl Present {
    pub fn has_string(&self) -> bool {
        self.register.is_some() || self.counter != 0
    }

    pub fn has_set(&self) -> bool {
        self.set_count > 0
    }

    pub fn has_map(&self) -> bool {
        self.map_count > 0
    }

    /// A set or a map: what string commands refuse.
    pub fn has_collection(&self) -> bool {
        self.has_set() || self.has_map()
    }

    pub fn any(&self) -> bool {
        self.has_string() || self.has_collection()
    }

    /// The string value `GET` answers: the register's, else the counter's
    /// in decimal.
    pub fn string(&self) -> Option<Bytes> {
        match &self.register {
            Some(v) => Some(Bytes::from(v.clone())),
            None if self.counter != 0 => Some(Bytes::from(self.counter.to_string())),
            None => None,
        }
    }

    /// The kinds present, for `DEL`.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut out = Vec::new();
        if self.register.is_some() {
            out.push(Kind::Register);
        }
        if self.counter != 0 {
            out.push(Kind::Counter);
        }
        if self.has_map() {
            out.push(Kind::Map);
        }
        if self.has_set() {
            out.push(Kind::Set);
        }
        out
    }

    /// `-WRONGTYPE` unless the key may be used as a string.
    pub fn want_string(&self) -> Result<(), Failed> {
        if self.has_collection() {
            Err(WRONGTYPE.into())
        } else {
            Ok(())
        }
    }

    /// `-WRONGTYPE` unless the key may be used as a set.
    pub fn want_set(&self) -> Result<(), Failed> {
        if self.has_string() || self.has_map() {
            Err(WRONGTYPE.into())
        } else {
            Ok(())
        }
    }

    /// `-WRONGTYPE` unless the key may be used as a hash.
    pub fn want_map(&self) -> Result<(), Failed> {
        if self.has_string() || self.has_set() {
            Err(WRONGTYPE.into())
        } else {
            Ok(())
        }
    }
}

impl Data<'_> {
    /// One request through the coordinator at this command's level.
    pub async fn request(&mut self, op: Operation) -> Result<ReplyValue, Failed> {
        let write = op.is_write();
        let req = Request {
            op,
            consistency: self.level,
            timeout_ms: 0,
        };
        // The same size limits as the QUIC path, before any work.
        if let Err(e) = meridian_client::wire::check(&req.op) {
            return Err(Failed(Reply::Error(format!("ERR {e}"))));
        }
        let (response, record) = self.server.coordinator.execute_recording(req).await;
        if write {
            // `None` when another node applied it (placement forwarding):
            // WAIT then answers 0 rather than about an older write.
            *self.last_write = record;
        }
        match response {
            Response::Ok(reply) => {
                if write {
                    self.writes_done += 1;
                }
                Ok(reply.value)
            }
            Response::Err(e) => Err(Failed(after_writes(
                self.writes_done,
                error_reply(&e, write),
            ))),
        }
    }

    pub async fn write(&mut self, op: Operation) -> Result<ReplyValue, Failed> {
        self.request(op).await
    }

    /// What `key` holds under each type (and whether its set holds each
    /// of `members`), read at the command's level: one `Inspect` request,
    /// at `local` a few point reads of the contacted replica whatever the
    /// set's size.
    pub async fn probe_members(
        &mut self,
        key: &Bytes,
        members: &[Bytes],
    ) -> Result<Present, Failed> {
        self.probe_with(key, members, &[]).await
    }

    /// What `key` holds under each type and the values of `fields` in its
    /// map: one `Probe` request (at `local`, point reads whatever the
    /// map's size).
    pub async fn probe_fields(&mut self, key: &Bytes, fields: &[Bytes]) -> Result<Present, Failed> {
        self.probe_with(key, &[], fields).await
    }

    async fn probe_with(
        &mut self,
        key: &Bytes,
        members: &[Bytes],
        fields: &[Bytes],
    ) -> Result<Present, Failed> {
        let req = Request {
            op: Operation::Probe {
                key: key.to_vec(),
                members: members.iter().map(|m| m.to_vec()).collect(),
                fields: fields.iter().map(|f| f.to_vec()).collect(),
            },
            consistency: self.level,
            timeout_ms: 0,
        };
        let response = self
            .server
            .coordinator
            .execute(req, crate::metrics::Origin::RespProbe)
            .await;
        match response {
            Response::Ok(reply) => match reply.value {
                ReplyValue::Probe {
                    register,
                    counter,
                    set_count,
                    members_present,
                    map_count,
                    map_values,
                } => Ok(Present {
                    register,
                    counter,
                    set_count,
                    members_present,
                    map_count,
                    map_values,
                }),
                other => Err(Failed(Reply::Error(format!(
                    "ERR internal error: unexpected reply {other:?}"
                )))),
            },
            Response::Err(e) => Err(Failed(error_reply(&e, false))),
        }
    }

    /// What `key` holds under each type.
    pub async fn probe(&mut self, key: &Bytes) -> Result<Present, Failed> {
        self.probe_members(key, &[]).await
    }

    /// The set's members, at the command's level.
    pub async fn set_members(&mut self, key: &Bytes) -> Result<Vec<Vec<u8>>, Failed> {
        match self
            .request(Operation::SetRead { key: key.to_vec() })
            .await?
        {
            ReplyValue::Set { members, .. } => Ok(members),
            other => Err(Failed(Reply::Error(format!(
                "ERR internal error: unexpected reply {other:?}"
            )))),
        }
    }

    /// One page of the keys this node stores ([`Operation::Scan`]): the
    /// keys with their kinds, and the next page's position (`None`: done).
    pub async fn scan_page(
        &mut self,
        position: Vec<u8>,
        prefix: Vec<u8>,
        count: u32,
    ) -> Result<(Vec<meridian_client::wire::ScanKey>, Option<Vec<u8>>), Failed> {
        let op = Operation::Scan {
            cursor: position,
            prefix,
            count,
        };
        match self.request(op).await? {
            ReplyValue::Keys { keys, cursor } => Ok((keys, cursor)),
            other => Err(Failed(Reply::Error(format!(
                "ERR internal error: unexpected reply {other:?}"
            )))),
        }
    }

    /// One page of the set's members after `after` ([`Operation::SetPage`]).
    pub async fn set_page(
        &mut self,
        key: &Bytes,
        after: Option<Vec<u8>>,
        count: u32,
    ) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>), Failed> {
        let op = Operation::SetPage {
            key: key.to_vec(),
            after,
            count,
        };
        match self.request(op).await? {
            ReplyValue::SetPage { members, next } => Ok((members, next)),
            other => Err(Failed(Reply::Error(format!(
                "ERR internal error: unexpected reply {other:?}"
            )))),
        }
    }

    /// The map's fields and values, at the command's level.
    pub async fn map_fields(&mut self, key: &Bytes) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Failed> {
        match self
            .request(Operation::MapRead { key: key.to_vec() })
            .await?
        {
            ReplyValue::Map { fields, .. } => Ok(fields),
            other => Err(Failed(Reply::Error(format!(
                "ERR internal error: unexpected reply {other:?}"
            )))),
        }
    }

    /// Deletes every object present at `key`.
    pub async fn delete(&mut self, key: &Bytes, present: &Present) -> Result<(), Failed> {
        for kind in present.kinds() {
            self.write(Operation::Delete {
                kind,
                key: key.to_vec(),
            })
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: Reply) -> String {
        match r {
            Reply::Error(t) => t,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn only_definite_failures_use_prefixes_clients_retry() {
        let timeout = WireError::Timeout {
            acked: 1,
            needed: 2,
        };
        assert!(text(error_reply(&timeout, true)).starts_with("INDETERMINATE "));
        assert!(text(error_reply(&timeout, false)).starts_with("TRYAGAIN "));
        let internal = WireError::Internal {
            message: "x".into(),
        };
        assert!(text(error_reply(&internal, true)).starts_with("INDETERMINATE "));
        assert!(text(error_reply(&internal, false)).starts_with("ERR "));
        let unavailable = WireError::Unavailable {
            needed: 2,
            reachable: 1,
        };
        for write in [true, false] {
            assert!(text(error_reply(&unavailable, write)).starts_with("NOREPLICAS "));
        }
        // Every prefix a client retries by itself is only used for errors
        // the wire calls definite.
        for e in [
            timeout,
            internal,
            unavailable,
            WireError::Overloaded {
                message: "x".into(),
            },
            WireError::WrongType {
                message: "x".into(),
            },
        ] {
            for write in [true, false] {
                let t = text(error_reply(&e, write));
                if t.starts_with("NOREPLICAS") || t.starts_with("TRYAGAIN") {
                    assert!(e.is_definite() || !write, "{e:?} -> {t}");
                }
            }
        }
    }

    #[test]
    fn the_type_rule() {
        let register = Present {
            register: Some(b"v".to_vec()),
            ..Present::default()
        };
        let counter = Present {
            counter: -2,
            ..Present::default()
        };
        let set = Present {
            set_count: 1,
            ..Present::default()
        };
        let none = Present::default();
        assert!(!none.any() && none.want_string().is_ok() && none.want_set().is_ok());
        assert!(register.want_string().is_ok() && register.want_set().is_err());
        assert!(counter.want_string().is_ok() && counter.want_set().is_err());
        assert!(set.want_set().is_ok() && set.want_string().is_err());
        assert_eq!(counter.string().as_deref(), Some(&b"-2"[..]));
        assert_eq!(counter.kinds(), [Kind::Counter]);
        // Two types at once (concurrent creation): the register wins GET,
        // DEL deletes both.
        let both = Present {
            register: Some(b"r".to_vec()),
            counter: 3,
            ..Present::default()
        };
        assert_eq!(both.string().as_deref(), Some(&b"r"[..]));
        assert_eq!(both.kinds(), [Kind::Register, Kind::Counter]);
        let string_and_set = Present {
            set_count: 1,
            ..both
        };
        assert!(string_and_set.want_string().is_err() && string_and_set.want_set().is_err());
        assert_eq!(string_and_set.kinds().len(), 3);
        let map = Present {
            map_count: 2,
            ..Present::default()
        };
        assert!(map.want_map().is_ok() && map.want_string().is_err() && map.want_set().is_err());
        assert!(map.any() && map.kinds() == [Kind::Map]);
        assert!(set.want_map().is_err() && register.want_map().is_err());
        assert!(counter.want_map().is_err() && none.want_map().is_ok());
    }
}
