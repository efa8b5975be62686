//! [`Db`] on top of `meridian-client`: one client per node, **pinned** to it
//! (no failover), so a process's requests go exactly where the history says
//! and a node that is down shows up as that node's errors.
//!
//! Mapping (the client's own rules, docs/architecture.md §7 "errors are honest"):
//!
//! * `Ok(read)` → [`Outcome::Ok`] with `meta.node` = the node that served it
//!   (`Read::node`: the coordinator, or the leader for `leader`) and, for
//!   registers, `meta.hlc` = the value's timestamp.
//! * an error that [`Error::is_definite`] (`Unavailable`, `WrongType`,
//!   `InvalidArgument`, `Unauthorized`, `Overloaded`, `Config`, `Connect`:
//!   nothing was sent or nothing happened) → [`Outcome::Fail`];
//! * any other error (`Timeout`, `ConnectionLost`, `Internal`, `Protocol`)
//!   → [`Outcome::Info`]: a write may still take effect;
//! * reads have no effect, so every failed read is a `Fail`.
//!
//! A register write answers with the register's state after the write. When
//! that state holds the written value (the usual case: the write is stamped
//! by the node's HLC, which is past every timestamp the node holds), its
//! timestamp is the write's and goes into `meta.hlc`. Otherwise the write's
//! own timestamp is unknown and `meta.hlc` is left empty (the register
//! checker then calls the key undetermined rather than guess).
//!
//! [`Error::is_definite`]: meridian_client::Error::is_definite

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meridian_client::{
    Client, ClientConfig, Consistency, Deadline, Error, FromReply, Read, RequestBuilder, WireHlc,
};

use crate::db::{Db, ExpiryCmd, ExpiryReply, Meta, Outcome};
use crate::history::{Hlc, Level};

/// Whether the client wiring exists.
pub const WIRED: bool = true;

/// How long [`ClientDb::connect`] keeps trying to reach freshly started
/// nodes (a release node starts in well under a second; a slow CI machine
/// building certificates and opening sled may take a few).
pub const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// One pinned client per node.
#[derive(Debug)]
pub struct ClientDb {
    clients: BTreeMap<String, Client>,
}

fn consistency(l: Level) -> Consistency {
    l.consistency()
}

fn error_text(e: &Error) -> String {
    format!("{}: {e}", e.code())
}

/// Whether an operation can change state: that decides what its error means.
#[derive(Clone, Copy, Debug)]
enum Effect {
    /// Definite errors fail; the rest are indeterminate (the write may
    /// still take effect).
    Write,
    /// A read has no effect, so every error is a `Fail`.
    Read,
}

/// An operation's outcome: `f` turns the answer into the value and meta;
/// an error fails or is indeterminate as `effect` says.
fn outcome<T, U>(
    effect: Effect,
    r: Result<Read<T>, Error>,
    f: impl FnOnce(Read<T>) -> (U, Meta),
) -> Outcome<U> {
    match r {
        Ok(read) => {
            let (v, m) = f(read);
            Outcome::Ok(v, m)
        }
        Err(e) if matches!(effect, Effect::Write) && !e.is_definite() => {
            Outcome::Info(error_text(&e))
        }
        Err(e) => Outcome::Fail(error_text(&e)),
    }
}

fn served_by(node: String) -> Meta {
    Meta {
        node: Some(node),
        hlc: None,
    }
}

/// Meta for a register answer: the serving node and the value's timestamp.
fn stamped(node: String, hlc: Option<WireHlc>) -> Meta {
    Meta {
        node: Some(node),
        hlc: hlc.map(|h| Hlc {
            time: h.time,
            node: h.node,
        }),
    }
}

fn members(v: Vec<Vec<u8>>) -> Vec<String> {
    v.into_iter()
        .map(|m| String::from_utf8_lossy(&m).into_owned())
        .collect()
}

impl ClientDb {
    /// Connects one pinned client per node from the cluster's `client.toml`,
    /// retrying each for up to [`CONNECT_WAIT`] while the nodes start.
    pub async fn connect(client_config: &Path, nodes: &[String]) -> anyhow::Result<ClientDb> {
        let base = ClientConfig::load(client_config)
            .with_context(|| format!("loading {}", client_config.display()))?;
        let deadline = Instant::now() + CONNECT_WAIT;
        let mut clients = BTreeMap::new();
        for node in nodes {
            let config = base.clone().pinned(node);
            let client = loop {
                match Client::connect(config.clone()).await {
                    Ok(c) => break c,
                    Err(e) if Instant::now() < deadline && !matches!(e, Error::Config(_)) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => {
                        return Err(anyhow::anyhow!(e))
                            .with_context(|| format!("connecting to {node}"));
                    }
                }
            };
            clients.insert(node.clone(), client);
        }
        Ok(ClientDb { clients })
    }

    fn client(&self, node: &str) -> Result<&Client, String> {
        self.clients
            .get(node)
            .ok_or_else(|| format!("no client for node {node}"))
    }

    /// Sends the request `build` makes on `node`'s client at `level` within
    /// `timeout` and maps the answer with `f` (see [`outcome`]). A node
    /// without a client fails before anything is sent.
    async fn op<T: FromReply + Send + 'static, U>(
        &self,
        node: &str,
        effect: Effect,
        level: Level,
        timeout: Duration,
        build: impl FnOnce(&Client) -> RequestBuilder<T>,
        f: impl FnOnce(Read<T>) -> (U, Meta),
    ) -> Outcome<U> {
        let c = match self.client(node) {
            Ok(c) => c,
            Err(e) => return Outcome::Fail(e),
        };
        let r = build(c)
            .consistency(consistency(level))
            .timeout(timeout)
            .await;
        outcome(effect, r, f)
    }

    /// Closes every connection (teardown).
    pub async fn close(&self) {
        for c in self.clients.values() {
            c.close().await;
        }
    }
}

impl Db for ClientDb {
    async fn counter_add(
        &self,
        node: &str,
        key: &str,
        delta: i64,
        level: Level,
        timeout: Duration,
    ) -> Outcome<i64> {
        self.op(
            node,
            Effect::Write,
            level,
            timeout,
            |c| c.counter(key).incr(delta),
            |r| (r.value, served_by(r.node)),
        )
        .await
    }

    async fn counter_read(
        &self,
        node: &str,
        key: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<i64> {
        self.op(
            node,
            Effect::Read,
            level,
            timeout,
            |c| c.counter(key).read(),
            |r| (r.value, served_by(r.node)),
        )
        .await
    }

    async fn set_add(
        &self,
        node: &str,
        key: &str,
        member: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<()> {
        self.op(
            node,
            Effect::Write,
            level,
            timeout,
            |c| c.set(key).add([member]),
            |r| ((), served_by(r.node)),
        )
        .await
    }

    async fn set_remove(
        &self,
        node: &str,
        key: &str,
        member: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<()> {
        self.op(
            node,
            Effect::Write,
            level,
            timeout,
            |c| c.set(key).remove([member]),
            |r| ((), served_by(r.node)),
        )
        .await
    }

    async fn set_read(
        &self,
        node: &str,
        key: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<Vec<String>> {
        self.op(
            node,
            Effect::Read,
            level,
            timeout,
            |c| c.set(key).members(),
            |r| (members(r.value.members), served_by(r.node)),
        )
        .await
    }

    async fn register_write(
        &self,
        node: &str,
        key: &str,
        value: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<()> {
        self.op(
            node,
            Effect::Write,
            level,
            timeout,
            |c| c.register(key).put(value),
            |r| {
                let mine = r.value.value.as_deref() == Some(value.as_bytes());
                ((), stamped(r.node, r.value.hlc.filter(|_| mine)))
            },
        )
        .await
    }

    async fn register_read(
        &self,
        node: &str,
        key: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<Option<String>> {
        self.op(
            node,
            Effect::Read,
            level,
            timeout,
            |c| c.register(key).get(),
            |r| {
                let v = r
                    .value
                    .value
                    .map(|v| String::from_utf8_lossy(&v).into_owned());
                (v, stamped(r.node, r.value.hlc))
            },
        )
        .await
    }

    async fn map_set(
        &self,
        node: &str,
        key: &str,
        field: &str,
        value: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<()> {
        self.op(
            node,
            Effect::Write,
            level,
            timeout,
            |c| c.map(key).set([(field, value)]),
            |r| ((), served_by(r.node)),
        )
        .await
    }

    async fn map_incr(
        &self,
        node: &str,
        key: &str,
        field: &str,
        delta: i64,
        level: Level,
        timeout: Duration,
    ) -> Outcome<i64> {
        self.op(
            node,
            Effect::Write,
            level,
            timeout,
            |c| c.map(key).incr(field, delta),
            |r| {
                // The field's new value, as the serving node reported it
                // (informational: the checker never relies on it).
                let v = r
                    .value
                    .get(field.as_bytes())
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(0);
                (v, served_by(r.node))
            },
        )
        .await
    }

    async fn map_remove(
        &self,
        node: &str,
        key: &str,
        field: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<()> {
        self.op(
            node,
            Effect::Write,
            level,
            timeout,
            |c| c.map(key).remove([field]),
            |r| ((), served_by(r.node)),
        )
        .await
    }

    async fn map_read(
        &self,
        node: &str,
        key: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<BTreeMap<String, String>> {
        self.op(
            node,
            Effect::Read,
            level,
            timeout,
            |c| c.map(key).all(),
            |r| {
                let fields = r
                    .value
                    .fields
                    .into_iter()
                    .map(|(f, v)| {
                        (
                            String::from_utf8_lossy(&f).into_owned(),
                            String::from_utf8_lossy(&v).into_owned(),
                        )
                    })
                    .collect();
                (fields, served_by(r.node))
            },
        )
        .await
    }

    /// `SET .. PX` is a register put with `.ttl(..)` (a plain put clears
    /// the TTL, as Redis's `SET`); `PEXPIRE` is `expire(Deadline::after)`,
    /// `PERSIST` `persist()`: their reply says whether the register exists
    /// afterwards, recorded as `changed`.
    async fn expiry(
        &self,
        node: &str,
        key: &str,
        cmd: ExpiryCmd<'_>,
        level: Level,
        timeout: Duration,
    ) -> Outcome<ExpiryReply> {
        match cmd {
            ExpiryCmd::Set { value, ttl_ms } => {
                self.op(
                    node,
                    Effect::Write,
                    level,
                    timeout,
                    |c| {
                        let put = c.register(key).put(value);
                        match ttl_ms {
                            Some(t) => put.ttl(Duration::from_millis(t)),
                            None => put,
                        }
                    },
                    |r| (ExpiryReply::Done, served_by(r.node)),
                )
                .await
            }
            ExpiryCmd::Get => {
                self.op(
                    node,
                    Effect::Read,
                    level,
                    timeout,
                    |c| c.register(key).get(),
                    |r| {
                        let v = r
                            .value
                            .value
                            .map(|v| String::from_utf8_lossy(&v).into_owned());
                        (ExpiryReply::Value(v), served_by(r.node))
                    },
                )
                .await
            }
            ExpiryCmd::Expire { ttl_ms } => {
                self.op(
                    node,
                    Effect::Write,
                    level,
                    timeout,
                    |c| {
                        c.register(key)
                            .expire(Deadline::after(Duration::from_millis(ttl_ms)))
                    },
                    |r| (ExpiryReply::Changed(r.value.exists), served_by(r.node)),
                )
                .await
            }
            ExpiryCmd::Persist => {
                self.op(
                    node,
                    Effect::Write,
                    level,
                    timeout,
                    |c| c.register(key).persist(),
                    |r| (ExpiryReply::Changed(r.value.exists), served_by(r.node)),
                )
                .await
            }
        }
    }

    async fn set_clock_offset(&self, node: &str, offset_ms: i64) -> Result<(), String> {
        let c = self.client(node)?;
        c.debug_clock_offset(offset_ms)
            .await
            .map_err(|e| error_text(&e))
    }
}
