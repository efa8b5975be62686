//! The expiry checker: TTLs judged by real time ([`crate::workload::expiry`]).
//!
//! Values are unique, so a read names the one `SET` it saw, and no later
//! write can re-create an expired value. The rules (docs/maps-and-expiry.md
//! §2; the lead's expiry spec): a node hides a register value once its own
//! clock passes the value's deadline (`now + ttl` on the node that took the
//! `SET .. PX`/`PEXPIRE`) unless the value was stamped after it;
//! concurrent deadlines all fire; `PERSIST` and `SET` without a TTL cancel
//! the deadlines their node had observed; an expiry that happened is final.
//!
//! **Clocks.** The harness's nodes share the machine's clock; only the
//! clock nemesis moves them (each node's debug offset, at most
//! ±[`MAX_CLOCK_OFFSET_MS`]). An op is *skewed* when a clock fault window
//! ([`faults::windows`], shaded span) overlaps its invoke..complete window
//! or ended less than [`MAX_CLOCK_OFFSET_MS`] before it (a node's hybrid
//! clock never runs backwards, so after a reset it may stay that far
//! ahead until real time catches up). A skewed op's node may read its
//! clock up to `skew` = [`MAX_CLOCK_OFFSET_MS`] + [`NODE_MAX_CLOCK_OFFSET_MS`]
//! (the HLC's own lead over the physical clock) off real time; an
//! unskewed op's node reads real time. Every TTL boundary is further
//! widened by [`TTL_BOUND_MS`] (the node's `max_clock_offset` and
//! [`SLACK_MS`]). Times are the harness's: an op took effect somewhere in
//! its invoke..complete window; `info` ops never complete.
//!
//! **Rules.** Per key, over non-failed writes (`SET`, `PEXPIRE`,
//! `PERSIST`; `info` ones included, as possibly effective from their
//! invocation on):
//!
//! 1. **No resurrection.** For `SET v PX t` completed at `c`, the latest
//!    time its deadline can still be in the future at a node is
//!    `E = c + t + skew(SET) + TTL_BOUND`. A later (or concurrent: not
//!    completed before the SET was invoked) write X invoked before
//!    `E + skew(X)` may have observed that deadline before
//!    it passed: a `PERSIST` or a `SET` without TTL may have cancelled it
//!    (and if that `SET` lost to v by timestamp, v lives on), so v is
//!    *protected* and not judged; a `PEXPIRE t'` or `SET .. PX t'` may
//!    have replaced it, so `E` grows to X's own latest deadline (unless X's
//!    deadline could precede v's timestamp: then protected too). A `SET`
//!    that never completed (`info`) is never judged. An ok read that
//!    returns v and was invoked at or after `E + skew(read)` is a
//!    **resurrection**. Any level, final reads included: a replica that has
//!    v has v's deadline, and one that lacks v cannot return it.
//! 2. **No lost write inside the TTL.** An ok read r is judged against the
//!    `SET v` w invoked last before r completed (TTL t, or none: t = ∞)
//!    when w completed before r was invoked, w is promised to r
//!    ([`counter::must_observe`]: replica sets intersect, or same node at
//!    `local`/`leader`/`replicas-1`), r completed before
//!    `invoke(w) + t − skew(w) − skew(r) − TTL_BOUND` (v's deadline not yet
//!    reached at r's node), every earlier `SET` completed before w was
//!    invoked and surely has a lower timestamp (it completed more than
//!    `skew + SLACK` before w, or on w's node at a single-node level), and
//!    every other deadline — an earlier one w did not surely replace, a
//!    `PEXPIRE` concurrent with or after w, even an indeterminate one —
//!    passed before w (v is stamped after it) or cannot have been reached
//!    at r's node (`invoke(X) + t_X` is past r's completion plus skews and
//!    `TTL_BOUND`). A `PERSIST` only removes deadlines. Then r must return
//!    v; anything else (nil, another value) is a **lost write**.
//! 3. **Only written values.** A read's value was written to the key by a
//!    `SET` that did not fail and was invoked before the read completed
//!    (else `garbage`, `fail-visible` or `future-read`).
//!
//! Valid iff none of the above; `unknown` when no `SET .. PX` was
//! acknowledged (nothing judged), or a command was refused as unknown
//! (the node has no TTL commands). Counts report what was judged:
//! `resurrection-judged-values`, `protected-values`, `unjudged-values`
//! (`info` SETs, TTLs within the skew bound),
//! `lost-write-judged-reads`, `reads-after-all-expired` (reads invoked
//! after every value written before them had expired: they must be nil)
//! and `expired-nil-reads` (how many were).
//!
//! It cannot see: values protected by a possible `PERSIST`/`SET`; TTLs
//! near clock faults (the skew bound, 5.5 s, exceeds the workload's TTLs);
//! lost writes behind concurrent or indeterminate writes; `PEXPIRE` or
//! `PERSIST` that took effect on an absent key.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::counter::must_observe;
use super::faults::{self, Family, Window};
use super::{CheckContext, CheckResult, Checker, MAX_LISTED, Validity};
use crate::generator::MAX_CLOCK_OFFSET_MS;
use crate::history::{Call, F, History, Level, WorkloadKind};

/// The nodes' `max_clock_offset` (the node's default; the harness does not
/// change it), in ms: how far a node's hybrid clock may run ahead of its
/// physical clock by accepting a peer's timestamp.
pub const NODE_MAX_CLOCK_OFFSET_MS: u64 = 500;

/// Slack between the harness's monotonic clock and the nodes' wall clocks
/// (one machine: only drift and scheduling), in ms.
pub const SLACK_MS: u64 = 50;

/// Added to every TTL boundary, in ms: the node's `max_clock_offset` plus
/// [`SLACK_MS`], so that a boundary case is never called a violation.
pub const TTL_BOUND_MS: u64 = NODE_MAX_CLOCK_OFFSET_MS + SLACK_MS;

const MS: u64 = 1_000_000;

/// The expiry checker (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct ExpiryChecker;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind<'a> {
    Set { value: &'a str, ttl_ms: Option<u64> },
    Expire { ttl_ms: u64 },
    Persist,
    Read,
}

/// One op of an expiry key, with its skew.
#[derive(Clone, Copy)]
struct ExOp<'a> {
    call: Call<'a>,
    kind: Kind<'a>,
    level: Level,
    /// ns (0 when the op is not skewed).
    skew: u64,
}

impl ExOp<'_> {
    fn inv(&self) -> u64 {
        self.call.inv.time
    }
    /// Completion time; `u64::MAX` for `info`.
    fn cmp(&self) -> u64 {
        self.call.cmp_time()
    }
    fn deadline_ttl(&self) -> Option<u64> {
        match self.kind {
            Kind::Set { ttl_ms, .. } => ttl_ms,
            Kind::Expire { ttl_ms } => Some(ttl_ms),
            _ => None,
        }
    }
    fn brief(&self) -> Value {
        let got = (self.kind == Kind::Read && self.call.is_ok()).then(|| &self.call.result().value);
        json!({
            "got": got,
            "index": self.call.inv.index,
            "process": self.call.inv.process,
            "f": self.call.inv.f.as_str(),
            "value": self.call.inv.value,
            "level": self.level,
            "node": self.call.serving_node(),
            "invoke-ms": self.inv() / MS,
            "complete-ms": (self.cmp() != u64::MAX).then(|| self.cmp() / MS),
        })
    }
}

/// Whether an op over `[from, to]` (ns) is skewed by the clock windows.
fn skew_of(clock: &[&Window], from: u64, to: u64) -> u64 {
    let lookback = MAX_CLOCK_OFFSET_MS.unsigned_abs() * MS;
    if clock
        .iter()
        .any(|w| w.overlaps(from.saturating_sub(lookback), to))
    {
        (MAX_CLOCK_OFFSET_MS.unsigned_abs() + NODE_MAX_CLOCK_OFFSET_MS) * MS
    } else {
        0
    }
}

fn parse<'a>(call: &Call<'a>) -> anyhow::Result<Kind<'a>> {
    let v = &call.inv.value;
    let ttl = |v: &Value| -> anyhow::Result<Option<u64>> {
        match v.get("ttl-ms") {
            None | Some(Value::Null) => Ok(None),
            Some(t) => t
                .as_u64()
                .map(Some)
                .ok_or_else(|| anyhow::anyhow!("op {}: bad ttl-ms {t}", call.inv.index)),
        }
    };
    Ok(match call.inv.f {
        F::Write => Kind::Set {
            value: v.get("value").and_then(Value::as_str).ok_or_else(|| {
                anyhow::anyhow!("op {}: expiry write without a value", call.inv.index)
            })?,
            ttl_ms: ttl(v)?,
        },
        F::Expire => Kind::Expire {
            ttl_ms: ttl(v)?
                .ok_or_else(|| anyhow::anyhow!("op {}: expire without ttl-ms", call.inv.index))?,
        },
        F::Persist => Kind::Persist,
        F::Read => Kind::Read,
        f => anyhow::bail!("op {}: {} is not an expiry op", call.inv.index, f.as_str()),
    })
}

/// What rule 1 says about one `SET v PX t`.
enum Fate {
    /// v must be invisible to reads invoked at or after this time plus
    /// their own skew (ns).
    GoneBy(u64),
    /// A possible `PERSIST`/`SET`, or a deadline that may precede v's
    /// timestamp: not judged.
    Protected,
    /// The `SET` never completed, or its TTL is within the skew bound.
    Unjudged,
}

/// Rule 1 for write `w` of `ops` (one key's, in invocation order).
fn fate(ops: &[ExOp<'_>], wi: usize) -> Fate {
    let w = &ops[wi];
    let Kind::Set {
        ttl_ms: Some(t), ..
    } = w.kind
    else {
        return Fate::Unjudged;
    };
    let t = t * MS;
    if w.cmp() == u64::MAX || t <= w.skew + NODE_MAX_CLOCK_OFFSET_MS * MS {
        return Fate::Unjudged;
    }
    let bound = TTL_BOUND_MS * MS;
    let gone0 = w.cmp() + t + w.skew + bound;
    // Writes that may have observed v's deadline before it passed, applied
    // in any order, each once (module docs): a write that completed before
    // `gone0` took effect by its completion, so it can at most move the
    // bound to its own deadline; any other (later, or `info`) may take
    // effect just before the current bound and extend it by its TTL.
    // Both bounds hold whatever the order, so iterate to a fixpoint.
    let mut fixed = gone0;
    let mut extended = 0;
    let mut used = vec![false; ops.len()];
    loop {
        let gone = fixed + extended;
        let mut changed = false;
        for (i, x) in ops.iter().enumerate() {
            if used[i]
                || i == wi
                || x.kind == Kind::Read
                || x.call.is_fail()
                || x.cmp() <= w.inv()
                || x.inv() >= gone + x.skew
            {
                continue;
            }
            used[i] = true;
            changed = true;
            let Some(tx) = x.deadline_ttl() else {
                return Fate::Protected;
            };
            let tx = tx * MS;
            // X's deadline must be after v's timestamp for it to hide v.
            if x.inv() + tx <= w.cmp() + w.skew + x.skew + bound {
                return Fate::Protected;
            }
            if x.call.is_ok() && x.cmp() <= gone0 + x.skew {
                fixed = fixed.max(x.cmp() + tx + x.skew + bound);
            } else {
                extended += tx + 2 * x.skew + bound;
            }
        }
        if !changed {
            return Fate::GoneBy(gone);
        }
    }
}

/// Whether `x` was applied on the node that later applied `w`: both at a
/// single-node level (`local`, `leader`, `replicas-1`) and served by the
/// same (known) node, `x` completed before `w` was invoked. Then `w` saw
/// `x` (its deadline, which a `SET` replaces or clears; its timestamp,
/// which the node's clock passed).
fn seen_by(x: &ExOp<'_>, w: &ExOp<'_>) -> bool {
    let one_node = |l: Level| l == Level::Leader || l.is_single_replica();
    x.cmp() < w.inv()
        && one_node(x.level)
        && one_node(w.level)
        && x.call.serving_node().is_some()
        && x.call.serving_node() == w.call.serving_node()
}

/// Rule 2 for read `ri`: the write whose value it must return, if the
/// read is judged.
fn promised_write<'o, 'a>(ops: &'o [ExOp<'a>], ri: usize) -> Option<&'o ExOp<'a>> {
    let r = &ops[ri];
    let prior: Vec<&ExOp<'_>> = ops
        .iter()
        .filter(|x| x.kind != Kind::Read && !x.call.is_fail() && x.inv() < r.cmp())
        .collect();
    let w = *prior
        .iter()
        .filter(|x| matches!(x.kind, Kind::Set { .. }))
        .max_by_key(|x| x.inv())?;
    let Kind::Set { ttl_ms, .. } = w.kind else {
        return None;
    };
    if w.cmp() >= r.inv() {
        return None;
    }
    if !must_observe(
        w.level,
        w.call.serving_node(),
        r.level,
        r.call.serving_node(),
    ) {
        return None;
    }
    let bound = TTL_BOUND_MS * MS;
    let slack = SLACK_MS * MS;
    if let Some(t) = ttl_ms
        && r.cmp() + r.skew + w.skew + bound >= w.inv() + t * MS
    {
        return None;
    }
    for x in prior
        .iter()
        .filter(|x| x.call.inv.index != w.call.inv.index)
    {
        let seen = seen_by(x, w);
        if matches!(x.kind, Kind::Set { .. }) {
            // An earlier SET (w is the last): its value must be older.
            if x.cmp() >= w.inv() {
                return None; // concurrent with w
            }
            if !seen && x.cmp() + x.skew + w.skew + slack >= w.inv() {
                return None; // its timestamp may be above v's
            }
        }
        // Any other deadline (an earlier one w did not surely replace, or
        // a PEXPIRE concurrent with or after w, even `info`) must have
        // passed before v was stamped, or not be reached at r's node.
        if let Some(tx) = x.deadline_ttl()
            && !seen
        {
            let tx = tx * MS;
            let passed_before_w =
                x.cmp() != u64::MAX && x.cmp() + tx + x.skew + w.skew + slack < w.inv();
            let unreached_at_r = r.cmp() + r.skew + x.skew + bound < x.inv() + tx;
            if !passed_before_w && !unreached_at_r {
                return None;
            }
        }
        // A PERSIST only removes deadlines.
    }
    Some(w)
}

#[derive(Default)]
struct Findings {
    resurrected: Vec<Value>,
    resurrected_count: u64,
    lost: Vec<Value>,
    lost_count: u64,
    unexpected: Vec<Value>,
    unexpected_count: u64,
    ttl_writes_ok: u64,
    judged_values: u64,
    protected: u64,
    unjudged_values: u64,
    lost_judged: u64,
    after_all_expired: u64,
    expired_nil: u64,
    unknown_command: u64,
}

fn push(list: &mut Vec<Value>, count: &mut u64, v: Value) {
    *count += 1;
    if list.len() < MAX_LISTED {
        list.push(v);
    }
}

fn check_key(ops: &[ExOp<'_>], key: &str, out: &mut Findings) {
    let fates: Vec<Option<Fate>> = (0..ops.len())
        .map(|i| match ops[i].kind {
            Kind::Set {
                ttl_ms: Some(_), ..
            } if !ops[i].call.is_fail() => Some(fate(ops, i)),
            _ => None,
        })
        .collect();
    let mut set_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        if let Kind::Set { value, ttl_ms } = o.kind {
            set_of.insert(value, i);
            if ttl_ms.is_some() && o.call.is_ok() {
                out.ttl_writes_ok += 1;
            }
        }
        match &fates[i] {
            Some(Fate::GoneBy(_)) => out.judged_values += 1,
            Some(Fate::Protected) => out.protected += 1,
            Some(Fate::Unjudged) => out.unjudged_values += 1,
            None => {}
        }
    }
    for (ri, r) in ops.iter().enumerate() {
        if r.kind != Kind::Read || !r.call.is_ok() {
            continue;
        }
        let got = r.call.result().value.as_str();
        // Rule 3.
        if let Some(v) = got {
            let why = match set_of.get(v).map(|&i| &ops[i]) {
                None => Some("garbage"),
                Some(w) if w.call.is_fail() => Some("fail-visible"),
                Some(w) if w.inv() > r.cmp() => Some("future-read"),
                Some(_) => None,
            };
            if let Some(why) = why {
                push(
                    &mut out.unexpected,
                    &mut out.unexpected_count,
                    json!({"key": key, "why": why, "read": r.brief()}),
                );
                continue;
            }
        }
        // Rule 1.
        if let Some(v) = got
            && let Some(&wi) = set_of.get(v)
            && let Some(Fate::GoneBy(gone)) = fates[wi]
            && r.inv() >= gone + r.skew
        {
            push(
                &mut out.resurrected,
                &mut out.resurrected_count,
                json!({
                    "key": key,
                    "value": v,
                    "write": ops[wi].brief(),
                    "read": r.brief(),
                    "expired-by-ms": (gone + r.skew) / MS,
                }),
            );
        }
        let mut before = ops
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o.kind, Kind::Set { .. }) && !o.call.is_fail())
            .filter(|(_, o)| o.inv() < r.cmp())
            .peekable();
        if before.peek().is_some()
            && before
                .all(|(i, _)| matches!(fates[i], Some(Fate::GoneBy(g)) if r.inv() >= g + r.skew))
        {
            out.after_all_expired += 1;
            if got.is_none() {
                out.expired_nil += 1;
            }
        }
        // Rule 2.
        if let Some(w) = promised_write(ops, ri) {
            out.lost_judged += 1;
            let Kind::Set { value, .. } = w.kind else {
                continue;
            };
            if got != Some(value) {
                push(
                    &mut out.lost,
                    &mut out.lost_count,
                    json!({"key": key, "write": w.brief(), "read": r.brief(), "got": got}),
                );
            }
        }
    }
}

impl Checker for ExpiryChecker {
    fn name(&self) -> &'static str {
        "expiry"
    }

    fn check(&self, history: &History, _: &CheckContext) -> anyhow::Result<CheckResult> {
        let windows = faults::windows(history);
        let clock: Vec<&Window> = windows
            .iter()
            .filter(|w| w.family == Family::Clock)
            .collect();
        let end = history.end_time();
        let mut by_key: BTreeMap<&str, Vec<ExOp<'_>>> = BTreeMap::new();
        let mut out = Findings::default();
        for call in history.calls() {
            let Some(key) = call.inv.key.as_deref() else {
                continue;
            };
            if WorkloadKind::of_key(key) != Some(WorkloadKind::Expiry) {
                continue;
            }
            if call.is_fail()
                && call
                    .result()
                    .error
                    .as_deref()
                    .is_some_and(|e| e.to_ascii_lowercase().contains("unknown command"))
            {
                out.unknown_command += 1;
            }
            let kind = parse(&call)?;
            let level = call.required_level()?;
            let to = call.cmp_time().min(end);
            let skew = skew_of(&clock, call.inv.time, to);
            by_key.entry(key).or_default().push(ExOp {
                call,
                kind,
                level,
                skew,
            });
        }
        for (key, ops) in &by_key {
            check_key(ops, key, &mut out);
        }
        let invalid = out.resurrected_count + out.lost_count + out.unexpected_count > 0;
        let valid = if invalid {
            Validity::False
        } else if out.ttl_writes_ok == 0 || out.unknown_command > 0 {
            Validity::Unknown
        } else {
            Validity::True
        };
        let mut r = CheckResult::new(valid)
            .with("keys", by_key.len())
            .with("ttl-writes-ok", out.ttl_writes_ok)
            .with("resurrection-judged-values", out.judged_values)
            .with("protected-values", out.protected)
            .with("unjudged-values", out.unjudged_values)
            .with("lost-write-judged-reads", out.lost_judged)
            .with("reads-after-all-expired", out.after_all_expired)
            .with("expired-nil-reads", out.expired_nil)
            .with("resurrected-count", out.resurrected_count)
            .with("resurrected", &out.resurrected)
            .with("lost-writes-count", out.lost_count)
            .with("lost-writes", &out.lost)
            .with("unexpected-reads-count", out.unexpected_count)
            .with("unexpected-reads", &out.unexpected)
            .with(
                "skew-ms",
                MAX_CLOCK_OFFSET_MS.unsigned_abs() + NODE_MAX_CLOCK_OFFSET_MS,
            )
            .with("clock-windows", clock.len());
        if out.unknown_command > 0 {
            r.insert(
                "error",
                format!(
                    "{} ops refused as an unknown command: the nodes have no TTL commands",
                    out.unknown_command
                ),
            );
        } else if out.ttl_writes_ok == 0 {
            r.insert("error", "no SET .. PX was acknowledged: nothing to judge");
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::test_support::op;
    use crate::history::{Op, OpType, Process};

    const K: &str = "expiry-0";

    /// Ops at explicit times (ms), sorted into a history at build time.
    #[derive(Default)]
    struct B {
        ops: Vec<(u64, Op)>,
    }

    /// How a call ends.
    #[derive(Clone, Copy)]
    enum End {
        Ok(u64),
        Fail(u64),
        Info,
    }

    impl B {
        #[allow(clippy::too_many_arguments)]
        fn call(
            &mut self,
            p: u64,
            f: F,
            value: Value,
            result: Value,
            (inv, end): (u64, End),
            level: Level,
            node: &str,
        ) -> &mut B {
            let mut i = op(p, OpType::Invoke, f, K, value.clone());
            i.consistency = Some(level);
            i.node = Some(node.into());
            self.ops.push((inv * MS, i.clone()));
            let (kind, at) = match end {
                End::Ok(t) => (OpType::Ok, t),
                End::Fail(t) => (OpType::Fail, t),
                End::Info => return self,
            };
            let mut c = i;
            c.kind = kind;
            c.value = if kind == OpType::Ok && f == F::Read {
                result
            } else {
                value
            };
            if kind == OpType::Fail {
                c.error = Some("ERR unknown command 'PEXPIRE'".into());
            }
            c.meta = Some(json!({"node": node}));
            self.ops.push((at * MS, c));
            self
        }
        fn set(&mut self, p: u64, v: &str, ttl: Option<u64>, w: (u64, End)) -> &mut B {
            let val = json!({"value": v, "ttl-ms": ttl});
            self.call(p, F::Write, val, Value::Null, w, Level::Quorum, "n1")
        }
        fn read(&mut self, p: u64, got: Option<&str>, inv: u64, cmp: u64) -> &mut B {
            let w = (inv, End::Ok(cmp));
            self.call(p, F::Read, Value::Null, json!(got), w, Level::Quorum, "n2")
        }
        fn expire(&mut self, p: u64, ttl: u64, w: (u64, End)) -> &mut B {
            let val = json!({"ttl-ms": ttl});
            self.call(p, F::Expire, val, Value::Null, w, Level::Quorum, "n3")
        }
        fn persist(&mut self, p: u64, w: (u64, End)) -> &mut B {
            self.call(
                p,
                F::Persist,
                Value::Null,
                Value::Null,
                w,
                Level::Quorum,
                "n3",
            )
        }
        /// A clock fault from `from` to `to` (ms): bump, then reset.
        fn clock(&mut self, from: u64, to: u64) -> &mut B {
            for (f, t) in [
                (F::BumpClock, from),
                (F::BumpClock, from + 1),
                (F::ResetClock, to),
                (F::ResetClock, to + 1),
            ] {
                let mut o = op(0, OpType::Info, f, "", Value::Null);
                o.process = Process::Nemesis;
                o.key = None;
                o.consistency = None;
                o.node = None;
                self.ops.push((t * MS, o));
            }
            self
        }
        fn check(&self) -> CheckResult {
            let mut ops = self.ops.clone();
            ops.sort_by_key(|(t, _)| *t);
            let ops = ops
                .into_iter()
                .map(|(t, mut o)| {
                    o.time = t;
                    o
                })
                .collect();
            ExpiryChecker
                .check(&History::from_ops(ops), &CheckContext::new())
                .unwrap()
        }
    }

    fn ok(inv: u64, cmp: u64) -> (u64, End) {
        (inv, End::Ok(cmp))
    }

    fn count(r: &CheckResult, k: &str) -> u64 {
        r.get(k)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{k}"))
    }

    /// A value read inside its TTL, then nil once it has surely expired:
    /// valid, and both rules judged something.
    #[test]
    fn read_inside_the_ttl_then_nil_after_it_is_valid() {
        let mut b = B::default();
        b.set(0, "v1", Some(1000), ok(0, 10))
            .read(1, Some("v1"), 100, 110)
            .read(1, None, 2000, 2010);
        let r = b.check();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        assert_eq!(count(&r, "lost-write-judged-reads"), 1);
        assert_eq!(count(&r, "resurrection-judged-values"), 1);
        assert_eq!(count(&r, "reads-after-all-expired"), 1);
        assert_eq!(count(&r, "expired-nil-reads"), 1);
    }

    /// The value read after complete + ttl + bound: a resurrection. Read
    /// just before that bound: allowed.
    #[test]
    fn value_read_after_its_ttl_is_a_resurrection() {
        let mut b = B::default();
        b.set(0, "v1", Some(1000), ok(0, 10))
            .read(1, Some("v1"), 1500, 1510);
        let r = b.check();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        b.read(1, Some("v1"), 2000, 2010);
        let r = b.check();
        assert_eq!(r.valid, Validity::False);
        assert_eq!(count(&r, "resurrected-count"), 1);
        let res = &r.get("resurrected").unwrap()[0];
        assert_eq!(res["value"], json!("v1"));
        assert_eq!(res["expired-by-ms"], json!(10 + 1000 + TTL_BOUND_MS));
        assert_eq!(res["read"]["invoke-ms"], json!(2000));
    }

    /// A `PERSIST` or a `SET` without TTL that may have seen the deadline
    /// before it passed protects the value; one invoked after it passed
    /// does not.
    #[test]
    fn persist_before_the_deadline_protects_after_it_does_not() {
        for late in [false, true] {
            let at = if late { 3000 } else { 200 };
            let mut b = B::default();
            b.set(0, "v1", Some(1000), ok(0, 10))
                .persist(2, ok(at, at + 10))
                .read(1, Some("v1"), 5000, 5010);
            let r = b.check();
            if late {
                assert_eq!(r.valid, Validity::False, "{}", r.to_json());
                assert_eq!(count(&r, "resurrected-count"), 1);
            } else {
                assert_eq!(r.valid, Validity::True, "{}", r.to_json());
                assert_eq!(count(&r, "protected-values"), 1);
            }
        }
        // A SET of another value without TTL, concurrent with v1's: v1 may
        // have won by timestamp with its TTL cleared.
        let mut b = B::default();
        b.set(0, "v1", Some(1000), ok(0, 10))
            .set(2, "v2", None, ok(5, 20))
            .read(1, Some("v1"), 5000, 5010);
        let r = b.check();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
    }

    /// `PEXPIRE` replaces the deadline: a longer one keeps the value
    /// (until its own deadline); an indeterminate one may take effect
    /// just before the old deadline.
    #[test]
    fn pexpire_moves_the_deadline() {
        let mut b = B::default();
        b.set(0, "v1", Some(1000), ok(0, 10))
            .expire(2, 3000, ok(100, 110))
            .read(1, Some("v1"), 2000, 2010);
        let r = b.check();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        b.read(1, Some("v1"), 4000, 4010); // after 110 + 3000 + bound
        let r = b.check();
        assert_eq!(count(&r, "resurrected-count"), 1, "{}", r.to_json());

        let mut b = B::default();
        b.set(0, "v1", Some(1000), ok(0, 10))
            .expire(2, 3000, (100, End::Info))
            .read(1, Some("v1"), 4000, 4010);
        let r = b.check();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        // Latest: just before 10 + 1000 + bound, then + 3000 + bound.
        b.read(1, Some("v1"), 10 + 1000 + 3000 + 2 * TTL_BOUND_MS, 6000);
        let r = b.check();
        assert_eq!(count(&r, "resurrected-count"), 1, "{}", r.to_json());

        // A PEXPIRE whose deadline may fall before v's timestamp (invoked
        // long before the SET completed): v may outlive it.
        let mut b = B::default();
        b.expire(2, 1000, ok(0, 10))
            .set(0, "v1", Some(1000), ok(5, 1500))
            .read(1, Some("v1"), 9000, 9010);
        let r = b.check();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        assert_eq!(count(&r, "protected-values"), 1);
    }

    /// A promised read inside the TTL that misses the value: a lost write.
    /// Not judged when the read may lag (another node at `local`), when
    /// the deadline may have passed at the reader, or when another write
    /// was concurrent.
    #[test]
    fn read_missing_the_value_inside_its_ttl_is_a_lost_write() {
        let mut b = B::default();
        b.set(0, "v1", Some(2000), ok(0, 10))
            .read(1, None, 100, 110);
        let r = b.check();
        assert_eq!(r.valid, Validity::False);
        assert_eq!(count(&r, "lost-writes-count"), 1);
        let lw = &r.get("lost-writes").unwrap()[0];
        assert_eq!(lw["got"], Value::Null);
        assert_eq!(lw["write"]["value"]["value"], json!("v1"));

        // A local read on n2 after a quorum write: not promised.
        let mut b = B::default();
        b.set(0, "v1", Some(2000), ok(0, 10));
        b.call(
            1,
            F::Read,
            Value::Null,
            Value::Null,
            ok(100, 110),
            Level::Local,
            "n2",
        );
        assert_eq!(b.check().valid, Validity::True);
        // Near the deadline: not judged.
        let mut b = B::default();
        b.set(0, "v1", Some(2000), ok(0, 10))
            .read(1, None, 1400, 1460);
        let r = b.check();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        assert_eq!(count(&r, "lost-write-judged-reads"), 0);
        // A concurrent SET (v0 may be the winner): not judged.
        let mut b = B::default();
        b.set(0, "v1", Some(2000), ok(0, 10))
            .set(2, "v0", None, ok(5, 20))
            .read(1, Some("v0"), 100, 110);
        assert_eq!(b.check().valid, Validity::True);
        // Without TTL the rule is plain read-after-write.
        let mut b = B::default();
        b.set(0, "v1", None, ok(0, 10)).read(1, None, 9000, 9010);
        assert_eq!(count(&b.check(), "lost-writes-count"), 1);
    }

    /// An earlier value is only ruled out once it is surely older: its
    /// SET completed more than the slack before the new one.
    #[test]
    fn earlier_values_must_be_surely_older() {
        let mut b = B::default();
        b.set(0, "v0", None, ok(0, 10))
            .set(2, "v1", Some(2000), ok(30, 40))
            .read(1, Some("v0"), 100, 110);
        let r = b.check();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        let mut b = B::default();
        b.set(0, "v0", None, ok(0, 10))
            .set(2, "v1", Some(2000), ok(100, 110))
            .read(1, Some("v0"), 200, 210);
        let r = b.check();
        assert_eq!(r.valid, Validity::False, "{}", r.to_json());
        assert_eq!(count(&r, "lost-writes-count"), 1);
        // An earlier deadline that may hit the new value: not judged.
        let mut b = B::default();
        b.set(0, "v0", Some(1000), ok(0, 10))
            .set(2, "v1", Some(3000), ok(100, 110))
            .read(1, None, 1800, 1810);
        let r = b.check();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        // ...and one that passed before the new SET does not matter.
        let mut b = B::default();
        b.set(0, "v0", Some(1000), ok(0, 10))
            .set(2, "v1", Some(3000), ok(1200, 1210))
            .read(1, None, 1800, 1810);
        assert_eq!(count(&b.check(), "lost-writes-count"), 1);
    }

    /// Writes after the SET that only move deadlines: a PERSIST never
    /// hides v; a PEXPIRE (even an indeterminate one) hides it once its
    /// own deadline may be reached, not before.
    #[test]
    fn persist_and_pexpire_after_the_set_are_judged_by_their_deadlines() {
        let lost = |b: &B| count(&b.check(), "lost-writes-count");
        let mut b = B::default();
        b.set(0, "v1", Some(2000), ok(0, 10))
            .persist(2, ok(20, 30))
            .read(1, None, 100, 110);
        assert_eq!(lost(&b), 1);
        let mut b = B::default();
        b.set(0, "v1", Some(2000), ok(0, 10))
            .expire(2, 1500, (20, End::Info))
            .read(1, None, 100, 110);
        assert_eq!(lost(&b), 1, "{}", b.check().to_json());
        // Past the PEXPIRE's own deadline (20 + 1500 − bound): not judged.
        let mut b = B::default();
        b.set(0, "v1", Some(2000), ok(0, 10))
            .expire(2, 1500, ok(20, 30))
            .read(1, None, 1000, 1010);
        let r = b.check();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        assert_eq!(count(&r, "lost-write-judged-reads"), 0);
    }

    /// An earlier write served by the same node at a single-node level is
    /// surely older and its deadline surely replaced, however close.
    #[test]
    fn an_earlier_write_on_the_same_node_is_seen() {
        let local = |b: &mut B, p: u64, v: &str, ttl: u64, w: (u64, End)| {
            let val = json!({"value": v, "ttl-ms": ttl});
            b.call(p, F::Write, val, Value::Null, w, Level::Local, "n1");
        };
        let mut b = B::default();
        local(&mut b, 0, "v0", 1000, ok(0, 10));
        local(&mut b, 2, "v1", 3000, ok(20, 30));
        b.call(
            1,
            F::Read,
            Value::Null,
            json!("v0"),
            ok(1500, 1510),
            Level::Local,
            "n1",
        );
        let r = b.check();
        assert_eq!(count(&r, "lost-writes-count"), 1, "{}", r.to_json());
        // The same on different nodes: v0 may be newer, and its deadline
        // may hide v1: not judged.
        let mut b = B::default();
        local(&mut b, 0, "v0", 1000, ok(0, 10));
        b.call(
            2,
            F::Write,
            json!({"value": "v1", "ttl-ms": 3000}),
            Value::Null,
            ok(20, 30),
            Level::All,
            "n2",
        );
        b.call(
            1,
            F::Read,
            Value::Null,
            Value::Null,
            ok(1500, 1510),
            Level::All,
            "n3",
        );
        let r = b.check();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        assert_eq!(count(&r, "lost-write-judged-reads"), 0);
    }

    /// Near clock faults the skew bound (5.5 s) exceeds every TTL: neither
    /// rule judges; 5 s after the reset they do again.
    #[test]
    fn clock_faults_widen_the_bounds() {
        let mut b = B::default();
        b.clock(0, 1000)
            .set(0, "v1", Some(1000), ok(500, 510))
            .read(1, None, 600, 610)
            .read(1, Some("v1"), 4000, 4010);
        let r = b.check();
        assert_eq!(r.valid, Validity::True, "{}", r.to_json());
        assert_eq!(count(&r, "unjudged-values"), 1);
        assert_eq!(count(&r, "lost-write-judged-reads"), 0);
        assert_eq!(count(&r, "clock-windows"), 1);
        let mut b = B::default();
        b.clock(0, 1000)
            .set(0, "v1", Some(1000), ok(7000, 7010))
            .read(1, None, 7100, 7110)
            .read(1, Some("v1"), 9000, 9010);
        let r = b.check();
        assert_eq!(count(&r, "lost-writes-count"), 1, "{}", r.to_json());
        assert_eq!(count(&r, "resurrected-count"), 1);
    }

    #[test]
    fn unwritten_failed_and_future_values_are_flagged() {
        let mut b = B::default();
        b.set(0, "v1", Some(1000), ok(0, 10))
            .set(2, "v2", Some(1000), (20, End::Fail(30)))
            .read(1, Some("zz"), 100, 110)
            .read(1, Some("v2"), 120, 130)
            .read(1, Some("v3"), 140, 150)
            .set(3, "v3", Some(1000), ok(200, 210));
        let r = b.check();
        assert_eq!(r.valid, Validity::False);
        let whys: Vec<&Value> = r
            .get("unexpected-reads")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|u| &u["why"])
            .collect();
        assert_eq!(
            whys,
            [
                &json!("garbage"),
                &json!("fail-visible"),
                &json!("future-read")
            ]
        );
    }

    /// Nothing judged is not valid: no acknowledged SET .. PX, or commands
    /// the node does not know.
    #[test]
    fn nothing_judged_or_unknown_commands_are_unknown() {
        let mut b = B::default();
        b.set(0, "v1", Some(1000), (0, End::Fail(10)))
            .read(1, None, 20, 30);
        let r = b.check();
        assert_eq!(r.valid, Validity::Unknown, "{}", r.to_json());
        assert!(
            r.get("error")
                .unwrap()
                .as_str()
                .unwrap()
                .contains("unknown command")
        );
        let mut b = B::default();
        b.set(0, "v1", None, ok(0, 10));
        assert_eq!(b.check().valid, Validity::Unknown);
    }

    #[test]
    fn missing_level_is_an_error() {
        let mut b = B::default();
        b.set(0, "v1", Some(1000), ok(0, 10));
        b.ops[0].1.consistency = None;
        let mut ops: Vec<Op> = b
            .ops
            .iter()
            .map(|(t, o)| Op {
                time: *t,
                ..o.clone()
            })
            .collect();
        ops.sort_by_key(|o| o.time);
        let e = ExpiryChecker
            .check(&History::from_ops(ops), &CheckContext::new())
            .unwrap_err();
        assert!(e.to_string().contains("no consistency level"), "{e}");
    }
}
