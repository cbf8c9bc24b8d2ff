//! Which announced deltas a link of this node is fetching now.
//!
//! In a mesh the same relayed delta is announced by several neighbours at about the
//! same time. The first link to ask for it claims it; the others wait until it is
//! stored or the claim runs out (the fetching link lost its connection, its peer did
//! not send it), and only then ask their own peer. A claim is a hint for economy,
//! never a reason to give up on a delta: every link still resolves each id it was
//! announced by seeing it stored, or by asking for it itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The most claims held at once; past it a link fetches without claiming (a duplicate
/// copy at worst), so the map stays bounded whatever peers announce.
const MAX_CLAIMS: usize = 1 << 20;

#[derive(Default)]
pub(crate) struct Claims {
    inner: Mutex<HashMap<Box<str>, Claim>>,
}

#[derive(Clone, Copy)]
struct Claim {
    owner: u64,
    until: Instant,
}

impl Claims {
    /// Claims `id` for `owner` for `ttl`, or says until when another owner holds it.
    pub fn try_claim(&self, id: &str, owner: u64, ttl: Duration) -> Result<(), Instant> {
        let now = Instant::now();
        let Ok(mut map) = self.inner.lock() else {
            return Ok(());
        };
        if let Some(c) = map.get(id) {
            if c.owner != owner && c.until > now {
                return Err(c.until);
            }
        }
        if map.len() >= MAX_CLAIMS {
            map.retain(|_, c| c.until > now);
            if map.len() >= MAX_CLAIMS {
                return Ok(());
            }
        }
        map.insert(
            id.into(),
            Claim {
                owner,
                until: now + ttl,
            },
        );
        Ok(())
    }

    /// Lets go of `owner`'s claims on `ids` (fetched, or given up).
    pub fn release<'a>(&self, ids: impl IntoIterator<Item = &'a str>, owner: u64) {
        let Ok(mut map) = self.inner.lock() else {
            return;
        };
        for id in ids {
            if map.get(id).is_some_and(|c| c.owner == owner) {
                map.remove(id);
            }
        }
    }

    /// Lets go of everything `owner` holds (its connection ended).
    pub fn release_owner(&self, owner: u64) {
        if let Ok(mut map) = self.inner.lock() {
            map.retain(|_, c| c.owner != owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_at_a_time_until_released_or_expired() {
        let claims = Claims::default();
        let ttl = Duration::from_secs(10);
        assert!(claims.try_claim("a", 1, ttl).is_ok());
        assert!(
            claims.try_claim("a", 1, ttl).is_ok(),
            "its owner may claim again"
        );
        assert!(claims.try_claim("a", 2, ttl).is_err());
        claims.release(["a"], 2);
        assert!(
            claims.try_claim("a", 2, ttl).is_err(),
            "only the owner releases"
        );
        claims.release(["a"], 1);
        assert!(claims.try_claim("a", 2, ttl).is_ok());
        claims.release_owner(2);
        assert!(claims.try_claim("a", 3, Duration::ZERO).is_ok());
        assert!(
            claims.try_claim("a", 4, ttl).is_ok(),
            "an expired claim is free"
        );
    }
}
