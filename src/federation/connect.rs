//! The connecting end: `Federation::connect_to_remote` and the reconnect loop.
//!
//! A link we dial lives until it is disconnected: each connection runs the session
//! machine, and when one is lost the loop dials again with exponential backoff and
//! jitter, also when the very first attempt fails, until `maxAttempts` (0 = forever).
//! A `wss://` link is verified against [`ServerOptions::client_tls`] (the system's
//! roots by default); a certificate that is not accepted stops the link in error at
//! once, since dialing again cannot change it.
//!
//! [`ServerOptions::client_tls`]: super::options::ServerOptions::client_tls

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::Connector;

use super::links::{Control, Direction, FederationLink, LinkShared, LinkStats, LinkStatus};
use super::options::LinkConfig;
use super::session::{self, EndKind, Role};
use super::Federation;
use crate::events::NodeEvent;
use crate::tls::{self, ClientTls, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("peerKey: {0}")]
    PeerKey(String),
}

/// Turns what users type (`http://host:port`, `ws://host:port/federation`, `host:port`)
/// into the WebSocket url to dial. A url without a path gets the default `/federation`.
pub fn federation_url(input: &str) -> Result<String, ConnectError> {
    let bad = |reason: &str| ConnectError::InvalidUrl {
        url: input.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = input.trim();
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("ws".to_owned(), trimmed),
    };
    let scheme = match scheme.as_str() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => {
            return Err(bad(&format!(
                "unsupported scheme {other:?}; use ws://, wss://, http:// or https://"
            )))
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    let path = if path.is_empty() || path == "/" {
        "/federation"
    } else {
        path
    };
    Ok(format!("{scheme}://{authority}{path}"))
}

/// Registers a link to `url` and spawns its dial-and-reconnect loop.
pub(super) fn start(
    fed: &Federation,
    url: &str,
    config: LinkConfig,
) -> Result<FederationLink, ConnectError> {
    let url = federation_url(url)?;
    let base = config.name.clone().unwrap_or_else(|| link_id_of(&url));
    let (link, control) = fed.links().insert_named(&base, |id| {
        let (shared, control) = LinkShared::new(id, Direction::Outbound, Some(url), config);
        (FederationLink { shared }, control)
    });
    tokio::spawn(run_outbound(fed.clone(), link.shared.clone(), control));
    Ok(link)
}

/// The id of an unnamed link we dial: the peer's address (`ws://h:1/x` -> `h:1`), which
/// fits in a `/links/{id}` path.
fn link_id_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

async fn run_outbound(
    fed: Federation,
    link: Arc<LinkShared>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let url = link.remote_url.clone().unwrap_or_default();
    let reconnect = link.config.reconnect.clone();
    let node = fed.node();
    let mut failures: u32 = 0;
    // A trust that cannot be built (no roots at all) is a refusal, found at the first dial.
    let connector = connector_for(&fed, &url).map_err(|e| format!("cannot connect to {url}: {e}"));
    loop {
        link.set_status(LinkStatus::Connecting);
        node.emit(NodeEvent::LinkConnecting {
            link_id: link.id.clone(),
            remote_url: url.clone(),
            attempt: failures + 1,
        });
        let timeout = fed.options().handshake_timeout;
        let (reason, kind) = match &connector {
            Err(reason) => (reason.clone(), EndKind::Refused),
            Ok(connector) => {
                let dial = tokio_tungstenite::connect_async_tls_with_config(
                    url.as_str(),
                    Some(fed.websocket_config()),
                    true,
                    connector.clone(),
                );
                match tokio::time::timeout(timeout, dial).await {
                    Ok(Ok((ws, _response))) => {
                        let end =
                            session::run(&fed, link.clone(), Role::Initiator, ws, &mut control)
                                .await;
                        if end.handshaken {
                            failures = 0;
                        }
                        (end.reason, end.kind)
                    }
                    Ok(Err(e)) => dial_failed(&url, &e),
                    Err(_) => (
                        format!(
                            "cannot connect to {url}: timed out after {} ms",
                            timeout.as_millis()
                        ),
                        EndKind::Lost,
                    ),
                }
            }
        };
        failures += 1;
        let gave_up = reconnect.max_attempts > 0 && failures > reconnect.max_attempts;
        let will_reconnect =
            matches!(kind, EndKind::Lost | EndKind::PeerClosed) && reconnect.enabled && !gave_up;
        if kind == EndKind::Lost || kind == EndKind::Refused {
            link.set_error(&reason);
            tracing::warn!(link = %link.id, %url, %reason, will_reconnect, "link down");
            node.emit(NodeEvent::LinkError {
                link_id: link.id.clone(),
                error: reason.clone(),
            });
        }
        node.emit(NodeEvent::LinkDisconnected {
            link_id: link.id.clone(),
            reason: reason.clone(),
            will_reconnect,
        });
        if !will_reconnect {
            if kind == EndKind::Disconnected {
                link.transition(LinkStatus::Disconnected, Some(&reason));
                fed.links().remove(&link.id);
            } else {
                // Kept in the list, in error, so operators see why it stopped.
                link.transition(LinkStatus::Error, Some(&reason));
            }
            return;
        }
        link.transition(LinkStatus::Disconnected, Some(&reason));
        LinkStats::add(&link.stats.reconnects, 1);
        let delay = reconnect.delay(failures);
        let wake = tokio::time::sleep(delay);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = &mut wake => break,
                ctrl = control.recv() => match ctrl {
                    // Pause and resume are remembered in the link's state and applied
                    // when the next connection is up.
                    Some(Control::Pause | Control::Resume) => {}
                    Some(Control::Reconcile(ask)) => {
                        let _ = ask.send(Err("the link is not connected; it reconciles once it is, when it has no cursor".into()));
                    }
                    Some(Control::Disconnect) | None => {
                        link.set_status(LinkStatus::Disconnected);
                        fed.links().remove(&link.id);
                        return;
                    }
                },
            }
        }
    }
}

/// How a link to `url` wraps its socket: in TLS with the trust this node's options
/// name, for a `wss://` url; plain otherwise (`None`).
fn connector_for(fed: &Federation, url: &str) -> Result<Option<Connector>, TlsError> {
    if !url.starts_with("wss://") {
        return Ok(None);
    }
    let trust = match &fed.options().client_tls {
        Some(t) => t.clone(),
        None => ClientTls::system()?,
    };
    Ok(Some(Connector::Rustls(trust.config().clone())))
}

/// Why a dial failed, and whether to try again: a certificate we do not accept stays
/// unaccepted however often we dial, so it ends the link; anything else may pass.
fn dial_failed(url: &str, e: &WsError) -> (String, EndKind) {
    match tls::rustls_error(e) {
        Some(cert) if tls::is_certificate_error(cert) => (
            format!(
                "cannot connect to {url}: the certificate of {} is not accepted: {cert} ({}); the link is stopped until it is opened again",
                link_id_of(url),
                tls::hint(cert)
            ),
            EndKind::Refused,
        ),
        Some(other) => (
            format!("cannot connect to {url}: TLS failed: {other} ({})", tls::hint(other)),
            EndKind::Lost,
        ),
        None => (format!("cannot connect to {url}: {e}"), EndKind::Lost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_default_path_and_ws_scheme() {
        assert_eq!(
            federation_url("http://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/federation"
        );
        assert_eq!(
            federation_url("ws://h:1/custom").unwrap(),
            "ws://h:1/custom"
        );
        assert_eq!(federation_url("https://h/").unwrap(), "wss://h/federation");
        assert_eq!(federation_url("h:9").unwrap(), "ws://h:9/federation");
        assert!(federation_url("ftp://h").is_err());
        assert!(federation_url("ws://").is_err());
    }

    #[test]
    fn unnamed_links_are_named_by_the_peer_address() {
        assert_eq!(
            link_id_of("ws://127.0.0.1:8080/federation"),
            "127.0.0.1:8080"
        );
        assert_eq!(link_id_of("wss://h/custom"), "h");
    }
}
