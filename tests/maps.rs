//! Maps (Redis hashes) end to end: the hash commands through the RESP door
//! on real in-process nodes (the `redis` crate), and the merge rules across
//! partitioned regions (docs/maps-and-expiry.md §1):
//! * concurrent `HSET` of one field resolves by the register rule (larger
//!   HLC, then node) on every node;
//! * concurrent `HINCRBY`s add up;
//! * `HDEL` (and a whole-map `DEL`) concurrent with an `HSET` of the same
//!   field: the set wins.
//!
//! Address block (`127.31.<block>.x`): 100.

use std::net::SocketAddr;

use anyhow::{Context, Result, ensure};
use meridian::objects::{converge_to, map_of};
use meridian::resp::{code, q, with_resp};
use meridian::{InProcessCluster, Obj, Spec};
use meridian_engine::crdt::ObjectState;
use meridian_engine::crdt::map::Entry;
use meridian_engine::{Kind, ObjectKey};
use redis::Value;

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const AP: &str = "ap-south-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hashes_over_resp_and_across_partitions() -> Result<()> {
    let cluster = InProcessCluster::start(Spec::new(100)).await?;
    cluster.wait_connected().await;
    let token = cluster.dir.client_config()?.token.clone();
    let resp = |name: &str| -> Result<SocketAddr> {
        cluster
            .node(name)
            .addresses
            .resp
            .context("init writes resp_listen")
    };
    let (us, eu, ap) = (resp(US)?, resp(EU)?, resp(AP)?);
    with_resp(us, &token, commands).await?;
    partitions(&cluster, [us, eu, ap], &token).await?;
    cluster.shutdown().await
}

/// Every hash command's reply, Redis's wording for errors, and the type
/// rule against the other families.
fn commands(c: &mut redis::Connection) -> Result<()> {
    ensure!(q::<i64>(c, &["HSET", "h", "a", "1", "b", "x", "a", "2"])? == 2);
    ensure!(q::<i64>(c, &["HSET", "h", "b", "y", "c", "z"])? == 1);
    ensure!(q::<String>(c, &["HMSET", "h", "d", "dd"])? == "OK");
    ensure!(q::<Option<String>>(c, &["HGET", "h", "a"])? == Some("2".into()));
    ensure!(q::<Option<String>>(c, &["HGET", "h", "nope"])?.is_none());
    ensure!(q::<Option<String>>(c, &["HGET", "no-such-hash", "a"])?.is_none());
    ensure!(
        q::<Vec<Option<String>>>(c, &["HMGET", "h", "b", "nope", "c"])?
            == vec![Some("y".into()), None, Some("z".into())]
    );
    let all: Vec<(String, String)> = q(c, &["HGETALL", "h"])?;
    ensure!(
        all == [("a", "2"), ("b", "y"), ("c", "z"), ("d", "dd")]
            .map(|(f, v)| (f.to_owned(), v.to_owned())),
        "{all:?}"
    );
    // HSCAN: the whole hash in one page, cursor 0, whatever the cursor.
    let (cursor, page): (String, Vec<String>) = q(c, &["HSCAN", "h", "0"])?;
    ensure!(
        cursor == "0" && page == ["a", "2", "b", "y", "c", "z", "d", "dd"],
        "{page:?}"
    );
    let (cursor, page): (String, Vec<String>) = q(
        c,
        &[
            "HSCAN", "h", "7", "MATCH", "[bd]*", "COUNT", "1", "NOVALUES",
        ],
    )?;
    ensure!(cursor == "0" && page == ["b", "d"], "{page:?}");
    let (_, page): (String, Vec<String>) = q(c, &["HSCAN", "no-such-hash", "0"])?;
    ensure!(page.is_empty());
    let e = q::<Value>(c, &["HSCAN", "h", "x"]).unwrap_err();
    ensure!(code(&e) == "ERR invalid cursor", "{}", code(&e));
    ensure!(q::<Vec<String>>(c, &["HKEYS", "h"])? == ["a", "b", "c", "d"]);
    ensure!(q::<Vec<String>>(c, &["HVALS", "h"])? == ["2", "y", "z", "dd"]);
    ensure!(q::<i64>(c, &["HLEN", "h"])? == 4);
    ensure!(q::<i64>(c, &["HLEN", "no-such-hash"])? == 0);
    ensure!(q::<i64>(c, &["HEXISTS", "h", "c"])? == 1);
    ensure!(q::<i64>(c, &["HEXISTS", "h", "nope"])? == 0);
    ensure!(q::<i64>(c, &["HSTRLEN", "h", "d"])? == 2);
    ensure!(q::<i64>(c, &["HSTRLEN", "h", "nope"])? == 0);
    ensure!(q::<i64>(c, &["HSETNX", "h", "a", "other"])? == 0);
    ensure!(q::<i64>(c, &["HSETNX", "h", "e", "new"])? == 1);
    ensure!(q::<Option<String>>(c, &["HGET", "h", "a"])? == Some("2".into()));
    ensure!(q::<i64>(c, &["HINCRBY", "h", "a", "40"])? == 42);
    ensure!(q::<i64>(c, &["HINCRBY", "h", "n", "-5"])? == -5);
    let e = q::<i64>(c, &["HINCRBY", "h", "b", "1"]).unwrap_err();
    ensure!(
        code(&e) == "ERR hash value is not an integer",
        "{}",
        code(&e)
    );
    q::<i64>(c, &["HSET", "h", "big", &i64::MAX.to_string()])?;
    let e = q::<i64>(c, &["HINCRBY", "h", "big", "1"]).unwrap_err();
    ensure!(
        code(&e) == "ERR increment or decrement would overflow",
        "{}",
        code(&e)
    );
    let e = q::<i64>(c, &["HINCRBY", "h", "a", "x"]).unwrap_err();
    ensure!(
        code(&e).starts_with("ERR value is not an integer"),
        "{}",
        code(&e)
    );
    ensure!(q::<i64>(c, &["HDEL", "h", "b", "c", "nope", "b"])? == 2);
    ensure!(q::<i64>(c, &["HEXISTS", "h", "b"])? == 0);
    let e = q::<i64>(c, &["HSET", "h", "odd"]).unwrap_err();
    ensure!(
        code(&e).contains("wrong number of arguments"),
        "{}",
        code(&e)
    );
    // Keys: TYPE, EXISTS, DEL.
    ensure!(q::<String>(c, &["TYPE", "h"])? == "hash");
    ensure!(q::<i64>(c, &["EXISTS", "h", "no-such-hash"])? == 1);
    // One type per key, both ways.
    let wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";
    for cmd in [
        &["GET", "h"][..],
        &["SET", "h", "v"],
        &["INCR", "h"],
        &["SADD", "h", "m"],
        &["SMEMBERS", "h"],
    ] {
        let e = q::<Value>(c, cmd).unwrap_err();
        ensure!(code(&e) == wrongtype, "{cmd:?}: {}", code(&e));
    }
    q::<String>(c, &["SET", "str", "v"])?;
    q::<i64>(c, &["SADD", "set", "m"])?;
    for key in ["str", "set"] {
        for cmd in [
            &["HSET", key, "f", "v"][..],
            &["HGET", key, "f"],
            &["HGETALL", key],
            &["HSCAN", key, "0"],
            &["HINCRBY", key, "f", "1"],
            &["HLEN", key],
        ] {
            let e = q::<Value>(c, cmd).unwrap_err();
            ensure!(code(&e) == wrongtype, "{cmd:?}: {}", code(&e));
        }
    }
    ensure!(q::<i64>(c, &["DEL", "h"])? == 1);
    ensure!(q::<i64>(c, &["EXISTS", "h"])? == 0);
    ensure!(q::<String>(c, &["TYPE", "h"])? == "none");
    ensure!(q::<Vec<(String, String)>>(c, &["HGETALL", "h"])?.is_empty());
    // A deleted hash can be recreated, and the key reused by another type.
    ensure!(q::<i64>(c, &["HSET", "h", "again", "1"])? == 1);
    ensure!(q::<i64>(c, &["HLEN", "h"])? == 1);
    Ok(())
}

/// The value of the `HSET` entry that wins field `field` of map `key` in
/// `state`: the largest `(hlc, dot)` among its `Set` entries.
fn register_winner(state: &ObjectState, field: &[u8]) -> Option<Vec<u8>> {
    let ObjectState::Map(m) = state else {
        return None;
    };
    m.entries(field)?
        .iter()
        .filter_map(|(dot, e)| match e {
            Entry::Set { hlc, value } => Some(((*hlc, *dot), value.clone())),
            Entry::Incr { .. } => None,
        })
        .max_by_key(|(order, _)| *order)
        .map(|(_, v)| v)
}

/// The three regions, each cut off from the others, write the same fields;
/// after they rejoin every node reads what the merge rules say.
async fn partitions(
    cluster: &InProcessCluster,
    [us, eu, ap]: [SocketAddr; 3],
    token: &str,
) -> Result<()> {
    let clients = cluster.dir.clients().await?;
    // Before the partition: fields every node has seen.
    with_resp(us, token, |c| {
        q::<i64>(c, &["HSET", "p", "deleted", "old", "kept", "k"])?;
        q::<i64>(c, &["HSET", "whole", "seen", "s"])?;
        Ok(())
    })
    .await?;
    converge_to(
        &clients,
        &[Obj::map("p"), Obj::map("whole")],
        &[
            map_of([("deleted", "old"), ("kept", "k")]),
            map_of([("seen", "s")]),
        ],
    )
    .await;

    for name in [US, EU, AP] {
        cluster.isolate(name);
    }
    // Concurrent writes, one region each.
    with_resp(us, token, |c| {
        q::<i64>(c, &["HSET", "p", "f", "from-us"])?;
        for _ in 0..3 {
            q::<i64>(c, &["HINCRBY", "p", "n", "2"])?;
        }
        // Observed-remove: cancels only the `HSET` of `deleted` it saw.
        ensure!(q::<i64>(c, &["HDEL", "p", "deleted"])? == 1);
        ensure!(q::<i64>(c, &["DEL", "whole"])? == 1);
        Ok(())
    })
    .await?;
    with_resp(eu, token, |c| {
        q::<i64>(c, &["HSET", "p", "f", "from-eu"])?;
        q::<i64>(c, &["HINCRBY", "p", "n", "5"])?;
        q::<i64>(c, &["HSET", "p", "deleted", "new"])?;
        q::<i64>(c, &["HSET", "whole", "added", "a"])?;
        Ok(())
    })
    .await?;
    with_resp(ap, token, |c| {
        q::<i64>(c, &["HINCRBY", "p", "n", "10"])?;
        // Each side sees only its own writes meanwhile.
        ensure!(q::<Option<String>>(c, &["HGET", "p", "f"])?.is_none());
        ensure!(q::<Option<String>>(c, &["HGET", "p", "n"])? == Some("10".into()));
        Ok(())
    })
    .await?;

    // The winner of `f` by the register rule, from the two writes' own
    // stored timestamps.
    let key = ObjectKey::new(Kind::Map, b"p".to_vec())?;
    let mut candidates = Vec::new();
    for name in [US, EU] {
        let state = cluster.node(name).engine().state(&key)?.context("no map")?;
        let ObjectState::Map(m) = &state else {
            anyhow::bail!("not a map");
        };
        for (dot, e) in m.entries(b"f").context("no f")? {
            if let Entry::Set { hlc, value } = e {
                candidates.push(((*hlc, *dot), value.clone()));
            }
        }
    }
    ensure!(candidates.len() == 2, "{candidates:?}");
    let winner = candidates.iter().max_by_key(|(o, _)| *o).unwrap().1.clone();

    for name in [US, EU, AP] {
        cluster.rejoin(name);
    }
    converge_to(
        &clients,
        &[Obj::map("p"), Obj::map("whole")],
        &[
            map_of([
                ("deleted", b"new".to_vec()),
                ("f", winner.clone()),
                ("kept", b"k".to_vec()),
                ("n", b"21".to_vec()),
            ]),
            map_of([("added", "a")]),
        ],
    )
    .await;
    // Every node stores both writes of `f` (the loser stays until the
    // field's next write) and picks the same one.
    for name in [US, EU, AP] {
        let state = cluster.node(name).engine().state(&key)?.context("no map")?;
        ensure!(
            register_winner(&state, b"f") == Some(winner.clone()),
            "{name}"
        );
    }
    // The RESP door reads the same on every node.
    for addr in [us, eu, ap] {
        let winner = winner.clone();
        with_resp(addr, token, move |c| {
            ensure!(q::<Option<Vec<u8>>>(c, &["HGET", "p", "f"])? == Some(winner));
            ensure!(q::<i64>(c, &["HGET", "p", "n"])? == 21);
            ensure!(q::<i64>(c, &["HLEN", "p"])? == 4);
            Ok(())
        })
        .await?;
    }
    // A later write of the field replaces both entries everywhere.
    with_resp(ap, token, |c| {
        q::<i64>(c, &["HSET", "p", "f", "last"])?;
        Ok(())
    })
    .await?;
    converge_to(
        &clients,
        &[Obj::map("p")],
        &[map_of([
            ("deleted", "new"),
            ("f", "last"),
            ("kept", "k"),
            ("n", "21"),
        ])],
    )
    .await;
    Ok(())
}
