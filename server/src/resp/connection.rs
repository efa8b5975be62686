//! One RESP client connection.
//!
//! Reads are buffered; every complete request in the buffer is executed in
//! order (pipelining), each awaited before the next, so a connection's
//! commands take effect in its order and it reads its own writes. A run of
//! pipelined commands the node serves alone is executed as one engine job
//! ([`super::local`]), still in order. Replies
//! are encoded in request order into one output buffer, written whenever it
//! passes [`FLUSH_BYTES`] and when the buffered requests are done.
//!
//! Limits (each a reason to close the connection, as Redis does):
//! * a request breaking the protocol or the frame limits
//!   ([`super::frame`]): `-ERR Protocol error: ...`, then closed;
//! * pending reply bytes above [`MAX_OUTPUT_BUFFER_BYTES`], or a write
//!   that makes no progress for [`WRITE_STALL_TIMEOUT`]: a client that does
//!   not read its replies is disconnected (the node stops reading its
//!   requests while a write is blocked, so it cannot queue more);
//! * a request that stays incomplete for [`PARTIAL_REQUEST_TIMEOUT`], or no
//!   request at all for [`IDLE_TIMEOUT`];
//! * more than [`MAX_UNAUTHENTICATED_QUERY_BYTES`] (192 KiB) buffered before `AUTH`;
//! * the node's client memory budget (`[limits] client_memory_bytes`,
//!   shared with the QUIC door) without room for the connection's buffers:
//!   `-ERR the node's client memory budget is exhausted`, then closed. The
//!   buffers are counted before the input buffer grows and after a reply
//!   is encoded, and shrink back once a large request or reply is done.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use meridian_client::wire::Consistency;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::command::Command;
use super::data::{Data, Failed};
use super::frame::{self, Reply};
use super::{RespServer, conn_cmds, expire, hashes, keys, local, sets, strings};
use crate::budget::Account;
use crate::coordinator::WriteRecord;

/// Reply bytes after which the output buffer is written out mid-pipeline.
pub const FLUSH_BYTES: usize = 64 << 10;

/// Most reply bytes one connection may have pending: one reply of a whole
/// object (16 MiB) in either protocol's framing fits with room to spare.
/// A client whose pending replies pass it is disconnected (Redis:
/// `client-output-buffer-limit`).
pub const MAX_OUTPUT_BUFFER_BYTES: usize = 64 << 20;

/// How long a write may make no progress before the client is considered
/// gone (it does not read its replies).
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a request may stay incomplete (a half-sent command holds its
/// buffer, bounded by the frame limits, no longer than this).
pub const PARTIAL_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may send nothing at all. Pools keep idle
/// connections; clients reconnect (and re-send AUTH) transparently.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Most bytes read from the socket at once.
const READ_CHUNK: usize = 64 << 10;

/// Most bytes the input buffer may hold: one largest request
/// ([`frame::MAX_REQUEST_BYTES`], enforced by the parser on declared
/// lengths) plus one read (Redis: `client-query-buffer-limit`).
pub const MAX_QUERY_BUFFER_BYTES: usize = frame::MAX_REQUEST_BYTES + READ_CHUNK;

/// Most bytes of requests an unauthenticated connection may have buffered:
/// `AUTH` and `HELLO` with a token fit many times over, and it is above
/// the inline limit ([`frame::MAX_INLINE_BYTES`]) and one read, so an
/// overlong inline line is still reported as such. Past it the connection
/// is answered `-NOAUTH` and closed.
pub const MAX_UNAUTHENTICATED_QUERY_BYTES: usize = 2 * frame::MAX_INLINE_BYTES + READ_CHUNK;

/// Capacity of a new connection's input and output buffers.
const INITIAL_BUFFER_BYTES: usize = 4 << 10;

/// A buffer grown past this (by a large request or reply) is replaced by a
/// new small one once empty, so an idle connection holds little of the
/// node's budget.
const SHRINK_ABOVE_BYTES: usize = 64 << 10;

/// Most commands one `MULTI` may queue (each is a parsed request, so this
/// bounds the memory a never-executed transaction holds).
pub const MAX_QUEUED_COMMANDS: usize = 10_000;

/// What one connection remembers.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub connected: Instant,
    pub authenticated: bool,
    pub user: String,
    pub level: Consistency,
    /// 2 or 3.
    pub proto: u8,
    pub name: Option<Bytes>,
    pub lib_name: String,
    pub lib_ver: String,
    /// `Some` inside `MULTI`: the queued commands.
    pub multi: Option<Vec<Command>>,
    /// A command inside `MULTI` was refused: `EXEC` aborts.
    pub multi_failed: bool,
    /// The last write this connection made through this node (`WAIT`).
    pub last_write: Option<WriteRecord>,
    /// Open `SCAN`/`SSCAN` cursors.
    pub cursors: super::cursors::Cursors,
}

/// What to do after a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    Continue,
    Close,
}

/// Serves one connection until it closes, breaks a limit, or the node
/// stops (after the command being executed).
/// `stream` is the TCP connection or the TLS session over it; `local` is
/// the address it was accepted on.
pub async fn serve<S>(
    server: std::sync::Arc<RespServer>,
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let count = server.connections.fetch_add(1, Ordering::AcqRel) + 1;
    let _guard = Decrement(&server);
    server.connections_total.fetch_add(1, Ordering::Relaxed);
    let (mut rd, mut wr) = tokio::io::split(stream);
    if count > server.max_connections {
        server.rejected_connections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, limit = server.max_connections, "RESP client refused: too many connections");
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            wr.write_all(b"-ERR max number of clients reached\r\n"),
        )
        .await;
        return;
    }
    let mut session = Session {
        id: server.next_client_id.fetch_add(1, Ordering::Relaxed),
        peer,
        local,
        connected: Instant::now(),
        authenticated: false,
        user: "default".into(),
        level: server.default_level,
        proto: 2,
        name: None,
        lib_name: String::new(),
        lib_ver: String::new(),
        multi: None,
        multi_failed: false,
        last_write: None,
        cursors: super::cursors::Cursors::new(),
    };
    let mut input = BytesMut::with_capacity(INITIAL_BUFFER_BYTES);
    let mut output = BytesMut::with_capacity(INITIAL_BUFFER_BYTES);
    // The node's byte budget (shared with the QUIC door) counts this
    // connection's buffers.
    let mut account = Account::new(server.budget.clone());
    if !buffers_fit(&mut wr, &server, peer, &mut account, &input, &output).await {
        return;
    }
    let mut stop = stop;
    // A request taken off the input while gathering a batch that does not
    // belong to it: the next to execute.
    let mut held: Option<Result<Vec<Bytes>, frame::ProtocolError>> = None;
    loop {
        // Execute every complete request, in order.
        loop {
            let next = match held.take() {
                Some(r) => Some(r),
                None => frame::next_request(&mut input).transpose(),
            };
            let request = match next {
                Some(Ok(r)) => r,
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "RESP protocol error");
                    Reply::error(format!("ERR {e}")).encode(session.proto, &mut output);
                    let _ = flush(&mut wr, &mut output).await;
                    return;
                }
            };
            if request.is_empty() {
                continue;
            }
            if let Some(first) = local::candidate(&server, &session, &request) {
                // A run of pipelined commands the node serves alone: one
                // engine job for all of them (see `local`).
                let mut batch = vec![first];
                while batch.len() < local::MAX_BATCH_COMMANDS && !*stop.borrow() {
                    match frame::next_request(&mut input) {
                        Ok(None) => break,
                        Ok(Some(r)) if r.is_empty() => {}
                        Ok(Some(r)) => match local::candidate(&server, &session, &r) {
                            Some(c) => batch.push(c),
                            None => {
                                held = Some(Ok(r));
                                break;
                            }
                        },
                        Err(e) => {
                            held = Some(Err(e));
                            break;
                        }
                    }
                }
                while !batch.is_empty() {
                    let n = batch.len() as u64;
                    server.in_flight.fetch_add(n, Ordering::AcqRel);
                    let (replies, rest) = local::execute(&server, &mut session, batch).await;
                    server.in_flight.fetch_sub(n, Ordering::AcqRel);
                    server
                        .commands_total
                        .fetch_add(replies.len() as u64, Ordering::Relaxed);
                    batch = rest;
                    for reply in replies {
                        reply.encode(session.proto, &mut output);
                    }
                    if !buffers_fit(&mut wr, &server, peer, &mut account, &input, &output).await {
                        return;
                    }
                    if *stop.borrow() {
                        let _ = flush(&mut wr, &mut output).await;
                        return;
                    }
                    if output.len() >= FLUSH_BYTES && flush(&mut wr, &mut output).await.is_err() {
                        tracing::info!(%peer, "RESP client disconnected: not reading its replies");
                        return;
                    }
                }
                continue;
            }
            server.in_flight.fetch_add(1, Ordering::AcqRel);
            server.commands_total.fetch_add(1, Ordering::Relaxed);
            let (reply, after) = handle(&server, &mut session, request).await;
            server.in_flight.fetch_sub(1, Ordering::AcqRel);
            reply.encode(session.proto, &mut output);
            drop(reply);
            if !buffers_fit(&mut wr, &server, peer, &mut account, &input, &output).await {
                return;
            }
            if after == After::Close || *stop.borrow() {
                let _ = flush(&mut wr, &mut output).await;
                return;
            }
            if output.len() >= FLUSH_BYTES && flush(&mut wr, &mut output).await.is_err() {
                tracing::info!(%peer, "RESP client disconnected: not reading its replies");
                return;
            }
        }
        if flush(&mut wr, &mut output).await.is_err() {
            return;
        }
        // Give back what a large request or reply made the buffers grow to.
        if output.capacity() > SHRINK_ABOVE_BYTES {
            output = BytesMut::with_capacity(INITIAL_BUFFER_BYTES);
        }
        if input.is_empty() && input.capacity() > SHRINK_ABOVE_BYTES {
            input = BytesMut::with_capacity(INITIAL_BUFFER_BYTES);
        }
        // Read more.
        if !session.authenticated && input.len() > MAX_UNAUTHENTICATED_QUERY_BYTES {
            // Nothing but AUTH, HELLO or QUIT may come first, and they are
            // small: a stranger does not get to make the node buffer 20 MiB.
            Reply::error("NOAUTH Authentication required.").encode(session.proto, &mut output);
            let _ = flush(&mut wr, &mut output).await;
            return;
        }
        if input.len() >= MAX_QUERY_BUFFER_BYTES {
            // Unreachable while the parser enforces the request limit; a
            // second line of defence.
            Reply::error("ERR Protocol error: query buffer limit")
                .encode(session.proto, &mut output);
            let _ = flush(&mut wr, &mut output).await;
            return;
        }
        let wait = if input.is_empty() {
            IDLE_TIMEOUT
        } else {
            PARTIAL_REQUEST_TIMEOUT
        };
        // Count the read buffer before it grows.
        let more = READ_CHUNK.min(MAX_QUERY_BUFFER_BYTES - input.len());
        let bytes = input.capacity().max(input.len() + more) + output.capacity();
        if account.set(bytes).is_err() {
            over_budget(&mut wr, &server, peer, bytes).await;
            return;
        }
        input.reserve(more);
        let _ = account.set(input.capacity() + output.capacity());
        let read = tokio::select! {
            r = tokio::time::timeout(wait, rd.read_buf(&mut input)) => r,
            _ = stop.changed() => return,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => {
                tracing::debug!(%peer, partial = !input.is_empty(), "RESP client timed out");
                return;
            }
        }
    }
}

/// Writes out `output`, failing if the peer makes no progress for
/// [`WRITE_STALL_TIMEOUT`].
/// Whether this connection's buffers are within their limits after replies
/// were encoded: the output-buffer limit, and the node's byte budget (which
/// counts both buffers). `false`: the connection must close (logged; over
/// the budget the client is told).
async fn buffers_fit<W: AsyncWrite + Unpin>(
    wr: &mut W,
    server: &RespServer,
    peer: SocketAddr,
    account: &mut Account,
    input: &BytesMut,
    output: &BytesMut,
) -> bool {
    if output.len() > MAX_OUTPUT_BUFFER_BYTES {
        tracing::warn!(%peer, bytes = output.len(), "RESP client disconnected: output buffer limit");
        return false;
    }
    let bytes = input.capacity() + output.capacity();
    if account.set(bytes).is_ok() {
        return true;
    }
    over_budget(wr, server, peer, bytes).await;
    false
}

/// Tells the client the node's byte budget is exhausted before closing:
/// best effort (the error line is tiny, and a client that does not read it
/// is not waited for).
async fn over_budget<W: AsyncWrite + Unpin>(
    wr: &mut W,
    server: &RespServer,
    peer: SocketAddr,
    bytes: usize,
) {
    server.over_budget.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%peer, bytes, "RESP client disconnected: the node's client memory budget is exhausted");
    let _ = tokio::time::timeout(
        Duration::from_millis(100),
        wr.write_all(b"-ERR the node's client memory budget is exhausted; retry later\r\n"),
    )
    .await;
}

async fn flush<W: AsyncWrite + Unpin>(wr: &mut W, output: &mut BytesMut) -> Result<(), ()> {
    while !output.is_empty() {
        match tokio::time::timeout(WRITE_STALL_TIMEOUT, wr.write_buf(output)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(()),
        }
    }
    Ok(())
}

struct Decrement<'a>(&'a RespServer);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request: authentication gate, `MULTI` queueing, then the command.
async fn handle(server: &RespServer, session: &mut Session, request: Vec<Bytes>) -> (Reply, After) {
    let may_precede_auth = request.first().is_some_and(|name| {
        [&b"auth"[..], b"hello", b"quit"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
    });
    if !session.authenticated && !may_precede_auth {
        // Even an unknown or malformed command: nothing is revealed
        // before authentication.
        return (
            Reply::error("NOAUTH Authentication required."),
            After::Continue,
        );
    }
    let command = match Command::parse(request) {
        Ok(c) => c,
        Err(e) => {
            if session.multi.is_some() {
                session.multi_failed = true;
            }
            return (Reply::error(e), After::Continue);
        }
    };
    if !session.authenticated
        && !matches!(
            command,
            Command::Auth { .. } | Command::Hello { .. } | Command::Quit
        )
    {
        return (
            Reply::error("NOAUTH Authentication required."),
            After::Continue,
        );
    }
    if let Some(queue) = &mut session.multi {
        match command {
            Command::Exec | Command::Discard | Command::Quit | Command::Multi | Command::Watch => {}
            other => {
                if queue.len() >= MAX_QUEUED_COMMANDS {
                    session.multi_failed = true;
                    return (
                        Reply::error(format!(
                            "ERR a transaction queues at most {MAX_QUEUED_COMMANDS} commands"
                        )),
                        After::Continue,
                    );
                }
                queue.push(other);
                return (Reply::Simple("QUEUED".into()), After::Continue);
            }
        }
    }
    match command {
        Command::Multi => {
            if session.multi.is_some() {
                return (
                    Reply::error("ERR MULTI calls can not be nested"),
                    After::Continue,
                );
            }
            session.multi = Some(Vec::new());
            session.multi_failed = false;
            (Reply::ok(), After::Continue)
        }
        Command::Discard => match session.multi.take() {
            Some(_) => (Reply::ok(), After::Continue),
            None => (Reply::error("ERR DISCARD without MULTI"), After::Continue),
        },
        Command::Exec => {
            let Some(queue) = session.multi.take() else {
                return (Reply::error("ERR EXEC without MULTI"), After::Continue);
            };
            if std::mem::take(&mut session.multi_failed) {
                return (
                    Reply::error("EXECABORT Transaction discarded because of previous errors."),
                    After::Continue,
                );
            }
            // Queued commands run in order, each awaited; no isolation.
            let mut replies = Vec::with_capacity(queue.len());
            let mut after = After::Continue;
            for c in queue {
                let (r, a) = run(server, session, c).await;
                replies.push(r);
                if a == After::Close {
                    after = After::Close;
                }
            }
            (Reply::Array(replies), after)
        }
        Command::Watch if session.multi.is_some() => (
            Reply::error("ERR WATCH inside MULTI is not allowed"),
            After::Continue,
        ),
        other => run(server, session, other).await,
    }
}

/// Executes one command (not `MULTI`/`EXEC`/`DISCARD`).
async fn run(server: &RespServer, session: &mut Session, command: Command) -> (Reply, After) {
    let reply = match command {
        Command::Quit => return (Reply::ok(), After::Close),
        Command::Hello {
            proto,
            auth,
            setname,
        } => conn_cmds::hello(server, session, proto, auth, setname),
        Command::Auth { user, password } => {
            let user = user.unwrap_or_else(|| Bytes::from_static(b"default"));
            conn_cmds::auth(server, session, &user, &password)
        }
        Command::Ping(None) => Reply::Simple("PONG".into()),
        Command::Ping(Some(m)) | Command::Echo(m) => Reply::Bulk(m),
        Command::Select(0) => Reply::ok(),
        Command::Select(_) => Reply::error("ERR DB index is out of range"),
        Command::ClientSetName(n) => {
            session.name = Some(n);
            Reply::ok()
        }
        Command::ClientGetName => session.name.clone().map_or(Reply::Null, Reply::Bulk),
        Command::ClientSetInfo { attr, value } => {
            // Shown by CLIENT INFO; at most a line's worth.
            let value: String = value
                .chars()
                .filter(|c| !c.is_whitespace())
                .take(128)
                .collect();
            if attr == "lib-name" {
                session.lib_name = value;
            } else {
                session.lib_ver = value;
            }
            Reply::ok()
        }
        Command::ClientId => Reply::Integer(session.id as i64),
        Command::ClientInfo => conn_cmds::client_info(session),
        Command::Info(sections) => conn_cmds::info(server, session, &sections),
        Command::Command(sub) => conn_cmds::command(&sub),
        Command::ConfigGet(patterns) => conn_cmds::config_get(&patterns),
        Command::Time => conn_cmds::time(),
        Command::Watch => Reply::error(
            "ERR WATCH is not supported: Meridian's MULTI/EXEC has no isolation to check against \
             (see docs/resp.md)",
        ),
        Command::Unwatch => Reply::ok(),
        Command::Wait {
            replicas,
            timeout_ms,
        } => wait(server, session, replicas, timeout_ms).await,
        Command::WaitAof {
            local,
            replicas,
            timeout_ms,
        } => wait_aof(server, session, local, replicas, timeout_ms).await,
        Command::Multi | Command::Exec | Command::Discard => {
            Reply::error("ERR MULTI, EXEC and DISCARD cannot be queued")
        }
        Command::At { level, inner } => {
            let level = level.resolve(server.default_level);
            data(server, session, level, *inner).await
        }
        data_command => {
            let level = session.level;
            data(server, session, level, data_command).await
        }
    };
    (reply, After::Continue)
}

/// `WAIT numreplicas timeout`: how many of the object's *other* replicas
/// durably hold this connection's last write.
async fn wait(server: &RespServer, session: &Session, replicas: i64, timeout_ms: i64) -> Reply {
    let Some(write) = &session.last_write else {
        return Reply::Integer(0);
    };
    let timeout = if timeout_ms == 0 {
        // Redis: 0 blocks until enough replicas acknowledge. Bounded by
        // the node's longest request timeout.
        Duration::from_millis(crate::config::MAX_REQUEST_TIMEOUT_MS)
    } else {
        Duration::from_millis(timeout_ms as u64)
    };
    let needed = usize::try_from(replicas.max(0)).unwrap_or(usize::MAX);
    let n = server
        .coordinator
        .wait_replicas(write, needed.min(write.other_replicas()), timeout)
        .await;
    Reply::Integer(n as i64)
}

/// `WAITAOF numlocal numreplicas timeout`: `[local, replicas]`, whether
/// this node and how many of the object's other replicas hold this
/// connection's last write durably (fsynced). Meridian has no AOF; its log
/// is the durability point, so this is the same question as Redis's.
async fn wait_aof(
    server: &RespServer,
    session: &Session,
    local: i64,
    replicas: i64,
    timeout_ms: i64,
) -> Reply {
    let Some(write) = &session.last_write else {
        return Reply::Array(vec![Reply::Integer(0), Reply::Integer(0)]);
    };
    let timeout = if timeout_ms == 0 {
        Duration::from_millis(crate::config::MAX_REQUEST_TIMEOUT_MS)
    } else {
        Duration::from_millis(timeout_ms as u64)
    };
    // The local fsync is asked for whenever the caller wants it (numlocal
    // 1); otherwise only what is already known is reported.
    let local_wait = if local > 0 {
        timeout
    } else {
        Duration::from_millis(5)
    };
    let needed = usize::try_from(replicas.max(0)).unwrap_or(usize::MAX);
    let (here, others) = tokio::join!(
        server.coordinator.wait_local_durable(write, local_wait),
        server
            .coordinator
            .wait_replicas(write, needed.min(write.other_replicas()), timeout)
    );
    Reply::Array(vec![
        Reply::Integer(i64::from(here)),
        Reply::Integer(others as i64),
    ])
}

/// A data command at `level`.
async fn data(
    server: &RespServer,
    session: &mut Session,
    level: Consistency,
    command: Command,
) -> Reply {
    let mut d = Data {
        server,
        level,
        last_write: &mut session.last_write,
        cursors: &mut session.cursors,
        writes_done: 0,
    };
    let result: Result<Reply, Failed> = match command {
        Command::Get(k) => strings::get(&mut d, k).await,
        Command::Set {
            key,
            value,
            nx,
            xx,
            get,
            ttl,
        } => strings::set(&mut d, key, value, (nx, xx, get), ttl).await,
        Command::MGet(keys) => strings::mget(&mut d, keys).await,
        Command::MSet(pairs) => strings::mset(&mut d, pairs).await,
        Command::IncrBy { key, delta } => strings::incr_by(&mut d, key, delta).await,
        Command::StrLen(k) => strings::strlen(&mut d, k).await,
        Command::GetDel(k) => strings::getdel(&mut d, k).await,
        Command::GetEx { key, ttl } => expire::getex(&mut d, key, ttl).await,
        Command::Expire {
            key,
            deadline,
            condition,
        } => expire::expire(&mut d, key, deadline, condition).await,
        Command::Ttl { key, ms, absolute } => expire::ttl(&mut d, key, ms, absolute).await,
        Command::Persist(k) => expire::persist(&mut d, k).await,
        Command::SAdd { key, members } => sets::sadd(&mut d, key, members).await,
        Command::SRem { key, members } => sets::srem(&mut d, key, members).await,
        Command::SMembers(k) => sets::smembers(&mut d, k).await,
        Command::SIsMember { key, member } => sets::sismember(&mut d, key, member).await,
        Command::SMIsMember { key, members } => sets::smismember(&mut d, key, members).await,
        Command::SCard(k) => sets::scard(&mut d, k).await,
        Command::SRandMember { key, count } => sets::srandmember(&mut d, key, count).await,
        Command::SPop { key, count } => sets::spop(&mut d, key, count).await,
        Command::HSet { key, pairs, hmset } => hashes::hset(&mut d, key, pairs, hmset).await,
        Command::HSetNx { key, field, value } => hashes::hsetnx(&mut d, key, field, value).await,
        Command::HGet { key, field } => hashes::hget(&mut d, key, field).await,
        Command::HMGet { key, fields } => hashes::hmget(&mut d, key, fields).await,
        Command::HGetAll(k) => hashes::hgetall(&mut d, k).await,
        Command::HScan {
            key,
            pattern,
            novalues,
        } => hashes::hscan(&mut d, key, pattern, novalues).await,
        Command::HDel { key, fields } => hashes::hdel(&mut d, key, fields).await,
        Command::HIncrBy { key, field, delta } => hashes::hincrby(&mut d, key, field, delta).await,
        Command::HExists { key, field } => hashes::hexists(&mut d, key, field).await,
        Command::HLen(k) => hashes::hlen(&mut d, k).await,
        Command::HKeys(k) => hashes::hkeys(&mut d, k).await,
        Command::HVals(k) => hashes::hvals(&mut d, k).await,
        Command::HStrLen { key, field } => hashes::hstrlen(&mut d, key, field).await,
        Command::Del(keys) => keys::del(&mut d, keys).await,
        Command::Exists(keys) => keys::exists(&mut d, keys).await,
        Command::Type(k) => keys::type_of(&mut d, k).await,
        Command::SScan {
            key,
            cursor,
            pattern,
            count,
        } => sets::sscan(&mut d, key, cursor, pattern, count).await,
        Command::Scan {
            cursor,
            pattern,
            count,
            type_name,
        } => keys::scan(&mut d, cursor, pattern, count, type_name).await,
        Command::Keys(pattern) => keys::keys(&mut d, pattern).await,
        Command::DbSize => keys::dbsize(&mut d).await,
        Command::RandomKey => keys::randomkey(&mut d).await,
        other => Err(Failed(Reply::error(format!(
            "ERR internal error: {other:?} is not a data command"
        )))),
    };
    result.unwrap_or_else(|Failed(e)| e)
}
