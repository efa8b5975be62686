//! `meridian bench`: the load generator, the side-by-side Redis comparison
//! and the replication benchmarks. A benchmark, never a test: it prints
//! figures and asserts nothing.
//!
//! ```text
//! meridian bench [--target local:N|meridian:PATH/client.toml|redis://HOST:PORT]
//!                [--clients 1,16,64] [--levels local,leader,quorum,all]
//!                [--workload set|get|incr|mixed] [--keys 1000000] [--key-bytes 16]
//!                [--value-bytes 100] [--duration 10s] [--warmup 2s] [--ops N]
//!                [--durability sync|periodic] [--periodic-ms 10] [--node NAME]
//!                [--metrics HOST:PORT] [--json] [--quiet]
//! meridian bench compare --a TARGET --b TARGET [--a-label L] [--b-label L] [--row NAME]
//!                [--rounds 5] [--clients 1,16,64] [--level local] [--a-metrics ADDR] ...
//! meridian bench report FILE.json...        one table from `compare --json` outputs
//! meridian bench convergence [--delays 0,20,50] [--rate 200] [--nodes 3] ...
//! meridian bench geo [--rounds 3] [--clients 4] [--rate 50] ...
//! ```
//!
//! * **load** (no subcommand): for each consistency level and client count,
//!   N closed-loop clients (one connection each, one request in flight)
//!   send the workload for a warm-up and a measured window; prints
//!   throughput and p50/p99/p99.9/max latency from an HDR histogram, with a
//!   progress bar on a terminal. `local:N` starts an in-process N-node
//!   cluster (one region per node) in a temporary directory; workers are
//!   spread over the nodes (or pinned with `--node`).
//! * **compare**: the same load against two targets, alternating A and B
//!   for `--rounds` rounds per client count (ABAB…); reports the median of
//!   each side with its min–max and the ratio of the medians. Both sides
//!   share every line of the load generator except the codec
//!   ([`target::Conn::execute`]). `benches/compare-redis.sh` runs the
//!   Meridian-vs-Redis rows.
//! * **convergence**: an in-process cluster whose every link carries a
//!   one-way delay d; writes at a fixed rate, rotating over the nodes, each
//!   acknowledged locally; for every write and every other node, the time
//!   from the acknowledgement to the value being readable there.
//! * **geo**: the demo topology (us-east, eu-west, ap-south; one-way 40,
//!   100 and 70 ms): local write latency with and without the WAN delay
//!   (alternating rounds), quorum and all write latency from each region
//!   against the round trip to the nearest majority, and convergence per
//!   pair of regions against that pair's delay.
//!
//! Limits: loopback targets only; at most [`MAX_CLIENTS`] clients, runs of
//! at most [`MAX_RUN`], and every loop bounded by count and time.

mod compare;
mod convergence;
mod geo;
mod load;
mod resp;
mod stats;
mod target;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use meridian_client::{ClientConfig, Consistency};
use serde::{Deserialize, Serialize};

use crate::cluster::{self, LocalCluster};
use meridian_server::config::DurabilityMode;
use stats::{RunStats, Table, fmt_ms, fmt_rate};
use target::{Backend, KeySpace, Target, Workload};

/// Most concurrent clients in one run (the node's default connection
/// limit is 1024; each client is one connection).
pub const MAX_CLIENTS: usize = 1_024;
/// Longest warm-up or measured window.
pub const MAX_RUN: Duration = Duration::from_secs(3_600);
/// Default bound on measured operations per run (time usually ends a run
/// first; this bounds it when the server is implausibly fast).
pub const DEFAULT_MAX_OPS: u64 = 1_000_000_000;
/// Most rounds of a comparison.
pub const MAX_ROUNDS: usize = 100;
/// Prefix of every key the load generator writes.
const KEY_PREFIX: &str = "key:";

/// Arguments of `meridian bench`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Alternate A/B rounds of the same load against two targets.
    Compare(Box<compare::CompareArgs>),
    /// Print one table from the JSON of `compare --json` runs.
    Report(compare::ReportArgs),
    /// Time from a local acknowledgement until other nodes can read the
    /// value, under an injected one-way delay.
    Convergence(convergence::ConvergenceArgs),
    /// Latency and convergence on the demo's three-region topology.
    Geo(geo::GeoArgs),
}

/// What to send, how much, for how long (shared by `bench` and `compare`).
#[derive(Clone, Debug, Args)]
pub struct WorkloadArgs {
    /// Operation mix: set (register put / SET), get (register get / GET),
    /// incr (counter incr / INCR), mixed (--read-percent gets, else sets).
    #[arg(long, value_enum, default_value = "set")]
    pub workload: Workload,
    /// Distinct keys, chosen uniformly at random.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Bytes per key.
    #[arg(long, default_value_t = 16)]
    pub key_bytes: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Share of gets in the mixed workload, in percent.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub read_percent: u8,
    /// Measured window per run (e.g. 10s, 500ms, 2m).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Unmeasured warm-up before each run's window.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub warmup: Duration,
    /// At most this many measured operations per run.
    #[arg(long, default_value_t = DEFAULT_MAX_OPS)]
    pub ops: u64,
    /// Request timeout in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub timeout_ms: u32,
    /// Seed of the key choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Durability of in-process (`local:N`) nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchDurability {
    /// Acknowledge after fdatasync (group commit).
    Sync,
    /// Fsync every --periodic-ms.
    Periodic,
}

/// How in-process clusters are configured.
#[derive(Clone, Debug, Args)]
pub struct ClusterArgs {
    /// Durability of in-process nodes (`local:N`, convergence, geo).
    #[arg(long, value_enum, default_value = "sync")]
    pub durability: BenchDurability,
    /// Fsync interval with --durability periodic, in milliseconds.
    #[arg(long, default_value_t = meridian_server::config::DEFAULT_PERIODIC_MS)]
    pub periodic_ms: u64,
}

impl ClusterArgs {
    /// An in-process cluster of one node per region, with this
    /// durability and link conditioning allowed (delays are set later, all
    /// zero at start).
    fn spec(&self, regions: Vec<String>) -> cluster::Spec {
        let periodic_ms = self.periodic_ms;
        cluster::Spec::new(regions)
            .durability(match self.durability {
                BenchDurability::Sync => DurabilityMode::Sync,
                BenchDurability::Periodic => DurabilityMode::Periodic,
            })
            .edit(move |_, f| f.storage.periodic_ms = periodic_ms)
            .link_conditioning(true)
    }
}

/// Arguments of the plain load run (`meridian bench` without subcommand).
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// meridian:PATH/client.toml, redis://HOST:PORT (loopback), or local:N
    /// (an in-process N-node cluster).
    #[arg(long, default_value = "local:1")]
    pub target: Target,
    /// Concurrent clients (one connection each); one run per count.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Meridian consistency levels; one run per level (ignored for Redis).
    #[arg(long, value_delimiter = ',', default_value = "local", value_parser = parse_consistency)]
    pub levels: Vec<Consistency>,
    /// Send every request to this node (default: spread over all nodes).
    #[arg(long)]
    pub node: Option<String>,
    /// A Meridian node's metrics address, to count its fsyncs.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_consistency(s: &str) -> Result<Consistency, String> {
    s.parse()
}

/// Parses `250ms`, `10s`, `1.5s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        return Err(format!("{s:?}: give a unit, e.g. 500ms, 10s, 2m"));
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration"))?;
    let secs = value * scale;
    if !secs.is_finite() || secs < 0.0 || secs > MAX_RUN.as_secs_f64() {
        return Err(format!(
            "{s:?}: must be between 0 and {}s",
            MAX_RUN.as_secs()
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Runs `meridian bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("meridian-bench")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match args.command {
            None => run_load(args.load).await,
            Some(BenchCommand::Compare(a)) => compare::run(*a).await,
            Some(BenchCommand::Report(a)) => compare::report(a),
            Some(BenchCommand::Convergence(a)) => convergence::run(a).await,
            Some(BenchCommand::Geo(a)) => geo::run(a).await,
        }
    })
}

/// Checks the client counts.
fn check_clients(clients: &[usize]) -> Result<()> {
    if clients.is_empty() || clients.iter().any(|&c| c == 0 || c > MAX_CLIENTS) {
        bail!("--clients: each count must be between 1 and {MAX_CLIENTS}");
    }
    Ok(())
}

impl WorkloadArgs {
    fn keyspace(&self) -> Result<KeySpace> {
        if self.value_bytes > meridian_client::wire::MAX_VALUE_BYTES {
            bail!(
                "--value-bytes {} exceeds the {}-byte value limit",
                self.value_bytes,
                meridian_client::wire::MAX_VALUE_BYTES
            );
        }
        if self.timeout_ms == 0 {
            bail!("--timeout-ms must be at least 1");
        }
        KeySpace::new(KEY_PREFIX, self.keys, self.key_bytes).map_err(anyhow::Error::msg)
    }

    fn spec(&self, clients: usize, level: Consistency) -> Result<load::LoadSpec> {
        Ok(load::LoadSpec {
            workload: self.workload,
            keys: self.keyspace()?,
            value_bytes: self.value_bytes,
            read_percent: self.read_percent,
            clients,
            level,
            timeout_ms: self.timeout_ms,
            warmup: self.warmup,
            duration: self.duration,
            max_ops: self.ops,
            seed: self.seed,
        })
    }
}

/// A target made ready: the backend, the in-process cluster if one was
/// started (shut down by [`ReadyTarget::close`]), and where to count fsyncs.
#[derive(Debug)]
pub(crate) struct ReadyTarget {
    pub backend: Backend,
    pub cluster: Option<LocalCluster>,
    pub metrics: Option<SocketAddr>,
}

impl ReadyTarget {
    /// Starts what `target` needs.
    pub async fn new(
        target: &Target,
        node: Option<&str>,
        metrics: Option<SocketAddr>,
        cluster: &ClusterArgs,
    ) -> Result<ReadyTarget> {
        if let Some(m) = metrics {
            target::check_loopback(m.ip()).map_err(anyhow::Error::msg)?;
        }
        let meridian = |config: &ClientConfig| -> Result<Backend> {
            let nodes: Vec<String> = match node {
                Some(n) => {
                    if !config.nodes.iter().any(|e| e.name == n || e.address == n) {
                        bail!("--node {n}: no such node in the client config");
                    }
                    vec![n.to_owned()]
                }
                None => config.nodes.iter().map(|e| e.name.clone()).collect(),
            };
            Ok(Backend::Meridian {
                config: config.clone(),
                nodes,
            })
        };
        match target {
            Target::Redis(addr) => Ok(ReadyTarget {
                backend: Backend::Redis(*addr),
                cluster: None,
                metrics: None,
            }),
            Target::Meridian(path) => {
                let config = ClientConfig::load(path)?;
                target::check_config_loopback(&config)?;
                Ok(ReadyTarget {
                    backend: meridian(&config)?,
                    cluster: None,
                    metrics,
                })
            }
            Target::Local(n) => {
                let spec = cluster.spec((1..=*n).map(|i| format!("r{i}")).collect());
                let started = LocalCluster::start(&spec).await?;
                let backend = match meridian(started.client_config()) {
                    Ok(b) => b,
                    Err(e) => {
                        stop(started).await;
                        return Err(e);
                    }
                };
                Ok(ReadyTarget {
                    backend,
                    cluster: Some(started),
                    metrics,
                })
            }
        }
    }

    /// Fsyncs so far, when they can be counted: an in-process single node,
    /// or a node whose metrics address was given.
    pub async fn fsyncs(&self) -> Option<u64> {
        if let Some(m) = self.metrics {
            return match scrape_fsyncs(m).await {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot read fsyncs from {m}");
                    None
                }
            };
        }
        match &self.cluster {
            Some(c) if c.node_names().len() == 1 => Some(c.fsyncs()),
            _ => None,
        }
    }

    /// Runs one load and fills in the fsync figures.
    pub async fn run(
        &self,
        spec: &load::LoadSpec,
        label: &str,
        progress: bool,
    ) -> Result<RunStats> {
        let before = self.fsyncs().await;
        let outcome = load::run(&self.backend, spec, label, progress).await?;
        let after = self.fsyncs().await;
        let mut stats = outcome.stats;
        if let (Some(b), Some(a)) = (before, after) {
            let fsyncs = a.saturating_sub(b);
            stats.fsyncs = Some(fsyncs);
            stats.ops_per_fsync = stats::ratio(outcome.total_ops as f64, fsyncs as f64);
        }
        Ok(stats)
    }

    /// Stops the in-process cluster, if any.
    pub async fn close(self) {
        if let Some(c) = self.cluster {
            stop(c).await;
        }
    }
}

/// Largest metrics page read, in bytes.
const MAX_METRICS_BYTES: u64 = 4 << 20;
/// Bound on one metrics scrape.
const METRICS_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads `meridian_log_fsyncs_total` from a node's Prometheus endpoint.
async fn scrape_fsyncs(addr: SocketAddr) -> Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = tokio::time::timeout(METRICS_TIMEOUT, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await?;
        let mut body = Vec::new();
        stream
            .take(MAX_METRICS_BYTES)
            .read_to_end(&mut body)
            .await?;
        Ok::<_, std::io::Error>(body)
    })
    .await
    .context("metrics scrape timed out")??;
    metric_value(&String::from_utf8_lossy(&body), "meridian_log_fsyncs_total")
        .map(|v| v as u64)
        .with_context(|| format!("{addr} serves no meridian_log_fsyncs_total"))
}

/// The value of an unlabelled Prometheus sample `name` in `text`.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// One row of the load run's output.
#[derive(Debug, Serialize)]
struct LoadRow {
    target: String,
    workload: Workload,
    level: Option<String>,
    clients: usize,
    stats: RunStats,
}

async fn run_load(args: LoadArgs) -> Result<()> {
    check_clients(&args.clients)?;
    if args.levels.is_empty() {
        bail!("--levels: name at least one level");
    }
    args.workload.keyspace()?;
    let prepared = ReadyTarget::new(
        &args.target,
        args.node.as_deref(),
        args.metrics,
        &args.cluster,
    )
    .await?;
    let levels: Vec<Option<Consistency>> = if prepared.backend.is_redis() {
        vec![None]
    } else {
        args.levels.iter().copied().map(Some).collect()
    };
    let mut rows = Vec::new();
    let mut result = Ok(());
    'runs: for level in &levels {
        for &clients in &args.clients {
            let spec = match args
                .workload
                .spec(clients, level.unwrap_or(Consistency::Local))
            {
                Ok(s) => s,
                Err(e) => {
                    result = Err(e);
                    break 'runs;
                }
            };
            let label = format!(
                "{} {} c{clients}",
                args.target,
                level.map_or("-".to_owned(), |l| l.to_string())
            );
            match prepared.run(&spec, &label, !args.quiet).await {
                Ok(stats) => {
                    if !args.json {
                        eprintln!(
                            "{label}: {} ops/s, p50 {} ms, p99 {} ms",
                            fmt_rate(stats.throughput),
                            fmt_ms(stats.latency.p50_us as f64),
                            fmt_ms(stats.latency.p99_us as f64)
                        );
                    }
                    rows.push(LoadRow {
                        target: args.target.to_string(),
                        workload: args.workload.workload,
                        level: level.map(|l| l.to_string()),
                        clients,
                        stats,
                    });
                }
                Err(e) => {
                    result = Err(e);
                    break 'runs;
                }
            }
        }
    }
    prepared.close().await;
    result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", load_table(&rows).render());
    }
    Ok(())
}

fn load_table(rows: &[LoadRow]) -> Table {
    let mut t = Table::new(&[
        "target",
        "workload",
        "level",
        "clients",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        "ops/fsync",
    ]);
    for r in rows {
        let s = &r.stats;
        t.row(vec![
            r.target.clone(),
            format!("{:?}", r.workload).to_lowercase(),
            r.level.clone().unwrap_or_else(|| "-".into()),
            r.clients.to_string(),
            fmt_rate(s.throughput),
            fmt_ms(s.latency.p50_us as f64),
            fmt_ms(s.latency.p99_us as f64),
            fmt_ms(s.latency.p999_us as f64),
            fmt_ms(s.latency.max_us as f64),
            s.errors.to_string(),
            s.ops_per_fsync.map_or("-".into(), |r| format!("{r:.1}")),
        ]);
    }
    t
}

/// Stops an in-process cluster and removes its directory; a node that
/// fails to stop cleanly is logged, not an error of the benchmark.
pub(crate) async fn stop(cluster: LocalCluster) {
    if let Err(e) = cluster.shutdown().await {
        tracing::warn!(error = %format!("{e:#}"), "local cluster shutdown failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        for bad in ["10", "-1s", "xs", "2h", "61m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prometheus_samples_are_found_by_exact_name() {
        let text = "# HELP meridian_log_fsyncs_total x\n\
                    meridian_log_fsyncs_total_other 9\n\
                    meridian_log_fsyncs_total 1234\n";
        assert_eq!(
            metric_value(text, "meridian_log_fsyncs_total"),
            Some(1234.0)
        );
        assert_eq!(metric_value(text, "missing"), None);
    }

    #[test]
    fn load_rows_render_as_a_table() {
        let mut stats = RunStats {
            ops: 100,
            throughput: 12_345.0,
            ops_per_fsync: Some(7.3),
            ..RunStats::default()
        };
        stats.latency.p50_us = 412;
        stats.latency.p99_us = 1_500;
        let rows = [LoadRow {
            target: "local:1".into(),
            workload: Workload::Set,
            level: Some("local".into()),
            clients: 16,
            stats,
        }];
        let text = load_table(&rows).render();
        let line = text.lines().nth(1).unwrap();
        for cell in ["local:1", "set", "16", "12.3k", "0.412", "1.500", "7.3"] {
            assert!(line.contains(cell), "{cell} missing from {line:?}");
        }
    }

    #[test]
    fn client_counts_are_bounded() {
        assert!(check_clients(&[1, 16, 64]).is_ok());
        assert!(check_clients(&[]).is_err());
        assert!(check_clients(&[0]).is_err());
        assert!(check_clients(&[MAX_CLIENTS + 1]).is_err());
    }
}
