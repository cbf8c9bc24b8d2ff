//! Queries over the indexes, negation, and postings across group commits.

use super::*;

both_backends!(
    queries_use_indexes_and_recheck_the_filter,
    negation_hides_a_delta_and_negating_the_negation_restores_it,
    same_set_in_any_order_gives_the_same_contents,
    postings_across_commits_answer_queries_in_log_order,
    an_inverted_timestamp_range_finds_nothing,
);

fn queries_use_indexes_and_recheck_the_filter(open: Open) {
    let store = open().unwrap();
    let mut entries = Vec::new();
    for (author, target, ts) in [
        ("alice", "p1", 100),
        ("bob", "p1", 200),
        ("alice", "p2", 300),
        ("carol", "p3", 400),
    ] {
        let mut e = entry(author, target);
        e.delta.timestamp = ts;
        entries.push(e);
    }
    append(&store, entries.clone(), vec![]).unwrap();
    let q = |filter: DeltaFilter| {
        store
            .query(&Query {
                filter,
                ..Default::default()
            })
            .unwrap()
    };
    let id = |i: usize| entries[i].delta.id.clone();

    assert_eq!(
        ids(&q(DeltaFilter {
            authors: Some(vec!["alice".into()]),
            ..Default::default()
        })),
        vec![id(0), id(2)]
    );
    assert_eq!(
        ids(&q(DeltaFilter {
            target_ids: Some(vec!["p1".into()]),
            ..Default::default()
        })),
        vec![id(0), id(1)]
    );
    assert_eq!(
        ids(&q(DeltaFilter {
            authors: Some(vec!["alice".into()]),
            target_ids: Some(vec!["p1".into()]),
            ..Default::default()
        })),
        vec![id(0)]
    );
    assert_eq!(
        ids(&q(DeltaFilter {
            ids: Some(vec![id(3), "nope".into()]),
            ..Default::default()
        })),
        vec![id(3)]
    );
    assert_eq!(
        ids(&q(DeltaFilter {
            target_contexts: Some(vec!["ctx".into()]),
            ..Default::default()
        }))
        .len(),
        4
    );
    assert_eq!(
        ids(&q(DeltaFilter {
            systems: Some(vec!["other".into()]),
            ..Default::default()
        }))
        .len(),
        0
    );
    let range = TimestampRange {
        start: Some(200),
        end: Some(300),
    };
    assert_eq!(
        ids(&q(DeltaFilter {
            timestamp_range: Some(range),
            ..Default::default()
        })),
        vec![id(1), id(2)]
    );
    // Paging with after + limit walks the whole set in log order.
    let page1 = store
        .query(&Query {
            limit: Some(3),
            ..Default::default()
        })
        .unwrap();
    let page2 = store
        .query(&Query {
            after: page1[2].seq,
            limit: Some(3),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page1.len() + page2.len(), 4);
    assert_eq!(page2[0].delta.id, id(3));
}

fn negation_hides_a_delta_and_negating_the_negation_restores_it(open: Open) {
    let store = open().unwrap();
    let original = entry("alice", "p1");
    append(&store, vec![original.clone()], vec![]).unwrap();
    let all = |include: bool| {
        let filter = DeltaFilter {
            include_negated: Some(include),
            target_ids: Some(vec!["p1".into()]),
            ..Default::default()
        };
        ids(&store
            .query(&Query {
                filter,
                ..Default::default()
            })
            .unwrap())
    };
    assert_eq!(all(false), vec![original.delta.id.clone()]);

    let n1 = negate(&original.delta.id, "bob", "sys", Some("wrong"));
    append(
        &store,
        vec![NewEntry {
            delta: n1.clone(),
            origin: None,
        }],
        vec![],
    )
    .unwrap();
    assert!(store.is_negated(&original.delta.id).unwrap());
    assert!(all(false).is_empty());
    assert_eq!(all(true), vec![original.delta.id.clone()]);
    assert_eq!(
        ids(&store.negations_of(&original.delta.id).unwrap()),
        vec![n1.id.clone()]
    );

    let n2 = negate(&n1.id, "alice", "sys", None);
    append(
        &store,
        vec![NewEntry {
            delta: n2,
            origin: None,
        }],
        vec![],
    )
    .unwrap();
    assert!(store.is_negated(&n1.id).unwrap());
    assert!(!store.is_negated(&original.delta.id).unwrap());
    assert_eq!(all(false), vec![original.delta.id.clone()]);
}

fn same_set_in_any_order_gives_the_same_contents(open: Open) {
    let entries: Vec<NewEntry> = (0..50)
        .map(|i| entry(&format!("a{}", i % 3), &format!("t{}", i % 7)))
        .collect();
    let contents = |order: Vec<NewEntry>| {
        let store = open().unwrap();
        for chunk in order.chunks(7) {
            append(&store, chunk.to_vec(), vec![]).unwrap();
        }
        let mut ids = ids(&deltas_after(&store, Seq(0), 1000).unwrap());
        ids.sort();
        ids
    };
    let mut reversed = entries.clone();
    reversed.reverse();
    let mut doubled = entries.clone();
    doubled.extend(entries.iter().step_by(3).cloned());
    let expected = contents(entries);
    assert_eq!(contents(reversed), expected);
    assert_eq!(contents(doubled), expected);
}

/// Index entries are postings (one per term per group commit): queries over several
/// commits, with several positions per entry, still give every match once, in log order.
fn postings_across_commits_answer_queries_in_log_order(open: Open) {
    let store = open().unwrap();
    let mut expected_alice = Vec::new();
    for commit in 0..3 {
        let batch: Vec<NewEntry> = (0..6)
            .map(|i| {
                let author = if i % 2 == 0 { "alice" } else { "bob" };
                let mut e = entry(author, &format!("t{}", i % 3));
                e.delta.timestamp = 1_000 + commit;
                e
            })
            .collect();
        let base = store.head().0;
        expected_alice.extend((0..6).filter(|i| i % 2 == 0).map(|i| base + 1 + i as u64));
        append(&store, batch, vec![]).unwrap();
    }
    let seqs = |f: DeltaFilter, after: u64| -> Vec<u64> {
        let q = Query {
            filter: f,
            after: Seq(after),
            limit: None,
        };
        store.query(&q).unwrap().iter().map(|d| d.seq.0).collect()
    };
    let by_author = DeltaFilter {
        authors: Some(vec!["alice".into()]),
        ..Default::default()
    };
    assert_eq!(seqs(by_author.clone(), 0), expected_alice);
    assert_eq!(seqs(by_author, 7), vec![9, 11, 13, 15, 17]);
    let by_target = DeltaFilter {
        target_ids: Some(vec!["t1".into()]),
        ..Default::default()
    };
    assert_eq!(seqs(by_target, 0), vec![2, 5, 8, 11, 14, 17]);
    let by_time = DeltaFilter {
        timestamp_range: Some(TimestampRange {
            start: Some(1_001),
            end: Some(1_001),
        }),
        ..Default::default()
    };
    assert_eq!(seqs(by_time, 0), (7..=12).collect::<Vec<_>>());
    assert_eq!(store.first_seq_at_or_after(1_001).unwrap(), Some(Seq(7)));
    assert_eq!(store.first_seq_at_or_after(5_000).unwrap(), None);
}

/// An inverted range is a query that matches nothing, not a failure (BTreeMap would panic).
fn an_inverted_timestamp_range_finds_nothing(open: Open) {
    let store = open().unwrap();
    append(&store, vec![entry("alice", "p1")], vec![]).unwrap();
    let filter = DeltaFilter {
        timestamp_range: Some(TimestampRange {
            start: Some(900),
            end: Some(100),
        }),
        ..Default::default()
    };
    let q = Query {
        filter,
        ..Default::default()
    };
    assert!(store.query(&q).unwrap().is_empty());
}
