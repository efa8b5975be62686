#!/usr/bin/env python3
"""redis-py against a three-region Meridian cluster, over RESP3.

    python3 test_redis_py.py MERIDIAN DIR

DIR holds a cluster started by `cluster.sh up MERIDIAN DIR PORT` (three
nodes, one per region). Every client is redis-py's own default handshake
for RESP3 (`protocol=3`: HELLO 3 AUTH <user> <password>, then CLIENT
SETINFO), with the consistency level as the user name and the cluster's
access token as the password. It checks:

  * the handshake: RESP3, the level from the user name, redis-py's SETINFO;
  * writes made in each region (INCR, SADD, SET, and concurrent SETs of
    one key) converge on every node within a bounded wait;
  * `SET ... EX 1`: TTL 1, the key gone on every node after ~2 s (polled);
  * `quorum` reads through one node see every completed `quorum` write
    made through another, at once, with no retry;
  * SCAN/SSCAN through redis-py's own iterators (`scan_iter`,
    `sscan_iter`, which parse the cursor as an integer) and `redis-cli
    --scan` list every key and member once; KEYS, DBSIZE, RANDOMKEY;
  * with two of the three nodes killed, a `quorum` write is a definite
    failure with the NOREPLICAS prefix, and it did not take effect: after
    the two nodes are restarted with the same configs, the values read at
    `all` on every node are the ones from before.

It kills and restarts nodes through cluster.sh (which keeps their PIDs in
DIR for the caller's clean-up). Every wait is bounded; exits non-zero if a
check fails. Needs redis-py 5 or newer (RESP3).
"""

import os
import re
import subprocess
import sys
import time
import traceback

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER_SH = os.path.join(HERE, "cluster.sh")
# Longest wait for replication to converge (loopback; normally well under 1 s).
CONVERGE_SECS = 20.0
# Longest wait for a node's failure detector to see killed peers as down.
DETECT_SECS = 30.0


def parse_client_toml(path):
    """token and [(node, region, resp_port)] from client.toml (no tomllib:
    Python 3.11+ only)."""
    text = open(path, encoding="utf-8").read()
    token = re.search(r'^token = "([^"]*)"', text, re.M).group(1)
    nodes = []
    for block in text.split("[[nodes]]")[1:]:
        name = re.search(r'^name = "([^"]*)"', block, re.M).group(1)
        region = re.search(r'^region = "([^"]*)"', block, re.M).group(1)
        port = int(re.search(r'^resp = "[^"]*:(\d+)"', block, re.M).group(1))
        nodes.append((name, region, port))
    return token, nodes


class Cluster:
    def __init__(self, meridian, directory):
        self.meridian = meridian
        self.dir = directory
        self.token, nodes = parse_client_toml(os.path.join(directory, "client.toml"))
        self.nodes = [n for n, _, _ in nodes]
        self.region = {n: r for n, r, _ in nodes}
        self.port = {n: p for n, _, p in nodes}
        self.clients = []

    def client(self, node, level):
        r = redis.Redis(
            host="127.0.0.1",
            port=self.port[node],
            username=level,
            password=self.token,
            protocol=3,
            decode_responses=True,
            socket_timeout=15,
            socket_connect_timeout=5,
        )
        self.clients.append(r)
        return r

    def close_clients(self):
        for r in self.clients:
            r.close()
        self.clients = []

    def sh(self, *args):
        subprocess.run(["bash", CLUSTER_SH, *args], check=True, timeout=90)

    def kill(self, *nodes):
        self.sh("stop", self.dir, "--kill", *nodes)

    def start(self, node):
        self.sh("start", self.meridian, self.dir, node)

    def running(self, node):
        return os.path.exists(os.path.join(self.dir, node + ".pid"))

    def peers_connected(self, node):
        r = self.client(node, "local")
        try:
            return int(r.info("replication")["meridian_peers_connected"])
        finally:
            r.close()


def eventually(what, probe, secs=CONVERGE_SECS):
    """Polls probe() until it returns (True, _) or secs pass; returns the
    elapsed time."""
    started = time.monotonic()
    last = None
    while True:
        ok, last = probe()
        if ok:
            return time.monotonic() - started
        if time.monotonic() - started > secs:
            raise AssertionError(f"{what}: not within {secs:.0f} s; last seen: {last!r}")
        time.sleep(0.1)


def expect_error(prefix, fn, *args):
    """fn(*args) must fail with a RESP error starting with prefix; returns
    the message."""
    try:
        got = fn(*args)
    except redis.ResponseError as e:
        msg = str(e)
        assert msg.startswith(prefix + " "), f"expected a {prefix} error, got {msg!r}"
        return msg
    raise AssertionError(f"expected a {prefix} error, got the reply {got!r}")


RUN = str(int(time.time() * 1000))  # keys of this run: reruns on one cluster stay independent


def key(name):
    return f"py:{RUN}:{name}"


def test_handshake(c):
    """redis-py's RESP3 handshake, with the level as the user name."""
    for node, level in zip(c.nodes, ["local", "quorum", "all"]):
        r = c.client(node, level)
        assert r.ping() is True
        hello = r.execute_command("HELLO")
        assert hello["proto"] == 3, hello
        info = r.client_info()
        assert info["resp"] == "3" and info["user"] == level and info["level"] == level, info
        assert info["lib-name"] == "redis-py", info
        assert r.info("replication")["meridian_connection_level"] == level
    # `default`: the node's default_consistency, `local` as init writes it.
    assert c.client(c.nodes[0], "default").client_info()["level"] == "local"
    # An unknown user name is refused, never downgraded. (redis-py's
    # AuthenticationError is a ConnectionError, which it retries with
    # backoff by default: no retries here.)
    bad = redis.Redis(
        host="127.0.0.1", port=c.port[c.nodes[0]], username="eventual",
        password=c.token, protocol=3, socket_timeout=5, retry=Retry(NoBackoff(), 0),
    )
    try:
        bad.ping()
        raise AssertionError("user 'eventual' was accepted")
    except redis.AuthenticationError as e:
        assert "WRONGPASS" in str(e) or "invalid username-password" in str(e), repr(e)
    finally:
        bad.close()
    return "RESP3 handshake on every node; the user name sets the level; unknown user refused"


def test_convergence(c):
    """Writes in every region converge on every node."""
    ctr, members, lww = key("conv:ctr"), key("conv:set"), key("conv:lww")
    want_ctr = 0
    for i, node in enumerate(c.nodes):
        r = c.client(node, "local")
        region = c.region[node]
        for _ in range(i + 1):
            r.incr(ctr)
        want_ctr += i + 1
        assert r.sadd(members, region, "shared") >= 1
        assert r.set(key(f"conv:reg:{region}"), f"written in {region}") is True
        assert r.set(lww, f"last write from {region}") is True  # one key, three regions
    want_members = {c.region[n] for n in c.nodes} | {"shared"}
    readers = {n: c.client(n, "local") for n in c.nodes}

    def probe():
        seen = {}
        for node, r in readers.items():
            seen[node] = (
                r.get(ctr),
                r.smembers(members),
                [r.get(key(f"conv:reg:{c.region[n]}")) for n in c.nodes],
                r.get(lww),
            )
        ok = all(
            s[0] == str(want_ctr)
            and s[1] == want_members
            and s[2] == [f"written in {c.region[n]}" for n in c.nodes]
            for s in seen.values()
        )
        lwws = {s[3] for s in seen.values()}
        ok = ok and len(lwws) == 1 and lwws <= {f"last write from {c.region[n]}" for n in c.nodes}
        return ok, seen

    took = eventually("writes in each region converge on every node", probe)
    c.close_clients()
    return f"INCR/SADD/SET in {len(c.nodes)} regions converged on every node in {took:.2f} s"


def test_quorum_reads(c):
    """quorum reads through one node see completed quorum writes made
    through another, at once."""
    ctr, reg, members = key("q:ctr"), key("q:reg"), key("q:set")
    writers = {n: c.client(n, "quorum") for n in c.nodes}
    readers = {n: c.client(n, "quorum") for n in c.nodes}
    checks = 0
    for round_ in range(2):
        for a in c.nodes:
            for b in c.nodes:
                if a == b:
                    continue
                tag = f"{round_}-{a}-{b}"
                n = writers[a].incr(ctr)
                assert writers[a].set(reg, tag) is True
                assert writers[a].sadd(members, tag) == 1
                # No retry: the read must already see them.
                got = readers[b].get(ctr)
                assert got == str(n), f"quorum write INCR -> {n} through {a}; quorum GET through {b}: {got!r}"
                got = readers[b].get(reg)
                assert got == tag, f"quorum SET {tag!r} through {a}; quorum GET through {b}: {got!r}"
                assert readers[b].sismember(members, tag), f"quorum SADD {tag!r} through {a}; not seen through {b}"
                checks += 3
    c.close_clients()
    return f"{checks} quorum reads each saw the quorum write just completed through another node"


def test_quorum_write_two_down(c):
    """Two nodes down: a quorum write fails definitely (NOREPLICAS) and
    has no effect."""
    a, down = c.nodes[0], c.nodes[1:]
    reg, ctr, members, during = key("down:reg"), key("down:ctr"), key("down:set"), key("down:local")
    q = c.client(a, "quorum")
    assert q.set(reg, "before") is True
    assert q.incrby(ctr, 5) == 5
    assert q.sadd(members, "before") == 1
    try:
        c.kill(*down)
        took = eventually(
            f"{a} sees both peers down",
            lambda: ((n := c.peers_connected(a)) == 0, n),
            DETECT_SECS,
        )
        # Each attempt once: an indeterminate failure is not acceptable here.
        errors = [
            expect_error("NOREPLICAS", q.set, reg, "after"),
            expect_error("NOREPLICAS", q.incr, ctr),
            expect_error("NOREPLICAS", q.sadd, members, "after"),
            expect_error("NOREPLICAS", q.delete, reg),
            expect_error("NOREPLICAS", q.get, reg),  # a quorum read needs a majority too
        ]
        for msg in errors:
            assert "nothing was done" in msg, f"NOREPLICAS must say it is definite: {msg!r}"
        # The surviving node still takes `local` writes.
        assert c.client(a, "local").set(during, "written while two nodes were down") is True
    finally:
        c.close_clients()
        for node in down:
            if not c.running(node):
                c.start(node)
    for node in c.nodes:
        eventually(
            f"{node} reconnects to its peers",
            lambda node=node: ((n := c.peers_connected(node)) == len(c.nodes) - 1, n),
            DETECT_SECS,
        )
    # `all` joins every replica: a write that took effect anywhere would show.
    for node in c.nodes:
        r = c.client(node, "all")
        got = (r.get(reg), r.get(ctr), r.smembers(members))
        assert got == ("before", "5", {"before"}), (
            f"after the failed quorum writes and the restart, {node} reads {got!r} at all"
        )
    # And the local write made during the outage reaches the restarted nodes.
    readers = [c.client(n, "local") for n in c.nodes]
    eventually(
        "the local write made during the outage reaches every node",
        lambda: ((seen := [r.get(during) for r in readers]) == [seen[0]] * len(readers) and seen[0] is not None, seen),
    )
    c.close_clients()
    return (
        f"two nodes killed ({took:.1f} s to detect): quorum SET/INCR/SADD/DEL/GET answered "
        f"NOREPLICAS at once; after restart every node reads the values from before at `all`"
    )


def test_scan(c):
    """Listing keys and a set's members with redis-py's iterators and
    redis-cli's --scan (both take the cursor as an integer)."""
    node = c.nodes[0]
    r = c.client(node, "local")
    names = {key(f"scan:{i}") for i in range(30)}
    for n in names:
        r.set(n, "v")
    members = {f"m{i}" for i in range(50)}
    r.sadd(key("scan-set"), *members)
    got = list(r.scan_iter(match=key("scan:*"), count=7))
    assert set(got) == names and len(got) == len(names), got
    assert {k for k in r.scan_iter(match=key("scan-*"), _type="set")} == {key("scan-set")}
    got = list(r.sscan_iter(key("scan-set"), count=5))
    assert set(got) == members and len(got) == len(members), got
    assert sorted(r.keys(key("scan:*"))) == sorted(names)
    assert r.dbsize() >= len(names) + 1
    assert r.randomkey() is not None
    cli = "redis-cli"
    checked = "redis-py"
    if subprocess.run(["which", cli], capture_output=True).returncode == 0:
        out = subprocess.run(
            [cli, "-p", str(c.port[node]), "--user", "local", "--pass", c.token,
             "--no-auth-warning", "--scan", "--pattern", key("scan:*")],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout.split()
        assert set(out) == names and len(out) == len(names), out
        checked += " and redis-cli --scan"
    return f"{checked}: 30 keys and 50 members listed once each through integer cursors"



def test_hashes(c):
    """Hashes: HSET/HINCRBY/HDEL in every region converge on every node
    (concurrent increments add up, one value per field everywhere), and a
    quorum HGET through one node sees a quorum HSET through another."""
    h = key("hash")
    for i, node in enumerate(c.nodes):
        r = c.client(node, "local")
        region = c.region[node]
        assert r.hset(h, mapping={region: f"from {region}", "shared": region, "gone": "x"}) >= 1
        assert r.hincrby(h, "hits", i + 1) >= i + 1
    want_hits = sum(range(1, len(c.nodes) + 1))
    first = c.client(c.nodes[0], "local")
    assert first.type(h) == "hash"
    readers = {n: c.client(n, "local") for n in c.nodes}

    def probe():
        seen = {node: r.hgetall(h) for node, r in readers.items()}
        views = list(seen.values())
        ok = all(v == views[0] for v in views) and all(
            v.get(c.region[n]) == f"from {c.region[n]}" for v in views for n in c.nodes
        )
        ok = ok and views[0].get("hits") == str(want_hits)
        ok = ok and views[0].get("shared") in {c.region[n] for n in c.nodes}
        return ok, seen

    took = eventually("HSET/HINCRBY in each region converge on every node", probe)
    # Once converged, an HDEL anywhere removes the field everywhere.
    assert first.hdel(h, "gone") == 1
    eventually(
        "HDEL reaches every node",
        lambda: ((seen := [r.hexists(h, "gone") for r in readers.values()]) == [False] * len(readers), seen),
    )
    writer, reader = c.client(c.nodes[0], "quorum"), c.client(c.nodes[-1], "quorum")
    for i in range(3):
        assert writer.hset(h, "q", f"v{i}") in (0, 1)
        got = reader.hget(h, "q")
        assert got == f"v{i}", f"quorum HSET q=v{i} through {c.nodes[0]}; quorum HGET through {c.nodes[-1]}: {got!r}"
    assert reader.hlen(h) == len(c.nodes) + 3  # regions, shared, hits, q
    # redis-py's HSCAN iterator lists every field once (one page, cursor 0).
    assert dict(first.hscan_iter(h)) == first.hgetall(h)
    c.close_clients()
    return f"HSET/HINCRBY in {len(c.nodes)} regions converged in {took:.2f} s (hits={want_hits}); HDEL and quorum HGET seen everywhere"



def test_expiry(c):
    """SET ... EX 1: TTL says 1 s (Redis rounds to the nearest second: 0
    only if this very client took half a second between the two commands),
    PTTL at most 1000 ms; the key is gone on every node after the deadline
    (polled), TTL -2, and a SET after it is a fresh key with no TTL."""
    k = key("expiring")
    first = c.client(c.nodes[0], "local")
    assert first.set(k, "v", ex=1) is True
    ttl = first.ttl(k)
    assert ttl in (0, 1), f"TTL right after SET EX 1: {ttl}"
    pttl = first.pttl(k)
    assert pttl <= 1000 and pttl != -1, f"PTTL right after SET EX 1: {pttl}"
    readers = {n: c.client(n, "local") for n in c.nodes}
    took = eventually(
        "a key SET with EX 1 is gone on every node",
        lambda: ((seen := {n: r.get(k) for n, r in readers.items()}) == {n: None for n in readers}, seen),
    )
    assert all(r.ttl(k) == -2 for r in readers.values())
    assert first.set(k, "fresh") is True
    assert first.get(k) == "fresh" and first.ttl(k) == -1
    assert first.expire(k, 100) is True and 99 <= first.ttl(k) <= 100
    assert first.persist(k) is True and first.ttl(k) == -1
    c.close_clients()
    return f"SET EX 1 gone on every node {took:.2f} s after the first poll; EXPIRE/PERSIST/TTL as Redis"


TESTS = [
    test_handshake,
    test_convergence,
    test_hashes,
    test_expiry,
    test_quorum_reads,
    test_scan,
    test_quorum_write_two_down,
]


def main():
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} MERIDIAN DIR")
    version = tuple(int(x) for x in re.findall(r"\d+", redis.__version__)[:2])
    if version < (5, 0):
        sys.exit(f"redis-py {redis.__version__} has no RESP3 (protocol=3 needs 5.0 or newer)")
    c = Cluster(sys.argv[1], sys.argv[2])
    assert len(c.nodes) == 3, f"needs a three-node cluster, {c.dir} has {c.nodes}"
    passed = failed = 0
    for test in TESTS:
        started = time.monotonic()
        try:
            detail = test(c)
            passed += 1
            print(f"ok - {test.__name__} ({time.monotonic() - started:.1f} s): {detail}", flush=True)
        except Exception:  # noqa: BLE001 -- report every failure, run the rest
            failed += 1
            print(f"not ok - {test.__name__} ({time.monotonic() - started:.1f} s)", flush=True)
            traceback.print_exc(file=sys.stdout)
        finally:
            c.close_clients()
    print(f"redis-py {redis.__version__}: {passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
