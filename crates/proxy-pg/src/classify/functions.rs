//! Function calls: those that act as a statement kind, those that return rows, and the
//! names recorded for policy.

use super::*;

/// Built-in functions that do what a statement kind does, decided as that kind too:
/// `pg_notify` sends a notification as `NOTIFY` does, `current_setting` and
/// `pg_show_all_settings` read settings as `SHOW` does (custom settings such as
/// `app.jwt_secret` are a common place for secrets). Matched on the name whatever its
/// schema: a look-alike in another schema gets the kind too, which errs on the side of
/// refusing (and the catalog check flags it as user-defined anyway).
pub(super) const FUNCTION_KINDS: &[(&str, &str)] = &[
    ("pg_notify", "notify"),
    ("current_setting", "show"),
    ("pg_show_all_settings", "show"),
];

impl Walk for protobuf::FuncCall {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        let name = dotted(&self.funcname);
        let bare = name.rsplit('.').next().unwrap_or(&name);
        if let Some((_, kind)) = FUNCTION_KINDS.iter().find(|(f, _)| *f == bare) {
            c.kind(kind);
        }
        c.functions.push(name);
        // How many rows a set-returning function gives depends on its arguments
        // (`generate_series(1, ascii(substr(x, 1, 1)))`), as does what `count(DISTINCT x)`
        // counts: their arguments choose rows. `unnest(ARRAY[x, y])` gives one row per
        // element whatever the values, and stays an output.
        if self.agg_distinct || (returns_rows(self) && !unnests_an_array(self)) {
            c.filtering(|c| self.args.walk(c));
        } else {
            self.args.walk(c);
        }
        // `count(*) FILTER (WHERE ...)`, `string_agg(x, ',' ORDER BY y)`, `OVER (ORDER BY
        // y)`: these choose and order rows.
        c.filtering(|c| {
            self.agg_order.walk(c);
            self.agg_filter.walk(c);
            self.over.walk(c);
        });
    }
}

/// Built-in set-returning functions: the number of rows they return depends on their
/// arguments. A user's set-returning function is not known here (that takes the catalog);
/// see docs/postgres.md, "Not yet".
pub(super) const SET_RETURNING: &[&str] = &[
    "generate_series",
    "generate_subscripts",
    "unnest",
    "regexp_matches",
    "regexp_split_to_table",
    "string_to_table",
    "json_array_elements",
    "json_array_elements_text",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "json_each",
    "json_each_text",
    "jsonb_each",
    "jsonb_each_text",
    "json_object_keys",
    "jsonb_object_keys",
    "json_populate_recordset",
    "jsonb_populate_recordset",
    "json_to_recordset",
    "jsonb_to_recordset",
    "jsonb_path_query",
    "jsonb_path_query_tz",
    "ts_stat",
    "ts_debug",
];

pub(super) fn returns_rows(f: &protobuf::FuncCall) -> bool {
    match f.funcname.last().and_then(|n| n.node.as_ref()) {
        Some(NodeEnum::String(s)) => SET_RETURNING.contains(&s.sval.to_ascii_lowercase().as_str()),
        _ => false,
    }
}

/// `unnest(ARRAY[...])`: one row per element written, whatever their values.
pub(super) fn unnests_an_array(f: &protobuf::FuncCall) -> bool {
    matches!(
        f.funcname.last().and_then(|n| n.node.as_ref()),
        Some(NodeEnum::String(s)) if s.sval.eq_ignore_ascii_case("unnest")
    ) && !f.args.is_empty()
        && f.args
            .iter()
            .all(|a| matches!(a.node, Some(NodeEnum::AArrayExpr(_))))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn functions_anywhere() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT pg_read_file('/etc/passwd')", &["pg_read_file"]),
            (
                "SELECT pg_catalog.pg_read_file('/etc/passwd')",
                &["pg_catalog.pg_read_file"],
            ),
            (
                "SELECT * FROM dblink('x', 'select 1') AS t(a int)",
                &["dblink"],
            ),
            ("SELECT lo_export(1, '/tmp/x')", &["lo_export"]),
            ("CALL p()", &["p"]),
            ("CALL s.p(f(1))", &["f", "s.p"]),
            ("SELECT count(*) FROM t", &["count"]),
            (
                "SELECT ARRAY[pg_read_file('x')], (pg_ls_dir('y'))[1]",
                &["pg_ls_dir", "pg_read_file"],
            ),
            (
                "SELECT 1 WHERE a = lower(b) OR c IN (SELECT upper(d) FROM e)",
                &["lower", "upper"],
            ),
            (
                "INSERT INTO t VALUES (lo_import('/etc/passwd'))",
                &["lo_import"],
            ),
            ("INSERT INTO t SELECT 1 RETURNING now()", &["now"]),
            ("UPDATE t SET a = f(1) WHERE g(b)", &["f", "g"]),
            (
                "CREATE TABLE t (a text DEFAULT pg_read_file('x'))",
                &["pg_read_file"],
            ),
            (
                "SELECT sum(a) FILTER (WHERE f(a)) OVER (PARTITION BY g(b)) FROM t",
                &["f", "g", "sum"],
            ),
            (
                "SELECT CASE WHEN f(1) THEN g(2) ELSE h(3) END",
                &["f", "g", "h"],
            ),
            (
                "SELECT \"Quoted\"(1), UPPERCASE(2)",
                &["Quoted", "uppercase"],
            ),
            (
                "SELECT * FROM t ORDER BY random() LIMIT f(1)",
                &["f", "random"],
            ),
            ("SELECT f(x => g(1))", &["f", "g"]),
            ("SELECT 1::int, CAST(f(2) AS text)", &["f"]),
            (
                "SELECT * FROM ROWS FROM (generate_series(1, 2), f(3))",
                &["f", "generate_series"],
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(functions(sql), *want, "{sql}");
        }
    }

    #[test]
    fn functions_that_act_as_statements_carry_their_kind() {
        assert_eq!(kinds("SELECT pg_notify('c', 'x')"), ["select", "notify"]);
        assert_eq!(
            kinds("SELECT pg_catalog.pg_notify('c', 'x') FROM t"),
            ["select", "notify"]
        );
        assert_eq!(
            kinds("SELECT 1 WHERE current_setting('app.secret') > ''"),
            ["select", "show"]
        );
        assert_eq!(
            kinds("SELECT * FROM pg_show_all_settings()"),
            ["select", "show"]
        );
        assert_eq!(kinds("SELECT lower('x')"), ["select"]);
    }
}
