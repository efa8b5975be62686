//! The add-wins OR-set checker.
//!
//! 1. **set-full**: a faithful port of Jepsen's `set-full` (checker.clj), run
//!    over every add and every ok read. Per element: `known` = the earlier of
//!    the add's ok completion and the first read that saw it; `last-present` /
//!    `last-absent` = the latest *invocation* of a read that saw / missed it.
//!    stable ⇔ some read seeing it began after the last read that missed it;
//!    lost ⇔ a read begun after it was known, and after its last sighting,
//!    missed it; never-read otherwise. Stale = stable with stable-latency > 0.
//!    Latency quantiles {0, .5, .95, .99, 1} in ms, worst-stale top 8.
//!    valid: false if lost; unknown if nothing is stable; else true. Run a
//!    second time with `linearizable? true` over the adds and reads at
//!    `quorum`/`all` only (`set-full-strong`): there a stale element is invalid.
//!    Elements that were removed are only judged on the reads that completed
//!    before the remove was invoked (set-full knows only adds). In the
//!    plain (non-strong) run such an element is never called lost: set-full's
//!    "a later read missed it" is evidence of loss only when some later read
//!    is bound to show the element again (the final reads, for an element
//!    nobody removed); a lagging `local` read followed by a remove is what
//!    docs/architecture.md §7 allows. Those elements are reported as `removed-unsettled`,
//!    and reads that *were* promised to see them are judged by (2).
//! 2. **must-observe**: every ok read must contain every element with an ok
//!    add that completed before the read began and that the read's level is
//!    promised to observe ([`super::counter::must_observe`], the same rule as
//!    the counter's lower bound: quorum add → quorum read, `all` either side,
//!    local/leader add → local/leader read served by the node that
//!    acknowledged it), unless a remove of it (not known to fail) was invoked
//!    before the read completed. A miss is `missed` (a lost or not-yet-visible
//!    acknowledged add the design promised to show).
//! 3. **duplicated**: any element appearing more than once in one read is an
//!    error (Jepsen's own duplicate detector can never fire: it keeps
//!    frequencies `< 1`).
//! 4. **unexpected**: an element read that was never attempted in that key.
//!    **fail-visible**: an element all of whose adds failed, seen in a read.
//!    **recovered** (fine, reported): an indeterminate add that showed up.
//! 5. **Final state** (reads with `final: true`, every node, after heal):
//!    all final reads equal (`divergent` otherwise), and per element:
//!    * *must be present* when some ok add A could not have been observed by
//!      any remove that was not known to fail: the remove completed before A
//!      was invoked, or A's node could not reach the remove's node (directly
//!      or through others) during all of [A invoked, remove completed] because
//!      of a partition recorded in the history. Absent ⇒ `lost` (no remove)
//!      or `remove-wins` (the add should have won over a concurrent remove).
//!    * *must be absent* when the element had exactly one add not known to
//!      fail, and an ok remove whose serving node had been seen to hold the
//!      element (a read served by that node, completed before the remove was
//!      invoked, contained it), so the remove observed the add's only dot.
//!      Present ⇒ `resurrected`.
//!    * otherwise (indeterminate removes, re-adds that may have been seen)
//!      either outcome is allowed.
//!
//!    A key with adds and no final read makes the verdict `unknown`.
//! 6. **The scripted add-wins scenario** (`add-wins-scenario`): when the
//!    history holds ops tagged `meta.scenario = "add-wins"` (the runner's
//!    script: add e; isolate A; re-add e on B; remove e on A; heal), each of
//!    their elements must be *confirmed*: must be present by the rule in (5)
//!    thanks to the re-add, and present in every final read. Absent is
//!    `remove-wins` (invalid); not confirmable (the re-add or the remove
//!    ended indeterminate, the partition is not recorded as certainly
//!    separating them, no final read) makes the verdict `unknown` with the
//!    reason — the scenario can never pass by doing nothing. When the
//!    history holds no such ops, the finding says `ran: false`.
//!
//! A set op without a consistency level is an error (verdict `unknown`),
//! never a default.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::{Value, json};

use super::counter::must_observe;
use super::faults::{self, Family, Window};
use super::{CheckContext, CheckResult, Checker, MAX_LISTED, Validity};
use crate::history::{Call, F, History, Level, Op, OpType, WorkloadKind};

/// `meta.scenario` of the runner's scripted add-wins ops.
pub const ADD_WINS_SCENARIO: &str = "add-wins";

/// The set checker (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct SetChecker;

type Elem = (String, String); // (key, member)

/// A final read: (serving node, members as a set, members sorted).
type FinalRead = (Option<String>, HashSet<String>, Vec<String>);

fn elem_name(e: &Elem) -> String {
    format!("{}/{}", e.0, e.1)
}

fn read_members(op: &Op) -> anyhow::Result<Vec<String>> {
    let arr = op
        .value
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("set read {} did not return a list", op.index))?;
    arr.iter()
        .map(|v| {
            v.as_str().map(str::to_string).ok_or_else(|| {
                anyhow::anyhow!("set read {} returned a non-string member", op.index)
            })
        })
        .collect()
}

fn member_of(op: &Op) -> anyhow::Result<String> {
    op.value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("set op {} has a non-string member", op.index))
}

/// `quorum`, `all` and majority `replicas-n` ops: any two of them
/// intersect ([`Level::is_majority`]).
fn is_strong(l: Option<Level>) -> bool {
    l.is_some_and(Level::is_majority)
}

/// A point in the history: (index, time ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct At {
    index: u64,
    time: u64,
}

impl At {
    fn of(op: &Op) -> At {
        At {
            index: op.index,
            time: op.time,
        }
    }
}

/// Jepsen's SetFullElement.
#[derive(Clone, Debug)]
struct SfElement {
    element: Elem,
    known: Option<At>,
    last_present: Option<At>,
    last_absent: Option<At>,
    /// Reads completing at or after this index are ignored (first remove).
    window_end: u64,
}

#[derive(Clone, Debug)]
struct SfOutcome {
    element: Elem,
    outcome: &'static str,
    stable_latency: Option<u64>,
    lost_latency: Option<u64>,
    known: Option<At>,
    last_absent: Option<At>,
}

fn sf_element_results(e: &SfElement, strong: bool) -> SfOutcome {
    let stable = e.last_present.is_some()
        && e.last_absent.map_or(-1i128, |a| a.index as i128)
            < e.last_present.map_or(-1i128, |p| p.index as i128);
    let lost = e.known.is_some()
        && e.last_absent.is_some()
        && e.last_present.map_or(-1i128, |p| p.index as i128)
            < e.last_absent.map_or(-1i128, |a| a.index as i128)
        && e.known.map_or(0, |k| k.index) < e.last_absent.map_or(0, |a| a.index);
    // See the module docs: without a promise that later reads see it, a
    // removed element missing from its last reads is not lost.
    let unsettled = lost && !strong && e.window_end != u64::MAX;
    let lost = lost && !unsettled;
    let known_time = e.known.map_or(0, |k| k.time);
    let ns_to_ms = |ns: u64| ns / 1_000_000;
    let stable_latency = stable.then(|| {
        let stable_time = e.last_absent.map_or(0, |a| a.time + 1);
        ns_to_ms(stable_time.saturating_sub(known_time))
    });
    let lost_latency = lost.then(|| {
        let lost_time = e.last_present.map_or(0, |p| p.time + 1);
        ns_to_ms(lost_time.saturating_sub(known_time))
    });
    SfOutcome {
        element: e.element.clone(),
        outcome: if stable {
            "stable"
        } else if lost {
            "lost"
        } else if unsettled {
            "removed-unsettled"
        } else {
            "never-read"
        },
        stable_latency,
        lost_latency,
        known: e.known,
        last_absent: e.last_absent,
    }
}

/// Jepsen's `frequency-distribution`: value at floor(n·p), clamped.
pub fn frequency_distribution(points: &[f64], values: &[u64]) -> Option<BTreeMap<String, u64>> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    Some(
        points
            .iter()
            .map(|p| {
                let idx = ((n as f64 * p).floor() as usize).min(n - 1);
                (format!("{p}"), sorted[idx])
            })
            .collect(),
    )
}

/// Jepsen's `set-full-results`.
fn sf_results(linearizable: bool, elements: &[SfElement]) -> CheckResult {
    let rs: Vec<SfOutcome> = elements
        .iter()
        .map(|e| sf_element_results(e, linearizable))
        .collect();
    let of = |o: &'static str| rs.iter().filter(move |r| r.outcome == o);
    let stale: Vec<&SfOutcome> = of("stable")
        .filter(|r| r.stable_latency.unwrap_or(0) > 0)
        .collect();
    let mut worst: Vec<&SfOutcome> = stale.clone();
    worst.sort_by_key(|r| std::cmp::Reverse(r.stable_latency));
    worst.truncate(8);
    let lost: Vec<String> = of("lost").map(|r| elem_name(&r.element)).collect();
    let stable_count = of("stable").count();
    let valid = if !lost.is_empty() {
        Validity::False
    } else if stable_count == 0 {
        Validity::Unknown
    } else if linearizable && !stale.is_empty() {
        Validity::False
    } else {
        Validity::True
    };
    let points = [0.0, 0.5, 0.95, 0.99, 1.0];
    let stable_lat: Vec<u64> = rs.iter().filter_map(|r| r.stable_latency).collect();
    let lost_lat: Vec<u64> = rs.iter().filter_map(|r| r.lost_latency).collect();
    let listed = |v: Vec<String>| -> Vec<String> { v.into_iter().take(MAX_LISTED).collect() };
    let mut r = CheckResult::new(valid)
        .with("attempt-count", rs.len())
        .with("stable-count", stable_count)
        .with("lost-count", lost.len())
        .with("lost", listed(lost))
        .with("removed-unsettled-count", of("removed-unsettled").count())
        .with("never-read-count", of("never-read").count())
        .with(
            "never-read",
            listed(of("never-read").map(|r| elem_name(&r.element)).collect()),
        )
        .with("stale-count", stale.len())
        .with(
            "stale",
            listed(stale.iter().map(|r| elem_name(&r.element)).collect()),
        )
        .with(
            "worst-stale",
            worst
                .iter()
                .map(|r| {
                    json!({
                        "element": elem_name(&r.element),
                        "outcome": r.outcome,
                        "stable-latency": r.stable_latency,
                        "known": r.known.map(|k| json!({"index": k.index, "time": k.time})),
                        "last-absent": r.last_absent.map(|k| json!({"index": k.index, "time": k.time})),
                    })
                })
                .collect::<Vec<_>>(),
        );
    if let Some(d) = frequency_distribution(&points, &stable_lat) {
        r.insert("stable-latencies", d);
    }
    if let Some(d) = frequency_distribution(&points, &lost_lat) {
        r.insert("lost-latencies", d);
    }
    r
}

/// Runs set-full over the history. `strong`: only quorum/all adds and reads.
fn set_full(
    history: &History,
    reads: &HashMap<u64, (Call<'_>, Vec<String>)>,
    window_end: &HashMap<Elem, u64>,
    strong: bool,
) -> (CheckResult, bool) {
    let mut elements: BTreeMap<Elem, SfElement> = BTreeMap::new();
    let mut by_key: HashMap<String, Vec<Elem>> = HashMap::new();
    let mut open_adds: HashMap<crate::history::Process, (Elem, bool)> = HashMap::new();
    let mut any = false;
    for op in &history.ops {
        let Some(key) = op.key.as_deref() else {
            continue;
        };
        if !op.is_client() || WorkloadKind::of_key(key) != Some(WorkloadKind::Set) {
            continue;
        }
        match (op.f, op.kind) {
            (F::Add, OpType::Invoke) => {
                let Some(m) = op.value.as_str() else { continue };
                let e: Elem = (key.to_string(), m.to_string());
                let counts = !strong || is_strong(op.consistency);
                open_adds.insert(op.process, (e.clone(), counts));
                if counts && !elements.contains_key(&e) {
                    any = true;
                    by_key.entry(key.to_string()).or_default().push(e.clone());
                    elements.insert(
                        e.clone(),
                        SfElement {
                            element: e.clone(),
                            known: None,
                            last_present: None,
                            last_absent: None,
                            window_end: window_end.get(&e).copied().unwrap_or(u64::MAX),
                        },
                    );
                }
            }
            (F::Add, OpType::Ok) => {
                if let Some((e, counts)) = open_adds.remove(&op.process)
                    && counts
                    && let Some(s) = elements.get_mut(&e)
                    && s.known.is_none()
                {
                    s.known = Some(At::of(op));
                }
            }
            (F::Add, _) => {
                open_adds.remove(&op.process);
            }
            (F::Read, OpType::Ok) => {
                let Some((call, members)) = reads.get(&op.index) else {
                    continue;
                };
                if strong && !is_strong(call.inv.consistency) {
                    continue;
                }
                let present: HashSet<&str> = members.iter().map(String::as_str).collect();
                let inv = At::of(call.inv);
                for e in by_key.get(key).into_iter().flatten() {
                    let Some(s) = elements.get_mut(e) else {
                        continue;
                    };
                    if op.index >= s.window_end {
                        continue;
                    }
                    if present.contains(e.1.as_str()) {
                        if s.known.is_none() {
                            s.known = Some(At::of(op));
                        }
                        if s.last_present.is_none_or(|p| p.index < inv.index) {
                            s.last_present = Some(inv);
                        }
                    } else if s.last_absent.is_none_or(|a| a.index < inv.index) {
                        s.last_absent = Some(inv);
                    }
                }
            }
            _ => {}
        }
    }
    let els: Vec<SfElement> = elements.into_values().collect();
    (sf_results(strong, &els), any)
}

/// Whether a partition recorded in the history certainly kept anything that
/// `from` knew from reaching `to` during all of `[t0, t1]`.
fn separated(windows: &[Window], nodes: &[String], from: &str, to: &str, t0: u64, t1: u64) -> bool {
    windows.iter().any(|w| {
        w.family == Family::Partition
            && w.certainly_covers(t0, t1)
            && w.grudge
                .as_ref()
                .is_some_and(|g| !g.reachable(nodes, from, to))
    })
}

#[derive(Default)]
struct ElemOps<'a> {
    adds: Vec<Call<'a>>,
    removes: Vec<Call<'a>>,
}

impl Checker for SetChecker {
    fn name(&self) -> &'static str {
        "set"
    }

    fn check(&self, history: &History, _ctx: &CheckContext) -> anyhow::Result<CheckResult> {
        let calls = history.calls();
        let mut elems: BTreeMap<Elem, ElemOps<'_>> = BTreeMap::new();
        // ok reads by completion index.
        let mut reads: HashMap<u64, (Call<'_>, Vec<String>)> = HashMap::new();
        let mut reads_in_order: Vec<u64> = Vec::new();
        for call in &calls {
            let Some(key) = call.inv.key.as_deref() else {
                continue;
            };
            if WorkloadKind::of_key(key) != Some(WorkloadKind::Set) {
                continue;
            }
            if matches!(call.inv.f, F::Add | F::Remove | F::Read) {
                call.required_level()?;
            }
            match call.inv.f {
                F::Add => elems
                    .entry((key.to_string(), member_of(call.inv)?))
                    .or_default()
                    .adds
                    .push(*call),
                F::Remove => elems
                    .entry((key.to_string(), member_of(call.inv)?))
                    .or_default()
                    .removes
                    .push(*call),
                F::Read if call.is_ok() => {
                    let cmp = call.result();
                    reads.insert(cmp.index, (*call, read_members(cmp)?));
                    reads_in_order.push(cmp.index);
                }
                _ => {}
            }
        }
        reads_in_order.sort_unstable();
        let level_of = |c: &Call<'_>| {
            c.level()
                .expect("every op's level was checked when the calls were collected")
        };

        // Window ends: the first remove (not known to fail) of each element.
        let window_end: HashMap<Elem, u64> = elems
            .iter()
            .filter_map(|(e, o)| {
                o.removes
                    .iter()
                    .filter(|r| !r.is_fail())
                    .map(|r| r.inv.index)
                    .min()
                    .map(|i| (e.clone(), i))
            })
            .collect();

        let (full, _) = set_full(history, &reads, &window_end, false);

        // must-observe.
        let mut missed: Vec<Value> = Vec::new();
        let mut missed_count = 0usize;
        let mut by_key: BTreeMap<&str, Vec<(&Elem, &ElemOps<'_>)>> = BTreeMap::new();
        for (e, o) in &elems {
            by_key.entry(e.0.as_str()).or_default().push((e, o));
        }
        for idx in &reads_in_order {
            let (r, members) = &reads[idx];
            let Some(key) = r.inv.key.as_deref() else {
                continue;
            };
            let r_level = level_of(r);
            let present: HashSet<&str> = members.iter().map(String::as_str).collect();
            for (e, o) in by_key.get(key).into_iter().flatten() {
                if present.contains(e.1.as_str()) {
                    continue;
                }
                let promised = o.adds.iter().find(|a| {
                    a.is_ok()
                        && a.cmp_index() < r.inv.index
                        && must_observe(level_of(a), a.serving_node(), r_level, r.serving_node())
                });
                let Some(a) = promised else { continue };
                if o.removes
                    .iter()
                    .any(|x| !x.is_fail() && x.inv.index < r.cmp_index())
                {
                    continue;
                }
                missed_count += 1;
                if missed.len() < MAX_LISTED {
                    missed.push(json!({
                        "element": elem_name(e),
                        "add": {"index": a.cmp_index(), "level": a.level(), "node": a.serving_node()},
                        "read": {"index": r.inv.index, "level": r_level, "node": r.serving_node(),
                                 "final": r.inv.is_final},
                    }));
                }
            }
        }
        let (strong, strong_any) = set_full(history, &reads, &window_end, true);
        let strong_reads = reads.values().any(|(c, _)| is_strong(c.inv.consistency));

        // Duplicates, unexpected, fail-visible, recovered.
        let mut duplicated: BTreeMap<String, usize> = BTreeMap::new();
        let mut unexpected: BTreeSet<String> = BTreeSet::new();
        let mut fail_visible: BTreeSet<String> = BTreeSet::new();
        let mut seen: HashSet<Elem> = HashSet::new();
        for idx in &reads_in_order {
            let (call, members) = &reads[idx];
            let key = call.inv.key.clone().unwrap_or_default();
            let mut freq: HashMap<&str, usize> = HashMap::new();
            for m in members {
                *freq.entry(m.as_str()).or_default() += 1;
            }
            for (m, n) in freq {
                let e: Elem = (key.clone(), m.to_string());
                if n > 1 {
                    let d = duplicated.entry(elem_name(&e)).or_default();
                    *d = (*d).max(n);
                }
                match elems.get(&e) {
                    None => {
                        unexpected.insert(elem_name(&e));
                    }
                    Some(o) if o.adds.is_empty() => {
                        unexpected.insert(elem_name(&e));
                    }
                    Some(o) if o.adds.iter().all(|a| a.is_fail()) => {
                        fail_visible.insert(elem_name(&e));
                    }
                    _ => {}
                }
                seen.insert(e);
            }
        }
        let recovered = elems
            .iter()
            .filter(|(e, o)| {
                seen.contains(*e)
                    && !o.adds.iter().any(|a| a.is_ok())
                    && o.adds.iter().any(|a| a.is_info())
            })
            .count();

        // Final state.
        let windows = faults::windows(history);
        let nodes: Vec<String> = {
            let mut s: BTreeSet<String> =
                history.ops.iter().filter_map(|o| o.node.clone()).collect();
            for w in &windows {
                if let Some(g) = &w.grudge {
                    for (d, srcs) in &g.0 {
                        s.insert(d.clone());
                        s.extend(srcs.iter().cloned());
                    }
                }
            }
            s.into_iter().collect()
        };
        let mut finals: BTreeMap<String, Vec<FinalRead>> = BTreeMap::new();
        for idx in &reads_in_order {
            let (call, members) = &reads[idx];
            if call.inv.is_final {
                let mut sorted = members.clone();
                sorted.sort();
                finals
                    .entry(call.inv.key.clone().unwrap_or_default())
                    .or_default()
                    .push((
                        call.serving_node().map(str::to_string),
                        members.iter().cloned().collect(),
                        sorted,
                    ));
            }
        }
        let mut divergent = Vec::new();
        for (key, fs) in &finals {
            let distinct: BTreeSet<&Vec<String>> = fs.iter().map(|f| &f.2).collect();
            if distinct.len() > 1 {
                let by_node: BTreeMap<String, usize> = fs
                    .iter()
                    .map(|f| (f.0.clone().unwrap_or_default(), f.2.len()))
                    .collect();
                divergent.push(json!({"key": key, "sizes-by-node": by_node}));
            }
        }
        let keys_with_adds: BTreeSet<&String> = elems
            .iter()
            .filter(|(_, o)| !o.adds.is_empty())
            .map(|(e, _)| &e.0)
            .collect();
        let missing_final: Vec<&String> = keys_with_adds
            .iter()
            .filter(|k| !finals.contains_key(**k))
            .copied()
            .collect();

        let mut lost = BTreeSet::new();
        let mut remove_wins = BTreeSet::new();
        let mut resurrected = BTreeSet::new();
        let mut add_wins_confirmed = BTreeSet::new();
        let mut add_wins_unconfirmed: Vec<Value> = Vec::new();
        // Elements of the scripted add-wins scenario (ops tagged
        // `meta.scenario = "add-wins"` by the runner).
        let scenario_elems: BTreeSet<Elem> = calls
            .iter()
            .filter(|c| c.inv.meta_str("scenario") == Some(ADD_WINS_SCENARIO))
            .filter(|c| matches!(c.inv.f, F::Add | F::Remove))
            .filter_map(|c| Some((c.inv.key.clone()?, c.inv.value.as_str()?.to_string())))
            .collect();
        let empty = Vec::new();
        for (e, o) in &elems {
            let fs = finals.get(&e.0).unwrap_or(&empty);
            if fs.is_empty() || o.adds.is_empty() {
                continue;
            }
            let live_removes: Vec<&Call<'_>> = o.removes.iter().filter(|r| !r.is_fail()).collect();
            let must_present = o.adds.iter().filter(|a| a.is_ok()).any(|a| {
                live_removes.iter().all(|r| {
                    r.is_ok()
                        && (r.cmp_index() < a.inv.index
                            || match (a.serving_node(), r.serving_node()) {
                                (Some(an), Some(rn)) => {
                                    separated(&windows, &nodes, an, rn, a.inv.time, r.cmp_time())
                                }
                                _ => false,
                            })
                })
            });
            let live_adds: Vec<&Call<'_>> = o.adds.iter().filter(|a| !a.is_fail()).collect();
            let must_absent = !must_present
                && live_adds.len() == 1
                && o.removes.iter().filter(|r| r.is_ok()).any(|r| {
                    let Some(rn) = r.serving_node() else {
                        return false;
                    };
                    reads_in_order
                        .iter()
                        .take_while(|i| **i < r.inv.index)
                        .any(|i| {
                            let (q, members) = &reads[i];
                            q.serving_node() == Some(rn) && members.contains(&e.1)
                        })
                });
            let mut everywhere = true;
            for (_, present, _) in fs {
                let here = present.contains(&e.1);
                everywhere &= here;
                if must_present && !here {
                    if live_removes.is_empty() {
                        lost.insert(elem_name(e));
                    } else {
                        remove_wins.insert(elem_name(e));
                    }
                } else if must_absent && here {
                    resurrected.insert(elem_name(e));
                }
            }
            if must_present && everywhere && !live_removes.is_empty() && o.adds.len() > 1 {
                add_wins_confirmed.insert(elem_name(e));
            }
            if scenario_elems.contains(e) && !add_wins_confirmed.contains(&elem_name(e)) {
                let why = if !must_present {
                    "the scenario's precondition is not in the history: no acknowledged \
                     re-add that a partition certainly kept from an acknowledged remove"
                } else if !everywhere {
                    "the element is missing from a final read"
                } else {
                    "no acknowledged remove ran against the re-add"
                };
                add_wins_unconfirmed.push(json!({"element": elem_name(e), "reason": why}));
            }
        }
        for e in &scenario_elems {
            let name = elem_name(e);
            if !add_wins_confirmed.contains(&name)
                && !add_wins_unconfirmed
                    .iter()
                    .any(|u| u["element"] == json!(name))
            {
                add_wins_unconfirmed.push(json!({"element": name, "reason": "no final read"}));
            }
        }
        let add_wins = if scenario_elems.is_empty() {
            json!({"ran": false,
                   "note": "the scripted add-wins scenario is not in this history (it needs the \
                            set workload and control of the network): add-wins was not confirmed"})
        } else {
            json!({"ran": true,
                   "confirmed": scenario_elems.iter().map(elem_name)
                       .filter(|n| add_wins_confirmed.contains(n)).collect::<Vec<_>>(),
                   "unconfirmed": add_wins_unconfirmed})
        };

        let strong_applicable = strong_any && strong_reads;
        let mut valid = vec![full.valid];
        if strong_applicable {
            valid.push(strong.valid);
        }
        let hard_errors = missed_count > 0
            || !duplicated.is_empty()
            || !unexpected.is_empty()
            || !fail_visible.is_empty()
            || !divergent.is_empty()
            || !lost.is_empty()
            || !remove_wins.is_empty()
            || !resurrected.is_empty();
        valid.push(if hard_errors {
            Validity::False
        } else if !missing_final.is_empty() || !add_wins_unconfirmed.is_empty() {
            Validity::Unknown
        } else {
            Validity::True
        });
        let cap = |s: BTreeSet<String>| -> Vec<String> { s.into_iter().take(MAX_LISTED).collect() };
        let mut r = CheckResult::new(Validity::merge(valid))
            .with("set-full", full.to_json())
            .with("missed-count", missed_count)
            .with("missed", &missed)
            .with("duplicated-count", duplicated.len())
            .with("duplicated", &duplicated)
            .with("unexpected-count", unexpected.len())
            .with("unexpected", cap(unexpected))
            .with("fail-visible-count", fail_visible.len())
            .with("fail-visible", cap(fail_visible))
            .with("recovered-count", recovered)
            .with(
                "final",
                json!({
                    "divergent": divergent,
                    "lost-count": lost.len(),
                    "lost": cap(lost),
                    "remove-wins-count": remove_wins.len(),
                    "remove-wins": cap(remove_wins),
                    "resurrected-count": resurrected.len(),
                    "resurrected": cap(resurrected),
                    "add-wins-confirmed": cap(add_wins_confirmed),
                }),
            )
            .with("add-wins-scenario", add_wins);
        if strong_applicable {
            r.insert("set-full-strong", strong.to_json());
        }
        if !missing_final.is_empty() {
            r.insert("final-reads-missing", &missing_final);
        }
        Ok(r)
    }
}

/// Reads a finding path like `final.lost` as a list of strings (tests, report).
pub fn finding_list(r: &CheckResult, path: &[&str]) -> Vec<String> {
    let mut v: Option<&Value> = r.get(path[0]);
    for p in &path[1..] {
        v = v.and_then(|x| x.get(*p));
    }
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::test_support::H;
    use serde_json::json;

    const K: &str = "set-0";

    fn check(h: &H) -> CheckResult {
        SetChecker.check(&h.build(), &CheckContext::new()).unwrap()
    }

    fn add(h: &mut H, p: u64, m: &str, node: &str, level: Level, outcome: OpType) {
        h.invoke(p, F::Add, K, json!(m)).at(level, node);
        h.push(crate::history::test_support::op(
            p,
            outcome,
            F::Add,
            K,
            json!(m),
        ))
        .at(level, node);
    }
    fn remove(h: &mut H, p: u64, m: &str, node: &str, outcome: OpType) {
        h.invoke(p, F::Remove, K, json!(m)).at(Level::Local, node);
        h.push(crate::history::test_support::op(
            p,
            outcome,
            F::Remove,
            K,
            json!(m),
        ))
        .at(Level::Local, node);
    }
    fn read(h: &mut H, p: u64, node: &str, level: Level, v: &[&str]) {
        h.invoke(p, F::Read, K, Value::Null).at(level, node);
        h.ok(p, F::Read, K, json!(v)).at(level, node);
    }
    fn final_reads(h: &mut H, v: &[&str]) {
        for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
            h.invoke(100 + i as u64, F::Read, K, Value::Null)
                .at(Level::Local, n)
                .with(|o| o.is_final = true);
            h.ok(100 + i as u64, F::Read, K, json!(v))
                .at(Level::Local, n)
                .with(|o| o.is_final = true);
        }
    }

    #[test]
    fn clean_history_passes() {
        let mut h = H::new();
        add(&mut h, 0, "a", "n1", Level::Local, OpType::Ok);
        add(&mut h, 1, "b", "n2", Level::Local, OpType::Info);
        read(&mut h, 2, "n1", Level::Local, &["a", "b"]);
        final_reads(&mut h, &["a", "b"]);
        let r = check(&h);
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        assert_eq!(r.get("recovered-count").unwrap(), &json!(1));
        assert_eq!(r.get("set-full").unwrap()["stable-count"], json!(2));
    }

    /// set-full "lost": known (add ok), then the final reads miss it.
    #[test]
    fn lost_element_is_caught() {
        let mut h = H::new();
        add(&mut h, 0, "a", "n1", Level::Local, OpType::Ok);
        add(&mut h, 1, "b", "n1", Level::Local, OpType::Ok);
        read(&mut h, 2, "n1", Level::Local, &["a", "b"]);
        final_reads(&mut h, &["b"]);
        let r = check(&h);
        assert_eq!(r.valid, Validity::False);
        assert_eq!(finding_list(&r, &["set-full", "lost"]), vec!["set-0/a"]);
        assert_eq!(finding_list(&r, &["final", "lost"]), vec!["set-0/a"]);
        assert!(r.get("set-full").unwrap()["lost-latencies"].is_object());
    }

    /// A lagging local read elsewhere, then a remove: not lost (nothing
    /// promised that read the element, and no later read had to show it
    /// again). The same miss on the acknowledging node is `missed`.
    #[test]
    fn lagging_read_then_remove_is_not_lost_but_a_promised_miss_is() {
        let mut base = H::new();
        add(&mut base, 0, "a", "n1", Level::Local, OpType::Ok);
        add(&mut base, 0, "b", "n1", Level::Local, OpType::Ok);
        read(&mut base, 1, "n1", Level::Local, &["a", "b"]);
        let mut h = H {
            ops: base.ops.clone(),
        };
        read(&mut h, 2, "n2", Level::Local, &[]); // n2 lags: allowed
        remove(&mut h, 1, "a", "n1", OpType::Ok);
        final_reads(&mut h, &["b"]);
        let r = check(&h);
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        let sf = r.get("set-full").unwrap();
        assert_eq!(sf["lost-count"], json!(0));
        assert_eq!(sf["removed-unsettled-count"], json!(1));
        let mut h = H {
            ops: base.ops.clone(),
        };
        read(&mut h, 2, "n1", Level::Local, &["b"]); // n1 acknowledged a
        remove(&mut h, 1, "a", "n1", OpType::Ok);
        final_reads(&mut h, &["b"]);
        let r = check(&h);
        assert_eq!(r.valid, Validity::False);
        assert_eq!(r.get("missed-count").unwrap(), &json!(1));
        assert_eq!(r.get("missed").unwrap()[0]["element"], json!("set-0/a"));
    }

    /// A read concurrent with the add that misses it is never-read, not lost
    /// (Jepsen's second asymmetry).
    #[test]
    fn concurrent_miss_is_not_lost() {
        let mut h = H::new();
        h.invoke(0, F::Add, K, json!("a"));
        h.invoke(1, F::Read, K, Value::Null);
        h.ok(1, F::Read, K, json!([]));
        h.ok(0, F::Add, K, json!("a"));
        let r = check(&h);
        let sf = r.get("set-full").unwrap();
        assert_eq!(sf["never-read"], json!(["set-0/a"]));
        assert_eq!(sf["lost-count"], json!(0));
        assert_eq!(sf["valid"], json!("unknown"), "nothing stable");
    }

    /// Stale quorum read: allowed for set-full, invalid for set-full-strong.
    #[test]
    fn stale_strong_read_is_invalid_but_stale_local_is_not() {
        let mut h = H::new();
        add(&mut h, 0, "a", "n1", Level::Quorum, OpType::Ok);
        read(&mut h, 1, "n2", Level::Quorum, &[]); // begun after a was known
        read(&mut h, 1, "n2", Level::Quorum, &["a"]);
        final_reads(&mut h, &["a"]);
        let r = check(&h);
        assert_eq!(r.valid, Validity::False);
        let sf = r.get("set-full").unwrap();
        assert_eq!(sf["valid"], json!(true), "stale is allowed in set-full");
        assert_eq!(sf["stale"], json!(["set-0/a"]));
        assert_eq!(sf["worst-stale"][0]["element"], json!("set-0/a"));
        let strong = r.get("set-full-strong").unwrap();
        assert_eq!(strong["valid"], json!(false));
        assert_eq!(strong["stale-count"], json!(1));

        // The same at local level: valid.
        let mut h = H::new();
        add(&mut h, 0, "a", "n1", Level::Local, OpType::Ok);
        read(&mut h, 1, "n2", Level::Local, &[]);
        read(&mut h, 1, "n2", Level::Local, &["a"]);
        final_reads(&mut h, &["a"]);
        let r = check(&h);
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        assert!(r.get("set-full-strong").is_none());
    }

    #[test]
    fn duplicates_in_one_read_are_errors() {
        let mut h = H::new();
        add(&mut h, 0, "a", "n1", Level::Local, OpType::Ok);
        read(&mut h, 1, "n1", Level::Local, &["a", "a"]);
        final_reads(&mut h, &["a"]);
        let r = check(&h);
        assert_eq!(r.valid, Validity::False);
        assert_eq!(r.get("duplicated").unwrap(), &json!({"set-0/a": 2}));
    }

    #[test]
    fn unexpected_and_fail_visible_are_errors() {
        let mut h = H::new();
        add(&mut h, 0, "a", "n1", Level::Local, OpType::Fail);
        read(&mut h, 1, "n1", Level::Local, &["a", "zz"]);
        let r = check(&h);
        assert_eq!(r.valid, Validity::False);
        assert_eq!(finding_list(&r, &["unexpected"]), vec!["set-0/zz"]);
        assert_eq!(finding_list(&r, &["fail-visible"]), vec!["set-0/a"]);
    }

    #[test]
    fn final_divergence_is_an_error() {
        let mut h = H::new();
        add(&mut h, 0, "a", "n1", Level::Local, OpType::Info);
        for (i, (n, v)) in [("n1", vec!["a"]), ("n2", vec![])].iter().enumerate() {
            h.invoke(10 + i as u64, F::Read, K, Value::Null)
                .at(Level::Local, n)
                .with(|o| o.is_final = true);
            h.ok(10 + i as u64, F::Read, K, json!(v))
                .at(Level::Local, n)
                .with(|o| o.is_final = true);
        }
        let r = check(&h);
        assert_eq!(r.valid, Validity::False);
        assert_eq!(r.get("final").unwrap()["divergent"][0]["key"], json!(K));
    }

    /// Removed after a read on the same node saw it, yet back after heal.
    #[test]
    fn resurrected_element_is_caught() {
        let mut h = H::new();
        add(&mut h, 0, "a", "n1", Level::Local, OpType::Ok);
        read(&mut h, 1, "n2", Level::Local, &["a"]);
        remove(&mut h, 1, "a", "n2", OpType::Ok);
        read(&mut h, 1, "n2", Level::Local, &[]);
        final_reads(&mut h, &["a"]);
        let r = check(&h);
        assert_eq!(r.valid, Validity::False);
        assert_eq!(finding_list(&r, &["final", "resurrected"]), vec!["set-0/a"]);
        // set-full ignores reads after the remove, so it does not call it lost.
        assert_eq!(r.get("set-full").unwrap()["lost-count"], json!(0));

        // Clean: absent after heal.
        let mut h = H::new();
        add(&mut h, 0, "a", "n1", Level::Local, OpType::Ok);
        read(&mut h, 1, "n2", Level::Local, &["a"]);
        remove(&mut h, 1, "a", "n2", OpType::Ok);
        final_reads(&mut h, &[]);
        let r = check(&h);
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());

        // An indeterminate remove allows either outcome.
        let mut h = H::new();
        add(&mut h, 0, "a", "n1", Level::Local, OpType::Ok);
        read(&mut h, 1, "n2", Level::Local, &["a"]);
        remove(&mut h, 1, "a", "n2", OpType::Info);
        final_reads(&mut h, &["a"]);
        assert_eq!(check(&h).valid, Validity::True);

        // A remove on a node never seen holding the element proves nothing.
        let mut h = H::new();
        add(&mut h, 0, "a", "n1", Level::Local, OpType::Ok);
        read(&mut h, 1, "n2", Level::Local, &["a"]);
        remove(&mut h, 2, "a", "n3", OpType::Ok);
        final_reads(&mut h, &["a"]);
        assert_eq!(check(&h).valid, Validity::True);
    }

    /// The add-wins scenario: add e; partition {n1} | {n2, n3}; re-add e on
    /// n2, then remove e on n1 (which saw the first add); heal. The re-add's
    /// dot never reached n1, so the remove cannot cancel it: e must survive.
    /// The scenario as the runner scripts it, its ops tagged; `partition`:
    /// whether the partition is recorded, `re_add`: the re-add's outcome.
    fn add_wins_history(final_value: &[&str], partition: bool, re_add: OpType) -> H {
        let tag = |h: &mut H| {
            let n = h.ops.len();
            for o in &mut h.ops[n - 2..] {
                if o.is_invoke() {
                    o.meta = Some(json!({"scenario": ADD_WINS_SCENARIO}));
                }
            }
        };
        let mut h = H::new();
        add(&mut h, 0, "e", "n1", Level::Local, OpType::Ok);
        tag(&mut h);
        read(&mut h, 0, "n2", Level::Local, &["e"]);
        read(&mut h, 0, "n1", Level::Local, &["e"]);
        if partition {
            h.nemesis(F::StartPartition, json!("one"));
            h.nemesis(
                F::StartPartition,
                json!({"grudge": {"n1": ["n2", "n3"], "n2": ["n1"], "n3": ["n1"]}}),
            );
        }
        add(&mut h, 1, "e", "n2", Level::Local, re_add);
        tag(&mut h);
        remove(&mut h, 0, "e", "n1", OpType::Ok);
        tag(&mut h);
        if partition {
            h.nemesis(F::StopPartition, Value::Null);
            h.nemesis(F::StopPartition, json!("network-healed"));
        }
        final_reads(&mut h, final_value);
        h
    }

    fn add_wins_scenario(final_value: &[&str]) -> CheckResult {
        check(&add_wins_history(final_value, true, OpType::Ok))
    }

    #[test]
    fn remove_wins_is_caught_and_add_wins_passes() {
        let r = add_wins_scenario(&[]);
        assert_eq!(r.valid, Validity::False);
        assert_eq!(finding_list(&r, &["final", "remove-wins"]), vec!["set-0/e"]);
        let r = add_wins_scenario(&["e"]);
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        assert_eq!(
            finding_list(&r, &["final", "add-wins-confirmed"]),
            vec!["set-0/e"]
        );
        let s = r.get("add-wins-scenario").unwrap();
        assert_eq!(s["ran"], json!(true));
        assert_eq!(s["confirmed"], json!(["set-0/e"]));
    }

    /// The scenario ran but proves nothing (no partition recorded, so the
    /// remove may have seen the re-add; or the re-add is indeterminate): the
    /// element survived, yet add-wins is not confirmed — unknown, not
    /// valid. Without the scenario at all the report says it did not run.
    #[test]
    fn add_wins_scenario_must_confirm_when_it_ran() {
        for (partition, re_add) in [(false, OpType::Ok), (true, OpType::Info)] {
            let h = add_wins_history(&["e"], partition, re_add);
            let r = check(&h);
            assert_eq!(r.valid, Validity::Unknown, "{}", r.to_json());
            let s = r.get("add-wins-scenario").unwrap();
            assert_eq!(s["ran"], json!(true));
            assert_eq!(s["confirmed"], json!([]));
            assert_eq!(s["unconfirmed"][0]["element"], json!("set-0/e"));
            assert!(
                s["unconfirmed"][0]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("precondition")
            );
            // Untagged, the same ops are ordinary workload ops: valid, and
            // the report says the scenario did not run.
            let mut h = H { ops: h.ops.clone() };
            for o in &mut h.ops {
                o.meta = None;
            }
            let r = check(&h);
            assert_eq!(r.valid, Validity::True, "{}", r.to_json());
            assert_eq!(r.get("add-wins-scenario").unwrap()["ran"], json!(false));
        }
        // Tagged but no final read of its key.
        let mut h = add_wins_history(&["e"], true, OpType::Ok);
        h.ops.retain(|o| !o.is_final);
        let r = check(&h);
        assert_eq!(r.valid, Validity::Unknown);
        assert_eq!(
            r.get("add-wins-scenario").unwrap()["unconfirmed"][0]["reason"],
            json!("no final read")
        );
    }

    /// Without the partition, the remove (after the re-add completed) may have
    /// seen both dots: absence is allowed.
    #[test]
    fn re_add_seen_by_a_later_remove_may_be_removed() {
        let mut h = H::new();
        add(&mut h, 0, "e", "n1", Level::Local, OpType::Ok);
        read(&mut h, 0, "n1", Level::Local, &["e"]);
        add(&mut h, 1, "e", "n2", Level::Local, OpType::Ok);
        remove(&mut h, 0, "e", "n1", OpType::Ok);
        final_reads(&mut h, &[]);
        assert_eq!(check(&h).valid, Validity::True);
    }

    #[test]
    fn frequency_distribution_matches_jepsen() {
        let d = frequency_distribution(&[0.0, 0.5, 1.0], &[5, 1, 3, 2, 4]).unwrap();
        assert_eq!(d["0"], 1);
        assert_eq!(d["0.5"], 3);
        assert_eq!(d["1"], 5);
        assert!(frequency_distribution(&[0.5], &[]).is_none());
    }
}
