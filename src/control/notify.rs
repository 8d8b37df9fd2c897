//! Notifiers: each new review is announced to the people who can approve
//! it — Slack incoming webhooks, signed JSON webhooks, e-mail over SMTP.
//!
//! `Reviews::on_open` runs on the thread that submits (a data-plane
//! worker), so the hook only puts the review in the announcement queue
//! (`announce`): fair between identities, at most
//! `[notify] per_identity_per_minute` announcements per identity, the
//! reviews past it coalesced into that identity's next announcement rather
//! than dropped. A task on the control runtime delivers, each destination
//! on its own task with bounded retries and timeouts, at most
//! [`MAX_INFLIGHT`] at once.
//!
//! Logs name a webhook by its kind and index, never by URL: a Slack
//! webhook URL is a credential. Statement text appears in messages only as
//! the session submitted it (already masked) and never in a log line.

use super::announce::{Announcement, Earlier, Next, Queue};
use crate::config::{Config, Notify, Smtp, Webhook, WebhookKind};
use crate::policy::reviews::{OnOpen, Review, Reviews};
use hmac::{Hmac, Mac};
use serde_json::json;
use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};

/// Tries per destination (the first included).
pub const ATTEMPTS: u32 = 3;
/// Wait before the second try; doubled for each further one.
pub const BACKOFF: Duration = Duration::from_millis(500);
/// Connect timeout of a webhook request.
pub const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request timeout of a webhook request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-session timeout of one SMTP delivery.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Deliveries in flight at once.
pub const MAX_INFLIGHT: usize = 16;
/// Statement characters put in a message.
pub const MAX_SQL_CHARS: usize = 2000;
/// Longest SMTP reply line read, and most lines in one reply.
const MAX_REPLY_LINE: u64 = 4096;
const MAX_REPLY_LINES: usize = 100;
/// Longest line put in a mail body (RFC 5322 allows 998 octets).
const MAIL_LINE: usize = 900;
/// Response bytes read (and dropped) from a webhook.
const MAX_RESPONSE: u64 = 64 * 1024;

const EVENT: &str = "review.opened";

/// What the notifier sends where. Read anew for every review, so a reload
/// applies to the next one.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The admin API's base URL as put in messages, without a trailing `/`.
    pub admin_url: String,
    pub notify: Notify,
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        let admin_url = match (&c.notify.admin_url, &c.admin.listen) {
            (Some(u), _) => u.trim_end_matches('/').to_string(),
            (None, Some(l)) => format!("{}://{l}", if c.admin.tls.is_some() { "https" } else { "http" }),
            (None, None) => "http://127.0.0.1:9090".to_string(),
        };
        Settings {
            admin_url,
            notify: c.notify.clone(),
        }
    }
}

/// Reads the settings now.
pub type SettingsFn = Arc<dyn Fn() -> Settings + Send + Sync>;

/// What the notifier did, since start.
#[derive(Debug, Default)]
pub struct Stats {
    /// Reviews put in the queue.
    pub queued: AtomicU64,
    /// Reviews announced within a later one of the same identity (over its
    /// rate, or waiting together).
    pub coalesced: AtomicU64,
    /// Reviews not announced: too many identities waiting at once.
    pub dropped: AtomicU64,
    /// Messages delivered (one per destination).
    pub delivered: AtomicU64,
    /// Messages given up after their tries.
    pub failed: AtomicU64,
}

/// The `on_open` hook: the review into the announcement queue (never
/// waits).
pub fn hook(queue: Arc<Queue>, stats: Arc<Stats>) -> OnOpen {
    Box::new(move |r: &Review| {
        if queue.push(r.clone()) {
            stats.queued.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                target: "gatehouse::notify",
                review = %r.id,
                "too many identities waiting for announcements: this review is not announced (it is in the admin API)"
            );
        }
    })
}

/// Hooks the notifier into `reviews` and starts its task on `handle`.
/// `links` signs the decision links of approvers' mails (the admin API
/// checks them with the same key).
pub fn start(
    handle: &tokio::runtime::Handle,
    reviews: &Reviews,
    settings: SettingsFn,
    links: Arc<super::links::Links>,
) -> Arc<Stats> {
    let queue = Arc::new(Queue::default());
    let stats = Arc::new(Stats::default());
    reviews.on_open(hook(queue.clone(), stats.clone()));
    handle.spawn(run(queue, settings, stats.clone(), links));
    stats
}

async fn run(queue: Arc<Queue>, settings: SettingsFn, stats: Arc<Stats>, links: Arc<super::links::Links>) {
    let agent = match http_agent(None) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::error!(target: "gatehouse::notify", error = %e, "no HTTP client: webhooks are off");
            None
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_INFLIGHT));
    loop {
        let s = settings();
        let Announcement { review, earlier } =
            match queue.next(s.notify.per_identity_per_minute, std::time::Instant::now()) {
                Next::Ready(a) => *a,
                Next::Wait(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = queue.wake.notified() => {}
                    }
                    continue;
                }
                Next::Empty => {
                    queue.wake.notified().await;
                    continue;
                }
            };
        stats.coalesced.fetch_add(earlier.count(), Ordering::Relaxed);
        let review = Arc::new(review);
        let earlier = Arc::new(earlier);
        let admin_url: Arc<str> = Arc::from(s.admin_url.as_str());
        for (i, w) in s.notify.webhooks.iter().enumerate() {
            let Some(agent) = agent.clone() else { break };
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let slack_app = s.notify.slack.clone().map(Arc::new);
            let (w, review, earlier, admin_url, stats) = (
                w.clone(),
                review.clone(),
                earlier.clone(),
                admin_url.clone(),
                stats.clone(),
            );
            tokio::spawn(async move {
                let _permit = permit;
                let kind = kind_name(w.kind);
                match send_webhook(&agent, &w, slack_app.as_deref(), &review, &earlier, &admin_url).await {
                    Ok(tries) => {
                        stats.delivered.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(target: "gatehouse::notify", review = %review.id, webhook = i, kind, tries, coalesced = earlier.count(), "review announced");
                    }
                    Err(why) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(target: "gatehouse::notify", review = %review.id, webhook = i, kind, error = %why, "review not announced");
                    }
                }
            });
        }
        if let Some(m) = s.notify.smtp.clone() {
            // The list's mail, then each approver's own, with their links.
            let mut mails: Vec<(Vec<String>, String, &'static str)> = Vec::new();
            let now = crate::policy::reviews::now_unix();
            if !m.to.is_empty() {
                let msg = mail_message_to(&review, &earlier, &admin_url, &m, now, &m.to, None);
                mails.push((m.to.clone(), msg, "smtp"));
            }
            for a in m.approvers.iter().filter(|a| may_decide(a, &review)) {
                let Some(mailbox) = a.email.clone() else { continue };
                let expires = (now + m.link_minutes * 60).min(review.created + review.request.timeout_secs);
                let (approve, deny) = links.pair(&review.id, a, expires);
                let l = MailLinks {
                    approver: a.name.clone(),
                    approve_url: format!("{admin_url}{}{approve}", super::links::PREFIX),
                    deny_url: format!("{admin_url}{}{deny}", super::links::PREFIX),
                    expires,
                };
                let to = vec![mailbox];
                let msg = mail_message_to(&review, &earlier, &admin_url, &m, now, &to, Some(&l));
                mails.push((to, msg, "smtp approver"));
            }
            for (to, message, kind) in mails {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (m, review, earlier, stats) = (m.clone(), review.clone(), earlier.clone(), stats.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match send_mail_with_retries(&m, &to, &message).await {
                        Ok(tries) => {
                            stats.delivered.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(target: "gatehouse::notify", review = %review.id, kind, tries, coalesced = earlier.count(), "review announced");
                        }
                        Err(why) => {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(target: "gatehouse::notify", review = %review.id, kind, error = %why, "review not announced");
                        }
                    }
                });
            }
        }
    }
}

/// Whether an approver could decide a review: one of its approver roles
/// (or admin), and not the identity that asked.
fn may_decide(a: &crate::config::Approver, r: &Review) -> bool {
    a.name != r.request.identity
        && a.roles
            .iter()
            .any(|role| role == "admin" || r.request.approvers.contains(role))
}

fn kind_name(k: WebhookKind) -> &'static str {
    match k {
        WebhookKind::Slack => "slack",
        WebhookKind::Json => "json",
    }
}

fn backoff(attempt: u32) -> Duration {
    BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(8))
}

// ---- message bodies -------------------------------------------------------

/// `sha256=<hex HMAC-SHA256 of body keyed with secret>`, the value of
/// `X-Gatehouse-Signature`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature in constant time (for receivers, and tests).
pub fn verify(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The generic webhook body: the review as the API shows it, plus
/// `"event": "review.opened"` and `"sent_at"` (Unix seconds, equal to
/// `X-Gatehouse-Timestamp`, so the signed body carries its time).
pub fn json_body(r: &Review, sent_at: u64) -> Vec<u8> {
    json_body_coalesced(r, &Earlier::default(), sent_at)
}

/// As [`json_body`], and with `"coalesced": {"reviews": [ids], "more": n}`
/// when earlier reviews of the identity are announced with this one.
pub fn json_body_coalesced(r: &Review, earlier: &Earlier, sent_at: u64) -> Vec<u8> {
    let mut v = serde_json::to_value(r).unwrap_or_else(|_| json!({ "id": r.id }));
    if let Some(o) = v.as_object_mut() {
        o.insert("event".into(), EVENT.into());
        o.insert("sent_at".into(), sent_at.into());
        if earlier.count() > 0 {
            o.insert(
                "coalesced".into(),
                json!({ "reviews": earlier.ids, "more": earlier.more }),
            );
        }
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// One line on the earlier reviews announced with this one, if any.
pub(super) fn earlier_note(earlier: &Earlier) -> Option<String> {
    if earlier.count() == 0 {
        return None;
    }
    let more = if earlier.more > 0 {
        format!(" and {} more", earlier.more)
    } else {
        String::new()
    };
    Some(format!(
        "Also waiting from this identity ({} earlier review(s), announced together: over its announcement rate): {}{more}",
        earlier.count(),
        earlier.ids.join(", ")
    ))
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!(
            "{}… ({} more characters: the admin API has the whole statement)",
            &s[..at],
            s[at..].chars().count()
        ),
        None => s.to_string(),
    }
}

/// Parameters as one text for a notification, shortened like statements.
pub(super) fn params_text(params: &[String]) -> String {
    let all: Vec<String> = params
        .iter()
        .enumerate()
        .map(|(i, p)| format!("${} = {p}", i + 1))
        .collect();
    truncate(&all.join(", "), MAX_SQL_CHARS / 2)
}

/// Slack's three escapes for message text.
pub(super) fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The Slack incoming-webhook body: `{"text": ...}`.
pub fn slack_body(r: &Review, admin_url: &str) -> serde_json::Value {
    let q = &r.request;
    let e = slack_escape;
    let flags = if q.flags.is_empty() {
        String::new()
    } else {
        format!(" ({})", e(&q.flags.join(", ")))
    };
    // A fence inside the statement would end the code block early: no two
    // backticks stay adjacent.
    let sql = e(&truncate(&q.sql, MAX_SQL_CHARS)).replace('`', "`\u{200b}");
    let id = e(&r.id);
    let admin = e(admin_url);
    let params = if q.params.is_empty() {
        String::new()
    } else {
        format!(
            "parameters: ```{}```\n",
            e(&params_text(&q.params)).replace('`', "`\u{200b}")
        )
    };
    let text = format!(
        "*gatehouse review `{id}` is waiting for approval*\n\
         identity: *{identity}* · target: *{target}* · class: *{class}*{flags} · session {session}\n\
         needs {required} approval(s) from: {approvers} · expires in {timeout}s\n\
         ```{sql}```\n\
         {params}\
         Full review: `GET {admin}/api/v1/reviews/{id}`\n\
         Approve once: `gatehouse review approve {id}` or `POST {admin}/api/v1/reviews/{id}/approve`\n\
         Grant the class for 30 minutes: `gatehouse review approve {id} --grant-minutes 30`\n\
         Deny: `gatehouse review deny {id} --reason \"...\"`",
        identity = e(&q.identity),
        target = e(&q.target),
        class = e(&q.class),
        session = q.session,
        required = q.required,
        approvers = e(&q.approvers.join(", ")),
        timeout = q.timeout_secs,
    );
    json!({ "text": text })
}

/// The plain-text body of the e-mail.
pub fn mail_text(r: &Review, admin_url: &str) -> String {
    let q = &r.request;
    let flags = if q.flags.is_empty() {
        String::new()
    } else {
        format!(" ({})", q.flags.join(", "))
    };
    let sql: String = truncate(&q.sql, MAX_SQL_CHARS)
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    let id = &r.id;
    let params = if q.params.is_empty() {
        String::new()
    } else {
        format!("Parameters (secrets masked):\n    {}\n\n", params_text(&q.params))
    };
    format!(
        "gatehouse review {id} is waiting for approval.\n\n\
         Identity: {identity}\n\
         Target:   {target}\n\
         Class:    {class}{flags}\n\
         Session:  {session}\n\
         Needs:    {required} approval(s) from: {approvers}\n\
         Expires:  in {timeout} seconds\n\n\
         Statement (secrets masked):\n{sql}\n\
         {params}\
         The whole review: GET {admin_url}/api/v1/reviews/{id}\n\n\
         Approve this statement once:\n    gatehouse review approve {id}\n    \
         (or POST {admin_url}/api/v1/reviews/{id}/approve)\n\
         Grant the class to the identity on the target for 30 minutes:\n    \
         gatehouse review approve {id} --grant-minutes 30\n\
         Deny:\n    gatehouse review deny {id} --reason \"...\"\n",
        identity = q.identity,
        target = q.target,
        class = q.class,
        session = q.session,
        required = q.required,
        approvers = q.approvers.join(", "),
        timeout = q.timeout_secs,
    )
}

/// A header value: one line, RFC 2047-encoded when not ASCII.
fn header_value(s: &str) -> String {
    let one_line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.is_ascii() {
        one_line
    } else {
        use base64::Engine;
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(one_line.as_bytes())
        )
    }
}

/// `Thu, 01 Jan 1970 00:00:00 +0000` for a Unix time.
pub fn rfc2822_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The whole e-mail (headers and body), lines ending in CRLF, no line
/// longer than [`MAIL_LINE`] bytes.
pub fn mail_message(r: &Review, admin_url: &str, m: &Smtp, now: u64) -> String {
    mail_message_coalesced(r, &Earlier::default(), admin_url, m, now)
}

/// As [`mail_message`], saying which earlier reviews come with it.
pub fn mail_message_coalesced(r: &Review, earlier: &Earlier, admin_url: &str, m: &Smtp, now: u64) -> String {
    mail_message_to(r, earlier, admin_url, m, now, &m.to, None)
}

/// The links of an approver's own mail.
pub struct MailLinks {
    pub approver: String,
    pub approve_url: String,
    pub deny_url: String,
    pub expires: u64,
}

/// The text that puts the links in a mail.
fn links_text(l: &MailLinks) -> String {
    format!(
        "Decide from this mail. These links act as you ({name}), work until {until} and, \n\
         between the two of them, once. Each opens a page with a button; opening it decides nothing.\n\n\
         Approve:\n    {approve}\n\n\
         Deny it (you can give a reason):\n    {deny}\n\n\
         Forwarding this mail lets others act as you until then.\n",
        name = l.approver,
        until = rfc2822_date(l.expires),
        approve = l.approve_url,
        deny = l.deny_url,
    )
}

/// The whole e-mail to `to`, with an approver's own links if given.
pub fn mail_message_to(
    r: &Review,
    earlier: &Earlier,
    admin_url: &str,
    m: &Smtp,
    now: u64,
    to: &[String],
    links: Option<&MailLinks>,
) -> String {
    let q = &r.request;
    let subject = format!(
        "gatehouse: review {} awaits approval ({} on {} by {})",
        r.id, q.class, q.target, q.identity
    );
    let mut out = String::new();
    for (k, v) in [
        ("From", m.from.clone()),
        ("To", to.join(", ")),
        ("Subject", header_value(&subject)),
        ("Date", rfc2822_date(now)),
        (
            "Message-ID",
            format!("<{}.{now}@gatehouse>", header_value(&r.id).replace(['<', '>', ' '], "")),
        ),
        ("MIME-Version", "1.0".into()),
        ("Content-Type", "text/plain; charset=utf-8".into()),
        ("Content-Transfer-Encoding", "8bit".into()),
        ("X-Gatehouse-Review", header_value(&r.id)),
        ("Auto-Submitted", "auto-generated".into()),
    ] {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut text = String::new();
    if let Some(l) = links {
        text.push_str(&links_text(l));
        text.push('\n');
    }
    text.push_str(&mail_text(r, admin_url));
    if let Some(note) = earlier_note(earlier) {
        text.push_str(&format!("\n{note}\n"));
    }
    for line in text.lines() {
        let mut rest = line;
        loop {
            if rest.len() <= MAIL_LINE {
                out.push_str(rest);
                out.push_str("\r\n");
                break;
            }
            let mut at = MAIL_LINE;
            while !rest.is_char_boundary(at) {
                at -= 1;
            }
            out.push_str(&rest[..at]);
            out.push_str("\r\n");
            rest = &rest[at..];
        }
    }
    out
}

/// The DATA block: CRLF line ends, leading dots doubled, the final `.`.
pub fn data_block(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 16);
    let body = message.strip_suffix('\n').unwrap_or(message);
    let body = body.strip_suffix('\r').unwrap_or(body);
    if !body.is_empty() {
        for line in body.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.starts_with('.') {
                out.push('.');
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str(".\r\n");
    out
}

// ---- HTTP -----------------------------------------------------------------

/// A rustls client configuration: the CA bundle in `ca_file`, else the
/// built-in web roots.
pub fn client_tls(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(f) => {
            for c in rustls::pki_types::CertificateDer::pem_file_iter(f).map_err(|e| format!("{}: {e}", f.display()))? {
                let c = c.map_err(|e| format!("{}: {e}", f.display()))?;
                roots.add(c).map_err(|e| format!("{}: {e}", f.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no certificate", f.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A blocking HTTP client with timeouts and no redirects (run it on a
/// blocking thread).
pub fn http_agent(ca_file: Option<&std::path::Path>) -> Result<ureq::Agent, String> {
    Ok(ureq::AgentBuilder::new()
        .tls_config(client_tls(ca_file)?)
        .timeout_connect(HTTP_CONNECT_TIMEOUT)
        .timeout(HTTP_TIMEOUT)
        .redirects(0)
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build())
}

/// Why a POST failed: whether to try again, and what to log (never the URL).
struct PostError {
    retry: bool,
    why: String,
}

fn post_once(agent: &ureq::Agent, url: &str, headers: &[(&'static str, String)], body: &[u8]) -> Result<(), PostError> {
    let mut req = agent.post(url).set("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.set(k, v);
    }
    match req.send_bytes(body) {
        Ok(resp) => {
            let status = resp.status();
            let _ = std::io::copy(&mut resp.into_reader().take(MAX_RESPONSE), &mut std::io::sink());
            if (200..300).contains(&status) {
                Ok(())
            } else {
                Err(PostError {
                    retry: false,
                    why: format!("HTTP status {status}"),
                })
            }
        }
        Err(ureq::Error::Status(code, _)) => Err(PostError {
            retry: code == 429 || code >= 500,
            why: format!("HTTP status {code}"),
        }),
        // The transport error's Display carries the URL; its kind does not.
        Err(ureq::Error::Transport(t)) => Err(PostError {
            retry: true,
            why: t.kind().to_string(),
        }),
    }
}

/// POSTs `body` with retries; returns the tries it took.
pub(super) async fn post(
    agent: &ureq::Agent,
    url: &str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
) -> Result<u32, String> {
    let body: Arc<[u8]> = body.into();
    let headers = Arc::new(headers);
    let url: Arc<str> = Arc::from(url);
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let (agent, url, headers, body) = (agent.clone(), url.clone(), headers.clone(), body.clone());
        let res = tokio::task::spawn_blocking(move || post_once(&agent, &url, &headers, &body)).await;
        match res {
            Ok(Ok(())) => return Ok(attempt),
            Ok(Err(e)) => {
                last = e.why;
                if !e.retry {
                    break;
                }
            }
            Err(_) => {
                last = "the request task failed".into();
                break;
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
    Err(last)
}

async fn send_webhook(
    agent: &ureq::Agent,
    w: &Webhook,
    slack_app: Option<&crate::config::SlackApp>,
    r: &Review,
    earlier: &Earlier,
    admin_url: &str,
) -> Result<u32, String> {
    let url = w.resolve_url()?;
    match w.kind {
        WebhookKind::Slack => {
            let mut body = slack_body(r, admin_url);
            let note = earlier_note(earlier);
            if let (Some(note), Some(text)) = (&note, body["text"].as_str()) {
                body["text"] = format!("{text}\n{}", slack_escape(note)).into();
            }
            if let (Some(app), Some(text)) = (slack_app, body["text"].as_str()) {
                body = super::slack::announcement(r, app, text, admin_url, note.as_deref());
            }
            post(agent, &url, Vec::new(), body.to_string().into_bytes()).await
        }
        WebhookKind::Json => {
            let var = w.secret_env.as_deref().unwrap_or_default();
            let secret = match std::env::var(var) {
                Ok(s) if !s.is_empty() => s,
                _ => return Err(format!("its secret_env ({var}) is not set: not sent unsigned")),
            };
            let sent_at = crate::policy::reviews::now_unix();
            let body = json_body_coalesced(r, earlier, sent_at);
            let headers = vec![
                ("X-Gatehouse-Signature", sign(secret.as_bytes(), &body)),
                ("X-Gatehouse-Timestamp", sent_at.to_string()),
                ("X-Gatehouse-Event", EVENT.to_string()),
            ];
            post(agent, &url, headers, body).await
        }
    }
}

// ---- SMTP -----------------------------------------------------------------

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Conn = BufStream<Box<dyn Io>>;

/// Reads one (possibly multi-line) reply: its code and text.
async fn reply(c: &mut Conn) -> Result<(u16, String), String> {
    let mut text = String::new();
    for _ in 0..MAX_REPLY_LINES {
        let mut line = String::new();
        let n = (&mut *c)
            .take(MAX_REPLY_LINE)
            .read_line(&mut line)
            .await
            .map_err(|e| format!("reading the reply: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| "the server's reply has no code".to_string())?;
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(line.get(4..).unwrap_or("").trim_end());
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, text));
        }
    }
    Err("the server's reply is too long".into())
}

/// Sends `line` (without CRLF) and expects a reply code in `ok`; `what`
/// names the command in errors (so AUTH's argument is never shown).
async fn command(c: &mut Conn, line: &str, what: &str, ok: &[u16]) -> Result<String, String> {
    c.write_all(line.as_bytes()).await.map_err(|e| format!("{what}: {e}"))?;
    c.write_all(b"\r\n").await.map_err(|e| format!("{what}: {e}"))?;
    c.flush().await.map_err(|e| format!("{what}: {e}"))?;
    expect(c, what, ok).await
}

async fn expect(c: &mut Conn, what: &str, ok: &[u16]) -> Result<String, String> {
    let (code, text) = reply(c).await?;
    if ok.contains(&code) {
        Ok(text)
    } else {
        Err(format!("{what}: the server replied {code} {}", text.replace('\n', " ")))
    }
}

/// Sends `message` (headers and body) to `m.to` over SMTP.
pub async fn send_mail(m: &Smtp, password: Option<&str>, to: &[String], message: &str) -> Result<(), String> {
    match tokio::time::timeout(SMTP_TIMEOUT, smtp_session(m, password, to, message)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}s", SMTP_TIMEOUT.as_secs())),
    }
}

async fn smtp_session(m: &Smtp, password: Option<&str>, to: &[String], message: &str) -> Result<(), String> {
    let (host, port) =
        crate::config::smtp_host_port(&m.server).ok_or_else(|| format!("`{}` is not host:port", m.server))?;
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connecting to {}: {e}", m.server))?;
    let helo = match tcp.local_addr() {
        Ok(std::net::SocketAddr::V4(a)) => format!("[{}]", a.ip()),
        Ok(std::net::SocketAddr::V6(a)) => format!("[IPv6:{}]", a.ip()),
        Err(_) => "gatehouse".to_string(),
    };
    let mut c: Conn = BufStream::new(Box::new(tcp));
    expect(&mut c, "greeting", &[220]).await?;
    let mut ext = command(&mut c, &format!("EHLO {helo}"), "EHLO", &[250]).await?;
    if m.starttls {
        if !ext.lines().any(|l| l.trim().eq_ignore_ascii_case("STARTTLS")) {
            return Err("the server does not offer STARTTLS (starttls = true)".into());
        }
        command(&mut c, "STARTTLS", "STARTTLS", &[220]).await?;
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("TLS server name {host}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(client_tls(None)?)
            .connect(name, c.into_inner())
            .await
            .map_err(|e| format!("TLS with {}: {e}", m.server))?;
        c = BufStream::new(Box::new(tls));
        ext = command(&mut c, &format!("EHLO {helo}"), "EHLO", &[250]).await?;
    }
    let _ = ext;
    if let (Some(user), Some(pass)) = (&m.username, password) {
        use base64::Engine;
        let cred = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        command(&mut c, &format!("AUTH PLAIN {cred}"), "AUTH", &[235]).await?;
    }
    command(&mut c, &format!("MAIL FROM:<{}>", m.from), "MAIL FROM", &[250]).await?;
    for to in to {
        command(&mut c, &format!("RCPT TO:<{to}>"), "RCPT TO", &[250, 251]).await?;
    }
    command(&mut c, "DATA", "DATA", &[354]).await?;
    c.write_all(data_block(message).as_bytes())
        .await
        .map_err(|e| format!("DATA: {e}"))?;
    c.flush().await.map_err(|e| format!("DATA: {e}"))?;
    expect(&mut c, "end of DATA", &[250]).await?;
    let _ = command(&mut c, "QUIT", "QUIT", &[221]).await;
    Ok(())
}

async fn send_mail_with_retries(m: &Smtp, to: &[String], message: &str) -> Result<u32, String> {
    let password = match &m.password_env {
        Some(var) => Some(std::env::var(var).map_err(|_| format!("password_env {var} is not set"))?),
        None => None,
    };
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match send_mail(m, password.as_deref(), to, message).await {
            Ok(()) => return Ok(attempt),
            // 5xx replies are permanent; everything else may pass next time.
            Err(e) => {
                let permanent = e.contains("replied 5");
                last = e;
                if permanent {
                    break;
                }
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::reviews::{ReviewRequest, Status};

    fn review() -> Review {
        Review {
            id: "r-1a2b-7".into(),
            request: ReviewRequest {
                identity: "agent".into(),
                roles: vec!["agent".into()],
                target: "db".into(),
                session: 42,
                sql: "update t set a = '<x>' & 1".into(),
                params: vec![],
                class: "write".into(),
                flags: vec!["update_without_where".into()],
                fingerprint: "f".into(),
                approvers: vec!["dba".into()],
                required: 2,
                timeout_secs: 300,
                reason: None,
                grants: vec!["write".into()],
            },
            created: 1_700_000_000,
            status: Status::Pending,
            approvals: vec![],
            decided_by: None,
            grant_until: None,
        }
    }

    #[test]
    fn signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let body = json_body(&review(), 1_700_000_100);
        let sig = sign(b"k3y", &body);
        assert!(verify(b"k3y", &body, &sig));
        assert!(!verify(b"other", &body, &sig));
        let mut tampered = body.clone();
        tampered[3] ^= 1;
        assert!(!verify(b"k3y", &tampered, &sig));
        assert!(!verify(b"k3y", &body, "sha1=00"));
    }

    #[test]
    fn json_body_is_the_review_and_the_event() {
        let v: serde_json::Value = serde_json::from_slice(&json_body(&review(), 5)).unwrap();
        assert_eq!(v["event"], "review.opened");
        assert_eq!(v["sent_at"], 5);
        assert_eq!(v["id"], "r-1a2b-7");
        assert_eq!(v["identity"], "agent");
        assert_eq!(v["status"]["state"], "pending");
        assert_eq!(v["required"], 2);
    }

    #[test]
    fn slack_body_says_what_and_how() {
        let v = slack_body(&review(), "https://gh.example:9090");
        let text = v["text"].as_str().unwrap();
        assert_eq!(v.as_object().unwrap().len(), 1);
        for want in [
            "r-1a2b-7",
            "*agent*",
            "*db*",
            "*write*",
            "update_without_where",
            "update t set a = '&lt;x&gt;' &amp; 1",
            "POST https://gh.example:9090/api/v1/reviews/r-1a2b-7/approve",
            "gatehouse review approve r-1a2b-7",
            "gatehouse review deny r-1a2b-7",
            "2 approval(s) from: dba",
        ] {
            assert!(text.contains(want), "{want:?} not in {text}");
        }
        let mut r = review();
        r.request.sql = format!("select '````' || '{}'", "x".repeat(3000));
        let text = slack_body(&r, "u")["text"].as_str().unwrap().to_string();
        assert_eq!(text.matches("```").count(), 2, "{text}");
        assert!(text.contains("more characters: the admin API has the whole statement)"));
        assert!(
            text.contains("GET u/api/v1/reviews/r-1a2b-7"),
            "a link to the whole review"
        );
        // Bind parameters, masked by the session, shown (and shortened).
        r.request.params = vec!["42".into(), "y".repeat(5000)];
        let text = slack_body(&r, "u")["text"].as_str().unwrap().to_string();
        assert!(text.contains("parameters: ```$1 = 42, $2 = yyy"), "{text}");
        assert!(text.contains("more characters"));
        assert!(mail_text(&r, "u").contains("Parameters (secrets masked):\n    $1 = 42"));
    }

    #[test]
    fn mail_is_well_formed() {
        let m = Smtp {
            server: "127.0.0.1:25".into(),
            from: "gh@example.com".into(),
            to: vec!["a@example.com".into(), "b@example.com".into()],
            starttls: false,
            username: None,
            password_env: None,
            approvers: vec![],
            link_minutes: 60,
        };
        let mut r = review();
        r.request.identity = "ag\r\nBcc: x@evil".into();
        r.request.sql = format!(".leading dot\n{}", "y".repeat(1500));
        let msg = mail_message(&r, "http://h", &m, 0);
        assert!(msg.contains("Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"), "{msg}");
        assert!(msg.contains("To: a@example.com, b@example.com\r\n"));
        let (head, _) = msg.split_once("\r\n\r\n").unwrap();
        assert!(!head.contains("\r\nBcc:"), "{head}");
        assert!(msg.lines().all(|l| l.len() <= 998));
        assert!(!msg.replace("\r\n", "").contains('\n'));
        let data = data_block(&msg);
        assert!(data.ends_with("\r\n.\r\n"));
        assert!(data.contains("\r\n    .leading dot"));
        assert_eq!(data_block(".x\n..y\nz\n"), "..x\r\n...y\r\nz\r\n.\r\n");
        assert_eq!(rfc2822_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(rfc2822_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert!(header_value("é").starts_with("=?UTF-8?B?"));
    }

    #[test]
    fn coalesced_reviews_are_named_in_every_message() {
        let earlier = Earlier {
            ids: vec!["r-1".into(), "r-2".into()],
            more: 3,
        };
        let v: serde_json::Value = serde_json::from_slice(&json_body_coalesced(&review(), &earlier, 5)).unwrap();
        assert_eq!(v["coalesced"], json!({ "reviews": ["r-1", "r-2"], "more": 3 }));
        let v: serde_json::Value = serde_json::from_slice(&json_body(&review(), 5)).unwrap();
        assert!(v.get("coalesced").is_none());
        let note = earlier_note(&earlier).unwrap();
        assert!(
            note.contains("5 earlier review(s)") && note.contains("r-1, r-2 and 3 more"),
            "{note}"
        );
    }
}
