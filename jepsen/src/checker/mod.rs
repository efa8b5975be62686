//! Checkers: each reads a [`History`] and returns `{valid: true|false|"unknown", ...findings}`.
//!
//! Composition follows Jepsen's `compose`: every checker runs, the top-level
//! validity is the one with the highest priority (false > unknown > true), and
//! a checker that errors or panics becomes `unknown` with the error attached
//! (Jepsen's `check-safe`), so one broken checker can never turn a run green.
//!
//! Guarantees each checker relies on are those of [`crate::history`]: `ok`
//! took effect, `fail` had no effect, `info` may take effect at any time after
//! its invocation.

pub mod always;
pub mod counter;
pub mod expiry;
pub mod faults;
pub mod large;
pub mod map;
pub mod ranges;
pub mod register;
pub mod session;
pub mod set;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::history::{History, WorkloadKind};

/// A checker's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    True,
    False,
    Unknown,
}

impl Validity {
    /// Jepsen's priorities: false (1) > unknown (0.5) > true (0).
    fn priority(self) -> u8 {
        match self {
            Validity::True => 0,
            Validity::Unknown => 1,
            Validity::False => 2,
        }
    }

    /// Merges verdicts, keeping the most significant (true if empty).
    pub fn merge(vs: impl IntoIterator<Item = Validity>) -> Validity {
        vs.into_iter().fold(Validity::True, |a, b| {
            if b.priority() > a.priority() { b } else { a }
        })
    }

    pub fn from_bool(b: bool) -> Validity {
        if b { Validity::True } else { Validity::False }
    }
}

impl Serialize for Validity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::True => s.serialize_bool(true),
            Validity::False => s.serialize_bool(false),
            Validity::Unknown => s.serialize_str("unknown"),
        }
    }
}

impl<'de> Deserialize<'de> for Validity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(true) => Ok(Validity::True),
            Value::Bool(false) => Ok(Validity::False),
            Value::String(s) if s == "unknown" => Ok(Validity::Unknown),
            other => Err(serde::de::Error::custom(format!("bad validity {other}"))),
        }
    }
}

/// A checker's result: the verdict plus named findings.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    pub valid: Validity,
    pub findings: Map<String, Value>,
}

impl CheckResult {
    pub fn new(valid: Validity) -> CheckResult {
        CheckResult {
            valid,
            findings: Map::new(),
        }
    }

    /// Adds a finding (builder style).
    pub fn with(mut self, key: &str, v: impl Serialize) -> CheckResult {
        self.insert(key, v);
        self
    }

    pub fn insert(&mut self, key: &str, v: impl Serialize) {
        self.findings.insert(
            key.to_string(),
            serde_json::to_value(v).unwrap_or_else(|e| Value::String(format!("<{e}>"))),
        );
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.findings.get(key)
    }

    /// `{"valid": ..., findings...}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "valid".into(),
            serde_json::to_value(self.valid).unwrap_or(Value::Null),
        );
        for (k, v) in &self.findings {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

/// Which register keys may be checked for linearizability. The harness knows
/// what happened during the run (levels used, failovers, clock faults) and
/// passes the eligible keys; `check` derives them from the history with
/// [`LinearizableScope::from_history`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinearizableScope {
    pub keys: BTreeSet<String>,
}

impl LinearizableScope {
    /// The conservative default: a register key is eligible when all its ops
    /// carry one level (an op without a level makes the key ineligible; the
    /// register checker reports the op) and
    /// * the level is `quorum` or `all` and the run had no clock faults
    ///   (LWW under skewed clocks is not linearizable: a later write may get
    ///   a smaller timestamp), partitions, kills and pauses allowed; or
    /// * the level is `leader`, every ok op was served by the same node, and
    ///   no partition, kill or pause was in effect during the key's lifetime:
    ///   the "no failover happened" condition, seen from outside. Clock
    ///   faults are allowed: one leader stamps every write with its own
    ///   hybrid clock, which never runs backwards whatever its offset does
    ///   (docs/architecture.md §7: "register writes ordered by one clock").
    pub fn from_history(history: &History) -> LinearizableScope {
        use std::collections::BTreeMap;
        let windows = faults::windows(history);
        let clock_faults = windows.iter().any(|w| w.family == faults::Family::Clock);
        #[derive(Default)]
        struct K {
            levels: BTreeSet<crate::history::Level>,
            missing_level: bool,
            servers: BTreeSet<String>,
            first: u64,
            last: u64,
        }
        let mut keys: BTreeMap<String, K> = BTreeMap::new();
        for call in history.calls() {
            let Some(key) = call.inv.key.as_deref() else {
                continue;
            };
            if WorkloadKind::of_key(key) != Some(WorkloadKind::Register) || call.inv.is_final {
                continue;
            }
            let k = keys.entry(key.to_string()).or_insert_with(|| K {
                first: u64::MAX,
                ..K::default()
            });
            match call.level() {
                Some(l) => {
                    k.levels.insert(l);
                }
                None => k.missing_level = true,
            }
            if call.is_ok()
                && let Some(n) = call.serving_node()
            {
                k.servers.insert(n.to_string());
            }
            k.first = k.first.min(call.inv.time);
            k.last = k.last.max(call.result().time);
        }
        use crate::history::Level;
        let keys = keys
            .into_iter()
            .filter(|(_, k)| {
                if k.levels.len() != 1 || k.missing_level {
                    return false;
                }
                match k.levels.iter().next() {
                    // Quorum, all and majority replicas-n keys: reads and
                    // writes at the key's one level intersect.
                    Some(l) if l.is_majority() => !clock_faults,
                    Some(Level::Leader) => {
                        k.servers.len() <= 1
                            && !windows.iter().any(|w| {
                                w.family != faults::Family::Clock
                                    && w.shade_start < k.last
                                    && w.shade_end > k.first
                            })
                    }
                    _ => false,
                }
            })
            .map(|(key, _)| key)
            .collect();
        LinearizableScope { keys }
    }
}

/// Everything a checker may need besides the history.
#[derive(Clone, Debug, Default)]
pub struct CheckContext {
    /// Register keys eligible for the linearizability check.
    pub linearizable: LinearizableScope,
    /// Time limit for each per-key linearizability search; past it the key
    /// is `unknown`, as with Knossos/porcupine timeouts.
    pub linearizable_timeout: Duration,
    /// Convergence after heal, as measured by the harness.
    pub convergence: Option<always::Convergence>,
    /// Node logs to grep: `(node, path)`.
    pub node_logs: Vec<(String, PathBuf)>,
    /// `--availability`: required fraction of `local` ops on live nodes that
    /// succeed (1.0 = Maelstrom's `total`); `None` = report only. Default
    /// ([`CheckContext::new`]): [`always::DEFAULT_AVAILABILITY`].
    pub availability: Option<f64>,
}

impl CheckContext {
    pub fn new() -> CheckContext {
        CheckContext {
            linearizable_timeout: Duration::from_secs(10),
            availability: Some(always::DEFAULT_AVAILABILITY),
            ..CheckContext::default()
        }
    }
}

/// A named checker.
pub trait Checker: Send + Sync {
    fn name(&self) -> &'static str;
    fn check(&self, history: &History, ctx: &CheckContext) -> anyhow::Result<CheckResult>;
}

/// Runs a checker, turning an error or a panic into `unknown` + `error`.
pub fn check_safe(c: &dyn Checker, history: &History, ctx: &CheckContext) -> CheckResult {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.check(history, ctx))) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => CheckResult::new(Validity::Unknown).with("error", format!("{e:#}")),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "checker panicked".into());
            CheckResult::new(Validity::Unknown).with("error", format!("panic: {msg}"))
        }
    }
}

/// Runs every checker (in parallel threads, as Jepsen's `compose` uses
/// `pmap`) and merges: one finding per checker name plus the merged `valid`.
pub fn compose(
    checkers: &[Box<dyn Checker>],
    history: &History,
    ctx: &CheckContext,
) -> CheckResult {
    let results: Vec<(&'static str, CheckResult)> = std::thread::scope(|s| {
        let handles: Vec<_> = checkers
            .iter()
            .map(|c| (c.name(), s.spawn(|| check_safe(c.as_ref(), history, ctx))))
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| {
                (
                    name,
                    h.join().unwrap_or_else(|_| {
                        CheckResult::new(Validity::Unknown).with("error", "checker thread panicked")
                    }),
                )
            })
            .collect()
    });
    let mut out = CheckResult::new(Validity::merge(results.iter().map(|(_, r)| r.valid)));
    for (name, r) in results {
        out.insert(name, r.to_json());
    }
    out
}

/// The workloads present in a history (by key prefix): [`WorkloadKind::Large`]
/// too when a key of the large workload is present (its ops also count as
/// set and register ops).
pub fn workloads_in(history: &History) -> BTreeSet<WorkloadKind> {
    let mut w: BTreeSet<WorkloadKind> = history.ops.iter().filter_map(|o| o.workload()).collect();
    if history
        .ops
        .iter()
        .any(|o| o.key.as_deref().is_some_and(large::is_large_key))
    {
        w.insert(WorkloadKind::Large);
    }
    w
}

/// The standard checker set for the workloads present: the always-on
/// checkers plus one per workload.
pub fn standard_checkers(workloads: &BTreeSet<WorkloadKind>) -> Vec<Box<dyn Checker>> {
    let mut v: Vec<Box<dyn Checker>> = vec![
        Box::new(always::Stats),
        Box::new(always::Availability),
        Box::new(always::ConvergenceChecker),
        Box::new(always::LogPattern::panics()),
    ];
    if workloads.contains(&WorkloadKind::Counter) {
        v.push(Box::new(counter::CounterChecker));
    }
    if workloads.contains(&WorkloadKind::Set) {
        v.push(Box::new(set::SetChecker));
    }
    if workloads.contains(&WorkloadKind::Register) {
        v.push(Box::new(register::RegisterChecker));
    }
    if workloads.contains(&WorkloadKind::Large) {
        v.push(Box::new(large::LargeChecker));
    }
    if workloads.contains(&WorkloadKind::Map) {
        v.push(Box::new(map::MapChecker));
    }
    if workloads.contains(&WorkloadKind::Expiry) {
        v.push(Box::new(expiry::ExpiryChecker));
    }
    if !workloads.is_empty() {
        v.push(Box::new(session::SessionChecker));
    }
    v
}

/// Caps a list of findings so results.json stays readable.
pub const MAX_LISTED: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, Validity);
    impl Checker for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn check(&self, _: &History, _: &CheckContext) -> anyhow::Result<CheckResult> {
            Ok(CheckResult::new(self.1))
        }
    }
    struct Broken;
    impl Checker for Broken {
        fn name(&self) -> &'static str {
            "broken"
        }
        fn check(&self, _: &History, _: &CheckContext) -> anyhow::Result<CheckResult> {
            anyhow::bail!("no history for you")
        }
    }
    struct Panics;
    impl Checker for Panics {
        fn name(&self) -> &'static str {
            "panics"
        }
        fn check(&self, _: &History, _: &CheckContext) -> anyhow::Result<CheckResult> {
            panic!("boom")
        }
    }

    #[test]
    fn merge_priority_is_false_then_unknown_then_true() {
        use Validity::*;
        assert_eq!(Validity::merge([]), True);
        assert_eq!(Validity::merge([True, True]), True);
        assert_eq!(Validity::merge([True, Unknown, True]), Unknown);
        assert_eq!(Validity::merge([Unknown, False, True]), False);
        assert_eq!(Validity::merge([False, Unknown]), False);
    }

    #[test]
    fn compose_names_results_and_errors_become_unknown() {
        let h = History::default();
        let ctx = CheckContext::new();
        let r = compose(
            &[
                Box::new(Fixed("a", Validity::True)),
                Box::new(Broken),
                Box::new(Panics),
            ],
            &h,
            &ctx,
        );
        assert_eq!(r.valid, Validity::Unknown);
        let j = r.to_json();
        assert_eq!(j["a"]["valid"], Value::Bool(true));
        assert_eq!(j["broken"]["valid"], Value::String("unknown".into()));
        assert!(
            j["broken"]["error"]
                .as_str()
                .unwrap()
                .contains("no history")
        );
        assert!(j["panics"]["error"].as_str().unwrap().contains("boom"));
        let r = compose(
            &[Box::new(Fixed("a", Validity::False)), Box::new(Broken)],
            &h,
            &ctx,
        );
        assert_eq!(r.valid, Validity::False);
    }

    #[test]
    fn validity_serializes_like_jepsen() {
        assert_eq!(serde_json::to_string(&Validity::True).unwrap(), "true");
        assert_eq!(serde_json::to_string(&Validity::False).unwrap(), "false");
        assert_eq!(
            serde_json::to_string(&Validity::Unknown).unwrap(),
            "\"unknown\""
        );
        let v: Validity = serde_json::from_str("\"unknown\"").unwrap();
        assert_eq!(v, Validity::Unknown);
    }

    /// Which keys are searched for linearizability: quorum/`all` keys
    /// through partitions, kills and pauses but not clock faults; leader
    /// keys through clock faults but not through anything that can move the
    /// leader.
    #[test]
    fn linearizable_scope_follows_the_levels_promises() {
        use crate::history::test_support::{H, hlc};
        use crate::history::{F, Level};
        use serde_json::json;
        let key_ops = |h: &mut H, key: &str, level: Level, node: &str| {
            h.invoke(0, F::Write, key, json!(format!("{key}-v")))
                .at(level, node)
                .ok(0, F::Write, key, json!(format!("{key}-v")))
                .at(level, node)
                .with(|o| o.meta = Some(hlc(1, 1)));
            h.invoke(1, F::Read, key, Value::Null)
                .at(level, node)
                .ok(1, F::Read, key, json!(format!("{key}-v")))
                .at(level, node);
        };
        let run = |family: F, stop: F| {
            let mut h = H::new();
            h.nemesis(family, json!("x")).nemesis(family, json!({}));
            key_ops(&mut h, "register-long-1", Level::Leader, "n1");
            key_ops(&mut h, "register-long-2", Level::Quorum, "n1");
            key_ops(
                &mut h,
                "register-long-4",
                Level::Replicas { n: 2, of: 3 },
                "n1",
            );
            key_ops(&mut h, "register-9", Level::Replicas { n: 1, of: 3 }, "n1");
            key_ops(&mut h, "register-5", Level::Leader, "n1");
            key_ops(&mut h, "register-5", Level::Leader, "n2"); // failover seen
            key_ops(&mut h, "register-6", Level::Quorum, "n1");
            h.ops.last_mut().unwrap().consistency = None; // completion only
            key_ops(&mut h, "register-7", Level::All, "n1");
            h.ops.iter_mut().rev().nth(1).unwrap().consistency = None; // an invocation
            h.nemesis(stop, Value::Null).nemesis(stop, json!("done"));
            LinearizableScope::from_history(&h.build()).keys
        };
        let clock = run(F::BumpClock, F::ResetClock);
        assert!(
            clock.contains("register-long-1"),
            "leader under clock faults: {clock:?}"
        );
        assert!(
            !clock.contains("register-long-2"),
            "quorum under clock faults"
        );
        let part = run(F::StartPartition, F::StopPartition);
        assert!(
            !part.contains("register-long-1"),
            "leader through a partition"
        );
        assert!(
            part.contains("register-long-2"),
            "quorum through a partition: {part:?}"
        );
        assert!(part.contains("register-6"));
        assert!(!part.contains("register-7"), "an op without a level");
        // replicas-2 of 3 is a majority, like quorum; replicas-1 of 3 is not.
        assert!(part.contains("register-long-4"), "{part:?}");
        assert!(!clock.contains("register-long-4"));
        assert!(
            !part.contains("register-9"),
            "replicas-1 of 3 is not linearizable"
        );
        let kill = run(F::Kill, F::Start);
        assert!(!kill.contains("register-long-1"));
        assert!(kill.contains("register-long-2"));
        for s in [&clock, &part, &kill] {
            assert!(!s.contains("register-5"), "served by two leaders");
        }
    }

    /// A client op without a consistency level makes every checker that
    /// depends on levels error (unknown), instead of reading it as `local`.
    #[test]
    fn missing_level_is_an_error_not_local() {
        use crate::history::test_support::H;
        use crate::history::{F, Level};
        use serde_json::json;
        let mut h = H::new();
        for (key, w, v) in [
            ("counter-0", F::Add, json!(1)),
            ("set-0", F::Add, json!("e1")),
            ("register-0", F::Write, json!("v1")),
        ] {
            h.invoke(0, w, key, v.clone())
                .at(Level::Quorum, "n1")
                .ok(0, w, key, v)
                .at(Level::Quorum, "n1");
        }
        let good = h.build();
        let ws = workloads_in(&good);
        let ctx = CheckContext::new();
        for c in standard_checkers(&ws) {
            if let Some(e) = check_safe(c.as_ref(), &good, &ctx).get("error") {
                panic!("{}: {e}", c.name());
            }
        }
        for i in [0, 2, 4] {
            let mut ops = h.ops.clone();
            ops[i].consistency = None;
            let bad = History::new(ops).unwrap();
            let r = compose(&standard_checkers(&ws), &bad, &ctx);
            assert_eq!(r.valid, Validity::Unknown, "op {i}: {}", r.to_json());
            let key = bad.ops[i].key.clone().unwrap();
            let name = WorkloadKind::of_key(&key).unwrap().as_str();
            let err = r.to_json()[name]["error"]
                .as_str()
                .unwrap_or("")
                .to_string();
            assert!(err.contains("no consistency level"), "{name}: {err}");
            assert!(
                r.to_json()["availability"]["error"].is_string(),
                "availability does not guess either"
            );
        }
    }
}
