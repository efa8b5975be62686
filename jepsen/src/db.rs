//! The database interface the workloads drive, and an in-memory reference
//! implementation for the harness's own tests.
//!
//! [`Db`] is implemented by [`crate::client_db::ClientDb`] on top of
//! `meridian-client` (one client pinned per node). Every call names the node
//! to send the request to, the consistency level and a timeout, and returns
//! an [`Outcome`] that maps directly to Jepsen's completion types:
//!
//! * `Ok(value, meta)`: took effect; `meta.node` is the node that served the
//!   request (the reply's `node`: coordinator, or leader for `leader`) and
//!   `meta.hlc` a register value's timestamp.
//! * `Fail(error)`: certainly had no effect — only for errors the server
//!   defines as definite (`Unavailable`, `WrongType`, `InvalidArgument`,
//!   `Unauthorized`, `Overloaded`; `is_definite()` in the client), and for
//!   reads, which have no effect anyway.
//! * `Info(error)`: indeterminate — timeouts, lost connections, `Internal`:
//!   the write may still take effect. When in doubt, `Info`: a `Fail` that had
//!   an effect is reported by the checkers as `fail-visible`.
//!
//! Methods return `impl Future + Send` (no `async_trait`), so workers can be
//! spawned on a multi-threaded runtime; implementations may write `async fn`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::history::{Hlc, Level};

/// What the server said beyond the value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// The node that served the request.
    pub node: Option<String>,
    /// Register values: the write's HLC timestamp.
    pub hlc: Option<Hlc>,
}

/// The result of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    Ok(T, Meta),
    Fail(String),
    Info(String),
}

impl<T> Outcome<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Ok(v, m) => Outcome::Ok(f(v), m),
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Info(e) => Outcome::Info(e),
        }
    }
}

/// The error of a [`Db`] that has no maps.
pub const NO_MAPS: &str = "this database interface has no map operations";

/// One command of the expiry workload: Redis string commands with TTLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiryCmd<'a> {
    /// `SET key value [PX ttl_ms]`: without a TTL, clears any TTL (Redis).
    Set { value: &'a str, ttl_ms: Option<u64> },
    /// `GET key`.
    Get,
    /// `PEXPIRE key ttl_ms`.
    Expire { ttl_ms: u64 },
    /// `PERSIST key`.
    Persist,
}

/// The reply to an [`ExpiryCmd`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpiryReply {
    /// `SET`'s `OK`.
    Done,
    /// `GET`: the value, `None` = no key (never written, or expired).
    Value(Option<String>),
    /// `PEXPIRE`/`PERSIST`: whether the node says it changed a TTL (Redis's
    /// `1`/`0`; informational, the checker does not rely on it).
    Changed(bool),
}

/// The operations the workloads need.
pub trait Db: Send + Sync + 'static {
    /// Adds `delta` (may be negative) to a PN-counter; Ok carries the new
    /// value the serving node reported (informational).
    fn counter_add(
        &self,
        node: &str,
        key: &str,
        delta: i64,
        level: Level,
        timeout: Duration,
    ) -> impl Future<Output = Outcome<i64>> + Send;

    fn counter_read(
        &self,
        node: &str,
        key: &str,
        level: Level,
        timeout: Duration,
    ) -> impl Future<Output = Outcome<i64>> + Send;

    fn set_add(
        &self,
        node: &str,
        key: &str,
        member: &str,
        level: Level,
        timeout: Duration,
    ) -> impl Future<Output = Outcome<()>> + Send;

    fn set_remove(
        &self,
        node: &str,
        key: &str,
        member: &str,
        level: Level,
        timeout: Duration,
    ) -> impl Future<Output = Outcome<()>> + Send;

    /// The members exactly as returned (duplicates kept: the checker looks
    /// for them). Members that are not UTF-8 are passed lossily converted.
    fn set_read(
        &self,
        node: &str,
        key: &str,
        level: Level,
        timeout: Duration,
    ) -> impl Future<Output = Outcome<Vec<String>>> + Send;

    /// Ok's meta carries the timestamp the write was stamped with.
    fn register_write(
        &self,
        node: &str,
        key: &str,
        value: &str,
        level: Level,
        timeout: Duration,
    ) -> impl Future<Output = Outcome<()>> + Send;

    /// `None` = never written. Ok's meta carries the value's timestamp.
    fn register_read(
        &self,
        node: &str,
        key: &str,
        level: Level,
        timeout: Duration,
    ) -> impl Future<Output = Outcome<Option<String>>> + Send;

    /// Map `HSET key field value`. A store without maps (the RESP door's
    /// [`crate::resp_db::RespDb`], which `--workload map` refuses up front)
    /// fails definitely with [`NO_MAPS`].
    fn map_set(
        &self,
        node: &str,
        key: &str,
        field: &str,
        value: &str,
        level: Level,
        timeout: Duration,
    ) -> impl Future<Output = Outcome<()>> + Send;

    /// Map `HINCRBY key field delta`; Ok carries the field's new value the
    /// serving node reported (informational).
    fn map_incr(
        &self,
        node: &str,
        key: &str,
        field: &str,
        delta: i64,
        level: Level,
        timeout: Duration,
    ) -> impl Future<Output = Outcome<i64>> + Send;

    /// Map `HDEL key field`.
    fn map_remove(
        &self,
        node: &str,
        key: &str,
        field: &str,
        level: Level,
        timeout: Duration,
    ) -> impl Future<Output = Outcome<()>> + Send;

    /// Map `HGETALL key`: every field and its value (fields and values that
    /// are not UTF-8 lossily converted).
    fn map_read(
        &self,
        node: &str,
        key: &str,
        level: Level,
        timeout: Duration,
    ) -> impl Future<Output = Outcome<BTreeMap<String, String>>> + Send;

    /// One command of the expiry workload.
    fn expiry(
        &self,
        node: &str,
        key: &str,
        cmd: ExpiryCmd<'_>,
        level: Level,
        timeout: Duration,
    ) -> impl Future<Output = Outcome<ExpiryReply>> + Send;

    /// Sets the node's debug clock offset (the clock nemesis). Needs
    /// `meridian serve --allow-debug-clock`.
    fn set_clock_offset(
        &self,
        node: &str,
        offset_ms: i64,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// Deliberate bugs for [`MemoryDb`] (mutants), so tests can show the
/// checkers catch a misbehaving store end to end. All off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryBugs {
    /// Acknowledge every n-th counter add without applying it (lost update).
    pub drop_every_nth_counter_add: Option<u64>,
    /// Acknowledge every n-th set add without applying it.
    pub drop_every_nth_set_add: Option<u64>,
    /// Acknowledge every n-th register write without applying it.
    pub drop_every_nth_register_write: Option<u64>,
    /// Apply every n-th write (of any type) but answer it as indeterminate
    /// (`Info`, a timeout): not a bug by itself, the noise a lost
    /// acknowledged write could hide behind.
    pub info_every_nth_write: Option<u64>,
    /// Stale reads: every n-th read answers with the key's state from
    /// before its latest write.
    pub stale_every_nth_read: Option<u64>,
    /// Divergence: this node keeps its own copy of every key; writes it
    /// serves go only there, writes served elsewhere never reach it. The
    /// replicas never converge.
    pub diverge_node: Option<&'static str>,
    /// Resurrection: a removed set member comes back with the key's next add.
    pub resurrect_removed: bool,
    /// LWW inversion: a register write served by another node than the one
    /// that wrote the current value loses to that older value (the merge
    /// compares timestamps backwards); it is still acknowledged with its
    /// own, newer timestamp.
    pub lww_inversion: bool,
    /// Damaged large values: every n-th read that returns a large-workload
    /// payload returns it one byte short.
    pub corrupt_every_nth_large_read: Option<u64>,
    /// A store that bounds set replies without saying so: a set read
    /// returns members (in order) only while their bytes total at most
    /// this, and answers `Ok` as if that were the whole set.
    pub cap_set_read_bytes: Option<usize>,
    /// Lost field writes: acknowledge every n-th map `HSET` or `HINCRBY`
    /// without applying it.
    pub drop_every_nth_map_write: Option<u64>,
    /// `HDEL` acknowledged but not applied: a removed field stays.
    pub ignore_map_removes: bool,
    /// Expiries never happen: a value whose TTL passed is still read
    /// (resurrection).
    pub never_expire: bool,
    /// Expiries happen early: at a quarter of the TTL (a value lost while
    /// its TTL still runs).
    pub expire_early: bool,
}

/// One copy of every key.
#[derive(Clone, Debug, Default)]
struct Data {
    counters: BTreeMap<String, i64>,
    sets: BTreeMap<String, BTreeSet<String>>,
    /// value, its timestamp, the node that wrote it.
    registers: BTreeMap<String, (String, Hlc, String)>,
    /// key → field → (value, the node that wrote it).
    maps: BTreeMap<String, BTreeMap<String, (String, String)>>,
    /// Expiry workload: key → (value, its deadline if it has a TTL).
    ttl_registers: BTreeMap<String, (String, Option<Instant>)>,
}

#[derive(Debug, Default)]
struct MemState {
    data: Data,
    /// The diverging node's copy ([`MemoryBugs::diverge_node`]).
    island: Data,
    /// Each key's state before its latest write ([`MemoryBugs::stale_every_nth_read`]).
    before_last_write: Data,
    /// Set members removed, per key ([`MemoryBugs::resurrect_removed`]).
    removed: BTreeMap<String, BTreeSet<String>>,
    clock: u64,
    offsets: BTreeMap<String, i64>,
}

/// A single-copy, linearizable in-memory store: every operation is atomic
/// under one lock. Correct by construction (unless [`MemoryBugs`] are
/// enabled), which makes it the reference the harness's own end-to-end tests
/// run against. Register timestamps are `(a counter, the node's number)`
/// (the digits of its name, else 1).
#[derive(Debug, Default)]
pub struct MemoryDb {
    state: Mutex<MemState>,
    bugs: MemoryBugs,
    counter_adds: AtomicU64,
    set_adds: AtomicU64,
    register_writes: AtomicU64,
    writes: AtomicU64,
    reads: AtomicU64,
    large_reads: AtomicU64,
    map_writes: AtomicU64,
}

impl MemoryDb {
    pub fn new(bugs: MemoryBugs) -> MemoryDb {
        MemoryDb {
            bugs,
            ..MemoryDb::default()
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn meta(node: &str) -> Meta {
        Meta {
            node: Some(node.to_string()),
            hlc: None,
        }
    }

    /// Current clock offsets (tests).
    pub fn offsets(&self) -> BTreeMap<String, i64> {
        self.with(|s| s.offsets.clone())
    }

    fn islanded(&self, node: &str) -> bool {
        self.bugs.diverge_node == Some(node)
    }

    /// A write's answer: `Ok`, or `Info` for the n-th write when
    /// [`MemoryBugs::info_every_nth_write`] is set.
    fn answer<T>(&self, v: T, meta: Meta) -> Outcome<T> {
        if nth(&self.writes, self.bugs.info_every_nth_write) {
            Outcome::Info("timeout (MemoryBugs::info_every_nth_write)".into())
        } else {
            Outcome::Ok(v, meta)
        }
    }

    /// The copy a read of `key` on `node` sees.
    fn read_view<T>(&self, node: &str, f: impl Fn(&Data) -> Option<T>) -> Option<T> {
        let stale = nth(&self.reads, self.bugs.stale_every_nth_read);
        self.with(|s| {
            if self.islanded(node) {
                f(&s.island)
            } else if stale {
                f(&s.before_last_write).or_else(|| f(&s.data))
            } else {
                f(&s.data)
            }
        })
    }

    /// Applies a write to the copy `node` writes to, first remembering the
    /// key's state for stale reads.
    fn write<T>(&self, node: &str, key: &str, f: impl FnOnce(&mut Data) -> T) -> T {
        let island = self.islanded(node);
        self.with(|s| {
            if island {
                return f(&mut s.island);
            }
            let d = &s.data;
            let b = &mut s.before_last_write;
            match d.counters.get(key) {
                Some(v) => b.counters.insert(key.to_string(), *v),
                None => b.counters.insert(key.to_string(), 0),
            };
            b.sets.insert(
                key.to_string(),
                d.sets.get(key).cloned().unwrap_or_default(),
            );
            match d.registers.get(key) {
                Some(r) => {
                    b.registers.insert(key.to_string(), r.clone());
                }
                None => {
                    b.registers.remove(key);
                }
            }
            b.maps.insert(
                key.to_string(),
                d.maps.get(key).cloned().unwrap_or_default(),
            );
            match d.ttl_registers.get(key) {
                Some(r) => {
                    b.ttl_registers.insert(key.to_string(), r.clone());
                }
                None => {
                    b.ttl_registers.remove(key);
                }
            }
            f(&mut s.data)
        })
    }
}

/// A node's number for register timestamps: the digits of its name.
fn node_number(node: &str) -> u64 {
    node.chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(1)
}

impl MemoryDb {
    /// [`MemoryBugs::corrupt_every_nth_large_read`] on one value read.
    fn maybe_corrupt(&self, mut v: String) -> String {
        if v.starts_with("#L:") && nth(&self.large_reads, self.bugs.corrupt_every_nth_large_read) {
            v.pop();
        }
        v
    }
}

fn nth(counter: &AtomicU64, n: Option<u64>) -> bool {
    let i = counter.fetch_add(1, Ordering::SeqCst) + 1;
    n.is_some_and(|n| n > 0 && i.is_multiple_of(n))
}

impl Db for MemoryDb {
    async fn counter_add(
        &self,
        node: &str,
        key: &str,
        delta: i64,
        _: Level,
        _: Duration,
    ) -> Outcome<i64> {
        let drop = nth(&self.counter_adds, self.bugs.drop_every_nth_counter_add);
        let v = self.write(node, key, |d| {
            let c = d.counters.entry(key.to_string()).or_default();
            if !drop {
                *c += delta;
            }
            *c
        });
        tokio::task::yield_now().await;
        self.answer(v, Self::meta(node))
    }

    async fn counter_read(&self, node: &str, key: &str, _: Level, _: Duration) -> Outcome<i64> {
        let v = self
            .read_view(node, |d| d.counters.get(key).copied())
            .unwrap_or(0);
        Outcome::Ok(v, Self::meta(node))
    }

    async fn set_add(
        &self,
        node: &str,
        key: &str,
        member: &str,
        _: Level,
        _: Duration,
    ) -> Outcome<()> {
        let drop = nth(&self.set_adds, self.bugs.drop_every_nth_set_add);
        let back: BTreeSet<String> = if self.bugs.resurrect_removed {
            self.with(|s| s.removed.remove(key).unwrap_or_default())
        } else {
            BTreeSet::new()
        };
        self.write(node, key, |d| {
            let set = d.sets.entry(key.to_string()).or_default();
            set.extend(back);
            if !drop {
                set.insert(member.to_string());
            }
        });
        tokio::task::yield_now().await;
        self.answer((), Self::meta(node))
    }

    async fn set_remove(
        &self,
        node: &str,
        key: &str,
        member: &str,
        _: Level,
        _: Duration,
    ) -> Outcome<()> {
        let removed = self.write(node, key, |d| {
            d.sets.entry(key.to_string()).or_default().remove(member)
        });
        if removed && self.bugs.resurrect_removed {
            self.with(|s| {
                s.removed
                    .entry(key.to_string())
                    .or_default()
                    .insert(member.to_string())
            });
        }
        self.answer((), Self::meta(node))
    }

    async fn set_read(&self, node: &str, key: &str, _: Level, _: Duration) -> Outcome<Vec<String>> {
        let v: Vec<String> = self
            .read_view(node, |d| {
                d.sets.get(key).map(|m| m.iter().cloned().collect())
            })
            .unwrap_or_default();
        let mut v: Vec<String> = v.into_iter().map(|m| self.maybe_corrupt(m)).collect();
        if let Some(cap) = self.bugs.cap_set_read_bytes {
            let mut total = 0;
            v.retain(|m| {
                total += m.len();
                total <= cap
            });
        }
        Outcome::Ok(v, Self::meta(node))
    }

    async fn register_write(
        &self,
        node: &str,
        key: &str,
        value: &str,
        _: Level,
        _: Duration,
    ) -> Outcome<()> {
        let drop = nth(
            &self.register_writes,
            self.bugs.drop_every_nth_register_write,
        );
        let hlc = self.with(|s| {
            s.clock += 1;
            Hlc {
                time: s.clock,
                node: node_number(node),
            }
        });
        let invert = self.bugs.lww_inversion;
        self.write(node, key, |d| {
            let older_wins = invert
                && d.registers
                    .get(key)
                    .is_some_and(|(_, _, writer)| writer != node);
            if !drop && !older_wins {
                d.registers
                    .insert(key.to_string(), (value.to_string(), hlc, node.to_string()));
            }
        });
        tokio::task::yield_now().await;
        self.answer(
            (),
            Meta {
                node: Some(node.to_string()),
                hlc: Some(hlc),
            },
        )
    }

    async fn register_read(
        &self,
        node: &str,
        key: &str,
        _: Level,
        _: Duration,
    ) -> Outcome<Option<String>> {
        let r = self.read_view(node, |d| d.registers.get(key).cloned());
        match r {
            Some((v, h, _)) => Outcome::Ok(
                Some(self.maybe_corrupt(v)),
                Meta {
                    node: Some(node.to_string()),
                    hlc: Some(h),
                },
            ),
            None => Outcome::Ok(None, Self::meta(node)),
        }
    }

    async fn map_set(
        &self,
        node: &str,
        key: &str,
        field: &str,
        value: &str,
        _: Level,
        _: Duration,
    ) -> Outcome<()> {
        let drop = nth(&self.map_writes, self.bugs.drop_every_nth_map_write);
        let invert = self.bugs.lww_inversion;
        self.write(node, key, |d| {
            let m = d.maps.entry(key.to_string()).or_default();
            let older_wins = invert && m.get(field).is_some_and(|(_, writer)| writer != node);
            if !drop && !older_wins {
                m.insert(field.to_string(), (value.to_string(), node.to_string()));
            }
        });
        tokio::task::yield_now().await;
        self.answer((), Self::meta(node))
    }

    async fn map_incr(
        &self,
        node: &str,
        key: &str,
        field: &str,
        delta: i64,
        _: Level,
        _: Duration,
    ) -> Outcome<i64> {
        let drop = nth(&self.map_writes, self.bugs.drop_every_nth_map_write);
        let v = self.write(node, key, |d| {
            let m = d.maps.entry(key.to_string()).or_default();
            let old: i64 = m.get(field).and_then(|(v, _)| v.parse().ok()).unwrap_or(0);
            let new = if drop { old } else { old + delta };
            m.insert(field.to_string(), (new.to_string(), node.to_string()));
            new
        });
        tokio::task::yield_now().await;
        self.answer(v, Self::meta(node))
    }

    async fn map_remove(
        &self,
        node: &str,
        key: &str,
        field: &str,
        _: Level,
        _: Duration,
    ) -> Outcome<()> {
        let ignore = self.bugs.ignore_map_removes;
        self.write(node, key, |d| {
            if !ignore {
                d.maps.entry(key.to_string()).or_default().remove(field);
            }
        });
        self.answer((), Self::meta(node))
    }

    async fn map_read(
        &self,
        node: &str,
        key: &str,
        _: Level,
        _: Duration,
    ) -> Outcome<BTreeMap<String, String>> {
        let v = self
            .read_view(node, |d| {
                d.maps.get(key).map(|m| {
                    m.iter()
                        .map(|(f, (v, _))| (f.clone(), v.clone()))
                        .collect::<BTreeMap<_, _>>()
                })
            })
            .unwrap_or_default();
        Outcome::Ok(v, Self::meta(node))
    }

    /// TTLs on the real (monotonic) clock, so the store is linearizable
    /// with expiry at the deadline; clock offsets do not move deadlines.
    async fn expiry(
        &self,
        node: &str,
        key: &str,
        cmd: ExpiryCmd<'_>,
        _: Level,
        _: Duration,
    ) -> Outcome<ExpiryReply> {
        let now = Instant::now();
        let bugs = self.bugs;
        let deadline = move |ttl_ms: u64| {
            let ms = if bugs.expire_early {
                ttl_ms / 4
            } else {
                ttl_ms
            };
            now + Duration::from_millis(ms)
        };
        let live =
            move |e: &(String, Option<Instant>)| bugs.never_expire || e.1.is_none_or(|d| d > now);
        match cmd {
            ExpiryCmd::Get => {
                let v = self
                    .read_view(node, |d| d.ttl_registers.get(key).cloned())
                    .filter(|e| live(e))
                    .map(|e| e.0);
                Outcome::Ok(ExpiryReply::Value(v), Self::meta(node))
            }
            ExpiryCmd::Set { value, ttl_ms } => {
                self.write(node, key, |d| {
                    d.ttl_registers
                        .insert(key.to_string(), (value.to_string(), ttl_ms.map(deadline)))
                });
                tokio::task::yield_now().await;
                self.answer(ExpiryReply::Done, Self::meta(node))
            }
            ExpiryCmd::Expire { ttl_ms } => {
                let changed = self.write(node, key, |d| match d.ttl_registers.get_mut(key) {
                    Some(e) if live(e) => {
                        e.1 = Some(deadline(ttl_ms));
                        true
                    }
                    _ => false,
                });
                self.answer(ExpiryReply::Changed(changed), Self::meta(node))
            }
            ExpiryCmd::Persist => {
                let changed = self.write(node, key, |d| match d.ttl_registers.get_mut(key) {
                    Some(e) if live(e) && e.1.is_some() => {
                        e.1 = None;
                        true
                    }
                    _ => false,
                });
                self.answer(ExpiryReply::Changed(changed), Self::meta(node))
            }
        }
    }

    async fn set_clock_offset(&self, node: &str, offset_ms: i64) -> Result<(), String> {
        self.with(|s| s.offsets.insert(node.to_string(), offset_ms));
        Ok(())
    }
}
