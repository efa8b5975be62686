//! The `large` checker: what the large-value workload adds to the set and
//! register checkers (which judge its keys like any other: lost
//! acknowledged writes, stale reads, add-wins, convergence of final reads).
//!
//! Rules, on every op whose key starts with `set-large-` or
//! `register-large-` ([`crate::workload::large`]):
//!
//! 1. **`corrupt-reads`**: no ok read returned a payload whose bytes differ
//!    from what its write sent (cut short, padded, a byte changed, another
//!    value's bytes under this id). The harness decodes every read;
//!    a damaged payload is recorded as `corrupt:<id>`.
//! 2. **`merge`** (the scripted merge scenario, ops tagged
//!    `meta.scenario` = `large-merge`): the members whose adds were
//!    acknowledged together hold `acknowledged-bytes` (from each add's
//!    `meta.bytes`); each final read of the merge key must contain every
//!    one of them (`missing`: invalid). The scenario reached its edge only
//!    if `acknowledged-bytes` exceeds the object limit
//!    ([`wire::MAX_OBJECT_BYTES`], `past-object-limit`); if it did not
//!    (adds refused or indeterminate), or a node has no ok final read of
//!    the merge key (say a reply over the frame limit on a store that
//!    neither pages nor counts), the verdict is `unknown` with the reason —
//!    never valid for an edge the run did not show.
//!
//! *Cannot see*: damage the store does consistently to a value *and* its
//! header so that the result is another well-formed payload of the same
//! id (impossible without knowing the filler); a member lost from the
//! merge that no final read was asked for (every node is read); sizes the
//! store rounds or pads in its own accounting (only bytes read back are
//! judged). A read that the store answers *partially* without saying so
//! looks like lost members (rule 2 and the set checker's `lost`), which is
//! what it is to a client.

use std::collections::{BTreeMap, BTreeSet};

use meridian_client::wire;
use serde_json::{Value, json};

use super::{CheckContext, CheckResult, Checker, MAX_LISTED, Validity};
use crate::history::{F, History};
use crate::workload::large::{
    CORRUPT_PREFIX, MERGE_KEY, MERGE_SCENARIO, REGISTER_PREFIX, SET_PREFIX, bytes_of,
};

/// Whether `key` belongs to the large workload.
pub fn is_large_key(key: &str) -> bool {
    key.starts_with(SET_PREFIX) || key.starts_with(REGISTER_PREFIX)
}

/// The large workload's own rules (see the module docs).
#[derive(Debug)]
pub struct LargeChecker;

fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

impl Checker for LargeChecker {
    fn name(&self) -> &'static str {
        "large"
    }

    fn check(&self, history: &History, _ctx: &CheckContext) -> anyhow::Result<CheckResult> {
        let mut corrupt = Vec::new();
        let mut reads = 0u64;
        let mut largest_read = 0usize;
        let mut merge_ran = false;
        let mut acked: BTreeMap<String, u64> = BTreeMap::new();
        let mut finals: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut merge_final_attempts: BTreeSet<String> = BTreeSet::new();
        for c in history.calls() {
            let Some(key) = c.inv.key.as_deref() else {
                continue;
            };
            if !is_large_key(key) {
                continue;
            }
            if c.inv
                .meta
                .as_ref()
                .and_then(|m| m.get("scenario"))
                .and_then(Value::as_str)
                == Some(MERGE_SCENARIO)
            {
                merge_ran = true;
                if c.inv.f == F::Add && c.is_ok() {
                    let id = c.inv.value.as_str().unwrap_or_default().to_string();
                    acked.insert(id, bytes_of(c.inv.meta.as_ref()).unwrap_or(0) as u64);
                }
            }
            if c.inv.f != F::Read {
                continue;
            }
            let node = c.inv.node.clone().unwrap_or_default();
            if key == MERGE_KEY && c.inv.is_final {
                merge_final_attempts.insert(node.clone());
            }
            if !c.is_ok() {
                continue;
            }
            reads += 1;
            let got = strings(&c.result().value);
            largest_read = largest_read.max(got.len());
            for s in &got {
                if s.starts_with(CORRUPT_PREFIX) && corrupt.len() < MAX_LISTED {
                    corrupt
                        .push(json!({"index": c.inv.index, "key": key, "node": node, "value": s}));
                }
            }
            if key == MERGE_KEY && c.inv.is_final {
                finals.insert(node, got.iter().map(|s| s.to_string()).collect());
            }
        }
        let corrupt_count = corrupt.len();
        let mut valid = Validity::from_bool(corrupt.is_empty());
        let mut out = CheckResult::new(Validity::True)
            .with("large-reads-ok", reads)
            .with("most-members-in-one-read", largest_read)
            .with("corrupt-reads-count", corrupt_count)
            .with("corrupt-reads", corrupt);
        if merge_ran {
            let bytes: u64 = acked.values().sum();
            let past = bytes > wire::MAX_OBJECT_BYTES as u64;
            let mut missing = Vec::new();
            for (node, got) in &finals {
                for id in acked.keys().filter(|id| !got.contains(*id)) {
                    if missing.len() < MAX_LISTED {
                        missing.push(json!({"node": node, "member": id}));
                    }
                }
            }
            let unread: Vec<&String> = merge_final_attempts
                .iter()
                .filter(|n| !finals.contains_key(*n))
                .collect();
            let mut reasons = Vec::new();
            if !past {
                reasons.push(format!(
                    "acknowledged merge adds hold {bytes} bytes, not past the {}-byte object \
                     limit: the edge was not reached",
                    wire::MAX_OBJECT_BYTES
                ));
            }
            if finals.is_empty() || !unread.is_empty() {
                reasons.push(format!(
                    "no ok final read of {MERGE_KEY} on {unread:?} (of {} nodes read)",
                    merge_final_attempts.len()
                ));
            }
            let merge_valid = if !missing.is_empty() {
                Validity::False
            } else if !reasons.is_empty() {
                Validity::Unknown
            } else {
                Validity::True
            };
            valid = Validity::merge([valid, merge_valid]);
            out.insert(
                "merge",
                json!({
                    "ran": true,
                    "valid": merge_valid,
                    "acknowledged-adds": acked.len(),
                    "acknowledged-bytes": bytes,
                    "past-object-limit": past,
                    "final-reads": finals.iter().map(|(n, s)| (n.clone(), s.len())).collect::<BTreeMap<_, _>>(),
                    "missing": missing,
                    "unknown-because": reasons,
                }),
            );
        } else {
            out.insert("merge", json!({"ran": false}));
        }
        out.valid = valid;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::test_support::H;
    use crate::history::{Level, OpType};

    fn merge_meta(o: &mut crate::history::Op) {
        o.meta = Some(json!({"bytes": 9 << 20, "scenario": MERGE_SCENARIO}));
    }

    /// Two acknowledged 9 MiB merge adds (18 MiB together), then final
    /// reads on n1 and n2 returning `n1_sees` and `n2_sees`.
    fn merge_history(n1_sees: Value, n2_sees: Value) -> History {
        let mut h = H::new();
        for (p, id) in [(0, "M0-0"), (1, "M1-0")] {
            h.invoke(p, F::Add, MERGE_KEY, json!(id)).with(merge_meta);
            h.ok(p, F::Add, MERGE_KEY, json!(id));
        }
        for (p, node, seen) in [(2, "n1", n1_sees), (3, "n2", n2_sees)] {
            h.invoke(p, F::Read, MERGE_KEY, Value::Null)
                .at(Level::Local, node)
                .with(|o| o.is_final = true);
            h.ok(p, F::Read, MERGE_KEY, seen)
                .with(|o| o.is_final = true);
        }
        h.build()
    }

    fn check(h: &History) -> CheckResult {
        LargeChecker.check(h, &CheckContext::new()).unwrap()
    }

    #[test]
    fn a_merge_past_the_limit_read_whole_everywhere_is_valid() {
        let r = check(&merge_history(
            json!(["M0-0", "M1-0"]),
            json!(["M0-0", "M1-0"]),
        ));
        assert_eq!(r.valid, Validity::True, "{r:?}");
        assert_eq!(r.get("merge").unwrap()["past-object-limit"], json!(true));
    }

    #[test]
    fn a_final_read_missing_an_acknowledged_merge_member_is_invalid() {
        let r = check(&merge_history(json!(["M0-0", "M1-0"]), json!(["M0-0"])));
        assert_eq!(r.valid, Validity::False);
        assert_eq!(
            r.get("merge").unwrap()["missing"][0]["member"],
            json!("M1-0")
        );
    }

    #[test]
    fn a_failed_final_read_or_a_merge_under_the_limit_is_unknown() {
        let mut h = merge_history(json!(["M0-0", "M1-0"]), json!(["M0-0", "M1-0"]));
        let last = h.ops.len() - 1;
        h.ops[last].kind = OpType::Fail;
        assert_eq!(check(&h).valid, Validity::Unknown);
        let mut h = merge_history(json!(["M0-0", "M1-0"]), json!(["M0-0", "M1-0"]));
        h.ops[1].kind = OpType::Fail; // one add refused: 9 MiB acknowledged
        let r = check(&h);
        assert_eq!(r.valid, Validity::Unknown, "{r:?}");
        assert_eq!(r.get("merge").unwrap()["past-object-limit"], json!(false));
    }

    #[test]
    fn a_corrupt_payload_in_any_read_is_invalid() {
        let mut h = H::new();
        h.invoke(0, F::Read, "register-large-0", Value::Null);
        h.ok(0, F::Read, "register-large-0", json!("corrupt:L3-p1"));
        let r = check(&h.build());
        assert_eq!(r.valid, Validity::False);
        assert_eq!(r.get("corrupt-reads-count"), Some(&json!(1)));
        assert_eq!(r.get("merge").unwrap()["ran"], json!(false));
        // Other workloads' keys are not this checker's business.
        let mut h = H::new();
        h.invoke(0, F::Read, "register-0", Value::Null);
        h.ok(0, F::Read, "register-0", json!("corrupt:x"));
        assert_eq!(check(&h.build()).valid, Validity::True);
    }
}
