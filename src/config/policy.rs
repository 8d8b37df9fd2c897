//! `[policy]`: what each role's statements get, budgets, guardrails and who
//! approves.

use super::locate::{Invalid, PathPart};
use super::recording::ResultsMode;
use super::target::Target;
use serde::Deserialize;
use std::collections::HashSet;

/// What a statement of a class gets.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Approve,
    Deny,
}

/// Guardrail flags (the names of `sql::Flags`; a test keeps them equal).
pub const GUARDRAIL_FLAGS: &[&str] = &[
    "delete_without_where",
    "update_without_where",
    "drop",
    "truncate",
    "alter_system",
    "copy_program",
    "copy_from",
    "file_access",
    "set_role",
    "do_block",
    "call",
    "execute",
    "row_locks",
    "lock_table",
    "select_into",
    "upsert",
    "data_modifying_cte",
    "explain_analyze",
    "notify",
    "grant",
    "role_admin",
    "maintenance",
    "side_effect_function",
    "guarded_setting",
    "read_only_override",
    "lexical_setting",
    "volatile_function",
    "unresolved_function",
];

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The role of identities that carry none of the roles below.
    pub default_role: Option<String>,
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, RolePolicyConfig>,
    #[serde(default, rename = "guardrail")]
    pub guardrails: Vec<GuardrailConfig>,
    /// More functions with side effects, classed as admin when called.
    #[serde(default)]
    pub side_effect_functions: Vec<String>,
    /// Functions (optionally `schema.name`) that only read whatever their
    /// volatility says, e.g. an extension's `uuid_generate_v4`: calls of
    /// them stay reads. Others are classed by the target's catalog.
    #[serde(default)]
    pub read_functions: Vec<String>,
    /// Functions that insert or update rows but neither delete nor change
    /// the schema, e.g. `app.record_event`: calls of them are writes. Other
    /// volatile user functions are writes where the upstream session is
    /// read-only and `unknown` elsewhere (their effect cannot be seen).
    #[serde(default)]
    pub write_functions: Vec<String>,
    /// Statements of one identity waiting for review at once; past it a
    /// statement that needs approval is refused (53400) rather than held,
    /// so one agent cannot fill the reviewers' queue.
    #[serde(default = "default_pending_reviews")]
    pub max_pending_reviews_per_identity: usize,
}

fn default_pending_reviews() -> usize {
    20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePolicyConfig {
    #[serde(default = "allow")]
    pub read: Verdict,
    #[serde(default = "approve")]
    pub write: Verdict,
    #[serde(default = "approve")]
    pub delete: Verdict,
    #[serde(default = "deny")]
    pub ddl: Verdict,
    #[serde(default = "deny")]
    pub admin: Verdict,
    /// Statements gatehouse cannot classify are treated as the strictest class.
    #[serde(default = "deny")]
    pub unknown: Verdict,
    /// Rows per result; past it the result is cut with an error.
    pub max_rows: Option<u64>,
    /// Roles whose members may approve this role's held statements.
    #[serde(default)]
    pub approvers: Vec<String>,
    #[serde(default = "one")]
    pub approvals_required: u32,
    #[serde(default = "five_minutes")]
    pub approval_timeout_secs: u64,
    /// Targets members of this role reach, by name (`*`: all); absent: the
    /// role does not restrict reach (the identity's own `targets` still do).
    pub targets: Option<Vec<String>>,
    /// Target name (or `*`) → the target's `[[target.account]]` members of
    /// this role log in upstream as; otherwise the target's default account.
    #[serde(default)]
    pub accounts: std::collections::BTreeMap<String, String>,
    /// Limits per identity and minute, over all its sessions.
    pub budget: Option<BudgetConfig>,
    /// Results recorded for members of this role (over `[recording]
    /// results`); with several roles, the most detailed.
    pub record_results: Option<ResultsMode>,
    /// Secret rules (by id) whose findings members of this role see
    /// unmasked, e.g. a DBA role and `postgres-password-hash`. Every other
    /// rule masks. With several roles, a rule any role exempts is exempt.
    #[serde(default)]
    pub unmasked_rules: Vec<String>,
}

/// Per-identity limits per minute (a sliding minute). Past one, the
/// identity's next statements are held for approval or denied.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub statements_per_minute: Option<u64>,
    pub rows_per_minute: Option<u64>,
    pub bytes_per_minute: Option<u64>,
    /// `approve` (hold the statement for a reviewer; an approval for minutes
    /// lifts the budget for that long) or `deny`.
    #[serde(default = "approve")]
    pub action: Verdict,
}

fn allow() -> Verdict {
    Verdict::Allow
}
fn approve() -> Verdict {
    Verdict::Approve
}
fn deny() -> Verdict {
    Verdict::Deny
}
fn one() -> u32 {
    1
}
fn five_minutes() -> u64 {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailConfig {
    pub id: String,
    /// The statement flag that trips it (see `GUARDRAIL_FLAGS`).
    pub flag: String,
    /// What the client is told (SQLSTATE 42501).
    pub message: String,
    /// Roles it applies to; empty: everyone.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl PolicyConfig {
    /// Checks roles against the targets (`names`) and their accounts.
    pub(super) fn validate(&self, targets: &[Target], names: &HashSet<String>) -> Result<(), Invalid> {
        use PathPart::{Idx, Key};
        let p = self;
        if p.max_pending_reviews_per_identity == 0 {
            return Err((
                vec![Key("policy"), Key("max_pending_reviews_per_identity")],
                "must be at least 1".into(),
            ));
        }
        for (name, r) in &p.roles {
            let k = |k: &'static str| vec![Key("policy"), Key("roles"), PathPart::Name(name.clone()), Key(k)];
            if r.approvals_required == 0 {
                return Err((k("approvals_required"), "must be at least 1".into()));
            }
            if r.approval_timeout_secs == 0 {
                return Err((k("approval_timeout_secs"), "must be at least 1".into()));
            }
            if r.max_rows == Some(0) {
                return Err((k("max_rows"), "must be at least 1".into()));
            }
            let budget_holds = r.budget.as_ref().is_some_and(|b| b.action == Verdict::Approve);
            let holds =
                [r.read, r.write, r.delete, r.ddl, r.admin, r.unknown].contains(&Verdict::Approve) || budget_holds;
            if let Some(ts) = &r.targets {
                for (j, t) in ts.iter().enumerate() {
                    if t != "*" && !names.contains(t) {
                        let mut key = k("targets");
                        key.push(Idx(j));
                        return Err((key, format!("no target is named `{t}`")));
                    }
                }
            }
            for (target, account) in &r.accounts {
                let mut key = k("accounts");
                key.push(PathPart::Name(target.clone()));
                let reached = |t: &Target| {
                    r.targets
                        .as_ref()
                        .is_none_or(|ts| ts.iter().any(|x| x == "*" || x == &t.name))
                };
                let on: Vec<&Target> = if target == "*" {
                    targets.iter().filter(|t| reached(t)).collect()
                } else {
                    match targets.iter().find(|t| &t.name == target) {
                        Some(t) => vec![t],
                        None => return Err((key, format!("no target is named `{target}`"))),
                    }
                };
                for t in on {
                    if account != "default" && !t.accounts.iter().any(|a| &a.name == account) {
                        return Err((
                            key,
                            format!("target `{}` has no [[target.account]] named `{account}`", t.name),
                        ));
                    }
                }
            }
            if let Some(b) = &r.budget {
                let limits = [
                    ("statements_per_minute", b.statements_per_minute),
                    ("rows_per_minute", b.rows_per_minute),
                    ("bytes_per_minute", b.bytes_per_minute),
                ];
                if limits.iter().all(|(_, v)| v.is_none()) {
                    return Err((
                        k("budget"),
                        "give at least one of statements_per_minute, rows_per_minute, bytes_per_minute".into(),
                    ));
                }
                for (name, v) in limits {
                    if v == Some(0) {
                        let mut key = k("budget");
                        key.push(Key(name));
                        return Err((key, "must be at least 1".into()));
                    }
                }
                if b.action == Verdict::Allow {
                    let mut key = k("budget");
                    key.push(Key("action"));
                    return Err((key, "must be `approve` or `deny`".into()));
                }
            }
            if holds && r.approvers.is_empty() {
                return Err((
                    k("approvers"),
                    "a role with `approve` verdicts needs approver roles".into(),
                ));
            }
        }
        if let Some(d) = &p.default_role {
            if !p.roles.contains_key(d) {
                return Err((
                    vec![Key("policy"), Key("default_role")],
                    format!("no role `{d}` under [policy.roles]"),
                ));
            }
        }
        for (i, g) in p.guardrails.iter().enumerate() {
            if !GUARDRAIL_FLAGS.contains(&g.flag.as_str()) {
                return Err((
                    vec![Key("policy"), Key("guardrail"), Idx(i), Key("flag")],
                    format!(
                        "`{}` is not a statement flag; one of: {}",
                        g.flag,
                        GUARDRAIL_FLAGS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}
