//! A compiled set of scripts, loaded from the policies and filters folders, and how a
//! delta is judged by it.
//!
//! Layout: `policies/*.rhai` are trust policies for every link, `policies/<link>/*.rhai`
//! for the link of that name only; `filters/push/...` and `filters/pull/...` likewise.
//! For a delta on a link, the scripts that apply run in a fixed order (the shared ones,
//! then the link's own, each by file name) and the first rejection decides (AND).
//! A set is immutable once built: a reload builds a new one and swaps it whole, so each
//! delta is judged by one consistent set.

use ed25519_dalek::VerifyingKey;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, Scope, AST};
use serde::Serialize;

use super::engine::{
    sandboxed_engine, with_deadline, LinkContext, Rejection, TimeBudget, MAX_OPERATIONS,
};
use super::script_delta::ScriptDelta;
use crate::delta::Delta;

/// What a script decides about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ScriptKind {
    /// Is an incoming delta trusted? (`policies/`)
    Trust,
    /// Does a local delta go out on this link? (`filters/push/`)
    Push,
    /// Is an incoming delta kept? (`filters/pull/`)
    Pull,
}

impl ScriptKind {
    pub const ALL: [ScriptKind; 3] = [ScriptKind::Trust, ScriptKind::Push, ScriptKind::Pull];
}

/// The folders scripts are loaded from. Either may be absent (no scripts of that kind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyDirs {
    pub policies: Option<PathBuf>,
    pub filters: Option<PathBuf>,
}

impl PolicyDirs {
    /// The folders of each kind: (kind, root).
    fn roots(&self) -> Vec<(ScriptKind, PathBuf)> {
        let mut roots = Vec::new();
        if let Some(p) = &self.policies {
            roots.push((ScriptKind::Trust, p.clone()));
        }
        if let Some(f) = &self.filters {
            roots.push((ScriptKind::Push, f.join("push")));
            roots.push((ScriptKind::Pull, f.join("pull")));
        }
        roots
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_none() && self.filters.is_none()
    }
}

/// A compile error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScriptError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.file, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// One script of a set.
#[derive(Clone)]
pub struct Script {
    pub kind: ScriptKind,
    /// The link name it is limited to; `None` for every link.
    pub link: Option<String>,
    /// Its path as shown to operators (the folder it was loaded from, joined with its name).
    pub file: String,
    /// The compiled script; `None` when it never compiled (it then rejects everything
    /// in its scope: fail closed).
    ast: Option<Arc<AST>>,
    /// The last compile error; with an `ast`, the script runs its last good version.
    pub error: Option<ScriptError>,
    source_hash: u64,
    /// Evaluations of this file, kept across reloads while the file exists (shared by
    /// every version of it, so an edit does not reset the count).
    evaluations: Arc<AtomicU64>,
}

/// A script's verdict on one delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    Accept,
    Reject {
        /// The script (file) that decided.
        script: String,
        reason: String,
    },
}

impl Verdict {
    pub fn is_accept(&self) -> bool {
        matches!(self, Verdict::Accept)
    }
}

/// A delta and its link as scripts see them, shared so that each script's scope holds a
/// reference rather than a deep copy.
pub struct ScriptInput {
    delta: Dynamic,
    link: Dynamic,
}

impl ScriptInput {
    /// A stored delta (its signature was checked when it came in). `link` from
    /// `LinkContext::to_dynamic` (build it once per link and clone it).
    pub fn new(link: Dynamic, delta: &Delta) -> ScriptInput {
        ScriptInput::of(link, ScriptDelta::new(delta.clone()))
    }

    /// A delta being admitted, with the signer its verification found.
    pub fn verified(link: Dynamic, delta: &Delta, signer: Option<&VerifyingKey>) -> ScriptInput {
        ScriptInput::of(link, ScriptDelta::verified(delta.clone(), signer))
    }

    fn of(link: Dynamic, delta: ScriptDelta) -> ScriptInput {
        ScriptInput {
            delta: Dynamic::from(delta),
            link: if link.is_shared() {
                link
            } else {
                link.into_shared()
            },
        }
    }
}

/// One script's answer, for `rhizome policy eval`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptRun {
    pub file: String,
    pub kind: ScriptKind,
    pub verdict: Verdict,
    pub micros: u64,
}

/// Counters over a set's lifetime (shared across reloads by the host).
#[derive(Debug, Default)]
pub struct PolicyCounters {
    pub evaluations: AtomicU64,
    pub rejections: AtomicU64,
    /// Evaluations that failed (and rejected), time-outs aside.
    pub runtime_errors: AtomicU64,
    /// Evaluations stopped at, or found over, their time budget (and rejected).
    pub timeouts: AtomicU64,
    pub eval_nanos: AtomicU64,
    /// Rejections by script file, every file that ever rejected (a removed script's
    /// count stays, as counters never go down).
    by_script: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl PolicyCounters {
    fn count_rejection(&self, file: &str) {
        self.rejections.fetch_add(1, Ordering::Relaxed);
        let mut by_script = match self.by_script.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        match by_script.get_mut(file) {
            Some(n) => *n += 1,
            None => {
                by_script.insert(file.to_owned(), 1);
            }
        }
    }

    /// Rejections by script file.
    pub fn rejections_by_script(&self) -> BTreeMap<String, u64> {
        match self.by_script.lock() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// What `GET /policies` shows of a script.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptInfo {
    pub file: String,
    pub kind: ScriptKind,
    pub link: Option<String>,
    /// `ok`, `stale` (a newer version failed to compile; the last good one runs) or
    /// `failed` (never compiled: rejects everything in its scope).
    pub state: &'static str,
    pub error: Option<ScriptError>,
    /// Deltas it judged (since it was first loaded).
    pub evaluations: u64,
    /// Deltas it rejected (since the node started).
    pub rejections: u64,
}

pub struct PolicySet {
    engine: Arc<Engine>,
    scripts: Vec<Script>,
    hash: String,
    counters: Arc<PolicyCounters>,
    budget: Arc<TimeBudget>,
}

impl PolicySet {
    /// A set with no scripts: everything is accepted.
    pub fn empty() -> PolicySet {
        PolicySet {
            engine: Arc::new(sandboxed_engine()),
            scripts: Vec::new(),
            hash: format!("{:016x}", fnv1a(&[])),
            counters: Arc::default(),
            budget: Arc::default(),
        }
    }

    /// Loads and compiles every script under `dirs`. A script that fails to compile keeps
    /// its version from `previous` when there is one; otherwise it fails closed.
    ///
    /// # Errors
    /// Only when a folder cannot be read at all; a bad script is reported in the set.
    pub fn load(dirs: &PolicyDirs, previous: Option<&PolicySet>) -> std::io::Result<PolicySet> {
        let engine = previous.map_or_else(|| Arc::new(sandboxed_engine()), |p| p.engine.clone());
        let counters = previous.map_or_else(Arc::default, |p| p.counters.clone());
        let budget = previous.map_or_else(Arc::default, |p| p.budget.clone());
        let mut scripts = Vec::new();
        let mut hash_input = Vec::new();
        for (kind, root) in dirs.roots() {
            for (link, path) in script_files(&root)? {
                let source = std::fs::read_to_string(&path).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
                })?;
                let file = path.display().to_string();
                hash_input.extend_from_slice(file.as_bytes());
                hash_input.push(0);
                hash_input.extend_from_slice(source.as_bytes());
                hash_input.push(0);
                let source_hash = fnv1a(source.as_bytes());
                let prior = previous
                    .and_then(|p| p.scripts.iter().find(|s| s.file == file && s.kind == kind));
                let script = match prior {
                    // Unchanged: reuse the compiled script (and its error, if it never compiled).
                    Some(p) if p.source_hash == source_hash => p.clone(),
                    _ => {
                        let (ast, error) = match compile(&engine, &source) {
                            Ok(ast) => (Some(Arc::new(ast)), None),
                            Err(mut e) => {
                                e.file = file.clone();
                                (prior.and_then(|p| p.ast.clone()), Some(e))
                            }
                        };
                        Script {
                            kind,
                            link: link.clone(),
                            file,
                            ast,
                            error,
                            source_hash,
                            evaluations: prior.map_or_else(Arc::default, |p| p.evaluations.clone()),
                        }
                    }
                };
                scripts.push(script);
            }
        }
        // The fixed order: by kind, shared scripts before link ones, then by file name.
        scripts.sort_by(|a, b| (a.kind, &a.link, &a.file).cmp(&(b.kind, &b.link, &b.file)));
        Ok(PolicySet {
            engine,
            scripts,
            hash: format!("{:016x}", fnv1a(&hash_input)),
            counters,
            budget,
        })
    }

    /// Identifies the set's content (file names and sources).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn counters(&self) -> &PolicyCounters {
        &self.counters
    }

    /// The wall time one evaluation may take.
    pub fn time_budget(&self) -> Duration {
        self.budget.get()
    }

    /// Sets the time budget of this set and of every set later loaded from it (clamped
    /// to 1 ms ..= [`super::engine::MAX_TIME_BUDGET`]).
    pub fn set_time_budget(&self, budget: Duration) {
        self.budget.set(budget);
    }

    pub fn errors(&self) -> Vec<ScriptError> {
        self.scripts
            .iter()
            .filter_map(|s| s.error.clone())
            .collect()
    }

    pub fn scripts(&self) -> Vec<ScriptInfo> {
        let rejections = self.counters.rejections_by_script();
        self.scripts
            .iter()
            .map(|s| ScriptInfo {
                file: s.file.clone(),
                kind: s.kind,
                link: s.link.clone(),
                state: match (&s.ast, &s.error) {
                    (Some(_), None) => "ok",
                    (Some(_), Some(_)) => "stale",
                    (None, _) => "failed",
                },
                error: s.error.clone(),
                evaluations: s.evaluations.load(Ordering::Relaxed),
                rejections: rejections.get(&s.file).copied().unwrap_or(0),
            })
            .collect()
    }

    /// Whether any script of `kind` applies to the link named `link`.
    pub fn applies(&self, kind: ScriptKind, link: &str) -> bool {
        self.applicable(kind, link).next().is_some()
    }

    fn applicable<'a>(
        &'a self,
        kind: ScriptKind,
        link: &'a str,
    ) -> impl Iterator<Item = &'a Script> + 'a {
        self.scripts
            .iter()
            .filter(move |s| s.kind == kind && s.link.as_deref().is_none_or(|l| l == link))
    }

    /// Judges `delta` with every script of `kind` that applies to `link`, in order; the
    /// first rejection decides.
    pub fn judge(&self, kind: ScriptKind, link: &LinkContext, delta: &Delta) -> Verdict {
        if !self.applies(kind, link.scope()) {
            return Verdict::Accept;
        }
        // A delta not yet admitted (a test case): its signature is checked here, as
        // admission would, so a forged one is not `signed` to the scripts.
        let signed = delta.verify();
        let input = ScriptInput::verified(link.to_dynamic(), delta, signed.signer());
        self.judge_input(kind, link.scope(), &input)
    }

    /// [`PolicySet::judge`] with the delta and link already converted, so callers that
    /// judge one delta several times (pull, then trust) or many deltas on one link
    /// convert only once.
    pub fn judge_input(&self, kind: ScriptKind, link_name: &str, input: &ScriptInput) -> Verdict {
        for script in self.applicable(kind, link_name) {
            let verdict = self.run(script, &input.delta, &input.link);
            if !verdict.is_accept() {
                return verdict;
            }
        }
        Verdict::Accept
    }

    /// Every applicable script's verdict and time, without stopping at a rejection.
    pub fn evaluate_each(
        &self,
        kind: ScriptKind,
        link: &LinkContext,
        delta: &Delta,
    ) -> Vec<ScriptRun> {
        // Not yet admitted: its signature is checked here, as admission would.
        let signed = delta.verify();
        let delta_value = Dynamic::from(ScriptDelta::verified(delta.clone(), signed.signer()));
        let link_value = link.to_dynamic().into_shared();
        self.applicable(kind, link.scope())
            .map(|script| {
                let started = Instant::now();
                let verdict = self.run(script, &delta_value, &link_value);
                ScriptRun {
                    file: script.file.clone(),
                    kind,
                    verdict,
                    micros: started.elapsed().as_micros() as u64,
                }
            })
            .collect()
    }

    fn run(&self, script: &Script, delta: &Dynamic, link: &Dynamic) -> Verdict {
        let reject = |reason: String| Verdict::Reject {
            script: script.file.clone(),
            reason,
        };
        let Some(ast) = &script.ast else {
            let why = script
                .error
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            return reject(format!(
                "the script does not compile, so it rejects everything it judges: {why}"
            ));
        };
        let budget = self.budget.get();
        let started = Instant::now();
        let mut scope = Scope::new();
        scope.push_constant_dynamic("delta", delta.clone());
        scope.push_constant_dynamic("link", link.clone());
        let result = with_deadline(started + budget, || {
            self.engine.eval_ast_with_scope::<Dynamic>(&mut scope, ast)
        });
        let elapsed = started.elapsed();
        let c = &self.counters;
        c.evaluations.fetch_add(1, Ordering::Relaxed);
        script.evaluations.fetch_add(1, Ordering::Relaxed);
        c.eval_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        // Over budget, whatever the script answered: it was stopped (the progress
        // callback ends it), or one slow operation ran past the deadline between two
        // checks. Either way the answer came too late to be trusted: fail closed.
        let stopped_at = match &result {
            Err(e) => match **e {
                EvalAltResult::ErrorTerminated(_, pos) => Some(pos),
                _ => None,
            },
            Ok(_) => None,
        };
        if stopped_at.is_some() || elapsed > budget {
            c.timeouts.fetch_add(1, Ordering::Relaxed);
            c.count_rejection(&script.file);
            let at = stopped_at
                .filter(|p| !p.is_none())
                .map(|p| format!(", stopped at {p}"))
                .unwrap_or_default();
            tracing::warn!(file = %script.file, budget_ms = budget.as_millis() as u64, elapsed_us = elapsed.as_micros() as u64, "script over its time budget; the delta is rejected");
            return reject(format!(
                "the script went over its time budget of {} ms (scriptTimeoutMs){at}; a delta not judged in time is rejected",
                budget.as_millis()
            ));
        }
        let verdict = match result {
            Ok(v) if v.is::<bool>() => {
                if v.as_bool().unwrap_or(false) {
                    Verdict::Accept
                } else {
                    reject(RETURNED_FALSE.to_owned())
                }
            }
            Ok(v) if v.is_string() => {
                let reason = v.into_string().unwrap_or_default();
                if reason.is_empty() {
                    reject(RETURNED_FALSE.to_owned())
                } else {
                    reject(reason)
                }
            }
            Ok(v) => {
                c.runtime_errors.fetch_add(1, Ordering::Relaxed);
                reject(format!(
                    "the script returned {} ({}); a policy must end with true, false, a reason string, or call reject(reason)",
                    if v.is_unit() { "nothing".to_owned() } else { v.to_string() },
                    v.type_name()
                ))
            }
            Err(e) => match *e {
                EvalAltResult::ErrorRuntime(v, _) if v.is::<Rejection>() => {
                    reject(v.cast::<Rejection>().0)
                }
                EvalAltResult::ErrorTooManyOperations(pos) => {
                    c.runtime_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(file = %script.file, %pos, "script stopped: too many operations");
                    reject(format!("the script ran too long (over {MAX_OPERATIONS} operations, at {pos}) and was stopped"))
                }
                other => {
                    c.runtime_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(file = %script.file, error = %other, "script error");
                    reject(format!("script error: {other}"))
                }
            },
        };
        if !verdict.is_accept() {
            c.count_rejection(&script.file);
        }
        verdict
    }
}

/// The reason of a script that answered `false`. The deciding file travels with it
/// (`Verdict::Reject::script`), so the reason does not repeat it.
const RETURNED_FALSE: &str = "the script returned false";

/// Compiles one script with `delta` and `link` declared, so a misspelt variable is a
/// compile error, not a runtime one. (Declared as plain variables: as constants the
/// optimizer would fold their placeholder values into the script.)
pub(crate) fn compile(engine: &Engine, source: &str) -> Result<AST, ScriptError> {
    let mut scope = Scope::new();
    scope.push_dynamic("delta", Dynamic::UNIT);
    scope.push_dynamic("link", Dynamic::UNIT);
    engine
        .compile_with_scope(&scope, source)
        .map_err(|e| ScriptError {
            file: String::new(),
            line: e.position().line(),
            column: e.position().position(),
            message: e.err_type().to_string(),
        })
}

/// The `.rhai` files of a root: directly in it (every link) and one level down in a
/// folder named after a link. `tests/` holds test cases, not scripts.
fn script_files(root: &Path) -> std::io::Result<Vec<(Option<String>, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", root.display()),
            ))
        }
    };
    let mut by_link: BTreeMap<Option<String>, Vec<PathBuf>> = BTreeMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            if name == "tests" {
                continue;
            }
            let inner_entries = std::fs::read_dir(&path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
            })?;
            for inner in inner_entries.flatten() {
                let p = inner.path();
                if is_script(&p) {
                    by_link.entry(Some(name.clone())).or_default().push(p);
                }
            }
        } else if is_script(&path) {
            by_link.entry(None).or_default().push(path);
        }
    }
    for (link, mut files) in by_link {
        files.sort();
        out.extend(files.into_iter().map(|f| (link.clone(), f)));
    }
    Ok(out)
}

fn is_script(p: &Path) -> bool {
    p.is_file() && p.extension().is_some_and(|e| e == "rhai")
}

/// 64-bit FNV-1a: a stable content fingerprint for the set's hash (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
