//! Masked columns used where they are not returned.
//!
//! A mask hides a column's values in the rows that come back, but a statement can use the
//! column without returning it: `WHERE id = 1 AND substr(account_number, 3, 1) = '7'`
//! answers one question about the hidden value with the presence of a row, and a few
//! hundred such statements read the whole value. The same holds for JOIN conditions, ORDER
//! BY (the order of the rows), GROUP BY, HAVING, windows, LIMIT, aggregate filters, CASE
//! conditions and a subquery in any of them. So under a masking rule a statement that uses
//! a masked column in such a place is refused, unless the rule says `filter_masked = true`.
//!
//! The column is looked for under every spelling the text can give it: qualified or not
//! (`c.account_number`), quoted (names compare case-insensitively, which errs on the side
//! of refusing), as part of a whole row (`c::text`, `account_number(c)`, `(c.*)`), through a
//! subquery, CTE or alias that carries it under another name (`(SELECT account_number AS a
//! ...) s WHERE a ...`), by position (`ORDER BY 2`) and through columns a source renames
//! (`customers AS c(i, n, e, a)`).
//!
//! Row counts answer questions too: a set-returning function's arguments decide how many
//! rows it gives (`generate_series(1, ascii(substr(account_number, 1, 1)))`), and
//! DISTINCT, UNION, INTERSECT and EXCEPT merge equal rows (`SELECT left(account_number, 1)
//! ... UNION SELECT 'A'` returns one row exactly when they are equal). So those
//! arguments count as places that choose rows, and a statement that deduplicates a result
//! carrying a masked column is refused as well.

use portcullis_mask::Profile;

use crate::classify::Outputs;

/// The columns a statement's mask hides whole, whatever they hold: the profile's
/// `columns`, and the columns discovery tagged in the tables the statement touches.
pub(crate) struct MaskedColumns<'a> {
    pub profile: &'a Profile,
    /// Lower-case names.
    pub discovered: &'a [String],
}

impl MaskedColumns<'_> {
    pub fn masks(&self, name: &str) -> bool {
        self.profile.masks_column(name)
            || self.discovered.iter().any(|d| d.eq_ignore_ascii_case(name))
    }

    /// Whether any column is masked by name at all.
    pub fn any(&self) -> bool {
        self.profile.names_columns() || !self.discovered.is_empty()
    }
}

/// What of a masked column the statement uses outside its output list, described for the
/// refusal (`column "account_number"`), or `None` when it uses none.
pub(crate) fn masked_use_outside_output(
    outputs: &Outputs,
    masked: &MaskedColumns<'_>,
) -> Option<String> {
    if let Some(name) = outputs.filtered.iter().find(|n| masked.masks(n)) {
        return Some(format!("column \"{name}\""));
    }
    if !masked.any() {
        return None;
    }
    if outputs.filtered_whole_row {
        return Some(
            "a whole row (a table's name, `t.*` or a NATURAL JOIN), which holds the masked columns"
                .into(),
        );
    }
    // Output expressions that carry a masked column (or a whole row), at any depth: an
    // enclosing query can filter on them by the name they yield.
    let carriers: Vec<_> = outputs
        .items
        .iter()
        .filter(|item| item.whole_row || item.columns.iter().any(|c| masked.masks(c)))
        .collect();
    for carrier in &carriers {
        let carried = carrier
            .columns
            .iter()
            .find(|c| masked.masks(c))
            .map_or_else(|| "a whole row".to_string(), |c| format!("column \"{c}\""));
        let used = match &carrier.name {
            Some(name) => outputs
                .filtered
                .iter()
                .any(|f| f.eq_ignore_ascii_case(name)),
            // A name only the server knows may be the one filtered on.
            None => !outputs.filtered.is_empty(),
        };
        if used || outputs.positional || outputs.deduplicates {
            return Some(format!(
                "{carried} (through the result column {} that carries it)",
                carrier
                    .name
                    .as_deref()
                    .map_or_else(|| "without a name".into(), |n| format!("\"{n}\""))
            ));
        }
    }
    if (outputs.positional || outputs.deduplicates) && outputs.output_star {
        return Some(
            "`*` (which includes the masked columns) by position or in DISTINCT / UNION / INTERSECT / EXCEPT"
                .into(),
        );
    }
    // `customers AS c(i, n, e, a)` renames columns by position: any renamed name may be a
    // masked column.
    if outputs.renamed_sources
        && let Some(name) = outputs
            .filtered
            .iter()
            .find(|f| outputs.renamed.iter().any(|r| r.eq_ignore_ascii_case(f)))
    {
        return Some(format!(
            "column \"{name}\", a renamed column that may be a masked one"
        ));
    }
    None
}

/// Why a `DECLARE ... CURSOR FOR` or SQL-level `PREPARE ... AS` may not run under a masking
/// rule, described for the refusal (`column "account_number"`, to be followed by "that rule
/// ... masks"), or `None` for any other statement.
///
/// The rows of such a statement come back later, to a `FETCH` or an SQL `EXECUTE` whose text
/// does not carry the query. The result column `x` of `DECLARE c CURSOR FOR SELECT
/// reverse(account_number) AS x ...` would reach the client masked by the detectors only;
/// and since a `FETCH` names no table, another rule of the caller (one without a mask, for
/// another table) may be the one that allows it, so even `SELECT *` would come back
/// unmasked. Rather than carry each cursor's and statement's mask across statements (and
/// transactions, `WITH HOLD`, `DEALLOCATE`...), such a statement is refused under any
/// masking rule; the description names a masked column when the query reads one.
/// Protocol-level prepared statements (Parse/Bind/Execute) keep their query and mask with
/// them and are masked as usual.
pub(crate) fn masked_read_by_deferred_query(
    outputs: &Outputs,
    masked: &MaskedColumns<'_>,
) -> Option<String> {
    if !outputs.deferred_rows {
        return None;
    }
    if let Some(name) = outputs
        .referenced
        .iter()
        .chain(&outputs.filtered)
        .find(|n| masked.masks(n))
    {
        return Some(format!("column \"{name}\""));
    }
    if masked.any() && (outputs.whole_row || outputs.filtered_whole_row) {
        return Some("a whole row, which holds columns".into());
    }
    if masked.any() && outputs.renamed_sources {
        return Some("columns it renames (`AS t(a, b)`), any of which may be a column".into());
    }
    Some("rows".into())
}
