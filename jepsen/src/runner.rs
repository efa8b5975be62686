//! Runs one test against a [`Db`]: the main phase (workers + nemesis), then
//! Jepsen's final phase, recording everything in the history.
//!
//! * **Workers**: `concurrency` logical processes (tokio tasks), process `t`
//!   pinned to node `t mod n` (Jepsen assigns nodes to threads round-robin).
//!   Ops are paced globally at `rate` ops/s with Jepsen's `stagger`: uniform
//!   gaps in [0, 2/rate) between successive ops of the whole run, for
//!   `time_limit`. Each op picks a workload uniformly, and a level
//!   (`--consistency`, or for `mixed` uniformly among local, leader,
//!   quorum, all and replicas-N, N uniform in 1 to the node count, except
//!   that a register key keeps one level, see [`register_key_level`]). A process
//!   whose op ends `info` continues as `process + concurrency`.
//! * **Nemesis**: the seeded [`generator::schedule`], ops the run has no
//!   control for skipped (and reported).
//! * **Final phase**: heal everything, resume, restart killed nodes, reset
//!   clocks; the add-wins scenario (set workload, when the network can be
//!   partitioned); wait for recovery — probing every node's copy of every key
//!   (unrecorded reads) until they agree, which measures the convergence
//!   time, and at least `quiescence` (Jepsen sleeps 10 s), stretched past
//!   the largest clock offset ahead of real time the run applied (peers defer
//!   a fast node's deltas until real time catches up); then the final
//!   reads: every key on every node at `local`, `final: true`.
//!
//! Every loop is bounded: by `time_limit`, by `convergence_limit`, and by a
//! fixed number of final-read attempts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use tokio::sync::Mutex as AsyncMutex;

use crate::checker::always::Convergence;
use crate::checker::faults::Family;
use crate::db::{Db, ExpiryCmd, ExpiryReply, Outcome};
use crate::generator::{self, NemesisOp, ScheduleConfig};
use crate::grudge::{PartitionSpec, complete_grudge};
use crate::history::{
    F, History, Invocation, Level, OpType, Process, Recorder, WorkloadKind, next_process,
};
use crate::nemesis::{Nemesis, ProcessControl};
use crate::net::NetFaults;
use crate::workload::large::{LargeConfig, MERGE_KEY, MERGE_SCENARIO};
use crate::workload::{self, Planned, Workload, execute, set::ADD_WINS_KEY};

/// `--consistency`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsistencyChoice {
    Fixed(Level),
    /// `replicas-N` at every op (N of the cluster's node count, known when
    /// the run starts).
    Replicas(u8),
    /// Every op draws one of local, leader, quorum, all and replicas-N
    /// (uniformly among the five; for `replicas`, N uniformly in 1 to the
    /// node count).
    Mixed,
}

impl std::str::FromStr for ConsistencyChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mixed" => Ok(ConsistencyChoice::Mixed),
            "local" | "leader" | "quorum" => Ok(ConsistencyChoice::Fixed(s.parse()?)),
            o => match o.parse::<meridian_client::Consistency>() {
                Ok(meridian_client::Consistency::Replicas(n)) => Ok(ConsistencyChoice::Replicas(n)),
                _ => Err(format!(
                    "unknown consistency {o:?} (local|leader|quorum|replicas-N|mixed)"
                )),
            },
        }
    }
}

impl ConsistencyChoice {
    /// The level of one op on a cluster of `nodes`.
    fn pick(self, rng: &mut impl Rng, nodes: usize) -> Level {
        let of = u8::try_from(nodes).unwrap_or(u8::MAX);
        match self {
            ConsistencyChoice::Fixed(l) => l,
            ConsistencyChoice::Replicas(n) => Level::Replicas { n, of },
            ConsistencyChoice::Mixed => {
                let family = rng.random_range(0..=Level::ALL_LEVELS.len());
                match Level::ALL_LEVELS.get(family) {
                    Some(l) => *l,
                    None => Level::Replicas {
                        n: rng.random_range(1..=of.max(1)),
                        of,
                    },
                }
            }
        }
    }
}

/// With `--consistency mixed`, each register key keeps one level for all
/// its ops, as Jepsen's independent register tests run each key at one
/// setting: that way quorum/`all`/majority `replicas-n` keys (when no clock
/// fault ran) and leader keys (when no fault could cause a failover) stay
/// eligible for the linearizability check, which a key mixing levels never
/// is. Key k's level is the (k mod 5)th of local, leader, quorum, all,
/// replicas-n; for replicas, n goes round 1 to `nodes` with every fifth
/// key, starting at the majority ⌊nodes/2⌋ + 1 (so the first long-lived
/// replicas key is linearizability-eligible).
pub fn register_key_level(key: &str, nodes: usize) -> Level {
    let k = key
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<usize>().ok())
        .unwrap_or(0);
    let families = Level::ALL_LEVELS.len() + 1;
    match Level::ALL_LEVELS.get(k % families) {
        Some(l) => *l,
        None => {
            let of = nodes.clamp(1, usize::from(u8::MAX));
            let n = (k / families + of / 2) % of + 1;
            Level::Replicas {
                n: n as u8,
                of: of as u8,
            }
        }
    }
}

/// Everything that shapes a run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub workloads: Vec<WorkloadKind>,
    pub nodes: Vec<String>,
    /// node → region
    pub regions: BTreeMap<String, String>,
    pub time_limit: Duration,
    /// ops/s, all processes together
    pub rate: f64,
    pub concurrency: usize,
    pub consistency: ConsistencyChoice,
    pub seed: u64,
    /// Per-request timeout handed to the database.
    pub op_timeout: Duration,
    pub families: BTreeSet<Family>,
    pub interval: Duration,
    /// Minimum wait between the final heal and the final reads.
    pub quiescence: Duration,
    /// Longest wait for all nodes to agree after the heal.
    pub convergence_limit: Duration,
    pub add_wins_scenario: bool,
    /// The negative control: after the main phase, isolate a node, make
    /// local-only writes there, SIGKILL it and delete its data directory,
    /// restart it empty and heal. Acknowledged writes are then really lost,
    /// and the checkers must say so.
    pub wipe_control: bool,
    /// Sizes of the large workload and its merge scenario.
    pub large: LargeConfig,
    /// Run the large workload's scripted merge scenario (when the large
    /// workload runs and the network is under control).
    pub large_merge_scenario: bool,
    /// How long the `outage` nemesis keeps its node cut off.
    pub outage: Duration,
}

impl RunConfig {
    /// Defaults for a cluster of `nodes` (one region each unless told).
    pub fn new(nodes: Vec<String>) -> RunConfig {
        RunConfig {
            workloads: WorkloadKind::ALL.to_vec(),
            regions: nodes
                .iter()
                .map(|n| (n.clone(), "r1".to_string()))
                .collect(),
            nodes,
            time_limit: Duration::from_secs(60),
            rate: 200.0,
            concurrency: 10,
            consistency: ConsistencyChoice::Mixed,
            seed: 0,
            op_timeout: Duration::from_secs(5),
            families: BTreeSet::new(),
            interval: generator::DEFAULT_INTERVAL,
            quiescence: Duration::from_secs(10),
            convergence_limit: Duration::from_secs(60),
            add_wins_scenario: true,
            wipe_control: false,
            large: LargeConfig::default(),
            large_merge_scenario: true,
            outage: generator::DEFAULT_OUTAGE,
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutput {
    pub history: History,
    pub convergence: Option<Convergence>,
    /// Things the user should know (skipped nemesis ops, unhealthy network).
    pub warnings: Vec<String>,
}

/// Jepsen's stagger over the whole run: the next op's start time.
struct Pacer {
    next: Duration,
    rng: ChaCha8Rng,
    gap_ns: u64,
    limit: Duration,
}

/// How far the pacer's schedule may fall behind the clock. When every
/// worker is stuck (nodes down, requests waiting out their timeouts), the
/// slots they missed are dropped rather than run in a burst afterwards — and
/// never past the time limit.
const MAX_PACER_LAG: Duration = Duration::from_secs(1);

impl Pacer {
    /// The next op's start time, given the time elapsed now; `None` once the
    /// time limit is reached.
    fn next(&mut self, elapsed: Duration) -> Option<Duration> {
        if elapsed >= self.limit {
            return None;
        }
        if self.next + MAX_PACER_LAG < elapsed {
            self.next = elapsed;
        }
        self.next += Duration::from_nanos(self.rng.random_range(0..self.gap_ns.max(1)));
        (self.next < self.limit).then_some(self.next)
    }
}

/// What every worker shares: the database, the recorder, the workloads and the pacer.
struct WorkerContext<D: Db> {
    db: Arc<D>,
    rec: Arc<Recorder>,
    workloads: Vec<Box<dyn Workload>>,
    pacer: AsyncMutex<Pacer>,
    stop: Arc<AtomicBool>,
    cfg: RunConfig,
}

async fn worker<D: Db>(s: Arc<WorkerContext<D>>, thread: usize) {
    let n = s.cfg.nodes.len();
    let node = s.cfg.nodes[thread % n].clone();
    let mut process = thread as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(
        s.cfg
            .seed
            .wrapping_mul(0x100_0000_01b3)
            .wrapping_add(thread as u64 + 1),
    );
    let start = s.rec.start();
    loop {
        let Some(at) = s.pacer.lock().await.next(start.elapsed()) else {
            break;
        };
        tokio::time::sleep_until((start + at).into()).await;
        if s.stop.load(Ordering::SeqCst) {
            break;
        }
        let w = &s.workloads[rng.random_range(0..s.workloads.len())];
        let planned = w.plan(process, &node, &mut rng);
        // Always drawn, so the RNG stream does not depend on the workload.
        let drawn = s.cfg.consistency.pick(&mut rng, n);
        let level = if s.cfg.consistency == ConsistencyChoice::Mixed
            && planned.workload == WorkloadKind::Register
        {
            register_key_level(&planned.key, n)
        } else {
            drawn
        };
        let c = record_op(
            s.db.as_ref(),
            &s.rec,
            process,
            &node,
            level,
            &planned,
            false,
            s.cfg.op_timeout,
        )
        .await;
        w.completed(process, &node, &planned, &c);
        if c.kind == OpType::Info {
            process = next_process(process, s.cfg.concurrency as u64);
        }
    }
}

/// Invokes, executes and completes one op in the history.
#[allow(clippy::too_many_arguments)]
async fn record_op<D: Db>(
    db: &D,
    rec: &Recorder,
    process: u64,
    node: &str,
    level: Level,
    p: &Planned,
    is_final: bool,
    timeout: Duration,
) -> workload::Completion {
    let inv = rec.invoke(Invocation {
        process: Process::Client(process),
        f: p.f,
        key: Some(p.key.clone()),
        value: p.value.clone(),
        consistency: Some(level),
        node: Some(node.to_string()),
        is_final,
        meta: p.meta.clone(),
    });
    let c = execute(db, p, node, level, timeout).await;
    rec.complete(
        &inv,
        c.kind,
        c.value.clone(),
        c.error.clone(),
        c.meta.clone(),
    );
    c
}

/// One unrecorded probe of a key on a node, as comparable JSON.
async fn probe<D: Db>(
    db: &D,
    kind: WorkloadKind,
    key: &str,
    node: &str,
    timeout: Duration,
) -> Option<Value> {
    let kind = match kind {
        WorkloadKind::Large => WorkloadKind::of_key(key)?,
        k => k,
    };
    let decode = crate::workload::large::decode;
    match kind {
        WorkloadKind::Counter => match db.counter_read(node, key, Level::Local, timeout).await {
            Outcome::Ok(v, _) => Some(json!(v)),
            _ => None,
        },
        WorkloadKind::Set => match db.set_read(node, key, Level::Local, timeout).await {
            Outcome::Ok(v, _) => {
                let mut v: Vec<String> = v.iter().map(|m| decode(m)).collect();
                v.sort();
                Some(json!(v))
            }
            _ => None,
        },
        WorkloadKind::Register => match db.register_read(node, key, Level::Local, timeout).await {
            Outcome::Ok(v, m) => Some(json!({"v": v.map(|v| decode(&v)), "hlc": m.hlc})),
            _ => None,
        },
        WorkloadKind::Map => match db.map_read(node, key, Level::Local, timeout).await {
            Outcome::Ok(v, _) => Some(json!(v)),
            _ => None,
        },
        WorkloadKind::Expiry => {
            match db
                .expiry(node, key, ExpiryCmd::Get, Level::Local, timeout)
                .await
            {
                Outcome::Ok(ExpiryReply::Value(v), _) => Some(json!(v)),
                _ => None,
            }
        }
        WorkloadKind::Large => None,
    }
}

/// The key [`expiry_preflight`] writes (never read by the workload, and
/// not in the history).
pub const EXPIRY_PREFLIGHT_KEY: &str = "expiry-preflight";

/// TTL of the preflight's value, in ms: long enough to outlive the
/// preflight's own `PEXPIRE` and `PERSIST`, then gone within the run.
pub const EXPIRY_PREFLIGHT_TTL_MS: u64 = 60_000;

/// Before an expiry run: one `SET .. PX`, `PEXPIRE` and `PERSIST` on the
/// first node, unrecorded, so that nodes without TTL commands (an
/// `unknown command`, a `SET` option refused) stop the run at once with a
/// clear error instead of a whole run of failed ops.
pub async fn expiry_preflight<D: Db>(db: &D, node: &str, timeout: Duration) -> anyhow::Result<()> {
    let key = EXPIRY_PREFLIGHT_KEY;
    let cmds = [
        (
            "SET .. PX",
            ExpiryCmd::Set {
                value: "preflight",
                ttl_ms: Some(EXPIRY_PREFLIGHT_TTL_MS),
            },
        ),
        (
            "PEXPIRE",
            ExpiryCmd::Expire {
                ttl_ms: EXPIRY_PREFLIGHT_TTL_MS,
            },
        ),
        ("PERSIST", ExpiryCmd::Persist),
    ];
    for (name, cmd) in cmds {
        match db.expiry(node, key, cmd, Level::Local, timeout).await {
            Outcome::Ok(..) => {}
            Outcome::Fail(e) | Outcome::Info(e) => anyhow::bail!(
                "--workload expiry: {node} refused {name} ({e}); the nodes need the TTL \
                 commands (SET .. PX, PEXPIRE, PERSIST) to run the expiry workload"
            ),
        }
    }
    Ok(())
}

/// Runs a whole test. `stop` ends the main phase early (Ctrl-C); the final
/// heal still runs, the waits and final reads are skipped.
pub async fn run<D: Db>(
    db: Arc<D>,
    net: Option<Arc<dyn NetFaults>>,
    procs: Option<Arc<dyn ProcessControl>>,
    cfg: RunConfig,
    rec: Arc<Recorder>,
    progress: ProgressBar,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<RunOutput> {
    anyhow::ensure!(!cfg.nodes.is_empty(), "no nodes");
    anyhow::ensure!(
        cfg.concurrency > 0 && cfg.rate > 0.0,
        "concurrency and rate must be positive"
    );
    let mut warnings = Vec::new();
    let clock = cfg.families.contains(&Family::Clock).then(|| db.clone());
    let mut nemesis = Nemesis::new(
        rec.clone(),
        cfg.nodes.clone(),
        net.clone(),
        procs.clone(),
        clock,
    );
    let sched: Vec<generator::Scheduled> = generator::schedule(&ScheduleConfig {
        families: cfg.families.clone(),
        interval: cfg.interval,
        time_limit: cfg.time_limit,
        nodes: cfg.nodes.clone(),
        regions: cfg.regions.clone(),
        seed: cfg.seed,
        outage: cfg.outage,
    });
    let (runnable, skipped): (Vec<_>, Vec<_>) =
        sched.into_iter().partition(|s| nemesis.supports(&s.op));
    if !skipped.is_empty() {
        warnings.push(format!(
            "{} nemesis ops skipped: this run has no control for them",
            skipped.len()
        ));
    }

    if cfg.workloads.contains(&WorkloadKind::Expiry) {
        expiry_preflight(db.as_ref(), &cfg.nodes[0], cfg.op_timeout).await?;
    }

    let shared = Arc::new(WorkerContext {
        db: db.clone(),
        rec: rec.clone(),
        workloads: workload::build(&cfg.workloads, cfg.large),
        pacer: AsyncMutex::new(Pacer {
            next: Duration::ZERO,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed),
            gap_ns: (2e9 / cfg.rate) as u64,
            limit: cfg.time_limit,
        }),
        stop: stop.clone(),
        cfg: cfg.clone(),
    });

    // Main phase.
    progress.set_length(cfg.time_limit.as_secs().max(1));
    let workers: Vec<_> = (0..cfg.concurrency)
        .map(|t| tokio::spawn(worker(shared.clone(), t)))
        .collect();
    let start = rec.start();
    nemesis.set_deadline(Some(start + cfg.time_limit));
    let nemesis_stop = stop.clone();
    let nemesis_task = tokio::spawn(async move {
        for s in runnable {
            tokio::time::sleep_until((start + s.at).into()).await;
            if nemesis_stop.load(Ordering::SeqCst) {
                break;
            }
            nemesis.run(&s.op).await;
        }
        nemesis
    });
    let ticker = {
        let (p, r, limit) = (progress.clone(), rec.clone(), cfg.time_limit);
        tokio::spawn(async move {
            loop {
                let el = start.elapsed().min(limit);
                p.set_position(el.as_secs());
                p.set_message(format!("{} ops", r.len()));
                if el >= limit {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    for w in workers {
        w.await?;
    }
    let mut nemesis = nemesis_task.await?;
    nemesis.set_deadline(None);
    ticker.abort();
    progress.finish_with_message(format!("{} ops", rec.len()));
    if let Some(n) = &net
        && !n.healthy()
    {
        warnings.push(format!(
            "the {} network backend became unhealthy during the run",
            n.backend()
        ));
    }

    // Final phase.
    nemesis.final_heal().await;
    // A node that ran X ms ahead stamped deltas its peers defer until real
    // time passes those stamps: wait at least that long (plus a margin)
    // after the clocks were reset, on top of Jepsen's quiescence.
    let quiescence = match u64::try_from(nemesis.max_ahead_ms()) {
        Ok(ahead) if ahead > 0 => cfg
            .quiescence
            .max(Duration::from_millis(ahead) + CLOCK_QUIESCENCE_MARGIN),
        _ => cfg.quiescence,
    };
    let stopped = stop.load(Ordering::SeqCst);
    let mut final_keys: Vec<(WorkloadKind, String)> = shared
        .workloads
        .iter()
        .flat_map(|w| {
            w.keys()
                .into_iter()
                .map(move |k| (WorkloadKind::of_key(&k).unwrap_or(w.kind()), k))
        })
        .collect();
    let mut next_proc = (cfg.concurrency as u64) * 1_000_000;
    if !stopped && cfg.wipe_control && net.is_some() && procs.is_some() && cfg.nodes.len() >= 2 {
        let keys = wipe_scenario(&db, &rec, &mut nemesis, &cfg, next_proc).await;
        next_proc += 10;
        for k in keys {
            if !final_keys.contains(&k) {
                final_keys.push(k);
            }
        }
    }
    if !stopped
        && cfg.add_wins_scenario
        && cfg.workloads.contains(&WorkloadKind::Set)
        && net.is_some()
        && cfg.nodes.len() >= 2
    {
        add_wins_scenario(&db, &rec, &mut nemesis, &cfg, next_proc).await;
        next_proc += 10;
        final_keys.push((WorkloadKind::Set, ADD_WINS_KEY.to_string()));
    } else if !stopped && cfg.workloads.contains(&WorkloadKind::Set) {
        // The set checker reports `add-wins-scenario: {ran: false}` too.
        warnings.push(
            "the scripted add-wins scenario did not run (it needs control of the network, \
             two nodes, and add_wins_scenario): add-wins is not confirmed by this run"
                .to_string(),
        );
    }
    if !stopped && cfg.workloads.contains(&WorkloadKind::Large) {
        if cfg.large_merge_scenario && net.is_some() && cfg.nodes.len() >= 2 {
            large_merge_scenario(&db, &rec, &mut nemesis, &cfg, next_proc).await;
            next_proc += 1000 * cfg.nodes.len() as u64;
            final_keys.push((WorkloadKind::Set, MERGE_KEY.to_string()));
        } else {
            warnings.push(
                "the large workload's merge scenario did not run (it needs control of the \
                 network and two nodes): no set grew past one write's limit by merges"
                    .to_string(),
            );
        }
    }
    let heal_ns = rec.now_ns();
    let heal = Instant::now();
    let mut convergence = None;
    if !stopped {
        let mut converged_after = None;
        while heal.elapsed() < cfg.convergence_limit && !stop.load(Ordering::SeqCst) {
            let mut agree = true;
            for (kind, key) in &final_keys {
                let mut seen = BTreeSet::new();
                for node in &cfg.nodes {
                    match probe(db.as_ref(), *kind, key, node, cfg.op_timeout).await {
                        Some(v) => {
                            seen.insert(v.to_string());
                        }
                        None => agree = false,
                    }
                }
                agree &= seen.len() <= 1;
            }
            if agree {
                converged_after = Some(heal.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        convergence = Some(Convergence {
            heal_time_ns: heal_ns,
            converged_after_ms: converged_after.map(|d| d.as_millis() as u64),
            waited_ms: heal.elapsed().as_millis() as u64,
        });
        if let Some(rest) = quiescence.checked_sub(heal.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        // Final reads: every key on every node, a few attempts each.
        for (kind, key) in &final_keys {
            for node in &cfg.nodes {
                for _attempt in 0..FINAL_READ_ATTEMPTS {
                    let p = Planned {
                        workload: *kind,
                        f: F::Read,
                        key: key.clone(),
                        value: Value::Null,
                        meta: None,
                    };
                    let c = record_op(
                        db.as_ref(),
                        &rec,
                        next_proc,
                        node,
                        Level::Local,
                        &p,
                        true,
                        cfg.op_timeout,
                    )
                    .await;
                    if c.kind == OpType::Info {
                        next_proc += 1;
                    }
                    if c.kind == OpType::Ok {
                        break;
                    }
                }
            }
        }
    }
    Ok(RunOutput {
        history: rec.snapshot(),
        convergence,
        warnings,
    })
}

/// Added to the largest clock offset ahead of real time when sizing the
/// final wait: covers the peers' `max_clock_offset` slack and their retry
/// interval for deferred deltas.
pub const CLOCK_QUIESCENCE_MARGIN: Duration = Duration::from_secs(5);

/// Tries per final read before giving up on a (key, node).
pub const FINAL_READ_ATTEMPTS: usize = 3;

/// Local writes the negative control makes on the isolated node, per
/// workload.
pub const WIPE_WRITES: usize = 3;

/// The negative control (see [`RunConfig::wipe_control`]): isolate the first
/// node, acknowledge [`WIPE_WRITES`] `local` writes per workload there (a
/// counter add of +1, +2, +4 on a key of its own, a new set member, a
/// register write on a key of its own, so LWW must pick it), kill it,
/// delete its data directory, restart it and heal. Returns the keys written, for the final reads.
async fn wipe_scenario<D: Db>(
    db: &Arc<D>,
    rec: &Arc<Recorder>,
    nemesis: &mut Nemesis<D>,
    cfg: &RunConfig,
    process: u64,
) -> Vec<(WorkloadKind, String)> {
    let a = cfg.nodes[0].clone();
    let others: Vec<String> = cfg.nodes.iter().filter(|n| **n != a).cloned().collect();
    nemesis
        .run(&NemesisOp::StartPartition {
            spec: PartitionSpec::One,
            grudge: complete_grudge(&[vec![a.clone()], others]),
        })
        .await;
    let tag = Some(json!({"scenario": "wipe-data"}));
    let mut p = process;
    let mut keys = Vec::new();
    for kind in &cfg.workloads {
        let key = match kind {
            WorkloadKind::Counter => "counter-wipe".to_string(),
            WorkloadKind::Set => WorkloadKind::Set.key(0),
            WorkloadKind::Register => "register-wipe".to_string(),
            // The negative control of the other workloads is enough: the
            // large workload is judged by the same checkers.
            WorkloadKind::Large => continue,
            // Not wired into the wipe scenario yet: the map checker's own
            // negative controls are the MemoryDb mutants.
            WorkloadKind::Map => continue,
            // Likewise: the expiry checker's negative controls are the
            // MemoryDb mutants (expire_early, never_expire).
            WorkloadKind::Expiry => continue,
        };
        for i in 0..WIPE_WRITES {
            let (f, value) = match kind {
                // Distinct powers of two, like the workload's deltas.
                WorkloadKind::Counter => (F::Add, json!(1i64 << i)),
                WorkloadKind::Set => (F::Add, json!(format!("wipe-{i}"))),
                WorkloadKind::Register
                | WorkloadKind::Large
                | WorkloadKind::Map
                | WorkloadKind::Expiry => (F::Write, json!(format!("wipe-{i}-p{p}"))),
            };
            let planned = Planned {
                workload: *kind,
                f,
                key: key.clone(),
                value,
                meta: tag.clone(),
            };
            let c = record_op(
                db.as_ref(),
                rec,
                p,
                &a,
                Level::Local,
                &planned,
                false,
                cfg.op_timeout,
            )
            .await;
            if c.kind == OpType::Info {
                p += 1;
            }
        }
        keys.push((*kind, key));
    }
    nemesis.run(&NemesisOp::WipeData { node: a }).await;
    nemesis.run(&NemesisOp::Start).await;
    nemesis.run(&NemesisOp::StopPartition).await;
    keys
}

/// The large workload's merge scenario: isolate every node from every
/// other, then on all nodes at once add
/// [`LargeConfig::merge_adds_per_node`] members of
/// [`LargeConfig::member_bytes`] to [`MERGE_KEY`] at `local` (each node's
/// share is under the object limit, so each add is accepted), and heal.
/// Together they pass [`meridian_client::wire::MAX_OBJECT_BYTES`]: a set no
/// single write could make, which every node must now receive by merges.
/// The ops carry `meta.scenario` = [`MERGE_SCENARIO`]. Processes
/// `process + 1000·i` (node i), each retired on `info` like any process.
async fn large_merge_scenario<D: Db>(
    db: &Arc<D>,
    rec: &Arc<Recorder>,
    nemesis: &mut Nemesis<D>,
    cfg: &RunConfig,
    process: u64,
) {
    let alone: Vec<Vec<String>> = cfg.nodes.iter().map(|n| vec![n.clone()]).collect();
    nemesis
        .run(&NemesisOp::StartPartition {
            spec: PartitionSpec::Isolated,
            grudge: complete_grudge(&alone),
        })
        .await;
    let adds = cfg.large.merge_adds_per_node(cfg.nodes.len());
    let member_bytes = cfg.large.member_bytes;
    let tasks: Vec<_> = cfg
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (db, rec, node) = (db.clone(), rec.clone(), node.clone());
            let timeout = cfg.op_timeout;
            tokio::spawn(async move {
                let mut p = process + 1000 * i as u64;
                for j in 0..adds {
                    let planned = Planned {
                        workload: WorkloadKind::Set,
                        f: F::Add,
                        key: MERGE_KEY.to_string(),
                        value: json!(format!("M{i}-{j}")),
                        meta: Some(json!({"bytes": member_bytes, "scenario": MERGE_SCENARIO})),
                    };
                    let c = record_op(
                        db.as_ref(),
                        &rec,
                        p,
                        &node,
                        Level::Local,
                        &planned,
                        false,
                        timeout,
                    )
                    .await;
                    if c.kind == OpType::Info {
                        p += 1;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    nemesis.run(&NemesisOp::StopPartition).await;
}

/// The scripted add-wins check: add e on A; wait until B has it; read it on
/// A; isolate A; re-add e on B, then remove e on A (which never saw the
/// re-add); heal. Add-wins keeps e; a remove-wins (or LWW) set loses it.
async fn add_wins_scenario<D: Db>(
    db: &Arc<D>,
    rec: &Arc<Recorder>,
    nemesis: &mut Nemesis<D>,
    cfg: &RunConfig,
    process: u64,
) {
    let (a, b) = (cfg.nodes[0].clone(), cfg.nodes[1].clone());
    let tag = Some(json!({"scenario": crate::checker::set::ADD_WINS_SCENARIO}));
    let op = |f: F, value: Value| Planned {
        workload: WorkloadKind::Set,
        f,
        key: ADD_WINS_KEY.to_string(),
        value,
        meta: tag.clone(),
    };
    let e = json!("aw-1");
    let t = cfg.op_timeout;
    let mut p = process;
    // A process whose op ends `info` is retired.
    let step = |p: &mut u64, c: &workload::Completion| {
        if c.kind == OpType::Info {
            *p += 1;
        }
    };
    let c = record_op(
        db.as_ref(),
        rec,
        p,
        &a,
        Level::Local,
        &op(F::Add, e.clone()),
        false,
        t,
    )
    .await;
    step(&mut p, &c);
    // Wait (bounded) until B holds e, so the remove on A and the re-add on B
    // both know the first add.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let c = record_op(
            db.as_ref(),
            rec,
            p,
            &b,
            Level::Local,
            &op(F::Read, Value::Null),
            false,
            t,
        )
        .await;
        step(&mut p, &c);
        if c.value.as_array().is_some_and(|v| v.contains(&e)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = record_op(
        db.as_ref(),
        rec,
        p,
        &a,
        Level::Local,
        &op(F::Read, Value::Null),
        false,
        t,
    )
    .await;
    step(&mut p, &c);
    let others: Vec<String> = cfg.nodes.iter().filter(|n| **n != a).cloned().collect();
    nemesis
        .run(&NemesisOp::StartPartition {
            spec: PartitionSpec::One,
            grudge: complete_grudge(&[vec![a.clone()], others]),
        })
        .await;
    let c = record_op(
        db.as_ref(),
        rec,
        p,
        &b,
        Level::Local,
        &op(F::Add, e.clone()),
        false,
        t,
    )
    .await;
    step(&mut p, &c);
    record_op(
        db.as_ref(),
        rec,
        p,
        &a,
        Level::Local,
        &op(F::Remove, e.clone()),
        false,
        t,
    )
    .await;
    nemesis.run(&NemesisOp::StopPartition).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{
        CheckContext, LinearizableScope, Validity, compose, standard_checkers, workloads_in,
    };
    use crate::db::{MemoryBugs, MemoryDb};
    use crate::nemesis::ProcessControl;

    fn cfg(seed: u64) -> RunConfig {
        let nodes: Vec<String> = vec!["n1".into(), "n2".into(), "n3".into()];
        let mut c = RunConfig::new(nodes);
        c.time_limit = Duration::from_millis(1500);
        c.rate = 400.0;
        c.concurrency = 6;
        c.seed = seed;
        c.quiescence = Duration::ZERO;
        c.convergence_limit = Duration::from_secs(2);
        c
    }

    async fn run_and_check(
        db: MemoryDb,
        c: RunConfig,
        net: Option<Arc<dyn NetFaults>>,
    ) -> (RunOutput, crate::checker::CheckResult) {
        let rec = Arc::new(Recorder::new(Instant::now()));
        let out = run(
            Arc::new(db),
            net,
            None::<Arc<dyn ProcessControl>>,
            c,
            rec,
            ProgressBar::hidden(),
            Arc::new(AtomicBool::new(false)),
        )
        .await
        .unwrap();
        let mut ctx = CheckContext::new();
        ctx.linearizable = LinearizableScope::from_history(&out.history);
        ctx.convergence = out.convergence.clone();
        let r = compose(
            &standard_checkers(&workloads_in(&out.history)),
            &out.history,
            &ctx,
        );
        (out, r)
    }

    /// The whole pipeline against a correct store: valid (or unknown only
    /// when some f never succeeded, which cannot happen here).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn correct_store_is_valid_end_to_end() {
        let (out, r) = run_and_check(MemoryDb::new(MemoryBugs::default()), cfg(1), None).await;
        let h = &out.history;
        // How many ops fit in the run depends on the machine's load (a rate
        // belongs in a benchmark): what matters is that there were ops
        // before the final reads, from several processes (below).
        assert!(
            h.ops.iter().any(|o| !o.is_final),
            "no ops before the final reads"
        );
        let finals = h.ops.iter().filter(|o| o.is_final && o.is_ok()).count();
        assert!(finals >= 3 * 3, "final reads on every node");
        assert_eq!(r.valid, Validity::True, "{:#}", r.to_json());
        assert!(out.convergence.unwrap().converged_after_ms.is_some());
        let procs: BTreeSet<Process> = h.ops.iter().map(|o| o.process).collect();
        assert!(procs.len() >= 6);
    }

    /// A network that changes nothing: the nemesis schedules and records
    /// partitions against [`MemoryDb`] (one copy, which a partition cannot
    /// split), so the history has partition windows for the checkers to
    /// reason about — long-lived register keys living through them, above
    /// all. The add-wins scenario is off with it: a single-copy set cannot
    /// be add-wins across a partition that does not exist.
    struct NullNet;

    impl NetFaults for NullNet {
        fn backend(&self) -> &'static str {
            "null"
        }
        fn partition(&self, _: &crate::grudge::Grudge) -> anyhow::Result<()> {
            Ok(())
        }
        fn cut(&self, _: &str, _: &str) -> anyhow::Result<()> {
            Ok(())
        }
        fn heal(&self) -> anyhow::Result<()> {
            Ok(())
        }
        fn set_delay(&self, _: &str, _: &str, _: crate::net::Delay) -> anyhow::Result<()> {
            Ok(())
        }
    }

    /// A run with (recorded) partitions every ~200 ms. (Clock faults would
    /// stretch the final wait by the offset applied plus 5 s.)
    fn faulty_cfg(seed: u64) -> RunConfig {
        let mut c = cfg(seed);
        c.families = [Family::Partition].into();
        c.interval = Duration::from_millis(200);
        c.add_wins_scenario = false;
        c
    }

    async fn faulty_run(
        bugs: MemoryBugs,
        c: RunConfig,
    ) -> (RunOutput, crate::checker::CheckResult) {
        let net: Arc<dyn NetFaults> = Arc::new(NullNet);
        run_and_check(MemoryDb::new(bugs), c, Some(net)).await
    }

    /// Asserts the verdict is invalid and that each named checker says so.
    fn flagged_by(r: &crate::checker::CheckResult, checkers: &[&str]) {
        let j = r.to_json();
        assert_eq!(r.valid, Validity::False, "{j:#}");
        for c in checkers {
            assert_eq!(
                j[c]["valid"],
                json!(false),
                "{c} did not flag it: {:#}",
                j[c]
            );
        }
    }

    /// The correct store through partitions and clock faults: valid, and
    /// long-lived register keys whose lives span a partition were checked
    /// for linearizability.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn correct_store_is_valid_through_faults_with_long_lived_keys_checked() {
        let mut c = faulty_cfg(3);
        c.workloads = vec![WorkloadKind::Register];
        let (out, r) = faulty_run(MemoryBugs::default(), c).await;
        let j = r.to_json();
        assert_eq!(r.valid, Validity::True, "{j:#}");
        let long: Vec<String> = serde_json::from_value(
            j["register"]["linearizable"]["checked-long-lived-keys"].clone(),
        )
        .unwrap();
        let windows = crate::checker::faults::windows(&out.history);
        let spans_partition = |key: &str| {
            let times: Vec<u64> = out
                .history
                .ops
                .iter()
                .filter(|o| o.key.as_deref() == Some(key) && !o.is_final)
                .map(|o| o.time)
                .collect();
            let (first, last) = (times[0], times[times.len() - 1]);
            windows.iter().any(|w| {
                w.family == Family::Partition && first < w.shade_start && w.shade_end < last
            })
        };
        assert!(
            long.iter().any(|k| spans_partition(k)),
            "no checked long-lived key lived through a whole partition: {long:?}"
        );
        // And under clock faults the leader long-lived key stays eligible.
        let mut c = faulty_cfg(4);
        c.families = [Family::Clock].into();
        c.workloads = vec![WorkloadKind::Register];
        c.consistency = ConsistencyChoice::Fixed(Level::Leader);
        c.concurrency = 1; // one process, one node: one leader seen
        let (_, r) = faulty_run(MemoryBugs::default(), c).await;
        let j = r.to_json();
        assert_eq!(r.valid, Validity::True, "{j:#}");
        assert!(
            !j["register"]["linearizable"]["checked-long-lived-keys"]
                .as_array()
                .unwrap()
                .is_empty(),
            "{:#}",
            j["register"]["linearizable"]
        );
    }

    /// The large workload against [`MemoryDb`]: 64 KiB register values,
    /// 1 MiB members, and the merge scenario (18 MiB over three nodes).
    fn large_cfg(seed: u64) -> RunConfig {
        let mut c = faulty_cfg(seed);
        c.workloads = vec![WorkloadKind::Large];
        c.rate = 40.0;
        c.large = LargeConfig {
            value_bytes: 64 << 10,
            member_bytes: 1 << 20,
            ..LargeConfig::default()
        };
        c
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn correct_store_is_valid_with_large_values_and_a_merge_past_the_object_limit() {
        let (out, r) = faulty_run(MemoryBugs::default(), large_cfg(5)).await;
        let j = r.to_json();
        assert_eq!(r.valid, Validity::True, "{j:#}");
        assert_eq!(
            j["large"]["merge"]["past-object-limit"],
            json!(true),
            "{j:#}"
        );
        assert_eq!(j["large"]["merge"]["valid"], json!(true));
        // The merge ran inside an `isolated` partition window.
        assert!(
            out.history
                .nemesis_ops()
                .any(|o| o.value == json!("isolated"))
        );
        // Large keys were judged by the set and register checkers too.
        assert!(j["set"].is_object() && j["register"].is_object(), "{j:#}");
    }

    /// Mutant: every 3rd large value read comes back one byte short.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutant_corrupt_large_values_is_invalid() {
        let bugs = MemoryBugs {
            corrupt_every_nth_large_read: Some(3),
            ..MemoryBugs::default()
        };
        let (_, r) = faulty_run(bugs, large_cfg(6)).await;
        flagged_by(&r, &["large", "set", "register"]);
        assert!(
            r.to_json()["large"]["corrupt-reads-count"]
                .as_u64()
                .unwrap()
                > 0
        );
    }

    /// Mutant: set replies silently cut at the object limit (what a store
    /// that bounds replies without paging or counting would return): the
    /// merged set's final reads miss acknowledged members.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutant_silently_capped_big_set_reads_is_invalid() {
        let bugs = MemoryBugs {
            cap_set_read_bytes: Some(meridian_client::wire::MAX_OBJECT_BYTES),
            ..MemoryBugs::default()
        };
        let (_, r) = faulty_run(bugs, large_cfg(7)).await;
        flagged_by(&r, &["large", "set"]);
        assert!(
            !r.to_json()["large"]["merge"]["missing"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }

    /// Mutant: acknowledged writes lost (every 7th counter add, 5th set add,
    /// 6th register write), among indeterminate writes (every 4th write is
    /// applied but answered `info`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutant_lost_acknowledged_writes_is_invalid() {
        let bugs = MemoryBugs {
            drop_every_nth_counter_add: Some(7),
            drop_every_nth_set_add: Some(5),
            drop_every_nth_register_write: Some(6),
            info_every_nth_write: Some(4),
            ..MemoryBugs::default()
        };
        let (_, r) = faulty_run(bugs, faulty_cfg(2)).await;
        flagged_by(&r, &["counter", "set", "register"]);
        // Only counters and sets, at quorum (the old end-to-end test).
        let mut c = cfg(2);
        c.workloads = vec![WorkloadKind::Counter, WorkloadKind::Set];
        c.consistency = ConsistencyChoice::Fixed(Level::Quorum);
        let (_, r) = run_and_check(MemoryDb::new(bugs), c, None).await;
        flagged_by(&r, &["counter", "set"]);
    }

    /// Mutant: every 3rd read answers with the state from before the key's
    /// latest write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutant_stale_reads_is_invalid() {
        let bugs = MemoryBugs {
            stale_every_nth_read: Some(3),
            ..MemoryBugs::default()
        };
        let mut c = faulty_cfg(5);
        c.consistency = ConsistencyChoice::Fixed(Level::Quorum);
        let (_, r) = faulty_run(bugs, c).await;
        flagged_by(&r, &["counter", "set", "register"]);
        assert!(
            !r.to_json()["register"]["linearizable"]["invalid-keys"]
                .as_array()
                .unwrap()
                .is_empty(),
            "quorum keys are not linearizable"
        );
        // At `leader`: a later read on the same leader went back.
        let mut c = faulty_cfg(6);
        c.consistency = ConsistencyChoice::Fixed(Level::Leader);
        let (_, r) = faulty_run(bugs, c).await;
        flagged_by(&r, &["session"]);
        assert!(
            r.to_json()["session"]["monotonic-read-violation-count"]
                .as_u64()
                .unwrap()
                > 0
        );
    }

    /// Mutant: node n3 keeps its own copy forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutant_divergence_is_invalid() {
        let bugs = MemoryBugs {
            diverge_node: Some("n3"),
            ..MemoryBugs::default()
        };
        let (_, r) = faulty_run(bugs, faulty_cfg(7)).await;
        flagged_by(&r, &["counter", "set", "register", "convergence"]);
        let j = r.to_json();
        for c in ["counter", "register"] {
            let d = if c == "counter" {
                &j[c]["divergent"]
            } else {
                &j[c]["final"]["divergent"]
            };
            assert!(!d.as_array().unwrap().is_empty(), "{c}: {d}");
        }
        assert!(
            !j["set"]["final"]["divergent"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }

    /// Mutant: removed set members come back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutant_resurrection_is_invalid() {
        let bugs = MemoryBugs {
            resurrect_removed: true,
            ..MemoryBugs::default()
        };
        let mut c = faulty_cfg(8);
        c.workloads = vec![WorkloadKind::Set];
        let (_, r) = faulty_run(bugs, c).await;
        flagged_by(&r, &["set"]);
        assert!(
            r.to_json()["set"]["final"]["resurrected-count"]
                .as_u64()
                .unwrap()
                > 0
        );
    }

    /// Mutant: a write from another node loses to the older value.
    /// A map run against [`MemoryDb`] through recorded partitions.
    fn map_cfg(seed: u64, level: Option<Level>) -> RunConfig {
        let mut c = faulty_cfg(seed);
        c.workloads = vec![WorkloadKind::Map];
        if let Some(l) = level {
            c.consistency = ConsistencyChoice::Fixed(l);
        }
        c
    }

    /// The correct store through the map workload: valid, with every rule
    /// of the map checker exercised (removes judged at `local`, where each
    /// node field's writes and its remove are served by one node; final
    /// values ordered against later writes; counter fields judged).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn correct_store_is_valid_with_maps() {
        for (seed, level) in [(11, None), (12, Some(Level::Local))] {
            let (_, r) = faulty_run(MemoryBugs::default(), map_cfg(seed, level)).await;
            let j = &r.to_json()["map"];
            assert_eq!(r.valid, Validity::True, "{:#}", r.to_json());
            assert!(j["lww-fields-judged"].as_u64().unwrap() > 0, "{j:#}");
            assert_eq!(j["counter-fields"]["valid"], json!(true));
            if level.is_some() {
                assert!(j["removes-judged"].as_u64().unwrap() > 0, "{j:#}");
            }
        }
    }

    /// Lost field writes (every 5th `HSET`/`HINCRBY` acknowledged, not
    /// applied, among `info` noise): the counter fields catch it in every
    /// run (a lost power-of-two increment changes a bit no `info` one
    /// owns). A lost `HSET` is visible only when it was a field's last
    /// write (`lww-inversions`) or its only one (`lost-writes`), which
    /// depends on timing, so it is not asserted here: the unit tests in
    /// `checker::map` and the LWW-inversion mutant below pin those rules.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutant_lost_map_field_writes_is_invalid() {
        let bugs = MemoryBugs {
            drop_every_nth_map_write: Some(5),
            info_every_nth_write: Some(4),
            ..MemoryBugs::default()
        };
        let (_, r) = faulty_run(bugs, map_cfg(13, None)).await;
        flagged_by(&r, &["map"]);
        let j = &r.to_json()["map"];
        assert_eq!(j["counter-fields"]["valid"], json!(false), "{j:#}");
    }

    /// `HDEL` acknowledged but not applied: removed fields come back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutant_ignored_map_removes_is_invalid() {
        let bugs = MemoryBugs {
            ignore_map_removes: true,
            ..MemoryBugs::default()
        };
        let (_, r) = faulty_run(bugs, map_cfg(14, Some(Level::Local))).await;
        flagged_by(&r, &["map"]);
        let j = &r.to_json()["map"];
        assert!(j["resurrected-count"].as_u64().unwrap() > 0, "{j:#}");
    }

    /// A replica that never converges, and an older field write winning
    /// over a newer one from another node.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutant_map_divergence_and_lww_inversion_are_invalid() {
        let bugs = MemoryBugs {
            diverge_node: Some("n3"),
            ..MemoryBugs::default()
        };
        let (_, r) = faulty_run(bugs, map_cfg(15, None)).await;
        flagged_by(&r, &["map", "convergence"]);
        let j = &r.to_json()["map"];
        assert!(!j["divergent"].as_array().unwrap().is_empty(), "{j:#}");
        let bugs = MemoryBugs {
            lww_inversion: true,
            ..MemoryBugs::default()
        };
        // Fewer writes per field, so that writes from other nodes follow
        // the (stuck) final value by more than the checker's margin.
        let mut c = map_cfg(16, None);
        c.rate = 100.0;
        c.time_limit = Duration::from_secs(3);
        let (_, r) = faulty_run(bugs, c).await;
        flagged_by(&r, &["map"]);
        let j = &r.to_json()["map"];
        assert!(!j["lww-inversions"].as_array().unwrap().is_empty(), "{j:#}");
    }

    /// An expiry run against [`MemoryDb`] through recorded partitions,
    /// long enough (4 s) for keys' TTLs (1-3 s) to run out while they are
    /// still read.
    fn expiry_cfg(seed: u64) -> RunConfig {
        let mut c = faulty_cfg(seed);
        c.workloads = vec![WorkloadKind::Expiry];
        c.time_limit = Duration::from_secs(4);
        c.rate = 200.0;
        c
    }

    /// The correct store (TTLs on the real clock) through the expiry
    /// workload: valid, with both rules judging reads, and reads after
    /// every value expired seen as nil.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn correct_store_is_valid_with_expiry() {
        let (_, r) = faulty_run(MemoryBugs::default(), expiry_cfg(21)).await;
        let j = &r.to_json()["expiry"];
        assert_eq!(r.valid, Validity::True, "{:#}", r.to_json());
        for k in [
            "resurrection-judged-values",
            "lost-write-judged-reads",
            "reads-after-all-expired",
            "expired-nil-reads",
        ] {
            assert!(j[k].as_u64().unwrap() > 0, "{k}: {j:#}");
        }
    }

    /// Mutant: TTLs never fire. Values come back after their deadline.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutant_never_expire_is_a_resurrection() {
        let bugs = MemoryBugs {
            never_expire: true,
            ..MemoryBugs::default()
        };
        let (_, r) = faulty_run(bugs, expiry_cfg(22)).await;
        flagged_by(&r, &["expiry"]);
        let j = &r.to_json()["expiry"];
        assert!(j["resurrected-count"].as_u64().unwrap() > 0, "{j:#}");
        assert_eq!(j["lost-writes-count"], json!(0), "{j:#}");
    }

    /// Mutant: values expire at a quarter of their TTL. Promised reads
    /// inside the TTL miss them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutant_early_expiry_is_a_lost_write() {
        let bugs = MemoryBugs {
            expire_early: true,
            ..MemoryBugs::default()
        };
        let (_, r) = faulty_run(bugs, expiry_cfg(23)).await;
        flagged_by(&r, &["expiry"]);
        let j = &r.to_json()["expiry"];
        assert!(j["lost-writes-count"].as_u64().unwrap() > 0, "{j:#}");
        assert_eq!(j["resurrected-count"], json!(0), "{j:#}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutant_lww_inversion_is_invalid() {
        let bugs = MemoryBugs {
            lww_inversion: true,
            ..MemoryBugs::default()
        };
        let mut c = faulty_cfg(9);
        c.workloads = vec![WorkloadKind::Register];
        let (_, r) = faulty_run(bugs, c).await;
        flagged_by(&r, &["register"]);
        let j = &r.to_json()["register"];
        assert!(
            !j["final"]["lost-writes"].as_array().unwrap().is_empty(),
            "{j:#}"
        );
    }

    #[test]
    fn pacer_is_staggered_and_bounded() {
        let mut p = Pacer {
            next: Duration::ZERO,
            rng: ChaCha8Rng::seed_from_u64(1),
            gap_ns: 10_000_000,
            limit: Duration::from_secs(1),
        };
        let mut n = 0;
        let mut prev = Duration::ZERO;
        while let Some(t) = p.next(Duration::ZERO) {
            assert!(t - prev < Duration::from_millis(10));
            prev = t;
            n += 1;
        }
        // Mean gap 5 ms over 1 s: about 200 ops.
        assert!((100..400).contains(&n), "{n}");
        // Behind schedule: missed slots are dropped, not burst; nothing past
        // the limit.
        p.next = Duration::ZERO;
        let t = p.next(Duration::from_millis(500)).unwrap();
        assert!(t >= Duration::ZERO);
        p.next = Duration::ZERO;
        p.limit = Duration::from_secs(10);
        let t = p.next(Duration::from_secs(5)).unwrap();
        assert!(t >= Duration::from_secs(5), "re-based: {t:?}");
        assert!(p.next(Duration::from_secs(10)).is_none());
        assert!("mixed".parse::<ConsistencyChoice>().is_ok());
        assert_eq!(register_key_level("register-0", 3), Level::Local);
        assert_eq!(register_key_level("register-7", 3), Level::Quorum);
        let replicas = |k: usize, nodes| register_key_level(&format!("register-{k}"), nodes);
        assert_eq!(replicas(4, 3), Level::Replicas { n: 2, of: 3 });
        assert_eq!(replicas(9, 3), Level::Replicas { n: 3, of: 3 });
        assert_eq!(replicas(14, 3), Level::Replicas { n: 1, of: 3 });
        assert_eq!(replicas(19, 3), Level::Replicas { n: 2, of: 3 });
        assert_eq!(replicas(4, 5), Level::Replicas { n: 3, of: 5 });
        assert_eq!(register_key_level("register-wipe", 3), Level::Local);
        assert_eq!(
            "replicas-2".parse::<ConsistencyChoice>(),
            Ok(ConsistencyChoice::Replicas(2))
        );
        assert!("replicas-0".parse::<ConsistencyChoice>().is_err());
        // Mixed draws every level, replicas-1 to replicas-N included.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let drawn: std::collections::BTreeSet<Level> = (0..2000)
            .map(|_| ConsistencyChoice::Mixed.pick(&mut rng, 3))
            .collect();
        assert_eq!(drawn, Level::mixed(3).into_iter().collect());
        assert!("all".parse::<ConsistencyChoice>().is_err());
    }
}
