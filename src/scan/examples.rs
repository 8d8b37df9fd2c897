//! The check that every rule's first pass finds its own pattern's
//! examples, made each time an engine is built.
//!
//! Hyperscan (the first pass) and the regex crate (confirmation) each read
//! a rule's pattern, and the rule's cut or its own prefilter besides. The
//! spellings known to be read differently are refused when rules load
//! (`spelling`), and the cuts are proven to be runs of the pattern
//! (`prefilter`). This check backs both with the compiled database itself:
//! examples are made from the pattern as the regex crate reads it (one
//! taking the shortest way at every choice, and one for each other way at
//! each choice: every alternative, a class's first and last word bytes and
//! a non-word byte, an optional part present and absent), the
//! regex keeps those it matches, and the first pass must report the rule
//! in each, scanned alone as a value. A rule it misses would let secrets of that shape through
//! unmasked, so the engine is refused, naming the rule and the example.

use super::rules::Rule;
use hyperscan::prelude::*;
use regex_automata::meta;
use regex_syntax::hir::{Class, Hir, HirKind};

/// The most examples made of a rule (the built-in rules need at most a
/// few dozen); a pattern with more ways is refused rather than checked in
/// part.
const MAX_EXAMPLES: usize = 4096;

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

/// Checks that `db` (the rules compiled for Hyperscan, pattern `k` with id
/// `k`) reports each rule in each of its examples, each scanned alone and
/// followed by a newline, as the engine scans a value.
pub fn check_first_pass(db: &BlockDatabase, rules: &[Rule]) -> Result<(), Missed> {
    let scratch = db.alloc_scratch().map_err(|e| Missed {
        rule: 0,
        reason: format!("no scratch to check the first pass with: {e}"),
    })?;
    let mut value = Vec::new();
    for (k, r) in rules.iter().enumerate() {
        let missed = |reason: String| Missed { rule: k, reason };
        let matched = matched_examples(&r.pattern).map_err(missed)?;
        if matched.is_empty() {
            return Err(missed(format!(
                "no example of the pattern could be made (can it match anything in {MAX_EXAMPLE_LEN} bytes?)"
            )));
        }
        for ex in matched {
            value.clear();
            value.extend_from_slice(&ex);
            value.push(b'\n');
            let mut found = false;
            let scanned = db.scan(&value, &scratch, |id: u32, _from: u64, _to: u64, _flags: u32| {
                found |= id as usize == k;
                if found {
                    Matching::Terminate
                } else {
                    Matching::Continue
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
        }
    }
    Ok(())
}

/// The examples of `pattern` its regex matches (an example may break one
/// of the pattern's assertions, `\b` among them; such are tried again
/// between spaces and between word bytes).
fn matched_examples(pattern: &str) -> Result<Vec<Vec<u8>>, String> {
    let hir = super::rules::parse(pattern)?;
    let re = meta::Builder::new()
        .configure(
            // The examples are short: the NFA simulation alone answers,
            // without building the faster engines.
            meta::Config::new()
                .utf8_empty(false)
                // Confirmation's limit, so that no rule it builds is refused.
                .nfa_size_limit(Some(32 << 20))
                .hybrid(false)
                .dfa(false)
                .onepass(false)
                .backtrack(false),
        )
        .build_from_hir(&hir)
        .map_err(|e| format!("the pattern's regex cannot be built: {e}"))?;
    Ok(of(&hir)?
        .into_iter()
        .filter_map(|ex| {
            [
                ex.clone(),
                [b" ".as_slice(), &ex, b" "].concat(),
                [b"x".as_slice(), &ex, b"x"].concat(),
            ]
            .into_iter()
            .find(|candidate| re.is_match(regex_automata::Input::new(candidate)))
        })
        .collect())
}

/// Examples of what `hir` matches, leaving out its assertions: the first
/// takes the shortest way at every choice, each other takes one other way
/// at one choice (another alternative, a class's other kind of byte, an
/// optional part present or absent). Refused when there are more than
/// [`MAX_EXAMPLES`]: a pattern is checked whole or not at all.
pub fn of(hir: &Hir) -> Result<Vec<Vec<u8>>, String> {
    let out = ways(hir);
    if out.len() > MAX_EXAMPLES {
        return Err(format!(
            "the pattern has more than {MAX_EXAMPLES} ways to match (alternatives, classes, optional parts) to check"
        ));
    }
    Ok(out)
}

/// The ways `hir` may match, at most one more than [`MAX_EXAMPLES`] (so
/// that the caller can tell there were too many).
fn ways(hir: &Hir) -> Vec<Vec<u8>> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => vec![Vec::new()],
        HirKind::Literal(l) => vec![l.0.to_vec()],
        HirKind::Class(c) => class_members(c),
        HirKind::Capture(c) => ways(&c.sub),
        HirKind::Repetition(r) => {
            // Repeated at its minimum, and at least once, so that what is
            // repeated is checked too; an optional part also absent.
            let times = r.min.max(1) as usize;
            let mut out: Vec<Vec<u8>> = if r.max == Some(0) {
                Vec::new()
            } else {
                ways(&r.sub)
                    .into_iter()
                    .filter(|w| w.len().saturating_mul(times) <= MAX_EXAMPLE_LEN)
                    .map(|w| w.repeat(times))
                    .collect()
            };
            if r.min == 0 {
                out.push(Vec::new());
            }
            out
        }
        HirKind::Alternation(branches) => {
            let mut out: Vec<Vec<u8>> = Vec::new();
            for b in branches {
                out.extend(ways(b));
                if out.len() > MAX_EXAMPLES {
                    break;
                }
            }
            out
        }
        HirKind::Concat(items) => {
            let per_item: Vec<Vec<Vec<u8>>> = items.iter().map(ways).collect();
            // Each item's shortest way, that the others have room.
            let Some(shortest) = per_item
                .iter()
                .map(|w| (0..w.len()).min_by_key(|&i| w[i].len()))
                .collect::<Option<Vec<usize>>>()
            else {
                return Vec::new(); // a part nothing matches
            };
            let with = |item: usize, way: usize| -> Option<Vec<u8>> {
                let mut e = Vec::new();
                for (i, w) in per_item.iter().enumerate() {
                    e.extend_from_slice(&w[if i == item { way } else { shortest[i] }]);
                    if e.len() > MAX_EXAMPLE_LEN {
                        return None;
                    }
                }
                Some(e)
            };
            let mut out: Vec<Vec<u8>> = with(usize::MAX, 0).into_iter().collect();
            for (i, w) in per_item.iter().enumerate() {
                for way in (0..w.len()).filter(|&k| k != shortest[i]) {
                    if out.len() > MAX_EXAMPLES {
                        return out;
                    }
                    out.extend(with(i, way));
                }
            }
            out
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
        assert_eq!(examples(r"\b(AKIA|ASIA)[A-Z]{3}\b"), ["AKIAAAA", "ASIAAAA", "AKIAZZZ"]);
        assert_eq!(examples(r"k[a-z_.]{2,5}"), ["k__", "kzz", "k.."]);
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
            let missed = check_first_pass(&first_pass(pattern), &[rule(pattern)]).expect_err(pattern);
            assert_eq!(missed.rule, 0);
            assert!(missed.reason.contains("tok_"), "{pattern}: {missed:?}");
        }
        // Read alike, found.
        let ok = r"\btok_[a-z]{13}\b";
        check_first_pass(&first_pass(ok), &[rule(ok)]).unwrap();
    }

    #[test]
    fn every_alternative_is_checked() {
        // A first pass that knows only the first alternative misses the
        // second's example.
        let pattern = r"(?:alpha|beta)_[a-z]{8}";
        let missed = check_first_pass(&first_pass(r"alpha_[a-z]{8}"), &[rule(pattern)]).unwrap_err();
        assert!(missed.reason.contains("\"beta_aaaaaaaa\""), "{missed:?}");
        check_first_pass(&first_pass(pattern), &[rule(pattern)]).unwrap();
        // However many alternatives there are, the last is checked too.
        let keywords: Vec<String> = (0..500).map(|k| format!("kw{k}")).collect();
        let all = format!("(?:{})_[a-z]{{8}}", keywords.join("|"));
        let but_last = format!("(?:{})_[a-z]{{8}}", keywords[..499].join("|"));
        let missed = check_first_pass(&first_pass(&but_last), &[rule(&all)]).unwrap_err();
        assert!(missed.reason.contains("\"kw499_aaaaaaaa\""), "{missed:?}");
        // More ways than are checked: refused, not checked in part.
        let keywords: Vec<String> = (0..5000).map(|k| format!("kw{k}")).collect();
        let too_many = format!("(?:{})_[a-z]{{8}}", keywords.join("|"));
        let missed = check_first_pass(&first_pass("kw"), &[rule(&too_many)]).unwrap_err();
        assert!(missed.reason.contains("more than 4096 ways"), "{missed:?}");
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
            check_first_pass(&first_pass(read_as), &[rule(rule_pattern)]).expect_err(rule_pattern);
            check_first_pass(&first_pass(rule_pattern), &[rule(rule_pattern)]).unwrap();
        }
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
        let missed = check_first_pass(&db, &rules).unwrap_err();
        assert_eq!(missed.rule, 0);
        assert!(missed.reason.contains("\"key_0000\""), "{missed:?}");
    }

    #[test]
    fn a_rule_no_example_can_be_made_of_is_refused() {
        // Hyperscan refuses such a pattern itself when it can tell; the
        // check does not rely on it.
        let missed = check_first_pass(&first_pass("tok_"), &[rule(r"tok_[a-z]{4}\Ba\b\Bb")]).unwrap_err();
        assert!(missed.reason.contains("no example"), "{missed:?}");
    }

    #[test]
    fn nested_repetitions_make_no_example_longer_than_a_window() {
        let nested = r"(?:(?:a{999}){999}){999}";
        assert!(examples(nested).is_empty());
        let missed = check_first_pass(&first_pass("a"), &[rule(nested)]).unwrap_err();
        assert!(missed.reason.contains("cannot be built"), "{missed:?}");
        let longer_than_a_window = r"(?:a{100}){100}";
        let missed = check_first_pass(&first_pass("a"), &[rule(longer_than_a_window)]).unwrap_err();
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
