//! `meridian demo`: a three-region cluster on this machine and a guided
//! tour of what Meridian promises, with measured numbers.
//!
//! The demo writes a cluster with the real `meridian init` code
//! ([`crate::init::write_cluster`]) into a temporary directory (or `--dir`),
//! turns on link conditioning in each node's config so every node delays
//! its messages to each other region by a simulated one-way WAN delay
//! ([`ONE_WAY_DELAYS`]), and runs the three nodes in this process, on
//! loopback, with the real [`Node`] (engine with `sync` durability, QUIC
//! peer mesh, coordinator, client listener). The tour talks to them through
//! the real client ([`meridian_client`]), one client pinned to each region's
//! node; client↔node traffic is local, like an application in that region.
//!
//! The tour:
//! 1. concurrent counter increments in all regions converge everywhere;
//!    convergence time of single writes next to the injected delay;
//! 2. latency per consistency level from each region (p50, p99);
//! 3. an add-wins set and a last-writer-wins register under concurrent
//!    writes;
//! 4. a partition isolating ap-south: local writes there keep working,
//!    quorum writes fail with `Unavailable`; after healing everything
//!    converges and no acknowledged write is lost;
//! 5. a PASS/FAIL summary of every expectation.
//!
//! Guarantees: every wait is bounded ([`CONVERGE_TIMEOUT`],
//! [`REQUEST_TIMEOUT`], [`CONNECT_TIMEOUT`]); the nodes are shut down and a
//! temporary directory removed on success, on failure and on Ctrl-C (a
//! second Ctrl-C exits at once, still removing the temporary directory). The
//! command fails (exit 1) if any expectation fails.
//!
//! Limits: the simulated delays are added by the sending node's mesh (not
//! by the kernel), so they cover replication and peer RPCs but not QUIC's
//! own handshakes; all three nodes share this machine's CPUs and disk, so
//! the numbers say how the protocol behaves, not how fast a real
//! deployment is. The ports are checked free just before the nodes start;
//! if one is taken in between (another demo starting at the same moment),
//! the cluster is rewritten on the next free range. `--dir` must be new or
//! empty: the demo never writes into a directory holding anything else.

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use meridian_client::{Client, ClientConfig, Consistency, Error as ClientError, WireHlc};
use meridian_replication::mesh::{LIVE_TIMEOUT, Link};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Barrier, watch};
use tokio::task::JoinHandle;

use crate::init::{InitArgs, InitError};
use meridian_server::config::{self, DebugConfig, LinkRule, NodeConfig, NodeFile};
use meridian_server::node::{Node, ServeOptions};

/// The demo's regions, in node order (one node each, `<region>-1`).
pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

/// Simulated one-way delays between regions, in milliseconds: roughly
/// Virginia↔Ireland, Virginia↔Mumbai and Ireland↔Mumbai over real routes.
pub const ONE_WAY_DELAYS: [(&str, &str, u64); 3] = [
    ("us-east", "eu-west", 40),
    ("us-east", "ap-south", 100),
    ("eu-west", "ap-south", 70),
];

/// The address every demo node listens on: loopback only.
const HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// First ports tried for the cluster (each needs [`PORTS_NEEDED`] from
/// there). Below Linux's ephemeral range (32768+), so outgoing connections
/// don't take them between the check and the start; several ranges so a
/// second demo (or anything else) on the first one is no problem.
const BASE_PORTS: [u16; 10] = [
    17100, 17400, 17700, 18000, 18300, 18600, 18900, 19200, 19500, 19800,
];

/// Ports of the cluster: peer, client and metrics per node.
const PORTS_NEEDED: u16 = 9;

/// Bound on the nodes connecting to each other at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Bound on a value reaching a region (a healthy cluster needs the one-way
/// delay plus, after a partition, a catch-up round).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between convergence polls. A local read on loopback takes a
/// fraction of a millisecond, so polls are at most about 1 ms apart (the
/// timer's resolution) without busy-looping on the nodes' CPUs.
const POLL_INTERVAL: Duration = Duration::from_micros(500);

/// Server-side timeout of the tour's requests: far above any round trip
/// here, so only a real failure times out.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the partition of step 4 lasts at least: longer than the
/// failure detector's window ([`LIVE_TIMEOUT`]), so each side really stops
/// hearing the other, as in a real partition.
const PARTITION_MS: u64 = LIVE_TIMEOUT.as_millis() as u64 + 500;

/// Attempts at issuing two writes provably concurrently (step 3) before
/// giving up: a very loaded machine may not manage it within the delay.
const CONCURRENT_ATTEMPTS: usize = 3;

/// The consistency levels, in table order.
const LEVELS: [Consistency; 4] = [
    Consistency::Local,
    Consistency::Leader,
    Consistency::Quorum,
    Consistency::All,
];

/// Arguments of `meridian demo`.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the cluster running after the tour and print how to connect to
    /// it; stop it with Ctrl-C.
    #[arg(long)]
    pub serve: bool,
    /// A shorter tour with fewer samples (for tests).
    #[arg(long)]
    pub quick: bool,
    /// Put the cluster in DIR (new or empty; kept at exit) instead of a
    /// temporary directory (removed at exit).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Seed for the tour's random choices (printed, so a tour can be
    /// repeated); random if not given.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// How much the tour does.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    /// Counter increments per region in step 1.
    increments: usize,
    /// Single-write convergence probes per origin region.
    probes: usize,
    /// Requests per region and consistency level, for writes and reads.
    latency_samples: usize,
    /// Increments on each side of the partition.
    partition_writes: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                increments: 10,
                probes: 2,
                latency_samples: 8,
                partition_writes: 3,
            }
        } else {
            Sizes {
                increments: 25,
                probes: 5,
                latency_samples: 40,
                partition_writes: 5,
            }
        }
    }
}

/// Prints one line on stdout; a closed stdout does not stop the demo.
macro_rules! say {
    () => {{
        let _ = writeln!(std::io::stdout());
    }};
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The node name `meridian init` gives the one node of `region`.
fn node_name(region: &str) -> String {
    format!("{region}-1")
}

/// The simulated one-way delay between two regions, in ms (0 within one).
pub fn one_way_ms(a: &str, b: &str) -> u64 {
    if a == b {
        return 0;
    }
    ONE_WAY_DELAYS
        .iter()
        .find(|(x, y, _)| (*x == a && *y == b) || (*x == b && *y == a))
        .map(|(_, _, ms)| *ms)
        .unwrap_or_else(|| panic!("no delay between {a} and {b}"))
}

/// Round trip between two regions, in ms.
fn rtt_ms(a: &str, b: &str) -> u64 {
    2 * one_way_ms(a, b)
}

/// The nearest other region of `region` (the rest of the nearest majority
/// of three).
fn nearest(region: &str) -> &'static str {
    REGIONS
        .into_iter()
        .filter(|r| *r != region)
        .min_by_key(|r| one_way_ms(region, r))
        .expect("three regions")
}

/// The farthest other region of `region`.
fn farthest(region: &str) -> &'static str {
    REGIONS
        .into_iter()
        .filter(|r| *r != region)
        .max_by_key(|r| one_way_ms(region, r))
        .expect("three regions")
}

/// `meridian demo`.
pub fn run(args: DemoArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("meridian-demo")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(args))
}

/// The cluster directory; a temporary one is removed when dropped (also
/// when unwinding from a panic).
#[derive(Debug)]
struct ClusterDir {
    path: PathBuf,
    temporary: bool,
}

impl ClusterDir {
    fn create(dir: Option<&Path>) -> Result<ClusterDir> {
        match dir {
            Some(dir) => {
                // New or empty only: the demo writes (and on a port clash
                // rewrites) everything in it, and must never touch a
                // cluster or files of the user's.
                if let Ok(mut entries) = std::fs::read_dir(dir)
                    && entries.next().is_some()
                {
                    let client = dir.join("client.toml");
                    if client.exists() {
                        bail!(
                            "{} already holds a cluster ({} exists): pass a new or empty \
                             --dir, or start that cluster's nodes with \
                             `meridian serve --config {}/<node>.toml`",
                            dir.display(),
                            client.display(),
                            dir.display()
                        );
                    }
                    bail!(
                        "{} is not empty: pass a new or empty --dir for the demo cluster",
                        dir.display()
                    );
                }
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the cluster directory {}", dir.display()))?;
                Ok(ClusterDir {
                    path: dir.to_owned(),
                    temporary: false,
                })
            }
            None => {
                let base = std::env::temp_dir();
                let path = base.join(format!(
                    "meridian-demo-{}-{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                ));
                // 0700: the directory holds private keys and the token.
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .with_context(|| {
                        format!("creating a temporary directory in {}", base.display())
                    })?;
                Ok(ClusterDir {
                    path,
                    temporary: true,
                })
            }
        }
    }

    fn remove(&self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

impl Drop for ClusterDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Writes the cluster into `dir` and starts it on the first free port
/// range. If a port is taken between the check and the start (another demo
/// starting at the same moment), starts over on the next free range.
/// Returns the cluster and its base port.
async fn start_cluster(dir: &ClusterDir) -> Result<(Cluster, u16)> {
    let mut clash = None;
    let free = BASE_PORTS.into_iter().filter(|base| ports_free(*base));
    for (attempt, base_port) in free.enumerate() {
        if attempt > 0 {
            // Ours: written by the attempt that lost the race.
            let _ = std::fs::remove_dir_all(dir.path.join("data"));
        }
        let init = InitArgs {
            dir: dir.path.clone(),
            regions: REGIONS.iter().map(|r| (*r).to_owned()).collect(),
            nodes_per_region: 1,
            host: HOST.to_string(),
            hosts: None,
            base_port,
            force: attempt > 0,
        };
        match crate::init::write_cluster(&init) {
            Ok(_) => {}
            Err(InitError::Exists { existing, .. }) => bail!(
                "{} already holds a cluster ({} exists): pass a new or empty --dir",
                dir.path.display(),
                existing.display()
            ),
            Err(e) => return Err(anyhow!(e).context("writing the demo cluster")),
        }
        condition_links(&dir.path)?;
        match Cluster::start(&dir.path).await {
            Ok(cluster) => return Ok((cluster, base_port)),
            Err(e) if address_in_use(&e) => clash = Some(e),
            Err(e) => return Err(e),
        }
    }
    let last = BASE_PORTS[BASE_PORTS.len() - 1] + PORTS_NEEDED - 1;
    match clash {
        Some(e) => Err(e.context(format!(
            "no free ports for the demo cluster on {HOST} between {} and {last}",
            BASE_PORTS[0]
        ))),
        None => bail!(
            "no free ports for the demo cluster on {HOST}: tried {} ranges of {PORTS_NEEDED} \
             ports between {} and {last} (are other `meridian demo`s running?)",
            BASE_PORTS.len(),
            BASE_PORTS[0]
        ),
    }
}

/// Whether `e` comes from binding an address that is taken.
fn address_in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// Whether the ports a node at `base` binds are free: UDP for the peer and
/// client listeners (QUIC), TCP for metrics.
fn ports_free(base: u16) -> bool {
    (0..PORTS_NEEDED / 3).all(|i| {
        let port = base + 3 * i;
        UdpSocket::bind((HOST, port)).is_ok()
            && UdpSocket::bind((HOST, port + 1)).is_ok()
            && TcpListener::bind((HOST, port + 2)).is_ok()
    })
}

/// Whether `path` is on tmpfs (memory), where fsync is free.
fn on_tmpfs(path: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::statfs::{TMPFS_MAGIC, statfs};
        statfs(path).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        false
    }
}

/// Rewrites each node's config with link conditioning towards the other
/// regions, so `meridian serve --config` on these files behaves the same.
fn condition_links(dir: &Path) -> Result<()> {
    for region in REGIONS {
        let path = dir.join(format!("{}.toml", node_name(region)));
        let mut file = NodeFile::read(&path)?;
        file.debug = DebugConfig {
            allow_link_conditioning: true,
            allow_clock_offset: false,
            link: REGIONS
                .into_iter()
                .filter(|r| *r != region)
                .map(|r| LinkRule {
                    region: r.to_owned(),
                    delay_ms: one_way_ms(region, r),
                    cut: false,
                })
                .collect(),
        };
        let text = format!(
            "# Meridian node configuration, written by `meridian demo` (the one\n\
             # `meridian init` writes, plus simulated WAN latency in [debug]).\n\
             # Start the node with `meridian serve --config <this file>`.\n\
             # Relative paths are relative to this file's directory.\n\n{}",
            file.to_toml()
        );
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The running cluster: one node and one pinned client per region, in
/// [`REGIONS`] order.
struct Cluster {
    nodes: Vec<Node>,
    clients: Vec<Client>,
}

impl Cluster {
    /// Starts the nodes of `dir` one by one (stopping those already started
    /// if one fails) and connects a client to each.
    async fn start(dir: &Path) -> Result<Cluster> {
        let mut nodes: Vec<Node> = Vec::new();
        for region in REGIONS {
            let name = node_name(region);
            let started = match NodeConfig::load(dir.join(format!("{name}.toml"))) {
                Ok(config) => Node::start(config, ServeOptions::default())
                    .await
                    .with_context(|| format!("starting node {name}")),
                Err(e) => Err(anyhow!(e)),
            };
            match started {
                Ok(node) => nodes.push(node),
                Err(e) => {
                    shutdown_nodes(nodes).await;
                    return Err(e);
                }
            }
        }
        let mut cluster = Cluster {
            nodes,
            clients: Vec::new(),
        };
        let config = match ClientConfig::load(dir.join("client.toml")) {
            Ok(c) => c.with_timeout(REQUEST_TIMEOUT),
            Err(e) => {
                cluster.shutdown().await;
                return Err(anyhow!(e));
            }
        };
        for region in REGIONS {
            match Client::connect(config.clone().pinned(&node_name(region))).await {
                Ok(client) => cluster.clients.push(client),
                Err(e) => {
                    cluster.shutdown().await;
                    return Err(anyhow!(e).context(format!("connecting a client to {region}")));
                }
            }
        }
        Ok(cluster)
    }

    /// Whether every node sees every peer live and has its hello (only
    /// then does it push writes to that peer; before, they arrive by pull).
    fn fully_connected(&self) -> bool {
        self.nodes.iter().all(|n| {
            let reports = n.mesh().reports();
            self.nodes.iter().all(|peer| {
                peer.name == n.name
                    || (n.mesh().is_live(&peer.name)
                        && reports.iter().any(|r| r.name == peer.name && r.connected))
            })
        })
    }

    /// Waits (bounded) until every node sees every peer live, hello
    /// exchanged.
    async fn wait_connected(&self, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        while !self.fully_connected() {
            if started.elapsed() > timeout {
                bail!(
                    "the three nodes did not connect to each other within {} s \
                     (is UDP on {HOST} blocked?)",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(started.elapsed())
    }

    /// Cuts (or restores) every link between `region` and the others, on
    /// both sides; the delays stay.
    fn isolate(&self, region: &str, cut: bool) {
        for node in &self.nodes {
            for other in REGIONS {
                let crosses = (node.region == region) != (other == region);
                if other != node.region && crosses {
                    node.set_link(
                        other,
                        Link {
                            delay_ms: one_way_ms(&node.region, other),
                            cut,
                        },
                    );
                }
            }
        }
    }

    /// Closes the clients, then stops every node (in parallel).
    async fn shutdown(self) {
        for client in &self.clients {
            client.close().await;
        }
        shutdown_nodes(self.nodes).await;
    }
}

async fn shutdown_nodes(nodes: Vec<Node>) {
    let handles: Vec<JoinHandle<()>> = nodes
        .into_iter()
        .map(|node| {
            tokio::spawn(async move {
                let name = node.name.clone();
                if let Err(e) = node.shutdown().await {
                    say!("warning: stopping {name}: {e:#}");
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.await;
    }
}

/// Watches SIGINT and SIGTERM: the first one flips the returned watch; a
/// second one removes `temp_dir` (if any) and exits at once.
fn watch_signals(temp_dir: Option<PathBuf>) -> Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        for n in 0..2 {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if n == 0 {
                let _ = tx.send(true);
            } else {
                let _ = writeln!(std::io::stderr(), "interrupted again: exiting now");
                if let Some(dir) = &temp_dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
                std::process::exit(130);
            }
        }
    });
    Ok(rx)
}

/// Resolves when the watch says stop.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn run_async(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let sizes = Sizes::new(args.quick);
    let seed = args.seed.unwrap_or_else(rand::random);

    let dir = ClusterDir::create(args.dir.as_deref())?;
    let mut stop = watch_signals(dir.temporary.then(|| dir.path.clone()))?;
    let starting = Instant::now();
    let (cluster, base_port) = tokio::select! {
        c = start_cluster(&dir) => c?,
        _ = stopped(&mut stop) => bail!("interrupted while starting the cluster"),
    };
    let durability =
        match NodeConfig::load(dir.path.join(format!("{}.toml", node_name(REGIONS[0])))) {
            Ok(config) => config.durability(),
            Err(e) => {
                cluster.shutdown().await;
                return Err(e.into());
            }
        };

    say!("Meridian demo: a three-region cluster on this machine, with simulated WAN latency.");
    say!();
    say!(
        "  {:<9} {:<11} {:<16} one-way delay to  {:>8} {:>8} {:>8}",
        "region",
        "node",
        "client address",
        REGIONS[0],
        REGIONS[1],
        REGIONS[2]
    );
    for (i, region) in REGIONS.iter().enumerate() {
        let delays: Vec<String> = REGIONS
            .iter()
            .map(|r| {
                if r == region {
                    "-".to_owned()
                } else {
                    format!("{} ms", one_way_ms(region, r))
                }
            })
            .collect();
        say!(
            "  {:<9} {:<11} {:<16} {:17} {:>8} {:>8} {:>8}",
            region,
            node_name(region),
            format!("{HOST}:{}", base_port + 3 * i as u16 + 1),
            "",
            delays[0],
            delays[1],
            delays[2]
        );
    }
    say!();
    say!(
        "The delay is added by each node to every message it sends to a peer in another \
         region; a client talks to the node of its own region over loopback (no added delay), \
         like an application running in that region."
    );
    match durability {
        config::Durability::Sync if on_tmpfs(&dir.path) => say!(
            "Durability: sync (the default): a node acknowledges a write only after fsyncing \
             it (group commit). But {} is on tmpfs (memory), where an fsync costs nothing: \
             pass --dir on a disk to include a real disk flush in the numbers below.",
            dir.path.display()
        ),
        config::Durability::Sync => say!(
            "Durability: sync (the default): a node acknowledges a write only after fsyncing \
             it (group commit), so the numbers below include a real disk flush."
        ),
        config::Durability::Periodic { interval_ms } => say!(
            "Durability: periodic (fsync every {interval_ms} ms): acknowledged writes may be \
             lost on power loss."
        ),
    }
    say!(
        "Cluster directory: {} ({})",
        dir.path.display(),
        if dir.temporary {
            "temporary: removed at exit"
        } else {
            "kept at exit"
        }
    );
    say!("Seed: {seed} (`meridian demo --seed {seed}` repeats this tour's random choices)");
    say!();

    let outcome = tokio::select! {
        r = async {
            cluster.wait_connected(CONNECT_TIMEOUT).await?;
            say!(
                "Started 3 nodes in {} ms; each is connected to the other two.",
                starting.elapsed().as_millis()
            );
            let mut tour = Tour::new(&cluster, sizes, seed);
            tour.run().await;
            Ok::<_, anyhow::Error>(tour.checks)
        } => Some(r),
        _ = stopped(&mut stop) => None,
    };
    let checks = match outcome {
        None => {
            say!();
            say!("Interrupted: stopping the demo cluster...");
            cluster.shutdown().await;
            dir.remove();
            bail!("interrupted; the demo cluster was stopped");
        }
        Some(Err(e)) => {
            cluster.shutdown().await;
            dir.remove();
            return Err(e);
        }
        Some(Ok(checks)) => checks,
    };
    let failed = checks.iter().filter(|c| !c.passed).count();

    header("5. Summary");
    for c in &checks {
        say!(
            "  {}  {}. {}",
            if c.passed { "PASS" } else { "FAIL" },
            c.step,
            c.what
        );
    }
    say!();
    if failed == 0 {
        say!(
            "All {} expectations held. The tour took {:.1} s.",
            checks.len(),
            started.elapsed().as_secs_f64()
        );
    } else {
        say!(
            "{failed} of {} expectations FAILED (marked FAIL above). The tour took {:.1} s.",
            checks.len(),
            started.elapsed().as_secs_f64()
        );
    }

    if args.serve {
        print_connect_help(&dir);
        stopped(&mut stop).await;
        say!();
        say!("Stopping the demo cluster...");
    } else {
        say!();
        say!(
            "To keep the cluster running after the tour and talk to it yourself, run \
             `meridian demo --serve` (add `--dir DIR` to keep its files), then e.g. \
             `meridian cli --config <dir>/client.toml count likes`."
        );
    }
    cluster.shutdown().await;
    dir.remove();
    if dir.temporary {
        say!("Stopped the cluster and removed {}.", dir.path.display());
    } else {
        say!(
            "Stopped the cluster; its files stay in {} (start a node again with \
             `meridian serve --config {}/<node>.toml`).",
            dir.path.display(),
            dir.path.display()
        );
    }
    if failed > 0 {
        bail!("{failed} of {} demo expectations failed", checks.len());
    }
    Ok(())
}

fn print_connect_help(dir: &ClusterDir) {
    let client = dir.path.join("client.toml");
    let client = client.display();
    header("The cluster keeps running (--serve)");
    say!(
        "Cluster directory: {} (node configs, certificates, and client.toml, which holds the \
         access token).",
        dir.path.display()
    );
    say!("Talk to it from another terminal:");
    say!("  meridian cli --config {client} count likes");
    say!("  meridian cli --config {client} --node ap-south-1 --consistency quorum incr likes 5");
    say!("  meridian cli --config {client} smembers cart");
    say!("  meridian cli --config {client} --node eu-west-1 get color");
    say!("  meridian status --config {client}");
    if let Ok(exe) = std::env::current_exe() {
        say!(
            "(`meridian` is {}; from the repository, `cargo run --release -- cli ...` works too.)",
            exe.display()
        );
    }
    if dir.temporary {
        say!("Press Ctrl-C to stop the cluster (its temporary directory is removed then).");
    } else {
        say!(
            "Press Ctrl-C to stop the cluster (its files stay in {}).",
            dir.path.display()
        );
    }
}

fn header(title: &str) {
    say!();
    say!("== {title} ==");
}

/// One expectation of the tour and whether it held.
#[derive(Clone, Debug)]
struct Check {
    step: u8,
    what: String,
    passed: bool,
}

/// What a convergence wait reads.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Counter,
    Set,
    Register,
}

/// A value read from one region, comparable across regions.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Counter(i64),
    Set(Vec<String>),
    Register(Option<String>, Option<WireHlc>),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Counter(v) => write!(f, "{v}"),
            Value::Set(members) => write!(f, "{{{}}}", members.join(", ")),
            Value::Register(None, _) => f.write_str("(empty)"),
            Value::Register(Some(v), _) => write!(f, "{v:?}"),
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads `key` at `level` through `client`.
async fn read(
    client: &Client,
    kind: Kind,
    key: &str,
    level: Consistency,
) -> Result<Value, ClientError> {
    Ok(match kind {
        Kind::Counter => Value::Counter(client.counter(key).read().consistency(level).await?.value),
        Kind::Set => Value::Set(
            client
                .set(key)
                .members()
                .consistency(level)
                .await?
                .value
                .members
                .iter()
                .map(|m| text(m))
                .collect(),
        ),
        Kind::Register => {
            let r = client.register(key).get().consistency(level).await?.value;
            Value::Register(r.value.as_deref().map(text), r.hlc)
        }
    })
}

/// How a region's convergence wait ended: when the expected value showed
/// up (time since `since`), or the last thing it read.
type Arrival = Result<Duration, String>;

/// Polls `key` with `local` reads at each of `regions` until it equals
/// `expected` (bounded by [`CONVERGE_TIMEOUT`]); returns each region's
/// [`Arrival`], timed from `since`.
async fn converge(
    clients: &[Client],
    regions: &[usize],
    kind: Kind,
    key: &str,
    expected: &Value,
    since: Instant,
) -> Vec<Arrival> {
    let handles: Vec<JoinHandle<Arrival>> = regions
        .iter()
        .map(|&r| {
            let client = clients[r].clone();
            let key = key.to_owned();
            let expected = expected.clone();
            tokio::spawn(async move {
                loop {
                    let last = match read(&client, kind, &key, Consistency::Local).await {
                        Ok(v) if v == expected => return Ok(since.elapsed()),
                        Ok(v) => v.to_string(),
                        Err(e) => format!("error: {e}"),
                    };
                    if since.elapsed() > CONVERGE_TIMEOUT {
                        return Err(last);
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(match h.await {
            Ok(a) => a,
            Err(e) => Err(format!("poller failed: {e}")),
        });
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn ms_bare(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// One region's line of a convergence wait: when it read `expected`
/// (timed from `since_what`), or that it did not.
fn arrival_line(region: &str, expected: &Value, a: &Arrival, since_what: &str) -> String {
    match a {
        Ok(d) => format!("  {region:<9} reads {expected} {} {since_what}", ms(*d)),
        Err(last) => format!(
            "  {region:<9} did NOT read {expected} within {} s (last read: {last})",
            CONVERGE_TIMEOUT.as_secs()
        ),
    }
}

/// Nearest-rank percentile `p` (0..=1) of `samples` (sorted in place).
fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// An HLC timestamp as a person reads it: UTC time of day with
/// microseconds, plus the raw 64-bit value (what is compared).
fn hlc_text(hlc: &WireHlc) -> String {
    // NTP64: seconds since 1900 in the high half, a binary fraction below.
    const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;
    let secs = (hlc.time >> 32).saturating_sub(NTP_UNIX_OFFSET_SECS);
    let micros = ((hlc.time & 0xffff_ffff) * 1_000_000) >> 32;
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06} UTC (0x{:016x})",
        day / 3600,
        (day / 60) % 60,
        day % 60,
        micros,
        hlc.time
    )
}

/// The guided tour over a running cluster.
struct Tour<'a> {
    cluster: &'a Cluster,
    sizes: Sizes,
    rng: StdRng,
    checks: Vec<Check>,
    step: u8,
}

impl<'a> Tour<'a> {
    fn new(cluster: &'a Cluster, sizes: Sizes, seed: u64) -> Tour<'a> {
        Tour {
            cluster,
            sizes,
            rng: StdRng::seed_from_u64(seed),
            checks: Vec::new(),
            step: 0,
        }
    }

    fn clients(&self) -> &'a [Client] {
        &self.cluster.clients
    }

    fn client(&self, region: usize) -> &'a Client {
        &self.cluster.clients[region]
    }

    /// Records (and prints) one expectation.
    fn expect(&mut self, passed: bool, what: impl Into<String>) {
        let what = what.into();
        say!("  [{}] {what}", if passed { "PASS" } else { "FAIL" });
        self.checks.push(Check {
            step: self.step,
            what,
            passed,
        });
    }

    /// Runs every step; a step that cannot finish (an unexpected error)
    /// counts as a failed expectation and the tour goes on.
    async fn run(&mut self) {
        self.step = 1;
        if let Err(e) = self.counters().await {
            self.expect(false, format!("step 1 finished (it stopped: {e:#})"));
        }
        self.step = 2;
        if let Err(e) = self.latency().await {
            self.expect(false, format!("step 2 finished (it stopped: {e:#})"));
        }
        self.step = 3;
        if let Err(e) = self.conflicts().await {
            self.expect(false, format!("step 3 finished (it stopped: {e:#})"));
        }
        self.step = 4;
        let result = self.partition().await;
        // Heal whatever happened, so the cluster is whole for --serve.
        self.cluster.isolate("ap-south", false);
        if let Err(e) = result {
            self.expect(false, format!("step 4 finished (it stopped: {e:#})"));
        }
    }

    /// Step 1: concurrent increments converge; single-write convergence.
    async fn counters(&mut self) -> Result<()> {
        header("1. Concurrent counter increments in all three regions");
        let n = self.sizes.increments;
        say!(
            "Each region adds {n} random amounts to the counter \"likes\" at the same moment, \
             with `local` consistency: a write is acknowledged once the region's own node has \
             it on disk; replication to the other regions happens in the background."
        );
        let plans: Vec<Vec<i64>> = REGIONS
            .iter()
            .map(|_| (0..n).map(|_| self.rng.random_range(1..=9)).collect())
            .collect();
        let barrier = Arc::new(Barrier::new(REGIONS.len()));
        let handles: Vec<JoinHandle<Result<(i64, Instant), ClientError>>> = plans
            .iter()
            .enumerate()
            .map(|(i, plan)| {
                let likes = self.client(i).counter("likes");
                let plan = plan.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let mut seen = 0;
                    for delta in plan {
                        seen = likes
                            .incr(delta)
                            .consistency(Consistency::Local)
                            .await?
                            .value;
                    }
                    Ok((seen, Instant::now()))
                })
            })
            .collect();
        let mut last_ack: Option<Instant> = None;
        for (i, h) in handles.into_iter().enumerate() {
            let (seen, acked) = h
                .await
                .context("increment task")?
                .with_context(|| format!("incrementing in {}", REGIONS[i]))?;
            let sum: i64 = plans[i].iter().sum();
            say!(
                "  {:<9} added {sum:>3} in {n} increments, all acknowledged \
                 (its last reply showed {seen})",
                REGIONS[i]
            );
            last_ack = Some(last_ack.map_or(acked, |t| t.max(acked)));
        }
        let last_ack = last_ack.expect("three regions");
        let expected: i64 = plans.iter().flatten().sum();
        let all: Vec<usize> = (0..REGIONS.len()).collect();
        let arrivals = converge(
            self.clients(),
            &all,
            Kind::Counter,
            "likes",
            &Value::Counter(expected),
            last_ack,
        )
        .await;
        say!("  Expected total: {expected}. Polling a `local` read in each region:");
        for (i, a) in arrivals.iter().enumerate() {
            say!(
                "{}",
                arrival_line(
                    REGIONS[i],
                    &Value::Counter(expected),
                    a,
                    "after the last acknowledgement"
                )
            );
        }
        self.expect(
            arrivals.iter().all(Result::is_ok),
            format!(
                "converged: all three regions read likes = {expected}, the sum of every increment"
            ),
        );

        say!();
        say!(
            "Convergence of a single write: from its acknowledgement in one region until a \
             `local` read in another region returns it ({} writes from each region; polls \
             ≤ 1 ms apart):",
            self.sizes.probes
        );
        say!(
            "  {:<9} {:<9} {:>14}  {:>9} {:>9} {:>9}",
            "from",
            "to",
            "one-way delay",
            "median",
            "min",
            "max"
        );
        let mut all_arrived = true;
        let mut near_delay = true;
        for (o, origin) in REGIONS.iter().enumerate() {
            let key = format!("probe/{origin}");
            let others: Vec<usize> = (0..REGIONS.len()).filter(|r| *r != o).collect();
            let mut times: Vec<Vec<Duration>> = vec![Vec::new(); others.len()];
            for _ in 0..self.sizes.probes {
                let value = self
                    .client(o)
                    .counter(key.as_str())
                    .incr(1)
                    .consistency(Consistency::Local)
                    .await
                    .with_context(|| format!("probe write in {origin}"))?
                    .value;
                let acked = Instant::now();
                let arrivals = converge(
                    self.clients(),
                    &others,
                    Kind::Counter,
                    &key,
                    &Value::Counter(value),
                    acked,
                )
                .await;
                for (j, a) in arrivals.into_iter().enumerate() {
                    match a {
                        Ok(d) => times[j].push(d),
                        Err(last) => {
                            all_arrived = false;
                            say!(
                                "  {origin} → {}: a write did not arrive within {} s (last read {last})",
                                REGIONS[others[j]],
                                CONVERGE_TIMEOUT.as_secs()
                            );
                        }
                    }
                }
                // Let the write's acknowledgements settle before the next.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            for (j, &d) in others.iter().enumerate() {
                let t = &mut times[j];
                if t.is_empty() {
                    continue;
                }
                let delay = one_way_ms(origin, REGIONS[d]);
                let median = percentile(t, 0.5);
                // Pushed at once: it arrives about one delay later, not after
                // an anti-entropy round (500 ms).
                if median > Duration::from_millis(delay + 150) {
                    near_delay = false;
                }
                say!(
                    "  {:<9} {:<9} {:>11} ms  {:>9} {:>9} {:>9}",
                    origin,
                    REGIONS[d],
                    delay,
                    ms(median),
                    ms(t[0]),
                    ms(t[t.len() - 1])
                );
            }
        }
        say!(
            "  (A write is pushed to the other regions as soon as it is applied, while its own \
             fsync runs, so it can arrive slightly less than one delay after its \
             acknowledgement.)"
        );
        self.expect(all_arrived, "every single write reached both other regions");
        self.expect(
            near_delay,
            "single writes arrive about one injected delay after acknowledgement \
             (median within delay + 150 ms: pushed at once, not found later by anti-entropy)",
        );
        Ok(())
    }

    /// Step 2: latency per consistency level from each region.
    async fn latency(&mut self) -> Result<()> {
        header("2. Latency per consistency level");
        let samples = self.sizes.latency_samples;
        let key = "latency";
        let placement = self.cluster.nodes[0].mesh().placement().clone();
        let leader = placement
            .preference_list(key.as_bytes())
            .first()
            .map(|n| n.to_string())
            .context("the key has no replicas")?;
        let leader_region = placement
            .region_of(&leader)
            .context("the leader's region")?
            .to_owned();
        say!(
            "Each region sends one request at a time to its own node: {samples} increments of \
             the counter \"{key}\" at each level, then {samples} reads at each level (levels \
             interleaved; regions at the same time). All three nodes replicate every key; the \
             leader of \"{key}\" is {leader} (rendezvous hash of the key)."
        );

        let writes = self.measure(key, samples, true).await?;
        // Let every increment land everywhere, so quorum reads below find
        // equal replicas and measure the read, not a repair.
        let total = Value::Counter((REGIONS.len() * LEVELS.len() * samples) as i64);
        let all: Vec<usize> = (0..REGIONS.len()).collect();
        let arrivals = converge(
            self.clients(),
            &all,
            Kind::Counter,
            key,
            &total,
            Instant::now(),
        )
        .await;
        if let Some(Err(last)) = arrivals.iter().find(|a| a.is_err()) {
            bail!("the latency counter did not converge (last read {last})");
        }
        let reads = self.measure(key, samples, false).await?;

        for (what, table) in [("Writes (counter increment)", &writes), ("Reads", &reads)] {
            say!();
            say!("  {what}, milliseconds, p50 / p99 of {samples} requests:");
            let mut head = format!("  {:<9}", "from");
            for level in LEVELS {
                head.push_str(&format!(" {:>17}", level.as_str()));
            }
            say!("{head}");
            for (r, region) in REGIONS.iter().enumerate() {
                let mut line = format!("  {region:<9}");
                for (l, _) in LEVELS.iter().enumerate() {
                    let mut t = table[r][l].clone();
                    let p50 = percentile(&mut t, 0.5);
                    let p99 = percentile(&mut t, 0.99);
                    line.push_str(&format!(
                        " {:>17}",
                        format!("{} / {}", ms_bare(p50), ms_bare(p99))
                    ));
                }
                say!("{line}");
            }
        }
        say!();
        say!("  Why these numbers (round trip = twice the one-way delay):");
        say!("  - local: the region's own node alone; no WAN round trip.");
        let leader_costs: Vec<String> = REGIONS
            .iter()
            .map(|r| {
                if *r == leader_region {
                    format!("{r}: local")
                } else {
                    format!("{r}: ≈ {} ms", rtt_ms(r, &leader_region))
                }
            })
            .collect();
        say!(
            "  - leader: one round trip to the leader in {leader_region} ({}).",
            leader_costs.join(", ")
        );
        for region in REGIONS {
            let n = nearest(region);
            say!(
                "  - quorum from {region} waits for the nearest majority ({region} + {n}, RTT ≈ {} ms).",
                rtt_ms(region, n)
            );
        }
        for region in REGIONS {
            let f = farthest(region);
            say!(
                "  - all from {region} waits for the farthest replica ({f}, RTT ≈ {} ms).",
                rtt_ms(region, f)
            );
        }
        say!(
            "  - p99 of so few samples is close to the maximum; the writes include the fsync of \
             every replica they wait for."
        );

        // The floors the injected delays set, and local staying off the WAN.
        let smallest_rtt = Duration::from_millis(
            ONE_WAY_DELAYS
                .iter()
                .map(|(_, _, d)| 2 * d)
                .min()
                .expect("delays"),
        );
        let p50 = |table: &Vec<Vec<Vec<Duration>>>, r: usize, l: usize| {
            let mut t = table[r][l].clone();
            percentile(&mut t, 0.5)
        };
        let mut local_fast = true;
        let mut leader_ok = true;
        let mut quorum_ok = true;
        let mut all_ok = true;
        for table in [&writes, &reads] {
            for (r, region) in REGIONS.iter().enumerate() {
                local_fast &= p50(table, r, 0) < smallest_rtt;
                let leader_p50 = p50(table, r, 1);
                leader_ok &= if *region == leader_region {
                    leader_p50 < smallest_rtt
                } else {
                    leader_p50 >= Duration::from_millis(rtt_ms(region, &leader_region))
                };
                quorum_ok &=
                    p50(table, r, 2) >= Duration::from_millis(rtt_ms(region, nearest(region)));
                all_ok &=
                    p50(table, r, 3) >= Duration::from_millis(rtt_ms(region, farthest(region)));
            }
        }
        self.expect(
            local_fast,
            format!(
                "local requests stay off the WAN: p50 below the smallest round trip ({} ms) in every region",
                smallest_rtt.as_millis()
            ),
        );
        self.expect(
            leader_ok,
            format!("leader requests cost one round trip to the leader's region ({leader_region})"),
        );
        self.expect(
            quorum_ok,
            "quorum requests wait for the nearest majority's round trip",
        );
        self.expect(
            all_ok,
            "all requests wait for the farthest replica's round trip",
        );
        Ok(())
    }

    /// `samples` rounds of one request per level from every region at once;
    /// returns latencies by region, then level.
    async fn measure(
        &self,
        key: &str,
        samples: usize,
        write: bool,
    ) -> Result<Vec<Vec<Vec<Duration>>>> {
        let handles: Vec<JoinHandle<Result<Vec<Vec<Duration>>, ClientError>>> = (0..REGIONS.len())
            .map(|r| {
                let counter = self.client(r).counter(key);
                tokio::spawn(async move {
                    let mut by_level = vec![Vec::with_capacity(samples); LEVELS.len()];
                    for _ in 0..samples {
                        for (l, level) in LEVELS.into_iter().enumerate() {
                            let start = Instant::now();
                            if write {
                                counter.incr(1).consistency(level).await?;
                            } else {
                                counter.read().consistency(level).await?;
                            }
                            by_level[l].push(start.elapsed());
                        }
                    }
                    Ok(by_level)
                })
            })
            .collect();
        let mut out = Vec::new();
        for (r, h) in handles.into_iter().enumerate() {
            out.push(h.await.context("latency task")?.with_context(|| {
                format!(
                    "{} in {}",
                    if write { "writing" } else { "reading" },
                    REGIONS[r]
                )
            })?);
        }
        Ok(out)
    }

    /// Step 3: add-wins set, last-writer-wins register.
    async fn conflicts(&mut self) -> Result<()> {
        header("3. Concurrent conflicting writes: an add-wins set and a last-writer-wins register");
        let (us, ap) = (0, 2);
        let all: Vec<usize> = (0..REGIONS.len()).collect();

        // The set: add in us-east concurrently with remove in ap-south.
        let delay = Duration::from_millis(one_way_ms(REGIONS[us], REGIONS[ap]));
        let mut proven = None;
        for attempt in 0..CONCURRENT_ATTEMPTS {
            let key = if attempt == 0 {
                "cart".to_owned()
            } else {
                format!("cart-{}", attempt + 1)
            };
            let cart = |r: usize| self.client(r).set(key.as_str());
            cart(us)
                .add(["apple", "bread"])
                .consistency(Consistency::Local)
                .await
                .context("adding to the set")?;
            let both = Value::Set(vec!["apple".into(), "bread".into()]);
            let arrivals =
                converge(self.clients(), &all, Kind::Set, &key, &both, Instant::now()).await;
            if let Some(Err(last)) = arrivals.iter().find(|a| a.is_err()) {
                bail!("set {key:?} did not reach every region (last read {last})");
            }
            if attempt == 0 {
                say!(
                    "us-east adds apple and bread to the set \"{key}\"; all three regions read {{apple, bread}}."
                );
                say!(
                    "Then, at the same moment, us-east adds apple again while ap-south removes \
                     apple and bread (`local` consistency)."
                );
            }
            let barrier = Arc::new(Barrier::new(2));
            let add = {
                let set = cart(us);
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let start = Instant::now();
                    set.add(["apple"]).consistency(Consistency::Local).await?;
                    Ok::<_, ClientError>((start, Instant::now()))
                })
            };
            let remove = {
                let set = cart(ap);
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let start = Instant::now();
                    set.remove(["apple", "bread"])
                        .consistency(Consistency::Local)
                        .await?;
                    Ok::<_, ClientError>((start, Instant::now()))
                })
            };
            let (add_start, add_ack) = add
                .await
                .context("add task")?
                .context("adding apple in us-east")?;
            let (rm_start, rm_ack) = remove
                .await
                .context("remove task")?
                .context("removing in ap-south")?;
            // Each was applied (acknowledged) before the other could have
            // arrived: neither saw the other.
            if rm_ack < add_start + delay && add_ack < rm_start + delay {
                say!(
                    "  Both were acknowledged within {} of starting, before either could cross \
                     the {} ms to the other region: truly concurrent.",
                    ms(add_ack.max(rm_ack) - add_start.min(rm_start)),
                    delay.as_millis()
                );
                proven = Some(key);
                break;
            }
            say!(
                "  (This machine took too long to make the two writes concurrent; trying again \
                 with a fresh set.)"
            );
        }
        match proven {
            None => self.expect(
                false,
                format!(
                    "add wins (could not issue the add and the remove within {} ms of each other \
                     in {CONCURRENT_ATTEMPTS} attempts: machine too busy)",
                    delay.as_millis()
                ),
            ),
            Some(key) => {
                let expected = Value::Set(vec!["apple".into()]);
                let since = Instant::now();
                let arrivals =
                    converge(self.clients(), &all, Kind::Set, &key, &expected, since).await;
                for (i, a) in arrivals.iter().enumerate() {
                    match a {
                        Ok(_) => say!("  {:<9} reads {expected}", REGIONS[i]),
                        Err(last) => say!("  {:<9} reads {last}", REGIONS[i]),
                    }
                }
                self.expect(
                    arrivals.iter().all(Result::is_ok),
                    "add wins: apple (added in us-east concurrently with its removal in ap-south) \
                     is in the set in every region; bread (removed, no concurrent add) is gone",
                );
            }
        }

        // The register: three concurrent puts; the largest HLC wins.
        say!();
        let palette = [
            "blue", "green", "orange", "purple", "red", "saffron", "teal", "yellow",
        ];
        let mut colors: Vec<&str> = Vec::new();
        while colors.len() < REGIONS.len() {
            let c = palette[self.rng.random_range(0..palette.len())];
            if !colors.contains(&c) {
                colors.push(c);
            }
        }
        say!(
            "At the same moment, each region puts a different value into the register \
             \"color\" (`local` consistency):"
        );
        let barrier = Arc::new(Barrier::new(REGIONS.len()));
        // Each put: when it started, when it was acknowledged, its stamp.
        type Put = (Instant, Instant, Option<WireHlc>);
        let handles: Vec<JoinHandle<Result<Put, ClientError>>> = (0..REGIONS.len())
            .map(|r| {
                let reg = self.client(r).register("color");
                let value = colors[r].to_owned();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let start = Instant::now();
                    let reply = reg.put(value).consistency(Consistency::Local).await?;
                    Ok((start, Instant::now(), reply.value.hlc))
                })
            })
            .collect();
        let mut puts = Vec::new();
        for (r, h) in handles.into_iter().enumerate() {
            let (start, ack, hlc) = h
                .await
                .context("put task")?
                .with_context(|| format!("putting in {}", REGIONS[r]))?;
            let hlc =
                hlc.with_context(|| format!("the put in {} returned no timestamp", REGIONS[r]))?;
            puts.push((start, ack, hlc));
        }
        for (r, (_, _, hlc)) in puts.iter().enumerate() {
            say!(
                "  {:<9} put {:<10} stamped {}",
                REGIONS[r],
                format!("{:?}", colors[r]),
                hlc_text(hlc)
            );
        }
        let concurrent = (0..REGIONS.len()).all(|a| {
            (0..REGIONS.len()).all(|b| {
                a == b
                    || puts[a].1
                        < puts[b].0 + Duration::from_millis(one_way_ms(REGIONS[a], REGIONS[b]))
            })
        });
        if concurrent {
            say!("  Each was acknowledged before the others could arrive: concurrent.");
        }
        let winner = (0..REGIONS.len())
            .max_by_key(|&r| (puts[r].2.time, puts[r].2.node))
            .expect("three puts");
        say!(
            "  The largest timestamp is {}'s {:?} (equal times would be ordered by node id).",
            REGIONS[winner],
            colors[winner]
        );
        let expected = Value::Register(Some(colors[winner].to_owned()), Some(puts[winner].2));
        let arrivals = converge(
            self.clients(),
            &all,
            Kind::Register,
            "color",
            &expected,
            Instant::now(),
        )
        .await;
        for (i, a) in arrivals.iter().enumerate() {
            match a {
                Ok(_) => say!("  {:<9} reads {expected}", REGIONS[i]),
                Err(last) => say!("  {:<9} reads {last}", REGIONS[i]),
            }
        }
        self.expect(
            arrivals.iter().all(Result::is_ok),
            format!(
                "last writer wins: every region reads {:?}, the write with the larger HLC timestamp (LWW winner: {})",
                colors[winner], REGIONS[winner]
            ),
        );
        Ok(())
    }

    /// Step 4: a partition isolates ap-south; heal; converge.
    async fn partition(&mut self) -> Result<()> {
        header("4. A partition isolates ap-south");
        let (us, eu, ap) = (0, 1, 2);
        let key = "visits";
        let all: Vec<usize> = (0..REGIONS.len()).collect();
        let k = self.sizes.partition_writes;

        self.cluster.isolate("ap-south", true);
        let cut = Instant::now();
        say!(
            "Every link between ap-south and the other two regions is cut, in both directions, \
             for {:.1} s (longer than the {:.1} s after which a silent peer counts as down).",
            PARTITION_MS as f64 / 1e3,
            LIVE_TIMEOUT.as_secs_f64()
        );
        let mut acked_minority = 0i64;
        let mut minority_ok = true;
        for _ in 0..k {
            match self
                .client(ap)
                .counter(key)
                .incr(1)
                .consistency(Consistency::Local)
                .await
            {
                Ok(_) => acked_minority += 1,
                Err(e) => {
                    minority_ok = false;
                    say!("  ap-south: a local increment failed: {e}");
                }
            }
        }
        say!("  ap-south: {acked_minority} of {k} `local` increments of \"{key}\" acknowledged.");
        self.expect(
            minority_ok,
            "local writes in ap-south keep succeeding during the partition",
        );

        let quorum = self
            .client(ap)
            .counter(key)
            .incr(1)
            .consistency(Consistency::Quorum)
            .await;
        match &quorum {
            Ok(r) => say!(
                "  ap-south: a `quorum` increment unexpectedly succeeded (value {}).",
                r.value
            ),
            Err(e) => say!(
                "  ap-south: a `quorum` increment fails at once: Unavailable ({e}); {}",
                if e.is_definite() {
                    "definite: it had no effect anywhere"
                } else {
                    "indeterminate"
                }
            ),
        }
        self.expect(
            matches!(quorum, Err(ClientError::Unavailable { .. })),
            "a quorum write in ap-south fails with a clear Unavailable (needs 2 replicas, reaches 1)",
        );

        let mut acked_majority = 0i64;
        let mut majority_ok = true;
        for i in 0..2 * k {
            let r = if i % 2 == 0 { us } else { eu };
            match self
                .client(r)
                .counter(key)
                .incr(1)
                .consistency(Consistency::Quorum)
                .await
            {
                Ok(_) => acked_majority += 1,
                Err(e) => {
                    majority_ok = false;
                    say!("  {}: a quorum increment failed: {e}", REGIONS[r]);
                }
            }
        }
        say!(
            "  us-east and eu-west: {acked_majority} of {} `quorum` increments acknowledged \
             (they are a majority).",
            2 * k
        );
        self.expect(
            majority_ok,
            "quorum writes on the majority side (us-east, eu-west) keep succeeding",
        );
        let mut views = Vec::new();
        for r in all.iter().copied() {
            views.push(read(self.client(r), Kind::Counter, key, Consistency::Local).await?);
        }
        say!(
            "  Meanwhile each side sees only its own writes: `local` reads give us-east {}, \
             eu-west {}, ap-south {}.",
            views[us],
            views[eu],
            views[ap]
        );

        let hold = Duration::from_millis(PARTITION_MS).saturating_sub(cut.elapsed());
        tokio::time::sleep(hold).await;
        self.cluster.isolate("ap-south", false);
        let healed = Instant::now();
        say!(
            "The links are restored after {:.1} s of partition.",
            cut.elapsed().as_secs_f64()
        );
        let live = self.cluster.wait_connected(CONVERGE_TIMEOUT).await;
        match &live {
            Ok(d) => say!("  Every node sees every peer live again after {}.", ms(*d)),
            Err(e) => say!("  {e:#}"),
        }
        say!(
            "  Writes pushed during the partition were dropped with the link; on healing, each \
             side says hello again and pulls what it missed: about three one-way delays \
             (≈ {} ms to eu-west, ≈ {} ms to us-east).",
            3 * one_way_ms("ap-south", "eu-west"),
            3 * one_way_ms("ap-south", "us-east")
        );
        let total = acked_minority + acked_majority;
        let expected = Value::Counter(total);
        let arrivals = converge(self.clients(), &all, Kind::Counter, key, &expected, healed).await;
        for (i, a) in arrivals.iter().enumerate() {
            say!(
                "{}",
                arrival_line(REGIONS[i], &expected, a, "after the links were restored")
            );
        }
        self.expect(
            live.is_ok() && arrivals.iter().all(Result::is_ok),
            format!(
                "converged after heal: every region reads {key} = {total} = {acked_minority} \
                 (ap-south) + {acked_majority} (majority): no acknowledged write was lost"
            ),
        );
        let q = read(self.client(ap), Kind::Counter, key, Consistency::Quorum).await;
        say!(
            "  A `quorum` read from ap-south now returns {}.",
            match &q {
                Ok(v) => v.to_string(),
                Err(e) => format!("an error: {e}"),
            }
        );
        self.expect(
            matches!(q, Ok(Value::Counter(v)) if v == total),
            "quorum works again in ap-south after the heal",
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_symmetric_and_complete() {
        for a in REGIONS {
            for b in REGIONS {
                assert_eq!(one_way_ms(a, b), one_way_ms(b, a));
                assert_eq!(one_way_ms(a, b) == 0, a == b);
            }
        }
        assert_eq!(nearest("ap-south"), "eu-west");
        assert_eq!(farthest("eu-west"), "ap-south");
        assert_eq!(rtt_ms("us-east", "eu-west"), 80);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut t: Vec<Duration> = (1..=40).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut t, 0.5), Duration::from_millis(20));
        assert_eq!(percentile(&mut t, 0.99), Duration::from_millis(40));
        assert_eq!(percentile(&mut [], 0.5), Duration::ZERO);
    }

    #[test]
    fn hlc_reads_as_utc_time_of_day() {
        // 1970-01-01T00:00:01.5 UTC.
        let time = ((2_208_988_800u64 + 1) << 32) | (1 << 31);
        let text = hlc_text(&WireHlc { time, node: 7 });
        assert!(text.starts_with("00:00:01.500000 UTC"), "{text}");
    }
}
