//! Review item C4 at the engine: a set that merges grew past one write's
//! limit (and past one log frame) is joined, logged, replayed, re-issued
//! after a power cut, served to a peer and deleted, each through
//! multi-part log entries; a merge past the merged-object bound is
//! refused, counted, and changes nothing.

mod common;

use std::time::Duration;

use common::*;
use meridian_engine::vfs::Keep;
use meridian_engine::{
    Durability, Engine, Error, MAX_MERGED_OBJECT_BYTES, MAX_OBJECT_BYTES, MAX_VALUE_BYTES,
    ObjectState, Op,
};

/// Members of one writer: `count` members of 1 MiB (each add is one write
/// well under the per-write limit), named `<prefix><i>`.
fn fill(e: &Engine, key: &meridian_engine::ObjectKey, prefix: &str, count: usize) {
    for i in 0..count {
        let mut member = format!("{prefix}{i:03}-").into_bytes();
        member.resize(MAX_VALUE_BYTES - 64, b'.');
        apply(e, key, Op::Add(vec![member]));
    }
}

/// Members a set holds, by their name prefix (`<prefix><i>-`).
fn names(e: &Engine, key: &meridian_engine::ObjectKey) -> Vec<String> {
    set(e, key)
        .iter()
        .map(|m| {
            let end = m.iter().position(|&b| b == b'-').unwrap();
            String::from_utf8(m[..end].to_vec()).unwrap()
        })
        .collect()
}

/// Two writers that never saw each other each fill one set to 15 MiB;
/// the join (30 MiB: over one write's limit and one log frame) is
/// built on a third engine by full-state joins, replays after a clean
/// restart, and is re-issued after a power cut that lost its log records
/// (sled kept the effect): the re-issued record, over a frame itself,
/// reaches a replica built from the log alone. Then the set is deleted
/// with a delta that lists no members. On the old code the 30 MiB join
/// could not be logged (24 MiB entry cap), nor re-issued (every open
/// failed), nor deleted.
#[test]
fn a_set_merged_past_one_write_moves_through_log_restart_reissue_and_delete() {
    let key = set_key("big");
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let a = open(a_dir.path());
    let b = open(b_dir.path());
    fill(&a, &key, "a", 15);
    fill(&b, &key, "b", 15);
    let state_a = a.state(&key).unwrap().unwrap();
    let state_b = b.state(&key).unwrap().unwrap();
    let mut joined = state_a.clone();
    joined.join(&state_b).unwrap();
    assert!(meridian_engine::codec::encode(&joined).len() > 24 << 20);

    // A full-sync receiver: one 30 MiB state joined at once.
    let node = SimNode::new();
    let configure = |c: &mut meridian_engine::EngineConfig| {
        c.durability = Durability::Periodic(Duration::from_secs(3600));
    };
    let e = node.open(configure).unwrap();
    let lsn = e
        .merge_state(&key, &joined, now())
        .unwrap()
        .expect("changed");
    e.wait_durable(lsn).unwrap();
    assert_eq!(set(&e, &key).len(), 30);
    e.close().unwrap();
    drop(e);
    let e = node.open(configure).unwrap();
    assert_eq!(set(&e, &key).len(), 30, "replay of a multi-part entry");

    // A power cut loses the unsynced records of a second such set (sled
    // keeps its effect): the next open re-issues it as one new delta.
    let lost = set_key("lost");
    e.merge_state(&lost, &state_a, now()).unwrap();
    e.merge_state(&lost, &state_b, now()).unwrap();
    node.disk.power_cut(Keep::Synced);
    drop(e);
    let e = node.open(configure).expect("re-issuing a 30 MiB set");
    assert_eq!(set(&e, &lost).len(), 30);
    let (_dir, replica) = replica_of(&e);
    assert_eq!(names(&replica, &lost), names(&e, &lost));
    assert_eq!(set(&replica, &key).len(), 0, "merges are not replicated");

    // Delete: the delta lists no members; a replica applies it.
    let del = e.apply(&lost, Op::Delete, now()).unwrap();
    e.wait_durable(del.lsn).unwrap();
    match &del.record.delta {
        meridian_engine::Delta::Set(d) => assert!(d.entries.is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(set(&e, &lost).is_empty());
    pull(&replica, &e, &all_groups);
    assert!(set(&replica, &lost).is_empty());
    // And after an unclean restart nothing is re-issued twice or lost.
    node.disk.power_cut(Keep::Synced);
    drop(e);
    let e = node.open(configure).unwrap();
    assert!(set(&e, &lost).is_empty());
    assert_eq!(set(&e, &key).len(), 30);
}

/// A merge that would grow a set past the merged-object bound is refused
/// with a typed error, counted, and changes nothing (state, log); one
/// that leaves it no larger is taken.
#[test]
fn a_merge_past_the_merged_object_bound_is_refused_and_counted() {
    let key = set_key("huge");
    let writers = MAX_MERGED_OBJECT_BYTES / MAX_OBJECT_BYTES + 1;
    let target_dir = tempfile::tempdir().unwrap();
    let target = open(target_dir.path());
    let mut refused = None;
    for w in 0..writers {
        let dir = tempfile::tempdir().unwrap();
        let writer = open(dir.path());
        fill(&writer, &key, &format!("w{w}x"), 15);
        let state = writer.state(&key).unwrap().unwrap();
        let before = (target.log_end(), names(&target, &key));
        match target.merge_state(&key, &state, now()) {
            Ok(_) => {}
            Err(Error::ObjectTooLarge { bytes, limit }) => {
                assert!(bytes > limit);
                assert_eq!((target.log_end(), names(&target, &key)), before);
                refused = Some(w);
                // The same state again (already holds nothing new): a
                // state the set already covers is taken.
                let same = target.state(&key).unwrap().unwrap();
                assert_eq!(target.merge_state(&key, &same, now()).unwrap(), None);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refused, Some(MAX_MERGED_OBJECT_BYTES / (15 << 20)));
    assert_eq!(target.metrics().oversized_merges, 1);
    match target.state(&key).unwrap().unwrap() {
        ObjectState::Set(s) => assert!(s.cost() <= MAX_MERGED_OBJECT_BYTES as u64),
        other => panic!("{other:?}"),
    }
}
