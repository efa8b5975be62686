//! The PN-counter checker: Jepsen's `counter` bounds, generalised to
//! decrements and consistency levels, plus Maelstrom's final-read rule.
//!
//! For every ok read r of a key (value v):
//!
//! * `Must(r)`: ok adds that completed before r was invoked *and* that r's
//!   level is promised to observe ([`must_observe`], from docs/architecture.md §7).
//! * `May(r)`: adds not known to have failed, invoked before r completed
//!   (`info` adds stay possible forever).
//! * v must be in `ΣMust + SubsetSums(May \ Must)`, computed exactly with
//!   ranges ([`RangeSet`]). `lower`/`upper` are that set's hull: `ΣMust +` the
//!   optional negative / positive deltas. Findings say `below-lower` (lost
//!   updates, or phantom decrements), `above-upper` (phantom or double-applied
//!   deltas) or `unreachable` (inside the bounds, yet no subset of the
//!   optional deltas adds up to v).
//!
//! With only non-negative deltas and every add visible to every read (e.g.
//! all ops at `quorum`), this is exactly Jepsen's checker: lower = sum of ok
//! adds at the read's invocation, upper = sum of non-failed adds at its
//! completion.
//!
//! Final reads (`final: true`, one per node after heal and quiescence) must
//! all be equal (`divergent`), and each must be in `Σ ok adds +
//! SubsetSums(info adds)` (Maelstrom's pn-counter acceptable set). A key with
//! adds but no final read makes the verdict `unknown`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::ranges::RangeSet;
use super::{CheckContext, CheckResult, Checker, MAX_LISTED, Validity};
use crate::history::{Call, History, Level, WorkloadKind};

/// Whether a read at `read_level` served by `read_node` is promised to
/// observe a write acknowledged at `write_level` by `write_node` that
/// completed before the read began (docs/architecture.md §7):
///
/// * `all` writes are durable on every replica: every later read sees them.
/// * `quorum` writes: seen by `quorum` and `all` reads (quorum intersection).
/// * an `all` read joins every replica, so it sees any acknowledged write.
/// * `local`/`leader` writes are durable on the node that acknowledged them:
///   a `local` or `leader` read served by that same node returns its state,
///   which includes them (read-your-writes for a process pinned to a node;
///   the leader's state for leader reads).
/// * nothing else is promised (a `local` read elsewhere may lag arbitrarily).
pub fn must_observe(
    write_level: Level,
    write_node: Option<&str>,
    read_level: Level,
    read_node: Option<&str>,
) -> bool {
    match (write_level, read_level) {
        (Level::All, _) | (_, Level::All) => true,
        (Level::Quorum, Level::Quorum) => true,
        (Level::Local | Level::Leader, Level::Local | Level::Leader) => {
            write_node.is_some() && write_node == read_node
        }
        _ => false,
    }
}

/// The counter checker (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct CounterChecker;

struct Add<'a> {
    call: Call<'a>,
    delta: i64,
}

fn delta_of(call: &Call<'_>) -> anyhow::Result<i64> {
    call.inv
        .value
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("add op {} has a non-integer delta", call.inv.index))
}

impl Checker for CounterChecker {
    fn name(&self) -> &'static str {
        "counter"
    }

    fn check(&self, history: &History, _ctx: &CheckContext) -> anyhow::Result<CheckResult> {
        let mut adds: BTreeMap<&str, Vec<Add<'_>>> = BTreeMap::new();
        let mut reads: BTreeMap<&str, Vec<(Call<'_>, i64)>> = BTreeMap::new();
        for call in history.calls() {
            let Some(key) = call.inv.key.as_deref() else {
                continue;
            };
            if WorkloadKind::of_key(key) != Some(WorkloadKind::Counter) {
                continue;
            }
            match call.inv.f {
                crate::history::F::Add => {
                    let delta = delta_of(&call)?;
                    adds.entry(key).or_default().push(Add { call, delta });
                }
                crate::history::F::Read if call.is_ok() => {
                    let v = call.result().value.as_i64().ok_or_else(|| {
                        anyhow::anyhow!("read {} returned a non-integer", call.result().index)
                    })?;
                    reads.entry(key).or_default().push((call, v));
                }
                _ => {}
            }
        }

        let mut errors: Vec<Value> = Vec::new();
        let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
        let mut read_count = 0u64;
        let empty = Vec::new();
        for (key, key_reads) in &reads {
            let key_adds = adds.get(key).unwrap_or(&empty);
            for (r, v) in key_reads {
                read_count += 1;
                let r_level = r.level().unwrap_or(Level::Local);
                let r_node = r.serving_node();
                let r_cmp = r.cmp_index();
                let mut must = 0i64;
                let mut optional: Vec<i64> = Vec::new();
                for a in key_adds {
                    if a.call.inv.index >= r_cmp {
                        break; // adds are in invocation order
                    }
                    if a.call.is_fail() {
                        continue;
                    }
                    let certain = a.call.is_ok()
                        && a.call.cmp_index() < r.inv.index
                        && must_observe(
                            a.call.level().unwrap_or(Level::Local),
                            a.call.serving_node(),
                            r_level,
                            r_node,
                        );
                    if certain {
                        must += a.delta;
                    } else {
                        optional.push(a.delta);
                    }
                }
                let lower = must + optional.iter().filter(|d| **d < 0).sum::<i64>();
                let upper = must + optional.iter().filter(|d| **d > 0).sum::<i64>();
                let kind = if *v < lower {
                    Some("below-lower")
                } else if *v > upper {
                    Some("above-upper")
                } else if !RangeSet::subset_sums(must, optional.iter().copied()).contains(*v) {
                    Some("unreachable")
                } else {
                    None
                };
                if let Some(kind) = kind {
                    *by_kind.entry(kind).or_default() += 1;
                    if errors.len() < MAX_LISTED {
                        errors.push(json!({
                            "kind": kind,
                            "key": key,
                            "index": r.result().index,
                            "bounds": [lower, v, upper],
                            "level": r_level,
                            "node": r_node,
                            "final": r.inv.is_final,
                        }));
                    }
                }
            }
        }

        // Final reads.
        let mut divergent = Vec::new();
        let mut unacceptable = Vec::new();
        let mut missing_final = Vec::new();
        let mut finals_out = serde_json::Map::new();
        let keys: std::collections::BTreeSet<&str> =
            adds.keys().chain(reads.keys()).copied().collect();
        for key in keys {
            let finals: Vec<&(Call<'_>, i64)> = reads
                .get(key)
                .map(|rs| rs.iter().filter(|(c, _)| c.inv.is_final).collect())
                .unwrap_or_default();
            let key_adds = adds.get(key).unwrap_or(&empty);
            if finals.is_empty() {
                if !key_adds.is_empty() {
                    missing_final.push(key.to_string());
                }
                continue;
            }
            let ok_sum: i64 = key_adds
                .iter()
                .filter(|a| a.call.is_ok())
                .map(|a| a.delta)
                .sum();
            let acceptable = RangeSet::subset_sums(
                ok_sum,
                key_adds
                    .iter()
                    .filter(|a| a.call.is_info())
                    .map(|a| a.delta),
            );
            let values: BTreeMap<String, i64> = finals
                .iter()
                .map(|(c, v)| (c.serving_node().unwrap_or("?").to_string(), *v))
                .collect();
            let distinct: std::collections::BTreeSet<i64> =
                finals.iter().map(|(_, v)| *v).collect();
            if distinct.len() > 1 {
                divergent.push(json!({"key": key, "values": values}));
            }
            for (c, v) in &finals {
                if !acceptable.contains(*v) {
                    unacceptable.push(json!({
                        "key": key,
                        "node": c.serving_node(),
                        "value": v,
                        "acceptable": acceptable.ranges(),
                    }));
                }
            }
            finals_out.insert(
                key.to_string(),
                json!({"values": values, "acceptable": acceptable.ranges()}),
            );
        }

        let invalid = !errors.is_empty() || !divergent.is_empty() || !unacceptable.is_empty();
        let valid = if invalid {
            Validity::False
        } else if !missing_final.is_empty() {
            Validity::Unknown
        } else {
            Validity::True
        };
        let mut r = CheckResult::new(valid)
            .with("read-count", read_count)
            .with("error-count", by_kind.values().sum::<u64>())
            .with("errors-by-kind", &by_kind)
            .with("errors", &errors)
            .with("final-reads", finals_out)
            .with("divergent", &divergent)
            .with("final-unacceptable", &unacceptable);
        if !missing_final.is_empty() {
            r.insert("final-reads-missing", &missing_final);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::test_support::H;
    use crate::history::{F, Level};
    use serde_json::json;

    const K: &str = "counter-0";

    fn check(h: &H) -> CheckResult {
        CounterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap()
    }

    fn triples(r: &CheckResult) -> Vec<Value> {
        r.get("errors")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["bounds"].clone())
            .collect()
    }

    /// Jepsen's checker_test "rolling reads and writes": [1 5 3] is flagged.
    /// All ops at quorum, so every ok add is promised to every later read,
    /// which is Jepsen's model.
    #[test]
    fn jepsen_rolling_reads_flags_1_5_3() {
        let mut h = H::new();
        let q = |h: &mut H| {
            h.with(|o| o.consistency = Some(Level::Quorum));
        };
        h.invoke(0, F::Read, K, Value::Null);
        q(&mut h);
        h.invoke(1, F::Add, K, json!(1));
        q(&mut h);
        h.ok(0, F::Read, K, json!(0));
        q(&mut h);
        h.invoke(0, F::Read, K, Value::Null);
        q(&mut h);
        h.ok(1, F::Add, K, json!(1));
        q(&mut h);
        h.invoke(1, F::Add, K, json!(2));
        q(&mut h);
        h.ok(0, F::Read, K, json!(3));
        q(&mut h);
        h.invoke(0, F::Read, K, Value::Null);
        q(&mut h);
        h.ok(1, F::Add, K, json!(2));
        q(&mut h);
        h.ok(0, F::Read, K, json!(5));
        q(&mut h);
        let r = check(&h);
        assert_eq!(r.valid, Validity::False);
        assert_eq!(triples(&r), vec![json!([1, 5, 3])]);
        assert_eq!(r.get("read-count").unwrap(), &json!(3));
        assert_eq!(r.get("errors").unwrap()[0]["kind"], json!("above-upper"));
    }

    /// Jepsen's "interleaved concurrent reads and writes": only the read of
    /// 100 is out of bounds, [0 100 15].
    #[test]
    fn jepsen_interleaved_reads_flags_only_100() {
        let mut h = H::new();
        for p in 0..9u64 {
            if p % 2 == 0 {
                h.invoke(p, F::Read, K, Value::Null);
            } else {
                h.invoke(p, F::Add, K, json!(1 << (p / 2)));
            }
        }
        for (p, v) in [
            (0, 6),
            (1, 1),
            (2, 0),
            (3, 2),
            (4, 3),
            (5, 4),
            (6, 100),
            (7, 8),
            (8, 15),
        ] {
            if p % 2 == 0 {
                h.ok(p, F::Read, K, json!(v));
            } else {
                h.ok(p, F::Add, K, json!(v));
            }
        }
        let r = check(&h);
        assert_eq!(triples(&r), vec![json!([0, 100, 15])]);
    }

    /// Jepsen's "initial invalid read" and "ignore failed ops".
    #[test]
    fn jepsen_initial_reads_and_failed_adds() {
        let mut h = H::new();
        h.invoke(0, F::Read, K, Value::Null)
            .ok(0, F::Read, K, json!(1));
        assert_eq!(triples(&check(&h)), vec![json!([0, 1, 0])]);

        let mut h = H::new();
        h.invoke(0, F::Add, K, json!(1))
            .fail(0, F::Add, K, json!(1))
            .invoke(0, F::Read, K, Value::Null)
            .ok(0, F::Read, K, json!(0));
        assert_eq!(
            check(&h).valid,
            Validity::Unknown,
            "valid reads, but no final read"
        );
        assert!(triples(&check(&h)).is_empty());
    }

    #[test]
    fn read_below_the_lower_bound_is_a_lost_update() {
        // A quorum add acknowledged, then a quorum read that misses it.
        let mut h = H::new();
        h.invoke(0, F::Add, K, json!(3))
            .at(Level::Quorum, "n1")
            .ok(0, F::Add, K, json!(3))
            .at(Level::Quorum, "n1")
            .invoke(1, F::Read, K, Value::Null)
            .at(Level::Quorum, "n2")
            .ok(1, F::Read, K, json!(0))
            .at(Level::Quorum, "n2");
        let r = check(&h);
        assert_eq!(r.valid, Validity::False);
        assert_eq!(r.get("errors").unwrap()[0]["kind"], json!("below-lower"));
        assert_eq!(triples(&r), vec![json!([3, 0, 3])]);
    }

    #[test]
    fn local_reads_elsewhere_may_lag_but_not_on_the_acking_node() {
        let mut base = H::new();
        base.invoke(0, F::Add, K, json!(2))
            .at(Level::Local, "n1")
            .ok(0, F::Add, K, json!(2))
            .at(Level::Local, "n1");
        // A local read on n2 that misses the add: allowed (lag).
        let mut h = H {
            ops: base.ops.clone(),
        };
        h.invoke(1, F::Read, K, Value::Null)
            .at(Level::Local, "n2")
            .ok(1, F::Read, K, json!(0))
            .at(Level::Local, "n2");
        assert!(triples(&check(&h)).is_empty());
        // The same read served by n1, which acknowledged the add: lost.
        let mut h = H {
            ops: base.ops.clone(),
        };
        h.invoke(1, F::Read, K, Value::Null)
            .at(Level::Local, "n1")
            .ok(1, F::Read, K, json!(0))
            .at(Level::Local, "n1");
        assert_eq!(triples(&check(&h)), vec![json!([2, 0, 2])]);
    }

    #[test]
    fn decrements_bound_both_directions_exactly() {
        // Concurrent -5 and +5 (both indeterminate); read 0, -5, 5 are fine,
        // 3 is within [-5, 5] but unreachable, 6 is above, -6 below.
        for (v, kind) in [
            (0, None),
            (-5, None),
            (5, None),
            (3, Some("unreachable")),
            (6, Some("above-upper")),
            (-6, Some("below-lower")),
        ] {
            let mut h = H::new();
            h.invoke(0, F::Add, K, json!(-5))
                .invoke(1, F::Add, K, json!(5))
                .invoke(2, F::Read, K, Value::Null)
                .ok(2, F::Read, K, json!(v));
            let r = check(&h);
            let errs = r.get("errors").unwrap().as_array().unwrap().clone();
            match kind {
                None => assert!(errs.is_empty(), "{v}: {errs:?}"),
                Some(k) => assert_eq!(errs[0]["kind"], json!(k), "{v}"),
            }
        }
    }

    fn final_read(h: &mut H, p: u64, node: &str, v: i64) {
        h.invoke(p, F::Read, K, Value::Null)
            .at(Level::Local, node)
            .with(|o| o.is_final = true)
            .ok(p, F::Read, K, json!(v))
            .at(Level::Local, node)
            .with(|o| o.is_final = true);
    }

    #[test]
    fn final_reads_must_agree_and_be_acceptable() {
        let mut base = H::new();
        base.invoke(0, F::Add, K, json!(4))
            .ok(0, F::Add, K, json!(4))
            .invoke(1, F::Add, K, json!(-2))
            .info(1, F::Add, K, json!(-2))
            .invoke(2, F::Add, K, json!(5))
            .fail(2, F::Add, K, json!(5));
        // Clean: 4 or 2 are acceptable, all nodes agree.
        let mut h = H {
            ops: base.ops.clone(),
        };
        for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
            final_read(&mut h, 10 + i as u64, n, 2);
        }
        let r = check(&h);
        assert_eq!(r.valid, Validity::True, "{:?}", r.to_json());
        // Divergence: n3 says 4.
        let mut h = H {
            ops: base.ops.clone(),
        };
        final_read(&mut h, 10, "n1", 2);
        final_read(&mut h, 11, "n2", 2);
        final_read(&mut h, 12, "n3", 4);
        let r = check(&h);
        assert_eq!(r.valid, Validity::False);
        assert_eq!(r.get("divergent").unwrap().as_array().unwrap().len(), 1);
        assert!(
            r.get("final-unacceptable")
                .unwrap()
                .as_array()
                .unwrap()
                .is_empty()
        );
        // Agreeing on a value that includes the failed add: unacceptable.
        let mut h = H {
            ops: base.ops.clone(),
        };
        final_read(&mut h, 10, "n1", 9);
        final_read(&mut h, 11, "n2", 9);
        let r = check(&h);
        assert_eq!(r.valid, Validity::False);
        assert_eq!(
            r.get("final-unacceptable")
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn visibility_rules_follow_the_design() {
        use Level::*;
        assert!(must_observe(Quorum, Some("n1"), Quorum, Some("n2")));
        assert!(!must_observe(Quorum, Some("n1"), Local, Some("n1")));
        assert!(must_observe(All, Some("n1"), Local, Some("n3")));
        assert!(must_observe(Local, Some("n1"), All, Some("n3")));
        assert!(must_observe(Leader, Some("n2"), Leader, Some("n2")));
        assert!(!must_observe(Leader, Some("n2"), Leader, Some("n3")));
        assert!(!must_observe(Local, None, Local, None));
        assert!(!must_observe(Leader, Some("n1"), Quorum, Some("n1")));
    }
}
