//! Positions in the log. A position is local to one node's log: it means nothing to
//! another log, which is why peers key their cursors by the log's id.

/// A local sequence number: position of a delta in this node's log. The first delta
/// stored gets `Seq(1)`; `Seq(0)` means "before everything" and is the cursor of a
/// reader that has seen nothing. The log has no gaps, so the head is also the number of
/// deltas stored.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl std::fmt::Display for Seq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
