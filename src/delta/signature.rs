//! Signed deltas: who *wrote* a delta, checkable by anyone, however many nodes relayed it.
//!
//! A signed delta carries a top-level `signature`:
//! `{"alg": "ed25519", "key": <base64url 32 bytes>, "sig": <base64url 64 bytes>}`, the
//! ed25519 signature of the delta's *signing bytes*: the delta without its `signature`
//! field, in the current pointer form, serialized by RFC 8785 (JSON Canonicalization
//! Scheme). Because the bytes are rebuilt from the delta rather than taken from the wire,
//! a delta read in the legacy pointer form, or re-serialized by any peer that keeps its
//! fields, still verifies. `docs/PROTOCOL.md` section 10 specifies it, with test vectors.
//!
//! A signature is valid when ed25519 strict verification accepts it (RFC 8032, and
//! neither the key nor `R` of small order). Many deltas are checked at once with batch
//! verification; a batch that fails is checked one delta at a time, so a bad signature
//! costs its sender, never the honest deltas beside it. Batch verification does not
//! check `R`'s order: the holder of a key can craft a signature of their own that passes
//! a batch but not the strict check (PROTOCOL.md 10.3). Weak keys are refused either way.
//!
//! A delta that has no canonical form (a number that is not a finite double, which
//! validation refuses too) cannot be signed, and its signature never verifies: signing
//! bytes are never empty or partial.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::identity::{key_text, NodeKey};

use super::{Delta, InvalidDelta};

/// The top-level field a signature travels in.
pub const SIGNATURE_FIELD: &str = "signature";
/// The one algorithm this version signs and verifies with.
pub const SIGNATURE_ALG: &str = "ed25519";

/// What checking a delta's signature found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    /// No `signature` field.
    Unsigned,
    /// A signature that verifies, by this key.
    By(VerifyingKey),
    /// A `signature` field that is malformed or does not verify, and why.
    Bad(String),
}

impl Signed {
    /// The verified key, if any.
    pub fn signer(&self) -> Option<&VerifyingKey> {
        match self {
            Signed::By(key) => Some(key),
            _ => None,
        }
    }
}

/// A `signature` field taken apart, not yet verified.
struct Claimed {
    key: VerifyingKey,
    sig: Signature,
}

impl Delta {
    /// The bytes a signature covers: this delta without `signature`, RFC 8785 canonical
    /// JSON.
    ///
    /// # Errors
    /// When the delta has no canonical form: a number that is not a finite double.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, InvalidDelta> {
        let canonical = if self.extra.keys().all(|k| k == SIGNATURE_FIELD) {
            canonical::delta_fields(self)
        } else {
            serde_json_canonicalizer::to_vec(&WithoutSignature(self))
        };
        canonical
            .map_err(|e| InvalidDelta::new("", format!("has no canonical JSON form to sign: {e}")))
    }

    /// Signs this delta with `key`, replacing any signature it had. Change nothing
    /// afterwards: any change to a field makes the signature fail.
    ///
    /// # Errors
    /// When the delta has no canonical form ([`Delta::signing_bytes`]); it is then left
    /// unsigned.
    pub fn sign(&mut self, key: &NodeKey) -> Result<(), InvalidDelta> {
        self.extra.shift_remove(SIGNATURE_FIELD);
        let sig = key.sign(&self.signing_bytes()?);
        let mut field = serde_json::Map::new();
        field.insert("alg".into(), SIGNATURE_ALG.into());
        field.insert("key".into(), key.public_base64().into());
        field.insert("sig".into(), URL_SAFE_NO_PAD.encode(sig.to_bytes()).into());
        self.extra
            .insert(SIGNATURE_FIELD.into(), Value::Object(field));
        Ok(())
    }

    /// Whether this delta carries a `signature` field (valid or not).
    pub fn has_signature(&self) -> bool {
        self.extra.contains_key(SIGNATURE_FIELD)
    }

    /// Checks this delta's signature on its own (strict verification).
    pub fn verify(&self) -> Signed {
        let Some(field) = self.extra.get(SIGNATURE_FIELD) else {
            return Signed::Unsigned;
        };
        let claim = claimed(field, &mut KeyCache::default());
        match claim.and_then(|c| Ok((c, message(self)?))) {
            Ok((c, message)) => verify_one(&c, &message),
            Err(reason) => Signed::Bad(reason),
        }
    }

    /// The key named by this delta's signature, unverified: for deltas already stored,
    /// whose signatures were verified when they came in.
    pub fn claimed_signer(&self) -> Option<VerifyingKey> {
        let field = self.extra.get(SIGNATURE_FIELD)?;
        claimed(field, &mut KeyCache::default()).ok().map(|c| c.key)
    }
}

/// Checks the signatures of many deltas: one batch verification over all the signed
/// ones, and one by one only when the batch fails. Same answers as [`Delta::verify`] on
/// each (but for the one difference a key's owner could craft: see the module notes).
pub fn verify_all<'a>(deltas: impl IntoIterator<Item = &'a Delta>) -> Vec<Signed> {
    let mut keys = KeyCache::default();
    let mut out = Vec::new();
    let mut batch: Vec<(usize, Claimed, Vec<u8>)> = Vec::new();
    for (i, delta) in deltas.into_iter().enumerate() {
        let Some(field) = delta.extra.get(SIGNATURE_FIELD) else {
            out.push(Signed::Unsigned);
            continue;
        };
        match claimed(field, &mut keys).and_then(|c| Ok((c, message(delta)?))) {
            Ok((c, message)) => {
                out.push(Signed::By(c.key));
                batch.push((i, c, message));
            }
            Err(reason) => out.push(Signed::Bad(reason)),
        }
    }
    if batch.is_empty() {
        return out;
    }
    let messages: Vec<&[u8]> = batch.iter().map(|(_, _, m)| m.as_slice()).collect();
    let sigs: Vec<Signature> = batch.iter().map(|(_, c, _)| c.sig).collect();
    let vks: Vec<VerifyingKey> = batch.iter().map(|(_, c, _)| c.key).collect();
    if ed25519_dalek::verify_batch(&messages, &sigs, &vks).is_err() {
        for (i, c, message) in &batch {
            out[*i] = verify_one(c, message);
        }
    }
    out
}

/// The signing bytes, or why there are none (then no signature can verify).
fn message(d: &Delta) -> Result<Vec<u8>, String> {
    d.signing_bytes()
        .map_err(|e| format!("the delta {}", e.reason))
}

fn verify_one(c: &Claimed, message: &[u8]) -> Signed {
    match c.key.verify_strict(message, &c.sig) {
        Ok(()) => Signed::By(c.key),
        Err(_) => Signed::Bad(format!(
            "the signature does not verify with key {} (forged, or the delta was changed after signing)",
            key_text(&c.key)
        )),
    }
}

/// Decompressed keys by their bytes: one author signs many deltas of a batch, and
/// decompressing a key costs a good part of a verification.
#[derive(Default)]
struct KeyCache(HashMap<[u8; 32], Result<VerifyingKey, String>>);

impl KeyCache {
    fn get(&mut self, bytes: [u8; 32]) -> Result<VerifyingKey, String> {
        self.0
            .entry(bytes)
            .or_insert_with(|| {
                let key = VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| "signature.key is not an ed25519 public key".to_owned())?;
                if key.is_weak() {
                    return Err("signature.key is a weak key (of small order)".into());
                }
                Ok(key)
            })
            .clone()
    }
}

/// Takes a `signature` field apart, saying what is wrong with it.
fn claimed(field: &Value, keys: &mut KeyCache) -> Result<Claimed, String> {
    let Value::Object(map) = field else {
        return Err("signature must be an object {alg, key, sig}".into());
    };
    // The signature object itself is not signed: a field we would ignore could be
    // changed by anyone, so there are none.
    if let Some(other) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "alg" | "key" | "sig"))
    {
        return Err(format!(
            "signature has an unknown field {other:?} (only alg, key, sig)"
        ));
    }
    let text = |name: &str| match map.get(name) {
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(format!("signature.{name} must be a string")),
        None => Err(format!("signature.{name} is missing")),
    };
    let alg = text("alg")?;
    if alg != SIGNATURE_ALG {
        return Err(format!(
            "signature.alg {alg:?} is not supported (only {SIGNATURE_ALG:?})"
        ));
    }
    let key: [u8; 32] = decode(text("key")?)
        .and_then(|b| b.try_into().ok())
        .ok_or("signature.key is not 32 bytes of base64url")?;
    let sig: [u8; 64] = decode(text("sig")?)
        .and_then(|b| b.try_into().ok())
        .ok_or("signature.sig is not 64 bytes of base64url")?;
    Ok(Claimed {
        key: keys.get(key)?,
        sig: Signature::from_bytes(&sig),
    })
}

/// Base64url without padding, the one spelling: padded or standard-alphabet text would
/// let one signature travel in several forms.
fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// RFC 8785 for a delta with no other top-level field than `signature`: most deltas, and
/// the part of a receiver's work that allocated most. Its members come in a known order,
/// so nothing is buffered and sorted: `author`, `id`, `pointers`, `system`, `timestamp`,
/// each pointer `role` then `target`, a reference `context` then `id` (sorted, as RFC 8785
/// sorts them). Strings are escaped as serde_json escapes them, which is RFC 8785's rule
/// (`"`, `\`, `\b \t \n \f \r`, other controls as lowercase `\u00xx`); numbers go through
/// the canonicalizer, which writes them as ECMAScript does. The tests hold it to the
/// canonicalizer's output.
mod canonical {
    use super::super::{Delta, Pointer, Target};

    type Result<T> = serde_json::Result<T>;

    pub(super) fn delta_fields(d: &Delta) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(128 + 64 * d.pointers.len());
        out.extend_from_slice(br#"{"author":"#);
        string(&mut out, &d.author);
        out.extend_from_slice(br#","id":"#);
        string(&mut out, &d.id);
        out.extend_from_slice(br#","pointers":["#);
        for (i, p) in d.pointers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            pointer(&mut out, p)?;
        }
        out.extend_from_slice(br#"],"system":"#);
        string(&mut out, &d.system);
        out.extend_from_slice(br#","timestamp":"#);
        out.extend(serde_json_canonicalizer::to_vec(&d.timestamp)?);
        out.push(b'}');
        Ok(out)
    }

    fn pointer(out: &mut Vec<u8>, p: &Pointer) -> Result<()> {
        out.extend_from_slice(br#"{"role":"#);
        string(out, &p.role);
        out.extend_from_slice(br#","target":"#);
        match &p.target {
            Target::Reference(r) => {
                out.push(b'{');
                if let Some(context) = &r.context {
                    out.extend_from_slice(br#""context":"#);
                    string(out, context);
                    out.push(b',');
                }
                out.extend_from_slice(br#""id":"#);
                string(out, &r.id);
                out.push(b'}');
            }
            Target::String(s) => string(out, s),
            Target::Number(n) => out.extend(serde_json_canonicalizer::to_vec(n)?),
            Target::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        }
        out.push(b'}');
        Ok(())
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// A delta serialized without its `signature`, for the signing bytes.
struct WithoutSignature<'a>(&'a Delta);

impl Serialize for WithoutSignature<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        let extra = d.extra.iter().filter(|(k, _)| *k != SIGNATURE_FIELD);
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", &d.id)?;
        map.serialize_entry("timestamp", &d.timestamp)?;
        map.serialize_entry("author", &d.author)?;
        map.serialize_entry("system", &d.system)?;
        map.serialize_entry("pointers", &d.pointers)?;
        for (k, v) in extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{Pointer, Target};

    fn delta() -> Delta {
        let mut d = crate::delta::new_delta(
            "alice",
            "sys-a",
            vec![
                Pointer::new("name", Target::reference_in("bob", "names")),
                Pointer::new("value", Target::String("Bob \u{e9}".into())),
            ],
        );
        d.extra
            .insert("zeta".into(), serde_json::json!({"b": 1.0, "a": [1e2]}));
        d
    }

    #[test]
    fn a_signed_delta_verifies_and_names_its_key() {
        let key = NodeKey::generate().unwrap();
        let mut d = delta();
        assert_eq!(d.verify(), Signed::Unsigned);
        d.sign(&key).unwrap();
        assert_eq!(d.verify(), Signed::By(key.verifying_key()));
        assert_eq!(d.claimed_signer(), Some(key.verifying_key()));
        // Through the wire and back, in either pointer form, it still verifies.
        let again = Delta::parse(&d.to_json()).unwrap();
        assert_eq!(again.verify(), Signed::By(key.verifying_key()));
    }

    #[test]
    fn the_signing_bytes_are_canonical_and_leave_the_signature_out() {
        let key = NodeKey::generate().unwrap();
        let mut d = delta();
        let before = d.signing_bytes().unwrap();
        d.sign(&key).unwrap();
        assert_eq!(d.signing_bytes().unwrap(), before);
        let text = String::from_utf8(before).unwrap();
        assert!(text.starts_with("{\"author\":\"alice\",\"id\":"), "{text}");
        assert!(text.contains("\"zeta\":{\"a\":[100],\"b\":1}"), "{text}");
        assert!(!text.contains("signature"));
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let key = NodeKey::generate().unwrap();
        let mut d = delta();
        d.sign(&key).unwrap();
        type Change = Box<dyn Fn(&mut Delta)>;
        let changes: Vec<Change> = vec![
            Box::new(|d| d.author = "mallory".into()),
            Box::new(|d| d.timestamp += 1),
            Box::new(|d| d.pointers.pop().map(drop).unwrap_or(())),
            Box::new(|d| {
                d.extra.insert("added".into(), 1.into());
            }),
        ];
        for change in changes {
            let mut changed = d.clone();
            change(&mut changed);
            match changed.verify() {
                Signed::Bad(reason) => assert!(reason.contains("does not verify"), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_malformed_signature_says_what_is_wrong() {
        let key = NodeKey::generate().unwrap();
        let mut signed = delta();
        signed.sign(&key).unwrap();
        let good = signed.extra[SIGNATURE_FIELD].clone();
        let cases = [
            (serde_json::json!("abc"), "must be an object"),
            (
                serde_json::json!({"alg": "rsa", "key": "", "sig": ""}),
                "not supported",
            ),
            (
                serde_json::json!({"alg": "ed25519", "sig": ""}),
                "key is missing",
            ),
            (
                serde_json::json!({"alg": "ed25519", "key": "AA", "sig": ""}),
                "32 bytes",
            ),
            (
                serde_json::json!({"alg": "ed25519", "key": good["key"], "sig": good["key"]}),
                "64 bytes",
            ),
            (
                serde_json::json!({"alg": "ed25519", "key": good["key"], "sig": good["sig"], "x": 1}),
                "unknown field",
            ),
            (
                // Standard base64 padding is another spelling of the same bytes: refused.
                serde_json::json!({"alg": "ed25519", "key": format!("{}=", good["key"].as_str().unwrap()), "sig": good["sig"]}),
                "32 bytes",
            ),
        ];
        for (field, expected) in cases {
            let mut d = delta();
            d.extra.insert(SIGNATURE_FIELD.into(), field);
            match d.verify() {
                Signed::Bad(reason) => assert!(reason.contains(expected), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_delta_without_a_canonical_form_is_never_signed_nor_verified() {
        let key = NodeKey::generate().unwrap();
        let mut d = delta();
        d.sign(&key).unwrap();
        let sig = d.extra[SIGNATURE_FIELD].clone();
        // A number no double holds: no canonical form, so no signing bytes at all
        // (never empty ones, over which one signature would fit every such delta).
        let mut odd: Delta = Delta::parse(&d.to_json()).unwrap();
        odd.extra
            .insert("zz".into(), serde_json::from_str::<Value>("1e400").unwrap());
        assert!(odd.signing_bytes().is_err());
        assert!(odd.clone().sign(&key).is_err());
        odd.extra.insert(SIGNATURE_FIELD.into(), sig);
        for found in [odd.verify(), verify_all([&odd]).remove(0)] {
            match found {
                Signed::Bad(reason) => assert!(reason.contains("canonical"), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(crate::delta::validate(&odd)
            .unwrap_err()
            .to_string()
            .contains("finite"));
    }

    /// The direct writer against the canonicalizer, on deltas with every target kind and
    /// strings that need escaping or sort differently in UTF-16.
    #[test]
    fn the_direct_writer_is_rfc_8785_as_the_canonicalizer_writes_it() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(8785);
        let texts = [
            "",
            "plain",
            "quo\"te",
            "back\\slash",
            "tab\tnew\nline\r",
            "\u{1}\u{1f}\u{7f}",
            "é ü ß",
            "\u{2028}\u{2029}",
            "😀 emoji",
            "\u{ffff}\u{e000}",
            "</script>",
            "a/b",
        ];
        let numbers = [
            "0",
            "-0",
            "1",
            "1.50",
            "1e2",
            "1e-7",
            "0.000001",
            "123456789012",
            "-2.5e300",
            "9007199254740991",
        ];
        let text = |rng: &mut rand::rngs::StdRng| texts[rng.random_range(0..texts.len())];
        for _ in 0..3000 {
            let pointers = (0..rng.random_range(0..5))
                .map(|_| {
                    let target = match rng.random_range(0..5) {
                        0 => Target::String(text(&mut rng).into()),
                        1 => Target::Bool(rng.random()),
                        2 => Target::Number(
                            serde_json::from_str(numbers[rng.random_range(0..numbers.len())])
                                .unwrap(),
                        ),
                        3 => Target::reference(format!("{}x", text(&mut rng))),
                        _ => Target::reference_in(
                            format!("{}x", text(&mut rng)),
                            format!("{}c", text(&mut rng)),
                        ),
                    };
                    Pointer::new(format!("{}r", text(&mut rng)), target)
                })
                .collect();
            let d = Delta {
                id: format!("{}id", text(&mut rng)),
                timestamp: rng.random_range(1..=crate::delta::MAX_SAFE_INTEGER),
                author: format!("{}a", text(&mut rng)),
                system: format!("{}s", text(&mut rng)),
                pointers,
                extra: serde_json::Map::new(),
            };
            let direct = canonical::delta_fields(&d).unwrap();
            let reference = serde_json_canonicalizer::to_vec(&WithoutSignature(&d)).unwrap();
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(reference).unwrap()
            );
        }
    }

    #[test]
    fn a_batch_gives_each_delta_its_own_answer() {
        let alice = NodeKey::generate().unwrap();
        let bob = NodeKey::generate().unwrap();
        let mut deltas: Vec<Delta> = (0..40)
            .map(|i| {
                let mut d = delta();
                if i % 3 != 2 {
                    d.sign(if i % 2 == 0 { &alice } else { &bob }).unwrap();
                }
                d
            })
            .collect();
        let all = verify_all(&deltas);
        assert!(all.iter().all(|s| !matches!(s, Signed::Bad(_))));
        assert_eq!(all, deltas.iter().map(Delta::verify).collect::<Vec<_>>());
        // One forgery in the batch is found, and only it.
        deltas[7].author = "mallory".into();
        let all = verify_all(&deltas);
        for (i, s) in all.iter().enumerate() {
            assert_eq!(matches!(s, Signed::Bad(_)), i == 7, "{i}: {s:?}");
        }
    }
}
