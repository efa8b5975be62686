//! The Meridian node and the `meridian` command's subcommands.
//!
//! - [`config`]: the node configuration file, loaded and validated once.
//! - [`init`]: `meridian init`, which creates a cluster directory (CA,
//!   certificates, node and client configs).
//! - [`tls`]: the client listener's TLS configuration (the peer mesh's is
//!   in [`meridian_replication::tls`]).

pub mod config;
pub mod init;
pub mod tls;
