//! Leadership across restarts (review item C5): a node leads a key only
//! once it has caught up with what its live peers had, so a leader
//! restarted with stale state never answers `leader` reads from it.
//!
//! Address block (`127.31.<block>.x`): 70.

use std::time::{Duration, Instant};

use anyhow::Result;
use meridian::{CONVERGE, InProcessCluster, Spec, eventually};
use meridian_client::{Consistency, Error};
use meridian_replication::mesh::Link;

/// The key's leader X is stopped; a `leader` write through Z goes to Y
/// (the next leader) and reaches Z. X restarts with the old value, and
/// Y's and Z's messages to X take 800 ms, so X needs that long at least to
/// catch up. Every `leader` read from X's restart on, through X or through
/// Z, must return the new value (or wait, or fail definitely): X answers
/// only once caught up, and no one forwards to it before. (Before the fix
/// X led as soon as it was connected and answered from its stale state.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_leader_serves_no_stale_leader_reads() -> Result<()> {
    let mut cluster = InProcessCluster::start(Spec::new(70)).await?;
    cluster.wait_connected().await;
    let placement = cluster.dir.config(&cluster.names()[0])?.cluster_placement();
    let key = "failback";
    let prefs: Vec<String> = placement
        .preference_list(key.as_bytes())
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (x, y, z) = (prefs[0].clone(), prefs[1].clone(), prefs[2].clone());
    let leader = Consistency::Leader;

    let via_z = cluster.client(&z).await?;
    // Right after the start, x leads once every node has heard that it
    // caught up (a round trip after the hellos).
    eventually("x leads", CONVERGE, || async {
        let w = via_z.register(key).put("old").consistency(leader).await;
        match w {
            Ok(w) if w.node == x => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    cluster.stop(&x).await?;
    let w = eventually("a leader write through z", CONVERGE, || async {
        via_z
            .register(key)
            .put("new")
            .consistency(leader)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(w.node, y, "with x down, y leads");
    eventually("z has the new value", CONVERGE, || async {
        let r = via_z.register(key).get().await.map_err(|e| e.to_string())?;
        match r.value.value.as_deref() {
            Some(b"new") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // X comes back stale and hears from Y and Z only after 800 ms.
    for peer in [&y, &z] {
        cluster.node(peer).set_link(
            cluster.dir.region_of(&x),
            Link {
                delay_ms: 800,
                cut: false,
            },
        );
    }
    cluster.restart(&x).await?;
    let via_x = cluster.client(&x).await?;
    let started = Instant::now();
    let mut served_by_x = 0;
    // At least 4 s of reads through both; then on until x has led once (a
    // slow host may take longer to restart it and finish its catch-up).
    while started.elapsed() < Duration::from_secs(4)
        || (served_by_x == 0 && started.elapsed() < Duration::from_secs(30))
    {
        for (via, client) in [(&x, &via_x), (&z, &via_z)] {
            let read = client
                .register(key)
                .get()
                .consistency(leader)
                .timeout(Duration::from_secs(3))
                .await;
            match read {
                Ok(r) => {
                    let value = r.value.value.as_deref().map(String::from_utf8_lossy);
                    assert_eq!(
                        value.as_deref(),
                        Some("new"),
                        "a leader read through {via} served by {} {:?} after x's restart \
                         returned stale state",
                        r.node,
                        started.elapsed()
                    );
                    if r.node == x {
                        served_by_x += 1;
                    }
                }
                // Waiting for a caught-up leader may run out: definite.
                Err(Error::Unavailable { .. }) => {}
                Err(e) => panic!("leader read through {via}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served_by_x > 0, "x never led again once caught up");
    cluster.shutdown().await
}
