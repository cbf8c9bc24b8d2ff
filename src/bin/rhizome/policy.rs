//! `rhizome policy`: check, test and try trust policies and filter scripts offline,
//! before they reach a node. No node is needed: the scripts are loaded and run here by
//! the evaluator the node itself uses ([`PolicySet`]), so a verdict seen here is the
//! verdict the node gives.
//!
//! - `check`: compile every script, print its state, `FILE:LINE:COL: message` per error.
//! - `test`: run test cases (`policies/tests/` by default) and report the failing ones.
//! - `eval`: one delta, every applicable script's verdict and time.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use rhizome::delta::Delta;
use rhizome::policy::{cases, LinkContext, PolicyDirs, PolicySet, ScriptKind, Verdict};

#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Compile every script and print its state; exit 1 if any does not compile.
    Check(DirsArg),
    /// Run test cases against the scripts; exit 1 if any case fails.
    Test(TestArgs),
    /// Print each applicable script's verdict on one delta, in the order the node runs them.
    Eval(EvalArgs),
}

/// Where the scripts are. Each folder defaults to `./policies` / `./filters` when it exists.
#[derive(Debug, Clone, clap::Args)]
pub struct DirsArg {
    /// Trust policy scripts (default: ./policies when it exists).
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Push / pull filter scripts (default: ./filters when it exists).
    #[arg(long, value_name = "DIR")]
    pub filters: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Case files (JSON or JSON lines) or folders of them (default: <policies>/tests/).
    #[arg(value_name = "CASES")]
    pub cases: Vec<PathBuf>,
    #[command(flatten)]
    pub dirs: DirsArg,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The delta as JSON, in a file or `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    pub delta: String,
    /// The peer's name (a link's scripts are those of its peer): the scripts in its
    /// folders run too (default: shared ones only).
    #[arg(long, value_name = "NAME", default_value = "")]
    pub link: String,
    /// The peer proved it is NAME (`link.peer.authenticated` is true; without this flag
    /// it is false, as for a peer known only by a name this node gave it).
    #[arg(long, requires = "link")]
    pub authenticated: bool,
    /// What scripts see as `link.remote_system`.
    #[arg(long, value_name = "SYSTEM", default_value = "")]
    pub remote_system: String,
    /// Which scripts to run.
    #[arg(long, value_enum, default_value = "all")]
    pub kind: KindArg,
    /// One JSON line per script instead of readable lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dirs: DirsArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    Trust,
    Push,
    Pull,
    All,
}

impl KindArg {
    fn kinds(self) -> Vec<ScriptKind> {
        match self {
            KindArg::Trust => vec![ScriptKind::Trust],
            KindArg::Push => vec![ScriptKind::Push],
            KindArg::Pull => vec![ScriptKind::Pull],
            KindArg::All => ScriptKind::ALL.to_vec(),
        }
    }
}

pub fn run(args: PolicyArgs) -> anyhow::Result<()> {
    match args.command {
        PolicyCommand::Check(dirs) => check(&dirs),
        PolicyCommand::Test(a) => test(a),
        PolicyCommand::Eval(a) => eval(a),
    }
}

impl DirsArg {
    fn resolve(&self) -> anyhow::Result<PolicyDirs> {
        let pick = |given: &Option<PathBuf>, default: &str| match given {
            Some(dir) if dir.is_dir() => Ok(Some(dir.clone())),
            Some(dir) => Err(anyhow!("{} is not a directory", dir.display())),
            None => Ok(Some(PathBuf::from(default)).filter(|d| d.is_dir())),
        };
        let dirs = PolicyDirs {
            policies: pick(&self.policies, "policies").context("--policies")?,
            filters: pick(&self.filters, "filters").context("--filters")?,
        };
        if dirs.is_empty() {
            bail!("no scripts to load: there is no ./policies or ./filters here; pass --policies DIR and/or --filters DIR");
        }
        Ok(dirs)
    }
}

fn load(dirs: &PolicyDirs) -> anyhow::Result<PolicySet> {
    PolicySet::load(dirs, None).context("cannot load the scripts")
}

fn kind_name(kind: ScriptKind) -> &'static str {
    match kind {
        ScriptKind::Trust => "trust",
        ScriptKind::Push => "push",
        ScriptKind::Pull => "pull",
    }
}

fn check(dirs: &DirsArg) -> anyhow::Result<()> {
    let dirs = dirs.resolve()?;
    let set = load(&dirs)?;
    let scripts = set.scripts();
    for s in &scripts {
        let scope = s
            .link
            .as_ref()
            .map_or_else(|| "all peers".to_owned(), |l| format!("peer {l}"));
        println!(
            "{:<6}  {:<5}  {scope:<16}  {}",
            s.state,
            kind_name(s.kind),
            s.file
        );
    }
    warn_ignored(&dirs, &scripts.iter().map(|s| s.file.clone()).collect());
    let errors = set.errors();
    for e in &errors {
        eprintln!("{e}");
    }
    if !errors.is_empty() {
        bail!(
            "{} (of {}); a script that does not compile rejects every delta it judges",
            not_compiling(errors.len()),
            scripts.len()
        );
    }
    let count = |k: ScriptKind| scripts.iter().filter(|s| s.kind == k).count();
    println!(
        "{} (trust {}, push {}, pull {}); set {}",
        match scripts.len() {
            1 => "1 script compiles".to_owned(),
            n => format!("{n} scripts compile"),
        },
        count(ScriptKind::Trust),
        count(ScriptKind::Push),
        count(ScriptKind::Pull),
        set.hash()
    );
    Ok(())
}

/// Warns about `.rhai` files the node would not load: in `filters/` itself rather than in
/// `push/` or `pull/`, or nested deeper than one link folder. A misplaced file is
/// otherwise silently never run.
fn warn_ignored(dirs: &PolicyDirs, loaded: &BTreeSet<String>) {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden || (depth == 0 && entry.file_name() == "tests") {
                continue;
            }
            if path.is_dir() && depth < 4 {
                walk(&path, depth + 1, out);
            } else if path.extension().is_some_and(|e| e == "rhai") {
                out.push(path);
            }
        }
    }
    let mut found = Vec::new();
    for root in [&dirs.policies, &dirs.filters].into_iter().flatten() {
        walk(root, 0, &mut found);
    }
    found.sort();
    for path in found {
        let file = path.display().to_string();
        if !loaded.contains(&file) {
            eprintln!(
                "warning: {file} is not loaded: scripts go in policies/, filters/push/ or filters/pull/, or one link folder below them"
            );
        }
    }
}

fn test(args: TestArgs) -> anyhow::Result<()> {
    let dirs = args.dirs.resolve()?;
    let set = load(&dirs)?;
    let errors = set.errors();
    for e in &errors {
        eprintln!("{e}");
    }
    let paths = if args.cases.is_empty() {
        let Some(policies) = &dirs.policies else {
            bail!(
                "no test cases: give case files or folders, or --policies DIR with a tests/ folder"
            );
        };
        let dir = policies.join("tests");
        if !dir.is_dir() {
            bail!(
                "no test cases: {} does not exist; give case files or folders",
                dir.display()
            );
        }
        vec![dir]
    } else {
        args.cases.clone()
    };
    let loaded = cases::load(&paths).map_err(|e| anyhow!(e))?;
    if loaded.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "no test cases found in {} (case files end in .json or .jsonl)",
            shown.join(", ")
        );
    }
    for lc in &loaded {
        let c = &lc.case;
        if c.trust.is_none() && c.push.is_none() && c.pull.is_none() {
            eprintln!(
                "warning: {}: the case expects nothing; give \"trust\", \"push\" or \"pull\"",
                lc.source
            );
        }
    }
    let report = cases::run(&set, &loaded);
    for f in &report.failures {
        let kind = f
            .kind
            .map(|k| format!(" [{}]", kind_name(k)))
            .unwrap_or_default();
        println!("FAIL {}{kind}: {}", f.case, f.message);
    }
    let failed = report
        .failures
        .iter()
        .map(|f| &f.case)
        .collect::<BTreeSet<_>>()
        .len();
    println!("{} passed, {failed} failed", report.passed);
    match (failed, errors.len()) {
        (0, 0) => Ok(()),
        (0, n) => bail!("{}", not_compiling(n)),
        (f, 0) => bail!("{f} of {} cases failed", loaded.len()),
        (f, n) => bail!(
            "{f} of {} cases failed, and {}",
            loaded.len(),
            not_compiling(n)
        ),
    }
}

fn not_compiling(n: usize) -> String {
    match n {
        1 => "1 script does not compile".to_owned(),
        n => format!("{n} scripts do not compile"),
    }
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let delta = read_delta(&args.delta)?;
    let dirs = args.dirs.resolve()?;
    let set = load(&dirs)?;
    for e in set.errors() {
        eprintln!("warning: {e} (this script rejects every delta it judges)");
    }
    let scripts = set.scripts();
    if !args.link.is_empty() && !scripts.iter().any(|s| s.link.as_ref() == Some(&args.link)) {
        eprintln!(
            "note: no script folder is named {:?}: only the scripts for all peers apply",
            args.link
        );
    }
    for kind in args.kind.kinds() {
        let link = LinkContext {
            name: args.link.clone(),
            peer: rhizome::LinkPeer {
                name: args.link.clone(),
                authenticated: args.authenticated,
                key: None,
            },
            remote_system: args.remote_system.clone(),
            mode: "bidirectional".into(),
            // Push filters judge deltas leaving; trust policies and pull filters, arriving ones.
            direction: if kind == ScriptKind::Push {
                "outbound"
            } else {
                "inbound"
            }
            .into(),
            ..Default::default()
        };
        let runs = set.evaluate_each(kind, &link, &delta);
        if args.json {
            for r in &runs {
                println!("{}", run_json(r.kind, &r.file, &r.verdict, r.micros));
            }
            continue;
        }
        let kind = kind_name(kind);
        for r in &runs {
            let (word, reason) = match &r.verdict {
                Verdict::Accept => ("accept", String::new()),
                Verdict::Reject { reason, .. } => ("reject", format!(": {reason}")),
            };
            println!(
                "{kind:<5}  {word:<6}  {:>6}us  {}{reason}",
                r.micros, r.file
            );
        }
        match runs.iter().find(|r| !r.verdict.is_accept()) {
            Some(r) => println!("{kind:<5}  => reject, decided by {}", r.file),
            None if runs.is_empty() => println!("{kind:<5}  => accept (no script applies)"),
            None => println!("{kind:<5}  => accept"),
        }
    }
    Ok(())
}

fn run_json(kind: ScriptKind, file: &str, verdict: &Verdict, micros: u64) -> Value {
    let mut line = json!({"kind": kind, "file": file, "micros": micros});
    match verdict {
        Verdict::Accept => line["verdict"] = json!("accept"),
        Verdict::Reject { reason, .. } => {
            line["verdict"] = json!("reject");
            line["reason"] = json!(reason);
        }
    }
    line
}

/// Reads and validates the delta of `rhizome policy eval`; errors name the file, and the
/// line and column or the field at fault.
fn read_delta(source: &str) -> anyhow::Result<Delta> {
    let (name, text) = if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the delta from stdin")?;
        ("stdin".to_owned(), text)
    } else {
        let text =
            std::fs::read_to_string(source).with_context(|| format!("cannot read {source}"))?;
        (source.to_owned(), text)
    };
    parse_delta(&name, &text)
}

fn parse_delta(name: &str, text: &str) -> anyhow::Result<Delta> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let at = format!(" at line {} column {}", e.line(), e.column());
        let msg = e.to_string();
        let msg = msg.strip_suffix(&at).unwrap_or(&msg);
        anyhow!("{name}:{}:{}: not valid JSON: {msg}", e.line(), e.column())
    })?;
    Delta::from_value(&value).map_err(|e| anyhow!("{name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: PolicyCommand,
    }

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_bad_delta_names_the_place() {
        let err = parse_delta("d.json", "{\n  \"id\": \"x\",,\n}").unwrap_err();
        let err = format!("{err:#}");
        // The position leads, once (serde_json's own "at line .. column .." is dropped).
        assert_eq!(err, "d.json:2:13: not valid JSON: key must be a string");
        let err = parse_delta(
            "d.json",
            r#"{"id":"x","timestamp":1,"author":"a","system":"s","pointers":[{"role":"","target":"t"}]}"#,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("d.json: invalid delta: pointers[0].role"),
            "{err:#}"
        );
    }

    #[test]
    fn json_lines_carry_the_verdict_flat() {
        let line = run_json(
            ScriptKind::Push,
            "f.rhai",
            &Verdict::Reject {
                script: "f.rhai".into(),
                reason: "no".into(),
            },
            7,
        );
        assert_eq!(
            line,
            json!({"kind": "push", "file": "f.rhai", "micros": 7, "verdict": "reject", "reason": "no"})
        );
    }
}
