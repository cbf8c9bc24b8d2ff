//! `rhizome status`: a running node's status, readable (or `--json`).

use std::fmt::Write;

use serde_json::Value;

use crate::table;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub node: crate::args::NodeArg,
    /// Print the raw JSON of `GET /status`.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = args.node.client()?;
    let s = client.get("/status", &[]).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", render(&s, &args.node.url));
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

/// `n thing` or `n things`.
fn count(v: &Value, thing: &str) -> String {
    match v.as_u64() {
        Some(1) => format!("1 {thing}"),
        _ => format!("{} {thing}s", str_of(v)),
    }
}

/// The status of the node answering at `url`, as a few readable lines.
pub fn render(s: &Value, url: &str) -> String {
    let mut out = String::new();
    let store = &s["store"];
    let _ = writeln!(
        out,
        "node        {}  (rhizome {}, up {} s)",
        str_of(&s["systemId"]),
        str_of(&s["version"]),
        str_of(&s["uptimeSeconds"])
    );
    let _ = writeln!(
        out,
        "key         {}  (ed25519 public key, `rhizome id`)",
        str_of(&s["publicKey"])
    );
    let _ = writeln!(
        out,
        "api         {url}  (federation endpoint {})",
        str_of(&s["federationPath"])
    );
    let peers = &s["peers"];
    if peers.is_object() {
        let anonymous = if peers["allowAnonymous"] == true {
            "anonymous peers accepted"
        } else {
            "only authenticated peers accepted"
        };
        let _ = writeln!(
            out,
            "peers       {} configured, {anonymous}; refused: {} anonymous, {} failed authentication",
            peers["configured"].as_u64().unwrap_or(0),
            peers["refusedAnonymous"].as_u64().unwrap_or(0),
            peers["failedAuthentication"].as_u64().unwrap_or(0),
        );
    }
    let sig = &s["signatures"];
    if sig.is_object() {
        let signing = sig["signingKey"]
            .as_str()
            .map_or_else(String::new, |k| format!("; signs as {k}"));
        let _ = writeln!(
            out,
            "signatures  {} bound authors, required: {}; {} verified, {} refused{signing}",
            sig["boundAuthors"].as_u64().unwrap_or(0),
            str_of(&sig["require"]),
            sig["verified"].as_u64().unwrap_or(0),
            sig["refused"].as_u64().unwrap_or(0),
        );
    }
    let disk = store["diskBytes"]
        .as_u64()
        .map_or_else(|| "-".to_owned(), table::bytes);
    let data = match store["path"].as_str() {
        Some(path) if store["temporary"] != true => format!("{path}  ({disk} on disk)"),
        Some(_) | None => "temporary, deleted at shutdown".to_owned(),
    };
    let _ = writeln!(out, "data        {data}");
    let _ = writeln!(
        out,
        "store       {}, {} since start",
        count(&store["deltas"], "delta"),
        count(&store["duplicatesSinceStart"], "duplicate")
    );
    let _ = writeln!(
        out,
        "quarantine  {}",
        count(&s["quarantine"]["deltas"], "delta")
    );
    let archive = &s["archive"];
    if archive["deltas"].as_u64().is_some_and(|n| n > 0) {
        let _ = writeln!(
            out,
            "archive     {} in {}",
            count(&archive["deltas"], "delta"),
            archive["bytes"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), table::bytes)
        );
    }
    let p = &s["policies"];
    let scripts = p["scripts"].as_array().map_or(0, Vec::len);
    let _ = writeln!(
        out,
        // Script runs, not deltas: one delta judged by three scripts is three runs, and
        // a replay runs them again. A link's REJECTED counts deltas refused on it, for any
        // reason (invalid, the built-in trust policy, a script).
        "policies    {}, {} (script runs), {} by scripts, {}, {}",
        count(&Value::from(scripts), "script"),
        count(&p["evaluations"], "evaluation"),
        count(&p["rejections"], "rejection"),
        count(&p["runtimeErrors"], "runtime error"),
        count(&p["reloads"], "reload")
    );
    let _ = writeln!(
        out,
        "            set {}  (digest of the scripts in force, as in policy:reloaded and `rhizome policy check`)",
        str_of(&p["hash"])
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
    let _ = writeln!(out, "links       {}", links.len());
    if links.is_empty() {
        return out;
    }
    let rows: Vec<Vec<String>> = links.iter().map(link_row).collect();
    out.push_str(&table::render(
        "  ",
        &[
            "NAME",
            "DIRECTION",
            "STATUS",
            "SYSTEM",
            "PEER",
            "URL",
            "SENT",
            "RECEIVED",
            "REJECTED",
            "NOTE",
        ],
        &rows,
    ));
    out
}

fn link_row(l: &Value) -> Vec<String> {
    let st = &l["stats"];
    let mut note = String::new();
    if let Some(p) = st.get("syncProgress").filter(|p| !p.is_null()) {
        note = format!("syncing {}/{}", str_of(&p["done"]), str_of(&p["total"]));
    }
    if !l["lastError"].is_null() && l["status"] != "connected" {
        note = format!("last error: {}", str_of(&l["lastError"]));
    }
    // Who the peer proved to be; a claimed system id is only what it says.
    let peer = match &l["peer"] {
        p if p["authenticated"] == true => format!("{} (proven)", str_of(&p["name"])),
        p if p.is_object() => str_of(&p["name"]),
        _ => "-".to_owned(),
    };
    vec![
        str_of(&l["name"]),
        str_of(&l["direction"]),
        str_of(&l["status"]),
        str_of(&l["remoteSystemId"]),
        peer,
        str_of(&l["remoteUrl"]),
        str_of(&st["deltasSent"]),
        str_of(&st["deltasReceived"]),
        str_of(&st["deltasRejected"]),
        note,
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::render;

    #[test]
    fn status_reads_as_sizes_addresses_and_a_link_table_issue_16() {
        let status = json!({
            "systemId": "node-b", "version": "0.1.0", "uptimeSeconds": 12,
            "publicKey": "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1",
            "federationPath": "/federation",
            "store": {"path": "/srv/b", "temporary": false, "deltas": 1,
                      "duplicatesSinceStart": 0, "diskBytes": 67_108_864},
            "quarantine": {"deltas": 2},
            "archive": {"deltas": 3, "bytes": 2048},
            "policies": {"hash": "00c0ffee00c0ffee", "scripts": [{}], "evaluations": 4,
                         "rejections": 1, "runtimeErrors": 0, "reloads": 2, "errors": []},
            "links": [{"name": "upstream", "direction": "outbound", "status": "connected",
                       "remoteSystemId": "node-a", "remoteUrl": "ws://a/federation",
                       "peer": {"name": "upstream", "authenticated": true},
                       "stats": {"deltasSent": 0, "deltasReceived": 3, "deltasRejected": 1},
                       "lastError": null}]
        });
        let text = render(&status, "http://127.0.0.1:8081");
        for want in [
            "key         19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1",
            "api         http://127.0.0.1:8081  (federation endpoint /federation)",
            "data        /srv/b  (64.0 MiB on disk)",
            "store       1 delta, 0 duplicates since start",
            "quarantine  2 deltas",
            "archive     3 deltas in ",
            "1 script, 4 evaluations (script runs), 1 rejection by scripts",
            "set 00c0ffee00c0ffee  (digest of the scripts in force",
            "  NAME      DIRECTION  STATUS     SYSTEM  PEER               URL",
            "  upstream  outbound   connected  node-a  upstream (proven)  ws://a/federation  0     3         1",
        ] {
            assert!(text.contains(want), "no {want:?} in:\n{text}");
        }
    }
}
