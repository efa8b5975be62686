//! Step 2: latency per consistency level from each region.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use meridian_client::{Error as ClientError, Kind};
use tokio::task::JoinHandle;

use super::{Tour, converge, counter};
use crate::demo::print::{header, ms_bare, percentile};
use crate::demo::{LEVELS, ONE_WAY_DELAYS, REGIONS, farthest, nearest, node_name, rtt_ms};

impl Tour<'_> {
    /// Step 2: latency per consistency level from each region.
    pub(super) async fn latency(&mut self) -> Result<()> {
        header("2. Latency per consistency level");
        let samples = self.sizes.latency_samples;
        let key = "latency";
        let placement = self
            .cluster
            .local
            .nodes()
            .node(&node_name(REGIONS[0]))
            .mesh()
            .placement()
            .clone();
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
        let total = counter((REGIONS.len() * LEVELS.len() * samples) as i64);
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
                head.push_str(&format!(" {level:>17}"));
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
}
