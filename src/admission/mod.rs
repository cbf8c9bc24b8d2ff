//! What a remote delta must pass, besides being valid, to enter the log: the link's pull
//! filter (declarative, then scripts), then the signature rules, then the node's trust
//! policy (declarative, the systems bound to peers, then scripts). All compose with AND;
//! the first refusal decides. A peer's own wishes (its hello's `trustPolicy`) play no
//! part. Local deltas meet the signature rules alone ([`Rules::check_local`]).
//!
//! A pull-filter refusal means "not wanted here" and the delta is just not kept. A trust
//! refusal means "not believed": the delta goes to the quarantine with the policy and
//! reason, where an operator can replay it once the policies change.
//!
//! - `trust`: the node's declarative trust rules ([`TrustPolicy`]).
//! - `peers`: who a peer proved to be, and the systems bound to peers ([`PeerTable`]).
//! - `authors`: authors bound to keys ([`AuthorTable`]).
//! - `signatures`: what must be signed, and by whom ([`SignaturePolicy`]).

mod authors;
mod peers;
mod signatures;
mod trust;

pub use authors::{AuthorEntry, AuthorTable};
pub use peers::{PeerEntry, PeerTable, MIN_TOKEN_CHARS};
pub use signatures::{NegationRule, Require, SignaturePolicy, SignatureSettings, Source};
pub use trust::TrustPolicy;

use serde::{Deserialize, Serialize};

use crate::delta::{now_millis, Delta, InvalidDelta, Signed};
use crate::filter::DeltaFilter;
use crate::policy::{LinkContext, PolicySet, ScriptInput, ScriptKind, Verdict};

/// The name the built-in declarative trust policy goes by in reasons and quarantine.
pub const BUILT_IN_TRUST: &str = "built-in trust policy";
/// The name the signature rules go by in reasons and quarantine.
pub const SIGNATURE_RULES: &str = "signature rules";

/// The node's built-in rules in force, one snapshot per batch judged.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub trust: std::sync::Arc<TrustPolicy>,
    pub peers: std::sync::Arc<PeerTable>,
    pub authors: std::sync::Arc<AuthorTable>,
    pub signatures: std::sync::Arc<SignaturePolicy>,
}

/// Finds a delta already accepted here (the target of a negation).
pub type Stored<'a> = &'a dyn Fn(&str) -> Option<Delta>;

impl Rules {
    /// The signature rules for a local client's delta.
    ///
    /// # Errors
    /// Why it is refused.
    pub fn check_local(&self, d: &Delta, signed: &Signed, stored: Stored) -> Result<(), String> {
        let source = (Source::Local, self.required(Source::Local));
        self.signatures
            .check(&self.authors, d, signed, source, stored)
    }

    /// Whether deltas from `source` must be signed: by the node's settings, or by the
    /// configured peer's own (`[[peer]] requireSignatures`).
    pub fn required(&self, source: Source) -> bool {
        self.signatures.required(source)
            || matches!(source, Source::Peer(scope)
                if self.peers.get(scope).is_some_and(|p| p.require_signatures))
    }
}

/// How remote deltas arriving on one link are judged.
#[derive(Debug, Clone)]
pub struct Admission {
    pub link: LinkContext,
    pub pull_filter: Option<DeltaFilter>,
    /// Keep refused deltas in quarantine (not when replaying the quarantine itself).
    pub quarantine: bool,
    /// The link as scripts see it, built once for all its deltas.
    link_value: rhai::Dynamic,
}

/// Why a delta was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    Filtered(String),
    Rejected { policy: String, reason: String },
}

impl Admission {
    pub fn new(link: LinkContext, pull_filter: Option<DeltaFilter>, quarantine: bool) -> Admission {
        let link_value = link.to_dynamic().into_shared();
        Admission {
            link,
            pull_filter,
            quarantine,
            link_value,
        }
    }

    /// Whether judging runs scripts (then it is worth moving off the async workers).
    pub fn runs_scripts(&self, set: &PolicySet) -> bool {
        set.applies(ScriptKind::Pull, self.link.scope())
            || set.applies(ScriptKind::Trust, self.link.scope())
    }

    /// `None` when the delta may be stored. `signed` is what checking its signature found.
    pub fn judge(
        &self,
        rules: &Rules,
        set: &PolicySet,
        d: &Delta,
        signed: &Signed,
        stored: Stored,
    ) -> Option<Judged> {
        if self.pull_filter.as_ref().is_some_and(|f| !f.matches(d)) {
            return Some(Judged::Filtered("outside this link's pull filter".into()));
        }
        // Converted for scripts at most once, shared by the pull and trust scripts.
        let mut input: Option<ScriptInput> = None;
        let mut scripts = |kind: ScriptKind| {
            if !set.applies(kind, self.link.scope()) {
                return Verdict::Accept;
            }
            let input = input.get_or_insert_with(|| {
                ScriptInput::verified(self.link_value.clone(), d, signed.signer())
            });
            set.judge_input(kind, self.link.scope(), input)
        };
        if let Verdict::Reject { script, reason } = scripts(ScriptKind::Pull) {
            return Some(Judged::Filtered(format!("{script}: {reason}")));
        }
        let source = Source::Peer(self.link.scope());
        if let Err(reason) = rules.signatures.check(
            &rules.authors,
            d,
            signed,
            (source, rules.required(source)),
            stored,
        ) {
            return Some(Judged::Rejected {
                policy: SIGNATURE_RULES.into(),
                reason,
            });
        }
        if let Err(reason) = rules
            .trust
            .check(d)
            .and_then(|()| rules.peers.check_binding(&d.system, &self.link.peer))
        {
            return Some(Judged::Rejected {
                policy: BUILT_IN_TRUST.into(),
                reason,
            });
        }
        if let Verdict::Reject { script, reason } = scripts(ScriptKind::Trust) {
            return Some(Judged::Rejected {
                policy: script,
                reason,
            });
        }
        None
    }

    pub fn judge_all(
        &self,
        rules: &Rules,
        set: &PolicySet,
        deltas: &[Result<Delta, InvalidDelta>],
        signed: &[Signed],
        stored: Stored,
    ) -> Vec<Option<Judged>> {
        deltas
            .iter()
            .zip(signed)
            .map(|(d, signed)| {
                d.as_ref()
                    .ok()
                    .and_then(|d| self.judge(rules, set, d, signed, stored))
            })
            .collect()
    }
}

/// A quarantined delta and why, as stored (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineRecord {
    pub delta: Delta,
    pub link: LinkContext,
    /// The peer system it came from.
    pub peer: Option<String>,
    pub policy: String,
    pub reason: String,
    /// When it was refused (ms).
    pub at: u64,
}

impl QuarantineRecord {
    pub fn new(
        delta: Delta,
        link: LinkContext,
        peer: Option<String>,
        policy: String,
        reason: String,
    ) -> Self {
        QuarantineRecord {
            delta,
            link,
            peer,
            policy,
            reason,
            at: now_millis(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
