//! Exact sets of integers as sorted disjoint closed ranges, for subset sums.
//!
//! Maelstrom's pn-counter checker computes the values a counter may have as
//! "sum of certain deltas + any subset of uncertain deltas" with a Guava
//! `TreeRangeSet`: start from {0}, and for every uncertain delta d take
//! S ∪ (S + d). [`RangeSet`] is the same, exact (no gaps are papered over),
//! and cheap because the ranges merge quickly when deltas are small — until
//! it would need more than [`MAX_RANGES`] ranges: then it keeps only its hull
//! and says so ([`RangeSet::is_coarsened`]); a value inside a coarsened hull
//! is [`Membership::Unknown`], never "yes".
//!
//! [`SubsetSums`] picks the representation: when every uncertain delta is
//! ± a power of two and no two share an exponent (what the counter workload
//! generates), a sum has at most one representation (two different subsets
//! would give Σ ±2^e = 0 over distinct exponents, impossible: look at the
//! smallest one), so membership is decided exactly bit by bit, and the
//! subset is recovered too, whatever the number of deltas.

use std::collections::BTreeMap;

/// A set of integers: sorted, disjoint, non-adjacent closed ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(i64, i64)>,
    /// The set was replaced by its hull at some point: it may now hold
    /// values that are not subset sums.
    coarsened: bool,
}

/// Whether a value is in a set of possible values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    Yes,
    No,
    /// Inside the hull of a coarsened [`RangeSet`]: it may or may not be.
    Unknown,
}

/// Past this many ranges the set is coarsened to its hull. Subset sums of
/// deltas with |d| ≤ 5 never get near it, and the workload's power-of-two
/// deltas use [`SubsetSums::Binary`] instead; it bounds the work (memory
/// and time grow with the range count per added delta) when a history
/// carries other large deltas. A coarsened set is flagged, and membership
/// inside it is [`Membership::Unknown`].
pub const MAX_RANGES: usize = 4096;

impl RangeSet {
    /// {v}
    pub fn point(v: i64) -> RangeSet {
        RangeSet {
            ranges: vec![(v, v)],
            coarsened: false,
        }
    }

    /// Whether the set was coarsened to its hull (see [`MAX_RANGES`]).
    pub fn is_coarsened(&self) -> bool {
        self.coarsened
    }

    /// Exact membership: `Unknown` for a value inside a coarsened hull.
    pub fn membership(&self, v: i64) -> Membership {
        if !self.contains(v) {
            Membership::No
        } else if self.coarsened {
            Membership::Unknown
        } else {
            Membership::Yes
        }
    }

    pub fn ranges(&self) -> &[(i64, i64)] {
        &self.ranges
    }

    /// Whether `v` is in the set as stored (the hull, once coarsened: use
    /// [`RangeSet::membership`] to tell).
    pub fn contains(&self, v: i64) -> bool {
        // Binary search for the last range starting at or before v.
        let i = self.ranges.partition_point(|&(lo, _)| lo <= v);
        i > 0 && self.ranges[i - 1].1 >= v
    }

    pub fn min(&self) -> i64 {
        self.ranges.first().map_or(0, |r| r.0)
    }

    pub fn max(&self) -> i64 {
        self.ranges.last().map_or(0, |r| r.1)
    }

    /// S ∪ (S + d): the subset sums after one more optional delta.
    pub fn add_optional(&mut self, d: i64) {
        if d == 0 {
            return;
        }
        let shifted = self
            .ranges
            .iter()
            .map(|&(lo, hi)| (lo.saturating_add(d), hi.saturating_add(d)));
        let mut all: Vec<(i64, i64)> = self.ranges.iter().copied().chain(shifted).collect();
        all.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(all.len());
        for (lo, hi) in all {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        if merged.len() > MAX_RANGES {
            let (lo, hi) = (merged[0].0, merged[merged.len() - 1].1);
            merged = vec![(lo, hi)];
            self.coarsened = true;
        }
        self.ranges = merged;
    }

    /// S + c.
    pub fn shift(&mut self, c: i64) {
        for r in &mut self.ranges {
            r.0 = r.0.saturating_add(c);
            r.1 = r.1.saturating_add(c);
        }
    }

    /// The set `base + subset sums of optional`.
    pub fn subset_sums(base: i64, optional: impl IntoIterator<Item = i64>) -> RangeSet {
        let mut s = RangeSet::point(0);
        for d in optional {
            s.add_optional(d);
        }
        s.shift(base);
        s
    }
}

/// `base + SubsetSums(optional)`, in whichever exact form fits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubsetSums {
    /// Every optional delta is ± 2^e with distinct exponents e: exact for
    /// any number of deltas.
    Binary {
        base: i64,
        /// exponent → (sign, position in the `optional` slice given).
        terms: BTreeMap<u32, (i64, usize)>,
    },
    /// Anything else: ranges (possibly coarsened).
    Ranges(RangeSet),
}

/// `(exponent, sign)` when `d` is ± a power of two.
fn signed_power(d: i64) -> Option<(u32, i64)> {
    let m = d.unsigned_abs();
    (m.is_power_of_two()).then(|| (m.trailing_zeros(), d.signum()))
}

impl SubsetSums {
    pub fn new(base: i64, optional: &[i64]) -> SubsetSums {
        let mut terms = BTreeMap::new();
        let binary = optional
            .iter()
            .enumerate()
            .all(|(i, d)| signed_power(*d).is_some_and(|(e, s)| terms.insert(e, (s, i)).is_none()));
        if binary {
            SubsetSums::Binary { base, terms }
        } else {
            SubsetSums::Ranges(RangeSet::subset_sums(base, optional.iter().copied()))
        }
    }

    /// The positions (in the `optional` slice) of the one subset whose sum
    /// is `v - base`, when the deltas are [`SubsetSums::Binary`]; `None`
    /// when `v` is not a subset sum or the form is `Ranges`.
    pub fn decode(&self, v: i64) -> Option<Vec<usize>> {
        let SubsetSums::Binary { base, terms } = self else {
            return None;
        };
        let mut x = i128::from(v) - i128::from(*base);
        let mut picked = Vec::new();
        // Lowest set bit first: only the term with that exponent can set it
        // (lower bits are already clear), so the choice is forced.
        while x != 0 {
            let e = x.trailing_zeros();
            let &(sign, pos) = terms.get(&e)?;
            x -= i128::from(sign) << e;
            picked.push(pos);
        }
        Some(picked)
    }

    pub fn membership(&self, v: i64) -> Membership {
        match self {
            SubsetSums::Binary { .. } => {
                if self.decode(v).is_some() {
                    Membership::Yes
                } else {
                    Membership::No
                }
            }
            SubsetSums::Ranges(r) => r.membership(v),
        }
    }

    /// The smallest and largest possible values (the hull).
    pub fn bounds(&self) -> (i64, i64) {
        match self {
            SubsetSums::Binary { base, terms } => {
                let (mut lo, mut hi) = (i128::from(*base), i128::from(*base));
                for (e, (s, _)) in terms {
                    let d = i128::from(*s) << *e;
                    if d < 0 { lo += d } else { hi += d }
                }
                let clamp = |x: i128| x.clamp(i64::MIN.into(), i64::MAX.into()) as i64;
                (clamp(lo), clamp(hi))
            }
            SubsetSums::Ranges(r) => (r.min(), r.max()),
        }
    }

    pub fn is_coarsened(&self) -> bool {
        matches!(self, SubsetSums::Ranges(r) if r.is_coarsened())
    }

    /// For reports: the ranges (at most `cap` of them), or the base and
    /// optional deltas of the binary form.
    pub fn describe(&self, cap: usize) -> serde_json::Value {
        match self {
            SubsetSums::Binary { base, terms } => serde_json::json!({
                "base": base,
                "optional-deltas": terms.iter().take(cap)
                    .map(|(e, (s, _))| {
                        (i128::from(*s) << *e).clamp(i64::MIN.into(), i64::MAX.into()) as i64
                    })
                    .collect::<Vec<_>>(),
                "optional-count": terms.len(),
            }),
            SubsetSums::Ranges(r) => serde_json::json!({
                "ranges": r.ranges().iter().take(cap).collect::<Vec<_>>(),
                "range-count": r.ranges().len(),
                "coarsened": r.is_coarsened(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_sums_are_exact_with_gaps() {
        let s = RangeSet::subset_sums(0, [5, 5]);
        assert_eq!(s.ranges(), &[(0, 0), (5, 5), (10, 10)]);
        assert!(s.contains(5) && !s.contains(4) && !s.contains(11));
        let s = RangeSet::subset_sums(10, [1, 2, 4]);
        assert_eq!(s.ranges(), &[(10, 17)]);
        let s = RangeSet::subset_sums(0, [-3, 2]);
        // {0, -3, 2, -1}
        assert_eq!(s.ranges(), &[(-3, -3), (-1, 0), (2, 2)]);
        assert_eq!((s.min(), s.max()), (-3, 2));
    }

    #[test]
    fn matches_brute_force_on_small_inputs() {
        let deltas = [3, -2, 5, -5, 1, 4];
        for n in 0..=deltas.len() {
            let ds = &deltas[..n];
            let s = RangeSet::subset_sums(7, ds.iter().copied());
            let mut brute = std::collections::BTreeSet::new();
            for mask in 0u32..(1 << n) {
                let sum: i64 = (0..n).filter(|i| mask & (1 << i) != 0).map(|i| ds[i]).sum();
                brute.insert(7 + sum);
            }
            for v in -30..40 {
                assert_eq!(s.contains(v), brute.contains(&v), "v={v} deltas={ds:?}");
            }
        }
    }

    #[test]
    fn coarsening_is_flagged_and_makes_membership_unknown() {
        // 13 deltas 2·3^i: 8192 distinct even sums, none adjacent.
        let deltas: Vec<i64> = (0..13).map(|i| 2 * 3i64.pow(i)).collect();
        let exact = RangeSet::subset_sums(0, deltas[..11].iter().copied());
        assert!(!exact.is_coarsened());
        assert_eq!(exact.membership(1), Membership::No);
        let s = RangeSet::subset_sums(0, deltas.iter().copied());
        assert!(s.is_coarsened(), "{} ranges", s.ranges().len());
        // 1 is odd, so certainly not a sum of even deltas, but the hull has it.
        assert_eq!(s.membership(1), Membership::Unknown);
        assert_eq!(s.membership(-1), Membership::No, "outside the hull");
        let ss = SubsetSums::new(0, &deltas);
        assert!(ss.is_coarsened());
        assert_eq!(ss.describe(4)["coarsened"], serde_json::json!(true));
    }

    #[test]
    fn binary_subset_sums_decode_exactly() {
        let optional = [1i64, -2, 8, -1 << 40, 1 << 61];
        let s = SubsetSums::new(100, &optional);
        assert!(matches!(s, SubsetSums::Binary { .. }));
        for mask in 0u32..(1 << optional.len()) {
            let picked: Vec<usize> = (0..optional.len())
                .filter(|i| mask & (1 << i) != 0)
                .collect();
            let v = 100 + picked.iter().map(|i| optional[*i]).sum::<i64>();
            let mut got = s.decode(v).expect("a subset sum");
            got.sort();
            assert_eq!(got, picked, "v={v}");
        }
        // Not sums: a missing exponent, a wrong sign.
        assert_eq!(s.membership(100 + 4), Membership::No);
        assert_eq!(s.membership(100 + 2), Membership::No);
        assert_eq!(s.membership(100 - 8), Membership::No);
        assert_eq!(s.bounds(), (100 - 2 - (1 << 40), 100 + 1 + 8 + (1 << 61)));
        // Repeated exponents or other deltas: ranges.
        assert!(matches!(
            SubsetSums::new(0, &[4, -4]),
            SubsetSums::Ranges(_)
        ));
        assert!(matches!(SubsetSums::new(0, &[3]), SubsetSums::Ranges(_)));
        // Against brute force over small mixed signs.
        let optional = [-1i64, 2, -4, 8, 16];
        let s = SubsetSums::new(-3, &optional);
        let mut brute = std::collections::BTreeSet::new();
        for mask in 0u32..32 {
            brute.insert(
                -3 + (0..5)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| optional[i])
                    .sum::<i64>(),
            );
        }
        for v in -40..40 {
            assert_eq!(
                s.membership(v) == Membership::Yes,
                brute.contains(&v),
                "v={v}"
            );
        }
    }
}
