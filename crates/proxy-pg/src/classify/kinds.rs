//! A statement's kind by its top node (`select`, `ddl`, `grant` ...).

use super::*;

/// Whether a statement can carry a credential: `CREATE/ALTER ROLE ... PASSWORD`, a foreign
/// server's or user mapping's `OPTIONS (password ...)`. The masking detectors look for
/// `password=`/`password:` and would miss `PASSWORD 'x'`.
pub(super) fn holds_credentials(node: &NodeEnum) -> bool {
    use NodeEnum as N;
    matches!(
        node,
        N::CreateRoleStmt(_)
            | N::AlterRoleStmt(_)
            | N::CreateForeignServerStmt(_)
            | N::AlterForeignServerStmt(_)
            | N::CreateUserMappingStmt(_)
            | N::AlterUserMappingStmt(_)
    )
}

/// `sql` with the contents of every string literal (`'...'`, `E'...'`, `$tag$...$tag$`)
/// replaced by `***`. Identifiers (`"..."`) are kept.
pub(super) fn without_string_literals(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find(['\'', '$', '"']) {
        let (before, at) = rest.split_at(i);
        out.push_str(before);
        let quote = at.as_bytes()[0];
        if quote == b'$' {
            // A dollar quote `$tag$` (tag: letters, digits, `_`), else a `$n` parameter.
            let tag_end = at[1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map(|n| n + 1);
            match tag_end.filter(|&n| {
                at[n..].starts_with('$') && !at[1..n].starts_with(|c: char| c.is_ascii_digit())
            }) {
                Some(n) => {
                    let tag = &at[..=n];
                    out.push_str(tag);
                    out.push_str("***");
                    match at[tag.len()..].find(tag) {
                        Some(close) => {
                            out.push_str(tag);
                            rest = &at[tag.len() + close + tag.len()..];
                        }
                        None => rest = "",
                    }
                }
                None => {
                    out.push('$');
                    rest = &at[1..];
                }
            }
            continue;
        }
        // `E'...'` reads backslash escapes; a plain literal only doubles its quote.
        let escapes = quote == b'\'' && out.ends_with(['E', 'e']);
        let mut end = None;
        let bytes = at.as_bytes();
        let mut j = 1;
        while j < bytes.len() {
            if escapes && bytes[j] == b'\\' {
                j += 2;
                continue;
            }
            if bytes[j] == quote {
                if bytes.get(j + 1) == Some(&quote) {
                    j += 2;
                    continue;
                }
                end = Some(j);
                break;
            }
            j += 1;
        }
        let close = end.unwrap_or(at.len());
        if quote == b'"' {
            out.push_str(&at[..(close + 1).min(at.len())]);
        } else {
            out.push_str("'***'");
        }
        rest = &at[(close + 1).min(at.len())..];
    }
    out.push_str(rest);
    out
}

/// The kind of a statement by its top node.
///
/// Choices beyond the obvious: role and privilege administration (`CREATE/ALTER/DROP ROLE`,
/// `ALTER ROLE ... SET`, `ALTER DEFAULT PRIVILEGES`, `REASSIGN/DROP OWNED`) is `grant`;
/// row-level-security policies, `ALTER SYSTEM` and `CREATE/DROP DATABASE` are `ddl`;
/// `REFRESH MATERIALIZED VIEW` is `maintenance` (it re-runs a query already defined, as
/// `VACUUM`/`REINDEX` redo work on existing objects); `SET CONSTRAINTS` is `set`;
/// `DEALLOCATE`/`DISCARD` are `session`; statements that only occur inside function bodies
/// (`RETURN`, PL/pgSQL assignment) and anything not a statement are `other`.
pub(super) fn kind_of(node: &NodeEnum) -> &'static str {
    use NodeEnum as N;
    match node {
        N::SelectStmt(_) => "select",
        N::InsertStmt(_) => "insert",
        N::UpdateStmt(_) => "update",
        N::DeleteStmt(_) => "delete",
        N::MergeStmt(_) => "merge",
        N::CopyStmt(_) => "copy",
        N::TruncateStmt(_) => "truncate",
        N::DoStmt(_) => "do",
        N::CallStmt(_) => "call",
        N::VariableSetStmt(_) | N::ConstraintsSetStmt(_) => "set",
        N::VariableShowStmt(_) => "show",
        N::TransactionStmt(_) => "transaction",
        N::ListenStmt(_) | N::UnlistenStmt(_) => "listen",
        N::NotifyStmt(_) => "notify",
        N::ExplainStmt(_) => "explain",
        N::PrepareStmt(_) => "prepare",
        N::ExecuteStmt(_) => "execute",
        N::DeallocateStmt(_) | N::DiscardStmt(_) => "session",
        N::LockStmt(_) => "lock",
        N::DeclareCursorStmt(_) | N::FetchStmt(_) | N::ClosePortalStmt(_) => "cursor",
        N::VacuumStmt(_)
        | N::ClusterStmt(_)
        | N::ReindexStmt(_)
        | N::CheckPointStmt(_)
        | N::LoadStmt(_)
        | N::RefreshMatViewStmt(_) => "maintenance",
        N::GrantStmt(_)
        | N::GrantRoleStmt(_)
        | N::CreateRoleStmt(_)
        | N::AlterRoleStmt(_)
        | N::AlterRoleSetStmt(_)
        | N::DropRoleStmt(_)
        | N::AlterDefaultPrivilegesStmt(_)
        | N::ReassignOwnedStmt(_)
        | N::DropOwnedStmt(_) => "grant",
        N::CreateSchemaStmt(_)
        | N::AlterTableStmt(_)
        | N::ReplicaIdentityStmt(_)
        | N::AlterCollationStmt(_)
        | N::AlterDomainStmt(_)
        | N::CreateStmt(_)
        | N::CreateTableSpaceStmt(_)
        | N::DropTableSpaceStmt(_)
        | N::AlterTableSpaceOptionsStmt(_)
        | N::AlterTableMoveAllStmt(_)
        | N::CreateExtensionStmt(_)
        | N::AlterExtensionStmt(_)
        | N::AlterExtensionContentsStmt(_)
        | N::CreateFdwStmt(_)
        | N::AlterFdwStmt(_)
        | N::CreateForeignServerStmt(_)
        | N::AlterForeignServerStmt(_)
        | N::CreateForeignTableStmt(_)
        | N::CreateUserMappingStmt(_)
        | N::AlterUserMappingStmt(_)
        | N::DropUserMappingStmt(_)
        | N::ImportForeignSchemaStmt(_)
        | N::CreatePolicyStmt(_)
        | N::AlterPolicyStmt(_)
        | N::CreateAmStmt(_)
        | N::CreateTrigStmt(_)
        | N::CreateEventTrigStmt(_)
        | N::AlterEventTrigStmt(_)
        | N::CreatePlangStmt(_)
        | N::CreateSeqStmt(_)
        | N::AlterSeqStmt(_)
        | N::DefineStmt(_)
        | N::CreateDomainStmt(_)
        | N::CreateOpClassStmt(_)
        | N::CreateOpFamilyStmt(_)
        | N::AlterOpFamilyStmt(_)
        | N::DropStmt(_)
        | N::CommentStmt(_)
        | N::SecLabelStmt(_)
        | N::IndexStmt(_)
        | N::CreateStatsStmt(_)
        | N::AlterStatsStmt(_)
        | N::CreateFunctionStmt(_)
        | N::AlterFunctionStmt(_)
        | N::RenameStmt(_)
        | N::AlterObjectDependsStmt(_)
        | N::AlterObjectSchemaStmt(_)
        | N::AlterOwnerStmt(_)
        | N::AlterOperatorStmt(_)
        | N::AlterTypeStmt(_)
        | N::RuleStmt(_)
        | N::CompositeTypeStmt(_)
        | N::CreateEnumStmt(_)
        | N::CreateRangeStmt(_)
        | N::AlterEnumStmt(_)
        | N::ViewStmt(_)
        | N::CreatedbStmt(_)
        | N::AlterDatabaseStmt(_)
        | N::AlterDatabaseRefreshCollStmt(_)
        | N::AlterDatabaseSetStmt(_)
        | N::DropdbStmt(_)
        | N::AlterSystemStmt(_)
        | N::CreateTableAsStmt(_)
        | N::CreateConversionStmt(_)
        | N::CreateCastStmt(_)
        | N::CreateTransformStmt(_)
        | N::AlterTsdictionaryStmt(_)
        | N::AlterTsconfigurationStmt(_)
        | N::CreatePublicationStmt(_)
        | N::AlterPublicationStmt(_)
        | N::CreateSubscriptionStmt(_)
        | N::AlterSubscriptionStmt(_)
        | N::DropSubscriptionStmt(_) => "ddl",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn statements_that_can_carry_a_credential_are_recorded_without_their_literals() {
        for sql in [
            "ALTER ROLE app PASSWORD 'S3cret-pw'",
            "CREATE USER bob WITH LOGIN PASSWORD 'S3cret-pw'",
            "CREATE USER MAPPING FOR app SERVER remote OPTIONS (user 'u', password 'S3cret-pw')",
            "ALTER SERVER remote OPTIONS (SET password 'S3cret-pw')",
        ] {
            let stmt = all(sql).remove(0);
            assert!(stmt.holds_credentials, "{sql}");
            assert!(
                !stmt.normalized.contains("S3cret-pw"),
                "{}",
                stmt.normalized
            );
        }
        assert_eq!(
            without_string_literals(
                r#"ALTER SERVER "s'x" OPTIONS (SET password 'a''b', host E'c\'d', port $q$e$q$) WHERE $1"#
            ),
            r#"ALTER SERVER "s'x" OPTIONS (SET password '***', host E'***', port $q$***$q$) WHERE $1"#
        );
        for sql in ["SELECT 'S3cret-pw'", "GRANT SELECT ON t TO app"] {
            assert!(!all(sql).remove(0).holds_credentials, "{sql}");
        }
    }

    #[test]
    fn kinds_of_top_level_statements() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT 1", &["select"]),
            ("VALUES (1)", &["select"]),
            ("TABLE t", &["select"]),
            ("SELECT * INTO new_t FROM t", &["select", "ddl"]),
            ("SELECT * FROM t FOR UPDATE", &["select", "lock"]),
            (
                "SELECT * FROM (SELECT * FROM t FOR SHARE) s",
                &["select", "lock"],
            ),
            ("INSERT INTO t VALUES (1)", &["insert"]),
            ("UPDATE t SET a = 1 WHERE b = 2", &["update"]),
            ("DELETE FROM t WHERE b = 2", &["delete"]),
            (
                "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
                &["merge"],
            ),
            ("COPY t FROM STDIN", &["copy"]),
            ("COPY (SELECT * FROM t) TO STDOUT", &["copy", "select"]),
            (
                "COPY (DELETE FROM t RETURNING *) TO STDOUT",
                &["copy", "delete"],
            ),
            ("CREATE TABLE t (a int)", &["ddl"]),
            ("ALTER TABLE t ADD COLUMN b int", &["ddl"]),
            ("DROP TABLE t", &["ddl"]),
            ("ALTER TABLE t RENAME TO u", &["ddl"]),
            ("COMMENT ON TABLE t IS 'x'", &["ddl"]),
            ("CREATE INDEX ON t (a)", &["ddl"]),
            ("CREATE VIEW v AS SELECT * FROM t", &["ddl"]),
            ("CREATE SEQUENCE s", &["ddl"]),
            (
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                &["ddl"],
            ),
            (
                "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
                &["ddl"],
            ),
            ("CREATE EXTENSION dblink", &["ddl"]),
            ("CREATE SCHEMA s", &["ddl"]),
            ("CREATE TYPE mood AS ENUM ('a')", &["ddl"]),
            ("CREATE DATABASE d", &["ddl"]),
            ("ALTER SYSTEM SET work_mem = '1MB'", &["ddl"]),
            ("CREATE TABLE x AS SELECT * FROM t", &["ddl", "select"]),
            (
                "CREATE MATERIALIZED VIEW mv AS SELECT * FROM t",
                &["ddl", "select"],
            ),
            ("ALTER TABLE t OWNER TO bob", &["ddl", "grant"]),
            ("ALTER FUNCTION f() OWNER TO bob", &["ddl", "grant"]),
            ("GRANT SELECT ON t TO bob", &["grant"]),
            ("REVOKE SELECT ON t FROM bob", &["grant"]),
            ("GRANT admin TO bob", &["grant"]),
            ("CREATE ROLE bob", &["grant"]),
            ("ALTER ROLE bob SUPERUSER", &["grant"]),
            ("ALTER ROLE bob SET search_path = x", &["grant"]),
            ("DROP ROLE bob", &["grant"]),
            (
                "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob",
                &["grant"],
            ),
            ("REASSIGN OWNED BY bob TO alice", &["grant"]),
            ("DROP OWNED BY bob", &["grant"]),
            ("TRUNCATE t", &["truncate"]),
            ("DO $$ BEGIN DELETE FROM t; END $$", &["do"]),
            ("CALL p()", &["call"]),
            ("SET search_path = x", &["set"]),
            ("SET LOCAL statement_timeout = 0", &["set"]),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", &["set"]),
            ("RESET work_mem", &["set"]),
            ("SET CONSTRAINTS ALL DEFERRED", &["set"]),
            ("SET ROLE admin", &["set", "grant"]),
            ("RESET ROLE", &["set", "grant"]),
            ("SET SESSION AUTHORIZATION bob", &["set", "grant"]),
            ("RESET ALL", &["set", "grant"]),
            ("SHOW work_mem", &["show"]),
            ("BEGIN", &["transaction"]),
            ("COMMIT", &["transaction"]),
            ("ROLLBACK TO SAVEPOINT s", &["transaction"]),
            ("LISTEN c", &["listen"]),
            ("UNLISTEN *", &["listen"]),
            ("NOTIFY c, 'x'", &["notify"]),
            ("EXPLAIN SELECT * FROM t", &["explain", "select"]),
            (
                "EXPLAIN ANALYZE DELETE FROM t WHERE a = 1",
                &["explain", "delete"],
            ),
            (
                "EXPLAIN CREATE TABLE x AS SELECT 1",
                &["explain", "ddl", "select"],
            ),
            ("PREPARE p AS UPDATE t SET a = $1", &["prepare", "update"]),
            ("PREPARE p AS SELECT * FROM t", &["prepare", "select"]),
            ("EXECUTE p(1)", &["execute"]),
            ("DEALLOCATE p", &["session"]),
            ("DISCARD PLANS", &["session"]),
            ("DISCARD ALL", &["session", "grant"]),
            ("VACUUM t", &["maintenance"]),
            ("ANALYZE t", &["maintenance"]),
            ("CLUSTER t", &["maintenance"]),
            ("REINDEX TABLE t", &["maintenance"]),
            ("CHECKPOINT", &["maintenance"]),
            ("LOAD 'auto_explain'", &["maintenance"]),
            ("REFRESH MATERIALIZED VIEW mv", &["maintenance"]),
            ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", &["lock"]),
            (
                "DECLARE c CURSOR FOR SELECT * FROM t",
                &["cursor", "select"],
            ),
            ("FETCH 10 FROM c", &["cursor"]),
            ("CLOSE c", &["cursor"]),
        ];
        for (sql, want) in cases {
            let s = one(sql);
            assert_eq!(s.kinds, *want, "{sql}");
            assert_eq!(s.kind, want[0], "{sql}");
        }
    }

    #[test]
    fn nested_data_modification_is_a_kind() {
        assert_eq!(
            kinds("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"),
            ["select", "delete"]
        );
        assert_eq!(
            kinds(
                "WITH u AS (UPDATE a SET x = 1 WHERE y RETURNING *), i AS (INSERT INTO b SELECT * FROM u RETURNING *) SELECT 1"
            ),
            ["select", "update", "insert"]
        );
        assert_eq!(kinds("INSERT INTO t SELECT * FROM u"), ["insert"]);
        assert_eq!(
            kinds("WITH d AS (DELETE FROM t RETURNING *) INSERT INTO arch SELECT * FROM d"),
            ["insert", "delete"]
        );
        assert_eq!(
            kinds("CREATE TABLE x AS WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"),
            ["ddl", "select", "delete"]
        );

        let v = all("SELECT 1; WITH d AS (DELETE FROM t RETURNING id) SELECT count(*) FROM d");
        assert_eq!(v[0].statement.kinds, ["select"]);
        assert_eq!(v[1].statement.kinds, ["select", "delete"]);
        assert_eq!(v[1].statement.tables, ["t"]);
        assert!(v[1].statement.no_where);
    }

    #[test]
    fn do_bodies_are_opaque() {
        let s = one("DO $$ BEGIN DELETE FROM t; END $$");
        assert_eq!(s.kinds, ["do"]);
        assert!(s.tables.is_empty() && !s.no_where);
        let s = one("DO LANGUAGE plpgsql $body$ BEGIN PERFORM 1; END $body$");
        assert_eq!(s.kind, "do");
    }
}
