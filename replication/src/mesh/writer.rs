//! The writer: one task per lane of a link sends that lane's stream.
//!
//! Messages come from the lane's channel through the link-conditioning
//! [`LinkStage`], each with its bytes reserved from the lane's budget
//! ([`super::queue`]), released once the batch it is in has been written;
//! on the control lane, realtime deltas handed on together
//! are merged into one message (batching when busy, up to
//! [`COALESCE_BYTES`] of estimated delta bytes). Every frame is checked
//! against the peer frame cap before it is written: the peer would drop
//! the link on a larger one. Nothing waits for stream acknowledgements.
//! Limits: a write error ends the task (the connection is failing and its
//! reader reports why).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use quinn::Connection;
use tokio::sync::mpsc;

use super::conditioning::LinkStage;
use super::queue::Queued;
use super::{MeshState, PeerLink, STREAM_BULK, STREAM_CONTROL};
use crate::message::{MAX_PEER_FRAME_BYTES, PeerMessage, record_bytes};
use crate::protocol::Lane;

/// Realtime deltas merged into one message, at most (estimated bytes of
/// deltas; far below the peer frame cap).
const COALESCE_BYTES: usize = 256 << 10;

const _: () = assert!(COALESCE_BYTES < MAX_PEER_FRAME_BYTES / 4);

/// Sends one of this side's streams (control: high priority, realtime
/// deltas merged; bulk: catch-up and full syncs) until the channel closes
/// or a write fails.
pub(super) async fn write_loop(
    shared: Arc<MeshState>,
    link: Arc<PeerLink>,
    conn: Connection,
    lane: Lane,
    rx: mpsc::Receiver<Queued>,
) {
    let (tag, priority) = match lane {
        Lane::Control => (STREAM_CONTROL, 1),
        Lane::Bulk => (STREAM_BULK, 0),
    };
    let Ok(mut stream) = conn.open_uni().await else {
        return;
    };
    let _ = stream.set_priority(priority);
    if stream.write_all(&[tag]).await.is_err() {
        return;
    }
    let mut stage = LinkStage::new(rx, &shared.conditions, &link.region);
    while let Some(queued) = stage.next_batch().await {
        // The batch's reservations are released once it is written.
        let (batch, _reserved): (Vec<PeerMessage>, Vec<_>) =
            queued.into_iter().map(Queued::into_parts).unzip();
        let batch = if lane == Lane::Control {
            coalesce(batch)
        } else {
            batch
        };
        for msg in batch {
            let frame = msg.to_frame();
            // The receiver refuses larger frames as garbage: never send one.
            assert!(
                frame.len() - 4 <= MAX_PEER_FRAME_BYTES,
                "a {} frame of {} bytes exceeds the peer frame cap",
                msg.name(),
                frame.len() - 4
            );
            if stream.write_all(&frame).await.is_err() {
                return;
            }
            link.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
            link.counters
                .bytes_sent
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
    }
}

/// Merges consecutive realtime delta messages into one (up to
/// [`COALESCE_BYTES`] of estimated delta bytes per message; a larger
/// delta goes alone).
pub(super) fn coalesce(batch: Vec<PeerMessage>) -> Vec<PeerMessage> {
    let mut out: Vec<PeerMessage> = Vec::with_capacity(batch.len());
    let mut bytes = 0usize;
    for msg in batch {
        let PeerMessage::Deltas {
            records,
            catch_up: false,
            ..
        } = msg
        else {
            out.push(msg);
            continue;
        };
        let size: usize = records.iter().map(record_bytes).sum();
        if let Some(PeerMessage::Deltas {
            records: acc,
            catch_up: false,
            ..
        }) = out.last_mut()
            && bytes + size <= COALESCE_BYTES
        {
            bytes += size;
            acc.extend(records);
            continue;
        }
        bytes = size;
        out.push(PeerMessage::Deltas {
            records,
            catch_up: false,
            more: false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use meridian_engine::{Engine, EngineConfig, Kind, ObjectKey, Op, PhysicalTime};

    use super::*;

    /// Large values are counted: deltas that together exceed the peer frame
    /// cap are never merged into one frame, and nothing is lost or reordered.
    #[test]
    fn coalesced_frames_stay_under_the_peer_frame_cap() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(
            EngineConfig::new(dir.path()),
            PhysicalTime::from_unix_ms(1_800_000_000_000),
        )
        .unwrap();
        let now = PhysicalTime::from_unix_ms(1_800_000_000_000);
        let mut batch = Vec::new();
        for i in 0..40 {
            let key = ObjectKey::new(Kind::Register, format!("big{i}")).unwrap();
            let big = engine
                .apply(&key, Op::Put(vec![7u8; 1 << 20]), now)
                .unwrap();
            let counter = ObjectKey::new(Kind::Counter, format!("c{i}")).unwrap();
            let small = engine.apply(&counter, Op::Incr(1), now).unwrap();
            for record in [big.record, small.record] {
                batch.push(PeerMessage::Deltas {
                    records: vec![record],
                    catch_up: false,
                    more: false,
                });
            }
        }
        let dots = |msgs: &[PeerMessage]| -> Vec<_> {
            msgs.iter()
                .flat_map(|m| match m {
                    PeerMessage::Deltas { records, .. } => records.iter().map(|r| r.dot),
                    _ => unreachable!(),
                })
                .collect()
        };
        let before = dots(&batch);
        let out = coalesce(batch);
        assert_eq!(dots(&out), before);
        for msg in &out {
            assert!(msg.to_frame().len() - 4 <= MAX_PEER_FRAME_BYTES);
        }
    }
}
