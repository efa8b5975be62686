//! Meridian's storage engine: a synchronous library (no async runtime, no
//! network) that the replication layer and the server stand on.
//!
//! # What it provides
//! * **Clock** ([`clock`]): a hybrid logical clock (`uhlc`) with injected
//!   physical time; remote timestamps more than `max_clock_offset` (default
//!   500 ms) ahead are refused with [`Error::ClockAhead`] so the caller can
//!   defer and retry.
//! * **Causality** ([`causal`]): [`Incarnation`], [`StreamId`], [`Dot`],
//!   [`VersionVector`] (compare, join, meet, contains) and [`CausalContext`].
//! * **CRDTs** ([`crdt`]) with delta mutators: a PN-counter with an
//!   observed-reset delete, an add-wins observed-remove set without
//!   tombstones, and an HLC last-writer-wins register with tombstone deletes.
//! * **Storage** ([`Engine`]): objects addressed by `(kind, key)` in sled
//!   (sets decomposed into one entry per member), and a log of deltas that
//!   is both the write-ahead log and the replication log.
//!
//! * **Files** ([`vfs`]): every file the engine writes itself goes through
//!   a [`vfs::Vfs`] — the real file system by default, or a simulated disk
//!   ([`vfs::SimDisk`]) that loses power and injects faults, for tests and
//!   simulations ([`EngineConfig::vfs`]).
//! * **Determinism** (for simulations): time is always passed in; with
//!   [`EngineConfig::sync_thread`] off the engine starts no thread of its
//!   own (the owner runs each group-commit fsync with
//!   [`Engine::run_pending_sync`] / [`Engine::sync_now`]), and
//!   [`EngineConfig::incarnations`] replaces OS randomness for incarnation
//!   ids. sled still runs its own threads; what it stores does not depend
//!   on them. `replication/tests/dsim` runs whole nodes this way.
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
//!   the object store; replay is idempotent. After an unclean shutdown a
//!   torn tail (a damaged frame at the very end with nothing valid after
//!   it) is truncated with a warning. After a clean shutdown (a marker
//!   [`Engine::close`] writes last, holding the log's bounds) any damage at
//!   the end is [`Error::Corruption`]. So is damage anywhere else, a gap
//!   between segments, a log that ends before the checkpoint position or
//!   starts after it, and a log whose bounds differ from the clean-shutdown
//!   marker's; nothing on disk changes before these checks pass. Data from a newer format stops
//!   the open with [`Error::UnsupportedFormat`]. After an unclean
//!   shutdown the open does not trust the log it read to be on disk (a
//!   failed fsync drops pages from writeback, not from the page cache): it
//!   rewrites the last segment's valid bytes into a fresh file, fsyncs it
//!   and the directory, and renames it over the segment, before serving.
//! * **Idempotence.** [`Engine::merge`] of a delta already applied changes
//!   nothing and says so; joins are commutative, associative and idempotent,
//!   so deltas may arrive in any order, twice, through any peer.
//! * **Bad input** never panics: oversized keys (> [`MAX_KEY_BYTES`]),
//!   members or values (> [`MAX_VALUE_BYTES`]), adds growing a set over
//!   [`MAX_OBJECT_BYTES`], merges over [`MAX_MERGED_OBJECT_BYTES`],
//!   operations on the wrong type, corrupt or
//!   newer-format bytes: each is a typed [`Error`] and changes nothing.
//! * **Private files.** Directories the engine creates are 0700 and files
//!   0600, set after creation so the umask cannot widen them; sled's files
//!   are tightened the same way at open and at every checkpoint. A data
//!   directory that already exists keeps its own mode.
//!
//! # Identity and incarnations
//! Each data directory has an incarnation id ([`Engine::incarnation`]), drawn at
//! random when the directory is created *and again after every unclean
//! shutdown*. Deltas are numbered per incarnation and placement group (a
//! *stream*), so a rebuilt or crashed node can never reuse sequence numbers
//! peers already hold for other deltas. [`Engine::close`] seals the log
//! before its final sync, so a write racing it is refused
//! ([`Error::Shutdown`]) rather than appended unsynced behind a clean
//! marker (which would let the kept incarnation hand its number out again).
//!
//! # Hazards
//! What can lose data, diverge, stall or exhaust a resource, and what
//! bounds it. The power-loss model behind the tests is described in
//! [`vfs::sim`]; it covers the engine's own files, not sled's (which the
//! tests either keep whole or put back as of the last checkpoint).
//!
//! **Losing data**
//! * **Power loss with `Periodic`** loses the writes made since the last
//!   fsync: at most one interval of acknowledged writes on this node
//!   (other replicas may still have them; catch-up returns them). Writes
//!   reported by [`Engine::durable`] or [`Engine::on_durable`] survive.
//! * **Power loss with `Sync`** loses no acknowledged write.
//! * **Power loss in general** can leave sled holding effects of writes
//!   whose log records were not yet synced (never acknowledged, or
//!   reported as failed). Recovery finds such objects by the log position
//!   stored with each and re-issues their states as new deltas, so
//!   replicas converge on them rather than diverge: a write whose caller
//!   saw an error may still take effect (errors after the append are
//!   indeterminate). The list being re-issued is recorded (`RELOG`)
//!   before the first re-issued record, because those records reuse the
//!   lost ones' positions: a crash part way resumes the list instead of
//!   forgetting objects. Re-issued register timestamps advance the clock,
//!   so a later local put is never stamped below them. Detection scans
//!   every object after an unclean shutdown: opening is O(objects) then.
//! * **A failed fsync** of a log segment (by the sync thread, or when a
//!   full segment is closed), of the log directory, of a checkpoint or
//!   marker file, or of sled's files at a checkpoint, poisons the engine:
//!   every write waiting to become durable and every later one fails with
//!   [`Error::Poisoned`] until the process reopens it, because what is
//!   durable is no longer known. (Linux drops the dirty pages of a failed
//!   writeback and reports the error to one fsync only; log fsyncs are
//!   serialized with the poisoning, so no later "successful" fsync of the
//!   same file releases anyone.) Writes in flight at the failure are
//!   indeterminate. Reopening after such a failure *without a reboot*
//!   reads the log back from the page cache, which still holds the pages
//!   the failed writeback dropped from the disk, and no fsync of that file
//!   would write them (a later power cut would leave zeros in the middle of
//!   the log: `Corruption` on every open after it; found by the
//!   deterministic simulation, `replication/tests/dsim`). So an open after
//!   any unclean shutdown rewrites the log's last segment from the bytes it
//!   read into a fresh file, fsynced and renamed over the old one, before
//!   serving (see Recovery); the other segments were fsynced in full when
//!   they were closed. Needs the segment's size (at most
//!   `segment_bytes`) free: on a full disk the open fails with
//!   [`Error::Io`] and changes nothing. Not covered: sled's own files,
//!   which the engine does not write itself (a failed flush of sled's
//!   files at a checkpoint poisons the engine the same way, but what a
//!   restart then reads from sled is not rewritten: after a failed
//!   object-store flush, reboot the machine before restarting the node).
//! * **Disk full** fails the write with [`Error::Io`] (ENOSPC) and changes
//!   nothing: a partial append is cut off again, its sequence number is
//!   not used; if the cut itself fails the engine is poisoned. A full disk
//!   at a segment roll or a checkpoint fails that the same way. An object
//!   store (sled) write that fails after its log append poisons the engine
//!   until reopened (replay then applies the logged entry).
//! * **Undetected damage** (files removed or cut by hand or by a failing
//!   disk, never by power loss, since every segment's name is durable
//!   before anything is written to it): after an unclean shutdown, a
//!   missing *first* segment that still starts at or before the checkpoint
//!   position looks like a truncation (its deltas are in the object store,
//!   but peers that lack them are not sent to a full sync), and a missing
//!   or cut *last* segment that still reaches the checkpoint position looks
//!   like a lost tail (the objects it touched are re-issued from sled).
//!   After a clean shutdown both are detected, and so is everything else
//!   missing or damaged in the log (see Recovery). A power cut between a truncation's
//!   checkpoint and the deletion of its segments is harmless: segments are
//!   deleted front first, each removal durable before the next, and the
//!   leftovers go at the next truncation.
//!
//! **Diverging**
//! * **Counters near the i64 range**: concurrent increments on different
//!   replicas can push a counter past it; reads saturate.
//! * **Sets past the merged-object bound** (review C4). A local add is held
//!   to [`MAX_OBJECT_BYTES`] (16 MiB, as `crdt::set::entry_cost` counts:
//!   at least the encoded size). Merges cannot be: writers cut off from
//!   one another each fill the set to that limit with members the others
//!   have not seen, so the true bound of a merged set is (writers that
//!   were mutually cut off) × 16 MiB, up to the cluster's node count (and
//!   more across wiped data directories). The engine accepts merges up to
//!   [`MAX_MERGED_OBJECT_BYTES`] (4 × 16 MiB: four regions each filling a
//!   set during one partition) and refuses one beyond it with
//!   [`Error::ObjectTooLarge`], counted in [`Metrics::oversized_merges`]:
//!   that set stays apart on this replica (the delta is retried, never
//!   dropped, and applies once removes elsewhere shrink the set) rather
//!   than growing without bound. A merge that does not grow the set is
//!   always taken. Everything up to the bound moves through every path:
//!   log entries over one frame are written as parts
//!   (`log::MAX_LOGGED_ENTRY_BYTES`, replayed only whole), so full-sync
//!   and read-repair joins, re-issues after an unclean shutdown and their
//!   replication work at any size up to the bound; a set's delete is a
//!   context-only delta whatever the set's size.
//! * **Full-sync reads are not snapshots** (review C12, verified by
//!   argument): [`Engine::full_state`] takes the applied vector *before*
//!   iterating sled, and a set's header (context) sorts before its
//!   members, so a set read while it changes pairs its context at time t0
//!   with member entries from t0 or later. A member present with a dot the
//!   context lacks was added after t0: a real add whose delta is not in
//!   the vector, so the receiver also gets the delta (which restores its
//!   context) and, having seen no remove of that dot, shows it rightly; a
//!   dot the receiver had removed is in its own context and stays removed
//!   (join: `d \ sc`). A member missing whose dot is in the context was
//!   removed at some time at or after t0, also a real remove. No
//!   combination resurrects a removed member or claims a delta the state
//!   lacks.
//!
//! **Stalling**
//! * **A panic on the log sync thread** (in the file layer, or in a
//!   durability callback, which runs there) poisons the engine: every
//!   waiter and callback is failed and later writes are refused, instead
//!   of everyone waiting for a thread that is gone. Chosen over aborting
//!   because the engine is a library: a caller that sees
//!   [`Error::Poisoned`] should stop the node so a supervisor restarts it.
//!   Every callback is settled exactly once, with an error if a panic
//!   unwound past it. No lock stays poisoned: the engine's locks are
//!   `parking_lot`'s (a panic does not poison them; the data behind each is
//!   updated in steps a panic cannot leave half-done, short of a bug),
//!   and the group commit's (std, for its loom models) are taken back from
//!   a `PoisonError`, its critical sections only assigning fields.
//! * **A slow disk** stalls `Sync` writers for as long as an fsync takes;
//!   group commit lets one fsync serve all writers waiting meanwhile.
//!
//! **Exhausting resources**
//! * **Log growth**: the log is truncated only up to what every replica has
//!   ([`Engine::truncate`]); a replica that stays away keeps it growing until
//!   the caller stops waiting for it (it then needs a full-state sync).
//! * **The re-issue list** (`RELOG`) holds every object re-issued after an
//!   unclean shutdown: bounded by the objects touched by unsynced writes.
//! * **Large objects in memory**: a set up to [`MAX_MERGED_OBJECT_BYTES`]
//!   is held whole while it is joined, logged (its encoding and frames:
//!   about twice its size) or re-issued, and recovery reassembles one
//!   multi-part entry at a time (at most `log::MAX_LOGGED_ENTRY_BYTES`).
//!   Looking for a valid frame after damage at the log's end scans up to
//!   the largest write (`TORN_TAIL_SCAN_BYTES`), once per damaged open.
//! * **Tombstones**: a deleted or expired object keeps its causal context
//!   (one version-vector entry per writer once its deltas have arrived)
//!   and, if it had a TTL, its expiry entry (~100 bytes). Removed set
//!   members and map fields keep nothing; a map's increment chains
//!   ([`crdt::map::Chains`]) live only while deltas are in flight out of
//!   order, except above a context hole a lost write left, which stays
//!   with the hole (docs/maps-and-expiry.md §1).
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

pub use causal::{CausalContext, Causality, Dot, Incarnation, StreamId, VersionVector};
pub use clock::{Clock, Hlc, PhysicalTime};
pub use crdt::{Delta, Expiry, ObjectState};
pub use engine::{
    Applied, DEFAULT_CACHE_BYTES, Durability, EXPIRY_BACKLOG_COUNT_LIMIT, Engine, EngineConfig,
    ExpiryPass, IncarnationSource, Inspection, KeyPage, Merged, Metrics, SetPage, scan_position,
    stream_id,
};
pub use error::{Error, Result};
pub use log::{Record, Since};
pub use object::{
    Deadline, GroupFn, GroupId, Kind, MAX_KEY_BYTES, MAX_MEMBERS_PER_OP, MAX_MERGED_OBJECT_BYTES,
    MAX_OBJECT_BYTES, MAX_VALUE_BYTES, ObjectKey, Op, RegisterValue, Ttl, Value,
};
