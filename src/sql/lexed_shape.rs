//! A text's shape found by a small lexer of our own instead of a parse, for
//! the texts that have nothing but plain tokens, and trusted only where
//! libpg_query has already agreed with it.
//!
//! A client that inlines values sends a new text with every statement;
//! finding its shape (`shape::of`, libpg_query's normalisation) costs a
//! full parse each time, most of what such a client costs the classifier.
//! This lexer finds the constants of a *plain* text in one pass and writes
//! the shape the way libpg_query does (`$1`, `$2`, … in order, everything
//! else byte for byte).
//!
//! # Why a lexer of ours cannot make a write look like a read
//!
//! It never decides anything alone. The classifier keeps the lexed shapes
//! (with the kind of each constant, below) that libpg_query *confirmed*:
//! for some text, PostgreSQL's own grammar normalised it to exactly the
//! lexer's shape. Only then are later texts with the same lexed shape and
//! kinds given that shape without a parse. They are safe to give it because
//! a plain text is lexed by PostgreSQL exactly as here:
//!
//! - Plain means: ASCII letters, digits, `_`, spaces, tabs, newlines and
//!   the punctuation below, outside quotes; single-quoted strings without a
//!   backslash or NUL byte; double-quoted identifiers without a NUL byte;
//!   unsigned decimal numbers (`42`, `4.2`). Anything else, and so every
//!   lexical corner (comments, `$` and dollar quoting, `E''`/`U&''`/`B''`/
//!   `X''`/`N''` prefixes, a quote right after a word, exponents, `0x`,
//!   `1_000`, `.5`, `1.`, non-ASCII outside quotes, backslashes), makes the
//!   lexer give up and the text is normalised by libpg_query as before.
//! - On such text each constant's bounds are set by characters outside it
//!   (the quote that opens a string, the byte before and after a number),
//!   and inside it only by its own bytes, the way PostgreSQL's scanner reads
//!   them (`''` is a quote inside a string; nothing else is special with
//!   `standard_conforming_strings` on, which gatehouse pins).
//! - Two plain texts with the same lexed shape are therefore the same
//!   tokens but for the constants' values; the kinds make the constants'
//!   token types the same too (a string; an integer PostgreSQL reads as
//!   `int4`; a larger one or a decimal, which it reads as numeric). The
//!   grammar sees the same token stream, builds the same tree but for the
//!   constants' values, and libpg_query's normalisation of the one is that
//!   of the other.
//!
//! What is shared beyond the shape (a classification) is decided by the
//! shape's own checks (`shape`), exactly as for a shape from libpg_query.
//!
//! Where libpg_query reads a token differently, the lexed shape is never
//! confirmed and such texts keep paying for the normalising parse: `NULL`,
//! `true` and `false` (constants to libpg_query, words here), a negative
//! constant (`= -1` is one constant to libpg_query), integers it keeps as
//! written (`varchar(10)`, `float(24)`, `FETCH 5`, `GROUP BY 1`), and two
//! strings joined across a newline.

/// A plain text's shape and the key under which a confirmation is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LexedShape {
    /// The text with each constant replaced by `$1`, `$2`, …
    pub shape: String,
    /// `shape`, a NUL byte (no plain text has one), and one letter per
    /// constant: `s` a string, `i` an integer that fits `int4`, `n` any
    /// other number (PostgreSQL reads it as numeric).
    pub key: String,
}

/// The shape of `sql` when it is plain (see the module docs), else `None`.
pub(super) fn lex(sql: &str) -> Option<LexedShape> {
    let b = sql.as_bytes();
    let mut shape = String::with_capacity(sql.len() + 8);
    let mut kinds = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' => {
                // A quote right after a word or `&` starts a prefixed
                // string (`E'…'`, `U&'…'`, `x'…'`) or is not plain anyway.
                if i > 0 && (is_word_byte(b[i - 1]) || b[i - 1] == b'&') {
                    return None;
                }
                let end = quoted_end(b, i, b'\'', true)?;
                placeholder(&mut shape, &sql[copied..i], kinds.len() + 1);
                kinds.push('s');
                copied = end;
                i = end;
            }
            b'"' => {
                if i > 0 && b[i - 1] == b'&' {
                    return None;
                }
                // An identifier: kept as written.
                i = quoted_end(b, i, b'"', false)?;
            }
            b'0'..=b'9' => {
                // Words are consumed whole below, so a digit here starts a
                // number unless a `.` or a word byte is right before it.
                if i > 0 && (b[i - 1] == b'.' || is_word_byte(b[i - 1])) {
                    return None;
                }
                let mut j = i;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                let mut decimal = false;
                if b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(u8::is_ascii_digit) {
                    decimal = true;
                    j += 1;
                    while j < b.len() && b[j].is_ascii_digit() {
                        j += 1;
                    }
                }
                // `1.`, `1.5.`, `1e5`, `1_000`, `0x1f`, `12abc`: not plain
                // (PostgreSQL reads some of them as other tokens).
                if b.get(j).is_some_and(|&n| n == b'.' || is_word_byte(n)) {
                    return None;
                }
                placeholder(&mut shape, &sql[copied..i], kinds.len() + 1);
                kinds.push(if decimal {
                    'n'
                } else if fits_int4(&sql[i..j]) {
                    'i'
                } else {
                    'n'
                });
                copied = j;
                i = j;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                i += 1;
                while i < b.len() && is_word_byte(b[i]) {
                    i += 1;
                }
            }
            // Comments: what they hide is not plain.
            b'-' if b.get(i + 1) == Some(&b'-') => return None,
            b'/' if b.get(i + 1) == Some(&b'*') => return None,
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' | b')' | b',' | b';' | b'.' | b'=' | b'<' | b'>' | b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'~'
            | b'!' | b'@' | b'#' | b'&' | b'|' | b'?' | b':' | b'[' | b']' => i += 1,
            // `$` (parameters, dollar quotes), `\`, `` ` ``, `{`, `}`,
            // control bytes, non-ASCII: not plain.
            _ => return None,
        }
    }
    shape.push_str(&sql[copied..]);
    let mut key = String::with_capacity(shape.len() + 1 + kinds.len());
    key.push_str(&shape);
    key.push('\0');
    key.push_str(&kinds);
    Some(LexedShape { shape, key })
}

/// Bytes that continue a word (keyword or identifier) in plain text.
fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The end (one past the closing quote) of the quoted token opened at
/// `open`, with a doubled quote standing for one inside it; `None` when it
/// is not closed or holds a NUL byte (or a backslash, for strings).
fn quoted_end(b: &[u8], open: usize, quote: u8, string: bool) -> Option<usize> {
    let mut j = open + 1;
    loop {
        match *b.get(j)? {
            q if q == quote => {
                if b.get(j + 1) == Some(&quote) {
                    j += 2;
                } else {
                    return Some(j + 1);
                }
            }
            0 => return None,
            b'\\' if string => return None,
            _ => j += 1,
        }
    }
}

/// Whether PostgreSQL reads these decimal digits as an `int4` constant (it
/// reads larger integers as numeric).
fn fits_int4(digits: &str) -> bool {
    let significant = digits.trim_start_matches('0');
    significant.len() <= 10 && significant.parse::<u64>().map_or(true, |v| v <= i32::MAX as u64)
}

fn placeholder(shape: &mut String, before: &str, n: usize) {
    use std::fmt::Write as _;
    shape.push_str(before);
    let _ = write!(shape, "${n}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(sql: &str) -> Option<(String, String)> {
        lex(sql).map(|l| {
            let kinds = l.key.rsplit('\0').next().unwrap_or("").to_string();
            (l.shape, kinds)
        })
    }

    #[test]
    fn plain_texts_are_lexed_like_libpg_query_normalises_them() {
        let cases = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 42",
            "select * from t where a = 'x' and b = 1.5 and c = 3000000000",
            "INSERT INTO \"T 1\" (a, \"b\"\"c\") VALUES (1, 'it''s', 'a;b -- c /* d */')",
            "SELECT a.b, t1.c2 FROM s.t1 t1 WHERE t1.x IN (1, 2, 3) LIMIT 10;",
            "UPDATE t SET a = a + 1 WHERE id = 7; SELECT 'ünïcødé'",
            "SELECT interval '1 hour', date '2024-01-01', 'x'::text",
            "SELECT ''''",
            "SELECT 1",
            "SELECT a FROM t",
            "SELECT a>=1 AND b<>2 OR c!=3",
            "SELECT 007, 2147483647, 2147483648",
        ];
        for sql in cases {
            let lexed = lex(sql).unwrap_or_else(|| panic!("not plain: {sql}"));
            let by_parser = crate::sql::shape::of(sql).expect(sql);
            assert_eq!(lexed.shape, by_parser, "{sql}");
        }
    }

    #[test]
    fn constants_get_their_kinds() {
        assert_eq!(
            shape("SELECT 'a', 1, 2147483647, 2147483648, 0000000000001, 1.0"),
            Some(("SELECT $1, $2, $3, $4, $5, $6".into(), "siinin".into()))
        );
        assert_eq!(shape("SELECT a FROM t"), Some(("SELECT a FROM t".into(), "".into())));
        assert_eq!(shape("SELECT t1.c2"), Some(("SELECT t1.c2".into(), "".into())));
    }

    #[test]
    fn lexical_corners_are_not_plain() {
        for sql in [
            "SELECT 1 -- c",
            "SELECT /* c */ 1",
            "SELECT 1 /* c",
            "SELECT E'\\''",
            "SELECT e'x'",
            "SELECT U&'d\\0061t'",
            "SELECT U&\"d\"",
            "SELECT B'101', X'1f', N'x'",
            "SELECT 'a\\'",
            "SELECT 'unterminated",
            "SELECT \"unterminated",
            "SELECT $1",
            "SELECT $$DELETE FROM t$$",
            "SELECT $q$x$q$",
            "SELECT a$1 FROM t",
            "SELECT 1e5",
            "SELECT 1.",
            "SELECT .5",
            "SELECT 1.5.5",
            "SELECT 1..2",
            "SELECT 0x1F",
            "SELECT 1_000",
            "SELECT 12abc",
            "SELECT t.1",
            "SELECT 5'x'",
            "SELECT `x`",
            "SELECT 1\u{b}",
            "SELECT 1\u{c}",
            "SELECT 'a\0'",
            "SELECT ä FROM t",
            "SELECT {1}",
            "SELECT 1 \\gexec",
        ] {
            assert_eq!(lex(sql), None, "{sql:?}");
        }
    }
}
