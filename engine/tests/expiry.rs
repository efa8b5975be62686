//! Expiry through the engine: deadlines hide content, firing makes it
//! final and removes it, replicas converge, nothing expired comes back
//! through catch-up or a full-state join (docs/maps-and-expiry.md §2).

mod common;

use common::*;
use meridian_engine::{
    Deadline, Engine, GroupId, Kind, Merged, ObjectKey, Op, PhysicalTime, Ttl, Value,
};

/// Simulated times: milliseconds after the test's start (the engines'
/// clocks only move forward, so every test walks forward from here).
struct Time(u64);

impl Time {
    fn start() -> Time {
        Time(now().unix_ms())
    }
    fn at(&self, ms: u64) -> PhysicalTime {
        PhysicalTime::from_unix_ms(self.0 + ms)
    }
    fn ms(&self, ms: u64) -> u64 {
        self.0 + ms
    }
}

/// Delivers every delta `from` has that `to` lacks, merged at `at`.
fn pull_at(to: &Engine, from: &Engine, at: PhysicalTime) -> usize {
    let mut applied = 0;
    loop {
        let since = from
            .deltas_since(&to.applied(), &|_: GroupId| true, 64, 1 << 20)
            .unwrap()
            .expect("no full sync needed");
        for r in &since.records {
            if let Merged::Applied { .. } = to.merge(r, at).unwrap() {
                applied += 1;
            }
        }
        if !since.more {
            return applied;
        }
    }
}

fn reg(e: &Engine, k: &ObjectKey, at: PhysicalTime) -> Option<Vec<u8>> {
    match e.read_at(k, at).unwrap() {
        Value::Register(v) => v.and_then(|r| r.value),
        other => panic!("{other:?}"),
    }
}

fn members_at(e: &Engine, k: &ObjectKey, at: PhysicalTime) -> Vec<Vec<u8>> {
    match e.read_at(k, at).unwrap() {
        Value::Set(v) => v,
        other => panic!("{other:?}"),
    }
}

fn counter_at(e: &Engine, k: &ObjectKey, at: PhysicalTime) -> i64 {
    match e.read_at(k, at).unwrap() {
        Value::Counter(v) => v,
        other => panic!("{other:?}"),
    }
}

fn put_ex(e: &Engine, k: &ObjectKey, v: &str, ttl_ms: u64, at: PhysicalTime) {
    e.apply(
        k,
        Op::PutTtl(v.as_bytes().to_vec(), Ttl::Expire(Deadline::In(ttl_ms))),
        at,
    )
    .unwrap();
}

#[test]
fn a_deadline_hides_the_value_and_a_later_write_is_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let t = Time::start();
    let k = register_key("session");
    put_ex(&e, &k, "v1", 2_000, t.at(0));
    assert_eq!(reg(&e, &k, t.at(1_999)), Some(b"v1".to_vec()));
    assert_eq!(e.ttl(&k, t.at(1_000)).unwrap(), Some(t.ms(2_000)));
    assert_eq!(reg(&e, &k, t.at(2_000)), None, "gone at the deadline");
    assert_eq!(e.ttl(&k, t.at(2_000)).unwrap(), None);
    // A write after the deadline: a fresh value with no TTL.
    let a = e.apply(&k, Op::Put(b"v2".to_vec()), t.at(3_000)).unwrap();
    assert!(
        !a.before.is_empty(),
        "the write fired the expiry first: {:?}",
        a.before
    );
    assert_eq!(reg(&e, &k, t.at(60_000)), Some(b"v2".to_vec()));
    assert_eq!(e.ttl(&k, t.at(3_000)).unwrap(), None);
    assert_eq!(e.metrics().expiry_fired, 1);
}

#[test]
fn set_clears_the_ttl_keepttl_keeps_it_and_persist_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let t = Time::start();
    let k = register_key("k");
    put_ex(&e, &k, "a", 1_000, t.at(0));
    e.apply(&k, Op::PutTtl(b"b".to_vec(), Ttl::Keep), t.at(10))
        .unwrap();
    assert_eq!(e.ttl(&k, t.at(20)).unwrap(), Some(t.ms(1_000)));
    assert_eq!(reg(&e, &k, t.at(1_000)), None, "KEEPTTL kept the deadline");
    put_ex(&e, &k, "c", 1_000, t.at(2_000));
    e.apply(&k, Op::Put(b"d".to_vec()), t.at(2_010)).unwrap();
    assert_eq!(e.ttl(&k, t.at(2_020)).unwrap(), None, "plain SET clears it");
    assert_eq!(reg(&e, &k, t.at(9_000)), Some(b"d".to_vec()));
    e.apply(&k, Op::Expire(Deadline::In(500)), t.at(9_000))
        .unwrap();
    e.apply(&k, Op::Persist, t.at(9_100)).unwrap();
    assert_eq!(e.ttl(&k, t.at(9_200)).unwrap(), None);
    assert_eq!(reg(&e, &k, t.at(20_000)), Some(b"d".to_vec()));
}

#[test]
fn a_deadline_at_or_before_now_expires_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let t = Time::start();
    let k = set_key("s");
    e.apply(&k, Op::Add(members(&["a", "b"])), t.at(0)).unwrap();
    e.apply(&k, Op::Expire(Deadline::At(t.ms(5))), t.at(10))
        .unwrap();
    assert!(members_at(&e, &k, t.at(10)).is_empty());
    // The content is removed from storage, not just hidden.
    let stored = e.state(&k).unwrap().map(|s| s.value());
    assert!(
        stored.is_none_or(|v| v == Value::Set(vec![])),
        "the content is removed from storage, not only hidden"
    );
}

#[test]
fn concurrent_expires_converge_to_the_shorter_deadline() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path()), open(db.path()));
    let t = Time::start();
    let k = register_key("k");
    a.apply(&k, Op::Put(b"v".to_vec()), t.at(0)).unwrap();
    pull_at(&b, &a, t.at(1));
    a.apply(&k, Op::Expire(Deadline::In(50_000)), t.at(100))
        .unwrap();
    b.apply(&k, Op::Expire(Deadline::In(5_000)), t.at(100))
        .unwrap();
    pull_at(&a, &b, t.at(200));
    pull_at(&b, &a, t.at(200));
    for e in [&a, &b] {
        assert_eq!(e.ttl(&k, t.at(300)).unwrap(), Some(t.ms(5_100)));
        assert_eq!(reg(e, &k, t.at(5_100)), None);
    }
    // PERSIST concurrent with an EXPIRE it had not seen: still expires.
    let k2 = register_key("k2");
    a.apply(&k2, Op::Put(b"v".to_vec()), t.at(6_000)).unwrap();
    pull_at(&b, &a, t.at(6_001));
    a.apply(&k2, Op::Expire(Deadline::In(1_000)), t.at(6_100))
        .unwrap();
    b.apply(&k2, Op::Persist, t.at(6_100)).unwrap();
    pull_at(&a, &b, t.at(6_200));
    pull_at(&b, &a, t.at(6_200));
    for e in [&a, &b] {
        assert_eq!(reg(e, &k2, t.at(7_100)), None);
    }
}

#[test]
fn a_replica_partitioned_across_the_deadline_does_not_bring_the_set_back() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path()), open(db.path()));
    let t = Time::start();
    let k = set_key("cart");
    a.apply(&k, Op::Add(members(&["x", "y"])), t.at(0)).unwrap();
    a.apply(&k, Op::Expire(Deadline::In(1_000)), t.at(10))
        .unwrap();
    pull_at(&b, &a, t.at(20));
    // Partitioned: a fires and reclaims; b still holds the content.
    let pass = a.expire_due(t.at(2_000), 256).unwrap();
    assert_eq!(pass.fired, 1);
    assert!(!pass.records.is_empty());
    assert!(members_at(&a, &k, t.at(2_000)).is_empty());
    assert!(
        members_at(&b, &k, t.at(2_000)).is_empty(),
        "b hides it on its own clock"
    );
    // b's old state joined into a (a full-state sync or read repair):
    // nothing comes back.
    let old = b.state(&k).unwrap().expect("b still stores the content");
    a.merge_state(&k, &old, t.at(2_100)).unwrap();
    assert!(members_at(&a, &k, t.at(2_100)).is_empty());
    assert!(members_at(&a, &k, t.at(60_000)).is_empty());
    // Heal: b learns a's firing, fires itself, and converges.
    pull_at(&b, &a, t.at(2_200));
    assert!(members_at(&b, &k, t.at(2_200)).is_empty());
    b.expire_due(t.at(2_300), 256).unwrap();
    pull_at(&a, &b, t.at(2_400));
    for e in [&a, &b] {
        assert!(members_at(e, &k, t.at(60_000)).is_empty());
    }
}

#[test]
fn content_the_firing_replica_had_not_seen_is_removed_where_it_is_held() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path()), open(db.path()));
    let t = Time::start();
    let k = counter_key("hits");
    a.apply(&k, Op::Incr(5), t.at(0)).unwrap();
    a.apply(&k, Op::Expire(Deadline::In(1_000)), t.at(10))
        .unwrap();
    pull_at(&b, &a, t.at(20));
    // b increments before the deadline; a never sees it before firing.
    b.apply(&k, Op::Incr(7), t.at(500)).unwrap();
    a.expire_due(t.at(1_500), 256).unwrap();
    // b gets a's firing before its own worker ran: the increment a had
    // not seen stays hidden (b has not fired yet) ...
    pull_at(&b, &a, t.at(1_600));
    assert_eq!(counter_at(&b, &k, t.at(1_600)), 0);
    // ... until b fires, removing it; then both agree on 0 for good.
    let pass = b.expire_due(t.at(1_700), 256).unwrap();
    assert_eq!(pass.fired, 1);
    pull_at(&a, &b, t.at(1_800));
    for e in [&a, &b] {
        assert_eq!(counter_at(e, &k, t.at(60_000)), 0);
    }
    // A write after the expiry is a fresh count.
    a.apply(&k, Op::Incr(2), t.at(2_000)).unwrap();
    pull_at(&b, &a, t.at(2_100));
    assert_eq!(counter_at(&b, &k, t.at(60_000)), 2);
}

#[test]
fn a_register_written_after_the_deadline_where_it_was_unknown_survives() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path()), open(db.path()));
    let t = Time::start();
    let k = register_key("r");
    a.apply(&k, Op::Put(b"old".to_vec()), t.at(0)).unwrap();
    pull_at(&b, &a, t.at(1));
    a.apply(&k, Op::Expire(Deadline::In(1_000)), t.at(10))
        .unwrap();
    // b, partitioned, writes after the deadline without knowing of it.
    b.apply(&k, Op::Put(b"new".to_vec()), t.at(2_000)).unwrap();
    a.expire_due(t.at(2_100), 256).unwrap();
    pull_at(&a, &b, t.at(2_200));
    pull_at(&b, &a, t.at(2_200));
    b.expire_due(t.at(2_300), 256).unwrap();
    pull_at(&a, &b, t.at(2_400));
    for e in [&a, &b] {
        assert_eq!(reg(e, &k, t.at(60_000)), Some(b"new".to_vec()));
    }
}

#[test]
fn expiry_survives_a_reopen_and_the_worker_finds_due_keys_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let t = Time::start();
    let k = ObjectKey::new(Kind::Map, b"h".to_vec()).unwrap();
    {
        let e = open(dir.path());
        e.apply(&k, Op::HSet(vec![(b"f".to_vec(), b"v".to_vec())]), t.at(0))
            .unwrap();
        let a = e
            .apply(&k, Op::Expire(Deadline::In(1_000)), t.at(10))
            .unwrap();
        e.wait_durable(a.lsn).unwrap();
        e.close().unwrap();
    }
    let e = open(dir.path());
    assert_eq!(e.ttl(&k, t.at(20)).unwrap(), Some(t.ms(1_010)));
    assert!(e.metrics().expiry_fired == 0);
    let pass = e.expire_due(t.at(1_010), 256).unwrap();
    assert_eq!((pass.visited, pass.fired), (1, 1));
    assert!(matches!(
        e.read_at(&k, t.at(1_010)).unwrap(),
        Value::Map { count: 0, .. }
    ));
    // The index entry is gone: a second pass visits nothing.
    assert_eq!(e.expire_due(t.at(5_000), 256).unwrap().visited, 0);
}

#[test]
fn del_removes_the_ttl_so_a_new_object_starts_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let t = Time::start();
    let k = set_key("s");
    e.apply(&k, Op::Add(members(&["a"])), t.at(0)).unwrap();
    e.apply(&k, Op::Expire(Deadline::In(1_000)), t.at(10))
        .unwrap();
    e.apply(&k, Op::Delete, t.at(20)).unwrap();
    assert_eq!(e.ttl(&k, t.at(30)).unwrap(), None);
    e.apply(&k, Op::Add(members(&["b"])), t.at(40)).unwrap();
    assert_eq!(members_at(&e, &k, t.at(60_000)), members(&["b"]));
}

/// A small deterministic generator (the histories are reproducible from
/// the seed printed on failure).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random histories on three replicas: writes of every kind, TTL settings
/// (some already due), persists and deletes, at random moments; deltas
/// delivered between random pairs at random times, reclamation passes
/// at random. After everything is delivered and every replica has fired
/// what is due, every replica reads the same value of every object, and
/// nothing a replica showed as expired after its final firing reappears
/// later (a second full round of delivery and firing changes nothing).
#[test]
fn random_histories_converge_and_expired_content_stays_gone() {
    let kinds = [Kind::Register, Kind::Counter, Kind::Set, Kind::Map];
    for seed in 1..=48u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let es: Vec<Engine> = dirs.iter().map(|d| open(d.path())).collect();
        let t = Time::start();
        let keys: Vec<ObjectKey> = (0..6)
            .map(|i| {
                let kind = kinds[i % kinds.len()];
                ObjectKey::new(kind, format!("k{}", i / 2).into_bytes()).unwrap()
            })
            .collect();
        let mut clock = 0u64;
        for _ in 0..60 {
            clock += rng.below(400);
            let at = t.at(clock);
            let e = &es[rng.below(3) as usize];
            let k = &keys[rng.below(keys.len() as u64) as usize];
            match rng.below(10) {
                0..=3 => {
                    let v = format!("v{}", rng.below(1000)).into_bytes();
                    let op = match k.kind() {
                        Kind::Register => match rng.below(3) {
                            0 => Op::Put(v),
                            1 => Op::PutTtl(v, Ttl::Keep),
                            _ => Op::PutTtl(v, Ttl::Expire(Deadline::In(rng.below(3_000)))),
                        },
                        Kind::Counter => Op::Incr(rng.below(9) as i64 + 1),
                        Kind::Set => Op::Add(vec![v]),
                        Kind::Map => Op::HSet(vec![(b"f".to_vec(), v)]),
                    };
                    e.apply(k, op, at).unwrap();
                }
                4 | 5 => {
                    e.apply(k, Op::Expire(Deadline::In(rng.below(3_000))), at)
                        .unwrap();
                }
                6 => {
                    e.apply(k, Op::Persist, at).unwrap();
                }
                7 => {
                    e.apply(k, Op::Delete, at).unwrap();
                }
                8 => {
                    e.expire_due(at, 1 + rng.below(4) as usize).unwrap();
                }
                _ => {
                    let (a, b) = (rng.below(3) as usize, rng.below(3) as usize);
                    if a != b {
                        pull_at(&es[a], &es[b], at);
                    }
                }
            }
        }
        // Quiesce: past every deadline, deliver everything and fire
        // everything due, twice over.
        let end = clock + 10_000;
        let settle = |at: PhysicalTime| {
            for _ in 0..3 {
                for a in 0..3 {
                    for b in 0..3 {
                        if a != b {
                            pull_at(&es[a], &es[b], at);
                        }
                    }
                }
                for e in &es {
                    while e.expire_due(at, 64).unwrap().visited == 64 {}
                }
            }
        };
        settle(t.at(end));
        let seen: Vec<Vec<Value>> = es
            .iter()
            .map(|e| {
                keys.iter()
                    .map(|k| e.read_at(k, t.at(end)).unwrap())
                    .collect()
            })
            .collect();
        for (i, k) in keys.iter().enumerate() {
            let strip = |v: &Value| match v {
                Value::Register(r) => {
                    Value::Register(r.as_ref().filter(|r| r.value.is_some()).cloned())
                }
                v => v.clone(),
            };
            assert_eq!(
                strip(&seen[0][i]),
                strip(&seen[1][i]),
                "seed {seed}: replicas 0 and 1 disagree on {k:?}"
            );
            assert_eq!(
                strip(&seen[0][i]),
                strip(&seen[2][i]),
                "seed {seed}: replicas 0 and 2 disagree on {k:?}"
            );
        }
        settle(t.at(end + 1_000));
        for (r, e) in es.iter().enumerate() {
            for (i, k) in keys.iter().enumerate() {
                assert_eq!(
                    e.read_at(k, t.at(end + 1_000)).unwrap(),
                    seen[r][i],
                    "seed {seed}: replica {r} changed {k:?} after settling"
                );
            }
        }
    }
}
