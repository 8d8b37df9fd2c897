//! Secret rules: gatehouse's own TOML format.
//!
//! ```toml
//! [[rule]]
//! id = "aws-access-key-id"          # stable id, used in masks and config overrides
//! name = "AWS access key ID"
//! pattern = '''\b((?:AKIA|ASIA)[A-Z0-9]{16})\b'''   # group 1, when present, is the secret
//! keywords = ["akia", "asia"]       # optional literals (case-insensitive) that any match contains
//! entropy = 3.0                     # optional: minimum Shannon entropy (bits/byte) of the secret
//! validator = "crc32-base62"        # optional: a checksum the token format carries
//! mask = "redact"                   # redact | partial | hash (default redact)
//! ```
//!
//! A rule may also give a `prefilter`: what the first pass looks for
//! instead of its pattern. It is for a pattern whose leading literal is
//! short and common (the Salesforce token `00…!…` gives
//! `prefilter = '''[A-Za-z0-9]{13}!'''`): Hyperscan starts the rule at
//! every place that literal occurs, in every timestamp and decimal, at
//! several times the cost of all other rules together. The prefilter must
//! be the pattern's own text for consecutive items of it, parse as a run
//! of its parts (groups opened up) and end inside or after the secret:
//! every match of the pattern then holds a match of the prefilter, and
//! confirmation finds the whole match around it. Anything else is refused
//! when the rules load (`prefilter::check_run` says why each condition).
//!
//! A pattern is read by Hyperscan and by the regex crate, and must mean
//! the same to both: spellings they read differently are refused when the
//! rules load (`spelling`), and each engine build compares every class
//! byte for byte (`classes`) and checks that the first pass finds examples
//! of every rule (`examples`).

use serde::Deserialize;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: rule {id}: {message}")]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub id: String,
    pub message: String,
}

/// How a found secret is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MaskKind {
    /// The value becomes `[MASKED:<rule-id>]`.
    #[default]
    Redact,
    /// Everything but the last 4 characters becomes `*`.
    Partial,
    /// A stable keyed token `[HASH:<rule-id>:<16 hex>]`: equal secrets give equal tokens.
    Hash,
}

/// Checks a candidate must pass, for token formats that carry one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Validator {
    /// GitHub- and npm-style tokens: `<prefix>_` + body + 6 base62 digits of CRC32(body).
    Crc32Base62,
    /// Payment card numbers.
    Luhn,
    /// A JWT whose header decodes to a JSON object with `alg`.
    Jwt,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    pub name: String,
    pub pattern: String,
    #[serde(default)]
    pub keywords: Vec<String>,
    pub entropy: Option<f64>,
    pub validator: Option<Validator>,
    #[serde(default)]
    pub mask: MaskKind,
    /// Which capture group is the secret (default: 1 when the pattern has a
    /// group, else the whole match).
    pub group: Option<usize>,
    /// What the first pass looks for instead of the pattern (see the
    /// module's notes); checked by [`super::prefilter::check_run`].
    #[serde(default)]
    pub prefilter: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

impl RuleFile {
    pub fn parse(text: &str, file: &str) -> Result<RuleFile, RuleError> {
        let rf: RuleFile = toml::from_str(text).map_err(|e| RuleError {
            file: file.into(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(0),
            id: "-".into(),
            message: e.message().to_string(),
        })?;
        let mut seen = std::collections::HashSet::new();
        for r in &rf.rules {
            let err = |message: String| RuleError {
                file: file.into(),
                line: line_of_id(text, &r.id),
                id: r.id.clone(),
                message,
            };
            if r.id.is_empty()
                || !r
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err(err(
                    "id must be non-empty and use only letters, digits, '-', '_' and '.'".into(),
                ));
            }
            if !seen.insert(r.id.clone()) {
                return Err(err("id used twice".into()));
            }
            let captures = capture_groups(&r.pattern).map_err(|e| err(format!("pattern: {e}")))?;
            if let Some(g) = r.group {
                if g > captures {
                    return Err(err(format!("group {g} does not exist in the pattern")));
                }
            }
            if let Some(pre) = &r.prefilter {
                let group = r.group.unwrap_or(if captures > 0 { 1 } else { 0 });
                super::prefilter::check_run(&r.pattern, pre, group).map_err(|e| err(format!("prefilter: {e}")))?;
            }
            if let Some(e) = r.entropy {
                if !(0.0..=8.0).contains(&e) {
                    return Err(err("entropy must be between 0 and 8 bits per byte".into()));
                }
            }
        }
        Ok(rf)
    }

    pub fn load(path: &Path) -> Result<RuleFile, RuleError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RuleError {
            file: file.clone(),
            line: 0,
            id: "-".into(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &file)
    }
}

/// A rule's pattern (or a part of one) as the scanner reads it: bytes,
/// ASCII classes (as Hyperscan without UCP: tokens are ASCII, and Unicode
/// classes would make every regex many times larger), and `^`/`$` as line
/// anchors, as Hyperscan compiles the patterns.
pub fn parse(pattern: &str) -> Result<regex_syntax::hir::Hir, String> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .multi_line(true)
        .build()
        .parse(pattern)
        .map_err(|e| e.to_string())
}

/// Checks a pattern's syntax without compiling it; returns its number of
/// capture groups. Spellings Hyperscan reads otherwise than the regex crate
/// are refused (`spelling`).
///
/// A pattern anchored to the start or end of the scanned text (`\A`, `\z`,
/// or `^`/`$` under `(?-m)`) is refused: values are scanned many to a
/// buffer, one per line, and such an anchor would match only the first or
/// last of them, so the others would go unmasked. `^` and `$` (line
/// anchors: every value is a line of its own) do what such a rule means.
pub fn capture_groups(pattern: &str) -> Result<usize, String> {
    let hir = parse(pattern)?;
    super::spelling::check(pattern)?;
    let looks = hir.properties().look_set();
    if looks.contains(regex_syntax::hir::Look::Start) || looks.contains(regex_syntax::hir::Look::End) {
        return Err(
            "anchored to the start or end of the scanned text (\\A, \\z, or ^/$ under (?-m)); values are scanned one per line: use ^ and $"
                .into(),
        );
    }
    Ok(hir.properties().explicit_captures_len())
}

/// Compiles every rule's regex once (for `gatehouse check`), naming the
/// first that fails.
pub fn compile_all(rules: &[Rule]) -> Result<(), String> {
    for r in rules {
        super::confirm::check(&r.pattern).map_err(|e| format!("rule {}: {e}", r.id))?;
    }
    Ok(())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

fn line_of_id(text: &str, id: &str) -> usize {
    let needle = format!("\"{id}\"");
    text.lines()
        .position(|l| l.trim_start().starts_with("id") && l.contains(&needle))
        .map(|i| i + 1)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::capture_groups;

    #[test]
    fn patterns_anchored_to_the_scanned_text_are_refused() {
        for bad in [
            r"\A(\$2[aby]\$\d\d\$[./A-Za-z0-9]{53})",
            r"key-[0-9]{8}\z",
            r"(?-m)^(tok_[a-z]{10})$",
        ] {
            let e = capture_groups(bad).unwrap_err();
            assert!(e.contains("anchored"), "{bad}: {e}");
        }
        // Line anchors and word boundaries are what a rule means.
        assert_eq!(capture_groups(r"^(tok_[a-z]{10})$").unwrap(), 1);
        assert_eq!(capture_groups(r"\b(AKIA[A-Z0-9]{16})\b").unwrap(), 1);
    }
}
