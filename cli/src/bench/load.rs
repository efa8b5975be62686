//! The load generator's core: N closed-loop workers, one connection each,
//! one request in flight per worker, for a warm-up and then a measured
//! window.
//!
//! * Each worker picks uniformly random keys from the key space (its own
//!   seeded generator), sends one operation, waits for the answer, and goes
//!   again. Only operations that start after the warm-up and finish before
//!   the end are measured; the window is from the end of the warm-up to the
//!   last measured completion.
//! * Every loop is bounded by time (`warmup + duration`) and by count
//!   (`max_ops` measured operations), and every operation by a timeout; a
//!   worker whose connection failed [`MAX_CONSECUTIVE_ERRORS`] times in a
//!   row stops rather than spin.
//! * Latency goes into one HDR histogram per worker (microseconds), merged
//!   at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use meridian_client::Consistency;

use super::stats::{self, Latency, RunStats};
use super::target::{Backend, Conn, KeySpace, OpKind, Rng, Workload};

/// A worker stops after this many failures in a row (a dead server would
/// otherwise turn the loop into a busy spin of instant errors).
pub const MAX_CONSECUTIVE_ERRORS: u32 = 1_000;

/// Slack added to the request timeout for the hard per-operation bound
/// (the Meridian client gives up 1 s after the request's own timeout).
const OP_TIMEOUT_SLACK: Duration = Duration::from_secs(2);

/// Connections made at once before a run: a burst of 64 TLS handshakes
/// against a node pinned to one busy CPU can exceed the client's connect
/// timeout, and connecting is not what is measured.
const CONNECT_CONCURRENCY: usize = 8;
/// Tries per connection before the run fails (connecting sends no request,
/// so retrying is safe).
const CONNECT_ATTEMPTS: u32 = 3;

/// How often the progress bar is refreshed.
const PROGRESS_TICK: Duration = Duration::from_millis(250);

/// One load run's parameters.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub workload: Workload,
    pub keys: KeySpace,
    pub value_bytes: usize,
    /// Share of gets in the mixed workload, in percent.
    pub read_percent: u8,
    pub clients: usize,
    /// Meridian's consistency level (ignored by Redis).
    pub level: Consistency,
    /// Server-side request timeout (Meridian), and the basis of every
    /// operation's hard bound.
    pub timeout_ms: u32,
    pub warmup: Duration,
    pub duration: Duration,
    /// Measured operations at most (successes and failures).
    pub max_ops: u64,
    /// Seed of the key choice (worker i uses seed + i).
    pub seed: u64,
}

/// What one run did: the statistics, and every operation sent (warm-up
/// included, for operations per fsync).
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub stats: RunStats,
    pub total_ops: u64,
}

struct WorkerResult {
    histogram: Histogram<u64>,
    ops: u64,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    first_error: Option<String>,
    last_done: Option<Instant>,
    conn: Option<Conn>,
}

/// Counters the workers share (for the count bound and the progress bar).
#[derive(Default)]
struct OpCounts {
    /// Every operation finished, warm-up included.
    done: AtomicU64,
    /// Measured operations (successes and failures).
    measured: AtomicU64,
}

fn pick(workload: Workload, read_percent: u8, rng: &mut Rng) -> OpKind {
    match workload {
        Workload::Set => OpKind::Set,
        Workload::Get => OpKind::Get,
        Workload::Incr => OpKind::Incr,
        Workload::Mixed => {
            if rng.below(100) < u64::from(read_percent) {
                OpKind::Get
            } else {
                OpKind::Set
            }
        }
    }
}

async fn worker(
    mut conn: Conn,
    index: usize,
    spec: Arc<LoadSpec>,
    warmup_end: Instant,
    end: Instant,
    shared: Arc<OpCounts>,
) -> WorkerResult {
    let mut rng = Rng::new(spec.seed.wrapping_add(index as u64));
    let value = vec![b'v'; spec.value_bytes];
    let mut key = Vec::with_capacity(spec.keys.key_bytes);
    let op_bound = Duration::from_millis(u64::from(spec.timeout_ms)) + OP_TIMEOUT_SLACK;
    let mut result = WorkerResult {
        histogram: stats::histogram(),
        ops: 0,
        errors: 0,
        error_kinds: BTreeMap::new(),
        first_error: None,
        last_done: None,
        conn: None,
    };
    let mut consecutive_errors = 0u32;
    loop {
        let start = Instant::now();
        if start >= end || shared.measured.load(Ordering::Relaxed) >= spec.max_ops {
            break;
        }
        let op = pick(spec.workload, spec.read_percent, &mut rng);
        spec.keys.key_into(rng.below(spec.keys.keys), &mut key);
        let outcome = tokio::time::timeout(op_bound, conn.execute(op, &key, &value)).await;
        let done = Instant::now();
        shared.done.fetch_add(1, Ordering::Relaxed);
        let measured = start >= warmup_end && done <= end;
        if measured && shared.measured.fetch_add(1, Ordering::Relaxed) >= spec.max_ops {
            break;
        }
        let error = match outcome {
            Ok(Ok(())) => {
                consecutive_errors = 0;
                if measured {
                    stats::record(&mut result.histogram, done - start);
                    result.ops += 1;
                    result.last_done = Some(done);
                }
                continue;
            }
            Ok(Err(e)) => e,
            Err(_elapsed) => super::target::OpError {
                kind: "timeout".into(),
                message: format!("no answer within {op_bound:?}; connection abandoned"),
            },
        };
        let abandon = error.kind == "timeout" && conn.is_redis();
        if measured {
            result.errors += 1;
            *result.error_kinds.entry(error.kind.clone()).or_default() += 1;
            result.last_done = Some(done);
        }
        if result.first_error.is_none() {
            result.first_error = Some(format!("{}: {}", error.kind, error.message));
        }
        consecutive_errors += 1;
        if consecutive_errors >= MAX_CONSECUTIVE_ERRORS || abandon {
            break;
        }
    }
    result.conn = Some(conn);
    result
}

/// The progress bar of one run (hidden when `show` is false or stderr is
/// not a terminal).
fn progress_bar(show: bool, label: &str, total: Duration) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar =
        ProgressBar::with_draw_target(Some(total.as_millis() as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30.cyan/blue}] {msg}")
            .expect("a valid progress template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// Runs one load: connects `spec.clients` workers, warms up, measures.
pub async fn run(
    backend: &Backend,
    spec: &LoadSpec,
    label: &str,
    show_progress: bool,
) -> Result<RunOutcome> {
    let spec = Arc::new(spec.clone());
    let mut connecting = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    for i in 0..spec.clients {
        let backend = backend.clone();
        let slots = slots.clone();
        let (level, timeout_ms) = (spec.level, spec.timeout_ms);
        connecting.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let mut attempt = 1;
            loop {
                match backend.connect(i, level, timeout_ms).await {
                    Ok(c) => return (i, Ok(c)),
                    Err(e) if attempt >= CONNECT_ATTEMPTS => return (i, Err(e)),
                    Err(e) => {
                        tracing::warn!(worker = i, attempt, error = %format!("{e:#}"), "connect failed; retrying");
                        attempt += 1;
                    }
                }
            }
        });
    }
    let mut conns: Vec<Option<Conn>> = (0..spec.clients).map(|_| None).collect();
    let mut failure = None;
    while let Some(joined) = connecting.join_next().await {
        let (i, conn) = joined.context("a connecting task failed")?;
        match conn {
            Ok(c) => conns[i] = Some(c),
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        for c in conns.into_iter().flatten() {
            c.close().await;
        }
        return Err(e);
    }

    let shared = Arc::new(OpCounts::default());
    let begin = Instant::now();
    let warmup_end = begin + spec.warmup;
    let end = warmup_end + spec.duration;
    let mut workers = tokio::task::JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let conn = conn.expect("every connection was made");
        workers.spawn(worker(
            conn,
            i,
            spec.clone(),
            warmup_end,
            end,
            shared.clone(),
        ));
    }

    let bar = progress_bar(show_progress, label, spec.warmup + spec.duration);
    let ticker = {
        let bar = bar.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(PROGRESS_TICK).await;
                let now = Instant::now();
                let done = shared.done.load(Ordering::Relaxed);
                let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-3);
                last = (now, done);
                bar.set_position((now - begin).as_millis() as u64);
                let phase = if now < warmup_end {
                    "warm-up"
                } else {
                    "measuring"
                };
                bar.set_message(format!("{phase}  {} ops/s", stats::fmt_rate(rate)));
            }
        })
    };

    let mut merged = stats::histogram();
    let mut out = RunStats::default();
    let mut last_done: Option<Instant> = None;
    let mut closing = Vec::new();
    while let Some(joined) = workers.join_next().await {
        let mut r = joined.context("a load worker panicked")?;
        merged
            .add(&r.histogram)
            .expect("histograms with the same bounds merge");
        out.ops += r.ops;
        out.errors += r.errors;
        for (k, n) in r.error_kinds {
            *out.error_kinds.entry(k).or_default() += n;
        }
        if out.first_error.is_none() {
            out.first_error = r.first_error.take();
        }
        last_done = last_done.max(r.last_done);
        closing.extend(r.conn.take());
    }
    ticker.abort();
    bar.finish_and_clear();
    let window = match last_done {
        Some(t) if t > warmup_end => t - warmup_end,
        _ => spec.duration,
    };
    out.elapsed_s = window.as_secs_f64();
    out.throughput = out.ops as f64 / out.elapsed_s.max(1e-3);
    out.latency = Latency::of(&merged);
    let mut closes = tokio::task::JoinSet::new();
    for c in closing {
        closes.spawn(c.close());
    }
    while closes.join_next().await.is_some() {}
    Ok(RunOutcome {
        stats: out,
        total_ops: shared.done.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_follows_the_read_share() {
        let mut rng = Rng::new(1);
        let gets = (0..10_000)
            .filter(|_| pick(Workload::Mixed, 30, &mut rng) == OpKind::Get)
            .count();
        assert!((2_700..3_300).contains(&gets), "{gets}");
        assert_eq!(pick(Workload::Incr, 30, &mut rng), OpKind::Incr);
        assert_eq!(pick(Workload::Mixed, 0, &mut rng), OpKind::Set);
        assert_eq!(pick(Workload::Mixed, 100, &mut rng), OpKind::Get);
    }
}
