use super::files::{part_name, period_of, PartWriter};
use super::*;
use crate::delta::{negate, new_delta, Pointer, Target};
use crate::store::{AppendOutcome, Query};

fn delta_at(timestamp: u64, target: &str) -> Delta {
    let mut d = new_delta(
        "alice",
        "sys-a",
        vec![Pointer::new("on", Target::reference_in(target, "ctx"))],
    );
    d.timestamp = timestamp;
    d
}

fn put(store: &Store, deltas: Vec<Delta>) -> Vec<AppendOutcome> {
    store.append_local_blocking(deltas)
}

fn live_ids(store: &Store) -> Vec<String> {
    store
        .query(&Query::default())
        .unwrap()
        .into_iter()
        .map(|s| s.delta.id)
        .collect()
}

fn archived_ids(store: &Store, filter: DeltaFilter) -> Vec<String> {
    let mut scan = ArchiveScan::new(store.clone(), filter).unwrap();
    let mut out = Vec::new();
    while let Some(json) = scan.next_match().unwrap() {
        out.push(Delta::parse(&json).unwrap().id);
    }
    out
}

fn old_rule() -> ArchiveRule {
    ArchiveRule {
        before: Some(5_000),
        ..ArchiveRule::default()
    }
}

#[test]
fn old_deltas_move_to_the_archive_and_stay_known_to_dedup() {
    let store = Store::temporary_on_disk().unwrap();
    let old: Vec<Delta> = (0..10).map(|i| delta_at(1_000 + i, "old")).collect();
    let new: Vec<Delta> = (0..5).map(|i| delta_at(10_000 + i, "new")).collect();
    put(&store, old.clone());
    put(&store, new.clone());
    let report = store.archive(&old_rule()).unwrap();
    assert_eq!(report.archived, 10);
    assert_eq!((report.oldest, report.newest), (Some(1_000), Some(1_009)));
    assert_eq!(report.parts, vec![part_name("1970-01", 1)]);
    let live = live_ids(&store);
    assert_eq!(live, new.iter().map(|d| d.id.clone()).collect::<Vec<_>>());
    // The indexes no longer point at the archived deltas.
    let by_target = DeltaFilter {
        target_ids: Some(vec!["old".into()]),
        ..DeltaFilter::default()
    };
    let q = Query {
        filter: by_target.clone(),
        ..Query::default()
    };
    assert!(store.query(&q).unwrap().is_empty());
    assert_eq!(
        archived_ids(&store, by_target),
        old.iter().map(|d| d.id.clone()).collect::<Vec<_>>()
    );
    let stats = store.archive_stats().unwrap();
    assert_eq!(stats.count, 10);
    assert!(stats.overlaps(None, Some(1_005)) && !stats.overlaps(Some(2_000), None));
    assert!(store.archive_bytes() > 0);
    // Sent again, an archived delta is a duplicate and does not come back.
    let again = put(&store, vec![old[3].clone()]);
    assert!(matches!(again[0], AppendOutcome::Duplicate(_)), "{again:?}");
    assert!(store.get(&old[3].id).unwrap().is_none());
    // A second pass finds nothing more to do.
    assert_eq!(store.archive(&old_rule()).unwrap().archived, 0);
}

#[test]
fn negations_their_targets_and_the_head_stay_live() {
    let store = Store::temporary_on_disk().unwrap();
    let target = delta_at(1_000, "x");
    let mut negation = negate(&target.id, "alice", "sys-a", None);
    negation.timestamp = 1_001;
    let plain = delta_at(1_002, "y");
    let last = delta_at(1_003, "z");
    put(
        &store,
        vec![
            target.clone(),
            negation.clone(),
            plain.clone(),
            last.clone(),
        ],
    );
    let report = store.archive(&old_rule()).unwrap();
    assert_eq!(report.archived, 1);
    assert_eq!(report.kept, 3);
    let mut live = live_ids(&store);
    live.sort();
    // The negated target is kept live (and still hidden by its negation).
    let mut want = vec![negation.id.clone(), last.id.clone()];
    want.sort();
    assert_eq!(live, want);
    assert!(store.is_negated(&target.id).unwrap());
}

#[test]
fn the_head_survives_a_restart_after_archival() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<Delta> = (0..4).map(|i| delta_at(1_000 + i, "t")).collect();
    {
        let store = Store::open(dir.path()).unwrap();
        put(&store, ids.clone());
        assert_eq!(store.archive(&old_rule()).unwrap().archived, 3);
        store.close();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head(), Seq(4));
    let out = put(&store, vec![delta_at(9_000, "t")]);
    assert_eq!(out, vec![AppendOutcome::Stored(Seq(5))]);
}

#[test]
fn a_part_written_but_not_applied_is_finished_without_duplicates_or_loss() {
    let store = Store::temporary_on_disk().unwrap();
    let old: Vec<Delta> = (0..6).map(|i| delta_at(1_000 + i, "old")).collect();
    put(&store, old.clone());
    put(&store, vec![delta_at(10_000, "new")]);
    // What a pass that crashed after writing its part, before removing its deltas, leaves.
    let dir = store.archive_dir().unwrap();
    let mut part = PartWriter::create(&dir, &part_name(&period_of(1_000), 1)).unwrap();
    for d in &old[..4] {
        part.line(&d.to_json()).unwrap();
    }
    part.finish().unwrap();
    // Both places hold them; the archive scan does not show them twice.
    assert_eq!(live_ids(&store).len(), 7);
    assert!(archived_ids(&store, DeltaFilter::default()).is_empty());

    let report = store.archive(&old_rule()).unwrap();
    assert_eq!(report.recovered, 4);
    assert_eq!(report.archived, 6);
    let mut archived = archived_ids(&store, DeltaFilter::default());
    archived.sort();
    let mut want: Vec<String> = old.iter().map(|d| d.id.clone()).collect();
    want.sort();
    assert_eq!(archived, want, "every old delta archived exactly once");
    assert_eq!(live_ids(&store).len(), 1);
    assert_eq!(store.archive_stats().unwrap().count, 6);
    // Running again neither duplicates nor loses anything.
    let again = store.archive(&old_rule()).unwrap();
    assert_eq!((again.archived, again.recovered), (0, 0));
    assert_eq!(archived_ids(&store, DeltaFilter::default()).len(), 6);
}

#[test]
fn a_rule_filter_limits_what_may_be_archived() {
    let store = Store::temporary_on_disk().unwrap();
    put(&store, vec![delta_at(1_000, "a"), delta_at(1_001, "b")]);
    put(&store, vec![delta_at(9_000, "c")]);
    let rule = ArchiveRule {
        filter: Some(DeltaFilter {
            target_ids: Some(vec!["b".into()]),
            ..DeltaFilter::default()
        }),
        ..old_rule()
    };
    assert_eq!(store.archive(&rule).unwrap().archived, 1);
    assert_eq!(live_ids(&store).len(), 2);
}

#[test]
fn a_store_in_memory_has_no_archive() {
    let store = Store::temporary().unwrap();
    assert!(matches!(
        store.archive(&old_rule()),
        Err(ArchiveError::NoDirectory)
    ));
}
