//! The typed reader: JSON text -> [`Delta`] in one serde pass, no `Value` per delta.
//!
//! It accepts only what the `Value` path (`value.rs`) accepts, and builds the same
//! `Delta` from it. Anything else, including duplicate keys (the `Value` path keeps the
//! last one), makes it give up with a placeholder error: callers then run the `Value`
//! path, which stays the single source of the messages users read. So this file never
//! has to word an error, only to be no more lenient than `value.rs`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::value;
use crate::delta::{Delta, Pointer, Reference, Target};

/// serde_json's private map keys (`arbitrary_precision`, `raw_value`): a number that is
/// not a 64-bit integer reaches `deserialize_any` as a one-entry map under the first, and `Value` gives either key a
/// meaning when an object starts with it. We read numbers through the first and leave
/// every other use of them to the `Value` path.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";
const RAW_TOKEN: &str = "$serde_json::private::RawValue";

/// The placeholder error: never shown, the `Value` path words the real one.
pub(crate) fn give_up<E: de::Error>() -> E {
    E::custom("left to the Value path")
}

/// The fields of a delta object as read; `id`, `timestamp` and `system` may be absent
/// for the HTTP authoring shorthand, which fills them in.
#[derive(Debug, Default)]
pub(super) struct Parts {
    pub id: Option<String>,
    pub timestamp: Option<u64>,
    pub author: Option<String>,
    pub system: Option<String>,
    pub pointers: Option<Vec<Pointer>>,
    pub extra: Map<String, Value>,
}

impl Parts {
    /// The delta when every field is present (not validated).
    pub(super) fn into_delta(self) -> Option<Delta> {
        Some(Delta {
            id: self.id?,
            timestamp: self.timestamp?,
            author: self.author?,
            system: self.system?,
            pointers: self.pointers?,
            extra: self.extra,
        })
    }
}

/// Decodes one delta from JSON text (not validated); `None` when the `Value` path must judge it.
pub(super) fn delta_from_str(text: &str) -> Option<Delta> {
    let mut de = serde_json::Deserializer::from_str(text);
    let parts = PartsSeed.deserialize(&mut de).ok()?;
    de.end().ok()?;
    parts.into_delta()
}

/// An HTTP body: one delta object or an array of them, each possibly the authoring
/// shorthand. `None` when the `Value` path must judge it; the flag says it was an array.
pub(super) fn items_from_str(text: &str) -> Option<(Vec<Parts>, bool)> {
    struct Body;
    impl<'de> Visitor<'de> for Body {
        type Value = (Vec<Parts>, bool);
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a delta or an array of deltas")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(p) = seq.next_element_seed(PartsSeed)? {
                items.push(p);
            }
            Ok((items, true))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Ok((vec![PartsVisitor.visit_map(map)?], false))
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let body = de.deserialize_any(Body).ok()?;
    de.end().ok()?;
    Some(body)
}

/// A delta read by the typed reader inside a larger typed structure (a frame).
/// Fails (placeholder error) where the `Value` path must judge.
pub(crate) struct TypedDelta(pub Delta);

impl<'de> de::Deserialize<'de> for TypedDelta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TypedDelta, D::Error> {
        PartsSeed
            .deserialize(d)?
            .into_delta()
            .map(TypedDelta)
            .ok_or_else(give_up)
    }
}

/// A map key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Reads a map key; gives up on serde_json's private tokens.
pub(crate) fn next_key<'de, A: MapAccess<'de>>(
    map: &mut A,
) -> Result<Option<Cow<'de, str>>, A::Error> {
    match map.next_key::<Key<'de>>()? {
        Some(Key(k)) if k == NUMBER_TOKEN || k == RAW_TOKEN => Err(give_up()),
        Some(Key(k)) => Ok(Some(k)),
        None => Ok(None),
    }
}

/// Sets a field read once; a second occurrence gives up (the `Value` path keeps the last).
pub(crate) fn set_once<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(give_up());
    }
    Ok(())
}

struct PartsSeed;

impl<'de> DeserializeSeed<'de> for PartsSeed {
    type Value = Parts;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Parts, D::Error> {
        d.deserialize_map(PartsVisitor)
    }
}

struct PartsVisitor;

impl<'de> Visitor<'de> for PartsVisitor {
    type Value = Parts;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a delta object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parts, A::Error> {
        let mut p = Parts::default();
        while let Some(key) = next_key(&mut map)? {
            match &*key {
                "id" => set_once(&mut p.id, map.next_value()?)?,
                "author" => set_once(&mut p.author, map.next_value()?)?,
                "system" => set_once(&mut p.system, map.next_value()?)?,
                "timestamp" => {
                    let n: Number = map.next_value()?;
                    let ts = value::timestamp_of(&n).map_err(|_| give_up::<A::Error>())?;
                    set_once(&mut p.timestamp, ts)?;
                }
                "pointers" => {
                    let pointers: Vec<TypedPointer> = map.next_value()?;
                    let pointers = pointers.into_iter().map(|p| p.0).collect();
                    set_once(&mut p.pointers, pointers)?;
                }
                _ => {
                    let value: Value = map.next_value()?;
                    if p.extra.insert(key.into_owned(), value).is_some() {
                        return Err(give_up());
                    }
                }
            }
        }
        Ok(p)
    }
}

/// A pointer in the current (`role`, `target`) or the legacy (`localContext`, `target`,
/// `targetContext`?) form, nothing else.
struct TypedPointer(Pointer);

impl<'de> de::Deserialize<'de> for TypedPointer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TypedPointer, D::Error> {
        d.deserialize_map(PointerVisitor)
    }
}

struct PointerVisitor;

impl<'de> Visitor<'de> for PointerVisitor {
    type Value = TypedPointer;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a pointer object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TypedPointer, A::Error> {
        let (mut role, mut local, mut target, mut target_context) = (None, None, None, None);
        while let Some(key) = next_key(&mut map)? {
            match &*key {
                "role" => set_once(&mut role, map.next_value::<String>()?)?,
                "localContext" => set_once(&mut local, map.next_value::<String>()?)?,
                "target" => set_once(&mut target, map.next_value::<TypedTarget>()?.0)?,
                "targetContext" => set_once(&mut target_context, map.next_value::<String>()?)?,
                _ => return Err(give_up()),
            }
        }
        let target = target.ok_or_else(give_up)?;
        match (role, local, target_context) {
            (Some(role), None, None) => Ok(TypedPointer(Pointer { role, target })),
            (None, Some(role), None) => Ok(TypedPointer(Pointer { role, target })),
            (None, Some(role), Some(ctx)) => match target {
                Target::Reference(Reference { id, context: None }) => Ok(TypedPointer(Pointer {
                    role,
                    target: Target::Reference(Reference {
                        id,
                        context: Some(ctx),
                    }),
                })),
                _ => Err(give_up()),
            },
            _ => Err(give_up()),
        }
    }
}

/// A reference `{"id", "context"?}`, a string, a number (kept as written) or a boolean.
struct TypedTarget(Target);

impl<'de> de::Deserialize<'de> for TypedTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TypedTarget, D::Error> {
        d.deserialize_any(TargetVisitor)
    }
}

struct TargetVisitor;

impl<'de> Visitor<'de> for TargetVisitor {
    type Value = TypedTarget;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a pointer target")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<TypedTarget, E> {
        Ok(TypedTarget(Target::String(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<TypedTarget, E> {
        Ok(TypedTarget(Target::String(s)))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<TypedTarget, E> {
        Ok(TypedTarget(Target::Bool(b)))
    }
    // serde_json hands over integers that fit 64 bits as such (as `Value` takes them:
    // their digits are the ones written, JSON has no leading zeros and `-0` comes as
    // text), and every other number as text under `NUMBER_TOKEN`.
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<TypedTarget, E> {
        Ok(TypedTarget(Target::Number(n.into())))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<TypedTarget, E> {
        Ok(TypedTarget(Target::Number(n.into())))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TypedTarget, A::Error> {
        let (mut id, mut context) = (None, None);
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match &*key {
                // How serde_json hands over a number: parsed as `Value` would
                // (`NumberFromString`), so the digits stay exactly as written.
                NUMBER_TOKEN if id.is_none() && context.is_none() => {
                    let digits: String = map.next_value()?;
                    let n: Number = digits.parse().map_err(|_| give_up::<A::Error>())?;
                    return Ok(TypedTarget(Target::Number(n)));
                }
                "id" => set_once(&mut id, map.next_value::<String>()?)?,
                "context" => set_once(&mut context, map.next_value::<String>()?)?,
                _ => return Err(give_up()),
            }
        }
        Ok(TypedTarget(Target::Reference(Reference {
            id: id.ok_or_else(give_up)?,
            context,
        })))
    }
}
