//! The peers this node knows: who may prove to be whom, and which systems each may speak for.
//!
//! A configured peer (`[[peer]]` in the config, or `POST /peers`) has a name and one or
//! both of: an ed25519 public key (a rhizome node proves it in the link handshake) and a
//! token (a plain v1 client presents it on the WebSocket upgrade). A peer that proves
//! neither is [`ANONYMOUS`]. The name is all scripts are scoped by, so it is a plain
//! folder name and never one a peer could send.
//!
//! Systems can be bound to peers: a delta whose `system` is bound is accepted only from
//! the peer it is bound to, or from a peer configured to relay for that one.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::identity::parse_public_key;
use crate::policy::{LinkPeer, ANONYMOUS};

/// Shortest token accepted: a guessable token is no authentication.
pub const MIN_TOKEN_CHARS: usize = 16;

/// One configured peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct PeerEntry {
    pub name: String,
    /// Its node key, lowercase hex (what `rhizome id` prints on that node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What a plain v1 peer presents (`?token=` or `Authorization: Bearer` on the upgrade).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Systems bound to this peer: their deltas are accepted from this peer only (and
    /// from the peers that relay for it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub systems: Vec<String>,
    /// Peers this one may relay for: deltas of systems bound to them are accepted from it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<String>,
    /// Every delta from this peer must be signed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub require_signatures: bool,
}

impl PeerEntry {
    /// What may be shown: the token never leaves the node.
    pub fn redacted(&self) -> PeerEntry {
        PeerEntry {
            token: self.token.as_ref().map(|_| "(set)".into()),
            ..self.clone()
        }
    }

    fn check(&self) -> Result<(), String> {
        let name = &self.name;
        let plain = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !plain {
            return Err(format!(
                "peer name {name:?}: use 1-64 letters, digits, '-' or '_' (it names the folders policies/<name>/ and filters/push/<name>/)"
            ));
        }
        if name == ANONYMOUS || name == "tests" {
            return Err(format!(
                "peer name {name:?} is reserved ({ANONYMOUS:?} is every unauthenticated peer; \"tests\" holds policy test cases)"
            ));
        }
        if self.key.is_none() && self.token.is_none() {
            return Err(format!(
                "peer {name:?} has neither a key nor a token: it could never authenticate"
            ));
        }
        if let Some(key) = &self.key {
            parse_public_key(key).map_err(|e| format!("peer {name:?}: key {e}"))?;
        }
        if let Some(token) = &self.token {
            if token.chars().count() < MIN_TOKEN_CHARS {
                return Err(format!(
                    "peer {name:?}: a token needs at least {MIN_TOKEN_CHARS} characters (`rhizome peer token` makes one)"
                ));
            }
        }
        Ok(())
    }
}

/// The configured peers, checked: unique names, keys and tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerTable {
    entries: Vec<PeerEntry>,
}

impl PeerTable {
    /// # Errors
    /// The first entry that is malformed or repeats a name, key or token.
    pub fn new(entries: Vec<PeerEntry>) -> Result<PeerTable, String> {
        let mut table = PeerTable::default();
        for entry in entries {
            table = table.with(entry)?;
        }
        Ok(table)
    }

    /// This table and one more peer.
    ///
    /// # Errors
    /// When the entry is malformed or its name, key or token is already someone's.
    pub fn with(&self, mut entry: PeerEntry) -> Result<PeerTable, String> {
        entry.key = entry.key.map(|k| k.to_ascii_lowercase());
        entry.check()?;
        for other in &self.entries {
            if other.name == entry.name {
                return Err(format!("peer {:?} is already configured", entry.name));
            }
            if entry.key.is_some() && other.key == entry.key {
                return Err(format!(
                    "peer {:?} has the key of peer {:?}",
                    entry.name, other.name
                ));
            }
            if entry.token.is_some() && other.token == entry.token {
                return Err(format!(
                    "peer {:?} has the token of peer {:?}",
                    entry.name, other.name
                ));
            }
        }
        let mut entries = self.entries.clone();
        entries.push(entry);
        Ok(PeerTable { entries })
    }

    /// This table without the peer `name`; `None` when there is no such peer.
    pub fn without(&self, name: &str) -> Option<PeerTable> {
        let entries: Vec<PeerEntry> = self
            .entries
            .iter()
            .filter(|e| e.name != name)
            .cloned()
            .collect();
        (entries.len() < self.entries.len()).then_some(PeerTable { entries })
    }

    pub fn entries(&self) -> &[PeerEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&PeerEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The peer with this key (lowercase hex).
    pub fn by_key(&self, key: &str) -> Option<&PeerEntry> {
        self.entries.iter().find(|e| {
            e.key
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case(key))
        })
    }

    /// The peer with this token. Every configured token is compared, each in constant
    /// time, so the answer's timing tells nothing of how much of a token matched.
    pub fn by_token(&self, token: &str) -> Option<&PeerEntry> {
        let mut found = None;
        for e in &self.entries {
            if let Some(t) = &e.token {
                if bool::from(t.as_bytes().ct_eq(token.as_bytes())) {
                    found = Some(e);
                }
            }
        }
        found
    }

    /// Who presented `token`: the configured peer it belongs to, if any.
    pub fn identify_token(&self, token: &str) -> Option<LinkPeer> {
        self.by_token(token).map(|e| LinkPeer {
            name: e.name.clone(),
            authenticated: true,
            key: None,
        })
    }

    /// Who proved `key` (a key proof verified by the caller): the configured peer, or
    /// an unknown key that stays anonymous.
    pub fn identify_key(&self, key: &str) -> LinkPeer {
        match self.by_key(key) {
            Some(e) => LinkPeer {
                name: e.name.clone(),
                authenticated: true,
                key: Some(key.to_ascii_lowercase()),
            },
            None => LinkPeer {
                key: Some(key.to_ascii_lowercase()),
                ..LinkPeer::anonymous()
            },
        }
    }

    /// The built-in binding rule: a delta of a bound `system` is accepted only from its
    /// peer or a peer that relays for it.
    ///
    /// # Errors
    /// Why the delta is refused.
    pub fn check_binding(&self, system: &str, peer: &LinkPeer) -> Result<(), String> {
        let owners: BTreeSet<&str> = self
            .entries
            .iter()
            .filter(|e| e.systems.iter().any(|s| s == system))
            .map(|e| e.name.as_str())
            .collect();
        if owners.is_empty() {
            return Ok(());
        }
        if peer.authenticated {
            if owners.contains(peer.name.as_str()) {
                return Ok(());
            }
            let relays = self.get(&peer.name).map(|e| &e.relays);
            if relays.is_some_and(|r| r.iter().any(|o| owners.contains(o.as_str()))) {
                return Ok(());
            }
        }
        let owners: Vec<&str> = owners.into_iter().collect();
        let who = if peer.authenticated {
            format!("peer {:?}", peer.name)
        } else {
            format!("an unauthenticated peer ({:?})", peer.name)
        };
        Err(format!(
            "system {system:?} is bound to peer {}; this delta came from {who}",
            owners.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1";

    fn entry(name: &str) -> PeerEntry {
        PeerEntry {
            name: name.into(),
            token: Some(format!("{name}-token-0123456789")),
            ..Default::default()
        }
    }

    fn authenticated(name: &str) -> LinkPeer {
        LinkPeer {
            name: name.into(),
            authenticated: true,
            key: None,
        }
    }

    #[test]
    fn names_are_plain_folder_names_and_never_reserved_ones() {
        for bad in [
            "",
            "../x",
            "a b",
            "public/",
            "anonymous",
            "tests",
            " public",
        ] {
            assert!(PeerTable::new(vec![entry(bad)]).is_err(), "{bad:?}");
        }
        assert!(PeerTable::new(vec![entry("partner-hq_2")]).is_ok());
    }

    #[test]
    fn a_peer_needs_a_valid_key_or_a_long_token_and_its_own() {
        let none = PeerEntry {
            name: "p".into(),
            ..Default::default()
        };
        assert!(PeerTable::new(vec![none]).unwrap_err().contains("neither"));
        let short = PeerEntry {
            token: Some("short".into()),
            ..entry("p")
        };
        assert!(PeerTable::new(vec![short]).unwrap_err().contains("16"));
        let bad_key = PeerEntry {
            key: Some("abc".into()),
            ..entry("p")
        };
        assert!(PeerTable::new(vec![bad_key]).is_err());
        let a = PeerEntry {
            key: Some(KEY.to_uppercase()),
            ..entry("a")
        };
        let b = PeerEntry {
            key: Some(KEY.into()),
            ..entry("b")
        };
        assert!(PeerTable::new(vec![a.clone(), b])
            .unwrap_err()
            .contains("the key of peer \"a\""));
        assert!(PeerTable::new(vec![a.clone(), a]).is_err());
    }

    #[test]
    fn peers_are_found_by_key_and_by_token_only() {
        let t = PeerTable::new(vec![
            PeerEntry {
                key: Some(KEY.into()),
                ..entry("a")
            },
            entry("b"),
        ])
        .unwrap();
        assert_eq!(t.by_key(&KEY.to_uppercase()).unwrap().name, "a");
        assert_eq!(t.by_token("b-token-0123456789").unwrap().name, "b");
        assert!(t.by_token("b-token-012345678").is_none());
        assert!(t.by_token("").is_none());
        assert!(t.identify_key(KEY).authenticated);
        let unknown = t.identify_key(&KEY.replace('1', "2"));
        assert_eq!(
            (unknown.name.as_str(), unknown.authenticated),
            (ANONYMOUS, false)
        );
        assert_eq!(t.without("a").unwrap().entries().len(), 1);
        assert!(t.without("zz").is_none());
        assert_eq!(
            t.get("b").unwrap().redacted().token.as_deref(),
            Some("(set)")
        );
    }

    #[test]
    fn a_bound_system_is_accepted_from_its_peer_and_its_relays_only() {
        let t = PeerTable::new(vec![
            PeerEntry {
                systems: vec!["partner-hq".into()],
                ..entry("partner")
            },
            PeerEntry {
                relays: vec!["partner".into()],
                ..entry("hub")
            },
            entry("other"),
        ])
        .unwrap();
        assert!(t
            .check_binding("partner-hq", &authenticated("partner"))
            .is_ok());
        assert!(t.check_binding("partner-hq", &authenticated("hub")).is_ok());
        let e = t
            .check_binding("partner-hq", &authenticated("other"))
            .unwrap_err();
        assert!(
            e.contains("bound to peer partner") && e.contains("\"other\""),
            "{e}"
        );
        // The name alone proves nothing.
        let claimed = LinkPeer {
            authenticated: false,
            ..authenticated("partner")
        };
        assert!(t.check_binding("partner-hq", &claimed).is_err());
        assert!(t
            .check_binding("anything-else", &LinkPeer::anonymous())
            .is_ok());
    }
}
