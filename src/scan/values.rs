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
    seg.clear();
    ends.clear();
    for &(s, e, _) in values {
        seg.extend_from_slice(&buf[s..e]);
        ends.push(seg.len());
        seg.push(b'\n');
    }
    hits.clear();
    engine.scan_values(seg, ends, hits)?;
    let mut tmp = Vec::new();
    for h in hits.iter() {
        if applies.is_some_and(|m| !m.get(h.rule as usize).copied().unwrap_or(true)) {
            continue;
        }
        // The value the region is in (regions never span two). A match may
        // end one byte past its value: a pattern that ends in "a byte
        // outside the token's alphabet, or the end" takes the newline after
        // the value as that byte.
        let k = ends.partition_point(|&en| en + 1 < h.first_end);
        let Some(&(vs, ve, idx)) = values.get(k) else { continue };
        let st = if k == 0 { 0 } else { ends[k - 1] + 1 };
        let hit = Hit {
            rule: h.rule,
            first_end: vs + h.first_end.clamp(st, ends[k]) - st,
            last_end: vs + h.last_end.clamp(st, ends[k]) - st,
        };
        tmp.clear();
        engine.confirm(buf, vs, ve, &hit, super::engine::Reach::Value, &mut tmp);
        found.extend(tmp.iter().map(|x| (idx, *x)));
    }
    Ok(())
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
}
