//! Catch-up by full-state sync, on three in-process nodes: the rarest
//! catch-up path, reached by truncating small (256 KiB) log segments past
//! what a stopped node has.
//!
//! Address block (`127.31.<block>.x`): 7.

use anyhow::Result;
use meridian::inproc::test_protocol;
use meridian::objects::{converge_to, set_of};
use meridian::{CONVERGE, InProcessCluster, Obj, Spec, TestClusterFiles, Val, eventually};
use meridian_client::Consistency;
use meridian_server::config::DurabilityMode;

/// Log segment size of every node: 24 values of 64 KiB span six segments.
const SEGMENT_BYTES: u64 = 256 << 10;

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const AP: &str = "ap-south-1";

/// A node that stays away longer than its peers' log retention comes back
/// to logs truncated past what it has: it gets whole objects (full-state
/// sync) instead, and ends up with every write it missed, removes and
/// deletes included. (Each peer's log rolls past several 256 KiB segments,
/// so truncation really deletes deltas the returning node lacks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_back_after_log_truncation_catches_up_by_full_sync() -> Result<()> {
    let dir = TestClusterFiles::create(
        Spec::new(7)
            .durability(DurabilityMode::Periodic)
            .log_segment_bytes(SEGMENT_BYTES),
    )?;
    let mut cluster = InProcessCluster::start_with(dir, |name| {
        let mut p = test_protocol(name);
        p.retention_ms = 300;
        p.truncate_every_ms = 300;
        p
    })
    .await?;
    cluster.wait_connected().await;
    let us = cluster.client(US).await?;
    let eu = cluster.client(EU).await?;
    let quorum = Consistency::Quorum;
    us.set("fs-set").add(["a", "b"]).consistency(quorum).await?;
    us.counter("fs-counter").incr(1).consistency(quorum).await?;
    us.counter("fs-deleted").incr(5).consistency(quorum).await?;
    us.register("fs-deleted-register")
        .put("x")
        .consistency(quorum)
        .await?;

    let ap_has = cluster.node(AP).engine().applied().vector().clone();
    cluster.stop(AP).await?;
    // What ap-south-1 misses: several segments of big values, then small
    // changes of every kind.
    let big = |i: usize| vec![i as u8; 64 << 10];
    const BIG: usize = 24;
    for i in 0..BIG {
        let w = us.register(format!("fs-big-{i}")).put(big(i));
        w.consistency(Consistency::Local).await?;
    }
    eu.set("fs-set").add(["c"]).consistency(quorum).await?;
    us.set("fs-set").remove(["a"]).consistency(quorum).await?;
    eu.counter("fs-counter")
        .incr(10)
        .consistency(quorum)
        .await?;
    us.counter("fs-deleted")
        .delete()
        .consistency(quorum)
        .await?;
    eu.register("fs-deleted-register")
        .delete()
        .consistency(quorum)
        .await?;
    cluster.wait_truncated(&[US, EU], &ap_has).await;

    cluster.restart(AP).await?;
    cluster.wait_connected().await;
    let clients = cluster.dir.clients().await?;
    let objects = [
        Obj::set("fs-set"),
        Obj::counter("fs-counter"),
        Obj::counter("fs-deleted"),
        Obj::register("fs-deleted-register"),
        Obj::register("fs-big-0"),
        Obj::register(format!("fs-big-{}", BIG / 2)),
        Obj::register(format!("fs-big-{}", BIG - 1)),
    ];
    let expected = [
        set_of(["b", "c"]),
        Val::Counter(11),
        Val::Counter(0),
        Val::Register(None),
        Val::Register(Some(big(0))),
        Val::Register(Some(big(BIG / 2))),
        Val::Register(Some(big(BIG - 1))),
    ];
    converge_to(&clients, &objects, &expected).await;
    // Only a full-state sync can have caught it up (the logs were
    // truncated past what it had).
    cluster.wait_full_sync_received(AP, CONVERGE).await;
    // Caught up by the protocol's own account too: the peers count it as
    // having every delta, and stop streaming full states to it.
    let sent = || -> u64 {
        [US, EU]
            .iter()
            .flat_map(|n| cluster.node(n).mesh().reports())
            .filter(|r| r.name == AP)
            .map(|r| r.full_syncs_sent)
            .sum()
    };
    eventually(
        "us-east-1 and eu-west-1 see ap-south-1 caught up",
        CONVERGE,
        || async {
            for name in [US, EU] {
                let reports = cluster.node(name).mesh().reports();
                let lag = reports.iter().find(|r| r.name == AP).map(|r| r.lag_deltas);
                if lag != Some(0) {
                    return Err(format!("{name} counts ap-south-1 {lag:?} deltas behind"));
                }
            }
            Ok(())
        },
    )
    .await;
    let before = sent();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(sent(), before, "full syncs keep coming after catch-up");
    cluster.shutdown().await
}
