//! The sandboxed Rhai engine scripts run in, the helpers they can call, and how a
//! delta and a link look from inside a script.
//!
//! Sandbox: no modules (`import` fails), no `eval`, `print`/`debug` go to the log,
//! and hard limits on operations, call depth, expression depth, string, array and map
//! sizes. A script that loops forever runs out of operations within milliseconds.

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position};

use crate::delta::now_millis;

/// Operations one evaluation may take: a few milliseconds of work.
pub const MAX_OPERATIONS: u64 = 200_000;
/// Wall time one evaluation may take. Operations alone do not bound time: a single
/// operation on a large string or array can take milliseconds.
pub const MAX_EVAL_TIME: std::time::Duration = std::time::Duration::from_millis(50);

thread_local! {
    /// When the evaluation running on this thread must stop (see [`with_deadline`]).
    static DEADLINE: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// Runs one evaluation, which began at `started`, under the wall-time limit. (The caller
/// times the evaluation anyway: one clock read serves both.)
pub(crate) fn with_deadline<T>(started: std::time::Instant, eval: impl FnOnce() -> T) -> T {
    DEADLINE.set(Some(started + MAX_EVAL_TIME));
    let result = eval();
    DEADLINE.set(None);
    result
}
const MAX_CALL_LEVELS: usize = 32;
const MAX_EXPR_DEPTH: usize = 64;
const MAX_STRING_SIZE: usize = 64 * 1024;
const MAX_ARRAY_SIZE: usize = 10_000;
const MAX_MAP_SIZE: usize = 10_000;

/// What a `reject(reason)` call throws: the evaluation stops with this reason.
#[derive(Debug, Clone)]
pub(crate) struct Rejection(pub String);

/// The link a delta arrives on or leaves by, as scripts see it (`link.name`...).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LinkContext {
    pub id: String,
    pub name: String,
    pub remote_system: String,
    pub remote_url: String,
    /// `push`, `pull` or `bidirectional`.
    pub mode: String,
    /// `inbound` or `outbound`.
    pub direction: String,
}

impl LinkContext {
    pub(crate) fn to_dynamic(&self) -> Dynamic {
        let mut m = Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("name".into(), self.name.clone().into());
        m.insert("remote_system".into(), self.remote_system.clone().into());
        m.insert("remote_url".into(), self.remote_url.clone().into());
        m.insert("mode".into(), self.mode.clone().into());
        m.insert("direction".into(), self.direction.clone().into());
        m.into()
    }
}

/// The engine every script is compiled and run with.
pub fn sandboxed_engine() -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(MAX_OPERATIONS)
        .set_max_call_levels(MAX_CALL_LEVELS)
        .set_max_expr_depths(MAX_EXPR_DEPTH, MAX_EXPR_DEPTH)
        .set_max_string_size(MAX_STRING_SIZE)
        .set_max_array_size(MAX_ARRAY_SIZE)
        .set_max_map_size(MAX_MAP_SIZE)
        .set_max_modules(0)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
        .set_strict_variables(true);
    engine.disable_symbol("eval");
    // Checked every few operations: reading the clock on each would cost more than most ops.
    engine.on_progress(|ops| {
        if ops % 16 != 0 {
            return None;
        }
        let late = DEADLINE
            .get()
            .is_some_and(|d| std::time::Instant::now() > d);
        late.then(|| Dynamic::from("time limit"))
    });
    engine.on_print(|s| tracing::info!(target: "rhizome::policy::script", "{s}"));
    engine.on_debug(|s, src, pos| {
        tracing::debug!(target: "rhizome::policy::script", source = src.unwrap_or(""), %pos, "{s}")
    });

    // reject(reason): stop here and refuse the delta with this reason.
    engine.register_fn(
        "reject",
        |reason: ImmutableString| -> Result<bool, Box<EvalAltResult>> {
            Err(Box::new(EvalAltResult::ErrorRuntime(
                Dynamic::from(Rejection(reason.to_string())),
                Position::NONE,
            )))
        },
    );
    engine.register_fn("accept", || true);
    super::script_delta::register(&mut engine);
    // `string in [strings]` compares in Rust instead of calling `==` per item through the
    // engine (each such call clones the engine's state and resolves `==` afresh: 16 items
    // cost more than the rest of a script). Items of other types still go through `==`.
    engine.register_fn(
        "contains",
        |ctx: rhai::NativeCallContext,
         array: &mut rhai::Array,
         value: ImmutableString|
         -> Result<bool, Box<EvalAltResult>> {
            for item in array.iter_mut() {
                let same = item.read_lock::<ImmutableString>().map(|s| *s == value);
                let equal = match same {
                    Some(same) => same,
                    None => generic_equals(&ctx, item, &value)?,
                };
                if equal {
                    return Ok(true);
                }
            }
            Ok(false)
        },
    );
    // now(): milliseconds since the Unix epoch.
    // Volatile: the optimizer must not fold it into a constant when compiling.
    rhai::FuncRegistration::new("now")
        .with_volatility(true)
        .register_into_engine(&mut engine, || now_millis() as i64);
    engine
}

/// `item == value` as Rhai's own array `contains` decides it: a missing `==` for two
/// different types means "not equal".
fn generic_equals(
    ctx: &rhai::NativeCallContext,
    item: &mut Dynamic,
    value: &ImmutableString,
) -> Result<bool, Box<EvalAltResult>> {
    let mut value = Dynamic::from(value.clone());
    match ctx.call_native_fn_raw("==", true, &mut [item, &mut value]) {
        Ok(v) => Ok(v.as_bool().unwrap_or(false)),
        Err(e) => match *e {
            EvalAltResult::ErrorFunctionNotFound(ref sig, ..)
                if sig.starts_with("==") && item.type_id() != value.type_id() =>
            {
                Ok(false)
            }
            _ => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{new_delta, Delta, Pointer, Target};
    use crate::policy::script_delta::ScriptDelta;

    fn eval(script: &str, d: &Delta) -> Result<Dynamic, Box<EvalAltResult>> {
        let engine = sandboxed_engine();
        let mut scope = rhai::Scope::new();
        scope.push_constant_dynamic("delta", Dynamic::from(ScriptDelta::new(d.clone())));
        scope.push_constant_dynamic("link", LinkContext::default().to_dynamic());
        engine.eval_with_scope::<Dynamic>(&mut scope, script)
    }

    #[test]
    fn helpers_see_the_delta() {
        let d = new_delta(
            "alice",
            "sys",
            vec![
                Pointer::new("verified", Target::Bool(true)),
                Pointer::new("about", Target::reference_in("prod_1", "reviews")),
                Pointer::new("rating", Target::Number(5.into())),
            ],
        );
        let yes = |s: &str| eval(s, &d).unwrap().as_bool().unwrap();
        assert!(yes(r#"has_role(delta, "verified")"#));
        assert!(!yes(r#"has_role(delta, "nope")"#));
        assert!(yes(r#"pointer(delta, "rating") == 5"#));
        assert!(yes(r#"pointer(delta, "about").context == "reviews""#));
        assert!(yes(r#"pointer(delta, "missing") == ()"#));
        assert!(yes(r#"targets(delta, "prod_1")"#));
        assert!(yes(
            r#"delta.author == "alice" && delta.timestamp <= now()"#
        ));
        assert!(yes(r#"delta.pointers.len() == 3 && link.name == """#));
    }

    #[test]
    fn string_in_array_answers_as_rhai_does() {
        let ours = sandboxed_engine();
        let rhai = Engine::new();
        for expr in [
            r#""b" in ["a", "b"]"#,
            r#""c" in ["a", "b"]"#,
            r#""a" in []"#,
            r#""1" in [1, 2]"#,
            r#""a" in ['a', ()]"#,
            r#""a" in [1, #{a: 1}, [], "a"]"#,
            r#"["a", "b"].contains("b")"#,
            r#"1 in [1, "a"]"#,
        ] {
            let a = ours.eval::<Dynamic>(expr).map(|v| v.to_string());
            let b = rhai.eval::<Dynamic>(expr).map(|v| v.to_string());
            assert_eq!(
                a.map_err(|e| e.to_string()),
                b.map_err(|e| e.to_string()),
                "{expr}"
            );
        }
    }

    #[test]
    fn the_sandbox_holds() {
        let d = new_delta("a", "s", vec![]);
        let forever = eval("loop { }", &d).unwrap_err();
        assert!(
            matches!(*forever, EvalAltResult::ErrorTooManyOperations(_)),
            "{forever}"
        );
        assert!(eval(r#"import "std" as s; true"#, &d).is_err());
        assert!(eval(r#"eval("true")"#, &d).is_err());
        assert!(eval("let s = \"x\"; loop { s += s; }", &d).is_err());
        assert!(eval("undefined_variable", &d).is_err());
        let started = std::time::Instant::now();
        let _ = eval("let x = 0; while true { x += 1; }", &d);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
