//! One statement → class, command and flags: first by its leading keywords
//! for the statements whose class the keywords settle (administration,
//! most DDL, and MySQL statements `sqlparser` has no grammar for), then by
//! `sqlparser`'s tree, walked completely for calls, tables, locks and
//! nested statements.

use std::ops::ControlFlow;

use sqlparser::ast::{
    self, Expr, ObjectName, ObjectType, OnInsert, Query, SetExpr, Statement, TableFactor, TransactionAccessMode,
    TransactionMode, Value, Visit, Visitor,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::functions::{charset_ok, sql_mode_ok, FunctionTable, Verdict, CHARSET_VARIABLES, ORDINARY_VARIABLES};
use super::lex::{Kind, Token};
use crate::sql::{StatementClass, StatementInfo};

use StatementClass::{Admin, Ddl, Delete, Read, Unknown, Write};

/// How deep `PREPARE … FROM '…'` and `SET STATEMENT … FOR` may nest before
/// the text is taken as unknown.
pub(super) const MAX_DEPTH: usize = 4;

/// Operators one statement may hold. The parser builds a chain of infix
/// operators (`a = 1 OR a = 2 OR …`) as a tree as deep as it is long, and
/// walking or even dropping a tree tens of thousands deep overflows a
/// thread's stack; a bulk `INSERT … VALUES` has no such chain and is not
/// limited.
pub(super) const MAX_OPERATORS: usize = 4000;

fn is_operator(t: &Token) -> bool {
    const WORDS: &[&str] = &[
        "and", "or", "xor", "not", "is", "like", "in", "between", "div", "mod", "regexp", "rlike", "collate",
    ];
    match t.kind {
        Kind::Punct => matches!(
            t.value.as_str(),
            "=" | "<" | ">" | "!" | "+" | "-" | "*" | "/" | "%" | "&" | "|" | "^" | "~" | ":"
        ),
        Kind::Word => WORDS.iter().any(|w| t.value.eq_ignore_ascii_case(w)),
        _ => false,
    }
}

/// Everything a statement's rules need.
pub(super) struct Ctx<'a> {
    pub functions: &'a FunctionTable,
    pub depth: usize,
}

/// Classify one statement: `text` is the whole clean text (see `lex`),
/// `tokens` the statement's tokens (not empty). `Err` is a parse error,
/// which makes the whole text unknown.
/// Joins in one statement, at most, for the parser.
const MAX_JOINS: usize = 128;

/// The joins the parser will see: JOIN keywords, and the commas of an
/// UPDATE's table list (rewritten into joins, see [`parser_text`]).
fn join_chain(tokens: &[Token]) -> usize {
    let is_update = tokens.first().is_some_and(|t| t.is_word("UPDATE"));
    let (mut depth, mut before_set, mut n) = (0i32, true, 0usize);
    for t in tokens {
        match t.value.as_str() {
            "(" if t.kind == Kind::Punct => depth += 1,
            ")" if t.kind == Kind::Punct => depth -= 1,
            "," if t.kind == Kind::Punct && is_update && before_set && depth == 0 => n += 1,
            _ if t.is_word("SET") => before_set = false,
            _ if t.is_word("JOIN") || t.is_word("STRAIGHT_JOIN") => n += 1,
            _ => {}
        }
    }
    n
}

pub(super) fn statement(text: &str, tokens: &[Token], ctx: &Ctx<'_>) -> Result<StatementInfo, String> {
    let operators = tokens.iter().filter(|t| is_operator(t)).count();
    if operators > MAX_OPERATORS {
        return Err(format!(
            "{operators} operators in one statement: more than {MAX_OPERATORS} are not classified"
        ));
    }
    if let Some(info) = by_keywords(text, tokens, ctx)? {
        return Ok(info);
    }
    // sqlparser recurses once per join of a chain (and `UPDATE a, b, …`
    // becomes one), with no limit of its own; MySQL joins at most 61.
    let joins = join_chain(tokens);
    if joins > MAX_JOINS {
        return Err(format!(
            "{joins} joins in one statement: more than {MAX_JOINS} are not classified (MySQL joins at most 61 tables)"
        ));
    }
    let parser_text = parser_text(text, tokens)?;
    // Parsed, walked and dropped (the tree's drop recurses too) where the
    // statement's nesting cannot overflow the stack.
    let (mut info, table_ddl) = crate::sql::deep_stack(parser_text.len(), || {
        let parsed = Parser::parse_sql(&MySqlDialect {}, &parser_text).map_err(|e| e.to_string())?;
        let [stmt] = parsed.as_slice() else {
            return Err(format!(
                "the parser read {} statements where the server reads one",
                parsed.len()
            ));
        };
        let ddl = matches!(stmt, Statement::CreateTable(_) | Statement::AlterTable(_));
        Ok((tree(stmt, ctx), ddl))
    })??;
    // Tables whose data lives in a server directory or on another server.
    if table_ddl {
        if tokens.iter().any(|t| t.is_word("DIRECTORY")) {
            raise(&mut info, Admin);
            info.flags.file_access = true;
        }
        if tokens
            .iter()
            .any(|t| t.is_word("CONNECTION") || t.is_word("FEDERATED") || t.is_word("CONNECT"))
        {
            raise(&mut info, Admin);
        }
    }
    // Clauses the tree does not keep.
    if find_seq(tokens, &["INTO", "OUTFILE"]).is_some() || find_seq(tokens, &["INTO", "DUMPFILE"]).is_some() {
        raise(&mut info, Admin);
        info.flags.file_access = true;
    }
    if find_seq(tokens, &["LOCK", "IN", "SHARE", "MODE"]).is_some() {
        raise(&mut info, Write);
        info.flags.row_locks = true;
    }
    // Changing the server's own tables (`mysql.user`, then FLUSH
    // PRIVILEGES) is administration, like PostgreSQL's catalogs.
    if info.class >= Write && info.class < Admin && info.tables.iter().any(|t| is_system_table(t)) {
        raise(&mut info, Admin);
        info.flags.guarded_setting = true;
    }
    Ok(info)
}

/// Schemas whose tables are the server's own configuration.
const SYSTEM_SCHEMAS: &[&str] = &["mysql", "performance_schema", "sys", "information_schema"];

fn is_system_table(name: &str) -> bool {
    name.split_once('.')
        .is_some_and(|(schema, _)| SYSTEM_SCHEMAS.iter().any(|s| s.eq_ignore_ascii_case(schema)))
}

/// The statement's text as handed to the parser: MySQL spellings it lacks
/// rewritten to ones with the same meaning (`SET @a := 1` → `SET @a = 1`,
/// `LOCK IN SHARE MODE` → `FOR SHARE`, `UPDATE a, b SET` → `UPDATE a JOIN b
/// SET`), `INTO OUTFILE 'f'` and `INTO DUMPFILE 'f'` dropped (the tokens
/// flag their file access), `SELECT … INTO @a, @b` dropped (it only sets
/// user variables), and `||` refused: the server reads OR, the parser
/// concatenation.
fn parser_text(text: &str, tokens: &[Token]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut at = tokens.first().map_or(0, |t| t.start);
    let replace = |out: &mut String, from: usize, to: usize, with: &str, at: &mut usize| {
        out.push_str(&text[*at..from]);
        out.push_str(with);
        *at = to;
    };
    let is_set = tokens.first().is_some_and(|t| t.is_word("SET"));
    let is_update = tokens.first().is_some_and(|t| t.is_word("UPDATE"));
    let is_select = tokens
        .first()
        .is_some_and(|t| t.is_word("SELECT") || t.is_word("WITH") || t.value == "(");
    let mut depth = 0i32;
    let mut before_set = true;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let next = tokens.get(i + 1);
        let adjacent = |v: &str| next.is_some_and(|n| n.kind == Kind::Punct && n.value == v && n.start == t.end);
        match t.value.as_str() {
            "(" if t.kind == Kind::Punct => depth += 1,
            ")" if t.kind == Kind::Punct => depth -= 1,
            "|" if t.kind == Kind::Punct && adjacent("|") => {
                return Err("`||` is OR to the server but concatenation to the parser: write OR".into())
            }
            ":" if t.kind == Kind::Punct && is_set && adjacent("=") => {
                replace(&mut out, t.start, t.end, " ", &mut at);
            }
            "," if t.kind == Kind::Punct && is_update && before_set && depth == 0 => {
                replace(&mut out, t.start, t.end, " JOIN ", &mut at);
            }
            _ if t.is_word("SET") => before_set = false,
            _ if t.is_word("LOCK")
                && tokens.get(i + 1).is_some_and(|x| x.is_word("IN"))
                && tokens.get(i + 2).is_some_and(|x| x.is_word("SHARE"))
                && tokens.get(i + 3).is_some_and(|x| x.is_word("MODE")) =>
            {
                replace(&mut out, t.start, tokens[i + 3].end, "FOR SHARE", &mut at);
                i += 3;
            }
            _ if t.is_word("INTO") && is_select && tokens.get(i + 1).is_some_and(|x| x.value == "@") => {
                // INTO @a [, @b …]
                let mut k = i + 1;
                while tokens.get(k).is_some_and(|x| x.kind == Kind::Punct && x.value == "@")
                    && tokens
                        .get(k + 1)
                        .is_some_and(|x| matches!(x.kind, Kind::Word | Kind::Str | Kind::QuotedIdent))
                {
                    k += 2;
                    if tokens.get(k).is_some_and(|x| x.value == ",") {
                        k += 1;
                    } else {
                        break;
                    }
                }
                replace(&mut out, t.start, tokens[k - 1].end, " ", &mut at);
                i = k - 1;
            }
            _ if t.is_word("INTO")
                && tokens
                    .get(i + 1)
                    .is_some_and(|x| x.is_word("OUTFILE") || x.is_word("DUMPFILE"))
                && tokens.get(i + 2).is_some_and(|x| x.kind == Kind::Str) =>
            {
                replace(&mut out, t.start, tokens[i + 2].end, " ", &mut at);
                i += 2;
            }
            _ => {}
        }
        i += 1;
    }
    let end = tokens.last().map_or(at, |t| t.end);
    out.push_str(&text[at..end]);
    Ok(out)
}

/// The statement's text from token `from` to its end.
fn rest<'t>(text: &'t str, tokens: &[Token], from: usize) -> &'t str {
    match (tokens.get(from), tokens.last()) {
        (Some(a), Some(z)) => &text[a.start..z.end],
        _ => "",
    }
}

fn info(class: StatementClass, command: &str) -> StatementInfo {
    StatementInfo {
        class,
        command: command.to_string(),
        ..StatementInfo::default()
    }
}

fn raise(info: &mut StatementInfo, class: StatementClass) {
    info.class = info.class.max(class);
}

fn word(tokens: &[Token], i: usize) -> String {
    tokens
        .get(i)
        .filter(|t| t.kind == Kind::Word)
        .map(|t| t.value.to_ascii_uppercase())
        .unwrap_or_default()
}

fn find_seq(tokens: &[Token], seq: &[&str]) -> Option<usize> {
    (0..tokens.len()).find(|&i| {
        seq.iter()
            .enumerate()
            .all(|(k, w)| tokens.get(i + k).is_some_and(|t| t.is_word(w)))
    })
}

/// Words that may stand before `(` without being a call.
const NOT_CALLS: &[&str] = &[
    "in", "and", "or", "not", "xor", "is", "like", "rlike", "regexp", "between", "exists", "any", "some", "all", "as",
    "on", "using", "values", "when", "then", "else", "case", "interval", "where", "set", "by", "select",
];

/// Calls in tokens from `from` on, for statements read by keywords: each
/// word directly before `(`, joined to a `db.` qualifier.
fn token_calls(tokens: &[Token], from: usize, ctx: &Ctx<'_>, info: &mut StatementInfo) {
    for i in from..tokens.len() {
        let t = &tokens[i];
        let opens = tokens
            .get(i + 1)
            .is_some_and(|n| n.kind == Kind::Punct && n.value == "(");
        if !opens || !matches!(t.kind, Kind::Word | Kind::QuotedIdent) {
            continue;
        }
        if t.kind == Kind::Word && NOT_CALLS.iter().any(|k| t.value.eq_ignore_ascii_case(k)) {
            continue;
        }
        let mut name = t.value.clone();
        if i >= 2 && tokens[i - 1].value == "." && matches!(tokens[i - 2].kind, Kind::Word | Kind::QuotedIdent) {
            name = format!("{}.{name}", tokens[i - 2].value);
        }
        call(&name, ctx, info);
    }
}

/// Judge one call by name and record it.
fn call(name: &str, ctx: &Ctx<'_>, info: &mut StatementInfo) {
    info.calls.push(name.to_string());
    match ctx.functions.verdict(name) {
        Verdict::Builtin => {}
        Verdict::Effect(e) => {
            raise(info, e.class);
            info.flags.side_effect_function = true;
            info.flags.file_access |= e.file_access;
            info.functions.push(name.to_string());
        }
        Verdict::Unresolved => {
            raise(info, Unknown);
            info.flags.unresolved_function = true;
        }
    }
}

/// The name after the first of `after` (an object's name in DDL).
fn name_after(tokens: &[Token], from: usize) -> Option<String> {
    let t = tokens.get(from)?;
    if !matches!(t.kind, Kind::Word | Kind::QuotedIdent) {
        return None;
    }
    let mut name = t.value.clone();
    if tokens.get(from + 1).is_some_and(|d| d.value == ".") {
        if let Some(n) = tokens
            .get(from + 2)
            .filter(|n| matches!(n.kind, Kind::Word | Kind::QuotedIdent))
        {
            name = format!("{name}.{}", n.value);
        }
    }
    Some(name)
}

/// Statements the leading keywords settle; `None` hands the statement to
/// the parser.
fn by_keywords(text: &str, tokens: &[Token], ctx: &Ctx<'_>) -> Result<Option<StatementInfo>, String> {
    let w0 = word(tokens, 0);
    let w1 = word(tokens, 1);
    let out = match w0.as_str() {
        "FLUSH" | "SHUTDOWN" | "RESTART" | "RESET" | "PURGE" | "BINLOG" | "KILL" | "XA" | "CACHE" => {
            let mut i = info(Admin, &w0);
            token_calls(tokens, 1, ctx, &mut i);
            i
        }
        "CHANGE" if matches!(w1.as_str(), "MASTER" | "REPLICATION") => info(Admin, &format!("CHANGE {w1}")),
        // START TRANSACTION holds only keywords; the parser lacks some
        // (WITH CONSISTENT SNAPSHOT).
        "START" if w1 == "TRANSACTION" => {
            let mut i = info(Read, "START TRANSACTION");
            if find_seq(tokens, &["READ", "WRITE"]).is_some() {
                raise(&mut i, Admin);
                i.flags.read_only_override = true;
            }
            i
        }
        "START" | "STOP" => info(Admin, &format!("{w0} {w1}")),
        "INSTALL" | "UNINSTALL" => info(Admin, &format!("{w0} {w1}")),
        "OPTIMIZE" | "REPAIR" | "CHECK" | "CHECKSUM" => maintenance(&w0, tokens),
        "ANALYZE" => {
            if matches!(w1.as_str(), "TABLE" | "TABLES" | "NO_WRITE_TO_BINLOG" | "LOCAL") {
                maintenance(&w0, tokens)
            } else {
                // MariaDB's `ANALYZE [FORMAT=…] stmt` runs the statement.
                let mut start = 1;
                if w1 == "FORMAT" {
                    start = 4;
                }
                let mut inner = nested(rest(text, tokens, start), ctx)?;
                inner.command = "ANALYZE".into();
                inner.flags.explain_analyze = true;
                inner
            }
        }
        "HELP" => info(Read, "HELP"),
        "USE" => {
            // Unqualified names would then reach the server's own tables,
            // which the classifier could not tell.
            let mut i = info(Read, "USE");
            if tokens
                .get(1)
                .is_some_and(|t| SYSTEM_SCHEMAS.iter().any(|s| t.value.eq_ignore_ascii_case(s)))
            {
                guarded(&mut i);
            }
            i
        }
        "HANDLER" => {
            let mut i = info(Read, "HANDLER");
            i.tables.extend(name_after(tokens, 1));
            token_calls(tokens, 2, ctx, &mut i);
            i
        }
        "SHOW" => {
            let mut i = info(Read, "SHOW");
            token_calls(tokens, 1, ctx, &mut i);
            i
        }
        "UNLOCK" => info(Read, "UNLOCK TABLES"),
        "DO" => {
            // `DO expr, …` evaluates like `SELECT expr, …`.
            let mut i = nested(&format!("SELECT {}", rest(text, tokens, 1)), ctx)?;
            i.command = "DO".into();
            i
        }
        "DEALLOCATE" => info(Read, "DEALLOCATE PREPARE"),
        "DROP" if w1 == "PREPARE" => info(Read, "DEALLOCATE PREPARE"),
        "PREPARE" => prepare(tokens, ctx)?,
        "EXECUTE" => {
            let mut i = info(Unknown, "EXECUTE");
            i.flags.execute = true;
            i
        }
        "GRANT" | "REVOKE" => {
            let mut i = info(Admin, &w0);
            i.flags.grant = true;
            i
        }
        "RENAME" if w1 == "USER" => {
            let mut i = info(Admin, "RENAME USER");
            i.flags.role_admin = true;
            i
        }
        "LOAD" => load(tokens, ctx),
        "SET" => return set_by_keywords(text, tokens, ctx),
        "CREATE" | "ALTER" | "DROP" => return ddl(&w0, text, tokens, ctx),
        _ => return Ok(None),
    };
    Ok(Some(out))
}

/// Classify text nested in a statement (bounded depth).
fn nested(text: &str, ctx: &Ctx<'_>) -> Result<StatementInfo, String> {
    if ctx.depth >= MAX_DEPTH {
        return Err("statements nested too deeply".into());
    }
    let inner = Ctx {
        functions: ctx.functions,
        depth: ctx.depth + 1,
    };
    let lexed = super::lex::lex(text)?;
    super::check_marks(&lexed)?;
    let stmts = lexed.statements();
    let [one] = stmts.as_slice() else {
        return Err(format!("expected one nested statement, found {}", stmts.len()));
    };
    statement(&lexed.clean, one, &inner)
}

fn maintenance(w0: &str, tokens: &[Token]) -> StatementInfo {
    let mut i = info(Admin, &format!("{w0} TABLE"));
    i.flags.maintenance = true;
    if let Some(p) = tokens.iter().position(|t| t.is_word("TABLE") || t.is_word("TABLES")) {
        i.tables.extend(name_after(tokens, p + 1));
    }
    i
}

/// `PREPARE name FROM 'text'` is the class of the text; from a variable
/// the text cannot be seen.
fn prepare(tokens: &[Token], ctx: &Ctx<'_>) -> Result<StatementInfo, String> {
    let name = tokens.get(1).map(|t| t.value.clone()).unwrap_or_default();
    let from_ok = tokens.get(2).is_some_and(|t| t.is_word("FROM"));
    let body = tokens.get(3..).unwrap_or_default();
    let mut out = if from_ok && !body.is_empty() && body.iter().all(|t| t.kind == Kind::Str) {
        // Adjacent literals are one string to the server.
        let text: String = body.iter().map(|t| t.value.as_str()).collect();
        nested(&text, ctx)?
    } else {
        info(Unknown, "PREPARE")
    };
    out.command = "PREPARE".into();
    out.prepared.push(name);
    Ok(out)
}

/// `LOAD DATA|XML [LOCAL] INFILE 'f' … INTO TABLE t … [SET col = expr]`.
fn load(tokens: &[Token], ctx: &Ctx<'_>) -> StatementInfo {
    let local = tokens.iter().take(6).any(|t| t.is_word("LOCAL"));
    // A server file is read: administration, as for PostgreSQL's COPY FROM
    // a server file.
    let mut i = info(if local { Write } else { Admin }, "LOAD DATA");
    i.flags.copy_from = true;
    i.flags.file_access = !local;
    if let Some(p) = tokens.iter().position(|t| t.is_word("TABLE")) {
        i.tables.extend(name_after(tokens, p + 1));
    }
    if let Some(p) = tokens.iter().rposition(|t| t.is_word("SET")) {
        token_calls(tokens, p + 1, ctx, &mut i);
    }
    if !tokens.iter().any(|t| t.is_word("INFILE")) {
        raise(&mut i, Unknown);
    }
    i
}

/// CREATE/ALTER/DROP by the object's keyword; tables go to the parser
/// (`CREATE TABLE … SELECT` runs its query now).
fn ddl(w0: &str, text: &str, tokens: &[Token], ctx: &Ctx<'_>) -> Result<Option<StatementInfo>, String> {
    const OBJECTS: &[&str] = &[
        "TABLE",
        "VIEW",
        "INDEX",
        "TRIGGER",
        "EVENT",
        "PROCEDURE",
        "FUNCTION",
        "SEQUENCE",
        "DATABASE",
        "SCHEMA",
        "USER",
        "ROLE",
        "SERVER",
        "TABLESPACE",
        "LOGFILE",
        "RESOURCE",
        "PACKAGE",
        "SYNONYM",
        "AGGREGATE",
        "SPATIAL",
        "FULLTEXT",
        "UNIQUE",
        "PREPARE",
    ];
    let found = tokens
        .iter()
        .enumerate()
        .skip(1)
        .take(14)
        .find_map(|(i, t)| OBJECTS.iter().find(|o| t.is_word(o)).map(|o| (i, *o)));
    let Some((pos, object)) = found else {
        return Ok(None);
    };
    let object = match object {
        "SPATIAL" | "FULLTEXT" | "UNIQUE" => "INDEX",
        // CREATE AGGREGATE FUNCTION
        "AGGREGATE" => "FUNCTION",
        o => o,
    };
    if object == "TABLE" {
        return Ok(None);
    }
    let command = format!("{w0} {object}");
    let class = match object {
        "DATABASE" | "SCHEMA" | "USER" | "ROLE" | "SERVER" | "TABLESPACE" | "LOGFILE" | "RESOURCE" => Admin,
        // CREATE FUNCTION … SONAME loads a shared library, like a plugin.
        "FUNCTION" if tokens.iter().any(|t| t.is_word("SONAME")) => Admin,
        _ => Ddl,
    };
    let mut i = info(class, &command);
    i.flags.drop = w0 == "DROP";
    i.flags.role_admin = matches!(object, "USER" | "ROLE");
    if !i.flags.role_admin && !matches!(object, "DATABASE" | "SCHEMA") {
        let mut p = pos + 1;
        while tokens
            .get(p)
            .is_some_and(|t| t.is_word("IF") || t.is_word("NOT") || t.is_word("EXISTS"))
        {
            p += 1;
        }
        if object == "INDEX" {
            // The table follows ON.
            if let Some(on) = tokens.iter().position(|t| t.is_word("ON")) {
                p = on + 1;
            }
        }
        i.tables
            .extend(name_after(tokens, p).filter(|_| matches!(object, "INDEX" | "VIEW" | "TRIGGER")));
    }
    // An event runs its body on schedule, as soon as the next second: it
    // counts as running it now.
    if object == "EVENT" && w0 != "DROP" {
        if let Some(d) = tokens.iter().position(|t| t.is_word("DO")) {
            let body = nested(rest(text, tokens, d + 1), ctx)?;
            merge(&mut i, body);
        }
    }
    Ok(Some(i))
}

/// SET forms the parser lacks or reads loosely.
fn set_by_keywords(text: &str, tokens: &[Token], ctx: &Ctx<'_>) -> Result<Option<StatementInfo>, String> {
    let w1 = word(tokens, 1);
    let out = match w1.as_str() {
        "PASSWORD" => {
            let mut i = info(Admin, "SET PASSWORD");
            i.flags.role_admin = true;
            i
        }
        "ROLE" | "DEFAULT" => {
            let mut i = info(Admin, if w1 == "ROLE" { "SET ROLE" } else { "SET DEFAULT ROLE" });
            i.flags.set_role = true;
            i
        }
        "CHARACTER" | "CHARSET" => {
            // SET CHARACTER SET x / SET CHARSET x: the client and results
            // character sets.
            let value = tokens.get(if w1 == "CHARSET" { 2 } else { 3 });
            let mut i = info(Read, "SET CHARACTER SET");
            if !value.is_some_and(|v| matches!(v.kind, Kind::Word | Kind::Str) && charset_ok(&v.value))
                || tokens.len() > 4
            {
                lexical(&mut i);
            }
            i
        }
        "GLOBAL" if word(tokens, 2) == "TRANSACTION" => {
            // The default for every new session.
            let mut i = nested(&format!("SET {}", rest(text, tokens, 2)), ctx)?;
            guarded(&mut i);
            i.flags.alter_system = true;
            i.command = "SET GLOBAL TRANSACTION".into();
            i
        }
        "PERSIST" | "PERSIST_ONLY" => {
            // Read as SET GLOBAL, which it is and more (it survives a
            // restart).
            let mut i = nested(&format!("SET GLOBAL {}", rest(text, tokens, 2)), ctx)?;
            i.command = format!("SET {w1}");
            i
        }
        "STATEMENT" => {
            // SET STATEMENT var = value [, …] FOR stmt: both parts count.
            let mut depth = 0i32;
            let mut for_at = None;
            for (k, t) in tokens.iter().enumerate().skip(2) {
                match t.value.as_str() {
                    "(" => depth += 1,
                    ")" => depth -= 1,
                    _ if depth == 0 && t.is_word("FOR") => {
                        for_at = Some(k);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(f) = for_at.filter(|&f| f > 2) else {
                return Err("SET STATEMENT without settings or FOR".into());
            };
            let assigns = format!("SET {}", &text[tokens[2].start..tokens[f - 1].end]);
            let mut a = nested(&assigns, ctx)?;
            let b = nested(rest(text, tokens, f + 1), ctx)?;
            merge(&mut a, b);
            a.command = "SET STATEMENT".into();
            a
        }
        _ => return Ok(None),
    };
    Ok(Some(out))
}

fn merge(into: &mut StatementInfo, other: StatementInfo) {
    raise(into, other.class);
    into.flags = into.flags.union(other.flags);
    into.functions.extend(other.functions);
    into.calls.extend(other.calls);
    into.tables.extend(other.tables);
    into.prepared.extend(other.prepared);
}

fn name_of(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| p.as_ident().map_or_else(|| p.to_string(), |i| i.value.clone()))
        .collect::<Vec<_>>()
        .join(".")
}

/// A statement from the parser: its own class, then a walk of everything
/// inside it.
fn tree(stmt: &Statement, ctx: &Ctx<'_>) -> StatementInfo {
    if let Statement::Explain { analyze, statement, .. } = stmt {
        // EXPLAIN only plans, and nothing inside runs; EXPLAIN ANALYZE runs
        // the statement.
        let mut out = if *analyze { tree(statement, ctx) } else { info(Read, "") };
        out.command = if *analyze { "EXPLAIN ANALYZE" } else { "EXPLAIN" }.into();
        out.flags.explain_analyze = *analyze;
        return out;
    }
    let mut out = own(stmt);
    // `WITH … DELETE …`: the statement after WITH is the main one.
    let main = match stmt {
        Statement::Query(q) => match q.body.as_ref() {
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) => {
                let inner = own(s);
                out.command = inner.command.clone();
                merge(&mut out, inner);
                Some(s as *const Statement)
            }
            _ => None,
        },
        _ => None,
    };
    let mut walker = Walker {
        ctx,
        info: StatementInfo::default(),
        ctes: Vec::new(),
        top: true,
        main,
    };
    let _ = stmt.visit(&mut walker);
    let Walker { info: found, ctes, .. } = walker;
    merge(&mut out, found);
    out.tables.retain(|t| !ctes.iter().any(|c| c.eq_ignore_ascii_case(t)));
    dedup(&mut out.tables);
    out
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
}

/// The statement's own class, command and flags, without what it contains.
fn own(stmt: &Statement) -> StatementInfo {
    match stmt {
        Statement::Query(q) => {
            let mut i = info(Read, "SELECT");
            query_own(q, &mut i);
            i
        }
        Statement::Insert(ins) => {
            let mut i = info(Write, if ins.replace_into { "REPLACE" } else { "INSERT" });
            i.flags.upsert = ins.replace_into || matches!(ins.on, Some(OnInsert::DuplicateKeyUpdate(_)));
            i
        }
        Statement::Update(u) => {
            let mut i = info(Write, "UPDATE");
            i.flags.update_without_where = u.selection.as_ref().is_none_or(picks_all);
            i
        }
        Statement::Delete(d) => {
            let mut i = info(Delete, "DELETE");
            i.flags.delete_without_where = d.selection.as_ref().is_none_or(picks_all);
            i
        }
        Statement::Truncate(_) => {
            let mut i = info(Delete, "TRUNCATE");
            i.flags.truncate = true;
            i
        }
        Statement::Explain { analyze, .. } => {
            let mut i = info(Read, if *analyze { "EXPLAIN ANALYZE" } else { "EXPLAIN" });
            i.flags.explain_analyze = *analyze;
            i
        }
        Statement::ExplainTable { table_name, .. } => {
            let mut i = info(Read, "DESCRIBE");
            i.tables.push(name_of(table_name));
            i
        }
        Statement::Use(_) => info(Read, "USE"),
        Statement::StartTransaction { modes, .. } => {
            let mut i = info(Read, "START TRANSACTION");
            read_write(modes, &mut i);
            i
        }
        Statement::Commit { .. } => info(Read, "COMMIT"),
        Statement::Rollback { .. } => info(Read, "ROLLBACK"),
        Statement::Savepoint { .. } => info(Read, "SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => info(Read, "RELEASE SAVEPOINT"),
        Statement::Set(s) => set(s),
        Statement::LockTables { tables } => {
            let mut i = info(Write, "LOCK TABLES");
            i.tables.extend(tables.iter().map(|t| t.table.value.clone()));
            i.flags.lock_table = true;
            i
        }
        Statement::UnlockTables => info(Read, "UNLOCK TABLES"),
        Statement::Call(f) => {
            let mut i = info(Unknown, "CALL");
            i.flags.call = true;
            i.functions.push(name_of(&f.name));
            i
        }
        Statement::CreateTable(ct) => {
            let mut i = info(Ddl, "CREATE TABLE");
            i.flags.select_into = ct.query.is_some();
            i
        }
        Statement::AlterTable(at) => {
            let mut i = info(Ddl, "ALTER TABLE");
            i.flags.drop = at.operations.iter().any(|op| {
                matches!(
                    op,
                    ast::AlterTableOperation::DropColumn { .. }
                        | ast::AlterTableOperation::DropConstraint { .. }
                        | ast::AlterTableOperation::DropPrimaryKey { .. }
                        | ast::AlterTableOperation::DropForeignKey { .. }
                        | ast::AlterTableOperation::DropIndex { .. }
                        | ast::AlterTableOperation::DropPartitions { .. }
                )
            });
            i
        }
        Statement::Drop { object_type, names, .. } => {
            let class = match object_type {
                ObjectType::Database | ObjectType::Schema | ObjectType::Role | ObjectType::User => Admin,
                _ => Ddl,
            };
            let mut i = info(class, &format!("DROP {object_type}"));
            i.flags.drop = true;
            if matches!(object_type, ObjectType::Table | ObjectType::View | ObjectType::Sequence) {
                i.tables.extend(names.iter().map(name_of));
            }
            i.flags.role_admin = matches!(object_type, ObjectType::Role | ObjectType::User);
            i
        }
        Statement::RenameTable(r) => {
            let mut i = info(Ddl, "RENAME TABLE");
            for t in r {
                i.tables.push(name_of(&t.old_name));
                i.tables.push(name_of(&t.new_name));
            }
            i
        }
        _ => {
            let mut i = info(Unknown, "UNKNOWN");
            i.command = format!("UNKNOWN ({})", first_words(stmt));
            i
        }
    }
}

fn first_words(stmt: &Statement) -> String {
    stmt.to_string()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Locks and `INTO` of a query (its own, not its subqueries': the walk
/// visits those as queries too).
fn query_own(q: &Query, i: &mut StatementInfo) {
    if !q.locks.is_empty() {
        raise(i, Write);
        i.flags.row_locks = true;
    }
    if let SetExpr::Select(s) = q.body.as_ref() {
        if let Some(into) = &s.into {
            // `INTO @var` only sets session variables.
            let variables = into
                .targets
                .iter()
                .all(|t| matches!(t, Expr::Identifier(id) if id.value.starts_with('@')));
            if !variables {
                raise(i, Ddl);
                i.flags.select_into = true;
            }
        }
    }
}

fn read_write(modes: &[TransactionMode], i: &mut StatementInfo) {
    if modes
        .iter()
        .any(|m| matches!(m, TransactionMode::AccessMode(TransactionAccessMode::ReadWrite)))
    {
        raise(i, Admin);
        i.flags.read_only_override = true;
    }
}

/// Whether a WHERE clause picks every row: it names no column, or it is
/// OR'd with something that names none.
fn picks_all(e: &Expr) -> bool {
    use ast::BinaryOperator as B;
    // The parser binds XOR tighter than `=`, the server looser: with an XOR
    // anywhere, the reading cannot be trusted to narrow the rows.
    let mut xor = false;
    let _ = ast::visit_expressions(e, |x| {
        if matches!(x, Expr::BinaryOp { op: B::Xor, .. }) {
            xor = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    if xor {
        return true;
    }
    picks_all_rows(e)
}

/// `picks_all` without XOR, evaluated with an explicit stack: a chain of
/// thousands of ORs is a tree as deep, too deep for recursion.
fn picks_all_rows(e: &Expr) -> bool {
    use ast::BinaryOperator as B;
    enum Step<'a> {
        Eval(&'a Expr),
        Or,
        And,
    }
    let mut work = vec![Step::Eval(e)];
    let mut values: Vec<bool> = Vec::new();
    while let Some(step) = work.pop() {
        match step {
            Step::Eval(Expr::Nested(x)) => work.push(Step::Eval(x)),
            Step::Eval(Expr::BinaryOp { left, op, right }) if matches!(op, B::Or | B::And) => {
                work.push(if *op == B::Or { Step::Or } else { Step::And });
                work.push(Step::Eval(right));
                work.push(Step::Eval(left));
            }
            Step::Eval(x) => values.push(!names_column(x)),
            Step::Or | Step::And => {
                let b = values.pop().unwrap_or(true);
                let a = values.pop().unwrap_or(true);
                values.push(if matches!(step, Step::Or) { a || b } else { a && b });
            }
        }
    }
    values.pop().unwrap_or(true)
}

fn names_column(e: &Expr) -> bool {
    let mut found = false;
    let _ = ast::visit_expressions(e, |x| {
        let col = match x {
            Expr::Identifier(id) => !id.value.starts_with('@'),
            Expr::CompoundIdentifier(ids) => ids.first().is_some_and(|id| !id.value.starts_with('@')),
            _ => false,
        };
        if col {
            found = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}

/// `SET` as parsed.
fn set(s: &ast::Set) -> StatementInfo {
    let mut i = info(Read, "SET");
    match s {
        ast::Set::SingleAssignment {
            scope,
            variable,
            values,
            ..
        } => {
            assignment(scope.as_ref(), variable, values.first(), &mut i);
        }
        ast::Set::MultipleAssignments { assignments } => {
            for a in assignments {
                assignment(a.scope.as_ref(), &a.name, Some(&a.value), &mut i);
            }
        }
        ast::Set::SetRole { .. } => {
            i = info(Admin, "SET ROLE");
            i.flags.set_role = true;
        }
        ast::Set::SetNames {
            charset_name,
            collation_name,
        } => {
            i.command = "SET NAMES".into();
            let ok = charset_ok(&charset_name.value) && collation_name.as_deref().is_none_or(charset_ok);
            if !ok {
                lexical(&mut i);
            }
        }
        // The server's default for the connection is not known here.
        ast::Set::SetNamesDefault {} => {
            i.command = "SET NAMES".into();
            lexical(&mut i);
        }
        ast::Set::SetTransaction { modes, .. } => {
            i.command = "SET TRANSACTION".into();
            read_write(modes, &mut i);
        }
        ast::Set::SetTimeZone { .. } => i.command = "SET TIME ZONE".into(),
        _ => {
            i = info(Unknown, "SET");
        }
    }
    i
}

fn lexical(i: &mut StatementInfo) {
    raise(i, Admin);
    i.flags.lexical_setting = true;
}

fn guarded(i: &mut StatementInfo) {
    raise(i, Admin);
    i.flags.guarded_setting = true;
}

/// A literal string or bare word value (`utf8mb4`, `'utf8mb4'`).
fn literal_text(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.to_string()),
            Value::Boolean(b) => Some(if *b { "1" } else { "0" }.into()),
            _ => None,
        },
        Expr::Identifier(id) if id.quote_style.is_none() => Some(id.value.clone()),
        _ => None,
    }
}

fn assignment(scope: Option<&ast::ContextModifier>, name: &ObjectName, value: Option<&Expr>, i: &mut StatementInfo) {
    let full = name_of(name).to_ascii_lowercase();
    let mut global = matches!(scope, Some(ast::ContextModifier::Global));
    let mut var = full.as_str();
    if let Some(rest) = var.strip_prefix("@@") {
        var = rest;
        for (prefix, is_global) in [
            ("global.", true),
            ("persist.", true),
            ("persist_only.", true),
            ("session.", false),
            ("local.", false),
        ] {
            if let Some(r) = var.strip_prefix(prefix) {
                var = r;
                global |= is_global;
            }
        }
    } else if var.starts_with('@') {
        // A user variable: only this session's.
        return;
    }
    if global {
        guarded(i);
        i.flags.alter_system = true;
    }
    let text = value.and_then(literal_text);
    if var == "sql_mode" {
        if !text
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("default") && sql_mode_ok(t))
        {
            lexical(i);
        }
    } else if CHARSET_VARIABLES.contains(&var) {
        if !text.as_deref().is_some_and(charset_ok) {
            lexical(i);
        }
    } else if matches!(var, "transaction_read_only" | "tx_read_only") {
        let on = text
            .as_deref()
            .is_some_and(|t| matches!(t.to_ascii_lowercase().as_str(), "1" | "on" | "true"));
        if !on {
            raise(i, Admin);
            i.flags.read_only_override = true;
        }
    } else if !global && !ORDINARY_VARIABLES.contains(&var) {
        guarded(i);
    }
}

/// Walks every node: calls, tables, locks, nested statements.
struct Walker<'a, 'b> {
    ctx: &'a Ctx<'b>,
    info: StatementInfo,
    ctes: Vec<String>,
    top: bool,
    /// The main statement of a `WITH …` query, already counted.
    main: Option<*const Statement>,
}

impl Visitor for Walker<'_, '_> {
    type Break = ();

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        if std::mem::take(&mut self.top) || self.main.is_some_and(|m| std::ptr::eq(m, s)) {
            return ControlFlow::Continue(());
        }
        // A statement inside another (a CTE body the parser accepts where
        // MySQL would not): its own class counts, as in PostgreSQL's
        // data-modifying CTEs.
        let inner = own(s);
        if inner.class > Read {
            self.info.flags.data_modifying_cte = true;
        }
        merge(&mut self.info, inner);
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(with) = &q.with {
            self.ctes
                .extend(with.cte_tables.iter().map(|c| c.alias.name.value.clone()));
        }
        query_own(q, &mut self.info);
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        self.info.tables.push(name_of(r));
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        // `FROM f(…)`: MySQL has no table functions but JSON_TABLE; a call
        // all the same.
        if let TableFactor::Table {
            name, args: Some(_), ..
        } = t
        {
            call(&name_of(name), self.ctx, &mut self.info);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            call(&name_of(&f.name), self.ctx, &mut self.info);
        }
        ControlFlow::Continue(())
    }
}
