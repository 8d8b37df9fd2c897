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
use regex_syntax::hir::{Hir, HirKind};

/// The most bytes a rule's match may reach past its cut pattern's.
pub const MAX_SLACK: usize = 2048;

/// Repetitions kept of the secret's last repeated item: enough that the
/// cut pattern is rarely met where the rule is not, few enough to be cheap
/// (`{40}` costs Hyperscan twice what `{16}` does).
const MAX_KEPT: u32 = 16;

/// A rule cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// What Hyperscan looks for.
    pub pattern: String,
    /// How many bytes past the end of the cut pattern's match the secret
    /// may begin: 0 when the cut keeps the secret's start, the most the
    /// rest of the rule can match when the cut is before a gap.
    pub reach: usize,
    /// When the cut ends in the secret and that part has one length of at
    /// least a byte (the group's fixed items and its last repetition at
    /// its minimum, of fixed-length items): the secret of every match of
    /// the rule begins exactly this many bytes before the end of the cut
    /// pattern's match it holds. The cut is the rule's own parts up to
    /// that repetition, so a match's bytes up to its secret's first `back`
    /// bytes match it.
    pub secret_back: Option<usize>,
}

/// The prefix of `pattern` to hand Hyperscan, when the rule can be cut:
/// the pattern up to its secret group (capture `group`, a part of the
/// top-level sequence), with the group's last repetition at its minimum
/// and what follows the group dropped; or the pattern up to a gap before
/// the group (`before_gap`). `None` keeps the pattern whole.
pub fn cut(pattern: &str, group: usize) -> Option<Cut> {
    if group == 0 {
        return None;
    }
    if sets_flag_x(pattern) {
        return None; // whitespace is syntax there: parts are not read alone
    }
    let parsed = ast::parse::Parser::new().parse(pattern).ok()?;
    let Ast::Concat(top) = &parsed else { return None };
    let (at, g) = top.asts.iter().enumerate().find_map(|(i, a)| match a {
        Ast::Group(g) if capture_index(&g.kind) == Some(group as u32) => Some((i, g)),
        _ => None,
    })?;
    if let Some(cut) = before_gap(pattern, &top.asts[..at]) {
        return Some(cut);
    }
    at_secret(pattern, g).map(|pattern| Cut {
        secret_back: secret_back(&pattern, group),
        pattern,
        reach: 0,
    })
}

/// The length of the cut pattern's secret part, when it is its last part
/// and has one length (see [`Cut::secret_back`]).
fn secret_back(cut: &str, group: usize) -> Option<usize> {
    let hir = super::rules::parse(cut).ok()?;
    let HirKind::Concat(parts) = hir.kind() else {
        return None;
    };
    let last = parts.last()?;
    let HirKind::Capture(c) = last.kind() else { return None };
    let props = last.properties();
    match (props.minimum_len(), props.maximum_len()) {
        // A part of no bytes could end where the value before began: a
        // match ending on the separator between two values is the earlier
        // value's (`Engine::scan_values`), so the secret's value would not
        // see that end.
        (Some(min), Some(max)) if c.index as usize == group && min == max && min > 0 => Some(min),
        _ => None,
    }
}

/// The pattern up to its group's last repetition, kept at its minimum.
fn at_secret(pattern: &str, g: &ast::Group) -> Option<String> {
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

/// The pattern up to a gap of any bytes (`(?s:.){0,40}?`) before the
/// secret, when what comes before the gap is long enough to be rare on its
/// own (an AWS key ID before the secret that goes with it). Hyperscan
/// tracks every length such a gap may have after each match of the head, a
/// large share of its time on rows that hold key IDs; a head's match alone
/// is a hit, and confirming one that has no secret after it costs a few
/// dozen nanoseconds.
fn before_gap(pattern: &str, before_group: &[Ast]) -> Option<Cut> {
    for part in before_group {
        let Ast::Repetition(r) = part else { continue };
        if !is_any_byte(&r.ast) {
            continue;
        }
        let bounded = matches!(
            r.op.kind,
            RepetitionKind::ZeroOrOne
                | RepetitionKind::Range(RepetitionRange::Exactly(_) | RepetitionRange::Bounded(..))
        );
        if !bounded {
            return None;
        }
        let cut_at = part.span().start.offset;
        let head = &pattern[..cut_at];
        let selective = super::rules::parse(head)
            .ok()?
            .properties()
            .minimum_len()
            .is_some_and(|n| n >= MIN_HEAD_BEFORE_GAP);
        let reach = max_len(&pattern[cut_at..])?;
        return (selective && reach <= MAX_SLACK).then(|| Cut {
            pattern: head.to_string(),
            reach,
            secret_back: None,
        });
    }
    None
}

/// The fewest bytes a head must match for a rule to be cut before its gap:
/// a shorter head (`mg`, `okta`, `token`) is met too often in ordinary data.
const MIN_HEAD_BEFORE_GAP: usize = 16;

/// `.` or `(?s:.)`: any byte (but a newline, without `s`).
fn is_any_byte(a: &Ast) -> bool {
    match a {
        Ast::Dot(_) => true,
        Ast::Group(g) => matches!(g.kind, GroupKind::NonCapturing(_)) && matches!(g.ast.as_ref(), Ast::Dot(_)),
        _ => false,
    }
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

/// Checks a rule's own prefilter (`Rule::prefilter`): its parts must be a
/// run of the pattern's parts (captures opened up, the same flags) that
/// ends in or after the secret, with at most [`MAX_SLACK`] bytes of match
/// on either side of its end. Then wherever the pattern matches, the
/// prefilter matches the bytes those parts matched (assertions such as
/// `\b` read the same text), Hyperscan reports that end, the secret
/// starts before it, and the whole match lies in the window confirmation
/// searches around it.
///
/// The run is compared as parsed, and its text must also be the
/// pattern's own text for a run of items of one sequence in it (the
/// pattern's leading flags, such as `(?i)`, may be repeated in front):
/// Hyperscan reads the prefilter's text, and two parsers can read one text
/// differently (the regex crate skips spaces in `{13 }` and opens `[[…]]`
/// as a nested class; Hyperscan takes both as plain characters). Text
/// found anywhere in the pattern is not enough: inside a class or a
/// comment such text is plain characters to both. Patterns in `(?x)` mode
/// take no prefilter (whitespace between items is syntax there).
pub fn check_run(pattern: &str, prefilter: &str, group: usize) -> Result<(), String> {
    if sets_flag_x(pattern) {
        return Err("a pattern in (?x) mode takes no prefilter".into());
    }
    let flags = leading_flags(pattern);
    let own_text = prefilter
        .strip_prefix(flags)
        .filter(|_| !flags.is_empty())
        .unwrap_or(prefilter);
    if own_text.is_empty() || !is_own_items(pattern, own_text) {
        return Err(
            "it is not a run of the pattern's parts (its text must be the pattern's own, item for item)".into(),
        );
    }
    run_of_parts(pattern, prefilter, group)
}

/// Whether `text` is the pattern's text for a run of consecutive items of
/// one sequence: the top level, or the inside of a group in it.
fn is_own_items(pattern: &str, text: &str) -> bool {
    let Ok(parsed) = ast::parse::Parser::new().parse(pattern) else {
        return false;
    };
    let mut sequences: Vec<&[Ast]> = Vec::new();
    sequences_of(&parsed, &mut sequences);
    sequences.iter().any(|items| {
        (0..items.len()).any(|i| {
            let start = items[i].span().start.offset;
            items[i..]
                .iter()
                .any(|last| pattern.get(start..last.span().end.offset) == Some(text))
        })
    })
}

/// The sequences of items in `a`, opening groups (not repetitions or
/// alternations: their insides are not runs of the pattern's parts).
fn sequences_of<'a>(a: &'a Ast, out: &mut Vec<&'a [Ast]>) {
    match a {
        Ast::Concat(c) => {
            out.push(&c.asts);
            for item in &c.asts {
                if let Ast::Group(g) = item {
                    sequences_of(&g.ast, out);
                }
            }
        }
        Ast::Group(g) => {
            out.push(std::slice::from_ref(a));
            sequences_of(&g.ast, out);
        }
        other => out.push(std::slice::from_ref(other)),
    }
}

/// The parse-tree half of [`check_run`].
fn run_of_parts(pattern: &str, prefilter: &str, group: usize) -> Result<(), String> {
    let whole = super::rules::parse(pattern)?;
    let pre = super::rules::parse(prefilter)?;
    let (mut parts, mut group_from) = (Vec::new(), None);
    flatten(&whole, group, &mut parts, &mut group_from);
    let group_from = if group == 0 {
        0
    } else {
        group_from.ok_or("the secret's group is not one of the pattern's parts")?
    };
    let mut run = Vec::new();
    flatten(&pre, usize::MAX, &mut run, &mut None);
    if run.is_empty() || pre.properties().minimum_len().unwrap_or(0) == 0 {
        // Hyperscan refuses a pattern that matches nothing, and with it
        // every rule's prefilter.
        return Err("it is empty or may match no bytes".into());
    }
    let at = (0..parts.len())
        .filter(|&k| k + run.len() <= parts.len())
        .find(|&k| parts[k..k + run.len()] == run[..])
        .ok_or("it is not a run of the pattern's parts (write the parts as the pattern does, with its flags)")?;
    let end = at + run.len();
    if end <= group_from {
        return Err("it ends before the secret begins".into());
    }
    let bounded = |ps: &[Hir]| {
        Hir::concat(ps.to_vec())
            .properties()
            .maximum_len()
            .is_some_and(|n| n <= MAX_SLACK)
    };
    if !bounded(&parts[..end]) || !bounded(&parts[end..]) {
        return Err(format!(
            "the pattern may match more than {MAX_SLACK} bytes before or after its end"
        ));
    }
    Ok(())
}

/// The flags a pattern opens with (`(?i)`), or "".
fn leading_flags(pattern: &str) -> &str {
    let Some(rest) = pattern.strip_prefix("(?") else {
        return "";
    };
    match rest.find(|c: char| !(c.is_ascii_alphabetic() || c == '-')) {
        Some(n) if rest[n..].starts_with(')') => &pattern[..2 + n + 1],
        _ => "",
    }
}

/// A pattern's top-level sequence with capture groups opened up; notes the
/// index of the first part of capture `group`.
fn flatten(h: &Hir, group: usize, out: &mut Vec<Hir>, group_from: &mut Option<usize>) {
    match h.kind() {
        HirKind::Concat(items) => items.iter().for_each(|i| flatten(i, group, out, group_from)),
        HirKind::Capture(c) => {
            if c.index as usize == group && group_from.is_none() {
                *group_from = Some(out.len());
            }
            flatten(&c.sub, group, out, group_from)
        }
        HirKind::Empty => {}
        _ => out.push(h.clone()),
    }
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

    fn cut_text(pattern: &str, group: usize) -> Option<String> {
        cut(pattern, group).map(|c| c.pattern)
    }

    #[test]
    fn a_cut_in_its_secret_says_where_the_secret_begins() {
        let back = |p: &str| cut(p, 1).and_then(|c| c.secret_back);
        // The secret's first 16 bytes end the cut, whatever its minimum.
        assert_eq!(back(r#"(?i)aws_?secret["']?\s*=\s*([A-Za-z0-9/+=]{40})\b"#), Some(16));
        assert_eq!(back(r"(?i)secret\s*[:=]\s*([A-Za-z0-9_+/=~-]{20,200})\b"), Some(16));
        // Fixed items before the repetition count; a lower minimum is kept.
        assert_eq!(back(r"key=(x[A-Z0-9]{16,40})\b"), Some(17));
        assert_eq!(back(r"key=([a-z]{4,9})\b"), Some(4));
        // A group of one length is kept whole; an optional last item is cut.
        assert_eq!(back(r"k=([a-z]{8})\b"), Some(8));
        assert_eq!(back(r"k=(x[a-z]?)\b"), Some(1));
        // A secret part of no bytes says nothing: its end may be the
        // separator before the value, which belongs to the value before.
        assert_eq!(back(r"k=([a-z]{0,9})\b"), None);
        assert_eq!(back(r"\b([A-Z0-9]{0,32})(?:[^A-Za-z0-9]|$)"), None);
        // A gap before the group does not move the group's start from the end.
        assert_eq!(back(r"(?i)(?:mailgun|mg)(?s:.){0,40}?\b(key-[0-9a-z]{32})\b"), Some(20));
        // Cut before a gap: the secret is after the hit, somewhere.
        assert_eq!(
            back(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b(?s:.){0,40}?\b([A-Za-z0-9/+=]{40})\b"),
            None
        );
        // Items of more than one length: the secret's start is not fixed.
        assert_eq!(back(r"k=((?:ab|c){4,9})\b"), None);
        assert_eq!(back(r"k=((?:ab|c)[a-z]{4,9})\b"), None);
    }

    #[test]
    fn cuts_the_secrets_last_repetition_and_what_follows() {
        assert_eq!(
            cut_text(
                r"(?i)api_?key\s*=\s*([A-Za-z0-9_-]{16,200})(?:[^\nA-Za-z0-9_-]|(?m:$))",
                1
            )
            .as_deref(),
            Some(r"(?i)api_?key\s*=\s*((?:[A-Za-z0-9_-]){16})")
        );
        assert_eq!(
            cut_text(r"\b(tok_[a-z0-9]{8,40}?)\b", 1).as_deref(),
            Some(r"\b(tok_(?:[a-z0-9]){8})")
        );
        assert_eq!(cut_text(r"\b(x[a-z]{0,9})\b", 1).as_deref(), Some(r"\b(x)"));
        // Fixed repetitions stay; the suffix goes.
        assert_eq!(
            cut_text(r"\b((?:AKIA|ASIA)[A-Z0-9]{16})\b", 1).as_deref(),
            Some(r"\b((?:AKIA|ASIA)[A-Z0-9]{16})")
        );
        // At most 16 repetitions are kept.
        assert_eq!(
            cut_text(r"secret=([A-Za-z0-9/+=]{40})\b", 1).as_deref(),
            Some(r"secret=((?:[A-Za-z0-9/+=]){16})")
        );
        assert_eq!(
            cut_text(r"secret=([A-Za-z0-9/+=]{20,60})\b", 1).as_deref(),
            Some(r"secret=((?:[A-Za-z0-9/+=]){16})")
        );
        // A gap before the secret, after a head that is rare on its own:
        // cut before the gap; after a short head, the secret is cut as usual.
        assert_eq!(
            cut_text(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b(?s:.){0,40}?\b([A-Za-z0-9/+=]{40})\b", 1).as_deref(),
            Some(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
        );
        assert_eq!(
            cut_text(r"(?i)(?:mailgun|mg)(?s:.){0,40}?\b(key-[0-9a-z]{32})\b", 1).as_deref(),
            Some(r"(?i)(?:mailgun|mg)(?s:.){0,40}?\b(key-(?:[0-9a-z]){16})")
        );
        assert_eq!(
            cut_text(r"tok_[A-Z0-9]{16}.{0,3000}([a-z]{8})", 1).as_deref(),
            None,
            "what follows the gap may reach past the window"
        );
        // Unbounded repetitions or suffixes, no group, a group inside an
        // alternation, the group not ending in a repetition: kept whole.
        assert_eq!(cut_text(r"key=([a-z]+)\b", 1), None);
        assert_eq!(cut_text(r"key=([a-z]{4,9})\s*;", 1), None);
        assert_eq!(cut_text(r"key=([a-z]{4,9000})", 1), None);
        assert_eq!(cut_text(r"tok_[a-z]{16}", 0), None);
        assert_eq!(cut_text(r"(?:a=([a-z]{4,9})|b=([a-z]{4,9}))", 1), None);
        assert_eq!(cut_text(r"k=([a-z]{4,9}x)", 1), None);
        // Verbose mode, however its flag is set: parts are not read alone.
        for p in [
            r"(?x)k = ([a-z]{4,9}) \b",
            r"(?ix)k=([a-z]{4,9})\b",
            r"(?i)(?sx:k)=([a-z]{4,9})\b",
        ] {
            assert_eq!(cut_text(p, 1), None, "{p}");
        }
    }

    #[test]
    fn a_rule_cut_before_its_gap_finds_the_secret_after_the_gap() {
        // Hyperscan's hit ends at the key ID; the secret starts up to 40
        // bytes later, in the same value or across a newline.
        let rules = crate::scan::RuleFile::parse(crate::scan::BUILTIN_RULES, "built-in").unwrap();
        let rule = rules
            .rules
            .iter()
            .find(|r| r.id == "aws-secret-access-key-after-key-id")
            .unwrap();
        assert_eq!(cut(&rule.pattern, 1).map(|c| c.reach), Some(81), "40 + 40 + 1");
        let engine = crate::scan::Engine::new(std::slice::from_ref(rule), [0; 32]).unwrap();
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        for gap in [" ", "\n", ":", " and its secret, stored next to it: "] {
            let text = format!("AKIAIOSFODNN7EXAMPLE{gap}{secret}");
            let found = engine.find(text.as_bytes()).unwrap();
            assert_eq!(found.len(), 1, "{text:?}");
            assert_eq!(&text[found[0].start..found[0].end], secret, "{text:?}");
        }
        // Past the gap's 40 bytes: not this rule's.
        let far = format!("AKIAIOSFODNN7EXAMPLE{}{secret}", " ".repeat(41));
        assert!(engine.find(far.as_bytes()).unwrap().is_empty());
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
            "AKIAIOSFODNN7EXAMPLE\nsecret: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ];
        let mut cut_rules = 0;
        for r in &rules.rules {
            let group = r
                .group
                .unwrap_or(usize::from(crate::scan::rules::capture_groups(&r.pattern).unwrap() > 0));
            let Some(prefix) = cut_text(&r.pattern, group) else {
                continue;
            };
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

    const SALESFORCE: &str = r"\b(00[A-Za-z0-9]{13}![A-Za-z0-9._]{96})(?:[^\nA-Za-z0-9._]|(?m:$))";

    fn rule_file(pattern: &str, prefilter: Option<&str>) -> String {
        let mut t = format!("[[rule]]\nid = \"sf\"\nname = \"sf\"\npattern = '''{pattern}'''\n");
        if let Some(p) = prefilter {
            t.push_str(&format!("prefilter = '''{p}'''\n"));
        }
        t
    }

    #[test]
    fn a_prefilter_must_be_a_run_of_the_patterns_parts_ending_in_the_secret() {
        for ok in [r"[A-Za-z0-9]{13}!", r"00[A-Za-z0-9]{13}!", r"!", r"![A-Za-z0-9._]{96}"] {
            assert_eq!(check_run(SALESFORCE, ok, 1), Ok(()), "{ok}");
        }
        for (bad, why) in [
            (r"[A-Za-z0-9]{12}!", "not a run"),
            // Parsed, a run; as text, not the pattern's (a group opens between).
            (r"\b00", "not a run"),
            (r"[A-Za-z0-9]{13}!x", "not a run"),
            (r"0[A-Za-z0-9]{13}!", "not a run"),
            (r"[a-z0-9]{13}!", "not a run"),
            (r"\b", "may match no bytes"),
            (r"", "not a run"),
        ] {
            let e = check_run(SALESFORCE, bad, 1).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = check_run(r"a(b*)c", r"b*", 1).unwrap_err();
        assert!(e.contains("may match no bytes"), "{e}");
        // A run that ends before the secret's group.
        let e = check_run(r"(?i)api_key\s*=\s*([a-z0-9]{32})\b", r"(?i)api_key\s*=", 1).unwrap_err();
        assert!(e.contains("ends before the secret"), "{e}");
        // The same text under other flags is another run; under the
        // pattern's own flags it is the run.
        let e = check_run(r"(?i)key=([a-z0-9]{32})\b", r"[a-z0-9]{32}", 1).unwrap_err();
        assert!(e.contains("not a run"), "{e}");
        assert_eq!(check_run(r"(?i)key=([a-z0-9]{32})\b", r"(?i)[a-z0-9]{32}", 1), Ok(()));
        // Text the regex crate reads as the run but Hyperscan would not:
        // spaces in a count, a nested class, another spelling.
        for other in [
            r"[A-Za-z0-9]{13 }!",
            r"[[A-Za-z0-9]]{13}!",
            r"[A-Za-z0-9&&[A-Za-z0-9]]{13}!",
            r"[0-9A-Za-z]{13}!",
        ] {
            let e = check_run(SALESFORCE, other, 1).unwrap_err();
            assert!(e.contains("not a run"), "{other}: {e}");
        }
        // Text of the pattern's that is not a run of its items: inside a
        // class, inside a comment, inside a repetition.
        for (pattern, text) in [
            (r"\b(x{13}![a-z]{20})[^x{13 }!]", r"x{13 }!"),
            (
                r"(?x)\b(00[A-Za-z0-9]{13}![A-Za-z0-9._]{96}) # [A-Za-z0-9]{13 }!",
                r"[A-Za-z0-9]{13 }!",
            ),
            (r"(?x)\b(00[A-Za-z0-9]{13}![A-Za-z0-9._]{96})", r"[A-Za-z0-9]{13}!"),
            (r"(?:tok_)+([a-z]{20})", r"tok_"),
        ] {
            assert!(check_run(pattern, text, 1).is_err(), "{pattern} / {text}");
        }
        // More parts than the pattern has (the parse-tree half alone: the
        // text half refuses these first).
        let e = run_of_parts(r"(?:tok\b_)+", r"tok\b_", 0).unwrap_err();
        assert!(e.contains("not a run"), "{e}");
        assert!(run_of_parts(r"tok_([a-z]{20})", r"t(o)k_[a-z]{20}x", 1).is_err());
        // A match that may reach far past the prefilter's end.
        let e = check_run(r"tok_([a-z]{8})x.*y", r"[a-z]{8}", 1).unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }

    #[test]
    fn a_rule_with_a_prefilter_finds_what_it_finds_without_one() {
        use crate::scan::{Engine, RuleFile};
        let rules = |pre| RuleFile::parse(&rule_file(SALESFORCE, pre), "test").unwrap().rules;
        let with = Engine::new(&rules(Some("[A-Za-z0-9]{13}!")), [0; 32]).unwrap();
        let without = Engine::new(&rules(None), [0; 32]).unwrap();
        let token = format!("00D5e000000abcd!{}abcdef", "AQ4Axy.z_9".repeat(9));
        let samples = [
            token.clone(),
            format!("2024-05-01 00:00:00+00 {token}"),
            format!("x{token}"),
            format!("{token}!"),
            "00D5e000000abcd! short".to_string(),
            format!("a {token}; 100.00 {token}"),
            "2024-05-01 00:00:00+00, 1000.00, 00000000000000!".to_string(),
        ];
        for s in &samples {
            assert_eq!(
                with.find(s.as_bytes()).unwrap(),
                without.find(s.as_bytes()).unwrap(),
                "{s}"
            );
        }
        assert_eq!(with.find(samples[1].as_bytes()).unwrap().len(), 1);
        assert_eq!(with.find(samples[5].as_bytes()).unwrap().len(), 2);
        // And as the data path scans: every sample a value, in one pass.
        let buf = samples.concat();
        let mut values = Vec::new();
        let mut at = 0;
        for (i, v) in samples.iter().enumerate() {
            values.push((at, at + v.len(), i));
            at += v.len();
        }
        let in_values = |e: &Engine| {
            let mut found = crate::scan::values::find_all(e, buf.as_bytes(), &values);
            found.sort_by_key(|(i, f)| (*i, f.start, f.end));
            found
        };
        let found = in_values(&with);
        assert_eq!(found, in_values(&without));
        assert_eq!(found.len(), 5, "{found:?}");
    }

    #[test]
    fn a_prefilter_that_is_not_a_run_is_refused_from_a_file_and_from_a_table() {
        use crate::scan::{Engine, RuleFile};
        let e = RuleFile::parse(&rule_file(SALESFORCE, Some("[A-Za-z0-9]{12}!")), "rules.toml").unwrap_err();
        assert_eq!(e.id, "sf");
        assert!(e.message.starts_with("prefilter:"), "{e}");
        // A rule that never went through a file (a `[[scan.rule]]` table).
        let mut rule = RuleFile::parse(&rule_file(SALESFORCE, None), "t")
            .unwrap()
            .rules
            .remove(0);
        rule.prefilter = Some("[A-Za-z0-9]{12}!".into());
        assert!(Engine::new(&[rule], [0; 32]).is_err());
    }
}
