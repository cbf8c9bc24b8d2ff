use std::fs;

use super::*;
use crate::delta::{new_delta, Pointer, Target};

fn dirs(root: &Path) -> PolicyDirs {
    fs::create_dir_all(root.join("policies")).unwrap();
    fs::create_dir_all(root.join("filters/push")).unwrap();
    fs::create_dir_all(root.join("filters/pull")).unwrap();
    PolicyDirs {
        policies: Some(root.join("policies")),
        filters: Some(root.join("filters")),
    }
}

fn link(name: &str) -> LinkContext {
    LinkContext {
        name: name.into(),
        ..Default::default()
    }
}

fn reason(v: Verdict) -> (String, String) {
    match v {
        Verdict::Reject { script, reason } => (script, reason),
        Verdict::Accept => panic!("expected a rejection"),
    }
}

#[test]
fn scripts_compose_with_and_in_file_order_and_the_first_rejection_decides() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(tmp.path());
    let p = tmp.path().join("policies");
    fs::write(
        p.join("10-author.rhai"),
        r#"if delta.author == "eve" { reject("eve is banned") } true"#,
    )
    .unwrap();
    fs::write(p.join("20-verified.rhai"), r#"has_role(delta, "verified")"#).unwrap();
    // Would fail at run time: proves scripts after a rejection are skipped.
    fs::write(
        p.join("30-boom.rhai"),
        r#"if delta.author == "eve" { throw "reached" } true"#,
    )
    .unwrap();
    let set = PolicySet::load(&d, None).unwrap();
    let verified = new_delta(
        "alice",
        "s",
        vec![Pointer::new("verified", Target::Bool(true))],
    );
    let plain = new_delta("alice", "s", vec![]);
    let eve = new_delta(
        "eve",
        "s",
        vec![Pointer::new("verified", Target::Bool(true))],
    );
    assert!(set
        .judge(ScriptKind::Trust, &link("x"), &verified)
        .is_accept());
    let (script, why) = reason(set.judge(ScriptKind::Trust, &link("x"), &plain));
    assert!(script.ends_with("20-verified.rhai"), "{script}");
    assert!(why == "the script returned false", "{why}");
    let (script, why) = reason(set.judge(ScriptKind::Trust, &link("x"), &eve));
    assert!(script.ends_with("10-author.rhai"));
    assert_eq!(why, "eve is banned");
    assert_eq!(set.counters().runtime_errors.load(Ordering::Relaxed), 0);
    // Push and pull have no scripts: everything passes.
    assert!(set.judge(ScriptKind::Push, &link("x"), &eve).is_accept());
}

#[test]
fn scripts_in_a_link_folder_apply_to_that_link_only() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(tmp.path());
    let public = tmp.path().join("filters/push/public");
    fs::create_dir_all(&public).unwrap();
    fs::write(
        public.join("only-public.rhai"),
        r#"if has_role(delta, "public") { true } else { "not marked public" }"#,
    )
    .unwrap();
    let set = PolicySet::load(&d, None).unwrap();
    let private = new_delta("a", "s", vec![]);
    assert!(set
        .judge(ScriptKind::Push, &link("partner"), &private)
        .is_accept());
    let (_, why) = reason(set.judge(ScriptKind::Push, &link("public"), &private));
    assert_eq!(why, "not marked public");
    assert!(set.applies(ScriptKind::Push, "public") && !set.applies(ScriptKind::Push, "partner"));
}

#[test]
fn runtime_errors_and_endless_loops_fail_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(tmp.path());
    let p = tmp.path().join("policies");
    fs::write(
        p.join("a-loop.rhai"),
        "if delta.author == \"loop\" { loop {} } true",
    )
    .unwrap();
    fs::write(
        p.join("b-err.rhai"),
        "if delta.author == \"err\" { delta.pointers[99].role } true",
    )
    .unwrap();
    fs::write(
        p.join("c-unit.rhai"),
        "if delta.author != \"unit\" { true }",
    )
    .unwrap();
    let set = PolicySet::load(&d, None).unwrap();
    let started = Instant::now();
    let (_, why) = reason(set.judge(
        ScriptKind::Trust,
        &link("x"),
        &new_delta("loop", "s", vec![]),
    ));
    assert!(why.contains("ran too long"), "{why}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let (_, why) = reason(set.judge(
        ScriptKind::Trust,
        &link("x"),
        &new_delta("err", "s", vec![]),
    ));
    assert!(why.contains("script error"), "{why}");
    let (_, why) = reason(set.judge(
        ScriptKind::Trust,
        &link("x"),
        &new_delta("unit", "s", vec![]),
    ));
    assert!(why.contains("returned nothing"), "{why}");
    assert_eq!(set.counters().runtime_errors.load(Ordering::Relaxed), 3);
}

#[test]
fn a_broken_edit_keeps_the_last_good_version_and_a_broken_new_file_fails_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(tmp.path());
    let p = tmp.path().join("policies");
    fs::write(p.join("good.rhai"), r#"delta.author != "eve""#).unwrap();
    let first = PolicySet::load(&d, None).unwrap();
    fs::write(p.join("good.rhai"), "delta.author != ").unwrap();
    let second = PolicySet::load(&d, Some(&first)).unwrap();
    let errors = second.errors();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].file.ends_with("good.rhai") && errors[0].line == Some(1),
        "{:?}",
        errors[0]
    );
    assert_eq!(second.scripts()[0].state, "stale");
    assert!(second
        .judge(
            ScriptKind::Trust,
            &link("x"),
            &new_delta("alice", "s", vec![])
        )
        .is_accept());
    assert!(!second
        .judge(
            ScriptKind::Trust,
            &link("x"),
            &new_delta("eve", "s", vec![])
        )
        .is_accept());
    assert_ne!(first.hash(), second.hash());

    fs::write(p.join("new.rhai"), "let = ;").unwrap();
    let third = PolicySet::load(&d, Some(&second)).unwrap();
    let (script, why) = reason(third.judge(
        ScriptKind::Trust,
        &link("x"),
        &new_delta("alice", "s", vec![]),
    ));
    assert!(
        script.ends_with("new.rhai") && why.contains("does not compile"),
        "{why}"
    );
    let misspelt = compile(&sandboxed_engine(), "detla.author == \"x\"").unwrap_err();
    assert!(misspelt.message.contains("detla"), "{misspelt}");

    fs::remove_file(p.join("new.rhai")).unwrap();
    fs::write(p.join("good.rhai"), "true").unwrap();
    let fourth = PolicySet::load(&d, Some(&third)).unwrap();
    assert!(fourth.errors().is_empty());
    assert!(fourth
        .judge(
            ScriptKind::Trust,
            &link("x"),
            &new_delta("eve", "s", vec![])
        )
        .is_accept());
}

/// Each operation is slow (a 60 kB string copied and upper-cased), so the operation
/// limit is far away when the time budget runs out.
const HEAVY: &str = r#"let s = ""; s.pad(60000, "y"); let n = 0; while n < 1000000 { let t = s.to_upper(); n += 1; } true"#;

#[test]
fn a_script_over_its_time_budget_is_rejected_within_the_budget_issue_14() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(tmp.path());
    fs::write(tmp.path().join("policies/heavy.rhai"), HEAVY).unwrap();
    fs::write(tmp.path().join("filters/push/heavy.rhai"), HEAVY).unwrap();
    fs::write(tmp.path().join("filters/pull/heavy.rhai"), HEAVY).unwrap();
    let set = PolicySet::load(&d, None).unwrap();
    assert_eq!(set.time_budget(), super::super::engine::DEFAULT_TIME_BUDGET);
    set.set_time_budget(Duration::from_millis(20));
    let delta = new_delta("alice", "s", vec![]);
    for kind in ScriptKind::ALL {
        let started = Instant::now();
        let (script, why) = reason(set.judge(kind, &link("x"), &delta));
        let took = started.elapsed();
        assert!(script.ends_with("heavy.rhai"), "{script}");
        assert!(why.contains("time budget of 20 ms"), "{kind:?}: {why}");
        // Stopped at the budget, not at the operation limit or the loop's end.
        assert!(
            took >= Duration::from_millis(20) && took < Duration::from_millis(500),
            "{kind:?}: {took:?}"
        );
    }
    let c = set.counters();
    assert_eq!(c.timeouts.load(Ordering::Relaxed), 3);
    assert_eq!(c.rejections.load(Ordering::Relaxed), 3);
    assert_eq!(c.runtime_errors.load(Ordering::Relaxed), 0);

    // A reload keeps the budget; a cheap script is unaffected by it.
    fs::write(tmp.path().join("policies/heavy.rhai"), "true").unwrap();
    let next = PolicySet::load(&d, Some(&set)).unwrap();
    assert_eq!(next.time_budget(), Duration::from_millis(20));
    assert!(next
        .judge(ScriptKind::Trust, &link("x"), &delta)
        .is_accept());
}

#[test]
fn a_sleeping_script_is_refused_at_load_and_rejects_at_once_issue_14() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(tmp.path());
    fs::write(tmp.path().join("policies/nap.rhai"), "sleep(20); true").unwrap();
    let set = PolicySet::load(&d, None).unwrap();
    let errors = set.errors();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].message.contains("sleep() is not available") && errors[0].line == Some(1),
        "{}",
        errors[0]
    );
    let started = Instant::now();
    let (_, why) = reason(set.judge(
        ScriptKind::Trust,
        &link("x"),
        &new_delta("alice", "s", vec![]),
    ));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(why.contains("does not compile"), "{why}");
}

#[test]
fn sleep_is_a_compile_error_at_its_line() {
    let engine = super::super::engine::sandboxed_engine();
    for source in [
        "sleep(20); true",
        "let x = 1;\n  sleep(0.5);\ntrue",
        "fn f() { sleep(1) } true",
    ] {
        let e = super::compile(&engine, source).unwrap_err();
        assert!(
            e.message.contains("sleep() is not available"),
            "{source}: {e}"
        );
        assert_eq!(
            e.line,
            Some(source.lines().position(|l| l.contains("sleep")).unwrap() + 1),
            "{source}: {e}"
        );
    }
}

#[test]
fn each_script_counts_its_evaluations_and_rejections_across_edits() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(tmp.path());
    let p = tmp.path().join("policies");
    fs::write(p.join("10-all.rhai"), "true").unwrap();
    fs::write(p.join("20-no-eve.rhai"), r#"delta.author != "eve""#).unwrap();
    let set = PolicySet::load(&d, None).unwrap();
    for author in ["alice", "eve", "bob"] {
        set.judge(
            ScriptKind::Trust,
            &link("x"),
            &new_delta(author, "s", vec![]),
        );
    }
    let counts = |set: &PolicySet| -> Vec<(u64, u64)> {
        set.scripts()
            .iter()
            .map(|s| (s.evaluations, s.rejections))
            .collect()
    };
    assert_eq!(counts(&set), [(3, 0), (3, 1)]);

    // An edit compiles a new version of the file; its counts go on.
    fs::write(p.join("20-no-eve.rhai"), r#"delta.author != "mallory""#).unwrap();
    let next = PolicySet::load(&d, Some(&set)).unwrap();
    next.judge(
        ScriptKind::Trust,
        &link("x"),
        &new_delta("eve", "s", vec![]),
    );
    assert_eq!(counts(&next), [(4, 0), (4, 1)]);
}
