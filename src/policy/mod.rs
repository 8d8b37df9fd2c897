//! The compiled statement policy: per role, what each statement class gets
//! (allow, hold for approval, deny), guardrails that deny outright, the
//! maximum rows per result, and who approves.
//!
//! Roles grant: an identity with several roles gets the most permissive
//! verdict any of them gives; guardrails apply whatever the roles.

pub mod budget;
pub mod reviews;

pub use budget::{Budget, Budgets, Meter};

use crate::config::{PolicyConfig, Verdict};
use crate::sql::{Classification, Flags, StatementClass};
use std::collections::BTreeMap;
use std::time::Duration;

/// One role's rules.
#[derive(Debug, Clone)]
pub struct RolePolicy {
    verdicts: [Verdict; 6],
    pub max_rows: Option<u64>,
    pub approvers: Vec<String>,
    pub approvals_required: u32,
    pub approval_timeout: Duration,
    /// Targets the role reaches; `None`: no restriction from the role.
    pub targets: Option<Vec<String>>,
    /// Target name (or `*`) → upstream account name.
    pub accounts: BTreeMap<String, String>,
    pub budget: Option<Budget>,
    pub unmasked_rules: Vec<String>,
    pub record_results: Option<crate::config::ResultsMode>,
}

#[derive(Debug, Clone)]
struct Guardrail {
    id: String,
    flag: String,
    message: String,
    roles: Vec<String>,
}

/// What to do with a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Hold until `required` approvals from members of `approvers` arrive,
    /// or `timeout` passes.
    Approve {
        approvers: Vec<String>,
        required: u32,
        timeout: Duration,
        class: StatementClass,
    },
    /// Refuse with this message (SQLSTATE 42501).
    Deny {
        message: String,
    },
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    roles: BTreeMap<String, RolePolicy>,
    default_role: Option<String>,
    guardrails: Vec<Guardrail>,
    /// Extra side-effect functions for the classifier.
    pub side_effect_functions: Vec<String>,
    /// Functions that only read whatever their catalog volatility says.
    pub read_functions: Vec<String>,
    /// Functions that change rows but neither delete nor change the schema.
    pub write_functions: Vec<String>,
    /// Reviews one identity may have pending at once.
    pub max_pending_reviews_per_identity: usize,
}

fn class_index(c: StatementClass) -> usize {
    match c {
        StatementClass::Read => 0,
        StatementClass::Write => 1,
        StatementClass::Delete => 2,
        StatementClass::Ddl => 3,
        StatementClass::Admin => 4,
        StatementClass::Unknown => 5,
    }
}

impl Policy {
    pub fn compile(cfg: &PolicyConfig) -> Policy {
        let roles = cfg
            .roles
            .iter()
            .map(|(name, r)| {
                (
                    name.clone(),
                    RolePolicy {
                        verdicts: [r.read, r.write, r.delete, r.ddl, r.admin, r.unknown],
                        max_rows: r.max_rows,
                        approvers: r.approvers.clone(),
                        approvals_required: r.approvals_required,
                        approval_timeout: Duration::from_secs(r.approval_timeout_secs),
                        targets: r.targets.clone(),
                        unmasked_rules: r.unmasked_rules.clone(),
                        record_results: r.record_results,
                        accounts: r.accounts.clone(),
                        budget: r.budget.as_ref().map(|b| {
                            Budget::from_config(
                                b,
                                &r.approvers,
                                r.approvals_required,
                                Duration::from_secs(r.approval_timeout_secs),
                            )
                        }),
                    },
                )
            })
            .collect();
        let guardrails = cfg
            .guardrails
            .iter()
            .map(|g| Guardrail {
                id: g.id.clone(),
                flag: g.flag.clone(),
                message: g.message.clone(),
                roles: g.roles.clone(),
            })
            .collect();
        Policy {
            roles,
            default_role: cfg.default_role.clone(),
            guardrails,
            side_effect_functions: cfg.side_effect_functions.clone(),
            read_functions: cfg.read_functions.clone(),
            write_functions: cfg.write_functions.clone(),
            max_pending_reviews_per_identity: cfg.max_pending_reviews_per_identity,
        }
    }

    /// The policies of an identity's roles (or the default role's).
    fn role_policies<'a>(&'a self, roles: &[String]) -> Vec<(&'a str, &'a RolePolicy)> {
        let mut out: Vec<(&str, &RolePolicy)> = roles
            .iter()
            .filter_map(|r| self.roles.get_key_value(r))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        if out.is_empty() {
            if let Some((k, v)) = self.default_role.as_ref().and_then(|d| self.roles.get_key_value(d)) {
                out.push((k.as_str(), v));
            }
        }
        out
    }

    /// The decision for a classified statement run by an identity with `roles`.
    pub fn decide(&self, roles: &[String], c: &Classification) -> Decision {
        self.decide_class(roles, c.class, c.flags())
    }

    /// The decision for a statement of `class` with `flags` (a
    /// classification raised by what the target's catalog says of its
    /// calls).
    pub fn decide_class(&self, roles: &[String], class: StatementClass, flags: Flags) -> Decision {
        let set = flags.names();
        for g in &self.guardrails {
            let applies = g.roles.is_empty() || g.roles.iter().any(|r| roles.contains(r));
            if applies && set.contains(&g.flag.as_str()) {
                return Decision::Deny {
                    message: format!("{} (guardrail {})", g.message, g.id),
                };
            }
        }
        let policies = self.role_policies(roles);
        if policies.is_empty() {
            return Decision::Deny {
                message: format!("no policy role applies to this identity (roles: {})", roles.join(", ")),
            };
        }
        let i = class_index(class);
        // Most permissive verdict over the roles: allow > approve > deny.
        let mut best: Option<(&str, &RolePolicy, Verdict)> = None;
        for (name, p) in policies {
            let v = p.verdicts[i];
            let better = matches!(
                (best.map(|b| b.2), v),
                (None, _)
                    | (Some(Verdict::Deny), Verdict::Approve | Verdict::Allow)
                    | (Some(Verdict::Approve), Verdict::Allow)
            );
            if better {
                best = Some((name, p, v));
            }
        }
        match best {
            Some((_, _, Verdict::Allow)) => Decision::Allow,
            Some((_, p, Verdict::Approve)) => Decision::Approve {
                approvers: p.approvers.clone(),
                required: p.approvals_required,
                timeout: p.approval_timeout,
                class,
            },
            Some((role, _, Verdict::Deny)) => Decision::Deny {
                message: format!("{} statements are denied for role {role} by policy", class.as_str()),
            },
            None => Decision::Deny {
                message: "denied by policy".into(),
            },
        }
    }

    /// Whether an identity with `roles` may not change anything without an
    /// approval: no class but `read` is allowed outright by any of its
    /// roles. Its upstream sessions then run read-only
    /// (`default_transaction_read_only`), so that a statement classified
    /// wrongly as a read fails at the server instead of writing.
    pub fn read_only(&self, roles: &[String]) -> bool {
        let policies = self.role_policies(roles);
        !policies.is_empty()
            && policies
                .iter()
                .all(|(_, p)| p.verdicts[1..].iter().all(|v| *v != Verdict::Allow))
    }

    /// Whether an identity with `roles` may reach `target`, and the upstream
    /// account it uses there (`None`: the target's default account). A
    /// role without `targets` reaches every target; with several roles, the
    /// first (by name) that reaches the target and names an account for it
    /// chooses the account.
    pub fn reach(&self, roles: &[String], target: &str) -> Result<Option<String>, String> {
        let policies = self.role_policies(roles);
        if policies.is_empty() {
            return Err(format!(
                "no policy role applies to this identity (roles: {})",
                roles.join(", ")
            ));
        }
        let reaching: Vec<&RolePolicy> = policies
            .iter()
            .filter(|(_, p)| {
                p.targets
                    .as_ref()
                    .is_none_or(|ts| ts.iter().any(|t| t == "*" || t == target))
            })
            .map(|(_, p)| *p)
            .collect();
        if reaching.is_empty() {
            let names: Vec<&str> = policies.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "none of the roles {} reaches target \"{target}\"",
                names.join(", ")
            ));
        }
        Ok(reaching
            .iter()
            .find_map(|p| p.accounts.get(target).or_else(|| p.accounts.get("*")))
            .filter(|a| a.as_str() != "default")
            .cloned())
    }

    /// The budget of an identity with `roles`: per limit the most generous
    /// of its roles'; none when a role has no budget at all.
    pub fn budget(&self, roles: &[String]) -> Option<Budget> {
        let policies = self.role_policies(roles);
        let mut out: Option<Budget> = None;
        for (_, p) in &policies {
            let b = p.budget.as_ref()?;
            out = Some(match out {
                None => b.clone(),
                Some(o) => o.most_generous(b),
            });
        }
        out
    }

    /// What of results to record for an identity with `roles`: the most
    /// detailed any of its roles asks for, else `default`.
    pub fn record_results(&self, roles: &[String], default: crate::config::ResultsMode) -> crate::config::ResultsMode {
        self.role_policies(roles)
            .iter()
            .filter_map(|(_, p)| p.record_results)
            .max()
            .unwrap_or(default)
    }

    /// The secret rule ids an identity with `roles` sees unmasked.
    pub fn unmasked_rules(&self, roles: &[String]) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (_, p) in self.role_policies(roles) {
            for r in &p.unmasked_rules {
                if !out.contains(&r.as_str()) {
                    out.push(r);
                }
            }
        }
        out
    }

    /// Every rule id some role names in `unmasked_rules` (checked against
    /// the rules when the state is built).
    pub fn named_rules(&self) -> impl Iterator<Item = (&str, &str)> {
        self.roles
            .iter()
            .flat_map(|(n, p)| p.unmasked_rules.iter().map(move |r| (n.as_str(), r.as_str())))
    }

    /// The largest result an identity may receive, if limited.
    pub fn max_rows(&self, roles: &[String]) -> Option<u64> {
        let p = self.role_policies(roles);
        if p.iter().any(|(_, r)| r.max_rows.is_none()) {
            return None;
        }
        p.iter().filter_map(|(_, r)| r.max_rows).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Classifier;

    fn policy() -> Policy {
        let cfg: PolicyConfig = toml::from_str(
            r#"
default_role = "agent"
[roles.agent]
write = "approve"
approvers = ["dba"]
max_rows = 100
[roles.dba]
read = "allow"
write = "allow"
delete = "allow"
ddl = "approve"
approvers = ["dba"]
[[guardrail]]
id = "no-drop"
flag = "drop"
message = "DROP is not allowed through gatehouse"
[[guardrail]]
id = "no-delete-all"
flag = "delete_without_where"
message = "DELETE without WHERE is not allowed"
"#,
        )
        .unwrap();
        Policy::compile(&cfg)
    }

    #[test]
    fn verdicts_by_class_and_role() {
        let p = policy();
        let c = Classifier::new(&[]);
        let agent = vec!["agent".to_string()];
        assert_eq!(p.decide(&agent, &c.classify("select 1")), Decision::Allow);
        assert!(matches!(
            p.decide(&agent, &c.classify("insert into t values (1)")),
            Decision::Approve { required: 1, .. }
        ));
        assert!(matches!(
            p.decide(&agent, &c.classify("create table x (a int)")),
            Decision::Deny { .. }
        ));
        assert!(matches!(
            p.decide(&agent, &c.classify("do $$ begin end $$")),
            Decision::Deny { .. }
        ));
        let dba = vec!["dba".to_string()];
        assert_eq!(
            p.decide(&dba, &c.classify("delete from t where id = 1")),
            Decision::Allow
        );
        assert!(matches!(
            p.decide(&dba, &c.classify("create table x (a int)")),
            Decision::Approve { .. }
        ));
        // Several roles: the most permissive verdict.
        let both = vec!["agent".to_string(), "dba".to_string()];
        assert_eq!(
            p.decide(&both, &c.classify("update t set a = 1 where id = 2")),
            Decision::Allow
        );
        // No role: the default role.
        assert!(matches!(
            p.decide(&[], &c.classify("insert into t values (1)")),
            Decision::Approve { .. }
        ));
        assert_eq!(p.max_rows(&agent), Some(100));
        assert_eq!(p.max_rows(&dba), None);
    }

    #[test]
    fn guardrails_deny_whatever_the_role() {
        let p = policy();
        let c = Classifier::new(&[]);
        let dba = vec!["dba".to_string()];
        let Decision::Deny { message } = p.decide(&dba, &c.classify("DROP TABLE t")) else {
            panic!()
        };
        assert!(message.contains("DROP is not allowed"), "{message}");
        assert!(matches!(
            p.decide(&dba, &c.classify("delete from t")),
            Decision::Deny { .. }
        ));
        assert!(matches!(
            p.decide(&dba, &c.classify("with d as (delete from t) select 1")),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn read_only_when_no_role_allows_a_change() {
        let p = policy();
        assert!(p.read_only(&["agent".to_string()]));
        assert!(!p.read_only(&["dba".to_string()]));
        assert!(!p.read_only(&["agent".to_string(), "dba".to_string()]));
        assert!(p.read_only(&[]), "the default role");
    }

    #[test]
    fn guardrail_flags_match_the_classifier() {
        assert_eq!(crate::config::GUARDRAIL_FLAGS, crate::sql::Flags::NAMES);
    }
}
