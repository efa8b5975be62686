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

pub mod mesh;
pub mod message;
pub mod placement;
pub mod protocol;
pub mod tls;

pub use placement::{MAX_PLACEMENT_RULES, NodeInfo, Placement, PlacementError, Rule};
pub use protocol::{
    Input, Lane, Now, Output, PeerFlags, PeerReport, ProtocolConfig, PushTargets, Replicator, Waits,
};
