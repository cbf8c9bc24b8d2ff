//! The link variants `sync` and `live` run in (`--link`); `compare.rs` sets each against
//! `plain` round by round.
//!
//! - `plain`: the dialer links to the acceptor's `http://` URL; both ends anonymous.
//! - `tls`: the acceptor serves its port over TLS (`--tls-cert`/`--tls-key`, a leaf for
//!   `127.0.0.1` issued by a CA made for the run), the dialer trusts that CA (`--tls-ca`)
//!   and dials the `https://` URL, so every frame is encrypted.
//! - `auth`: both ends know each other's key (`--peer dialer=KEY` on the acceptor,
//!   `--peer-key KEY` on the dialer), so the handshake proves both keys; plain TCP.
//!
//! A variant is checked after its run ([`check`]): a `tls` link that is not on an
//! `https://` URL, or an `auth` link that either end does not show as authenticated,
//! fails the run, so a figure always measures the link its label names.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rhizome::identity::NodeKey;
use serde_json::Value;
use tempfile::TempDir;

use crate::node::{links, NodeProc};

/// The name the acceptor knows the dialer by in `auth` (`--peer dialer=KEY`).
const DIALER_PEER: &str = "dialer";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, clap::ValueEnum)]
pub enum LinkKind {
    Plain,
    Tls,
    Auth,
}

impl LinkKind {
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::Plain => "plain",
            LinkKind::Tls => "tls",
            LinkKind::Auth => "auth",
        }
    }
}

/// The certificates and keys every variant draws on, made once per bench run in a temp dir.
pub struct LinkFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    acceptor_key: PathBuf,
    dialer_key: PathBuf,
    acceptor_id: String,
    dialer_id: String,
    _dir: TempDir,
}

impl LinkFiles {
    pub fn new() -> Result<LinkFiles> {
        let dir = tempfile::Builder::new()
            .prefix("rhizome-bench-links-")
            .tempdir()
            .context("cannot create a temp dir for the certificates and keys")?;
        let ca_key = KeyPair::generate().context("cannot make the CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "rhizome bench CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().context("cannot make the leaf key")?;
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
            .signed_by(&leaf_key, &issuer)?;
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).with_context(|| format!("cannot write {name}"))?;
            Ok::<_, anyhow::Error>(path)
        };
        // Node keys as the node makes them on first start, in a folder of their own each.
        let node_key = |name: &str| {
            let folder = dir.path().join(name);
            let (key, _) = NodeKey::load_or_create(&folder)
                .with_context(|| format!("cannot make the {name} node key"))?;
            Ok::<_, anyhow::Error>((folder.join(rhizome::identity::KEY_FILE), key.public_hex()))
        };
        let (acceptor_key, acceptor_id) = node_key("acceptor")?;
        let (dialer_key, dialer_id) = node_key("dialer")?;
        Ok(LinkFiles {
            ca: write("ca.pem", ca_cert.pem())?,
            cert: write("cert.pem", leaf.pem())?,
            key: write("key.pem", leaf_key.serialize_pem())?,
            acceptor_key,
            dialer_key,
            acceptor_id,
            dialer_id,
            _dir: dir,
        })
    }

    /// An HTTP client for the bench that also trusts the run's CA (the `tls` acceptor).
    pub fn http_client(&self) -> Result<reqwest::ClientBuilder> {
        let tls = rhizome::tls::ClientTls::new(Some(&self.ca))
            .context("cannot load the bench CA into a TLS client")?;
        Ok(reqwest::Client::builder()
            .use_preconfigured_tls(rustls::ClientConfig::clone(tls.config())))
    }

    /// The flags of the node that listens for the link.
    pub fn acceptor_args(&self, kind: LinkKind) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        match kind {
            LinkKind::Plain => vec![],
            LinkKind::Tls => vec![
                "--tls-cert".into(),
                path(&self.cert),
                "--tls-key".into(),
                path(&self.key),
            ],
            LinkKind::Auth => vec![
                "--key".into(),
                path(&self.acceptor_key),
                "--peer".into(),
                format!("{DIALER_PEER}={}", self.dialer_id),
            ],
        }
    }

    /// The flags of the node that dials the link (besides `--connect`).
    pub fn dialer_args(&self, kind: LinkKind) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        match kind {
            LinkKind::Plain => vec![],
            LinkKind::Tls => vec!["--tls-ca".into(), path(&self.ca)],
            LinkKind::Auth => vec![
                "--key".into(),
                path(&self.dialer_key),
                "--peer-key".into(),
                self.acceptor_id.clone(),
            ],
        }
    }
}

/// Fails unless the link between `acceptor` and `dialer` is what `kind` says.
pub async fn check(
    kind: LinkKind,
    client: &reqwest::Client,
    acceptor: &NodeProc,
    dialer: &NodeProc,
) -> Result<()> {
    let dialed = links(client, dialer).await?;
    let accepted = links(client, acceptor).await?;
    let show = |l: &[Value]| Value::Array(l.to_vec());
    match kind {
        LinkKind::Plain => ensure!(
            acceptor.url.starts_with("http://"),
            "a plain link to {}",
            acceptor.url
        ),
        LinkKind::Tls => {
            ensure!(
                acceptor.url.starts_with("https://"),
                "node {} serves {}, not https",
                acceptor.name,
                acceptor.url
            );
            ensure!(
                dialed.iter().all(|l| l["remoteUrl"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("https://") || u.starts_with("wss://"))),
                "node {}'s links are not all over TLS: {}",
                dialer.name,
                show(&dialed)
            );
        }
        LinkKind::Auth => {
            let authenticated = |l: &&Value| l["peer"]["authenticated"] == true;
            ensure!(
                !dialed.is_empty() && dialed.iter().all(|l| authenticated(&l)),
                "node {} does not show its link as authenticated: {}",
                dialer.name,
                show(&dialed)
            );
            ensure!(
                accepted
                    .iter()
                    .any(|l| authenticated(&l) && l["peer"]["name"] == DIALER_PEER),
                "node {} shows no link authenticated as peer {DIALER_PEER:?}: {}",
                acceptor.name,
                show(&accepted)
            );
        }
    }
    Ok(())
}
