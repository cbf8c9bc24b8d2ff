//! The node's identity: an ed25519 key pair, made on first start and kept with the data.
//!
//! The secret key lives in a PKCS#8 PEM file (what `openssl genpkey -algorithm ed25519`
//! writes, so an operator can bring their own with `--key`), created with mode 0600 and
//! never overwritten: a node keeps its identity for as long as its data. A node in
//! memory gets a fresh key each start. The public key, lowercase hex of its 32 bytes, is
//! what peers will know the node by.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
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
        let pem = key
            .signing
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| write(e.to_string()))?;
        let mut options = std::fs::OpenOptions::new();
        // `create_new`: two nodes starting on one directory cannot both write a key.
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(|e| write(e.to_string()))?;
        file.write_all(pem.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| write(e.to_string()))?;
        Ok((key, true))
    }

    /// The public key, lowercase hex of its 32 bytes.
    pub fn public_hex(&self) -> String {
        self.signing
            .verifying_key()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
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
