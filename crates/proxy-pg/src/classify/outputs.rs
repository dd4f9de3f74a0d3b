//! Outputs and column references: which columns reach the result as they are, renamed or
//! derived, and which only choose, order or group rows (what masking needs).

use super::*;

/// A number standing for a result column's position (`ORDER BY 2`). Any numeric constant
/// counts: the shape cache gives `ORDER BY 2.5` (an error on the server) and `ORDER BY 2`
/// one classification, which must then be the cautious one.
pub(super) fn is_position(node: &Node) -> bool {
    matches!(
        &node.node,
        Some(NodeEnum::AConst(a)) if matches!(
            a.val,
            Some(protobuf::a_const::Val::Ival(_) | protobuf::a_const::Val::Fval(_))
        )
    )
}

impl Collector<'_> {
    /// Facts about where result columns come from (see [`Outputs`]).
    pub(super) fn note_outputs(&mut self, node: &NodeEnum) {
        use NodeEnum as N;
        let strings = |list: &[Node]| -> Vec<String> {
            list.iter()
                .filter_map(|n| match &n.node {
                    Some(N::String(s)) => Some(s.sval.clone()),
                    _ => None,
                })
                .collect()
        };
        match node {
            N::ColumnRef(cr) if self.in_filter > 0 => {
                let last = cr.fields.last().and_then(|f| f.node.as_ref());
                match last {
                    Some(N::String(s)) => self.outputs.filtered.push(s.sval.clone()),
                    _ => self.filter_star_refs += 1,
                }
                // Still a reference for the output facts: a subquery in a WHERE may also
                // sit in a select list.
                if let Some(N::String(s)) = last
                    && self.in_output > 0
                {
                    self.outputs.referenced.push(s.sval.clone());
                }
                if cr.fields.len() == 1
                    && let Some(N::String(s)) = last
                {
                    self.single_refs.push(s.sval.clone());
                }
            }
            N::ColumnRef(cr) => {
                if self.in_output > 0
                    && cr.fields.len() >= 2
                    && matches!(
                        cr.fields.last().and_then(|f| f.node.as_ref()),
                        Some(N::AStar(_))
                    )
                {
                    self.star_refs += 1;
                }
                let names = strings(&cr.fields);
                // `x.*` names no column: its last part is the star.
                let ends_in_name = matches!(
                    cr.fields.last().and_then(|f| f.node.as_ref()),
                    Some(N::String(_))
                );
                if let Some(last) = names.last()
                    && ends_in_name
                    && self.in_output > 0
                {
                    self.outputs.referenced.push(last.clone());
                }
                if cr.fields.len() == 1
                    && let Some(only) = names.first()
                {
                    self.single_refs.push(only.clone());
                }
            }
            N::ResTarget(r) if !r.name.is_empty() => self.outputs.renamed.push(r.name.clone()),
            N::RangeVar(rv) => {
                self.relations.push(rv.relname.clone());
                if let Some(alias) = &rv.alias {
                    self.alias(alias);
                }
            }
            N::RangeSubselect(rs) => {
                if let Some(alias) = &rs.alias {
                    self.alias(alias);
                }
            }
            N::RangeFunction(rf) => {
                if let Some(alias) = &rf.alias {
                    self.alias(alias);
                }
            }
            N::JoinExpr(j) => {
                if let Some(alias) = &j.alias {
                    self.alias(alias);
                }
            }
            N::CommonTableExpr(cte) => {
                self.relations.push(cte.ctename.clone());
                self.outputs.renamed_sources |= !cte.aliascolnames.is_empty();
                self.outputs.renamed.extend(strings(&cte.aliascolnames));
            }
            N::SelectStmt(st)
                if st.op != 0 && st.op != protobuf::SetOperation::SetopNone as i32 =>
            {
                self.outputs.set_operation = true;
                self.outputs.deduplicates |= !st.all;
            }
            N::SelectStmt(st) if !st.distinct_clause.is_empty() => {
                self.outputs.deduplicates = true;
            }
            _ => {}
        }
    }

    pub(super) fn alias(&mut self, alias: &protobuf::Alias) {
        self.relations.push(alias.aliasname.clone());
        for name in &alias.colnames {
            if let Some(NodeEnum::String(s)) = &name.node {
                self.outputs.renamed.push(s.sval.clone());
                self.outputs.renamed_sources = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn outputs_tell_plain_columns_from_renamed_and_derived_ones() {
        let o = |sql: &str| classify(sql).unwrap()[0].outputs.clone();
        let plain = o("SELECT id, account_number FROM customers WHERE email = 'x'");
        assert!(plain.plain("id") && plain.plain("account_number"));
        assert!(
            !plain.referenced.contains(&"email".to_string()),
            "WHERE is not output"
        );
        let aliased = o("SELECT account_number AS acct FROM customers");
        assert!(aliased.referenced.contains(&"account_number".into()));
        assert!(!aliased.plain("acct"));
        let expr = o("SELECT upper(account_number) FROM customers");
        assert!(!expr.plain("upper"));
        let sub = o("SELECT acct FROM (SELECT account_number AS acct FROM customers) s");
        assert!(!sub.plain("acct"));
        let cte = o("WITH x(a) AS (SELECT account_number FROM customers) SELECT a FROM x");
        assert!(!cte.plain("a"));
        assert!(o("SELECT row_to_json(c) FROM customers c").whole_row);
        assert!(o("SELECT c FROM customers c").whole_row);
        assert!(!o("SELECT c.id FROM customers c").whole_row);
        assert!(o("SELECT name FROM a UNION SELECT account_number FROM b").set_operation);
        assert!(!o("SELECT name FROM a").set_operation);
        let returning =
            o("UPDATE customers SET name = 'x' WHERE id = 1 RETURNING account_number AS a");
        assert!(returning.referenced.contains(&"account_number".into()) && !returning.plain("a"));
    }

    #[test]
    fn columns_that_choose_order_or_group_rows_are_told_from_output() {
        let o = |sql: &str| classify(sql).unwrap()[0].outputs.clone();
        let filtered = |sql: &str| o(sql).filtered;
        assert_eq!(
            filtered("SELECT name FROM customers c WHERE substr(c.account_number, 1, 1) = 'A'"),
            ["account_number"]
        );
        assert!(filtered("SELECT account_number FROM customers").is_empty());
        for (sql, column) in [
            ("SELECT id FROM t ORDER BY a", "a"),
            ("SELECT count(*) FROM t GROUP BY a", "a"),
            ("SELECT max(b) FROM t GROUP BY id HAVING max(a) > '1'", "a"),
            ("SELECT x.id FROM t x JOIN u y ON y.a = x.a", "a"),
            ("SELECT x.id FROM t x JOIN u y USING (a)", "a"),
            ("SELECT id, rank() OVER (ORDER BY a) FROM t", "a"),
            ("SELECT id FROM t WINDOW w AS (PARTITION BY a)", "a"),
            (
                "SELECT id FROM t LIMIT (SELECT count(*) FROM t WHERE a > '1')",
                "a",
            ),
            ("SELECT DISTINCT ON (a) id FROM t", "a"),
            ("SELECT count(*) FILTER (WHERE a > '1') FROM t", "a"),
            ("SELECT CASE WHEN a > '1' THEN 1 END FROM t", "a"),
            ("SELECT CASE a WHEN '1' THEN 1 END FROM t", "a"),
            (
                "SELECT id FROM t WHERE id IN (SELECT id FROM t WHERE a = '1')",
                "a",
            ),
            (
                "SELECT id FROM t WHERE (SELECT a FROM t LIMIT 1) = '1'",
                "a",
            ),
            ("UPDATE t SET b = 1 WHERE a = '1'", "a"),
            ("DELETE FROM t WHERE a = '1'", "a"),
            (
                "WITH x AS (SELECT id FROM t WHERE a = '1') SELECT id FROM x",
                "a",
            ),
        ] {
            assert!(filtered(sql).contains(&column.to_string()), "{sql}");
        }
        assert!(o("SELECT id FROM customers c WHERE c::text LIKE '%1%'").filtered_whole_row);
        assert!(o("SELECT id FROM customers c WHERE account_number(c) = '1'").filtered_whole_row);
        assert!(o("SELECT id FROM customers c WHERE (c.*)::text = '1'").filtered_whole_row);
        assert!(o("SELECT id FROM t NATURAL JOIN u").filtered_whole_row);
        assert!(!o("SELECT c FROM customers c WHERE id = 1").filtered_whole_row);
        assert!(o("SELECT id, a FROM t ORDER BY 2").positional);
        assert!(o("SELECT a, count(*) FROM t GROUP BY 1").positional);
        assert!(!o("SELECT id FROM t ORDER BY id").positional);
        assert!(
            o("SELECT id, a FROM t ORDER BY 2.5").positional,
            "one shape with ORDER BY 2: cached for both"
        );
        assert!(o("SELECT * FROM t").output_star);
        // Rows that come back to a later FETCH or EXECUTE (issue 13 re-check P1).
        assert!(o("DECLARE c CURSOR FOR SELECT a FROM t").deferred_rows);
        assert!(o("PREPARE p AS SELECT a FROM t").deferred_rows);
        assert_eq!(o("FETCH ALL FROM P0").fetches.as_deref(), Some("p0"));
        assert_eq!(o("MOVE 1 IN \"C\"").fetches.as_deref(), Some("C"));
        assert_eq!(o("EXECUTE s1(2)").executes.as_deref(), Some("s1"));
        for sql in [
            "FETCH ALL FROM c",
            "EXECUTE p",
            "SELECT a FROM t",
            "EXPLAIN SELECT a FROM t",
        ] {
            assert!(!o(sql).deferred_rows, "{sql}");
        }
        for sql in [
            "SELECT id, generate_series(1, ascii(a)) FROM t",
            "SELECT id FROM t, generate_series(1, length(a)) g",
            "SELECT id, regexp_matches(a, 'x', 'g') FROM t",
            "SELECT id FROM t, unnest(string_to_array(a, '1')) u",
            "SELECT count(DISTINCT a) FROM t",
        ] {
            assert!(filtered(sql).contains(&"a".to_string()), "{sql}");
        }
        assert!(filtered("SELECT u FROM t, unnest(ARRAY[a]) u").is_empty());
        assert!(filtered("SELECT j FROM t, LATERAL to_jsonb(a) j").is_empty());
        assert!(o("SELECT DISTINCT a FROM t").deduplicates);
        assert!(o("SELECT a FROM t UNION SELECT 'x'").deduplicates);
        assert!(o("SELECT a FROM t EXCEPT SELECT 'x'").deduplicates);
        assert!(!o("SELECT a FROM t UNION ALL SELECT 'x'").deduplicates);
        assert!(!o("SELECT a FROM t").deduplicates);
        // Output expressions and the names they yield, at any depth.
        let items = o("SELECT id FROM (SELECT id, account_number AS a, upper(name), b::text,                        (c || '') FROM t) s WHERE a = '1'")
        .items;
        let names: Vec<_> = items.iter().map(|i| i.name.as_deref()).collect();
        assert_eq!(
            names,
            [
                Some("id"),
                Some("id"),
                Some("a"),
                Some("upper"),
                Some("b"),
                None
            ]
        );
        assert_eq!(items[2].columns, ["account_number"]);
        assert!(
            o("SELECT x FROM (SELECT row_to_json(c) AS x FROM customers c) s").items[1].whole_row
        );
    }
}
