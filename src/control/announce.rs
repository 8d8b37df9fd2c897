//! The queue of reviews waiting to be announced: fair between identities
//! and rate-limited per identity, coalescing rather than dropping. An agent
//! that opens reviews in a loop gets at most `per_identity_per_minute`
//! announcements a minute; the reviews past it wait and go out together in
//! its next announcement (the latest in full, the others by id), and other
//! identities' announcements are served in turn, never behind its backlog.
//!
//! `push` is called on data-plane workers and only takes a short lock.

use crate::policy::reviews::Review;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window the rate is counted over.
const WINDOW: Duration = Duration::from_secs(60);
/// Identities with announcements waiting at once, at most (past it a
/// review is not announced; it stays in the admin API).
const MAX_IDENTITIES: usize = 10_000;
/// Earlier reviews named by id in one announcement; past it, counted.
const MAX_EARLIER_IDS: usize = 20;

/// Reviews announced with a later one of the same identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Earlier {
    /// Their ids, oldest first (at most [`MAX_EARLIER_IDS`]).
    pub ids: Vec<String>,
    /// How many more there were.
    pub more: u64,
}

impl Earlier {
    pub fn count(&self) -> u64 {
        self.ids.len() as u64 + self.more
    }

    fn add(&mut self, id: String) {
        if self.ids.len() < MAX_EARLIER_IDS {
            self.ids.push(id);
        } else {
            self.more += 1;
        }
    }
}

/// One message to send: a review, with the earlier ones it stands for.
#[derive(Debug, Clone)]
pub struct Announcement {
    pub review: Review,
    pub earlier: Earlier,
}

/// What the queue has for the sender now.
#[derive(Debug)]
pub enum Next {
    Ready(Box<Announcement>),
    /// Something waits, but no identity may announce before this long.
    Wait(Duration),
    Empty,
}

#[derive(Default)]
struct Slot {
    latest: Option<Review>,
    earlier: Earlier,
    /// When this identity's last announcements went out, within the window.
    sent: VecDeque<Instant>,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    /// Identities with something waiting, in turn.
    order: VecDeque<String>,
}

#[derive(Default)]
pub struct Queue {
    inner: Mutex<Inner>,
    /// Woken when a review arrives.
    pub wake: tokio::sync::Notify,
}

impl Queue {
    /// Adds a review; false when it cannot wait (too many identities).
    pub fn push(&self, r: Review) -> bool {
        {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let identity = r.request.identity.clone();
            if !g.slots.contains_key(&identity) && g.slots.len() >= MAX_IDENTITIES {
                return false;
            }
            let slot = g.slots.entry(identity.clone()).or_default();
            let queued = slot.latest.is_some();
            if let Some(prev) = slot.latest.replace(r) {
                slot.earlier.add(prev.id);
            }
            if !queued {
                g.order.push_back(identity);
            }
        }
        self.wake.notify_one();
        true
    }

    /// The next announcement an identity may send now, in turn; or how long
    /// until one may.
    pub fn next(&self, per_minute: usize, now: Instant) -> Next {
        let per_minute = per_minute.max(1);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait: Option<Duration> = None;
        for _ in 0..g.order.len() {
            let Some(identity) = g.order.pop_front() else { break };
            let Some(slot) = g.slots.get_mut(&identity) else {
                continue;
            };
            while slot.sent.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
                slot.sent.pop_front();
            }
            if slot.latest.is_none() {
                continue;
            }
            if slot.sent.len() < per_minute {
                slot.sent.push_back(now);
                let review = slot.latest.take().expect("checked");
                let earlier = std::mem::take(&mut slot.earlier);
                return Next::Ready(Box::new(Announcement { review, earlier }));
            }
            let until = WINDOW.saturating_sub(now.duration_since(slot.sent[0]));
            wait = Some(wait.map_or(until, |w| w.min(until)));
            g.order.push_back(identity);
        }
        // Identities with nothing waiting and nothing sent in the window
        // are forgotten.
        g.slots
            .retain(|_, s| s.latest.is_some() || s.sent.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        match wait {
            Some(w) => Next::Wait(w.max(Duration::from_millis(10))),
            None => Next::Empty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::reviews::{ReviewRequest, Status};

    fn review(identity: &str, n: u32) -> Review {
        Review {
            id: format!("r-{identity}-{n}"),
            request: ReviewRequest {
                identity: identity.into(),
                ..ReviewRequest::default()
            },
            created: 0,
            status: Status::Pending,
            approvals: Vec::new(),
            decided_by: None,
            grant_until: None,
        }
    }

    fn ready(n: Next) -> Announcement {
        match n {
            Next::Ready(a) => *a,
            other => panic!("expected an announcement, got {other:?}"),
        }
    }

    #[test]
    fn a_flood_is_coalesced_and_others_go_first() {
        let q = Queue::default();
        let t0 = Instant::now();
        for n in 0..50 {
            assert!(q.push(review("spammer", n)));
        }
        assert!(q.push(review("quiet", 0)));
        // The flood waited together: one announcement, the latest in full.
        let a = ready(q.next(2, t0));
        assert_eq!(a.review.id, "r-spammer-49");
        assert_eq!(a.earlier.count(), 49);
        assert_eq!(a.earlier.ids.len(), MAX_EARLIER_IDS);
        assert_eq!(a.earlier.ids[0], "r-spammer-0");
        // The other identity is not behind it.
        assert_eq!(ready(q.next(2, t0)).review.id, "r-quiet-0");
        assert!(matches!(q.next(2, t0), Next::Empty));
        // Under the rate: one message per review.
        q.push(review("spammer", 50));
        let a = ready(q.next(2, t0));
        assert_eq!((a.review.id.as_str(), a.earlier.count()), ("r-spammer-50", 0));
        // Over it: they wait, coalesced, until the window allows.
        for n in 51..60 {
            q.push(review("spammer", n));
        }
        match q.next(2, t0 + Duration::from_secs(1)) {
            Next::Wait(d) => assert!(d <= WINDOW && d >= Duration::from_secs(58), "{d:?}"),
            other => panic!("expected a wait, got {other:?}"),
        }
        let a = ready(q.next(2, t0 + WINDOW));
        assert_eq!((a.review.id.as_str(), a.earlier.count()), ("r-spammer-59", 8));
        // Nothing is lost: every review was announced, itself or by id/count.
    }
}
