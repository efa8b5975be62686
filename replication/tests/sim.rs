//! The replication protocol over a simulated network (seeded RNG) that
//! drops, duplicates, reorders, delays and partitions messages, with real
//! engines underneath. After the faults stop and the network heals, every
//! replica must converge, no delta may take effect twice (counters equal
//! the exact sum of acknowledged increments), and keys pinned to one region
//! must never reach another.
//!
//! The simulated driver takes the paths the mesh takes: a local write is
//! pushed through the protocol's published [`PushTargets`] (as
//! `Mesh::push` does, with no input to the machine), every
//! [`Output::PeerReady`] is checked against those targets, and quorum
//! waits go through [`Waits`] and [`Input::Wait`] / [`Output::WaitProgress`]
//! with a driver-side timeout and [`Input::Cancel`], as `Mesh::wait_durable`
//! does. Every progress report is checked against the peers' real durable
//! state: a wait never counts an ack before the peer's engine is durable.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use meridian_engine::{
    Deadline, Dot, Durability, Engine, EngineConfig, Expiry, GroupId, Kind, ObjectKey, Op,
    PhysicalTime, Record, Value,
};
use meridian_replication::message::PeerMessage;
use meridian_replication::protocol::{PushTargets, Waits, full_sync_messages};
use meridian_replication::{
    Input, Lane, NodeInfo, NodeName, Now, Output, Placement, ProtocolConfig, Replicator, Rule,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BASE_UNIX_MS: u64 = 1_800_000_000_000;

struct Node {
    name: NodeName,
    replicator: Replicator,
    /// The machine's published push decision (what `Mesh::push` reads).
    push_targets: Arc<PushTargets>,
    /// This node's pending quorum waits (what `Mesh::wait_durable` keeps).
    waits: Waits<()>,
    engine: Engine,
    durable_flag: Arc<AtomicBool>,
    /// Added to the shared virtual clock for this node's physical time.
    skew_ms: i64,
    /// Its engine was closed on purpose (a failing engine): its truncations
    /// may fail.
    broken: bool,
    _dir: tempfile::TempDir,
}

/// A quorum wait as its caller sees it.
struct SimWait {
    node: usize,
    dot: Dot,
    peers: Vec<NodeName>,
    needed: usize,
    /// When the caller gives up (virtual ms).
    timeout_at: u64,
    /// How many acks, and when, once it finished or timed out.
    result: Option<(usize, u64)>,
}

struct InFlight {
    at: u64,
    from: usize,
    to: usize,
    msg: PeerMessage,
}

#[derive(Clone, Copy)]
struct Faults {
    drop: f64,
    duplicate: f64,
    max_delay_ms: u64,
}

struct Sim {
    rng: ChaCha8Rng,
    now_ms: u64,
    nodes: Vec<Node>,
    placement: Arc<Placement>,
    net: Vec<InFlight>,
    /// Directed links that are cut.
    cut: BTreeSet<(usize, usize)>,
    faults: Faults,
    next_sync: u64,
    /// Sum of acknowledged increments per counter key.
    expected_counts: BTreeMap<Vec<u8>, i64>,
    /// Members added and never removed, per set key.
    expected_members: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>>,
    /// Quorum waits by token (unique across nodes).
    sim_waits: BTreeMap<u64, SimWait>,
    next_token: u64,
    delivered: u64,
    dropped: u64,
    duplicated: u64,
    /// Messages the machines sent, by (from, to, message name).
    sent: BTreeMap<(usize, usize, &'static str), u64>,
}

fn names(n: usize) -> Vec<(NodeName, String)> {
    let regions = ["us-east", "eu-west", "ap-south"];
    (0..n)
        .map(|i| {
            let region = regions[i % regions.len()];
            (
                NodeName::from(format!("{region}-{}", i / regions.len() + 1)),
                region.to_string(),
            )
        })
        .collect()
}

impl Sim {
    fn new(seed: u64, n: usize, segment_bytes: u64, retention_ms: u64) -> Sim {
        let infos: Vec<NodeInfo> = names(n)
            .into_iter()
            .map(|(name, region)| NodeInfo { name, region })
            .collect();
        let placement = Arc::new(
            Placement::new(
                infos.clone(),
                vec![Rule {
                    prefix: b"eu/".to_vec(),
                    regions: vec!["eu-west".into()],
                    home: None,
                }],
            )
            .unwrap(),
        );
        let mut sim = Sim {
            rng: ChaCha8Rng::seed_from_u64(seed),
            now_ms: 0,
            nodes: Vec::new(),
            placement: placement.clone(),
            net: Vec::new(),
            cut: BTreeSet::new(),
            faults: Faults {
                drop: 0.0,
                duplicate: 0.0,
                max_delay_ms: 5,
            },
            next_sync: 1,
            expected_counts: BTreeMap::new(),
            expected_members: BTreeMap::new(),
            sim_waits: BTreeMap::new(),
            next_token: 1,
            delivered: 0,
            dropped: 0,
            duplicated: 0,
            sent: BTreeMap::new(),
        };
        for info in &infos {
            let dir = tempfile::tempdir().unwrap();
            let mut config = EngineConfig::new(dir.path());
            config.durability = Durability::Periodic(std::time::Duration::from_millis(1));
            config.segment_bytes = segment_bytes;
            config.cache_bytes = 8 << 20;
            config.group_of = placement.group_fn();
            let engine = Engine::open(config, sim.physical(0)).unwrap();
            let mut pc = ProtocolConfig::new(info.name.clone());
            pc.anti_entropy_ms = 50;
            pc.want_timeout_ms = 400;
            pc.heartbeat_ms = 20;
            pc.truncate_every_ms = 300;
            pc.retention_ms = retention_ms;
            pc.stall_ms = 300;
            pc.live_timeout_ms = 150;
            pc.max_batch_records = 16;
            pc.max_batch_bytes = 4096;
            let now = Now {
                mono_ms: 0,
                physical: sim.physical(0),
            };
            let replicator = Replicator::new(pc, engine.clone(), placement.clone(), now);
            sim.nodes.push(Node {
                name: info.name.clone(),
                push_targets: replicator.push_targets(),
                waits: Waits::default(),
                replicator,
                engine,
                durable_flag: Arc::new(AtomicBool::new(false)),
                skew_ms: 0,
                broken: false,
                _dir: dir,
            });
        }
        sim
    }

    fn physical(&self, skew_ms: i64) -> PhysicalTime {
        PhysicalTime::from_unix_ms((BASE_UNIX_MS as i64 + self.now_ms as i64 + skew_ms) as u64)
    }

    fn now_for(&self, i: usize) -> Now {
        Now {
            mono_ms: self.now_ms,
            physical: self.physical(self.nodes[i].skew_ms),
        }
    }

    fn index(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap()
    }

    fn input(&mut self, i: usize, input: Input) {
        let now = self.now_for(i);
        let outputs = self.nodes[i].replicator.handle(input, now);
        for out in outputs {
            self.output(i, out);
        }
    }

    fn output(&mut self, from: usize, out: Output) {
        match out {
            Output::Send { peer, msg, lane } => {
                let to = self.index(&peer);
                *self.sent.entry((from, to, msg.name())).or_default() += 1;
                // Bulk data shares the link's fate; control messages too.
                let _ = lane == Lane::Bulk;
                self.send(from, to, msg);
            }
            Output::StartFullSync { peer, groups } => {
                let to = self.index(&peer);
                let sync = self.next_sync;
                self.next_sync += 1;
                let engine = self.nodes[from].engine.clone();
                let mut msgs = Vec::new();
                full_sync_messages(&engine, &groups, sync, 2048, |m| {
                    msgs.push(m);
                    true
                })
                .unwrap();
                for m in msgs {
                    self.send(from, to, m);
                }
            }
            Output::WatchDurable { lsn } => {
                let flag = self.nodes[from].durable_flag.clone();
                self.nodes[from].engine.on_durable(lsn, move |r| {
                    if r.is_ok() {
                        flag.store(true, Ordering::SeqCst);
                    }
                });
            }
            Output::Truncate { stable } => {
                let node = &self.nodes[from];
                let truncated = node
                    .engine
                    .truncate(&|g| stable.get(&g).cloned().unwrap_or_default());
                assert!(truncated.is_ok() || node.broken, "{truncated:?}");
            }
            Output::Disconnect { peer, reason } => {
                panic!("{} disconnected {peer}: {reason}", self.nodes[from].name);
            }
            Output::PeerReady { peer, ready } => {
                assert_eq!(
                    self.nodes[from].push_targets.is_ready(&peer),
                    ready,
                    "{}: PeerReady({peer}) disagrees with the published push targets",
                    self.nodes[from].name
                );
            }
            Output::WaitProgress { token, acked, done } => {
                let w = &self.sim_waits[&token];
                let durable = self.durable_count(w.dot, &w.peers);
                assert!(
                    acked <= durable,
                    "wait {token}: {acked} acks reported, only {durable} peers durable"
                );
                assert!(acked <= w.needed, "wait {token}: counted past {}", w.needed);
                let finished = self.nodes[from].waits.progress(token, acked, done);
                if let Some(((), acked)) = finished {
                    let now = self.now_ms;
                    self.sim_waits.get_mut(&token).unwrap().result = Some((acked, now));
                }
            }
        }
    }

    /// How many of `peers` have `dot` durably (their engines' own view).
    fn durable_count(&self, dot: Dot, peers: &[NodeName]) -> usize {
        peers
            .iter()
            .filter(|p| self.nodes[self.index(p)].engine.durable().contains(dot))
            .count()
    }

    /// A locally applied write on node `i` goes out as the mesh sends it:
    /// to the targets the machine published, without an input to it.
    fn push(&mut self, i: usize, record: &Record) {
        let mut sends = Vec::new();
        self.nodes[i]
            .push_targets
            .push(record, |peer, msg| sends.push((peer.to_string(), msg)));
        for (peer, msg) in sends {
            let to = self.index(&peer);
            self.send(i, to, msg);
        }
    }

    /// Starts a quorum wait on node `i` as `Mesh::wait_durable` does:
    /// `needed` of `peers` must hold `dot` durably within `timeout_ms`.
    fn wait_durable(
        &mut self,
        i: usize,
        dot: Dot,
        peers: Vec<NodeName>,
        needed: usize,
        timeout_ms: u64,
    ) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.sim_waits.insert(
            token,
            SimWait {
                node: i,
                dot,
                peers: peers.clone(),
                needed,
                timeout_at: self.now_ms + timeout_ms,
                result: None,
            },
        );
        self.nodes[i].waits.register(token, needed, ());
        let deadline_ms = self.now_ms + timeout_ms + 1_000;
        self.input(
            i,
            Input::Wait {
                token,
                dot,
                also: Vec::new(),
                peers,
                needed,
                deadline_ms,
            },
        );
        token
    }

    /// Gives up on waits whose caller timed out, as `Mesh::wait_durable`.
    fn expire_waits(&mut self) {
        let expired: Vec<(u64, usize)> = self
            .sim_waits
            .iter()
            .filter(|(_, w)| w.result.is_none() && self.now_ms >= w.timeout_at)
            .map(|(&t, w)| (t, w.node))
            .collect();
        for (token, i) in expired {
            self.input(i, Input::Cancel { token });
            let acked = self.nodes[i].waits.cancel(token);
            let now = self.now_ms;
            self.sim_waits.get_mut(&token).unwrap().result = Some((acked, now));
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: PeerMessage) {
        if self.cut.contains(&(from, to)) {
            self.dropped += 1;
            return;
        }
        if self.rng.random_bool(self.faults.drop) {
            self.dropped += 1;
            return;
        }
        let copies = if self.rng.random_bool(self.faults.duplicate) {
            self.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.random_range(0..=self.faults.max_delay_ms);
            self.net.push(InFlight {
                at: self.now_ms + delay,
                from,
                to,
                msg: msg.clone(),
            });
        }
    }

    fn connect_all(&mut self) {
        for i in 0..self.nodes.len() {
            for j in 0..self.nodes.len() {
                if i != j {
                    let peer = self.nodes[j].name.clone();
                    self.input(i, Input::Connected { peer });
                }
            }
        }
    }

    /// Cuts both directions between the two sides; each side sees the
    /// other disconnect.
    fn partition(&mut self, side: &[usize]) {
        for &a in side {
            for b in 0..self.nodes.len() {
                if side.contains(&b) {
                    continue;
                }
                for (x, y) in [(a, b), (b, a)] {
                    if self.cut.insert((x, y)) {
                        let peer = self.nodes[y].name.clone();
                        self.input(x, Input::Disconnected { peer });
                    }
                }
            }
        }
    }

    /// Replaces node `i`'s machine with one whose placement has one more
    /// rule: its peers and it disagree on placement from now on.
    fn make_incompatible(&mut self, i: usize) {
        let placement = Arc::new(
            Placement::new(
                self.placement.nodes().to_vec(),
                vec![
                    Rule {
                        prefix: b"eu/".to_vec(),
                        regions: vec!["eu-west".into()],
                        home: None,
                    },
                    Rule {
                        prefix: b"elsewhere/".to_vec(),
                        regions: vec!["us-east".into()],
                        home: None,
                    },
                ],
            )
            .unwrap(),
        );
        let mut pc = ProtocolConfig::new(self.nodes[i].name.clone());
        pc.heartbeat_ms = 20;
        pc.anti_entropy_ms = 50;
        let now = self.now_for(i);
        let engine = self.nodes[i].engine.clone();
        let replicator = Replicator::new(pc, engine, placement, now);
        self.nodes[i].push_targets = replicator.push_targets();
        self.nodes[i].replicator = replicator;
    }

    /// What node `i` reports of node `j`.
    fn report_of(&self, i: usize, j: usize) -> meridian_replication::PeerReport {
        let name = &self.nodes[j].name;
        self.nodes[i]
            .replicator
            .report(self.now_for(i))
            .into_iter()
            .find(|r| &r.name == name)
            .unwrap()
    }

    /// Messages named `what` node `from` sent node `to` so far.
    fn sent(&self, from: usize, to: usize, what: &'static str) -> u64 {
        self.sent.get(&(from, to, what)).copied().unwrap_or(0)
    }

    /// Steps `ms` virtual ms, with a little real time for the engines'
    /// background fsyncs.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
            if self.now_ms.is_multiple_of(50) {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }

    /// Heals the link between `a` and `b` only (both directions).
    fn heal_link(&mut self, a: usize, b: usize) {
        for (x, y) in [(a, b), (b, a)] {
            if self.cut.remove(&(x, y)) {
                let peer = self.nodes[y].name.clone();
                self.input(x, Input::Connected { peer });
            }
        }
    }

    /// Steps until every replica agrees without healing anything (bounded
    /// in virtual ms); panics with a dump if they don't.
    fn converge_as_is(&mut self, max_ms: u64, what: &str) -> u64 {
        let start = self.now_ms;
        loop {
            for _ in 0..50 {
                self.step();
            }
            if self.converged() {
                return self.now_ms - start;
            }
            if self.now_ms - start > max_ms {
                self.dump();
                panic!("{what}: no convergence within {max_ms} virtual ms");
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    fn heal(&mut self) {
        let cut: Vec<(usize, usize)> = std::mem::take(&mut self.cut).into_iter().collect();
        for (x, y) in cut {
            let peer = self.nodes[y].name.clone();
            self.input(x, Input::Connected { peer });
        }
    }

    /// One millisecond of virtual time.
    fn step(&mut self) {
        self.now_ms += 1;
        // Deliver what is due, in random order among equals (reordering).
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].at <= self.now_ms {
                due.push(self.net.swap_remove(i));
            } else {
                i += 1;
            }
        }
        for f in due {
            if self.cut.contains(&(f.from, f.to)) {
                self.dropped += 1;
                continue;
            }
            self.delivered += 1;
            let peer = self.nodes[f.from].name.clone();
            self.input(f.to, Input::Message { peer, msg: f.msg });
        }
        self.expire_waits();
        for i in 0..self.nodes.len() {
            if self.nodes[i].durable_flag.swap(false, Ordering::SeqCst) {
                self.input(i, Input::Durable);
            }
            if self.now_ms % 10 == i as u64 % 10 {
                self.input(i, Input::Tick);
            }
        }
    }

    /// A random client operation on node `i`.
    /// `steps` steps in which node 0 or 1 makes a client write with
    /// probability 0.3 (op ids from 1), pausing 300 µs every 50 simulated
    /// ms so the engines' real sync threads keep up.
    fn write_from_first_two(&mut self, steps: usize) {
        let mut op_id = 0;
        for _ in 0..steps {
            if self.rng.random_bool(0.3) {
                op_id += 1;
                let i = self.rng.random_range(0..2);
                self.client_op(i, op_id);
            }
            self.step();
            if self.now_ms.is_multiple_of(50) {
                std::thread::sleep(std::time::Duration::from_micros(300));
            }
        }
    }

    fn client_op(&mut self, i: usize, op_id: u64) {
        let pinned = self.rng.random_bool(0.2);
        let eu_node = self.nodes[i].name.starts_with("eu-west");
        let key_base = format!("k{}", self.rng.random_range(0..6));
        let key = if pinned && eu_node {
            format!("eu/{key_base}")
        } else {
            key_base
        };
        let now = self.physical(self.nodes[i].skew_ms);
        let engine = self.nodes[i].engine.clone();
        let applied = match self.rng.random_range(0..3) {
            0 => {
                let delta = self.rng.random_range(-5i64..=5);
                let k = ObjectKey::new(Kind::Counter, key.clone()).unwrap();
                let a = engine.apply(&k, Op::Incr(delta), now).unwrap();
                *self.expected_counts.entry(key.into_bytes()).or_default() += delta;
                a
            }
            1 => {
                let member = format!("m{op_id}").into_bytes();
                let k = ObjectKey::new(Kind::Set, key.clone()).unwrap();
                let a = engine
                    .apply(&k, Op::Add(vec![member.clone()]), now)
                    .unwrap();
                self.expected_members
                    .entry(key.into_bytes())
                    .or_default()
                    .insert(member);
                a
            }
            _ => {
                let k = ObjectKey::new(Kind::Register, key).unwrap();
                engine
                    .apply(&k, Op::Put(format!("v{op_id}").into_bytes()), now)
                    .unwrap()
            }
        };
        self.push(i, &applied.record);
    }

    fn keys(&self) -> Vec<ObjectKey> {
        let mut keys = Vec::new();
        for b in 0..6 {
            for prefix in ["", "eu/"] {
                for kind in [Kind::Counter, Kind::Set, Kind::Register] {
                    keys.push(ObjectKey::new(kind, format!("{prefix}k{b}")).unwrap());
                }
            }
        }
        keys
    }

    fn dump(&self) {
        for n in &self.nodes {
            eprintln!("{} applied {:?}", n.name, n.engine.applied());
            for r in n.replicator.report(self.now_for(0)) {
                eprintln!("   peer {} {:?}", n.name, r);
            }
        }
        for key in self.keys() {
            let group = self.placement.group_of(key.key());
            let states: Vec<_> = self
                .nodes
                .iter()
                .filter(|n| self.placement.is_replica(&n.name, group))
                .map(|n| (n.name.clone(), n.engine.state(&key).unwrap()))
                .collect();
            if states.windows(2).any(|w| w[0].1 != w[1].1) {
                for (name, state) in &states {
                    eprintln!("DIFF {key:?} {name}: {state:?}");
                }
                break;
            }
        }
    }

    fn converged(&self) -> bool {
        for key in self.keys() {
            let group = self.placement.group_of(key.key());
            let replicas: Vec<&Node> = self
                .nodes
                .iter()
                .filter(|n| self.placement.is_replica(&n.name, group))
                .collect();
            let first = replicas[0].engine.state(&key).unwrap();
            if replicas[1..]
                .iter()
                .any(|n| n.engine.state(&key).unwrap() != first)
            {
                return false;
            }
        }
        true
    }

    /// Runs until every replica agrees (bounded), with faults off.
    fn settle(&mut self, max_ms: u64) -> u64 {
        self.faults = Faults {
            drop: 0.0,
            duplicate: 0.0,
            max_delay_ms: 3,
        };
        for n in &mut self.nodes {
            n.skew_ms = 0;
        }
        self.heal();
        let start = self.now_ms;
        while self.now_ms - start < max_ms {
            for _ in 0..50 {
                self.step();
            }
            if self.converged() {
                return self.now_ms - start;
            }
            // Real-time durability runs on engine threads.
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        self.dump();
        panic!(
            "no convergence within {max_ms} virtual ms (delivered {}, dropped {}, duplicated {})",
            self.delivered, self.dropped, self.duplicated
        );
    }

    fn check_invariants(&self) {
        for key in self.keys() {
            let group = self.placement.group_of(key.key());
            for n in &self.nodes {
                let replica = self.placement.is_replica(&n.name, group);
                let value = n.engine.read(&key).unwrap();
                if !replica {
                    // Residency: a non-replica never holds the object.
                    assert!(
                        n.engine.state(&key).unwrap().is_none(),
                        "{} holds {key:?} outside its placement",
                        n.name
                    );
                    continue;
                }
                match (key.kind(), value) {
                    (Kind::Counter, Value::Counter(v)) => {
                        let want = self.expected_counts.get(key.key()).copied().unwrap_or(0);
                        assert_eq!(v, want, "{} {key:?}: a delta lost or applied twice", n.name);
                    }
                    (Kind::Set, Value::Set(members)) => {
                        let want: Vec<Vec<u8>> = self
                            .expected_members
                            .get(key.key())
                            .map(|s| s.iter().cloned().collect())
                            .unwrap_or_default();
                        assert_eq!(members, want, "{} {key:?}", n.name);
                    }
                    (Kind::Register, _) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        for n in &self.nodes {
            for g in self.placement.groups() {
                if !self.placement.is_replica(&n.name, g) {
                    assert!(
                        n.engine.stream_group(n.engine.stream(g)).is_none(),
                        "{} numbered deltas of a group it doesn't replicate",
                        n.name
                    );
                }
            }
        }
    }
}

fn run_scenario(seed: u64, nodes: usize) {
    let mut sim = Sim::new(seed, nodes, 2048, 1_000);
    sim.connect_all();
    sim.faults = Faults {
        drop: 0.1,
        duplicate: 0.1,
        max_delay_ms: 40,
    };
    let mut op_id = 0;
    for round in 0..6 {
        // A random partition for part of the round.
        let mut side: Vec<usize> = (0..nodes).filter(|_| sim.rng.random_bool(0.5)).collect();
        if side.is_empty() || side.len() == nodes {
            side = vec![round % nodes];
        }
        sim.partition(&side);
        if round == 3 {
            // Clock skew within the limit on one node, beyond it on another.
            sim.nodes[0].skew_ms = 300;
            sim.nodes[1 % nodes].skew_ms = 2_000;
        }
        for _ in 0..120 {
            if sim.rng.random_bool(0.4) {
                op_id += 1;
                let i = sim.rng.random_range(0..nodes);
                sim.client_op(i, op_id);
            }
            sim.step();
        }
        sim.heal();
        for _ in 0..60 {
            sim.step();
        }
    }
    // A long partition: past retention, so the isolated node's peers
    // truncate what it lacks and it must take a full-state sync.
    sim.partition(&[nodes - 1]);
    for _ in 0..2_500 {
        if sim.rng.random_bool(0.2) {
            op_id += 1;
            let i = sim.rng.random_range(0..nodes - 1);
            sim.client_op(i, op_id);
        }
        sim.step();
        if sim.now_ms.is_multiple_of(100) {
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
    }
    let took = sim.settle(60_000);
    sim.check_invariants();
    let full_syncs: u64 = sim
        .nodes
        .iter()
        .flat_map(|n| n.replicator.report(sim.now_for(0)))
        .map(|r| r.full_syncs_received)
        .sum();
    eprintln!(
        "seed {seed}: {op_id} ops, converged {took} ms after heal; delivered {}, dropped {}, duplicated {}, full syncs {full_syncs}",
        sim.delivered, sim.dropped, sim.duplicated
    );
}

#[test]
fn three_nodes_converge_under_drops_duplicates_reordering_and_partitions() {
    for seed in 1..=3 {
        run_scenario(seed, 3);
    }
}

#[test]
fn five_nodes_converge_under_drops_duplicates_reordering_and_partitions() {
    run_scenario(42, 5);
}

/// A bridge: A and C can't talk, both talk to B. Everything reaches
/// everyone through B's pulls.
#[test]
fn bridge_topology_converges() {
    let mut sim = Sim::new(7, 3, 1 << 20, 60_000);
    sim.connect_all();
    for (x, y) in [(0, 2), (2, 0)] {
        sim.cut.insert((x, y));
        let peer = sim.nodes[y].name.clone();
        sim.input(x, Input::Disconnected { peer });
    }
    let mut op_id = 0;
    for _ in 0..300 {
        if sim.rng.random_bool(0.3) {
            op_id += 1;
            let i = if sim.rng.random_bool(0.5) { 0 } else { 2 };
            sim.client_op(i, op_id);
        }
        sim.step();
    }
    // Converge without healing the A–C cut.
    let start = sim.now_ms;
    loop {
        for _ in 0..50 {
            sim.step();
        }
        if sim.converged() {
            break;
        }
        if sim.now_ms - start > 20_000 {
            sim.dump();
            panic!("bridge did not converge");
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    sim.check_invariants();
    assert!(
        sim.cut.contains(&(0, 2)),
        "the A-C link stayed cut throughout"
    );
}

/// Pinned keys only ever travel to their region, even through catch-up
/// and full syncs.
#[test]
fn pinned_keys_stay_in_their_region() {
    let mut sim = Sim::new(11, 3, 2048, 500);
    sim.connect_all();
    let eu = sim.index("eu-west-1");
    for i in 0..200u64 {
        let k = ObjectKey::new(Kind::Set, format!("eu/secret{}", i % 5)).unwrap();
        let now = sim.physical(0);
        let a = sim.nodes[eu]
            .engine
            .apply(&k, Op::Add(vec![format!("pii-{i}").into_bytes()]), now)
            .unwrap();
        sim.push(eu, &a.record);
        sim.step();
    }
    sim.settle(10_000);
    for n in &sim.nodes {
        let mut held = 0;
        n.engine
            .full_state(&|_| true, |k, _| {
                if k.key().starts_with(b"eu/") {
                    held += 1;
                }
                Ok(true)
            })
            .unwrap();
        if n.name.starts_with("eu-west") {
            assert_eq!(held, 5);
        } else {
            assert_eq!(held, 0, "{} received pinned objects", n.name);
        }
        let _ = GroupId(0);
    }
}

/// Steps (with a little real time for the engines' background fsyncs)
/// until wait `token` has a result; returns it and the virtual time at
/// which `needed` of its peers first held the dot durably, if they did.
fn run_wait(sim: &mut Sim, token: u64, max_ms: u64) -> ((usize, u64), Option<u64>) {
    let start = sim.now_ms;
    let mut quorum_durable_at = None;
    loop {
        let w = &sim.sim_waits[&token];
        let (dot, peers, needed) = (w.dot, w.peers.clone(), w.needed);
        if quorum_durable_at.is_none() && sim.durable_count(dot, &peers) >= needed {
            quorum_durable_at = Some(sim.now_ms);
        }
        if let Some(result) = sim.sim_waits[&token].result {
            return (result, quorum_durable_at);
        }
        assert!(sim.now_ms - start < max_ms, "wait {token} never finished");
        sim.step();
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

fn counter_write(sim: &mut Sim, i: usize, key: &str) -> Record {
    let k = ObjectKey::new(Kind::Counter, key).unwrap();
    let now = sim.physical(sim.nodes[i].skew_ms);
    let a = sim.nodes[i].engine.apply(&k, Op::Incr(1), now).unwrap();
    *sim.expected_counts
        .entry(key.as_bytes().to_vec())
        .or_default() += 1;
    a.record
}

/// A quorum write through the production push and wait paths: the wait
/// completes when, and only when, enough peers have the write durably;
/// a partition that leaves too few peers makes it time out with the acks
/// it did get, and the late ack after healing is ignored.
#[test]
fn quorum_wait_completes_when_enough_peers_are_durable() {
    let mut sim = Sim::new(21, 3, 1 << 20, 60_000);
    sim.connect_all();
    for _ in 0..100 {
        sim.step();
    }
    let (b, c) = (sim.nodes[1].name.clone(), sim.nodes[2].name.clone());
    for peer in [&b, &c] {
        assert!(sim.nodes[0].push_targets.is_ready(peer), "{peer} not ready");
    }
    let peers = vec![b.clone(), c.clone()];

    for needed in [1, 2] {
        let record = counter_write(&mut sim, 0, &format!("q{needed}"));
        let dot = record.dot;
        sim.push(0, &record);
        let token = sim.wait_durable(0, dot, peers.clone(), needed, 2_000);
        let ((acked, done_at), durable_at) = run_wait(&mut sim, token, 3_000);
        assert_eq!(acked, needed, "wait for {needed} returned {acked}");
        let durable_at = durable_at.expect("done before a quorum was durable");
        // An ack leaves on the next durability callback and takes at most
        // the network's delay (5 ms) plus the step it is handled in.
        assert!(
            done_at <= durable_at + 15,
            "wait for {needed} finished at {done_at}, a quorum was durable at {durable_at}"
        );
        assert!(sim.nodes[0].waits.is_empty());
    }

    // Cut C off: only B can ack.
    let ci = sim.index(&c);
    sim.partition(&[ci]);
    assert!(!sim.nodes[0].push_targets.is_ready(&c));
    let record = counter_write(&mut sim, 0, "q-partitioned");
    let dot = record.dot;
    sim.push(0, &record);
    let started = sim.now_ms;
    let token = sim.wait_durable(0, dot, peers.clone(), 2, 300);
    let ((acked, done_at), _) = run_wait(&mut sim, token, 1_000);
    assert_eq!(acked, 1, "only B could ack");
    assert_eq!(done_at, started + 300, "gave up at the timeout");
    assert!(!sim.nodes[ci].engine.durable().contains(dot));
    assert!(sim.nodes[0].waits.is_empty());

    // Healed, C pulls the write; the cancelled wait stays finished.
    sim.settle(10_000);
    let start = sim.now_ms;
    while sim.durable_count(dot, &peers) < 2 {
        assert!(sim.now_ms - start < 5_000, "C never made the write durable");
        sim.step();
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    for _ in 0..100 {
        sim.step();
    }
    assert_eq!(sim.sim_waits[&token].result, Some((1, started + 300)));
    sim.check_invariants();
}

/// Review item C1: a node that caught up by full-state sync must serve
/// what it got to the nodes behind it. {A} | {B, C} for longer than the
/// retention, so A truncates what B and C lack; then only A–B heals. B
/// takes a full sync from A, and C, which reaches A only through B, must
/// still get A's writes: B has no log entries for the dots it got by full
/// sync, so it must tell C to take a full sync from it.
#[test]
fn bridge_heals_after_a_full_sync_past_truncation() {
    let mut sim = Sim::new(31, 3, 2048, 500);
    sim.connect_all();
    for _ in 0..100 {
        sim.step();
    }
    let (a, b, c) = (0, 1, 2);
    sim.partition(&[a]);
    let mut op_id = 0;
    for _ in 0..3_000 {
        if sim.rng.random_bool(0.2) {
            op_id += 1;
            // Mostly A: several of its log segments must go.
            let i = if sim.rng.random_bool(0.7) {
                a
            } else {
                b + sim.rng.random_range(0..2)
            };
            sim.client_op(i, op_id);
        }
        sim.step();
        if sim.now_ms.is_multiple_of(100) {
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
    }
    assert!(
        !sim.nodes[a].engine.truncated().is_empty(),
        "A never truncated its log: the scenario needs it"
    );
    // A–C stays cut for good; A–B heals.
    sim.heal_link(a, b);
    let took = sim.converge_as_is(20_000, "the bridge through B after truncation");
    sim.check_invariants();
    let from_a = sim.nodes[b]
        .replicator
        .report(sim.now_for(b))
        .into_iter()
        .find(|r| r.name == sim.nodes[a].name)
        .unwrap()
        .full_syncs_received;
    assert!(from_a > 0, "B caught up from A without a full sync");
    assert!(sim.cut.contains(&(a, c)), "the A-C link stayed cut");
    eprintln!("{op_id} ops; the bridge converged {took} ms after the heal");
}

/// Review item C8: deltas deferred for clock skew do not make catch-up
/// loop hot, nor starve the streams behind them. X's clock runs 10 s
/// ahead; X writes 40 increments and relays Y's 40. B, cut off meanwhile,
/// heals with X only: whichever stream X serves first, B must get Y's
/// deltas at once, pull at the anti-entropy pace (not once per round trip,
/// as when a batch of deferred deltas answered with `more` was re-pulled
/// at once), and get X's once its clock allows them.
#[test]
fn deferred_deltas_neither_loop_catch_up_nor_starve_other_streams() {
    let mut sim = Sim::new(41, 3, 1 << 20, 60_000);
    sim.connect_all();
    sim.run(100);
    let (x, b, y) = (0, 1, 2);
    sim.partition(&[b]);
    sim.nodes[x].skew_ms = 10_000;
    for _ in 0..40 {
        let r = counter_write(&mut sim, x, "skewed");
        sim.push(x, &r);
        let r = counter_write(&mut sim, y, "normal");
        sim.push(y, &r);
        sim.step();
    }
    sim.run(200);
    let counter = |sim: &Sim, key: &str| {
        let k = ObjectKey::new(Kind::Counter, key).unwrap();
        match sim.nodes[b].engine.read(&k).unwrap() {
            Value::Counter(v) => v,
            other => panic!("{other:?}"),
        }
    };
    sim.heal_link(x, b);
    let wants_before = sim.sent(b, x, "want");
    sim.run(2_000);
    let wants = sim.sent(b, x, "want") - wants_before;
    assert_eq!(
        counter(&sim, "normal"),
        40,
        "Y's deltas starved behind X's deferred ones"
    );
    assert_eq!(
        counter(&sim, "skewed"),
        0,
        "X's deltas applied before the clock allowed"
    );
    // One pull per anti-entropy interval (50 ms), plus the rounds' own.
    assert!(
        wants < 80,
        "B pulled from X {wants} times in 2 s: catch-up loops"
    );
    assert!(sim.report_of(b, x).deferred_deltas > 0);
    // Once B's clock reaches X's timestamps, they apply.
    let start = sim.now_ms;
    while counter(&sim, "skewed") != 40 {
        assert!(
            sim.now_ms - start < 15_000,
            "X's deferred deltas never applied"
        );
        sim.run(100);
    }
    sim.nodes[x].skew_ms = 0;
    sim.settle(20_000);
    sim.check_invariants();
}

/// Review item C8: a failing engine (here closed) does not make catch-up
/// loop either: a batch it cannot apply is not re-pulled at once, and
/// pulls back off while it keeps failing.
#[test]
fn failing_engine_does_not_loop_catch_up() {
    let mut sim = Sim::new(43, 3, 1 << 20, 60_000);
    sim.connect_all();
    sim.run(100);
    let (a, b) = (0, 1);
    sim.partition(&[b]);
    for _ in 0..60 {
        let r = counter_write(&mut sim, a, "c");
        sim.push(a, &r);
        sim.step();
    }
    sim.nodes[b].broken = true;
    sim.nodes[b].engine.close().unwrap();
    sim.heal_link(a, b);
    let before = sim.sent(b, a, "want");
    sim.run(3_000);
    let wants = sim.sent(b, a, "want") - before;
    assert!(wants < 20, "a failing engine pulled {wants} times in 3 s");
}

/// Review item C6: a peer that is connected but disagrees on placement
/// does not hold back log truncation past the retention period, is
/// reported, and is never usable for forwarding nor eligible to lead.
#[test]
fn incompatible_peer_does_not_hold_back_truncation() {
    let mut sim = Sim::new(47, 3, 2048, 500);
    let odd = 2;
    sim.make_incompatible(odd);
    sim.connect_all();
    sim.write_from_first_two(2_000);
    sim.run(1_000);
    for i in 0..2 {
        let report = sim.report_of(i, odd);
        assert!(report.connected, "{report:?}");
        assert!(!report.compatible && !report.holds_truncation, "{report:?}");
        assert!(!report.leader_eligible, "{report:?}");
        let flags = sim.nodes[i].replicator.peer_flags();
        let name = &sim.nodes[odd].name;
        assert!(!flags.is_compatible(name) && !flags.is_usable(name));
        assert!(!flags.is_leader_eligible(name));
        assert!(
            !sim.nodes[i].engine.truncated().is_empty(),
            "{} never truncated: the incompatible peer holds its log",
            sim.nodes[i].name
        );
    }
    // The compatible pair agrees, and each may lead in the other's view.
    let flags = sim.nodes[0].replicator.peer_flags();
    assert!(flags.is_leader_eligible(&sim.nodes[1].name));
    assert!(flags.is_caught_up());
}

/// Review item C6: a peer that is connected but stuck (its engine fails,
/// so it never advances) is reported stalled after `stall_ms`, is not
/// usable nor eligible to lead, and stops holding back truncation after
/// the retention period.
#[test]
fn stuck_peer_is_reported_and_does_not_hold_back_truncation() {
    let mut sim = Sim::new(53, 3, 2048, 500);
    sim.connect_all();
    sim.run(200);
    let stuck = 2;
    sim.nodes[stuck].broken = true;
    sim.nodes[stuck].engine.close().unwrap();
    sim.write_from_first_two(2_000);
    sim.run(1_000);
    for i in 0..2 {
        let report = sim.report_of(i, stuck);
        assert!(report.connected && report.compatible, "{report:?}");
        assert!(report.stalled && !report.holds_truncation, "{report:?}");
        assert!(!report.leader_eligible, "{report:?}");
        let flags = sim.nodes[i].replicator.peer_flags();
        assert!(!flags.is_usable(&sim.nodes[stuck].name));
        assert!(
            !sim.nodes[i].engine.truncated().is_empty(),
            "{} never truncated: the stuck peer holds its log",
            sim.nodes[i].name
        );
    }
}

/// Review item S6: a realtime push carries only the sender's own deltas;
/// one whose dot belongs to another node's stream is refused and counted
/// (that node's real delta would otherwise be dropped as a duplicate),
/// while the same delta relayed in catch-up is accepted. A catch-up delta
/// claiming one of the receiver's own unissued dots is refused. A register
/// delta whose inner timestamp is beyond the clock guard is deferred like
/// its record.
#[test]
fn forged_origins_are_refused_and_inner_timestamps_deferred() {
    let mut sim = Sim::new(59, 3, 1 << 20, 60_000);
    sim.connect_all();
    sim.run(100);
    let (a, b, c) = (0, 1, 2);
    sim.partition(&[c]);
    // A delta of C's that B lacks, pushed by A as if A made it.
    let k = ObjectKey::new(Kind::Counter, "forged").unwrap();
    let now = sim.physical(0);
    let of_c = sim.nodes[c]
        .engine
        .apply(&k, Op::Incr(5), now)
        .unwrap()
        .record;
    let push = |records: Vec<Record>, catch_up: bool| PeerMessage::Deltas {
        records,
        catch_up,
        more: false,
    };
    sim.send(a, b, push(vec![of_c.clone()], false));
    sim.run(20);
    assert!(
        !sim.nodes[b].engine.applied().contains(of_c.dot),
        "forged push applied"
    );
    assert_eq!(sim.report_of(b, a).refused_deltas, 1);
    // One of B's own dots it never issued, in a catch-up batch.
    let mut own = of_c.clone();
    own.dot = meridian_engine::Dot::new(
        meridian_engine::stream_id(sim.nodes[b].engine.incarnation(), GroupId(0)),
        1_000,
    );
    sim.send(a, b, push(vec![own.clone()], true));
    sim.run(20);
    assert!(!sim.nodes[b].engine.applied().contains(own.dot));
    assert_eq!(sim.report_of(b, a).refused_deltas, 2);
    // Relayed in catch-up, C's delta is fine.
    sim.send(a, b, push(vec![of_c.clone()], true));
    sim.run(20);
    assert!(
        sim.nodes[b].engine.applied().contains(of_c.dot),
        "relay refused"
    );
    // A register delta stamped now whose inner timestamp is an hour ahead.
    let r = ObjectKey::new(Kind::Register, "future").unwrap();
    let now = sim.physical(0);
    let mut reg = sim.nodes[a]
        .engine
        .apply(&r, Op::Put(b"v".to_vec()), now)
        .unwrap()
        .record;
    if let meridian_engine::Delta::Register(inner) = &mut reg.delta {
        inner.hlc.time = sim.physical(3_600_000).0;
    } else {
        unreachable!();
    }
    sim.send(a, b, push(vec![reg.clone()], true));
    sim.run(20);
    assert!(
        !sim.nodes[b].engine.applied().contains(reg.dot),
        "inner timestamp not checked"
    );
    assert!(sim.report_of(b, a).deferred_deltas > 0);
}

/// Applies `op` to `key` on node `i` at its clock and pushes what the
/// engine logged for it (the records it appended ahead of the op's own,
/// such as a fire, first), as the coordinator's write path does.
fn apply_and_push(sim: &mut Sim, i: usize, key: &ObjectKey, op: Op) {
    let now = sim.physical(sim.nodes[i].skew_ms);
    let applied = sim.nodes[i].engine.apply(key, op, now).unwrap();
    for record in applied.before.iter().chain([&applied.record]) {
        sim.push(i, record);
    }
}

/// What the server's reclamation worker does on node `i`: fires the keys
/// whose deadline passed and pushes the records.
fn reclaim(sim: &mut Sim, i: usize) {
    let now = sim.physical(sim.nodes[i].skew_ms);
    let pass = sim.nodes[i].engine.expire_due(now, 1_000).unwrap();
    for record in &pass.records {
        sim.push(i, record);
    }
}

/// Issue 15: a full-state sync carries every object's expiry state, so a
/// node whose peers truncated the expiry records it missed still learns
/// them. C is cut off past the retention; meanwhile A sets a deadline an
/// hour ahead on one register, and a set and a register expire (their
/// deadlines pass and the reclamation pass fires them: content deleted,
/// floor raised); then only a full sync can tell C. After the heal C
/// serves neither expired object and holds their floors (the tombstone
/// that hides any copy stamped before them arriving later), and it reports
/// the pending deadline and hides that register at a time past it while
/// still serving it before.
///
/// What would make this fail: full syncs without expiries (C has no
/// floors and no deadline: `ttl` is `None` and the register shows past
/// the deadline), or a receiver that does not join them.
#[test]
fn full_sync_carries_expiry_state() {
    let mut sim = Sim::new(61, 3, 2048, 500);
    sim.connect_all();
    for _ in 0..100 {
        sim.step();
    }
    let (a, b, c) = (0, 1, 2);
    let later = ObjectKey::new(Kind::Register, "x-later").unwrap();
    let gone_set = ObjectKey::new(Kind::Set, "x-gone-set").unwrap();
    let gone_register = ObjectKey::new(Kind::Register, "x-gone-register").unwrap();
    apply_and_push(&mut sim, a, &later, Op::Put(b"kept".to_vec()));
    apply_and_push(&mut sim, a, &gone_set, Op::Add(vec![b"old".to_vec()]));
    apply_and_push(&mut sim, b, &gone_register, Op::Put(b"old".to_vec()));
    sim.converge_as_is(5_000, "the objects before the partition");
    for key in [&later, &gone_set, &gone_register] {
        assert!(sim.nodes[c].engine.state(key).unwrap().is_some(), "{key:?}");
    }

    sim.partition(&[c]);
    let hour_ms = 3_600_000;
    let deadline = BASE_UNIX_MS + sim.now_ms + hour_ms;
    apply_and_push(&mut sim, a, &later, Op::Expire(Deadline::At(deadline)));
    apply_and_push(&mut sim, a, &gone_set, Op::Expire(Deadline::In(50)));
    apply_and_push(&mut sim, b, &gone_register, Op::Expire(Deadline::In(50)));
    for _ in 0..100 {
        sim.step();
    }
    reclaim(&mut sim, a);
    reclaim(&mut sim, b);
    // Enough writes on A and B that their logs truncate what C lacks.
    let mut op_id = 0;
    for _ in 0..3_000 {
        if sim.rng.random_bool(0.2) {
            op_id += 1;
            let i = sim.rng.random_range(a..=b);
            sim.client_op(i, op_id);
        }
        sim.step();
        if sim.now_ms.is_multiple_of(100) {
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
    }
    for i in [a, b] {
        assert!(
            !sim.nodes[i].engine.truncated().is_empty(),
            "{} never truncated its log: the scenario needs it",
            sim.nodes[i].name
        );
        let now = sim.physical(0);
        assert_eq!(
            sim.nodes[i].engine.read_at(&gone_set, now).unwrap(),
            Value::Set(Vec::new())
        );
    }
    // C still holds what it had.
    assert_eq!(
        sim.nodes[c]
            .engine
            .read_at(&gone_set, sim.physical(0))
            .unwrap(),
        Value::Set(vec![b"old".to_vec()])
    );

    sim.settle(30_000);
    // The states agree; the sync that brought them counts once a sync
    // arrives whole (batches reorder with the `Done` under the simulated
    // delays, and an incomplete one is retried).
    let synced = |sim: &Sim| -> u64 {
        sim.nodes[c]
            .replicator
            .report(sim.now_for(c))
            .iter()
            .map(|r| r.full_syncs_received)
            .sum()
    };
    let start = sim.now_ms;
    while synced(&sim) == 0 {
        assert!(
            sim.now_ms - start < 30_000,
            "C never completed a full-state sync"
        );
        sim.step();
        if sim.now_ms.is_multiple_of(50) {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
    sim.check_invariants();
    let engine = sim.nodes[c].engine.clone();
    let now = sim.physical(0);
    let register = |v: Value| match v {
        Value::Register(r) => r.and_then(|r| r.value),
        other => panic!("not a register: {other:?}"),
    };
    // What expired while C was away stays gone there.
    assert_eq!(
        engine.read_at(&gone_set, now).unwrap(),
        Value::Set(Vec::new())
    );
    assert_eq!(register(engine.read_at(&gone_register, now).unwrap()), None);
    for key in [&gone_set, &gone_register] {
        let floor = engine.expiry(key).unwrap().map(|e| e.floor_ms());
        assert!(floor.is_some_and(|f| f > 0), "{key:?}: C's floor {floor:?}");
    }
    // The pending deadline reached C, and applies there.
    assert_eq!(engine.ttl(&later, now).unwrap(), Some(deadline));
    assert_eq!(
        register(engine.read_at(&later, now).unwrap()),
        Some(b"kept".to_vec())
    );
    let past = PhysicalTime::from_unix_ms(deadline + 1);
    assert_eq!(register(engine.read_at(&later, past).unwrap()), None);
}

/// A full sync's expiry whose floor is further ahead of the receiver's
/// clock than the accepted offset is refused (it would hide writes not
/// yet made there), as a delta's would be, and accepted once the clock
/// has caught up.
#[test]
fn full_sync_refuses_an_expiry_floor_from_the_future() {
    let mut sim = Sim::new(71, 2, 1 << 20, 60_000);
    sim.connect_all();
    for _ in 0..100 {
        sim.step();
    }
    let key = ObjectKey::new(Kind::Register, "x-future").unwrap();
    let ahead_ms = 10_000;
    let now_ms = BASE_UNIX_MS + sim.now_ms;
    let mut expiry = Expiry::new();
    expiry.expire_at(sim.nodes[0].engine.incarnation(), now_ms, now_ms + ahead_ms);
    expiry.fire(now_ms + ahead_ms).unwrap();
    assert_eq!(expiry.floor_ms(), now_ms + ahead_ms);
    let sync = |seq| PeerMessage::FullSync {
        sync: 1,
        seq,
        objects: Vec::new(),
        expiries: vec![(key.clone(), expiry.clone())],
    };
    let peer = sim.nodes[0].name.clone();
    sim.input(
        1,
        Input::Message {
            peer: peer.clone(),
            msg: sync(0),
        },
    );
    assert_eq!(sim.nodes[1].engine.expiry(&key).unwrap(), None);
    sim.run(ahead_ms);
    sim.input(1, Input::Message { peer, msg: sync(1) });
    assert_eq!(sim.nodes[1].engine.expiry(&key).unwrap(), Some(expiry));
}
