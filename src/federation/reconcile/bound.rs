//! The points between ranges. Items are ordered by (timestamp, hash); a bound is a point
//! in that order, and a range is every item at or past its lower bound and before its
//! upper one. A bound between two neighbouring items keeps only as many leading bytes of
//! the hash as tell them apart (none when their timestamps differ), so it travels short.

use super::item::Item;

/// A point in the (timestamp, hash) order of items. `At` bounds sort before
/// `Infinity`, and among themselves by timestamp, then hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Bound {
    /// The position of an item with this timestamp and hash: that item is at or past it.
    At { timestamp: u64, hash: u128 },
    /// Past every item: where the last range ends.
    Infinity,
}

impl Bound {
    /// Before every item: where the first range starts.
    pub(crate) const LOWEST: Bound = Bound::At {
        timestamp: 0,
        hash: 0,
    };

    /// The position of `item`.
    pub(crate) fn of(item: &Item) -> Bound {
        Bound::At {
            timestamp: item.timestamp,
            hash: item.hash,
        }
    }

    /// The shortest bound past `prev` and at or before `next`, for two distinct items
    /// with `prev` before `next`: `next`'s timestamp, and the leading bytes of its hash
    /// up to the first one that differs from `prev`'s (none when the timestamps differ).
    pub(crate) fn between(prev: &Item, next: &Item) -> Bound {
        if prev.timestamp != next.timestamp {
            return Bound::At {
                timestamp: next.timestamp,
                hash: 0,
            };
        }
        // Leading bytes the two hashes share; distinct items never share all 16.
        let shared = ((prev.hash ^ next.hash).leading_zeros() / 8) as usize;
        let keep = (shared + 1).min(16);
        let mask = if keep == 16 {
            u128::MAX
        } else {
            !(u128::MAX >> (keep * 8))
        };
        Bound::At {
            timestamp: next.timestamp,
            hash: next.hash & mask,
        }
    }
}

/// The leading bytes of `hash` up to its last non-zero one: what a bound's hash travels
/// as (the rest is zeros).
pub(crate) fn hash_prefix(hash: u128) -> Vec<u8> {
    let len = 16 - (hash.trailing_zeros() / 8) as usize;
    hash.to_be_bytes()[..len].to_vec()
}

/// A hash from its leading bytes (at most 16), the rest zeros.
pub(crate) fn hash_from_prefix(prefix: &[u8]) -> Option<u128> {
    let mut bytes = [0u8; 16];
    bytes.get_mut(..prefix.len())?.copy_from_slice(prefix);
    Some(u128::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Seq;

    fn item(timestamp: u64, hash: u128) -> Item {
        Item {
            timestamp,
            hash,
            seq: Seq(1),
        }
    }

    #[test]
    fn a_bound_between_items_is_past_the_first_and_not_past_the_second() {
        let cases = [
            (item(5, 7), item(9, 3)),
            (item(5, 0x0102 << 112), item(5, 0x0103 << 112)),
            (item(5, 0xff << 120), item(5, (0xff << 120) | 1)),
            (item(5, 0), item(5, 1)),
            (item(5, 1 << 127), item(5, u128::MAX)),
        ];
        for (prev, next) in cases {
            let b = Bound::between(&prev, &next);
            assert!(
                Bound::of(&prev) < b && b <= Bound::of(&next),
                "{prev:?} {b:?}"
            );
        }
        // Different timestamps: no hash at all; the same: only the bytes needed.
        assert_eq!(
            Bound::between(&item(5, 7), &item(9, 3)),
            Bound::At {
                timestamp: 9,
                hash: 0
            }
        );
        let b = Bound::between(&item(5, 0x0102 << 112), &item(5, 0x01_03_77 << 104));
        let Bound::At { hash, .. } = b else {
            panic!("{b:?}")
        };
        assert_eq!(hash_prefix(hash), vec![1, 3]);
    }

    #[test]
    fn a_hash_prefix_round_trips() {
        for hash in [0, 1, 0xab << 120, u128::MAX, 0x12_00_34 << 100] {
            let prefix = hash_prefix(hash);
            assert_eq!(hash_from_prefix(&prefix), Some(hash));
        }
        assert_eq!(hash_prefix(0), Vec::<u8>::new());
        assert_eq!(hash_from_prefix(&[0; 17]), None);
    }
}
