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

pub mod budget;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod engine_pool;
pub mod exposition;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod resp;
pub mod rpc;
pub mod tasks;
pub mod tls;
mod translate;
