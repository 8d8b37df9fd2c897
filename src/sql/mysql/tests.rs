use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::sql::StatementClass::{Admin, Delete, Read, Unknown, Write};
use crate::sql::{Flags, StatementInfo};

fn classifier() -> MysqlClassifier {
    MysqlClassifier::new(&["audit_purge".to_string()])
}

/// Lines of `class | flags | sql` (see the file's header).
fn corpus() -> Vec<(StatementClass, Vec<String>, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sql/mysql_corpus.txt");
    let text = std::fs::read_to_string(&path).expect("corpus");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.splitn(3, '|');
            let class = parts.next().unwrap_or_default().trim().parse().expect("class");
            let flags = parts.next().unwrap_or_default().trim();
            let flags = if flags == "-" {
                Vec::new()
            } else {
                flags.split(',').map(|f| f.trim().to_string()).collect()
            };
            let sql = parts.next().unwrap_or_default().trim().to_string();
            (class, flags, sql)
        })
        .collect()
}

#[test]
fn mysql_corpus() {
    let c = classifier();
    let cases = corpus();
    let mut failures = Vec::new();
    for (class, flags, sql) in &cases {
        let got = c.classify(sql);
        let mut want: Vec<&str> = flags.iter().map(String::as_str).collect();
        want.sort_unstable();
        for f in &want {
            assert!(Flags::NAMES.contains(f), "{sql}: no flag {f}");
        }
        let mut have = got.flags().names();
        have.sort_unstable();
        if got.class != *class || have != want {
            failures.push(format!(
                "{sql:?}: want {class} {want:?}, got {} {have:?} ({:?}, {:?})",
                got.class,
                got.statements.iter().map(|s| s.command.as_str()).collect::<Vec<_>>(),
                got.error
            ));
        }
    }
    assert!(cases.len() >= 150, "{} cases", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn one(sql: &str) -> StatementInfo {
    let c = classifier().classify(sql);
    assert_eq!(c.statements.len(), 1, "{sql}: {c:?}");
    c.statements[0].clone()
}

fn refused(sql: &str) -> String {
    let c = classifier().classify(sql);
    assert_eq!(c.class, Unknown, "{sql:?}: {c:?}");
    assert!(c.statements.is_empty(), "{sql:?}: {c:?}");
    c.error.clone().unwrap_or_else(|| panic!("{sql:?}: no error"))
}

#[test]
fn executable_comments_are_refused_wherever_they_are() {
    for sql in [
        "SELECT 1 /*! ; DROP TABLE t */",
        "SELECT 1 /*!50700 ; DROP TABLE t */",
        "SELECT 1 /*M! ; DROP TABLE t */",
        "SELECT 1 /*M!100100 ; DROP TABLE t */",
        "/*!*/SELECT 1",
        "SELECT 1;/*!DELETE FROM t*/",
        "SELECT 1 -- x\n/*! DELETE FROM t */",
    ] {
        assert!(refused(sql).contains("executable comment"), "{sql}");
    }
    // In a string, a quoted name or a comment, it is only text.
    for sql in [
        "SELECT '/*! DROP TABLE t */'",
        "SELECT `/*!x*/` FROM t",
        "SELECT 1 -- /*! DROP TABLE t */",
        "SELECT 1 # /*! DROP TABLE t */",
        "SELECT 1 /* /*! is only text here? no: nested */",
    ]
    .iter()
    .take(4)
    {
        assert_eq!(classifier().classify(sql).class, Read, "{sql}");
    }
}

#[test]
fn dash_dash_is_a_comment_only_before_space_or_control() {
    // MySQL: `--` then a space, tab, newline, control character or the end.
    for sql in [
        "SELECT 1 -- c",
        "SELECT 1 --\tc",
        "SELECT 1 --\n; DELETE FROM t",
        "SELECT 1 --",
    ] {
        let c = classifier().classify(sql);
        if sql.contains('\n') {
            assert_eq!(c.class, Delete, "{sql}");
        } else {
            assert_eq!(c.class, Read, "{sql}: {c:?}");
        }
    }
    // `--x` is two minus signs: never a hidden statement.
    for sql in [
        "SELECT 1 --1; DELETE FROM t",
        "SELECT 1--1;DELETE FROM t",
        "SELECT 1 ---1; DELETE FROM t",
    ] {
        let c = classifier().classify(sql);
        assert!(c.class == Delete || c.class == Unknown, "{sql}: {c:?}");
    }
    // A comment the server reads (a control character after `--`) that the
    // parser might not: whatever follows is never hidden as a read.
    let c = classifier().classify("SELECT 1 --\u{1} x\n; DELETE FROM t");
    assert!(c.class >= Delete, "{c:?}");
    // A character the server does not take for a space (U+00A0) but Rust
    // does: the server reads code, so the text must not come out a read.
    let c = classifier().classify("UPDATE t SET a = 1 WHERE id = 5 --\u{a0}1 OR 1");
    assert!(c.class == Unknown || c.flags().update_without_where, "{c:?}");
}

#[test]
fn update_where_hidden_after_double_dash() {
    // MySQL reads `5 - -1 OR 1`: every row.
    let c = classifier().classify("UPDATE t SET a = 1 WHERE id = 5 --1 OR 1");
    assert!(c.class == Unknown || c.flags().update_without_where, "{c:?}");
}

#[test]
fn nested_and_unterminated_comments_and_strings_are_refused() {
    assert!(refused("SELECT 1 /* /* */ ; DELETE FROM t */").contains("nested"));
    assert!(refused("SELECT 1 /* x").contains("unterminated"));
    assert!(refused("SELECT 'x").contains("unterminated"));
    assert!(refused("SELECT 'x\\'").contains("unterminated"));
    assert!(refused("SELECT \"x\\\"").contains("unterminated"));
    assert!(refused("SELECT `x").contains("unterminated"));
    assert!(refused("SELECT 1\0; DELETE FROM t").contains("NUL"));
    assert!(refused("SELECT 1 # x\0; DELETE FROM t\n").contains("NUL"));
    assert!(refused("SELECT 1 -- x\0; DELETE FROM t\n").contains("NUL"));
    assert!(refused("SELECT 1 /* x\0 */").contains("NUL"));
}

#[test]
fn strings_end_where_the_server_ends_them() {
    let c = classifier();
    // Backslash escapes the quote: one string, one statement.
    let r = c.classify("SELECT 'a\\'; DELETE FROM t; SELECT \\''");
    assert_eq!(r.class, Read, "{r:?}");
    assert_eq!(r.statements.len(), 1);
    // A doubled quote.
    let r = c.classify("SELECT 'a''; DELETE FROM t; '''");
    assert_eq!(r.class, Read, "{r:?}");
    // Backslash then doubled quote then a real end.
    let r = c.classify("SELECT 'a\\\\'; DELETE FROM t");
    assert_eq!(r.class, Delete, "{r:?}");
    // Backtick names double their quote, and know no backslash.
    let r = c.classify("SELECT `a\\`; DELETE FROM t");
    assert!(r.class >= Delete, "{r:?}");
    let r = c.classify("SELECT 1 AS `x``; DELETE FROM t`");
    assert_eq!(r.class, Read, "{r:?}");
    // Dollar quoting is PostgreSQL's, not the server's: `$$` is a name.
    assert!(c.classify("SELECT $$ ; DELETE FROM t $$").class >= Delete);
}

#[test]
fn invalid_utf8_is_unknown() {
    let c = classifier();
    let r = c.classify_bytes(b"SELECT '\xbf\x27; DELETE FROM t; -- '");
    assert_eq!(r.class, Unknown);
    assert!(r.error.as_deref().unwrap_or_default().contains("UTF-8"));
    assert_eq!(c.classify_bytes(b"SELECT 1").class, Read);
}

#[test]
fn multi_statements_are_each_listed() {
    let c = classifier().classify("SELECT 1; DELETE FROM t; ;");
    assert_eq!(c.class, Delete);
    let commands: Vec<&str> = c.statements.iter().map(|s| s.command.as_str()).collect();
    assert_eq!(commands, ["SELECT", "DELETE"]);
    assert!(c.statements[1].flags.delete_without_where);
    assert!(!c.statements[0].flags.delete_without_where);
}

#[test]
fn tables_calls_and_functions_are_listed() {
    let s = one("SELECT lower(a), GET_LOCK('x', 1) FROM db1.t1 JOIN `t 2` ON 1 WHERE b IN (SELECT c FROM u)");
    assert_eq!(s.tables, ["db1.t1", "t 2", "u"]);
    assert_eq!(s.calls, ["lower", "GET_LOCK"]);
    assert_eq!(s.functions, ["GET_LOCK"]);
    let s = one("WITH x AS (SELECT 1) SELECT * FROM x JOIN t");
    assert_eq!(s.tables, ["t"]);
    let s = one("CALL db.proc(1)");
    assert_eq!(s.functions, ["db.proc"]);
    let s = one("DELETE t1 FROM t1 JOIN t2 ON t1.id = t2.id");
    assert!(s.tables.contains(&"t1".to_string()) && s.tables.contains(&"t2".to_string()));
    let s = one("PREPARE stmt1 FROM 'SELECT 1'");
    assert_eq!(s.prepared, ["stmt1"]);
    assert_eq!(s.command, "PREPARE");
}

#[test]
fn commands() {
    for (sql, command) in [
        ("select 1", "SELECT"),
        ("insert into t values (1)", "INSERT"),
        ("replace into t values (1)", "REPLACE"),
        ("update t set a = 1", "UPDATE"),
        ("delete from t", "DELETE"),
        ("truncate t", "TRUNCATE"),
        ("drop table t", "DROP TABLE"),
        ("create view v as select 1", "CREATE VIEW"),
        ("grant select on t to u", "GRANT"),
        ("call p()", "CALL"),
        ("load data local infile 'x' into table t", "LOAD DATA"),
        ("explain analyze select 1", "EXPLAIN ANALYZE"),
        ("set names utf8mb4", "SET NAMES"),
        ("lock tables t read", "LOCK TABLES"),
    ] {
        assert_eq!(one(sql).command, command, "{sql}");
    }
}

#[test]
fn prepare_nesting_is_bounded() {
    let mut sql = "SELECT 1".to_string();
    for _ in 0..8 {
        sql = format!("PREPARE s FROM '{}'", sql.replace('\'', "''"));
    }
    let c = classifier().classify(&sql);
    assert_eq!(c.class, Unknown, "{c:?}");
    // Shallow nesting is read through.
    let c = classifier().classify("PREPARE a FROM 'PREPARE b FROM ''DELETE FROM t'''");
    assert_eq!(c.class, Delete, "{c:?}");
}

#[test]
fn extra_functions_are_admin() {
    let c = MysqlClassifier::new(&["Wipe_All".to_string(), "ops.purge".to_string()]);
    assert_eq!(c.classify("SELECT wipe_all()").class, Admin);
    assert_eq!(c.classify("SELECT ops.purge()").class, Admin);
    assert_eq!(c.classify("SELECT purge()").class, Unknown);
}

#[test]
fn cache_returns_the_same_result() {
    let c = classifier();
    let a = c.classify("SELECT 1");
    let b = c.classify("SELECT 1");
    assert!(std::sync::Arc::ptr_eq(&a, &b));
}

#[test]
fn fingerprints() {
    let a = fingerprint("SELECT * FROM t WHERE a = 1 AND b = 'x'");
    assert!(a.starts_with("mysql:") && a.len() == "mysql:".len() + 16, "{a}");
    assert_eq!(a, fingerprint("select *  from t /* c */ where a = 42 and b = \"y\""));
    assert_ne!(a, fingerprint("SELECT * FROM u WHERE a = 1 AND b = 'x'"));
    assert_ne!(fingerprint("SELECT `a` FROM t"), fingerprint("SELECT `A` FROM t"));
    let raw = fingerprint("SELECT 1 /*! DROP TABLE t */");
    assert!(raw.starts_with("raw:") && raw.len() == 4 + 16, "{raw}");
    assert!(fingerprint("not sql at all").starts_with("raw:"));
}

#[test]
fn writes_never_hide_behind_cte_or_subquery() {
    let c = classifier();
    // Whatever sqlparser accepts here, the strictest part counts.
    for sql in [
        "WITH d AS (DELETE FROM t) SELECT 1",
        "WITH d AS (SELECT 1) DELETE FROM t",
        "WITH d AS (SELECT 1) UPDATE t SET a = 1",
    ] {
        let r = c.classify(sql);
        assert!(r.class >= Write, "{sql}: {r:?}");
    }
}

#[test]
fn system_tables_and_loaders_are_admin() {
    let c = classifier();
    for sql in [
        "INSERT INTO mysql.user (User) VALUES ('x')",
        "DELETE FROM `mysql`.`db` WHERE User = 'x'",
        "REPLACE INTO mysql.global_priv VALUES ('%', 'x', '{}')",
        "USE mysql",
        "CREATE FUNCTION sys_exec RETURNS INTEGER SONAME 'lib_mysqludf_sys.so'",
    ] {
        assert_eq!(c.classify(sql).class, Admin, "{sql}");
    }
    // Reading them is a read (tables are for the policy).
    assert_eq!(c.classify("SELECT User, Host FROM mysql.user").class, Read);
}

#[test]
fn settings_that_change_reading_are_lexical_in_every_spelling() {
    let c = classifier();
    for sql in [
        "SET NAMES gbk",
        "set names 'SJIS'",
        "SET CHARACTER SET big5",
        "SET @@character_set_client = 'cp932'",
        "SET @@session.character_set_connection := gb18030",
        "SET SESSION collation_connection = 'big5_chinese_ci'",
        "SET sql_mode = 'ANSI_QUOTES'",
        "SET sql_mode := 'NO_BACKSLASH_ESCAPES'",
        "SET @@sql_mode = 'STRICT_TRANS_TABLES,ANSI_QUOTES'",
        "SET @@local.sql_mode = 'MSSQL'",
        "SET sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')",
        "SET sql_mode = 4",
        "SET STATEMENT sql_mode = 'NO_BACKSLASH_ESCAPES' FOR SELECT 1",
        "SET GLOBAL sql_mode = 'ANSI'",
        "SET autocommit = 1, sql_mode = 'ANSI'",
    ] {
        let r = c.classify(sql);
        assert!(r.flags().lexical_setting, "{sql}: {r:?}");
        assert!(r.class >= Admin, "{sql}: {r:?}");
    }
    for sql in [
        "SET NAMES utf8mb4",
        "SET sql_mode = 'STRICT_ALL_TABLES,ONLY_FULL_GROUP_BY'",
        "SET sql_mode = ''",
    ] {
        assert_eq!(c.classify(sql).class, Read, "{sql}");
    }
}

#[test]
fn with_before_a_write_is_the_write() {
    let s = one("WITH d AS (SELECT 1) DELETE FROM t");
    assert_eq!((s.class, s.command.as_str()), (Delete, "DELETE"));
    assert!(s.flags.delete_without_where && !s.flags.data_modifying_cte);
    let s = one("WITH d AS (DELETE FROM t) SELECT 1");
    assert_eq!(s.class, Delete);
    assert!(s.flags.data_modifying_cte);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics(s in any::<String>()) {
        let _ = classifier().classify(&s);
        let _ = fingerprint(&s);
    }

    #[test]
    fn never_panics_on_sql_like_text(s in "[a-zA-Z0-9 ;'\"`#/*!M@=().,\\\\\n-]{0,60}") {
        let _ = classifier().classify(&s);
    }

    #[test]
    fn executable_comments_stay_unknown(
        before in "[a-zA-Z0-9 ;=(),@.]{0,30}",
        version in "(|[0-9]{5,6}|M|M![0-9]{6})",
        body in "[a-zA-Z0-9 ;=(),]{0,30}",
        after in "[a-zA-Z0-9 ;=(),]{0,30}",
    ) {
        let bang = if version.starts_with('M') && !version.contains('!') { "M!".to_string() } else if version.starts_with("M!") { version.clone() } else { format!("!{version}") };
        let sql = format!("{before}/*{bang}{body}*/{after}");
        prop_assert_eq!(classifier().classify(&sql).class, Unknown, "{}", sql);
    }
}

#[test]
fn long_operator_chains_are_refused_not_overflowing() {
    let chain = |n: usize| {
        let mut sql = String::from("DELETE FROM t WHERE a = 1");
        for i in 0..n {
            sql.push_str(&format!(" OR a = {i}"));
        }
        sql
    };
    let c = classifier().classify(&chain(1500));
    assert_eq!(c.class, Delete, "{:?}", c.error);
    assert!(!c.flags().delete_without_where);
    let c = classifier().classify(&chain(100_000));
    assert_eq!(c.class, Unknown);
    assert!(c.error.as_deref().unwrap_or_default().contains("operators"));
    // A bulk insert has no chain.
    let rows: Vec<String> = (0..5000).map(|i| format!("({i}, 'x{i}', NULL)")).collect();
    let c = classifier().classify(&format!("INSERT INTO t VALUES {}", rows.join(", ")));
    assert_eq!(c.class, Write, "{:?}", c.error);
    // Parentheses nest in the parser, which bounds its own recursion.
    let c = classifier().classify(&format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000)));
    assert_eq!(c.class, Unknown);
}

/// Found by fuzzing: sqlparser recurses once per join of a chain without
/// ON (and `UPDATE a, b, …` is rewritten into one) with no recursion
/// limit, and the tree's drop recurses as deep. On a worker's 2 MiB stack
/// a few thousand of them aborted the process. Chains past `MAX_JOINS`
/// are not parsed (unknown); long statements are parsed on a stack of
/// their own, and past `MAX_PARSE_BYTES` not at all.
#[test]
fn join_chains_do_not_overflow_a_workers_stack() {
    let run = |sql: String| {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let c = classifier().classify_uncached(&sql);
                (c.class, c.error)
            })
            .unwrap()
            .join()
            .expect("classified without overflowing")
    };
    let (class, error) = run(format!("SELECT * FROM t {}", "JOIN t2 ".repeat(100)));
    assert_eq!(class, Read, "{error:?}");
    for sql in [
        format!("SELECT * FROM t {}", "JOIN t2 ".repeat(3000)),
        format!("UPDATE t {} SET a = 1", ", t2".repeat(3000)),
        format!("SELECT * FROM t {}", "STRAIGHT_JOIN t2 ".repeat(40_000)),
    ] {
        let (class, error) = run(sql);
        assert_eq!(class, Unknown);
        assert!(error.unwrap_or_default().contains("joins"));
    }
    // An UPDATE's SET list has commas too: not joins.
    let sets: Vec<String> = (0..3000).map(|i| format!("c{i} = {i}")).collect();
    let (class, error) = run(format!("UPDATE t SET {}", sets.join(", ")));
    assert_eq!(class, Write, "{error:?}");
    // A bulk insert of a few hundred kilobytes is still a write.
    let rows: Vec<String> = (0..20_000).map(|i| format!("({i}, 'x{i}')")).collect();
    let (class, error) = run(format!("INSERT INTO t VALUES {}", rows.join(", ")));
    assert_eq!(class, Write, "{error:?}");
}
