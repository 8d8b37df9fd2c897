//! Secret rules, the Hyperscan database, per-thread scratch, and masking.
//! Pure: no I/O beyond reading a rules file.

pub mod engine;
pub mod rules;

pub use engine::{Engine, Finding, Hit, ScanError};
pub use rules::{MaskKind, Rule, RuleFile, Validator};
