//! Step 1: concurrent counter increments converge; how fast one write reaches
//! the other regions.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use meridian_client::{Consistency, Error as ClientError, Kind};
use rand::Rng;
use tokio::sync::Barrier;
use tokio::task::JoinHandle;

use super::{Tour, converge, counter};
use crate::demo::print::{arrival_line, header, ms, percentile};
use crate::demo::{CONVERGE_TIMEOUT, REGIONS, one_way_ms};

impl Tour<'_> {
    /// Step 1: concurrent increments converge; single-write convergence.
    pub(super) async fn counters(&mut self) -> Result<()> {
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
            &counter(expected),
            last_ack,
        )
        .await;
        say!("  Expected total: {expected}. Polling a `local` read in each region:");
        for (i, a) in arrivals.iter().enumerate() {
            say!(
                "{}",
                arrival_line(
                    REGIONS[i],
                    &counter(expected),
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
                    &counter(value),
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
}
