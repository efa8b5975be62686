//! Meridian's storage engine: a synchronous library (no async runtime, no
//! network) that the replication layer and the server stand on.
//!
//! # What it provides
//! * **Clock** ([`clock`]): a hybrid logical clock (`uhlc`) with injected
//!   physical time; remote timestamps more than `max_clock_offset` (default
//!   500 ms) ahead are refused with [`Error::ClockAhead`] so the caller can
//!   defer and retry.
//! * **Causality** ([`causal`]): [`NodeId`], [`Dot`], [`VersionVector`]
//!   (compare, join, meet, contains) and [`CausalContext`].
//! * **CRDTs** ([`crdt`]) with delta mutators: a PN-counter with an
//!   observed-reset delete, an add-wins observed-remove set without
//!   tombstones, and an HLC last-writer-wins register with tombstone deletes.
//! * **Storage** ([`Engine`]): objects addressed by `(kind, key)` in sled
//!   (sets decomposed into one entry per member), and a log of deltas that
//!   is both the write-ahead log and the replication log.
//!
//! # Guarantees
//! * **Durability.** With [`Durability::Sync`] (the default) a write is
//!   durable, and may be acknowledged, once [`Engine::wait_durable`] (or
//!   [`Engine::on_durable`]) returns for its log position: the log record is
//!   fdatasync'ed. Concurrent writes share one fdatasync (group commit).
//!   With [`Durability::Periodic`] the log is fdatasync'ed every interval;
//!   a process crash loses nothing (records reach the OS before
//!   `apply` returns) but a power failure may lose up to one interval.
//!   sled's own flush is never relied on for durability.
//! * **Recovery.** Opening replays the log from the last checkpoint into
//!   the object store; replay is idempotent. A torn tail (a damaged frame at
//!   the very end with nothing valid after it) is truncated with a warning.
//!   Damage anywhere else stops the open with [`Error::Corruption`]; data
//!   from a newer format stops it with [`Error::UnsupportedFormat`].
//! * **Idempotence.** [`Engine::merge`] of a delta already applied changes
//!   nothing and says so; joins are commutative, associative and idempotent,
//!   so deltas may arrive in any order, twice, through any peer.
//! * **Bad input** never panics: oversized keys (> [`MAX_KEY_BYTES`]),
//!   members or values (> [`MAX_VALUE_BYTES`]), sets over
//!   [`MAX_OBJECT_BYTES`], operations on the wrong type, corrupt or
//!   newer-format bytes: each is a typed [`Error`] and changes nothing.
//!
//! # Identity and incarnations
//! Each data directory has an incarnation id ([`Engine::node_id`]), drawn at
//! random when the directory is created *and again after every unclean
//! shutdown*. Deltas are numbered per incarnation and placement group (a
//! *stream*), so a rebuilt or crashed node can never reuse sequence numbers
//! peers already hold for other deltas.
//!
//! # Hazards
//! * **Power loss with `Periodic`** loses up to one interval of
//!   acknowledged writes on this node (other replicas may still have them;
//!   catch-up returns them).
//! * **Power loss in general** can leave sled holding effects of writes whose
//!   log records were not yet synced (never acknowledged). Recovery detects
//!   such objects by the log position stored with each, and re-issues their
//!   states as new deltas, so replicas converge on them rather than diverge.
//!   (Detection scans every object after an unclean shutdown: opening is
//!   O(objects) then.)
//! * **A failed fdatasync** poisons the engine: every later write fails with
//!   [`Error::Poisoned`] until the process reopens it, because what is
//!   durable is no longer known.
//! * **Disk full** fails writes with [`Error::Io`] and changes nothing.
//! * **Counters near the i64 range**: concurrent increments on different
//!   replicas can push a counter past it; reads saturate.
//! * **Log growth**: the log is truncated only up to what every replica has
//!   ([`Engine::truncate`]); a replica that stays away keeps it growing until
//!   the caller stops waiting for it (it then needs a full-state sync).
//! * **One process per data directory**, enforced with a lock file.

pub mod causal;
pub mod clock;
pub mod codec;
pub mod crdt;
mod engine;
mod error;
pub mod log;
pub mod object;
mod store;
pub mod vfs;

pub use causal::{CausalContext, Causality, Dot, NodeId, VersionVector};
pub use clock::{Clock, Hlc, PhysicalTime};
pub use crdt::{Delta, ObjectState};
pub use engine::{
    Applied, DEFAULT_CACHE_BYTES, Durability, Engine, EngineConfig, Merged, Metrics, stream_id,
};
pub use error::{Error, Result};
pub use log::{Record, Since};
pub use object::{
    GroupFn, GroupId, Kind, MAX_KEY_BYTES, MAX_MEMBERS_PER_OP, MAX_OBJECT_BYTES, MAX_VALUE_BYTES,
    ObjectKey, Op, RegisterValue, Value,
};
