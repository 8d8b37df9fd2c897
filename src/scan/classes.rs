//! Every class and escape of every rule, read alone by both of its readers
//! and compared byte for byte, each time an engine is built.
//!
//! A class is where one text is most easily read two ways: PCRE (and so
//! Hyperscan) takes `[]-a]` as a range from `]` to `a`, the regex crate as
//! `]`, `-` and `a`. The examples check (`examples`) tries three bytes of
//! each class, which both readings may hold; this check tries all 256.
//! Each distinct text (a bracketed class, `\d`, `\x41`, `\t`) is read with
//! and without `(?i)`, so that whichever flags are in force where it
//! stands, the two readers agree on every byte it matches. A class the
//! regex crate reads wider than Hyperscan would let the bytes between
//! through unmasked; one Hyperscan reads wider only costs hits, but is
//! refused too: a rule should mean one thing.

use super::rules::Rule;
use hyperscan::prelude::*;
use regex_syntax::ast::{self, Ast, LiteralKind};
use regex_syntax::hir::{Class, HirKind};
use std::collections::BTreeMap;

/// A class or escape read differently: the rule, and what differs.
#[derive(Debug)]
pub struct Misread {
    pub rule: usize,
    pub reason: String,
}

/// The flag prefixes each text is read under.
const FLAGS: [&str; 2] = ["", "(?i)"];

/// Checks every class and escape of `rules` (see the module's notes).
pub fn check(rules: &[Rule]) -> Result<(), Misread> {
    // Each distinct text, with the first rule that has it.
    let mut texts: BTreeMap<String, usize> = BTreeMap::new();
    for (k, r) in rules.iter().enumerate() {
        let parsed = ast::parse::Parser::new().parse(&r.pattern).map_err(|e| Misread {
            rule: k,
            reason: e.to_string(),
        })?;
        let mut found = Vec::new();
        single_byte_items(&r.pattern, &parsed, &mut found);
        for t in found {
            texts.entry(t.to_string()).or_insert(k);
        }
    }
    let read: Vec<(String, usize)> = texts
        .into_iter()
        .flat_map(|(t, k)| FLAGS.map(|f| (format!("{f}{t}"), k)))
        .collect();
    if read.is_empty() {
        return Ok(()); // nothing but plain characters (Hyperscan compiles no empty set)
    }
    let mut regex_reads = Vec::with_capacity(read.len());
    for (text, k) in &read {
        let members = regex_members(text).map_err(|reason| Misread { rule: *k, reason })?;
        regex_reads.push(members);
    }
    let hs_reads = hyperscan_members(&read)?;
    for (((text, k), re), hs) in read.iter().zip(&regex_reads).zip(&hs_reads) {
        // A byte Hyperscan misses first: that is the one that leaks.
        let missed = (0..=255u8).find(|&b| re[b as usize] && !hs[b as usize]);
        if let Some(b) = missed.or_else(|| (0..=255u8).find(|&b| re[b as usize] != hs[b as usize])) {
            let (wider, narrower) = if re[b as usize] {
                ("the regex that confirms", "Hyperscan")
            } else {
                ("Hyperscan", "the regex that confirms")
            };
            return Err(Misread {
                rule: *k,
                reason: format!(
                    "`{text}` matches byte 0x{b:02x} to {wider} but not to {narrower}: the two read it differently (escape `]` and `-` inside a class, or list its members plainly)"
                ),
            });
        }
    }
    Ok(())
}

/// The texts of `a`'s items that match one byte and are not a plain
/// character: bracketed classes, `\d`-style classes, escapes.
fn single_byte_items<'p>(pattern: &'p str, a: &Ast, out: &mut Vec<&'p str>) {
    let text = |span: &ast::Span| pattern.get(span.start.offset..span.end.offset).unwrap_or("");
    match a {
        Ast::ClassBracketed(c) => out.push(text(&c.span)),
        Ast::ClassPerl(c) => out.push(text(&c.span)),
        Ast::ClassUnicode(c) => out.push(text(&c.span)),
        Ast::Literal(l) if l.kind != LiteralKind::Verbatim => out.push(text(&l.span)),
        Ast::Repetition(r) => single_byte_items(pattern, &r.ast, out),
        Ast::Group(g) => single_byte_items(pattern, &g.ast, out),
        Ast::Alternation(x) => x.asts.iter().for_each(|a| single_byte_items(pattern, a, out)),
        Ast::Concat(x) => x.asts.iter().for_each(|a| single_byte_items(pattern, a, out)),
        _ => {}
    }
}

/// The bytes the regex crate reads `text` as matching.
fn regex_members(text: &str) -> Result<[bool; 256], String> {
    let hir = super::rules::parse(text)?;
    let mut members = [false; 256];
    match hir.kind() {
        HirKind::Literal(l) if l.0.len() == 1 => members[l.0[0] as usize] = true,
        HirKind::Class(Class::Bytes(c)) => {
            for r in c.iter() {
                (r.start()..=r.end()).for_each(|b| members[b as usize] = true);
            }
        }
        _ => {
            return Err(format!(
                "`{text}` is not read as one byte by the regex crate (write a byte as \\xNN: `\\x{{80}}` and above are characters to it, UTF-8 encoded)"
            ))
        }
    }
    Ok(members)
}

/// The bytes Hyperscan reads each text as matching: all compiled into one
/// database, scanned over the 256 bytes once.
fn hyperscan_members(read: &[(String, usize)]) -> Result<Vec<[bool; 256]>, Misread> {
    let mut patterns = Vec::with_capacity(read.len());
    for (id, (text, k)) in read.iter().enumerate() {
        let mut p = Pattern::new(text.clone()).map_err(|e| Misread {
            rule: *k,
            reason: format!("Hyperscan cannot read `{text}`: {e}"),
        })?;
        p.id = Some(id);
        patterns.push(p);
    }
    let db: BlockDatabase = match Patterns::from(patterns).build() {
        Ok(db) => db,
        Err(e) => {
            // Name the text at fault.
            let at = read.iter().position(|(text, _)| {
                Pattern::new(text.clone())
                    .and_then(|p| p.build::<hyperscan::Block>())
                    .is_err()
            });
            let (text, k) = at.map_or(("", 0), |i| (read[i].0.as_str(), read[i].1));
            return Err(Misread {
                rule: k,
                reason: format!("Hyperscan cannot read `{text}` alone: {e}"),
            });
        }
    };
    let scratch = db.alloc_scratch().map_err(|e| Misread {
        rule: 0,
        reason: format!("no scratch to check classes with: {e}"),
    })?;
    let all: Vec<u8> = (0..=255u8).collect();
    let mut members = vec![[false; 256]; read.len()];
    db.scan(&all, &scratch, |id: u32, _from: u64, to: u64, _flags: u32| {
        if let (Some(m), Some(at)) = (members.get_mut(id as usize), (to as usize).checked_sub(1)) {
            m[at] = true;
        }
        Matching::Continue
    })
    .map_err(|e| Misread {
        rule: 0,
        reason: format!("classes could not be checked: {e}"),
    })?;
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str) -> Rule {
        Rule {
            id: "r".into(),
            name: "r".into(),
            pattern: pattern.into(),
            keywords: vec![],
            entropy: None,
            validator: None,
            mask: Default::default(),
            group: None,
            prefilter: None,
        }
    }

    #[test]
    fn a_leading_bracket_or_dash_before_a_dash_is_refused() {
        // PCRE reads a range from `]` or `-`; the regex crate plain
        // characters.
        for (pattern, byte) in [
            (r"\b(tok_[--a-z0-9]{16,40})\b", "0x62"),
            (r"(?i)\bpassword\s*[:=]\s*([^]-~\s]{8,64})", "0x5e"),
            (r"tok[]-a-z]", "0x62"),
            (r"tok[--\x80-\xff]", "0x81"),
        ] {
            let e = check(&[rule("ok_[a-z]"), rule(pattern)]).expect_err(pattern);
            assert_eq!(e.rule, 1);
            assert!(e.reason.contains(byte), "{pattern}: {e:?}");
        }
    }

    #[test]
    fn rules_without_a_class_or_escape_and_no_rules_at_all_are_checked() {
        check(&[]).unwrap();
        check(&[rule("tok_secret"), rule("(?s)tok:.{8,40}")]).unwrap();
        crate::scan::Engine::new(&[], [0; 32]).unwrap();
        crate::scan::Engine::new(&[rule("tok_secret"), rule("(?s)tok:.{8,40}")], [0; 32]).unwrap();
    }

    #[test]
    fn an_engine_with_a_misread_class_is_refused() {
        let mut r = rule(r"\b(tok_[--a-z0-9]{16,40})\b");
        r.id = "dash".into();
        let e = crate::scan::Engine::new(&[r], [0; 32]).err().expect("refused");
        assert!(
            e.to_string().starts_with("rule dash: `[--a-z0-9]` matches byte 0x62"),
            "{e}"
        );
    }

    #[test]
    fn every_builtin_class_reads_alike() {
        let rules = crate::scan::assemble(None, &[], vec![]).unwrap();
        check(&rules).unwrap();
        // Escapes and classes both read alike.
        check(&[rule(r"[\]\-a-z][\x41\t.][[:alpha:]\d\w\s\S\W\D][^\x00-\x1f]\%\-\.")]).unwrap();
        for p in [
            r"[\s\S]",
            r"[^\n]",
            r"\n",
            r"[$^]",
            r"[\^]",
            r"[\[\]]",
            r"\f\t\r\a",
            r"[^\W_]",
            r"[]a]",
            r"[^]a]",
            r"[a-]",
        ] {
            check(&[rule(p)]).unwrap_or_else(|e| panic!("{p}: {e:?}"));
        }
        // Every POSIX class, plain and negated, means the same to both.
        let posix = [
            "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space", "upper",
            "word", "xdigit",
        ];
        let rules: Vec<Rule> = posix
            .iter()
            .flat_map(|c| [format!("t[[:{c}:]]"), format!("t[[:^{c}:]]")])
            .map(|p| rule(&p))
            .collect();
        check(&rules).unwrap();
    }
}
