//! `KILL [CONNECTION | QUERY] id` as a client sends it: the id is one
//! gatehouse gave (its greeting's connection id), not the server's, so
//! gatehouse does it itself, for sessions of the same identity only.

/// What a `KILL` statement asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub id: u32,
    /// `KILL QUERY`: stop the running statement; otherwise end the session.
    pub query: bool,
}

/// Reads `KILL [HARD | SOFT] [CONNECTION | QUERY] [ID] n` (any case, a
/// trailing `;`); anything else (comments, expressions, user names) is not
/// read here and goes to the classifier, which calls it administration.
pub fn parse(sql: &str) -> Option<Kill> {
    let text = sql.trim().trim_end_matches(';').trim_end();
    let mut words = text.split_ascii_whitespace().peekable();
    if !words.next()?.eq_ignore_ascii_case("kill") {
        return None;
    }
    if words
        .peek()
        .is_some_and(|w| w.eq_ignore_ascii_case("hard") || w.eq_ignore_ascii_case("soft"))
    {
        words.next();
    }
    let mut query = false;
    if let Some(w) = words.peek() {
        if w.eq_ignore_ascii_case("query") {
            query = true;
            words.next();
        } else if w.eq_ignore_ascii_case("connection") {
            words.next();
        }
    }
    if words.peek().is_some_and(|w| w.eq_ignore_ascii_case("id")) {
        words.next();
    }
    let id = words.next()?;
    if words.next().is_some() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Kill {
        id: id.parse().ok()?,
        query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_clients_send() {
        assert_eq!(parse("KILL QUERY 42"), Some(Kill { id: 42, query: true }));
        assert_eq!(parse("kill 7;"), Some(Kill { id: 7, query: false }));
        assert_eq!(parse(" KILL  HARD  CONNECTION 9 "), Some(Kill { id: 9, query: false }));
        assert_eq!(parse("KILL QUERY ID 3"), Some(Kill { id: 3, query: true }));
        for other in [
            "KILL USER bob",
            "KILL QUERY 1; DROP TABLE t",
            "KILL /* x */ 5",
            "KILL 5 + 1",
            "KILL",
            "SELECT 1",
            "KILL QUERY 99999999999",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }
}
