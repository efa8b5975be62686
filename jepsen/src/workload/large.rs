//! Large-value workload: the size edges of the store (review C2/C4).
//!
//! * **Registers near the value limit**: `write` of a unique value of
//!   [`LargeConfig::value_bytes`] (default the limit itself,
//!   [`wire::MAX_VALUE_BYTES`]) and `read`, on rotating keys
//!   `register-large-<n>` ([`REGISTER_OPS_PER_KEY`] ops each).
//! * **Big sets**: `add` of unique members of [`LargeConfig::member_bytes`]
//!   and `read`, on keys `set-large-<n>`; a key is retired once the member
//!   bytes planned on it reach [`SET_KEY_BYTES`] (half the object limit,
//!   so that the main phase's sets stay readable in one reply even when
//!   partitions let every side add its share). Large sets are **add-only**
//!   on purpose: with no removes, a read that is not atomic (a store that
//!   pages big replies) is still checkable — every member acknowledged
//!   before the read began is in every later state, so `missed`,
//!   `duplicated` and `unexpected` keep their meaning.
//! * **Past one write's limit, by merges**: the runner's scripted
//!   [`crate::runner`] merge scenario isolates every node from every other,
//!   adds members concurrently on all of them at `local` until together
//!   they hold [`LargeConfig::merge_bytes`] (default
//!   [`DEFAULT_MERGE_BYTES`], above [`wire::MAX_OBJECT_BYTES`], while each
//!   node's share stays under it, so every add is accepted), and heals: the
//!   merged set is larger than any single write could make it, and full
//!   sync, quorum reads and read repair must move it.
//!
//! The history records only the short id of each value (`L<n>-p<process>`)
//! and its size (`meta.bytes` of the invocation). The bytes sent are
//! [`payload`]`(id, size)`: a header naming the id and the length, then a
//! filler derived from the id. Every read decodes what it got back with
//! [`decode`]: a payload whose length or filler differs from what its id
//! says comes back as [`CORRUPT_PREFIX`]`<id>` — a value no write attempted
//! (`garbage-reads`/`unexpected` in the register and set checkers, and
//! `corrupt-reads` in the `large` checker). Memory: the harness holds at
//! most one payload per op in flight, plus the replies of reads in flight
//! (each at most one reply frame).

use std::sync::Mutex;

use meridian_client::wire;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::{Planned, Workload};
use crate::history::{F, WorkloadKind};

/// Default size of a large register value: the per-write limit itself.
pub const DEFAULT_VALUE_BYTES: usize = wire::MAX_VALUE_BYTES;
/// Default size of a big set's member.
pub const DEFAULT_MEMBER_BYTES: usize = 256 << 10;
/// Default total of the merge scenario: an eighth over the object limit,
/// which still fits one reply frame ([`wire::MAX_FRAME_BYTES`]) so that the
/// final full reads work on a store that does not page.
pub const DEFAULT_MERGE_BYTES: usize = wire::MAX_OBJECT_BYTES + wire::MAX_OBJECT_BYTES / 8;
/// Largest `--large-merge-bytes`: four object limits (every region of a
/// four-region cluster at the limit). Bounds the harness's memory: a final
/// read holds the whole set once.
pub const MAX_MERGE_BYTES: usize = 4 * wire::MAX_OBJECT_BYTES;
/// Ops per rotating large register key.
pub const REGISTER_OPS_PER_KEY: u64 = 20;
/// Member bytes planned on a main-phase big set key before it is retired.
pub const SET_KEY_BYTES: usize = wire::MAX_OBJECT_BYTES / 2;
/// The key of the scripted merge scenario.
pub const MERGE_KEY: &str = "set-large-merge";
/// The scenario tag (`meta.scenario`) of the merge scenario's ops.
pub const MERGE_SCENARIO: &str = "large-merge";
/// Prefix of a decoded payload whose bytes were not what its write sent.
pub const CORRUPT_PREFIX: &str = "corrupt:";
/// Key prefixes of this workload.
pub const SET_PREFIX: &str = "set-large-";
pub const REGISTER_PREFIX: &str = "register-large-";

/// Marks a payload (values of the other workloads never start with it).
const MARK: &str = "#L:";

/// The sizes of a run (`--large-value-bytes`, `--large-member-bytes`,
/// `--large-merge-bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LargeConfig {
    pub value_bytes: usize,
    pub member_bytes: usize,
    pub merge_bytes: usize,
}

impl Default for LargeConfig {
    fn default() -> Self {
        LargeConfig {
            value_bytes: DEFAULT_VALUE_BYTES,
            member_bytes: DEFAULT_MEMBER_BYTES,
            merge_bytes: DEFAULT_MERGE_BYTES,
        }
    }
}

impl LargeConfig {
    /// Checks the sizes: values and members within the per-write limit and
    /// long enough for their header, the merge total within
    /// [`MAX_MERGE_BYTES`].
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("--large-value-bytes", self.value_bytes),
            ("--large-member-bytes", self.member_bytes),
        ] {
            if !(MIN_PAYLOAD_BYTES..=wire::MAX_VALUE_BYTES).contains(&v) {
                return Err(format!(
                    "{name} must be in [{MIN_PAYLOAD_BYTES}, {}], got {v}",
                    wire::MAX_VALUE_BYTES
                ));
            }
        }
        if !(self.member_bytes..=MAX_MERGE_BYTES).contains(&self.merge_bytes) {
            return Err(format!(
                "--large-merge-bytes must be in [--large-member-bytes, {MAX_MERGE_BYTES}], got {}",
                self.merge_bytes
            ));
        }
        Ok(())
    }

    /// Members each of `nodes` adds in the merge scenario: together at
    /// least `merge_bytes`.
    pub fn merge_adds_per_node(&self, nodes: usize) -> usize {
        let per_node = self.merge_bytes.div_ceil(nodes.max(1));
        per_node.div_ceil(self.member_bytes.max(1))
    }
}

/// Smallest payload: room for the header of any id.
pub const MIN_PAYLOAD_BYTES: usize = 64;

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The filler after the header: lowercase letters from a xorshift stream
/// seeded by the id, so any changed, dropped or swapped byte shows.
fn fill(id: &str, out: &mut String, n: usize) {
    let mut x = fnv1a(id) | 1;
    out.reserve(n);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(char::from(b'a' + (x % 26) as u8));
    }
}

/// The bytes written for value `id` of `bytes` bytes: `#L:<id>|<bytes>|`
/// then the filler. Never shorter than its header.
pub fn payload(id: &str, bytes: usize) -> String {
    let mut s = format!("{MARK}{id}|{bytes}|");
    let rest = bytes.saturating_sub(s.len());
    fill(id, &mut s, rest);
    s
}

/// What a read got back, as the history records it: a payload becomes its
/// id if every byte is what [`payload`] wrote, else [`CORRUPT_PREFIX`]`<id>`
/// (or `corrupt:?` when not even the header is intact); anything else is
/// returned unchanged.
pub fn decode(s: &str) -> String {
    let Some(rest) = s.strip_prefix(MARK) else {
        return s.to_string();
    };
    let mut parts = rest.splitn(3, '|');
    let (Some(id), Some(len), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
        return format!("{CORRUPT_PREFIX}?");
    };
    match len.parse::<usize>() {
        // Bounded before expanding: a damaged header cannot make us allocate.
        Ok(n) if n == s.len() && n <= wire::MAX_VALUE_BYTES && payload(id, n) == s => {
            id.to_string()
        }
        _ => format!("{CORRUPT_PREFIX}{id}"),
    }
}

/// The size to expand an op's value to, from its invocation meta.
pub fn bytes_of(meta: Option<&Value>) -> Option<usize> {
    meta.and_then(|m| m.get("bytes"))
        .and_then(Value::as_u64)
        .and_then(|b| usize::try_from(b).ok())
}

#[derive(Debug, Default)]
struct State {
    next_value: u64,
    register_planned: u64,
    set_key: u64,
    set_key_bytes: usize,
    used_set_keys: u64,
}

/// The large-value workload.
#[derive(Debug)]
pub struct LargeWorkload {
    cfg: LargeConfig,
    state: Mutex<State>,
}

impl LargeWorkload {
    pub fn new(cfg: LargeConfig) -> LargeWorkload {
        LargeWorkload {
            cfg,
            state: Mutex::new(State::default()),
        }
    }
}

impl Workload for LargeWorkload {
    fn kind(&self) -> WorkloadKind {
        WorkloadKind::Large
    }

    /// Half register ops (write or read, half each), half set ops (add
    /// 70 %, read 30 %).
    fn plan(&self, process: u64, _node: &str, rng: &mut ChaCha8Rng) -> Planned {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let register = rng.random_bool(0.5);
        let write = rng.random_bool(if register { 0.5 } else { 0.7 });
        if register {
            let key = format!(
                "{REGISTER_PREFIX}{}",
                s.register_planned / REGISTER_OPS_PER_KEY
            );
            s.register_planned += 1;
            if !write {
                return Planned {
                    workload: WorkloadKind::Register,
                    f: F::Read,
                    key,
                    value: Value::Null,
                    meta: None,
                };
            }
            s.next_value += 1;
            return Planned {
                workload: WorkloadKind::Register,
                f: F::Write,
                key,
                value: json!(format!("L{}-p{process}", s.next_value)),
                meta: Some(json!({"bytes": self.cfg.value_bytes})),
            };
        }
        if s.set_key_bytes >= SET_KEY_BYTES {
            s.set_key += 1;
            s.set_key_bytes = 0;
        }
        s.used_set_keys = s.used_set_keys.max(s.set_key + 1);
        let key = format!("{SET_PREFIX}{}", s.set_key);
        if !write {
            return Planned {
                workload: WorkloadKind::Set,
                f: F::Read,
                key,
                value: Value::Null,
                meta: None,
            };
        }
        s.next_value += 1;
        s.set_key_bytes += self.cfg.member_bytes;
        Planned {
            workload: WorkloadKind::Set,
            f: F::Add,
            key,
            value: json!(format!("L{}-p{process}", s.next_value)),
            meta: Some(json!({"bytes": self.cfg.member_bytes})),
        }
    }

    fn keys(&self) -> Vec<String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let registers = s.register_planned.div_ceil(REGISTER_OPS_PER_KEY);
        (0..registers)
            .map(|k| format!("{REGISTER_PREFIX}{k}"))
            .chain((0..s.used_set_keys).map(|k| format!("{SET_PREFIX}{k}")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn payloads_round_trip_and_any_damage_is_corrupt() {
        let p = payload("L7-p3", 1000);
        assert_eq!(p.len(), 1000);
        assert_eq!(decode(&p), "L7-p3");
        assert_eq!(decode("e12"), "e12", "other workloads' values pass through");
        // Cut short, one byte changed, another id's filler, header only.
        assert_eq!(decode(&p[..999]), "corrupt:L7-p3");
        let mut b = p.clone().into_bytes();
        b[500] = if b[500] == b'a' { b'b' } else { b'a' };
        assert_eq!(decode(&String::from_utf8(b).unwrap()), "corrupt:L7-p3");
        let other = payload("L8-p3", 1000).replacen("L8-p3", "L7-p3", 1);
        assert_eq!(decode(&other), "corrupt:L7-p3");
        assert_eq!(decode("#L:L7-p3"), "corrupt:?");
        let max = payload("L1-p0", wire::MAX_VALUE_BYTES);
        assert_eq!(
            (max.len(), decode(&max).as_str()),
            (wire::MAX_VALUE_BYTES, "L1-p0")
        );
    }

    #[test]
    fn sizes_are_validated_and_the_merge_passes_the_object_limit() {
        let c = LargeConfig::default();
        assert!(c.validate().is_ok());
        for n in [3, 5] {
            let per_node = c.merge_adds_per_node(n) * c.member_bytes;
            assert!(
                per_node < wire::MAX_OBJECT_BYTES,
                "each node's share is accepted"
            );
            assert!(
                per_node * n > wire::MAX_OBJECT_BYTES,
                "the merge passes the limit"
            );
        }
        let too_big = LargeConfig {
            value_bytes: wire::MAX_VALUE_BYTES + 1,
            ..c
        };
        assert!(too_big.validate().is_err());
        let tiny = LargeConfig {
            member_bytes: 10,
            ..c
        };
        assert!(tiny.validate().is_err());
        let huge_merge = LargeConfig {
            merge_bytes: MAX_MERGE_BYTES + 1,
            ..c
        };
        assert!(huge_merge.validate().is_err());
    }

    #[test]
    fn set_keys_retire_at_their_byte_budget_and_values_are_unique() {
        let w = LargeWorkload::new(LargeConfig::default());
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut per_key = std::collections::BTreeMap::<String, usize>::new();
        let mut ids = std::collections::BTreeSet::new();
        for p in 0..2000 {
            let op = w.plan(p % 10, "n1", &mut rng);
            if op.f == F::Add || op.f == F::Write {
                assert!(ids.insert(op.value.to_string()), "unique ids");
                let b = bytes_of(op.meta.as_ref()).unwrap();
                if op.f == F::Add {
                    *per_key.entry(op.key.clone()).or_default() += b;
                }
            }
        }
        assert!(per_key.len() > 1, "keys rotate");
        for (k, b) in &per_key {
            assert!(*b <= SET_KEY_BYTES, "{k}: {b} planned bytes");
            assert_eq!(WorkloadKind::of_key(k), Some(WorkloadKind::Set));
        }
        assert!(w.keys().iter().any(|k| k.starts_with(REGISTER_PREFIX)));
    }
}
