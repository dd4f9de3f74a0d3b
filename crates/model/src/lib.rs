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
    Hold {
        approvers: Arc<[String]>,
        timeout: Duration,
    },
}

impl Decision {
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::Deny { .. } => "deny",
            Decision::Hold { .. } => "hold",
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

/// The SHA-256 and size of a payload that is recorded without its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadDigest {
    pub sha256: String,
    pub size: u64,
}

impl PayloadDigest {
    pub fn of(bytes: &[u8]) -> Self {
        PayloadDigest {
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
    /// Reserved for the approval workflow: the approval this request went through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// Sensitive data found in the request (the tool-call arguments), by detector and place:
    /// what policy saw. Never the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<Vec<DataFinding>>,
    /// What the masking profile replaced in the answer before it left, by detector and
    /// place. Never the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked: Option<Vec<DataFinding>>,
}

/// A summary of sensitive data at one place of a message: which detector, where (a JSON
/// path such as `$.content[0].text`), how many times. The value itself is never recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFinding {
    pub detector: String,
    pub path: String,
    pub count: u32,
}
