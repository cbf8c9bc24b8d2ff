//! Authors bound to keys: a delta whose `author` is bound is accepted only when signed by
//! one of that author's keys, whoever relayed it and whatever link it came by.
//!
//! Entries come from `[[author]]` in the config (hot-reloaded) and `POST /authors`. Keys
//! are kept as operators may paste them (base64url or hex) and shown in the one form
//! signatures carry (base64url), so a listing can be compared with a delta by eye.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::identity::{key_text, parse_any_key};

/// One `[[author]]`: a name as deltas carry it in `author`, and the keys that may sign for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AuthorEntry {
    pub name: String,
    /// Public keys, base64url (as `rhizome keygen` prints) or hex.
    pub keys: Vec<String>,
}

/// The bound authors in force, checked and decoded once per change, not per delta.
#[derive(Debug, Clone, Default)]
pub struct AuthorTable {
    entries: Vec<AuthorEntry>,
    keys: BTreeMap<String, Vec<VerifyingKey>>,
}

impl AuthorTable {
    /// # Errors
    /// A key that is not an ed25519 public key, an author without keys, or one named
    /// twice, saying which.
    pub fn new(entries: Vec<AuthorEntry>) -> Result<AuthorTable, String> {
        let mut keys = BTreeMap::new();
        let mut normalized = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.name.is_empty() {
                return Err("an [[author]] needs a name (the `author` its deltas carry)".into());
            }
            if entry.keys.is_empty() {
                return Err(format!(
                    "author {:?} has no keys: none of its deltas could be accepted",
                    entry.name
                ));
            }
            let parsed = entry
                .keys
                .iter()
                .map(|k| parse_any_key(k).map_err(|e| format!("author {:?}: {e}", entry.name)))
                .collect::<Result<Vec<_>, _>>()?;
            if keys.insert(entry.name.clone(), parsed.clone()).is_some() {
                return Err(format!(
                    "author {:?} is bound twice: list all its keys in one entry",
                    entry.name
                ));
            }
            normalized.push(AuthorEntry {
                name: entry.name,
                keys: parsed.iter().map(key_text).collect(),
            });
        }
        Ok(AuthorTable {
            entries: normalized,
            keys,
        })
    }

    /// The keys `author` is bound to, if it is bound.
    pub fn keys_of(&self, author: &str) -> Option<&[VerifyingKey]> {
        self.keys.get(author).map(Vec::as_slice)
    }

    /// Every bound author, keys in base64url.
    pub fn entries(&self) -> &[AuthorEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// This table with `entry` added, or replacing the entry of the same name.
    ///
    /// # Errors
    /// As [`AuthorTable::new`].
    pub fn with(&self, entry: AuthorEntry) -> Result<AuthorTable, String> {
        let mut entries: Vec<AuthorEntry> = self
            .entries
            .iter()
            .filter(|e| e.name != entry.name)
            .cloned()
            .collect();
        entries.push(entry);
        AuthorTable::new(entries)
    }

    /// This table without `name`; `None` when it was not bound.
    pub fn without(&self, name: &str) -> Option<AuthorTable> {
        if !self.keys.contains_key(name) {
            return None;
        }
        let entries = self
            .entries
            .iter()
            .filter(|e| e.name != name)
            .cloned()
            .collect();
        // The remaining entries were valid together; they still are.
        AuthorTable::new(entries).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;

    #[test]
    fn keys_are_read_in_either_form_and_shown_as_deltas_carry_them() {
        let key = NodeKey::generate().unwrap();
        let table = AuthorTable::new(vec![AuthorEntry {
            name: "alice".into(),
            keys: vec![key.public_hex()],
        }])
        .unwrap();
        assert_eq!(table.keys_of("alice"), Some(&[key.verifying_key()][..]));
        assert_eq!(table.entries()[0].keys, vec![key.public_base64()]);
        assert_eq!(table.keys_of("bob"), None);
        let both = table
            .with(AuthorEntry {
                name: "bob".into(),
                keys: vec![key.public_base64()],
            })
            .unwrap();
        assert_eq!(both.entries().len(), 2);
        assert!(both.without("alice").unwrap().keys_of("alice").is_none());
        assert!(both.without("carol").is_none());
    }

    #[test]
    fn a_bad_entry_is_refused_with_its_author() {
        let bad = |keys: Vec<&str>| {
            AuthorTable::new(vec![AuthorEntry {
                name: "alice".into(),
                keys: keys.into_iter().map(String::from).collect(),
            }])
            .unwrap_err()
        };
        assert!(bad(vec![]).contains("no keys"));
        assert!(bad(vec!["xyz"]).contains("alice"));
        // The identity point: every signature would "verify" with it.
        let weak = format!("01{}", "0".repeat(62));
        assert!(bad(vec![&weak]).contains("weak"), "{}", bad(vec![&weak]));
    }
}
