//! What a walk over one statement gathers: its kinds in the order of the text, the tables
//! it reads or writes (a CTE's name is not a table, unless a qualified name shadows it),
//! the functions it calls, and whether an UPDATE or DELETE lacks a WHERE.

use super::*;

/// What a walk over one statement's tree gathers.
#[derive(Default)]
pub(super) struct Collector<'t> {
    pub(super) kinds: Vec<&'static str>,
    pub(super) tables: Vec<String>,
    pub(super) functions: Vec<String>,
    pub(super) no_where: bool,
    pub(super) outputs: Outputs,
    /// Inside an output expression (a `ResTarget`'s value) or a FROM item, this many levels
    /// deep: column references there can reach the result.
    pub(super) in_output: u32,
    /// Inside a clause whose values choose, order or group rows (see
    /// [`Outputs::filtered`]), this many levels deep; it wins over `in_output`.
    pub(super) in_filter: u32,
    /// `x.*` references inside such clauses.
    pub(super) filter_star_refs: u32,
    /// `x.*` references inside expressions (whole rows).
    pub(super) star_refs: u32,
    /// One-part column references (`c`), and relation names and aliases: a one-part
    /// reference naming a relation is a whole-row reference.
    pub(super) single_refs: Vec<String>,
    pub(super) relations: Vec<String>,
    /// CTE names visible at the current point of the walk, innermost last.
    pub(super) ctes: Vec<&'t str>,
}

impl<'t> Collector<'t> {
    pub(super) fn kind(&mut self, kind: &'static str) {
        if !self.kinds.contains(&kind) {
            self.kinds.push(kind);
        }
    }

    /// The kinds of the statement a wrapper (EXPLAIN, PREPARE, DECLARE, CREATE TABLE AS,
    /// COPY (query)) carries: it runs it, or (EXPLAIN without ANALYZE, PREPARE) describes
    /// what will run, and refusing on either is the safe reading.
    pub(super) fn inner(&mut self, query: Option<&Node>) {
        if let Some(node) = query.and_then(|q| q.node.as_ref()) {
            self.kind(kind_of(node));
        }
    }

    /// A relation in a position where a CTE of the same name would take its place.
    pub(super) fn relation(&mut self, rv: &protobuf::RangeVar) {
        let shadowed = rv.schemaname.is_empty()
            && rv.catalogname.is_empty()
            && self.ctes.iter().any(|cte| *cte == rv.relname);
        if !shadowed {
            self.table(rv);
        }
    }

    /// A relation that is always a real table: the target of INSERT/UPDATE/DELETE/MERGE or
    /// SELECT INTO, which a CTE cannot stand in for.
    pub(super) fn table(&mut self, rv: &protobuf::RangeVar) {
        let mut name = String::with_capacity(
            rv.catalogname.len() + rv.schemaname.len() + rv.relname.len() + 2,
        );
        for part in [&rv.catalogname, &rv.schemaname] {
            if !part.is_empty() {
                name.push_str(part);
                name.push('.');
            }
        }
        name.push_str(&rv.relname);
        self.tables.push(name);
    }

    /// A qualified name given as a list of `String` nodes, as DROP and COMMENT give it.
    pub(super) fn table_from_names(&mut self, names: &[Node], drop_last: bool) {
        let names = if drop_last {
            names.split_last().map_or(names, |(_, rest)| rest)
        } else {
            names
        };
        let name = dotted(names);
        if !name.is_empty() {
            self.tables.push(name);
        }
    }

    /// Facts a node carries about itself, noted before its children are walked so that
    /// kinds appear in the order of the text.
    pub(super) fn note(&mut self, node: &NodeEnum) {
        use NodeEnum as N;
        self.note_outputs(node);
        match node {
            N::SelectStmt(s) => {
                if s.into_clause.is_some() {
                    self.kind("ddl");
                }
                if !s.locking_clause.is_empty() {
                    self.kind("lock");
                }
            }
            N::InsertStmt(_) => self.kind("insert"),
            N::UpdateStmt(s) => {
                self.kind("update");
                self.no_where |= s.where_clause.is_none();
            }
            N::DeleteStmt(s) => {
                self.kind("delete");
                self.no_where |= s.where_clause.is_none();
            }
            N::MergeStmt(_) => self.kind("merge"),
            N::ExplainStmt(s) => self.inner(s.query.as_deref()),
            N::PrepareStmt(s) => self.inner(s.query.as_deref()),
            N::DeclareCursorStmt(s) => self.inner(s.query.as_deref()),
            N::CreateTableAsStmt(s) => self.inner(s.query.as_deref()),
            N::CopyStmt(s) => self.inner(s.query.as_deref()),
            // Changing an owner, the session's role, or resetting it to the login role all
            // change whose privileges apply, which policy treats like granting.
            N::AlterOwnerStmt(_) => self.kind("grant"),
            N::AlterTableCmd(c) if c.subtype == AlterTableType::AtChangeOwner as i32 => {
                self.kind("grant")
            }
            N::VariableSetStmt(s)
                if s.kind == VariableSetKind::VarResetAll as i32
                    || s.name.eq_ignore_ascii_case("role")
                    || s.name.eq_ignore_ascii_case("session_authorization") =>
            {
                self.kind("grant")
            }
            N::DiscardStmt(d) if d.target == DiscardMode::DiscardAll as i32 => self.kind("grant"),
            N::DropStmt(s) if is_table_like(s.remove_type) => {
                for object in &s.objects {
                    if let Some(N::List(list)) = &object.node {
                        self.table_from_names(&list.items, false);
                    }
                }
            }
            N::CommentStmt(s)
                if is_table_like(s.objtype) || s.objtype == ObjectType::ObjectColumn as i32 =>
            {
                if let Some(N::List(list)) = s.object.as_ref().and_then(|o| o.node.as_ref()) {
                    self.table_from_names(
                        &list.items,
                        s.objtype == ObjectType::ObjectColumn as i32,
                    );
                }
            }
            _ => {}
        }
    }
}

impl<'t> Collector<'t> {
    /// Walks what `walk` visits as a clause that chooses, orders or groups rows.
    pub(super) fn filtering(&mut self, walk: impl FnOnce(&mut Self)) {
        self.in_filter += 1;
        walk(self);
        self.in_filter -= 1;
    }
}

pub(super) fn is_table_like(object_type: i32) -> bool {
    [
        ObjectType::ObjectTable,
        ObjectType::ObjectView,
        ObjectType::ObjectMatview,
        ObjectType::ObjectForeignTable,
    ]
    .iter()
    .any(|t| *t as i32 == object_type)
}

/// `a.b.c` from a list of `String` nodes.
pub(super) fn dotted(names: &[Node]) -> String {
    let mut out = String::new();
    for name in names {
        if let Some(NodeEnum::String(s)) = &name.node {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&s.sval);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn tables_through_every_clause() {
        let cases: &[(&str, &[&str])] = &[
            (
                "SELECT * FROM public.customers c JOIN orders o ON o.cid = c.id",
                &["orders", "public.customers"],
            ),
            (
                "SELECT * FROM a, (SELECT * FROM b) s WHERE x IN (SELECT y FROM c) AND EXISTS (SELECT 1 FROM d)",
                &["a", "b", "c", "d"],
            ),
            (
                "SELECT (SELECT max(x) FROM a) FROM b LEFT JOIN c USING (id) ORDER BY (SELECT 1 FROM d LIMIT 1)",
                &["a", "b", "c", "d"],
            ),
            (
                "SELECT * FROM t LIMIT (SELECT count(*) FROM u)",
                &["t", "u"],
            ),
            (
                "SELECT * FROM a UNION SELECT * FROM b EXCEPT SELECT * FROM c",
                &["a", "b", "c"],
            ),
            (
                "SELECT * FROM \"Mixed\".\"Case\", UPPER_T",
                &["Mixed.Case", "upper_t"],
            ),
            ("SELECT * FROM db.s.t", &["db.s.t"]),
            ("INSERT INTO t (a) SELECT a FROM u", &["t", "u"]),
            (
                "INSERT INTO t VALUES (1) RETURNING (SELECT 1 FROM r)",
                &["r", "t"],
            ),
            (
                "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = (SELECT b FROM u)",
                &["t", "u"],
            ),
            ("UPDATE t SET a = u.a FROM u WHERE t.id = u.id", &["t", "u"]),
            ("DELETE FROM t USING u WHERE t.id = u.id", &["t", "u"]),
            (
                "MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id)",
                &["s", "t"],
            ),
            ("COPY s.t (a, b) FROM STDIN", &["s.t"]),
            (
                "COPY (SELECT * FROM t JOIN u USING (id)) TO STDOUT",
                &["t", "u"],
            ),
            ("TRUNCATE a, s.b", &["a", "s.b"]),
            ("LOCK TABLE a, b", &["a", "b"]),
            ("CREATE TABLE t (a int REFERENCES u (id))", &["t", "u"]),
            ("ALTER TABLE t ADD COLUMN b int", &["t"]),
            ("DROP TABLE a, s.b", &["a", "s.b"]),
            ("DROP VIEW v", &["v"]),
            ("DROP FUNCTION f()", &[]),
            ("COMMENT ON TABLE s.t IS 'x'", &["s.t"]),
            ("COMMENT ON COLUMN s.t.c IS 'x'", &["s.t"]),
            ("CREATE INDEX i ON t (lower(a))", &["t"]),
            ("CREATE VIEW v AS SELECT * FROM t", &["t", "v"]),
            ("CREATE TABLE x AS SELECT * FROM t", &["t", "x"]),
            ("SELECT * INTO x FROM t", &["t", "x"]),
            ("GRANT SELECT ON s.t TO bob", &["s.t"]),
            ("VACUUM t", &["t"]),
            ("EXPLAIN ANALYZE SELECT * FROM t", &["t"]),
            ("DECLARE c CURSOR FOR SELECT * FROM t", &["t"]),
            ("PREPARE p AS DELETE FROM t WHERE id = $1", &["t"]),
        ];
        for (sql, want) in cases {
            assert_eq!(tables(sql), *want, "{sql}");
        }
    }

    #[test]
    fn cte_names_are_not_tables_but_shadowed_tables_are() {
        assert_eq!(tables("WITH x AS (SELECT * FROM t) SELECT * FROM x"), ["t"]);
        assert_eq!(
            tables("WITH x AS (SELECT 1), y AS (SELECT * FROM x) SELECT * FROM y"),
            Vec::<String>::new()
        );
        // A plain CTE does not see itself: the inner `f` is the table.
        assert_eq!(tables("WITH f AS (SELECT * FROM f) SELECT * FROM f"), ["f"]);
        assert_eq!(
            tables(
                "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r) SELECT * FROM r"
            ),
            Vec::<String>::new()
        );
        // A schema-qualified name never refers to a CTE.
        assert_eq!(
            tables("WITH x AS (SELECT 1) SELECT * FROM x, public.x"),
            ["public.x"]
        );
        // A CTE's scope ends with its statement.
        assert_eq!(
            tables("SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s, x"),
            ["x"]
        );
        // The target of a data-modifying statement is always a table.
        assert_eq!(
            tables("WITH t AS (SELECT 1) INSERT INTO t SELECT * FROM t"),
            ["t"]
        );
        assert_eq!(
            tables("WITH t AS (SELECT 1 AS id) DELETE FROM t WHERE id IN (SELECT id FROM t)"),
            ["t"]
        );
    }

    #[test]
    fn no_where_detects_only_a_missing_where() {
        assert!(one("UPDATE t SET a = 1").no_where);
        assert!(one("DELETE FROM t").no_where);
        assert!(!one("DELETE FROM t WHERE id = 1").no_where);
        assert!(
            !one("DELETE FROM t WHERE true").no_where,
            "only the absence of WHERE is detected"
        );
        assert!(!one("UPDATE t SET a = 1 WHERE CURRENT OF c").no_where);
        assert!(!one("DELETE FROM t WHERE CURRENT OF c").no_where);
        assert!(one("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d").no_where);
        assert!(one("EXPLAIN ANALYZE UPDATE t SET a = 1").no_where);
        assert!(!one("SELECT * FROM t").no_where);
        assert!(!one("INSERT INTO t VALUES (1)").no_where);
        assert!(!one("TRUNCATE t").no_where, "truncate is a kind of its own");
    }
}
