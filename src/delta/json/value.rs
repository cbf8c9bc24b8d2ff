//! The `Value` path: parsed JSON -> [`Delta`], naming the field at fault.
//!
//! Every message a user reads about a delta's shape is worded here. Type problems are
//! reported here; rule problems (empty strings, zero timestamp) are left to `validate`,
//! which also covers deltas built in code.

use serde_json::{Map, Number, Value};

use crate::delta::{Delta, InvalidDelta, Pointer, Reference, Target};

const KNOWN_FIELDS: [&str; 5] = ["id", "timestamp", "author", "system", "pointers"];

/// The delta a value is shaped like, not validated.
pub(crate) fn delta_from_value(value: &Value) -> Result<Delta, InvalidDelta> {
    let obj = value.as_object().ok_or_else(|| {
        InvalidDelta::new(
            "",
            format!("a delta must be a JSON object, got {}", kind(value)),
        )
    })?;
    let pointers = match obj.get("pointers") {
        None => return Err(InvalidDelta::new("pointers", "is required")),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, p)| pointer_from_value(p, &format!("pointers[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(InvalidDelta::new(
                "pointers",
                format!("must be an array, got {}", kind(other)),
            ))
        }
    };
    let extra: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| !KNOWN_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Delta {
        id: required_string(obj, "id", "id")?,
        timestamp: timestamp(obj)?,
        author: required_string(obj, "author", "author")?,
        system: required_string(obj, "system", "system")?,
        pointers,
        extra,
    })
}

fn timestamp(obj: &Map<String, Value>) -> Result<u64, InvalidDelta> {
    match obj.get("timestamp") {
        None => Err(InvalidDelta::new("timestamp", "is required")),
        Some(Value::Number(n)) => timestamp_of(n),
        Some(other) => Err(InvalidDelta::new(
            "timestamp",
            format!("must be a number, got {}", kind(other)),
        )),
    }
}

/// The timestamp a number stands for; shared with the typed reader so both accept the same.
pub(super) fn timestamp_of(n: &Number) -> Result<u64, InvalidDelta> {
    if let Some(v) = n.as_u64() {
        Ok(v)
    } else if n.as_i64().is_some() {
        Err(InvalidDelta::new(
            "timestamp",
            format!("must be positive, got {n}"),
        ))
    } else {
        // A float: accept it when it is a whole number of milliseconds.
        match n.as_f64() {
            Some(f) if f > 0.0 && f.fract() == 0.0 && f < 9.0e15 => Ok(f as u64),
            Some(f) if f <= 0.0 => Err(InvalidDelta::new(
                "timestamp",
                format!("must be positive, got {n}"),
            )),
            _ => Err(InvalidDelta::new(
                "timestamp",
                format!("must be a whole number of milliseconds, got {n}"),
            )),
        }
    }
}

fn pointer_from_value(value: &Value, path: &str) -> Result<Pointer, InvalidDelta> {
    let obj = value.as_object().ok_or_else(|| {
        InvalidDelta::new(
            path,
            format!("a pointer must be an object, got {}", kind(value)),
        )
    })?;
    if obj.contains_key("role") {
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "role" | "target"))
        {
            return Err(InvalidDelta::new(
                format!("{path}.{k}"),
                "is not a pointer field (expected role and target)",
            ));
        }
        let role = required_string(obj, "role", &format!("{path}.role"))?;
        let target = match obj.get("target") {
            Some(t) => target_from_value(t, &format!("{path}.target"))?,
            None => return Err(InvalidDelta::new(format!("{path}.target"), "is required")),
        };
        return Ok(Pointer { role, target });
    }
    if obj.contains_key("localContext") {
        return legacy_pointer(obj, path);
    }
    Err(InvalidDelta::new(format!("{path}.role"), "is required"))
}

/// `{"localContext": ROLE, "target": PRIMITIVE | {"id": ID}, "targetContext"?: CONTEXT}`.
fn legacy_pointer(obj: &Map<String, Value>, path: &str) -> Result<Pointer, InvalidDelta> {
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "localContext" | "target" | "targetContext"))
    {
        return Err(InvalidDelta::new(
            format!("{path}.{k}"),
            "is not a legacy pointer field (expected localContext, target, targetContext)",
        ));
    }
    let role = required_string(obj, "localContext", &format!("{path}.localContext"))?;
    let target_path = format!("{path}.target");
    let mut target = match obj.get("target") {
        Some(t) => target_from_value(t, &target_path)?,
        None => return Err(InvalidDelta::new(target_path, "is required")),
    };
    if let Some(ctx) = obj.get("targetContext") {
        let ctx_path = format!("{path}.targetContext");
        let ctx = ctx.as_str().ok_or_else(|| {
            InvalidDelta::new(&ctx_path, format!("must be a string, got {}", kind(ctx)))
        })?;
        match &mut target {
            Target::Reference(r) if r.context.is_none() => r.context = Some(ctx.to_owned()),
            Target::Reference(_) => {
                return Err(InvalidDelta::new(ctx_path, "conflicts with target.context"));
            }
            _ => {
                return Err(InvalidDelta::new(
                    ctx_path,
                    "applies only to a reference target ({\"id\": ...})",
                ))
            }
        }
    }
    Ok(Pointer { role, target })
}

pub(super) fn target_from_value(value: &Value, path: &str) -> Result<Target, InvalidDelta> {
    match value {
        Value::String(s) => Ok(Target::String(s.clone())),
        Value::Number(n) => Ok(Target::Number(n.clone())),
        Value::Bool(b) => Ok(Target::Bool(*b)),
        Value::Object(obj) => {
            if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "id" | "context")) {
                return Err(InvalidDelta::new(
                    format!("{path}.{k}"),
                    "is not a reference field (a reference is {\"id\", \"context\"?})",
                ));
            }
            let id = required_string(obj, "id", &format!("{path}.id"))?;
            let context = match obj.get("context") {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    return Err(InvalidDelta::new(
                        format!("{path}.context"),
                        format!("must be a string, got {}", kind(other)),
                    ))
                }
            };
            Ok(Target::Reference(Reference { id, context }))
        }
        Value::Null | Value::Array(_) => Err(InvalidDelta::new(
            path,
            format!("must be a reference {{\"id\", \"context\"?}}, a string, a number or a boolean, got {}", kind(value)),
        )),
    }
}

fn required_string(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<String, InvalidDelta> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(InvalidDelta::new(
            path,
            format!("must be a string, got {}", kind(other)),
        )),
        None => Err(InvalidDelta::new(path, "is required")),
    }
}

/// A short name of a JSON value's type, for error messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
