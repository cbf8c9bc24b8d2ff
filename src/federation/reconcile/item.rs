//! One delta as reconciliation sees it: 32 bytes, its id left in the store (the ids of
//! the few deltas a round lists are read then), so a snapshot of a large log stays small.

use sha2::{Digest, Sha256};

use crate::store::Seq;

/// One delta, as reconciliation sees it. Items order by (timestamp, hash); `seq` never
/// decides between two distinct deltas, whose hashes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Item {
    pub timestamp: u64,
    /// The first 16 bytes of SHA-256 of the delta's id, read big-endian (so the order
    /// of hashes is the order of their bytes).
    pub hash: u128,
    /// Where the delta sits in this node's log.
    pub seq: Seq,
}

impl Item {
    /// The item of the delta `id`, made at `timestamp`, stored at `seq`.
    pub(crate) fn of(id: &str, timestamp: u64, seq: Seq) -> Item {
        Item {
            timestamp,
            hash: hash_id(id),
            seq,
        }
    }
}

/// The first 16 bytes of SHA-256 of `id`, read big-endian.
pub(crate) fn hash_id(id: &str) -> u128 {
    let digest = Sha256::digest(id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Item>(), 32);
    }
}
