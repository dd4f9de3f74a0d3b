//! Rules to verdicts: the only place Portcullis decides.
//!
//! [`Policy::compile`] turns the `[[rules]]` of a validated [`Config`] into a form built for the
//! hot path: globs become [`GlobSet`]s, `who.kinds` a bit mask, `when` conditions compiled CEL
//! programs, each rule's verdict is built once (so answering clones a few `Arc`s), and rules
//! are indexed by target, by the verb they can apply to and by their decision. A decision
//! therefore looks only at rules that could match, in the order that lets it stop early:
//! deny rules first (any deny wins), then hold rules, then allow rules; nothing matched means
//! deny. A rule without `when` is evaluated without allocating.
//!
//! The crate is pure: no I/O, no clock, no global state. Adapters turn their wire messages
//! into an [`Action`], call [`Policy::decide`], and enforce the [`Verdict`] they get.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use cel::objects::{Key, Map as CelMap};
use cel::{Context as CelContext, Env as CelEnv, Program, Value as CelValue};
use globset::{Glob, GlobSet, GlobSetBuilder};
use portcullis_config::{Config, ConfigError, RuleDecision, SqlMatch};
use portcullis_model::{
    Action, ActiveGrant, ApprovalRequirement, AuthMethod, Decision, Identity, IdentityKind,
    SqlStatement, Verdict,
};

pub use portcullis_config::STATEMENT_KINDS;
use sha2::{Digest as _, Sha256};

/// Why a rule set could not be compiled. Every error names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A rule is invalid (bad CEL in `when`, a glob that does not build); the inner error
    /// carries `file:line: message`.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// A compiled rule set. Cheap to share (`Arc<Policy>`); every method takes `&self`.
pub struct Policy {
    rules: Vec<CompiledRule>,
    /// Rules that can apply to each configured target: the target's own rules and the `*`
    /// rules, merged in file order.
    by_target: HashMap<Box<str>, TargetIndex>,
    /// Only the `*` rules: for a target the configuration does not name.
    wildcard: TargetIndex,
    version: Arc<str>,
    /// The CEL standard environment, built once: every evaluation context borrows it.
    env: Arc<CelEnv>,
}

// The adapters share one policy across tasks and threads; keep that a compile-time fact.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
};

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("version", &self.version)
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

/// The verbs rules speak about. Each has its own list of globs in a rule; any other verb is
/// decided only by whole-target rules. `Sql` is every SQL statement (an action with `sql`),
/// decided by whole-target rules and rules with an SQL sub-table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Tools = 0,
    Resources = 1,
    Prompts = 2,
    Other = 3,
    Sql = 4,
}

const VERBS: [Verb; 5] = [
    Verb::Tools,
    Verb::Resources,
    Verb::Prompts,
    Verb::Other,
    Verb::Sql,
];

impl Verb {
    fn of_action(action: &Action<'_>) -> Verb {
        match action.sql {
            Some(_) => Verb::Sql,
            None => Verb::of(action.verb),
        }
    }

    fn of(verb: &str) -> Verb {
        match verb {
            "tools/call" => Verb::Tools,
            "resources/read" => Verb::Resources,
            "prompts/get" => Verb::Prompts,
            _ => Verb::Other,
        }
    }
}

/// One list of globs (`tools`, `resources` or `prompts`) of a rule.
///
/// Most globs in practice are a name, `prefix_*`, `*suffix` or `*`. Those are answered with a
/// string comparison; only the rest go to a [`GlobSet`], whose `is_match` runs every matching
/// strategy it has and costs around a hundred nanoseconds even for one literal glob. The
/// shortcuts give the same answers as globset's defaults, under which `*` also crosses `/`.
#[derive(Debug)]
struct Globs {
    simple: Box<[Simple]>,
    complex: Option<GlobSet>,
}

#[derive(Debug)]
enum Simple {
    Any,
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
}

impl Simple {
    /// The characters that make globset treat a pattern as more than text.
    const META: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

    fn parse(pattern: &str) -> Option<Simple> {
        let plain = |s: &str| !s.contains(Self::META);
        if pattern == "*" || pattern == "**" {
            Some(Simple::Any)
        } else if plain(pattern) {
            Some(Simple::Exact(pattern.into()))
        } else if let Some(prefix) = pattern.strip_suffix('*').filter(|p| plain(p)) {
            Some(Simple::Prefix(prefix.into()))
        } else {
            pattern
                .strip_prefix('*')
                .filter(|s| plain(s))
                .map(|suffix| Simple::Suffix(suffix.into()))
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Simple::Any => true,
            Simple::Exact(exact) => name == &**exact,
            Simple::Prefix(prefix) => name.starts_with(&**prefix),
            Simple::Suffix(suffix) => name.ends_with(&**suffix),
        }
    }
}

impl Globs {
    fn build(patterns: &[String]) -> Result<Globs, globset::Error> {
        let mut simple = Vec::new();
        let mut complex = GlobSetBuilder::new();
        let mut any_complex = false;
        for pattern in patterns {
            match Simple::parse(pattern) {
                Some(s) => simple.push(s),
                None => {
                    complex.add(Glob::new(pattern)?);
                    any_complex = true;
                }
            }
        }
        Ok(Globs {
            simple: simple.into(),
            complex: if any_complex {
                Some(complex.build()?)
            } else {
                None
            },
        })
    }

    /// The rule names none of these: it says nothing about this verb.
    fn is_empty(&self) -> bool {
        self.simple.is_empty() && self.complex.is_none()
    }

    fn matches(&self, name: &str) -> bool {
        self.simple.iter().any(|s| s.matches(name))
            || self.complex.as_ref().is_some_and(|set| set.is_match(name))
    }
}

/// A compiled `when`.
struct Condition {
    program: Program,
    /// Which of [`VARIABLES`] the program mentions: only those are converted and bound, so
    /// `identity.kind == "agent"` never pays for converting a large `args`.
    uses: [bool; VARIABLES.len()],
}

struct CompiledRule {
    name: Arc<str>,
    kind: RuleDecision,
    /// The decision this rule answers with, built once.
    decision: Decision,
    groups: Box<[String]>,
    subjects: Box<[String]>,
    /// Bit `1 << kind` for each `who.kinds` entry; 0 means any kind.
    kinds: u8,
    /// No tools, resources, prompts or SQL sub-table: the rule covers every verb on its
    /// target, and every SQL statement as an SQL sub-table with empty lists would.
    whole_target: bool,
    /// Indexed by `Verb as usize` (tools, resources, prompts).
    globs: [Globs; 3],
    /// The rule's `allow`/`deny`/`hold` sub-table.
    sql: Option<SqlRule>,
    when: Option<Condition>,
    /// `requires_grant`: the allow applies only with a grant covering the request, and this
    /// is what a grant request under the rule must satisfy.
    grant: Option<Arc<ApprovalRequirement>>,
}

fn kind_bit(kind: IdentityKind) -> u8 {
    1 << (kind as u8)
}

/// A compiled SQL sub-table ([`SqlMatch`]); patterns lower-cased.
#[derive(Debug, Default)]
struct SqlRule {
    /// Bit `1 << i` for each `statements` entry `STATEMENT_KINDS[i]`; 0 means any kind.
    statements: u32,
    tables: Globs,
    functions: Globs,
    without_where: bool,
}

impl Default for Globs {
    fn default() -> Self {
        Globs {
            simple: Box::new([]),
            complex: None,
        }
    }
}

/// The bit of a statement kind; a kind this version does not know counts as `other`.
fn statement_bit(kind: &str) -> u32 {
    let i = STATEMENT_KINDS
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(STATEMENT_KINDS.len() - 1);
    1 << i
}

/// Schemas whose names may be left out: an unqualified table is looked up in `public` (the
/// default `search_path`), a function also in `pg_catalog`.
const TABLE_SCHEMAS: &[&str] = &["public"];
const FUNCTION_SCHEMAS: &[&str] = &["pg_catalog", "public"];

/// Whether `globs` match `name`, taking `schema.name` and `name` as the same for each of
/// `schemas`: `customers` matches `public.customers` and the reverse, never `sales.customers`.
fn matches_in_schemas(globs: &Globs, name: &str, schemas: &[&str]) -> bool {
    if globs.matches(name) {
        return true;
    }
    match name.split_once('.') {
        Some((schema, rest)) => schemas.contains(&schema) && globs.matches(rest),
        None => schemas
            .iter()
            .any(|schema| with_schema(schema, name, |q| globs.matches(q))),
    }
}

/// Calls `f` with `schema.name`, built on the stack (names are at most 63 bytes in
/// PostgreSQL, so the heap is needed only for names it would truncate anyway).
fn with_schema(schema: &str, name: &str, f: impl FnOnce(&str) -> bool) -> bool {
    let mut buf = [0u8; 256];
    let len = schema.len() + 1 + name.len();
    if len > buf.len() {
        return f(&format!("{schema}.{name}"));
    }
    buf[..schema.len()].copy_from_slice(schema.as_bytes());
    buf[schema.len()] = b'.';
    buf[schema.len() + 1..len].copy_from_slice(name.as_bytes());
    // Both parts are `str`s and `.` is ASCII, so this is UTF-8.
    std::str::from_utf8(&buf[..len]).is_ok_and(f)
}

/// How an SQL statement fits a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit<'a> {
    Yes,
    No,
    /// An allow rule would cover the statement but for this privileged or flagged function
    /// (and why it needs naming).
    Privileged(&'a str, &'a str),
    /// An allow rule would cover the statement but for its UPDATE/DELETE without WHERE.
    NoWhere,
}

impl SqlRule {
    fn compile(m: &SqlMatch) -> Result<SqlRule, globset::Error> {
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

    fn table(&self, table: &str) -> bool {
        matches_in_schemas(&self.tables, table, TABLE_SCHEMAS)
    }

    fn function(&self, function: &str) -> bool {
        matches_in_schemas(&self.functions, function, FUNCTION_SCHEMAS)
    }

    /// For `allow`: every kind, every table and every privileged function is covered, and a
    /// statement without WHERE is allowed as such.
    fn allows<'a>(&self, stmt: &'a SqlStatement) -> Fit<'a> {
        if self.statements != 0
            && !Self::kinds(stmt).all(|k| self.statements & statement_bit(k) != 0)
        {
            return Fit::No;
        }
        if !self.tables.is_empty() && !stmt.tables.iter().all(|t| self.table(t)) {
            return Fit::No;
        }
        for function in &stmt.functions {
            if let Some(why) = privileged_function(function)
                && !self.function(function)
            {
                return Fit::Privileged(function, why);
            }
        }
        // Functions the server's catalog shows may write or are not the server's own: the
        // parser cannot see what they do, so they need naming like privileged ones.
        for flagged in &stmt.flagged_functions {
            if !self.function(&flagged.name) {
                return Fit::Privileged(&flagged.name, &flagged.why);
            }
        }
        if stmt.no_where && !self.without_where {
            return Fit::NoWhere;
        }
        Fit::Yes
    }

    /// For `deny` and `hold`: the statement meets every list the rule has.
    fn matches(&self, stmt: &SqlStatement) -> bool {
        (self.statements == 0 || Self::kinds(stmt).any(|k| self.statements & statement_bit(k) != 0))
            && (self.tables.is_empty() || stmt.tables.iter().any(|t| self.table(t)))
            && (self.functions.is_empty() || stmt.functions.iter().any(|f| self.function(f)))
            && (!self.without_where || stmt.no_where)
    }
}

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

/// `schema.name` and `name` are the same table for `public` (see [`TABLE_SCHEMAS`]), with
/// a grant's `prefix*` patterns ([`portcullis_model::name_matches`]).
fn grant_table_matches(pattern: &str, table: &str) -> bool {
    use portcullis_model::name_matches;
    if name_matches(pattern, table) {
        return true;
    }
    match table.split_once('.') {
        Some((schema, rest)) => TABLE_SCHEMAS.contains(&schema) && name_matches(pattern, rest),
        None => TABLE_SCHEMAS
            .iter()
            .any(|schema| with_schema(schema, table, |q| name_matches(pattern, q))),
    }
}

/// Whether a grant covers an SQL statement: a whole-target grant always; one naming tables
/// only a statement whose every table it names (so a statement touching no table needs a
/// whole-target grant); one naming tools never.
fn grant_covers_sql(grant: &ActiveGrant, target: &str, stmt: &SqlStatement) -> bool {
    if grant.target != target {
        return false;
    }
    if grant.tools.is_empty() && grant.tables.is_empty() {
        return true;
    }
    !grant.tables.is_empty()
        && !stmt.tables.is_empty()
        && stmt
            .tables
            .iter()
            .all(|t| grant.tables.iter().any(|p| grant_table_matches(p, t)))
}

impl CompiledRule {
    /// Whether the rule can speak about this verb at all (used to build the index).
    fn covers(&self, verb: Verb) -> bool {
        match verb {
            Verb::Other => self.whole_target,
            Verb::Sql => self.whole_target || self.sql.is_some(),
            _ => self.whole_target || !self.globs[verb as usize].is_empty(),
        }
    }

    /// Everything but `when`, for any action: for an SQL statement, how it fits the rule's
    /// sub-table (all-covered for allow, any-matches for deny and hold).
    fn fit<'a>(&self, identity: &Identity, verb: Verb, action: &Action<'a>) -> Fit<'a> {
        match action.sql {
            Some(stmt) if verb == Verb::Sql => {
                if !self.who_matches(identity) {
                    return Fit::No;
                }
                // A whole-target rule is a sub-table with every list empty (building an
                // empty one allocates nothing).
                let empty;
                let sql = match &self.sql {
                    Some(sql) => sql,
                    None => {
                        empty = SqlRule::default();
                        &empty
                    }
                };
                match self.kind {
                    RuleDecision::Allow => sql.allows(stmt),
                    RuleDecision::Deny | RuleDecision::Hold => {
                        if self.sql.is_none() || sql.matches(stmt) {
                            Fit::Yes
                        } else {
                            Fit::No
                        }
                    }
                }
            }
            _ if self.applies(identity, verb, action.resource) => Fit::Yes,
            _ => Fit::No,
        }
    }

    fn who_matches(&self, identity: &Identity) -> bool {
        // Nested loops over short lists: no set to build, nothing allocated.
        (self.groups.is_empty()
            || identity
                .groups
                .iter()
                .any(|g| self.groups.iter().any(|r| r == g)))
            && (self.subjects.is_empty() || self.subjects.contains(&identity.subject))
            && (self.kinds == 0 || self.kinds & kind_bit(identity.kind) != 0)
    }

    /// Everything but `when`: caller, verb and resource.
    fn applies(&self, identity: &Identity, verb: Verb, resource: Option<&str>) -> bool {
        if !self.who_matches(identity) {
            return false;
        }
        if self.whole_target {
            return true;
        }
        match verb {
            Verb::Other | Verb::Sql => false,
            // A glob cannot match a resource that is not there: fail closed for allows,
            // and the default deny covers the rest.
            _ => resource.is_some_and(|r| self.globs[verb as usize].matches(r)),
        }
    }

    fn reason(&self) -> &str {
        match &self.decision {
            Decision::Deny { reason } => reason,
            _ => "",
        }
    }
}

/// Rule indices (into `Policy::rules`) for one verb, split by decision, each in file order.
#[derive(Debug, Default)]
struct Bucket {
    deny: Box<[usize]>,
    hold: Box<[usize]>,
    allow: Box<[usize]>,
}

#[derive(Debug, Default)]
struct TargetIndex {
    /// Indexed by `Verb as usize`.
    verbs: [Bucket; 5],
}

impl TargetIndex {
    fn build<'a>(rules: impl Iterator<Item = (usize, &'a CompiledRule)> + Clone) -> TargetIndex {
        let bucket = |verb: Verb| {
            let pick = |kind: RuleDecision| {
                rules
                    .clone()
                    .filter(|(_, r)| r.kind == kind && r.covers(verb))
                    .map(|(i, _)| i)
                    .collect()
            };
            Bucket {
                deny: pick(RuleDecision::Deny),
                hold: pick(RuleDecision::Hold),
                allow: pick(RuleDecision::Allow),
            }
        };
        TargetIndex {
            verbs: VERBS.map(bucket),
        }
    }
}

/// The outcome of a rule's `when`.
enum Cond {
    True,
    False,
    /// Evaluation failed or gave something other than a bool; the caller fails closed.
    Error(String),
}

impl Policy {
    /// Compiles `config.rules`. The configuration has been validated (targets exist, globs
    /// parse); what is left to find here is bad CEL in `when`, reported at its line.
    pub fn compile(config: &Config) -> Result<Policy, PolicyError> {
        let src = &config.source;
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.iter().enumerate() {
            let name = rule.name.get_ref();
            let globs = |list: &[String]| {
                Globs::build(list).map_err(|e| {
                    src.error_at(
                        rule.name.span(),
                        format!("rules[{i}] ({name}): bad glob: {e}"),
                    )
                })
            };
            let globs = [
                globs(&rule.tools)?,
                globs(&rule.resources)?,
                globs(&rule.prompts)?,
            ];
            let sql = match rule.sql() {
                None => None,
                Some(m) => Some(SqlRule::compile(m).map_err(|e| {
                    src.error_at(
                        rule.name.span(),
                        format!("rules[{i}] ({name}): bad glob: {e}"),
                    )
                })?),
            };
            // The same as `rule.decision` after `Config::parse`; computed again so that a
            // configuration built another way cannot turn a `deny.*` rule into an allow.
            let kind = rule.effective_decision();
            let when = match &rule.when {
                None => None,
                Some(when) => {
                    let text = when.get_ref();
                    let program = Program::compile(text).map_err(|e| {
                        // The parser reports one error per line; a config error is one line.
                        let detail = e
                            .errors
                            .iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join("; ");
                        src.error_at(
                            when.span(),
                            format!("rules[{i}] ({name}).when: invalid CEL {text:?}: {detail}"),
                        )
                    })?;
                    let references = program.references();
                    let uses = VARIABLES.map(|name| references.has_variable(name));
                    Some(Condition { program, uses })
                }
            };
            let decision = match kind {
                RuleDecision::Allow => Decision::Allow {
                    mask: rule.mask.as_deref().map(Arc::from),
                },
                RuleDecision::Deny => Decision::Deny {
                    reason: match &rule.reason {
                        Some(reason) => Arc::from(reason.as_str()),
                        None => Arc::from(format!("denied by rule {name}")),
                    },
                },
                RuleDecision::Hold => Decision::Hold(Arc::new(requirement(rule))),
            };
            rules.push(CompiledRule {
                name: Arc::from(name.as_str()),
                kind,
                decision,
                groups: rule.who.groups.clone().into(),
                subjects: rule.who.subjects.clone().into(),
                kinds: rule.who.kinds.iter().fold(0, |bits, &k| bits | kind_bit(k)),
                whole_target: globs.iter().all(Globs::is_empty) && sql.is_none(),
                globs,
                sql,
                when,
                grant: rule.requires_grant.then(|| Arc::new(requirement(rule))),
            });
        }

        let targets = |rules: &[CompiledRule], config: &Config| {
            config
                .targets
                .keys()
                .map(|target| {
                    let index = TargetIndex::build(rules.iter().enumerate().filter(|(i, _)| {
                        let t = config.rules[*i].target.get_ref();
                        t == "*" || t == target
                    }));
                    (Box::from(target.as_str()), index)
                })
                .collect::<HashMap<_, _>>()
        };
        let by_target = targets(&rules, config);
        let wildcard = TargetIndex::build(
            rules
                .iter()
                .enumerate()
                .filter(|(i, _)| config.rules[*i].target.get_ref() == "*"),
        );

        let digest = hex::encode(Sha256::digest(canonical_rules(config).as_bytes()));
        Ok(Policy {
            rules,
            by_target,
            wildcard,
            version: Arc::from(&digest[..16]),
            env: Arc::new(CelEnv::stdlib()),
        })
    }

    /// The policy version: the first 16 hex digits of the SHA-256 of a canonical rendering of
    /// the rules, so the same rules give the same version whatever the file's layout.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// How many rules were compiled.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    fn index(&self, target: &str) -> &TargetIndex {
        self.by_target.get(target).unwrap_or(&self.wildcard)
    }

    fn verdict(&self, rule: &CompiledRule, decision: Decision) -> Verdict {
        Verdict {
            decision,
            rule: Some(rule.name.clone()),
            policy_version: self.version.clone(),
            grant: None,
        }
    }

    /// Decides one action: the first matching deny, else the first matching hold, else the
    /// first matching allow, else deny.
    pub fn decide(&self, identity: &Identity, action: &Action<'_>) -> Verdict {
        let verb = Verb::of_action(action);
        let bucket = &self.index(action.target).verbs[verb as usize];
        let mut vars = CelInputs::new(identity, action);
        let applies = |i: &usize| self.rules[*i].fit(identity, verb, action) == Fit::Yes;

        for rule in bucket
            .deny
            .iter()
            .filter(|i| applies(i))
            .map(|&i| &self.rules[i])
        {
            match self.condition(rule, &mut vars) {
                Cond::True => return self.verdict(rule, rule.decision.clone()),
                Cond::False => {}
                // Fail closed: a deny whose condition cannot be judged applies, and says so.
                Cond::Error(e) => {
                    let reason = format!(
                        "{} (the rule's condition could not be evaluated, so it applies: {e})",
                        rule.reason()
                    );
                    return self.verdict(
                        rule,
                        Decision::Deny {
                            reason: reason.into(),
                        },
                    );
                }
            }
        }
        for rule in bucket
            .hold
            .iter()
            .filter(|i| applies(i))
            .map(|&i| &self.rules[i])
        {
            match self.condition(rule, &mut vars) {
                // Fail closed: an unjudgeable hold still holds, a person decides.
                Cond::True | Cond::Error(_) => return self.verdict(rule, rule.decision.clone()),
                Cond::False => {}
            }
        }
        let mut failed: Option<String> = None;
        // An allow rule that would apply but for a privileged function or a missing WHERE:
        // the refusal then says exactly that.
        let mut near_miss: Option<Fit<'_>> = None;
        for rule in bucket.allow.iter().map(|&i| &self.rules[i]) {
            match rule.fit(identity, verb, action) {
                Fit::Yes => {}
                Fit::No => continue,
                miss => {
                    if near_miss.is_none() && matches!(self.condition(rule, &mut vars), Cond::True)
                    {
                        near_miss = Some(miss);
                    }
                    continue;
                }
            }
            match self.condition(rule, &mut vars) {
                Cond::True if rule.grant.is_some() => {
                    let covers = |g: &&ActiveGrant| match action.sql {
                        Some(stmt) => grant_covers_sql(g, action.target, stmt),
                        None => g.covers(action.target, action.verb, action.resource),
                    };
                    match action.grants.iter().find(covers) {
                        Some(grant) => {
                            let mut verdict = self.verdict(rule, rule.decision.clone());
                            verdict.grant = Some(Arc::from(grant.id.as_str()));
                            return verdict;
                        }
                        None => {
                            failed.get_or_insert_with(|| {
                                let scope = match (action.sql, action.verb, action.resource) {
                                    (Some(stmt), _, _) if !stmt.tables.is_empty() => {
                                        format!(" --tables {}", stmt.tables.join(","))
                                    }
                                    (Some(_), _, _) => String::new(),
                                    (None, "tools/call", Some(tool)) => format!(" --tools {tool}"),
                                    _ => String::new(),
                                };
                                format!(
                                    " (rule {} allows it only with an active grant: ask for one with `portcullis access request --target {}{scope}`)",
                                    rule.name, action.target,
                                )
                            });
                        }
                    }
                }
                Cond::True => return self.verdict(rule, rule.decision.clone()),
                Cond::False => {}
                // Fail closed: an unjudgeable allow does not allow; tell why in the refusal.
                Cond::Error(e) => {
                    failed.get_or_insert_with(|| {
                        format!(
                            " (rule {} was not applied: its condition could not be evaluated: {e})",
                            rule.name
                        )
                    });
                }
            }
        }

        let failed = failed.as_deref().unwrap_or("");
        let reason = match action.sql {
            Some(stmt) => {
                let mut what = stmt.kind.clone();
                let others: Vec<&str> = stmt
                    .kinds
                    .iter()
                    .filter(|k| **k != stmt.kind)
                    .map(String::as_str)
                    .collect();
                if !others.is_empty() {
                    what.push_str(&format!(" (also {})", others.join(", ")));
                }
                let tables = if stmt.tables.is_empty() {
                    String::new()
                } else {
                    format!(" (tables: {})", stmt.tables.join(", "))
                };
                let subject = &identity.subject;
                let target = action.target;
                match near_miss {
                    Some(Fit::Privileged(function, why)) => format!(
                        "{what} on {target}{tables} for {subject} calls {function}, a privileged function ({why}): no rule allows it (a rule's allow.functions must name it){failed}"
                    ),
                    Some(Fit::NoWhere) => format!(
                        "{what} on {target}{tables} for {subject}: UPDATE/DELETE without WHERE touches every row: no rule allows it (a rule needs allow.without_where = true){failed}"
                    ),
                    _ => format!("no rule allows {what} on {target}{tables} for {subject}{failed}"),
                }
            }
            None => {
                let what = match action.resource {
                    Some(resource) => format!("{} {resource}", action.verb),
                    None => action.verb.to_string(),
                };
                format!(
                    "no rule allows {what} on {} for {}{failed}",
                    action.target, identity.subject,
                )
            }
        };
        Verdict {
            decision: Decision::Deny {
                reason: reason.into(),
            },
            rule: None,
            policy_version: self.version.clone(),
            grant: None,
        }
    }

    /// What a just-in-time grant for `identity` on `target` needs: the first `requires_grant`
    /// rule on the target that applies to the caller and covers every tool asked for (every
    /// tool of the target when none is named). Tables are for database targets, whose rules
    /// cover statements rather than names, so any applicable rule covers them: a whole-target
    /// rule first, else one with an SQL sub-table. `Err` says why no grant can be asked for.
    pub fn grant_requirement(
        &self,
        identity: &Identity,
        target: &str,
        tools: &[String],
    ) -> Result<(Arc<str>, Arc<ApprovalRequirement>), String> {
        let Some(index) = self.by_target.get(target) else {
            return Err(format!("no target named {target:?}"));
        };
        let candidates = |verb: Verb| {
            index.verbs[verb as usize]
                .allow
                .iter()
                .map(|&i| &self.rules[i])
                .filter(|r| r.grant.is_some() && r.who_matches(identity))
                .collect::<Vec<_>>()
        };
        let rules = if tools.is_empty() {
            let whole = candidates(Verb::Other);
            if whole.is_empty() {
                candidates(Verb::Sql)
            } else {
                whole
            }
        } else {
            candidates(Verb::Tools)
                .into_iter()
                .filter(|r| {
                    r.whole_target
                        || tools.iter().all(|t| {
                            // A pattern asked for must lie inside the rule's globs: check
                            // its literal part (a `prefix*` request needs the rule to cover
                            // the prefix as a name pattern, tested with the pattern itself).
                            r.globs[Verb::Tools as usize].matches(t)
                        })
                })
                .collect()
        };
        rules
            .first()
            .and_then(|r| r.grant.clone().map(|g| (r.name.clone(), g)))
            .ok_or_else(|| {
                format!(
                    "no rule on {target} grants {} to {} on request (a rule with requires_grant = true that applies to the caller)",
                    if tools.is_empty() {
                        "the whole target".to_string()
                    } else {
                        tools.join(", ")
                    },
                    identity.subject
                )
            })
    }

    /// Whether any allow or hold rule on `target` applies to this identity, whatever it names
    /// and whatever its `when` says. A caller for whom this is false can do nothing on the
    /// target, so the gateway spends nothing on it (no upstream session or process).
    pub fn any_rule_for(&self, identity: &Identity, target: &str) -> bool {
        let index = self.index(target);
        VERBS.iter().any(|&verb| {
            let bucket = &index.verbs[verb as usize];
            bucket
                .hold
                .iter()
                .chain(&bucket.allow[..])
                .any(|&i| self.rules[i].who_matches(identity))
        })
    }

    /// For `tools/list` filtering: whether this caller may see this tool. True if some allow
    /// or hold rule could match (ignoring `when`, which depends on the call's arguments) and
    /// no unconditional deny matches. A conditional deny leaves the tool visible: whether it
    /// applies is known only at call time.
    pub fn tool_visible(&self, identity: &Identity, target: &str, tool: &str) -> bool {
        self.visible(identity, target, "tools/call", tool)
    }

    /// The same question for any decided verb: may this caller see the tool (`tools/call`),
    /// resource (`resources/read`, by URI) or prompt (`prompts/get`) named `name` in a list?
    pub fn visible(&self, identity: &Identity, target: &str, verb: &str, name: &str) -> bool {
        let verb = Verb::of(verb);
        let bucket = &self.index(target).verbs[verb as usize];
        let applies = |i: &usize| self.rules[*i].applies(identity, verb, Some(name));
        if bucket
            .deny
            .iter()
            .any(|i| self.rules[*i].when.is_none() && applies(i))
        {
            return false;
        }
        bucket.hold.iter().chain(&bucket.allow[..]).any(applies)
    }

    /// Every masking profile named by an allow rule that applies to this caller on this
    /// target, in file order and without repeats: what masks the messages that are not the
    /// answer of one decided call (lists, `initialize`, a session's stream, server requests),
    /// and what a decided answer gets besides its own rule's profile. A rule's `when` is not
    /// evaluated (it speaks of one call's arguments), so a conditional rule's profile counts:
    /// more masking, never less. Empty (and not allocated) when no such rule names one.
    pub fn masks_for(&self, identity: &Identity, target: &str) -> Vec<Arc<str>> {
        let mut rules: Vec<usize> = self
            .index(target)
            .verbs
            .iter()
            .flat_map(|bucket| bucket.allow.iter().copied())
            .filter(|&i| {
                let rule = &self.rules[i];
                matches!(rule.decision, Decision::Allow { mask: Some(_) })
                    && rule.who_matches(identity)
            })
            .collect();
        rules.sort_unstable();
        let mut names: Vec<Arc<str>> = Vec::new();
        for i in rules {
            if let Decision::Allow { mask: Some(name) } = &self.rules[i].decision
                && !names.contains(name)
            {
                names.push(name.clone());
            }
        }
        names
    }

    fn condition(&self, rule: &CompiledRule, vars: &mut CelInputs<'_>) -> Cond {
        let Some(when) = &rule.when else {
            return Cond::True;
        };
        let context = vars.context(&self.env, &when.uses);
        match when.program.execute(&context) {
            Ok(CelValue::Bool(true)) => Cond::True,
            Ok(CelValue::Bool(false)) => Cond::False,
            Ok(other) => Cond::Error(format!("it gave {} instead of a bool", other.type_of())),
            Err(e) => Cond::Error(e.to_string()),
        }
    }
}

fn requirement(rule: &portcullis_config::Rule) -> ApprovalRequirement {
    ApprovalRequirement {
        approvers: rule.approvers.clone(),
        min_approvals: rule.min_approvals,
        timeout: rule.timeout,
        require_reason: rule.require_reason,
        max_grant: rule.max_grant,
    }
}

/// The variables a `when` can use.
const VARIABLES: [&str; 8] = [
    "args", "identity", "tool", "resource", "target", "verb", "findings", "sql",
];

/// The CEL variables of one decision, each converted only when a `when` that mentions it is
/// first evaluated (so rules without conditions cost nothing) and then shared by every
/// condition of the decision.
struct CelInputs<'a> {
    identity: &'a Identity,
    action: &'a Action<'a>,
    values: [Option<CelValue>; VARIABLES.len()],
}

impl<'a> CelInputs<'a> {
    fn new(identity: &'a Identity, action: &'a Action<'a>) -> Self {
        CelInputs {
            identity,
            action,
            values: Default::default(),
        }
    }

    fn convert(&self, variable: usize) -> CelValue {
        let action = self.action;
        match VARIABLES[variable] {
            "args" => match action.arguments {
                Some(args) => json_to_cel(args),
                None => CelValue::Map(CelMap {
                    map: Arc::new(HashMap::new()),
                }),
            },
            "identity" => identity_to_cel(self.identity),
            "tool" | "resource" => CelValue::from(action.resource.unwrap_or("")),
            "target" => CelValue::from(action.target),
            "findings" => string_list(action.findings),
            "sql" => sql_to_cel(action.sql),
            _ => CelValue::from(action.verb),
        }
    }

    fn context(&mut self, env: &Arc<CelEnv>, uses: &[bool]) -> CelContext<'static, 'static> {
        let mut context = CelContext::with_env(env.clone());
        for (i, name) in VARIABLES.iter().enumerate() {
            if !uses[i] {
                continue;
            }
            if self.values[i].is_none() {
                self.values[i] = Some(self.convert(i));
            }
            if let Some(value) = &self.values[i] {
                // Cloning a CEL value clones an `Arc` for strings, lists and maps.
                context.add_variable_from_value(*name, value.clone());
            }
        }
        context
    }
}

fn cel_key(key: &str) -> Key {
    Key::String(Arc::new(key.to_string()))
}

fn string_list(items: &[String]) -> CelValue {
    CelValue::List(Arc::new(
        items.iter().map(|s| CelValue::from(s.as_str())).collect(),
    ))
}

/// `sql`: the statement as the adapter classified it; for other actions `kind` is `""` and
/// the lists are empty, so `"x" in sql.tables` is simply false.
fn sql_to_cel(stmt: Option<&SqlStatement>) -> CelValue {
    let empty = SqlStatement::default();
    let stmt = stmt.unwrap_or(&empty);
    let map: HashMap<Key, CelValue> = [
        ("kind", CelValue::from(stmt.kind.as_str())),
        ("kinds", string_list(&stmt.kinds)),
        ("tables", string_list(&stmt.tables)),
        ("functions", string_list(&stmt.functions)),
        ("no_where", CelValue::Bool(stmt.no_where)),
    ]
    .into_iter()
    .map(|(k, v)| (cel_key(k), v))
    .collect();
    CelValue::Map(CelMap { map: Arc::new(map) })
}

fn identity_to_cel(identity: &Identity) -> CelValue {
    let groups: Vec<CelValue> = identity
        .groups
        .iter()
        .map(|g| CelValue::from(g.as_str()))
        .collect();
    let auth_method = match identity.auth_method {
        AuthMethod::Oidc => "oidc",
        AuthMethod::ApiKey => "api_key",
    };
    let map: HashMap<Key, CelValue> = [
        ("subject", CelValue::from(identity.subject.as_str())),
        ("issuer", CelValue::from(identity.issuer.as_str())),
        ("kind", CelValue::from(identity.kind.as_str())),
        ("groups", CelValue::List(Arc::new(groups))),
        ("auth_method", CelValue::from(auth_method)),
    ]
    .into_iter()
    .map(|(k, v)| (cel_key(k), v))
    .collect();
    CelValue::Map(CelMap { map: Arc::new(map) })
}

/// JSON to CEL. Integers become CEL `int` where they fit (so `args.amount > 500` compares
/// like with like), larger ones `uint`, the rest `double`.
fn json_to_cel(value: &serde_json::Value) -> CelValue {
    use serde_json::Value as J;
    match value {
        J::Null => CelValue::Null,
        J::Bool(b) => CelValue::Bool(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                CelValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                CelValue::UInt(u)
            } else {
                CelValue::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => CelValue::String(Arc::new(s.clone())),
        J::Array(items) => CelValue::List(Arc::new(items.iter().map(json_to_cel).collect())),
        J::Object(fields) => CelValue::Map(CelMap {
            map: Arc::new(
                fields
                    .iter()
                    .map(|(k, v)| (cel_key(k), json_to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

/// The text the policy version hashes: one JSON array per rule, fields in a fixed order, only
/// what decides (the description is for reviewers and is left out so that editing it does
/// not change the version). Arrays only, no objects, so the rendering cannot depend on
/// serde_json's map ordering features.
fn canonical_rules(config: &Config) -> String {
    let mut text = String::from("portcullis-policy/1\n");
    for rule in &config.rules {
        let decision = rule.effective_decision().as_str();
        let kinds: Vec<&str> = rule.who.kinds.iter().map(|k| k.as_str()).collect();
        let line = serde_json::json!([
            rule.name.get_ref(),
            rule.target.get_ref(),
            decision,
            rule.who.groups,
            rule.who.subjects,
            kinds,
            rule.tools,
            rule.resources,
            rule.prompts,
            rule.when.as_ref().map(|w| w.get_ref()),
            rule.reason,
            rule.approvers,
            [
                rule.timeout.as_secs(),
                u64::from(rule.timeout.subsec_nanos())
            ],
            rule.mask,
            [
                u64::from(rule.min_approvals),
                u64::from(rule.require_reason),
                u64::from(rule.requires_grant),
                rule.max_grant.as_secs()
            ],
        ]);
        let mut line = line;
        // Only rules with an SQL sub-table get the extra element, so the versions of rule
        // sets without them stay what they were.
        if let (Some(sql), serde_json::Value::Array(items)) = (rule.sql(), &mut line) {
            items.push(serde_json::json!([
                sql.statements,
                sql.tables,
                sql.functions,
                sql.without_where
            ]));
        }
        text.push_str(&line.to_string());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_model::TargetKind;
    use serde_json::json;
    use std::path::Path;
    use std::time::Duration;

    const TARGETS: &str = "[targets.billing]\nkind = \"mcp\"\ncommand = [\"x\"]\n\n[targets.docs]\nkind = \"mcp\"\ncommand = [\"y\"]\n";

    fn config(rules: &str) -> Config {
        Config::parse(Path::new("test.toml"), format!("{TARGETS}{rules}")).unwrap()
    }

    fn policy(rules: &str) -> Policy {
        Policy::compile(&config(rules)).unwrap()
    }

    fn who(subject: &str, kind: IdentityKind, groups: &[&str]) -> Identity {
        Identity {
            issuer: "https://idp".into(),
            subject: subject.into(),
            display_name: None,
            kind,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            auth_method: AuthMethod::Oidc,
            credential_id: None,
            act: Vec::new(),
        }
    }

    fn agent() -> Identity {
        who("bot", IdentityKind::Agent, &["agents"])
    }

    fn act<'a>(
        target: &'a str,
        verb: &'a str,
        resource: &'a str,
        args: Option<&'a serde_json::Value>,
    ) -> Action<'a> {
        Action {
            target,
            target_kind: TargetKind::Mcp,
            verb,
            resource: Some(resource),
            arguments: args,
            findings: &[],
            grants: &[],
            sql: None,
        }
    }

    fn call<'a>(tool: &'a str, args: Option<&'a serde_json::Value>) -> Action<'a> {
        act("billing", "tools/call", tool, args)
    }

    #[test]
    fn findings_in_the_arguments_can_decide() {
        let policy = policy(
            "[[rules]]\nname = \"no cards to tools\"\ntarget = \"billing\"\ntools = [\"*\"]\ndecision = \"deny\"\nwhen = \"'credit_card' in findings\"\n\n[[rules]]\nname = \"agents\"\ntarget = \"billing\"\ntools = [\"*\"]\n",
        );
        let clean = call("note", None);
        assert_eq!(label(&policy.decide(&agent(), &clean)), ("allow", "agents"));
        let findings = ["credit_card".to_string()];
        let dirty = Action {
            findings: &findings,
            ..call("note", None)
        };
        assert_eq!(
            label(&policy.decide(&agent(), &dirty)),
            ("deny", "no cards to tools")
        );
    }

    fn label(v: &Verdict) -> (&'static str, &str) {
        (v.decision.label(), v.rule_label())
    }

    #[test]
    fn no_rules_is_default_deny() {
        let p = policy("");
        let v = p.decide(&agent(), &call("refund", None));
        assert_eq!(label(&v), ("deny", "default-deny"));
        assert!(v.rule.is_none());
        let Decision::Deny { reason } = &v.decision else {
            panic!()
        };
        assert_eq!(
            &**reason,
            "no rule allows tools/call refund on billing for bot"
        );
        assert_eq!(&*v.policy_version, p.version());
        assert_eq!(p.rule_count(), 0);
    }

    #[test]
    fn masks_for_names_every_profile_of_the_callers_allow_rules_on_the_target() {
        let p = policy(concat!(
            "[[rules]]\nname = \"lookup\"\nwho.groups = [\"agents\"]\ntarget = \"billing\"\ntools = [\"lookup\"]\nmask = \"pii\"\n",
            "[[rules]]\nname = \"files\"\ntarget = \"*\"\nresources = [\"file:///*\"]\nwhen = \"false\"\nmask = \"default\"\n",
            "[[rules]]\nname = \"again\"\ntarget = \"billing\"\nprompts = [\"p\"]\nmask = \"pii\"\n",
            "[[rules]]\nname = \"humans\"\nwho.groups = [\"people\"]\ntarget = \"billing\"\nmask = \"cards\"\n",
            "[[rules]]\nname = \"plain\"\ntarget = \"billing\"\ntools = [\"ping\"]\n",
            "[masks.pii]\ndetectors = [\"email\"]\n[masks.cards]\ndetectors = [\"credit_card\"]\n",
        ));
        let names = |target: &str| -> Vec<String> {
            p.masks_for(&agent(), target)
                .iter()
                .map(|n| n.to_string())
                .collect()
        };
        // A conditional rule's profile counts; a repeat does not; another group's does not.
        assert_eq!(names("billing"), ["pii", "default"]);
        // Only the `*` rule speaks about another target.
        assert_eq!(names("docs"), ["default"]);
        // A caller outside `agents` gets the profiles of the rules that name no group.
        let outsider = who("x", IdentityKind::Agent, &[]);
        let outsiders: Vec<String> = p
            .masks_for(&outsider, "billing")
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(outsiders, ["default", "pii"]);
        assert!(policy("").masks_for(&agent(), "billing").is_empty());
    }

    #[test]
    fn allow_rule_allows_with_mask() {
        let p = policy(
            "[[rules]]\nname = \"a\"\ntarget = \"billing\"\ntools = [\"lookup\"]\nmask = \"pii\"\n[masks.pii]\ndetectors = [\"email\"]\n",
        );
        let v = p.decide(&agent(), &call("lookup", None));
        assert_eq!(label(&v), ("allow", "a"));
        assert_eq!(
            v.decision,
            Decision::Allow {
                mask: Some("pii".into())
            }
        );
        assert_eq!(label(&p.decide(&agent(), &call("other", None))).0, "deny");
        // Another target is not covered by a rule about billing.
        assert_eq!(
            label(&p.decide(&agent(), &act("docs", "tools/call", "lookup", None))).0,
            "deny"
        );
    }

    #[test]
    fn deny_beats_hold_beats_allow_in_any_order() {
        let allow = "[[rules]]\nname = \"allow\"\ntarget = \"billing\"\ntools = [\"*\"]\n";
        let hold = "[[rules]]\nname = \"hold\"\ntarget = \"billing\"\ntools = [\"refund_*\"]\ndecision = \"hold\"\napprovers = [\"leads\"]\ntimeout = \"5m\"\n";
        let deny = "[[rules]]\nname = \"deny\"\ntarget = \"billing\"\ntools = [\"refund_all\"]\ndecision = \"deny\"\nreason = \"never\"\n";
        for rules in [
            format!("{allow}{hold}{deny}"),
            format!("{deny}{hold}{allow}"),
            format!("{hold}{allow}{deny}"),
        ] {
            let p = policy(&rules);
            let v = p.decide(&agent(), &call("refund_all", None));
            assert_eq!(label(&v), ("deny", "deny"));
            assert_eq!(
                v.decision,
                Decision::Deny {
                    reason: "never".into()
                }
            );
            let v = p.decide(&agent(), &call("refund_one", None));
            assert_eq!(label(&v), ("hold", "hold"));
            let Decision::Hold(requirement) = &v.decision else {
                panic!("{v:?}")
            };
            assert_eq!(requirement.approvers, ["leads"]);
            assert_eq!(requirement.timeout, Duration::from_secs(300));
            assert_eq!(requirement.min_approvals, 1);
            assert_eq!(
                label(&p.decide(&agent(), &call("lookup", None))),
                ("allow", "allow")
            );
        }
    }

    #[test]
    fn first_matching_rule_of_a_kind_is_named() {
        let p = policy(
            "[[rules]]\nname = \"one\"\ntarget = \"billing\"\ntools = [\"*\"]\ndecision = \"deny\"\n\
             [[rules]]\nname = \"two\"\ntarget = \"billing\"\ntools = [\"x\"]\ndecision = \"deny\"\n",
        );
        let v = p.decide(&agent(), &call("x", None));
        assert_eq!(label(&v), ("deny", "one"));
        assert_eq!(
            v.decision,
            Decision::Deny {
                reason: "denied by rule one".into()
            }
        );
    }

    #[test]
    fn who_groups_subjects_kinds() {
        let p = policy(
            "[[rules]]\nname = \"g\"\ntarget = \"billing\"\ntools = [\"g\"]\nwho.groups = [\"ops\", \"agents\"]\n\
             [[rules]]\nname = \"s\"\ntarget = \"billing\"\ntools = [\"s\"]\nwho.subjects = [\"alice\"]\n\
             [[rules]]\nname = \"k\"\ntarget = \"billing\"\ntools = [\"k\"]\nwho.kinds = [\"human\", \"service\"]\n\
             [[rules]]\nname = \"all\"\ntarget = \"billing\"\ntools = [\"all\"]\nwho.groups = [\"ops\"]\nwho.subjects = [\"alice\"]\nwho.kinds = [\"human\"]\n",
        );
        let bot = agent();
        let alice = who("alice", IdentityKind::Human, &["ops"]);
        let nobody = who("eve", IdentityKind::Agent, &[]);
        let allowed = |id: &Identity, tool| p.decide(id, &call(tool, None)).is_allow();
        assert!(allowed(&bot, "g") && allowed(&alice, "g") && !allowed(&nobody, "g"));
        assert!(!allowed(&bot, "s") && allowed(&alice, "s") && !allowed(&nobody, "s"));
        assert!(!allowed(&bot, "k") && allowed(&alice, "k") && !allowed(&nobody, "k"));
        assert!(!allowed(&bot, "all") && allowed(&alice, "all"));
        let alice_agent = who("alice", IdentityKind::Agent, &["ops"]);
        assert!(!allowed(&alice_agent, "all"));
    }

    #[test]
    fn wildcard_target_applies_everywhere() {
        let p = policy(
            "[[rules]]\nname = \"any\"\ntarget = \"*\"\ntools = [\"read_*\"]\n\
             [[rules]]\nname = \"no\"\ntarget = \"*\"\ntools = [\"read_secret\"]\ndecision = \"deny\"\n",
        );
        for target in ["billing", "docs", "unconfigured"] {
            assert_eq!(
                label(&p.decide(&agent(), &act(target, "tools/call", "read_doc", None))),
                ("allow", "any")
            );
            assert_eq!(
                label(&p.decide(&agent(), &act(target, "tools/call", "read_secret", None))),
                ("deny", "no")
            );
        }
    }

    #[test]
    fn requires_grant_allows_only_with_a_covering_grant() {
        let p = policy(
            "[[rules]]\nname = \"jit refunds\"\nwho.groups = [\"agents\"]\ntarget = \"billing\"\ntools = [\"refund_*\"]\nrequires_grant = true\napprovers = [\"leads\"]\nmin_approvals = 2\nmax_grant = \"1h\"\n",
        );
        let grant = |tools: &[&str], target: &str| ActiveGrant {
            id: "apr_1".into(),
            target: target.into(),
            tools: tools.iter().map(|t| t.to_string()).collect(),
            tables: Vec::new(),
        };
        let without = p.decide(&agent(), &call("refund_one", None));
        assert_eq!(label(&without), ("deny", "default-deny"));
        let Decision::Deny { reason } = &without.decision else {
            panic!()
        };
        assert!(
            reason.contains("only with an active grant")
                && reason.contains("portcullis access request --target billing --tools refund_one"),
            "{reason}"
        );
        for (grants, allowed) in [
            (vec![grant(&["refund_one"], "billing")], true),
            (vec![grant(&["refund_*"], "billing")], true),
            (vec![grant(&[], "billing")], true),
            (vec![grant(&["refund_two"], "billing")], false),
            (vec![grant(&["refund_one"], "docs")], false),
        ] {
            let action = Action {
                grants: &grants,
                sql: None,
                ..call("refund_one", None)
            };
            let v = p.decide(&agent(), &action);
            assert_eq!(v.is_allow(), allowed, "{grants:?}");
            assert_eq!(v.grant.as_deref(), allowed.then_some("apr_1"));
        }
        // A grant never widens a rule: a tool the rule does not name stays denied.
        let all = [grant(&[], "billing")];
        let other = Action {
            grants: &all,
            sql: None,
            ..call("delete", None)
        };
        assert!(!p.decide(&agent(), &other).is_allow());

        let (rule, requirement) = p
            .grant_requirement(&agent(), "billing", &["refund_one".into()])
            .unwrap();
        assert_eq!(&*rule, "jit refunds");
        assert_eq!(requirement.min_approvals, 2);
        assert_eq!(requirement.max_grant, Duration::from_secs(3600));
        assert!(
            p.grant_requirement(&agent(), "billing", &["refund_*".into()])
                .is_ok()
        );
        assert!(
            p.grant_requirement(&agent(), "billing", &["delete".into()])
                .is_err()
        );
        // The rule names tools, so it cannot grant the whole target.
        assert!(p.grant_requirement(&agent(), "billing", &[]).is_err());
        let outsider = who("eve", IdentityKind::Agent, &["other"]);
        assert!(
            p.grant_requirement(&outsider, "billing", &["refund_one".into()])
                .is_err()
        );
        assert!(p.grant_requirement(&agent(), "nowhere", &[]).is_err());
    }

    #[test]
    fn globs() {
        let p = policy(
            "[[rules]]\nname = \"refunds\"\ntarget = \"billing\"\ntools = [\"refund_*\"]\n\
             [[rules]]\nname = \"everything\"\ntarget = \"docs\"\ntools = [\"*\"]\n",
        );
        assert!(p.decide(&agent(), &call("refund_one", None)).is_allow());
        assert!(p.decide(&agent(), &call("refund_", None)).is_allow());
        assert!(!p.decide(&agent(), &call("refun", None)).is_allow());
        assert!(!p.decide(&agent(), &call("xrefund_one", None)).is_allow());
        for tool in ["a", "a/b", ""] {
            assert!(
                p.decide(&agent(), &act("docs", "tools/call", tool, None))
                    .is_allow()
            );
        }
    }

    #[test]
    fn glob_shortcuts_agree_with_globset() {
        let patterns = [
            "*",
            "**",
            "refund",
            "refund_*",
            "*_v2",
            "re*und",
            "file:///docs/*",
            "a?c",
            "[ab]x",
            "{a,b}*",
            "*.txt",
            "a\\*b",
            "",
            "x/y*",
            "**/z",
            "*a*",
        ];
        let names = [
            "",
            "refund",
            "refund_x",
            "refund_",
            "x_v2",
            "reund",
            "refund/x",
            "file:///docs/a/b",
            "abc",
            "ax",
            "a*b",
            "a.txt",
            "x/y/z",
            "b",
            "z",
            "q/z",
        ];
        for pattern in patterns {
            let ours = Globs::build(&[pattern.to_string()]).unwrap();
            let theirs = Glob::new(pattern).unwrap().compile_matcher();
            for name in names {
                assert_eq!(
                    ours.matches(name),
                    theirs.is_match(name),
                    "{pattern:?} on {name:?}"
                );
            }
        }
    }

    #[test]
    fn tool_rule_says_nothing_about_resources_or_prompts() {
        let p = policy(
            "[[rules]]\nname = \"tools\"\ntarget = \"billing\"\ntools = [\"*\"]\n\
             [[rules]]\nname = \"res\"\ntarget = \"billing\"\nresources = [\"file:///docs/*\"]\n\
             [[rules]]\nname = \"prompts\"\ntarget = \"billing\"\nprompts = [\"greet\"]\n",
        );
        assert!(p.decide(&agent(), &call("x", None)).is_allow());
        let read = |uri| p.decide(&agent(), &act("billing", "resources/read", uri, None));
        assert_eq!(label(&read("file:///docs/a")), ("allow", "res"));
        assert_eq!(label(&read("file:///etc/passwd")).0, "deny");
        let prompt = |name| p.decide(&agent(), &act("billing", "prompts/get", name, None));
        assert_eq!(label(&prompt("greet")), ("allow", "prompts"));
        assert_eq!(label(&prompt("x")).0, "deny");
        // A verb no list speaks for is not covered by glob rules.
        assert!(
            !p.decide(&agent(), &act("billing", "completion/complete", "x", None))
                .is_allow()
        );
    }

    #[test]
    fn whole_target_rule_covers_every_verb() {
        let p =
            policy("[[rules]]\nname = \"all\"\ntarget = \"billing\"\nwho.groups = [\"agents\"]\n");
        for verb in [
            "tools/call",
            "resources/read",
            "prompts/get",
            "completion/complete",
        ] {
            assert_eq!(
                label(&p.decide(&agent(), &act("billing", verb, "x", None))),
                ("allow", "all"),
                "{verb}"
            );
        }
        let mut no_resource = act("billing", "initialize", "", None);
        no_resource.resource = None;
        assert!(p.decide(&agent(), &no_resource).is_allow());
        assert!(
            !p.decide(&agent(), &act("docs", "tools/call", "x", None))
                .is_allow()
        );
        let outsider = who("eve", IdentityKind::Human, &[]);
        let v = p.decide(&outsider, &no_resource);
        assert_eq!(
            v.decision,
            Decision::Deny {
                reason: "no rule allows initialize on billing for eve".into()
            }
        );
    }

    const AMOUNT: &str = "[[rules]]\nname = \"big refunds\"\ntarget = \"billing\"\ntools = [\"refund\"]\ndecision = \"hold\"\napprovers = [\"leads\"]\nwhen = \"args.amount > 500\"\n\
        [[rules]]\nname = \"refunds\"\ntarget = \"billing\"\ntools = [\"refund\"]\n";

    #[test]
    fn cel_over_arguments() {
        let p = policy(AMOUNT);
        let big = json!({"amount": 900});
        let small = json!({"amount": 100});
        let fraction = json!({"amount": 500.5});
        assert_eq!(
            label(&p.decide(&agent(), &call("refund", Some(&big)))),
            ("hold", "big refunds")
        );
        assert_eq!(
            label(&p.decide(&agent(), &call("refund", Some(&small)))),
            ("allow", "refunds")
        );
        assert_eq!(
            label(&p.decide(&agent(), &call("refund", Some(&fraction)))),
            ("hold", "big refunds")
        );
    }

    #[test]
    fn cel_over_identity_and_action() {
        let p = policy(
            "[[rules]]\nname = \"admins\"\ntarget = \"billing\"\ntools = [\"*\"]\nwhen = '\"admins\" in identity.groups && identity.kind == \"human\" && tool == \"wipe\" && target == \"billing\" && verb == \"tools/call\" && identity.auth_method == \"oidc\"'\n",
        );
        let admin = who("root", IdentityKind::Human, &["admins"]);
        assert_eq!(
            label(&p.decide(&admin, &call("wipe", None))),
            ("allow", "admins")
        );
        assert!(!p.decide(&agent(), &call("wipe", None)).is_allow());
        assert!(!p.decide(&admin, &call("other", None)).is_allow());
    }

    #[test]
    fn cel_errors_fail_closed() {
        // `args.missing` has no such key: an evaluation error.
        let p = policy(
            "[[rules]]\nname = \"maybe deny\"\ntarget = \"billing\"\ntools = [\"d\"]\ndecision = \"deny\"\nreason = \"too risky\"\nwhen = \"args.missing > 1\"\n\
             [[rules]]\nname = \"maybe hold\"\ntarget = \"billing\"\ntools = [\"h\"]\ndecision = \"hold\"\napprovers = [\"leads\"]\nwhen = \"args.missing > 1\"\n\
             [[rules]]\nname = \"maybe allow\"\ntarget = \"billing\"\ntools = [\"a\", \"d\", \"h\"]\nwhen = \"args.missing > 1\"\n\
             [[rules]]\nname = \"not bool\"\ntarget = \"billing\"\ntools = [\"n\"]\nwhen = \"args\"\n",
        );
        let v = p.decide(&agent(), &call("d", None));
        assert_eq!(label(&v), ("deny", "maybe deny"));
        let Decision::Deny { reason } = &v.decision else {
            panic!()
        };
        assert!(
            reason.starts_with("too risky") && reason.contains("could not be evaluated"),
            "{reason}"
        );
        assert_eq!(
            label(&p.decide(&agent(), &call("h", None))),
            ("hold", "maybe hold")
        );
        let v = p.decide(&agent(), &call("a", None));
        assert_eq!(label(&v), ("deny", "default-deny"));
        let Decision::Deny { reason } = &v.decision else {
            panic!()
        };
        assert!(
            reason.contains("maybe allow") && reason.contains("could not be evaluated"),
            "{reason}"
        );
        let v = p.decide(&agent(), &call("n", None));
        assert_eq!(label(&v), ("deny", "default-deny"));
        assert!(matches!(&v.decision, Decision::Deny { reason } if reason.contains("bool")));
    }

    #[test]
    fn bad_cel_is_reported_at_its_line() {
        let text = format!(
            "{TARGETS}\n[[rules]]\nname = \"r\"\ntarget = \"billing\"\ntools = [\"x\"]\nwhen = \"args.amount >\"\n"
        );
        let config = Config::parse(Path::new("test.toml"), text.clone()).unwrap();
        let err = Policy::compile(&config).unwrap_err().to_string();
        let line = text.lines().position(|l| l.starts_with("when")).unwrap() + 1;
        assert!(err.starts_with(&format!("test.toml:{line}:")), "{err}");
        assert!(err.contains("when") && err.contains("rules[0]"), "{err}");
    }

    #[test]
    fn version_ignores_layout_and_follows_rules() {
        let a = policy(AMOUNT);
        let b = Policy::compile(
            &Config::parse(
                Path::new("other.toml"),
                format!(
                    "# a comment\n{TARGETS}\n\n[[rules]]   # first\nname   =   \"big refunds\"\ntarget = 'billing'\ntools = [ \"refund\" , ]\ndecision = \"hold\"\napprovers = [\"leads\"]\nwhen = \"args.amount > 500\"\ndescription = \"reviewers' notes\"\n\n\
                     [[rules]]\ntools = [\"refund\"]\ntarget = \"billing\"\nname = \"refunds\"\n"
                ),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(a.version(), b.version());
        assert_eq!(a.version().len(), 16);
        assert_eq!(a.version(), policy(AMOUNT).version());
        let c = policy(&AMOUNT.replace("500", "501"));
        assert_ne!(a.version(), c.version());
        assert_ne!(a.version(), policy("").version());
    }

    #[test]
    fn any_rule_for_asks_only_who_and_where() {
        let p = policy(
            "[[rules]]\nname = \"ops read\"\ntarget = \"billing\"\ntools = [\"lookup\"]\nwho.groups = [\"ops\"]\n\
             [[rules]]\nname = \"agents wait\"\ntarget = \"docs\"\nresources = [\"x\"]\ndecision = \"hold\"\napprovers = [\"leads\"]\nwho.groups = [\"agents\"]\n\
             [[rules]]\nname = \"nobody\"\ntarget = \"*\"\ndecision = \"deny\"\nwho.groups = [\"agents\"]\nwhen = \"false\"\n",
        );
        let ops = who("op", IdentityKind::Human, &["ops"]);
        assert!(p.any_rule_for(&ops, "billing"));
        assert!(!p.any_rule_for(&ops, "docs"));
        // A hold rule counts (the caller may ask); a deny rule does not.
        assert!(p.any_rule_for(&agent(), "docs"));
        assert!(!p.any_rule_for(&agent(), "billing"));
        assert!(!p.any_rule_for(&agent(), "unknown"));
    }

    #[test]
    fn tool_visibility() {
        let p = policy(
            "[[rules]]\nname = \"allow\"\ntarget = \"billing\"\ntools = [\"lookup\", \"secret\", \"maybe\"]\n\
             [[rules]]\nname = \"hold\"\ntarget = \"billing\"\ntools = [\"refund\"]\ndecision = \"hold\"\napprovers = [\"leads\"]\nwhen = \"args.amount > 5\"\n\
             [[rules]]\nname = \"never\"\ntarget = \"billing\"\ntools = [\"secret\"]\ndecision = \"deny\"\n\
             [[rules]]\nname = \"sometimes\"\ntarget = \"billing\"\ntools = [\"maybe\"]\ndecision = \"deny\"\nwhen = \"args.x == 1\"\n\
             [[rules]]\nname = \"ops only\"\ntarget = \"billing\"\ntools = [\"ops\"]\nwho.groups = [\"ops\"]\n",
        );
        let bot = agent();
        assert!(p.tool_visible(&bot, "billing", "lookup"));
        assert!(p.tool_visible(&bot, "billing", "refund"));
        assert!(!p.tool_visible(&bot, "billing", "secret"));
        assert!(p.tool_visible(&bot, "billing", "maybe"));
        assert!(!p.tool_visible(&bot, "billing", "ops"));
        assert!(!p.tool_visible(&bot, "billing", "unlisted"));
        assert!(!p.tool_visible(&bot, "docs", "lookup"));
    }

    const DB: &str = "[targets.db]\nkind = \"postgres\"\nlisten = \"127.0.0.1:6432\"\nupstream = \"postgres://127.0.0.1/app\"\nuser = \"gw\"\n\n";

    fn pg_policy(rules: &str) -> Policy {
        Policy::compile(
            &Config::parse(Path::new("test.toml"), format!("{DB}{TARGETS}{rules}")).unwrap(),
        )
        .unwrap()
    }

    fn stmt(kinds: &[&str], tables: &[&str], functions: &[&str], no_where: bool) -> SqlStatement {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        SqlStatement {
            kind: kinds[0].to_string(),
            kinds: list(kinds),
            tables: list(tables),
            functions: list(functions),
            no_where,
            flagged_functions: Vec::new(),
        }
    }

    fn sql<'a>(stmt: &'a SqlStatement) -> Action<'a> {
        Action {
            target: "db",
            target_kind: TargetKind::Postgres,
            verb: &stmt.kind,
            resource: None,
            arguments: None,
            findings: &[],
            grants: &[],
            sql: Some(stmt),
        }
    }

    fn reason(v: &Verdict) -> &str {
        match &v.decision {
            Decision::Deny { reason } => reason,
            other => panic!("not a deny: {other:?}"),
        }
    }

    const READS: &str = "[[rules]]\nname = \"reads\"\nwho.groups = [\"agents\"]\ntarget = \"db\"\nallow.statements = [\"select\"]\nallow.tables = [\"customers\", \"orders\"]\nmask = \"pii\"\n[masks.pii]\ncolumns = [\"account_number\"]\n";

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
            p.decide(&outsider, &act("billing", "tools/call", "x", None))
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

    #[test]
    fn cel_over_sql() {
        let p = pg_policy(
            "[[rules]]\nname = \"audit reads held\"\ntarget = \"db\"\nhold.statements = [\"select\"]\napprovers = [\"dba\"]\nwhen = '\"audit.log\" in sql.tables || sql.no_where'\n\
             [[rules]]\nname = \"reads\"\ntarget = \"db\"\nallow.statements = [\"select\"]\nwhen = 'sql.kind == \"select\" && size(sql.kinds) == 1 && !(\"pg_sleep\" in sql.functions)'\n\
             [[rules]]\nname = \"tools\"\ntarget = \"billing\"\ntools = [\"*\"]\nwhen = 'sql.kind == \"\" && size(sql.tables) == 0'\n",
        );
        let plain = stmt(&["select"], &["customers"], &[], false);
        assert_eq!(label(&p.decide(&agent(), &sql(&plain))), ("allow", "reads"));
        let audit = stmt(&["select"], &["audit.log"], &[], false);
        assert_eq!(
            label(&p.decide(&agent(), &sql(&audit))),
            ("hold", "audit reads held")
        );
        assert!(p.decide(&agent(), &call("x", None)).is_allow());
    }

    #[test]
    fn sql_requires_grant_with_tables() {
        let p = pg_policy(
            "[[rules]]\nname = \"jit\"\ntarget = \"db\"\nallow.statements = [\"select\", \"update\"]\nrequires_grant = true\napprovers = [\"dba\"]\n",
        );
        let grant = |tables: &[&str], tools: &[&str]| ActiveGrant {
            id: "apr_9".into(),
            target: "db".into(),
            tools: tools.iter().map(|t| t.to_string()).collect(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
        };
        let two = stmt(&["select"], &["customers", "public.orders"], &[], false);
        let v = p.decide(&agent(), &sql(&two));
        assert!(
            reason(&v)
                .contains("portcullis access request --target db --tables customers,public.orders"),
            "{v:?}"
        );
        let none = stmt(&["select"], &[], &[], false);
        let v = p.decide(&agent(), &sql(&none));
        assert!(
            reason(&v).ends_with("ask for one with `portcullis access request --target db`)"),
            "{v:?}"
        );
        for (grants, allowed) in [
            (vec![grant(&[], &[])], true),
            (vec![grant(&["public.customers", "orders"], &[])], true),
            (vec![grant(&["cust*", "public.ord*"], &[])], true),
            (vec![grant(&["customers"], &[])], false),
            (vec![grant(&[], &["customers"])], false),
        ] {
            let action = Action {
                grants: &grants,
                ..sql(&two)
            };
            let v = p.decide(&agent(), &action);
            assert_eq!(v.is_allow(), allowed, "{grants:?}");
            assert_eq!(v.grant.as_deref(), allowed.then_some("apr_9"));
        }
        // A statement without tables needs a whole-target grant.
        let tables = [grant(&["customers"], &[])];
        let action = Action {
            grants: &tables,
            ..sql(&none)
        };
        assert!(!p.decide(&agent(), &action).is_allow());
        let (rule, _) = p.grant_requirement(&agent(), "db", &[]).unwrap();
        assert_eq!(&*rule, "jit");
    }

    #[test]
    fn sql_rules_change_the_version() {
        let a = pg_policy(READS);
        let b = pg_policy(&READS.replace("\"orders\"", "\"orders\", \"x\""));
        assert_ne!(a.version(), b.version());
        let allow = pg_policy("[[rules]]\nname = \"r\"\ntarget = \"db\"\nallow.tables = [\"t\"]\n");
        let deny = pg_policy("[[rules]]\nname = \"r\"\ntarget = \"db\"\ndeny.tables = [\"t\"]\n");
        assert_ne!(allow.version(), deny.version());
        assert_eq!(STATEMENT_KINDS.len(), 24);
    }
}
