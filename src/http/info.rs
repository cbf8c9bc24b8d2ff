//! `GET /`: what this node is, for a client deciding how to talk to it, as a Nostr
//! relay's information document is: its identity, the protocol and extension it speaks,
//! the limits every delta must fit, and where it listens. Only what any reader may know:
//! no peers, tokens or counts (those are `/status`, behind the read token when set).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::federation::wire::{EXTENSION_VERSION, PROTOCOL_VERSION};
use crate::federation::Federation;

pub(super) async fn document(State(fed): State<Federation>) -> Json<Value> {
    let node = fed.node();
    let options = fed.options();
    let signatures = node.signature_policy();
    Json(json!({
        "name": node.system_id(),
        "software": "rhizome",
        "version": env!("CARGO_PKG_VERSION"),
        "systemId": node.system_id(),
        "publicKey": node.public_key(),
        "protocol": PROTOCOL_VERSION,
        "extensions": [{"name": "rhizome", "version": EXTENSION_VERSION}],
        "federationPath": options.path,
        "listen": fed.listen_addr().map(|a| a.to_string()),
        "tls": options.tls.is_some(),
        "limits": node.limits(),
        "signatures": {
            "alg": crate::delta::SIGNATURE_ALG,
            "require": signatures.settings().require,
            "signingKey": node.signing_key().map(crate::identity::NodeKey::public_base64),
        },
    }))
}
