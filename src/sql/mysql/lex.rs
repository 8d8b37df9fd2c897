//! A lexer that reads text exactly as the MySQL/MariaDB server does (with
//! the settings gatehouse pins: `ANSI_QUOTES` and `NO_BACKSLASH_ESCAPES`
//! off, a client character set whose multibyte sequences never contain
//! `\`), run before `sqlparser`.
//!
//! It exists because the server and `sqlparser` disagree on comments, and a
//! comment is where a statement hides: the server executes the body of
//! `/*! … */` and `/*M! … */` (which `sqlparser` drops), reads `--x` as two
//! minus signs (not a comment), and ends `/* /* */` at the first `*/`. The
//! lexer refuses what it cannot hand on faithfully (executable and nested
//! comments, unterminated comments, strings and identifiers, NUL bytes) and
//! otherwise produces:
//!
//! - the tokens, for statement boundaries, fingerprints and the few
//!   statements `sqlparser` has no grammar for;
//! - a *clean* text for `sqlparser`, byte for byte the original with every
//!   comment replaced by spaces (line breaks kept), so that the parser sees
//!   no comment at all: a comment it still reads (`--x`, which the server
//!   reads as code) is a disagreement, and the text is refused (see
//!   [`parser_marks`]).

/// What a token is; only as fine as the classifier needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A keyword or unquoted identifier.
    Word,
    /// A backtick-quoted identifier (value without quotes, `` `` `` undoubled).
    QuotedIdent,
    /// A '…' or "…" string, or N'…' (value decoded).
    Str,
    /// X'…' (value: the hex digits).
    Hex,
    /// B'…' (value: the binary digits).
    Bit,
    /// A number, including 0x… and 0b….
    Number,
    /// `;`
    Semi,
    /// Any other character (operators, parentheses, `@`, `.`, `,` …).
    Punct,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub kind: Kind,
    /// Byte range in the original text.
    pub start: usize,
    pub end: usize,
    /// Decoded value for strings and quoted identifiers; the text itself
    /// otherwise.
    pub value: String,
}

impl Token {
    /// Whether this is the unquoted word `kw`, ignoring ASCII case.
    pub fn is_word(&self, kw: &str) -> bool {
        self.kind == Kind::Word && self.value.eq_ignore_ascii_case(kw)
    }
}

/// The lexed text.
#[derive(Debug)]
pub(super) struct Lexed {
    pub tokens: Vec<Token>,
    /// The text with comments blanked (same length and offsets).
    pub clean: String,
}

impl Lexed {
    /// The statements' tokens, split at `;` (empty statements dropped).
    pub fn statements(&self) -> Vec<&[Token]> {
        self.tokens
            .split(|t| t.kind == Kind::Semi)
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// MySQL's `my_isspace` or `my_iscntrl` for the byte after `--`; the end
/// of the text counts too (the server sees a NUL there).
fn ends_dash_dash(next: Option<u8>) -> bool {
    match next {
        None => true,
        Some(b) => b <= 0x20 || b == 0x7f,
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Lex `sql`; `Err` says why the text is refused.
pub(super) fn lex(sql: &str) -> Result<Lexed, String> {
    let b = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut clean = String::with_capacity(sql.len() + 8);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match c {
            0 => return Err(format!("NUL byte at offset {i}")),
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                clean.push(c as char);
                i += 1;
            }
            b'#' => {
                let end = line_end(b, i);
                blank(&mut clean, &sql[i..end])?;
                i = end;
            }
            b'-' if next == Some(b'-') && ends_dash_dash(b.get(i + 2).copied()) => {
                let end = line_end(b, i);
                blank(&mut clean, &sql[i..end])?;
                i = end;
            }
            b'/' if next == Some(b'*') => {
                let body = i + 2;
                // `/*M!` is MariaDB's; `m` is refused too, for safety.
                let m = matches!(b.get(body), Some(b'M' | b'm')) && b.get(body + 1) == Some(&b'!');
                if b.get(body) == Some(&b'!') || m {
                    return Err(format!(
                        "executable comment at offset {i}: the server runs its content, which is not classified"
                    ));
                }
                let Some(close) = find(b, body, b"*/") else {
                    return Err(format!("unterminated comment at offset {i}"));
                };
                if find(&b[..close], body, b"/*").is_some() {
                    return Err(format!(
                        "nested comment at offset {i}: the server ends a comment at the first */"
                    ));
                }
                let end = close + 2;
                // MySQL 8 reads `/*+ … */` after a verb as optimizer hints,
                // and SET_VAR sets a session variable for the statement.
                if b.get(body) == Some(&b'+') && sql[body..close].to_ascii_lowercase().contains("set_var") {
                    return Err(format!(
                        "SET_VAR hint at offset {i}: it sets variables the classifier does not see"
                    ));
                }
                blank(&mut clean, &sql[i..end])?;
                i = end;
            }
            b'\'' | b'"' => {
                let (end, value) = string(sql, i)?;
                push(&mut tokens, &mut clean, sql, Kind::Str, i, end, value);
                i = end;
            }
            b'`' => {
                let (end, value) = backtick(sql, i)?;
                push(&mut tokens, &mut clean, sql, Kind::QuotedIdent, i, end, value);
                i = end;
            }
            b';' => {
                push(&mut tokens, &mut clean, sql, Kind::Semi, i, i + 1, ";".into());
                i += 1;
            }
            // X'…', B'…', N'…' (a prefix letter directly before a quote).
            b'x' | b'X' | b'b' | b'B' | b'n' | b'N' if next == Some(b'\'') => {
                let (end, value) = string(sql, i + 1)?;
                let kind = match c.to_ascii_lowercase() {
                    b'x' => Kind::Hex,
                    b'b' => Kind::Bit,
                    _ => Kind::Str,
                };
                push(&mut tokens, &mut clean, sql, kind, i, end, value);
                i = end;
            }
            _ if c.is_ascii_digit() => {
                let mut end = i;
                while end < b.len() && (is_word_byte(b[end]) || b[end] == b'.') {
                    end += 1;
                }
                let kind = if sql[i..end].bytes().all(|x| x.is_ascii_digit() || x == b'.')
                    || sql[i..end].starts_with("0x")
                    || sql[i..end].starts_with("0b")
                {
                    Kind::Number
                } else {
                    // `1e5`, or an identifier that starts with digits (`1abc`).
                    Kind::Word
                };
                let v = sql[i..end].to_string();
                push(&mut tokens, &mut clean, sql, kind, i, end, v);
                i = end;
            }
            _ if is_word_byte(c) => {
                let mut end = i;
                while end < b.len() && is_word_byte(b[end]) {
                    end += 1;
                }
                // The server reads a non-ASCII space as part of a name; the
                // parser as a space between two.
                if sql[i..end].chars().any(char::is_whitespace) {
                    return Err(format!(
                        "non-ASCII space at offset {i}: the server reads it as part of a name"
                    ));
                }
                let v = sql[i..end].to_string();
                push(&mut tokens, &mut clean, sql, Kind::Word, i, end, v);
                i = end;
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or('\u{fffd}');
                let end = i + ch.len_utf8();
                tokens.push(Token {
                    kind: Kind::Punct,
                    start: i,
                    end,
                    value: ch.to_string(),
                });
                clean.push(ch);
                i = end;
            }
        }
    }
    Ok(Lexed { tokens, clean })
}

fn push(tokens: &mut Vec<Token>, clean: &mut String, sql: &str, kind: Kind, start: usize, end: usize, value: String) {
    clean.push_str(&sql[start..end]);
    tokens.push(Token {
        kind,
        start,
        end,
        value,
    });
}

/// Comments become spaces, byte for byte, keeping line breaks. A NUL ends
/// a line comment early in the server's lexer, and what it then reads is
/// not certain: refused.
fn blank(clean: &mut String, text: &str) -> Result<(), String> {
    if text.contains('\0') {
        return Err("NUL byte in a comment".into());
    }
    for b in text.bytes() {
        clean.push(if b == b'\n' { '\n' } else { ' ' });
    }
    Ok(())
}

fn line_end(b: &[u8], from: usize) -> usize {
    memchr::memchr(b'\n', &b[from..]).map_or(b.len(), |p| from + p)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// A '…' or "…" string at `start` (the quote): its end and decoded value.
/// Backslash escapes the next character; a doubled quote is one quote.
/// `\%` and `\_` keep their backslash (the server keeps it for LIKE).
fn string(sql: &str, start: usize) -> Result<(usize, String), String> {
    let b = sql.as_bytes();
    let quote = b[start];
    let mut value = String::new();
    let mut i = start + 1;
    loop {
        let Some(ch) = sql.get(i..).and_then(|s| s.chars().next()) else {
            return Err(format!("unterminated string at offset {start}"));
        };
        let len = ch.len_utf8();
        if ch == '\\' {
            let Some(e) = sql.get(i + 1..).and_then(|s| s.chars().next()) else {
                return Err(format!("unterminated string at offset {start}"));
            };
            match e {
                '0' => value.push('\0'),
                'b' => value.push('\u{8}'),
                'n' => value.push('\n'),
                'r' => value.push('\r'),
                't' => value.push('\t'),
                'Z' => value.push('\u{1a}'),
                '%' | '_' => {
                    value.push('\\');
                    value.push(e);
                }
                other => value.push(other),
            }
            i += 1 + e.len_utf8();
        } else if ch as u32 == quote as u32 {
            if b.get(i + 1) == Some(&quote) {
                value.push(ch);
                i += 2;
            } else {
                return Ok((i + 1, value));
            }
        } else {
            value.push(ch);
            i += len;
        }
    }
}

/// A backtick identifier at `start`: doubled backticks, no escapes.
fn backtick(sql: &str, start: usize) -> Result<(usize, String), String> {
    let b = sql.as_bytes();
    let mut value = String::new();
    let mut i = start + 1;
    loop {
        let Some(ch) = sql.get(i..).and_then(|s| s.chars().next()) else {
            return Err(format!("unterminated quoted identifier at offset {start}"));
        };
        if ch == '`' {
            if b.get(i + 1) == Some(&b'`') {
                value.push('`');
                i += 2;
                continue;
            }
            return Ok((i + 1, value));
        }
        value.push(ch);
        i += ch.len_utf8();
    }
}

/// What both lexers must agree on: statement separators, string values and
/// quoted identifiers, in order.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Mark {
    Semi,
    Str(String),
    Hex(String),
    Bit(String),
    Ident(String),
}

/// This lexer's marks.
pub(super) fn marks(tokens: &[Token]) -> Vec<Mark> {
    tokens
        .iter()
        .filter_map(|t| match t.kind {
            Kind::Semi => Some(Mark::Semi),
            Kind::Str => Some(Mark::Str(t.value.clone())),
            Kind::Hex => Some(Mark::Hex(t.value.clone())),
            Kind::Bit => Some(Mark::Bit(t.value.clone())),
            Kind::QuotedIdent => Some(Mark::Ident(t.value.clone())),
            _ => None,
        })
        .collect()
}

/// `sqlparser`'s marks for the clean text; `Err` when it reads a kind of
/// literal or comment the server does not have here.
pub(super) fn parser_marks(clean: &str) -> Result<Vec<Mark>, String> {
    use sqlparser::dialect::MySqlDialect;
    use sqlparser::tokenizer::{Token as T, Tokenizer, Whitespace};
    let tokens = Tokenizer::new(&MySqlDialect {}, clean)
        .tokenize()
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for t in tokens {
        match t {
            T::SemiColon => out.push(Mark::Semi),
            T::SingleQuotedString(s) | T::DoubleQuotedString(s) | T::NationalStringLiteral(s) => out.push(Mark::Str(s)),
            T::HexStringLiteral(s) => out.push(Mark::Hex(s)),
            T::SingleQuotedByteStringLiteral(s) => out.push(Mark::Bit(s)),
            T::Word(w) if w.quote_style == Some('`') => out.push(Mark::Ident(w.value)),
            T::Word(w) if w.quote_style.is_some() => return Err(format!("parser read a quoted name {w}")),
            T::Whitespace(Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_)) => {
                return Err("parser read a comment the server does not".into())
            }
            T::Word(_)
            | T::Number(..)
            | T::Whitespace(_)
            | T::Char(_)
            | T::Comma
            | T::Eq
            | T::DoubleEq
            | T::Neq
            | T::Lt
            | T::Gt
            | T::LtEq
            | T::GtEq
            | T::Spaceship
            | T::Plus
            | T::Minus
            | T::Mul
            | T::Div
            | T::DuckIntDiv
            | T::Mod
            | T::StringConcat
            | T::LParen
            | T::RParen
            | T::Period
            | T::Colon
            | T::DoubleColon
            | T::Assignment
            | T::Placeholder(_)
            | T::Ampersand
            | T::Overlap
            | T::Pipe
            | T::Caret
            | T::LBrace
            | T::RBrace
            | T::LBracket
            | T::RBracket
            | T::RArrow
            | T::Sharp
            | T::Tilde
            | T::ShiftLeft
            | T::ShiftRight
            | T::ExclamationMark
            | T::DoubleExclamationMark
            | T::AtSign
            | T::Arrow
            | T::LongArrow
            | T::HashArrow
            | T::HashLongArrow
            | T::AtArrow
            | T::ArrowAt
            | T::Question
            | T::EOF => {}
            other => return Err(format!("parser read a token the server does not: {other}")),
        }
    }
    Ok(out)
}
