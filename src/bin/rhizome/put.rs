//! `rhizome put` and `rhizome negate`.
//!
//! Pointer shorthand: `role=text` (a string), `role=@id` or `role=@id#context` (a
//! reference), `role:=JSON` (any JSON target, e.g. `price:=9.5`, `ok:=true`).

use std::io::{IsTerminal, Read};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::args::NodeArg;
use crate::client::{print_line, urlencode, Client};

#[derive(Debug, clap::Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub node: NodeArg,
    /// Author of the new delta (shorthand mode). Without it, deltas are read from stdin.
    #[arg(long)]
    pub author: Option<String>,
    /// A pointer: `role=text`, `role=@id`, `role=@id#context` or `role:=JSON`. Repeatable.
    #[arg(short = 'p', long = "pointer", value_name = "POINTER")]
    pub pointers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct NegateArgs {
    #[command(flatten)]
    pub node: NodeArg,
    /// Id of the delta to negate.
    pub id: String,
    #[arg(long)]
    pub author: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
}

pub async fn run(args: PutArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.node)?;
    let bodies = match &args.author {
        Some(author) => {
            let pointers = args
                .pointers
                .iter()
                .map(|p| parse_pointer(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            vec![json!({"author": author, "pointers": pointers})]
        }
        None => {
            if !args.pointers.is_empty() {
                bail!("--pointer needs --author (shorthand mode)");
            }
            if std::io::stdin().is_terminal() {
                bail!("nothing to put: give --author and --pointer, or pipe JSON / JSON lines on stdin");
            }
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
            parse_input(&text)?
        }
    };
    for body in bodies {
        let answer = client.post("/deltas", &body).await?;
        match answer.get("results").and_then(Value::as_array) {
            Some(results) => results.iter().for_each(print_line),
            None => print_line(&answer),
        }
    }
    Ok(())
}

pub async fn negate(args: NegateArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.node)?;
    let mut body = json!({});
    if let Some(a) = args.author {
        body["author"] = json!(a);
    }
    if let Some(r) = args.reason {
        body["reason"] = json!(r);
    }
    let answer = client
        .post(&format!("/deltas/{}/negate", urlencode(&args.id)), &body)
        .await?;
    print_line(&answer);
    Ok(())
}

/// One JSON document (a delta or an array) or JSON lines; each becomes one request body.
fn parse_input(text: &str) -> anyhow::Result<Vec<Value>> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        bail!("stdin is empty: expected a delta as JSON or JSON lines");
    }
    if let Ok(v) = serde_json::from_str::<Value>(trimmed) {
        return Ok(vec![v]);
    }
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("stdin line {}: not valid JSON", i + 1))?;
        items.push(v);
    }
    Ok(vec![Value::Array(items)])
}

/// `role=text`, `role=@id`, `role=@id#context`, `role:=JSON`.
pub fn parse_pointer(spec: &str) -> anyhow::Result<Value> {
    if let Some((role, raw)) = spec.split_once(":=") {
        if !role.contains('=') {
            let target: Value = serde_json::from_str(raw)
                .with_context(|| format!("pointer {spec:?}: the part after := must be JSON"))?;
            return Ok(json!({"role": role, "target": target}));
        }
    }
    let Some((role, value)) = spec.split_once('=') else {
        bail!("pointer {spec:?}: expected role=text, role=@id[#context] or role:=JSON");
    };
    let target = match value.strip_prefix('@') {
        Some(reference) => match reference.split_once('#') {
            Some((id, ctx)) => json!({"id": id, "context": ctx}),
            None => json!({"id": reference}),
        },
        None => json!(value),
    };
    Ok(json!({"role": role, "target": target}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_shorthand() {
        assert_eq!(
            parse_pointer("text=hi").unwrap(),
            json!({"role": "text", "target": "hi"})
        );
        assert_eq!(
            parse_pointer("on=@p1").unwrap(),
            json!({"role": "on", "target": {"id": "p1"}})
        );
        assert_eq!(
            parse_pointer("on=@p1#comments").unwrap(),
            json!({"role": "on", "target": {"id": "p1", "context": "comments"}})
        );
        assert_eq!(
            parse_pointer("price:=9.5").unwrap(),
            json!({"role": "price", "target": 9.5})
        );
        assert_eq!(
            parse_pointer("eq=a:=b").unwrap(),
            json!({"role": "eq", "target": "a:=b"})
        );
        assert!(parse_pointer("novalue").is_err());
        assert!(parse_pointer("n:=notjson").is_err());
    }

    #[test]
    fn stdin_forms() {
        assert_eq!(parse_input("{\"a\":1}").unwrap(), vec![json!({"a": 1})]);
        assert_eq!(
            parse_input("{\"a\":1}\n{\"a\":2}\n").unwrap(),
            vec![json!([{"a": 1}, {"a": 2}])]
        );
        assert!(parse_input("{\"a\":1}\nnope").is_err());
        assert!(parse_input("  ").is_err());
    }
}
