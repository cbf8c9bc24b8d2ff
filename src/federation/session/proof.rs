//! What a key proof in the handshake signs (docs/PROTOCOL.md 6.8).
//!
//! Each side signs the same transcript, labelled with its own role: both system ids,
//! both keys, both fresh nonces, the accepting side's link id and the link's parameters
//! (the connecting side's `hello.config`). A proof therefore holds for this one
//! connection only: another connection has other nonces (no replay), and a relay that
//! changes an id, a key or the parameters breaks it. The label keeps one side's proof
//! from being reflected back as the other's.

use crate::identity::{verify_hex, NodeKey};

/// Both sides' part of the handshake, as each saw it.
pub(super) struct Transcript<'a> {
    pub initiator_system: &'a str,
    pub acceptor_system: &'a str,
    pub initiator_key: &'a str,
    pub acceptor_key: &'a str,
    pub initiator_nonce: &'a str,
    pub acceptor_nonce: &'a str,
    pub link_id: &'a str,
    /// `hello.config` as JSON text (`null` when absent).
    pub config: &'a str,
}

/// Which side a proof speaks for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Signer {
    Initiator,
    Acceptor,
}

impl Transcript<'_> {
    /// The bytes signed: a fixed label, the role, then each field length-prefixed, so
    /// no two different transcripts encode to the same bytes.
    fn bytes(&self, signer: Signer) -> Vec<u8> {
        let role = match signer {
            Signer::Initiator => "initiator",
            Signer::Acceptor => "acceptor",
        };
        let fields = [
            role,
            self.initiator_system,
            self.acceptor_system,
            self.initiator_key,
            self.acceptor_key,
            self.initiator_nonce,
            self.acceptor_nonce,
            self.link_id,
            self.config,
        ];
        let mut out = b"rhizome link proof v1\0".to_vec();
        for f in fields {
            out.extend_from_slice(&(f.len() as u64).to_be_bytes());
            out.extend_from_slice(f.as_bytes());
        }
        out
    }

    pub fn sign(&self, key: &NodeKey, signer: Signer) -> String {
        key.sign_hex(&self.bytes(signer))
    }

    /// # Errors
    /// Why the proof does not hold.
    pub fn verify(&self, signer: Signer, proof: &str) -> Result<(), String> {
        let key = match signer {
            Signer::Initiator => self.initiator_key,
            Signer::Acceptor => self.acceptor_key,
        };
        verify_hex(key, &self.bytes(signer), proof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_holds_for_its_own_transcript_and_role_only() {
        let (i, a) = (NodeKey::generate().unwrap(), NodeKey::generate().unwrap());
        let (ik, ak) = (i.public_hex(), a.public_hex());
        let t = Transcript {
            initiator_system: "spoke",
            acceptor_system: "hub",
            initiator_key: &ik,
            acceptor_key: &ak,
            initiator_nonce: "n1",
            acceptor_nonce: "n2",
            link_id: "in-1",
            config: r#"{"mode":"push"}"#,
        };
        let proof = t.sign(&i, Signer::Initiator);
        assert!(t.verify(Signer::Initiator, &proof).is_ok());
        // Reflected as the other side's proof.
        assert!(t.verify(Signer::Acceptor, &proof).is_err());
        // Replayed on another connection, or relayed with other parameters.
        let other_nonce = Transcript {
            acceptor_nonce: "n3",
            ..t
        };
        assert!(other_nonce.verify(Signer::Initiator, &proof).is_err());
        let other_mode = Transcript {
            config: r#"{"mode":"pull"}"#,
            ..other_nonce
        };
        let other_mode = Transcript {
            acceptor_nonce: "n2",
            ..other_mode
        };
        assert!(other_mode.verify(Signer::Initiator, &proof).is_err());
        // Fields cannot be shifted into each other.
        let shifted = Transcript {
            initiator_nonce: "n1n2",
            acceptor_nonce: "",
            config: r#"{"mode":"push"}"#,
            ..other_mode
        };
        assert!(shifted.verify(Signer::Initiator, &proof).is_err());
    }
}
