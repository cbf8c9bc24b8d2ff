//! Rounds a peer should not send: each is refused with a reason naming what was wrong.

use super::*;
use crate::federation::reconcile::fingerprint::Fingerprint;
use crate::federation::reconcile::{ReconcileError, WireRange};

fn skip_to(t: u64, h: Option<&str>) -> WireRange {
    WireRange {
        t: Some(t),
        h: h.map(str::to_owned),
        ..WireRange::default()
    }
}

fn ids(ids: Vec<String>) -> WireRange {
    WireRange {
        ids: Some(ids),
        ..WireRange::default()
    }
}

fn fp(fp: &str, n: u64) -> WireRange {
    WireRange {
        fp: Some(fp.to_owned()),
        n: Some(n),
        ..WireRange::default()
    }
}

fn hex(fp: Fingerprint) -> String {
    fp.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn side() -> Side {
    Side::new(&deltas(&mut rng(9), 100))
}

/// The error `role` answers `ranges` with, as text.
fn refusal(role: Role, ranges: Vec<WireRange>) -> String {
    let side = side();
    let mut r = Reconciler::new(side.snapshot.clone(), role);
    let round = Round { ranges };
    match r.step(&round, &mut |seqs| side.ids_at(seqs)) {
        Ok(step) => panic!("accepted: {step:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_refused(role: Role, ranges: Vec<WireRange>, reason: &str) {
    let error = refusal(role, ranges);
    assert!(error.contains(reason), "{error:?} does not say {reason:?}");
    assert!(
        error.starts_with("reconcile round 1 from the peer: "),
        "{error}"
    );
}

#[test]
fn bounds_must_ascend_and_only_the_last_range_ends_at_infinity() {
    let empty = hex(Fingerprint::empty());
    let descending = vec![
        skip_to(100, Some("80")),
        skip_to(0, Some("40")),
        fp(&empty, 0),
    ];
    assert_refused(Role::Source, descending, "range 1: its bound is not above");
    let repeated = vec![skip_to(100, None), skip_to(0, None), WireRange::default()];
    assert_refused(Role::Source, repeated, "range 1: its bound is not above");
    let open_middle = vec![skip_to(5, None), WireRange::default(), fp(&empty, 0)];
    assert_refused(Role::Source, open_middle, "range 1: no bound (t)");
    let bounded_end = vec![skip_to(5, None), skip_to(5, None)];
    assert_refused(
        Role::Source,
        bounded_end,
        "range 1: the last range has a bound",
    );
    let overflow = vec![
        skip_to(u64::MAX, None),
        skip_to(1, None),
        WireRange::default(),
    ];
    assert_refused(
        Role::Source,
        overflow,
        "range 1: t 1 takes the timestamp past",
    );
    let bad_prefix = vec![skip_to(5, Some("ABC")), WireRange::default()];
    assert_refused(
        Role::Source,
        bad_prefix,
        "range 0: h \"ABC\" is not lowercase hex",
    );
}

#[test]
fn modes_and_counts_must_make_sense() {
    let empty = hex(Fingerprint::empty());
    let lonely_n = WireRange {
        n: Some(3),
        ..WireRange::default()
    };
    assert_refused(
        Role::Source,
        vec![lonely_n],
        "range 0: a range has fp and n",
    );
    let both = WireRange {
        ids: Some(vec![]),
        ..fp(&empty, 0)
    };
    assert_refused(Role::Puller, vec![both], "range 0: a range has fp and n");
    assert_refused(
        Role::Source,
        vec![fp("xyz", 3)],
        "range 0: fp \"xyz\" is not 32",
    );
    let some = hex(Fingerprint([7; 16]));
    assert_refused(
        Role::Source,
        vec![fp(&some, 0)],
        "range 0: n is 0 but fp is not",
    );
    assert_refused(
        Role::Source,
        vec![fp(&some, 1 << 41)],
        "range 0: n is 2199023255552",
    );
    let halves = vec![
        WireRange {
            t: Some(9),
            ..fp(&some, 1 << 40)
        },
        fp(&some, 1 << 40),
    ];
    assert_refused(Role::Source, halves, "the counts add up to more than");
    // A puller sends fingerprints and skips; a source does not take ids from it.
    let listed = vec![ids(vec!["d-1".into()])];
    assert_refused(
        Role::Source,
        listed,
        "range 0 lists ids; a puller lists none",
    );
    // Unknown fields are refused when the round is read, naming the field.
    let text = r#"{"ranges":[{"fp":"00","n":1,"idz":["a"]}]}"#;
    let error = serde_json::from_str::<Round>(text).unwrap_err().to_string();
    assert!(error.contains("unknown field `idz`"), "{error}");
}

#[test]
fn a_round_has_at_most_so_many_ranges_and_ids() {
    let max = Limits::default();
    let mut many: Vec<WireRange> = (0..max.max_ranges).map(|_| skip_to(1, None)).collect();
    many.push(WireRange::default());
    assert_refused(Role::Puller, many, "it has 4097 ranges; at most 4096");

    let listed = |n: usize, len: usize| {
        (0..n)
            .map(|i| format!("{i:0>len$}"))
            .collect::<Vec<String>>()
    };
    // Ten thousand ids in two ranges, and one more.
    let mut over = vec![skip_to(1, None), ids(listed(max.max_ids / 2 + 1, 36))];
    over[0].ids = Some(listed(max.max_ids / 2, 36));
    assert_refused(Role::Puller, over, "range 1: id 5000: one id too many");
    let long = ids(vec!["a".repeat(4097)]);
    assert_refused(
        Role::Puller,
        vec![long],
        "range 0: id 0: is 4097 bytes long",
    );
    let blank = ids(vec![String::new()]);
    assert_refused(Role::Puller, vec![blank], "range 0: id 0: is 0 bytes long");
    // 2000 ids of 4 KiB are within the count but not the bytes.
    let heavy = ids(listed(2_000, 4_096));
    assert_refused(
        Role::Puller,
        vec![heavy],
        "id 1023: the round's ids take more than",
    );
    // Right at the limits, the round is read.
    let side = side();
    let mut r = Reconciler::new(side.snapshot.clone(), Role::Puller);
    let full = Round {
        ranges: vec![ids(listed(max.max_ids, 36))],
    };
    let step = r.step(&full, &mut |_| panic!("no ids")).unwrap();
    assert_eq!(step.need.len(), max.max_ids);
    assert!(step.done);
}

#[test]
fn a_conversation_has_at_most_so_many_rounds_and_none_after_its_end() {
    let side = side();
    let mut p = Reconciler::new(Arc::new(Snapshot::default()), Role::Puller);
    let first = p.initiate();
    // One id a round, so that the source always has more to offer.
    let limits = Limits {
        max_ids: 1,
        ..Limits::default()
    };
    let mut s = Reconciler::with_limits(side.snapshot.clone(), Role::Source, limits);
    let mut read = |seqs: &[Seq]| side.ids_at(seqs);
    // A puller that keeps saying it holds nothing.
    for _ in 0..limits.max_rounds {
        let step = s.step(&first, &mut read).unwrap();
        assert!(step.reply.is_some_and(|r| r.asks()) && !step.done);
    }
    let error = s.step(&first, &mut read).unwrap_err();
    assert!(matches!(error, ReconcileError::Refused { round: 129, .. }));
    assert!(error.to_string().contains("one round too many"), "{error}");

    let mut p = Reconciler::new(side.snapshot.clone(), Role::Puller);
    let mut none = |_: &[Seq]| -> Result<Vec<String>, StoreError> { panic!("no ids") };
    assert!(p.step(&Round::default(), &mut none).unwrap().done);
    let after = p.step(&Round::default(), &mut none).unwrap_err();
    assert!(matches!(after, ReconcileError::Finished), "{after}");
}

#[test]
fn ids_read_for_other_positions_stop_the_source() {
    let side = side();
    let mut p = Reconciler::new(Arc::new(Snapshot::default()), Role::Puller);
    let first = p.initiate();
    let mut s = Reconciler::new(side.snapshot.clone(), Role::Source);
    let mut wrong = |seqs: &[Seq]| Ok(seqs.iter().map(|s| format!("not-{s}")).collect());
    let error = s.step(&first, &mut wrong).unwrap_err();
    assert!(matches!(error, ReconcileError::Lookup(_)), "{error}");
    let mut short = |_: &[Seq]| Ok(Vec::new());
    let mut s = Reconciler::new(side.snapshot.clone(), Role::Source);
    let error = s.step(&first, &mut short).unwrap_err();
    assert!(
        error.to_string().contains("0 ids read for 100 positions"),
        "{error}"
    );
}
