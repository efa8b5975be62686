//! The client protocol's message types: the one module the server shares
//! with the client (the server depends on it, never the reverse).
//!
//! Transport: QUIC with ALPN [`ALPN`]. The client verifies the server's
//! certificate against the cluster CA (server name = the node's name) and
//! presents the cluster's client certificate. On a new connection the client
//! opens one bidirectional stream, writes one [`Hello`] frame and finishes
//! the stream; the server answers one [`HelloReply`] frame. Nothing else is
//! accepted on a connection before a `HelloReply::Ok`.
//!
//! After that, each request uses its own bidirectional stream: the client
//! writes one [`Request`] frame and finishes its side; the server writes one
//! [`Response`] frame and finishes. Requests never wait on each other (no
//! head-of-line blocking) and neither side waits for stream
//! acknowledgements (`stopped()`), which would cost a delayed-ACK period
//! (~25 ms) per request.
//!
//! Framing: a frame is a little-endian `u32` payload length followed by the
//! payload, an rkyv archive of the message. Payloads above
//! [`MAX_FRAME_BYTES`] are refused without being read. Every payload is
//! validated (bytecheck) before use: unknown enum tags, truncated or
//! malformed bytes become [`DecodeError`], never a panic.

use std::fmt;

/// ALPN protocol id of the client protocol. The number is the frame
/// layout's version: requests and replies are archived with a fixed
/// layout (an enum takes its largest variant's size), so a new operation
/// larger than the others changes every frame, and client and node must
/// agree. `meridian/2`: the map, scan and set-page operations (24-byte
/// operations where `meridian/1` had 16), and the expiry operations
/// (26 bytes; same version, the round that added them being unreleased).
/// A client of the other version
/// fails the QUIC handshake (no common application protocol) instead of
/// sending frames the node would misread.
pub const ALPN: &[u8] = b"meridian/2";

/// Version carried in [`Hello`]; a server refuses versions it doesn't speak.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest frame either side accepts, in bytes. A single request may carry
/// up to one whole object (16 MiB) plus framing and metadata; 20 MiB bounds
/// the memory one stream can make a node allocate.
pub const MAX_FRAME_BYTES: usize = 20 << 20;

/// The request limits: the largest key, the largest set member or register
/// value, the largest object (a whole set) in bytes, and the most members
/// one set add or remove may name. The engine enforces the same numbers:
/// both take them from the dependency-free `meridian-limits` crate, which
/// says why each value.
pub use meridian_limits::{MAX_KEY_BYTES, MAX_MEMBERS_PER_OP, MAX_OBJECT_BYTES, MAX_VALUE_BYTES};

/// The `count` of a [`Operation::Scan`] that gives none (0), as Redis's
/// `SCAN` default.
pub const DEFAULT_SCAN_COUNT: u32 = 10;

/// Most objects one [`Operation::Scan`] visits (a larger `count` is capped
/// to it): bounds one page's work on the node (a point read or a seek per
/// object) and its reply (at most this many keys of [`MAX_KEY_BYTES`],
/// 4 MiB, within one frame).
pub const MAX_SCAN_COUNT: u32 = 1_000;

/// Largest scan cursor, in bytes: a cursor is a position in the node's
/// store, one key with its kind and length (5 bytes) and one more; 16
/// bytes of slack. A longer one cannot come from a node and is refused.
pub const MAX_SCAN_CURSOR_BYTES: usize = MAX_KEY_BYTES + 16;

/// Most members one [`Operation::SetPage`] lists (a larger `count` is
/// capped to it): the per-operation member limit, so a page is no larger
/// in count than one write may be.
pub const MAX_SET_PAGE_MEMBERS: u32 = MAX_MEMBERS_PER_OP as u32;

/// Most member bytes one [`Operation::SetPage`] lists, unless its first
/// member alone is larger (a member is at most [`MAX_VALUE_BYTES`]): a
/// page's reply stays near 1 MiB (at most 2 MiB), far inside one frame,
/// whatever the set's size.
pub const MAX_SET_PAGE_BYTES: usize = 1 << 20;

/// The type of an object. `(kind, key)` is an object's identity: a counter
/// and a set may share a key without conflict.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Debug,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Counter,
    Set,
    Register,
    /// A Redis hash: fields with values (appended: old frames keep their tags).
    Map,
}

impl Kind {
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

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "counter" => Ok(Kind::Counter),
            "set" => Ok(Kind::Set),
            "register" => Ok(Kind::Register),
            "map" => Ok(Kind::Map),
            other => Err(format!(
                "unknown type {other:?}: expected counter, set, register or map"
            )),
        }
    }
}

/// Per-request consistency level (docs/architecture.md section 7).
///
/// Text form (CLI `--consistency`, `client.toml`, RESP AUTH user names,
/// `Display`): `local`, `leader`, `quorum`, `all` and `replicas-N` for
/// [`Replicas`](Consistency::Replicas). `replicas-N` is the canonical
/// spelling because it needs no quoting anywhere it is typed: a shell
/// (parentheses would), a `redis://user:pass@` URL (a colon would end the
/// user name) or a Redis AUTH user. [`FromStr`](std::str::FromStr) also
/// accepts `replicas(N)` and `replicas:N` (the notation of the design
/// discussion); N is 1 to [`MAX_REPLICAS_LEVEL`], digits only.
///
/// Wire form: one byte (see the `rkyv::Archive` impl below), the same
/// byte the four original levels always had, so frames of clients that
/// predate `Replicas` decode unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Consistency {
    /// The contacted replica alone: lowest latency, available while it is up.
    #[default]
    Local,
    /// The object's leader (first live node of its preference list).
    Leader,
    /// A majority of the object's replicas.
    Quorum,
    /// Every replica of the object.
    All,
    /// `n` of the object's replicas, the contacted one included ("wait for
    /// N replicas", semi-synchronous): a write is acknowledged once `n`
    /// replicas hold it durably (fsynced), a read joins `n` replicas'
    /// states. `n` above the number of replicas of the key's placement
    /// group is refused (`InvalidArgument`), as is `n = 0`.
    Replicas(u8),
}

/// The largest `n` of `replicas-N`: what the one-byte wire form has room
/// for after the four fixed levels and the invalid-count marker (tags 4 to
/// 254 carry 1 to 251). A replica group is never that large; the
/// coordinator refuses any `n` above the key's replica count anyway.
pub const MAX_REPLICAS_LEVEL: u8 = 251;

/// Wire tag of a `Replicas` count that is not 1 to [`MAX_REPLICAS_LEVEL`]
/// (it decodes as `Replicas(0)`, which the node refuses as
/// `InvalidArgument`): encoding never fails, so no value panics `encode`.
const INVALID_REPLICAS_TAG: u8 = u8::MAX;

/// Wire tag of `Replicas(1)`; `Replicas(n)` is `n - 1` above it.
const FIRST_REPLICAS_TAG: u8 = 4;

impl Consistency {
    /// The one-byte wire form: 0 `local`, 1 `leader`, 2 `quorum`, 3 `all`
    /// (the tags rkyv gave the fieldless enum before `Replicas` existed),
    /// 4 to 254 `replicas-1` to `replicas-251`, 255 an invalid count.
    pub fn wire_tag(self) -> u8 {
        match self {
            Consistency::Local => 0,
            Consistency::Leader => 1,
            Consistency::Quorum => 2,
            Consistency::All => 3,
            Consistency::Replicas(n @ 1..=MAX_REPLICAS_LEVEL) => FIRST_REPLICAS_TAG + (n - 1),
            Consistency::Replicas(_) => INVALID_REPLICAS_TAG,
        }
    }

    /// The level a wire byte names; every byte names one (255:
    /// `Replicas(0)`, refused by the node).
    pub fn from_wire_tag(tag: u8) -> Consistency {
        match tag {
            0 => Consistency::Local,
            1 => Consistency::Leader,
            2 => Consistency::Quorum,
            3 => Consistency::All,
            INVALID_REPLICAS_TAG => Consistency::Replicas(0),
            t => Consistency::Replicas(t - FIRST_REPLICAS_TAG + 1),
        }
    }

    /// Whether the level is one a node can serve at all: every level but
    /// a `Replicas` count outside 1 to [`MAX_REPLICAS_LEVEL`]. (Whether
    /// the key's placement group has that many replicas is the node's
    /// check.)
    pub fn is_valid(self) -> bool {
        !matches!(self, Consistency::Replicas(n) if n == 0 || n > MAX_REPLICAS_LEVEL)
    }

    /// How many replicas a request at this level needs, of the `n`
    /// replicas of the key's placement group (the contacted replica
    /// included). The one place the arithmetic lives (STYLE §8).
    /// `local`/`leader`: 1; `quorum`: ⌊n/2⌋ + 1; `all`: n; `replicas-k`:
    /// k, refused when `k` is 0 or above `n` (no clamping: a caller who
    /// asked for k durable copies must not get fewer silently).
    pub fn replicas_needed(self, n: usize) -> Result<usize, ReplicaCountError> {
        Ok(match self {
            Consistency::Local | Consistency::Leader => 1.min(n),
            Consistency::Quorum => n / 2 + 1,
            Consistency::All => n,
            Consistency::Replicas(k) => {
                let k = usize::from(k);
                if k == 0 || k > n {
                    return Err(ReplicaCountError {
                        asked: k,
                        replicas: n,
                    });
                }
                k
            }
        })
    }

    /// Whether every read at `read` is promised to see a write at `write`
    /// that completed before the read began, by count alone: the read's
    /// and the write's replicas, among `n`, must intersect
    /// (`needed(read) + needed(write) > n`). True for `quorum`/`quorum`,
    /// anything with `all`, and `replicas-r`/`replicas-w` with `r + w > n`.
    /// A level invalid for `n` promises nothing.
    pub fn intersects(write: Consistency, read: Consistency, n: usize) -> bool {
        match (write.replicas_needed(n), read.replicas_needed(n)) {
            (Ok(w), Ok(r)) => n > 0 && w + r > n,
            _ => false,
        }
    }
}

/// A `replicas-k` level the key's placement group cannot serve: `k` is 0
/// or above its replica count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "replicas-{asked} asks for {asked} replicas but the key's placement group has {replicas} \
     (replicas-N takes N from 1 to the group's replica count)"
)]
pub struct ReplicaCountError {
    pub asked: usize,
    pub replicas: usize,
}

// The one-byte archive (see `Consistency::wire_tag`). A derived archive of
// an enum with a data-carrying variant is two bytes, which would have moved
// every later field of `Request` and `Reply`: old clients' frames would no
// longer decode.
impl rkyv::Archive for Consistency {
    type Archived = u8;
    type Resolver = ();

    fn resolve(&self, _: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        out.write(self.wire_tag());
    }
}

impl<S: rkyv::rancor::Fallible + ?Sized> rkyv::Serialize<S> for Consistency {
    fn serialize(&self, _: &mut S) -> Result<Self::Resolver, S::Error> {
        Ok(())
    }
}

impl<D: rkyv::rancor::Fallible + ?Sized> rkyv::Deserialize<Consistency, D> for u8 {
    fn deserialize(&self, _: &mut D) -> Result<Consistency, D::Error> {
        Ok(Consistency::from_wire_tag(*self))
    }
}

impl Consistency {
    /// The level's family, for labels that must stay few (metrics): every
    /// `replicas-N` is `replicas`.
    pub fn family(self) -> &'static str {
        match self {
            Consistency::Local => "local",
            Consistency::Leader => "leader",
            Consistency::Quorum => "quorum",
            Consistency::All => "all",
            Consistency::Replicas(_) => "replicas",
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`: widths and alignment apply (`{:>9}` in tables).
        match self {
            Consistency::Replicas(n) => f.pad(&format!("replicas-{n}")),
            other => f.pad(other.family()),
        }
    }
}

/// The levels' names, for error messages.
const EXPECTED_LEVELS: &str = "expected local, leader, quorum, all or replicas-N (N from 1 to 251; also replicas(N), replicas:N)";

impl std::str::FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => return Ok(Consistency::Local),
            "leader" => return Ok(Consistency::Leader),
            "quorum" => return Ok(Consistency::Quorum),
            "all" => return Ok(Consistency::All),
            _ => {}
        }
        let count = s
            .strip_prefix("replicas-")
            .or_else(|| s.strip_prefix("replicas:"))
            .or_else(|| {
                s.strip_prefix("replicas(")
                    .and_then(|rest| rest.strip_suffix(')'))
            });
        let Some(count) = count else {
            return Err(format!("unknown consistency {s:?}: {EXPECTED_LEVELS}"));
        };
        // Digits only (`u8::from_str` would also take a sign).
        let n = if !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) {
            count.parse::<u8>().ok()
        } else {
            None
        };
        match n {
            Some(n) if (1..=MAX_REPLICAS_LEVEL).contains(&n) => Ok(Consistency::Replicas(n)),
            _ => Err(format!("bad replica count in {s:?}: {EXPECTED_LEVELS}")),
        }
    }
}

// The text form in configuration files and JSON (`client.toml`'s
// `default_consistency`, the harness's histories): the same strings as
// `Display`/`FromStr`, so `replicas-2` is a plain string there too.
impl serde::Serialize for Consistency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Consistency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// First frame of every connection.
#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Hello {
    pub version: u16,
    /// The cluster's access token (from `client.toml`).
    pub token: Vec<u8>,
}

#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum HelloReply {
    /// Authenticated; `node` and `region` name the server.
    Ok { node: String, region: String },
    /// Refused (wrong or missing token, unsupported version, too many
    /// connections); the server closes the connection after sending this.
    Refused(WireError),
}

/// One request.
#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Request {
    pub op: Operation,
    pub consistency: Consistency,
    /// How long the server may work on the request before answering
    /// `Timeout`. 0 means the server's default.
    pub timeout_ms: u32,
}

#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Operation {
    /// Add `delta` (may be negative) to a counter.
    CounterIncr {
        key: Vec<u8>,
        delta: i64,
    },
    CounterRead {
        key: Vec<u8>,
    },
    SetAdd {
        key: Vec<u8>,
        members: Vec<Vec<u8>>,
    },
    SetRemove {
        key: Vec<u8>,
        members: Vec<Vec<u8>>,
    },
    SetRead {
        key: Vec<u8>,
    },
    RegisterPut {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    RegisterGet {
        key: Vec<u8>,
    },
    /// Delete an object: a counter forgets what this replica observed, a set
    /// removes every observed member, a register writes a tombstone.
    Delete {
        kind: Kind,
        key: Vec<u8>,
    },
    /// The serving node's view of the cluster (`meridian status`).
    Status,
    /// Shift the serving node's physical clock by `offset_ms`. Only accepted
    /// by a node started with `--allow-debug-clock`; `InvalidArgument`
    /// otherwise. Used by the partition harness's clock nemesis.
    DebugClockOffset {
        offset_ms: i64,
    },
    /// What `key` holds under each type, and which of `members` its set
    /// holds: one cheap read of the contacted replica at `local` (the RESP
    /// door's type check), the join of the replicas' states above it.
    Inspect {
        key: Vec<u8>,
        members: Vec<Vec<u8>>,
    },
    /// A page of the keys the serving node stores, in its store order, at
    /// every level (a node stores only the keys placement gives it: keys
    /// pinned to other regions are listed only where they are stored).
    /// `cursor`: empty to start, else the previous page's; `prefix`: only
    /// keys starting with it; `count`: most objects visited (0:
    /// [`DEFAULT_SCAN_COUNT`], capped at [`MAX_SCAN_COUNT`]). Answered
    /// with [`ReplyValue::Keys`]. Every key present from the first page to
    /// the last is listed at least once.
    Scan {
        cursor: Vec<u8>,
        prefix: Vec<u8>,
        count: u32,
    },
    /// A page of a set's members in ascending byte order, after `after`
    /// (`None`: from the first), served by one replica (`local` or
    /// `leader`). `count`: most members (0 or more than
    /// [`MAX_SET_PAGE_MEMBERS`]: that many), and at most
    /// [`MAX_SET_PAGE_BYTES`] of them. Answered with
    /// [`ReplyValue::SetPage`]: lists sets of any size, which a
    /// [`Operation::SetRead`] cannot past one reply.
    SetPage {
        key: Vec<u8>,
        after: Option<Vec<u8>>,
        count: u32,
    },
    /// Map: set fields (`HSET`); a field named twice takes its last value.
    MapSet {
        key: Vec<u8>,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Map: add `delta` to a field's integer value (`HINCRBY`); answers
    /// the new value. A field holding a non-integer is refused.
    MapIncr {
        key: Vec<u8>,
        field: Vec<u8>,
        delta: i64,
    },
    /// Map: remove fields (only the writes the replica has observed).
    MapRemove {
        key: Vec<u8>,
        fields: Vec<Vec<u8>>,
    },
    /// Map: every field and value.
    MapRead {
        key: Vec<u8>,
    },
    /// [`Operation::Inspect`] that also reports the map: its field count
    /// and the values of `fields` (the RESP door's type check and point
    /// reads, `HGET`, `HEXISTS`, ...).
    Probe {
        key: Vec<u8>,
        members: Vec<Vec<u8>>,
        fields: Vec<Vec<u8>>,
    },
    /// Register write with a time to live (`SET … EX|PX|EXAT|PXAT|KEEPTTL`):
    /// [`Ttl::Expire`] sets a deadline, [`Ttl::Keep`] keeps the register's
    /// TTL, [`Ttl::Persist`] clears it (what [`Operation::RegisterPut`]
    /// does). Answered like `RegisterPut`.
    RegisterPutTtl {
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: Ttl,
    },
    /// Sets a deadline on an object of any type (`EXPIRE` family). The
    /// node computes it from its own clock; a deadline at or before its
    /// now expires the object at once. Concurrent deadlines all fire (the
    /// shortest wins). Answered with [`ReplyValue::Ttl`] after it.
    Expire {
        kind: Kind,
        key: Vec<u8>,
        deadline: Deadline,
    },
    /// Removes the object's TTL (`PERSIST`): only the deadlines the
    /// serving replica has seen (a concurrent one still fires). Answered
    /// with [`ReplyValue::Ttl`] after it.
    Persist {
        kind: Kind,
        key: Vec<u8>,
    },
    /// The object's time to live (`TTL`, `PTTL`): [`ReplyValue::Ttl`].
    Ttl {
        kind: Kind,
        key: Vec<u8>,
    },
}

/// When an object expires, as a request gives it: the node turns it into
/// a Unix-milliseconds deadline with its own clock, never the client's.
#[derive(Clone, Copy, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Deadline {
    /// This many milliseconds after the node's now (`EX`, `PX`, `EXPIRE`).
    In(u64),
    /// At this Unix time in milliseconds (`EXAT`, `PXAT`, `EXPIREAT`).
    At(u64),
}

impl Deadline {
    /// `duration` from the serving node's now (whole milliseconds, rounded
    /// up so a sub-millisecond TTL is not "now").
    pub fn after(duration: std::time::Duration) -> Deadline {
        let ms =
            duration.as_millis() + u128::from(!duration.subsec_nanos().is_multiple_of(1_000_000));
        Deadline::In(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// At `time` (a time before the Unix epoch is the epoch: expired).
    pub fn at(time: std::time::SystemTime) -> Deadline {
        let ms = time
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Deadline::At(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

/// What a register write does to the register's time to live.
#[derive(Clone, Copy, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Ttl {
    /// Keep it (`SET … KEEPTTL`).
    Keep,
    /// Clear it (a plain `SET`).
    Persist,
    /// Set this deadline (`SET … EX|PX|EXAT|PXAT`).
    Expire(Deadline),
}

impl Operation {
    /// Whether the operation changes state (writes are never retried by the
    /// client on its own: a timed-out write may have taken effect).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Operation::CounterIncr { .. }
                | Operation::SetAdd { .. }
                | Operation::SetRemove { .. }
                | Operation::RegisterPut { .. }
                | Operation::Delete { .. }
                | Operation::DebugClockOffset { .. }
                | Operation::MapSet { .. }
                | Operation::MapIncr { .. }
                | Operation::MapRemove { .. }
                | Operation::RegisterPutTtl { .. }
                | Operation::Expire { .. }
                | Operation::Persist { .. }
        )
    }

    /// The key the operation names, if it names one.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Operation::CounterIncr { key, .. }
            | Operation::CounterRead { key }
            | Operation::SetAdd { key, .. }
            | Operation::SetRemove { key, .. }
            | Operation::SetRead { key }
            | Operation::RegisterPut { key, .. }
            | Operation::RegisterGet { key }
            | Operation::Delete { key, .. }
            | Operation::Inspect { key, .. }
            | Operation::SetPage { key, .. }
            | Operation::MapSet { key, .. }
            | Operation::MapIncr { key, .. }
            | Operation::MapRemove { key, .. }
            | Operation::MapRead { key }
            | Operation::Probe { key, .. }
            | Operation::RegisterPutTtl { key, .. }
            | Operation::Expire { key, .. }
            | Operation::Persist { key, .. }
            | Operation::Ttl { key, .. } => Some(key),
            Operation::Status | Operation::DebugClockOffset { .. } | Operation::Scan { .. } => None,
        }
    }
}

/// A request over a size limit: the client refuses to send it and the node
/// refuses it before doing any work (as `InvalidArgument`, definite).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("key of {len} bytes exceeds the {MAX_KEY_BYTES}-byte limit")]
    Key { len: usize },
    #[error("set member #{number} is {len} bytes, over the {MAX_VALUE_BYTES}-byte limit")]
    Member { number: usize, len: usize },
    #[error("{count} members in one operation, over the {MAX_MEMBERS_PER_OP}-member limit")]
    Members { count: usize },
    #[error("members total {total} bytes, over the {MAX_OBJECT_BYTES}-byte object limit")]
    MembersBytes { total: usize },
    #[error("register value is {len} bytes, over the {MAX_VALUE_BYTES}-byte limit")]
    Value { len: usize },
    #[error("{what} of {len} bytes exceeds its {max}-byte limit")]
    Cursor {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("field #{number} is {len} bytes, over the {MAX_FIELD_BYTES}-byte limit")]
    Field { number: usize, len: usize },
}

/// Largest map field name, in bytes: a field is never larger than a key
/// (the engine's `MAX_FIELD_BYTES`, the same number). Field values are
/// held to [`MAX_VALUE_BYTES`] like set members.
pub const MAX_FIELD_BYTES: usize = MAX_KEY_BYTES;

/// The field-name rule of map requests: each name within
/// [`MAX_FIELD_BYTES`] (counts and value sizes go through [`check_parts`]).
pub fn check_fields(names: impl Iterator<Item = usize>) -> Result<(), LimitError> {
    for (i, len) in names.enumerate() {
        if len > MAX_FIELD_BYTES {
            return Err(LimitError::Field { number: i + 1, len });
        }
    }
    Ok(())
}

/// The cursor and prefix limits of the paged reads ([`Operation::Scan`],
/// [`Operation::SetPage`]), on their lengths.
fn check_paging(op: PagingParts) -> Result<(), LimitError> {
    let over = |what, len, max| {
        if len > max {
            Err(LimitError::Cursor { what, len, max })
        } else {
            Ok(())
        }
    };
    match op {
        PagingParts::Scan { cursor, prefix } => {
            over("scan cursor", cursor, MAX_SCAN_CURSOR_BYTES)?;
            over("scan prefix", prefix, MAX_KEY_BYTES)
        }
        PagingParts::SetPage { after } => over("set page cursor", after, MAX_VALUE_BYTES),
        PagingParts::None => Ok(()),
    }
}

/// The lengths [`check_paging`] checks.
enum PagingParts {
    Scan { cursor: usize, prefix: usize },
    SetPage { after: usize },
    None,
}

/// The size rule both [`check`] and [`check_archived`] apply, on an
/// operation's parts: the key's length, the members' lengths (set adds,
/// removes and inspections) and a register value's length. For callers
/// that hold the parts without an [`Operation`] (no copy to build one).
pub fn check_parts(
    key_len: usize,
    members: Option<(usize, impl Iterator<Item = usize>)>,
    value_len: Option<usize>,
) -> Result<(), LimitError> {
    if key_len > MAX_KEY_BYTES {
        return Err(LimitError::Key { len: key_len });
    }
    if let Some((count, lens)) = members {
        if count > MAX_MEMBERS_PER_OP {
            return Err(LimitError::Members { count });
        }
        let mut total = 0usize;
        for (i, len) in lens.enumerate() {
            if len > MAX_VALUE_BYTES {
                return Err(LimitError::Member { number: i + 1, len });
            }
            total += len;
        }
        if total > MAX_OBJECT_BYTES {
            return Err(LimitError::MembersBytes { total });
        }
    }
    match value_len {
        Some(len) if len > MAX_VALUE_BYTES => Err(LimitError::Value { len }),
        _ => Ok(()),
    }
}

/// Checks an operation against the size limits: the one check the client
/// runs before sending and the node runs before any work.
pub fn check(op: &Operation) -> Result<(), LimitError> {
    let members = match op {
        Operation::SetAdd { members, .. }
        | Operation::SetRemove { members, .. }
        | Operation::Inspect { members, .. } => Some((members.len(), members.iter().map(Vec::len))),
        _ => None,
    };
    let value = match op {
        Operation::RegisterPut { value, .. } | Operation::RegisterPutTtl { value, .. } => {
            Some(value.len())
        }
        _ => None,
    };
    check_paging(match op {
        Operation::Scan { cursor, prefix, .. } => PagingParts::Scan {
            cursor: cursor.len(),
            prefix: prefix.len(),
        },
        Operation::SetPage { after, .. } => PagingParts::SetPage {
            after: after.as_ref().map_or(0, Vec::len),
        },
        _ => PagingParts::None,
    })?;
    match op {
        // Values as members (count, sizes, total), names as fields.
        Operation::MapSet { pairs, .. } => {
            check_fields(pairs.iter().map(|(f, _)| f.len()))?;
            let lens = pairs.iter().map(|(f, v)| f.len() + v.len());
            check_parts(
                op.key().map_or(0, <[u8]>::len),
                Some((pairs.len(), lens)),
                None,
            )?;
            let values = pairs.iter().map(|(_, v)| v.len());
            return check_parts(0, Some((pairs.len(), values)), None);
        }
        Operation::MapIncr { field, .. } => check_fields(std::iter::once(field.len()))?,
        Operation::MapRemove { fields, .. } | Operation::Probe { fields, .. } => {
            check_fields(fields.iter().map(Vec::len))?;
            check_parts(0, Some((fields.len(), fields.iter().map(Vec::len))), None)?;
        }
        _ => {}
    }
    let members = match op {
        Operation::Probe { members, .. } => Some((members.len(), members.iter().map(Vec::len))),
        _ => members,
    };
    check_parts(op.key().map_or(0, <[u8]>::len), members, value)
}

/// [`check`] on a request's archived (undecoded) bytes: a set request's
/// member count and sizes are known before anything is decoded, so a
/// 20 MiB frame of empty members (2.6 million of them, ~63 MiB decoded) is
/// refused without being decoded.
pub fn check_archived(op: &ArchivedOperation) -> Result<(), LimitError> {
    let key_len = match op {
        ArchivedOperation::CounterIncr { key, .. }
        | ArchivedOperation::CounterRead { key }
        | ArchivedOperation::SetAdd { key, .. }
        | ArchivedOperation::SetRemove { key, .. }
        | ArchivedOperation::SetRead { key }
        | ArchivedOperation::RegisterPut { key, .. }
        | ArchivedOperation::RegisterGet { key }
        | ArchivedOperation::Delete { key, .. }
        | ArchivedOperation::Inspect { key, .. }
        | ArchivedOperation::SetPage { key, .. }
        | ArchivedOperation::MapSet { key, .. }
        | ArchivedOperation::MapIncr { key, .. }
        | ArchivedOperation::MapRemove { key, .. }
        | ArchivedOperation::MapRead { key }
        | ArchivedOperation::Probe { key, .. }
        | ArchivedOperation::RegisterPutTtl { key, .. }
        | ArchivedOperation::Expire { key, .. }
        | ArchivedOperation::Persist { key, .. }
        | ArchivedOperation::Ttl { key, .. } => key.len(),
        ArchivedOperation::Status
        | ArchivedOperation::DebugClockOffset { .. }
        | ArchivedOperation::Scan { .. } => 0,
    };
    let members = match op {
        ArchivedOperation::SetAdd { members, .. }
        | ArchivedOperation::SetRemove { members, .. }
        | ArchivedOperation::Inspect { members, .. } => {
            Some((members.len(), members.iter().map(|m| m.len())))
        }
        _ => None,
    };
    let value = match op {
        ArchivedOperation::RegisterPut { value, .. }
        | ArchivedOperation::RegisterPutTtl { value, .. } => Some(value.len()),
        _ => None,
    };
    check_paging(match op {
        ArchivedOperation::Scan { cursor, prefix, .. } => PagingParts::Scan {
            cursor: cursor.len(),
            prefix: prefix.len(),
        },
        ArchivedOperation::SetPage { after, .. } => PagingParts::SetPage {
            after: after.as_ref().map_or(0, |a| a.len()),
        },
        _ => PagingParts::None,
    })?;
    match op {
        ArchivedOperation::MapSet { pairs, .. } => {
            check_fields(pairs.iter().map(|p| p.0.len()))?;
            let lens = pairs.iter().map(|p| p.0.len() + p.1.len());
            check_parts(key_len, Some((pairs.len(), lens)), None)?;
            let values = pairs.iter().map(|p| p.1.len());
            return check_parts(0, Some((pairs.len(), values)), None);
        }
        ArchivedOperation::MapIncr { field, .. } => check_fields(std::iter::once(field.len()))?,
        ArchivedOperation::MapRemove { fields, .. } => {
            check_fields(fields.iter().map(|f| f.len()))?;
            check_parts(
                0,
                Some((fields.len(), fields.iter().map(|f| f.len()))),
                None,
            )?;
        }
        ArchivedOperation::Probe {
            members, fields, ..
        } => {
            check_fields(fields.iter().map(|f| f.len()))?;
            check_parts(
                0,
                Some((fields.len(), fields.iter().map(|f| f.len()))),
                None,
            )?;
            return check_parts(
                key_len,
                Some((members.len(), members.iter().map(|m| m.len()))),
                None,
            );
        }
        _ => {}
    }
    check_parts(key_len, members, value)
}

/// A hybrid-logical-clock timestamp: `time` is a 64-bit NTP timestamp
/// (32.32 fixed point seconds since 1900) with the low 4 bits used as a
/// logical counter; `node` is the incarnation id that issued it. Ordered by
/// `(time, node)`, which is how last-writer-wins registers pick a winner.
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
pub struct WireHlc {
    pub time: u64,
    pub node: u64,
}

/// The answer to one request.
#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Response {
    Ok(Reply),
    Err(WireError),
}

#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Reply {
    /// Name of the node that served the request (the coordinator; for
    /// `leader` requests, the leader).
    pub node: String,
    /// The level the request was served at.
    pub consistency: Consistency,
    pub value: ReplyValue,
}

#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ReplyValue {
    /// A counter's value (reads, and the new value after an increment or delete).
    Counter {
        value: i64,
    },
    /// A set's members in ascending byte order, and how many there are
    /// (reads, and the new state after an add, remove or delete). A write's
    /// answer about a set of more than 1024 members or 64 KiB of members
    /// carries the count alone (`members` empty): `members.len() == count`
    /// tells a complete listing.
    Set {
        members: Vec<Vec<u8>>,
        count: u64,
    },
    /// A register's value (`None`: never written, or deleted) and the HLC
    /// timestamp of the write that produced it (`None` only if never written).
    Register {
        value: Option<Vec<u8>>,
        hlc: Option<WireHlc>,
    },
    Status(NodeStatus),
    /// The operation has no value to report (e.g. `DebugClockOffset`).
    Done,
    /// What a key holds under each type (`Inspect`).
    Inspect {
        /// The register's value (`None`: absent or deleted).
        register: Option<Vec<u8>>,
        /// The counter's value (0 when absent).
        counter: i64,
        /// How many members the set holds.
        set_count: u64,
        /// For each member asked about, whether the set holds it.
        members_present: Vec<bool>,
    },
    /// A page of a key scan ([`Operation::Scan`]): the keys listed, and
    /// the cursor of the next page (`None`: the scan is complete). A page
    /// may be empty while the scan is not complete.
    Keys {
        keys: Vec<ScanKey>,
        cursor: Option<Vec<u8>>,
    },
    /// A page of a set's members ([`Operation::SetPage`]), ascending, and
    /// the `after` of the next page (the last member listed) while more
    /// follow.
    SetPage {
        members: Vec<Vec<u8>>,
        next: Option<Vec<u8>>,
    },
    /// A map's fields with their values, ascending by field, and how many
    /// fields it holds. A read lists every field; a write's answer lists
    /// the fields it touched that are present after it (`fields.len() ==
    /// count` tells a complete listing). After `MapIncr`, the field's new
    /// value is listed.
    Map {
        fields: Vec<(Vec<u8>, Vec<u8>)>,
        count: u64,
    },
    /// What a key holds under each type (`Probe`): [`ReplyValue::Inspect`]
    /// and the map.
    Probe {
        register: Option<Vec<u8>>,
        counter: i64,
        set_count: u64,
        members_present: Vec<bool>,
        /// How many fields the map holds.
        map_count: u64,
        /// For each field asked about, its value (`None`: absent).
        map_values: Vec<Option<Vec<u8>>>,
    },
    /// An object's time to live (`Ttl`, and after `Expire`/`Persist`),
    /// by the serving node's clock.
    Ttl {
        /// Whether the object is present (what a read would show).
        exists: bool,
        /// Its next deadline, Unix milliseconds (`None`: no TTL).
        deadline_ms: Option<u64>,
        /// Milliseconds from the node's now to that deadline.
        remaining_ms: Option<u64>,
    },
}

/// One key a scan lists: the object `(kind, key)`. A key holding two
/// kinds (concurrent writes of two types) is listed once per kind.
#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ScanKey {
    pub kind: Kind,
    pub key: Vec<u8>,
}

/// A node's view of the cluster, for `meridian status`.
#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub region: String,
    /// Current incarnation id (changes after an unclean restart).
    pub incarnation: u64,
    pub uptime_ms: u64,
    pub log_bytes: u64,
    pub deltas_originated: u64,
    pub deltas_applied: u64,
    pub peers: Vec<PeerStatus>,
}

#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PeerStatus {
    pub node: String,
    pub region: String,
    pub connected: bool,
    /// Deltas this node has that the peer has not acknowledged.
    pub lag_deltas: u64,
    /// Age of the oldest delta the peer has not acknowledged, in ms.
    pub lag_ms: u64,
    /// Peer's clock minus ours, estimated from its messages, in ms.
    pub clock_offset_ms: i64,
    /// Deltas from this peer deferred because their timestamp was too far ahead.
    pub deferred_deltas: u64,
}

/// Errors a server reports. `Unavailable`, `WrongType`, `InvalidArgument`,
/// `Unauthorized` and `Overloaded` are *definite*: the request had no effect.
/// `Timeout` and `Internal` are *indeterminate*: a write may still take effect.
#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum WireError {
    /// Fewer replicas reachable than the level needs; nothing was attempted.
    Unavailable {
        needed: u32,
        reachable: u32,
    },
    /// The deadline passed with `acked` of `needed` durable acknowledgements.
    Timeout {
        acked: u32,
        needed: u32,
    },
    WrongType {
        message: String,
    },
    InvalidArgument {
        message: String,
    },
    Unauthorized {
        message: String,
    },
    /// A limit (connections, in-flight requests) refused the request.
    Overloaded {
        message: String,
    },
    Internal {
        message: String,
    },
}

impl WireError {
    /// Whether the request certainly had no effect.
    pub fn is_definite(&self) -> bool {
        !matches!(self, WireError::Timeout { .. } | WireError::Internal { .. })
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Unavailable { needed, reachable } => write!(
                f,
                "unavailable: needed {needed} replicas, {reachable} reachable"
            ),
            WireError::Timeout { acked, needed } => write!(
                f,
                "timed out with {acked} of {needed} acknowledgements (the write may still take effect)"
            ),
            WireError::WrongType { message } => write!(f, "wrong type: {message}"),
            WireError::InvalidArgument { message } => write!(f, "invalid argument: {message}"),
            WireError::Unauthorized { message } => write!(f, "unauthorized: {message}"),
            WireError::Overloaded { message } => write!(f, "overloaded: {message}"),
            WireError::Internal { message } => write!(f, "internal error: {message}"),
        }
    }
}

/// A payload that failed validation.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Encodes `msg` as a frame: 4-byte little-endian length, then the archive.
pub fn encode<T>(msg: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
{
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(msg)
        .expect("serializing into a growable buffer cannot fail");
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// Validates and decodes one frame's payload (without the length prefix).
pub fn decode<T>(payload: &[u8]) -> Result<T, DecodeError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    if payload.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::TooLarge {
            len: payload.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    rkyv::from_bytes::<T, rkyv::rancor::Error>(payload)
        .map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// Reads a frame's length prefix and checks it against `max`.
pub fn frame_len(prefix: [u8; 4], max: usize) -> Result<usize, DecodeError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > max {
        return Err(DecodeError::TooLarge { len, max });
    }
    Ok(len)
}

/// Why [`read_frame`] got no frame.
#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    /// The stream ended, was reset, or the connection was lost.
    #[error("{0}")]
    Read(#[from] quinn::ReadExactError),
    /// The length prefix is over the limit: nothing more was read.
    #[error("{0}")]
    Length(#[from] DecodeError),
}

/// Reads one `[len][payload]` frame from a QUIC stream, refusing (without
/// reading or allocating it) a payload over `max` bytes. The one frame
/// reader of the client protocol, used by the client and the node.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Vec<u8>, ReadFrameError> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await?;
    let len = frame_len(prefix, max)?;
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload).await?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let req = Request {
            op: Operation::SetAdd {
                key: b"cart".to_vec(),
                members: vec![b"apple".to_vec(), vec![0xff, 0x00]],
            },
            consistency: Consistency::Quorum,
            timeout_ms: 250,
        };
        let frame = encode(&req);
        let len = frame_len(frame[..4].try_into().unwrap(), MAX_FRAME_BYTES).unwrap();
        assert_eq!(len, frame.len() - 4);
        let back: Request = decode(&frame[4..]).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for garbage in [
            &b""[..],
            &b"\x01"[..],
            &[0xffu8; 64][..],
            &b"not an archive at all, just some text"[..],
        ] {
            assert!(decode::<Request>(garbage).is_err());
            assert!(decode::<Response>(garbage).is_err());
        }
    }

    #[test]
    fn truncated_frames_are_rejected() {
        let frame = encode(&Response::Ok(Reply {
            node: "us-east-1".into(),
            consistency: Consistency::Local,
            value: ReplyValue::Counter { value: 7 },
        }));
        for cut in 0..frame.len() - 4 {
            // Any strict prefix of a payload must fail validation or decode
            // to something else; it must never panic.
            let _ = decode::<Response>(&frame[4..4 + cut]);
        }
    }

    #[test]
    fn oversized_length_prefix_is_refused() {
        let prefix = ((MAX_FRAME_BYTES + 1) as u32).to_le_bytes();
        assert!(matches!(
            frame_len(prefix, MAX_FRAME_BYTES),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The `meridian/2` frame layout, pinned: a change to it must bump
    /// [`ALPN`] (see there). The `Replicas` level kept `Consistency` one
    /// byte (a derived two-byte one would have shifted `timeout_ms` and
    /// `value`); the map, scan and set-page operations made the operation
    /// 24 bytes (`meridian/1`: the same request was
    /// `170000006b00feffffff01000000050000000000000003fa000000`), and the
    /// expiry operations (`RegisterPutTtl`: key, value and a TTL) 26
    /// (unreleased in this round, so still `meridian/2`).
    #[test]
    fn frames_keep_the_meridian_2_layout() {
        let req = Request {
            op: Operation::CounterIncr {
                key: b"k".to_vec(),
                delta: 5,
            },
            consistency: Consistency::All,
            timeout_ms: 250,
        };
        let req_hex = "210000006b00feffffff0100000005000000000000000000000000000000000003fa000000";
        assert_eq!(hex(&encode(&req)), req_hex);
        let rep = Response::Ok(Reply {
            node: "n1".into(),
            consistency: Consistency::Quorum,
            value: ReplyValue::Counter { value: 7 },
        });
        let rep_hex = "4b000000006e31ffffffffffff020007000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";
        assert_eq!(hex(&encode(&rep)), rep_hex);
        let bytes = |h: &str| -> Vec<u8> {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        };
        assert_eq!(decode::<Request>(&bytes(req_hex)[4..]).unwrap(), req);
        assert_eq!(decode::<Response>(&bytes(rep_hex)[4..]).unwrap(), rep);
    }

    #[test]
    fn expiry_operations_round_trip_and_are_held_to_the_limits() {
        let ops = [
            Operation::RegisterPutTtl {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ttl: Ttl::Expire(Deadline::In(2_000)),
            },
            Operation::RegisterPutTtl {
                key: b"k".to_vec(),
                value: Vec::new(),
                ttl: Ttl::Keep,
            },
            Operation::Expire {
                kind: Kind::Map,
                key: b"h".to_vec(),
                deadline: Deadline::At(1_700_000_000_000),
            },
            Operation::Persist {
                kind: Kind::Set,
                key: b"s".to_vec(),
            },
            Operation::Ttl {
                kind: Kind::Counter,
                key: b"c".to_vec(),
            },
        ];
        for op in ops {
            assert!(
                op.is_write() != matches!(op, Operation::Ttl { .. }),
                "{op:?}"
            );
            assert!(op.key().is_some());
            let req = Request {
                op,
                consistency: Consistency::Quorum,
                timeout_ms: 0,
            };
            let bytes = encode(&req);
            assert_eq!(decode::<Request>(&bytes[4..]).unwrap(), req);
        }
        let reply = Response::Ok(Reply {
            node: "n".into(),
            consistency: Consistency::Local,
            value: ReplyValue::Ttl {
                exists: true,
                deadline_ms: Some(5),
                remaining_ms: Some(3),
            },
        });
        assert_eq!(decode::<Response>(&encode(&reply)[4..]).unwrap(), reply);
        let big = Operation::RegisterPutTtl {
            key: b"k".to_vec(),
            value: vec![0; MAX_VALUE_BYTES + 1],
            ttl: Ttl::Persist,
        };
        assert!(matches!(check(&big), Err(LimitError::Value { .. })));
        let long_key = Operation::Expire {
            kind: Kind::Register,
            key: vec![0; MAX_KEY_BYTES + 1],
            deadline: Deadline::In(1),
        };
        assert!(matches!(check(&long_key), Err(LimitError::Key { .. })));
        // Sub-millisecond TTLs round up: never "now" by accident.
        assert_eq!(
            Deadline::after(std::time::Duration::from_micros(1)),
            Deadline::In(1)
        );
        assert_eq!(
            Deadline::at(std::time::UNIX_EPOCH + std::time::Duration::from_millis(7)),
            Deadline::At(7)
        );
    }

    #[test]
    fn every_level_round_trips_on_the_wire() {
        let mut levels = vec![
            Consistency::Local,
            Consistency::Leader,
            Consistency::Quorum,
            Consistency::All,
        ];
        levels.extend((1..=MAX_REPLICAS_LEVEL).map(Consistency::Replicas));
        for level in levels {
            let req = Request {
                op: Operation::Status,
                consistency: level,
                timeout_ms: 9,
            };
            let back: Request = decode(&encode(&req)[4..]).unwrap();
            assert_eq!(back, req, "{level}");
        }
        // Every byte names a level: no wire tag is a decoding error, and
        // the tags of the four original levels never moved.
        for tag in 0..=u8::MAX {
            assert_eq!(Consistency::from_wire_tag(tag).wire_tag(), tag);
        }
        assert_eq!(Consistency::All.wire_tag(), 3);
        assert_eq!(Consistency::Replicas(1).wire_tag(), 4);
        // A count that cannot be served encodes (no panic) as a level the
        // node refuses.
        for bad in [0, MAX_REPLICAS_LEVEL + 1, u8::MAX] {
            let req = Request {
                op: Operation::Status,
                consistency: Consistency::Replicas(bad),
                timeout_ms: 0,
            };
            let back: Request = decode(&encode(&req)[4..]).unwrap();
            assert_eq!(back.consistency, Consistency::Replicas(0));
            assert!(!back.consistency.is_valid());
        }
    }

    #[test]
    fn levels_parse_and_print() {
        for (text, level) in [
            ("local", Consistency::Local),
            ("leader", Consistency::Leader),
            ("quorum", Consistency::Quorum),
            ("all", Consistency::All),
            ("replicas-2", Consistency::Replicas(2)),
            ("replicas(2)", Consistency::Replicas(2)),
            ("replicas:3", Consistency::Replicas(3)),
            ("replicas-251", Consistency::Replicas(251)),
        ] {
            assert_eq!(text.parse::<Consistency>(), Ok(level), "{text}");
        }
        assert_eq!(Consistency::Replicas(2).to_string(), "replicas-2");
        assert_eq!(Consistency::Quorum.to_string(), "quorum");
        assert_eq!(
            format!("[{:>12}]", Consistency::Replicas(2)),
            "[  replicas-2]"
        );
        for bad in [
            "replicas-0",
            "replicas-252",
            "replicas-",
            "replicas-+2",
            "replicas--2",
            "replicas(2",
            "replicas2",
            "replicas-2x",
            "Quorum",
            "",
        ] {
            let e = bad.parse::<Consistency>().unwrap_err();
            assert!(e.contains("replicas-N"), "{bad}: {e}");
        }
    }

    #[test]
    fn levels_are_strings_in_config_files() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct File {
            default_consistency: Consistency,
        }
        let file = File {
            default_consistency: Consistency::Replicas(3),
        };
        assert_eq!(
            toml::to_string(&file).unwrap().trim(),
            "default_consistency = \"replicas-3\""
        );
        let parse = |text: &str| toml::from_str::<File>(text).map(|f| f.default_consistency);
        assert_eq!(
            parse("default_consistency = \"replicas(3)\""),
            Ok(Consistency::Replicas(3))
        );
        assert_eq!(
            parse("default_consistency = \"quorum\""),
            Ok(Consistency::Quorum)
        );
        assert!(parse("default_consistency = \"replicas-0\"").is_err());
    }

    #[test]
    fn replica_arithmetic() {
        use Consistency::*;
        let needed = |l: Consistency, n| l.replicas_needed(n).unwrap();
        assert_eq!(needed(Quorum, 1), 1);
        assert_eq!(needed(Quorum, 2), 2);
        assert_eq!(needed(Quorum, 3), 2);
        assert_eq!(needed(Quorum, 4), 3);
        assert_eq!(needed(Quorum, 5), 3);
        assert_eq!(needed(All, 5), 5);
        assert_eq!(needed(Local, 5), 1);
        assert_eq!(needed(Leader, 3), 1);
        assert_eq!(needed(Local, 0), 0);
        assert_eq!(needed(Replicas(1), 3), 1);
        assert_eq!(needed(Replicas(2), 3), 2);
        assert_eq!(needed(Replicas(3), 3), 3);
        assert_eq!(
            Replicas(4).replicas_needed(3),
            Err(ReplicaCountError {
                asked: 4,
                replicas: 3
            })
        );
        assert!(Replicas(0).replicas_needed(3).is_err());
        assert!(Replicas(1).replicas_needed(0).is_err());
        for n in 1..=9usize {
            // Any two quorums of the same replica set intersect.
            assert!(Consistency::intersects(Quorum, Quorum, n), "n={n}");
            assert!(Consistency::intersects(Local, All, n), "n={n}");
            assert!(Consistency::intersects(All, Local, n), "n={n}");
            // replicas-r reads see replicas-w writes exactly when r + w > n.
            for w in 1..=n as u8 {
                for r in 1..=n as u8 {
                    assert_eq!(
                        Consistency::intersects(Replicas(w), Replicas(r), n),
                        usize::from(r + w) > n,
                        "n={n} w={w} r={r}"
                    );
                }
            }
            // replicas-n is all; replicas-Q is quorum.
            let q = needed(Quorum, n) as u8;
            assert_eq!(needed(Replicas(n as u8), n), needed(All, n));
            assert!(Consistency::intersects(Replicas(q), Quorum, n));
            // An impossible count promises nothing.
            assert!(!Consistency::intersects(Replicas(n as u8 + 1), All, n));
        }
        assert!(!Consistency::intersects(Local, Local, 3));
        assert!(!Consistency::intersects(Quorum, Local, 3));
        assert!(!Consistency::intersects(Replicas(1), Replicas(2), 3));
        assert!(Consistency::intersects(Replicas(2), Replicas(2), 3));
    }

    #[test]
    fn paged_reads_bound_their_cursors_and_prefixes() {
        let scan = |cursor: usize, prefix: usize| Operation::Scan {
            cursor: vec![1; cursor],
            prefix: vec![b'p'; prefix],
            count: 0,
        };
        assert!(check(&scan(MAX_SCAN_CURSOR_BYTES, MAX_KEY_BYTES)).is_ok());
        assert!(matches!(
            check(&scan(MAX_SCAN_CURSOR_BYTES + 1, 0)),
            Err(LimitError::Cursor { .. })
        ));
        assert!(check(&scan(0, MAX_KEY_BYTES + 1)).is_err());
        let page = |after: usize| Operation::SetPage {
            key: b"k".to_vec(),
            after: Some(vec![0; after]),
            count: 0,
        };
        assert!(check(&page(MAX_VALUE_BYTES)).is_ok());
        assert!(check(&page(MAX_VALUE_BYTES + 1)).is_err());
        // The archived check agrees (what a node runs before decoding).
        for op in [
            scan(MAX_SCAN_CURSOR_BYTES + 1, 0),
            page(MAX_VALUE_BYTES + 1),
            scan(1, 1),
        ] {
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&op).unwrap();
            let archived = rkyv::access::<ArchivedOperation, rkyv::rancor::Error>(&bytes).unwrap();
            assert_eq!(check_archived(archived), check(&op));
        }
    }

    #[test]
    fn map_requests_are_held_to_the_limits_before_and_after_decoding() {
        let over = |op: Operation| {
            let archived = encode(&Request {
                op: op.clone(),
                consistency: Consistency::Local,
                timeout_ms: 0,
            });
            let archived =
                rkyv::access::<ArchivedRequest, rkyv::rancor::Error>(&archived[4..]).unwrap();
            (check(&op), check_archived(&archived.op))
        };
        let big_field = vec![b'f'; MAX_FIELD_BYTES + 1];
        let big_value = vec![b'v'; MAX_VALUE_BYTES + 1];
        let key = b"h".to_vec();
        for op in [
            Operation::MapSet {
                key: key.clone(),
                pairs: vec![(big_field.clone(), b"v".to_vec())],
            },
            Operation::MapIncr {
                key: key.clone(),
                field: big_field.clone(),
                delta: 1,
            },
            Operation::MapRemove {
                key: key.clone(),
                fields: vec![big_field.clone()],
            },
            Operation::Probe {
                key: key.clone(),
                members: Vec::new(),
                fields: vec![big_field.clone()],
            },
        ] {
            let (plain, archived) = over(op.clone());
            assert!(
                matches!(plain, Err(LimitError::Field { number: 1, .. })),
                "{op:?}"
            );
            assert_eq!(plain, archived, "{op:?}");
        }
        let (plain, archived) = over(Operation::MapSet {
            key: key.clone(),
            pairs: vec![(b"f".to_vec(), big_value)],
        });
        assert!(matches!(plain, Err(LimitError::Member { number: 1, .. })));
        assert_eq!(plain, archived);
        let (plain, archived) = over(Operation::MapSet {
            key,
            pairs: vec![(b"f".to_vec(), b"v".to_vec())],
        });
        assert_eq!((plain, archived), (Ok(()), Ok(())));
    }

    #[test]
    fn definite_errors_are_classified() {
        assert!(
            WireError::Unavailable {
                needed: 2,
                reachable: 1
            }
            .is_definite()
        );
        assert!(
            !WireError::Timeout {
                acked: 1,
                needed: 2
            }
            .is_definite()
        );
    }
}
