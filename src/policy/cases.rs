//! Test cases for policies: what `rhizome policy test` runs before a deployment.
//!
//! A case file is JSON (one case or an array) or JSON lines. A case:
//! `{"name"?, "delta": {...}, "link"?: {"name", "remoteSystem", "mode", "direction", ...},
//!   "trust"?: "accept"|"reject", "push"?: ..., "pull"?: ..., "reason"?: "substring"}`.
//! Each verdict given is checked against the composed scripts of that kind for the link;
//! `reason`, when given, must appear in the rejection's reason.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::engine::LinkContext;
use super::set::{PolicySet, ScriptKind, Verdict};
use crate::delta::Delta;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Accept,
    Reject,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default)]
    pub name: Option<String>,
    pub delta: Value,
    #[serde(default)]
    pub link: LinkContext,
    #[serde(default)]
    pub trust: Option<Expect>,
    #[serde(default)]
    pub push: Option<Expect>,
    #[serde(default)]
    pub pull: Option<Expect>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A case read from a file, with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedCase {
    pub source: String,
    pub case: Case,
}

/// One failed expectation.
#[derive(Debug, Clone)]
pub struct Failure {
    pub case: String,
    pub kind: Option<ScriptKind>,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failures: Vec<Failure>,
}

/// Reads cases from files, or from every `.json` / `.jsonl` file of a folder.
///
/// # Errors
/// A file that cannot be read or parsed, naming the file and line.
pub fn load(paths: &[PathBuf]) -> Result<Vec<LoadedCase>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|x| x == "json" || x == "jsonl"))
                .collect();
            inner.sort();
            files.extend(inner);
        } else {
            files.push(p.clone());
        }
    }
    let mut cases = Vec::new();
    for f in files {
        cases.extend(load_file(&f)?);
    }
    Ok(cases)
}

fn load_file(path: &Path) -> Result<Vec<LoadedCase>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let name = path.display().to_string();
    let parse = |v: Value, at: String| -> Result<LoadedCase, String> {
        serde_json::from_value::<Case>(v)
            .map(|mut case| {
                // A case that names only its link is a peer of that name that proved
                // nothing (`"peer": {"authenticated": true}` says otherwise).
                if case.link.peer.name.is_empty() {
                    case.link.peer.name = case.link.name.clone();
                }
                LoadedCase {
                    source: at.clone(),
                    case,
                }
            })
            .map_err(|e| format!("{at}: not a valid case: {e}"))
    };
    // A whole-file JSON document (one case or an array), else JSON lines.
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        return match v {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| parse(v, format!("{name}[{i}]")))
                .collect(),
            other => Ok(vec![parse(other, name)?]),
        };
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("{name}:{}: not JSON: {e}", i + 1))?;
        out.push(parse(v, format!("{name}:{}", i + 1))?);
    }
    Ok(out)
}

/// Runs every case against `set`.
pub fn run(set: &PolicySet, cases: &[LoadedCase]) -> Report {
    let mut report = Report::default();
    for lc in cases {
        let label = lc
            .case
            .name
            .clone()
            .map_or_else(|| lc.source.clone(), |n| format!("{} ({n})", lc.source));
        let delta = match Delta::from_value(&lc.case.delta) {
            Ok(d) => d,
            Err(e) => {
                report.failures.push(Failure {
                    case: label,
                    kind: None,
                    message: format!("the case's delta is invalid: {e}"),
                });
                continue;
            }
        };
        let expectations = [lc.case.trust, lc.case.push, lc.case.pull];
        if expectations.iter().all(Option::is_none) {
            report.failures.push(Failure {
                case: label,
                kind: None,
                message: "the case checks nothing: give at least one of trust, push, pull".into(),
            });
            continue;
        }
        if lc.case.reason.is_some() && !expectations.contains(&Some(Expect::Reject)) {
            report.failures.push(Failure {
                case: label,
                kind: None,
                message:
                    "`reason` is only checked against a rejection; no verdict here expects reject"
                        .into(),
            });
            continue;
        }
        let mut ok = true;
        for (kind, expect) in [
            (ScriptKind::Trust, lc.case.trust),
            (ScriptKind::Push, lc.case.push),
            (ScriptKind::Pull, lc.case.pull),
        ] {
            let Some(expect) = expect else { continue };
            let verdict = set.judge(kind, &lc.case.link, &delta);
            let problem = match (&verdict, expect) {
                (Verdict::Accept, Expect::Accept) => None,
                (Verdict::Accept, Expect::Reject) => Some("expected reject, got accept".to_owned()),
                (Verdict::Reject { script, reason }, Expect::Accept) => {
                    Some(format!("expected accept, got reject by {script}: {reason}"))
                }
                (Verdict::Reject { script, reason }, Expect::Reject) => match &lc.case.reason {
                    Some(want) if !reason.contains(want.as_str()) => Some(format!(
                        "rejected by {script} as expected, but the reason {reason:?} does not contain {want:?}"
                    )),
                    _ => None,
                },
            };
            if let Some(message) = problem {
                ok = false;
                report.failures.push(Failure {
                    case: label.clone(),
                    kind: Some(kind),
                    message,
                });
            }
        }
        if ok {
            report.passed += 1;
        }
    }
    report
}
