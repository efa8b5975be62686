//! The command line: `meridian-jepsen test …` and `meridian-jepsen check …`.
//!
//! Exit codes are Jepsen's: 0 valid, 1 invalid, 2 unknown, 254 bad
//! arguments, 255 internal error. The console ends with Jepsen's closing
//! line for the verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::checker::always::Convergence;
use crate::checker::faults::Family;
use crate::checker::{
    CheckContext, CheckResult, LinearizableScope, compose, standard_checkers, workloads_in,
};
use crate::history::{History, Recorder, WorkloadKind};
use crate::net::{NetMode, NodeAddr};
use crate::report::{self, EXIT_BAD_ARGS, EXIT_INTERNAL, RunDir};
use crate::resp_db::{AnyDb, ClientKind};
use crate::runner::{ConsistencyChoice, RunConfig};

#[derive(Parser, Debug)]
#[command(
    name = "meridian-jepsen",
    version,
    about = "Jepsen-style partition testing of Meridian"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run a test against a fresh local cluster.
    Test(Box<TestArgs>),
    /// Re-run the checkers on a stored history.
    Check(CheckArgs),
}

#[derive(Args, Debug, Clone)]
pub struct TestArgs {
    /// counter | set | register | large | map | expiry | all
    /// (= counter+set+register), or several joined by `+` (counter+set)
    #[arg(long, default_value = "all")]
    pub workload: String,
    /// none | partition | kill | pause | clock | outage | all (= the first
    /// four), or several joined by `+` or `,` (partition,kill,pause);
    /// `outage` cannot be combined with `partition`
    #[arg(long, default_value = "partition")]
    pub nemesis: String,
    /// 3 or 5
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Comma-separated region names, each with the same number of nodes
    /// (`meridian init --nodes-per-region`), so `--nodes` must be a multiple
    /// of their count. Default: one region per node, `r1,r2,…`.
    #[arg(long)]
    pub regions: Option<String>,
    /// Seconds of the main phase.
    #[arg(long, default_value_t = 60)]
    pub time_limit: u64,
    /// Ops per second, all processes together.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Logical client processes.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// local | leader | quorum | replicas-N | mixed (each op draws one of
    /// local, leader, quorum, all and replicas-1 … replicas-<nodes>)
    #[arg(long, default_value = "mixed")]
    pub consistency: String,
    /// RNG seed (default: from the clock; always printed and stored).
    #[arg(long)]
    pub seed: Option<u64>,
    /// auto | nft | proxy
    #[arg(long, default_value = "auto")]
    pub net: String,
    /// Where runs are stored.
    #[arg(long, default_value = "store")]
    pub store: PathBuf,
    /// The meridian binary (default: next to this one, else on PATH).
    #[arg(long)]
    pub meridian: Option<PathBuf>,
    /// Required availability of `local` ops on nodes that were not killed or
    /// paused: `total`, a fraction in [0, 1], or `off` (report only).
    /// Default: 0.99 (checker::always::DEFAULT_AVAILABILITY).
    #[arg(long)]
    pub availability: Option<String>,
    /// Seconds between nemesis ops (Jepsen's interval).
    #[arg(long, default_value_t = 10)]
    pub nemesis_interval: u64,
    /// Negative control: after the main phase, isolate a node, acknowledge
    /// local-only writes on it, then kill it and delete its data directory.
    /// Those writes are lost for real, so the run must come out invalid
    /// (exit 1); a valid verdict means the checkers are blind.
    #[arg(long)]
    pub wipe_control: bool,
    /// When the `--net` backend asked for cannot be used here (e.g. `nft`
    /// without root or without nft/iptables), print `SKIP: <reason>` and exit
    /// 0 instead of failing with 254 (for CI smoke runs).
    #[arg(long)]
    pub skip_if_unavailable: bool,
    /// native (meridian-client over QUIC) | resp (the Redis protocol on each
    /// node's resp_listen; counter and set workloads only)
    #[arg(long, default_value = "native")]
    pub client: String,
    /// Large workload: bytes of each register value (default: the
    /// per-write limit, 1 MiB).
    #[arg(long, default_value_t = crate::workload::large::DEFAULT_VALUE_BYTES)]
    pub large_value_bytes: usize,
    /// Large workload: bytes of each set member.
    #[arg(long, default_value_t = crate::workload::large::DEFAULT_MEMBER_BYTES)]
    pub large_member_bytes: usize,
    /// Large workload: bytes the merge scenario adds over all nodes
    /// together (default: the object limit + 1/8, 18 MiB).
    #[arg(long, default_value_t = crate::workload::large::DEFAULT_MERGE_BYTES)]
    pub large_merge_bytes: usize,
    /// With `--nemesis outage`: the nodes' `[replication] retention_ms`
    /// (default 2000; the node accepts 1000 and up).
    #[arg(long)]
    pub retention_ms: Option<u64>,
    /// With `--nemesis outage`: how long a node stays cut off, in ms
    /// (default: retention + two 10 s truncation rounds + 4 s).
    #[arg(long)]
    pub outage_ms: Option<u64>,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// A history.jsonl written by `test`.
    #[arg(long)]
    pub history: PathBuf,
    /// Write results.json, timeline.html and plots here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// As for `test`.
    #[arg(long)]
    pub availability: Option<String>,
    /// Seconds allowed per key for the linearizability search.
    #[arg(long, default_value_t = 10)]
    pub linearizable_timeout: u64,
}

/// A bad-arguments error (exit 254).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadArgs(pub String);

fn bad(msg: impl Into<String>) -> anyhow::Error {
    BadArgs(msg.into()).into()
}

/// `counter | set | register | large | map | expiry | all`, or several joined by `+` or `,`
/// (`counter+set`).
pub fn parse_workloads(s: &str) -> anyhow::Result<Vec<WorkloadKind>> {
    let mut out: Vec<WorkloadKind> = Vec::new();
    for w in s.split(['+', ',']) {
        let kinds = match w.trim() {
            "all" => WorkloadKind::ALL.to_vec(),
            "counter" => vec![WorkloadKind::Counter],
            "set" => vec![WorkloadKind::Set],
            "register" => vec![WorkloadKind::Register],
            "large" => vec![WorkloadKind::Large],
            "map" => vec![WorkloadKind::Map],
            "expiry" => vec![WorkloadKind::Expiry],
            o => {
                return Err(bad(format!(
                    "unknown workload {o:?} (counter|set|register|large|map|expiry|all, or several joined by +)"
                )));
            }
        };
        for k in kinds {
            if !out.contains(&k) {
                out.push(k);
            }
        }
    }
    out.sort();
    Ok(out)
}

pub fn parse_nemesis(s: &str) -> anyhow::Result<BTreeSet<Family>> {
    // Several families: `partition,kill,pause` (or joined by `+`).
    if s.contains(['+', ',']) {
        let mut out = BTreeSet::new();
        for part in s.split(['+', ',']) {
            out.extend(parse_nemesis(part.trim())?);
        }
        return Ok(out);
    }
    Ok(match s {
        "none" => BTreeSet::new(),
        "partition" => [Family::Partition].into(),
        "kill" => [Family::Kill].into(),
        "pause" => [Family::Pause].into(),
        "clock" => [Family::Clock].into(),
        "outage" => [Family::Outage].into(),
        "all" => Family::ALL.into_iter().collect(),
        o => {
            return Err(bad(format!(
                "unknown nemesis {o:?} (none|partition|kill|pause|clock|outage|all)"
            )));
        }
    })
}

/// `--availability`: absent = the default threshold, `off` = report only.
pub fn parse_availability(s: Option<&str>) -> anyhow::Result<Option<f64>> {
    match s {
        None => Ok(Some(crate::checker::always::DEFAULT_AVAILABILITY)),
        Some("off") => Ok(None),
        Some("total") => Ok(Some(1.0)),
        Some(x) => match x.parse::<f64>() {
            Ok(f) if (0.0..=1.0).contains(&f) => Ok(Some(f)),
            _ => Err(bad(format!(
                "--availability must be `total`, `off` or a fraction in [0, 1], got {x:?}"
            ))),
        },
    }
}

/// Validated `test` arguments.
#[derive(Debug, Clone)]
pub struct TestPlan {
    pub name: String,
    pub run: RunConfig,
    pub regions: Vec<String>,
    pub net: NetMode,
    pub store: PathBuf,
    pub meridian: PathBuf,
    pub availability: Option<f64>,
    /// `--client`.
    pub client: ClientKind,
    /// `[replication] retention_ms` written into every node config (runs
    /// with the outage nemesis only).
    pub retention: Option<Duration>,
}

fn run_has_outage(run: &RunConfig) -> bool {
    run.families.contains(&Family::Outage)
}

/// Smallest log segment the node accepts (`[storage] log_segment_bytes`):
/// with the outage nemesis the nodes use it, so that truncation (which
/// reclaims whole segments) drops what a cut-off node needs within seconds.
pub const OUTAGE_LOG_SEGMENT_BYTES: u64 = 64 << 10;
/// The node's bounds of `[replication] retention_ms` (server/src/config).
pub const MIN_RETENTION_MS: u64 = 1_000;
pub const MAX_RETENTION_MS: u64 = 30 * 24 * 3_600_000;

fn find_meridian(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        return Err(bad(format!("--meridian {}: no such file", p.display())));
    }
    if let Ok(me) = std::env::current_exe()
        && let Some(dir) = me.parent()
        && dir.join("meridian").is_file()
    {
        return Ok(dir.join("meridian"));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("meridian"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            bad("no meridian binary next to meridian-jepsen or on PATH; pass --meridian PATH")
        })
}

/// Validates `test` arguments into a plan.
pub fn plan(a: &TestArgs) -> anyhow::Result<TestPlan> {
    let workloads = parse_workloads(&a.workload)?;
    let families = parse_nemesis(&a.nemesis)?;
    if a.nodes != 3 && a.nodes != 5 {
        return Err(bad("--nodes must be 3 or 5"));
    }
    let regions_arg = a.regions.clone().unwrap_or_else(|| {
        (1..=a.nodes)
            .map(|i| format!("r{i}"))
            .collect::<Vec<_>>()
            .join(",")
    });
    let regions: Vec<String> = regions_arg
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(String::from)
        .collect();
    if regions.is_empty() || regions.iter().collect::<BTreeSet<_>>().len() != regions.len() {
        return Err(bad("--regions must be distinct, comma-separated names"));
    }
    if !a.nodes.is_multiple_of(regions.len()) {
        return Err(bad(format!(
            "--nodes {} cannot be spread evenly over {} regions (meridian init puts the same \
             number of nodes in every region)",
            a.nodes,
            regions.len()
        )));
    }
    if a.time_limit == 0 || a.rate <= 0.0 || !a.rate.is_finite() || a.concurrency == 0 {
        return Err(bad(
            "--time-limit, --rate and --concurrency must be positive",
        ));
    }
    let consistency: ConsistencyChoice = a.consistency.parse().map_err(bad)?;
    let client: ClientKind = a.client.parse().map_err(bad)?;
    if client == ClientKind::Resp && workloads.contains(&WorkloadKind::Register) {
        return Err(bad(
            "--client resp runs the counter and set workloads only (RESP's SET/GET return no \
             timestamps, which the register checker needs): use --workload counter+set",
        ));
    }
    if client == ClientKind::Resp && workloads.contains(&WorkloadKind::Map) {
        return Err(bad(
            "--client resp does not run the map workload (the RESP door's database \
             interface has no map operations yet): use --client native",
        ));
    }
    if client == ClientKind::Resp && workloads.contains(&WorkloadKind::Large) {
        return Err(bad(
            "--client resp does not run the large workload (its registers need timestamps)",
        ));
    }
    if families.contains(&Family::Outage) && families.contains(&Family::Partition) {
        return Err(bad(
            "--nemesis outage cannot be combined with partition: a partition's heal would \
             end the outage early",
        ));
    }
    let large = crate::workload::large::LargeConfig {
        value_bytes: a.large_value_bytes,
        member_bytes: a.large_member_bytes,
        merge_bytes: a.large_merge_bytes,
    };
    large.validate().map_err(bad)?;
    let retention = Duration::from_millis(
        a.retention_ms
            .unwrap_or(crate::generator::DEFAULT_OUTAGE_RETENTION.as_millis() as u64),
    );
    if !(MIN_RETENTION_MS..=MAX_RETENTION_MS).contains(&(retention.as_millis() as u64)) {
        return Err(bad(format!(
            "--retention-ms must be in [{MIN_RETENTION_MS}, {MAX_RETENTION_MS}] (the node's bounds)"
        )));
    }
    let outage = a.outage_ms.map_or_else(
        || crate::generator::min_outage(retention),
        Duration::from_millis,
    );
    if outage <= retention {
        return Err(bad(
            "--outage-ms must be longer than the retention, or no full sync is needed",
        ));
    }
    if (a.retention_ms.is_some() || a.outage_ms.is_some()) && !families.contains(&Family::Outage) {
        return Err(bad("--retention-ms and --outage-ms need --nemesis outage"));
    }
    let net: NetMode = a.net.parse().map_err(bad)?;
    let seed = a.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    });
    let nodes: Vec<String> = (1..=a.nodes).map(|i| format!("n{i}")).collect();
    let mut run = RunConfig::new(nodes.clone());
    // meridian init's node order: region by region.
    let per_region = a.nodes / regions.len();
    run.regions = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), regions[i / per_region].clone()))
        .collect();
    run.workloads = workloads;
    run.families = families;
    run.time_limit = Duration::from_secs(a.time_limit);
    run.rate = a.rate;
    run.concurrency = a.concurrency;
    run.consistency = consistency;
    run.seed = seed;
    run.interval = Duration::from_secs(a.nemesis_interval.max(1));
    run.wipe_control = a.wipe_control;
    run.large = large;
    run.outage = outage;
    let retention = run_has_outage(&run).then_some(retention);
    Ok(TestPlan {
        name: format!(
            "{}-{}{}{}",
            a.workload.replace(',', "+"),
            a.nemesis.replace(',', "+"),
            if a.wipe_control { "-wipe" } else { "" },
            if client == ClientKind::Resp {
                "-resp"
            } else {
                ""
            }
        ),
        run,
        regions,
        net,
        store: a.store.clone(),
        meridian: find_meridian(a.meridian.as_deref())?,
        availability: parse_availability(a.availability.as_deref())?,
        client,
        retention,
    })
}

/// Runs the checkers over a history and prints the verdict lines.
pub fn check_history(history: &History, ctx: &CheckContext) -> CheckResult {
    compose(&standard_checkers(&workloads_in(history)), history, ctx)
}

fn print_summary(r: &CheckResult) {
    for (name, v) in &r.findings {
        println!(
            "  {name:<18} valid: {}",
            v.get("valid").cloned().unwrap_or_default()
        );
    }
    println!("\n{}", report::banner(r.valid));
}

/// `check`: returns the exit code.
pub fn cmd_check(a: &CheckArgs) -> anyhow::Result<i32> {
    let history = History::read_jsonl(&a.history).map_err(|e| bad(format!("{e:#}")))?;
    let mut ctx = CheckContext::new();
    ctx.linearizable = LinearizableScope::from_history(&history);
    ctx.linearizable_timeout = Duration::from_secs(a.linearizable_timeout);
    ctx.availability = parse_availability(a.availability.as_deref())?;
    // A run directory's test.json carries the convergence measurement and logs.
    if let Some(dir) = a.history.parent() {
        if let Ok(text) = std::fs::read_to_string(dir.join("test.json"))
            && let Ok(t) = serde_json::from_str::<serde_json::Value>(&text)
        {
            ctx.convergence = serde_json::from_value::<Convergence>(t["convergence"].clone()).ok();
        }
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "log")
                && let Some(stem) = p.file_stem()
            {
                ctx.node_logs.push((stem.to_string_lossy().into_owned(), p));
            }
        }
    }
    let r = check_history(&history, &ctx);
    if let Some(dir) = &a.report {
        std::fs::create_dir_all(dir)?;
        for w in report::write_run(dir, &history, &r, "check")? {
            eprintln!("warning: {w}");
        }
        println!("Report written to {}", dir.display());
    }
    print_summary(&r);
    Ok(report::exit_code(r.valid))
}

/// `test`: returns the exit code.
pub fn cmd_test(a: &TestArgs) -> anyhow::Result<i32> {
    let p = plan(a)?;
    let (mode, note) = match crate::net::resolve(p.net) {
        Ok(r) => r,
        Err(reason) if a.skip_if_unavailable => {
            eprintln!("SKIP: {reason}");
            return Ok(report::EXIT_VALID);
        }
        Err(reason) => return Err(bad(reason)),
    };
    if let Some(n) = note {
        println!("{n}");
    }
    let dir = RunDir::create(&p.store, &p.name, SystemTime::now())?;
    println!(
        "Test {} (seed {}), storing in {}",
        p.name,
        p.run.seed,
        dir.path.display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let run_dir = dir.path.clone();
    let plan = p.clone();
    let stop2 = stop.clone();
    let result = match mode {
        NetMode::Nft => {
            let ns =
                crate::net::netns::Netns::create(&format!("mj-{}", p.run.seed % 1_000_000_000))?;
            let r = ns.spawn_inside({
                let ns_name = ns.name().to_string();
                move || run_test(&plan, &run_dir, Some(ns_name), stop2)
            });
            drop(ns);
            r
        }
        _ => run_test(&plan, &run_dir, None, stop2),
    };
    let results = result?;
    print_summary(&results);
    Ok(report::exit_code(results.valid))
}

/// Everything from cluster creation to the report, on the calling thread
/// (inside the run's namespace in nft mode).
fn run_test(
    p: &TestPlan,
    dir: &Path,
    netns: Option<String>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<CheckResult> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Ctrl-C: first stops the test (final heal still runs), second exits.
        let s = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping the test (Ctrl-C again to abort)");
                s.store(true, Ordering::SeqCst);
                if tokio::signal::ctrl_c().await.is_ok() {
                    crate::cleanup::emergency();
                    std::process::exit(EXIT_INTERNAL);
                }
            }
        });
        let cluster_dir = dir.join("cluster");
        let hosts: Vec<String> = (1..=p.run.nodes.len()).map(|i| format!("127.0.1.{i}")).collect();
        crate::cluster::init(&p.meridian, &cluster_dir, &p.regions, p.run.nodes.len() / p.regions.len(), &hosts, BASE_PORT)?;
        let mut configs = BTreeMap::new();
        for e in std::fs::read_dir(&cluster_dir)? {
            let path = e?.path();
            if path.extension().is_some_and(|x| x == "toml")
                && let Ok(c) = crate::cluster::read_node_config(&path)
            {
                configs.insert(c.node.clone(), (path, c));
            }
        }
        anyhow::ensure!(configs.len() == p.run.nodes.len(), "meridian init wrote {} node configs", configs.len());
        let mut run_cfg = p.run.clone();
        run_cfg.nodes = configs.keys().cloned().collect();
        run_cfg.regions = configs.values().map(|(_, c)| (c.node.clone(), c.region.clone())).collect();
        let addrs: Vec<NodeAddr> = configs
            .values()
            .map(|(_, c)| -> anyhow::Result<NodeAddr> {
                let sa: SocketAddr = c.peer_listen.parse().with_context(|| format!("peer_listen of {}", c.node))?;
                let IpAddr::V4(ip) = sa.ip() else { bail!("{}: IPv6 peer address", c.node) };
                Ok(NodeAddr { name: c.node.clone(), region: c.region.clone(), ip, peer_port: sa.port() })
            })
            .collect::<anyhow::Result<_>>()?;
        let wan = crate::net::wan_matrix(&addrs, &p.regions);
        let net: Arc<dyn crate::net::NetFaults> = match &netns {
            Some(name) => {
                let ns = crate::net::netns::Netns::attach(name);
                Arc::new(crate::net::nft::NftNet::setup(&ns, addrs.clone(), NFQUEUE_NUM, &wan, p.run.seed)?)
            }
            None => {
                let proxy = crate::net::proxy::ProxyNet::start(&addrs, IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1)), wan, p.run.seed).await?;
                for (node, (path, _)) in &configs {
                    let map: BTreeMap<String, SocketAddr> = addrs
                        .iter()
                        .filter(|a| a.name != *node)
                        .filter_map(|a| proxy.addr(node, &a.name).map(|x| (a.name.clone(), x)))
                        .collect();
                    let text = std::fs::read_to_string(path)?;
                    std::fs::write(path, crate::cluster::rewrite_peer_addresses(&text, &map)?)?;
                }
                Arc::new(proxy)
            }
        };
        if let Some(retention) = p.retention {
            // The outage nemesis: a short retention and small log segments,
            // so that a node cut off for seconds must come back by full sync.
            for (path, _) in configs.values() {
                let text = std::fs::read_to_string(path)?;
                let text = crate::cluster::with_config_value(&text, "replication", "retention_ms", retention.as_millis() as i64)?;
                let text = crate::cluster::with_config_value(&text, "storage", "log_segment_bytes", OUTAGE_LOG_SEGMENT_BYTES as i64)?;
                std::fs::write(path, text)?;
            }
        }
        if p.client == ClientKind::Resp {
            // RESP commands carry no timeout: the nodes' own must end before the harness's.
            let t = crate::resp_db::node_request_timeout(run_cfg.op_timeout);
            for (path, _) in configs.values() {
                let text = std::fs::read_to_string(path)?;
                std::fs::write(path, crate::resp_db::with_request_timeout(&text, t)?)?;
            }
        }
        let debug_clock = run_cfg.families.contains(&Family::Clock);
        let cmds = configs
            .iter()
            .map(|(n, (path, _))| crate::cluster::NodeCommand::serve(n, &p.meridian, path, debug_clock, dir.join(format!("{n}.log"))))
            .collect();
        let cluster = Arc::new(crate::cluster::Cluster::start(cmds)?);
        let db = Arc::new(AnyDb::connect(p.client, &cluster_dir.join("client.toml"), &run_cfg.nodes, debug_clock).await?);
        let rec = Arc::new(Recorder::new(Instant::now()));
        let bar = indicatif::ProgressBar::new(run_cfg.time_limit.as_secs());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{bar:40}] {pos}/{len} s  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let out = crate::runner::run(
            db.clone(),
            Some(net.clone()),
            Some(cluster.clone() as Arc<dyn crate::nemesis::ProcessControl>),
            run_cfg.clone(),
            rec,
            bar,
            stop,
        )
        .await?;
        db.close().await;
        // Evidence that the outage edge was reached: full-state syncs each
        // node received (its metrics endpoint), before the nodes stop.
        let mut full_syncs = BTreeMap::new();
        let mut node_metrics = BTreeMap::new();
        for (n, (_, c)) in &configs {
            if let Some(addr) = &c.metrics_listen {
                let v = match crate::cluster::scrape_metrics(addr).await {
                    Ok(m) => {
                        full_syncs.insert(n.clone(), json!(m.get(crate::cluster::RECORDED_METRICS[0])));
                        json!(m)
                    }
                    Err(e) => json!({"error": format!("{e:#}")}),
                };
                node_metrics.insert(n.clone(), v);
            }
        }
        let mut warnings = out.warnings.clone();
        if run_has_outage(&run_cfg) && !full_syncs.values().any(|v| v.as_u64().is_some_and(|k| k > 0)) {
            warnings.push(
                "the outage nemesis ran but no node received a full-state sync: the long-outage \
                 edge was not reached (a longer --outage-ms, or more writes during it)"
                    .to_string(),
            );
        }
        let crashed = cluster.crashed();
        cluster.stop_all();
        let mut ctx = CheckContext::new();
        ctx.linearizable = LinearizableScope::from_history(&out.history);
        ctx.convergence = out.convergence.clone();
        ctx.node_logs = cluster.logs();
        ctx.availability = p.availability;
        let results = check_history(&out.history, &ctx);
        let test_json = json!({
            "name": p.name, "seed": run_cfg.seed, "nodes": run_cfg.nodes, "regions": run_cfg.regions,
            "net": net.backend(), "time-limit-s": run_cfg.time_limit.as_secs(), "rate": run_cfg.rate,
            "concurrency": run_cfg.concurrency, "consistency": format!("{:?}", run_cfg.consistency),
            "client": p.client.as_str(),
            "nemesis": run_cfg.families.iter().map(|f| f.name()).collect::<Vec<_>>(),
            "convergence": out.convergence, "warnings": warnings, "crashed": crashed,
            "retention-ms": p.retention.map(|r| r.as_millis() as u64),
            "outage-ms": run_has_outage(&run_cfg).then_some(run_cfg.outage.as_millis() as u64),
            "large": run_cfg.workloads.contains(&WorkloadKind::Large).then(|| json!({
                "value-bytes": run_cfg.large.value_bytes, "member-bytes": run_cfg.large.member_bytes,
                "merge-bytes": run_cfg.large.merge_bytes})),
            "full-syncs-received": full_syncs, "node-metrics": node_metrics,
        });
        std::fs::write(dir.join("test.json"), serde_json::to_string_pretty(&test_json)? + "\n")?;
        for w in warnings.iter().cloned().chain(report::write_run(dir, &out.history, &results, &p.name)?) {
            eprintln!("warning: {w}");
        }
        Ok(results)
    })
}

/// First port `meridian init` hands out (`--base-port`).
pub const BASE_PORT: u16 = 7000;
/// NFQUEUE number of the delay daemon (inside the run's own namespace).
pub const NFQUEUE_NUM: u16 = 7;

/// Parses arguments and runs; returns the process exit code.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => EXIT_BAD_ARGS,
            };
            let _ = e.print();
            return code;
        }
    };
    let r = match &cli.cmd {
        Cmd::Test(a) => cmd_test(a),
        Cmd::Check(a) => cmd_check(a),
    };
    match r {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<BadArgs>().is_some() => {
            eprintln!("error: {e:#}");
            EXIT_BAD_ARGS
        }
        Err(e) => {
            crate::cleanup::emergency();
            eprintln!("internal error: {e:#}");
            EXIT_INTERNAL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> TestArgs {
        let mut v = vec!["meridian-jepsen", "test", "--meridian", "/bin/sh"];
        v.extend_from_slice(extra);
        match Cli::try_parse_from(v).unwrap().cmd {
            Cmd::Test(a) => *a,
            Cmd::Check(_) => unreachable!(),
        }
    }

    #[test]
    fn large_workload_and_outage_nemesis_arguments() {
        let p = plan(&args(&["--workload", "large", "--nemesis", "outage,kill"])).unwrap();
        assert_eq!(p.run.workloads, vec![WorkloadKind::Large]);
        assert_eq!(
            p.retention,
            Some(crate::generator::DEFAULT_OUTAGE_RETENTION)
        );
        assert_eq!(p.run.outage, crate::generator::DEFAULT_OUTAGE);
        let p = plan(&args(&["--nemesis", "outage", "--retention-ms", "5000"])).unwrap();
        assert_eq!(p.run.outage, Duration::from_millis(5_000 + 24_000));
        // `all` is what it was; retention is only written with the outage.
        let p = plan(&args(&["--nemesis", "all"])).unwrap();
        assert!(!p.run.families.contains(&Family::Outage) && p.retention.is_none());
        assert!(!p.run.workloads.contains(&WorkloadKind::Large));
        for bad_args in [
            &["--nemesis", "outage,partition"][..],
            &["--nemesis", "outage", "--retention-ms", "500"],
            &["--nemesis", "outage", "--outage-ms", "1000"],
            &["--nemesis", "kill", "--retention-ms", "2000"],
            &["--workload", "large", "--large-value-bytes", "2000000"],
            &["--workload", "large", "--client", "resp"],
        ] {
            let e = plan(&args(bad_args)).unwrap_err();
            assert!(e.downcast_ref::<BadArgs>().is_some(), "{bad_args:?}: {e:#}");
        }
    }

    #[test]
    fn plans_validate_arguments() {
        let p = plan(&args(&["--nodes", "5", "--seed", "9", "--nemesis", "all"])).unwrap();
        assert_eq!(p.run.nodes.len(), 5);
        assert_eq!(p.regions.len(), 5, "one region per node by default");
        assert_eq!(p.run.regions["n3"], "r3");
        assert_eq!(p.run.families.len(), 4);
        assert_eq!(p.run.seed, 9);
        assert_eq!(p.name, "all-all");
        let p = plan(&args(&["--workload", "set,counter"])).unwrap();
        assert_eq!(
            p.run.workloads,
            vec![WorkloadKind::Counter, WorkloadKind::Set]
        );
        assert_eq!(p.name, "set+counter-partition");
        let p = plan(&args(&[
            "--client",
            "resp",
            "--workload",
            "counter+set",
            "--nemesis",
            "partition,kill,pause",
        ]))
        .unwrap();
        assert_eq!(p.client, ClientKind::Resp);
        assert_eq!(
            p.run.families,
            [Family::Partition, Family::Kill, Family::Pause].into()
        );
        assert_eq!(p.name, "counter+set-partition+kill+pause-resp");
        assert_eq!(plan(&args(&[])).unwrap().client, ClientKind::Native);
        let p = plan(&args(&["--workload", "all+expiry"])).unwrap();
        assert_eq!(p.client, ClientKind::Native);
        assert!(p.run.workloads.contains(&WorkloadKind::Expiry));
        let p = plan(&args(&[
            "--client",
            "resp",
            "--workload",
            "counter+set+expiry",
        ]))
        .unwrap();
        assert_eq!(
            p.run.workloads,
            vec![
                WorkloadKind::Counter,
                WorkloadKind::Set,
                WorkloadKind::Expiry
            ]
        );
        assert!(
            !WorkloadKind::ALL.contains(&WorkloadKind::Expiry),
            "not in all"
        );
        let p = plan(&args(&["--nodes", "3", "--regions", "us"])).unwrap();
        assert_eq!(p.run.regions["n3"], "us");
        let p = plan(&args(&["--nodes", "5", "--regions", "a,b,c,d,e"])).unwrap();
        assert_eq!(p.run.regions["n4"], "d");
        for bad_args in [
            vec!["--nodes", "4"],
            vec!["--workload", "queue"],
            vec!["--nemesis", "chaos"],
            vec!["--consistency", "strong"],
            vec!["--net", "tc"],
            vec!["--regions", "a,a"],
            vec!["--nodes", "5", "--regions", "us,eu"],
            vec!["--rate", "0"],
            vec!["--availability", "2"],
            vec!["--client", "redis"],
            vec!["--client", "resp"],
            vec!["--client", "resp", "--workload", "counter+register"],
            vec!["--client", "resp", "--workload", "all+expiry"],
            vec!["--nemesis", "partition,chaos"],
        ] {
            let e = plan(&args(&bad_args)).unwrap_err();
            assert!(e.downcast_ref::<BadArgs>().is_some(), "{bad_args:?}: {e}");
        }
        let e = plan(&TestArgs {
            meridian: Some("/nonexistent/meridian".into()),
            ..args(&[])
        })
        .unwrap_err();
        assert!(e.downcast_ref::<BadArgs>().is_some());
    }

    #[test]
    fn bad_flags_exit_254_and_help_exits_0() {
        assert_eq!(
            main_with(["meridian-jepsen", "test", "--bogus"].map(Into::into)),
            254
        );
        assert_eq!(
            main_with(["meridian-jepsen", "frobnicate"].map(Into::into)),
            254
        );
        assert_eq!(main_with(["meridian-jepsen", "--help"].map(Into::into)), 0);
        assert_eq!(
            main_with(
                [
                    "meridian-jepsen",
                    "test",
                    "--meridian",
                    "/bin/sh",
                    "--nodes",
                    "7"
                ]
                .map(Into::into)
            ),
            254
        );
    }
}
