//! The federation wire: protocol v1 plus our extension (docs/PROTOCOL.md).
//!
//! [`Message`] is a frame as a type, [`WireDelta`] a delta as a frame carries it, and
//! the codec turns text into them and back: [`decode`] is the one way an incoming text
//! frame is read, [`encode`] the one way an outgoing frame is written ([`encode_with`] in
//! a peer's pointer form, see `pointers`). Nothing here
//! knows links or sessions; they build on it.

mod codec;
mod delta;
pub(crate) mod idlist;
mod messages;
mod pointers;

pub(crate) use codec::may_carry_deltas;
pub use codec::{decode, encode, encode_with, BatchKind, DecodeError, Outbound};
pub use delta::WireDelta;
pub use idlist::IdList;
pub use messages::{
    codes, features, ArchivedCounts, AuthHello, HelloExt, Message, PeerLimits, WireLimits,
    DEFAULT_MAX_MESSAGE_BYTES, EXTENSION_VERSION, PROTOCOL_VERSION,
};
pub use pointers::{shows_legacy, to_legacy, Pointers};
