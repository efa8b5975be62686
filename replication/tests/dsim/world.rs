//! The simulated cluster: nodes (engine on a [`SimDisk`], [`Replicator`],
//! push through [`PushTargets`], quorum waits through [`Waits`]), the
//! network between them, the clients, the faults, and the event loop that
//! runs all of it on one thread in simulated time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_engine::vfs::sim::EIO;
use meridian_engine::vfs::{FailAction, FailOp, Failpoint, Keep, SimDisk};
use meridian_engine::{
    CausalContext, Deadline, Delta, Dot, Durability, Engine, EngineConfig, Incarnation, Kind,
    ObjectKey, Op, PhysicalTime, Value, crdt::ObjectState,
};
use meridian_replication::message::PeerMessage;
use meridian_replication::protocol::{PushTargets, Waits, full_sync_messages};
use meridian_replication::{
    Input, NodeInfo, NodeName, Now, Output, Placement, ProtocolConfig, Replicator,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::{Converged, Failure};
use crate::history::{Level, OpRecord, Outcome};

/// Physical time at simulated time 0, ms since the Unix epoch.
const BASE_UNIX_MS: u64 = 1_800_000_000_000;
/// The production driver's tick (`mesh/driver.rs`), ms.
const TICK_MS: u64 = 20;
/// How long the cluster may take to converge once every fault is healed,
/// in simulated ms. Skewed clocks are put back, so deltas stamped up to
/// the largest skew ahead wait that long; the rest is catch-up and full
/// syncs at the protocol's own pace.
const QUIESCE_LIMIT_MS: u64 = 60_000;
/// Every replica has applied the same dots (so every delta reached every
/// replica) yet an object's states differ, for this long (ms): that is
/// divergence, not slowness, and waiting for the quiesce limit is moot.
const DIVERGED_MS: u64 = 2_000;
/// The engine's data directory on every node's disk.
const DATA_DIR: &str = "/node";
/// The sled page cache of a simulated node: tiny, the data set is too.
const CACHE_BYTES: u64 = 2 << 20;

/// Where TTL operations put their deadlines, in Unix ms: ten years past
/// the simulation's clocks (and the host's), so no deadline passes and
/// the content checks stay those of a store without expiry; what the TTL
/// runs check is that expiry records replicate and converge through every
/// fault like any other delta. Each op adds its id, so every deadline
/// names the op that set it.
const FAR_DEADLINE_MS: u64 = BASE_UNIX_MS + 10 * 365 * 24 * 3_600_000;
/// Counter, set and register keys: few, so operations collide.
const KEYS_PER_KIND: usize = 2;
/// Set members: few, so adds and removes of the same member race.
const MEMBERS: usize = 3;
/// Map fields of each sort (counter fields `c*`, register fields `r*`).
const MAP_FIELDS: usize = 2;
/// Messages in flight on one directed link; more are dropped, as the
/// driver drops a message its peer's bounded queue has no room for
/// (`PEER_QUEUE`, 8192, scaled down with everything else here). Bounds
/// the pull storms a duplicated catch-up batch can fork.
const LINK_QUEUE: usize = 64;
/// Catch-up batches from one peer that may carry a delta the receiver
/// does not apply (deferred for clock skew), per receiver boot; see
/// `Sim::count_unapplied_resends`.
const MAX_UNAPPLIED_RESENDS: u64 = 8;

/// Everything a run's randomness decided before it started.
#[derive(Clone, Debug)]
pub struct Params {
    pub nodes: usize,
    pub workload_ms: u64,
    /// Mean gap between client operations, ms.
    pub op_gap_ms: u64,
    /// Mean gap between faults, ms (0: none).
    pub fault_gap_ms: u64,
    pub timeout_ms: u64,
    pub drop: f64,
    pub duplicate: f64,
    pub max_delay_ms: u64,
    pub segment_bytes: u64,
    pub full_sync_batch_bytes: usize,
    pub protocol: ProtocolConfig,
    /// Per node: `None` for `Sync`, or the periodic interval in ms.
    pub periodic_ms: Vec<Option<u64>>,
}

impl Params {
    fn draw(rng: &mut ChaCha8Rng) -> Params {
        let nodes = match rng.random_range(0..10) {
            0..7 => 3,
            7..9 => 4,
            _ => 5,
        };
        let mut protocol = ProtocolConfig::new("");
        protocol.anti_entropy_ms = rng.random_range(40..200);
        protocol.want_timeout_ms = rng.random_range(200..800);
        protocol.heartbeat_ms = rng.random_range(20..80);
        protocol.truncate_every_ms = rng.random_range(80..400);
        // Short retention: a node cut off for longer needs a full sync.
        protocol.retention_ms = rng.random_range(200..1_200);
        protocol.max_batch_records = rng.random_range(2..24);
        protocol.max_batch_bytes = rng.random_range(300..4_000);
        let calm = rng.random_bool(0.1);
        Params {
            nodes,
            workload_ms: rng.random_range(1_500..4_000),
            op_gap_ms: rng.random_range(3..20),
            fault_gap_ms: if calm { 0 } else { rng.random_range(60..400) },
            timeout_ms: rng.random_range(100..1_000),
            drop: [0.0, 0.02, 0.1, 0.25][rng.random_range(0..4)],
            duplicate: [0.0, 0.05, 0.2][rng.random_range(0..3)],
            max_delay_ms: [2, 10, 40, 120][rng.random_range(0..4)],
            // Small segments: truncation deletes whole segments.
            segment_bytes: rng.random_range(600..4_000),
            full_sync_batch_bytes: rng.random_range(100..1_500),
            protocol,
            periodic_ms: (0..nodes)
                .map(|_| rng.random_bool(0.2).then(|| rng.random_range(5..100)))
                .collect(),
        }
    }
}

/// What one run saw, for the sweep's summary.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub trace_hash: u64,
    pub ops: usize,
    pub acked: usize,
    pub indeterminate: usize,
    pub crashes: u64,
    pub fsync_failures: u64,
    /// Restarts of a node that stopped on a failed fsync without a reboot
    /// (page cache kept: recovery reads back pages the disk lacks).
    pub fsync_restarts_no_reboot: u64,
    /// The most catch-up batches from one peer that carried one delta the
    /// receiver did not apply (bounded by `MAX_UNAPPLIED_RESENDS`).
    pub max_unapplied_resends: u64,
    pub full_syncs: u64,
    pub partitions: u64,
    pub messages: u64,
    /// Messages dropped because their link's queue was full.
    pub queue_drops: u64,
    /// Full-sync messages lost because their link went down (a partition
    /// or a crash during the full sync).
    pub full_sync_cut: u64,
    pub sim_ms: u64,
    /// `EXPIRE`/`PERSIST` operations the engines applied (TTL runs only).
    pub ttl_ops: usize,
    /// Map operations the engines applied (map runs only).
    pub map_ops: usize,
    /// Increment chains left on the converged maps (map runs only; a
    /// chain outlives delivery only above a context hole a lost write left).
    pub map_chains_left: usize,
}

/// A simulated event, at a simulated time.
#[derive(Debug)]
enum Ev {
    Deliver {
        from: usize,
        to: usize,
        generation: u64,
        msg: PeerMessage,
    },
    Tick {
        node: usize,
        boot: u64,
    },
    /// The fsync the group commit asked for completes.
    DiskSync {
        node: usize,
        boot: u64,
    },
    /// `Periodic` durability's interval.
    PeriodicSync {
        node: usize,
        boot: u64,
    },
    Client,
    WaitTimeout {
        op: usize,
    },
    Fault,
    Restart {
        node: usize,
    },
    Heal {
        pairs: Vec<(usize, usize)>,
        /// Cut the same pairs again this soon after healing (a flapping
        /// link: it interrupts the catch-up or full sync the heal began).
        flap_ms: Option<u64>,
    },
    /// The flap of a [`Ev::Heal`]: the same pairs cut again.
    Recut {
        pairs: Vec<(usize, usize)>,
        heal_after_ms: u64,
    },
    ClockBack {
        node: usize,
    },
    DiskFree {
        node: usize,
    },
}

impl Ev {
    fn tag(&self) -> u64 {
        match self {
            Ev::Deliver { .. } => 1,
            Ev::Tick { .. } => 2,
            Ev::DiskSync { .. } => 3,
            Ev::PeriodicSync { .. } => 4,
            Ev::Client => 5,
            Ev::WaitTimeout { .. } => 6,
            Ev::Fault => 7,
            Ev::Restart { .. } => 8,
            Ev::Heal { .. } => 9,
            Ev::ClockBack { .. } => 10,
            Ev::DiskFree { .. } => 11,
            Ev::Recut { .. } => 12,
        }
    }
}

/// A running node process.
struct Run {
    engine: Engine,
    replicator: Replicator,
    push: Arc<PushTargets>,
    /// Quorum waits in progress: wait token → op index.
    waits: Waits<usize>,
    /// Set by the durability callback of an [`Output::WatchDurable`] (as
    /// the mesh's `durable_pending`).
    durable_flag: Arc<AtomicBool>,
    /// Local durability of client writes: (op, ok), from engine callbacks.
    local_acks: Arc<Mutex<Vec<(usize, bool)>>>,
    sync_scheduled: bool,
    next_sync_id: u64,
}

/// A machine: its disk outlives the process.
struct Node {
    name: NodeName,
    disk: SimDisk,
    durability: Durability,
    skew_ms: i64,
    /// Seeded incarnation ids.
    incarnations: Arc<Mutex<ChaCha8Rng>>,
    boot: u64,
    run: Option<Run>,
    /// Power cuts the disk had when we last looked.
    power_cuts_seen: u64,
    /// A copy of sled's files taken right after a checkpoint, to put back
    /// at a power cut (sled losing what it wrote since).
    snapshot: PathBuf,
    snapshot_valid: bool,
    /// Whether this boot's next power cut reverts sled to the snapshot.
    revert_sled: bool,
    restart_scheduled: bool,
    /// What the engine reported durable when it last went down: recovery
    /// must find all of it.
    durable_at_crash: Option<CausalContext>,
    /// The incarnation before a clean shutdown (kept on reopen).
    clean_incarnation: Option<Incarnation>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crash {
    /// The power went out (SimDisk keeps this much of the unsynced state).
    Power(Keep),
    /// The process died (or stopped on a poisoned engine); the page cache
    /// survives with probability, else a power cut follows.
    Process,
    /// A failpoint already cut the power inside an engine call.
    AlreadyCut,
}

struct Link {
    up: bool,
    generation: u64,
}

pub struct Sim {
    pub params: Params,
    rng: ChaCha8Rng,
    now: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    seq: u64,
    nodes: Vec<Node>,
    placement: Arc<Placement>,
    links: BTreeMap<(usize, usize), Link>,
    cut: BTreeMap<(usize, usize), u32>,
    /// Messages in flight per directed link.
    in_flight: BTreeMap<(usize, usize), usize>,
    /// (receiver, its boot, sender, dot) → catch-up batches that carried
    /// the dot without the receiver applying it.
    unapplied_resends: BTreeMap<(usize, u64, usize, Dot), u64>,
    drop: f64,
    duplicate: f64,
    max_delay_ms: u64,
    pub ops: Vec<OpRecord>,
    /// Quorum waits: token → (op, peers waited on).
    waits: BTreeMap<u64, (usize, Vec<NodeName>)>,
    next_token: u64,
    quiescing: bool,
    verbose: bool,
    failure: Option<Failure>,
    hash: u64,
    report: Report,
    /// The workload also sets and removes TTLs ([`Sim::with_ttl`]).
    ttl: bool,
    /// The workload also writes maps ([`Sim::with_workload`]).
    maps: bool,
    _tmp: tempfile::TempDir,
}

fn fnv(mut h: u64, x: u64) -> u64 {
    for b in x.to_le_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `key`'s expiry state on `engine`, `None` when it has none or an empty
/// one (a `PERSIST` of a key without a TTL leaves an empty entry on its
/// origin only: the same "never set" as no entry).
fn expiry_of(engine: &Engine, key: &ObjectKey) -> Option<meridian_engine::Expiry> {
    engine.expiry(key).unwrap().filter(|e| !e.is_empty())
}

/// The keys a run writes: `KEYS_PER_KIND` of each kind (maps only in map
/// runs).
fn keys(maps: bool) -> Vec<ObjectKey> {
    let mut out = Vec::new();
    let kinds: &[Kind] = if maps {
        &[Kind::Counter, Kind::Set, Kind::Register, Kind::Map]
    } else {
        &[Kind::Counter, Kind::Set, Kind::Register]
    };
    for &kind in kinds {
        for i in 0..KEYS_PER_KIND {
            let name = match kind {
                Kind::Counter => format!("c{i}"),
                Kind::Set => format!("s{i}"),
                Kind::Register => format!("r{i}"),
                Kind::Map => format!("m{i}"),
            };
            out.push(ObjectKey::new(kind, name).unwrap());
        }
    }
    out
}

impl Sim {
    /// A run of `seed` whose workload, when `ttl`, also draws `EXPIRE`
    /// (a far deadline, [`FAR_DEADLINE_MS`]) and `PERSIST` on every kind.
    /// Without it a seed runs as it did before TTLs existed: the draws for
    /// TTL operations are only made in TTL runs.
    pub fn with_ttl(seed: u64, ttl: bool) -> Sim {
        Sim::with_workload(seed, ttl, false)
    }

    /// A run of `seed` whose workload, when `maps`, also draws map
    /// operations (`HSET`/`HDEL` of register fields, `HINCRBY` of counter
    /// fields, whole-map deletes) on keys of their own; the draws for them
    /// are only made in map runs.
    pub fn with_workload(seed: u64, ttl: bool, maps: bool) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let params = Params::draw(&mut rng);
        let regions = ["us-east", "eu-west", "ap-south"];
        let infos: Vec<NodeInfo> = (0..params.nodes)
            .map(|i| NodeInfo {
                name: format!("n{i}").into(),
                region: regions[i % regions.len()].to_string(),
            })
            .collect();
        let placement = Arc::new(Placement::new(infos.clone(), Vec::new()).expect("no rules"));
        let tmp = tempfile::Builder::new()
            .prefix("meridian-dsim-")
            .tempdir()
            .unwrap();
        let nodes = infos
            .iter()
            .enumerate()
            .map(|(i, info)| {
                let host = tmp.path().join(info.name.as_str());
                Node {
                    name: info.name.clone(),
                    disk: SimDisk::new(host.join("disk")),
                    durability: match params.periodic_ms[i] {
                        None => Durability::Sync,
                        Some(ms) => Durability::Periodic(Duration::from_millis(ms)),
                    },
                    skew_ms: 0,
                    incarnations: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(
                        rng.random::<u64>(),
                    ))),
                    boot: 0,
                    run: None,
                    power_cuts_seen: 0,
                    snapshot: host.join("sled-snapshot"),
                    snapshot_valid: false,
                    revert_sled: false,
                    restart_scheduled: false,
                    durable_at_crash: None,
                    clean_incarnation: None,
                }
            })
            .collect();
        Sim {
            drop: params.drop,
            duplicate: params.duplicate,
            max_delay_ms: params.max_delay_ms,
            params,
            rng,
            now: 0,
            queue: BTreeMap::new(),
            seq: 0,
            nodes,
            placement,
            links: BTreeMap::new(),
            cut: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            unapplied_resends: BTreeMap::new(),
            ops: Vec::new(),
            waits: BTreeMap::new(),
            next_token: 1,
            quiescing: false,
            verbose: std::env::var_os("MERIDIAN_DSIM_VERBOSE").is_some(),
            failure: None,
            hash: 0xcbf2_9ce4_8422_2325,
            report: Report::default(),
            ttl,
            maps,
            _tmp: tmp,
        }
    }

    fn trace(&mut self, parts: &[u64]) {
        let mut h = fnv(self.hash, self.now);
        for &p in parts {
            h = fnv(h, p);
        }
        self.hash = h;
    }

    fn fail(&mut self, check: &'static str, detail: impl Into<String>) {
        if self.failure.is_none() {
            self.failure = Some(Failure::new(check, detail));
        }
    }

    fn at(&mut self, delay_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((self.now + delay_ms, self.seq), ev);
    }

    fn physical(&self, i: usize) -> PhysicalTime {
        let ms = BASE_UNIX_MS as i64 + self.now as i64 + self.nodes[i].skew_ms;
        PhysicalTime::from_unix_ms(ms as u64)
    }

    fn now_for(&self, i: usize) -> Now {
        Now {
            mono_ms: self.now,
            physical: self.physical(i),
        }
    }

    fn index(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap()
    }

    fn up(&self, i: usize) -> bool {
        self.nodes[i].run.is_some()
    }

    // -----------------------------------------------------------------
    // Running.

    /// Runs the whole scenario: start, workload under faults, heal,
    /// quiesce, check.
    /// Returns what the run saw and the failed check, if one failed.
    pub fn run(mut self) -> (Report, Option<Failure>) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
        self.refresh_links();
        self.settle();
        self.at(0, Ev::Client);
        if self.params.fault_gap_ms > 0 {
            let gap = self.params.fault_gap_ms;
            let d = self.rng.random_range(0..gap);
            self.at(d, Ev::Fault);
        }
        let workload_end = self.params.workload_ms;
        while self.failure.is_none() && self.now < workload_end {
            self.step();
        }
        self.quiesce();
        let mut deadline = self.now + QUIESCE_LIMIT_MS;
        let mut next_check = self.now;
        let mut diverged_since: Option<u64> = None;
        while self.failure.is_none() {
            if self.now >= next_check {
                next_check = self.now + 50;
                match self.convergence() {
                    Convergence::Converged => break,
                    Convergence::Diverged => {
                        let since = *diverged_since.get_or_insert(self.now);
                        if self.now - since >= DIVERGED_MS {
                            let detail = self.divergence();
                            self.fail(
                                "convergence",
                                format!(
                                    "every replica applied the same dots, but states differ \
                                     ({DIVERGED_MS} ms): {detail}"
                                ),
                            );
                            break;
                        }
                    }
                    Convergence::NotYet => diverged_since = None,
                }
                if self.now >= deadline {
                    let detail = self.divergence();
                    self.fail(
                        "convergence",
                        format!("not converged {QUIESCE_LIMIT_MS} ms after healing: {detail}"),
                    );
                    break;
                }
                // A node may still be down (a restart that failed on an
                // armed failpoint): bring it up.
                for i in 0..self.nodes.len() {
                    if !self.up(i) && !self.nodes[i].restart_scheduled {
                        self.nodes[i].restart_scheduled = true;
                        self.at(1, Ev::Restart { node: i });
                        deadline = deadline.max(self.now + QUIESCE_LIMIT_MS / 2);
                    }
                }
            }
            self.step();
        }
        if self.failure.is_none()
            && let Err(f) = self.final_checks()
        {
            self.failure = Some(f);
        }
        self.finish_report();
        let report = self.report.clone();
        (report, self.failure.take())
    }

    /// `MERIDIAN_DSIM_VERBOSE`: one line about an event.
    fn note(&self, what: String) {
        if self.verbose {
            crate::say(&format!("dsim: {} ms: {what}", self.now));
        }
    }

    /// `MERIDIAN_DSIM_VERBOSE`: where the run is.
    fn progress(&self) {
        let mut line = format!(
            "dsim: {} ms, {} events queued, {} ops ({} pending){}",
            self.now,
            self.queue.len(),
            self.ops.len(),
            self.ops.iter().filter(|o| o.pending()).count(),
            if self.quiescing { ", quiescing" } else { "" }
        );
        for n in &self.nodes {
            match &n.run {
                None => line += &format!("; {} down", n.name),
                Some(r) => {
                    let m = r.engine.metrics();
                    line += &format!(
                        "; {} skew {} applied {} log {}..{} merges {} full {:?}",
                        n.name,
                        n.skew_ms,
                        r.engine.applied().vector().total(),
                        r.engine.log_start(),
                        r.engine.log_end(),
                        m.merges,
                        r.replicator
                            .report(self.now_for(0))
                            .iter()
                            .map(|p| (p.full_syncs_sent, p.full_syncs_received, p.deferred_deltas))
                            .collect::<Vec<_>>()
                    )
                }
            }
        }
        crate::say(&line);
    }

    fn finish_report(&mut self) {
        self.report.ops = self.ops.len();
        self.report.acked = self.ops.iter().filter(|o| o.acked()).count();
        self.report.indeterminate = self
            .ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Indeterminate(_)))
            .count();
        self.report.sim_ms = self.now;
        self.report.ttl_ops = self
            .ops
            .iter()
            .filter(|o| matches!(o.op, Op::Expire(_) | Op::Persist) && o.dot.is_some())
            .count();
        self.report.map_ops = self
            .ops
            .iter()
            .filter(|o| o.key.kind() == Kind::Map && o.dot.is_some())
            .count();
        if let Some(run) = &self.nodes[0].run {
            for k in keys(self.maps).iter().filter(|k| k.kind() == Kind::Map) {
                if let Some(ObjectState::Map(m)) = run.engine.state(k).unwrap() {
                    self.report.map_chains_left += m.chains().len();
                }
            }
        }
        let mut full = 0;
        for n in &self.nodes {
            if let Some(run) = &n.run {
                full += run
                    .replicator
                    .report(Now {
                        mono_ms: self.now,
                        physical: PhysicalTime::from_unix_ms(BASE_UNIX_MS + self.now),
                    })
                    .iter()
                    .map(|r| r.full_syncs_received)
                    .sum::<u64>();
            }
        }
        self.report.full_syncs += full;
        self.report.trace_hash = self.hash;
    }

    /// Processes the next event.
    fn step(&mut self) {
        let Some((&(at, seq), _)) = self.queue.iter().next() else {
            // Nothing scheduled at all: time stops. Cannot happen while a
            // node ticks; a cluster with every node down restarts them.
            self.now += 1;
            return;
        };
        let ev = self.queue.remove(&(at, seq)).unwrap();
        if self.verbose && at / 500 != self.now / 500 {
            self.progress();
        }
        self.now = at;
        self.trace(&[ev.tag()]);
        self.handle(ev);
        self.settle();
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                from,
                to,
                generation,
                msg,
            } => {
                if let Some(n) = self.in_flight.get_mut(&(from, to)) {
                    *n -= 1;
                }
                let key = (from.min(to), from.max(to));
                let live = self
                    .links
                    .get(&key)
                    .is_some_and(|l| l.up && l.generation == generation);
                if !live {
                    // The connection it travelled on is gone.
                    if matches!(
                        msg,
                        PeerMessage::FullSync { .. } | PeerMessage::FullSyncDone { .. }
                    ) {
                        self.report.full_sync_cut += 1;
                    }
                    return;
                }
                self.trace(&[from as u64, to as u64, msg_tag(&msg)]);
                self.report.messages += 1;
                let catch_up: Vec<Dot> = match &msg {
                    PeerMessage::Deltas {
                        records,
                        catch_up: true,
                        ..
                    } => records.iter().map(|r| r.dot).collect(),
                    _ => Vec::new(),
                };
                let peer = self.nodes[from].name.clone();
                self.input(to, Input::Message { peer, msg });
                self.count_unapplied_resends(from, to, catch_up);
            }
            Ev::Tick { node, boot } => {
                if self.nodes[node].boot != boot || !self.up(node) {
                    return;
                }
                self.input(node, Input::Tick);
                self.at(TICK_MS, Ev::Tick { node, boot });
            }
            Ev::DiskSync { node, boot } => {
                if self.nodes[node].boot != boot {
                    return;
                }
                let Some(run) = self.nodes[node].run.as_mut() else {
                    return;
                };
                run.sync_scheduled = false;
                let r = run.engine.run_pending_sync();
                self.trace(&[node as u64, r.is_ok() as u64]);
            }
            Ev::PeriodicSync { node, boot } => {
                if self.nodes[node].boot != boot {
                    return;
                }
                let Some(run) = self.nodes[node].run.as_ref() else {
                    return;
                };
                let r = run.engine.sync_now();
                self.trace(&[node as u64, r.is_ok() as u64]);
                if let Durability::Periodic(every) = self.nodes[node].durability {
                    self.at(every.as_millis() as u64, Ev::PeriodicSync { node, boot });
                }
            }
            Ev::Client => {
                if self.quiescing {
                    return;
                }
                self.client_op();
                let gap = self.params.op_gap_ms;
                let d = self.rng.random_range(1..=2 * gap);
                self.at(d, Ev::Client);
            }
            Ev::WaitTimeout { op } => self.wait_timeout(op),
            Ev::Fault => {
                if self.quiescing {
                    return;
                }
                self.fault();
                let gap = self.params.fault_gap_ms;
                let d = self.rng.random_range(1..=2 * gap);
                self.at(d, Ev::Fault);
            }
            Ev::Restart { node } => {
                self.nodes[node].restart_scheduled = false;
                if !self.up(node) {
                    self.start(node);
                    self.refresh_links();
                }
            }
            Ev::Heal { pairs, flap_ms } => {
                for p in &pairs {
                    if let Some(n) = self.cut.get_mut(p) {
                        *n -= 1;
                        if *n == 0 {
                            self.cut.remove(p);
                        }
                    }
                }
                self.refresh_links();
                if let Some(after) = flap_ms {
                    let heal_after_ms = self.rng.random_range(20..300);
                    self.at(
                        after,
                        Ev::Recut {
                            pairs,
                            heal_after_ms,
                        },
                    );
                }
            }
            Ev::Recut {
                pairs,
                heal_after_ms,
            } => {
                if !self.quiescing {
                    self.cut_pairs(&pairs, heal_after_ms, None);
                }
            }
            Ev::ClockBack { node } => {
                self.nodes[node].skew_ms = 0;
            }
            Ev::DiskFree { node } => {
                self.nodes[node].disk.set_free_bytes(None);
            }
        }
    }

    /// After every event: crash nodes whose power went out or whose engine
    /// is poisoned, carry local durability to the clients, durability to
    /// the protocols, and schedule the fsyncs the engines asked for.
    fn settle(&mut self) {
        loop {
            let mut progress = false;
            for i in 0..self.nodes.len() {
                let Some(run) = self.nodes[i].run.as_ref() else {
                    continue;
                };
                let poisoned = run.engine.poisoned().is_some();
                if self.nodes[i].disk.power_cuts() != self.nodes[i].power_cuts_seen {
                    self.crash(i, Crash::AlreadyCut);
                    progress = true;
                    continue;
                }
                if poisoned {
                    self.report.fsync_failures += 1;
                    // The node stops (the server aborts on a poisoned
                    // engine) and a supervisor restarts it.
                    self.crash(i, Crash::Process);
                    progress = true;
                    continue;
                }
                let run = self.nodes[i].run.as_ref().unwrap();
                let acks = std::mem::take(&mut *run.local_acks.lock().unwrap());
                for (op, ok) in acks {
                    progress = true;
                    self.local_durable(op, ok);
                }
                let run = self.nodes[i].run.as_mut().unwrap();
                if run.durable_flag.swap(false, Ordering::AcqRel) {
                    progress = true;
                    self.input(i, Input::Durable);
                }
                let run = self.nodes[i].run.as_mut().unwrap();
                if !run.sync_scheduled && run.engine.sync_wanted() {
                    run.sync_scheduled = true;
                    let boot = self.nodes[i].boot;
                    // An fsync takes 0 to 4 ms.
                    let d = self.rng.random_range(0..5);
                    self.at(d, Ev::DiskSync { node: i, boot });
                }
            }
            if !progress {
                break;
            }
        }
    }

    // -----------------------------------------------------------------
    // Node lifecycle.

    fn engine_config(&self, i: usize) -> EngineConfig {
        let node = &self.nodes[i];
        let mut c = EngineConfig::new(DATA_DIR);
        c.vfs = node.disk.mount();
        c.durability = node.durability;
        c.segment_bytes = self.params.segment_bytes;
        c.cache_bytes = CACHE_BYTES;
        c.group_of = self.placement.group_fn();
        c.sync_thread = false;
        let rng = node.incarnations.clone();
        c.incarnations = Some(Arc::new(move || rng.lock().unwrap().random::<u64>()));
        c
    }

    fn sled_dir(&self, i: usize) -> PathBuf {
        self.nodes[i]
            .disk
            .host_path(&Path::new(DATA_DIR).join("objects"))
    }

    /// Boots node `i`; on a failure that a fault explains (a power cut
    /// during recovery, a full disk) it stays down and retries later.
    fn start(&mut self, i: usize) {
        let config = self.engine_config(i);
        let physical = self.physical(i);
        let cuts_before = self.nodes[i].disk.power_cuts();
        let armed_before = self.nodes[i].disk.armed_failpoints();
        let engine = match Engine::open(config, physical) {
            Ok(e) => e,
            Err(e) => {
                self.note(format!("{} failed to open: {e}", self.nodes[i].name));
                let node = &mut self.nodes[i];
                // An open cut short after it removed the clean-shutdown
                // marker leaves the next one unclean: a new incarnation.
                node.clean_incarnation = None;
                // A failpoint fired during recovery (a power cut, an fsync
                // error): the fault explains it.
                let cut = node.disk.power_cuts() != cuts_before
                    || node.disk.armed_failpoints() < armed_before;
                node.power_cuts_seen = node.disk.power_cuts();
                let full = matches!(&e, meridian_engine::Error::Io { source, .. }
                    if source.raw_os_error() == Some(meridian_engine::vfs::sim::ENOSPC));
                let failed_fsync = !cut_power(node, cuts_before) && cut;
                if failed_fsync && self.rng.random_bool(0.5) {
                    // An fsync failed during recovery: the machine reboots
                    // before the retry, or (the other half) the process is
                    // just restarted, keeping the page cache: recovery then
                    // reads back pages the failed writeback dropped (the
                    // engine's `Hazards`, fsyncgate).
                    let keep = self.draw_keep();
                    let node = &mut self.nodes[i];
                    node.disk.power_cut(keep);
                    node.power_cuts_seen = node.disk.power_cuts();
                }
                let node = &mut self.nodes[i];
                if cut || full {
                    let schedule = !node.restart_scheduled;
                    node.restart_scheduled = true;
                    self.trace(&[0xdead, i as u64]);
                    if schedule {
                        let d = self.rng.random_range(5..100);
                        self.at(d, Ev::Restart { node: i });
                    }
                } else {
                    self.fail(
                        "recovery",
                        format!("{} failed to reopen: {e}", self.nodes[i].name),
                    );
                }
                return;
            }
        };
        // Recovery found everything the engine had reported durable.
        if let Some(durable) = self.nodes[i].durable_at_crash.take() {
            let mut applied = engine.applied();
            if applied.join(&durable) {
                let missing: Vec<_> =
                    durable
                        .cloud()
                        .chain(durable.vector().iter().flat_map(|(n, c)| {
                            (1..=c).map(move |k| meridian_engine::Dot::new(n, k))
                        }))
                        .filter(|d| !engine.applied().contains(*d))
                        .take(5)
                        .collect();
                self.fail(
                    "durability",
                    format!(
                        "{} lost dots its engine had reported durable before the crash: {missing:?}",
                        self.nodes[i].name
                    ),
                );
            }
        }
        if let Some(old) = self.nodes[i].clean_incarnation.take()
            && engine.incarnation() != old
        {
            self.fail(
                "recovery",
                format!(
                    "{} changed incarnation after a clean shutdown",
                    self.nodes[i].name
                ),
            );
        }
        let mut pc = self.params.protocol.clone();
        pc.node = self.nodes[i].name.clone();
        let replicator =
            Replicator::new(pc, engine.clone(), self.placement.clone(), self.now_for(i));
        let node = &mut self.nodes[i];
        node.boot += 1;
        node.power_cuts_seen = node.disk.power_cuts();
        node.revert_sled = self.rng.random_bool(0.5);
        let boot = node.boot;
        self.trace(&[0xb007, i as u64, engine.incarnation().0]);
        self.note(format!(
            "{} starts as {}",
            self.nodes[i].name,
            engine.incarnation()
        ));
        self.nodes[i].run = Some(Run {
            push: replicator.push_targets(),
            engine,
            replicator,
            waits: Waits::default(),
            durable_flag: Arc::new(AtomicBool::new(false)),
            local_acks: Arc::new(Mutex::new(Vec::new())),
            sync_scheduled: false,
            next_sync_id: 1,
        });
        let phase = self.rng.random_range(0..TICK_MS);
        self.at(phase, Ev::Tick { node: i, boot });
        if let Durability::Periodic(every) = self.nodes[i].durability {
            self.at(every.as_millis() as u64, Ev::PeriodicSync { node: i, boot });
        }
    }

    /// Node `i` goes down.
    fn crash(&mut self, i: usize, how: Crash) {
        let Some(run) = self.nodes[i].run.take() else {
            return;
        };
        self.report.crashes += 1;
        let how = match how {
            // A process crash keeps the page cache, or the machine follows.
            // After a failed fsync (the node stops) a process restart
            // reads back, from the page cache, log pages the failed
            // writeback dropped: recovery must not trust them to be on
            // disk (the engine's `Hazards`, fsyncgate).
            Crash::Process if self.rng.random_bool(0.5) => Crash::Power(self.draw_keep()),
            h => h,
        };
        if matches!(how, Crash::Process) && self.fsync_failed(&run.engine) {
            self.report.fsync_restarts_no_reboot += 1;
        }
        self.trace(&[0xc4a5, i as u64, matches!(how, Crash::Power(_)) as u64]);
        self.note(format!(
            "{} crashes ({how:?}, {})",
            self.nodes[i].name,
            run.engine.poisoned().unwrap_or_default()
        ));
        let durable = run.engine.durable();
        // What an acknowledged `Periodic` write that was durable nowhere
        // could lose here.
        let boot = self.nodes[i].boot;
        let durable_elsewhere: Vec<CausalContext> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, n)| {
                n.run
                    .as_ref()
                    .map(|r| r.engine.durable())
                    .or_else(|| n.durable_at_crash.clone())
            })
            .collect();
        for op in self.ops.iter_mut().filter(|o| o.node == i) {
            if op.boot == boot && op.pending() {
                op.outcome = Outcome::Indeterminate("the origin crashed".into());
            }
            if op.acked() && op.periodic && !op.durable_somewhere {
                let d = op.dot.unwrap();
                if durable.contains(d) || durable_elsewhere.iter().any(|c| c.contains(d)) {
                    op.durable_somewhere = true;
                } else {
                    op.may_be_lost = true;
                }
            }
        }
        let sled_dir = self.sled_dir(i);
        let node = &mut self.nodes[i];
        match how {
            Crash::Power(keep) => node.disk.power_cut(keep),
            Crash::Process | Crash::AlreadyCut => {}
        }
        let power_lost = !matches!(how, Crash::Process);
        drop(run); // sled writes out everything it holds (kept)
        node.durable_at_crash = Some(durable);
        node.power_cuts_seen = node.disk.power_cuts();
        node.boot += 1;
        if power_lost && node.revert_sled && node.snapshot_valid {
            // sled loses what it wrote since the last checkpoint.
            std::fs::remove_dir_all(&sled_dir).unwrap();
            copy_tree(&node.snapshot, &sled_dir);
            self.note(format!(
                "{}: sled reverted to its last checkpoint",
                self.nodes[i].name
            ));
            self.trace(&[0x51ed, i as u64]);
        }
        self.refresh_links();
        if !self.nodes[i].restart_scheduled {
            self.nodes[i].restart_scheduled = true;
            let d = if self.quiescing {
                1
            } else {
                self.rng.random_range(10..800)
            };
            self.at(d, Ev::Restart { node: i });
        }
    }

    /// Catch-up must not re-read deltas in a loop (the protocol's
    /// "deferred, not lost, and never re-read in a loop"): counts, per
    /// receiver boot, sender and dot, the catch-up batches from `from` that
    /// carried a delta `to` did not apply (deferred for clock skew), and
    /// fails the run past [`MAX_UNAPPLIED_RESENDS`]. A deferred delta is
    /// skipped by pulls until it may apply; it comes again from the same
    /// peer only through a duplicated or crossing answer, or once it is due
    /// and the receiver's clock moved back meanwhile.
    fn count_unapplied_resends(&mut self, from: usize, to: usize, dots: Vec<Dot>) {
        if dots.is_empty() {
            return;
        }
        let boot = self.nodes[to].boot;
        let Some(run) = self.nodes[to].run.as_ref() else {
            return;
        };
        let applied = run.engine.applied();
        for dot in dots {
            if applied.contains(dot) {
                continue;
            }
            let n = self
                .unapplied_resends
                .entry((to, boot, from, dot))
                .or_default();
            *n += 1;
            let n = *n;
            if n > 1 {
                self.note(format!(
                    "{} got {dot:?} unapplied from {} again ({n})",
                    self.nodes[to].name, self.nodes[from].name
                ));
            }
            self.report.max_unapplied_resends = self.report.max_unapplied_resends.max(n);
            if n > MAX_UNAPPLIED_RESENDS {
                let msg = format!(
                    "{} received {dot:?} from {} in {n} catch-up batches without applying it \
                     (a pull loop on a deferred delta)",
                    self.nodes[to].name, self.nodes[from].name
                );
                self.fail("pull-loop", msg);
            }
        }
    }

    /// Whether the engine stopped on a failed fsync. Here nothing else
    /// poisons it: sled (whose failures would) is on the real file system,
    /// a full disk fails writes without poisoning, and a power cut is
    /// noticed (and handled) before this is asked.
    fn fsync_failed(&self, engine: &Engine) -> bool {
        engine.poisoned().is_some()
    }

    fn draw_keep(&mut self) -> Keep {
        match self.rng.random_range(0..4) {
            0 => Keep::Synced,
            1 => Keep::All,
            _ => Keep::Random(self.rng.random()),
        }
    }

    /// A clean restart: close (final checkpoint and sync), reopen.
    fn clean_restart(&mut self, i: usize) {
        let Some(run) = self.nodes[i].run.as_ref() else {
            return;
        };
        let id = run.engine.incarnation();
        match run.engine.close() {
            Ok(()) => {
                self.trace(&[0xc105, i as u64]);
                let run = self.nodes[i].run.take().unwrap();
                for op in self.ops.iter_mut().filter(|o| o.node == i && o.pending()) {
                    op.outcome = Outcome::Indeterminate("the origin shut down".into());
                }
                self.nodes[i].durable_at_crash = Some(run.engine.durable());
                drop(run);
                // The checkpoint at close is sled's state now.
                self.snapshot_sled(i);
                // Everything was synced: a power cut now loses nothing.
                self.nodes[i].disk.power_cut(Keep::Synced);
                let node = &mut self.nodes[i];
                node.power_cuts_seen = node.disk.power_cuts();
                node.boot += 1;
                node.clean_incarnation = Some(id);
                self.refresh_links();
                self.start(i);
                self.refresh_links();
            }
            // Poisoned (or the power went) during close: a crash. Its
            // checkpoint may have been written (sled flushed) before the
            // failure: the snapshot no longer matches the checkpoint.
            Err(e) => {
                self.note(format!("{}: close failed: {e}", self.nodes[i].name));
                self.nodes[i].snapshot_valid = false;
                let node = &self.nodes[i];
                let how = if node.disk.power_cuts() != node.power_cuts_seen {
                    Crash::AlreadyCut
                } else {
                    Crash::Process
                };
                self.crash(i, how)
            }
        }
    }

    fn snapshot_sled(&mut self, i: usize) {
        let src = self.sled_dir(i);
        let dst = self.nodes[i].snapshot.clone();
        let _ = std::fs::remove_dir_all(&dst);
        copy_tree(&src, &dst);
        self.nodes[i].snapshot_valid = true;
    }

    // -----------------------------------------------------------------
    // The network.

    /// Brings links up and down to match which nodes run and which pairs
    /// are cut; each side's protocol hears of it.
    fn refresh_links(&mut self) {
        let n = self.nodes.len();
        let mut changes = Vec::new();
        for a in 0..n {
            for b in a + 1..n {
                let want = self.up(a) && self.up(b) && !self.cut.contains_key(&(a, b));
                let link = self.links.entry((a, b)).or_insert(Link {
                    up: false,
                    generation: 0,
                });
                if link.up != want {
                    link.up = want;
                    link.generation += 1;
                    changes.push((a, b, want));
                }
            }
        }
        for (a, b, up) in changes {
            for (x, y) in [(a, b), (b, a)] {
                if self.up(x) {
                    let peer = self.nodes[y].name.clone();
                    let input = if up {
                        Input::Connected { peer }
                    } else {
                        Input::Disconnected { peer }
                    };
                    self.input(x, input);
                }
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: PeerMessage) {
        let key = (from.min(to), from.max(to));
        let Some(link) = self.links.get(&key).filter(|l| l.up) else {
            return;
        };
        let generation = link.generation;
        if self.rng.random_bool(self.drop) {
            return;
        }
        let copies = if self.rng.random_bool(self.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let queued = self.in_flight.entry((from, to)).or_default();
            if *queued >= LINK_QUEUE {
                self.report.queue_drops += 1;
                return;
            }
            *queued += 1;
            let delay = self.rng.random_range(1..=self.max_delay_ms);
            let msg = msg.clone();
            self.at(
                delay,
                Ev::Deliver {
                    from,
                    to,
                    generation,
                    msg,
                },
            );
        }
    }

    fn cut_pairs(&mut self, pairs: &[(usize, usize)], heal_after_ms: u64, flap_ms: Option<u64>) {
        for p in pairs {
            *self.cut.entry(*p).or_default() += 1;
        }
        self.report.partitions += 1;
        self.refresh_links();
        self.at(
            heal_after_ms,
            Ev::Heal {
                pairs: pairs.to_vec(),
                flap_ms,
            },
        );
    }

    // -----------------------------------------------------------------
    // The protocol driver: what `mesh/driver.rs` does with outputs.

    fn input(&mut self, i: usize, input: Input) {
        let now = self.now_for(i);
        let Some(run) = self.nodes[i].run.as_mut() else {
            return;
        };
        let outputs = run.replicator.handle(input, now);
        for out in outputs {
            self.output(i, out);
        }
    }

    fn output(&mut self, i: usize, out: Output) {
        if self.nodes[i].run.is_none() {
            return;
        }
        match out {
            Output::Send { peer, msg, .. } => {
                let to = self.index(&peer);
                self.send(i, to, msg);
            }
            Output::StartFullSync { peer, groups } => {
                let to = self.index(&peer);
                let batch = self.params.full_sync_batch_bytes;
                let run = self.nodes[i].run.as_mut().unwrap();
                let sync = run.next_sync_id;
                run.next_sync_id += 1;
                let mut msgs = Vec::new();
                let r = full_sync_messages(&run.engine, &groups, sync, batch, |m| {
                    msgs.push(m);
                    true
                });
                self.trace(&[
                    0xf5,
                    i as u64,
                    to as u64,
                    msgs.len() as u64,
                    r.is_ok() as u64,
                ]);
                for m in msgs {
                    self.send(i, to, m);
                }
            }
            Output::WatchDurable { lsn } => {
                let run = self.nodes[i].run.as_ref().unwrap();
                let flag = run.durable_flag.clone();
                run.engine.on_durable(lsn, move |r| {
                    if r.is_ok() {
                        flag.store(true, Ordering::Release);
                    }
                });
            }
            Output::Truncate { stable } => {
                let run = self.nodes[i].run.as_ref().unwrap();
                let r = run
                    .engine
                    .truncate(&|g| stable.get(&g).cloned().unwrap_or_default());
                self.trace(&[0x7c, i as u64, r.as_ref().map_or(u64::MAX, |b| *b)]);
                match r {
                    Ok(_) if self.nodes[i].revert_sled => self.snapshot_sled(i),
                    // The snapshot no longer matches the checkpoint.
                    _ => self.nodes[i].snapshot_valid = false,
                }
            }
            Output::Disconnect { peer, reason } => {
                let me = self.nodes[i].name.clone();
                self.fail("protocol", format!("{me} disconnected {peer}: {reason}"));
            }
            Output::PeerReady { peer, ready } => {
                let run = self.nodes[i].run.as_ref().unwrap();
                if run.push.is_ready(&peer) != ready {
                    let me = self.nodes[i].name.clone();
                    self.fail(
                        "protocol",
                        format!("{me}: PeerReady({peer}, {ready}) disagrees with the push targets"),
                    );
                }
            }
            Output::WaitProgress { token, acked, done } => {
                let Some((op, peers)) = self.waits.get(&token).cloned() else {
                    return;
                };
                let dot = self.ops[op].dot.unwrap();
                let durable = peers
                    .iter()
                    .filter(|p| self.durable_on(self.index(p), dot))
                    .count();
                if acked > durable {
                    self.fail(
                        "quorum-wait",
                        format!("wait {token}: {acked} acks reported, {durable} peers durable"),
                    );
                }
                let run = self.nodes[i].run.as_mut().unwrap();
                if let Some((op, _)) = run.waits.progress(token, acked, done) {
                    self.waits.remove(&token);
                    self.ops[op].remote_done = true;
                    self.maybe_ack(op);
                }
            }
        }
    }

    /// Whether node `j` holds `dot` durably: its running engine says so,
    /// or said so when it last went down.
    fn durable_on(&self, j: usize, dot: meridian_engine::Dot) -> bool {
        let n = &self.nodes[j];
        match &n.run {
            Some(r) => r.engine.durable().contains(dot),
            None => n.durable_at_crash.as_ref().is_some_and(|c| c.contains(dot)),
        }
    }

    // -----------------------------------------------------------------
    // Clients: what the coordinator's write path does.

    fn client_op(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.up(i)).collect();
        if up.is_empty() {
            return;
        }
        let i = up[self.rng.random_range(0..up.len())];
        let level = match self.rng.random_range(0..20) {
            0..10 => Level::Local,
            10..17 => Level::Quorum,
            _ => Level::All,
        };
        let k = self.rng.random_range(0..KEYS_PER_KIND);
        let member =
            |rng: &mut ChaCha8Rng| format!("m{}", rng.random_range(0..MEMBERS)).into_bytes();
        let id = self.ops.len();
        if self.ttl && self.rng.random_range(0..8) == 0 {
            let kind = [Kind::Counter, Kind::Set, Kind::Register][self.rng.random_range(0..3)];
            let key = keys(false)
                .into_iter()
                .filter(|key| key.kind() == kind)
                .nth(k)
                .expect("KEYS_PER_KIND keys per kind");
            let op = if self.rng.random_range(0..3) == 0 {
                Op::Persist
            } else {
                Op::Expire(Deadline::At(FAR_DEADLINE_MS + id as u64))
            };
            self.issue(i, key, op, level);
            return;
        }
        if self.maps && self.rng.random_range(0..3) == 0 {
            let key = ObjectKey::new(Kind::Map, format!("m{k}")).unwrap();
            let field = |rng: &mut ChaCha8Rng, kind: &str| {
                format!("{kind}{}", rng.random_range(0..MAP_FIELDS)).into_bytes()
            };
            let op = match self.rng.random_range(0..40) {
                0..16 => {
                    let mut n = self.rng.random_range(-5i64..=9);
                    if n == 0 {
                        n = 1;
                    }
                    Op::HIncr(field(&mut self.rng, "c"), n)
                }
                16..30 => Op::HSet(vec![(
                    field(&mut self.rng, "r"),
                    format!("v{id}").into_bytes(),
                )]),
                30..39 => Op::HDel(vec![field(&mut self.rng, "r")]),
                _ => Op::Delete,
            };
            self.issue(i, key, op, level);
            return;
        }
        let roll = self.rng.random_range(0..100);
        match roll {
            // Concurrent writes in the same millisecond on two nodes: equal
            // HLC times (an LWW tie) and add/remove races.
            0..12 if up.len() >= 2 => {
                let j = loop {
                    let j = up[self.rng.random_range(0..up.len())];
                    if j != i {
                        break j;
                    }
                };
                if self.rng.random_bool(0.5) {
                    let key = ObjectKey::new(Kind::Register, format!("r{k}")).unwrap();
                    self.issue(
                        i,
                        key.clone(),
                        Op::Put(format!("v{id}").into_bytes()),
                        level,
                    );
                    let id2 = self.ops.len();
                    self.issue(j, key, Op::Put(format!("v{id2}").into_bytes()), level);
                } else {
                    let key = ObjectKey::new(Kind::Set, format!("s{k}")).unwrap();
                    let m = member(&mut self.rng);
                    self.issue(i, key.clone(), Op::Add(vec![m.clone()]), level);
                    self.issue(j, key, Op::Remove(vec![m]), level);
                }
            }
            0..35 => {
                let key = ObjectKey::new(Kind::Counter, format!("c{k}")).unwrap();
                let op = if self.rng.random_range(0..20) == 0 {
                    Op::Delete
                } else {
                    let mut n = self.rng.random_range(-5i64..=9);
                    if n == 0 {
                        n = 1;
                    }
                    Op::Incr(n)
                };
                self.issue(i, key, op, level);
            }
            35..65 => {
                let key = ObjectKey::new(Kind::Set, format!("s{k}")).unwrap();
                let m = member(&mut self.rng);
                let op = match self.rng.random_range(0..20) {
                    0..11 => Op::Add(vec![m]),
                    11..19 => Op::Remove(vec![m]),
                    _ => Op::Delete,
                };
                self.issue(i, key, op, level);
            }
            _ => {
                let key = ObjectKey::new(Kind::Register, format!("r{k}")).unwrap();
                let op = if self.rng.random_range(0..8) == 0 {
                    Op::Delete
                } else {
                    Op::Put(format!("v{id}").into_bytes())
                };
                self.issue(i, key, op, level);
            }
        }
    }

    /// One client write on node `i`: refuse without enough live replicas,
    /// apply, push to the published targets, wait for local durability
    /// (`Sync`) and for `needed - 1` peers to hold it durably.
    fn issue(&mut self, i: usize, key: ObjectKey, op: Op, level: Level) {
        let id = self.ops.len();
        let n = self.nodes.len();
        let needed = level.needed(n);
        let node = &self.nodes[i];
        let run_engine = node.run.as_ref().unwrap().engine.clone();
        let push = node.run.as_ref().unwrap().push.clone();
        let local_acks = node.run.as_ref().unwrap().local_acks.clone();
        let periodic = matches!(node.durability, Durability::Periodic(_));
        let mut rec = OpRecord {
            id,
            node: i,
            at_ms: self.now,
            key: key.clone(),
            op: op.clone(),
            level,
            periodic,
            boot: node.boot,
            dot: None,
            hlc: None,
            delta: None,
            outcome: Outcome::Pending,
            may_be_lost: false,
            durable_somewhere: false,
            local_ok: false,
            remote_done: needed == 1,
            token: None,
        };
        let others: Vec<NodeName> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| n.name.clone())
            .collect();
        let live = 1 + others.iter().filter(|p| push.is_ready(p)).count();
        if live < needed {
            rec.outcome = Outcome::Refused(format!("{live} live replicas, {needed} needed"));
            self.trace(&[0x0b, id as u64, 0]);
            self.ops.push(rec);
            return;
        }
        let applied = match run_engine.apply(&key, op, self.physical(i)) {
            Ok(a) => a,
            Err(e) => {
                rec.outcome = Outcome::Refused(e.to_string());
                self.trace(&[0x0b, id as u64, 1]);
                self.ops.push(rec);
                return;
            }
        };
        // The operation's own record: its content delta (a `SET` or `DEL`
        // of a key with a TTL logs a persist after it), or for `EXPIRE` /
        // `PERSIST` its expiry delta. Without TTLs it is the only record.
        let own = applied
            .before
            .iter()
            .chain([&applied.record])
            .rev()
            .find(|r| !matches!(r.delta, Delta::Expiry(_)))
            .unwrap_or(&applied.record)
            .clone();
        let dot = own.dot;
        rec.dot = Some(dot);
        rec.hlc = Some(own.hlc);
        rec.delta = Some(own.delta.clone());
        self.trace(&[
            0x0b,
            id as u64,
            dot.stream.0,
            dot.counter,
            applied.record.hlc.time,
        ]);
        // The mesh's push: straight to the published targets, every
        // record of the operation in log order.
        let mut sends = Vec::new();
        for record in applied.before.iter().chain([&applied.record]) {
            push.push(record, |peer, msg| sends.push((peer.to_string(), msg)));
        }
        if periodic {
            // `periodic` acknowledges once the log has the write.
            rec.local_ok = true;
        } else {
            let acks = local_acks;
            run_engine.on_durable(applied.lsn, move |r| {
                acks.lock().unwrap().push((id, r.is_ok()));
            });
        }
        let remote_needed = needed - 1;
        let token = (remote_needed > 0).then(|| {
            let t = self.next_token;
            self.next_token += 1;
            t
        });
        rec.token = token;
        self.ops.push(rec);
        for (peer, msg) in sends {
            let to = self.index(&peer);
            self.send(i, to, msg);
        }
        if let Some(token) = token {
            let run = self.nodes[i].run.as_mut().unwrap();
            run.waits.register(token, remote_needed, id);
            self.waits.insert(token, (id, others.clone()));
            let deadline_ms = self.now + self.params.timeout_ms + 1_000;
            self.input(
                i,
                Input::Wait {
                    token,
                    dot,
                    also: Vec::new(),
                    peers: others,
                    needed: remote_needed,
                    deadline_ms,
                },
            );
        }
        let timeout = self.params.timeout_ms;
        self.at(timeout, Ev::WaitTimeout { op: id });
        self.maybe_ack(id);
    }

    fn local_durable(&mut self, op: usize, ok: bool) {
        let rec = &mut self.ops[op];
        if !rec.pending() {
            return;
        }
        if ok {
            rec.local_ok = true;
            self.maybe_ack(op);
        } else {
            rec.outcome = Outcome::Indeterminate("the local fsync failed".into());
        }
    }

    fn maybe_ack(&mut self, op: usize) {
        let rec = &self.ops[op];
        if !rec.pending() || !rec.local_ok || !rec.remote_done {
            return;
        }
        // Present at its level: that many replicas hold it durably (the
        // origin too, unless `Periodic` acknowledged before its fsync).
        let dot = rec.dot.unwrap();
        let needed = rec.level.needed(self.nodes.len());
        let holders = (0..self.nodes.len())
            .filter(|&j| self.durable_on(j, dot))
            .count();
        let required = if rec.periodic { needed - 1 } else { needed };
        if holders < required {
            let detail = format!(
                "op {op} ({:?} at level {:?}) acknowledged with {holders} replicas holding it \
                 durably, {required} required",
                rec.op, rec.level
            );
            self.fail("ack-level", detail);
        }
        let rec = &mut self.ops[op];
        rec.durable_somewhere = holders > 0;
        rec.outcome = Outcome::Acked { at_ms: self.now };
        self.trace(&[0xac, op as u64]);
    }

    fn wait_timeout(&mut self, op: usize) {
        let rec = &self.ops[op];
        if !rec.pending() {
            return;
        }
        let (i, boot, token) = (rec.node, rec.boot, rec.token);
        self.ops[op].outcome = Outcome::Indeterminate("timed out".into());
        if let Some(token) = token {
            self.waits.remove(&token);
            if self.nodes[i].boot == boot && self.up(i) {
                self.input(i, Input::Cancel { token });
                let run = self.nodes[i].run.as_mut().unwrap();
                run.waits.cancel(token);
            }
        }
    }

    // -----------------------------------------------------------------
    // Faults.

    fn fault(&mut self) {
        let n = self.nodes.len();
        let i = self.rng.random_range(0..n);
        match self.rng.random_range(0..100) {
            // A partition: a random side against the rest.
            0..22 => {
                let mut side: Vec<usize> = (0..n).filter(|_| self.rng.random_bool(0.5)).collect();
                if side.is_empty() || side.len() == n {
                    side = vec![i];
                }
                let pairs = crossing(&side, n);
                let d = self.rng.random_range(20..1_500);
                let flap = self
                    .rng
                    .random_bool(0.2)
                    .then(|| self.rng.random_range(1..50));
                self.cut_pairs(&pairs, d, flap);
            }
            // One node cut off past retention: its peers truncate what it
            // lacks and it needs a full sync; half the time the link flaps
            // right after healing, during that sync.
            22..32 => {
                let pairs = crossing(&[i], n);
                let d = self.params.protocol.retention_ms
                    + self.params.protocol.truncate_every_ms * 2
                    + self.rng.random_range(0..1_000);
                let flap = self
                    .rng
                    .random_bool(0.5)
                    .then(|| self.rng.random_range(1..40));
                self.cut_pairs(&pairs, d, flap);
            }
            // Power cut.
            32..44 => {
                if self.up(i) {
                    let keep = self.draw_keep();
                    self.crash(i, Crash::Power(keep));
                }
            }
            // Process crash.
            44..50 => {
                if self.up(i) {
                    self.crash(i, Crash::Process);
                }
            }
            // Clean restart.
            50..55 => self.clean_restart(i),
            // An fsync fails (the engine poisons, the node stops).
            55..65 => {
                let after = self.rng.random_range(0..12);
                self.nodes[i].disk.add_failpoint(
                    Failpoint::new(FailOp::Sync, "", FailAction::Errno(EIO)).after(after),
                );
                self.trace(&[0xe10, i as u64, after]);
                self.note(format!(
                    "{}: an fsync fails after {after}",
                    self.nodes[i].name
                ));
            }
            // The power goes out inside some file operation: mid-append,
            // mid-fsync, between a checkpoint and segment deletion, during
            // recovery.
            65..73 => {
                let op = [
                    FailOp::Sync,
                    FailOp::Append,
                    FailOp::SyncDir,
                    FailOp::Remove,
                    FailOp::Rename,
                    FailOp::Create,
                ][self.rng.random_range(0..6)];
                let keep = self.draw_keep();
                let after = self.rng.random_range(0..20);
                self.nodes[i]
                    .disk
                    .add_failpoint(Failpoint::new(op, "", FailAction::PowerCut(keep)).after(after));
                self.trace(&[0xe11, i as u64, after]);
                self.note(format!(
                    "{}: power cut ({keep:?}) at {op:?} after {after}",
                    self.nodes[i].name
                ));
            }
            // Clock skew: within the accepted offset, or beyond it (the
            // node's deltas are refused and deferred).
            73..83 => {
                let skew = if self.rng.random_bool(0.6) {
                    self.rng.random_range(-400..400)
                } else {
                    let s = self.rng.random_range(600..3_000);
                    if self.rng.random_bool(0.5) { s } else { -s }
                };
                self.nodes[i].skew_ms = skew;
                let d = self.rng.random_range(100..2_000);
                self.at(d, Ev::ClockBack { node: i });
            }
            // A full disk for a while.
            83..88 => {
                let free = self.rng.random_range(0..3_000);
                self.nodes[i].disk.set_free_bytes(Some(free));
                let d = self.rng.random_range(20..600);
                self.at(d, Ev::DiskFree { node: i });
            }
            // Network weather.
            _ => {
                self.drop = [0.0, 0.02, 0.1, 0.3][self.rng.random_range(0..4)];
                self.duplicate = [0.0, 0.05, 0.2][self.rng.random_range(0..3)];
                self.max_delay_ms = [2, 10, 40, 150][self.rng.random_range(0..4)];
            }
        }
    }

    /// Every fault ends: links heal, clocks agree, disks have room and no
    /// failpoints, the network delivers, every node runs.
    fn quiesce(&mut self) {
        self.quiescing = true;
        self.cut.clear();
        self.drop = 0.0;
        self.duplicate = 0.0;
        self.max_delay_ms = 5;
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            node.skew_ms = 0;
            node.disk.clear_failpoints();
            node.disk.set_free_bytes(None);
            if node.run.is_none() && !node.restart_scheduled {
                node.restart_scheduled = true;
                self.at(1, Ev::Restart { node: i });
            }
        }
        self.refresh_links();
    }

    // -----------------------------------------------------------------
    // Convergence and the final checks.

    fn convergence(&self) -> Convergence {
        if self.nodes.iter().any(|n| n.run.is_none()) || self.ops.iter().any(|o| o.pending()) {
            return Convergence::NotYet;
        }
        let engines: Vec<&Engine> = self
            .nodes
            .iter()
            .map(|n| &n.run.as_ref().unwrap().engine)
            .collect();
        let applied = engines[0].applied();
        if engines[1..].iter().any(|e| e.applied() != applied) {
            return Convergence::NotYet;
        }
        let same = keys(self.maps).iter().all(|k| {
            let s = engines[0].state(k).unwrap();
            let x = expiry_of(engines[0], k);
            engines[1..]
                .iter()
                .all(|e| e.state(k).unwrap() == s && expiry_of(e, k) == x)
        });
        if same {
            Convergence::Converged
        } else {
            Convergence::Diverged
        }
    }

    fn divergence(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            match &n.run {
                None => out += &format!("{} down; ", n.name),
                Some(r) => {
                    let a = r.engine.applied();
                    out += &format!(
                        "{} applied {} dots ({} above gaps); ",
                        n.name,
                        a.vector().total(),
                        a.cloud().count()
                    );
                }
            }
        }
        let pending = self.ops.iter().filter(|o| o.pending()).count();
        out += &format!("{pending} ops pending; ");
        if self.nodes.iter().all(|n| n.run.is_some()) {
            for k in keys(self.maps) {
                let states: Vec<_> = self
                    .nodes
                    .iter()
                    .map(|n| {
                        let engine = &n.run.as_ref().unwrap().engine;
                        (engine.state(&k).unwrap(), expiry_of(engine, &k))
                    })
                    .collect();
                if states.windows(2).any(|w| w[0] != w[1]) {
                    out += &format!("{k:?} differs: {states:?}");
                    break;
                }
            }
        }
        out
    }

    fn final_checks(&mut self) -> Result<(), Failure> {
        let engine = &self.nodes[0].run.as_ref().unwrap().engine;
        let applied = engine.applied();
        let mut objects = BTreeMap::new();
        let mut expiries = BTreeMap::new();
        for k in keys(self.maps) {
            let value = engine.read(&k).unwrap();
            let state = engine.state(&k).unwrap();
            if let Some(expiry) = expiry_of(engine, &k) {
                expiries.insert(k.clone(), expiry);
            }
            self.hash = fnv(self.hash, format!("{value:?}").len() as u64);
            objects.insert(k, (value, state));
        }
        // The converged values go into the trace.
        for (_, (v, _)) in objects.iter() {
            let x = match v {
                Value::Counter(c) => *c as u64,
                Value::Set(m) => m.len() as u64,
                Value::Register(r) => r.as_ref().map_or(0, |r| r.hlc.time),
                Value::Map { count, .. } => *count,
            };
            self.hash = fnv(self.hash, x);
        }
        crate::check::check_all(
            &self.ops,
            &Converged {
                applied,
                objects,
                expiries,
            },
        )
    }
}

enum Convergence {
    Converged,
    /// Same applied dots everywhere, different states.
    Diverged,
    NotYet,
}

fn cut_power(node: &Node, cuts_before: u64) -> bool {
    node.disk.power_cuts() != cuts_before
}

fn crossing(side: &[usize], n: usize) -> Vec<(usize, usize)> {
    let mut out = BTreeSet::new();
    for &a in side {
        for b in 0..n {
            if !side.contains(&b) {
                out.insert((a.min(b), a.max(b)));
            }
        }
    }
    out.into_iter().collect()
}

fn msg_tag(m: &PeerMessage) -> u64 {
    match m {
        PeerMessage::Hello(_) => 1,
        PeerMessage::Deltas { records, .. } => 2 + 16 * records.len() as u64,
        PeerMessage::Ack(_) => 3,
        PeerMessage::Want { .. } => 4,
        PeerMessage::FullSync {
            objects,
            expiries,
            seq,
            ..
        } => 5 + 16 * (objects.len() + expiries.len()) as u64 + 1024 * *seq as u64,
        PeerMessage::FullSyncDone { batches, .. } => 6 + 16 * *batches as u64,
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dst = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dst);
        } else {
            std::fs::copy(entry.path(), &dst).unwrap();
        }
    }
}
