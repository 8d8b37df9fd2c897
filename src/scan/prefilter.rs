//! The pattern Hyperscan looks for on a rule's behalf: the rule cut short.
//!
//! Every Hyperscan hit is confirmed by the rule's full regex on its value
//! (`confirm`), so Hyperscan only has to say where a match may be. What
//! costs it most are the long bounded repetitions that end most rules'
//! secrets (`[A-Za-z0-9_+/=~-]{16,200}`) and the look-arounds after them:
//! it tracks every position such a repetition may be at. A prefix of the
//! rule that stops at the repetition's minimum (`{16}`, and at most 16)
//! matches wherever the rule does, ending a bounded number of bytes
//! earlier, and costs a quarter as much on data full of keywords.
//!
//! A rule is cut only when what is cut off is bounded (at most
//! [`MAX_SLACK`] bytes): a hit is confirmed on a window reaching
//! [`WINDOW`](super::engine::WINDOW) bytes past it, and the rule's whole
//! match must lie inside.

use regex_syntax::ast::{self, Ast, GroupKind, RepetitionKind, RepetitionRange};

/// The most bytes a rule's match may reach past its cut pattern's.
pub const MAX_SLACK: usize = 2048;

/// Repetitions kept of the secret's last repeated item: enough that the
/// cut pattern is rarely met where the rule is not, few enough to be cheap
/// (`{40}` costs Hyperscan twice what `{16}` does).
const MAX_KEPT: u32 = 16;

/// The prefix of `pattern` to hand Hyperscan, when the rule can be cut:
/// the pattern up to its secret group (capture `group`, a part of the
/// top-level sequence), with the group's last repetition at its minimum
/// and what follows the group dropped. `None` keeps the pattern whole.
pub fn cut(pattern: &str, group: usize) -> Option<String> {
    if group == 0 {
        return None;
    }
    if sets_flag_x(pattern) {
        return None; // whitespace is syntax there: parts are not read alone
    }
    let parsed = ast::parse::Parser::new().parse(pattern).ok()?;
    let Ast::Concat(top) = &parsed else { return None };
    let g = top.asts.iter().find_map(|a| match a {
        Ast::Group(g) if capture_index(&g.kind) == Some(group as u32) => Some(g),
        _ => None,
    })?;
    // The group's last repetition (the group itself, or the last part of
    // the sequence inside it).
    let last = match g.ast.as_ref() {
        Ast::Repetition(r) => r,
        Ast::Concat(c) => match c.asts.last()? {
            Ast::Repetition(r) => r,
            _ => return None,
        },
        _ => return None,
    };
    let item = &pattern[last.ast.span().start.offset..last.ast.span().end.offset];
    let suffix = &pattern[g.span.end.offset..];
    // How much longer than the cut pattern's match the rule's may be.
    let slack = |dropped_items: u32| -> Option<usize> {
        let item_max = max_len(item)?;
        let total = item_max
            .checked_mul(dropped_items as usize)?
            .checked_add(max_len(suffix)?)?;
        (total <= MAX_SLACK).then_some(total)
    };
    let kept = match &last.op.kind {
        RepetitionKind::ZeroOrOne => {
            slack(1)?;
            0
        }
        RepetitionKind::Range(RepetitionRange::Exactly(n)) => {
            let kept = (*n).min(MAX_KEPT);
            slack(n - kept)?;
            if kept == *n {
                return without_suffix(pattern, g);
            }
            kept
        }
        RepetitionKind::Range(RepetitionRange::Bounded(m, n)) => {
            let kept = (*m).min(MAX_KEPT);
            slack(n.checked_sub(kept)?)?;
            kept
        }
        // Unbounded: the rule's match may reach past any window.
        RepetitionKind::ZeroOrMore | RepetitionKind::OneOrMore | RepetitionKind::Range(RepetitionRange::AtLeast(_)) => {
            return None
        }
    };
    let repeated = if kept == 0 {
        String::new()
    } else {
        format!("(?:{item}){{{kept}}}")
    };
    let (rs, re) = (last.span.start.offset, last.span.end.offset);
    let mut out = String::with_capacity(pattern.len());
    out.push_str(&pattern[..rs]);
    out.push_str(&repeated);
    out.push_str(&pattern[re..g.span.end.offset]);
    Some(out)
}

/// The pattern up to the end of its group (a group of fixed repetitions
/// keeps its text; only what follows is dropped).
fn without_suffix(pattern: &str, g: &ast::Group) -> Option<String> {
    let end = g.span.end.offset;
    (end < pattern.len()).then(|| pattern[..end].to_string())
}

/// Whether any flag group (`(?ix)`, `(?x:…)`, `(?-x)`) names `x`; a
/// literal `(?` that is not one only keeps the pattern whole.
fn sets_flag_x(pattern: &str) -> bool {
    pattern.match_indices("(?").any(|(at, _)| {
        pattern[at + 2..]
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic() || *b == b'-')
            .any(|b| b == b'x')
    })
}

/// The longest match of a part of a pattern, read alone.
fn max_len(part: &str) -> Option<usize> {
    super::rules::parse(part).ok()?.properties().maximum_len()
}

fn capture_index(kind: &GroupKind) -> Option<u32> {
    match kind {
        GroupKind::CaptureIndex(i) => Some(*i),
        GroupKind::CaptureName { name, .. } => Some(name.index),
        GroupKind::NonCapturing(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::confirm::tests::backtracking;

    #[test]
    fn cuts_the_secrets_last_repetition_and_what_follows() {
        assert_eq!(
            cut(
                r"(?i)api_?key\s*=\s*([A-Za-z0-9_-]{16,200})(?:[^\nA-Za-z0-9_-]|(?m:$))",
                1
            )
            .as_deref(),
            Some(r"(?i)api_?key\s*=\s*((?:[A-Za-z0-9_-]){16})")
        );
        assert_eq!(
            cut(r"\b(tok_[a-z0-9]{8,40}?)\b", 1).as_deref(),
            Some(r"\b(tok_(?:[a-z0-9]){8})")
        );
        assert_eq!(cut(r"\b(x[a-z]{0,9})\b", 1).as_deref(), Some(r"\b(x)"));
        // Fixed repetitions stay; the suffix goes.
        assert_eq!(
            cut(r"\b((?:AKIA|ASIA)[A-Z0-9]{16})\b", 1).as_deref(),
            Some(r"\b((?:AKIA|ASIA)[A-Z0-9]{16})")
        );
        // At most 16 repetitions are kept.
        assert_eq!(
            cut(r"secret=([A-Za-z0-9/+=]{40})\b", 1).as_deref(),
            Some(r"secret=((?:[A-Za-z0-9/+=]){16})")
        );
        assert_eq!(
            cut(r"secret=([A-Za-z0-9/+=]{20,60})\b", 1).as_deref(),
            Some(r"secret=((?:[A-Za-z0-9/+=]){16})")
        );
        // Unbounded repetitions or suffixes, no group, a group inside an
        // alternation, the group not ending in a repetition: kept whole.
        assert_eq!(cut(r"key=([a-z]+)\b", 1), None);
        assert_eq!(cut(r"key=([a-z]{4,9})\s*;", 1), None);
        assert_eq!(cut(r"key=([a-z]{4,9000})", 1), None);
        assert_eq!(cut(r"tok_[a-z]{16}", 0), None);
        assert_eq!(cut(r"(?:a=([a-z]{4,9})|b=([a-z]{4,9}))", 1), None);
        assert_eq!(cut(r"k=([a-z]{4,9}x)", 1), None);
        // Verbose mode, however its flag is set: parts are not read alone.
        for p in [
            r"(?x)k = ([a-z]{4,9}) \b",
            r"(?ix)k=([a-z]{4,9})\b",
            r"(?i)(?sx:k)=([a-z]{4,9})\b",
        ] {
            assert_eq!(cut(p, 1), None, "{p}");
        }
    }

    #[test]
    fn a_cut_rule_matches_wherever_the_rule_does() {
        let rules = crate::scan::RuleFile::parse(crate::scan::BUILTIN_RULES, "built-in").unwrap();
        let samples = [
            "aws_secret_access_key = abcdEFGHijklMNOPqrstUVWXyz0123456789+/ab",
            "api_key: 'a8Fk2Lq9Zx7Vb3Nm4Pq8Rs1T'",
            "client_secret=Zx7Vb3Nm4Pq8Rs1Ta8Fk2Lq9",
            "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
            "xoxb-123456789012-1234567890123-abcdefghijklmnopqrstuvwx",
        ];
        let mut cut_rules = 0;
        for r in &rules.rules {
            let group = r
                .group
                .unwrap_or(usize::from(crate::scan::rules::capture_groups(&r.pattern).unwrap() > 0));
            let Some(prefix) = cut(&r.pattern, group) else { continue };
            cut_rules += 1;
            let full = backtracking(&r.pattern).unwrap();
            let short = backtracking(&prefix)
                .unwrap_or_else(|e| panic!("rule {}: the cut pattern {prefix:?} does not compile: {e}", r.id));
            for s in samples {
                for m in full.find_iter(s.as_bytes()) {
                    assert!(
                        short
                            .find_at(s.as_bytes(), m.start())
                            .is_some_and(|p| p.start() == m.start()),
                        "rule {}: {prefix:?} misses the match {:?} in {s:?}",
                        r.id,
                        m
                    );
                }
            }
        }
        assert!(cut_rules > 100, "only {cut_rules} rules are cut");
    }
}
