//! Register workload: `write` of a unique value and `read`, half each, on
//! two kinds of keys:
//!
//! * **rotating keys** `register-<n>`: a new key every [`OPS_PER_KEY`]
//!   planned ops, as Jepsen's independent register test limits each key to
//!   ~20 ops so that the linearizability search stays tractable. Such a key
//!   lives well under a second at the default rate, so it rarely sees a
//!   fault begin or end.
//! * **long-lived keys** `register-long-<n>`: one in [`LONG_SHARE`] register
//!   ops goes to one of [`LONG_KEYS`] long-lived keys, each retired after
//!   [`LONG_OPS_PER_KEY`] ops. At the default rate such a key lives tens of
//!   seconds (`--workload all`: about a minute), through partitions, kills,
//!   pauses and clock faults — which is where linearizability can break.
//!   Slot i always holds a key numbered ≡ i (mod 5), so under
//!   `--consistency mixed` ([`crate::runner::register_key_level`]) there is
//!   always one long-lived key at each of local, leader, quorum, all and
//!   replicas-n (n going round the counts, a majority first).
//!
//! Written values are `v<n>-p<process>`, unique across all keys.

use std::sync::Mutex;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::{Planned, Workload};
use crate::history::{F, WorkloadKind};

/// Ops per rotating register key (Jepsen's per-key limit).
pub const OPS_PER_KEY: u64 = 20;

/// Long-lived keys in use at once: one per level family (local, leader,
/// quorum, all, replicas-n).
pub const LONG_KEYS: u64 = 5;

/// One register op in this many goes to a long-lived key: enough ops to
/// see faults in every long key's history, few enough per second that a
/// key outlives several nemesis intervals before [`LONG_OPS_PER_KEY`].
pub const LONG_SHARE: u32 = 8;

/// Ops per long-lived key before it is retired: bounds the WGL search
/// (exponential in the worst case) well under
/// [`crate::checker::register::MAX_LINEARIZABLE_OPS`].
pub const LONG_OPS_PER_KEY: u64 = 150;

/// The key name of long-lived key number `n`.
pub fn long_key(n: u64) -> String {
    format!("{}{n}", crate::checker::register::LONG_KEY_PREFIX)
}

#[derive(Debug, Default)]
struct State {
    planned: u64,
    writes: u64,
    /// Ops planned on each long-lived slot so far (over all its keys).
    long_planned: [u64; LONG_KEYS as usize],
}

/// The register workload.
#[derive(Debug, Default)]
pub struct RegisterWorkload {
    state: Mutex<State>,
}

impl RegisterWorkload {
    pub fn new() -> RegisterWorkload {
        RegisterWorkload::default()
    }
}

impl Workload for RegisterWorkload {
    fn kind(&self) -> WorkloadKind {
        WorkloadKind::Register
    }

    fn plan(&self, process: u64, _node: &str, rng: &mut ChaCha8Rng) -> Planned {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let key = if rng.random_range(0..LONG_SHARE) == 0 {
            let slot = rng.random_range(0..LONG_KEYS);
            let n = s.long_planned[slot as usize];
            s.long_planned[slot as usize] += 1;
            long_key((n / LONG_OPS_PER_KEY) * LONG_KEYS + slot)
        } else {
            let k = WorkloadKind::Register.key(s.planned / OPS_PER_KEY);
            s.planned += 1;
            k
        };
        if rng.random_bool(0.5) {
            s.writes += 1;
            Planned {
                workload: WorkloadKind::Register,
                f: F::Write,
                key,
                value: json!(format!("v{}-p{process}", s.writes)),
                meta: None,
            }
        } else {
            Planned {
                workload: WorkloadKind::Register,
                f: F::Read,
                key,
                value: Value::Null,
                meta: None,
            }
        }
    }

    fn keys(&self) -> Vec<String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let rotating = (0..s.planned.div_ceil(OPS_PER_KEY)).map(|k| WorkloadKind::Register.key(k));
        let long = (0..LONG_KEYS).flat_map(|slot| {
            (0..s.long_planned[slot as usize].div_ceil(LONG_OPS_PER_KEY))
                .map(move |g| long_key(g * LONG_KEYS + slot))
        });
        rotating.chain(long).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::register_key_level;
    use rand::SeedableRng;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn keys_rotate_and_values_are_unique() {
        let w = RegisterWorkload::new();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let ops: Vec<Planned> = (0..3000).map(|i| w.plan(i % 3, "n1", &mut rng)).collect();
        let rotating: Vec<&Planned> = ops
            .iter()
            .filter(|o| !o.key.starts_with("register-long-"))
            .collect();
        assert!(rotating[..20].iter().all(|o| o.key == "register-0"));
        assert!(rotating[20..40].iter().all(|o| o.key == "register-1"));
        let writes: Vec<&Value> = ops
            .iter()
            .filter(|o| o.f == F::Write)
            .map(|o| &o.value)
            .collect();
        let unique: BTreeSet<String> = writes.iter().map(|v| v.to_string()).collect();
        assert_eq!(unique.len(), writes.len());
        let keys = w.keys();
        for o in &ops {
            assert!(keys.contains(&o.key), "{} not in keys()", o.key);
        }
    }

    #[test]
    fn long_lived_keys_take_a_share_with_one_key_per_level() {
        let w = RegisterWorkload::new();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n: usize = 8000;
        let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..n {
            *per_key
                .entry(w.plan(i as u64 % 5, "n1", &mut rng).key)
                .or_default() += 1;
        }
        let long: BTreeMap<&String, &usize> = per_key
            .iter()
            .filter(|(k, _)| k.starts_with("register-long-"))
            .collect();
        let long_ops: usize = long.values().copied().sum();
        // One in LONG_SHARE, give or take.
        assert!((n / 12..n / 6).contains(&long_ops), "{long_ops}");
        assert!(long.values().all(|c| **c <= LONG_OPS_PER_KEY as usize));
        // The first generation has one key per level, and keys are retired.
        let levels: BTreeSet<_> = (0..LONG_KEYS)
            .map(|i| register_key_level(&long_key(i), 3))
            .collect();
        assert_eq!(levels.len(), LONG_KEYS as usize);
        assert!(levels.contains(&crate::history::Level::Replicas { n: 2, of: 3 }));
        assert!(long.len() > LONG_KEYS as usize, "long keys rotate too");
        for k in long.keys() {
            let n: u64 = k.rsplit_once('-').unwrap().1.parse().unwrap();
            assert!(per_key.contains_key(&long_key(n % LONG_KEYS)));
        }
    }
}
