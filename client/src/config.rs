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
//! default_consistency = "local"   # optional: local, leader, quorum, all, replicas-N
//! default_timeout_ms = 5000       # optional
//!
//! [[nodes]]
//! name = "us-east-1"              # must match the node's certificate
//! region = "us-east"
//! address = "127.0.0.1:7101"      # the node's client address
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::tls;
use crate::wire::Consistency;

/// The on-disk form of `client.toml`. Its `Debug` output redacts the
/// token (logging a parsed file must not leak the cluster's secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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

// Hand-written so that logging a parsed `client.toml` never prints the token.
impl fmt::Debug for ClientFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientFile")
            .field("token", &format_args!("<redacted>"))
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("default_consistency", &self.default_consistency)
            .field("default_timeout_ms", &self.default_timeout_ms)
            .field("nodes", &self.nodes)
            .finish()
    }
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
    /// `host:port` of the node's RESP (Redis protocol) listener, for Redis
    /// clients; this client does not use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp: Option<String>,
}

/// Server-side timeout used when neither the request nor the configuration
/// names one. 5 s covers a quorum write across continents (a few hundred ms)
/// with room for a slow fsync, yet fails a stuck request in human time.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest per-request timeout: the wire carries milliseconds in a `u32`
/// (about 49 days); anything near that is a mistake, but it is representable.
pub const MAX_TIMEOUT: Duration = Duration::from_millis(u32::MAX as u64);

/// Everything a [`crate::Client`] needs: where the nodes are, how to prove
/// who it is, and the defaults for requests that don't say otherwise.
///
/// Usually read from `client.toml` with [`ClientConfig::load`]; tests and
/// tools may build one with [`ClientConfig::new`] or a struct literal. The
/// configuration is validated by [`Client::connect`](crate::Client::connect)
/// (and by `load`), never half-way through a request.
#[derive(Clone)]
pub struct ClientConfig {
    /// The nodes this client may talk to, in the order to try them (after
    /// [`preferred_node`](Self::preferred_node)).
    pub nodes: Vec<NodeEntry>,
    /// The cluster CA certificate(s), PEM. The server's certificate must chain
    /// to one of them and be issued for the node's name.
    pub ca_pem: Vec<u8>,
    /// The client certificate chain, PEM, presented to the server (mutual TLS).
    pub cert_pem: Vec<u8>,
    /// The client certificate's private key, PEM.
    pub key_pem: Vec<u8>,
    /// The cluster access token, sent in the `Hello` of every connection.
    pub token: String,
    /// Consistency level of requests that don't choose one.
    pub default_consistency: Consistency,
    /// Server-side timeout of requests that don't choose one. The client
    /// gives up on its own a little later (see [`crate::DEADLINE_MARGIN`]).
    pub default_timeout: Duration,
    /// Node to try first, by name or by `host:port` address. `None`: the
    /// first node of [`nodes`](Self::nodes).
    pub preferred_node: Option<String>,
    /// Whether to move to another node when the current one is unreachable.
    /// `false` pins the client to the preferred (else first) node.
    pub failover: bool,
}

// Hand-written so that logging a config never prints the key or the token.
impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("nodes", &self.nodes)
            .field("ca_pem", &format_args!("<{} bytes>", self.ca_pem.len()))
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &format_args!("<redacted>"))
            .field("token", &format_args!("<redacted>"))
            .field("default_consistency", &self.default_consistency)
            .field("default_timeout", &self.default_timeout)
            .field("preferred_node", &self.preferred_node)
            .field("failover", &self.failover)
            .finish()
    }
}

impl ClientConfig {
    /// A configuration with the defaults: `local` consistency,
    /// [`DEFAULT_TIMEOUT`], first node preferred, failover on.
    pub fn new(
        nodes: Vec<NodeEntry>,
        ca_pem: impl Into<Vec<u8>>,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
        token: impl Into<String>,
    ) -> ClientConfig {
        ClientConfig {
            nodes,
            ca_pem: ca_pem.into(),
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            token: token.into(),
            default_consistency: Consistency::default(),
            default_timeout: DEFAULT_TIMEOUT,
            preferred_node: None,
            failover: true,
        }
    }

    /// Reads `client.toml` (the format of [`ClientFile`]) and the PEM files it
    /// names. Relative paths are relative to the file's directory. Errors are
    /// [`Error::Config`] naming the file and the field.
    pub fn load(path: impl AsRef<Path>) -> Result<ClientConfig, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let file: ClientFile = toml::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {}", path.display(), e.to_string().trim())))?;
        let base_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        ClientConfig::from_file(file, base_dir)
            .map_err(|e| Error::Config(format!("{}: {}", path.display(), config_message(e))))
    }

    /// Builds a configuration from a parsed [`ClientFile`], reading the PEM
    /// files it names relative to `base_dir`, and validates it.
    pub fn from_file(file: ClientFile, base_dir: &Path) -> Result<ClientConfig, Error> {
        let read = |field: &str, name: &str| -> Result<(PathBuf, Vec<u8>), Error> {
            let path = base_dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => Ok((path, bytes)),
                Err(e) => Err(Error::Config(format!(
                    "field `{field}`: cannot read {}: {e}",
                    path.display()
                ))),
            }
        };
        let (ca_path, ca_pem) = read("ca", &file.ca)?;
        let (cert_path, cert_pem) = read("cert", &file.cert)?;
        let (key_path, key_pem) = read("key", &file.key)?;
        // Check each PEM here, where the message can name its file.
        let bad = |field: &str, path: &Path, e: String| {
            Error::Config(format!("field `{field}`: {}: {e}", path.display()))
        };
        tls::parse_roots(&ca_pem).map_err(|e| bad("ca", &ca_path, e))?;
        tls::parse_chain(&cert_pem).map_err(|e| bad("cert", &cert_path, e))?;
        tls::parse_key(&key_pem).map_err(|e| bad("key", &key_path, e))?;
        let default_timeout = match file.default_timeout_ms {
            Some(ms) => {
                let timeout = Duration::from_millis(ms);
                check_timeout(timeout, "default_timeout_ms")?;
                timeout
            }
            None => DEFAULT_TIMEOUT,
        };
        let config = ClientConfig {
            nodes: file.nodes,
            ca_pem,
            cert_pem,
            key_pem,
            token: file.token,
            default_consistency: file.default_consistency.unwrap_or_default(),
            default_timeout,
            preferred_node: None,
            failover: true,
        };
        config.validate()?;
        Ok(config)
    }

    /// Try `node` first: a node name, or a `host:port` address as written
    /// in [`NodeEntry::address`]. Other nodes are still used for failover.
    pub fn prefer(mut self, node: &str) -> Self {
        self.preferred_node = Some(node.to_owned());
        self
    }

    /// Only ever talk to `node` (by name or address): no failover. Useful to
    /// observe one replica, e.g. in partition tests.
    pub fn pinned(self, node: &str) -> Self {
        let mut config = self.prefer(node);
        config.failover = false;
        config
    }

    /// Consistency level of requests that don't choose one.
    pub fn with_consistency(mut self, consistency: Consistency) -> Self {
        self.default_consistency = consistency;
        self
    }

    /// Timeout of requests that don't choose one.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Checks everything that can be checked without a network: nodes,
    /// preferred node, timeout, token, certificates and key.
    pub fn validate(&self) -> Result<(), Error> {
        self.prepare().map(drop)
    }

    /// Validates the configuration and derives what a client runs with.
    pub(crate) fn prepare(&self) -> Result<DerivedConfig, Error> {
        let order = self.node_order()?;
        if self.token.is_empty() {
            return Err(Error::Config("field `token` is empty".into()));
        }
        let default_timeout_ms = check_timeout(self.default_timeout, "default_timeout")?;
        let crypto = tls::client_crypto(self)?;
        Ok(DerivedConfig {
            order,
            default_timeout_ms,
            crypto,
        })
    }

    /// Indices into [`nodes`](Self::nodes) in the order to try them: the
    /// preferred node first; only it when failover is off.
    pub(crate) fn node_order(&self) -> Result<Vec<usize>, Error> {
        if self.nodes.is_empty() {
            return Err(Error::Config("field `nodes` lists no node".into()));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.name.is_empty() {
                return Err(Error::Config(format!("node #{}: `name` is empty", i + 1)));
            }
            if self.nodes[..i].iter().any(|n| n.name == node.name) {
                return Err(Error::Config(format!(
                    "node {:?} is listed twice",
                    node.name
                )));
            }
            let port = node.address.rsplit_once(':').map(|(_, port)| port);
            if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                return Err(Error::Config(format!(
                    "node {:?}: `address` {:?} is not host:port",
                    node.name, node.address
                )));
            }
        }
        let first = match &self.preferred_node {
            None => 0,
            Some(wanted) => self
                .nodes
                .iter()
                .position(|n| &n.name == wanted)
                .or_else(|| self.nodes.iter().position(|n| &n.address == wanted))
                .ok_or_else(|| {
                    let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
                    Error::Config(format!(
                        "preferred node {wanted:?} is neither the name nor the address of a configured node ({})",
                        names.join(", ")
                    ))
                })?,
        };
        if !self.failover {
            return Ok(vec![first]);
        }
        let mut order = vec![first];
        order.extend((0..self.nodes.len()).filter(|&i| i != first));
        Ok(order)
    }
}

/// A validated configuration's derived parts.
pub(crate) struct DerivedConfig {
    /// Indices into `nodes` in the order to try them.
    pub(crate) order: Vec<usize>,
    pub(crate) default_timeout_ms: u32,
    pub(crate) crypto: QuicClientConfig,
}

/// Checks that a timeout can be sent (whole milliseconds, 1 ms ..= u32::MAX).
pub(crate) fn check_timeout(timeout: Duration, field: &str) -> Result<u32, Error> {
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(Error::Config(format!(
            "`{field}` must be between 1 ms and {} ms, not {timeout:?}",
            MAX_TIMEOUT.as_millis()
        )));
    }
    // Round sub-millisecond timeouts up: the server must get a positive one.
    Ok((timeout.as_micros().div_ceil(1000)) as u32)
}

fn config_message(e: Error) -> String {
    match e {
        Error::Config(message) => message,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(failover: bool, preferred: Option<&str>) -> ClientConfig {
        let node = |name: &str, port: u16| NodeEntry {
            name: name.into(),
            region: "r".into(),
            address: format!("127.0.0.1:{port}"),
            resp: None,
        };
        ClientConfig {
            failover,
            preferred_node: preferred.map(str::to_owned),
            ..ClientConfig::new(
                vec![node("a", 1), node("b", 2), node("c", 3)],
                "",
                "",
                "",
                "t",
            )
        }
    }

    #[test]
    fn node_order_puts_the_preferred_node_first() {
        assert_eq!(config(true, None).node_order().unwrap(), [0, 1, 2]);
        assert_eq!(config(true, Some("b")).node_order().unwrap(), [1, 0, 2]);
        assert_eq!(
            config(true, Some("127.0.0.1:3")).node_order().unwrap(),
            [2, 0, 1]
        );
        assert_eq!(config(false, Some("c")).node_order().unwrap(), [2]);
        assert_eq!(config(false, None).node_order().unwrap(), [0]);
        assert!(config(true, Some("z")).node_order().is_err());
    }

    #[test]
    fn builders_set_what_they_say() {
        let c = config(true, None)
            .pinned("b")
            .with_consistency(Consistency::All)
            .with_timeout(Duration::from_millis(10));
        assert_eq!(c.preferred_node.as_deref(), Some("b"));
        assert!(!c.failover);
        assert_eq!(c.default_consistency, Consistency::All);
        assert_eq!(c.default_timeout, Duration::from_millis(10));
    }

    #[test]
    fn timeouts_are_whole_positive_milliseconds() {
        assert_eq!(check_timeout(Duration::from_millis(5), "t").unwrap(), 5);
        assert_eq!(check_timeout(Duration::from_micros(1), "t").unwrap(), 1);
        assert_eq!(check_timeout(MAX_TIMEOUT, "t").unwrap(), u32::MAX);
        assert!(check_timeout(Duration::ZERO, "t").is_err());
        assert!(check_timeout(MAX_TIMEOUT + Duration::from_millis(1), "t").is_err());
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let secret = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";
        let file = ClientFile {
            token: secret.into(),
            ca: "ca.pem".into(),
            cert: "client.pem".into(),
            key: "client.key".into(),
            default_consistency: None,
            default_timeout_ms: None,
            nodes: Vec::new(),
        };
        let shown = format!("{file:?} {file:#?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("client.key"));
        let config = ClientConfig::new(Vec::new(), "", "", "", secret);
        assert!(!format!("{config:?}").contains(secret));
    }

    #[test]
    fn empty_pems_are_config_errors() {
        let e = config(true, None).validate().unwrap_err();
        assert!(
            matches!(&e, Error::Config(m) if m.contains("`ca_pem`")),
            "{e:?}"
        );
    }
}
