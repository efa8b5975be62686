//! Counter workload: `add` of a delta in [−5, 5] \ {0} (Maelstrom's
//! pn-counter range) and `read`, half each, over [`KEYS`] keys.

use std::sync::Mutex;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::{Planned, Workload};
use crate::history::{F, WorkloadKind};

/// Counter keys: few, so reads see many concurrent adds.
pub const KEYS: u64 = 2;

/// The counter workload.
#[derive(Debug, Default)]
pub struct CounterWorkload {
    used: Mutex<u64>,
}

impl CounterWorkload {
    pub fn new() -> CounterWorkload {
        CounterWorkload::default()
    }
}

/// A non-zero delta in [−5, 5].
pub fn delta(rng: &mut impl Rng) -> i64 {
    let d = rng.random_range(-5..=4);
    if d >= 0 { d + 1 } else { d }
}

impl Workload for CounterWorkload {
    fn kind(&self) -> WorkloadKind {
        WorkloadKind::Counter
    }

    fn plan(&self, _process: u64, _node: &str, rng: &mut ChaCha8Rng) -> Planned {
        let k = rng.random_range(0..KEYS);
        {
            let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            *used = (*used).max(k + 1);
        }
        let key = WorkloadKind::Counter.key(k);
        if rng.random_bool(0.5) {
            Planned {
                workload: WorkloadKind::Counter,
                f: F::Add,
                key,
                value: json!(delta(rng)),
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
        let n = *self.used.lock().unwrap_or_else(|e| e.into_inner());
        (0..n).map(|k| WorkloadKind::Counter.key(k)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn deltas_are_nonzero_and_bounded_and_ops_mixed() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let d = delta(&mut rng);
            assert!(d != 0 && (-5..=5).contains(&d));
            seen.insert(d);
        }
        assert_eq!(seen.len(), 10);
        let w = CounterWorkload::new();
        let fs: std::collections::BTreeSet<F> =
            (0..100).map(|_| w.plan(0, "n1", &mut rng).f).collect();
        assert_eq!(fs.len(), 2);
        assert_eq!(w.keys(), vec!["counter-0", "counter-1"]);
    }
}
