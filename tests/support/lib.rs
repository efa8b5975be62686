//! Shared support for Meridian's end-to-end tests (and benchmarks): real
//! clusters on loopback addresses, in-process or as `meridian` processes.
//!
//! * [`cluster`]: a cluster directory written by `meridian init` (the
//!   library function), with placement rules, durability and debug switches
//!   edited into every node's config.
//! * [`inproc`]: nodes started in this process ([`meridian_server::node::Node`])
//!   on real sockets: link cuts, per-node protocol timers, a tap on every
//!   frame a node receives from its peers.
//! * [`process`]: nodes as real `meridian serve` processes, for what only a
//!   process can show (SIGKILL, exit codes). Every child is SIGKILLed when
//!   its handle drops, so a panicking test leaves no process behind.
//! * [`objects`]: the three object types as test values, read through a
//!   client or straight from a node's engine.
//! * [`metrics`]: a node's Prometheus endpoint, scraped and parsed.
//! * [`raw`]: a client-protocol connection made with quinn directly, to send
//!   frames the real client would refuse to send.
//!
//! # Addresses
//! Each test owns one address block, `127.31.<block>.0/24` (node `i` on
//! `127.31.<block>.<i+1>`), so tests run in parallel without sharing ports.
//! Blocks in use: see the top of each test file.
//!
//! # Time
//! Tests assert behaviour, never timing: convergence is polled
//! ([`eventually`]) within generous bounds ([`CONVERGE`]) that only matter
//! when something is broken.
//!
//! # Debugging
//! `MERIDIAN_TEST_LOG=debug` (an `EnvFilter`) prints in-process nodes' logs;
//! process nodes always log to `<cluster dir>/<node>.log`. A failing test
//! keeps its cluster directory and prints where it is;
//! `MERIDIAN_TEST_KEEP=1` keeps it always.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

pub mod cluster;
pub mod inproc;
pub mod metrics;
pub mod objects;
pub mod process;
pub mod raw;
pub mod resp;

pub use cluster::{Spec, TestClusterFiles};
pub use inproc::InProcessCluster;
pub use objects::{Obj, Val};
pub use process::{NodeProcess, ProcessCluster};

/// How long the tests wait for anything that must happen "eventually"
/// (convergence, failure detection, a restarted node serving). Far above
/// what a healthy cluster needs (well under a second on loopback) so a
/// loaded 2-core CI machine never trips it; only a bug does.
pub const CONVERGE: Duration = Duration::from_secs(30);

/// Pause between two polls of an [`eventually`] condition.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `check` until it returns `Ok`, at most for `limit` (each attempt is
/// itself cut off at the remaining time); panics with `what` and the last
/// error otherwise.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut attempts = 0u32;
    let mut last = String::from("never checked");
    while start.elapsed() < limit {
        attempts += 1;
        let remaining = limit.saturating_sub(start.elapsed()).max(POLL);
        match tokio::time::timeout(remaining, check()).await {
            Ok(Ok(v)) => return v,
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("the check itself did not finish within {remaining:?}"),
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("{what}: still not true after {limit:?} ({attempts} attempts); last: {last}");
}

/// Installs a log subscriber if `MERIDIAN_TEST_LOG` is set (an `EnvFilter`
/// such as `debug` or `meridian_replication=debug`). Idempotent.
pub fn init_logging() {
    if let Ok(filter) = std::env::var("MERIDIAN_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A counter's value as `client`'s node holds it (a `local` read).
pub async fn local_count(client: &meridian_client::Client, key: &str) -> anyhow::Result<i64> {
    Ok(client
        .counter(key)
        .read()
        .consistency(meridian_client::Consistency::Local)
        .await?
        .value)
}

/// 32 random bytes: a pattern that occurs nowhere by accident, to look for
/// in frames and files.
pub fn marker() -> Vec<u8> {
    (0..32).map(|_| rand::random::<u8>()).collect()
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The files under `dir` (recursively) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> std::io::Result<Vec<std::path::PathBuf>> {
    /// Directory depth searched; the data directory is two levels deep.
    const MAX_DEPTH: usize = 8;
    fn walk(
        dir: &Path,
        needle: &[u8],
        depth: usize,
        out: &mut Vec<std::path::PathBuf>,
    ) -> std::io::Result<()> {
        if depth > MAX_DEPTH {
            return Ok(());
        }
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(&path, needle, depth + 1, out)?;
            } else if kind.is_file() && contains(&std::fs::read(&path)?, needle) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, needle, 0, &mut out)?;
    Ok(out)
}
