//! The records as the admin API shows them: approvals, grants and the people on them.
//!
//! Our own small structs, every field defaulted, rather than the approvals crate's types: the
//! client must keep working against a gateway a version ahead or behind, and must not pull the
//! server's storage code into the binary's client path.

use portcullis_approvals::humanize;
use serde::Deserialize;
use serde_json::Value;

use super::terminal::{clean, clean_line};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct Person {
    pub(super) issuer: String,
    pub(super) subject: String,
    pub(super) display_name: Option<String>,
    pub(super) kind: String,
    pub(super) groups: Vec<String>,
}

impl Person {
    /// A name for people: the display name, else the subject.
    pub(super) fn name(&self) -> String {
        clean(self.display_name.as_deref().unwrap_or(&self.subject))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct Vote {
    pub(super) approver: Person,
    pub(super) approve: bool,
    pub(super) reason: String,
    pub(super) time: String,
    pub(super) break_glass: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct GrantSpec {
    pub(super) tools: Vec<String>,
    pub(super) tables: Vec<String>,
    pub(super) duration_secs: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct Approval {
    pub(super) id: String,
    pub(super) kind: String,
    pub(super) status: String,
    pub(super) requester: Person,
    pub(super) source: Option<String>,
    pub(super) target: String,
    pub(super) action: String,
    pub(super) resource: Option<String>,
    pub(super) arguments: Option<Value>,
    pub(super) grant: Option<GrantSpec>,
    pub(super) reason: Option<String>,
    pub(super) rule: String,
    pub(super) policy_version: String,
    pub(super) approvers: Vec<String>,
    pub(super) min_approvals: u32,
    pub(super) created_at: String,
    pub(super) expires_at: String,
    pub(super) request_event: Option<String>,
    pub(super) votes: Vec<Vote>,
    pub(super) closed_at: Option<String>,
    pub(super) closed_because: Option<String>,
    pub(super) digest: String,
}

impl Approval {
    pub(super) fn is_grant(&self) -> bool {
        self.kind == "grant"
    }

    pub(super) fn approvals(&self) -> usize {
        self.votes.iter().filter(|v| v.approve).count()
    }

    /// What is being decided, in a few words, as the gateway words it:
    /// `tools/call refund_payment on billing`, `a grant of refund_* on billing for 30m`.
    pub(super) fn what(&self) -> String {
        match (&self.grant, &self.resource) {
            (Some(g), _) => format!(
                "a grant of {} on {} for {}",
                scope(&g.tools, &g.tables),
                clean(&self.target),
                humanize(g.duration_secs)
            ),
            (None, Some(resource)) => format!(
                "{} {} on {}",
                clean(&self.action),
                clean(resource),
                clean(&self.target)
            ),
            (None, None) => format!("{} on {}", clean(&self.action), clean(&self.target)),
        }
    }

    pub(super) fn requirement(&self) -> String {
        format!(
            "{} approval(s) from {}",
            self.min_approvals,
            clean(&self.approvers.join(", "))
        )
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct Grant {
    pub(super) id: String,
    pub(super) holder: Person,
    pub(super) target: String,
    pub(super) tools: Vec<String>,
    pub(super) tables: Vec<String>,
    pub(super) expires_at: String,
    pub(super) revoked_at: Option<String>,
    pub(super) revoked_by: Option<Person>,
    pub(super) revoke_reason: Option<String>,
}

/// What a grant covers: its tools and tables, or everything on the target.
pub(super) fn scope(tools: &[String], tables: &[String]) -> String {
    let all: Vec<&str> = tools.iter().chain(tables).map(String::as_str).collect();
    if all.is_empty() {
        "everything".to_string()
    } else {
        clean_line(&all.join(", "))
    }
}
