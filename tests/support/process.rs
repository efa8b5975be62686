//! Nodes as real `meridian serve` processes.
//!
//! The binary is the one `cargo test --workspace` builds next to the test
//! executables (`target/<profile>/meridian`), or `$MERIDIAN_BIN`. A
//! process's stderr (its log) is appended to `<cluster dir>/<node>.log`.
//! Every child is SIGKILLed and reaped when its [`NodeProcess`] drops, so a
//! panicking test leaves nothing running; only processes this module
//! started are ever signalled, by PID.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use meridian_client::Client;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cluster::{Spec, TestClusterFiles};
use crate::{CONVERGE, eventually};

/// How long a node gets to exit after SIGTERM before it is SIGKILLed
/// (shutdown drains for at most 5 s and waits at most 2 s twice).
const TERM_GRACE: Duration = Duration::from_secs(15);

/// How long a `meridian` command expected to exit by itself may run.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// The `meridian` binary to run.
///
/// `$MERIDIAN_BIN` if set; else `meridian` in the directory above this
/// test executable (`target/debug/deps/..`), which `cargo test --workspace`
/// builds. Panics with instructions if it is missing or was built from
/// older sources than this test (it would test old code).
pub fn meridian_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MERIDIAN_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable's directory");
    let profile = deps.parent().expect("the target profile directory");
    let bin = profile.join("meridian");
    let built = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(bin_time) = built(&bin) else {
        panic!(
            "{} does not exist: build it with `cargo build -p meridian-cli` \
             (`cargo test --workspace` does), or set MERIDIAN_BIN",
            bin.display()
        );
    };
    // Cargo's dep-info lists every source file the binary was built from.
    // Stale means: this test was built from a newer version of one of them
    // (a source edited after both were built makes neither one stale).
    let exe_time = built(&exe).expect("the test executable's mtime");
    let dep_info = std::fs::read_to_string(profile.join("meridian.d")).unwrap_or_default();
    let sources = dep_info
        .split_once(": ")
        .map(|(_, deps)| {
            deps.split_whitespace()
                .map(PathBuf::from)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if let Some(newer) = sources
        .iter()
        .find(|source| built(source).is_some_and(|t| t > bin_time && t <= exe_time))
    {
        panic!(
            "{} was built before {} changed, this test after: rebuild it with \
             `cargo build -p meridian-cli` (`cargo test --workspace` does), \
             or set MERIDIAN_BIN",
            bin.display(),
            newer.display()
        );
    }
    bin
}

/// Runs `meridian args...` to completion (bounded) and returns its output.
pub fn run_meridian(args: &[&str]) -> Result<Output> {
    let mut child = Command::new(meridian_bin())
        .args(args)
        // What a user sees: the default log filter.
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running meridian")?;
    let deadline = Instant::now() + COMMAND_LIMIT;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output()?;
            bail!(
                "meridian {args:?} still running after {COMMAND_LIMIT:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One node as a `meridian serve` process.
#[derive(Debug)]
pub struct NodeProcess {
    pub name: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    /// A handle for `name` of `dir`; not started.
    pub fn new(dir: &TestClusterFiles, name: &str) -> NodeProcess {
        NodeProcess {
            name: name.to_owned(),
            config: dir.config_path(name),
            log: dir.path().join(format!("{name}.log")),
            child: None,
        }
    }

    /// Starts `meridian serve --config <node>.toml`.
    pub fn start(&mut self) -> Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(meridian_bin())
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("MERIDIAN_TEST_PROCESS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process was started and has not exited.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL: the process dies at once, mid-write if it was writing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for a clean exit; SIGKILL past that.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).context("SIGTERM")?;
        let deadline = Instant::now() + TERM_GRACE;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not exit within {TERM_GRACE:?} of SIGTERM",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of `meridian serve` processes.
#[derive(Debug)]
pub struct ProcessCluster {
    /// Declared first so the processes die before the directory goes.
    pub nodes: Vec<NodeProcess>,
    pub dir: TestClusterFiles,
}

impl ProcessCluster {
    /// Creates `spec`'s cluster directory; starts nothing.
    pub fn create(spec: Spec) -> Result<ProcessCluster> {
        let dir = TestClusterFiles::create(spec)?;
        let nodes = dir
            .names()
            .iter()
            .map(|n| NodeProcess::new(&dir, n))
            .collect();
        Ok(ProcessCluster { nodes, dir })
    }

    pub fn process(&mut self, name: &str) -> &mut NodeProcess {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in this cluster"))
    }

    /// Starts every node that is not running.
    pub fn start_all(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            if !node.is_running() {
                node.child = None;
                node.start()?;
            }
        }
        Ok(())
    }

    /// Waits until `name` serves clients and sees each of `peers`
    /// connected; returns a client pinned to it.
    pub async fn wait_serving(&self, name: &str, peers: &[&str]) -> Client {
        let what = format!("{name} serving with {peers:?} connected");
        eventually(&what, CONVERGE, || async {
            let client = self.dir.client(name).await.map_err(|e| format!("{e:#}"))?;
            let status = client.status().await.map_err(|e| e.to_string())?;
            for peer in peers {
                if !status.peers.iter().any(|p| p.node == *peer && p.connected) {
                    return Err(format!(
                        "{name} does not see {peer} connected: {:?}",
                        status.peers
                    ));
                }
            }
            Ok(client)
        })
        .await
    }

    /// Waits until every running node sees every other running node;
    /// returns a pinned client per running node.
    pub async fn wait_all_serving(&mut self) -> Vec<(String, Client)> {
        let running: Vec<String> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then(|| n.name.clone()))
            .collect();
        let mut out = Vec::new();
        for name in &running {
            let peers: Vec<&str> = running
                .iter()
                .filter(|p| *p != name)
                .map(String::as_str)
                .collect();
            out.push((name.clone(), self.wait_serving(name, &peers).await));
        }
        out
    }
}
