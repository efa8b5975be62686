//! Set workload: `add` of a unique member, `read`, and `remove` of a member
//! this process just saw in a read on the same node (so the remove's node
//! holds the member's dot: the checker's precondition for "must be absent").
//! Each member is added once and removed at most once. Mix: read 30 %,
//! remove 10 % (when there is a candidate), add otherwise.
//!
//! The add-wins scenario (re-adding a member during a partition) is scripted
//! by the runner, on key [`ADD_WINS_KEY`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::{Completion, Planned, Workload};
use crate::history::{F, OpType, WorkloadKind};

/// Set keys.
pub const KEYS: u64 = 2;
/// The key of the scripted add-wins scenario.
pub const ADD_WINS_KEY: &str = "set-aw";

#[derive(Debug, Default)]
struct State {
    next_member: u64,
    used_keys: u64,
    /// process → (key, node, members) of its last ok read.
    last_read: BTreeMap<u64, (String, String, Vec<String>)>,
    /// (key, member) with a remove planned.
    removed: BTreeSet<(String, String)>,
}

/// The set workload.
#[derive(Debug, Default)]
pub struct SetWorkload {
    state: Mutex<State>,
}

impl SetWorkload {
    pub fn new() -> SetWorkload {
        SetWorkload::default()
    }
}

impl Workload for SetWorkload {
    fn kind(&self) -> WorkloadKind {
        WorkloadKind::Set
    }

    fn plan(&self, process: u64, node: &str, rng: &mut ChaCha8Rng) -> Planned {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let roll: f64 = rng.random();
        if roll < 0.1 {
            // Remove a member our last read on this node saw.
            let candidate = s.last_read.get(&process).and_then(|(key, n, members)| {
                if n != node {
                    return None;
                }
                let free: Vec<&String> = members
                    .iter()
                    .filter(|m| !s.removed.contains(&(key.clone(), (*m).clone())))
                    .collect();
                (!free.is_empty())
                    .then(|| (key.clone(), free[rng.random_range(0..free.len())].clone()))
            });
            if let Some((key, m)) = candidate {
                s.removed.insert((key.clone(), m.clone()));
                return Planned {
                    workload: WorkloadKind::Set,
                    f: F::Remove,
                    key,
                    value: json!(m),
                    meta: None,
                };
            }
        }
        let k = rng.random_range(0..KEYS);
        s.used_keys = s.used_keys.max(k + 1);
        let key = WorkloadKind::Set.key(k);
        if roll < 0.4 {
            Planned {
                workload: WorkloadKind::Set,
                f: F::Read,
                key,
                value: Value::Null,
                meta: None,
            }
        } else {
            s.next_member += 1;
            Planned {
                workload: WorkloadKind::Set,
                f: F::Add,
                key,
                value: json!(format!("e{}", s.next_member)),
                meta: None,
            }
        }
    }

    fn completed(&self, process: u64, node: &str, op: &Planned, done: &Completion) {
        if op.f == F::Read && done.kind == OpType::Ok {
            let members: Vec<String> = done
                .value
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.last_read
                .insert(process, (op.key.clone(), node.to_string(), members));
        }
    }

    fn keys(&self) -> Vec<String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        WorkloadKind::Set.keys(s.used_keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn removes_only_members_seen_on_the_same_node_and_only_once() {
        let w = SetWorkload::new();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let read = Planned {
            workload: WorkloadKind::Set,
            f: F::Read,
            key: "set-0".into(),
            value: Value::Null,
            meta: None,
        };
        w.completed(
            0,
            "n1",
            &read,
            &Completion {
                kind: OpType::Ok,
                value: json!(["e1", "e2"]),
                error: None,
                meta: None,
            },
        );
        let mut removed = Vec::new();
        let mut adds = BTreeSet::new();
        for _ in 0..500 {
            let p = w.plan(0, "n1", &mut rng);
            match p.f {
                F::Remove => removed.push(p.value.as_str().unwrap().to_string()),
                F::Add => assert!(adds.insert(p.value.to_string()), "unique members"),
                _ => {}
            }
            // On another node: never a remove.
            assert_ne!(w.plan(0, "n2", &mut rng).f, F::Remove);
        }
        removed.sort();
        assert_eq!(
            removed,
            vec!["e1", "e2"],
            "each seen member removed exactly once"
        );
    }
}
