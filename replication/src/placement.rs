//! Placement (data residency): which nodes may hold which objects, and in
//! what order they lead.
//!
//! Rules map key prefixes to the regions allowed to store matching keys;
//! the longest matching prefix wins; keys no rule matches may live
//! everywhere. Each rule is a placement *group* (`GroupId(i + 1)` for the
//! i-th rule in the configured order; group 0 is "everything else"). An
//! object's **replica set** is the nodes of its group's regions. Deltas,
//! catch-up and full-state sync only ever carry an object to its replicas.
//!
//! The **preference list** of a key orders its replicas by rendezvous hash
//! of (node, key), nodes of the rule's home region first. The leader of a
//! key is the first live node of that list.
//!
//! Every node must be configured with the same nodes and rules: peers
//! compare [`Placement::fingerprint`] when they connect and refuse to
//! replicate with a peer that disagrees.

use meridian_engine::{GroupFn, GroupId, ObjectKey};
use std::sync::Arc;

use crate::name::NodeName;

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: NodeName,
    pub region: String,
}

/// One residency rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub prefix: Vec<u8>,
    pub regions: Vec<String>,
    /// Region whose nodes lead first.
    pub home: Option<String>,
}

/// Most placement rules a cluster may have: rule *i* is group `i + 1`, a
/// [`GroupId`] is a `u16`, and group 0 is "everything else".
pub const MAX_PLACEMENT_RULES: usize = u16::MAX as usize;

/// Why a placement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// More rules than group ids ([`MAX_PLACEMENT_RULES`]).
    #[error("{rules} placement rules; at most {MAX_PLACEMENT_RULES} are supported")]
    TooManyRules { rules: usize },
}

#[derive(Clone, Debug)]
pub struct Placement {
    nodes: Vec<NodeInfo>,
    rules: Vec<Rule>,
    /// Rule indexes, longest prefix first.
    by_length: Vec<usize>,
}

/// FNV-1a, stable across builds and platforms (the std hasher is not
/// guaranteed to be), finished with a splitmix64 mix.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separate parts so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Placement {
    /// The placement of `nodes` under `rules` (in configured order). Refuses
    /// more rules than there are group ids, rather than wrapping a group id
    /// and sending keys to the wrong regions.
    pub fn new(mut nodes: Vec<NodeInfo>, rules: Vec<Rule>) -> Result<Placement, PlacementError> {
        if rules.len() > MAX_PLACEMENT_RULES {
            return Err(PlacementError::TooManyRules { rules: rules.len() });
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut by_length: Vec<usize> = (0..rules.len()).collect();
        by_length.sort_by_key(|&i| std::cmp::Reverse(rules[i].prefix.len()));
        Ok(Placement {
            nodes,
            rules,
            by_length,
        })
    }

    /// The group of rule `index` (checked at construction to fit).
    fn group(index: usize) -> GroupId {
        GroupId(u16::try_from(index + 1).expect("rule count checked in Placement::new"))
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn region_of(&self, node: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.region.as_str())
    }

    /// The group of a key (longest matching rule prefix; 0 if none).
    pub fn group_of(&self, key: &[u8]) -> GroupId {
        for &i in &self.by_length {
            if key.starts_with(&self.rules[i].prefix) {
                return Placement::group(i);
            }
        }
        GroupId(0)
    }

    /// The engine's view: object → group.
    pub fn group_fn(self: &Arc<Self>) -> GroupFn {
        let p = self.clone();
        Arc::new(move |k: &ObjectKey| p.group_of(k.key()))
    }

    fn rule(&self, group: GroupId) -> Option<&Rule> {
        if group.0 == 0 {
            None
        } else {
            self.rules.get(group.0 as usize - 1)
        }
    }

    /// Whether `node` may store objects of `group`.
    pub fn is_replica(&self, node: &str, group: GroupId) -> bool {
        let Some(region) = self.region_of(node) else {
            return false;
        };
        match self.rule(group) {
            None => group.0 == 0,
            Some(rule) => rule.regions.iter().any(|r| r == region),
        }
    }

    /// The nodes that replicate `group`, by name.
    pub fn replicas(&self, group: GroupId) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| self.is_replica(&n.name, group))
            .map(|n| n.name.as_str())
            .collect()
    }

    /// Every group id in use (0 and one per rule).
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        std::iter::once(GroupId(0)).chain((0..self.rules.len()).map(Placement::group))
    }

    /// The replicas of `key` in leadership order: rendezvous hash of
    /// (node, key), the rule's home region first.
    pub fn preference_list(&self, key: &[u8]) -> Vec<&str> {
        let group = self.group_of(key);
        let home = self.rule(group).and_then(|r| r.home.as_deref());
        let mut scored: Vec<(bool, u64, &str)> = self
            .replicas(group)
            .into_iter()
            .map(|n| {
                let at_home = home.is_some_and(|h| self.region_of(n) == Some(h));
                (!at_home, stable_hash(&[n.as_bytes(), key]), n)
            })
            .collect();
        scored.sort_by(|a, b| {
            (a.0, std::cmp::Reverse(a.1), a.2).cmp(&(b.0, std::cmp::Reverse(b.1), b.2))
        });
        scored.into_iter().map(|(_, _, n)| n).collect()
    }

    /// A digest of the nodes and rules: peers must agree on it.
    pub fn fingerprint(&self) -> u64 {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for n in &self.nodes {
            parts.push(format!("node {} {}", n.name, n.region).into_bytes());
        }
        for r in &self.rules {
            let mut p = b"rule ".to_vec();
            p.extend_from_slice(&r.prefix);
            p.extend_from_slice(format!(" {:?} {:?}", r.regions, r.home).as_bytes());
            parts.push(p);
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        stable_hash(&refs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Placement {
        let nodes = [
            ("us-east-1", "us-east"),
            ("us-east-2", "us-east"),
            ("eu-west-1", "eu-west"),
            ("ap-south-1", "ap-south"),
        ]
        .iter()
        .map(|(n, r)| NodeInfo {
            name: (*n).into(),
            region: r.to_string(),
        })
        .collect();
        Placement::new(
            nodes,
            vec![
                Rule {
                    prefix: b"eu/".to_vec(),
                    regions: vec!["eu-west".into()],
                    home: None,
                },
                Rule {
                    prefix: b"eu/shared/".to_vec(),
                    regions: vec!["eu-west".into(), "us-east".into()],
                    home: Some("us-east".into()),
                },
            ],
        )
        .unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_default_is_everywhere() {
        let p = cluster();
        assert_eq!(p.group_of(b"eu/x"), GroupId(1));
        assert_eq!(p.group_of(b"eu/shared/x"), GroupId(2));
        assert_eq!(p.group_of(b"other"), GroupId(0));
        assert_eq!(p.replicas(GroupId(0)).len(), 4);
        assert_eq!(p.replicas(GroupId(1)), vec!["eu-west-1"]);
        assert!(!p.is_replica("ap-south-1", GroupId(2)));
        assert!(p.is_replica("us-east-2", GroupId(2)));
        assert!(!p.is_replica("nobody", GroupId(0)));
    }

    #[test]
    fn preference_list_puts_home_first_and_is_stable() {
        let p = cluster();
        let list = p.preference_list(b"eu/shared/k");
        assert_eq!(list.len(), 3);
        assert!(list[0].starts_with("us-east") && list[1].starts_with("us-east"));
        assert_eq!(list[2], "eu-west-1");
        assert_eq!(list, cluster().preference_list(b"eu/shared/k"));
        // Different keys spread leadership.
        let leaders: std::collections::BTreeSet<&str> = (0..50)
            .map(|i| p.preference_list(format!("k{i}").as_bytes())[0])
            .collect();
        assert!(leaders.len() > 1);
    }

    /// Review item S10: more rules than group ids are refused (they used to
    /// wrap `GroupId`: rule 65536 became group 0, "stored everywhere").
    #[test]
    fn more_rules_than_group_ids_are_refused() {
        let rules = |n: usize| -> Vec<Rule> {
            (0..n)
                .map(|i| Rule {
                    prefix: format!("p{i}/").into_bytes(),
                    regions: vec!["us-east".into()],
                    home: None,
                })
                .collect()
        };
        let nodes = cluster().nodes().to_vec();
        let max = Placement::new(nodes.clone(), rules(MAX_PLACEMENT_RULES)).unwrap();
        assert_eq!(
            max.group_of(format!("p{}/k", MAX_PLACEMENT_RULES - 1).as_bytes()),
            GroupId(u16::MAX)
        );
        assert_eq!(max.groups().last(), Some(GroupId(u16::MAX)));
        assert_eq!(
            Placement::new(nodes, rules(MAX_PLACEMENT_RULES + 1)).unwrap_err(),
            PlacementError::TooManyRules {
                rules: MAX_PLACEMENT_RULES + 1
            }
        );
    }

    #[test]
    fn fingerprint_changes_with_rules() {
        let a = cluster();
        let mut b = cluster();
        b.rules[0].regions.push("us-east".into());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), cluster().fingerprint());
    }
}
