//! The node's own trust policy: declarative rules checked for every remote delta.
//!
//! This is what the seed's `createAuthorTrustPolicy`, `createSystemTrustPolicy` and
//! `combineTrustPolicies` express: each rule present must pass (AND). A peer's
//! `trustPolicy` in its hello is only its wish; it never replaces or weakens this.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::delta::{now_millis, Delta};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct TrustPolicy {
    /// When set, only these authors are accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_authors: Option<BTreeSet<String>>,
    /// When set, only deltas from these systems are accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_systems: Option<BTreeSet<String>>,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub denied_authors: BTreeSet<String>,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub denied_systems: BTreeSet<String>,
    /// Deltas timestamped further than this many milliseconds in the future are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_clock_skew_ms: Option<u64>,
}

impl TrustPolicy {
    /// Accepts only these authors (`createAuthorTrustPolicy`).
    pub fn authors<I: IntoIterator<Item = S>, S: Into<String>>(authors: I) -> TrustPolicy {
        TrustPolicy {
            trusted_authors: Some(authors.into_iter().map(Into::into).collect()),
            ..Default::default()
        }
    }

    /// Accepts only these systems (`createSystemTrustPolicy`).
    pub fn systems<I: IntoIterator<Item = S>, S: Into<String>>(systems: I) -> TrustPolicy {
        TrustPolicy {
            trusted_systems: Some(systems.into_iter().map(Into::into).collect()),
            ..Default::default()
        }
    }

    /// Both policies must pass (`combineTrustPolicies`): allow-lists intersect, deny-lists unite.
    pub fn and(self, other: TrustPolicy) -> TrustPolicy {
        fn meet(
            a: Option<BTreeSet<String>>,
            b: Option<BTreeSet<String>>,
        ) -> Option<BTreeSet<String>> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
                (a, b) => a.or(b),
            }
        }
        TrustPolicy {
            trusted_authors: meet(self.trusted_authors, other.trusted_authors),
            trusted_systems: meet(self.trusted_systems, other.trusted_systems),
            denied_authors: self
                .denied_authors
                .union(&other.denied_authors)
                .cloned()
                .collect(),
            denied_systems: self
                .denied_systems
                .union(&other.denied_systems)
                .cloned()
                .collect(),
            max_clock_skew_ms: match (self.max_clock_skew_ms, other.max_clock_skew_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    pub fn is_open(&self) -> bool {
        *self == TrustPolicy::default()
    }

    /// `Err(reason)` naming the rule that refused the delta.
    ///
    /// # Errors
    /// The reason the delta is not trusted.
    pub fn check(&self, d: &Delta) -> Result<(), String> {
        if self.denied_authors.contains(&d.author) {
            return Err(format!("author {:?} is denied", d.author));
        }
        if self.denied_systems.contains(&d.system) {
            return Err(format!("system {:?} is denied", d.system));
        }
        if let Some(trusted) = &self.trusted_authors {
            if !trusted.contains(&d.author) {
                return Err(format!("author {:?} is not trusted", d.author));
            }
        }
        if let Some(trusted) = &self.trusted_systems {
            if !trusted.contains(&d.system) {
                return Err(format!("system {:?} is not trusted", d.system));
            }
        }
        if let Some(skew) = self.max_clock_skew_ms {
            let now = now_millis();
            if d.timestamp > now.saturating_add(skew) {
                return Err(format!(
                    "timestamp {} is {} ms in the future (max skew {skew} ms)",
                    d.timestamp,
                    d.timestamp - now
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::new_delta;

    #[test]
    fn rules_compose_with_and() {
        let d = new_delta("alice", "sys-1", vec![]);
        assert!(TrustPolicy::default().check(&d).is_ok());
        assert!(TrustPolicy::authors(["alice", "bob"]).check(&d).is_ok());
        let e = TrustPolicy::authors(["bob"]).check(&d).unwrap_err();
        assert!(e.contains("author \"alice\" is not trusted"), "{e}");
        let both = TrustPolicy::authors(["alice"]).and(TrustPolicy::systems(["trusted-client-1"]));
        assert!(both.check(&d).unwrap_err().contains("system \"sys-1\""));
        let mut deny = TrustPolicy::default();
        deny.denied_authors.insert("alice".into());
        assert!(deny.check(&d).is_err());
        let mut future = new_delta("alice", "sys-1", vec![]);
        future.timestamp += 3_600_000;
        let skew = TrustPolicy {
            max_clock_skew_ms: Some(60_000),
            ..Default::default()
        };
        assert!(skew.check(&d).is_ok());
        assert!(skew.check(&future).unwrap_err().contains("in the future"));
    }
}
