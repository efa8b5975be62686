//! `meridian cli`'s exit codes, from the real binary against a real
//! cluster (cli/src/request.rs module docs; README "The command line":
//! "Exit codes: 0 success, 2 definite failure (no effect), 3 indeterminate
//! (it may have taken effect), 1 usage or local errors"; docs/architecture.md
//! section 7 "Errors are honest").
//!
//! Also `scan` and `smembers --paged` through the binary (their output
//! shapes, cursors, and a malformed cursor as a usage error), and the
//! expiry commands (`set --ex`, `expire`, `ttl`, `persist`).
//!
//! Address blocks (`127.31.<block>.x`): 84, 85, 86.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use meridian_cli::cluster::{ClusterFiles, NodeSet, Ports, Spec, Workdir};
use meridian_replication::mesh::Link;
use meridian_server::node::ServeOptions;
use serde_json::Value;

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const AP: &str = "ap-south-1";

/// Bound on one `meridian cli` run (a request's own timeout is at most a
/// few seconds here; connecting to a node that is down takes 2 s).
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Bound on anything that must happen eventually (replication, links).
const CONVERGE: Duration = Duration::from_secs(30);

/// us-east-1's one-way delay towards the other regions in the
/// indeterminate case: far longer than the request's timeout, so the
/// other replicas' acknowledgements cannot arrive in time.
const DELAY_MS: u64 = 3_000;

/// What one `meridian cli` run left.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The one JSON object `--json` prints.
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {self:?}"))
    }
}

/// Runs `meridian cli ARGS...` (the binary cargo built for this package).
async fn cli(args: &[&str]) -> Result<Run> {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("cli")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(RUN_LIMIT, child)
        .await
        .with_context(|| format!("meridian cli {args:?} still running after {RUN_LIMIT:?}"))??;
    Ok(Run {
        code: out.status.code().context("killed by a signal")?,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `meridian cli --config <client.toml> --node NODE ARGS...`.
async fn cli_at(config: &Path, node: &str, args: &[&str]) -> Result<Run> {
    let config = config.to_string_lossy().into_owned();
    let mut all = vec!["--config", config.as_str(), "--node", node];
    all.extend_from_slice(args);
    cli(&all).await
}

/// A counter's value read on `node` at `local`, through the binary.
async fn local_count(config: &Path, node: &str, key: &str) -> Result<i64> {
    let run = cli_at(
        config,
        node,
        &["--consistency", "local", "--json", "count", key],
    )
    .await?;
    if run.code != 0 {
        bail!("reading {key} on {node}: {run:?}");
    }
    run.json()["value"].as_i64().context("a counter value")
}

async fn eventually_count(config: &Path, node: &str, key: &str, want: i64) -> Result<()> {
    let start = Instant::now();
    loop {
        let got = local_count(config, node, key).await;
        match got {
            Ok(n) if n == want => return Ok(()),
            _ if start.elapsed() > CONVERGE => {
                bail!("{key} on {node}: {got:?} after {CONVERGE:?}, expected {want}")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Three regions; ap-south-1 is never started (N = 3, Q = 2: `quorum`
/// works, `all` cannot). Through the real binary:
/// * 0: a `quorum` write;
/// * 2 (definite, no effect): an `all` write (`Unavailable`), and a request
///   to a node that is down (`connect`); the counter is unchanged on every
///   replica afterwards;
/// * 3 (indeterminate): a `quorum` write whose other replica's
///   acknowledgement cannot arrive before `--timeout-ms` (us-east-1's link
///   delayed 3 s): it fails with `timeout`, `definite: false`, and it did
///   take effect (it reaches eu-west-1 later);
/// * 1: usage errors (an unknown level, a missing argument, an unknown
///   command, a malformed number) and an unreadable config.
///
/// What would make this fail: a definite failure reported as 3 (callers
/// would re-read instead of retrying safely) or an indeterminate one as 2
/// (callers would retry a write that took effect: a counter counted twice),
/// usage errors sharing code 2 with definite failures (clap's default), or
/// the JSON's `definite` disagreeing with the exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exit_codes_say_whether_a_failed_request_may_have_taken_effect() -> Result<()> {
    let hosts = (1..=3).map(|i| format!("127.31.84.{i}")).collect();
    let spec = Spec::new(["us-east", "eu-west", "ap-south"]).ports(Ports::Hosts {
        hosts,
        base_port: 17_100,
    });
    let files = ClusterFiles::create(Workdir::temporary("meridian-exit-codes")?, &spec)?;
    let config = files.client_config_path();
    let mut nodes = NodeSet::new(&files, |_| ServeOptions::default());
    nodes.start(US).await?;
    nodes.start(EU).await?;
    nodes.wait_connected(CONVERGE).await?;

    // 0: success.
    let ok = cli_at(
        &config,
        US,
        &["--consistency", "quorum", "--json", "incr", "k"],
    )
    .await?;
    assert_eq!(ok.code, 0, "{ok:?}");
    assert_eq!(ok.json()["ok"], true, "{ok:?}");
    assert_eq!(ok.json()["value"], 1, "{ok:?}");

    // replicas-N (any spelling the docs list) with N replicas up: 0, and
    // the reply names the level in its canonical form. replicas-3 with one
    // of three down: 2, definite.
    for level in ["replicas-2", "replicas(2)", "replicas:2"] {
        let two = cli_at(
            &config,
            US,
            &["--consistency", level, "--json", "incr", "r"],
        )
        .await?;
        assert_eq!(two.code, 0, "{level}: {two:?}");
        assert_eq!(two.json()["consistency"], "replicas-2", "{two:?}");
    }
    let three = cli_at(
        &config,
        US,
        &["--consistency", "replicas-3", "--json", "incr", "r"],
    )
    .await?;
    assert_eq!(three.code, 2, "{three:?}");
    assert_eq!(three.json()["error"], "unavailable", "{three:?}");
    assert_eq!(local_count(&config, US, "r").await?, 3);

    // 2: `all` with a replica down is refused before anything happens.
    let all = cli_at(
        &config,
        US,
        &["--consistency", "all", "--json", "incr", "k"],
    )
    .await?;
    assert_eq!(all.code, 2, "{all:?}");
    assert_eq!(all.json()["ok"], false, "{all:?}");
    assert_eq!(all.json()["error"], "unavailable", "{all:?}");
    assert_eq!(all.json()["definite"], true, "{all:?}");
    // The same without --json: the code does not depend on the output format.
    let all = cli_at(&config, US, &["--consistency", "all", "incr", "k"]).await?;
    assert_eq!(all.code, 2, "{all:?}");
    assert!(all.stderr.contains("error"), "{all:?}");
    // 2: the named node is down: nothing was sent.
    let down = cli_at(&config, AP, &["--json", "incr", "k"]).await?;
    assert_eq!(down.code, 2, "{down:?}");
    assert_eq!(down.json()["definite"], true, "{down:?}");
    // No effect anywhere.
    for node in [US, EU] {
        assert_eq!(local_count(&config, node, "k").await?, 1, "{node}");
    }

    // 3: applied on us-east-1, but eu-west-1's durable ack cannot come back
    // within the timeout.
    let delayed = Link {
        delay_ms: DELAY_MS,
        cut: false,
    };
    nodes.node(US).set_link("eu-west", delayed);
    nodes.node(US).set_link("ap-south", delayed);
    let slow = cli_at(
        &config,
        US,
        &[
            "--consistency",
            "quorum",
            "--timeout-ms",
            "500",
            "--json",
            "incr",
            "k",
        ],
    )
    .await?;
    assert_eq!(slow.code, 3, "{slow:?}");
    assert_eq!(slow.json()["ok"], false, "{slow:?}");
    assert_eq!(slow.json()["error"], "timeout", "{slow:?}");
    assert_eq!(slow.json()["definite"], false, "{slow:?}");
    // It had taken effect: applied on us-east-1, and eu-west-1 gets it once
    // the delayed link delivers.
    assert_eq!(local_count(&config, US, "k").await?, 2);
    eventually_count(&config, EU, "k", 2).await?;
    nodes.node(US).set_link("eu-west", Link::default());
    nodes.node(US).set_link("ap-south", Link::default());

    // 1: usage and local errors, before any request is sent.
    for args in [
        vec!["--consistency", "bogus", "incr", "k"],
        vec!["--consistency", "replicas-0", "incr", "k"],
        vec!["--consistency", "replicas(2", "incr", "k"],
        vec!["incr"],
        vec!["frobnicate", "k"],
        vec!["incr", "k", "not-a-number"],
        vec!["--timeout-ms", "soon", "count", "k"],
    ] {
        let run = cli_at(&config, US, &args).await?;
        assert_eq!(run.code, 1, "meridian cli {args:?}: {run:?}");
        assert!(!run.stderr.is_empty(), "meridian cli {args:?}: no message");
    }
    let missing = files.path().join("no-such-dir/client.toml");
    let missing = missing.to_string_lossy();
    let run = cli(&["--config", &missing, "count", "k"]).await?;
    assert_eq!(run.code, 1, "{run:?}");
    let run = cli(&["--config", &missing, "--json", "count", "k"]).await?;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["error"], "config", "{run:?}");
    // Nothing above changed the counter.
    assert_eq!(local_count(&config, US, "k").await?, 2);

    nodes.shutdown().await
}

/// `meridian cli scan` pages with `--cursor` until the cursor is null and
/// lists every key once with its type; `--all` walks the pages itself;
/// `smembers --paged` prints what `smembers` prints; a malformed cursor is
/// a usage error (1).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scan_and_paged_smembers_through_the_binary() -> Result<()> {
    let spec = Spec::new(["us-east"]).ports(Ports::Hosts {
        hosts: vec!["127.31.85.1".into()],
        base_port: 17_100,
    });
    let files = ClusterFiles::create(Workdir::temporary("meridian-cli-scan")?, &spec)?;
    let config = files.client_config_path();
    let mut nodes = NodeSet::new(&files, |_| ServeOptions::default());
    nodes.start(US).await?;
    for i in 0..5 {
        let key = format!("k{i}");
        let run = cli_at(&config, US, &["put", &key, "v"]).await?;
        assert_eq!(run.code, 0, "{run:?}");
    }
    let run = cli_at(&config, US, &["sadd", "s", "c", "a", "b"]).await?;
    assert_eq!(run.code, 0, "{run:?}");

    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["--json", "scan", "--count", "2"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let run = cli_at(&config, US, &args).await?;
        assert_eq!(run.code, 0, "{run:?}");
        let value = &run.json()["value"];
        let keys = value["keys"].as_array().context("keys")?;
        assert!(keys.len() <= 2, "{run:?}");
        for k in keys {
            listed.push(format!(
                "{} {}",
                k["type"].as_str().unwrap(),
                k["key"].as_str().unwrap()
            ));
        }
        pages += 1;
        match value["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert!(pages >= 3, "{pages} pages");
    listed.sort();
    let mut expected: Vec<String> = (0..5).map(|i| format!("register k{i}")).collect();
    expected.push("set s".into());
    assert_eq!(listed, expected);

    let all = cli_at(
        &config,
        US,
        &["--json", "scan", "--all", "--count", "1", "k"],
    )
    .await?;
    assert_eq!(all.code, 0, "{all:?}");
    assert_eq!(all.json()["value"]["cursor"], Value::Null, "{all:?}");
    assert_eq!(
        all.json()["value"]["keys"].as_array().map(Vec::len),
        Some(5)
    );
    let text = cli_at(&config, US, &["scan", "--all", "s"]).await?;
    assert_eq!(text.stdout.trim(), "set s", "{text:?}");

    let whole = cli_at(&config, US, &["--json", "smembers", "s"]).await?;
    let paged = cli_at(&config, US, &["--json", "smembers", "--paged", "s"]).await?;
    assert_eq!(paged.code, 0, "{paged:?}");
    assert_eq!(paged.json()["value"], whole.json()["value"]);
    assert_eq!(paged.json()["value"], serde_json::json!(["a", "b", "c"]));

    let bad = cli_at(&config, US, &["scan", "--cursor", "xyz"]).await?;
    assert_eq!(bad.code, 1, "{bad:?}");
    nodes.shutdown().await
}

/// `set KEY VALUE --ex S` (alias of `put`), `ttl`, `persist`, `expire`
/// through the binary: the JSON shapes the docs give, the TTL counted by
/// the node, conflicting TTL options a usage error (1).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_commands_through_the_binary() -> Result<()> {
    let spec = Spec::new(["us-east"]).ports(Ports::Hosts {
        hosts: vec!["127.31.86.1".into()],
        base_port: 17_100,
    });
    let files = ClusterFiles::create(Workdir::temporary("meridian-cli-expiry")?, &spec)?;
    let config = files.client_config_path();
    let mut nodes = NodeSet::new(&files, |_| ServeOptions::default());
    nodes.start(US).await?;
    let set = cli_at(&config, US, &["--json", "set", "k", "v", "--ex", "100"]).await?;
    assert_eq!(set.code, 0, "{set:?}");
    assert_eq!(set.json()["value"], "v", "{set:?}");
    let ttl = cli_at(&config, US, &["--json", "ttl", "k"]).await?;
    assert_eq!(ttl.code, 0, "{ttl:?}");
    let value = &ttl.json()["value"];
    assert_eq!(value["exists"], true, "{ttl:?}");
    let ms = value["ttl_ms"].as_u64().context("ttl_ms")?;
    assert!(ms > 90_000 && ms <= 100_000, "{ttl:?}");
    assert!(value["deadline_ms"].as_u64().is_some(), "{ttl:?}");
    let persist = cli_at(&config, US, &["--json", "persist", "k"]).await?;
    assert_eq!(
        persist.json()["value"]["ttl_ms"],
        Value::Null,
        "{persist:?}"
    );
    let text = cli_at(&config, US, &["ttl", "k"]).await?;
    assert_eq!(text.stdout.trim(), "(no ttl)", "{text:?}");
    // Another kind, by --kind; expiring now leaves it absent.
    assert_eq!(cli_at(&config, US, &["sadd", "s", "m"]).await?.code, 0);
    let expired = cli_at(
        &config,
        US,
        &["--json", "expire", "s", "0", "--kind", "set"],
    )
    .await?;
    assert_eq!(expired.code, 0, "{expired:?}");
    assert_eq!(expired.json()["value"]["exists"], false, "{expired:?}");
    let members = cli_at(&config, US, &["--json", "smembers", "s"]).await?;
    assert_eq!(
        members.json()["value"],
        serde_json::json!([]),
        "{members:?}"
    );
    let gone = cli_at(&config, US, &["ttl", "s", "--kind", "set"]).await?;
    assert_eq!(gone.stdout.trim(), "(absent)", "{gone:?}");
    let both = cli_at(&config, US, &["put", "k", "v", "--ex", "1", "--keepttl"]).await?;
    assert_eq!(both.code, 1, "{both:?}");
    nodes.shutdown().await
}
