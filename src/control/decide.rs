//! One decision on a review, whichever way it arrives (admin API, Slack
//! button, mail link): the same rules (`Reviews::approve` / `deny`: no
//! self-approval, the review's approver roles, N-of-M), the same log line
//! and the same audit record, which names the channel it came by.

use super::admin::{audit, AppState};
use crate::fleet::reviews::Decision;
use crate::policy::reviews::{Grant, Review, ReviewError, Status};

/// What the approver decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Approve; `Grant::For(secs)` also grants the class for a time.
    Approve(Grant),
    /// Deny, with the reason the client is told.
    Deny(String),
}

impl Action {
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Approve(_) => "approve",
            Action::Deny(_) => "deny",
        }
    }
    fn grant_secs(&self) -> u64 {
        match self {
            Action::Approve(Grant::For(s)) => *s,
            _ => 0,
        }
    }
}

/// The name a status goes by in the API.
pub fn state_name(s: &Status) -> &'static str {
    s.name()
}

/// A decided review has left the open set: say so rather than "not found".
pub fn refine(st: &AppState, id: &str, e: ReviewError) -> ReviewError {
    match e {
        ReviewError::NotFound if st.shared.reviews.get(id).is_some() => ReviewError::NotPending,
        e => e,
    }
}

/// Applies `action` to review `id` as `who` with `roles`; logs and audits
/// it either way. `via` names the channel (`api`, `slack user U…`,
/// `mail link`) in the audit record. `note` is a reason given with an
/// approval (recorded, not sent to the client).
pub async fn decide(
    st: &AppState,
    who: &str,
    roles: &[String],
    id: &str,
    action: Action,
    via: &str,
    note: &str,
) -> Result<Review, ReviewError> {
    // On a task of its own: a client that hangs up while a fleet's
    // transaction commits must not take the log line and the audit
    // record of a decision that stands with it.
    let (st, who, roles, id, via, note) = (
        st.clone(),
        who.to_string(),
        roles.to_vec(),
        id.to_string(),
        via.to_string(),
        note.to_string(),
    );
    tokio::spawn(async move { decide_here(&st, &who, &roles, &id, action, &via, &note).await })
        .await
        .unwrap_or_else(|_| Err(ReviewError::Unavailable("the decision failed".into())))
}

async fn decide_here(
    st: &AppState,
    who: &str,
    roles: &[String],
    id: &str,
    action: Action,
    via: &str,
    note: &str,
) -> Result<Review, ReviewError> {
    let verb = action.verb();
    let grant_secs = action.grant_secs();
    let reason = match &action {
        Action::Deny(r) => r.clone(),
        Action::Approve(_) => note.to_string(),
    };
    let res = match (&st.fleet, action) {
        (Some(fleet), Action::Approve(grant)) => fleet.decide(id, who, roles, Decision::Approve(grant)).await,
        (Some(fleet), Action::Deny(reason)) => fleet.decide(id, who, roles, Decision::Deny(&reason)).await,
        (None, Action::Approve(grant)) => st.shared.reviews.approve(id, who, roles, grant),
        (None, Action::Deny(reason)) => st.shared.reviews.deny(id, who, roles, &reason),
    };
    let via_note = if via == "api" {
        String::new()
    } else {
        format!(", via {via}")
    };
    match res {
        Ok(r) => {
            tracing::info!(
                target: "gatehouse::admin",
                review = %r.id,
                by = %who,
                via,
                identity = %r.request.identity,
                target = %r.request.target,
                class = %r.request.class,
                approvals = r.approvals.len(),
                required = r.request.required,
                grant_secs,
                state = state_name(&r.status),
                reason = ?reason,
                "review {} recorded",
                if verb == "approve" { "approval" } else { "denial" }
            );
            let outcome = format!(
                "{}{}{}{via_note}",
                state_name(&r.status),
                if grant_secs > 0 {
                    format!(", grant {grant_secs}s")
                } else {
                    String::new()
                },
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(", reason: {reason}")
                }
            );
            audit(st, who, roles, verb, &format!("review {id}"), &outcome).await;
            Ok(r)
        }
        Err(e) => {
            let e = refine(st, id, e);
            tracing::info!(target: "gatehouse::admin", review = ?id, by = %who, via, refused = %e, "review {verb} refused");
            audit(
                st,
                who,
                roles,
                verb,
                &format!("review {id}"),
                &format!("refused: {e}{via_note}"),
            )
            .await;
            Err(e)
        }
    }
}
