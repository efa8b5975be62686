//! Expiry workload: registers with TTLs (Redis `SET .. PX`, `GET`,
//! `PEXPIRE`, `PERSIST`, and `SET` without a TTL, which clears one), judged
//! by [`crate::checker::expiry`].
//!
//! Keys `expiry-<n>`, [`SLOTS`] live at once; a key takes
//! [`OPS_PER_KEY`] ops and is retired. Its first [`WRITE_OPS`] ops are the
//! *write phase* (writes and reads mixed); the rest are reads only, so that
//! every key has a quiet tail in which its last TTL runs out while it is
//! read: that is where a resurrected value would show. Reads in the write
//! phase, right after a `SET .. PX`, are where a value lost inside its TTL
//! would show.
//!
//! Two kinds of keys. On *TTL keys* (three in four) every write sets a
//! deadline: write-phase mix read 30 %, `SET v PX t` 60 %, `PEXPIRE t`
//! 10 %. On *persist keys* (key number ≡ 3 mod 4, one in
//! [`PERSIST_KEY_EVERY`]) TTLs are also cleared: read 30 %, `SET v PX t`
//! 35 %, `SET v` 15 %, `PEXPIRE t` 10 %, `PERSIST` 10 %. A `PERSIST` or
//! plain `SET` that may have seen a value's deadline before it passed
//! keeps that value from being judged for resurrection (the checker's
//! rule 1), so they are kept off most keys. TTLs are drawn uniformly from
//! [`MIN_TTL_MS`] … [`MAX_TTL_MS`]. Written values are `v<n>-p<process>`,
//! unique across all keys, so a read names the one write it saw.
//!
//! Every key's last op is a `PERSIST`, normally long after its last TTL ran
//! out: a `PERSIST` of an expired key must not bring the value back (the
//! node fires a passed deadline before any write), which the final reads
//! then check. (One that may have come before the deadline only keeps the
//! value from being judged.) It also makes `PERSIST` common enough that
//! every run acknowledges some (the `stats` checker wants every op type
//! to succeed at least once).
//!
//! History: `SET` is `write {"value", "ttl-ms"}` (`ttl-ms` null without a
//! TTL), `PEXPIRE` is `expire {"ttl-ms"}`, `PERSIST` is `persist` (value
//! null), `GET` is `read` (string or null).

use std::sync::Mutex;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::{Planned, Workload};
use crate::history::{F, WorkloadKind};

/// Live keys at once: at the default 200 ops/s of `--workload expiry`
/// alone, each key gets 25 ops/s and lives [`OPS_PER_KEY`] / 25 = 4 s,
/// longer than a write phase plus the longest TTL.
pub const SLOTS: u64 = 8;
/// Ops per key before it is retired.
pub const OPS_PER_KEY: u64 = 100;
/// One key in this many is a *persist key* (module docs).
pub const PERSIST_KEY_EVERY: u64 = 4;
/// Ops of a key's write phase (its first ops); the rest are reads.
pub const WRITE_OPS: u64 = 12;
/// Shortest TTL drawn, in ms. Above the node's `max_clock_offset` (500
/// ms): a node's hybrid clock runs at most that far ahead of its physical
/// clock, so a value is always stamped before its own deadline and its TTL
/// hides it (a value stamped after the deadline would legally survive it).
pub const MIN_TTL_MS: u64 = 1_000;
/// Longest TTL drawn, in ms: short enough that most keys' last TTL runs
/// out within their read tail.
pub const MAX_TTL_MS: u64 = 3_000;

#[derive(Debug, Default)]
struct State {
    /// Ops planned on each slot so far (over all its keys).
    planned: [u64; SLOTS as usize],
    next_value: u64,
}

/// The expiry workload.
#[derive(Debug, Default)]
pub struct ExpiryWorkload {
    state: Mutex<State>,
}

impl ExpiryWorkload {
    pub fn new() -> ExpiryWorkload {
        ExpiryWorkload::default()
    }
}

/// The key in `slot` after `planned` ops on the slot.
fn key_of(slot: u64, planned: u64) -> String {
    WorkloadKind::Expiry.key((planned / OPS_PER_KEY) * SLOTS + slot)
}

impl Workload for ExpiryWorkload {
    fn kind(&self) -> WorkloadKind {
        WorkloadKind::Expiry
    }

    fn plan(&self, process: u64, _node: &str, rng: &mut ChaCha8Rng) -> Planned {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let slot = rng.random_range(0..SLOTS);
        let n = s.planned[slot as usize];
        s.planned[slot as usize] += 1;
        let key = key_of(slot, n);
        let persist_key =
            ((n / OPS_PER_KEY) * SLOTS + slot) % PERSIST_KEY_EVERY == PERSIST_KEY_EVERY - 1;
        let roll: f64 = rng.random();
        let ttl = rng.random_range(MIN_TTL_MS..=MAX_TTL_MS);
        let planned = |f: F, value: Value| Planned {
            workload: WorkloadKind::Expiry,
            f,
            key: key.clone(),
            value,
            meta: None,
        };
        if n % OPS_PER_KEY == OPS_PER_KEY - 1 {
            // The key's last op (module docs).
            return planned(F::Persist, Value::Null);
        }
        if n % OPS_PER_KEY >= WRITE_OPS || roll < 0.3 {
            return planned(F::Read, Value::Null);
        }
        // (SET with TTL, SET without, PEXPIRE) up to these rolls; PERSIST
        // above.
        let (px, plain, expire) = if persist_key {
            (0.65, 0.8, 0.9)
        } else {
            (0.9, 0.9, 1.0)
        };
        if roll < plain {
            s.next_value += 1;
            let value = format!("v{}-p{process}", s.next_value);
            let ttl = (roll < px).then_some(ttl);
            return planned(F::Write, json!({"value": value, "ttl-ms": ttl}));
        }
        if roll < expire {
            return planned(F::Expire, json!({"ttl-ms": ttl}));
        }
        planned(F::Persist, Value::Null)
    }

    fn keys(&self) -> Vec<String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (0..SLOTS)
            .flat_map(|slot| {
                (0..s.planned[slot as usize].div_ceil(OPS_PER_KEY))
                    .map(move |g| WorkloadKind::Expiry.key(g * SLOTS + slot))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn keys_have_a_write_phase_then_reads_with_unique_values_and_bounded_ttls() {
        let w = ExpiryWorkload::new();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut per_key: BTreeMap<String, Vec<Planned>> = BTreeMap::new();
        for i in 0..5000u64 {
            let p = w.plan(i % 10, "n1", &mut rng);
            assert_eq!(p.workload, WorkloadKind::Expiry);
            per_key.entry(p.key.clone()).or_default().push(p);
        }
        let keys: BTreeSet<String> = w.keys().into_iter().collect();
        assert_eq!(
            keys,
            per_key.keys().cloned().collect(),
            "keys() lists every key used"
        );
        let mut values = BTreeSet::new();
        let mut fs = BTreeSet::new();
        for (k, ops) in &per_key {
            assert!(ops.len() as u64 <= OPS_PER_KEY, "{k}");
            let n: u64 = k.strip_prefix("expiry-").unwrap().parse().unwrap();
            let persist_key = n % PERSIST_KEY_EVERY == PERSIST_KEY_EVERY - 1;
            for (i, p) in ops.iter().enumerate() {
                let last = i as u64 == OPS_PER_KEY - 1;
                assert_eq!(
                    p.f == F::Persist && last,
                    last,
                    "{k}: the last op is a PERSIST"
                );
                let clears = p.f == F::Persist || (p.f == F::Write && p.value["ttl-ms"].is_null());
                assert!(
                    persist_key || last || !clears,
                    "{k}: TTL keys clear no TTL but at the end"
                );
                fs.insert((p.f, p.value.get("ttl-ms").is_some_and(Value::is_u64)));
                if i as u64 >= WRITE_OPS && !last {
                    assert_eq!(p.f, F::Read, "{k}: only reads after the write phase");
                }
                if let Some(t) = p.value.get("ttl-ms").and_then(Value::as_u64) {
                    assert!((MIN_TTL_MS..=MAX_TTL_MS).contains(&t), "{t}");
                }
                if p.f == F::Write {
                    let v = p.value["value"].as_str().unwrap().to_string();
                    assert!(values.insert(v), "unique values");
                }
            }
        }
        // Reads, SET with and without a TTL, PEXPIRE and PERSIST all occur.
        for want in [
            (F::Read, false),
            (F::Write, true),
            (F::Write, false),
            (F::Expire, true),
            (F::Persist, false),
        ] {
            assert!(fs.contains(&want), "{want:?} in {fs:?}");
        }
        assert!(per_key.len() as u64 > SLOTS, "keys rotate");
    }
}
