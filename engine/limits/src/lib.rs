//! The size limits of Meridian's data: the largest key, set member or
//! register value, object, and the most members one operation may name.
//!
//! They are defined here, once, because two crates that must not depend on
//! each other enforce them: the engine (on every local operation and on
//! every key a peer sends) and the client (which refuses an oversized
//! request before it is sent, with the same numbers the node will apply).
//! Both re-export them (`meridian_engine::MAX_KEY_BYTES`,
//! `meridian_client::wire::MAX_KEY_BYTES`), so users of either never name
//! this crate. It has no dependencies and no code.

#![no_std]

/// Largest key, in bytes. Keys are arbitrary byte strings; 4 KiB is far
/// above any sensible key and bounds the per-object index overhead.
pub const MAX_KEY_BYTES: usize = 4 << 10;

/// Largest set member or register value, in bytes: bounds one delta, one
/// log record and one replication message.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Largest object a local write may make (all members of a set with
/// their metadata, as the engine's `entry_cost` counts them: at least
/// their encoded size), in bytes: the per-write limit. The members one
/// request names are bounded by it too, in total. Merges are not held to
/// it (see [`MAX_MERGED_OBJECT_BYTES`]).
pub const MAX_OBJECT_BYTES: usize = 16 << 20;

/// Largest set a merge may make, in bytes (counted as for
/// [`MAX_OBJECT_BYTES`]): four times the per-write limit.
///
/// Why merges outgrow the per-write limit (review C4): a replica checks an
/// add only against the set it sees. Writers cut off from one another each
/// fill the set to [`MAX_OBJECT_BYTES`] with members the others have not
/// seen, and healing joins them: the members alive at the end that one
/// writer added were all in its view at its last add, so the true bound
/// is (the number of writers that were mutually cut off) × 16 MiB, up to
/// the cluster's node count (and more across wiped data directories). No
/// node can hold a state of that size in memory per object, so the engine
/// accepts merges up to four such writers (four regions each filling the
/// set during one partition) and refuses a merge beyond it (the engine's
/// `Error::ObjectTooLarge`, counted in `Metrics::oversized_merges`): that
/// object then stays apart on that replica (the delta is retried, not
/// lost) until its members are removed elsewhere. Every path an object
/// travels (full sync, quorum read and read repair, delete, re-logging
/// after an unclean shutdown) carries states up to this bound by chunking
/// (multi-part log entries, multi-frame peer messages), never in one frame.
pub const MAX_MERGED_OBJECT_BYTES: usize = 4 * MAX_OBJECT_BYTES;

/// Largest number of members one add or remove may name. Bounds the work
/// one request does under its object lock.
pub const MAX_MEMBERS_PER_OP: usize = 10_000;
