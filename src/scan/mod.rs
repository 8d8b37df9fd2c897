//! Secret rules, the Hyperscan database, per-thread scratch, and masking.
//! Pure: no I/O beyond reading a rules file.

pub mod classes;
pub mod confirm;
pub mod engine;
pub mod examples;
pub mod prefilter;
pub mod report;
pub mod rules;
pub mod spelling;
pub mod values;

pub use engine::{Engine, Finding, Hit, Reach, ScanError};
pub use rules::{MaskKind, Rule, RuleFile, Validator};

/// The rules built into the binary: the project's `policies/secrets.toml`.
pub const BUILTIN_RULES: &str = include_str!("../../policies/secrets.toml");

/// Builds the rule list: a rules file (or the built-in rules), minus the
/// ids switched off, plus extra rules.
pub fn assemble(file: Option<&std::path::Path>, disabled: &[String], extra: Vec<Rule>) -> Result<Vec<Rule>, String> {
    let rf = match file {
        Some(p) => RuleFile::load(p).map_err(|e| e.to_string())?,
        None => RuleFile::parse(BUILTIN_RULES, "built-in secrets.toml").map_err(|e| e.to_string())?,
    };
    for d in disabled {
        if !rf.rules.iter().any(|r| &r.id == d) && !extra.iter().any(|r| &r.id == d) {
            return Err(format!("disabled_rules: no rule has the id `{d}`"));
        }
    }
    let mut rules: Vec<Rule> = rf.rules.into_iter().filter(|r| !disabled.contains(&r.id)).collect();
    for r in extra {
        if disabled.contains(&r.id) {
            continue;
        }
        if rules.iter().any(|x| x.id == r.id) {
            return Err(format!("rule `{}` is defined twice", r.id));
        }
        rules.push(r);
    }
    Ok(rules)
}
