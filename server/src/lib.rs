//! The Meridian node: what `meridian serve` runs.
//!
//! - [`config`]: the node configuration file, loaded and validated once.
//! - [`node`]: a running node: engine, peer mesh, [`coordinator`]
//!   (consistency levels), client [`listener`], [`metrics`] endpoint;
//!   [`rpc`] is what nodes ask of each other.
//! - [`tls`]: the client listener's TLS configuration (the peer mesh's is
//!   in [`meridian_replication::tls`]).
//!
//! The tools that sit on top of the node (`meridian init`, the request
//! CLI, `status`, `demo`, `bench`) live in the `meridian-cli` crate; this
//! crate compiles only what a node runs.
//!
//! # Hazards
//! What can lose data, diverge, stall or exhaust a resource in the node
//! (the engine's own are in `meridian_engine`'s docs, the mesh's in
//! `meridian_replication`'s), and what bounds each.
//!
//! **Lose acknowledged data**
//! * `periodic` durability: a `local` or `leader` write is acknowledged
//!   once the serving node's log has it; a power failure within
//!   `periodic_ms` loses it if no other replica had it yet. `quorum` and
//!   `all` writes, and read repair, count only fsynced copies under either
//!   mode ([`coordinator`], `local_copy_waits_for_disk`).
//! * A write that times out (`Timeout`, indeterminate) may still take
//!   effect; a write reported with a definite error never did.
//!
//! **Diverge or break a promise**
//! * `leader` during a partition: each side may pick its own leader; writes
//!   merge on heal, the `leader` promises hold only within a side.
//! * The debug clock offset (`--allow-debug-clock` only, at most a day):
//!   timestamps issued under a positive offset persist in the HLC, so the
//!   node keeps winning last-writer-wins races until real time catches up
//!   ([`clock`]).
//! * Sets grown by merges past one write's limit (review C4; up to
//!   `meridian_engine::MAX_MERGED_OBJECT_BYTES`, 64 MiB) are read at
//!   quorum and `all` and repaired like any other object (their states
//!   cross the mesh in several frames), but a read whose reply would not
//!   fit one client frame (`translate::MAX_READ_REPLY_BYTES`, 19 MiB of
//!   members) is answered `InvalidArgument` saying so; `Inspect` (RESP
//!   `SCARD`, `SISMEMBER`, `SMISMEMBER`) still counts and checks its
//!   members, and removes and `DEL` work at any size (a set's delete lists
//!   no members).
//! * Placement is residency: peer `ReadState`/`Repair` from a node that
//!   does not replicate the key are refused and counted
//!   (`meridian_peer_requests_refused_total`).
//!
//! **Stall**
//! * Engine calls (apply, reads, full states, state merges, large frame
//!   decodes) block; they run on the [`engine_pool`] (at most 2 per core,
//!   4–64), never on an async worker, so QUIC drivers and heartbeats keep
//!   running. One client connection uses at most half the pool, so another
//!   always finds a slot. A set write still reads its whole set back to
//!   count it (the engine exposes no count): bounded in CPU only by the
//!   object limit (16 MiB).
//! * A client that withholds a request or does not read its answer holds
//!   its stream for at most 30 s each ([`listener::REQUEST_READ_TIMEOUT`],
//!   [`listener::RESPONSE_WRITE_TIMEOUT`]); a RESP client for 30 s
//!   (stalled write, half-sent request).
//! * Shutdown waits at most [`listener::DRAIN_TIMEOUT`] for requests in
//!   flight, then closes anyway.
//!
//! **Exhaust a resource**
//! * Memory for clients: at most `[limits] client_memory_bytes`, checked at
//!   load against `max_client_connections` (QUIC windows: 2 MiB per
//!   authenticated connection, 256 KiB per handshake or tokenless
//!   connection) with the rest a byte [`budget`] shared by both doors,
//!   72 MiB of it per QUIC connection; requests past it are refused
//!   `Overloaded`, reserved before anything is allocated. Set limits are
//!   checked on the archived request, so a 20 MiB frame of empty members is
//!   never decoded. The listener's module docs give the whole bound and
//!   `tests/hostile.rs` measures it. Not counted: the engine pool's reads in
//!   progress (at most one object and its answer per pool slot), and a
//!   quorum read's joined state while it repairs (the object's size, per
//!   request in flight): with merged sets up to 64 MiB, a quorum read holds
//!   every answering replica's copy and their join, a few times that.
//! * Handshakes: at most 256 in progress, QUIC Retry past 32, at most 256
//!   tokenless connections apart from authenticated ones; failures are
//!   logged 10 times a minute at most and counted.
//! * Descriptors: the soft `RLIMIT_NOFILE` is raised to the hard limit at
//!   start ([`node::raise_descriptor_limit`]); the metrics endpoint serves
//!   16 connections at most and backs off (10 ms to 1 s) after failed
//!   accepts instead of spinning.
//! * The metrics endpoint is plain HTTP without authentication: `meridian
//!   init` binds it to loopback in multi-host layouts, and a node warns at
//!   start when it is not.

pub mod budget;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod engine_pool;
pub mod expiry;
pub mod exposition;
pub mod fatal;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod resp;
pub mod rpc;
pub mod tasks;
pub mod tls;
mod translate;
