//! Integration tests of the storage engine's public API: local operations
//! and reads of every type; idempotent merges; out-of-order delivery;
//! clock refusal; replication through `deltas_since` (including relaying
//! through a third engine and placement-group filtering); checkpoint,
//! truncation and the full-state sync that follows; incarnations across
//! clean and unclean stops; recovery; re-issuing effects whose log records
//! were lost; limits and type errors; the directory lock; and periodic
//! durability.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use meridian_engine::crdt::{Counter, OrSet};
use meridian_engine::{
    CausalContext, Delta, Dot, Durability, Engine, Error, GroupId, Hlc, Kind, MAX_KEY_BYTES,
    MAX_MEMBERS_PER_OP, MAX_VALUE_BYTES, Merged, ObjectKey, ObjectState, Op, PhysicalTime, Record,
    StreamId, Value, VersionVector,
};

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    out.sort();
    out
}

/// Every object's value, for comparing engines.
fn snapshot(e: &Engine, keys: &[ObjectKey]) -> Vec<Value> {
    keys.iter().map(|k| e.read(k).unwrap()).collect()
}

/// A deterministic mix of operations over a few objects of each type.
fn mixed_ops(n: usize, seed: u64) -> Vec<(ObjectKey, Op)> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let r = next();
            let which = (r % 3) as usize;
            let obj = ((r >> 8) % 3) as usize;
            let m = format!("m{}", (r >> 16) % 6);
            match which {
                0 => {
                    let op = if (r >> 24) % 9 == 0 {
                        Op::Delete
                    } else {
                        Op::Incr((r >> 32) as i64 % 100 - 40)
                    };
                    (counter_key(&format!("c{obj}")), op)
                }
                1 => {
                    let op = match (r >> 24) % 7 {
                        0 => Op::Delete,
                        1..=2 => Op::Remove(vec![m.into_bytes()]),
                        _ => Op::Add(vec![m.into_bytes(), format!("x{i}").into_bytes()]),
                    };
                    (set_key(&format!("s{obj}")), op)
                }
                _ => {
                    let op = if (r >> 24) % 8 == 0 {
                        Op::Delete
                    } else {
                        Op::Put(format!("v{i}").into_bytes())
                    };
                    (register_key(&format!("r{obj}")), op)
                }
            }
        })
        .collect()
}

fn mixed_keys() -> Vec<ObjectKey> {
    let mut keys = Vec::new();
    for i in 0..3 {
        keys.push(counter_key(&format!("c{i}")));
        keys.push(set_key(&format!("s{i}")));
        keys.push(register_key(&format!("r{i}")));
    }
    keys
}

/// `inspect` reports every type at a key from point reads: the register's
/// value, the counter's, the set's member count and membership of the
/// members asked about.
#[test]
fn inspect_reports_each_type_at_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let asked = members(&["a", "z"]);
    let none = e.inspect(b"k", &asked).unwrap();
    assert_eq!(none.register, None);
    assert_eq!(none.counter, 0);
    assert_eq!(none.set_count, 0);
    assert_eq!(none.members_present, [false, false]);

    apply(&e, &register_key("k"), Op::Put(b"v".to_vec()));
    apply(&e, &counter_key("k"), Op::Incr(-3));
    apply(&e, &set_key("k"), Op::Add(members(&["a", "b", "c"])));
    let all = e.inspect(b"k", &asked).unwrap();
    assert_eq!(all.register.as_deref(), Some(&b"v"[..]));
    assert_eq!(all.counter, -3);
    assert_eq!(all.set_count, 3);
    assert_eq!(all.members_present, [true, false]);

    // Deleted objects read as absent.
    apply(&e, &register_key("k"), Op::Delete);
    apply(&e, &set_key("k"), Op::Remove(members(&["a"])));
    let after = e.inspect(b"k", &asked).unwrap();
    assert_eq!(after.register, None);
    assert_eq!(after.set_count, 2);
    assert_eq!(after.members_present, [false, false]);
}

#[test]
fn apply_and_read_each_type() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let c = counter_key("likes");
    let s = set_key("likes");
    let r = register_key("likes");
    // Absent objects read as empty; the type is part of the identity.
    assert_eq!(e.read(&c).unwrap(), Value::Counter(0));
    assert_eq!(e.read(&s).unwrap(), Value::Set(vec![]));
    assert_eq!(e.read(&r).unwrap(), Value::Register(None));

    let a = apply(&e, &c, Op::Incr(5));
    assert_eq!(a.value, Some(Value::Counter(5)));
    assert_eq!(a.record.key, c);
    assert_eq!(a.record.dot, Dot::new(StreamId::from(e.incarnation()), 1));
    apply(&e, &c, Op::Incr(-7));
    assert_eq!(counter(&e, &c), -2);
    let a = apply(&e, &c, Op::Delete);
    assert_eq!(a.value, Some(Value::Counter(0)));
    apply(&e, &c, Op::Incr(4));
    assert_eq!(counter(&e, &c), 4);

    let a = apply(&e, &s, Op::Add(members(&["b", "a", "c", "a"])));
    assert_eq!(a.value, None);
    assert_eq!(set(&e, &s), members(&["a", "b", "c"]));
    apply(&e, &s, Op::Remove(members(&["b", "zzz"])));
    assert_eq!(set(&e, &s), members(&["a", "c"]));
    apply(&e, &s, Op::Delete);
    assert_eq!(set(&e, &s), Vec::<Vec<u8>>::new());
    apply(&e, &s, Op::Add(members(&["d"])));
    assert_eq!(set(&e, &s), members(&["d"]));

    let a = apply(&e, &r, Op::Put(b"one".to_vec()));
    let Some(Value::Register(Some(rv))) = a.value else {
        panic!("{:?}", a.value)
    };
    assert_eq!(rv.value.as_deref(), Some(&b"one"[..]));
    assert_eq!(rv.hlc, a.record.hlc);
    apply(&e, &r, Op::Put(b"two".to_vec()));
    assert_eq!(register(&e, &r).as_deref(), Some(&b"two"[..]));
    apply(&e, &r, Op::Delete);
    match e.read(&r).unwrap() {
        Value::Register(Some(rv)) => assert_eq!(rv.value, None, "a delete is a tombstone"),
        other => panic!("{other:?}"),
    }
    // Each write got the next dot of this node's stream.
    assert_eq!(
        e.applied().vector().get(StreamId::from(e.incarnation())),
        11
    );
    assert_eq!(e.metrics().writes, 11);
    // The full states agree with the reads.
    let Some(ObjectState::Set(st)) = e.state(&s).unwrap() else {
        panic!()
    };
    assert_eq!(st.members().collect::<Vec<_>>(), vec![&b"d"[..]]);
}

#[test]
fn durable_contains_what_wait_durable_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let k = counter_key("k");
    for i in 0..200 {
        let a = e.apply(&k, Op::Incr(1), now()).unwrap();
        e.wait_durable(a.lsn).unwrap();
        assert!(
            e.durable().contains(a.record.dot),
            "write {i} acknowledged as durable but missing from durable()"
        );
    }
    assert!(e.metrics().fsyncs >= 1);
}

#[test]
fn merge_is_idempotent_and_reports_changes() {
    let da = tempfile::tempdir().unwrap();
    let db = tempfile::tempdir().unwrap();
    let a = open(da.path());
    let b = open(db.path());
    let c = counter_key("c");
    let r = register_key("r");
    let inc = apply(&a, &c, Op::Incr(3)).record;
    let end = b.log_end();
    match b.merge(&inc, now()).unwrap() {
        Merged::Applied { changed, lsn } => {
            assert!(changed);
            assert!(lsn > end);
            b.wait_durable(lsn).unwrap();
        }
        other => panic!("{other:?}"),
    }
    let end = b.log_end();
    assert_eq!(b.merge(&inc, now()).unwrap(), Merged::Duplicate);
    assert_eq!(b.log_end(), end, "a duplicate is not logged");
    assert_eq!(counter(&b, &c), 3);
    assert!(b.applied().contains(inc.dot));

    // An older register write arriving after a newer one changes nothing.
    let w1 = apply(&a, &r, Op::Put(b"old".to_vec())).record;
    let w2 = apply(&a, &r, Op::Put(b"new".to_vec())).record;
    assert!(matches!(
        b.merge(&w2, now()).unwrap(),
        Merged::Applied { changed: true, .. }
    ));
    assert!(matches!(
        b.merge(&w1, now()).unwrap(),
        Merged::Applied { changed: false, .. }
    ));
    assert_eq!(register(&b, &r).as_deref(), Some(&b"new"[..]));
    assert_eq!(b.merge(&w1, now()).unwrap(), Merged::Duplicate);
    let m = b.metrics();
    assert_eq!((m.merges, m.duplicates), (3, 2));
    // Duplicates stay duplicates after a restart.
    b.close().unwrap();
    drop(b);
    let b = open(db.path());
    for rec in [&inc, &w1, &w2] {
        assert_eq!(b.merge(rec, now()).unwrap(), Merged::Duplicate);
    }
}

#[test]
fn deltas_in_any_order_with_duplicates_converge() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = open(dirs[0].path());
    let b = open(dirs[1].path());
    let c = open(dirs[2].path());
    let mut records = Vec::new();
    for (k, op) in mixed_ops(120, 42) {
        records.push(apply(&a, &k, op).record);
    }
    // b: newest first.
    for r in records.iter().rev() {
        b.merge(r, now()).unwrap();
    }
    // c: interleaved halves, every record twice.
    let (x, y) = records.split_at(records.len() / 2);
    for (r1, r2) in y.iter().rev().zip(x.iter()) {
        c.merge(r1, now()).unwrap();
        c.merge(r2, now()).unwrap();
        c.merge(r1, now()).unwrap();
    }
    for r in &records {
        c.merge(r, now()).unwrap();
    }
    let keys = mixed_keys();
    let expected = snapshot(&a, &keys);
    assert_eq!(snapshot(&b, &keys), expected);
    assert_eq!(snapshot(&c, &keys), expected);
    for k in &keys {
        let sa = a.state(k).unwrap();
        assert_eq!(b.state(k).unwrap(), sa, "{k:?}");
        assert_eq!(c.state(k).unwrap(), sa, "{k:?}");
    }
    assert_eq!(b.applied().vector(), a.applied().vector());
    assert_eq!(c.applied().vector(), a.applied().vector());
    assert_eq!(
        c.metrics().duplicates as usize,
        records.len() / 2 + records.len()
    );
}

#[test]
fn far_future_deltas_are_refused_until_local_time_catches_up() {
    let da = tempfile::tempdir().unwrap();
    let db = tempfile::tempdir().unwrap();
    let a = open(da.path());
    let b = open(db.path());
    let k = register_key("k");
    let t0 = PhysicalTime::from_unix_ms(1_800_000_000_000);
    // a's clock is 2 s ahead of b's.
    let ahead = PhysicalTime::from_unix_ms(1_800_000_002_000);
    let rec = a
        .apply(&k, Op::Put(b"future".to_vec()), ahead)
        .unwrap()
        .record;
    let end = b.log_end();
    match b.merge(&rec, t0) {
        Err(Error::ClockAhead { ahead_ms, max_ms }) => {
            assert_eq!(max_ms, 500);
            assert!((1999..=2001).contains(&ahead_ms), "{ahead_ms}");
        }
        other => panic!("expected ClockAhead, got {other:?}"),
    }
    assert_eq!(b.log_end(), end, "nothing logged");
    assert_eq!(register(&b, &k), None, "nothing applied");
    assert!(!b.applied().contains(rec.dot));
    assert_eq!(b.metrics().clock_refusals, 1);
    // b's own writes are not dragged forward.
    let own = b.apply(&k, Op::Put(b"local".to_vec()), t0).unwrap();
    assert!(own.record.hlc < rec.hlc);
    // Full-state joins of registers are held to the same rule.
    let state = ObjectState::Register(meridian_engine::crdt::Register::write(
        rec.hlc,
        Some(b"future".to_vec()),
    ));
    assert!(matches!(
        b.merge_state(&k, &state, t0),
        Err(Error::ClockAhead { .. })
    ));
    // Later (within the 500 ms allowance) the same delta is accepted.
    let later = PhysicalTime::from_unix_ms(1_800_000_001_700);
    assert!(matches!(
        b.merge(&rec, later).unwrap(),
        Merged::Applied { changed: true, .. }
    ));
    assert_eq!(register(&b, &k).as_deref(), Some(&b"future"[..]));
    // And b's next write is ordered after it.
    let next = b.apply(&k, Op::Put(b"after".to_vec()), t0).unwrap();
    assert!(next.record.hlc > rec.hlc);
    assert_eq!(register(&b, &k).as_deref(), Some(&b"after"[..]));
}

#[test]
fn engines_converge_through_a_bridge_and_respect_placement() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let open_placed = |d: &Path| open_with(d, |c| c.group_of = eu_placement());
    let a = open_placed(dirs[0].path());
    let b = open_placed(dirs[1].path());
    let c = open_placed(dirs[2].path());
    // c replicates group 0 only; a and b replicate everything.
    let c_wants = |g: GroupId| g == GroupId(0);

    let eu = counter_key("eu/visits");
    let us = counter_key("us/visits");
    let tags = set_key("tags");
    let eu_rec = apply(&a, &eu, Op::Incr(7)).record;
    assert_eq!(eu_rec.dot.stream, a.stream(GroupId(1)));
    assert_ne!(a.stream(GroupId(1)), StreamId::from(a.incarnation()));
    assert_eq!(a.group_of(&eu), GroupId(1));
    apply(&a, &us, Op::Incr(1));
    apply(&a, &tags, Op::Add(members(&["from-a"])));
    apply(&c, &us, Op::Incr(10));
    apply(&c, &tags, Op::Add(members(&["from-c"])));
    apply(&b, &tags, Op::Add(members(&["from-b"])));

    // a and c never talk: b relays. Two rounds are enough for everything.
    for _ in 0..2 {
        pull(&b, &a, &all_groups);
        pull(&b, &c, &c_wants);
        pull(&c, &b, &c_wants);
        pull(&a, &b, &all_groups);
    }
    for e in [&a, &b, &c] {
        assert_eq!(counter(e, &us), 11);
        assert_eq!(set(e, &tags), members(&["from-a", "from-b", "from-c"]));
    }
    assert_eq!(counter(&a, &eu), 7);
    assert_eq!(counter(&b, &eu), 7);
    assert_eq!(counter(&c, &eu), 0, "c does not replicate group 1");
    assert!(!c.applied().contains(eu_rec.dot));
    assert_eq!(b.stream_group(a.stream(GroupId(1))), Some(GroupId(1)));
    let since = b
        .deltas_since(&CausalContext::new(), &c_wants, 1000, usize::MAX)
        .unwrap()
        .unwrap();
    assert!(!since.records.is_empty());
    assert!(since.records.iter().all(|r| r.key != eu));
    let since = b
        .deltas_since(&c.applied(), &all_groups, 1000, usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(
        since.records.iter().map(|r| r.dot).collect::<Vec<_>>(),
        vec![eu_rec.dot],
        "all c lacks is the group-1 delta"
    );
    // Nothing more to exchange.
    assert_eq!(pull(&a, &b, &all_groups) + pull(&c, &b, &c_wants), 0);
    assert_eq!(a.applied().vector(), b.applied().vector());
}

#[test]
fn truncation_forces_a_full_sync_that_brings_the_peer_level() {
    let da = tempfile::tempdir().unwrap();
    let db = tempfile::tempdir().unwrap();
    let a = open_with(da.path(), |c| c.segment_bytes = 512);
    let b = open(db.path());
    let keys: Vec<ObjectKey> = mixed_keys();
    for (k, op) in mixed_ops(40, 1) {
        apply(&a, &k, op);
    }
    pull(&b, &a, &all_groups);
    assert_eq!(snapshot(&b, &keys), snapshot(&a, &keys));
    // b falls behind.
    for (k, op) in mixed_ops(60, 2) {
        apply(&a, &k, op);
    }
    let segs_before = segments(da.path()).len();
    assert!(segs_before > 4, "{segs_before} segments");
    let retained_before = a.metrics().log_retained_bytes;

    // Every replica but b has everything; the caller has given up on b.
    let everything = a.applied().vector().clone();
    let reclaimed = a.truncate(&|_| everything.clone()).unwrap();
    assert!(reclaimed > 0);
    let segs_after = segments(da.path()).len();
    assert!(segs_after < segs_before, "{segs_after} >= {segs_before}");
    assert!(a.log_start() > 0);
    let m = a.metrics();
    assert!(m.log_retained_bytes < retained_before);
    assert_eq!(m.log_retained_bytes + reclaimed, retained_before);
    assert!(!a.truncated().is_empty());

    // b is behind the truncation: it needs a full sync.
    assert!(
        a.deltas_since(&b.applied(), &all_groups, 100, usize::MAX)
            .unwrap()
            .is_none()
    );
    let (vector, groups) = a
        .full_state(&all_groups, |k, s| {
            b.merge_state(&k, &s, now())?;
            Ok(true)
        })
        .unwrap();
    assert_eq!(&vector, a.applied().vector());
    assert!(groups.contains(&(StreamId::from(a.incarnation()), GroupId(0))));
    let lsn = b.join_vector(&vector, &groups).unwrap();
    b.wait_durable(lsn).unwrap();
    assert_eq!(snapshot(&b, &keys), snapshot(&a, &keys));
    for k in &keys {
        assert_eq!(b.state(k).unwrap(), a.state(k).unwrap());
    }
    // Level again: catch-up works and there is nothing to send.
    let since = a
        .deltas_since(&b.applied(), &all_groups, 100, usize::MAX)
        .unwrap()
        .expect("b is no longer behind the truncation");
    assert!(since.records.is_empty());
    for (k, op) in mixed_ops(10, 3) {
        apply(&a, &k, op);
    }
    assert_eq!(pull(&b, &a, &all_groups), 10);
    assert_eq!(snapshot(&b, &keys), snapshot(&a, &keys));

    // The truncation survives a restart of both.
    let expected = snapshot(&a, &keys);
    a.close().unwrap();
    b.close().unwrap();
    drop((a, b));
    let a = open_with(da.path(), |c| c.segment_bytes = 512);
    let b = open(db.path());
    assert_eq!(snapshot(&a, &keys), expected);
    assert_eq!(snapshot(&b, &keys), expected);
    assert!(
        a.deltas_since(&CausalContext::new(), &all_groups, 100, usize::MAX)
            .unwrap()
            .is_none()
    );
    assert!(
        a.deltas_since(&b.applied(), &all_groups, 100, usize::MAX)
            .unwrap()
            .is_some()
    );
}

#[test]
fn clean_close_keeps_the_incarnation_and_an_unclean_stop_changes_it() {
    let dir = tempfile::tempdir().unwrap();
    let k = counter_key("k");
    let e = open(dir.path());
    let first = e.incarnation();
    apply(&e, &k, Op::Incr(1));
    e.close().unwrap();
    assert!(matches!(
        e.apply(&k, Op::Incr(1), now()),
        Err(Error::Shutdown)
    ));
    drop(e);

    let e = open(dir.path());
    assert_eq!(
        e.incarnation(),
        first,
        "a clean close keeps the incarnation"
    );
    let a = apply(&e, &k, Op::Incr(1));
    assert_eq!(
        a.record.dot,
        Dot::new(first.into(), 2),
        "sequence numbers continue"
    );
    drop(e); // no close: unclean

    let e = open(dir.path());
    let third = e.incarnation();
    assert_ne!(third, first, "an unclean stop starts a new incarnation");
    assert_eq!(counter(&e, &k), 2);
    let a = apply(&e, &k, Op::Incr(1));
    assert_eq!(a.record.dot, Dot::new(third.into(), 1));
    assert!(e.applied().contains(Dot::new(first.into(), 2)));
    e.close().unwrap();
    drop(e);
    let e = open(dir.path());
    assert_eq!(e.incarnation(), third);
    assert_eq!(counter(&e, &k), 3);
}

#[test]
fn recovery_after_an_unclean_stop_preserves_everything() {
    let dir = tempfile::tempdir().unwrap();
    let peer_dir = tempfile::tempdir().unwrap();
    let keys = mixed_keys();
    let cfg = |c: &mut meridian_engine::EngineConfig| c.segment_bytes = 1024;
    let (expected, applied, dots, states) = {
        let e = open_with(dir.path(), cfg);
        let peer = open(peer_dir.path());
        for (k, op) in mixed_ops(50, 7) {
            apply(&peer, &k, op);
        }
        for (k, op) in mixed_ops(60, 8) {
            apply(&e, &k, op);
        }
        pull(&e, &peer, &all_groups);
        e.checkpoint().unwrap();
        for (k, op) in mixed_ops(60, 9) {
            apply(&e, &k, op);
        }
        let since = e
            .deltas_since(&CausalContext::new(), &all_groups, 10_000, usize::MAX)
            .unwrap()
            .unwrap();
        let dots: BTreeSet<Dot> = since.records.iter().map(|r| r.dot).collect();
        let states: Vec<_> = keys.iter().map(|k| e.state(k).unwrap()).collect();
        (snapshot(&e, &keys), e.applied(), dots, states)
        // dropped without close
    };
    let e = open_with(dir.path(), cfg);
    assert!(!e.recovered_torn_tail());
    assert_eq!(snapshot(&e, &keys), expected);
    for (k, s) in keys.iter().zip(&states) {
        assert_eq!(&e.state(k).unwrap(), s, "{k:?}");
    }
    assert_eq!(e.applied(), applied);
    let since = e
        .deltas_since(&CausalContext::new(), &all_groups, 10_000, usize::MAX)
        .unwrap()
        .unwrap();
    let after: BTreeSet<Dot> = since.records.iter().map(|r| r.dot).collect();
    assert_eq!(after, dots, "the log serves the same deltas");
    // Writes go on under the new incarnation.
    let a = apply(&e, &keys[0], Op::Incr(1));
    assert_eq!(a.record.dot, Dot::new(StreamId::from(e.incarnation()), 1));
}

/// Simulates a power failure that kept the object store's copy of some
/// writes but lost their log records: the effect must survive and be
/// re-issued as new deltas under the new incarnation's stream, so replicas
/// converge on it.
#[test]
fn effects_whose_log_records_were_lost_are_reissued() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |c: &mut meridian_engine::EngineConfig| {
        c.durability = Durability::Periodic(Duration::from_secs(3600));
    };
    let c = counter_key("c");
    let s = set_key("s");
    let r = register_key("r");
    let (old_node, tail_bytes) = {
        let e = open_with(dir.path(), cfg);
        e.apply(&c, Op::Incr(1), now()).unwrap();
        e.apply(&s, Op::Add(members(&["kept"])), now()).unwrap();
        e.apply(&r, Op::Put(b"kept".to_vec()), now()).unwrap();
        let before = e.log_end();
        e.apply(&c, Op::Incr(5), now()).unwrap();
        e.apply(&s, Op::Add(members(&["lost-record"])), now())
            .unwrap();
        e.apply(&r, Op::Put(b"lost-record".to_vec()), now())
            .unwrap();
        (e.incarnation(), e.log_end() - before)
        // dropped without close or checkpoint
    };
    // The last three log records vanish (they were never synced).
    let seg = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - tail_bytes)
        .unwrap();

    let e = open_with(dir.path(), cfg);
    assert_ne!(e.incarnation(), old_node);
    assert!(
        !e.recovered_torn_tail(),
        "cut at a frame boundary: not torn"
    );
    assert_eq!(counter(&e, &c), 6);
    assert_eq!(set(&e, &s), members(&["kept", "lost-record"]));
    assert_eq!(register(&e, &r).as_deref(), Some(&b"lost-record"[..]));

    let since = e
        .deltas_since(&CausalContext::new(), &all_groups, 1000, usize::MAX)
        .unwrap()
        .unwrap();
    let stream = e.stream(GroupId(0));
    assert_eq!(stream, StreamId::from(e.incarnation()));
    let reissued: BTreeMap<ObjectKey, &Record> = since
        .records
        .iter()
        .filter(|r| r.dot.stream == stream)
        .map(|r| (r.key.clone(), r))
        .collect();
    assert_eq!(
        reissued.keys().cloned().collect::<BTreeSet<_>>(),
        [c.clone(), s.clone(), r.clone()].into_iter().collect(),
        "exactly the objects with lost records are re-issued"
    );
    // A replica that only ever sees the log converges on the effects.
    let peer_dir = tempfile::tempdir().unwrap();
    let peer = open(peer_dir.path());
    pull(&peer, &e, &all_groups);
    assert_eq!(counter(&peer, &c), 6);
    assert_eq!(set(&peer, &s), members(&["kept", "lost-record"]));
    assert_eq!(register(&peer, &r).as_deref(), Some(&b"lost-record"[..]));
    for k in [&c, &s, &r] {
        assert_eq!(peer.state(k).unwrap(), e.state(k).unwrap());
    }

    // Another unclean restart re-issues nothing new and loses nothing.
    let applied = e.applied();
    drop(e);
    let e = open_with(dir.path(), cfg);
    assert_eq!(counter(&e, &c), 6);
    assert_eq!(set(&e, &s), members(&["kept", "lost-record"]));
    assert_eq!(register(&e, &r).as_deref(), Some(&b"lost-record"[..]));
    assert!(e.applied().vector().dominates(applied.vector()));
    let since = e
        .deltas_since(&applied, &all_groups, 1000, usize::MAX)
        .unwrap()
        .unwrap();
    assert!(
        since.records.is_empty(),
        "nothing was lost this time, nothing to re-issue: {:?}",
        since.records.iter().map(|r| &r.key).collect::<Vec<_>>()
    );
}

#[test]
fn limits_are_refused_without_effect() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    assert!(matches!(
        ObjectKey::new(Kind::Register, vec![b'k'; MAX_KEY_BYTES + 1]),
        Err(Error::InvalidArgument(_))
    ));
    let long_key = ObjectKey::new(Kind::Register, vec![b'k'; MAX_KEY_BYTES]).unwrap();
    apply(&e, &long_key, Op::Put(b"ok".to_vec()));

    let r = register_key("r");
    apply(&e, &r, Op::Put(vec![1; MAX_VALUE_BYTES]));
    let end = e.log_end();
    let before = e.read(&r).unwrap();
    assert!(matches!(
        e.apply(&r, Op::Put(vec![2; MAX_VALUE_BYTES + 1]), now()),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(e.read(&r).unwrap(), before);
    assert_eq!(e.log_end(), end);

    let s = set_key("s");
    apply(&e, &s, Op::Add(members(&["a"])));
    let end = e.log_end();
    let many: Vec<Vec<u8>> = (0..=MAX_MEMBERS_PER_OP)
        .map(|i| i.to_string().into_bytes())
        .collect();
    assert!(matches!(
        e.apply(&s, Op::Add(many.clone()), now()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        e.apply(&s, Op::Remove(many), now()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        e.apply(&s, Op::Add(vec![vec![0; MAX_VALUE_BYTES + 1]]), now()),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(set(&e, &s), members(&["a"]));
    assert_eq!(e.log_end(), end);

    // A set may not grow past 16 MiB: 15 members of 1 MiB fit, 17 don't.
    let big = set_key("big");
    let member = |i: u8| {
        let mut m = vec![i; MAX_VALUE_BYTES];
        m[0] = i;
        m
    };
    for chunk in [0u8..5, 5..10, 10..15] {
        apply(&e, &big, Op::Add(chunk.map(member).collect()));
    }
    let end = e.log_end();
    match e.apply(&big, Op::Add(vec![member(15), member(16)]), now()) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("object limit"), "{msg}"),
        other => panic!("expected InvalidArgument, got {:?}", other.map(|a| a.lsn)),
    }
    assert_eq!(e.log_end(), end);
    assert_eq!(set(&e, &big).len(), 15);
    // Re-adding present members doesn't grow it and is fine.
    apply(&e, &big, Op::Add(vec![member(0)]));
    assert_eq!(set(&e, &big).len(), 15);

    let c = counter_key("c");
    apply(&e, &c, Op::Incr(i64::MAX));
    let end = e.log_end();
    assert!(matches!(
        e.apply(&c, Op::Incr(1), now()),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(counter(&e, &c), i64::MAX);
    assert_eq!(e.log_end(), end);

    // Nothing refused reached the log: a restart shows the same.
    drop(e);
    let e = open(dir.path());
    assert_eq!(set(&e, &big).len(), 15);
    assert_eq!(counter(&e, &c), i64::MAX);
    assert_eq!(register(&e, &r).map(|v| v.len()), Some(MAX_VALUE_BYTES));
}

#[test]
fn operations_and_deltas_of_the_wrong_type_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let c = counter_key("k");
    let s = set_key("k");
    let r = register_key("k");
    apply(&e, &c, Op::Incr(1));
    let end = e.log_end();
    for (k, op) in [
        (&c, Op::Put(b"x".to_vec())),
        (&c, Op::Add(members(&["x"]))),
        (&s, Op::Incr(1)),
        (&s, Op::Put(b"x".to_vec())),
        (&r, Op::Remove(members(&["x"]))),
        (&r, Op::Incr(1)),
    ] {
        assert!(
            matches!(e.apply(k, op.clone(), now()), Err(Error::WrongType(_))),
            "{op:?} on {k:?}"
        );
    }
    assert_eq!(e.log_end(), end);
    assert_eq!(counter(&e, &c), 1);

    let mut set_state = OrSet::new();
    let delta = set_state.add(meridian_engine::Incarnation(9), &members(&["x"]));
    let bad = Record {
        dot: Dot::new(meridian_engine::StreamId(9), 1),
        hlc: Hlc::default(),
        key: c.clone(),
        delta: Delta::Set(delta),
    };
    assert!(matches!(e.merge(&bad, now()), Err(Error::WrongType(_))));
    assert!(matches!(
        e.merge_state(&c, &ObjectState::Set(set_state), now()),
        Err(Error::WrongType(_))
    ));
    assert!(matches!(
        e.merge_state(&s, &ObjectState::Counter(Counter::new()), now()),
        Err(Error::WrongType(_))
    ));
    assert_eq!(e.log_end(), end);
    assert!(!e.applied().contains(bad.dot));
    assert_eq!(counter(&e, &c), 1);
}

#[test]
fn a_second_open_of_the_same_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let k = counter_key("k");
    apply(&e, &k, Op::Incr(1));
    match Engine::open(config(dir.path()), now()) {
        Err(Error::Io { source, .. }) => {
            assert!(source.to_string().contains("in use"), "{source}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // The first engine is unaffected.
    apply(&e, &k, Op::Incr(1));
    assert_eq!(counter(&e, &k), 2);
    let node = e.incarnation();
    e.close().unwrap();
    drop(e);
    let e = open(dir.path());
    assert_eq!(
        e.incarnation(),
        node,
        "the failed open did not disturb the clean close"
    );
    assert_eq!(counter(&e, &k), 2);
}

#[test]
fn periodic_durability_acknowledges_at_once_and_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let e = open_with(dir.path(), |c| {
        c.durability = Durability::Periodic(Duration::from_millis(20))
    });
    let k = counter_key("k");
    let before = e.metrics().fsyncs;
    let mut dots = Vec::new();
    for _ in 0..10 {
        let a = e.apply(&k, Op::Incr(1), now()).unwrap();
        assert_eq!(a.value, Some(Value::Counter(dots.len() as i64 + 1)));
        dots.push(a.record.dot);
    }
    assert_eq!(counter(&e, &k), 10);
    // No waiting here; the background syncer gets to it by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let durable = e.durable();
        if e.metrics().fsyncs > before && dots.iter().all(|d| durable.contains(*d)) {
            break;
        }
        assert!(Instant::now() < deadline, "the periodic sync never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn periodic_durability_does_not_fsync_per_write() {
    let dir = tempfile::tempdir().unwrap();
    let e = open_with(dir.path(), |c| {
        c.durability = Durability::Periodic(Duration::from_secs(3600))
    });
    let k = counter_key("k");
    let mut last = None;
    for _ in 0..200 {
        last = Some(e.apply(&k, Op::Incr(1), now()).unwrap());
    }
    // Give a misbehaving syncer every chance to run.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        e.metrics().fsyncs,
        0,
        "nobody asked and the interval has not passed: no fsync yet"
    );
    assert!(!e.durable().contains(last.as_ref().unwrap().record.dot));
    // Asking is what makes it durable now.
    let last = last.unwrap();
    e.wait_durable(last.lsn).unwrap();
    assert!(e.metrics().fsyncs >= 1);
    assert!(e.durable().contains(last.record.dot));
    assert_eq!(counter(&e, &k), 200);
}

/// Checkpoints taken while writers are busy must never record a position
/// past a write whose dot the checkpointed applied set lacks, nor past a
/// write whose effect is not yet in the object store.
#[test]
fn checkpoints_racing_writes_lose_nothing_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |c: &mut meridian_engine::EngineConfig| {
        c.durability = Durability::Periodic(Duration::from_millis(2));
    };
    let mut all_dots: Vec<Dot> = Vec::new();
    let mut totals = [0i64; 3];
    for round in 0..6 {
        let e = open_with(dir.path(), cfg);
        let stop = Arc::new(AtomicBool::new(false));
        let checkpointer = {
            let e = e.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) && n < 10_000 {
                    e.checkpoint().unwrap();
                    n += 1;
                }
            })
        };
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let e = e.clone();
                std::thread::spawn(move || {
                    let k = counter_key(&format!("w{w}"));
                    let s = set_key(&format!("w{w}"));
                    let mut dots = Vec::new();
                    for i in 0..150 {
                        dots.push(e.apply(&k, Op::Incr(1), now()).unwrap().record.dot);
                        let m = format!("r{round}i{i}").into_bytes();
                        dots.push(e.apply(&s, Op::Add(vec![m]), now()).unwrap().record.dot);
                    }
                    dots
                })
            })
            .collect();
        for (w, h) in writers.into_iter().enumerate() {
            all_dots.extend(h.join().unwrap());
            totals[w] += 150;
        }
        // The checkpointer stops without a final, quiet checkpoint.
        stop.store(true, Ordering::SeqCst);
        checkpointer.join().unwrap();
        drop(e); // unclean

        let e = open_with(dir.path(), cfg);
        let applied = e.applied();
        let missing: Vec<&Dot> = all_dots.iter().filter(|d| !applied.contains(**d)).collect();
        assert!(
            missing.is_empty(),
            "round {round}: recovered applied set lacks {} acknowledged dots, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        for (w, total) in totals.iter().enumerate() {
            assert_eq!(counter(&e, &counter_key(&format!("w{w}"))), *total);
            assert_eq!(set(&e, &set_key(&format!("w{w}"))).len() as i64, *total);
        }
        drop(e);
    }
}

#[test]
fn versions_vectors_from_full_state_only_name_wanted_groups() {
    let da = tempfile::tempdir().unwrap();
    let db = tempfile::tempdir().unwrap();
    let a = open_with(da.path(), |c| c.group_of = eu_placement());
    let b = open_with(db.path(), |c| c.group_of = eu_placement());
    apply(&a, &counter_key("eu/x"), Op::Incr(2));
    apply(&a, &counter_key("us/x"), Op::Incr(3));
    let only0 = |g: GroupId| g == GroupId(0);
    let mut seen = Vec::new();
    let (vector, groups) = a
        .full_state(&only0, |k, s| {
            seen.push(k.clone());
            b.merge_state(&k, &s, now())?;
            Ok(true)
        })
        .unwrap();
    assert_eq!(seen, vec![counter_key("us/x")]);
    let expected: VersionVector = [(StreamId::from(a.incarnation()), 1)].into_iter().collect();
    assert_eq!(vector, expected);
    assert_eq!(groups, vec![(StreamId::from(a.incarnation()), GroupId(0))]);
    b.wait_durable(b.join_vector(&vector, &groups).unwrap())
        .unwrap();
    assert_eq!(counter(&b, &counter_key("us/x")), 3);
    assert_eq!(counter(&b, &counter_key("eu/x")), 0);
    assert_eq!(b.metrics().state_merges, 1);
    // Joining the same state again changes nothing and logs nothing.
    let end = b.log_end();
    let st = a.state(&counter_key("us/x")).unwrap().unwrap();
    assert_eq!(
        b.merge_state(&counter_key("us/x"), &st, now()).unwrap(),
        None
    );
    assert_eq!(b.log_end(), end);
}

/// A restarted engine's clock resumes past everything it issued or
/// accepted before, even a remote timestamp that was ahead of its wall
/// clock: a write after a restart must never lose to one before it.
#[test]
fn the_clock_resumes_past_its_history_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let remote_dir = tempfile::tempdir().unwrap();
    let k = register_key("r");
    let wall = now();
    // A peer 400 ms ahead (within the 500 ms limit) writes; we accept it.
    let ahead = PhysicalTime::from_unix_ms(wall.unix_ms() + 400);
    let remote = open(remote_dir.path());
    let theirs = remote
        .apply(&k, Op::Put(b"theirs".to_vec()), ahead)
        .unwrap();
    for clean in [true, false] {
        let e = open(dir.path());
        e.merge(&theirs.record, wall).unwrap();
        e.wait_durable(e.log_end()).unwrap();
        if clean {
            e.close().unwrap();
        }
        drop(e);
        // Reopen and write at once, with the wall clock still behind the
        // accepted timestamp: the new write must win.
        let e = open(dir.path());
        let ours = e.apply(&k, Op::Put(b"ours".to_vec()), wall).unwrap();
        assert!(ours.record.hlc > theirs.record.hlc, "clean={clean}");
        assert_eq!(register(&e, &k).as_deref(), Some(&b"ours"[..]));
        e.close().unwrap();
    }
}
