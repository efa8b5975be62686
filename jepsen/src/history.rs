//! The operation history: what every client and the nemesis did, and when.
//!
//! One [`Op`] per invocation and one per completion, in Jepsen's format (see
//! jepsen-io/history): `index` is the op's position in the history, `time` the
//! harness's monotonic clock in nanoseconds since the test started, `type` one
//! of `invoke | ok | fail | info`. Semantics, which every checker relies on:
//!
//! * `ok`: the operation took effect; `fail`: it certainly had no effect;
//!   `info`: indeterminate (timeouts, lost connections): it may take effect
//!   at any time from its invocation on, forever.
//! * A process is logically single-threaded: its completion is the next op of
//!   the same process after the invocation. A process whose op ends `info` is
//!   retired and its worker continues under a new process id ([`Recorder`]
//!   hands them out, `id + concurrency` as Jepsen's interpreter does), so a
//!   crashed op stays concurrent with everything after it.
//! * The nemesis is process `"nemesis"`; its invocations and completions are
//!   both `info`, and the completion's `value` says what was actually done.
//!
//! Files: `history.jsonl` (one JSON object per line, the canonical form, read
//! back by `meridian-jepsen check`) and `history.txt` (Jepsen's condensed
//! tab-separated `process type f value error`, for people).

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who performed an op: a logical client process or the nemesis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Process {
    Client(u64),
    Nemesis,
}

impl Serialize for Process {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Process::Client(p) => s.serialize_u64(*p),
            Process::Nemesis => s.serialize_str("nemesis"),
        }
    }
}

impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .map(Process::Client)
                .ok_or_else(|| serde::de::Error::custom("process must be a non-negative integer")),
            Value::String(s) if s == "nemesis" => Ok(Process::Nemesis),
            other => Err(serde::de::Error::custom(format!(
                "process must be an integer or \"nemesis\", got {other}"
            ))),
        }
    }
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Process::Client(p) => write!(f, "{p}"),
            Process::Nemesis => f.write_str(":nemesis"),
        }
    }
}

/// `invoke | ok | fail | info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

impl OpType {
    pub fn as_str(self) -> &'static str {
        match self {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        }
    }
}

/// The function an op performs. Client functions first, then the nemesis's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum F {
    /// counter: value = delta; set: value = member; map: `HINCRBY`, value =
    /// `{"field", "delta"}`.
    Add,
    /// set: value = member; map: `HDEL`, value = `{"field"}`.
    Remove,
    /// counter: integer; set: sorted list of members; register: string or
    /// null; map: object of field → value.
    Read,
    /// register: value = the (unique) string written; map: `HSET`, value =
    /// `{"field", "value"}` (the value unique); expiry: `SET`, value =
    /// `{"value", "ttl-ms"}` (`ttl-ms` null: no TTL).
    Write,
    /// expiry: `PEXPIRE key ttl`, value = `{"ttl-ms"}`.
    Expire,
    /// expiry: `PERSIST key`, value = null.
    Persist,
    StartPartition,
    StopPartition,
    Kill,
    Start,
    Pause,
    Resume,
    BumpClock,
    StrobeClock,
    ResetClock,
    CheckClockOffsets,
}

impl F {
    pub fn as_str(self) -> &'static str {
        match self {
            F::Add => "add",
            F::Remove => "remove",
            F::Read => "read",
            F::Write => "write",
            F::Expire => "expire",
            F::Persist => "persist",
            F::StartPartition => "start-partition",
            F::StopPartition => "stop-partition",
            F::Kill => "kill",
            F::Start => "start",
            F::Pause => "pause",
            F::Resume => "resume",
            F::BumpClock => "bump-clock",
            F::StrobeClock => "strobe-clock",
            F::ResetClock => "reset-clock",
            F::CheckClockOffsets => "check-clock-offsets",
        }
    }
}

/// A request's consistency level (docs/architecture.md §7).
///
/// `Replicas { n, of }` is the level `replicas-n` requested of a cluster
/// whose keys have `of` replicas (the harness places no keys: every key is
/// on every node). Carrying `of` keeps a stored history checkable on its
/// own: whether a `replicas-r` read must see a `replicas-w` write
/// (`r + w > of`) needs it. Written `replicas-2-of-3` in histories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Local,
    Leader,
    Quorum,
    All,
    Replicas { n: u8, of: u8 },
}

impl Level {
    pub const ALL_LEVELS: [Level; 4] = [Level::Local, Level::Leader, Level::Quorum, Level::All];

    /// The levels `--consistency mixed` draws from on a cluster of `nodes`:
    /// the four fixed ones and `replicas-1` to `replicas-<nodes>`.
    pub fn mixed(nodes: usize) -> Vec<Level> {
        let of = u8::try_from(nodes).unwrap_or(u8::MAX);
        let mut levels = Level::ALL_LEVELS.to_vec();
        levels.extend((1..=of).map(|n| Level::Replicas { n, of }));
        levels
    }

    /// The client's level for this one (what goes on the wire).
    pub fn consistency(self) -> meridian_client::Consistency {
        use meridian_client::Consistency;
        match self {
            Level::Local => Consistency::Local,
            Level::Leader => Consistency::Leader,
            Level::Quorum => Consistency::Quorum,
            Level::All => Consistency::All,
            Level::Replicas { n, .. } => Consistency::Replicas(n),
        }
    }

    /// The replica count the history says keys had, if this level says.
    fn replica_count(self) -> Option<usize> {
        match self {
            Level::Replicas { of, .. } => Some(usize::from(of)),
            _ => None,
        }
    }

    /// Whether a read at `read` must see a write at `write` that completed
    /// before it began because their replicas intersect
    /// ([`meridian_client::Consistency::intersects`]: `all` with
    /// anything, `quorum` with `quorum`, `replicas-r`/`replicas-w` with
    /// r + w > N). N is known only from a `replicas` level; without one
    /// the answer is the one true for every N (quorum/quorum, all). Two
    /// `replicas` levels naming different N promise nothing.
    pub fn intersects(write: Level, read: Level) -> bool {
        let n = match (write.replica_count(), read.replica_count()) {
            (Some(a), Some(b)) if a != b => return false,
            (Some(n), _) | (_, Some(n)) => n,
            (None, None) => {
                return matches!(
                    (write, read),
                    (Level::All, _) | (_, Level::All) | (Level::Quorum, Level::Quorum)
                );
            }
        };
        meridian_client::Consistency::intersects(write.consistency(), read.consistency(), n)
    }

    /// Whether every two ops at levels like this one intersect: `quorum`,
    /// `all`, and `replicas-n` of N with 2n > N (then n ≥ ⌊N/2⌋ + 1, so it
    /// also intersects `quorum` and `all`). What makes a key eligible for
    /// the linearizability check and an op part of the strong set check.
    pub fn is_majority(self) -> bool {
        match self {
            Level::Quorum | Level::All => true,
            Level::Replicas { n, of } => 2 * usize::from(n) > usize::from(of),
            Level::Local | Level::Leader => false,
        }
    }

    /// Whether the level reads and writes the contacted replica alone
    /// (`local`, and `replicas-1`, which only also waits for its fsync).
    pub fn is_single_replica(self) -> bool {
        matches!(self, Level::Local | Level::Replicas { n: 1, .. })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Local => f.pad("local"),
            Level::Leader => f.pad("leader"),
            Level::Quorum => f.pad("quorum"),
            Level::All => f.pad("all"),
            Level::Replicas { n, of } => f.pad(&format!("replicas-{n}-of-{of}")),
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Level::Local),
            "leader" => Ok(Level::Leader),
            "quorum" => Ok(Level::Quorum),
            "all" => Ok(Level::All),
            other => {
                let parsed = other
                    .strip_prefix("replicas-")
                    .and_then(|rest| rest.split_once("-of-"))
                    .and_then(|(n, of)| Some((n.parse::<u8>().ok()?, of.parse::<u8>().ok()?)));
                match parsed {
                    Some((n, of)) if n >= 1 && n <= of => Ok(Level::Replicas { n, of }),
                    _ => Err(format!(
                        "unknown consistency level {other:?} (local, leader, quorum, all, replicas-N-of-M)"
                    )),
                }
            }
        }
    }
}

impl Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Which workload a key belongs to. Keys are named `<workload>-<n>` so that a
/// stored history can be checked without any other input (an object's type
/// is part of its identity in Meridian, so `add` on `counter-0` and on
/// `set-0` are different objects).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Counter,
    Set,
    Register,
    /// Values near the per-write limit and sets grown past one write's
    /// limit ([`crate::workload::large`]). Its ops are set and register ops
    /// on keys `set-large-…` and `register-large-…`, so in a history they
    /// belong to [`WorkloadKind::Set`] and [`WorkloadKind::Register`]
    /// ([`WorkloadKind::of_key`] never returns `Large`) and the set and
    /// register checkers judge them.
    Large,
    /// Maps (Redis hashes, [`crate::workload::map`]): register fields
    /// (`HSET`, `HDEL`) and counter fields (`HINCRBY`) on keys `map-<n>`.
    /// Not part of [`WorkloadKind::ALL`] (see there).
    Map,
    /// Registers with TTLs ([`crate::workload::expiry`]): `SET .. PX`,
    /// `SET`, `GET`, `PEXPIRE`, `PERSIST` on keys `expiry-<n>`. Not part of
    /// [`WorkloadKind::ALL`], as [`WorkloadKind::Map`].
    Expiry,
}

impl WorkloadKind {
    /// What `--workload all` runs. [`WorkloadKind::Large`] is left out: its
    /// ops move up to a MiB each and want a far lower `--rate`.
    /// [`WorkloadKind::Map`] is left out so that `all` keeps its op mix and
    /// RNG stream: the seeds recorded in jepsen/README.md replay the same
    /// runs (each op draws its workload uniformly from this list).
    pub const ALL: [WorkloadKind; 3] = [
        WorkloadKind::Counter,
        WorkloadKind::Set,
        WorkloadKind::Register,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Counter => "counter",
            WorkloadKind::Set => "set",
            WorkloadKind::Register => "register",
            WorkloadKind::Large => "large",
            WorkloadKind::Map => "map",
            WorkloadKind::Expiry => "expiry",
        }
    }

    /// The workload a key belongs to, from its prefix.
    pub fn of_key(key: &str) -> Option<WorkloadKind> {
        let (prefix, _) = key.split_once('-')?;
        match prefix {
            "counter" => Some(WorkloadKind::Counter),
            "set" => Some(WorkloadKind::Set),
            "register" => Some(WorkloadKind::Register),
            "map" => Some(WorkloadKind::Map),
            "expiry" => Some(WorkloadKind::Expiry),
            _ => None,
        }
    }

    /// The key name for key number `n` of this workload.
    pub fn key(self, n: u64) -> String {
        format!("{}-{n}", self.as_str())
    }

    /// The names of this workload's first `n` keys.
    pub fn keys(self, n: u64) -> Vec<String> {
        (0..n).map(|k| self.key(k)).collect()
    }
}

/// A hybrid logical clock timestamp as the server reports it: LWW registers
/// order writes by `(time, node)`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct Hlc {
    pub time: u64,
    pub node: u64,
}

/// One history entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub index: u64,
    /// Nanoseconds since the test started (harness monotonic clock).
    pub time: u64,
    pub process: Process,
    #[serde(rename = "type")]
    pub kind: OpType,
    pub f: F,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Value,
    #[serde(default)]
    pub consistency: Option<Level>,
    /// The node the client sent the request to.
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// A final read, done on every node after the faults were healed.
    #[serde(rename = "final", default, skip_serializing_if = "is_false")]
    pub is_final: bool,
    /// Free-form details: `node` (the node that served the request),
    /// `hlc` (`{time,node}` of a register value), `scenario`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `meta.node` of a request whose serving node the client cannot know: a
/// `leader` request over RESP is forwarded by the contacted node to the
/// object's leader, and the reply does not name it (`resp_db`). Not the
/// contacted node (it may not be the leader), and never equal to another
/// op's serving node: [`Op::serving_node`] reads it as `None`.
pub const UNKNOWN_NODE: &str = "?";

impl Op {
    pub fn is_invoke(&self) -> bool {
        self.kind == OpType::Invoke
    }
    pub fn is_ok(&self) -> bool {
        self.kind == OpType::Ok
    }
    pub fn is_client(&self) -> bool {
        matches!(self.process, Process::Client(_))
    }

    /// The node that served the request: `meta.node` when the server said
    /// so (e.g. the leader for `leader` requests), else the node contacted;
    /// `None` when `meta.node` is [`UNKNOWN_NODE`] (the client could not
    /// tell), so that no rule that needs the serving node applies.
    pub fn serving_node(&self) -> Option<&str> {
        match self
            .meta
            .as_ref()
            .and_then(|m| m.get("node"))
            .and_then(Value::as_str)
        {
            Some(UNKNOWN_NODE) => None,
            Some(n) => Some(n),
            None => self.node.as_deref(),
        }
    }

    /// `meta.hlc`, if present and well-formed.
    pub fn hlc(&self) -> Option<Hlc> {
        let h = self.meta.as_ref()?.get("hlc")?;
        serde_json::from_value(h.clone()).ok()
    }

    /// A meta field as a string.
    pub fn meta_str(&self, field: &str) -> Option<&str> {
        self.meta.as_ref()?.get(field)?.as_str()
    }

    pub fn workload(&self) -> Option<WorkloadKind> {
        self.key.as_deref().and_then(WorkloadKind::of_key)
    }

    /// Jepsen's `history.txt` line: `process type f value error`, with the
    /// key folded into the value as `[key value]` (jepsen.independent style).
    pub fn txt_line(&self) -> String {
        let value = match &self.key {
            Some(k) => format!("[{} {}]", edn(&Value::String(k.clone())), edn(&self.value)),
            None => edn(&self.value),
        };
        let mut line = format!(
            "{}\t:{}\t:{}\t{}",
            self.process,
            self.kind.as_str(),
            self.f.as_str(),
            value
        );
        if let Some(e) = &self.error {
            line.push('\t');
            line.push_str(&edn(&Value::String(e.clone())));
        }
        line
    }
}

/// A Clojure-reader-flavoured rendering of a JSON value, for `history.txt`.
pub fn edn(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!("[{}]", a.iter().map(edn).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!(":{k} {}", edn(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// An invocation and its completion (`None` if the history ended first,
/// which checkers treat like `info`).
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    pub inv: &'a Op,
    pub cmp: Option<&'a Op>,
}

impl<'a> Call<'a> {
    /// The completion type; a missing completion counts as `info`.
    pub fn outcome(&self) -> OpType {
        self.cmp.map_or(OpType::Info, |c| c.kind)
    }
    pub fn is_ok(&self) -> bool {
        self.outcome() == OpType::Ok
    }
    pub fn is_fail(&self) -> bool {
        self.outcome() == OpType::Fail
    }
    pub fn is_info(&self) -> bool {
        self.outcome() == OpType::Info
    }
    /// Index of the completion; `u64::MAX` (never) for indeterminate ops.
    pub fn cmp_index(&self) -> u64 {
        match self.cmp {
            Some(c) if c.kind != OpType::Info => c.index,
            _ => u64::MAX,
        }
    }
    /// Time of the completion; `u64::MAX` for indeterminate ops.
    pub fn cmp_time(&self) -> u64 {
        match self.cmp {
            Some(c) if c.kind != OpType::Info => c.time,
            _ => u64::MAX,
        }
    }
    /// The op that carries results: the completion if there is one.
    pub fn result(&self) -> &'a Op {
        self.cmp.unwrap_or(self.inv)
    }
    /// The serving node: from the completion's meta, else the contacted node.
    pub fn serving_node(&self) -> Option<&'a str> {
        match self.cmp {
            Some(c) => c.serving_node(),
            None => self.inv.serving_node(),
        }
    }
    pub fn level(&self) -> Option<Level> {
        self.inv.consistency
    }
    /// The level, which every client op must carry: a checker that guessed
    /// one (say `local`) would silently weaken or strengthen every rule it
    /// derives from it, so a missing level is an error (the checker's
    /// verdict becomes `unknown`, with the op named).
    pub fn required_level(&self) -> anyhow::Result<Level> {
        self.inv.consistency.ok_or_else(|| {
            anyhow::anyhow!(
                "op {} ({} {} on {}) has no consistency level",
                self.inv.index,
                self.inv.process,
                self.inv.f.as_str(),
                self.inv.key.as_deref().unwrap_or("-")
            )
        })
    }
}

/// A complete history, ordered by index.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub ops: Vec<Op>,
}

impl History {
    /// Builds a history, re-numbering nothing: ops must already carry
    /// increasing indices (checked).
    pub fn new(ops: Vec<Op>) -> anyhow::Result<History> {
        for w in ops.windows(2) {
            anyhow::ensure!(
                w[0].index < w[1].index,
                "history indices must increase: {} then {}",
                w[0].index,
                w[1].index
            );
        }
        Ok(History { ops })
    }

    /// Builds a history from ops in order, assigning `index` = position.
    /// Handy for hand-written histories in tests.
    pub fn from_ops(mut ops: Vec<Op>) -> History {
        for (i, op) in ops.iter_mut().enumerate() {
            op.index = i as u64;
        }
        History { ops }
    }

    /// Pairs every client invocation with its completion (the next op of the
    /// same process), in invocation order.
    pub fn calls(&self) -> Vec<Call<'_>> {
        let mut open: HashMap<Process, usize> = HashMap::new();
        let mut calls: Vec<Call<'_>> = Vec::new();
        for op in &self.ops {
            if !op.is_client() {
                continue;
            }
            if op.is_invoke() {
                // A second invocation on an open process would be a harness bug;
                // the earlier one then never completes (treated as info).
                open.insert(op.process, calls.len());
                calls.push(Call { inv: op, cmp: None });
            } else if let Some(i) = open.remove(&op.process) {
                calls[i].cmp = Some(op);
            }
        }
        calls
    }

    /// Nemesis ops, in order.
    pub fn nemesis_ops(&self) -> impl Iterator<Item = &Op> {
        self.ops.iter().filter(|o| o.process == Process::Nemesis)
    }

    /// Time of the last op (ns since start).
    pub fn end_time(&self) -> u64 {
        self.ops.last().map_or(0, |o| o.time)
    }

    pub fn write_jsonl(&self, path: &Path) -> anyhow::Result<()> {
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for op in &self.ops {
            serde_json::to_writer(&mut w, op)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        Ok(())
    }

    pub fn write_txt(&self, path: &Path) -> anyhow::Result<()> {
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for op in &self.ops {
            writeln!(w, "{}", op.txt_line())?;
        }
        w.flush()?;
        Ok(())
    }

    pub fn read_jsonl(path: &Path) -> anyhow::Result<History> {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut ops = Vec::new();
        for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let op: Op = serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not a history op", path.display(), n + 1))?;
            ops.push(op);
        }
        History::new(ops)
    }
}

/// Records a live history from many concurrent workers. Indices are assigned
/// under one lock together with the timestamp, so index order is time order.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

/// What a worker fills in for an invocation.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub process: Process,
    pub f: F,
    pub key: Option<String>,
    pub value: Value,
    pub consistency: Option<Level>,
    pub node: Option<String>,
    pub is_final: bool,
    pub meta: Option<Value>,
}

impl Recorder {
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            start,
            ops: Mutex::new(Vec::new()),
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Nanoseconds since the test started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn push(&self, mut op: Op) -> Op {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        op.index = ops.len() as u64;
        op.time = self.now_ns();
        ops.push(op.clone());
        op
    }

    /// Records an invocation and returns it (with index and time).
    pub fn invoke(&self, inv: Invocation) -> Op {
        self.invoke_as(inv, OpType::Invoke)
    }

    /// Records an invocation of the given type: the nemesis logs its
    /// invocations as `info` (Jepsen), clients as `invoke`.
    pub fn invoke_as(&self, inv: Invocation, kind: OpType) -> Op {
        self.push(Op {
            index: 0,
            time: 0,
            process: inv.process,
            kind,
            f: inv.f,
            key: inv.key,
            value: inv.value,
            consistency: inv.consistency,
            node: inv.node,
            error: None,
            is_final: inv.is_final,
            meta: inv.meta,
        })
    }

    /// Records the completion of `inv`.
    pub fn complete(
        &self,
        inv: &Op,
        kind: OpType,
        value: Value,
        error: Option<String>,
        meta: Option<Value>,
    ) -> Op {
        debug_assert!(kind != OpType::Invoke);
        self.push(Op {
            index: 0,
            time: 0,
            process: inv.process,
            kind,
            f: inv.f,
            key: inv.key.clone(),
            value,
            consistency: inv.consistency,
            node: inv.node.clone(),
            error,
            is_final: inv.is_final,
            meta,
        })
    }

    /// A snapshot of the history so far.
    pub fn snapshot(&self) -> History {
        History {
            ops: self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// Number of ops recorded so far.
    pub fn len(&self) -> usize {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Jepsen's process-id rule: a worker's process is retired after an `info`
/// completion and continues as `process + concurrency`.
pub fn next_process(process: u64, concurrency: u64) -> u64 {
    process + concurrency
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Builders for hand-written histories.
    use super::*;
    use serde_json::json;

    /// A hand-written history builder: ops get increasing indices and times
    /// (1 ms apart) in the order they are pushed.
    #[derive(Default)]
    pub struct H {
        pub ops: Vec<Op>,
    }

    pub fn op(process: u64, kind: OpType, f: F, key: &str, value: Value) -> Op {
        Op {
            index: 0,
            time: 0,
            process: Process::Client(process),
            kind,
            f,
            key: Some(key.to_string()),
            value,
            consistency: Some(Level::Local),
            node: Some("n1".into()),
            error: None,
            is_final: false,
            meta: None,
        }
    }

    impl H {
        pub fn new() -> H {
            H::default()
        }
        /// Pushes an op, assigning index and time (ms = index).
        pub fn push(&mut self, mut o: Op) -> &mut H {
            o.index = self.ops.len() as u64;
            o.time = o.index * 1_000_000;
            self.ops.push(o);
            self
        }
        pub fn invoke(&mut self, p: u64, f: F, key: &str, v: Value) -> &mut H {
            self.push(op(p, OpType::Invoke, f, key, v))
        }
        pub fn ok(&mut self, p: u64, f: F, key: &str, v: Value) -> &mut H {
            self.push(op(p, OpType::Ok, f, key, v))
        }
        pub fn fail(&mut self, p: u64, f: F, key: &str, v: Value) -> &mut H {
            self.push(op(p, OpType::Fail, f, key, v))
        }
        pub fn info(&mut self, p: u64, f: F, key: &str, v: Value) -> &mut H {
            self.push(op(p, OpType::Info, f, key, v))
        }
        /// Modifies the last pushed op.
        pub fn with(&mut self, m: impl FnOnce(&mut Op)) -> &mut H {
            let o = self.ops.last_mut().expect("no op to modify");
            m(o);
            self
        }
        /// Sets level and node on the last op.
        pub fn at(&mut self, level: Level, node: &str) -> &mut H {
            self.with(|o| {
                o.consistency = Some(level);
                o.node = Some(node.to_string());
            })
        }
        pub fn nemesis(&mut self, f: F, v: Value) -> &mut H {
            let mut o = op(0, OpType::Info, f, "", v);
            o.process = Process::Nemesis;
            o.key = None;
            o.consistency = None;
            o.node = None;
            self.push(o)
        }
        pub fn build(&self) -> History {
            History::new(self.ops.clone()).unwrap()
        }
    }

    pub fn hlc(time: u64, node: u64) -> Value {
        json!({ "hlc": { "time": time, "node": node } })
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn jsonl_round_trips_and_has_the_required_fields() {
        let mut h = H::new();
        h.invoke(0, F::Add, "counter-0", json!(-3))
            .ok(0, F::Add, "counter-0", json!(-3))
            .with(|o| o.meta = Some(json!({"node": "n2"})))
            .nemesis(F::StartPartition, json!("majority"));
        let hist = h.build();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("history.jsonl");
        hist.write_jsonl(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        for field in [
            "index",
            "time",
            "process",
            "type",
            "f",
            "key",
            "value",
            "consistency",
            "node",
            "error",
        ] {
            assert!(first.get(field).is_some(), "missing {field} in {first}");
        }
        assert!(
            first.get("final").is_none(),
            "final is only written when true"
        );
        let third: Value = serde_json::from_str(text.lines().nth(2).unwrap()).unwrap();
        assert_eq!(third["process"], json!("nemesis"));
        assert_eq!(third["f"], json!("start-partition"));
        let back = History::read_jsonl(&p).unwrap();
        assert_eq!(back.ops, hist.ops);
        assert_eq!(back.ops[1].serving_node(), Some("n2"));
        let mut unknown = back.ops[1].clone();
        unknown.meta = Some(json!({"node": UNKNOWN_NODE}));
        assert_eq!(unknown.serving_node(), None, "not the contacted node");
    }

    #[test]
    fn txt_is_jepsen_tab_format() {
        let mut h = H::new();
        h.invoke(3, F::Read, "set-1", Value::Null)
            .ok(3, F::Read, "set-1", json!(["a", "b"]));
        h.info(3, F::Read, "set-1", Value::Null)
            .with(|o| o.error = Some("timeout".into()));
        let hist = h.build();
        assert_eq!(
            hist.ops[1].txt_line(),
            "3\t:ok\t:read\t[\"set-1\" [\"a\" \"b\"]]"
        );
        assert_eq!(
            hist.ops[2].txt_line(),
            "3\t:info\t:read\t[\"set-1\" nil]\t\"timeout\""
        );
    }

    #[test]
    fn calls_pair_by_process_and_missing_completions_are_info() {
        let mut h = H::new();
        h.invoke(0, F::Add, "counter-0", json!(1))
            .invoke(1, F::Add, "counter-0", json!(2))
            .ok(1, F::Add, "counter-0", json!(2));
        let hist = h.build();
        let calls = hist.calls();
        assert_eq!(calls.len(), 2);
        assert!(calls[0].is_info());
        assert_eq!(calls[0].cmp_index(), u64::MAX);
        assert!(calls[1].is_ok());
        assert_eq!(calls[1].cmp.unwrap().index, 2);
    }

    #[test]
    fn recorder_assigns_increasing_indices_and_times() {
        let r = Recorder::new(Instant::now());
        let inv = r.invoke(Invocation {
            process: Process::Client(0),
            f: F::Read,
            key: Some("counter-0".into()),
            value: Value::Null,
            consistency: Some(Level::Quorum),
            node: Some("n1".into()),
            is_final: false,
            meta: None,
        });
        let done = r.complete(&inv, OpType::Ok, json!(4), None, None);
        assert_eq!((inv.index, done.index), (0, 1));
        assert!(done.time >= inv.time);
        assert_eq!(done.consistency, Some(Level::Quorum));
        assert_eq!(next_process(2, 10), 12);
        assert_eq!(r.snapshot().ops.len(), 2);
    }

    #[test]
    fn levels_are_strings_in_histories() {
        for (level, text) in [
            (Level::Quorum, "\"quorum\""),
            (Level::Replicas { n: 2, of: 3 }, "\"replicas-2-of-3\""),
        ] {
            assert_eq!(serde_json::to_string(&level).unwrap(), text);
            assert_eq!(serde_json::from_str::<Level>(text).unwrap(), level);
        }
        for bad in [
            "\"replicas-2\"",
            "\"replicas-4-of-3\"",
            "\"replicas-0-of-3\"",
            "\"eventual\"",
        ] {
            assert!(serde_json::from_str::<Level>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Level::Replicas { n: 2, of: 3 }.consistency().to_string(),
            "replicas-2"
        );
        assert!(Level::Replicas { n: 3, of: 5 }.is_majority());
        assert!(!Level::Replicas { n: 2, of: 4 }.is_majority());
        assert_eq!(Level::mixed(3).len(), 7);
    }

    #[test]
    fn history_rejects_out_of_order_indices() {
        let mut h = H::new();
        h.invoke(0, F::Read, "counter-0", Value::Null)
            .invoke(1, F::Read, "counter-0", Value::Null);
        let mut ops = h.ops.clone();
        ops.swap(0, 1);
        assert!(History::new(ops).is_err());
    }
}
