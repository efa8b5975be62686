//! The node config file as written: [`NodeFile`] and its tables (serde,
//! unknown fields refused everywhere), with the defaults and bounds of
//! every setting. Validation happens once, in [`super::NodeConfig::load`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::*;

/// Default fsync interval with `durability = "periodic"`, in milliseconds.
pub const DEFAULT_PERIODIC_MS: u64 = 10;
/// Longest allowed fsync interval, in milliseconds: beyond a minute the
/// window of acknowledged-but-losable writes is no longer "periodic
/// durability" but none.
pub const MAX_PERIODIC_MS: u64 = 60_000;
/// Default tolerated clock offset of a remote timestamp, in milliseconds.
pub const DEFAULT_MAX_CLOCK_OFFSET_MS: u64 = 500;
/// Largest configurable clock offset, in milliseconds: clocks a minute
/// apart are broken, and accepting such timestamps lets one node's clock
/// win every last-writer-wins race.
pub const MAX_CLOCK_OFFSET_LIMIT_MS: u64 = 60_000;
/// Default log segment size, in bytes (the engine's default).
pub const DEFAULT_LOG_SEGMENT_BYTES: u64 = 64 << 20;
/// Smallest log segment, in bytes: smaller would mean a file per handful of
/// records.
pub const MIN_LOG_SEGMENT_BYTES: u64 = 64 << 10;
/// Largest log segment, in bytes: truncation reclaims whole segments.
pub const MAX_LOG_SEGMENT_BYTES: u64 = 1 << 30;
/// Default of `[replication] retention_ms`: an hour (the protocol's own
/// default).
pub const DEFAULT_RETENTION_MS: u64 = meridian_replication::protocol::DEFAULT_RETENTION_MS;
/// Shortest allowed retention, in milliseconds: below a second, a peer's
/// ordinary hiccup (a restart, a brief partition) would cost it a
/// full-state sync instead of a catch-up from the log.
pub const MIN_RETENTION_MS: u64 = 1_000;
/// Longest allowed retention, in milliseconds (30 days): the log of a busy
/// node kept that long for a peer that is gone would fill its disk first.
pub const MAX_RETENTION_MS: u64 = 30 * 24 * 3_600_000;
/// Default number of concurrent client connections.
pub const DEFAULT_MAX_CLIENT_CONNECTIONS: u32 = 1_024;
/// Default number of concurrent requests on one client connection.
pub const DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION: u32 = 256;
/// Default request timeout when a request carries 0, in milliseconds.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Upper bound of `max_client_connections` and
/// `max_in_flight_per_connection`: each admitted connection and stream
/// holds buffers, so the product must stay within one machine's memory.
pub const MAX_CONNECTION_LIMIT: u32 = 65_536;
/// Default of `[limits] client_memory_bytes`, in bytes: what the default
/// 1024 connections may make QUIC buffer (2 MiB each: their windows) plus
/// about 1 GiB of request and response buffers (`client_buffer_bytes`).
pub const DEFAULT_CLIENT_MEMORY_BYTES: u64 = 3 << 30;
/// Largest `client_memory_bytes`, in bytes: a terabyte is more memory than
/// a node has; a larger number is a typo.
pub const MAX_CLIENT_MEMORY_BYTES: u64 = 1 << 40;
/// Fewest bytes of request and response buffers (`client_buffer_bytes`)
/// a node may be left with: two connections' worth, so that one connection
/// can never hold all of it and the largest request always fits.
pub const MIN_CLIENT_BUFFER_BYTES: u64 = 2 * crate::budget::CONNECTION_BUFFER_BYTES as u64;
/// What a handshake in progress or a connection waiting to authenticate
/// may hold, in bytes, as counted against `client_memory_bytes`: QUIC
/// state, TLS buffers and the `Hello` window (an estimate with room: the
/// receive window before authentication is 128 KiB).
pub const PENDING_CONNECTION_BYTES: u64 = 256 << 10;
/// Upper bound of `request_timeout_ms`: a client waiting ten minutes has
/// given up long ago.
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 600_000;
/// Largest debug link delay, in milliseconds (a minute one way is a cut).
pub const MAX_LINK_DELAY_MS: u64 = 60_000;
/// Largest cluster, in nodes: every node keeps a QUIC connection to every
/// other, so links grow with the square of the node count.
pub const MAX_CLUSTER_NODES: usize = 128;
/// Longest node or region name, in bytes (a node name is a DNS label in
/// certificates, at most 63 bytes).
pub const MAX_NAME_BYTES: usize = 63;

/// A node configuration file as written. Use [`NodeConfig::load`] to run a
/// node; this type is for tools that read, modify and rewrite configs (a
/// test harness pointing peers at proxies, for example).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// This node's name; must match its certificate (`node:<name>`).
    pub node: String,
    /// This node's region.
    pub region: String,
    /// Where the node keeps its log and object store.
    pub data_dir: PathBuf,
    /// `host:port` the peer mesh listens on.
    pub peer_listen: String,
    /// `host:port` the client protocol listens on.
    pub client_listen: String,
    /// `host:port` of the Prometheus endpoint.
    pub metrics_listen: String,
    /// `host:port` the RESP (Redis protocol) listener binds; absent: no
    /// RESP listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp_listen: Option<String>,
    pub tls: TlsFiles,
    pub auth: AuthConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default, skip_serializing_if = "RespSettings::is_default")]
    pub resp: RespSettings,
    #[serde(default, skip_serializing_if = "ReplicationConfig::is_default")]
    pub replication: ReplicationConfig,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<PlacementRule>,
    #[serde(default, skip_serializing_if = "DebugConfig::is_default")]
    pub debug: DebugConfig,
}

/// `[tls]`: PEM files, relative to the config file's directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// This node's certificate, signed by the CA.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// `[auth]`: how clients are authenticated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// SHA-256 (hex) of the access token as written in `client.toml`; the
    /// node never stores the token itself.
    pub token_sha256: String,
}

/// How acknowledged writes are made durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Acknowledge after fdatasync (group commit).
    #[default]
    Sync,
    /// Fsync every `periodic_ms`; may lose that much on power loss.
    Periodic,
}

/// `[storage]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub durability: DurabilityMode,
    /// Fsync interval with `durability = "periodic"`, in milliseconds.
    pub periodic_ms: u64,
    /// Remote timestamps further ahead of local time are deferred, in
    /// milliseconds.
    pub max_clock_offset_ms: u64,
    /// Size of one log segment, in bytes. Truncation deletes whole segments,
    /// so this is how much log a node keeps at least (and how much it can
    /// reclaim at once).
    pub log_segment_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            durability: DurabilityMode::Sync,
            periodic_ms: DEFAULT_PERIODIC_MS,
            max_clock_offset_ms: DEFAULT_MAX_CLOCK_OFFSET_MS,
            log_segment_bytes: DEFAULT_LOG_SEGMENT_BYTES,
        }
    }
}

/// `[limits]`: what one node admits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Concurrent client connections; more are refused.
    pub max_client_connections: u32,
    /// Concurrent requests (streams) on one client connection.
    pub max_in_flight_per_connection: u32,
    /// Timeout of a request that carries 0, in milliseconds.
    pub request_timeout_ms: u64,
    /// The node's memory budget for its clients, in bytes: everything the
    /// node holds for client requests and answers, on the QUIC and RESP
    /// doors together. Part of it is what QUIC may buffer by itself for
    /// each connection (its flow-control windows); the rest
    /// ([`LimitsConfig::client_buffer_bytes`]) is a byte budget every
    /// request body, decoded request and answer is reserved from before it
    /// is allocated. `max_client_connections` ×
    /// `max_in_flight_per_connection` × the largest frame is no longer
    /// what bounds memory (it is petabytes with the defaults): requests
    /// past the budget wait for their connection's earlier ones or are
    /// refused `Overloaded`. Checked at load to leave at least
    /// [`MIN_CLIENT_BUFFER_BYTES`] of buffers.
    pub client_memory_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_client_connections: DEFAULT_MAX_CLIENT_CONNECTIONS,
            max_in_flight_per_connection: DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            client_memory_bytes: DEFAULT_CLIENT_MEMORY_BYTES,
        }
    }
}

impl LimitsConfig {
    /// What QUIC may buffer for client connections outside the byte budget,
    /// in bytes: every authenticated connection's windows
    /// ([`crate::tls::CLIENT_CONNECTION_WINDOW_BYTES`]), and every
    /// handshake and connection waiting to authenticate
    /// ([`PENDING_CONNECTION_BYTES`] each, at most
    /// [`crate::listener::MAX_CLIENT_HANDSHAKES`] +
    /// [`crate::listener::MAX_PENDING_CLIENT_CONNECTIONS`]).
    pub fn client_transport_bytes(&self) -> u64 {
        u64::from(self.max_client_connections) * crate::tls::CLIENT_CONNECTION_WINDOW_BYTES
            + (crate::listener::MAX_CLIENT_HANDSHAKES as u64
                + crate::listener::MAX_PENDING_CLIENT_CONNECTIONS as u64)
                * PENDING_CONNECTION_BYTES
    }

    /// The byte budget of request and response buffers (both doors):
    /// `client_memory_bytes` less [`client_transport_bytes`](Self::client_transport_bytes).
    pub fn client_buffer_bytes(&self) -> u64 {
        self.client_memory_bytes
            .saturating_sub(self.client_transport_bytes())
    }
}

/// `[replication]`: the peer protocol's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// How long a peer that makes no progress (gone, silent, disagreeing on
    /// placement, or connected but not advancing) holds back this node's
    /// log truncation, in milliseconds; past it the peer needs a full-state
    /// sync when it returns. Longer keeps more log; shorter turns longer
    /// outages into full syncs.
    pub retention_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            retention_ms: DEFAULT_RETENTION_MS,
        }
    }
}

impl ReplicationConfig {
    fn is_default(&self) -> bool {
        self == &ReplicationConfig::default()
    }
}

/// Default of `[resp] max_connections`.
pub const DEFAULT_MAX_RESP_CONNECTIONS: u32 = 1_024;

/// `[resp]`: the Redis-protocol front door (docs/resp.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespSettings {
    /// Serve TLS on `resp_listen` with the node's certificate (clients
    /// verify it against the cluster CA; docs/resp.md).
    pub tls: bool,
    /// The consistency level of AUTH user `default` (a password alone).
    pub default_consistency: meridian_client::wire::Consistency,
    /// Concurrent RESP connections; more are answered `-ERR max number of
    /// clients reached` and closed.
    pub max_connections: u32,
}

impl Default for RespSettings {
    fn default() -> Self {
        RespSettings {
            tls: false,
            default_consistency: meridian_client::wire::Consistency::Local,
            max_connections: DEFAULT_MAX_RESP_CONNECTIONS,
        }
    }
}

impl RespSettings {
    fn is_default(&self) -> bool {
        self == &RespSettings::default()
    }
}

/// `[[peers]]` as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    pub name: String,
    pub region: String,
    /// `host:port` to dial: the peer's `peer_listen`, or a proxy for it.
    pub address: String,
}

/// `[[placement]]`: keys starting with `prefix` are stored only in
/// `regions`. The longest matching prefix wins; keys matching no rule are
/// stored everywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementRule {
    pub prefix: String,
    pub regions: Vec<String>,
    /// Region whose nodes come first in the preference list (and so lead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
}

/// `[debug]`: fault injection for tests and demos, all off by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Allows `[[debug.link]]` rules.
    pub allow_link_conditioning: bool,
    /// Allows a debug clock offset (the `serve --allow-debug-clock` flag
    /// also allows it; see [`DebugConfig::clock_offset_allowed`]).
    pub allow_clock_offset: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub link: Vec<LinkRule>,
}

impl DebugConfig {
    fn is_default(&self) -> bool {
        self == &DebugConfig::default()
    }

    /// Whether a debug clock offset may be applied, given the value of the
    /// `serve --allow-debug-clock` flag.
    pub fn clock_offset_allowed(&self, allow_debug_clock_flag: bool) -> bool {
        self.allow_clock_offset || allow_debug_clock_flag
    }
}

/// `[[debug.link]]`: conditions traffic from this node to the peers of one
/// region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRule {
    pub region: String,
    /// One-way delay added to every peer message, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Drop all traffic to that region.
    #[serde(default)]
    pub cut: bool,
}

impl NodeFile {
    /// Reads and parses a config file without validating it.
    pub fn read(path: &Path) -> Result<NodeFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        NodeFile::parse(path, &text)
    }

    /// Parses config text; `path` is only used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<NodeFile, ConfigError> {
        toml::from_str(text).map_err(|e| syntax_error(path, text, &e))
    }

    /// The file's TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a node config always serializes")
    }
}
