//! The map checker (Redis hashes; the workload is [`crate::workload::map`]).
//!
//! A map's fields are judged one by one, by the kind of field (a field is
//! only ever incremented, or only ever set and removed):
//!
//! * **Counter fields** (`HINCRBY`): each field is a counter, judged by the
//!   [`CounterChecker`] itself: the map ops are rewritten into a history of
//!   counter ops on keys `counter-<map key>/<field>` (an increment becomes an
//!   `add`; a read of the map becomes one read per counter field of the key,
//!   an absent field reading 0), and that history is checked with the
//!   counter rules: every ok read lies in Σ(acknowledged increments promised
//!   to it) + SubsetSums(the other increments not known to have failed,
//!   invoked before it completed), and the final reads agree and lie in Σ ok
//!   increments + SubsetSums(`info` increments) — within the bounds ok-sum +
//!   Σ negative `info` ≤ v ≤ ok-sum + Σ positive `info`, and exactly so with
//!   the workload's power-of-two deltas. Its result is `counter-fields`.
//! * **Register fields** (`HSET`, `HDEL`; values unique per write):
//!   - every ok read shows, for each register field, a value some write of
//!     that field attempted (`garbage-reads`), whose write did not fail
//!     (`fail-visible`); a field no op ever touched is `unexpected-fields`;
//!   - final reads (after heal and convergence, on every node) are the same
//!     map on every node (`divergent`);
//!   - `lost-writes`: a field with an acknowledged write is present at the
//!     final read unless some `HDEL` of it not known to have failed could
//!     have observed that write (i.e. did not complete before the write was
//!     invoked);
//!   - `resurrected`: an acknowledged `HDEL` served by node N removes the
//!     field for good when every write of the field not known to have failed
//!     was acknowledged, at `local` or `leader`, by N (so N held it
//!     durably: the promise rule of [`super::counter::must_observe`]), before
//!     the `HDEL` was invoked: the `HDEL` cancelled every write of the field
//!     and none can come later, so the field is absent at the final read;
//!   - `lww-inversions`: the final value's write w never loses to real time:
//!     no acknowledged write w2 of the field invoked more than
//!     [`LWW_ORDER_MARGIN_MS`] after w was acknowledged may exist (unless an
//!     `HDEL` invoked after w2 could have cancelled w2, leaving a concurrent
//!     older entry to show). LWW by HLC gives this while the nodes' clocks
//!     agree; like the register checker's linearizability search, the rule
//!     is skipped in a run with clock faults (`lww-order-checked: false`),
//!     where a later write may legitimately get a smaller timestamp.
//!
//! A map op without a consistency level is an error (verdict `unknown`). A
//! map key with writes and no ok final read is `unknown` (`no-final-read`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};

use super::counter::CounterChecker;
use super::faults::{Family, windows};
use super::{CheckContext, CheckResult, Checker, MAX_LISTED, Validity};
use crate::history::{Call, F, History, Level, Op, OpType, Process, WorkloadKind};
use crate::workload::map::FieldKind;

/// How far apart in real time two writes of a field must be for the later
/// one to be required to win: the harness's clock and the nodes' clocks are
/// the same machine clock, but a write's timestamp is taken somewhere
/// between its invocation and its acknowledgement, and HLCs within one
/// millisecond are ordered by node id, not by time. 100 ms is far past both.
pub const LWW_ORDER_MARGIN_MS: u64 = 100;

/// The map checker (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct MapChecker;

fn is_map_key(op: &Op) -> bool {
    op.key
        .as_deref()
        .is_some_and(|k| WorkloadKind::of_key(k) == Some(WorkloadKind::Map))
}

fn field_of(v: &Value) -> anyhow::Result<&str> {
    v.get("field")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("map op value {v} has no field"))
}

/// The counter-field ops of `history` as a history of counter ops (module
/// docs). Other ops are left out, nemesis ops kept.
pub fn counter_field_history(history: &History) -> anyhow::Result<History> {
    // Counter fields per key, in order of first increment.
    let mut fields: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for op in history
        .ops
        .iter()
        .filter(|o| o.is_invoke() && is_map_key(o))
    {
        if op.f == F::Add {
            let key = op.key.as_deref().unwrap_or_default();
            let f = field_of(&op.value)?;
            let list = fields.entry(key).or_default();
            if !list.contains(&f) {
                list.push(f);
            }
        }
    }
    let slots: u64 = fields.values().map(|v| v.len() as u64).sum::<u64>().max(1);
    let mut slot_of: HashMap<(&str, &str), u64> = HashMap::new();
    for (key, fs) in &fields {
        for f in fs {
            let n = slot_of.len() as u64;
            slot_of.insert((key, f), n);
        }
    }
    let remap = |p: Process, slot: u64| match p {
        Process::Client(p) => Process::Client(p * slots + slot),
        Process::Nemesis => Process::Nemesis,
    };
    let synthetic = |op: &Op, key: &str, field: &str, value: Value, kind: OpType| Op {
        process: remap(op.process, slot_of[&(key, field)]),
        kind,
        key: Some(format!("counter-{key}/{field}")),
        value,
        ..op.clone()
    };
    let mut open: HashMap<Process, &Op> = HashMap::new();
    let mut out = Vec::new();
    for op in &history.ops {
        if op.process == Process::Nemesis {
            out.push(op.clone());
            continue;
        }
        if !is_map_key(op) {
            continue;
        }
        let key = op.key.as_deref().unwrap_or_default();
        let inv = if op.is_invoke() {
            open.insert(op.process, op);
            op
        } else {
            match open.remove(&op.process) {
                Some(inv) => inv,
                None => continue,
            }
        };
        match inv.f {
            F::Add => {
                let field = field_of(&inv.value)?;
                let delta = inv.value.get("delta").cloned().unwrap_or(Value::Null);
                out.push(synthetic(op, key, field, delta, op.kind));
            }
            F::Read => {
                for field in fields.get(key).into_iter().flatten() {
                    let (value, kind) = if op.kind == OpType::Ok {
                        match op.value.get(*field) {
                            None => (json!(0), OpType::Ok),
                            Some(v) => match v.as_str().and_then(|s| s.parse::<i64>().ok()) {
                                Some(n) => (json!(n), OpType::Ok),
                                // Reported as `counter-not-integer` by the
                                // map checker; a failed read judges nothing.
                                None => (Value::Null, OpType::Fail),
                            },
                        }
                    } else {
                        (Value::Null, op.kind)
                    };
                    out.push(synthetic(op, key, field, value, kind));
                }
            }
            _ => {}
        }
    }
    Ok(History::from_ops(out))
}

/// One register field's ops.
#[derive(Default)]
struct FieldOps<'a> {
    writes: Vec<Call<'a>>,
    removes: Vec<Call<'a>>,
}

impl Checker for MapChecker {
    fn name(&self) -> &'static str {
        "map"
    }

    fn check(&self, history: &History, ctx: &CheckContext) -> anyhow::Result<CheckResult> {
        let counter = CounterChecker.check(&counter_field_history(history)?, ctx)?;
        let clock_faults = windows(history).iter().any(|w| w.family == Family::Clock);

        let calls: Vec<Call<'_>> = history
            .calls()
            .into_iter()
            .filter(|c| is_map_key(c.inv))
            .collect();
        // key → field → ops; key → ok reads (final or not).
        let mut fields: BTreeMap<&str, BTreeMap<&str, FieldOps<'_>>> = BTreeMap::new();
        let mut counter_fields: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut reads: BTreeMap<&str, Vec<&Call<'_>>> = BTreeMap::new();
        for c in &calls {
            c.required_level()?;
            let key = c.inv.key.as_deref().unwrap_or_default();
            match c.inv.f {
                F::Write => fields
                    .entry(key)
                    .or_default()
                    .entry(field_of(&c.inv.value)?)
                    .or_default()
                    .writes
                    .push(*c),
                F::Remove => fields
                    .entry(key)
                    .or_default()
                    .entry(field_of(&c.inv.value)?)
                    .or_default()
                    .removes
                    .push(*c),
                F::Add => {
                    counter_fields.insert((key, field_of(&c.inv.value)?));
                }
                F::Read if c.is_ok() => reads.entry(key).or_default().push(c),
                _ => {}
            }
        }

        let mut garbage = Vec::new();
        let mut fail_visible = BTreeSet::new();
        let mut unexpected = BTreeSet::new();
        let mut not_integer = BTreeSet::new();
        let mut divergent = Vec::new();
        let mut no_final = Vec::new();
        let mut lost = Vec::new();
        let mut resurrected = Vec::new();
        let mut inversions = Vec::new();
        let (mut removes_judged, mut lww_judged) = (0usize, 0usize);

        let mut keys: BTreeSet<&str> = fields.keys().copied().collect();
        keys.extend(counter_fields.iter().map(|(k, _)| *k));
        for key in keys {
            let no_fields = BTreeMap::new();
            let kf = fields.get(key).unwrap_or(&no_fields);
            // value → write, per field.
            let mut write_of: HashMap<(&str, &str), &Call<'_>> = HashMap::new();
            for (f, ops) in kf {
                for w in &ops.writes {
                    let v = w.inv.value.get("value").and_then(Value::as_str);
                    let v = v.ok_or_else(|| {
                        anyhow::anyhow!("map write {} has no string value", w.inv.index)
                    })?;
                    anyhow::ensure!(
                        write_of.insert((f, v), w).is_none(),
                        "map values must be unique: {v:?} written twice to {key}/{f}"
                    );
                }
            }
            let key_reads = reads.get(key).map(Vec::as_slice).unwrap_or_default();
            for r in key_reads {
                let res = r.result();
                let Some(m) = res.value.as_object() else {
                    anyhow::bail!(
                        "map read {} returned {} (not an object)",
                        res.index,
                        res.value
                    );
                };
                for (f, v) in m {
                    match FieldKind::of(f) {
                        Some(FieldKind::Counter) if counter_fields.contains(&(key, f.as_str())) => {
                            if v.as_str().and_then(|s| s.parse::<i64>().ok()).is_none() {
                                not_integer.insert(format!("{key}/{f}"));
                            }
                        }
                        Some(FieldKind::Register) if kf.contains_key(f.as_str()) => {
                            let v = v.as_str().unwrap_or_default();
                            match write_of.get(&(f.as_str(), v)) {
                                None => garbage.push(json!({"key": key, "field": f,
                                    "index": res.index, "value": v})),
                                Some(w) if w.is_fail() => {
                                    fail_visible.insert(format!("{key}/{f}/{v}"));
                                }
                                _ => {}
                            }
                        }
                        _ => {
                            unexpected.insert(format!("{key}/{f}"));
                        }
                    }
                }
            }
            let finals: Vec<&Call<'_>> = key_reads
                .iter()
                .copied()
                .filter(|r| r.inv.is_final)
                .collect();
            let Some(first) = finals.first() else {
                no_final.push(key.to_string());
                continue;
            };
            let state = &first.result().value;
            if finals.iter().any(|r| &r.result().value != state) {
                divergent.push(json!({"key": key, "reads": finals.iter()
                    .map(|r| json!({"node": r.inv.node, "value": r.result().value}))
                    .collect::<Vec<_>>()}));
                continue;
            }
            for (f, ops) in kf {
                let now = state.get(*f).and_then(Value::as_str);
                // Could `h` have observed (and so cancelled) `w`? Only if it
                // was not over before `w` began.
                let may_cancel = |h: &Call<'_>, w: &Call<'_>| {
                    !(h.is_fail() || h.is_ok() && h.cmp_index() < w.inv.index)
                };
                for w in ops.writes.iter().filter(|w| w.is_ok()) {
                    if now.is_none() && !ops.removes.iter().any(|h| may_cancel(h, w)) {
                        lost.push(
                            json!({"key": key, "field": f, "value": w.inv.value["value"],
                            "index": w.inv.index}),
                        );
                    }
                }
                for h in ops.removes.iter().filter(|h| h.is_ok()) {
                    let node = h.serving_node();
                    let covered = ops.writes.iter().filter(|w| !w.is_fail()).all(|w| {
                        w.is_ok()
                            && w.cmp_index() < h.inv.index
                            && matches!(w.level(), Some(Level::Local | Level::Leader))
                            && node.is_some()
                            && w.serving_node() == node
                    });
                    if covered {
                        removes_judged += 1;
                        if let Some(v) = now {
                            resurrected.push(json!({"key": key, "field": f, "final": v,
                                "remove": h.inv.index, "node": node}));
                        }
                    }
                }
                if clock_faults {
                    continue;
                }
                let Some(winner) = now.and_then(|v| write_of.get(&(*f, v))) else {
                    continue;
                };
                if !winner.is_ok() {
                    continue;
                }
                lww_judged += 1;
                let margin = LWW_ORDER_MARGIN_MS * 1_000_000;
                let later = ops.writes.iter().find(|w2| {
                    w2.is_ok()
                        && w2.inv.time > winner.cmp_time().saturating_add(margin)
                        && !ops.removes.iter().any(|h| may_cancel(h, w2))
                });
                if let Some(w2) = later {
                    inversions.push(json!({"key": key, "field": f,
                        "final": now, "final-acked-at": winner.cmp_index(),
                        "later-write": w2.inv.value["value"], "later-invoked-at": w2.inv.index}));
                }
            }
        }

        let anomalies = !garbage.is_empty()
            || !fail_visible.is_empty()
            || !unexpected.is_empty()
            || !not_integer.is_empty()
            || !divergent.is_empty()
            || !lost.is_empty()
            || !resurrected.is_empty()
            || !inversions.is_empty();
        let own = if anomalies {
            Validity::False
        } else if no_final.is_empty() {
            Validity::True
        } else {
            Validity::Unknown
        };
        let cap = |mut v: Vec<Value>| {
            v.truncate(MAX_LISTED);
            v
        };
        Ok(CheckResult::new(Validity::merge([own, counter.valid]))
            .with("garbage-reads-count", garbage.len())
            .with("garbage-reads", cap(garbage))
            .with("fail-visible", fail_visible)
            .with("unexpected-fields", unexpected)
            .with("counter-not-integer", not_integer)
            .with("divergent", cap(divergent))
            .with("no-final-read", no_final)
            .with("lost-writes-count", lost.len())
            .with("lost-writes", cap(lost))
            .with("removes-judged", removes_judged)
            .with("resurrected-count", resurrected.len())
            .with("resurrected", cap(resurrected))
            .with("lww-order-checked", !clock_faults)
            .with("lww-fields-judged", lww_judged)
            .with("lww-inversions", cap(inversions))
            .with("counter-fields", counter.to_json()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::test_support::H;

    const K: &str = "map-0";

    /// Pushes a whole call (invocation then completion) of process `p` at
    /// `Level::Local`.
    fn call(h: &mut H, p: u64, f: F, v: Value, done: OpType, node: &str) {
        call_at(h, p, f, v, done, Level::Local, node);
    }

    /// [`call`] at `level`.
    fn call_at(h: &mut H, p: u64, f: F, v: Value, done: OpType, level: Level, node: &str) {
        h.invoke(p, f, K, v.clone()).at(level, node);
        match done {
            OpType::Ok => h.ok(p, f, K, v),
            OpType::Fail => h.fail(p, f, K, v),
            _ => h.info(p, f, K, v),
        }
        .at(level, node);
    }

    fn set(field: &str, value: &str) -> Value {
        json!({"field": field, "value": value})
    }

    fn del(field: &str) -> Value {
        json!({"field": field})
    }

    /// Appends final reads of `state` on n1..n3 (the last one `last`) and
    /// checks.
    fn check(h: &mut H, state: Value, last: Option<Value>) -> Value {
        for (i, node) in ["n1", "n2", "n3"].into_iter().enumerate() {
            let v = if i == 2 {
                last.clone().unwrap_or(state.clone())
            } else {
                state.clone()
            };
            h.invoke(900 + i as u64, F::Read, K, Value::Null)
                .at(Level::Local, node)
                .with(|o| o.is_final = true)
                .ok(900 + i as u64, F::Read, K, v)
                .at(Level::Local, node)
                .with(|o| o.is_final = true);
        }
        MapChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap()
            .to_json()
    }

    #[test]
    fn a_write_acknowledged_before_another_was_invoked_never_wins_over_it() {
        let build = || {
            let mut h = H::new();
            call(&mut h, 0, F::Write, set("s0", "a"), OpType::Ok, "n1");
            // Invoked 200 ms after "a" was acknowledged.
            h.invoke(1, F::Write, K, set("s0", "b"))
                .at(Level::Local, "n2")
                .with(|o| o.time += 200_000_000)
                .ok(1, F::Write, K, set("s0", "b"))
                .at(Level::Local, "n2")
                .with(|o| o.time += 200_000_000);
            h
        };
        let j = check(&mut build(), json!({"s0": "b"}), None);
        assert_eq!(j["valid"], json!(true), "{j:#}");
        assert_eq!(j["lww-fields-judged"], json!(1));
        let j = check(&mut build(), json!({"s0": "a"}), None);
        assert_eq!(j["valid"], json!(false), "{j:#}");
        assert_eq!(j["lww-inversions"][0]["later-write"], json!("b"));
        // Within the margin: either may win.
        let mut h = H::new();
        call(&mut h, 0, F::Write, set("s0", "a"), OpType::Ok, "n1");
        call(&mut h, 1, F::Write, set("s0", "b"), OpType::Ok, "n2");
        let j = check(&mut h, json!({"s0": "a"}), None);
        assert_eq!(j["valid"], json!(true), "{j:#}");
        // Divergence, a value never written, a failed write seen.
        let j = check(&mut build(), json!({"s0": "b"}), Some(json!({"s0": "a"})));
        assert_eq!(j["valid"], json!(false));
        assert_eq!(j["divergent"][0]["key"], json!(K));
        let j = check(&mut build(), json!({"s0": "zz"}), None);
        assert_eq!(j["garbage-reads"][0]["value"], json!("zz"), "{j:#}");
        let mut h = build();
        call(&mut h, 2, F::Write, set("s1", "c"), OpType::Fail, "n1");
        let j = check(&mut h, json!({"s0": "b", "s1": "c"}), None);
        assert_eq!(j["fail-visible"], json!(["map-0/s1/c"]), "{j:#}");
    }

    #[test]
    fn acknowledged_field_writes_stay_unless_a_remove_could_have_seen_them() {
        // A remove that completed before the write began: the write stays.
        let mut h = H::new();
        call(&mut h, 0, F::Remove, del("d1"), OpType::Ok, "n1");
        call(&mut h, 1, F::Write, set("d1", "x"), OpType::Ok, "n2");
        let j = check(&mut h, json!({}), None);
        assert_eq!(j["valid"], json!(false), "{j:#}");
        assert_eq!(j["lost-writes"][0]["value"], json!("x"));
        // A concurrent remove (or an indeterminate one) may have won.
        for done in [OpType::Ok, OpType::Info] {
            let mut h = H::new();
            h.invoke(0, F::Remove, K, del("d1")).at(Level::Local, "n1");
            call(&mut h, 1, F::Write, set("d1", "x"), OpType::Ok, "n2");
            match done {
                OpType::Ok => h.ok(0, F::Remove, K, del("d1")),
                _ => h.info(0, F::Remove, K, del("d1")),
            }
            .at(Level::Local, "n1");
            let j = check(&mut h, json!({}), None);
            assert_eq!(j["valid"], json!(true), "{done:?}: {j:#}");
        }
    }

    #[test]
    fn a_remove_that_saw_every_write_of_a_field_keeps_it_removed() {
        let build = |write_node: &str| {
            let mut h = H::new();
            call(&mut h, 0, F::Write, set("d1", "x"), OpType::Ok, "n1");
            call_at(
                &mut h,
                1,
                F::Write,
                set("d1", "y"),
                OpType::Ok,
                Level::Leader,
                write_node,
            );
            call(&mut h, 2, F::Remove, del("d1"), OpType::Ok, "n1");
            h
        };
        let j = check(&mut build("n1"), json!({}), None);
        assert_eq!(
            (j["valid"].clone(), j["removes-judged"].clone()),
            (json!(true), json!(1))
        );
        let j = check(&mut build("n1"), json!({"d1": "y"}), None);
        assert_eq!(j["valid"], json!(false), "{j:#}");
        assert_eq!(j["resurrected"][0]["final"], json!("y"));
        // The remove's node may not have seen a write served elsewhere:
        // not judged, either outcome allowed.
        let j = check(&mut build("n2"), json!({"d1": "y"}), None);
        assert_eq!(
            (j["valid"].clone(), j["removes-judged"].clone()),
            (json!(true), json!(0))
        );
    }

    #[test]
    fn counter_fields_hold_the_acknowledged_increments_plus_some_indeterminate_ones() {
        let build = || {
            let mut h = H::new();
            let incr = |d: i64| json!({"field": "c0", "delta": d});
            call(&mut h, 0, F::Add, incr(1), OpType::Ok, "n1");
            call(&mut h, 1, F::Add, incr(-2), OpType::Info, "n2");
            call(&mut h, 2, F::Add, incr(4), OpType::Fail, "n2");
            // An `all` read after the acknowledged +1 must see it.
            call_at(
                &mut h,
                3,
                F::Read,
                Value::Null,
                OpType::Ok,
                Level::All,
                "n3",
            );
            h
        };
        let with_read = |v: Value| {
            let mut h = build();
            h.ops.last_mut().unwrap().value = v;
            h
        };
        for (fin, ok) in [(json!("1"), true), (json!("-1"), true), (json!("5"), false)] {
            let mut h = with_read(json!({"c0": "1"}));
            let j = check(&mut h, json!({"c0": fin}), None);
            assert_eq!(j["valid"], json!(ok), "{fin}: {j:#}");
            assert_eq!(j["counter-fields"]["valid"], json!(ok));
        }
        // The read missed the acknowledged, promised +1 (absent = 0).
        let j = check(&mut with_read(json!({})), json!({"c0": "1"}), None);
        assert_eq!(j["valid"], json!(false), "{j:#}");
        // Not an integer.
        let j = check(
            &mut with_read(json!({"c0": "one"})),
            json!({"c0": "1"}),
            None,
        );
        assert_eq!(j["counter-not-integer"], json!(["map-0/c0"]), "{j:#}");
    }
}
