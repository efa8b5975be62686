//! Differential property tests against the `crdts` crate: the same random
//! multi-replica histories run through our CRDTs and through `crdts`, and
//! the observable values are compared wherever both are defined.
//!
//! # Mapping
//!
//! | ours | `crdts` |
//! |---|---|
//! | `Counter::incr(node, +k)` | `PNCounter::inc_many(node, k)`, applied locally |
//! | `Counter::incr(node, -k)` | `PNCounter::dec_many(node, k)`, applied locally |
//! | counter delta (the origin's running totals), joined with `merge`, any order | the `PNCounter` op (the origin's new total in one direction), `apply`, in origin order |
//! | full counter state joined with `merge` | `CvRDT::merge` of the full `PNCounter` |
//! | `Counter::value()` | `PNCounter::read()` |
//! | `OrSet::add(node, [m..])` | `Orswot::add_all([m..], read_ctx().derive_add_ctx(node))`, applied locally |
//! | `OrSet::remove([m..])` (removes the dots the remover observed) | `Orswot::rm_all([m..], read_ctx().derive_rm_ctx())` (the remover's read context), applied locally |
//! | set delta joined with `merge`, any order | the `Orswot` op, `apply`, in causal order (see below) |
//! | full set state (`Scope::Full`) joined with `merge` | `CvRDT::merge` of the full `Orswot` |
//! | `OrSet::members()` | `Orswot::read().val` |
//!
//! Node ids are the actors. The counter's delete (an observed reset) has no
//! `crdts` counterpart and is not generated here (`crdt_laws.rs` models it).
//!
//! # Where the semantics coincide
//!
//! * **Counter**: our delta carries the origin's running totals of both
//!   increments and decrements, a `PNCounter` op only the total of one
//!   direction. So our deltas are joined in any order, with duplicates, but
//!   `PNCounter` ops are applied per origin in the order they were made
//!   (buffered until their predecessor is applied; duplicates dropped), and
//!   a replica is compared when both sides reflect the same prefix of every
//!   origin's operations.
//! * **Set**: `Orswot` ops must be applied in causal order (an add whose
//!   dot is not the actor's next one is dropped as already seen, and its
//!   remove context is a vector clock, which can cancel dots the receiver
//!   has not even seen yet). Our deltas may arrive in any order. So each
//!   replica applies deltas to our set at once, but buffers `Orswot` ops
//!   until their causal past has been applied. A replica is at a *sync
//!   point* when the two have applied exactly the same operations (our
//!   side's set of operations is then causally closed too); only there are
//!   the values compared, and only there does a replica issue operations
//!   (elsewhere an operation is skipped), so both sides observe the same
//!   adds when removing. Full-state joins carry the sender's knowledge on
//!   each side.

use std::collections::HashSet;

use crdts::{CmRDT, CvRDT, Orswot, PNCounter};
use meridian_engine::Incarnation;
use meridian_engine::crdt::{Counter, OrSet, SetDelta};
use proptest::prelude::*;

#[path = "common/history.rs"]
mod history;
#[path = "common/mirror.rs"]
mod mirror;

use history::{REPLICAS, Step, shuffle, steps};
use mirror::{Mirror, Ours, Run, run_mirrored};

/// Steps per history.
const STEPS: usize = 80;

fn actor(index: usize) -> u64 {
    index as u64 + 1
}

// ---------------------------------------------------------------------------
// PN-counter.

#[derive(Clone, Debug)]
struct CounterReplica {
    ours: Counter,
    theirs: PNCounter<u64>,
    /// Per origin, how many of its operations `ours` reflects (a delta
    /// carries the origin's running totals, so it implies every earlier one).
    ours_prefix: Vec<usize>,
    /// Per origin, how many of its operations `theirs` has applied.
    theirs_prefix: Vec<usize>,
    /// Ops delivered to `theirs` but not yet next in their origin's order.
    buffer: Vec<usize>,
}

/// One increment or decrement, as both implementations made it.
struct CounterOpRecord {
    ours: Counter,
    theirs: crdts::pncounter::Op<u64>,
    origin: usize,
    /// Position in the origin's sequence of operations.
    index: usize,
}

impl CounterReplica {
    fn at_sync_point(&self) -> bool {
        self.ours_prefix == self.theirs_prefix
    }

    fn drain(&mut self, ops: &[CounterOpRecord]) {
        loop {
            let prefix = &self.theirs_prefix;
            self.buffer
                .retain(|&id| ops[id].index >= prefix[ops[id].origin]);
            let ready = self
                .buffer
                .iter()
                .position(|&id| ops[id].index == self.theirs_prefix[ops[id].origin]);
            let Some(i) = ready else { break };
            let id = self.buffer.remove(i);
            self.theirs.apply(ops[id].theirs.clone());
            self.theirs_prefix[ops[id].origin] += 1;
        }
    }

    fn deliver(&mut self, id: usize, ops: &[CounterOpRecord]) {
        let op = &ops[id];
        self.ours.merge(&op.ours);
        self.ours_prefix[op.origin] = self.ours_prefix[op.origin].max(op.index + 1);
        self.buffer.push(id);
        self.drain(ops);
    }
}

fn pn_value(c: &PNCounter<u64>) -> i64 {
    c.read().to_string().parse().expect("fits in i64")
}

/// Compares values at every replica that is at a sync point.
fn compare_counters(replicas: &[CounterReplica]) {
    for (i, r) in replicas.iter().enumerate() {
        if r.at_sync_point() {
            assert_eq!(
                r.ours.value(),
                pn_value(&r.theirs),
                "replica {i}: our counter and crdts::PNCounter disagree at {:?}",
                r.ours_prefix
            );
        }
    }
}

fn run_counter(steps: &[Step<i64>], seed: u64) {
    let mut replicas: Vec<CounterReplica> = (0..REPLICAS)
        .map(|_| CounterReplica {
            ours: Counter::new(),
            theirs: PNCounter::new(),
            ours_prefix: vec![0; REPLICAS],
            theirs_prefix: vec![0; REPLICAS],
            buffer: Vec::new(),
        })
        .collect();
    let mut ops: Vec<CounterOpRecord> = Vec::new();
    for step in steps {
        match step {
            Step::Op {
                replica,
                op: amount,
            } => {
                let r = &mut replicas[*replica];
                // A replica always knows all of its own operations on both sides.
                let index = r.ours_prefix[*replica];
                assert_eq!(index, r.theirs_prefix[*replica]);
                let ours = r.ours.incr(Incarnation(actor(*replica)), *amount).unwrap();
                let theirs = if *amount >= 0 {
                    r.theirs.inc_many(actor(*replica), amount.unsigned_abs())
                } else {
                    r.theirs.dec_many(actor(*replica), amount.unsigned_abs())
                };
                r.theirs.apply(theirs.clone());
                r.ours_prefix[*replica] += 1;
                r.theirs_prefix[*replica] += 1;
                ops.push(CounterOpRecord {
                    ours,
                    theirs,
                    origin: *replica,
                    index,
                });
            }
            Step::Deliver { replica, pick } => {
                if !ops.is_empty() {
                    replicas[*replica].deliver(pick % ops.len(), &ops);
                }
            }
            Step::DeliverMany { replica, picks } => {
                if !ops.is_empty() {
                    for pick in picks {
                        replicas[*replica].deliver(pick % ops.len(), &ops);
                    }
                }
            }
            Step::Sync { from, to } => {
                let src = replicas[*from].clone();
                let dst = &mut replicas[*to];
                dst.ours.merge(&src.ours);
                dst.theirs.merge(src.theirs);
                for o in 0..REPLICAS {
                    dst.ours_prefix[o] = dst.ours_prefix[o].max(src.ours_prefix[o]);
                    dst.theirs_prefix[o] = dst.theirs_prefix[o].max(src.theirs_prefix[o]);
                }
                dst.drain(&ops);
            }
        }
        compare_counters(&replicas);
    }
    for (i, r) in replicas.iter_mut().enumerate() {
        let mut order: Vec<usize> = (0..ops.len()).chain(0..ops.len() / 2).collect();
        shuffle(&mut order, seed ^ i as u64);
        for id in order {
            r.deliver(id, &ops);
            compare_counters(std::slice::from_ref(r));
        }
        assert!(r.buffer.is_empty() && r.at_sync_point());
    }
    compare_counters(&replicas);
    let total: i64 = steps
        .iter()
        .filter_map(|s| match s {
            Step::Op { op, .. } => Some(*op),
            _ => None,
        })
        .sum();
    for r in &replicas {
        assert_eq!(r.ours.value(), total);
        assert_eq!(pn_value(&r.theirs), total);
        assert_eq!(r.ours, replicas[0].ours);
    }
}

// ---------------------------------------------------------------------------
// OR-set.

#[derive(Clone, Debug)]
enum SetOp {
    Add(Vec<u8>),
    Remove(Vec<u8>),
}

impl Ours for OrSet {
    type Delta = SetDelta;
    fn join(&mut self, delta: &SetDelta) {
        self.merge(delta);
    }
    fn full(&self) -> SetDelta {
        self.to_delta()
    }
}

type SetReplica = Mirror<OrSet, Orswot<u8, u64>>;

/// Compares values at every replica that is at a sync point; returns how
/// many were compared.
fn compare_sets(replicas: &[SetReplica]) -> usize {
    let mut compared = 0;
    for (i, r) in replicas.iter().enumerate() {
        if !r.at_sync_point() {
            continue;
        }
        let ours: HashSet<u8> = r
            .ours
            .members()
            .map(|m| {
                assert_eq!(m.len(), 1);
                m[0]
            })
            .collect();
        assert_eq!(
            ours,
            r.theirs.read().val,
            "replica {i}: our set and crdts::Orswot disagree after {:?}",
            r.ours_known
        );
        compared += 1;
    }
    compared
}

fn run_set(steps: &[Step<SetOp>], seed: u64) {
    let replicas = run_mirrored(
        Run {
            new: &|| Mirror::new(OrSet::new(), Orswot::new()),
            issue: &|r: &mut SetReplica, replica, _step, op: &SetOp| {
                let me = actor(replica);
                match op {
                    SetOp::Add(ms) => {
                        let members: Vec<Vec<u8>> = ms.iter().map(|&m| vec![m]).collect();
                        let d = r.ours.add(Incarnation(me), &members);
                        let ctx = r.theirs.read_ctx().derive_add_ctx(me);
                        (d, r.theirs.add_all(ms.iter().copied(), ctx))
                    }
                    SetOp::Remove(ms) => {
                        let members: Vec<Vec<u8>> = ms.iter().map(|&m| vec![m]).collect();
                        let d = r.ours.remove(&members);
                        let ctx = r.theirs.read_ctx().derive_rm_ctx();
                        (d, r.theirs.rm_all(ms.iter().copied(), ctx))
                    }
                }
            },
            sync: &|src, dst, ops| {
                dst.ours.join(&src.ours.full());
                dst.ours_known.extend(src.ours_known.iter().copied());
                dst.theirs.merge(src.theirs.clone());
                dst.theirs_applied
                    .extend(src.theirs_applied.iter().copied());
                dst.drain(ops);
            },
            compare: &compare_sets,
        },
        steps,
        seed,
    );
    for r in &replicas {
        assert_eq!(r.theirs.read().val, replicas[0].theirs.read().val);
    }
}

fn set_op() -> impl Strategy<Value = SetOp> {
    let members = proptest::collection::vec(0u8..5, 1..3);
    prop_oneof![
        3 => members.clone().prop_map(SetOp::Add),
        2 => members.prop_map(SetOp::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pn_counter_agrees_with_crdts(
        steps in steps((1i64..=20).prop_flat_map(|k| prop_oneof![Just(k), Just(-k)]), STEPS),
        seed in any::<u64>(),
    ) {
        run_counter(&steps, seed);
    }

    #[test]
    fn or_set_agrees_with_crdts_orswot(steps in steps(set_op(), STEPS), seed in any::<u64>()) {
        run_set(&steps, seed);
    }
}
