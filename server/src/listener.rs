//! The client listener: QUIC (ALPN `meridian/1`), the cluster's client
//! certificate required, then the access token before anything else.
//!
//! * At most `max_client_connections` connections: one past the limit is
//!   answered `Overloaded` and closed.
//! * The first stream of a connection must carry a [`Hello`] with the right
//!   token within [`HELLO_TIMEOUT`]; otherwise the client is told
//!   `Unauthorized` and the connection is closed.
//! * Then one bidirectional stream per request, at most
//!   `max_in_flight_per_connection` at once (QUIC stream credit enforces
//!   it; a semaphore is the second line, answering `Overloaded`).
//! * Every request frame is size-capped and validated; a malformed one is
//!   answered `InvalidArgument` on its own stream and changes nothing. The
//!   connection and every other client keep being served.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meridian_client::wire::{
    self, Hello, HelloReply, MAX_FRAME_BYTES, PROTOCOL_VERSION, Request, Response, WireError,
};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio::sync::{Semaphore, watch};

use crate::coordinator::Coordinator;
use crate::metrics::Origin;
use crate::tasks::TaskTracker;

/// How long a new connection has to authenticate.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a refused client is given to read the refusal before the
/// connection is closed (closing at once may discard it).
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// During shutdown, how long a drained request waits for the client to
/// have its answer before its task ends (and the endpoint may close).
const REPLY_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// How long shutdown waits for in-flight requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks a client's access token.
pub type TokenCheck = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

pub struct ClientListener {
    pub(crate) endpoint: Endpoint,
    pub(crate) coordinator: Arc<Coordinator>,
    pub(crate) token_check: TokenCheck,
    pub(crate) max_connections: u64,
    pub(crate) max_in_flight: usize,
    pub(crate) connections: Arc<AtomicU64>,
    pub(crate) in_flight: Arc<AtomicU64>,
}

impl std::fmt::Debug for ClientListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientListener").finish_non_exhaustive()
    }
}

/// Reads one `[len][payload]` frame, capped at `max`.
async fn read_frame(recv: &mut RecvStream, max: usize) -> Result<Vec<u8>, String> {
    wire::read_frame(recv, max).await.map_err(|e| match e {
        wire::ReadFrameError::Read(e) => format!("reading frame: {e}"),
        wire::ReadFrameError::Length(e) => e.to_string(),
    })
}

/// Writes one encoded frame ([`wire::encode`]) and finishes the stream.
async fn reply(send: &mut SendStream, frame: Vec<u8>) {
    if send.write_all(&frame).await.is_ok() {
        // Never wait for the peer's acknowledgement (`stopped()`).
        let _ = send.finish();
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
            let this = self.clone();
            let stop = stop.clone();
            let requests = tasks.clone();
            tasks.spawn(async move {
                match incoming.await {
                    Ok(conn) => this.serve_connection(conn, stop, requests).await,
                    Err(e) => tracing::debug!(error = %e, "client handshake failed"),
                }
            });
        }
    }

    async fn refuse(&self, conn: &Connection, mut send: SendStream, error: WireError) {
        reply(&mut send, wire::encode(&HelloReply::Refused(error))).await;
        // Let the refusal reach the client before closing.
        let _ = tokio::time::timeout(REFUSAL_LINGER, conn.closed()).await;
        conn.close(VarInt::from_u32(1), b"refused");
    }

    async fn serve_connection(
        self: Arc<Self>,
        conn: Connection,
        mut stop: watch::Receiver<bool>,
        tasks: TaskTracker,
    ) {
        let count = self.connections.fetch_add(1, Ordering::AcqRel) + 1;
        let _guard = Decrement(self.connections.clone());
        let remote = conn.remote_address();
        // Authenticate first.
        let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
            let (send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
            let payload = read_frame(&mut recv, 64 << 10).await;
            Ok::<_, String>((send, payload))
        })
        .await;
        let (send, payload) = match hello {
            Ok(Ok((send, Ok(payload)))) => (send, payload),
            Ok(Ok((send, Err(e)))) => {
                // Oversized, truncated or empty: refused like a bad token.
                self.refuse(
                    &conn,
                    send,
                    WireError::Unauthorized {
                        message: format!("bad hello frame: {e}"),
                    },
                )
                .await;
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "client went away before hello");
                return;
            }
            Err(_) => {
                tracing::info!(%remote, "client sent no hello in time");
                conn.close(VarInt::from_u32(1), b"no hello");
                return;
            }
        };
        let hello: Hello = match wire::decode(&payload) {
            Ok(h) => h,
            Err(e) => {
                self.refuse(
                    &conn,
                    send,
                    WireError::Unauthorized {
                        message: format!("malformed hello: {e}"),
                    },
                )
                .await;
                return;
            }
        };
        if hello.version != PROTOCOL_VERSION {
            self.refuse(
                &conn,
                send,
                WireError::InvalidArgument {
                    message: format!(
                        "protocol version {} not supported (this node speaks {PROTOCOL_VERSION})",
                        hello.version
                    ),
                },
            )
            .await;
            return;
        }
        if !(self.token_check)(&hello.token) {
            tracing::warn!(%remote, "client refused: wrong or missing token");
            self.refuse(
                &conn,
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
            return;
        }
        if count > self.max_connections {
            tracing::warn!(%remote, limit = self.max_connections, "client refused: too many connections");
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
        }
        let mut send = send;
        reply(
            &mut send,
            wire::encode(&HelloReply::Ok {
                node: self.coordinator.node.clone(),
                region: self.coordinator.region.clone(),
            }),
        )
        .await;

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
                    reply(
                        &mut send,
                        wire::encode(&Response::Err(WireError::Overloaded {
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
            tasks.spawn(async move {
                this.in_flight.fetch_add(1, Ordering::AcqRel);
                this.serve_request(&mut send, recv).await;
                // During shutdown the endpoint is closed once every request
                // task has ended, and a close discards unsent stream data:
                // wait (bounded) until the client has the answer. In normal
                // operation no one waits for that (it costs a delayed ACK).
                if *stop.borrow() {
                    let _ = tokio::time::timeout(REPLY_FLUSH_TIMEOUT, send.stopped()).await;
                }
                drop(conn);
                this.in_flight.fetch_sub(1, Ordering::AcqRel);
                drop(permit);
            });
        }
    }

    async fn serve_request(&self, send: &mut SendStream, mut recv: RecvStream) {
        let payload = match read_frame(&mut recv, MAX_FRAME_BYTES).await {
            Ok(p) => p,
            Err(e) => {
                reply(
                    send,
                    wire::encode(&Response::Err(WireError::InvalidArgument {
                        message: format!("bad request frame: {e}"),
                    })),
                )
                .await;
                return;
            }
        };
        let request: Request = match wire::decode(&payload) {
            Ok(r) => r,
            Err(e) => {
                reply(
                    send,
                    wire::encode(&Response::Err(WireError::InvalidArgument {
                        message: format!("malformed request: {e}"),
                    })),
                )
                .await;
                return;
            }
        };
        let response = self.coordinator.execute(request, Origin::Quic).await;
        reply(send, wire::encode(&response)).await;
    }
}

struct Decrement(Arc<AtomicU64>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
