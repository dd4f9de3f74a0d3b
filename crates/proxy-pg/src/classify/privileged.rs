//! PostgreSQL's privileged functions: what reads or writes the server's files, reaches
//! other servers, runs SQL from a string, changes settings, signals or shows other sessions,
//! administers the server, discloses the schema's source or blocks. The classifier reports
//! those a statement calls ([`SqlStatement::privileged_functions`]); policy then needs an
//! allow rule's `allow.functions` to name each.
//!
//! [`SqlStatement::privileged_functions`]: portcullis_model::SqlStatement::privileged_functions

use portcullis_model::FlaggedFunction;

/// Functions a statement may call only when an allow rule's `allow.functions` names them
/// (deny and hold rules are not needed to stop them), with the reason given to the caller.
/// A pattern is a name or a `prefix*`; a function matches whatever schema qualifies it
/// (`pg_catalog.pg_read_file`, or `dblink` installed in any schema).
pub const PRIVILEGED_FUNCTIONS: &[(&str, &str)] = &[
    // The server's file system, with the server's rights: configuration files, keys, other
    // databases' files, logs.
    ("pg_read_file", READS_FILES),
    ("pg_read_binary_file", READS_FILES),
    ("pg_stat_file", READS_FILES),
    ("pg_ls_*", READS_FILES),
    ("pg_current_logfile", READS_FILES),
    ("pg_logdir_ls", READS_FILES),
    ("pg_file_*", WRITES_FILES),
    // Large objects live outside tables, so table rules cannot cover them; lo_import and
    // lo_export also read and write server files.
    ("lo_*", LARGE_OBJECTS),
    ("loread", LARGE_OBJECTS),
    ("lowrite", LARGE_OBJECTS),
    // Connections to other servers, with whatever credentials the function is given.
    ("dblink", OTHER_SERVERS),
    ("dblink_*", OTHER_SERVERS),
    // SQL taken from a string, or tables, schemas or the whole database taken by name: what
    // they read is invisible to the parser, so table rules cannot judge it.
    ("query_to_xml*", SQL_FROM_STRING),
    ("cursor_to_xml*", SQL_FROM_STRING),
    ("table_to_xml*", SQL_FROM_STRING),
    ("schema_to_xml*", SQL_FROM_STRING),
    ("database_to_xml*", SQL_FROM_STRING),
    ("ts_stat", SQL_FROM_STRING),
    ("ts_rewrite", SQL_FROM_STRING),
    // Server and session settings: set_config changes them (search_path among others, which
    // changes what unqualified names mean); reloading or rotating affects the whole server.
    ("set_config", SETTINGS),
    ("pg_reload_conf", SETTINGS),
    ("pg_rotate_logfile", SETTINGS),
    ("pg_stat_reset*", SETTINGS),
    // Other sessions: cancelling, terminating, signalling them.
    ("pg_terminate_backend", SIGNALS),
    ("pg_cancel_backend", SIGNALS),
    ("pg_signal_backend", SIGNALS),
    ("pg_log_backend_memory_contexts", SIGNALS),
    // Server administration: promotion, WAL, backups, replication slots and origins
    // (a logical slot also streams every change to every table).
    ("pg_promote", ADMINISTRATION),
    ("pg_switch_wal", ADMINISTRATION),
    ("pg_create_restore_point", ADMINISTRATION),
    ("pg_backup_*", ADMINISTRATION),
    ("pg_start_backup", ADMINISTRATION),
    ("pg_stop_backup", ADMINISTRATION),
    ("pg_wal_replay_*", ADMINISTRATION),
    ("pg_logical_emit_message", ADMINISTRATION),
    ("pg_logical_slot_*", ADMINISTRATION),
    ("pg_create_physical_replication_slot", ADMINISTRATION),
    ("pg_create_logical_replication_slot", ADMINISTRATION),
    ("pg_copy_*_replication_slot", ADMINISTRATION),
    ("pg_drop_replication_slot", ADMINISTRATION),
    ("pg_replication_slot_advance", ADMINISTRATION),
    ("pg_replication_origin_*", ADMINISTRATION),
    ("pg_import_system_collations", ADMINISTRATION),
    // Other sessions and the server's state: what other sessions run, with their literals
    // (pg_stat_get_activity behind pg_stat_activity, the per-backend accessors), their locks,
    // progress and memory, replication peers, prepared transactions, and the server's
    // configuration files. A rule that may read one table must not read other callers'
    // statements. (The views over them, such as pg_stat_activity, are tables to policy.)
    ("pg_stat_get_activity", OTHER_SESSIONS),
    ("pg_stat_get_backend_*", OTHER_SESSIONS),
    ("pg_stat_get_progress_info", OTHER_SESSIONS),
    ("pg_stat_get_wal_senders", OTHER_SESSIONS),
    ("pg_stat_get_wal_receiver", OTHER_SESSIONS),
    ("pg_stat_get_subscription", OTHER_SESSIONS),
    ("pg_stat_statements*", OTHER_SESSIONS),
    ("pg_lock_status", OTHER_SESSIONS),
    ("pg_blocking_pids", OTHER_SESSIONS),
    ("pg_safe_snapshot_blocking_pids", OTHER_SESSIONS),
    ("pg_prepared_xact", OTHER_SESSIONS),
    ("pg_get_backend_memory_contexts", OTHER_SESSIONS),
    ("pg_get_shmem_allocations*", OTHER_SESSIONS),
    ("pg_show_all_file_settings", READS_FILES),
    ("pg_hba_file_rules", READS_FILES),
    ("pg_ident_file_mappings", READS_FILES),
    // The schema's source: definitions of functions (with their bodies), views, rules,
    // triggers, indexes, constraints, statistics and partition keys, by OID, whatever
    // tables the caller's rules name (issue 13 item 10). psql's `\d` uses some of them:
    // name them in allow.functions for identities that browse the schema.
    ("pg_get_*def", SCHEMA_SOURCE),
    ("pg_get_expr", SCHEMA_SOURCE),
    ("pg_get_function_*", SCHEMA_SOURCE),
    ("pg_get_statisticsobjdef_*", SCHEMA_SOURCE),
    // Holding the connection or locks, which can stall other sessions and the gateway's pool.
    ("pg_sleep", BLOCKS),
    ("pg_sleep_for", BLOCKS),
    ("pg_sleep_until", BLOCKS),
    ("pg_advisory_*", BLOCKS),
    ("pg_try_advisory_*", BLOCKS),
];

const READS_FILES: &str = "reads files on the database server";
const WRITES_FILES: &str = "writes files on the database server";
const LARGE_OBJECTS: &str = "reads or writes large objects, which table rules do not cover";
const OTHER_SERVERS: &str = "connects to other database servers";
const SQL_FROM_STRING: &str =
    "runs SQL or reads tables named in a string, which table rules cannot see";
const SETTINGS: &str = "changes server or session settings";
const SIGNALS: &str = "cancels, terminates or signals other sessions";
const ADMINISTRATION: &str = "administers the server: WAL, backups, replication";
const OTHER_SESSIONS: &str =
    "shows other sessions' statements, locks or state, or the server's internals";
const SCHEMA_SOURCE: &str =
    "discloses the definitions of functions, views, rules, triggers or other schema objects";
const BLOCKS: &str = "sleeps or takes advisory locks, which can stall other sessions";

/// Whether `function` (as a statement wrote it, schema-qualified or not) is privileged, and
/// why: see [`PRIVILEGED_FUNCTIONS`].
pub fn privileged_function(function: &str) -> Option<&'static str> {
    let name = function.rsplit('.').next().unwrap_or(function);
    PRIVILEGED_FUNCTIONS.iter().find_map(|(pattern, why)| {
        let hit = match pattern.split_once('*') {
            None => name == *pattern,
            Some((prefix, suffix)) => {
                name.len() >= prefix.len() + suffix.len()
                    && name.starts_with(prefix)
                    && name.ends_with(suffix)
            }
        };
        hit.then_some(*why)
    })
}

/// The privileged functions among `functions` (as the statement wrote them), in their
/// order, each with why.
pub(super) fn flag(functions: &[String]) -> Vec<FlaggedFunction> {
    functions
        .iter()
        .filter_map(|function| {
            privileged_function(function).map(|why| FlaggedFunction {
                name: function.clone(),
                why: why.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_names_privileged_functions_whatever_their_schema() {
        assert_eq!(privileged_function("current_setting"), None);
        assert!(privileged_function("pg_try_advisory_xact_lock").is_some());
        assert!(privileged_function("pg_copy_logical_replication_slot").is_some());
        assert!(privileged_function("query_to_xml_and_xmlschema").is_some());
        assert!(privileged_function("pg_ls_waldir").is_some());
        // Issue 13 items 4 and 10: other sessions' statements and the schema's source.
        for f in [
            "pg_stat_get_activity",
            "pg_catalog.pg_stat_get_backend_activity",
            "pg_get_functiondef",
            "pg_get_viewdef",
            "pg_get_triggerdef",
            "pg_get_ruledef",
            "pg_get_indexdef",
            "pg_get_constraintdef",
            "pg_get_function_arguments",
            "pg_get_expr",
            "pg_lock_status",
        ] {
            assert!(privileged_function(f).is_some(), "{f}");
        }
        assert_eq!(privileged_function("pg_get_serial_sequence"), None);
    }

    #[test]
    fn the_classifier_reports_privileged_functions_with_why() {
        let statement = &super::super::classify(
            "SELECT lower(x), pg_catalog.pg_read_file('/etc/passwd'), public.dblink_exec('x') FROM t",
        )
        .unwrap()[0]
            .statement;
        assert_eq!(
            statement.privileged_functions,
            [
                FlaggedFunction {
                    name: "pg_catalog.pg_read_file".into(),
                    why: READS_FILES.into(),
                },
                FlaggedFunction {
                    name: "public.dblink_exec".into(),
                    why: OTHER_SERVERS.into(),
                },
            ]
        );
        assert_eq!(statement.default_schemas, super::super::DEFAULT_SCHEMAS);
    }
}
