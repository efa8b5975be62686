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

/// Largest object (all members of a set with their metadata), in bytes:
/// bounds full-state transfers and quorum-read joins. The members one
/// request names are bounded by it too, in total.
pub const MAX_OBJECT_BYTES: usize = 16 << 20;

/// Largest number of members one add or remove may name. Bounds the work
/// one request does under its object lock.
pub const MAX_MEMBERS_PER_OP: usize = 10_000;
