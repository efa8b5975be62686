//! The `leader` session checker: read-your-writes and monotonic reads.
//!
//! docs/architecture.md §7 promises, for `leader`: "read-your-writes and
//! monotonic reads for everyone routed to the same leader". A `leader`
//! request is served by the object's leader, and the reply names it
//! (`meta.node`); the leader answers from its own state, which only grows
//! (CRDT joins) while its process lives. So, for every ok non-final read r2
//! at `leader` served by node L:
//!
//! * **monotonic-reads**: r2 reflects everything an earlier `leader` read r1
//!   served by L reflected, where r1 completed before r2 was invoked — by
//!   any process (everyone routed to L shares L's state, so this includes
//!   every (process, leader) session) — unless L was killed in between:
//!   a restarted leader may have lost applied but not yet durable deltas
//!   (they come back by anti-entropy), so it starts a new incarnation.
//!   Failovers in between do not excuse anything: L's own state still only
//!   grew. Pauses do not either.
//! * **read-your-writes**: r2 reflects every acknowledged write of its own
//!   process served by L (at `local` or `leader`) that completed before r2
//!   was invoked. (The workload checkers apply the same rule across
//!   processes, see [`super::counter::must_observe`]; here it is reported
//!   per session.)
//!
//! "Reflects", per type:
//!
//! * register: r2's `(hlc.time, hlc.node)` ≥ r1's / the write's (a null read
//!   is older than any value). A read without `meta.hlc` takes the
//!   timestamp of its value's write (values are unique), as the register
//!   checker does; a read whose timestamp is nowhere in the history is
//!   `unresolved` when it had something to be compared with.
//! * set: every member r1 returned (every member the process added) is in
//!   r2, unless a remove of it (not known to fail) was invoked before r2
//!   completed.
//! * counter: r2's value must be `Σ (adds r1 showed ∪ adds promised to r2)
//!   + a subset of the other adds r2 may see`. Which adds r1 showed is
//!   exact with the workload's ± distinct powers of two (one subset per
//!   sum); with other deltas only the adds promised to r1 are carried over
//!   (sound, weaker). A value the range set cannot decide (coarsened) is
//!   `unknown`.
//!
//! Valid iff no violation; `unknown` if some read could not be judged
//! (`unresolved-count`). Sessions seen, `(process, leader)`, are counted.
//! It cannot see: anything at other levels (not promised), reads whose
//! leader was restarted in between, and (counters with arbitrary deltas)
//! which optional adds an earlier read showed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::{Value, json};

use super::counter::{self, read_bounds};
use super::faults::{self, Family, Window};
use super::ranges::Membership;
use super::{CheckContext, CheckResult, Checker, MAX_LISTED, Validity};
use crate::history::{Call, F, History, Hlc, Level, Process, WorkloadKind};

/// The session checker (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct SessionChecker;

/// Kill windows and the nodes they name (none named: every node).
struct Restarts<'w> {
    kills: Vec<(&'w Window, BTreeSet<String>)>,
}

impl<'w> Restarts<'w> {
    fn new(windows: &'w [Window]) -> Restarts<'w> {
        Restarts {
            kills: windows
                .iter()
                .filter(|w| w.family == Family::Kill)
                .map(|w| {
                    let nodes = w
                        .value
                        .as_object()
                        .map(|o| o.keys().cloned().collect())
                        .unwrap_or_default();
                    (w, nodes)
                })
                .collect(),
        }
    }

    /// Whether `node` may have been killed during `[t0, t1]`.
    fn between(&self, node: &str, t0: u64, t1: u64) -> bool {
        self.last_end_before(node, t1).is_some_and(|end| t0 <= end)
    }

    /// The latest end of a kill window of `node` that began by `t`: a read
    /// invoked after it is of the current incarnation.
    fn last_end_before(&self, node: &str, t: u64) -> Option<u64> {
        self.kills
            .iter()
            .filter(|(w, nodes)| (nodes.is_empty() || nodes.contains(node)) && w.shade_start <= t)
            .map(|(w, _)| w.shade_end)
            .max()
    }
}

/// Findings, shared by the three types.
#[derive(Default)]
struct Findings {
    monotonic: Vec<Value>,
    monotonic_count: usize,
    ryw: Vec<Value>,
    ryw_count: usize,
    unresolved: Vec<Value>,
    unresolved_count: usize,
    sessions: BTreeSet<(Process, String)>,
    reads: usize,
}

impl Findings {
    fn monotonic(&mut self, v: Value) {
        self.monotonic_count += 1;
        if self.monotonic.len() < MAX_LISTED {
            self.monotonic.push(v);
        }
    }
    fn ryw(&mut self, v: Value) {
        self.ryw_count += 1;
        if self.ryw.len() < MAX_LISTED {
            self.ryw.push(v);
        }
    }
    fn unresolved(&mut self, v: Value) {
        self.unresolved_count += 1;
        if self.unresolved.len() < MAX_LISTED {
            self.unresolved.push(v);
        }
    }
}

fn is_leader_read(c: &Call<'_>) -> bool {
    c.inv.f == F::Read && c.is_ok() && !c.inv.is_final && c.level() == Some(Level::Leader)
}

/// An acknowledged write of `r2`'s own process, served by `leader` at a
/// level that promises it to a leader read there, completed before `r2`.
fn own_write(w: &Call<'_>, r2: &Call<'_>, leader: &str) -> bool {
    w.is_ok()
        && w.inv.process == r2.inv.process
        && w.cmp_index() < r2.inv.index
        && matches!(w.level(), Some(Level::Local | Level::Leader))
        && w.serving_node() == Some(leader)
}

fn read_json(c: &Call<'_>) -> Value {
    json!({"index": c.inv.index, "process": c.inv.process, "value": c.result().value})
}

/// Leader reads of one key, by serving node, in invocation order.
fn by_leader<'a, 'c>(calls: &'c [Call<'a>]) -> BTreeMap<&'a str, Vec<&'c Call<'a>>> {
    let mut m: BTreeMap<&str, Vec<&Call<'_>>> = BTreeMap::new();
    for c in calls.iter().filter(|c| is_leader_read(c)) {
        if let Some(n) = c.serving_node() {
            m.entry(n).or_default().push(c);
        }
    }
    m
}

/// Whether `r2` must reflect the earlier read `r1` on the same leader:
/// `r1` completed before `r2` was invoked, and the leader was not killed
/// in between.
fn precedes(r1: &Call<'_>, r2: &Call<'_>, leader: &str, restarts: &Restarts<'_>) -> bool {
    r1.cmp_index() < r2.inv.index && !restarts.between(leader, r1.inv.time, r2.result().time)
}

fn check_registers(
    calls: &[Call<'_>],
    restarts: &Restarts<'_>,
    out: &mut Findings,
) -> anyhow::Result<()> {
    let mut by_key: BTreeMap<&str, Vec<Call<'_>>> = BTreeMap::new();
    for c in calls {
        if let Some(key) = c.inv.key.as_deref()
            && WorkloadKind::of_key(key) == Some(WorkloadKind::Register)
            && matches!(c.inv.f, F::Write | F::Read)
        {
            c.required_level()?;
            by_key.entry(key).or_default().push(*c);
        }
    }
    for (key, calls) in &by_key {
        // The timestamp each value was written with.
        let mut ts_of: HashMap<&str, Hlc> = HashMap::new();
        for c in calls.iter().filter(|c| c.inv.f == F::Write && c.is_ok()) {
            if let (Some(v), Some(h)) = (c.inv.value.as_str(), c.result().hlc()) {
                ts_of.insert(v, h);
            }
        }
        for c in calls.iter().filter(|c| c.inv.f == F::Read && c.is_ok()) {
            if let (Some(v), Some(h)) = (c.result().value.as_str(), c.result().hlc()) {
                ts_of.entry(v).or_insert(h);
            }
        }
        // None: unresolved; Some(None): null (never written).
        let ts = |c: &Call<'_>| -> Option<Option<Hlc>> {
            let res = c.result();
            match (res.value.as_str(), res.hlc()) {
                (_, Some(h)) => Some(Some(h)),
                (None, None) => Some(None),
                (Some(v), None) => ts_of.get(v).map(|h| Some(*h)),
            }
        };
        for (leader, rs) in by_leader(calls) {
            for r2 in &rs {
                out.reads += 1;
                out.sessions.insert((r2.inv.process, leader.to_string()));
                let before: Vec<&&Call<'_>> = rs
                    .iter()
                    .filter(|r1| precedes(r1, r2, leader, restarts))
                    .collect();
                let own: Vec<&Call<'_>> = calls
                    .iter()
                    .filter(|w| w.inv.f == F::Write && own_write(w, r2, leader))
                    .collect();
                let Some(t2) = ts(r2) else {
                    let v2 = &r2.result().value;
                    if before.iter().any(|r1| r1.result().value != *v2)
                        || own.iter().any(|w| w.inv.value != *v2)
                    {
                        out.unresolved(
                            json!({"key": key, "leader": leader, "read": read_json(r2)}),
                        );
                    }
                    continue;
                };
                if let Some((t1, r1)) = before
                    .iter()
                    .filter_map(|r1| ts(r1).map(|t| (t, r1)))
                    .max_by_key(|(t, _)| *t)
                    && t1 > t2
                {
                    out.monotonic(json!({
                        "type": "register", "key": key, "leader": leader,
                        "read": read_json(r2), "hlc": t2,
                        "earlier-read": read_json(r1), "earlier-hlc": t1,
                    }));
                }
                for w in own {
                    let wt = w
                        .result()
                        .hlc()
                        .or_else(|| w.inv.value.as_str().and_then(|v| ts_of.get(v).copied()));
                    if let Some(wt) = wt
                        && t2 < Some(wt)
                    {
                        out.ryw(json!({
                            "type": "register", "key": key, "leader": leader,
                            "read": read_json(r2), "hlc": t2,
                            "write": {"index": w.inv.index, "value": w.inv.value, "hlc": wt},
                        }));
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_sets(
    calls: &[Call<'_>],
    restarts: &Restarts<'_>,
    out: &mut Findings,
) -> anyhow::Result<()> {
    let mut by_key: BTreeMap<&str, Vec<Call<'_>>> = BTreeMap::new();
    for c in calls {
        if let Some(key) = c.inv.key.as_deref()
            && WorkloadKind::of_key(key) == Some(WorkloadKind::Set)
            && matches!(c.inv.f, F::Add | F::Remove | F::Read)
        {
            c.required_level()?;
            by_key.entry(key).or_default().push(*c);
        }
    }
    for (key, calls) in &by_key {
        let mut removes: HashMap<&str, Vec<&Call<'_>>> = HashMap::new();
        for c in calls
            .iter()
            .filter(|c| c.inv.f == F::Remove && !c.is_fail())
        {
            if let Some(m) = c.inv.value.as_str() {
                removes.entry(m).or_default().push(c);
            }
        }
        let members = |c: &Call<'_>| -> anyhow::Result<HashSet<String>> {
            let arr = c.result().value.as_array().ok_or_else(|| {
                anyhow::anyhow!("set read {} did not return a list", c.result().index)
            })?;
            Ok(arr
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect())
        };
        for (leader, rs) in by_leader(calls) {
            let sets: Vec<HashSet<String>> =
                rs.iter().map(|c| members(c)).collect::<Result<_, _>>()?;
            // Sweep: reads in completion order feed, per member, the latest
            // invocation time of a completed read that showed it (and which
            // read that was); r2 must show every member whose latest sighting
            // began after the leader's last restart before r2 completed.
            let mut by_cmp: Vec<usize> = (0..rs.len()).collect();
            by_cmp.sort_by_key(|i| rs[*i].cmp_index());
            let mut fed = 0;
            let mut last_seen: HashMap<&str, (u64, usize)> = HashMap::new();
            for (j, r2) in rs.iter().enumerate() {
                while fed < by_cmp.len() && rs[by_cmp[fed]].cmp_index() < r2.inv.index {
                    let i = by_cmp[fed];
                    for m in &sets[i] {
                        let e = last_seen.entry(m.as_str()).or_insert((0, i));
                        if rs[i].inv.time >= e.0 {
                            *e = (rs[i].inv.time, i);
                        }
                    }
                    fed += 1;
                }
                out.reads += 1;
                out.sessions.insert((r2.inv.process, leader.to_string()));
                let removed = |m: &str| {
                    removes
                        .get(m)
                        .is_some_and(|xs| xs.iter().any(|x| x.inv.index < r2.cmp_index()))
                };
                let s2 = &sets[j];
                let cutoff = restarts.last_end_before(leader, r2.result().time);
                let mut missing: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
                for (m, (t, i)) in &last_seen {
                    if cutoff.is_none_or(|c| *t > c) && !s2.contains(*m) && !removed(m) {
                        missing.entry(*i).or_default().push(m);
                    }
                }
                for (i, mut ms) in missing {
                    ms.sort_unstable();
                    let n = ms.len();
                    ms.truncate(8);
                    let r1 = rs[i];
                    out.monotonic(json!({
                        "type": "set", "key": key, "leader": leader,
                        "read": {"index": r2.inv.index, "process": r2.inv.process},
                        "earlier-read": {"index": r1.inv.index, "process": r1.inv.process},
                        "missing": ms, "missing-count": n,
                    }));
                }
                for w in calls
                    .iter()
                    .filter(|w| w.inv.f == F::Add && own_write(w, r2, leader))
                {
                    if let Some(m) = w.inv.value.as_str()
                        && !s2.contains(m)
                        && !removed(m)
                    {
                        out.ryw(json!({
                            "type": "set", "key": key, "leader": leader,
                            "read": {"index": r2.inv.index, "process": r2.inv.process},
                            "add": {"index": w.inv.index, "member": m},
                        }));
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_counters(
    history: &History,
    restarts: &Restarts<'_>,
    out: &mut Findings,
) -> anyhow::Result<()> {
    let keys = counter::collect(history)?;
    let none = BTreeSet::new();
    for (key, k) in &keys {
        let mut by_node: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, r) in k.reads.iter().enumerate() {
            if is_leader_read(&r.call)
                && let Some(n) = r.call.serving_node()
            {
                by_node.entry(n).or_default().push(i);
            }
        }
        // The adds each leader read showed: exact when decodable, else
        // those promised to it.
        let mut shown: HashMap<usize, BTreeSet<usize>> = HashMap::new();
        for i in by_node.values().flatten() {
            let r = &k.reads[*i];
            let b = read_bounds(&k.adds, r, &none);
            let vis = b
                .visible(r.value)
                .unwrap_or_else(|| b.must.iter().copied().collect());
            shown.insert(*i, vis);
        }
        for (leader, idxs) in &by_node {
            for i2 in idxs {
                let r2 = &k.reads[*i2];
                out.reads += 1;
                out.sessions
                    .insert((r2.call.inv.process, leader.to_string()));
                let own: BTreeSet<usize> = k
                    .adds
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| own_write(&a.call, &r2.call, leader))
                    .map(|(i, _)| i)
                    .collect();
                let v2 = r2.value;
                match read_bounds(&k.adds, r2, &own).sums.membership(v2) {
                    Membership::No => {
                        out.ryw(json!({
                            "type": "counter", "key": key, "leader": leader,
                            "read": read_json(&r2.call),
                            "own-adds": own.iter().map(|i| k.adds[*i].call.inv.index).collect::<Vec<_>>(),
                        }));
                        continue;
                    }
                    Membership::Unknown => {
                        out.unresolved(
                            json!({"key": key, "leader": leader, "read": read_json(&r2.call)}),
                        );
                        continue;
                    }
                    Membership::Yes => {}
                }
                let before: Vec<usize> = idxs
                    .iter()
                    .copied()
                    .filter(|i1| precedes(&k.reads[*i1].call, &r2.call, leader, restarts))
                    .collect();
                let mut known = own.clone();
                for i1 in &before {
                    known.extend(shown[i1].iter().copied());
                }
                match read_bounds(&k.adds, r2, &known).sums.membership(v2) {
                    Membership::Yes => {}
                    Membership::Unknown => {
                        out.unresolved(
                            json!({"key": key, "leader": leader, "read": read_json(&r2.call)}),
                        );
                    }
                    Membership::No => {
                        // Name one earlier read it contradicts, if one alone does.
                        let witness = before.iter().find(|i1| {
                            read_bounds(&k.adds, r2, &shown[*i1]).sums.membership(v2)
                                == Membership::No
                        });
                        out.monotonic(json!({
                            "type": "counter", "key": key, "leader": leader,
                            "read": read_json(&r2.call),
                            "earlier-read": witness.map(|i1| read_json(&k.reads[*i1].call)),
                            "earlier-read-count": before.len(),
                        }));
                    }
                }
            }
        }
    }
    Ok(())
}

impl Checker for SessionChecker {
    fn name(&self) -> &'static str {
        "session"
    }

    fn check(&self, history: &History, _ctx: &CheckContext) -> anyhow::Result<CheckResult> {
        let windows = faults::windows(history);
        let restarts = Restarts::new(&windows);
        let calls = history.calls();
        let mut out = Findings::default();
        check_registers(&calls, &restarts, &mut out)?;
        check_sets(&calls, &restarts, &mut out)?;
        check_counters(history, &restarts, &mut out)?;
        let valid = if out.monotonic_count > 0 || out.ryw_count > 0 {
            Validity::False
        } else if out.unresolved_count > 0 {
            Validity::Unknown
        } else {
            Validity::True
        };
        Ok(CheckResult::new(valid)
            .with("leader-read-count", out.reads)
            .with("session-count", out.sessions.len())
            .with("monotonic-read-violation-count", out.monotonic_count)
            .with("monotonic-read-violations", &out.monotonic)
            .with("read-your-writes-violation-count", out.ryw_count)
            .with("read-your-writes-violations", &out.ryw)
            .with("unresolved-count", out.unresolved_count)
            .with("unresolved", &out.unresolved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::test_support::H;
    use crate::history::{F, OpType};

    fn check(h: &H) -> CheckResult {
        SessionChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap()
    }

    /// A `leader` read by process `p` sent to node `via`, answered by
    /// `leader` with value `v` (and, for registers, `hlc`).
    fn leader_read(
        h: &mut H,
        p: u64,
        key: &str,
        via: &str,
        leader: &str,
        v: Value,
        ts: Option<u64>,
    ) {
        h.invoke(p, F::Read, key, Value::Null)
            .at(Level::Leader, via);
        h.ok(p, F::Read, key, v).at(Level::Leader, via).with(|o| {
            let mut m = json!({"node": leader});
            if let Some(t) = ts {
                m["hlc"] = json!({"time": t, "node": 1});
            }
            o.meta = Some(m);
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        h: &mut H,
        p: u64,
        f: F,
        key: &str,
        level: Level,
        node: &str,
        v: Value,
        ts: Option<u64>,
    ) {
        h.invoke(p, f, key, v.clone()).at(level, node);
        h.push(crate::history::test_support::op(p, OpType::Ok, f, key, v))
            .at(level, node)
            .with(|o| {
                let mut m = json!({"node": node});
                if let Some(t) = ts {
                    m["hlc"] = json!({"time": t, "node": 1});
                }
                o.meta = Some(m);
            });
    }

    fn kill_and_restart(h: &mut H, node: &str) {
        h.nemesis(F::Kill, json!({"nodes": [node]}))
            .nemesis(F::Kill, json!({node: {"killed_pid": 1}}))
            .nemesis(F::Start, json!("all"))
            .nemesis(F::Start, json!({node: {"started_pid": 2}}));
    }

    fn count(r: &CheckResult, what: &str) -> u64 {
        r.get(&format!("{what}-violation-count"))
            .and_then(Value::as_u64)
            .unwrap()
    }

    const R: &str = "register-long-1";

    #[test]
    fn register_reads_on_one_leader_never_go_back() {
        let base = |h: &mut H| {
            write(h, 0, F::Write, R, Level::Quorum, "n3", json!("a"), Some(10));
            write(h, 0, F::Write, R, Level::Quorum, "n3", json!("b"), Some(20));
            leader_read(h, 1, R, "n1", "n1", json!("b"), Some(20));
        };
        // Later read on the same leader (another process, another entry
        // node) returns the older a: not monotonic.
        let mut h = H::new();
        base(&mut h);
        leader_read(&mut h, 2, R, "n2", "n1", json!("a"), Some(10));
        let r = check(&h);
        assert_eq!(r.valid, Validity::False, "{}", r.to_json());
        assert_eq!(count(&r, "monotonic-read"), 1);
        let v = &r.get("monotonic-read-violations").unwrap()[0];
        assert_eq!(
            (v["leader"].clone(), v["earlier-read"]["value"].clone()),
            (json!("n1"), json!("b"))
        );
        // Without meta.hlc: judged by the timestamps the writes were acked with.
        let mut h2 = H { ops: h.ops.clone() };
        for o in h2.ops.iter_mut().filter(|o| o.f == F::Read) {
            o.meta = Some(json!({"node": "n1"}));
        }
        assert_eq!(count(&check(&h2), "monotonic-read"), 1);
        // On another leader (a failover): not promised.
        let mut h = H::new();
        base(&mut h);
        leader_read(&mut h, 2, R, "n2", "n2", json!("a"), Some(10));
        assert_eq!(check(&h).valid, Validity::True);
        // The leader was killed and restarted in between: a new incarnation.
        let mut h = H::new();
        base(&mut h);
        kill_and_restart(&mut h, "n1");
        leader_read(&mut h, 2, R, "n2", "n1", json!("a"), Some(10));
        let r = check(&h);
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        // A concurrent earlier read (not completed before) proves nothing.
        let mut h = H::new();
        write(
            &mut h,
            0,
            F::Write,
            R,
            Level::Quorum,
            "n3",
            json!("a"),
            Some(10),
        );
        h.invoke(2, F::Read, R, Value::Null).at(Level::Leader, "n2");
        leader_read(&mut h, 1, R, "n1", "n1", json!("b"), Some(20));
        h.ok(2, F::Read, R, json!("a"))
            .at(Level::Leader, "n2")
            .with(|o| o.meta = Some(json!({"node": "n1", "hlc": {"time": 10, "node": 1}})));
        assert_eq!(check(&h).valid, Validity::True);
    }

    #[test]
    fn register_read_your_writes_per_session() {
        let mut h = H::new();
        write(
            &mut h,
            0,
            F::Write,
            R,
            Level::Quorum,
            "n3",
            json!("a"),
            Some(10),
        );
        write(
            &mut h,
            1,
            F::Write,
            R,
            Level::Leader,
            "n1",
            json!("b"),
            Some(20),
        );
        leader_read(&mut h, 1, R, "n2", "n1", json!("a"), Some(10));
        let r = check(&h);
        assert_eq!(r.valid, Validity::False);
        assert_eq!(count(&r, "read-your-writes"), 1);
        assert_eq!(r.get("session-count").unwrap(), &json!(1));
        // Another process's read of that leader is not this session's RYW
        // (the register checker's promise rule covers it).
        let mut h = H::new();
        write(
            &mut h,
            0,
            F::Write,
            R,
            Level::Quorum,
            "n3",
            json!("a"),
            Some(10),
        );
        write(
            &mut h,
            1,
            F::Write,
            R,
            Level::Leader,
            "n1",
            json!("b"),
            Some(20),
        );
        leader_read(&mut h, 2, R, "n2", "n1", json!("a"), Some(10));
        assert_eq!(count(&check(&h), "read-your-writes"), 0);
    }

    #[test]
    fn set_reads_on_one_leader_keep_members_unless_removed() {
        const S: &str = "set-0";
        let base = |h: &mut H| {
            write(h, 0, F::Add, S, Level::Local, "n3", json!("e1"), None);
            write(h, 0, F::Add, S, Level::Local, "n3", json!("e2"), None);
            leader_read(h, 1, S, "n1", "n1", json!(["e1", "e2"]), None);
        };
        let mut h = H::new();
        base(&mut h);
        leader_read(&mut h, 1, S, "n1", "n1", json!(["e1"]), None);
        let r = check(&h);
        assert_eq!(r.valid, Validity::False);
        assert_eq!(
            r.get("monotonic-read-violations").unwrap()[0]["missing"],
            json!(["e2"])
        );
        // A remove of e2 invoked before the second read completed: fine.
        let mut h = H::new();
        base(&mut h);
        h.invoke(3, F::Remove, S, json!("e2"))
            .at(Level::Local, "n2");
        leader_read(&mut h, 1, S, "n1", "n1", json!(["e1"]), None);
        assert_eq!(check(&h).valid, Validity::True);
        // Read-your-writes: the process's own add via the leader.
        let mut h = H::new();
        write(&mut h, 4, F::Add, S, Level::Leader, "n1", json!("e3"), None);
        leader_read(&mut h, 4, S, "n2", "n1", json!([]), None);
        assert_eq!(count(&check(&h), "read-your-writes"), 1);
    }

    #[test]
    fn counter_reads_on_one_leader_keep_the_adds_they_showed() {
        const C: &str = "counter-0";
        // +1 and +2 acknowledged on n3 (local): a leader read on n1 need not
        // see them, but once it showed both (3), a later one there showing
        // only +2 lost one — invisible to the counter checker's bounds
        // (2 ∈ {0, 1, 2, 3}), caught here because the deltas are distinct
        // powers of two.
        let base = |h: &mut H| {
            write(h, 0, F::Add, C, Level::Local, "n3", json!(1), None);
            write(h, 0, F::Add, C, Level::Local, "n3", json!(2), None);
            leader_read(h, 1, C, "n1", "n1", json!(3), None);
        };
        let mut h = H::new();
        base(&mut h);
        leader_read(&mut h, 2, C, "n2", "n1", json!(2), None);
        let r = check(&h);
        assert_eq!(r.valid, Validity::False, "{}", r.to_json());
        assert_eq!(count(&r, "monotonic-read"), 1);
        let v = &r.get("monotonic-read-violations").unwrap()[0];
        assert_eq!(v["earlier-read"]["value"], json!(3));
        let cr = crate::checker::counter::CounterChecker
            .check(&h.build(), &CheckContext::new())
            .unwrap();
        assert_eq!(
            cr.get("error-count").unwrap(),
            &json!(0),
            "the bounds allow it"
        );
        // Showing more later is fine; so is less after a restart.
        let mut h = H::new();
        base(&mut h);
        write(&mut h, 0, F::Add, C, Level::Local, "n3", json!(-4), None);
        leader_read(&mut h, 2, C, "n2", "n1", json!(-1), None);
        assert_eq!(check(&h).valid, Validity::True);
        let mut h = H::new();
        base(&mut h);
        kill_and_restart(&mut h, "n1");
        leader_read(&mut h, 2, C, "n2", "n1", json!(2), None);
        assert_eq!(check(&h).valid, Validity::True);
        // Read-your-writes: the process's own leader add, then a leader read
        // there without it.
        let mut h = H::new();
        write(&mut h, 5, F::Add, C, Level::Leader, "n1", json!(4), None);
        leader_read(&mut h, 5, C, "n2", "n1", json!(0), None);
        assert_eq!(count(&check(&h), "read-your-writes"), 1);
    }
}
