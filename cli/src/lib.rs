//! The `meridian` command's subcommands, on top of the node library
//! (`meridian-server`) and the client (`meridian-client`).
//!
//! - [`init`]: `meridian init`, which creates a cluster directory (CA,
//!   certificates, node and client configs).
//! - [`serve`]: `meridian serve`, one node ([`meridian_server::node`]).
//! - [`request`]: `meridian cli`, one client request against a cluster.
//! - [`status`]: `meridian status`, the cluster at a glance.
//! - [`bench`]: `meridian bench`, the load generator, the Redis comparison
//!   and the replication benchmarks.
//! - [`demo`]: `meridian demo`, a three-region cluster in this process with
//!   simulated WAN latency, and a guided tour of it.
//! - [`cluster`]: the in-process cluster launcher the demo, the benchmark
//!   and the end-to-end tests (`tests/support`) start their clusters with.

pub mod bench;
pub mod cluster;
pub mod demo;
pub mod init;
pub mod request;
pub mod serve;
pub mod status;
