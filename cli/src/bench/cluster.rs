//! An in-process cluster for the benchmark (`local:N`, `convergence`,
//! `geo`): `meridian init` into a temporary directory, node configs edited
//! in memory (durability, link conditioning allowed), every node started
//! with [`Node::start`] on loopback in this process, one monotonic clock
//! for all of them.
//!
//! Ports: a free block is probed on 127.0.0.1 first; if a port is taken
//! between the probe and the start, the whole start is retried on another
//! block ([`START_ATTEMPTS`]). The directory is removed when the cluster is
//! dropped, after [`LocalCluster::shutdown`] has stopped the nodes.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use meridian_client::ClientConfig;
use meridian_engine::Engine;
use meridian_replication::mesh::Link;

use crate::init::{InitArgs, write_cluster};
use meridian_server::config::{DurabilityMode, NodeConfig, NodeFile};
use meridian_server::node::{Node, ServeOptions};

/// Whole-cluster start attempts (a probed port may be taken meanwhile).
const START_ATTEMPTS: usize = 3;
/// Port blocks probed per attempt.
const PORT_PROBES: usize = 64;
/// Lowest and highest first port of a block: above the well-known and
/// `meridian init`'s default ports, below the usual ephemeral range.
const PORT_LOW: u16 = 20_000;
const PORT_HIGH: u16 = 32_000;
/// How long the nodes have to see each other live after starting.
const LIVE_WAIT: Duration = Duration::from_secs(20);

/// What kind of cluster to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// One node per region, named `<region>-1`.
    pub regions: Vec<String>,
    pub durability: DurabilityMode,
    /// Fsync interval with periodic durability, in milliseconds.
    pub periodic_ms: u64,
}

/// A temporary directory, removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "meridian-bench-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running in-process cluster.
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<Node>,
    client: ClientConfig,
    // Last: removed after the nodes are gone.
    dir: TempDir,
}

/// Whether `port` looks free for UDP and TCP on 127.0.0.1.
fn port_free(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    UdpSocket::bind(addr).is_ok() && TcpListener::bind(addr).is_ok()
}

/// A first port such that the `count` ports from it look free.
fn free_block(count: usize, salt: u64) -> Result<u16> {
    let span = u64::from(PORT_HIGH - PORT_LOW);
    let mut x = salt ^ u64::from(std::process::id()).rotate_left(17);
    for _ in 0..PORT_PROBES {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let base = PORT_LOW + ((x >> 33) % span) as u16;
        if (0..count).all(|k| port_free(base + k as u16)) {
            return Ok(base);
        }
    }
    bail!("found no {count} free consecutive loopback ports in {PORT_LOW}..{PORT_HIGH}")
}

impl LocalCluster {
    /// Writes and starts the cluster, and waits until every node sees every
    /// other one live.
    pub async fn start(spec: &ClusterSpec) -> Result<LocalCluster> {
        let mut last = None;
        for attempt in 0..START_ATTEMPTS {
            match Self::try_start(spec, attempt as u64).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(attempt, error = %format!("{e:#}"), "local cluster start failed");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    async fn try_start(spec: &ClusterSpec, attempt: u64) -> Result<LocalCluster> {
        let dir = TempDir::new()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let base_port = free_block(3 * spec.regions.len(), u64::from(nanos) ^ (attempt << 40))?;
        let args = InitArgs {
            dir: dir.0.clone(),
            regions: spec.regions.clone(),
            nodes_per_region: 1,
            host: "127.0.0.1".into(),
            hosts: None,
            base_port,
            force: false,
        };
        let planned = write_cluster(&args).context("writing the cluster")?;
        let mut nodes: Vec<Node> = Vec::with_capacity(planned.len());
        for p in &planned {
            let config = match node_config(&dir.0, &p.name, spec) {
                Ok(c) => c,
                Err(e) => {
                    shutdown_all(nodes).await;
                    return Err(e);
                }
            };
            match Node::start(config, ServeOptions::default()).await {
                Ok(node) => nodes.push(node),
                Err(e) => {
                    shutdown_all(nodes).await;
                    return Err(e).with_context(|| format!("starting {}", p.name));
                }
            }
        }
        let client = ClientConfig::load(dir.0.join("client.toml"))?;
        let cluster = LocalCluster { nodes, client, dir };
        if let Err(e) = cluster.wait_live(LIVE_WAIT).await {
            cluster.shutdown().await;
            return Err(e);
        }
        Ok(cluster)
    }

    /// Waits until every node sees every other node live.
    pub async fn wait_live(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let missing: Vec<String> = self
                .nodes
                .iter()
                .flat_map(|n| {
                    self.nodes
                        .iter()
                        .filter(|m| m.name != n.name && !n.mesh().is_live(&m.name))
                        .map(move |m| format!("{}→{}", n.name, m.name))
                })
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the local cluster did not connect within {within:?} (not live: {})",
                    missing.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The client configuration (every node, loopback addresses).
    pub fn client_config(&self) -> &ClientConfig {
        &self.client
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    pub fn regions(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.region.clone()).collect()
    }

    /// Each node's engine (to observe what it holds without a network hop).
    pub fn engines(&self) -> Vec<Engine> {
        self.nodes.iter().map(|n| n.engine().clone()).collect()
    }

    /// Realtime delta pushes dropped so far (a full peer queue; the peer
    /// pulls them later), summed over every link of every node.
    pub fn pushes_dropped(&self) -> u64 {
        self.nodes
            .iter()
            .flat_map(|n| n.mesh().traffic())
            .map(|(_, counters)| counters[4])
            .sum()
    }

    /// Log fsyncs so far, summed over the nodes.
    pub fn fsyncs(&self) -> u64 {
        self.nodes.iter().map(|n| n.engine().metrics().fsyncs).sum()
    }

    /// Sets the one-way delay of every directed link: `delay_ms(from, to)`
    /// by region. Nothing is cut.
    pub fn set_delays(&self, delay_ms: impl Fn(&str, &str) -> u64) {
        for node in &self.nodes {
            for other in self.nodes.iter().filter(|o| o.region != node.region) {
                node.set_link(
                    &other.region,
                    Link {
                        delay_ms: delay_ms(&node.region, &other.region),
                        cut: false,
                    },
                );
            }
        }
    }

    /// Stops every node, then removes the directory.
    pub async fn shutdown(self) {
        let LocalCluster { nodes, dir, .. } = self;
        shutdown_all(nodes).await;
        drop(dir);
    }
}

async fn shutdown_all(nodes: Vec<Node>) {
    for node in nodes {
        let name = node.name.clone();
        if let Err(e) = node.shutdown().await {
            tracing::warn!(node = %name, error = %format!("{e:#}"), "node shutdown failed");
        }
    }
}

/// The config `init` wrote for `name`, with the benchmark's durability and
/// link conditioning allowed (delays are set later, all zero at start).
fn node_config(dir: &Path, name: &str, spec: &ClusterSpec) -> Result<NodeConfig> {
    let path = dir.join(format!("{name}.toml"));
    let mut file = NodeFile::read(&path)?;
    file.storage.durability = spec.durability;
    file.storage.periodic_ms = spec.periodic_ms;
    file.debug.allow_link_conditioning = true;
    Ok(NodeConfig::from_file(&path, file)?)
}
