//! The records of the approval workflow, as stored and as the admin API shows them.

use portcullis_model::{ActiveGrant, ApprovalRequirement, Identity, PayloadDigest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What is being approved: a held request, or a just-in-time grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalKind {
    Request,
    Grant,
}

/// Where an approval stands. Only `Pending` can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
    /// Ended without a decision: the caller went away, or the gateway restarted while the
    /// request was held.
    Cancelled,
    /// Ended without a decision because the replica holding the request stopped answering
    /// (several replicas share state): its caller's connection went with it.
    Abandoned,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
            Status::Abandoned => "abandoned",
        }
    }
}

/// What a grant request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantSpec {
    /// Tool names or `prefix*` patterns; empty with `tables`: the whole target.
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub tables: Vec<String>,
    /// How long the grant lasts once issued, in seconds.
    pub duration_secs: u64,
}

/// The people-facing part of an identity, kept in approval records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub issuer: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub kind: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Person {
    pub fn of(identity: &Identity) -> Person {
        Person {
            issuer: identity.issuer.clone(),
            subject: identity.subject.clone(),
            display_name: identity.display_name.clone(),
            kind: identity.kind.as_str().to_string(),
            groups: identity.groups.clone(),
        }
    }

    /// Whether this is the same principal (issuer and subject), whatever their groups.
    pub fn is(&self, identity: &Identity) -> bool {
        self.issuer == identity.issuer && self.subject == identity.subject
    }

    /// A name for messages: the display name, else the subject.
    pub fn name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.subject)
    }
}

/// One approver's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub approver: Person,
    pub approve: bool,
    pub reason: String,
    /// RFC 3339 UTC, milliseconds.
    pub time: String,
    /// Decided as a member of a break-glass group rather than as a listed approver.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
}

/// One approval: a held request or a grant request, with everything an approver needs to
/// judge it and everything an auditor needs to follow it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// `apr_` and 20 hex digits.
    pub id: String,
    pub kind: ApprovalKind,
    pub status: Status,
    pub requester: Person,
    /// The requester's network address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: String,
    /// `tools/call`, ... for a held request; `grant` for a grant request.
    pub action: String,
    /// The tool, resource or prompt acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The request's arguments as an approver sees them: masked with the `default` profile,
    /// so no card number or secret reaches the approvals store or a notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
    /// The digest of the arguments as received (the one in the request's audit event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments_digest: Option<PayloadDigest>,
    /// For grant requests: what is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantSpec>,
    /// Why the requester asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The rule that held the request or that grants are asked under, and its policy.
    pub rule: String,
    pub policy_version: String,
    /// Groups whose members may approve.
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub expires_at: String,
    /// The audit event of the held request (its id is known before it is written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_event: Option<String>,
    #[serde(default)]
    pub votes: Vec<Vote>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    /// Why it closed without a decision (expired, cancelled), in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_because: Option<String>,
    /// SHA-256 over what is being approved: a decision must quote it, so a decision meant for
    /// one request cannot be replayed against another, or against a request that changed.
    pub digest: String,
}

impl Approval {
    /// Why a held request that ended without approval is refused, for its caller: the
    /// decision, who made it, when and why. `what` names the request ("tools/call refund",
    /// "UPDATE on customers").
    pub fn refusal(&self, what: &str) -> String {
        match self.status {
            Status::Denied => match self.votes.iter().find(|v| !v.approve) {
                Some(v) => format!(
                    "{what} was denied by {} at {} (approval {}): {}",
                    v.approver.name(),
                    v.time,
                    self.id,
                    v.reason
                ),
                None => format!("{what} was denied (approval {})", self.id),
            },
            Status::Expired => format!(
                "{what} was held for approval {} and nobody decided before {}, so it is refused",
                self.id, self.expires_at
            ),
            Status::Cancelled | Status::Abandoned => format!(
                "{what} was held for approval {} and {}: {}",
                self.id,
                self.status.as_str(),
                self.closed_because.as_deref().unwrap_or("no reason given")
            ),
            // Still pending (or approved, but asked why it was refused): its end could not
            // be recorded. Fail closed.
            Status::Pending | Status::Approved => format!(
                "{what} was held for approval {} and its end could not be recorded, so it is refused",
                self.id
            ),
        }
    }

    /// Computes `digest` from the fields that say what is approved.
    pub(crate) fn seal(&mut self) {
        let bound = serde_json::json!([
            "portcullis-approval/1",
            self.id,
            self.kind,
            self.requester.issuer,
            self.requester.subject,
            self.target,
            self.action,
            self.resource,
            self.arguments_digest.as_ref().map(|d| &d.sha256),
            self.grant,
            self.rule,
            self.approvers,
            self.min_approvals,
            self.created_at,
            self.expires_at,
        ]);
        self.digest = hex::encode(Sha256::digest(bound.to_string().as_bytes()));
    }

    /// Approvals so far from distinct approvers.
    pub fn approvals(&self) -> usize {
        self.votes.iter().filter(|v| v.approve).count()
    }

    /// What the held request or grant is, in a few words: `tools/call refund_payment on
    /// billing`, `a grant of refund_* on billing for 30m`.
    pub fn summary(&self) -> String {
        match (&self.grant, &self.resource) {
            (Some(grant), _) => {
                let scope: Vec<&str> = grant
                    .tools
                    .iter()
                    .chain(&grant.tables)
                    .map(String::as_str)
                    .collect();
                format!(
                    "a grant of {} on {} for {}",
                    if scope.is_empty() {
                        "everything".to_string()
                    } else {
                        scope.join(", ")
                    },
                    self.target,
                    humanize(grant.duration_secs)
                )
            }
            (None, Some(resource)) => format!("{} {resource} on {}", self.action, self.target),
            (None, None) => format!("{} on {}", self.action, self.target),
        }
    }

    pub(crate) fn requirement_text(&self) -> String {
        format!(
            "{} approval(s) from {}",
            self.min_approvals,
            self.approvers.join(", ")
        )
    }
}

/// A grant as stored: issued by an approved grant request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The id of the approval that issued it.
    pub id: String,
    pub holder: Person,
    pub target: String,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub tables: Vec<String>,
    pub issued_at: String,
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<Person>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
    /// Approver groups of the request that issued it: they may revoke it too.
    #[serde(default)]
    pub approvers: Vec<String>,
}

impl Grant {
    pub fn active_form(&self) -> ActiveGrant {
        ActiveGrant {
            id: self.id.clone(),
            target: self.target.clone(),
            tools: self.tools.clone(),
            tables: self.tables.clone(),
        }
    }
}

/// What the rule demands, copied into the approval when it is created.
pub(crate) fn requirement_fields(r: &ApprovalRequirement) -> (Vec<String>, u32) {
    (r.approvers.clone(), r.min_approvals)
}

/// `90` → `1m30s`, `1800` → `30m`, `7200` → `2h`.
pub fn humanize(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}
