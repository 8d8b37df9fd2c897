//! `[notify]`: where new reviews are announced (webhooks, e-mail).

use super::locate::{Invalid, PathPart};
use super::loopback_http;
use serde::Deserialize;

/// Announcements of new reviews, sent by the control plane.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Notify {
    /// The admin API's URL as approvers reach it, put in messages
    /// (default: `http(s)://` and `[admin] listen`).
    pub admin_url: Option<String>,
    #[serde(rename = "webhook")]
    pub webhooks: Vec<Webhook>,
    pub smtp: Option<Smtp>,
    /// Announcements of one identity's reviews per minute, at most; the
    /// reviews past it go out together in its next announcement.
    pub per_identity_per_minute: usize,
}

impl Default for Notify {
    fn default() -> Self {
        Notify {
            admin_url: None,
            webhooks: Vec::new(),
            smtp: None,
            per_identity_per_minute: 6,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookKind {
    /// A Slack incoming webhook: `{"text": ...}`.
    Slack,
    /// The review as JSON, signed with HMAC-SHA256.
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub kind: WebhookKind,
    /// `https://` (`http://` only to a loopback host). A Slack URL is a
    /// credential: prefer `url_env`.
    pub url: Option<String>,
    /// The environment variable holding the URL.
    pub url_env: Option<String>,
    /// `json`: the environment variable holding the HMAC key.
    pub secret_env: Option<String>,
}

impl Webhook {
    /// The URL, from the config or its environment variable.
    pub fn resolve_url(&self) -> Result<String, String> {
        match (&self.url, &self.url_env) {
            (Some(u), _) => Ok(u.clone()),
            (None, Some(var)) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set")),
            (None, None) => Err("one of url, url_env is needed".into()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    /// The mail server, `host:port`.
    pub server: String,
    pub from: String,
    pub to: Vec<String>,
    /// Upgrade to TLS (server checked against the built-in web roots)
    /// before anything else; off only for a relay you trust the path to.
    #[serde(default = "yes")]
    pub starttls: bool,
    /// AUTH PLAIN with this user and the password in `password_env`.
    pub username: Option<String>,
    pub password_env: Option<String>,
}

fn yes() -> bool {
    true
}

/// An address for SMTP's MAIL FROM / RCPT TO: no spaces, brackets or line breaks.
fn mailbox_ok(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !a
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "<>,;\"()[]\\".contains(c))
}

/// `host:port` of a mail server, split.
pub fn smtp_host_port(server: &str) -> Option<(&str, u16)> {
    let (host, port) = server.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    (!host.is_empty() && !host.contains(['/', '@', ' '])).then_some((host, port))
}

pub(super) fn validate_notify(n: &Notify) -> Result<(), Invalid> {
    if n.per_identity_per_minute == 0 {
        return Err((
            vec![PathPart::Key("notify"), PathPart::Key("per_identity_per_minute")],
            "must be at least 1".into(),
        ));
    }
    use PathPart::{Idx, Key};
    if let Some(u) = &n.admin_url {
        let lower = u.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) || u.contains(char::is_whitespace) {
            return Err((
                vec![Key("notify"), Key("admin_url")],
                "must be an http:// or https:// URL, as approvers reach the admin API".into(),
            ));
        }
    }
    for (i, w) in n.webhooks.iter().enumerate() {
        let k = |k: &'static str| vec![Key("notify"), Key("webhook"), Idx(i), Key(k)];
        let url = match (&w.url, &w.url_env) {
            (Some(_), Some(_)) => return Err((k("url_env"), "give only one of url, url_env".into())),
            (None, None) => {
                return Err((
                    vec![Key("notify"), Key("webhook"), Idx(i)],
                    "one of url, url_env is needed".into(),
                ))
            }
            _ => w.resolve_url().map_err(|e| (k("url_env"), e))?,
        };
        let key = if w.url.is_some() { "url" } else { "url_env" };
        let https = url.len() > 8 && url.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("https://"));
        if !https && !loopback_http(&url) {
            return Err((
                k(key),
                "must be an https:// URL (http:// only to 127.0.0.1, localhost or [::1])".into(),
            ));
        }
        match (w.kind, &w.secret_env) {
            (WebhookKind::Json, None) => {
                return Err((
                    k("secret_env"),
                    "a json webhook is signed: name the environment variable holding its key".into(),
                ))
            }
            (WebhookKind::Json, Some(var)) => {
                if std::env::var(var).map(|v| v.is_empty()).unwrap_or(true) {
                    return Err((k("secret_env"), format!("environment variable {var} is not set")));
                }
            }
            (WebhookKind::Slack, Some(_)) => {
                return Err((k("secret_env"), "only json webhooks are signed".into()));
            }
            (WebhookKind::Slack, None) => {}
        }
    }
    if let Some(m) = &n.smtp {
        let k = |k: &'static str| vec![Key("notify"), Key("smtp"), Key(k)];
        let Some((host, _)) = smtp_host_port(&m.server) else {
            return Err((
                k("server"),
                format!("`{}` is not host:port, e.g. 127.0.0.1:25", m.server),
            ));
        };
        if !mailbox_ok(&m.from) {
            return Err((
                k("from"),
                format!("`{}` is not an address like gatehouse@example.com", m.from),
            ));
        }
        if m.to.is_empty() {
            return Err((k("to"), "at least one address is needed".into()));
        }
        for (i, a) in m.to.iter().enumerate() {
            if !mailbox_ok(a) {
                return Err((
                    vec![Key("notify"), Key("smtp"), Key("to"), Idx(i)],
                    format!("`{a}` is not an address like dba@example.com"),
                ));
            }
        }
        match (&m.username, &m.password_env) {
            (Some(_), None) => return Err((k("password_env"), "a username needs password_env".into())),
            (None, Some(_)) => return Err((k("username"), "password_env needs a username".into())),
            (Some(_), Some(var)) => {
                if std::env::var(var).is_err() {
                    return Err((k("password_env"), format!("environment variable {var} is not set")));
                }
                let loopback = matches!(host, "127.0.0.1" | "localhost" | "::1");
                if !m.starttls && !loopback {
                    return Err((
                        k("starttls"),
                        "a password is sent only over TLS: set starttls = true (or use a relay on loopback)".into(),
                    ));
                }
            }
            (None, None) => {}
        }
    }
    Ok(())
}
