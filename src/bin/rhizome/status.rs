//! `rhizome status`: a running node's status, readable (or `--json`).

use std::fmt::Write;

use serde_json::Value;

use crate::client::Client;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub node: crate::args::NodeArg,
    /// Print the raw JSON of `GET /status`.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.node.url);
    let s = client.get("/status", &[]).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", render(&s));
    }
    Ok(())
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// The status as a few readable lines.
pub fn render(s: &Value) -> String {
    let mut out = String::new();
    let store = &s["store"];
    let _ = writeln!(
        out,
        "node {}  (rhizome {}, up {} s)",
        str_of(&s["systemId"]),
        str_of(&s["version"]),
        str_of(&s["uptimeSeconds"])
    );
    let _ = writeln!(
        out,
        "store  {} deltas, {} duplicates since start, {} bytes on disk{}",
        str_of(&store["deltas"]),
        str_of(&store["duplicatesSinceStart"]),
        str_of(&store["diskBytes"]),
        if store["temporary"] == true {
            " (temporary)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "quarantine  {} deltas",
        str_of(&s["quarantine"]["deltas"])
    );
    let p = &s["policies"];
    let scripts = p["scripts"].as_array().map_or(0, Vec::len);
    let _ = writeln!(
        out,
        "policies  set {}, {} scripts, {} evaluations, {} rejections, {} runtime errors, {} reloads",
        str_of(&p["hash"]),
        scripts,
        str_of(&p["evaluations"]),
        str_of(&p["rejections"]),
        str_of(&p["runtimeErrors"]),
        str_of(&p["reloads"])
    );
    for e in p["errors"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  error  {}:{}:{}: {}",
            str_of(&e["file"]),
            str_of(&e["line"]),
            str_of(&e["column"]),
            str_of(&e["message"])
        );
    }
    let links = s["links"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "links  {}", links.len());
    for l in links {
        let st = &l["stats"];
        let _ = write!(
            out,
            "  {} {:<8} {:<12} {} {}  sent {} received {} rejected {}",
            str_of(&l["name"]),
            str_of(&l["direction"]),
            str_of(&l["status"]),
            str_of(&l["remoteSystemId"]),
            str_of(&l["remoteUrl"]),
            str_of(&st["deltasSent"]),
            str_of(&st["deltasReceived"]),
            str_of(&st["deltasRejected"]),
        );
        if let Some(p) = st.get("syncProgress").filter(|p| !p.is_null()) {
            let _ = write!(
                out,
                "  syncing {}/{}",
                str_of(&p["done"]),
                str_of(&p["total"])
            );
        }
        if !l["lastError"].is_null() && l["status"] != "connected" {
            let _ = write!(out, "  last error: {}", str_of(&l["lastError"]));
        }
        let _ = writeln!(out);
    }
    out
}
