//! A clean shutdown (what `meridian serve` does on SIGTERM or SIGINT:
//! `Node::shutdown`) drains the requests in flight — they finish and are
//! answered — and takes a final checkpoint, so the next start keeps the
//! node's incarnation and everything it acknowledged.
//!
//! Address block (`127.31.<block>.x`): 50.

use std::time::Duration;

use anyhow::Result;
use meridian::{CONVERGE, InProcessCluster, Spec, eventually};
use meridian_client::Consistency;
use meridian_replication::mesh::Link;

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const AP: &str = "ap-south-1";

/// How long the stopping node's deltas take to reach the others: long
/// enough that shutdown starts while the quorum write waits for an ack.
const PUSH_DELAY_MS: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_requests_in_flight_and_keeps_the_incarnation() -> Result<()> {
    let mut cluster = InProcessCluster::start(Spec::new(50)).await?;
    cluster.wait_connected().await;
    let incarnation = cluster.node(US).engine().incarnation();
    let client = cluster.client(US).await?;

    // US's deltas reach the others a second late, so a quorum write from US
    // is still waiting for its second durable copy when shutdown begins.
    for region in ["eu-west", "ap-south"] {
        cluster.node(US).set_link(
            region,
            Link {
                delay_ms: PUSH_DELAY_MS,
                cut: false,
            },
        );
    }
    let write = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .counter("drained")
                .incr(5)
                .consistency(Consistency::Quorum)
                .timeout(Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!write.is_finished(), "the quorum write did not wait");
    cluster.stop(US).await?;

    // The request in flight was answered, successfully: its ack arrived
    // while the node drained.
    let answered = write.await?;
    assert!(
        answered.is_ok(),
        "in-flight write not drained: {answered:?}"
    );

    // The final checkpoint: the restart is clean (same incarnation) and
    // holds the write.
    cluster.restart(US).await?;
    assert_eq!(cluster.node(US).engine().incarnation(), incarnation);
    cluster.wait_connected().await;
    let client = cluster.client(US).await?;
    let value = client
        .counter("drained")
        .read()
        .consistency(Consistency::Local)
        .await?;
    assert_eq!(value.value, 5);
    for other in [EU, AP] {
        let c = cluster.client(other).await?;
        eventually(&format!("{other} reads the write"), CONVERGE, || async {
            match c.counter("drained").read().await {
                Ok(r) if r.value == 5 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    cluster.shutdown().await
}
