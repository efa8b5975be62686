//! Register workload: `write` of a unique value and `read`, half each.
//! Keys rotate every [`OPS_PER_KEY`] planned ops, as Jepsen's independent
//! register test limits each key to ~20 ops so that the linearizability
//! search stays tractable.

use std::sync::Mutex;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::{Planned, Workload};
use crate::history::{F, WorkloadKind};

/// Ops per register key (Jepsen's per-key limit).
pub const OPS_PER_KEY: u64 = 20;

#[derive(Debug, Default)]
struct State {
    planned: u64,
    writes: u64,
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
        let key = WorkloadKind::Register.key(s.planned / OPS_PER_KEY);
        s.planned += 1;
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
        (0..s.planned.div_ceil(OPS_PER_KEY))
            .map(|k| WorkloadKind::Register.key(k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn keys_rotate_and_values_are_unique() {
        let w = RegisterWorkload::new();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let ops: Vec<Planned> = (0..45).map(|i| w.plan(i % 3, "n1", &mut rng)).collect();
        assert!(ops[..20].iter().all(|o| o.key == "register-0"));
        assert!(ops[20..40].iter().all(|o| o.key == "register-1"));
        assert_eq!(w.keys().len(), 3);
        let writes: Vec<&Value> = ops
            .iter()
            .filter(|o| o.f == F::Write)
            .map(|o| &o.value)
            .collect();
        let unique: std::collections::BTreeSet<String> =
            writes.iter().map(|v| v.to_string()).collect();
        assert_eq!(unique.len(), writes.len());
    }
}
