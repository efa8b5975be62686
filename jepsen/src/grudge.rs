//! Grudges: Jepsen's description of a network partition.
//!
//! A grudge maps each destination node to the set of source nodes whose
//! packets it drops (`jepsen.nemesis`). Partitions are therefore inbound drops
//! on the receiver, and may be one-way (majorities-ring is). The shapes below
//! are ports of Jepsen's `complete-grudge`, `bisect`, `split-one`,
//! `majorities-ring` (the exact ring; we only run 3 or 5 nodes), `bridge` and
//! combined.clj's `minority-third`, plus a geo shape, one region isolated.
//! Randomness comes from the caller's seeded RNG, so a seed fixes every grudge.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// destination node → source nodes it drops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Grudge(pub BTreeMap<String, BTreeSet<String>>);

impl Grudge {
    /// Whether `dst` drops packets from `src`.
    pub fn drops(&self, dst: &str, src: &str) -> bool {
        self.0.get(dst).is_some_and(|s| s.contains(src))
    }

    /// Every dropped directed link as `(src, dst)`, sorted.
    pub fn directed_pairs(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .0
            .iter()
            .flat_map(|(dst, srcs)| srcs.iter().map(move |s| (s.clone(), dst.clone())))
            .collect();
        v.sort();
        v
    }

    /// True if no link is cut.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(BTreeSet::is_empty)
    }

    /// Whether information can flow from `from` to `to` over links that are
    /// not cut, possibly through other nodes of `nodes` (catch-up is
    /// transitive: a bridge node relays).
    pub fn reachable(&self, nodes: &[String], from: &str, to: &str) -> bool {
        if from == to {
            return true;
        }
        let mut seen: BTreeSet<&str> = BTreeSet::from([from]);
        let mut q: VecDeque<&str> = VecDeque::from([from]);
        while let Some(n) = q.pop_front() {
            for m in nodes {
                if !seen.contains(m.as_str()) && !self.drops(m, n) {
                    if m == to {
                        return true;
                    }
                    seen.insert(m);
                    q.push_back(m);
                }
            }
        }
        false
    }
}

/// Each node drops every node outside its own component (Jepsen's
/// `complete-grudge`). Every node of every component gets an entry.
pub fn complete_grudge(components: &[Vec<String>]) -> Grudge {
    let universe: BTreeSet<String> = components.iter().flatten().cloned().collect();
    let mut g = BTreeMap::new();
    for comp in components {
        let c: BTreeSet<String> = comp.iter().cloned().collect();
        for node in comp {
            g.insert(node.clone(), universe.difference(&c).cloned().collect());
        }
    }
    Grudge(g)
}

/// Cuts a sequence in half, smaller half first (`bisect`).
pub fn bisect(nodes: &[String]) -> (Vec<String>, Vec<String>) {
    let (a, b) = nodes.split_at(nodes.len() / 2);
    (a.to_vec(), b.to_vec())
}

/// One random node alone, the rest together (`split-one`).
pub fn split_one(nodes: &[String], rng: &mut impl Rng) -> (Vec<String>, Vec<String>) {
    let loner = nodes[rng.random_range(0..nodes.len())].clone();
    let rest = nodes.iter().filter(|n| **n != loner).cloned().collect();
    (vec![loner], rest)
}

/// ⌊n/2⌋ + 1.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The largest integer strictly below n/3 (`util/minority-third`): 0 for 3
/// nodes (an empty split, as in Jepsen), 1 for 5.
pub fn minority_third(n: usize) -> usize {
    n.div_ceil(3).saturating_sub(1)
}

/// Every node sees a majority, no two see the same one: shuffle into a ring,
/// each node keeps the window of `majority(n)` nodes starting at itself and
/// drops the rest (Jepsen's exact `majorities-ring`). One-way by design.
pub fn majorities_ring(nodes: &[String], rng: &mut impl Rng) -> Grudge {
    let mut ring = nodes.to_vec();
    ring.shuffle(rng);
    let n = ring.len();
    let m = majority(n);
    let universe: BTreeSet<String> = ring.iter().cloned().collect();
    let mut g = BTreeMap::new();
    for i in 0..n {
        let window: BTreeSet<String> = (0..m).map(|j| ring[(i + j) % n].clone()).collect();
        g.insert(
            ring[i].clone(),
            universe.difference(&window).cloned().collect(),
        );
    }
    Grudge(g)
}

/// Halves with a bridge: bisect (no shuffle), the first node of the second
/// half talks to everyone and everyone to it (Jepsen's `bridge`).
pub fn bridge(nodes: &[String]) -> Grudge {
    let (a, b) = bisect(nodes);
    let Some(bridge) = b.first().cloned() else {
        return Grudge::default();
    };
    let mut g = complete_grudge(&[a, b]);
    g.0.remove(&bridge);
    for srcs in g.0.values_mut() {
        srcs.remove(&bridge);
    }
    g
}

/// The partition shapes the nemesis draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionSpec {
    /// One random node isolated.
    One,
    /// Fewer than a third of the nodes split off (shuffled).
    MinorityThird,
    /// Random halves, smaller half first.
    Majority,
    MajoritiesRing,
    /// Random halves joined by a bridge node.
    Bridge,
    /// Every node of one random region isolated from the other regions.
    OneRegion,
    /// The `outage` nemesis: one random node cut off (like `one`) for
    /// longer than the nodes' log retention. Never drawn by the partition
    /// family.
    LongOutage,
    /// Every node isolated from every other (the large workload's merge
    /// scenario). Never drawn by the partition family.
    Isolated,
}

impl PartitionSpec {
    /// Jepsen's `partition-specs` plus bridge, plus one-region when the
    /// cluster spans at least two regions.
    pub fn all(multi_region: bool) -> Vec<PartitionSpec> {
        let mut v = vec![
            PartitionSpec::One,
            PartitionSpec::MinorityThird,
            PartitionSpec::Majority,
            PartitionSpec::MajoritiesRing,
            PartitionSpec::Bridge,
        ];
        if multi_region {
            v.push(PartitionSpec::OneRegion);
        }
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            PartitionSpec::One => "one",
            PartitionSpec::MinorityThird => "minority-third",
            PartitionSpec::Majority => "majority",
            PartitionSpec::MajoritiesRing => "majorities-ring",
            PartitionSpec::Bridge => "bridge",
            PartitionSpec::OneRegion => "one-region",
            PartitionSpec::LongOutage => "long-outage",
            PartitionSpec::Isolated => "isolated",
        }
    }

    /// Resolves the spec to a grudge. `regions` maps node → region.
    pub fn grudge(
        self,
        nodes: &[String],
        regions: &BTreeMap<String, String>,
        rng: &mut impl Rng,
    ) -> Grudge {
        match self {
            PartitionSpec::One | PartitionSpec::LongOutage => {
                let (a, b) = split_one(nodes, rng);
                complete_grudge(&[a, b])
            }
            PartitionSpec::Isolated => {
                let alone: Vec<Vec<String>> = nodes.iter().map(|n| vec![n.clone()]).collect();
                complete_grudge(&alone)
            }
            PartitionSpec::MinorityThird => {
                let mut s = nodes.to_vec();
                s.shuffle(rng);
                let (a, b) = s.split_at(minority_third(s.len()));
                complete_grudge(&[a.to_vec(), b.to_vec()])
            }
            PartitionSpec::Majority => {
                let mut s = nodes.to_vec();
                s.shuffle(rng);
                let (a, b) = bisect(&s);
                complete_grudge(&[a, b])
            }
            PartitionSpec::MajoritiesRing => majorities_ring(nodes, rng),
            PartitionSpec::Bridge => {
                let mut s = nodes.to_vec();
                s.shuffle(rng);
                bridge(&s)
            }
            PartitionSpec::OneRegion => {
                let names: BTreeSet<&String> =
                    nodes.iter().filter_map(|n| regions.get(n)).collect();
                let names: Vec<&String> = names.into_iter().collect();
                if names.len() < 2 {
                    return complete_grudge(&[nodes.to_vec()]);
                }
                let r = names[rng.random_range(0..names.len())];
                let (inside, outside): (Vec<String>, Vec<String>) = nodes
                    .iter()
                    .cloned()
                    .partition(|n| regions.get(n) == Some(r));
                complete_grudge(&[inside, outside])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn nodes(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }
    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn complete_grudge_matches_jepsen() {
        let g = complete_grudge(&[
            vec!["n1".into(), "n2".into()],
            vec!["n3".into(), "n4".into(), "n5".into()],
        ]);
        assert_eq!(g.0["n1"], set(&["n3", "n4", "n5"]));
        assert_eq!(g.0["n2"], set(&["n3", "n4", "n5"]));
        assert_eq!(g.0["n5"], set(&["n1", "n2"]));
        assert_eq!(g.directed_pairs().len(), 12);
    }

    #[test]
    fn bisect_puts_the_smaller_half_first() {
        let (a, b) = bisect(&nodes(5));
        assert_eq!(a, vec!["n1", "n2"]);
        assert_eq!(b, vec!["n3", "n4", "n5"]);
        let (a, b) = bisect(&nodes(3));
        assert_eq!((a.len(), b.len()), (1, 2));
    }

    #[test]
    fn minority_third_is_strictly_below_a_third() {
        assert_eq!(minority_third(3), 0);
        assert_eq!(minority_third(5), 1);
        assert_eq!(minority_third(7), 2);
        assert_eq!(minority_third(9), 2);
    }

    #[test]
    fn bridge_of_five_is_two_bridge_two() {
        let g = bridge(&nodes(5));
        // {n1,n2} <-> n3 <-> {n4,n5}
        assert!(!g.0.contains_key("n3"), "the bridge drops nobody");
        for srcs in g.0.values() {
            assert!(!srcs.contains("n3"), "nobody drops the bridge");
        }
        assert_eq!(g.0["n1"], set(&["n4", "n5"]));
        assert_eq!(g.0["n4"], set(&["n1", "n2"]));
        let all = nodes(5);
        assert!(g.reachable(&all, "n1", "n5"), "through the bridge");
        assert!(!Grudge(g.0.clone()).drops("n3", "n1"));
    }

    #[test]
    fn majorities_ring_every_node_sees_a_distinct_majority() {
        for n in [3, 5] {
            for seed in 0..20 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let ns = nodes(n);
                let g = majorities_ring(&ns, &mut rng);
                let mut seen = BTreeSet::new();
                for node in &ns {
                    let visible: BTreeSet<&String> =
                        ns.iter().filter(|s| !g.drops(node, s)).collect();
                    assert_eq!(visible.len(), majority(n), "{node} in {g:?}");
                    assert!(visible.contains(node), "a node never drops itself");
                    assert!(seen.insert(visible), "two nodes see the same majority");
                }
            }
        }
    }

    #[test]
    fn majorities_ring_of_three_is_a_directed_cycle() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let g = majorities_ring(&nodes(3), &mut rng);
        // Each node drops exactly one other, and no pair drops each other.
        assert_eq!(g.directed_pairs().len(), 3);
        for (s, d) in g.directed_pairs() {
            assert!(!g.drops(&s, &d), "{s}<->{d} would be a symmetric cut");
        }
    }

    #[test]
    fn specs_resolve_to_the_expected_shapes() {
        let ns = nodes(5);
        let regions: BTreeMap<String, String> = ns
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), format!("r{}", i % 2)))
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let one = PartitionSpec::One.grudge(&ns, &regions, &mut rng);
        let isolated: Vec<_> = one.0.iter().filter(|(_, s)| s.len() == 4).collect();
        assert_eq!(isolated.len(), 1);
        let maj = PartitionSpec::Majority.grudge(&ns, &regions, &mut rng);
        let small = maj.0.values().filter(|s| s.len() == 3).count();
        let big = maj.0.values().filter(|s| s.len() == 2).count();
        assert_eq!((small, big), (2, 3), "2 nodes drop 3, 3 nodes drop 2");
        let mt = PartitionSpec::MinorityThird.grudge(&ns, &regions, &mut rng);
        assert_eq!(mt.directed_pairs().len(), 8, "1 node vs 4, both ways");
        let r = PartitionSpec::OneRegion.grudge(&ns, &regions, &mut rng);
        for (s, d) in r.directed_pairs() {
            assert_ne!(regions[&s], regions[&d], "only cross-region links are cut");
        }
        assert_eq!(r.directed_pairs().len(), 12, "3 x 2 nodes, both ways");
        let three = nodes(3);
        let mt3 = PartitionSpec::MinorityThird.grudge(&three, &regions, &mut rng);
        assert!(
            mt3.is_empty(),
            "Jepsen's minority-third of 3 nodes splits nothing"
        );
    }

    #[test]
    fn reachability_follows_uncut_links_only() {
        let g = complete_grudge(&[vec!["n1".into()], vec!["n2".into(), "n3".into()]]);
        let ns = nodes(3);
        assert!(!g.reachable(&ns, "n1", "n2"));
        assert!(g.reachable(&ns, "n2", "n3"));
        // one-way: n2 drops n1 only
        let mut one_way = Grudge::default();
        one_way.0.insert("n2".into(), set(&["n1"]));
        assert!(one_way.reachable(&ns, "n1", "n2"), "n1 -> n3 -> n2");
        let mut cut = one_way.clone();
        cut.0.insert("n3".into(), set(&["n1"]));
        assert!(!cut.reachable(&ns, "n1", "n2"));
        assert!(cut.reachable(&ns, "n2", "n1"));
    }
}
