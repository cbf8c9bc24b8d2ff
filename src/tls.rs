//! TLS (rustls, with ring as the crypto provider) for both ends of the node's
//! connections: the listener's certificate and key, and the roots the links we dial
//! (and the client commands) trust.
//!
//! Invariants:
//! - A certificate chain and key are read from PEM files once, at start; an error names
//!   the file and what is wrong with it (unreadable, no certificate, no key, a key that
//!   does not match the certificate).
//! - What a client trusts is the operating system's roots (the store curl and openssl on
//!   the same host read, CAs an operator added there included) plus, optionally, the
//!   certificates of one CA file. The system's roots are read once per process.
//! - Every config is built with the ring provider explicitly, so it never depends on a
//!   process-wide default provider being installed.
//! - The configs are shared behind `Arc`s: built once, cloned for free, and two options
//!   holding the same config compare equal.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    BadFile { file: PathBuf, message: String },
    #[error("{cert} with {key}: {message}")]
    BadPair {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("no trusted root certificates: {0}")]
    NoRoots(String),
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|source| TlsError::Read {
        file: file.to_owned(),
        source,
    })
}

/// Every `CERTIFICATE` block of a PEM file, in order; none is an error.
fn certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |message: String| TlsError::BadFile {
        file: file.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(&read(file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a valid PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no certificate (a PEM block `-----BEGIN CERTIFICATE-----`)".to_owned(),
        ));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn private_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bad = |message: String| TlsError::BadFile {
        file: file.to_owned(),
        message,
    };
    PrivateKeyDer::from_pem_slice(&read(file)?).map_err(|e| match e {
        pem::Error::NoItemsFound => bad(
            "holds no private key (a PEM block `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)"
                .to_owned(),
        ),
        e => bad(format!("not a valid PEM file: {e}")),
    })
}

/// The listener's TLS: a certificate chain and its key.
#[derive(Clone)]
pub struct ServerTls(Arc<ServerConfig>);

impl ServerTls {
    /// Reads the certificate chain (leaf first) and its private key from PEM files.
    ///
    /// # Errors
    /// [`TlsError`] naming the file that cannot be read or holds no usable certificate
    /// or key, or both files when the key is not the certificate's.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let chain = certificates(cert)?;
        let secret = private_key(key)?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, secret)
            .map_err(|e| TlsError::BadPair {
                cert: cert.to_owned(),
                key: key.to_owned(),
                message: match e {
                    rustls::Error::InconsistentKeys(_) => {
                        "the private key does not belong to the certificate".to_owned()
                    }
                    e => e.to_string(),
                },
            })?;
        // The node speaks HTTP/1.1 only (WebSocket upgrades ride on it).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls(Arc::new(config)))
    }

    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.0
    }
}

/// What a client (a link we dial, a client command) trusts.
#[derive(Clone)]
pub struct ClientTls(Arc<ClientConfig>);

impl ClientTls {
    /// The system's roots, plus every certificate in `ca_file` when one is given.
    ///
    /// # Errors
    /// [`TlsError`] when `ca_file` cannot be read or holds no certificate, or when there
    /// is no root to trust at all.
    pub fn new(ca_file: Option<&Path>) -> Result<ClientTls, TlsError> {
        let mut roots = system_roots().clone();
        if let Some(file) = ca_file {
            for cert in certificates(file)? {
                roots.add(cert).map_err(|e| TlsError::BadFile {
                    file: file.to_owned(),
                    message: format!("holds a certificate that cannot be a trust anchor: {e}"),
                })?;
            }
        }
        if roots.is_empty() {
            return Err(TlsError::NoRoots(
                "the system's certificate store is empty or unreadable (install the ca-certificates package) and no CA file was given (--tls-ca FILE)".to_owned(),
            ));
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls(Arc::new(config)))
    }

    /// The system's roots only, built once per process and shared by every caller.
    ///
    /// # Errors
    /// As [`ClientTls::new`] without a CA file.
    pub fn system() -> Result<ClientTls, TlsError> {
        static SYSTEM: OnceLock<Result<ClientTls, String>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| ClientTls::new(None).map_err(|e| e.to_string()))
            .clone()
            .map_err(TlsError::Config)
    }

    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.0
    }
}

/// The system's trusted roots, read once; certificates it cannot parse are skipped
/// (a store of hundreds often holds a few), and so is a store that cannot be read at
/// all, which [`ClientTls::new`] reports when nothing else is trusted either.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "while reading the system's trusted certificates");
        }
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(found.certs);
        roots
    })
}

/// The TLS error behind a failed connection, if TLS is why it failed: the rustls error
/// inside `err` or its sources. rustls's errors travel inside I/O errors, sometimes
/// nested, whose `source` skips them, so those are opened by hand.
pub fn rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|i| i as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    None
}

/// Whether the peer's certificate is what failed: no retry changes that, only an
/// operator (trusting its CA, or the peer fixing its certificate).
pub fn is_certificate_error(err: &rustls::Error) -> bool {
    matches!(err, rustls::Error::InvalidCertificate(_))
}

/// What the operator can do about a TLS error.
pub fn hint(err: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "its issuer is not among the trusted roots: trust the CA's certificate with --tls-ca FILE"
        }
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => "the certificate does not name the host in the url: use a name it was issued for",
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "the certificate is outside its validity period: the peer must renew it (or the clocks disagree)",
        rustls::Error::InvalidCertificate(_) => {
            "the peer's certificate must be fixed, or its CA trusted with --tls-ca FILE"
        }
        rustls::Error::InvalidMessage(_) => {
            "the peer does not answer in TLS: if it serves plain http, use an http:// or ws:// url"
        }
        _ => "the peer and this node could not agree on TLS",
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

/// The same config (not merely an equal one): what options compare.
impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn self_signed(name: &str) -> rcgen::CertifiedKey<rcgen::KeyPair> {
        rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap()
    }

    #[test]
    fn a_certificate_and_its_key_make_a_server_config() {
        let dir = tempfile::tempdir().unwrap();
        let made = self_signed("localhost");
        let cert = write(dir.path(), "cert.pem", &made.cert.pem());
        let key = write(dir.path(), "key.pem", &made.signing_key.serialize_pem());
        let tls = ServerTls::from_pem_files(&cert, &key).unwrap();
        assert_eq!(tls.config().alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let made = self_signed("localhost");
        let other = self_signed("localhost");
        let cert = write(dir.path(), "cert.pem", &made.cert.pem());
        let key = write(dir.path(), "key.pem", &made.signing_key.serialize_pem());
        let wrong_key = write(dir.path(), "other.pem", &other.signing_key.serialize_pem());
        let missing = dir.path().join("missing.pem");

        let err = ServerTls::from_pem_files(&missing, &key)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.pem") && err.contains("cannot read"),
            "{err}"
        );
        // The two files given the wrong way round.
        let err = ServerTls::from_pem_files(&key, &cert)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key.pem") && err.contains("no certificate"),
            "{err}"
        );
        let err = ServerTls::from_pem_files(&cert, &cert)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cert.pem") && err.contains("no private key"),
            "{err}"
        );
        let err = ServerTls::from_pem_files(&cert, &wrong_key)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("other.pem") && err.contains("does not belong"),
            "{err}"
        );
        let err = ClientTls::new(Some(&key)).unwrap_err().to_string();
        assert!(
            err.contains("key.pem") && err.contains("no certificate"),
            "{err}"
        );
    }

    #[test]
    fn a_ca_file_is_trusted_beside_the_system_roots() {
        let dir = tempfile::tempdir().unwrap();
        let ca = write(dir.path(), "ca.pem", &self_signed("ca").cert.pem());
        assert!(ClientTls::new(Some(&ca)).is_ok());
    }

    #[test]
    fn a_tls_error_is_found_inside_nested_io_errors() {
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, unknown);
        // As an HTTP client hands it over: an I/O error inside another.
        let io = std::io::Error::other(io);
        let found = rustls_error(&io).unwrap();
        assert!(is_certificate_error(found));
        assert!(hint(found).contains("--tls-ca"));
        let other =
            std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert!(!is_certificate_error(rustls_error(&other).unwrap()));
        assert!(rustls_error(&std::io::Error::other("refused")).is_none());
    }
}
