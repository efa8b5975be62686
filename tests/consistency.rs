//! End-to-end consistency levels (docs/architecture.md section 7) on three in-process
//! nodes, one per region, for every object type.
//!
//! Address blocks (`127.31.<block>.x`): 10 level promises, 11 a node down,
//! 12 read repair, 17 `replicas-N` writes with nodes down, 18 `replicas-N`
//! reads and writes that overlap. A partitioned node's `local`/`quorum` behaviour is in
//! `tests/replication.rs`; leader failover after SIGKILL in
//! `tests/process.rs`.

use std::time::Duration;

use anyhow::Result;
use meridian::inproc::{DETECT, test_protocol};
use meridian::objects::{map_of, set_of};
use meridian::{InProcessCluster, Obj, Spec, TestClusterFiles, Val, eventually};
use meridian_client::{Client, Consistency, Error};
use meridian_replication::mesh::Link;

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const AP: &str = "ap-south-1";

/// Keys per type in the read-after-write checks, and writes per key.
const KEYS_PER_TYPE: usize = 4;
const WRITES_PER_KEY: usize = 6;

/// An anti-entropy / want interval no test outlives: the node never pulls.
const NEVER_MS: u64 = 3_600_000;

/// One write to `obj`, step `i` (1-based): counters get +1, sets get
/// member `i`, registers get value `i`, maps get field `i` set to `i`.
async fn write_step(client: &Client, obj: &Obj, i: usize, level: Consistency) -> Result<(), Error> {
    let member = format!("m{i}");
    match obj {
        Obj::Counter(k) => client
            .counter(k.clone())
            .incr(1)
            .consistency(level)
            .await
            .map(drop),
        Obj::Set(k) => client
            .set(k.clone())
            .add([member])
            .consistency(level)
            .await
            .map(drop),
        Obj::Register(k) => client
            .register(k.clone())
            .put(member)
            .consistency(level)
            .await
            .map(drop),
        Obj::Map(k) => client
            .map(k.clone())
            .set([(member.clone(), member)])
            .consistency(level)
            .await
            .map(drop),
    }
}

/// What a read must return once steps `1..=i` completed.
fn after_steps(obj: &Obj, i: usize) -> Val {
    match obj {
        Obj::Counter(_) => Val::Counter(i as i64),
        Obj::Set(_) => set_of((1..=i).map(|j| format!("m{j}"))),
        Obj::Register(_) => Val::Register((i > 0).then(|| format!("m{i}").into_bytes())),
        Obj::Map(_) => map_of((1..=i).map(|j| (format!("m{j}"), format!("m{j}")))),
    }
}

fn objects(prefix: &str) -> Vec<Obj> {
    let mut out = Vec::new();
    for k in 0..KEYS_PER_TYPE {
        out.push(Obj::counter(format!("{prefix}-counter-{k}")));
        out.push(Obj::set(format!("{prefix}-set-{k}")));
        out.push(Obj::register(format!("{prefix}-register-{k}")));
        out.push(Obj::map(format!("{prefix}-map-{k}")));
    }
    out
}

/// One counter, one set and one register, named `{prefix}-{type}`.
fn counter_set_register(prefix: &str) -> [Obj; 3] {
    [
        Obj::counter(format!("{prefix}-counter")),
        Obj::set(format!("{prefix}-set")),
        Obj::register(format!("{prefix}-register")),
    ]
}

/// For every type, on many keys, with writes on one node and reads on
/// another (both rotating):
/// * `quorum`: a quorum read issued after a quorum write completed sees it,
///   even on a replica that replication reaches late;
/// * `all`: once an `all` write completed, a `local` read on every replica
///   sees it;
/// * `leader`: a `leader` read through any node sees every completed
///   `leader` write made through any other;
/// * `local`: a node reads its own completed `local` writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_level_keeps_its_promise_for_every_type() -> Result<()> {
    let cluster = InProcessCluster::start(Spec::new(10)).await?;
    cluster.wait_connected().await;
    // Everything towards ap-south-1 arrives late, so that its own state
    // lags and a quorum read there has to join replicas' states.
    for name in [US, EU] {
        cluster.node(name).set_link(
            "ap-south",
            Link {
                delay_ms: 250,
                cut: false,
            },
        );
    }
    let clients = cluster.dir.clients().await?;
    let names = cluster.names();

    let mut tasks = Vec::new();
    for (level, prefix) in [
        (Consistency::Quorum, "q"),
        (Consistency::All, "a"),
        (Consistency::Leader, "l"),
        (Consistency::Local, "o"),
    ] {
        for (k, obj) in objects(prefix).into_iter().enumerate() {
            let clients = clients.clone();
            let names = names.clone();
            tasks.push(tokio::spawn(async move {
                for i in 1..=WRITES_PER_KEY {
                    // `local` promises nothing across nodes: one writer per key.
                    let writer = match level {
                        Consistency::Local => k % clients.len(),
                        _ => (k + i) % clients.len(),
                    };
                    let reader = match level {
                        Consistency::Local => writer,
                        _ => (writer + 1 + i % 2) % clients.len(),
                    };
                    write_step(&clients[writer].1, &obj, i, level)
                        .await
                        .map_err(|e| {
                            format!("{level} write {i} of {obj:?} on {}: {e}", names[writer])
                        })?;
                    let want = after_steps(&obj, i);
                    let readers: Vec<usize> = match level {
                        // Every replica has it durably: every local read sees it.
                        Consistency::All => (0..clients.len()).collect(),
                        _ => vec![reader],
                    };
                    let read_level = match level {
                        Consistency::All => Consistency::Local,
                        other => other,
                    };
                    for r in readers {
                        let got = obj.read(&clients[r].1, read_level).await.map_err(|e| {
                            format!("{read_level} read of {obj:?} on {}: {e}", names[r])
                        })?;
                        if got != want {
                            return Err(format!(
                                "{read_level} read of {obj:?} on {} after {level} write {i} on {}: \
                                 got {got:?}, expected {want:?}",
                                names[r], names[writer]
                            ));
                        }
                    }
                }
                Ok::<_, String>(())
            }));
        }
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await? {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    cluster.shutdown().await
}

/// With one node down, `all` fails at once with a definite `Unavailable`
/// (and has no effect), while `quorum` and `leader` keep working for every
/// type; once the node is back, `all` works again and sees everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_is_unavailable_with_a_node_down_and_quorum_is_not() -> Result<()> {
    let mut cluster = InProcessCluster::start(Spec::new(11)).await?;
    cluster.wait_connected().await;
    let objs = counter_set_register("d");
    let us = cluster.client(US).await?;
    let eu = cluster.client(EU).await?;
    for (i, obj) in objs.iter().enumerate() {
        write_step(&us, obj, 1, Consistency::All).await?;
        assert_eq!(
            obj.read(&eu, Consistency::All).await?,
            after_steps(obj, 1),
            "{i}"
        );
    }

    cluster.stop(AP).await?;
    eventually(
        "us-east-1 and eu-west-1 notice ap-south-1 is down",
        DETECT,
        || async {
            let live = cluster.node(US).mesh().is_live(AP) || cluster.node(EU).mesh().is_live(AP);
            if live {
                Err("still live".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await;
    for obj in &objs {
        for client in [&us, &eu] {
            let e = write_step(client, obj, 99, Consistency::All)
                .await
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Unavailable {
                        needed: 3,
                        reachable: 2
                    }
                ),
                "{obj:?}: {e:?}"
            );
            assert!(e.is_definite());
            let e = obj.read(client, Consistency::All).await.unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Unavailable {
                        needed: 3,
                        reachable: 2
                    }
                ),
                "{obj:?}: {e:?}"
            );
        }
        // The refused write had no effect.
        assert_eq!(
            obj.read(&eu, Consistency::Quorum).await?,
            after_steps(obj, 1)
        );
        write_step(&us, obj, 2, Consistency::Quorum).await?;
        assert_eq!(
            obj.read(&eu, Consistency::Quorum).await?,
            after_steps(obj, 2)
        );
        write_step(&eu, obj, 3, Consistency::Leader).await?;
        assert_eq!(
            obj.read(&us, Consistency::Leader).await?,
            after_steps(obj, 3)
        );
    }

    cluster.restart(AP).await?;
    cluster.wait_connected().await;
    let ap = cluster.client(AP).await?;
    for obj in &objs {
        assert_eq!(obj.read(&ap, Consistency::All).await?, after_steps(obj, 3));
        write_step(&ap, obj, 4, Consistency::All).await?;
        assert_eq!(
            obj.read(&us, Consistency::Local).await?,
            after_steps(obj, 4)
        );
    }
    cluster.shutdown().await
}

/// Starts block `block`'s three nodes with ap-south-1 never pulling (an
/// hour between its anti-entropy rounds and wants) and with us-east-1
/// dropping everything it would send to ap-south-1 (a one-sided cut:
/// ap-south-1 and eu-west-1 still talk). Writes originated on us-east-1
/// then reach eu-west-1 only, and ap-south-1 stays stale until a read
/// repairs it. Undo the cut with `set_link("ap-south", Link::default())`.
async fn start_with_stale_ap(block: u8) -> Result<InProcessCluster> {
    let dir = TestClusterFiles::create(Spec::new(block))?;
    let cluster = InProcessCluster::start_with(dir, |name| {
        let mut p = test_protocol(name);
        if name == AP {
            p.anti_entropy_ms = NEVER_MS;
            p.want_timeout_ms = NEVER_MS;
        }
        p
    })
    .await?;
    cluster.wait_connected().await;
    cluster.node(US).set_link(
        "ap-south",
        Link {
            delay_ms: 0,
            cut: true,
        },
    );
    Ok(cluster)
}

/// Read repair: a replica that missed writes holds the joined state as soon
/// as a quorum or `all` read that included it returns, long before
/// anti-entropy would have brought it.
///
/// Setup: ap-south-1 pulls only once an hour; us-east-1 drops everything
/// it would send to ap-south-1 (a one-sided cut: ap-south-1 and eu-west-1
/// still talk). Writes originated on us-east-1 then reach eu-west-1 only:
/// eu-west-1 never pushes deltas it did not originate, and ap-south-1
/// doesn't ask. The test checks it stays stale, then that each read repairs
/// exactly the object read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_repair_a_stale_replica_before_returning() -> Result<()> {
    let cluster = start_with_stale_ap(12).await?;
    let us = cluster.client(US).await?;
    let eu = cluster.client(EU).await?;
    let ap = cluster.client(AP).await?;
    let [counter, set, register] = counter_set_register("r");

    us.counter("r-counter")
        .incr(5)
        .consistency(Consistency::Quorum)
        .await?;
    us.set("r-set")
        .add(["repaired"])
        .consistency(Consistency::Quorum)
        .await?;
    us.register("r-register")
        .put("repaired")
        .consistency(Consistency::Quorum)
        .await?;
    let want = [
        Val::Counter(5),
        set_of(["repaired"]),
        Val::Register(Some(b"repaired".to_vec())),
    ];
    assert_eq!(
        [
            counter.stored(cluster.node(EU)),
            set.stored(cluster.node(EU)),
            register.stored(cluster.node(EU))
        ],
        want
    );

    // ap-south-1 is stale, and stays so.
    let node = || cluster.node(AP);
    let stale = [
        Val::Counter(0),
        set_of(Vec::<String>::new()),
        Val::Register(None),
    ];
    let stored = || {
        [
            counter.stored(node()),
            set.stored(node()),
            register.stored(node()),
        ]
    };
    assert_eq!(stored(), stale);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        stored(),
        stale,
        "something other than a read repaired ap-south-1"
    );
    assert!(cluster.node(EU).mesh().is_live(AP) && node().mesh().is_live(EU));

    // A quorum read coordinated by the stale replica itself repairs it
    // before answering; the other objects stay stale.
    assert_eq!(counter.read(&ap, Consistency::Quorum).await?, want[0]);
    assert_eq!(
        stored(),
        [want[0].clone(), stale[1].clone(), stale[2].clone()]
    );

    // An `all` read coordinated elsewhere writes the join back to it.
    assert_eq!(set.read(&eu, Consistency::All).await?, want[1]);
    assert_eq!(
        stored(),
        [want[0].clone(), want[1].clone(), stale[2].clone()]
    );

    assert_eq!(register.read(&ap, Consistency::Quorum).await?, want[2]);
    assert_eq!(stored(), want);
    // ap-south-1 serves them locally from now on.
    for (obj, value) in [&counter, &set, &register].into_iter().zip(&want) {
        assert_eq!(&obj.read(&ap, Consistency::Local).await?, value);
    }
    cluster.node(US).set_link("ap-south", Link::default());
    cluster.shutdown().await
}

/// Waits until every node in `watchers` sees `down` as not live.
async fn wait_down(cluster: &InProcessCluster, watchers: &[&str], down: &str) {
    eventually(
        &format!("{watchers:?} notice {down} is down"),
        DETECT,
        || async {
            if watchers
                .iter()
                .any(|w| cluster.node(w).mesh().is_live(down))
            {
                Err("still live".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await;
}

/// `replicas-2` on three replicas with one down: the write is acknowledged
/// only once two replicas hold it durably (with the link to the other live
/// replica slowed, the write still finds it there, fsynced, the moment it
/// returns). With two down it fails at once, `Unavailable` (definite), and
/// nothing changes anywhere. A count above the key's replicas is
/// `InvalidArgument`, never clamped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_n_waits_for_n_durable_copies_and_refuses_without_them() -> Result<()> {
    let mut cluster = InProcessCluster::start(Spec::new(17)).await?;
    cluster.wait_connected().await;
    let objs = counter_set_register("n");
    let us = cluster.client(US).await?;
    let two = Consistency::Replicas(2);

    cluster.stop(AP).await?;
    wait_down(&cluster, &[US, EU], AP).await;
    // Deltas from us-east-1 reach eu-west-1 only after 300 ms: a write
    // acknowledged before eu-west-1 has it would be caught below.
    cluster.node(US).set_link(
        "eu-west",
        Link {
            delay_ms: 300,
            cut: false,
        },
    );
    for obj in &objs {
        write_step(&us, obj, 1, two).await?;
        for node in [US, EU] {
            assert_eq!(
                obj.stored(cluster.node(node)),
                after_steps(obj, 1),
                "{node} {obj:?}"
            );
        }
    }
    // Durably: everything eu-west-1 applied is in its durable context.
    let eu = cluster.node(EU).engine();
    assert!(eu.durable().vector().dominates(eu.applied().vector()));
    cluster.node(US).set_link("eu-west", Link::default());

    // A count the key's three replicas cannot serve is refused, definitely.
    // (replicas-0 the client refuses before sending; replicas-4 the node.)
    for level in [Consistency::Replicas(4), Consistency::Replicas(0)] {
        let e = write_step(&us, &objs[0], 9, level).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{level}: {e:?}");
        assert!(e.is_definite());
    }

    cluster.stop(EU).await?;
    wait_down(&cluster, &[US], EU).await;
    for obj in &objs {
        let write = write_step(&us, obj, 2, two).await.unwrap_err();
        let read = obj.read(&us, two).await.unwrap_err();
        for e in [write, read] {
            assert!(
                matches!(
                    e,
                    Error::Unavailable {
                        needed: 2,
                        reachable: 1
                    }
                ),
                "{obj:?}: {e:?}"
            );
            assert!(e.is_definite());
        }
        // replicas-1 needs this replica alone.
        assert_eq!(
            obj.read(&us, Consistency::Replicas(1)).await?,
            after_steps(obj, 1)
        );
    }

    // Nothing changed anywhere: the replicas that were up hold step 1,
    // and once all are back every replica agrees on step 1.
    cluster.restart(EU).await?;
    cluster.restart(AP).await?;
    cluster.wait_connected().await;
    let ap = cluster.client(AP).await?;
    for obj in &objs {
        assert_eq!(
            obj.read(&ap, Consistency::All).await?,
            after_steps(obj, 1),
            "{obj:?}"
        );
        for node in [US, EU, AP] {
            assert_eq!(
                obj.stored(cluster.node(node)),
                after_steps(obj, 1),
                "{node} {obj:?}"
            );
        }
    }
    cluster.shutdown().await
}

/// A `replicas-2` read sees a `replicas-2` write made through another node
/// on three replicas (2 + 2 > 3), even from the one replica the write
/// missed, and repairs it; a `replicas-1` read there (1 + 2 = 3: no
/// promise) does not. Same setup as the read-repair test: us-east-1 never
/// sends to ap-south-1, which does not pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_reads_see_replicas_writes_when_the_counts_overlap() -> Result<()> {
    let cluster = start_with_stale_ap(18).await?;
    let us = cluster.client(US).await?;
    let ap = cluster.client(AP).await?;
    let two = Consistency::Replicas(2);
    let objs = counter_set_register("o");
    for obj in &objs {
        write_step(&us, obj, 1, two).await?;
        assert_eq!(obj.stored(cluster.node(EU)), after_steps(obj, 1));
        assert_eq!(obj.stored(cluster.node(AP)), after_steps(obj, 0), "{obj:?}");
        // replicas-1 at the replica the write missed: its own stale state.
        assert_eq!(
            obj.read(&ap, Consistency::Replicas(1)).await?,
            after_steps(obj, 0)
        );
        // replicas-2 joins it with another replica's: the write is seen,
        // and written back to ap-south-1 before the answer.
        assert_eq!(obj.read(&ap, two).await?, after_steps(obj, 1), "{obj:?}");
        assert_eq!(obj.stored(cluster.node(AP)), after_steps(obj, 1), "{obj:?}");
    }
    cluster.node(US).set_link("ap-south", Link::default());
    cluster.shutdown().await
}
