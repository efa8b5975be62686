//! Counter workload: `add` and `read`, half each, over rotating keys whose
//! deltas are ± distinct powers of two.
//!
//! [`LIVE_KEYS`] keys are in use at any time; each op picks one. The i-th
//! add planned on a key has delta ±2^i (sign drawn), and after
//! [`ADDS_PER_KEY`] adds the key is retired and a fresh one takes its
//! place. Why: every subset of a key's adds then has its own sum, so the
//! checker can tell exactly which adds a read reflects — a lost
//! acknowledged add can never be explained away by indeterminate adds that
//! happen to sum to the same amount, as with Maelstrom's deltas in [−5, 5]
//! (a handful of `info` adds of ±1..5 cover every small difference). See
//! [`crate::checker::counter`].

use std::sync::Mutex;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::{Planned, Workload};
use crate::history::{F, WorkloadKind};

/// Keys in use at once: few, so reads see many concurrent adds.
pub const LIVE_KEYS: usize = 4;

/// Adds per key before it is retired: deltas go up to ±2^59, so any sum of
/// a key's deltas stays below 2^60, well inside the server's i64 counter.
pub const ADDS_PER_KEY: u32 = 60;

#[derive(Debug)]
struct State {
    /// The key number in each live slot, and how many adds it was given.
    slots: [(u64, u32); LIVE_KEYS],
    next_key: u64,
    /// Keys that have been planned at least once (final reads read them).
    used: Vec<u64>,
}

/// The counter workload.
#[derive(Debug)]
pub struct CounterWorkload {
    state: Mutex<State>,
}

impl Default for CounterWorkload {
    fn default() -> Self {
        CounterWorkload {
            state: Mutex::new(State {
                slots: std::array::from_fn(|i| (i as u64, 0)),
                next_key: LIVE_KEYS as u64,
                used: Vec::new(),
            }),
        }
    }
}

impl CounterWorkload {
    pub fn new() -> CounterWorkload {
        CounterWorkload::default()
    }
}

/// ±2^exponent, sign drawn.
pub fn delta(exponent: u32, rng: &mut impl Rng) -> i64 {
    let m = 1i64 << exponent;
    if rng.random_bool(0.5) { m } else { -m }
}

impl Workload for CounterWorkload {
    fn kind(&self) -> WorkloadKind {
        WorkloadKind::Counter
    }

    fn plan(&self, _process: u64, _node: &str, rng: &mut ChaCha8Rng) -> Planned {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let slot = rng.random_range(0..LIVE_KEYS);
        let (k, adds) = s.slots[slot];
        if !s.used.contains(&k) {
            s.used.push(k);
        }
        let key = WorkloadKind::Counter.key(k);
        if rng.random_bool(0.5) {
            let d = delta(adds, rng);
            if adds + 1 >= ADDS_PER_KEY {
                let fresh = s.next_key;
                s.next_key += 1;
                s.slots[slot] = (fresh, 0);
            } else {
                s.slots[slot].1 = adds + 1;
            }
            Planned {
                workload: WorkloadKind::Counter,
                f: F::Add,
                key,
                value: json!(d),
                meta: None,
            }
        } else {
            Planned {
                workload: WorkloadKind::Counter,
                f: F::Read,
                key,
                value: Value::Null,
                meta: None,
            }
        }
    }

    fn keys(&self) -> Vec<String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut used = s.used.clone();
        used.sort_unstable();
        used.into_iter()
            .map(|k| WorkloadKind::Counter.key(k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn deltas_are_distinct_powers_of_two_per_key_and_keys_rotate() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let w = CounterWorkload::new();
        let mut per_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut fs = BTreeSet::new();
        for _ in 0..2000 {
            let p = w.plan(0, "n1", &mut rng);
            fs.insert(p.f);
            if p.f == F::Add {
                per_key
                    .entry(p.key)
                    .or_default()
                    .push(p.value.as_i64().unwrap());
            }
        }
        assert_eq!(fs.len(), 2, "adds and reads");
        assert!(per_key.len() > LIVE_KEYS, "keys rotate: {}", per_key.len());
        let mut signs = BTreeSet::new();
        for (key, ds) in &per_key {
            assert!(ds.len() <= ADDS_PER_KEY as usize, "{key}");
            let exps: Vec<u32> = ds
                .iter()
                .map(|d| d.unsigned_abs().trailing_zeros())
                .collect();
            assert!(ds.iter().all(|d| d.unsigned_abs().is_power_of_two()));
            assert_eq!(exps, (0..ds.len() as u32).collect::<Vec<_>>(), "{key}");
            signs.extend(ds.iter().map(|d| d.signum()));
            let total: i128 = ds.iter().map(|d| i128::from(d.unsigned_abs())).sum();
            assert!(total < 1 << 60);
        }
        assert_eq!(signs.len(), 2, "both signs");
        let keys = w.keys();
        for k in per_key.keys() {
            assert!(keys.contains(k));
        }
    }
}
