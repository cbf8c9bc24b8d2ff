//! The receiving side of the `announce` feature: ids the peer announced that we lack,
//! asked for after a short grace, and the cursor held until each is resolved.
//!
//! A relayed delta is announced by every neighbour that holds it, while its body
//! usually arrives first from the neighbour it came from. So an announced id we lack
//! waits [`GRACE`] (the body is likely on its way on another link), is checked again,
//! and only then asked for (`delta_request`), unless another link of this node is
//! already fetching it (see `claims`), in which case it waits for that.
//!
//! The cursor is the invariant that makes this lossless: the peer's log position of an
//! announcement is committed only once every id it announced is resolved, i.e. stored
//! here (from any link) or answered by the peer (its `delta_response` durable, whatever
//! the verdict). Until then the cursor stays before the announcement, so a connection
//! lost in between resumes from there and the peer announces again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::federation::claims::Claims;

/// How long an announced id we lack waits before it is asked for.
pub(super) const GRACE: Duration = Duration::from_millis(100);
/// How often an id another link is fetching is looked up again.
pub(super) const RECHECK: Duration = Duration::from_millis(250);
/// How long a claim lasts: a fetch not answered by then may be asked of another link.
pub(super) const CLAIM_TTL: Duration = Duration::from_secs(10);
/// The most ids one `delta_request` carries.
pub(super) const MAX_REQUEST_IDS: usize = 1000;
/// The most announced ids one connection may leave unresolved (waiting or asked for).
/// A peer that announces faster than it answers costs its own link, not the node.
pub(super) const MAX_OPEN_IDS: usize = 200_000;

/// An announced id we lack, to be checked again at `due`. Ordered by `due` (then by
/// when it was queued), so the earliest is at hand without a scan.
struct Waiting {
    due: Instant,
    order: u64,
    id: String,
    hold: u64,
}

impl Waiting {
    fn key(&self) -> (Instant, u64) {
        (self.due, self.order)
    }
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Waiting {}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// An announcement with ids not yet resolved: the cursor may not pass `before`.
struct Hold {
    id: u64,
    before: u64,
    open: usize,
}

/// What one connection is fetching, and how far its cursor may go.
pub(super) struct Fetching {
    claims: Arc<Claims>,
    owner: u64,
    /// Soonest due first.
    waiting: BinaryHeap<Reverse<Waiting>>,
    /// Numbers the ids queued in `waiting`, in order.
    queued: u64,
    requests: HashMap<u64, Vec<(String, u64)>>,
    next_request: u64,
    holds: VecDeque<Hold>,
    next_hold: u64,
    /// The highest position any frame carried.
    seen: u64,
    /// The highest position up to which every delta sent in full is durable.
    durable: u64,
    /// The highest position committed.
    pub committed: u64,
}

/// Ids to ask for now, in requests of at most [`MAX_REQUEST_IDS`].
pub(super) struct Requests(pub Vec<(u64, Vec<String>)>);

impl Fetching {
    pub fn new(claims: Arc<Claims>, owner: u64) -> Fetching {
        Fetching {
            claims,
            owner,
            waiting: BinaryHeap::new(),
            queued: 0,
            requests: HashMap::new(),
            next_request: 1,
            holds: VecDeque::new(),
            next_hold: 1,
            seen: 0,
            durable: 0,
            committed: 0,
        }
    }

    /// Whether the cursor is held by an unresolved announcement (positions read from
    /// now on are committed later, through [`Fetching::committable`]).
    pub fn holding(&self) -> bool {
        !self.holds.is_empty()
    }

    pub fn open_ids(&self) -> usize {
        self.waiting.len() + self.requests.values().map(Vec::len).sum::<usize>()
    }

    /// A frame carried the peer to `seq`.
    pub fn saw(&mut self, seq: u64) {
        self.seen = self.seen.max(seq);
    }

    /// Every delta sent in full up to `seq` is durable.
    pub fn durable_through(&mut self, seq: u64) {
        self.durable = self.durable.max(seq);
    }

    /// An announcement whose `missing` ids we lack: they wait out the grace, and the
    /// cursor may not pass what came before it until they are resolved.
    pub fn announced(&mut self, missing: Vec<String>) {
        if missing.is_empty() {
            return;
        }
        let hold = self.open_hold();
        self.wait(hold, missing, Instant::now() + GRACE);
        self.resolve(hold);
    }

    /// Holds the cursor before whatever comes next, until [`Fetching::resolve`] is called
    /// once for the hold itself and once for each id added to it.
    pub fn open_hold(&mut self) -> u64 {
        let hold = self.next_hold;
        self.next_hold += 1;
        self.holds.push_back(Hold {
            id: hold,
            before: self.seen,
            open: 1,
        });
        hold
    }

    /// Ids to fetch under `hold`, checked (and asked for) from `due` on.
    pub fn wait(&mut self, hold: u64, ids: Vec<String>, due: Instant) {
        if let Ok(i) = self.holds.binary_search_by_key(&hold, |h| h.id) {
            self.holds[i].open += ids.len();
        }
        for id in ids {
            self.queue(id, hold, due);
        }
    }

    fn queue(&mut self, id: String, hold: u64, due: Instant) {
        self.queued += 1;
        self.waiting.push(Reverse(Waiting {
            due,
            order: self.queued,
            id,
            hold,
        }));
    }

    /// Whether `hold` is resolved (it and every hold before it).
    pub fn released(&self, hold: u64) -> bool {
        self.holds.front().is_none_or(|h| h.id > hold)
    }

    /// When the next waiting id is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting.peek().map(|Reverse(w)| w.due)
    }

    /// The waiting ids that are due, to be checked against the store.
    pub fn take_due(&mut self) -> Vec<(String, u64)> {
        let now = Instant::now();
        let mut due = Vec::new();
        while self.next_due().is_some_and(|d| d <= now) {
            if let Some(Reverse(w)) = self.waiting.pop() {
                due.push((w.id, w.hold));
            }
        }
        due
    }

    /// Sorts the due ids by what the store said (`stored[i]` for `due[i]`): stored ones
    /// are resolved, ids another link is fetching wait for it, the rest are asked for.
    pub fn after_check(&mut self, due: Vec<(String, u64)>, stored: &[bool]) -> Requests {
        let mut ask: Vec<(String, u64)> = Vec::new();
        for ((id, hold), stored) in due.into_iter().zip(stored) {
            if *stored {
                self.resolve(hold);
                continue;
            }
            match self.claims.try_claim(&id, self.owner, CLAIM_TTL) {
                Ok(()) => ask.push((id, hold)),
                // Looked up again soon: the other link's copy is usually in by then,
                // and this link's cursor waits on it.
                Err(until) => self.queue(id, hold, until.min(Instant::now() + RECHECK)),
            }
        }
        let mut requests = Vec::new();
        while !ask.is_empty() {
            let rest = ask.split_off(ask.len().min(MAX_REQUEST_IDS));
            let rid = self.next_request;
            self.next_request += 1;
            requests.push((rid, ask.iter().map(|(id, _)| id.clone()).collect()));
            self.requests.insert(rid, std::mem::replace(&mut ask, rest));
        }
        Requests(requests)
    }

    /// The peer's answer to `request_id` is durable: its ids are resolved.
    pub fn answered(&mut self, request_id: u64) {
        let Some(entries) = self.requests.remove(&request_id) else {
            return;
        };
        self.claims
            .release(entries.iter().map(|(id, _)| id.as_str()), self.owner);
        for (_, hold) in entries {
            self.resolve(hold);
        }
    }

    /// One of `hold`'s ids (or the hold itself) is resolved.
    pub fn resolve(&mut self, hold: u64) {
        if let Ok(i) = self.holds.binary_search_by_key(&hold, |h| h.id) {
            self.holds[i].open = self.holds[i].open.saturating_sub(1);
        }
        while self.holds.front().is_some_and(|h| h.open == 0) {
            self.holds.pop_front();
        }
    }

    /// How far the cursor may be committed now, when further than it is.
    pub fn committable(&self) -> Option<u64> {
        let limit = self.holds.front().map_or(self.seen, |h| h.before);
        let c = limit.min(self.durable);
        (c > self.committed).then_some(c)
    }
}

impl Drop for Fetching {
    fn drop(&mut self) {
        self.claims.release_owner(self.owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetching() -> Fetching {
        Fetching::new(Arc::default(), 1)
    }

    #[tokio::test(start_paused = true)]
    async fn the_cursor_waits_for_every_announced_id() {
        let mut f = fetching();
        f.saw(10);
        f.durable_through(10);
        assert_eq!(f.committable(), Some(10));
        f.committed = 10;
        // An announcement of two ids we lack, then bodies up to 30.
        f.announced(vec!["a".into(), "b".into()]);
        f.saw(30);
        f.durable_through(30);
        assert_eq!(f.committable(), None, "held before the announcement");
        assert!(f.take_due().is_empty(), "not before the grace");
        tokio::time::advance(GRACE).await;
        let due = f.take_due();
        assert_eq!(due.len(), 2);
        // "a" arrived meanwhile on another link; "b" is asked for.
        let Requests(reqs) = f.after_check(due, &[true, false]);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].1, vec!["b".to_owned()]);
        assert_eq!(f.committable(), None);
        f.answered(reqs[0].0);
        assert_eq!(f.committable(), Some(30));
        assert_eq!(f.open_ids(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_id_another_link_fetches_waits_for_that_link() {
        let claims: Arc<Claims> = Arc::default();
        let mut one = Fetching::new(claims.clone(), 1);
        let mut two = Fetching::new(claims.clone(), 2);
        one.announced(vec!["x".into()]);
        two.announced(vec!["x".into()]);
        tokio::time::advance(GRACE).await;
        let due = one.take_due();
        let Requests(r1) = one.after_check(due, &[false]);
        let due = two.take_due();
        let Requests(r2) = two.after_check(due, &[false]);
        assert_eq!(r1.len(), 1);
        assert!(r2.is_empty(), "claimed by the first link");
        assert_eq!(two.open_ids(), 1, "still waiting, not given up");
        // Looked up again soon, still claimed: it waits on.
        tokio::time::advance(RECHECK).await;
        let due = two.take_due();
        assert_eq!(due.len(), 1);
        let Requests(r2) = two.after_check(due, &[false]);
        assert!(r2.is_empty());
        // The first link's connection ends without an answer: the claim goes with it.
        drop(one);
        tokio::time::advance(RECHECK).await;
        let due = two.take_due();
        let Requests(r2) = two.after_check(due, &[false]);
        assert_eq!(r2.len(), 1);
    }

    #[test]
    fn requests_are_bounded() {
        let mut f = fetching();
        let due: Vec<(String, u64)> = (0..2500).map(|i| (format!("id-{i}"), 0)).collect();
        let Requests(reqs) = f.after_check(due, &[false; 2500]);
        let sizes: Vec<usize> = reqs.iter().map(|r| r.1.len()).collect();
        assert_eq!(sizes, vec![1000, 1000, 500]);
        assert_eq!(f.open_ids(), 2500);
    }
}
