//! The accepting end: a socket a peer opened to our endpoint, already upgraded by the
//! HTTP server, run through the same session machine the connecting side uses.

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::WebSocketStream;

use super::links::{Direction, FederationLink, LinkShared, LinkStatus};
use super::options::LinkConfig;
use super::session::{self, Role};
use super::Federation;
use crate::events::NodeEvent;
use crate::policy::LinkPeer;

/// Runs an upgraded socket as an inbound link, within the node's link limit.
pub(super) async fn serve_inbound<S>(
    fed: &Federation,
    mut ws: WebSocketStream<S>,
    peer_addr: Option<String>,
    by_token: Option<LinkPeer>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let node = fed.node();
    let max = fed.options().max_connections;
    let config = LinkConfig {
        pointer_form: fed.options().pointer_form,
        ..Default::default()
    };
    // An accepted link is new each time the peer dials: its id only has to be unique.
    let id = format!("in-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (shared, mut control) = LinkShared::new(id, Direction::Inbound, peer_addr.clone(), config);
    shared.set_peer(by_token);
    let link = FederationLink {
        shared: shared.clone(),
    };
    // Counted and registered under one lock, so racing sockets cannot exceed the limit.
    if !fed.links().insert_inbound_within(link, max) {
        let reason = format!(
            "this node accepts at most {max} federation links and all are in use; retry later"
        );
        tracing::warn!(peer = ?peer_addr, "{reason}");
        let _ = ws
            .close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: reason.into(),
            }))
            .await;
        return;
    }
    let end = session::run(fed, shared.clone(), Role::Acceptor, ws, &mut control).await;
    fed.links().remove(&shared.id);
    shared.set_status(LinkStatus::Disconnected);
    tracing::info!(link = %shared.id, reason = %end.reason, "inbound link closed");
    node.emit(NodeEvent::LinkDisconnected {
        link_id: shared.id.clone(),
        reason: end.reason,
        will_reconnect: false,
    });
}
