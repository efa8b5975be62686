//! The replication protocol as a sans-io state machine.
//!
//! [`Replicator::handle`] takes one [`Input`] (a peer connected, a message
//! arrived, a local write was applied, durability advanced, time passed)
//! and the current time, applies what it must to the engine, and returns
//! [`Output`]s: messages to send, durability to watch, truncation to run.
//! It owns no socket, task or timer, so the same code runs over QUIC
//! ([`crate::mesh`]) and over the simulated lossy network of the tests.
//!
//! # How replicas converge
//! * **Realtime push**: a local write's delta goes at once to every
//!   connected replica of its object (best effort: a full queue drops it).
//!   The machine decides *which* peers take pushes and publishes that in
//!   [`PushTargets`]; a driver sends a local delta through
//!   [`PushTargets::push`] from the writing thread itself, without an input
//!   to (and a wake-up of) the protocol thread per write.
//! * **Pull catch-up / anti-entropy**: each node regularly sends each peer
//!   its applied dots ([`PeerMessage::Want`]); the peer answers with the
//!   deltas it lacks from its log, *including deltas that originated
//!   elsewhere*, in batches, and the node asks again until nothing is left.
//!   Anything push missed (drops, partitions, restarts) is pulled; relaying
//!   through a third node heals a bridge topology.
//! * **Full-state sync**: when a peer needs deltas this node's log has
//!   already truncated, or holds without log entries (it got them by a full
//!   sync itself), it sends whole objects instead, then a vector the peer
//!   may count as applied.
//! * **Acks** carry the applied and durable dots, and whether the sender
//!   has caught up; they drive quorum waits, replication-lag metrics,
//!   leader eligibility and log truncation (a segment goes once every
//!   replica of its deltas has them, or once a replica has made no progress
//!   for the retention period, being gone, incompatible or stuck: it will
//!   need a full sync).
//! * **Catch-up and leadership**: after (re)connecting, a node completes a
//!   catch-up round from each peer (pulls until a last batch, nothing
//!   deferred); only then, and with no deferred delta outstanding, does it
//!   count as caught up ([`Replicator::caught_up`]) and tell its peers so.
//!   [`PeerFlags`] publishes who may lead and take forwarded requests.
//! * Deltas stamped too far in the future (the record's timestamp or a
//!   register's own) are refused by the engine and counted per peer; pulls
//!   skip them until this node's clock allows them, then fetch them again:
//!   deferred, not lost, and never re-read in a loop.
//! * Merges are idempotent, so duplicates and reordering are harmless; a
//!   peer that sends data outside its placement or malformed messages is
//!   disconnected; a realtime push of a dot that is not the sender's own,
//!   or any delta claiming this node's own unissued dot, is refused and
//!   counted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use meridian_engine::{
    CausalContext, Delta, Dot, Engine, Error as EngineError, Expiry, GroupId, Incarnation, Merged,
    ObjectKey, ObjectState, PhysicalTime, Record, StreamId, VersionVector, stream_id,
};

use crate::message::{Ack, Hello, MAX_PEER_FRAME_BYTES, PeerMessage, expiry_bytes, state_bytes};
use crate::name::NodeName;
use crate::placement::Placement;

/// Default [`ProtocolConfig::retention_ms`]: an hour.
pub const DEFAULT_RETENTION_MS: u64 = 3_600_000;

/// Deltas deferred for clock skew that pulls skip until they come due, at
/// most (16 bytes each in every pull's `have`); beyond it they are pulled
/// again each round and only the round's pacing bounds the work.
pub const MAX_SKIPPED_DEFERRED: usize = 16_384;

/// Full-state syncs from one peer tracked at once; the oldest is dropped
/// (and retried by a later pull) beyond it.
const MAX_SYNCS_IN_PROGRESS: usize = 4;

/// How long pulls skip a delta the engine refused for growing a set past
/// its merged-object bound ([`meridian_engine::MAX_MERGED_OBJECT_BYTES`])
/// before offering it again, in milliseconds.
const OVERSIZED_RETRY_MS: u64 = 60_000;

/// Batches of one full-state sync tracked, at most: 2^20 batches of
/// ≈ 256 KiB is 256 GiB, past any real sync; a sync that claims more is
/// marked failed instead of growing memory.
const MAX_SYNC_BATCHES: usize = 1 << 20;

/// Pull back-off after engine failures: the anti-entropy interval doubled
/// per failure in a row, up to this many times (500 ms → 32 s).
const MAX_BACKOFF_SHIFT: u32 = 6;

/// Protocol timers and batch limits. Every field has a reason.
#[derive(Clone, Debug)]
pub struct ProtocolConfig {
    /// This node's name.
    pub node: NodeName,
    /// How often to pull from each peer when idle, in ms. Bounds how long a
    /// delta that push missed takes to arrive (and to cross a bridge).
    pub anti_entropy_ms: u64,
    /// A pull unanswered this long is re-sent, in ms: this long after it
    /// was sent, or after the last bytes arrived on the peer's bulk stream
    /// ([`Input::Receiving`]), whichever is later. Silence, not the time an
    /// answer takes to cross a slow link.
    pub want_timeout_ms: u64,
    /// An ack goes to each peer at least this often, in ms (it doubles as
    /// the heartbeat the failure detector listens for).
    pub heartbeat_ms: u64,
    /// How often to checkpoint and truncate the log, in ms.
    pub truncate_every_ms: u64,
    /// A peer that has made no progress this long (disconnected, silent,
    /// incompatible, or connected but not advancing while behind) stops
    /// holding back log truncation, in ms; it gets a full-state sync when
    /// it returns or resumes.
    pub retention_ms: u64,
    /// A connected peer that is behind and has not advanced for this long
    /// is reported *stalled* (logged, [`PeerReport::stalled`]) and never
    /// counted as able to lead ([`PeerFlags`]), in ms.
    pub stall_ms: u64,
    /// A peer not heard from this long does not count among the live peers
    /// this node must have caught up from before it leads
    /// ([`Replicator::caught_up`]), in ms. The mesh's failure detector
    /// uses the same window (`mesh::LIVE_TIMEOUT`).
    pub live_timeout_ms: u64,
    /// Catch-up batch limits: records, and bytes of deltas.
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
}

impl ProtocolConfig {
    pub fn new(node: impl Into<NodeName>) -> ProtocolConfig {
        ProtocolConfig {
            node: node.into(),
            anti_entropy_ms: 500,
            want_timeout_ms: 5_000,
            heartbeat_ms: 250,
            truncate_every_ms: 10_000,
            retention_ms: DEFAULT_RETENTION_MS,
            stall_ms: 30_000,
            live_timeout_ms: 1_500,
            max_batch_records: 4_096,
            // A catch-up batch stays well inside one frame and doesn't hog
            // the link for long on a slow WAN.
            max_batch_bytes: (1 << 20).min(MAX_PEER_FRAME_BYTES / 4),
        }
    }
}

/// Time as the protocol sees it.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Monotonic milliseconds (any origin), for timers.
    pub mono_ms: u64,
    /// Physical time handed to the engine's clock.
    pub physical: PhysicalTime,
}

/// Which stream a message should travel on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Handshake, realtime deltas, acks, pulls: small and latency-sensitive.
    Control,
    /// Catch-up and full-sync data: bulky, must not delay the control lane.
    Bulk,
}

#[derive(Debug)]
pub enum Input {
    /// A link to `peer` is up (its certificate identified it).
    Connected {
        peer: NodeName,
    },
    Disconnected {
        peer: NodeName,
    },
    Message {
        peer: NodeName,
        msg: PeerMessage,
    },
    /// Bytes of a message on `peer`'s bulk stream are arriving (sent by the
    /// mesh while it reads one, at most every
    /// [`crate::mesh::RECEIVING_NOTE_MS`] per stream). The bulk stream
    /// carries catch-up answers and full syncs in the order the pulls asked
    /// for them, so the answer to an outstanding pull is on its way behind
    /// these bytes: the pull is not re-sent while they flow (on a slow link
    /// a 1 MiB answer takes longer than [`ProtocolConfig::want_timeout_ms`],
    /// and every re-sent pull queued one more copy of it; issue 13).
    Receiving {
        peer: NodeName,
    },
    /// The engine's durable position advanced: tell peers.
    Durable,
    /// Time passed: heartbeats, pulls, truncation.
    Tick,
    /// Report when `needed` of `peers` have `dot` durably (quorum writes),
    /// and every dot of `also` (the other records of the same operation:
    /// peers may apply one stream's deltas out of order, so holding the
    /// last does not imply holding the others).
    Wait {
        token: u64,
        dot: Dot,
        also: Vec<Dot>,
        peers: Vec<NodeName>,
        needed: usize,
        deadline_ms: u64,
    },
    /// The waiter gave up.
    Cancel {
        token: u64,
    },
}

#[derive(Debug, PartialEq)]
pub enum Output {
    Send {
        peer: NodeName,
        msg: PeerMessage,
        lane: Lane,
    },
    /// Stream a full-state sync of these groups to `peer` (see
    /// [`full_sync_messages`]).
    StartFullSync {
        peer: NodeName,
        groups: Vec<GroupId>,
    },
    /// Feed [`Input::Durable`] once the engine is durable at `lsn`.
    WatchDurable { lsn: u64 },
    /// Run [`Engine::truncate`] with these per-group stable vectors.
    Truncate {
        stable: BTreeMap<GroupId, VersionVector>,
    },
    /// Close the link to `peer` (it misbehaved).
    Disconnect { peer: NodeName, reason: String },
    /// Progress of a [`Input::Wait`]: `acked` peers have the dot durably.
    WaitProgress {
        token: u64,
        acked: usize,
        done: bool,
    },
    /// Whether `peer` now takes realtime pushes (connected, hellos
    /// exchanged, same placement). Informational: the machine has already
    /// published the change in its [`PushTargets`] when this is emitted.
    PeerReady { peer: NodeName, ready: bool },
}

/// A peer's state as reported by metrics and `meridian status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerReport {
    pub name: NodeName,
    pub region: String,
    pub connected: bool,
    pub incarnation: Option<Incarnation>,
    /// Deltas this node has (of groups both replicate) that the peer hasn't acknowledged.
    pub lag_deltas: u64,
    /// How long the peer has been behind, in ms (0 when caught up).
    pub lag_ms: u64,
    /// Deltas from this peer refused because their timestamp was too far ahead.
    pub deferred_deltas: u64,
    /// Peer's clock minus ours, from its last message, in ms.
    pub clock_offset_ms: i64,
    /// Deltas received from this peer and applied (not duplicates).
    pub deltas_applied: u64,
    /// Full-state syncs sent to / received from this peer.
    pub full_syncs_sent: u64,
    pub full_syncs_received: u64,
    /// Whether the peer agrees on placement (false: it is not replicated
    /// with, never leads nor takes forwarded requests, and stops holding
    /// back truncation after the retention period).
    pub compatible: bool,
    /// Connected and behind, without advancing for
    /// [`ProtocolConfig::stall_ms`] (never leads nor takes forwarded
    /// requests; stops holding back truncation after the retention period).
    pub stalled: bool,
    /// Whether the peer still holds back this node's log truncation.
    pub holds_truncation: bool,
    /// Whether this node has completed a catch-up round from the peer since
    /// it (re)connected.
    pub caught_up_from: bool,
    /// Whether the peer may lead in this node's view ([`PeerFlags`]).
    pub leader_eligible: bool,
    /// Deltas from this peer refused because their dot claims an origin the
    /// peer cannot be (a realtime push of another node's stream, or a dot
    /// of this node's own current incarnation it never issued).
    pub refused_deltas: u64,
}

/// What drivers read about the peers without asking the protocol thread
/// (one atomic load each), published by [`Replicator::handle`]: whether a
/// peer agrees on placement, is stalled, and may lead; and whether this
/// node itself may lead ([`Replicator::caught_up`]).
#[derive(Debug)]
pub struct PeerFlags {
    peers: Vec<PeerFlag>,
    caught_up: AtomicBool,
}

#[derive(Debug)]
struct PeerFlag {
    name: NodeName,
    compatible: AtomicBool,
    usable: AtomicBool,
    eligible: AtomicBool,
}

impl PeerFlags {
    fn new(peers: &BTreeMap<NodeName, Peer>) -> PeerFlags {
        PeerFlags {
            peers: peers
                .keys()
                .map(|name| PeerFlag {
                    name: name.clone(),
                    compatible: AtomicBool::new(true),
                    usable: AtomicBool::new(false),
                    eligible: AtomicBool::new(false),
                })
                .collect(),
            caught_up: AtomicBool::new(false),
        }
    }

    fn get(&self, peer: &str) -> Option<&PeerFlag> {
        self.peers.iter().find(|p| p.name == peer)
    }

    /// Whether `peer` agrees on placement (true until its hello says
    /// otherwise; false for a node not in the cluster).
    pub fn is_compatible(&self, peer: &str) -> bool {
        self.get(peer)
            .is_some_and(|p| p.compatible.load(Ordering::Acquire))
    }

    /// Whether `peer` may take forwarded requests: connected, hellos
    /// exchanged, same placement, not stalled.
    pub fn is_usable(&self, peer: &str) -> bool {
        self.get(peer)
            .is_some_and(|p| p.usable.load(Ordering::Acquire))
    }

    /// Whether `peer` may lead: usable, it has told us it completed a
    /// catch-up round from each of its live peers, and it has acknowledged
    /// everything this node had applied when their hellos were exchanged.
    pub fn is_leader_eligible(&self, peer: &str) -> bool {
        self.get(peer)
            .is_some_and(|p| p.eligible.load(Ordering::Acquire))
    }

    /// Whether this node may lead ([`Replicator::caught_up`]).
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }
}

/// Which peers take a local delta's realtime push: the one push decision,
/// made by the [`Replicator`] and read by drivers on the write path.
///
/// The machine marks a peer ready once it is connected, hellos are
/// exchanged and it agrees on placement (exactly when it emits
/// [`Output::PeerReady`]); a delta goes to the ready peers that replicate
/// its group. Reading it takes no lock (one atomic load per peer), so the
/// writing thread pushes straight to the peers' send queues and the
/// protocol thread is not woken per write (with that wake-up, 16 clients'
/// local writes ran at 15k ops/s instead of 25k, commit c3f722f).
#[derive(Debug)]
pub struct PushTargets {
    placement: Arc<Placement>,
    peers: Vec<PushPeer>,
}

#[derive(Debug)]
struct PushPeer {
    name: NodeName,
    /// Groups both this node and the peer replicate.
    shared: Vec<GroupId>,
    ready: AtomicBool,
}

impl PushTargets {
    fn new(placement: Arc<Placement>, peers: &BTreeMap<NodeName, Peer>) -> PushTargets {
        PushTargets {
            placement,
            peers: peers
                .values()
                .map(|p| PushPeer {
                    name: p.name.clone(),
                    shared: p.shared.clone(),
                    ready: AtomicBool::new(false),
                })
                .collect(),
        }
    }

    fn set_ready(&self, peer: &str, ready: bool) {
        if let Some(p) = self.peers.iter().find(|p| p.name == peer) {
            p.ready.store(ready, Ordering::Release);
        }
    }

    /// Whether `peer` takes realtime pushes now.
    pub fn is_ready(&self, peer: &str) -> bool {
        self.peers
            .iter()
            .any(|p| p.name == peer && p.ready.load(Ordering::Acquire))
    }

    /// Hands the realtime push of a locally applied `record` to `send`, once
    /// per peer that takes it now (best effort: whatever the driver fails
    /// to deliver, the peer pulls later).
    pub fn push(&self, record: &Record, mut send: impl FnMut(&str, PeerMessage)) {
        let group = self.placement.group_of(record.key.key());
        for p in &self.peers {
            if p.shared.contains(&group) && p.ready.load(Ordering::Acquire) {
                send(
                    &p.name,
                    PeerMessage::Deltas {
                        records: vec![record.clone()],
                        catch_up: false,
                        more: false,
                    },
                );
            }
        }
    }
}

/// A driver's side of quorum waits ([`Input::Wait`]): what each caller is
/// owed, fed by [`Output::WaitProgress`]. `D` is how the caller is woken
/// (a channel sender in the mesh, anything in a simulation). Limits: tokens
/// are the driver's to choose and must be unique among pending waits.
#[derive(Debug)]
pub struct Waits<D> {
    pending: HashMap<u64, PendingWait<D>>,
}

#[derive(Debug)]
struct PendingWait<D> {
    acked: usize,
    needed: usize,
    done: D,
}

impl<D> Default for Waits<D> {
    fn default() -> Self {
        Waits {
            pending: HashMap::new(),
        }
    }
}

impl<D> Waits<D> {
    /// Registers a wait for `needed` acks (before [`Input::Wait`] goes in,
    /// so that no progress can be missed).
    pub fn register(&mut self, token: u64, needed: usize, done: D) {
        let old = self.pending.insert(
            token,
            PendingWait {
                acked: 0,
                needed,
                done,
            },
        );
        assert!(old.is_none(), "wait token {token} reused");
    }

    /// Applies an [`Output::WaitProgress`]; returns the waker and the ack
    /// count when the wait is complete (it is then forgotten).
    pub fn progress(&mut self, token: u64, acked: usize, done: bool) -> Option<(D, usize)> {
        let w = self.pending.get_mut(&token)?;
        assert!(
            acked <= w.needed,
            "wait {token}: {acked} acks reported, {} needed",
            w.needed
        );
        debug_assert!(acked >= w.acked, "wait {token}: acks went backwards");
        debug_assert_eq!(done, acked == w.needed, "wait {token}: done without quorum");
        w.acked = acked;
        if !done {
            return None;
        }
        self.pending.remove(&token).map(|w| (w.done, acked))
    }

    /// Forgets a wait (it timed out; feed [`Input::Cancel`]); returns how
    /// many acks it had.
    pub fn cancel(&mut self, token: u64) -> usize {
        self.pending.remove(&token).map_or(0, |w| w.acked)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// What became of one batch of deltas from a peer.
#[derive(Default)]
struct Batch {
    applied: u64,
    /// Deferred for clock skew…
    deferred: u64,
    /// …of which pulls skip until due.
    skipped: u64,
    /// …of which pulls did not skip yet: newly deferred (progress; a
    /// delta deferred again, which a pull sent before the first deferral
    /// or a duplicated answer brings back, is not).
    newly_skipped: u64,
    /// Refused for a forged origin.
    refused: u64,
    /// The engine failed (poisoned, I/O): the rest was not tried.
    failed: bool,
}

/// This node's applied vector, limited to the streams of `groups`.
fn shared_vector(engine: &Engine, groups: &[GroupId]) -> VersionVector {
    engine
        .applied()
        .vector()
        .iter()
        .filter(|&(stream, _)| {
            engine
                .stream_group(stream)
                .is_some_and(|g| groups.contains(&g))
        })
        .collect()
}

/// What arrived of one full-state sync from a peer.
struct FullSyncRx {
    batches: BTreeSet<u32>,
    failed: bool,
}

struct Peer {
    name: NodeName,
    region: String,
    /// Groups both this node and the peer replicate.
    shared: Vec<GroupId>,
    connected: bool,
    hello_seen: bool,
    compatible: bool,
    incarnation: Option<Incarnation>,
    applied: CausalContext,
    durable: CausalContext,
    last_heard_ms: u64,
    last_ack_sent_ms: u64,
    /// When our outstanding pull was sent.
    want_sent_ms: Option<u64>,
    last_want_ms: u64,
    caught_up_ms: u64,
    /// Full syncs from this peer in progress, by id: a peer may stream two
    /// at once (it answers every pull that finds its log truncated), and
    /// their batches interleave.
    full_sync_rx: BTreeMap<u64, FullSyncRx>,
    /// Highest full-sync id from this peer that finished (or was abandoned).
    last_sync: u64,
    deferred: u64,
    /// Deltas refused for a forged origin ([`PeerReport::refused_deltas`]).
    refused: u64,
    /// What the last [`Output::PeerReady`] said.
    announced_ready: bool,
    /// Our applied vector (streams of shared groups) when the peer's hello
    /// arrived on this connection, until the peer acknowledges all of it.
    catch_up_target: Option<VersionVector>,
    /// The peer has acknowledged `catch_up_target` (this connection).
    covers_target: bool,
    /// What the peer's last hello or ack said of its own catch-up.
    announced_caught_up: bool,
    /// We completed a catch-up round from the peer on this connection: a
    /// last batch (`more = false`) answered our pull, with nothing in the
    /// round deferred.
    caught_up_from: bool,
    /// `caught_up_from` when the last connection ended.
    caught_up_before: bool,
    /// The catch-up round in progress met deferred deltas.
    round_deferred: bool,
    /// When the peer last made progress: caught up with us, or its applied
    /// dots grew (while connected, hellos exchanged and compatible).
    progress_ms: u64,
    /// Its applied dots' total at the last tick (saturating).
    progress_total: u64,
    stalled: bool,
    /// Whether the peer held back truncation at the last tick (to log the
    /// release once).
    holding: bool,
    /// Engine failures in a row while taking data from this peer (pulls
    /// back off).
    failures: u32,
    applied_from: u64,
    clock_offset_ms: i64,
    full_syncs_sent: u64,
    full_syncs_received: u64,
}

impl Peer {
    /// Forgets what the last connection established about catching up.
    fn reset_catch_up(&mut self) {
        self.caught_up_before = self.caught_up_from;
        self.catch_up_target = None;
        self.covers_target = false;
        self.announced_caught_up = false;
        self.caught_up_from = false;
        self.round_deferred = false;
    }

    /// Connected, hellos exchanged, same placement, not stalled: may take
    /// forwarded requests.
    fn usable(&self) -> bool {
        self.connected && self.hello_seen && self.compatible && !self.stalled
    }

    /// See [`PeerFlags::is_leader_eligible`].
    fn leader_eligible(&self) -> bool {
        self.usable() && self.announced_caught_up && self.covers_target
    }

    /// Checks the peer's applied dots against the catch-up target.
    fn check_target(&mut self) {
        if let Some(target) = &self.catch_up_target
            && self.applied.vector().dominates(target)
        {
            self.catch_up_target = None;
            self.covers_target = true;
        }
    }
}

/// Clock offset of a peer from its wall clock (peer-supplied: any u64).
fn offset_ms(peer_wall_ms: u64, now: Now) -> i64 {
    let diff = peer_wall_ms as i128 - now.physical.unix_ms() as i128;
    diff.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Sum of a vector's counters, saturating (peer-supplied counters).
fn total(v: &VersionVector) -> u64 {
    v.iter().fold(0u64, |acc, (_, c)| acc.saturating_add(c))
}

struct Waiter {
    dot: Dot,
    also: Vec<Dot>,
    peers: Vec<NodeName>,
    acked: BTreeSet<NodeName>,
    needed: usize,
    deadline_ms: u64,
}

impl Waiter {
    /// Whether a peer whose durable dots are `durable` has the write.
    fn held_by(&self, durable: &CausalContext) -> bool {
        durable.contains(self.dot) && self.also.iter().all(|d| durable.contains(*d))
    }
}

/// The replication state machine of one node.
pub struct Replicator {
    config: ProtocolConfig,
    engine: Engine,
    placement: Arc<Placement>,
    fingerprint: u64,
    my_groups: Vec<GroupId>,
    /// This incarnation's streams: peers never originate their dots.
    my_streams: BTreeSet<StreamId>,
    peers: BTreeMap<NodeName, Peer>,
    flags: Arc<PeerFlags>,
    /// Dots deferred for clock skew, with the monotonic ms from which they
    /// may apply: pulls skip them until then (so a deferred batch is not
    /// fetched again and again, and later streams are reached), and this
    /// node does not count as caught up while any is outstanding.
    deferred: BTreeMap<Dot, u64>,
    /// What this node last told its peers of its own catch-up.
    announced_caught_up: bool,
    waiters: BTreeMap<u64, Waiter>,
    push_targets: Arc<PushTargets>,
    last_truncate_ms: u64,
    out: Vec<Output>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("node", &self.config.node)
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Replicator {
    pub fn new(
        config: ProtocolConfig,
        engine: Engine,
        placement: Arc<Placement>,
        now: Now,
    ) -> Self {
        let me = config.node.clone();
        let my_groups: Vec<GroupId> = placement
            .groups()
            .filter(|&g| placement.is_replica(&me, g))
            .collect();
        let peers = placement
            .nodes()
            .iter()
            .filter(|n| n.name != me)
            .map(|n| {
                let shared = my_groups
                    .iter()
                    .copied()
                    .filter(|&g| placement.is_replica(&n.name, g))
                    .collect();
                (
                    n.name.clone(),
                    Peer {
                        name: n.name.clone(),
                        region: n.region.clone(),
                        shared,
                        connected: false,
                        hello_seen: false,
                        compatible: true,
                        incarnation: None,
                        applied: CausalContext::new(),
                        durable: CausalContext::new(),
                        last_heard_ms: now.mono_ms,
                        last_ack_sent_ms: 0,
                        want_sent_ms: None,
                        last_want_ms: 0,
                        caught_up_ms: now.mono_ms,
                        full_sync_rx: BTreeMap::new(),
                        last_sync: 0,
                        deferred: 0,
                        refused: 0,
                        announced_ready: false,
                        catch_up_target: None,
                        covers_target: false,
                        announced_caught_up: false,
                        caught_up_from: false,
                        caught_up_before: false,
                        round_deferred: false,
                        progress_ms: now.mono_ms,
                        progress_total: 0,
                        stalled: false,
                        holding: true,
                        failures: 0,
                        applied_from: 0,
                        clock_offset_ms: 0,
                        full_syncs_sent: 0,
                        full_syncs_received: 0,
                    },
                )
            })
            .collect();
        let my_streams = my_groups
            .iter()
            .map(|&g| stream_id(engine.incarnation(), g))
            .collect();
        Replicator {
            push_targets: Arc::new(PushTargets::new(placement.clone(), &peers)),
            flags: Arc::new(PeerFlags::new(&peers)),
            fingerprint: placement.fingerprint(),
            config,
            engine,
            placement,
            my_groups,
            my_streams,
            peers,
            deferred: BTreeMap::new(),
            announced_caught_up: false,
            waiters: BTreeMap::new(),
            last_truncate_ms: now.mono_ms,
            out: Vec::new(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn placement(&self) -> &Arc<Placement> {
        &self.placement
    }

    /// The peers that take realtime pushes, kept current by
    /// [`Replicator::handle`]: the driver's push path reads it.
    pub fn push_targets(&self) -> Arc<PushTargets> {
        self.push_targets.clone()
    }

    /// The peers' published flags (compatible, usable, may lead) and this
    /// node's own catch-up, kept current by [`Replicator::handle`].
    pub fn peer_flags(&self) -> Arc<PeerFlags> {
        self.flags.clone()
    }

    /// Whether this node may lead: it holds no delta deferred for clock
    /// skew, and for every peer it shares data with, it has completed a
    /// catch-up round (pulled until a last batch, nothing deferred) since
    /// (re)connecting to it, unless that peer
    /// * has not been heard from for [`ProtocolConfig::live_timeout_ms`]
    ///   (since this node started, for one never heard: so a restarted
    ///   node waits that long for its peers before it counts itself alone),
    /// * or disconnected after such a round (nothing it acknowledged is
    ///   missing here; what it takes while apart merges later, as in any
    ///   partition),
    /// * or disagrees on placement, or is stalled.
    pub fn caught_up(&self, now: Now) -> bool {
        self.deferred.is_empty()
            && self.peers.values().all(|p| {
                p.shared.is_empty()
                    || p.caught_up_from
                    || (!p.connected && p.caught_up_before)
                    || !p.compatible
                    || p.stalled
                    || now.mono_ms.saturating_sub(p.last_heard_ms) > self.config.live_timeout_ms
            })
    }

    /// Handles one input; returns what to do.
    pub fn handle(&mut self, input: Input, now: Now) -> Vec<Output> {
        match input {
            Input::Connected { peer } => self.on_connected(&peer, now),
            Input::Disconnected { peer } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.connected = false;
                    p.hello_seen = false;
                    p.want_sent_ms = None;
                    p.full_sync_rx.clear();
                    p.reset_catch_up();
                }
            }
            Input::Message { peer, msg } => self.on_message(&peer, msg, now),
            Input::Receiving { peer } => {
                if let Some(p) = self.peers.get_mut(&peer)
                    && p.connected
                    && p.want_sent_ms.is_some()
                {
                    // The pull's timeout counts from the last bytes of
                    // its answer's stream, not from when it was sent.
                    p.want_sent_ms = Some(now.mono_ms);
                }
            }
            Input::Durable => self.ack_all(now),
            Input::Tick => self.tick(now),
            Input::Wait {
                token,
                dot,
                also,
                peers,
                needed,
                deadline_ms,
            } => {
                let mut w = Waiter {
                    dot,
                    also,
                    peers,
                    acked: BTreeSet::new(),
                    needed,
                    deadline_ms,
                };
                // Counting stops at `needed`: the wait is then done.
                for name in &w.peers {
                    if w.acked.len() < w.needed
                        && self.peers.get(name).is_some_and(|p| w.held_by(&p.durable))
                    {
                        w.acked.insert(name.clone());
                    }
                }
                let done = w.acked.len() >= w.needed;
                self.out.push(Output::WaitProgress {
                    token,
                    acked: w.acked.len(),
                    done,
                });
                if !done {
                    self.waiters.insert(token, w);
                }
            }
            Input::Cancel { token } => {
                self.waiters.remove(&token);
            }
        }
        for p in self.peers.values_mut() {
            let ready = p.connected && p.hello_seen && p.compatible;
            if ready != p.announced_ready {
                p.announced_ready = ready;
                self.push_targets.set_ready(&p.name, ready);
                self.out.push(Output::PeerReady {
                    peer: p.name.clone(),
                    ready,
                });
            }
        }
        let caught_up = self.caught_up(now);
        if caught_up != self.announced_caught_up {
            self.announced_caught_up = caught_up;
            tracing::debug!(caught_up, "this node's catch-up changed");
            // Peers route `leader` requests by it: tell them at once.
            self.ack_all(now);
        }
        self.publish_flags(caught_up);
        std::mem::take(&mut self.out)
    }

    fn publish_flags(&self, caught_up: bool) {
        for p in self.peers.values() {
            if let Some(f) = self.flags.get(&p.name) {
                f.compatible.store(p.compatible, Ordering::Release);
                f.usable.store(p.usable(), Ordering::Release);
                f.eligible.store(p.leader_eligible(), Ordering::Release);
            }
        }
        self.flags.caught_up.store(caught_up, Ordering::Release);
    }

    fn hello(&self, peer: &str, now: Now) -> PeerMessage {
        let seen_yours = self.peers.get(peer).is_some_and(|p| p.hello_seen);
        PeerMessage::Hello(Hello {
            seen_yours,
            caught_up: self.caught_up(now),
            node: self.config.node.clone(),
            incarnation: self.engine.incarnation(),
            placement: self.fingerprint,
            applied: self.engine.applied(),
            durable: self.engine.durable(),
            wall_ms: now.physical.unix_ms(),
        })
    }

    fn ack(&self, now: Now) -> PeerMessage {
        PeerMessage::Ack(Ack {
            applied: self.engine.applied(),
            durable: self.engine.durable(),
            wall_ms: now.physical.unix_ms(),
            caught_up: self.caught_up(now),
        })
    }

    fn send(&mut self, peer: &str, msg: PeerMessage, lane: Lane) {
        self.out.push(Output::Send {
            peer: peer.into(),
            msg,
            lane,
        });
    }

    fn on_connected(&mut self, peer: &str, now: Now) {
        let Some(p) = self.peers.get_mut(peer) else {
            self.out.push(Output::Disconnect {
                peer: peer.into(),
                reason: "not a member of this cluster".into(),
            });
            return;
        };
        p.connected = true;
        p.hello_seen = false;
        p.want_sent_ms = None;
        p.full_sync_rx.clear();
        p.reset_catch_up();
        // A new connection: syncs of the old one can no longer arrive, and a
        // restarted peer numbers its syncs from 1 again.
        p.last_sync = 0;
        p.last_heard_ms = now.mono_ms;
        p.last_ack_sent_ms = now.mono_ms;
        let hello = self.hello(peer, now);
        self.send(peer, hello, Lane::Control);
    }

    fn disconnect(&mut self, peer: &str, reason: String) {
        tracing::warn!(peer, %reason, "disconnecting misbehaving peer");
        if let Some(p) = self.peers.get_mut(peer) {
            p.connected = false;
            p.hello_seen = false;
            p.reset_catch_up();
        }
        self.out.push(Output::Disconnect {
            peer: peer.into(),
            reason,
        });
    }

    fn on_message(&mut self, peer: &str, msg: PeerMessage, now: Now) {
        let Some(p) = self.peers.get_mut(peer) else {
            self.disconnect(peer, "not a member of this cluster".into());
            return;
        };
        p.last_heard_ms = now.mono_ms;
        if !p.connected {
            // A message racing a disconnect: ignore it.
            return;
        }
        match msg {
            PeerMessage::Hello(h) => {
                if h.node != peer {
                    let reason = format!("hello names {:?}, certificate names {peer:?}", h.node);
                    self.disconnect(peer, reason);
                    return;
                }
                // Each side says hello twice per connection (its own, then
                // the answer to the other's): pull once, not twice.
                let first_hello = !p.hello_seen;
                p.hello_seen = true;
                p.clock_offset_ms = offset_ms(h.wall_ms, now);
                if h.placement != self.fingerprint {
                    if p.compatible {
                        tracing::error!(
                            peer,
                            "peer's nodes or placement rules differ from ours; not replicating \
                             with it (it never leads nor takes forwarded requests, and stops \
                             holding back log truncation after the retention period)"
                        );
                    }
                    p.compatible = false;
                    return;
                }
                if !p.compatible {
                    tracing::info!(peer, "peer's placement agrees with ours again");
                }
                p.compatible = true;
                // A restarted peer's vectors replace what we knew.
                p.incarnation = Some(h.incarnation);
                p.applied = h.applied;
                p.durable = h.durable;
                p.progress_total = total(p.applied.vector());
                p.announced_caught_up = h.caught_up;
                if first_hello {
                    // What the peer must acknowledge before it may lead.
                    p.catch_up_target = Some(shared_vector(&self.engine, &p.shared));
                    p.covers_target = false;
                }
                p.check_target();
                self.update_waiters(peer);
                if !h.seen_yours {
                    let hello = self.hello(peer, now);
                    self.send(peer, hello, Lane::Control);
                }
                if first_hello {
                    self.pull(peer, now);
                }
            }
            // Links deliver the hello first; if it was lost (the simulated
            // network can lose it), ignore traffic until it is re-sent.
            _ if !p.hello_seen => {
                tracing::debug!(peer, msg = msg.name(), "message before hello ignored");
            }
            _ if !p.compatible => {}
            PeerMessage::Ack(a) => {
                p.applied.join(&a.applied);
                p.durable.join(&a.durable);
                p.clock_offset_ms = offset_ms(a.wall_ms, now);
                p.announced_caught_up = a.caught_up;
                p.check_target();
                self.update_waiters(peer);
            }
            PeerMessage::Want { have } => self.serve_pull(peer, have),
            PeerMessage::Deltas {
                records,
                catch_up,
                more,
            } => {
                let Some(batch) = self.apply_deltas(peer, &records, catch_up, now) else {
                    return;
                };
                if catch_up {
                    self.after_catch_up_batch(peer, batch, more, now);
                }
            }
            PeerMessage::FullSync {
                sync,
                seq,
                objects,
                expiries,
            } => self.apply_full_sync(peer, sync, seq, objects, expiries, now),
            PeerMessage::FullSyncDone {
                sync,
                batches,
                vector,
                streams,
            } => {
                if sync <= p.last_sync {
                    return; // a stale duplicate
                }
                p.last_sync = sync;
                let (complete, failed) = match p.full_sync_rx.remove(&sync) {
                    Some(rx) => (
                        !rx.failed && rx.batches.len() == batches as usize,
                        rx.failed,
                    ),
                    None => (batches == 0, false),
                };
                // Older syncs' batches are ignored from now on.
                p.full_sync_rx.retain(|&s, _| s > sync);
                p.want_sent_ms = None;
                if !complete {
                    if failed {
                        // The engine refused part of it: pull again later,
                        // not at once (each retry streams the whole state).
                        p.failures = p.failures.saturating_add(1);
                    }
                    tracing::warn!(peer, sync, "full-state sync incomplete; will pull again");
                    return;
                }
                p.full_syncs_received += 1;
                let ours: Vec<(StreamId, GroupId)> = streams
                    .into_iter()
                    .filter(|(_, g)| self.my_groups.contains(g))
                    .collect();
                match self.engine.join_vector(&vector, &ours) {
                    Ok(lsn) => {
                        p.failures = 0;
                        self.out.push(Output::WatchDurable { lsn });
                        self.pull(peer, now);
                    }
                    Err(e) => {
                        p.failures = p.failures.saturating_add(1);
                        tracing::error!(peer, error = %e, "could not record a full sync");
                    }
                }
            }
        }
    }

    /// What follows a catch-up batch: ask again at once only if the batch
    /// moved us forward (a batch of deltas all deferred again, or refused
    /// by a failing engine, would otherwise be fetched again and again).
    /// Deltas pulls already skip do not count: they come back only in
    /// answers to pulls sent before their deferral or in duplicates, and
    /// pulling again on each such answer would keep one more chain of
    /// pulls running per duplicate, at round-trip rate, for as long as the
    /// peer writes (found by the simulation, `tests/dsim`);
    /// a last batch with nothing deferred in its round completes a
    /// catch-up round from the peer.
    fn after_catch_up_batch(&mut self, peer: &str, batch: Batch, more: bool, now: Now) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        // Deferred deltas the skip list holds keep `caught_up` false by
        // themselves; any it could not hold leave the round incomplete.
        // (Refused deltas are forgeries: nothing this node lacks.)
        p.round_deferred |= batch.deferred > batch.skipped;
        if batch.failed {
            p.failures = p.failures.saturating_add(1);
            p.want_sent_ms = None;
            return;
        }
        p.failures = 0;
        if more {
            if batch.applied > 0 || batch.newly_skipped > 0 {
                self.pull(peer, now);
            } else {
                // No progress: the next pull waits for the anti-entropy
                // interval instead of re-reading the same batch at once.
                p.want_sent_ms = None;
            }
            return;
        }
        p.want_sent_ms = None;
        if !p.round_deferred && !p.caught_up_from {
            tracing::debug!(peer, "caught up from peer");
            p.caught_up_from = true;
        }
        p.round_deferred = false;
    }

    /// Defers `dot` (its timestamp is `ahead_ms` ahead of our clock, the
    /// guard allows `max_ms`): pulls skip it until it may apply. Returns
    /// whether pulls skip it (`None` when the skip list is full), and if so
    /// whether they skip it from now on (`Some(true)`) or already did, until
    /// an earlier due time (`Some(false)`).
    fn defer(&mut self, dot: Dot, ahead_ms: u64, max_ms: u64, now: Now) -> Option<bool> {
        let due = now
            .mono_ms
            .saturating_add(ahead_ms.saturating_sub(max_ms))
            .saturating_add(1);
        if let Some(at) = self.deferred.get_mut(&dot) {
            // Already skipped by pulls sent from its first deferral on:
            // it came back in an answer to an older pull, a duplicate, or
            // once due while our clock had moved back.
            let newly = *at <= now.mono_ms;
            *at = due;
            return Some(newly);
        }
        if self.deferred.len() >= MAX_SKIPPED_DEFERRED {
            return None;
        }
        self.deferred.insert(dot, due);
        Some(true)
    }

    /// Merges deltas from `peer`; `None` if the peer was dropped.
    ///
    /// Origins are checked (review S6): a realtime push (`catch_up` false)
    /// carries only deltas the sender originated, so its dots must belong
    /// to the sender's current incarnation (from the hello on this
    /// certificate-authenticated link); catch-up batches relay other nodes'
    /// deltas (that is how a bridge heals) and are checked only against
    /// this node's own current streams, whose dots no one else can hold
    /// before we issued them. Refused deltas are counted, not applied.
    fn apply_deltas(
        &mut self,
        peer: &str,
        records: &[Record],
        catch_up: bool,
        now: Now,
    ) -> Option<Batch> {
        let origin = match self.peers.get(peer) {
            Some(p) if !catch_up => Some(p.incarnation?),
            _ => None,
        };
        let mut batch = Batch::default();
        let mut last_lsn = None;
        for r in records {
            let group = self.engine.group_of(&r.key);
            if !self.my_groups.contains(&group) {
                self.disconnect(
                    peer,
                    format!(
                        "sent a delta for {:?}, which this node may not store",
                        r.key
                    ),
                );
                return None;
            }
            let forged = match origin {
                Some(incarnation) => r.dot.stream != stream_id(incarnation, group),
                None => {
                    self.my_streams.contains(&r.dot.stream)
                        && !self.engine.applied().contains(r.dot)
                }
            };
            if forged {
                batch.refused += 1;
                continue;
            }
            // A delta's inner timestamps face the same guard as its record's
            // (a register's own HLC is what decides last-writer-wins).
            let inner = match &r.delta {
                Delta::Register(reg) => self.engine.clock().observe(reg.hlc, now.physical),
                // A map's `HSET` entries carry the HLCs its reads order by.
                Delta::Map(m) => m
                    .max_hlc()
                    .map_or(Ok(()), |hlc| self.engine.clock().observe(hlc, now.physical)),
                // An expiry's floor is a cutoff that happened on its
                // sender's clock: one from the future would hide writes
                // not yet made.
                Delta::Expiry(e) => self.engine.clock().observe(
                    meridian_engine::Hlc {
                        time: meridian_engine::PhysicalTime::from_unix_ms(e.floor_ms()).0,
                        node: r.hlc.node,
                    },
                    now.physical,
                ),
                Delta::Counter(_) | Delta::Set(_) => Ok(()),
            };
            let merged = inner.and_then(|()| self.engine.merge(r, now.physical));
            match merged {
                Ok(Merged::Applied { lsn, .. }) => {
                    batch.applied += 1;
                    last_lsn = Some(lsn);
                    self.deferred.remove(&r.dot);
                }
                Ok(Merged::Duplicate) => {
                    self.deferred.remove(&r.dot);
                }
                Err(EngineError::ClockAhead { ahead_ms, max_ms }) => {
                    batch.deferred += 1;
                    if let Some(newly) = self.defer(r.dot, ahead_ms, max_ms, now) {
                        batch.skipped += 1;
                        batch.newly_skipped += u64::from(newly);
                    }
                    tracing::debug!(peer, ahead_ms, dot = ?r.dot, "delta from the future deferred");
                }
                Err(
                    EngineError::ObjectTooLarge { bytes, limit }
                    | EngineError::TooManyFields {
                        fields: bytes,
                        limit,
                    },
                ) => {
                    // The set or map would pass the merged-object bound
                    // (or a map its field limit) here
                    // (counted by the engine): skip this delta like a
                    // deferred one and retry it later, so the deltas after
                    // it keep flowing (review C4).
                    batch.deferred += 1;
                    if let Some(newly) = self.defer(r.dot, OVERSIZED_RETRY_MS, 0, now) {
                        batch.skipped += 1;
                        batch.newly_skipped += u64::from(newly);
                    }
                    tracing::debug!(peer, bytes, limit, dot = ?r.dot, "delta over the merged-object bound deferred");
                }
                Err(e @ (EngineError::InvalidArgument(_) | EngineError::WrongType(_))) => {
                    self.disconnect(peer, format!("invalid delta: {e}"));
                    return None;
                }
                Err(e) => {
                    if self.peers.get(peer).is_some_and(|p| p.failures == 0) {
                        tracing::error!(peer, error = %e, "could not apply a delta; backing off");
                    }
                    batch.failed = true;
                    break;
                }
            }
        }
        if let Some(p) = self.peers.get_mut(peer) {
            p.applied_from += batch.applied;
            if batch.deferred > 0 {
                if p.deferred == 0 {
                    tracing::warn!(
                        peer,
                        deferred = batch.deferred,
                        "deferring deltas stamped too far in the future (clock skew?)"
                    );
                }
                p.deferred = p.deferred.saturating_add(batch.deferred);
            }
            if batch.refused > 0 {
                if p.refused == 0 {
                    tracing::warn!(
                        peer,
                        refused = batch.refused,
                        catch_up,
                        "refusing deltas whose dots claim an origin the peer cannot be"
                    );
                }
                p.refused = p.refused.saturating_add(batch.refused);
            }
        }
        if let Some(lsn) = last_lsn {
            self.out.push(Output::WatchDurable { lsn });
        }
        Some(batch)
    }

    fn apply_full_sync(
        &mut self,
        peer: &str,
        sync: u64,
        seq: u32,
        objects: Vec<(ObjectKey, ObjectState)>,
        expiries: Vec<(ObjectKey, Expiry)>,
        now: Now,
    ) {
        if self.peers.get(peer).is_some_and(|p| sync <= p.last_sync) {
            return; // a batch of a sync that already ended
        }
        let keys = objects.iter().map(|(k, _)| k);
        for key in keys.chain(expiries.iter().map(|(k, _)| k)) {
            if !self.my_groups.contains(&self.engine.group_of(key)) {
                self.disconnect(
                    peer,
                    format!("full sync of {key:?}, which this node may not store"),
                );
                return;
            }
        }
        let mut failed = false;
        let mut last_lsn = None;
        for (key, state) in &objects {
            match self.engine.merge_state(key, state, now.physical) {
                Ok(Some(lsn)) => last_lsn = Some(lsn),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(peer, error = %e, ?key, "full-sync object not applied");
                    failed = true;
                    break;
                }
            }
        }
        // Expiries after the objects of the batch (either order converges:
        // the engine fires a floor raised past what it fired, whenever the
        // content arrives).
        let sender = self.peers.get(peer).and_then(|p| p.incarnation);
        let sender = sender.unwrap_or_else(|| self.engine.incarnation());
        for (key, expiry) in expiries.iter().take_while(|_| !failed) {
            let merged = observe_floor(&self.engine, expiry, sender, now.physical)
                .and_then(|()| self.engine.merge_expiry(key, expiry, now.physical));
            match merged {
                Ok(Some(lsn)) => last_lsn = Some(lsn),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(peer, error = %e, ?key, "full-sync expiry not applied");
                    failed = true;
                    break;
                }
            }
        }
        if let Some(p) = self.peers.get_mut(peer) {
            // Data is flowing: the pull that asked for it is not lost.
            if p.want_sent_ms.is_some() {
                p.want_sent_ms = Some(now.mono_ms);
            }
            if !p.full_sync_rx.contains_key(&sync) && p.full_sync_rx.len() >= MAX_SYNCS_IN_PROGRESS
            {
                // Bounded: forget the oldest (its Done finds it incomplete).
                p.full_sync_rx.pop_first();
            }
            let rx = p.full_sync_rx.entry(sync).or_insert_with(|| FullSyncRx {
                batches: BTreeSet::new(),
                failed: false,
            });
            if rx.batches.len() < MAX_SYNC_BATCHES {
                rx.batches.insert(seq);
            } else {
                rx.failed = true;
            }
            rx.failed |= failed;
        }
        if let Some(lsn) = last_lsn {
            self.out.push(Output::WatchDurable { lsn });
        }
    }

    /// Asks `peer` for what we lack (deltas deferred for clock skew and not
    /// yet due are claimed as had, so the answer moves on past them).
    fn pull(&mut self, peer: &str, now: Now) {
        let mut have = self.engine.applied();
        for (&dot, &due) in &self.deferred {
            if due > now.mono_ms {
                have.insert(dot);
            }
        }
        if let Some(p) = self.peers.get_mut(peer) {
            p.want_sent_ms = Some(now.mono_ms);
            p.last_want_ms = now.mono_ms;
        }
        self.send(peer, PeerMessage::Want { have }, Lane::Control);
    }

    fn start_full_sync(&mut self, peer: &str, groups: Vec<GroupId>) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.full_syncs_sent += 1;
        }
        self.out.push(Output::StartFullSync {
            peer: peer.into(),
            groups,
        });
    }

    /// Answers a pull: the deltas `have` lacks from the log, or a full-state
    /// sync when the log cannot serve them all: some were truncated, or
    /// (review C1) this node holds dots it has no log entries for because
    /// it got them by full-state sync itself.
    fn serve_pull(&mut self, peer: &str, have: CausalContext) {
        let shared = match self.peers.get(peer) {
            Some(p) => p.shared.clone(),
            None => return,
        };
        // Read before the log: every dot applied by now has its log entry
        // (dots are published after their append), unless it came by
        // full-state sync or truncation removed it.
        let mine = self.engine.applied();
        let wants = |g: GroupId| shared.contains(&g);
        match self.engine.deltas_since(
            &have,
            &wants,
            self.config.max_batch_records,
            self.config.max_batch_bytes,
        ) {
            Ok(Some(since))
                if !since.more && self.lacks_unlogged(&mine, &have, &since.records, &shared) =>
            {
                tracing::info!(
                    peer,
                    "peer lacks deltas this node holds without log entries (it caught up by \
                     full-state sync); sending full state"
                );
                self.start_full_sync(peer, shared);
            }
            Ok(Some(since)) => {
                self.send(
                    peer,
                    PeerMessage::Deltas {
                        records: since.records,
                        catch_up: true,
                        more: since.more,
                    },
                    Lane::Bulk,
                );
            }
            Ok(None) => {
                tracing::info!(
                    peer,
                    "peer needs deltas this log truncated; sending full state"
                );
                self.start_full_sync(peer, shared);
            }
            Err(e) => tracing::error!(peer, error = %e, "could not read the log for a peer"),
        }
    }

    /// Whether `have` lacks a dot of the `shared` groups that this node has
    /// applied (`mine`, read before the log) and did not send in a last
    /// batch (`sent`): a dot held without a log entry, which only a full
    /// sync passes on. Cost: bounded by `sent` and `have`'s cloud plus one
    /// step per stream (a missing dot not sent ends the search).
    fn lacks_unlogged(
        &self,
        mine: &CausalContext,
        have: &CausalContext,
        sent: &[Record],
        shared: &[GroupId],
    ) -> bool {
        let sent: BTreeSet<Dot> = sent.iter().map(|r| r.dot).collect();
        let in_shared = |stream: StreamId| {
            self.engine
                .stream_group(stream)
                .is_some_and(|g| shared.contains(&g))
        };
        let budget = (sent.len() as u64).saturating_add(have.entries() as u64);
        for (stream, top) in mine.vector().iter() {
            let from = have.vector().get(stream);
            if top <= from || !in_shared(stream) {
                continue;
            }
            if top - from > budget {
                return true;
            }
            for counter in from + 1..=top {
                let dot = Dot::new(stream, counter);
                if !have.contains(dot) && !sent.contains(&dot) {
                    return true;
                }
            }
        }
        mine.cloud()
            .any(|dot| in_shared(dot.stream) && !have.contains(dot) && !sent.contains(&dot))
    }

    fn ack_all(&mut self, now: Now) {
        let targets: Vec<NodeName> = self
            .peers
            .values()
            .filter(|p| p.connected && p.hello_seen && p.compatible)
            .map(|p| p.name.clone())
            .collect();
        if targets.is_empty() {
            return;
        }
        let ack = self.ack(now);
        for peer in targets {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.last_ack_sent_ms = now.mono_ms;
            }
            self.send(&peer, ack.clone(), Lane::Control);
        }
    }

    fn update_waiters(&mut self, peer: &str) {
        let Some(p) = self.peers.get(peer) else {
            return;
        };
        let mut finished = Vec::new();
        for (&token, w) in self.waiters.iter_mut() {
            if w.peers.iter().any(|n| n == peer) && !w.acked.contains(peer) && w.held_by(&p.durable)
            {
                w.acked.insert(peer.into());
                debug_assert!(w.acked.len() <= w.needed, "a done wait kept counting");
                let done = w.acked.len() >= w.needed;
                self.out.push(Output::WaitProgress {
                    token,
                    acked: w.acked.len(),
                    done,
                });
                if done {
                    finished.push(token);
                }
            }
        }
        for t in finished {
            self.waiters.remove(&t);
        }
    }

    fn tick(&mut self, now: Now) {
        // A peer whose hello we haven't seen may not have seen ours either.
        let silent: Vec<NodeName> = self
            .peers
            .values()
            .filter(|p| {
                p.connected
                    && !p.hello_seen
                    && now.mono_ms.saturating_sub(p.last_ack_sent_ms) >= self.config.heartbeat_ms
            })
            .map(|p| p.name.clone())
            .collect();
        for name in silent {
            let hello = self.hello(&name, now);
            if let Some(p) = self.peers.get_mut(&name) {
                p.last_ack_sent_ms = now.mono_ms;
            }
            self.send(&name, hello, Lane::Control);
        }
        let live: Vec<NodeName> = self
            .peers
            .values()
            .filter(|p| p.connected && p.hello_seen && p.compatible)
            .map(|p| p.name.clone())
            .collect();
        let mut need_ack = false;
        for name in &live {
            let p = &self.peers[name];
            if now.mono_ms.saturating_sub(p.last_ack_sent_ms) >= self.config.heartbeat_ms {
                need_ack = true;
            }
            // Engine failures in a row space the pulls out (a failing
            // engine must not re-read the peer's log, or take whole full
            // syncs, as fast as the peer answers).
            let idle = self
                .config
                .anti_entropy_ms
                .saturating_mul(1 << p.failures.min(MAX_BACKOFF_SHIFT));
            let pull_due = match p.want_sent_ms {
                None => now.mono_ms.saturating_sub(p.last_want_ms) >= idle,
                Some(at) => now.mono_ms.saturating_sub(at) >= self.config.want_timeout_ms,
            };
            if pull_due {
                self.pull(name, now);
            }
        }
        if need_ack {
            self.ack_all(now);
        }
        // Track how long each peer has been behind, and whether it still
        // makes progress.
        let mine = self.engine.applied();
        for name in self.peers.keys().cloned().collect::<Vec<_>>() {
            let lag = self.lag_deltas(&mine, &self.peers[&name]);
            let (stall_ms, retention_ms) = (self.config.stall_ms, self.config.retention_ms);
            let p = self.peers.get_mut(&name).unwrap();
            if lag == 0 {
                p.caught_up_ms = now.mono_ms;
            }
            let synced = p.connected && p.hello_seen && p.compatible;
            let applied = total(p.applied.vector());
            if synced {
                if lag == 0 || applied > p.progress_total {
                    p.progress_ms = now.mono_ms;
                }
                p.progress_total = applied;
            }
            let idle = now.mono_ms.saturating_sub(p.progress_ms);
            let stalled = synced && idle > stall_ms;
            if stalled != p.stalled {
                p.stalled = stalled;
                if stalled {
                    tracing::warn!(
                        peer = %name,
                        lag_deltas = lag,
                        idle_ms = idle,
                        "peer is behind and not advancing: it no longer leads nor takes \
                         forwarded requests"
                    );
                } else {
                    tracing::info!(peer = %name, "peer advances again");
                }
            }
            let holding = idle <= retention_ms;
            if holding != p.holding {
                p.holding = holding;
                if holding {
                    tracing::info!(peer = %name, "peer holds back log truncation again");
                } else {
                    tracing::warn!(
                        peer = %name,
                        connected = p.connected,
                        compatible = p.compatible,
                        idle_ms = idle,
                        "peer made no progress for the retention period: no longer holding \
                         back log truncation for it (it will need a full-state sync)"
                    );
                }
            }
        }
        // Deferred dots that arrived meanwhile (by another peer, a full
        // sync) are no longer outstanding.
        if !self.deferred.is_empty() {
            self.deferred.retain(|&dot, _| !mine.contains(dot));
        }
        self.waiters.retain(|_, w| w.deadline_ms > now.mono_ms);
        if now.mono_ms.saturating_sub(self.last_truncate_ms) >= self.config.truncate_every_ms {
            self.last_truncate_ms = now.mono_ms;
            let stable = self.stable_vectors(now);
            self.out.push(Output::Truncate { stable });
        }
    }

    /// Per group this node replicates: what every replica still counted
    /// has applied. A replica stops being counted once it has made no
    /// progress for the retention period (review C6): disconnected and
    /// silent, connected but disagreeing on placement, or connected and
    /// behind without advancing; when it resumes it gets a full sync.
    fn stable_vectors(&self, now: Now) -> BTreeMap<GroupId, VersionVector> {
        let mine = self.engine.applied().vector().clone();
        let mut out = BTreeMap::new();
        for &g in &self.my_groups {
            let mut stable = mine.clone();
            for p in self.peers.values() {
                if !p.shared.contains(&g) {
                    continue;
                }
                if now.mono_ms.saturating_sub(p.progress_ms) > self.config.retention_ms {
                    continue;
                }
                stable = stable.meet(p.applied.vector());
            }
            out.insert(g, stable);
        }
        out
    }

    fn lag_deltas(&self, mine: &CausalContext, p: &Peer) -> u64 {
        mine.vector()
            .iter()
            .filter(|(stream, _)| {
                self.engine
                    .stream_group(*stream)
                    .is_some_and(|g| p.shared.contains(&g))
            })
            .map(|(stream, c)| c.saturating_sub(p.applied.vector().get(stream)))
            .fold(0u64, u64::saturating_add)
    }

    /// Every peer's state, for metrics and `meridian status`.
    pub fn report(&self, now: Now) -> Vec<PeerReport> {
        let mine = self.engine.applied();
        self.peers
            .values()
            .map(|p| {
                let lag = self.lag_deltas(&mine, p);
                PeerReport {
                    name: p.name.clone(),
                    region: p.region.clone(),
                    connected: p.connected && p.hello_seen,
                    incarnation: p.incarnation,
                    lag_deltas: lag,
                    lag_ms: if lag == 0 {
                        0
                    } else {
                        now.mono_ms.saturating_sub(p.caught_up_ms)
                    },
                    deferred_deltas: p.deferred,
                    clock_offset_ms: p.clock_offset_ms,
                    deltas_applied: p.applied_from,
                    full_syncs_sent: p.full_syncs_sent,
                    full_syncs_received: p.full_syncs_received,
                    compatible: p.compatible,
                    stalled: p.stalled,
                    holds_truncation: p.holding,
                    caught_up_from: p.caught_up_from,
                    leader_eligible: p.leader_eligible(),
                    refused_deltas: p.refused,
                }
            })
            .collect()
    }
}

/// Folds `expiry`'s floor (from `sender`) into this node's clock, refusing
/// one more than the accepted offset ahead ([`EngineError::ClockAhead`]):
/// a floor is a cutoff that happened on its sender's clock, and one from
/// the future would hide writes not yet made. For joins of whole expiry
/// states (full sync, read repair); a delta's floor gets the same check
/// with its record.
pub fn observe_floor(
    engine: &Engine,
    expiry: &Expiry,
    sender: Incarnation,
    now: PhysicalTime,
) -> Result<(), EngineError> {
    let floor = meridian_engine::Hlc {
        time: PhysicalTime::from_unix_ms(expiry.floor_ms()).0,
        node: sender,
    };
    engine.clock().observe(floor, now)
}

/// The messages of a full-state sync of `groups`, in batches of about
/// `batch_bytes`, handed to `emit` one by one (stop early by returning
/// false): every object, then every expiry state (issue 15: a key whose
/// content expired and was reclaimed keeps only its expiry, and that floor
/// is what stops a receiver holding the old content from serving it). The
/// last message is the [`PeerMessage::FullSyncDone`]. Both are read after
/// the vector it carries, so they cover at least what it claims.
pub fn full_sync_messages(
    engine: &Engine,
    groups: &[GroupId],
    sync: u64,
    batch_bytes: usize,
    emit: impl FnMut(PeerMessage) -> bool,
) -> Result<(), EngineError> {
    let mut batches = SyncBatches {
        sync,
        seq: 0,
        batch_bytes,
        objects: Vec::new(),
        expiries: Vec::new(),
        size: 0,
        emit,
        stopped: false,
    };
    let wants = |g: GroupId| groups.contains(&g);
    let (vector, streams) = engine.full_state(&wants, |key, state| {
        batches.size += state_bytes(&key, &state);
        batches.objects.push((key, state));
        Ok(batches.flush_if_full())
    })?;
    if batches.stopped {
        return Ok(());
    }
    engine.for_each_expiry(&wants, |key, expiry| {
        if expiry.is_empty() {
            return Ok(true);
        }
        batches.size += 64 + key.key().len() + expiry_bytes(&expiry);
        batches.expiries.push((key, expiry));
        Ok(batches.flush_if_full())
    })?;
    if batches.stopped || !batches.flush() {
        return Ok(());
    }
    (batches.emit)(PeerMessage::FullSyncDone {
        sync,
        batches: batches.seq,
        vector,
        streams,
    });
    Ok(())
}

/// The batches of one full-state sync being cut.
struct SyncBatches<F> {
    sync: u64,
    seq: u32,
    batch_bytes: usize,
    objects: Vec<(ObjectKey, ObjectState)>,
    expiries: Vec<(ObjectKey, Expiry)>,
    /// Estimated bytes of what is batched.
    size: usize,
    emit: F,
    stopped: bool,
}

impl<F: FnMut(PeerMessage) -> bool> SyncBatches<F> {
    /// Emits the batch once it holds `batch_bytes`; false once the
    /// receiver of the messages said stop.
    fn flush_if_full(&mut self) -> bool {
        self.size < self.batch_bytes || self.flush()
    }

    /// Emits what is batched, if anything; false once told to stop.
    fn flush(&mut self) -> bool {
        if self.objects.is_empty() && self.expiries.is_empty() {
            return true;
        }
        self.size = 0;
        let msg = PeerMessage::FullSync {
            sync: self.sync,
            seq: self.seq,
            objects: std::mem::take(&mut self.objects),
            expiries: std::mem::take(&mut self.expiries),
        };
        if !(self.emit)(msg) {
            self.stopped = true;
            return false;
        }
        self.seq += 1;
        true
    }
}
