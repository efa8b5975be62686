//! Meridian's replication: every node keeps an authenticated QUIC
//! connection to every peer (a full mesh) and the replicas of each object
//! converge on the same state.
//!
//! * [`protocol`] is the replication protocol as a sans-io state machine:
//!   realtime push, pull-based catch-up and anti-entropy (which relays
//!   deltas through third nodes), full-state sync past truncated logs, acks
//!   for quorum waits and log truncation. It is tested over a simulated
//!   network that drops, duplicates, reorders, delays and partitions. It
//!   is the one place that decides realtime push targets
//!   ([`PushTargets`]); drivers read that decision on the write path.
//! * [`mesh`] is the thin tokio/quinn driver: mutual TLS from the cluster
//!   CA (identity from the certificate, never the address), one control
//!   stream and one bulk stream per link so catch-up never delays realtime
//!   traffic, request/response RPC streams for the coordinator, and the
//!   demo's link conditioning (delay, cut) in one stage before each
//!   writer.
//! * [`placement`] decides which nodes may hold which keys (data residency)
//!   and the leadership order of each key's replicas.
//! * [`message`] defines the peer messages and their validated framing.
//! * [`tls`] builds the peer mesh's TLS configuration.
//!
//! # Hazards
//! What can lose data, diverge, stall or exhaust a resource in replication,
//! and what bounds each.
//!
//! **Losing data.**
//! * A write acknowledged at `local` or `leader` is durable on one node
//!   until replication carries it on: realtime push at once, pulls every
//!   [`ProtocolConfig::anti_entropy_ms`]. Losing that node's disk inside
//!   that window loses the write; `quorum` and `all` do not have it.
//! * Realtime push is best effort: a push that does not fit a peer's lane
//!   is dropped and counted (`realtime_dropped`); the next pull brings it.
//! * A peer holding a node key can forge *relayed* dots (catch-up carries
//!   other nodes' deltas, with no per-delta signature): a forged dot makes
//!   the real delta a duplicate, dropped. Bounded: realtime pushes must
//!   carry the sender's own current incarnation's dots, no peer may send
//!   this node's own unissued dots, and refusals are counted
//!   ([`PeerReport::refused_deltas`]); only catch-up relays are trusted.
//!
//! **Diverging.**
//! * Replicas differ until pulls carry every delta: bounded by the
//!   anti-entropy interval, the catch-up batches and, past truncation, a
//!   full-state sync. A node that took a full sync holds dots it has no log
//!   entries for; a puller lacking them gets a full sync from it too, so a
//!   bridge heals after truncation. (Engine caveat: replaying a `Vector`
//!   log entry after a crash does not restore the streams' groups, so until
//!   the next checkpoint such a node's full syncs leave those streams out
//!   of the vector they send: values converge, the receiver's applied dots
//!   do not, and it keeps pulling.)
//! * A set a merge would grow past
//!   [`meridian_engine::MAX_MERGED_OBJECT_BYTES`] (review C4: writers cut
//!   off from one another each filling it) is refused by the engine; the
//!   delta is deferred like a clock-skewed one (pulls skip it for a
//!   minute, then offer it again) so the deltas after it keep flowing, and
//!   the set stays apart on this replica until removes elsewhere shrink
//!   it. A full sync holding such an object fails as a whole and is
//!   retried with backoff (skipping the object would let the vector claim
//!   its deltas). Counted: `oversized_merges` in the engine's metrics.
//! * Peers that disagree on placement do not replicate with each other at
//!   all (reported [`PeerReport::compatible`], logged) until the
//!   configurations agree.
//! * Deltas stamped beyond the clock guard (a register's own timestamp
//!   included) are deferred until this node's clock reaches them: bounded
//!   by the skew. Pulls skip them until then (at most
//!   [`protocol::MAX_SKIPPED_DEFERRED`]; beyond that they are fetched again
//!   each round, at the anti-entropy pace).
//! * `leader` across leadership changes: a node leads only once caught up
//!   ([`Replicator::caught_up`], [`mesh::Mesh::is_caught_up`]), but writes
//!   the previous leader acknowledged within about one replication delay of
//!   the change may be missing from the new leader's reads until they
//!   arrive, and during a partition (asymmetric ones included) each side
//!   leads for itself (docs/architecture.md section 7).
//!
//! **Stalling.**
//! * One protocol thread per node applies every peer's data: a slow disk
//!   slows replication from all peers; its input queue then fills and QUIC
//!   flow control pushes back on the senders.
//! * A peer that is connected but does not advance is reported stalled
//!   after [`ProtocolConfig::stall_ms`] and never leads nor takes forwarded
//!   requests; one that makes no progress for
//!   [`ProtocolConfig::retention_ms`] (silent, incompatible or stuck) stops
//!   holding back truncation and needs a full sync when it resumes.
//! * A batch that moves nothing forward (all deferred, or refused by a
//!   failing engine) is not re-pulled at once; engine failures back pulls
//!   off up to 64× the anti-entropy interval, so a poisoned engine neither
//!   loops nor re-streams full syncs.
//! * A full sync streams from one thread per peer (one at a time), waiting
//!   for room in the bulk lane: a peer that stops reading holds that thread
//!   until its link drops.
//! * A `leader` request waits up to 2 s for a caught-up leader (after a
//!   restart, a node waits [`ProtocolConfig::live_timeout_ms`] for its
//!   peers before it counts itself alone), then fails `Unavailable`.
//!
//! **Exhausting resources.**
//! * Memory, per peer: two send lanes of at most 8,192 messages and 16 MiB
//!   each (a single larger message alone), the link stage within them, at
//!   most 4 full syncs and 2^20 batch ids tracked; node-wide: the protocol
//!   input queue, 16,384 inputs and 32 MiB (control) + 64 MiB (bulk) of
//!   peer messages; the deferred skip list, 16,384 dots. A frame being read
//!   is at most [`message::MAX_PEER_FRAME_BYTES`] per stream. A message
//!   (or RPC request or response) larger than a frame, one whole object up
//!   to the merged-object bound (review C4), comes in several frames and
//!   is reassembled up to [`message::MAX_PEER_MESSAGE_BYTES`], its whole
//!   length reserved first from a node-wide budget of two such messages
//!   (all or nothing, so readers never deadlock on it; a reader waiting for
//!   it stops reading its stream and QUIC flow control holds the sender).
//!   A pull is asked again only after [`ProtocolConfig::want_timeout_ms`]
//!   of silence on the peer's bulk stream ([`Input::Receiving`]), so an
//!   answer that takes longer than that to cross a slow link is not asked
//!   for again while it arrives (issue 13: copies used to queue up,
//!   `tests/slow_link.rs`). Peer RPCs (up to 512 per
//!   connection, each up to [`mesh::MAX_RPC_BYTES`]) are bounded by count
//!   and that budget here (node-wide request budgets: review item S1).
//! * Disk: the log is kept for every replica that makes progress, and for
//!   one that does not at most [`ProtocolConfig::retention_ms`] (default
//!   1 h, `[replication] retention_ms`).
//! * Peer-supplied numbers: counters above [`message::MAX_PEER_COUNTER`]
//!   are refused as garbage, so no `+ 1` or sum over them overflows; clock
//!   offsets saturate.
//! * Causal contexts grow with holes (dots applied out of order); a context
//!   too large for one frame (about 1.5 million entries) cannot be sent in
//!   a hello or a pull, and the link fails until a full sync fills it.

pub mod mesh;
pub mod message;
mod name;
pub mod placement;
pub mod protocol;
pub mod tls;

pub use name::NodeName;
pub use placement::{MAX_PLACEMENT_RULES, NodeInfo, Placement, PlacementError, Rule};
pub use protocol::{
    Input, Lane, Now, Output, PeerFlags, PeerReport, ProtocolConfig, PushTargets, Replicator, Waits,
};
