//! Link conditioning for the demo and the geo benchmark (`[debug.link]`):
//! a one-way delay per peer region and a switch that cuts a region off.
//!
//! Everything a peer's writer sends passes through one [`LinkStage`]
//! between the writer's channel and the socket: it holds each message
//! until its delay has passed and drops what is sent while the link is
//! cut (its one `cut` check). With no conditioning configured the stage
//! hands on whatever is queued at once, as a plain batching receiver.
//!
//! Promises and limits:
//! * **Never early.** A message is held at least its delay (measured from
//!   when the stage takes it from the channel, so time spent queued in the
//!   channel counts towards it). A lone message on an idle link is slept
//!   precisely ([`sleep_until_precise`], ≈ 0.1 ms late); on a busy link
//!   what is due goes at most every [`FLUSH_GAP`] on tokio's coarse timer
//!   (up to ≈ 1 ms late), because a precise wake-up per message slowed the
//!   node's local writes 1.38× in `meridian bench geo`.
//! * **Bounded.** The stage holds at most [`STAGE_MAX_MESSAGES`] messages
//!   and about [`STAGE_MAX_BYTES`] bytes (one message may cross the byte
//!   bound, so that a single large one always fits). When full it stops
//!   taking from the channel: the channel fills, realtime pushes are then
//!   dropped (and pulled later) and bulk senders wait, as on a slow link.
//! * Changing a link's delay affects messages taken from then on; those
//!   already held keep their due time, and order is always kept.
//! * The receive side and RPCs consult the same [`LinkConditions`] (a cut
//!   link's incoming messages are ignored, its RPCs refused, an RPC hop
//!   delayed once each way), but only the writer's stage sits on the
//!   per-message send path.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::message::PeerMessage;

/// What a stage holds: anything that knows its estimated bytes.
pub(super) trait Staged {
    fn staged_bytes(&self) -> usize;
}

impl Staged for PeerMessage {
    fn staged_bytes(&self) -> usize {
        self.estimated_bytes()
    }
}

impl Staged for super::queue::Queued {
    fn staged_bytes(&self) -> usize {
        self.bytes()
    }
}

/// Demo link conditioning towards one region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// One-way delay added to every message to that region.
    pub delay_ms: u64,
    /// Drop all traffic to that region.
    pub cut: bool,
}

/// The conditioning in force, per peer region (no entry: none).
#[derive(Debug, Default)]
pub(super) struct LinkConditions {
    links: RwLock<BTreeMap<String, Link>>,
}

impl LinkConditions {
    pub(super) fn new(links: BTreeMap<String, Link>) -> LinkConditions {
        LinkConditions {
            links: RwLock::new(links),
        }
    }

    /// The conditioning towards `region` now.
    pub(super) fn get(&self, region: &str) -> Link {
        self.links
            .read()
            .unwrap()
            .get(region)
            .copied()
            .unwrap_or_default()
    }

    pub(super) fn is_cut(&self, region: &str) -> bool {
        self.get(region).cut
    }

    pub(super) fn all(&self) -> BTreeMap<String, Link> {
        self.links.read().unwrap().clone()
    }

    /// Sets the conditioning towards `region`; returns whether it was cut.
    pub(super) fn set(&self, region: &str, link: Link) -> bool {
        self.links
            .write()
            .unwrap()
            .insert(region.to_string(), link)
            .is_some_and(|l| l.cut)
    }
}

/// Messages one stage holds, at most.
pub(super) const STAGE_MAX_MESSAGES: usize = 65_536;

/// Estimated bytes one stage holds, about at most (see the module doc).
pub(super) const STAGE_MAX_BYTES: usize = 64 << 20;

/// Messages taken from the channel per turn, at most (a batch's size when
/// busy).
const TAKE_PER_TURN: usize = 1024;

/// The least time between two sends of delayed (link-conditioned) messages
/// on one lane. Without it a busy link woke and wrote once per message
/// (each comes due a little after the last): thousands of timer wake-ups
/// and stream writes a second, which slowed the node's local writes by a
/// third in `meridian bench geo`. A lone message is not held back.
pub(super) const FLUSH_GAP: Duration = Duration::from_micros(500);

/// The stage's pending wake-up: a [`sleep_until_precise`] or tokio's
/// coarse sleep.
type Wakeup = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The stage between one peer lane's writer channel and its socket (see
/// the module doc).
pub(super) struct LinkStage<'a, T> {
    rx: mpsc::Receiver<T>,
    conditions: &'a LinkConditions,
    region: &'a str,
    /// Held messages, in order, with the time each is due.
    delayed: VecDeque<(Instant, T)>,
    /// Estimated bytes of `delayed`.
    delayed_bytes: usize,
    /// The pending wake-up for the head of the queue, kept across turns so
    /// that messages arriving meanwhile don't restart it.
    timer: Option<(Instant, Wakeup)>,
    /// When held messages were last handed on: when busy, hand-offs are
    /// spaced at least FLUSH_GAP apart (everything due by then goes
    /// together), as the undelayed path batches whatever is queued.
    last_flush: Instant,
}

impl<'a, T: Staged> LinkStage<'a, T> {
    pub(super) fn new(
        rx: mpsc::Receiver<T>,
        conditions: &'a LinkConditions,
        region: &'a str,
    ) -> LinkStage<'a, T> {
        LinkStage {
            rx,
            conditions,
            region,
            delayed: VecDeque::new(),
            delayed_bytes: 0,
            timer: None,
            last_flush: Instant::now(),
        }
    }

    fn has_room(&self) -> bool {
        self.delayed.len() < STAGE_MAX_MESSAGES && self.delayed_bytes < STAGE_MAX_BYTES
    }

    fn hold(&mut self, due: Instant, msg: T) {
        self.delayed_bytes += msg.staged_bytes();
        self.delayed.push_back((due, msg));
    }

    /// The next messages to send, in order (never empty); `None` once the
    /// channel is closed (the link is gone). Messages sent while the link
    /// is cut are dropped here.
    pub(super) async fn next_batch(&mut self) -> Option<Vec<T>> {
        loop {
            // Wait for a message, or for the head of the queue to come due.
            let due = self.delayed.front().map(|(at, _)| *at);
            let wake = due.map(|at| at.max(self.last_flush + FLUSH_GAP));
            if self.timer.as_ref().map(|(at, _)| *at) != wake {
                self.timer = wake.map(|at| {
                    // Precisely for a message on an idle link; on a busy
                    // one (the gap sets the time) tokio's coarse timer,
                    // which costs no thread wake-up and lets more messages
                    // gather.
                    let sleep: Wakeup = if Some(at) == due {
                        Box::pin(sleep_until_precise(at))
                    } else {
                        Box::pin(tokio::time::sleep_until(at.into()))
                    };
                    (at, sleep)
                });
            }
            let room = self.has_room();
            let incoming = match self.timer.as_mut() {
                None => Some(self.rx.recv().await?),
                // Full: only the timer can make room.
                Some((_, sleep)) if !room => {
                    sleep.as_mut().await;
                    self.timer = None;
                    None
                }
                Some((_, sleep)) => tokio::select! {
                    m = self.rx.recv() => Some(m?),
                    _ = sleep.as_mut() => {
                        self.timer = None;
                        None
                    }
                },
            };
            // The conditioning in force now (it may have changed while
            // waiting).
            let link = self.conditions.get(self.region);
            let timer_fired = incoming.is_none();
            if let Some(m) = incoming {
                let due = Instant::now() + Duration::from_millis(link.delay_ms);
                self.hold(due, m);
                // Take whatever else is already queued (batching when busy).
                let mut taken = 1;
                while taken < TAKE_PER_TURN && self.has_room() {
                    match self.rx.try_recv() {
                        Ok(m) => self.hold(due, m),
                        Err(_) => break,
                    }
                    taken += 1;
                }
            }
            // Hand on what is due when the timer fires (it honours
            // FLUSH_GAP), or at once on an undelayed link; a delayed
            // message is never due on arrival.
            let now = Instant::now();
            let mut batch: Vec<T> = Vec::new();
            if timer_fired || link.delay_ms == 0 {
                while self.delayed.front().is_some_and(|(at, _)| *at <= now) {
                    let (_, m) = self.delayed.pop_front().unwrap();
                    self.delayed_bytes -= m.staged_bytes();
                    batch.push(m);
                }
            }
            debug_assert!(
                !self.delayed.is_empty() || self.delayed_bytes == 0,
                "stage byte count drifted: {} bytes held in no messages",
                self.delayed_bytes
            );
            if batch.is_empty() {
                continue;
            }
            self.last_flush = now;
            // The one cut check on the send path.
            if link.cut {
                continue;
            }
            return Some(batch);
        }
    }
}

/// Sleeps until `at`, to within a fraction of a millisecond, for link
/// conditioning. tokio's timer wheel has 1 ms ticks and rounds every
/// deadline up, so an emulated 40 ms hop took 40.5–42 ms: over a quorum
/// round trip (two hops) that was ≈ 2 ms of the ≈ 3.7 ms measured above
/// the emulated RTT (`meridian bench geo`). The last stretch is slept on a
/// blocking-pool thread instead, which the kernel's high-resolution timers
/// wake on time. Dropping the future early (a `select!` taking another
/// branch) leaves at most that short sleep running, harmlessly.
pub(super) async fn sleep_until_precise(at: Instant) {
    /// More than the timer wheel's worst lateness.
    const COARSE_MARGIN: Duration = Duration::from_millis(2);
    if let Some(early) = at.checked_sub(COARSE_MARGIN) {
        tokio::time::sleep_until(early.into()).await;
    }
    let now = Instant::now();
    if at > now {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(at - now)).await;
    }
}

/// One emulated hop of `link`'s delay, for an RPC leg (none if undelayed).
pub(super) async fn hop(link: Link) {
    if link.delay_ms > 0 {
        sleep_until_precise(Instant::now() + Duration::from_millis(link.delay_ms)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> PeerMessage {
        PeerMessage::Want {
            have: meridian_engine::CausalContext::new(),
        }
    }

    #[tokio::test]
    async fn undelayed_stage_passes_batches_in_order() {
        let conditions = LinkConditions::default();
        let (tx, rx) = mpsc::channel(16);
        let mut stage = LinkStage::new(rx, &conditions, "eu");
        for _ in 0..3 {
            tx.send(want()).await.unwrap();
        }
        assert_eq!(stage.next_batch().await.unwrap().len(), 3);
        drop(tx);
        assert!(stage.next_batch().await.is_none());
    }

    #[tokio::test]
    async fn delayed_stage_is_never_early_and_cut_drops() {
        let conditions = LinkConditions::new(BTreeMap::from([(
            "eu".to_string(),
            Link {
                delay_ms: 20,
                cut: false,
            },
        )]));
        let (tx, rx) = mpsc::channel(16);
        let mut stage = LinkStage::new(rx, &conditions, "eu");
        let sent = Instant::now();
        tx.send(want()).await.unwrap();
        assert_eq!(stage.next_batch().await.unwrap().len(), 1);
        let took = sent.elapsed();
        assert!(took >= Duration::from_millis(20), "early: {took:?}");
        assert!(took < Duration::from_millis(200), "late: {took:?}");

        conditions.set(
            "eu",
            Link {
                delay_ms: 0,
                cut: true,
            },
        );
        tx.send(want()).await.unwrap();
        let dropped = tokio::time::timeout(Duration::from_millis(50), stage.next_batch()).await;
        assert!(dropped.is_err(), "a message sent while cut went through");
        conditions.set("eu", Link::default());
        let marker = PeerMessage::Deltas {
            records: Vec::new(),
            catch_up: true,
            more: false,
        };
        tx.send(marker.clone()).await.unwrap();
        let batch = stage.next_batch().await.unwrap();
        assert_eq!(batch, vec![marker]);
    }
}
