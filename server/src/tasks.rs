//! Tracked tasks: what shutdown waits for.
//!
//! Every task a node spawns to serve a connection or a request is spawned
//! through a [`TaskTracker`]; each holds a clone of one channel's sender
//! and drops it when it ends. [`Tasks::wait`] drops the node's own sender
//! and waits until the channel reports no senders left: every tracked task
//! has finished, with no polling (tokio-rs/mini-redis `src/server.rs` uses
//! the same shape).
//!
//! A tracker clone must live only inside running tasks (and the accept
//! loops that spawn them), never in a long-lived struct, or `wait` would
//! wait for that struct too.

use std::future::Future;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Spawns tasks that [`Tasks::wait`] waits for. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TaskTracker {
    alive: mpsc::Sender<()>,
}

impl TaskTracker {
    /// Spawns `future` on the current runtime, tracked.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let alive = self.alive.clone();
        tokio::spawn(async move {
            let out = future.await;
            drop(alive);
            out
        })
    }
}

/// The owner's side: hands out trackers, then waits for their tasks.
#[derive(Debug)]
pub struct Tasks {
    tracker: TaskTracker,
    done: mpsc::Receiver<()>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    pub fn new() -> Tasks {
        // Nothing is ever sent: the channel only counts its senders.
        let (alive, done) = mpsc::channel(1);
        Tasks {
            tracker: TaskTracker { alive },
            done,
        }
    }

    /// A tracker for tasks this owner waits for.
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    /// Waits until every task spawned through a tracker of this owner has
    /// ended and every tracker clone is dropped.
    pub async fn wait(self) {
        let Tasks { tracker, mut done } = self;
        drop(tracker);
        let _ = done.recv().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn wait_returns_only_after_every_tracked_task_ended() {
        let tasks = Tasks::new();
        let tracker = tasks.tracker();
        let finished = Arc::new(AtomicBool::new(false));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        {
            let finished = finished.clone();
            // A task that spawns a nested tracked task, then ends at once.
            let nested = tracker.clone();
            tracker.spawn(async move {
                nested.spawn(async move {
                    let _ = released.await;
                    finished.store(true, Ordering::SeqCst);
                });
            });
        }
        drop(tracker);
        let mut wait = Box::pin(tasks.wait());
        // Not done while the nested task waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut wait)
                .await
                .is_err()
        );
        release.send(()).unwrap();
        wait.await;
        assert!(finished.load(Ordering::SeqCst));
    }
}
