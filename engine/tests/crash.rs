//! Crash and damage tests.
//!
//! * **SIGKILL**: a child process (this test binary re-executed in "child
//!   mode", selected by an environment variable) opens an engine with
//!   `Durability::Sync` and writes from several threads (counter increments
//!   with unique amounts, set adds of unique members, register puts) while
//!   another thread checkpoints, printing each operation once
//!   `wait_durable` has acknowledged it. The parent kills it with SIGKILL
//!   at a random moment, reopens the engine in-process and checks that every
//!   acknowledged operation is there (and nothing that was never
//!   attempted), that the applied set covers every acknowledged dot, and
//!   does it again, 20 rounds in the same directory, so recovered state is
//!   itself recovered.
//! * **Damaged files**: after a crash, garbage after the last record is a
//!   torn tail (opened, reported, earlier records kept); after a clean
//!   shutdown the same damage is `Error::Corruption`; a flipped byte in the
//!   middle of the log (payload or length field) with valid records after
//!   it is `Error::Corruption`, and the failed open changes nothing; so is
//!   a log missing its first or last segment or ending before the
//!   checkpoint; a record of a newer format is `Error::UnsupportedFormat`;
//!   truncated or garbage CHECKPOINT and IDENTITY files are typed errors,
//!   never panics.
//!
//! Power loss (the page cache lost too) is tested on a simulated disk in
//! `power.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use meridian_engine::{Dot, Durability, Engine, EngineConfig, Error, Op, StreamId};

/// Environment variables that put this binary in child mode.
const CHILD_DIR_ENV: &str = "MERIDIAN_CRASH_CHILD_DIR";
const CHILD_ROUND_ENV: &str = "MERIDIAN_CRASH_CHILD_ROUND";

/// Writer threads in the child.
const THREADS: usize = 4;
/// Operations per child thread before it stops by itself (the parent
/// normally kills it long before).
const CHILD_OPS_PER_THREAD: usize = 3000;
/// How long a child runs at most, whatever happens to the parent.
const CHILD_MAX_RUNTIME: Duration = Duration::from_secs(20);
const ROUNDS: u64 = 20;

fn child_config(dir: &Path) -> EngineConfig {
    let mut c = config(dir);
    c.durability = Durability::Sync;
    // Small segments: rounds roll several of them.
    c.segment_bytes = 32 << 10;
    c
}

/// What thread `t`'s `i`-th operation of a round is. Each thread cycles
/// through a counter increment, a set add and a register put.
#[derive(Clone, Debug, PartialEq)]
enum Planned {
    Incr { key: String, amount: i64 },
    Add { key: String, member: String },
    Put { key: String, value: String },
}

fn planned(round: u64, t: usize, i: usize) -> Planned {
    match i % 3 {
        0 => Planned::Incr {
            key: format!("c{}", t % 2),
            // Unique per key: threads sharing a key differ in `t`.
            amount: 1 + t as i64 + 10 * i as i64 + 100_000 * round as i64,
        },
        1 => Planned::Add {
            key: format!("s{}", t % 2),
            member: format!("r{round}-t{t}-i{i}"),
        },
        _ => Planned::Put {
            key: format!("r{round}-t{t}"),
            value: format!("r{round}-t{t}-i{i}"),
        },
    }
}

fn run_planned(e: &Engine, p: &Planned) -> meridian_engine::Applied {
    let (k, op) = match p {
        Planned::Incr { key, amount } => (counter_key(key), Op::Incr(*amount)),
        Planned::Add { key, member } => (set_key(key), Op::Add(vec![member.as_bytes().to_vec()])),
        Planned::Put { key, value } => (register_key(key), Op::Put(value.as_bytes().to_vec())),
    };
    e.apply(&k, op, now()).unwrap()
}

/// Child mode: a no-op unless the parent set the environment.
#[test]
fn crash_child_process() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND_ENV).unwrap().parse().unwrap();
    let e = Engine::open(child_config(Path::new(&dir)), now()).unwrap();
    let deadline = Instant::now() + CHILD_MAX_RUNTIME;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "open {}", e.incarnation().0).unwrap();
        out.flush().unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let checkpointer = {
        let e = e.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                e.checkpoint().unwrap();
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0..CHILD_OPS_PER_THREAD {
                    if Instant::now() > deadline {
                        break;
                    }
                    let a = run_planned(&e, &planned(round, t, i));
                    e.wait_durable(a.lsn).unwrap();
                    // One write per line, flushed: a line is either all there or not.
                    let line = format!(
                        "ack {t} {i} {} {}\n",
                        a.record.dot.stream.0, a.record.dot.counter
                    );
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes()).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    checkpointer.join().unwrap();
    println!("done");
}

/// The parent's view of what has been acknowledged, across rounds.
#[derive(Default)]
struct Expected {
    counters: BTreeMap<String, i64>,
    sets: BTreeMap<String, BTreeSet<String>>,
    registers: BTreeMap<String, Option<String>>,
    dots: Vec<Dot>,
}

fn read_counter(e: &Engine, key: &str) -> i64 {
    counter(e, &counter_key(key))
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

/// Runs one child until a random moment, kills it, returns per thread the
/// number of acknowledged operations and the acknowledged dots.
fn crash_round(dir: &Path, round: u64) -> (Vec<usize>, Vec<Dot>) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash_child_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let kill = move || {
        // ESRCH (already gone) is fine: the point is that it is dead.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    };
    // Every fourth round: kill at a random time after the start, which
    // may fall in the child's recovery of the previous round's crash.
    // Otherwise: after a random number of acknowledgements, plus a random
    // delay of up to a few milliseconds.
    let timed = round % 4 == 3;
    let killer = timed.then(|| {
        let delay = Duration::from_millis(rand::random_range(1..80));
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            kill();
        })
    });
    let kill_after: usize = rand::random_range(0..400);
    let extra_delay = Duration::from_micros(rand::random_range(0..3000));
    let mut acked = vec![0usize; THREADS];
    let mut dots = Vec::new();
    let mut killed = false;
    let mut acks_seen = 0;
    let mut opened = false;
    let reader = BufReader::new(child.stdout.take().unwrap());
    for line in reader.lines() {
        let line = line.unwrap();
        // The test harness may print "test crash_child_process ... " on
        // the same line before the child's first words.
        let words: Vec<&str> = line.split_whitespace().collect();
        let from = words
            .iter()
            .position(|w| *w == "open" || *w == "ack")
            .unwrap_or(words.len());
        match &words[from..] {
            ["open", _] => opened = true,
            ["ack", t, i, stream, counter] => {
                let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
                assert_eq!(i, acked[t], "thread {t} acknowledged out of order");
                acked[t] = i + 1;
                dots.push(Dot::new(
                    StreamId(stream.parse().unwrap()),
                    counter.parse().unwrap(),
                ));
                acks_seen += 1;
            }
            _ => {} // the test harness's own output
        }
        if !timed && opened && !killed && acks_seen >= kill_after {
            std::thread::sleep(extra_delay);
            kill();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    if let Some(k) = killer {
        k.join().unwrap();
    }
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "the child must die by SIGKILL, not exit by itself: {status:?}"
    );
    (acked, dots)
}

/// Reopens after a crash and checks every acknowledged operation is there;
/// updates `expected` to what the engine now holds.
fn check_round(dir: &Path, round: u64, acked: &[usize], dots: Vec<Dot>, exp: &mut Expected) {
    let e = Engine::open(child_config(dir), now()).unwrap();
    exp.dots.extend(dots);
    let applied = e.applied();
    let durable = e.durable();
    for d in &exp.dots {
        assert!(
            applied.contains(*d),
            "round {round}: acknowledged dot {d:?} not applied"
        );
        assert!(
            durable.contains(*d),
            "round {round}: acknowledged dot {d:?} not durable"
        );
    }
    // Per thread: operations [0, acked) were acknowledged; operation
    // `acked` may or may not have happened; nothing later was attempted.
    let mut low: BTreeMap<String, i64> = BTreeMap::new();
    let mut high: BTreeMap<String, i64> = BTreeMap::new();
    let mut must: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut may: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (t, &n) in acked.iter().enumerate() {
        for i in 0..=n {
            let in_flight = i == n;
            match planned(round, t, i) {
                Planned::Incr { key, amount } => {
                    if !in_flight {
                        *low.entry(key.clone()).or_default() += amount;
                    }
                    *high.entry(key).or_default() += amount;
                }
                Planned::Add { key, member } => {
                    if !in_flight {
                        must.entry(key.clone()).or_default().insert(member.clone());
                    }
                    may.entry(key).or_default().insert(member);
                }
                Planned::Put { .. } => {}
            }
        }
        // The thread's register holds its last acknowledged put, or the
        // put in flight.
        let key = format!("r{round}-t{t}");
        let last_acked = (0..n).rev().find_map(|j| match planned(round, t, j) {
            Planned::Put { value, .. } => Some(value),
            _ => None,
        });
        let in_flight = match planned(round, t, n) {
            Planned::Put { value, .. } => Some(value),
            _ => None,
        };
        let got = read_register(&e, &key);
        assert!(
            got == last_acked || (in_flight.is_some() && got == in_flight),
            "round {round}: register {key} holds {got:?}, acknowledged {last_acked:?}, \
             in flight {in_flight:?}"
        );
        exp.registers.insert(key, got);
    }
    for c in ["c0", "c1"] {
        let base = exp.counters.get(c).copied().unwrap_or(0);
        let got = read_counter(&e, c);
        let lo = base + low.get(c).copied().unwrap_or(0);
        let hi = base + high.get(c).copied().unwrap_or(0);
        assert!(
            (lo..=hi).contains(&got),
            "round {round}: counter {c} = {got}, acknowledged ≥ {lo}, attempted ≤ {hi}"
        );
        exp.counters.insert(c.to_string(), got);
    }
    for s in ["s0", "s1"] {
        let got = read_set(&e, s);
        let base = exp.sets.get(s).cloned().unwrap_or_default();
        let must = must.get(s).cloned().unwrap_or_default();
        let may = may.get(s).cloned().unwrap_or_default();
        for m in base.iter().chain(&must) {
            assert!(got.contains(m), "round {round}: set {s} lost {m}");
        }
        for m in &got {
            assert!(
                base.contains(m) || may.contains(m),
                "round {round}: set {s} holds {m}, which was never added"
            );
        }
        exp.sets.insert(s.to_string(), got);
    }
    // Registers of earlier rounds are as they were.
    for (k, v) in &exp.registers {
        assert_eq!(&read_register(&e, k), v, "round {round}: register {k}");
    }
    // Alternate clean and unclean stops of the checking process too.
    if round.is_multiple_of(2) {
        e.close().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut exp = Expected::default();
    let started = Instant::now();
    let mut total_acks = 0;
    for round in 0..ROUNDS {
        let (acked, dots) = crash_round(dir.path(), round);
        total_acks += dots.len();
        check_round(dir.path(), round, &acked, dots, &mut exp);
    }
    assert!(total_acks > 0, "no round acknowledged anything");
    assert!(
        fs::read_dir(dir.path().join("log")).unwrap().count() > 1,
        "rounds rolled log segments"
    );
    eprintln!(
        "{ROUNDS} crash rounds, {total_acks} acknowledged operations, {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Damaged files.

fn only_segment(dir: &Path) -> PathBuf {
    let segs: Vec<PathBuf> = fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    assert_eq!(segs.len(), 1);
    segs.into_iter().next().unwrap()
}

/// Writes `n` counter increments (one record each), closes cleanly, and
/// returns the end position of every record.
fn write_records(dir: &Path, n: i64) -> Vec<u64> {
    let e = open(dir);
    let k = counter_key("k");
    let ends: Vec<u64> = (1..=n).map(|i| apply(&e, &k, Op::Incr(i)).lsn).collect();
    e.close().unwrap();
    ends
}

fn sum_to(n: i64) -> i64 {
    n * (n + 1) / 2
}

fn open_result(dir: &Path) -> Result<Engine, Error> {
    Engine::open(config(dir), now())
}

/// The dots of every delta the log holds.
fn logged_dots(e: &Engine) -> BTreeSet<Dot> {
    e.deltas_since(
        &meridian_engine::CausalContext::new(),
        &all_groups,
        100_000,
        usize::MAX,
    )
    .unwrap()
    .unwrap()
    .records
    .iter()
    .map(|r| r.dot)
    .collect()
}

/// What a crashed process leaves: no clean-shutdown marker.
fn forget_clean_shutdown(dir: &Path) {
    fs::remove_file(dir.join("CLEAN")).unwrap();
}

#[test]
fn garbage_after_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 10);
    forget_clean_shutdown(dir.path());
    let seg = only_segment(dir.path());
    let mut f = fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0xA5; 37]).unwrap();
    drop(f);
    let e = open(dir.path());
    assert!(e.recovered_torn_tail());
    let first = logged_dots(&e);
    assert_eq!(first.len(), 10, "every record before the garbage is kept");
    assert_eq!(counter(&e, &counter_key("k")), sum_to(10));
    // Writing goes on after the cut, and the next open is clean.
    let extra = apply(&e, &counter_key("k"), Op::Incr(100)).record.dot;
    e.close().unwrap();
    drop(e);
    let e = open(dir.path());
    assert!(!e.recovered_torn_tail());
    assert_eq!(counter(&e, &counter_key("k")), sum_to(10) + 100);
    let mut all = first.clone();
    all.insert(extra);
    assert_eq!(logged_dots(&e), all);
    drop(e);

    // A record cut short (a partial frame) after a crash is torn too;
    // everything before it stays. (The record must follow the last
    // checkpoint: one before it was synced, and its damage is corruption.)
    let e = open(dir.path());
    let lost = apply(&e, &counter_key("k"), Op::Incr(1000)).record.dot;
    drop(e);
    let len = fs::metadata(&seg).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let e = open(dir.path());
    assert!(e.recovered_torn_tail());
    let kept = logged_dots(&e);
    assert!(kept.is_superset(&all) && !kept.contains(&lost), "{kept:?}");
}

/// S8: a clean shutdown synced everything before it marked itself, so
/// damage at the end of the log afterwards is not a torn write: the open
/// stops with `Corruption`, changes nothing, and works once the damage is
/// gone.
#[test]
fn damage_at_the_end_after_a_clean_shutdown_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 10);
    let seg = only_segment(dir.path());
    let original = fs::read(&seg).unwrap();
    let damages: Vec<Vec<u8>> = vec![
        // Garbage after the last record.
        [original.clone(), vec![0xA5; 37]].concat(),
        // The last record cut short.
        original[..original.len() - 5].to_vec(),
        // A flipped byte in the last record's payload.
        {
            let mut d = original.clone();
            let n = d.len();
            d[n - 3] ^= 0x40;
            d
        },
    ];
    for (i, damaged) in damages.iter().enumerate() {
        fs::write(&seg, damaged).unwrap();
        match open_result(dir.path()) {
            Err(Error::Corruption { .. }) => {}
            Err(other) => panic!("damage {i}: expected Corruption, got {other:?}"),
            Ok(e) => panic!(
                "damage {i}: opened (torn tail: {})",
                e.recovered_torn_tail()
            ),
        }
        assert_eq!(&fs::read(&seg).unwrap(), damaged, "damage {i}: log changed");
        assert!(
            dir.path().join("CLEAN").exists(),
            "damage {i}: a failed open must keep the clean-shutdown marker"
        );
    }
    fs::write(&seg, &original).unwrap();
    let e = open(dir.path());
    assert!(!e.recovered_torn_tail());
    assert_eq!(counter(&e, &counter_key("k")), sum_to(10));
}

/// S8: the checkpoint says every entry before its position is in the
/// object store and the log holds what follows. A log that ends before
/// that position (a cut or missing last segment), or starts after it (a
/// missing first segment), stops the open, after a clean shutdown or not;
/// after a clean shutdown so does any other start or end than the marker
/// recorded.
#[test]
fn a_log_that_misses_segments_or_ends_before_the_checkpoint_is_corruption() {
    let small = |c: &mut meridian_engine::EngineConfig| c.segment_bytes = 400;
    let setup = || {
        let dir = tempfile::tempdir().unwrap();
        let e = open_with(dir.path(), small);
        let k = counter_key("k");
        for i in 1..=30 {
            apply(&e, &k, Op::Incr(i));
        }
        e.close().unwrap();
        drop(e);
        let mut segs: Vec<PathBuf> = fs::read_dir(dir.path().join("log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        segs.sort();
        assert!(segs.len() >= 3, "{segs:?}");
        (dir, segs)
    };
    let expect_corruption = |dir: &Path, what: &str| {
        let mut c = config(dir);
        small(&mut c);
        match Engine::open(c, now()) {
            Err(Error::Corruption { detail, .. }) => detail,
            Err(other) => panic!("{what}: expected Corruption, got {other:?}"),
            Ok(_) => panic!("{what}: opened"),
        }
    };
    for clean in [true, false] {
        // The last segment is missing.
        let (dir, segs) = setup();
        if !clean {
            forget_clean_shutdown(dir.path());
        }
        fs::remove_file(segs.last().unwrap()).unwrap();
        let detail = expect_corruption(dir.path(), "missing last segment");
        assert!(
            detail.contains("missing") || detail.contains("checkpoint"),
            "{detail}"
        );

        // The last segment cut at a frame boundary (no torn frame to see).
        let (dir, segs) = setup();
        if !clean {
            forget_clean_shutdown(dir.path());
        }
        fs::write(segs.last().unwrap(), b"").unwrap();
        expect_corruption(dir.path(), "log cut before the checkpoint");

        // The first segment is missing: after a clean shutdown the marker
        // says where the log started. (After a crash this looks like a
        // truncation: a documented hazard.)
        if clean {
            let (dir, segs) = setup();
            fs::remove_file(&segs[0]).unwrap();
            let detail = expect_corruption(dir.path(), "missing first segment");
            assert!(detail.contains("missing"), "{detail}");
        }
    }
    // A missing first segment that leaves the log starting after the
    // checkpoint position, after a crash.
    let dir = tempfile::tempdir().unwrap();
    {
        let e = open_with(dir.path(), small);
        let k = counter_key("k");
        e.checkpoint().unwrap();
        for i in 1..=30 {
            apply(&e, &k, Op::Incr(i));
        }
    }
    let mut segs: Vec<PathBuf> = fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    fs::remove_file(&segs[0]).unwrap();
    let detail = expect_corruption(dir.path(), "log starting after the checkpoint");
    assert!(detail.contains("checkpoint"), "{detail}");
}

/// Writes `n` records, flips one byte at `offset(record ends)` of the only
/// segment, expects the open to fail with corruption, restores the byte and
/// expects everything back.
fn assert_flip_is_corruption(n: i64, offset: impl Fn(&[u64]) -> u64) {
    let dir = tempfile::tempdir().unwrap();
    let ends = write_records(dir.path(), n);
    let offset = offset(&ends);
    let seg = only_segment(dir.path());
    let original = fs::read(&seg).unwrap();
    let mut damaged = original.clone();
    damaged[offset as usize] ^= 0x40;
    fs::write(&seg, &damaged).unwrap();
    match open_result(dir.path()) {
        Err(Error::Corruption { .. }) => {}
        Err(other) => panic!("flip at {offset}: expected Corruption, got {other:?}"),
        Ok(e) => panic!(
            "flip at {offset}: opened (torn tail: {}, counter {})",
            e.recovered_torn_tail(),
            counter(&e, &counter_key("k"))
        ),
    }
    assert_eq!(
        fs::read(&seg).unwrap(),
        damaged,
        "a failed open must not change the log"
    );
    fs::write(&seg, &original).unwrap();
    let e = open(dir.path());
    assert!(!e.recovered_torn_tail());
    assert_eq!(counter(&e, &counter_key("k")), sum_to(n));
}

#[test]
fn a_flipped_byte_in_the_middle_of_the_log_is_corruption() {
    // Record 6 spans [ends[4], ends[5]): [len u32][crc u32][payload]. Flip
    // a byte in its payload, its checksum, and its length field (low and
    // high bytes), with valid records after it each time.
    assert_flip_is_corruption(12, |ends| (ends[4] + ends[5]) / 2);
    assert_flip_is_corruption(12, |ends| ends[4] + 5);
    assert_flip_is_corruption(12, |ends| ends[4]);
    assert_flip_is_corruption(12, |ends| ends[4] + 2);
    assert_flip_is_corruption(12, |ends| ends[4] + 3);
    // The same in the first record.
    assert_flip_is_corruption(12, |_| 2);
    assert_flip_is_corruption(12, |ends| ends[0] / 2);
}

#[test]
fn a_record_of_a_newer_format_is_unsupported() {
    for which in [3usize, 9] {
        let dir = tempfile::tempdir().unwrap();
        let ends = write_records(dir.path(), 10);
        let seg = only_segment(dir.path());
        let mut bytes = fs::read(&seg).unwrap();
        let start = if which == 0 { 0 } else { ends[which - 1] } as usize;
        let len = u32::from_le_bytes(bytes[start..start + 4].try_into().unwrap()) as usize;
        let payload = start + 8..start + 8 + len;
        bytes[payload.start] += 1; // format version byte
        let crc = crc32fast::hash(&bytes[payload]);
        bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        fs::write(&seg, &bytes).unwrap();
        match open_result(dir.path()) {
            Err(Error::UnsupportedFormat {
                found, supported, ..
            }) => assert_eq!(found, supported + 1),
            other => panic!("record {which}: expected UnsupportedFormat, got {other:?}"),
        }
    }
}

#[test]
fn damaged_checkpoint_and_identity_files_are_typed_errors() {
    for name in ["CHECKPOINT", "IDENTITY"] {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path());
        apply(&e, &counter_key("k"), Op::Incr(1));
        e.checkpoint().unwrap();
        e.close().unwrap();
        drop(e);
        let path = dir.path().join(name);
        let original = fs::read(&path).unwrap();
        assert!(original.len() > 8);
        let damages: Vec<Vec<u8>> = vec![
            Vec::new(),
            original[..3].to_vec(),
            original[..original.len() / 2].to_vec(),
            original[..original.len() - 1].to_vec(),
            vec![0xFF; original.len()],
        ];
        for damaged in damages {
            fs::write(&path, &damaged).unwrap();
            match open_result(dir.path()) {
                Err(Error::Corruption { path: p, .. }) => assert!(p.ends_with(name)),
                Err(Error::UnsupportedFormat { .. }) => {}
                other => panic!("{name} of {} bytes: got {other:?}", damaged.len()),
            }
        }
        fs::write(&path, &original).unwrap();
        let e = open(dir.path());
        assert_eq!(counter(&e, &counter_key("k")), 1);
    }
}

/// A kill while sled writes a snapshot leaves `snap.<lsn>.generating`
/// behind; sled 0.34 would pick it on open (the largest `snap.` name) and
/// refuse to open on its checksum. The engine removes it first: the node
/// opens, with everything it held (seen once in `acknowledged_writes_survive_sigkill`).
#[test]
fn an_unfinished_sled_snapshot_does_not_stop_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let k = counter_key("c");
    {
        let e = open(dir.path());
        apply(&e, &k, Op::Incr(41));
        e.checkpoint().unwrap();
        apply(&e, &k, Op::Incr(1));
        e.close().unwrap();
    }
    let objects = dir.path().join("objects");
    assert!(objects.is_dir(), "sled lives in {objects:?}");
    fs::write(
        objects.join("snap.FFFFFFFFFFFFFFF0.generating"),
        b"half a snapshot",
    )
    .unwrap();
    forget_clean_shutdown(dir.path());
    let e = open_result(dir.path()).expect("opens despite the unfinished snapshot");
    assert_eq!(counter(&e, &k), 42);
    assert!(!objects.join("snap.FFFFFFFFFFFFFFF0.generating").exists());
}
