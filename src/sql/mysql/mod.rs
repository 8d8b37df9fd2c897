//! Statement classification and fingerprints for MySQL and MariaDB.
//!
//! The same question as [`crate::sql::Classifier`] asks of PostgreSQL text
//! (how much can this statement change?), answered with the same types
//! ([`Classification`], [`StatementInfo`], [`StatementClass`], [`Flags`]),
//! so the policy engine treats both alike. The grammar is `sqlparser`'s
//! `MySqlDialect`; before it runs, a lexer that reads text exactly as the
//! server does (`lex`) refuses what the two could read differently.
//!
//! # API
//!
//! ```
//! use gatehouse::sql::mysql::{fingerprint, MysqlClassifier};
//! use gatehouse::sql::StatementClass;
//!
//! let classifier = MysqlClassifier::new(&["audit_purge".to_string()]);
//! let c = classifier.classify("SELECT 1; DELETE FROM t");
//! assert_eq!(c.class, StatementClass::Delete);
//! assert!(c.statements[1].flags.delete_without_where);
//! assert_eq!(classifier.classify("SELECT 1 /*! ; DROP TABLE t */").class, StatementClass::Unknown);
//! assert_eq!(fingerprint("SELECT * FROM t WHERE a = 1"), fingerprint("select * from t where a = 22"));
//! ```
//!
//! - [`MysqlClassifier::new`]`(extra_side_effect_functions)`: the built-in
//!   tables plus the deployment's own function names, each
//!   [`StatementClass::Admin`]. One per worker thread (`Send`, not `Sync`).
//! - [`MysqlClassifier::classify`]`(sql) -> Arc<Classification>`, cached by
//!   exact text in the same bounded CLOCK cache as PostgreSQL's.
//! - [`fingerprint`]`(sql)`: `mysql:` and 16 hex digits of the SHA-256 of
//!   the normalized token stream (literals → `?`, unquoted words lower
//!   case, comments and spacing dropped); text that cannot be classified
//!   gets `raw:` and a hash of the text, as for PostgreSQL.
//!
//! # Classes
//!
//! | statement | class | flags / notes |
//! |---|---|---|
//! | `SELECT`, `VALUES`, `SHOW`, `DESCRIBE`, `EXPLAIN` (not `ANALYZE`), `HELP`, `HANDLER …` | Read | raised by what is inside |
//! | `USE`, `BEGIN`/`START TRANSACTION`/`COMMIT`/`ROLLBACK`/`SAVEPOINT`/`RELEASE`, `UNLOCK TABLES`, `DEALLOCATE PREPARE` | Read | session control |
//! | `SET` of an ordinary session variable (`functions::ORDINARY_VARIABLES`) or a user variable (`SET @x = …`), `SELECT … INTO @x` | Read | raised by the value's calls |
//! | `DO expr` | Read | read as `SELECT expr`: raised by its calls |
//! | `INSERT`, `REPLACE`, `INSERT … ON DUPLICATE KEY UPDATE` | Write | `upsert` for the last two |
//! | `UPDATE` (also multi-table) | Write | `update_without_where`: no `WHERE`, one naming no column, one OR'd with such, or one with `XOR` anywhere (the parser binds it tighter than the server) |
//! | `SELECT … FOR UPDATE / FOR SHARE / LOCK IN SHARE MODE` | Write | `row_locks` |
//! | `LOCK TABLES` | Write | `lock_table` |
//! | `LOAD DATA LOCAL INFILE` | Write | `copy_from` |
//! | `LOAD DATA INFILE` (a server file) | Admin | `copy_from`, `file_access` |
//! | `GET_LOCK`, `RELEASE_LOCK`, `RELEASE_ALL_LOCKS`, `NEXTVAL`, `SETVAL` | Write | `side_effect_function` |
//! | `DELETE` (also multi-table), `TRUNCATE` | Delete | `delete_without_where`, `truncate` |
//! | `CREATE`/`ALTER`/`DROP`/`RENAME` of tables, views, indexes, triggers, events, procedures, functions, sequences | Ddl | `drop` (also `ALTER TABLE … DROP …`), `select_into` (`CREATE TABLE … SELECT`) |
//! | `CREATE`/`ALTER EVENT … DO stmt` | Ddl, raised to the body's class | the scheduler runs the body within the second |
//! | `CREATE`/`ALTER TABLE … DATA/INDEX DIRECTORY`, `… CONNECTION`/`ENGINE=FEDERATED`/`CONNECT` | Admin | `file_access` for directories |
//! | `CREATE`/`ALTER`/`DROP` `DATABASE`/`SCHEMA`, servers, tablespaces | Admin | `drop` |
//! | `CREATE FUNCTION … SONAME` (a shared library) | Admin | |
//! | `INSERT`/`UPDATE`/`DELETE`/`REPLACE`/`TRUNCATE` of a table in `mysql`, `performance_schema`, `sys`, `information_schema`; `USE` of one of them (unqualified names would reach them unseen) | Admin | `guarded_setting` |
//! | `GRANT`, `REVOKE` | Admin | `grant` |
//! | `CREATE`/`ALTER`/`DROP`/`RENAME` `USER`/`ROLE`, `SET PASSWORD` | Admin | `role_admin` |
//! | `SET ROLE`, `SET DEFAULT ROLE` | Admin | `set_role` |
//! | `SET GLOBAL`, `SET @@global.`, `SET PERSIST`, `SET PERSIST_ONLY` | Admin | `guarded_setting`, `alter_system` |
//! | `SET` of any other session variable (`foreign_key_checks`, `unique_checks`, `sql_safe_updates`, `sql_log_bin`, `sql_log_off`, `pseudo_thread_id`, `gtid_*`, `insert_id`, `session_track_*`, unknown names) | Admin | `guarded_setting` |
//! | `SET transaction_read_only = 0`, `SET TRANSACTION READ WRITE`, `START TRANSACTION READ WRITE` | Admin | `read_only_override` |
//! | `SET NAMES`/`CHARACTER SET`/`character_set_client`/`_connection`/`_results`/`collation_connection` to other than utf8mb4, utf8mb3, utf8, latin1, ascii, binary (or `DEFAULT`) | Admin | `lexical_setting` |
//! | `sql_mode` set (also `SET STATEMENT sql_mode = … FOR`) to anything but one string literal of modes that leave tokens alone (`functions::SAFE_SQL_MODES`: not `ANSI_QUOTES`, `NO_BACKSLASH_ESCAPES`, `PIPES_AS_CONCAT`, `IGNORE_SPACE`, `HIGH_NOT_PRECEDENCE`, `ANSI`, `ORACLE`, `MSSQL`, `DB2`, `MAXDB`, `POSTGRESQL`) | Admin | `lexical_setting` |
//! | `FLUSH`, `KILL`, `SHUTDOWN`, `RESTART`, `RESET`, `PURGE`, `BINLOG`, `CHANGE MASTER/REPLICATION`, `START`/`STOP SLAVE/REPLICA`, `INSTALL`/`UNINSTALL`, `XA …` | Admin | |
//! | `OPTIMIZE`/`ANALYZE`/`REPAIR`/`CHECK`/`CHECKSUM TABLE` | Admin | `maintenance` |
//! | `SELECT … INTO OUTFILE/DUMPFILE`, `LOAD_FILE()` | Admin | `file_access` |
//! | `EXPLAIN ANALYZE stmt`, MariaDB's `ANALYZE stmt` | the inner class | `explain_analyze`: the statement runs |
//! | `PREPARE name FROM 'text'` | the text's class (nested at most `rules::MAX_DEPTH` deep) | `prepared` holds the name |
//! | `PREPARE name FROM @var` | Unknown | the text is not visible |
//! | `EXECUTE`, `EXECUTE IMMEDIATE` | Unknown | `execute` |
//! | `CALL` | Unknown | `call`; the procedure is in `functions` |
//! | a call of a function neither built in (`functions::BUILTINS`) nor in the side-effect table, or any qualified call `db.f()` | Unknown | `unresolved_function`: a stored function may write whatever it declares |
//! | text the lexer refuses or the parser cannot read | Unknown | `error` says why |
//! | empty text (or only comments) | Read | no statements |
//!
//! `calls` lists every function called, `tables` every table named (`db.t`
//! when qualified; CTE names left out). Several statements in one text
//! (`SELECT 1; DELETE FROM t`) are each listed, and the strictest wins. A
//! statement nested where MySQL has none (a `WITH` body the parser accepts)
//! counts with its own class (`data_modifying_cte`).
//!
//! # Where the server and the parser could disagree
//!
//! The text is refused (`Unknown`, with `error`) when it holds:
//!
//! - an executable comment, `/*! … */`, `/*!50700 … */`, `/*M! … */`,
//!   `/*M!100100 … */`: the server runs its body, the parser drops it;
//! - a nested comment (`/* /* */ … */`: the server ends it at the first
//!   `*/`), an unterminated comment, string or quoted identifier, a NUL;
//! - a comment the parser still reads after the lexer blanked every real
//!   one (the server reads `--x`, without a space, as two minus signs);
//! - strings, quoted identifiers or `;` that the two lexers split or decode
//!   differently (backslash escapes and `''` in '…' and "…", `` `` `` in
//!   backticks, `X'…'`, `B'…'`, `N'…'`), or a literal the server does not
//!   have (dollar quoting);
//! - `||`, which the server reads as OR and the parser as concatenation;
//! - a non-ASCII space outside strings (the server reads it as part of a
//!   name, the parser as a space);
//! - an optimizer hint with `SET_VAR` (`/*+ SET_VAR(sql_mode=…) */`);
//! - a compound statement (`BEGIN … END` of a routine, `BEGIN NOT ATOMIC`)
//!   with `;` inside, which the server reads as one statement;
//! - a statement the parser reads as several, or a kind of statement the
//!   rules do not know.
//!
//! A few MySQL spellings the parser lacks are rewritten before it runs, to
//! ones with the same meaning (`SET @a := …`, `LOCK IN SHARE MODE`,
//! `UPDATE a, b SET`, `INTO OUTFILE/DUMPFILE 'f'`, `… INTO @a`); other
//! MySQL syntax it lacks (`TABLE t`, `CREATE TABLE` options it does not
//! know, `INTO OUTFILE` with format options) comes out `Unknown`.
//!
//! Text that is not UTF-8 cannot reach [`MysqlClassifier::classify`];
//! [`MysqlClassifier::classify_bytes`] makes it `Unknown`.
//!
//! # What it cannot see
//!
//! Classification is syntactic and assumes the session settings gatehouse
//! pins (utf8mb4, `ANSI_QUOTES`, `NO_BACKSLASH_ESCAPES` and
//! `PIPES_AS_CONCAT` off), which is why changing them is `lexical_setting`.
//! Triggers, views, events, generated columns and column defaults run code
//! the statement does not show; stored routines are opaque (hence `CALL`
//! and unresolved calls are `Unknown`), and a routine body with `;` inside
//! (`CREATE PROCEDURE … BEGIN …; END`) is split where the server would not
//! and comes out `Unknown`. `SLEEP` and `BENCHMARK` are reads that only
//! spend time. What `EXECUTE` runs was prepared earlier in the session.

mod functions;
mod lex;
mod rules;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::cache::ClockCache;
use super::{Classification, StatementClass};

/// Classifies MySQL/MariaDB statements; one per worker thread.
pub struct MysqlClassifier {
    functions: functions::FunctionTable,
    cache: RefCell<ClockCache<Arc<Classification>>>,
}

impl fmt::Debug for MysqlClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlClassifier")
            .field("cached", &self.cache.borrow().len())
            .finish_non_exhaustive()
    }
}

impl MysqlClassifier {
    /// The built-in tables plus `extra_side_effect_functions` (names,
    /// optionally `db.`-qualified), each taken as [`StatementClass::Admin`].
    pub fn new(extra_side_effect_functions: &[String]) -> Self {
        MysqlClassifier {
            functions: functions::FunctionTable::new(extra_side_effect_functions),
            cache: RefCell::new(ClockCache::new(super::Classifier::DEFAULT_CACHE_ENTRIES)),
        }
    }

    /// Classify `sql`, from the cache when this exact text was seen.
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        let cacheable = sql.len() <= super::Classifier::MAX_CACHED_SQL_LEN;
        if cacheable {
            if let Some(hit) = self.cache.borrow_mut().get(sql) {
                return hit;
            }
        }
        let result = Arc::new(self.classify_uncached(sql));
        if cacheable {
            self.cache.borrow_mut().insert(sql, Arc::clone(&result));
        }
        result
    }

    /// Classify raw bytes as received: text that is not UTF-8 is `Unknown`
    /// (the server would read it in some character set the classifier does
    /// not).
    pub fn classify_bytes(&self, sql: &[u8]) -> Arc<Classification> {
        match std::str::from_utf8(sql) {
            Ok(s) => self.classify(s),
            Err(e) => Arc::new(unknown(format!("not UTF-8: {e}"))),
        }
    }

    /// Classify `sql` without looking at or filling the cache.
    pub fn classify_uncached(&self, sql: &str) -> Classification {
        match self.statements(sql) {
            Ok(statements) => Classification {
                class: statements.iter().map(|s| s.class).max().unwrap_or(StatementClass::Read),
                statements,
                error: None,
            },
            Err(e) => unknown(e),
        }
    }

    fn statements(&self, sql: &str) -> Result<Vec<super::StatementInfo>, String> {
        let lexed = lex::lex(sql)?;
        check_marks(&lexed)?;
        let ctx = rules::Ctx {
            functions: &self.functions,
            depth: 0,
        };
        let statements = lexed.statements();
        // A compound statement (a routine's BEGIN … END, MariaDB's BEGIN NOT
        // ATOMIC) is one statement to the server, which reads the `;` inside
        // it; split here, its parts would be classified out of context.
        let compound = statements.iter().any(|s| {
            s.iter().skip(1).any(|t| t.is_word("BEGIN"))
                || (s[0].is_word("BEGIN") && s.get(1).is_some_and(|t| t.is_word("NOT")))
        });
        if compound && statements.len() > 1 {
            return Err("a compound statement (BEGIN … END) with `;` inside is not classified".into());
        }
        statements
            .into_iter()
            .map(|tokens| rules::statement(&lexed.clean, tokens, &ctx))
            .collect()
    }
}

fn unknown(error: String) -> Classification {
    Classification {
        class: StatementClass::Unknown,
        statements: Vec::new(),
        error: Some(error),
    }
}

/// Both lexers must split the text into the same strings, quoted
/// identifiers and statements.
fn check_marks(lexed: &lex::Lexed) -> Result<(), String> {
    let ours = lex::marks(&lexed.tokens);
    let theirs = lex::parser_marks(&lexed.clean)?;
    if ours != theirs {
        return Err("the parser splits strings, names or statements differently from the server".into());
    }
    Ok(())
}

/// The text's fingerprint (see the module docs): equal for texts that
/// differ only in literals, case of unquoted words, comments and spacing.
pub fn fingerprint(sql: &str) -> String {
    let classifier = FINGERPRINT_CLASSIFIER.with(|c| c.classify_uncached(sql).error.is_none());
    let lexed = match lex::lex(sql) {
        Ok(l) if classifier => l,
        _ => return super::raw_fingerprint(sql),
    };
    let mut normalized = String::with_capacity(sql.len());
    for t in &lexed.tokens {
        if !normalized.is_empty() {
            normalized.push(' ');
        }
        match t.kind {
            lex::Kind::Str | lex::Kind::Hex | lex::Kind::Bit | lex::Kind::Number => normalized.push('?'),
            lex::Kind::Word => normalized.push_str(&t.value.to_ascii_lowercase()),
            lex::Kind::QuotedIdent => {
                normalized.push('`');
                normalized.push_str(&t.value.replace('`', "``"));
                normalized.push('`');
            }
            lex::Kind::Semi | lex::Kind::Punct => normalized.push_str(&t.value),
        }
    }
    let digest = Sha256::digest(normalized.as_bytes());
    format!("mysql:{}", hex::encode(&digest[..8]))
}

thread_local! {
    /// Fingerprints are asked for rarely (a held statement's review); one
    /// classifier per thread spares rebuilding the tables each time.
    static FINGERPRINT_CLASSIFIER: MysqlClassifier = MysqlClassifier::new(&[]);
}
