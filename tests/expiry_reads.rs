//! Quorum reads and read repair carry expiry state (issue 15): the state
//! RPC returns a replica's `Expiry` with its object, the coordinator joins
//! both and shows only what the joined expiry leaves visible at its own
//! time, and repairs replicas that lack the deadline. Three in-process
//! nodes, one per region.
//!
//! Address block (`127.31.<block>.x`): 115.

use std::time::Duration;

use anyhow::Result;
use meridian::inproc::test_protocol;
use meridian::{InProcessCluster, Obj, Spec, TestClusterFiles, Val, eventually};
use meridian_client::Consistency;
use meridian_engine::{Deadline, Op, PhysicalTime};
use meridian_replication::mesh::Link;

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const AP: &str = "ap-south-1";

/// An anti-entropy / want interval no test outlives: the nodes never pull,
/// so a record a node's engine logs without pushing it stays there.
const NEVER_MS: u64 = 3_600_000;

/// How far ahead of real time ap-south-1 sets the deadline, in ms: no
/// node's own clock reaches it during the test, so no reclamation worker
/// fires it and nothing replicates it.
const DEADLINE_AHEAD_MS: u64 = 3_600_000;

/// us-east-1's debug clock offset, in ms: past the deadline.
const US_AHEAD_MS: i64 = 2 * DEADLINE_AHEAD_MS as i64;

/// A quorum read never shows a value that a replica in its read set has
/// expired, as of the coordinator's clock. ap-south-1 alone holds a
/// deadline an hour ahead (set on its engine and not replicated: nobody
/// pulls); us-east-1's clock is two hours ahead, and its link to eu-west-1
/// is cut, so its quorum read set is {us-east-1, ap-south-1}. It does not
/// know the deadline (a `local` read there shows the value), yet its
/// quorum read comes back empty; and the read repairs it: it now holds the
/// deadline, and its own `local` reads hide the value too. eu-west-1, not
/// in the read set, is left as it was.
///
/// What would make this fail: a state RPC without the expiry or a
/// coordinator that filters the joined state without the joined expiry
/// (the quorum read shows the value), or read repair that does not pass
/// the expiry on (us-east-1 lacks the deadline afterwards).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quorum_reads_hide_what_a_replica_in_the_read_set_expired_and_repair_it() -> Result<()> {
    let dir = TestClusterFiles::create(Spec::new(115))?;
    dir.edit(US, |f| f.debug.allow_clock_offset = true)?;
    let cluster = InProcessCluster::start_with(dir, |name| {
        let mut p = test_protocol(name);
        p.anti_entropy_ms = NEVER_MS;
        p.want_timeout_ms = NEVER_MS;
        p
    })
    .await?;
    cluster.wait_connected().await;
    let us = cluster.client(US).await?;
    let register = Obj::register("ttl-register");
    let key = register.object_key();
    us.register("ttl-register")
        .put("v")
        .consistency(Consistency::All)
        .await?;
    let value = Val::Register(Some(b"v".to_vec()));

    // ap-south-1 sets a deadline it keeps to itself.
    let ap = cluster.node(AP).engine();
    let now = PhysicalTime::system(0);
    let deadline = now.unix_ms() + DEADLINE_AHEAD_MS;
    ap.apply(&key, Op::Expire(Deadline::At(deadline)), now)?;
    let holds_deadline = |node: &str| -> Result<bool> {
        Ok(cluster
            .node(node)
            .engine()
            .expiry(&key)?
            .is_some_and(|e| e.cutoff_ms(deadline) >= deadline))
    };
    assert!(holds_deadline(AP)?);

    us.debug_clock_offset(US_AHEAD_MS).await?;
    cluster.node(US).set_link(
        "eu-west",
        Link {
            delay_ms: 0,
            cut: true,
        },
    );
    eventually(
        "us-east-1 sees eu-west-1 down",
        Duration::from_secs(30),
        || async {
            match cluster.node(US).mesh().is_live(EU) {
                true => Err("still live".to_owned()),
                false => Ok(()),
            }
        },
    )
    .await;
    for node in [US, EU] {
        assert!(!holds_deadline(node)?, "{node} learned the deadline early");
    }
    assert_eq!(register.read(&us, Consistency::Local).await?, value);

    assert_eq!(
        register.read(&us, Consistency::Quorum).await?,
        Val::Register(None),
        "a quorum read showed a value ap-south-1 in its read set has expired"
    );
    assert!(
        holds_deadline(US)?,
        "read repair did not pass the expiry on"
    );
    assert_eq!(
        register.read(&us, Consistency::Local).await?,
        Val::Register(None)
    );
    assert!(!holds_deadline(EU)?, "eu-west-1 was not in the read set");

    us.debug_clock_offset(0).await?;
    cluster.node(US).set_link("eu-west", Link::default());
    cluster.shutdown().await
}
