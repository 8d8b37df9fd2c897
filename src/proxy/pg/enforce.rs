//! Statement policy on the data path: classify at Parse (and Query), enforce
//! at Execute (and Query); deny in order with the pipeline; hold a statement
//! for approval while the rest of the session waits behind it.

use super::relay::Writer;
use crate::config::Verdict;
use crate::control::reviews::{ReviewRequest, Reviews, Status, POLL};
use crate::policy::{Budget, Decision, Meter, Policy};
use crate::sql::{Classification, Classifier, StatementClass};
use crate::wire::pg::{self, Cursor, HEADER_LEN};
use futures_util::lock::Mutex;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Named statements and portals tracked per session, at most.
const MAX_TRACKED: usize = 10_000;

thread_local! {
    /// This worker's classifier, for the policy generation it was built for.
    static CLASSIFIER: RefCell<Option<(usize, Classifier)>> = const { RefCell::new(None) };
}

fn classify(policy: &Arc<Policy>, sql: &str) -> Arc<Classification> {
    let key = Arc::as_ptr(policy) as usize;
    CLASSIFIER.with(|c| {
        let mut c = c.borrow_mut();
        if !matches!(&*c, Some((k, _)) if *k == key) {
            *c = Some((key, Classifier::new(&policy.side_effect_functions)));
        }
        match &*c {
            Some((_, cl)) => cl.classify(sql),
            None => Arc::new(Classifier::new(&[]).classify_uncached(sql)),
        }
    })
}

/// Who runs the session, for reviews and grants.
pub struct Who {
    pub identity: String,
    pub roles: Vec<String>,
    pub target: String,
    pub session: u32,
}

/// How a held statement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    Refused { code: &'static str, message: String },
}

/// What to do with a frame.
pub enum Step {
    Pass,
    Refuse { code: &'static str, message: String },
    Hold,
}

struct Pending {
    class: StatementClass,
    classification: Arc<Classification>,
    sql: String,
    approvers: Vec<String>,
    required: u32,
    timeout: Duration,
    /// Held by a budget: why.
    reason: Option<String>,
    grants: Vec<String>,
}

/// The identity's budget and its meter, shared with its other sessions.
pub struct BudgetGuard<'a> {
    pub limits: Budget,
    pub meter: Arc<Meter>,
    /// Seconds, advanced by the housekeeping thread.
    pub clock: &'a AtomicU64,
}

pub struct Enforcer<'a> {
    pub policy: Arc<Policy>,
    pub who: &'a Who,
    pub reviews: &'a Reviews,
    /// Masks the statement text put into a review.
    pub mask: Box<dyn Fn(&str) -> String + 'a>,
    statements: HashMap<Vec<u8>, Tracked>,
    portals: HashMap<Vec<u8>, Tracked>,
    /// The last classification allowed outright (prepared statements run
    /// the same one again and again).
    last_allowed: Option<Arc<Classification>>,
    pending: Option<Pending>,
    decided: Option<Outcome>,
    pub admin_url: Option<String>,
    pub budget: Option<BudgetGuard<'a>>,
    /// The last hold's review: id, outcome, why, approvers (for the recorder).
    pub last_review: Option<(String, String, Option<String>, Vec<String>)>,
}

/// A statement's classification and text, shared by its portals.
type Tracked = Arc<(Arc<Classification>, String)>;

/// Inserts without allocating a key when it is there already (the unnamed
/// statement and portal are replaced all the time).
fn put(map: &mut HashMap<Vec<u8>, Tracked>, key: &[u8], value: Tracked) {
    if let Some(v) = map.get_mut(key) {
        *v = value;
        return;
    }
    if map.len() >= MAX_TRACKED {
        map.clear();
    }
    map.insert(key.to_vec(), value);
}

fn cstr_at(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut c = Cursor::new(body, "message");
    let s = c.cstr().ok()?;
    Some((s, c.remaining()))
}

impl<'a> Enforcer<'a> {
    pub fn new(
        policy: Arc<Policy>,
        who: &'a Who,
        reviews: &'a Reviews,
        mask: Box<dyn Fn(&str) -> String + 'a>,
    ) -> Self {
        Enforcer {
            policy,
            who,
            reviews,
            mask,
            statements: HashMap::new(),
            portals: HashMap::new(),
            pending: None,
            decided: None,
            last_allowed: None,
            admin_url: None,
            budget: None,
            last_review: None,
        }
    }

    /// Counts the statement against the identity's budget; the reason when
    /// it is past the budget (and no approval lifted it).
    fn over_budget(&self) -> Option<String> {
        let b = self.budget.as_ref()?;
        let now = b.clock.load(Ordering::Relaxed);
        let why = b.limits.exceeded(&b.meter, now);
        b.meter.add_statement(now);
        let why = why?;
        if self.reviews.granted(&self.who.identity, &self.who.target, "budget") {
            return None;
        }
        Some(why)
    }

    fn decide(&mut self, c: Arc<Classification>, sql: &str) -> Step {
        let budget = self.over_budget();
        if budget.is_none() && self.last_allowed.as_ref().is_some_and(|l| Arc::ptr_eq(l, &c)) {
            return Step::Pass;
        }
        let decision = self.policy.decide(&self.who.roles, &c);
        let class = c.class;
        let allowed = matches!(decision, Decision::Allow);
        // The class's own hold, unless an approval granted the class.
        let class_hold = match decision {
            Decision::Allow => None,
            Decision::Deny { message } => return Step::Refuse { code: "42501", message },
            Decision::Approve {
                approvers,
                required,
                timeout,
                ..
            } => (!self
                .reviews
                .granted(&self.who.identity, &self.who.target, class.as_str()))
            .then_some((approvers, required, timeout)),
        };
        let budget_hold = match (budget, &self.budget) {
            (Some(why), Some(b)) if b.limits.action == Verdict::Deny => {
                tracing::info!(target: "gatehouse::policy", session = self.who.session, identity = %self.who.identity, "statement denied: {why}");
                return Step::Refuse {
                    code: "42501",
                    message: format!("{why} (the identity's budget; ask for a higher one or wait)"),
                };
            }
            (Some(why), Some(b)) => Some((why, b.limits.clone())),
            _ => None,
        };
        let mut grants = Vec::with_capacity(2);
        let (approvers, required, timeout) = match (class_hold, &budget_hold) {
            (None, None) => {
                if allowed {
                    self.last_allowed = Some(c);
                }
                return Step::Pass;
            }
            (Some(h), None) => {
                grants.push(class.as_str().to_string());
                h
            }
            (None, Some((_, b))) => {
                grants.push("budget".to_string());
                (b.approvers.clone(), b.approvals_required, b.approval_timeout)
            }
            (Some((mut a, r, t)), Some((_, b))) => {
                grants.push(class.as_str().to_string());
                grants.push("budget".to_string());
                for x in &b.approvers {
                    if !a.contains(x) {
                        a.push(x.clone());
                    }
                }
                (a, r.max(b.approvals_required), t.max(b.approval_timeout))
            }
        };
        self.pending = Some(Pending {
            class,
            classification: c,
            sql: sql.to_string(),
            approvers,
            required,
            timeout,
            reason: budget_hold.map(|(why, _)| why),
            grants,
        });
        Step::Hold
    }

    /// One frame of a batch, in order. `first` is true for the batch's
    /// first frame (where a statement held before resumes).
    pub fn step(&mut self, first: bool, tag: u8, frame: &[u8]) -> Step {
        let body = frame.get(HEADER_LEN..).unwrap_or(&[]);
        if first && matches!(tag, b'Q' | b'E' | b'F') {
            match self.decided.take() {
                Some(Outcome::Approved) => return Step::Pass,
                Some(Outcome::Refused { code, message }) => return Step::Refuse { code, message },
                None => {}
            }
        }
        match tag {
            b'Q' => {
                let sql = body.split(|&b| b == 0).next().unwrap_or(&[]);
                let sql = String::from_utf8_lossy(sql);
                let c = classify(&self.policy, &sql);
                self.decide(c, &sql)
            }
            b'P' => {
                if let Some((name, rest)) = cstr_at(body) {
                    let sql = rest.split(|&b| b == 0).next().unwrap_or(&[]);
                    let sql = String::from_utf8_lossy(sql).into_owned();
                    let c = classify(&self.policy, &sql);
                    put(&mut self.statements, name, Arc::new((c, sql)));
                }
                Step::Pass
            }
            b'B' => {
                if let Some((portal, rest)) = cstr_at(body) {
                    let stmt = cstr_at(rest).map(|(s, _)| s).unwrap_or(&[]);
                    // An unknown statement (prepared before tracking, or
                    // too many) is the strictest class at Execute.
                    match self.statements.get(stmt).cloned() {
                        Some(e) => put(&mut self.portals, portal, e),
                        None => {
                            self.portals.remove(portal);
                        }
                    }
                }
                Step::Pass
            }
            b'C' => {
                if let Some((&kind, rest)) = body.split_first() {
                    let name = rest.split(|&b| b == 0).next().unwrap_or(&[]);
                    match kind {
                        b'S' => self.statements.remove(name),
                        b'P' => self.portals.remove(name),
                        _ => None,
                    };
                }
                Step::Pass
            }
            b'E' => {
                let portal = body.split(|&b| b == 0).next().unwrap_or(&[]);
                match self.portals.get(portal).cloned() {
                    Some(t) => self.decide(t.0.clone(), &t.1),
                    None => self.decide(unknown(), "<a portal gatehouse did not see bound>"),
                }
            }
            // A function call by OID: nothing to classify.
            b'F' => self.decide(unknown(), "<function call>"),
            _ => Step::Pass,
        }
    }

    /// Waits for the held statement's review; the outcome applies when the
    /// statement's frame comes round again.
    #[allow(clippy::too_many_arguments)]
    pub async fn hold(
        &mut self,
        client: &Mutex<Writer>,
        client_mid: &Cell<bool>,
        client_fd: RawFd,
        handle: &super::registry::SessionHandle,
    ) {
        let Some(p) = self.pending.take() else { return };
        let req = ReviewRequest {
            identity: self.who.identity.clone(),
            roles: self.who.roles.clone(),
            target: self.who.target.clone(),
            session: self.who.session,
            sql: (self.mask)(&p.sql),
            class: p.class.as_str().to_string(),
            flags: p.classification.flags().names().iter().map(|s| s.to_string()).collect(),
            fingerprint: crate::sql::fingerprint(&p.sql),
            approvers: p.approvers.clone(),
            required: p.required,
            timeout_secs: p.timeout.as_secs(),
            reason: p.reason.clone(),
            grants: p.grants.clone(),
        };
        let id = match self.reviews.submit(req) {
            Ok(id) => id,
            Err(e) => {
                self.decided = Some(Outcome::Refused {
                    code: "53400",
                    message: format!("cannot hold the statement for approval: {e}"),
                });
                return;
            }
        };
        tracing::info!(target: "gatehouse::policy", session = self.who.session, review = %id, class = p.class.as_str(), "statement held for approval");
        let how = match &self.admin_url {
            Some(u) => format!("approve with `gatehouse review approve {id}` or POST {u}/api/v1/reviews/{id}/approve"),
            None => format!("approve with `gatehouse review approve {id}`"),
        };
        let mut notice = Vec::with_capacity(256);
        pg::error_message(
            &mut notice,
            true,
            "NOTICE",
            "01000",
            &match &p.reason {
                None => format!(
                    "statement held for approval: review {id} ({} statement); waiting up to {}s",
                    p.class.as_str(),
                    p.timeout.as_secs()
                ),
                Some(why) => format!(
                    "statement held for approval: review {id} ({why}); waiting up to {}s",
                    p.timeout.as_secs()
                ),
            },
            None,
            Some(&how),
        );
        {
            let mut w = client.lock().await;
            if !client_mid.get() {
                let (_, _) = monoio::io::AsyncWriteRentExt::write_all(&mut *w, notice).await;
                let _ = monoio::io::AsyncWriteRent::flush(&mut *w).await;
            }
        }
        handle.take_cancel();
        let deadline = Instant::now() + p.timeout;
        let outcome = loop {
            match self.reviews.status(&id) {
                Some(Status::Approved) => break Outcome::Approved,
                Some(Status::Denied { reason }) => {
                    break Outcome::Refused {
                        code: "42501",
                        message: format!("statement denied by reviewer (review {id}): {reason}"),
                    }
                }
                Some(Status::Withdrawn { why }) => {
                    break Outcome::Refused {
                        code: "42501",
                        message: format!("review {id} was withdrawn: {why}"),
                    }
                }
                Some(Status::Pending) => {}
                None => {
                    break Outcome::Refused {
                        code: "42501",
                        message: format!("review {id} is gone"),
                    }
                }
            }
            if handle.take_cancel() {
                self.reviews.withdraw(&id, "cancelled by the client");
                break Outcome::Refused {
                    code: "57014",
                    message: "canceling statement due to user request; the review was withdrawn".into(),
                };
            }
            if handle.killed().is_some() || client_gone(client_fd) {
                self.reviews.withdraw(&id, "the client disconnected");
                break Outcome::Refused {
                    code: "08006",
                    message: "the client disconnected".into(),
                };
            }
            if Instant::now() >= deadline {
                self.reviews.withdraw(&id, "timed out");
                break Outcome::Refused {
                    code: "42501",
                    message: format!("approval timed out (review {id})"),
                };
            }
            monoio::time::sleep(POLL).await;
        };
        tracing::info!(target: "gatehouse::policy", session = self.who.session, review = %id, outcome = ?outcome, "hold ended");
        let by: Vec<String> = self
            .reviews
            .get(&id)
            .map(|r| {
                r.approvals
                    .iter()
                    .map(|a| a.by.clone())
                    .chain(r.decided_by.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut by_unique: Vec<String> = Vec::with_capacity(by.len());
        for b in by {
            if !by_unique.contains(&b) {
                by_unique.push(b);
            }
        }
        let (what, why) = match &outcome {
            Outcome::Approved => ("approved".to_string(), None),
            Outcome::Refused { code, message } => (
                match *code {
                    "57014" => "cancelled",
                    "08006" => "disconnected",
                    _ if message.starts_with("approval timed out") => "timed out",
                    _ => "denied",
                }
                .to_string(),
                Some(message.clone()),
            ),
        };
        self.last_review = Some((id.clone(), what, why, by_unique));
        self.decided = Some(outcome);
    }
}

fn unknown() -> Arc<Classification> {
    Arc::new(Classification {
        class: StatementClass::Unknown,
        statements: Vec::new(),
        error: Some("not classified".into()),
    })
}

/// Whether the client closed its end (a peek sees EOF).
fn client_gone(fd: RawFd) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: a one-byte peek into a local buffer on the session's own socket.
    let n = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n == 0
}

/// A statement that makes the server raise `code`/`message`, in order with
/// the rest of the pipeline. The message starts with gatehouse's refusal
/// prefix so the backend side can recognise it.
pub fn raise_sql(code: &str, message: &str) -> String {
    let clean = |s: &str| s.replace('\'', "''").replace('$', "");
    format!(
        "DO $gatehouse$BEGIN RAISE EXCEPTION USING ERRCODE = '{}', MESSAGE = 'statement refused by gatehouse: {}'; END$gatehouse$",
        clean(code),
        clean(message)
    )
}
