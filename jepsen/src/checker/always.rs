//! Checkers that run on every test, whatever the workload.
//!
//! * [`Stats`]: ok/fail/info counts overall and per `f` (Jepsen's `stats`:
//!   an `f` with no ok op at all is invalid, as in Jepsen's code and tests).
//! * [`Availability`]: `local` needs only the node it is sent to
//!   (docs/architecture.md §7: "available while that node is up"), so
//!   partitions do not excuse a failure, but a kill or pause of that node
//!   does. Judged: every non-final `local` op, except those whose
//!   [invocation, completion] overlaps a kill or pause window naming the
//!   node it was sent to, extended by [`RECOVERY_GRACE_NS`] after the
//!   restart / resume. `ok` counts as available; `fail` and `info` do not.
//!   Valid iff ok / judged ≥ the required fraction: by default
//!   [`DEFAULT_AVAILABILITY`] (`--availability F` or `total` to change it,
//!   `--availability off` to only report). No judged op: valid (reported as
//!   `local-ops: 0`). The share during partitions is reported too.
//! * [`ConvergenceChecker`]: the harness's measurement of the time from the
//!   final heal until every node's final reads agreed; invalid if they never
//!   agreed within the harness's wait (the final-read checkers then say how).
//! * [`LogPattern`]: Jepsen's `log-file-pattern`, grepping every node's log for
//!   `panicked at`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::faults::{self, Family};
use super::{CheckContext, CheckResult, Checker, MAX_LISTED, Validity};
use crate::history::{History, Level, OpType};

/// Ok/fail/info counts.
#[derive(Debug, Clone, Copy)]
pub struct Stats;

#[derive(Default, Serialize)]
struct Counts {
    count: u64,
    #[serde(rename = "ok-count")]
    ok: u64,
    #[serde(rename = "fail-count")]
    fail: u64,
    #[serde(rename = "info-count")]
    info: u64,
}

impl Counts {
    fn add(&mut self, t: OpType) {
        self.count += 1;
        match t {
            OpType::Ok => self.ok += 1,
            OpType::Fail => self.fail += 1,
            OpType::Info => self.info += 1,
            OpType::Invoke => self.count -= 1,
        }
    }
}

impl Checker for Stats {
    fn name(&self) -> &'static str {
        "stats"
    }

    fn check(&self, history: &History, _: &CheckContext) -> anyhow::Result<CheckResult> {
        let mut all = Counts::default();
        let mut by_f: BTreeMap<&str, Counts> = BTreeMap::new();
        for op in history
            .ops
            .iter()
            .filter(|o| o.is_client() && !o.is_invoke())
        {
            all.add(op.kind);
            by_f.entry(op.f.as_str()).or_default().add(op.kind);
        }
        let per_f: BTreeMap<&str, serde_json::Value> = by_f
            .iter()
            .map(|(f, c)| {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                v["valid"] = json!(c.ok > 0);
                (*f, v)
            })
            .collect();
        let valid = Validity::merge(by_f.values().map(|c| Validity::from_bool(c.ok > 0)));
        let mut r = CheckResult::new(valid).with("by-f", per_f);
        for (k, v) in serde_json::to_value(&all)?
            .as_object()
            .into_iter()
            .flatten()
        {
            r.insert(k, v);
        }
        Ok(r)
    }
}

/// Availability of `local` ops on nodes that were up.
#[derive(Debug, Clone, Copy)]
pub struct Availability;

/// The share of judged `local` ops that must succeed by default (see the
/// module docs). `local` needs only the node it is sent to, so on a node
/// that is up every op should succeed; 1 % leaves room for a request that
/// raced a restart or resume past [`RECOVERY_GRACE_NS`]. Measured: two
/// 60 s `--workload all --nemesis all` runs (nft, seeds 11 and 12) had
/// 1000 / 1000 and 304 / 304 judged local ops succeed.
pub const DEFAULT_AVAILABILITY: f64 = 0.99;

/// How long after a node was restarted (kill window closed) or resumed
/// (pause window closed) its `local` ops are still not judged: the node
/// opens its store and the pinned client reconnects. Not needed in the
/// runs measured (every op right after a restart succeeded); it keeps a
/// slow machine's restart from reading as unavailability.
pub const RECOVERY_GRACE_NS: u64 = 2_000_000_000;

impl Checker for Availability {
    fn name(&self) -> &'static str {
        "availability"
    }

    fn check(&self, history: &History, ctx: &CheckContext) -> anyhow::Result<CheckResult> {
        let windows = faults::windows(history);
        let parts: Vec<&faults::Window> = windows
            .iter()
            .filter(|w| w.family == Family::Partition)
            .collect();
        // Nodes down (killed or paused) per window; a window that names no
        // node (its completion is missing) counts for every node.
        let down: Vec<(&faults::Window, BTreeSet<String>)> = windows
            .iter()
            .filter(|w| matches!(w.family, Family::Kill | Family::Pause))
            .map(|w| {
                let nodes = w
                    .value
                    .as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                (w, nodes)
            })
            .collect();
        #[derive(Default, Serialize)]
        struct Tally {
            judged: u64,
            ok: u64,
        }
        let mut all = Tally::default();
        let mut during_partitions = Tally::default();
        let mut by_node: BTreeMap<String, Tally> = BTreeMap::new();
        let mut skipped_down = 0u64;
        let mut failures = Vec::new();
        for c in history.calls() {
            if c.inv.is_final || c.inv.key.is_none() {
                continue;
            }
            if c.required_level()? != Level::Local {
                continue;
            }
            let (t0, t1) = (c.inv.time, c.result().time.max(c.inv.time));
            let node = c.inv.node.as_deref().unwrap_or("");
            let node_down = down.iter().any(|(w, nodes)| {
                (nodes.is_empty() || nodes.contains(node))
                    && w.shade_start <= t1
                    && t0 <= w.shade_end.saturating_add(RECOVERY_GRACE_NS)
            });
            if node_down {
                skipped_down += 1;
                continue;
            }
            let ok = c.is_ok();
            let in_partition = parts
                .iter()
                .any(|w| w.shade_start <= t0 && t0 <= w.shade_end);
            for t in [
                Some(&mut all),
                in_partition.then_some(&mut during_partitions),
            ]
            .into_iter()
            .flatten()
            {
                t.judged += 1;
                t.ok += u64::from(ok);
            }
            let n = by_node.entry(node.to_string()).or_default();
            n.judged += 1;
            n.ok += u64::from(ok);
            if !ok && failures.len() < MAX_LISTED {
                failures.push(json!({
                    "index": c.inv.index, "node": node, "f": c.inv.f.as_str(),
                    "type": c.outcome().as_str(), "error": c.result().error,
                }));
            }
        }
        let fraction = |t: &Tally| (t.judged > 0).then(|| t.ok as f64 / t.judged as f64);
        let valid = match (ctx.availability, fraction(&all)) {
            (None, _) => Validity::True,
            // No local op on a live node: nothing to judge.
            (Some(_), None) => Validity::True,
            (Some(req), Some(f)) => Validity::from_bool(f >= req),
        };
        Ok(CheckResult::new(valid)
            .with("judged", ctx.availability.is_some())
            .with("required", ctx.availability)
            .with("local-ops", all.judged)
            .with("ok-count", all.ok)
            .with("ok-fraction", fraction(&all))
            .with("skipped-node-down", skipped_down)
            .with("local-ops-during-partitions", during_partitions.judged)
            .with(
                "ok-fraction-during-partitions",
                fraction(&during_partitions),
            )
            .with("by-node", by_node)
            .with("failures", failures))
    }
}

/// What the harness measured after the final heal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    /// When the final heal completed (ns since start).
    pub heal_time_ns: u64,
    /// Time from the heal until all nodes' reads agreed, if they did.
    pub converged_after_ms: Option<u64>,
    /// How long the harness waited for agreement.
    pub waited_ms: u64,
}

/// Convergence after heal.
#[derive(Debug, Clone, Copy)]
pub struct ConvergenceChecker;

impl Checker for ConvergenceChecker {
    fn name(&self) -> &'static str {
        "convergence"
    }

    fn check(&self, _: &History, ctx: &CheckContext) -> anyhow::Result<CheckResult> {
        Ok(match &ctx.convergence {
            None => CheckResult::new(Validity::True).with("measured", false),
            Some(c) => CheckResult::new(Validity::from_bool(c.converged_after_ms.is_some()))
                .with("measured", true)
                .with("converged-after-ms", c.converged_after_ms)
                .with("waited-ms", c.waited_ms),
        })
    }
}

/// Greps node logs for a fixed pattern (Jepsen's `log-file-pattern`).
#[derive(Debug, Clone)]
pub struct LogPattern {
    pub pattern: String,
}

impl LogPattern {
    /// `panicked at`: any Rust panic in a node.
    pub fn panics() -> LogPattern {
        LogPattern {
            pattern: "panicked at".into(),
        }
    }
}

impl Checker for LogPattern {
    fn name(&self) -> &'static str {
        "log-file-pattern"
    }

    fn check(&self, _: &History, ctx: &CheckContext) -> anyhow::Result<CheckResult> {
        let mut matches = Vec::new();
        let mut count = 0usize;
        for (node, path) in &ctx.node_logs {
            let f = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for line in std::io::BufReader::new(f).split(b'\n') {
                let line = String::from_utf8_lossy(&line?).into_owned();
                if line.contains(&self.pattern) {
                    count += 1;
                    if matches.len() < MAX_LISTED {
                        matches.push(json!({"node": node, "line": line}));
                    }
                }
            }
        }
        Ok(CheckResult::new(Validity::from_bool(count == 0))
            .with("pattern", &self.pattern)
            .with("count", count)
            .with("matches", matches))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::test_support::H;
    use crate::history::{F, Level};
    use serde_json::{Value, json};

    /// Jepsen's stats-test: f bar has no ok op, so the result is invalid.
    #[test]
    fn stats_match_jepsen() {
        let mut h = H::new();
        for (f, t) in [
            (F::Add, OpType::Ok),
            (F::Add, OpType::Fail),
            (F::Read, OpType::Info),
            (F::Read, OpType::Fail),
            (F::Read, OpType::Fail),
        ] {
            h.push(crate::history::test_support::op(
                0,
                t,
                f,
                "counter-0",
                Value::Null,
            ));
        }
        let r = Stats.check(&h.build(), &CheckContext::new()).unwrap();
        assert_eq!(r.valid, Validity::False);
        assert_eq!(r.get("count").unwrap(), &json!(5));
        assert_eq!(r.get("ok-count").unwrap(), &json!(1));
        assert_eq!(r.get("fail-count").unwrap(), &json!(3));
        assert_eq!(r.get("by-f").unwrap()["add"]["valid"], json!(true));
        assert_eq!(r.get("by-f").unwrap()["read"]["valid"], json!(false));
        assert_eq!(r.get("by-f").unwrap()["read"]["info-count"], json!(1));
    }

    /// `local` needs only its own node: a partition excuses nothing, a
    /// kill or pause of that node (plus the recovery grace) excuses its ops.
    #[test]
    fn availability_judges_local_ops_on_live_nodes_by_default() {
        let read = |h: &mut H, p: u64, node: &str, level: Level, ok: bool| {
            h.invoke(p, F::Read, "counter-0", Value::Null)
                .at(level, node);
            if ok {
                h.ok(p, F::Read, "counter-0", json!(0)).at(level, node);
            } else {
                h.fail(p, F::Read, "counter-0", Value::Null).at(level, node);
            }
        };
        let mut h = H::new();
        read(&mut h, 0, "n1", Level::Local, true); // before any fault: judged
        h.nemesis(F::StartPartition, json!("one"))
            .nemesis(F::StartPartition, json!({"grudge": {}}));
        read(&mut h, 0, "n1", Level::Local, true);
        read(&mut h, 0, "n1", Level::Local, false); // a partition is no excuse
        read(&mut h, 1, "n1", Level::Quorum, false); // not local: not judged
        h.nemesis(F::StopPartition, Value::Null)
            .nemesis(F::StopPartition, json!("network-healed"));
        h.nemesis(F::Kill, json!({"nodes": ["n2"]}))
            .nemesis(F::Kill, json!({"n2": {"killed_pid": 7}}));
        read(&mut h, 2, "n2", Level::Local, false); // n2 down: not judged
        read(&mut h, 0, "n1", Level::Local, true); // n1 up: judged
        h.nemesis(F::Start, json!("all"))
            .nemesis(F::Start, json!({"n2": {"started_pid": 8}}));
        read(&mut h, 2, "n2", Level::Local, false); // within the recovery grace
        let hist = h.build();
        let mut ctx = CheckContext::new();
        let r = Availability.check(&hist, &ctx).unwrap();
        assert_eq!(
            r.valid,
            Validity::False,
            "judged by default: {}",
            r.to_json()
        );
        assert_eq!(r.get("required").unwrap(), &json!(DEFAULT_AVAILABILITY));
        assert_eq!(r.get("local-ops").unwrap(), &json!(4));
        assert_eq!(r.get("ok-fraction").unwrap(), &json!(0.75));
        assert_eq!(r.get("skipped-node-down").unwrap(), &json!(2));
        assert_eq!(r.get("local-ops-during-partitions").unwrap(), &json!(2));
        assert_eq!(r.get("failures").unwrap()[0]["node"], json!("n1"));
        // `--availability off`: reported only.
        ctx.availability = None;
        assert_eq!(
            Availability.check(&hist, &ctx).unwrap().valid,
            Validity::True
        );
        ctx.availability = Some(0.75);
        assert_eq!(
            Availability.check(&hist, &ctx).unwrap().valid,
            Validity::True
        );

        // The same failure on n2 after the grace is judged.
        let mut h2 = H { ops: h.ops.clone() };
        for _ in 0..2_100 {
            h2.nemesis(F::CheckClockOffsets, Value::Null); // 1 ms each: time passes
        }
        read(&mut h2, 2, "n2", Level::Local, false);
        let r = Availability
            .check(&h2.build(), &CheckContext::new())
            .unwrap();
        assert_eq!(r.get("local-ops").unwrap(), &json!(5));

        // Nothing to judge: valid.
        let r = Availability
            .check(&History::default(), &CheckContext::new())
            .unwrap();
        assert_eq!(r.valid, Validity::True);

        // An op without a level is an error, not `local`.
        let mut h3 = H::new();
        read(&mut h3, 0, "n1", Level::Local, true);
        h3.ops[0].consistency = None;
        assert!(
            Availability
                .check(&h3.build(), &CheckContext::new())
                .is_err()
        );
    }

    #[test]
    fn log_pattern_finds_panics() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("n1.log");
        let b = dir.path().join("n2.log");
        std::fs::write(&a, "starting\nall good\n").unwrap();
        std::fs::write(&b, "x\nthread 'main' panicked at src/lib.rs:1:1:\nboom\n").unwrap();
        let mut ctx = CheckContext::new();
        ctx.node_logs = vec![
            ("n1".into(), a),
            ("n2".into(), b),
            ("n3".into(), dir.path().join("missing.log")),
        ];
        let r = LogPattern::panics()
            .check(&History::default(), &ctx)
            .unwrap();
        assert_eq!(r.valid, Validity::False);
        assert_eq!(r.get("count").unwrap(), &json!(1));
        assert_eq!(r.get("matches").unwrap()[0]["node"], json!("n2"));
        ctx.node_logs.truncate(1);
        let r = LogPattern::panics()
            .check(&History::default(), &ctx)
            .unwrap();
        assert_eq!(r.valid, Validity::True);
    }

    #[test]
    fn convergence_is_invalid_only_when_measured_and_never_reached() {
        let mut ctx = CheckContext::new();
        let h = History::default();
        assert_eq!(
            ConvergenceChecker.check(&h, &ctx).unwrap().valid,
            Validity::True
        );
        ctx.convergence = Some(Convergence {
            heal_time_ns: 1,
            converged_after_ms: None,
            waited_ms: 10_000,
        });
        assert_eq!(
            ConvergenceChecker.check(&h, &ctx).unwrap().valid,
            Validity::False
        );
        ctx.convergence = Some(Convergence {
            heal_time_ns: 1,
            converged_after_ms: Some(120),
            waited_ms: 10_000,
        });
        let r = ConvergenceChecker.check(&h, &ctx).unwrap();
        assert_eq!(r.valid, Validity::True);
        assert_eq!(r.get("converged-after-ms").unwrap(), &json!(120));
    }
}
