//! The cluster driver: node processes of the `meridian` binary, managed by PID.
//!
//! * [`init`] runs `meridian init --dir D --regions … --nodes-per-region K
//!   --hosts 127.0.1.1,… --base-port P`.
//! * [`Cluster`] starts `meridian serve --config D/<node>.toml
//!   [--allow-debug-clock]` per node, stdout and stderr appended to
//!   `<store>/<node>.log`, keeps each `std::process::Child`, and kills
//!   (SIGKILL), restarts, pauses (SIGSTOP) and resumes (SIGCONT) nodes **by
//!   PID only** — never by name. Killed children are reaped. Dropping the
//!   cluster resumes and kills every child it still has.
//! * [`rewrite_peer_addresses`] points a node config's `[[peers]] address`
//!   entries at the proxy relays (proxy network mode).
//!
//! The process manager is generic over the command line ([`NodeCommand`]),
//! so it is tested with `sleep` children.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;

use crate::nemesis::ProcessControl;

/// How to start one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCommand {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// stdout and stderr are appended here.
    pub log: PathBuf,
    /// The node's data directory (only the negative control touches it).
    pub data_dir: Option<PathBuf>,
}

impl NodeCommand {
    /// `meridian serve --config <config> [--allow-debug-clock]`.
    pub fn serve(
        name: &str,
        meridian: &Path,
        config: &Path,
        debug_clock: bool,
        log: PathBuf,
    ) -> NodeCommand {
        let mut args = vec![
            "serve".to_string(),
            "--config".into(),
            config.display().to_string(),
        ];
        if debug_clock {
            args.push("--allow-debug-clock".into());
        }
        // `data_dir` in the config is relative to the config's directory.
        let data_dir = read_node_config(config)
            .ok()
            .and_then(|c| c.data_dir)
            .map(|d| {
                let d = PathBuf::from(d);
                match config.parent() {
                    Some(base) if d.is_relative() => base.join(d),
                    _ => d,
                }
            });
        NodeCommand {
            name: name.to_string(),
            program: meridian.to_path_buf(),
            args,
            log,
            data_dir,
        }
    }
}

/// `meridian init`.
pub fn init(
    meridian: &Path,
    dir: &Path,
    regions: &[String],
    nodes_per_region: usize,
    hosts: &[String],
    base_port: u16,
) -> anyhow::Result<()> {
    let out = Command::new(meridian)
        .args(["init", "--dir"])
        .arg(dir)
        .args(["--regions", &regions.join(","), "--hosts", &hosts.join(",")])
        .args(["--nodes-per-region", &nodes_per_region.to_string()])
        .args(["--base-port", &base_port.to_string()])
        .output()
        .with_context(|| format!("running {} init", meridian.display()))?;
    if !out.status.success() {
        bail!(
            "meridian init failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The parts of a node's TOML config the harness reads.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct NodeConfig {
    pub node: String,
    pub region: String,
    pub peer_listen: String,
    pub client_listen: String,
    #[serde(default)]
    pub metrics_listen: Option<String>,
    #[serde(default)]
    pub data_dir: Option<String>,
    #[serde(default)]
    pub peers: Vec<PeerEntry>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct PeerEntry {
    pub name: String,
    pub region: String,
    pub address: String,
}

pub fn read_node_config(path: &Path) -> anyhow::Result<NodeConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Rewrites `[[peers]] address` of a node config: each peer named in `map`
/// gets the mapped address; everything else is kept. Fails if a peer has no
/// mapping (a node that could bypass the proxy would make partitions lie).
pub fn rewrite_peer_addresses(
    config: &str,
    map: &BTreeMap<String, SocketAddr>,
) -> anyhow::Result<String> {
    let mut doc: toml::Table = toml::from_str(config).context("parsing node config")?;
    let peers = doc
        .get_mut("peers")
        .and_then(|p| p.as_array_mut())
        .context("node config has no [[peers]]")?;
    for p in peers {
        let t = p.as_table_mut().context("[[peers]] entry is not a table")?;
        let name = t
            .get("name")
            .and_then(|n| n.as_str())
            .context("[[peers]] entry without name")?
            .to_string();
        let addr = map
            .get(&name)
            .with_context(|| format!("no proxy address for peer {name}"))?;
        t.insert("address".into(), toml::Value::String(addr.to_string()));
    }
    Ok(toml::to_string(&doc)?)
}

/// A node config (TOML) with `[table] key = value` set; everything else
/// kept (the table is created if absent).
pub fn with_config_value(
    config: &str,
    table: &str,
    key: &str,
    value: i64,
) -> anyhow::Result<String> {
    let mut doc: toml::Table = toml::from_str(config).context("parsing node config")?;
    let t = doc
        .entry(table)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .with_context(|| format!("[{table}] of the node config is not a table"))?;
    t.insert(key.into(), toml::Value::Integer(value));
    Ok(toml::to_string(&doc)?)
}

/// Longest a metrics scrape may take.
pub const METRICS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// Most bytes of a metrics reply read.
pub const MAX_METRICS_BYTES: u64 = 4 << 20;

/// The node metrics a run records per node (`node-metrics` in
/// `test.json`), each summed over its labels: whether the outage nemesis
/// reached a full sync, and what to look at when replication stalls.
pub const RECORDED_METRICS: [&str; 12] = [
    "meridian_peer_full_syncs_received_total",
    "meridian_peer_full_syncs_sent_total",
    "meridian_deltas_deferred_total",
    "meridian_state_merges_total",
    "meridian_peer_realtime_dropped_total",
    "meridian_peer_garbage_total",
    "meridian_peer_requests_refused_total",
    "meridian_peer_lag_deltas",
    "meridian_peer_messages_sent_total",
    "meridian_peer_messages_received_total",
    "meridian_peer_bytes_sent_total",
    "meridian_peer_bytes_received_total",
];

/// [`RECORDED_METRICS`] of a node, scraped from its `metrics_listen`.
pub async fn scrape_metrics(addr: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let scrape = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
            .await?;
        let mut body = Vec::new();
        s.take(MAX_METRICS_BYTES).read_to_end(&mut body).await?;
        anyhow::Ok(body)
    };
    let body = tokio::time::timeout(METRICS_TIMEOUT, scrape)
        .await
        .with_context(|| format!("scraping {addr}: timed out"))??;
    let text = String::from_utf8_lossy(&body);
    Ok(RECORDED_METRICS
        .iter()
        .map(|m| (m.to_string(), sum_metric(&text, m)))
        .collect())
}

/// The sum of every sample of `name` in a Prometheus text exposition.
fn sum_metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

struct NodeProc {
    cmd: NodeCommand,
    child: Option<Child>,
    paused: bool,
}

/// Running nodes.
pub struct Cluster {
    nodes: Mutex<BTreeMap<String, NodeProc>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("pids", &self.pids())
            .finish()
    }
}

fn spawn(cmd: &NodeCommand) -> anyhow::Result<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cmd.log)
        .with_context(|| format!("opening {}", cmd.log.display()))?;
    let child = Command::new(&cmd.program)
        .args(&cmd.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {} ({})", cmd.name, cmd.program.display()))?;
    crate::cleanup::register_pid(child.id() as i32);
    Ok(child)
}

fn pid_of(c: &Child) -> Pid {
    Pid::from_raw(c.id() as i32)
}

impl Cluster {
    /// Starts every node.
    pub fn start(cmds: Vec<NodeCommand>) -> anyhow::Result<Cluster> {
        let cluster = Cluster {
            nodes: Mutex::new(BTreeMap::new()),
        };
        for cmd in cmds {
            let child = spawn(&cmd)?;
            cluster.lock().insert(
                cmd.name.clone(),
                NodeProc {
                    cmd,
                    child: Some(child),
                    paused: false,
                },
            );
        }
        Ok(cluster)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NodeProc>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Current PIDs of running nodes.
    pub fn pids(&self) -> BTreeMap<String, i32> {
        self.lock()
            .iter()
            .filter_map(|(n, p)| p.child.as_ref().map(|c| (n.clone(), c.id() as i32)))
            .collect()
    }

    /// Log files, `(node, path)`.
    pub fn logs(&self) -> Vec<(String, PathBuf)> {
        self.lock()
            .iter()
            .map(|(n, p)| (n.clone(), p.cmd.log.clone()))
            .collect()
    }

    /// Nodes whose process exited on its own (not killed by the nemesis).
    pub fn crashed(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (n, p) in self.lock().iter_mut() {
            if let Some(c) = p.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                out.push((n.clone(), status.to_string()));
            }
        }
        out
    }

    /// Resumes and kills every node (teardown).
    pub fn stop_all(&self) {
        for (_, p) in self.lock().iter_mut() {
            if let Some(mut c) = p.child.take() {
                let pid = pid_of(&c);
                let _ = kill(pid, Signal::SIGCONT);
                let _ = c.kill();
                let _ = c.wait();
                crate::cleanup::unregister_pid(pid.as_raw());
            }
        }
    }
}

impl ProcessControl for Cluster {
    fn kill(&self, node: &str) -> anyhow::Result<i32> {
        let mut nodes = self.lock();
        let p = nodes
            .get_mut(node)
            .with_context(|| format!("unknown node {node}"))?;
        let mut c = p
            .child
            .take()
            .with_context(|| format!("{node} is not running"))?;
        let pid = pid_of(&c);
        kill(pid, Signal::SIGKILL).with_context(|| format!("SIGKILL {pid}"))?;
        c.wait()?;
        crate::cleanup::unregister_pid(pid.as_raw());
        p.paused = false;
        Ok(pid.as_raw())
    }

    fn start(&self, node: &str) -> anyhow::Result<Option<i32>> {
        let mut nodes = self.lock();
        let p = nodes
            .get_mut(node)
            .with_context(|| format!("unknown node {node}"))?;
        if p.child.is_some() {
            return Ok(None);
        }
        let c = spawn(&p.cmd)?;
        let pid = c.id() as i32;
        p.child = Some(c);
        Ok(Some(pid))
    }

    fn pause(&self, node: &str) -> anyhow::Result<i32> {
        let mut nodes = self.lock();
        let p = nodes
            .get_mut(node)
            .with_context(|| format!("unknown node {node}"))?;
        let pid = pid_of(
            p.child
                .as_ref()
                .with_context(|| format!("{node} is not running"))?,
        );
        kill(pid, Signal::SIGSTOP).with_context(|| format!("SIGSTOP {pid}"))?;
        p.paused = true;
        Ok(pid.as_raw())
    }

    fn resume(&self, node: &str) -> anyhow::Result<Option<i32>> {
        let mut nodes = self.lock();
        let p = nodes
            .get_mut(node)
            .with_context(|| format!("unknown node {node}"))?;
        let Some(c) = p.child.as_ref() else {
            return Ok(None);
        };
        let pid = pid_of(c);
        kill(pid, Signal::SIGCONT).with_context(|| format!("SIGCONT {pid}"))?;
        let was = std::mem::replace(&mut p.paused, false);
        Ok(was.then_some(pid.as_raw()))
    }

    fn wipe_data(&self, node: &str) -> anyhow::Result<String> {
        let nodes = self.lock();
        let p = nodes
            .get(node)
            .with_context(|| format!("unknown node {node}"))?;
        anyhow::ensure!(p.child.is_none(), "{node} is running: kill it first");
        let dir = p
            .cmd
            .data_dir
            .as_ref()
            .with_context(|| format!("{node}: no data_dir in its config"))?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(dir.display().to_string())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pid: i32) -> Option<char> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // pid (comm) S ...
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
    }

    fn sleeper(dir: &Path, name: &str) -> NodeCommand {
        NodeCommand {
            name: name.into(),
            program: "sleep".into(),
            args: vec!["30".into()],
            log: dir.join(format!("{name}.log")),
            data_dir: None,
        }
    }

    #[test]
    fn kill_restart_pause_resume_by_pid() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cluster::start(vec![sleeper(dir.path(), "n1"), sleeper(dir.path(), "n2")]).unwrap();
        let pids = c.pids();
        assert_eq!(pids.len(), 2);
        let p1 = pids["n1"];
        assert!(crate::cleanup::registered_pids().contains(&p1));

        let paused = c.pause("n1").unwrap();
        assert_eq!(paused, p1);
        // SIGSTOP is asynchronous; poll the state briefly.
        let mut st = None;
        for _ in 0..100 {
            st = state(p1);
            if st == Some('T') {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(st, Some('T'), "stopped");
        assert_eq!(c.resume("n1").unwrap(), Some(p1));
        assert_eq!(c.resume("n1").unwrap(), None, "not paused any more");

        let killed = c.kill("n1").unwrap();
        assert_eq!(killed, p1);
        assert!(state(p1).is_none(), "reaped and gone");
        assert!(c.kill("n1").is_err(), "already dead");
        assert!(!c.pids().contains_key("n1"));
        let new = c.start("n1").unwrap().unwrap();
        assert_ne!(new, p1);
        assert_eq!(c.start("n1").unwrap(), None, "already running");
        assert_eq!(c.pids()["n2"], pids["n2"], "n2 untouched");
        assert!(c.crashed().is_empty());

        let all: Vec<i32> = c.pids().values().copied().collect();
        drop(c);
        for pid in all {
            assert!(state(pid).is_none(), "{pid} killed on drop");
            assert!(!crate::cleanup::registered_pids().contains(&pid));
        }
    }

    #[test]
    fn wipe_data_only_when_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data/n1");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("log"), b"x").unwrap();
        let mut cmd = sleeper(dir.path(), "n1");
        cmd.data_dir = Some(data.clone());
        let c = Cluster::start(vec![cmd, sleeper(dir.path(), "n2")]).unwrap();
        assert!(c.wipe_data("n1").is_err(), "running");
        c.kill("n1").unwrap();
        assert_eq!(c.wipe_data("n1").unwrap(), data.display().to_string());
        assert!(!data.exists());
        c.kill("n2").unwrap();
        assert!(c.wipe_data("n2").is_err(), "no data dir known");
    }

    #[test]
    fn logs_capture_output_and_crashes_are_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = NodeCommand {
            name: "n1".into(),
            program: "sh".into(),
            args: vec!["-c".into(), "echo hello; echo oops >&2; exit 3".into()],
            log: dir.path().join("n1.log"),
            data_dir: None,
        };
        let c = Cluster::start(vec![cmd]).unwrap();
        let mut crashed = Vec::new();
        for _ in 0..200 {
            crashed = c.crashed();
            if !crashed.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(crashed.len(), 1);
        assert!(crashed[0].1.contains('3'));
        let log = std::fs::read_to_string(dir.path().join("n1.log")).unwrap();
        assert!(log.contains("hello") && log.contains("oops"));
    }

    #[test]
    fn serve_command_line() {
        let c = NodeCommand::serve(
            "n1",
            Path::new("/bin/meridian"),
            Path::new("/d/n1.toml"),
            true,
            "/s/n1.log".into(),
        );
        assert_eq!(
            c.args,
            vec!["serve", "--config", "/d/n1.toml", "--allow-debug-clock"]
        );
    }

    #[test]
    fn peer_addresses_are_rewritten_and_the_rest_kept() {
        let cfg = r#"
node = "n1"
region = "r1"
peer_listen = "127.0.1.1:7000"
client_listen = "127.0.1.1:8000"
metrics_listen = "127.0.1.1:9000"

[[peers]]
name = "n2"
region = "r2"
address = "127.0.1.2:7000"

[[peers]]
name = "n3"
region = "r1"
address = "127.0.1.3:7000"
"#;
        let mut map = BTreeMap::new();
        map.insert("n2".to_string(), "127.0.0.1:41000".parse().unwrap());
        map.insert("n3".to_string(), "127.0.0.1:41001".parse().unwrap());
        let out = rewrite_peer_addresses(cfg, &map).unwrap();
        let parsed: NodeConfig = toml::from_str(&out).unwrap();
        assert_eq!(parsed.node, "n1");
        assert_eq!(parsed.client_listen, "127.0.1.1:8000");
        assert_eq!(parsed.peers[0].address, "127.0.0.1:41000");
        assert_eq!(parsed.peers[1].address, "127.0.0.1:41001");
        assert_eq!(parsed.peers[1].region, "r1");
        map.remove("n3");
        assert!(rewrite_peer_addresses(cfg, &map).is_err());
    }

    #[test]
    fn config_values_and_metric_sums() {
        let out =
            with_config_value("node = \"n1\"\n", "replication", "retention_ms", 2000).unwrap();
        let out = with_config_value(&out, "storage", "log_segment_bytes", 65536).unwrap();
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(t["replication"]["retention_ms"].as_integer(), Some(2000));
        assert_eq!(t["storage"]["log_segment_bytes"].as_integer(), Some(65536));
        assert_eq!(t["node"].as_str(), Some("n1"));
        let m = "# HELP x\nmeridian_peer_full_syncs_received_total{peer=\"n2\"} 2\n\
                 meridian_peer_full_syncs_received_total{peer=\"n3\"} 1\n\
                 meridian_peer_full_syncs_received_totalx 7\n";
        assert_eq!(sum_metric(m, "meridian_peer_full_syncs_received_total"), 3);
    }
}
