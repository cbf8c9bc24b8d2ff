//! Whole conversations: what the puller learns, in how many rounds and bytes.

use rand::seq::SliceRandom;
use rand::Rng;

use super::*;
use crate::federation::reconcile::BUCKETS;

/// A source holding `n` deltas and a puller holding the same but `d` of them, plus `d/2`
/// of its own; each side's log in its own order.
fn pair(seed: u64, n: usize, d: usize) -> (Side, Side, Vec<String>) {
    let mut rng = rng(seed);
    let source = deltas(&mut rng, n);
    let extra = deltas(&mut rng, d / 2);
    let mut puller: Vec<Delta> = source.clone();
    puller.shuffle(&mut rng);
    let lacking: Vec<Delta> = puller.split_off(n - d);
    puller.extend(extra);
    puller.shuffle(&mut rng);
    let lacking = sorted(lacking.into_iter().map(|(id, _)| id));
    (Side::new(&puller), Side::new(&source), lacking)
}

#[test]
fn identical_sets_settle_in_one_round_trip() {
    let (puller, source, lacking) = pair(1, 10_000, 0);
    assert!(lacking.is_empty());
    let out = converse(&puller, &source, Limits::default());
    println!(
        "identical 10k: {} rounds, {} bytes",
        out.messages, out.bytes
    );
    assert!(out.need.is_empty());
    assert_eq!(out.messages, 2, "one round trip");
    // 16 fingerprint ranges out, an empty round back.
    assert!(out.bytes < BUCKETS * 90 + 20, "{} bytes", out.bytes);
}

/// Levels of the split: log_B N.
fn levels(n: usize) -> u32 {
    (n as f64).log(BUCKETS as f64).ceil() as u32
}

#[test]
fn sets_that_differ_by_d_cost_bytes_in_d_not_in_n() {
    let n = 100_000;
    let mut bytes = Vec::new();
    for (seed, d) in [(2, 100), (3, 1_000)] {
        let (puller, source, lacking) = pair(seed, n, d);
        let out = converse(&puller, &source, Limits::default());
        println!(
            "N={n} d={d} (+{} the source lacks): {} rounds, {} bytes ({} per difference), \
             largest round {} bytes / {} ranges / {} ids",
            d / 2,
            out.messages,
            out.bytes,
            out.bytes / d,
            out.max_round_bytes,
            out.max_ranges,
            out.max_ids
        );
        println!("  each round (ranges, ids, bytes): {:?}", out.rounds);
        assert_eq!(out.need.len(), d, "each id is needed once");
        assert_eq!(
            sorted(out.need),
            lacking,
            "exactly the ids the puller lacks"
        );
        // A difference costs at most: an id list of up to 2B ids (~40 bytes each) where it
        // sits, and at each level below the top log_B(d) (where differences share their
        // ranges) B fingerprint ranges (~80 bytes) each way.
        let b = BUCKETS as f64;
        let shared = (d as f64).log(b);
        let per_difference = 2.0 * b * 40.0 + ((n as f64).log(b) - shared + 1.0) * 2.0 * b * 80.0;
        assert!(
            (out.bytes as f64) < d as f64 * per_difference,
            "{} bytes; at most {per_difference} per difference",
            out.bytes
        );
        assert!(out.bytes < n * 40 / 2, "far below sending every id");
        // A round per level of the split, the id lists, and a round trip for each round
        // whose ids reached the allowance (the rest of its ranges go on next time).
        let capped = out.rounds.iter().filter(|r| r.1 == 10_000).count() as u32;
        assert!(
            out.messages <= levels(n) + 3 + 2 * capped,
            "{} rounds",
            out.messages
        );
        bytes.push(out.bytes);
    }
    // Ten times the differences, about ten times the bytes (less: the top levels'
    // fingerprints are shared by every difference).
    let growth = bytes[1] as f64 / bytes[0] as f64;
    println!("bytes grow {growth:.1}x for 10x the differences");
    assert!((4.0..=12.0).contains(&growth), "{growth}");
}

#[test]
fn an_empty_puller_gets_everything_within_the_caps_of_each_round() {
    let mut rng = rng(4);
    let all = deltas(&mut rng, 50_000);
    let limits = Limits::default();
    let out = converse(&Side::new(&[]), &Side::new(&all), limits);
    println!(
        "empty puller, source 50k: {} rounds, {} bytes, largest round {} bytes / {} ids",
        out.messages, out.bytes, out.max_round_bytes, out.max_ids
    );
    assert_eq!(out.need.len(), 50_000, "each id once");
    assert_eq!(sorted(out.need), sorted(all.into_iter().map(|(id, _)| id)));
    assert_eq!(
        out.max_ids, limits.max_ids,
        "rounds list as many ids as allowed"
    );
    // One round trip per 10k ids.
    assert_eq!(out.messages, 2 * 5);
}

#[test]
fn an_empty_source_ends_the_conversation_at_once() {
    let mut rng = rng(5);
    let puller = Side::new(&deltas(&mut rng, 5_000));
    for puller in [&puller, &Side::new(&[])] {
        let out = converse(puller, &Side::new(&[]), Limits::default());
        assert!(out.need.is_empty());
        assert_eq!(
            out.messages, 2,
            "the puller's fingerprints, an empty round back"
        );
    }
    // The source's reply is the empty round, and it is done once it has sent it.
    let mut p = Reconciler::new(puller.snapshot.clone(), Role::Puller);
    let mut s = Reconciler::new(Arc::new(Snapshot::default()), Role::Source);
    let step = s
        .step(&p.initiate(), &mut |_| panic!("nothing to list"))
        .unwrap();
    assert_eq!(step.reply, Some(Round::default()));
    assert!(step.done && s.is_done());
    let mut none = |_: &[Seq]| -> Result<Vec<String>, StoreError> { panic!("no ids") };
    let last = p.step(&Round::default(), &mut none).unwrap();
    assert_eq!((last.reply, last.done), (None, true));
}

#[test]
fn items_with_one_timestamp_are_told_apart_by_hash() {
    let mut rng = rng(6);
    let mut source = deltas(&mut rng, 10_000);
    for (i, delta) in source.iter_mut().enumerate() {
        if i % 2 == 0 {
            delta.1 = 1_795_000_000_000;
        }
    }
    // The puller lacks 60 deltas, all of them at the shared timestamp.
    let mut puller = source.clone();
    let mut lacking = Vec::new();
    while lacking.len() < 60 {
        let at = rng.random_range(0..puller.len());
        if puller[at].1 == 1_795_000_000_000 {
            lacking.push(puller.swap_remove(at).0);
        }
    }
    let out = converse(&Side::new(&puller), &Side::new(&source), Limits::default());
    println!(
        "5k at one timestamp, d=60: {} rounds, {} bytes",
        out.messages, out.bytes
    );
    assert_eq!(sorted(out.need), sorted(lacking));
    assert!(out.bytes < 60 * 10_000);
}

/// Limits far below the defaults force every fallback: ids left over for the next
/// round, replies cut short with one range for the rest. The conversation still ends
/// with exactly what the puller lacks.
#[test]
fn tight_limits_slow_a_conversation_but_it_still_ends_right() {
    let limits = Limits {
        max_ranges: 40,
        max_ids: 50,
        max_id_bytes: 1 << 20,
        max_rounds: 300,
    };
    let (puller, source, lacking) = pair(7, 5_000, 300);
    let out = converse(&puller, &source, limits);
    println!(
        "N=5000 d=300, 40 ranges and 50 ids a round: {} rounds, {} bytes",
        out.messages, out.bytes
    );
    assert_eq!(out.need.len(), 300);
    assert_eq!(sorted(out.need), lacking);
    assert_eq!(out.max_ranges, 40, "replies were cut at the limit");
}
