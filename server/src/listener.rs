//! The client listener: QUIC (ALPN `meridian/2`), the cluster's client
//! certificate required, then the access token before anything else.
//!
//! # Admission, in three stages, each with its own cap
//! 1. **Handshakes** (QUIC + TLS, before the certificate is known): at most
//!    [`MAX_CLIENT_HANDSHAKES`] in progress; past it new attempts are
//!    refused at once. Past [`RETRY_HANDSHAKES`] in progress, an attempt
//!    from an address that has not proved it can receive our packets is
//!    answered with a stateless QUIC Retry (address validation: a spoofed
//!    flood costs the node one packet each, no state, no crypto). Each
//!    handshake has [`HANDSHAKE_TIMEOUT`].
//! 2. **Pending** (handshake done, token not yet shown): at most
//!    [`MAX_PENDING_CLIENT_CONNECTIONS`], each for at most
//!    [`HELLO_TIMEOUT`], with one stream and a [`HELLO_RECEIVE_WINDOW_BYTES`]
//!    window. They do not count against `max_client_connections`: a
//!    certificate holder without the token cannot lock real clients out.
//! 3. **Authenticated**: at most `max_client_connections`; one past the
//!    limit is answered `Overloaded` and closed. Only now does the
//!    connection get `max_in_flight_per_connection` streams and its full
//!    receive window.
//!
//! Handshake failures, wrong tokens and refusals are counted
//! (`meridian_client_*` metrics) and logged at WARN at most
//! [`WARNINGS_PER_INTERVAL`] times per [`WARNING_INTERVAL`]; the rest are
//! only counted (`meridian_client_warnings_suppressed_total`), so a flood
//! of bad handshakes cannot flood the log.
//!
//! # Requests
//! One bidirectional stream per request, at most
//! `max_in_flight_per_connection` at once (QUIC stream credit enforces it;
//! a semaphore is the second line, answering `Overloaded`). Every request
//! frame is size-capped and validated; a malformed one is answered
//! `InvalidArgument` on its own stream and changes nothing.
//!
//! # Memory: what bounds it
//! * Before a request body is allocated, twice its length (the body, then
//!   its decoded form) plus [`RESPONSE_RESERVE_BYTES`] is reserved from the
//!   connection's budget ([`crate::budget::CONNECTION_BUFFER_BYTES`]) and
//!   the node's (`client_buffer_bytes`). Neither is waited for: past
//!   either, the request is refused `Overloaded` (definite) and its stream
//!   stopped, which also frees what QUIC buffered of it. The reservation
//!   is held until the answer is written; an answer larger than it (a
//!   large read) must fit the budgets too or is replaced by `Overloaded`
//!   (a read has no effect). Set requests' member counts and sizes are
//!   checked on the archived bytes, before anything is decoded.
//! * A request must arrive whole within [`REQUEST_READ_TIMEOUT`] and its
//!   answer be written within [`RESPONSE_WRITE_TIMEOUT`] (then the stream
//!   is reset and everything it held freed): a client that withholds the
//!   end of a frame or never reads its answers pins nothing for longer.
//! * What QUIC buffers by itself is bounded by the windows
//!   ([`crate::tls`]): per authenticated connection at most
//!   [`crate::tls::CLIENT_RECEIVE_WINDOW_BYTES`] of request data the node
//!   has not read yet and [`crate::tls::CLIENT_SEND_WINDOW_BYTES`] of
//!   answers the client has not acknowledged.
//!
//! So the node holds for its clients at most `[limits] client_memory_bytes`
//! (default 3 GiB), checked at load to cover `max_client_connections` ×
//! the windows, the pending connections and handshakes, and a budget of at
//! least two connections' worth (see
//! [`crate::config::LimitsConfig::client_buffer_bytes`]). One hostile
//! authenticated connection holds at most
//! [`crate::budget::CONNECTION_BUFFER_BYTES`] + its windows (74 MiB):
//! `tests/hostile.rs` checks the process's RSS against that with a client
//! withholding frames on 256 streams, never reading its answers, and a
//! flood of handshakes, while another client keeps being served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meridian_client::wire::{
    self, ArchivedRequest, Hello, HelloReply, MAX_FRAME_BYTES, PROTOCOL_VERSION, Request, Response,
    WireError,
};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio::sync::{Semaphore, watch};

use crate::budget::{ByteBudget, CONNECTION_BUFFER_BYTES, ConnectionBudget, Held};
use crate::coordinator::Coordinator;
use crate::engine_pool::with_share;
use crate::metrics::Origin;
use crate::tasks::TaskTracker;

/// How long a new connection has to authenticate.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest `Hello` frame, in bytes: a version and a token.
pub const MAX_HELLO_BYTES: usize = 64 << 10;

/// How long a QUIC + TLS handshake may take: a few round trips, even on a
/// slow link; a client still handshaking after this is gone or hostile.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes in progress at once. A handshake costs the node a TLS
/// key exchange and a certificate check; 256 at once is far above any
/// reconnect storm of real clients (each handshake takes milliseconds) and
/// bounds what a flood makes the node compute and hold.
pub const MAX_CLIENT_HANDSHAKES: usize = 256;

/// Handshakes in progress past which an unvalidated address gets a QUIC
/// Retry instead of a handshake: under load, a client must first prove it
/// receives packets at its address (one extra round trip), so spoofed
/// floods cost no state. Below it, no client pays the round trip.
pub const RETRY_HANDSHAKES: usize = 32;

/// Most connections that finished the handshake but have not shown the
/// token yet. Each lasts at most [`HELLO_TIMEOUT`] with one stream and a
/// [`HELLO_RECEIVE_WINDOW_BYTES`] window; counted apart from authenticated
/// connections so holders of a certificate without the token cannot use up
/// `max_client_connections`.
pub const MAX_PENDING_CLIENT_CONNECTIONS: usize = 256;

/// Receive window of a connection before it authenticates, in bytes: a
/// `Hello` ([`MAX_HELLO_BYTES`]) and its framing, nothing more.
pub const HELLO_RECEIVE_WINDOW_BYTES: u32 = 128 << 10;

/// How long a whole request frame (length prefix and body) may take to
/// arrive, from the stream's opening: the largest frame (20 MiB) at
/// 1 MiB/s, with room. A client that withholds the end of a frame holds
/// its reservation no longer.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long writing an answer may take: the largest answer at 1 MiB/s.
/// A client that does not read its answers holds them no longer (the
/// stream is reset, which frees what QUIC buffered for it).
pub const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes reserved with every request for its answer, so that the answers
/// of writes (a counter, a register's value no larger than the request, a
/// set's count) and of small reads never need more than the request
/// reserved.
pub const RESPONSE_RESERVE_BYTES: usize = 64 << 10;

/// Request frames up to this size are validated and decoded on the async
/// worker; larger ones on the engine pool (validating and decoding 20 MiB
/// takes milliseconds of CPU).
pub const INLINE_CODEC_BYTES: usize = 64 << 10;

/// Most WARN lines about failed handshakes, bad hellos and refusals per
/// [`WARNING_INTERVAL`]; more are counted only.
pub const WARNINGS_PER_INTERVAL: u64 = 10;

/// See [`WARNINGS_PER_INTERVAL`].
pub const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// How long a refused client is given to read the refusal before the
/// connection is closed (closing at once may discard it).
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// During shutdown, how long a drained request waits for the client to
/// have its answer before its task ends (and the endpoint may close).
const REPLY_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// How long shutdown waits for in-flight requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// QUIC application error codes the listener closes or resets with.
const CODE_REFUSED: u32 = 1;
const CODE_BUSY: u32 = 2;
const CODE_TIMEOUT: u32 = 3;

/// Checks a client's access token.
pub type TokenCheck = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Counters and gauges of the client door (rendered by
/// [`crate::exposition`]).
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Handshakes in progress.
    pub handshakes: AtomicU64,
    /// Connections handshaken but not yet authenticated.
    pub pending: AtomicU64,
    /// Authenticated connections.
    pub connections: AtomicU64,
    /// Requests being served.
    pub in_flight: AtomicU64,
    /// Handshake attempts refused (too many in progress).
    pub handshakes_refused: AtomicU64,
    /// Handshake attempts answered with a Retry.
    pub handshakes_retried: AtomicU64,
    /// Handshakes that failed or timed out.
    pub handshake_failures: AtomicU64,
    /// Connections closed for want of a pending slot.
    pub pending_refused: AtomicU64,
    /// Connections refused after the handshake: bad hello, wrong token,
    /// version, too many connections.
    pub refused: AtomicU64,
    /// Requests whose frame did not arrive within [`REQUEST_READ_TIMEOUT`].
    pub request_timeouts: AtomicU64,
    /// Answers not written within [`RESPONSE_WRITE_TIMEOUT`].
    pub response_timeouts: AtomicU64,
    /// Requests or answers refused for want of budget.
    pub over_budget: AtomicU64,
    /// WARN lines not written ([`WARNINGS_PER_INTERVAL`]).
    pub warnings_suppressed: AtomicU64,
}

/// Lets at most [`WARNINGS_PER_INTERVAL`] warnings through per
/// [`WARNING_INTERVAL`] and counts the rest.
#[derive(Debug)]
pub struct WarnLimiter {
    window: std::sync::Mutex<(Instant, u64)>,
    per_interval: u64,
    interval: Duration,
}

impl WarnLimiter {
    pub fn new(per_interval: u64, interval: Duration) -> WarnLimiter {
        WarnLimiter {
            window: std::sync::Mutex::new((Instant::now(), 0)),
            per_interval,
            interval,
        }
    }

    /// Whether this warning may be logged; if not, it is counted in
    /// `suppressed`.
    pub fn allow(&self, suppressed: &AtomicU64) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(w.0) >= self.interval {
            *w = (now, 0);
        }
        if w.1 < self.per_interval {
            w.1 += 1;
            true
        } else {
            suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// Logs at WARN through the listener's limiter.
macro_rules! limited_warn {
    ($listener:expr, $($arg:tt)+) => {
        if $listener.warnings.allow(&$listener.stats.warnings_suppressed) {
            tracing::warn!($($arg)+);
        }
    };
}

pub struct ClientListener {
    pub(crate) endpoint: Endpoint,
    pub(crate) coordinator: Arc<Coordinator>,
    pub(crate) token_check: TokenCheck,
    pub(crate) max_connections: u64,
    pub(crate) max_in_flight: usize,
    pub(crate) stats: Arc<ListenerStats>,
    pub(crate) budget: ByteBudget,
    pub(crate) warnings: WarnLimiter,
}

impl std::fmt::Debug for ClientListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientListener").finish_non_exhaustive()
    }
}

/// What to do with a new connection attempt, given the handshakes in
/// progress and whether its address is validated (it came back with a
/// Retry token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Accept,
    Retry,
    Refuse,
}

/// The handshake admission rule (the listener's module docs).
pub fn admission(handshakes_in_progress: usize, address_validated: bool) -> Admission {
    if handshakes_in_progress >= MAX_CLIENT_HANDSHAKES {
        Admission::Refuse
    } else if handshakes_in_progress >= RETRY_HANDSHAKES && !address_validated {
        Admission::Retry
    } else {
        Admission::Accept
    }
}

/// Reads one `[len][payload]` frame of at most `max` bytes (the `Hello`).
async fn read_frame(recv: &mut RecvStream, max: usize) -> Result<Vec<u8>, String> {
    wire::read_frame(recv, max).await.map_err(|e| match e {
        wire::ReadFrameError::Read(e) => format!("reading frame: {e}"),
        wire::ReadFrameError::Length(e) => e.to_string(),
    })
}

/// Writes one encoded frame ([`wire::encode`]) and finishes the stream,
/// within [`RESPONSE_WRITE_TIMEOUT`]; past it the stream is reset, which
/// discards what QUIC still buffers for it. `false` if the write failed or
/// timed out.
async fn reply(send: &mut SendStream, frame: &[u8]) -> bool {
    match tokio::time::timeout(RESPONSE_WRITE_TIMEOUT, send.write_all(frame)).await {
        Ok(Ok(())) => {
            // Never wait for the peer's acknowledgement (`stopped()`).
            let _ = send.finish();
            true
        }
        Ok(Err(_)) => false,
        Err(_) => {
            let _ = send.reset(VarInt::from_u32(CODE_TIMEOUT));
            false
        }
    }
}

/// Validates a request payload, checks its limits on the archive, then
/// decodes it.
pub fn decode_request(payload: &[u8]) -> Result<Request, WireError> {
    let malformed = |e: String| WireError::InvalidArgument {
        message: format!("malformed request: {e}"),
    };
    if payload.len() > MAX_FRAME_BYTES {
        return Err(malformed(format!(
            "frame of {} bytes exceeds the {MAX_FRAME_BYTES}-byte limit",
            payload.len()
        )));
    }
    let archived = rkyv::access::<ArchivedRequest, rkyv::rancor::Error>(payload)
        .map_err(|e| malformed(e.to_string()))?;
    wire::check_archived(&archived.op).map_err(|e| WireError::InvalidArgument {
        message: e.to_string(),
    })?;
    rkyv::deserialize::<Request, rkyv::rancor::Error>(archived)
        .map_err(|e| malformed(e.to_string()))
}

/// Decrements a gauge when dropped.
struct Gauge(Arc<ListenerStats>, fn(&ListenerStats) -> &AtomicU64);

impl Gauge {
    /// Increments `which` if it is below `max`.
    fn try_enter(
        stats: &Arc<ListenerStats>,
        which: fn(&ListenerStats) -> &AtomicU64,
        max: u64,
    ) -> Option<Gauge> {
        let counter = which(stats);
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Gauge(stats.clone(), which))
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::AcqRel);
    }
}

impl ClientListener {
    /// Accepts connections until `stop` fires. Connections and requests
    /// are spawned through `tasks`; after `stop`, a connection accepts no
    /// new request but the ones in flight finish and answer.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>, tasks: TaskTracker) {
        loop {
            let incoming = tokio::select! {
                i = self.endpoint.accept() => i,
                _ = stop.changed() => return,
            };
            let Some(incoming) = incoming else {
                return;
            };
            let in_progress = self.stats.handshakes.load(Ordering::Acquire) as usize;
            match admission(in_progress, incoming.remote_address_validated()) {
                Admission::Refuse => {
                    self.stats
                        .handshakes_refused
                        .fetch_add(1, Ordering::Relaxed);
                    limited_warn!(self, remote = %incoming.remote_address(), limit = MAX_CLIENT_HANDSHAKES, "client handshake refused: too many in progress");
                    incoming.refuse();
                    continue;
                }
                Admission::Retry if incoming.may_retry() => {
                    self.stats
                        .handshakes_retried
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = incoming.retry();
                    continue;
                }
                Admission::Retry | Admission::Accept => {}
            }
            let remote = incoming.remote_address();
            let handshake = Gauge::try_enter(&self.stats, |s| &s.handshakes, u64::MAX)
                .expect("no limit on this gauge");
            let this = self.clone();
            let stop = stop.clone();
            let requests = tasks.clone();
            tasks.spawn(async move {
                let connected = match incoming.accept() {
                    Ok(connecting) => tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
                        .await
                        .map_err(|_| "timed out".to_owned())
                        .and_then(|r| r.map_err(|e| e.to_string())),
                    Err(e) => Err(e.to_string()),
                };
                drop(handshake);
                match connected {
                    Ok(conn) => this.serve_connection(conn, stop, requests).await,
                    Err(e) => {
                        this.stats
                            .handshake_failures
                            .fetch_add(1, Ordering::Relaxed);
                        limited_warn!(this, %remote, error = %e, "client handshake failed");
                    }
                }
            });
        }
    }

    async fn refuse(&self, conn: &Connection, mut send: SendStream, error: WireError) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        reply(&mut send, &wire::encode(&HelloReply::Refused(error))).await;
        // Let the refusal reach the client before closing.
        let _ = tokio::time::timeout(REFUSAL_LINGER, conn.closed()).await;
        conn.close(VarInt::from_u32(CODE_REFUSED), b"refused");
    }

    /// Authenticates a handshaken connection: `Some(send stream of the
    /// hello)` once the token is right, else the connection is refused.
    async fn authenticate(&self, conn: &Connection, remote: SocketAddr) -> Option<SendStream> {
        let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
            let (send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
            let payload = read_frame(&mut recv, MAX_HELLO_BYTES).await;
            Ok::<_, String>((send, payload))
        })
        .await;
        let (send, payload) = match hello {
            Ok(Ok((send, Ok(payload)))) => (send, payload),
            Ok(Ok((send, Err(e)))) => {
                // Oversized, truncated or empty: refused like a bad token.
                limited_warn!(self, %remote, error = %e, "client refused: bad hello frame");
                self.refuse(
                    conn,
                    send,
                    WireError::Unauthorized {
                        message: format!("bad hello frame: {e}"),
                    },
                )
                .await;
                return None;
            }
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "client went away before hello");
                return None;
            }
            Err(_) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                limited_warn!(self, %remote, "client sent no hello in time");
                conn.close(VarInt::from_u32(CODE_REFUSED), b"no hello");
                return None;
            }
        };
        let hello: Hello = match wire::decode(&payload) {
            Ok(h) => h,
            Err(e) => {
                limited_warn!(self, %remote, error = %e, "client refused: malformed hello");
                self.refuse(
                    conn,
                    send,
                    WireError::Unauthorized {
                        message: format!("malformed hello: {e}"),
                    },
                )
                .await;
                return None;
            }
        };
        if hello.version != PROTOCOL_VERSION {
            self.refuse(
                conn,
                send,
                WireError::InvalidArgument {
                    message: format!(
                        "protocol version {} not supported (this node speaks {PROTOCOL_VERSION})",
                        hello.version
                    ),
                },
            )
            .await;
            return None;
        }
        if !(self.token_check)(&hello.token) {
            limited_warn!(self, %remote, "client refused: wrong or missing token");
            self.refuse(
                conn,
                send,
                WireError::Unauthorized {
                    message: if hello.token.is_empty() {
                        "no access token".into()
                    } else {
                        "wrong access token".into()
                    },
                },
            )
            .await;
            return None;
        }
        Some(send)
    }

    async fn serve_connection(
        self: Arc<Self>,
        conn: Connection,
        mut stop: watch::Receiver<bool>,
        tasks: TaskTracker,
    ) {
        let remote = conn.remote_address();
        // Stage 2: a pending slot, until the token is shown.
        let Some(pending) = Gauge::try_enter(
            &self.stats,
            |s| &s.pending,
            MAX_PENDING_CLIENT_CONNECTIONS as u64,
        ) else {
            self.stats.pending_refused.fetch_add(1, Ordering::Relaxed);
            limited_warn!(self, %remote, limit = MAX_PENDING_CLIENT_CONNECTIONS, "client refused: too many connections waiting to authenticate");
            conn.close(VarInt::from_u32(CODE_BUSY), b"busy");
            return;
        };
        let Some(mut send) = self.authenticate(&conn, remote).await else {
            return;
        };
        drop(pending);
        // Stage 3: an authenticated slot.
        let Some(_connection) =
            Gauge::try_enter(&self.stats, |s| &s.connections, self.max_connections)
        else {
            limited_warn!(self, %remote, limit = self.max_connections, "client refused: too many connections");
            self.refuse(
                &conn,
                send,
                WireError::Overloaded {
                    message: format!(
                        "this node serves at most {} client connections",
                        self.max_connections
                    ),
                },
            )
            .await;
            return;
        };
        // The connection's full allowance, now that it is authenticated.
        conn.set_receive_window(crate::tls::CLIENT_RECEIVE_WINDOW_BYTES.into());
        conn.set_max_concurrent_bi_streams(VarInt::from_u32(self.max_in_flight as u32));
        reply(
            &mut send,
            &wire::encode(&HelloReply::Ok {
                node: self.coordinator.node.to_string(),
                region: self.coordinator.region.clone(),
            }),
        )
        .await;

        let budget = Arc::new(ConnectionBudget::new(
            self.budget.clone(),
            CONNECTION_BUFFER_BYTES,
        ));
        // At most half the engine pool for this connection's requests.
        let share = self.coordinator.pool.share();
        let slots = Arc::new(Semaphore::new(self.max_in_flight));
        loop {
            let stream = tokio::select! {
                s = conn.accept_bi() => s,
                // Shutdown: no new requests; the ones in flight finish on
                // their own tasks (the node closes the endpoint after them).
                _ = stop.changed() => return,
            };
            let (mut send, recv) = match stream {
                Ok(s) => s,
                Err(_) => return,
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                let this = self.clone();
                tasks.spawn(async move {
                    let mut recv = recv;
                    let _ = recv.stop(VarInt::from_u32(CODE_BUSY));
                    reply(
                        &mut send,
                        &wire::encode(&Response::Err(WireError::Overloaded {
                            message: format!(
                                "at most {} requests in flight per connection",
                                this.max_in_flight
                            ),
                        })),
                    )
                    .await;
                });
                continue;
            };
            let this = self.clone();
            // The request holds the connection: quinn closes a connection
            // whose every handle is gone, and after a shutdown signal the
            // accept loop's handle is.
            let conn = conn.clone();
            let stop = stop.clone();
            let budget = budget.clone();
            let share = share.clone();
            tasks.spawn(async move {
                this.stats.in_flight.fetch_add(1, Ordering::AcqRel);
                with_share(share, this.serve_request(&mut send, recv, &budget)).await;
                // During shutdown the endpoint is closed once every request
                // task has ended, and a close discards unsent stream data:
                // wait (bounded) until the client has the answer. In normal
                // operation no one waits for that (it costs a delayed ACK).
                if *stop.borrow() {
                    let _ = tokio::time::timeout(REPLY_FLUSH_TIMEOUT, send.stopped()).await;
                }
                drop(conn);
                this.stats.in_flight.fetch_sub(1, Ordering::AcqRel);
                drop(permit);
            });
        }
    }

    /// Answers `error` on the request's stream and stops reading it.
    async fn refuse_request(&self, send: &mut SendStream, recv: &mut RecvStream, error: WireError) {
        let _ = recv.stop(VarInt::from_u32(CODE_REFUSED));
        reply(send, &wire::encode(&Response::Err(error))).await;
    }

    async fn serve_request(
        &self,
        send: &mut SendStream,
        mut recv: RecvStream,
        budget: &ConnectionBudget,
    ) {
        let deadline = tokio::time::Instant::now() + REQUEST_READ_TIMEOUT;
        let invalid = |message: String| WireError::InvalidArgument { message };
        // The length prefix, checked against the frame limit.
        let mut prefix = [0u8; 4];
        match tokio::time::timeout_at(deadline, recv.read_exact(&mut prefix)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let error = invalid(format!("bad request frame: reading frame: {e}"));
                return self.refuse_request(send, &mut recv, error).await;
            }
            Err(_) => return self.request_timed_out(send, &mut recv).await,
        }
        let len = match wire::frame_len(prefix, MAX_FRAME_BYTES) {
            Ok(len) => len,
            Err(e) => {
                let error = invalid(format!("bad request frame: {e}"));
                return self.refuse_request(send, &mut recv, error).await;
            }
        };
        // Reserve before allocating: the body, its decoded form, an answer.
        let reserve = 2 * len + RESPONSE_RESERVE_BYTES;
        let mut held = match budget.reserve(reserve) {
            Ok(h) => h,
            Err(e) => {
                self.stats.over_budget.fetch_add(1, Ordering::Relaxed);
                let error = WireError::Overloaded {
                    message: format!("{e}; retry later"),
                };
                return self.refuse_request(send, &mut recv, error).await;
            }
        };
        let mut payload = vec![0u8; len];
        match tokio::time::timeout_at(deadline, recv.read_exact(&mut payload)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                drop(payload);
                let error = invalid(format!("bad request frame: reading frame: {e}"));
                return self.refuse_request(send, &mut recv, error).await;
            }
            Err(_) => {
                drop(payload);
                return self.request_timed_out(send, &mut recv).await;
            }
        }
        let decoded = if len <= INLINE_CODEC_BYTES {
            decode_request(&payload)
        } else {
            match self
                .coordinator
                .pool
                .compute(move || decode_request(&payload))
                .await
            {
                Some(d) => d,
                None => return,
            }
        };
        let request = match decoded {
            Ok(r) => r,
            Err(error) => {
                reply(send, &wire::encode(&Response::Err(error))).await;
                return;
            }
        };
        let write = request.op.is_write();
        let response = self.coordinator.execute(request, Origin::Quic).await;
        // Encoded here, with no await between the engine pool handing the
        // value back and the budget check: at most as many answers exist
        // outside the budget as the pool runs calls (a second trip through
        // the pool would let every finished read wait, value in hand, for
        // a slot). Encoding is a copy of the value, a few ms for the
        // largest object.
        let frame = wire::encode(&response);
        drop(response);
        let frame = self.fit_answer(budget, &mut held, frame, write);
        if !reply(send, &frame).await {
            self.stats.response_timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn request_timed_out(&self, send: &mut SendStream, recv: &mut RecvStream) {
        self.stats.request_timeouts.fetch_add(1, Ordering::Relaxed);
        let error = WireError::InvalidArgument {
            message: format!(
                "the request frame did not arrive within {} s",
                REQUEST_READ_TIMEOUT.as_secs()
            ),
        };
        self.refuse_request(send, recv, error).await;
    }

    /// Makes `held` cover the answer `frame`: shrinks it (the request's own
    /// bytes are gone) or grows it without waiting. A read whose answer
    /// does not fit is answered `Overloaded` instead (it had no effect); a
    /// write's answer always fits what its request reserved.
    fn fit_answer(
        &self,
        budget: &ConnectionBudget,
        held: &mut Held,
        frame: Vec<u8>,
        write: bool,
    ) -> Vec<u8> {
        match budget.resize(held, frame.len()) {
            Ok(()) => frame,
            Err(e) => {
                debug_assert!(
                    !write,
                    "a write's answer of {} bytes outgrew its request's reservation of {}",
                    frame.len(),
                    held.bytes()
                );
                if write {
                    return frame;
                }
                self.stats.over_budget.fetch_add(1, Ordering::Relaxed);
                drop(frame);
                wire::encode(&Response::Err(WireError::Overloaded {
                    message: format!("the answer does not fit: {e}; retry later"),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_client::wire::{Consistency, MAX_KEY_BYTES, MAX_VALUE_BYTES, Operation};

    #[test]
    fn handshakes_are_retried_then_refused_under_load() {
        assert_eq!(admission(0, false), Admission::Accept);
        assert_eq!(admission(RETRY_HANDSHAKES - 1, false), Admission::Accept);
        assert_eq!(admission(RETRY_HANDSHAKES, false), Admission::Retry);
        // A client that came back with a Retry token is not retried again.
        assert_eq!(admission(RETRY_HANDSHAKES, true), Admission::Accept);
        assert_eq!(admission(MAX_CLIENT_HANDSHAKES, true), Admission::Refuse);
        assert_eq!(admission(MAX_CLIENT_HANDSHAKES, false), Admission::Refuse);
    }

    #[test]
    fn warnings_are_limited_per_interval_and_the_rest_counted() {
        let limiter = WarnLimiter::new(3, Duration::from_secs(3600));
        let suppressed = AtomicU64::new(0);
        let allowed = (0..100).filter(|_| limiter.allow(&suppressed)).count();
        assert_eq!(allowed, 3);
        assert_eq!(suppressed.load(Ordering::Relaxed), 97);
        let fresh = WarnLimiter::new(1, Duration::ZERO);
        assert!(fresh.allow(&suppressed) && fresh.allow(&suppressed));
    }

    fn frame(op: Operation) -> Vec<u8> {
        wire::encode(&Request {
            op,
            consistency: Consistency::Local,
            timeout_ms: 0,
        })[4..]
            .to_vec()
    }

    /// A frame of empty members, as large as a frame may be, is refused
    /// from its archive with the same error as [`wire::check`] gives.
    #[test]
    fn member_limits_are_checked_on_the_archive_before_decoding() {
        // Each archived empty member takes 8 bytes.
        let members = vec![Vec::new(); (MAX_FRAME_BYTES - 64) / 8];
        let payload = frame(Operation::SetAdd {
            key: b"k".to_vec(),
            members: members.clone(),
        });
        assert!(payload.len() <= MAX_FRAME_BYTES, "{}", payload.len());
        let expected = wire::check(&Operation::SetAdd {
            key: b"k".to_vec(),
            members,
        })
        .unwrap_err();
        let archived = rkyv::access::<ArchivedRequest, rkyv::rancor::Error>(&payload).unwrap();
        assert_eq!(wire::check_archived(&archived.op), Err(expected.clone()));
        assert_eq!(
            decode_request(&payload),
            Err(WireError::InvalidArgument {
                message: expected.to_string()
            })
        );
        // Within the limits: decoded as it was sent.
        let ok = Operation::SetAdd {
            key: b"k".to_vec(),
            members: vec![b"a".to_vec(); 3],
        };
        assert_eq!(decode_request(&frame(ok.clone())).unwrap().op, ok);
        for (op, limit) in [
            (
                Operation::RegisterPut {
                    key: b"k".to_vec(),
                    value: vec![0; MAX_VALUE_BYTES + 1],
                },
                "register value",
            ),
            (
                Operation::CounterRead {
                    key: vec![b'k'; MAX_KEY_BYTES + 1],
                },
                "key",
            ),
        ] {
            let e = decode_request(&frame(op)).unwrap_err();
            assert!(e.to_string().contains(limit), "{e}");
        }
        assert!(decode_request(b"\x01\x02garbage").is_err());
    }
}
