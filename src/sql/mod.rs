//! Statement classification and fingerprints.
//!
//! The policy engine asks one question of every statement a client sends:
//! how much can it change? This module answers with PostgreSQL's own grammar
//! (libpg_query, through the `pg_query` crate), never with keywords or
//! regular expressions, so comments, case, quoting and dollar quoting cannot
//! disguise a statement: `/* DELETE */ SELECT 1` is a read and
//! `SELECT $$DELETE FROM t$$` selects a string.
//!
//! # API
//!
//! ```
//! use gatehouse::sql::{Classifier, StatementClass};
//!
//! let classifier = Classifier::new(&["audit.purge".to_string()]);
//! let c = classifier.classify("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d");
//! assert_eq!(c.class, StatementClass::Delete);
//! assert!(c.statements[0].flags.delete_without_where);
//! assert_eq!(c.statements[0].tables, vec!["t"]);
//! ```
//!
//! - [`Classifier::new`]`(extra_side_effect_functions)` builds a classifier
//!   from the default table of side-effect functions (below) plus the
//!   deployment's own names, each treated as [`StatementClass::Admin`];
//!   [`Classifier::with_side_effects`] takes a class per name and a cache
//!   size.
//! - [`Classifier::classify`]`(sql) -> Arc<`[`Classification`]`>`: the
//!   strictest [`StatementClass`] over all statements in the text, one
//!   [`StatementInfo`] per statement (its class, a command name such as
//!   `"DELETE"` or `"EXPLAIN ANALYZE"`, its [`Flags`], the side-effect
//!   functions it calls, every function it calls, the tables it names), and
//!   the parse error if any (then the class is `Unknown` and there are no
//!   statements).
//! - [`fingerprint`]`(sql)`: the text's fingerprint, computed only when
//!   asked (a held statement's review): it parses the text again, which
//!   the data path does not pay for every new text.
//! - Results are cached by exact text in a bounded CLOCK cache
//!   ([`Classifier::DEFAULT_CACHE_ENTRIES`] entries; texts longer than
//!   [`Classifier::MAX_CACHED_SQL_LEN`] are not cached), so a prepared or
//!   repeated statement costs a hash lookup. Texts that differ only in
//!   their constants share one classification through their *shape* (see
//!   `shape`: libpg_query's normalisation, shared only when no rule read a
//!   constant's value and the shape classifies the same), so inlined values
//!   cost a parse without the walk; and a plain text (no comments, escapes
//!   or dollar quotes: see `lexed_shape`) costs no parse at all once
//!   libpg_query has confirmed its lexed shape. A classifier is meant to
//!   live on one worker thread: it is `Send` but not `Sync`.
//!
//! # Classes
//!
//! `Read < Write < Delete < Ddl < Admin < Unknown`, ordered by strictness,
//! so `max` gives the strictest; `Unknown` (text that cannot be parsed, or
//! code whose effect cannot be seen) is the strictest of all.
//!
//! | statement | class | notes |
//! |---|---|---|
//! | `SELECT`, `VALUES`, `TABLE`, `SHOW`, `DECLARE`/`FETCH`/`CLOSE` cursor | Read | raised by what is inside (below) |
//! | `BEGIN`/`COMMIT`/`ROLLBACK`/`SAVEPOINT`/`RELEASE`, `SET`/`RESET` of ordinary settings, `RESET ALL`, `DISCARD`, `SET CONSTRAINTS`, `DEALLOCATE` | Read | session control |
//! | `LISTEN`, `UNLISTEN` | Read | only subscribe this session |
//! | `NOTIFY`, `pg_notify()` | Write | `notify`: reaches other sessions |
//! | `INSERT` (incl. `ON CONFLICT`), `UPDATE`, `MERGE` | Write | `update_without_where`, `upsert` |
//! | `SELECT … FOR UPDATE/NO KEY UPDATE/SHARE/KEY SHARE` | Write | `row_locks`: it takes row locks that block writers, like an `UPDATE` would |
//! | `LOCK TABLE` | Write | `lock_table` |
//! | `REFRESH MATERIALIZED VIEW` | Write | rewrites stored data |
//! | `COPY … FROM STDIN` | Write | `copy_from` |
//! | `COPY … TO STDOUT`, `COPY (SELECT …) TO STDOUT` | Read | the inner query is walked like any other |
//! | `DELETE`, `MERGE … THEN DELETE` | Delete | `delete_without_where` |
//! | `TRUNCATE` | Delete | `truncate`: it removes rows, like `DELETE` without `WHERE` |
//! | `CREATE`/`ALTER`/`COMMENT`/`DROP` of schema objects, `SELECT INTO`, `CREATE TABLE AS` | Ddl | `drop` (also for `ALTER TABLE … DROP COLUMN/CONSTRAINT`), `select_into` |
//! | `GRANT`/`REVOKE`, roles, `ALTER SYSTEM`, `VACUUM`/`ANALYZE`/`CLUSTER`/`REINDEX`, `CHECKPOINT`, `LOAD`, databases, tablespaces, extensions, languages, FDWs/servers/user mappings, publications/subscriptions, event triggers, ownership, security labels | Admin | `grant`, `role_admin`, `alter_system`, `maintenance` |
//! | `SET ROLE`, `RESET ROLE`, `SET SESSION AUTHORIZATION` (and `set_config('role', …)`) | Admin | `set_role` |
//! | `SET` of a guarded setting: any setting not in `functions::ORDINARY_SETTINGS` (nor an application's own dotted name): `session_replication_role`, `jit_dump_bitcode`, `track_*`, `temp_file_limit`, `log_*`, library paths, unknown names; and INSERT/UPDATE/DELETE/MERGE of a system catalog (`pg_settings`, `pg_catalog.*`) | Admin | `guarded_setting` (`pg_settings`, settings) |
//! | turning read-only off: `SET default_transaction_read_only/transaction_read_only = off`, `BEGIN`/`START TRANSACTION`/`SET TRANSACTION`/`SET SESSION CHARACTERISTICS … READ WRITE` | Admin | `read_only_override`: gatehouse may run sessions read-only as a second net |
//! | `PREPARE TRANSACTION`, `COMMIT PREPARED`, `ROLLBACK PREPARED` | Admin | outlive the session, reach others' transactions |
//! | `COPY … FROM/TO PROGRAM` | Admin | `copy_program` |
//! | `COPY … FROM/TO 'server file'` | Admin | `file_access` |
//! | `DO` | Unknown | `do_block`: arbitrary code |
//! | `CALL` | Unknown | `call`: a procedure may do anything; its name is in `functions` |
//! | `EXECUTE name` | Unknown | `execute`: the prepared text lives in the session, not here |
//! | `EXPLAIN ANALYZE <stmt>` | the inner class | `explain_analyze`: ANALYZE executes the statement (any ANALYZE option not clearly off counts) |
//! | `EXPLAIN <stmt>` | Read | only plans |
//! | `PREPARE name AS <stmt>` | the inner class | |
//! | unparseable text | Unknown | `error` says why |
//! | empty text (or only comments) | Read | no statements |
//!
//! Whatever the top-level statement, a complete walk of its parse tree (every
//! field of every node, see `walk`) raises the class by what it finds
//! anywhere: a data-modifying statement in a `WITH` clause (at any depth:
//! `data_modifying_cte`), a locking clause in a subquery, a `SELECT INTO`,
//! and calls of side-effect functions in the select list, `WHERE`, `FROM`,
//! `LIMIT`, `VALUES`, subqueries, CTEs and other functions' arguments.
//! Several statements in one text are each listed, and the strictest wins.
//!
//! # Side-effect functions
//!
//! Matched case-insensitively by bare name in any schema (an entry with a
//! schema also matches the unqualified call). A call raises its statement to
//! at least the class shown and sets `side_effect_function` (and
//! `file_access` for file functions); its name is listed in
//! `StatementInfo::functions`.
//!
//! | class | functions |
//! |---|---|
//! | Admin, `file_access` | `pg_read_file`, `pg_read_binary_file`, `pg_ls_dir`, `pg_stat_file`, `pg_ls_logdir`, `pg_ls_waldir`, `pg_ls_tmpdir`, `pg_ls_archive_statusdir`, `pg_ls_logicalmapdir`, `pg_ls_logicalsnapdir`, `pg_ls_replslotdir`, `pg_ls_summariesdir`, `pg_file_write`, `pg_file_rename`, `pg_file_unlink`, `pg_file_sync`, `pg_logdir_ls`, `lo_import`, `lo_export` |
//! | Admin | `pg_terminate_backend`, `pg_cancel_backend`, `pg_reload_conf`, `pg_rotate_logfile(_old)`, `pg_log_backend_memory_contexts`, `pg_switch_wal`/`pg_switch_xlog`, `pg_create_restore_point`, `pg_promote`, `pg_backup_start/stop`, `pg_start/stop_backup`, `pg_wal_replay_pause/resume`, `pg_xlog_replay_pause/resume`, `pg_log_standby_snapshot`, `pg_logical_emit_message`, replication slots (`pg_create_*_replication_slot`, `pg_drop_replication_slot`, `pg_copy_*_replication_slot`, `pg_replication_slot_advance`, `pg_logical_slot_get_(binary_)changes`, `pg_sync_replication_slots`), replication origins (`pg_replication_origin_*`), statistics resets (`pg_stat_reset*`, `pg_stat_statements_reset`), `pg_restore/clear_relation/attribute_stats`, `pg_import_system_collations`, `dblink_connect(_u)` |
//! | Unknown (run SQL given as text) | `dblink`, `dblink_exec`, `dblink_send_query`, `dblink_open`, `query_to_xml`, `query_to_xmlschema`, `query_to_xml_and_xmlschema`, `ts_stat`, `ts_rewrite`, `crosstab`, `crosstab2..4` |
//! | Write | `nextval`, `setval`, `set_config` (Admin for `role`, `session_authorization`, guarded and read-only settings, or a setting named by an expression), `pg_notify`, advisory locks (`pg_(try_)advisory_(xact_)lock(_shared)`, `pg_advisory_unlock(_shared/_all)`), large objects (`lo_create`, `lo_creat`, `lo_from_bytea`, `lo_put`, `lowrite`, `lo_truncate(64)`) |
//! | Delete | `lo_unlink` |
//!
//! # Fingerprints
//!
//! `pg_query`'s fingerprint of the whole text: constants and aliases do not
//! matter, schema names and full relation names do (so approving a statement
//! on `orders_2024_01` does not approve it on `orders_2024_02`). Text that
//! cannot be parsed gets `raw:` and 16 hex digits of its SHA-256 instead.
//!
//! # What it cannot see
//!
//! Classification is syntactic. A function not in the table is taken to be
//! read-only, and what triggers, rules, views, operators, casts and
//! user-defined functions do when they run is invisible here; list such
//! functions as extra side-effect functions, or let the database's own
//! privileges hold the line.

mod cache;
mod catalog;
mod functions;
mod lexed_shape;
pub mod mysql;
mod rules;
mod shape;
mod walk;

#[cfg(test)]
mod tests;

/// Statements up to this long are parsed on the caller's stack: even
/// their deepest nesting fits in a quarter of a worker's 2 MiB (sqlparser
/// takes about 1 KiB of stack per byte of a join chain in a release build;
/// a debug build's frames are a hundred times larger).
const SHALLOW_PARSE_BYTES: usize = if cfg!(debug_assertions) { 16 } else { 256 };
/// Longer ones get a stack of this size, reserved for the parse and
/// committed only as deep as it goes. The nesting that recurses without a
/// limit in sqlparser (join chains) is bounded before the parse (MySQL:
/// `MAX_JOINS`), so this holds any statement up to [`MAX_PARSE_BYTES`].
const DEEP_PARSE_STACK: usize = 256 << 20;
/// Longer still: not parsed (the statement is unknown, which policies
/// treat most strictly). A parser recursing on a hostile statement's
/// nesting must never overflow a worker's stack: that aborts the process.
pub const MAX_PARSE_BYTES: usize = 4 << 20;

/// Runs a parse (or a walk of what it made) of a `len`-byte statement where
/// its recursion cannot overflow the stack; `Err` when it is too long.
pub(crate) fn deep_stack<T>(len: usize, f: impl FnOnce() -> T) -> Result<T, String> {
    if len <= SHALLOW_PARSE_BYTES {
        return Ok(f());
    }
    if len > MAX_PARSE_BYTES {
        return Err(format!(
            "the statement is {len} bytes: statements over {MAX_PARSE_BYTES} are not classified"
        ));
    }
    Ok(stacker::grow(DEEP_PARSE_STACK, f))
}

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use catalog::{Catalog, CatalogRow, Known, Resolution, Volatility, HARMLESS_VOLATILE_FUNCTIONS};
pub use functions::{lexical_value_ok, SideEffect, DEFAULT_SIDE_EFFECT_FUNCTIONS};

/// How much a statement can change, ordered by strictness: `max` over a
/// set of classes gives the strictest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StatementClass {
    /// Reads data or controls the session.
    Read,
    /// Inserts, updates or locks rows; advances sequences; notifies.
    Write,
    /// Deletes rows (`DELETE`, `TRUNCATE`, `MERGE … DELETE`).
    Delete,
    /// Changes the schema.
    Ddl,
    /// Changes privileges, roles, the server, or touches its files.
    Admin,
    /// Cannot be classified: unparseable text, or arbitrary code (`DO`,
    /// `CALL`, `EXECUTE`, SQL passed as text to a function).
    Unknown,
}

impl StatementClass {
    /// Every class, least strict first.
    pub const ALL: [StatementClass; 6] = [
        StatementClass::Read,
        StatementClass::Write,
        StatementClass::Delete,
        StatementClass::Ddl,
        StatementClass::Admin,
        StatementClass::Unknown,
    ];

    /// The lower-case name used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            StatementClass::Read => "read",
            StatementClass::Write => "write",
            StatementClass::Delete => "delete",
            StatementClass::Ddl => "ddl",
            StatementClass::Admin => "admin",
            StatementClass::Unknown => "unknown",
        }
    }
}

impl fmt::Display for StatementClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A class name that is none of `read`, `write`, `delete`, `ddl`, `admin`,
/// `unknown`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown statement class {0:?}: expected read, write, delete, ddl, admin or unknown")]
pub struct ParseClassError(pub String);

impl FromStr for StatementClass {
    type Err = ParseClassError;

    /// Parses the names [`StatementClass::as_str`] gives, ignoring ASCII case
    /// and surrounding spaces.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        StatementClass::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| ParseClassError(s.to_string()))
    }
}

macro_rules! flags {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Facts about a statement that guardrails key on, beyond its class.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct Flags {
            $($(#[$doc])* pub $name: bool,)*
        }

        impl Flags {
            /// Every flag's name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name),)*];

            /// Flags set in either.
            pub fn union(self, other: Flags) -> Flags {
                Flags { $($name: self.$name || other.$name,)* }
            }

            /// The names of the flags that are set, for logs and audit.
            pub fn names(&self) -> Vec<&'static str> {
                let mut out = Vec::new();
                $(if self.$name { out.push(stringify!($name)); })*
                out
            }

            /// No flag is set.
            pub fn is_empty(&self) -> bool {
                !($(self.$name)||*)
            }
        }
    };
}

flags! {
    /// A `DELETE` (anywhere in the statement) without a `WHERE` clause, or
    /// with one that picks no rows: it names no column (`WHERE true`,
    /// `WHERE 1 = 1`, `WHERE $1`) or is OR'd with a constant truth
    /// (`WHERE id = 5 OR 'x' = 'x'`).
    delete_without_where,
    /// An `UPDATE` without a `WHERE` clause, read as for
    /// `delete_without_where`.
    update_without_where,
    /// `DROP …` of any object, or `ALTER TABLE … DROP COLUMN/CONSTRAINT`.
    drop,
    /// `TRUNCATE`.
    truncate,
    /// `ALTER SYSTEM`.
    alter_system,
    /// `COPY … FROM PROGRAM` / `COPY … TO PROGRAM`: a shell command on the
    /// database server.
    copy_program,
    /// `COPY … FROM` (STDIN, a file or a program).
    copy_from,
    /// Server files: a file function, or `COPY` to or from a server file.
    file_access,
    /// `SET ROLE`, `RESET ROLE`, `SET SESSION AUTHORIZATION`,
    /// `set_config('role', …)`.
    set_role,
    /// `DO`: an anonymous code block.
    do_block,
    /// `CALL` of a procedure.
    call,
    /// `EXECUTE name` of a statement prepared with SQL `PREPARE`.
    execute,
    /// A row-locking clause (`FOR UPDATE`, `FOR SHARE`, …).
    row_locks,
    /// `LOCK TABLE`.
    lock_table,
    /// `SELECT … INTO` or `CREATE TABLE … AS`.
    select_into,
    /// `INSERT … ON CONFLICT DO UPDATE`.
    upsert,
    /// A data-modifying statement inside a `WITH` clause.
    data_modifying_cte,
    /// `EXPLAIN ANALYZE`: the statement is executed.
    explain_analyze,
    /// `NOTIFY` (the `pg_notify` function sets `side_effect_function`).
    notify,
    /// `GRANT`, `REVOKE`, `ALTER DEFAULT PRIVILEGES`.
    grant,
    /// `CREATE/ALTER/DROP ROLE` (and `USER`, `GROUP`).
    role_admin,
    /// `VACUUM`, `ANALYZE`, `CLUSTER`, `REINDEX`.
    maintenance,
    /// A call of a function in the side-effect table.
    side_effect_function,
    /// `SET`/`set_config` of a guarded setting (see the module docs).
    guarded_setting,
    /// Turning read-only transactions off (`READ WRITE`,
    /// `default_transaction_read_only = off`).
    read_only_override,
    /// Changing how statement text is read: `client_encoding`,
    /// `standard_conforming_strings` or `backslash_quote` set to anything
    /// but the values gatehouse pins (UTF8, on, off). Under a policy such a
    /// statement is refused whatever the role: the classifier reads text the
    /// way those values say.
    lexical_setting,
    /// Calls a function (or uses an operator) that the target's catalog
    /// says may write: a volatile user function, or a volatile built-in not
    /// known to be harmless. Set when the catalog is consulted.
    volatile_function,
    /// Calls a function the target's catalog does not have. Set when the
    /// catalog is consulted; the class is then `Unknown`.
    unresolved_function,
}

/// One statement of a classified text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementInfo {
    /// This statement's class.
    pub class: StatementClass,
    /// Upper-case command name: `"SELECT"`, `"INSERT"`, `"UPDATE"`,
    /// `"DELETE"`, `"MERGE"`, `"CREATE TABLE"`, `"DROP TABLE"`,
    /// `"TRUNCATE"`, `"ALTER SYSTEM"`, `"COPY FROM"`, `"COPY TO"`, `"DO"`,
    /// `"CALL"`, `"SET ROLE"`, `"SET SESSION AUTHORIZATION"`,
    /// `"EXPLAIN ANALYZE"`, `"GRANT"`, …
    pub command: String,
    pub flags: Flags,
    /// Side-effect functions called (as written, schema parts joined by
    /// `.`), and for `CALL` the procedure.
    pub functions: Vec<String>,
    /// Every function called by name, side effects or not, for policies that
    /// allow only known functions.
    pub calls: Vec<String>,
    /// The same calls as (schema, name) the way the parser split them (a
    /// quoted name may hold a dot), for the catalog; those the side-effect
    /// table decides are left out.
    pub catalog_calls: Vec<(Option<String>, String)>,
    /// Relations named (`schema.name` when qualified), CTE names excluded.
    pub tables: Vec<String>,
    /// Operators used, as written (`=`, `pg_catalog.+`): each is a function
    /// call too, resolved against the target's catalog like `calls`.
    pub operators: Vec<String>,
    /// Names the server may resolve to a function although the statement
    /// shows no call (attribute notation `t.f`, `(row).f`; SQL/JSON syntax
    /// an older server reads as calls): a volatile function of such a name
    /// counts as called; a name no function has is a column.
    pub maybe_calls: Vec<String>,
    /// Whether the statement reads relations, columns or typed values:
    /// sorting, grouping, DISTINCT, joins, set operations, comparisons and
    /// casts on them may call their types' operators, support functions,
    /// casts and input functions.
    pub reads_data: bool,
    /// Prepared statements this statement creates (`PREPARE name`): the
    /// protocol sees them under the same names.
    pub prepared: Vec<String>,
    /// Cursors this statement opens (`DECLARE name CURSOR`): portals under
    /// the same names.
    pub cursors: Vec<String>,
}

impl Default for StatementInfo {
    fn default() -> Self {
        StatementInfo {
            class: StatementClass::Read,
            command: String::new(),
            flags: Flags::default(),
            functions: Vec::new(),
            calls: Vec::new(),
            catalog_calls: Vec::new(),
            tables: Vec::new(),
            operators: Vec::new(),
            maybe_calls: Vec::new(),
            reads_data: false,
            prepared: Vec::new(),
            cursors: Vec::new(),
        }
    }
}

/// The classification of one text, which may hold several statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// The strictest class over all statements (`Unknown` on a parse error,
    /// `Read` for a text without statements).
    pub class: StatementClass,
    /// Each statement, in order.
    pub statements: Vec<StatementInfo>,
    /// The parser's error; then `class` is `Unknown`.
    pub error: Option<String>,
}

impl Classification {
    /// Flags of all statements together.
    pub fn flags(&self) -> Flags {
        self.statements
            .iter()
            .fold(Flags::default(), |acc, s| acc.union(s.flags))
    }
}

/// Fingerprint options: aliases ignored; schema names and full relation
/// names significant.
fn fingerprint_options() -> pg_query::FingerprintOptions {
    pg_query::FingerprintOptions::RANGEVAR_PG17_COMPAT | pg_query::FingerprintOptions::FULL_RELNAME
}

/// Classifies statements; one per worker thread (it is `Send`, not `Sync`).
pub struct Classifier {
    functions: functions::FunctionTable,
    /// Classifications by exact text.
    cache: RefCell<cache::ClockCache<Arc<Classification>>>,
    /// What is known of each shape seen lately.
    shapes: RefCell<cache::ClockCache<shape::Known>>,
    /// Lexed shapes (by `LexedShape::key`) that libpg_query confirmed: a
    /// text with one of them has that shape without a parse.
    confirmed_lexed: RefCell<cache::ClockCache<()>>,
    /// Texts normalised by libpg_query to find their shape.
    shape_parses: std::cell::Cell<u64>,
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("cached", &self.cached())
            .field("shapes", &self.shapes_cached())
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// Entries the cache holds by default.
    pub const DEFAULT_CACHE_ENTRIES: usize = 4096;
    /// Texts longer than this are classified every time rather than cached,
    /// so the cache's memory stays bounded (4096 × 16 KiB at most).
    pub const MAX_CACHED_SQL_LEN: usize = 16 * 1024;

    /// The default side-effect table plus `extra_side_effect_functions`
    /// (names, optionally schema-qualified), each taken as
    /// [`StatementClass::Admin`].
    pub fn new(extra_side_effect_functions: &[String]) -> Self {
        let admin = SideEffect {
            class: StatementClass::Admin,
            file_access: false,
        };
        let extra: Vec<(String, SideEffect)> = extra_side_effect_functions.iter().map(|n| (n.clone(), admin)).collect();
        Self::with_side_effects(&extra, Self::DEFAULT_CACHE_ENTRIES)
    }

    /// The default side-effect table plus `extra` with their own effects, and
    /// a cache of `cache_entries` texts (0 disables it).
    pub fn with_side_effects(extra: &[(String, SideEffect)], cache_entries: usize) -> Self {
        Classifier {
            functions: functions::FunctionTable::new(extra.iter().map(|(n, e)| (n.as_str(), *e))),
            cache: RefCell::new(cache::ClockCache::new(cache_entries)),
            shapes: RefCell::new(cache::ClockCache::new(cache_entries)),
            confirmed_lexed: RefCell::new(cache::ClockCache::new(cache_entries)),
            shape_parses: std::cell::Cell::new(0),
        }
    }

    /// Classify `sql`: from the cache when this exact text was seen, else
    /// from its shape's classification when one is shared, else by a full
    /// parse and walk.
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        if sql.len() > Self::MAX_CACHED_SQL_LEN {
            return Arc::new(self.classify_uncached(sql));
        }
        if let Some(hit) = self.cache.borrow_mut().get(sql) {
            return hit;
        }
        let shape = self
            .shape_of(sql)
            .filter(|s| s != sql && s.len() <= Self::MAX_CACHED_SQL_LEN);
        let Some(shape) = shape else {
            return self.classify_and_keep(sql);
        };
        let known = self.shapes.borrow_mut().get(&shape);
        match known {
            // Not added under their exact texts: with values inlined, texts
            // rarely repeat and would only push out those that do.
            Some(shape::Known::Shared(c)) => c,
            Some(shape::Known::Unshared) => self.classify_and_keep(sql),
            Some(shape::Known::SeenOnce(first)) => {
                // A second text of the shape: worth checking the shape now.
                if self.shape_classifies_alike(&shape, &first) {
                    self.shapes
                        .borrow_mut()
                        .replace(&shape, shape::Known::Shared(Arc::clone(&first)));
                    first
                } else {
                    self.shapes.borrow_mut().replace(&shape, shape::Known::Unshared);
                    self.classify_and_keep(sql)
                }
            }
            None => {
                let (result, read_a_value) = shape::track_value_reads(|| self.classify_uncached(sql));
                let result = Arc::new(result);
                let known = if read_a_value {
                    shape::Known::Unshared
                } else {
                    shape::Known::SeenOnce(Arc::clone(&result))
                };
                self.shapes.borrow_mut().insert(&shape, known);
                self.cache.borrow_mut().insert(sql, Arc::clone(&result));
                result
            }
        }
    }

    /// The text's shape: from the lexer when libpg_query confirmed its
    /// lexed shape before (see `lexed_shape` for why that is the same
    /// answer), else from libpg_query, confirming the lexed shape when the
    /// two agree.
    fn shape_of(&self, sql: &str) -> Option<String> {
        let lexed = lexed_shape::lex(sql);
        if let Some(l) = &lexed {
            if self.confirmed_lexed.borrow_mut().get(&l.key).is_some() {
                return lexed.map(|l| l.shape);
            }
        }
        self.shape_parses.set(self.shape_parses.get() + 1);
        let shape = shape::of(sql);
        if let (Some(l), Some(s)) = (&lexed, &shape) {
            // A text without constants has nothing to share (`classify`
            // keeps it by its text), so its lexed shape is not kept either.
            if l.shape == *s && l.shape != sql {
                self.confirmed_lexed.borrow_mut().insert(&l.key, ());
            }
        }
        shape
    }

    fn classify_and_keep(&self, sql: &str) -> Arc<Classification> {
        let result = Arc::new(self.classify_uncached(sql));
        self.cache.borrow_mut().insert(sql, Arc::clone(&result));
        result
    }

    /// The second and third checks before a classification is shared by
    /// its shape (the first: no rule read a constant's value): the shape
    /// itself, its constants now parameters of unknown value, classifies to
    /// exactly the same, reading no constant either; and the shape with a
    /// value in every slot parses. Done at a shape's second text, so a text
    /// whose shape never comes again costs no parse more.
    fn shape_classifies_alike(&self, shape: &str, classification: &Classification) -> bool {
        let (of_shape, read_a_value) = shape::track_value_reads(|| self.classify_uncached(shape));
        if read_a_value || of_shape.error.is_some() || of_shape != *classification {
            return false;
        }
        // And its deepest text parses (see `shape`, the third check).
        self.classify_uncached(&shape::with_values(shape)).error.is_none()
    }

    /// Classify `sql` without looking at or filling the cache.
    pub fn classify_uncached(&self, sql: &str) -> Classification {
        match deep_stack(sql.len(), || self.classify_here(sql)) {
            Ok(c) => c,
            Err(e) => Classification {
                class: StatementClass::Unknown,
                statements: Vec::new(),
                error: Some(e),
            },
        }
    }

    fn classify_here(&self, sql: &str) -> Classification {
        let parsed = match pg_query::parse(sql, 0) {
            Ok(p) => p,
            Err(e) => {
                return Classification {
                    class: StatementClass::Unknown,
                    statements: Vec::new(),
                    error: Some(e.to_string()),
                }
            }
        };
        let statements: Vec<StatementInfo> = parsed
            .protobuf
            .stmts
            .iter()
            .map(|raw| match raw.stmt.as_deref().and_then(|n| n.node.as_ref()) {
                Some(node) => rules::statement(node, &self.functions, 0),
                None => StatementInfo {
                    class: StatementClass::Unknown,
                    command: "UNKNOWN".into(),
                    ..StatementInfo::default()
                },
            })
            .collect();
        let class = statements.iter().map(|s| s.class).max().unwrap_or(StatementClass::Read);
        Classification {
            class,
            statements,
            error: None,
        }
    }

    /// How many texts the cache holds.
    pub fn cached(&self) -> usize {
        self.cache.borrow().len()
    }

    /// How many shapes the classifier knows of (shared or not).
    pub fn shapes_cached(&self) -> usize {
        self.shapes.borrow().len()
    }

    /// How many texts libpg_query normalised to find their shape (the
    /// others' shapes came from the lexer, or they were cached whole).
    pub fn shape_parses(&self) -> u64 {
        self.shape_parses.get()
    }
}

/// `pg_query`'s fingerprint of a text, or `raw:` and a hash when it cannot
/// be parsed (see the module's notes on fingerprints).
pub fn fingerprint(sql: &str) -> String {
    match pg_query::fingerprint(sql, 0, fingerprint_options()) {
        Ok(f) => f.hex,
        Err(_) => raw_fingerprint(sql),
    }
}

fn raw_fingerprint(sql: &str) -> String {
    let digest = Sha256::digest(sql.as_bytes());
    format!("raw:{}", hex::encode(&digest[..8]))
}
