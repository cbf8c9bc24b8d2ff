//! The signing tools, run as an operator runs them: `rhizome keygen` makes a key,
//! `put --sign` and `negate --sign` store deltas a node (and anyone after it) can verify,
//! and `rhizome verify` checks a file of deltas offline, failing on a tampered or (when
//! asked) an unsigned one.

use std::path::Path;

use rhizome::delta::Signed;
use rhizome::identity::parse_any_key;
use rhizome::Delta;
use serde_json::Value;

use crate::common::cli::{run, run_in, run_with_stdin, serve, Ran};

/// `rhizome keygen --out FILE` in `dir`; the public key it printed (base64url).
fn keygen(dir: &Path, file: &str) -> String {
    let ran = run_in(dir, &["keygen", "--out", file]);
    assert!(ran.ok(), "{}", ran.err);
    printed_key(&ran.out)
}

fn printed_key(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .unwrap_or_else(|| panic!("no public key in: {out}"))
        .to_owned()
}

/// The delta `id` as the node serves it (`rhizome get`, over HTTP).
fn fetch(url: &str, id: &str) -> Delta {
    let ran = run(&["get", "--node", url, id]);
    assert!(ran.ok(), "{}", ran.err);
    Delta::parse(ran.out.trim()).expect("the node serves a valid delta")
}

/// The ids of the stored deltas a `put` printed.
fn stored_ids(ran: &Ran) -> Vec<String> {
    ran.json_lines()
        .iter()
        .map(|v| {
            assert_eq!(v["status"], "stored", "{v}");
            v["id"].as_str().expect("an id").to_owned()
        })
        .collect()
}

#[test]
fn keygen_writes_a_private_key_once_and_prints_its_public_half() {
    let dir = tempfile::tempdir().unwrap();
    let ran = run_in(dir.path(), &["keygen", "--out", "alice.key"]);
    assert!(ran.ok(), "{}", ran.err);
    let public = printed_key(&ran.out);
    assert!(parse_any_key(&public).is_ok(), "{public}");
    let hex = ran
        .out
        .lines()
        .find_map(|l| l.strip_prefix("public key (hex): "))
        .expect("the hex form");
    assert_eq!(parse_any_key(hex), parse_any_key(&public));
    assert!(
        ran.out.contains(&format!(
            "[[author]]\nname = \"alice\"\nkeys = [\"{public}\"]"
        )),
        "{}",
        ran.out
    );
    let path = dir.path().join("alice.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let before = std::fs::read(&path).unwrap();
    run_in(dir.path(), &["keygen", "--out", "alice.key"])
        .assert_fails_saying(&["alice.key already exists", "never overwrites"]);
    assert_eq!(std::fs::read(&path).unwrap(), before, "the key is kept");

    // `--print`: the PEM alone on stdout, nothing on disk.
    let printed = run_in(dir.path(), &["keygen", "--print"]);
    assert!(printed.ok(), "{}", printed.err);
    assert!(printed.out.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(printed.err.contains("public key: "), "{}", printed.err);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    run_in(dir.path(), &["keygen"]).assert_fails_saying(&["--out <FILE>|--print"]);
}

#[test]
fn put_and_negate_sign_deltas_that_verify_as_the_node_stores_them() {
    let dir = tempfile::tempdir().unwrap();
    let public = keygen(dir.path(), "alice.key");
    let key = parse_any_key(&public).unwrap();
    let key_file = dir.path().join("alice.key");
    let key_file = key_file.to_str().unwrap();
    let node = serve(&[]);

    // Shorthand flags: the whole delta is built here, with the node's system.
    let ran = run(&[
        "put",
        "--node",
        &node.url,
        "--sign",
        key_file,
        "--author",
        "alice",
        "-p",
        "title=Hello",
        "-p",
        "post=@post-1#title",
        "-p",
        "price:=1.50",
    ]);
    let id = stored_ids(&ran).remove(0);
    let stored = fetch(&node.url, &id);
    assert_eq!(stored.verify(), Signed::By(key));
    assert_eq!(stored.system, node.system_id);
    assert_eq!(stored.author, "alice");

    // Stdin: a full delta signed as given, and the shorthand completed first.
    let lines = "{\"id\":\"full-1\",\"timestamp\":5,\"author\":\"alice\",\"system\":\"elsewhere\",\"pointers\":[],\"app\":{\"n\":1e2}}\n\
                 {\"author\":\"alice\",\"pointers\":[{\"role\":\"text\",\"target\":\"hi\"}]}\n";
    let ran = run_with_stdin(&["put", "--node", &node.url, "--sign", key_file], lines);
    let ids = stored_ids(&ran);
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], "full-1");
    for id in &ids {
        assert_eq!(fetch(&node.url, id).verify(), Signed::By(key), "{id}");
    }
    assert_eq!(fetch(&node.url, &ids[0]).system, "elsewhere");
    assert_eq!(fetch(&node.url, &ids[1]).system, node.system_id);
    run_with_stdin(
        &["put", "--node", &node.url, "--sign", key_file],
        "{\"id\":\"x\",\"author\":\"alice\",\"pointers\":[]}",
    )
    .assert_fails_saying(&["stdin delta 1", "timestamp"]);

    // `--system` names another system; a negation is signed the same way.
    let ran = run(&[
        "put",
        "--node",
        &node.url,
        "--sign",
        key_file,
        "--system",
        "laptop",
        "--author",
        "alice",
        "-p",
        "text=draft",
    ]);
    let draft = stored_ids(&ran).remove(0);
    assert_eq!(fetch(&node.url, &draft).system, "laptop");
    let ran = run(&[
        "negate", "--node", &node.url, "--sign", key_file, "--author", "alice", "--reason", "typo",
        &draft,
    ]);
    let negation = stored_ids(&ran).remove(0);
    let stored = fetch(&node.url, &negation);
    assert_eq!(stored.verify(), Signed::By(key));
    assert_eq!(stored.negated_ids().collect::<Vec<_>>(), [draft.as_str()]);
    run(&[
        "negate",
        "--node",
        &node.url,
        "--sign",
        key_file,
        "no-such-delta",
    ])
    .assert_fails_saying(&["no-such-delta", "404"]);
    run(&[
        "put",
        "--node",
        &node.url,
        "--sign",
        "/nonexistent.key",
        "--author",
        "a",
        "-p",
        "t=x",
    ])
    .assert_fails_saying(&["--sign key", "/nonexistent.key"]);
}

#[test]
fn verify_passes_good_deltas_and_names_each_failure() {
    let dir = tempfile::tempdir().unwrap();
    let public = keygen(dir.path(), "alice.key");
    let node = serve(&[]);
    let key_file = dir.path().join("alice.key");
    for text in ["one", "two"] {
        let ran = run(&[
            "put",
            "--node",
            &node.url,
            "--sign",
            key_file.to_str().unwrap(),
            "--author",
            "alice",
            "-p",
            &format!("text={text}"),
        ]);
        assert!(ran.ok(), "{}", ran.err);
    }
    // What `rhizome query` prints is what `verify` reads.
    let exported = run(&["query", "--node", &node.url]);
    assert!(exported.ok(), "{}", exported.err);
    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, &exported.out).unwrap();
    let ran = run(&["verify", good.to_str().unwrap()]);
    assert!(ran.ok(), "{}{}", ran.out, ran.err);
    let deltas: Vec<Value> = exported
        .out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for d in &deltas {
        let line = format!("ok {} signed by {public}", d["id"].as_str().unwrap());
        assert!(ran.out.lines().any(|l| l == line), "{line} in {}", ran.out);
    }
    assert!(
        ran.err.contains("all 2 deltas passed (2 signed and valid"),
        "{}",
        ran.err
    );

    // A changed field: exit 1, the delta named with the reason.
    let mut tampered = deltas.clone();
    tampered[1]["pointers"][0]["target"] = "three".into();
    let text: String = tampered.iter().map(|d| format!("{d}\n")).collect();
    let ran = run_with_stdin(&["verify"], &text);
    assert_eq!(ran.code, Some(1), "{}", ran.out);
    let tampered_id = deltas[1]["id"].as_str().unwrap();
    assert!(
        ran.out
            .contains(&format!("BAD {tampered_id}: the signature does not verify")),
        "{}",
        ran.out
    );
    assert!(
        ran.err.contains("1 of 2 deltas failed verification"),
        "{}",
        ran.err
    );

    // Unsigned: fine by default, a failure with --require-signatures; an invalid line
    // is named by its number.
    let mut unsigned = deltas[0].clone();
    unsigned.as_object_mut().unwrap().remove("signature");
    let text = format!("{}\n{unsigned}\n{{\"id\":\"\"}}\n", deltas[1]);
    let ran = run_with_stdin(&["verify", "-"], &format!("{}\n{unsigned}\n", deltas[1]));
    assert!(ran.ok(), "{}", ran.err);
    assert!(ran.out.contains("unsigned "), "{}", ran.out);
    let ran = run_with_stdin(&["verify", "--require-signatures"], &text);
    assert_eq!(ran.code, Some(1));
    let unsigned_id = unsigned["id"].as_str().unwrap();
    assert!(
        ran.out.contains(&format!("UNSIGNED {unsigned_id}")),
        "{}",
        ran.out
    );
    assert!(
        ran.out.contains("INVALID line 3: invalid delta"),
        "{}",
        ran.out
    );

    // `--json`: one object per delta.
    let ran = run_with_stdin(&["verify", "--json", "--require-signatures"], &text);
    let results: Vec<Value> = ran
        .out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(&str, bool)> = results
        .iter()
        .map(|r| (r["result"].as_str().unwrap(), r["pass"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [("ok", true), ("unsigned", false), ("invalid", false)]
    );
    assert_eq!(results[0]["signer"], public.as_str());
    assert_eq!(results[2]["place"], "line 3");
}
