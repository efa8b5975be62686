//! Step 4: a partition isolates ap-south; local writes go on, quorum writes
//! fail; after healing everything converges.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Result;
use meridian_client::wire::ReplyValue;
use meridian_client::{Consistency, Error as ClientError, Kind};
use meridian_replication::mesh::LIVE_TIMEOUT;

use super::{Tour, converge, counter, read};
use crate::demo::print::{arrival_line, header, ms, show};
use crate::demo::{CONVERGE_TIMEOUT, PARTITION_MS, REGIONS, one_way_ms};

impl Tour<'_> {
    /// Step 4: a partition isolates ap-south; heal; converge.
    pub(super) async fn partition(&mut self) -> Result<()> {
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
            show(&views[us]),
            show(&views[eu]),
            show(&views[ap])
        );

        let hold = Duration::from_millis(PARTITION_MS).saturating_sub(cut.elapsed());
        tokio::time::sleep(hold).await;
        self.cluster.isolate("ap-south", false);
        let healed = Instant::now();
        say!(
            "The links are restored after {:.1} s of partition.",
            cut.elapsed().as_secs_f64()
        );
        let live = self.cluster.local.wait_connected(CONVERGE_TIMEOUT).await;
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
        let expected = counter(total);
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
                Ok(v) => show(v),
                Err(e) => format!("an error: {e}"),
            }
        );
        self.expect(
            matches!(q, Ok(ReplyValue::Counter { value }) if value == total),
            "quorum works again in ap-south after the heal",
        );
        Ok(())
    }
}
