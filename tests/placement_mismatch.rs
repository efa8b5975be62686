//! Nodes whose placement rules differ refuse to replicate with each other
//! (docs/architecture.md section 5 "Handshake": "A different placement
//! fingerprint means the peer is not replicated with (logged as an
//! error)"; section 6 "Agreement"; section 11 "misbehaving peer"; README
//! "Placement": "nodes compare them when they connect and refuse to
//! replicate with a node that disagrees").
//!
//! Real `meridian serve` processes, so that each node's log is its own.
//!
//! Address block (`127.31.<block>.x`): 80.

use std::time::Duration;

use anyhow::Result;
use meridian::metrics::scrape_parsed;
use meridian::{CONVERGE, ProcessCluster, Spec, eventually, local_count};
use meridian_client::{Consistency, Error};
use meridian_server::config::PlacementRule;

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const AP: &str = "ap-south-1";

/// How long the refusing nodes are watched for replication that must not
/// happen: many anti-entropy rounds (a pull every 500 ms) and heartbeats.
const WATCH: Duration = Duration::from_secs(4);

/// The lines of `log` that report, at ERROR level, refusing `peer`
/// because of placement.
fn refusals<'a>(log: &'a str, peer: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| {
            l.contains("ERROR") && l.contains(&format!("\"{peer}\"")) && l.contains("placement")
        })
        .collect()
}

/// ap-south-1's config carries one more `[[placement]]` rule than the
/// others'; us-east-1 and eu-west-1 agree. Then:
/// * each side logs an error naming the peer it refuses (and none for the
///   peer it agrees with);
/// * writes never cross the disagreement, either way (by push or by pull),
///   while us-east-1 and eu-west-1 replicate with each other as usual;
/// * no deltas from the refused peer are applied (metrics);
/// * an `all` write on us-east-1 is not acknowledged: ap-south-1, a replica
///   in us-east-1's view, can hold nothing; `quorum` (us-east-1 and
///   eu-west-1) still is.
///
/// What would make this fail: the fingerprint not compared (or not covering
/// the rules), so the nodes replicate and residency is decided by rules the
/// peers don't share; the refusal not logged at error level; an `all`
/// write acknowledged without the refused replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_whose_placement_rules_differ_do_not_replicate() -> Result<()> {
    let mut cluster = ProcessCluster::create(Spec::new(80))?;
    cluster.dir.edit(AP, |f| {
        f.placement.push(PlacementRule {
            prefix: "eu/".into(),
            regions: vec!["eu-west".into()],
            home: None,
        })
    })?;
    cluster.start_all()?;
    let us = cluster.wait_serving(US, &[EU]).await;
    let eu = cluster.wait_serving(EU, &[US]).await;
    let ap = cluster.wait_serving(AP, &[]).await;

    // The handshakes happened, and were refused, on both sides.
    eventually("every refusal is logged", CONVERGE, || async {
        let log = |name: &str| {
            cluster
                .nodes
                .iter()
                .find(|n| n.name == name)
                .map(|n| n.log())
                .unwrap_or_default()
        };
        for (node, refused) in [(AP, US), (AP, EU), (US, AP), (EU, AP)] {
            if refusals(&log(node), refused).is_empty() {
                return Err(format!("{node} logged no error refusing {refused}"));
            }
        }
        Ok(())
    })
    .await;

    us.counter("from-us")
        .incr(1)
        .consistency(Consistency::Local)
        .await?;
    ap.counter("from-ap")
        .incr(1)
        .consistency(Consistency::Local)
        .await?;
    // The agreeing pair replicates.
    eventually("eu-west-1 gets us-east-1's write", CONVERGE, || async {
        match local_count(&eu, "from-us").await {
            Ok(1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Nothing crosses the disagreement, however long we wait.
    let watch_end = tokio::time::Instant::now() + WATCH;
    while tokio::time::Instant::now() < watch_end {
        assert_eq!(
            local_count(&ap, "from-us").await?,
            0,
            "{AP} got {US}'s write"
        );
        for (name, client) in [(US, &us), (EU, &eu)] {
            assert_eq!(
                local_count(client, "from-ap").await?,
                0,
                "{name} got {AP}'s write"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Nor through the metrics: no delta from the refused peer was applied.
    for name in [US, EU, AP] {
        let m = scrape_parsed(cluster.dir.config(name)?.metrics_listen).await?;
        let refused: Vec<&str> = if name == AP { vec![US, EU] } else { vec![AP] };
        for peer in refused {
            assert_eq!(
                m.sum("meridian_peer_deltas_applied_total", &[("peer", peer)]),
                0.0,
                "{name} applied deltas from {peer}"
            );
        }
        if name == AP {
            assert_eq!(m.value("meridian_deltas_applied_total", &[])?, 0.0);
        }
    }

    // `all` needs ap-south-1 to hold the write durably: it cannot.
    let all = us
        .counter("all-write")
        .incr(1)
        .consistency(Consistency::All)
        .timeout(Duration::from_secs(2))
        .await;
    // Unavailable (the refused peer is silent, so not live) or Timeout (no
    // durable ack from it): anything but an acknowledgement.
    assert!(
        matches!(all, Err(Error::Unavailable { .. } | Error::Timeout { .. })),
        "an `all` write with a replica that refuses to replicate: {all:?}"
    );
    us.counter("quorum-write")
        .incr(1)
        .consistency(Consistency::Quorum)
        .await?;

    // The agreeing pair never refused each other.
    for (node, peer) in [(US, EU), (EU, US)] {
        let log = cluster.process(node).log();
        let lines = refusals(&log, peer);
        assert!(lines.is_empty(), "{node} refused {peer}: {lines:?}");
    }
    for node in &mut cluster.nodes {
        node.terminate()?;
    }
    Ok(())
}
