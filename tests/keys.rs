//! Listing keys (issue 15) over RESP and the native client: `SCAN` (its
//! guarantee under concurrent additions and removals, `MATCH`, `TYPE`,
//! `COUNT`, cursors), `KEYS`, `DBSIZE`, `RANDOMKEY`, `EXISTS` across types,
//! `SSCAN`, `Client::scan` by prefix, and placement (a node lists what it
//! stores). Large sets listed page by page are in tests/large_objects.rs.
//!
//! Address blocks (`127.31.<block>.x`): 44.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use meridian::{InProcessCluster, Spec, eventually};
use meridian_client::{Consistency, Error, Kind};
use redis::Commands;

/// Bound on every socket wait.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";

/// Keys of each type written before the scans.
const PER_KIND: usize = 40;

fn connect(addr: SocketAddr, token: &str) -> Result<redis::Connection> {
    let client = redis::Client::open(format!("redis://default:{token}@{addr}/"))?;
    Ok(client.get_connection_with_timeout(IO_TIMEOUT)?)
}

fn text(e: &redis::RedisError) -> String {
    format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""))
}

/// One `SCAN`/`SSCAN` call: the next cursor and the page.
fn page(con: &mut redis::Connection, words: &[&str]) -> redis::RedisResult<(u64, Vec<String>)> {
    let mut c = redis::cmd(words[0]);
    for w in &words[1..] {
        c.arg(*w);
    }
    c.query(con)
}

/// Every key a full `SCAN` iteration with these options returns, with
/// repeats, checking each page against `count`.
fn scan_all(con: &mut redis::Connection, options: &[&str], count: usize) -> Result<Vec<String>> {
    let mut cursor = 0u64;
    let mut out = Vec::new();
    let count_text = count.to_string();
    loop {
        let c = cursor.to_string();
        let mut words = vec!["SCAN", c.as_str(), "COUNT", count_text.as_str()];
        words.extend_from_slice(options);
        let (next, keys) = page(con, &words)?;
        // COUNT bounds the objects a call visits, so what it lists.
        ensure!(keys.len() <= count, "{} keys for COUNT {count}", keys.len());
        out.extend(keys);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scan_keys_dbsize_randomkey_exists_and_sscan() -> Result<()> {
    let cluster = InProcessCluster::start(Spec::new(44).placement("eu/", &["eu-west"])).await?;
    cluster.wait_connected().await;
    let token = cluster.dir.client_config()?.token.clone();
    let resp = |n: &str| cluster.node(n).addresses.resp.context("resp_listen");
    let (us_addr, eu_addr) = (resp(US)?, resp(EU)?);

    // An empty node lists nothing.
    let empty = {
        let token = token.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut con = connect(us_addr, &token)?;
            let (cursor, keys) = page(&mut con, &["SCAN", "0"])?;
            ensure!(cursor == 0 && keys.is_empty(), "{cursor} {keys:?}");
            ensure!(redis::cmd("DBSIZE").query::<i64>(&mut con)? == 0);
            let random: Option<String> = redis::cmd("RANDOMKEY").query(&mut con)?;
            ensure!(random.is_none(), "{random:?}");
            Ok(())
        })
    };
    empty.await??;

    // Every type, written at us-east (stored there at once).
    let us = cluster.client(US).await?;
    let mut writes = Vec::new();
    for i in 0..PER_KIND {
        let us = us.clone();
        writes.push(tokio::spawn(async move {
            us.counter(format!("c:{i}")).incr(1).await?;
            us.set(format!("s:{i}")).add([format!("m{i}")]).await?;
            us.register(format!("r:{i}")).put("v").await?;
            us.counter(format!("doomed:{i}")).incr(2).await?;
            Ok::<_, Error>(())
        }));
    }
    for w in writes {
        w.await??;
    }
    // Stored but not present: a counter back at 0, an emptied set, a
    // deleted register.
    us.counter("zero").incr(1).await?;
    us.counter("zero").incr(-1).await?;
    us.set("emptied").add(["x"]).await?;
    us.set("emptied").remove(["x"]).await?;
    us.register("deleted").put("v").await?;
    us.register("deleted").delete().await?;
    // Pinned to eu-west: stored only there.
    let eu = cluster.client(EU).await?;
    eu.counter("eu/only").incr(1).await?;
    eventually("eu-west stores eu/only", IO_TIMEOUT, || async {
        let page = eu.scan("eu/", None, 100).await.map_err(|e| e.to_string())?;
        match page.value.keys.as_slice() {
            [k] if k.key == b"eu/only" && k.kind == Kind::Counter => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let stable: BTreeSet<String> = names("c:", PER_KIND)
        .into_iter()
        .chain(names("s:", PER_KIND))
        .chain(names("r:", PER_KIND))
        .collect();
    let doomed: BTreeSet<String> = names("doomed:", PER_KIND).into_iter().collect();

    // The native scan by prefix, page by page, at us-east.
    let mut listed = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let p = us.scan("s:", cursor, 3).await?;
        ensure!(p.value.keys.len() <= 3);
        listed.extend(p.value.keys);
        pages += 1;
        match p.value.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    ensure!(pages > 1, "one page for {} keys at count 3", listed.len());
    ensure!(listed.iter().all(|k| k.kind == Kind::Set));
    let listed: BTreeSet<String> = listed
        .into_iter()
        .map(|k| String::from_utf8(k.key).unwrap())
        .collect();
    ensure!(listed == names("s:", PER_KIND).into_iter().collect());
    // Keys pinned to another region are listed only where they are stored.
    let everything = us.scan("", None, 1000).await?.value;
    ensure!(everything.cursor.is_none(), "1000 visits cover this store");
    ensure!(everything.keys.iter().all(|k| !k.key.starts_with(b"eu/")));
    ensure!(
        everything.keys.len() == 4 * PER_KIND,
        "{:?}",
        everything.keys
    );
    // Counts out of range are refused before anything is sent.
    let long_prefix = vec![b'p'; meridian_client::wire::MAX_KEY_BYTES + 1];
    ensure!(matches!(
        us.scan(long_prefix, None, 10).await,
        Err(Error::InvalidArgument(_))
    ));

    let scenario = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut con = connect(us_addr, &token)?;
        let mut writer = connect(us_addr, &token)?;

        // SCAN's guarantee: keys present for the whole iteration are
        // returned, while keys are added and removed between the calls.
        let mut cursor = 0u64;
        let mut seen = Vec::new();
        let mut added = BTreeSet::new();
        let mut step = 0;
        loop {
            let (next, keys) = page(&mut con, &["SCAN", &cursor.to_string(), "COUNT", "7"])?;
            ensure!(keys.len() <= 7);
            seen.extend(keys);
            // Keys sorting before and after the cursor appear; doomed
            // keys go.
            for name in [format!("a{step}"), format!("zz:new:{step}")] {
                let _: () = writer.set(&name, "v")?;
                added.insert(name);
            }
            if step < PER_KIND {
                let _: i64 = writer.del(format!("doomed:{step}"))?;
            }
            step += 1;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let seen_set: BTreeSet<String> = seen.iter().cloned().collect();
        let missing: Vec<&String> = stable.difference(&seen_set).collect();
        ensure!(missing.is_empty(), "never returned: {missing:?}");
        for k in &seen_set {
            ensure!(
                stable.contains(k) || doomed.contains(k) || added.contains(k),
                "{k} was never written or was absent for the whole scan"
            );
        }
        // Deleted objects are never listed; placement keeps eu/ away.
        for absent in ["zero", "emptied", "deleted", "eu/only"] {
            ensure!(!seen_set.contains(absent), "{absent} listed");
        }
        // Each key once (no key here holds two types).
        ensure!(
            seen.len() == seen_set.len(),
            "{} for {}",
            seen.len(),
            seen_set.len()
        );
        // Delete what remains of doomed: the store is now exactly known.
        for d in &doomed {
            let _: i64 = writer.del(d)?;
        }
        let present: BTreeSet<String> = stable.union(&added).cloned().collect();

        // A full iteration while nothing changes lists exactly the keys.
        let all: BTreeSet<String> = scan_all(&mut con, &[], 10)?.into_iter().collect();
        ensure!(all == present, "{:?}", all.symmetric_difference(&present));
        // MATCH: a literal prefix, a class, an escape.
        let sets = scan_all(&mut con, &["MATCH", "s:*"], 5)?;
        ensure!(sets.len() == PER_KIND);
        ensure!(sets.iter().collect::<BTreeSet<_>>() == names("s:", PER_KIND).iter().collect());
        let some: BTreeSet<String> = scan_all(&mut con, &["MATCH", "c:[1-2]"], 1000)?
            .into_iter()
            .collect();
        ensure!(some == ["c:1", "c:2"].iter().map(|s| s.to_string()).collect());
        ensure!(scan_all(&mut con, &["MATCH", "c\\:1?"], 1000)?.len() == 10);
        // TYPE: sets, and strings (counters and registers).
        let typed = scan_all(&mut con, &["TYPE", "set"], 1000)?;
        ensure!(typed.len() == PER_KIND && typed.iter().all(|k| k.starts_with("s:")));
        let strings = scan_all(&mut con, &["TYPE", "string", "MATCH", "[cr]:*"], 1000)?;
        ensure!(strings.len() == 2 * PER_KIND);
        ensure!(scan_all(&mut con, &["TYPE", "hash"], 1000)?.is_empty());
        // The redis crate's own iterator (it parses cursors as u64).
        let via_iter: BTreeSet<String> = con
            .scan_match::<_, String>("r:*")?
            .collect::<redis::RedisResult<_>>()?;
        ensure!(via_iter == names("r:", PER_KIND).into_iter().collect());

        // Cursors: unknown numbers, another connection's, reuse.
        let e = page(&mut con, &["SCAN", "123456789012"]).unwrap_err();
        ensure!(text(&e).contains("invalid cursor"), "{}", text(&e));
        let (c, _) = page(&mut con, &["SCAN", "0", "COUNT", "1"])?;
        ensure!(c != 0);
        let e = page(&mut writer, &["SCAN", &c.to_string()]).unwrap_err();
        ensure!(text(&e).contains("invalid cursor"), "{}", text(&e));
        page(&mut con, &["SCAN", &c.to_string()])?;
        ensure!(
            page(&mut con, &["SCAN", &c.to_string()]).is_err(),
            "a cursor is used once"
        );
        ensure!(page(&mut con, &["SCAN", "0", "COUNT", "0"]).is_err());

        // KEYS: each key once, sorted by bytes; DBSIZE counts them.
        let keys: Vec<String> = con.keys("s:*")?;
        ensure!(keys.len() == PER_KIND);
        let everything: Vec<String> = con.keys("*")?;
        ensure!(everything.iter().cloned().collect::<BTreeSet<_>>() == present);
        ensure!(everything.len() == present.len());
        ensure!(
            everything.windows(2).all(|w| w[0] < w[1]),
            "KEYS is in byte order"
        );
        let size: i64 = redis::cmd("DBSIZE").query(&mut con)?;
        ensure!(
            size as usize == present.len(),
            "DBSIZE {size}, {} keys",
            present.len()
        );
        // RANDOMKEY answers a present key.
        for _ in 0..20 {
            let k: Option<String> = redis::cmd("RANDOMKEY").query(&mut con)?;
            let k = k.context("a key exists")?;
            ensure!(present.contains(&k), "RANDOMKEY answered {k}");
        }

        // EXISTS across types, a key named twice counted twice.
        let n: i64 = redis::cmd("EXISTS")
            .arg(&["c:1", "s:1", "r:1", "c:1", "nothing", "zero", "emptied"])
            .query(&mut con)?;
        ensure!(n == 4, "EXISTS answered {n}");

        // SSCAN: every member once, page by page; MATCH; the type rule.
        let members: Vec<String> = (0..25).map(|i| format!("m{i:02}")).collect();
        let _: i64 = con.sadd("big", &members)?;
        let mut cursor = 0u64;
        let mut got = Vec::new();
        let mut calls = 0;
        loop {
            let (next, page) = page(
                &mut con,
                &["SSCAN", "big", &cursor.to_string(), "COUNT", "4"],
            )?;
            ensure!(page.len() <= 4);
            got.extend(page);
            calls += 1;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        ensure!(calls >= 7, "{calls} calls");
        ensure!(got == members, "{got:?}");
        // Members present for the whole iteration are listed once each,
        // while others are added (before and after the cursor) and removed.
        let mut cursor = 0u64;
        let mut during = Vec::new();
        let mut step = 0;
        loop {
            let (next, page) = page(
                &mut con,
                &["SSCAN", "big", &cursor.to_string(), "COUNT", "3"],
            )?;
            during.extend(page);
            let _: i64 = writer.sadd("big", vec![format!("a{step}"), format!("z{step}")])?;
            let _: i64 = writer.srem("big", format!("m{:02}", 24 - step))?;
            step += 1;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let kept: Vec<&String> = members.iter().filter(|m| during.contains(m)).collect();
        ensure!(
            during.iter().collect::<BTreeSet<_>>().len() == during.len(),
            "{during:?}"
        );
        for (i, m) in members.iter().enumerate() {
            // m{24-k} was removed after page k: the first members stayed.
            if i < 25 - step {
                ensure!(kept.contains(&m), "{m} present throughout, not listed");
            }
        }
        let (next, odd) = page(
            &mut con,
            &["SSCAN", "big", "0", "COUNT", "100", "MATCH", "m?1"],
        )?;
        let now: Vec<String> = {
            let mut all: Vec<String> = con.smembers("big")?;
            all.sort();
            all
        };
        let expected: Vec<&String> = now
            .iter()
            .filter(|m| m.len() == 3 && m.starts_with('m') && m.ends_with('1'))
            .collect();
        ensure!(
            next == 0 && odd.iter().collect::<Vec<_>>() == expected,
            "{odd:?}"
        );
        ensure!(odd.contains(&"m01".to_owned()));
        let via_iter: Vec<String> = con
            .sscan::<_, String>("big")?
            .collect::<redis::RedisResult<_>>()?;
        ensure!(via_iter == now, "{via_iter:?}");
        let e = page(&mut con, &["SSCAN", "c:1", "0"]).unwrap_err();
        ensure!(text(&e).starts_with("WRONGTYPE"), "{}", text(&e));
        let (next, none) = page(&mut con, &["SSCAN", "nothing", "0"])?;
        ensure!(next == 0 && none.is_empty());
        // A set's cursor is not another set's.
        let (c, _) = page(&mut con, &["SSCAN", "big", "0", "COUNT", "1"])?;
        ensure!(page(&mut con, &["SSCAN", "s:1", &c.to_string()]).is_err());
        // Pages come from one replica: refused at quorum, served at leader.
        let e = page(&mut con, &["MERIDIAN.AT", "quorum", "SSCAN", "big", "0"]).unwrap_err();
        ensure!(text(&e).contains("one replica"), "{}", text(&e));
        let (_, first) = page(&mut con, &["MERIDIAN.AT", "leader", "SSCAN", "big", "0"])?;
        ensure!(first.len() == 10, "{first:?}");

        // eu-west lists the key pinned to it.
        let mut eu_con = connect(eu_addr, &token)?;
        let eu_keys: Vec<String> = eu_con.keys("eu/*")?;
        ensure!(eu_keys == ["eu/only"], "{eu_keys:?}");
        Ok(())
    });
    scenario.await??;
    cluster.shutdown().await
}

/// A native scan continues in the same order on another node (failover
/// between pages), and `Set::page` lists a set page by page.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn native_pages_of_keys_and_set_members() -> Result<()> {
    let cluster = InProcessCluster::start(Spec::new(45)).await?;
    cluster.wait_connected().await;
    let us = cluster.client(US).await?;
    let eu = cluster.client(EU).await?;
    for i in 0..30 {
        us.register(format!("k{i:02}")).put("v").await?;
    }
    let members: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_be_bytes().to_vec()).collect();
    us.set("members").add(members.clone()).await?;
    eventually("eu-west has every key", IO_TIMEOUT, || async {
        let page = eu.scan("", None, 1000).await.map_err(|e| e.to_string())?;
        if page.value.keys.len() == 31 {
            Ok(())
        } else {
            Err(format!("{} keys", page.value.keys.len()))
        }
    })
    .await;
    // Pages alternate between nodes: the cursor is a position both share.
    let mut listed = Vec::new();
    let mut cursor = None;
    for round in 0.. {
        let client = if round % 2 == 0 { &us } else { &eu };
        let p = client.scan("k", cursor, 4).await?;
        listed.extend(p.value.keys.into_iter().map(|k| k.key));
        match p.value.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<Vec<u8>> = (0..30).map(|i| format!("k{i:02}").into_bytes()).collect();
    ensure!(listed == expected, "{listed:?}");

    // Set pages: ascending, bounded, complete, at local and leader.
    for level in [Consistency::Local, Consistency::Leader] {
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let p = us.set("members").page(after, 30).consistency(level).await?;
            ensure!(p.value.members.len() <= 30);
            got.extend(p.value.members);
            match p.value.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        ensure!(got == members, "{level}");
    }
    ensure!(matches!(
        us.set("members")
            .page(None, 10)
            .consistency(Consistency::Quorum)
            .await,
        Err(Error::InvalidArgument(_))
    ));
    let empty = us.set("none").page(None, 10).await?;
    ensure!(empty.value.members.is_empty() && empty.value.next.is_none());

    // A key that concurrent writes gave two types (the native client does
    // not apply the RESP type rule) is listed once per type, and DBSIZE
    // counts both.
    us.counter("dual").incr(1).await?;
    us.set("dual").add(["m"]).await?;
    let dual = us.scan("dual", None, 100).await?.value;
    let kinds: Vec<Kind> = dual.keys.iter().map(|k| k.kind).collect();
    ensure!(kinds == [Kind::Counter, Kind::Set], "{dual:?}");
    let before = us.scan("", None, 1000).await?.value.keys.len();
    let addr = cluster.node(US).addresses.resp.context("resp_listen")?;
    let token = cluster.dir.client_config()?.token.clone();
    let size = tokio::task::spawn_blocking(move || -> Result<i64> {
        let mut con = connect(addr, &token)?;
        Ok(redis::cmd("DBSIZE").query(&mut con)?)
    })
    .await??;
    ensure!(
        size as usize == before,
        "DBSIZE {size}, {before} objects listed"
    );
    cluster.shutdown().await
}
