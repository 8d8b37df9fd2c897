//! Tables of names: MySQL/MariaDB built-in functions without side effects,
//! the built-ins that have them, the session variables an agent may set,
//! and the character sets and SQL modes that leave statement text read the
//! way the classifier reads it.

use std::collections::HashMap;

use crate::sql::StatementClass;

/// Built-in functions (unqualified names, lower case) that only compute a
/// value. `sleep` and `benchmark` are here: they only spend time (a
/// statement timeout bounds them). A name missing from this table and the
/// side-effect table may be a stored function, which MySQL lets write
/// whatever `READS SQL DATA` says, so it makes its statement `Unknown`.
pub(super) const BUILTINS: &[&str] = &[
    // Aggregates and windows.
    "avg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "count",
    "group_concat",
    "json_arrayagg",
    "json_objectagg",
    "max",
    "min",
    "std",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "sum",
    "var_pop",
    "var_samp",
    "variance",
    "cume_dist",
    "dense_rank",
    "first_value",
    "lag",
    "last_value",
    "lead",
    "nth_value",
    "ntile",
    "percent_rank",
    "rank",
    "row_number",
    "percentile_cont",
    "percentile_disc",
    "median",
    // Control flow and comparison.
    "if",
    "ifnull",
    "nullif",
    "coalesce",
    "greatest",
    "least",
    "isnull",
    "interval",
    "strcmp",
    "nvl",
    "nvl2",
    "decode_oracle",
    // Strings.
    "ascii",
    "bin",
    "bit_length",
    "char",
    "char_length",
    "character_length",
    "chr",
    "concat",
    "concat_ws",
    "elt",
    "export_set",
    "field",
    "find_in_set",
    "format",
    "from_base64",
    "hex",
    "insert",
    "instr",
    "lcase",
    "left",
    "length",
    "length",
    "like_range_max",
    "locate",
    "lower",
    "lpad",
    "ltrim",
    "make_set",
    "mid",
    "oct",
    "octet_length",
    "ord",
    "position",
    "quote",
    "regexp_instr",
    "regexp_like",
    "regexp_replace",
    "regexp_substr",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "soundex",
    "space",
    "substr",
    "substring",
    "substring_index",
    "to_base64",
    "trim",
    "ucase",
    "unhex",
    "upper",
    "weight_string",
    "natural_sort_key",
    "sformat",
    "to_char",
    "collation",
    "charset",
    "coercibility",
    "convert",
    "cast",
    "binary",
    "match",
    // Numbers.
    "abs",
    "acos",
    "asin",
    "atan",
    "atan2",
    "ceil",
    "ceiling",
    "conv",
    "cos",
    "cot",
    "crc32",
    "crc32c",
    "degrees",
    "div",
    "exp",
    "floor",
    "ln",
    "log",
    "log10",
    "log2",
    "mod",
    "pi",
    "pow",
    "power",
    "radians",
    "rand",
    "round",
    "sign",
    "sin",
    "sqrt",
    "tan",
    "truncate",
    "bit_count",
    // Dates and times.
    "adddate",
    "addtime",
    "convert_tz",
    "curdate",
    "current_date",
    "current_time",
    "current_timestamp",
    "curtime",
    "date",
    "date_add",
    "date_format",
    "date_sub",
    "datediff",
    "day",
    "dayname",
    "dayofmonth",
    "dayofweek",
    "dayofyear",
    "extract",
    "from_days",
    "from_unixtime",
    "get_format",
    "hour",
    "last_day",
    "localtime",
    "localtimestamp",
    "makedate",
    "maketime",
    "microsecond",
    "minute",
    "month",
    "monthname",
    "now",
    "period_add",
    "period_diff",
    "quarter",
    "sec_to_time",
    "second",
    "str_to_date",
    "subdate",
    "subtime",
    "sysdate",
    "time",
    "time_format",
    "time_to_sec",
    "timediff",
    "timestamp",
    "timestampadd",
    "timestampdiff",
    "to_days",
    "to_seconds",
    "unix_timestamp",
    "utc_date",
    "utc_time",
    "utc_timestamp",
    "week",
    "weekday",
    "weekofyear",
    "year",
    "yearweek",
    "add_months",
    "months_between",
    // Encryption, hashing, compression.
    "aes_decrypt",
    "aes_encrypt",
    "compress",
    "uncompress",
    "uncompressed_length",
    "md5",
    "sha",
    "sha1",
    "sha2",
    "random_bytes",
    "statement_digest",
    "statement_digest_text",
    "validate_password_strength",
    "des_decrypt",
    "des_encrypt",
    "encode",
    "decode",
    "kdf",
    // Information.
    "benchmark",
    "connection_id",
    "current_role",
    "current_user",
    "database",
    "found_rows",
    "icu_version",
    "last_insert_id",
    "row_count",
    "schema",
    "session_user",
    "system_user",
    "user",
    "version",
    "roles_graphml",
    "sleep",
    "lastval",
    // Locks that are only inspected.
    "is_free_lock",
    "is_used_lock",
    // Miscellaneous.
    "any_value",
    "bin_to_uuid",
    "default",
    "grouping",
    "inet_aton",
    "inet_ntoa",
    "inet6_aton",
    "inet6_ntoa",
    "is_ipv4",
    "is_ipv4_compat",
    "is_ipv4_mapped",
    "is_ipv6",
    "is_uuid",
    "name_const",
    "uuid",
    "uuid_short",
    "uuid_to_bin",
    "values",
    "value",
    "sys_guid",
    "format_bytes",
    "format_pico_time",
    "ps_current_thread_id",
    "ps_thread_id",
    "master_pos_wait",
    "source_pos_wait",
    "wait_for_executed_gtid_set",
    "gtid_subset",
    "gtid_subtract",
    "json_array",
    "json_array_append",
    "json_array_insert",
    "json_contains",
    "json_contains_path",
    "json_depth",
    "json_extract",
    "json_insert",
    "json_keys",
    "json_length",
    "json_merge",
    "json_merge_patch",
    "json_merge_preserve",
    "json_object",
    "json_overlaps",
    "json_pretty",
    "json_quote",
    "json_remove",
    "json_replace",
    "json_schema_valid",
    "json_schema_validation_report",
    "json_search",
    "json_set",
    "json_storage_free",
    "json_storage_size",
    "json_type",
    "json_unquote",
    "json_valid",
    "json_value",
    "json_compact",
    "json_detailed",
    "json_loose",
    "json_exists",
    "json_query",
    "json_equals",
    "json_normalize",
    "member_of",
    "column_create",
    "column_get",
    "column_add",
    "column_delete",
    "column_exists",
    "column_list",
    "column_check",
    "column_json",
    "st_astext",
    "st_aswkt",
    "st_asbinary",
    "st_aswkb",
    "st_geomfromtext",
    "st_geomfromwkb",
    "st_geometryfromtext",
    "st_pointfromtext",
    "st_distance",
    "st_distance_sphere",
    "st_contains",
    "st_within",
    "st_intersects",
    "st_x",
    "st_y",
    "st_srid",
    "st_area",
    "st_length",
    "st_buffer",
    "st_envelope",
    "st_geohash",
    "st_asgeojson",
    "st_geomfromgeojson",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "geometrycollection",
    "mbrcontains",
    "mbrwithin",
    "mbrintersects",
    "astext",
    "geomfromtext",
];

/// Built-ins with effects beyond the statement's own rows.
pub(super) struct SideEffect {
    pub class: StatementClass,
    /// Reads or writes a server file.
    pub file_access: bool,
}

/// Built-ins that take or release locks other sessions wait on, advance
/// sequences, or read server files.
pub(super) const SIDE_EFFECTS: &[(&str, StatementClass, bool)] = &[
    ("get_lock", StatementClass::Write, false),
    ("release_lock", StatementClass::Write, false),
    ("release_all_locks", StatementClass::Write, false),
    ("nextval", StatementClass::Write, false),
    ("setval", StatementClass::Write, false),
    ("load_file", StatementClass::Admin, true),
];

/// Session variables (lower case, no `@@`/scope) an agent may set: they
/// tune its own session and change nothing about how text is read, what
/// other sessions see, or what the server logs and replicates. Anything
/// else is a guarded setting, deliberately including `foreign_key_checks`,
/// `unique_checks` (integrity), `sql_safe_updates` (a safety net),
/// `sql_log_bin`, `sql_log_off`, `pseudo_thread_id`, `gtid_*`, `insert_id`
/// (replication and audit), `session_track_*` (the protocol gatehouse
/// reads).
pub(super) const ORDINARY_VARIABLES: &[&str] = &[
    "autocommit",
    "time_zone",
    "timestamp",
    "wait_timeout",
    "interactive_timeout",
    "net_read_timeout",
    "net_write_timeout",
    "lock_wait_timeout",
    "innodb_lock_wait_timeout",
    "max_execution_time",
    "max_statement_time",
    "sql_select_limit",
    "transaction_isolation",
    "tx_isolation",
    "transaction_read_only",
    "tx_read_only",
    "group_concat_max_len",
    "sql_big_selects",
    "sql_buffer_result",
    "sql_quote_show_create",
    "sql_notes",
    "sql_warnings",
    "sql_auto_is_null",
    "big_tables",
    "max_join_size",
    "max_sort_length",
    "sort_buffer_size",
    "join_buffer_size",
    "tmp_table_size",
    "max_heap_table_size",
    "div_precision_increment",
    "lc_time_names",
    "lc_messages",
    "default_week_format",
    "optimizer_switch",
    "optimizer_search_depth",
    "optimizer_prune_level",
    "eq_range_index_dive_limit",
    "cte_max_recursion_depth",
    "max_recursive_iterations",
    "block_encryption_mode",
    "profiling",
    "profiling_history_size",
    "collation_database",
];

/// Variables that change how the server reads statement text (or encodes
/// the results gatehouse scans).
pub(super) const CHARSET_VARIABLES: &[&str] = &[
    "character_set_client",
    "character_set_connection",
    "collation_connection",
    "character_set_results",
];

/// Character sets (and collations starting with them) in which no
/// multibyte sequence contains `\` or a quote byte. Everything else (big5,
/// cp932, gbk, sjis, gb18030, ucs2, utf16, utf32, …) is refused.
const SAFE_CHARSETS: &[&str] = &["utf8mb4", "utf8mb3", "utf8", "latin1", "ascii", "binary"];

/// Whether a character set or collation name keeps text read as the
/// classifier reads it.
pub(super) fn charset_ok(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    SAFE_CHARSETS.iter().any(|c| n == *c || n.starts_with(&format!("{c}_")))
}

/// SQL modes that change nothing about tokenizing or precedence. Not here,
/// so refused: `ANSI_QUOTES`, `NO_BACKSLASH_ESCAPES`, `PIPES_AS_CONCAT`,
/// `IGNORE_SPACE`, `HIGH_NOT_PRECEDENCE`, and the combinations that include
/// one (`ANSI`, `ORACLE`, `MSSQL`, `DB2`, `MAXDB`, `POSTGRESQL`), and any
/// mode unknown here.
const SAFE_SQL_MODES: &[&str] = &[
    "strict_trans_tables",
    "strict_all_tables",
    "only_full_group_by",
    "no_zero_date",
    "no_zero_in_date",
    "error_for_division_by_zero",
    "no_engine_substitution",
    "no_auto_value_on_zero",
    "no_auto_create_user",
    "no_dir_in_create",
    "no_unsigned_subtraction",
    "pad_char_to_full_length",
    "real_as_float",
    "allow_invalid_dates",
    "time_truncate_fractional",
    "traditional",
    "simultaneous_assignment",
    "empty_string_is_null",
    "no_field_options",
    "no_key_options",
    "no_table_options",
];

/// Whether an `sql_mode` string literal keeps text read as the classifier
/// reads it.
pub(super) fn sql_mode_ok(modes: &str) -> bool {
    modes
        .split(',')
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty())
        .all(|m| SAFE_SQL_MODES.contains(&m.as_str()))
}

/// Built-ins and the side-effect table (plus a deployment's own names).
pub(super) struct FunctionTable {
    builtins: HashMap<&'static str, ()>,
    effects: HashMap<String, SideEffect>,
}

/// How a call is judged.
pub(super) enum Verdict<'a> {
    Builtin,
    Effect(&'a SideEffect),
    Unresolved,
}

impl FunctionTable {
    pub fn new(extra_admin: &[String]) -> Self {
        let mut effects: HashMap<String, SideEffect> = SIDE_EFFECTS
            .iter()
            .map(|&(n, class, file_access)| (n.to_string(), SideEffect { class, file_access }))
            .collect();
        for n in extra_admin {
            effects.insert(
                n.to_ascii_lowercase(),
                SideEffect {
                    class: StatementClass::Admin,
                    file_access: false,
                },
            );
        }
        FunctionTable {
            builtins: BUILTINS.iter().map(|&n| (n, ())).collect(),
            effects,
        }
    }

    /// `name` as written: `f` or `db.f`. A qualified name is a stored
    /// function even when its last part is a built-in's (that is how MySQL
    /// calls a stored function named like one), unless the deployment
    /// listed it.
    pub fn verdict(&self, name: &str) -> Verdict<'_> {
        let lower = name.to_ascii_lowercase();
        if let Some(e) = self.effects.get(&lower) {
            return Verdict::Effect(e);
        }
        if let Some((_, last)) = lower.rsplit_once('.') {
            if let Some(e) = self.effects.get(last) {
                return Verdict::Effect(e);
            }
            return Verdict::Unresolved;
        }
        if self.builtins.contains_key(lower.as_str()) {
            Verdict::Builtin
        } else {
            Verdict::Unresolved
        }
    }
}
