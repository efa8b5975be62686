//! The LWW-register checker (independent keys, unique written values).
//!
//! * **Well-formedness**: every read returns null or a value some write of
//!   that key attempted (`garbage-read` otherwise); a value whose write
//!   failed is `fail-visible`; a read's `meta.hlc` must equal the timestamp
//!   the write was acknowledged with (`hlc-mismatch`); one `(time, node)`
//!   carrying two values is a `timestamp-collision`.
//! * **Promised writes** (`stale-reads`): an ok read must return a state at
//!   least as new as every acknowledged write promised to it
//!   ([`super::counter::must_observe`]: acknowledged before the read began,
//!   quorum→quorum, `all` on either side, or local/leader write and
//!   local/leader read served by the acknowledging node). Register states
//!   are LWW, so "sees the write" means the read's `(hlc.time, hlc.node)` is
//!   ≥ the write's (a later write may have replaced it); a null read with no
//!   timestamp is older than any write. This holds under clock skew too: a
//!   join only ever keeps the larger timestamp. Every ok read is judged: a
//!   read without `meta.hlc` (a client that does not report timestamps)
//!   takes the timestamp of the write of its value (values are unique per
//!   write), known from that write's acknowledgement or from another read
//!   of the value (`hlc-fallback-count`). A read whose value's timestamp is
//!   nowhere in the history, while some write of another value was promised
//!   to it, cannot be ordered: it is listed in `unresolved-reads` and makes
//!   the verdict `unknown` (never skipped silently).
//! * **Final state** (reads with `final: true` on every node after heal):
//!   all equal (`divergent`), and the value must be the LWW winner: the write
//!   with the largest `(hlc.time, hlc.node)` among acknowledged writes and
//!   indeterminate writes that some read observed (an unobserved `info` write
//!   cannot be the winner: had it won, the final reads would show it). A
//!   final value beaten by such a write, or a null final value while a write
//!   was acknowledged, is a `lost-write`. When a needed timestamp is unknown
//!   the key is `undetermined` (verdict unknown).
//! * **Linearizability** (keys the caller marks eligible, see
//!   [`super::LinearizableScope`]): porcupine-rs's WGL search with a register
//!   model per key; failed writes dropped, `info` writes open until ∞, final
//!   reads excluded. A search that times out makes the key unknown, as in
//!   Jepsen. Keys with more than [`MAX_LINEARIZABLE_OPS`] ops are not
//!   searched (unknown): the workload keeps rotating keys near Jepsen's ~20
//!   ops and its long-lived keys (which live through faults) to
//!   [`crate::workload::register::LONG_OPS_PER_KEY`].
//!
//! A register op without a consistency level is an error (verdict
//! `unknown`), never a default.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};

use super::counter::must_observe;
use super::{CheckContext, CheckResult, Checker, MAX_LISTED, Validity};
use crate::history::{Call, F, History, Hlc, WorkloadKind};

/// Long-lived keys ([`crate::workload::register`]): listed when checked.
pub const LONG_KEY_PREFIX: &str = "register-long-";

/// Per-key op limit for the linearizability search: WGL is exponential in
/// concurrency; Jepsen keeps register keys to ~20 ops.
pub const MAX_LINEARIZABLE_OPS: usize = 200;

/// porcupine-rs register model: state = current value (None = never written).
#[derive(Clone, Debug)]
pub struct RegisterModel;

#[derive(Clone, Debug)]
pub enum RegOp {
    Write(String),
    Read(Option<String>),
}

impl porcupine_rs::Model for RegisterModel {
    type State = Option<String>;
    type Op = RegOp;
    type Metadata = u64;

    fn init() -> Self::State {
        None
    }

    fn step(state: &Self::State, op: &Self::Op) -> (bool, Self::State) {
        match op {
            RegOp::Write(v) => (true, Some(v.clone())),
            RegOp::Read(v) => (state == v, state.clone()),
        }
    }
}

/// The outcome of one key's linearizability search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linearizable {
    Yes,
    No,
    Unknown,
}

fn ns(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// Checks one key's calls (writes and reads) for linearizability.
pub fn check_linearizable(calls: &[Call<'_>], timeout: std::time::Duration) -> Linearizable {
    let mut ops: Vec<porcupine_rs::Operation<RegisterModel>> = Vec::new();
    for c in calls {
        if c.inv.is_final {
            continue;
        }
        let client_id = match c.inv.process {
            crate::history::Process::Client(p) => u32::try_from(p).ok(),
            crate::history::Process::Nemesis => None,
        };
        match c.inv.f {
            F::Write if !c.is_fail() => {
                let Some(v) = c.inv.value.as_str() else {
                    continue;
                };
                ops.push(porcupine_rs::Operation {
                    client_id,
                    call_time: ns(c.inv.time),
                    return_time: if c.is_ok() {
                        ns(c.cmp_time())
                    } else {
                        i64::MAX
                    },
                    op: RegOp::Write(v.to_string()),
                    metadata: Some(c.inv.index),
                });
            }
            F::Read if c.is_ok() => {
                let v = c.result().value.as_str().map(str::to_string);
                ops.push(porcupine_rs::Operation {
                    client_id,
                    call_time: ns(c.inv.time),
                    return_time: ns(c.cmp_time()),
                    op: RegOp::Read(v),
                    metadata: Some(c.inv.index),
                });
            }
            _ => {}
        }
    }
    if ops.len() > MAX_LINEARIZABLE_OPS {
        return Linearizable::Unknown;
    }
    match porcupine_rs::check_operations_timeout(&ops, timeout) {
        porcupine_rs::CheckResult::Ok => Linearizable::Yes,
        porcupine_rs::CheckResult::Illegal => Linearizable::No,
        porcupine_rs::CheckResult::Unknown => Linearizable::Unknown,
    }
}

/// The register checker (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct RegisterChecker;

impl Checker for RegisterChecker {
    fn name(&self) -> &'static str {
        "register"
    }

    fn check(&self, history: &History, ctx: &CheckContext) -> anyhow::Result<CheckResult> {
        let mut by_key: BTreeMap<String, Vec<Call<'_>>> = BTreeMap::new();
        for call in history.calls() {
            if let Some(key) = call.inv.key.as_deref()
                && WorkloadKind::of_key(key) == Some(WorkloadKind::Register)
                && matches!(call.inv.f, F::Write | F::Read)
            {
                call.required_level()?;
                by_key.entry(key.to_string()).or_default().push(call);
            }
        }
        let level_of = |c: &Call<'_>| {
            c.level()
                .expect("every op's level was checked when the calls were collected")
        };

        let mut garbage = Vec::new();
        let mut fail_visible = BTreeSet::new();
        let mut mismatch = Vec::new();
        let mut collisions = Vec::new();
        let mut divergent = Vec::new();
        let mut lost_writes = Vec::new();
        let mut undetermined = Vec::new();
        let mut missing_final = Vec::new();
        let mut stale = Vec::new();
        let mut stale_count = 0usize;
        let mut lin_checked = 0usize;
        let mut lin_invalid = Vec::new();
        let mut lin_unknown = Vec::new();
        let mut lin_long = Vec::new();
        let mut hlc_fallback = 0usize;
        let mut unresolved = Vec::new();
        let mut unresolved_count = 0usize;

        for (key, calls) in &by_key {
            // value -> (write call)
            let mut writes: HashMap<&str, &Call<'_>> = HashMap::new();
            for c in calls.iter().filter(|c| c.inv.f == F::Write) {
                let v = c.inv.value.as_str().ok_or_else(|| {
                    anyhow::anyhow!("write {} has a non-string value", c.inv.index)
                })?;
                anyhow::ensure!(
                    writes.insert(v, c).is_none(),
                    "register values must be unique; {v:?} written twice to {key}"
                );
            }
            // Timestamps: acknowledged, and observed by reads.
            let mut hlc_of: HashMap<&str, Hlc> = HashMap::new();
            let mut values_at: BTreeMap<Hlc, BTreeSet<&str>> = BTreeMap::new();
            for (v, c) in &writes {
                if c.is_ok()
                    && let Some(h) = c.result().hlc()
                {
                    hlc_of.insert(v, h);
                    values_at.entry(h).or_default().insert(v);
                }
            }
            let reads: Vec<&Call<'_>> = calls
                .iter()
                .filter(|c| c.inv.f == F::Read && c.is_ok())
                .collect();
            for r in &reads {
                let res = r.result();
                let Some(v) = res.value.as_str() else {
                    continue;
                };
                match writes.get(v) {
                    None => {
                        if garbage.len() < MAX_LISTED {
                            garbage.push(json!({"key": key, "index": res.index, "value": v}));
                        }
                        continue;
                    }
                    Some(w) if w.is_fail() => {
                        fail_visible.insert(format!("{key}/{v}"));
                    }
                    _ => {}
                }
                if let Some(h) = res.hlc() {
                    match hlc_of.get(v) {
                        Some(acked) if *acked != h => {
                            if mismatch.len() < MAX_LISTED {
                                mismatch.push(json!({
                                    "key": key, "value": v, "index": res.index,
                                    "acknowledged": acked, "read": h,
                                }));
                            }
                        }
                        Some(_) => {}
                        None => {
                            hlc_of.insert(v, h);
                        }
                    }
                    values_at.entry(h).or_default().insert(v);
                }
            }
            for (h, vs) in &values_at {
                if vs.len() > 1 {
                    collisions.push(json!({"key": key, "hlc": h, "values": vs}));
                }
            }

            // Promised writes. Each read's timestamp: its own `meta.hlc`,
            // else (a client that reports none) the timestamp its value was
            // written with — values are unique per write, so the value
            // names the write, whose timestamp is known from its
            // acknowledgement or from any other read of it that carried one.
            for r in &reads {
                let value = r.result().value.as_str();
                let read_hlc: Option<Hlc> = match (value, r.result().hlc()) {
                    (_, Some(h)) => Some(h),
                    (None, None) => None, // never written: older than any write
                    (Some(v), None) => match hlc_of.get(v) {
                        Some(h) => {
                            hlc_fallback += 1;
                            Some(*h)
                        }
                        None => {
                            // Its write's timestamp is unknown (an `info` or
                            // unstamped write no read reported a timestamp
                            // for): only a promised write of the same value
                            // can be judged; any other makes it unresolved.
                            let needs_order = writes.values().any(|w| {
                                w.is_ok()
                                    && w.cmp_index() < r.inv.index
                                    && w.inv.value.as_str() != Some(v)
                                    && w.result().hlc().is_some()
                                    && must_observe(
                                        level_of(w),
                                        w.serving_node(),
                                        level_of(r),
                                        r.serving_node(),
                                    )
                            });
                            if needs_order {
                                unresolved_count += 1;
                                if unresolved.len() < MAX_LISTED {
                                    unresolved.push(json!({
                                        "key": key, "index": r.inv.index, "value": v,
                                    }));
                                }
                            }
                            continue;
                        }
                    },
                };
                let r_level = level_of(r);
                for w in writes.values() {
                    if !w.is_ok() || w.cmp_index() >= r.inv.index {
                        continue;
                    }
                    let Some(wh) = w.result().hlc() else { continue };
                    if !must_observe(level_of(w), w.serving_node(), r_level, r.serving_node()) {
                        continue;
                    }
                    if read_hlc.is_none_or(|rh| rh < wh) {
                        stale_count += 1;
                        if stale.len() < MAX_LISTED {
                            stale.push(json!({
                                "key": key,
                                "read": {"index": r.inv.index, "level": r_level,
                                         "node": r.serving_node(), "value": r.result().value,
                                         "hlc": read_hlc},
                                "write": {"index": w.inv.index, "level": w.level(),
                                          "node": w.serving_node(), "value": w.inv.value,
                                          "hlc": wh},
                            }));
                        }
                    }
                }
            }

            // Final state.
            let finals: Vec<&&Call<'_>> = reads.iter().filter(|c| c.inv.is_final).collect();
            if finals.is_empty() {
                if !writes.is_empty() {
                    missing_final.push(key.clone());
                }
            } else {
                let values: BTreeMap<String, Value> = finals
                    .iter()
                    .map(|c| {
                        (
                            c.serving_node().unwrap_or("?").to_string(),
                            c.result().value.clone(),
                        )
                    })
                    .collect();
                let distinct: BTreeSet<String> = finals
                    .iter()
                    .map(|c| c.result().value.to_string())
                    .collect();
                if distinct.len() > 1 {
                    divergent.push(json!({"key": key, "values": values}));
                }
                for f in &finals {
                    let fv = f.result().value.as_str();
                    // Candidates: ok writes and observed info writes.
                    let mut best: Option<(Hlc, &str)> = None;
                    let mut unknown_hlc = false;
                    for (v, w) in &writes {
                        let observed = hlc_of.contains_key(v)
                            && (w.is_ok()
                                || (w.is_info() && values_at.values().any(|s| s.contains(v))));
                        if w.is_ok() || observed {
                            match hlc_of.get(v) {
                                Some(h) => {
                                    if best.is_none_or(|(bh, _)| *h > bh) {
                                        best = Some((*h, v));
                                    }
                                }
                                None => unknown_hlc = true,
                            }
                        }
                    }
                    let final_hlc = fv.and_then(|v| hlc_of.get(v).copied()).or(f.result().hlc());
                    match (fv, best) {
                        (None, Some((h, v))) => lost_writes.push(json!({
                            "key": key, "node": f.serving_node(), "final": Value::Null,
                            "winner": v, "winner-hlc": h,
                        })),
                        (Some(v), Some((bh, bv))) if bv != v => match final_hlc {
                            Some(fh) if fh < bh => lost_writes.push(json!({
                                "key": key, "node": f.serving_node(), "final": v,
                                "final-hlc": fh, "winner": bv, "winner-hlc": bh,
                            })),
                            Some(_) => {}
                            None => undetermined.push(key.clone()),
                        },
                        _ => {}
                    }
                    if unknown_hlc {
                        undetermined.push(key.clone());
                    }
                }
            }

            if ctx.linearizable.keys.contains(key) {
                lin_checked += 1;
                if key.starts_with(LONG_KEY_PREFIX) {
                    lin_long.push(key.clone());
                }
                match check_linearizable(calls, ctx.linearizable_timeout) {
                    Linearizable::Yes => {}
                    Linearizable::No => lin_invalid.push(key.clone()),
                    Linearizable::Unknown => lin_unknown.push(key.clone()),
                }
            }
        }
        undetermined.sort();
        undetermined.dedup();

        let invalid = stale_count > 0
            || !garbage.is_empty()
            || !fail_visible.is_empty()
            || !mismatch.is_empty()
            || !collisions.is_empty()
            || !divergent.is_empty()
            || !lost_writes.is_empty()
            || !lin_invalid.is_empty();
        let valid = if invalid {
            Validity::False
        } else if !undetermined.is_empty()
            || !lin_unknown.is_empty()
            || !missing_final.is_empty()
            || unresolved_count > 0
        {
            Validity::Unknown
        } else {
            Validity::True
        };
        lost_writes.truncate(MAX_LISTED);
        let mut r = CheckResult::new(valid)
            .with("key-count", by_key.len())
            .with("garbage-reads", &garbage)
            .with("fail-visible", &fail_visible)
            .with("hlc-mismatch", &mismatch)
            .with("stale-read-count", stale_count)
            .with("stale-reads", &stale)
            .with("hlc-fallback-count", hlc_fallback)
            .with("unresolved-read-count", unresolved_count)
            .with("unresolved-reads", &unresolved)
            .with("timestamp-collisions", &collisions)
            .with(
                "final",
                json!({
                    "divergent": divergent,
                    "lost-writes": lost_writes,
                    "undetermined": undetermined,
                }),
            )
            .with(
                "linearizable",
                json!({
                    "checked-keys": lin_checked,
                    "checked-long-lived-keys": lin_long,
                    "invalid-keys": lin_invalid,
                    "unknown-keys": lin_unknown,
                }),
            );
        if !missing_final.is_empty() {
            r.insert("final-reads-missing", &missing_final);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::LinearizableScope;
    use crate::history::test_support::{H, hlc};
    use crate::history::{Level, OpType};
    use serde_json::json;

    const K: &str = "register-0";

    fn write(h: &mut H, p: u64, v: &str, outcome: OpType, ts: Option<(u64, u64)>) {
        h.invoke(p, F::Write, K, json!(v)).at(Level::Quorum, "n1");
        h.push(crate::history::test_support::op(
            p,
            outcome,
            F::Write,
            K,
            json!(v),
        ))
        .at(Level::Quorum, "n1");
        if let Some((t, n)) = ts {
            h.with(|o| o.meta = Some(hlc(t, n)));
        }
    }
    fn read(h: &mut H, p: u64, v: Option<&str>, ts: Option<(u64, u64)>) {
        h.invoke(p, F::Read, K, Value::Null).at(Level::Quorum, "n2");
        h.ok(p, F::Read, K, json!(v)).at(Level::Quorum, "n2");
        if let Some((t, n)) = ts {
            h.with(|o| o.meta = Some(hlc(t, n)));
        }
    }
    fn finals(h: &mut H, v: Option<&str>, ts: Option<(u64, u64)>) {
        for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
            h.invoke(50 + i as u64, F::Read, K, Value::Null)
                .at(Level::Local, n)
                .with(|o| o.is_final = true);
            h.ok(50 + i as u64, F::Read, K, json!(v))
                .at(Level::Local, n)
                .with(|o| o.is_final = true);
            if let Some((t, nn)) = ts {
                h.with(|o| o.meta = Some(hlc(t, nn)));
            }
        }
    }
    fn ctx_all_linearizable() -> CheckContext {
        let mut ctx = CheckContext::new();
        ctx.linearizable = LinearizableScope {
            keys: [K.to_string()].into_iter().collect(),
        };
        ctx
    }
    fn check(h: &H) -> CheckResult {
        RegisterChecker
            .check(&h.build(), &ctx_all_linearizable())
            .unwrap()
    }

    #[test]
    fn clean_history_passes_including_linearizability() {
        let mut h = H::new();
        read(&mut h, 1, None, None);
        write(&mut h, 0, "a", OpType::Ok, Some((10, 1)));
        read(&mut h, 1, Some("a"), Some((10, 1)));
        write(&mut h, 0, "b", OpType::Ok, Some((20, 2)));
        read(&mut h, 1, Some("b"), Some((20, 2)));
        finals(&mut h, Some("b"), Some((20, 2)));
        let r = check(&h);
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        assert_eq!(r.get("linearizable").unwrap()["checked-keys"], json!(1));
    }

    /// A quorum read after an acknowledged quorum write must be at least as
    /// new; the same stale read at `local` elsewhere is allowed.
    #[test]
    fn promised_write_missing_from_a_read_is_stale() {
        let mut h = H::new();
        write(&mut h, 0, "a", OpType::Ok, Some((10, 1)));
        write(&mut h, 0, "b", OpType::Ok, Some((20, 1)));
        read(&mut h, 1, Some("a"), Some((10, 1)));
        finals(&mut h, Some("b"), Some((20, 1)));
        let r = RegisterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap();
        assert_eq!(r.valid, Validity::False);
        assert_eq!(r.get("stale-read-count").unwrap(), &json!(1));
        assert_eq!(
            r.get("stale-reads").unwrap()[0]["write"]["value"],
            json!("b")
        );
        // A local read on n2 may lag behind n1's quorum write.
        let mut h = H::new();
        write(&mut h, 0, "a", OpType::Ok, Some((10, 1)));
        write(&mut h, 0, "b", OpType::Ok, Some((20, 1)));
        h.invoke(1, F::Read, K, Value::Null).at(Level::Local, "n2");
        h.ok(1, F::Read, K, json!("a")).at(Level::Local, "n2");
        h.with(|o| o.meta = Some(hlc(10, 1)));
        finals(&mut h, Some("b"), Some((20, 1)));
        let r = RegisterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
    }

    #[test]
    fn stale_read_is_not_linearizable() {
        let mut h = H::new();
        write(&mut h, 0, "a", OpType::Ok, Some((10, 1)));
        write(&mut h, 0, "b", OpType::Ok, Some((20, 1)));
        read(&mut h, 1, Some("a"), Some((10, 1))); // after b completed
        finals(&mut h, Some("b"), Some((20, 1)));
        let r = check(&h);
        assert_eq!(r.valid, Validity::False);
        assert_eq!(r.get("linearizable").unwrap()["invalid-keys"], json!([K]));
        // Not eligible for linearizability, and the stale read at `local` on
        // another node: passes (LWW allows stale local reads).
        for o in &mut h.ops {
            if o.f == F::Read && !o.is_final {
                o.consistency = Some(Level::Local);
            }
        }
        let r = RegisterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
    }

    #[test]
    fn indeterminate_write_may_appear_later() {
        let mut h = H::new();
        write(&mut h, 0, "a", OpType::Info, None);
        read(&mut h, 1, None, None);
        read(&mut h, 1, Some("a"), Some((10, 1)));
        finals(&mut h, Some("a"), Some((10, 1)));
        let r = check(&h);
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
    }

    #[test]
    fn garbage_and_fail_visible_reads() {
        let mut h = H::new();
        write(&mut h, 0, "a", OpType::Fail, None);
        read(&mut h, 1, Some("a"), Some((10, 1)));
        read(&mut h, 1, Some("zz"), Some((11, 1)));
        let r = RegisterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap();
        assert_eq!(r.valid, Validity::False);
        assert_eq!(r.get("garbage-reads").unwrap()[0]["value"], json!("zz"));
        assert_eq!(r.get("fail-visible").unwrap(), &json!(["register-0/a"]));
    }

    #[test]
    fn final_value_must_be_the_largest_timestamp() {
        // a has the larger timestamp but everyone converged on b: lost write.
        let mut h = H::new();
        write(&mut h, 0, "a", OpType::Ok, Some((30, 1)));
        write(&mut h, 1, "b", OpType::Ok, Some((20, 2)));
        finals(&mut h, Some("b"), Some((20, 2)));
        let r = RegisterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap();
        assert_eq!(r.valid, Validity::False);
        let lw = &r.get("final").unwrap()["lost-writes"][0];
        assert_eq!(lw["winner"], json!("a"));
        assert_eq!(lw["final"], json!("b"));
        // Ties are broken by node id: (30,2) beats (30,1).
        let mut h = H::new();
        write(&mut h, 0, "a", OpType::Ok, Some((30, 1)));
        write(&mut h, 1, "b", OpType::Ok, Some((30, 2)));
        finals(&mut h, Some("b"), Some((30, 2)));
        let r = RegisterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        // Null final after an acknowledged write.
        let mut h = H::new();
        write(&mut h, 0, "a", OpType::Ok, Some((30, 1)));
        finals(&mut h, None, None);
        let r = RegisterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap();
        assert_eq!(r.valid, Validity::False);
    }

    #[test]
    fn divergent_finals_and_collisions_and_mismatches() {
        let mut h = H::new();
        write(&mut h, 0, "a", OpType::Ok, Some((30, 1)));
        write(&mut h, 1, "b", OpType::Ok, Some((30, 1))); // same (time,node)
        read(&mut h, 2, Some("a"), Some((31, 1))); // not what a was acked with
        for (i, (n, v)) in [("n1", "a"), ("n2", "b")].iter().enumerate() {
            h.invoke(60 + i as u64, F::Read, K, Value::Null)
                .at(Level::Local, n)
                .with(|o| o.is_final = true);
            h.ok(60 + i as u64, F::Read, K, json!(v))
                .at(Level::Local, n)
                .with(|o| o.is_final = true);
        }
        let r = RegisterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap();
        assert_eq!(r.valid, Validity::False);
        assert_eq!(
            r.get("final").unwrap()["divergent"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            r.get("timestamp-collisions")
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(r.get("hlc-mismatch").unwrap().as_array().unwrap().len(), 1);
    }

    /// A client that reports no timestamps: every read is still judged, by
    /// the timestamp its value's write was acknowledged with.
    #[test]
    fn reads_without_hlc_are_judged_by_their_values_write() {
        let mut h = H::new();
        write(&mut h, 0, "a", OpType::Ok, Some((10, 1)));
        write(&mut h, 0, "b", OpType::Ok, Some((20, 1)));
        read(&mut h, 1, Some("a"), None); // stale: a is older than b
        finals(&mut h, Some("b"), None);
        let r = RegisterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap();
        assert_eq!(r.valid, Validity::False, "{}", r.to_json());
        assert_eq!(r.get("stale-read-count").unwrap(), &json!(1));
        assert_eq!(
            r.get("stale-reads").unwrap()[0]["read"]["hlc"],
            json!({"time": 10, "node": 1})
        );
        assert!(r.get("hlc-fallback-count").unwrap().as_u64().unwrap() >= 1);

        // The up-to-date read passes.
        let mut h = H::new();
        write(&mut h, 0, "a", OpType::Ok, Some((10, 1)));
        write(&mut h, 0, "b", OpType::Ok, Some((20, 1)));
        read(&mut h, 1, Some("b"), None);
        finals(&mut h, Some("b"), None);
        let r = RegisterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());

        // A value whose timestamp is nowhere (an info write no read
        // stamped), read after a promised write of another value: cannot
        // be ordered, so unknown — never silently valid.
        let mut h = H::new();
        write(&mut h, 0, "b", OpType::Ok, Some((20, 1)));
        write(&mut h, 2, "c", OpType::Info, None);
        read(&mut h, 1, Some("c"), None);
        let r = RegisterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap();
        assert_eq!(r.get("unresolved-read-count").unwrap(), &json!(1));
        let mut h2 = H { ops: h.ops.clone() };
        finals(&mut h2, Some("c"), Some((30, 2)));
        // Once a (final) read reports c's timestamp, the earlier read is
        // judged by it.
        let r = RegisterChecker
            .check(&h2.build(), &CheckContext::new())
            .unwrap();
        assert_eq!(r.get("unresolved-read-count").unwrap(), &json!(0));
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        let r = RegisterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap();
        assert_eq!(r.valid, Validity::Unknown, "{}", r.to_json());
    }

    fn lin_op(
        client: u32,
        call: i64,
        ret: i64,
        op: RegOp,
    ) -> porcupine_rs::Operation<RegisterModel> {
        porcupine_rs::Operation {
            client_id: Some(client),
            call_time: call,
            return_time: ret,
            op,
            metadata: None,
        }
    }

    fn wgl(ops: &[porcupine_rs::Operation<RegisterModel>]) -> porcupine_rs::CheckResult {
        porcupine_rs::check_operations_timeout(ops, std::time::Duration::from_secs(10))
    }

    /// WGL itself on overlapping operations: a history that is linearizable
    /// only by ordering concurrent ops against their real-time order of
    /// invocation, and one that is not linearizable although every read
    /// returns a written value.
    #[test]
    fn wgl_on_overlapping_histories() {
        use porcupine_rs::CheckResult as P;
        let w = |v: &str| RegOp::Write(v.to_string());
        let r = |v: Option<&str>| RegOp::Read(v.map(str::to_string));
        // W(a) [0,10] and W(b) [2,12] overlap; R→b [3,5] sees b before a
        // finished; R→a [11,20] overlaps W(b)'s end: order b, R→b, a, R→a
        // (a linearized after b although invoked first). A read of the
        // initial state overlapping both writes is fine too.
        let ok = vec![
            lin_op(0, 0, 10, w("a")),
            lin_op(1, 2, 12, w("b")),
            lin_op(2, 3, 5, r(Some("b"))),
            lin_op(3, 1, 4, r(None)),
            lin_op(2, 11, 20, r(Some("a"))),
            lin_op(3, 13, 15, r(Some("a"))),
        ];
        assert!(matches!(wgl(&ok), P::Ok));
        // The same two overlapping writes, then — after both completed —
        // a read of a followed by a read of b: the value changed with no
        // write in flight.
        let bad = vec![
            lin_op(0, 0, 10, w("a")),
            lin_op(1, 2, 12, w("b")),
            lin_op(2, 13, 14, r(Some("a"))),
            lin_op(3, 15, 16, r(Some("b"))),
        ];
        assert!(matches!(wgl(&bad), P::Illegal));
        // An indeterminate write (open until ∞) may take effect late...
        let info = vec![
            lin_op(0, 0, 10, w("a")),
            lin_op(1, 2, i64::MAX, w("b")),
            lin_op(2, 13, 14, r(Some("a"))),
            lin_op(3, 15, 16, r(Some("b"))),
        ];
        assert!(matches!(wgl(&info), P::Ok));
        // ...but not be un-done: once b is seen, a cannot return.
        let mut undone = info.clone();
        undone.push(lin_op(2, 17, 18, r(Some("a"))));
        assert!(matches!(wgl(&undone), P::Illegal));
    }

    /// The same overlapping histories through the checker, from the
    /// history's own calls (failed writes dropped, info writes open).
    #[test]
    fn overlapping_history_through_the_checker() {
        let mk = |reads: &[(u64, &str)]| {
            let mut h = H::new();
            h.invoke(0, F::Write, K, json!("a")).at(Level::Quorum, "n1");
            h.invoke(1, F::Write, K, json!("b")).at(Level::Quorum, "n2");
            h.ok(0, F::Write, K, json!("a"))
                .at(Level::Quorum, "n1")
                .with(|o| o.meta = Some(hlc(20, 1)));
            h.ok(1, F::Write, K, json!("b"))
                .at(Level::Quorum, "n2")
                .with(|o| o.meta = Some(hlc(10, 2)));
            for (p, v) in reads {
                let ts = if *v == "a" { (20, 1) } else { (10, 2) };
                read(&mut h, *p, Some(v), Some(ts));
            }
            h.build()
        };
        let ctx = ctx_all_linearizable();
        let good = mk(&[(2, "a"), (3, "a")]);
        assert_eq!(good.calls().len(), 4, "two overlapping writes, two reads");
        let hc: Vec<Call<'_>> = good.calls();
        assert_eq!(
            check_linearizable(&hc, ctx.linearizable_timeout),
            Linearizable::Yes
        );
        let bad = mk(&[(2, "a"), (3, "b")]);
        let bc: Vec<Call<'_>> = bad.calls();
        assert_eq!(
            check_linearizable(&bc, ctx.linearizable_timeout),
            Linearizable::No
        );
        let r = RegisterChecker.check(&bad, &ctx).unwrap();
        assert_eq!(r.get("linearizable").unwrap()["invalid-keys"], json!([K]));
    }

    /// A missing consistency level is an error, not `local`.
    #[test]
    fn missing_level_is_an_error() {
        let mut h = H::new();
        write(&mut h, 0, "a", OpType::Ok, Some((10, 1)));
        read(&mut h, 1, Some("a"), Some((10, 1)));
        h.ops[2].consistency = None;
        let e = RegisterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap_err();
        assert!(e.to_string().contains("no consistency level"), "{e}");
    }
}
