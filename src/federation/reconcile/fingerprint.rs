//! A range's fingerprint: SHA-256 of the wrapping sum of its items' hashes (16 bytes,
//! little-endian) followed by its count (8 bytes, little-endian), cut to 16 bytes.
//!
//! The sum makes the fingerprint independent of how the range was gathered and cheap to
//! compute for any sub-range (one pass over a slice of the sorted items, no tree to keep
//! per peer); hashing the sum with the count keeps two different sets from meeting by
//! arithmetic. A peer that crafts colliding ids only hides its own deltas from itself.

use sha2::{Digest, Sha256};

use super::item::Item;

/// The fingerprint of a range of items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// The fingerprint of these items.
    pub(crate) fn of(items: &[Item]) -> Fingerprint {
        let sum = items.iter().fold(0u128, |sum, i| sum.wrapping_add(i.hash));
        Fingerprint::of_sum(sum, items.len() as u64)
    }

    /// The fingerprint of no item.
    pub(crate) fn empty() -> Fingerprint {
        Fingerprint::of_sum(0, 0)
    }

    fn of_sum(sum: u128, count: u64) -> Fingerprint {
        let mut hasher = Sha256::new();
        hasher.update(sum.to_le_bytes());
        hasher.update(count.to_le_bytes());
        let digest = hasher.finalize();
        let mut fp = [0u8; 16];
        fp.copy_from_slice(&digest[..16]);
        Fingerprint(fp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Seq;

    #[test]
    fn a_fingerprint_depends_on_the_set_only_and_on_its_count() {
        let items: Vec<Item> = (0..50u64)
            .map(|i| Item::of(&format!("d-{i}"), 1000 + i, Seq(i + 1)))
            .collect();
        let mut shuffled = items.clone();
        shuffled.reverse();
        assert_eq!(Fingerprint::of(&items), Fingerprint::of(&shuffled));
        assert_ne!(Fingerprint::of(&items), Fingerprint::of(&items[1..]));
        assert_eq!(Fingerprint::of(&[]), Fingerprint::empty());
        // Two items whose hashes sum to zero still differ from no item, by the count.
        let a = Item {
            timestamp: 1,
            hash: 5,
            seq: Seq(1),
        };
        let b = Item {
            hash: 5u128.wrapping_neg(),
            ..a
        };
        assert_ne!(Fingerprint::of(&[a, b]), Fingerprint::empty());
    }
}
