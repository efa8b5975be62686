//! The generic history runner of the CRDT law tests (`crdt_laws.rs`,
//! `map_laws.rs`): random histories of local operations, deliveries (any
//! delta, any order, duplicates) and full-state syncs over a few replicas,
//! each checked against its model after every step, then every delta
//! delivered everywhere and the replicas required to converge.
//!
//! Included by path (`#[path = "common/history.rs"] mod history;`), not
//! through `common/mod.rs`, so the engine tests that need no proptest
//! history do not compile it.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeSet;
use std::fmt::Debug;

use meridian_engine::{CausalContext, Dot, Incarnation};
use proptest::prelude::*;

/// Number of replicas in a history.
pub const REPLICAS: usize = 3;

/// The step `finish` delivers at: later than any step of a history.
pub const FINISH_STEP: u64 = 600_000;

#[derive(Clone, Debug)]
pub enum Step<O> {
    /// A replica performs a local operation.
    Op { replica: usize, op: O },
    /// A replica receives one delta of the pool (index modulo its size):
    /// any delta, possibly its own, possibly again.
    Deliver { replica: usize, pick: usize },
    /// A replica receives a batch: a random selection, in random order,
    /// with duplicates.
    DeliverMany { replica: usize, picks: Vec<usize> },
    /// `to` joins `from`'s full state used as a delta.
    Sync { from: usize, to: usize },
}

/// One replica of one CRDT, with its model. `step` is the index of the
/// history step (`FINISH_STEP` while finishing); a replica that needs a
/// clock derives its time from it.
pub trait Replica: Debug {
    type Op: Clone + Debug;
    type State: Clone + Debug + PartialEq;
    type Delta: Clone + Debug;
    /// What a delta tells the model.
    type Note: Clone + Debug;

    fn new(index: usize) -> Self;
    fn state(&self) -> &Self::State;
    /// Performs `op`; its delta, or `None` when the model says the
    /// operation fails (then the state must not change).
    fn apply(&mut self, op: &Self::Op, step: u64) -> Option<(Self::Delta, Self::Note)>;
    /// The replica's full state as a delta (`None`: it has no state yet).
    fn full(&self) -> Option<(Self::Delta, Self::Note)>;
    fn receive(&mut self, delta: &Self::Delta, note: &Self::Note, step: u64);
    /// Asserts that the implementation's state agrees with the model.
    fn check(&self);
    /// Joins `delta` into `state`; whether it changed.
    fn merge(state: &mut Self::State, delta: &Self::Delta) -> bool;
}

pub fn node(index: usize) -> Incarnation {
    Incarnation(index as u64 + 1)
}

/// A deterministic shuffle (the seed comes from proptest).
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut x = seed | 1;
    for i in (1..items.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        items.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// Every dot a causal context holds.
pub fn context_dots(cc: &CausalContext) -> BTreeSet<Dot> {
    let mut out: BTreeSet<Dot> = cc.cloud().collect();
    for (n, c) in cc.vector().iter() {
        out.extend((1..=c).map(|k| Dot::new(n, k)));
    }
    out
}

pub struct History<R: Replica> {
    pub replicas: Vec<R>,
    /// Every delta made: `(delta, note)`.
    pub pool: Vec<(R::Delta, R::Note)>,
}

/// Runs `steps`, checking the op/delta law and the model after every step.
pub fn run<R: Replica>(steps: &[Step<R::Op>]) -> History<R> {
    let mut replicas: Vec<R> = (0..REPLICAS).map(R::new).collect();
    let mut pool: Vec<(R::Delta, R::Note)> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let i = i as u64;
        match step {
            Step::Op { replica, op } => {
                let r = &mut replicas[*replica];
                let before = r.state().clone();
                let Some((delta, note)) = r.apply(op, i) else {
                    assert_eq!(r.state(), &before, "a failed operation changed the state");
                    continue;
                };
                let after = r.state().clone();
                // merge(S, delta(op)) == apply(op), on a copy of S.
                let mut copy = before;
                R::merge(&mut copy, &delta);
                assert_eq!(copy, after, "S ⊔ δ differs from op(S) for {op:?}");
                // Joining it again changes nothing.
                let mut again = after.clone();
                assert!(
                    !R::merge(&mut again, &delta),
                    "re-joining an op's delta reported a change"
                );
                assert_eq!(again, after, "re-joining an op's delta changed the state");
                pool.push((delta, note));
            }
            Step::Deliver { replica, pick } => {
                if !pool.is_empty() {
                    let (d, n) = &pool[pick % pool.len()];
                    replicas[*replica].receive(d, n, i);
                }
            }
            Step::DeliverMany { replica, picks } => {
                if !pool.is_empty() {
                    for pick in picks {
                        let (d, n) = &pool[pick % pool.len()];
                        replicas[*replica].receive(d, n, i);
                    }
                }
            }
            Step::Sync { from, to } => {
                if let Some((d, n)) = replicas[*from].full() {
                    replicas[*to].receive(&d, &n, i);
                }
            }
        }
        for r in &replicas {
            r.check();
        }
    }
    History { replicas, pool }
}

/// Delivers every delta to every replica, each in its own shuffled order
/// with duplicates, and asserts they converge.
pub fn finish<R: Replica>(h: &mut History<R>, seed: u64) {
    for (i, r) in h.replicas.iter_mut().enumerate() {
        let mut order: Vec<usize> = (0..h.pool.len()).chain(0..h.pool.len() / 2).collect();
        shuffle(&mut order, seed.wrapping_add(i as u64 * 0x9e37_79b9));
        for idx in order {
            let (d, n) = &h.pool[idx];
            r.receive(d, n, FINISH_STEP);
            r.check();
        }
    }
    let first = h.replicas[0].state().clone();
    for r in &h.replicas[1..] {
        assert_eq!(r.state(), &first, "replicas diverged after full delivery");
    }
}

/// A strategy for histories of `op`s, at most `max_len` steps.
pub fn steps<O: Clone + Debug + 'static>(
    op: impl Strategy<Value = O> + 'static,
    max_len: usize,
) -> impl Strategy<Value = Vec<Step<O>>> {
    let n = REPLICAS;
    let step = prop_oneof![
        5 => (0..n, op).prop_map(|(replica, op)| Step::Op { replica, op }),
        3 => (0..n, any::<usize>()).prop_map(|(replica, pick)| Step::Deliver { replica, pick }),
        1 => (0..n, proptest::collection::vec(any::<usize>(), 0..8))
            .prop_map(|(replica, picks)| Step::DeliverMany { replica, picks }),
        1 => (0..n, 0..n).prop_map(|(from, to)| Step::Sync { from, to }),
    ];
    proptest::collection::vec(step, 1..max_len)
}
