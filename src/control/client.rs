//! A client of the admin API's reviews, for `gatehouse review`: blocking
//! (ureq), HTTPS with a CA bundle when asked, errors as the API gives them.

use serde_json::{json, Value};

/// The admin URL when neither `--admin` nor `GATEHOUSE_ADMIN_URL` says.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9090";
/// Largest response read.
const MAX_RESPONSE: u64 = 16 << 20;
/// Statement characters shown in a table row.
const SQL_COLUMN: usize = 60;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error.
    #[error("{status} {reason}: {message}")]
    Api {
        status: u16,
        reason: String,
        message: String,
    },
    /// No answer, or not one the API gives.
    #[error("{0}")]
    Transport(String),
}

pub struct AdminClient {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// Percent-encodes a path segment.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl AdminClient {
    /// `base` is the admin URL (`http://host:port`); `ca_file` replaces the
    /// built-in web roots for HTTPS.
    pub fn new(base: &str, token: &str, ca_file: Option<&std::path::Path>) -> Result<AdminClient, String> {
        let lower = base.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(format!("the admin URL `{base}` is not http:// or https://"));
        }
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            agent: super::notify::http_agent(ca_file)?,
        })
    }

    /// Sends a request; the answer's body (at most `max` bytes), or the
    /// API's error with its status and message.
    fn send(&self, method: &str, path: &str, body: Option<Value>, max: u64) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{path}", self.base);
        let req = self
            .agent
            .request(method, &url)
            .set("Authorization", &format!("Bearer {}", self.token));
        let res = match body {
            Some(b) => req
                .set("Content-Type", "application/json")
                .send_bytes(b.to_string().as_bytes()),
            None => req.call(),
        };
        let read = |resp: ureq::Response, max: u64| -> Result<Vec<u8>, String> {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(resp.into_reader(), max), &mut out)
                .map_err(|e| format!("reading the answer: {e}"))?;
            Ok(out)
        };
        match res {
            Ok(resp) => read(resp, max).map_err(ClientError::Transport),
            Err(ureq::Error::Status(status, resp)) => {
                let reason = resp.status_text().to_string();
                let message = read(resp, MAX_RESPONSE)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .and_then(|v| v["error"].as_str().map(String::from))
                    .unwrap_or_else(|| "(no message)".to_string());
                Err(ClientError::Api {
                    status,
                    reason,
                    message,
                })
            }
            Err(ureq::Error::Transport(t)) => Err(ClientError::Transport(format!("{}: {t}", self.base))),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        let bytes = self.send(method, path, body, MAX_RESPONSE)?;
        serde_json::from_slice(&bytes).map_err(|_| ClientError::Transport("the answer is not JSON".into()))
    }

    /// The raw body of a GET (a recording download), at most `max` bytes.
    pub fn download(&self, path: &str, max: u64) -> Result<Vec<u8>, ClientError> {
        self.send("GET", path, None, max)
    }

    /// Reviews, open ones first; only pending ones with `pending`.
    pub fn list(&self, pending: bool) -> Result<Vec<Value>, ClientError> {
        let path = if pending {
            "/api/v1/reviews?state=pending"
        } else {
            "/api/v1/reviews"
        };
        let v = self.call("GET", path, None)?;
        v["reviews"]
            .as_array()
            .cloned()
            .ok_or_else(|| ClientError::Transport("the answer has no `reviews`".into()))
    }

    pub fn get(&self, id: &str) -> Result<Value, ClientError> {
        self.call("GET", &format!("/api/v1/reviews/{}", segment(id)), None)
    }

    /// Approves; `grant_minutes` 0 lets the statement run once.
    pub fn approve(&self, id: &str, reason: &str, grant_minutes: u64) -> Result<Value, ClientError> {
        self.call(
            "POST",
            &format!("/api/v1/reviews/{}/approve", segment(id)),
            Some(json!({ "reason": reason, "grant_minutes": grant_minutes })),
        )
    }

    pub fn deny(&self, id: &str, reason: &str) -> Result<Value, ClientError> {
        self.call(
            "POST",
            &format!("/api/v1/reviews/{}/deny", segment(id)),
            Some(json!({ "reason": reason })),
        )
    }
}

fn age(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

/// The review's state, with the approvals so far while pending.
pub fn state_text(r: &Value) -> String {
    let state = r["status"]["state"].as_str().unwrap_or("?");
    match state {
        "pending" => format!(
            "pending {}/{}",
            r["approvals"].as_array().map(Vec::len).unwrap_or(0),
            r["required"].as_u64().unwrap_or(1)
        ),
        s => s.to_string(),
    }
}

/// A table of reviews (a header line even when there are none).
pub fn table(reviews: &[Value], now: u64) -> String {
    let rows: Vec<[String; 7]> = reviews
        .iter()
        .map(|r| {
            let s = |k: &str| one_line(r[k].as_str().unwrap_or(""), 40);
            [
                s("id"),
                state_text(r),
                s("identity"),
                s("target"),
                s("class"),
                age(now.saturating_sub(r["created"].as_u64().unwrap_or(now))),
                one_line(r["sql"].as_str().unwrap_or(""), SQL_COLUMN),
            ]
        })
        .collect();
    let head = ["ID", "STATE", "IDENTITY", "TARGET", "CLASS", "AGE", "STATEMENT"];
    let mut width = head.map(|h| h.chars().count());
    for row in &rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(c);
                l.push_str(&" ".repeat(width[i] - c.chars().count() + 2));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(&head);
    for row in &rows {
        out.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    out
}

/// One line about a review after a decision.
pub fn describe(r: &Value) -> String {
    let mut s = format!(
        "{}: {} ({} on {} by {})",
        r["id"].as_str().unwrap_or("?"),
        state_text(r),
        r["class"].as_str().unwrap_or("?"),
        r["target"].as_str().unwrap_or("?"),
        r["identity"].as_str().unwrap_or("?"),
    );
    if let Some(reason) = r["status"]["reason"].as_str() {
        s.push_str(&format!("; reason: {reason}"));
    }
    if let Some(until) = r["grant_until"].as_u64() {
        s.push_str(&format!("; class granted until {}", super::notify::rfc2822_date(until)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_header_and_aligned_rows() {
        assert_eq!(table(&[], 0), "ID  STATE  IDENTITY  TARGET  CLASS  AGE  STATEMENT\n");
        let r = json!({
            "id": "r-1-1", "status": {"state": "pending"}, "approvals": [{"by": "x", "at": 1}], "required": 2,
            "identity": "agent", "target": "db", "class": "write", "created": 100,
            "sql": "update t\n   set a = 1",
        });
        let t = table(std::slice::from_ref(&r), 400);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("r-1-1  pending 1/2  agent"), "{t}");
        assert!(lines[1].ends_with("5m   update t set a = 1"), "{t}");
        assert_eq!(lines[0].find("STATEMENT"), lines[1].find("update"));
        assert_eq!(describe(&r), "r-1-1: pending 1/2 (write on db by agent)");
        assert_eq!(segment("r-1/../x?"), "r-1%2F..%2Fx%3F");
    }
}
