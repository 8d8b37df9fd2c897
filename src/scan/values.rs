//! Many values scanned in one Hyperscan pass, each as the string it is
//! (for any protocol's rows, errors and notices).

use super::{Engine, Finding, Hit, ScanError};

/// Finds secrets in many values (`buf[s..e]`, each with an index) with one
/// Hyperscan pass: the values are copied into `seg`, each followed by a
/// newline. To the patterns (compiled multi-line) a newline is what the
/// edge of a value is to a value scanned alone: a non-word byte, the end and
/// the start of a line (a pattern anchored to the whole text, `\A` or
/// `\z`, would not be: such patterns are refused when rules load). So the bytes around a value in its message (a
/// length, a field code, the next message's tag) never decide whether a
/// pattern matches, and every hit is confirmed by the rule's regex on its
/// value alone. Appends (index, finding) to `found`.
#[allow(clippy::too_many_arguments)] // scratch buffers of the caller, passed apart to borrow them apart
pub fn find_in_values(
    engine: &Engine,
    buf: &[u8],
    values: &[(usize, usize, usize)],
    seg: &mut Vec<u8>,
    ends: &mut Vec<usize>,
    hits: &mut Vec<Hit>,
    found: &mut Vec<(usize, Finding)>,
    applies: Option<&[bool]>,
) -> Result<(), ScanError> {
    if values.is_empty() {
        return Ok(());
    }
    lay_out(buf, values, seg, ends);
    hits.clear();
    engine.scan_values(seg, ends, hits)?;
    if hits.is_empty() {
        return Ok(());
    }
    // By value, and in a value by rule as the hits came: a value's
    // findings so far are at hand when its next rule's hit is confirmed.
    // (Each value found once: a sort's key is computed many times.)
    let mut order: Vec<(usize, usize)> = hits.iter().enumerate().map(|(i, h)| (value_of(ends, h), i)).collect();
    order.sort_by_key(|&(k, _)| k);
    let mut confirmed = Vec::new();
    let mut current = usize::MAX;
    // Where the current value's findings begin in `found`.
    let mut value_from = found.len();
    for &(k, i) in &order {
        let h = &hits[i];
        if !super::engine::masks(applies, h.rule) {
            continue;
        }
        let Some((hit, (vs, ve, idx))) = in_value(values, ends, k, h) else {
            continue;
        };
        if k != current {
            current = k;
            value_from = found.len();
        }
        // A rule whose every secret here would lie inside one already
        // found is not confirmed: overlapping findings are merged into
        // the earlier, longer one (`resolve_overlaps`), so such a secret
        // changes nothing that is masked. (An AWS secret's value is met by
        // its own rule and by two generic assignment rules, each of which
        // would find the same bytes.)
        if let Some(extent) = engine.secret_extent(&hit, vs, ve) {
            let covered = found[value_from..]
                .iter()
                .any(|(_, f)| f.start <= extent.start && extent.end <= f.end);
            if covered {
                continue;
            }
        }
        engine.confirm(buf, vs, ve, &hit, super::engine::Reach::Value, &mut confirmed);
        found.extend(confirmed.drain(..).map(|x| (idx, x)));
    }
    Ok(())
}

/// Copies the values into `seg`, each followed by a newline; `ends[k]` is
/// where value `k` ends in `seg` (at its newline).
fn lay_out(buf: &[u8], values: &[(usize, usize, usize)], seg: &mut Vec<u8>, ends: &mut Vec<usize>) {
    seg.clear();
    ends.clear();
    for &(s, e, _) in values {
        seg.extend_from_slice(&buf[s..e]);
        ends.push(seg.len());
        seg.push(b'\n');
    }
}

/// The value (its place in `values` and `ends`) a hit of `scan_values`
/// over the laid-out values is in: regions never span two. A match may
/// end one byte past its value: a pattern that ends in "a byte outside
/// the token's alphabet, or the end" takes the newline after the value as
/// that byte.
fn value_of(ends: &[usize], h: &Hit) -> usize {
    ends.partition_point(|&en| en + 1 < h.first_end)
}

/// The hit `h` in value `k`, in `buf`'s offsets with its ends kept inside
/// the value, and the value (`values[k]`).
fn in_value(
    values: &[(usize, usize, usize)],
    ends: &[usize],
    k: usize,
    h: &Hit,
) -> Option<(Hit, (usize, usize, usize))> {
    let &(vs, ve, idx) = values.get(k)?;
    let st = if k == 0 { 0 } else { ends[k - 1] + 1 };
    let hit = Hit {
        rule: h.rule,
        first_end: vs + h.first_end.clamp(st, ends[k]) - st,
        last_end: vs + h.last_end.clamp(st, ends[k]) - st,
    };
    Some((hit, (vs, ve, idx)))
}

/// [`find_in_values`] with buffers of its own, every rule applying: for
/// tests.
#[cfg(test)]
pub(crate) fn find_all(engine: &Engine, buf: &[u8], values: &[(usize, usize, usize)]) -> Vec<(usize, Finding)> {
    let (mut seg, mut ends, mut hits, mut found) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    find_in_values(engine, buf, values, &mut seg, &mut ends, &mut hits, &mut found, None).expect("scan");
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::RuleFile;

    const RULE: &str = r#"
[[rule]]
id = "t"
name = "t"
pattern = '''\b(TOK-[A-Za-z0-9_-]{20})(?:[^A-Za-z0-9_-]|$)'''
keywords = ["tok-"]
"#;

    #[test]
    fn a_token_that_ends_its_value_is_found_when_the_rule_ends_in_a_class() {
        // The pattern ends in "outside the alphabet, or the end": in the
        // batch, the newline after a value is that byte.
        let rules = RuleFile::parse(RULE, "test").unwrap();
        let engine = Engine::new(&rules.rules, [0; 32]).unwrap();
        let token = "TOK-abcdefghij0123456789";
        for (middle, expect) in [
            (token.to_string(), 1),
            (format!("prefix {token}"), 1),
            (format!("{token} suffix"), 1),
            (format!("x{token}"), 0),
        ] {
            let buf = format!("first value{middle}second value");
            let (a, b) = (11, 11 + middle.len());
            let values = [(0, a, 0), (a, b, 1), (b, buf.len(), 2)];
            let found = find_all(&engine, buf.as_bytes(), &values);
            assert_eq!(found.len(), expect, "{middle:?}: {found:?}");
            assert!(found.iter().all(|(i, _)| *i == 1), "{found:?}");
        }
    }

    /// Every hit confirmed, none left out: what `find_in_values` must
    /// mask the same as. It shares `scan_values` and the choice of each
    /// hit's value with `find_in_values`, so a hit given to the wrong
    /// value is caught by its check that every finding lies in the
    /// extent `secret_extent` gave, not by the comparison.
    fn every_hit_confirmed(engine: &Engine, buf: &[u8], values: &[(usize, usize, usize)]) -> Vec<(usize, Finding)> {
        let (mut seg, mut ends) = (Vec::new(), Vec::new());
        lay_out(buf, values, &mut seg, &mut ends);
        let mut hits = Vec::new();
        engine.scan_values(&seg, &ends, &mut hits).expect("scan");
        let mut found = Vec::new();
        for h in &hits {
            let (hit, (vs, ve, idx)) = in_value(values, &ends, value_of(&ends, h), h).expect("a value");
            let mut out = Vec::new();
            engine.confirm(buf, vs, ve, &hit, crate::scan::Reach::Value, &mut out);
            if let Some(extent) = engine.secret_extent(&hit, vs, ve) {
                for f in &out {
                    assert!(
                        extent.start <= f.start && f.end <= extent.end,
                        "rule {}: {f:?} outside {extent:?} in {:?}",
                        engine.rule_id(f.rule),
                        String::from_utf8_lossy(&buf[vs..ve])
                    );
                }
            }
            found.extend(out.into_iter().map(|f| (idx, f)));
        }
        found
    }

    /// Findings per value as masking applies them (overlaps merged).
    fn masked(mut found: Vec<(usize, Finding)>) -> Vec<(usize, Finding)> {
        found.sort_by_key(|(i, _)| *i);
        let mut out = Vec::new();
        for chunk in found.chunk_by(|a, b| a.0 == b.0) {
            let mut fs: Vec<Finding> = chunk.iter().map(|(_, f)| *f).collect();
            crate::scan::engine::resolve_overlaps(&mut fs);
            out.extend(fs.into_iter().map(|f| (chunk[0].0, f)));
        }
        out
    }

    fn builtin() -> &'static Engine {
        static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
        ENGINE.get_or_init(|| {
            let rules = crate::scan::assemble(None, &[], Vec::new()).expect("built-in rules");
            Engine::new(&rules, [0; 32]).expect("engine")
        })
    }

    /// Values laid out one after another in one buffer, two bytes apart.
    fn laid_out(texts: &[String]) -> (Vec<u8>, Vec<(usize, usize, usize)>) {
        let mut buf = Vec::new();
        let mut values = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            buf.extend_from_slice(b"\x00\x00");
            values.push((buf.len(), buf.len() + t.len(), i));
            buf.extend_from_slice(t.as_bytes());
        }
        (buf, values)
    }

    const TWO_RULES: &str = r#"
[[rule]]
id = "key"
name = "key"
pattern = '''key=([a-z0-9]{20,40})\b'''
keywords = ["key="]

[[rule]]
id = "after-t"
name = "after-t"
pattern = '''[t=]([a-z0-9]{18,40})\b'''
keywords = ["t", "="]
"#;

    #[test]
    fn a_secret_inside_one_already_found_is_not_confirmed_again() {
        let rules = RuleFile::parse(TWO_RULES, "test").unwrap();
        let engine = Engine::new(&rules.rules, [0; 32]).unwrap();
        let (buf, values) = laid_out(&["key=a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5".to_string()]);
        let before = crate::scan::engine::CONFIRMATIONS.with(|c| c.get());
        let found = find_all(&engine, &buf, &values);
        let confirmed = crate::scan::engine::CONFIRMATIONS.with(|c| c.get()) - before;
        // `after-t` would find the same 30 bytes after the `=`.
        assert_eq!(confirmed, 1, "{found:?}");
        assert_eq!(
            masked(found.clone()),
            masked(every_hit_confirmed(&engine, &buf, &values))
        );
        let (start, end) = (values[0].0 + 4, values[0].1);
        assert_eq!(masked(found), vec![(0, Finding { rule: 0, start, end })]);
    }

    #[test]
    fn a_secret_that_begins_before_one_already_found_is_confirmed() {
        let rules = RuleFile::parse(TWO_RULES, "test").unwrap();
        let engine = Engine::new(&rules.rules, [0; 32]).unwrap();
        // `after-t` finds a secret of its own before the key's, or one
        // that begins at a `t` just before `key=`, or one after it.
        for text in [
            "t0123456789abcdefghijkkey=a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5",
            "tokey=a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5",
            "tkey=a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5 t1234567890abcdefghij",
        ] {
            let (buf, values) = laid_out(&[text.to_string()]);
            let found = find_all(&engine, &buf, &values);
            let every = every_hit_confirmed(&engine, &buf, &values);
            assert_eq!(masked(found), masked(every), "{text}");
        }
        // The key's secret and, before it, the one after the `t`.
        let (buf, values) = laid_out(&["ta1b2c3d4e5f6a7b8c9d0z key=a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5".to_string()]);
        let found = masked(find_all(&engine, &buf, &values));
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].1.rule, 1, "{found:?}");
    }

    fn keyword_dense_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            3 => proptest::sample::select(vec![
                "aws_secret_access_key", "AWS_SECRET", "secret", "client_secret", "api_key", "apikey",
                "access_key", "x-api-key", "token", "auth_token", "password", "passwd", "key", "AKIA",
                "AKIAC4CA4238A0B92382", "postgres://app:", "@db1.internal:5432/app", "mysql://u:",
                "ghp_", "xoxb-", "sk_live_", "Bearer ",
            ]).prop_map(String::from),
            3 => proptest::sample::select(vec![" = ", "=", ": ", ":", "\"", "'", " ", ",", "\n", "=>", "\\\""])
                .prop_map(String::from),
            3 => "[A-Za-z0-9/+=_~-]{8,48}",
            1 => "[a-f0-9]{16,64}",
        ];
        proptest::collection::vec(piece, 1..10).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Leaving out the hits whose secrets an earlier finding holds
        /// masks exactly what confirming every hit masks, with the
        /// built-in rules on values full of their keywords; and every
        /// finding of a rule cut in its secret lies where `secret_extent`
        /// says (checked inside `every_hit_confirmed`).
        #[test]
        fn leaving_out_covered_hits_masks_the_same(texts in proptest::collection::vec(keyword_dense_value(), 1..6)) {
            let engine = builtin();
            let (buf, values) = laid_out(&texts);
            let found = find_all(engine, &buf, &values);
            let every = every_hit_confirmed(engine, &buf, &values);
            proptest::prop_assert_eq!(masked(found), masked(every));
        }
    }

    #[test]
    fn a_secret_at_the_start_of_a_later_value_is_masked_under_a_rule_cut_to_no_bytes() {
        // `word-token`'s cut is `\b(` and no bytes: its empty match before
        // the value's first byte ends on the separator, which is the value
        // before's. Had that given a secret's extent, the later hit at the
        // token's end would have started it after the token, inside
        // `session-tail`'s finding, and the token would not be masked.
        let rules = RuleFile::parse(
            r#"
[[rule]]
id = "session-tail"
name = "session-tail"
pattern = '''(;\s*session=[A-Za-z0-9]{8,40})$'''

[[rule]]
id = "word-token"
name = "word-token"
pattern = '''\b([A-Z0-9]{0,32})(?:[^A-Za-z0-9]|$)'''
"#,
            "test",
        )
        .unwrap();
        let engine = Engine::new(&rules.rules, [0; 32]).unwrap();
        let (buf, values) = laid_out(&["id 7".to_string(), "K9Q2ZT7WX4M1;session=abcdEFGH1234".to_string()]);
        let found = masked(find_all(&engine, &buf, &values));
        let token = values[1].0..values[1].0 + 12;
        assert!(
            found
                .iter()
                .any(|(i, f)| *i == 1 && f.start <= token.start && token.end <= f.end),
            "{found:?}"
        );
        assert_eq!(found, masked(every_hit_confirmed(&engine, &buf, &values)));
    }

    /// A rule of generated parts: a prefix, the secret group (fixed items,
    /// then a repetition) and a suffix, with look-arounds in all three.
    fn generated_rule() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let prefix = proptest::sample::select(vec![
            "k=",
            r"key\s*[:=]\s*",
            "(?i)tok",
            "[t=]",
            r"\bx",
            "^a",
            "(?:ab|c)=",
            r"k(?s:.){0,4}?=",
            r"=\s?",
            "[=:]",
            r"\b",
            "x?=",
            "(?:k|ke)=",
            "[a-z]=",
            r"\B",
            "(?m:^)",
            r"\b(?:k|tok)\b[=:]?",
        ]);
        let fixed = proptest::sample::select(vec!["", "", "x", "[A-Z]", r"\b", "(?:ab|cd)", "-", "[0-9]", "^", r"\B"]);
        let item = proptest::sample::select(vec![
            "[a-z0-9]",
            "[^,]",
            r"\S",
            "(?:ab|cd)",
            ".",
            "[a-z0-9\\n]",
            r"\w",
            r"(?:[a-z]\b)",
            "[a-z0-9=]",
            "(?i)[a-f]",
            "(?s:.)",
            "[^a-z]",
        ]);
        let suffix = proptest::sample::select(vec![r"\b", "$", "(?:[^a-z0-9]|$)", ";", r"\B", "(?:,|$)", ""]);
        // Minimums of 0 to 2 often: a secret part of no bytes, or of one.
        let min = prop_oneof![0u32..3, 0u32..20];
        (prefix, fixed, item, 0u32..4, min, 0u32..10, suffix).prop_map(|(p, f, i, op, m, extra, s)| {
            let op = match op {
                0 => "?".to_string(),
                1 => format!("{{{m}}}"),
                2 => format!("{{{m},{}}}?", m + extra),
                _ => format!("{{{m},{}}}", m + extra),
            };
            format!("{p}({f}{i}{op}){s}")
        })
    }

    fn generated_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            2 => proptest::sample::select(vec![
                "k=", "key", "=", ":", " ", "tok", "TOK", "t", "x", "ab", "cd", "-", ",", "\n", ";", "K", "a",
            ]).prop_map(String::from),
            1 => "[abcdefxyz0-9ABX]{1,24}",
        ];
        proptest::collection::vec(piece, 1..9).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// The same with generated rules (a rule that takes a whole value
        /// among them, at any place in the order) on generated values:
        /// what is masked is what confirming every hit masks.
        #[test]
        fn leaving_out_covered_hits_masks_the_same_under_any_rules(
            mut patterns in proptest::collection::vec(generated_rule(), 2..5),
            container in proptest::option::of((
                proptest::sample::select(vec![r"=([a-z0-9=;:, \-]{4,60})$", r"(?i)key\s*[:=]\s*([^\n]{1,60})$", r"([a-z0-9]{6,60})$"]),
                0usize..5,
            )),
            texts in proptest::collection::vec(generated_value(), 2..5),
        ) {
            if let Some((c, at)) = container {
                patterns.insert(at.min(patterns.len()), c.to_string());
            }
            let rules: Vec<crate::scan::Rule> = patterns
                .iter()
                .enumerate()
                .map(|(i, p)| crate::scan::engine::tests::rule(&format!("r{i}"), p))
                .filter(|r| Engine::new(std::slice::from_ref(r), [0; 32]).is_ok())
                .collect();
            let Ok(engine) = Engine::new(&rules, [0; 32]) else { return Ok(()) };
            let (buf, values) = laid_out(&texts);
            let found = find_all(&engine, &buf, &values);
            let every = every_hit_confirmed(&engine, &buf, &values);
            proptest::prop_assert_eq!(masked(found), masked(every), "{:?} on {:?}", patterns, texts);
        }
    }
}
