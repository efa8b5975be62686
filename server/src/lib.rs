//! The Meridian node and the `meridian` command's subcommands.
//!
//! - [`config`]: the node configuration file, loaded and validated once.
//! - [`init`]: `meridian init`, which creates a cluster directory (CA,
//!   certificates, node and client configs).
//! - [`serve`] / [`node`]: `meridian serve`, a running node: engine, peer
//!   mesh, [`coordinator`] (consistency levels), client [`listener`],
//!   [`metrics`] endpoint; [`rpc`] is what nodes ask of each other.
//! - [`tls`]: the client listener's TLS configuration (the peer mesh's is
//!   in [`meridian_replication::tls`]).
//! - [`bench`]: `meridian bench`, the load generator, the Redis comparison
//!   and the replication benchmarks.
//! - [`demo`]: `meridian demo`, a three-region cluster in this process with
//!   simulated WAN latency, and a guided tour of it.

pub mod bench;
pub mod cli;
pub mod config;
pub mod coordinator;
pub mod demo;
pub mod init;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod resp;
pub mod rpc;
pub mod serve;
pub mod status;
pub mod tls;
