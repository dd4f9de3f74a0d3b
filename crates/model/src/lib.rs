//! The shared vocabulary of Portcullis.
//!
//! Every protocol adapter turns its wire messages into an [`Action`], asks the policy for a
//! [`Verdict`] about an [`Identity`], enforces it, and emits an [`AuditEvent`]. Keeping these
//! types in one small crate without I/O lets the adapters, the policy engine and the audit
//! log agree on meaning without depending on each other.
#![forbid(unsafe_code)]

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
    /// The operation: `tools/call`, `resources/read`, `prompts/get`, `SELECT`, `GET`, ...
    pub verb: &'a str,
    /// The thing acted on: a tool name, a resource URI, a prompt name, a table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<&'a str>,
    /// Arguments as parsed JSON, available to `when` conditions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<&'a serde_json::Value>,
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
    /// For database targets: what the statement does, as the SQL parser classified it. The
    /// verb is then the statement's kind (`select`, `delete`, ...) and `resource` is `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<&'a SqlStatement>,
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
    /// Functions among `functions` that the server's catalog shows are not plain reads
    /// (user-defined, volatile, or not found), each with why: like a privileged function,
    /// an allow rule covers the statement only when its `allow.functions` names them. Filled
    /// in by the database adapter from the server's catalog, not by the parser.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flagged_functions: Vec<FlaggedFunction>,
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
    /// Whether the grant covers acting on `resource` with `verb` on `target`. A grant naming
    /// tools covers only `tools/call` of those tools; one naming tables only statements whose
    /// tables it names; one naming neither covers everything on its target.
    pub fn covers(&self, target: &str, verb: &str, resource: Option<&str>) -> bool {
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
        match verb {
            "tools/call" => listed(&self.tools),
            _ => listed(&self.tables),
        }
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

/// A summary of sensitive data at one place of a message: which detector, where (a JSON
/// path such as `$.content[0].text`), how many times. The value itself is never recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFinding {
    pub detector: String,
    pub path: String,
    pub count: u32,
}
