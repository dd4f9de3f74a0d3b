//! SQL rules: how a statement, as the database adapter's classifier reported it, fits a
//! rule's `allow`/`deny`/`hold` sub-table. Only the reported facts are matched (kinds,
//! tables, functions, privileged and flagged functions, a missing WHERE, the schemas a name
//! may leave out): what they mean for a given database is the adapter's knowledge.

use portcullis_config::{STATEMENT_KINDS, SqlMatch};
use portcullis_model::{DefaultSchemas, SqlStatement};

use crate::globs::Globs;

/// A compiled SQL sub-table ([`SqlMatch`]); patterns lower-cased.
#[derive(Debug, Default)]
pub(crate) struct SqlRule {
    /// Bit `1 << i` for each `statements` entry `STATEMENT_KINDS[i]`; 0 means any kind.
    statements: u32,
    tables: Globs,
    functions: Globs,
    without_where: bool,
}

/// The bit of a statement kind; a kind this version does not know counts as `other`.
fn statement_bit(kind: &str) -> u32 {
    let i = STATEMENT_KINDS
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(STATEMENT_KINDS.len() - 1);
    1 << i
}

/// How an SQL statement fits a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fit<'a> {
    Yes,
    No,
    /// An allow rule would cover the statement but for this privileged or flagged function
    /// (and why it needs naming).
    Privileged(&'a str, &'a str),
    /// An allow rule would cover the statement but for its UPDATE/DELETE without WHERE.
    NoWhere,
}

impl SqlRule {
    pub(crate) fn compile(m: &SqlMatch) -> Result<SqlRule, globset::Error> {
        let lower = |list: &[String]| -> Vec<String> {
            list.iter().map(|p| p.to_ascii_lowercase()).collect()
        };
        Ok(SqlRule {
            statements: m
                .statements
                .iter()
                .map(|s| statement_bit(&s.to_ascii_lowercase()))
                .fold(0, |a, b| a | b),
            tables: Globs::build(&lower(&m.tables))?,
            functions: Globs::build(&lower(&m.functions))?,
            without_where: m.without_where,
        })
    }

    fn kinds(stmt: &SqlStatement) -> impl Iterator<Item = &String> {
        std::iter::once(&stmt.kind).chain(&stmt.kinds)
    }

    /// `schema.name` and `name` are the same table for the statement's default schemas.
    fn table(&self, stmt: &SqlStatement, table: &str) -> bool {
        DefaultSchemas::matches(stmt.default_schemas.tables, table, |n| {
            self.tables.matches(n)
        })
    }

    fn function(&self, stmt: &SqlStatement, function: &str) -> bool {
        DefaultSchemas::matches(stmt.default_schemas.functions, function, |n| {
            self.functions.matches(n)
        })
    }

    /// For `allow`: every kind, every table and every privileged or flagged function is
    /// covered, and a statement without WHERE is allowed as such.
    pub(crate) fn allows<'a>(&self, stmt: &'a SqlStatement) -> Fit<'a> {
        if self.statements != 0
            && !Self::kinds(stmt).all(|k| self.statements & statement_bit(k) != 0)
        {
            return Fit::No;
        }
        if !self.tables.is_empty() && !stmt.tables.iter().all(|t| self.table(stmt, t)) {
            return Fit::No;
        }
        // Privileged functions (the adapter's catalogue of what reads files, reaches other
        // servers ...) and functions the server's catalog shows may write or are not the
        // server's own (the parser cannot see what they do) need naming.
        for function in stmt
            .privileged_functions
            .iter()
            .chain(&stmt.flagged_functions)
        {
            if !self.function(stmt, &function.name) {
                return Fit::Privileged(&function.name, &function.why);
            }
        }
        if stmt.no_where && !self.without_where {
            return Fit::NoWhere;
        }
        Fit::Yes
    }

    /// For `deny` and `hold`: the statement meets every list the rule has.
    pub(crate) fn matches(&self, stmt: &SqlStatement) -> bool {
        (self.statements == 0 || Self::kinds(stmt).any(|k| self.statements & statement_bit(k) != 0))
            && (self.tables.is_empty() || stmt.tables.iter().any(|t| self.table(stmt, t)))
            && (self.functions.is_empty() || stmt.functions.iter().any(|f| self.function(stmt, f)))
            && (!self.without_where || stmt.no_where)
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    #[test]
    fn sql_allow_covers_every_kind_and_table() {
        let p = pg_policy(READS);
        let one = stmt(&["select"], &["customers"], &[], false);
        let v = p.decide(&agent(), &sql(&one));
        assert_eq!(label(&v), ("allow", "reads"));
        assert_eq!(
            v.decision,
            Decision::Allow {
                mask: Some("pii".into())
            }
        );
        let join = stmt(&["select"], &["customers", "orders"], &[], false);
        assert!(p.decide(&agent(), &sql(&join)).is_allow());
        // Every table must be covered: one more table and the rule does not apply.
        let leak = stmt(&["select"], &["customers", "secrets"], &[], false);
        let v = p.decide(&agent(), &sql(&leak));
        assert_eq!(label(&v), ("deny", "default-deny"));
        assert_eq!(
            reason(&v),
            "no rule allows select on db (tables: customers, secrets) for bot"
        );
        // Nothing allows a delete.
        let delete = stmt(&["delete"], &["customers"], &[], false);
        assert_eq!(
            reason(&p.decide(&agent(), &sql(&delete))),
            "no rule allows delete on db (tables: customers) for bot"
        );
        // A data-modifying CTE performs a delete too: a select-only rule does not cover it.
        let cte = stmt(&["select", "delete"], &["customers"], &[], false);
        let v = p.decide(&agent(), &sql(&cte));
        assert_eq!(
            reason(&v),
            "no rule allows select (also delete) on db (tables: customers) for bot"
        );
        // The rule is about the database only, and only for its callers.
        assert!(!p.decide(&agent(), &call("customers", None)).is_allow());
        let outsider = who("eve", IdentityKind::Agent, &[]);
        assert!(!p.decide(&outsider, &sql(&one)).is_allow());
    }

    #[test]
    fn sql_deny_and_hold_match_any() {
        let p = pg_policy(&format!(
            "{READS}[[rules]]\nname = \"no secrets\"\ntarget = \"db\"\ndeny.tables = [\"secrets\", \"customers\"]\nreason = \"customers are off limits today\"\n\
             [[rules]]\nname = \"writes\"\ntarget = \"db\"\nhold.statements = [\"update\", \"delete\"]\napprovers = [\"dba\"]\n\
             [[rules]]\nname = \"all writes\"\ntarget = \"db\"\nallow.statements = [\"update\", \"delete\", \"insert\"]\n"
        ));
        let read = stmt(&["select"], &["customers"], &[], false);
        let v = p.decide(&agent(), &sql(&read));
        assert_eq!(label(&v), ("deny", "no secrets"));
        assert_eq!(reason(&v), "customers are off limits today");
        let update = stmt(&["update"], &["orders"], &[], false);
        let v = p.decide(&agent(), &sql(&update));
        assert_eq!(label(&v), ("hold", "writes"));
        let Decision::Hold(requirement) = &v.decision else {
            panic!()
        };
        assert_eq!(requirement.approvers, ["dba"]);
        // A CTE that deletes is held like a delete.
        let cte = stmt(&["select", "delete"], &["orders"], &[], false);
        assert_eq!(label(&p.decide(&agent(), &sql(&cte))), ("hold", "writes"));
        let insert = stmt(&["insert"], &["orders"], &[], false);
        assert_eq!(
            label(&p.decide(&agent(), &sql(&insert))),
            ("allow", "all writes")
        );
    }

    #[test]
    fn sql_public_schema_equivalence() {
        let p = pg_policy(
            "[[rules]]\nname = \"plain\"\ntarget = \"db\"\nallow.tables = [\"customers\"]\n\
             [[rules]]\nname = \"qualified\"\ntarget = \"db\"\nallow.tables = [\"public.orders\", \"SALES.*\"]\n",
        );
        let allowed = |table: &str| {
            let s = stmt(&["select"], &[table], &[], false);
            p.decide(&agent(), &sql(&s)).rule_label().to_string()
        };
        assert_eq!(allowed("customers"), "plain");
        assert_eq!(allowed("public.customers"), "plain");
        assert_eq!(allowed("orders"), "qualified");
        assert_eq!(allowed("public.orders"), "qualified");
        assert_eq!(allowed("sales.leads"), "qualified");
        // Another schema's table of the same name is another table.
        assert_eq!(allowed("other.customers"), "default-deny");
        assert_eq!(allowed("leads"), "default-deny");
    }

    #[test]
    fn privileged_functions_need_allow_functions() {
        let p = pg_policy(
            "[[rules]]\nname = \"reads\"\ntarget = \"db\"\nallow.statements = [\"select\"]\n\
             [[rules]]\nname = \"sleepy\"\ntarget = \"db\"\nwho.groups = [\"ops\"]\nallow.statements = [\"select\"]\nallow.functions = [\"pg_sleep\", \"pg_read_*\"]\n",
        );
        // Ordinary functions need no listing.
        let lower = stmt(&["select"], &["customers"], &["lower", "now"], false);
        assert!(p.decide(&agent(), &sql(&lower)).is_allow());
        for function in ["pg_read_file", "pg_catalog.pg_read_file"] {
            let read = stmt(&["select"], &[], &[function], false);
            let v = p.decide(&agent(), &sql(&read));
            assert_eq!(label(&v), ("deny", "default-deny"));
            assert_eq!(
                reason(&v),
                format!(
                    "select on db for bot calls {function}, a privileged function (reads files on the database server): no rule allows it (a rule's allow.functions must name it)"
                )
            );
            let ops = who("op", IdentityKind::Human, &["ops"]);
            assert_eq!(label(&p.decide(&ops, &sql(&read))), ("allow", "sleepy"));
        }
        let ops = who("op", IdentityKind::Human, &["ops"]);
        let dblink = stmt(&["select"], &[], &["public.dblink_exec", "pg_sleep"], false);
        let v = p.decide(&ops, &sql(&dblink));
        assert!(
            reason(&v).contains("calls public.dblink_exec, a privileged function (connects to other database servers)"),
            "{v:?}"
        );
    }

    #[test]
    fn no_where_needs_allow_without_where() {
        let p = pg_policy(
            "[[rules]]\nname = \"writes\"\ntarget = \"db\"\nallow.statements = [\"update\", \"delete\"]\n\
             [[rules]]\nname = \"purge\"\ntarget = \"db\"\nwho.groups = [\"ops\"]\nallow.statements = [\"delete\"]\nallow.tables = [\"sessions\"]\nallow.without_where = true\n",
        );
        let update = stmt(&["update"], &["customers"], &[], false);
        assert!(p.decide(&agent(), &sql(&update)).is_allow());
        let all = stmt(&["update"], &["customers"], &[], true);
        let v = p.decide(&agent(), &sql(&all));
        assert_eq!(
            reason(&v),
            "update on db (tables: customers) for bot: UPDATE/DELETE without WHERE touches every row: no rule allows it (a rule needs allow.without_where = true)"
        );
        let ops = who("op", IdentityKind::Human, &["ops"]);
        let purge = stmt(&["delete"], &["sessions"], &[], true);
        assert_eq!(label(&p.decide(&ops, &sql(&purge))), ("allow", "purge"));
        assert!(!p.decide(&agent(), &sql(&purge)).is_allow());
    }

    #[test]
    fn whole_target_rules_and_sql() {
        let p = pg_policy(
            "[[rules]]\nname = \"dba\"\ntarget = \"db\"\nwho.groups = [\"agents\"]\n\
             [[rules]]\nname = \"no truncate\"\ntarget = \"*\"\ndeny.statements = [\"truncate\"]\n\
             [[rules]]\nname = \"mcp tools\"\ntarget = \"*\"\ntools = [\"*\"]\n",
        );
        let any = stmt(&["ddl"], &["customers"], &["lower"], false);
        assert_eq!(label(&p.decide(&agent(), &sql(&any))), ("allow", "dba"));
        let truncate = stmt(&["truncate"], &["customers"], &[], false);
        assert_eq!(
            label(&p.decide(&agent(), &sql(&truncate))),
            ("deny", "no truncate")
        );
        // A whole-target allow is an allow with empty lists: privileged functions and
        // statements without WHERE still need saying.
        let read = stmt(&["select"], &[], &["pg_read_file"], false);
        assert!(!p.decide(&agent(), &sql(&read)).is_allow());
        let all = stmt(&["delete"], &["customers"], &[], true);
        assert!(!p.decide(&agent(), &sql(&all)).is_allow());
        // A tools rule on `*` says nothing about SQL; an SQL rule nothing about MCP.
        let outsider = who("eve", IdentityKind::Agent, &[]);
        let select = stmt(&["select"], &[], &[], false);
        assert!(!p.decide(&outsider, &sql(&select)).is_allow());
        assert!(
            p.decide(&outsider, &act("billing", McpKind::Tool, "x", None))
                .is_allow()
        );
        // A whole-target deny stops every statement.
        let p = pg_policy(
            "[[rules]]\nname = \"all\"\ntarget = \"db\"\nallow.statements = [\"select\"]\n\
             [[rules]]\nname = \"closed\"\ntarget = \"db\"\ndecision = \"deny\"\nwho.kinds = [\"agent\"]\n",
        );
        assert_eq!(
            label(&p.decide(&agent(), &sql(&select))),
            ("deny", "closed")
        );
    }
}
