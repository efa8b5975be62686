//! The checks run on a converged cluster: pure functions of the client
//! history and the one state every replica agreed on, so a test can feed
//! them a broken history and expect "invalid" (`checkers_reject_*`).
//!
//! An operation the engine applied has a dot. After convergence it is
//! **effective** if the cluster's applied dots hold its dot, and
//! **indeterminate** otherwise: its log record was lost in a power cut
//! before anyone fsynced it, yet its effect may live on (sled kept it and
//! recovery re-issued the object's state under a new dot). Operations the
//! engine refused (no dot) took no effect. Each check allows exactly that
//! and no more:
//!
//! * **acked**: every acknowledged write is effective, unless it was a
//!   `Periodic` `local` write whose origin crashed before any node held it
//!   durably (the history marks those).
//! * **counter**: per origin, each running total and reset floor of the
//!   final state lies between the join of the effective operations' deltas
//!   and the join with the indeterminate ones too; the value likewise. With
//!   nothing indeterminate the value is exact, and with no deletes it is
//!   the plain sum of the effective increments.
//! * **set** (add-wins): an add's element dot is cancelled by an operation
//!   whose delta context holds it (a remove, a delete, a later add of the
//!   same member by a replica that saw it). A member must be present if an
//!   effective add of it is cancelled by no effective or indeterminate
//!   operation, and may be present only if some add of it is cancelled by
//!   no effective one. A remove can only have observed adds issued before
//!   it.
//! * **register** (LWW): the final value is one of the writes (effective
//!   or indeterminate) with the same timestamp and value, and no effective
//!   write has a greater `(hlc time, hlc node)`.
//! * **ttl** (TTL runs: `EXPIRE` to a far deadline, `PERSIST`): the
//!   content checks above ignore them; the converged expiry of a key has
//!   no floor (no deadline passed, so nothing fired) and every deadline it
//!   keeps was set by an `EXPIRE` of that key that the engine applied (a
//!   deadline names its op). That the replicas' expiries agree is part of
//!   convergence.

use std::collections::{BTreeMap, BTreeSet};

use meridian_engine::crdt::Pn;
use meridian_engine::{
    CausalContext, Deadline, Delta, Dot, Expiry, Incarnation, Kind, ObjectKey, ObjectState, Op,
    RegisterValue, Value,
};

use crate::history::OpRecord;

/// A failed check: which one, and the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub check: &'static str,
    pub detail: String,
}

impl Failure {
    pub fn new(check: &'static str, detail: impl Into<String>) -> Failure {
        Failure {
            check,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.check, self.detail)
    }
}

/// The state every replica converged on.
#[derive(Clone, Debug)]
pub struct Converged {
    pub applied: CausalContext,
    pub objects: BTreeMap<ObjectKey, (Value, Option<ObjectState>)>,
    /// The objects that have an expiry state, and it.
    pub expiries: BTreeMap<ObjectKey, Expiry>,
}

fn effective(op: &OpRecord, applied: &CausalContext) -> Option<bool> {
    op.dot.map(|d| applied.contains(d))
}

/// Runs every check.
pub fn check_all(ops: &[OpRecord], fin: &Converged) -> Result<(), Failure> {
    check_acked(ops, &fin.applied)?;
    for (key, (value, state)) in &fin.objects {
        let (ttl_ops, key_ops): (Vec<&OpRecord>, Vec<&OpRecord>) = ops
            .iter()
            .filter(|o| &o.key == key && o.dot.is_some())
            .partition(|o| matches!(o.op, Op::Expire(_) | Op::Persist));
        check_ttl(key, &ttl_ops, fin.expiries.get(key))?;
        match key.kind() {
            Kind::Counter => check_counter(key, &key_ops, &fin.applied, value, state.as_ref())?,
            Kind::Set => check_set(key, &key_ops, &fin.applied, value)?,
            Kind::Register => check_register(key, &key_ops, &fin.applied, value)?,
            Kind::Map => check_map(key, &key_ops, &fin.applied, value)?,
        }
    }
    Ok(())
}

/// The converged expiry of `key` holds only deadlines its applied
/// `EXPIRE`s set, and no floor.
fn check_ttl(key: &ObjectKey, ops: &[&OpRecord], expiry: Option<&Expiry>) -> Result<(), Failure> {
    let Some(expiry) = expiry else {
        return Ok(());
    };
    if expiry.floor_ms() != 0 {
        return Err(Failure::new(
            "ttl",
            format!(
                "{key:?} has an expiry floor {} though no deadline passed",
                expiry.floor_ms()
            ),
        ));
    }
    for &deadline in expiry.deadlines().values() {
        if !ops
            .iter()
            .any(|o| o.op == Op::Expire(Deadline::At(deadline)))
        {
            return Err(Failure::new(
                "ttl",
                format!("{key:?} keeps deadline {deadline}, which no applied EXPIRE of it set"),
            ));
        }
    }
    Ok(())
}

/// Every acknowledged write took effect.
pub fn check_acked(ops: &[OpRecord], applied: &CausalContext) -> Result<(), Failure> {
    for op in ops.iter().filter(|o| o.acked() && !o.may_be_lost) {
        if effective(op, applied) != Some(true) {
            return Err(Failure::new(
                "acked-write-lost",
                format!(
                    "op {} ({:?} {:?} on node {} at {} ms, level {:?}, dot {:?}) was acknowledged \
                     and is not in the converged applied dots",
                    op.id, op.op, op.key, op.node, op.at_ms, op.level, op.dot
                ),
            ));
        }
    }
    Ok(())
}

/// Per origin, a component's bounds: (joined over effective, joined over all).
#[derive(Default, Clone, Copy, Debug)]
struct Bounds {
    lo: Pn,
    hi: Pn,
}

fn raise(p: &mut Pn, q: Pn) {
    p.inc = p.inc.max(q.inc);
    p.dec = p.dec.max(q.dec);
}

fn check_counter(
    key: &ObjectKey,
    ops: &[&OpRecord],
    applied: &CausalContext,
    value: &Value,
    state: Option<&ObjectState>,
) -> Result<(), Failure> {
    let Value::Counter(got) = value else {
        return Err(Failure::new("counter", format!("{key:?} reads {value:?}")));
    };
    let mut entries: BTreeMap<Incarnation, Bounds> = BTreeMap::new();
    let mut floors: BTreeMap<Incarnation, Bounds> = BTreeMap::new();
    let mut indeterminate = 0;
    let mut deletes = 0;
    let mut plain_sum: i128 = 0;
    for op in ops {
        let Some(Delta::Counter(d)) = &op.delta else {
            return Err(Failure::new(
                "counter",
                format!("op {} has no counter delta", op.id),
            ));
        };
        let eff = effective(op, applied) == Some(true);
        if !eff {
            indeterminate += 1;
        }
        match &op.op {
            Op::Incr(n) if eff => plain_sum += *n as i128,
            Op::Delete => deletes += 1,
            _ => {}
        }
        for (map, parts) in [(&mut entries, d.entries()), (&mut floors, d.floors())] {
            for (&origin, &pn) in parts {
                let b = map.entry(origin).or_default();
                raise(&mut b.hi, pn);
                if eff {
                    raise(&mut b.lo, pn);
                }
            }
        }
    }
    // The final state's components lie within their bounds.
    if let Some(ObjectState::Counter(c)) = state {
        for (what, map, parts) in [
            ("total", &entries, c.entries()),
            ("floor", &floors, c.floors()),
        ] {
            let origins: BTreeSet<Incarnation> = map.keys().chain(parts.keys()).copied().collect();
            for o in origins {
                let b = map.get(&o).copied().unwrap_or_default();
                let v = parts.get(&o).copied().unwrap_or_default();
                let within = |x: u64, lo: u64, hi: u64| lo <= x && x <= hi;
                if !within(v.inc, b.lo.inc, b.hi.inc) || !within(v.dec, b.lo.dec, b.hi.dec) {
                    return Err(Failure::new(
                        "counter",
                        format!(
                            "{key:?}: origin {o}'s {what} is {v:?}, the operations allow \
                             {:?} ..= {:?} ({indeterminate} indeterminate)",
                            b.lo, b.hi
                        ),
                    ));
                }
            }
        }
    }
    // The value.
    let (mut lo, mut hi): (i128, i128) = (0, 0);
    for (o, e) in &entries {
        let f = floors.get(o).copied().unwrap_or_default();
        let inc_lo = e.lo.inc.saturating_sub(f.hi.inc) as i128;
        let inc_hi = e.hi.inc.saturating_sub(f.lo.inc) as i128;
        let dec_lo = e.lo.dec.saturating_sub(f.hi.dec) as i128;
        let dec_hi = e.hi.dec.saturating_sub(f.lo.dec) as i128;
        lo += inc_lo - dec_hi;
        hi += inc_hi - dec_lo;
    }
    let got = *got as i128;
    if !(lo..=hi).contains(&got) {
        return Err(Failure::new(
            "counter",
            format!(
                "{key:?} = {got}, the effective operations give {lo} and with the \
                 {indeterminate} indeterminate ones at most {hi}"
            ),
        ));
    }
    if indeterminate == 0 && deletes == 0 && got != plain_sum {
        return Err(Failure::new(
            "counter",
            format!("{key:?} = {got}, the effective increments sum to {plain_sum}"),
        ));
    }
    Ok(())
}

/// A map of the map runs (`world.rs`): counter fields `c*` only get
/// `HINCRBY`, register fields `r*` get `HSET` and `HDEL`, and the whole
/// map is sometimes deleted. Register fields hold a value some `HSET` of
/// that field wrote. Without a delete of the map whose effect is unknown
/// or real, a counter field is the sum of the effective increments, give
/// or take the indeterminate ones (each adds its amount or nothing): no
/// increment is lost or counted twice, whatever order the deltas took.
fn check_map(
    key: &ObjectKey,
    ops: &[&OpRecord],
    applied: &CausalContext,
    value: &Value,
) -> Result<(), Failure> {
    let Value::Map { fields, count } = value else {
        return Err(Failure::new("map", format!("{key:?} reads {value:?}")));
    };
    if *count != fields.len() as u64 {
        return Err(Failure::new(
            "map",
            format!("{key:?} counts {count} fields and lists {}", fields.len()),
        ));
    }
    let deleted = ops
        .iter()
        .any(|o| matches!(o.op, Op::Delete) && effective(o, applied) != Some(false));
    for (field, got) in fields {
        if field.starts_with(b"r") {
            let written = ops.iter().any(|o| {
                matches!(&o.op, Op::HSet(pairs) if pairs.iter().any(|(f, v)| f == field && v == got))
            });
            if !written {
                return Err(Failure::new(
                    "map",
                    format!(
                        "{key:?} field {} = {}, which no HSET of it wrote",
                        String::from_utf8_lossy(field),
                        String::from_utf8_lossy(got)
                    ),
                ));
            }
        }
    }
    if deleted {
        return Ok(());
    }
    let mut counter_fields: BTreeSet<Vec<u8>> = BTreeSet::new();
    for o in ops {
        if let Op::HIncr(f, _) = &o.op {
            counter_fields.insert(f.clone());
        }
    }
    for f in counter_fields {
        let (mut lo, mut hi) = (0i128, 0i128);
        for o in ops {
            let Op::HIncr(g, n) = &o.op else { continue };
            if *g != f {
                continue;
            }
            let n = *n as i128;
            match effective(o, applied) {
                Some(true) => {
                    lo += n;
                    hi += n;
                }
                _ => {
                    lo += n.min(0);
                    hi += n.max(0);
                }
            }
        }
        let got: i128 = fields
            .iter()
            .find(|(g, _)| *g == f)
            .map_or(Some(0), |(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
            .ok_or_else(|| {
                Failure::new("map", format!("{key:?}: a counter field is not a number"))
            })?;
        if !(lo..=hi).contains(&got) {
            return Err(Failure::new(
                "map",
                format!(
                    "{key:?} field {} = {got}; its effective increments allow {lo} ..= {hi}",
                    String::from_utf8_lossy(&f)
                ),
            ));
        }
    }
    Ok(())
}

/// An operation's effect on a set: element dots it made (per member) and
/// element dots its context cancels.
/// Element dots an operation made, per member, and the context it joins.
type SetEffect = (Vec<(Vec<u8>, Dot)>, CausalContext);

fn set_effect(op: &OpRecord) -> Option<SetEffect> {
    let Some(Delta::Set(d)) = &op.delta else {
        return None;
    };
    let made: Vec<(Vec<u8>, Dot)> = d
        .entries
        .iter()
        .flat_map(|(m, dots)| dots.iter().map(move |dot| (m.clone(), dot)))
        .collect();
    Some((made, d.context.clone()))
}

fn check_set(
    key: &ObjectKey,
    ops: &[&OpRecord],
    applied: &CausalContext,
    value: &Value,
) -> Result<(), Failure> {
    let Value::Set(members) = value else {
        return Err(Failure::new("set", format!("{key:?} reads {value:?}")));
    };
    let present: BTreeSet<&[u8]> = members.iter().map(Vec::as_slice).collect();
    // (member, element dot, op id, effective)
    let mut adds: Vec<(Vec<u8>, Dot, usize, bool)> = Vec::new();
    // (cancelled context, made dots, op id, effective)
    let mut cancels: Vec<(CausalContext, BTreeSet<Dot>, usize, bool)> = Vec::new();
    let mut made_by: BTreeMap<Dot, usize> = BTreeMap::new();
    for op in ops {
        let Some((made, context)) = set_effect(op) else {
            return Err(Failure::new(
                "set",
                format!("op {} has no set delta", op.id),
            ));
        };
        let eff = effective(op, applied) == Some(true);
        let own: BTreeSet<Dot> = made.iter().map(|(_, d)| *d).collect();
        for (m, d) in made {
            made_by.insert(d, op.id);
            adds.push((m, d, op.id, eff));
        }
        cancels.push((context, own, op.id, eff));
    }
    // A remove observed only adds issued before it.
    for (context, own, id, _) in &cancels {
        for d in context.cloud().chain(
            context
                .vector()
                .iter()
                .flat_map(|(n, c)| (1..=c).map(move |i| Dot::new(n, i))),
        ) {
            if own.contains(&d) {
                continue;
            }
            if made_by.get(&d).is_some_and(|&by| by > *id) {
                return Err(Failure::new(
                    "set",
                    format!(
                        "{key:?}: op {id} cancels element {d:?}, made later by op {}",
                        made_by[&d]
                    ),
                ));
            }
        }
    }
    let cancelled = |d: Dot, by_effective: bool| {
        cancels
            .iter()
            .any(|(ctx, own, _, eff)| *eff == by_effective && !own.contains(&d) && ctx.contains(d))
    };
    let mut members_seen: BTreeSet<&[u8]> = BTreeSet::new();
    for (m, ..) in &adds {
        members_seen.insert(m.as_slice());
    }
    for m in members_seen.iter().chain(present.iter()) {
        let of_m = || adds.iter().filter(|(x, ..)| x.as_slice() == *m);
        let must =
            of_m().find(|(_, d, _, eff)| *eff && !cancelled(*d, true) && !cancelled(*d, false));
        let may = of_m().any(|(_, d, ..)| !cancelled(*d, true));
        let is = present.contains(m);
        if let Some((_, d, id, _)) = must
            && !is
        {
            return Err(Failure::new(
                "set-remove",
                format!(
                    "{key:?}: member {:?} is absent, but op {id}'s add (element {d:?}) took effect \
                     and no remove observed it",
                    String::from_utf8_lossy(m)
                ),
            ));
        }
        if is && !may {
            return Err(Failure::new(
                "set-remove",
                format!(
                    "{key:?}: member {:?} is present, but every add of it was removed by an \
                     operation that observed it",
                    String::from_utf8_lossy(m)
                ),
            ));
        }
    }
    Ok(())
}

fn lww_key(hlc: meridian_engine::Hlc) -> (u64, u64) {
    (hlc.time, hlc.node.0)
}

fn check_register(
    key: &ObjectKey,
    ops: &[&OpRecord],
    applied: &CausalContext,
    value: &Value,
) -> Result<(), Failure> {
    let Value::Register(got) = value else {
        return Err(Failure::new("register", format!("{key:?} reads {value:?}")));
    };
    let written = |op: &OpRecord| match &op.op {
        Op::Put(v) => Some(v.clone()),
        _ => None,
    };
    let effective_writes = || ops.iter().filter(|o| effective(o, applied) == Some(true));
    let Some(RegisterValue {
        value: got_value,
        hlc,
    }) = got
    else {
        if let Some(w) = effective_writes().next() {
            return Err(Failure::new(
                "register",
                format!("{key:?} was never written, but op {} took effect", w.id),
            ));
        }
        return Ok(());
    };
    let Some(winner) = ops
        .iter()
        .find(|o| o.hlc.map(lww_key) == Some(lww_key(*hlc)))
    else {
        return Err(Failure::new(
            "register",
            format!("{key:?} holds {got:?}, written by no operation"),
        ));
    };
    if &written(winner) != got_value {
        return Err(Failure::new(
            "register",
            format!(
                "{key:?} holds {got:?}, but op {} stamped {hlc:?} wrote {:?}",
                winner.id, winner.op
            ),
        ));
    }
    if let Some(beats) = effective_writes()
        .filter(|o| lww_key(o.hlc.unwrap()) > lww_key(*hlc))
        .max_by_key(|o| lww_key(o.hlc.unwrap()))
    {
        return Err(Failure::new(
            "lww",
            format!(
                "{key:?} holds op {}'s write (hlc {:?}), but op {} (hlc {:?}) took effect and is \
                 later by (hlc time, node)",
                winner.id,
                lww_key(*hlc),
                beats.id,
                lww_key(beats.hlc.unwrap())
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Prove the checkers can fail: hand-made histories with the state a
    //! broken store would converge on.
    use super::*;
    use crate::history::{Level, Outcome};
    use meridian_engine::crdt::{Counter, OrSet, Register};
    use meridian_engine::{Hlc, Kind, StreamId};

    fn op(id: usize, key: &ObjectKey, op: Op, dot: Dot, delta: Delta, hlc: Hlc) -> OpRecord {
        OpRecord {
            id,
            node: 0,
            at_ms: id as u64,
            key: key.clone(),
            op,
            level: Level::Local,
            periodic: false,
            boot: 1,
            dot: Some(dot),
            hlc: Some(hlc),
            delta: Some(delta),
            outcome: Outcome::Acked { at_ms: id as u64 },
            may_be_lost: false,
            durable_somewhere: true,
            local_ok: true,
            remote_done: true,
            token: None,
        }
    }

    fn converged(applied: &[Dot], key: &ObjectKey, value: Value, state: ObjectState) -> Converged {
        Converged {
            applied: applied.iter().copied().collect(),
            objects: [(key.clone(), (value, Some(state)))].into_iter().collect(),
            expiries: BTreeMap::new(),
        }
    }

    const A: Incarnation = Incarnation(1);
    const B: Incarnation = Incarnation(2);

    fn hlc(time: u64, node: Incarnation) -> Hlc {
        Hlc { time, node }
    }

    /// The `n`-th record of `node`'s group-0 stream.
    fn dot(node: Incarnation, n: u64) -> Dot {
        Dot::new(StreamId::from(node), n)
    }

    #[test]
    fn checkers_reject_a_lost_acked_write() {
        let k = ObjectKey::new(Kind::Counter, "c").unwrap();
        let mut c = Counter::new();
        let d1 = c.incr(A, 5).unwrap();
        let ops = vec![op(
            1,
            &k,
            Op::Incr(5),
            dot(A, 1),
            Delta::Counter(d1),
            hlc(1, A),
        )];
        let fin = converged(
            &[],
            &k,
            Value::Counter(0),
            ObjectState::Counter(Counter::new()),
        );
        assert_eq!(check_all(&ops, &fin).unwrap_err().check, "acked-write-lost");
        let fin = converged(&[dot(A, 1)], &k, Value::Counter(5), ObjectState::Counter(c));
        check_all(&ops, &fin).unwrap();
    }

    #[test]
    fn checkers_reject_a_counter_that_counts_twice_or_loses_one() {
        let k = ObjectKey::new(Kind::Counter, "c").unwrap();
        let mut a = Counter::new();
        let d1 = a.incr(A, 5).unwrap();
        let mut b = Counter::new();
        let d2 = b.incr(B, 3).unwrap();
        let ops = vec![
            op(
                1,
                &k,
                Op::Incr(5),
                dot(A, 1),
                Delta::Counter(d1.clone()),
                hlc(1, A),
            ),
            op(
                2,
                &k,
                Op::Incr(3),
                dot(B, 1),
                Delta::Counter(d2.clone()),
                hlc(2, B),
            ),
        ];
        let applied = [dot(A, 1), dot(B, 1)];
        let mut good = a.clone();
        good.merge(&d2);
        check_all(
            &ops,
            &converged(
                &applied,
                &k,
                Value::Counter(8),
                ObjectState::Counter(good.clone()),
            ),
        )
        .unwrap();
        // Lost B's increment.
        let e = check_all(
            &ops,
            &converged(&applied, &k, Value::Counter(5), ObjectState::Counter(a)),
        )
        .unwrap_err();
        assert_eq!(e.check, "counter");
        // Counted A's twice (its running total doubled).
        let mut twice = good.clone();
        twice.merge(&Counter::new().incr(A, 10).unwrap());
        let e = check_all(
            &ops,
            &converged(
                &applied,
                &k,
                Value::Counter(13),
                ObjectState::Counter(twice),
            ),
        )
        .unwrap_err();
        assert_eq!(e.check, "counter");
    }

    /// A adds m while B (which saw an older add of m) removes it: add wins.
    #[test]
    fn checkers_reject_a_remove_that_cancels_an_unobserved_add() {
        let k = ObjectKey::new(Kind::Set, "s").unwrap();
        let m = b"m".to_vec();
        let mut a = OrSet::new();
        let add0 = a.add(A, std::slice::from_ref(&m));
        let mut b = OrSet::new();
        b.merge(&add0);
        let add1 = a.add(A, std::slice::from_ref(&m)); // concurrent with B's remove
        let rm = b.remove(std::slice::from_ref(&m));
        let ops = vec![
            op(
                1,
                &k,
                Op::Add(vec![m.clone()]),
                dot(A, 1),
                Delta::Set(add0),
                hlc(1, A),
            ),
            op(
                2,
                &k,
                Op::Add(vec![m.clone()]),
                dot(A, 2),
                Delta::Set(add1.clone()),
                hlc(2, A),
            ),
            op(
                3,
                &k,
                Op::Remove(vec![m.clone()]),
                dot(B, 1),
                Delta::Set(rm.clone()),
                hlc(3, B),
            ),
        ];
        let applied = [dot(A, 1), dot(A, 2), dot(B, 1)];
        let mut good = a.clone();
        good.merge(&rm);
        assert!(good.contains(&m), "add wins");
        let value = |s: &OrSet| Value::Set(s.members().map(<[u8]>::to_vec).collect());
        check_all(
            &ops,
            &converged(&applied, &k, value(&good), ObjectState::Set(good.clone())),
        )
        .unwrap();
        // A broken remove that dropped the unobserved add too.
        let broken = OrSet::new();
        let e = check_all(
            &ops,
            &converged(
                &applied,
                &k,
                value(&broken),
                ObjectState::Set(broken.clone()),
            ),
        )
        .unwrap_err();
        assert_eq!(e.check, "set-remove");
        // And a remove that is ignored: the observed add stays.
        let only_first = {
            let mut s = OrSet::new();
            s.merge(&add1);
            s
        };
        let ops2 = vec![ops[0].clone(), ops[2].clone()];
        let applied2 = [dot(A, 1), dot(B, 1)];
        let e = check_all(
            &ops2,
            &converged(
                &applied2,
                &k,
                value(&only_first),
                ObjectState::Set(only_first.clone()),
            ),
        )
        .unwrap_err();
        assert_eq!(e.check, "set-remove");
    }

    /// Two writes with the same HLC time: the larger node id wins.
    #[test]
    fn checkers_reject_an_lww_tie_broken_the_wrong_way() {
        let k = ObjectKey::new(Kind::Register, "r").unwrap();
        let wa = Register::write(hlc(100, A), Some(b"a".to_vec()));
        let wb = Register::write(hlc(100, B), Some(b"b".to_vec()));
        let ops = vec![
            op(
                1,
                &k,
                Op::Put(b"a".to_vec()),
                dot(A, 1),
                Delta::Register(wa.clone()),
                hlc(100, A),
            ),
            op(
                2,
                &k,
                Op::Put(b"b".to_vec()),
                dot(B, 1),
                Delta::Register(wb.clone()),
                hlc(100, B),
            ),
        ];
        let applied = [dot(A, 1), dot(B, 1)];
        let reg = |w: &Register| {
            Value::Register(Some(RegisterValue {
                value: w.value.clone(),
                hlc: w.hlc,
            }))
        };
        check_all(
            &ops,
            &converged(&applied, &k, reg(&wb), ObjectState::Register(wb.clone())),
        )
        .unwrap();
        let e = check_all(
            &ops,
            &converged(&applied, &k, reg(&wa), ObjectState::Register(wa.clone())),
        )
        .unwrap_err();
        assert_eq!(e.check, "lww");
        // A value no one wrote.
        let bogus = Register::write(hlc(100, B), Some(b"z".to_vec()));
        let e = check_all(
            &ops,
            &converged(
                &applied,
                &k,
                reg(&bogus),
                ObjectState::Register(bogus.clone()),
            ),
        )
        .unwrap_err();
        assert_eq!(e.check, "register");
    }

    #[test]
    fn checkers_reject_a_deadline_no_expire_set_or_a_floor() {
        let k = ObjectKey::new(Kind::Counter, "c").unwrap();
        let mut c = Counter::new();
        let incr = c.incr(A, 1).unwrap();
        let at = 2_000_000_000_000;
        let mut set = Expiry::new();
        let delta = set.expire_at(A, 1_000, at);
        let ops = vec![
            op(
                0,
                &k,
                Op::Incr(1),
                dot(A, 1),
                Delta::Counter(incr),
                hlc(10, A),
            ),
            op(
                1,
                &k,
                Op::Expire(Deadline::At(at)),
                dot(A, 2),
                Delta::Expiry(delta),
                hlc(20, A),
            ),
        ];
        let applied = [dot(A, 1), dot(A, 2)];
        let with = |expiry: Expiry| {
            let mut fin = converged(
                &applied,
                &k,
                Value::Counter(1),
                ObjectState::Counter(c.clone()),
            );
            fin.expiries.insert(k.clone(), expiry);
            fin
        };
        check_all(&ops, &with(set.clone())).unwrap();
        // A deadline no EXPIRE of the key set.
        let mut other = Expiry::new();
        other.expire_at(B, 1_000, at + 1);
        let e = check_all(&ops, &with(other)).unwrap_err();
        assert_eq!(e.check, "ttl");
        // A floor: something fired though no deadline passed.
        let mut fired = set.clone();
        fired.fire(at).unwrap();
        let e = check_all(&ops, &with(fired)).unwrap_err();
        assert_eq!(e.check, "ttl");
    }
}
