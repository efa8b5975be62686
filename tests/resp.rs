//! The RESP front door (docs/resp.md) against real in-process nodes, with
//! the `redis` crate (RESP2 and RESP3) and raw sockets (exact error
//! wording, protocol abuse).
//!
//! Address blocks (`127.31.<block>.x`): 40 commands, 41 limits, 42 an
//! unmet level.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use meridian::inproc::test_protocol;
use meridian::resp::{IO_TIMEOUT, code, connect, q};
use meridian::{InProcessCluster, Spec, TestClusterFiles};
use redis::Value;

/// A raw RESP connection: send bytes, read single-line replies.
struct Raw {
    reader: BufReader<TcpStream>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Result<Raw> {
        let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Raw {
            reader: BufReader::new(s),
        })
    }

    fn authed(addr: SocketAddr, token: &str) -> Result<Raw> {
        let mut r = Raw::connect(addr)?;
        ensure!(r.call(&format!("AUTH {token}"))? == "+OK");
        Ok(r)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.reader.get_mut().write_all(bytes)?;
        Ok(())
    }

    /// One reply line, without its CRLF.
    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line)?;
        ensure!(n > 0, "connection closed");
        Ok(line.trim_end_matches("\r\n").to_owned())
    }

    /// An inline command and its (single-line) reply.
    fn call(&mut self, inline: &str) -> Result<String> {
        self.send(format!("{inline}\r\n").as_bytes())?;
        self.line()
    }

    /// Whether the server closed the connection (EOF within the timeout).
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(self.reader.read(&mut buf), Ok(0) | Err(_))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_clients_get_crdt_semantics_and_levels() -> Result<()> {
    let cluster = InProcessCluster::start(Spec::new(40)).await?;
    cluster.wait_connected().await;
    let names = cluster.names();
    let config = cluster.dir.client_config()?;
    let token = config.token.clone();
    let addrs: Vec<SocketAddr> = names
        .iter()
        .map(|n| {
            cluster
                .node(n)
                .addresses
                .resp
                .context("init writes resp_listen")
        })
        .collect::<Result<_>>()?;
    // client.toml names every node's RESP address.
    for (entry, addr) in config.nodes.iter().zip(&addrs) {
        ensure!(entry.resp.as_deref() == Some(addr.to_string().as_str()));
    }
    // Two types under one key, as concurrent writes in two regions leave
    // them (the QUIC client does not apply the RESP type rule).
    let quic = cluster.client(&names[0]).await?;
    quic.counter("dual").incr(5).await?;
    quic.set("dual").add(["m"]).await?;
    quic.register("dual2").put("x").await?;
    quic.counter("dual2").incr(3).await?;

    let scenario = tokio::task::spawn_blocking(move || -> Result<()> {
        let (us, eu, ap) = (addrs[0], addrs[1], addrs[2]);
        authentication(us, &token)?;
        error_wording(us, &token)?;
        levels(us, &token)?;
        resp3(us, &token)?;
        strings_sets_keys(us, &token)?;
        pipelining_and_transactions(us, &token)?;
        batched_as_one_at_a_time(us, &token)?;
        across_regions(us, eu, ap, &token)?;
        server_commands(us, &token)?;
        Ok(())
    });
    scenario.await??;
    cluster.shutdown().await
}

fn authentication(addr: SocketAddr, token: &str) -> Result<()> {
    let mut r = Raw::connect(addr)?;
    for cmd in ["PING", "GET k", "HSET h f v", "SELECT 0"] {
        ensure!(r.call(cmd)? == "-NOAUTH Authentication required.", "{cmd}");
    }
    ensure!(
        r.call("HELLO 3")?
            .starts_with("-NOAUTH HELLO must be called")
    );
    let wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.";
    ensure!(r.call("AUTH not-the-token")? == wrongpass);
    // A user name that is no level is refused, never downgraded.
    ensure!(r.call(&format!("AUTH fast {token}"))? == wrongpass);
    ensure!(r.call(&format!("AUTH replicas-0 {token}"))? == wrongpass);
    ensure!(r.call(&format!("AUTH replicas-999 {token}"))? == wrongpass);
    ensure!(r.call("PING")? == "-NOAUTH Authentication required.");
    ensure!(r.call(&format!("AUTH {token}"))? == "+OK");
    ensure!(r.call("PING")? == "+PONG");
    ensure!(r.call("QUIT")? == "+OK");
    ensure!(r.closed());
    // The redis crate sees the refusal.
    let e = connect(addr, "default", "wrong", false)
        .err()
        .context("wrong token accepted")?;
    // (redis-rs reports WRONGPASS as its AuthenticationFailed kind.)
    let refused = |e: &anyhow::Error| {
        let text = format!("{e:#} {e:?}");
        text.contains("WRONGPASS") || text.contains("AuthenticationFailed")
    };
    ensure!(refused(&e), "{e:#}");
    let e = connect(addr, "eventual", token, true)
        .err()
        .context("unknown user accepted")?;
    ensure!(refused(&e), "{e:#}");
    Ok(())
}

fn error_wording(addr: SocketAddr, token: &str) -> Result<()> {
    let mut r = Raw::authed(addr, token)?;
    let cases = [
        (
            "HRANDFIELD h 0 v",
            "-ERR unknown command 'HRANDFIELD', with args beginning with: 'h' '0' 'v' ",
        ),
        (
            "FLUSHALL",
            "-ERR unknown command 'FLUSHALL', with args beginning with: ",
        ),
        ("EXPIRE k x", "-ERR value is not an integer or out of range"),
        (
            "EXPIRE k 10 NX XX",
            "-ERR NX and XX, GT or LT options at the same time are not compatible",
        ),
        ("EXPIRE k 10 SOON", "-ERR Unsupported option SOON"),
        ("SELECT 1", "-ERR DB index is out of range"),
        ("SELECT 0", "+OK"),
        ("GET", "-ERR wrong number of arguments for 'get' command"),
        ("SADD ew-set m", ":1"),
        (
            "SET ew-set x",
            "-WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
        (
            "GET ew-set",
            "-WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
        (
            "INCR ew-set",
            "-WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
        ("SET ew-reg abc", "+OK"),
        (
            "INCR ew-reg",
            "-ERR value is not an integer or out of range",
        ),
        (
            "SADD ew-reg m",
            "-WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
        (
            "INCRBY ew-ctr x",
            "-ERR value is not an integer or out of range",
        ),
        ("INCR ew-ctr", ":1"),
        (
            "SET ew-ctr 5",
            "-WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
        ("SET k v EX 0", "-ERR invalid expire time in 'set' command"),
        ("SET k v EX 10 PX 5", "-ERR syntax error"),
        (
            "GETEX k EX -1",
            "-ERR invalid expire time in 'getex' command",
        ),
        (
            "MERIDIAN.AT eventual GET k",
            "-ERR unknown consistency level 'eventual': expected local, leader, quorum, all, replicas-N or default",
        ),
    ];
    for (cmd, want) in cases {
        let got = r.call(cmd)?;
        ensure!(got == want, "{cmd}: got {got:?}, want {want:?}");
    }
    ensure!(
        r.call("WATCH k")?
            .starts_with("-ERR WATCH is not supported")
    );
    Ok(())
}

fn levels(addr: SocketAddr, token: &str) -> Result<()> {
    for (user, level) in [
        ("local", "local"),
        ("leader", "leader"),
        ("quorum", "quorum"),
        ("all", "all"),
        ("replicas-2", "replicas-2"),
        ("replicas-3", "replicas-3"),
        ("default", "local"),
    ] {
        for resp3 in [false, true] {
            let mut con = connect(addr, user, token, resp3)?;
            let key = format!("level-{user}-{resp3}");
            let () = q(&mut con, &["SET", &key, user])?;
            let got: String = q(&mut con, &["GET", &key])?;
            ensure!(got == user);
            let info: String = q(&mut con, &["INFO", "replication"])?;
            ensure!(
                info.contains(&format!("meridian_connection_level:{level}\r\n")),
                "{user}: {info}"
            );
        }
    }
    // MERIDIAN.AT overrides the level of one command.
    let mut con = connect(addr, "local", token, false)?;
    let () = q(&mut con, &["MERIDIAN.AT", "all", "SET", "at-key", "v"])?;
    let got: String = q(&mut con, &["MERIDIAN.AT", "quorum", "GET", "at-key"])?;
    ensure!(got == "v");
    let n: i64 = q(
        &mut con,
        &["MERIDIAN.AT", "default", "INCRBY", "at-ctr", "4"],
    )?;
    ensure!(n == 4);
    // WAIT: how many other replicas durably hold this connection's last write.
    let n: i64 = q(&mut con, &["WAIT", "2", "5000"])?;
    ensure!(n == 2, "WAIT answered {n}");
    let mut fresh = connect(addr, "all", token, false)?;
    let n: i64 = q(&mut fresh, &["WAIT", "1", "10"])?;
    ensure!(n == 0, "WAIT without a write answered {n}");
    let () = q(&mut fresh, &["SET", "wait-all", "v"])?;
    let n: i64 = q(&mut fresh, &["WAIT", "2", "1000"])?;
    ensure!(n == 2, "WAIT after an `all` write answered {n}");
    // WAITAOF: this node's fsync and the other replicas' durable copies.
    let both: Vec<i64> = q(&mut fresh, &["WAITAOF", "1", "2", "5000"])?;
    ensure!(
        both == [1, 2],
        "WAITAOF after an `all` write answered {both:?}"
    );
    // A replicas-3 write is acknowledged once all three replicas hold it
    // durably: WAIT (which counts the other replicas) has nothing left to
    // wait for, and WAITAOF 1 2 agrees.
    let mut three = connect(addr, "replicas-3", token, false)?;
    let () = q(&mut three, &["SET", "wait-replicas", "v"])?;
    let n: i64 = q(&mut three, &["WAIT", "2", "5000"])?;
    ensure!(n == 2, "WAIT after a replicas-3 write answered {n}");
    let both: Vec<i64> = q(&mut three, &["WAITAOF", "1", "2", "5000"])?;
    ensure!(both == [1, 2], "WAITAOF after a replicas-3 write: {both:?}");
    // More replicas than the key has: refused, nothing written.
    let mut four = connect(addr, "replicas-4", token, false)?;
    let err = q::<Value>(&mut four, &["SET", "wait-four", "v"]).unwrap_err();
    ensure!(code(&err).contains("placement group has 3"), "{err}");
    let absent: Option<String> = q(&mut three, &["GET", "wait-four"])?;
    ensure!(absent.is_none(), "{absent:?}");
    let err = q::<Vec<i64>>(&mut fresh, &["WAITAOF", "2", "0", "0"]).unwrap_err();
    ensure!(code(&err).contains("numlocal"), "{err}");
    Ok(())
}

fn resp3(addr: SocketAddr, token: &str) -> Result<()> {
    let mut con = connect(addr, "default", token, true)?;
    let hello: Value = q(&mut con, &["HELLO", "3"])?;
    let Value::Map(pairs) = hello else {
        return Err(anyhow!("HELLO 3 answered {hello:?}"));
    };
    ensure!(pairs.contains(&(Value::BulkString(b"proto".to_vec()), Value::Int(3))));
    ensure!(q::<Value>(&mut con, &["GET", "r3-missing"])? == Value::Nil);
    let _: i64 = q(&mut con, &["SADD", "r3-set", "a", "b"])?;
    match q::<Value>(&mut con, &["SMEMBERS", "r3-set"])? {
        Value::Set(m) => ensure!(m.len() == 2),
        other => return Err(anyhow!("RESP3 SMEMBERS answered {other:?}")),
    }
    let cfg: Value = q(&mut con, &["CONFIG", "GET", "appendonly"])?;
    ensure!(matches!(cfg, Value::Map(_)), "{cfg:?}");
    // The same on RESP2: an array and a flat array.
    let mut con2 = connect(addr, "default", token, false)?;
    match q::<Value>(&mut con2, &["SMEMBERS", "r3-set"])? {
        Value::Array(m) => ensure!(m.len() == 2),
        other => return Err(anyhow!("RESP2 SMEMBERS answered {other:?}")),
    }
    let cfg: Vec<String> = q(&mut con2, &["CONFIG", "GET", "save"])?;
    ensure!(cfg == ["save", ""]);
    // HELLO 2 switches a connection back.
    let hello: Value = q(&mut con, &["HELLO", "2"])?;
    ensure!(matches!(hello, Value::Array(_)), "{hello:?}");
    Ok(())
}

fn strings_sets_keys(addr: SocketAddr, token: &str) -> Result<()> {
    let mut c = connect(addr, "default", token, false)?;
    let con = &mut c;
    // Strings: a register.
    let () = q(con, &["SET", "s1", "hello"])?;
    ensure!(q::<String>(con, &["GET", "s1"])? == "hello");
    ensure!(q::<Option<String>>(con, &["SET", "s1", "x", "NX"])?.is_none());
    ensure!(q::<Option<String>>(con, &["SET", "s-new", "x", "XX"])?.is_none());
    ensure!(q::<Option<String>>(con, &["GET", "s-new"])?.is_none());
    ensure!(q::<Option<String>>(con, &["SET", "s1", "world", "GET"])?.as_deref() == Some("hello"));
    ensure!(q::<i64>(con, &["STRLEN", "s1"])? == 5);
    ensure!(q::<i64>(con, &["STRLEN", "nothing"])? == 0);
    let () = q(con, &["MSET", "m1", "a", "m2", "b"])?;
    let got: Vec<Option<String>> = q(con, &["MGET", "m1", "nothing", "m2"])?;
    ensure!(got == [Some("a".into()), None, Some("b".into())]);
    ensure!(q::<Option<String>>(con, &["GETDEL", "m1"])?.as_deref() == Some("a"));
    ensure!(q::<Option<String>>(con, &["GET", "m1"])?.is_none());
    // Strings: a counter.
    ensure!(q::<i64>(con, &["INCR", "c1"])? == 1);
    ensure!(q::<i64>(con, &["INCRBY", "c1", "10"])? == 11);
    ensure!(q::<i64>(con, &["DECR", "c1"])? == 10);
    ensure!(q::<i64>(con, &["DECRBY", "c1", "3"])? == 7);
    ensure!(q::<String>(con, &["GET", "c1"])? == "7");
    ensure!(q::<String>(con, &["TYPE", "c1"])? == "string");
    // Sets.
    ensure!(q::<i64>(con, &["SADD", "set1", "a", "b", "c", "a"])? == 3);
    ensure!(q::<i64>(con, &["SADD", "set1", "c", "d"])? == 1);
    ensure!(q::<i64>(con, &["SREM", "set1", "d", "zz"])? == 1);
    let mut members: Vec<String> = q(con, &["SMEMBERS", "set1"])?;
    members.sort();
    ensure!(members == ["a", "b", "c"]);
    ensure!(q::<i64>(con, &["SISMEMBER", "set1", "b"])? == 1);
    ensure!(q::<Vec<i64>>(con, &["SMISMEMBER", "set1", "a", "x"])? == [1, 0]);
    ensure!(q::<i64>(con, &["SCARD", "set1"])? == 3);
    let one: String = q(con, &["SRANDMEMBER", "set1"])?;
    ensure!(["a", "b", "c"].contains(&one.as_str()));
    ensure!(q::<Vec<String>>(con, &["SRANDMEMBER", "set1", "-5"])?.len() == 5);
    ensure!(q::<Vec<String>>(con, &["SRANDMEMBER", "set1", "10"])?.len() == 3);
    let popped: String = q(con, &["SPOP", "set1"])?;
    ensure!(q::<i64>(con, &["SISMEMBER", "set1", &popped])? == 0);
    ensure!(q::<Vec<String>>(con, &["SPOP", "set1", "5"])?.len() == 2);
    ensure!(q::<i64>(con, &["SCARD", "set1"])? == 0);
    ensure!(q::<Option<String>>(con, &["SPOP", "set1"])?.is_none());
    ensure!(q::<String>(con, &["TYPE", "set1"])? == "none");
    // Keys.
    let _: i64 = q(con, &["SADD", "k-set", "m"])?;
    ensure!(q::<String>(con, &["TYPE", "k-set"])? == "set");
    ensure!(q::<i64>(con, &["EXISTS", "s1", "k-set", "nothing", "s1"])? == 3);
    ensure!(q::<i64>(con, &["DEL", "s1", "k-set", "nothing"])? == 2);
    ensure!(q::<i64>(con, &["UNLINK", "c1"])? == 1);
    ensure!(q::<i64>(con, &["EXISTS", "s1", "k-set", "c1"])? == 0);
    // Two types under one key (created concurrently elsewhere).
    ensure!(q::<String>(con, &["TYPE", "dual"])? == "string");
    let e = q::<Value>(con, &["GET", "dual"]).unwrap_err();
    ensure!(code(&e).starts_with("WRONGTYPE"), "{e}");
    let e = q::<Value>(con, &["SMEMBERS", "dual"]).unwrap_err();
    ensure!(code(&e).starts_with("WRONGTYPE"), "{e}");
    ensure!(
        q::<String>(con, &["GET", "dual2"])? == "x",
        "the register is preferred"
    );
    ensure!(
        q::<i64>(con, &["DEL", "dual", "dual2"])? == 2,
        "each key counted once"
    );
    ensure!(q::<i64>(con, &["EXISTS", "dual", "dual2"])? == 0);
    ensure!(
        q::<i64>(con, &["SADD", "dual", "fresh"])? == 1,
        "a deleted key takes any type"
    );
    Ok(())
}

fn pipelining_and_transactions(addr: SocketAddr, token: &str) -> Result<()> {
    let mut con = connect(addr, "quorum", token, false)?;
    let (a, b, c, _pong, d): (String, i64, i64, String, String) = redis::pipe()
        .cmd("SET")
        .arg("p1")
        .arg("x")
        .ignore()
        .cmd("GET")
        .arg("p1")
        .cmd("INCR")
        .arg("p-ctr")
        .cmd("INCR")
        .arg("p-ctr")
        .cmd("PING")
        .cmd("ECHO")
        .arg("e")
        .query(&mut con)?;
    ensure!((a.as_str(), b, c, d.as_str()) == ("x", 1, 2, "e"));
    // MULTI/EXEC: queued, then run in order.
    let (x, y): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("tx")
        .cmd("INCRBY")
        .arg("tx")
        .arg("5")
        .query(&mut con)?;
    ensure!((x, y) == (1, 6));
    // Raw: many requests in one write, replies in order; inline too.
    let mut r = Raw::authed(addr, token)?;
    let mut batch = Vec::new();
    for i in 0..50 {
        batch.extend_from_slice(
            format!(
                "INCR raw-ctr\r\n*2\r\n$4\r\nECHO\r\n${}\r\n{i}\r\n",
                i.to_string().len()
            )
            .as_bytes(),
        );
    }
    r.send(&batch)?;
    for i in 0..50 {
        ensure!(r.line()? == format!(":{}", i + 1));
        ensure!(r.line()? == format!("${}", i.to_string().len()));
        ensure!(r.line()? == i.to_string());
    }
    ensure!(r.call("MULTI")? == "+OK");
    ensure!(r.call("NOSUCH x")?.starts_with("-ERR unknown command"));
    ensure!(r.call("INCR tx")? == "+QUEUED");
    ensure!(r.call("EXEC")? == "-EXECABORT Transaction discarded because of previous errors.");
    ensure!(r.call("MULTI")? == "+OK");
    ensure!(r.call("INCR tx")? == "+QUEUED");
    ensure!(r.call("DISCARD")? == "+OK");
    ensure!(r.call("EXEC")? == "-ERR EXEC without MULTI");
    ensure!(r.call("GET tx")? == "$1");
    ensure!(r.line()? == "6", "a discarded transaction changed nothing");
    Ok(())
}

/// One reply on one line: a bulk string after its header, an array's
/// elements after its header.
fn reply_line(r: &mut Raw) -> Result<String> {
    let line = r.line()?;
    if let Some(n) = line.strip_prefix('*') {
        let mut out = line.clone();
        for _ in 0..n.parse::<i64>()?.max(0) {
            out = format!("{out} {}", reply_line(r)?);
        }
        return Ok(out);
    }
    if line.starts_with('$') && line != "$-1" {
        return Ok(format!("{line} {}", r.line()?));
    }
    Ok(line)
}

/// Pipelined commands the node serves alone (user `local`) run as one
/// engine job (server/src/resp/local.rs): every reply is what the same
/// command answers one request at a time (user `quorum`, through the
/// coordinator), in order, type errors included; a write in the batch is
/// replicated and counted by `WAIT`.
fn batched_as_one_at_a_time(addr: SocketAddr, token: &str) -> Result<()> {
    let script = |p: &str| -> Vec<String> {
        [
            "SET {p}s v",
            "GET {p}s",
            "INCR {p}s",
            "SADD {p}s m",
            "INCR {p}c",
            "INCRBY {p}c 5",
            "DECR {p}c",
            "SET {p}c x",
            "GET {p}c",
            "SADD {p}set a b a",
            "SADD {p}set a c",
            "GET {p}set",
            "INCR {p}set",
            "SET {p}s w NX",
            "SET {p}s w XX GET",
            "SET {p}n w XX",
            "GET {p}n",
            "PING",
            "GET {p}s",
            "INCRBY {p}c 9223372036854775807",
            "SET {p}s",
            "SISMEMBER {p}set c",
            "GET {p}s",
            "MSET {p}m1 a {p}m2 b",
            "MGET {p}m1 {p}none {p}set {p}c {p}m2",
            "MSET {p}m1 x {p}set y",
            "MSET {p}m1",
            "GET {p}m1",
            "HSET {p}h f v g w f x",
            "HSET {p}h f y h z",
            "HMSET {p}h i j",
            "HSET {p}s f v",
            "HSET {p}set f v",
            "GET {p}h",
            "SADD {p}h m",
            "HSET {p}h",
            "HGET {p}h f",
            "HLEN {p}h",
        ]
        .iter()
        .map(|c| c.replace("{p}", p))
        .collect()
    };
    let mut replies = Vec::new();
    for (user, prefix) in [("local", "bl-"), ("quorum", "bq-")] {
        let mut r = Raw::connect(addr)?;
        ensure!(r.call(&format!("AUTH {user} {token}"))? == "+OK");
        let commands = script(prefix);
        // All in one write: the node finds them pipelined.
        let mut batch = String::new();
        for c in &commands {
            batch.push_str(c);
            batch.push_str("\r\n");
        }
        r.send(batch.as_bytes())?;
        let mut got = Vec::new();
        for c in &commands {
            let line = reply_line(&mut r)?;
            got.push(format!("{c} -> {line}").replace(prefix, "*"));
        }
        replies.push(got);
        if user == "local" {
            let n: i64 = {
                let mut con = connect(addr, "local", token, false)?;
                let () = q(&mut con, &["SET", "bl-wait", "v"])?;
                q(&mut con, &["WAIT", "2", "5000"])?
            };
            ensure!(n == 2, "WAIT after a batched local write answered {n}");
        }
    }
    ensure!(
        replies[0] == replies[1],
        "batched: {:#?}\none at a time: {:#?}",
        replies[0],
        replies[1]
    );
    // The answers themselves, not only their agreement.
    let expected = [
        "+OK",
        "$1 v",
        "-ERR value is not an integer or out of range",
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
        ":1",
        ":6",
        ":5",
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
        "$1 5",
        ":2",
        ":1",
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
        "$-1",
        "$1 v",
        "$-1",
        "$-1",
        "+PONG",
        "$1 w",
        "-ERR increment or decrement would overflow",
        "-ERR wrong number of arguments for 'set' command",
        ":1",
        "$1 w",
        "+OK",
        "*5 $1 a $-1 $-1 $1 5 $1 b",
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
        "-ERR wrong number of arguments for 'mset' command",
        "$1 a",
        ":2",
        ":1",
        "+OK",
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
        "-ERR wrong number of arguments for 'hset' command",
        "$1 y",
        ":4",
    ];
    for (line, want) in replies[0].iter().zip(expected) {
        ensure!(
            line.ends_with(&format!("-> {want}")),
            "{line}, expected {want}"
        );
    }
    ensure!(replies[0].len() == expected.len());
    Ok(())
}

fn across_regions(us: SocketAddr, eu: SocketAddr, ap: SocketAddr, token: &str) -> Result<()> {
    // A completed quorum write is seen by a quorum read in another region.
    let mut w = connect(eu, "quorum", token, false)?;
    let mut r = connect(ap, "quorum", token, true)?;
    for i in 0..5 {
        let v = format!("v{i}");
        let () = q(&mut w, &["SET", "geo-reg", &v])?;
        ensure!(q::<String>(&mut r, &["GET", "geo-reg"])? == v);
        let n: i64 = q(&mut w, &["INCR", "geo-ctr"])?;
        ensure!(q::<i64>(&mut r, &["GET", "geo-ctr"])? == n);
    }
    // Local writes in every region converge (counters add up, sets union).
    let mut cons: Vec<_> = [us, eu, ap]
        .iter()
        .map(|a| connect(*a, "local", token, false))
        .collect::<Result<_>>()?;
    for (i, con) in cons.iter_mut().enumerate() {
        let _: i64 = q(con, &["INCRBY", "conv-ctr", "10"])?;
        let _: i64 = q(con, &["SADD", "conv-set", &format!("r{i}")])?;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ok = cons.iter_mut().all(|con| {
            q::<i64>(con, &["GET", "conv-ctr"]).ok() == Some(30)
                && q::<i64>(con, &["SCARD", "conv-set"]).ok() == Some(3)
        });
        if ok {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "regions did not converge"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn server_commands(addr: SocketAddr, token: &str) -> Result<()> {
    let mut con = connect(addr, "default", token, false)?;
    let info: String = q(&mut con, &["INFO"])?;
    for section in ["# Server", "# Clients", "# Replication", "# Persistence"] {
        ensure!(info.contains(section), "INFO lacks {section}");
    }
    ensure!(
        info.contains("peer0:node=") && info.contains("link=up"),
        "{info}"
    );
    ensure!(info.contains("aof_enabled:1") && info.contains("loading:0"));
    let _: String = q(&mut con, &["INFO", "nosuchsection"])?;
    ensure!(q::<i64>(&mut con, &["COMMAND", "COUNT"])? > 10);
    let _: Value = q(&mut con, &["COMMAND"])?;
    let _: Value = q(&mut con, &["COMMAND", "DOCS"])?;
    let _: Value = q(&mut con, &["COMMAND", "INFO", "get", "nosuch"])?;
    ensure!(q::<Vec<String>>(&mut con, &["TIME"])?.len() == 2);
    let () = q(&mut con, &["CLIENT", "SETNAME", "tester"])?;
    ensure!(q::<String>(&mut con, &["CLIENT", "GETNAME"])? == "tester");
    let id: i64 = q(&mut con, &["CLIENT", "ID"])?;
    let line: String = q(&mut con, &["CLIENT", "INFO"])?;
    ensure!(
        line.contains(&format!("id={id} ")) && line.contains("name=tester"),
        "{line}"
    );
    let () = q(&mut con, &["CLIENT", "SETINFO", "LIB-NAME", "x"])?;
    let line: String = q(&mut con, &["CLIENT", "INFO"])?;
    ensure!(line.contains(" lib-name=x "), "{line}");
    ensure!(q::<String>(&mut con, &["ECHO", "hi"])? == "hi");
    ensure!(q::<String>(&mut con, &["PING", "yo"])? == "yo");
    Ok(())
}

/// `[resp] max_connections` of the node the limits test abuses.
const MAX_CONNECTIONS: usize = 4;

/// Each limit refuses its abuse and the node keeps serving other clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_cost_bounded_memory_and_other_clients_keep_being_served() -> Result<()> {
    let dir = TestClusterFiles::create(Spec::new(41))?;
    let names = dir.names();
    dir.edit(&names[0], |f| {
        f.resp.max_connections = MAX_CONNECTIONS as u32
    })?;
    let cluster = InProcessCluster::start_with(dir, test_protocol).await?;
    let token = cluster.dir.client_config()?.token.clone();
    let addr = cluster.node(&names[0]).addresses.resp.context("resp")?;
    let scenario = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut good = connect(addr, "default", &token, false)?;
        let alive = |con: &mut redis::Connection, i: i64| -> Result<()> {
            ensure!(q::<i64>(con, &["INCR", "alive"])? == i);
            Ok(())
        };
        alive(&mut good, 1)?;

        // Connections past the limit are refused, Redis's way.
        let mut held = Vec::new();
        for _ in 1..MAX_CONNECTIONS {
            held.push(Raw::authed(addr, &token)?);
        }
        let mut refused = Raw::connect(addr)?;
        ensure!(refused.line()? == "-ERR max number of clients reached");
        ensure!(refused.closed());
        drop(held);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Raw::authed(addr, &token).is_err() {
            ensure!(std::time::Instant::now() < deadline, "slots not freed");
            std::thread::sleep(Duration::from_millis(50));
        }

        // A 2 GB bulk length is refused at its header and the connection
        // closed, authenticated or not.
        for authed in [true, false] {
            let mut r = if authed {
                Raw::authed(addr, &token)?
            } else {
                Raw::connect(addr)?
            };
            r.send(b"*2\r\n$3\r\nGET\r\n$2147483648\r\n")?;
            ensure!(r.line()? == "-ERR Protocol error: invalid bulk length");
            ensure!(r.closed());
        }
        alive(&mut good, 2)?;

        // Too many arguments, an endless inline line.
        let mut r = Raw::connect(addr)?;
        r.send(b"*100000000\r\n")?;
        ensure!(r.line()? == "-ERR Protocol error: invalid multibulk length");
        ensure!(r.closed());
        let mut r = Raw::connect(addr)?;
        r.send(&vec![b'a'; 70 << 10])?;
        ensure!(r.line()? == "-ERR Protocol error: too big inline request");
        ensure!(r.closed());
        alive(&mut good, 3)?;

        // A half-sent command holds its connection, nothing more.
        let mut half = Raw::authed(addr, &token)?;
        half.send(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$1048576\r\n")?;
        half.send(&[b'x'; 1000])?;
        alive(&mut good, 4)?;

        // A client that pipelines many large replies without reading:
        // the node blocks on it (it stops reading its requests), others
        // are served.
        let members: Vec<String> = (0..200).map(|i| format!("{i:0>100}")).collect();
        let mut cmd = redis::cmd("SADD");
        cmd.arg("big").arg(&members);
        let _: i64 = cmd.query(&mut good)?;
        let mut greedy = Raw::authed(addr, &token)?;
        let request = b"SMEMBERS big\r\n".repeat(1_000);
        greedy
            .reader
            .get_mut()
            .set_write_timeout(Some(Duration::from_secs(2)))?;
        let _ = greedy.send(&request);
        alive(&mut good, 5)?;

        // Every other connection keeps its own state.
        ensure!(q::<i64>(&mut good, &["SCARD", "big"])? == 200);
        drop((half, greedy));
        alive(&mut good, 6)?;
        Ok(())
    });
    scenario.await??;
    cluster.shutdown().await
}

/// A level that cannot be met fails definitely, with a prefix clients may
/// retry on; `local` keeps working on the surviving node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unmet_level_is_a_definite_noreplicas_error() -> Result<()> {
    let mut cluster = InProcessCluster::start(Spec::new(42)).await?;
    cluster.wait_connected().await;
    let names = cluster.names();
    let token = cluster.dir.client_config()?.token.clone();
    let addr = cluster.node(&names[0]).addresses.resp.context("resp")?;
    cluster.stop(&names[1]).await?;
    cluster.stop(&names[2]).await?;
    let scenario = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut quorum = connect(addr, "quorum", &token, false)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let e = loop {
            // Until the failure detector sees the nodes gone, a write may
            // time out instead (indeterminate): that is not what we test.
            match q::<Value>(&mut quorum, &["SET", "unmet", "v"]) {
                Err(e) if e.code() == Some("NOREPLICAS") => break e,
                _ => {}
            }
            ensure!(std::time::Instant::now() < deadline, "never NOREPLICAS");
            std::thread::sleep(Duration::from_millis(100));
        };
        ensure!(e.detail().unwrap_or("").contains("nothing was done"), "{e}");
        let e = q::<Value>(&mut quorum, &["MERIDIAN.AT", "all", "GET", "unmet"]).unwrap_err();
        ensure!(e.code() == Some("NOREPLICAS"), "{e}");
        let mut two = connect(addr, "replicas-2", &token, false)?;
        let e = q::<Value>(&mut two, &["SET", "unmet", "v"]).unwrap_err();
        ensure!(e.code() == Some("NOREPLICAS"), "{e}");
        ensure!(
            e.detail().unwrap_or("").contains("needs 2, 1 reachable"),
            "{e}"
        );
        let mut one = connect(addr, "replicas-1", &token, false)?;
        ensure!(q::<Option<String>>(&mut one, &["GET", "unmet"])?.is_none());
        let mut local = connect(addr, "local", &token, false)?;
        let () = q(&mut local, &["SET", "unmet", "v"])?;
        ensure!(q::<String>(&mut local, &["GET", "unmet"])? == "v");
        Ok(())
    });
    scenario.await??;
    cluster.shutdown().await
}
