//! Startup parameters a client may pass to the server, and the ones
//! gatehouse sets itself.
//!
//! A startup packet can set any run-time parameter for the upstream
//! session, including ones that change who runs it (`role`,
//! `session_authorization`), what it may do (`default_transaction_read_only`,
//! `session_replication_role`) or how its statement text is read
//! (`client_encoding`, `standard_conforming_strings`). gatehouse passes only
//! the parameters in [`ALLOWED`], each checked, and refuses the session
//! otherwise: a parameter dropped in silence would leave the client
//! believing it was set.
//!
//! | parameter | accepted values |
//! |---|---|
//! | `application_name`, `DateStyle`, `TimeZone`, `IntervalStyle`, `extra_float_digits`, `search_path`, `bytea_output`, `lc_monetary`, `lc_numeric`, `lc_time`, `statement_timeout`, `lock_timeout`, `idle_in_transaction_session_timeout`, `idle_session_timeout`, `client_min_messages`, `default_text_search_config`, `xmloption`, `xmlbinary`, `jit`, `work_mem` | any |
//! | `client_encoding` | UTF8 (any spelling: `utf8`, `UTF-8`, `unicode`) |
//! | `standard_conforming_strings` | on |
//! | `backslash_quote` | off |
//! | `options` | `-c name=value` / `--name=value` of the parameters above, nothing else |
//!
//! Under a policy, gatehouse itself sets `client_encoding=UTF8`,
//! `standard_conforming_strings=on` and `backslash_quote=off` (the values
//! its statement classifier reads text with), and for roles that may not
//! write without approval `default_transaction_read_only=on`. Set in the
//! startup packet, they are the session's reset values too: `RESET ALL` and
//! `DISCARD ALL` return to them.

use crate::sql::lexical_value_ok;

/// Run-time parameters a client may set at startup (lower case; PostgreSQL
/// compares parameter names without case).
pub const ALLOWED: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
    "search_path",
    "bytea_output",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "client_min_messages",
    "default_text_search_config",
    "xmloption",
    "xmlbinary",
    "jit",
    "work_mem",
    "standard_conforming_strings",
    "backslash_quote",
];

/// What gatehouse pins under a policy: the lexical environment the
/// classifier assumes.
pub const PINNED: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("standard_conforming_strings", "on"),
    ("backslash_quote", "off"),
];

/// Set for a role that may not write without approval.
pub const READ_ONLY: (&str, &str) = ("default_transaction_read_only", "on");

/// Why a startup parameter was refused (SQLSTATE 42501).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("startup parameter {name:?} {why}")]
pub struct Refused {
    pub name: String,
    pub why: String,
}

fn check(name: &str, value: &str) -> Result<(), Refused> {
    let lower = name.to_ascii_lowercase();
    if !ALLOWED.contains(&lower.as_str()) {
        return Err(Refused {
            name: name.to_string(),
            why: "is not allowed through gatehouse (it could change who runs the session, what it may do, or how statements are read)".into(),
        });
    }
    if !lexical_value_ok(&lower, value) {
        return Err(Refused {
            name: name.to_string(),
            why: format!(
                "may not be {value:?} through gatehouse: statements are read with client_encoding UTF8, standard_conforming_strings on and backslash_quote off"
            ),
        });
    }
    Ok(())
}

/// White space as C's `isspace` (which the server uses) sees it: vertical
/// tab included, unlike `char::is_ascii_whitespace`.
fn c_isspace(ch: char) -> bool {
    matches!(ch, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Splits `options` the way the server does (`pg_split_opts`): on
/// unescaped white space, a backslash escaping the next character.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    let mut any = false;
    for ch in s.chars() {
        if escaped {
            cur.push(ch);
            escaped = false;
            any = true;
        } else if ch == '\\' {
            escaped = true;
        } else if c_isspace(ch) {
            if any {
                out.push(std::mem::take(&mut cur));
                any = false;
            }
        } else {
            cur.push(ch);
            any = true;
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Checks `options`: only `-c name=value` and `--name=value` settings of
/// allowed parameters.
fn check_options(options: &str) -> Result<(), Refused> {
    let refused = |what: &str| Refused {
        name: "options".into(),
        why: format!("may only set allowed parameters with -c name=value; {what:?} is not allowed through gatehouse"),
    };
    let words = split_options(options);
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let setting = if w == "-c" {
            i += 1;
            words.get(i).cloned().ok_or_else(|| refused("-c"))?
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest.to_string()
        } else if let Some(rest) = w.strip_prefix("--") {
            rest.to_string()
        } else {
            return Err(refused(w));
        };
        let Some((name, value)) = setting.split_once('=') else {
            return Err(refused(&setting));
        };
        // The server turns dashes into underscores in these names.
        check(&name.replace('-', "_"), value)?;
        i += 1;
    }
    Ok(())
}

/// Checks a client's startup parameters (`user`, `database`, `replication`
/// and `_pq_.` options excluded: the caller handles those) and returns the
/// ones to pass upstream.
pub fn client_params<'a>(params: &[(&'a str, &'a str)]) -> Result<Vec<(&'a str, &'a str)>, Refused> {
    let mut out = Vec::with_capacity(params.len());
    for &(k, v) in params {
        if matches!(k, "user" | "database" | "replication") || k.starts_with("_pq_.") {
            continue;
        }
        if k == "options" {
            check_options(v)?;
        } else {
            check(k, v)?;
        }
        out.push((k, v));
    }
    Ok(out)
}

/// The parameters to log in upstream with: the client's, then gatehouse's
/// pinned ones (which replace any the client gave under another case).
pub fn upstream_params<'a>(client: &[(&'a str, &'a str)], policy: bool, read_only: bool) -> Vec<(&'a str, &'a str)> {
    if !policy {
        return client.to_vec();
    }
    let pinned = |k: &str| {
        PINNED.iter().any(|(p, _)| p.eq_ignore_ascii_case(k)) || (read_only && READ_ONLY.0.eq_ignore_ascii_case(k))
    };
    let mut out: Vec<(&str, &str)> = client.iter().copied().filter(|(k, _)| !pinned(k)).collect();
    out.extend_from_slice(PINNED);
    if read_only {
        out.push(READ_ONLY);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_parameters_pass_and_others_are_refused() {
        let ok = client_params(&[
            ("user", "agent"),
            ("database", "db"),
            ("application_name", "psql"),
            ("DateStyle", "ISO, MDY"),
            ("client_encoding", "utf-8"),
            (
                "options",
                "-c search_path=app  -cstatement_timeout=5s --lock-timeout=1s",
            ),
        ])
        .unwrap();
        assert_eq!(ok.len(), 4);
        for bad in [
            ("role", "postgres"),
            ("session_authorization", "postgres"),
            ("default_transaction_read_only", "off"),
            ("session_replication_role", "replica"),
            ("client_encoding", "SJIS"),
            ("Client_Encoding", "BIG5"),
            ("standard_conforming_strings", "off"),
            ("options", "-c standard_conforming_strings=off"),
            ("options", "-c default_transaction_read_only=off"),
            ("options", "--role=postgres"),
            ("options", "-c search_path=x -c\\ role=postgres"),
            (
                "options",
                "-c application_name=x\x0b-c\x0bsession_replication_role=replica",
            ),
            ("options", "-c application_name=x\x0c--role=postgres"),
            ("options", "-B 100"),
            ("options", "-c"),
            ("options", "-c nothing"),
        ] {
            assert!(client_params(&[bad]).is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn options_split_like_the_server() {
        assert_eq!(split_options("  -c  a=b\\ c -cd=e "), vec!["-c", "a=b c", "-cd=e"]);
        assert_eq!(split_options("a\\\\b"), vec!["a\\b"]);
    }

    #[test]
    fn gatehouse_pins_its_own_values_under_a_policy() {
        let client = [("application_name", "x"), ("CLIENT_ENCODING", "unicode")];
        let up = upstream_params(&client, true, true);
        assert!(up.contains(&("client_encoding", "UTF8")));
        assert!(up.contains(&("default_transaction_read_only", "on")));
        assert!(!up.iter().any(|(k, _)| *k == "CLIENT_ENCODING"));
        assert_eq!(upstream_params(&client, false, false), client.to_vec());
    }
}
