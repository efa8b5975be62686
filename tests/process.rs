//! End-to-end tests that need real `meridian serve` processes: SIGKILL
//! (crash and catch-up, leader failover) and the command's exit status.
//!
//! Address blocks (`127.31.<block>.x`): 20 crash and catch-up, 21 leader
//! failover, 22 exit status.

use std::collections::BTreeSet;
use std::net::{TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use meridian::objects::{agreed, client_of, converge_to, set_of};
use meridian::process::run_meridian;
use meridian::{CONVERGE, Obj, ProcessCluster, Spec, Val, eventually};
use meridian_client::{Consistency, Error};

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const AP: &str = "ap-south-1";

/// Writes acknowledged by the crashing node before it is killed, at least.
const ACKED_BEFORE_KILL: usize = 150;

/// A node killed with SIGKILL and restarted catches up on every write of
/// every type it missed (increments, adds, removes, puts, deletes); and a
/// node killed while it was acknowledging writes, alone, keeps every write
/// it acknowledged, which then reaches the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_node_catches_up_and_keeps_what_it_acknowledged() -> Result<()> {
    let mut cluster = ProcessCluster::create(Spec::new(20))?;
    cluster.start_all()?;
    let clients = cluster.wait_all_serving().await;
    let (us, eu) = (
        client_of(&clients, US).clone(),
        client_of(&clients, EU).clone(),
    );
    let objects = [
        Obj::counter("k-counter"),
        Obj::set("k-set"),
        Obj::register("k-register"),
        Obj::counter("k-deleted-counter"),
        Obj::set("k-deleted-set"),
        Obj::register("k-deleted-register"),
    ];
    let quorum = Consistency::Quorum;
    us.counter("k-counter").incr(1).consistency(quorum).await?;
    us.set("k-set").add(["base"]).consistency(quorum).await?;
    us.register("k-register")
        .put("base")
        .consistency(quorum)
        .await?;
    us.counter("k-deleted-counter")
        .incr(5)
        .consistency(quorum)
        .await?;
    us.set("k-deleted-set")
        .add(["base"])
        .consistency(quorum)
        .await?;
    us.register("k-deleted-register")
        .put("base")
        .consistency(quorum)
        .await?;
    let mut expected = vec![
        Val::Counter(1),
        set_of(["base"]),
        Val::Register(Some(b"base".to_vec())),
        Val::Counter(5),
        set_of(["base"]),
        Val::Register(Some(b"base".to_vec())),
    ];
    converge_to(&clients, &objects, &expected).await;

    // ap-south-1 crashes; the others keep writing (quorum: 2 of 3).
    cluster.process(AP).kill();
    let missed: Vec<String> = (0..100).map(|i| format!("missed-{i}")).collect();
    us.counter("k-counter").incr(10).consistency(quorum).await?;
    eu.set("k-set")
        .add(missed.clone())
        .consistency(quorum)
        .await?;
    eu.set("k-set").remove(["base"]).consistency(quorum).await?;
    us.register("k-register")
        .put("missed")
        .consistency(quorum)
        .await?;
    eu.counter("k-deleted-counter")
        .delete()
        .consistency(quorum)
        .await?;
    us.set("k-deleted-set").delete().consistency(quorum).await?;
    eu.register("k-deleted-register")
        .delete()
        .consistency(quorum)
        .await?;
    for i in 0..50 {
        eu.counter("k-counter")
            .incr(1)
            .consistency(Consistency::Local)
            .await?;
        us.set("k-set")
            .add([format!("late-{i}")])
            .consistency(Consistency::Local)
            .await?;
    }
    expected = vec![
        Val::Counter(61),
        set_of(
            missed
                .iter()
                .cloned()
                .chain((0..50).map(|i| format!("late-{i}"))),
        ),
        Val::Register(Some(b"missed".to_vec())),
        Val::Counter(0),
        set_of(Vec::<String>::new()),
        Val::Register(None),
    ];
    cluster.process(AP).start()?;
    let clients = cluster.wait_all_serving().await;
    converge_to(&clients, &objects, &expected).await;

    // Now ap-south-1 alone acknowledges writes and is killed mid-stream:
    // only its own log can hold them.
    assert!(
        cluster.process(US).terminate()?.success(),
        "us-east-1 did not exit cleanly"
    );
    assert!(
        cluster.process(EU).terminate()?.success(),
        "eu-west-1 did not exit cleanly"
    );
    let ap = client_of(&clients, AP).clone();
    let acked = Arc::new(Mutex::new((BTreeSet::new(), 0i64)));
    let attempted = Arc::new(Mutex::new((BTreeSet::new(), 0i64)));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (ap, acked, attempted) = (ap.clone(), acked.clone(), attempted.clone());
        writers.push(tokio::spawn(async move {
            for j in 0..10_000 {
                let member = format!("acked-{w}-{j}");
                attempted.lock().unwrap().0.insert(member.clone());
                let add = ap
                    .set("k-set")
                    .add([member.clone()])
                    .consistency(Consistency::Local);
                if add.await.is_err() {
                    return;
                }
                acked.lock().unwrap().0.insert(member);
                attempted.lock().unwrap().1 += 1;
                let incr = ap
                    .counter("k-counter")
                    .incr(1)
                    .consistency(Consistency::Local);
                if incr.await.is_err() {
                    return;
                }
                acked.lock().unwrap().1 += 1;
            }
        }));
    }
    eventually("ap-south-1 acknowledges writes", CONVERGE, || async {
        let n = acked.lock().unwrap().0.len();
        if n >= ACKED_BEFORE_KILL {
            Ok(())
        } else {
            Err(format!("{n} acknowledged"))
        }
    })
    .await;
    cluster.process(AP).kill();
    for w in writers {
        w.await?;
    }
    let (acked_members, acked_incrs) = acked.lock().unwrap().clone();
    let (attempted_members, attempted_incrs) = attempted.lock().unwrap().clone();
    eprintln!(
        "killed after {} acknowledged adds ({} attempted), {acked_incrs} acknowledged \
         increments ({attempted_incrs} attempted)",
        acked_members.len(),
        attempted_members.len()
    );

    cluster.process(AP).start()?;
    let ap = cluster.wait_serving(AP, &[]).await;
    let check = |values: &[Val]| -> Result<(), String> {
        let Val::Counter(count) = values[0] else {
            unreachable!()
        };
        let Val::Set(members) = &values[1] else {
            unreachable!()
        };
        let members: BTreeSet<String> = members
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect();
        if let Some(lost) = acked_members.iter().find(|m| !members.contains(*m)) {
            return Err(format!("acknowledged {lost} is gone"));
        }
        let new: BTreeSet<&String> = members.iter().filter(|m| m.starts_with("acked-")).collect();
        if let Some(extra) = new.iter().find(|m| !attempted_members.contains(**m)) {
            return Err(format!("{extra} was never written"));
        }
        let incrs = count - 61;
        if incrs < acked_incrs || incrs > attempted_incrs {
            return Err(format!(
                "counter {count}: {acked_incrs}..={attempted_incrs} increments expected"
            ));
        }
        Ok(())
    };
    let alone = meridian::objects::read_all(&ap, &objects[..2], Consistency::Local).await?;
    check(&alone).map_err(anyhow::Error::msg)?;

    // The others come back and get it from ap-south-1.
    cluster.start_all()?;
    let clients = cluster.wait_all_serving().await;
    let values = eventually(
        "the acknowledged writes reach every node",
        CONVERGE,
        || async {
            let values = agreed(&clients, &objects[..2]).await?;
            check(&values)?;
            Ok(values)
        },
    )
    .await;
    assert_eq!(
        values, alone,
        "the restarted node's values changed after its restart"
    );
    Ok(())
}

/// Leader failover: `leader` writes go to a key's leader (the first live
/// node of its preference list). When the leader is SIGKILLed, `leader`
/// writes through another node succeed again once the failure detector
/// notices, served by the next node of the list; nothing acknowledged is
/// lost; after the old leader restarts, all replicas converge and it leads
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_failover_when_the_leader_is_killed() -> Result<()> {
    let mut cluster = ProcessCluster::create(Spec::new(21))?;
    cluster.start_all()?;
    let clients = cluster.wait_all_serving().await;
    let placement = cluster.dir.config(US)?.cluster_placement();
    let key = "failover";
    let preference: Vec<String> = placement
        .preference_list(key.as_bytes())
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (leader, next, third) = (
        preference[0].clone(),
        preference[1].clone(),
        preference[2].clone(),
    );
    let via = client_of(&clients, &next).clone();
    let reader = client_of(&clients, &third).clone();
    let leader_level = Consistency::Leader;

    let mut acked = BTreeSet::new();
    for i in 0..10 {
        let member = format!("before-{i}");
        let r = via
            .set(key)
            .add([member.clone()])
            .consistency(leader_level)
            .await?;
        assert_eq!(r.node, leader, "a leader write was served elsewhere");
        acked.insert(member);
    }
    assert_eq!(
        Obj::set(key).read(&reader, leader_level).await?,
        set_of(acked.clone())
    );

    cluster.process(&leader).kill();
    let killed = Instant::now();
    let mut attempted = acked.clone();
    let mut streak = 0;
    let mut failures = Vec::new();
    for j in 0..10_000 {
        assert!(
            killed.elapsed() < CONVERGE,
            "no failover within {CONVERGE:?}; failures: {failures:?}"
        );
        let member = format!("during-{j}");
        attempted.insert(member.clone());
        let write = via
            .set(key)
            .add([member.clone()])
            .consistency(leader_level)
            .timeout(Duration::from_secs(2));
        match write.await {
            Ok(r) => {
                assert_eq!(
                    r.node, next,
                    "after failover the next node of the preference list leads"
                );
                assert!(r.value.contains(member.as_bytes()));
                acked.insert(member);
                streak += 1;
                if streak == 20 {
                    break;
                }
            }
            Err(e) => {
                assert_eq!(streak, 0, "leader writes failed after failover: {e}");
                assert!(
                    matches!(e, Error::Timeout { .. } | Error::Unavailable { .. }),
                    "{e:?}"
                );
                failures.push(e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(streak, 20);
    eprintln!(
        "failover after {:?}: {} failed attempts first ({:?})",
        killed.elapsed(),
        failures.len(),
        failures.iter().map(Error::code).collect::<Vec<_>>()
    );
    // Everyone routed to the new leader reads every acknowledged write
    // (once its own failure detector noticed too).
    let read = eventually(
        "the third node routes to the new leader",
        CONVERGE,
        || async {
            let read = reader
                .set(key)
                .members()
                .consistency(leader_level)
                .timeout(Duration::from_secs(2))
                .await
                .map_err(|e| e.to_string())?;
            if read.node == next {
                Ok(read)
            } else {
                Err(format!("served by {}", read.node))
            }
        },
    )
    .await;
    let members: BTreeSet<String> = read
        .value
        .members
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert!(
        acked.is_subset(&members) && members.is_subset(&attempted),
        "{members:?}"
    );

    cluster.process(&leader).start()?;
    let clients = cluster.wait_all_serving().await;
    let agreed_members = eventually(
        "every replica has every acknowledged write",
        CONVERGE,
        || async {
            let values = agreed(&clients, &[Obj::set(key)]).await?;
            let Val::Set(members) = &values[0] else {
                unreachable!()
            };
            let members: BTreeSet<String> = members
                .iter()
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .collect();
            if acked.is_subset(&members) && members.is_subset(&attempted) {
                Ok(members)
            } else {
                Err(format!(
                    "{} members, {} acknowledged",
                    members.len(),
                    acked.len()
                ))
            }
        },
    )
    .await;
    // The restarted node leads again, with everything.
    let via = client_of(&clients, &next).clone();
    let r = eventually("the old leader leads again", CONVERGE, || async {
        let r = via
            .set(key)
            .members()
            .consistency(leader_level)
            .await
            .map_err(|e| e.to_string())?;
        if r.node == leader {
            Ok(r)
        } else {
            Err(format!("served by {}", r.node))
        }
    })
    .await;
    let members: BTreeSet<String> = r
        .value
        .members
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert_eq!(members, agreed_members);
    Ok(())
}

/// Asserts a failed `meridian` run: exit code 1 and exactly one line on
/// stderr, `error: ...`; returns that line.
fn one_line_error(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    assert_says_it_once(&stderr);
    stderr
}

/// Asserts an error line names each cause once (`a: b: b` is a cause that
/// is both in its error's message and its error's source).
fn assert_says_it_once(line: &str) {
    let parts: Vec<&str> = line.trim().split(": ").collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(part),
            "{part:?} repeated in {line:?}"
        );
    }
}

/// `meridian serve` refuses a bad config, and a port already in use, with
/// exit status 1 and one line naming the problem.
#[test]
fn serve_fails_with_one_line_on_bad_config_or_port_in_use() -> Result<()> {
    let cluster = ProcessCluster::create(Spec::new(22))?;
    let dir = &cluster.dir;
    let good = dir.config_path(US);
    let good_text = std::fs::read_to_string(&good)?;
    let serve =
        |path: &std::path::Path| run_meridian(&["serve", "--config", path.to_str().unwrap()]);

    let missing = dir.path().join("missing.toml");
    let line = one_line_error(&serve(&missing)?);
    assert!(line.contains("missing.toml"), "{line}");

    let bad = dir.path().join("bad.toml");
    let cases = [
        ("not toml at all [", "bad.toml"),
        (&*good_text.replacen("node = ", "nodes = ", 1), "node"),
        (
            &*good_text.replacen("region = \"us-east\"", "region = \"US East\"", 1),
            "region",
        ),
        (
            &*format!("{good_text}\n[[placement]]\nprefix = \"eu/\"\nregions = [\"mars\"]\n"),
            "mars",
        ),
    ];
    for (text, mention) in cases {
        std::fs::write(&bad, text)?;
        let line = one_line_error(&serve(&bad)?);
        assert!(
            line.contains("bad.toml") && line.contains(mention),
            "{line}"
        );
    }

    // Each of the node's three ports, taken by someone else.
    let node = dir.node(US);
    let resolve = |hp: &meridian_server::config::HostPort| hp.resolve().unwrap();
    for (what, taken) in [
        (
            "peer",
            Taken::Udp(UdpSocket::bind(resolve(&node.peer_listen))?),
        ),
        (
            "client",
            Taken::Udp(UdpSocket::bind(resolve(&node.client_listen))?),
        ),
        (
            "metrics",
            Taken::Tcp(TcpListener::bind(resolve(&node.metrics_listen))?),
        ),
    ] {
        let output = serve(&good)?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{what}: {stderr}");
        assert!(errors[0].contains(&taken.address()), "{what}: {stderr}");
        assert_says_it_once(errors[0]);
        assert_eq!(stderr.lines().last(), Some(errors[0]), "{what}: {stderr}");
        drop(taken);
    }
    // With the ports free it serves, and exits cleanly on SIGTERM.
    let mut cluster = cluster;
    let process = cluster.process(US);
    process.start()?;
    let started = Instant::now();
    while !process.log().contains("node serving") {
        assert!(process.is_running(), "{}", process.log());
        assert!(started.elapsed() < CONVERGE, "{}", process.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(process.terminate()?.success());
    Ok(())
}

/// A socket the test holds so that a node can't bind it.
enum Taken {
    Udp(UdpSocket),
    Tcp(TcpListener),
}

impl Taken {
    fn address(&self) -> String {
        match self {
            Taken::Udp(s) => s.local_addr().unwrap().to_string(),
            Taken::Tcp(s) => s.local_addr().unwrap().to_string(),
        }
    }
}
