//! The signature rules every delta meets, on every way in, after its signature was
//! checked (`delta::verify_all`):
//!
//! 1. a `signature` that is malformed or does not verify is refused, always;
//! 2. a delta whose `author` is bound ([`AuthorTable`]) must be signed by one of its keys;
//! 3. where signatures are required (the whole node, every peer, or named scopes: a
//!    peer's or a dialed link's name, or `anonymous`), an unsigned delta is refused;
//! 4. a negation of a *protected* delta (signed, or by a bound author) must be signed by
//!    the key that signed it, a key of its author, or a moderator key.
//!
//! Rule 4 needs the negated delta. A peer's negation whose target is not stored yet is
//! refused with that reason: it waits in the quarantine and is judged again as soon as
//! its target is stored (`node::quarantine`), so whichever of the two arrives first,
//! the log ends the same. A local client's is stored: it changes nothing until its
//! target exists, and local clients are the operator's own.

use std::collections::BTreeSet;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::delta::{Delta, Signed};
use crate::identity::{key_text, parse_any_key};

use super::authors::AuthorTable;

/// Which deltas must be signed, besides those of bound authors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Require {
    /// Only where `requireFrom` names the scope.
    #[default]
    None,
    /// Every delta from a peer.
    Remote,
    /// Every delta, local clients' too.
    All,
}

/// Who may negate a protected delta.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NegationRule {
    /// Its signer, a key of its author, or a moderator.
    #[default]
    Author,
    /// Anyone (v1 behaviour).
    Any,
}

/// `[signatures]` as the config file and `GET /authors` spell it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct SignatureSettings {
    pub require: Require,
    /// Scopes whose deltas must be signed: peer names, dialed link names, `anonymous`.
    pub require_from: Vec<String>,
    /// Keys that may negate any protected delta.
    pub moderators: Vec<String>,
    pub negations: NegationRule,
}

/// [`SignatureSettings`] checked and decoded once per change.
#[derive(Debug, Clone, Default)]
pub struct SignaturePolicy {
    settings: SignatureSettings,
    require_from: BTreeSet<String>,
    moderators: Vec<VerifyingKey>,
}

/// Where a delta came from, as the rules care.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A local client (HTTP, CLI, library).
    Local,
    /// A peer, by the scope its link is judged in.
    Peer(&'a str),
}

impl SignaturePolicy {
    /// # Errors
    /// A moderator key that is not an ed25519 public key.
    pub fn new(settings: SignatureSettings) -> Result<SignaturePolicy, String> {
        let moderators = settings
            .moderators
            .iter()
            .map(|k| parse_any_key(k).map_err(|e| format!("[signatures] moderators: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SignaturePolicy {
            require_from: settings.require_from.iter().cloned().collect(),
            moderators,
            settings,
        })
    }

    pub fn settings(&self) -> &SignatureSettings {
        &self.settings
    }

    /// Whether deltas from `source` must be signed.
    pub fn required(&self, source: Source) -> bool {
        match (self.settings.require, source) {
            (Require::All, _) | (Require::Remote, Source::Peer(_)) => true,
            (_, Source::Peer(scope)) => self.require_from.contains(scope),
            (_, Source::Local) => false,
        }
    }

    /// Rules 1-4 of the module notes. `required`: whether this source must sign (this
    /// policy's [`SignaturePolicy::required`], or its peer's own setting); `stored` finds
    /// a delta already accepted here.
    ///
    /// # Errors
    /// Why the delta is refused, in words an operator acts on.
    pub fn check(
        &self,
        authors: &AuthorTable,
        d: &Delta,
        signed: &Signed,
        (source, required): (Source, bool),
        stored: &dyn Fn(&str) -> Option<Delta>,
    ) -> Result<(), String> {
        let signer = match signed {
            Signed::Bad(reason) => return Err(reason.clone()),
            Signed::By(key) => Some(key),
            Signed::Unsigned => None,
        };
        if let Some(keys) = authors.keys_of(&d.author) {
            if !signer.is_some_and(|s| keys.contains(s)) {
                return Err(format!(
                    "author {:?} is bound to {}; this delta is {}",
                    d.author,
                    key_list(keys),
                    signed_by(signer)
                ));
            }
        }
        if signer.is_none() && required {
            let scope = match source {
                Source::Peer(scope) => format!("from {scope:?}"),
                Source::Local => "on this node".into(),
            };
            return Err(format!("deltas {scope} must be signed; this one is not"));
        }
        if self.settings.negations == NegationRule::Author {
            for id in d.negated_ids() {
                self.may_negate(authors, id, signer, source, stored)?;
            }
        }
        Ok(())
    }

    fn may_negate(
        &self,
        authors: &AuthorTable,
        id: &str,
        signer: Option<&VerifyingKey>,
        source: Source,
        stored: &dyn Fn(&str) -> Option<Delta>,
    ) -> Result<(), String> {
        let Some(target) = stored(id) else {
            return match source {
                Source::Local => Ok(()),
                Source::Peer(_) => Err(format!(
                    "negates {id}, which is not stored here yet, so who may negate it cannot be checked; it is judged again when {id} arrives"
                )),
            };
        };
        let mut allowed: Vec<VerifyingKey> = target.claimed_signer().into_iter().collect();
        allowed.extend(authors.keys_of(&target.author).unwrap_or_default());
        if allowed.is_empty() {
            // Neither signed nor bound: nothing proves who wrote it, so nothing limits
            // who negates it.
            return Ok(());
        }
        allowed.extend(self.moderators.iter().copied());
        if signer.is_some_and(|s| allowed.contains(s)) {
            return Ok(());
        }
        Err(format!(
            "negates {id} by {:?}, which only {} may negate; this negation is {}",
            target.author,
            key_list(&allowed),
            signed_by(signer)
        ))
    }
}

fn key_list(keys: &[VerifyingKey]) -> String {
    let texts: Vec<String> = keys.iter().map(key_text).collect();
    match texts.as_slice() {
        [one] => format!("key {one}"),
        _ => format!("keys {}", texts.join(", ")),
    }
}

fn signed_by(signer: Option<&VerifyingKey>) -> String {
    match signer {
        Some(key) => format!("signed by {}", key_text(key)),
        None => "unsigned".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::authors::AuthorEntry;
    use crate::delta::{negate, new_delta, Pointer};
    use crate::identity::NodeKey;

    fn signed(author: &str, key: Option<&NodeKey>) -> Delta {
        let mut d = new_delta(author, "sys", vec![Pointer::new("name", "x".into())]);
        if let Some(key) = key {
            d.sign(key).unwrap();
        }
        d
    }

    fn none(_: &str) -> Option<Delta> {
        None
    }

    #[test]
    fn a_bound_author_must_sign_with_one_of_its_keys() {
        let alice = NodeKey::generate().unwrap();
        let mallory = NodeKey::generate().unwrap();
        let authors = AuthorTable::new(vec![AuthorEntry {
            name: "alice".into(),
            keys: vec![alice.public_base64()],
        }])
        .unwrap();
        let policy = SignaturePolicy::default();
        let check =
            |d: &Delta| policy.check(&authors, d, &d.verify(), (Source::Local, false), &none);
        assert!(check(&signed("alice", Some(&alice))).is_ok());
        let e = check(&signed("alice", None)).unwrap_err();
        assert!(e.contains("bound to key") && e.contains("unsigned"), "{e}");
        let e = check(&signed("alice", Some(&mallory))).unwrap_err();
        assert!(e.contains(&mallory.public_base64()), "{e}");
        // Unbound authors need nothing here.
        assert!(check(&signed("bob", None)).is_ok());
        assert!(check(&signed("bob", Some(&mallory))).is_ok());
    }

    #[test]
    fn requirements_follow_the_source() {
        let policy = SignaturePolicy::new(SignatureSettings {
            require_from: vec!["public".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(policy.required(Source::Peer("public")));
        assert!(!policy.required(Source::Peer("partner")));
        assert!(!policy.required(Source::Local));
        let unsigned = signed("bob", None);
        let e = policy
            .check(
                &AuthorTable::default(),
                &unsigned,
                &Signed::Unsigned,
                (
                    Source::Peer("public"),
                    policy.required(Source::Peer("public")),
                ),
                &none,
            )
            .unwrap_err();
        assert!(e.contains("\"public\" must be signed"), "{e}");
        let all = SignaturePolicy::new(SignatureSettings {
            require: Require::All,
            ..Default::default()
        })
        .unwrap();
        assert!(all.required(Source::Local));
        let remote = SignaturePolicy::new(SignatureSettings {
            require: Require::Remote,
            ..Default::default()
        })
        .unwrap();
        assert!(remote.required(Source::Peer("anonymous")) && !remote.required(Source::Local));
    }

    #[test]
    fn only_the_author_or_a_moderator_negates_a_protected_delta() {
        let alice = NodeKey::generate().unwrap();
        let mallory = NodeKey::generate().unwrap();
        let moderator = NodeKey::generate().unwrap();
        let target = signed("alice", Some(&alice));
        let open = signed("bob", None);
        let stored = |id: &str| [&target, &open].into_iter().find(|d| d.id == id).cloned();
        let policy = SignaturePolicy::new(SignatureSettings {
            moderators: vec![moderator.public_hex()],
            ..Default::default()
        })
        .unwrap();
        let authors = AuthorTable::default();
        let negation = |of: &Delta, key: Option<&NodeKey>| {
            let mut n = negate(&of.id, "whoever", "sys", None);
            if let Some(key) = key {
                n.sign(key).unwrap();
            }
            let signed = n.verify();
            policy.check(&authors, &n, &signed, (Source::Peer("p"), false), &stored)
        };
        assert!(negation(&target, Some(&alice)).is_ok());
        assert!(negation(&target, Some(&moderator)).is_ok());
        let e = negation(&target, Some(&mallory)).unwrap_err();
        assert!(e.contains("only key") || e.contains("only keys"), "{e}");
        assert!(negation(&target, None).unwrap_err().contains("unsigned"));
        // Nothing proves who wrote an unsigned delta of an unbound author.
        assert!(negation(&open, None).is_ok());
        // A peer's negation of what is not here yet waits; a local one is stored.
        let unknown = signed("carol", None);
        let mut n = negate(&unknown.id, "whoever", "sys", None);
        n.sign(&mallory).unwrap();
        let e = policy
            .check(
                &authors,
                &n,
                &n.verify(),
                (Source::Peer("p"), false),
                &stored,
            )
            .unwrap_err();
        assert!(e.contains("not stored here yet"), "{e}");
        assert!(policy
            .check(&authors, &n, &n.verify(), (Source::Local, false), &stored)
            .is_ok());
        let any = SignaturePolicy::new(SignatureSettings {
            negations: NegationRule::Any,
            ..Default::default()
        })
        .unwrap();
        let mut n = negate(&target.id, "whoever", "sys", None);
        n.sign(&mallory).unwrap();
        assert!(any
            .check(
                &authors,
                &n,
                &n.verify(),
                (Source::Peer("p"), false),
                &stored
            )
            .is_ok());
    }

    #[test]
    fn a_bad_signature_is_refused_whatever_else_holds() {
        let key = NodeKey::generate().unwrap();
        let mut d = signed("bob", Some(&key));
        d.timestamp += 1;
        let e = SignaturePolicy::default()
            .check(
                &AuthorTable::default(),
                &d,
                &d.verify(),
                (Source::Local, false),
                &none,
            )
            .unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
    }
}
