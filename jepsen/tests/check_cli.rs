//! End-to-end: a synthetic run (the in-memory reference store) through
//! `meridian-jepsen check`, its report files, verdicts and exit codes.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use meridian_jepsen::checker::faults::Family;
use meridian_jepsen::db::{MemoryBugs, MemoryDb};
use meridian_jepsen::history::{History, Recorder};
use meridian_jepsen::nemesis::ProcessControl;
use meridian_jepsen::runner::{RunConfig, run};

fn synthetic_history(bugs: MemoryBugs) -> History {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = RunConfig::new(vec!["n1".into(), "n2".into(), "n3".into()]);
    cfg.time_limit = Duration::from_millis(1200);
    cfg.rate = 300.0;
    cfg.concurrency = 5;
    cfg.seed = 5;
    cfg.quiescence = Duration::ZERO;
    cfg.convergence_limit = Duration::from_secs(2);
    cfg.families = [Family::Clock].into(); // MemoryDb has clock control
    cfg.interval = Duration::from_millis(200);
    let out = rt
        .block_on(run(
            Arc::new(MemoryDb::new(bugs)),
            None,
            None::<Arc<dyn ProcessControl>>,
            cfg,
            Arc::new(Recorder::new(Instant::now())),
            indicatif::ProgressBar::hidden(),
            Arc::new(AtomicBool::new(false)),
        ))
        .unwrap();
    out.history
}

fn check(history: &Path, report: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian-jepsen"))
        .args(["check", "--history"])
        .arg(history)
        .arg("--report")
        .arg(report)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_command_reports_valid_invalid_and_unknown() {
    let dir = tempfile::tempdir().unwrap();

    // A correct store: valid, exit 0, every artifact written.
    let good = synthetic_history(MemoryBugs::default());
    let gp = dir.path().join("good.jsonl");
    good.write_jsonl(&gp).unwrap();
    let (code, stdout) = check(&gp, &dir.path().join("good"));
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("Everything looks good! ヽ(‘ー`)ノ"),
        "{stdout}"
    );
    for f in [
        "history.jsonl",
        "history.txt",
        "results.json",
        "timeline.html",
        "latency-raw.png",
        "latency-quantiles.png",
        "rate.png",
        "clock-skew.png",
    ] {
        assert!(dir.path().join("good").join(f).is_file(), "{f}");
    }

    // A store that acknowledges and drops adds: invalid, exit 1.
    let bad = synthetic_history(MemoryBugs {
        drop_every_nth_counter_add: Some(3),
        drop_every_nth_set_add: Some(3),
        ..MemoryBugs::default()
    });
    let bp = dir.path().join("bad.jsonl");
    bad.write_jsonl(&bp).unwrap();
    let (code, stdout) = check(&bp, &dir.path().join("bad"));
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("Analysis invalid! (ﾉಥ益ಥ）ﾉ ┻━┻"),
        "{stdout}"
    );
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("bad/results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(results["valid"], serde_json::json!(false));

    // The correct history without its final reads: unknown, exit 2.
    let cut = History::new(good.ops.iter().filter(|o| !o.is_final).cloned().collect()).unwrap();
    let up = dir.path().join("unknown.jsonl");
    cut.write_jsonl(&up).unwrap();
    let (code, stdout) = check(&up, &dir.path().join("unknown"));
    assert_eq!(code, 2, "{stdout}");
    assert!(stdout.contains("Errors occurred during analysis, but no anomalies found. ಠ~ಠ"));
}

#[test]
fn bad_arguments_exit_254() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_meridian-jepsen"))
            .args(args)
            .output()
            .unwrap()
            .status
            .code()
            .unwrap()
    };
    assert_eq!(run(&["test", "--nodes", "4", "--meridian", "/bin/sh"]), 254);
    assert_eq!(
        run(&["test", "--workload", "queue", "--meridian", "/bin/sh"]),
        254
    );
    assert_eq!(run(&["check"]), 254);
    assert_eq!(
        run(&["check", "--history", "/nonexistent/history.jsonl"]),
        254
    );
}
