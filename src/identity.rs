//! The node's identity: an ed25519 key pair, made on first start and kept with the data.
//!
//! The secret key lives in a PKCS#8 PEM file (what `openssl genpkey -algorithm ed25519`
//! writes, so an operator can bring their own with `--key`), created with mode 0600 and
//! never overwritten: a node keeps its identity for as long as its data. A node in
//! memory gets a fresh key each start. The public key, lowercase hex of its 32 bytes, is
//! what peers know it by: links prove it with [`NodeKey::sign_hex`] / [`verify_hex`].

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::{pem::LineEnding, zeroize::Zeroizing};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::TryRngCore;

/// The key file's name in a node's data directory.
pub const KEY_FILE: &str = "node.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the node key {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write the node key {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("the system's random source failed: {0}")]
    Random(String),
}

/// A node's key pair.
pub struct NodeKey {
    signing: SigningKey,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret half.
        write!(f, "NodeKey({})", self.public_hex())
    }
}

impl NodeKey {
    /// A new key from the operating system's random source.
    ///
    /// # Errors
    /// When the random source fails.
    pub fn generate() -> Result<NodeKey, IdentityError> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(NodeKey {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// The key in a PKCS#8 PEM file.
    ///
    /// # Errors
    /// When the file cannot be read or holds no ed25519 private key.
    pub fn load(path: &Path) -> Result<NodeKey, IdentityError> {
        let read = |reason: String| IdentityError::Read {
            path: path.to_owned(),
            reason,
        };
        let pem = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
        let signing = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| read(format!("not an ed25519 private key in PKCS#8 PEM: {e}")))?;
        Ok(NodeKey { signing })
    }

    /// The key kept in `dir`, made (and kept, mode 0600) when there is none yet.
    /// Returns whether it was made now.
    ///
    /// # Errors
    /// When the key cannot be read, made or written.
    pub fn load_or_create(dir: &Path) -> Result<(NodeKey, bool), IdentityError> {
        let path = dir.join(KEY_FILE);
        if path.exists() {
            return NodeKey::load(&path).map(|k| (k, false));
        }
        let write = |reason: String| IdentityError::Write {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| write(e.to_string()))?;
        let key = NodeKey::generate()?;
        // `save_new` refuses an existing file: two nodes starting on one directory
        // cannot both write a key.
        key.save_new(&path)?;
        Ok((key, true))
    }

    /// The public key, lowercase hex of its 32 bytes.
    pub fn public_hex(&self) -> String {
        to_hex(self.signing.verifying_key().as_bytes())
    }

    /// An ed25519 signature of `message`, lowercase hex of its 64 bytes.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        to_hex(&self.signing.sign(message).to_bytes())
    }

    /// An ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.signing.sign(message)
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The public key as signed deltas carry it: base64url of its 32 bytes, no padding.
    pub fn public_base64(&self) -> String {
        key_text(&self.verifying_key())
    }

    /// The secret key as PKCS#8 PEM, what [`NodeKey::save_new`] writes and
    /// [`NodeKey::load`] reads; wiped from memory when dropped.
    ///
    /// # Errors
    /// When the encoder fails (it does not for an ed25519 key).
    pub fn to_pem(&self) -> Result<Zeroizing<String>, ed25519_dalek::pkcs8::Error> {
        self.signing.to_pkcs8_pem(LineEnding::LF)
    }

    /// Writes the key as PKCS#8 PEM to a new file, mode 0600 (never over an existing one).
    ///
    /// # Errors
    /// When the file exists or cannot be written.
    pub fn save_new(&self, path: &Path) -> Result<(), IdentityError> {
        let write = |reason: String| IdentityError::Write {
            path: path.to_owned(),
            reason,
        };
        let pem = self.to_pem().map_err(|e| write(e.to_string()))?;
        let mut options = std::fs::OpenOptions::new();
        // `create_new`: a key file is never replaced, so an identity cannot be lost.
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| write(e.to_string()))?;
        file.write_all(pem.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| write(e.to_string()))
    }
}

/// A public key as signed deltas carry it: base64url (RFC 4648 section 5) of its 32
/// bytes, without padding.
pub fn key_text(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// A public key in either form an operator may paste: base64url as deltas carry it (43
/// characters) or lowercase hex as nodes are known by (64 digits). Weak keys (of small
/// order, for which any message "verifies") are refused.
///
/// # Errors
/// When it is neither form, or not a usable ed25519 key, with what is wrong.
pub fn parse_any_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes: Option<[u8; 32]> = match text.len() {
        64 => from_hex(text).and_then(|b| b.try_into().ok()),
        43 => URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|b| b.try_into().ok()),
        _ => None,
    };
    let bytes = bytes.ok_or_else(|| {
        format!("{text:?} is not a public key (43 base64url characters or 64 hex digits)")
    })?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|e| format!("{text:?} is not an ed25519 public key: {e}"))?;
    if key.is_weak() {
        return Err(format!("{text:?} is a weak key (of small order): refused"));
    }
    Ok(key)
}

/// A public key as peers and operators write it: lowercase hex of its 32 bytes.
///
/// # Errors
/// When it is not 64 hex digits or not a valid ed25519 point, with what is wrong.
pub fn parse_public_key(hex: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = from_hex(hex)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{hex:?} is not a public key (64 hex digits)"))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|e| format!("{hex:?} is not an ed25519 public key: {e}"))
}

/// Checks a signature made by [`NodeKey::sign_hex`]. Strict verification: a signature
/// accepted once cannot be altered into another accepted one (no malleability).
///
/// # Errors
/// When the key or the signature is malformed, or the signature does not match.
pub fn verify_hex(public_hex: &str, message: &[u8], signature_hex: &str) -> Result<(), String> {
    let key = parse_public_key(public_hex)?;
    let bytes: [u8; 64] = from_hex(signature_hex)
        .and_then(|b| b.try_into().ok())
        .ok_or("the signature is not 128 hex digits")?;
    key.verify_strict(message, &Signature::from_bytes(&bytes))
        .map_err(|_| format!("the signature does not verify with key {public_hex}"))
}

/// `n` bytes from the operating system's random source, as lowercase hex: nonces and tokens.
///
/// # Errors
/// When the random source fails.
pub fn random_hex(n: usize) -> Result<String, IdentityError> {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| IdentityError::Random(e.to_string()))?;
    Ok(to_hex(&bytes))
}

/// Lowercase hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Lowercase or uppercase hex; `None` for anything else.
pub(crate) fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    hex.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_private_to_its_owner_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (made, created) = NodeKey::load_or_create(dir.path()).unwrap();
        assert!(created);
        let (again, created) = NodeKey::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(made.public_hex(), again.public_hex());
        assert_eq!(made.public_hex().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{made:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_file_that_is_not_a_key_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        std::fs::write(&path, "not a key").unwrap();
        let e = NodeKey::load(&path).unwrap_err().to_string();
        assert!(e.contains("bad.key") && e.contains("PKCS#8"), "{e}");
    }

    #[test]
    fn a_signature_verifies_with_its_key_only_and_only_for_its_message() {
        let key = NodeKey::generate().unwrap();
        let other = NodeKey::generate().unwrap();
        let sig = key.sign_hex(b"hello");
        assert!(verify_hex(&key.public_hex(), b"hello", &sig).is_ok());
        assert!(verify_hex(&key.public_hex(), b"hellO", &sig).is_err());
        assert!(verify_hex(&other.public_hex(), b"hello", &sig).is_err());
        assert!(verify_hex(&key.public_hex(), b"hello", &sig[2..]).is_err());
        assert!(verify_hex("zz", b"hello", &sig)
            .unwrap_err()
            .contains("64 hex"));
        assert_eq!(from_hex("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(from_hex("0g"), None);
        assert_eq!(random_hex(32).unwrap().len(), 64);
        assert_ne!(random_hex(32).unwrap(), random_hex(32).unwrap());
    }

    #[test]
    fn an_openssl_key_is_read() {
        // `openssl genpkey -algorithm ed25519` (RFC 8410 test key).
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, pem).unwrap();
        let key = NodeKey::load(&path).unwrap();
        assert_eq!(
            key.public_hex(),
            "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"
        );
    }
}
