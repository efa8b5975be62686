//! Connections: accepting and dialing peers, and reading what they send.
//!
//! The node whose name sorts first dials; the other accepts. Either way the
//! peer's identity is the node name in its certificate, and only the
//! cluster's configured nodes are kept. [`run_link`] owns one connection:
//! it installs the link's writers, tells the protocol, reads the peer's
//! streams until the connection ends, then tears down. A newer connection
//! to the same peer replaces an older one. Every frame goes through
//! [`read_frame`], the mesh's one length-prefixed frame reader. Limits:
//! dialing backs off up to [`DIAL_BACKOFF_MAX`]; a peer that sends an
//! invalid frame is disconnected (and redials or is redialed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quinn::{Connection, RecvStream, VarInt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::queue::{LaneTx, Writers};
use super::rpc::serve_rpc;
use super::writer::write_loop;
use super::{
    CLOSE_PROTOCOL, CLOSE_REPLACED, CLOSE_UNKNOWN, MeshState, PeerLink, RECEIVING_NOTE_MS,
    STREAM_BULK, STREAM_CONTROL, mono_ms,
};
use crate::message::{MAX_PEER_FRAME_BYTES, MAX_PEER_MESSAGE_BYTES, PeerMessage, frame_len};
use crate::protocol::{Input, Lane};
use crate::tls;

/// Concurrent incoming RPCs served per connection; more wait (QUIC
/// stream limits apply beyond that).
const RPC_CONCURRENCY: usize = 512;

/// Wait between dial attempts to an unreachable peer.
const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(100);
const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum FrameError {
    /// The connection went away (its end is reported elsewhere).
    #[error("connection lost: {0}")]
    Lost(quinn::ConnectionError),
    /// The peer sent something invalid or the stream broke.
    #[error("{0}")]
    Invalid(String),
}

/// Bytes of peer messages being reassembled from several frames at once,
/// node-wide (each reserves its whole length before reading past its
/// first frame, so reassembly never deadlocks on the budget): two messages
/// of the largest size.
pub(super) const ASSEMBLY_BYTES: usize = 2 * MAX_PEER_MESSAGE_BYTES;

/// Reads one message: one `[len: u32 LE][payload]` frame, or the frames of
/// a message sent in several ([`crate::message::to_frames`]), every length
/// checked by [`frame_len`] before anything is allocated and a long
/// message's bytes reserved from `budget` (released when the returned
/// message is dropped). `Ok(None)` at a clean end of the stream.
/// `progress` is called whenever bytes of the message arrive (a large
/// message takes long to cross a slow link; see [`Input::Receiving`]).
pub(super) async fn read_frame(
    recv: &mut RecvStream,
    budget: &Arc<Semaphore>,
    progress: &(dyn Fn() + Sync),
) -> Result<Option<Message>, FrameError> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(e))) => {
            return Err(FrameError::Lost(e));
        }
        Err(e) => return Err(FrameError::Invalid(e.to_string())),
    }
    let invalid = |e: String| FrameError::Invalid(e);
    let (len, continued) = frame_len(prefix).map_err(invalid)?;
    if !continued {
        let mut payload = vec![0u8; len];
        read_watched(recv, &mut payload, progress).await?;
        return Ok(Some(Message {
            bytes: payload,
            _reserved: None,
        }));
    }
    let mut total = [0u8; 4];
    recv.read_exact(&mut total)
        .await
        .map_err(|e| FrameError::Invalid(e.to_string()))?;
    let total = u32::from_le_bytes(total) as usize;
    if total <= MAX_PEER_FRAME_BYTES || total > MAX_PEER_MESSAGE_BYTES || len - 4 > total {
        return Err(invalid(format!(
            "a message of {total} bytes in several frames"
        )));
    }
    let reserved = budget
        .clone()
        .acquire_many_owned(total as u32)
        .await
        .map_err(|_| invalid("shutting down".into()))?;
    let mut bytes = vec![0u8; total];
    let mut filled = 0usize;
    let (mut chunk, mut more) = (len - 4, true);
    loop {
        // Every frame but the last says more follow; the last ends the
        // message exactly.
        if filled + chunk > total || more != (filled + chunk < total) {
            return Err(invalid(format!(
                "frames that do not make up the message's {total} bytes"
            )));
        }
        read_watched(recv, &mut bytes[filled..filled + chunk], progress).await?;
        filled += chunk;
        if !more {
            break;
        }
        let mut next = [0u8; 4];
        recv.read_exact(&mut next)
            .await
            .map_err(|e| FrameError::Invalid(e.to_string()))?;
        (chunk, more) = frame_len(next).map_err(invalid)?;
    }
    Ok(Some(Message {
        bytes,
        _reserved: Some(reserved),
    }))
}

/// Fills `buf` from `recv` (like `read_exact`), calling `progress` each
/// time bytes arrive.
async fn read_watched(
    recv: &mut RecvStream,
    buf: &mut [u8],
    progress: &(dyn Fn() + Sync),
) -> Result<(), FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        match recv.read(&mut buf[filled..]).await {
            Ok(Some(n)) => {
                filled += n;
                progress();
            }
            Ok(None) => {
                return Err(FrameError::Invalid(format!(
                    "the stream ended {filled} bytes into a frame of {}",
                    buf.len()
                )));
            }
            Err(e) => return Err(FrameError::Invalid(e.to_string())),
        }
    }
    Ok(())
}

/// A message read by [`read_frame`], holding its reassembly reservation.
pub(super) struct Message {
    pub(super) bytes: Vec<u8>,
    _reserved: Option<OwnedSemaphorePermit>,
}

pub(super) async fn accept_loop(shared: Arc<MeshState>) {
    let mut stop = shared.shutdown.subscribe();
    loop {
        let incoming = tokio::select! {
            i = shared.endpoint.accept() => i,
            _ = stop.changed() => return,
        };
        let Some(incoming) = incoming else {
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "peer handshake failed");
                    return;
                }
            };
            match tls::peer_identity(&conn) {
                Ok(name) if shared.peers.contains_key(&name) => {
                    let link = shared.peers[&name].clone();
                    run_link(shared, link, conn).await;
                }
                Ok(name) => {
                    tracing::warn!(peer = %name, "refusing a node that is not in this cluster");
                    conn.close(VarInt::from_u32(CLOSE_UNKNOWN), b"unknown node");
                }
                Err(e) => {
                    tracing::warn!(error = %e, remote = %conn.remote_address(), "refusing a peer without a node certificate");
                    conn.close(VarInt::from_u32(CLOSE_UNKNOWN), b"not a node");
                }
            }
        });
    }
}

pub(super) async fn dial_loop(shared: Arc<MeshState>, link: Arc<PeerLink>) {
    let mut stop = shared.shutdown.subscribe();
    let mut backoff = DIAL_BACKOFF_MIN;
    loop {
        if *stop.borrow() {
            return;
        }
        let connected = link.conn.lock().unwrap().is_some();
        if connected {
            tokio::select! {
                _ = link.lost.notified() => {}
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        if shared.conditions.is_cut(&link.region) {
            tokio::select! {
                _ = tokio::time::sleep(DIAL_BACKOFF_MIN) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        match dial(&shared, &link).await {
            Ok(conn) => {
                backoff = DIAL_BACKOFF_MIN;
                let shared = shared.clone();
                let link2 = link.clone();
                tokio::spawn(async move { run_link(shared, link2, conn).await });
                // Give the link time to register before checking again.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                tracing::debug!(peer = %link.name, error = %e, "dial failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(DIAL_BACKOFF_MAX);
            }
        }
    }
}

async fn dial(shared: &MeshState, link: &PeerLink) -> Result<Connection, String> {
    let addr = tokio::net::lookup_host(&link.address)
        .await
        .map_err(|e| format!("resolving {}: {e}", link.address))?
        .next()
        .ok_or_else(|| format!("{} resolves to nothing", link.address))?;
    let connecting = shared
        .endpoint
        .connect_with(shared.client_config.clone(), addr, &link.name)
        .map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(Duration::from_secs(3), connecting)
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let name = tls::peer_identity(&conn).map_err(|e| e.to_string())?;
    if name != link.name {
        conn.close(VarInt::from_u32(CLOSE_UNKNOWN), b"wrong node");
        return Err(format!("{} answered as {name}", link.address));
    }
    Ok(conn)
}

/// Runs one connection until it closes.
async fn run_link(shared: Arc<MeshState>, link: Arc<PeerLink>, conn: Connection) {
    let generation = shared.next_generation.fetch_add(1, Ordering::Relaxed);
    let (control_tx, control_rx) = LaneTx::new();
    let (bulk_tx, bulk_rx) = LaneTx::new();
    let replaced = {
        let mut slot = link.conn.lock().unwrap();
        let old = slot.replace((generation, conn.clone()));
        *link.writer.lock().unwrap() = Some(Writers {
            control: control_tx,
            bulk: bulk_tx,
        });
        old
    };
    if let Some((_, old)) = replaced {
        old.close(
            VarInt::from_u32(CLOSE_REPLACED),
            b"replaced by a newer connection",
        );
        let _ = shared
            .inputs
            .send(Input::Disconnected {
                peer: link.name.clone(),
            })
            .await;
    }
    tracing::info!(peer = %link.name, remote = %conn.remote_address(), "peer connected");
    link.last_heard
        .store(mono_ms(shared.started), Ordering::Relaxed);
    let writers = [
        tokio::spawn(write_loop(
            shared.clone(),
            link.clone(),
            conn.clone(),
            Lane::Control,
            control_rx,
        )),
        tokio::spawn(write_loop(
            shared.clone(),
            link.clone(),
            conn.clone(),
            Lane::Bulk,
            bulk_rx,
        )),
    ];
    let _ = shared
        .inputs
        .send(Input::Connected {
            peer: link.name.clone(),
        })
        .await;
    let reason = tokio::select! {
        r = read_loop(shared.clone(), link.clone(), conn.clone()) => r,
        e = conn.closed() => e.to_string(),
    };
    for w in writers {
        w.abort();
    }
    let still_current = {
        let mut slot = link.conn.lock().unwrap();
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            *slot = None;
            *link.writer.lock().unwrap() = None;
            true
        } else {
            false
        }
    };
    conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"link closed");
    if still_current {
        tracing::info!(peer = %link.name, %reason, "peer disconnected");
        let _ = shared
            .inputs
            .send(Input::Disconnected {
                peer: link.name.clone(),
            })
            .await;
        link.lost.notify_waiters();
    }
}

/// Accepts the peer's streams and feeds their messages to the protocol.
/// Returns why the link ended.
async fn read_loop(shared: Arc<MeshState>, link: Arc<PeerLink>, conn: Connection) -> String {
    let rpc_slots = Arc::new(tokio::sync::Semaphore::new(RPC_CONCURRENCY));
    let (fail_tx, mut fail_rx) = mpsc::channel::<String>(4);
    loop {
        tokio::select! {
            uni = conn.accept_uni() => {
                let recv = match uni {
                    Ok(r) => r,
                    Err(e) => return e.to_string(),
                };
                let (shared, link, fail) = (shared.clone(), link.clone(), fail_tx.clone());
                tokio::spawn(async move {
                    if let Err(reason) = read_messages(&shared, &link, recv).await {
                        let _ = fail.send(reason).await;
                    }
                });
            }
            bi = conn.accept_bi() => {
                let (send, recv) = match bi {
                    Ok(s) => s,
                    Err(e) => return e.to_string(),
                };
                let permit = match rpc_slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return "shutting down".into(),
                };
                let (shared, link, fail) = (shared.clone(), link.clone(), fail_tx.clone());
                tokio::spawn(async move {
                    if let Err(reason) = serve_rpc(&shared, &link, send, recv).await {
                        let _ = fail.send(reason).await;
                    }
                    drop(permit);
                });
            }
            reason = fail_rx.recv() => {
                let reason = reason.unwrap_or_else(|| "reader stopped".into());
                link.counters.garbage.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %link.name, %reason, "disconnecting peer that sent garbage");
                conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"protocol violation");
                return reason;
            }
        }
    }
}

/// Reads `[len][payload]`; `Ok(None)` at a clean end of stream.
/// Reads one of the peer's message streams and feeds the protocol.
async fn read_messages(
    shared: &MeshState,
    link: &PeerLink,
    mut recv: RecvStream,
) -> Result<(), String> {
    let mut tag = [0u8; 1];
    recv.read_exact(&mut tag)
        .await
        .map_err(|e| format!("stream header: {e}"))?;
    let lane = match tag[0] {
        STREAM_CONTROL => Lane::Control,
        STREAM_BULK => Lane::Bulk,
        other => return Err(format!("unknown stream type {other}")),
    };
    // On the bulk stream, tell the protocol that an answer is arriving
    // (at most every RECEIVING_NOTE_MS): the pull it answers must not be
    // re-sent meanwhile, or a slow link carries copy after copy of it.
    let noted = AtomicU64::new(0);
    let note = || {
        let now = mono_ms(shared.started);
        if lane == Lane::Bulk
            && now.saturating_sub(noted.load(Ordering::Relaxed)) >= RECEIVING_NOTE_MS
        {
            noted.store(now, Ordering::Relaxed);
            let _ = shared.inputs.try_send(Input::Receiving {
                peer: link.name.clone(),
            });
        }
    };
    loop {
        let payload = match read_frame(&mut recv, &shared.assembly, &note).await {
            Ok(Some(p)) => p.bytes,
            Ok(None) | Err(FrameError::Lost(_)) => return Ok(()),
            Err(FrameError::Invalid(e)) => return Err(e),
        };
        if let Some(tap) = &shared.tap {
            tap(&link.name, &payload);
        }
        let msg = PeerMessage::from_payload(&payload)?;
        link.counters
            .messages_received
            .fetch_add(1, Ordering::Relaxed);
        link.counters
            .bytes_received
            .fetch_add(4 + payload.len() as u64, Ordering::Relaxed);
        link.last_heard
            .store(mono_ms(shared.started), Ordering::Relaxed);
        let frame_bytes = 4 + payload.len();
        drop(payload);
        if shared.conditions.is_cut(&link.region) {
            continue;
        }
        // Waits for room in the protocol's input queue (count and this
        // lane's bytes): QUIC flow control then pushes back on the peer.
        if shared
            .inputs
            .send_message(link.name.clone(), msg, lane, frame_bytes)
            .await
            .is_err()
        {
            return Ok(());
        }
    }
}
