//! The mesh's queues, each bounded in bytes as well as in items (review
//! item S3): a peer link's two send lanes ([`LaneTx`]) and the protocol
//! thread's input queue ([`Inputs`]).
//!
//! A sender reserves an item's bytes (its estimated encoded size, see
//! [`PeerMessage::estimated_bytes`]) from the queue's budget before queueing
//! it; the reservation travels with the item and is released when the item
//! is dropped: after the writer has written it (so a lane's budget covers
//! its channel, its link-conditioning stage and the batch being written),
//! or after the protocol thread has handled it. An item larger than the
//! whole budget reserves all of it (it waits for an empty queue), so no
//! valid message is refused forever.
//!
//! Limits, per lane: [`PEER_QUEUE`] messages and [`LANE_BYTES`]; the input
//! queue: [`INPUT_QUEUE`] inputs, and peer messages within
//! [`INPUT_CONTROL_BYTES`] (read from control streams) and
//! [`INPUT_BULK_BYTES`] (bulk streams) node-wide, two budgets so that a
//! flood of catch-up data never holds up heartbeats and realtime deltas.
//! What does not fit: a realtime push or protocol message is dropped and
//! counted (the peer pulls later); the full-sync thread and the stream
//! readers wait (QUIC flow control then pushes back on the sender).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::NodeName;
use crate::message::PeerMessage;
use crate::protocol::{Input, Lane};

/// Messages queued for one peer's lane, at most.
pub(super) const PEER_QUEUE: usize = 8_192;

/// Estimated bytes queued for one peer's lane (channel, link stage and the
/// batch being written), at most: two lanes per peer, so 32 MiB per peer.
pub(super) const LANE_BYTES: usize = 16 << 20;

/// Inputs queued for the protocol thread, at most.
pub(super) const INPUT_QUEUE: usize = 16_384;

/// Bytes of peer messages from control streams queued for the protocol
/// thread, node-wide.
pub(super) const INPUT_CONTROL_BYTES: usize = 32 << 20;

/// Bytes of peer messages from bulk streams queued for the protocol thread,
/// node-wide.
pub(super) const INPUT_BULK_BYTES: usize = 64 << 20;

/// The permits `bytes` takes from a budget of `cap`: an oversized item
/// takes the whole budget.
fn permits(bytes: usize, cap: usize) -> u32 {
    bytes.clamp(1, cap) as u32
}

/// A message on a lane with its reserved bytes (released when dropped).
#[derive(Debug)]
pub(super) struct Queued {
    msg: PeerMessage,
    bytes: usize,
    reserved: OwnedSemaphorePermit,
}

impl Queued {
    /// The message and its reservation (release it once written).
    pub(super) fn into_parts(self) -> (PeerMessage, OwnedSemaphorePermit) {
        (self.msg, self.reserved)
    }

    /// Its estimated bytes (what it reserved, before clamping).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The sending side of one lane of a peer link.
#[derive(Clone, Debug)]
pub(super) struct LaneTx {
    tx: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
}

impl LaneTx {
    /// A lane: its sender and the receiver its writer drains.
    pub(super) fn new() -> (LaneTx, mpsc::Receiver<Queued>) {
        Self::with_limits(PEER_QUEUE, LANE_BYTES)
    }

    fn with_limits(count: usize, bytes: usize) -> (LaneTx, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(count);
        let budget = Arc::new(Semaphore::new(bytes));
        (LaneTx { tx, budget }, rx)
    }

    fn cap(&self) -> usize {
        LANE_BYTES.min(Semaphore::MAX_PERMITS)
    }

    /// Queues `msg` if it fits now (in count and bytes); drops it if not.
    pub(super) fn try_send(&self, msg: PeerMessage) -> Result<(), Full> {
        let bytes = msg.estimated_bytes();
        let reserved = self
            .budget
            .clone()
            .try_acquire_many_owned(permits(bytes, self.cap()))
            .map_err(|_| Full)?;
        self.tx
            .try_send(Queued {
                msg,
                bytes,
                reserved,
            })
            .map_err(|_| Full)
    }

    /// Queues `msg`, waiting for room; for a thread outside the runtime
    /// (the full-sync thread). False once the lane is gone.
    pub(super) fn blocking_send(&self, msg: PeerMessage, runtime: &tokio::runtime::Handle) -> bool {
        let bytes = msg.estimated_bytes();
        let permits = permits(bytes, self.cap());
        let budget = self.budget.clone();
        let Ok(reserved) = runtime.block_on(budget.acquire_many_owned(permits)) else {
            return false;
        };
        self.tx
            .blocking_send(Queued {
                msg,
                bytes,
                reserved,
            })
            .is_ok()
    }
}

/// The two send queues of a link (one writer task each, so a bulk stream
/// waiting on flow control never holds up control messages).
#[derive(Clone, Debug)]
pub(super) struct Writers {
    pub(super) control: LaneTx,
    pub(super) bulk: LaneTx,
}

impl Writers {
    pub(super) fn lane(&self, lane: Lane) -> &LaneTx {
        match lane {
            Lane::Control => &self.control,
            Lane::Bulk => &self.bulk,
        }
    }
}

/// An input for the protocol thread, with the bytes it holds reserved
/// (released once it has been handled and dropped).
#[derive(Debug)]
pub(super) struct InputItem {
    input: Input,
    reserved: Option<OwnedSemaphorePermit>,
}

impl InputItem {
    /// The input and its reservation (release it once handled).
    pub(super) fn into_parts(self) -> (Input, Option<OwnedSemaphorePermit>) {
        (self.input, self.reserved)
    }
}

/// The protocol thread's input queue: bounded in inputs, and in bytes for
/// peer messages (see the module doc).
#[derive(Debug)]
pub(super) struct Inputs {
    tx: mpsc::Sender<InputItem>,
    control: Arc<Semaphore>,
    bulk: Arc<Semaphore>,
}

/// The queue was closed (the protocol thread stopped).
#[derive(Debug)]
pub(super) struct Closed;

/// The queue had no room (or was closed); the item was dropped.
#[derive(Debug)]
pub(super) struct Full;

impl Inputs {
    pub(super) fn new() -> (Inputs, mpsc::Receiver<InputItem>) {
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        let inputs = Inputs {
            tx,
            control: Arc::new(Semaphore::new(INPUT_CONTROL_BYTES)),
            bulk: Arc::new(Semaphore::new(INPUT_BULK_BYTES)),
        };
        (inputs, rx)
    }

    fn item(input: Input) -> InputItem {
        InputItem {
            input,
            reserved: None,
        }
    }

    /// Queues a small input (not a peer message), waiting for room.
    pub(super) async fn send(&self, input: Input) -> Result<(), Closed> {
        self.tx.send(Self::item(input)).await.map_err(|_| Closed)
    }

    /// Queues a small input if there is room now; drops it if not.
    pub(super) fn try_send(&self, input: Input) -> Result<(), Full> {
        self.tx.try_send(Self::item(input)).map_err(|_| Full)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Queues a message `peer` sent on `lane`, `bytes` big (at least its
    /// frame), waiting for room in count and in that lane's byte budget.
    pub(super) async fn send_message(
        &self,
        peer: NodeName,
        msg: PeerMessage,
        lane: Lane,
        bytes: usize,
    ) -> Result<(), Closed> {
        let (budget, cap) = match lane {
            Lane::Control => (&self.control, INPUT_CONTROL_BYTES),
            Lane::Bulk => (&self.bulk, INPUT_BULK_BYTES),
        };
        let bytes = bytes.max(msg.estimated_bytes());
        let reserved = budget
            .clone()
            .acquire_many_owned(permits(bytes, cap))
            .await
            .map_err(|_| Closed)?;
        let item = InputItem {
            input: Input::Message { peer, msg },
            reserved: Some(reserved),
        };
        self.tx.send(item).await.map_err(|_| Closed)
    }

    #[cfg(test)]
    fn available(&self, lane: Lane) -> usize {
        match lane {
            Lane::Control => self.control.available_permits(),
            Lane::Bulk => self.bulk.available_permits(),
        }
    }
}

#[cfg(test)]
mod tests {
    use meridian_engine::{Incarnation, Kind, ObjectKey, Record, StreamId};

    use super::*;

    /// A realtime delta carrying a register value of `bytes` bytes.
    fn big(bytes: usize) -> PeerMessage {
        let key = ObjectKey::new(Kind::Register, "k").unwrap();
        let register = meridian_engine::crdt::register::Register::write(
            meridian_engine::Hlc {
                time: 1,
                node: Incarnation(1),
            },
            Some(vec![0u8; bytes]),
        );
        PeerMessage::Deltas {
            records: vec![Record {
                dot: meridian_engine::Dot::new(StreamId(1), 1),
                hlc: meridian_engine::Hlc {
                    time: 1,
                    node: Incarnation(1),
                },
                key,
                delta: meridian_engine::Delta::Register(register),
            }],
            catch_up: false,
            more: false,
        }
    }

    /// Review item S3: a lane holds at most its byte budget, far fewer
    /// messages than its count bound when they are large (the count bound
    /// alone let 8,192 messages of any size queue); room comes back as the
    /// writer drops what it sent; one message over the whole budget still
    /// goes, alone.
    #[test]
    fn lanes_are_bounded_in_bytes() {
        let (lane, mut rx) = LaneTx::new();
        let mut queued = 0;
        while lane.try_send(big(1 << 20)).is_ok() {
            queued += 1;
            assert!(queued <= PEER_QUEUE);
        }
        assert!(
            (LANE_BYTES / (2 << 20)..=LANE_BYTES / (1 << 20)).contains(&queued),
            "{queued} messages of 1 MiB queued"
        );
        // The writer takes one and writes it: room for one more.
        let sent = rx.try_recv().unwrap();
        assert!(
            lane.try_send(big(1 << 20)).is_err(),
            "room before the write"
        );
        drop(sent);
        assert!(lane.try_send(big(1 << 20)).is_ok());
        // Empty the lane: an oversized message fits alone.
        while rx.try_recv().is_ok() {}
        assert!(lane.try_send(big(LANE_BYTES + 1)).is_ok());
        assert!(
            lane.try_send(big(10)).is_err(),
            "the oversized one holds it all"
        );
    }

    /// The full-sync thread waits for room instead of queueing without
    /// bound, and gives up once the lane is gone.
    #[test]
    fn blocking_sends_wait_for_room() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        let (lane, mut rx) = LaneTx::with_limits(PEER_QUEUE, 4 << 20);
        let sender = std::thread::spawn(move || {
            let mut sent = 0;
            while sent < 8 && lane.blocking_send(big(1 << 20), &handle) {
                sent += 1;
            }
            sent
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        // At most the budget is queued while nothing is taken.
        let mut taken = Vec::new();
        while let Ok(q) = rx.try_recv() {
            taken.push(q);
        }
        assert!(
            taken.len() < 4,
            "{} MiB queued in a 4 MiB lane",
            taken.len()
        );
        let mut received = taken.len();
        drop(taken);
        // Drained as it goes, all eight pass.
        while received < 8 {
            if rx.try_recv().is_ok() {
                received += 1;
            } else {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        drop(rx);
        assert_eq!(sender.join().unwrap(), 8);
    }

    /// Review item S3: peer messages wait for the input queue's byte budget
    /// of their lane; the other lane's budget is untouched, and handling
    /// (dropping) an input releases its bytes.
    #[tokio::test]
    async fn inputs_are_bounded_in_bytes_per_lane() {
        let (inputs, mut rx) = Inputs::new();
        let per = 8 << 20;
        let mut n = 0;
        loop {
            let send = inputs.send_message("p".into(), big(per), Lane::Bulk, per);
            match tokio::time::timeout(std::time::Duration::from_millis(50), send).await {
                Ok(r) => {
                    r.unwrap();
                    n += 1;
                }
                Err(_) => break,
            }
        }
        assert!(n * per <= INPUT_BULK_BYTES, "{n} inputs of 8 MiB queued");
        assert_eq!(inputs.available(Lane::Control), INPUT_CONTROL_BYTES);
        inputs
            .send_message("p".into(), big(10), Lane::Control, 100)
            .await
            .unwrap();
        let first = rx.recv().await.unwrap();
        let before = inputs.available(Lane::Bulk);
        drop(first);
        assert!(inputs.available(Lane::Bulk) > before);
    }
}
