//! Selective federation across a trust boundary: a bridge between a public and a
//! private network.
//!
//! ```text
//!   [public] <--link "public"-- [bridge] --link "private"--> [private]
//! ```
//!
//! `cargo run --example bridge`
//!
//! The bridge dials both sides, checking that each proves its key (`peerKey`): its links
//! are the authenticated peers `public` and `private`. Three Rhai scripts (in a temporary
//! folder here; `rhizome serve --policies DIR --filters DIR` in production) decide what
//! crosses:
//!
//! - `filters/push/public-only.rhai`, for every peer: a delta leaves only when it has a
//!   `public` pointer, except to the authenticated `private` peer, which gets everything.
//! - `policies/authenticated-only.rhai`, for every peer: nothing from a peer that did not
//!   authenticate is believed.
//! - `policies/public/trusted-only.rhai`: a delta from the `public` peer is believed only
//!   when it has a `verified` pointer or its author is on an allow-list. Others are
//!   refused (quarantined on the bridge), so they never reach the private side.
//!
//! The partner `acme` publishes on the public network, signing with its key; the bridge
//! binds the author `acme` to that key (`[[author]]` in production), so a delta that
//! says it is by `acme` crosses only when acme's key signed it. Someone on the public
//! side who writes as `acme` without the key is refused by the signature rules, however
//! trusted the author name is in the scripts.
//!
//! Then an impostor dials the bridge saying its system id is `public`: it proves no
//! configured key, so it is `anonymous`; it gets the public delta only and what it sends
//! is quarantined. The example prints what each side holds and fails if anything crossed
//! that should not have, or did not cross that should have.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use common::{author_delta, dial, dial_verified, serve, serve_with, wait_connected, wait_until};
use rhizome::admission::AuthorEntry;
use rhizome::events::NodeEvent;
use rhizome::identity::NodeKey;
use rhizome::policy::PolicyDirs;
use rhizome::store::ReadLimit;
use rhizome::{Node, NodeConfig, Origin, Pointer, Seq, Target};

const PUSH_FILTER: &str = r#"// Push filter for every peer: only deltas marked public leave, except to the
// authenticated private side.
if link.peer.authenticated && link.peer.name == "private" {
    true
} else if has_role(delta, "public") {
    true
} else {
    "not marked public: it stays on the private side"
}
"#;

const AUTHENTICATED_ONLY: &str = r#"// Trust policy for every peer: deltas only from peers that proved who they are.
if link.peer.authenticated {
    true
} else {
    `unauthenticated peer (it says it is ${link.remote_system})`
}
"#;

const TRUST_POLICY: &str = r#"// Trust policy for the `public` link: only verified deltas or allow-listed authors.
let allowed = ["newsroom", "acme"];

if has_role(delta, "verified") || delta.author in allowed {
    true
} else {
    `from the public side: ${delta.author} is neither verified nor on the allow-list`
}
"#;

/// Runs the demo and checks what crossed the bridge.
///
/// # Errors
/// When a link does not come up, or a delta crosses (or fails to cross) against the
/// scripts above.
pub async fn run() -> Result<()> {
    let scripts = tempfile::tempdir().context("a temporary folder for the bridge's scripts")?;
    let dirs = write_scripts(scripts.path())?;
    let public = serve("public").await?;
    let private = serve("private").await?;
    // The partner's signing key: on the partner's machine in production (`rhizome
    // keygen`); the bridge knows only its public half.
    let acme = NodeKey::generate().context("the partner's key")?;
    let bridge = serve_with(NodeConfig {
        system_id: Some("bridge".into()),
        policies: dirs,
        authors: vec![AuthorEntry {
            name: "acme".into(),
            keys: vec![acme.public_base64()],
        }],
        ..Default::default()
    })
    .await?;
    let mut bridge_events = bridge.node().events();

    // What each side writes, in this order: on the private side the internal memo comes
    // before the press release, so once the release is on the public side the bridge has
    // already judged (and held back) the memo.
    let memo = write(private.node(), "hr", "internal memo: salaries", &[]).await?;
    let release = write(
        private.node(),
        "press",
        "press release: v2 ships",
        &["public"],
    )
    .await?;
    let spam = write(public.node(), "mallory", "buy cheap watches", &[]).await?;
    let verified = write(
        public.node(),
        "alice",
        "bug report, checked by a moderator",
        &["verified"],
    )
    .await?;
    let news = write(public.node(), "newsroom", "news: the river rose", &[]).await?;
    let partner = write_signed(public.node(), "acme", "acme: spring catalogue", &acme).await?;
    let posing = write(public.node(), "acme", "acme: wire the money here", &[]).await?;
    let labels: BTreeMap<String, &str> = [
        (memo.clone(), "private/hr: internal memo (not public)"),
        (release.clone(), "private/press: press release (public)"),
        (spam.clone(), "public/mallory: spam (unverified)"),
        (verified.clone(), "public/alice: verified bug report"),
        (news.clone(), "public/newsroom: news (allow-listed author)"),
        (
            partner.clone(),
            "public/acme: catalogue (signed by acme's key)",
        ),
        (
            posing.clone(),
            "public/acme: unsigned, by someone posing as acme",
        ),
    ]
    .into();

    // Named so that each side's scripts apply to the bridge's link to it; each side
    // must prove its key.
    let to_public = dial_verified(bridge.federation(), &public, "public")?;
    let to_private = dial_verified(bridge.federation(), &private, "private")?;
    wait_connected(&to_public, "the bridge's public link").await?;
    wait_connected(&to_private, "the bridge's private link").await?;
    println!("bridge connected to both sides");

    // Outbound: the press release crosses to the public side, the memo does not.
    wait_until("the press release reaches the public side", || {
        Ok(public.node().get(&release)?.is_some())
    })
    .await?;
    // Inbound: the bridge has judged all three public deltas; the trusted ones reach
    // the private side.
    wait_until(
        "the bridge has judged the public side's five deltas",
        || {
            let s = to_public.stats();
            Ok(s.deltas_received + s.deltas_rejected >= 5)
        },
    )
    .await?;
    wait_until("the trusted public deltas reach the private side", || {
        Ok(private.node().get(&verified)?.is_some()
            && private.node().get(&news)?.is_some()
            && private.node().get(&partner)?.is_some())
    })
    .await?;

    println!("what each side holds:");
    for (side, node) in [
        ("public", public.node()),
        ("bridge", bridge.node()),
        ("private", private.node()),
    ] {
        println!("  {side}:");
        for d in node
            .store()
            .read_log(Seq(0), ReadLimit::All, None)?
            .deltas()?
        {
            let label = labels.get(&d.delta.id).copied().unwrap_or("(unexpected)");
            println!("    {label}");
        }
    }

    let holds = |node: &Node, id: &str| -> Result<bool> { Ok(node.get(id)?.is_some()) };
    ensure!(
        !holds(public.node(), &memo)?,
        "the internal memo leaked to the public side"
    );
    ensure!(
        !holds(bridge.node(), &spam)?,
        "the bridge stored the unverified spam"
    );
    ensure!(
        !holds(private.node(), &spam)?,
        "the unverified spam reached the private side"
    );
    ensure!(
        !holds(bridge.node(), &posing)? && !holds(private.node(), &posing)?,
        "the delta posing as acme crossed the bridge"
    );
    ensure!(
        holds(private.node(), &release)? && holds(private.node(), &memo)?,
        "the private side lost its own deltas"
    );
    for (node, count) in [(public.node(), 6), (bridge.node(), 5), (private.node(), 5)] {
        ensure!(
            node.store().head().0 == count,
            "{} should hold exactly {count} deltas, it holds {}",
            node.system_id(),
            node.store().head().0
        );
    }

    // An impostor says it is the public side; it proves nothing, so it is anonymous.
    let impostor = serve("public").await?;
    let forged = write(
        impostor.node(),
        "newsroom",
        "news: forged by an impostor",
        &["verified"],
    )
    .await?;
    let to_bridge = dial(impostor.federation(), &bridge, "bridge")?;
    wait_connected(&to_bridge, "the impostor's link").await?;
    wait_until("the impostor receives the public release", || {
        Ok(impostor.node().get(&release)?.is_some())
    })
    .await?;
    wait_until("the bridge judges the impostor's delta", || {
        Ok(bridge.node().store().quarantine_len() == 3)
    })
    .await?;
    ensure!(
        !holds(impostor.node(), &memo)?,
        "the internal memo leaked to the impostor"
    );
    ensure!(
        !holds(bridge.node(), &forged)?,
        "the bridge stored the impostor's delta"
    );
    let as_seen = bridge
        .federation()
        .link_infos()
        .into_iter()
        .find(|l| l.remote_system_id.as_deref() == Some("public") && l.id.starts_with("in-"))
        .and_then(|l| l.peer)
        .context("the impostor's link on the bridge")?;
    ensure!(
        as_seen.name == "anonymous" && !as_seen.authenticated,
        "the impostor was taken for {as_seen:?}"
    );
    println!(
        "the impostor claiming \"public\" is {:?} on the bridge: it got the release only",
        as_seen.name
    );
    impostor.shutdown().await.context("stopping the impostor")?;

    // The proof of the refusal: the link's counter, the event, the quarantine.
    let stats = to_public.stats();
    ensure!(
        stats.deltas_rejected == 2,
        "the public link should count 2 rejections: {stats:?}"
    );
    let mut rejected = None;
    while let Ok(e) = bridge_events.try_recv() {
        if let NodeEvent::DeltaRejected {
            delta_id, reason, ..
        } = e
        {
            rejected = Some((delta_id, reason));
        }
    }
    let (rejected_id, reason) = rejected.context("no delta:rejected event on the bridge")?;
    ensure!(
        rejected_id == forged,
        "the bridge rejected {rejected_id} last, not the impostor's delta"
    );
    println!("delta:rejected on the bridge: {reason}");
    let quarantined = bridge.node().quarantine_list(0, 10)?;
    ensure!(
        quarantined.len() == 3
            && [&spam, &posing, &forged]
                .iter()
                .all(|id| quarantined.iter().any(|q| &&q.record.delta.id == id)),
        "the bridge's quarantine should hold the spam, the delta posing as acme and the forgery, it holds {} entries",
        quarantined.len()
    );
    for id in [&spam, &posing] {
        let q = quarantined
            .iter()
            .find(|q| &q.record.delta.id == id)
            .context("a quarantined delta")?;
        println!(
            "quarantined on the bridge: {} ({}: {})",
            labels[id], q.record.policy, q.record.reason
        );
    }

    bridge.shutdown().await.context("stopping the bridge")?;
    public
        .shutdown()
        .await
        .context("stopping the public node")?;
    private
        .shutdown()
        .await
        .context("stopping the private node")?;
    println!("the bridge let through only what its scripts allow, both ways");
    Ok(())
}

/// Writes the two scripts; the folders to give the bridge.
fn write_scripts(root: &Path) -> Result<PolicyDirs> {
    let policies = root.join("policies");
    let filters = root.join("filters");
    let put = |path: std::path::PathBuf, text: &str| -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    put(policies.join("public/trusted-only.rhai"), TRUST_POLICY)?;
    put(policies.join("authenticated-only.rhai"), AUTHENTICATED_ONLY)?;
    put(filters.join("push/public-only.rhai"), PUSH_FILTER)?;
    Ok(PolicyDirs {
        policies: Some(policies),
        filters: Some(filters),
    })
}

/// A post on `node` by `author`, signed with `key` as its author would; its id.
async fn write_signed(node: &Node, author: &str, text: &str, key: &NodeKey) -> Result<String> {
    let mut d = rhizome::delta::new_delta(
        author,
        node.system_id(),
        vec![
            Pointer::new("feed", Target::reference_in("feed-1", "posts")),
            Pointer::new("text", Target::from(text)),
        ],
    );
    d.sign(key).context("signing as the partner")?;
    let id = d.id.clone();
    node.ingest(vec![d], Origin::Local)
        .await
        .with_context(|| format!("writing on {}", node.system_id()))?;
    Ok(id)
}

/// A post on `node` by `author`, with a `true` pointer for each of `marks`; its id.
async fn write(node: &Node, author: &str, text: &str, marks: &[&str]) -> Result<String> {
    let mut pointers = vec![
        Pointer::new("feed", Target::reference_in("feed-1", "posts")),
        Pointer::new("text", Target::from(text)),
    ];
    pointers.extend(marks.iter().map(|m| Pointer::new(*m, Target::from(true))));
    author_delta(node, author, pointers).await
}

#[tokio::main]
async fn main() -> Result<()> {
    run().await
}
