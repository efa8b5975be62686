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
