//! Where a node's admin token lives, and how the client commands find it.
//!
//! `serve` always protects the admin routes. Its token is, in this order:
//! `--admin-token-file FILE`, `[server] adminToken`, or, for a node with a data
//! directory, `admin.token` in it: made on first start from 32 bytes of the system's
//! random source (64 hex digits), mode 0600, never overwritten. A `--memory` node with
//! none configured makes one at each start and keeps it in `<port>.token` in the
//! runtime folder (`$XDG_RUNTIME_DIR/rhizome`, else `rhizome-<uid>` in the temp folder;
//! mode 0700), removed on a clean stop. A node that keeps no token there removes a stale
//! one left for its port, so a client never sends a dead node's token to a live one.
//! The token itself is never printed or logged; the file's path is.
//!
//! The client commands send, in this order: `--token`, `RHIZOME_TOKEN`, `--token-file`,
//! then the file beside the node: `admin.token` in `--data DIR`, or what `--config FILE`
//! says (its `adminToken`, or its data directory); with none of those, and only for a
//! node on this machine (a loopback address), the runtime file of a `--memory` node on
//! that port, else `./data/admin.token`. An implicit file is never sent to another
//! machine: a node's token is its operator's, not every node's they talk to.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::TryRngCore;
use rhizome::config::NodeFile;
use rhizome::{ServerOptions, Storage};

/// The token file's name in a node's data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// A token as read from a file or the config: trimmed, and fit for an HTTP header.
pub fn checked(token: &str, from: &str) -> anyhow::Result<String> {
    let token = token.trim();
    anyhow::ensure!(
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()),
        "{from}: a token must be printable ASCII without spaces (for example 64 hex digits), and not empty"
    );
    Ok(token.to_owned())
}

fn read(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    checked(&text, &path.display().to_string())
}

/// 32 bytes from the system's random source, as 64 hex digits.
fn generate() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the system's random source failed: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `token` to a new file at `path`, readable by its owner only.
fn write_new(path: &Path, token: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    // `create_new`: never overwrites a token, nor follows a link planted at its path.
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| {
            f.write_all(format!("{token}\n").as_bytes())?;
            f.sync_all()
        })
        .with_context(|| format!("cannot write the admin token to {}", path.display()))
}

/// Sets the tokens of the node `serve` runs: the admin token always (see
/// [`NodeToken::resolve`]), the write and read tokens when configured, each checked.
///
/// # Errors
/// As [`NodeToken::resolve`], or a configured token unfit for a header.
pub fn protect(
    options: &mut ServerOptions,
    flag_file: Option<&Path>,
    storage: &Storage,
) -> anyhow::Result<NodeToken> {
    let admin = NodeToken::resolve(flag_file, options.admin_token.as_deref(), storage)?;
    options.admin_token = Some(admin.token.clone());
    for (token, key) in [
        (&mut options.write_token, "[server] writeToken"),
        (&mut options.read_token, "[server] readToken"),
    ] {
        if let Some(t) = token.as_mut() {
            *t = checked(t, key)?;
        }
    }
    Ok(admin)
}

/// The admin token of the node `serve` runs, and the file that holds it.
pub struct NodeToken {
    pub token: String,
    /// The file a client reads it from: in the data directory, or the runtime folder
    /// (then written once the port is known, see [`NodeToken::publish`]). `None` when
    /// the operator configured the token.
    pub file: Option<PathBuf>,
    memory: bool,
}

impl NodeToken {
    /// The token `--admin-token-file`, the config or the data directory gives, or a new
    /// one for a node in memory.
    ///
    /// # Errors
    /// When a token file cannot be read or written, or a token is unfit.
    pub fn resolve(
        flag_file: Option<&Path>,
        configured: Option<&str>,
        storage: &Storage,
    ) -> anyhow::Result<NodeToken> {
        let given = |token| NodeToken {
            token,
            file: None,
            memory: false,
        };
        if let Some(path) = flag_file {
            return Ok(given(read(path).context("--admin-token-file")?));
        }
        if let Some(token) = configured {
            return Ok(given(checked(token, "[server] adminToken")?));
        }
        let Storage::Path(dir) = storage else {
            return Ok(NodeToken {
                token: generate()?,
                file: None,
                memory: true,
            });
        };
        let path = dir.join(TOKEN_FILE);
        if !path.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            write_new(&path, &generate()?)?;
            tracing::info!(file = %path.display(), "made the admin token");
        }
        warn_if_shared(&path);
        Ok(NodeToken {
            token: read(&path)?,
            file: Some(path),
            memory: false,
        })
    }

    /// Once the node listens on `ports`: a node in memory writes its token to the
    /// runtime folder under each port; any other removes stale files for them.
    /// Returns what removes those files again when the node stops.
    ///
    /// # Errors
    /// When the runtime folder is not private, or a file cannot be written.
    pub fn publish(&mut self, ports: &[u16]) -> anyhow::Result<Published> {
        let dir = runtime_dir();
        let paths: Vec<PathBuf> = ports.iter().map(|p| runtime_file(&dir, *p)).collect();
        for path in &paths {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove a stale admin token file");
                }
                _ => {}
            }
        }
        if !self.memory {
            return Ok(Published { paths: Vec::new() });
        }
        private_dir(&dir)?;
        for path in &paths {
            write_new(path, &self.token)?;
        }
        self.file = paths.first().cloned();
        Ok(Published { paths })
    }
}

/// The runtime token files of a node in memory, removed when it stops cleanly.
pub struct Published {
    paths: Vec<PathBuf>,
}

impl Drop for Published {
    fn drop(&mut self) {
        for path in &self.paths {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A token file others can read is worth a warning, not a refusal: the operator may
/// have reasons, and the node must still start.
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "the admin token file is readable by other users: chmod 600 it");
            }
        }
    }
}

/// Where nodes in memory keep their tokens: the user's runtime folder.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("rhizome"),
        _ => std::env::temp_dir().join(format!("rhizome-{}", user_id())),
    }
}

fn runtime_file(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!("{port}.token"))
}

#[cfg(unix)]
fn user_id() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

#[cfg(not(unix))]
fn user_id() -> u32 {
    0
}

/// Creates `dir` (mode 0700) or checks that it is this user's and private: in a shared
/// temp folder, another user could have made it first.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let m = std::fs::symlink_metadata(dir)?;
        anyhow::ensure!(
            m.is_dir() && m.uid() == user_id() && m.permissions().mode() & 0o077 == 0,
            "will not keep the admin token in {}: it is not a private folder of this user; \
             set XDG_RUNTIME_DIR, or give the node a token with --admin-token-file",
            dir.display()
        );
    }
    Ok(())
}

/// Where a client command takes its token from (flags of [`crate::args::NodeArg`]).
pub struct Sources<'a> {
    pub token: Option<&'a str>,
    pub token_file: Option<&'a Path>,
    pub data: Option<&'a Path>,
    pub config: Option<&'a Path>,
    /// The node's URL: implicit files are read for a node on this machine only.
    pub node: &'a str,
}

/// The token a client command sends, and what it tried, for the message a 401 gets.
pub struct Found {
    pub token: Option<String>,
    pub tried: String,
}

impl Sources<'_> {
    /// # Errors
    /// When a token named explicitly (`--token-file`, `--data`, `--config`) cannot be
    /// read.
    pub fn find(&self) -> anyhow::Result<Found> {
        let found = |token, tried: String| Found {
            token: Some(token),
            tried,
        };
        if let Some(t) = self.token {
            return Ok(found(
                checked(t, "--token")?,
                "--token or RHIZOME_TOKEN".into(),
            ));
        }
        if let Some(path) = self.token_file {
            let token = read(path).context("--token-file")?;
            return Ok(found(token, format!("--token-file {}", path.display())));
        }
        let explicit = match (self.data, self.config) {
            (Some(dir), _) => Some(dir.join(TOKEN_FILE)),
            (None, Some(config)) => {
                let file = NodeFile::load(config)?;
                if let Some(t) = &file.server.admin_token {
                    let from = format!("adminToken in {}", config.display());
                    return Ok(found(checked(t, &from)?, from));
                }
                match file.node_config().storage {
                    Storage::Path(dir) => Some(dir.join(TOKEN_FILE)),
                    Storage::Memory => None,
                }
            }
            (None, None) => None,
        };
        if let Some(path) = explicit {
            let token = read(&path)
                .context("no admin token beside the node: is this its data directory?")?;
            return Ok(found(token, path.display().to_string()));
        }
        if !is_local(self.node) {
            return Ok(Found {
                token: None,
                tried: "no token given, and files beside a node are read only for a node on this machine".into(),
            });
        }
        let mut candidates = Vec::new();
        if let Some(port) = port_of(self.node) {
            candidates.push(runtime_file(&runtime_dir(), port));
        }
        candidates.push(Path::new("./data").join(TOKEN_FILE));
        for path in &candidates {
            if path.exists() {
                return Ok(found(read(path)?, path.display().to_string()));
            }
        }
        let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        Ok(Found {
            token: None,
            tried: format!("no token found (looked for {})", looked.join(" and ")),
        })
    }
}

/// Whether `url` names this machine (a loopback address or `localhost`).
pub fn is_local(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

fn port_of(url: &str) -> Option<u16> {
    reqwest::Url::parse(url).ok()?.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_token_is_64_hex_digits_kept_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::Path(dir.path().join("data"));
        let first = NodeToken::resolve(None, None, &storage).unwrap();
        assert_eq!(first.token.len(), 64);
        assert!(first.token.bytes().all(|b| b.is_ascii_hexdigit()));
        let again = NodeToken::resolve(None, None, &storage).unwrap();
        assert_eq!(first.token, again.token);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = first.file.unwrap();
            assert_eq!(
                std::fs::metadata(path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[test]
    fn a_configured_token_is_used_as_given_and_an_unfit_one_refused() {
        let t = NodeToken::resolve(None, Some(" abc "), &Storage::Memory).unwrap();
        assert_eq!((t.token.as_str(), t.file.is_none()), ("abc", true));
        let e = NodeToken::resolve(None, Some("a b"), &Storage::Memory)
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("adminToken"), "{e:#}");
    }

    #[test]
    fn only_loopback_nodes_get_an_implicit_token() {
        assert!(is_local("http://127.0.0.1:8080"));
        assert!(is_local("http://localhost:1"));
        assert!(is_local("http://[::1]:1"));
        assert!(!is_local("http://10.0.0.2:8080"));
        assert!(!is_local("http://example.org"));
        assert_eq!(port_of("http://127.0.0.1:8081"), Some(8081));
    }
}
