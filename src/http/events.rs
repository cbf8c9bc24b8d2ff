//! `GET /events`: the node's events as Server-Sent Events, so a console or a script can
//! follow the node without running beside it (`serve --events` prints the same on the
//! node's stdout). Each event is named by its type (`delta:stored`, `link:connected`...)
//! and its data is the event's JSON with `time` (ms since the epoch) added.
//!
//! Events are a broadcast, not a log: a reader that falls behind the node's buffer is told
//! how many it missed (an `events:lagged` event), never silently skipped. What must not
//! be missed is in the log itself (`GET /deltas`, the federation links). A comment line
//! every 15 s keeps proxies from closing a quiet stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::delta::now_millis;
use crate::node::Node;

pub(super) async fn stream(
    State(node): State<Node>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = node.events();
    let stream = futures_util::stream::unfold(events, |mut events| async move {
        let (kind, mut data) = match events.recv().await {
            Ok(event) => {
                let data = serde_json::to_value(&event).unwrap_or(Value::Null);
                let kind = data["type"].as_str().unwrap_or("event").to_owned();
                (kind, data)
            }
            Err(RecvError::Lagged(missed)) => (
                "events:lagged".to_owned(),
                json!({"type": "events:lagged", "missed": missed}),
            ),
            Err(RecvError::Closed) => return None,
        };
        if let Value::Object(map) = &mut data {
            map.insert("time".into(), now_millis().into());
        }
        let event = Event::default().event(kind).data(data.to_string());
        Some((Ok(event), events))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
