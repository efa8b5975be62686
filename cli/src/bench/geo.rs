//! `meridian bench geo`: the demo topology — us-east, eu-west, ap-south,
//! one node each, one-way delays us-east↔eu-west 40 ms, us-east↔ap-south
//! 100 ms, eu-west↔ap-south 70 ms (the mesh's link conditioning, both
//! directions) — in one process. Three measurements:
//!
//! 1. **Local writes with and without WAN delay**: `--clients` closed-loop
//!    writers at `local` on us-east-1, alternating rounds with the delays
//!    off and on. Replication must stay off the acknowledgement path, so
//!    the target is p50(on)/p50(off) ≤ 1.1 (and p99 ≤ 1.2).
//! 2. **Quorum (and all) writes from each region** against the floor: the
//!    round trip to the nearest majority (for `quorum` with N = 3, the
//!    nearest other region; for `all`, the farthest). Target: p50 ≤ floor
//!    + 2 ms.
//! 3. **Convergence per pair of regions**: writes at `--rate` rotating
//!    over the regions (see [`super::convergence`]); per (origin,
//!    observer) pair, p50 and p99 minus that pair's one-way delay.
//!    Targets: p50 − d ≤ 2 ms, p99 − d ≤ max(10 ms, 0.1·d).
//!
//! Nothing is asserted: the tables mark each target ok or MISS.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use meridian_client::Consistency;
use serde::Serialize;

use super::convergence::{self, ConvergenceRow, ConvergenceSpec};
use super::load::{self, LoadSpec};
use super::stats::{Latency, RunStats, Table, fmt_ms, fmt_ratio, fmt_signed_ms, median, ratio};
use super::target::{Backend, KeySpace, Workload};
use super::{ClusterArgs, DEFAULT_MAX_OPS, MAX_CLIENTS, MAX_ROUNDS, parse_duration};
use crate::cluster::LocalCluster;

/// The demo's topology: its regions (in node order) and its one-way
/// delays between them, in milliseconds (0 within a region).
pub use crate::demo::{REGIONS, one_way_ms as demo_delay_ms};

/// Pause after changing delays, so messages sent under the old ones land.
const SETTLE: Duration = Duration::from_millis(500);

/// Target ratios of local write latency with / without WAN delay.
const LOCAL_P50_RATIO_TARGET: f64 = 1.1;
const LOCAL_P99_RATIO_TARGET: f64 = 1.2;
/// Allowed excess of a quorum write's p50 over its round-trip floor, in µs.
const QUORUM_EXCESS_TARGET_US: f64 = 2_000.0;

/// The round trip a write from `region` at `level` must wait for at least:
/// the RTT to the remote replica whose ack completes the level (N = 3 demo
/// regions, symmetric delays), in milliseconds.
pub fn floor_ms(region: &str, level: Consistency) -> u64 {
    let mut rtts: Vec<u64> = REGIONS
        .iter()
        .filter(|r| **r != region)
        .map(|r| 2 * demo_delay_ms(region, r))
        .collect();
    rtts.sort_unstable();
    // A level the regions cannot serve (`replicas-4` of 3) has no floor:
    // it is refused before any round trip.
    let remote = level
        .replicas_needed(REGIONS.len())
        .map_or(0, |n| n.saturating_sub(1));
    if remote == 0 { 0 } else { rtts[remote - 1] }
}

/// Arguments of `meridian bench geo`.
#[derive(Debug, Args)]
pub struct GeoArgs {
    /// Rounds of the local-write comparison (each: delays off, then on).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Measured window of each run.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub duration: Duration,
    /// Warm-up before each run.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Closed-loop writers in the latency runs.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Writes per second in the convergence run.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Convergence observer poll interval, in microseconds.
    #[arg(long, default_value_t = 200)]
    pub poll_us: u64,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Local writes with and without WAN delay.
#[derive(Debug, Serialize)]
pub struct LocalIsolation {
    pub node: String,
    pub clients: usize,
    pub without_delay: Vec<RunStats>,
    pub with_delay: Vec<RunStats>,
    pub p50_without_us: f64,
    pub p50_with_us: f64,
    pub p99_without_us: f64,
    pub p99_with_us: f64,
    pub p50_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
}

/// Quorum or all writes from one region.
#[derive(Debug, Serialize)]
pub struct QuorumRow {
    pub region: String,
    pub level: String,
    pub floor_ms: u64,
    pub stats: RunStats,
    pub p50_excess_us: f64,
    pub target_met: bool,
}

/// Convergence between two regions.
#[derive(Debug, Serialize)]
pub struct PairRow {
    pub origin: String,
    pub observer: String,
    pub row: ConvergenceRow,
}

/// Everything `geo` measured.
#[derive(Debug, Serialize)]
pub struct GeoReport {
    pub local: LocalIsolation,
    pub quorum: Vec<QuorumRow>,
    pub convergence: Vec<PairRow>,
}

fn spec(args: &GeoArgs, level: Consistency, seed: u64) -> Result<LoadSpec> {
    Ok(LoadSpec {
        workload: Workload::Set,
        keys: KeySpace::new("geo:", 100_000, 16).map_err(anyhow::Error::msg)?,
        value_bytes: 100,
        read_percent: 0,
        clients: args.clients,
        level,
        timeout_ms: 5_000,
        warmup: args.warmup,
        duration: args.duration,
        max_ops: DEFAULT_MAX_OPS,
        seed,
    })
}

async fn set_wan(cluster: &LocalCluster, on: bool) {
    cluster.set_delays(|a, b| if on { demo_delay_ms(a, b) } else { 0 });
    tokio::time::sleep(SETTLE).await;
}

/// Runs `meridian bench geo`.
pub async fn run(args: GeoArgs) -> Result<()> {
    if args.rounds == 0 || args.rounds > MAX_ROUNDS {
        bail!("--rounds must be between 1 and {MAX_ROUNDS}");
    }
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        bail!("--clients must be between 1 and {MAX_CLIENTS}");
    }
    let cluster = LocalCluster::start(
        &args
            .cluster
            .spec(REGIONS.iter().map(|r| (*r).to_owned()).collect()),
    )
    .await?;
    let report = measure(&args, &cluster).await;
    super::stop(cluster).await;
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&args, &report));
    }
    Ok(())
}

async fn measure(args: &GeoArgs, cluster: &LocalCluster) -> Result<GeoReport> {
    let names = cluster.node_names();
    let regions = cluster.regions();
    let config = cluster.client_config().clone();
    let pinned = |i: usize| Backend::Meridian {
        config: config.clone(),
        nodes: vec![names[i].clone()],
    };
    let progress = !args.quiet;

    // 1. Local writes on us-east-1, delays off and on, alternating.
    let mut without_delay = Vec::new();
    let mut with_delay = Vec::new();
    for round in 1..=args.rounds {
        for on in [false, true] {
            set_wan(cluster, on).await;
            let label = format!(
                "geo local {} round {round}/{}: WAN {}",
                names[0],
                args.rounds,
                if on { "on" } else { "off" }
            );
            let outcome = load::run(
                &pinned(0),
                &spec(args, Consistency::Local, round as u64)?,
                &label,
                progress,
            )
            .await?;
            eprintln!(
                "{label}: p50 {} ms, p99 {} ms",
                fmt_ms(outcome.stats.latency.p50_us as f64),
                fmt_ms(outcome.stats.latency.p99_us as f64)
            );
            if on {
                with_delay.push(outcome.stats);
            } else {
                without_delay.push(outcome.stats);
            }
        }
    }
    let med = |runs: &[RunStats], f: fn(&Latency) -> u64| {
        median(
            &runs
                .iter()
                .map(|r| f(&r.latency) as f64)
                .collect::<Vec<_>>(),
        )
    };
    let (p50_without_us, p50_with_us) = (
        med(&without_delay, |l| l.p50_us),
        med(&with_delay, |l| l.p50_us),
    );
    let (p99_without_us, p99_with_us) = (
        med(&without_delay, |l| l.p99_us),
        med(&with_delay, |l| l.p99_us),
    );
    let local = LocalIsolation {
        node: names[0].clone(),
        clients: args.clients,
        p50_ratio: ratio(p50_with_us, p50_without_us),
        p99_ratio: ratio(p99_with_us, p99_without_us),
        without_delay,
        with_delay,
        p50_without_us,
        p50_with_us,
        p99_without_us,
        p99_with_us,
    };

    // 2. Quorum and all writes from each region, delays on.
    set_wan(cluster, true).await;
    let mut quorum = Vec::new();
    for level in [Consistency::Quorum, Consistency::All] {
        for (i, region) in regions.iter().enumerate() {
            let label = format!("geo {level} writes from {region}");
            let outcome = load::run(
                &pinned(i),
                &spec(args, level, 100 + i as u64)?,
                &label,
                progress,
            )
            .await?;
            let floor = floor_ms(region, level);
            let excess = outcome.stats.latency.p50_us as f64 - floor as f64 * 1000.0;
            eprintln!(
                "{label}: p50 {} ms (floor {floor} ms)",
                fmt_ms(outcome.stats.latency.p50_us as f64)
            );
            quorum.push(QuorumRow {
                region: region.clone(),
                level: level.to_string(),
                floor_ms: floor,
                target_met: outcome.stats.ops > 0 && excess <= QUORUM_EXCESS_TARGET_US,
                p50_excess_us: excess,
                stats: outcome.stats,
            });
        }
    }

    // 3. Convergence per pair, delays on.
    let conv = ConvergenceSpec {
        rate: args.rate,
        warmup: args.warmup,
        duration: args.duration,
        value_bytes: 100,
        poll: Duration::from_micros(args.poll_us),
        key_prefix: "geo/conv/".into(),
    };
    let outcome = convergence::measure(cluster, &conv, "geo convergence", progress).await?;
    let mut pairs = Vec::new();
    for (o, origin) in regions.iter().enumerate() {
        for (j, observer) in regions.iter().enumerate() {
            if o == j {
                continue;
            }
            pairs.push(PairRow {
                origin: origin.clone(),
                observer: observer.clone(),
                row: ConvergenceRow::new(
                    demo_delay_ms(origin, observer),
                    args.rate,
                    &outcome,
                    &outcome.pairs[o][j],
                ),
            });
        }
    }
    Ok(GeoReport {
        local,
        quorum,
        convergence: pairs,
    })
}

fn mark(met: bool) -> &'static str {
    if met { "ok" } else { "MISS" }
}

/// The three tables.
pub fn render(args: &GeoArgs, r: &GeoReport) -> String {
    let mut out = format!(
        "geo: us-east, eu-west, ap-south (one-way 40/100/70 ms), {:?} durability, \
         {} clients, {} rounds of {}s\n\n",
        args.cluster.durability,
        args.clients,
        args.rounds,
        args.duration.as_secs_f64()
    );
    let l = &r.local;
    let mut t = Table::new(&[
        "local writes on",
        "p50 no WAN",
        "p50 WAN",
        "ratio (≤1.1)",
        "p99 no WAN",
        "p99 WAN",
        "ratio (≤1.2)",
    ]);
    let ratio_cell = |x: Option<f64>, target: f64| {
        format!("{} {}", fmt_ratio(x), mark(x.is_some_and(|x| x <= target)))
    };
    t.row(vec![
        l.node.clone(),
        fmt_ms(l.p50_without_us),
        fmt_ms(l.p50_with_us),
        ratio_cell(l.p50_ratio, LOCAL_P50_RATIO_TARGET),
        fmt_ms(l.p99_without_us),
        fmt_ms(l.p99_with_us),
        ratio_cell(l.p99_ratio, LOCAL_P99_RATIO_TARGET),
    ]);
    out.push_str(&t.render());
    out.push('\n');

    let mut t = Table::new(&[
        "writes from",
        "level",
        "RTT floor ms",
        "p50 ms",
        "p99 ms",
        "p50−floor",
        "≤2 ms",
        "ops",
        "errors",
    ]);
    for q in &r.quorum {
        t.row(vec![
            q.region.clone(),
            q.level.clone(),
            q.floor_ms.to_string(),
            fmt_ms(q.stats.latency.p50_us as f64),
            fmt_ms(q.stats.latency.p99_us as f64),
            fmt_signed_ms(q.p50_excess_us),
            mark(q.target_met).into(),
            q.stats.ops.to_string(),
            q.stats.errors.to_string(),
        ]);
    }
    out.push_str(&t.render());
    out.push('\n');

    let mut t = Table::new(&[
        "from",
        "to",
        "d ms",
        "samples",
        "p50 ms",
        "p99 ms",
        "p50−d",
        "≤2 ms",
        "p99−d",
        "≤max(10,0.1d)",
        "unseen",
    ]);
    for p in &r.convergence {
        let c = &p.row;
        t.row(vec![
            p.origin.clone(),
            p.observer.clone(),
            c.delay_ms.to_string(),
            c.samples.to_string(),
            fmt_ms(c.convergence.p50_us as f64),
            fmt_ms(c.convergence.p99_us as f64),
            fmt_signed_ms(c.p50_excess_us),
            mark(c.p50_target_met).into(),
            fmt_signed_ms(c.p99_excess_us),
            mark(c.p99_target_met).into(),
            c.unseen.to_string(),
        ]);
    }
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_symmetric_and_floors_follow_quorums() {
        assert_eq!(demo_delay_ms("eu-west", "us-east"), 40);
        assert_eq!(demo_delay_ms("ap-south", "eu-west"), 70);
        assert_eq!(demo_delay_ms("us-east", "us-east"), 0);
        // Quorum of 3: the nearest other region's RTT.
        assert_eq!(floor_ms("us-east", Consistency::Quorum), 80);
        assert_eq!(floor_ms("eu-west", Consistency::Quorum), 80);
        assert_eq!(floor_ms("ap-south", Consistency::Quorum), 140);
        // All: the farthest.
        assert_eq!(floor_ms("us-east", Consistency::All), 200);
        assert_eq!(floor_ms("ap-south", Consistency::All), 200);
        assert_eq!(floor_ms("eu-west", Consistency::All), 140);
        assert_eq!(floor_ms("eu-west", Consistency::Local), 0);
    }
}
