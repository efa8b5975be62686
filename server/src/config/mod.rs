//! The node configuration: one TOML file per node, written by
//! `meridian init`, read once by `meridian serve`.
//!
//! [`NodeFile`] is the file as written (serde, unknown fields refused
//! everywhere); [`NodeConfig::load`] reads it, resolves relative paths
//! against the file's own directory, reads the TLS files, and validates
//! everything once, so a bad configuration stops the node at startup with
//! one line naming the file and the field ([`ConfigError`]), never later.
//!
//! ```toml
//! node = "us-east-1"
//! region = "us-east"
//! data_dir = "data/us-east-1"
//! peer_listen = "127.0.0.1:7100"
//! client_listen = "127.0.0.1:7101"
//! metrics_listen = "127.0.0.1:7102"
//! resp_listen = "127.0.0.1:7109"  # optional: Redis clients (RESP); absent = not served
//!
//! [tls]
//! ca = "ca.pem"
//! cert = "us-east-1.pem"
//! key = "us-east-1.key"
//!
//! [auth]
//! token_sha256 = "<hex>"        # SHA-256 of the access token in client.toml
//!
//! [storage]                     # optional, defaults shown
//! durability = "sync"           # "sync" | "periodic"
//! periodic_ms = 10              # fsync interval with durability = "periodic"
//! max_clock_offset_ms = 500     # remote timestamps further ahead are deferred
//! log_segment_bytes = 67108864  # log segment size: the unit of log truncation
//!
//! [limits]                      # optional, defaults shown
//! max_client_connections = 1024
//! max_in_flight_per_connection = 256
//! request_timeout_ms = 5000     # used when a request carries 0
//! client_memory_bytes = 3221225472  # memory budget for clients (see LimitsConfig)
//!
//! [replication]                 # optional, defaults shown
//! retention_ms = 3600000        # a peer making no progress holds back log truncation this long
//!
//! [resp]                        # optional, defaults shown (docs/resp.md)
//! tls = false                   # true: TLS with the node certificate (redis-cli --tls --cacert ca.pem)
//! default_consistency = "local" # the level of AUTH user `default`
//! max_connections = 1024        # concurrent RESP connections; more are refused
//!
//! [[peers]]                     # every other node of the cluster
//! name = "eu-west-1"
//! region = "eu-west"
//! address = "127.0.0.1:7103"    # the peer's peer_listen (or a proxy for it)
//!
//! [[placement]]                 # optional: data residency, longest prefix wins
//! prefix = "eu/"
//! regions = ["eu-west"]
//! home = "eu-west"              # optional: these replicas come first
//!
//! [debug]                       # everything off by default
//! allow_link_conditioning = false
//! allow_clock_offset = false
//! [[debug.link]]                # refused unless allow_link_conditioning
//! region = "eu-west"
//! delay_ms = 40
//! cut = false
//! ```
//!
//! Durability: `sync` acknowledges a write only after its log record is
//! fsynced (group commit). `periodic` fsyncs every `periodic_ms` and may
//! lose the last `periodic_ms` of acknowledged `local` and `leader` writes
//! on power loss; `quorum` and `all` writes still count only fsynced copies
//! (the serving node asks for the fsync of its own).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use meridian_replication::NodeName;

mod address;
mod build;
mod file;
mod token;

pub use address::*;
pub use file::*;
pub use token::*;

/// Why a node configuration was refused. Every variant displays as one line
/// naming the file and, where there is one, the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file (or a file it names) could not be read. (`source` is the
    /// error's source, so it is not repeated in the message: `{:#}` would
    /// print it twice.)
    #[error("{}: cannot read", .path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The file is not valid TOML or does not match the format.
    #[error("{}: {}", .path.display(), syntax_detail(*.line, .field.as_deref(), .message))]
    Syntax {
        path: PathBuf,
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// Dotted field path (`storage.periodic_ms`), when known.
        field: Option<String>,
        message: String,
    },
    /// A field has a value the node cannot run with.
    #[error("{}: {field}: {message}", .path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

fn syntax_detail(line: Option<usize>, field: Option<&str>, message: &str) -> String {
    let mut out = String::new();
    if let Some(line) = line {
        out.push_str(&format!("line {line}: "));
    }
    if let Some(field) = field {
        out.push_str(field);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

/// Checks a node or region name: lowercase ASCII letters, digits and `-`,
/// starting with a letter, not ending with `-`, at most [`MAX_NAME_BYTES`].
/// Node names are DNS names in certificates and the TLS server name peers
/// and clients dial, so they must be valid DNS labels.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name (lowercase letters, digits and '-', starting with a \
             letter, at most {MAX_NAME_BYTES} bytes)"
        ))
    }
}

/// How acknowledged writes are made durable (the validated form of
/// `[storage]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after the log is fsynced (group commit).
    Sync,
    /// Fsync every `interval_ms`; acknowledged writes of the last interval
    /// may be lost on power loss.
    Periodic { interval_ms: u64 },
}

/// A peer of this node (validated `[[peers]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    pub name: NodeName,
    pub region: String,
    /// Where to dial it; its certificate must be issued for `name`.
    pub address: HostPort,
}

/// One node of the cluster as this node sees it (see
/// [`NodeConfig::all_nodes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    pub name: NodeName,
    pub region: String,
    /// The node's peer address (for this node itself: its `peer_listen` as
    /// written).
    pub peer_address: HostPort,
}

/// The TLS material, read at load.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The cluster CA certificate (PEM).
    pub ca_pem: Vec<u8>,
    /// This node's certificate (PEM).
    pub cert_pem: Vec<u8>,
    /// This node's private key (PEM). Never printed.
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_path", &self.ca_path)
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// A loaded, validated node configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The file it was loaded from.
    pub path: PathBuf,
    pub node: NodeName,
    pub region: String,
    /// Absolute, or relative to the working directory.
    pub data_dir: PathBuf,
    /// `peer_listen` as written: what peers dial.
    pub peer_address: HostPort,
    pub peer_listen: SocketAddr,
    pub client_listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// Where the RESP listener binds (`None`: not served).
    pub resp_listen: Option<SocketAddr>,
    pub resp: RespSettings,
    pub tls: TlsMaterial,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub replication: ReplicationConfig,
    /// Every other node, in file order.
    pub peers: Vec<PeerConfig>,
    pub placement: Vec<PlacementRule>,
    pub debug: DebugConfig,
    token_sha256: [u8; 32],
}

impl NodeConfig {
    /// Reads, resolves and validates a node config file.
    pub fn load(path: impl AsRef<Path>) -> Result<NodeConfig, ConfigError> {
        let path = path.as_ref();
        let file = NodeFile::read(path)?;
        NodeConfig::from_file(path, file)
    }

    /// Validates an already parsed file; relative paths are resolved
    /// against `path`'s directory, and the TLS files are read.
    pub fn from_file(path: &Path, file: NodeFile) -> Result<NodeConfig, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            message,
        };
        let base = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };

        validate_name(&file.node).map_err(|e| invalid("node", e))?;
        validate_name(&file.region).map_err(|e| invalid("region", e))?;
        if file.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty".into()));
        }
        let data_dir = base.join(&file.data_dir);

        let (peer_address, peer_listen) =
            listen_address(&file.peer_listen).map_err(|e| invalid("peer_listen", e))?;
        let (_, client_listen) =
            listen_address(&file.client_listen).map_err(|e| invalid("client_listen", e))?;
        let (_, metrics_listen) =
            listen_address(&file.metrics_listen).map_err(|e| invalid("metrics_listen", e))?;
        let resp_listen = match &file.resp_listen {
            Some(s) => Some(listen_address(s).map_err(|e| invalid("resp_listen", e))?.1),
            None => None,
        };
        let mut listens = vec![
            ("peer_listen", peer_listen),
            ("client_listen", client_listen),
            ("metrics_listen", metrics_listen),
        ];
        if let Some(addr) = resp_listen {
            listens.push(("resp_listen", addr));
        }
        if !(1..=MAX_CONNECTION_LIMIT).contains(&file.resp.max_connections) {
            return Err(invalid(
                "resp.max_connections",
                format!("must be between 1 and {MAX_CONNECTION_LIMIT}"),
            ));
        }
        for (i, (field, addr)) in listens.iter().enumerate() {
            for (other, other_addr) in &listens[..i] {
                if addresses_conflict(*addr, *other_addr) {
                    return Err(invalid(
                        field,
                        format!("{addr} uses the same port as {other} ({other_addr})"),
                    ));
                }
            }
        }

        let tls = TlsMaterial {
            ca_path: base.join(&file.tls.ca),
            cert_path: base.join(&file.tls.cert),
            key_path: base.join(&file.tls.key),
            ca_pem: read_file(&base, &file.tls.ca).map_err(|e| invalid("tls.ca", e))?,
            cert_pem: read_file(&base, &file.tls.cert).map_err(|e| invalid("tls.cert", e))?,
            key_pem: read_file(&base, &file.tls.key).map_err(|e| invalid("tls.key", e))?,
        };
        use meridian_replication::tls as peer_tls;
        peer_tls::parse_certificates(&tls.ca_pem, "CA certificate")
            .map_err(|e| invalid("tls.ca", format!("{}: {e}", tls.ca_path.display())))?;
        let certs = peer_tls::parse_certificates(&tls.cert_pem, "certificate")
            .map_err(|e| invalid("tls.cert", format!("{}: {e}", tls.cert_path.display())))?;
        peer_tls::parse_private_key(&tls.key_pem)
            .map_err(|e| invalid("tls.key", format!("{}: {e}", tls.key_path.display())))?;
        match peer_tls::node_name_from_certificate(&certs[0]) {
            Ok(name) if name == file.node => {}
            Ok(name) => {
                return Err(invalid(
                    "tls.cert",
                    format!(
                        "{} is the certificate of node {name:?}, not {:?}",
                        tls.cert_path.display(),
                        file.node
                    ),
                ));
            }
            Err(e) => {
                return Err(invalid(
                    "tls.cert",
                    format!("{}: {e}", tls.cert_path.display()),
                ));
            }
        }

        let token_sha256 = unhex_32(&file.auth.token_sha256).ok_or_else(|| {
            invalid(
                "auth.token_sha256",
                "must be 64 hex digits (the SHA-256 of the access token)".into(),
            )
        })?;

        validate_storage(&file.storage).map_err(|(field, e)| invalid(field, e))?;
        validate_limits(&file.limits).map_err(|(field, e)| invalid(field, e))?;
        validate_replication(&file.replication).map_err(|(field, e)| invalid(field, e))?;

        let mut peers = Vec::with_capacity(file.peers.len());
        let mut names = HashSet::from([file.node.as_str()]);
        let mut addresses = HashMap::new();
        if file.peers.len() + 1 > MAX_CLUSTER_NODES {
            return Err(invalid(
                "peers",
                format!("a cluster has at most {MAX_CLUSTER_NODES} nodes"),
            ));
        }
        for (i, peer) in file.peers.iter().enumerate() {
            let field = |name: &str| format!("peers[{i}].{name}");
            validate_name(&peer.name).map_err(|e| invalid(&field("name"), e))?;
            if peer.name == file.node {
                return Err(invalid(
                    &field("name"),
                    format!("{:?} is this node itself", peer.name),
                ));
            }
            if !names.insert(peer.name.as_str()) {
                return Err(invalid(
                    &field("name"),
                    format!("{:?} is listed twice", peer.name),
                ));
            }
            validate_name(&peer.region).map_err(|e| invalid(&field("region"), e))?;
            let address =
                HostPort::parse(&peer.address).map_err(|e| invalid(&field("address"), e))?;
            if address == peer_address {
                return Err(invalid(
                    &field("address"),
                    format!("{address} is this node's own peer_listen"),
                ));
            }
            if let Some(other) = addresses.insert(address.clone(), peer.name.as_str()) {
                return Err(invalid(
                    &field("address"),
                    format!("{address} is also the address of peer {other:?}"),
                ));
            }
            peers.push(PeerConfig {
                name: NodeName::from(&peer.name),
                region: peer.region.clone(),
                address,
            });
        }

        let regions: BTreeSet<&str> = std::iter::once(file.region.as_str())
            .chain(peers.iter().map(|p| p.region.as_str()))
            .collect();
        let known_region = |field: &str, region: &str| {
            if regions.contains(region) {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!(
                        "unknown region {region:?} (the cluster's regions: {})",
                        regions.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                ))
            }
        };

        if file.placement.len() > meridian_replication::MAX_PLACEMENT_RULES {
            let e = meridian_replication::PlacementError::TooManyRules {
                rules: file.placement.len(),
            };
            return Err(invalid("placement", e.to_string()));
        }
        let mut prefixes = HashSet::new();
        for (i, rule) in file.placement.iter().enumerate() {
            let field = |name: &str| format!("placement[{i}].{name}");
            if !prefixes.insert(rule.prefix.as_str()) {
                return Err(invalid(
                    &field("prefix"),
                    format!("prefix {:?} has another rule", rule.prefix),
                ));
            }
            if rule.regions.is_empty() {
                return Err(invalid(
                    &field("regions"),
                    "must name at least one region".into(),
                ));
            }
            let mut seen = HashSet::new();
            for region in &rule.regions {
                known_region(&field("regions"), region)?;
                if !seen.insert(region) {
                    return Err(invalid(
                        &field("regions"),
                        format!("region {region:?} is listed twice"),
                    ));
                }
            }
            if let Some(home) = &rule.home
                && !rule.regions.contains(home)
            {
                return Err(invalid(
                    &field("home"),
                    format!("home region {home:?} is not among the rule's regions"),
                ));
            }
        }

        if !file.debug.link.is_empty() && !file.debug.allow_link_conditioning {
            return Err(invalid(
                "debug.link",
                "link conditioning rules need debug.allow_link_conditioning = true".into(),
            ));
        }
        let mut link_regions = HashSet::new();
        for (i, link) in file.debug.link.iter().enumerate() {
            let field = |name: &str| format!("debug.link[{i}].{name}");
            known_region(&field("region"), &link.region)?;
            if !link_regions.insert(link.region.as_str()) {
                return Err(invalid(
                    &field("region"),
                    format!("region {:?} has another link rule", link.region),
                ));
            }
            if link.delay_ms > MAX_LINK_DELAY_MS {
                return Err(invalid(
                    &field("delay_ms"),
                    format!("at most {MAX_LINK_DELAY_MS} ms (use cut = true to cut a link)"),
                ));
            }
        }

        Ok(NodeConfig {
            path: path.to_owned(),
            node: NodeName::from(file.node),
            region: file.region,
            data_dir,
            peer_address,
            peer_listen,
            client_listen,
            metrics_listen,
            resp_listen,
            resp: file.resp,
            tls,
            storage: file.storage,
            limits: file.limits,
            replication: file.replication,
            peers,
            placement: file.placement,
            debug: file.debug,
            token_sha256,
        })
    }

    /// Every region of the cluster (this node's and its peers'), sorted.
    pub fn cluster_regions(&self) -> Vec<String> {
        let regions: BTreeSet<&str> = std::iter::once(self.region.as_str())
            .chain(self.peers.iter().map(|p| p.region.as_str()))
            .collect();
        regions.into_iter().map(str::to_owned).collect()
    }

    /// This node, then its peers in file order.
    pub fn all_nodes(&self) -> Vec<ClusterNode> {
        std::iter::once(ClusterNode {
            name: self.node.clone(),
            region: self.region.clone(),
            peer_address: self.peer_address.clone(),
        })
        .chain(self.peers.iter().map(|p| ClusterNode {
            name: p.name.clone(),
            region: p.region.clone(),
            peer_address: p.address.clone(),
        }))
        .collect()
    }

    /// The durability setting.
    pub fn durability(&self) -> Durability {
        match self.storage.durability {
            DurabilityMode::Sync => Durability::Sync,
            DurabilityMode::Periodic => Durability::Periodic {
                interval_ms: self.storage.periodic_ms,
            },
        }
    }

    /// Whether `token` (as sent by a client) is the cluster's access token.
    /// Compares SHA-256 digests without an early exit.
    pub fn token_matches(&self, token: &[u8]) -> bool {
        let digest = token_sha256(token);
        digest
            .iter()
            .zip(self.token_sha256.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// The placement rule for `key`: the one with the longest matching
    /// prefix, or `None` (the key is stored in every region).
    pub fn placement_for(&self, key: &[u8]) -> Option<&PlacementRule> {
        self.placement
            .iter()
            .filter(|rule| key.starts_with(rule.prefix.as_bytes()))
            .max_by_key(|rule| rule.prefix.len())
    }
}

fn read_file(base: &Path, relative: &Path) -> Result<Vec<u8>, String> {
    if relative.as_os_str().is_empty() {
        return Err("must not be empty".into());
    }
    let path = base.join(relative);
    std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn validate_storage(storage: &StorageConfig) -> Result<(), (&'static str, String)> {
    if storage.durability == DurabilityMode::Periodic
        && !(1..=MAX_PERIODIC_MS).contains(&storage.periodic_ms)
    {
        return Err((
            "storage.periodic_ms",
            format!("must be between 1 and {MAX_PERIODIC_MS} ms"),
        ));
    }
    if !(1..=MAX_CLOCK_OFFSET_LIMIT_MS).contains(&storage.max_clock_offset_ms) {
        return Err((
            "storage.max_clock_offset_ms",
            format!("must be between 1 and {MAX_CLOCK_OFFSET_LIMIT_MS} ms"),
        ));
    }
    if !(MIN_LOG_SEGMENT_BYTES..=MAX_LOG_SEGMENT_BYTES).contains(&storage.log_segment_bytes) {
        return Err((
            "storage.log_segment_bytes",
            format!("must be between {MIN_LOG_SEGMENT_BYTES} and {MAX_LOG_SEGMENT_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn validate_replication(replication: &ReplicationConfig) -> Result<(), (&'static str, String)> {
    if !(MIN_RETENTION_MS..=MAX_RETENTION_MS).contains(&replication.retention_ms) {
        return Err((
            "replication.retention_ms",
            format!("must be between {MIN_RETENTION_MS} and {MAX_RETENTION_MS} ms"),
        ));
    }
    Ok(())
}

fn validate_limits(limits: &LimitsConfig) -> Result<(), (&'static str, String)> {
    if !(1..=MAX_CONNECTION_LIMIT).contains(&limits.max_client_connections) {
        return Err((
            "limits.max_client_connections",
            format!("must be between 1 and {MAX_CONNECTION_LIMIT}"),
        ));
    }
    if !(1..=MAX_CONNECTION_LIMIT).contains(&limits.max_in_flight_per_connection) {
        return Err((
            "limits.max_in_flight_per_connection",
            format!("must be between 1 and {MAX_CONNECTION_LIMIT}"),
        ));
    }
    if !(1..=MAX_REQUEST_TIMEOUT_MS).contains(&limits.request_timeout_ms) {
        return Err((
            "limits.request_timeout_ms",
            format!("must be between 1 and {MAX_REQUEST_TIMEOUT_MS} ms"),
        ));
    }
    if limits.client_memory_bytes > MAX_CLIENT_MEMORY_BYTES {
        return Err((
            "limits.client_memory_bytes",
            format!("must be at most {MAX_CLIENT_MEMORY_BYTES} bytes"),
        ));
    }
    let transport = limits.client_transport_bytes();
    if limits.client_buffer_bytes() < MIN_CLIENT_BUFFER_BYTES {
        return Err((
            "limits.client_memory_bytes",
            format!(
                "{} bytes do not cover what {} client connections may make QUIC buffer \
                 ({transport} bytes: 2 MiB of windows each, plus handshakes and connections \
                 not yet authenticated) and {MIN_CLIENT_BUFFER_BYTES} bytes of request and \
                 response buffers; raise it to at least {} or lower \
                 limits.max_client_connections",
                limits.client_memory_bytes,
                limits.max_client_connections,
                transport + MIN_CLIENT_BUFFER_BYTES
            ),
        ));
    }
    Ok(())
}

/// Turns a TOML error into one line: its line number, the field it is
/// about (from the position, when the message does not say), the message.
fn syntax_error(path: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let message = err.message().replace('\n', " ").trim().to_owned();
    let (line, field) = match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            (Some(line), field_at_line(text, line))
        }
        None => (None, None),
    };
    ConfigError::Syntax {
        path: path.to_owned(),
        line,
        field,
        message,
    }
}

/// The dotted path of the `key = value` on 1-based `line`, with the table
/// headers above it (`peers[1].address`, `storage.periodic_ms`).
fn field_at_line(text: &str, line: usize) -> Option<String> {
    let mut table: Option<String> = None;
    let mut array_counts: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let current = raw.split('#').next().unwrap_or("").trim();
        if i + 1 == line {
            let (key, _) = current.split_once('=')?;
            let key = key.trim().trim_matches('"');
            if key.is_empty() {
                return None;
            }
            return Some(match &table {
                Some(table) => format!("{table}.{key}"),
                None => key.to_owned(),
            });
        }
        if let Some(name) = current
            .strip_prefix("[[")
            .and_then(|s| s.strip_suffix("]]"))
        {
            let name = name.trim().to_owned();
            let count = array_counts.entry(name.clone()).or_insert(0);
            table = Some(format!("{name}[{count}]"));
            *count += 1;
        } else if let Some(name) = current.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            table = Some(name.trim().to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client memory budget must cover what QUIC may buffer for every
    /// connection the node admits plus a minimum of byte budget (S1: the
    /// connections × in-flight × frame product is bounded at load).
    #[test]
    fn the_client_memory_budget_covers_the_connections_it_admits() {
        let defaults = LimitsConfig::default();
        assert!(validate_limits(&defaults).is_ok());
        assert!(defaults.client_buffer_bytes() >= MIN_CLIENT_BUFFER_BYTES);
        let small = LimitsConfig {
            client_memory_bytes: 1 << 30,
            ..LimitsConfig::default()
        };
        let (field, message) = validate_limits(&small).unwrap_err();
        assert_eq!(field, "limits.client_memory_bytes");
        assert!(message.contains("max_client_connections"), "{message}");
        let fewer = LimitsConfig {
            max_client_connections: 128,
            ..small
        };
        assert!(validate_limits(&fewer).is_ok());
        let most = LimitsConfig {
            max_client_connections: MAX_CONNECTION_LIMIT,
            ..LimitsConfig::default()
        };
        assert!(validate_limits(&most).is_err());
        let huge = LimitsConfig {
            client_memory_bytes: MAX_CLIENT_MEMORY_BYTES + 1,
            ..LimitsConfig::default()
        };
        assert!(validate_limits(&huge).is_err());
    }
}
