//! What a link has committed of its peer's log, kept in the store's metadata so it is
//! written in the same atomic batch as the deltas it covers.
//!
//! - `seq`: the last position of the peer's log we hold everything up to (extension
//!   peers send positions with their deltas). Resuming asks for what comes after it.
//! - `ts`: the newest delta timestamp received (plain v1 peers, which have no
//!   positions). Resuming asks for deltas from a little before it; dedup absorbs the overlap.
//! - `answered`: the other way, for plain v1 peers: the position of *our* log up to which
//!   the peer answered every `delta` we sent (`delta_ack` or `delta_nack`). The reference
//!   does not deduplicate, so a link resumes sending after it instead of re-sending.

use crate::store::{Store, StoreError};

/// How far before the newest timestamp seen a v1 resume starts: deltas do not arrive
/// in timestamp order (clocks differ, relays delay), so a margin catches stragglers.
pub(crate) const V1_RESUME_MARGIN_MS: u64 = 5 * 60 * 1000;

#[derive(Debug, Clone)]
pub(crate) struct CursorKeys {
    pub seq: String,
    pub ts: String,
    pub answered: String,
}

impl CursorKeys {
    /// Keys for what we received from `peer`'s log `log` (`v1` for peers without our
    /// extension) on a link of `scope` (the link's name or url for links we dial,
    /// `inbound` or `inbound:<their link name>` for links the peer dialed).
    pub fn new(peer: &str, log: &str, scope: &str) -> CursorKeys {
        let base = format!("link/{peer}/{log}/{scope}");
        CursorKeys {
            seq: format!("{base}/seq"),
            ts: format!("{base}/ts"),
            answered: format!("{base}/answered"),
        }
    }

    pub fn load_seq(&self, store: &Store) -> Result<Option<u64>, StoreError> {
        load_u64(store, &self.seq)
    }

    pub fn load_ts(&self, store: &Store) -> Result<Option<u64>, StoreError> {
        load_u64(store, &self.ts)
    }

    pub fn load_answered(&self, store: &Store) -> Result<Option<u64>, StoreError> {
        load_u64(store, &self.answered)
    }
}

fn load_u64(store: &Store, key: &str) -> Result<Option<u64>, StoreError> {
    match store.get_meta(key)? {
        None => Ok(None),
        Some(bytes) => {
            let arr: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("cursor {key} is not 8 bytes")))?;
            Ok(Some(u64::from_be_bytes(arr)))
        }
    }
}

pub(crate) fn encode(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}
