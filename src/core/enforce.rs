//! Statement policy on the data path, for any protocol: what to do with a
//! statement the server is about to run (or, for a change, bind), holding
//! it for approval while the rest of the session waits behind it.
//!
//! The decision is taken on what the server will execute: the protocol's
//! session resolves prepared statements and portals through what the server
//! confirmed (for PostgreSQL `wire::pg::track`), never through what the
//! client's messages seemed to say. Before the policy's
//! verdict, three things are refused whatever the role:
//! - a statement that changes how text is read (`lexical_setting`);
//! - for a role whose upstream session is read-only, a statement that
//!   turns read-only off (`read_only_override`);
//! - a statement whose functions the target's catalog cannot be read for.
//!
//! Function calls and operators are resolved against the target's catalog
//! (`sql::catalog`), which may raise the class: a volatile user function
//! makes a `SELECT` a write.

use super::catalog::{self, Cached, CatalogKey};
use super::sqlstate::SqlState;
use crate::config::Verdict;
use crate::policy::reviews::{ReviewRequest, Reviews, Status, POLL};
use crate::policy::{Budget, Decision, Meter, Policy};
use crate::sql::{Catalog, Classification, Flags, StatementClass};
use futures_util::future::LocalBoxFuture;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Allowed statements remembered per session (the memo that spares a
/// prepared statement a decision on every Execute).
const MEMO: usize = 32;
/// Parameters shown to a reviewer, at most.
const MAX_PARAMS_SHOWN: usize = 100;

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
    /// A reviewer denied it, with a reason.
    Denied {
        review: String,
        reason: String,
    },
    /// The review was withdrawn (by an administrator).
    Withdrawn {
        review: String,
        why: String,
    },
    /// The review disappeared (a reload, a restart of the control plane).
    Gone {
        review: String,
    },
    /// The client cancelled it.
    Cancelled,
    /// The client left, or the session was ended.
    Disconnected,
    /// No decision in time.
    TimedOut {
        review: String,
    },
    /// It could not be held at all (too many open reviews).
    NotHeld {
        why: String,
    },
}

impl Outcome {
    /// What the client gets in place of the statement, unless approved.
    pub fn refusal(&self) -> Option<Refusal> {
        let policy = |code, message| Some(Refusal::Policy { code, message });
        match self {
            Outcome::Approved => None,
            Outcome::Denied { review, reason } => policy(
                SqlState::INSUFFICIENT_PRIVILEGE,
                format!("statement denied by reviewer (review {review}): {reason}"),
            ),
            Outcome::Withdrawn { review, why } => policy(
                SqlState::INSUFFICIENT_PRIVILEGE,
                format!("review {review} was withdrawn: {why}"),
            ),
            Outcome::Gone { review } => policy(SqlState::INSUFFICIENT_PRIVILEGE, format!("review {review} is gone")),
            Outcome::Cancelled => policy(
                SqlState::QUERY_CANCELED,
                "canceling statement due to user request; the review was withdrawn".into(),
            ),
            Outcome::Disconnected => policy(SqlState::CONNECTION_FAILURE, "the client disconnected".into()),
            Outcome::TimedOut { review } => policy(
                SqlState::INSUFFICIENT_PRIVILEGE,
                format!("approval timed out (review {review})"),
            ),
            Outcome::NotHeld { why } => policy(
                SqlState::CONFIGURATION_LIMIT_EXCEEDED,
                format!("cannot hold the statement for approval: {why}"),
            ),
        }
    }

    /// The outcome as recordings name it.
    pub fn recorded(&self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Denied { .. } | Outcome::Withdrawn { .. } | Outcome::Gone { .. } | Outcome::NotHeld { .. } => {
                "denied"
            }
            Outcome::Cancelled => "cancelled",
            Outcome::Disconnected => "disconnected",
            Outcome::TimedOut { .. } => "timed out",
        }
    }
}

/// Why a statement is refused: the policy's decision (with the SQLSTATE
/// and message the client gets), or a secret in it (the rule that found
/// it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Policy { code: SqlState, message: String },
    Secret { rule: String },
}

impl Refusal {
    pub fn policy(message: impl Into<String>) -> Refusal {
        Refusal::Policy {
            code: SqlState::INSUFFICIENT_PRIVILEGE,
            message: message.into(),
        }
    }

    /// The SQLSTATE the client gets.
    pub fn code(&self) -> SqlState {
        match self {
            Refusal::Policy { code, .. } => *code,
            Refusal::Secret { .. } => SqlState::INSUFFICIENT_PRIVILEGE,
        }
    }

    /// What the client (and the recording) is told.
    pub fn message(&self) -> String {
        match self {
            Refusal::Policy { message, .. } => message.clone(),
            Refusal::Secret { rule } => format!("the statement carries a secret ({rule})"),
        }
    }
}

/// Why a client message waits before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// Answers to earlier groups: until they arrive, the tracker cannot say
    /// what a name holds.
    EarlierGroups,
    /// Too many messages are unanswered.
    Backpressure,
    /// The target's catalog, to classify the statement's calls.
    Catalog,
}

/// What to do with a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Pass,
    Refuse(Refusal),
    /// Held for review. `read_write`: once approved it must run in a
    /// read-write context (a change, on a read-only session).
    Hold {
        read_write: bool,
    },
    Wait(WaitFor),
}

/// What the pinned settings and the target's catalog make of a statement.
struct Effective {
    class: StatementClass,
    flags: Flags,
    catalog: Option<Arc<Catalog>>,
    /// A FunctionCall's function as a reviewer reads it.
    function_shown: Option<String>,
}

/// A statement as the enforcer sees it.
pub struct Statement<'s> {
    pub class: &'s Arc<Classification>,
    pub sql: &'s str,
    /// The statement's parameters as text (unmasked), for a reviewer:
    /// decoded only when the statement is held.
    pub params: Option<&'s dyn Fn() -> Vec<String>>,
    /// A FunctionCall's OID and arguments.
    pub call: Option<(u32, Vec<String>)>,
}

struct Review {
    class: StatementClass,
    flags: Flags,
    sql: String,
    params: Vec<String>,
    approvers: Vec<String>,
    required: u32,
    timeout: Duration,
    /// Held by a budget: why.
    reason: Option<String>,
    grants: Vec<String>,
    read_write: bool,
}

enum Pending {
    Review(Review),
    /// Allowed by a grant, but a change on a read-only session: it needs
    /// the read-write context, as an approved one does.
    ReadWrite,
}

/// The statement a hold is for: its classification (the same `Arc` when
/// it comes round again), its text, and for a Bind or an Execute its
/// portal.
struct Held {
    class: Arc<Classification>,
    sql: String,
    portal: Option<Box<[u8]>>,
    /// It begins, ends or splits transactions: no read-write context may be
    /// opened for it (it would outlive the statement).
    transaction_control: bool,
}

impl Held {
    fn of(s: &Statement<'_>, portal: Option<&[u8]>) -> Held {
        let transaction_control = s.class.statements.iter().any(|st| {
            matches!(
                st.command.as_str(),
                "BEGIN"
                    | "START TRANSACTION"
                    | "COMMIT"
                    | "ROLLBACK"
                    | "SAVEPOINT"
                    | "RELEASE"
                    | "ROLLBACK TO SAVEPOINT"
                    | "PREPARE TRANSACTION"
                    | "COMMIT PREPARED"
                    | "ROLLBACK PREPARED"
            ) || st.command.starts_with("SET TRANSACTION")
                || st.command.starts_with("SET SESSION CHARACTERISTICS")
        });
        Held {
            class: s.class.clone(),
            sql: Held::text(s),
            portal: portal.map(Into::into),
            transaction_control,
        }
    }

    fn text(s: &Statement<'_>) -> String {
        match &s.call {
            Some((oid, _)) => format!("<FunctionCall of OID {oid}>"),
            None => s.sql.to_string(),
        }
    }

    fn is(&self, s: &Statement<'_>, portal: Option<&[u8]>) -> bool {
        Arc::ptr_eq(&self.class, s.class) && self.sql == Held::text(s) && self.portal.as_deref() == portal
    }
}

/// The identity's budget and its meter, shared with its other sessions.
pub struct BudgetGuard<'a> {
    pub limits: Budget,
    pub meter: Arc<Meter>,
    /// Seconds, advanced by the housekeeping thread.
    pub clock: &'a AtomicU64,
}

/// Reads a target's catalog (the protocol's own query), once per load.
pub type FetchCatalog<'a> = Box<dyn Fn() -> LocalBoxFuture<'a, Result<Arc<Catalog>, String>> + 'a>;

/// Where the enforcer reads the target's catalog.
pub struct CatalogAccess<'a> {
    pub key: CatalogKey,
    /// Bumped when a statement that may change functions ends.
    pub epoch: &'a AtomicU64,
    pub fetch: FetchCatalog<'a>,
}

/// The state of the upstream transaction, as the last answer before a
/// statement's group says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStatus {
    /// Outside a transaction block.
    Idle,
    /// Inside a transaction block.
    InBlock,
    /// Inside a failed transaction block.
    Failed,
}

/// Where a read-write context is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Approved; opens before the statement's group.
    Approved,
    /// Open: the statement is on its way.
    Open,
    /// Closed after the statement; the default goes back on after its
    /// group (outside a block).
    Closed,
}

/// A read-write context for an approved statement (each protocol's
/// session opens and closes it in its own terms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Where the upstream transaction was before the statement's group.
    pub status: TxStatus,
    pub stage: Stage,
}

impl Plan {
    pub fn new(status: TxStatus) -> Plan {
        Plan {
            status,
            stage: Stage::Approved,
        }
    }

    /// The session default was turned off for it: it must be set back.
    pub fn turned_default_off(&self) -> bool {
        self.status == TxStatus::Idle
    }
}

/// The session's side of a hold.
pub trait HoldIo {
    /// Tells the client the statement is held (a notice in its protocol).
    fn notice(&self, message: &str, hint: &str) -> impl Future<Output = ()>;
    /// The client asked to cancel (since the last look).
    fn take_cancel(&self) -> bool;
    /// The client left, or the session was ended.
    fn gone(&self) -> bool;
    /// Waits until every message sent before the held one is answered;
    /// the transaction status then.
    fn settled(&self) -> impl Future<Output = TxStatus>;
}

pub struct Enforcer<'a> {
    pub policy: Arc<Policy>,
    pub who: &'a Who,
    pub reviews: &'a Reviews,
    /// Masks the statement text and parameters put into a review.
    pub mask: Box<dyn Fn(&str) -> String + 'a>,
    /// The target's function catalog; `None` for a protocol whose
    /// classifier decides every call itself (MySQL: a function it does not
    /// know as built-in is `Unknown`).
    pub catalog: Option<CatalogAccess<'a>>,
    /// The fingerprint a review carries, in the protocol's grammar.
    pub fingerprint: fn(&str) -> String,
    /// The upstream session is read-only (see `read_write`).
    pub read_only: bool,
    /// Statements allowed outright, with the catalog they were allowed
    /// under (kept alive, so an address is never reused for another).
    allowed: Vec<(Arc<Classification>, Option<Arc<Catalog>>)>,
    /// What the catalog made of recent statements: (classification,
    /// catalog, class, flags), kept alive like `allowed`.
    resolved: Vec<(Arc<Classification>, Arc<Catalog>, StatementClass, Flags)>,
    /// The catalog this session read last: the snapshot, the epoch it is
    /// for, and when it expires (spares a look into the worker's cache).
    catalog_seen: Option<(Arc<Catalog>, u64, Instant)>,
    pending: Option<Pending>,
    /// The outcome of the last hold and the statement it is for: it applies
    /// to that statement when its batch comes round again, and to nothing
    /// else.
    decided: Option<(Held, Outcome)>,
    /// The statement being held (set with `pending`).
    held: Option<Held>,
    /// The read-write context of an approved statement.
    pub rw: Option<Plan>,
    /// The held statement is alone in its group, which the hold holds
    /// whole: a read-write context may be opened for it (set by the caller
    /// when it places the hold).
    pub rw_eligible: bool,
    pub admin_url: Option<String>,
    pub budget: Option<BudgetGuard<'a>>,
    /// The last hold's review: id, outcome, why, approvers (for the recorder).
    pub last_review: Option<(String, String, Option<String>, Vec<String>)>,
}

/// The classification of a statement gatehouse cannot name.
pub fn unknown() -> Arc<Classification> {
    thread_local! {
        static UNKNOWN: Arc<Classification> = Arc::new(Classification {
            class: StatementClass::Unknown,
            statements: Vec::new(),
            error: Some("not classified".into()),
        });
    }
    UNKNOWN.with(Arc::clone)
}

impl<'a> Enforcer<'a> {
    pub fn new(
        policy: Arc<Policy>,
        who: &'a Who,
        reviews: &'a Reviews,
        mask: Box<dyn Fn(&str) -> String + 'a>,
        catalog: Option<CatalogAccess<'a>>,
    ) -> Self {
        let read_only = policy.read_only(&who.roles);
        Enforcer {
            policy,
            who,
            reviews,
            mask,
            catalog,
            fingerprint: crate::sql::fingerprint,
            read_only,
            allowed: Vec::new(),
            resolved: Vec::new(),
            catalog_seen: None,
            pending: None,
            decided: None,
            held: None,
            rw: None,
            rw_eligible: false,
            admin_url: None,
            budget: None,
            last_review: None,
        }
    }

    /// Whether a statement is one the session allowed outright before (its
    /// Bind parameters are then not kept for a reviewer).
    pub fn known_allowed(&self, c: &Arc<Classification>) -> bool {
        self.budget.is_none() && self.allowed.iter().any(|(a, _)| Arc::ptr_eq(a, c))
    }

    /// The outcome of the last hold, when `s` (with `portal`, for a Bind or
    /// an Execute) is the statement it was for. Any other statement finds
    /// it gone: an outcome never passes to another statement.
    fn take_decided(&mut self, s: &Statement<'_>, portal: Option<&[u8]>) -> Option<Step> {
        let (held, outcome) = self.decided.take()?;
        if !held.is(s, portal) {
            tracing::warn!(target: "gatehouse::policy", session = self.who.session, "a held statement's outcome met another statement: discarded");
            self.rw = None;
            return None;
        }
        Some(match outcome.refusal() {
            None => Step::Pass,
            Some(refusal) => {
                self.rw = None;
                Step::Refuse(refusal)
            }
        })
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

    /// The catalog, if this worker has it for the current epoch.
    fn catalog_now(&mut self) -> Cached {
        let Some(access) = &self.catalog else {
            return Cached::Failed("no catalog for this protocol".into());
        };
        let epoch = access.epoch.load(Ordering::Acquire);
        if let Some((cat, e, expires)) = &self.catalog_seen {
            if *e == epoch && Instant::now() < *expires {
                return Cached::Ready(cat.clone(), *expires);
            }
        }
        let c = catalog::cached(&access.key, epoch);
        if let Cached::Ready(cat, expires) = &c {
            if !self
                .catalog_seen
                .as_ref()
                .is_some_and(|(seen, _, _)| Arc::ptr_eq(seen, cat))
            {
                // Another snapshot: what the old one resolved goes.
                self.resolved.clear();
            }
            self.catalog_seen = Some((cat.clone(), epoch, *expires));
        }
        c
    }

    /// Loads the catalog (a [`WaitFor::Catalog`]).
    pub async fn load_catalog(&self) {
        let Some(c) = &self.catalog else { return };
        let epoch = c.epoch.load(Ordering::Acquire);
        if let Err(e) = catalog::load(&c.key, epoch, (c.fetch)()).await {
            tracing::warn!(target: "gatehouse::policy", session = self.who.session, error = %e, "cannot read the target's catalog");
        }
    }

    /// The decision for a statement the server is about to run (a Query,
    /// an Execute of a portal not decided at its Bind, a FunctionCall).
    pub fn decide(&mut self, s: &Statement<'_>) -> Step {
        self.decide_for(s, None)
    }

    /// [`Self::decide`] for an Execute of `portal`.
    pub fn decide_execute(&mut self, s: &Statement<'_>, portal: &[u8]) -> Step {
        self.decide_for(s, Some(portal))
    }

    fn decide_for(&mut self, s: &Statement<'_>, portal: Option<&[u8]>) -> Step {
        if let Some(step) = self.take_decided(s, portal) {
            return step;
        }
        self.held = Some(Held::of(s, portal));
        match self.effective(s) {
            Ok(e) => self.verdict(s, e),
            Err(step) => step,
        }
    }

    /// At a Bind of `portal`: a statement that may change anything is
    /// decided here, so no portal on the server ever holds a change that
    /// was not allowed (SQL `FETCH`, `MOVE` and functions can run portals
    /// by name, without an Execute). `None`: a read, decided when it runs.
    pub fn at_bind(&mut self, s: &Statement<'_>, portal: &[u8]) -> Option<Step> {
        if let Some(step) = self.take_decided(s, Some(portal)) {
            return Some(step);
        }
        let e = match self.effective(s) {
            Ok(e) => e,
            Err(step) => return Some(step),
        };
        if e.class == StatementClass::Read {
            return None;
        }
        self.held = Some(Held::of(s, Some(portal)));
        Some(self.verdict(s, e))
    }

    /// What the pinned settings and the target's catalog say of a
    /// statement; `Err` refuses it or waits for the catalog.
    fn effective(&mut self, s: &Statement<'_>) -> Result<Effective, Step> {
        let c = s.class;
        let mut flags = c.flags();
        if flags.lexical_setting {
            return Err(Step::Refuse(Refusal::policy(
                "it would change how statements are read (gatehouse keeps the character set, quoting and escaping fixed: PostgreSQL's client_encoding, standard_conforming_strings and backslash_quote; MySQL's character set and sql_mode)",
            )));
        }
        if self.read_only && flags.read_only_override {
            return Err(Step::Refuse(Refusal::policy(
                "this role's sessions are read-only at the server and may not turn that off; held writes run read-write once approved",
            )));
        }
        let mut class = c.class;
        let mut catalog = None;
        let mut function_shown = None;
        if self.catalog.is_some() && (Catalog::needed(c) || s.call.is_some()) {
            let cat = match self.catalog_now() {
                Cached::Ready(cat, _) => cat,
                Cached::Missing => return Err(Step::Wait(WaitFor::Catalog)),
                Cached::Failed(why) => {
                    return Err(Step::Refuse(Refusal::policy(format!(
                        "gatehouse cannot read the target's catalog to check the functions this statement calls: {why}"
                    ))))
                }
            };
            let memo = self
                .resolved
                .iter()
                .find(|(k, kc, _, _)| Arc::ptr_eq(k, c) && Arc::ptr_eq(kc, &cat))
                .map(|(_, _, cl, f)| (*cl, *f));
            match memo {
                Some((cl, f)) => {
                    class = cl;
                    flags = f;
                }
                None => {
                    let known = crate::sql::Known {
                        read: &self.policy.read_functions,
                        write: &self.policy.write_functions,
                        opaque: if self.read_only {
                            StatementClass::Write
                        } else {
                            StatementClass::Unknown
                        },
                    };
                    let r = cat.resolve(c, &known);
                    let key = self.catalog.as_ref().map(|a| &a.key);
                    if !r.unresolved.is_empty() && key.is_some_and(catalog::expire_if_old) {
                        // Perhaps created since the snapshot: read it again first.
                        self.catalog_seen = None;
                        return Err(Step::Wait(WaitFor::Catalog));
                    }
                    if let Some(raised) = r.class {
                        class = class.max(raised);
                    }
                    flags.volatile_function |= !r.volatile.is_empty();
                    flags.unresolved_function |= !r.unresolved.is_empty();
                    if self.resolved.len() >= MEMO {
                        self.resolved.remove(0);
                    }
                    self.resolved.push((c.clone(), cat.clone(), class, flags));
                }
            }
            if let Some((oid, _)) = &s.call {
                function_shown = Some(match cat.function_by_oid(*oid) {
                    Some((name, _)) => name.to_string(),
                    None => format!("function with OID {oid} (not in the catalog)"),
                });
            }
            catalog = Some(cat);
        }
        Ok(Effective {
            class,
            flags,
            catalog,
            function_shown,
        })
    }

    /// The policy's verdict on a statement whose class and flags are known.
    fn verdict(&mut self, s: &Statement<'_>, e: Effective) -> Step {
        let c = s.class;
        let Effective {
            class,
            flags,
            catalog,
            function_shown,
        } = e;
        let same_catalog = |a: &Option<Arc<Catalog>>| match (a, &catalog) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let budget = self.over_budget();
        if budget.is_none() && self.allowed.iter().any(|(a, k)| Arc::ptr_eq(a, c) && same_catalog(k)) {
            return Step::Pass;
        }
        let decision = self.policy.decide_class(&self.who.roles, class, flags);
        let allowed = matches!(decision, Decision::Allow);
        let read_write = self.read_only && class > StatementClass::Read;
        // The class's own hold, unless an approval granted the class.
        let (class_hold, granted) = match decision {
            Decision::Allow => (None, false),
            Decision::Deny { message } => return Step::Refuse(Refusal::policy(message)),
            Decision::Approve {
                approvers,
                required,
                timeout,
                ..
            } => {
                if self
                    .reviews
                    .granted(&self.who.identity, &self.who.target, class.as_str())
                {
                    (None, true)
                } else {
                    (Some((approvers, required, timeout)), false)
                }
            }
        };
        let budget_hold = match (budget, &self.budget) {
            (Some(why), Some(b)) if b.limits.action == Verdict::Deny => {
                tracing::info!(target: "gatehouse::policy", session = self.who.session, identity = %self.who.identity, "statement denied: {why}");
                return Step::Refuse(Refusal::policy(format!(
                    "{why} (the identity's budget; ask for a higher one or wait)"
                )));
            }
            (Some(why), Some(b)) => Some((why, b.limits.clone())),
            _ => None,
        };
        let mut grants = Vec::with_capacity(2);
        let (approvers, required, timeout) = match (class_hold, &budget_hold) {
            (None, None) => {
                if granted && read_write {
                    self.pending = Some(Pending::ReadWrite);
                    return Step::Hold { read_write };
                }
                if allowed {
                    if self.allowed.len() >= MEMO {
                        self.allowed.remove(0);
                    }
                    self.allowed.push((c.clone(), catalog));
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
        let (sql, params) = match (&s.call, function_shown) {
            (Some((_, args)), Some(name)) => (
                format!("<FunctionCall of {name}>"),
                args.iter().map(|a| (self.mask)(a)).collect(),
            ),
            _ => (s.sql.to_string(), self.shown_params(s.params)),
        };
        self.pending = Some(Pending::Review(Review {
            class,
            flags,
            sql,
            params,
            approvers,
            required,
            timeout,
            reason: budget_hold.map(|(why, _)| why),
            grants,
            read_write,
        }));
        Step::Hold { read_write }
    }

    /// A statement's parameters as a reviewer reads them, masked.
    fn shown_params(&self, params: Option<&dyn Fn() -> Vec<String>>) -> Vec<String> {
        let Some(params) = params else { return Vec::new() };
        params().iter().take(MAX_PARAMS_SHOWN).map(|p| (self.mask)(p)).collect()
    }

    /// Waits for the held statement's review (or, for a grant, for the
    /// transaction status); the outcome applies when the statement comes
    /// round again.
    pub async fn hold(&mut self, io: &impl HoldIo) {
        let Some(pending) = self.pending.take() else { return };
        let Some(held) = self.held.take() else { return };
        let read_write = self.rw_eligible && !held.transaction_control;
        let (outcome, wants_rw) = match pending {
            Pending::ReadWrite => (Outcome::Approved, true),
            Pending::Review(p) => {
                let rw = p.read_write;
                (self.review(p, io, read_write).await, rw)
            }
        };
        if outcome == Outcome::Approved && wants_rw && read_write {
            // Everything before the group is answered: the transaction
            // status the context opens in is known.
            self.rw = Some(Plan::new(io.settled().await));
        }
        self.decided = Some((held, outcome));
    }

    async fn review(&mut self, p: Review, io: &impl HoldIo, read_write: bool) -> Outcome {
        let req = ReviewRequest {
            identity: self.who.identity.clone(),
            roles: self.who.roles.clone(),
            target: self.who.target.clone(),
            session: self.who.session,
            sql: (self.mask)(&p.sql),
            params: p.params.clone(),
            class: p.class.as_str().to_string(),
            flags: p.flags.names().iter().map(|s| s.to_string()).collect(),
            fingerprint: (self.fingerprint)(&p.sql),
            approvers: p.approvers.clone(),
            required: p.required,
            timeout_secs: p.timeout.as_secs(),
            reason: p.reason.clone(),
            grants: p.grants.clone(),
        };
        let id = match self
            .reviews
            .submit_bounded(req, self.policy.max_pending_reviews_per_identity)
        {
            Ok(id) => id,
            Err(e) => return Outcome::NotHeld { why: e.to_string() },
        };
        tracing::info!(target: "gatehouse::policy", session = self.who.session, review = %id, class = p.class.as_str(), "statement held for approval");
        let mut how = match &self.admin_url {
            Some(u) => format!("approve with `gatehouse review approve {id}` or POST {u}/api/v1/reviews/{id}/approve"),
            None => format!("approve with `gatehouse review approve {id}`"),
        };
        if p.read_write && !read_write {
            how.push_str(
                "; note: this session is read-only at the server and the statement is not alone in its group (or controls transactions), so it will fail with 25006 even once approved: send it on its own (a Query without BEGIN/COMMIT, or Parse/Bind/Execute/Sync)",
            );
        }
        let message = match &p.reason {
            None => format!(
                "statement held for approval: review {id} ({} statement); waiting up to {}s",
                p.class.as_str(),
                p.timeout.as_secs()
            ),
            Some(why) => format!(
                "statement held for approval: review {id} ({why}); waiting up to {}s",
                p.timeout.as_secs()
            ),
        };
        io.notice(&message, &how).await;
        io.take_cancel();
        let deadline = Instant::now() + p.timeout;
        let outcome = loop {
            match self.reviews.status(&id) {
                Some(Status::Approved) => break Outcome::Approved,
                Some(Status::Denied { reason }) => {
                    break Outcome::Denied {
                        review: id.clone(),
                        reason,
                    }
                }
                Some(Status::Withdrawn { why }) => {
                    break Outcome::Withdrawn {
                        review: id.clone(),
                        why,
                    }
                }
                Some(Status::Pending) => {}
                None => break Outcome::Gone { review: id.clone() },
            }
            if io.take_cancel() {
                self.reviews.withdraw(&id, "cancelled by the client");
                break Outcome::Cancelled;
            }
            if io.gone() {
                self.reviews.withdraw(&id, "the client disconnected");
                break Outcome::Disconnected;
            }
            if Instant::now() >= deadline {
                self.reviews.withdraw(&id, "timed out");
                break Outcome::TimedOut { review: id.clone() };
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
        let why = outcome.refusal().map(|r| r.message());
        self.last_review = Some((id.clone(), outcome.recorded().to_string(), why, by_unique));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Classifier;

    fn statement<'s>(c: &'s Arc<Classification>, sql: &'s str) -> Statement<'s> {
        Statement {
            class: c,
            sql,
            params: None,
            call: None,
        }
    }

    #[test]
    fn an_outcome_belongs_to_the_statement_it_was_for() {
        let cl = Classifier::new(&[]);
        let narrow = cl.classify("delete from t where id = abs(-1)");
        let wide = cl.classify("delete from t");
        let held = Held::of(&statement(&narrow, "delete from t where id = abs(-1)"), Some(b"p"));
        assert!(held.is(&statement(&narrow, "delete from t where id = abs(-1)"), Some(b"p")));
        assert!(
            !held.is(&statement(&wide, "delete from t"), Some(b"p")),
            "another statement"
        );
        assert!(
            !held.is(&statement(&narrow, "delete from t where id = abs(-1)"), Some(b"q")),
            "another portal"
        );
        assert!(
            !held.is(&statement(&narrow, "delete from t where id = abs(-1)"), None),
            "a Query, not the Bind"
        );
        // A classification equal in value but not the same one (another
        // text classified alike) is another statement too.
        let again = Arc::new((*narrow).clone());
        assert!(!held.is(&statement(&again, "delete from t where id = abs(-1)"), Some(b"p")));
    }

    #[test]
    fn transaction_control_is_seen() {
        let cl = Classifier::new(&[]);
        for (sql, control) in [
            ("insert into t values (1)", false),
            ("insert into t values (1); begin", true),
            ("commit; insert into t values (1)", true),
            ("savepoint s", true),
            ("set transaction isolation level serializable", true),
            ("update t set a = 1 where id = 2", false),
        ] {
            let c = cl.classify(sql);
            assert_eq!(
                Held::of(&statement(&c, sql), None).transaction_control,
                control,
                "{sql}"
            );
        }
    }
}
