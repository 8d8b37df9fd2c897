//! Functions with side effects, and settings that guard the server.
//!
//! A `SELECT` is only as harmless as the functions it calls. The parser
//! cannot know what a function does, so the classifier keeps a table of the
//! ones that matter: PostgreSQL's own admin, file and replication functions,
//! the write-ish ones (sequences, settings, advisory locks, large objects,
//! `pg_notify`), and those that run SQL given as text. Deployments add their
//! own (`Classifier::new`).
//!
//! Names are matched case-insensitively. An entry without a schema matches a
//! call in any schema (`pg_catalog.pg_read_file` and `pg_read_file` alike,
//! and a same-named function in another schema too: the cautious side, since
//! `search_path` decides which one an unqualified call reaches). An entry with
//! a schema, `audit.purge`, matches `audit.purge(…)` and the unqualified
//! `purge(…)`, never `other.purge(…)`.

use std::collections::HashMap;

use super::StatementClass;

/// What calling a listed function does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideEffect {
    /// The class a statement that calls it takes at least.
    pub class: StatementClass,
    /// It reads or writes files on the database server.
    pub file_access: bool,
}

const fn e(class: StatementClass, file_access: bool) -> SideEffect {
    SideEffect { class, file_access }
}

const WRITE: SideEffect = e(StatementClass::Write, false);
const DELETE: SideEffect = e(StatementClass::Delete, false);
const ADMIN: SideEffect = e(StatementClass::Admin, false);
const FILE: SideEffect = e(StatementClass::Admin, true);
const SQL: SideEffect = e(StatementClass::Unknown, false);

/// The built-in table. The module documentation renders it; keep the two in
/// step.
pub const DEFAULT_SIDE_EFFECT_FUNCTIONS: &[(&str, SideEffect)] = &[
    // Server files (Admin, file_access).
    ("pg_read_file", FILE),
    ("pg_read_binary_file", FILE),
    ("pg_ls_dir", FILE),
    ("pg_stat_file", FILE),
    ("pg_ls_logdir", FILE),
    ("pg_ls_waldir", FILE),
    ("pg_ls_tmpdir", FILE),
    ("pg_ls_archive_statusdir", FILE),
    ("pg_ls_logicalmapdir", FILE),
    ("pg_ls_logicalsnapdir", FILE),
    ("pg_ls_replslotdir", FILE),
    ("pg_ls_summariesdir", FILE),
    ("pg_file_write", FILE),
    ("pg_file_rename", FILE),
    ("pg_file_unlink", FILE),
    ("pg_file_sync", FILE),
    ("pg_logdir_ls", FILE),
    ("lo_import", FILE),
    ("lo_export", FILE),
    // Server and session control (Admin).
    ("pg_terminate_backend", ADMIN),
    ("pg_cancel_backend", ADMIN),
    ("pg_reload_conf", ADMIN),
    ("pg_rotate_logfile", ADMIN),
    ("pg_rotate_logfile_old", ADMIN),
    ("pg_log_backend_memory_contexts", ADMIN),
    ("pg_switch_wal", ADMIN),
    ("pg_switch_xlog", ADMIN),
    ("pg_create_restore_point", ADMIN),
    ("pg_promote", ADMIN),
    ("pg_backup_start", ADMIN),
    ("pg_backup_stop", ADMIN),
    ("pg_start_backup", ADMIN),
    ("pg_stop_backup", ADMIN),
    ("pg_wal_replay_pause", ADMIN),
    ("pg_wal_replay_resume", ADMIN),
    ("pg_xlog_replay_pause", ADMIN),
    ("pg_xlog_replay_resume", ADMIN),
    ("pg_log_standby_snapshot", ADMIN),
    ("pg_logical_emit_message", ADMIN),
    ("pg_create_physical_replication_slot", ADMIN),
    ("pg_create_logical_replication_slot", ADMIN),
    ("pg_drop_replication_slot", ADMIN),
    ("pg_copy_physical_replication_slot", ADMIN),
    ("pg_copy_logical_replication_slot", ADMIN),
    ("pg_replication_slot_advance", ADMIN),
    ("pg_logical_slot_get_changes", ADMIN),
    ("pg_logical_slot_get_binary_changes", ADMIN),
    ("pg_sync_replication_slots", ADMIN),
    ("pg_replication_origin_create", ADMIN),
    ("pg_replication_origin_drop", ADMIN),
    ("pg_replication_origin_advance", ADMIN),
    ("pg_replication_origin_session_setup", ADMIN),
    ("pg_replication_origin_session_reset", ADMIN),
    ("pg_replication_origin_xact_setup", ADMIN),
    ("pg_replication_origin_xact_reset", ADMIN),
    ("pg_stat_reset", ADMIN),
    ("pg_stat_reset_shared", ADMIN),
    ("pg_stat_reset_single_table_counters", ADMIN),
    ("pg_stat_reset_single_function_counters", ADMIN),
    ("pg_stat_reset_slru", ADMIN),
    ("pg_stat_reset_replication_slot", ADMIN),
    ("pg_stat_reset_subscription_stats", ADMIN),
    ("pg_stat_reset_backend_stats", ADMIN),
    ("pg_stat_statements_reset", ADMIN),
    ("pg_restore_relation_stats", ADMIN),
    ("pg_restore_attribute_stats", ADMIN),
    ("pg_clear_relation_stats", ADMIN),
    ("pg_clear_attribute_stats", ADMIN),
    ("pg_import_system_collations", ADMIN),
    ("dblink_connect", ADMIN),
    ("dblink_connect_u", ADMIN),
    // SQL given as text, here or on another server (Unknown).
    ("dblink", SQL),
    ("dblink_exec", SQL),
    ("dblink_send_query", SQL),
    ("dblink_open", SQL),
    ("query_to_xml", SQL),
    ("query_to_xmlschema", SQL),
    ("query_to_xml_and_xmlschema", SQL),
    ("ts_stat", SQL),
    ("ts_rewrite", SQL),
    ("crosstab", SQL),
    ("crosstab2", SQL),
    ("crosstab3", SQL),
    ("crosstab4", SQL),
    // Write-ish: sequences, settings, locks, notifications, large objects.
    ("nextval", WRITE),
    ("setval", WRITE),
    ("set_config", WRITE),
    ("pg_notify", WRITE),
    ("pg_advisory_lock", WRITE),
    ("pg_advisory_lock_shared", WRITE),
    ("pg_advisory_xact_lock", WRITE),
    ("pg_advisory_xact_lock_shared", WRITE),
    ("pg_try_advisory_lock", WRITE),
    ("pg_try_advisory_lock_shared", WRITE),
    ("pg_try_advisory_xact_lock", WRITE),
    ("pg_try_advisory_xact_lock_shared", WRITE),
    ("pg_advisory_unlock", WRITE),
    ("pg_advisory_unlock_shared", WRITE),
    ("pg_advisory_unlock_all", WRITE),
    ("lo_create", WRITE),
    ("lo_creat", WRITE),
    ("lo_from_bytea", WRITE),
    ("lo_put", WRITE),
    ("lowrite", WRITE),
    ("lo_truncate", WRITE),
    ("lo_truncate64", WRITE),
    ("lo_unlink", DELETE),
];

/// The lookup table a classifier holds: the defaults plus the deployment's
/// own entries, keyed by lower-cased bare name.
#[derive(Debug, Clone)]
pub(super) struct FunctionTable {
    /// bare name → (schema the entry is limited to, if any; effect).
    by_name: HashMap<String, Vec<(Option<String>, SideEffect)>>,
}

impl FunctionTable {
    pub fn new<'a>(extra: impl IntoIterator<Item = (&'a str, SideEffect)>) -> Self {
        let mut by_name: HashMap<String, Vec<(Option<String>, SideEffect)>> = HashMap::new();
        let defaults = DEFAULT_SIDE_EFFECT_FUNCTIONS.iter().map(|(n, e)| (*n, *e));
        for (name, effect) in defaults.chain(extra) {
            let name = name.trim().to_lowercase();
            let (schema, bare) = match name.rsplit_once('.') {
                Some((s, b)) => (Some(s.to_owned()), b.to_owned()),
                None => (None, name),
            };
            if bare.is_empty() {
                continue;
            }
            by_name.entry(bare).or_default().push((schema, effect));
        }
        FunctionTable { by_name }
    }

    /// The strictest effect listed for a call written as `name` (possibly
    /// schema-qualified, parts joined by `.`), merged over matching entries.
    pub fn lookup(&self, name: &str) -> Option<SideEffect> {
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_lowercase();
            lower.as_str()
        } else {
            name
        };
        let (schema, bare) = match name.rsplit_once('.') {
            Some((s, b)) => (Some(s), b),
            None => (None, name),
        };
        let entries = self.by_name.get(bare)?;
        let mut found: Option<SideEffect> = None;
        for (entry_schema, effect) in entries {
            let matches = match (entry_schema.as_deref(), schema) {
                (None, _) | (Some(_), None) => true,
                // `db.schema.fn`: the schema is the part before the name.
                (Some(want), Some(got)) => want == got.rsplit('.').next().unwrap_or(got),
            };
            if matches {
                found = Some(match found {
                    None => *effect,
                    Some(f) => SideEffect {
                        class: f.class.max(effect.class),
                        file_access: f.file_access || effect.file_access,
                    },
                });
            }
        }
        found
    }
}

/// What setting a run-time parameter (`SET name …`, `set_config(name, …)`)
/// means for the guardrails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Setting {
    /// An ordinary session setting: `search_path`, `statement_timeout`, …
    Ordinary,
    /// `role` or `session_authorization`: who the session acts as.
    Role,
    /// Any other setting: one that disables a safety net or reaches beyond
    /// the session (`session_replication_role` skips triggers and foreign
    /// keys; logging, tracking, system-catalog and checksum overrides,
    /// library loading, debugging output), or one gatehouse does not know.
    Guarded,
    /// `default_transaction_read_only` / `transaction_read_only`: guarded
    /// only when turned off.
    ReadOnly,
    /// `client_encoding`, `standard_conforming_strings`, `backslash_quote`:
    /// they decide where a string literal ends, so they are guarded unless
    /// kept at the values gatehouse pins ([`lexical_value_ok`]).
    Lexical,
}

/// Settings a session may change without asking: they shape its own
/// planning, formatting, timeouts and resource use, and any user may set
/// them (PostgreSQL's `user` context). Everything else is guarded: the
/// upstream account is often a superuser, so a deny-list would miss the
/// superuser-only settings with effects beyond the session (`jit_dump_bitcode`
/// writes files into the data directory, `track_activities = off` hides the
/// session from monitoring, `temp_file_limit` lifts a disk bound).
const ORDINARY_SETTINGS: &[&str] = &[
    "application_name",
    "array_nulls",
    "bytea_output",
    "check_function_bodies",
    "client_min_messages",
    "constraint_exclusion",
    "cpu_index_tuple_cost",
    "cpu_operator_cost",
    "cpu_tuple_cost",
    "cursor_tuple_fraction",
    "datestyle",
    "default_statistics_target",
    "default_table_access_method",
    "default_tablespace",
    "default_text_search_config",
    "default_toast_compression",
    "default_transaction_deferrable",
    "default_transaction_isolation",
    "effective_cache_size",
    "effective_io_concurrency",
    "escape_string_warning",
    "extra_float_digits",
    "force_parallel_mode",
    "from_collapse_limit",
    "gin_fuzzy_search_limit",
    "gin_pending_list_limit",
    "hash_mem_multiplier",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "intervalstyle",
    "jit",
    "jit_above_cost",
    "jit_inline_above_cost",
    "jit_optimize_above_cost",
    "join_collapse_limit",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "lock_timeout",
    "maintenance_io_concurrency",
    "maintenance_work_mem",
    "max_parallel_maintenance_workers",
    "max_parallel_workers",
    "max_parallel_workers_per_gather",
    "min_parallel_index_scan_size",
    "min_parallel_table_scan_size",
    "parallel_leader_participation",
    "parallel_setup_cost",
    "parallel_tuple_cost",
    "plan_cache_mode",
    "quote_all_identifiers",
    "random_page_cost",
    "recursive_worktable_factor",
    "row_security",
    "search_path",
    "seed",
    "seq_page_cost",
    "statement_timeout",
    "stats_fetch_consistency",
    "synchronous_commit",
    "temp_buffers",
    "temp_tablespaces",
    "timezone",
    "transaction_deferrable",
    "transaction_isolation",
    "transform_null_equals",
    "work_mem",
    "xmlbinary",
    "xmloption",
];

/// Families of ordinary settings, by prefix: the planner's switches and
/// genetic optimiser, TCP keepalives.
const ORDINARY_PREFIXES: &[&str] = &["enable_", "geqo", "tcp_keepalives_"];

/// Prefixes of dotted (custom) settings that are an application's own,
/// read by row-level security policies and views through
/// `current_setting`: `app.tenant_id`, PostgREST's `request.jwt.claims`.
/// Any other dotted name may be an extension's (`plperl.on_plperl_init`
/// runs Perl code, `pg_stat_statements.track` hides statements) and is
/// guarded.
const APPLICATION_SETTING_PREFIXES: &[&str] = &["app.", "application.", "request.", "jwt."];

/// Classify a run-time parameter name (lower-cased by the parser unless it
/// was quoted; compared case-insensitively here). Fails closed: a setting
/// not known to be ordinary is guarded, and of the dotted names only an
/// application's own prefixes are ordinary.
pub(super) fn setting(name: &str) -> Setting {
    let name = name.to_ascii_lowercase();
    match name.as_str() {
        "role" | "session_authorization" => Setting::Role,
        "default_transaction_read_only" | "transaction_read_only" => Setting::ReadOnly,
        "client_encoding" | "standard_conforming_strings" | "backslash_quote" => Setting::Lexical,
        n if ORDINARY_SETTINGS.contains(&n) || ORDINARY_PREFIXES.iter().any(|p| n.starts_with(p)) => Setting::Ordinary,
        n if APPLICATION_SETTING_PREFIXES.iter().any(|p| n.starts_with(p)) => Setting::Ordinary,
        _ => Setting::Guarded,
    }
}

/// Whether a constant given to a boolean setting turns it on, as
/// PostgreSQL's `parse_bool` reads it. Anything unclear is "not on".
pub(super) fn is_on(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "on" | "true" | "t" | "tr" | "tru" | "yes" | "y" | "ye" | "1"
    )
}

/// Whether a constant given to a boolean setting turns it off, as
/// PostgreSQL's `parse_bool` reads it.
pub(super) fn is_off(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "off" | "of" | "false" | "f" | "fa" | "fal" | "fals" | "no" | "n" | "0"
    )
}

/// An encoding name as PostgreSQL compares them: letters and digits only,
/// lower-cased (`UTF-8` is `utf8`).
fn encoding_key(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether `value` keeps the lexical setting `name` at the value gatehouse
/// pins: `client_encoding` UTF8, `standard_conforming_strings` on,
/// `backslash_quote` off.
pub fn lexical_value_ok(name: &str, value: &str) -> bool {
    match name.to_ascii_lowercase().as_str() {
        "client_encoding" => matches!(encoding_key(value).as_str(), "utf8" | "unicode"),
        "standard_conforming_strings" => is_on(value),
        "backslash_quote" => is_off(value),
        _ => true,
    }
}
