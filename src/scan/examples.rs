//! The check that every rule's first pass finds its own pattern's
//! examples, made each time an engine is built.
//!
//! Hyperscan (the first pass) and the regex crate (confirmation) each read
//! a rule's pattern, and the rule's cut or its own prefilter besides. The
//! spellings known to be read differently are refused when rules load
//! (`spelling`), classes are compared byte for byte (`classes`), and the
//! cuts are proven to be runs of the pattern (`prefilter`). This check
//! backs them with the compiled database itself: examples are made from
//! the pattern as the regex crate reads it (one taking the shortest way at
//! every choice, and one for each other way at each choice: every
//! alternative, a class's first and last word bytes and a non-word byte,
//! an optional part present and absent, a repeated part once more than its
//! minimum), the regex keeps those it matches, and the first pass must
//! report the rule in each, scanned alone as a value. A rule it misses
//! would let secrets of that shape through unmasked, so the engine is
//! refused, naming the rule and the example.
//!
//! A rule cut in its secret, whose secret begins a fixed number of bytes
//! before the cut's end (`prefilter::Cut::secret_back`), is checked
//! further on the same examples: every secret the regex finds must begin
//! that many bytes before an end Hyperscan reports. Scanning leaves out
//! hits on that word (`values::find_in_values`); a rule where the two
//! readers disagree loses it and has every hit confirmed.
//!
//! What it does not prove: that confirmation then finds the match around
//! the hit (the cut and prefilter proofs in `prefilter` say why it does;
//! running every rule's confirmation here would build all their regexes
//! at every start), nor anything of a way no example takes. And since an
//! example changes one choice at a time, a pattern that can match only
//! with two choices other than the shortest at once (each held by a `\b`
//! to the next) gets no example and is refused.

use super::rules::Rule;
use hyperscan::prelude::*;
use regex_automata::nfa::thompson;
use regex_automata::{hybrid, Input};
use regex_syntax::hir::{Class, Hir, HirKind};

/// The most examples made of a rule, and the most bytes they may hold
/// together (the built-in rules need at most a few hundred, of a few KiB);
/// a pattern with more ways is refused rather than checked in part.
const MAX_EXAMPLES: usize = 16384;
const MAX_EXAMPLE_BYTES: usize = 1 << 20;

/// The most bytes made while making a rule's examples, its parts' ways
/// included.
const MAX_MADE_BYTES: usize = 8 << 20;

/// The longest example made: as long as a match confirmation can find
/// (`engine::WINDOW`). Longer ways are dropped as they are made, so that
/// nested repetitions (`(?:(?:a{999}){999}){999}`) cost no more than this.
const MAX_EXAMPLE_LEN: usize = super::engine::WINDOW;

/// A rule the first pass misses: its index, and why (the example it
/// missed, or that none could be made).
#[derive(Debug)]
pub struct Missed {
    pub rule: usize,
    pub reason: String,
}

/// The most bytes of examples, and of NFA, a rule's [`SecretBack`] is
/// checked with. A search with captures over long examples of a large
/// pattern falls back to the NFA simulation (seconds for one rule of
/// hundreds of alternatives and long counted repetitions), and an engine
/// is built at every start and reload: such a rule loses its word
/// unchecked instead. The built-in rules need at most a few KiB of each.
const MAX_BACK_CHECK_BYTES: usize = 64 << 10;
const MAX_BACK_CHECK_NFA: usize = 1 << 20;

/// Where a rule cut in its secret says its secret begins: its secret
/// group, and how many bytes before an end Hyperscan reports (see
/// `prefilter::Cut::secret_back`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretBack {
    pub group: usize,
    pub back: usize,
}

/// Checks that `db` (the rules compiled for Hyperscan, pattern `k` with id
/// `k`) reports each rule in each of its examples, each scanned alone and
/// followed by a newline, as the engine scans a value.
///
/// A rule with a `backs[k]` is checked further: in each example, every
/// match the regex finds has its secret begin exactly `back` bytes before
/// an end Hyperscan reports for the rule. Scanning leaves out a hit whose
/// every secret would lie inside one already found, on that word alone;
/// where the two readers do not agree on it, the rule's entry is cleared
/// (all its hits are then confirmed: slower, never less masked).
pub fn check_first_pass(db: &BlockDatabase, rules: &[Rule], backs: &mut [Option<SecretBack>]) -> Result<(), Missed> {
    let scratch = db.alloc_scratch().map_err(|e| Missed {
        rule: 0,
        reason: format!("no scratch to check the first pass with: {e}"),
    })?;
    let mut value = Vec::new();
    let mut ends = Vec::new();
    for (k, r) in rules.iter().enumerate() {
        let missed = |reason: String| Missed { rule: k, reason };
        let matched = matched_examples(&r.pattern).map_err(missed)?;
        if matched.is_empty() {
            return Err(missed(format!(
                "no example of the pattern could be made that its regex matches (can it match anything in {MAX_EXAMPLE_LEN} bytes? examples change one choice at a time from the shortest ways)"
            )));
        }
        // The rule's word and the regex it is checked with; past either
        // bound, or once an example disagrees, none (the word dropped).
        let example_bytes: usize = matched.iter().map(Vec::len).sum();
        let mut check = backs
            .get(k)
            .copied()
            .flatten()
            .filter(|_| example_bytes <= MAX_BACK_CHECK_BYTES)
            .and_then(|b| Some((b, super::confirm::regex_within(&r.pattern, MAX_BACK_CHECK_NFA).ok()?)));
        for ex in matched {
            value.clear();
            value.extend_from_slice(&ex);
            value.push(b'\n');
            let mut found = false;
            ends.clear();
            let scanned = db.scan(&value, &scratch, |id: u32, _from: u64, to: u64, _flags: u32| {
                if id as usize != k {
                    return Matching::Continue;
                }
                found = true;
                if check.is_some() {
                    ends.push(to as usize);
                    Matching::Continue
                } else {
                    Matching::Terminate
                }
            });
            match scanned {
                Ok(()) | Err(hyperscan::Error::Hyperscan(hyperscan::HsError::ScanTerminated)) => {}
                Err(e) => return Err(missed(format!("the first pass could not be checked: {e}"))),
            }
            if !found {
                return Err(missed(format!(
                    "the first pass (Hyperscan) does not find this example of the pattern: {:?}; it reads the pattern (or the rule's prefilter) otherwise than the regex that confirms it",
                    String::from_utf8_lossy(&ex)
                )));
            }
            if let Some((b, re)) = &check {
                let agrees = re.captures_iter(&ex).all(|caps| {
                    caps.get_group(b.group)
                        .is_some_and(|secret| ends.contains(&(secret.start + b.back)))
                });
                if !agrees {
                    check = None;
                }
            }
        }
        if let Some(slot) = backs.get_mut(k) {
            *slot = check.map(|(b, _)| b);
        }
    }
    Ok(())
}

/// The examples of `pattern` its regex matches (an example may break one
/// of the pattern's assertions, `\b` among them; such are tried again
/// between spaces and between word bytes).
pub(super) fn matched_examples(pattern: &str) -> Result<Vec<Vec<u8>>, String> {
    let hir = super::rules::parse(pattern)?;
    let nfa = thompson::Compiler::new()
        .configure(
            thompson::Config::new()
                .utf8(false)
                .which_captures(thompson::WhichCaptures::None)
                // Confirmation's limit, so that no rule it builds is refused.
                .nfa_size_limit(Some(32 << 20)),
        )
        .build_from_hir(&hir)
        .map_err(|e| format!("the pattern's regex cannot be built: {e}"))?;
    // The lazy DFA alone, which gives up rather than fall back to the NFA
    // simulation: that costs the example's length times the pattern's size
    // (a minute for a pattern of two 4,000-byte counts), at every start.
    let dfa = hybrid::dfa::DFA::builder()
        .configure(
            hybrid::dfa::Config::new()
                .cache_capacity(EXAMPLE_DFA_CACHE)
                .minimum_cache_clear_count(Some(3))
                .minimum_bytes_per_state(Some(10)),
        )
        .build_from_nfa(nfa)
        .map_err(|e| format!("the pattern's regex cannot be built: {e}"))?;
    let mut cache = dfa.create_cache();
    let mut matched = Vec::new();
    for ex in of(&hir)? {
        for candidate in [
            ex.clone(),
            [b" ".as_slice(), &ex, b" "].concat(),
            [b"x".as_slice(), &ex, b"x"].concat(),
        ] {
            let found = dfa
                .try_search_fwd(&mut cache, &Input::new(&candidate).earliest(true))
                .map_err(|e| format!("the pattern is too large to check its examples ({e})"))?;
            if found.is_some() {
                matched.push(candidate);
                break;
            }
        }
    }
    Ok(matched)
}

/// The lazy DFA's memory for matching one rule's examples.
const EXAMPLE_DFA_CACHE: usize = 8 << 20;

/// Examples of what `hir` matches, leaving out its assertions: the first
/// takes the shortest way at every choice, each other takes one other way
/// at one choice (another alternative, a class's other kind of byte, an
/// optional part present or absent, a repeated part once more than its
/// minimum). Refused when there are more than [`MAX_EXAMPLES`] or they
/// hold more than [`MAX_EXAMPLE_BYTES`]: a pattern is checked whole or not
/// at all.
pub fn of(hir: &Hir) -> Result<Vec<Vec<u8>>, String> {
    ways(hir, &mut 0).map(|w| w.list).map_err(|TooMany| {
        format!(
            "the pattern has too many ways to match to check (alternatives, classes, optional parts: more than {MAX_EXAMPLES} examples or {} KiB of them)",
            MAX_EXAMPLE_BYTES >> 10
        )
    })
}

/// More ways than are checked.
struct TooMany;

/// Ways to match, bounded in count and bytes as they are made.
#[derive(Default)]
struct Ways {
    list: Vec<Vec<u8>>,
    bytes: usize,
}

impl Ways {
    /// Adds `way`, unless it is longer than an example may be: such a way
    /// is left out, and its part is checked through its other ways only (a
    /// pattern left with no example is refused). `budget` counts the bytes
    /// of every way made for the pattern, parts' ways included, so that
    /// nested parts cannot multiply the memory.
    fn push(&mut self, budget: &mut usize, way: Vec<u8>) -> Result<(), TooMany> {
        if way.len() > MAX_EXAMPLE_LEN {
            return Ok(());
        }
        self.bytes += way.len();
        *budget += way.len();
        self.list.push(way);
        if self.list.len() > MAX_EXAMPLES || self.bytes > MAX_EXAMPLE_BYTES || *budget > MAX_MADE_BYTES {
            return Err(TooMany);
        }
        Ok(())
    }

    fn one(budget: &mut usize, way: Vec<u8>) -> Result<Ways, TooMany> {
        let mut w = Ways::default();
        w.push(budget, way)?;
        Ok(w)
    }

    /// The index of the shortest way (the first of equals).
    fn shortest(&self) -> Option<usize> {
        (0..self.list.len()).min_by_key(|&i| self.list[i].len())
    }
}

fn ways(hir: &Hir, budget: &mut usize) -> Result<Ways, TooMany> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Ways::one(budget, Vec::new()),
        HirKind::Literal(l) => Ways::one(budget, l.0.to_vec()),
        HirKind::Class(c) => {
            let mut out = Ways::default();
            class_members(c).into_iter().try_for_each(|m| out.push(budget, m))?;
            Ok(out)
        }
        HirKind::Capture(c) => ways(&c.sub, budget),
        HirKind::Repetition(r) => {
            let mut out = Ways::default();
            let sub = ways(&r.sub, budget)?;
            if let (Some(s), true) = (sub.shortest(), r.max != Some(0)) {
                // At its minimum and at least once, so that what is
                // repeated is checked too; each other way of the part once
                // among shortest ones; once more than the minimum when it
                // may be (a multi-byte character repeated byte by byte
                // matches once but not twice).
                let times = r.min.max(1) as usize;
                let shortest = &sub.list[s];
                // Made only when short enough: a count may be large.
                let base = |extra: &[u8], n: usize| -> Option<Vec<u8>> {
                    let len = shortest.len().checked_mul(n)?.checked_add(extra.len())?;
                    (len <= MAX_EXAMPLE_LEN).then(|| [shortest.repeat(n).as_slice(), extra].concat())
                };
                if let Some(e) = base(&[], times) {
                    out.push(budget, e)?;
                }
                for (_, w) in sub.list.iter().enumerate().filter(|&(k, _)| k != s) {
                    if let Some(e) = base(w, times - 1) {
                        out.push(budget, e)?;
                    }
                }
                if r.max.is_none_or(|max| max as usize > times) {
                    if let Some(e) = base(&[], times + 1) {
                        out.push(budget, e)?;
                    }
                }
            }
            if r.min == 0 {
                out.push(budget, Vec::new())?;
            }
            Ok(out)
        }
        HirKind::Alternation(branches) => {
            let mut out = Ways::default();
            for b in branches {
                ways(b, budget)?
                    .list
                    .into_iter()
                    .try_for_each(|w| out.push(budget, w))?;
            }
            Ok(out)
        }
        HirKind::Concat(items) => {
            let per_item = items
                .iter()
                .map(|i| ways(i, budget))
                .collect::<Result<Vec<Ways>, TooMany>>()?;
            // Each item's shortest way, that the others have room.
            let Some(shortest) = per_item.iter().map(Ways::shortest).collect::<Option<Vec<usize>>>() else {
                return Ok(Ways::default()); // a part nothing matches
            };
            let with = |item: usize, way: usize| -> Vec<u8> {
                let mut e = Vec::new();
                for (i, w) in per_item.iter().enumerate() {
                    e.extend_from_slice(&w.list[if i == item { way } else { shortest[i] }]);
                    if e.len() > MAX_EXAMPLE_LEN {
                        break; // left out by `push`
                    }
                }
                e
            };
            let mut out = Ways::default();
            out.push(budget, with(usize::MAX, 0))?;
            for (i, w) in per_item.iter().enumerate() {
                for way in (0..w.list.len()).filter(|&k| k != shortest[i]) {
                    out.push(budget, with(i, way))?;
                }
            }
            Ok(out)
        }
    }
}

/// A class's first and last word bytes and its first other byte (a newline
/// only when it is the only member: it ends a value where the engine
/// scans), as UTF-8. Every byte of every class is compared by `classes`.
fn class_members(c: &Class) -> Vec<Vec<u8>> {
    let members: Vec<Vec<u8>> = match c {
        Class::Bytes(b) => b
            .iter()
            .flat_map(|r| r.start()..=r.end())
            .take(256)
            .map(|b| vec![b])
            .collect(),
        Class::Unicode(u) => u
            .iter()
            .flat_map(|r| r.start()..=r.end())
            .take(256)
            .map(|c| c.to_string().into_bytes())
            .collect(),
    };
    let is_word = |m: &Vec<u8>| m.len() == 1 && (m[0].is_ascii_alphanumeric() || m[0] == b'_');
    let mut out: Vec<Vec<u8>> = Vec::new();
    out.extend(members.iter().find(|m| is_word(m)).cloned());
    // The last word byte too: under `(?i)` the other case of a letter.
    if let Some(last) = members.iter().rev().find(|m| is_word(m)) {
        if out.first() != Some(last) {
            out.push(last.clone());
        }
    }
    out.extend(members.iter().find(|m| !is_word(m) && m.as_slice() != b"\n").cloned());
    if out.is_empty() {
        out.extend(members.first().cloned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples(pattern: &str) -> Vec<String> {
        of(&crate::scan::rules::parse(pattern).unwrap())
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8(e).unwrap())
            .collect()
    }

    #[test]
    fn examples_take_each_way_once() {
        assert_eq!(examples(r"\b(AKIA|ASIA)[A-Z]{3}\b"), ["AKIAAAA", "ASIAAAA", "AKIAAAZ"]);
        // Each other byte once among the shortest, and one more than the
        // minimum when the count allows.
        assert_eq!(examples(r"k[a-z_.]{2,5}"), ["k__", "k_z", "k_.", "k___"]);
        assert_eq!(examples(r"x(?:y)?z"), ["xz", "xyz"]);
        assert_eq!(examples(r"(?i)ab"), ["AB", "aB", "Ab"]);
    }

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

    /// `text` compiled as the engine compiles a rule's first pass.
    fn first_pass(text: &str) -> BlockDatabase {
        let mut p = Pattern::new(text.to_string()).unwrap();
        p.id = Some(0);
        p.flags |= hyperscan::PatternFlags::MULTILINE;
        p.build::<hyperscan::Block>().unwrap()
    }

    /// A rule's word on where its secret begins (`SecretBack`) is kept
    /// only where Hyperscan's ends and the regex's secret agree on it in
    /// every example; otherwise it is cleared and every hit is confirmed.
    #[test]
    fn where_a_secret_begins_is_kept_only_where_both_readers_agree() {
        let pattern = r"key=([a-z]{8})(?:;|\b)";
        let checked = |first: &str, back: usize| {
            let mut backs = [Some(SecretBack { group: 1, back })];
            check_first_pass(&first_pass(first), &[rule(pattern)], &mut backs).unwrap();
            backs[0].map(|b| b.back)
        };
        let cut = r"key=[a-z]{8}";
        assert_eq!(checked(cut, 8), Some(8));
        // Off by one either way.
        assert_eq!(checked(cut, 7), None);
        assert_eq!(checked(cut, 9), None);
        // A first pass that finds every example but reads the cut as
        // ending a byte early does not agree.
        assert_eq!(checked(r"key=[a-z]{7}", 8), None);
        // Hyperscan reports every end: one at the secret's is enough.
        assert_eq!(checked(r"key=[a-z]{8}(?:;|\b)", 8), Some(8));
        // The secret's group is the one the word names: with two groups,
        // the second's start is 8 bytes before the cut's end, the first's
        // is not.
        let two = r"(id|key)=([a-z]{8})(?:;|\b)";
        let checked_group = |group: usize| {
            let mut backs = [Some(SecretBack { group, back: 8 })];
            check_first_pass(&first_pass(r"(?:id|key)=[a-z]{8}"), &[rule(two)], &mut backs).unwrap();
            backs[0].map(|b| b.back)
        };
        assert_eq!(checked_group(2), Some(8));
        assert_eq!(checked_group(1), None);
        // A rule without the word is left without it.
        let mut backs = [None];
        check_first_pass(&first_pass(cut), &[rule(pattern)], &mut backs).unwrap();
        assert_eq!(backs[0], None);
    }

    #[test]
    fn the_check_alone_catches_spellings_hyperscan_reads_as_plain_characters() {
        // Each of these is also refused by `spelling` when rules load; the
        // examples check must catch them without it.
        for pattern in [
            r"tok_[a-z]{ 13}",
            r"tok_[a-z]{13 }",
            r"tok_[[a-z]]{13}",
            r"tok_[a-z&&[^q]]{13}",
            r"\<tok_[a-z]{13}",
            r"tok_[a-z]{13}\>",
            r"\b{start}tok_[a-z]{13}",
        ] {
            let missed = check_first_pass(&first_pass(pattern), &[rule(pattern)], &mut []).expect_err(pattern);
            assert_eq!(missed.rule, 0);
            assert!(missed.reason.contains("tok_"), "{pattern}: {missed:?}");
        }
        // Read alike, found.
        let ok = r"\btok_[a-z]{13}\b";
        check_first_pass(&first_pass(ok), &[rule(ok)], &mut []).unwrap();
    }

    #[test]
    fn every_alternative_is_checked() {
        // A first pass that knows only the first alternative misses the
        // second's example.
        let pattern = r"(?:alpha|beta)_[a-z]{8}";
        let missed = check_first_pass(&first_pass(r"alpha_[a-z]{8}"), &[rule(pattern)], &mut []).unwrap_err();
        assert!(missed.reason.contains("\"beta_aaaaaaaa\""), "{missed:?}");
        check_first_pass(&first_pass(pattern), &[rule(pattern)], &mut []).unwrap();
        // However many alternatives there are, the last is checked too.
        let keywords: Vec<String> = (0..500).map(|k| format!("kw{k}")).collect();
        let all = format!("(?:{})_[a-z]{{8}}", keywords.join("|"));
        let but_last = format!("(?:{})_[a-z]{{8}}", keywords[..499].join("|"));
        let missed = check_first_pass(&first_pass(&but_last), &[rule(&all)], &mut []).unwrap_err();
        assert!(missed.reason.contains("\"kw499_aaaaaaaa\""), "{missed:?}");
        // More ways than are checked: refused, not checked in part.
        let keywords: Vec<String> = (0..17000).map(|k| format!("kw{k}")).collect();
        let too_many = format!("(?:{})_[a-z]{{8}}", keywords.join("|"));
        let missed = check_first_pass(&first_pass("kw"), &[rule(&too_many)], &mut []).unwrap_err();
        assert!(missed.reason.contains("too many ways"), "{missed:?}");
    }

    #[test]
    fn a_first_pass_that_reads_a_flag_otherwise_is_caught() {
        // Both cases of every letter under `(?i)`, whichever the pattern
        // spells.
        for (rule_pattern, read_as) in [
            (r"(?i)tok_[a-z]{8}", r"tok_[a-z]{8}"),
            (r"(?i)TOK_[a-z]{8}", r"TOK_[a-z]{8}"),
            (r"(?i:TOK_)[a-z]{8}", r"TOK_[a-z]{8}"),
        ] {
            check_first_pass(&first_pass(read_as), &[rule(rule_pattern)], &mut []).expect_err(rule_pattern);
            check_first_pass(&first_pass(rule_pattern), &[rule(rule_pattern)], &mut []).unwrap();
        }
    }

    #[test]
    fn a_part_repeated_once_more_than_its_minimum_is_checked() {
        // What Hyperscan reads `€+` as without UTF-8 mode (the last byte
        // repeated): one euro sign is found, two are not.
        let pattern = "tok_€+[a-z]{8}";
        let missed =
            check_first_pass(&first_pass("tok_\\xE2\\x82\\xAC+[a-z]{8}"), &[rule(pattern)], &mut []).unwrap_err();
        assert!(missed.reason.contains("tok_€€aaaaaaaa"), "{missed:?}");
        // A long way inside a count is checked once among short ones.
        let long_branch = r"key=(?:_|x[a-z]{420}){20}";
        let missed =
            check_first_pass(&first_pass(r"key=(?:_|y[a-z]{420}){20}"), &[rule(long_branch)], &mut []).unwrap_err();
        assert!(missed.reason.contains("key=___"), "{missed:?}");
    }

    #[test]
    fn a_pattern_too_large_to_check_quickly_is_refused() {
        // Matching its examples would take the NFA simulation about a
        // minute; the lazy DFA gives up instead.
        let keywords: Vec<String> = (0..240).map(|k| format!("k{k}")).collect();
        let pattern = format!("[a-z0-9]{{0,4000}}[0-9]{{4000}}(?:{})", keywords.join("|"));
        let missed = check_first_pass(&first_pass("k"), &[rule(&pattern)], &mut []).unwrap_err();
        assert!(missed.reason.contains("too large to check"), "{missed:?}");
    }

    #[test]
    fn a_hit_in_another_rules_example_does_not_count() {
        // Rule 1's examples hold rule 0's text, but rule 0's own example
        // must be found where it is.
        let rules = [rule(r"key_[0-9]{4}"), rule(r"xkey_[0-9]{4}")];
        let mut a = Pattern::new(r"xkey_[0-9]{4}".to_string()).unwrap();
        a.id = Some(0);
        let mut b = Pattern::new(r"xkey_[0-9]{4}".to_string()).unwrap();
        b.id = Some(1);
        let db = Patterns::from(vec![a, b]).build::<hyperscan::Block>().unwrap();
        let missed = check_first_pass(&db, &rules, &mut []).unwrap_err();
        assert_eq!(missed.rule, 0);
        assert!(missed.reason.contains("\"key_0000\""), "{missed:?}");
    }

    #[test]
    fn a_rule_no_example_can_be_made_of_is_refused() {
        // Hyperscan refuses such a pattern itself when it can tell; the
        // check does not rely on it.
        let missed = check_first_pass(&first_pass("tok_"), &[rule(r"tok_[a-z]{4}\Ba\b\Bb")], &mut []).unwrap_err();
        assert!(missed.reason.contains("no example"), "{missed:?}");
    }

    #[test]
    fn nested_repetitions_make_no_example_longer_than_a_window() {
        let nested = r"(?:(?:a{999}){999}){999}";
        assert!(examples(nested).is_empty());
        let missed = check_first_pass(&first_pass("a"), &[rule(nested)], &mut []).unwrap_err();
        assert!(missed.reason.contains("cannot be built"), "{missed:?}");
        let longer_than_a_window = r"(?:a{100}){100}";
        let missed = check_first_pass(&first_pass("a"), &[rule(longer_than_a_window)], &mut []).unwrap_err();
        assert!(missed.reason.contains("no example"), "{missed:?}");
        // A long alternative is dropped, a short one kept.
        assert_eq!(examples(r"(?:b{9000}|c)d"), ["cd"]);
    }

    #[test]
    fn examples_that_break_an_assertion_are_tried_between_other_bytes() {
        // "ab" alone breaks the \B before it; "xabx" does not.
        let m = matched_examples(r"\Bab").unwrap();
        assert_eq!(m, [b"xabx".to_vec()]);
        // Nothing can match a word byte on both sides of a \B and a \b.
        assert!(matched_examples(r"a\Bb\bc").unwrap().is_empty());
    }
}
