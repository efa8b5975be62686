//! `meridian demo`: a three-region cluster on this machine and a guided
//! tour of what Meridian promises, with measured numbers.
//!
//! The demo starts a cluster with the in-process launcher
//! ([`crate::cluster`]): the real `meridian init` code writes it into a
//! temporary directory (or `--dir`), each node's config gets link
//! conditioning so it delays its messages to each other region by a
//! simulated one-way WAN delay ([`ONE_WAY_DELAYS`], handed in as
//! [`one_way_ms`]), and the three nodes run in this process, on loopback,
//! with the real [`meridian_server::node::Node`] (engine with `sync`
//! durability, QUIC peer mesh, coordinator, client listener). The tour talks to them through
//! the real client ([`meridian_client`]), one client pinned to each region's
//! node; client↔node traffic is local, like an application in that region.
//!
//! Files: this one (arguments, topology, the run), [`cluster`] (the
//! cluster and one client per region), `tour` (the chapters, one file
//! each) and `print` (output helpers).
//!
//! The tour:
//! 1. concurrent counter increments in all regions converge everywhere;
//!    convergence time of single writes next to the injected delay;
//! 2. latency per consistency level from each region (p50, p99);
//! 3. an add-wins set, a last-writer-wins register and a hash (a
//!    register field and a counter field) under concurrent writes;
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
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use meridian_client::Consistency;
use meridian_replication::mesh::LIVE_TIMEOUT;
use meridian_server::config;
use tokio::sync::watch;

use crate::cluster::Workdir;
use cluster::DemoCluster;
use print::{header, print_connect_help, print_intro};
use tour::Tour;

/// The demo's regions, in node order (one node each, `<region>-1`).
pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

/// Simulated one-way delays between regions, in milliseconds: roughly
/// Virginia↔Ireland, Virginia↔Mumbai and Ireland↔Mumbai over real routes.
pub const ONE_WAY_DELAYS: [(&str, &str, u64); 3] = [
    ("us-east", "eu-west", 40),
    ("us-east", "ap-south", 100),
    ("eu-west", "ap-south", 70),
];

/// First ports tried for the cluster (loopback; each node needs
/// [`crate::cluster::PORTS_PER_NODE`] from there). Below Linux's ephemeral range (32768+), so outgoing connections
/// don't take them between the check and the start; several ranges so a
/// second demo (or anything else) on the first one is no problem.
const BASE_PORTS: [u16; 10] = [
    17100, 17400, 17700, 18000, 18300, 18600, 18900, 19200, 19500, 19800,
];

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

mod cluster;
mod print;
mod tour;

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

    let dir = match &args.dir {
        Some(dir) => Workdir::new_or_empty(dir)?,
        None => Workdir::temporary("meridian-demo")?,
    };
    let (path, temporary) = (dir.path().to_owned(), dir.is_temporary());
    let mut stop = watch_signals(temporary.then(|| path.clone()))?;
    let starting = Instant::now();
    let cluster = tokio::select! {
        c = DemoCluster::start(dir) => c?,
        _ = stopped(&mut stop) => bail!("interrupted while starting the cluster"),
    };
    let connected_after = starting.elapsed();
    let durability = match cluster.local.files().config(&node_name(REGIONS[0])) {
        Ok(config) => config.durability(),
        Err(e) => {
            cluster.shutdown().await;
            return Err(e);
        }
    };

    print_intro(&cluster);
    match durability {
        config::Durability::Sync if on_tmpfs(&path) => say!(
            "Durability: sync (the default): a node acknowledges a write only after fsyncing \
             it (group commit). But {} is on tmpfs (memory), where an fsync costs nothing: \
             pass --dir on a disk to include a real disk flush in the numbers below.",
            path.display()
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
        path.display(),
        if temporary {
            "temporary: removed at exit"
        } else {
            "kept at exit"
        }
    );
    say!("Seed: {seed} (`meridian demo --seed {seed}` repeats this tour's random choices)");
    say!();

    let outcome = tokio::select! {
        checks = async {
            say!(
                "Started 3 nodes in {} ms; each is connected to the other two.",
                connected_after.as_millis()
            );
            let mut tour = Tour::new(&cluster, sizes, seed);
            tour.run().await;
            tour.checks
        } => Some(checks),
        _ = stopped(&mut stop) => None,
    };
    let Some(checks) = outcome else {
        say!();
        say!("Interrupted: stopping the demo cluster...");
        cluster.shutdown().await;
        bail!("interrupted; the demo cluster was stopped");
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
        print_connect_help(&path, temporary);
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
    // Stops the nodes, then removes a temporary directory.
    cluster.shutdown().await;
    if temporary {
        say!("Stopped the cluster and removed {}.", path.display());
    } else {
        say!(
            "Stopped the cluster; its files stay in {} (start a node again with \
             `meridian serve --config {}/<node>.toml`).",
            path.display(),
            path.display()
        );
    }
    if failed > 0 {
        bail!("{failed} of {} demo expectations failed", checks.len());
    }
    Ok(())
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
}
