//! A cluster of real nodes inside this process, on real sockets: what the
//! demo, the benchmark (`local:N`, `convergence`, `geo`) and the end-to-end
//! tests run against.
//!
//! Three layers, each usable alone:
//!
//! - [`Workdir`]: the directory a cluster lives in: a new temporary one
//!   (mode 0700, removed on drop unless [`kept`](Workdir::keep)), or one the
//!   caller names, which must be new or empty and is kept.
//! - [`ClusterFiles`]: `meridian init` ([`crate::init::write_cluster`]) run
//!   into a [`Workdir`], then every node's config edited the same way
//!   ([`Spec`]: durability, link conditioning and delays, placement, ...)
//!   and written back, so `meridian serve --config` on a file behaves like
//!   the in-process node.
//! - [`NodeSet`]: the nodes of a [`ClusterFiles`] started in this process
//!   with [`Node::start`], each with its own [`ServeOptions`]; nodes can be
//!   stopped and started again one by one.
//!
//! [`LocalCluster`] puts them together: write, start every node, wait until
//! they are all connected, stop, remove. On loopback it probes a free port
//! block first; if a port is taken between the probe and the start (another
//! cluster starting at the same moment), it rewrites the cluster on the next
//! free block and starts again.
//!
//! The nodes share the caller's tokio runtime (use a multi-thread runtime).

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use meridian_client::{Client, ClientConfig};
use meridian_engine::Engine;
use meridian_replication::mesh::Link;
use meridian_server::config::{DurabilityMode, LinkRule, NodeConfig, NodeFile};
use meridian_server::node::{Node, ServeOptions};

use crate::init::{InitArgs, PlannedNode, write_cluster};

/// Ports of one node in `meridian init`'s layout: peer (QUIC, UDP), client
/// (QUIC, UDP) and metrics (TCP), consecutive from the node's first port;
/// the nodes' RESP ports (TCP) follow all of those, one per node.
pub const PORTS_PER_NODE: u16 = crate::init::PORTS_PER_NODE as u16;

/// The loopback address of [`Ports::Loopback`] and [`Ports::RandomLoopback`].
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Whole-cluster start attempts on port clashes.
const START_ATTEMPTS: usize = 8;

/// Blocks tried by [`Ports::RandomLoopback`].
const RANDOM_PROBES: usize = 64;

/// Lowest and highest first port of a random block: above the well-known
/// and `meridian init`'s default ports, below the usual ephemeral range.
const PORT_LOW: u16 = 20_000;
const PORT_HIGH: u16 = 32_000;

/// Default bound on the nodes connecting to each other at start.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Pause between two connectivity checks.
const CONNECT_POLL: Duration = Duration::from_millis(5);

type Edit = Arc<dyn Fn(&PlannedNode, &mut NodeFile) + Send + Sync>;
type Options = Arc<dyn Fn(&str) -> ServeOptions + Send + Sync>;

/// Where the nodes listen.
#[derive(Clone, Debug)]
pub enum Ports {
    /// On [`LOOPBACK`], from the first of these base ports whose block is
    /// free; on a clash, from the next free one.
    Loopback(Vec<u16>),
    /// On [`LOOPBACK`], from a pseudo-random free block in 20000..32000.
    RandomLoopback,
    /// Node `i` on `hosts[i]`, ports from `base_port`. The caller owns these
    /// addresses: nothing is probed and a clash is an error.
    Hosts { hosts: Vec<String>, base_port: u16 },
}

/// What cluster to write and how to start its nodes.
#[derive(Clone)]
pub struct Spec {
    regions: Vec<String>,
    nodes_per_region: usize,
    ports: Ports,
    edits: Vec<Edit>,
    header: Option<String>,
    options: Option<Options>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("regions", &self.regions)
            .field("nodes_per_region", &self.nodes_per_region)
            .field("ports", &self.ports)
            .field("edits", &self.edits.len())
            .field("header", &self.header.is_some())
            .field("options", &self.options.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl Spec {
    /// One node per region (named `<region>-1`, in this order), on a
    /// random free loopback block, configs as `meridian init` writes them,
    /// default [`ServeOptions`].
    pub fn new<S: Into<String>>(regions: impl IntoIterator<Item = S>) -> Spec {
        Spec {
            regions: regions.into_iter().map(Into::into).collect(),
            nodes_per_region: 1,
            ports: Ports::RandomLoopback,
            edits: Vec::new(),
            header: None,
            options: None,
            connect_timeout: CONNECT_TIMEOUT,
        }
    }

    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    pub fn nodes_per_region(mut self, n: usize) -> Spec {
        self.nodes_per_region = n;
        self
    }

    pub fn ports(mut self, ports: Ports) -> Spec {
        self.ports = ports;
        self
    }

    /// `[storage] durability` of every node.
    pub fn durability(self, durability: DurabilityMode) -> Spec {
        self.edit(move |_, f| f.storage.durability = durability)
    }

    /// `[debug] allow_link_conditioning` of every node (in-process nodes
    /// take [`NodeSet::set_links`] without it; `meridian serve` needs it for
    /// `[[debug.link]]` rules).
    pub fn link_conditioning(self, allow: bool) -> Spec {
        self.edit(move |_, f| f.debug.allow_link_conditioning = allow)
    }

    /// Simulated one-way delays from start: every node delays what it sends
    /// to each other region by `delay_ms(own region, other region)`,
    /// written into its config as `[[debug.link]]` rules (link conditioning
    /// allowed). [`NodeSet::set_links`] changes them later.
    pub fn link_delays(self, delay_ms: impl Fn(&str, &str) -> u64 + Send + Sync + 'static) -> Spec {
        let regions = self.regions.clone();
        self.edit(move |node, f| {
            f.debug.allow_link_conditioning = true;
            f.debug.link = regions
                .iter()
                .filter(|r| **r != node.region)
                .map(|r| LinkRule {
                    region: r.clone(),
                    delay_ms: delay_ms(&node.region, r),
                    cut: false,
                })
                .collect();
        })
    }

    /// Any other change to every node's config, applied after the ones
    /// before it.
    pub fn edit(
        mut self,
        change: impl Fn(&PlannedNode, &mut NodeFile) + Send + Sync + 'static,
    ) -> Spec {
        self.edits.push(Arc::new(change));
        self
    }

    /// A comment put at the top of every edited config file (each line
    /// should start with `#`).
    pub fn header(mut self, text: impl Into<String>) -> Spec {
        self.header = Some(text.into());
        self
    }

    /// The options each node is started with: `options(node name)`.
    pub fn serve_options(
        mut self,
        options: impl Fn(&str) -> ServeOptions + Send + Sync + 'static,
    ) -> Spec {
        self.options = Some(Arc::new(options));
        self
    }

    /// Bound on every node seeing every other one at start
    /// ([`CONNECT_TIMEOUT`] unless set).
    pub fn connect_timeout(mut self, within: Duration) -> Spec {
        self.connect_timeout = within;
        self
    }

    fn node_count(&self) -> usize {
        self.regions.len() * self.nodes_per_region
    }

    fn options_for(&self, name: &str) -> ServeOptions {
        self.options.as_ref().map(|o| o(name)).unwrap_or_default()
    }

    /// The (hosts, base port) blocks to try, in order; on loopback only
    /// those that look free when their turn comes.
    fn candidates(&self) -> Box<dyn Iterator<Item = (Option<Vec<String>>, u16)> + '_> {
        let count = self.node_count();
        let bases = match &self.ports {
            Ports::Hosts { hosts, base_port } => {
                return Box::new(std::iter::once((Some(hosts.clone()), *base_port)));
            }
            Ports::Loopback(bases) => bases.clone(),
            Ports::RandomLoopback => random_bases(count),
        };
        Box::new(
            bases
                .into_iter()
                .filter(move |b| block_free(*b, count))
                .map(|b| (None, b)),
        )
    }
}

/// Whether the ports `count` nodes from `base` bind look free on loopback.
fn block_free(base: u16, count: usize) -> bool {
    let Some(last) = (count as u64 * u64::from(PORTS_PER_NODE + 1)).checked_add(u64::from(base))
    else {
        return false;
    };
    if last > u64::from(u16::MAX) {
        return false;
    }
    (0..count as u16).all(|i| {
        let port = base + PORTS_PER_NODE * i;
        UdpSocket::bind((LOOPBACK, port)).is_ok()
            && UdpSocket::bind((LOOPBACK, port + 1)).is_ok()
            && TcpListener::bind((LOOPBACK, port + 2)).is_ok()
            && TcpListener::bind((LOOPBACK, base + PORTS_PER_NODE * count as u16 + i)).is_ok()
    })
}

/// [`RANDOM_PROBES`] pseudo-random block starts in `PORT_LOW..PORT_HIGH`,
/// different per process and call.
fn random_bases(count: usize) -> Vec<u16> {
    let width =
        (count as u64 * u64::from(PORTS_PER_NODE + 1)).min(u64::from(PORT_HIGH - PORT_LOW) - 1);
    let span = u64::from(PORT_HIGH - PORT_LOW) - width;
    let mut x = rand::random::<u64>() ^ u64::from(std::process::id()).rotate_left(17);
    (0..RANDOM_PROBES)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            PORT_LOW + ((x >> 33) % span) as u16
        })
        .collect()
}

/// Whether `e` comes from binding an address that is taken.
fn address_in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// A cluster's directory: temporary (removed on drop unless kept), or
/// named by the caller (kept).
#[derive(Debug)]
pub struct Workdir {
    path: PathBuf,
    temporary: bool,
    kept: bool,
}

impl Workdir {
    /// A new directory `<prefix>-<pid>-<random>` in the system's temporary
    /// directory, mode 0700 (it will hold private keys and the access
    /// token); removed on drop.
    pub fn temporary(prefix: &str) -> Result<Workdir> {
        let base = std::env::temp_dir();
        let path = base.join(format!(
            "{prefix}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
        Ok(Workdir {
            path,
            temporary: true,
            kept: false,
        })
    }

    /// `path`, created if missing; it must be empty: a cluster is written
    /// (and on a port clash rewritten) into it, so it must hold nothing of
    /// anyone else's. Kept on drop.
    pub fn new_or_empty(path: &Path) -> Result<Workdir> {
        if let Ok(mut entries) = std::fs::read_dir(path)
            && entries.next().is_some()
        {
            let client = path.join("client.toml");
            if client.exists() {
                bail!(
                    "{} already holds a cluster ({} exists): pass a new or empty directory, \
                     or start that cluster's nodes with `meridian serve --config {}/<node>.toml`",
                    path.display(),
                    client.display(),
                    path.display()
                );
            }
            bail!(
                "{} is not empty: pass a new or empty directory for the cluster",
                path.display()
            );
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating the cluster directory {}", path.display()))?;
        Ok(Workdir {
            path: path.to_owned(),
            temporary: false,
            kept: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the directory is removed when this is dropped.
    pub fn is_temporary(&self) -> bool {
        self.temporary && !self.kept
    }

    /// Never removes the directory; returns where it is.
    pub fn keep(&mut self) -> &Path {
        self.kept = true;
        &self.path
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.is_temporary() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A cluster written by `meridian init` into a [`Workdir`], with a
/// [`Spec`]'s edits applied to every node's config.
#[derive(Debug)]
pub struct ClusterFiles {
    /// The nodes, in `init` order (region order, then number).
    pub nodes: Vec<PlannedNode>,
    dir: Workdir,
}

impl ClusterFiles {
    /// Writes `spec`'s cluster into `dir`, on the first block of
    /// [`Spec::ports`] (probed free on loopback). Nothing is started.
    pub fn create(dir: Workdir, spec: &Spec) -> Result<ClusterFiles> {
        let Some((hosts, base_port)) = spec.candidates().next() else {
            bail!(
                "no free loopback ports for a {}-node cluster",
                spec.node_count()
            );
        };
        let mut files = ClusterFiles {
            nodes: Vec::new(),
            dir,
        };
        files.write(spec, hosts, base_port, false)?;
        Ok(files)
    }

    /// `meridian init` into the directory (overwriting with `force`), then
    /// the edits.
    fn write(
        &mut self,
        spec: &Spec,
        hosts: Option<Vec<String>>,
        base_port: u16,
        force: bool,
    ) -> Result<()> {
        if force {
            // Ours: written by the attempt that lost a port race.
            let _ = std::fs::remove_dir_all(self.path().join("data"));
        }
        self.nodes = write_cluster(&InitArgs {
            dir: self.path().to_owned(),
            regions: spec.regions.clone(),
            nodes_per_region: spec.nodes_per_region,
            host: LOOPBACK.to_string(),
            hosts,
            base_port,
            force,
        })
        .context("writing the cluster (meridian init)")?;
        if spec.edits.is_empty() && spec.header.is_none() {
            return Ok(());
        }
        let header = spec.header.as_deref().unwrap_or("");
        for node in &self.nodes {
            let path = self.config_path(&node.name);
            let mut file = NodeFile::read(&path)?;
            for edit in &spec.edits {
                edit(node, &mut file);
            }
            std::fs::write(&path, format!("{header}{}", file.to_toml()))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn workdir(&self) -> &Workdir {
        &self.dir
    }

    pub fn workdir_mut(&mut self) -> &mut Workdir {
        &mut self.dir
    }

    /// Node names in `init` order.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The node called `name` (panics if there is none).
    pub fn node(&self, name: &str) -> &PlannedNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in this cluster"))
    }

    pub fn region_of(&self, name: &str) -> &str {
        &self.node(name).region
    }

    pub fn config_path(&self, name: &str) -> PathBuf {
        self.path().join(format!("{name}.toml"))
    }

    pub fn client_config_path(&self) -> PathBuf {
        self.path().join("client.toml")
    }

    /// Rewrites `name`'s config file after `change`.
    pub fn edit(&self, name: &str, change: impl FnOnce(&mut NodeFile)) -> Result<()> {
        let path = self.config_path(name);
        let mut file = NodeFile::read(&path)?;
        change(&mut file);
        std::fs::write(&path, file.to_toml())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// `name`'s config, loaded and validated as `meridian serve` does.
    pub fn config(&self, name: &str) -> Result<NodeConfig> {
        Ok(NodeConfig::load(self.config_path(name))?)
    }

    pub fn data_dir(&self, name: &str) -> Result<PathBuf> {
        Ok(self.config(name)?.data_dir)
    }

    /// The cluster's `client.toml`.
    pub fn client_config(&self) -> Result<ClientConfig> {
        Ok(ClientConfig::load(self.client_config_path())?)
    }

    /// A client that only ever talks to `name`.
    pub async fn client(&self, name: &str) -> Result<Client> {
        let config = self.client_config()?.pinned(name);
        Client::connect(config)
            .await
            .with_context(|| format!("connecting a client to {name}"))
    }

    /// A pinned client for every node, in `init` order.
    pub async fn clients(&self) -> Result<Vec<(String, Client)>> {
        let mut out = Vec::new();
        for name in self.names() {
            let client = self.client(&name).await?;
            out.push((name, client));
        }
        if out.is_empty() {
            bail!("the cluster has no nodes");
        }
        Ok(out)
    }
}

/// One node of a [`NodeSet`]: how to start it, and the node if running.
#[derive(Debug)]
struct Slot {
    name: String,
    region: String,
    config: PathBuf,
    options: ServeOptions,
    node: Option<Node>,
}

/// The nodes of a [`ClusterFiles`], run in this process. Nodes start
/// stopped; a node started again takes the options it was given first.
#[derive(Debug)]
pub struct NodeSet {
    slots: Vec<Slot>,
}

impl NodeSet {
    /// `files`' nodes, none running; each starts with `options(name)`.
    pub fn new(files: &ClusterFiles, options: impl Fn(&str) -> ServeOptions) -> NodeSet {
        NodeSet {
            slots: files
                .nodes
                .iter()
                .map(|n| Slot {
                    name: n.name.clone(),
                    region: n.region.clone(),
                    config: files.config_path(&n.name),
                    options: options(&n.name),
                    node: None,
                })
                .collect(),
        }
    }

    fn slot(&self, name: &str) -> &Slot {
        self.slots
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no node {name} in this cluster"))
    }

    fn slot_mut(&mut self, name: &str) -> &mut Slot {
        self.slots
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no node {name} in this cluster"))
    }

    /// Node names in `init` order.
    pub fn names(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.name.clone()).collect()
    }

    /// Each node's region, in `init` order.
    pub fn regions(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.region.clone()).collect()
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.slot(name).node.is_some()
    }

    /// The running node `name` (panics if it is stopped).
    pub fn node(&self, name: &str) -> &Node {
        self.slot(name)
            .node
            .as_ref()
            .unwrap_or_else(|| panic!("node {name} is not running"))
    }

    /// The running nodes, in `init` order.
    pub fn running(&self) -> impl Iterator<Item = &Node> {
        self.slots.iter().filter_map(|s| s.node.as_ref())
    }

    /// Starts `name` from its config file (again, after [`stop`](Self::stop)).
    pub async fn start(&mut self, name: &str) -> Result<()> {
        let slot = self.slot_mut(name);
        anyhow::ensure!(slot.node.is_none(), "{name} is already running");
        let config = NodeConfig::load(&slot.config)
            .map_err(|e| anyhow!(e).context(format!("loading {name}'s config")))?;
        let node = Node::start(config, slot.options.clone())
            .await
            .with_context(|| format!("starting {name}"))?;
        slot.node = Some(node);
        Ok(())
    }

    /// Starts every stopped node, in `init` order; on a failure, stops the
    /// ones this call started.
    pub async fn start_all(&mut self) -> Result<()> {
        let stopped: Vec<String> = self
            .slots
            .iter()
            .filter(|s| s.node.is_none())
            .map(|s| s.name.clone())
            .collect();
        for (i, name) in stopped.iter().enumerate() {
            if let Err(e) = self.start(name).await {
                for started in &stopped[..i] {
                    if let Err(stop) = self.stop(started).await {
                        tracing::warn!(error = %format!("{stop:#}"), "stopping after a failed start");
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Shuts `name` down cleanly (stops accepting, drains, closes the mesh,
    /// final checkpoint); nothing if it is stopped.
    pub async fn stop(&mut self, name: &str) -> Result<()> {
        if let Some(node) = self.slot_mut(name).node.take() {
            node.shutdown()
                .await
                .with_context(|| format!("shutting down {name}"))?;
        }
        Ok(())
    }

    /// Shuts every running node down, all at once; waits for all of them
    /// and returns the first failure (in `init` order).
    pub async fn shutdown(&mut self) -> Result<()> {
        let stopping: Vec<_> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.node.take())
            .map(|node| (node.name.clone(), tokio::spawn(node.shutdown())))
            .collect();
        let mut first = None;
        for (name, task) in stopping {
            let result = match task.await {
                Ok(r) => r.with_context(|| format!("shutting down {name}")),
                Err(e) => Err(anyhow!(e).context(format!("shutting down {name}"))),
            };
            if let Err(e) = result {
                match first {
                    None => first = Some(e),
                    Some(_) => tracing::warn!(error = %format!("{e:#}"), "node shutdown failed"),
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The pairs of running nodes (`a→b`) where `a` does not yet see `b`
    /// live with hello exchanged (only then does `a` push writes to `b`
    /// and count it in quorums).
    pub fn not_connected(&self) -> Vec<String> {
        let running: Vec<&Node> = self.running().collect();
        let mut missing = Vec::new();
        for a in &running {
            let reports = a.mesh().reports();
            for b in running.iter().filter(|b| b.name != a.name) {
                let handshaken = reports.iter().any(|r| r.name == b.name && r.connected);
                if !a.mesh().is_live(&b.name) || !handshaken {
                    missing.push(format!("{}→{}", a.name, b.name));
                }
            }
        }
        missing
    }

    /// Waits until every running node sees every other one connected
    /// ([`not_connected`](Self::not_connected) is empty), at most `within`;
    /// returns how long it took.
    pub async fn wait_connected(&self, within: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let missing = self.not_connected();
            if missing.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                bail!(
                    "the nodes did not connect to each other within {within:?} (not connected: {}; \
                     is UDP on loopback blocked?)",
                    missing.join(", ")
                );
            }
            tokio::time::sleep(CONNECT_POLL).await;
        }
    }

    /// Sets the link from every running node to each other region:
    /// `link(own region, other region)`; `None` leaves it as it is.
    pub fn set_links(&self, link: impl Fn(&str, &str) -> Option<Link>) {
        let regions = self.regions();
        for node in self.running() {
            let mut others: Vec<&String> = regions.iter().filter(|r| **r != node.region).collect();
            others.sort_unstable();
            others.dedup();
            for other in others {
                if let Some(l) = link(&node.region, other) {
                    node.set_link(other, l);
                }
            }
        }
    }

    /// Sets the one-way delay of every link between regions,
    /// `delay_ms(from, to)`; nothing is cut.
    pub fn set_delays(&self, delay_ms: impl Fn(&str, &str) -> u64) {
        self.set_links(|from, to| {
            Some(Link {
                delay_ms: delay_ms(from, to),
                cut: false,
            })
        });
    }

    /// Each running node's engine (to observe what it holds without a
    /// network hop).
    pub fn engines(&self) -> Vec<Engine> {
        self.running().map(|n| n.engine().clone()).collect()
    }

    /// Realtime delta pushes dropped so far (a full peer queue; the peer
    /// pulls them later), summed over every link of every running node.
    pub fn pushes_dropped(&self) -> u64 {
        self.running()
            .flat_map(|n| n.mesh().traffic())
            .map(|(_, counters)| counters[4])
            .sum()
    }

    /// Log fsyncs so far, summed over the running nodes.
    pub fn fsyncs(&self) -> u64 {
        self.running().map(|n| n.engine().metrics().fsyncs).sum()
    }
}

/// A running in-process cluster: its files and its nodes.
#[derive(Debug)]
pub struct LocalCluster {
    // First: the nodes stop before the directory goes.
    nodes: NodeSet,
    files: ClusterFiles,
    client: ClientConfig,
}

impl LocalCluster {
    /// [`start_in`](Self::start_in) a new temporary directory
    /// (`meridian-cluster-*`).
    pub async fn start(spec: &Spec) -> Result<LocalCluster> {
        Self::start_in(Workdir::temporary("meridian-cluster")?, spec).await
    }

    /// Writes `spec`'s cluster into `dir`, starts every node and waits
    /// until each sees every other one connected. On a port clash at start,
    /// rewrites the cluster on the next free block and starts again; on any
    /// failure, stops what was started (a temporary `dir` is removed).
    pub async fn start_in(dir: Workdir, spec: &Spec) -> Result<LocalCluster> {
        let mut files = ClusterFiles {
            nodes: Vec::new(),
            dir,
        };
        let mut tried = 0;
        let mut clash = None;
        for (attempt, (hosts, base_port)) in spec.candidates().take(START_ATTEMPTS).enumerate() {
            tried += 1;
            files.write(spec, hosts, base_port, attempt > 0)?;
            let mut nodes = NodeSet::new(&files, |name| spec.options_for(name));
            match nodes.start_all().await {
                Ok(()) => {}
                Err(e) if address_in_use(&e) => {
                    tracing::debug!(base_port, error = %format!("{e:#}"), "port clash; next block");
                    clash = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
            let client = match files.client_config() {
                Ok(c) => c,
                Err(e) => {
                    let _ = nodes.shutdown().await;
                    return Err(e);
                }
            };
            if let Err(e) = nodes.wait_connected(spec.connect_timeout).await {
                let _ = nodes.shutdown().await;
                return Err(e);
            }
            return Ok(LocalCluster {
                nodes,
                files,
                client,
            });
        }
        let what = match &spec.ports {
            Ports::Hosts { .. } => "the cluster's ports are taken".to_owned(),
            _ => format!(
                "no free ports for a {}-node cluster on {LOOPBACK} ({tried} free blocks tried)",
                spec.node_count()
            ),
        };
        Err(match clash {
            Some(e) => e.context(what),
            None => anyhow!(what),
        })
    }

    pub fn files(&self) -> &ClusterFiles {
        &self.files
    }

    pub fn nodes(&self) -> &NodeSet {
        &self.nodes
    }

    pub fn path(&self) -> &Path {
        self.files.path()
    }

    /// The cluster's client configuration (every node).
    pub fn client_config(&self) -> &ClientConfig {
        &self.client
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.names()
    }

    pub fn regions(&self) -> Vec<String> {
        self.nodes.regions()
    }

    pub fn engines(&self) -> Vec<Engine> {
        self.nodes.engines()
    }

    pub fn pushes_dropped(&self) -> u64 {
        self.nodes.pushes_dropped()
    }

    pub fn fsyncs(&self) -> u64 {
        self.nodes.fsyncs()
    }

    pub fn set_delays(&self, delay_ms: impl Fn(&str, &str) -> u64) {
        self.nodes.set_delays(delay_ms);
    }

    pub fn set_links(&self, link: impl Fn(&str, &str) -> Option<Link>) {
        self.nodes.set_links(link);
    }

    pub async fn wait_connected(&self, within: Duration) -> Result<Duration> {
        self.nodes.wait_connected(within).await
    }

    /// Stops every node, then removes the directory if it is temporary.
    pub async fn shutdown(self) -> Result<()> {
        let LocalCluster {
            mut nodes, files, ..
        } = self;
        let stopped = nodes.shutdown().await;
        drop(files);
        stopped
    }
}
