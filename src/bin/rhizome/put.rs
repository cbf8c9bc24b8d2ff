//! `rhizome put` and `rhizome negate`.
//!
//! Pointer shorthand: `role=text` (a string), `role=@id` or `role=@id#context` (a
//! reference), `role:=JSON` (any JSON target, e.g. `price:=9.5`, `ok:=true`).
//!
//! With `--sign KEYFILE` the command builds each delta whole before it leaves (a
//! signature covers every field, so the node cannot fill any in afterwards): a new id
//! (UUID v4), the current time, the node's system id (`GET /status`, or `--system`), then
//! signs it and posts the signed delta. Deltas read from stdin are signed as given; an
//! item without `id` (the shorthand the node accepts) gets the id, time and system the
//! node would have given it, the same rule as `POST /deltas`. A signature already on a
//! delta is replaced.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{bail, Context};
use rhizome::delta::{negate as negation, new_delta, now_millis};
use rhizome::identity::NodeKey;
use rhizome::{Delta, Pointer, Target};
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
    #[command(flatten)]
    pub sign: SignArgs,
}

/// Signing the deltas this command sends.
#[derive(Debug, Clone, clap::Args)]
pub struct SignArgs {
    /// Sign each delta with this key (PKCS#8 PEM, as `rhizome keygen` writes it).
    #[arg(long = "sign", value_name = "KEYFILE")]
    pub key: Option<PathBuf>,
    /// With --sign: the system the new deltas name [default: the node's, from its status].
    #[arg(long, value_name = "ID", requires = "key")]
    pub system: Option<String>,
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
    #[command(flatten)]
    pub sign: SignArgs,
}

pub async fn run(args: PutArgs) -> anyhow::Result<()> {
    let client = args.node.client()?;
    if let Some(signer) = Signer::new(&args.sign)? {
        return put_signed(&args, &client, signer).await;
    }
    let bodies = match &args.author {
        Some(author) => {
            let pointers = args
                .pointers
                .iter()
                .map(|p| parse_pointer(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            vec![json!({"author": author, "pointers": pointers})]
        }
        None => parse_input(&read_stdin(&args)?)?,
    };
    for body in bodies {
        post(&client, &body).await?;
    }
    Ok(())
}

/// Posts a document of deltas and prints what the node answered for each.
async fn post(client: &Client, body: &Value) -> anyhow::Result<()> {
    let answer = client.post("/deltas", body).await?;
    match answer.get("results").and_then(Value::as_array) {
        Some(results) => results.iter().for_each(print_line),
        None => print_line(&answer),
    }
    Ok(())
}

/// Stdin, for a `put` without `--author`.
fn read_stdin(args: &PutArgs) -> anyhow::Result<String> {
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
    Ok(text)
}

/// `put --sign`: every delta built whole here, signed, then posted.
async fn put_signed(args: &PutArgs, client: &Client, mut signer: Signer) -> anyhow::Result<()> {
    let body = match &args.author {
        Some(author) => {
            let pointers = args
                .pointers
                .iter()
                .map(|p| {
                    let v = parse_pointer(p)?;
                    let target = Target::from_value(&v["target"])
                        .with_context(|| format!("pointer {p:?}"))?;
                    Ok(Pointer::new(v["role"].as_str().unwrap_or_default(), target))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let system = signer.system(client).await?;
            signer.sign(new_delta(author, system, pointers))?
        }
        None => {
            let mut items = Vec::new();
            for body in parse_input(&read_stdin(args)?)? {
                match body {
                    Value::Array(many) => items.extend(many),
                    one => items.push(one),
                }
            }
            let single = items.len() == 1;
            let mut signed = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let delta = signer
                    .complete(item, client)
                    .await
                    .with_context(|| format!("stdin delta {}", i + 1))?;
                signed.push(signer.sign(delta)?);
            }
            if single {
                signed.remove(0)
            } else {
                Value::Array(signed)
            }
        }
    };
    post(client, &body).await
}

/// The key deltas are signed with, and the system id new deltas name (asked of the node
/// once, when first needed).
struct Signer {
    key: NodeKey,
    key_file: PathBuf,
    system: Option<String>,
}

impl Signer {
    /// The signer `--sign` asks for, if any.
    fn new(args: &SignArgs) -> anyhow::Result<Option<Signer>> {
        let Some(path) = &args.key else {
            return Ok(None);
        };
        let key = NodeKey::load(path).context("loading the --sign key")?;
        Ok(Some(Signer {
            key,
            key_file: path.clone(),
            system: args.system.clone(),
        }))
    }

    /// The system new deltas name: `--system`, or the node's own.
    async fn system(&mut self, client: &Client) -> anyhow::Result<String> {
        if let Some(system) = &self.system {
            return Ok(system.clone());
        }
        let status = client
            .get("/status", &[])
            .await
            .context("asking the node for its system id (or give --system)")?;
        let system = status
            .get("systemId")
            .and_then(Value::as_str)
            .context("the node's status has no systemId; give --system")?
            .to_owned();
        self.system = Some(system.clone());
        Ok(system)
    }

    /// A delta from stdin, completed as the node completes the shorthand: an item
    /// without `id` gets a new id, and the current time and the system where it has none.
    async fn complete(&mut self, item: Value, client: &Client) -> anyhow::Result<Delta> {
        let item = match item {
            Value::Object(mut obj) if !obj.contains_key("id") => {
                obj.insert("id".into(), uuid::Uuid::new_v4().to_string().into());
                obj.entry("timestamp")
                    .or_insert_with(|| now_millis().into());
                if !obj.contains_key("system") {
                    obj.insert("system".into(), self.system(client).await?.into());
                }
                Value::Object(obj)
            }
            other => other,
        };
        Ok(Delta::from_value(&item)?)
    }

    /// `delta` signed, as the JSON the node is sent.
    fn sign(&self, mut delta: Delta) -> anyhow::Result<Value> {
        delta
            .sign(&self.key)
            .with_context(|| format!("signing delta {}", delta.id))?;
        serde_json::to_value(&delta)
            .with_context(|| format!("encoding a delta signed with {}", self.key_file.display()))
    }
}

pub async fn negate(args: NegateArgs) -> anyhow::Result<()> {
    let client = args.node.client()?;
    if let Some(signer) = Signer::new(&args.sign)? {
        return negate_signed(&args, &client, signer).await;
    }
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

/// `negate --sign`: the negation built here (author: `--author`, or the node's system id
/// as the node would choose), signed, then posted like any delta.
async fn negate_signed(
    args: &NegateArgs,
    client: &Client,
    mut signer: Signer,
) -> anyhow::Result<()> {
    // The node's own negate endpoint refuses an unknown id; a posted negation would not.
    client
        .get(&format!("/deltas/{}", urlencode(&args.id)), &[])
        .await
        .with_context(|| format!("looking up the delta {:?} to negate", args.id))?;
    let system = signer.system(client).await?;
    let author = args.author.clone().unwrap_or_else(|| system.clone());
    let delta = negation(&args.id, author, system, args.reason.as_deref());
    post(client, &signer.sign(delta)?).await
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
