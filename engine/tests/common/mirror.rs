//! Differential runs against the `crdts` crate for the causal CRDTs (sets
//! in `crdt_differential.rs`, maps in `map_laws.rs`): each replica holds
//! ours and theirs side by side. Ours joins deltas in any order; theirs
//! (operation-based) applies an operation only once its causal past is
//! applied, so the two are compared only at sync points (both reflect
//! exactly the same operations), and operations are issued only there.
//!
//! Included by path (`#[path = "common/mirror.rs"] mod mirror;`).

#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeSet;
use std::fmt::Debug;

use crdts::CmRDT;

use crate::history::{REPLICAS, Step, shuffle};

/// Our side of a mirror: a state that joins its deltas.
pub trait Ours: Clone + Debug + PartialEq {
    type Delta;
    fn join(&mut self, delta: &Self::Delta);
    /// The full state as a delta.
    fn full(&self) -> Self::Delta;
}

/// One operation, as both implementations made it.
pub struct Record<D, O> {
    pub ours: D,
    pub theirs: O,
    /// Operations applied at the origin when it was made (its causal past).
    pub deps: BTreeSet<usize>,
}

#[derive(Clone, Debug)]
pub struct Mirror<A, B> {
    pub ours: A,
    pub theirs: B,
    /// Operations joined into `ours`.
    pub ours_known: BTreeSet<usize>,
    /// Operations applied to `theirs`.
    pub theirs_applied: BTreeSet<usize>,
    /// Delivered to `theirs`, waiting for their causal past.
    pub buffer: Vec<usize>,
}

impl<A: Ours, B: CmRDT<Op: Clone>> Mirror<A, B> {
    pub fn new(ours: A, theirs: B) -> Self {
        Mirror {
            ours,
            theirs,
            ours_known: BTreeSet::new(),
            theirs_applied: BTreeSet::new(),
            buffer: Vec::new(),
        }
    }

    pub fn at_sync_point(&self) -> bool {
        self.ours_known == self.theirs_applied
    }

    /// Applies every buffered operation of theirs whose causal past is
    /// applied.
    pub fn drain(&mut self, ops: &[Record<A::Delta, B::Op>]) {
        loop {
            self.buffer.retain(|id| !self.theirs_applied.contains(id));
            let ready = self
                .buffer
                .iter()
                .position(|id| ops[*id].deps.is_subset(&self.theirs_applied));
            let Some(i) = ready else { break };
            let id = self.buffer.remove(i);
            self.theirs.apply(ops[id].theirs.clone());
            self.theirs_applied.insert(id);
        }
    }

    pub fn deliver(&mut self, id: usize, ops: &[Record<A::Delta, B::Op>]) {
        self.ours.join(&ops[id].ours);
        self.ours_known.insert(id);
        if !self.theirs_applied.contains(&id) {
            self.buffer.push(id);
        }
        self.drain(ops);
    }
}

/// Every operation made in a run, by id.
pub type Ops<A, B> = [Record<<A as Ours>::Delta, <B as CmRDT>::Op>];
type Issue<'a, A, B, O> =
    &'a dyn Fn(&mut Mirror<A, B>, usize, u64, &O) -> (<A as Ours>::Delta, <B as CmRDT>::Op);
type Sync<'a, A, B> = &'a dyn Fn(&Mirror<A, B>, &mut Mirror<A, B>, &Ops<A, B>);
type Compare<'a, A, B> = &'a dyn Fn(&[Mirror<A, B>]) -> usize;

/// The sides of one differential run.
pub struct Run<'a, A: Ours, B: CmRDT, O> {
    /// A fresh replica.
    pub new: &'a dyn Fn() -> Mirror<A, B>,
    /// Makes `op` at a replica (index, history step): both sides' versions.
    pub issue: Issue<'a, A, B, O>,
    /// `to` takes `from`'s whole state (ours as a full-state delta).
    pub sync: Sync<'a, A, B>,
    /// Compares the replicas at sync points; how many were compared.
    pub compare: Compare<'a, A, B>,
}

/// Runs `steps`, comparing after every step; then delivers every operation
/// everywhere (shuffled, with duplicates) and requires both sides to agree
/// at every replica and ours to converge. Returns the replicas.
pub fn run_mirrored<A: Ours, B: CmRDT<Op: Clone> + Clone, O>(
    run: Run<'_, A, B, O>,
    steps: &[Step<O>],
    seed: u64,
) -> Vec<Mirror<A, B>> {
    let mut replicas: Vec<Mirror<A, B>> = (0..REPLICAS).map(|_| (run.new)()).collect();
    let mut ops: Vec<Record<A::Delta, B::Op>> = Vec::new();
    let mut compared = 0;
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Op { replica, op } => {
                let r = &mut replicas[*replica];
                if r.at_sync_point() {
                    let id = ops.len();
                    let deps = r.ours_known.clone();
                    let (ours, theirs) = (run.issue)(r, *replica, i as u64, op);
                    r.theirs.apply(theirs.clone());
                    r.ours_known.insert(id);
                    r.theirs_applied.insert(id);
                    ops.push(Record { ours, theirs, deps });
                }
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
                (run.sync)(&src, &mut replicas[*to], &ops);
            }
        }
        compared += (run.compare)(&replicas);
    }
    for (i, r) in replicas.iter_mut().enumerate() {
        let mut order: Vec<usize> = (0..ops.len()).chain(0..ops.len() / 2).collect();
        shuffle(&mut order, seed ^ i as u64);
        for id in order {
            r.deliver(id, &ops);
            compared += (run.compare)(std::slice::from_ref(r));
        }
        assert!(r.buffer.is_empty(), "every op's causal past was delivered");
        assert!(r.at_sync_point());
    }
    assert_eq!((run.compare)(&replicas), REPLICAS);
    assert!(compared >= REPLICAS);
    for r in &replicas {
        assert_eq!(r.ours, replicas[0].ours, "our replicas diverged");
    }
    replicas
}
