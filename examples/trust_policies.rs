//! Trust policies: which remote deltas a node believes.
//!
//! `cargo run --example trust_policies`
//!
//! Four guarded servers, each with one kind of policy, receive deltas from client nodes:
//!
//! 1. author-based: `TrustPolicy::authors(["alice", "bob"])` (the seed's `createAuthorTrustPolicy`);
//! 2. system-based: `TrustPolicy::systems(["trusted-client-1"])` (`createSystemTrustPolicy`);
//! 3. custom: a Rhai script in the node's policies folder (`createCustomTrustPolicy`): only
//!    deltas with a `verified` pointer;
//! 4. combined: `authors(["alice"]).and(systems(["trusted-client-1"]))` (`combineTrustPolicies`):
//!    both must pass.
//!
//! Each rejection is tracked three ways: a `delta:rejected` event with the reason, the
//! link's `deltasRejected` counter, and the quarantine. Finally the custom policy's file is
//! edited while the server runs: the node reloads it by itself (`policy:reloaded`, a new
//! set hash), a delta refused before is now accepted, and replaying the quarantine
//! admits the one refused under the old rule.

mod common;

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use common::{close, serve_with, wait_connected, wait_until};
use rhizome::events::NodeEvent;
use rhizome::federation::{InitialSync, LinkConfig, SyncMode};
use rhizome::policy::PolicyDirs;
use rhizome::Server;
use rhizome::{Federation, FederationLink, Node, NodeConfig, Pointer, Target, TrustPolicy};
use tokio::sync::broadcast;

/// The custom policy, first version: only deltas with a `verified` pointer.
const VERIFIED_ONLY: &str = r#"// Only deltas someone verified are believed.
if has_role(delta, "verified") { true } else { reject("no verified pointer") }
"#;

/// The custom policy after the edit: a `reviewed` pointer is good enough too.
const VERIFIED_OR_REVIEWED: &str = r#"// Verified or reviewed deltas are believed.
if has_role(delta, "verified") || has_role(delta, "reviewed") {
    true
} else {
    reject("neither verified nor reviewed")
}
"#;

/// One delta a client sends, and whether the guarded server should believe it.
struct Case {
    author: &'static str,
    /// A `true` pointer with this role, if any (`verified`, `reviewed`).
    mark: Option<&'static str>,
    accept: bool,
}

const fn case(author: &'static str, mark: Option<&'static str>, accept: bool) -> Case {
    Case {
        author,
        mark,
        accept,
    }
}

/// Runs the four policies and the live edit, checking every verdict.
///
/// # Errors
/// When a delta is accepted or rejected against the policy, a rejection is not
/// tracked, or the edited policy does not take effect.
pub async fn run() -> Result<()> {
    println!("== 1. author-based: TrustPolicy::authors([alice, bob])");
    let mut server = guarded(
        "author-guarded",
        TrustPolicy::authors(["alice", "bob"]),
        None,
    )
    .await?;
    let cases = [
        case("alice", None, true),
        case("bob", None, true),
        case("mallory", None, false),
    ];
    server.send_once("client-1", &cases).await?;
    server.stop().await?;

    println!("== 2. system-based: TrustPolicy::systems([trusted-client-1])");
    let mut server = guarded(
        "system-guarded",
        TrustPolicy::systems(["trusted-client-1"]),
        None,
    )
    .await?;
    server
        .send_once("trusted-client-1", &[case("alice", None, true)])
        .await?;
    server
        .send_once("untrusted-client-2", &[case("alice", None, false)])
        .await?;
    server.stop().await?;

    println!("== 3. custom: a Rhai script, policies/verified.rhai");
    let dir = tempfile::tempdir().context("a temporary policies folder")?;
    let script = dir.path().join("verified.rhai");
    std::fs::write(&script, VERIFIED_ONLY).context("writing the policy")?;
    let mut server = guarded("script-guarded", TrustPolicy::default(), Some(dir.path())).await?;
    let before = [
        case("alice", Some("verified"), true),
        case("bob", Some("reviewed"), false),
        case("mallory", None, false),
    ];
    let client = server.send_from("client-1", &before).await?;

    println!("== 4. combined: authors([alice]).and(systems([trusted-client-1]))");
    let combined = TrustPolicy::authors(["alice"]).and(TrustPolicy::systems(["trusted-client-1"]));
    let mut other = guarded("combined-guarded", combined, None).await?;
    other
        .send_once(
            "trusted-client-1",
            &[case("alice", None, true), case("bob", None, false)],
        )
        .await?;
    other
        .send_once("untrusted-client-2", &[case("alice", None, false)])
        .await?;
    other.stop().await?;

    println!("== 5. editing policies/verified.rhai while the node runs");
    let node = server.server.node().clone();
    let old_hash = node.policies().current().hash().to_owned();
    std::fs::write(&script, VERIFIED_OR_REVIEWED).context("editing the policy")?;
    wait_until("the node reloads the edited policy", || {
        Ok(node.policies().current().hash() != old_hash)
    })
    .await?;
    // The event is sent before the new set is swapped in: it is already queued.
    let new_hash = node.policies().current().hash().to_owned();
    let announced =
        server.drain(|e| matches!(e, NodeEvent::PolicyReloaded { hash, .. } if *hash == new_hash));
    ensure!(
        !announced.is_empty(),
        "the policy set changed to {new_hash} without a policy:reloaded event"
    );
    println!("policy:reloaded: set {old_hash} -> {new_hash}");
    client
        .send(&mut server, &[case("bob", Some("reviewed"), true)])
        .await?;
    let report = node
        .replay_quarantine()
        .await
        .context("replaying the quarantine")?;
    ensure!(
        report.admitted == 1 && report.still_rejected == 1,
        "replay should admit bob's reviewed delta and keep mallory's: {report:?}"
    );
    println!(
        "quarantine replayed under the new policy: {} admitted (bob's reviewed delta), {} still refused (mallory's)",
        report.admitted, report.still_rejected
    );
    client.stop().await?;
    server.stop().await?;
    println!("== every verdict matched its policy");
    Ok(())
}

/// A served node whose trust policy (and optional policy scripts) guards what it stores.
struct Guarded {
    server: Server,
    /// Subscribed before any link, so no rejection goes unseen.
    events: broadcast::Receiver<NodeEvent>,
}

async fn guarded(system_id: &str, trust: TrustPolicy, policies: Option<&Path>) -> Result<Guarded> {
    let server = serve_with(NodeConfig {
        system_id: Some(system_id.into()),
        trust,
        policies: PolicyDirs {
            policies: policies.map(Path::to_path_buf),
            filters: None,
        },
        ..Default::default()
    })
    .await?;
    let events = server.node().events();
    Ok(Guarded { server, events })
}

impl Guarded {
    /// Starts a client node `system_id`, links it to this server (push: the client
    /// uploads) and sends `cases`, checking each verdict.
    async fn send_from(&mut self, system_id: &str, cases: &[Case]) -> Result<Client> {
        let node = Node::in_memory(system_id).await?;
        let links = Federation::new(node.clone(), Default::default())?;
        let link = links.connect_to_remote(
            &self.server.url(),
            LinkConfig {
                mode: SyncMode::Push,
                initial_sync: InitialSync::Full,
                ..Default::default()
            },
        )?;
        wait_connected(&link, system_id).await?;
        let client = Client { node, links, link };
        client.send(self, cases).await?;
        Ok(client)
    }

    /// [`Guarded::send_from`] from a client stopped right after.
    async fn send_once(&mut self, system_id: &str, cases: &[Case]) -> Result<()> {
        self.send_from(system_id, cases).await?.stop().await
    }

    /// Takes the queued events, keeping those `wanted` picks.
    fn drain(&mut self, wanted: impl Fn(&NodeEvent) -> bool) -> Vec<NodeEvent> {
        let mut kept = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(e) if wanted(&e) => kept.push(e),
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => return kept,
            }
        }
    }

    /// The server's end of the link from `system_id`.
    fn inbound_from(&self, system_id: &str) -> Option<FederationLink> {
        self.server
            .federation()
            .get_federation_links()
            .into_iter()
            .find(|l| l.remote_system_id().as_deref() == Some(system_id))
    }

    async fn stop(self) -> Result<()> {
        self.server
            .shutdown()
            .await
            .context("stopping a guarded server")
    }
}

/// A client node and its link to a guarded server.
struct Client {
    node: Node,
    links: Federation,
    link: FederationLink,
}

impl Client {
    /// Authors `cases` on the client and waits until the server has judged them all;
    /// fails when a verdict differs from the case's, or a rejection is not tracked.
    async fn send(&self, server: &mut Guarded, cases: &[Case]) -> Result<()> {
        let from = self.node.system_id();
        let inbound = {
            let mut found = None;
            wait_until(&format!("the server lists the link from {from}"), || {
                found = server.inbound_from(from);
                Ok(found.is_some())
            })
            .await?;
            found.context("no inbound link")?
        };
        let judged_before = judged(&inbound);
        let rejected_before = inbound.stats().deltas_rejected;
        let quarantined_before = server.server.node().store().quarantine_len();
        let mut sent = Vec::new();
        for c in cases {
            let mut pointers = vec![Pointer::new("topic", Target::reference("topic-1"))];
            if let Some(mark) = c.mark {
                pointers.push(Pointer::new(mark, Target::from(true)));
            }
            let d = self
                .node
                .create_delta(c.author, pointers)
                .await
                .context("authoring on the client")?;
            sent.push(d.delta.id);
        }
        let n = cases.len() as u64;
        wait_until(
            &format!("the server judged the {n} deltas from {from}"),
            || Ok(judged(&inbound) >= judged_before + n),
        )
        .await?;

        let rejections = server.drain(
            |e| matches!(e, NodeEvent::DeltaRejected { delta_id, .. } if sent.contains(delta_id)),
        );
        let node = server.server.node();
        let expected_rejections = cases.iter().filter(|c| !c.accept).count() as u64;
        for (c, id) in cases.iter().zip(&sent) {
            let stored = node.get(id)?.is_some();
            let what = format!(
                "{}{} from {from}",
                c.author,
                c.mark.map(|m| format!(" ({m})")).unwrap_or_default()
            );
            ensure!(
                stored == c.accept,
                "{what}: expected {}, but it was {}",
                verdict(c.accept),
                verdict(stored)
            );
            let reason = rejections.iter().find_map(|e| match e {
                NodeEvent::DeltaRejected {
                    delta_id, reason, ..
                } if delta_id == id => Some(reason.as_str()),
                _ => None,
            });
            match (stored, reason) {
                (true, None) => println!("  {what}: accepted"),
                (false, Some(reason)) => {
                    println!("  {what}: rejected, delta:rejected says {reason:?}")
                }
                (true, Some(_)) => bail!("{what} was stored, yet announced as rejected"),
                (false, None) => bail!("{what} was rejected without a delta:rejected event"),
            }
        }
        let rejected = inbound.stats().deltas_rejected - rejected_before;
        ensure!(
            rejected == expected_rejections,
            "the link counts {rejected} rejections, {expected_rejections} expected"
        );
        let quarantined = node.store().quarantine_len() - quarantined_before;
        ensure!(
            quarantined == expected_rejections,
            "{quarantined} deltas quarantined, {expected_rejections} expected"
        );
        if expected_rejections > 0 {
            println!("  tracked: link deltasRejected +{rejected}, quarantine +{quarantined}");
        }
        Ok(())
    }

    /// Closes the link and the client's store.
    async fn stop(self) -> Result<()> {
        self.link.disconnect();
        self.links.disconnect_all().await;
        close(self.node).await
    }
}

fn judged(link: &FederationLink) -> u64 {
    let s = link.stats();
    s.deltas_received + s.deltas_rejected
}

fn verdict(accepted: bool) -> &'static str {
    if accepted {
        "accepted"
    } else {
        "rejected"
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    run().await
}
