//! Delta ids packed for the wire: the id lists of `delta_announce` and `delta_request`.
//!
//! Announcing a relayed delta by id costs every link that already holds it the id's
//! bytes, so ids travel packed: one base64 string per list, each id a tag byte and
//! either the 16 bytes of a UUID (when the id is exactly a UUID's lowercase hyphenated
//! text, so unpacking gives back the same string) or its own bytes with a varint
//! length. A UUID costs ~23 characters instead of 39 as a JSON string.
//!
//! Decoding is bounded: at most [`MAX_IDS`] ids, each at most [`MAX_ID_BYTES`] (the
//! frame's size bounds the text).

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The most ids one list carries (a live read is 1000 positions).
pub const MAX_IDS: usize = 10_000;
/// The longest id a list carries; longer ones cannot be stored anyway.
pub const MAX_ID_BYTES: usize = 4096;

const TAG_UUID: u8 = 0;
const TAG_TEXT: u8 = 1;

/// A list of delta ids, packed on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdList(pub Vec<String>);

impl IdList {
    /// The packed form.
    pub fn pack(&self) -> String {
        let mut bytes = Vec::with_capacity(self.0.len() * 17);
        for id in &self.0 {
            match uuid_bytes(id) {
                Some(raw) => {
                    bytes.push(TAG_UUID);
                    bytes.extend_from_slice(&raw);
                }
                None => {
                    bytes.push(TAG_TEXT);
                    put_varint(&mut bytes, id.len() as u64);
                    bytes.extend_from_slice(id.as_bytes());
                }
            }
        }
        STANDARD_NO_PAD.encode(bytes)
    }

    /// Reads a packed list.
    ///
    /// # Errors
    /// What is wrong with it: not base64, a truncated entry, an unknown tag, text that
    /// is not UTF-8, or more (or longer) ids than a list may carry.
    pub fn unpack(text: &str) -> Result<IdList, String> {
        let bytes = STANDARD_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|e| format!("not base64: {e}"))?;
        let mut ids = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            if ids.len() == MAX_IDS {
                return Err(format!("more than {MAX_IDS} ids"));
            }
            let tag = bytes[at];
            at += 1;
            match tag {
                TAG_UUID => {
                    let raw: [u8; 16] = bytes
                        .get(at..at + 16)
                        .and_then(|b| b.try_into().ok())
                        .ok_or("a UUID entry cut short")?;
                    at += 16;
                    ids.push(uuid::Uuid::from_bytes(raw).hyphenated().to_string());
                }
                TAG_TEXT => {
                    let (len, used) = varint(&bytes[at..]).ok_or("a length cut short")?;
                    at += used;
                    let len = usize::try_from(len)
                        .ok()
                        .filter(|l| *l <= MAX_ID_BYTES)
                        .ok_or_else(|| format!("an id longer than {MAX_ID_BYTES} bytes"))?;
                    let raw = bytes.get(at..at + len).ok_or("an id cut short")?;
                    at += len;
                    let id = std::str::from_utf8(raw).map_err(|_| "an id that is not UTF-8")?;
                    ids.push(id.to_owned());
                }
                other => return Err(format!("unknown entry tag {other}")),
            }
        }
        Ok(IdList(ids))
    }
}

/// The UUID's bytes when `id` is exactly its lowercase hyphenated text.
fn uuid_bytes(id: &str) -> Option<[u8; 16]> {
    if id.len() != 36 {
        return None;
    }
    let parsed = uuid::Uuid::try_parse(id).ok()?;
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    (parsed.hyphenated().encode_lower(&mut buf) as &str == id).then(|| *parsed.as_bytes())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint and the bytes it took.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

impl Serialize for IdList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.pack())
    }
}

impl<'de> Deserialize<'de> for IdList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IdList, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        IdList::unpack(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_uuids_and_other_ids_exactly() {
        let ids = vec![
            "0b6a3e1c-6f0e-4a43-9d38-2b1f0c2d9e11".to_owned(),
            // Upper case and braces are not the canonical text: kept as text.
            "0B6A3E1C-6F0E-4A43-9D38-2B1F0C2D9E11".to_owned(),
            "{0b6a3e1c-6f0e-4a43-9d38-2b1f0c2d9e11}".to_owned(),
            "note-1".to_owned(),
            "é".repeat(200),
            String::new(),
        ];
        let list = IdList(ids.clone());
        let packed = list.pack();
        assert_eq!(IdList::unpack(&packed).unwrap().0, ids);
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(serde_json::from_str::<IdList>(&json).unwrap(), list);
    }

    #[test]
    fn a_uuid_costs_about_23_characters() {
        let ids: Vec<String> = (0..1000)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let packed = IdList(ids).pack();
        assert!(packed.len() <= 1000 * 23, "{} characters", packed.len());
    }

    #[test]
    fn hostile_lists_are_refused_with_a_reason() {
        let b64 = |b: &[u8]| STANDARD_NO_PAD.encode(b);
        for (text, why) in [
            ("!!!".to_owned(), "not base64"),
            (b64(&[TAG_UUID, 1, 2]), "cut short"),
            (b64(&[TAG_TEXT, 5, b'a']), "cut short"),
            (b64(&[TAG_TEXT, 0xff, 0xff, 0xff, 0x7f]), "longer than"),
            (b64(&[TAG_TEXT, 1, 0xff]), "not UTF-8"),
            (b64(&[9]), "unknown entry tag"),
        ] {
            let err = IdList::unpack(&text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
        let many = [TAG_TEXT, 0].repeat(MAX_IDS + 1);
        assert!(IdList::unpack(&b64(&many))
            .unwrap_err()
            .contains("more than"));
    }
}
