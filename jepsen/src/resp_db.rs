//! [`Db`] over the Redis protocol (`meridian-jepsen test --client resp`):
//! the counter and set workloads through each node's RESP port
//! (docs/resp.md), with outcomes classified from the RESP errors.
//!
//! * **Commands.** Counter add: `INCRBY key delta` (the integer reply is the
//!   node's value after the add). Counter read: `GET key` — a counter's
//!   decimal value, nil when the counter is 0 (Meridian keeps no existence
//!   bit), read as 0. Set: `SADD key member`, `SREM key member`,
//!   `SMEMBERS key`. The register workload is not run over RESP: `SET`/`GET`
//!   return no timestamps, and the register checker orders writes by them.
//!   Expiry workload: `SET key value [PX ttl]` (`+OK`), `GET key` (bulk or
//!   nil), `PEXPIRE key ttl` and `PERSIST key` (integer); its checker needs
//!   no timestamps (values are unique and judged by real time).
//! * **Levels.** The AUTH user name is the level (`AUTH quorum <token>`):
//!   connections are pooled per (node, level), each authenticated once at
//!   its level, so an op's level is the connection's. A connection carries
//!   one request at a time; a connection whose request ended without a
//!   complete reply (timeout, drop) is closed, never reused.
//! * **Pinned.** As the native [`ClientDb`]: every request goes to the node
//!   the history names (no failover), over that node's `resp_listen`
//!   (`client.toml`'s `[[nodes]] resp`).
//! * **Bounded.** Connecting, `AUTH`, sending and the reply together take at
//!   most the op's timeout. The nodes of a RESP run get a shorter server-side
//!   request timeout ([`node_request_timeout`]), so that the node's own
//!   `-INDETERMINATE`/`-TRYAGAIN` arrive before the harness gives up.
//!
//! Outcomes (the native client's rules in [`crate::client_db`]: `fail` only
//! when the command certainly had no effect, reads always `fail`):
//!
//! | what happened | write | read |
//! |---|---|---|
//! | a reply of the expected type | `ok` | `ok` |
//! | `-NOREPLICAS`, `-TRYAGAIN`, `-WRONGTYPE`, `-ERR`, `-NOAUTH`, `-WRONGPASS`, `-NOPERM` (definite, docs/resp.md) | `fail` | `fail` |
//! | `-INDETERMINATE`, or any other error prefix | `info` | `fail` |
//! | not sent: connect refused/failed, `AUTH` refused or timed out, the connection failed before the whole command was written | `fail` | `fail` |
//! | sent, then the connection closed, or no reply within the timeout, or a malformed reply | `info` | `fail` |
//! | a reply of another type | `info` | `fail` |
//!
//! **Serving node** (`meta.node`): the contacted node for `local`, `quorum`
//! and `all` (it coordinates, and with no placement rules it replicates
//! every key, so `local` is its own state). For `leader` the contacted node
//! forwards to the object's leader, which a RESP reply does not name:
//! `meta.node` is [`UNKNOWN_NODE`], so no checker rule that needs the
//! serving node (read-your-writes on a node, leader sessions) applies.
//!
//! The clock nemesis has no RESP command: with it, offsets go through a
//! native [`ClientDb`] (control only, never in the history).
//!
//! Why a hand-written client and not the `redis` crate: classification needs
//! to know whether the command's bytes were all written before a failure
//! (not sent = definite) and to bound connect + AUTH + request by one
//! deadline; the `redis` crate's async connections reconnect and retry
//! internally and report both cases as the same I/O error. It would also
//! need its async features (and their crates) in the workspace. One request
//! per connection needs a RESP2 codec of a few dozen lines, tested below.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use meridian_client::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client_db::{CONNECT_WAIT, ClientDb};
use crate::db::{Db, ExpiryCmd, ExpiryReply, Meta, NO_MAPS, Outcome};
use crate::history::{Level, UNKNOWN_NODE};

/// `--client`: how the harness talks to the nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientKind {
    /// `meridian-client` over QUIC ([`ClientDb`]).
    #[default]
    Native,
    /// The Redis protocol on each node's `resp_listen` ([`RespDb`]).
    Resp,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Native => "native",
            ClientKind::Resp => "resp",
        }
    }
}

impl std::str::FromStr for ClientKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(ClientKind::Native),
            "resp" => Ok(ClientKind::Resp),
            o => Err(format!("unknown client {o:?} (native|resp)")),
        }
    }
}

// ---------------------------------------------------------------------------
// RESP2 codec.

/// Largest bulk string accepted in a reply: a set member or value is at most
/// 1 MiB (docs/resp.md's limits); more is a broken server.
pub const MAX_BULK_BYTES: usize = 4 << 20;
/// Most elements in one reply array (`SMEMBERS` of a workload set holds a
/// few thousand).
pub const MAX_ARRAY_LEN: usize = 1 << 20;
/// Deepest array nesting accepted (the commands used reply flat arrays).
pub const MAX_DEPTH: usize = 4;
/// Largest unparsed reply buffered: the server's own output cap.
pub const MAX_REPLY_BYTES: usize = 64 << 20;
/// Idle connections kept per (node, level); more are closed.
pub const MAX_IDLE_PER_KEY: usize = 16;

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-NOREPLICAS ...`: the whole line after `-`.
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nabc`; `None` = `$-1` (nil).
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...`; `None` = `*-1`.
    Array(Option<Vec<Reply>>),
}

/// A command as an array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The line starting at `pos` (without `\r\n`) and the index after it.
fn line(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], pos + end + 2))
}

fn int(s: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad integer {:?}", String::from_utf8_lossy(s)))
}

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Reply, usize)>, String> {
    let Some((l, next)) = line(buf, pos) else {
        return Ok(None);
    };
    let Some((&t, body)) = l.split_first() else {
        return Err("empty line".into());
    };
    let text = || String::from_utf8_lossy(body).into_owned();
    Ok(Some(match t {
        b'+' => (Reply::Simple(text()), next),
        b'-' => (Reply::Error(text()), next),
        b':' => (Reply::Integer(int(body)?), next),
        b'$' => {
            let n = int(body)?;
            if n == -1 {
                return Ok(Some((Reply::Bulk(None), next)));
            }
            let n = usize::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_BULK_BYTES)
                .ok_or_else(|| format!("bulk length {n}"))?;
            let Some(data) = buf.get(next..next + n + 2) else {
                return Ok(None);
            };
            if &data[n..] != b"\r\n" {
                return Err("bulk string not terminated by CRLF".into());
            }
            (Reply::Bulk(Some(data[..n].to_vec())), next + n + 2)
        }
        b'*' => {
            let n = int(body)?;
            if n == -1 {
                return Ok(Some((Reply::Array(None), next)));
            }
            let n = usize::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_ARRAY_LEN)
                .ok_or_else(|| format!("array length {n}"))?;
            if depth >= MAX_DEPTH {
                return Err("arrays nested too deep".into());
            }
            let mut items = Vec::with_capacity(n.min(1024));
            let mut p = next;
            for _ in 0..n {
                let Some((item, after)) = parse_at(buf, p, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                p = after;
            }
            (Reply::Array(Some(items)), p)
        }
        o => return Err(format!("unexpected reply type byte {:?}", o as char)),
    }))
}

/// Parses one reply from the start of `buf`: `Ok(None)` if `buf` holds only
/// part of one, else the reply and the bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    parse_at(buf, 0, 0)
}

// ---------------------------------------------------------------------------
// Outcome classification.

/// Whether a RESP error means the command certainly had no effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Nothing was done (docs/resp.md: "definite").
    Definite,
    /// The write may still take effect.
    Indeterminate,
}

/// Error prefixes docs/resp.md's errors table calls definite. Everything
/// else — `INDETERMINATE`, and any prefix not listed (when in doubt) — is
/// indeterminate.
pub const DEFINITE_PREFIXES: [&str; 7] = [
    "NOREPLICAS",
    "TRYAGAIN",
    "WRONGTYPE",
    "ERR",
    "NOAUTH",
    "WRONGPASS",
    "NOPERM",
];

/// Classifies a RESP error line (without the leading `-`) by its prefix.
pub fn classify(error: &str) -> ErrorClass {
    let prefix = error.split(' ').next().unwrap_or_default();
    if DEFINITE_PREFIXES.contains(&prefix) {
        ErrorClass::Definite
    } else {
        ErrorClass::Indeterminate
    }
}

/// A request that got no reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The command never reached the server whole: certainly no effect.
    NotSent(String),
    /// The command was sent and no (complete, well-formed) reply came: a
    /// write may have taken effect.
    NoReply(String),
}

/// A write's outcome (see the module docs' table).
pub fn write_outcome<T>(
    r: Result<Reply, CallError>,
    meta: Meta,
    value: impl FnOnce(Reply) -> Result<T, Reply>,
) -> Outcome<T> {
    match r {
        Ok(Reply::Error(e)) => match classify(&e) {
            ErrorClass::Definite => Outcome::Fail(e),
            ErrorClass::Indeterminate => Outcome::Info(e),
        },
        Ok(reply) => match value(reply) {
            Ok(v) => Outcome::Ok(v, meta),
            Err(other) => Outcome::Info(format!("unexpected reply {other:?}")),
        },
        Err(CallError::NotSent(e)) => Outcome::Fail(format!("not sent: {e}")),
        Err(CallError::NoReply(e)) => Outcome::Info(format!("no reply: {e}")),
    }
}

/// A read's outcome: a read has no effect, so every failure is a `Fail`.
pub fn read_outcome<T>(
    r: Result<Reply, CallError>,
    meta: Meta,
    value: impl FnOnce(Reply) -> Result<T, Reply>,
) -> Outcome<T> {
    match r {
        Ok(Reply::Error(e)) => Outcome::Fail(e),
        Ok(reply) => match value(reply) {
            Ok(v) => Outcome::Ok(v, meta),
            Err(other) => Outcome::Fail(format!("unexpected reply {other:?}")),
        },
        Err(CallError::NotSent(e)) => Outcome::Fail(format!("not sent: {e}")),
        Err(CallError::NoReply(e)) => Outcome::Fail(format!("no reply: {e}")),
    }
}

/// `meta.node` for a request sent to `node` at `level` (module docs).
pub fn served_by(node: &str, level: Level) -> Meta {
    Meta {
        node: Some(match level {
            Level::Leader => UNKNOWN_NODE.to_string(),
            Level::Local | Level::Quorum | Level::All | Level::Replicas { .. } => node.to_string(),
        }),
        hlc: None,
    }
}

fn integer(r: Reply) -> Result<i64, Reply> {
    match r {
        Reply::Integer(v) => Ok(v),
        o => Err(o),
    }
}

/// `GET` of a counter: its decimal value, nil = 0.
fn counter_value(r: Reply) -> Result<i64, Reply> {
    match r {
        Reply::Bulk(None) => Ok(0),
        Reply::Bulk(Some(ref b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(r),
        o => Err(o),
    }
}

fn members(r: Reply) -> Result<Vec<String>, Reply> {
    match r {
        Reply::Array(Some(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                match i {
                    Reply::Bulk(Some(b)) => out.push(String::from_utf8_lossy(&b).into_owned()),
                    o => return Err(o),
                }
            }
            Ok(out)
        }
        o => Err(o),
    }
}

// ---------------------------------------------------------------------------
// Connections.

/// One authenticated connection: one request at a time.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn reply(&mut self) -> Result<Reply, String> {
        loop {
            if let Some((r, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                return Ok(r);
            }
            if self.buf.len() > MAX_REPLY_BYTES {
                return Err(format!("reply larger than {MAX_REPLY_BYTES} bytes"));
            }
            self.buf.reserve(16 << 10);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err("connection closed by the node".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("connection failed: {e}")),
            }
        }
    }

    /// An idle connection that has something to read (end of stream: the
    /// node closed it or was restarted; or bytes nobody asked for) is of no
    /// use: checked without blocking before reuse, so a request is not sent
    /// into a connection known to be dead.
    fn stale(&self) -> bool {
        let mut b = [0u8; 1];
        !matches!(self.stream.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// The RESP database: pinned per node, pooled per (node, level).
pub struct RespDb {
    /// node → its `resp_listen`.
    addrs: BTreeMap<String, SocketAddr>,
    token: String,
    idle: Mutex<HashMap<(String, Level), Vec<Conn>>>,
    /// The clock nemesis' control path (native client), when it runs.
    control: Option<ClientDb>,
}

// Hand-written: never prints the token.
impl std::fmt::Debug for RespDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RespDb")
            .field("addrs", &self.addrs)
            .field("token", &format_args!("<redacted>"))
            .field("control", &self.control.is_some())
            .finish()
    }
}

impl RespDb {
    /// A database over the given RESP addresses (no connection yet).
    pub fn new(addrs: BTreeMap<String, SocketAddr>, token: String) -> RespDb {
        RespDb {
            addrs,
            token,
            idle: Mutex::new(HashMap::new()),
            control: None,
        }
    }

    /// Reads every node's RESP address and the token from the cluster's
    /// `client.toml` and waits (up to [`CONNECT_WAIT`]) until each node
    /// answers `PING` after `AUTH`. With `clock_control`, also connects a
    /// native client for the clock nemesis.
    pub async fn connect(
        client_config: &Path,
        nodes: &[String],
        clock_control: bool,
    ) -> anyhow::Result<RespDb> {
        let cfg = ClientConfig::load(client_config)
            .with_context(|| format!("loading {}", client_config.display()))?;
        let mut addrs = BTreeMap::new();
        for node in nodes {
            let entry = cfg
                .nodes
                .iter()
                .find(|e| e.name == *node)
                .with_context(|| format!("{node} is not in {}", client_config.display()))?;
            let resp = entry.resp.as_deref().with_context(|| {
                format!(
                    "{node} has no RESP address (`resp` in {}; `meridian init` writes it)",
                    client_config.display()
                )
            })?;
            let addr: SocketAddr = resp
                .parse()
                .with_context(|| format!("{node}'s RESP address {resp:?}"))?;
            addrs.insert(node.clone(), addr);
        }
        let mut db = RespDb::new(addrs, cfg.token.clone());
        let deadline = Instant::now() + CONNECT_WAIT;
        for node in nodes {
            loop {
                let r = db
                    .call(node, Level::Local, &[b"PING"], Duration::from_secs(2))
                    .await;
                match r {
                    Ok(Reply::Simple(s)) if s == "PONG" => break,
                    Err(CallError::NotSent(e)) if e.contains("WRONGPASS") => {
                        bail!("{node} refused the cluster token over RESP: {e}")
                    }
                    _ if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    other => bail!("{node}'s RESP port did not answer PING: {other:?}"),
                }
            }
        }
        if clock_control {
            db.control = Some(ClientDb::connect(client_config, nodes).await?);
        }
        Ok(db)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Level), Vec<Conn>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle live connection to `node` at `level`, else a new one
    /// (connect + `AUTH <level> <token>`). Nothing of the caller's command
    /// has been sent when this fails.
    async fn checkout(&self, node: &str, level: Level) -> Result<Conn, String> {
        loop {
            let idle = {
                let mut pool = self.lock();
                pool.get_mut(&(node.to_string(), level)).and_then(Vec::pop)
            };
            match idle {
                Some(c) if !c.stale() => return Ok(c),
                Some(_) => continue,
                None => break,
            }
        }
        let addr = self
            .addrs
            .get(node)
            .ok_or_else(|| format!("no RESP address for node {node}"))?;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {node} ({addr}): {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut c = Conn {
            stream,
            buf: Vec::new(),
        };
        c.stream
            .write_all(&encode(&[
                b"AUTH",
                // The user name is the level's text form: `replicas-2`.
                level.consistency().to_string().as_bytes(),
                self.token.as_bytes(),
            ]))
            .await
            .map_err(|e| format!("sending AUTH to {node}: {e}"))?;
        match c.reply().await {
            Ok(Reply::Simple(s)) if s == "OK" => Ok(c),
            Ok(Reply::Error(e)) => Err(format!("AUTH {} on {node}: {e}", level.consistency())),
            Ok(other) => Err(format!("AUTH on {node}: unexpected reply {other:?}")),
            Err(e) => Err(format!("AUTH on {node}: {e}")),
        }
    }

    fn checkin(&self, node: &str, level: Level, c: Conn) {
        let mut pool = self.lock();
        let v = pool.entry((node.to_string(), level)).or_default();
        if v.len() < MAX_IDLE_PER_KEY {
            v.push(c);
        }
    }

    /// One command to `node` at `level`, everything within `timeout`.
    pub async fn call(
        &self,
        node: &str,
        level: Level,
        args: &[&[u8]],
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut conn = match tokio::time::timeout_at(deadline, self.checkout(node, level)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(CallError::NotSent(e)),
            Err(_) => {
                return Err(CallError::NotSent(format!(
                    "connecting to {node} and AUTH took over {timeout:?}"
                )));
            }
        };
        // `write_all` fails (or is cut short by the deadline) only before
        // the command's last byte was handed to the kernel: the node never
        // has the whole command, so it cannot execute it.
        match tokio::time::timeout_at(deadline, conn.stream.write_all(&encode(args))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(CallError::NotSent(format!(
                    "connection to {node} failed while sending: {e}"
                )));
            }
            Err(_) => {
                return Err(CallError::NotSent(format!(
                    "sending to {node} took over {timeout:?}"
                )));
            }
        }
        match tokio::time::timeout_at(deadline, conn.reply()).await {
            Ok(Ok(r)) => {
                if conn.buf.is_empty() {
                    self.checkin(node, level, conn);
                }
                Ok(r)
            }
            Ok(Err(e)) => Err(CallError::NoReply(format!("{node}: {e}"))),
            Err(_) => Err(CallError::NoReply(format!(
                "{node}: no reply within {timeout:?}"
            ))),
        }
    }

    /// Closes every idle connection and the control client (teardown).
    pub async fn close(&self) {
        self.lock().clear();
        if let Some(c) = &self.control {
            c.close().await;
        }
    }
}

impl Db for RespDb {
    async fn counter_add(
        &self,
        node: &str,
        key: &str,
        delta: i64,
        level: Level,
        timeout: Duration,
    ) -> Outcome<i64> {
        let d = delta.to_string();
        let r = self
            .call(
                node,
                level,
                &[b"INCRBY", key.as_bytes(), d.as_bytes()],
                timeout,
            )
            .await;
        write_outcome(r, served_by(node, level), integer)
    }

    async fn counter_read(
        &self,
        node: &str,
        key: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<i64> {
        let r = self
            .call(node, level, &[b"GET", key.as_bytes()], timeout)
            .await;
        read_outcome(r, served_by(node, level), counter_value)
    }

    async fn set_add(
        &self,
        node: &str,
        key: &str,
        member: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<()> {
        let r = self
            .call(
                node,
                level,
                &[b"SADD", key.as_bytes(), member.as_bytes()],
                timeout,
            )
            .await;
        write_outcome(r, served_by(node, level), |r| integer(r).map(drop))
    }

    async fn set_remove(
        &self,
        node: &str,
        key: &str,
        member: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<()> {
        let r = self
            .call(
                node,
                level,
                &[b"SREM", key.as_bytes(), member.as_bytes()],
                timeout,
            )
            .await;
        write_outcome(r, served_by(node, level), |r| integer(r).map(drop))
    }

    async fn set_read(
        &self,
        node: &str,
        key: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<Vec<String>> {
        let r = self
            .call(node, level, &[b"SMEMBERS", key.as_bytes()], timeout)
            .await;
        read_outcome(r, served_by(node, level), members)
    }

    async fn register_write(
        &self,
        _node: &str,
        _key: &str,
        _value: &str,
        _level: Level,
        _timeout: Duration,
    ) -> Outcome<()> {
        Outcome::Fail(REGISTER_UNSUPPORTED.into())
    }

    async fn register_read(
        &self,
        _node: &str,
        _key: &str,
        _level: Level,
        _timeout: Duration,
    ) -> Outcome<Option<String>> {
        Outcome::Fail(REGISTER_UNSUPPORTED.into())
    }

    // The map workload runs over the native client only (the CLI refuses
    // `--client resp --workload map`): no HSET/HINCRBY/HDEL/HGETALL here yet.
    async fn map_set(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
        _: Level,
        _: Duration,
    ) -> Outcome<()> {
        Outcome::Fail(NO_MAPS.into())
    }

    async fn map_incr(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: i64,
        _: Level,
        _: Duration,
    ) -> Outcome<i64> {
        Outcome::Fail(NO_MAPS.into())
    }

    async fn map_remove(&self, _: &str, _: &str, _: &str, _: Level, _: Duration) -> Outcome<()> {
        Outcome::Fail(NO_MAPS.into())
    }

    async fn map_read(
        &self,
        _: &str,
        _: &str,
        _: Level,
        _: Duration,
    ) -> Outcome<BTreeMap<String, String>> {
        Outcome::Fail(NO_MAPS.into())
    }

    async fn expiry(
        &self,
        node: &str,
        key: &str,
        cmd: ExpiryCmd<'_>,
        level: Level,
        timeout: Duration,
    ) -> Outcome<ExpiryReply> {
        let k = key.as_bytes();
        let meta = served_by(node, level);
        match cmd {
            ExpiryCmd::Set { value, ttl_ms } => {
                let ttl = ttl_ms.map(|t| t.to_string());
                let mut args: Vec<&[u8]> = vec![b"SET", k, value.as_bytes()];
                if let Some(t) = &ttl {
                    args.extend([b"PX".as_slice(), t.as_bytes()]);
                }
                let r = self.call(node, level, &args, timeout).await;
                write_outcome(r, meta, |r| match r {
                    Reply::Simple(s) if s == "OK" => Ok(ExpiryReply::Done),
                    o => Err(o),
                })
            }
            ExpiryCmd::Get => {
                let r = self.call(node, level, &[b"GET", k], timeout).await;
                read_outcome(r, meta, |r| match r {
                    Reply::Bulk(v) => Ok(ExpiryReply::Value(
                        v.map(|b| String::from_utf8_lossy(&b).into_owned()),
                    )),
                    o => Err(o),
                })
            }
            ExpiryCmd::Expire { ttl_ms } => {
                let t = ttl_ms.to_string();
                let r = self
                    .call(node, level, &[b"PEXPIRE", k, t.as_bytes()], timeout)
                    .await;
                write_outcome(r, meta, |r| {
                    integer(r).map(|i| ExpiryReply::Changed(i == 1))
                })
            }
            ExpiryCmd::Persist => {
                let r = self.call(node, level, &[b"PERSIST", k], timeout).await;
                write_outcome(r, meta, |r| {
                    integer(r).map(|i| ExpiryReply::Changed(i == 1))
                })
            }
        }
    }

    async fn set_clock_offset(&self, node: &str, offset_ms: i64) -> Result<(), String> {
        match &self.control {
            Some(c) => c.set_clock_offset(node, offset_ms).await,
            None => Err("no clock control: RespDb connected without it".into()),
        }
    }
}

/// Why the register workload does not run over RESP (the CLI refuses it
/// before a run starts).
pub const REGISTER_UNSUPPORTED: &str = "the register workload does not run over RESP: SET/GET \
     return no timestamps, which the register checker orders writes by";

// ---------------------------------------------------------------------------
// Node configuration.

/// The server-side timeout the nodes give RESP requests in a `--client
/// resp` run: two fifths of the op timeout (2 s of 5 s).
///
/// A RESP command carries no timeout, so the node uses its `[limits]
/// request_timeout_ms` (5 s by default) for each coordinator request, and a
/// type-checked write is two of them in a row (the type probe, then the
/// write). With the default, the harness (bound by the op timeout) would
/// always give up first, and a write the node times out would end as "no
/// reply" — never as the node's own `-INDETERMINATE` (or a read's
/// `-TRYAGAIN`), the very errors this client classifies. With 2/5 both
/// steps fit in the op timeout, with room for a leader forward's margin.
pub fn node_request_timeout(op_timeout: Duration) -> Duration {
    op_timeout * 2 / 5
}

/// A node config (TOML) with `[limits] request_timeout_ms` set to `timeout`;
/// everything else kept.
pub fn with_request_timeout(config: &str, timeout: Duration) -> anyhow::Result<String> {
    let mut doc: toml::Table = toml::from_str(config).context("parsing node config")?;
    let limits = doc
        .entry("limits")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .context("[limits] of the node config is not a table")?;
    let ms = i64::try_from(timeout.as_millis())
        .ok()
        .filter(|ms| *ms >= 1)
        .context("request timeout out of range")?;
    limits.insert("request_timeout_ms".into(), toml::Value::Integer(ms));
    Ok(toml::to_string(&doc)?)
}

// ---------------------------------------------------------------------------
// The `test` command's choice.

/// The database `meridian-jepsen test` drives, by `--client`.
#[derive(Debug)]
pub enum AnyDb {
    Native(ClientDb),
    Resp(RespDb),
}

impl AnyDb {
    /// Connects the chosen client to the cluster of `client.toml`.
    /// `clock_control`: the clock nemesis runs (RESP then also connects a
    /// native client for it).
    pub async fn connect(
        kind: ClientKind,
        client_config: &Path,
        nodes: &[String],
        clock_control: bool,
    ) -> anyhow::Result<AnyDb> {
        Ok(match kind {
            ClientKind::Native => AnyDb::Native(ClientDb::connect(client_config, nodes).await?),
            ClientKind::Resp => {
                AnyDb::Resp(RespDb::connect(client_config, nodes, clock_control).await?)
            }
        })
    }

    pub async fn close(&self) {
        match self {
            AnyDb::Native(d) => d.close().await,
            AnyDb::Resp(d) => d.close().await,
        }
    }
}

impl Db for AnyDb {
    async fn counter_add(
        &self,
        node: &str,
        key: &str,
        delta: i64,
        level: Level,
        timeout: Duration,
    ) -> Outcome<i64> {
        match self {
            AnyDb::Native(d) => d.counter_add(node, key, delta, level, timeout).await,
            AnyDb::Resp(d) => d.counter_add(node, key, delta, level, timeout).await,
        }
    }

    async fn counter_read(
        &self,
        node: &str,
        key: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<i64> {
        match self {
            AnyDb::Native(d) => d.counter_read(node, key, level, timeout).await,
            AnyDb::Resp(d) => d.counter_read(node, key, level, timeout).await,
        }
    }

    async fn set_add(
        &self,
        node: &str,
        key: &str,
        member: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<()> {
        match self {
            AnyDb::Native(d) => d.set_add(node, key, member, level, timeout).await,
            AnyDb::Resp(d) => d.set_add(node, key, member, level, timeout).await,
        }
    }

    async fn set_remove(
        &self,
        node: &str,
        key: &str,
        member: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<()> {
        match self {
            AnyDb::Native(d) => d.set_remove(node, key, member, level, timeout).await,
            AnyDb::Resp(d) => d.set_remove(node, key, member, level, timeout).await,
        }
    }

    async fn set_read(
        &self,
        node: &str,
        key: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<Vec<String>> {
        match self {
            AnyDb::Native(d) => d.set_read(node, key, level, timeout).await,
            AnyDb::Resp(d) => d.set_read(node, key, level, timeout).await,
        }
    }

    async fn register_write(
        &self,
        node: &str,
        key: &str,
        value: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<()> {
        match self {
            AnyDb::Native(d) => d.register_write(node, key, value, level, timeout).await,
            AnyDb::Resp(d) => d.register_write(node, key, value, level, timeout).await,
        }
    }

    async fn register_read(
        &self,
        node: &str,
        key: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<Option<String>> {
        match self {
            AnyDb::Native(d) => d.register_read(node, key, level, timeout).await,
            AnyDb::Resp(d) => d.register_read(node, key, level, timeout).await,
        }
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
        match self {
            AnyDb::Native(d) => d.map_set(node, key, field, value, level, timeout).await,
            AnyDb::Resp(d) => d.map_set(node, key, field, value, level, timeout).await,
        }
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
        match self {
            AnyDb::Native(d) => d.map_incr(node, key, field, delta, level, timeout).await,
            AnyDb::Resp(d) => d.map_incr(node, key, field, delta, level, timeout).await,
        }
    }

    async fn map_remove(
        &self,
        node: &str,
        key: &str,
        field: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<()> {
        match self {
            AnyDb::Native(d) => d.map_remove(node, key, field, level, timeout).await,
            AnyDb::Resp(d) => d.map_remove(node, key, field, level, timeout).await,
        }
    }

    async fn map_read(
        &self,
        node: &str,
        key: &str,
        level: Level,
        timeout: Duration,
    ) -> Outcome<BTreeMap<String, String>> {
        match self {
            AnyDb::Native(d) => d.map_read(node, key, level, timeout).await,
            AnyDb::Resp(d) => d.map_read(node, key, level, timeout).await,
        }
    }

    async fn expiry(
        &self,
        node: &str,
        key: &str,
        cmd: ExpiryCmd<'_>,
        level: Level,
        timeout: Duration,
    ) -> Outcome<ExpiryReply> {
        match self {
            AnyDb::Native(d) => d.expiry(node, key, cmd, level, timeout).await,
            AnyDb::Resp(d) => d.expiry(node, key, cmd, level, timeout).await,
        }
    }

    async fn set_clock_offset(&self, node: &str, offset_ms: i64) -> Result<(), String> {
        match self {
            AnyDb::Native(d) => d.set_clock_offset(node, offset_ms).await,
            AnyDb::Resp(d) => d.set_clock_offset(node, offset_ms).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn codec_round_trips_and_is_bounded() {
        assert_eq!(
            encode(&[b"INCRBY", b"counter-0", b"-3"]),
            b"*3\r\n$6\r\nINCRBY\r\n$9\r\ncounter-0\r\n$2\r\n-3\r\n"
        );
        let cases: [(&[u8], Reply); 7] = [
            (b"+OK\r\n", Reply::Simple("OK".into())),
            (
                b"-NOREPLICAS needs 2\r\n",
                Reply::Error("NOREPLICAS needs 2".into()),
            ),
            (b":-12\r\n", Reply::Integer(-12)),
            (b"$-1\r\n", Reply::Bulk(None)),
            (b"$2\r\n42\r\n", Reply::Bulk(Some(b"42".to_vec()))),
            (b"*-1\r\n", Reply::Array(None)),
            (
                b"*2\r\n$1\r\na\r\n$0\r\n\r\n",
                Reply::Array(Some(vec![
                    Reply::Bulk(Some(b"a".to_vec())),
                    Reply::Bulk(Some(Vec::new())),
                ])),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes), Ok(Some((want, bytes.len()))));
            // Every strict prefix is incomplete, never an error.
            for cut in 0..bytes.len() {
                assert_eq!(parse(&bytes[..cut]), Ok(None), "{bytes:?} cut at {cut}");
            }
        }
        // Two replies in a row: the first, and how much it took.
        assert_eq!(parse(b":1\r\n:2\r\n"), Ok(Some((Reply::Integer(1), 4))));
        for bad in [
            &b"?x\r\n"[..],
            b":x\r\n",
            b"$2\r\nabcd",
            b"$99999999999\r\n",
            b"*99999999999\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn classification_follows_the_errors_table() {
        for definite in [
            "NOREPLICAS not enough replicas reachable for this level: needs 2, 1 reachable (nothing was done)",
            "TRYAGAIN read timed out with 1 of 2 replicas answering (nothing was changed)",
            "TRYAGAIN overloaded: x",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "ERR value is not an integer or out of range",
            "NOAUTH Authentication required.",
            "WRONGPASS invalid username-password pair or user is disabled.",
            "NOPERM x",
        ] {
            assert_eq!(classify(definite), ErrorClass::Definite, "{definite}");
        }
        for indeterminate in [
            "INDETERMINATE timed out with 1 of 2 durable acknowledgements: the write may still take effect",
            "INDETERMINATE internal error: x: the write may still take effect",
            "LOADING something new",
            "ERRX",
            "",
        ] {
            assert_eq!(
                classify(indeterminate),
                ErrorClass::Indeterminate,
                "{indeterminate}"
            );
        }
        let m = served_by("n1", Level::Quorum);
        let e = |s: &str| Ok(Reply::Error(s.into()));
        assert!(matches!(
            write_outcome(e("INDETERMINATE x"), m.clone(), integer),
            Outcome::Info(_)
        ));
        assert!(matches!(
            write_outcome(e("NOREPLICAS x"), m.clone(), integer),
            Outcome::Fail(_)
        ));
        assert!(matches!(
            read_outcome(e("INDETERMINATE x"), m.clone(), integer),
            Outcome::Fail(_)
        ));
        let lost = || Err(CallError::NoReply("gone".into()));
        assert!(matches!(
            write_outcome(lost(), m.clone(), integer),
            Outcome::Info(_)
        ));
        assert!(matches!(
            read_outcome(lost(), m.clone(), integer),
            Outcome::Fail(_)
        ));
        let unsent = || Err(CallError::NotSent("refused".into()));
        assert!(matches!(
            write_outcome(unsent(), m.clone(), integer),
            Outcome::Fail(_)
        ));
        // A write answered with a reply of the wrong type did something.
        assert!(matches!(
            write_outcome(Ok(Reply::Simple("OK".into())), m.clone(), integer),
            Outcome::Info(_)
        ));
        assert_eq!(m.node.as_deref(), Some("n1"));
        assert_eq!(
            served_by("n1", Level::Leader).node.as_deref(),
            Some(UNKNOWN_NODE)
        );
        assert_eq!(counter_value(Reply::Bulk(None)), Ok(0));
        assert_eq!(counter_value(Reply::Bulk(Some(b"-7".to_vec()))), Ok(-7));
        assert!(counter_value(Reply::Bulk(Some(b"x".to_vec()))).is_err());
    }

    /// What the fake node does with a data command.
    #[derive(Clone, Copy, Debug)]
    enum Act {
        Reply(&'static str),
        /// Reply, then close the connection.
        ReplyClose(&'static str),
        /// Read the command, close without a reply.
        Close,
        /// Never answer.
        Hang,
    }

    struct Fake {
        addr: SocketAddr,
        /// AUTH user names, in connection order.
        auths: Arc<Mutex<Vec<String>>>,
        conns: Arc<AtomicUsize>,
    }

    /// A RESP server on 127.0.0.1 that checks `AUTH <level> tok` and answers
    /// every other command by `script`.
    async fn fake(script: fn(&[String]) -> Act) -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let f = Fake {
            addr: l.local_addr().unwrap(),
            auths: Arc::default(),
            conns: Arc::default(),
        };
        let (auths, conns) = (f.auths.clone(), f.conns.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                let auths = auths.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let items = loop {
                            if let Ok(Some((Reply::Array(Some(items)), used))) = parse(&buf) {
                                buf.drain(..used);
                                break items;
                            }
                            if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                                return;
                            }
                        };
                        let args: Vec<String> = items
                            .into_iter()
                            .map(|i| match i {
                                Reply::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
                                o => panic!("{o:?}"),
                            })
                            .collect();
                        if args[0] == "AUTH" {
                            auths.lock().unwrap().push(args[1].clone());
                            let r: &[u8] = if args[2] == "tok" {
                                b"+OK\r\n"
                            } else {
                                b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
                            };
                            let _ = s.write_all(r).await;
                            continue;
                        }
                        match script(&args) {
                            Act::Reply(r) => {
                                let _ = s.write_all(r.as_bytes()).await;
                            }
                            Act::ReplyClose(r) => {
                                let _ = s.write_all(r.as_bytes()).await;
                                return;
                            }
                            Act::Close => return,
                            Act::Hang => {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        f
    }

    fn db(addr: SocketAddr, token: &str) -> RespDb {
        RespDb::new(BTreeMap::from([("n1".to_string(), addr)]), token.into())
    }

    const T: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn commands_levels_and_pooling() {
        let f = fake(|a| match (a[0].as_str(), a[1].as_str()) {
            ("INCRBY", _) if a[2] == "5" => Act::Reply(":5\r\n"),
            ("GET", "counter-0") => Act::Reply("$-1\r\n"),
            ("GET", _) => Act::Reply("$2\r\n-3\r\n"),
            ("SADD", "set-odd") => Act::Reply("+OK\r\n"),
            ("SADD", _) | ("SREM", _) => Act::Reply(":1\r\n"),
            ("SMEMBERS", _) => Act::Reply("*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
            _ => Act::Reply("-ERR unknown command\r\n"),
        })
        .await;
        let d = db(f.addr, "tok");
        assert_eq!(
            d.counter_add("n1", "counter-0", 5, Level::Quorum, T).await,
            Outcome::Ok(5, served_by("n1", Level::Quorum))
        );
        assert_eq!(
            d.counter_read("n1", "counter-0", Level::Quorum, T).await,
            Outcome::Ok(0, served_by("n1", Level::Quorum)),
            "a counter at 0 reads as nil"
        );
        assert_eq!(
            d.counter_read("n1", "counter-1", Level::Local, T).await,
            Outcome::Ok(-3, served_by("n1", Level::Local))
        );
        assert!(matches!(
            d.set_add("n1", "set-0", "a", Level::Leader, T).await,
            Outcome::Ok((), Meta { node: Some(n), .. }) if n == UNKNOWN_NODE
        ));
        assert!(matches!(
            d.set_remove("n1", "set-0", "a", Level::All, T).await,
            Outcome::Ok(..)
        ));
        assert_eq!(
            d.set_read("n1", "set-0", Level::All, T).await,
            Outcome::Ok(vec!["a".into(), "b".into()], served_by("n1", Level::All))
        );
        // A definite error; a reply of the wrong type to a write (it did
        // something): indeterminate.
        assert!(matches!(
            d.counter_add("n1", "counter-0", 6, Level::Quorum, T).await,
            Outcome::Fail(e) if e.starts_with("ERR")
        ));
        assert!(matches!(
            d.set_add("n1", "set-odd", "a", Level::Quorum, T).await,
            Outcome::Info(e) if e.starts_with("unexpected reply")
        ));
        // One connection per level, reused.
        assert_eq!(f.conns.load(Ordering::SeqCst), 4);
        let mut auths = f.auths.lock().unwrap().clone();
        auths.sort();
        assert_eq!(auths, ["all", "leader", "local", "quorum"]);
        assert!(matches!(
            d.register_write("n1", "register-0", "v", Level::Local, T)
                .await,
            Outcome::Fail(_)
        ));
        assert!(d.set_clock_offset("n1", 5).await.is_err());
    }

    /// The expiry workload's commands on the wire and their replies.
    #[tokio::test]
    async fn expiry_commands_and_replies() {
        let f = fake(
            |a| match a.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["SET", "expiry-0", "v1", "PX", "1500"] => Act::Reply("+OK\r\n"),
                ["SET", "expiry-0", "v2"] => Act::Reply("+OK\r\n"),
                ["SET", "expiry-1", ..] => Act::Reply(":1\r\n"),
                ["GET", "expiry-0"] => Act::Reply("$2\r\nv2\r\n"),
                ["GET", "expiry-1"] => Act::Reply("$-1\r\n"),
                ["PEXPIRE", "expiry-0", "2000"] => Act::Reply(":1\r\n"),
                ["PERSIST", "expiry-0"] => Act::Reply(":0\r\n"),
                _ => Act::Reply("-ERR wrong arguments\r\n"),
            },
        )
        .await;
        let d = db(f.addr, "tok");
        let q = Level::Quorum;
        let ok = |r| Outcome::Ok(r, served_by("n1", q));
        let set = |value, ttl_ms| ExpiryCmd::Set { value, ttl_ms };
        assert_eq!(
            d.expiry("n1", "expiry-0", set("v1", Some(1500)), q, T)
                .await,
            ok(ExpiryReply::Done)
        );
        assert_eq!(
            d.expiry("n1", "expiry-0", set("v2", None), q, T).await,
            ok(ExpiryReply::Done)
        );
        assert_eq!(
            d.expiry("n1", "expiry-0", ExpiryCmd::Get, q, T).await,
            ok(ExpiryReply::Value(Some("v2".into())))
        );
        assert_eq!(
            d.expiry("n1", "expiry-1", ExpiryCmd::Get, q, T).await,
            ok(ExpiryReply::Value(None))
        );
        assert_eq!(
            d.expiry("n1", "expiry-0", ExpiryCmd::Expire { ttl_ms: 2000 }, q, T)
                .await,
            ok(ExpiryReply::Changed(true))
        );
        assert_eq!(
            d.expiry("n1", "expiry-0", ExpiryCmd::Persist, q, T).await,
            ok(ExpiryReply::Changed(false))
        );
        // A SET answered with another type did something: indeterminate.
        assert!(matches!(
            d.expiry("n1", "expiry-1", set("v3", Some(1000)), q, T).await,
            Outcome::Info(e) if e.starts_with("unexpected reply")
        ));
        assert!(matches!(
            d.expiry("n1", "expiry-2", ExpiryCmd::Persist, q, T).await,
            Outcome::Fail(e) if e.starts_with("ERR")
        ));
    }

    /// A node without TTL commands stops an expiry run before it starts,
    /// with an error that says so, instead of a run of failed ops.
    #[tokio::test]
    async fn expiry_preflight_fails_clearly_on_unknown_commands() {
        let f = fake(|a| match a[0].as_str() {
            "SET" => Act::Reply("+OK\r\n"),
            _ => Act::Reply("-ERR unknown command 'PEXPIRE', with args beginning with: \r\n"),
        })
        .await;
        let d = db(f.addr, "tok");
        let e = crate::runner::expiry_preflight(&d, "n1", T)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("refused PEXPIRE"), "{e}");
        assert!(e.contains("unknown command"), "{e}");
        let f = fake(|a| match a[0].as_str() {
            "SET" => Act::Reply("+OK\r\n"),
            _ => Act::Reply(":1\r\n"),
        })
        .await;
        crate::runner::expiry_preflight(&db(f.addr, "tok"), "n1", T)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn errors_drops_and_timeouts_are_classified() {
        let f = fake(|a| match a[1].as_str() {
            "indeterminate" => Act::Reply("-INDETERMINATE timed out with 1 of 3 durable acknowledgements: the write may still take effect\r\n"),
            "noreplicas" => Act::Reply("-NOREPLICAS not enough replicas reachable for this level: needs 2, 1 reachable (nothing was done)\r\n"),
            "tryagain" => Act::Reply("-TRYAGAIN read timed out with 1 of 2 replicas answering (nothing was changed)\r\n"),
            "drop" => Act::Close,
            "hang" => Act::Hang,
            _ => Act::ReplyClose(":1\r\n"),
        })
        .await;
        let d = db(f.addr, "tok");
        let add = |k: &'static str| d.counter_add("n1", k, 1, Level::Quorum, T);
        assert!(
            matches!(add("indeterminate").await, Outcome::Info(e) if e.starts_with("INDETERMINATE"))
        );
        assert!(matches!(add("noreplicas").await, Outcome::Fail(e) if e.starts_with("NOREPLICAS")));
        assert!(matches!(add("tryagain").await, Outcome::Fail(e) if e.starts_with("TRYAGAIN")));
        assert!(matches!(add("drop").await, Outcome::Info(e) if e.starts_with("no reply")));
        assert!(matches!(
            d.counter_read("n1", "drop", Level::Quorum, T).await,
            Outcome::Fail(_)
        ));
        let short = Duration::from_millis(300);
        let t0 = Instant::now();
        assert!(matches!(
            d.set_add("n1", "hang", "m", Level::Local, short).await,
            Outcome::Info(e) if e.contains("no reply within")
        ));
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "bounded by the timeout"
        );
        assert!(matches!(
            d.set_read("n1", "hang", Level::Local, short).await,
            Outcome::Fail(_)
        ));
        // The node closes a connection after replying: the next request
        // notices before sending and reconnects, instead of an `info`.
        assert!(matches!(add("closes").await, Outcome::Ok(1, _)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(matches!(add("closes").await, Outcome::Ok(1, _)));
        // A wrong token: AUTH refused, nothing sent.
        let bad = db(f.addr, "wrong");
        assert!(matches!(
            bad.counter_add("n1", "counter-0", 1, Level::Local, T).await,
            Outcome::Fail(e) if e.contains("WRONGPASS")
        ));
    }

    #[test]
    fn node_configs_get_a_shorter_request_timeout() {
        let t = node_request_timeout(Duration::from_secs(5));
        assert_eq!(t, Duration::from_secs(2));
        let text = "node = \"n1\"\nresp_listen = \"127.0.1.1:7009\"\n\n[limits]\n\
                    max_client_connections = 10\nrequest_timeout_ms = 5000\n";
        let out: toml::Table = toml::from_str(&with_request_timeout(text, t).unwrap()).unwrap();
        assert_eq!(out["limits"]["request_timeout_ms"].as_integer(), Some(2000));
        assert_eq!(
            out["limits"]["max_client_connections"].as_integer(),
            Some(10)
        );
        assert_eq!(out["resp_listen"].as_str(), Some("127.0.1.1:7009"));
        let out: toml::Table =
            toml::from_str(&with_request_timeout("node = \"n1\"\n", t).unwrap()).unwrap();
        assert_eq!(out["limits"]["request_timeout_ms"].as_integer(), Some(2000));
        assert!(with_request_timeout("limits = 3\n", t).is_err());
    }

    #[tokio::test]
    async fn a_node_that_is_down_is_a_definite_failure() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let d = db(addr, "tok");
        assert!(matches!(
            d.set_add("n1", "set-0", "m", Level::Local, T).await,
            Outcome::Fail(e) if e.starts_with("not sent")
        ));
        assert!(matches!(
            d.set_add("n9", "set-0", "m", Level::Local, T).await,
            Outcome::Fail(_)
        ));
        assert_eq!("resp".parse::<ClientKind>(), Ok(ClientKind::Resp));
        assert_eq!("native".parse::<ClientKind>(), Ok(ClientKind::Native));
        assert!("redis".parse::<ClientKind>().is_err());
    }
}
