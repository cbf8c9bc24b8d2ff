//! The mesh simulator (`examples/mesh.rs`): its topologies, and a small mesh run through
//! it end to end. The example itself is a benchmark and is not run at full size here.

// The example declares `mod common;` (examples/common/mod.rs), as the examples included
// by `examples.rs` do: functions and constants only, harmless to load twice.
#![allow(clippy::duplicate_mod)]

use std::time::Duration;

#[allow(dead_code)]
#[path = "../../examples/mesh.rs"]
mod simulator;

use simulator::topology::Topology;

fn assert_regular_and_connected(t: &Topology, nodes: usize, degree: usize) {
    assert_eq!(t.nodes, nodes);
    assert!(
        t.degrees().iter().all(|&d| d == degree),
        "{nodes} nodes, degree {degree}: degrees {:?}",
        t.degrees()
    );
    let mut edges = t.edges.clone();
    edges.sort_unstable();
    edges.dedup();
    assert_eq!(edges.len(), t.edges.len(), "an edge twice: {:?}", t.edges);
    assert!(t.edges.iter().all(|&(a, b)| a < b && b < nodes));
    assert!(t.is_connected(), "not connected: {:?}", t.edges);
}

#[test]
fn random_topologies_are_regular_connected_and_named_by_their_seed() {
    for (nodes, degree) in [(20, 4), (8, 2), (10, 3), (12, 6), (30, 5), (5, 4)] {
        for seed in 0..5 {
            let t = Topology::regular(nodes, degree, seed).expect("a regular graph");
            assert_regular_and_connected(&t, nodes, degree);
            assert_eq!(
                Topology::regular(nodes, degree, seed).expect("the same graph"),
                t,
                "seed {seed} drew two graphs"
            );
        }
    }
    let one = Topology::regular(20, 4, 1).expect("a graph");
    let two = Topology::regular(20, 4, 2).expect("a graph");
    assert_ne!(one, two, "two seeds drew the same 20-node graph");
    assert_eq!(Topology::regular(6, 5, 9).expect("full"), Topology::full(6));
    assert_eq!(Topology::full(6).edges.len(), 15);
}

#[test]
fn impossible_topologies_are_refused_with_a_reason() {
    for (nodes, degree, why) in [
        (1, 0, "at least 2 nodes"),
        (5, 0, "between 1 and"),
        (5, 5, "between 1 and"),
        (5, 3, "must be even"),
        (6, 1, "never connected"),
    ] {
        let err = Topology::regular(nodes, degree, 1).expect_err("no such graph");
        assert!(err.contains(why), "{nodes} nodes, degree {degree}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_random_mesh_converges_and_accounts_for_every_copy() -> anyhow::Result<()> {
    let opts = simulator::Options {
        nodes: 6,
        degree: 3,
        deltas: 200,
        seed: 7,
        durable: false,
        delta_bytes: 330,
        batch: 50,
        timeout: Duration::from_secs(30),
        long_ids: false,
        announce: false,
    };
    let report = simulator::run(&opts).await?;
    assert_eq!(report.links, 9);
    assert_eq!(report.needed, 6 * 5 * 200);
    assert_eq!(report.delta_bytes, 330);
    // Each node stored every delta it did not author once; every other copy received
    // was dropped as a duplicate.
    assert!(
        report.received >= report.needed,
        "{} received for {} needed",
        report.received,
        report.needed
    );
    assert_eq!(report.duplicates, report.received - report.needed);
    assert!(
        report.bytes_received >= report.needed * 330,
        "{} bytes received for {} deltas of 330 bytes needed",
        report.bytes_received,
        report.needed
    );
    Ok(())
}

/// The simulator's options for `nodes` of `degree`, with `deltas` posted to each.
fn mesh(nodes: usize, degree: usize, deltas: usize) -> simulator::Options {
    simulator::Options {
        nodes,
        degree,
        deltas,
        seed: 3,
        durable: false,
        delta_bytes: 330,
        batch: 100,
        timeout: Duration::from_secs(60),
        long_ids: false,
        announce: true,
    }
}

/// Every delta on every node (the simulator checks each node holds all of them), each
/// received about once, and what the links carried near a delta's own size.
fn assert_about_once(report: &simulator::Report) {
    assert!(
        report.received as f64 <= 1.3 * report.needed as f64,
        "{} deltas received for {} needed ({:.2}x)",
        report.received,
        report.needed,
        report.ratio()
    );
    assert_eq!(report.duplicates, report.received - report.needed);
    assert!(
        report.bytes_per_needed() <= 1.5 * report.delta_bytes as f64,
        "{:.0} bytes received per delta needed, deltas of {} bytes",
        report.bytes_per_needed(),
        report.delta_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mesh_of_six_receives_each_delta_about_once() -> anyhow::Result<()> {
    let report = simulator::run(&mesh(6, 5, 500)).await?;
    assert_eq!(report.needed, 6 * 5 * 500);
    assert_about_once(&report);
    // Every relayed copy went as an id: four neighbours relay each delta to each node.
    assert!(report.announced > 0, "nothing was announced");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_of_eight_converges_over_many_hops() -> anyhow::Result<()> {
    let report = simulator::run(&mesh(8, 2, 200)).await?;
    assert_eq!(report.links, 8);
    assert_eq!(report.needed, 8 * 7 * 200);
    assert_about_once(&report);
    // Most deltas cross several hops, each fetched by id after its announcement.
    assert!(
        report.requested > report.needed / 2,
        "{} asked for",
        report.requested
    );
    Ok(())
}
