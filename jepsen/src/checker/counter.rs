//! The PN-counter checker: Jepsen's `counter` bounds, generalised to
//! decrements and consistency levels, plus Maelstrom's final-read rule.
//!
//! For every ok read r of a key (value v):
//!
//! * `Must(r)`: ok adds that completed before r was invoked *and* that r's
//!   level is promised to observe ([`must_observe`], from docs/architecture.md §7).
//! * `May(r)`: adds not known to have failed, invoked before r completed
//!   (`info` adds stay possible forever).
//! * v must be in `ΣMust + SubsetSums(May \ Must)`, computed exactly
//!   ([`SubsetSums`]: bit by bit when the optional deltas are ± distinct
//!   powers of two, as the workload makes them, else with ranges).
//!   `lower`/`upper` are that set's hull: `ΣMust +` the optional negative /
//!   positive deltas. Findings say `below-lower` (lost updates, or phantom
//!   decrements), `above-upper` (phantom or double-applied deltas) or
//!   `unreachable` (inside the bounds, yet no subset of the optional deltas
//!   adds up to v). A value inside a range set that had to be coarsened
//!   (more than [`super::ranges::MAX_RANGES`] ranges) cannot be decided: it
//!   is counted in `coarsened-count` and makes the verdict `unknown`.
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
//!
//! Why the workload's deltas are ± distinct powers of two per key: with
//! small deltas (Maelstrom's [−5, 5]) a handful of indeterminate adds have
//! subset sums covering a whole interval, so a lost *acknowledged* add of d
//! hides behind indeterminate adds summing to −d. With distinct powers of
//! two every sum has one representation, so the acknowledged add's exponent
//! would have to appear among the indeterminate ones, and it cannot.
//!
//! A missing consistency level on a counter op is an error (verdict
//! `unknown`), never a default.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::ranges::{Membership, SubsetSums};
use super::{CheckContext, CheckResult, Checker, MAX_LISTED, Validity};
use crate::history::{Call, F, History, Level, WorkloadKind};

/// Whether a read at `read_level` served by `read_node` is promised to
/// observe a write acknowledged at `write_level` by `write_node` that
/// completed before the read began (docs/architecture.md §7):
///
/// * the read's and the write's replicas must intersect
///   ([`Level::intersects`]): `all` writes are durable on every replica and
///   `all` reads join every replica, so either sees the other; `quorum`
///   writes are seen by `quorum` reads (quorum intersection); a
///   `replicas-w` write by a `replicas-r` read when r + w > N (and by a
///   `quorum` read when ⌊N/2⌋ + 1 + w > N).
/// * `local`/`leader`/`replicas-1` writes are durable on the node that
///   acknowledged them: a `local`, `leader` or `replicas-1` read served by
///   that same node returns its state, which includes them
///   (read-your-writes for a process pinned to a node; the leader's state
///   for leader reads).
/// * nothing else is promised (a `local` read elsewhere may lag
///   arbitrarily; a `replicas-1` read after a `replicas-2` write of three
///   replicas may ask the one replica the write missed).
pub fn must_observe(
    write_level: Level,
    write_node: Option<&str>,
    read_level: Level,
    read_node: Option<&str>,
) -> bool {
    let one_node = |l: Level| l == Level::Leader || l.is_single_replica();
    Level::intersects(write_level, read_level)
        || (one_node(write_level)
            && one_node(read_level)
            && write_node.is_some()
            && write_node == read_node)
}

/// The counter checker (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct CounterChecker;

/// One add of a key.
pub(crate) struct Add<'a> {
    pub call: Call<'a>,
    pub delta: i64,
    pub level: Level,
}

/// One ok read of a key.
pub(crate) struct Read<'a> {
    pub call: Call<'a>,
    pub value: i64,
    pub level: Level,
}

/// A key's adds (in invocation order) and ok reads.
#[derive(Default)]
pub(crate) struct KeyOps<'a> {
    pub adds: Vec<Add<'a>>,
    pub reads: Vec<Read<'a>>,
}

/// The counter ops of a history, by key. Errors on malformed ops: a
/// non-integer delta or read, or a missing consistency level.
pub(crate) fn collect(history: &History) -> anyhow::Result<BTreeMap<&str, KeyOps<'_>>> {
    let mut keys: BTreeMap<&str, KeyOps<'_>> = BTreeMap::new();
    for call in history.calls() {
        let Some(key) = call.inv.key.as_deref() else {
            continue;
        };
        if WorkloadKind::of_key(key) != Some(WorkloadKind::Counter) {
            continue;
        }
        match call.inv.f {
            F::Add => {
                let delta = call.inv.value.as_i64().ok_or_else(|| {
                    anyhow::anyhow!("add op {} has a non-integer delta", call.inv.index)
                })?;
                let level = call.required_level()?;
                keys.entry(key)
                    .or_default()
                    .adds
                    .push(Add { call, delta, level });
            }
            F::Read if call.is_ok() => {
                let value = call.result().value.as_i64().ok_or_else(|| {
                    anyhow::anyhow!("read {} returned a non-integer", call.result().index)
                })?;
                let level = call.required_level()?;
                keys.entry(key)
                    .or_default()
                    .reads
                    .push(Read { call, value, level });
            }
            _ => {}
        }
    }
    Ok(keys)
}

/// What one read may return: `Σ must + SubsetSums(optional)`.
pub(crate) struct ReadBounds {
    /// Positions in the key's adds of the adds the read must reflect.
    pub must: Vec<usize>,
    /// Positions of the adds it may or may not reflect.
    pub optional: Vec<usize>,
    pub sums: SubsetSums,
}

impl ReadBounds {
    /// The adds a value shows, when that is determined: the must adds plus
    /// the one subset of the optional adds that sums right (binary deltas).
    pub fn visible(&self, v: i64) -> Option<BTreeSet<usize>> {
        let picked = self.sums.decode(v)?;
        Some(
            self.must
                .iter()
                .copied()
                .chain(picked.into_iter().map(|i| self.optional[i]))
                .collect(),
        )
    }
}

/// `Must(r)` and `May(r) ∖ Must(r)` (see the module docs), plus the
/// extra adds `known` that the caller knows r reflects (monotonic reads:
/// what an earlier read on the same leader showed).
pub(crate) fn read_bounds(adds: &[Add<'_>], r: &Read<'_>, known: &BTreeSet<usize>) -> ReadBounds {
    let r_node = r.call.serving_node();
    let r_cmp = r.call.cmp_index();
    let mut must = Vec::new();
    let mut optional = Vec::new();
    for (i, a) in adds.iter().enumerate() {
        if a.call.inv.index >= r_cmp {
            break; // adds are in invocation order
        }
        if a.call.is_fail() {
            continue;
        }
        let certain = known.contains(&i)
            || (a.call.is_ok()
                && a.call.cmp_index() < r.call.inv.index
                && must_observe(a.level, a.call.serving_node(), r.level, r_node));
        if certain {
            must.push(i);
        } else {
            optional.push(i);
        }
    }
    let base: i64 = must.iter().map(|i| adds[*i].delta).sum();
    let deltas: Vec<i64> = optional.iter().map(|i| adds[*i].delta).collect();
    ReadBounds {
        sums: SubsetSums::new(base, &deltas),
        must,
        optional,
    }
}

impl Checker for CounterChecker {
    fn name(&self) -> &'static str {
        "counter"
    }

    fn check(&self, history: &History, _ctx: &CheckContext) -> anyhow::Result<CheckResult> {
        let keys = collect(history)?;

        let mut errors: Vec<Value> = Vec::new();
        let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
        let mut coarsened: Vec<Value> = Vec::new();
        let mut coarsened_count = 0u64;
        let mut read_count = 0u64;
        let none = BTreeSet::new();
        for (key, k) in &keys {
            for r in &k.reads {
                read_count += 1;
                let b = read_bounds(&k.adds, r, &none);
                let (lower, upper) = b.sums.bounds();
                let v = r.value;
                let kind = match b.sums.membership(v) {
                    Membership::Yes => None,
                    Membership::Unknown => {
                        coarsened_count += 1;
                        if coarsened.len() < MAX_LISTED {
                            coarsened.push(json!({
                                "key": key, "index": r.call.result().index,
                                "bounds": [lower, v, upper],
                            }));
                        }
                        None
                    }
                    Membership::No if v < lower => Some("below-lower"),
                    Membership::No if v > upper => Some("above-upper"),
                    Membership::No => Some("unreachable"),
                };
                if let Some(kind) = kind {
                    *by_kind.entry(kind).or_default() += 1;
                    if errors.len() < MAX_LISTED {
                        errors.push(json!({
                            "kind": kind,
                            "key": key,
                            "index": r.call.result().index,
                            "bounds": [lower, v, upper],
                            "level": r.level,
                            "node": r.call.serving_node(),
                            "final": r.call.inv.is_final,
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
        for (key, k) in &keys {
            let finals: Vec<&Read<'_>> = k.reads.iter().filter(|r| r.call.inv.is_final).collect();
            if finals.is_empty() {
                if !k.adds.is_empty() {
                    missing_final.push(key.to_string());
                }
                continue;
            }
            let ok_sum: i64 = k
                .adds
                .iter()
                .filter(|a| a.call.is_ok())
                .map(|a| a.delta)
                .sum();
            let info: Vec<i64> = k
                .adds
                .iter()
                .filter(|a| a.call.is_info())
                .map(|a| a.delta)
                .collect();
            let acceptable = SubsetSums::new(ok_sum, &info);
            let values: BTreeMap<String, i64> = finals
                .iter()
                .map(|r| (r.call.serving_node().unwrap_or("?").to_string(), r.value))
                .collect();
            let distinct: BTreeSet<i64> = finals.iter().map(|r| r.value).collect();
            if distinct.len() > 1 {
                divergent.push(json!({"key": key, "values": values}));
            }
            for r in &finals {
                match acceptable.membership(r.value) {
                    Membership::Yes => {}
                    Membership::Unknown => {
                        coarsened_count += 1;
                        if coarsened.len() < MAX_LISTED {
                            coarsened.push(json!({
                                "key": key, "index": r.call.result().index, "final": true,
                                "value": r.value,
                            }));
                        }
                    }
                    Membership::No => unacceptable.push(json!({
                        "key": key,
                        "node": r.call.serving_node(),
                        "value": r.value,
                        "acceptable": acceptable.describe(MAX_LISTED),
                    })),
                }
            }
            finals_out.insert(
                key.to_string(),
                json!({"values": values, "acceptable": acceptable.describe(MAX_LISTED)}),
            );
        }

        let invalid = !errors.is_empty() || !divergent.is_empty() || !unacceptable.is_empty();
        let valid = if invalid {
            Validity::False
        } else if !missing_final.is_empty() || coarsened_count > 0 {
            Validity::Unknown
        } else {
            Validity::True
        };
        let mut r = CheckResult::new(valid)
            .with("key-count", keys.len())
            .with("read-count", read_count)
            .with("error-count", by_kind.values().sum::<u64>())
            .with("errors-by-kind", &by_kind)
            .with("errors", &errors)
            .with("final-reads", finals_out)
            .with("divergent", &divergent)
            .with("final-unacceptable", &unacceptable)
            .with("coarsened-count", coarsened_count);
        if coarsened_count > 0 {
            // The value lay inside the hull of a range set that had to be
            // coarsened: it may or may not be reachable (unknown, not valid).
            r.insert("coarsened", &coarsened);
        }
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
        // replicas-N of 3: seen when the counts overlap, not otherwise.
        let r = |n| Replicas { n, of: 3 };
        assert!(must_observe(r(2), Some("n1"), r(2), Some("n2")));
        assert!(!must_observe(r(2), Some("n1"), r(1), Some("n2")));
        assert!(must_observe(r(3), Some("n1"), Local, Some("n2")));
        assert!(must_observe(Local, Some("n1"), r(3), Some("n2")));
        assert!(must_observe(r(2), Some("n1"), Quorum, Some("n3")));
        assert!(must_observe(Quorum, Some("n1"), r(2), Some("n3")));
        assert!(!must_observe(Quorum, Some("n1"), r(1), Some("n3")));
        assert!(must_observe(r(1), Some("n1"), All, Some("n3")));
        // replicas-1 is a single replica: read-your-writes on one node only.
        assert!(must_observe(r(1), Some("n1"), Local, Some("n1")));
        assert!(must_observe(Local, Some("n1"), r(1), Some("n1")));
        assert!(!must_observe(r(1), Some("n1"), r(1), Some("n2")));
        // Mismatched cluster sizes promise nothing.
        assert!(!must_observe(
            r(2),
            Some("n1"),
            Replicas { n: 2, of: 5 },
            Some("n2")
        ));
        // replicas-3 of 5 is a majority: seen by quorum reads.
        let f = |n| Replicas { n, of: 5 };
        assert!(must_observe(f(3), Some("n1"), Quorum, Some("n2")));
        assert!(!must_observe(f(2), Some("n1"), Quorum, Some("n2")));
        assert!(must_observe(f(2), Some("n1"), f(4), Some("n2")));
    }

    /// A history with `ok` adds (the first one lost by the store), `info`
    /// adds of which the store applied those in `applied` (a bit mask), and
    /// final reads of what the store then holds.
    fn lost_among_info(ok: &[i64], info: &[i64], applied: u32) -> CheckResult {
        let mut h = H::new();
        let mut p = 0;
        for d in ok {
            h.invoke(p, F::Add, K, json!(d)).ok(p, F::Add, K, json!(d));
            p += 1;
        }
        for d in info {
            h.invoke(p, F::Add, K, json!(d))
                .info(p, F::Add, K, json!(d));
            p += 1;
        }
        let held: i64 = ok[1..].iter().sum::<i64>()
            + (0..info.len())
                .filter(|i| applied & (1 << i) != 0)
                .map(|i| info[i])
                .sum::<i64>();
        for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
            final_read(&mut h, 100 + i as u64, n, held);
        }
        check(&h)
    }

    /// One acknowledged add lost among eight indeterminate ones. With
    /// Maelstrom's small deltas some subset of the indeterminate adds makes
    /// up the difference and the loss is invisible; with the workload's
    /// deltas (± distinct powers of two) every subset the store might have
    /// applied leaves the loss visible.
    #[test]
    fn lost_acknowledged_add_cannot_hide_behind_indeterminate_ones() {
        // The hole, with small deltas: +3 lost, info +5 and −2 applied.
        let small_ok = [3, 1];
        let small_info = [-1, -2, 4, 5, -3, 2, -4, -5];
        let r = lost_among_info(&small_ok, &small_info, 0b0000_1010);
        assert_eq!(r.valid, Validity::True, "masked: {}", r.to_json());

        // The workload's deltas: the first 10 adds of a key.
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(7);
        let deltas: Vec<i64> = (0..10)
            .map(|i| crate::workload::counter::delta(i, &mut rng))
            .collect();
        let (ok, info) = (&deltas[..2], &deltas[2..]);
        for lost_first in [true, false] {
            let ok: Vec<i64> = if lost_first {
                ok.to_vec()
            } else {
                vec![ok[1], ok[0]]
            };
            for applied in 0u32..(1 << info.len()) {
                let r = lost_among_info(&ok, info, applied);
                assert_eq!(r.valid, Validity::False, "applied {applied:#b}");
                assert_eq!(
                    r.get("final-unacceptable")
                        .unwrap()
                        .as_array()
                        .unwrap()
                        .len(),
                    3
                );
            }
        }
    }

    /// Past MAX_RANGES the range set is coarsened: a value inside the hull
    /// is then undecided (unknown, flagged), one outside it still invalid.
    #[test]
    fn coarsened_range_set_makes_the_read_unknown() {
        let info: Vec<i64> = (0..13).map(|i| 2 * 3i64.pow(i)).collect();
        for (v, want) in [(1, Validity::Unknown), (-1, Validity::False)] {
            let mut h = H::new();
            for (p, d) in info.iter().enumerate() {
                h.invoke(p as u64, F::Add, K, json!(d))
                    .info(p as u64, F::Add, K, json!(d));
            }
            for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
                final_read(&mut h, 100 + i as u64, n, v);
            }
            let r = check(&h);
            assert_eq!(r.valid, want, "{v}: {}", r.to_json());
            if want == Validity::Unknown {
                // Each final read is judged as a read and as a final read.
                assert_eq!(r.get("coarsened-count").unwrap(), &json!(6));
                assert_eq!(
                    r.get("final-reads").unwrap()[K]["acceptable"]["coarsened"],
                    json!(true)
                );
            }
        }
    }

    /// A missing consistency level is an error, not `local`.
    #[test]
    fn missing_level_is_an_error() {
        let mut h = H::new();
        h.invoke(0, F::Add, K, json!(1)).ok(0, F::Add, K, json!(1));
        h.ops[0].consistency = None;
        let e = CounterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap_err();
        assert!(e.to_string().contains("no consistency level"), "{e}");
    }
}
