//! Deltas stamped too far in the future are deferred, counted, and applied
//! once time catches up (docs/architecture.md section 3 and section 11
//! "clock skew"; README "Known limits").
//!
//! Address block (`127.31.<block>.x`): 82.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use meridian::inproc::test_protocol;
use meridian::metrics::scrape_parsed;
use meridian::{CONVERGE, InProcessCluster, Spec, TestClusterFiles, eventually, local_count};
use meridian_client::Consistency;
use meridian_client::wire::NodeStatus;
use meridian_server::config::DEFAULT_MAX_CLOCK_OFFSET_MS;

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const AP: &str = "ap-south-1";

/// How far ahead us-east-1's clock is pushed: far beyond the receivers'
/// `max_clock_offset_ms` (500, the default), short enough for real time to
/// catch up within the test. Its deltas are deferred for about
/// `SKEW_MS - 500` ms.
const SKEW_MS: i64 = 8_000;

/// Within this long after the write, a receiver must still not have applied
/// it: `SKEW_MS - max_clock_offset_ms`, less a second for the time the
/// write took to be stamped after the offset was set.
const NOT_BEFORE: Duration =
    Duration::from_millis(SKEW_MS as u64 - DEFAULT_MAX_CLOCK_OFFSET_MS - 1_000);

fn peer_status<'a>(
    status: &'a NodeStatus,
    peer: &str,
) -> Result<&'a meridian_client::wire::PeerStatus> {
    status
        .peers
        .iter()
        .find(|p| p.node == peer)
        .with_context(|| format!("{} reports no peer {peer}: {:?}", status.node, status.peers))
}

/// One node's clock is pushed `SKEW_MS` ahead (the debug clock offset,
/// allowed by `[debug] allow_clock_offset` in its config only) and it
/// writes at `local`. Its peers:
/// * defer the delta: it is not applied early (a `local` read there does not
///   see it while it is still more than `max_clock_offset` ahead);
/// * count it, per node (`meridian_deltas_deferred_total`) and per peer
///   (`meridian_peer_deferred_deltas_total{peer="us-east-1"}` on the
///   Prometheus endpoint, `deferred_deltas` of that peer in the `status`
///   operation, which is what `meridian status` prints), and attribute it
///   to the peer that sent it, not to the other one;
/// * see the skew in the peer's estimated clock offset;
/// * apply it once real time catches up: deferred, not lost.
///
/// What would make this fail: a receiver that applies a far-future delta at
/// once (its HLC would then jump ahead and every later local write would be
/// stamped in the future too), one that drops it instead of deferring it
/// (never converges), or deferral counters that stay at 0, count on the
/// wrong peer or are missing from the metrics or from `status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deltas_from_a_clock_far_ahead_are_deferred_counted_and_applied_later() -> Result<()> {
    let dir = TestClusterFiles::create(Spec::new(82))?;
    // Only us-east-1 accepts a debug clock offset, from its config file.
    dir.edit(US, |f| f.debug.allow_clock_offset = true)?;
    let mut cluster = InProcessCluster::new(dir, test_protocol);
    for name in [US, EU, AP] {
        cluster.restart(name).await?;
    }
    cluster.wait_connected().await;
    let (us, eu, ap) = (
        cluster.client(US).await?,
        cluster.client(EU).await?,
        cluster.client(AP).await?,
    );
    // The others refuse the debug operation: it is opt-in per node.
    assert!(eu.debug_clock_offset(SKEW_MS).await.is_err());

    // Without skew nothing is deferred, and writes flow both ways.
    us.counter("before")
        .incr(1)
        .consistency(Consistency::All)
        .await?;
    eu.counter("before")
        .incr(1)
        .consistency(Consistency::All)
        .await?;
    for (name, client) in [(EU, &eu), (AP, &ap)] {
        let status = client.status().await?;
        assert_eq!(
            peer_status(&status, US)?.deferred_deltas,
            0,
            "{name}: {status:?}"
        );
    }

    us.debug_clock_offset(SKEW_MS).await?;
    let written = Instant::now();
    us.counter("skewed")
        .incr(1)
        .consistency(Consistency::Local)
        .await?;
    assert_eq!(local_count(&us, "skewed").await?, 1);

    for (name, client) in [(EU, &eu), (AP, &ap)] {
        let node = cluster.node(name);
        let metrics_addr = node.addresses.metrics;
        // Counted in the metrics, per node and per peer.
        let metrics = eventually(
            &format!("{name} counts deferred deltas from {US} in its metrics"),
            CONVERGE,
            || async {
                let m = scrape_parsed(metrics_addr)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                let total = m
                    .value("meridian_deltas_deferred_total", &[])
                    .map_err(|e| e.to_string())?;
                let from_us = m
                    .value(
                        "meridian_peer_deferred_deltas_total",
                        &[("peer", US), ("region", "us-east")],
                    )
                    .map_err(|e| e.to_string())?;
                if total >= 1.0 && from_us >= 1.0 {
                    Ok(m)
                } else {
                    Err(format!("deferred total {total}, from {US} {from_us}"))
                }
            },
        )
        .await;
        // Not applied early: the deferral is seen well before the delta
        // could be accepted.
        let read = local_count(client, "skewed").await?;
        let elapsed = written.elapsed();
        assert!(
            elapsed < NOT_BEFORE,
            "inconclusive: {name}'s deferral was checked {elapsed:?} after the write, \
             when the delta may legitimately be accepted (machine too slow?)"
        );
        assert_eq!(
            read, 0,
            "{name} applied a delta stamped {SKEW_MS} ms ahead early"
        );

        // The deferral is attributed to the peer that sent it: the third
        // node's clock is not skewed.
        let other = if name == EU { AP } else { EU };
        let other_region = cluster.dir.region_of(other).to_owned();
        assert_eq!(
            metrics.value(
                "meridian_peer_deferred_deltas_total",
                &[("peer", other), ("region", &other_region)],
            )?,
            0.0,
            "{name} counts deferred deltas from {other}, whose clock is not skewed"
        );
        // In the status operation (what `meridian status` prints).
        let status = client.status().await?;
        assert!(
            peer_status(&status, US)?.deferred_deltas >= 1,
            "{name}'s status: {status:?}"
        );
        assert_eq!(
            peer_status(&status, other)?.deferred_deltas,
            0,
            "{status:?}"
        );
        // The skew shows in the estimated clock offset of the peer.
        eventually(
            &format!("{name} estimates {US}'s clock about {SKEW_MS} ms ahead"),
            CONVERGE,
            || async {
                let status = client.status().await.map_err(|e| e.to_string())?;
                let offset = peer_status(&status, US)
                    .map_err(|e| e.to_string())?
                    .clock_offset_ms;
                if (offset - SKEW_MS).abs() < 2_000 {
                    Ok(())
                } else {
                    Err(format!("estimated offset {offset} ms"))
                }
            },
        )
        .await;
    }
    // The skewed node defers nothing: the others' clocks are behind its own.
    let status = us.status().await?;
    for peer in [EU, AP] {
        assert_eq!(peer_status(&status, peer)?.deferred_deltas, 0, "{status:?}");
    }

    // Deferred, not lost: once real time reaches the delta's timestamp
    // (less the tolerated offset), the next pull brings it.
    for (name, client) in [(EU, &eu), (AP, &ap)] {
        eventually(
            &format!("{name} applies the deferred delta once time catches up"),
            Duration::from_millis(SKEW_MS as u64) + CONVERGE,
            || async {
                match local_count(client, "skewed").await {
                    Ok(1) => Ok(()),
                    Ok(n) => Err(format!("reads {n}")),
                    Err(e) => Err(format!("{e:#}")),
                }
            },
        )
        .await;
    }
    assert!(
        written.elapsed() >= NOT_BEFORE,
        "the deferred delta was applied after {:?}, before its timestamp was within \
         max_clock_offset of real time",
        written.elapsed()
    );
    us.debug_clock_offset(0).await?;
    cluster.shutdown().await
}
