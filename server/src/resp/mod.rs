//! The RESP front door: Redis clients talk to Meridian over TCP
//! (`resp_listen`), with CRDT semantics underneath. docs/resp.md is the
//! user's reference; this is the map of the code.
//!
//! * [`frame`]: request parsing (arrays of bulk strings and inline
//!   commands) with every limit checked before allocating, and the RESP2 /
//!   RESP3 reply encoder. Works on buffers, never on the socket.
//! * [`parse`]: a cursor over one request's arguments.
//! * [`command`]: the command table: request arguments to a typed
//!   [`command::Command`] (arity, options, limits), or Redis's error.
//! * [`conn_cmds`], [`strings`], [`sets`], [`hashes`], [`keys`], [`expire`]: what each command
//!   does, by family. Every data command goes through
//!   [`Coordinator::execute`] (same placement forwarding, consistency
//!   levels and metrics as the QUIC client protocol).
//! * [`cursors`]: the integer `SCAN`/`SSCAN` cursors and the positions
//!   each connection keeps for them; [`glob`]: Redis's `MATCH` patterns.
//! * [`data`]: requests through the coordinator, the one-type-per-key
//!   rule, and Meridian's errors as RESP errors.
//! * [`local`]: pipelined commands the node serves alone, run in one
//!   engine job per run of them instead of one coordinator request each.
//! * [`connection`]: one client connection: buffered reads, pipelined
//!   requests answered in order, `MULTI`/`EXEC`, output limits.
//!
//! Authentication is required: the cluster's access token is the password;
//! the AUTH user name picks the connection's consistency level.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use meridian_client::wire::Consistency;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::budget::ByteBudget;
use crate::coordinator::Coordinator;
use crate::listener::TokenCheck;
use crate::tasks::TaskTracker;

pub mod command;
pub mod conn_cmds;
pub mod connection;
pub mod cursors;
pub mod data;
pub mod expire;
pub mod frame;
pub mod glob;
pub mod hashes;
pub mod keys;
pub mod local;
pub mod parse;
pub mod sets;
pub mod strings;

/// The Redis version this front door reports (`HELLO`, `INFO`): the command
/// set and replies follow Redis 7.2 where Meridian supports a command.
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

/// How long a client has to finish the TLS handshake (`[resp] tls = true`)
/// before its connection is dropped: bounds what a client that connects and
/// says nothing costs.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What every connection of one node shares.
pub struct RespServer {
    pub(crate) coordinator: Arc<Coordinator>,
    pub(crate) token_check: TokenCheck,
    /// The level of user `default` (`[resp] default_consistency`).
    pub(crate) default_level: Consistency,
    /// Connections admitted at once; more are answered `-ERR max number of
    /// clients reached` and closed (Redis: `maxclients`).
    pub(crate) max_connections: u64,
    pub(crate) connections: AtomicU64,
    /// Commands being executed right now (shutdown waits for them).
    pub(crate) in_flight: AtomicU64,
    pub(crate) next_client_id: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) rejected_connections: AtomicU64,
    pub(crate) commands_total: AtomicU64,
    pub(crate) local_addr: SocketAddr,
    pub(crate) started: Instant,
    /// `[resp] tls = true`: every connection is a TLS session first.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// The node's client byte budget, shared with the QUIC door: every
    /// connection's input and output buffers are counted against it.
    pub(crate) budget: ByteBudget,
    /// Connections closed because the budget had no room for their buffers.
    pub(crate) over_budget: AtomicU64,
}

impl std::fmt::Debug for RespServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RespServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl RespServer {
    pub fn new(
        coordinator: Arc<Coordinator>,
        token_check: TokenCheck,
        default_level: Consistency,
        max_connections: u64,
        local_addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        budget: ByteBudget,
    ) -> RespServer {
        RespServer {
            coordinator,
            token_check,
            default_level,
            max_connections,
            connections: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            next_client_id: AtomicU64::new(1),
            connections_total: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            commands_total: AtomicU64::new(0),
            local_addr,
            started: Instant::now(),
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            budget,
            over_budget: AtomicU64::new(0),
        }
    }

    /// Commands being executed right now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Open connections.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    /// Accepts connections until `stop` fires; each connection then stops
    /// after the command it is executing.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        mut stop: watch::Receiver<bool>,
        tasks: TaskTracker,
    ) {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.changed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "RESP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().unwrap_or(self.local_addr);
            let this = self.clone();
            let stop = stop.clone();
            let tls = self.tls.clone();
            tasks.spawn(async move {
                match tls {
                    None => connection::serve(this, stream, peer, local, stop).await,
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                        match handshake.await {
                            Ok(Ok(tls)) => connection::serve(this, tls, peer, local, stop).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "RESP TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "RESP TLS handshake timed out"),
                        }
                    }
                }
            });
        }
    }
}
