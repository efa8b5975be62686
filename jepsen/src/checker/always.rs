//! Checkers that run on every test, whatever the workload.
//!
//! * [`Stats`]: ok/fail/info counts overall and per `f` (Jepsen's `stats`:
//!   an `f` with no ok op at all is invalid, as in Jepsen's code and tests).
//! * [`Availability`]: the fraction of `local` ops invoked during a partition
//!   (on a node that was neither killed nor paused) that succeeded. `local`
//!   promises total availability; with `--availability F` the fraction must
//!   be ≥ F (1.0 = Maelstrom's `:total`), otherwise it is only reported.
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

/// Availability of `local` ops during partitions.
#[derive(Debug, Clone, Copy)]
pub struct Availability;

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
        // Nodes down (killed or paused) per window.
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
        let mut total = 0u64;
        let mut ok = 0u64;
        for c in history.calls() {
            if c.inv.consistency != Some(Level::Local) || c.inv.is_final {
                continue;
            }
            let t = c.inv.time;
            if !parts.iter().any(|w| w.shade_start <= t && t <= w.shade_end) {
                continue;
            }
            let node = c.inv.node.as_deref().unwrap_or("");
            let node_down = down.iter().any(|(w, nodes)| {
                w.overlaps(t, c.result().time) && (nodes.is_empty() || nodes.contains(node))
            });
            if node_down {
                continue;
            }
            total += 1;
            if c.is_ok() {
                ok += 1;
            }
        }
        let fraction = (total > 0).then(|| ok as f64 / total as f64);
        let valid = match (ctx.availability, fraction) {
            (None, _) => Validity::True,
            (Some(_), None) => Validity::Unknown,
            (Some(req), Some(f)) => Validity::from_bool(f >= req),
        };
        Ok(CheckResult::new(valid)
            .with("local-ops-during-partitions", total)
            .with("ok-count", ok)
            .with("ok-fraction", fraction)
            .with("required", ctx.availability))
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
    use crate::history::F;
    use crate::history::test_support::H;
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

    #[test]
    fn availability_counts_local_ops_during_partitions_only() {
        let mut h = H::new();
        h.invoke(0, F::Read, "counter-0", Value::Null)
            .ok(0, F::Read, "counter-0", json!(0)); // before: not counted
        h.nemesis(F::StartPartition, json!("one"))
            .nemesis(F::StartPartition, json!({"grudge": {}}));
        h.invoke(0, F::Read, "counter-0", Value::Null)
            .ok(0, F::Read, "counter-0", json!(0));
        h.invoke(0, F::Read, "counter-0", Value::Null)
            .fail(0, F::Read, "counter-0", Value::Null);
        h.invoke(1, F::Read, "counter-0", Value::Null)
            .at(Level::Quorum, "n1")
            .fail(1, F::Read, "counter-0", Value::Null)
            .at(Level::Quorum, "n1"); // not local
        h.nemesis(F::StopPartition, Value::Null)
            .nemesis(F::StopPartition, json!("network-healed"));
        let hist = h.build();
        let mut ctx = CheckContext::new();
        let r = Availability.check(&hist, &ctx).unwrap();
        assert_eq!(r.valid, Validity::True, "report only by default");
        assert_eq!(r.get("local-ops-during-partitions").unwrap(), &json!(2));
        assert_eq!(r.get("ok-fraction").unwrap(), &json!(0.5));
        ctx.availability = Some(1.0);
        assert_eq!(
            Availability.check(&hist, &ctx).unwrap().valid,
            Validity::False
        );
        ctx.availability = Some(0.5);
        assert_eq!(
            Availability.check(&hist, &ctx).unwrap().valid,
            Validity::True
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
