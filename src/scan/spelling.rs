//! A rule's pattern has two readers: Hyperscan, which reads it as PCRE
//! does and finds where a secret may be, and the regex crate, which
//! confirms each such place and finds the secret's span. A spelling the two
//! read differently is a hole: where Hyperscan reads plain characters and
//! the regex crate reads syntax (`{ 13}`, `[[a-z]]`, `\<`), Hyperscan never
//! reports the secret that the regex, the one a rule's author tests
//! against, would find, and every such secret leaves unmasked.
//!
//! So a pattern may use only spellings both read alike, and anything else
//! is refused with the reason when the rules load. What this list misses
//! is looked for when an engine is built: every class and escape is
//! compared byte for byte as both read it (`classes`, exact), and each
//! rule's first pass must find examples of its pattern (`examples`, a
//! sample of its ways, not a proof).

use regex_syntax::ast::{
    self, AssertionKind, Ast, ClassSet, ClassSetItem, Flag, FlagsItemKind, GroupKind, HexLiteralKind, LiteralKind,
    SpecialLiteralKind,
};

/// Refuses what Hyperscan and the regex crate read differently in
/// `pattern`, naming the first such spelling.
pub fn check(pattern: &str) -> Result<(), String> {
    let parsed = ast::parse::Parser::new().parse(pattern).map_err(|e| e.to_string())?;
    check_ast(pattern, &parsed)
}

/// The pattern's text at `span`, to name a refused spelling.
fn text<'p>(pattern: &'p str, span: &ast::Span) -> &'p str {
    pattern.get(span.start.offset..span.end.offset).unwrap_or("")
}

fn check_ast(pattern: &str, a: &Ast) -> Result<(), String> {
    let at = |span: &ast::Span| text(pattern, span);
    match a {
        Ast::Empty(_) | Ast::Dot(_) | Ast::ClassPerl(_) => Ok(()),
        Ast::Flags(f) => check_flags(&f.flags),
        Ast::Literal(l) => check_literal(l).map_err(|why| format!("`{}`: {why}", at(&l.span))),
        Ast::Assertion(x) => check_assertion(x.kind.clone()).map_err(|why| format!("`{}`: {why}", at(&x.span))),
        Ast::ClassUnicode(c) => Err(format!("`{}`: Unicode classes are not supported", at(&c.span))),
        Ast::ClassBracketed(c) => check_class_set(pattern, &c.kind),
        Ast::Repetition(r) => {
            if let ast::RepetitionKind::Range(_) = r.op.kind {
                // The regex crate skips spaces between a count's digits and
                // braces; PCRE reads `{ 13}` as five plain characters.
                let op = at(&r.op.span);
                if op.chars().any(char::is_whitespace) {
                    return Err(format!(
                        "`{op}`: a count with spaces in it is plain text to Hyperscan (write it without spaces)"
                    ));
                }
            }
            // Without UTF-8 mode Hyperscan repeats a character's last byte
            // only: `€+` is `\xE2\x82\xAC+` to it, `€€` is not found.
            if let Ast::Literal(l) = r.ast.as_ref() {
                if !l.c.is_ascii() && l.kind == LiteralKind::Verbatim {
                    return Err(format!(
                        "`{}`: Hyperscan repeats only the last byte of a non-ASCII character (write (?:{})…)",
                        at(&r.span),
                        l.c
                    ));
                }
            }
            check_ast(pattern, &r.ast)
        }
        Ast::Group(g) => {
            if let GroupKind::NonCapturing(flags) = &g.kind {
                check_flags(flags)?;
            }
            check_ast(pattern, &g.ast)
        }
        Ast::Alternation(x) => x.asts.iter().try_for_each(|a| check_ast(pattern, a)),
        Ast::Concat(x) => x.asts.iter().try_for_each(|a| check_ast(pattern, a)),
    }
}

/// Only `i`, `m` and `s` (and their negations) mean the same to both: `x`
/// differs inside classes (the regex crate skips spaces and comments
/// there), `U` and `u` are the regex crate's own, and `R` is recursion to
/// PCRE.
fn check_flags(flags: &ast::Flags) -> Result<(), String> {
    for item in &flags.items {
        match item.kind {
            FlagsItemKind::Negation
            | FlagsItemKind::Flag(Flag::CaseInsensitive | Flag::MultiLine | Flag::DotMatchesNewLine) => {}
            FlagsItemKind::Flag(f) => {
                return Err(format!(
                    "the flag {f:?} is read differently by Hyperscan; only i, m and s may be used"
                ))
            }
        }
    }
    Ok(())
}

fn check_literal(l: &ast::Literal) -> Result<(), &'static str> {
    match &l.kind {
        LiteralKind::Verbatim | LiteralKind::Meta | LiteralKind::Superfluous => Ok(()),
        LiteralKind::HexFixed(HexLiteralKind::X) | LiteralKind::HexBrace(HexLiteralKind::X) => Ok(()),
        LiteralKind::HexFixed(_) | LiteralKind::HexBrace(_) => {
            Err("\\u and \\U escapes are not PCRE's (write a byte as \\xNN)")
        }
        LiteralKind::Octal => Err("octal escapes are read as back-references by Hyperscan"),
        // PCRE's \v is any vertical space (\n, \f, \r among them), the
        // regex crate's the one byte 0x0B.
        LiteralKind::Special(SpecialLiteralKind::VerticalTab) => Err("\\v is a class to Hyperscan (write \\x0B)"),
        LiteralKind::Special(_) => Ok(()),
    }
}

fn check_assertion(kind: AssertionKind) -> Result<(), &'static str> {
    match kind {
        AssertionKind::StartLine
        | AssertionKind::EndLine
        | AssertionKind::StartText
        | AssertionKind::EndText
        | AssertionKind::WordBoundary
        | AssertionKind::NotWordBoundary => Ok(()),
        // `\<` is a plain `<` to PCRE, and `\b{start}` a `\b` then seven
        // plain characters.
        _ => Err("this word-boundary spelling is the regex crate's own (write \\b)"),
    }
}

fn check_class_set(pattern: &str, set: &ClassSet) -> Result<(), String> {
    match set {
        // `&&`, `--` and `~~` are plain characters in a PCRE class.
        ClassSet::BinaryOp(op) => Err(format!(
            "`{}`: class operations (&&, --, ~~) are plain characters to Hyperscan",
            text(pattern, &op.span)
        )),
        ClassSet::Item(item) => check_class_item(pattern, item),
    }
}

fn check_class_item(pattern: &str, item: &ClassSetItem) -> Result<(), String> {
    let at = |span: &ast::Span| text(pattern, span);
    match item {
        ClassSetItem::Empty(_) | ClassSetItem::Ascii(_) | ClassSetItem::Perl(_) => Ok(()),
        ClassSetItem::Literal(l) => check_literal(l).map_err(|why| format!("`{}`: {why}", at(&l.span))),
        ClassSetItem::Range(r) => {
            check_literal(&r.start).map_err(|why| format!("`{}`: {why}", at(&r.span)))?;
            check_literal(&r.end).map_err(|why| format!("`{}`: {why}", at(&r.span)))
        }
        ClassSetItem::Unicode(c) => Err(format!("`{}`: Unicode classes are not supported", at(&c.span))),
        // PCRE ends the class at the first `]`: `[[a]]` is the class `[[a]`
        // then a plain `]`.
        ClassSetItem::Bracketed(c) => Err(format!(
            "`{}`: a class inside a class is plain characters to Hyperscan (list its members instead)",
            at(&c.span)
        )),
        ClassSetItem::Union(u) => u.items.iter().try_for_each(|i| check_class_item(pattern, i)),
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn spellings_both_readers_share_are_accepted() {
        for ok in [
            r"\b((?:AKIA|ASIA)[A-Z0-9]{16})\b",
            r"(?i)(?:key|token)\s*[:=]\s*([a-z0-9_\-]{16,64})",
            r"(?s:.){0,40}?(?-i:x)",
            r"^[[:alnum:]]{8}[^\s'\x22]+$",
            r"[\w.\-]+@\x{41}\t\B\.",
            r"(?P<secret>[]a-]{3})",
            "clé=(?:€)+[a-z]{16}",
        ] {
            check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn spellings_hyperscan_reads_otherwise_are_refused() {
        for (bad, why) in [
            (r"tok_[a-z]{ 13}", "spaces"),
            (r"tok_[a-z]{13 }", "spaces"),
            (r"tok_[a-z]{8, 16}", "spaces"),
            (r"tok_[[a-z]]{13}", "class inside a class"),
            (r"tok_[a-z&&[^q]]{13}", "class operations"),
            (r"tok_[a-z--q]{13}", "class operations"),
            (r"\<tok_[a-z]{13}", "word-boundary"),
            (r"tok_[a-z]{13}\>", "word-boundary"),
            (r"\b{start}tok_[a-z]{13}", "word-boundary"),
            (r"tok_[a-z]{13}\b{end-half}", "word-boundary"),
            (r"(?x)tok_ [a-z]{13}", "flag"),
            (r"(?U)tok_[a-z]{13}", "flag"),
            (r"(?u:tok_)[a-z]{13}", "flag"),
            (r"(?R)tok_[a-z]{13}$", "flag"),
            (r"tok\v[a-z]{13}", "\\v"),
            (r"tok[\v][a-z]{13}", "\\v"),
            (r"tok\u005F[a-z]{13}", "\\u"),
            (r"tok[\U0000005F-\U00000060][a-z]{13}", "\\u"),
            ("tok_€+[a-z0-9]{16}", "last byte"),
            ("clé=é{1,3}[a-z]{16}", "last byte"),
        ] {
            let e = check(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_misread_spelling_is_refused_from_a_file_and_from_a_table() {
        use crate::scan::{Engine, RuleFile};
        let file = "[[rule]]\nid = \"tok\"\nname = \"t\"\npattern = '''\\b(tok_[a-z0-9]{ 24})\\b'''\n";
        let e = RuleFile::parse(file, "rules.toml").unwrap_err();
        assert_eq!((e.id.as_str(), e.line), ("tok", 2));
        assert!(e.message.contains("{ 24}"), "{e}");
        // A `[[scan.rule]]` table does not pass through a file's checks.
        let mut rule = RuleFile::parse(&file.replace("{ 24}", "{24}"), "t")
            .unwrap()
            .rules
            .remove(0);
        rule.pattern = r"\b(tok_[a-z0-9]{24})\>".into();
        let e = Engine::new(&[rule], [0; 32]).err().expect("refused");
        assert!(
            e.to_string().contains("rule tok") && e.to_string().contains(r"\>"),
            "{e}"
        );
    }
}
