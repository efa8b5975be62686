//! `meridian init`: creates a cluster directory.
//!
//! One command writes everything a cluster needs to start: a fresh cluster
//! CA (`ca.pem`, `ca.key`), one certificate, key and config per node
//! (`<node>.pem`, `<node>.key`, `<node>.toml`), the client certificate and
//! key (`client.pem`, `client.key`) and `client.toml` with a fresh random
//! access token. Node configs hold only the token's SHA-256.
//!
//! Node names are `<region>-<n>` (n from 1), in region order then n. Node
//! `i` (0-based in that order) listens on `base+3i` (peers), `base+3i+1`
//! (clients) and `base+3i+2` (metrics), so a cluster fits on one host or
//! on distinct loopback addresses (`--hosts 127.0.0.1,127.0.0.2,...`).
//! Redis clients (RESP, docs/resp.md) get the ports after those:
//! `base+3n+i` for a cluster of n nodes.
//! The metrics endpoint (plain HTTP, no authentication) listens on the
//! node's host when that is a loopback address and on 127.0.0.1 otherwise
//! (multi-host clusters): to scrape from another host, set its address in
//! `metrics_listen` and firewall the port.
//!
//! Everything is generated in memory first and then written file by file
//! (each through a temporary file and a rename), so a failure while
//! generating leaves the directory untouched. Private keys and
//! `client.toml` are mode 0600. An existing cluster is never overwritten
//! without `--force`; `--force` replaces the files but leaves `data/` alone.
//!
//! Certificates: ECDSA P-256; the CA may only sign end-entity
//! certificates (path length 0). Node certificates carry CN `node:<name>`
//! (the peer identity), SAN DNS `<name>` plus the node's host, and are
//! valid for TLS server and client authentication. The client certificate
//! carries CN `client` and is valid for client authentication only. They do
//! not expire in practice (rcgen's default validity, 1975–4096): rotating
//! them means running `init` again with a new CA.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use meridian_client::config::{ClientFile, NodeEntry};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use meridian_server::config::{
    self, DEFAULT_MAX_CLIENT_CONNECTIONS, DEFAULT_MAX_CLOCK_OFFSET_MS,
    DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION, DEFAULT_MAX_RESP_CONNECTIONS, DEFAULT_PERIODIC_MS,
    DEFAULT_REQUEST_TIMEOUT_MS, HostPort, MAX_CLUSTER_NODES, NodeFile,
};

/// Bytes of randomness in an access token (hex-encoded in `client.toml`).
pub const TOKEN_BYTES: usize = 32;

/// Ports each node uses: peer, client, metrics.
pub const PORTS_PER_NODE: usize = 3;

/// File mode of private keys and of `client.toml` (it holds the token).
const SECRET_MODE: u32 = 0o600;
/// File mode of certificates and node configs.
const PUBLIC_MODE: u32 = 0o644;

/// Arguments of `meridian init`.
#[derive(Clone, Debug, clap::Args)]
pub struct InitArgs {
    /// Directory to write the cluster into (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Comma-separated region names, e.g. us-east,eu-west,ap-south.
    #[arg(long, value_delimiter = ',', required = true)]
    pub regions: Vec<String>,
    /// Nodes in each region.
    #[arg(long, default_value_t = 1)]
    pub nodes_per_region: usize,
    /// Address (IP or host name) every node listens on, unless --hosts.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Comma-separated address of each node, in node order (region order,
    /// then number); must name exactly one host per node.
    #[arg(long, value_delimiter = ',')]
    pub hosts: Option<Vec<String>>,
    /// First port; node i uses base+3i (peer), base+3i+1 (client) and
    /// base+3i+2 (metrics), and base+3n+i (RESP) in a cluster of n nodes.
    #[arg(long, default_value_t = 7100)]
    pub base_port: u16,
    /// Overwrite an existing cluster in --dir.
    #[arg(long)]
    pub force: bool,
}

impl InitArgs {
    /// Defaults as on the command line, for tests.
    #[doc(hidden)]
    pub fn for_test(dir: &Path, regions: &[&str]) -> InitArgs {
        InitArgs {
            dir: dir.to_owned(),
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
            nodes_per_region: 1,
            host: "127.0.0.1".into(),
            hosts: None,
            base_port: 7100,
            force: false,
        }
    }
}

/// Why `init` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The arguments describe no valid cluster; nothing was written.
    #[error("{0}")]
    InvalidArgument(String),
    /// The directory already holds a cluster; nothing was written.
    #[error(
        "{} already holds a cluster ({} exists); pass --force to overwrite it",
        .dir.display(),
        .existing.display()
    )]
    Exists { dir: PathBuf, existing: PathBuf },
    /// Writing a file failed; the directory may hold a partial cluster
    /// (run again with --force). (`source` is the error's source, printed
    /// after this message: not repeated in it.)
    #[error("writing {}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Certificate generation failed (a bug or a broken crypto library).
    #[error("generating certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// One node of the planned cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedNode {
    pub name: String,
    pub region: String,
    pub peer_listen: HostPort,
    pub client_listen: HostPort,
    pub metrics_listen: HostPort,
    /// The RESP (Redis protocol) listener.
    pub resp_listen: HostPort,
}

/// The nodes `args` describe, in node order, with their addresses. Checks
/// every argument; writes nothing.
pub fn plan(args: &InitArgs) -> Result<Vec<PlannedNode>, InitError> {
    let invalid = |m: String| InitError::InvalidArgument(m);
    if args.regions.is_empty() {
        return Err(invalid("--regions: name at least one region".into()));
    }
    for (i, region) in args.regions.iter().enumerate() {
        config::validate_name(region).map_err(|e| invalid(format!("--regions: {e}")))?;
        if args.regions[..i].contains(region) {
            return Err(invalid(format!("--regions: {region:?} is listed twice")));
        }
    }
    if args.nodes_per_region == 0 {
        return Err(invalid("--nodes-per-region: must be at least 1".into()));
    }
    let count = args
        .regions
        .len()
        .checked_mul(args.nodes_per_region)
        .filter(|n| *n <= MAX_CLUSTER_NODES)
        .ok_or_else(|| {
            invalid(format!(
                "{} regions × {} nodes is more than the {MAX_CLUSTER_NODES} nodes a cluster may have",
                args.regions.len(),
                args.nodes_per_region
            ))
        })?;
    let hosts: Vec<&str> = match &args.hosts {
        Some(hosts) if hosts.len() != count => {
            return Err(invalid(format!(
                "--hosts names {} host(s) but the cluster has {count} node(s) \
                 ({} region(s) × {} per region); give one host per node",
                hosts.len(),
                args.regions.len(),
                args.nodes_per_region
            )));
        }
        Some(hosts) => hosts.iter().map(|h| h.trim()).collect(),
        None => vec![args.host.trim(); count],
    };
    // Each node's three ports, then one RESP port per node.
    let last_port = usize::from(args.base_port) + count * (PORTS_PER_NODE + 1) - 1;
    if args.base_port == 0 || last_port > usize::from(u16::MAX) {
        return Err(invalid(format!(
            "--base-port: {count} node(s) need ports {}..={last_port}, which must lie in 1..=65535",
            args.base_port
        )));
    }

    let mut nodes = Vec::with_capacity(count);
    for region in &args.regions {
        for n in 1..=args.nodes_per_region {
            let i = nodes.len();
            let name = format!("{region}-{n}");
            config::validate_name(&name).map_err(|e| invalid(format!("node name: {e}")))?;
            let host = hosts[i];
            let flag = if args.hosts.is_some() {
                "--hosts"
            } else {
                "--host"
            };
            let address = |k: usize| {
                let port = u16::try_from(usize::from(args.base_port) + PORTS_PER_NODE * i + k)
                    .expect("port range checked above");
                HostPort::with_port(host, port).map_err(|e| invalid(format!("{flag}: {e}")))
            };
            let resp_port = u16::try_from(usize::from(args.base_port) + PORTS_PER_NODE * count + i)
                .expect("port range checked above");
            let resp_listen = HostPort::with_port(host, resp_port)
                .map_err(|e| invalid(format!("{flag}: {e}")))?;
            // The metrics endpoint is plain HTTP without authentication:
            // on loopback unless the node's own address is (a cluster on
            // one host's loopback addresses). A multi-host operator who
            // scrapes from elsewhere sets the host's address (the config
            // says so).
            let metrics_port = u16::try_from(usize::from(args.base_port) + PORTS_PER_NODE * i + 2)
                .expect("port range checked above");
            let metrics_host = if is_loopback(host) { host } else { "127.0.0.1" };
            let metrics_listen = HostPort::with_port(metrics_host, metrics_port)
                .map_err(|e| invalid(format!("{flag}: {e}")))?;
            nodes.push(PlannedNode {
                name,
                region: region.clone(),
                peer_listen: address(0)?,
                client_listen: address(1)?,
                metrics_listen,
                resp_listen,
            });
        }
    }
    Ok(nodes)
}

/// Whether `host` (as given to `--host`/`--hosts`) is a loopback address.
fn is_loopback(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// A file to write: name inside the cluster directory, contents, mode.
struct OutputFile {
    name: String,
    contents: Vec<u8>,
    mode: u32,
}

/// Generates the cluster `args` describe and writes it into `args.dir`.
/// Returns the nodes written.
pub fn write_cluster(args: &InitArgs) -> Result<Vec<PlannedNode>, InitError> {
    let nodes = plan(args)?;
    let files = generate(&nodes)?;
    let dir = &args.dir;
    if !args.force
        && let Some(existing) = files.iter().map(|f| dir.join(&f.name)).find(|p| p.exists())
    {
        return Err(InitError::Exists {
            dir: dir.clone(),
            existing,
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| InitError::Io {
        path: dir.clone(),
        source,
    })?;
    for file in &files {
        write_file(&dir.join(&file.name), &file.contents, file.mode)?;
    }
    // Make the renames durable.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| InitError::Io {
            path: dir.clone(),
            source,
        })?;
    Ok(nodes)
}

/// `meridian init`: writes the cluster and prints a summary.
pub fn run(args: InitArgs) -> Result<(), InitError> {
    let nodes = write_cluster(&args)?;
    print!("{}", summary(&args.dir, &args.regions, &nodes));
    Ok(())
}

/// The summary printed after a successful init.
fn summary(dir: &Path, regions: &[String], nodes: &[PlannedNode]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Created a Meridian cluster in {}: {} node(s) in {} region(s) ({}).\n",
        dir.display(),
        nodes.len(),
        regions.len(),
        regions.join(", ")
    );
    let width = nodes.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4);
    let rwidth = regions.iter().map(String::len).max().unwrap_or(6).max(6);
    let awidth = nodes
        .iter()
        .map(|n| n.peer_listen.to_string().len())
        .max()
        .unwrap_or(6)
        .max(7);
    let _ = writeln!(
        out,
        "  {:width$}  {:rwidth$}  {:awidth$}  {:awidth$}  {:awidth$}  resp",
        "node", "region", "peer", "client", "metrics"
    );
    for n in nodes {
        let _ = writeln!(
            out,
            "  {:width$}  {:rwidth$}  {:awidth$}  {:awidth$}  {:awidth$}  {}",
            n.name,
            n.region,
            n.peer_listen.to_string(),
            n.client_listen.to_string(),
            n.metrics_listen.to_string(),
            n.resp_listen
        );
    }
    let _ = writeln!(
        out,
        "\nClient config: {} (it holds the access token: keep it private).",
        dir.join("client.toml").display()
    );
    let _ = writeln!(out, "Next, start each node:");
    for n in nodes {
        let _ = writeln!(
            out,
            "  meridian serve --config {}",
            dir.join(format!("{}.toml", n.name)).display()
        );
    }
    out
}

/// Generates every file of the cluster in memory.
fn generate(nodes: &[PlannedNode]) -> Result<Vec<OutputFile>, InitError> {
    let mut files = Vec::new();
    let ca_id = hex_random(4)?;
    let (ca_pem, issuer) = generate_ca(&ca_id)?;
    files.push(OutputFile {
        name: "ca.pem".into(),
        contents: ca_pem.into_bytes(),
        mode: PUBLIC_MODE,
    });
    files.push(OutputFile {
        name: "ca.key".into(),
        contents: issuer.key().serialize_pem().into_bytes(),
        mode: SECRET_MODE,
    });

    let token = hex_random(TOKEN_BYTES)?;
    let token_sha256 = config::hex(&config::token_sha256(token.as_bytes()));

    for node in nodes {
        let mut sans = vec![SanType::DnsName(node.name.as_str().try_into()?)];
        match node.peer_listen.ip() {
            Some(ip) => sans.push(SanType::IpAddress(ip)),
            None => {
                let host = node.peer_listen.host();
                if host != node.name {
                    sans.push(SanType::DnsName(host.as_str().try_into()?));
                }
            }
        }
        let (cert, key) = generate_leaf(
            &issuer,
            &format!("{}{}", meridian_replication::tls::NODE_CN_PREFIX, node.name),
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        files.push(OutputFile {
            name: format!("{}.pem", node.name),
            contents: cert.into_bytes(),
            mode: PUBLIC_MODE,
        });
        files.push(OutputFile {
            name: format!("{}.key", node.name),
            contents: key.into_bytes(),
            mode: SECRET_MODE,
        });
        let text = node_toml(node, nodes, &token_sha256);
        // The template must stay in the format `serve` reads.
        NodeFile::parse(Path::new(&format!("{}.toml", node.name)), &text)
            .expect("init writes a valid node config");
        files.push(OutputFile {
            name: format!("{}.toml", node.name),
            contents: text.into_bytes(),
            mode: PUBLIC_MODE,
        });
    }

    let (cert, key) = generate_leaf(
        &issuer,
        "client",
        vec![SanType::DnsName("client".try_into()?)],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?;
    files.push(OutputFile {
        name: "client.pem".into(),
        contents: cert.into_bytes(),
        mode: PUBLIC_MODE,
    });
    files.push(OutputFile {
        name: "client.key".into(),
        contents: key.into_bytes(),
        mode: SECRET_MODE,
    });
    let client = ClientFile {
        token,
        ca: "ca.pem".into(),
        cert: "client.pem".into(),
        key: "client.key".into(),
        default_consistency: None,
        default_timeout_ms: None,
        nodes: nodes
            .iter()
            .map(|n| NodeEntry {
                name: n.name.clone(),
                region: n.region.clone(),
                address: n.client_listen.to_string(),
                resp: Some(n.resp_listen.to_string()),
            })
            .collect(),
    };
    let client_toml = format!(
        "# Meridian client configuration, written by `meridian init`.\n\
         # It holds the cluster's access token: keep it private.\n\
         # Relative paths are relative to this file's directory.\n\n{}",
        toml::to_string(&client).expect("a client config always serializes")
    );
    files.push(OutputFile {
        name: "client.toml".into(),
        contents: client_toml.into_bytes(),
        mode: SECRET_MODE,
    });
    Ok(files)
}

/// A new cluster CA: its certificate (PEM) and the issuer that signs with it.
fn generate_ca(id: &str) -> Result<(String, Issuer<'static, KeyPair>), InitError> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Meridian cluster CA {id}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Meridian");
    // Path length 0: the CA signs node and client certificates only.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

/// A certificate signed by `issuer`: (certificate PEM, private key PEM).
fn generate_leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    subject_alt_names: Vec<SanType>,
    extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
) -> Result<(String, String), InitError> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = subject_alt_names;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = extended_key_usages;
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// `bytes` random bytes from the operating system, hex-encoded.
fn hex_random(bytes: usize) -> Result<String, InitError> {
    use ring::rand::SecureRandom as _;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| InitError::Random)?;
    Ok(config::hex(&buf))
}

/// A TOML string literal.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The config file of `node`, with comments for whoever edits it.
fn node_toml(node: &PlannedNode, all: &[PlannedNode], token_sha256: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "\
# Meridian node configuration, written by `meridian init`.
# Start the node with `meridian serve --config <this file>`.
# Relative paths are relative to this file's directory.
node = {name}
region = {region}
data_dir = {data_dir}
peer_listen = {peer}
client_listen = {client}
metrics_listen = {metrics}   # Prometheus: plain HTTP, no authentication; loopback unless every node is on loopback. To scrape from another host, set this host's address and firewall the port.
resp_listen = {resp}          # Redis clients (RESP); password = the access token (docs/resp.md)

[tls]
ca = \"ca.pem\"
cert = {cert}
key = {key}

[auth]
# SHA-256 of the access token in client.toml (the token is not stored here).
token_sha256 = {token_sha256}

[storage]
durability = \"sync\"        # \"sync\": ack after fdatasync (group commit) | \"periodic\": may lose the last periodic_ms of writes on power loss
periodic_ms = {DEFAULT_PERIODIC_MS}           # fsync interval, only used with durability = \"periodic\"
max_clock_offset_ms = {DEFAULT_MAX_CLOCK_OFFSET_MS}  # remote timestamps further ahead are deferred

[limits]
max_client_connections = {DEFAULT_MAX_CLIENT_CONNECTIONS}
max_in_flight_per_connection = {DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION}
request_timeout_ms = {DEFAULT_REQUEST_TIMEOUT_MS}  # default when a request carries 0

[resp]
tls = false                   # true: TLS with this node's certificate (redis-cli --tls --cacert ca.pem)
default_consistency = \"local\" # the level of AUTH user `default` (a password alone)
max_connections = {DEFAULT_MAX_RESP_CONNECTIONS}
",
        name = quoted(&node.name),
        region = quoted(&node.region),
        data_dir = quoted(&format!("data/{}", node.name)),
        peer = quoted(&node.peer_listen.to_string()),
        client = quoted(&node.client_listen.to_string()),
        metrics = quoted(&node.metrics_listen.to_string()),
        resp = quoted(&node.resp_listen.to_string()),
        cert = quoted(&format!("{}.pem", node.name)),
        key = quoted(&format!("{}.key", node.name)),
        token_sha256 = quoted(token_sha256),
    );
    let peers: Vec<_> = all.iter().filter(|p| p.name != node.name).collect();
    if !peers.is_empty() {
        out.push_str("\n# Every other node; address = its peer_listen (or a proxy for it).\n");
    }
    for peer in peers {
        let _ = write!(
            out,
            "[[peers]]\nname = {}\nregion = {}\naddress = {}\n\n",
            quoted(&peer.name),
            quoted(&peer.region),
            quoted(&peer.peer_listen.to_string()),
        );
    }
    out.push_str(
        "\
# Data residency (optional, any number; the longest matching prefix wins):
# [[placement]]
# prefix = \"eu/\"
# regions = [\"eu-west\"]
# home = \"eu-west\"           # optional: region whose nodes come first

# Fault injection for tests and demos, all off by default:
# [debug]
# allow_link_conditioning = false
# allow_clock_offset = false  # `serve --allow-debug-clock` also allows it
# [[debug.link]]              # refused unless allow_link_conditioning = true
# region = \"eu-west\"          # traffic from this node to peers in that region
# delay_ms = 40               # one-way delay added to every peer message
# cut = false                 # drop all traffic to that region
",
    );
    out
}

/// Writes `contents` to `path` with `mode` through a temporary file and a
/// rename, so a crash leaves the old file or the new one, never half.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), InitError> {
    let io_err = |source| InitError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.file_name().expect("a file name").to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err)?;
    // `mode` applies only when the file is created; a leftover temporary
    // file keeps its old mode, so set it explicitly before writing.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_named_and_numbered_in_region_order() {
        let dir = Path::new("/nonexistent");
        let mut args = InitArgs::for_test(dir, &["us-east", "eu-west"]);
        args.nodes_per_region = 2;
        args.base_port = 9000;
        let nodes = plan(&args).unwrap();
        let got: Vec<_> = nodes
            .iter()
            .map(|n| {
                (
                    n.name.as_str(),
                    n.peer_listen.to_string(),
                    n.client_listen.port(),
                    n.metrics_listen.port(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("us-east-1", "127.0.0.1:9000".to_string(), 9001, 9002),
                ("us-east-2", "127.0.0.1:9003".to_string(), 9004, 9005),
                ("eu-west-1", "127.0.0.1:9006".to_string(), 9007, 9008),
                ("eu-west-2", "127.0.0.1:9009".to_string(), 9010, 9011),
            ]
        );
        // RESP ports follow every node's three.
        let resp: Vec<u16> = nodes.iter().map(|n| n.resp_listen.port()).collect();
        assert_eq!(resp, [9012, 9013, 9014, 9015]);
    }

    #[test]
    fn hosts_are_given_in_node_order() {
        let mut args = InitArgs::for_test(Path::new("/x"), &["a", "b"]);
        args.hosts = Some(vec!["127.0.0.2".into(), "::1".into()]);
        let nodes = plan(&args).unwrap();
        assert_eq!(nodes[0].peer_listen.to_string(), "127.0.0.2:7100");
        assert_eq!(nodes[1].peer_listen.to_string(), "[::1]:7103");
        args.hosts = Some(vec!["db-1.example".into(), "db-2.example".into()]);
        assert_eq!(
            plan(&args).unwrap()[1].client_listen.to_string(),
            "db-2.example:7104"
        );
    }

    /// The metrics endpoint (plain HTTP, no authentication) stays on
    /// loopback unless the node itself listens on a loopback address.
    #[test]
    fn metrics_stay_on_loopback_for_routable_hosts() {
        let mut args = InitArgs::for_test(Path::new("/x"), &["a", "b", "c"]);
        args.hosts = Some(vec![
            "10.0.0.7".into(),
            "db-2.example".into(),
            "127.0.1.3".into(),
        ]);
        let nodes = plan(&args).unwrap();
        let metrics: Vec<String> = nodes.iter().map(|n| n.metrics_listen.to_string()).collect();
        assert_eq!(
            metrics,
            ["127.0.0.1:7102", "127.0.0.1:7105", "127.0.1.3:7108"]
        );
        assert_eq!(nodes[0].client_listen.to_string(), "10.0.0.7:7101");
        args.hosts = None;
        args.host = "10.0.0.7".into();
        assert!(
            plan(&args)
                .unwrap()
                .iter()
                .all(|n| n.metrics_listen.ip() == Some("127.0.0.1".parse().unwrap()))
        );
    }

    /// An edit of valid arguments that makes them invalid.
    type Edit = fn(&mut InitArgs);

    #[test]
    fn bad_arguments_are_refused() {
        let cases: [(Edit, &str); 9] = [
            (|a| a.regions = vec![], "--regions"),
            (|a| a.regions = vec!["a".into(), "a".into()], "twice"),
            (|a| a.regions = vec!["Bad_Region".into()], "--regions"),
            (|a| a.nodes_per_region = 0, "--nodes-per-region"),
            (|a| a.nodes_per_region = 1000, "more than"),
            (
                |a| a.hosts = Some(vec!["127.0.0.1".into()]),
                "--hosts names 1",
            ),
            (|a| a.host = "not a host".into(), "--host"),
            (|a| a.base_port = 65531, "--base-port"),
            (|a| a.base_port = 0, "--base-port"),
        ];
        for (edit, expected) in cases {
            let mut args = InitArgs::for_test(Path::new("/x"), &["a", "b"]);
            edit(&mut args);
            let err = plan(&args).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn node_certificates_carry_the_identity_and_host() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = InitArgs::for_test(dir.path(), &["us-east", "eu-west"]);
        args.hosts = Some(vec!["127.0.0.5".into(), "db-2.example".into()]);
        write_cluster(&args).unwrap();
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        let der = |name: &str| {
            meridian_replication::tls::parse_certificates(&read(name), "test").unwrap()[0].clone()
        };
        use meridian_replication::tls::node_name_from_certificate;
        assert_eq!(
            node_name_from_certificate(&der("us-east-1.pem")).unwrap(),
            "us-east-1"
        );
        assert_eq!(
            node_name_from_certificate(&der("eu-west-1.pem")).unwrap(),
            "eu-west-1"
        );
        assert!(node_name_from_certificate(&der("client.pem")).is_err());
        // Server names are checked against the SANs: the node name and its
        // host. DER: dNSName is tag 0x82, iPAddress 0x87, then the length.
        let contains = |name: &str, needle: &[u8]| {
            let der = der(name);
            der.as_ref().windows(needle.len()).any(|w| w == needle)
        };
        assert!(contains("us-east-1.pem", b"\x82\x09us-east-1"));
        assert!(contains("us-east-1.pem", &[0x87, 4, 127, 0, 0, 5]));
        assert!(contains("eu-west-1.pem", b"\x82\x09eu-west-1"));
        assert!(contains("eu-west-1.pem", b"\x82\x0cdb-2.example"));
        assert!(contains("client.pem", b"\x82\x06client"));
    }
}
