//! Fault windows recovered from the nemesis ops of a history.
//!
//! The nemesis is single-threaded, so its ops come in (invocation, completion)
//! pairs with the same `f`. A window opens at a start op and closes at the
//! next stop op of the same family (Jepsen's `:perf` start/stop sets):
//! partition = `start-partition` → `stop-partition`, kill = `kill` → `start`,
//! pause = `pause` → `resume`, clock = `bump-clock` → `reset-clock`, and a
//! `strobe-clock` is a window of its own.
//!
//! Each window has two spans: the *shaded* span (start invocation to stop
//! completion, what plots draw) and the *certain* span (start completion to
//! stop invocation), during which the fault was surely in effect; reasoning
//! such as "these two nodes could not talk" uses only the certain span.

use serde_json::Value;

use crate::grudge::Grudge;
use crate::history::{F, History, Op};

/// Fault families, with Jepsen's plot colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Partition,
    Kill,
    Pause,
    Clock,
    /// The long-outage nemesis (`--nemesis outage`): one node cut off for
    /// longer than the nodes' log retention. Its ops are partitions
    /// (spec `long-outage`), so in a history its windows are
    /// [`Family::Partition`] windows.
    Outage,
}

impl Family {
    /// What `--nemesis all` runs ([`Family::Outage`] excluded: it replaces
    /// the partition family's network faults).
    pub const ALL: [Family; 4] = [
        Family::Partition,
        Family::Kill,
        Family::Pause,
        Family::Clock,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Partition => "partition",
            Family::Kill => "kill",
            Family::Pause => "pause",
            Family::Clock => "clock",
            Family::Outage => "outage",
        }
    }

    /// Jepsen's `:perf` colour (combined.clj).
    pub fn color(self) -> (u8, u8, u8) {
        match self {
            Family::Partition | Family::Outage => (0xE9, 0xDC, 0xA0),
            Family::Kill => (0xE9, 0xA4, 0xA0),
            Family::Pause => (0xA0, 0xB1, 0xE9),
            Family::Clock => (0xA0, 0xE9, 0xE3),
        }
    }

    fn of_start(f: F) -> Option<Family> {
        match f {
            F::StartPartition => Some(Family::Partition),
            F::Kill => Some(Family::Kill),
            F::Pause => Some(Family::Pause),
            F::BumpClock | F::StrobeClock => Some(Family::Clock),
            _ => None,
        }
    }

    fn of_stop(f: F) -> Option<Family> {
        match f {
            F::StopPartition => Some(Family::Partition),
            F::Start => Some(Family::Kill),
            F::Resume => Some(Family::Pause),
            F::ResetClock => Some(Family::Clock),
            _ => None,
        }
    }
}

/// One fault window. Times are ns since the test started; an open-ended
/// window ends at `u64::MAX` (certain) / the history's end (shaded).
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub family: Family,
    pub shade_start: u64,
    pub shade_end: u64,
    pub certain_start: u64,
    pub certain_end: u64,
    /// The start op's completion value (what was actually done).
    pub value: Value,
    /// For partitions: the grudge that was applied.
    pub grudge: Option<Grudge>,
}

impl Window {
    /// Whether the fault was certainly in effect over all of `[from, to]`.
    pub fn certainly_covers(&self, from: u64, to: u64) -> bool {
        self.certain_start <= from && to <= self.certain_end
    }
    /// Whether the shaded span intersects `[from, to]`.
    pub fn overlaps(&self, from: u64, to: u64) -> bool {
        self.shade_start <= to && from <= self.shade_end
    }
}

/// Nemesis (invocation, completion) pairs in order.
pub fn nemesis_pairs(history: &History) -> Vec<(&Op, Option<&Op>)> {
    let ops: Vec<&Op> = history.nemesis_ops().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < ops.len() {
        if i + 1 < ops.len() && ops[i + 1].f == ops[i].f {
            out.push((ops[i], Some(ops[i + 1])));
            i += 2;
        } else {
            out.push((ops[i], None));
            i += 1;
        }
    }
    out
}

/// All fault windows of a history.
pub fn windows(history: &History) -> Vec<Window> {
    let end = history.end_time();
    let mut open: Vec<Window> = Vec::new();
    let mut done = Vec::new();
    for (inv, cmp) in nemesis_pairs(history) {
        let cmp_time = cmp.map_or(end, |c| c.time);
        if inv.f == F::StrobeClock {
            done.push(Window {
                family: Family::Clock,
                shade_start: inv.time,
                shade_end: cmp_time,
                certain_start: cmp.map_or(u64::MAX, |c| c.time),
                certain_end: inv.time,
                value: cmp.map_or(Value::Null, |c| c.value.clone()),
                grudge: None,
            });
            continue;
        }
        if let Some(family) = Family::of_start(inv.f) {
            if open.iter().any(|w| w.family == family) {
                continue; // already disrupted (Jepsen: "nemesis already disrupting")
            }
            let value = cmp.map_or(Value::Null, |c| c.value.clone());
            let grudge = if family == Family::Partition {
                value
                    .get("grudge")
                    .and_then(|g| serde_json::from_value::<Grudge>(g.clone()).ok())
            } else {
                None
            };
            open.push(Window {
                family,
                shade_start: inv.time,
                shade_end: end,
                // A start that never completed may or may not have happened.
                certain_start: cmp.map_or(u64::MAX, |c| c.time),
                certain_end: u64::MAX,
                value,
                grudge,
            });
        } else if let Some(family) = Family::of_stop(inv.f)
            && let Some(pos) = open.iter().position(|w| w.family == family)
        {
            let mut w = open.remove(pos);
            w.shade_end = cmp_time;
            w.certain_end = inv.time;
            done.push(w);
        }
    }
    done.extend(open);
    done.sort_by_key(|w| (w.shade_start, w.family));
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::test_support::H;
    use serde_json::json;

    #[test]
    fn windows_pair_starts_with_stops_per_family() {
        let mut h = H::new();
        h.nemesis(F::StartPartition, json!("one")) // t=0
            .nemesis(
                F::StartPartition,
                json!({"grudge": {"n1": ["n2"], "n2": ["n1"]}}),
            ) // t=1
            .nemesis(F::Kill, json!("one")) // 2
            .nemesis(F::Kill, json!({"n3": {"killed_pid": 7}})) // 3
            .nemesis(F::StopPartition, Value::Null) // 4
            .nemesis(F::StopPartition, json!("network-healed")); // 5
        let w = windows(&h.build());
        assert_eq!(w.len(), 2);
        let p = &w[0];
        assert_eq!(p.family, Family::Partition);
        assert_eq!((p.shade_start, p.shade_end), (0, 5_000_000));
        assert_eq!((p.certain_start, p.certain_end), (1_000_000, 4_000_000));
        assert!(p.grudge.as_ref().unwrap().drops("n1", "n2"));
        assert!(p.certainly_covers(2_000_000, 3_000_000));
        assert!(!p.certainly_covers(500_000, 3_000_000));
        let k = &w[1];
        assert_eq!(k.family, Family::Kill);
        assert_eq!(k.certain_end, u64::MAX, "the kill was never undone");
    }
}
