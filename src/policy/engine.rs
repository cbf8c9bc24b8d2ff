//! The sandboxed Rhai engine scripts run in, the helpers they can call, and how a
//! delta and a link look from inside a script.
//!
//! Sandbox: no modules (`import` fails), no `eval`, no `sleep`, `print`/`debug` go to
//! the log, and hard limits on operations, call depth, expression depth, string, array
//! and map sizes. A script that loops forever runs out of operations within
//! milliseconds; one whose operations are each slow runs out of its time budget.
//!
//! Scripts run once per delta on the ingestion path, so nothing in them may block:
//! `sleep` is refused when the script is compiled (the operator learns it at load time,
//! with the line), and any other slow evaluation is stopped at its time budget and
//! counted as over it (see [`TimeBudget`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position};

use crate::delta::now_millis;

/// Operations one evaluation may take: a few milliseconds of work.
pub const MAX_OPERATIONS: u64 = 200_000;

/// The wall time one evaluation may take unless configured (`scriptTimeoutMs`).
///
/// Why 50 ms: a realistic policy takes microseconds and the operation limit stops a
/// CPU-bound script within a few milliseconds, so the budget only has to catch what
/// operations do not measure (single operations on large strings or arrays). It is
/// wall time, so it also counts the time the thread is preempted: well above a
/// scheduler slice on a loaded machine, so that a busy host does not turn into false
/// rejections, and low enough that a link whose every delta times out still moves at
/// about 20 deltas a second per judging thread instead of stalling.
pub const DEFAULT_TIME_BUDGET: Duration = Duration::from_millis(50);

/// The longest budget an operator may configure: past this a script is a stall.
pub const MAX_TIME_BUDGET: Duration = Duration::from_secs(60);

/// The wall time each evaluation may take, shared by a host's successive sets so that a
/// reload keeps it and a config change reaches the set in force without a reload.
#[derive(Debug)]
pub struct TimeBudget {
    micros: AtomicU64,
}

impl Default for TimeBudget {
    fn default() -> TimeBudget {
        TimeBudget {
            micros: AtomicU64::new(DEFAULT_TIME_BUDGET.as_micros() as u64),
        }
    }
}

impl TimeBudget {
    pub fn get(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }

    /// Sets the budget, clamped to 1 ms ..= [`MAX_TIME_BUDGET`].
    pub fn set(&self, budget: Duration) {
        let budget = budget.clamp(Duration::from_millis(1), MAX_TIME_BUDGET);
        self.micros
            .store(budget.as_micros() as u64, Ordering::Relaxed);
    }
}

thread_local! {
    /// When the evaluation running on this thread must stop (see [`with_deadline`]).
    static DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Runs one evaluation under a wall-time deadline: the engine's progress callback stops
/// it once `deadline` has passed. (The caller reads the clock for its own timing anyway:
/// one clock read serves both.)
pub(crate) fn with_deadline<T>(deadline: Instant, eval: impl FnOnce() -> T) -> T {
    DEADLINE.set(Some(deadline));
    let result = eval();
    DEADLINE.set(None);
    result
}

/// Why `sleep` is refused, at compile time and (through a function pointer) at run time.
const NO_SLEEP: &str = "sleep() is not available: a script runs for every delta and must not block (each evaluation has a time budget)";

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
    /// Who the peer is, as far as this node knows (`link.peer` in scripts).
    pub peer: LinkPeer,
}

/// Who is at the other end of a link. Only what the peer *proved* makes it
/// `authenticated`; its `name` picks the scripts' folders (`policies/<name>/`...).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LinkPeer {
    /// The configured peer's name when it authenticated; the operator's name for a link
    /// this node dialed; else `anonymous`.
    pub name: String,
    /// It proved it is the configured peer `name` (a key proof or a peer token).
    pub authenticated: bool,
    /// The public key it proved possession of (lowercase hex), configured or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The name of every peer that did not prove it is a configured one.
pub const ANONYMOUS: &str = "anonymous";

impl LinkPeer {
    pub fn anonymous() -> LinkPeer {
        LinkPeer {
            name: ANONYMOUS.into(),
            ..Default::default()
        }
    }

    fn to_dynamic(&self) -> Dynamic {
        let mut m = Map::new();
        m.insert("name".into(), self.name.clone().into());
        m.insert("authenticated".into(), self.authenticated.into());
        m.insert(
            "key".into(),
            self.key.clone().map_or(Dynamic::UNIT, Dynamic::from),
        );
        m.into()
    }
}

impl LinkContext {
    /// Whose folders of scripts apply on this link: the peer's name. A context made by
    /// hand with no peer (a policy test case) is scoped by its link name.
    pub fn scope(&self) -> &str {
        if self.peer.name.is_empty() {
            &self.name
        } else {
            &self.peer.name
        }
    }

    pub(crate) fn to_dynamic(&self) -> Dynamic {
        let mut m = Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("name".into(), self.name.clone().into());
        m.insert("remote_system".into(), self.remote_system.clone().into());
        m.insert("remote_url".into(), self.remote_url.clone().into());
        m.insert("mode".into(), self.mode.clone().into());
        m.insert("direction".into(), self.direction.clone().into());
        m.insert("peer".into(), self.peer.to_dynamic());
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
        late.then(|| Dynamic::from("time budget"))
    });
    forbid_sleep(&mut engine);
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

/// `sleep` blocks the judging thread where no budget can stop it (the progress callback
/// runs between operations, and a sleep is one operation). As a keyword whose syntax
/// always fails, any use of it is a compile error at its line; calls that get past the
/// parser (`Fn("sleep").call(1)`) find this engine's own `sleep`, which shadows the
/// standard package's and fails at once.
fn forbid_sleep(engine: &mut Engine) {
    engine.register_custom_syntax_with_state_raw(
        "sleep",
        |_, _, _| {
            Err(
                rhai::LexError::ImproperSymbol("sleep".into(), NO_SLEEP.into())
                    .into_err(Position::NONE),
            )
        },
        false,
        |_, _, _| Err(NO_SLEEP.into()),
    );
    let refuse = || -> Result<(), Box<EvalAltResult>> { Err(NO_SLEEP.into()) };
    engine.register_fn("sleep", move |_: i64| refuse());
    engine.register_fn("sleep", move |_: f64| refuse());
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

    #[test]
    fn sleep_through_a_function_pointer_fails_at_once() {
        let d = new_delta("a", "s", vec![]);
        let started = Instant::now();
        let e = eval(r#"let f = Fn("sleep"); f.call(20); true"#, &d).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(e.to_string().contains("sleep() is not available"), "{e}");
    }
}
