//! The expired-key reclamation worker (issue 15): fires the expiry of
//! objects whose deadline has passed, on every replica, so their content
//! is removed (its storage freed by the type's own delete) without anyone
//! reading them.
//!
//! Shape (STYLE 7: work, wait for work, status):
//! * **work**: one bounded pass on the engine pool,
//!   `Engine::expire_due(now, EXPIRY_PASS_KEYS)` at the node's clock (its
//!   debug offset included), then the records it appended are pushed to
//!   the peers in log order, like a write's;
//! * **wait**: [`EXPIRY_INTERVAL`] after a pass that found fewer due keys
//!   than it may visit, none after a full pass (more may be due), and
//!   shutdown ends the wait at once;
//! * **status**: [`ExpiryMetrics`] (passes, full passes, failed passes),
//!   beside the engine's `expiry_fired` and `expiry_backlog` in the
//!   exposition.
//!
//! Bounds: one pass visits at most [`EXPIRY_PASS_KEYS`] deadline entries,
//! so it holds a pool thread for a bounded time and its records are a
//! bounded batch; a backlog larger than that is drained pass after pass,
//! each yielding to the runtime. Reads never wait for the worker: an
//! expired object reads as absent from its deadline on (the engine's
//! filter); the worker only makes the expiry final and frees the space.
//!
//! A pass that fails (a storage error) is logged and retried after
//! [`EXPIRY_INTERVAL`]; nothing is lost, since the deadline index entries
//! it did not reach stay in place.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meridian_engine::Error as EngineError;
use tokio::sync::watch;

use crate::coordinator::Coordinator;

/// Most deadline index entries one pass visits: bounds one pool job (each
/// entry is a few point reads and at most two small appends) and the batch
/// of records pushed after it. 256 keeps a pass in the low milliseconds.
pub const EXPIRY_PASS_KEYS: usize = 256;

/// Pause between passes while nothing more is due: a deadline is acted on
/// within about this much of passing (reads hide it at once regardless),
/// for the cost of one index seek per pause when idle.
pub const EXPIRY_INTERVAL: Duration = Duration::from_millis(100);

/// The worker's status counters (exposed as `meridian_expiry_*`).
#[derive(Debug, Default)]
pub struct ExpiryMetrics {
    /// Passes run.
    pub passes: AtomicU64,
    /// Passes that visited [`EXPIRY_PASS_KEYS`] entries (followed at once
    /// by another).
    pub full_passes: AtomicU64,
    /// Passes that failed (logged; retried after [`EXPIRY_INTERVAL`]).
    pub failed_passes: AtomicU64,
}

/// What one pass found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// It visited its limit: more may be due, run again at once.
    Full,
    /// Nothing more is due now: wait [`EXPIRY_INTERVAL`].
    Idle,
    /// The engine is closing: stop.
    Stopped,
}

/// The reclamation worker of one node.
#[derive(Debug)]
pub struct ExpiryWorker {
    coordinator: Arc<Coordinator>,
}

impl ExpiryWorker {
    pub fn new(coordinator: Arc<Coordinator>) -> ExpiryWorker {
        ExpiryWorker { coordinator }
    }

    /// Work: one bounded pass, its records pushed to the peers in order.
    pub async fn work(&self) -> Pass {
        let c = &self.coordinator;
        let metrics = &c.expiry_metrics;
        let (engine, clock) = (c.engine.clone(), c.clock.clone());
        let pass = c
            .pool
            .run(move || engine.expire_due(clock.now(), EXPIRY_PASS_KEYS))
            .await;
        metrics.passes.fetch_add(1, Ordering::Relaxed);
        match pass {
            Ok(pass) => {
                let full = pass.visited >= EXPIRY_PASS_KEYS;
                for record in pass.records {
                    c.mesh.push(record);
                }
                if full {
                    metrics.full_passes.fetch_add(1, Ordering::Relaxed);
                    Pass::Full
                } else {
                    Pass::Idle
                }
            }
            Err(EngineError::Shutdown) => Pass::Stopped,
            Err(e) => {
                metrics.failed_passes.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "expiry reclamation pass failed; retrying");
                Pass::Idle
            }
        }
    }

    /// Runs passes until `stop` fires (or the engine closes): at once
    /// after a full pass, else every [`EXPIRY_INTERVAL`].
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            match self.work().await {
                Pass::Stopped => return,
                // More is due: let the runtime run other tasks, then go on.
                Pass::Full => tokio::task::yield_now().await,
                Pass::Idle => {
                    tokio::select! {
                        _ = tokio::time::sleep(EXPIRY_INTERVAL) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }
}
