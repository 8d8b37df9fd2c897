//! What a function call does, by the target's own catalog.
//!
//! The grammar says a statement calls `my_fn()`; only the database knows
//! whether `my_fn` writes. PostgreSQL labels every function `IMMUTABLE`,
//! `STABLE` or `VOLATILE`, and refuses data changes inside functions that
//! are not volatile (SQL and PL/pgSQL run them read-only), so the label is
//! the honest answer for functions written in those languages. This module
//! holds a snapshot of the target's `pg_proc`, `pg_operator` and `pg_type`
//! (loaded by the data path, see `proxy::pg::catalog`) and resolves the
//! calls of a [`Classification`] against it:
//!
//! - a call that matches the side-effect table is left to it (it already
//!   raised the class);
//! - every function of that name (in the schema named, or in any schema for
//!   an unqualified call: `search_path` picks which, and an overload may
//!   win over a built-in) is looked at, and the strictest decides;
//! - immutable and stable functions read; volatile built-ins read only when
//!   listed in [`HARMLESS_VOLATILE_FUNCTIONS`] (`random()`,
//!   `clock_timestamp()`, size functions, …) and write otherwise; volatile
//!   user functions write (`volatile_function`);
//! - a name the catalog does not have at all is `Unknown`
//!   (`unresolved_function`), unless it names a type (`uuid('…')` is a
//!   cast);
//! - user-defined operators count as calls of their functions; where the
//!   target has volatile user code that the server calls without a name
//!   (a comparison operator such as `=` or `<`, the operators and support
//!   functions of an operator class, a cast, a type's input function),
//!   every statement that reads data or typed values may call it (ORDER
//!   BY, GROUP BY, DISTINCT, IN, BETWEEN, CASE, joins, set operations,
//!   casts) and counts as calling it;
//! - a call qualified with `pg_catalog` is resolved like an unqualified one:
//!   this parser's grammar is newer than some servers', and qualifies as
//!   `pg_catalog` names (`json_object(…)`) that an older server resolves
//!   through `search_path`;
//! - names the server may take for calls although the statement shows none
//!   (`t.f` and `(row).f` are `f(t)` when there is no column `f`; SQL/JSON
//!   syntax is a plain call before PostgreSQL 16) count as calls when a
//!   function of that name may write, and as columns otherwise.
//!
//! What it cannot see: functions called by views, triggers, rules, defaults
//! and domain constraints. The read-only upstream session (see the policy) is the net for
//! those.

use super::{Classification, StatementClass};
use std::collections::HashMap;
use std::sync::Arc;

/// A function's volatility, as `pg_proc.provolatile` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Volatility {
    Immutable,
    Stable,
    Volatile,
}

impl Volatility {
    /// From `provolatile` (`i`, `s`, `v`); anything else is volatile.
    pub fn from_code(c: &str) -> Volatility {
        match c {
            "i" => Volatility::Immutable,
            "s" => Volatility::Stable,
            _ => Volatility::Volatile,
        }
    }
}

/// Volatile built-in functions that only read (or only wait): calls of them
/// stay reads.
pub const HARMLESS_VOLATILE_FUNCTIONS: &[&str] = &[
    "random",
    "random_normal",
    "setseed",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "uuidv4",
    "uuidv7",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "currval",
    "lastval",
    "current_query",
    "pg_database_size",
    "pg_indexes_size",
    "pg_relation_size",
    "pg_table_size",
    "pg_tablespace_size",
    "pg_total_relation_size",
    "pg_is_in_recovery",
    "pg_is_wal_replay_paused",
    "pg_get_wal_replay_pause_state",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_last_committed_xact",
    "pg_sequence_last_value",
    "pg_notification_queue_usage",
    "pg_blocking_pids",
    "pg_safe_snapshot_blocking_pids",
    "pg_lock_status",
    "pg_jit_available",
    "pg_xact_status",
    "txid_status",
    "pg_xact_commit_timestamp",
    "pg_xact_commit_timestamp_origin",
    "pg_stat_have_stats",
    "pg_stat_clear_snapshot",
    "pg_partition_ancestors",
    "pg_partition_tree",
    "pg_collation_actual_version",
    "pg_database_collation_actual_version",
    "pg_get_backend_memory_contexts",
    "pg_get_shmem_allocations",
    "pg_prepared_xact",
    "pg_stat_get_xact_blocks_fetched",
    "pg_stat_get_xact_blocks_hit",
    "pg_stat_get_xact_function_calls",
    "pg_stat_get_xact_function_self_time",
    "pg_stat_get_xact_function_total_time",
    "pg_stat_get_xact_numscans",
    "pg_stat_get_xact_tuples_deleted",
    "pg_stat_get_xact_tuples_fetched",
    "pg_stat_get_xact_tuples_hot_updated",
    "pg_stat_get_xact_tuples_inserted",
    "pg_stat_get_xact_tuples_returned",
    "pg_stat_get_xact_tuples_updated",
    "cursor_to_xml",
    "cursor_to_xmlschema",
];

/// One row of the catalog snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CatalogRow {
    Function {
        oid: u32,
        schema: String,
        name: String,
        volatility: Volatility,
        builtin: bool,
        /// `oid::regprocedure` of a user function (for reviews of a
        /// FunctionCall); empty for built-ins.
        signature: String,
    },
    /// A user-defined operator and the volatility of its function.
    Operator {
        schema: String,
        name: String,
        volatility: Volatility,
    },
    Type {
        schema: String,
        name: String,
    },
    /// A volatile user function the server may call without the statement
    /// naming it: in an operator class (sorting, grouping, hashing,
    /// comparisons), a cast, or a type's input function.
    Implicit {
        schema: String,
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Lower-cased; one allocation per schema name in a snapshot (a
    /// database's thousands of functions live in a handful of schemas).
    schema: Arc<str>,
    volatility: Volatility,
    builtin: bool,
}

/// A snapshot of the target's functions, user operators and types.
///
/// Two snapshots are equal when they say the same of every name, however
/// their rows were ordered: the cache shares one copy between targets and
/// workers that read equal ones (`core::catalog`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Lower-cased function name → every function of that name.
    functions: HashMap<String, Vec<Entry>>,
    /// Operator name → every user-defined operator of that name.
    operators: HashMap<String, Vec<Entry>>,
    /// Lower-cased type name → schemas.
    types: HashMap<String, Vec<Arc<str>>>,
    /// Function OID → `schema.name` or its signature.
    by_oid: HashMap<u32, (String, Volatility)>,
    /// Volatile user code the server may call without the statement naming
    /// it: comparison operators, operator-class members and support
    /// functions, casts, type input functions (`schema.name`).
    implicit_volatile: Vec<String>,
    /// A digest of the rows that does not depend on their order: snapshots
    /// with different fingerprints differ (equal ones are compared in
    /// full before they are shared).
    fingerprint: u64,
}

/// Operators the server calls without their being written: sorting,
/// grouping, DISTINCT, IN, BETWEEN, CASE and joins use a type's comparison
/// operators.
const IMPLICIT_OPERATORS: &[&str] = &["=", "<>", "<", "<=", ">", ">="];

/// What the deployment knows of its functions, beyond their labels.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    /// Functions that only read, whatever their volatility.
    pub read: &'a [String],
    /// Functions that change rows (no deletes, no DDL), whatever their
    /// volatility.
    pub write: &'a [String],
    /// The class of a call of any other volatile user function (or a
    /// user-defined operator on one): code whose effect gatehouse cannot
    /// see. `Write` where the upstream session is read-only (the server
    /// stops anything the approval did not cover), `Unknown` otherwise.
    pub opaque: StatementClass,
}

/// What the catalog says about a statement's calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// The class the calls raise the statement to, at least.
    pub class: Option<StatementClass>,
    /// Calls (and operators) that may write.
    pub volatile: Vec<String>,
    /// Calls the catalog does not have.
    pub unresolved: Vec<String>,
}

fn split(name: &str) -> (Option<String>, String) {
    let lower = name.to_lowercase();
    match lower.rsplit_once('.') {
        Some((schema, bare)) => {
            // `db.schema.fn`: the schema is the part before the name.
            let schema = schema.rsplit('.').next().unwrap_or(schema);
            (Some(schema.to_string()), bare.to_string())
        }
        None => (None, lower),
    }
}

/// One row's contribution to a snapshot's fingerprint.
fn row_digest(row: &CatalogRow) -> u64 {
    use std::hash::{Hash, Hasher};
    // `DefaultHasher::new` has fixed keys: snapshots read by different
    // workers agree.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    row.hash(&mut h);
    h.finish()
}

impl Catalog {
    pub fn from_rows(rows: impl IntoIterator<Item = CatalogRow>) -> Catalog {
        let mut c = Catalog::default();
        let mut schemas: HashMap<String, Arc<str>> = HashMap::new();
        let mut intern = |schema: &str| -> Arc<str> {
            schemas
                .entry(schema.to_lowercase())
                .or_insert_with_key(|lower| lower.as_str().into())
                .clone()
        };
        for row in rows {
            c.fingerprint = c.fingerprint.wrapping_add(row_digest(&row));
            match row {
                CatalogRow::Function {
                    oid,
                    schema,
                    name,
                    volatility,
                    builtin,
                    signature,
                } => {
                    let shown = if signature.is_empty() {
                        format!("{schema}.{name}")
                    } else {
                        signature
                    };
                    c.by_oid.insert(oid, (shown, volatility));
                    c.functions.entry(name.to_lowercase()).or_default().push(Entry {
                        schema: intern(&schema),
                        volatility,
                        builtin,
                    });
                }
                CatalogRow::Operator {
                    schema,
                    name,
                    volatility,
                } => {
                    if volatility == Volatility::Volatile && IMPLICIT_OPERATORS.contains(&name.as_str()) {
                        c.implicit_volatile.push(format!("operator {schema}.{name}"));
                    }
                    c.operators.entry(name).or_default().push(Entry {
                        schema: intern(&schema),
                        volatility,
                        builtin: false,
                    })
                }
                CatalogRow::Type { schema, name } => {
                    c.types.entry(name.to_lowercase()).or_default().push(intern(&schema))
                }
                CatalogRow::Implicit { schema, name } => c.implicit_volatile.push(format!("{schema}.{name}")),
            }
        }
        // Equal snapshots hold their lists in one order whatever the rows'.
        for v in c.functions.values_mut().chain(c.operators.values_mut()) {
            v.sort_by(|a, b| {
                (&a.schema, a.volatility as u8, a.builtin).cmp(&(&b.schema, b.volatility as u8, b.builtin))
            });
        }
        for v in c.types.values_mut() {
            v.sort();
        }
        c.implicit_volatile.sort();
        c
    }

    /// Whether two snapshots may be the same (equal ones always have the
    /// same fingerprint); cheap, unlike `==`.
    pub fn may_equal(&self, other: &Catalog) -> bool {
        self.fingerprint == other.fingerprint && self.by_oid.len() == other.by_oid.len()
    }

    /// The snapshot with its fingerprint replaced, to test what a
    /// collision does.
    #[cfg(test)]
    pub(crate) fn with_fingerprint(mut self, fingerprint: u64) -> Catalog {
        self.fingerprint = fingerprint;
        self
    }

    /// Functions in the snapshot.
    pub fn function_count(&self) -> usize {
        self.by_oid.len()
    }

    /// A function by OID: how a reviewer reads it, and its volatility.
    pub fn function_by_oid(&self, oid: u32) -> Option<(&str, Volatility)> {
        self.by_oid.get(&oid).map(|(s, v)| (s.as_str(), *v))
    }

    /// Whether a statement with this classification needs the catalog: it
    /// calls a function the side-effect table does not decide, or uses an
    /// operator, names what may be a call, or reads columns (whose types'
    /// operators may be user-defined).
    pub fn needed(c: &Classification) -> bool {
        c.statements.iter().any(|s| {
            !s.operators.is_empty() || !s.catalog_calls.is_empty() || !s.maybe_calls.is_empty() || s.reads_data
        })
    }

    /// The class of one call by (schema, name), or `None` when the catalog
    /// has no function (nor type) of that name.
    fn call_class(&self, schema: Option<&str>, name: &str, known: &Known<'_>) -> Option<StatementClass> {
        let schema = schema.map(str::to_lowercase);
        let bare = name.to_lowercase();
        let listed = |list: &[String]| {
            list.iter().any(|r| {
                let (rs, rb) = split(r);
                rb == bare && (rs.is_none() || rs == schema)
            })
        };
        if listed(known.read) {
            return Some(StatementClass::Read);
        }
        if listed(known.write) {
            return Some(StatementClass::Write);
        }
        let in_schema = |s: &str| schema.as_deref().is_none_or(|want| want == s);
        let candidates: Vec<&Entry> = self
            .functions
            .get(&bare)
            .map(|v| v.iter().filter(|e| in_schema(&e.schema)).collect())
            .unwrap_or_default();
        if candidates.is_empty() {
            let is_type = self
                .types
                .get(&bare)
                .is_some_and(|schemas| schemas.iter().any(|s| in_schema(s)));
            return is_type.then_some(StatementClass::Read);
        }
        let harmless = HARMLESS_VOLATILE_FUNCTIONS.contains(&bare.as_str());
        let class = candidates
            .iter()
            .map(|e| match (e.volatility, e.builtin) {
                (Volatility::Immutable | Volatility::Stable, _) => StatementClass::Read,
                (Volatility::Volatile, true) if harmless => StatementClass::Read,
                (Volatility::Volatile, true) => StatementClass::Write,
                (Volatility::Volatile, false) => known.opaque,
            })
            .max()
            .unwrap_or(StatementClass::Read);
        Some(class)
    }

    /// Resolves every call and operator of `c` (those the side-effect table
    /// did not decide).
    pub fn resolve(&self, c: &Classification, known: &Known<'_>) -> Resolution {
        let mut r = Resolution::default();
        let raise = |r: &mut Resolution, class: StatementClass| {
            r.class = Some(r.class.map_or(class, |c| c.max(class)));
        };
        for s in &c.statements {
            for (schema, name) in &s.catalog_calls {
                let call = match schema {
                    Some(sch) => format!("{sch}.{name}"),
                    None => name.clone(),
                };
                let call = &call;
                // See the module docs: `pg_catalog.` may be this parser's
                // addition, not the client's.
                let schema = schema.as_deref().filter(|s| !s.eq_ignore_ascii_case("pg_catalog"));
                match self.call_class(schema, name, known) {
                    None => {
                        raise(&mut r, StatementClass::Unknown);
                        if !r.unresolved.contains(call) {
                            r.unresolved.push(call.clone());
                        }
                    }
                    Some(class) => {
                        raise(&mut r, class);
                        if class > StatementClass::Read && !r.volatile.contains(call) {
                            r.volatile.push(call.clone());
                        }
                    }
                }
            }
            for name in &s.maybe_calls {
                if let Some(class) = self.call_class(None, name, known) {
                    if class > StatementClass::Read {
                        raise(&mut r, class);
                        let shown = format!("{name} (a call in attribute notation or older syntax)");
                        if !r.volatile.contains(&shown) {
                            r.volatile.push(shown);
                        }
                    }
                }
            }
            if !self.implicit_volatile.is_empty() && (s.reads_data || !s.operators.is_empty()) {
                raise(&mut r, known.opaque);
                for f in &self.implicit_volatile {
                    let shown = format!("{f} (may be called implicitly)");
                    if !r.volatile.contains(&shown) {
                        r.volatile.push(shown);
                    }
                }
            }
            for op in &s.operators {
                let (schema, bare) = match op.rsplit_once('.') {
                    Some((sch, b)) => (Some(sch.to_lowercase()), b),
                    None => (None, op.as_str()),
                };
                let writes = self.operators.get(bare).is_some_and(|v| {
                    v.iter().any(|e| {
                        schema.as_deref().is_none_or(|want| want == &*e.schema) && e.volatility == Volatility::Volatile
                    })
                });
                if writes {
                    raise(&mut r, known.opaque);
                    let shown = format!("operator {op}");
                    if !r.volatile.contains(&shown) {
                        r.volatile.push(shown);
                    }
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Classifier;

    fn f(schema: &str, name: &str, v: &str, builtin: bool) -> CatalogRow {
        CatalogRow::Function {
            oid: 0,
            schema: schema.into(),
            name: name.into(),
            volatility: Volatility::from_code(v),
            builtin,
            signature: String::new(),
        }
    }

    fn catalog() -> Catalog {
        Catalog::from_rows([
            f("pg_catalog", "lower", "i", true),
            f("pg_catalog", "now", "s", true),
            f("pg_catalog", "random", "v", true),
            f("pg_catalog", "count", "i", true),
            f("pg_catalog", "brin_summarize_range", "v", true),
            f("public", "my_fn", "v", false),
            f("public", "my_stable", "s", false),
            // An overload of a built-in name in another schema.
            f("pg_catalog", "upper", "i", true),
            f("app", "upper", "v", false),
            CatalogRow::Operator {
                schema: "public".into(),
                name: "###".into(),
                volatility: Volatility::Volatile,
            },
            CatalogRow::Type {
                schema: "pg_catalog".into(),
                name: "uuid".into(),
            },
        ])
    }

    /// Rows of every kind, with distinct OIDs.
    fn varied_rows() -> Vec<CatalogRow> {
        let mut rows: Vec<CatalogRow> = [
            f("pg_catalog", "lower", "i", true),
            f("pg_catalog", "random", "v", true),
            f("public", "my_fn", "v", false),
            f("app", "upper", "s", false),
            f("App", "Upper", "i", false),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            if let CatalogRow::Function { oid, .. } = &mut r {
                *oid = 16_384 + i as u32;
            }
            r
        })
        .collect();
        rows.extend([
            CatalogRow::Operator {
                schema: "public".into(),
                name: "###".into(),
                volatility: Volatility::Volatile,
            },
            CatalogRow::Type {
                schema: "pg_catalog".into(),
                name: "uuid".into(),
            },
            CatalogRow::Type {
                schema: "app".into(),
                name: "uuid".into(),
            },
            CatalogRow::Operator {
                schema: "App".into(),
                name: "=".into(),
                volatility: Volatility::Volatile,
            },
            CatalogRow::Implicit {
                schema: "app".into(),
                name: "cmp".into(),
            },
            CatalogRow::Implicit {
                schema: "app".into(),
                name: "hash".into(),
            },
        ]);
        rows
    }

    /// One fact of a row changed.
    fn changed(row: &CatalogRow) -> CatalogRow {
        let flip = |v: &Volatility| match v {
            Volatility::Volatile => Volatility::Immutable,
            _ => Volatility::Volatile,
        };
        match row.clone() {
            CatalogRow::Function {
                oid,
                schema,
                name,
                volatility,
                builtin,
                signature,
            } => CatalogRow::Function {
                oid,
                schema,
                name,
                volatility: flip(&volatility),
                builtin,
                signature,
            },
            CatalogRow::Operator {
                schema,
                name,
                volatility,
            } => CatalogRow::Operator {
                schema,
                name,
                volatility: flip(&volatility),
            },
            CatalogRow::Type { name, .. } => CatalogRow::Type {
                schema: "other".into(),
                name,
            },
            CatalogRow::Implicit { schema, .. } => CatalogRow::Implicit {
                schema,
                name: "other".into(),
            },
        }
    }

    /// The cache shares a snapshot between keys only when they are equal:
    /// equality must not depend on the rows' order, and must see any one
    /// fact changed.
    #[test]
    fn snapshots_are_equal_exactly_when_they_say_the_same() {
        let a = Catalog::from_rows(varied_rows());
        let mut reversed = varied_rows();
        reversed.reverse();
        let b = Catalog::from_rows(reversed);
        assert!(a.may_equal(&b) && a == b);
        // Each difference is seen by the fingerprint and, the fingerprint
        // forged to match, by the comparison itself.
        let differs = |c: Catalog, what: &str| {
            assert!(!a.may_equal(&c), "{what}: the fingerprint did not change");
            let c = c.with_fingerprint(a.fingerprint);
            assert!(a != c, "{what}: {c:?}");
        };
        for i in 0..varied_rows().len() {
            let mut rows = varied_rows();
            rows[i] = changed(&rows[i]);
            differs(Catalog::from_rows(rows), &format!("row {i} changed"));
        }
        let mut rows = varied_rows();
        if let CatalogRow::Function { builtin, .. } = &mut rows[1] {
            *builtin = false;
        }
        differs(Catalog::from_rows(rows), "a builtin flag");
        let mut rows = varied_rows();
        if let CatalogRow::Function { signature, .. } = &mut rows[2] {
            *signature = "public.my_fn(integer)".into();
        }
        differs(Catalog::from_rows(rows), "a signature");
        let mut rows = varied_rows();
        rows.push(f("app", "extra", "i", false));
        differs(Catalog::from_rows(rows), "one row more");
    }

    /// Schemas are shared within a snapshot; what it says of them is not
    /// changed by that (case folded as before).
    #[test]
    fn interned_schemas_resolve_as_written() {
        let c = Catalog::from_rows(varied_rows());
        let entries = &c.functions["upper"];
        assert_eq!(entries.len(), 2);
        assert!(Arc::ptr_eq(&entries[0].schema, &entries[1].schema), "{entries:?}");
        assert_eq!(&*entries[0].schema, "app");
        let known = Known {
            read: &[],
            write: &[],
            opaque: StatementClass::Write,
        };
        assert_eq!(c.call_class(Some("APP"), "upper", &known), Some(StatementClass::Read));
        assert_eq!(c.call_class(Some("public"), "upper", &known), None);
        assert_eq!(c.call_class(Some("app"), "uuid", &known), Some(StatementClass::Read));
        assert_eq!(
            c.call_class(Some("public"), "my_fn", &known),
            Some(StatementClass::Write)
        );
        assert_eq!(&*c.operators["="][0].schema, "app");
        assert_eq!(
            c.implicit_volatile,
            ["app.cmp", "app.hash", "operator App.="],
            "shown as the server wrote them, in one order"
        );
    }

    fn resolve(sql: &str) -> Resolution {
        let c = Classifier::new(&[]).classify(sql);
        let read = ["app.safe_volatile".to_string()];
        catalog().resolve(
            &c,
            &Known {
                read: &read,
                write: &[],
                opaque: StatementClass::Write,
            },
        )
    }

    #[test]
    fn calls_are_classed_by_their_functions() {
        assert_eq!(
            resolve("select lower(name), now(), count(*) from t").class,
            Some(StatementClass::Read)
        );
        assert_eq!(
            resolve("select random()").class,
            Some(StatementClass::Read),
            "harmless volatile"
        );
        let r = resolve("select my_fn()");
        assert_eq!(r.class, Some(StatementClass::Write));
        assert_eq!(r.volatile, vec!["my_fn".to_string()]);
        assert_eq!(resolve("select my_stable(1)").class, Some(StatementClass::Read));
        assert_eq!(
            resolve("select brin_summarize_range('i', 1)").class,
            Some(StatementClass::Write),
            "a volatile built-in not known to be harmless"
        );
        // Any overload decides: `upper` may reach app.upper.
        assert_eq!(resolve("select upper('x')").class, Some(StatementClass::Write));
        // A `pg_catalog.` qualification may be the parser's own (see
        // `json_object` below), so it is resolved like an unqualified name.
        assert_eq!(
            resolve("select pg_catalog.upper('x')").class,
            Some(StatementClass::Write)
        );
        let r = resolve("select nope(1)");
        assert_eq!(r.class, Some(StatementClass::Unknown));
        assert_eq!(r.unresolved, vec!["nope".to_string()]);
        assert_eq!(
            resolve("select uuid('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')").class,
            Some(StatementClass::Read)
        );
        assert_eq!(resolve("select 1 ### 2").class, Some(StatementClass::Write));
        // Without the read-only session's net, opaque code is unknown; a
        // deployment may say what its functions do.
        let c = Classifier::new(&[]).classify("select my_fn(), public.my_writer()");
        let write = ["public.my_writer".to_string()];
        let known = Known {
            read: &[],
            write: &write,
            opaque: StatementClass::Unknown,
        };
        assert_eq!(catalog().resolve(&c, &known).class, Some(StatementClass::Unknown));
        let c = Classifier::new(&[]).classify("select my_fn()");
        let known = Known {
            read: &[],
            write: &["my_fn".to_string()],
            opaque: StatementClass::Unknown,
        };
        assert_eq!(catalog().resolve(&c, &known).class, Some(StatementClass::Write));
        assert_eq!(resolve("select 1 + 2").class, None);
        // Deployment's list of reading functions.
        assert!(resolve("select app.safe_volatile()").unresolved.is_empty());
        // Side-effect table calls are the classifier's business.
        assert_eq!(resolve("select nextval('s')").class, None);
        // A quoted name with a dot is one name, not a schema and a name.
        let r = resolve("select \"pg_catalog.lower\"('x')");
        assert_eq!(r.class, Some(StatementClass::Unknown), "{r:?}");
        // Calls anywhere: in a CTE, a subquery, a WHERE.
        assert_eq!(
            resolve("with x as (select 1 a) select * from x where a = (select my_fn())").class,
            Some(StatementClass::Write)
        );
    }

    /// Calls the parse tree does not show as calls: attribute notation,
    /// operators in `ANY (subquery)` and `ORDER BY … USING`, SQL/JSON syntax
    /// an older server resolves through search_path.
    #[test]
    fn hidden_calls_are_resolved() {
        let rows = |extra: Vec<CatalogRow>| {
            let mut v = vec![
                f("pg_catalog", "json_object", "i", true),
                f("pg_catalog", "json_array", "i", true),
                f("rv", "purge", "v", false),
                f("rv", "json_object", "v", false),
                f("rv", "json_array", "v", false),
                f("pg_catalog", "lower", "i", true),
                CatalogRow::Operator {
                    schema: "rv".into(),
                    name: "%%%".into(),
                    volatility: Volatility::Volatile,
                },
            ];
            v.extend(extra);
            Catalog::from_rows(v)
        };
        let known = Known {
            read: &[],
            write: &[],
            opaque: StatementClass::Write,
        };
        let class = |cat: &Catalog, sql: &str| {
            let c = Classifier::new(&[]).classify(sql);
            assert!(Catalog::needed(&c), "{sql}");
            cat.resolve(&c, &known).class
        };
        let cat = rows(vec![]);
        for sql in [
            "SELECT t.purge FROM rv.t t WHERE id = 1",
            "SELECT (t).purge FROM rv.t t",
            "SELECT (t.*).purge FROM rv.t t",
            "SELECT 1 OPERATOR(rv.%%%) ANY (SELECT 2)",
            "SELECT 1 WHERE 1 OPERATOR(rv.%%%) ALL (SELECT 2)",
            "SELECT a FROM t ORDER BY a USING OPERATOR(rv.%%%)",
            "INSERT INTO log SELECT 'x' WHERE 1 OPERATOR(rv.%%%) ANY (SELECT 2)",
            "SELECT json_object('{a,1}'::text[])",
            "SELECT json_array(1, 2)",
            "SELECT json_object('a' VALUE 1)",
        ] {
            assert_eq!(class(&cat, sql), Some(StatementClass::Write), "{sql}");
        }
        // Names no function has are columns; functions that only read stay reads.
        assert_eq!(class(&cat, "SELECT t.id, t.lower FROM t"), None);
        assert_eq!(class(&cat, "SELECT a FROM t ORDER BY a"), None);
        // A volatile comparison operator may be called by any statement
        // that compares or sorts columns, without naming it.
        let cat = rows(vec![CatalogRow::Operator {
            schema: "rv".into(),
            name: "<".into(),
            volatility: Volatility::Volatile,
        }]);
        for sql in [
            "SELECT a FROM t ORDER BY a",
            "SELECT DISTINCT a FROM t",
            "SELECT 1 WHERE 2 BETWEEN 1 AND 3",
        ] {
            assert_eq!(class(&cat, sql), Some(StatementClass::Write), "{sql}");
        }
    }

    #[test]
    fn whether_the_catalog_is_needed() {
        let c = Classifier::new(&[]);
        assert!(!Catalog::needed(&c.classify("select 1")));
        // Columns: their types' operators may be user-defined.
        assert!(Catalog::needed(&c.classify("select * from t")));
        assert!(Catalog::needed(&c.classify("select * from t where a = 1")));
        assert!(Catalog::needed(&c.classify("select f()")));
        assert!(!Catalog::needed(&c.classify("select nextval('s')")));
    }
}
