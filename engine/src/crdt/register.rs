//! Last-writer-wins register stamped by the HLC.
//!
//! The register holds `(hlc, value)`; the larger `(hlc.time, hlc.node)`
//! wins a merge, so every replica picks the same winner and a write issued
//! after another on the same clock (or after observing it) wins. A delete
//! is a write of `None` (a tombstone), ordered like any other write.
//! Timestamps are unique per node, so two different writes never tie.

use crate::clock::Hlc;

#[derive(Clone, PartialEq, Eq, Hash, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Register {
    pub hlc: Hlc,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}

impl Register {
    /// The state (and delta) of a write.
    pub fn write(hlc: Hlc, value: Option<Vec<u8>>) -> Register {
        Register { hlc, value }
    }

    /// Joins `other` into `self`; returns whether `other` won.
    pub fn merge(&mut self, other: &Register) -> bool {
        if other.hlc > self.hlc {
            *self = other.clone();
            true
        } else {
            false
        }
    }
}

/// Joins into an optional register (absent = never written).
pub fn merge_into(state: &mut Option<Register>, other: &Register) -> bool {
    match state {
        Some(s) => s.merge(other),
        None => {
            *state = Some(other.clone());
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::Incarnation;

    fn hlc(time: u64, node: u64) -> Hlc {
        Hlc {
            time,
            node: Incarnation(node),
        }
    }

    #[test]
    fn larger_timestamp_wins_either_way() {
        let w1 = Register::write(hlc(10, 1), Some(b"a".to_vec()));
        let w2 = Register::write(hlc(10, 2), Some(b"b".to_vec()));
        let mut x = w1.clone();
        x.merge(&w2);
        let mut y = w2.clone();
        y.merge(&w1);
        assert_eq!(x, y);
        assert_eq!(x.value.as_deref(), Some(&b"b"[..]));
    }

    #[test]
    fn tombstone_is_an_ordinary_write() {
        let mut r = None;
        merge_into(&mut r, &Register::write(hlc(5, 1), Some(b"v".to_vec())));
        merge_into(&mut r, &Register::write(hlc(6, 1), None));
        assert_eq!(r.as_ref().unwrap().value, None);
        assert!(!merge_into(
            &mut r,
            &Register::write(hlc(4, 1), Some(b"old".to_vec()))
        ));
        assert_eq!(r.unwrap().value, None);
    }
}
