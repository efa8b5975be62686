//! The protocol driver: the thread that runs the [`Replicator`] state
//! machine and carries out its outputs.
//!
//! The machine calls the engine, which blocks on disk, so it runs on its
//! own OS thread fed through a queue bounded in inputs and bytes (a flood
//! of peer messages pushes back on QUIC flow control instead of growing
//! memory; see `queue`). A tokio
//! task feeds it a tick every [`TICK`]. Outputs become messages on the
//! peers' writer lanes (dropped and counted when a lane is full in count or
//! bytes: the peer pulls later), full-sync threads (which wait for room in
//! the bulk lane's byte budget), durability callbacks, truncation
//! on the blocking pool and quorum-wait wake-ups. Realtime pushes do not
//! pass through here (see [`crate::protocol::PushTargets`]). Limits: one
//! full sync per peer at a time; the thread stops at shutdown, after the
//! input it is handling.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use quinn::VarInt;
use tokio::sync::mpsc;

use super::queue::InputItem;
use super::{CLOSE_PROTOCOL, MeshState};
use crate::protocol::{Input, Output, Replicator, full_sync_messages};

/// How often the protocol state machine ticks.
const TICK: Duration = Duration::from_millis(20);

/// Starts the protocol thread and its ticker.
pub(super) fn start(
    shared: Arc<MeshState>,
    replicator: Replicator,
    inputs: mpsc::Receiver<InputItem>,
) {
    let runtime = tokio::runtime::Handle::current();
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("meridian-replication".into())
            .spawn(move || {
                // A panic here would stop replication while the node keeps
                // acknowledging local writes: stop the process instead, so
                // a supervisor restarts it (bugs crash).
                let run = std::panic::AssertUnwindSafe(|| {
                    protocol_thread(shared, replicator, inputs, runtime)
                });
                if std::panic::catch_unwind(run).is_err() {
                    tracing::error!("the replication thread panicked; stopping the node");
                    eprintln!("fatal: the replication thread panicked; stopping the node");
                    std::process::abort();
                }
            })
            .expect("spawning the replication thread");
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = shared.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if shared.inputs.try_send(Input::Tick).is_err() && shared.inputs.is_closed() {
                        break;
                    }
                }
                _ = stop.changed() => break,
            }
        }
    });
}

fn protocol_thread(
    shared: Arc<MeshState>,
    mut replicator: Replicator,
    mut inputs: mpsc::Receiver<InputItem>,
    runtime: tokio::runtime::Handle,
) {
    let mut stop = shared.shutdown.subscribe();
    // Each item's reserved bytes go back to the queue's budget when it is
    // dropped, after its input has been handled.
    while let Some(item) = inputs.blocking_recv() {
        let (input, _reserved) = item.into_parts();
        if *stop.borrow_and_update() {
            break;
        }
        let tick = matches!(input, Input::Tick);
        if matches!(input, Input::Durable) {
            shared.durable_pending.store(false, Ordering::Release);
        }
        let outputs = replicator.handle(input, shared.now());
        for out in outputs {
            dispatch(&shared, out, &runtime);
        }
        if tick {
            *shared.reports.write().unwrap() = replicator.report(shared.now());
        }
    }
    tracing::debug!("replication thread stopped");
}

fn dispatch(shared: &Arc<MeshState>, out: Output, runtime: &tokio::runtime::Handle) {
    match out {
        Output::Send { peer, msg, lane } => {
            let Some(link) = shared.peers.get(&peer) else {
                return;
            };
            let writer = link.writer.lock().unwrap().clone();
            if let Some(w) = writer
                && w.lane(lane).try_send(msg).is_err()
            {
                link.counters
                    .realtime_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        Output::StartFullSync { peer, groups } => {
            let Some(link) = shared.peers.get(&peer).cloned() else {
                return;
            };
            let Some(writer) = link.writer.lock().unwrap().clone().map(|w| w.bulk) else {
                return;
            };
            // One full sync per peer at a time: a pull repeated while one
            // streams (a slow link) must not start a second copy.
            if link.full_sync_running.swap(true, Ordering::AcqRel) {
                return;
            }
            let engine = shared.engine.clone();
            let sync = shared.next_sync.fetch_add(1, Ordering::Relaxed);
            let runtime = runtime.clone();
            std::thread::Builder::new()
                .name("meridian-full-sync".into())
                .spawn(move || {
                    let result = full_sync_messages(&engine, &groups, sync, 256 << 10, |msg| {
                        writer.blocking_send(msg, &runtime)
                    });
                    if let Err(e) = result {
                        tracing::error!(peer = %link.name, error = %e, "full-state sync failed");
                    }
                    link.full_sync_running.store(false, Ordering::Release);
                })
                .expect("spawning a full-sync thread");
        }
        Output::WatchDurable { lsn } => {
            let s = shared.clone();
            shared.engine.on_durable(lsn, move |r| {
                if r.is_ok() && !s.durable_pending.swap(true, Ordering::AcqRel) {
                    let _ = s.inputs.try_send(Input::Durable);
                }
            });
        }
        Output::Truncate { stable } => {
            let engine = shared.engine.clone();
            runtime.spawn_blocking(move || {
                if let Err(e) = engine.truncate(&|g| stable.get(&g).cloned().unwrap_or_default()) {
                    tracing::error!(error = %e, "log truncation failed");
                }
            });
        }
        Output::Disconnect { peer, reason } => {
            if let Some(link) = shared.peers.get(&peer)
                && let Some((_, c)) = link.conn.lock().unwrap().as_ref()
            {
                c.close(VarInt::from_u32(CLOSE_PROTOCOL), reason.as_bytes());
            }
        }
        // Already published in the protocol's push targets.
        Output::PeerReady { peer, ready } => {
            tracing::debug!(%peer, ready, "realtime push readiness");
        }
        Output::WaitProgress { token, acked, done } => {
            let finished = shared.waits.lock().unwrap().progress(token, acked, done);
            if let Some((tx, acked)) = finished {
                let _ = tx.send(acked);
            }
        }
    }
}
