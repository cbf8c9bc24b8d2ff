//! One message of a reconciliation, as it travels ([`Round`]) and as it is read
//! ([`Range`]), and the builder replies are written with.
//!
//! A round is a list of contiguous ranges in ascending order: the first starts before
//! every item, each one starts where the one before it ends, the last ends at infinity;
//! an empty list means "nothing left to talk about". Each range carries its upper bound
//! and a mode:
//!
//! ```json
//! {"ranges":[
//!   {"t":1796897935181},
//!   {"t":1063796,"fp":"dda3e21957dc084aa0726933f6cec527","n":1},
//!   {"t":238277340},
//!   {"t":0,"h":"9a","ids":["7a22a7ae-bdc8-3738-f2cc-f3bd79e29efb","b65d9e9d-3afb-..."]},
//!   {}
//! ]}
//! ```
//!
//! - `t`: the bound's timestamp, as the difference from the previous range's bound (from
//!   0 for the first); `h`: the leading bytes of the bound's hash in lowercase hex (the
//!   rest zeros; absent when all are). The last range has neither: it ends at infinity.
//! - mode: `fp` (32 hex digits) and `n`, the sender's fingerprint and count of its items
//!   in the range, asking for an answer; `ids`, the ids of every delta the sender holds
//!   in the range; neither, a skip: nothing left to do in the range.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::identity::{from_hex, to_hex};

use super::bound::{hash_from_prefix, hash_prefix, Bound};
use super::fingerprint::Fingerprint;
use super::{Limits, MAX_COUNT, MAX_ID_BYTES};

/// One message of a reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Round {
    pub ranges: Vec<WireRange>,
}

/// One range of a [`Round`], as it travels (see the module's docs for the fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct WireRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
}

/// A range as read: where it ends (it starts where the previous one ended) and what
/// its sender says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Range<'a> {
    pub upper: Bound,
    pub mode: Mode<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mode<'a> {
    /// Settled: nothing to do.
    Skip,
    /// The sender's fingerprint and count of its items in the range; asks for an answer.
    Fingerprint { fp: Fingerprint, count: u64 },
    /// The ids of every delta the sender holds in the range.
    Ids(Cow<'a, [String]>),
}

impl Round {
    /// Whether the round holds a fingerprint range, which its receiver must answer.
    pub(crate) fn asks(&self) -> bool {
        self.ranges.iter().any(|r| r.fp.is_some())
    }

    /// The ranges of a peer's round, checked against `limits`.
    ///
    /// # Errors
    /// What is wrong with the round, naming the range and field.
    pub(super) fn read(&self, limits: &Limits) -> Result<Vec<Range<'_>>, String> {
        if self.ranges.len() > limits.max_ranges {
            return Err(format!(
                "it has {} ranges; at most {} are allowed in a round",
                self.ranges.len(),
                limits.max_ranges
            ));
        }
        let mut ranges = Vec::with_capacity(self.ranges.len());
        let mut previous = Bound::LOWEST;
        let mut ids = IdBudget::new(limits);
        let mut total: u64 = 0;
        for (i, wire) in self.ranges.iter().enumerate() {
            let last = i + 1 == self.ranges.len();
            let upper = bound(wire, previous, last).map_err(|e| format!("range {i}: {e}"))?;
            let mode = mode(wire, &mut ids).map_err(|e| format!("range {i}: {e}"))?;
            if let Mode::Fingerprint { count, .. } = mode {
                total = total.saturating_add(count);
                if total > MAX_COUNT {
                    return Err(format!(
                        "range {i}: the counts add up to more than {MAX_COUNT} deltas"
                    ));
                }
            }
            ranges.push(Range { upper, mode });
            previous = upper;
        }
        Ok(ranges)
    }
}

/// A range's upper bound, past `previous`.
fn bound(wire: &WireRange, previous: Bound, last: bool) -> Result<Bound, String> {
    let Some(t) = wire.t else {
        if wire.h.is_some() {
            return Err("h without t".into());
        }
        if !last {
            return Err("no bound (t); only the last range ends at infinity".into());
        }
        return Ok(Bound::Infinity);
    };
    if last {
        return Err("the last range has a bound (t); it must end at infinity".into());
    }
    let Bound::At {
        timestamp: before, ..
    } = previous
    else {
        return Err("a range after the one ending at infinity".into());
    };
    let timestamp = before
        .checked_add(t)
        .ok_or_else(|| format!("t {t} takes the timestamp past the largest integer"))?;
    let hash = match &wire.h {
        None => 0,
        Some(h) => hex(h, 16)
            .and_then(|b| hash_from_prefix(&b))
            .ok_or_else(|| format!("h {h:?} is not lowercase hex of at most 16 bytes"))?,
    };
    let upper = Bound::At { timestamp, hash };
    if upper <= previous {
        return Err("its bound is not above the previous range's: bounds must ascend".into());
    }
    Ok(upper)
}

/// A range's mode, its ids counted against the round's budget.
fn mode<'a>(wire: &'a WireRange, budget: &mut IdBudget) -> Result<Mode<'a>, String> {
    match (&wire.fp, wire.n, &wire.ids) {
        (None, None, None) => Ok(Mode::Skip),
        (Some(fp), Some(count), None) => {
            let fp = hex(fp, 16)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(Fingerprint)
                .ok_or_else(|| format!("fp {fp:?} is not 32 lowercase hex digits"))?;
            if count > MAX_COUNT {
                return Err(format!(
                    "n is {count}; no range holds more than {MAX_COUNT} deltas"
                ));
            }
            if count == 0 && fp != Fingerprint::empty() {
                return Err("n is 0 but fp is not the fingerprint of no delta".into());
            }
            Ok(Mode::Fingerprint { fp, count })
        }
        (None, None, Some(ids)) => {
            for (k, id) in ids.iter().enumerate() {
                budget.take(id).map_err(|e| format!("id {k}: {e}"))?;
            }
            Ok(Mode::Ids(Cow::Borrowed(ids)))
        }
        _ => Err("a range has fp and n, or ids, or neither (a skip); not another mix".into()),
    }
}

/// What is left of a round's allowance of ids.
pub(super) struct IdBudget {
    pub ids: usize,
    pub bytes: usize,
    max_ids: usize,
    max_bytes: usize,
}

impl IdBudget {
    pub(super) fn new(limits: &Limits) -> IdBudget {
        IdBudget {
            ids: limits.max_ids,
            bytes: limits.max_id_bytes,
            max_ids: limits.max_ids,
            max_bytes: limits.max_id_bytes,
        }
    }

    /// Counts `id` against the budget.
    ///
    /// # Errors
    /// Why it does not fit.
    pub(super) fn take(&mut self, id: &str) -> Result<(), String> {
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            return Err(format!(
                "is {} bytes long; an id is 1 to {MAX_ID_BYTES} bytes",
                id.len()
            ));
        }
        if self.ids == 0 {
            return Err(format!(
                "one id too many: at most {} in a round",
                self.max_ids
            ));
        }
        let bytes = json_len(id);
        if bytes > self.bytes {
            return Err(format!(
                "the round's ids take more than {} bytes",
                self.max_bytes
            ));
        }
        self.ids -= 1;
        self.bytes -= bytes;
        Ok(())
    }
}

/// The bytes `s` takes in a JSON array of strings: its quotes, a comma, and its escapes
/// (counted at their longest, `\u00XX`, for control bytes).
fn json_len(s: &str) -> usize {
    let escaped: usize = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum();
    escaped + 3
}

/// The bytes of lowercase hex `s`, when it is whole bytes and at most `max` of them
/// (the wire's form is lowercase, so one form is compared).
fn hex(s: &str, max: usize) -> Option<Vec<u8>> {
    if s.len() > 2 * max || s.bytes().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    from_hex(s)
}

/// A reply being written: ranges in ascending order, neighbouring skips merged.
#[derive(Debug, Default)]
pub(super) struct RoundBuilder {
    ranges: Vec<Range<'static>>,
}

impl RoundBuilder {
    /// Ranges written so far.
    pub(super) fn len(&self) -> usize {
        self.ranges.len()
    }

    pub(super) fn skip(&mut self, upper: Bound) {
        match self.ranges.last_mut() {
            Some(last) if last.mode == Mode::Skip => last.upper = upper,
            _ => self.push(upper, Mode::Skip),
        }
    }

    pub(super) fn fingerprint(&mut self, upper: Bound, fp: Fingerprint, count: usize) {
        let count = count as u64;
        self.push(upper, Mode::Fingerprint { fp, count });
    }

    pub(super) fn ids(&mut self, upper: Bound, ids: Vec<String>) {
        self.push(upper, Mode::Ids(Cow::Owned(ids)));
    }

    fn push(&mut self, upper: Bound, mode: Mode<'static>) {
        debug_assert!(self.ranges.last().is_none_or(|r| r.upper < upper));
        self.ranges.push(Range { upper, mode });
    }

    /// The round as it travels; a round of one skip is the empty round.
    pub(super) fn finish(self) -> Round {
        if let [only] = self.ranges.as_slice() {
            if only.mode == Mode::Skip {
                return Round::default();
            }
        }
        let mut before = 0u64;
        let ranges = self
            .ranges
            .into_iter()
            .map(|range| {
                let mut wire = WireRange::default();
                if let Bound::At { timestamp, hash } = range.upper {
                    wire.t = Some(timestamp.saturating_sub(before));
                    wire.h = (hash != 0).then(|| to_hex(&hash_prefix(hash)));
                    before = timestamp;
                }
                match range.mode {
                    Mode::Skip => {}
                    Mode::Fingerprint { fp, count } => {
                        wire.fp = Some(to_hex(&fp.0));
                        wire.n = Some(count);
                    }
                    Mode::Ids(ids) => wire.ids = Some(ids.into_owned()),
                }
                wire
            })
            .collect();
        Round { ranges }
    }
}
