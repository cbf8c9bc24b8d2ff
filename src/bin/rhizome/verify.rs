//! `rhizome verify`: checks the signatures of deltas in a file or on stdin, offline.
//!
//! Reads one JSON document (a delta, or an array of deltas) or JSON lines (what
//! `rhizome query` prints), checks every signature at once with the library's batch
//! verification (`rhizome::delta::verify_all`, the check a node makes at ingestion),
//! and prints one line per delta. An invalid delta, one that is not even readable, is
//! named by its place (`line N`, `item N`) and counts as a failure, as does a bad
//! signature, and an unsigned delta with `--require-signatures`. The exit status is 0
//! only when every delta passes; the summary goes to stderr so stdout stays one line per
//! delta.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{bail, Context};
use rhizome::delta::{verify_all, Signed};
use rhizome::identity::key_text;
use rhizome::Delta;
use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  rhizome verify deltas.jsonl
  rhizome query --author alice | rhizome verify --require-signatures")]
pub struct VerifyArgs {
    /// A file of deltas (a JSON delta, a JSON array, or JSON lines); `-` or nothing
    /// reads stdin.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Count unsigned deltas as failures.
    #[arg(long)]
    pub require_signatures: bool,
    /// One JSON object per delta: `place`, `id`, `result` (`ok`, `unsigned`, `bad`,
    /// `invalid`), `signer` or `reason`, and `pass`.
    #[arg(long)]
    pub json: bool,
}

/// One delta of the input, read or not, and where it was.
struct Item {
    /// `line N` (JSON lines), `item N` (an array) or `document` (one delta).
    place: String,
    read: Result<Delta, String>,
}

/// What was found for one delta.
enum Verdict<'a> {
    Ok(&'a Delta, String),
    Unsigned(&'a Delta),
    Bad(&'a Delta, String),
    Invalid(String),
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let (text, source) = read_input(args.file.as_ref())?;
    let items = parse(&text);
    if items.is_empty() {
        bail!("{source} holds no deltas");
    }
    let deltas: Vec<&Delta> = items.iter().filter_map(|i| i.read.as_ref().ok()).collect();
    let mut checked = verify_all(deltas.iter().copied()).into_iter();
    let mut counts = Counts::default();
    for item in &items {
        let verdict = match &item.read {
            Err(reason) => Verdict::Invalid(reason.clone()),
            Ok(delta) => match checked.next() {
                Some(Signed::By(key)) => Verdict::Ok(delta, key_text(&key)),
                Some(Signed::Unsigned) => Verdict::Unsigned(delta),
                Some(Signed::Bad(reason)) => Verdict::Bad(delta, reason),
                None => Verdict::Bad(delta, "not checked".into()),
            },
        };
        let pass = counts.add(&verdict, args.require_signatures);
        if args.json {
            println!("{}", as_json(&item.place, &verdict, pass));
        } else {
            println!("{}", as_line(&item.place, &verdict, pass));
        }
    }
    let (total, failed) = (counts.total(), counts.failed(args.require_signatures));
    let tally = counts.tally();
    if failed > 0 {
        bail!("{failed} of {total} deltas failed verification ({tally})");
    }
    eprintln!("all {total} deltas passed ({tally})");
    Ok(())
}

/// The text to read and how to name it in messages.
fn read_input(file: Option<&PathBuf>) -> anyhow::Result<(String, String)> {
    match file {
        Some(path) if path.as_os_str() != "-" => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the deltas in {}", path.display()))?;
            Ok((text, path.display().to_string()))
        }
        _ => {
            if std::io::stdin().is_terminal() {
                bail!("nothing to verify: give a FILE of deltas, or pipe them on stdin");
            }
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
            Ok((text, "stdin".to_owned()))
        }
    }
}

/// The deltas of `text`: one JSON document (a delta or an array), else JSON lines. A
/// document that is neither is one invalid item saying why.
fn parse(text: &str) -> Vec<Item> {
    let read = |v: &Value| Delta::from_value(v).map_err(|e| e.to_string());
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| Item {
                place: format!("item {}", i + 1),
                read: read(v),
            })
            .collect(),
        Ok(one) => vec![Item {
            place: "document".into(),
            read: read(&one),
        }],
        Err(_) if text.trim().is_empty() => Vec::new(),
        Err(whole) => {
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if serde_json::from_str::<Value>(first).is_err() {
                // Not JSON lines either: the document's own error says where it breaks.
                return vec![Item {
                    place: "document".into(),
                    read: Err(format!("not valid JSON: {whole}")),
                }];
            }
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(n, l)| Item {
                    place: format!("line {}", n + 1),
                    read: serde_json::from_str::<Value>(l)
                        .map_err(|e| format!("not valid JSON: {e}"))
                        .and_then(|v| read(&v)),
                })
                .collect()
        }
    }
}

fn as_line(place: &str, verdict: &Verdict, pass: bool) -> String {
    match verdict {
        Verdict::Ok(d, key) => format!("ok {} signed by {key}", d.id),
        Verdict::Unsigned(d) if pass => format!("unsigned {}", d.id),
        Verdict::Unsigned(d) => format!("UNSIGNED {}: no signature (--require-signatures)", d.id),
        Verdict::Bad(d, reason) => format!("BAD {}: {reason}", d.id),
        Verdict::Invalid(reason) => format!("INVALID {place}: {reason}"),
    }
}

fn as_json(place: &str, verdict: &Verdict, pass: bool) -> Value {
    let mut out = match verdict {
        Verdict::Ok(d, key) => json!({"id": d.id, "result": "ok", "signer": key}),
        Verdict::Unsigned(d) => json!({"id": d.id, "result": "unsigned"}),
        Verdict::Bad(d, reason) => json!({"id": d.id, "result": "bad", "reason": reason}),
        Verdict::Invalid(reason) => json!({"result": "invalid", "reason": reason}),
    };
    out["place"] = json!(place);
    out["pass"] = json!(pass);
    out
}

#[derive(Default)]
struct Counts {
    ok: usize,
    unsigned: usize,
    bad: usize,
    invalid: usize,
}

impl Counts {
    /// Counts `verdict`; whether it passes.
    fn add(&mut self, verdict: &Verdict, require_signatures: bool) -> bool {
        match verdict {
            Verdict::Ok(..) => self.ok += 1,
            Verdict::Unsigned(_) => {
                self.unsigned += 1;
                return !require_signatures;
            }
            Verdict::Bad(..) => self.bad += 1,
            Verdict::Invalid(_) => self.invalid += 1,
        }
        matches!(verdict, Verdict::Ok(..))
    }

    fn failed(&self, require_signatures: bool) -> usize {
        self.bad + self.invalid + if require_signatures { self.unsigned } else { 0 }
    }

    fn total(&self) -> usize {
        self.ok + self.unsigned + self.bad + self.invalid
    }

    fn tally(&self) -> String {
        format!(
            "{} signed and valid, {} unsigned, {} with a bad signature, {} invalid",
            self.ok, self.unsigned, self.bad, self.invalid
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{"id":"d1","timestamp":5,"author":"a","system":"s","pointers":[]}"#;

    #[test]
    fn every_input_form_is_read_and_each_item_named_by_its_place() {
        let places = |text: &str| -> Vec<(String, bool)> {
            parse(text)
                .into_iter()
                .map(|i| (i.place, i.read.is_ok()))
                .collect()
        };
        assert_eq!(places(FULL), [("document".to_owned(), true)]);
        assert_eq!(
            places(&format!("[{FULL}, 3]")),
            [("item 1".to_owned(), true), ("item 2".to_owned(), false)]
        );
        assert_eq!(
            places(&format!("{FULL}\n\nnope\n{FULL}\n")),
            [
                ("line 1".to_owned(), true),
                ("line 3".to_owned(), false),
                ("line 4".to_owned(), true)
            ]
        );
        let broken = parse("{\n  \"id\": \n");
        assert_eq!(broken.len(), 1);
        assert!(broken[0]
            .read
            .as_ref()
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(parse(" \n").is_empty());
    }
}
