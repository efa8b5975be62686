//! The seeded nemesis schedule, shaped like Jepsen's nemesis package.
//!
//! Each fault family is its own generator, `stagger(interval)`-ed (uniform
//! gaps of 0–2·interval, cumulative from the start, default interval 10 s):
//! partition, kill and pause are `flip-flop start (repeat stop)`; clock is
//! `check-offsets` first, then a uniform mix of reset, bump and strobe
//! (combined.clj's clock package). Families are combined like `gen/any`: the
//! merged timeline in time order. Every random choice (gaps, partition
//! specs, node specs, clock deltas) is drawn here from ChaCha RNGs derived
//! from `--seed`, one per family, so a seed fixes the whole schedule and
//! enabling one family does not change another's.
//!
//! Clock distributions: Jepsen's shapes (jepsen/nemesis/time.clj) with the
//! magnitudes capped at [`MAX_CLOCK_OFFSET_MS`]. Jepsen bumps by
//! ±1.5^(6+U[0,25)) ms (≈ ±11 ms to ±288 s) and strobes by 2^(2+U[0,16)) ms;
//! here a bump is ±1.5^(6+U[0,15)) ms (≈ ±11 ms to ±5 s) and a strobe delta
//! 2^(2+U[0,10)) ms (4 ms to 4 s), same log-uniform shape. **This departs from
//! Jepsen on purpose**: a Meridian node whose clock runs more than
//! `max_clock_offset` (500 ms) ahead has its deltas *deferred* by its peers
//! until real time catches up (docs/architecture.md §3) — nothing is lost, but after a
//! +X s skew the cluster needs ≈ X s after the reset to converge, so a 288 s
//! bump would only make every run wait minutes before its final reads.
//! Strobe period 2^U[0,10) ms and duration U[0,32) s are Jepsen's. Node
//! targets use Jepsen's node specs (`nil` = random non-empty subset, one,
//! minority-third, minority, majority, all), except that a spec which picks
//! no node for this cluster size (`minority-third` below 4 nodes, as a node
//! spec or a partition) is not drawn: Jepsen would run it as a no-op.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::checker::faults::Family;
use crate::grudge::{Grudge, PartitionSpec, majority, minority_third};

/// Jepsen's default nemesis interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Jepsen's node specs (combined.clj `db-nodes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeSpec {
    /// `nil`: a random non-empty subset.
    Random,
    One,
    MinorityThird,
    Minority,
    Majority,
    All,
}

impl NodeSpec {
    /// `node-specs` (no primaries: Meridian has none).
    pub const ALL: [NodeSpec; 6] = [
        NodeSpec::Random,
        NodeSpec::One,
        NodeSpec::MinorityThird,
        NodeSpec::Minority,
        NodeSpec::Majority,
        NodeSpec::All,
    ];

    pub fn resolve(self, nodes: &[String], rng: &mut impl Rng) -> Vec<String> {
        let mut s = nodes.to_vec();
        s.shuffle(rng);
        let n = s.len();
        let take = match self {
            NodeSpec::Random => rng.random_range(1..=n.max(1)),
            NodeSpec::One => 1,
            NodeSpec::MinorityThird => minority_third(n),
            NodeSpec::Minority => majority(n) - 1,
            NodeSpec::Majority => majority(n),
            NodeSpec::All => return nodes.to_vec(),
        };
        s.truncate(take.min(n));
        s.sort();
        s
    }
}

/// A strobe: flip a node's clock between +delta and normal every period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Strobe {
    pub delta_ms: i64,
    pub period_ms: u64,
    pub duration_s: u64,
}

/// One nemesis operation, with every random choice already made.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum NemesisOp {
    StartPartition {
        spec: PartitionSpec,
        grudge: Grudge,
    },
    StopPartition,
    Kill {
        spec: NodeSpec,
        nodes: Vec<String>,
    },
    /// Restart every killed node (`{:f :start :value :all}`).
    Start,
    Pause {
        spec: NodeSpec,
        nodes: Vec<String>,
    },
    /// Resume every paused node.
    Resume,
    BumpClock {
        deltas: BTreeMap<String, i64>,
    },
    StrobeClock {
        strobes: BTreeMap<String, Strobe>,
    },
    ResetClock {
        nodes: Vec<String>,
    },
    CheckClockOffsets,
    /// Negative control, never scheduled by [`schedule`]: SIGKILL the node
    /// and delete its data directory; [`NemesisOp::Start`] restarts it
    /// empty. Logged as a `kill` (spec `wipe-data`).
    WipeData {
        node: String,
    },
}

impl NemesisOp {
    pub fn f(&self) -> crate::history::F {
        use crate::history::F;
        match self {
            NemesisOp::StartPartition { .. } => F::StartPartition,
            NemesisOp::StopPartition => F::StopPartition,
            NemesisOp::Kill { .. } | NemesisOp::WipeData { .. } => F::Kill,
            NemesisOp::Start => F::Start,
            NemesisOp::Pause { .. } => F::Pause,
            NemesisOp::Resume => F::Resume,
            NemesisOp::BumpClock { .. } => F::BumpClock,
            NemesisOp::StrobeClock { .. } => F::StrobeClock,
            NemesisOp::ResetClock { .. } => F::ResetClock,
            NemesisOp::CheckClockOffsets => F::CheckClockOffsets,
        }
    }
}

/// A nemesis op and when (since the test started) to run it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scheduled {
    pub at: Duration,
    pub op: NemesisOp,
}

/// What to schedule.
#[derive(Clone, Debug)]
pub struct ScheduleConfig {
    pub families: BTreeSet<Family>,
    pub interval: Duration,
    pub time_limit: Duration,
    pub nodes: Vec<String>,
    /// node → region
    pub regions: BTreeMap<String, String>,
    pub seed: u64,
    /// How long the outage family keeps its node cut off.
    pub outage: Duration,
}

/// The retention (`[replication] retention_ms`) a run with the `outage`
/// nemesis gives its nodes unless told otherwise: 2 s, near the node's
/// smallest allowed (1 s), so an outage of seconds outlasts it.
pub const DEFAULT_OUTAGE_RETENTION: Duration = Duration::from_secs(2);

/// How often a node truncates its log (the replication protocol's
/// `truncate_every_ms`, 10 s, which the node config does not expose).
/// Truncation reclaims whole log segments below what every peer still
/// counted has applied; a peer cut off for longer than the retention is no
/// longer counted.
pub const NODE_TRUNCATE_EVERY: Duration = Duration::from_secs(10);

/// Slack on top of the retention and the truncation rounds: the round's own
/// work, and the cut-off node's last progress before the cut.
pub const OUTAGE_SLACK: Duration = Duration::from_secs(4);

/// Truncation rounds an outage spans after the retention ran out: with one,
/// the log written between the retention running out and that round may be
/// less than one segment at a low write rate (seen: `--rate 100` through
/// the proxy backend, no full sync); two rounds span 10 s more of writes.
pub const OUTAGE_TRUNCATION_ROUNDS: u32 = 2;

/// Default outage length: [`min_outage`] of [`DEFAULT_OUTAGE_RETENTION`]
/// = 2 + 2 × 10 + 4 = 26 s.
pub const DEFAULT_OUTAGE: Duration = Duration::from_secs(26);

/// The default outage for retention `r`: `r` + [`OUTAGE_TRUNCATION_ROUNDS`]
/// × [`NODE_TRUNCATE_EVERY`] + [`OUTAGE_SLACK`]. Whether a full sync was
/// needed still depends on the writes made during it (at least a whole
/// 64 KiB segment after the retention ran out); the run records it
/// (`full-syncs-received`).
pub fn min_outage(retention: Duration) -> Duration {
    retention + NODE_TRUNCATE_EVERY * OUTAGE_TRUNCATION_ROUNDS + OUTAGE_SLACK
}

/// The outage family's schedule: a first gap of U[0, interval), then
/// repeatedly: cut one random node off (spec `long-outage`), hold for
/// `outage`, heal, gap of U[0, 2·interval). An outage still running
/// at the time limit is ended by the final heal.
fn outage_schedule(cfg: &ScheduleConfig, rng: &mut ChaCha8Rng, out: &mut Vec<Scheduled>) {
    let interval_ns = cfg.interval.as_nanos().max(1) as u64;
    let mut t = Duration::from_nanos(rng.random_range(0..interval_ns));
    while t < cfg.time_limit {
        let grudge = PartitionSpec::LongOutage.grudge(&cfg.nodes, &cfg.regions, rng);
        out.push(Scheduled {
            at: t,
            op: NemesisOp::StartPartition {
                spec: PartitionSpec::LongOutage,
                grudge,
            },
        });
        t += cfg.outage;
        if t >= cfg.time_limit {
            break;
        }
        out.push(Scheduled {
            at: t,
            op: NemesisOp::StopPartition,
        });
        t += Duration::from_nanos(rng.random_range(0..2 * interval_ns));
    }
}

fn family_rng(seed: u64, f: Family) -> ChaCha8Rng {
    // Distinct, fixed streams per family.
    let salt = match f {
        Family::Partition => 0x9e37_79b9_7f4a_7c15,
        Family::Kill => 0xbf58_476d_1ce4_e5b9,
        Family::Pause => 0x94d0_49bb_1331_11eb,
        Family::Clock => 0x2545_f491_4f6c_dd1d,
        Family::Outage => 0xd6e8_feb8_6659_fd93,
    };
    ChaCha8Rng::seed_from_u64(seed ^ salt)
}

/// Largest clock offset (either way) the clock nemesis gives a node, in ms:
/// bumps accumulate (like Jepsen's `clock_settime(now + delta)`) but the
/// resulting offset is clamped to ±this. See the module docs for why it is
/// far below Jepsen's ±288 s.
pub const MAX_CLOCK_OFFSET_MS: i64 = 5_000;

/// ±1.5^(6+U[0,15)) ms: Jepsen's bump distribution cut off at ≈ 5 s.
pub fn bump_delta_ms(rng: &mut impl Rng) -> i64 {
    let sign = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
    let d = (sign * 1.5f64.powf(6.0 + rng.random_range(0.0..15.0))) as i64;
    d.clamp(-MAX_CLOCK_OFFSET_MS, MAX_CLOCK_OFFSET_MS)
}

/// Jepsen's strobe distribution, delta cut off at 4 s.
pub fn strobe(rng: &mut impl Rng) -> Strobe {
    Strobe {
        delta_ms: 2f64.powf(2.0 + rng.random_range(0.0..10.0)) as i64,
        period_ms: 2f64.powf(rng.random_range(0.0..10.0)) as u64,
        duration_s: rng.random_range(0..32),
    }
}

/// The node specs that pick at least one node of a cluster of `n`:
/// `minority-third` is empty below 4 nodes, and Jepsen would run it as a
/// no-op fault; a 60 s run has few enough fault windows to not waste one.
fn node_specs(n: usize) -> Vec<NodeSpec> {
    NodeSpec::ALL
        .into_iter()
        .filter(|s| *s != NodeSpec::MinorityThird || minority_third(n) > 0)
        .collect()
}

fn random_node_spec(n: usize, rng: &mut impl Rng) -> NodeSpec {
    let specs = node_specs(n);
    specs[rng.random_range(0..specs.len())]
}

fn clock_targets(nodes: &[String], rng: &mut impl Rng) -> Vec<String> {
    random_node_spec(nodes.len(), rng).resolve(nodes, rng)
}

/// The main-phase schedule (the final heal is not part of it).
pub fn schedule(cfg: &ScheduleConfig) -> Vec<Scheduled> {
    let mut out = Vec::new();
    let interval_ns = cfg.interval.as_nanos().max(1) as u64;
    let limit = cfg.time_limit;
    let multi_region = cfg.regions.values().collect::<BTreeSet<_>>().len() > 1;
    for &fam in &cfg.families {
        let mut rng = family_rng(cfg.seed, fam);
        if fam == Family::Outage {
            outage_schedule(cfg, &mut rng, &mut out);
            continue;
        }
        let mut t = Duration::ZERO;
        let mut started = false;
        let mut first = true;
        loop {
            t += Duration::from_nanos(rng.random_range(0..2 * interval_ns));
            if t >= limit {
                break;
            }
            let op = match fam {
                Family::Partition => {
                    if started {
                        NemesisOp::StopPartition
                    } else {
                        // As for node specs: no empty `minority-third` split.
                        let mut specs = PartitionSpec::all(multi_region);
                        if minority_third(cfg.nodes.len()) == 0 {
                            specs.retain(|s| *s != PartitionSpec::MinorityThird);
                        }
                        let spec = specs[rng.random_range(0..specs.len())];
                        let grudge = spec.grudge(&cfg.nodes, &cfg.regions, &mut rng);
                        NemesisOp::StartPartition { spec, grudge }
                    }
                }
                // Scheduled by outage_schedule (never reached).
                Family::Outage => break,
                Family::Kill | Family::Pause => {
                    if started {
                        if fam == Family::Kill {
                            NemesisOp::Start
                        } else {
                            NemesisOp::Resume
                        }
                    } else {
                        let spec = random_node_spec(cfg.nodes.len(), &mut rng);
                        let nodes = spec.resolve(&cfg.nodes, &mut rng);
                        if fam == Family::Kill {
                            NemesisOp::Kill { spec, nodes }
                        } else {
                            NemesisOp::Pause { spec, nodes }
                        }
                    }
                }
                Family::Clock => {
                    if first {
                        NemesisOp::CheckClockOffsets
                    } else {
                        match rng.random_range(0..3) {
                            0 => NemesisOp::ResetClock {
                                nodes: clock_targets(&cfg.nodes, &mut rng),
                            },
                            1 => {
                                let targets = clock_targets(&cfg.nodes, &mut rng);
                                NemesisOp::BumpClock {
                                    deltas: targets
                                        .into_iter()
                                        .map(|n| (n, bump_delta_ms(&mut rng)))
                                        .collect(),
                                }
                            }
                            _ => {
                                let targets = clock_targets(&cfg.nodes, &mut rng);
                                NemesisOp::StrobeClock {
                                    strobes: targets
                                        .into_iter()
                                        .map(|n| (n, strobe(&mut rng)))
                                        .collect(),
                                }
                            }
                        }
                    }
                }
            };
            first = false;
            if fam != Family::Clock {
                started = !started;
            }
            out.push(Scheduled { at: t, op });
        }
    }
    out.sort_by_key(|s| s.at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(families: &[Family], seed: u64) -> ScheduleConfig {
        let nodes: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
        ScheduleConfig {
            families: families.iter().copied().collect(),
            interval: Duration::from_secs(10),
            time_limit: Duration::from_secs(300),
            regions: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), format!("r{}", i % 3)))
                .collect(),
            nodes,
            seed,
            outage: DEFAULT_OUTAGE,
        }
    }

    #[test]
    fn same_seed_same_schedule_different_seed_different() {
        let a = schedule(&cfg(&Family::ALL, 42));
        let b = schedule(&cfg(&Family::ALL, 42));
        let c = schedule(&cfg(&Family::ALL, 43));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(!a.is_empty());
    }

    #[test]
    fn families_are_independent_streams() {
        let all = schedule(&cfg(&Family::ALL, 7));
        let parts = schedule(&cfg(&[Family::Partition], 7));
        let parts_in_all: Vec<&Scheduled> = all
            .iter()
            .filter(|s| {
                matches!(
                    s.op,
                    NemesisOp::StartPartition { .. } | NemesisOp::StopPartition
                )
            })
            .collect();
        assert_eq!(parts_in_all.len(), parts.len());
        for (x, y) in parts_in_all.iter().zip(&parts) {
            assert_eq!(*x, y);
        }
    }

    #[test]
    fn flip_flop_alternates_and_gaps_are_staggered() {
        let s = schedule(&cfg(&[Family::Kill], 3));
        // 300 s at mean gap 10 s: plenty of ops.
        assert!(s.len() > 10, "{}", s.len());
        for (i, op) in s.iter().enumerate() {
            if i % 2 == 0 {
                assert!(matches!(op.op, NemesisOp::Kill { .. }), "{i}: {op:?}");
            } else {
                assert_eq!(op.op, NemesisOp::Start);
            }
        }
        let mut prev = Duration::ZERO;
        for op in &s {
            let gap = op.at - prev;
            assert!(gap < Duration::from_secs(20), "gap {gap:?} ≥ 2·interval");
            prev = op.at;
        }
        assert!(s.last().unwrap().at < Duration::from_secs(300));
    }

    #[test]
    fn clock_starts_with_check_offsets_and_draws_from_capped_jepsen_ranges() {
        let s = schedule(&cfg(&[Family::Clock], 5));
        assert_eq!(s[0].op, NemesisOp::CheckClockOffsets);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..2000 {
            let d = bump_delta_ms(&mut rng).abs();
            assert!((11..=MAX_CLOCK_OFFSET_MS).contains(&d), "{d}");
            let st = strobe(&mut rng);
            assert!((4..=4096).contains(&st.delta_ms));
            assert!((1..1024).contains(&st.period_ms));
            assert!(st.duration_s < 32);
        }
    }

    #[test]
    fn no_empty_faults_on_three_nodes() {
        let mut c = cfg(&Family::ALL, 8);
        c.nodes.truncate(3);
        c.time_limit = Duration::from_secs(3000);
        for s in schedule(&c) {
            match &s.op {
                NemesisOp::StartPartition { grudge, .. } => assert!(!grudge.is_empty()),
                NemesisOp::Kill { nodes, .. } | NemesisOp::Pause { nodes, .. } => {
                    assert!(!nodes.is_empty())
                }
                NemesisOp::BumpClock { deltas } => assert!(!deltas.is_empty()),
                NemesisOp::StrobeClock { strobes } => assert!(!strobes.is_empty()),
                NemesisOp::ResetClock { nodes } => assert!(!nodes.is_empty()),
                _ => {}
            }
        }
        assert!(node_specs(5).contains(&NodeSpec::MinorityThird));
    }

    #[test]
    fn node_specs_resolve_to_jepsen_sizes() {
        let nodes: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(NodeSpec::One.resolve(&nodes, &mut rng).len(), 1);
        assert_eq!(NodeSpec::MinorityThird.resolve(&nodes, &mut rng).len(), 1);
        assert_eq!(NodeSpec::Minority.resolve(&nodes, &mut rng).len(), 2);
        assert_eq!(NodeSpec::Majority.resolve(&nodes, &mut rng).len(), 3);
        assert_eq!(NodeSpec::All.resolve(&nodes, &mut rng), nodes);
        for _ in 0..100 {
            let r = NodeSpec::Random.resolve(&nodes, &mut rng);
            assert!(!r.is_empty() && r.len() <= 5);
        }
        let three: Vec<String> = nodes[..3].to_vec();
        assert!(NodeSpec::MinorityThird.resolve(&three, &mut rng).is_empty());
    }

    #[test]
    fn partitions_use_the_one_region_shape_only_with_several_regions() {
        let mut c = cfg(&[Family::Partition], 11);
        c.time_limit = Duration::from_secs(5000);
        let specs: BTreeSet<&'static str> = schedule(&c)
            .iter()
            .filter_map(|s| match &s.op {
                NemesisOp::StartPartition { spec, .. } => Some(spec.name()),
                _ => None,
            })
            .collect();
        assert!(specs.contains("one-region"), "{specs:?}");
        for r in c.regions.values_mut() {
            *r = "same".into();
        }
        assert!(!schedule(&c).iter().any(|s| matches!(
            &s.op,
            NemesisOp::StartPartition {
                spec: PartitionSpec::OneRegion,
                ..
            }
        )));
    }

    #[test]
    fn outages_outlast_retention_and_a_truncation_round_and_alternate_with_heals() {
        assert_eq!(DEFAULT_OUTAGE, min_outage(DEFAULT_OUTAGE_RETENTION));
        let s = schedule(&cfg(&[Family::Outage], 7));
        assert!(s.len() >= 4, "several outages in 300 s: {}", s.len());
        for (i, w) in s.iter().enumerate() {
            match (&w.op, i % 2) {
                (NemesisOp::StartPartition { spec, grudge }, 0) => {
                    assert_eq!(*spec, PartitionSpec::LongOutage);
                    // One node cut off from the four others, both ways.
                    assert_eq!(grudge.directed_pairs().len(), 2 * 4);
                    if let Some(next) = s.get(i + 1) {
                        assert_eq!(next.at - w.at, DEFAULT_OUTAGE);
                    }
                }
                (NemesisOp::StopPartition, 1) => {}
                (op, _) => panic!("unexpected {op:?} at {i}"),
            }
        }
        assert_eq!(s, schedule(&cfg(&[Family::Outage], 7)), "seeded");
    }
}
