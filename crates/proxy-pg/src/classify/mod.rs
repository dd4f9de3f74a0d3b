//! Classification of SQL text: what each statement of a query does, which tables it touches
//! and which functions it calls — the facts policy decides on and the audit log records.
//!
//! The text is parsed with libpg_query (through `pg_query`), which is PostgreSQL's own
//! grammar extracted from the server sources. A gateway that guards a database must read a
//! statement exactly as the server will: any hand-written tokenizer or regex disagrees with
//! the server somewhere (dollar quotes, `E''` escapes, nested comments, `U&` identifiers,
//! keywords usable as names), and every disagreement is a way to smuggle a statement past
//! policy. So a text that PostgreSQL's grammar rejects is an error here, never a guess.
//!
//! A simple-query message may hold several statements (`SELECT 1; DROP TABLE t`), and the
//! server runs all of them, so each is classified on its own and policy must accept every
//! one; judging the text as a whole would let a harmless first statement vouch for the rest.
//!
//! Limits of what a parse tree can tell, which policy has to take into account:
//! - `DO` bodies, function bodies and `EXECUTE` of a prepared statement are opaque (the body
//!   is a string; the prepared statement was classified when it was prepared). That is why
//!   `do`, `call` and `execute` are kinds of their own that policy can refuse.
//! - Functions are only seen where they are called by name. Operators, casts, triggers,
//!   views and rules run functions the text does not name.
//! - `no_where` detects only the absence of a `WHERE`: `DELETE FROM t WHERE true` is not
//!   flagged.
//! - Bodies that are part of the grammar (`CREATE FUNCTION ... BEGIN ATOMIC`, `CREATE RULE`)
//!   are walked like the rest: their statements show in `kinds`, `tables` and `no_where`
//!   although they run later, which errs on the side of refusing.
//! - `normalized` replaces literals only; comments stay, as do identifiers.
//! - The grammar is read with `standard_conforming_strings = on` (PostgreSQL's default since
//!   9.1) and assumes the client encoding is UTF-8. With the setting off, a backslash inside
//!   `'...'` escapes the quote, so the same text splits into different statements; see
//!   [`StringLiterals`].

//!
//! One idea per module: `kinds` names a statement's kind, `collector` gathers what a walk
//! finds (kinds, tables through CTEs, functions), `walk` visits every node of the tree,
//! `functions` judges function calls (`privileged` is the catalogue of privileged ones),
//! `outputs` tells which columns reach the result, `errors` turns parse failures into
//! messages, and `cache` keeps classifications by text and by shape.

mod cache;
mod collector;
mod errors;
mod functions;
mod kinds;
mod outputs;
pub mod privileged;
#[cfg(test)]
mod test_support;
mod walk;

use pg_query::protobuf::{self, AlterTableType, DiscardMode, ObjectType, VariableSetKind};
use pg_query::{FingerprintOptions, Node, NodeEnum, ParserOptions};
use portcullis_model::{DefaultSchemas, SqlStatement};

pub use cache::Classifier;
use collector::*;
use errors::*;
use kinds::*;
use outputs::*;
use walk::*;

/// The longest text [`classify`] analyses. Parsing is linear but not free (roughly 10 ms per
/// MiB); bulk loads belong in `COPY`, whose data does not pass through the parser.
pub const MAX_SQL_BYTES: usize = 1 << 20;

/// Texts longer than this are classified every time rather than cached: long texts are
/// rarely repeated verbatim and would crowd out the short ones that are.
pub const CACHE_MAX_TEXT_BYTES: usize = 8 * 1024;
const CACHE_MAX_ENTRIES: usize = 4096;
/// Bounds the cache's memory, since each entry also holds the normalized text.
const CACHE_MAX_BYTES: usize = 16 << 20;
/// Finding an error's position re-parses prefixes of the text; beyond this it is skipped so
/// that a stream of long invalid texts cannot cost much more than valid ones.
const CURSOR_SEARCH_MAX_BYTES: usize = 64 * 1024;

/// One statement of a query text, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// What policy decides on.
    pub statement: SqlStatement,
    /// The statement's own text: for a multi-statement text, each statement separately,
    /// without the `;` that ends it or the whitespace and comments before it.
    pub text: String,
    /// The text with every literal replaced by `$n` (`pg_query::normalize`), for the audit
    /// log: the shape of the statement, never the values in it.
    pub normalized: String,
    /// The statement's fingerprint: 16 hex digits, equal for statements that differ only in
    /// literal values (and whitespace, comments, keyword case).
    pub fingerprint: String,
    /// For `COPY`: where the rows come from or go to.
    pub copy: Option<CopyInfo>,
    /// A statement that can carry a credential in its text or its parameters (a role's
    /// password, a foreign server's or user mapping's options): a recording keeps its
    /// `normalized` text and none of its bind values.
    pub holds_credentials: bool,
    /// Where the result's columns may come from, for masks that name columns.
    pub outputs: Outputs,
}

/// What the statement's output lists (select lists, RETURNING) say about where each result
/// column comes from: enough to tell a column returned under its own name from one that
/// could carry another column's values under another name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outputs {
    /// Column names referenced inside any output expression, at any depth.
    pub referenced: Vec<String>,
    /// Names given to outputs (`AS x`), to subquery and CTE columns, or as INSERT targets:
    /// a result column of such a name may hold another column's values.
    pub renamed: Vec<String>,
    /// A whole row is turned into a value (`SELECT c FROM t c`, `row_to_json(c)`).
    pub whole_row: bool,
    /// UNION / INTERSECT / EXCEPT: a result column takes the first branch's name.
    pub set_operation: bool,
    /// A table, subquery, function or CTE renames its columns (`AS t(a, b)`): any column
    /// of the result may be another under a new name.
    pub renamed_sources: bool,
    /// Column names used where their values decide which rows come back, in what order or
    /// how grouped, without being returned: WHERE, JOIN ON / USING, GROUP BY, HAVING,
    /// ORDER BY, DISTINCT ON, WINDOW and OVER, LIMIT / OFFSET, aggregate FILTER and ORDER
    /// BY, CASE conditions, MERGE conditions, and everything inside a subquery that sits in
    /// one of those places. A masked column here leaks by inference (`WHERE
    /// substr(account_number, 1, 1) = '4'` answers one question per statement).
    pub filtered: Vec<String>,
    /// A whole row is used in one of those places (`WHERE c::text LIKE ...`,
    /// `WHERE account_number(c) = ...`, `(c.*)`), or a NATURAL JOIN compares columns the
    /// text does not name.
    pub filtered_whole_row: bool,
    /// ORDER BY, GROUP BY or DISTINCT ON by position (`ORDER BY 2`): it uses a result
    /// column without naming it.
    pub positional: bool,
    /// A bare `*` or `t.*` in an output list (its columns are not named in the text).
    pub output_star: bool,
    /// `DISTINCT`, `UNION`, `INTERSECT` or `EXCEPT` (not `ALL`): rows merge when their
    /// values are equal, so how many come back compares the values.
    pub deduplicates: bool,
    /// `DECLARE ... CURSOR FOR` or SQL-level `PREPARE ... AS`: the query's rows come back
    /// later, to a `FETCH` or `EXECUTE` whose text does not carry the query.
    pub deferred_rows: bool,
    /// `FETCH` / `MOVE`: the cursor or portal it reads, which may be a protocol-level portal
    /// (Bind) of another statement.
    pub fetches: Option<String>,
    /// SQL `EXECUTE`: the prepared statement it runs, which may be a protocol-level one
    /// (Parse) of another text.
    pub executes: Option<String>,
    /// Every output expression (select lists at any depth, RETURNING) outside the places
    /// above, with the name it yields and the columns it reads: a subquery, CTE or alias
    /// can carry a column under another name into a WHERE or ORDER BY of an enclosing query.
    pub items: Vec<OutputItem>,
}

/// One output expression: see [`Outputs::items`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutputItem {
    /// The result column's name when the text determines it (an alias, a plain column, a
    /// function call's name); `None` when only the server knows it (`?column?`, a cast's
    /// type...).
    pub name: Option<String>,
    /// Columns the expression reads.
    pub columns: Vec<String>,
    /// The expression turns a whole row into a value.
    pub whole_row: bool,
}

impl Outputs {
    /// Whether a result column named `name` is a plain column of that name, returned as
    /// it is (as far as the text can tell).
    pub fn plain(&self, name: &str) -> bool {
        !self.whole_row
            && !self.set_operation
            && !self.renamed_sources
            && self.referenced.iter().any(|r| r == name)
            && !self.renamed.iter().any(|r| r == name)
    }
}

impl Classified {
    /// Whether this is a `COPY` that reads or writes a file on the database server or runs a
    /// program there, rather than exchanging rows with the client.
    pub fn copy_server_side(&self) -> bool {
        self.copy
            .is_some_and(|c| c.endpoint != CopyEndpoint::Client)
    }
}

/// What a `COPY` statement moves, and between what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyInfo {
    pub direction: CopyDirection,
    pub endpoint: CopyEndpoint,
}

/// Which way the rows of a `COPY` flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDirection {
    /// `COPY ... FROM`: rows are written into the table.
    In,
    /// `COPY ... TO`: rows are read out of a table or query.
    Out,
}

/// The other end of a `COPY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyEndpoint {
    /// `STDIN` / `STDOUT`: the rows travel over this connection, through the gateway.
    Client,
    /// A file on the database server, read or written by the server's OS user.
    ServerFile,
    /// `PROGRAM '...'`: a shell command run on the database server.
    ServerProgram,
}

/// How the server reads backslashes in `'...'` literals: the session's
/// `standard_conforming_strings`, which the server reports in `ParameterStatus` and which a
/// client can change at any time (`SET`, `set_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StringLiterals {
    /// `standard_conforming_strings = on`: a backslash is an ordinary character.
    #[default]
    Standard,
    /// `standard_conforming_strings = off`: a backslash escapes the next character, so
    /// `'a\'; DROP TABLE t; --'` is one literal. libpg_query's normalizer only knows the
    /// standard reading, so texts containing a backslash are refused in this mode rather
    /// than read one way here and another way by the server. Texts without a backslash read
    /// the same either way.
    BackslashEscapes,
}

/// Why a text could not be classified. Messages never quote more than a short excerpt of
/// the SQL: they end up in logs, and the SQL may hold secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// PostgreSQL's grammar rejects the text.
    #[error("SQL does not parse: {message}{}", at_cursor(.cursor))]
    Parse {
        /// PostgreSQL's message, e.g. `syntax error at or near "SELEC"`.
        message: String,
        /// Where the error is, as PostgreSQL's `ErrorResponse` reports it (the `P` field):
        /// 1-based, counted in characters. `None` when it could not be determined.
        cursor: Option<usize>,
    },
    /// The text is longer than [`MAX_SQL_BYTES`].
    #[error("SQL text of {len} bytes is longer than the {max} bytes the gateway analyses")]
    TooLong { len: usize, max: usize },
    /// The parse tree nests deeper than the protobuf decoder accepts (about 50 levels of
    /// expressions, e.g. `1 + 1 + ... + 1` with more than ~50 terms).
    #[error("SQL nests too deeply for the gateway to analyse")]
    TooDeep,
    /// See [`StringLiterals::BackslashEscapes`].
    #[error(
        "the text contains a backslash, which the server reads differently while \
         standard_conforming_strings is off; refused"
    )]
    AmbiguousBackslash,
}

fn at_cursor(cursor: &Option<usize>) -> String {
    cursor
        .map(|c| format!(" (at character {c})"))
        .unwrap_or_default()
}

/// Classifies every statement of `sql`, read with `standard_conforming_strings = on`.
///
/// An empty text, or one of only `;` and comments, is a legal empty query: `Ok` with no
/// statements.
pub fn classify(sql: &str) -> Result<Vec<Classified>, ClassifyError> {
    classify_as(sql, StringLiterals::Standard)
}

/// [`classify`], for a session whose `standard_conforming_strings` is as given.
pub fn classify_as(sql: &str, strings: StringLiterals) -> Result<Vec<Classified>, ClassifyError> {
    if strings == StringLiterals::BackslashEscapes && sql.contains('\\') {
        return Err(ClassifyError::AmbiguousBackslash);
    }
    if sql.len() > MAX_SQL_BYTES {
        return Err(ClassifyError::TooLong {
            len: sql.len(),
            max: MAX_SQL_BYTES,
        });
    }
    let parsed = pg_query::parse(sql, ParserOptions::DEFAULT).map_err(|e| parse_error(sql, e))?;
    let mut out = Vec::with_capacity(parsed.protobuf.stmts.len());
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
            continue;
        };
        // The parser reports each statement's byte range (a length of 0 means "to the end"),
        // which spares a separate split: slicing is all a multi-statement text costs extra.
        let start = usize::try_from(raw.stmt_location).unwrap_or(0);
        let end = match usize::try_from(raw.stmt_len) {
            Ok(0) | Err(_) => sql.len(),
            Ok(len) => start.saturating_add(len).min(sql.len()),
        };
        let text = sql.get(start..end).unwrap_or(sql).trim();
        let (statement, copy, outputs) = classify_node(node);
        // normalize and fingerprint take text, not a tree, so each parses the statement
        // again; they get the statement alone so that each answer is about that statement.
        let normalized = pg_query::normalize(text).map_err(|e| parse_error(text, e))?;
        // The normalizer leaves some literals (`OPTIONS (password '...')`): a statement that
        // can carry a credential loses every string literal left, so neither its event nor
        // its recording keeps one.
        let holds_credentials = holds_credentials(node);
        let normalized = if holds_credentials {
            without_string_literals(&normalized)
        } else {
            normalized
        };
        let fingerprint =
            pg_query::fingerprint(text, ParserOptions::DEFAULT, fingerprint_options())
                .map_err(|e| parse_error(text, e))?
                .hex;
        out.push(Classified {
            holds_credentials,
            statement,
            text: text.to_owned(),
            normalized,
            fingerprint,
            copy,
            outputs,
        });
    }
    Ok(out)
}

/// Relation names (with schema) and digits in them count, aliases do not: the audit log
/// groups statements by fingerprint, and `orders_2024` must not share one with
/// `orders_2025`, nor `FROM a x` with `FROM b x` (PostgreSQL 18's default would merge both).
fn fingerprint_options() -> FingerprintOptions {
    FingerprintOptions::RANGEVAR_PG17_COMPAT | FingerprintOptions::FULL_RELNAME
}

fn classify_node(node: &NodeEnum) -> (SqlStatement, Option<CopyInfo>, Outputs) {
    let mut c = Collector::default();
    let kind = kind_of(node);
    c.kind(kind);
    node.walk(&mut c);
    c.tables.sort_unstable();
    c.tables.dedup();
    c.functions.sort_unstable();
    c.functions.dedup();
    let copy = match node {
        NodeEnum::CopyStmt(s) => Some(CopyInfo {
            direction: if s.is_from {
                CopyDirection::In
            } else {
                CopyDirection::Out
            },
            endpoint: if s.is_program {
                CopyEndpoint::ServerProgram
            } else if s.filename.is_empty() {
                CopyEndpoint::Client
            } else {
                CopyEndpoint::ServerFile
            },
        }),
        _ => None,
    };
    let mut outputs = std::mem::take(&mut c.outputs);
    outputs.deferred_rows = matches!(
        node,
        NodeEnum::DeclareCursorStmt(_) | NodeEnum::PrepareStmt(_)
    );
    outputs.fetches = match node {
        NodeEnum::FetchStmt(f) => Some(f.portalname.clone()),
        _ => None,
    };
    outputs.executes = match node {
        NodeEnum::ExecuteStmt(e) => Some(e.name.clone()),
        _ => None,
    };
    outputs.whole_row = c.star_refs > 0 || c.single_refs.iter().any(|r| c.relations.contains(r));
    outputs.referenced.sort_unstable();
    outputs.referenced.dedup();
    outputs.renamed.sort_unstable();
    outputs.renamed.dedup();
    outputs.filtered_whole_row |=
        c.filter_star_refs > 0 || outputs.filtered.iter().any(|r| c.relations.contains(r));
    outputs.filtered.sort_unstable();
    outputs.filtered.dedup();
    for item in &mut outputs.items {
        item.whole_row |= item.columns.iter().any(|r| c.relations.contains(r));
    }
    let statement = SqlStatement {
        kind: kind.to_owned(),
        kinds: c.kinds.iter().map(|k| (*k).to_owned()).collect(),
        privileged_functions: privileged::flag(&c.functions),
        tables: c.tables,
        functions: c.functions,
        no_where: c.no_where,
        flagged_functions: Vec::new(),
        default_schemas: DEFAULT_SCHEMAS,
    };
    (statement, copy, outputs)
}

/// Schemas whose names a statement may leave out, as PostgreSQL's default `search_path`
/// has them: an unqualified table is looked up in `public`, a function also in
/// `pg_catalog`. Policy takes `schema.name` and `name` as the same object for these.
pub const DEFAULT_SCHEMAS: DefaultSchemas = DefaultSchemas {
    tables: &["public"],
    functions: &["pg_catalog", "public"],
};

#[cfg(test)]
mod tests {
    use super::test_support::*;

    #[test]
    fn each_statement_of_a_text_is_classified_separately() {
        let v = all("SELECT 1; DELETE FROM t");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].statement.kind, "select");
        assert_eq!(v[0].text, "SELECT 1");
        assert!(!v[0].statement.no_where);
        assert_eq!(v[1].statement.kind, "delete");
        assert_eq!(v[1].text, "DELETE FROM t");
        assert_eq!(v[1].statement.tables, ["t"]);
        assert!(v[1].statement.no_where);

        let v = all("  /* lead */ SELECT 1 ; -- x\n DELETE FROM t WHERE a = 'é;' ;  ");
        let texts: Vec<_> = v.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["SELECT 1", "DELETE FROM t WHERE a = 'é;'"]);
        assert_eq!(v[1].normalized, "DELETE FROM t WHERE a = $1");
    }

    #[test]
    fn empty_queries_are_legal() {
        for sql in [
            "",
            " ",
            ";",
            " ; ;; ",
            "-- nothing\n",
            "/* nothing */",
            "/* a */ ; -- b",
        ] {
            assert_eq!(classify(sql), Ok(vec![]), "{sql:?}");
        }
    }

    #[test]
    fn nul_bytes_and_limits() {
        assert_eq!(parse_err("SELECT 1\0").1, Some(9));
        let long = format!("SELECT 1 {}", " ".repeat(MAX_SQL_BYTES));
        assert!(matches!(
            classify(&long),
            Err(ClassifyError::TooLong { .. })
        ));
        // prost's decoder stops at 100 nested messages, about 50 chained operators.
        let deep = format!("SELECT 1{}", " + 1".repeat(60));
        assert_eq!(classify(&deep), Err(ClassifyError::TooDeep));
        let fine = format!("SELECT 1{}", " + 1".repeat(40));
        assert_eq!(one(&fine).kind, "select");
    }

    #[test]
    fn quoting_cannot_hide_statements() {
        // E'' strings: \' is an escaped quote, the rest stays inside the literal.
        let v = all(r"SELECT E'a\';DROP TABLE x;--'");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].statement.kinds, ["select"]);
        assert!(v[0].statement.tables.is_empty());
        // Standard strings: a backslash is an ordinary character, so 'a\' ends the literal.
        let v = all(r"SELECT 'a\', 'b'");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].normalized, "SELECT $1, $2");
        let v = all(r"SELECT 'a\'; DROP TABLE x; --'");
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].statement.kind, "ddl");
        assert_eq!(v[1].statement.tables, ["x"]);
        // Dollar quotes and comments.
        assert_eq!(all("SELECT $q$ ; DROP TABLE x; $q$").len(), 1);
        assert_eq!(all("SELECT 1 -- ; DROP TABLE x\n").len(), 1);
        assert_eq!(all("/* ; DROP TABLE x */ SELECT 1").len(), 1);
        assert_eq!(all("/* nested /* */ ; DROP TABLE x; */ SELECT 1").len(), 1);
        assert_eq!(all("SELECT \"a;b\" FROM \"t;DROP TABLE x\"").len(), 1);
    }

    #[test]
    fn legacy_string_mode_refuses_backslashes() {
        // Read with standard_conforming_strings off this is SELECT 'x\' , $$' followed by a
        // DROP; read with it on, a harmless SELECT of two literals.
        let smuggle = r"SELECT 'x\' , $$'; DROP TABLE t; --$$";
        assert_eq!(all(smuggle).len(), 1);
        assert_eq!(
            classify_as(smuggle, StringLiterals::BackslashEscapes),
            Err(ClassifyError::AmbiguousBackslash)
        );
        let classifier = Classifier::new();
        classifier.classify(smuggle).unwrap();
        assert_eq!(
            classifier.classify_as(smuggle, StringLiterals::BackslashEscapes),
            Err(ClassifyError::AmbiguousBackslash),
            "a cached standard reading must not answer for the legacy one"
        );
        assert_eq!(
            classify_as("SELECT 'a'", StringLiterals::BackslashEscapes)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn normalized_text_has_no_values() {
        let v = all(
            "SELECT name FROM people WHERE ssn = '123-45-6789' AND age > 42; SELECT E'secret\\n'",
        );
        assert_eq!(
            v[0].normalized,
            "SELECT name FROM people WHERE ssn = $1 AND age > $2"
        );
        assert!(!v[0].normalized.contains("123") && !v[0].normalized.contains("42"));
        assert_eq!(v[1].normalized, "SELECT $1");
        // Extended-protocol texts already carry placeholders; new ones number after them.
        assert_eq!(
            all("UPDATE t SET a = 'x' WHERE id = $1")[0].normalized,
            "UPDATE t SET a = $2 WHERE id = $1"
        );
    }

    #[test]
    fn fingerprints_ignore_values_not_tables() {
        let fp = |sql: &str| all(sql).remove(0).fingerprint;
        let a = fp("SELECT abalance FROM pgbench_accounts WHERE aid = 1");
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            a,
            fp("select abalance from pgbench_accounts where aid = 2 -- again")
        );
        assert_ne!(a, fp("SELECT abalance FROM pgbench_branches WHERE aid = 1"));
        assert_ne!(fp("SELECT * FROM a x"), fp("SELECT * FROM b x"));
        assert_ne!(
            fp("SELECT * FROM orders_2024"),
            fp("SELECT * FROM orders_2025")
        );
        assert_ne!(fp("SELECT * FROM s1.t"), fp("SELECT * FROM s2.t"));
        let v = all("SELECT 1; SELECT 2");
        assert_eq!(v[0].fingerprint, v[1].fingerprint);
    }

    #[test]
    fn copy_endpoints() {
        let c = |sql: &str| all(sql).remove(0);
        let v = c("COPY t FROM STDIN");
        assert_eq!(
            v.copy,
            Some(CopyInfo {
                direction: CopyDirection::In,
                endpoint: CopyEndpoint::Client
            })
        );
        assert!(!v.copy_server_side());
        let v = c("COPY (SELECT * FROM t) TO STDOUT WITH (FORMAT csv)");
        assert_eq!(
            v.copy,
            Some(CopyInfo {
                direction: CopyDirection::Out,
                endpoint: CopyEndpoint::Client
            })
        );
        let v = c("COPY t TO '/tmp/x'");
        assert_eq!(
            v.copy,
            Some(CopyInfo {
                direction: CopyDirection::Out,
                endpoint: CopyEndpoint::ServerFile
            })
        );
        assert!(v.copy_server_side());
        assert_eq!(v.statement.kind, "copy");
        let v = c("COPY t FROM PROGRAM 'cat /etc/passwd'");
        assert_eq!(
            v.copy,
            Some(CopyInfo {
                direction: CopyDirection::In,
                endpoint: CopyEndpoint::ServerProgram
            })
        );
        assert!(v.copy_server_side());
        assert_eq!(c("SELECT 1").copy, None);
    }
}
