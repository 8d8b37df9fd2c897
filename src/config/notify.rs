//! `[notify]`: where new reviews are announced (webhooks, e-mail).

use super::locate::{Invalid, PathPart};
use super::loopback_http;
use super::policy::PolicyConfig;

/// Longest grant an approval may give, in minutes: a day.
pub const MAX_GRANT_MINUTES: u64 = 24 * 60;
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
    /// A Slack app's interactive approvals: Approve / Deny buttons on the
    /// messages of `kind = "slack"` webhooks, and the callback they call.
    pub slack: Option<SlackApp>,
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
            slack: None,
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
    /// People who decide from the mail itself: each gets a mail of their
    /// own with approve and deny links, signed and usable once, that act
    /// as them (`email` names the mailbox).
    #[serde(default, rename = "approver")]
    pub approvers: Vec<Approver>,
    /// How long a mail's links work, in minutes (default 60; never longer
    /// than the review waits).
    #[serde(default = "link_minutes")]
    pub link_minutes: u64,
}

fn link_minutes() -> u64 {
    60
}

/// A person who decides reviews from Slack or from a mail, and the
/// gatehouse name and roles they decide as (as an admin token's `name`
/// and `roles`: the name is what self-approval and N-of-M compare).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approver {
    pub name: String,
    pub roles: Vec<String>,
    /// Slack: the member ID (`U…`/`W…`) of the person.
    pub user_id: Option<String>,
    /// Slack: the person's confirmed e-mail in the workspace (looked up
    /// with `bot_token_env`); mail: the mailbox the links go to.
    pub email: Option<String>,
}

/// A Slack app with interactivity on: its Request URL is
/// `<admin URL>/slack/interactions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackApp {
    /// The environment variable holding the app's signing secret: every
    /// callback is checked against it.
    pub signing_secret_env: String,
    /// Only callbacks from this workspace (team ID `T…`) are accepted.
    pub team_id: Option<String>,
    /// Beside "Approve once", a button per entry that also grants the
    /// statement's class for that many minutes.
    #[serde(default)]
    pub grant_minutes: Vec<u64>,
    /// The environment variable holding a bot token with `users:read.email`,
    /// needed when an approver is named by `email`.
    pub bot_token_env: Option<String>,
    /// Slack's Web API (default `https://slack.com/api`).
    #[serde(default = "slack_api")]
    pub api_url: String,
    /// Deny opens a dialog asking for the reason the client is told
    /// (`views.open`: needs `bot_token_env`); without it the client is
    /// told `denied in Slack by <name>`.
    #[serde(default)]
    pub ask_deny_reason: bool,
    #[serde(default, rename = "approver")]
    pub approvers: Vec<Approver>,
}

fn slack_api() -> String {
    "https://slack.com/api".into()
}

impl SlackApp {
    /// The signing secret, from its environment variable.
    pub fn signing_secret(&self) -> Option<String> {
        std::env::var(&self.signing_secret_env).ok().filter(|s| !s.is_empty())
    }
    /// The bot token, from its environment variable.
    pub fn bot_token(&self) -> Option<String> {
        let var = self.bot_token_env.as_ref()?;
        std::env::var(var).ok().filter(|s| !s.is_empty())
    }
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

/// Checks an approver: a name, roles that can decide (as for admin
/// tokens), and the address it is known by.
fn validate_approver(
    a: &Approver,
    at: impl Fn(&'static str) -> Vec<PathPart>,
    policy: Option<&PolicyConfig>,
    slack: bool,
) -> Result<(), Invalid> {
    if a.name.trim().is_empty() || a.name.chars().any(char::is_control) {
        return Err((at("name"), "must be a name without control characters".into()));
    }
    if a.roles.is_empty() {
        return Err((
            at("roles"),
            "at least one role is needed (admin or a policy approver role)".into(),
        ));
    }
    for r in &a.roles {
        let approver_role = policy.is_some_and(|p| p.roles.values().any(|pr| pr.approvers.contains(r)));
        if r != "admin" && r != "approver" && !approver_role {
            return Err((
                at("roles"),
                format!("`{r}` is not admin, approver, nor an approver role under [policy.roles]"),
            ));
        }
    }
    if let Some(e) = &a.email {
        if !mailbox_ok(e) {
            return Err((at("email"), format!("`{e}` is not an address like dba@example.com")));
        }
    }
    if slack {
        match (&a.user_id, &a.email) {
            (Some(_), Some(_)) => return Err((at("email"), "give only one of user_id, email".into())),
            (None, None) => return Err((at("user_id"), "one of user_id, email is needed".into())),
            (Some(u), None) => {
                let ok = u.len() >= 2
                    && (u.starts_with('U') || u.starts_with('W'))
                    && u.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
                if !ok {
                    return Err((at("user_id"), format!("`{u}` is not a Slack member ID like U012AB3CD")));
                }
            }
            (None, Some(_)) => {}
        }
    } else if a.user_id.is_some() {
        return Err((at("user_id"), "a mail approver is known by its email".into()));
    } else if a.email.is_none() {
        return Err((at("email"), "the mailbox this approver's links go to is needed".into()));
    }
    Ok(())
}

fn validate_slack(s: &SlackApp, policy: Option<&PolicyConfig>) -> Result<(), Invalid> {
    use PathPart::{Idx, Key};
    let k = |k: &'static str| vec![Key("notify"), Key("slack"), Key(k)];
    if s.signing_secret().is_none() {
        return Err((
            k("signing_secret_env"),
            format!("environment variable {} is not set", s.signing_secret_env),
        ));
    }
    if s.approvers.is_empty() {
        return Err((
            k("approver"),
            "name at least one [[notify.slack.approver]]: nobody could decide from Slack".into(),
        ));
    }
    for (i, m) in s.grant_minutes.iter().enumerate() {
        if *m == 0 || *m > MAX_GRANT_MINUTES {
            return Err((
                vec![Key("notify"), Key("slack"), Key("grant_minutes"), Idx(i)],
                format!("a grant is 1 to {MAX_GRANT_MINUTES} minutes"),
            ));
        }
    }
    if s.grant_minutes.len() > 3 {
        return Err((k("grant_minutes"), "at most 3 grant buttons".into()));
    }
    let api = s.api_url.to_ascii_lowercase();
    if !api.starts_with("https://") && !loopback_http(&s.api_url) {
        return Err((
            k("api_url"),
            "must be an https:// URL (http:// only to 127.0.0.1, localhost or [::1])".into(),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, a) in s.approvers.iter().enumerate() {
        let at = |f: &'static str| vec![Key("notify"), Key("slack"), Key("approver"), Idx(i), Key(f)];
        validate_approver(a, at, policy, true)?;
        if a.email.is_some() && s.bot_token_env.is_none() {
            return Err((
                at("email"),
                "an approver known by email needs bot_token_env (a bot token with users:read.email)".into(),
            ));
        }
        if let Some(key) = a.user_id.as_ref().or(a.email.as_ref()) {
            if !names.insert(key.to_ascii_lowercase()) {
                return Err((at("name"), "this Slack user is named twice".into()));
            }
        }
    }
    if s.ask_deny_reason && s.bot_token_env.is_none() {
        return Err((
            k("ask_deny_reason"),
            "the reason dialog is opened with the bot token: set bot_token_env".into(),
        ));
    }
    if let Some(var) = &s.bot_token_env {
        if s.bot_token().is_none() {
            return Err((k("bot_token_env"), format!("environment variable {var} is not set")));
        }
    }
    Ok(())
}

/// One person, one name: a mailbox (Slack by e-mail, or a mail approver)
/// under two names would count twice toward N-of-M, and a name twice
/// among mail approvers would get two mails of links.
fn validate_one_person_one_name(n: &Notify) -> Result<(), Invalid> {
    use PathPart::{Idx, Key};
    let mut by_mailbox: std::collections::HashMap<String, String> = Default::default();
    let slack = n.slack.iter().flat_map(|s| s.approvers.iter().map(|a| ("slack", a)));
    let smtp = n.smtp.iter().flat_map(|m| m.approvers.iter().map(|a| ("smtp", a)));
    let mut smtp_names = std::collections::HashSet::new();
    let mut counts: std::collections::HashMap<&str, usize> = Default::default();
    for (section, a) in slack.chain(smtp) {
        let i = {
            let c = counts.entry(section).or_default();
            *c += 1;
            *c - 1
        };
        let at = |f: &'static str| vec![Key("notify"), Key(section), Key("approver"), Idx(i), Key(f)];
        if section == "smtp" && !smtp_names.insert(a.name.to_lowercase()) {
            return Err((at("name"), "this approver is named twice".into()));
        }
        if let Some(mailbox) = &a.email {
            let name = a.name.to_lowercase();
            match by_mailbox.insert(mailbox.to_lowercase(), name.clone()) {
                Some(other) if other != name => {
                    return Err((
                        at("email"),
                        format!("this mailbox belongs to approver `{other}` already: one person, one name (N-of-M counts names)"),
                    ))
                }
                Some(_) if section == "smtp" => {
                    return Err((at("email"), "this mailbox is named twice".into()));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

pub(super) fn validate_notify(n: &Notify, policy: Option<&PolicyConfig>, admin_listens: bool) -> Result<(), Invalid> {
    if let Some(s) = &n.slack {
        validate_slack(s, policy)?;
    }
    validate_one_person_one_name(n)?;
    if n.smtp.as_ref().is_some_and(|m| !m.approvers.is_empty()) {
        // The links are credentials: they name the admin listener as
        // approvers reach it, over TLS unless it is this machine.
        let at = vec![PathPart::Key("notify"), PathPart::Key("admin_url")];
        if !admin_listens {
            return Err((
                vec![PathPart::Key("admin"), PathPart::Key("listen")],
                "mail approvers' links are served by the admin listener: set [admin] listen".into(),
            ));
        }
        match &n.admin_url {
            None => {
                return Err((
                    vec![PathPart::Key("notify")],
                    "mail approvers' links need admin_url, the admin listener's URL as approvers reach it".into(),
                ))
            }
            Some(u) if !u.to_ascii_lowercase().starts_with("https://") && !loopback_http(u) => {
                return Err((
                    at,
                    "the links are credentials: an https:// URL (http:// only to loopback)".into(),
                ))
            }
            Some(_) => {}
        }
    }
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
        if m.to.is_empty() && m.approvers.is_empty() {
            return Err((
                k("to"),
                "at least one address (or an [[notify.smtp.approver]]) is needed".into(),
            ));
        }
        if m.link_minutes == 0 || m.link_minutes > MAX_GRANT_MINUTES {
            return Err((k("link_minutes"), format!("must be 1 to {MAX_GRANT_MINUTES}")));
        }
        for (i, a) in m.approvers.iter().enumerate() {
            let at = |f: &'static str| vec![Key("notify"), Key("smtp"), Key("approver"), Idx(i), Key(f)];
            validate_approver(a, at, policy, false)?;
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
