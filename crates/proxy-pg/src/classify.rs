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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use pg_query::protobuf::{self, AlterTableType, DiscardMode, ObjectType, VariableSetKind};
use pg_query::{FingerprintOptions, Node, NodeEnum, ParserOptions};
use portcullis_model::SqlStatement;

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
        let fingerprint =
            pg_query::fingerprint(text, ParserOptions::DEFAULT, fingerprint_options())
                .map_err(|e| parse_error(text, e))?
                .hex;
        out.push(Classified {
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

/// A thread-safe [`classify`] with a bounded cache keyed by the exact text: the same texts
/// recur constantly (prepared statements, ORMs sending `$1` placeholders, pgbench), and a
/// hit costs a hash and a lock instead of three parses.
///
/// Only successes are cached. Errors are rare in real traffic, cheap to recompute relative
/// to the round trip they abort, and caching them would let junk texts evict useful entries.
/// When full (by entries or bytes) the cache is simply cleared: an LRU would cost
/// bookkeeping on every hit to improve only the case of a working set larger than the cache.
#[derive(Debug, Default)]
pub struct Classifier {
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    map: HashMap<Box<str>, Arc<[Classified]>>,
    /// By shape (the text without its literal values, see [`crate::shape`]): one statement.
    shapes: HashMap<Box<str>, Arc<Classified>>,
    bytes: usize,
}

impl Classifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// [`classify`], cached.
    pub fn classify(&self, sql: &str) -> Result<Arc<[Classified]>, ClassifyError> {
        self.classify_as(sql, StringLiterals::Standard)
    }

    /// [`classify_as`], cached. One cache serves both modes: a text is only ever accepted
    /// in [`StringLiterals::BackslashEscapes`] mode when it has no backslash, and such a
    /// text reads the same in both.
    pub fn classify_as(
        &self,
        sql: &str,
        strings: StringLiterals,
    ) -> Result<Arc<[Classified]>, ClassifyError> {
        if strings == StringLiterals::BackslashEscapes && sql.contains('\\') {
            return Err(ClassifyError::AmbiguousBackslash);
        }
        let cacheable = sql.len() <= CACHE_MAX_TEXT_BYTES;
        if cacheable && let Some(shape) = crate::shape::shape(sql) {
            return self.classify_shaped(sql, shape);
        }
        if cacheable && let Some(hit) = self.lock().map.get(sql) {
            return Ok(Arc::clone(hit));
        }
        let classified: Arc<[Classified]> = classify(sql)?.into();
        if cacheable {
            let size = sql.len()
                + classified
                    .iter()
                    .map(|c| c.text.len() + c.normalized.len() + 64)
                    .sum::<usize>();
            let mut cache = self.lock();
            if cache.map.len() >= CACHE_MAX_ENTRIES || cache.bytes + size > CACHE_MAX_BYTES {
                cache.map.clear();
                cache.shapes.clear();
                cache.bytes = 0;
            }
            if cache
                .map
                .insert(sql.into(), Arc::clone(&classified))
                .is_none()
            {
                cache.bytes += size;
            }
        }
        Ok(classified)
    }

    /// A text whose shape the lexer found: classified once per shape; this text's own
    /// statement and normalised form are filled in on each use, so nothing of another text
    /// (its values) is ever returned for this one.
    fn classify_shaped(
        &self,
        sql: &str,
        shape: crate::shape::Shape,
    ) -> Result<Arc<[Classified]>, ClassifyError> {
        let own = |base: &Classified| Classified {
            statement: base.statement.clone(),
            text: shape.statement.clone(),
            normalized: shape.normalized.clone(),
            fingerprint: base.fingerprint.clone(),
            copy: base.copy,
            outputs: base.outputs.clone(),
        };
        if let Some(hit) = self.lock().shapes.get(shape.key.as_str()) {
            return Ok(Arc::from([own(hit)]));
        }
        let classified = classify(sql)?;
        let [one] = classified.as_slice() else {
            // The lexer only shapes single statements; should the parser disagree, the
            // full answer stands and nothing is cached.
            return Ok(classified.into());
        };
        let size = shape.key.len() + one.normalized.len() + 64;
        let mine = own(one);
        let mut cache = self.lock();
        if cache.shapes.len() >= CACHE_MAX_ENTRIES || cache.bytes + size > CACHE_MAX_BYTES {
            cache.shapes.clear();
            cache.map.clear();
            cache.bytes = 0;
        }
        cache.bytes += size;
        cache
            .shapes
            .insert(shape.key.into_boxed_str(), Arc::new(one.clone()));
        Ok(Arc::from([mine]))
    }

    /// Number of cached texts.
    pub fn cached(&self) -> usize {
        let cache = self.lock();
        cache.map.len() + cache.shapes.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The map is never left half-updated by a panic, so a poisoned lock is still sound.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn parse_error(sql: &str, e: pg_query::Error) -> ClassifyError {
    match e {
        pg_query::Error::Parse(message) | pg_query::Error::Split(message) => {
            let cursor = error_cursor(sql, &message);
            ClassifyError::Parse {
                message: shorten(&message),
                cursor,
            }
        }
        pg_query::Error::Conversion(nul) => ClassifyError::Parse {
            message: "the text contains a NUL byte".into(),
            cursor: Some(char_position(sql, nul.nul_position())),
        },
        // prost refuses messages nested more than 100 deep; its message spells out the whole
        // path, which says nothing useful.
        pg_query::Error::Decode(d) if d.to_string().contains("recursion limit") => {
            ClassifyError::TooDeep
        }
        other => ClassifyError::Parse {
            message: shorten(&other.to_string()),
            cursor: None,
        },
    }
}

/// Keeps a message short: PostgreSQL quotes the text "near" an error, which for an
/// unterminated literal is the whole rest of the input.
fn shorten(message: &str) -> String {
    const NEAR: &str = "at or near \"";
    const MAX_NEAR: usize = 40;
    if let Some(i) = message.find(NEAR) {
        let (head, near) = message.split_at(i + NEAR.len());
        let near = near.strip_suffix('"').unwrap_or(near);
        if near.chars().count() > MAX_NEAR {
            let cut: String = near.chars().take(MAX_NEAR).collect();
            return format!("{head}{cut}…\"");
        }
    }
    if message.chars().count() > 300 {
        let cut: String = message.chars().take(300).collect();
        return format!("{cut}…");
    }
    message.to_owned()
}

/// 1-based character position of byte offset `at`, as PostgreSQL reports positions.
fn char_position(sql: &str, at: usize) -> usize {
    sql.get(..at).map_or(at, |prefix| prefix.chars().count()) + 1
}

/// Where the error is. libpg_query computes it but the Rust binding drops it, so it is
/// recovered here: a syntax error is reported at the first token that no valid statement
/// can continue with, and a prefix of the text fails "at end of input" exactly while it
/// stops before that token, so a binary search over token ends finds it.
fn error_cursor(sql: &str, message: &str) -> Option<usize> {
    if message.ends_with("at end of input") {
        return Some(char_position(sql, sql.len()));
    }
    if !message.contains("at or near \"") || sql.len() > CURSOR_SEARCH_MAX_BYTES {
        return None;
    }
    let tokens = match pg_query::scan(sql) {
        Ok(scan) => scan.tokens,
        // The scanner itself fails on an unterminated literal or comment, and PostgreSQL
        // then quotes everything from its start to the end of the text.
        Err(_) => {
            let near = message.rsplit_once("at or near \"")?.1.strip_suffix('"')?;
            return sql
                .ends_with(near)
                .then(|| char_position(sql, sql.len() - near.len()));
        }
    };
    let fails_at = |k: usize| {
        let end = usize::try_from(tokens[k].end)
            .unwrap_or(sql.len())
            .min(sql.len());
        match sql
            .get(..end)
            .map(|prefix| pg_query::parse(prefix, ParserOptions::DEFAULT))
        {
            Some(Err(pg_query::Error::Parse(m))) => !m.ends_with("at end of input"),
            Some(Err(_)) | None => true,
            Some(Ok(_)) => false,
        }
    };
    let (mut lo, mut hi) = (0, tokens.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fails_at(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let token = tokens.get(lo)?;
    Some(char_position(sql, usize::try_from(token.start).ok()?))
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
        tables: c.tables,
        functions: c.functions,
        no_where: c.no_where,
        flagged_functions: Vec::new(),
    };
    (statement, copy, outputs)
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
fn kind_of(node: &NodeEnum) -> &'static str {
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

/// What a walk over one statement's tree gathers.
#[derive(Default)]
struct Collector<'t> {
    kinds: Vec<&'static str>,
    tables: Vec<String>,
    functions: Vec<String>,
    no_where: bool,
    outputs: Outputs,
    /// Inside an output expression (a `ResTarget`'s value) or a FROM item, this many levels
    /// deep: column references there can reach the result.
    in_output: u32,
    /// Inside a clause whose values choose, order or group rows (see
    /// [`Outputs::filtered`]), this many levels deep; it wins over `in_output`.
    in_filter: u32,
    /// `x.*` references inside such clauses.
    filter_star_refs: u32,
    /// `x.*` references inside expressions (whole rows).
    star_refs: u32,
    /// One-part column references (`c`), and relation names and aliases: a one-part
    /// reference naming a relation is a whole-row reference.
    single_refs: Vec<String>,
    relations: Vec<String>,
    /// CTE names visible at the current point of the walk, innermost last.
    ctes: Vec<&'t str>,
}

impl<'t> Collector<'t> {
    fn kind(&mut self, kind: &'static str) {
        if !self.kinds.contains(&kind) {
            self.kinds.push(kind);
        }
    }

    /// The kinds of the statement a wrapper (EXPLAIN, PREPARE, DECLARE, CREATE TABLE AS,
    /// COPY (query)) carries: it runs it, or (EXPLAIN without ANALYZE, PREPARE) describes
    /// what will run, and refusing on either is the safe reading.
    fn inner(&mut self, query: Option<&Node>) {
        if let Some(node) = query.and_then(|q| q.node.as_ref()) {
            self.kind(kind_of(node));
        }
    }

    /// A relation in a position where a CTE of the same name would take its place.
    fn relation(&mut self, rv: &protobuf::RangeVar) {
        let shadowed = rv.schemaname.is_empty()
            && rv.catalogname.is_empty()
            && self.ctes.iter().any(|cte| *cte == rv.relname);
        if !shadowed {
            self.table(rv);
        }
    }

    /// A relation that is always a real table: the target of INSERT/UPDATE/DELETE/MERGE or
    /// SELECT INTO, which a CTE cannot stand in for.
    fn table(&mut self, rv: &protobuf::RangeVar) {
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
    fn table_from_names(&mut self, names: &[Node], drop_last: bool) {
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
    fn note(&mut self, node: &NodeEnum) {
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
    fn filtering(&mut self, walk: impl FnOnce(&mut Self)) {
        self.in_filter += 1;
        walk(self);
        self.in_filter -= 1;
    }
}

/// A number standing for a result column's position (`ORDER BY 2`). Any numeric constant
/// counts: the shape cache gives `ORDER BY 2.5` (an error on the server) and `ORDER BY 2`
/// one classification, which must then be the cautious one.
fn is_position(node: &Node) -> bool {
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
    fn note_outputs(&mut self, node: &NodeEnum) {
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

    fn alias(&mut self, alias: &protobuf::Alias) {
        self.relations.push(alias.aliasname.clone());
        for name in &alias.colnames {
            if let Some(NodeEnum::String(s)) = &name.node {
                self.outputs.renamed.push(s.sval.clone());
                self.outputs.renamed_sources = true;
            }
        }
    }
}

fn is_table_like(object_type: i32) -> bool {
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
fn dotted(names: &[Node]) -> String {
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

// The walk. pg_query's own `nodes()` visits only the node types its authors needed (it
// misses VALUES lists, RETURNING, LIMIT, array and subscript expressions, DEFAULT
// expressions...), and a guard that misses a function call in `ARRAY[...]` is no guard. So
// every node type and every field that can hold a node is walked: the field lists below
// were generated from pg_query's protobuf definitions (any field whose type is `Node` or a
// message), and the enum list must name every `NodeEnum` variant, so a pg_query upgrade
// that adds one fails to compile here instead of going unseen. The few types whose walk
// needs more than visiting fields in order are written out by hand after them.

trait Walk {
    fn walk<'t>(&'t self, c: &mut Collector<'t>);
}

impl<T: Walk> Walk for Option<T> {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        if let Some(x) = self {
            x.walk(c);
        }
    }
}

impl<T: Walk> Walk for Box<T> {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        (**self).walk(c);
    }
}

impl<T: Walk> Walk for Vec<T> {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        for x in self {
            x.walk(c);
        }
    }
}

impl Walk for Node {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        self.node.walk(c);
    }
}

macro_rules! walk_node_enum {
    ($($variant:ident),* $(,)?) => {
        impl Walk for NodeEnum {
            fn walk<'t>(&'t self, c: &mut Collector<'t>) {
                c.note(self);
                match self {
                    $(NodeEnum::$variant(x) => x.walk(c),)*
                }
            }
        }
    };
}

macro_rules! walk_fields {
    ($($ty:ident { $($field:ident),* $(,)? }),* $(,)?) => {
        $(
            impl Walk for protobuf::$ty {
                #[allow(unused_variables)]
                fn walk<'t>(&'t self, c: &mut Collector<'t>) {
                    $(self.$field.walk(c);)*
                }
            }
        )*
    };
}

walk_node_enum! {
    Alias, RangeVar, TableFunc, IntoClause, Var, Param, Aggref, GroupingFunc, WindowFunc,
    WindowFuncRunCondition, MergeSupportFunc, SubscriptingRef, FuncExpr, NamedArgExpr, OpExpr,
    DistinctExpr, NullIfExpr, ScalarArrayOpExpr, BoolExpr, SubLink, SubPlan, AlternativeSubPlan,
    FieldSelect, FieldStore, RelabelType, CoerceViaIo, ArrayCoerceExpr, ConvertRowtypeExpr,
    CollateExpr, CaseExpr, CaseWhen, CaseTestExpr, ArrayExpr, RowExpr, RowCompareExpr,
    CoalesceExpr, MinMaxExpr, SqlvalueFunction, XmlExpr, JsonFormat, JsonReturning,
    JsonValueExpr, JsonConstructorExpr, JsonIsPredicate, JsonBehavior, JsonExpr, JsonTablePath,
    JsonTablePathScan, JsonTableSiblingJoin, NullTest, BooleanTest, MergeAction, CoerceToDomain,
    CoerceToDomainValue, SetToDefault, CurrentOfExpr, NextValueExpr, InferenceElem,
    ReturningExpr, TargetEntry, RangeTblRef, JoinExpr, FromExpr, OnConflictExpr, Query,
    TypeName, ColumnRef, ParamRef, AExpr, TypeCast, CollateClause, RoleSpec, FuncCall, AStar,
    AIndices, AIndirection, AArrayExpr, ResTarget, MultiAssignRef, SortBy, WindowDef,
    RangeSubselect, RangeFunction, RangeTableFunc, RangeTableFuncCol, RangeTableSample,
    ColumnDef, TableLikeClause, IndexElem, DefElem, LockingClause, XmlSerialize, PartitionElem,
    PartitionSpec, PartitionBoundSpec, PartitionRangeDatum, PartitionCmd, RangeTblEntry,
    RtepermissionInfo, RangeTblFunction, TableSampleClause, WithCheckOption, SortGroupClause,
    GroupingSet, WindowClause, RowMarkClause, WithClause, InferClause, OnConflictClause,
    CtesearchClause, CtecycleClause, CommonTableExpr, MergeWhenClause, ReturningOption,
    ReturningClause, TriggerTransition, JsonOutput, JsonArgument, JsonFuncExpr,
    JsonTablePathSpec, JsonTable, JsonTableColumn, JsonKeyValue, JsonParseExpr, JsonScalarExpr,
    JsonSerializeExpr, JsonObjectConstructor, JsonArrayConstructor, JsonArrayQueryConstructor,
    JsonAggConstructor, JsonObjectAgg, JsonArrayAgg, RawStmt, InsertStmt, DeleteStmt,
    UpdateStmt, MergeStmt, SelectStmt, SetOperationStmt, ReturnStmt, PlassignStmt,
    CreateSchemaStmt, AlterTableStmt, AlterTableCmd, AtalterConstraint, ReplicaIdentityStmt,
    AlterCollationStmt, AlterDomainStmt, GrantStmt, ObjectWithArgs, AccessPriv, GrantRoleStmt,
    AlterDefaultPrivilegesStmt, CopyStmt, VariableSetStmt, VariableShowStmt, CreateStmt,
    Constraint, CreateTableSpaceStmt, DropTableSpaceStmt, AlterTableSpaceOptionsStmt,
    AlterTableMoveAllStmt, CreateExtensionStmt, AlterExtensionStmt, AlterExtensionContentsStmt,
    CreateFdwStmt, AlterFdwStmt, CreateForeignServerStmt, AlterForeignServerStmt,
    CreateForeignTableStmt, CreateUserMappingStmt, AlterUserMappingStmt, DropUserMappingStmt,
    ImportForeignSchemaStmt, CreatePolicyStmt, AlterPolicyStmt, CreateAmStmt, CreateTrigStmt,
    CreateEventTrigStmt, AlterEventTrigStmt, CreatePlangStmt, CreateRoleStmt, AlterRoleStmt,
    AlterRoleSetStmt, DropRoleStmt, CreateSeqStmt, AlterSeqStmt, DefineStmt, CreateDomainStmt,
    CreateOpClassStmt, CreateOpClassItem, CreateOpFamilyStmt, AlterOpFamilyStmt, DropStmt,
    TruncateStmt, CommentStmt, SecLabelStmt, DeclareCursorStmt, ClosePortalStmt, FetchStmt,
    IndexStmt, CreateStatsStmt, StatsElem, AlterStatsStmt, CreateFunctionStmt,
    FunctionParameter, AlterFunctionStmt, DoStmt, InlineCodeBlock, CallStmt, CallContext,
    RenameStmt, AlterObjectDependsStmt, AlterObjectSchemaStmt, AlterOwnerStmt,
    AlterOperatorStmt, AlterTypeStmt, RuleStmt, NotifyStmt, ListenStmt, UnlistenStmt,
    TransactionStmt, CompositeTypeStmt, CreateEnumStmt, CreateRangeStmt, AlterEnumStmt,
    ViewStmt, LoadStmt, CreatedbStmt, AlterDatabaseStmt, AlterDatabaseRefreshCollStmt,
    AlterDatabaseSetStmt, DropdbStmt, AlterSystemStmt, ClusterStmt, VacuumStmt, VacuumRelation,
    ExplainStmt, CreateTableAsStmt, RefreshMatViewStmt, CheckPointStmt, DiscardStmt, LockStmt,
    ConstraintsSetStmt, ReindexStmt, CreateConversionStmt, CreateCastStmt, CreateTransformStmt,
    PrepareStmt, ExecuteStmt, DeallocateStmt, DropOwnedStmt, ReassignOwnedStmt,
    AlterTsdictionaryStmt, AlterTsconfigurationStmt, PublicationTable, PublicationObjSpec,
    CreatePublicationStmt, AlterPublicationStmt, CreateSubscriptionStmt, AlterSubscriptionStmt,
    DropSubscriptionStmt, Integer, Float, Boolean, String, BitString, List, IntList, OidList,
    AConst,
}

walk_fields! {
    AArrayExpr { elements },
    AConst {},
    AExpr { name, lexpr, rexpr },
    AIndices { lidx, uidx },
    AIndirection { arg, indirection },
    AStar {},
    AccessPriv { cols },
    Aggref { xpr, aggargtypes, aggdirectargs, args, aggorder, aggdistinct, aggfilter },
    Alias { colnames },
    AlterCollationStmt { collname },
    AlterDatabaseRefreshCollStmt {},
    AlterDatabaseSetStmt { setstmt },
    AlterDatabaseStmt { options },
    AlterDefaultPrivilegesStmt { options, action },
    AlterDomainStmt { type_name, def },
    AlterEnumStmt { type_name },
    AlterEventTrigStmt {},
    AlterExtensionContentsStmt { object },
    AlterExtensionStmt { options },
    AlterFdwStmt { func_options, options },
    AlterForeignServerStmt { options },
    AlterFunctionStmt { func, actions },
    AlterObjectDependsStmt { relation, object, extname },
    AlterObjectSchemaStmt { relation, object },
    AlterOpFamilyStmt { opfamilyname, items },
    AlterOperatorStmt { opername, options },
    AlterOwnerStmt { relation, object, newowner },
    AlterPolicyStmt { table, roles, qual, with_check },
    AlterPublicationStmt { options, pubobjects },
    AlterRoleSetStmt { role, setstmt },
    AlterRoleStmt { role, options },
    AlterSeqStmt { sequence, options },
    AlterStatsStmt { defnames, stxstattarget },
    AlterSubscriptionStmt { publication, options },
    AlterSystemStmt { setstmt },
    AlterTableCmd { newowner, def },
    AlterTableMoveAllStmt { roles },
    AlterTableSpaceOptionsStmt { options },
    AlterTableStmt { relation, cmds },
    AlterTsConfigurationStmt { cfgname, tokentype, dicts },
    AlterTsDictionaryStmt { dictname, options },
    AlterTypeStmt { type_name, options },
    AlterUserMappingStmt { user, options },
    AlternativeSubPlan { xpr, subplans },
    ArrayCoerceExpr { xpr, arg, elemexpr },
    ArrayExpr { xpr, elements },
    AtAlterConstraint {},
    BitString {},
    BoolExpr { xpr, args },
    Boolean {},
    BooleanTest { xpr, arg },
    CallContext {},
    CallStmt { funccall, funcexpr, outargs },
    CaseTestExpr { xpr },
    CheckPointStmt {},
    ClosePortalStmt {},
    ClusterStmt { relation, params },
    CoalesceExpr { xpr, args },
    CoerceToDomain { xpr, arg },
    CoerceToDomainValue { xpr },
    CoerceViaIo { xpr, arg },
    CollateClause { arg, collname },
    CollateExpr { xpr, arg },
    ColumnDef {
        type_name, raw_default, cooked_default, identity_sequence, coll_clause, constraints,
        fdwoptions,
    },
    ColumnRef { fields },
    CommentStmt { object },
    CommonTableExpr {
        aliascolnames, ctequery, search_clause, cycle_clause, ctecolnames, ctecoltypes,
        ctecoltypmods, ctecolcollations,
    },
    CompositeTypeStmt { typevar, coldeflist },
    Constraint {
        raw_expr, keys, including, exclusions, options, where_clause, pktable, fk_attrs, pk_attrs,
        fk_del_set_cols, old_conpfeqop,
    },
    ConstraintsSetStmt { constraints },
    ConvertRowtypeExpr { xpr, arg },
    CopyStmt { relation, query, attlist, options, where_clause },
    CreateAmStmt { handler_name },
    CreateCastStmt { sourcetype, targettype, func },
    CreateConversionStmt { conversion_name, func_name },
    CreateDomainStmt { domainname, type_name, coll_clause, constraints },
    CreateEnumStmt { type_name, vals },
    CreateEventTrigStmt { whenclause, funcname },
    CreateExtensionStmt { options },
    CreateFdwStmt { func_options, options },
    CreateForeignServerStmt { options },
    CreateForeignTableStmt { base_stmt, options },
    CreateFunctionStmt { funcname, parameters, return_type, options, sql_body },
    CreateOpClassItem { name, order_family, class_args, storedtype },
    CreateOpClassStmt { opclassname, opfamilyname, datatype, items },
    CreateOpFamilyStmt { opfamilyname },
    CreatePLangStmt { plhandler, plinline, plvalidator },
    CreatePolicyStmt { table, roles, qual, with_check },
    CreatePublicationStmt { options, pubobjects },
    CreateRangeStmt { type_name, params },
    CreateRoleStmt { options },
    CreateSchemaStmt { authrole, schema_elts },
    CreateSeqStmt { sequence, options },
    CreateStatsStmt { defnames, stat_types, exprs, relations },
    CreateStmt {
        relation, table_elts, inh_relations, partbound, partspec, of_typename, constraints,
        nnconstraints, options,
    },
    CreateSubscriptionStmt { publication, options },
    CreateTableAsStmt { query, into },
    CreateTableSpaceStmt { owner, options },
    CreateTransformStmt { type_name, fromsql, tosql },
    CreateTrigStmt { relation, funcname, args, columns, when_clause, transition_rels, constrrel },
    CreateUserMappingStmt { user, options },
    CreatedbStmt { options },
    CteCycleClause { cycle_col_list, cycle_mark_value, cycle_mark_default },
    CteSearchClause { search_col_list },
    CurrentOfExpr { xpr },
    DeallocateStmt {},
    DeclareCursorStmt { query },
    DefElem { arg },
    DefineStmt { defnames, args, definition },
    DiscardStmt {},
    DistinctExpr { xpr, args },
    DoStmt { args },
    DropOwnedStmt { roles },
    DropRoleStmt { roles },
    DropStmt { objects },
    DropSubscriptionStmt {},
    DropTableSpaceStmt {},
    DropUserMappingStmt { user },
    DropdbStmt { options },
    ExecuteStmt { params },
    ExplainStmt { query, options },
    FetchStmt {},
    FieldSelect { xpr, arg },
    FieldStore { xpr, arg, newvals, fieldnums },
    Float {},
    FromExpr { fromlist, quals },
    FuncExpr { xpr, args },
    FunctionParameter { arg_type, defexpr },
    GrantRoleStmt { granted_roles, grantee_roles, opt, grantor },
    GrantStmt { objects, privileges, grantees, grantor },
    GroupingFunc { xpr, args, refs },
    GroupingSet { content },
    ImportForeignSchemaStmt { table_list, options },
    IndexElem { expr, collation, opclass, opclassopts },
    IndexStmt {
        relation, index_params, index_including_params, options, where_clause, exclude_op_names,
    },
    InferClause { index_elems, where_clause },
    InferenceElem { xpr, expr },
    InlineCodeBlock {},
    IntList { items },
    Integer {},
    JsonAggConstructor { output, agg_filter, agg_order, over },
    JsonArgument { val },
    JsonArrayAgg { constructor, arg },
    JsonArrayConstructor { exprs, output },
    JsonArrayQueryConstructor { query, output, format },
    JsonBehavior { expr },
    JsonConstructorExpr { xpr, args, func, coercion, returning },
    JsonExpr {
        xpr, formatted_expr, format, path_spec, returning, passing_names, passing_values, on_empty,
        on_error,
    },
    JsonFormat {},
    JsonFuncExpr { context_item, pathspec, passing, output, on_empty, on_error },
    JsonIsPredicate { expr, format },
    JsonKeyValue { key, value },
    JsonObjectAgg { constructor, arg },
    JsonObjectConstructor { exprs, output },
    JsonOutput { type_name, returning },
    JsonParseExpr { expr, output },
    JsonReturning { format },
    JsonScalarExpr { expr, output },
    JsonSerializeExpr { expr, output },
    JsonTable { context_item, pathspec, passing, columns, on_error, alias },
    JsonTableColumn { type_name, pathspec, format, columns, on_empty, on_error },
    JsonTablePath {},
    JsonTablePathScan { plan, path, child },
    JsonTablePathSpec { string },
    JsonTableSiblingJoin { plan, lplan, rplan },
    JsonValueExpr { raw_expr, formatted_expr, format },
    List { items },
    ListenStmt {},
    LoadStmt {},
    LockStmt { relations },
    LockingClause { locked_rels },
    MergeAction { qual, target_list, update_colnos },
    MergeSupportFunc { xpr },
    MinMaxExpr { xpr, args },
    MultiAssignRef { source },
    NamedArgExpr { xpr, arg },
    NextValueExpr { xpr },
    NotifyStmt {},
    NullIfExpr { xpr, args },
    NullTest { xpr, arg },
    ObjectWithArgs { objname, objargs, objfuncargs },
    OidList { items },
    OnConflictClause { infer, target_list, where_clause },
    OnConflictExpr {
        arbiter_elems, arbiter_where, on_conflict_set, on_conflict_where, excl_rel_tlist,
    },
    OpExpr { xpr, args },
    Param { xpr },
    ParamRef {},
    PartitionBoundSpec { listdatums, lowerdatums, upperdatums },
    PartitionCmd { name, bound },
    PartitionElem { expr, collation, opclass },
    PartitionRangeDatum { value },
    PartitionSpec { part_params },
    PlAssignStmt { indirection, val },
    PrepareStmt { argtypes, query },
    PublicationObjSpec { pubtable },
    PublicationTable { relation, where_clause, columns },
    Query {
        utility_stmt, cte_list, rtable, rteperminfos, jointree, merge_action_list,
        merge_join_condition, target_list, on_conflict, returning_list, group_clause, grouping_sets,
        having_qual, window_clause, distinct_clause, sort_clause, limit_offset, limit_count,
        row_marks, set_operations, constraint_deps, with_check_options,
    },
    RangeFunction { functions, alias, coldeflist },
    RangeSubselect { subquery, alias },
    RangeTableFunc { docexpr, rowexpr, namespaces, columns, alias },
    RangeTableFuncCol { type_name, colexpr, coldefexpr },
    RangeTableSample { relation, method, args, repeatable },
    RangeTblEntry {
        alias, eref, tablesample, subquery, joinaliasvars, joinleftcols, joinrightcols,
        join_using_alias, functions, tablefunc, values_lists, coltypes, coltypmods, colcollations,
        groupexprs, security_quals,
    },
    RangeTblFunction { funcexpr, funccolnames, funccoltypes, funccoltypmods, funccolcollations },
    RangeTblRef {},
    RawStmt { stmt },
    ReassignOwnedStmt { roles, newrole },
    RefreshMatViewStmt { relation },
    ReindexStmt { relation, params },
    RelabelType { xpr, arg },
    RenameStmt { relation, object },
    ReplicaIdentityStmt {},
    ReturnStmt { returnval },
    ReturningClause { options, exprs },
    ReturningExpr { xpr, retexpr },
    ReturningOption {},
    RoleSpec {},
    RowCompareExpr { xpr, opnos, opfamilies, inputcollids, largs, rargs },
    RowExpr { xpr, args, colnames },
    RowMarkClause {},
    RtePermissionInfo {},
    RuleStmt { relation, where_clause, actions },
    ScalarArrayOpExpr { xpr, args },
    SecLabelStmt { object },
    SetOperationStmt { larg, rarg, col_types, col_typmods, col_collations, group_clauses },
    SetToDefault { xpr },
    SortBy { node, use_op },
    SortGroupClause {},
    SqlValueFunction { xpr },
    StatsElem { expr },
    String {},
    SubLink { xpr, testexpr, oper_name, subselect },
    SubPlan { xpr, testexpr, param_ids, set_param, par_param, args },
    SubscriptingRef { xpr, refupperindexpr, reflowerindexpr, refexpr, refassgnexpr },
    TableFunc {
        ns_uris, ns_names, docexpr, rowexpr, colnames, coltypes, coltypmods, colcollations,
        colexprs, coldefexprs, colvalexprs, passingvalexprs, plan,
    },
    TableLikeClause { relation },
    TableSampleClause { args, repeatable },
    TargetEntry { xpr, expr },
    TransactionStmt { options },
    TriggerTransition {},
    TruncateStmt { relations },
    TypeCast { arg, type_name },
    TypeName { names, typmods, array_bounds },
    UnlistenStmt {},
    VacuumRelation { relation, va_cols },
    VacuumStmt { options, rels },
    Var { xpr },
    VariableSetStmt { args },
    VariableShowStmt {},
    ViewStmt { view, aliases, query, options },
    WindowClause { partition_clause, order_clause, start_offset, end_offset },
    WindowDef { partition_clause, order_clause, start_offset, end_offset },
    WindowFunc { xpr, args, aggfilter, run_condition },
    WindowFuncRunCondition { xpr, arg },
    WithCheckOption { qual },
    XmlExpr { xpr, named_args, arg_names, args },
    XmlSerialize { expr, type_name },
}

impl Walk for protobuf::RangeVar {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        c.relation(self);
    }
}

/// Built-in functions that do what a statement kind does, decided as that kind too:
/// `pg_notify` sends a notification as `NOTIFY` does, `current_setting` and
/// `pg_show_all_settings` read settings as `SHOW` does (custom settings such as
/// `app.jwt_secret` are a common place for secrets). Matched on the name whatever its
/// schema: a look-alike in another schema gets the kind too, which errs on the side of
/// refusing (and the catalog check flags it as user-defined anyway).
const FUNCTION_KINDS: &[(&str, &str)] = &[
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
const SET_RETURNING: &[&str] = &[
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

fn returns_rows(f: &protobuf::FuncCall) -> bool {
    match f.funcname.last().and_then(|n| n.node.as_ref()) {
        Some(NodeEnum::String(s)) => SET_RETURNING.contains(&s.sval.to_ascii_lowercase().as_str()),
        _ => false,
    }
}

/// `unnest(ARRAY[...])`: one row per element written, whatever their values.
fn unnests_an_array(f: &protobuf::FuncCall) -> bool {
    matches!(
        f.funcname.last().and_then(|n| n.node.as_ref()),
        Some(NodeEnum::String(s)) if s.sval.eq_ignore_ascii_case("unnest")
    ) && !f.args.is_empty()
        && f.args
            .iter()
            .all(|a| matches!(a.node, Some(NodeEnum::AArrayExpr(_))))
}

impl Walk for protobuf::JoinExpr {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        self.larg.walk(c);
        self.rarg.walk(c);
        // `USING (a)` names columns as strings; `NATURAL` compares columns it never names.
        for name in &self.using_clause {
            if let Some(NodeEnum::String(s)) = &name.node {
                c.outputs.filtered.push(s.sval.clone());
            }
        }
        c.outputs.filtered_whole_row |= self.is_natural;
        self.join_using_alias.walk(c);
        c.filtering(|c| self.quals.walk(c));
        self.alias.walk(c);
    }
}

/// `CASE x WHEN ...` compares `x`, `CASE WHEN cond` tests `cond`: both choose what the
/// result shows, like a WHERE.
impl Walk for protobuf::CaseExpr {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        self.xpr.walk(c);
        c.filtering(|c| self.arg.walk(c));
        self.args.walk(c);
        self.defresult.walk(c);
    }
}

impl Walk for protobuf::CaseWhen {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        self.xpr.walk(c);
        c.filtering(|c| self.expr.walk(c));
        self.result.walk(c);
    }
}

impl Walk for protobuf::MergeWhenClause {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        c.filtering(|c| self.condition.walk(c));
        self.target_list.walk(c);
        self.values.walk(c);
    }
}

impl Walk for protobuf::IntoClause {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        if let Some(rel) = &self.rel {
            c.table(rel);
        }
        self.col_names.walk(c);
        self.options.walk(c);
        self.view_query.walk(c);
    }
}

/// Brings the CTE names into scope for the rest of the statement; the statement removes
/// them when it ends. A plain CTE sees only the CTEs before it (`WITH t AS (SELECT * FROM
/// t)` reads the table `t`), a `WITH RECURSIVE` one sees all of them, itself included.
impl Walk for protobuf::WithClause {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        let name = |n: &'t Node| match &n.node {
            Some(NodeEnum::CommonTableExpr(cte)) => Some(cte.ctename.as_str()),
            _ => None,
        };
        if self.recursive {
            c.ctes.extend(self.ctes.iter().filter_map(name));
            self.ctes.walk(c);
        } else {
            for cte in &self.ctes {
                cte.walk(c);
                c.ctes.extend(name(cte));
            }
        }
    }
}

impl Walk for protobuf::ResTarget {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        self.indirection.walk(c);
        c.in_output += 1;
        let stars = c.star_refs;
        let first_reference = c.outputs.referenced.len();
        self.val.walk(c);
        // `c.*` as a select-list item is expanded by the server into the columns with their
        // own names; inside an expression (`row_to_json(c.*)`) it is a whole row.
        let bare_star = matches!(
            self.val.as_ref().and_then(|v| v.node.as_ref()),
            Some(NodeEnum::ColumnRef(cr))
                if matches!(cr.fields.last().and_then(|f| f.node.as_ref()), Some(NodeEnum::AStar(_)))
        );
        if bare_star {
            c.star_refs = stars;
            c.outputs.output_star = true;
        } else if c.in_filter == 0 && self.val.is_some() {
            let item = OutputItem {
                name: if self.name.is_empty() {
                    yielded_name(self.val.as_deref())
                } else {
                    Some(self.name.clone())
                },
                columns: c.outputs.referenced[first_reference..].to_vec(),
                whole_row: c.star_refs > stars,
            };
            c.outputs.items.push(item);
        }
        c.in_output -= 1;
    }
}

/// The name PostgreSQL gives an output expression without an alias, where the text alone
/// settles it: a column keeps its name, a function call takes the function's. `None` for
/// the rest (`?column?`, a cast's type name, `case`, ...): the caller treats an unknown name
/// as possibly any name.
fn yielded_name(val: Option<&Node>) -> Option<String> {
    match val.and_then(|v| v.node.as_ref())? {
        NodeEnum::ColumnRef(cr) => match cr.fields.last().and_then(|f| f.node.as_ref()) {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        },
        NodeEnum::FuncCall(f) => match f.funcname.last().and_then(|n| n.node.as_ref()) {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        },
        // `x::t` keeps the name of `x` when it has one, else takes the type's.
        NodeEnum::TypeCast(tc) => yielded_name(tc.arg.as_deref()).or_else(|| {
            match tc
                .type_name
                .as_ref()
                .and_then(|t| t.names.last())
                .and_then(|n| n.node.as_ref())
            {
                Some(NodeEnum::String(s)) => Some(s.sval.clone()),
                _ => None,
            }
        }),
        _ => None,
    }
}

impl Walk for protobuf::SelectStmt {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        let scope = c.ctes.len();
        self.with_clause.walk(c);
        self.into_clause.walk(c);
        self.target_list.walk(c);
        // What a FROM item computes (`LATERAL (VALUES (x))`, `unnest(ARRAY[x])`) can
        // become a result column.
        c.in_output += 1;
        self.from_clause.walk(c);
        c.in_output -= 1;
        c.filtering(|c| {
            self.distinct_clause.walk(c);
            self.where_clause.walk(c);
            self.group_clause.walk(c);
            self.having_clause.walk(c);
            self.window_clause.walk(c);
        });
        self.values_lists.walk(c);
        c.filtering(|c| {
            self.sort_clause.walk(c);
            self.limit_offset.walk(c);
            self.limit_count.walk(c);
        });
        c.outputs.positional |= self.group_clause.iter().any(is_position)
            || self.distinct_clause.iter().any(is_position)
            || self.sort_clause.iter().any(|s| match &s.node {
                Some(NodeEnum::SortBy(by)) => by.node.as_deref().is_some_and(is_position),
                _ => false,
            });
        self.locking_clause.walk(c);
        self.larg.walk(c);
        self.rarg.walk(c);
        c.ctes.truncate(scope);
    }
}

impl Walk for protobuf::InsertStmt {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        let scope = c.ctes.len();
        self.with_clause.walk(c);
        if let Some(rel) = &self.relation {
            c.table(rel);
        }
        self.cols.walk(c);
        self.select_stmt.walk(c);
        self.on_conflict_clause.walk(c);
        self.returning_clause.walk(c);
        c.ctes.truncate(scope);
    }
}

impl Walk for protobuf::UpdateStmt {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        let scope = c.ctes.len();
        self.with_clause.walk(c);
        if let Some(rel) = &self.relation {
            c.table(rel);
        }
        self.target_list.walk(c);
        c.filtering(|c| self.where_clause.walk(c));
        self.from_clause.walk(c);
        self.returning_clause.walk(c);
        c.ctes.truncate(scope);
    }
}

impl Walk for protobuf::DeleteStmt {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        let scope = c.ctes.len();
        self.with_clause.walk(c);
        if let Some(rel) = &self.relation {
            c.table(rel);
        }
        self.using_clause.walk(c);
        c.filtering(|c| self.where_clause.walk(c));
        self.returning_clause.walk(c);
        c.ctes.truncate(scope);
    }
}

impl Walk for protobuf::MergeStmt {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        let scope = c.ctes.len();
        self.with_clause.walk(c);
        if let Some(rel) = &self.relation {
            c.table(rel);
        }
        self.source_relation.walk(c);
        c.filtering(|c| self.join_condition.walk(c));
        self.merge_when_clauses.walk(c);
        self.returning_clause.walk(c);
        c.ctes.truncate(scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(sql: &str) -> Vec<Classified> {
        classify(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn one(sql: &str) -> SqlStatement {
        let mut v = all(sql);
        assert_eq!(v.len(), 1, "{sql}: {v:?}");
        v.remove(0).statement
    }

    fn kinds(sql: &str) -> Vec<String> {
        one(sql).kinds
    }

    fn tables(sql: &str) -> Vec<String> {
        one(sql).tables
    }

    fn functions(sql: &str) -> Vec<String> {
        one(sql).functions
    }

    fn parse_err(sql: &str) -> (String, Option<usize>) {
        match classify(sql) {
            Err(ClassifyError::Parse { message, cursor }) => (message, cursor),
            other => panic!("{sql}: {other:?}"),
        }
    }

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
    fn unparseable_text_is_an_error_with_position() {
        let (m, c) = parse_err("SELEC 1");
        assert_eq!(m, "syntax error at or near \"SELEC\"");
        assert_eq!(c, Some(1));
        let (m, c) = parse_err("DELETE FROM");
        assert_eq!(m, "syntax error at end of input");
        assert_eq!(c, Some(12));
        assert_eq!(parse_err("SELECT 1 FROM FROM").1, Some(15));
        assert_eq!(
            parse_err("SELECT 'é' FROM FROM").1,
            Some(17),
            "counted in characters"
        );
        // The valid first statement does not make the text acceptable.
        assert_eq!(parse_err("SELECT 1; SELEC 2").1, Some(11));
        let e = classify("SELEC 1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "SQL does not parse: syntax error at or near \"SELEC\" (at character 1)"
        );
    }

    #[test]
    fn error_messages_do_not_echo_long_sql() {
        let secret = "x".repeat(500);
        let (m, c) = parse_err(&format!("SELECT 1; SELECT '{secret}"));
        assert!(
            m.starts_with("unterminated quoted string at or near \"'xxx"),
            "{m}"
        );
        assert!(m.len() < 120, "{m}");
        assert_eq!(c, Some(18));
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

    #[test]
    fn do_bodies_are_opaque() {
        let s = one("DO $$ BEGIN DELETE FROM t; END $$");
        assert_eq!(s.kinds, ["do"]);
        assert!(s.tables.is_empty() && !s.no_where);
        let s = one("DO LANGUAGE plpgsql $body$ BEGIN PERFORM 1; END $body$");
        assert_eq!(s.kind, "do");
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
    fn grammar_level_bodies_are_walked() {
        let s =
            one("CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END");
        assert_eq!(s.kinds, ["ddl", "delete"]);
        assert_eq!(s.tables, ["t"]);
        assert!(s.no_where);
        let s = one("CREATE RULE r AS ON INSERT TO t DO INSTEAD UPDATE u SET a = 1");
        assert_eq!(s.kinds, ["ddl", "update"]);
        assert_eq!(s.tables, ["t", "u"]);
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

    #[test]
    fn texts_of_one_shape_share_a_classification_but_keep_their_own_text() {
        let classifier = Classifier::new();
        let one = "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;";
        let two = "SELECT abalance FROM pgbench_accounts WHERE aid = 777";
        let a = classifier.classify(one).unwrap();
        let b = classifier.classify(two).unwrap();
        assert_eq!(classifier.cached(), 1);
        assert_eq!(a[0].statement, b[0].statement);
        assert_eq!(a[0].fingerprint, b[0].fingerprint);
        assert_eq!(b[0].text, two);
        assert_eq!(a[0].normalized, b[0].normalized);
        assert!(!b[0].normalized.contains("777"));
        // A hit gives what a full parse gives, but for the normalised form, which is the
        // shape's (every literal numbered in order).
        for sql in [
            two,
            "select c.name, o.total from customers c join orders o on o.cid = c.id where c.email = 'a@b.c' and o.total > 10.5",
            "with d as (delete from t where id = 3 returning *) select * from d",
            "update accounts set balance = balance - 5 where id = 9",
            "delete from customers",
            "insert into t (a, b) values (1, 'x'), (2, 'y') on conflict (a) do update set b = 'z'",
            "select pg_read_file('/etc/passwd')",
        ] {
            let cached = classifier.classify(sql).unwrap();
            let again = classifier.classify(&sql.replace('5', "6")).unwrap();
            let full = classify(sql).unwrap();
            assert_eq!(cached[0].statement, full[0].statement, "{sql}");
            assert_eq!(again[0].statement, full[0].statement, "{sql}");
            assert_eq!(cached[0].fingerprint, full[0].fingerprint, "{sql}");
            assert_eq!(cached[0].copy, full[0].copy, "{sql}");
            assert_eq!(cached[0].text, full[0].text, "{sql}");
        }
    }

    #[test]
    fn classifier_caches_successes() {
        let classifier = Classifier::new();
        // A comment keeps the text away from the shape cache: this is the exact-text one.
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 12345 -- x";
        let a = classifier.classify(sql).unwrap();
        let b = classifier.classify(sql).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&a[..], &classify(sql).unwrap()[..]);
        assert_eq!(classifier.cached(), 1);

        assert!(classifier.classify("SELEC 1").is_err());
        assert_eq!(classifier.cached(), 1, "errors are not cached");

        let long = format!("SELECT 1 /* {} */", "x".repeat(CACHE_MAX_TEXT_BYTES));
        let a = classifier.classify(&long).unwrap();
        let b = classifier.classify(&long).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(classifier.cached(), 1, "long texts are not cached");

        for i in 0..CACHE_MAX_ENTRIES + 10 {
            classifier.classify(&format!("SELECT {i} -- n")).unwrap();
        }
        assert!(classifier.cached() <= CACHE_MAX_ENTRIES);
        assert!(classifier.cached() >= 10);
        assert!(classifier.classify("").unwrap().is_empty());
    }

    #[test]
    fn classifier_is_shared_across_threads() {
        let classifier = Arc::new(Classifier::new());
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let classifier = Arc::clone(&classifier);
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let sql = format!("SELECT * FROM t{} WHERE id = {i}", i % 7);
                        let v = classifier.classify(&sql).unwrap();
                        assert_eq!(v[0].statement.tables, [format!("t{}", i % 7)], "thread {t}");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    /// `cargo test --release -p portcullis-proxy-pg classify::tests::timing -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, not a check"]
    fn timing() {
        let cases = [
            (
                "pgbench",
                "SELECT abalance FROM pgbench_accounts WHERE aid = 12345".to_owned(),
            ),
            (
                "cte+3-way join",
                "WITH recent AS (SELECT customer_id, sum(amount) AS total FROM orders \
                 WHERE created_at > now() - interval '7 days' GROUP BY customer_id) \
                 SELECT c.name, r.total, a.city FROM customers c \
                 JOIN recent r ON r.customer_id = c.id \
                 JOIN addresses a ON a.customer_id = c.id WHERE c.region = 'eu' \
                 ORDER BY r.total DESC LIMIT 10"
                    .to_owned(),
            ),
        ];
        for (name, sql) in &cases {
            let n = 20_000;
            let start = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(classify(std::hint::black_box(sql)).unwrap());
            }
            let miss = start.elapsed() / n;
            let start = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(
                    pg_query::parse(std::hint::black_box(sql), ParserOptions::DEFAULT).unwrap(),
                );
            }
            let parse = start.elapsed() / n;
            let classifier = Classifier::new();
            classifier.classify(sql).unwrap();
            let n = 1_000_000;
            let start = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(classifier.classify(std::hint::black_box(sql)).unwrap());
            }
            let hit = start.elapsed() / n;
            println!("{name}: miss {miss:?} (pg_query::parse alone {parse:?}), hit {hit:?}");
        }
    }
}
