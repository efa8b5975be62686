//! The nemesis: executes [`NemesisOp`]s against the network, the node
//! processes and the node clocks, and logs each as Jepsen does — an `info`
//! invocation (value: what was asked) and an `info` completion on process
//! `"nemesis"` whose value records what was actually done: the resolved
//! grudge, the PIDs killed/started/paused/resumed, the clock offsets.
//!
//! * partition: [`NetFaults::partition`] with the op's grudge; stop = heal.
//! * kill / start: SIGKILL by PID, then restart with the same config and
//!   data ([`ProcessControl`]); start = every killed node.
//! * pause / resume: SIGSTOP / SIGCONT by PID; resume = every paused node.
//! * clock: per-node offsets through [`Db::set_clock_offset`] (the node's
//!   debug clock, never the shared system clock). Bumps accumulate like
//!   Jepsen's `clock_settime(now + delta)` but every offset is clamped to
//!   ±[`MAX_CLOCK_OFFSET_MS`] (see [`crate::generator`] for why this departs
//!   from Jepsen); reset sets 0; a strobe flips
//!   between offset+delta and offset every period for its duration (period
//!   clamped to [`MIN_STROBE_PERIOD_MS`]), blocking the nemesis as Jepsen's
//!   strobe-time does. Every clock completion records `clock-offsets`.
//!
//! Each op's errors are recorded (completion `error`), never fatal: a
//! nemesis that could not act leaves the verdict to the checkers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::db::Db;
use crate::generator::{MAX_CLOCK_OFFSET_MS, NemesisOp};
use crate::history::{Invocation, OpType, Process, Recorder};
use crate::net::NetFaults;

/// Shortest strobe period actually applied: each flip is an RPC per node,
/// and Jepsen's 1 ms floor would be a thousand RPCs a second per node.
pub const MIN_STROBE_PERIOD_MS: u64 = 10;

/// Node process control (implemented by the cluster driver).
pub trait ProcessControl: Send + Sync {
    /// SIGKILL; returns the PID killed.
    fn kill(&self, node: &str) -> anyhow::Result<i32>;
    /// Restarts a killed node; returns its new PID (None: it was running).
    fn start(&self, node: &str) -> anyhow::Result<Option<i32>>;
    /// SIGSTOP; returns the PID.
    fn pause(&self, node: &str) -> anyhow::Result<i32>;
    /// SIGCONT; returns the PID (None: it was not paused).
    fn resume(&self, node: &str) -> anyhow::Result<Option<i32>>;
    /// Deletes the data directory of a node that is not running (the
    /// negative control); returns the directory deleted.
    fn wipe_data(&self, node: &str) -> anyhow::Result<String> {
        anyhow::bail!("cannot wipe {node}'s data: no data directory known")
    }
}

/// The nemesis and what it has done so far.
pub struct Nemesis<D: Db> {
    recorder: Arc<Recorder>,
    net: Option<Arc<dyn NetFaults>>,
    procs: Option<Arc<dyn ProcessControl>>,
    clock: Option<Arc<D>>,
    nodes: Vec<String>,
    offsets: BTreeMap<String, i64>,
    killed: BTreeSet<String>,
    paused: BTreeSet<String>,
    partitioned: bool,
    /// The largest offset ahead of real time any node was given (ms): the
    /// final wait must outlast it, since peers defer a fast node's deltas
    /// until real time catches up with their timestamps.
    max_ahead_ms: i64,
    /// A strobe never runs past this (the end of the main phase).
    deadline: Option<Instant>,
}

impl<D: Db> std::fmt::Debug for Nemesis<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nemesis")
            .field("nodes", &self.nodes)
            .field("offsets", &self.offsets)
            .field("killed", &self.killed)
            .field("paused", &self.paused)
            .finish()
    }
}

fn invoke_value(op: &NemesisOp) -> Value {
    match op {
        NemesisOp::StartPartition { spec, .. } => json!(spec.name()),
        NemesisOp::Kill { spec, nodes } | NemesisOp::Pause { spec, nodes } => {
            json!({"spec": spec, "nodes": nodes})
        }
        NemesisOp::WipeData { node } => json!({"spec": "wipe-data", "nodes": [node]}),
        NemesisOp::Start | NemesisOp::Resume => json!("all"),
        NemesisOp::BumpClock { deltas } => json!(deltas),
        NemesisOp::StrobeClock { strobes } => json!(strobes),
        NemesisOp::ResetClock { nodes } => json!(nodes),
        NemesisOp::StopPartition | NemesisOp::CheckClockOffsets => Value::Null,
    }
}

impl<D: Db> Nemesis<D> {
    pub fn new(
        recorder: Arc<Recorder>,
        nodes: Vec<String>,
        net: Option<Arc<dyn NetFaults>>,
        procs: Option<Arc<dyn ProcessControl>>,
        clock: Option<Arc<D>>,
    ) -> Nemesis<D> {
        Nemesis {
            recorder,
            net,
            procs,
            clock,
            offsets: nodes.iter().map(|n| (n.clone(), 0)).collect(),
            nodes,
            killed: BTreeSet::new(),
            paused: BTreeSet::new(),
            partitioned: false,
            max_ahead_ms: 0,
            deadline: None,
        }
    }

    /// Strobes stop at `deadline` (the end of the main phase) even if their
    /// drawn duration is longer; the completion says so.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    pub fn offsets(&self) -> &BTreeMap<String, i64> {
        &self.offsets
    }

    /// The largest clock offset ahead of real time applied so far, in ms.
    pub fn max_ahead_ms(&self) -> i64 {
        self.max_ahead_ms
    }

    /// Whether this nemesis can run an op (its fault tool is present).
    pub fn supports(&self, op: &NemesisOp) -> bool {
        match op {
            NemesisOp::StartPartition { .. } | NemesisOp::StopPartition => self.net.is_some(),
            NemesisOp::Kill { .. }
            | NemesisOp::WipeData { .. }
            | NemesisOp::Start
            | NemesisOp::Pause { .. }
            | NemesisOp::Resume => self.procs.is_some(),
            _ => self.clock.is_some(),
        }
    }

    /// Runs one op, recording its invocation and completion. Returns the
    /// completion value.
    pub async fn run(&mut self, op: &NemesisOp) -> Value {
        let inv = self.recorder.invoke_as(
            Invocation {
                process: Process::Nemesis,
                f: op.f(),
                key: None,
                value: invoke_value(op),
                consistency: None,
                node: None,
                is_final: false,
                meta: None,
            },
            OpType::Info,
        );
        let (value, error) = match self.execute(op).await {
            Ok(v) => (v, None),
            Err(e) => (Value::Null, Some(format!("{e:#}"))),
        };
        self.recorder
            .complete(&inv, OpType::Info, value.clone(), error, None);
        value
    }

    /// Sets one node's offset unless it is down (killed or paused: its
    /// debug RPC could only wait out a timeout; a restarted node starts at
    /// offset 0 anyway). Per-node outcome for the completion value; never
    /// fails the whole op, so one dead node cannot leave other clocks skewed.
    async fn try_offset(&mut self, node: &str, ms: i64) -> Value {
        if self.killed.contains(node) {
            return json!("not running");
        }
        if self.paused.contains(node) {
            return json!("paused");
        }
        match self.set_offset(node, ms).await {
            Ok(()) => json!(self.offsets.get(node).copied().unwrap_or(0)),
            Err(e) => json!({"error": format!("{e:#}")}),
        }
    }

    async fn set_offset(&mut self, node: &str, ms: i64) -> anyhow::Result<()> {
        let ms = ms.clamp(-MAX_CLOCK_OFFSET_MS, MAX_CLOCK_OFFSET_MS);
        // Counted before the RPC: one that fails may still have been applied.
        self.max_ahead_ms = self.max_ahead_ms.max(ms);
        let clock = self
            .clock
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no clock control"))?;
        clock
            .set_clock_offset(node, ms)
            .await
            .map_err(|e| anyhow::anyhow!("setting {node}'s clock offset: {e}"))?;
        self.offsets.insert(node.to_string(), ms);
        Ok(())
    }

    fn with_offsets(&self, v: Value) -> Value {
        let mut v = if v.is_object() { v } else { json!({"done": v}) };
        v["clock-offsets"] = json!(self.offsets);
        v
    }

    async fn execute(&mut self, op: &NemesisOp) -> anyhow::Result<Value> {
        let no = |what: &str| anyhow::anyhow!("no {what} control in this run");
        match op {
            NemesisOp::StartPartition { spec, grudge } => {
                let net = self.net.as_ref().ok_or_else(|| no("network"))?;
                net.partition(grudge)?;
                self.partitioned = true;
                Ok(json!({"spec": spec.name(), "grudge": grudge, "backend": net.backend()}))
            }
            NemesisOp::StopPartition => {
                let net = self.net.as_ref().ok_or_else(|| no("network"))?;
                net.heal()?;
                self.partitioned = false;
                Ok(json!("network-healed"))
            }
            NemesisOp::Kill { nodes, .. } => {
                let procs = self.procs.clone().ok_or_else(|| no("process"))?;
                let mut done = serde_json::Map::new();
                for n in nodes {
                    let r = match procs.kill(n) {
                        Ok(pid) => {
                            self.killed.insert(n.clone());
                            self.paused.remove(n);
                            // A restarted node's clock has no debug offset.
                            self.offsets.insert(n.clone(), 0);
                            json!({"killed_pid": pid})
                        }
                        Err(e) => json!({"error": format!("{e:#}")}),
                    };
                    done.insert(n.clone(), r);
                }
                Ok(Value::Object(done))
            }
            NemesisOp::WipeData { node } => {
                let procs = self.procs.clone().ok_or_else(|| no("process"))?;
                let pid = procs.kill(node)?;
                self.killed.insert(node.clone());
                self.paused.remove(node);
                self.offsets.insert(node.clone(), 0);
                let dir = procs.wipe_data(node)?;
                Ok(json!({node: {"killed_pid": pid, "wiped": dir}}))
            }
            NemesisOp::Start => {
                let procs = self.procs.clone().ok_or_else(|| no("process"))?;
                let mut done = serde_json::Map::new();
                for n in std::mem::take(&mut self.killed) {
                    let r = match procs.start(&n) {
                        Ok(pid) => json!({"started_pid": pid}),
                        Err(e) => {
                            self.killed.insert(n.clone());
                            json!({"error": format!("{e:#}")})
                        }
                    };
                    done.insert(n, r);
                }
                Ok(Value::Object(done))
            }
            NemesisOp::Pause { nodes, .. } => {
                let procs = self.procs.clone().ok_or_else(|| no("process"))?;
                let mut done = serde_json::Map::new();
                for n in nodes {
                    let r = if self.killed.contains(n) {
                        json!("not running")
                    } else {
                        match procs.pause(n) {
                            Ok(pid) => {
                                self.paused.insert(n.clone());
                                json!({"paused_pid": pid})
                            }
                            Err(e) => json!({"error": format!("{e:#}")}),
                        }
                    };
                    done.insert(n.clone(), r);
                }
                Ok(Value::Object(done))
            }
            NemesisOp::Resume => {
                let procs = self.procs.clone().ok_or_else(|| no("process"))?;
                let mut done = serde_json::Map::new();
                for n in std::mem::take(&mut self.paused) {
                    let r = match procs.resume(&n) {
                        Ok(pid) => json!({"resumed_pid": pid}),
                        Err(e) => json!({"error": format!("{e:#}")}),
                    };
                    done.insert(n, r);
                }
                Ok(Value::Object(done))
            }
            NemesisOp::BumpClock { deltas } => {
                let mut applied = BTreeMap::new();
                for (n, d) in deltas {
                    let now = self.offsets.get(n).copied().unwrap_or(0);
                    let r = self.try_offset(n, now.saturating_add(*d)).await;
                    applied.insert(n.clone(), json!({"delta": d, "offset": r}));
                }
                Ok(self.with_offsets(json!({"deltas": applied})))
            }
            NemesisOp::ResetClock { nodes } => {
                let mut done = BTreeMap::new();
                for n in nodes {
                    let r = self.try_offset(n, 0).await;
                    done.insert(n.clone(), r);
                }
                Ok(self.with_offsets(json!({"reset": done})))
            }
            NemesisOp::CheckClockOffsets => Ok(self.with_offsets(json!({}))),
            NemesisOp::StrobeClock { strobes } => {
                let base: BTreeMap<String, i64> = strobes
                    .keys()
                    .map(|n| (n.clone(), self.offsets.get(n).copied().unwrap_or(0)))
                    .collect();
                let longest = strobes.values().map(|s| s.duration_s).max().unwrap_or(0);
                let start = Instant::now();
                let mut flips = 0u64;
                let mut high = false;
                let period = strobes
                    .values()
                    .map(|s| s.period_ms.max(MIN_STROBE_PERIOD_MS))
                    .min()
                    .unwrap_or(MIN_STROBE_PERIOD_MS);
                let until = self
                    .deadline
                    .map_or(start + Duration::from_secs(longest), |d| {
                        d.min(start + Duration::from_secs(longest))
                    });
                let cut_short = until < start + Duration::from_secs(longest);
                let mut errors = BTreeMap::new();
                while Instant::now() < until {
                    high = !high;
                    for (n, s) in strobes {
                        if start.elapsed() < Duration::from_secs(s.duration_s)
                            && !errors.contains_key(n)
                        {
                            let off = if high { base[n] + s.delta_ms } else { base[n] };
                            let r = self.try_offset(n, off).await;
                            if !r.is_number() {
                                // Down or unreachable: leave it alone from now on.
                                errors.insert(n.clone(), r);
                            }
                        }
                    }
                    flips += 1;
                    tokio::time::sleep(Duration::from_millis(period)).await;
                }
                for (n, b) in &base {
                    if !errors.contains_key(n) {
                        self.try_offset(n, *b).await;
                    }
                }
                Ok(self.with_offsets(json!({
                    "strobes": strobes, "flips": flips, "period_ms": period,
                    "cut-short": cut_short, "skipped": errors,
                })))
            }
        }
    }

    /// Jepsen's final generators: heal the network, resume paused nodes,
    /// restart killed nodes, reset clocks — each logged, only for the
    /// controls this run has.
    pub async fn final_heal(&mut self) {
        if self.net.is_some() {
            self.run(&NemesisOp::StopPartition).await;
        }
        if self.procs.is_some() {
            self.run(&NemesisOp::Resume).await;
            self.run(&NemesisOp::Start).await;
        }
        if self.clock.is_some() && self.offsets.values().any(|o| *o != 0) {
            self.run(&NemesisOp::ResetClock {
                nodes: self.nodes.clone(),
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{MemoryBugs, MemoryDb};
    use crate::generator::{NodeSpec, Strobe};
    use crate::grudge::{Grudge, PartitionSpec};
    use crate::history::F;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeNet {
        log: Mutex<Vec<String>>,
    }
    impl NetFaults for FakeNet {
        fn backend(&self) -> &'static str {
            "fake"
        }
        fn partition(&self, g: &Grudge) -> anyhow::Result<()> {
            self.log
                .lock()
                .unwrap()
                .push(format!("partition {}", g.directed_pairs().len()));
            Ok(())
        }
        fn cut(&self, _: &str, _: &str) -> anyhow::Result<()> {
            Ok(())
        }
        fn heal(&self) -> anyhow::Result<()> {
            self.log.lock().unwrap().push("heal".into());
            Ok(())
        }
        fn set_delay(&self, _: &str, _: &str, _: crate::net::Delay) -> anyhow::Result<()> {
            Ok(())
        }
    }

    #[derive(Default)]
    struct FakeProcs {
        log: Mutex<Vec<String>>,
    }
    impl ProcessControl for FakeProcs {
        fn kill(&self, n: &str) -> anyhow::Result<i32> {
            self.log.lock().unwrap().push(format!("kill {n}"));
            Ok(100)
        }
        fn start(&self, n: &str) -> anyhow::Result<Option<i32>> {
            self.log.lock().unwrap().push(format!("start {n}"));
            Ok(Some(200))
        }
        fn pause(&self, n: &str) -> anyhow::Result<i32> {
            self.log.lock().unwrap().push(format!("pause {n}"));
            Ok(100)
        }
        fn resume(&self, n: &str) -> anyhow::Result<Option<i32>> {
            self.log.lock().unwrap().push(format!("resume {n}"));
            Ok(Some(100))
        }
    }

    fn nodes() -> Vec<String> {
        vec!["n1".into(), "n2".into(), "n3".into()]
    }

    #[tokio::test]
    async fn ops_are_logged_as_info_pairs_with_what_was_done() {
        let rec = Arc::new(Recorder::new(Instant::now()));
        let net = Arc::new(FakeNet::default());
        let procs = Arc::new(FakeProcs::default());
        let db = Arc::new(MemoryDb::new(MemoryBugs::default()));
        let mut n = Nemesis::new(
            rec.clone(),
            nodes(),
            Some(net.clone() as Arc<dyn NetFaults>),
            Some(procs.clone() as Arc<dyn ProcessControl>),
            Some(db.clone()),
        );
        let grudge =
            crate::grudge::complete_grudge(&[vec!["n1".into()], vec!["n2".into(), "n3".into()]]);
        n.run(&NemesisOp::StartPartition {
            spec: PartitionSpec::One,
            grudge: grudge.clone(),
        })
        .await;
        n.run(&NemesisOp::Kill {
            spec: NodeSpec::One,
            nodes: vec!["n2".into()],
        })
        .await;
        n.run(&NemesisOp::BumpClock {
            deltas: [("n1".to_string(), 500)].into_iter().collect(),
        })
        .await;
        n.run(&NemesisOp::BumpClock {
            deltas: [("n1".to_string(), -200)].into_iter().collect(),
        })
        .await;
        n.final_heal().await;

        let h = rec.snapshot();
        assert!(h.ops.iter().all(|o| o.process == Process::Nemesis));
        // Invocation then completion, both info, with the same f.
        for pair in h.ops.chunks(2) {
            assert_eq!(pair[0].f, pair[1].f);
            assert_eq!(pair[0].kind, OpType::Info);
            assert_eq!(pair[1].kind, OpType::Info);
        }
        assert_eq!(
            h.ops[1].value["grudge"],
            serde_json::to_value(&grudge).unwrap()
        );
        assert_eq!(h.ops[3].value["n2"]["killed_pid"], json!(100));
        assert_eq!(
            h.ops[7].value["clock-offsets"]["n1"],
            json!(300),
            "bumps accumulate"
        );
        let fs: Vec<F> = h.ops.iter().step_by(2).map(|o| o.f).collect();
        assert_eq!(
            fs,
            vec![
                F::StartPartition,
                F::Kill,
                F::BumpClock,
                F::BumpClock,
                F::StopPartition,
                F::Resume,
                F::Start,
                F::ResetClock
            ]
        );
        assert_eq!(*procs.log.lock().unwrap(), vec!["kill n2", "start n2"]);
        assert_eq!(*net.log.lock().unwrap(), vec!["partition 4", "heal"]);
        assert_eq!(db.offsets()["n1"], 0, "final reset");
        // The history parses into windows for plots and checkers.
        let w = crate::checker::faults::windows(&h);
        assert!(
            w.iter()
                .any(|w| w.family == crate::checker::faults::Family::Kill)
        );
    }

    #[tokio::test]
    async fn strobe_returns_to_the_base_offset_and_missing_controls_are_errors() {
        let rec = Arc::new(Recorder::new(Instant::now()));
        let db = Arc::new(MemoryDb::new(MemoryBugs::default()));
        let mut n = Nemesis::new(rec.clone(), nodes(), None, None, Some(db.clone()));
        n.run(&NemesisOp::StrobeClock {
            strobes: [(
                "n3".to_string(),
                Strobe {
                    delta_ms: 1000,
                    period_ms: 1,
                    duration_s: 0,
                },
            )]
            .into_iter()
            .collect(),
        })
        .await;
        assert_eq!(db.offsets()["n3"], 0);
        let v = n.run(&NemesisOp::StopPartition).await;
        assert_eq!(v, Value::Null);
        let h = rec.snapshot();
        assert!(
            h.ops
                .last()
                .unwrap()
                .error
                .as_deref()
                .unwrap()
                .contains("no network")
        );
        assert!(!n.supports(&NemesisOp::StopPartition));
        assert!(n.supports(&NemesisOp::CheckClockOffsets));
    }
}
