//! End-to-end replication: in-process nodes on real sockets (QUIC mesh,
//! real engines), three regions with one node each unless said otherwise.
//!
//! Address blocks (`127.31.<block>.x`): 1 convergence, 2 partition,
//! 3 bridge, 4 placement, 5 and 6 foreign CA. Catch-up by full-state
//! sync: `tests/full_sync.rs`. The SIGKILL catch-up test
//! needs real processes: see `tests/process.rs`.

use std::time::Duration;

use anyhow::Result;
use meridian::objects::{agreed, client_of, converge_to, set_of};
use meridian::{CONVERGE, InProcessCluster, Obj, Spec, TestClusterFiles, Val, eventually};
use meridian_client::{Client, Consistency, Error};

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const AP: &str = "ap-south-1";

/// Writes of every type (counter incr/delete, set add/remove/delete,
/// register put/delete), issued concurrently on every node, converge on
/// every node to the values the CRDTs promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_of_every_type_converge_on_every_node() -> Result<()> {
    let cluster = InProcessCluster::start(Spec::new(1)).await?;
    cluster.wait_connected().await;
    let clients = cluster.dir.clients().await?;
    let names = cluster.names();

    // Phase 1: every node writes at once, at `local` level (replicated
    // asynchronously), to shared objects and to objects of its own.
    let mut tasks = Vec::new();
    for (i, (name, client)) in clients.iter().enumerate() {
        let (name, client) = (name.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let local = Consistency::Local;
            for _ in 0..10 {
                client
                    .counter("shared-counter")
                    .incr(i as i64 + 1)
                    .consistency(local)
                    .await?;
            }
            client
                .counter(format!("own-counter-{i}"))
                .incr(7)
                .consistency(local)
                .await?;
            client
                .counter(format!("own-counter-{i}"))
                .incr(-2)
                .consistency(local)
                .await?;
            let (a, b) = (format!("{name}-a"), format!("{name}-b"));
            client
                .set("shared-set")
                .add([a.as_str(), b.as_str(), "common"])
                .consistency(local)
                .await?;
            client
                .set("shared-set")
                .remove([b.as_str()])
                .consistency(local)
                .await?;
            client
                .set("members")
                .add([format!("{name}-m")])
                .consistency(local)
                .await?;
            client
                .register("shared-register")
                .put(name.clone())
                .consistency(local)
                .await?;
            client
                .register("concurrent-register")
                .put(name.clone())
                .consistency(local)
                .await?;
            client
                .register(format!("own-register-{i}"))
                .put(format!("v1-{name}"))
                .consistency(local)
                .await?;
            client
                .register(format!("own-register-{i}"))
                .put(format!("v2-{name}"))
                .consistency(local)
                .await?;
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }

    let mut objects = vec![
        Obj::counter("shared-counter"),
        Obj::set("shared-set"),
        Obj::set("members"),
        Obj::register("shared-register"),
    ];
    for i in 0..names.len() {
        objects.push(Obj::counter(format!("own-counter-{i}")));
        objects.push(Obj::register(format!("own-register-{i}")));
    }
    let concurrent = Obj::register("concurrent-register");
    // Concurrent puts: every node ends with the same one of them.
    let winner = eventually("the concurrent register converges", CONVERGE, || async {
        match agreed(&clients, std::slice::from_ref(&concurrent))
            .await?
            .as_slice()
        {
            [Val::Register(Some(v))] => Ok(v.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        names.iter().any(|n| n.as_bytes() == winner),
        "{winner:?} was never written"
    );

    let shared_register = eventually("the shared register converges", CONVERGE, || async {
        match agreed(&clients, &[Obj::register("shared-register")])
            .await?
            .as_slice()
        {
            [Val::Register(Some(v))] => Ok(v.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let mut expected = vec![
        Val::Counter(10 * (1 + 2 + 3)),
        set_of(
            names
                .iter()
                .map(|n| format!("{n}-a"))
                .chain(["common".to_owned()]),
        ),
        set_of(names.iter().map(|n| format!("{n}-m"))),
        Val::Register(Some(shared_register)),
    ];
    for n in &names {
        expected.push(Val::Counter(5));
        expected.push(Val::Register(Some(format!("v2-{n}").into_bytes())));
    }
    converge_to(&clients, &objects, &expected).await;

    // Phase 2: deletes and removes of what every node has observed, each
    // issued on a node other than the writers, at other levels.
    let (c0, c1, c2) = (&clients[0].1, &clients[1].1, &clients[2].1);
    Obj::counter("shared-counter")
        .delete(c1, Consistency::Quorum)
        .await?;
    Obj::set("shared-set")
        .delete(c2, Consistency::Leader)
        .await?;
    Obj::register("shared-register")
        .delete(c0, Consistency::All)
        .await?;
    Obj::counter("own-counter-0")
        .delete(c2, Consistency::Local)
        .await?;
    c0.set("members")
        .remove([format!("{}-m", names[1])])
        .consistency(Consistency::Local)
        .await?;
    Obj::register("own-register-1")
        .delete(c2, Consistency::Local)
        .await?;
    expected[0] = Val::Counter(0);
    expected[1] = set_of(Vec::<String>::new());
    expected[2] = set_of([format!("{}-m", names[0]), format!("{}-m", names[2])]);
    expected[3] = Val::Register(None);
    expected[4] = Val::Counter(0);
    expected[7] = Val::Register(None);
    converge_to(&clients, &objects, &expected).await;

    // Phase 3: deleted objects take new writes, from yet other nodes.
    c2.counter("shared-counter")
        .incr(3)
        .consistency(Consistency::Local)
        .await?;
    c0.set("shared-set")
        .add(["after"])
        .consistency(Consistency::Local)
        .await?;
    c1.register("shared-register")
        .put("again")
        .consistency(Consistency::Local)
        .await?;
    expected[0] = Val::Counter(3);
    expected[1] = set_of(["after"]);
    expected[3] = Val::Register(Some(b"again".to_vec()));
    converge_to(&clients, &objects, &expected).await;

    cluster.shutdown().await
}

/// A node cut off from the others (all traffic blocked both ways) keeps
/// serving `local` requests but refuses `quorum` and `all`; the majority
/// side keeps serving `quorum`; after the cut heals, every write converges
/// on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_node_serves_local_and_converges_after_heal() -> Result<()> {
    let cluster = InProcessCluster::start(Spec::new(2)).await?;
    cluster.wait_connected().await;
    let clients = cluster.dir.clients().await?;
    let (us, ap) = (client_of(&clients, US), client_of(&clients, AP));
    let objects = [
        Obj::counter("p-counter"),
        Obj::set("p-set"),
        Obj::register("p-register"),
    ];

    us.counter("p-counter")
        .incr(1)
        .consistency(Consistency::Quorum)
        .await?;
    us.set("p-set")
        .add(["before", "kept"])
        .consistency(Consistency::Quorum)
        .await?;
    converge_to(
        &clients,
        &objects,
        &[
            Val::Counter(1),
            set_of(["before", "kept"]),
            Val::Register(None),
        ],
    )
    .await;

    cluster.isolate(AP);
    let ap_node = cluster.node(AP);
    assert!(!ap_node.mesh().is_live(US) && !ap_node.mesh().is_live(EU));
    assert!(!cluster.node(US).mesh().is_live(AP) && !cluster.node(EU).mesh().is_live(AP));

    // The cut-off node: `local` writes succeed.
    ap.counter("p-counter")
        .incr(10)
        .consistency(Consistency::Local)
        .await?;
    ap.set("p-set")
        .add(["ap-side"])
        .consistency(Consistency::Local)
        .await?;
    ap.register("p-register")
        .put("ap-value")
        .consistency(Consistency::Local)
        .await?;
    // ... `quorum` and `all` writes and reads fail, and say so definitely
    // when the node knows it cannot reach enough replicas.
    let timeout = Duration::from_secs(2);
    for level in [Consistency::Quorum, Consistency::All] {
        let w = ap
            .counter("p-counter")
            .incr(1000)
            .consistency(level)
            .timeout(timeout)
            .await;
        let r = ap
            .set("p-set")
            .members()
            .consistency(level)
            .timeout(timeout)
            .await;
        for e in [w.map(drop).unwrap_err(), r.map(drop).unwrap_err()] {
            assert!(
                matches!(e, Error::Unavailable { needed, reachable: 1 } if needed >= 2),
                "{level}: {e:?}"
            );
            assert!(e.is_definite());
        }
    }
    // The majority side: `quorum` succeeds, `all` does not.
    us.counter("p-counter")
        .incr(100)
        .consistency(Consistency::Quorum)
        .await?;
    us.set("p-set")
        .add(["us-side"])
        .consistency(Consistency::Quorum)
        .await?;
    us.set("p-set")
        .remove(["before"])
        .consistency(Consistency::Quorum)
        .await?;
    let e = us
        .counter("p-counter")
        .incr(1000)
        .consistency(Consistency::All)
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
        "{e:?}"
    );
    // Nothing crosses the cut.
    assert_eq!(
        Obj::counter("p-counter")
            .read(ap, Consistency::Local)
            .await?,
        Val::Counter(11)
    );
    assert_eq!(
        Obj::counter("p-counter")
            .read(us, Consistency::Quorum)
            .await?,
        Val::Counter(101)
    );

    cluster.rejoin(AP);
    let expected = [
        Val::Counter(111),
        set_of(["kept", "ap-side", "us-side"]),
        Val::Register(Some(b"ap-value".to_vec())),
    ];
    converge_to(&clients, &objects, &expected).await;
    // And the healed node counts towards quorums again.
    eventually("a quorum write on the healed node", CONVERGE, || async {
        ap.counter("p-counter")
            .incr(0)
            .consistency(Consistency::Quorum)
            .await
            .map_err(|e| e.to_string())
    })
    .await;

    cluster.shutdown().await
}

/// Bridge topology: the first and last region can't talk to each other,
/// both talk to the middle one; writes on either side reach the other
/// through the middle node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bridge_topology_converges_through_the_middle_node() -> Result<()> {
    let cluster = InProcessCluster::start(Spec::new(3)).await?;
    cluster.wait_connected().await;
    cluster.cut(US, AP);
    let clients = cluster.dir.clients().await?;
    let (us, ap) = (client_of(&clients, US), client_of(&clients, AP));
    let from_ap = meridian::marker();

    us.counter("b-counter")
        .incr(1)
        .consistency(Consistency::Local)
        .await?;
    us.set("b-set")
        .add(["from-us"])
        .consistency(Consistency::Local)
        .await?;
    us.register("b-register")
        .put("first")
        .consistency(Consistency::Local)
        .await?;
    ap.counter("b-counter")
        .incr(2)
        .consistency(Consistency::Local)
        .await?;
    ap.set("b-set")
        .add([from_ap.clone()])
        .consistency(Consistency::Local)
        .await?;
    let objects = [Obj::counter("b-counter"), Obj::set("b-set")];
    let expected = [
        Val::Counter(3),
        set_of([b"from-us".to_vec(), from_ap.clone()]),
    ];
    converge_to(&clients, &objects, &expected).await;
    // A later write on one side replaces the register on the other.
    ap.register("b-register")
        .put("second")
        .consistency(Consistency::Local)
        .await?;
    converge_to(
        &clients,
        &[Obj::register("b-register")],
        &[Val::Register(Some(b"second".to_vec()))],
    )
    .await;

    // It really went around: the cut held, and us-east-1 got the member
    // only from eu-west-1.
    assert!(!cluster.node(US).mesh().is_live(AP) && !cluster.node(AP).mesh().is_live(US));
    let senders = cluster.frames(US).senders_of(&from_ap);
    assert!(
        !senders.is_empty() && senders.iter().all(|s| s == EU),
        "{senders:?}"
    );

    cluster.heal(US, AP);
    cluster.shutdown().await
}

/// Placement: keys under `eu/` live only in eu-west (two nodes there).
/// Requests for them sent to nodes of other regions are served (forwarded),
/// the eu-west replicas hold them, and no other node ever receives them in
/// a frame or stores them in its data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placement_pinned_keys_never_leave_their_region() -> Result<()> {
    let spec = Spec::new(4)
        .nodes_per_region(2)
        .placement("eu/", &["eu-west"]);
    let cluster = InProcessCluster::start(spec).await?;
    cluster.wait_connected().await;
    let clients = cluster.dir.clients().await?;
    let eu: Vec<String> = cluster
        .names()
        .into_iter()
        .filter(|n| n.starts_with("eu-west"))
        .collect();
    let others: Vec<String> = cluster
        .names()
        .into_iter()
        .filter(|n| !n.starts_with("eu-west"))
        .collect();
    assert_eq!((eu.len(), others.len()), (2, 4));

    // Distinctive bytes in the keys, the members and the value.
    let (key_marker, counter_marker, member, value) = (
        meridian::marker(),
        meridian::marker(),
        meridian::marker(),
        meridian::marker(),
    );
    let pinned = |m: &[u8]| [b"eu/".as_slice(), m].concat();
    let set = Obj::set(pinned(&key_marker));
    let register = Obj::register(pinned(&key_marker));
    let counter = Obj::counter(pinned(&counter_marker));

    // Written only through non-eu nodes, at every level: all served.
    let via = |name: &str| client_of(&clients, name).clone();
    let a = via(&others[0])
        .set(set.key().to_vec())
        .add([member.clone()])
        .consistency(Consistency::Local)
        .await?;
    assert!(a.value.contains(&member) && eu.contains(&a.node), "{a:?}");
    via(&others[1])
        .counter(counter.key().to_vec())
        .incr(5)
        .consistency(Consistency::Leader)
        .await?;
    via(&others[2])
        .register(register.key().to_vec())
        .put(value.clone())
        .consistency(Consistency::Quorum)
        .await?;
    via(&others[3])
        .counter(counter.key().to_vec())
        .incr(2)
        .consistency(Consistency::All)
        .await?;
    // Read back through non-eu nodes at every level.
    let expected = [
        set_of([member.clone()]),
        Val::Counter(7),
        Val::Register(Some(value.clone())),
    ];
    let pinned_objects = [set.clone(), counter.clone(), register.clone()];
    for (i, level) in [
        Consistency::Local,
        Consistency::Leader,
        Consistency::Quorum,
        Consistency::All,
    ]
    .into_iter()
    .enumerate()
    {
        let client = via(&others[i % others.len()]);
        eventually(
            &format!("{level} read of pinned keys through {}", others[i]),
            CONVERGE,
            || async {
                let got = meridian::objects::read_all(&client, &pinned_objects, level)
                    .await
                    .map_err(|e| e.to_string())?;
                if got == expected {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            },
        )
        .await;
    }
    // `leader` requests through non-eu nodes are served by the key's leader
    // (the first node of its preference list), whichever replica is nearest
    // to the forwarding node: pinned keys led by each eu-west node.
    let placement = cluster.dir.config(&others[0])?.cluster_placement();
    let mut led: Vec<(Vec<u8>, String)> = Vec::new();
    for i in 0..64u8 {
        let key = pinned(&[key_marker.as_slice(), &[i]].concat());
        let leader = placement.preference_list(&key)[0].to_owned();
        if led.iter().filter(|(_, l)| *l == leader).count() < 2 {
            led.push((key, leader));
        }
    }
    assert_eq!(led.len(), 4, "keys led by each eu-west node");
    for (key, leader) in &led {
        for name in &others {
            let client = via(name);
            let w = client
                .counter(key.clone())
                .incr(1)
                .consistency(Consistency::Leader);
            assert_eq!(&w.await?.node, leader, "leader write via {name}");
            let r = client
                .counter(key.clone())
                .read()
                .consistency(Consistency::Leader);
            assert_eq!(&r.await?.node, leader, "leader read via {name}");
        }
    }

    // Both eu-west replicas hold them.
    eventually(
        "both eu-west replicas hold the pinned objects",
        CONVERGE,
        || async {
            for name in &eu {
                let node = cluster.node(name);
                let got: Vec<Val> = pinned_objects.iter().map(|o| o.stored(node)).collect();
                if got != expected {
                    return Err(format!("{name} holds {got:?}"));
                }
            }
            Ok(())
        },
    )
    .await;

    // Positive control: an unpinned key written after the pinned ones
    // reaches every node, so replication traffic flowed past the pinned
    // writes to every region.
    let everywhere = meridian::marker();
    via(&eu[0])
        .set("global")
        .add([everywhere.clone()])
        .consistency(Consistency::Local)
        .await?;
    converge_to(
        &clients,
        &[Obj::set("global")],
        &[set_of([everywhere.clone()])],
    )
    .await;

    for name in cluster.names() {
        cluster.node(&name).engine().checkpoint()?;
    }
    let needles = [&key_marker, &counter_marker, &member, &value];
    for name in &others {
        let node = cluster.node(name);
        for obj in &pinned_objects {
            let empty = match obj {
                Obj::Counter(_) => Val::Counter(0),
                Obj::Set(_) => set_of(Vec::<Vec<u8>>::new()),
                Obj::Register(_) => Val::Register(None),
                Obj::Map(_) => Val::Map(Vec::new()),
            };
            assert_eq!(obj.stored(node), empty, "{name} stores {obj:?}");
        }
        let frames = cluster.frames(name);
        assert_eq!(frames.dropped(), 0);
        assert!(!frames.is_empty(), "{name} received no frames at all");
        for needle in needles {
            assert_eq!(
                frames.senders_of(needle),
                Vec::<String>::new(),
                "{name} received pinned bytes"
            );
            let files = meridian::files_containing(&node.data_dir, needle)?;
            assert!(files.is_empty(), "{name} stored pinned bytes in {files:?}");
        }
        // The unpinned marker is there: the scan does find what is stored.
        assert!(
            !meridian::files_containing(&node.data_dir, &everywhere)?.is_empty(),
            "{name}"
        );
    }
    for name in &eu {
        let node = cluster.node(name);
        for needle in [&key_marker, &member, &value] {
            assert!(
                !meridian::files_containing(&node.data_dir, needle)?.is_empty(),
                "{name}"
            );
        }
    }
    cluster.shutdown().await
}

/// Certificates from another cluster's CA are refused on both interfaces:
/// a node of another cluster, configured to dial this cluster's nodes with
/// the same node name as a missing member, never joins, never receives a
/// frame and never sends one; a client with the other cluster's
/// client.toml can't connect. This cluster keeps serving throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_and_clients_of_another_ca_are_refused() -> Result<()> {
    // This cluster: us-east-1 and eu-west-1 run; ap-south-1 is missing.
    let mut cluster = InProcessCluster::new(
        TestClusterFiles::create(Spec::new(5))?,
        meridian::inproc::test_protocol,
    );
    cluster.restart(US).await?;
    cluster.restart(EU).await?;
    cluster.wait_connected().await;
    // Another cluster, same names, other CA; its ap-south-1 dials ours.
    let foreign_dir = TestClusterFiles::create(Spec::new(6))?;
    let ours = |name: &str| cluster.node(name).addresses.peer.to_string();
    let (our_us, our_eu) = (ours(US), ours(EU));
    foreign_dir.edit(AP, |f| {
        for peer in &mut f.peers {
            peer.address = if peer.name == US {
                our_us.clone()
            } else {
                our_eu.clone()
            };
        }
    })?;
    let mut foreign = InProcessCluster::new(foreign_dir, meridian::inproc::test_protocol);
    foreign.restart(AP).await?;

    let us = &cluster.client(US).await?;
    let secret = meridian::marker();
    // Data the impostor would receive if it had joined. Keep writing while
    // it keeps dialing (its dial backoff grows to 2 s: several attempts).
    for i in 0..30 {
        us.set("secret")
            .add([[secret.as_slice(), &[i]].concat()])
            .consistency(Consistency::Quorum)
            .await?;
        for name in [US, EU] {
            let node = cluster.node(name);
            assert!(!node.mesh().is_live(AP), "{name} counts the impostor live");
            assert!(
                !node
                    .mesh()
                    .reports()
                    .iter()
                    .any(|r| r.name == AP && r.connected)
            );
        }
        let impostor = foreign.node(AP);
        assert!(!impostor.mesh().is_live(US) && !impostor.mesh().is_live(EU));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // `all` needs the real ap-south-1, which the impostor does not stand in for.
    let e = us
        .set("secret")
        .members()
        .consistency(Consistency::All)
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
        "{e:?}"
    );
    for name in [US, EU] {
        assert!(
            !cluster.frames(name).senders().contains(&AP.to_owned()),
            "{name} heard from the impostor"
        );
    }
    assert!(
        foreign.frames(AP).is_empty(),
        "the impostor received frames"
    );
    assert_eq!(
        Obj::set("secret").stored(foreign.node(AP)),
        set_of(Vec::<Vec<u8>>::new())
    );
    foreign.node(AP).engine().checkpoint()?;
    assert!(meridian::files_containing(&foreign.node(AP).data_dir, &secret)?.is_empty());

    // The other cluster's client.toml, pointed at this cluster's nodes.
    let mut config = foreign.dir.client_config()?;
    let our_config = cluster.dir.client_config()?;
    config.nodes = our_config.nodes.clone();
    let e = Client::connect(config.pinned(US)).await.unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    // The other CA's client certificate, even with this cluster's CA and
    // token: the node refuses the handshake.
    let mut config = our_config.clone();
    config.cert_pem = foreign.dir.client_config()?.cert_pem;
    config.key_pem = foreign.dir.client_config()?.key_pem;
    let e = Client::connect(config.pinned(EU)).await.unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");

    // This cluster kept serving.
    let members = us
        .set("secret")
        .members()
        .consistency(Consistency::Quorum)
        .await?;
    assert_eq!(members.value.count, 30);
    let fresh = cluster.dir.client(EU).await?;
    fresh
        .counter("after")
        .incr(1)
        .consistency(Consistency::Quorum)
        .await?;

    foreign.shutdown().await?;
    cluster.shutdown().await
}
