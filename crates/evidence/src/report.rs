//! The AU-6 review report: its data, as the JSON report writes it and as the HTML and
//! Markdown renderers and the OSCAL documents read it.
//!
//! Every list that could grow with the log is capped ([`Capped`]: the first items and how
//! many more there were); counts are exact. Items name their events ([`EventRef`]: id, leaf
//! index, time, and the session whose recording shows them), so a reviewer can go from any
//! line to `portcullis audit show`, `audit proof` or `sessions replay`.

use serde::{Deserialize, Serialize};

use crate::Period;

/// The `format` of a JSON report.
pub const REPORT_FORMAT: &str = "portcullis-evidence-report/1";

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_FORMAT`].
    pub format: String,
    pub period: Period,
    /// Who wrote the period's events: gateway instances (`gateway.id`), and `portcullis-cli`
    /// for events the command line appended (reads of recordings, signed documents).
    pub gateways: Vec<String>,
    /// Whether the log verified, against what; first, as the report leads with it.
    pub integrity: Integrity,
    /// One result per automated control check (`controls::CHECKS`), in that order.
    pub controls: Vec<ControlResult>,
    pub totals: Totals,
    pub identities: Vec<IdentityActivity>,
    pub targets: Vec<TargetActivity>,
    /// Writes, DDL and destructive statements that were allowed.
    pub privileged: Capped<PrivilegedAction>,
    /// Held requests and grant requests: who asked, who decided, how long it took.
    pub holds: Capped<Hold>,
    /// Decisions taken through break-glass.
    pub break_glass: Capped<Decision>,
    /// Attempts to decide an approval one may not decide (one's own request, or another
    /// group's), refused.
    pub refused_decisions: Capped<Decision>,
    pub access: AccessChanges,
    pub auth_failures: AuthFailures,
    /// Refusals (by policy) per rule, most first.
    pub refusals_by_rule: Vec<RuleRefusals>,
    /// What masking replaced, per identity and detector: counts only.
    pub masking: Vec<MaskingCount>,
    pub anomalies: Vec<Anomaly>,
    /// Sign-offs of review reports recorded in the period (AU-6).
    pub reviews: Vec<Review>,
    /// Evidence documents written in the period (their hashes are in the log).
    pub documents: Vec<DocumentWritten>,
    /// When the report covers several logs (the replicas of a gateway, each with its own
    /// log): each one's activity and verification, in the order given. Events above are
    /// merged by time and name their log; [`Report::integrity`] is then the logs' together
    /// (verified only if every one is). Empty for a report of one log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogReport>,
}

/// One log of a report over several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogReport {
    /// The log's origin (`portcullis/<gateway.id>`), as its checkpoints state it.
    pub origin: String,
    /// The gateway instances whose events are in the period, in this log.
    pub gateways: Vec<String>,
    /// Events and requests in the period, in this log.
    pub events: u64,
    pub requests: u64,
    /// This log's verification, as far as the period needs it.
    pub integrity: Integrity,
}

/// A pointer to one event: enough to find it, prove it, and replay its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    pub id: String,
    /// The leaf index in the Merkle tree is `seq - 1`.
    pub seq: u64,
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The request's recording is bound to the event (`portcullis sessions replay`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recorded: bool,
    /// The origin of the log the event is in, when the report covers several (the replicas
    /// of a gateway each keep one; `seq` counts within it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// The first items of a list and how many more there were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capped<T> {
    pub total: u64,
    pub items: Vec<T>,
}

impl<T> Default for Capped<T> {
    fn default() -> Self {
        Capped {
            total: 0,
            items: Vec::new(),
        }
    }
}

impl<T> Capped<T> {
    /// Counts `item` and keeps it if fewer than `cap` are kept.
    pub fn push(&mut self, cap: usize, item: T) {
        self.total += 1;
        if self.items.len() < cap {
            self.items.push(item);
        }
    }

    /// How many were counted but not kept.
    pub fn more(&self) -> u64 {
        self.total - self.items.len() as u64
    }
}

/// What verification found, as far as the period needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integrity {
    /// The log verified (every event against the Merkle tree, every checkpoint).
    pub verified: bool,
    /// Why not, when it did not: the first problem, as `audit verify` states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// What was checked: `portcullis audit verify` with these inputs.
    pub checked_with: CheckedWith,
    /// The checkpoint's origin line (the log's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Events in the log up to the period's end.
    pub events_to_period_end: u64,
    /// Events in the period.
    pub period_events: u64,
    /// The leaf indexes (seq) of the period's first and last event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// The smallest verified checkpoint that covers every event up to the period's end:
    /// what the period's events were verified against. `None`: not signed yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covering_checkpoint: Option<CheckpointSeen>,
    /// Verified checkpoints from the last one before the period up to the covering one (or
    /// up to the period's end).
    pub checkpoints_signed: u64,
    /// Of those, how many were found published outside the gateway.
    pub checkpoints_published: u64,
    /// Verified witness cosignatures of those checkpoints.
    pub cosignatures: Vec<CosignatureSeen>,
    /// The newest verified cosignature of the checkpoints up to the covering one (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cosignature: Option<String>,
    /// How far witnessing lags the period: 0 when a witness cosigned the covering
    /// checkpoint, else the seconds from [`Integrity::last_cosignature`] to the period's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosignature_age_seconds: Option<u64>,
}

/// The inputs verification used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedWith {
    /// Fingerprint of the gateway's public key (its note key name and id).
    pub key: String,
    /// How many published-checkpoint directories were given.
    pub published_dirs: u64,
    /// The witness keys given, by name.
    pub witnesses: Vec<String>,
}

/// A verified checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSeen {
    pub size: u64,
    /// The tree root at that size, base64.
    pub root: String,
    /// Found in a published directory too, not only in the gateway's database.
    pub published: bool,
}

/// A verified witness cosignature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CosignatureSeen {
    pub witness: String,
    /// The size of the checkpoint it cosigned.
    pub size: u64,
    /// When the witness cosigned (RFC 3339).
    pub time: String,
}

/// The outcome of one automated control check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResult {
    /// Lower-case OSCAL control id (`au-9`).
    pub control: String,
    pub title: String,
    pub status: ControlStatus,
    /// The rule it was judged by (`controls::CHECKS`).
    pub rule: String,
    /// Why this status: the facts that decided it.
    pub reason: String,
    /// Events the check counted.
    pub events: u64,
    /// A few of the events that decided it (the ones that failed it, when it failed).
    pub samples: Vec<EventRef>,
}

/// Whether a control's check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlStatus {
    /// The rule held (OSCAL `satisfied`).
    Satisfied,
    /// The rule did not hold (OSCAL `not-satisfied`).
    NotSatisfied,
}

impl ControlStatus {
    /// The OSCAL `objective-status` state.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlStatus::Satisfied => "satisfied",
            ControlStatus::NotSatisfied => "not-satisfied",
        }
    }
}

/// Counts over the period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub events: u64,
    pub requests: u64,
    /// Request outcomes.
    pub allowed: u64,
    pub denied: u64,
    pub held: u64,
    /// Refused before policy (malformed, oversized, unauthenticated).
    pub rejected: u64,
    /// Forwarded, and the upstream failed or answered with an error.
    pub failed: u64,
    pub sessions: u64,
    pub identities: u64,
    pub targets: u64,
}

/// Request counts by decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decisions {
    pub requests: u64,
    pub allowed: u64,
    pub denied: u64,
    /// Requests that went through a hold (whatever was decided).
    pub held: u64,
    pub failed: u64,
}

/// One identity's activity in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityActivity {
    /// `subject` for API keys, `subject@issuer` otherwise: unique across issuers.
    pub name: String,
    pub issuer: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `human`, `agent`, `service`.
    pub kind: String,
    /// How it authenticated (`oidc`, `api_key`, `local`).
    pub auth_methods: Vec<String>,
    #[serde(flatten)]
    pub decisions: Decisions,
    /// Targets, tools and tables it touched (capped).
    pub targets: Vec<String>,
    pub tools: Capped<String>,
    pub tables: Capped<String>,
    pub first_seen: String,
    pub last_seen: String,
    /// Not seen in the baseline window before the period.
    pub new: bool,
    pub first_event: EventRef,
}

/// One target's traffic in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetActivity {
    pub name: String,
    #[serde(flatten)]
    pub decisions: Decisions,
    pub identities: u64,
    pub tools: Capped<String>,
    pub tables: Capped<String>,
    pub sessions: u64,
    pub first_seen: String,
    pub last_seen: String,
}

/// A write, DDL or destructive action that was allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivilegedAction {
    pub event: EventRef,
    pub identity: String,
    pub target: String,
    /// The statement kinds (`delete`, `ddl` ...) or the MCP method.
    pub action: String,
    /// Tables, or the tool.
    pub objects: Vec<String>,
    /// The normalized statement (literals replaced by `$n`), for SQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// Why it counts as privileged: `write`, `ddl`, `destructive`, `no-where`,
    /// `privileged-function`, `held`.
    pub why: Vec<String>,
    pub rule: String,
    /// The approval it went through, if it was held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    pub outcome: String,
}

/// One approval (a held request or a grant request) and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub approval: String,
    /// `request` (a held request) or `grant`.
    pub kind: String,
    pub requester: String,
    pub target: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub requested: EventRef,
    /// `approved`, `denied`, `expired`, `cancelled`, or `pending` at the period's end.
    pub status: String,
    pub decisions: Vec<Decision>,
    /// Seconds from the request to the decision that closed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_to_decision: Option<f64>,
    /// The held request was forwarded after approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<EventRef>,
}

/// One person's decision on an approval (or an attempt refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub approval: String,
    pub who: String,
    /// `approve` or `deny`.
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub break_glass: bool,
    /// The approver is the requester (break-glass self-approval, or a refused attempt).
    pub own_request: bool,
    pub event: EventRef,
    /// What the event says happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// AC-2 and CM-3: changes to who may do what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessChanges {
    pub grants: Capped<GrantChange>,
    /// API keys used for the first time (not seen in the baseline window).
    pub api_keys_first_used: Capped<FirstUse>,
    /// The policy versions in force in the period, oldest first.
    pub policy_versions: Vec<PolicyVersion>,
    /// Gateway starts (each loads the configuration afresh).
    pub gateway_starts: Capped<EventRef>,
    /// Changed tools accepted by an operator, and changes withheld.
    pub pins_accepted: Capped<PinChange>,
    pub pins_withheld: Capped<PinChange>,
}

/// A grant's life in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantChange {
    pub grant: String,
    pub holder: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `requested`, `issued`, `revoked`, `expired`: the last state seen in the period.
    pub state: String,
    pub events: Vec<EventRef>,
    /// Requests the grant let through in the period.
    pub uses: u64,
}

/// A credential used for the first time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstUse {
    pub identity: String,
    pub event: EventRef,
}

/// A policy version and when it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub version: String,
    pub first_seen: EventRef,
    pub last_seen: String,
    pub events: u64,
}

/// A tool-pin change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinChange {
    pub target: String,
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub event: EventRef,
}

/// AC-7: failed authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthFailures {
    pub total: u64,
    /// By source address (capped, most first).
    pub by_source: Vec<Count>,
    /// By credential kind presented (`bearer-jwt`, `api-key`, `none`, ...).
    pub by_kind: Vec<Count>,
    pub samples: Vec<EventRef>,
}

/// A labelled count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub name: String,
    pub count: u64,
}

/// Refusals by one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRefusals {
    /// The rule's name, or `default-deny`.
    pub rule: String,
    pub count: u64,
    /// Who was refused (capped).
    pub identities: Vec<String>,
    pub samples: Vec<EventRef>,
}

/// Masking applied for one identity by one detector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskingCount {
    pub identity: String,
    pub detector: String,
    /// Values replaced.
    pub values: u64,
    /// Answers in which this detector replaced something.
    pub answers: u64,
}

/// Something worth a reviewer's eye, with the rule that flagged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// `denial-spike`, `off-hours`, `new-tool`, `new-table`, `volume`.
    pub kind: String,
    pub identity: String,
    /// The rule, stated.
    pub rule: String,
    /// What was seen.
    pub detail: String,
    pub samples: Vec<EventRef>,
}

/// A recorded sign-off of a review report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub reviewer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The reviewed document's SHA-256 and period.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed_period: Option<Period>,
    pub event: EventRef,
}

/// An evidence document written, as its `evidence.report` event records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentWritten {
    pub document: String,
    pub format: String,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub event: EventRef,
}

impl Report {
    /// The report as JSON, pretty-printed: the `--format json` file.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a report serializes");
        out.push(b'\n');
        out
    }

    /// The result of the check of `control`, if it was assessed.
    pub fn control(&self, control: &str) -> Option<&ControlResult> {
        self.controls.iter().find(|c| c.control == control)
    }
}
