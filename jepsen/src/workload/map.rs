//! Map workload (Redis hashes): register fields written with unique values
//! (`HSET`), counter fields incremented (`HINCRBY`), register fields removed
//! (`HDEL`), and reads of the whole map (`HGETALL`), over [`KEYS`] keys.
//!
//! Every key has three kinds of fields, never mixed (a field is only ever
//! set, or only ever incremented), so that the checker can judge each with
//! its own rule ([`crate::checker::map`]):
//!
//! * **counter fields** `c<n>`: [`COUNTER_SLOTS`] live at a time; the i-th
//!   increment planned on a field has delta ±2^i (as the counter workload's
//!   keys, [`super::counter`]), and after
//!   [`super::counter::ADDS_PER_KEY`] increments the field is retired and
//!   `c<n+1>` takes its slot: every subset of a field's increments has its
//!   own sum, so the counter checker judges each field exactly.
//! * **shared register fields** `s<n>` (n < [`SHARED_FIELDS`]): written by
//!   every process on every node, never removed: concurrent writes from
//!   different nodes, resolved by LWW.
//! * **node fields** `d<node>-<n>`: written only by processes pinned to
//!   `<node>` ([`WRITES_PER_NODE_FIELD`] writes), then removed once by a
//!   process on that node, and retired (never written again). A remove
//!   served by the node that served every write of the field cancels them
//!   all: the checker's "removed stays removed" rule needs that.
//!
//! Mix: read 30 %, increment 30 %, shared write 20 %, node field 20 %.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::counter::{ADDS_PER_KEY, delta};
use super::{Planned, Workload};
use crate::history::{F, WorkloadKind};

/// Map keys: few, so reads see many concurrent field writes.
pub const KEYS: u64 = 2;
/// Live counter fields per key.
pub const COUNTER_SLOTS: usize = 2;
/// Shared register fields per key.
pub const SHARED_FIELDS: u64 = 2;
/// Writes of a node field before it is removed: a handful, so removes are
/// frequent enough to be judged in a 20 s run.
pub const WRITES_PER_NODE_FIELD: u32 = 4;

#[derive(Debug, Default)]
struct KeyState {
    /// (field number, increments planned) per counter slot.
    counters: [(u64, u32); COUNTER_SLOTS],
    next_counter: u64,
    /// node → (field number, writes planned) of its live node field.
    node_fields: BTreeMap<String, (u64, u32)>,
}

#[derive(Debug, Default)]
struct State {
    keys: Vec<KeyState>,
    next_value: u64,
    used_keys: u64,
}

/// The map workload.
#[derive(Debug)]
pub struct MapWorkload {
    state: Mutex<State>,
}

impl Default for MapWorkload {
    fn default() -> Self {
        let keys = (0..KEYS)
            .map(|_| KeyState {
                counters: std::array::from_fn(|i| (i as u64, 0)),
                next_counter: COUNTER_SLOTS as u64,
                node_fields: BTreeMap::new(),
            })
            .collect();
        MapWorkload {
            state: Mutex::new(State {
                keys,
                ..State::default()
            }),
        }
    }
}

impl MapWorkload {
    pub fn new() -> MapWorkload {
        MapWorkload::default()
    }
}

/// The name of node field `n` of `node`.
pub fn node_field(node: &str, n: u64) -> String {
    format!("d{node}-{n}")
}

/// The kind of a field, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    Counter,
    Register,
}

impl FieldKind {
    pub fn of(field: &str) -> Option<FieldKind> {
        match field.as_bytes().first() {
            Some(b'c') => Some(FieldKind::Counter),
            Some(b's' | b'd') => Some(FieldKind::Register),
            _ => None,
        }
    }
}

fn planned(f: F, key: String, value: Value) -> Planned {
    Planned {
        workload: WorkloadKind::Map,
        f,
        key,
        value,
        meta: None,
    }
}

impl Workload for MapWorkload {
    fn kind(&self) -> WorkloadKind {
        WorkloadKind::Map
    }

    fn plan(&self, process: u64, node: &str, rng: &mut ChaCha8Rng) -> Planned {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let k = rng.random_range(0..KEYS);
        s.used_keys = s.used_keys.max(k + 1);
        let key = WorkloadKind::Map.key(k);
        let roll: f64 = rng.random();
        if roll < 0.3 {
            return planned(F::Read, key, Value::Null);
        }
        s.next_value += 1;
        let value = format!("v{}-p{process}", s.next_value);
        let ks = &mut s.keys[k as usize];
        if roll < 0.6 {
            let slot = rng.random_range(0..COUNTER_SLOTS);
            let (n, adds) = ks.counters[slot];
            let d = delta(adds, rng);
            if adds + 1 >= ADDS_PER_KEY {
                ks.counters[slot] = (ks.next_counter, 0);
                ks.next_counter += 1;
            } else {
                ks.counters[slot].1 = adds + 1;
            }
            return planned(F::Add, key, json!({"field": format!("c{n}"), "delta": d}));
        }
        if roll < 0.8 {
            let field = format!("s{}", rng.random_range(0..SHARED_FIELDS));
            return planned(F::Write, key, json!({"field": field, "value": value}));
        }
        let (n, writes) = *ks.node_fields.entry(node.to_string()).or_insert((0, 0));
        let field = node_field(node, n);
        if writes >= WRITES_PER_NODE_FIELD {
            ks.node_fields.insert(node.to_string(), (n + 1, 0));
            return planned(F::Remove, key, json!({"field": field}));
        }
        ks.node_fields.insert(node.to_string(), (n, writes + 1));
        planned(F::Write, key, json!({"field": field, "value": value}))
    }

    fn keys(&self) -> Vec<String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        WorkloadKind::Map.keys(s.used_keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::{BTreeSet, HashSet};

    #[test]
    fn fields_keep_one_kind_values_are_unique_and_node_fields_are_removed_once_after_their_writes()
    {
        let w = MapWorkload::new();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut values = HashSet::new();
        let mut fs = BTreeSet::new();
        // (key, field) → f of every op planned on it, in order.
        let mut ops: BTreeMap<(String, String), Vec<F>> = BTreeMap::new();
        let mut deltas: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
        for i in 0..6000u64 {
            let node = ["n1", "n2", "n3"][(i % 3) as usize];
            let p = w.plan(i % 10, node, &mut rng);
            assert_eq!(p.workload, WorkloadKind::Map);
            assert!(p.key.starts_with("map-"));
            fs.insert(p.f);
            if p.f == F::Read {
                continue;
            }
            let field = p.value["field"].as_str().unwrap().to_string();
            if let Some(v) = p.value["value"].as_str() {
                assert!(values.insert(v.to_string()), "unique values");
            }
            match p.f {
                F::Add => {
                    assert_eq!(FieldKind::of(&field), Some(FieldKind::Counter));
                    deltas
                        .entry((p.key.clone(), field.clone()))
                        .or_default()
                        .push(p.value["delta"].as_i64().unwrap());
                }
                F::Write | F::Remove => {
                    assert_eq!(FieldKind::of(&field), Some(FieldKind::Register));
                    if field.starts_with('d') {
                        assert!(field.starts_with(&format!("d{node}-")), "{field} on {node}");
                    }
                }
                _ => unreachable!(),
            }
            ops.entry((p.key, field)).or_default().push(p.f);
        }
        assert_eq!(fs.len(), 4, "reads, increments, writes and removes");
        for ((key, field), fs) in &ops {
            if field.starts_with('s') {
                assert!(fs.iter().all(|f| *f == F::Write), "{key}/{field}");
            }
            if field.starts_with('d') {
                let removes = fs.iter().filter(|f| **f == F::Remove).count();
                assert!(removes <= 1, "{key}/{field}: removed once");
                if removes == 1 {
                    assert_eq!(fs.last(), Some(&F::Remove), "nothing after the remove");
                    assert_eq!(fs.len() as u32, WRITES_PER_NODE_FIELD + 1);
                }
            }
        }
        assert!(
            deltas.len() > KEYS as usize * COUNTER_SLOTS,
            "counter fields rotate"
        );
        for (k, ds) in &deltas {
            let exps: Vec<u32> = ds
                .iter()
                .map(|d| d.unsigned_abs().trailing_zeros())
                .collect();
            assert_eq!(exps, (0..ds.len() as u32).collect::<Vec<_>>(), "{k:?}");
        }
    }
}
