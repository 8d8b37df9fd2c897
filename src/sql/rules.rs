//! Per-statement rules: the class a top-level statement starts from, raised
//! by what a complete walk of its tree finds (see [`super::walk`]).

use pg_query::protobuf::{a_const, AExprKind, BoolExprType, ObjectType, TransactionStmtKind, VariableSetKind};
use pg_query::{Node, NodeEnum};

use super::functions::{self, FunctionTable, Setting};
use super::shape;
use super::walk::{walk, Facts};
use super::{Flags, StatementClass, StatementInfo};

use StatementClass::{Admin, Ddl, Delete, Read, Unknown, Write};

/// EXPLAIN ANALYZE and PREPARE wrap one statement; the grammar allows no
/// deeper nesting, and this bound says so.
const MAX_WRAP_DEPTH: u8 = 4;

/// Classify one top-level statement.
pub(super) fn statement(node: &NodeEnum, table: &FunctionTable, depth: u8) -> StatementInfo {
    let mut info = StatementInfo::default();
    if depth > MAX_WRAP_DEPTH {
        info.class = Unknown;
        info.command = "UNKNOWN".into();
        return info;
    }
    let (class, command): (StatementClass, String) = match node {
        // Wrappers: classified by what they wrap.
        NodeEnum::ExplainStmt(e) => {
            let inner = e.query.as_deref().and_then(|n| n.node.as_ref());
            let inner = match inner {
                Some(n) => statement(n, table, depth + 1),
                None => return unknown(info, "EXPLAIN"),
            };
            if explain_analyzes(&e.options) {
                // ANALYZE executes the statement: it is what it runs.
                let mut info = inner;
                info.command = "EXPLAIN ANALYZE".into();
                info.flags.explain_analyze = true;
                return info;
            }
            // A plan is only computed; nothing is executed.
            info.command = "EXPLAIN".into();
            info.tables = inner.tables;
            return info;
        }
        NodeEnum::PrepareStmt(p) => {
            let Some(inner) = p.query.as_deref().and_then(|n| n.node.as_ref()) else {
                return unknown(info, "PREPARE");
            };
            let mut info = statement(inner, table, depth + 1);
            info.command = "PREPARE".into();
            info.prepared.push(p.name.clone());
            return info;
        }

        // Queries and data changes.
        NodeEnum::SelectStmt(_) => (Read, "SELECT".into()),
        NodeEnum::InsertStmt(_) => (Write, "INSERT".into()),
        NodeEnum::UpdateStmt(_) => (Write, "UPDATE".into()),
        NodeEnum::DeleteStmt(_) => (Delete, "DELETE".into()),
        NodeEnum::MergeStmt(_) => (Write, "MERGE".into()),
        NodeEnum::CopyStmt(c) => {
            let mut class = if c.is_from { Write } else { Read };
            info.flags.copy_from = c.is_from;
            if let Some(r) = c.relation.as_ref().filter(|_| c.is_from) {
                let name = if r.schemaname.is_empty() {
                    r.relname.clone()
                } else {
                    format!("{}.{}", r.schemaname, r.relname)
                };
                // COPY into a system catalog (a superuser upstream may).
                if let Some(settings) = system_relation(&name) {
                    class = Admin;
                    info.flags.guarded_setting |= settings;
                }
            }
            if c.is_program {
                class = Admin;
                info.flags.copy_program = true;
            } else if !c.filename.is_empty() {
                class = Admin;
                info.flags.file_access = true;
            }
            (class, if c.is_from { "COPY FROM" } else { "COPY TO" }.into())
        }
        NodeEnum::DeclareCursorStmt(d) => {
            info.cursors.push(d.portalname.clone());
            (Read, "DECLARE CURSOR".into())
        }
        NodeEnum::FetchStmt(f) => (Read, if f.ismove { "MOVE" } else { "FETCH" }.into()),
        NodeEnum::ClosePortalStmt(_) => (Read, "CLOSE".into()),
        NodeEnum::ExecuteStmt(_) => {
            // The prepared statement's text lives in the session; this
            // classifier sees only `EXECUTE name`.
            info.flags.execute = true;
            (Unknown, "EXECUTE".into())
        }
        NodeEnum::DeallocateStmt(_) => (Read, "DEALLOCATE".into()),
        NodeEnum::TruncateStmt(_) => {
            info.flags.truncate = true;
            (Delete, "TRUNCATE".into())
        }
        NodeEnum::LockStmt(_) => {
            info.flags.lock_table = true;
            (Write, "LOCK TABLE".into())
        }
        NodeEnum::RefreshMatViewStmt(_) => (Write, "REFRESH MATERIALIZED VIEW".into()),
        NodeEnum::NotifyStmt(_) => {
            info.flags.notify = true;
            (Write, "NOTIFY".into())
        }
        NodeEnum::ListenStmt(_) => (Read, "LISTEN".into()),
        NodeEnum::UnlistenStmt(_) => (Read, "UNLISTEN".into()),

        // Session and transaction control.
        NodeEnum::TransactionStmt(t) => transaction(t, &mut info.flags),
        NodeEnum::VariableSetStmt(v) => set(v, &mut info.flags),
        NodeEnum::VariableShowStmt(_) => (Read, "SHOW".into()),
        NodeEnum::DiscardStmt(_) => (Read, "DISCARD".into()),
        NodeEnum::ConstraintsSetStmt(_) => (Read, "SET CONSTRAINTS".into()),

        // Arbitrary code.
        NodeEnum::DoStmt(_) => {
            info.flags.do_block = true;
            (Unknown, "DO".into())
        }
        NodeEnum::CallStmt(c) => {
            info.flags.call = true;
            // The procedure is a side effect by definition.
            if let Some(f) = c.funccall.as_deref() {
                let name = f
                    .funcname
                    .iter()
                    .filter_map(|n| match n.node.as_ref() {
                        Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join(".");
                info.functions.push(name);
            }
            (Unknown, "CALL".into())
        }

        // Dropping things.
        NodeEnum::DropStmt(d) => {
            info.flags.drop = true;
            (Ddl, format!("DROP {}", object_words(d.remove_type)))
        }
        NodeEnum::DropdbStmt(_) => {
            info.flags.drop = true;
            (Ddl, "DROP DATABASE".into())
        }
        NodeEnum::DropOwnedStmt(_) => {
            info.flags.drop = true;
            (Ddl, "DROP OWNED".into())
        }
        NodeEnum::DropTableSpaceStmt(_) => {
            info.flags.drop = true;
            (Admin, "DROP TABLESPACE".into())
        }
        NodeEnum::DropSubscriptionStmt(_) => {
            info.flags.drop = true;
            (Admin, "DROP SUBSCRIPTION".into())
        }
        NodeEnum::DropUserMappingStmt(_) => {
            info.flags.drop = true;
            (Admin, "DROP USER MAPPING".into())
        }
        NodeEnum::DropRoleStmt(_) => {
            info.flags.drop = true;
            info.flags.role_admin = true;
            (Admin, "DROP ROLE".into())
        }

        // Privileges and roles.
        NodeEnum::GrantStmt(g) => {
            info.flags.grant = true;
            (Admin, if g.is_grant { "GRANT" } else { "REVOKE" }.into())
        }
        NodeEnum::GrantRoleStmt(g) => {
            info.flags.grant = true;
            (Admin, if g.is_grant { "GRANT" } else { "REVOKE" }.into())
        }
        NodeEnum::AlterDefaultPrivilegesStmt(_) => {
            info.flags.grant = true;
            (Admin, "ALTER DEFAULT PRIVILEGES".into())
        }
        NodeEnum::CreateRoleStmt(_) => {
            info.flags.role_admin = true;
            (Admin, "CREATE ROLE".into())
        }
        NodeEnum::AlterRoleStmt(_) | NodeEnum::AlterRoleSetStmt(_) => {
            info.flags.role_admin = true;
            (Admin, "ALTER ROLE".into())
        }
        NodeEnum::ReassignOwnedStmt(_) => (Admin, "REASSIGN OWNED".into()),
        NodeEnum::AlterOwnerStmt(a) => (Admin, format!("ALTER {} OWNER", object_words(a.object_type))),
        NodeEnum::SecLabelStmt(_) => (Admin, "SECURITY LABEL".into()),

        // The server, its files, its maintenance.
        NodeEnum::AlterSystemStmt(_) => {
            info.flags.alter_system = true;
            (Admin, "ALTER SYSTEM".into())
        }
        NodeEnum::LoadStmt(_) => (Admin, "LOAD".into()),
        NodeEnum::CheckPointStmt(_) => (Admin, "CHECKPOINT".into()),
        NodeEnum::VacuumStmt(v) => {
            info.flags.maintenance = true;
            (Admin, if v.is_vacuumcmd { "VACUUM" } else { "ANALYZE" }.into())
        }
        NodeEnum::ClusterStmt(_) => {
            info.flags.maintenance = true;
            (Admin, "CLUSTER".into())
        }
        NodeEnum::ReindexStmt(_) => {
            info.flags.maintenance = true;
            (Admin, "REINDEX".into())
        }
        NodeEnum::CreatedbStmt(_) => (Admin, "CREATE DATABASE".into()),
        NodeEnum::AlterDatabaseStmt(_)
        | NodeEnum::AlterDatabaseSetStmt(_)
        | NodeEnum::AlterDatabaseRefreshCollStmt(_) => (Admin, "ALTER DATABASE".into()),
        NodeEnum::CreateTableSpaceStmt(_) => (Admin, "CREATE TABLESPACE".into()),
        NodeEnum::AlterTableSpaceOptionsStmt(_) => (Admin, "ALTER TABLESPACE".into()),
        NodeEnum::AlterTableMoveAllStmt(_) => (Admin, "ALTER TABLE ALL IN TABLESPACE".into()),
        NodeEnum::CreateExtensionStmt(_) => (Admin, "CREATE EXTENSION".into()),
        NodeEnum::AlterExtensionStmt(_) | NodeEnum::AlterExtensionContentsStmt(_) => (Admin, "ALTER EXTENSION".into()),
        NodeEnum::CreatePlangStmt(_) => (Admin, "CREATE LANGUAGE".into()),
        NodeEnum::CreateAmStmt(_) => (Admin, "CREATE ACCESS METHOD".into()),
        NodeEnum::CreateEventTrigStmt(_) => (Admin, "CREATE EVENT TRIGGER".into()),
        NodeEnum::AlterEventTrigStmt(_) => (Admin, "ALTER EVENT TRIGGER".into()),
        NodeEnum::CreateFdwStmt(_) => (Admin, "CREATE FOREIGN DATA WRAPPER".into()),
        NodeEnum::AlterFdwStmt(_) => (Admin, "ALTER FOREIGN DATA WRAPPER".into()),
        NodeEnum::CreateForeignServerStmt(_) => (Admin, "CREATE SERVER".into()),
        NodeEnum::AlterForeignServerStmt(_) => (Admin, "ALTER SERVER".into()),
        NodeEnum::CreateUserMappingStmt(_) => (Admin, "CREATE USER MAPPING".into()),
        NodeEnum::AlterUserMappingStmt(_) => (Admin, "ALTER USER MAPPING".into()),
        NodeEnum::CreatePublicationStmt(_) => (Admin, "CREATE PUBLICATION".into()),
        NodeEnum::AlterPublicationStmt(_) => (Admin, "ALTER PUBLICATION".into()),
        NodeEnum::CreateSubscriptionStmt(_) => (Admin, "CREATE SUBSCRIPTION".into()),
        NodeEnum::AlterSubscriptionStmt(_) => (Admin, "ALTER SUBSCRIPTION".into()),

        // Schema changes.
        NodeEnum::CreateStmt(_) => (Ddl, "CREATE TABLE".into()),
        NodeEnum::CreateTableAsStmt(c) => {
            let what = if c.objtype == ObjectType::ObjectMatview as i32 {
                "CREATE MATERIALIZED VIEW"
            } else {
                "CREATE TABLE AS"
            };
            (Ddl, what.into())
        }
        NodeEnum::ViewStmt(_) => (Ddl, "CREATE VIEW".into()),
        NodeEnum::IndexStmt(_) => (Ddl, "CREATE INDEX".into()),
        NodeEnum::AlterTableStmt(a) => (Ddl, format!("ALTER {}", object_words(a.objtype))),
        NodeEnum::CreateSchemaStmt(_) => (Ddl, "CREATE SCHEMA".into()),
        NodeEnum::CreateSeqStmt(_) => (Ddl, "CREATE SEQUENCE".into()),
        NodeEnum::AlterSeqStmt(_) => (Ddl, "ALTER SEQUENCE".into()),
        NodeEnum::DefineStmt(d) => (Ddl, format!("CREATE {}", object_words(d.kind))),
        NodeEnum::CreateDomainStmt(_) => (Ddl, "CREATE DOMAIN".into()),
        NodeEnum::AlterDomainStmt(_) => (Ddl, "ALTER DOMAIN".into()),
        NodeEnum::CompositeTypeStmt(_) | NodeEnum::CreateEnumStmt(_) | NodeEnum::CreateRangeStmt(_) => {
            (Ddl, "CREATE TYPE".into())
        }
        NodeEnum::AlterEnumStmt(_) | NodeEnum::AlterTypeStmt(_) => (Ddl, "ALTER TYPE".into()),
        NodeEnum::CreateFunctionStmt(f) => (
            Ddl,
            if f.is_procedure {
                "CREATE PROCEDURE"
            } else {
                "CREATE FUNCTION"
            }
            .into(),
        ),
        NodeEnum::AlterFunctionStmt(_) => (Ddl, "ALTER FUNCTION".into()),
        NodeEnum::CreateTrigStmt(_) => (Ddl, "CREATE TRIGGER".into()),
        NodeEnum::RuleStmt(_) => (Ddl, "CREATE RULE".into()),
        NodeEnum::CommentStmt(_) => (Ddl, "COMMENT".into()),
        NodeEnum::RenameStmt(r) => (Ddl, format!("ALTER {} RENAME", object_words(r.rename_type))),
        NodeEnum::AlterObjectSchemaStmt(a) => (Ddl, format!("ALTER {} SET SCHEMA", object_words(a.object_type))),
        NodeEnum::AlterObjectDependsStmt(_) => (Ddl, "ALTER DEPENDS ON EXTENSION".into()),
        NodeEnum::CreateStatsStmt(_) => (Ddl, "CREATE STATISTICS".into()),
        NodeEnum::AlterStatsStmt(_) => (Ddl, "ALTER STATISTICS".into()),
        NodeEnum::CreatePolicyStmt(_) => (Ddl, "CREATE POLICY".into()),
        NodeEnum::AlterPolicyStmt(_) => (Ddl, "ALTER POLICY".into()),
        NodeEnum::CreateCastStmt(_) => (Ddl, "CREATE CAST".into()),
        NodeEnum::CreateConversionStmt(_) => (Ddl, "CREATE CONVERSION".into()),
        NodeEnum::CreateTransformStmt(_) => (Ddl, "CREATE TRANSFORM".into()),
        NodeEnum::CreateOpClassStmt(_) => (Ddl, "CREATE OPERATOR CLASS".into()),
        NodeEnum::CreateOpFamilyStmt(_) => (Ddl, "CREATE OPERATOR FAMILY".into()),
        NodeEnum::AlterOpFamilyStmt(_) => (Ddl, "ALTER OPERATOR FAMILY".into()),
        NodeEnum::AlterOperatorStmt(_) => (Ddl, "ALTER OPERATOR".into()),
        NodeEnum::AlterCollationStmt(_) => (Ddl, "ALTER COLLATION".into()),
        NodeEnum::AlterTsdictionaryStmt(_) => (Ddl, "ALTER TEXT SEARCH DICTIONARY".into()),
        NodeEnum::AlterTsconfigurationStmt(_) => (Ddl, "ALTER TEXT SEARCH CONFIGURATION".into()),
        NodeEnum::CreateForeignTableStmt(_) => (Ddl, "CREATE FOREIGN TABLE".into()),
        NodeEnum::ImportForeignSchemaStmt(_) => (Ddl, "IMPORT FOREIGN SCHEMA".into()),

        // Anything else (a statement type this module does not know yet):
        // the strictest class.
        _ => (Unknown, "UNKNOWN".into()),
    };
    info.class = class;
    info.command = command;

    let mut facts = Facts::default();
    walk(node, &mut facts);
    apply(&mut info, facts, table);
    untargeted_dml(node, &mut info.flags, 0);
    info
}

/// Set `delete_without_where` / `update_without_where` also for a `WHERE`
/// that does not pick rows: one that names no column (`WHERE true`,
/// `WHERE 1 = 1`, `WHERE $1`, `WHERE now() > '2000-01-01'`), or that is OR'd
/// with a constant truth (`WHERE id = 5 OR 1 = 1`). Looks at the statement
/// and, recursively, at the data-modifying statements of its `WITH` clauses,
/// the only places the grammar puts them.
fn untargeted_dml(node: &NodeEnum, flags: &mut Flags, depth: u8) {
    if depth > MAX_CTE_DEPTH {
        return;
    }
    let with = match node {
        NodeEnum::DeleteStmt(d) => {
            if d.where_clause.as_deref().is_some_and(untargeted) {
                flags.delete_without_where = true;
            }
            d.with_clause.as_ref()
        }
        NodeEnum::UpdateStmt(u) => {
            if u.where_clause.as_deref().is_some_and(untargeted) {
                flags.update_without_where = true;
            }
            u.with_clause.as_ref()
        }
        NodeEnum::SelectStmt(s) => s.with_clause.as_ref(),
        NodeEnum::InsertStmt(i) => i.with_clause.as_ref(),
        NodeEnum::MergeStmt(m) => m.with_clause.as_ref(),
        NodeEnum::CopyStmt(c) => {
            if let Some(q) = c.query.as_deref().and_then(|n| n.node.as_ref()) {
                untargeted_dml(q, flags, depth + 1);
            }
            None
        }
        _ => None,
    };
    for cte in with.map(|w| w.ctes.as_slice()).unwrap_or_default() {
        if let Some(NodeEnum::CommonTableExpr(c)) = cte.node.as_ref() {
            if let Some(q) = c.ctequery.as_deref().and_then(|n| n.node.as_ref()) {
                untargeted_dml(q, flags, depth + 1);
            }
        }
    }
}

/// `WITH` clauses nest; past this depth the walk's plain "no WHERE" check
/// still stands.
const MAX_CTE_DEPTH: u8 = 16;

fn untargeted(where_clause: &Node) -> bool {
    let mut facts = Facts::default();
    walk(where_clause, &mut facts);
    facts.column_refs == 0 || or_with_truth(where_clause)
}

/// `a OR b OR …` where some arm is a constant truth.
fn or_with_truth(n: &Node) -> bool {
    match n.node.as_ref() {
        Some(NodeEnum::BoolExpr(b)) if b.boolop == BoolExprType::OrExpr as i32 => {
            b.args.iter().any(|a| constant_truth(a) || or_with_truth(a))
        }
        _ => false,
    }
}

/// `true`, `'t'`, `'yes'::bool`, `1 = 1`, `'a' = 'a'`, `NOT false`.
fn constant_truth(n: &Node) -> bool {
    // Whether `1 = 1` or `1 = 2`: the values decide.
    shape::note_value_read();
    match n.node.as_ref() {
        Some(NodeEnum::AConst(_)) => n.node.as_ref().and_then(truthy) == Some(true),
        Some(NodeEnum::TypeCast(t)) => t.arg.as_deref().is_some_and(constant_truth),
        Some(NodeEnum::AExpr(e)) if e.kind == AExprKind::AexprOp as i32 => {
            let op = match e.name.as_slice() {
                [one] => match one.node.as_ref() {
                    Some(NodeEnum::String(s)) => s.sval.as_str(),
                    _ => return false,
                },
                _ => return false,
            };
            let (Some(l), Some(r)) = (e.lexpr.as_deref(), e.rexpr.as_deref()) else {
                return false;
            };
            // Same constant on both sides (locations differ, values not).
            let same = match (l.node.as_ref(), r.node.as_ref()) {
                (Some(NodeEnum::AConst(a)), Some(NodeEnum::AConst(b))) => !a.isnull && a.val == b.val,
                _ => false,
            };
            matches!(op, "=" | ">=" | "<=") && same
        }
        Some(NodeEnum::BoolExpr(b)) if b.boolop == BoolExprType::NotExpr as i32 => {
            b.args.first().and_then(|a| a.node.as_ref()).and_then(truthy) == Some(false)
        }
        _ => false,
    }
}

fn unknown(mut info: StatementInfo, command: &str) -> StatementInfo {
    info.class = Unknown;
    info.command = command.into();
    info
}

/// Raise `info` by what the walk found anywhere in the statement.
fn apply(info: &mut StatementInfo, facts: Facts, table: &FunctionTable) {
    let mut class = info.class;
    let flags = &mut info.flags;
    if facts.inserts + facts.updates + facts.merges > 0 {
        class = class.max(Write);
    }
    if facts.deletes > 0 || facts.merge_delete {
        class = class.max(Delete);
    }
    for target in &facts.dml_targets {
        // A change to a system catalog is administration, not a write:
        // `UPDATE pg_settings` is `set_config` through the view's rule,
        // and a superuser upstream may change `pg_proc` or `pg_authid`.
        if let Some(settings) = system_relation(target) {
            class = class.max(Admin);
            flags.guarded_setting |= settings;
        }
    }
    flags.delete_without_where |= facts.delete_without_where;
    flags.update_without_where |= facts.update_without_where;
    flags.data_modifying_cte |= facts.dml_in_cte;
    flags.upsert |= facts.upsert;
    if facts.locking {
        class = class.max(Write);
        flags.row_locks = true;
    }
    if facts.into {
        class = class.max(Ddl);
        flags.select_into = true;
        if info.command == "SELECT" {
            info.command = "SELECT INTO".into();
        }
    }
    flags.drop |= facts.drop_column;
    for name in &facts.nested_utility {
        class = class.max(nested(name, flags));
    }

    for call in facts.calls {
        if let Some(effect) = table.lookup(&call.name) {
            let mut effect_class = effect.class;
            if is_named(&call.name, "set_config") {
                // set_config(name, value, is_local) is SET name = value.
                let setting = call.consts[0].as_deref().map(functions::setting);
                match setting {
                    Some(Setting::Ordinary) => {}
                    Some(Setting::Lexical) => {
                        let kept = match (&call.consts[0], &call.consts[1]) {
                            (Some(name), Some(value)) => functions::lexical_value_ok(name, value),
                            _ => false,
                        };
                        if !kept {
                            flags.lexical_setting = true;
                            effect_class = effect_class.max(Admin);
                        }
                    }
                    Some(Setting::Role) => {
                        flags.set_role = true;
                        effect_class = effect_class.max(Admin);
                    }
                    Some(Setting::Guarded) => {
                        flags.guarded_setting = true;
                        effect_class = effect_class.max(Admin);
                    }
                    Some(Setting::ReadOnly) => {
                        // The value is not looked at: set_config('…_read_only',
                        // 'on') is rare enough to ask about.
                        flags.read_only_override = true;
                        effect_class = effect_class.max(Admin);
                    }
                    // A setting named by an expression: could be any.
                    None => effect_class = effect_class.max(Admin),
                }
            }
            class = class.max(effect_class);
            flags.side_effect_function = true;
            flags.file_access |= effect.file_access;
            if !info.functions.contains(&call.name) {
                info.functions.push(call.name.clone());
            }
        }
        if table.lookup(&call.name).is_none() {
            // `db.schema.fn`: the schema is the part before the name.
            let mut parts = call.parts.iter().rev();
            let name = parts.next().cloned().unwrap_or_default();
            let qualified = (parts.next().cloned(), name);
            if !info.catalog_calls.contains(&qualified) {
                info.catalog_calls.push(qualified);
            }
        }
        if !info.calls.contains(&call.name) {
            info.calls.push(call.name);
        }
    }

    // A name that may be a call in attribute notation (`('/etc/passwd'::text).pg_read_file`
    // is `pg_read_file('/etc/passwd')`) gets the side-effect table's verdict
    // like a written call; the catalog resolves the rest.
    for name in &facts.maybe_calls {
        if let Some(effect) = table.lookup(name) {
            class = class.max(effect.class);
            flags.side_effect_function = true;
            flags.file_access |= effect.file_access;
            if !info.functions.contains(name) {
                info.functions.push(name.clone());
            }
            if !info.calls.contains(name) {
                info.calls.push(name.clone());
            }
        }
    }
    info.operators = facts.operators;
    info.maybe_calls = facts.maybe_calls;
    info.reads_data = facts.column_refs > 0 || facts.typecasts > 0 || !facts.tables.is_empty();
    let mut tables = facts.tables;
    tables.sort_by_key(|(at, _)| *at);
    for (_, t) in tables {
        if (t.contains('.') || !facts.ctes.contains(&t)) && !info.tables.contains(&t) {
            info.tables.push(t);
        }
    }
    info.class = class;
}

/// Whether a relation named `schema.name` or `name` is a system catalog
/// (`Some(true)` for `pg_settings`, whose rule turns a change into
/// `set_config`). Unqualified, `pg_catalog` is searched first unless
/// `search_path` names it later; a `pg_` name is taken as a catalog either
/// way (at worst a false alarm).
fn system_relation(target: &str) -> Option<bool> {
    let mut parts = target.rsplit('.');
    let bare = parts.next().unwrap_or_default().to_ascii_lowercase();
    let schema = parts.next().map(str::to_ascii_lowercase);
    let system = match schema.as_deref() {
        Some("pg_catalog" | "information_schema") => true,
        Some(s) => s.starts_with("pg_toast"),
        None => bare.starts_with("pg_"),
    };
    system.then_some(bare == "pg_settings")
}

/// A call's bare name (after any schema) equals `bare`, case-insensitively.
fn is_named(call: &str, bare: &str) -> bool {
    let last = call.rsplit('.').next().unwrap_or(call);
    last.eq_ignore_ascii_case(bare)
}

/// The class of a utility statement nested inside another one (`CREATE
/// SCHEMA … GRANT …`), and its flags.
fn nested(name: &str, flags: &mut Flags) -> StatementClass {
    match name {
        "GrantStmt" | "GrantRoleStmt" | "AlterDefaultPrivilegesStmt" => {
            flags.grant = true;
            Admin
        }
        "CreateRoleStmt" | "AlterRoleStmt" | "AlterRoleSetStmt" | "DropRoleStmt" => {
            flags.role_admin = true;
            Admin
        }
        "AlterSystemStmt" => {
            flags.alter_system = true;
            Admin
        }
        "DoStmt" => {
            flags.do_block = true;
            Unknown
        }
        "CallStmt" => {
            flags.call = true;
            Unknown
        }
        "ExecuteStmt" => {
            flags.execute = true;
            Unknown
        }
        "DropStmt" => {
            flags.drop = true;
            Ddl
        }
        _ => Ddl,
    }
}

/// `EXPLAIN` runs the statement when ANALYZE is on. Anything but a clear
/// "off" counts as on: `EXPLAIN ANALYZE`, `(ANALYZE)`, `(ANALYZE true)`,
/// `(ANALYZE 1)`, `(ANALYZE 'yes')` (which PostgreSQL would refuse anyway).
fn explain_analyzes(options: &[Node]) -> bool {
    options.iter().any(|opt| match opt.node.as_ref() {
        Some(NodeEnum::DefElem(d)) if d.defname.eq_ignore_ascii_case("analyze") => {
            match d.arg.as_deref().and_then(|a| a.node.as_ref()) {
                None => true,
                Some(arg) => truthy(arg) != Some(false),
            }
        }
        _ => false,
    })
}

/// A boolean read from an option or setting value, when it is a constant.
fn truthy(n: &NodeEnum) -> Option<bool> {
    shape::note_value_read();
    let text = |s: &str| {
        if functions::is_on(s) {
            Some(true)
        } else if functions::is_off(s) {
            Some(false)
        } else {
            None
        }
    };
    match n {
        NodeEnum::Boolean(b) => Some(b.boolval),
        NodeEnum::Integer(i) => Some(i.ival != 0),
        NodeEnum::String(s) => text(&s.sval),
        NodeEnum::AConst(c) => match c.val.as_ref()? {
            a_const::Val::Boolval(b) => Some(b.boolval),
            a_const::Val::Ival(i) => Some(i.ival != 0),
            a_const::Val::Sval(s) => text(&s.sval),
            _ => None,
        },
        _ => None,
    }
}

/// A setting's value as text when it is a constant: `'UTF8'`, `on`, `1`.
fn const_text(n: &NodeEnum) -> Option<String> {
    shape::note_value_read();
    match n {
        NodeEnum::String(s) => Some(s.sval.clone()),
        NodeEnum::Integer(i) => Some(i.ival.to_string()),
        NodeEnum::Boolean(b) => Some(if b.boolval { "on" } else { "off" }.into()),
        NodeEnum::AConst(c) => match c.val.as_ref()? {
            a_const::Val::Sval(s) => Some(s.sval.clone()),
            a_const::Val::Ival(i) => Some(i.ival.to_string()),
            a_const::Val::Boolval(b) => Some(if b.boolval { "on" } else { "off" }.into()),
            _ => None,
        },
        _ => None,
    }
}

/// Transaction options that turn read-only off (`READ WRITE`).
fn turns_read_only_off(options: &[Node]) -> bool {
    options.iter().any(|opt| match opt.node.as_ref() {
        Some(NodeEnum::DefElem(d)) if d.defname == "transaction_read_only" => {
            d.arg.as_deref().and_then(|a| a.node.as_ref()).and_then(truthy) != Some(true)
        }
        _ => false,
    })
}

fn transaction(t: &pg_query::protobuf::TransactionStmt, flags: &mut Flags) -> (StatementClass, String) {
    use TransactionStmtKind as K;
    let kind = TransactionStmtKind::try_from(t.kind).unwrap_or(K::Undefined);
    let (mut class, command) = match kind {
        K::TransStmtBegin => (Read, "BEGIN"),
        K::TransStmtStart => (Read, "START TRANSACTION"),
        K::TransStmtCommit => (Read, "COMMIT"),
        K::TransStmtRollback => (Read, "ROLLBACK"),
        K::TransStmtSavepoint => (Read, "SAVEPOINT"),
        K::TransStmtRelease => (Read, "RELEASE"),
        K::TransStmtRollbackTo => (Read, "ROLLBACK TO SAVEPOINT"),
        // Two-phase commit outlives the session and reaches other
        // sessions' transactions.
        K::TransStmtPrepare => (Admin, "PREPARE TRANSACTION"),
        K::TransStmtCommitPrepared => (Admin, "COMMIT PREPARED"),
        K::TransStmtRollbackPrepared => (Admin, "ROLLBACK PREPARED"),
        K::Undefined => (Unknown, "UNKNOWN"),
    };
    if turns_read_only_off(&t.options) {
        flags.read_only_override = true;
        class = class.max(Admin);
    }
    (class, command.into())
}

fn set(v: &pg_query::protobuf::VariableSetStmt, flags: &mut Flags) -> (StatementClass, String) {
    use VariableSetKind as K;
    let kind = VariableSetKind::try_from(v.kind).unwrap_or(K::Undefined);
    let reset = matches!(kind, K::VarReset | K::VarResetAll);
    match kind {
        // RESET ALL leaves role and session_authorization alone
        // (GUC_NO_RESET_ALL) and only returns settings to their defaults.
        K::VarResetAll => return (Read, "RESET ALL".into()),
        // SET TRANSACTION … / SET SESSION CHARACTERISTICS AS TRANSACTION …
        K::VarSetMulti => {
            let command = format!("SET {}", v.name.to_ascii_uppercase());
            if turns_read_only_off(&v.args) {
                flags.read_only_override = true;
                return (Admin, command);
            }
            return (Read, command);
        }
        K::Undefined => return (Unknown, "SET".into()),
        _ => {}
    }
    let verb = if reset { "RESET" } else { "SET" };
    match functions::setting(&v.name) {
        Setting::Ordinary => (Read, verb.into()),
        Setting::Role => {
            flags.set_role = true;
            let what = if v.name.eq_ignore_ascii_case("role") {
                "ROLE"
            } else {
                "SESSION AUTHORIZATION"
            };
            (Admin, format!("{verb} {what}"))
        }
        Setting::Guarded => {
            flags.guarded_setting = true;
            (Admin, verb.into())
        }
        Setting::Lexical => {
            // Back to the session's value (gatehouse's, from the startup
            // packet) or to the value gatehouse pins: harmless.
            let value = v.args.first().and_then(|a| a.node.as_ref()).and_then(const_text);
            let kept = reset
                || kind == K::VarSetDefault
                || value.is_some_and(|val| functions::lexical_value_ok(&v.name, &val));
            if kept {
                (Read, verb.into())
            } else {
                flags.lexical_setting = true;
                (Admin, verb.into())
            }
        }
        Setting::ReadOnly => {
            // Turning read-only on is harmless, and so is returning
            // `default_transaction_read_only` to its session value (the
            // startup packet's, which gatehouse sets). `transaction_read_only`
            // returns to the server's built-in default, off: an override.
            let on = v.args.first().and_then(|a| a.node.as_ref()).and_then(truthy);
            let back_to_session =
                (reset || kind == K::VarSetDefault) && v.name.eq_ignore_ascii_case("default_transaction_read_only");
            if back_to_session || on == Some(true) {
                (Read, verb.into())
            } else {
                flags.read_only_override = true;
                (Admin, verb.into())
            }
        }
    }
}

/// `OBJECT_MATVIEW` → `MATERIALIZED VIEW`, for command names.
fn object_words(objtype: i32) -> String {
    let Ok(t) = ObjectType::try_from(objtype) else {
        return "OBJECT".into();
    };
    let name = t.as_str_name().strip_prefix("OBJECT_").unwrap_or("OBJECT");
    match name {
        "MATVIEW" => "MATERIALIZED VIEW".into(),
        "TABCONSTRAINT" | "DOMCONSTRAINT" => "CONSTRAINT".into(),
        "FDW" => "FOREIGN DATA WRAPPER".into(),
        "FOREIGN_SERVER" => "SERVER".into(),
        "LARGEOBJECT" => "LARGE OBJECT".into(),
        "TSCONFIGURATION" => "TEXT SEARCH CONFIGURATION".into(),
        "TSDICTIONARY" => "TEXT SEARCH DICTIONARY".into(),
        "TSPARSER" => "TEXT SEARCH PARSER".into(),
        "TSTEMPLATE" => "TEXT SEARCH TEMPLATE".into(),
        "OPCLASS" => "OPERATOR CLASS".into(),
        "OPFAMILY" => "OPERATOR FAMILY".into(),
        "STATISTIC_EXT" => "STATISTICS".into(),
        other => other.replace('_', " "),
    }
}
