//! Reads of the log (`tail`): the bound, passing over a peer's records, the parsed
//! view, and the tail that waits for more.

use super::*;

both_backends!(
    a_scan_for_a_peer_passes_over_its_deltas_and_reads_on,
    a_bounded_read_stops_at_its_byte_budget_and_a_whole_read_does_not,
);

fn a_scan_for_a_peer_passes_over_its_deltas_and_reads_on(open: Open) {
    let store = open().unwrap();
    let from = |origin: Option<&str>| {
        let mut e = entry("alice", "t");
        e.origin = origin.map(str::to_owned);
        e
    };
    // Positions 1-3 came from peer-b, 4 was made here, 5 came from peer-c.
    let entries = vec![
        from(Some("peer-b")),
        from(Some("peer-b")),
        from(Some("peer-b")),
        from(None),
        from(Some("peer-c")),
    ];
    let ids: Vec<String> = entries.iter().map(|e| e.delta.id.clone()).collect();
    append(&store, entries, vec![]).unwrap();

    // A read that finds only the peer's own deltas still moves past them.
    let scan = store
        .read_log(Seq(0), ReadLimit::Batch(2), Some("peer-b"))
        .unwrap();
    assert!(scan.records.is_empty());
    assert_eq!(scan.through, Seq(2));

    let scan = store
        .read_log(Seq(2), ReadLimit::Batch(10), Some("peer-b"))
        .unwrap();
    let kept: Vec<(Seq, Option<&str>)> = scan.records.iter().map(|r| (r.seq, r.origin())).collect();
    assert_eq!(kept, vec![(Seq(4), None), (Seq(5), Some("peer-c"))]);
    assert_eq!(scan.through, Seq(5));
    let json = scan.records[0].json();
    assert_eq!(Delta::parse(json).unwrap().id, ids[3]);

    // Nothing to skip: every record, and the parsed view is the same read.
    let all = store.read_log(Seq(0), ReadLimit::Batch(10), None).unwrap();
    let deltas = all.deltas().unwrap();
    assert_eq!(all.records.len(), 5);
    assert_eq!(
        deltas.iter().map(|d| &d.delta.id).collect::<Vec<_>>(),
        ids.iter().collect::<Vec<_>>()
    );
    for (r, d) in all.records.iter().zip(&deltas) {
        assert_eq!((r.seq, r.origin()), (d.seq, d.origin.as_deref()));
        assert_eq!(Delta::parse(r.json()).unwrap(), d.delta);
    }
    // Past the head: nothing read.
    let past = store
        .read_log(Seq(5), ReadLimit::Batch(10), Some("peer-b"))
        .unwrap();
    assert!(past.records.is_empty());
    assert_eq!(past.through, Seq(5));
}

/// A sender reads 1000 positions at a time; at the delta size limit that would be a
/// gigabyte, so a bounded read stops once it holds 8 MiB, and the next read goes on from
/// where it stopped. Reading the whole log (a tool, a test) has no such bound.
fn a_bounded_read_stops_at_its_byte_budget_and_a_whole_read_does_not(open: Open) {
    let store = open().unwrap();
    let body = "x".repeat(512 * 1024);
    let entries: Vec<NewEntry> = (0..20)
        .map(|i| NewEntry {
            delta: new_delta(
                "alice",
                "sys-a",
                vec![Pointer::new(format!("body{i}"), body.as_str().into())],
            ),
            origin: None,
        })
        .collect();
    append(&store, entries, vec![]).unwrap();

    let first = store
        .read_log(Seq(0), ReadLimit::Batch(1000), None)
        .unwrap();
    let held: usize = first.records.iter().map(|r| r.json().len()).sum();
    assert!(first.records.len() < 20, "{} records", first.records.len());
    assert!(held < 9 * 1024 * 1024, "{held} bytes held");
    assert_eq!(first.through, first.records.last().unwrap().seq);
    let rest = store
        .read_log(first.through, ReadLimit::Batch(1000), None)
        .unwrap();
    assert_eq!(rest.through, Seq(20));
    assert_eq!(first.records.len() + rest.records.len(), 20);

    let whole = store.read_log(Seq(0), ReadLimit::All, None).unwrap();
    assert_eq!(whole.records.len(), 20);
    assert_eq!(whole.through, Seq(20));
}

/// A tail hands out each durable position once, in order, waits when caught up, passes
/// over what it is told to skip, and ends when the store closes.
#[tokio::test]
async fn a_tail_reads_on_from_its_cursor_and_waits_for_more() {
    let store = Store::temporary().unwrap();
    let mut from_peer = entry("bob", "p");
    from_peer.origin = Some("peer-b".into());
    store
        .append(vec![entry("alice", "a"), from_peer], SideWrites::default())
        .unwrap()
        .durable()
        .await
        .unwrap();
    let mut tail = LogTail::new(store.clone(), Seq(0));
    let skip: Option<std::sync::Arc<str>> = Some("peer-b".into());
    let batch = tail.next(10, skip.clone()).await.unwrap().unwrap();
    assert_eq!(batch.records.len(), 1);
    assert_eq!(batch.through, Seq(2));
    assert_eq!(tail.cursor(), Seq(2));

    let waiting = tokio::spawn(async move {
        let batch = tail.next(10, skip).await.unwrap().unwrap();
        let deltas = batch.deltas().unwrap();
        (deltas.len(), deltas[0].seq, tail)
    });
    store
        .append(vec![entry("carol", "c")], SideWrites::default())
        .unwrap()
        .durable()
        .await
        .unwrap();
    let (n, seq, mut tail) = waiting.await.unwrap();
    assert_eq!((n, seq), (1, Seq(3)));

    store.close();
    assert!(tail.next(10, None).await.unwrap().is_none());
}
