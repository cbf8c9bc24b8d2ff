//! `rhizome policy ...` on the shipped bridge config (`policies/`, `filters/`) and on
//! broken scripts and cases in temporary folders, and `rhizome quarantine ...` against
//! real `rhizome serve` processes: what an operator runs before and after a deployment.

use crate::common;

use std::path::{Path, PathBuf};

use common::cli::{run_in, run_with_stdin, serve, wait_for, wait_until, Serving};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped folders, as flags.
fn shipped() -> Vec<String> {
    let r = repo();
    vec![
        "--policies".into(),
        r.join("policies").display().to_string(),
        "--filters".into(),
        r.join("filters").display().to_string(),
    ]
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent folder")).expect("mkdir");
    std::fs::write(path, text).expect("write file");
}

const SHIPPED_SCRIPTS: [&str; 7] = [
    "policies/reject-future-timestamps.rhai",
    "policies/anonymous/read-only.rhai",
    "policies/partner/system-allowlist.rhai",
    "policies/public/author-allowlist.rhai",
    "policies/public/require-verified.rhai",
    "filters/push/public-only.rhai",
    "filters/pull/public/max-pointers.rhai",
];

#[test]
fn policy_check_is_clean_on_the_shipped_scripts() {
    // From the repo root, the defaults find ./policies and ./filters.
    let ran = run_in(&repo(), &["policy", "check"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.out, ran.err);
    for file in SHIPPED_SCRIPTS {
        assert!(
            ran.out
                .lines()
                .any(|l| l.starts_with("ok") && l.ends_with(file)),
            "{file} is not listed as ok:\n{}",
            ran.out
        );
    }
    assert!(
        ran.out
            .contains("7 scripts compile (trust 5, push 1, pull 1)"),
        "{}",
        ran.out
    );
    assert!(
        ran.err.is_empty(),
        "warnings on the shipped scripts: {}",
        ran.err
    );
}

#[test]
fn policy_check_reports_a_broken_script_at_its_line_and_column() {
    let tmp = tempfile::tempdir().expect("temp dir");
    write(&tmp.path().join("policies/fine.rhai"), "true\n");
    write(
        &tmp.path().join("policies/public/broken.rhai"),
        "// a typo on line 3\nlet allowed = [\"alice\"];\nif delta.author in allowed { true } else { \"no\" \n",
    );
    let ran = run_in(tmp.path(), &["policy", "check"]);
    assert_eq!(ran.code, Some(1), "{}{}", ran.out, ran.err);
    assert!(
        ran.err
            .lines()
            .any(|l| l.starts_with("policies/public/broken.rhai:4:1: ")),
        "no FILE:LINE:COL diagnostic:\n{}",
        ran.err
    );
    assert!(
        ran.out.contains("failed  trust  peer public")
            && ran.out.contains("ok      trust  all peers"),
        "{}",
        ran.out
    );
    assert!(
        ran.err.contains("1 script does not compile (of 2)"),
        "{}",
        ran.err
    );

    // A folder that is not there is named, not silently skipped.
    let ran = run_in(tmp.path(), &["policy", "check", "--filters", "nowhere"]);
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.err.contains("nowhere is not a directory"),
        "{}",
        ran.err
    );
}

/// Cases in the shipped case files (one per line that is not blank or a comment).
fn shipped_case_count() -> usize {
    let dir = repo().join("policies/tests");
    std::fs::read_dir(&dir)
        .expect("policies/tests")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).expect("read cases"))
        .map(|t| {
            t.lines()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//"))
                .count()
        })
        .sum()
}

#[test]
fn policy_test_passes_the_shipped_cases() {
    let cases = shipped_case_count();
    assert!(cases >= 25, "only {cases} shipped cases");
    let want = format!("{cases} passed, 0 failed");
    // As an operator runs it from the repo root...
    let ran = run_in(&repo(), &["policy", "test"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.out, ran.err);
    assert_eq!(
        ran.out.trim_end().lines().last(),
        Some(want.as_str()),
        "{}",
        ran.out
    );
    // ...and with the folders given, from anywhere.
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut args = vec!["policy".to_owned(), "test".to_owned()];
    args.extend(shipped());
    let ran = run_in(tmp.path(), &args);
    assert_eq!(ran.code, Some(0), "{}{}", ran.out, ran.err);
    assert!(ran.out.contains(&want), "{}", ran.out);
}

#[test]
fn policy_test_reports_a_case_that_expects_the_wrong_verdict() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cases = tmp.path().join("wrong.jsonl");
    write(
        &cases,
        concat!(
            "// mallory is not on the public allow-list: this case is wrong on purpose\n",
            r#"{"name": "mallory on public", "link": {"name": "public"}, "delta": {"id": "w1", "timestamp": 1700000000000, "author": "mallory", "system": "s", "pointers": [{"role": "verified", "target": true}]}, "trust": "accept"}"#,
            "\n",
            r#"{"name": "alice on public", "link": {"name": "public"}, "delta": {"id": "w2", "timestamp": 1700000000000, "author": "alice", "system": "s", "pointers": [{"role": "verified", "target": true}]}, "trust": "accept"}"#,
            "\n",
        ),
    );
    let mut args = vec![
        "policy".to_owned(),
        "test".to_owned(),
        cases.display().to_string(),
    ];
    args.extend(shipped());
    let ran = run_in(tmp.path(), &args);
    assert_eq!(ran.code, Some(1), "{}{}", ran.out, ran.err);
    let fail = ran
        .out
        .lines()
        .find(|l| l.starts_with("FAIL "))
        .unwrap_or_else(|| panic!("no FAIL line:\n{}", ran.out));
    assert!(
        fail.contains("wrong.jsonl:2 (mallory on public) [trust]")
            && fail.contains("public/author-allowlist.rhai")
            && fail.contains("author mallory is not on the allow-list"),
        "{fail}"
    );
    assert!(ran.out.contains("1 passed, 1 failed"), "{}", ran.out);

    // A case file that is not JSON: the file and the line are named.
    write(&cases, "{\"delta\": {}, \"trust\": \"accept\"}\n{oops\n");
    let ran = run_in(tmp.path(), &args);
    assert_eq!(ran.code, Some(1));
    assert!(ran.err.contains("wrong.jsonl:2: not JSON"), "{}", ran.err);
    // A misspelt field is named too.
    write(&cases, "{\"delta\": {}, \"trsut\": \"accept\"}\n");
    let ran = run_in(tmp.path(), &args);
    assert_eq!(ran.code, Some(1));
    assert!(ran.err.contains("unknown field `trsut`"), "{}", ran.err);
}

#[test]
fn policy_test_fails_when_a_script_does_not_compile() {
    let tmp = tempfile::tempdir().expect("temp dir");
    write(&tmp.path().join("policies/broken.rhai"), "let x = ;\n");
    write(
        &tmp.path().join("policies/tests/one.json"),
        r#"{"delta": {"id": "a", "timestamp": 1, "author": "a", "system": "s", "pointers": []}, "trust": "reject"}"#,
    );
    let ran = run_in(tmp.path(), &["policy", "test"]);
    assert_eq!(ran.code, Some(1), "{}{}", ran.out, ran.err);
    // The broken script rejects everything (fail closed), so the case passes, but the
    // run still fails and says why.
    assert!(ran.out.contains("1 passed, 0 failed"), "{}", ran.out);
    assert!(
        ran.err.contains("policies/broken.rhai:1:9: "),
        "{}",
        ran.err
    );
    assert!(
        ran.err.contains("error: 1 script does not compile"),
        "{}",
        ran.err
    );
}

/// Issue 14, finding 5: a script that would stall every delta is caught before a
/// deployment. `sleep` is a compile error at its line; a script that runs past its time
/// budget rejects, and `policy test` shows the time budget as the reason.
#[test]
fn policy_check_refuses_sleep_and_policy_test_shows_a_time_out_issue_14() {
    let tmp = tempfile::tempdir().expect("temp dir");
    write(
        &tmp.path().join("policies/nap.rhai"),
        "// wait for the upstream to settle\nsleep(20);\ntrue\n",
    );
    let ran = run_in(tmp.path(), &["policy", "check"]);
    assert_eq!(ran.code, Some(1), "{}{}", ran.out, ran.err);
    assert!(
        ran.err.lines().any(
            |l| l.starts_with("policies/nap.rhai:2:") && l.contains("sleep() is not available")
        ),
        "no FILE:LINE diagnostic for sleep:\n{}",
        ran.err
    );

    std::fs::remove_file(tmp.path().join("policies/nap.rhai")).expect("rm");
    write(
        &tmp.path().join("policies/heavy.rhai"),
        r#"let s = ""; s.pad(60000, "y"); let n = 0; while n < 1000000 { let t = s.to_upper(); n += 1; } true"#,
    );
    write(
        &tmp.path().join("policies/tests/heavy.json"),
        r#"{"name": "too slow", "delta": {"id": "a", "timestamp": 1, "author": "a", "system": "s", "pointers": []}, "trust": "reject", "reason": "time budget of 50 ms"}"#,
    );
    let started = std::time::Instant::now();
    let ran = run_in(tmp.path(), &["policy", "test"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.out, ran.err);
    assert!(ran.out.contains("1 passed, 0 failed"), "{}", ran.out);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

const MALLORY: &str = r#"{"id": "e1", "timestamp": 1700000000000, "author": "mallory", "system": "partner-hq",
  "pointers": [{"role": "text", "target": "hi"}]}"#;

#[test]
fn policy_eval_prints_every_script_verdict_in_order() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("delta.json");
    write(&file, MALLORY);
    let mut args = vec![
        "policy".to_owned(),
        "eval".to_owned(),
        "--delta".to_owned(),
        file.display().to_string(),
        "--link".to_owned(),
        "public".to_owned(),
    ];
    args.extend(shipped());
    let ran = run_in(tmp.path(), &args);
    assert_eq!(ran.code, Some(0), "{}{}", ran.out, ran.err);
    let lines: Vec<&str> = ran.out.lines().collect();
    let expected = [
        ("trust  accept", "policies/reject-future-timestamps.rhai"),
        ("trust  reject", "policies/public/author-allowlist.rhai"),
        ("trust  reject", "policies/public/require-verified.rhai"),
        (
            "trust  => reject, decided by",
            "policies/public/author-allowlist.rhai",
        ),
        ("push   reject", "filters/push/public-only.rhai"),
        ("push   => reject", "public-only.rhai"),
        ("pull   accept", "filters/pull/public/max-pointers.rhai"),
        ("pull   => accept", ""),
    ];
    assert_eq!(lines.len(), expected.len(), "{}", ran.out);
    for (line, (start, file)) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(start) && line.contains(file),
            "{line:?} vs {start:?} {file:?}"
        );
    }
    assert!(lines[1].ends_with("public link: author mallory is not on the allow-list"));

    // The same delta from the partner, on stdin, as JSON lines: trust scripts only.
    let mut args = vec!["policy", "eval", "--delta", "-", "--link", "partner"];
    args.extend(["--kind", "trust", "--json"]);
    let ran = run_with_stdin(&args, MALLORY);
    let runs = ran.json_lines();
    assert_eq!(runs.len(), 2, "{}", ran.out);
    assert!(runs
        .iter()
        .all(|r| r["kind"] == "trust" && r["verdict"] == "accept"));
    assert!(runs[1]["file"]
        .as_str()
        .is_some_and(|f| f.ends_with("policies/partner/system-allowlist.rhai")));
    assert!(runs.iter().all(|r| r["micros"].is_u64()));

    // A delta that is not valid: the file and the field are named.
    write(
        &file,
        r#"{"id": "e1", "timestamp": 1, "author": "", "system": "s", "pointers": []}"#,
    );
    let ran = run_in(tmp.path(), &args_with_delta(&file));
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.err
            .contains("delta.json: invalid delta: author must be a non-empty string"),
        "{}",
        ran.err
    );
    write(&file, "{\"id\": \"e1\",\n  \"timestamp\": }");
    let ran = run_in(tmp.path(), &args_with_delta(&file));
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.err.contains("delta.json:2:16: not valid JSON"),
        "{}",
        ran.err
    );
}

fn args_with_delta(file: &Path) -> Vec<String> {
    let mut args = vec![
        "policy".to_owned(),
        "eval".to_owned(),
        "--delta".to_owned(),
        file.display().to_string(),
    ];
    args.extend(shipped());
    args
}

/// Runs a client command against `node` and decodes its stdout lines.
fn node_json(node: &Serving, args: &[&str]) -> (Vec<Value>, String) {
    let mut all = args.to_vec();
    all.extend(["--node", &node.url]);
    let ran = run_in(&repo(), &all);
    (ran.json_lines(), ran.err)
}

#[test]
fn quarantine_list_and_replay_talk_to_the_node() {
    let node = serve(&[]);
    let (entries, summary) = node_json(&node, &["quarantine", "list", "--json"]);
    assert!(entries.is_empty(), "{entries:?}");
    assert!(summary.contains("0 shown of 0 quarantined"), "{summary}");
    let (report, _) = node_json(&node, &["quarantine", "replay"]);
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(report[0]["admitted"], 0, "{report:?}");
    assert_eq!(report[0]["stillRejected"], 0, "{report:?}");

    let ran = run_in(
        &repo(),
        &["quarantine", "list", "--node", "http://127.0.0.1:9"],
    );
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.err.contains("no rhizome node is answering"),
        "{}",
        ran.err
    );
}

#[test]
fn a_refused_delta_is_listed_then_admitted_by_a_replay_after_the_policy_changes() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let policy = tmp.path().join("policies/hold.rhai");
    write(
        &policy,
        r#"if delta.author == "mallory" { reject("mallory is on hold") } true"#,
    );
    let b = serve(&[
        "--policies",
        &tmp.path().join("policies").display().to_string(),
    ]);
    let a = serve(&["--connect", &b.url]);
    let put = |author: &str| {
        let (lines, _) = node_json(&a, &["put", "--author", author, "-p", "text=hi"]);
        lines[0]["id"].as_str().expect("delta id").to_owned()
    };
    let held = put("mallory");
    let fine = put("alice");
    wait_until("alice's delta on b", || b.has_delta(&fine));

    let entry = wait_for("mallory's delta in b's quarantine", || {
        node_json(&b, &["quarantine", "list", "--json"])
            .0
            .into_iter()
            .next()
    });
    assert_eq!(entry["delta"]["id"], held.as_str(), "{entry}");
    assert_eq!(entry["reason"], "mallory is on hold", "{entry}");
    assert!(
        entry["policy"]
            .as_str()
            .is_some_and(|p| p.ends_with("hold.rhai")),
        "{entry}"
    );
    assert!(!b.has_delta(&held));
    let (_, summary) = node_json(&b, &["quarantine", "list", "--json", "--limit", "5"]);
    assert!(summary.contains("1 shown of 1 quarantined"), "{summary}");

    // Still refused under the same policy.
    let (report, _) = node_json(&b, &["quarantine", "replay"]);
    assert_eq!(report[0]["stillRejected"], 1, "{report:?}");

    // The operator lifts the hold; the node reloads the file by itself.
    write(&policy, "true\n");
    wait_until("the replay to admit mallory's delta", || {
        let (report, _) = node_json(&b, &["quarantine", "replay"]);
        report[0]["admitted"] == 1
    });
    assert!(b.has_delta(&held));
    let (entries, _) = node_json(&b, &["quarantine", "list", "--json"]);
    assert!(entries.is_empty(), "{entries:?}");
}

/// Cases may carry signed deltas: scripts see the signer only when the signature
/// verifies, so a forged one is judged as unsigned, as the node would judge it.
#[test]
fn policy_test_cases_carry_signed_deltas() {
    use rhizome::identity::NodeKey;
    let tmp = tempfile::tempdir().expect("temp dir");
    let alice = NodeKey::generate().unwrap();
    let mallory = NodeKey::generate().unwrap();
    write(
        &tmp.path().join("policies/signed.rhai"),
        &format!(
            "if delta.author == \"alice\" && !signed_by(delta, \"{}\") {{ reject(`alice signs (signer: ${{delta.signer}})`) }}\naccept()\n",
            alice.public_base64()
        ),
    );
    let delta = |key: &NodeKey| {
        let mut d = rhizome::delta::new_delta(
            "alice",
            "s",
            vec![rhizome::Pointer::new("says", "hi".into())],
        );
        d.sign(key).unwrap();
        d
    };
    let mut forged = delta(&mallory);
    forged.extra["signature"]["key"] = alice.public_base64().into();
    let cases = [
        serde_json::json!({"name": "hers", "delta": delta(&alice), "trust": "accept"}),
        serde_json::json!({"name": "mallory's", "delta": delta(&mallory), "trust": "reject",
            "reason": format!("signer: {}", mallory.public_base64())}),
        serde_json::json!({"name": "forged", "delta": forged, "trust": "reject", "reason": "(signer: )"}),
    ];
    let text: String = cases.iter().map(|c| format!("{c}\n")).collect();
    write(&tmp.path().join("cases.jsonl"), &text);
    let ran = run_in(
        tmp.path(),
        &["policy", "test", "cases.jsonl", "--policies", "policies"],
    );
    assert_eq!(ran.code, Some(0), "{}{}", ran.out, ran.err);
    assert!(ran.out.contains("3 passed, 0 failed"), "{}", ran.out);
}
