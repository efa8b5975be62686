//! Property tests for the CRDT laws the whole system leans on
//! (docs/architecture.md §2, §9): for the counter, the set and the register,
//!
//! * joins of full states are commutative, associative and idempotent, and
//!   so are joins of deltas (in any order, grouped any way, twice);
//! * `merge(S, delta(op)) == apply(op)`: an operation mutates its replica's
//!   state directly, so a *copy* of the state before the operation, joined
//!   with the returned delta, must equal the state after it;
//! * random multi-replica histories (local operations interleaved with
//!   deliveries of random subsets, permutations and duplicates of every
//!   delta, and full states used as deltas, `Scope::Full`) converge once
//!   everything is delivered, and agree with an independent model at every
//!   step:
//!   - counter: value = Σ increments − Σ decrements − what the deletes
//!     observed (per origin: the prefix of its operations each delete had
//!     seen);
//!   - set: a member is present iff some add of it is known and was not
//!     observed by a remove (or a re-add) that is known; the model tracks
//!     add dots and observed dots, and the implementation's member dots and
//!     causal context must equal the model's exactly;
//!   - register: the value is the known write with the largest
//!     `(hlc, node)`, and a local write always wins locally.
//! * add wins over a concurrent remove;
//! * a one-member (`Scope::Listed`) delta only needs the listed members: a
//!   partial view holding just those plus the context ends up with the same
//!   entries as the full set, and the other members are untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use meridian_engine::crdt::{Counter, OrSet, Register, Scope, register};
use meridian_engine::{
    Clock, Delta, Dot, Hlc, Incarnation, ObjectState, PhysicalTime, StreamId, Value,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// The generic history runner (common/history.rs), over engine object states.

#[path = "common/history.rs"]
mod history;

use history::{History, REPLICAS, Replica, context_dots, finish, node, run, steps};

/// The wall-clock milliseconds of history step `step`: several steps share
/// a millisecond so the HLC's logical part is used.
fn ms(step: u64) -> u64 {
    (step / 3) * 5
}

/// Joins `delta` into an optional state (absent = never touched).
fn merge_opt(state: &mut Option<ObjectState>, delta: &Delta) -> bool {
    match state {
        Some(s) => s.merge(delta).expect("same type"),
        None => {
            *state = Some(ObjectState::from_delta(delta));
            true
        }
    }
}

/// Joins of full states: commutative, associative, idempotent.
fn assert_state_laws(states: &[Option<ObjectState>]) {
    let join = |a: &Option<ObjectState>, b: &Option<ObjectState>| -> Option<ObjectState> {
        let mut out = a.clone();
        if let Some(b) = b {
            merge_opt(&mut out, &b.to_delta());
        }
        out
    };
    for a in states {
        assert_eq!(&join(a, a), a, "join is not idempotent");
        for b in states {
            assert_eq!(join(a, b), join(b, a), "join is not commutative");
            for c in states {
                assert_eq!(
                    join(&join(a, b), c),
                    join(a, &join(b, c)),
                    "join is not associative"
                );
            }
        }
    }
}

/// Joins of deltas into a state: any order, any grouping, twice.
fn assert_delta_laws(base: &Option<ObjectState>, deltas: &[Delta]) {
    let apply = |s: &Option<ObjectState>, ds: &[&Delta]| {
        let mut out = s.clone();
        for d in ds {
            merge_opt(&mut out, d);
        }
        out
    };
    for (i, d1) in deltas.iter().enumerate() {
        let once = apply(base, &[d1]);
        let mut twice = once.clone();
        let changed = merge_opt(&mut twice, d1);
        assert_eq!(twice, once, "a delta joined twice differs from once");
        assert!(!changed, "re-joining a delta reported a change");
        for d2 in &deltas[i + 1..] {
            assert_eq!(
                apply(base, &[d1, d2]),
                apply(base, &[d2, d1]),
                "delta joins are not commutative"
            );
            // Delta groups: (d1 ⊔ d2), joined as one full-scope state.
            let mut group = Some(ObjectState::from_delta(d1));
            merge_opt(&mut group, d2);
            let grouped = apply(base, &[&group.unwrap().to_delta()]);
            assert_eq!(
                grouped,
                apply(base, &[d1, d2]),
                "joining a delta group differs from joining its deltas"
            );
            for d3 in deltas.iter().skip(i + 2).take(3) {
                let mut right = Some(ObjectState::from_delta(d2));
                merge_opt(&mut right, d3);
                let left = apply(base, &[d1, d2, d3]);
                assert_eq!(
                    apply(base, &[d1, &right.unwrap().to_delta()]),
                    left,
                    "delta joins are not associative"
                );
            }
        }
    }
}

/// Applies the state and delta laws to what a history produced.
fn assert_laws<R: Replica<State = Option<ObjectState>, Delta = Delta>>(h: &History<R>) {
    let states: Vec<Option<ObjectState>> = h
        .replicas
        .iter()
        .map(|r| r.state().clone())
        .chain(std::iter::once(None))
        .collect();
    assert_state_laws(&states);
    let deltas: Vec<Delta> = h.pool.iter().take(8).map(|(d, _)| d.clone()).collect();
    for base in &states {
        assert_delta_laws(base, &deltas);
    }
    // Full states are deltas too.
    let fulls: Vec<Delta> = h
        .replicas
        .iter()
        .filter_map(|r| r.full().map(|f| f.0))
        .collect();
    assert_delta_laws(&None, &fulls);
}

// ---------------------------------------------------------------------------
// Counter.

#[derive(Clone, Debug)]
enum CounterOp {
    Incr(i64),
    Delete,
}

/// The counter model: per origin, the amounts of the operations this
/// replica knows (a prefix of the origin's sequence, since each delta
/// carries the origin's running totals), and per origin how long a prefix
/// the deletes it knows had observed.
#[derive(Clone, Debug, Default)]
struct CounterKnowledge {
    known: Vec<Vec<i64>>,
    floor: Vec<usize>,
}

impl CounterKnowledge {
    fn new() -> Self {
        CounterKnowledge {
            known: vec![Vec::new(); REPLICAS],
            floor: vec![0; REPLICAS],
        }
    }

    fn join(&mut self, other: &CounterKnowledge) {
        for o in 0..REPLICAS {
            let (mine, theirs) = (&mut self.known[o], &other.known[o]);
            let common = mine.len().min(theirs.len());
            assert_eq!(mine[..common], theirs[..common], "model: not prefixes");
            if theirs.len() > mine.len() {
                *mine = theirs.clone();
            }
            self.floor[o] = self.floor[o].max(other.floor[o]);
        }
    }

    fn value(&self) -> i64 {
        (0..REPLICAS)
            .map(|o| {
                let all: i64 = self.known[o].iter().sum();
                let reset: i64 = self.known[o][..self.floor[o]].iter().sum();
                all - reset
            })
            .sum()
    }
}

#[derive(Clone, Debug)]
struct CounterNote {
    knowledge: CounterKnowledge,
    /// For a delete: what it observed, per origin (prefix lengths).
    delete_observed: Option<Vec<usize>>,
}

#[derive(Clone, Debug)]
struct CounterReplica {
    index: usize,
    state: Option<ObjectState>,
    model: CounterKnowledge,
}

impl Replica for CounterReplica {
    type State = Option<ObjectState>;
    type Delta = Delta;

    fn merge(state: &mut Option<ObjectState>, delta: &Delta) -> bool {
        merge_opt(state, delta)
    }
    type Op = CounterOp;
    type Note = CounterNote;

    fn new(index: usize) -> Self {
        CounterReplica {
            index,
            state: Some(ObjectState::Counter(Counter::new())),
            model: CounterKnowledge::new(),
        }
    }

    fn state(&self) -> &Option<ObjectState> {
        &self.state
    }

    fn apply(&mut self, op: &CounterOp, _step: u64) -> Option<(Delta, CounterNote)> {
        let state = self
            .state
            .get_or_insert_with(|| ObjectState::Counter(Counter::new()));
        let ObjectState::Counter(c) = state else {
            unreachable!()
        };
        Some(match op {
            CounterOp::Incr(d) => {
                let delta = c.incr(node(self.index), *d).unwrap();
                self.model.known[self.index].push(*d);
                let mut note = CounterKnowledge::new();
                note.known[self.index] = self.model.known[self.index].clone();
                (
                    Delta::Counter(delta),
                    CounterNote {
                        knowledge: note,
                        delete_observed: None,
                    },
                )
            }
            CounterOp::Delete => {
                let delta = c.delete();
                let observed: Vec<usize> = self.model.known.iter().map(Vec::len).collect();
                for (o, len) in observed.iter().enumerate() {
                    self.model.floor[o] = self.model.floor[o].max(*len);
                }
                (
                    Delta::Counter(delta),
                    CounterNote {
                        knowledge: self.model.clone(),
                        delete_observed: Some(observed),
                    },
                )
            }
        })
    }

    fn full(&self) -> Option<(Delta, CounterNote)> {
        let note = CounterNote {
            knowledge: self.model.clone(),
            delete_observed: None,
        };
        self.state.as_ref().map(|s| (s.to_delta(), note))
    }

    fn receive(&mut self, delta: &Delta, note: &CounterNote, _step: u64) {
        merge_opt(&mut self.state, delta);
        self.model.join(&note.knowledge);
    }

    fn check(&self) {
        let value = match &self.state {
            None => 0,
            Some(s) => match s.value() {
                Value::Counter(v) => v,
                other => panic!("{other:?}"),
            },
        };
        assert_eq!(
            value,
            self.model.value(),
            "counter value differs from the model"
        );
    }
}

fn counter_op() -> impl Strategy<Value = CounterOp> {
    prop_oneof![
        // Zero increments are no-ops with empty deltas (counter.rs unit tests).
        6 => prop_oneof![-50i64..=-1, 1i64..=50].prop_map(CounterOp::Incr),
        1 => Just(CounterOp::Delete),
    ]
}

// ---------------------------------------------------------------------------
// Set.

/// Members are drawn from a small universe so histories collide.
const MEMBERS: u8 = 5;

#[derive(Clone, Debug)]
enum SetOp {
    Add(Vec<u8>),
    Remove(Vec<u8>),
    Delete,
}

/// The set model, in dots: every add known here (dot → member) and every
/// add dot some known remove, re-add or delete had observed.
#[derive(Clone, Debug, Default)]
struct SetKnowledge {
    adds: BTreeMap<Dot, u8>,
    observed: BTreeSet<Dot>,
}

impl SetKnowledge {
    fn live(&self, member: u8) -> BTreeSet<Dot> {
        self.adds
            .iter()
            .filter(|&(d, &m)| m == member && !self.observed.contains(d))
            .map(|(&d, _)| d)
            .collect()
    }

    fn join(&mut self, other: &SetKnowledge) {
        for (&d, &m) in &other.adds {
            let prev = self.adds.insert(d, m);
            assert!(prev.is_none() || prev == Some(m), "a dot named two members");
        }
        self.observed.extend(other.observed.iter().copied());
    }
}

#[derive(Clone, Debug)]
struct SetReplica {
    index: usize,
    state: Option<ObjectState>,
    model: SetKnowledge,
}

fn members(ms: &[u8]) -> Vec<Vec<u8>> {
    ms.iter().map(|&m| vec![m]).collect()
}

impl SetReplica {
    fn set(&mut self) -> &mut OrSet {
        let state = self
            .state
            .get_or_insert_with(|| ObjectState::Set(OrSet::new()));
        match state {
            ObjectState::Set(s) => s,
            _ => unreachable!(),
        }
    }
}

impl Replica for SetReplica {
    type State = Option<ObjectState>;
    type Delta = Delta;

    fn merge(state: &mut Option<ObjectState>, delta: &Delta) -> bool {
        merge_opt(state, delta)
    }
    type Op = SetOp;
    type Note = SetKnowledge;

    fn new(index: usize) -> Self {
        SetReplica {
            index,
            state: Some(ObjectState::Set(OrSet::new())),
            model: SetKnowledge::default(),
        }
    }

    fn state(&self) -> &Option<ObjectState> {
        &self.state
    }

    fn apply(&mut self, op: &SetOp, _step: u64) -> Option<(Delta, SetKnowledge)> {
        let me = node(self.index);
        let mut note = SetKnowledge::default();
        let delta = match op {
            SetOp::Add(ms) => {
                let delta = self.set().add(me, &members(ms));
                for m in ms.iter().copied().collect::<BTreeSet<u8>>() {
                    let dots: Vec<Dot> = delta.entries[&vec![m]].iter().collect();
                    assert_eq!(dots.len(), 1, "an add makes one dot");
                    let dot = dots[0];
                    assert_eq!(dot.stream, StreamId::from(me));
                    assert!(
                        !self.model.adds.contains_key(&dot) && !self.model.observed.contains(&dot),
                        "add reused a dot"
                    );
                    let old = self.model.live(m);
                    note.observed.extend(old.iter().copied());
                    note.adds.insert(dot, m);
                }
                delta
            }
            SetOp::Remove(ms) => {
                let delta = self.set().remove(&members(ms));
                for &m in ms {
                    note.observed.extend(self.model.live(m));
                }
                delta
            }
            SetOp::Delete => {
                // The emptied state: every dot this replica has seen
                // (each an add it knows of) is observed removed.
                let delta = self.set().delete();
                note.observed.extend(context_dots(&delta.context));
                assert!(delta.entries.is_empty(), "a delete lists no members");
                assert_eq!(delta.scope, Scope::Full, "a delete is a full state");
                delta
            }
        };
        assert!(
            delta.scope == Scope::Listed || matches!(op, SetOp::Delete),
            "operation deltas other than delete are listed"
        );
        self.model.join(&note);
        Some((Delta::Set(delta), note))
    }

    fn full(&self) -> Option<(Delta, SetKnowledge)> {
        let delta = self.state.as_ref()?.to_delta();
        let Delta::Set(d) = &delta else {
            unreachable!()
        };
        assert_eq!(d.scope, Scope::Full);
        Some((delta, self.model.clone()))
    }

    fn receive(&mut self, delta: &Delta, note: &SetKnowledge, _step: u64) {
        merge_opt(&mut self.state, delta);
        self.model.join(note);
    }

    fn check(&self) {
        let empty = OrSet::new();
        let set = match &self.state {
            None => &empty,
            Some(ObjectState::Set(s)) => s,
            Some(other) => panic!("{other:?}"),
        };
        for m in 0..MEMBERS {
            let dots: BTreeSet<Dot> = set
                .dots(&[m])
                .map(|d| d.iter().collect())
                .unwrap_or_default();
            assert_eq!(
                dots,
                self.model.live(m),
                "dots of member {m} differ from the model"
            );
        }
        let expected: BTreeSet<Dot> = self
            .model
            .adds
            .keys()
            .chain(self.model.observed.iter())
            .copied()
            .collect();
        assert_eq!(
            context_dots(set.context()),
            expected,
            "the causal context differs from the dots the model has seen"
        );
        assert!(set.members().all(|m| m.len() == 1 && m[0] < MEMBERS));
    }
}

fn member_list() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(0..MEMBERS, 1..4)
}

fn set_op() -> impl Strategy<Value = SetOp> {
    prop_oneof![
        5 => member_list().prop_map(SetOp::Add),
        3 => member_list().prop_map(SetOp::Remove),
        1 => Just(SetOp::Delete),
    ]
}

// ---------------------------------------------------------------------------
// Register.

#[derive(Clone, Debug)]
enum RegisterOp {
    Put(u8),
    Delete,
}

#[derive(Debug)]
struct RegisterReplica {
    index: usize,
    clock: Clock,
    state: Option<ObjectState>,
    /// Every write known here.
    model: BTreeMap<Hlc, Option<Vec<u8>>>,
}

/// Replicas' wall clocks disagree by up to 60 ms (well inside the 500 ms
/// the HLC accepts).
fn wall(index: usize, now_ms: u64) -> PhysicalTime {
    PhysicalTime::from_unix_ms(1_700_000_000_000 + now_ms + 30 * index as u64)
}

impl Replica for RegisterReplica {
    type State = Option<ObjectState>;
    type Delta = Delta;

    fn merge(state: &mut Option<ObjectState>, delta: &Delta) -> bool {
        merge_opt(state, delta)
    }
    type Op = RegisterOp;
    type Note = (Hlc, Option<Vec<u8>>);

    fn new(index: usize) -> Self {
        RegisterReplica {
            index,
            clock: Clock::new(node(index), Clock::DEFAULT_MAX_OFFSET),
            state: None,
            model: BTreeMap::new(),
        }
    }

    fn state(&self) -> &Option<ObjectState> {
        &self.state
    }

    fn apply(&mut self, op: &RegisterOp, step: u64) -> Option<(Delta, Self::Note)> {
        let now_ms = ms(step);
        let hlc = self.clock.now(wall(self.index, now_ms));
        assert_eq!(hlc.node, node(self.index));
        let value = match op {
            RegisterOp::Put(v) => Some(vec![*v]),
            RegisterOp::Delete => None,
        };
        let write = Register::write(hlc, value.clone());
        let mut reg = self.state.as_ref().map(|s| match s {
            ObjectState::Register(r) => r.clone(),
            other => panic!("{other:?}"),
        });
        let won = register::merge_into(&mut reg, &write);
        assert!(
            won,
            "a local write must win over everything this replica has seen"
        );
        self.state = reg.map(ObjectState::Register);
        self.model.insert(hlc, value.clone());
        Some((Delta::Register(write), (hlc, value)))
    }

    fn full(&self) -> Option<(Delta, Self::Note)> {
        let state = self.state.as_ref()?;
        let (&hlc, v) = self.model.iter().next_back().expect("a state has a write");
        Some((state.to_delta(), (hlc, v.clone())))
    }

    fn receive(&mut self, delta: &Delta, note: &Self::Note, step: u64) {
        let now_ms = ms(step);
        let Delta::Register(r) = delta else {
            unreachable!()
        };
        self.clock
            .observe(r.hlc, wall(self.index, now_ms))
            .expect("skew is within the limit");
        merge_opt(&mut self.state, delta);
        self.model.insert(note.0, note.1.clone());
    }

    fn check(&self) {
        let winner = self
            .model
            .iter()
            .next_back()
            .map(|(&hlc, v)| (hlc, v.clone()));
        match (&self.state, winner) {
            (None, None) => {}
            (Some(ObjectState::Register(r)), Some((hlc, v))) => {
                assert_eq!(r.hlc, hlc, "register does not hold the largest (hlc, node)");
                assert_eq!(r.value, v);
            }
            (s, w) => panic!("register {s:?} vs model {w:?}"),
        }
    }
}

fn register_op() -> impl Strategy<Value = RegisterOp> {
    prop_oneof![
        4 => any::<u8>().prop_map(RegisterOp::Put),
        1 => Just(RegisterOp::Delete),
    ]
}

// ---------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn counter_histories_converge_and_match_the_model(
        steps in steps(counter_op(), 60),
        seed in any::<u64>(),
    ) {
        let mut h = run::<CounterReplica>(&steps);
        assert_laws(&h);
        finish(&mut h, seed);
        // At the end: Σ increments − Σ decrements − what the deletes observed,
        // where a delete observed, per origin, the prefix it had seen.
        let mut all: Vec<Vec<i64>> = vec![Vec::new(); REPLICAS];
        let mut floor = [0usize; REPLICAS];
        for (_, note) in &h.pool {
            for (all, known) in all.iter_mut().zip(&note.knowledge.known) {
                if known.len() > all.len() {
                    *all = known.clone();
                }
            }
            if let Some(observed) = &note.delete_observed {
                for (floor, &seen) in floor.iter_mut().zip(observed) {
                    *floor = (*floor).max(seen);
                }
            }
        }
        let increments: i64 = all.iter().flatten().filter(|&&d| d > 0).sum();
        let decrements: i64 = all.iter().flatten().filter(|&&d| d < 0).map(|d| -d).sum();
        let reset: i64 = (0..REPLICAS).map(|o| all[o][..floor[o]].iter().sum::<i64>()).sum();
        let expected = increments - decrements - reset;
        for r in &h.replicas {
            let v = r.state.as_ref().map_or(Value::Counter(0), ObjectState::value);
            prop_assert_eq!(v, Value::Counter(expected));
        }
    }

    #[test]
    fn set_histories_converge_and_match_the_model(
        steps in steps(set_op(), 60),
        seed in any::<u64>(),
    ) {
        let mut h = run::<SetReplica>(&steps);
        assert_laws(&h);
        finish(&mut h, seed);
        // At the end: present iff some add of it was observed by no remove.
        let mut adds: BTreeMap<Dot, u8> = BTreeMap::new();
        let mut observed: BTreeSet<Dot> = BTreeSet::new();
        for (_, note) in &h.pool {
            adds.extend(note.adds.iter().map(|(&d, &m)| (d, m)));
            observed.extend(note.observed.iter().copied());
        }
        let expected: Vec<Vec<u8>> = (0..MEMBERS)
            .filter(|m| adds.iter().any(|(d, a)| a == m && !observed.contains(d)))
            .map(|m| vec![m])
            .collect();
        for r in &h.replicas {
            let v = r.state.as_ref().map_or(Value::Set(Vec::new()), ObjectState::value);
            prop_assert_eq!(v, Value::Set(expected.clone()));
        }
    }

    #[test]
    fn register_histories_converge_on_the_largest_write(
        steps in steps(register_op(), 60),
        seed in any::<u64>(),
    ) {
        let mut h = run::<RegisterReplica>(&steps);
        assert_laws(&h);
        finish(&mut h, seed);
        let winner = h.pool.iter().map(|(_, n)| n.clone()).max_by_key(|n| n.0);
        for r in &h.replicas {
            match (&r.state, &winner) {
                (None, None) => {}
                (Some(ObjectState::Register(reg)), Some((hlc, v))) => {
                    prop_assert_eq!(reg.hlc, *hlc);
                    prop_assert_eq!(&reg.value, v);
                }
                (s, w) => prop_assert!(false, "{:?} vs {:?}", s, w),
            }
        }
    }

    /// Add wins: after any shared history, one replica removes a member
    /// while another concurrently (re-)adds it; once both deltas are
    /// exchanged the member is present everywhere, with exactly the
    /// concurrent add's dot.
    #[test]
    fn add_wins_over_a_concurrent_remove(
        steps in steps(set_op(), 30),
        member in 0..MEMBERS,
        remover in 0..REPLICAS,
        adder_offset in 1..REPLICAS,
    ) {
        let mut h = run::<SetReplica>(&steps);
        // Bring everyone level, then make sure the member is present.
        finish(&mut h, 7);
        let adder = (remover + adder_offset) % REPLICAS;
        let (d0, n0) = h.replicas[0].apply(&SetOp::Add(vec![member]), 0).expect("a set operation always applies");
        for r in &mut h.replicas[1..] {
            r.receive(&d0, &n0, 0);
        }
        let (rm, rm_note) = h.replicas[remover].apply(&SetOp::Remove(vec![member]), 0).expect("a set operation always applies");
        let (add, add_note) = h.replicas[adder].apply(&SetOp::Add(vec![member]), 0).expect("a set operation always applies");
        let Delta::Set(add_set) = &add else { unreachable!() };
        let new_dot = add_set.entries[&vec![member]].iter().next().unwrap();
        let (rm_r, add_r) = (remover, adder);
        h.replicas[add_r].receive(&rm, &rm_note, 0);
        h.replicas[rm_r].receive(&add, &add_note, 0);
        for i in 0..REPLICAS {
            if i != rm_r && i != add_r {
                // A bystander gets them in the other order.
                h.replicas[i].receive(&add, &add_note, 0);
                h.replicas[i].receive(&rm, &rm_note, 0);
            }
        }
        for r in &h.replicas {
            r.check();
            let Some(ObjectState::Set(s)) = &r.state else { unreachable!() };
            prop_assert!(s.contains(&[member]), "add lost to a concurrent remove");
            let dots: Vec<Dot> = s.dots(&[member]).unwrap().iter().collect();
            prop_assert_eq!(dots, vec![new_dot]);
        }
    }

    /// A `Listed` delta joined into a partial view (only the listed
    /// members, plus the whole context) yields the same entries for those
    /// members and the same context as joining it into the full set, and
    /// joining it into the full set touches no other member: the cost of a
    /// one-member delta does not depend on the set's size.
    #[test]
    fn listed_deltas_only_need_the_listed_members(
        steps in steps(set_op(), 60),
        target in 0..REPLICAS,
        origin in 0..REPLICAS,
        op in set_op(),
    ) {
        let mut h = run::<SetReplica>(&steps);
        let full_before = match h.replicas[target].state.clone() {
            Some(ObjectState::Set(s)) => s,
            _ => OrSet::new(),
        };
        // A delete is the emptied full state (it lists no members), not a
        // listed delta.
        prop_assume!(!matches!(op, SetOp::Delete));
        let (delta, _) = h.replicas[origin].apply(&op, 0).expect("a set operation always applies");
        let Delta::Set(delta) = delta else { unreachable!() };
        prop_assert_eq!(delta.scope, Scope::Listed);
        let listed: BTreeSet<Vec<u8>> = delta.members().map(<[u8]>::to_vec).collect();
        // The delta's context only names dots of listed members' adds.
        for d in context_dots(&delta.context) {
            let member = h.replicas[origin].model.adds.get(&d).copied();
            prop_assert!(
                member.is_some_and(|m| listed.contains(&vec![m])),
                "a listed delta's context names dot {:?} of an unlisted member", d
            );
        }
        let mut full = full_before.clone();
        let full_changed = full.merge(&delta);
        let (entries, context) = full_before.clone().into_parts();
        let partial: BTreeMap<Vec<u8>, _> =
            entries.into_iter().filter(|(m, _)| listed.contains(m)).collect();
        let mut view = OrSet::from_parts(partial, context);
        let view_changed = view.merge(&delta);
        prop_assert_eq!(full_changed, view_changed);
        prop_assert_eq!(view.context(), full.context());
        for (m, dots) in view.entries() {
            prop_assert!(listed.contains(m), "the view grew an unlisted member");
            prop_assert_eq!(Some(dots), full.dots(m));
        }
        for (m, dots) in full.entries() {
            if listed.contains(m) {
                prop_assert_eq!(view.dots(m), Some(dots));
            } else {
                prop_assert_eq!(full_before.dots(m), Some(dots), "an unlisted member changed");
            }
        }
        for m in full_before.members() {
            if !listed.contains(m) {
                prop_assert!(full.contains(m), "an unlisted member vanished");
            }
        }
    }
}

/// Full states used as deltas (`Scope::Full`) cancel what the sender
/// removed, even for members the receiver has and the sender no longer
/// lists, but never members the sender never saw.
#[test]
fn full_state_deltas_cancel_only_what_the_sender_saw() {
    let a = Incarnation(1);
    let b = Incarnation(2);
    let mut x = OrSet::new();
    x.add(a, &[b"k".to_vec(), b"gone".to_vec()]);
    let mut y = x.clone();
    y.remove(&[b"gone".to_vec()]);
    // x adds a member y never saw.
    x.add(a, &[b"new".to_vec()]);
    // And a third replica adds one neither saw.
    let mut z = OrSet::new();
    let dz = z.add(b, &[b"zeta".to_vec()]);
    x.merge(&dz);
    let full_y = y.to_delta();
    assert_eq!(full_y.scope, Scope::Full);
    x.merge(&full_y);
    let got: Vec<&[u8]> = x.members().collect();
    assert_eq!(got, vec![&b"k"[..], b"new", b"zeta"]);
    // As an ObjectState too, from nothing.
    let s = ObjectState::from_delta(&Delta::Set(full_y));
    assert_eq!(s, ObjectState::Set(y));
}
