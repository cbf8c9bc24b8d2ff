//! The delta as scripts see it: a read-only, map-like value that is cheap to hand out.
//!
//! Turning every delta into a Rhai `Map` (and every helper call deep-copying that map)
//! cost more than evaluating the scripts. A [`ScriptDelta`] is an `Arc` around the delta:
//! passing it to a script, a helper or a function is a reference-count increment, and
//! each field is turned into a Rhai value only when a script reads it.
//!
//! It must behave exactly as the map it replaces (`#{id, timestamp, author, system,
//! pointers, signer}`), since operators' scripts were written against that map:
//! - `delta.author`, `delta["author"]`, `type_of(delta)` (`"map"`);
//! - except one thing: reading a field a delta does not have (`delta.autor`) is an error
//!   that names the field and lists those it has, where a map gave `()`: a misspelt field
//!   would otherwise quietly compare unequal and reject (or accept) every delta. Asking
//!   whether a field is there stays possible (`"x" in delta`, `delta.get("x")`);
//! - every map function of Rhai's standard library (`keys`, `len`, `in`, `==`, `to_json`,
//!   printing...) runs on the equivalent map, built on first use;
//! - it is read-only: assigning to `delta` was an error (a constant) and still is; a
//!   copy (`let d = delta;`) is read-only too, where a copied map could be changed (no
//!   policy needs that; the README says so). Map functions that change a map (`remove`,
//!   `+=`...) still work on a copy, which then becomes that map.
//!
//! `signer` is the key that signed the delta (base64url), or `()`. At ingestion it is
//! the key verification found ([`ScriptDelta::verified`]); for a delta already stored
//! (push filters) it is the key its signature names, verified when it came in.
//!
//! `tests` below checks this against the plain map, expression by expression.

use std::any::TypeId;
use std::sync::{Arc, OnceLock};

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, ImmutableString, Map, NativeCallContext};

use ed25519_dalek::VerifyingKey;

use crate::delta::{Delta, Pointer, Target};
use crate::identity::{key_text, parse_any_key};

/// A delta shared with scripts; clones share it.
#[derive(Clone)]
pub struct ScriptDelta(Arc<Lazy>);

/// The delta and the Rhai values built from it so far (each at most once per delta, then
/// shared by every script that judges it).
struct Lazy {
    delta: Delta,
    id: OnceLock<ImmutableString>,
    author: OnceLock<ImmutableString>,
    system: OnceLock<ImmutableString>,
    pointers: OnceLock<rhai::Array>,
    map: OnceLock<Map>,
    /// The signer's key, base64url; `None` inside for an unsigned delta.
    signer: OnceLock<Option<ImmutableString>>,
}

/// The fields a delta has, in the order scripts list them.
const FIELDS: [&str; 6] = ["id", "timestamp", "author", "system", "pointers", "signer"];

impl ScriptDelta {
    /// A delta already stored: its signer is the key its signature names (checked when
    /// it came in), read only if a script asks.
    pub fn new(delta: Delta) -> ScriptDelta {
        ScriptDelta::with_signer(delta, OnceLock::new())
    }

    /// A delta whose signature was just checked: `signer` is what verification found.
    pub fn verified(delta: Delta, signer: Option<&VerifyingKey>) -> ScriptDelta {
        ScriptDelta::with_signer(
            delta,
            OnceLock::from(signer.map(|k| ImmutableString::from(key_text(k)))),
        )
    }

    fn with_signer(delta: Delta, signer: OnceLock<Option<ImmutableString>>) -> ScriptDelta {
        ScriptDelta(Arc::new(Lazy {
            delta,
            id: OnceLock::new(),
            author: OnceLock::new(),
            system: OnceLock::new(),
            pointers: OnceLock::new(),
            map: OnceLock::new(),
            signer,
        }))
    }

    fn signer(&self) -> Option<ImmutableString> {
        let l = &self.0;
        l.signer
            .get_or_init(|| {
                l.delta
                    .claimed_signer()
                    .map(|k| ImmutableString::from(key_text(&k)))
            })
            .clone()
    }

    fn signer_value(&self) -> Dynamic {
        self.signer().map_or(Dynamic::UNIT, Dynamic::from)
    }

    fn id(&self) -> ImmutableString {
        let l = &self.0;
        l.id.get_or_init(|| l.delta.id.as_str().into()).clone()
    }

    fn author(&self) -> ImmutableString {
        let l = &self.0;
        l.author
            .get_or_init(|| l.delta.author.as_str().into())
            .clone()
    }

    fn system(&self) -> ImmutableString {
        let l = &self.0;
        l.system
            .get_or_init(|| l.delta.system.as_str().into())
            .clone()
    }

    fn timestamp(&self) -> i64 {
        // Rhai integers are i64: saturate rather than wrap a huge timestamp to a negative one.
        i64::try_from(self.0.delta.timestamp).unwrap_or(i64::MAX)
    }

    /// A fresh copy each time: a script may change the array it was given.
    fn pointers(&self) -> rhai::Array {
        let l = &self.0;
        l.pointers
            .get_or_init(|| l.delta.pointers.iter().map(pointer_to_dynamic).collect())
            .clone()
    }

    /// What `delta[key]` and `delta.key` give: the field's value, or an error naming
    /// the field when a delta has no such field.
    fn get(&self, key: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        Ok(match key {
            "id" => self.id().into(),
            "timestamp" => Dynamic::from_int(self.timestamp()),
            "author" => self.author().into(),
            "system" => self.system().into(),
            "pointers" => self.pointers().into(),
            "signer" => self.signer_value(),
            _ => {
                return Err(EvalAltResult::ErrorRuntime(
                    format!("delta has no field `{key}` (fields: {})", FIELDS.join(", ")).into(),
                    rhai::Position::NONE,
                )
                .into())
            }
        })
    }

    /// The delta as a plain Rhai map (what `to_map` / `to_json` give a script).
    fn to_map(&self) -> Map {
        let l = &self.0;
        l.map
            .get_or_init(|| {
                let mut m = Map::new();
                for key in FIELDS {
                    m.insert(key.into(), self.get(key).unwrap_or(Dynamic::UNIT));
                }
                m
            })
            .clone()
    }

    fn has_role(&self, role: &str) -> bool {
        self.0.delta.pointers.iter().any(|p| p.role == role)
    }

    fn pointer(&self, role: &str) -> Dynamic {
        self.0
            .delta
            .pointers
            .iter()
            .find(|p| p.role == role)
            .map_or(Dynamic::UNIT, |p| target_to_dynamic(&p.target))
    }

    fn targets(&self, id: &str) -> bool {
        self.0
            .delta
            .pointers
            .iter()
            .any(|p| matches!(&p.target, Target::Reference(r) if r.id == id))
    }
}

fn pointer_to_dynamic(p: &Pointer) -> Dynamic {
    let mut pm = Map::new();
    pm.insert("role".into(), p.role.as_str().into());
    pm.insert("target".into(), target_to_dynamic(&p.target));
    Dynamic::from_map(pm)
}

fn target_to_dynamic(t: &Target) -> Dynamic {
    match t {
        Target::Reference(r) => {
            let mut m = Map::new();
            m.insert("id".into(), r.id.as_str().into());
            if let Some(c) = &r.context {
                m.insert("context".into(), c.as_str().into());
            }
            m.into()
        }
        Target::String(s) => s.as_str().into(),
        Target::Bool(b) => (*b).into(),
        Target::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
    }
}

/// The helpers' answers for a delta given as a map: a copy of `delta` a script changed,
/// or a map it built itself.
fn pointer_maps(delta: &Map) -> impl Iterator<Item = Map> + '_ {
    delta
        .get("pointers")
        .and_then(|p| p.read_lock::<rhai::Array>().map(|a| a.clone()))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.try_cast::<Map>())
}

fn role_of(p: &Map) -> String {
    p.get("role").map(|r| r.to_string()).unwrap_or_default()
}

/// Rhai's map functions, by name and the types of their other parameters, that a
/// [`ScriptDelta`] answers as its map would; `true` when the function changes the map.
fn map_functions() -> Vec<(&'static str, Vec<TypeId>, bool)> {
    let s = TypeId::of::<ImmutableString>();
    let m = TypeId::of::<Map>();
    let f = TypeId::of::<FnPtr>();
    let any = TypeId::of::<Dynamic>();
    vec![
        ("len", vec![], false),
        ("is_empty", vec![], false),
        ("contains", vec![s], false),
        ("get", vec![s], false),
        ("keys", vec![], false),
        ("values", vec![], false),
        ("to_json", vec![], false),
        ("to_string", vec![], false),
        ("to_debug", vec![], false),
        ("print", vec![], false),
        ("debug", vec![], false),
        ("==", vec![m], false),
        ("!=", vec![m], false),
        ("+", vec![m], false),
        ("map", vec![f], false),
        ("filter", vec![f], false),
        ("set", vec![s, any], true),
        ("clear", vec![], true),
        ("remove", vec![s], true),
        ("mixin", vec![m], true),
        ("+=", vec![m], true),
        ("fill_with", vec![m], true),
        ("drain", vec![f], true),
        ("retain", vec![f], true),
    ]
}

/// The delta's map when `v` is a [`ScriptDelta`].
fn as_map(v: &Dynamic) -> Option<Map> {
    v.read_lock::<ScriptDelta>().map(|d| d.to_map())
}

/// Calls the map function `name` with each delta among `args` replaced by its map. A
/// function that changes its first argument turns the variable holding the delta into
/// that map first, so the change lands where it would have on a map (and a constant
/// refuses it, as a map does).
fn call_on_map(
    ctx: &NativeCallContext,
    name: &str,
    mutates: bool,
    args: &mut [&mut Dynamic],
) -> Result<Dynamic, Box<EvalAltResult>> {
    let args_len = args.len();
    let mut copies: Vec<Dynamic> = args
        .iter()
        .map(|a| as_map(a).map_or(Dynamic::UNIT, Dynamic::from_map))
        .collect();
    let Some((first, rest)) = args.split_first_mut() else {
        return Ok(Dynamic::UNIT);
    };
    let Some((first_copy, rest_copies)) = copies.split_first_mut() else {
        return Ok(Dynamic::UNIT);
    };
    let mut call_args: Vec<&mut Dynamic> = Vec::with_capacity(args_len);
    if mutates && first.is::<ScriptDelta>() {
        if first.is_read_only() {
            return Err(Box::new(EvalAltResult::ErrorNonPureMethodCallOnConstant(
                name.to_owned(),
                ctx.call_position(),
            )));
        }
        **first = std::mem::take(first_copy);
    }
    if mutates || !first_copy.is_map() {
        call_args.push(&mut **first);
    } else {
        call_args.push(first_copy);
    }
    for (arg, copy) in rest.iter_mut().zip(rest_copies.iter_mut()) {
        call_args.push(if copy.is_map() { copy } else { &mut **arg });
    }
    ctx.call_native_fn_raw(name, true, &mut call_args)
}

/// Registers [`ScriptDelta`] and the helpers scripts call on a delta.
pub fn register(engine: &mut Engine) {
    // Named "map": `type_of(delta)` and error messages read as they did for the map.
    engine.register_type_with_name::<ScriptDelta>("map");
    engine.register_get("id", |d: &mut ScriptDelta| d.id());
    engine.register_get("timestamp", |d: &mut ScriptDelta| d.timestamp());
    engine.register_get("author", |d: &mut ScriptDelta| d.author());
    engine.register_get("system", |d: &mut ScriptDelta| d.system());
    engine.register_get("pointers", |d: &mut ScriptDelta| d.pointers());
    engine.register_get("signer", |d: &mut ScriptDelta| d.signer_value());
    // Any other property (`delta.x`) falls back to this indexer, which refuses it.
    engine.register_indexer_get(|d: &mut ScriptDelta, key: ImmutableString| d.get(&key));
    for (name, rest, mutates) in map_functions() {
        let mut types = vec![TypeId::of::<ScriptDelta>()];
        types.extend(rest);
        engine.register_raw_fn(name, types, move |ctx, args| {
            call_on_map(&ctx, name, mutates, args)
        });
    }
    // Functions of two maps, with the delta second (or as both).
    let (sd, m) = (TypeId::of::<ScriptDelta>(), TypeId::of::<Map>());
    for (name, types, mutates) in [
        ("==", [sd, sd], false),
        ("!=", [sd, sd], false),
        ("+", [sd, sd], false),
        ("==", [m, sd], false),
        ("!=", [m, sd], false),
        ("+", [m, sd], false),
        ("mixin", [m, sd], true),
        ("+=", [m, sd], true),
        ("fill_with", [m, sd], true),
        ("mixin", [sd, sd], true),
        ("+=", [sd, sd], true),
        ("fill_with", [sd, sd], true),
    ] {
        engine.register_raw_fn(name, types, move |ctx, args| {
            call_on_map(&ctx, name, mutates, args)
        });
    }

    // has_role(delta, role): does any pointer have this role?
    engine.register_fn("has_role", |d: &mut ScriptDelta, role: &str| {
        d.has_role(role)
    });
    // pointer(delta, role): the target of the first pointer with this role, or ().
    engine.register_fn("pointer", |d: &mut ScriptDelta, role: &str| d.pointer(role));
    // targets(delta, id): does any pointer reference the entity `id`?
    engine.register_fn("targets", |d: &mut ScriptDelta, id: &str| d.targets(id));
    // signed(delta): did a key sign it (and the signature verify)?
    engine.register_fn("signed", |d: &mut ScriptDelta| d.signer().is_some());
    // signed_by(delta, key): was it signed by `key` (base64url or hex)?
    engine.register_fn("signed_by", |d: &mut ScriptDelta, key: &str| {
        d.signer()
            .is_some_and(|s| parse_any_key(key).is_ok_and(|k| key_text(&k) == s.as_str()))
    });
    // The same on a map: what a script built or changed carries no verified signature.
    engine.register_fn("signed", |_: &mut Map| false);
    engine.register_fn("signed_by", |_: &mut Map, _: &str| false);
    // The same on a map (a changed copy of `delta`, or one a script built). `&mut`: read
    // in place rather than copied for the call.
    engine.register_fn("has_role", |delta: &mut Map, role: &str| {
        pointer_maps(delta).any(|p| role_of(&p) == role)
    });
    engine.register_fn("pointer", |delta: &mut Map, role: &str| -> Dynamic {
        pointer_maps(delta)
            .find(|p| role_of(p) == role)
            .and_then(|p| p.get("target").cloned())
            .unwrap_or(Dynamic::UNIT)
    });
    engine.register_fn("targets", |delta: &mut Map, id: &str| {
        pointer_maps(delta).any(|p| {
            p.get("target")
                .and_then(|t| t.read_lock::<Map>().map(|m| m.clone()))
                .and_then(|m| m.get("id").map(|v| v.to_string()))
                .is_some_and(|t| t == id)
        })
    });
}

#[cfg(test)]
mod tests;
