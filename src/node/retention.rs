//! The retention rule (`[retention]` in the config file) and the task that applies it:
//! every `interval`, one archival pass ([`crate::store::Store::archive`]) with the
//! rule as it is then. The rule is replaced live on a config reload; a pass can also be
//! asked for now (`POST /archive`, `rhizome archive`).
//!
//! The task holds the node weakly, so it ends with the node.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Inner, Node};
use crate::filter::DeltaFilter;
use crate::store::{ArchiveError, ArchiveReport, ArchiveRule};

/// How often the rule is applied unless `interval` says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);
/// The shortest `interval` accepted.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// `[retention]`: which deltas leave the live store for the archive, and how often
/// that is looked at. With neither `maxAge` nor `maxBytes`, nothing is archived.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Archive deltas whose timestamp is older than this (`"90d"`, `"12h"`, `"30m"`, `"45s"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// Only deltas matching this filter may be archived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<DeltaFilter>,
    /// Archive the oldest deltas while the store takes more bytes on disk than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// How often the rule is applied (default `"10m"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

impl RetentionSettings {
    /// Checks the durations.
    ///
    /// # Errors
    /// A message naming the key that is wrong.
    pub fn check(&self) -> Result<(), String> {
        if let Some(age) = &self.max_age {
            parse_duration(age).map_err(|e| format!("retention.maxAge: {e}"))?;
        }
        if let Some(every) = &self.interval {
            let d = parse_duration(every).map_err(|e| format!("retention.interval: {e}"))?;
            if d < MIN_INTERVAL {
                return Err(format!("retention.interval: {every:?} is under one second"));
            }
        }
        if self.max_bytes == Some(0) {
            return Err("retention.maxBytes: must be above 0".into());
        }
        Ok(())
    }

    /// Whether the rule archives anything at all.
    pub fn is_active(&self) -> bool {
        self.max_age.is_some() || self.max_bytes.is_some()
    }

    /// How often the rule is applied.
    pub fn interval(&self) -> Duration {
        self.interval
            .as_deref()
            .and_then(|s| parse_duration(s).ok())
            .map_or(DEFAULT_INTERVAL, |d| d.max(MIN_INTERVAL))
    }

    /// The rule for a pass that runs at `now_ms`.
    pub fn rule_at(&self, now_ms: u64) -> ArchiveRule {
        let max_age = self.max_age.as_deref().and_then(|s| parse_duration(s).ok());
        ArchiveRule {
            before: max_age.map(|age| now_ms.saturating_sub(age.as_millis() as u64)),
            filter: self.filter.clone(),
            max_bytes: self.max_bytes,
        }
    }
}

/// Parses `"90d"`, `"12h"`, `"30m"`, `"45s"`, `"500ms"`.
///
/// # Errors
/// A message saying what is expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a number followed by ms, s, m, h or d"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m, h or d")),
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// The last pass, for `/status` and `/metrics`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastArchival {
    /// When it ended (ms since the epoch).
    pub at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<ArchiveReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The node's retention state: the rule in force and the last pass.
pub(super) struct Retention {
    settings: watch::Sender<RetentionSettings>,
    last: Mutex<Option<LastArchival>>,
}

impl Retention {
    pub(super) fn new() -> Retention {
        Retention {
            settings: watch::channel(RetentionSettings::default()).0,
            last: Mutex::new(None),
        }
    }

    /// Starts the task that applies the rule every interval, for as long as the node lives.
    pub(super) fn spawn(node: &Node) {
        let weak = Arc::downgrade(&node.inner);
        let rx = node.inner.retention.settings.subscribe();
        tokio::spawn(run(weak, rx));
    }
}

async fn run(node: Weak<Inner>, mut settings: watch::Receiver<RetentionSettings>) {
    loop {
        let every = settings.borrow_and_update().interval();
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            changed = settings.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        let Some(inner) = node.upgrade() else {
            return;
        };
        let node = Node { inner };
        if node.retention_settings().is_active() && node.store().archive_dir().is_some() {
            if let Err(e) = node.archive_now().await {
                tracing::error!(error = %e, "archival pass failed");
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// The retention rule in force.
    pub fn retention_settings(&self) -> RetentionSettings {
        self.inner.retention.settings.borrow().clone()
    }

    /// Replaces the retention rule (config reload); the next pass uses it, and the
    /// interval restarts from now.
    pub fn set_retention(&self, settings: RetentionSettings) {
        self.inner.retention.settings.send_replace(settings);
    }

    /// Runs one archival pass now with the rule in force (with none, it only finishes
    /// what an interrupted pass left), and records it as the last pass.
    ///
    /// # Errors
    /// As [`crate::store::Store::archive`].
    pub async fn archive_now(&self) -> Result<ArchiveReport, ArchiveError> {
        let rule = self.retention_settings().rule_at(now_ms());
        let store = self.store().clone();
        let result = tokio::task::spawn_blocking(move || store.archive(&rule))
            .await
            .unwrap_or_else(|e| {
                Err(ArchiveError::Store(crate::store::StoreError::Corrupt(
                    format!("archival task failed: {e}"),
                )))
            });
        let last = LastArchival {
            at: now_ms(),
            report: result.as_ref().ok().cloned(),
            error: result.as_ref().err().map(ToString::to_string),
        };
        if let Ok(report) = &result {
            if report.archived > 0 {
                tracing::info!(
                    archived = report.archived,
                    parts = report.parts.len(),
                    store_bytes = report.store_bytes_after,
                    "archived old deltas"
                );
            }
        }
        if let Ok(mut slot) = self.inner.retention.last.lock() {
            *slot = Some(last);
        }
        result
    }

    /// The last archival pass since start.
    pub fn last_archival(&self) -> Option<LastArchival> {
        self.inner
            .retention
            .last
            .lock()
            .ok()
            .and_then(|last| last.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("12").unwrap_err().contains("unit"));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn the_rule_archives_before_now_minus_max_age() {
        let s = RetentionSettings {
            max_age: Some("1s".into()),
            interval: Some("2s".into()),
            ..RetentionSettings::default()
        };
        s.check().unwrap();
        assert_eq!(s.rule_at(10_000).before, Some(9_000));
        assert_eq!(s.interval(), Duration::from_secs(2));
        assert!(s.is_active());
        assert!(!RetentionSettings::default().is_active());
        assert_eq!(RetentionSettings::default().interval(), DEFAULT_INTERVAL);
        let bad = RetentionSettings {
            interval: Some("10ms".into()),
            ..RetentionSettings::default()
        };
        assert!(bad.check().unwrap_err().contains("retention.interval"));
    }
}
