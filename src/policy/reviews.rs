//! Reviews of held statements, and the time-boxed grants approvals give.
//!
//! A session that holds a statement submits a review and polls its slot;
//! approvers decide over the admin API. Everything here is short critical
//! sections under one mutex: reviews are human-rate events.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Reviews kept after they end, for the inbox's history.
pub const MAX_FINISHED: usize = 1000;
/// Reviews open at once, over the process; past it statements are refused.
pub const MAX_OPEN: usize = 10_000;

/// Unix seconds now (the time reviews, grants and links are reckoned in).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a session asks to have reviewed. `sql` is already masked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReviewRequest {
    pub identity: String,
    pub roles: Vec<String>,
    pub target: String,
    pub session: u32,
    /// The statement, whole (secrets masked). Notifiers may shorten it and
    /// then say so; the admin API always has it whole.
    pub sql: String,
    /// The Bind parameters of an extended-protocol statement, or the
    /// arguments of a FunctionCall, as text (secrets masked; binary values
    /// as hex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    pub class: String,
    pub flags: Vec<String>,
    pub fingerprint: String,
    pub approvers: Vec<String>,
    pub required: u32,
    pub timeout_secs: u64,
    /// Why it is held beyond its class's verdict (a budget past its limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What an approval for a time grants: the class, and/or `budget`
    /// (lifts the identity's budget on the target).
    pub grants: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Status {
    Pending,
    Approved,
    Denied { reason: String },
    Withdrawn { why: String },
}

impl Status {
    /// The name a status goes by in the API and the control database.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied { .. } => "denied",
            Status::Withdrawn { .. } => "withdrawn",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
    pub at: u64,
}

/// A review as the API shows it (and as a fleet's control database keeps it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Review {
    pub id: String,
    #[serde(flatten)]
    pub request: ReviewRequest,
    pub created: u64,
    pub status: Status,
    pub approvals: Vec<Approval>,
    pub decided_by: Option<String>,
    /// With an approval: the class granted to the identity until this time.
    pub grant_until: Option<u64>,
}

/// How an approval grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// This statement, this once.
    Once,
    /// The statement's class (or what else the review names in `grants`),
    /// to the identity on the target, for this many seconds.
    For(u64),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    #[error("no review has this id")]
    NotFound,
    #[error("the review is no longer pending")]
    NotPending,
    #[error("a requester cannot approve their own review")]
    SelfApproval,
    #[error("this review needs an approver with one of the roles: {0}")]
    WrongRole(String),
    #[error("this approver has approved already")]
    Twice,
    #[error("too many reviews are open")]
    TooMany,
    #[error("this identity has {0} statements waiting for review already (max_pending_reviews_per_identity)")]
    TooManyOfIdentity(usize),
    /// A fleet instance without its control database: no review could be
    /// seen or decided by the other instances, so none is opened.
    #[error("{0}")]
    Unavailable(String),
}

struct Entry {
    review: Review,
    /// Submission order (`created` has only a second's resolution).
    seq: u64,
}

#[derive(Default)]
struct Inner {
    open: HashMap<String, Entry>,
    finished: std::collections::VecDeque<Review>,
    /// (identity, target, class) → until (unix seconds).
    grants: HashMap<(String, String, String), u64>,
}

/// Called with a review when it opens (notifiers hook in here).
pub type OnOpen = Box<dyn Fn(&Review) + Send + Sync>;
/// Called with a review this instance withdrew (a fleet writes it through).
pub type OnWithdraw = Box<dyn Fn(&Review) + Send + Sync>;

#[derive(Default)]
pub struct Reviews {
    inner: Mutex<Inner>,
    next: AtomicU64,
    /// Bumped by every change (a review opened, approved, decided,
    /// withdrawn): watchers (the console's live inbox) compare it.
    changes: AtomicU64,
    on_open: Mutex<Vec<OnOpen>>,
    on_withdraw: Mutex<Vec<OnWithdraw>>,
    /// Why no review may open now (a fleet instance cut off from its
    /// control database); `None`: reviews open.
    refusing: Mutex<Option<String>>,
    /// Put in front of new ids (a fleet instance's name).
    id_prefix: std::sync::OnceLock<String>,
}

impl Reviews {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A number that changes whenever a review may have: compare two reads.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Adds a hook run (on the caller's thread; keep it to a channel send)
    /// for every review that opens.
    pub fn on_open(&self, f: OnOpen) {
        self.on_open.lock().unwrap_or_else(|p| p.into_inner()).push(f);
    }

    /// Adds a hook run (on the caller's thread) for every review this
    /// instance withdraws.
    pub fn on_withdraw(&self, f: OnWithdraw) {
        self.on_withdraw.lock().unwrap_or_else(|p| p.into_inner()).push(f);
    }

    /// Makes new ids start with `prefix` (set once).
    pub fn set_id_prefix(&self, prefix: &str) {
        let _ = self.id_prefix.set(prefix.to_string());
    }

    /// Refuses new reviews with `why` (or opens them again with `None`).
    pub fn set_refusing(&self, why: Option<String>) {
        *self.refusing.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Opens a review; returns its id.
    pub fn submit(&self, request: ReviewRequest) -> Result<String, ReviewError> {
        self.submit_bounded(request, usize::MAX)
    }

    /// Opens a review unless the identity has `per_identity` pending already.
    pub fn submit_bounded(&self, request: ReviewRequest, per_identity: usize) -> Result<String, ReviewError> {
        if let Some(why) = self.refusing.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(ReviewError::Unavailable(why));
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let id = match self.id_prefix.get() {
            Some(p) => format!("r-{p}-{:x}-{n}", rand::random::<u32>()),
            None => format!("r-{:x}-{n}", rand::random::<u32>()),
        };
        let review = Review {
            id: id.clone(),
            request,
            created: now_unix(),
            status: Status::Pending,
            approvals: Vec::new(),
            decided_by: None,
            grant_until: None,
        };
        {
            let mut g = self.lock();
            if g.open.len() >= MAX_OPEN {
                return Err(ReviewError::TooMany);
            }
            let mine = g
                .open
                .values()
                .filter(|e| e.review.request.identity == review.request.identity && e.review.status == Status::Pending)
                .count();
            if mine >= per_identity {
                return Err(ReviewError::TooManyOfIdentity(mine));
            }
            g.open.insert(
                id.clone(),
                Entry {
                    review: review.clone(),
                    seq: n,
                },
            );
        }
        self.changes.fetch_add(1, Ordering::Release);
        for f in self.on_open.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            f(&review);
        }
        Ok(id)
    }

    /// The review's status now (`None` if unknown).
    pub fn status(&self, id: &str) -> Option<Status> {
        let g = self.lock();
        if let Some(e) = g.open.get(id) {
            return Some(e.review.status.clone());
        }
        g.finished.iter().rev().find(|r| r.id == id).map(|r| r.status.clone())
    }

    fn finish(g: &mut Inner, id: &str, status: Status, by: Option<String>) -> Option<Review> {
        let mut e = g.open.remove(id)?;
        e.review.status = status;
        e.review.decided_by = by;
        if g.finished.len() >= MAX_FINISHED {
            g.finished.pop_front();
        }
        g.finished.push_back(e.review.clone());
        Some(e.review)
    }

    /// Ends a pending review without a decision (timeout, cancel, disconnect).
    pub fn withdraw(&self, id: &str, why: &str) {
        let ended = {
            let mut g = self.lock();
            if g.open.get(id).is_some_and(|e| e.review.status == Status::Pending) {
                Self::finish(&mut g, id, Status::Withdrawn { why: why.to_string() }, None)
            } else {
                None
            }
        };
        if let Some(review) = ended {
            self.changes.fetch_add(1, Ordering::Release);
            for f in self.on_withdraw.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                f(&review);
            }
        }
    }

    /// Takes a review's state as another place decided it (a fleet's
    /// control database): opens, updates or ends the local copy, and
    /// records the grant an approval gave. Hooks do not run: the instance
    /// that opened the review announced it.
    ///
    /// A review this instance already ended stays as it ended here: its
    /// session has answered the client (a timeout, say) and the statement
    /// did not run, whatever was decided a moment later elsewhere.
    pub fn mirror(&self, review: Review) {
        let mut g = self.lock();
        // Ended here already (its session gave up): a later approval
        // grants nothing here either, as on a lone instance.
        let ended_here = g
            .finished
            .iter()
            .any(|r| r.id == review.id && matches!(r.status, Status::Withdrawn { .. }));
        if review.status == Status::Approved && !ended_here {
            if let Some(until) = review.grant_until.filter(|u| *u > now_unix()) {
                for k in grant_keys(&review.request) {
                    let e = g.grants.entry(k).or_insert(until);
                    *e = (*e).max(until);
                }
            }
        }
        if review.status == Status::Pending {
            if let Some(e) = g.open.get_mut(&review.id) {
                e.review = review;
            } else if g.finished.iter().any(|r| r.id == review.id) {
                return;
            } else {
                if g.open.len() >= MAX_OPEN {
                    return;
                }
                let seq = self.next.fetch_add(1, Ordering::Relaxed) + 1;
                g.open.insert(review.id.clone(), Entry { review, seq });
            }
        } else if g.open.contains_key(&review.id) {
            g.open.remove(&review.id);
            if g.finished.len() >= MAX_FINISHED {
                g.finished.pop_front();
            }
            g.finished.push_back(review);
        } else if let Some(r) = g.finished.iter_mut().find(|r| r.id == review.id) {
            if matches!(r.status, Status::Withdrawn { .. }) {
                return;
            }
            *r = review;
        } else {
            if g.finished.len() >= MAX_FINISHED {
                g.finished.pop_front();
            }
            g.finished.push_back(review);
        }
        drop(g);
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// The ids of the reviews open here.
    pub fn open_ids(&self) -> Vec<String> {
        self.lock().open.keys().cloned().collect()
    }

    fn check_approver(e: &Entry, who: &str, roles: &[String]) -> Result<(), ReviewError> {
        check_approver(&e.review, who, roles)
    }

    /// Whether `who` with `roles` could decide review `id` now (for
    /// showing a button; the decision itself checks again).
    pub fn may_decide(&self, id: &str, who: &str, roles: &[String]) -> Result<(), ReviewError> {
        let g = self.lock();
        let e = g.open.get(id).ok_or(ReviewError::NotFound)?;
        Self::check_approver(e, who, roles)?;
        if e.review.approvals.iter().any(|a| same_name(&a.by, who)) {
            return Err(ReviewError::Twice);
        }
        Ok(())
    }

    /// Whether `who` with `roles` could deny review `id` now (an approver
    /// who approved may still deny).
    pub fn may_deny(&self, id: &str, who: &str, roles: &[String]) -> Result<(), ReviewError> {
        let g = self.lock();
        let e = g.open.get(id).ok_or(ReviewError::NotFound)?;
        Self::check_approver(e, who, roles)
    }

    /// Records an approval; the review is approved once it has enough.
    pub fn approve(&self, id: &str, who: &str, roles: &[String], grant: Grant) -> Result<Review, ReviewError> {
        let mut g = self.lock();
        let e = g.open.get_mut(id).ok_or(ReviewError::NotFound)?;
        let decided = record_approval(&mut e.review, who, roles, grant, now_unix())?;
        self.changes.fetch_add(1, Ordering::Release);
        if !decided {
            return Ok(e.review.clone());
        }
        if let Some(until) = e.review.grant_until {
            for k in grant_keys(&e.review.request) {
                g.grants.insert(k, until);
            }
        }
        Self::finish(&mut g, id, Status::Approved, Some(who.to_string())).ok_or(ReviewError::NotFound)
    }

    pub fn deny(&self, id: &str, who: &str, roles: &[String], reason: &str) -> Result<Review, ReviewError> {
        let mut g = self.lock();
        let e = g.open.get_mut(id).ok_or(ReviewError::NotFound)?;
        let mut review = e.review.clone();
        record_denial(&mut review, who, roles, reason)?;
        self.changes.fetch_add(1, Ordering::Release);
        Self::finish(&mut g, id, review.status, Some(who.to_string())).ok_or(ReviewError::NotFound)
    }

    /// Whether an approval granted `class` to `identity` on `target` for now.
    pub fn granted(&self, identity: &str, target: &str, class: &str) -> bool {
        let mut g = self.lock();
        if g.grants.is_empty() {
            return false;
        }
        let now = now_unix();
        g.grants.retain(|_, until| *until > now);
        g.grants
            .contains_key(&(identity.to_string(), target.to_string(), class.to_string()))
    }

    /// Open reviews first (oldest first), then the finished ones (newest first).
    pub fn list(&self) -> Vec<Review> {
        let g = self.lock();
        let mut open: Vec<&Entry> = g.open.values().collect();
        open.sort_by_key(|e| e.seq);
        let mut list: Vec<Review> = open.into_iter().map(|e| e.review.clone()).collect();
        list.extend(g.finished.iter().rev().cloned());
        list
    }

    pub fn get(&self, id: &str) -> Option<Review> {
        let g = self.lock();
        g.open
            .get(id)
            .map(|e| e.review.clone())
            .or_else(|| g.finished.iter().rev().find(|r| r.id == id).cloned())
    }

    pub fn pending(&self) -> usize {
        self.lock().open.len()
    }
}

/// How long a held session sleeps between looks at its review.
pub const POLL: Duration = Duration::from_millis(10);

/// Whether two names are one approver's (or the requester's): equal
/// without regard to case.
pub fn same_name(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

pub type SharedReviews = Arc<Reviews>;

/// Whether `who` with `roles` may decide `review`: it is pending, `who`
/// did not ask for it, and a role of theirs is one of its approvers'.
pub fn check_approver(review: &Review, who: &str, roles: &[String]) -> Result<(), ReviewError> {
    if review.status != Status::Pending {
        return Err(ReviewError::NotPending);
    }
    // Names are compared without case: `Agent` is not someone else.
    if same_name(who, &review.request.identity) {
        return Err(ReviewError::SelfApproval);
    }
    let allowed = &review.request.approvers;
    if !roles.iter().any(|r| r == "admin" || allowed.contains(r)) {
        return Err(ReviewError::WrongRole(allowed.join(", ")));
    }
    Ok(())
}

/// Adds `who`'s approval to `review`; returns whether that decided it
/// (N of M reached: the status is then `Approved`, `decided_by` and, for a
/// time grant, `grant_until` set). The one rule for every store.
pub fn record_approval(
    review: &mut Review,
    who: &str,
    roles: &[String],
    grant: Grant,
    now: u64,
) -> Result<bool, ReviewError> {
    check_approver(review, who, roles)?;
    if review.approvals.iter().any(|a| same_name(&a.by, who)) {
        return Err(ReviewError::Twice);
    }
    review.approvals.push(Approval {
        by: who.to_string(),
        at: now,
    });
    if (review.approvals.len() as u32) < review.request.required {
        return Ok(false);
    }
    if let Grant::For(secs) = grant {
        review.grant_until = Some(now + secs);
    }
    review.status = Status::Approved;
    review.decided_by = Some(who.to_string());
    Ok(true)
}

/// Denies `review` as `who` (an approver who approved may still deny).
pub fn record_denial(review: &mut Review, who: &str, roles: &[String], reason: &str) -> Result<(), ReviewError> {
    check_approver(review, who, roles)?;
    let reason = if reason.is_empty() {
        "no reason given".to_string()
    } else {
        reason.to_string()
    };
    review.status = Status::Denied { reason };
    review.decided_by = Some(who.to_string());
    Ok(())
}

/// What an approval with a time grant grants: (identity, target, class or
/// `budget`) keys.
pub fn grant_keys(r: &ReviewRequest) -> Vec<(String, String, String)> {
    if r.grants.is_empty() {
        vec![(r.identity.clone(), r.target.clone(), r.class.clone())]
    } else {
        r.grants
            .iter()
            .map(|k| (r.identity.clone(), r.target.clone(), k.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(required: u32) -> ReviewRequest {
        ReviewRequest {
            identity: "agent".into(),
            roles: vec!["agent".into()],
            target: "db".into(),
            session: 1,
            sql: "insert into t values (1)".into(),
            params: vec![],
            class: "write".into(),
            flags: vec![],
            fingerprint: "f".into(),
            approvers: vec!["dba".into()],
            required,
            timeout_secs: 60,
            reason: None,
            grants: vec!["write".into()],
        }
    }

    #[test]
    fn approve_deny_withdraw() {
        let r = Reviews::default();
        let dba = vec!["dba".to_string()];
        let id = r.submit(req(1)).unwrap();
        assert_eq!(
            r.approve(&id, "agent", &dba, Grant::Once).unwrap_err(),
            ReviewError::SelfApproval
        );
        assert_eq!(
            r.approve(&id, "Agent", &dba, Grant::Once).unwrap_err(),
            ReviewError::SelfApproval,
            "a name in another case is the same name"
        );
        assert_eq!(
            r.approve(&id, "bob", &["ops".to_string()], Grant::Once).unwrap_err(),
            ReviewError::WrongRole("dba".into())
        );
        assert_eq!(
            r.approve(&id, "bob", &dba, Grant::Once).unwrap().status,
            Status::Approved
        );
        assert_eq!(r.status(&id), Some(Status::Approved));
        assert_eq!(r.deny(&id, "bob", &dba, "x").unwrap_err(), ReviewError::NotFound);

        let id = r.submit(req(1)).unwrap();
        r.deny(&id, "bob", &dba, "not today").unwrap();
        assert_eq!(
            r.status(&id),
            Some(Status::Denied {
                reason: "not today".into()
            })
        );

        let id = r.submit(req(1)).unwrap();
        r.withdraw(&id, "client cancelled");
        assert!(matches!(r.status(&id), Some(Status::Withdrawn { .. })));
    }

    #[test]
    fn n_of_m_and_grants() {
        let r = Reviews::default();
        let dba = vec!["dba".to_string()];
        let id = r.submit(req(2)).unwrap();
        assert_eq!(
            r.approve(&id, "bob", &dba, Grant::For(300)).unwrap().status,
            Status::Pending
        );
        assert_eq!(
            r.approve(&id, "bob", &dba, Grant::For(300)).unwrap_err(),
            ReviewError::Twice
        );
        assert_eq!(
            r.approve(&id, "BOB", &dba, Grant::For(300)).unwrap_err(),
            ReviewError::Twice
        );
        assert!(!r.granted("agent", "db", "write"));
        assert_eq!(
            r.approve(&id, "carol", &dba, Grant::For(300)).unwrap().status,
            Status::Approved
        );
        assert!(r.granted("agent", "db", "write"));
        assert!(!r.granted("agent", "db", "delete"));
        assert!(!r.granted("agent", "other", "write"));
    }
}
