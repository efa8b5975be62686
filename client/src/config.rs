//! Client configuration: which nodes to talk to, the cluster CA, the client
//! certificate and the access token.
//!
//! `meridian init` writes `client.toml` in this format ([`ClientFile`]);
//! [`crate::ClientConfig::load`] reads it. Relative paths in the file are
//! relative to the file's own directory.
//!
//! ```toml
//! token = "3f9a…"                 # access token, checked before any request
//! ca = "ca.pem"                   # cluster CA certificate (PEM)
//! cert = "client.pem"             # client certificate (PEM), signed by the CA
//! key = "client.key"              # its private key (PEM)
//! default_consistency = "local"   # optional
//! default_timeout_ms = 5000       # optional
//!
//! [[nodes]]
//! name = "us-east-1"              # must match the node's certificate
//! region = "us-east"
//! address = "127.0.0.1:7101"      # the node's client address
//! ```

use serde::{Deserialize, Serialize};

use crate::wire::Consistency;

/// The on-disk form of `client.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// The access token, as written by `meridian init` (hex).
    pub token: String,
    /// Path of the cluster CA certificate (PEM).
    pub ca: String,
    /// Path of the client certificate (PEM).
    pub cert: String,
    /// Path of the client certificate's private key (PEM).
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_consistency: Option<Consistency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_timeout_ms: Option<u64>,
    pub nodes: Vec<NodeEntry>,
}

/// One node a client may talk to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Node name; the server's certificate must be issued for it.
    pub name: String,
    pub region: String,
    /// `host:port` of the node's client listener.
    pub address: String,
}
