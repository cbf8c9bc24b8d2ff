//! Byte layouts of keys and log records.
//!
//! Index keys are `len(term) as u16 BE ++ term ++ seq as u64 BE`: the length prefix keeps
//! one term's entries contiguous and separate from any other term (no separator byte a
//! delta id could contain), and the big-endian seq orders them by log position.

use super::error::StoreError;
use super::seq::Seq;
use crate::delta::Delta;

pub(crate) fn seq_key(seq: Seq) -> [u8; 8] {
    seq.0.to_be_bytes()
}

pub(crate) fn decode_seq(bytes: &[u8]) -> Result<Seq, StoreError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| {
        StoreError::Corrupt(format!("sequence key of {} bytes, expected 8", bytes.len()))
    })?;
    Ok(Seq(u64::from_be_bytes(arr)))
}

/// The prefix under which all entries for `term` live.
pub(crate) fn term_prefix(term: &str) -> Vec<u8> {
    let bytes = term.as_bytes();
    // Terms longer than u16::MAX are truncated in the key; the full delta is re-checked
    // against the filter after lookup, so a truncated term can only widen candidates.
    let len = bytes.len().min(u16::MAX as usize);
    let mut key = Vec::with_capacity(2 + len + 8);
    key.extend_from_slice(&(len as u16).to_be_bytes());
    key.extend_from_slice(&bytes[..len]);
    key
}

pub(crate) fn term_key(term: &str, seq: Seq) -> Vec<u8> {
    let mut key = term_prefix(term);
    key.extend_from_slice(&seq.0.to_be_bytes());
    key
}

/// The seq at the end of an index key.
pub(crate) fn seq_of_index_key(key: &[u8]) -> Result<Seq, StoreError> {
    let tail = key
        .len()
        .checked_sub(8)
        .and_then(|start| key.get(start..))
        .ok_or_else(|| StoreError::Corrupt("index key shorter than a sequence number".into()))?;
    decode_seq(tail)
}

pub(crate) fn time_key(timestamp: u64, seq: Seq) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&timestamp.to_be_bytes());
    key[8..].copy_from_slice(&seq.0.to_be_bytes());
    key
}

const RECORD_VERSION: u8 = 1;
/// Bytes before a record's origin: the version and the origin's length.
pub(crate) const RECORD_HEADER: usize = 3;

/// A log record: `version u8 ++ len(origin) u16 BE ++ origin ++ delta JSON`.
/// The origin is the peer system a delta arrived from (empty when authored or posted locally).
#[cfg(test)]
pub(crate) fn encode_record(origin: Option<&str>, delta_json: &str) -> Vec<u8> {
    let mut v = Vec::new();
    write_record_header(&mut v, origin);
    v.extend_from_slice(delta_json.as_bytes());
    v
}

/// Writes a delta's log record into `buf` (cleared first): the writer serializes each
/// delta into one reused buffer instead of a fresh string and a fresh record per delta.
pub(crate) fn write_record(buf: &mut Vec<u8>, origin: Option<&str>, delta: &Delta) {
    buf.clear();
    write_record_header(buf, origin);
    // Serializing our own types into memory cannot fail: every map key is a string.
    let _ = serde_json::to_writer(&mut *buf, delta);
}

fn write_record_header(buf: &mut Vec<u8>, origin: Option<&str>) {
    let origin = origin.unwrap_or("").as_bytes();
    let olen = origin.len().min(u16::MAX as usize);
    buf.push(RECORD_VERSION);
    buf.extend_from_slice(&(olen as u16).to_be_bytes());
    buf.extend_from_slice(&origin[..olen]);
}

/// Splits a record into (origin, delta JSON).
pub(crate) fn decode_record(bytes: &[u8]) -> Result<(Option<&str>, &str), StoreError> {
    let (origin, json) = split_record(bytes)?;
    let json = std::str::from_utf8(json).map_err(|_| corrupt_record("delta is not UTF-8"))?;
    Ok((origin, json))
}

/// The origin of a log record and its delta's bytes, not yet checked as UTF-8: a
/// reader that passes over the record needs no more.
pub(crate) fn split_record(bytes: &[u8]) -> Result<(Option<&str>, &[u8]), StoreError> {
    match bytes.first() {
        Some(&RECORD_VERSION) => {}
        Some(v) => return Err(corrupt_record(&format!("unknown record version {v}"))),
        None => return Err(corrupt_record("empty")),
    }
    let len_bytes: [u8; 2] = bytes
        .get(1..RECORD_HEADER)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt_record("truncated header"))?;
    let olen = u16::from_be_bytes(len_bytes) as usize;
    let origin = bytes
        .get(RECORD_HEADER..RECORD_HEADER + olen)
        .ok_or_else(|| corrupt_record("truncated origin"))?;
    let json = bytes
        .get(RECORD_HEADER + olen..)
        .ok_or_else(|| corrupt_record("truncated delta"))?;
    let origin = std::str::from_utf8(origin).map_err(|_| corrupt_record("origin is not UTF-8"))?;
    Ok(((!origin.is_empty()).then_some(origin), json))
}

fn corrupt_record(why: &str) -> StoreError {
    StoreError::Corrupt(format!("log record: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{new_delta, Pointer, Target};

    #[test]
    fn a_written_record_is_the_delta_as_to_json_writes_it() {
        let d = new_delta("alice", "sys", vec![Pointer::new("n", Target::from(1i64))]);
        let mut buf = b"left over from the last delta".to_vec();
        for origin in [Some("node-b"), None] {
            write_record(&mut buf, origin, &d);
            assert_eq!(buf, encode_record(origin, &d.to_json()));
            assert_eq!(decode_record(&buf).unwrap(), (origin, &d.to_json()[..]));
        }
    }

    #[test]
    fn record_roundtrip() {
        let r = encode_record(Some("node-b"), "{\"id\":\"x\"}");
        assert_eq!(
            decode_record(&r).unwrap(),
            (Some("node-b"), "{\"id\":\"x\"}")
        );
        let r = encode_record(None, "{}");
        assert_eq!(decode_record(&r).unwrap(), (None, "{}"));
        assert!(decode_record(&[9, 0]).is_err());
        assert!(decode_record(&[1, 0, 5, b'a']).is_err());
    }

    #[test]
    fn term_keys_do_not_collide_across_terms() {
        // "ab" + seq must never fall under the prefix of "a".
        let k = term_key("ab", Seq(1));
        assert!(!k.starts_with(&term_prefix("a")));
        assert!(k.starts_with(&term_prefix("ab")));
        assert_eq!(seq_of_index_key(&k).unwrap(), Seq(1));
    }
}
