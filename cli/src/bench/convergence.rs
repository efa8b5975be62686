//! `meridian bench convergence`: how long after a local acknowledgement a
//! write is readable on the other nodes, with an injected one-way delay d
//! on every link.
//!
//! Method (one process, one monotonic clock):
//!
//! * An in-process cluster, one region per node; the mesh's link
//!   conditioning adds d to every message between regions.
//! * Writes at a fixed rate (open loop, `--rate` per second over the whole
//!   cluster), rotating over the nodes, each a register put of a fresh key
//!   at `local` consistency through the real client (QUIC). The
//!   acknowledgement time is when the client has the reply.
//! * An observer thread polls every other node's engine directly (what a
//!   `local` read there would return, without a network hop) every
//!   `--poll-us`; the sample is (first poll that sees the value) − (ack).
//!   The poll interval bounds the error: a sample is late by at most one
//!   interval plus the cost of a scan. A value visible before the ack (the
//!   delta is pushed to peers while the local fsync runs) counts as 0.
//! * Targets (issue): p50 − d ≤ 2 ms and p99 − d ≤ max(10 ms, 0.1·d) at
//!   moderate load. The table marks each; nothing is asserted.
//!
//! Every loop is bounded: writes by count and time, the observer by a
//! deadline after the last write ([`UNSEEN_AFTER`]); writes not seen by
//! then are reported as unseen.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use meridian_client::{Client, Consistency};
use meridian_engine::{Engine, Kind, ObjectKey, Value};
use serde::Serialize;

use super::stats::{self, Latency, Table, fmt_ms, fmt_signed_ms};
use super::{ClusterArgs, parse_duration};
use crate::cluster::LocalCluster;

/// A write not readable everywhere this long after its ack is given up on
/// (reported as unseen; catch-up would deliver it eventually).
pub const UNSEEN_AFTER: Duration = Duration::from_secs(10);
/// Most writes in flight at once; a tick that finds them all busy is
/// skipped (counted), so a stalled node can't pile up tasks.
const MAX_IN_FLIGHT_WRITES: usize = 512;
/// Highest write rate accepted, per second.
const MAX_RATE: f64 = 100_000.0;
/// Largest injected delay, in milliseconds.
const MAX_DELAY_MS: u64 = 10_000;
/// Shortest and longest observer poll interval, in microseconds.
const POLL_US_RANGE: std::ops::RangeInclusive<u64> = 50..=100_000;
/// Request timeout of the measured writes, in milliseconds.
const WRITE_TIMEOUT_MS: u64 = 5_000;

/// Arguments of `meridian bench convergence`.
#[derive(Debug, Args)]
pub struct ConvergenceArgs {
    /// One-way delays to inject on every link, in milliseconds.
    #[arg(long, value_delimiter = ',', default_value = "0,20,50")]
    pub delays: Vec<u64>,
    /// Nodes (one region each).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Writes per second over the whole cluster.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Measured window per delay.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Unmeasured writes before each window.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Observer poll interval, in microseconds.
    #[arg(long, default_value_t = 200)]
    pub poll_us: u64,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// One measurement's parameters.
#[derive(Clone, Debug)]
pub struct ConvergenceSpec {
    pub rate: f64,
    pub warmup: Duration,
    pub duration: Duration,
    pub value_bytes: usize,
    pub poll: Duration,
    /// Prefix of this measurement's keys (fresh per measurement).
    pub key_prefix: String,
}

impl ConvergenceSpec {
    pub fn check(&self) -> Result<()> {
        if !(self.rate > 0.0 && self.rate <= MAX_RATE) {
            bail!("--rate must be above 0 and at most {MAX_RATE}");
        }
        if self.value_bytes > meridian_client::wire::MAX_VALUE_BYTES {
            bail!("--value-bytes is over the value limit");
        }
        let poll_us = self.poll.as_micros() as u64;
        if !POLL_US_RANGE.contains(&poll_us) {
            bail!(
                "--poll-us must be between {} and {}",
                POLL_US_RANGE.start(),
                POLL_US_RANGE.end()
            );
        }
        Ok(())
    }
}

/// What one measurement saw.
#[derive(Debug)]
pub struct ConvergenceOutcome {
    /// Measured writes acknowledged.
    pub writes: u64,
    pub write_errors: u64,
    /// Ticks skipped because [`MAX_IN_FLIGHT_WRITES`] were in flight.
    pub skipped: u64,
    /// Acknowledgement latency of the measured writes.
    pub ack: Histogram<u64>,
    /// `pairs[origin][observer]`: convergence samples.
    pub pairs: Vec<Vec<Histogram<u64>>>,
    /// (write, node) pairs never seen within [`UNSEEN_AFTER`].
    pub unseen: u64,
    /// Samples where the value was readable before the ack (recorded as 0).
    pub before_ack: u64,
    /// Length of the measured window, in seconds.
    pub window_s: f64,
    /// Realtime pushes the mesh dropped during the run (those writes
    /// travel by pull instead, later).
    pub pushes_dropped: u64,
}

impl ConvergenceOutcome {
    /// Every pair's samples in one histogram.
    pub fn all(&self) -> Histogram<u64> {
        let mut h = stats::histogram();
        for row in &self.pairs {
            for p in row {
                h.add(p).expect("same bounds");
            }
        }
        h
    }
}

/// A write waiting to be seen everywhere.
struct Pending {
    key: ObjectKey,
    origin: usize,
    acked: Instant,
    /// Per node: seen yet (the origin counts as seen).
    seen: Vec<bool>,
    measured: bool,
}

struct Observed {
    pairs: Vec<Vec<Histogram<u64>>>,
    unseen: u64,
    before_ack: u64,
}

/// Whether `engine` holds a value for the register `key`.
fn readable(engine: &Engine, key: &ObjectKey) -> bool {
    matches!(
        engine.read(key),
        Ok(Value::Register(Some(r))) if r.value.is_some()
    )
}

/// The observer: polls until `stop` is set and nothing is pending, or the
/// hard deadline passes.
fn observe(
    engines: Vec<Engine>,
    inbox: Arc<Mutex<Vec<Pending>>>,
    stop: Arc<AtomicBool>,
    poll: Duration,
    hard_deadline: Instant,
) -> Observed {
    let n = engines.len();
    let mut out = Observed {
        pairs: (0..n)
            .map(|_| (0..n).map(|_| stats::histogram()).collect())
            .collect(),
        unseen: 0,
        before_ack: 0,
    };
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        pending.append(&mut inbox.lock().unwrap());
        for p in &mut pending {
            for (j, engine) in engines.iter().enumerate() {
                if p.seen[j] {
                    continue;
                }
                let at = Instant::now();
                if readable(engine, &p.key) {
                    p.seen[j] = true;
                    if p.measured {
                        match at.checked_duration_since(p.acked) {
                            Some(d) => stats::record(&mut out.pairs[p.origin][j], d),
                            None => {
                                // Readable before the ack arrived.
                                out.before_ack += 1;
                                stats::record(&mut out.pairs[p.origin][j], Duration::ZERO);
                            }
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        pending.retain(|p| {
            let done = p.seen.iter().all(|&s| s);
            if !done && now.duration_since(p.acked) > UNSEEN_AFTER {
                if p.measured {
                    out.unseen += p.seen.iter().filter(|&&s| !s).count() as u64;
                }
                return false;
            }
            !done
        });
        let stopping = stop.load(Ordering::Acquire);
        if stopping && pending.is_empty() && inbox.lock().unwrap().is_empty() {
            break;
        }
        if now >= hard_deadline {
            for p in pending.iter().filter(|p| p.measured) {
                out.unseen += p.seen.iter().filter(|&&s| !s).count() as u64;
            }
            break;
        }
        std::thread::sleep(poll);
    }
    out
}

/// Measures convergence on `cluster` as it is (delays already set).
pub async fn measure(
    cluster: &LocalCluster,
    spec: &ConvergenceSpec,
    label: &str,
    show_progress: bool,
) -> Result<ConvergenceOutcome> {
    spec.check()?;
    let names = cluster.node_names();
    let n = names.len();
    let mut clients = Vec::with_capacity(n);
    for name in &names {
        let client = Client::connect(cluster.client_config().clone().pinned(name))
            .await
            .with_context(|| format!("connecting to {name}"))?;
        clients.push(client);
    }
    let dropped_before = cluster.pushes_dropped();
    let inbox: Arc<Mutex<Vec<Pending>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let begin = Instant::now();
    let warmup_end = begin + spec.warmup;
    let end = warmup_end + spec.duration;
    let observer = {
        let engines = cluster.engines();
        let (inbox, stop) = (inbox.clone(), stop.clone());
        let poll = spec.poll;
        let hard_deadline = end + UNSEEN_AFTER + Duration::from_secs(WRITE_TIMEOUT_MS / 1000 + 1);
        std::thread::Builder::new()
            .name("bench-observer".into())
            .spawn(move || observe(engines, inbox, stop, poll, hard_deadline))
            .context("starting the observer thread")?
    };

    let bar = if show_progress {
        let bar = ProgressBar::with_draw_target(
            Some((spec.warmup + spec.duration).as_millis() as u64),
            ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30.cyan/blue}] {msg}")
                .expect("a valid progress template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_owned());
        bar
    } else {
        ProgressBar::hidden()
    };

    let ack = Arc::new(Mutex::new(stats::histogram()));
    let writes = Arc::new(AtomicU64::new(0));
    let write_errors = Arc::new(AtomicU64::new(0));
    let mut skipped = 0u64;
    let value = vec![b'c'; spec.value_bytes];
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT_WRITES));
    let period = Duration::from_secs_f64(1.0 / spec.rate);
    let max_writes = (spec.rate * (spec.warmup + spec.duration).as_secs_f64()).ceil() as u64 + 1;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..max_writes {
        ticker.tick().await;
        let started = Instant::now();
        if started >= end {
            break;
        }
        bar.set_position((started - begin).as_millis() as u64);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let origin = (i as usize) % n;
        let key = format!("{}{i:012}", spec.key_prefix).into_bytes();
        let object = ObjectKey::new(Kind::Register, key.clone()).context("bench key")?;
        let put = clients[origin]
            .register(key)
            .put(value.clone())
            .consistency(Consistency::Local)
            .timeout(Duration::from_millis(WRITE_TIMEOUT_MS));
        let measured = started >= warmup_end;
        let (inbox, ack, writes, write_errors) = (
            inbox.clone(),
            ack.clone(),
            writes.clone(),
            write_errors.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            let result = put.await;
            let acked = Instant::now();
            match result {
                Ok(_) => {
                    let mut seen = vec![false; n];
                    seen[origin] = true;
                    inbox.lock().unwrap().push(Pending {
                        key: object,
                        origin,
                        acked,
                        seen,
                        measured,
                    });
                    if measured {
                        stats::record(&mut ack.lock().unwrap(), acked - started);
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "convergence write failed");
                    if measured {
                        write_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    bar.set_message("waiting for the last writes to converge");
    while tasks.join_next().await.is_some() {}
    stop.store(true, Ordering::Release);
    let observed = tokio::task::spawn_blocking(move || observer.join())
        .await
        .context("joining the observer")?
        .map_err(|_| anyhow::anyhow!("the observer thread panicked"))?;
    bar.finish_and_clear();
    for c in &clients {
        c.close().await;
    }
    let ack = ack.lock().unwrap().clone();
    Ok(ConvergenceOutcome {
        writes: writes.load(Ordering::Relaxed),
        write_errors: write_errors.load(Ordering::Relaxed),
        skipped,
        ack,
        pairs: observed.pairs,
        unseen: observed.unseen,
        before_ack: observed.before_ack,
        window_s: spec.duration.as_secs_f64(),
        pushes_dropped: cluster.pushes_dropped().saturating_sub(dropped_before),
    })
}

/// The issue's targets for an injected one-way delay of `d_ms`: (p50
/// excess, p99 excess), in microseconds.
pub fn targets_us(d_ms: u64) -> (f64, f64) {
    let d_us = d_ms as f64 * 1000.0;
    (2_000.0, f64::max(10_000.0, 0.1 * d_us))
}

/// One row of the convergence table.
#[derive(Clone, Debug, Serialize)]
pub struct ConvergenceRow {
    pub delay_ms: u64,
    /// Requested writes per second.
    pub rate: f64,
    /// Measured writes acknowledged per second (below `rate` when the
    /// generator's ticks were delayed: a stalled machine skips them).
    pub achieved_rate: f64,
    pub pushes_dropped: u64,
    pub writes: u64,
    pub write_errors: u64,
    pub skipped: u64,
    pub samples: u64,
    pub unseen: u64,
    pub before_ack: u64,
    pub convergence: Latency,
    pub ack: Latency,
    pub p50_excess_us: f64,
    pub p99_excess_us: f64,
    pub p50_target_met: bool,
    pub p99_target_met: bool,
}

impl ConvergenceRow {
    pub fn new(delay_ms: u64, rate: f64, o: &ConvergenceOutcome, h: &Histogram<u64>) -> Self {
        let convergence = Latency::of(h);
        let d_us = delay_ms as f64 * 1000.0;
        let p50_excess_us = convergence.p50_us as f64 - d_us;
        let p99_excess_us = convergence.p99_us as f64 - d_us;
        let (p50_target, p99_target) = targets_us(delay_ms);
        ConvergenceRow {
            delay_ms,
            rate,
            achieved_rate: o.writes as f64 / o.window_s.max(1e-3),
            pushes_dropped: o.pushes_dropped,
            writes: o.writes,
            write_errors: o.write_errors,
            skipped: o.skipped,
            samples: convergence.samples,
            unseen: o.unseen,
            before_ack: o.before_ack,
            convergence,
            ack: Latency::of(&o.ack),
            p50_excess_us,
            p99_excess_us,
            p50_target_met: convergence.samples > 0 && p50_excess_us <= p50_target,
            p99_target_met: convergence.samples > 0 && o.unseen == 0 && p99_excess_us <= p99_target,
        }
    }
}

fn mark(met: bool) -> &'static str {
    if met { "ok" } else { "MISS" }
}

/// The convergence table.
pub fn table(rows: &[ConvergenceRow]) -> Table {
    let mut t = Table::new(&[
        "d ms",
        "writes/s",
        "samples",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "p50−d",
        "≤2 ms",
        "p99−d",
        "≤max(10,0.1d)",
        "unseen",
        "dropped",
        "ack p50 ms",
    ]);
    for r in rows {
        let (_, p99_target) = targets_us(r.delay_ms);
        t.row(vec![
            r.delay_ms.to_string(),
            format!("{:.0}", r.achieved_rate),
            r.samples.to_string(),
            fmt_ms(r.convergence.p50_us as f64),
            fmt_ms(r.convergence.p99_us as f64),
            fmt_ms(r.convergence.p999_us as f64),
            fmt_ms(r.convergence.max_us as f64),
            fmt_signed_ms(r.p50_excess_us),
            mark(r.p50_target_met).into(),
            fmt_signed_ms(r.p99_excess_us),
            format!("{} (≤{})", mark(r.p99_target_met), fmt_ms(p99_target)),
            r.unseen.to_string(),
            r.pushes_dropped.to_string(),
            fmt_ms(r.ack.p50_us as f64),
        ]);
    }
    t
}

/// Runs `meridian bench convergence`.
pub async fn run(args: ConvergenceArgs) -> Result<()> {
    if args.nodes < 2 || args.nodes > super::target::MAX_LOCAL_NODES {
        bail!(
            "--nodes must be between 2 and {}",
            super::target::MAX_LOCAL_NODES
        );
    }
    if args.delays.is_empty() || args.delays.iter().any(|&d| d > MAX_DELAY_MS) {
        bail!("--delays: give one or more delays of at most {MAX_DELAY_MS} ms");
    }
    let spec = |d: u64| ConvergenceSpec {
        rate: args.rate,
        warmup: args.warmup,
        duration: args.duration,
        value_bytes: args.value_bytes,
        poll: Duration::from_micros(args.poll_us),
        key_prefix: format!("conv/{d}/"),
    };
    spec(0).check()?;
    let regions = (1..=args.nodes).map(|i| format!("r{i}")).collect();
    let cluster = LocalCluster::start(&args.cluster.spec(regions)).await?;
    let mut rows = Vec::new();
    let mut result = Ok(());
    for &d in &args.delays {
        cluster.set_delays(|_, _| d);
        // Let messages sent under the previous delay drain.
        tokio::time::sleep(Duration::from_millis(2 * d + 200)).await;
        let label = format!("convergence d={d}ms");
        match measure(&cluster, &spec(d), &label, !args.quiet).await {
            Ok(o) => {
                let row = ConvergenceRow::new(d, args.rate, &o, &o.all());
                eprintln!(
                    "{label}: p50 {} ms, p99 {} ms over {} samples",
                    fmt_ms(row.convergence.p50_us as f64),
                    fmt_ms(row.convergence.p99_us as f64),
                    row.samples
                );
                rows.push(row);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    super::stop(cluster).await;
    result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "convergence: {} nodes, {:?} durability, {} writes/s requested \
             (the table shows the rate achieved), poll {} µs",
            args.nodes, args.cluster.durability, args.rate, args.poll_us
        );
        print!("{}", table(&rows).render());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_the_issue() {
        assert_eq!(targets_us(0), (2_000.0, 10_000.0));
        assert_eq!(targets_us(50), (2_000.0, 10_000.0));
        assert_eq!(targets_us(200), (2_000.0, 20_000.0));
    }

    #[test]
    fn rows_compute_excess_and_marks() {
        let mut h = stats::histogram();
        for ms in [21u64, 21, 21, 21, 22] {
            stats::record(&mut h, Duration::from_millis(ms));
        }
        let outcome = ConvergenceOutcome {
            writes: 5,
            write_errors: 0,
            skipped: 0,
            ack: stats::histogram(),
            pairs: vec![vec![h.clone()]],
            unseen: 0,
            before_ack: 0,
            window_s: 1.0,
            pushes_dropped: 0,
        };
        let row = ConvergenceRow::new(20, 100.0, &outcome, &outcome.all());
        assert_eq!(row.samples, 5);
        assert!((900.0..1_100.0).contains(&row.p50_excess_us), "{row:?}");
        assert!(row.p50_target_met && row.p99_target_met);
        let late = ConvergenceRow::new(10, 100.0, &outcome, &h);
        assert!(!late.p50_target_met, "{late:?}");
        let text = table(&[row, late]).render();
        assert!(text.contains("MISS"), "{text}");
        assert!(text.lines().nth(1).unwrap().starts_with("  20"), "{text}");
    }
}
