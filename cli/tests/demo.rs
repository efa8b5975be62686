//! `meridian demo --quick`, run as the real binary: it must finish with
//! every expectation met, show the tour's key observations, and leave no
//! cluster directory behind.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on the whole quick tour (it takes ~15 s in a debug build; the
/// margin is for a loaded machine).
const DEMO_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `meridian demo` with `args`, killing it past [`DEMO_TIMEOUT`];
/// returns (exit code, stdout, stderr).
fn demo(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("demo")
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meridian demo");
    let started = Instant::now();
    while child.try_wait().expect("wait for the demo").is_none() {
        if started.elapsed() > DEMO_TIMEOUT {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect the demo's output");
            panic!(
                "the demo ran longer than {DEMO_TIMEOUT:?}; stdout so far:\n{}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("collect the demo's output");
    (
        output.status.code(),
        String::from_utf8(output.stdout).expect("utf-8 stdout"),
        String::from_utf8(output.stderr).expect("utf-8 stderr"),
    )
}

/// The line of `out` containing `needle`, or a panic showing all of `out`.
fn line_with<'a>(out: &'a str, needle: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in the demo's output:\n{out}"))
}

/// The tour's expectations about latency (by their opening words).
const TIMING_EXPECTATIONS: [&str; 5] = [
    "single writes arrive about one injected delay",
    "local requests stay off the WAN",
    "leader requests cost one round trip",
    "quorum requests wait for the nearest majority",
    "all requests wait for the farthest replica",
];

#[test]
fn quick_demo_computes_every_expectation() {
    let (code, out, err) = demo(&["--quick", "--seed", "7"]);
    // Every expectation is computed and reported. Those about latency
    // depend on how loaded this machine is (latency figures belong to
    // `meridian bench geo`), so they may come out either way here; every
    // other expectation is about what the cluster did and must hold. The
    // exit code says whether all of them held.
    let verdicts: Vec<(&str, bool)> = out
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            l.strip_prefix("[PASS] ")
                .map(|w| (w, true))
                .or_else(|| l.strip_prefix("[FAIL] ").map(|w| (w, false)))
        })
        .collect();
    assert_eq!(verdicts.len(), 18, "18 expectations in:\n{out}");
    let timing = |what: &str| {
        TIMING_EXPECTATIONS
            .iter()
            .any(|prefix| what.starts_with(prefix))
    };
    assert_eq!(
        verdicts.iter().filter(|(w, _)| timing(w)).count(),
        TIMING_EXPECTATIONS.len(),
        "{out}"
    );
    for (what, passed) in &verdicts {
        if !passed && timing(what) {
            eprintln!("note: a latency expectation did not hold on this machine: {what}");
        }
        assert!(*passed || timing(what), "failed: {what}\n{out}");
    }
    let all_held = verdicts.iter().all(|(_, passed)| *passed);
    assert_eq!(
        code,
        Some(i32::from(!all_held)),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    if all_held {
        assert!(out.contains("All 18 expectations held."), "{out}");
    }
    assert!(out.contains("Seed: 7 "), "{out}");
    assert!(out.contains("Durability: sync"), "{out}");

    // 1. Converged totals, and convergence timed next to the delay.
    line_with(&out, "[PASS] converged: all three regions read likes = ");
    for (from, to, delay) in [
        ("us-east", "eu-west", "40 ms"),
        ("us-east", "ap-south", "100 ms"),
        ("ap-south", "eu-west", "70 ms"),
    ] {
        let line = line_with(&out, &format!("  {from:<9} {to:<9}"));
        assert!(line.contains(delay), "{line}");
    }

    // 2. The latency tables (writes, reads): a column per level, a row per
    // region, each cell "p50 / p99".
    for caption in [
        "Writes (counter increment), milliseconds, p50 / p99",
        "Reads, milliseconds",
    ] {
        let lines: Vec<&str> = out.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains(caption))
            .unwrap_or_else(|| panic!("no {caption:?} table in:\n{out}"));
        let header: Vec<&str> = lines[at + 1].split_whitespace().collect();
        assert_eq!(
            header,
            ["from", "local", "leader", "quorum", "all"],
            "{out}"
        );
        for (row, region) in lines[at + 2..at + 5]
            .iter()
            .zip(["us-east", "eu-west", "ap-south"])
        {
            assert!(row.trim_start().starts_with(region), "{row}");
            assert_eq!(row.matches(" / ").count(), 4, "{row}");
        }
    }
    for region in ["us-east", "eu-west", "ap-south"] {
        let waits = format!("quorum from {region} waits for the nearest majority");
        line_with(&out, &waits);
    }
    line_with(&out, "(ap-south + eu-west, RTT ≈ 140 ms)");
    line_with(&out, "[PASS] quorum requests wait for the nearest majority");

    // 3. Add wins; the larger HLC timestamp wins.
    line_with(&out, "[PASS] add wins: apple");
    let lww = line_with(&out, "[PASS] last writer wins: every region reads");
    assert!(lww.contains("LWW winner: "), "{lww}");

    // 4. The partition: Unavailable for quorum in ap-south, then heal.
    let unavailable = line_with(
        &out,
        "ap-south: a `quorum` increment fails at once: Unavailable",
    );
    assert!(
        unavailable.contains("needed 2 replicas, 1 reachable"),
        "{unavailable}"
    );
    assert!(unavailable.contains("definite"), "{unavailable}");
    line_with(&out, "[PASS] local writes in ap-south keep succeeding");
    line_with(
        &out,
        "[PASS] converged after heal: every region reads visits = ",
    );
    line_with(&out, "no acknowledged write was lost");

    // 5. The summary, and the way to keep a cluster.
    line_with(&out, "== 5. Summary ==");
    line_with(&out, "meridian demo --serve");

    // Cleaned up: the temporary cluster directory is gone.
    let removed = line_with(&out, "Stopped the cluster and removed ");
    let dir = removed
        .trim_start_matches("Stopped the cluster and removed ")
        .trim_end_matches('.');
    assert!(!PathBuf::from(dir).exists(), "{dir} still exists");
    // Only warnings or worse may reach stderr; a healthy tour logs none
    // (a failed one ends with its `error:` line).
    if all_held {
        assert!(err.trim().is_empty(), "stderr:\n{err}");
    }
}

#[test]
fn a_dir_in_use_is_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let init = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["init", "--regions", "us-east,eu-west,ap-south", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(init.status.success());
    let (code, out, err) = demo(&["--quick", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("already holds a cluster"), "{err}");
    // Nothing of the user's cluster was touched.
    assert!(dir.join("client.toml").exists());

    // Nor is any other non-empty directory used.
    let other = tmp.path().join("notes");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("todo.txt"), "keep me").unwrap();
    let (code, _, err) = demo(&["--quick", "--dir", other.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
}
