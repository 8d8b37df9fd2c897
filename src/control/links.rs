//! Decision links for e-mail: an approver named under
//! `[[notify.smtp.approver]]` gets a mail of their own with an approve and
//! a deny link that act as them.
//!
//! A link is `<admin URL>/review-links/<token>`, the token the claim
//! (review, action, approver's name and mailbox, expiry, a nonce) and its
//! HMAC-SHA256 under a key drawn at start (reviews live in memory, so a
//! restart ends them and their links together). Opening a link (GET) only
//! shows the review and a button: mail scanners fetch links, and a fetch
//! must not decide. The button POSTs to the same URL; the nonce is then
//! spent, so the mail's two links work once between them. The approver's
//! roles are read from the configuration at that moment: removing an
//! approver revokes their links.

use super::admin::{AppState, MAX_REASON_BYTES};
use super::decide::{decide, refine, state_name, Action};
use crate::config::Approver;
use crate::policy::reviews::{Grant, Review, ReviewError, Status};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// The path links live under.
pub const PREFIX: &str = "/review-links/";
/// Longest token accepted (a claim is a few hundred bytes).
const MAX_TOKEN: usize = 2048;
/// Nonces remembered at once; past it, new links are refused until old
/// ones expire (fail closed: never forget a spent nonce early).
const MAX_SPENT: usize = 100_000;

/// What a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkAction {
    Approve,
    Deny,
}

/// What a token says, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// The review.
    pub r: String,
    pub a: LinkAction,
    /// The approver's name and mailbox, as configured when it was sent.
    pub n: String,
    pub m: String,
    /// Expiry, Unix seconds.
    pub x: u64,
    /// Shared by the mail's links: one of them works, once.
    pub k: String,
}

/// Why a link does nothing.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this link is not valid")]
    Invalid,
    #[error("this link has expired")]
    Expired,
    #[error("this link (or the other link of its mail) was used already")]
    Spent,
    #[error("this link's approver is no longer configured")]
    Revoked,
    #[error("too many links are in use; decide through the admin API")]
    Full,
}

/// The key and the spent nonces.
pub struct Links {
    key: [u8; 32],
    spent: Mutex<HashMap<String, u64>>,
}

impl Default for Links {
    fn default() -> Self {
        Links {
            key: rand::random(),
            spent: Mutex::default(),
        }
    }
}

impl Links {
    fn mac(&self, data: &[u8]) -> Vec<u8> {
        let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => return Vec::new(),
        };
        mac.update(b"gatehouse review link v1\0");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    /// The token for `claim`.
    pub fn token(&self, claim: &Claim) -> String {
        let body = serde_json::to_vec(claim).unwrap_or_default();
        format!("{}.{}", B64.encode(&body), B64.encode(self.mac(&body)))
    }

    /// The approve and deny tokens of one mail, sharing a fresh nonce.
    pub fn pair(&self, review: &str, approver: &Approver, expires: u64) -> (String, String) {
        let k = hex::encode(rand::random::<[u8; 16]>());
        let claim = |a| Claim {
            r: review.to_string(),
            a,
            n: approver.name.clone(),
            m: approver.email.clone().unwrap_or_default(),
            x: expires,
            k: k.clone(),
        };
        (
            self.token(&claim(LinkAction::Approve)),
            self.token(&claim(LinkAction::Deny)),
        )
    }

    /// The claim of a token signed here, unexpired and unspent.
    pub fn check(&self, token: &str, now: u64) -> Result<Claim, LinkError> {
        if token.len() > MAX_TOKEN {
            return Err(LinkError::Invalid);
        }
        let (body, sig) = token.split_once('.').ok_or(LinkError::Invalid)?;
        let body = B64.decode(body).map_err(|_| LinkError::Invalid)?;
        let sig = B64.decode(sig).map_err(|_| LinkError::Invalid)?;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.key).map_err(|_| LinkError::Invalid)?;
        mac.update(b"gatehouse review link v1\0");
        mac.update(&body);
        mac.verify_slice(&sig).map_err(|_| LinkError::Invalid)?;
        let claim: Claim = serde_json::from_slice(&body).map_err(|_| LinkError::Invalid)?;
        if claim.x <= now {
            return Err(LinkError::Expired);
        }
        if self
            .spent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&claim.k)
        {
            return Err(LinkError::Spent);
        }
        Ok(claim)
    }

    /// Spends a claim's nonce; `Spent` if another request did first.
    pub fn spend(&self, claim: &Claim, now: u64) -> Result<(), LinkError> {
        let mut g = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() >= MAX_SPENT {
            g.retain(|_, x| *x > now);
            if g.len() >= MAX_SPENT {
                return Err(LinkError::Full);
            }
        }
        if g.insert(claim.k.clone(), claim.x).is_some() {
            return Err(LinkError::Spent);
        }
        Ok(())
    }
}

/// The approver a claim names, as configured now.
fn approver_now(st: &AppState, claim: &Claim) -> Option<Approver> {
    let state = st.shared.state.load();
    let smtp = state.config.notify.smtp.as_ref()?;
    smtp.approvers
        .iter()
        .find(|a| a.name == claim.n && a.email.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(&claim.m)))
        .cloned()
}

// ---- pages -----------------------------------------------------------------

/// Text for HTML (element content and quoted attribute values).
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page: no script, no outside resources, not framed, not cached, and
/// the token in its URL never sent on as a referrer.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · gatehouse</title></head><body><main>\n<h1>{t}</h1>\n{body}\n</main></body></html>\n",
        t = esc(title)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        html,
    )
        .into_response()
}

fn link_error(e: LinkError) -> Response {
    let status = match e {
        LinkError::Invalid => StatusCode::NOT_FOUND,
        LinkError::Expired | LinkError::Spent => StatusCode::GONE,
        LinkError::Revoked => StatusCode::FORBIDDEN,
        LinkError::Full => StatusCode::SERVICE_UNAVAILABLE,
    };
    page(status, "Nothing to decide", &format!("<p>{}.</p>", esc(&e.to_string())))
}

fn describe(r: &Review) -> String {
    let q = &r.request;
    let mut out = format!(
        "<dl><dt>Review</dt><dd>{}</dd><dt>Identity</dt><dd>{}</dd><dt>Target</dt><dd>{}</dd>\
         <dt>Class</dt><dd>{}</dd><dt>Session</dt><dd>{}</dd><dt>Approvals</dt><dd>{} of {}</dd></dl>\n\
         <h2>Statement (secrets masked)</h2>\n<pre>{}</pre>\n",
        esc(&r.id),
        esc(&q.identity),
        esc(&q.target),
        esc(&q.class),
        q.session,
        r.approvals.len(),
        q.required,
        esc(&q.sql)
    );
    if !q.params.is_empty() {
        let ps: Vec<String> = q
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| format!("${} = {}", i + 1, esc(p)))
            .collect();
        out.push_str(&format!("<h2>Parameters</h2>\n<pre>{}</pre>\n", ps.join("\n")));
    }
    out
}

fn status_text(r: &Review) -> String {
    match &r.status {
        Status::Pending => format!("pending: {} of {} approvals", r.approvals.len(), r.request.required),
        Status::Approved => format!("approved by {}", r.decided_by.as_deref().unwrap_or("")),
        Status::Denied { reason } => format!("denied by {}: {reason}", r.decided_by.as_deref().unwrap_or("")),
        Status::Withdrawn { why } => format!("withdrawn: {why}"),
    }
}

/// `GET /review-links/{token}`: the review and one button; decides nothing.
pub async fn show(State(st): State<AppState>, Path(token): Path<String>) -> Response {
    let claim = match st.links.check(&token, crate::policy::reviews::now_unix()) {
        Ok(c) => c,
        Err(e) => return link_error(e),
    };
    let Some(approver) = approver_now(&st, &claim) else {
        return link_error(LinkError::Revoked);
    };
    let Some(r) = st.shared.reviews.get(&claim.r) else {
        return page(
            StatusCode::NOT_FOUND,
            "Nothing to decide",
            "<p>This review is gone.</p>",
        );
    };
    if r.status != Status::Pending {
        return page(
            StatusCode::OK,
            "Decided already",
            &format!("{}<p>This review is {}.</p>", describe(&r), esc(&status_text(&r))),
        );
    }
    // Say now what the button would be refused for, rather than after.
    if let Err(e) = st.shared.reviews.may_decide(&r.id, &approver.name, &approver.roles) {
        return page(
            StatusCode::FORBIDDEN,
            "You cannot decide this review",
            &format!("{}<p>{}.</p>", describe(&r), esc(&e.to_string())),
        );
    }
    let what = if r.request.required > 1 {
        format!(
            "Your approval is one of the {} this statement needs; it runs once they are all given.",
            r.request.required
        )
    } else {
        "The statement runs once, approved by you.".to_string()
    };
    let form = match claim.a {
        LinkAction::Approve => format!(
            "<form method=\"post\"><p>{}</p><button type=\"submit\">Approve as {}</button></form>",
            esc(&what),
            esc(&claim.n)
        ),
        LinkAction::Deny => format!(
            "<form method=\"post\"><p><label for=\"reason\">Reason (the client is told)</label><br>\
             <textarea id=\"reason\" name=\"reason\" rows=\"3\" cols=\"60\" maxlength=\"{MAX_REASON_BYTES}\"></textarea></p>\
             <button type=\"submit\">Deny as {}</button></form>",
            esc(&claim.n)
        ),
    };
    let title = match claim.a {
        LinkAction::Approve => "Approve this statement?",
        LinkAction::Deny => "Deny this statement?",
    };
    page(StatusCode::OK, title, &format!("{}{form}", describe(&r)))
}

/// `POST /review-links/{token}`: spends the link and decides as its
/// approver. Body: `reason=…` (form-encoded; for a denial).
pub async fn act(State(st): State<AppState>, Path(token): Path<String>, body: axum::body::Bytes) -> Response {
    let now = crate::policy::reviews::now_unix();
    let claim = match st.links.check(&token, now) {
        Ok(c) => c,
        Err(e) => return link_error(e),
    };
    let Some(approver) = approver_now(&st, &claim) else {
        return link_error(LinkError::Revoked);
    };
    let reason: String = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "reason")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    if reason.len() > MAX_REASON_BYTES {
        return page(
            StatusCode::BAD_REQUEST,
            "Nothing was decided",
            &format!("<p>A reason is at most {MAX_REASON_BYTES} bytes.</p>"),
        );
    }
    if let Err(e) = st.links.spend(&claim, now) {
        return link_error(e);
    }
    let action = match claim.a {
        LinkAction::Approve => Action::Approve(Grant::Once),
        LinkAction::Deny => Action::Deny(reason.clone()),
    };
    let verb = action.verb();
    match decide(&st, &approver.name, &approver.roles, &claim.r, action, "mail link", "").await {
        Ok(r) => page(
            StatusCode::OK,
            "Recorded",
            &format!(
                "<p>Your {} is recorded: the review is {}.</p>{}",
                if verb == "approve" { "approval" } else { "denial" },
                esc(&status_text(&r)),
                describe(&r)
            ),
        ),
        Err(e) => {
            let e = refine(&st, &claim.r, e);
            let status = match e {
                ReviewError::NotFound => StatusCode::NOT_FOUND,
                ReviewError::NotPending | ReviewError::Twice => StatusCode::CONFLICT,
                ReviewError::SelfApproval | ReviewError::WrongRole(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let now_state = st
                .shared
                .reviews
                .get(&claim.r)
                .map(|r| format!(" The review is {}.", state_name(&r.status)))
                .unwrap_or_default();
            page(
                status,
                "Nothing was decided",
                &format!("<p>{}.{}</p>", esc(&e.to_string()), esc(&now_state)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approver() -> Approver {
        Approver {
            name: "dba1".into(),
            roles: vec!["dba".into()],
            user_id: None,
            email: Some("dba1@example.com".into()),
        }
    }

    #[test]
    fn tokens_are_signed_expire_and_are_spent_once_per_mail() {
        let l = Links::default();
        let (approve, deny) = l.pair("r-1", &approver(), 1000);
        let c = l.check(&approve, 999).unwrap();
        assert_eq!((c.r.as_str(), c.a, c.n.as_str()), ("r-1", LinkAction::Approve, "dba1"));
        assert_eq!(l.check(&deny, 999).unwrap().a, LinkAction::Deny);
        assert_eq!(l.check(&approve, 1000), Err(LinkError::Expired));

        // Another key, a changed claim, a changed signature: invalid.
        assert_eq!(Links::default().check(&approve, 1), Err(LinkError::Invalid));
        let (body, sig) = approve.split_once('.').unwrap();
        let mut forged: Claim = serde_json::from_slice(&B64.decode(body).unwrap()).unwrap();
        forged.n = "admin".into();
        let forged = format!("{}.{sig}", B64.encode(serde_json::to_vec(&forged).unwrap()));
        assert_eq!(l.check(&forged, 1), Err(LinkError::Invalid));
        assert_eq!(
            l.check(&format!("{body}.{}", B64.encode([0u8; 32])), 1),
            Err(LinkError::Invalid)
        );
        assert_eq!(l.check("x", 1), Err(LinkError::Invalid));
        assert_eq!(l.check(&"a".repeat(5000), 1), Err(LinkError::Invalid));

        // Spending one link of a mail spends the other.
        l.spend(&c, 1).unwrap();
        assert_eq!(l.check(&approve, 1), Err(LinkError::Spent));
        assert_eq!(l.check(&deny, 1), Err(LinkError::Spent));
        assert_eq!(l.spend(&c, 1), Err(LinkError::Spent));
        // Another mail's links are their own.
        let (again, _) = l.pair("r-1", &approver(), 1000);
        assert!(l.check(&again, 1).is_ok());
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(esc("<script>\"'&"), "&lt;script&gt;&quot;&#39;&amp;");
    }
}
