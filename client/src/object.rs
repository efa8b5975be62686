//! Typed handles on objects ([`Counter`], [`Set`], [`Register`], [`Map`]) and the
//! per-request builder they return ([`RequestBuilder`]).
//!
//! A handle is a client clone plus a key: cheap, `Send`, and free to keep
//! around. Each operation returns a builder; `.consistency(..)` and
//! `.timeout(..)` adjust it, and awaiting it sends the request:
//!
//! ```no_run
//! # async fn f(client: meridian_client::Client) -> Result<(), meridian_client::Error> {
//! use std::time::Duration;
//! use meridian_client::Consistency;
//!
//! let likes = client.counter("likes");
//! let now = likes
//!     .incr(1)
//!     .consistency(Consistency::Quorum)
//!     .timeout(Duration::from_millis(800))
//!     .await?;
//! println!("{} likes (as seen by {})", now.value, now.node);
//! # Ok(()) }
//! ```
//!
//! Builders are `'static` futures once awaited (they own their data), so
//! `tokio::spawn(handle.incr(1).into_future())` works.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use crate::Error;
use crate::client::Client;
use crate::config::{MAX_TIMEOUT, check_timeout};
use crate::wire::{
    Consistency, Deadline, Kind, Operation, ReplyValue, Request, ScanKey, Ttl, WireHlc,
};

/// The result of a request: the value, which node served it and at which
/// consistency level. (Writes return the object's new value too.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read<T> {
    pub value: T,
    /// The node that served the request (for `leader`, the leader).
    pub node: String,
    /// The level the request was served at.
    pub consistency: Consistency,
}

/// A set's state.
///
/// A read ([`Set::members`]) lists every member. A write ([`Set::add`],
/// [`Set::remove`], [`Set::delete`]) answers with the set's new state too,
/// but bounded: past 1024 members or 64 KiB of members the node answers
/// with the count alone (`members` empty, `count` exact), so that adding one
/// member to a large set does not send the whole set back.
/// [`is_complete`](Self::is_complete) tells which.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetValue {
    /// The members, in ascending byte order (empty in a write's answer
    /// about a large set: see [`is_complete`](Self::is_complete)).
    pub members: Vec<Vec<u8>>,
    /// How many members there are.
    pub count: u64,
}

impl SetValue {
    /// Whether [`members`](Self::members) lists every member (always for
    /// reads; for writes only on small sets).
    pub fn is_complete(&self) -> bool {
        self.members.len() as u64 == self.count
    }

    /// Whether `member` is in the set (binary search: members are sorted).
    /// Only meaningful when [`is_complete`](Self::is_complete).
    pub fn contains(&self, member: &[u8]) -> bool {
        self.members
            .binary_search_by(|m| m.as_slice().cmp(member))
            .is_ok()
    }
}

/// One page of a key scan ([`Client::scan`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys listed, each with its type (a key holding two types, after
    /// concurrent writes of both, is listed once per type).
    pub keys: Vec<ScanKey>,
    /// Pass it to the next [`Client::scan`]; `None`: the scan is complete.
    pub cursor: Option<Vec<u8>>,
}

/// One page of a set's members ([`Set::page`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetPage {
    /// Members in ascending byte order.
    pub members: Vec<Vec<u8>>,
    /// The last member listed while more follow: pass it as the next
    /// page's `after`. `None`: this page ends the set.
    pub next: Option<Vec<u8>>,
}

/// A last-writer-wins register's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegisterValue {
    /// `None`: never written, or deleted.
    pub value: Option<Vec<u8>>,
    /// Timestamp of the write that produced this state; `None` only if the
    /// register was never written. Later-stamped writes win.
    pub hlc: Option<WireHlc>,
}

/// A map's state (a Redis hash).
///
/// A read ([`Map::all`]) lists every field. A write answers with the
/// fields it touched that are present after it (after [`Map::incr`], the
/// field's new value) and the map's field count;
/// [`is_complete`](Self::is_complete) tells a complete listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapValue {
    /// Fields and values, in ascending byte order of the field.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// How many fields the map holds.
    pub count: u64,
}

impl MapValue {
    /// Whether [`fields`](Self::fields) lists every field (always for reads).
    pub fn is_complete(&self) -> bool {
        self.fields.len() as u64 == self.count
    }

    /// The value of `field`, if listed (binary search: fields are sorted).
    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        self.fields
            .binary_search_by(|(f, _)| f.as_slice().cmp(field))
            .ok()
            .map(|i| self.fields[i].1.as_slice())
    }
}

/// An object's time to live, by the serving node's clock ([`Register::ttl`]
/// and the other handles' `ttl`, and the answer to `expire`/`persist`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TtlValue {
    /// Whether the object is present (what a read would show).
    pub exists: bool,
    /// Its next deadline, in Unix milliseconds (`None`: no TTL).
    pub deadline_ms: Option<u64>,
    /// How long until that deadline, by the serving node's clock.
    pub remaining: Option<Duration>,
}

impl FromReply for TtlValue {
    fn from_reply(value: ReplyValue) -> Option<Self> {
        match value {
            ReplyValue::Ttl {
                exists,
                deadline_ms,
                remaining_ms,
            } => Some(TtlValue {
                exists,
                deadline_ms,
                remaining: remaining_ms.map(Duration::from_millis),
            }),
            _ => None,
        }
    }
}

/// A value type a reply can be turned into. Sealed: implemented for the
/// value types of this crate only.
pub trait FromReply: Sized + sealed::Sealed {
    #[doc(hidden)]
    fn from_reply(value: ReplyValue) -> Option<Self>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for i64 {}
    impl Sealed for super::SetValue {}
    impl Sealed for super::RegisterValue {}
    impl Sealed for super::KeyPage {}
    impl Sealed for super::SetPage {}
    impl Sealed for super::MapValue {}
    impl Sealed for super::TtlValue {}
}

impl FromReply for MapValue {
    fn from_reply(value: ReplyValue) -> Option<Self> {
        match value {
            ReplyValue::Map { fields, count } => Some(MapValue { fields, count }),
            _ => None,
        }
    }
}

impl FromReply for i64 {
    fn from_reply(value: ReplyValue) -> Option<Self> {
        match value {
            ReplyValue::Counter { value } => Some(value),
            _ => None,
        }
    }
}

impl FromReply for SetValue {
    fn from_reply(value: ReplyValue) -> Option<Self> {
        match value {
            ReplyValue::Set { members, count } => Some(SetValue { members, count }),
            _ => None,
        }
    }
}

impl FromReply for RegisterValue {
    fn from_reply(value: ReplyValue) -> Option<Self> {
        match value {
            ReplyValue::Register { value, hlc } => Some(RegisterValue { value, hlc }),
            _ => None,
        }
    }
}

impl FromReply for KeyPage {
    fn from_reply(value: ReplyValue) -> Option<Self> {
        match value {
            ReplyValue::Keys { keys, cursor } => Some(KeyPage { keys, cursor }),
            _ => None,
        }
    }
}

impl FromReply for SetPage {
    fn from_reply(value: ReplyValue) -> Option<Self> {
        match value {
            ReplyValue::SetPage { members, next } => Some(SetPage { members, next }),
            _ => None,
        }
    }
}

/// One request, not sent yet. Await it to send it (it implements
/// [`IntoFuture`]); adjust it first with [`consistency`](Self::consistency)
/// and [`timeout`](Self::timeout). Dropping it sends nothing.
#[must_use = "a request does nothing until it is awaited"]
pub struct RequestBuilder<T> {
    client: Client,
    op: Operation,
    consistency: Option<Consistency>,
    timeout: Option<Duration>,
    value: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for RequestBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("op", &self.op)
            .field("consistency", &self.consistency)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<T> RequestBuilder<T> {
    pub(crate) fn new(client: &Client, op: Operation) -> Self {
        RequestBuilder {
            client: client.clone(),
            op,
            consistency: None,
            timeout: None,
            value: PhantomData,
        }
    }

    /// The consistency level of this request (default: the client's, see
    /// [`ClientConfig::with_consistency`](crate::ClientConfig::with_consistency)).
    pub fn consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = Some(consistency);
        self
    }

    /// How long the server may work on this request before answering
    /// [`Error::Timeout`] (default: the client's). The client itself gives up
    /// [`DEADLINE_MARGIN`](crate::DEADLINE_MARGIN) later. Must be between
    /// 1 ms and [`MAX_TIMEOUT`]; sub-millisecond parts round up.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The raw request this builder sends: the client's default consistency
    /// filled in, `timeout_ms` 0 (the client's default) unless set.
    pub fn to_request(&self) -> Result<Request, Error> {
        let timeout_ms = match self.timeout {
            None => 0, // the client's default
            Some(timeout) => check_timeout(timeout, "timeout").map_err(|_| {
                Error::InvalidArgument(format!(
                    "timeout must be between 1 ms and {} ms, not {timeout:?}",
                    MAX_TIMEOUT.as_millis()
                ))
            })?,
        };
        Ok(Request {
            op: self.op.clone(),
            consistency: self
                .consistency
                .unwrap_or(self.client.default_consistency()),
            timeout_ms,
        })
    }
}

impl RequestBuilder<RegisterValue> {
    /// A register write ([`Register::put`]) that expires `ttl` after the
    /// serving node's now (`SET … PX`). Not for other requests: they are
    /// left as they are.
    pub fn ttl(self, ttl: Duration) -> Self {
        self.with_ttl(Ttl::Expire(Deadline::after(ttl)))
    }

    /// A register write that expires at `deadline` (`SET … PXAT` for
    /// [`Deadline::At`]).
    pub fn expire(self, deadline: Deadline) -> Self {
        self.with_ttl(Ttl::Expire(deadline))
    }

    /// A register write that keeps the register's time to live (`SET …
    /// KEEPTTL`); a plain [`Register::put`] clears it, as Redis's `SET`.
    pub fn keep_ttl(self) -> Self {
        self.with_ttl(Ttl::Keep)
    }

    fn with_ttl(mut self, ttl: Ttl) -> Self {
        self.op = match self.op {
            Operation::RegisterPut { key, value }
            | Operation::RegisterPutTtl { key, value, .. } => {
                Operation::RegisterPutTtl { key, value, ttl }
            }
            other => other,
        };
        self
    }
}

impl<T: FromReply + Send + 'static> IntoFuture for RequestBuilder<T> {
    type Output = Result<Read<T>, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'static>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let request = self.to_request()?;
            let reply = self.client.execute(request).await?;
            let node = reply.node;
            let consistency = reply.consistency;
            // `execute` checked the reply's shape against the operation.
            let value = T::from_reply(reply.value)
                .ok_or_else(|| Error::Protocol(format!("{node} answered with another type")))?;
            Ok(Read {
                value,
                node,
                consistency,
            })
        })
    }
}

/// A PN-counter: increments and decrements from every region add up; a
/// delete forgets what the deleting node had seen (concurrent increments
/// survive).
#[derive(Clone, Debug)]
pub struct Counter {
    client: Client,
    key: Vec<u8>,
}

impl Counter {
    pub(crate) fn new(client: Client, key: Vec<u8>) -> Self {
        Counter { client, key }
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Adds `delta` (negative to decrement); returns the new value. Not
    /// idempotent: after an indeterminate error, re-read rather than retry.
    pub fn incr(&self, delta: i64) -> RequestBuilder<i64> {
        RequestBuilder::new(
            &self.client,
            Operation::CounterIncr {
                key: self.key.clone(),
                delta,
            },
        )
    }

    /// The current value (0 if never written).
    pub fn read(&self) -> RequestBuilder<i64> {
        RequestBuilder::new(
            &self.client,
            Operation::CounterRead {
                key: self.key.clone(),
            },
        )
    }

    /// Resets what the serving node has observed; returns the new value.
    pub fn delete(&self) -> RequestBuilder<i64> {
        RequestBuilder::new(&self.client, delete(Kind::Counter, &self.key))
    }

    /// Expires the counter at `deadline` (by the serving node's clock; one
    /// at or before its now expires it at once). Concurrent deadlines all
    /// fire: the shortest wins. Answers with the TTL after it.
    pub fn expire(&self, deadline: Deadline) -> RequestBuilder<TtlValue> {
        RequestBuilder::new(&self.client, expire(Kind::Counter, &self.key, deadline))
    }

    /// Removes the TTLs the serving node has seen (a concurrent one still
    /// fires). Answers with the TTL after it.
    pub fn persist(&self) -> RequestBuilder<TtlValue> {
        RequestBuilder::new(&self.client, persist(Kind::Counter, &self.key))
    }

    /// Whether the counter is present, and its time to live.
    pub fn ttl(&self) -> RequestBuilder<TtlValue> {
        RequestBuilder::new(&self.client, ttl(Kind::Counter, &self.key))
    }
}

/// An add-wins set of byte strings: a remove cancels only the adds it has
/// seen, so a concurrent add wins.
#[derive(Clone, Debug)]
pub struct Set {
    client: Client,
    key: Vec<u8>,
}

impl Set {
    pub(crate) fn new(client: Client, key: Vec<u8>) -> Self {
        Set { client, key }
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Adds `members`; returns the new state (only the count for a large
    /// set: see [`SetValue`]). Idempotent.
    pub fn add<I>(&self, members: I) -> RequestBuilder<SetValue>
    where
        I: IntoIterator,
        I::Item: Into<Vec<u8>>,
    {
        RequestBuilder::new(
            &self.client,
            Operation::SetAdd {
                key: self.key.clone(),
                members: members.into_iter().map(Into::into).collect(),
            },
        )
    }

    /// Removes `members` (the adds of them the serving node has seen);
    /// returns the new state (only the count for a large set: see
    /// [`SetValue`]).
    pub fn remove<I>(&self, members: I) -> RequestBuilder<SetValue>
    where
        I: IntoIterator,
        I::Item: Into<Vec<u8>>,
    {
        RequestBuilder::new(
            &self.client,
            Operation::SetRemove {
                key: self.key.clone(),
                members: members.into_iter().map(Into::into).collect(),
            },
        )
    }

    /// The members, sorted.
    pub fn members(&self) -> RequestBuilder<SetValue> {
        RequestBuilder::new(
            &self.client,
            Operation::SetRead {
                key: self.key.clone(),
            },
        )
    }

    /// One page of the members, in ascending byte order, after `after`
    /// (`None`: from the first): at most `count` members (0 or more than
    /// [`MAX_SET_PAGE_MEMBERS`](crate::wire::MAX_SET_PAGE_MEMBERS): that
    /// many) and about [`MAX_SET_PAGE_BYTES`](crate::wire::MAX_SET_PAGE_BYTES)
    /// of them. Pass [`SetPage::next`] as the next `after` until it is
    /// `None` to list a set of any size, which [`members`](Self::members)
    /// cannot past one reply (about 19 MiB). A member present from the
    /// first page to the last is listed exactly once (pages follow byte
    /// order). Served by one replica: `local` or `leader` (a `quorum` or
    /// `all` page is refused, [`Error::InvalidArgument`]).
    pub fn page(&self, after: Option<Vec<u8>>, count: u32) -> RequestBuilder<SetPage> {
        RequestBuilder::new(
            &self.client,
            Operation::SetPage {
                key: self.key.clone(),
                after,
                count,
            },
        )
    }

    /// Removes every member the serving node has seen; returns the new state.
    pub fn delete(&self) -> RequestBuilder<SetValue> {
        RequestBuilder::new(&self.client, delete(Kind::Set, &self.key))
    }

    /// Expires the set at `deadline` (by the serving node's clock; one
    /// at or before its now expires it at once). Concurrent deadlines all
    /// fire: the shortest wins. Answers with the TTL after it.
    pub fn expire(&self, deadline: Deadline) -> RequestBuilder<TtlValue> {
        RequestBuilder::new(&self.client, expire(Kind::Set, &self.key, deadline))
    }

    /// Removes the TTLs the serving node has seen (a concurrent one still
    /// fires). Answers with the TTL after it.
    pub fn persist(&self) -> RequestBuilder<TtlValue> {
        RequestBuilder::new(&self.client, persist(Kind::Set, &self.key))
    }

    /// Whether the set is present, and its time to live.
    pub fn ttl(&self) -> RequestBuilder<TtlValue> {
        RequestBuilder::new(&self.client, ttl(Kind::Set, &self.key))
    }
}

/// A last-writer-wins register: the write with the larger hybrid-logical-
/// clock timestamp wins, everywhere.
#[derive(Clone, Debug)]
pub struct Register {
    client: Client,
    key: Vec<u8>,
}

impl Register {
    pub(crate) fn new(client: Client, key: Vec<u8>) -> Self {
        Register { client, key }
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Writes `value`; returns the register's state after the write.
    pub fn put(&self, value: impl Into<Vec<u8>>) -> RequestBuilder<RegisterValue> {
        RequestBuilder::new(
            &self.client,
            Operation::RegisterPut {
                key: self.key.clone(),
                value: value.into(),
            },
        )
    }

    /// The current value.
    pub fn get(&self) -> RequestBuilder<RegisterValue> {
        RequestBuilder::new(
            &self.client,
            Operation::RegisterGet {
                key: self.key.clone(),
            },
        )
    }

    /// Writes a timestamped tombstone; returns the state after it.
    pub fn delete(&self) -> RequestBuilder<RegisterValue> {
        RequestBuilder::new(&self.client, delete(Kind::Register, &self.key))
    }

    /// Expires the register at `deadline` (by the serving node's clock; one
    /// at or before its now expires it at once). Concurrent deadlines all
    /// fire: the shortest wins. Answers with the TTL after it.
    pub fn expire(&self, deadline: Deadline) -> RequestBuilder<TtlValue> {
        RequestBuilder::new(&self.client, expire(Kind::Register, &self.key, deadline))
    }

    /// Removes the TTLs the serving node has seen (a concurrent one still
    /// fires). Answers with the TTL after it.
    pub fn persist(&self) -> RequestBuilder<TtlValue> {
        RequestBuilder::new(&self.client, persist(Kind::Register, &self.key))
    }

    /// Whether the register is present, and its time to live.
    pub fn ttl(&self) -> RequestBuilder<TtlValue> {
        RequestBuilder::new(&self.client, ttl(Kind::Register, &self.key))
    }
}

/// A map of fields to byte-string values (a Redis hash). Concurrent writes
/// of one field: the larger hybrid-logical-clock timestamp wins, as for a
/// register; concurrent increments add up; a remove cancels only the
/// writes it has seen, so a concurrent write wins.
#[derive(Clone, Debug)]
pub struct Map {
    client: Client,
    key: Vec<u8>,
}

impl Map {
    pub(crate) fn new(client: Client, key: Vec<u8>) -> Self {
        Map { client, key }
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Sets fields (a field named twice takes its last value); answers
    /// with them and the map's field count.
    pub fn set<I, F, V>(&self, pairs: I) -> RequestBuilder<MapValue>
    where
        I: IntoIterator<Item = (F, V)>,
        F: Into<Vec<u8>>,
        V: Into<Vec<u8>>,
    {
        RequestBuilder::new(
            &self.client,
            Operation::MapSet {
                key: self.key.clone(),
                pairs: pairs
                    .into_iter()
                    .map(|(f, v)| (f.into(), v.into()))
                    .collect(),
            },
        )
    }

    /// Adds `delta` to a field's integer value (an absent field counts as
    /// 0); answers with the field's new value. Refused (definite) if the
    /// field holds something other than an integer or the result overflows.
    /// Not idempotent: after an indeterminate error, re-read.
    pub fn incr(&self, field: impl Into<Vec<u8>>, delta: i64) -> RequestBuilder<MapValue> {
        RequestBuilder::new(
            &self.client,
            Operation::MapIncr {
                key: self.key.clone(),
                field: field.into(),
                delta,
            },
        )
    }

    /// Removes fields (the writes of them the serving node has seen).
    pub fn remove<I>(&self, fields: I) -> RequestBuilder<MapValue>
    where
        I: IntoIterator,
        I::Item: Into<Vec<u8>>,
    {
        RequestBuilder::new(
            &self.client,
            Operation::MapRemove {
                key: self.key.clone(),
                fields: fields.into_iter().map(Into::into).collect(),
            },
        )
    }

    /// Every field and value.
    pub fn all(&self) -> RequestBuilder<MapValue> {
        RequestBuilder::new(
            &self.client,
            Operation::MapRead {
                key: self.key.clone(),
            },
        )
    }

    /// Removes every field the serving node has seen.
    pub fn delete(&self) -> RequestBuilder<MapValue> {
        RequestBuilder::new(&self.client, delete(Kind::Map, &self.key))
    }

    /// Expires the map at `deadline` (by the serving node's clock; one
    /// at or before its now expires it at once). Concurrent deadlines all
    /// fire: the shortest wins. Answers with the TTL after it.
    pub fn expire(&self, deadline: Deadline) -> RequestBuilder<TtlValue> {
        RequestBuilder::new(&self.client, expire(Kind::Map, &self.key, deadline))
    }

    /// Removes the TTLs the serving node has seen (a concurrent one still
    /// fires). Answers with the TTL after it.
    pub fn persist(&self) -> RequestBuilder<TtlValue> {
        RequestBuilder::new(&self.client, persist(Kind::Map, &self.key))
    }

    /// Whether the map is present, and its time to live.
    pub fn ttl(&self) -> RequestBuilder<TtlValue> {
        RequestBuilder::new(&self.client, ttl(Kind::Map, &self.key))
    }
}

fn delete(kind: Kind, key: &[u8]) -> Operation {
    Operation::Delete {
        kind,
        key: key.to_vec(),
    }
}

fn expire(kind: Kind, key: &[u8], deadline: Deadline) -> Operation {
    Operation::Expire {
        kind,
        key: key.to_vec(),
        deadline,
    }
}

fn persist(kind: Kind, key: &[u8]) -> Operation {
    Operation::Persist {
        kind,
        key: key.to_vec(),
    }
}

fn ttl(kind: Kind, key: &[u8]) -> Operation {
    Operation::Ttl {
        kind,
        key: key.to_vec(),
    }
}
