//! The signed-delta test vectors (`docs/signature-vectors.json`, shown in
//! `docs/PROTOCOL.md` section 10.5): each one is what our code makes from its seed and
//! its delta, and the document shows the same vectors as the file, so neither can drift
//! from the code or from each other.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey};
use rhizome::delta::{verify_all, Signed, SIGNATURE_FIELD};
use rhizome::identity::NodeKey;
use rhizome::Delta;
use serde_json::Value;

fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The vectors of the JSON file, each as its fields' text.
fn vectors() -> Vec<BTreeMap<String, String>> {
    let file: Value = serde_json::from_str(&repo_file("docs/signature-vectors.json"))
        .expect("docs/signature-vectors.json is JSON");
    let vectors = file["vectors"].as_array().expect("a vectors array");
    assert!(vectors.len() >= 3, "at least three vectors");
    vectors
        .iter()
        .map(|v| {
            v.as_object()
                .expect("a vector is an object")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("every field is text").into()))
                .collect()
        })
        .collect()
}

fn seed(v: &BTreeMap<String, String>) -> [u8; 32] {
    let hex = &v["seed"];
    assert_eq!(hex.len(), 64, "{hex}");
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    bytes.try_into().expect("32 bytes")
}

#[test]
fn every_vector_is_what_our_code_makes_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = vectors();
    let mut sent = Vec::new();
    for v in &vectors {
        let name = &v["name"];
        let secret = SigningKey::from_bytes(&seed(v));
        let public = secret.verifying_key();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(public.as_bytes()),
            v["publicKey"],
            "{name}"
        );
        let hex: String = public
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, v["publicKeyHex"], "{name}");

        let delta = Delta::parse(&v["sent"]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let bytes = delta.signing_bytes().unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            v["signingBytes"],
            "{name}"
        );
        let sig = URL_SAFE_NO_PAD.encode(secret.sign(&bytes).to_bytes());
        assert_eq!(
            sig, v["signature"],
            "{name}: signing the bytes with the seed"
        );
        assert_eq!(delta.verify(), Signed::By(public), "{name}");

        // `Delta::sign` with the same key, read from PEM as `put --sign` reads it, puts
        // the same signature field on the delta.
        let pem = dir.path().join(format!("{name}.key"));
        let text = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
        std::fs::write(&pem, text.as_bytes()).unwrap();
        let key = NodeKey::load(&pem).unwrap();
        let mut resigned = delta.clone();
        resigned.sign(&key).unwrap();
        assert_eq!(
            resigned.extra[SIGNATURE_FIELD], delta.extra[SIGNATURE_FIELD],
            "{name}"
        );
        assert_eq!(
            delta.extra[SIGNATURE_FIELD],
            serde_json::json!({"alg": "ed25519", "key": v["publicKey"], "sig": v["signature"]}),
            "{name}"
        );
        sent.push(delta);
    }
    // Checked in one batch, as a node checks a frame of them.
    assert!(verify_all(&sent).iter().all(|s| s.signer().is_some()));
    // And changing any vector's delta breaks its signature.
    let mut forged = sent[0].clone();
    forged.author = "mallory".into();
    assert!(matches!(forged.verify(), Signed::Bad(_)));
}

/// The ```text blocks of PROTOCOL.md that start with `vector:`, as label -> value.
fn vectors_in_protocol() -> Vec<BTreeMap<String, String>> {
    let doc = repo_file("docs/PROTOCOL.md");
    let mut found = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if line != "```text" {
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        if !block.first().is_some_and(|l| l.starts_with("vector: ")) {
            continue;
        }
        found.push(
            block
                .iter()
                .map(|l| {
                    let (label, value) = l.split_once(": ").expect("label: value");
                    (label.to_owned(), value.to_owned())
                })
                .collect(),
        );
    }
    found
}

#[test]
fn protocol_md_shows_the_vectors_of_the_json_file() {
    let shown = vectors_in_protocol();
    let file = vectors();
    assert_eq!(
        shown.len(),
        file.len(),
        "one block per vector in PROTOCOL.md"
    );
    let labels = [
        ("vector", "name"),
        ("seed (hex)", "seed"),
        ("public key", "publicKey"),
        ("public key (hex)", "publicKeyHex"),
        ("sent", "sent"),
        ("signing bytes", "signingBytes"),
        ("signature.sig", "signature"),
    ];
    for (doc, json) in shown.iter().zip(&file) {
        assert_eq!(doc.len(), labels.len(), "{doc:?}");
        for (label, field) in labels {
            assert_eq!(doc.get(label), json.get(field), "{}: {label}", json["name"]);
        }
    }
}
