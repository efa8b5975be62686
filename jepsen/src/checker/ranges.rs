//! Exact sets of integers as sorted disjoint closed ranges, for subset sums.
//!
//! Maelstrom's pn-counter checker computes the values a counter may have as
//! "sum of certain deltas + any subset of uncertain deltas" with a Guava
//! `TreeRangeSet`: start from {0}, and for every uncertain delta d take
//! S ∪ (S + d). This is the same, exact (no gaps are papered over), and cheap
//! because the ranges merge quickly when deltas are small.

/// A set of integers: sorted, disjoint, non-adjacent closed ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(i64, i64)>,
}

/// Past this many ranges the set is coarsened to its hull. Subset sums of
/// deltas with |d| ≤ 5 never get near it; it bounds the work if a history
/// carries huge deltas (the checker then reports the bound it used).
pub const MAX_RANGES: usize = 4096;

impl RangeSet {
    /// {v}
    pub fn point(v: i64) -> RangeSet {
        RangeSet {
            ranges: vec![(v, v)],
        }
    }

    pub fn ranges(&self) -> &[(i64, i64)] {
        &self.ranges
    }

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
}
