//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Extension;

use super::auth::{Access, Refusals};
use super::ConnectionStats;
use crate::federation::{Federation, LinkStatsSnapshot, LinkStatus};

/// A per-link counter: name, type, help, and how to read it from a link's stats.
type LinkCounter = (
    &'static str,
    &'static str,
    &'static str,
    fn(&LinkStatsSnapshot) -> u64,
);

/// One metric family being written: `# HELP`, `# TYPE`, then samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{}", self.name);
        if !labels.is_empty() {
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `connections` is there when the router is served by a [`crate::http::server::Server`].
pub(super) async fn metrics(
    State(fed): State<Federation>,
    connections: Option<Extension<std::sync::Arc<ConnectionStats>>>,
    Extension(refusals): Extension<std::sync::Arc<Refusals>>,
) -> impl IntoResponse {
    let mut text = render(&fed);
    if let Some(Extension(stats)) = connections {
        render_connections(&mut text, &stats);
    }
    render_refusals(&mut text, &refusals);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// The port's connection figures (see [`ConnectionStats`]).
fn render_connections(out: &mut String, stats: &ConnectionStats) {
    let s = stats.snapshot();
    for (name, kind, help, value) in [
        (
            "rhizome_connections_open",
            "gauge",
            "Sockets held on the port (HTTP and accepted links).",
            s.open as u64,
        ),
        (
            "rhizome_connections_limit",
            "gauge",
            "Most sockets held before new ones may only ask for /status, /health or /metrics.",
            s.limit as u64,
        ),
        (
            "rhizome_connections_refused_total",
            "counter",
            "Connections over the limit answered 503 or closed unanswered.",
            s.refused,
        ),
        (
            "rhizome_connections_header_timeout_total",
            "counter",
            "Connections closed for not sending a request head in time.",
            s.header_timeouts,
        ),
        (
            "rhizome_connections_idle_timeout_total",
            "counter",
            "Connections closed after moving no byte for the idle timeout.",
            s.idle_timeouts,
        ),
        (
            "rhizome_accept_errors_total",
            "counter",
            "Failed accepts (descriptors exhausted, mostly).",
            s.accept_errors,
        ),
    ] {
        Family::new(out, name, kind, help).sample(&[], value);
    }
}

/// The archive: what it holds, and the last archival pass.
fn render_archive(out: &mut String, node: &crate::node::Node, archived: u64) {
    Family::new(
        out,
        "rhizome_archived_deltas",
        "gauge",
        "Deltas moved out of the live store into archive files.",
    )
    .sample(&[], archived);
    Family::new(
        out,
        "rhizome_archive_bytes",
        "gauge",
        "Bytes the archive files take on disk.",
    )
    .sample(&[], node.store().archive_bytes());
    let last = node.last_archival();
    Family::new(
        out,
        "rhizome_archival_last_run_timestamp_seconds",
        "gauge",
        "When the last archival pass ended (0: none since start).",
    )
    .sample(&[], last.as_ref().map_or(0, |l| l.at / 1000));
    Family::new(
        out,
        "rhizome_archival_last_run_deltas",
        "gauge",
        "Deltas the last archival pass moved to the archive.",
    )
    .sample(
        &[],
        last.as_ref()
            .and_then(|l| l.report.as_ref())
            .map_or(0, |r| r.archived),
    );
    Family::new(
        out,
        "rhizome_archival_last_run_failed",
        "gauge",
        "1 when the last archival pass failed.",
    )
    .sample(&[], u64::from(last.is_some_and(|l| l.error.is_some())));
}

/// Requests refused for want of the right token (see [`super::auth`]).
fn render_refusals(out: &mut String, refusals: &Refusals) {
    let mut f = Family::new(
        out,
        "rhizome_http_unauthorized_total",
        "counter",
        "Requests answered 401 (no token, or not the one the route takes), by route class.",
    );
    for class in [Access::Read, Access::Write, Access::Admin] {
        f.sample(&[("class", class.name())], refusals.get(class));
    }
}

pub fn render(fed: &Federation) -> String {
    let node = fed.node();
    let mut out = String::new();
    let store = node.store();
    let head = store.head().0;
    let archived = store.archive_stats().unwrap_or_default();
    Family::new(
        &mut out,
        "rhizome_deltas_stored",
        "gauge",
        "Deltas in the live store (archived ones not counted).",
    )
    .sample(&[], head.saturating_sub(archived.count));
    render_archive(&mut out, node, archived.count);
    Family::new(
        &mut out,
        "rhizome_duplicates_total",
        "counter",
        "Deltas received again and not stored, since start.",
    )
    .sample(&[], store.duplicates());
    Family::new(
        &mut out,
        "rhizome_invalid_total",
        "counter",
        "Invalid deltas refused, since start.",
    )
    .sample(&[], node.invalid_count());
    Family::new(
        &mut out,
        "rhizome_quarantined_deltas",
        "gauge",
        "Deltas held in quarantine.",
    )
    .sample(&[], store.quarantine_len());
    let refused = fed.auth_refusals();
    let mut f = Family::new(
        &mut out,
        "rhizome_link_auth_refusals_total",
        "counter",
        "Links refused for who the peer is: anonymous (it proved no configured identity and none are accepted) or failed (a proof or token that does not hold, a key other than expected).",
    );
    f.sample(
        &[("reason", "anonymous")],
        refused.anonymous.load(std::sync::atomic::Ordering::Relaxed),
    );
    f.sample(
        &[("reason", "failed")],
        refused.failed.load(std::sync::atomic::Ordering::Relaxed),
    );
    let (verified, refused) = fed.node().signature_counts();
    Family::new(
        &mut out,
        "rhizome_signatures_verified_total",
        "counter",
        "Delta signatures that verified, on every way in, since start.",
    )
    .sample(&[], verified);
    Family::new(
        &mut out,
        "rhizome_signature_refusals_total",
        "counter",
        "Deltas the signature rules refused (a bad signature, an unsigned or wrongly signed delta of a bound author, an unsigned delta where signatures are required, a negation by someone else), since start.",
    )
    .sample(&[], refused);
    Family::new(
        &mut out,
        "rhizome_store_disk_bytes",
        "gauge",
        "Bytes the store's data occupies on disk: its tables and the journal blocks written (not the journal's preallocated length).",
    )
    .sample(&[], store.disk_space());
    let storage = store.health();
    Family::new(
        &mut out,
        "rhizome_storage_writable",
        "gauge",
        "1 while the store takes writes, 0 after a write error until it recovers.",
    )
    .sample(&[], u8::from(storage.writable));
    Family::new(
        &mut out,
        "rhizome_storage_write_failures_total",
        "counter",
        "Group commits that failed (none of their writes acknowledged), since start.",
    )
    .sample(&[], storage.write_failures);
    Family::new(
        &mut out,
        "rhizome_storage_recoveries_total",
        "counter",
        "Times the store became writable again by itself, since start.",
    )
    .sample(&[], storage.recoveries);
    Family::new(
        &mut out,
        "rhizome_uptime_seconds",
        "gauge",
        "Seconds since the node started.",
    )
    .sample(&[], node.uptime().as_secs());

    let links = fed.get_federation_links();
    let infos: Vec<_> = links.iter().map(|l| l.info()).collect();
    let labels = |i: &crate::federation::LinkInfo| -> Vec<(&'static str, String)> {
        vec![
            ("link", i.id.clone()),
            ("name", i.name.clone()),
            ("peer", i.remote_system_id.clone().unwrap_or_default()),
            ("direction", format!("{:?}", i.direction).to_lowercase()),
        ]
    };
    let per_link: [LinkCounter; 18] = [
        (
            "rhizome_link_deltas_sent_total",
            "counter",
            "Deltas sent on the link.",
            |s| s.deltas_sent,
        ),
        (
            "rhizome_link_deltas_received_total",
            "counter",
            "Deltas received and accepted on the link.",
            |s| s.deltas_received,
        ),
        (
            "rhizome_link_deltas_rejected_total",
            "counter",
            "Deltas refused (invalid or by a trust policy).",
            |s| s.deltas_rejected,
        ),
        (
            "rhizome_link_deltas_filtered_total",
            "counter",
            "Deltas not kept by a pull filter.",
            |s| s.deltas_filtered,
        ),
        (
            "rhizome_link_deltas_invalid_total",
            "counter",
            "Received deltas refused as invalid (also in rejected).",
            |s| s.deltas_invalid,
        ),
        (
            "rhizome_link_frames_invalid_total",
            "counter",
            "Frames from the peer that could not be decoded.",
            |s| s.frames_invalid,
        ),
        (
            "rhizome_link_deltas_nacked_total",
            "counter",
            "Deltas sent that the peer refused (delta_nack).",
            |s| s.deltas_nacked,
        ),
        (
            "rhizome_link_deltas_withheld_total",
            "counter",
            "Stored deltas not sent because the peer's advertised limits refuse them.",
            |s| s.deltas_withheld,
        ),
        (
            "rhizome_link_bytes_sent_total",
            "counter",
            "Bytes of frames sent.",
            |s| s.bytes_sent,
        ),
        (
            "rhizome_link_bytes_received_total",
            "counter",
            "Bytes of frames received.",
            |s| s.bytes_received,
        ),
        (
            "rhizome_link_announced_out_total",
            "counter",
            "Relayed deltas sent to the peer as ids only (feature announce).",
            |s| s.announced_out,
        ),
        (
            "rhizome_link_announced_in_total",
            "counter",
            "Deltas the peer announced to us by id.",
            |s| s.announced_in,
        ),
        (
            "rhizome_link_requested_out_total",
            "counter",
            "Deltas we asked the peer for by id (announced or found missing by reconciliation).",
            |s| s.requested_out,
        ),
        (
            "rhizome_link_requested_in_total",
            "counter",
            "Deltas the peer asked us for by id.",
            |s| s.requested_in,
        ),
        (
            "rhizome_link_reconciliations_total",
            "counter",
            "Reconciliations completed on the link, this side learning what it lacked.",
            |s| s.reconciliations,
        ),
        (
            "rhizome_link_reconciled_missing_total",
            "counter",
            "Deltas those reconciliations found missing here.",
            |s| s.reconciled_missing,
        ),
        (
            "rhizome_link_reconnects_total",
            "counter",
            "Reconnect attempts after a lost connection.",
            |s| s.reconnects,
        ),
        (
            "rhizome_link_sent_through",
            "gauge",
            "Our log position the link has sent up to.",
            |s| s.sent_through,
        ),
    ];
    for (name, kind, help, get) in per_link {
        let mut f = Family::new(&mut out, name, kind, help);
        for i in &infos {
            let l = labels(i);
            let refs: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
            f.sample(&refs, get(&i.stats));
        }
    }
    let mut lag = Family::new(
        &mut out,
        "rhizome_link_sync_lag",
        "gauge",
        "Local head minus the position the peer acknowledged as committed (extension peers) or, for plain v1 peers, the position sent through.",
    );
    for i in &infos {
        let l = labels(i);
        let refs: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // Extension peers acknowledge what they committed; for plain v1 peers what was
        // sent is the best known.
        let reached = i.stats.peer_acked.unwrap_or(i.stats.sent_through);
        lag.sample(&refs, head.saturating_sub(reached));
    }
    let mut state = Family::new(
        &mut out,
        "rhizome_link_state",
        "gauge",
        "1 for the state the link is in.",
    );
    for i in &infos {
        for s in [
            LinkStatus::Connecting,
            LinkStatus::Connected,
            LinkStatus::Syncing,
            LinkStatus::Paused,
            LinkStatus::Disconnected,
            LinkStatus::Error,
        ] {
            let name = format!("{s:?}").to_lowercase();
            state.sample(
                &[("link", &i.id), ("name", &i.name), ("state", &name)],
                u8::from(i.status == s),
            );
        }
    }

    let host = node.policies();
    let set = host.current();
    let c = set.counters();
    Family::new(
        &mut out,
        "rhizome_policy_evaluations_total",
        "counter",
        "Script evaluations.",
    )
    .sample(&[], c.evaluations.load(Ordering::Relaxed));
    let mut rejections = Family::new(
        &mut out,
        "rhizome_policy_rejections_total",
        "counter",
        "Script evaluations that rejected, by script file (sum them for the total).",
    );
    for (script, n) in c.rejections_by_script() {
        rejections.sample(&[("script", &script)], n);
    }
    Family::new(
        &mut out,
        "rhizome_policy_runtime_errors_total",
        "counter",
        "Script evaluations that failed (and rejected), time-outs aside.",
    )
    .sample(&[], c.runtime_errors.load(Ordering::Relaxed));
    Family::new(
        &mut out,
        "rhizome_policy_timeouts_total",
        "counter",
        "Script evaluations over their time budget (and rejected).",
    )
    .sample(&[], c.timeouts.load(Ordering::Relaxed));
    Family::new(
        &mut out,
        "rhizome_policy_eval_seconds_total",
        "counter",
        "Time spent evaluating scripts.",
    )
    .sample(&[], c.eval_nanos.load(Ordering::Relaxed) as f64 / 1e9);
    Family::new(
        &mut out,
        "rhizome_policy_reloads_total",
        "counter",
        "Reloads of the script folders.",
    )
    .sample(&[], host.reload_count());
    Family::new(
        &mut out,
        "rhizome_policy_scripts",
        "gauge",
        "Scripts in the set in force.",
    )
    .sample(&[], set.scripts().len());
    Family::new(
        &mut out,
        "rhizome_policy_compile_errors",
        "gauge",
        "Scripts whose latest version does not compile.",
    )
    .sample(&[], set.errors().len());
    out
}
