//! The shared vocabulary of Portcullis.
//!
//! Every protocol adapter turns its wire messages into an [`Action`], asks the policy for a
//! [`Verdict`] about an [`Identity`], enforces it, and emits an [`AuditEvent`]. Keeping these
//! types in one small crate without I/O lets the adapters, the policy engine and the audit
//! log agree on meaning without depending on each other.
#![forbid(unsafe_code)]

pub mod json;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What sort of principal an identity is. Policy can match on it (`who.kinds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    Human,
    Agent,
    Service,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Human => "human",
            IdentityKind::Agent => "agent",
            IdentityKind::Service => "service",
        }
    }
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A bearer JWT issued by a configured OIDC issuer.
    Oidc,
    /// A Portcullis API key (stored hashed in the configuration).
    ApiKey,
    /// Someone at the gateway host's command line (`portcullis sessions replay`, ...), named
    /// by the operating system's user or the command's `--as`: trusted as far as the host's
    /// accounts are, which is why events say so.
    Local,
}

/// One link of an RFC 8693 `act` (on-behalf-of) chain: the party acting for the subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// A named, authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The OIDC issuer URL, or `portcullis:api-key` for API keys.
    pub issuer: String,
    /// The `sub` claim, or the API key's configured name.
    pub subject: String,
    /// A human-friendly name when the token carries one (`name`, `preferred_username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub kind: IdentityKind,
    pub groups: Vec<String>,
    pub auth_method: AuthMethod,
    /// SHA-256 (hex) of the token id (`jti`) or of the API key: lets an auditor correlate
    /// uses of one credential without the credential ever being stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// The on-behalf-of chain, the most recent actor first (RFC 8693 section 4.1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub act: Vec<Actor>,
}

impl Identity {
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// The kind of backend a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Mcp,
    Postgres,
    Mysql,
    Http,
}

/// A protocol-neutral description of what a caller wants to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action<'a> {
    /// The configured target name.
    pub target: &'a str,
    pub target_kind: TargetKind,
    /// What is done, in the terms of the target's protocol family.
    pub operation: Operation<'a>,
    /// The detectors that found sensitive data in the arguments (`credit_card`, `aws_secret_key`
    /// ...), sorted: `findings` in `when` conditions, so a rule can deny or hold an agent that
    /// sends a card number or a secret to a tool.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub findings: &'a [String],
    /// The caller's active just-in-time grants on this target (unexpired, not revoked): a
    /// rule with `requires_grant` allows only when one of them covers the request. The
    /// adapter looks them up; policy, which has no clock, only matches them.
    #[serde(skip_serializing_if = "<[ActiveGrant]>::is_empty")]
    pub grants: &'a [ActiveGrant],
}

impl<'a> Action<'a> {
    /// The operation's name for events and messages: the MCP method (`tools/call`,
    /// `resources/read`, `initialize` ...) or the SQL statement's kind (`select`, ...).
    pub fn verb(&self) -> &'a str {
        match self.operation {
            Operation::Mcp(op) => op.method,
            Operation::Sql(stmt) => &stmt.kind,
            Operation::Http(req) => req.method,
        }
    }

    /// The thing acted on: a tool name, a resource URI, a prompt name, an HTTP path; `None`
    /// for SQL (whose tables are in the statement) and for MCP methods that name nothing.
    pub fn resource(&self) -> Option<&'a str> {
        match self.operation {
            Operation::Mcp(op) => op.name,
            Operation::Sql(_) => None,
            Operation::Http(req) => Some(req.path),
        }
    }

    /// Arguments as parsed JSON, available to `when` conditions: a tool call's arguments,
    /// an HTTP request's JSON body.
    pub fn arguments(&self) -> Option<&'a serde_json::Value> {
        match self.operation {
            Operation::Mcp(op) => op.arguments,
            Operation::Sql(_) => None,
            Operation::Http(req) => req.body,
        }
    }

    /// For database targets: the statement as the SQL parser classified it.
    pub fn sql(&self) -> Option<&'a SqlStatement> {
        match self.operation {
            Operation::Sql(stmt) => Some(stmt),
            Operation::Mcp(_) | Operation::Http(_) => None,
        }
    }

    /// For HTTP targets: the request as the adapter read it.
    pub fn http(&self) -> Option<&'a HttpOperation<'a>> {
        match self.operation {
            Operation::Http(req) => Some(req),
            Operation::Mcp(_) | Operation::Sql(_) => None,
        }
    }
}

/// What an [`Action`] does, by protocol family: each adapter fills the variant of its
/// family, and policy indexes and matches rules on [`Operation::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation<'a> {
    Mcp(McpOperation<'a>),
    /// What the statement does, as the database adapter's parser classified it.
    Sql(&'a SqlStatement),
    /// An HTTP request, as the HTTP adapter read it.
    Http(&'a HttpOperation<'a>),
}

impl Operation<'_> {
    pub fn kind(&self) -> OperationKind {
        match self {
            Operation::Mcp(op) => OperationKind::Mcp(op.kind),
            Operation::Sql(_) => OperationKind::Sql,
            Operation::Http(_) => OperationKind::Http,
        }
    }
}

/// One HTTP request as policy sees it. The path is the one the upstream will act on:
/// percent-decoded segment by segment, with no `.` or `..` segment, no empty segment and no
/// encoded `/` (the adapter refuses requests whose path it cannot put in this form, so a rule
/// on `/admin/*` cannot be walked around with `/x/../admin/` or `/%61dmin`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HttpOperation<'a> {
    /// The method, as sent (methods are case-sensitive: `GET`, `POST` ...).
    pub method: &'a str,
    /// The decoded path, starting with `/`, without the query.
    pub path: &'a str,
    /// The query's parameters, decoded, in order (a key may repeat).
    pub query: &'a [(String, String)],
    /// The request's headers other than credentials, names in lower case.
    pub headers: &'a [(String, String)],
    /// The body, when it is JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<&'a serde_json::Value>,
}

/// The kind of an [`Operation`], without its data: what rules are indexed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationKind {
    Mcp(McpKind),
    Sql,
    Http,
}

impl OperationKind {
    /// Every kind, in [`OperationKind::index`] order.
    pub const ALL: [OperationKind; McpKind::COUNT + 2] = {
        let mut all = [OperationKind::Sql; McpKind::COUNT + 2];
        let mut i = 0;
        while i < McpKind::COUNT {
            all[i] = OperationKind::Mcp(McpKind::ALL[i]);
            i += 1;
        }
        all[McpKind::COUNT + 1] = OperationKind::Http;
        all
    };
    pub const COUNT: usize = Self::ALL.len();

    /// A dense index `0..COUNT`, for tables indexed by kind.
    pub const fn index(self) -> usize {
        match self {
            OperationKind::Mcp(kind) => kind as usize,
            OperationKind::Sql => McpKind::COUNT,
            OperationKind::Http => McpKind::COUNT + 1,
        }
    }
}

/// What an MCP request acts on. Rules name tools, resources and prompts in separate lists;
/// every other method (`initialize`, `completion/complete` ...) is `Protocol`, which only
/// whole-target rules cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum McpKind {
    Tool = 0,
    Resource = 1,
    Prompt = 2,
    Protocol = 3,
}

impl McpKind {
    /// Every kind, in discriminant order.
    pub const ALL: [McpKind; 4] = [
        McpKind::Tool,
        McpKind::Resource,
        McpKind::Prompt,
        McpKind::Protocol,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// The method that acts on one named thing of this kind (`tools/call`, ...): the verb
    /// events and messages show. `None` for `Protocol`, which has many methods.
    pub const fn method(self) -> Option<&'static str> {
        match self {
            McpKind::Tool => Some("tools/call"),
            McpKind::Resource => Some("resources/read"),
            McpKind::Prompt => Some("prompts/get"),
            McpKind::Protocol => None,
        }
    }
}

/// One MCP request as policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct McpOperation<'a> {
    pub kind: McpKind,
    /// The JSON-RPC method, for events and messages (`tools/call`, `initialize` ...).
    pub method: &'a str,
    /// The thing acted on: a tool name, a resource URI, a prompt name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// Arguments as parsed JSON, available to `when` conditions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<&'a serde_json::Value>,
}

impl<'a> McpOperation<'a> {
    /// Acting on the tool, resource or prompt `name` with that kind's method.
    pub fn named(
        kind: McpKind,
        name: &'a str,
        arguments: Option<&'a serde_json::Value>,
    ) -> McpOperation<'a> {
        McpOperation {
            kind,
            method: kind.method().unwrap_or(""),
            name: Some(name),
            arguments,
        }
    }

    /// A protocol method that names no tool, resource or prompt.
    pub fn protocol(method: &'a str) -> McpOperation<'a> {
        McpOperation {
            kind: McpKind::Protocol,
            method,
            name: None,
            arguments: None,
        }
    }
}

/// One SQL statement as the database adapter's parser (PostgreSQL's own grammar) saw it:
/// what policy decides on. Everything is lower-case, as PostgreSQL folds unquoted names.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SqlStatement {
    /// The top-level kind: `select`, `insert`, `update`, `delete`, `merge`, `copy`, `ddl`,
    /// `grant`, `truncate`, `do`, `call`, `set`, `show`, `transaction`, `listen`, `notify`,
    /// `explain`, `prepare`, `execute`, `maintenance`, `lock`, `cursor`, `session`, `other`.
    pub kind: String,
    /// Every kind the statement performs, its own first: a `WITH d AS (DELETE ...) SELECT`
    /// is `["select", "delete"]`, an `EXPLAIN ANALYZE UPDATE` `["explain", "update"]`.
    pub kinds: Vec<String>,
    /// Tables and views read or written, schema-qualified when the statement qualifies them
    /// (`public.customers`), through CTEs and subqueries; CTE names themselves are not
    /// tables. Sorted, without duplicates.
    pub tables: Vec<String>,
    /// Functions called, as written (`pg_read_file`, `pg_catalog.pg_read_file`). Sorted,
    /// without duplicates.
    pub functions: Vec<String>,
    /// An UPDATE or DELETE (at any depth) without a WHERE clause: it touches every row.
    pub no_where: bool,
    /// Functions among `functions` the database adapter knows to be privileged (they read
    /// server files, reach other servers, signal other sessions ...), each with why, in the
    /// order of `functions`: an allow rule covers the statement only when its
    /// `allow.functions` names them. Filled in by the adapter's classifier.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub privileged_functions: Vec<FlaggedFunction>,
    /// Functions among `functions` that the server's catalog shows are not plain reads
    /// (user-defined, volatile, or not found), each with why: like a privileged function,
    /// an allow rule covers the statement only when its `allow.functions` names them. Filled
    /// in by the database adapter from the server's catalog, not by the parser.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flagged_functions: Vec<FlaggedFunction>,
    /// The schemas an unqualified name may stand for, as the database defines them: rules
    /// and grants take `schema.name` and `name` as the same object for these schemas.
    #[serde(skip)]
    pub default_schemas: DefaultSchemas,
}

/// Schemas whose names a statement may leave out, a fact of the database (PostgreSQL: an
/// unqualified table is looked up in `public`, a function also in `pg_catalog`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DefaultSchemas {
    pub tables: &'static [&'static str],
    pub functions: &'static [&'static str],
}

impl DefaultSchemas {
    /// Whether `pattern` (a matcher of names) matches `name`, taking `schema.name` and
    /// `name` as the same for each of `schemas`: `customers` matches `public.customers` and
    /// the reverse, never `sales.customers`.
    pub fn matches(schemas: &[&str], name: &str, pattern: impl Fn(&str) -> bool) -> bool {
        if pattern(name) {
            return true;
        }
        match name.split_once('.') {
            Some((schema, rest)) => schemas.contains(&schema) && pattern(rest),
            None => schemas
                .iter()
                .any(|schema| with_schema(schema, name, &pattern)),
        }
    }
}

/// Calls `f` with `schema.name`, built on the stack (names are at most 63 bytes in
/// PostgreSQL, so the heap is needed only for names it would truncate anyway).
fn with_schema(schema: &str, name: &str, f: impl Fn(&str) -> bool) -> bool {
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

/// A function a statement calls that needs an explicit `allow.functions`, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlaggedFunction {
    /// As the statement wrote it (see [`SqlStatement::functions`]).
    pub name: String,
    pub why: String,
}

impl SqlStatement {
    /// Whether `kind` is among what the statement performs.
    pub fn performs(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind)
    }
}

/// A time-boxed grant an approver gave a caller: access to a target, or to some of its
/// tools or tables, until it expires or is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveGrant {
    /// The grant's id (the id of the approval that issued it).
    pub id: String,
    pub target: String,
    /// Tool names, `prefix*` patterns or `*`; empty together with `tables`: the whole target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Table names (database targets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
}

impl ActiveGrant {
    /// Whether the grant covers acting on the MCP `resource` of `kind` on `target`. A grant
    /// naming tools covers only calls of those tools; one naming tables only statements
    /// whose tables it names (see [`ActiveGrant::covers_sql`]); one naming neither covers
    /// everything on its target.
    pub fn covers(&self, target: &str, kind: McpKind, resource: Option<&str>) -> bool {
        if self.target != target {
            return false;
        }
        if self.tools.is_empty() && self.tables.is_empty() {
            return true;
        }
        let Some(resource) = resource else {
            return false;
        };
        let listed = |list: &[String]| list.iter().any(|p| name_matches(p, resource));
        match kind {
            McpKind::Tool => listed(&self.tools),
            _ => listed(&self.tables),
        }
    }

    /// Whether the grant covers an HTTP request on `target`: only a whole-target grant does
    /// (grants name tools or tables, which HTTP requests do not have).
    pub fn covers_http(&self, target: &str) -> bool {
        self.target == target && self.tools.is_empty() && self.tables.is_empty()
    }

    /// Whether the grant covers an SQL statement: a whole-target grant always; one naming
    /// tables only a statement whose every table it names (`schema.name` and `name` the same
    /// for the statement's default schemas; so a statement touching no table needs a
    /// whole-target grant); one naming tools never.
    pub fn covers_sql(&self, target: &str, stmt: &SqlStatement) -> bool {
        if self.target != target {
            return false;
        }
        if self.tools.is_empty() && self.tables.is_empty() {
            return true;
        }
        let schemas = stmt.default_schemas.tables;
        !self.tables.is_empty()
            && !stmt.tables.is_empty()
            && stmt.tables.iter().all(|t| {
                self.tables
                    .iter()
                    .any(|p| DefaultSchemas::matches(schemas, t, |n| name_matches(p, n)))
            })
    }
}

/// `*` matches everything, `prefix*` a prefix, anything else itself: the patterns a grant
/// request may use (kept this small so an approver reads exactly what is asked).
pub fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The outcome of a policy decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        /// The masking profile the matching rule names, applied to what comes back.
        mask: Option<Arc<str>>,
    },
    Deny {
        reason: Arc<str>,
    },
    /// Wait for people to approve: what the approval must satisfy.
    Hold(Arc<ApprovalRequirement>),
}

/// Who must approve a held request or a grant, how many, and how long they have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequirement {
    /// Groups whose members may approve. The requester never may, whatever their groups.
    pub approvers: Vec<String>,
    /// Distinct approvers needed (at least 1).
    pub min_approvals: u32,
    /// How long the request waits for a decision before it expires.
    pub timeout: Duration,
    /// The requester must say why (MCP: `_meta`; HTTP: a header; grants: `--reason`).
    pub require_reason: bool,
    /// For grants: the longest a grant may last.
    pub max_grant: Duration,
}

impl Decision {
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::Deny { .. } => "deny",
            Decision::Hold(_) => "hold",
        }
    }
}

/// A decision together with the rule that produced it and the policy version it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// The name of the matching rule; `None` when no rule matched (default deny).
    pub rule: Option<Arc<str>>,
    /// A hash of the compiled rule set, so every event names the exact policy it was judged by.
    pub policy_version: Arc<str>,
    /// The just-in-time grant that let an allow with `requires_grant` through.
    pub grant: Option<Arc<str>>,
    /// For an HTTP request: the path template of the matching rule that the path matched
    /// (`/customers/{id}`), which events record beside the path.
    pub route: Option<Arc<str>>,
}

impl Verdict {
    pub fn is_allow(&self) -> bool {
        matches!(self.decision, Decision::Allow { .. })
    }

    /// The rule name for messages and events: the rule's own name or `default-deny`.
    pub fn rule_label(&self) -> &str {
        self.rule.as_deref().unwrap_or("default-deny")
    }
}

/// The digest and size of a payload that is recorded without its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadDigest {
    /// How `sha256` was computed; absent: plain SHA-256 (events written before keyed
    /// digests, which stay readable and verifiable as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<DigestAlgorithm>,
    /// The 256-bit digest, hex.
    pub sha256: String,
    pub size: u64,
}

/// The algorithm of a [`PayloadDigest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DigestAlgorithm {
    /// HMAC-SHA256 under the audit log's digest key: a short secret in a payload cannot be
    /// found by hashing candidates without the key.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

impl DigestAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlgorithm::HmacSha256 => "hmac-sha256",
        }
    }
}

impl PayloadDigest {
    /// The plain SHA-256 of `bytes`. Events record keyed digests instead (the audit log's
    /// `digest`): a plain one of a short secret gives the secret back.
    pub fn of(bytes: &[u8]) -> Self {
        PayloadDigest {
            alg: None,
            sha256: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
        }
    }
}

/// What an audit event records (AU-2 event types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "session.start")]
    SessionStart,
    #[serde(rename = "session.end")]
    SessionEnd,
    /// A caller's request, its decision and its outcome.
    #[serde(rename = "request")]
    Request,
    /// A notification relayed from the caller (cancellation, progress, ...).
    #[serde(rename = "notification")]
    Notification,
    /// A caller presented no or bad credentials.
    #[serde(rename = "auth.failure")]
    AuthFailure,
    /// An upstream changed a pinned tool; the tool is withheld.
    #[serde(rename = "tool.pin_mismatch")]
    ToolPinMismatch,
    /// An operator accepted a changed tool.
    #[serde(rename = "tool.pin_accepted")]
    ToolPinAccepted,
    /// The gateway started or stopped.
    #[serde(rename = "gateway.start")]
    GatewayStart,
    #[serde(rename = "gateway.stop")]
    GatewayStop,
    /// The configuration file was read again (SIGHUP): its rules, identities and masking
    /// profiles put in force (`policy_version` names the new policy), or the reload refused
    /// and why (outcome `failed`; the previous configuration stays in force).
    #[serde(rename = "config.reloaded")]
    ConfigReloaded,
    /// A request was held, or a grant asked for; approvers are being asked.
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    /// A notification about an approval was delivered (or finally failed).
    #[serde(rename = "approval.notified")]
    ApprovalNotified,
    /// An approver approved (the approval may need more approvals before it is granted).
    #[serde(rename = "approval.approved")]
    ApprovalApproved,
    /// An approver denied; the approval is over.
    #[serde(rename = "approval.denied")]
    ApprovalDenied,
    /// Someone tried to decide an approval they may not decide (their own request, or one
    /// their groups do not cover) and was refused: AC-5 evidence that the refusal works.
    #[serde(rename = "approval.refused")]
    ApprovalRefused,
    /// An approved held request was forwarded.
    #[serde(rename = "approval.released")]
    ApprovalReleased,
    /// Nobody decided in time.
    #[serde(rename = "approval.expired")]
    ApprovalExpired,
    /// The held request ended without a decision: the caller went away, the gateway restarted.
    #[serde(rename = "approval.cancelled")]
    ApprovalCancelled,
    /// An approved grant request became an active grant.
    #[serde(rename = "grant.issued")]
    GrantIssued,
    /// A grant was revoked before its end.
    #[serde(rename = "grant.revoked")]
    GrantRevoked,
    /// A grant reached its end.
    #[serde(rename = "grant.expired")]
    GrantExpired,
    /// Column discovery sampled a table and tagged the columns its detectors flagged (names
    /// and counts, never values).
    #[serde(rename = "columns.discovered")]
    ColumnsDiscovered,
    /// A segment of encrypted recordings was sealed and written.
    #[serde(rename = "recording.sealed")]
    RecordingSealed,
    /// Retention deleted recordings (named in the event).
    #[serde(rename = "recording.removed")]
    RecordingRemoved,
    /// Someone read recordings back through the gateway's commands: showed, replayed,
    /// exported, decrypted.
    #[serde(rename = "recording.accessed")]
    RecordingAccessed,
    /// Recording failed for a request that went on anyway (`mode = "best-effort"`).
    #[serde(rename = "recording.failed")]
    RecordingFailed,
    /// An evidence document (review report, OSCAL document) was written: its hash, so the
    /// document cannot later be regenerated with other numbers unnoticed.
    #[serde(rename = "evidence.report")]
    EvidenceReport,
    /// A named reviewer signed off a review report (AU-6): who, when, which document, why.
    #[serde(rename = "evidence.reviewed")]
    EvidenceReviewed,
    /// A person signed in to the web console (with how: OIDC or API key), or was refused.
    #[serde(rename = "console.sign_in")]
    ConsoleSignIn,
    /// A console session ended: signed out, or timed out.
    #[serde(rename = "console.sign_out")]
    ConsoleSignOut,
    /// Something left the gateway through the console: an inclusion proof, an evidence
    /// document, an audit event's detail. Who took what.
    #[serde(rename = "console.export")]
    ConsoleExport,
}

impl EventType {
    /// Every event type, in the order of the enum: what a filter on `type` accepts.
    pub const ALL: [EventType; 31] = [
        EventType::SessionStart,
        EventType::SessionEnd,
        EventType::Request,
        EventType::Notification,
        EventType::AuthFailure,
        EventType::ToolPinMismatch,
        EventType::ToolPinAccepted,
        EventType::GatewayStart,
        EventType::GatewayStop,
        EventType::ConfigReloaded,
        EventType::ApprovalRequested,
        EventType::ApprovalNotified,
        EventType::ApprovalApproved,
        EventType::ApprovalDenied,
        EventType::ApprovalRefused,
        EventType::ApprovalReleased,
        EventType::ApprovalExpired,
        EventType::ApprovalCancelled,
        EventType::GrantIssued,
        EventType::GrantRevoked,
        EventType::GrantExpired,
        EventType::ColumnsDiscovered,
        EventType::RecordingSealed,
        EventType::RecordingRemoved,
        EventType::RecordingAccessed,
        EventType::RecordingFailed,
        EventType::EvidenceReport,
        EventType::EvidenceReviewed,
        EventType::ConsoleSignIn,
        EventType::ConsoleSignOut,
        EventType::ConsoleExport,
    ];

    /// The name events write in `type` (`session.start`, `request`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::SessionStart => "session.start",
            EventType::SessionEnd => "session.end",
            EventType::Request => "request",
            EventType::Notification => "notification",
            EventType::AuthFailure => "auth.failure",
            EventType::ToolPinMismatch => "tool.pin_mismatch",
            EventType::ToolPinAccepted => "tool.pin_accepted",
            EventType::GatewayStart => "gateway.start",
            EventType::GatewayStop => "gateway.stop",
            EventType::ConfigReloaded => "config.reloaded",
            EventType::ApprovalRequested => "approval.requested",
            EventType::ApprovalNotified => "approval.notified",
            EventType::ApprovalApproved => "approval.approved",
            EventType::ApprovalDenied => "approval.denied",
            EventType::ApprovalRefused => "approval.refused",
            EventType::ApprovalReleased => "approval.released",
            EventType::ApprovalExpired => "approval.expired",
            EventType::ApprovalCancelled => "approval.cancelled",
            EventType::GrantIssued => "grant.issued",
            EventType::GrantRevoked => "grant.revoked",
            EventType::GrantExpired => "grant.expired",
            EventType::ColumnsDiscovered => "columns.discovered",
            EventType::RecordingSealed => "recording.sealed",
            EventType::RecordingRemoved => "recording.removed",
            EventType::RecordingAccessed => "recording.accessed",
            EventType::RecordingFailed => "recording.failed",
            EventType::EvidenceReport => "evidence.report",
            EventType::EvidenceReviewed => "evidence.reviewed",
            EventType::ConsoleSignIn => "console.sign_in",
            EventType::ConsoleSignOut => "console.sign_out",
            EventType::ConsoleExport => "console.export",
        }
    }

    /// The event type named `name`, as events write it.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Forwarded and the upstream answered with a result.
    Success,
    /// Forwarded and the upstream answered with an error.
    UpstreamError,
    /// Refused by policy (deny, or hold while approvals are unavailable).
    Denied,
    /// Refused before policy: malformed, oversized, unauthenticated.
    Rejected,
    /// The gateway could not complete it: upstream dead, timeout.
    Failed,
    /// Informational events (session start/end, pins).
    Info,
}

impl Outcome {
    /// Every outcome: what a filter on `outcome` accepts.
    pub const ALL: [Outcome; 6] = [
        Outcome::Success,
        Outcome::UpstreamError,
        Outcome::Denied,
        Outcome::Rejected,
        Outcome::Failed,
        Outcome::Info,
    ];

    /// The name events write in `outcome` (`success`, `upstream_error`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Denied => "denied",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
            Outcome::Info => "info",
        }
    }

    /// The outcome named `name`, as events write it.
    pub fn parse(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

/// The AU-3 record of one thing that happened at the gateway.
///
/// Every field that can hold caller data holds a digest, never the value: arguments and
/// results are kept as [`PayloadDigest`]s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// A UUIDv7, assigned when the event is created.
    pub id: String,
    /// UTC time with milliseconds, RFC 3339.
    pub time: String,
    /// The gateway instance that wrote it.
    pub gateway: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub outcome: Outcome,
    /// The caller's network address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The operation (`tools/call`) and the thing acted on (tool name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The JSON-RPC id of the request, as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<PayloadDigest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<PayloadDigest>,
    /// Milliseconds from receipt to answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// A human-readable explanation: why it was refused, what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The approval this event is about, or that a held request went through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// The just-in-time grant that allowed this request, or that this event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The reason a person gave: a requester for asking, an approver for deciding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A break-glass decision: an emergency approver approved, possibly their own request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
    /// Sensitive data found in the request (the tool-call arguments), by detector and place:
    /// what policy saw. Never the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<Vec<DataFinding>>,
    /// What the masking profile replaced in the answer before it left, by detector and
    /// place. Never the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked: Option<Vec<DataFinding>>,
    /// For a database statement: what ran, without its values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<StatementRecord>,
    /// For an HTTP request: its method, route, status and sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRecord>,
    /// The session recording of this request: the chunks holding what was forwarded and
    /// what the caller received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<RecordedRef>,
    /// `recording.sealed`: the encrypted segment this event vouches for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentRecord>,
    /// `recording.removed`: what retention deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<RemovedRecord>,
    /// `evidence.report` and `evidence.reviewed`: the document written or reviewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceRecord>,
}

/// An evidence document, as an event names it: enough to recognise the exact bytes and the
/// period they speak for, without the document itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    /// What the document is: `report` (the AU-6 review report), `assessment-results`,
    /// `assessment-plan`, `component-definition` (OSCAL).
    pub document: String,
    /// How it is written: `html`, `md`, `json` (the report's), `oscal-json`.
    pub format: String,
    /// The period it covers (RFC 3339, `since` inclusive, `until` exclusive); absent for
    /// documents about the configuration rather than a period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// SHA-256 (hex) of the document's bytes, as written.
    pub sha256: String,
    pub bytes: u64,
    /// The file's name where it was written (no directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// Where a request's recording is: the ids (SHA-256 of the stored bytes, 64 hex digits) of
/// the chunk holding the request as forwarded and of the chunk holding the answer as the
/// caller received it. The log signs the ids, so the chunks can be checked against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The chunks go to a segment encrypted to the auditors, not beside the event: signed
    /// here so that verification knows where each chunk must be, and a chunk deleted from
    /// beside its event cannot pass for one a crash lost before its segment was sealed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sealed: bool,
}

/// A sealed segment of recordings encrypted to the auditors: enough to check the file
/// without the key that decrypts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// The file's name in the recordings directory.
    pub file: String,
    /// SHA-256 (hex) of the whole file, as written.
    pub sha256: String,
    pub bytes: u64,
    /// The audit sequence numbers of the first and last request whose chunks it holds.
    pub first_seq: u64,
    pub last_seq: u64,
    /// How many chunks it holds.
    pub chunks: u64,
    /// Fingerprints of the age recipients it is encrypted to (SHA-256 of the recipient's
    /// text, first 16 hex digits).
    pub recipients: Vec<String>,
}

/// What a retention run deleted: the chunks and segments named here are gone on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedRecord {
    /// Recordings of requests before this time (RFC 3339) were removed.
    pub before: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
}

/// The record of one SQL statement: its shape and effect, never its literal values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementRecord {
    /// The statement with every literal replaced by `$n` (PostgreSQL's own normalisation).
    pub text: String,
    /// The statement's fingerprint (16 hex digits): equal for statements that differ only
    /// in their values, so an auditor can group them.
    pub fingerprint: String,
    /// What it performs (`select`, `delete` ...), its own kind first.
    pub kinds: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    /// Rows returned or affected, when the server said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// The record of one HTTP request: what was asked and how it went, never a header's value
/// or a body (those are in the recording, masked, when recording is on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRecord {
    pub method: String,
    /// The path template of the rule that decided (`/customers/{id}`), when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The status the caller received; absent when no answer was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Bytes of the request body forwarded.
    pub request_bytes: u64,
    /// Bytes of the response body the caller received (after masking).
    pub response_bytes: u64,
    /// Milliseconds from forwarding to the upstream's response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<f64>,
}

/// A summary of sensitive data at one place of a message: which detector, where (a JSON
/// path such as `$.content[0].text`), how many times. The value itself is never recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFinding {
    pub detector: String,
    pub path: String,
    pub count: u32,
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_type_and_outcome_names_are_the_ones_events_write() {
        let mut seen = std::collections::HashSet::new();
        for t in EventType::ALL {
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::json!(t.as_str())
            );
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert!(seen.insert(t.as_str()), "{} twice", t.as_str());
        }
        for o in Outcome::ALL {
            assert_eq!(
                serde_json::to_value(o).unwrap(),
                serde_json::json!(o.as_str())
            );
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(EventType::parse("nonsense"), None);
        assert_eq!(Outcome::parse("Success"), None);
    }

    use super::*;

    #[test]
    fn operation_kinds_index_densely() {
        for (i, kind) in OperationKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind:?}");
        }
        assert_eq!(OperationKind::COUNT, McpKind::COUNT + 2);
        assert_eq!(OperationKind::ALL[McpKind::COUNT], OperationKind::Sql);
        assert_eq!(
            OperationKind::ALL[OperationKind::COUNT - 1],
            OperationKind::Http
        );
    }

    #[test]
    fn an_action_names_its_verb_and_resource_for_events() {
        let args = serde_json::json!({"amount": 1});
        let call = Action {
            target: "billing",
            target_kind: TargetKind::Mcp,
            operation: Operation::Mcp(McpOperation::named(McpKind::Tool, "refund", Some(&args))),
            findings: &[],
            grants: &[],
        };
        assert_eq!(call.verb(), "tools/call");
        assert_eq!(call.resource(), Some("refund"));
        assert_eq!(call.arguments(), Some(&args));
        assert_eq!(call.sql(), None);
        assert_eq!(call.operation.kind(), OperationKind::Mcp(McpKind::Tool));
        let init = Operation::Mcp(McpOperation::protocol("initialize"));
        assert_eq!(init.kind(), OperationKind::Mcp(McpKind::Protocol));
        let stmt = SqlStatement {
            kind: "select".into(),
            ..SqlStatement::default()
        };
        let select = Action {
            operation: Operation::Sql(&stmt),
            target_kind: TargetKind::Postgres,
            ..call
        };
        assert_eq!(select.verb(), "select");
        assert_eq!(select.resource(), None);
        assert_eq!(select.sql(), Some(&stmt));
    }

    #[test]
    fn grants_cover_by_kind_and_by_table_in_default_schemas() {
        let grant = |tools: &[&str], tables: &[&str]| ActiveGrant {
            id: "g".into(),
            target: "t".into(),
            tools: tools.iter().map(|s| s.to_string()).collect(),
            tables: tables.iter().map(|s| s.to_string()).collect(),
        };
        let tools = grant(&["refund_*"], &[]);
        assert!(tools.covers("t", McpKind::Tool, Some("refund_one")));
        assert!(!tools.covers("t", McpKind::Prompt, Some("refund_one")));
        assert!(!tools.covers("other", McpKind::Tool, Some("refund_one")));
        let stmt = |tables: &[&str]| SqlStatement {
            tables: tables.iter().map(|s| s.to_string()).collect(),
            default_schemas: DefaultSchemas {
                tables: &["public"],
                functions: &[],
            },
            ..SqlStatement::default()
        };
        let tables = grant(&[], &["customers"]);
        assert!(tables.covers_sql("t", &stmt(&["public.customers"])));
        assert!(!tables.covers_sql("t", &stmt(&["sales.customers"])));
        assert!(!tables.covers_sql("t", &stmt(&[])));
        assert!(!tools.covers_sql("t", &stmt(&["customers"])));
        assert!(grant(&[], &[]).covers_sql("t", &stmt(&[])));
    }
}
