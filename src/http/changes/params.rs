//! The parameters of `GET /changes`, read and checked before the feed starts: every
//! refusal is a 400 naming the parameter, never a feed that silently matches nothing.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::super::{ApiError, Criteria, DEFAULT_LIMIT, MAX_LIMIT};
use crate::filter::DeltaFilter;
use crate::store::Seq;

/// How long a longpoll waits for a change unless `timeout` says otherwise.
const LONGPOLL_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest `timeout` taken: a client that wants longer reconnects (it resumes exactly).
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// How often a waiting feed writes a heartbeat unless `heartbeat` says otherwise.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// The shortest `heartbeat` taken: shorter would be a client making the node spin.
pub(super) const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// The query string as given; every value is text here so that a bad one is refused by
/// [`FeedRequest::parse`] with the parameter's name.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(in crate::http) struct ChangesParams {
    #[serde(flatten)]
    criteria: Criteria,
    since: Option<String>,
    feed: Option<String>,
    limit: Option<String>,
    timeout: Option<String>,
    heartbeat: Option<String>,
    filter: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Feed {
    /// What is there now, and the answer ends.
    Normal,
    /// As normal, but waits for the first matching change when there is none yet.
    Longpoll,
    /// A stream of changes that never ends by itself.
    Continuous,
}

/// Where the feed starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Since {
    /// After this log position.
    After(Seq),
    /// After the head as it is when the feed starts.
    Now,
}

/// A checked `GET /changes` request.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FeedRequest {
    pub feed: Feed,
    pub since: Since,
    /// At most this many changes; `None` only for a continuous feed without `limit`.
    pub limit: Option<usize>,
    pub filter: DeltaFilter,
    /// When the feed ends even without a change: a longpoll answers empty then, a
    /// continuous feed ends.
    pub timeout: Option<Duration>,
    pub heartbeat: Duration,
}

impl FeedRequest {
    /// Checks the parameters; `last_event_id` is the `Last-Event-ID` header, which an
    /// `EventSource` sends when it reconnects and which wins over `since`.
    ///
    /// # Errors
    /// A 400 naming the parameter at fault.
    pub fn parse(p: ChangesParams, last_event_id: Option<&str>) -> Result<FeedRequest, ApiError> {
        let feed = match p.feed.as_deref() {
            None | Some("normal") => Feed::Normal,
            Some("longpoll") => Feed::Longpoll,
            Some("continuous") => Feed::Continuous,
            Some(other) => {
                return Err(invalid(
                    "feed",
                    format!("feed must be normal, longpoll or continuous, not {other:?}"),
                ))
            }
        };
        let since = match (last_event_id, p.since.as_deref()) {
            (Some(id), _) => Since::After(Seq(number("Last-Event-ID", id)?)),
            (None, None) => Since::After(Seq(0)),
            (None, Some("now")) => Since::Now,
            (None, Some(text)) => Since::After(Seq(number("since", text)?)),
        };
        let limit = match p.limit.as_deref() {
            Some(text) => {
                let n = number("limit", text)?;
                if n == 0 || n > MAX_LIMIT as u64 {
                    return Err(invalid(
                        "limit",
                        format!("limit must be between 1 and {MAX_LIMIT}, got {n}"),
                    ));
                }
                Some(n as usize)
            }
            None if feed == Feed::Continuous => None,
            None => Some(DEFAULT_LIMIT),
        };
        let waits = feed != Feed::Normal;
        let timeout = match p.timeout.as_deref() {
            Some(_) if !waits => return Err(not_for_normal("timeout")),
            Some(text) => Some(millis("timeout", text, Duration::ZERO, MAX_TIMEOUT)?),
            None if feed == Feed::Longpoll => Some(LONGPOLL_TIMEOUT),
            None => None,
        };
        let heartbeat = match p.heartbeat.as_deref() {
            Some(_) if !waits => return Err(not_for_normal("heartbeat")),
            Some(text) => millis("heartbeat", text, MIN_HEARTBEAT, MAX_TIMEOUT)?,
            None => HEARTBEAT,
        };
        let filter = match p.filter {
            Some(_) if !p.criteria.is_empty() => {
                return Err(invalid(
                    "filter",
                    "give either filter (JSON) or the criteria (author, system, targetId, \
                     context, id), not both",
                ))
            }
            Some(text) => {
                let value: Value = serde_json::from_str(&text)
                    .map_err(|e| invalid("filter", format!("filter is not valid JSON: {e}")))?;
                DeltaFilter::from_value(&value).map_err(|e| invalid("filter", e.to_string()))?
            }
            None => p.criteria.into_filter(),
        };
        Ok(FeedRequest {
            feed,
            since,
            limit,
            filter,
            timeout,
            heartbeat,
        })
    }
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("INVALID_QUERY", message).with_field(Some(param.to_owned()))
}

fn not_for_normal(param: &str) -> ApiError {
    invalid(
        param,
        format!("{param} applies to feed=longpoll or feed=continuous, not to the normal feed"),
    )
}

fn number(param: &str, text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        invalid(
            param,
            format!("{param} must be a whole number, not {text:?}"),
        )
    })
}

/// A duration in milliseconds within `[min, max]`.
fn millis(param: &str, text: &str, min: Duration, max: Duration) -> Result<Duration, ApiError> {
    let ms = Duration::from_millis(number(param, text)?);
    if ms < min || ms > max {
        return Err(invalid(
            param,
            format!(
                "{param} must be between {} and {} ms, got {}",
                min.as_millis(),
                max.as_millis(),
                ms.as_millis()
            ),
        ));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Result<ChangesParams, ApiError> {
        let uri: axum::http::Uri = format!("/changes?{query}").parse().expect("uri");
        axum::extract::Query::try_from_uri(&uri)
            .map(|q| q.0)
            .map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))
    }

    fn parse(query: &str) -> Result<FeedRequest, ApiError> {
        FeedRequest::parse(params(query)?, None)
    }

    fn refused_field(query: &str) -> Option<String> {
        parse(query).expect_err(query).field
    }

    #[test]
    fn defaults_are_a_normal_page_from_the_start() {
        let r = parse("").unwrap();
        assert_eq!(r.feed, Feed::Normal);
        assert_eq!(r.since, Since::After(Seq(0)));
        assert_eq!(r.limit, Some(DEFAULT_LIMIT));
        assert_eq!(r.timeout, None);
        assert!(r.filter.is_empty());
        let r = parse("feed=continuous&since=now").unwrap();
        assert_eq!((r.since, r.limit, r.timeout), (Since::Now, None, None));
        assert_eq!(r.heartbeat, HEARTBEAT);
        let r = parse("feed=longpoll&since=7").unwrap();
        assert_eq!(r.timeout, Some(LONGPOLL_TIMEOUT));
        assert_eq!(r.since, Since::After(Seq(7)));
    }

    #[test]
    fn criteria_and_filter_json_make_the_same_filter() {
        let by_params = parse("author=alice&targetId=t1").unwrap().filter;
        let by_json = parse(
            "filter=%7B%22authors%22%3A%5B%22alice%22%5D%2C%22targetIds%22%3A%5B%22t1%22%5D%7D",
        )
        .unwrap()
        .filter;
        assert_eq!(by_params, by_json);
        assert_eq!(by_params.authors, Some(vec!["alice".to_owned()]));
    }

    #[test]
    fn last_event_id_wins_over_since() {
        let p = params("feed=continuous&since=3").unwrap();
        let r = FeedRequest::parse(p, Some("42")).unwrap();
        assert_eq!(r.since, Since::After(Seq(42)));
        let p = params("feed=continuous").unwrap();
        let e = FeedRequest::parse(p, Some("x")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("Last-Event-ID"));
    }

    #[test]
    fn bad_parameters_are_refused_by_name() {
        assert_eq!(refused_field("since=-1").as_deref(), Some("since"));
        assert_eq!(refused_field("feed=sometimes").as_deref(), Some("feed"));
        assert_eq!(refused_field("limit=0").as_deref(), Some("limit"));
        assert_eq!(refused_field("limit=many").as_deref(), Some("limit"));
        assert_eq!(refused_field("timeout=5").as_deref(), Some("timeout"));
        assert_eq!(
            refused_field("feed=continuous&heartbeat=10").as_deref(),
            Some("heartbeat")
        );
        assert_eq!(
            refused_field("feed=longpoll&timeout=99999999").as_deref(),
            Some("timeout")
        );
        assert_eq!(refused_field("filter=%7B").as_deref(), Some("filter"));
        assert_eq!(
            refused_field("filter=%7B%22authors%22%3A%22bob%22%7D").as_deref(),
            Some("filter")
        );
        assert_eq!(
            refused_field("author=a&filter=%7B%7D").as_deref(),
            Some("filter")
        );
        let unknown = parse("colour=red").unwrap_err();
        assert!(unknown.message.contains("colour"), "{}", unknown.message);
    }
}
