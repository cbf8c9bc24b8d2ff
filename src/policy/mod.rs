//! Operator scripts: trust policies and push / pull filters written in Rhai, hot-reloaded.
//!
//! - [`engine`]: the sandboxed engine, the helpers scripts call, the delta and link as
//!   scripts see them.
//! - [`set`]: a compiled, immutable set of scripts and how a delta is judged (AND, in
//!   file-name order, first rejection decides).
//! - `script_delta`: the delta as scripts see it (map-like, built lazily, shared).
//! - [`host`]: the node's current set, swapped whole on reload, and the `notify`
//!   watcher that reloads it when a file changes.
//! - [`cases`]: the test cases `rhizome policy test` runs.

pub mod cases;
pub mod engine;
pub mod host;
mod script_delta;
pub mod set;

pub use engine::{LinkContext, LinkPeer, ANONYMOUS};
pub use host::PolicyHost;
pub use set::{PolicyDirs, PolicySet, ScriptError, ScriptInput, ScriptKind, Verdict};
