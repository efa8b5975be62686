//! Maps (Redis hashes) in the engine: decomposed storage, local
//! operations and their limits, replication by deltas and full states,
//! recovery, and data written before maps existed.

mod common;

use common::*;
use meridian_engine::crdt::map::{MAX_FIELD_BYTES, MAX_FIELD_VALUE_BYTES};
use meridian_engine::crdt::{Delta, ObjectState};
use meridian_engine::{Error, Kind, Merged, ObjectKey, Op, Value};

fn map_key(name: &str) -> ObjectKey {
    key(Kind::Map, name)
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    list.iter().map(|(f, v)| (b(f), b(v))).collect()
}

fn fields(v: Value) -> Vec<(String, String)> {
    match v {
        Value::Map { fields, count } => {
            assert_eq!(fields.len() as u64, count, "a read lists every field");
            fields
                .into_iter()
                .map(|(f, v)| (String::from_utf8(f).unwrap(), String::from_utf8(v).unwrap()))
                .collect()
        }
        other => panic!("not a map: {other:?}"),
    }
}

fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect()
}

#[test]
fn operations_reads_and_inspection() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let k = map_key("h");
    let w = e
        .apply(
            &k,
            Op::HSet(pairs(&[("a", "1"), ("b", "x"), ("a", "2")])),
            now(),
        )
        .unwrap();
    assert_eq!(
        w.value,
        Some(Value::Map {
            fields: vec![(b("a"), b("2")), (b("b"), b("x"))],
            count: 2
        })
    );
    // A write answers with the fields it touched and the map's count.
    let w = e.apply(&k, Op::HIncr(b("a"), 5), now()).unwrap();
    assert_eq!(
        w.value,
        Some(Value::Map {
            fields: vec![(b("a"), b("7"))],
            count: 2
        })
    );
    assert!(matches!(
        e.apply(&k, Op::HIncr(b("b"), 1), now()),
        Err(Error::InvalidArgument(m)) if m.contains("not an integer")
    ));
    e.apply(&k, Op::HDel(vec![b("b"), b("missing")]), now())
        .unwrap();
    assert_eq!(fields(e.read(&k).unwrap()), owned(&[("a", "7")]));
    let i = e.inspect_fields(b"h", &[], &[b("a"), b("b")]).unwrap();
    assert_eq!(i.map_count, 1);
    assert_eq!(i.map_values, vec![Some(b("7")), None]);
    // The other kinds under the same key are untouched.
    assert_eq!(i.set_count, 0);
    assert_eq!(i.register, None);
    e.apply(&k, Op::Delete, now()).unwrap();
    assert_eq!(fields(e.read(&k).unwrap()), vec![]);
    assert_eq!(e.inspect(b"h", &[]).unwrap().map_count, 0);
}

#[test]
fn oversized_fields_and_wrong_ops_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let k = map_key("h");
    e.apply(&k, Op::HSet(pairs(&[("a", "1")])), now()).unwrap();
    let big_field = vec![b'f'; MAX_FIELD_BYTES + 1];
    let big_value = vec![b'v'; MAX_FIELD_VALUE_BYTES + 1];
    for op in [
        Op::HSet(vec![(big_field.clone(), b("v"))]),
        Op::HSet(vec![(b("g"), big_value)]),
        Op::HIncr(big_field.clone(), 1),
        Op::HDel(vec![big_field]),
        Op::HIncr(b("a"), i64::MAX),
    ] {
        assert!(
            matches!(
                e.apply(&k, op.clone(), now()),
                Err(Error::InvalidArgument(_))
            ),
            "{op:?}"
        );
    }
    assert!(matches!(
        e.apply(&k, Op::Add(vec![b("m")]), now()),
        Err(Error::WrongType(_))
    ));
    assert!(matches!(
        e.apply(&map_key("x"), Op::Put(b("v")), now()),
        Err(Error::WrongType(_))
    ));
    assert_eq!(fields(e.read(&k).unwrap()), owned(&[("a", "1")]));
}

#[test]
fn the_map_size_limit_holds_for_local_writes() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let k = map_key("big");
    // 15 fields of 1 MiB fit the 16 MiB bound; the 17th would not.
    let value = vec![b'v'; MAX_FIELD_VALUE_BYTES];
    for i in 0..15 {
        e.apply(
            &k,
            Op::HSet(vec![(format!("f{i}").into_bytes(), value.clone())]),
            now(),
        )
        .unwrap();
    }
    let refused = e.apply(
        &k,
        Op::HSet(vec![(b("g1"), value.clone()), (b("g2"), value.clone())]),
        now(),
    );
    assert!(
        matches!(&refused, Err(Error::InvalidArgument(m)) if m.contains("byte limit")),
        "{refused:?}"
    );
    assert_eq!(e.inspect(b"big", &[]).unwrap().map_count, 15);
    // Overwriting a field in place does not grow the map: allowed.
    e.apply(&k, Op::HSet(vec![(b("f0"), b("small"))]), now())
        .unwrap();
}

/// Concurrent writes of one field on two replicas: both keep both entries
/// and read the same winner; concurrent increments add up; a remove
/// concurrent with a set loses.
#[test]
fn replicas_converge_through_deltas() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, bb) = (open(da.path()), open(db.path()));
    let k = map_key("h");
    let base = a
        .apply(&k, Op::HSet(pairs(&[("f", "0"), ("gone", "x")])), now())
        .unwrap();
    bb.merge(&base.record, now()).unwrap();
    let ra = vec![
        a.apply(&k, Op::HSet(pairs(&[("f", "from-a")])), now())
            .unwrap(),
        a.apply(&k, Op::HIncr(b("n"), 2), now()).unwrap(),
        a.apply(&k, Op::HDel(vec![b("gone")]), now()).unwrap(),
    ];
    let rb = vec![
        bb.apply(&k, Op::HSet(pairs(&[("f", "from-b")])), now())
            .unwrap(),
        bb.apply(&k, Op::HIncr(b("n"), 3), now()).unwrap(),
        bb.apply(&k, Op::HSet(pairs(&[("gone", "back")])), now())
            .unwrap(),
    ];
    for r in &rb {
        assert!(matches!(
            a.merge(&r.record, now()).unwrap(),
            Merged::Applied { .. }
        ));
    }
    for r in &ra {
        bb.merge(&r.record, now()).unwrap();
    }
    let (va, vb) = (fields(a.read(&k).unwrap()), fields(bb.read(&k).unwrap()));
    assert_eq!(va, vb);
    // The later HLC of the two concurrent writes of `f` wins.
    let (ha, hb) = (ra[0].record.hlc, rb[0].record.hlc);
    let winner = if (ha.time, ha.node) > (hb.time, hb.node) {
        "from-a"
    } else {
        "from-b"
    };
    assert_eq!(va, owned(&[("f", winner), ("gone", "back"), ("n", "5")]));
    // Duplicates change nothing.
    assert_eq!(a.merge(&rb[0].record, now()).unwrap(), Merged::Duplicate);
}

#[test]
fn full_states_join_and_survive_reopen() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let k = map_key("h");
    {
        let a = open(da.path());
        a.apply(&k, Op::HSet(pairs(&[("x", "1"), ("y", "2")])), now())
            .unwrap();
        a.apply(&k, Op::HIncr(b("z"), -4), now()).unwrap();
        a.apply(&k, Op::HDel(vec![b("y")]), now()).unwrap();
        a.close().unwrap();
    }
    let a = open(da.path());
    let want = owned(&[("x", "1"), ("z", "-4")]);
    assert_eq!(fields(a.read(&k).unwrap()), want, "after reopen");
    let bb = open(db.path());
    bb.apply(&k, Op::HSet(pairs(&[("w", "b")])), now()).unwrap();
    let mut seen = 0;
    a.full_state(&|_| true, |key, state| {
        assert_eq!(key, k);
        assert!(matches!(state, ObjectState::Map(_)));
        bb.merge_state(&key, &state, now()).unwrap();
        seen += 1;
        Ok(true)
    })
    .unwrap();
    assert_eq!(seen, 1);
    assert_eq!(
        fields(bb.read(&k).unwrap()),
        owned(&[("w", "b"), ("x", "1"), ("z", "-4")])
    );
    // The full state from b joined back cancels nothing a has.
    let state = bb.state(&k).unwrap().unwrap();
    a.merge_state(&k, &state, now()).unwrap();
    assert_eq!(fields(a.read(&k).unwrap()), fields(bb.read(&k).unwrap()));
    // A delete observed on b, joined as a full state into a, removes what
    // it observed.
    let del = bb.apply(&k, Op::Delete, now()).unwrap();
    assert!(matches!(del.record.delta, Delta::Map(_)));
    a.merge(&del.record, now()).unwrap();
    assert_eq!(fields(a.read(&k).unwrap()), vec![]);
}

/// Appending `Kind::Map` and the map variants must not change how the
/// enums that existed before are archived: old logs and stores decode only
/// if the archived `Delta` and `ObjectState` keep their size.
#[test]
fn map_variants_do_not_grow_the_archived_enums() {
    use meridian_engine::crdt::map::{ArchivedMapDelta, ArchivedOrMap};
    use meridian_engine::crdt::set::{ArchivedOrSet, ArchivedSetDelta};
    use meridian_engine::crdt::{Counter, Register};
    use std::mem::size_of;
    type A<T> = <T as rkyv::Archive>::Archived;
    let old_delta = size_of::<ArchivedSetDelta>()
        .max(size_of::<A<Counter>>())
        .max(size_of::<A<Register>>());
    assert!(size_of::<ArchivedMapDelta>() <= old_delta);
    let old_state = size_of::<ArchivedOrSet>()
        .max(size_of::<A<Counter>>())
        .max(size_of::<A<Register>>());
    assert!(size_of::<ArchivedOrMap>() <= old_state);
}

/// The value of `field` in a map state (0 when absent or no state).
fn field_value(state: Option<&ObjectState>, field: &str) -> i64 {
    let Some(s) = state else { return 0 };
    let Value::Map { fields, .. } = s.value() else {
        panic!("not a map")
    };
    fields
        .into_iter()
        .find(|(f, _)| f == field.as_bytes())
        .map_or(0, |(_, v)| String::from_utf8(v).unwrap().parse().unwrap())
}

/// Regression (jepsen map workload, seed 304, a transient double count):
/// a replica that receives a writer's third `HINCRBY` of a field before
/// its first must not count the first on top of the third. The third's
/// delta only cancels the second (the writer's entry when it was made), so
/// the first's dot is not in its context; the first is still older and
/// contained in the third's total.
#[test]
fn an_old_increment_delivered_late_is_not_counted_twice() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, bb) = (open(da.path()), open(db.path()));
    let k = map_key("h");
    let incrs: Vec<_> = [1, 2, 4]
        .into_iter()
        .map(|by| a.apply(&k, Op::HIncr(b("c"), by), now()).unwrap())
        .collect();
    bb.merge(&incrs[2].record, now()).unwrap();
    assert_eq!(fields(bb.read(&k).unwrap()), owned(&[("c", "7")]));
    bb.merge(&incrs[0].record, now()).unwrap();
    assert_eq!(fields(bb.read(&k).unwrap()), owned(&[("c", "7")]));
    // A quorum read joining a state that holds only the first increment
    // with one that holds only the third counts the writer once.
    let (dc, dd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (c, d) = (open(dc.path()), open(dd.path()));
    c.merge(&incrs[0].record, now()).unwrap();
    d.merge(&incrs[2].record, now()).unwrap();
    let mut joined = c.state(&k).unwrap().unwrap();
    joined.join(&d.state(&k).unwrap().unwrap()).unwrap();
    assert_eq!(field_value(Some(&joined), "c"), 7);
}

/// Increment chains through the engine and its store: a replica that got
/// a writer's third increment first, then deleted the field, keeps the
/// chain in the map's header across a reopen, so the late first increment
/// does not bring the field back; once the second arrives the chain is
/// covered and dropped, and the deleted counter field leaves one context
/// entry per writer and nothing else.
#[test]
fn a_late_increment_stays_deleted_across_a_reopen_and_leaves_nothing() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path());
    let k = map_key("h");
    let incrs: Vec<_> = [1, 2, 4]
        .into_iter()
        .map(|by| a.apply(&k, Op::HIncr(b("c"), by), now()).unwrap())
        .collect();
    let bb = open(db.path());
    bb.merge(&incrs[2].record, now()).unwrap();
    let del = bb.apply(&k, Op::HDel(vec![b("c")]), now()).unwrap();
    drop(bb);
    let bb = open(db.path());
    let Some(ObjectState::Map(m)) = bb.state(&k).unwrap() else {
        panic!("no map")
    };
    assert!(
        !m.chains().is_empty(),
        "the chain was not kept in the header"
    );
    bb.merge(&incrs[0].record, now()).unwrap();
    assert_eq!(fields(bb.read(&k).unwrap()), vec![]);
    bb.merge(&incrs[1].record, now()).unwrap();
    assert_eq!(fields(bb.read(&k).unwrap()), vec![]);
    let Some(ObjectState::Map(m)) = bb.state(&k).unwrap() else {
        panic!("no map")
    };
    assert!(m.chains().is_empty(), "{:?}", m.chains());
    // One entry: the only writer's (an `HDEL` makes no dot).
    assert_eq!(m.context().entries(), 1, "{:?}", m.context());
    // The writer converges to the same state.
    a.merge(&del.record, now()).unwrap();
    assert_eq!(a.state(&k).unwrap(), bb.state(&k).unwrap());
}

/// A tiny deterministic generator (xorshift64) for the seeded histories.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Seeds of [`quorum_reads_count_each_counter_writer_once`].
const HISTORY_SEEDS: u64 = 60;
/// Steps per history.
const HISTORY_STEPS: usize = 120;
const REPLICAS: usize = 3;
const COUNTERS: [&str; 2] = ["c0", "c1"];
const REGISTERS: [&str; 2] = ["s0", "s1"];

/// Random three-replica histories of one map: `HINCRBY` of two counter
/// fields (never set or removed) from every replica, `HSET`/`HDEL` of two
/// other fields, each delta delivered to each other replica at a random
/// moment, in any order, sometimes twice, and at random moments a quorum
/// read (two replicas' full states joined as the coordinator does, then
/// read repair of both) or a full-state sync. Invariant: a counter field
/// reads as the sum over writers of the latest total of that writer known
/// to the replica (or, for a join, to either replica): no writer counted
/// twice, none lost.
#[test]
fn quorum_reads_count_each_counter_writer_once() {
    for seed in 1..=HISTORY_SEEDS {
        counter_history(seed);
    }
}

fn counter_history(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let dirs: Vec<_> = (0..REPLICAS)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let engines: Vec<_> = dirs.iter().map(|d| open(d.path())).collect();
    let k = map_key("h");
    // Every delta made: (origin, record).
    let mut records: Vec<(usize, meridian_engine::Record)> = Vec::new();
    // totals[w][c]: the totals writer w's increments of counter c reached,
    // in order.
    let mut totals = vec![vec![Vec::<i64>::new(); COUNTERS.len()]; REPLICAS];
    // known[e][w][c]: how many of w's increments of c replica e knows of
    // (its latest one's position + 1).
    let mut known = vec![vec![vec![0usize; COUNTERS.len()]; REPLICAS]; REPLICAS];
    // incr_of[record index] = (writer, counter, position) for increments.
    let mut incr_of: Vec<Option<(usize, usize, usize)>> = Vec::new();
    let mut delivered = vec![std::collections::BTreeSet::<usize>::new(); REPLICAS];
    let expected = |known: &[Vec<usize>], totals: &[Vec<Vec<i64>>], c: usize| -> i64 {
        (0..REPLICAS)
            .map(|w| match known[w][c] {
                0 => 0,
                n => totals[w][c][n - 1],
            })
            .sum()
    };
    let learn = |known: &mut Vec<Vec<Vec<usize>>>, e: usize, i: Option<(usize, usize, usize)>| {
        if let Some((w, c, pos)) = i {
            known[e][w][c] = known[e][w][c].max(pos + 1);
        }
    };
    for step in 0..HISTORY_STEPS {
        let ctx = format!("seed {seed} step {step}");
        match rng.below(10) {
            0..=2 => {
                let w = rng.below(REPLICAS);
                let c = rng.below(COUNTERS.len());
                let by = [1, 2, 5, -3][rng.below(4)];
                let a = engines[w]
                    .apply(&k, Op::HIncr(b(COUNTERS[c]), by), now())
                    .unwrap();
                let prev = totals[w][c].last().copied().unwrap_or(0);
                totals[w][c].push(prev + by);
                let info = (w, c, totals[w][c].len() - 1);
                incr_of.push(Some(info));
                delivered[w].insert(records.len());
                records.push((w, a.record));
                learn(&mut known, w, Some(info));
            }
            3 => {
                let w = rng.below(REPLICAS);
                let f = REGISTERS[rng.below(REGISTERS.len())];
                let op = if rng.below(3) == 0 {
                    Op::HDel(vec![b(f)])
                } else {
                    Op::HSet(vec![(b(f), format!("{seed}-{step}").into_bytes())])
                };
                let a = engines[w].apply(&k, op, now()).unwrap();
                incr_of.push(None);
                delivered[w].insert(records.len());
                records.push((w, a.record));
            }
            4..=6 => {
                // Deliver a random record (possibly a duplicate) anywhere.
                if records.is_empty() {
                    continue;
                }
                let i = rng.below(records.len());
                let e = rng.below(REPLICAS);
                let merged = engines[e].merge(&records[i].1, now()).unwrap();
                if delivered[e].insert(i) {
                    assert!(matches!(merged, Merged::Applied { .. }), "{ctx}");
                } else {
                    assert_eq!(merged, Merged::Duplicate, "{ctx}");
                }
                learn(&mut known, e, incr_of[i]);
            }
            7..=8 => {
                // A quorum read on two replicas, then read repair.
                let x = rng.below(REPLICAS);
                let y = (x + 1 + rng.below(REPLICAS - 1)) % REPLICAS;
                let sx = engines[x].state(&k).unwrap();
                let sy = engines[y].state(&k).unwrap();
                let joined = match (sx, sy) {
                    (None, s) | (s, None) => s,
                    (Some(mut j), Some(s)) => {
                        j.join(&s).unwrap();
                        Some(j)
                    }
                };
                let mut both = known[x].clone();
                for (w, row) in both.iter_mut().enumerate() {
                    for (c, n) in row.iter_mut().enumerate() {
                        *n = (*n).max(known[y][w][c]);
                    }
                }
                for (c, name) in COUNTERS.iter().enumerate() {
                    assert_eq!(
                        field_value(joined.as_ref(), name),
                        expected(&both, &totals, c),
                        "{ctx}: quorum read of {name} on {x}+{y}"
                    );
                }
                if let Some(j) = &joined {
                    for e in [x, y] {
                        engines[e].merge_state(&k, j, now()).unwrap();
                        known[e] = both.clone();
                    }
                }
            }
            _ => {
                // A full-state sync from one replica into another.
                let from = rng.below(REPLICAS);
                let to = (from + 1 + rng.below(REPLICAS - 1)) % REPLICAS;
                if let Some(s) = engines[from].state(&k).unwrap() {
                    engines[to].merge_state(&k, &s, now()).unwrap();
                    let theirs = known[from].clone();
                    for (w, row) in known[to].iter_mut().enumerate() {
                        for (c, n) in row.iter_mut().enumerate() {
                            *n = (*n).max(theirs[w][c]);
                        }
                    }
                }
            }
        }
        // Every replica's local read counts each writer once.
        for (e, engine) in engines.iter().enumerate() {
            let state = engine.state(&k).unwrap();
            for (c, name) in COUNTERS.iter().enumerate() {
                assert_eq!(
                    field_value(state.as_ref(), name),
                    expected(&known[e], &totals, c),
                    "{ctx}: local read of {name} on {e}"
                );
            }
        }
    }
    // Deliver everything, in a random order: the replicas converge on the
    // sum of every writer's whole contribution.
    for (e, engine) in engines.iter().enumerate() {
        let mut order: Vec<usize> = (0..records.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for i in order {
            engine.merge(&records[i].1, now()).unwrap();
            delivered[e].insert(i);
        }
    }
    let states: Vec<_> = engines.iter().map(|e| e.state(&k).unwrap()).collect();
    assert!(
        states.iter().all(|s| *s == states[0]),
        "seed {seed}: converged"
    );
    for (c, name) in COUNTERS.iter().enumerate() {
        let all: i64 = (0..REPLICAS)
            .map(|w| totals[w][c].last().copied().unwrap_or(0))
            .sum();
        assert_eq!(field_value(states[0].as_ref(), name), all, "seed {seed}");
    }
}
