//! Power loss and disk faults, on the simulated disk
//! (`meridian_engine::vfs::SimDisk`): unlike SIGKILL (`crash.rs`), a power
//! cut also loses what sat in the page cache.
//!
//! * **Power-loss rounds**: writers on several threads, a power cut at a
//!   random moment (keeping nothing unsynced, a random part of it, or all
//!   of it), sled's files either kept or put back as of the round's
//!   checkpoint, reopen: with `sync` every acknowledged write is there;
//!   with `periodic` every write whose dot was durable before the cut is
//!   there (what is lost was written after the last fsync); nothing never
//!   attempted appears. Some rounds cut the power during recovery itself.
//!   Seeded: the seed is printed, `MERIDIAN_POWER_SEED=<seed>` replays the
//!   same plan (thread timing still varies).
//! * **Failpoints**: a failed log fsync (by the syncer, and at a segment
//!   roll) poisons the engine; a full disk fails the write with `Io` and
//!   changes nothing; a power cut between the checkpoint and the deletion
//!   of log segments loses nothing; a panic in the log sync thread fails
//!   waiters and writes instead of hanging them.
//! * **Group commit**: concurrent writers share fsyncs, counted at the
//!   file layer.
//! * **C9, C10**: re-issuing lost effects after a power cut advances the
//!   clock past the register timestamps it re-issues, and a second power
//!   cut part way through re-issuing hides nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use meridian_engine::vfs::sim::{EIO, ENOSPC};
use meridian_engine::vfs::{FailAction, FailOp, Failpoint, Keep};
use meridian_engine::{Dot, Durability, Engine, EngineConfig, Error, Op, PhysicalTime};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The seed for this run: `MERIDIAN_POWER_SEED` or a fresh one, printed
/// (the test harness shows it when the test fails).
fn seed(test: &str) -> u64 {
    let seed = std::env::var("MERIDIAN_POWER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!(
        "{test}: seed {seed} (replay: MERIDIAN_POWER_SEED={seed} cargo test -p meridian-engine \
         --test power {test})"
    );
    seed
}

// ---------------------------------------------------------------------------
// Power-loss rounds.

/// Writer threads per round.
const THREADS: usize = 4;
/// Rounds per test: each opens the engine (recovering the last cut),
/// checks it, writes, and cuts the power.
const ROUNDS: u64 = 24;
/// Longest a round writes before its power cut, in milliseconds.
const MAX_ROUND_MS: u64 = 40;
/// The periodic test's fsync interval: short, so rounds see several.
const PERIODIC: Duration = Duration::from_millis(4);

/// Operation `i` of thread `t` in round `round`.
#[derive(Clone, Debug)]
enum Planned {
    Incr { key: String, amount: i64 },
    Add { key: String, member: String },
    Put { key: String, value: String },
}

fn planned(round: u64, t: usize, i: usize) -> Planned {
    match i % 3 {
        0 => Planned::Incr {
            key: format!("c{}", t % 2),
            amount: 1 + t as i64 + 10 * i as i64 + 100_000 * round as i64,
        },
        1 => Planned::Add {
            key: format!("s{}", t % 2),
            member: format!("r{round}-t{t}-i{i}"),
        },
        _ => Planned::Put {
            key: format!("reg{t}"),
            value: format!("r{round}-t{t}-i{i}"),
        },
    }
}

fn key_and_op(p: &Planned) -> (meridian_engine::ObjectKey, Op) {
    match p {
        Planned::Incr { key, amount } => (counter_key(key), Op::Incr(*amount)),
        Planned::Add { key, member } => (set_key(key), Op::Add(vec![member.as_bytes().to_vec()])),
        Planned::Put { key, value } => (register_key(key), Op::Put(value.as_bytes().to_vec())),
    }
}

/// What one writer thread did in a round.
#[derive(Default, Clone, Debug)]
struct ThreadLog {
    /// Operations applied (`apply` returned; may or may not survive),
    /// with their dots.
    applied: Vec<Dot>,
    /// Operations called (applied, or failed part way: may have survived).
    attempted: usize,
    /// `sync`: operations acknowledged by `wait_durable`.
    acked: usize,
}

/// The values the engine held after the last check.
#[derive(Default)]
struct Model {
    counters: BTreeMap<String, i64>,
    sets: BTreeMap<String, BTreeSet<String>>,
    registers: BTreeMap<String, Option<String>>,
}

fn read_set(e: &Engine, key: &str) -> BTreeSet<String> {
    set(e, &set_key(key))
        .into_iter()
        .map(|m| String::from_utf8(m).unwrap())
        .collect()
}

fn read_register(e: &Engine, key: &str) -> Option<String> {
    register(e, &register_key(key)).map(|v| String::from_utf8(v).unwrap())
}

/// Checks the reopened engine against what round `round` did; `must(t, i)`
/// says whether operation `i` of thread `t` has to have survived. Updates
/// the model to what the engine holds.
fn check_round(
    e: &Engine,
    round: u64,
    logs: &[ThreadLog],
    must: &dyn Fn(usize, usize) -> bool,
    model: &mut Model,
) {
    let mut low: BTreeMap<String, i64> = BTreeMap::new();
    let mut high: BTreeMap<String, i64> = BTreeMap::new();
    let mut must_have: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut may_have: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let applied = e.applied();
    let durable = e.durable();
    for (t, log) in logs.iter().enumerate() {
        let mut last_must_put: Option<usize> = None;
        for i in 0..log.attempted {
            let m = must(t, i);
            if m {
                let d = log.applied[i];
                assert!(
                    applied.contains(d) && durable.contains(d),
                    "round {round}: thread {t} op {i} ({d:?}) must have survived"
                );
            }
            match planned(round, t, i) {
                Planned::Incr { key, amount } => {
                    if m {
                        *low.entry(key.clone()).or_default() += amount;
                    }
                    *high.entry(key).or_default() += amount;
                }
                Planned::Add { key, member } => {
                    if m {
                        must_have
                            .entry(key.clone())
                            .or_default()
                            .insert(member.clone());
                    }
                    may_have.entry(key).or_default().insert(member);
                }
                Planned::Put { .. } => {
                    if m {
                        last_must_put = Some(i);
                    }
                }
            }
        }
        // The register holds the last put that had to survive, or a later
        // attempted one; with none, the previous value or any attempted.
        let key = format!("reg{t}");
        let got = read_register(e, &key);
        let mut allowed: Vec<Option<String>> = Vec::new();
        if last_must_put.is_none() {
            allowed.push(model.registers.get(&key).cloned().flatten());
        }
        for i in last_must_put.unwrap_or(0)..log.attempted {
            if let Planned::Put { value, .. } = planned(round, t, i) {
                allowed.push(Some(value));
            }
        }
        assert!(
            allowed.contains(&got),
            "round {round}: register {key} holds {got:?}, allowed {allowed:?}"
        );
        model.registers.insert(key, got);
    }
    for c in ["c0", "c1"] {
        let base = model.counters.get(c).copied().unwrap_or(0);
        let got = counter(e, &counter_key(c));
        let lo = base + low.get(c).copied().unwrap_or(0);
        let hi = base + high.get(c).copied().unwrap_or(0);
        assert!(
            (lo..=hi).contains(&got),
            "round {round}: counter {c} = {got}, must be ≥ {lo}, attempted ≤ {hi}"
        );
        model.counters.insert(c.to_string(), got);
    }
    for s in ["s0", "s1"] {
        let got = read_set(e, s);
        let base = model.sets.get(s).cloned().unwrap_or_default();
        for m in base.iter().chain(must_have.get(s).into_iter().flatten()) {
            assert!(got.contains(m), "round {round}: set {s} lost {m}");
        }
        for m in &got {
            assert!(
                base.contains(m) || may_have.get(s).is_some_and(|x| x.contains(m)),
                "round {round}: set {s} holds {m}, which was never added"
            );
        }
        model.sets.insert(s.to_string(), got);
    }
}

/// What happens to sled's files at a round's power cut.
#[derive(Clone, Copy, Debug)]
enum SledAtCut {
    /// sled wrote everything (its files are left as they are).
    Kept,
    /// sled reverts to its state at the round's checkpoint (its files are
    /// put back as copied right after it).
    Reverted,
}

fn power_loss_rounds(test: &str, durability: Durability) {
    let seed = seed(test);
    let mut rng = StdRng::seed_from_u64(seed);
    let node = SimNode::new();
    let snapshot_dir = tempfile::tempdir().unwrap();
    let configure = move |c: &mut EngineConfig| {
        c.durability = durability;
        // Rounds roll segments.
        c.segment_bytes = 16 << 10;
    };
    let mut model = Model::default();
    // What the previous round did, checked at this round's open.
    let mut pending: Option<(u64, Vec<ThreadLog>, BTreeSet<Dot>)> = None;
    let mut total_must = 0usize;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let keep = match rng.random_range(0..4) {
            0 => Keep::All,
            1 => Keep::Synced,
            _ => Keep::Random(rng.random()),
        };
        // One round in five: the power fails again during recovery.
        if pending.is_some() && rng.random_range(0..5) == 0 {
            let op = [FailOp::Sync, FailOp::Append, FailOp::SyncDir][rng.random_range(0..3)];
            node.disk.add_failpoint(
                Failpoint::new(op, "", FailAction::PowerCut(keep)).after(rng.random_range(0..3)),
            );
        }
        let e = match node.open(configure) {
            Ok(e) => e,
            Err(err) => {
                // Cut during recovery: the next round recovers again and
                // checks the same expectations.
                assert!(
                    node.disk.armed_failpoints() == 0,
                    "round {round}: open failed without a power cut: {err:?}"
                );
                continue;
            }
        };
        node.disk.clear_failpoints();
        if let Some((r, logs, durable_at_cut)) = pending.take() {
            let must = |t: usize, i: usize| match durability {
                Durability::Sync => i < logs[t].acked,
                Durability::Periodic(_) => logs[t]
                    .applied
                    .get(i)
                    .is_some_and(|d| durable_at_cut.contains(d)),
            };
            total_must += (0..THREADS)
                .map(|t| (0..logs[t].attempted).filter(|&i| must(t, i)).count())
                .sum::<usize>();
            check_round(&e, r, &logs, &must, &mut model);
        }

        let sled_mode = if rng.random_bool(0.5) {
            SledAtCut::Kept
        } else {
            SledAtCut::Reverted
        };
        if let SledAtCut::Reverted = sled_mode {
            // Quiescent: sled's files now hold exactly the checkpoint.
            e.checkpoint().unwrap();
            let _ = std::fs::remove_dir_all(snapshot_dir.path());
            copy_tree(&node.store_dir(), snapshot_dir.path());
        }
        let logs: Arc<Vec<Mutex<ThreadLog>>> =
            Arc::new((0..THREADS).map(|_| Mutex::default()).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let e = e.clone();
                let logs = logs.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    for i in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let (k, op) = key_and_op(&planned(round, t, i));
                        logs[t].lock().attempted = i + 1;
                        let Ok(a) = e.apply(&k, op, now()) else {
                            break;
                        };
                        logs[t].lock().applied.push(a.record.dot);
                        if durability == Durability::Sync {
                            if e.wait_durable(a.lsn).is_err() {
                                break;
                            }
                            logs[t].lock().acked = i + 1;
                        }
                    }
                })
            })
            .collect();
        // With sled kept, checkpoints race the writers (and the cut).
        let checkpointer = matches!(sled_mode, SledAtCut::Kept).then(|| {
            let e = e.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) && e.checkpoint().is_ok() {
                    std::thread::sleep(Duration::from_millis(3));
                }
            })
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(0..MAX_ROUND_MS)));
        // Durable before the cut: must survive it. (Taken just before the
        // cut, so possibly less than what was durable at it: a lower bound.)
        let durable_at_cut: BTreeSet<Dot> = {
            let d = e.durable();
            logs.iter()
                .flat_map(|l| l.lock().applied.clone())
                .filter(|x| d.contains(*x))
                .collect()
        };
        node.disk.power_cut(keep);
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.join().unwrap();
        }
        if let Some(c) = checkpointer {
            c.join().unwrap();
        }
        drop(e);
        if let SledAtCut::Reverted = sled_mode {
            std::fs::remove_dir_all(node.store_dir()).unwrap();
            copy_tree(snapshot_dir.path(), &node.store_dir());
        }
        let logs: Vec<ThreadLog> = logs.iter().map(|l| l.lock().clone()).collect();
        pending = Some((round, logs, durable_at_cut));
    }
    // The last round's cut, recovered and checked.
    let e = node.open(configure).unwrap();
    if let Some((r, logs, durable_at_cut)) = pending.take() {
        let must = |t: usize, i: usize| match durability {
            Durability::Sync => i < logs[t].acked,
            Durability::Periodic(_) => logs[t]
                .applied
                .get(i)
                .is_some_and(|d| durable_at_cut.contains(d)),
        };
        check_round(&e, r, &logs, &must, &mut model);
    }
    // A replica built from this node's log alone agrees with it.
    let (_dir, replica) = replica_of(&e);
    for k in ["c0", "c1"] {
        assert_eq!(
            counter(&replica, &counter_key(k)),
            counter(&e, &counter_key(k))
        );
    }
    for k in ["s0", "s1"] {
        assert_eq!(read_set(&replica, k), read_set(&e, k));
    }
    for t in 0..THREADS {
        let k = format!("reg{t}");
        assert_eq!(read_register(&replica, &k), read_register(&e, &k));
    }
    assert!(total_must > 0, "no round made anything durable");
    eprintln!(
        "{test}: {ROUNDS} power cuts, {total_must} writes that had to survive, {:?}",
        started.elapsed()
    );
}

#[test]
fn acknowledged_sync_writes_survive_power_loss() {
    power_loss_rounds(
        "acknowledged_sync_writes_survive_power_loss",
        Durability::Sync,
    );
}

#[test]
fn periodic_loses_only_writes_after_the_last_fsync() {
    power_loss_rounds(
        "periodic_loses_only_writes_after_the_last_fsync",
        Durability::Periodic(PERIODIC),
    );
}

// ---------------------------------------------------------------------------
// Failpoints.

fn is_poisoned<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::Poisoned(_)))
}

/// C3 (the syncer's fsync): a failed fsync fails the write waiting on it,
/// every later write, checkpoint and clean close; after a power cut only
/// what an earlier fsync covered is there.
#[test]
fn a_failed_log_fsync_fails_every_waiter_and_later_write() {
    let node = SimNode::new();
    let e = node.open(|_| {}).unwrap();
    let k = counter_key("k");
    apply(&e, &k, Op::Incr(1));
    node.disk
        .add_failpoint(Failpoint::new(FailOp::Sync, ".seg", FailAction::Errno(EIO)));
    let a = e.apply(&k, Op::Incr(10), now()).unwrap();
    assert!(is_poisoned(e.wait_durable(a.lsn)));
    let (tx, rx) = std::sync::mpsc::channel();
    e.on_durable(a.lsn, move |r| tx.send(r.is_err()).unwrap());
    assert!(rx.recv().unwrap(), "the callback is told it failed");
    assert!(is_poisoned(e.apply(&k, Op::Incr(100), now())));
    assert!(e.checkpoint().is_err());
    assert!(e.close().is_err(), "no clean shutdown after a failed fsync");
    drop(e);
    node.disk.power_cut(Keep::Synced);
    let e = node.open(|_| {}).unwrap();
    // The log holds only the synced write; sled may hold the failed one's
    // effect too, which recovery then re-issues (it was never
    // acknowledged: the writer was told "poisoned", indeterminate). The
    // refused write is nowhere.
    let got = counter(&e, &k);
    assert!(got == 1 || got == 11, "{got}");
}

/// fsyncgate: after a failed log fsync the process stops, and restarts
/// *without a reboot*. The page cache still holds the log pages the failed
/// writeback dropped from the disk, so recovery reads them back; a later
/// fsync of that file does not write them. Recovery must make what it
/// read durable itself (it rewrites the last segment), so writes
/// acknowledged after the restart survive a later power cut, and the
/// engine opens again holding everything it read.
#[test]
fn a_restart_after_a_failed_fsync_makes_what_it_read_durable() {
    let node = SimNode::new();
    let e = node.open(|_| {}).unwrap();
    let k = counter_key("k");
    let first = apply(&e, &k, Op::Incr(1));
    e.wait_durable(first.lsn).unwrap();
    node.disk
        .add_failpoint(Failpoint::new(FailOp::Sync, ".seg", FailAction::Errno(EIO)));
    let dropped = e.apply(&k, Op::Incr(10), now()).unwrap();
    assert!(is_poisoned(e.wait_durable(dropped.lsn)));
    drop(e); // the node stops; no power cut: the page cache is kept

    // Restart: recovery reads the dropped write back from the page cache.
    let e = node.open(|_| {}).unwrap();
    assert_eq!(counter(&e, &k), 11, "recovery read the whole cached log");
    let after = apply(&e, &k, Op::Incr(100));
    e.wait_durable(after.lsn).unwrap();
    drop(e);

    // The power goes: only what reached the disk is left, and it must
    // open, holding the write acknowledged after the restart (and the one
    // recovery read, which it reported as applied and durable).
    node.disk.power_cut(Keep::Synced);
    let e = node
        .open(|_| {})
        .unwrap_or_else(|err| panic!("the log has a hole after the power cut: {err}"));
    assert_eq!(counter(&e, &k), 111);
}

/// C3 (the segment roll): the fdatasync that closes a full segment fails.
/// The syncer's next fdatasync of that same file would succeed (Linux
/// reports a writeback error once), so the failure itself poisons: the
/// writes in the old segment are never reported durable.
#[test]
fn a_failed_fsync_at_segment_roll_poisons_the_engine() {
    let node = SimNode::new();
    let configure = |c: &mut EngineConfig| {
        // No fsync but the roll's: nobody asks for one.
        c.durability = Durability::Periodic(Duration::from_secs(3600));
        c.segment_bytes = 1024;
    };
    let e = node.open(configure).unwrap();
    let first = node.disk.list(Path::new("/node/log"));
    assert_eq!(first.len(), 1);
    node.disk.add_failpoint(Failpoint::new(
        FailOp::Sync,
        first[0].clone(),
        FailAction::Errno(EIO),
    ));
    let k = counter_key("k");
    let mut lsns = Vec::new();
    let err = loop {
        match e.apply(&k, Op::Incr(1), now()) {
            Ok(a) => lsns.push(a.lsn),
            Err(err) => break err,
        }
        assert!(lsns.len() < 100, "no roll");
    };
    assert_eq!(node.disk.armed_failpoints(), 0, "the roll's fsync failed");
    for lsn in lsns {
        assert!(
            is_poisoned(e.wait_durable(lsn)),
            "a write in the old segment was reported durable"
        );
    }
    assert!(matches!(err, Error::Poisoned(_)), "{err:?}");
    assert!(is_poisoned(e.apply(&k, Op::Incr(1), now())));
}

/// A full disk: the write fails with a typed `Io` (ENOSPC), whether the
/// append ran out part way or the segment roll could not create a file,
/// and nothing changed: the value, the applied dots, the log end, the
/// next dot. Once space is back, writing goes on and survives power loss.
#[test]
fn a_full_disk_fails_the_write_and_changes_nothing() {
    let node = SimNode::new();
    let e = node.open(|c| c.segment_bytes = 600).unwrap();
    let k = counter_key("k");
    let mut expected = 0;
    let mut dots = Vec::new();
    for i in 0..40 {
        let before = (
            counter(&e, &k),
            e.applied(),
            e.log_end(),
            e.metrics().writes,
        );
        node.disk.set_free_bytes(Some(i % 7 * 9));
        match e.apply(&k, Op::Incr(1), now()) {
            Err(Error::Io { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(ENOSPC), "{source}")
            }
            other => panic!("expected an Io error (ENOSPC), got {other:?}"),
        }
        let after = (
            counter(&e, &k),
            e.applied(),
            e.log_end(),
            e.metrics().writes,
        );
        assert_eq!(before, after, "a failed write changed something");
        // A checkpoint on a full disk fails the same way, and harms nothing.
        if i % 10 == 0 {
            node.disk.set_free_bytes(Some(0));
            assert!(matches!(e.checkpoint(), Err(Error::Io { .. })));
        }
        node.disk.set_free_bytes(None);
        let a = apply(&e, &k, Op::Incr(1));
        expected += 1;
        dots.push(a.record.dot);
    }
    // Dense numbering: the failed writes used no sequence numbers.
    for w in dots.windows(2) {
        assert_eq!(w[1].counter, w[0].counter + 1, "{dots:?}");
    }
    assert_eq!(counter(&e, &k), expected);
    drop(e);
    node.disk.power_cut(Keep::Synced);
    let e = node.open(|c| c.segment_bytes = 600).unwrap();
    assert_eq!(counter(&e, &k), expected);
}

/// A power cut after truncation's checkpoint (which records the new
/// truncation bounds) and before or during the deletion of the segments:
/// the open works, nothing is lost, what the checkpoint says was truncated
/// stays truncated (peers that lack it are sent to a full sync), and the
/// next truncation deletes the leftovers.
#[test]
fn a_power_cut_between_checkpoint_and_segment_deletion_loses_nothing() {
    for (skip, keep) in [(0, Keep::Synced), (1, Keep::Synced), (1, Keep::All)] {
        let node = SimNode::new();
        let configure = |c: &mut EngineConfig| c.segment_bytes = 600;
        let e = node.open(configure).unwrap();
        let k = counter_key("k");
        for i in 1..=40 {
            apply(&e, &k, Op::Incr(i));
        }
        let segments_before = node.disk.list(Path::new("/node/log")).len();
        assert!(segments_before > 3);
        let everything = e.applied().vector().clone();
        node.disk.add_failpoint(
            Failpoint::new(FailOp::Remove, ".seg", FailAction::PowerCut(keep)).after(skip),
        );
        assert!(e.truncate(&|_| everything.clone()).is_err());
        drop(e);
        let e = node.open(configure).unwrap();
        assert_eq!(counter(&e, &k), 820, "skip {skip}, {keep:?}");
        let truncated = e.truncated();
        assert!(
            !truncated.is_empty(),
            "the checkpoint before the deletion recorded the truncation"
        );
        assert!(
            e.deltas_since(&Default::default(), &all_groups, 1000, usize::MAX)
                .unwrap()
                .is_none(),
            "a peer with nothing is told to take a full sync"
        );
        let everything = e.applied().vector().clone();
        assert!(e.truncate(&|_| everything.clone()).unwrap() > 0);
        assert!(node.disk.list(Path::new("/node/log")).len() < segments_before);
        e.close().unwrap();
        drop(e);
        let e = node.open(configure).unwrap();
        assert_eq!(counter(&e, &k), 820);
    }
}

/// S9: a panic on the log sync thread (here in the file layer's fsync)
/// fails the write waiting for it and every later one, instead of leaving
/// waiters blocked on a thread that is gone.
#[test]
fn a_panic_in_the_log_sync_thread_fails_waiters_and_later_writes() {
    let node = SimNode::new();
    let e = node.open(|_| {}).unwrap();
    let k = counter_key("k");
    apply(&e, &k, Op::Incr(1));
    node.disk
        .add_failpoint(Failpoint::new(FailOp::Sync, ".seg", FailAction::Panic));
    let a = e.apply(&k, Op::Incr(1), now()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = {
        let e = e.clone();
        std::thread::spawn(move || tx.send(e.wait_durable(a.lsn)).unwrap())
    };
    let r = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the waiter hangs after the sync thread panicked");
    match r {
        Err(Error::Poisoned(m)) => assert!(m.contains("panicked"), "{m}"),
        other => panic!("expected Poisoned, got {other:?}"),
    }
    waiter.join().unwrap();
    assert!(is_poisoned(e.apply(&k, Op::Incr(1), now())));
}

// ---------------------------------------------------------------------------
// Group commit.

/// Writers waiting at the same time share fsyncs: with 16 writers and a
/// slow fsync, each fsync covers the records written while the previous
/// one ran. Counted at the file layer. One fsync per write would be 320;
/// the test fails at half that.
#[test]
fn concurrent_writers_share_fsyncs() {
    const WRITERS: usize = 16;
    const WRITES_EACH: usize = 20;
    let node = SimNode::new();
    let e = node.open(|_| {}).unwrap();
    node.disk.set_sync_delay(Duration::from_millis(2));
    let before = node.disk.syncs(".seg");
    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0..WRITES_EACH {
                    let k = counter_key(&format!("k{t}"));
                    let a = e.apply(&k, Op::Incr(i as i64 + 1), now()).unwrap();
                    e.wait_durable(a.lsn).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let syncs = node.disk.syncs(".seg") - before;
    let writes = WRITERS * WRITES_EACH;
    eprintln!("{syncs} log fsyncs for {writes} acknowledged writes");
    assert!(syncs >= 1);
    assert!(
        (syncs as usize) < writes / 2,
        "{syncs} fsyncs for {writes} writes: writers do not share fsyncs"
    );
}

// ---------------------------------------------------------------------------
// C9, C10: re-issuing effects the log lost.

fn ms(t: u64) -> PhysicalTime {
    PhysicalTime::from_unix_ms(t)
}

/// C9: the log lost a register put stamped ahead of the clock (a clock
/// pushed forward by a peer's timestamp, then a quick restart); sled kept
/// its effect. Recovery re-issues that state; it must also advance the
/// clock past its timestamp, or the next local put is stamped below it:
/// it would win here (local puts overwrite) and lose on every replica.
#[test]
fn reissued_registers_advance_the_clock() {
    let node = SimNode::new();
    let configure = |c: &mut EngineConfig| {
        c.durability = Durability::Periodic(Duration::from_secs(3600));
    };
    let wall = PhysicalTime::system(0).unix_ms() - 60_000;
    let k = register_key("k");
    let mut c = node.config();
    configure(&mut c);
    let e = Engine::open(c, ms(wall)).unwrap();
    let a = e.apply(&k, Op::Put(b"a".to_vec()), ms(wall)).unwrap();
    e.wait_durable(a.lsn).unwrap();
    // Stamped 10 s ahead, never synced.
    e.apply(&k, Op::Put(b"b".to_vec()), ms(wall + 10_000))
        .unwrap();
    node.disk.power_cut(Keep::Synced);
    drop(e); // sled keeps "b"

    let mut c = node.config();
    configure(&mut c);
    let e = Engine::open(c, ms(wall + 1_000)).unwrap();
    let stamp = |e: &Engine| match e.state(&k).unwrap() {
        Some(meridian_engine::ObjectState::Register(r)) => r.hlc,
        other => panic!("{other:?}"),
    };
    assert_eq!(register(&e, &k).as_deref(), Some(&b"b"[..]));
    let b_hlc = stamp(&e);
    assert!(b_hlc.time > ms(wall + 9_000).0, "{b_hlc:?}");
    let put = e
        .apply(&k, Op::Put(b"c".to_vec()), ms(wall + 2_000))
        .unwrap();
    e.wait_durable(put.lsn).unwrap();
    assert!(
        put.record.hlc > b_hlc,
        "the put after recovery was stamped below the re-issued state"
    );
    assert_eq!(stamp(&e), put.record.hlc);
    assert_eq!(register(&e, &k).as_deref(), Some(&b"c"[..]));
    let (_dir, replica) = replica_of(&e);
    assert_eq!(register(&replica, &k).as_deref(), Some(&b"c"[..]));
}

/// C10: two register puts lost from the log, kept by sled (at log
/// positions p0 < p1, keys "b" then "a"). Recovery re-issues them in key
/// order: "a" first, at position p0. A second power cut after that record
/// is durable but before "b" is re-issued leaves the log ending past p0,
/// so "b"'s stored position no longer marks it as lost. The next recovery
/// must still re-issue it: a replica built from the log agrees with the
/// node.
#[test]
fn a_power_cut_while_reissuing_lost_effects_hides_nothing() {
    let node = SimNode::new();
    let configure = |c: &mut EngineConfig| {
        c.durability = Durability::Periodic(Duration::from_secs(3600));
    };
    let ka = register_key("a");
    let kb = register_key("b");
    let e = node.open(configure).unwrap();
    e.apply(&kb, Op::Put(b"b-lost".to_vec()), now()).unwrap();
    e.apply(&ka, Op::Put(b"a-lost".to_vec()), now()).unwrap();
    node.disk.power_cut(Keep::Synced);
    drop(e);

    // The second re-issued record hits a power cut that keeps everything
    // written before it (the first record included).
    node.disk.add_failpoint(
        Failpoint::new(FailOp::Append, ".seg", FailAction::PowerCut(Keep::All)).after(1),
    );
    assert!(node.open(configure).is_err());
    assert_eq!(node.disk.power_cuts(), 2);

    let e = node.open(configure).unwrap();
    assert_eq!(register(&e, &ka).as_deref(), Some(&b"a-lost"[..]));
    assert_eq!(register(&e, &kb).as_deref(), Some(&b"b-lost"[..]));
    let (_dir, replica) = replica_of(&e);
    assert_eq!(
        register(&replica, &ka).as_deref(),
        Some(&b"a-lost"[..]),
        "replicas miss a re-issued effect"
    );
    assert_eq!(
        register(&replica, &kb).as_deref(),
        Some(&b"b-lost"[..]),
        "replicas miss an effect whose re-issue a crash interrupted"
    );
    // Nothing left to finish: the next unclean open re-issues nothing.
    let applied = e.applied();
    drop(e);
    let e = node.open(configure).unwrap();
    let since = e
        .deltas_since(&applied, &all_groups, 1000, usize::MAX)
        .unwrap()
        .unwrap();
    assert!(since.records.is_empty(), "{:?}", since.records);
}
