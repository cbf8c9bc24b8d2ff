//! A document of deltas, as `POST /deltas` takes it: one delta object or an array of
//! them, each a full delta or the authoring shorthand (no `id`: the node fills in a new
//! id, and the current time and its own system where the item gives none).
//!
//! All or nothing: one invalid item refuses the whole document, so a client can fix
//! and resend it without working out what got in. Read like a single delta: the typed
//! reader takes a document whose every item is a valid delta; any other goes the
//! `Value` way, which words the error and says which item it is.

use serde_json::{Map, Value};

use super::typed::{self, Parts};
use crate::delta::{authoring, validate, Delta, InvalidDelta};
use crate::identity::NodeKey;

/// The deltas of a document, every one valid, in the document's order.
#[derive(Debug)]
pub(crate) struct Batch {
    pub deltas: Vec<Delta>,
    /// Whether the document was an array (answered per item) or one delta.
    pub is_array: bool,
    /// Per delta: whether the shorthand completed it (the node authored its id and time).
    pub filled: Vec<bool>,
}

/// Why a document of deltas was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BatchError {
    #[error("the document is empty; expected JSON")]
    Empty,
    #[error("the document is not valid JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("expected a delta object or an array of deltas")]
    NotDeltas,
    #[error("{error}")]
    Invalid {
        /// The item's place in the array; `None` for a document of one delta.
        index: Option<usize>,
        /// The item's own `id`, when it gave one as a string.
        id: Option<String>,
        error: InvalidDelta,
    },
}

impl Batch {
    /// Reads a document of deltas; `system` is this node's, for the shorthand, and
    /// `key` signs what the shorthand completes (the node authored those fields, so only
    /// the node can sign them).
    ///
    /// # Errors
    /// [`BatchError`] for a document that is not JSON, not deltas, or holds an invalid
    /// delta (the first, by its index).
    pub(crate) fn parse(
        body: &[u8],
        system: &str,
        key: Option<&NodeKey>,
    ) -> Result<Batch, BatchError> {
        let mut batch = match Batch::parse_typed(body, system) {
            Some(batch) => batch,
            None => Batch::parse_through_value(body, system)?,
        };
        if let Some(key) = key {
            for (i, (d, filled)) in batch.deltas.iter_mut().zip(&batch.filled).enumerate() {
                if *filled {
                    d.sign(key).map_err(|error| BatchError::Invalid {
                        index: batch.is_array.then_some(i),
                        id: None,
                        error,
                    })?;
                }
            }
        }
        Ok(batch)
    }

    /// The typed reader's batch; `None` when the `Value` path must judge it (a body is
    /// all or nothing, so starting over loses nothing).
    fn parse_typed(body: &[u8], system: &str) -> Option<Batch> {
        let text = std::str::from_utf8(body).ok()?;
        let (items, is_array) = typed::items_from_str(text)?;
        let filled: Vec<bool> = items.iter().map(|parts| parts.id.is_none()).collect();
        let deltas = items
            .into_iter()
            .map(|mut parts| {
                if parts.id.is_none() {
                    Shorthand::new(system).fill_parts(&mut parts);
                }
                let d = parts.into_delta()?;
                validate(&d).ok()?;
                Some(d)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Batch {
            deltas,
            is_array,
            filled,
        })
    }

    fn parse_through_value(body: &[u8], system: &str) -> Result<Batch, BatchError> {
        if body.is_empty() {
            return Err(BatchError::Empty);
        }
        let doc: Value = serde_json::from_slice(body).map_err(BatchError::NotJson)?;
        let (items, is_array) = match &doc {
            Value::Array(items) => (items.as_slice(), true),
            Value::Object(_) => (std::slice::from_ref(&doc), false),
            _ => return Err(BatchError::NotDeltas),
        };
        let mut deltas = Vec::with_capacity(items.len());
        let mut filled = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            filled.push(matches!(item, Value::Object(obj) if !obj.contains_key("id")));
            let read = match item {
                Value::Object(obj) if !obj.contains_key("id") => {
                    let mut full = obj.clone();
                    Shorthand::new(system).fill_object(&mut full);
                    Delta::from_value(&Value::Object(full))
                }
                other => Delta::from_value(other),
            };
            match read {
                Ok(d) => deltas.push(d),
                Err(error) => {
                    return Err(BatchError::Invalid {
                        index: is_array.then_some(i),
                        id: item.get("id").and_then(Value::as_str).map(str::to_owned),
                        error,
                    })
                }
            }
        }
        Ok(Batch {
            deltas,
            is_array,
            filled,
        })
    }
}

/// What the node fills in for one item in the shorthand: the single source of those
/// defaults for both readers, which differ only in where they put them.
struct Shorthand {
    id: String,
    timestamp: u64,
    system: String,
}

impl Shorthand {
    fn new(system: &str) -> Shorthand {
        Shorthand {
            id: authoring::new_id(),
            timestamp: authoring::now_millis(),
            system: system.to_owned(),
        }
    }

    fn fill_parts(self, parts: &mut Parts) {
        parts.id = Some(self.id);
        parts.timestamp.get_or_insert(self.timestamp);
        parts.system.get_or_insert(self.system);
    }

    fn fill_object(self, obj: &mut Map<String, Value>) {
        obj.insert("id".into(), Value::from(self.id));
        obj.entry("timestamp")
            .or_insert_with(|| Value::from(self.timestamp));
        obj.entry("system")
            .or_insert_with(|| Value::from(self.system));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const FULL: &str = r#"{"id":"d1","timestamp":5,"author":"a","system":"s","pointers":[]}"#;
    const SHORT: &str = r#"{"author":"a","pointers":[{"role":"r","target":"t"}]}"#;

    /// Both readers on one document, ids and times of shorthand items aside.
    fn both(body: &str) -> (Option<Batch>, Result<Batch, BatchError>) {
        (
            Batch::parse_typed(body.as_bytes(), "here"),
            Batch::parse_through_value(body.as_bytes(), "here"),
        )
    }

    #[test]
    fn full_deltas_and_the_shorthand_take_the_typed_reader_and_read_alike() {
        for body in [
            FULL.to_owned(),
            format!("[{FULL},{SHORT}]"),
            SHORT.to_owned(),
            "[]".to_owned(),
        ] {
            let (typed, value) = both(&body);
            let (typed, value) = (typed.expect("typed"), value.expect("value"));
            assert_eq!(typed.is_array, value.is_array, "{body}");
            assert_eq!(typed.deltas.len(), value.deltas.len(), "{body}");
            for (t, v) in typed.deltas.iter().zip(&value.deltas) {
                assert_eq!((&t.author, &t.system), (&v.author, &v.system), "{body}");
                assert_eq!(t.pointers, v.pointers, "{body}");
            }
        }
    }

    #[test]
    fn the_shorthand_gets_a_new_id_the_time_and_this_nodes_system() {
        let batch = Batch::parse(SHORT.as_bytes(), "here", None).unwrap();
        let d = &batch.deltas[0];
        assert!(!batch.is_array);
        assert!(uuid::Uuid::parse_str(&d.id).is_ok(), "{}", d.id);
        assert!(d.timestamp > 1);
        assert_eq!(d.system, "here");
        // What the item gives is kept; the shorthand is an item without `id`.
        let given = json!({"author": "a", "timestamp": 7, "system": "there", "pointers": []});
        let d = &Batch::parse(given.to_string().as_bytes(), "here", None)
            .unwrap()
            .deltas[0];
        assert_eq!((d.timestamp, d.system.as_str()), (7, "there"));
        let (typed, value) = both(&format!("[{SHORT},{SHORT}]"));
        for b in [typed.unwrap(), value.unwrap()] {
            assert_ne!(b.deltas[0].id, b.deltas[1].id);
        }
    }

    #[test]
    fn refusals_say_which_item_and_why() {
        assert!(matches!(
            Batch::parse(b"", "h", None),
            Err(BatchError::Empty)
        ));
        assert!(matches!(
            Batch::parse(b"{nope", "h", None),
            Err(BatchError::NotJson(_))
        ));
        assert!(matches!(
            Batch::parse(b"5", "h", None),
            Err(BatchError::NotDeltas)
        ));
        let bad = r#"{"id":"x","timestamp":1,"author":7,"system":"s","pointers":[]}"#;
        let body = format!("[{FULL},{bad}]");
        assert!(
            both(&body).0.is_none(),
            "an invalid item leaves the typed reader"
        );
        match Batch::parse(body.as_bytes(), "h", None) {
            Err(BatchError::Invalid { index, id, error }) => {
                assert_eq!((index, id.as_deref()), (Some(1), Some("x")));
                assert_eq!(error.field, "author");
            }
            other => panic!("{other:?}"),
        }
        match Batch::parse(br#"{"author":"a","pointers":5}"#, "h", None) {
            Err(BatchError::Invalid { index, id, error }) => {
                assert_eq!((index, id), (None, None));
                assert_eq!(error.field, "pointers");
            }
            other => panic!("{other:?}"),
        }
    }
}
