//! Expiry (TTL) end to end on three in-process nodes (issue 15;
//! docs/maps-and-expiry.md section 2): every expiry command over the RESP
//! door with Redis's replies and errors, the native client's TTL
//! operations, the reclamation worker and its metrics, and the merge rules
//! across partitions:
//! * a key set with `EX 2` reads as gone on every node once the deadline
//!   has passed by that node's clock, and stays gone;
//! * a node partitioned across the deadline heals and the key stays gone
//!   everywhere;
//! * concurrent `EXPIRE 5` and `EXPIRE 50` converge to the shorter
//!   deadline on both sides; `PERSIST` concurrent with `EXPIRE` does not
//!   save the key; a write after the expiry is a fresh value with no TTL;
//! * a node that was down during the expiry and comes back to truncated
//!   logs (full-state sync) does not bring the key back.
//!
//! Timing is never asserted: deadlines passing is polled for within
//! [`CONVERGE`].
//!
//! Address blocks (`127.31.<block>.x`): 150 commands and the worker, 151
//! partitions, 152 full-state sync.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use meridian::resp::{code, q, with_resp};
use meridian::{CONVERGE, InProcessCluster, Obj, Spec, Val, eventually};
use meridian_client::{Client, Consistency, Deadline};
use meridian_engine::{Kind, ObjectKey};
use redis::Value;

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const AP: &str = "ap-south-1";
const ALL: [&str; 3] = [US, EU, AP];

/// How long a key that must stay gone is watched after it went.
const WATCH: Duration = Duration::from_secs(2);

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn resp_addr(cluster: &InProcessCluster, name: &str) -> Result<SocketAddr> {
    cluster
        .node(name)
        .addresses
        .resp
        .context("init writes resp_listen")
}

/// Polls `check` on a blocking RESP connection until it holds (within
/// [`CONVERGE`]).
fn poll(
    c: &mut redis::Connection,
    what: &str,
    mut check: impl FnMut(&mut redis::Connection) -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < CONVERGE {
        if check(c)? {
            return Ok(());
        }
        std::thread::sleep(meridian::POLL);
    }
    anyhow::bail!("{what}: still not true after {CONVERGE:?}")
}

/// A register's value as `client`'s node holds it (`local`).
async fn local_get(client: &Client, key: &str) -> Result<Option<Vec<u8>>> {
    Ok(client
        .register(key)
        .get()
        .consistency(Consistency::Local)
        .await?
        .value
        .value)
}

/// Waits until `key` (a register) reads as gone on every node, then
/// watches it stay gone for [`WATCH`], through local and quorum reads.
async fn gone_everywhere_and_stays_gone(clients: &[(String, Client)], key: &str) {
    eventually(
        &format!("{key} reads as gone on every node"),
        CONVERGE,
        || async {
            for (name, client) in clients {
                match local_get(client, key).await {
                    Ok(None) => {}
                    Ok(Some(v)) => return Err(format!("{name} still reads {v:?}")),
                    Err(e) => return Err(format!("{name}: {e}")),
                }
            }
            Ok(())
        },
    )
    .await;
    let start = Instant::now();
    while start.elapsed() < WATCH {
        for (name, client) in clients {
            let local = local_get(client, key).await.expect("local read");
            assert_eq!(local, None, "{key} came back on {name}");
            let ttl = client.register(key).ttl().await.expect("ttl").value;
            assert!(!ttl.exists, "{key} exists again on {name}: {ttl:?}");
        }
        let quorum = clients[0]
            .1
            .register(key)
            .get()
            .consistency(Consistency::Quorum)
            .await
            .expect("quorum read");
        assert_eq!(quorum.value.value, None, "{key} came back at quorum");
        tokio::time::sleep(meridian::POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_commands_the_bound_and_the_worker() -> Result<()> {
    let cluster = InProcessCluster::start(Spec::new(150)).await?;
    cluster.wait_connected().await;
    let token = cluster.dir.client_config()?.token.clone();
    let us = resp_addr(&cluster, US)?;
    with_resp(us, &token, commands).await?;
    with_resp(us, &token, other_types).await?;
    with_resp(us, &token, getex).await?;
    with_resp(us, &token, errors).await?;
    with_resp(us, &token, write_after_expiry).await?;
    let clients = cluster.dir.clients().await?;
    native_client(&clients).await?;

    // `SET … EX 2`: gone on every node once the deadline passed there
    // (each node reads by its own clock, at most the configured clock
    // offset apart), and it stays gone.
    with_resp(us, &token, |c| {
        ensure!(q::<String>(c, &["SET", "bound", "v", "EX", "2"])? == "OK");
        Ok(())
    })
    .await?;
    gone_everywhere_and_stays_gone(&clients, "bound").await;

    // The worker: a set with a passed deadline has its content removed on
    // every node (not only hidden), the fires counted, no backlog left.
    with_resp(us, &token, |c| {
        ensure!(q::<i64>(c, &["SADD", "reclaimed", "a", "b", "c"])? == 3);
        ensure!(q::<i64>(c, &["PEXPIRE", "reclaimed", "300"])? == 1);
        Ok(())
    })
    .await?;
    let set_key = ObjectKey::new(Kind::Set, b"reclaimed".to_vec())?;
    eventually(
        "every node's worker removed the expired set's members",
        CONVERGE,
        || async {
            for name in ALL {
                let engine = cluster.node(name).engine();
                if engine
                    .expiry(&set_key)
                    .map_err(|e| e.to_string())?
                    .is_none()
                {
                    return Err(format!("{name} has not heard of the deadline yet"));
                }
                let stored = engine
                    .state(&set_key)
                    .map_err(|e| e.to_string())?
                    .map(|s| s.value());
                if let Some(meridian_engine::Value::Set(members)) = &stored
                    && !members.is_empty()
                {
                    return Err(format!("{name} still stores {members:?}"));
                }
            }
            Ok(())
        },
    )
    .await;
    // More keys due at once than one pass visits: the worker runs pass
    // after pass without pausing until none is left, on every node.
    const MANY: usize = 600;
    let deadline_ms =
        (SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() + 5_000).to_string();
    with_resp(us, &token, move |c| {
        let mut pipe = redis::pipe();
        for i in 0..MANY {
            pipe.cmd("SET")
                .arg(format!("many:{i}"))
                .arg("v")
                .arg("PXAT")
                .arg(&deadline_ms)
                .ignore();
        }
        pipe.query::<()>(c)?;
        Ok(())
    })
    .await?;
    let keys: Vec<ObjectKey> = (0..MANY)
        .map(|i| ObjectKey::new(Kind::Register, format!("many:{i}").into_bytes()))
        .collect::<Result<_, _>>()?;
    eventually(
        "every node reclaimed the keys in full passes",
        CONVERGE,
        || async {
            for name in ALL {
                let node = cluster.node(name);
                let text = node.exposition();
                let full =
                    meridian_server::exposition::sample(&text, "meridian_expiry_full_passes_total");
                if full < Some(1.0) {
                    return Err(format!("{name}: full passes {full:?}"));
                }
                for key in &keys {
                    let stored = node
                        .engine()
                        .state(key)
                        .map_err(|e| e.to_string())?
                        .map(|s| s.value());
                    if let Some(meridian_engine::Value::Register(Some(r))) = &stored
                        && r.value.is_some()
                    {
                        return Err(format!("{name} still stores {key:?}"));
                    }
                }
            }
            Ok(())
        },
    )
    .await;
    eventually(
        "every node counts fires and has no backlog",
        CONVERGE,
        || async {
            for name in ALL {
                let text = cluster.node(name).exposition();
                let sample = |m: &str| meridian_server::exposition::sample(&text, m);
                let fired = sample("meridian_expiry_fired_total");
                let passes = sample("meridian_expiry_passes_total");
                let backlog = sample("meridian_expiry_backlog");
                if !(fired > Some(0.0) && passes > Some(0.0) && backlog == Some(0.0)) {
                    return Err(format!(
                        "{name}: fired {fired:?}, passes {passes:?}, backlog {backlog:?}"
                    ));
                }
            }
            Ok(())
        },
    )
    .await;
    cluster.shutdown().await
}

/// `SET`'s TTL options, `EXPIRE` and friends with their conditions, `TTL`,
/// `PTTL`, `EXPIRETIME`, `PEXPIRETIME`, `PERSIST`, on a string.
fn commands(c: &mut redis::Connection) -> Result<()> {
    let ttl = |c: &mut redis::Connection, k: &str| q::<i64>(c, &["TTL", k]);
    let pttl = |c: &mut redis::Connection, k: &str| q::<i64>(c, &["PTTL", k]);
    ensure!(ttl(c, "missing")? == -2 && pttl(c, "missing")? == -2);
    ensure!(q::<String>(c, &["SET", "s", "v", "EX", "100"])? == "OK");
    ensure!((99..=100).contains(&ttl(c, "s")?));
    ensure!((98_000..=100_000).contains(&pttl(c, "s")?));
    // A plain SET clears the TTL; KEEPTTL keeps it.
    ensure!(q::<String>(c, &["SET", "s", "v2"])? == "OK");
    ensure!(ttl(c, "s")? == -1);
    ensure!(q::<String>(c, &["SET", "s", "v3", "PX", "100000"])? == "OK");
    ensure!(q::<String>(c, &["SET", "s", "v4", "KEEPTTL"])? == "OK");
    ensure!((99..=100).contains(&ttl(c, "s")?));
    ensure!(q::<String>(c, &["GET", "s"])? == "v4");
    let at = (now_s() + 100).to_string();
    ensure!(q::<String>(c, &["SET", "s", "v5", "EXAT", &at])? == "OK");
    ensure!((95..=100).contains(&ttl(c, "s")?));
    let pat = ((now_s() + 200) * 1000).to_string();
    ensure!(q::<String>(c, &["SET", "s", "v6", "PXAT", &pat])? == "OK");
    ensure!((195..=200).contains(&ttl(c, "s")?));
    // With NX, XX and GET.
    ensure!(q::<String>(c, &["SET", "n", "v", "NX", "EX", "100"])? == "OK");
    ensure!(q::<Option<String>>(c, &["SET", "n", "w", "NX", "EX", "5"])?.is_none());
    ensure!((99..=100).contains(&ttl(c, "n")?));
    ensure!(
        q::<Option<String>>(c, &["SET", "n", "w", "XX", "GET", "EX", "50"])? == Some("v".into())
    );
    ensure!((49..=50).contains(&ttl(c, "n")?));
    ensure!(q::<Option<String>>(c, &["SET", "absent", "w", "XX", "EX", "50"])?.is_none());
    ensure!(ttl(c, "absent")? == -2);

    // EXPIRE on a missing key: 0, and nothing is created.
    ensure!(q::<i64>(c, &["EXPIRE", "missing", "10"])? == 0);
    ensure!(q::<i64>(c, &["EXISTS", "missing"])? == 0);
    ensure!(q::<i64>(c, &["PERSIST", "missing"])? == 0);
    // Conditions.
    ensure!(q::<i64>(c, &["EXPIRE", "s", "50", "NX"])? == 0);
    ensure!(q::<i64>(c, &["PERSIST", "s"])? == 1);
    ensure!(q::<i64>(c, &["PERSIST", "s"])? == 0);
    ensure!(ttl(c, "s")? == -1);
    ensure!(q::<i64>(c, &["EXPIRE", "s", "10", "XX"])? == 0);
    ensure!(q::<i64>(c, &["EXPIRE", "s", "10", "GT"])? == 0);
    ensure!(ttl(c, "s")? == -1);
    ensure!(q::<i64>(c, &["EXPIRE", "s", "50", "NX"])? == 1);
    ensure!(q::<i64>(c, &["EXPIRE", "s", "60", "XX"])? == 1);
    ensure!((59..=60).contains(&ttl(c, "s")?));
    ensure!(q::<i64>(c, &["EXPIRE", "s", "30", "GT"])? == 0);
    ensure!(q::<i64>(c, &["EXPIRE", "s", "90", "gt"])? == 1);
    ensure!(q::<i64>(c, &["EXPIRE", "s", "100", "LT"])? == 0);
    ensure!(q::<i64>(c, &["EXPIRE", "s", "40", "XX", "LT"])? == 1);
    ensure!((39..=40).contains(&ttl(c, "s")?));
    ensure!(q::<i64>(c, &["PEXPIRE", "s", "5000"])? == 1);
    ensure!((1..=5_000).contains(&pttl(c, "s")?));
    let at = (now_s() + 100).to_string();
    ensure!(q::<i64>(c, &["EXPIREAT", "s", &at])? == 1);
    ensure!((95..=100).contains(&ttl(c, "s")?));
    let pat = ((now_s() + 300) * 1000).to_string();
    ensure!(q::<i64>(c, &["PEXPIREAT", "s", &pat])? == 1);
    ensure!((295..=300).contains(&ttl(c, "s")?));
    // EXPIRETIME / PEXPIRETIME: the deadline itself, as a Unix time.
    ensure!(q::<String>(c, &["PEXPIRETIME", "s"])? == pat);
    ensure!(q::<i64>(c, &["EXPIRETIME", "s"])? == pat.parse::<i64>()? / 1000);
    ensure!(q::<i64>(c, &["EXPIRETIME", "missing"])? == -2);
    ensure!(q::<i64>(c, &["PEXPIRETIME", "n"])? > 0);
    ensure!(q::<String>(c, &["SET", "plain", "v"])? == "OK");
    ensure!(q::<i64>(c, &["PEXPIRETIME", "plain"])? == -1);
    ensure!(q::<i64>(c, &["PERSIST", "s"])? == 1);
    ensure!(q::<i64>(c, &["EXPIRE", "s", "10", "LT"])? == 1);
    ensure!((9..=10).contains(&ttl(c, "s")?));
    // A time at or before now expires the key at once (Redis deletes it).
    ensure!(q::<i64>(c, &["EXPIRE", "s", "0"])? == 1);
    ensure!(q::<Option<String>>(c, &["GET", "s"])?.is_none());
    ensure!(q::<i64>(c, &["EXISTS", "s"])? == 0 && ttl(c, "s")? == -2);
    ensure!(q::<String>(c, &["SET", "neg", "v"])? == "OK");
    ensure!(q::<i64>(c, &["EXPIRE", "neg", "-5"])? == 1);
    ensure!(q::<i64>(c, &["EXISTS", "neg"])? == 0);
    ensure!(q::<String>(c, &["SET", "past", "v"])? == "OK");
    ensure!(q::<i64>(c, &["EXPIREAT", "past", "1"])? == 1);
    ensure!(q::<Option<String>>(c, &["GET", "past"])?.is_none());
    ensure!(q::<String>(c, &["TYPE", "past"])? == "none");
    // SET with a deadline already passed: the key ends absent (Redis).
    ensure!(q::<String>(c, &["SET", "past", "v", "PXAT", "1"])? == "OK");
    ensure!(q::<i64>(c, &["EXISTS", "past"])? == 0);
    // At other levels, through the coordinator's replicated path.
    ensure!(q::<String>(c, &["MERIDIAN.AT", "quorum", "SET", "lv", "v", "EX", "100"])? == "OK");
    ensure!((99..=100).contains(&q::<i64>(c, &["MERIDIAN.AT", "all", "TTL", "lv"])?));
    ensure!(q::<i64>(c, &["MERIDIAN.AT", "all", "PERSIST", "lv"])? == 1);
    ensure!(q::<i64>(c, &["MERIDIAN.AT", "quorum", "TTL", "lv"])? == -1);
    ensure!(q::<i64>(c, &["MERIDIAN.AT", "quorum", "EXPIRE", "lv", "0"])? == 1);
    ensure!(q::<i64>(c, &["MERIDIAN.AT", "all", "TTL", "lv"])? == -2);
    Ok(())
}

/// Counters, sets and hashes take TTLs too; their own writes keep them
/// (Redis: `INCR`, `SADD`, `HSET` keep the TTL).
fn other_types(c: &mut redis::Connection) -> Result<()> {
    let ttl = |c: &mut redis::Connection, k: &str| q::<i64>(c, &["TTL", k]);
    ensure!(q::<i64>(c, &["INCR", "ctr"])? == 1);
    ensure!(q::<i64>(c, &["EXPIRE", "ctr", "100"])? == 1);
    ensure!(q::<i64>(c, &["INCR", "ctr"])? == 2);
    ensure!((99..=100).contains(&ttl(c, "ctr")?));
    ensure!(q::<i64>(c, &["PERSIST", "ctr"])? == 1);
    ensure!(ttl(c, "ctr")? == -1);
    ensure!(q::<i64>(c, &["SADD", "set", "a", "b"])? == 2);
    ensure!(q::<i64>(c, &["EXPIRE", "set", "100"])? == 1);
    ensure!(q::<i64>(c, &["SADD", "set", "c"])? == 1);
    ensure!((99..=100).contains(&ttl(c, "set")?));
    ensure!(q::<i64>(c, &["HSET", "hash", "f", "v"])? == 1);
    ensure!(q::<i64>(c, &["PEXPIRE", "hash", "100000"])? == 1);
    ensure!(q::<i64>(c, &["HSET", "hash", "g", "w"])? == 1);
    ensure!((99..=100).contains(&ttl(c, "hash")?));
    // Expired at once: the collection reads empty and the key is free.
    ensure!(q::<i64>(c, &["EXPIRE", "set", "0"])? == 1);
    ensure!(q::<Vec<String>>(c, &["SMEMBERS", "set"])?.is_empty());
    ensure!(q::<i64>(c, &["EXISTS", "set"])? == 0);
    ensure!(q::<i64>(c, &["SADD", "set", "fresh"])? == 1);
    ensure!(ttl(c, "set")? == -1);
    ensure!(q::<i64>(c, &["PEXPIRE", "hash", "-1"])? == 1);
    ensure!(q::<i64>(c, &["HLEN", "hash"])? == 0);
    ensure!(q::<i64>(c, &["EXPIRE", "ctr", "0"])? == 1);
    ensure!(q::<Option<String>>(c, &["GET", "ctr"])?.is_none());
    ensure!(q::<i64>(c, &["INCR", "ctr"])? == 1);
    Ok(())
}

fn getex(c: &mut redis::Connection) -> Result<()> {
    let ttl = |c: &mut redis::Connection, k: &str| q::<i64>(c, &["TTL", k]);
    ensure!(q::<String>(c, &["SET", "g", "v"])? == "OK");
    ensure!(q::<String>(c, &["GETEX", "g"])? == "v");
    ensure!(ttl(c, "g")? == -1);
    ensure!(q::<String>(c, &["GETEX", "g", "EX", "100"])? == "v");
    ensure!((99..=100).contains(&ttl(c, "g")?));
    ensure!(q::<String>(c, &["GETEX", "g", "PERSIST"])? == "v");
    ensure!(ttl(c, "g")? == -1);
    ensure!(q::<String>(c, &["GETEX", "g", "PX", "50000"])? == "v");
    ensure!((49..=50).contains(&ttl(c, "g")?));
    let at = (now_s() + 100).to_string();
    ensure!(q::<String>(c, &["GETEX", "g", "EXAT", &at])? == "v");
    ensure!((95..=100).contains(&ttl(c, "g")?));
    let pat = ((now_s() + 200) * 1000).to_string();
    ensure!(q::<String>(c, &["GETEX", "g", "PXAT", &pat])? == "v");
    ensure!((195..=200).contains(&ttl(c, "g")?));
    // A counter is a string too.
    ensure!(q::<i64>(c, &["INCRBY", "gc", "7"])? == 7);
    ensure!(q::<String>(c, &["GETEX", "gc", "EX", "100"])? == "7");
    ensure!((99..=100).contains(&ttl(c, "gc")?));
    // Absent: nil, nothing created.
    ensure!(q::<Option<String>>(c, &["GETEX", "nothing", "EX", "10"])?.is_none());
    ensure!(ttl(c, "nothing")? == -2);
    q::<i64>(c, &["SADD", "gs", "m"])?;
    let e = q::<Value>(c, &["GETEX", "gs"]).unwrap_err();
    ensure!(code(&e).starts_with("WRONGTYPE"), "{}", code(&e));
    Ok(())
}

/// Redis's errors, verbatim where Redis has them.
fn errors(c: &mut redis::Connection) -> Result<()> {
    let not_integer = "ERR value is not an integer or out of range";
    let cases: &[(&[&str], &str)] = &[
        (&["SET", "k", "v", "EX", "abc"], not_integer),
        (
            &["SET", "k", "v", "PX", "0"],
            "ERR invalid expire time in 'set' command",
        ),
        (
            &["SET", "k", "v", "EX", "-3"],
            "ERR invalid expire time in 'set' command",
        ),
        (
            &["SET", "k", "v", "EX", "9223372036854775807"],
            "ERR invalid expire time in 'set' command",
        ),
        (&["SET", "k", "v", "EX"], "ERR syntax error"),
        (
            &["SET", "k", "v", "KEEPTTL", "EX", "10"],
            "ERR syntax error",
        ),
        (
            &["SET", "k", "v", "EX", "10", "PXAT", "10"],
            "ERR syntax error",
        ),
        (&["EXPIRE", "k", "x"], not_integer),
        (
            &["EXPIRE", "k", "9223372036854775807"],
            "ERR invalid expire time in 'expire' command",
        ),
        (
            &["PEXPIRE", "k", "9223372036854775807"],
            "ERR invalid expire time in 'pexpire' command",
        ),
        (
            &["EXPIREAT", "k", "9223372036854775807"],
            "ERR invalid expire time in 'expireat' command",
        ),
        (
            &["EXPIRE", "k", "10", "GT", "LT"],
            "ERR GT and LT options at the same time are not compatible",
        ),
        (
            &["EXPIRE", "k", "10", "NX", "GT"],
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ),
        (
            &["EXPIRE", "k", "10", "SOON"],
            "ERR Unsupported option SOON",
        ),
        (
            &["EXPIRE", "k"],
            "ERR wrong number of arguments for 'expire' command",
        ),
        (&["TTL"], "ERR wrong number of arguments for 'ttl' command"),
        (
            &["PTTL", "a", "b"],
            "ERR wrong number of arguments for 'pttl' command",
        ),
        (
            &["PERSIST"],
            "ERR wrong number of arguments for 'persist' command",
        ),
        (&["GETEX", "k", "PERSIST", "EX", "10"], "ERR syntax error"),
        (
            &["GETEX", "k", "EX", "0"],
            "ERR invalid expire time in 'getex' command",
        ),
        (&["GETEX", "k", "SOON"], "ERR syntax error"),
    ];
    for (cmd, want) in cases {
        let e = q::<Value>(c, cmd).expect_err(&format!("{cmd:?} succeeded"));
        ensure!(code(&e) == *want, "{cmd:?}: {}", code(&e));
    }
    // A refused SET changed nothing.
    ensure!(q::<i64>(c, &["EXISTS", "k"])? == 0);
    Ok(())
}

/// A write to an expired key is a fresh value with no TTL (and `SET NX`
/// sees the key as absent).
fn write_after_expiry(c: &mut redis::Connection) -> Result<()> {
    ensure!(q::<String>(c, &["SET", "w", "old", "PX", "300"])? == "OK");
    poll(c, "w expires", |c| {
        Ok(q::<Option<String>>(c, &["GET", "w"])?.is_none())
    })?;
    ensure!(q::<i64>(c, &["TTL", "w"])? == -2);
    ensure!(q::<String>(c, &["SET", "w", "fresh", "NX"])? == "OK");
    ensure!(q::<String>(c, &["GET", "w"])? == "fresh");
    ensure!(q::<i64>(c, &["TTL", "w"])? == -1);
    ensure!(q::<i64>(c, &["HSET", "wh", "f", "v"])? == 1);
    ensure!(q::<i64>(c, &["PEXPIRE", "wh", "300"])? == 1);
    poll(c, "wh expires", |c| Ok(q::<i64>(c, &["HLEN", "wh"])? == 0))?;
    ensure!(q::<i64>(c, &["HSET", "wh", "g", "w"])? == 1);
    ensure!(q::<Vec<String>>(c, &["HKEYS", "wh"])? == ["g"]);
    ensure!(q::<i64>(c, &["TTL", "wh"])? == -1);
    Ok(())
}

/// The native client: a TTL on a put, `expire`, `persist` and `ttl` per
/// handle.
async fn native_client(clients: &[(String, Client)]) -> Result<()> {
    let client = &clients[0].1;
    let r = client.register("native");
    let put = r.put("v").ttl(Duration::from_secs(100)).await?;
    ensure!(put.value.value.as_deref() == Some(&b"v"[..]));
    let t = r.ttl().await?.value;
    ensure!(t.exists, "{t:?}");
    let remaining = t.remaining.context("a TTL")?;
    ensure!(remaining > Duration::from_secs(95) && remaining <= Duration::from_secs(100));
    // keep_ttl keeps it; a plain put clears it.
    r.put("w").keep_ttl().await?;
    ensure!(r.ttl().await?.value.deadline_ms == t.deadline_ms);
    r.put("x").await?;
    ensure!(r.ttl().await?.value.remaining.is_none());
    let after = r
        .expire(Deadline::after(Duration::from_secs(50)))
        .await?
        .value;
    ensure!(
        after.exists
            && after
                .remaining
                .is_some_and(|d| d <= Duration::from_secs(50))
    );
    let persisted = r.persist().await?.value;
    ensure!(persisted.exists && persisted.deadline_ms.is_none());
    // Other kinds, and an absent object.
    let s = client.set("native-set");
    s.add(["a"]).await?;
    ensure!(
        s.expire(Deadline::after(Duration::from_secs(30)))
            .await?
            .value
            .remaining
            .is_some()
    );
    let absent = client.map("native-absent").ttl().await?.value;
    ensure!(!absent.exists && absent.deadline_ms.is_none());
    // A deadline in the past expires at once; the answer says so.
    let c = client.counter("native-ctr");
    c.incr(3).await?;
    let gone = c.expire(Deadline::At(1)).await?.value;
    ensure!(!gone.exists, "{gone:?}");
    ensure!(c.read().await?.value == 0);
    // At quorum: the level's read decides presence.
    let q = r.ttl().consistency(Consistency::Quorum).await?.value;
    ensure!(q.exists && q.deadline_ms.is_none(), "{q:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_across_partitions() -> Result<()> {
    let cluster = InProcessCluster::start(Spec::new(151)).await?;
    cluster.wait_connected().await;
    let token = cluster.dir.client_config()?.token.clone();
    let clients = cluster.dir.clients().await?;
    let us_client = &clients.iter().find(|(n, _)| n == US).context("us")?.1;
    let (us, eu, ap) = (
        resp_addr(&cluster, US)?,
        resp_addr(&cluster, EU)?,
        resp_addr(&cluster, AP)?,
    );

    // 1. A node partitioned across the deadline heals: the key stays gone.
    us_client
        .register("across")
        .put("v")
        .ttl(Duration::from_secs(4))
        .await?;
    let across = ObjectKey::new(Kind::Register, b"across".to_vec())?;
    eventually("every node has the deadline", CONVERGE, || async {
        for name in ALL {
            let engine = cluster.node(name).engine();
            if engine.expiry(&across).map_err(|e| e.to_string())?.is_none() {
                return Err(format!("{name} has no expiry for the key yet"));
            }
        }
        Ok(())
    })
    .await;
    cluster.isolate(AP);
    eventually(
        "the key is gone on both sides of the partition",
        CONVERGE,
        || async {
            for (name, client) in &clients {
                if let Some(v) = local_get(client, "across")
                    .await
                    .map_err(|e| e.to_string())?
                {
                    return Err(format!("{name} still reads {v:?}"));
                }
            }
            Ok(())
        },
    )
    .await;
    cluster.rejoin(AP);
    cluster.wait_connected().await;
    gone_everywhere_and_stays_gone(&clients, "across").await;

    // 2. Before a partition, keys every node has: one with a TTL everyone
    // saw.
    with_resp(us, &token, |c| {
        ensure!(q::<String>(c, &["SET", "short-wins", "v"])? == "OK");
        ensure!(q::<String>(c, &["SET", "persist-loses", "v", "EX", "1000"])? == "OK");
        Ok(())
    })
    .await?;
    meridian::objects::converge_to(
        &clients,
        &[Obj::register("short-wins"), Obj::register("persist-loses")],
        &[
            Val::Register(Some(b"v".to_vec())),
            Val::Register(Some(b"v".to_vec())),
        ],
    )
    .await;
    let persist_key = ObjectKey::new(Kind::Register, b"persist-loses".to_vec())?;
    eventually("every node has the 1000 s deadline", CONVERGE, || async {
        for name in ALL {
            let x = cluster
                .node(name)
                .engine()
                .expiry(&persist_key)
                .map_err(|e| e.to_string())?;
            if x.is_none_or(|x| x.deadlines().is_empty()) {
                return Err(format!("{name} has not seen the deadline"));
            }
        }
        Ok(())
    })
    .await;
    for name in ALL {
        cluster.isolate(name);
    }
    // Concurrent: EXPIRE 50 here, EXPIRE 5 there; EXPIRE 3 here, PERSIST
    // (of the 1000 s TTL it saw) there.
    with_resp(us, &token, |c| {
        ensure!(q::<i64>(c, &["EXPIRE", "short-wins", "50"])? == 1);
        ensure!(q::<i64>(c, &["EXPIRE", "persist-loses", "3"])? == 1);
        Ok(())
    })
    .await?;
    with_resp(eu, &token, |c| {
        ensure!(q::<i64>(c, &["EXPIRE", "short-wins", "5"])? == 1);
        ensure!(q::<i64>(c, &["PERSIST", "persist-loses"])? == 1);
        ensure!(q::<i64>(c, &["TTL", "persist-loses"])? == -1);
        Ok(())
    })
    .await?;
    for name in ALL {
        cluster.rejoin(name);
    }
    cluster.wait_connected().await;
    // Both sides converge to the shorter deadline (or are already past it).
    for addr in [us, eu] {
        with_resp(addr, &token, |c| {
            poll(c, "the TTL converges to the shorter deadline", |c| {
                let pttl = q::<i64>(c, &["PTTL", "short-wins"])?;
                Ok(pttl == -2 || (0..=5_000).contains(&pttl))
            })
        })
        .await?;
    }
    gone_everywhere_and_stays_gone(&clients, "short-wins").await;
    gone_everywhere_and_stays_gone(&clients, "persist-loses").await;

    // 3. A write after the expiry, anywhere, is a fresh value with no TTL
    // on every node.
    with_resp(ap, &token, |c| {
        ensure!(q::<String>(c, &["SET", "short-wins", "again"])? == "OK");
        Ok(())
    })
    .await?;
    meridian::objects::converge_to(
        &clients,
        &[Obj::register("short-wins")],
        &[Val::Register(Some(b"again".to_vec()))],
    )
    .await;
    for addr in [us, eu, ap] {
        with_resp(addr, &token, |c| {
            ensure!(q::<i64>(c, &["TTL", "short-wins"])? == -1);
            Ok(())
        })
        .await?;
    }
    cluster.shutdown().await
}

/// A node down while a key expires comes back to logs truncated past what
/// it has: it catches up by full-state sync, and neither it nor the
/// others read the key again (it still held the old value, and had never
/// seen the deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_keys_stay_gone_after_a_full_state_sync() -> Result<()> {
    use meridian::TestClusterFiles;
    use meridian::inproc::test_protocol;
    use meridian_server::config::DurabilityMode;
    let dir = TestClusterFiles::create(
        Spec::new(152)
            .durability(DurabilityMode::Periodic)
            .log_segment_bytes(256 << 10),
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
    let quorum = Consistency::Quorum;
    us.register("fs-reg")
        .put("old")
        .consistency(Consistency::All)
        .await?;
    us.set("fs-set")
        .add(["a", "b"])
        .consistency(Consistency::All)
        .await?;
    let ap_has = cluster.node(AP).engine().applied().vector().clone();
    cluster.stop(AP).await?;
    us.register("fs-reg")
        .expire(Deadline::after(Duration::from_millis(500)))
        .consistency(quorum)
        .await?;
    us.set("fs-set")
        .expire(Deadline::after(Duration::from_millis(500)))
        .consistency(quorum)
        .await?;
    // Fired (content removed) where the nodes are up.
    let set_key = ObjectKey::new(Kind::Set, b"fs-set".to_vec())?;
    eventually(
        "the expiry fired on the running nodes",
        CONVERGE,
        || async {
            for name in [US, EU] {
                let stored = cluster
                    .node(name)
                    .engine()
                    .state(&set_key)
                    .map_err(|e| e.to_string())?
                    .map(|s| s.value());
                if let Some(meridian_engine::Value::Set(m)) = stored
                    && !m.is_empty()
                {
                    return Err(format!("{name} still stores {m:?}"));
                }
            }
            Ok(())
        },
    )
    .await;
    // Roll the logs past what ap-south-1 has.
    for i in 0..24u8 {
        us.register(format!("fs-big-{i}"))
            .put(vec![i; 64 << 10])
            .consistency(Consistency::Local)
            .await?;
    }
    cluster.wait_truncated(&[US, EU], &ap_has).await;
    cluster.restart(AP).await?;
    cluster.wait_connected().await;
    let clients = cluster.dir.clients().await?;
    meridian::objects::converge_to(
        &clients,
        &[Obj::register("fs-big-23"), Obj::set("fs-set")],
        &[
            Val::Register(Some(vec![23; 64 << 10])),
            Val::Set(Vec::new()),
        ],
    )
    .await;
    // Only a full-state sync can have caught it up (the logs were
    // truncated past what it had).
    cluster.wait_full_sync_received(AP, CONVERGE).await;
    gone_everywhere_and_stays_gone(&clients, "fs-reg").await;
    for (name, client) in &clients {
        let members = client
            .set("fs-set")
            .members()
            .consistency(Consistency::Local)
            .await?;
        ensure!(members.value.count == 0, "{name}: {:?}", members.value);
    }
    cluster.shutdown().await
}
