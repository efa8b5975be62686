//! Peer RPC: request/response calls between nodes (quorum reads and writes,
//! forwarded requests), one bidirectional QUIC stream per call.
//!
//! A call stream is `[STREAM_RPC]` then the request one way and the
//! response the other, each at most [`MAX_RPC_BYTES`] and framed like peer
//! messages (one frame, or several for one larger than a frame: a quorum
//! read or read repair of a set past one write's limit, review C4), read
//! by the mesh's one frame reader. Incoming calls are served by the
//! node's [`RpcHandler`]. Link conditioning applies per call: a cut link
//! refuses calls both ways, and a delayed one delays the request and the
//! response one hop each. Limits: no retries (the caller decides), and a
//! call that times out leaves its stream to QUIC to reset.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use quinn::{RecvStream, SendStream, VarInt};

use super::conditioning::hop;
use super::connection::read_frame;
use super::{Mesh, MeshError, MeshState, PeerLink, STREAM_RPC, mono_ms};
use crate::NodeName;
use crate::message::{MAX_PEER_MESSAGE_BYTES, to_frames};

/// RPC request and response size limit, in bytes (over all its frames).
pub const MAX_RPC_BYTES: usize = MAX_PEER_MESSAGE_BYTES;

/// Serves RPCs from peers: `request` bytes in, response bytes out.
pub trait RpcHandler: Send + Sync + 'static {
    fn handle(
        &self,
        peer: NodeName,
        request: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;
}

/// `prefix` and the payload's frame(s).
fn frame(payload: &[u8], prefix: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= MAX_RPC_BYTES, "rpc payload over the cap");
    to_frames(payload, prefix)
}

impl Mesh {
    /// Calls `peer`'s RPC handler.
    pub async fn call(
        &self,
        peer: &str,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, MeshError> {
        let link = self
            .shared
            .peers
            .get(peer)
            .ok_or_else(|| MeshError::NotConnected(peer.to_string()))?;
        let conditioning = self.shared.conditions.get(&link.region);
        if conditioning.cut {
            return Err(MeshError::Cut(peer.to_string()));
        }
        if request.len() > MAX_RPC_BYTES {
            return Err(MeshError::Rpc {
                peer: peer.to_string(),
                message: format!("request of {} bytes", request.len()),
            });
        }
        let conn = link
            .conn
            .lock()
            .unwrap()
            .as_ref()
            .map(|(_, c)| c.clone())
            .ok_or_else(|| MeshError::NotConnected(peer.to_string()))?;
        let fut = async {
            hop(conditioning).await;
            let rpc_err = |message: String| MeshError::Rpc {
                peer: peer.to_string(),
                message,
            };
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| rpc_err(e.to_string()))?;
            send.write_all(&frame(request, &[STREAM_RPC]))
                .await
                .map_err(|e| rpc_err(e.to_string()))?;
            // Finish without waiting for acknowledgement (no `stopped()`).
            let _ = send.finish();
            let payload = read_frame(&mut recv, &self.shared.assembly, &|| {})
                .await
                .map_err(|e| rpc_err(e.to_string()))?
                .ok_or_else(|| rpc_err("stream closed without a response".into()))?;
            Ok(payload.bytes)
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(MeshError::Timeout(peer.to_string())),
        }
    }
}

/// Serves one incoming call; `Err` is a protocol violation (the link is
/// dropped).
pub(super) async fn serve_rpc(
    shared: &MeshState,
    link: &PeerLink,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<(), String> {
    let mut tag = [0u8; 1];
    recv.read_exact(&mut tag)
        .await
        .map_err(|e| format!("rpc header: {e}"))?;
    if tag[0] != STREAM_RPC {
        return Err(format!("unknown stream type {}", tag[0]));
    }
    let request = read_frame(&mut recv, &shared.assembly, &|| {})
        .await
        .map_err(|e| e.to_string())?
        .ok_or("rpc stream closed without a request")?
        .bytes;
    if let Some(tap) = &shared.tap {
        tap(&link.name, &request);
    }
    link.last_heard.store(
        mono_ms(shared.started),
        std::sync::atomic::Ordering::Relaxed,
    );
    let conditioning = shared.conditions.get(&link.region);
    if conditioning.cut {
        let _ = send.reset(VarInt::from_u32(1));
        return Ok(());
    }
    let Some(handler) = shared.rpc.get().cloned() else {
        let _ = send.reset(VarInt::from_u32(1));
        return Ok(());
    };
    let response = handler.handle(link.name.clone(), request).await;
    hop(conditioning).await;
    if response.len() > MAX_RPC_BYTES {
        tracing::error!(peer = %link.name, bytes = response.len(), "rpc response over the frame cap; not sent");
        let _ = send.reset(VarInt::from_u32(1));
        return Ok(());
    }
    if send.write_all(&frame(&response, &[])).await.is_ok() {
        let _ = send.finish();
    }
    Ok(())
}
