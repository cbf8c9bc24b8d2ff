//! Backups and compaction: every keyspace copied or kept, on fjall (a store in memory
//! has nothing on disk to copy or compact).

use super::*;

fn by_author(store: &Store, author: &str) -> Vec<String> {
    let q = Query {
        filter: DeltaFilter {
            authors: Some(vec![author.to_owned()]),
            ..Default::default()
        },
        after: Seq(0),
        limit: None,
    };
    let found = store.query(&q).unwrap();
    found.into_iter().map(|d| d.delta.id).collect()
}

fn log(store: &Store) -> Vec<String> {
    let batch = store.read_log(Seq(0), ReadLimit::All, None).unwrap();
    batch.records.iter().map(|r| r.json().to_owned()).collect()
}

#[test]
fn a_backup_opens_as_the_store_was_with_the_metadata_it_was_asked_to_replace() {
    let dirs = tempfile::tempdir().unwrap();
    let (from, to) = (dirs.path().join("from"), dirs.path().join("to"));
    let store = Store::open(&from).unwrap();
    for i in 0..50u64 {
        let author = if i % 2 == 0 { "alice" } else { "bob" };
        let cursor = vec![("link/x/seq".to_owned(), i.to_be_bytes().to_vec())];
        append(&store, vec![entry(author, &format!("t{i}"))], cursor).unwrap();
    }
    let meta = |s: &Store, k: &str| s.get_meta(k).unwrap();
    append(&store, Vec::new(), vec![("log".into(), b"old".to_vec())]).unwrap();
    let copy = store.backup(&to, &[("log", b"new")]).unwrap();
    assert_eq!(copy.head, Seq(50));
    assert!(copy.entries >= 50 && copy.bytes > 0, "{copy:?}");
    let refused = store.backup(&to, &[]).unwrap_err();
    assert!(refused.to_string().contains("not empty"), "{refused}");
    let inside = store.backup(&from.join("sub"), &[]).unwrap_err();
    assert!(inside.to_string().contains("inside"), "{inside}");

    let restored = Store::open(&to).unwrap();
    assert_eq!(restored.head(), Seq(50));
    assert_eq!(log(&restored), log(&store), "the same log, byte for byte");
    assert_eq!(
        by_author(&restored, "bob"),
        by_author(&store, "bob"),
        "indexes copied"
    );
    assert_eq!(meta(&restored, "link/x/seq"), meta(&store, "link/x/seq"));
    assert_eq!(meta(&restored, "log").as_deref(), Some(&b"new"[..]));
    assert_eq!(meta(&store, "log").as_deref(), Some(&b"old"[..]));
}

#[test]
fn a_store_in_memory_has_no_backup() {
    let dirs = tempfile::tempdir().unwrap();
    let err = Store::temporary()
        .unwrap()
        .backup(&dirs.path().join("b"), &[])
        .unwrap_err();
    assert!(err.to_string().contains("memory"), "{err}");
}

#[test]
fn compaction_keeps_every_entry_and_says_the_size_before_and_after() {
    let store = Store::temporary_on_disk().unwrap();
    for chunk in 0..20 {
        let entries = (0..100)
            .map(|i| entry("carol", &format!("t{chunk}-{i}")))
            .collect();
        append(&store, entries, Vec::new()).unwrap();
    }
    let before = log(&store);
    let done = store.compact().unwrap();
    assert!(done.bytes_before > 0 && done.bytes_after > 0, "{done:?}");
    assert_eq!(log(&store), before);
    assert_eq!(by_author(&store, "carol").len(), 2000);
}
