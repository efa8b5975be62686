//! The commands the README shows, run as written: every `sh` block of
//! README.md in a scratch directory with the freshly built `meridian` on
//! the PATH (background `&` lines keep running; other lines are retried
//! until they succeed, as a person would while the nodes start), then the
//! client's quickstart example against the same cluster, and quick runs of
//! `meridian bench`'s scenarios.
//!
//! Address: the README's defaults (127.0.0.1, ports 7100–7108).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian::process::meridian_bin;

/// How long one README command may keep failing while nodes start.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// Shell lines of every ```sh block in README.md.
fn readme_blocks() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(b), l) if !l.is_empty() => b.push(l.to_string()),
            _ => {}
        }
    }
    assert!(current.is_none(), "unterminated ```sh block in README.md");
    blocks
}

/// Background processes started by the script; SIGTERMed (clean shutdown)
/// and reaped on drop.
struct Background(Vec<Child>);

impl Drop for Background {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &mut self.0 {
            while Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn shell(line: &str, dir: &Path, path: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(line).current_dir(dir).env("PATH", path);
    c
}

#[test]
fn readme_commands_work_as_written() {
    let bin = meridian_bin();
    let bin_dir = bin.parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut background = Background(Vec::new());
    let mut outputs: Vec<(String, String)> = Vec::new();
    let blocks = readme_blocks();
    assert!(!blocks.is_empty(), "README.md shows no sh commands");
    for block in &blocks {
        for line in block {
            if let Some(cmd) = line.strip_suffix('&') {
                // `exec`: the signal on drop must reach `meridian`, not a shell.
                let child = shell(&format!("exec {}", cmd.trim()), dir.path(), &path)
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("starting {cmd}: {e}"));
                background.0.push(child);
                continue;
            }
            let started = Instant::now();
            loop {
                let out = shell(line, dir.path(), &path).output().unwrap();
                if out.status.success() {
                    outputs.push((line.clone(), String::from_utf8_lossy(&out.stdout).into()));
                    break;
                }
                assert!(
                    started.elapsed() < RETRY_FOR,
                    "README command kept failing: {line}\nstatus {:?}\nstdout {}\nstderr {}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
    let output_of = |needle: &str| -> &str {
        &outputs
            .iter()
            .find(|(l, _)| l.contains(needle))
            .unwrap_or_else(|| panic!("no README command contains {needle:?}"))
            .1
    };
    assert!(output_of("status").contains("ap-south-1"));
    assert_eq!(output_of("count likes").trim(), "5");
    assert!(output_of("sadd cart").contains(r#""value":["apple","pear"]"#));
    assert!(output_of("smembers cart").contains("apple"));
    // `all` joins every replica: the increment made on another node adds
    // to the set value whether or not that node had seen it (an increment
    // concurrent with a set applies on top of it).
    let hgetall = output_of("hgetall user:1");
    assert!(hgetall.contains(r#""name":"ada""#), "{hgetall}");
    assert!(hgetall.contains(r#""visits":"3""#), "{hgetall}");
    // The second `init` lays a cluster across machines: configs only.
    let across = std::fs::read_to_string(dir.path().join("cluster2/eu-west-1.toml")).unwrap();
    assert!(across.contains("10.0.2.5"), "{across}");

    // The client's runnable example, against the same cluster.
    let example = examples_dir().join("quickstart");
    if example.exists() {
        let out = Command::new(&example)
            .arg(dir.path().join("cluster/client.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "quickstart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("connected to"));
    } else {
        eprintln!(
            "note: {} not built (cargo test --workspace builds it); skipping the example",
            example.display()
        );
    }
    drop(background);
}

fn examples_dir() -> PathBuf {
    meridian_bin().parent().unwrap().join("examples")
}

/// `meridian bench` and its scenarios run end to end (tiny durations; the
/// figures themselves belong to benches/README.md, never to assertions).
#[test]
fn bench_scenarios_run() {
    let bin = meridian_bin();
    let runs: [&[&str]; 4] = [
        &[
            "bench",
            "--target",
            "local:1",
            "--clients",
            "1,4",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--quiet",
        ],
        &[
            "bench",
            "convergence",
            "--delays",
            "0,5",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--rate",
            "50",
        ],
        &[
            "bench",
            "--target",
            "local:3",
            "--levels",
            "quorum,all",
            "--clients",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--quiet",
        ],
        &[
            "bench",
            "geo",
            "--rounds",
            "1",
            "--clients",
            "1",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--rate",
            "10",
        ],
    ];
    for args in runs {
        let out = Command::new(&bin).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "meridian {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.stdout.is_empty(),
            "meridian {} printed nothing",
            args.join(" ")
        );
    }
}
