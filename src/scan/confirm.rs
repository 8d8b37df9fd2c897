//! A rule's regex, as it confirms a Hyperscan hit inside one value and
//! finds the span of the secret (the rule's group) in the match.
//!
//! Finding a capture group's span is what costs: the regex engine runs a
//! backtracker over the match, several times the price of finding the
//! match. Most rules are a concatenation `prefix (secret) suffix`, and for
//! those the span comes from three anchored searches instead: the prefix's
//! preferred match from the match's start, the group's preferred match
//! from there, and the suffix matching after it. When all three succeed
//! this is exactly the span the backtracker reports (it tries the prefix's
//! ways to match in order of preference, then the group's, and stops at
//! the first that lets the rest match: these). When any fails, the
//! backtracker decides.

use regex_automata::dfa::{
    dense::{self, DFA},
    Automaton,
};
use regex_automata::meta::{self, Regex};
use regex_automata::nfa::thompson;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, Input, MatchKind};
use regex_syntax::hir::{Hir, HirKind};
use std::ops::Range;

/// The syntax rules are written in, as `rules::parse` reads it.
fn syntax_config() -> syntax::Config {
    syntax::Config::new().unicode(false).utf8(false).multi_line(true)
}

/// How a rule's regex is built. `captures_often`: whether the rule's
/// secret is found by a capture search at every match (a rule with a
/// group that is not cut around it). The regex's one-pass DFA (built for
/// a one-pass pattern with a group, within its size limit) answers
/// anchored searches, and confirmation runs those only for captures; a
/// cut rule asks for captures only when its parts disagree, and the
/// bounded backtracker or the PikeVM answers those with the same spans.
/// Left out for every other rule, the confirmation of all 337 built-in
/// rules holds 19.7 MiB instead of 26.9 (resident, measured).
fn meta_config(captures_often: bool) -> meta::Config {
    meta::Config::new()
        .match_kind(MatchKind::LeftmostFirst)
        .utf8_empty(false)
        .nfa_size_limit(Some(32 << 20))
        .onepass(captures_often)
}

/// Checks a pattern compiles as confirmation will compile it.
pub fn check(pattern: &str) -> Result<(), String> {
    build(pattern, true).map(|_| ())
}

/// The rule's regex as confirmation reads it, for a search with captures
/// (checks made when an engine is built), refused above `nfa_limit` bytes
/// of NFA.
pub(super) fn regex_within(pattern: &str, nfa_limit: usize) -> Result<Regex, String> {
    build_with(pattern, meta_config(false).nfa_size_limit(Some(nfa_limit)))
}

fn build(pattern: &str, captures_often: bool) -> Result<Regex, String> {
    build_with(pattern, meta_config(captures_often))
}

fn build_with(pattern: &str, config: meta::Config) -> Result<Regex, String> {
    meta::Builder::new()
        .configure(config)
        .syntax(syntax_config())
        .build(pattern)
        .map_err(|e| e.to_string())
}

/// A fully built DFA for a part, or `None` when it would be too big (the
/// backtracker decides for such rules).
fn build_dfa(hir: &Hir) -> Option<DFA<Vec<u32>>> {
    let nfa = thompson::Compiler::new()
        .configure(
            thompson::Config::new()
                .which_captures(thompson::WhichCaptures::None)
                // Bytes, not UTF-8: an empty match before a byte such as
                // 0x80 must not be skipped.
                .utf8(false)
                .nfa_size_limit(Some(1 << 20)),
        )
        .build_from_hir(hir)
        .ok()?;
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::LeftmostFirst)
                // Parts are only ever run anchored.
                .start_kind(regex_automata::dfa::StartKind::Anchored)
                .dfa_size_limit(Some(DFA_SIZE_LIMIT))
                .determinize_size_limit(Some(4 * DFA_SIZE_LIMIT)),
        )
        .build_from_nfa(&nfa)
        .ok()
}

/// Bytes a part's DFA may take; most parts take a few KiB.
const DFA_SIZE_LIMIT: usize = 512 << 10;

/// The pattern cut around its secret group.
struct Split {
    prefix: DFA<Vec<u32>>,
    group: DFA<Vec<u32>>,
    suffix: DFA<Vec<u32>>,
    /// When the group is fixed-length items and then a greedy repetition of
    /// one byte class (`[^\s/?#]*`, `x[A-Z0-9]{16,40}`): its shortest match.
    /// Such a group prefers its longer matches, byte by byte, so when its
    /// preferred match leaves the suffix nothing to match (a password that
    /// may hold the `@` that ends it) the shorter ones are tried in that
    /// order, as the backtracker would.
    greedy_min: Option<usize>,
    /// The bytes a suffix match can begin with: trying the shorter group
    /// matches runs the suffix at each, and most positions fail on their
    /// first byte (a URI's host before the `@` that ends the password).
    suffix_first: FirstBytes,
}

/// Shorter group matches tried before the backtracker decides instead.
const MAX_GIVE_BACK: usize = 256;

/// A rule's compiled regex and, when the pattern is cut around its
/// group, the three parts.
pub struct Confirmer {
    whole: Regex,
    /// The capture group that is the secret (0: the whole match).
    group: usize,
    split: Option<Split>,
}

impl Confirmer {
    pub fn new(pattern: &str, group: usize) -> Result<Confirmer, String> {
        let split = if group == 0 { None } else { split(pattern, group) };
        let whole = build(pattern, group != 0 && split.is_none())?;
        Ok(Confirmer { whole, group, split })
    }

    /// Whether the pattern is cut around its group (see the module's notes).
    #[cfg(test)]
    fn has_split(&self) -> bool {
        self.split.is_some()
    }

    /// Calls `found(match_start, match_end, secret_start, secret_end)` for
    /// each match inside `hay[within]`, in order (offsets into `hay`). A
    /// match whose group did not take part is reported with the whole
    /// match. Look-around (`\b`, `^`, `$`) at the range's edges reads the
    /// bytes of `hay` around it, so a match is one that `hay` holds: the
    /// range's first byte is not a word boundary or a line's start unless
    /// it is one in `hay`.
    ///
    /// `found` says whether it kept the match. After a kept match the search
    /// goes on from its end, as leftmost-first search does; after one it did
    /// not keep (its secret's entropy too low, its validator failed) from
    /// the byte after its start, so that a match the caller would keep and
    /// that starts inside the one it dropped is still found
    /// (`secret=aaaa…secret=<the real one>`: the first match takes both,
    /// and its low entropy drops it). Those searches again are bounded: the
    /// dropped matches they read again come to at most twice the range,
    /// then the search goes on from a dropped match's end.
    pub fn matches(&self, hay: &[u8], within: Range<usize>, mut found: impl FnMut(usize, usize, usize, usize) -> bool) {
        let mut caps = None;
        let mut budget = 2 * within.len() + RESTART_SLACK;
        let mut at = within.start;
        // Where the last kept match ended: an empty match there is stepped
        // over, as the regex crate's iterators do.
        let mut kept_end = None;
        while at <= within.end {
            let Some(m) = self.whole.search(&Input::new(hay).range(at..within.end)) else {
                break;
            };
            if m.is_empty() && kept_end == Some(m.end()) {
                at = m.end() + 1;
                continue;
            }
            let span = if self.group == 0 {
                (m.start(), m.end())
            } else {
                self.split
                    .as_ref()
                    .and_then(|s| s.group_span(hay, m.start(), m.end()))
                    .or_else(|| {
                        // The backtracker, on this match alone.
                        let caps = caps.get_or_insert_with(|| self.whole.create_captures());
                        let input = Input::new(hay).range(m.start()..m.end()).anchored(Anchored::Yes);
                        self.whole.search_captures(&input, caps);
                        caps.get_group(self.group).map(|g| (g.start, g.end))
                    })
                    .unwrap_or((m.start(), m.end()))
            };
            // What a search again reads twice: the dropped match after its
            // first byte (a search from its end reads the rest anyway).
            let again = m.start() + 1;
            let cost = m.end().saturating_sub(again);
            if found(m.start(), m.end(), span.0, span.1) || m.is_empty() || cost > budget {
                kept_end = Some(m.end());
                at = m.end();
            } else {
                budget -= cost;
                kept_end = None;
                at = again;
            }
        }
    }
}

/// Bytes a range's searches after dropped matches may read beyond twice
/// the range (a short range's few searches again).
const RESTART_SLACK: usize = 4096;

impl Split {
    /// The group's span in the match `hay[start..end]`, when the parts'
    /// preferred matches make up that match; `None` to ask the backtracker.
    fn group_span(&self, hay: &[u8], start: usize, end: usize) -> Option<(usize, usize)> {
        // Each part's preferred match from `at`: where it ends.
        let anchored = |dfa: &DFA<Vec<u32>>, at: usize| {
            dfa.try_search_fwd(&Input::new(hay).range(at..end).anchored(Anchored::Yes))
                .ok()
                .flatten()
                .map(|m| m.offset())
        };
        let group_start = anchored(&self.prefix, start)?;
        let group_end = anchored(&self.group, group_start)?;
        let Some(min) = self.greedy_min else {
            let suffix_end = anchored(&self.suffix, group_end)?;
            return (suffix_end == end).then_some((group_start, group_end));
        };
        // Every end from the preferred one down to the shortest match is a
        // match of the group (the repeated class covered those bytes), and
        // the first that lets the suffix match is the backtracker's.
        let shortest = group_start + min;
        let tried = group_end.saturating_sub(shortest).min(MAX_GIVE_BACK);
        for group_end in (group_end - tried..=group_end).rev() {
            if group_end < end && !self.suffix_first.may_begin(hay[group_end]) {
                continue;
            }
            if let Some(suffix_end) = anchored(&self.suffix, group_end) {
                return (suffix_end == end).then_some((group_start, group_end));
            }
        }
        None
    }
}

/// Cuts `pattern` into prefix, group and suffix when it is a concatenation
/// with capture group `group` as one of its parts.
fn split(pattern: &str, group: usize) -> Option<Split> {
    let hir = super::rules::parse(pattern).ok()?;
    let HirKind::Concat(parts) = hir.kind() else {
        return None;
    };
    let at = parts
        .iter()
        .position(|p| matches!(p.kind(), HirKind::Capture(c) if c.index as usize == group))?;
    let suffix_hir = Hir::concat(parts[at + 1..].to_vec());
    let suffix = build_dfa(&suffix_hir)?;
    let suffix_first = FirstBytes::of(&suffix, &suffix_hir);
    Some(Split {
        prefix: build_dfa(&Hir::concat(parts[..at].to_vec()))?,
        group: build_dfa(&parts[at])?,
        suffix,
        greedy_min: greedy_min(&parts[at]),
        suffix_first,
    })
}

/// The bytes an anchored match of a part can begin with.
struct FirstBytes([bool; 256]);

impl FirstBytes {
    /// Every byte that leads anywhere but the dead state from one of the
    /// DFA's anchored start states (one per byte that may come before the
    /// search, and the text's start). A byte outside the set leaves every
    /// start dead, so the anchored search fails on it. A part that can
    /// match the empty string (which needs no byte) may begin with any.
    fn of(dfa: &DFA<Vec<u32>>, hir: &Hir) -> FirstBytes {
        let any = FirstBytes([true; 256]);
        match hir.properties().minimum_len() {
            Some(n) if n > 0 => {}
            _ => return any,
        }
        let mut may = [false; 256];
        let before = std::iter::once(None).chain((0..=u8::MAX).map(Some));
        for look_behind in before {
            let config = start::Config::new().anchored(Anchored::Yes).look_behind(look_behind);
            let Ok(state) = dfa.start_state(&config) else {
                return any;
            };
            for byte in 0..=u8::MAX {
                if !dfa.is_dead_state(dfa.next_state(state, byte)) {
                    may[byte as usize] = true;
                }
            }
        }
        FirstBytes(may)
    }

    fn may_begin(&self, byte: u8) -> bool {
        self.0[byte as usize]
    }
}

/// The shortest match of a capture group that is fixed-length items (bytes,
/// byte classes) followed by a greedy repetition of one byte class; `None`
/// for any other group.
fn greedy_min(group: &Hir) -> Option<usize> {
    let HirKind::Capture(c) = group.kind() else { return None };
    let greedy_class = |h: &Hir| matches!(h.kind(), HirKind::Repetition(r) if r.greedy && is_byte_class(&r.sub));
    let shaped = match c.sub.kind() {
        HirKind::Repetition(_) => greedy_class(&c.sub),
        HirKind::Concat(items) => items.split_last().is_some_and(|(last, fixed)| {
            greedy_class(last)
                && fixed
                    .iter()
                    .all(|h| matches!(h.kind(), HirKind::Literal(_)) || is_byte_class(h))
        }),
        _ => false,
    };
    if shaped {
        group.properties().minimum_len()
    } else {
        None
    }
}

/// One byte from a set (never a multi-byte sequence).
fn is_byte_class(h: &Hir) -> bool {
    match h.kind() {
        HirKind::Class(regex_syntax::hir::Class::Bytes(_)) => true,
        HirKind::Class(regex_syntax::hir::Class::Unicode(u)) => u.is_ascii(),
        HirKind::Literal(l) => l.0.len() == 1,
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The regex crate's own engine on a rule's pattern, read as the
    /// scanner reads it: what confirmation is checked against.
    pub(in crate::scan) fn backtracking(pattern: &str) -> Result<regex::bytes::Regex, regex::Error> {
        regex::bytes::RegexBuilder::new(pattern)
            .unicode(false)
            .multi_line(true)
            .build()
    }

    /// The spans the backtracker gives, for comparison.
    fn by_captures(pattern: &str, group: usize, hay: &[u8]) -> Vec<(usize, usize, usize, usize)> {
        backtracking(pattern)
            .unwrap()
            .captures_iter(hay)
            .map(|c| {
                let m = c.get(0).unwrap();
                let g = c.get(group).unwrap_or(m);
                (m.start(), m.end(), g.start(), g.end())
            })
            .collect()
    }

    fn by_confirmer(pattern: &str, group: usize, hay: &[u8]) -> Vec<(usize, usize, usize, usize)> {
        let c = Confirmer::new(pattern, group).unwrap();
        let mut out = Vec::new();
        c.matches(hay, 0..hay.len(), |a, b, s, e| {
            out.push((a, b, s, e));
            true
        });
        out
    }

    #[test]
    fn spans_are_the_backtrackers() {
        let cases: &[(&str, usize, &str)] = &[
            (r"\b((?:AKIA|ASIA)[A-Z0-9]{16})\b", 1, "x AKIA0123456789ABCDEF y ASIA0123456789ABCDEG"),
            (
                r#"(?i)aws_?secret["']?[ \t]{0,30}(?::|=>|=)\s{0,30}["']?([A-Za-z0-9/+=]{40})(?:[^\nA-Za-z0-9/+=]|(?m:$))"#,
                1,
                "AWS_SECRET = 'abcdEFGHijklMNOPqrstUVWXyz0123456789+/ab' and aws_secret=abcdEFGHijklMNOPqrstUVWXyz0123456789+/ab",
            ),
            // A lazy prefix: its preferred match is too short for the
            // group, and the backtracker must decide.
            (
                r"\bAKIA[A-Z0-9]{4}\b(?s:.){0,40}?\b([A-Za-z0-9/+=]{10})(?:[^\nA-Za-z0-9/+=]|(?m:$))",
                1,
                "AKIA0123 and then x abcdefghij0 and abcdefghij",
            ),
            // Greedy prefix that swallows what the group needs.
            (r"key=(\w*)(\w{3})$", 2, "key=abcdefgh"),
            (r"key=(\w*)(\w{3})$", 1, "key=abcdefgh"),
            // A group that is not a part of the top-level concatenation.
            (r"(?:a=(\d+)|b=(\d+))", 1, "a=12 b=34"),
            // An optional group that may not take part.
            (r"t(x)?y", 1, "ty txy"),
            // The whole match.
            (r"tok_[a-z]{5}", 0, "tok_abcde tok_fghij"),
            // A greedy group that takes the byte the suffix needs: shorter
            // matches tried, longest first.
            (r"k=([^\s/]*)@[a-z]+", 1, "k=pa@ss@host/x k=@@h k=x@ k=a@b@c@d/"),
            (r"k=(x[a-z@]{2,6})@[a-z]+", 1, "k=xa@bc@d k=xab@c k=x@@@@@@@b k=xa@"),
            (r"k=([a-z@]+)@(?:[a-z]+|\[[0-9]+\])", 1, "k=ab@cd@[12] k=ab@[1]"),
            // Lazy, or not one class: the backtracker.
            (r"k=([a-z@]*?)@[a-z]+", 1, "k=pa@ss@host"),
            (r"k=((?:ab|a)[a-z@]*)@[a-z]+", 1, "k=ab@cd@e"),
        ];
        // Bytes that are not UTF-8 around the secret.
        let hay = b"k=\x80abcdefgh\xff k=abcdefgh\x80";
        assert_eq!(
            by_confirmer(r"k=\W?([a-z]{4,9})\b", 1, hay),
            by_captures(r"k=\W?([a-z]{4,9})\b", 1, hay)
        );
        for &(pattern, group, hay) in cases {
            assert_eq!(
                by_confirmer(pattern, group, hay.as_bytes()),
                by_captures(pattern, group, hay.as_bytes()),
                "{pattern} on {hay:?}"
            );
        }
    }

    /// A match the caller drops is searched again from the byte after its
    /// start; a kept one from its end; and the searches again stop once
    /// they have read twice the range.
    #[test]
    fn a_dropped_match_is_searched_again_from_after_its_start() {
        let c = Confirmer::new(r"k=([a-z=]+)", 1).unwrap();
        let run = |hay: &str| {
            let mut kept = Vec::new();
            c.matches(hay.as_bytes(), 0..hay.len(), |_, _, s, e| {
                let secret = &hay[s..e];
                let keep = !secret.contains('x');
                if keep {
                    kept.push(secret.to_string());
                }
                keep
            });
            kept
        };
        // The first match takes "xxk=abc" and is dropped; "abc" is inside it.
        assert_eq!(run("k=xxk=abc"), ["abc"]);
        assert_eq!(run("k=abc k=xy k=de"), ["abc", "de"]);
        // Every match is dropped, and each runs to the end of the text: the
        // searches again stop once the dropped matches they read again come
        // to twice the text (without that bound, 20,000 searches of up to
        // 60 KB each).
        let long = "k=x".repeat(20_000);
        let mut seen = 0;
        c.matches(long.as_bytes(), 0..long.len(), |_, _, _, _| {
            seen += 1;
            false
        });
        assert!(seen <= 4, "{seen} matches seen");
    }

    #[test]
    fn builtin_rules_agree_with_the_backtracker_on_samples_and_most_are_cut() {
        // The detection corpus is the broad check of what is found
        // (tests/detection_corpus.rs); here, every built-in rule on strings
        // that several rules match, span by span.
        let rules = crate::scan::RuleFile::parse(crate::scan::BUILTIN_RULES, "built-in").unwrap();
        let samples = [
            "password = \"Sup3r-s3cret-passw0rd!\"",
            "postgres://app:0123456789abcd@db1.internal:5432/app",
            "postgresql://u:p@ss:w@rd@[::1]:5432/db and postgres://a:b@c@d.e/f",
            "aws_secret_access_key = abcdEFGHijklMNOPqrstUVWXyz0123456789+/ab",
            "api_key: 'a8Fk2Lq9Zx7Vb3Nm4Pq8Rs1T'",
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcdefghijklmnop",
            "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 and xoxb-123456789012-1234567890123-abcdefghijklmnopqrstuvwx",
        ];
        let mut split = 0;
        for r in &rules.rules {
            let group = r
                .group
                .unwrap_or(if crate::scan::rules::capture_groups(&r.pattern).unwrap() > 0 {
                    1
                } else {
                    0
                });
            split += usize::from(Confirmer::new(&r.pattern, group).unwrap().has_split());
            for s in samples {
                assert_eq!(
                    by_confirmer(&r.pattern, group, s.as_bytes()),
                    by_captures(&r.pattern, group, s.as_bytes()),
                    "rule {} on {s:?}",
                    r.id
                );
            }
        }
        assert!(split > 250, "only {split} rules are cut around their group");
    }

    proptest::proptest! {
        #[test]
        fn greedy_groups_give_back_as_the_backtracker_does(hay in "[ab@/\\[\\]1x=k ]{0,24}") {
            for pattern in [
                r"k=([^\s/]*)@[a-z]+",
                r"k=(x[a-z@]{2,6})@[a-z]+",
                r"k=([a-z@]+)@(?:[a-z]+|\[[0-9]+\])",
                r"(?:k|x)=([^ ]*)@(?:a|ab)",
                r"=([a-z@=]*)@\b",
                // Suffixes whose start depends on the byte before them, or
                // that may match nothing (any first byte is theirs).
                r"k=([a-z@]*)\b@[a-z]",
                r"k=([a-z@ ]*)\B@",
                r"k=([a-z@]*)(?m:^)@",
                r"k=([a-z@]*)@?",
                r"k=([a-z@]*)(?:@|$)",
            ] {
                let hay = format!("k={hay}");
                proptest::prop_assert_eq!(
                    by_confirmer(pattern, 1, hay.as_bytes()),
                    by_captures(pattern, 1, hay.as_bytes()),
                    "{} on {:?}", pattern, hay
                );
            }
        }
    }

    /// The PikeVM's matches (the regex crate's plainest engine, look-around
    /// checked on the whole haystack) inside `hay[within]`, with the span of
    /// `group` (the whole match when it did not take part).
    fn by_pikevm(pattern: &str, group: usize, hay: &[u8], within: Range<usize>) -> Vec<(usize, usize, usize, usize)> {
        use regex_automata::nfa::thompson::pikevm::PikeVM;
        let vm = PikeVM::builder()
            .syntax(syntax_config())
            .thompson(thompson::Config::new().utf8(false))
            .build(pattern)
            .unwrap();
        let mut cache = vm.create_cache();
        vm.captures_iter(&mut cache, Input::new(hay).range(within))
            .map(|c| {
                let m = c.get_match().unwrap().span();
                let g = c.get_group(group).unwrap_or(m);
                (m.start, m.end, g.start, g.end)
            })
            .collect()
    }

    proptest::proptest! {
        /// A search over a range of the haystack (a window of its value)
        /// finds what the haystack holds there: `\b`, `^`, `$` and the
        /// parts' start states at the range's edges read the bytes around it.
        #[test]
        fn a_range_reads_the_bytes_around_it(hay in "[ab@=k \n\u{80}]{0,24}", cut in 0usize..=26, keep in 0usize..=26) {
            for (pattern, group) in [
                (r"\bk=([a-z@]+)@[a-z]", 1),
                (r"(?m:^)k=([a-z@]+)", 1),
                (r"\Bk=(a+)\b", 1),
                (r"\ba+bk|bk(=[a-z]{2})", 1),
                (r"k=([a-z@]*)\b@[a-z]", 1),
                (r"(?:^|\b)([ab]{2,})\b", 1),
                (r"k=([ab]+)(?m:$)", 1),
                (r"\b[ab]+\b", 0),
                (r"(?m:^)(?:[ab]|$)", 0),
            ] {
                let hay = format!("ak={hay}");
                let from = cut.min(hay.len());
                let to = (from + keep).min(hay.len());
                let c = Confirmer::new(pattern, group).unwrap();
                let mut found = Vec::new();
                c.matches(hay.as_bytes(), from..to, |a, b, s, e| {
                    found.push((a, b, s, e));
                    true
                });
                proptest::prop_assert_eq!(
                    found,
                    by_pikevm(pattern, group, hay.as_bytes(), from..to),
                    "{} on {:?} in {}..{}", pattern, hay, from, to
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn a_byte_outside_the_first_bytes_fails_the_anchored_search(hay in "[ab@/\\[\\]1x=k \n\u{80}]{0,16}") {
            for pattern in [
                r"@[a-z]+", r"\b@", r"\B[@=]x", r"(?m:^)[@k]", r"(?m:$)\n?a", r"(?i)k", r"@?", r"(?:a|)b?",
                // The text's start is a start state of its own.
                r"\A@", r"(?-m:^)[@a]",
            ] {
                let hir = crate::scan::rules::parse(pattern).unwrap();
                let dfa = build_dfa(&hir).unwrap();
                let first = FirstBytes::of(&dfa, &hir);
                let hay = hay.as_bytes();
                for at in 0..hay.len() {
                    if first.may_begin(hay[at]) {
                        continue;
                    }
                    let input = Input::new(hay).range(at..).anchored(Anchored::Yes);
                    proptest::prop_assert_eq!(
                        dfa.try_search_fwd(&input).unwrap(), None,
                        "{} at {} of {:?}", pattern, at, hay
                    );
                }
            }
        }
    }

    #[test]
    fn first_bytes_are_exactly_those_a_match_can_begin_with() {
        let first = |pattern: &str| {
            let hir = crate::scan::rules::parse(pattern).unwrap();
            let set = FirstBytes::of(&build_dfa(&hir).unwrap(), &hir);
            (0..=u8::MAX).filter(|&b| set.may_begin(b)).collect::<Vec<u8>>()
        };
        assert_eq!(first(r"@(?:\[[0-9a-f:.]+\]|[A-Za-z0-9%_-][A-Za-z0-9%._-]*)"), b"@");
        assert_eq!(first(r"\b(?i:k)"), b"Kk");
        // A part that may match nothing begins with anything.
        assert_eq!(first(r"@?").len(), 256);
        assert_eq!(first(r"(?m:$)").len(), 256);
    }

    #[test]
    fn a_uri_password_span_needs_no_backtracker() {
        // Its group `[^\s/?#"'<>]*` also takes the `@` and the host: the
        // span comes from giving bytes back, not from the backtracker.
        let rules = crate::scan::RuleFile::parse(crate::scan::BUILTIN_RULES, "built-in").unwrap();
        let rule = rules.rules.iter().find(|r| r.id == "postgres-uri-password").unwrap();
        let c = Confirmer::new(&rule.pattern, 1).unwrap();
        let hay = b"postgres://app:0123456789abcd@db1.internal:5432/app";
        let m = c.whole.find(&hay[..]).unwrap();
        let split = c.split.as_ref().expect("cut around its group");
        assert_eq!(split.group_span(hay, m.start(), m.end()), Some((15, 29)));
    }

    #[test]
    fn only_a_rule_whose_secret_always_needs_captures_keeps_the_one_pass_dfa() {
        let rules = crate::scan::RuleFile::parse(crate::scan::BUILTIN_RULES, "built-in").unwrap();
        let (mut cut, mut lighter, mut uncut) = (0, 0, 0);
        for r in &rules.rules {
            // As `Engine::new` reads it: the whole match when there is no group.
            let groups = crate::scan::rules::capture_groups(&r.pattern).unwrap();
            let group = r.group.unwrap_or(if groups > 0 { 1 } else { 0 });
            let c = Confirmer::new(&r.pattern, group).unwrap();
            let with_one_pass = build(&r.pattern, true).unwrap().memory_usage();
            if group != 0 && !c.has_split() {
                uncut += 1;
                assert_eq!(c.whole.memory_usage(), with_one_pass, "{}", r.id);
            } else {
                cut += usize::from(c.has_split());
                lighter += usize::from(c.whole.memory_usage() < with_one_pass);
            }
        }
        assert!(cut > 300 && uncut > 10, "{cut} cut, {uncut} not");
        assert!(lighter > 100, "{lighter} cut rules lighter without the one-pass DFA");

        // A one-pass pattern, cut: its DFA is left out, and the anchored
        // capture search on a match (which the one-pass DFA would answer)
        // gives the same span from another engine.
        let pattern = r"key=([a-z]{8});";
        let c = Confirmer::new(pattern, 1).unwrap();
        let one_pass = build(pattern, true).unwrap();
        assert!(c.has_split());
        assert!(c.whole.memory_usage() < one_pass.memory_usage());
        let hay = &b"x key=abcdefgh; y"[..];
        let span = |re: &Regex| {
            let m = re.find(hay).unwrap();
            let mut caps = re.create_captures();
            re.search_captures(
                &Input::new(hay).range(m.start()..m.end()).anchored(Anchored::Yes),
                &mut caps,
            );
            caps.get_group(1).map(|g| (g.start, g.end))
        };
        assert_eq!(span(&c.whole), Some((6, 14)));
        assert_eq!(span(&c.whole), span(&one_pass));
    }
}
