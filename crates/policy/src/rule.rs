//! One compiled rule and whether it applies: its caller (`who`), and the names it lists for
//! MCP operations; an SQL statement is matched by the rule's sub-table ([`crate::sql`]).

use std::sync::Arc;

use portcullis_config::RuleDecision;
use portcullis_model::{
    Action, ApprovalRequirement, Decision, Identity, IdentityKind, McpKind, Operation,
    OperationKind,
};

use crate::condition::{CelEnv, CelInputs, Cond, Condition};
use crate::globs::Globs;
use crate::http::HttpRule;
use crate::sql::{Fit, SqlRule};

pub(crate) struct CompiledRule {
    pub(crate) name: Arc<str>,
    pub(crate) kind: RuleDecision,
    /// The decision this rule answers with, built once.
    pub(crate) decision: Decision,
    pub(crate) groups: Box<[String]>,
    pub(crate) subjects: Box<[String]>,
    /// Bit `1 << kind` for each `who.kinds` entry; 0 means any kind.
    pub(crate) kinds: u8,
    /// No tools, resources, prompts or SQL sub-table: the rule covers every operation on its
    /// target, and every SQL statement as an SQL sub-table with empty lists would.
    pub(crate) whole_target: bool,
    /// Indexed by `McpKind as usize`: the rule's `tools`, `resources` and `prompts`
    /// (`Protocol`'s list is always empty: only whole-target rules cover protocol methods).
    pub(crate) globs: [Globs; McpKind::COUNT],
    /// The rule's `allow`/`deny`/`hold` sub-table.
    pub(crate) sql: Option<SqlRule>,
    /// The rule's `http` sub-table.
    pub(crate) http: Option<HttpRule>,
    pub(crate) when: Option<Condition>,
    /// `requires_grant`: the allow applies only with a grant covering the request, and this
    /// is what a grant request under the rule must satisfy.
    pub(crate) grant: Option<Arc<ApprovalRequirement>>,
}

pub(crate) fn kind_bit(kind: IdentityKind) -> u8 {
    1 << (kind as u8)
}

impl CompiledRule {
    /// The rule's `when` on one decision's variables; a rule without one always holds.
    /// `params` is the rule's own: what its path template bound in an HTTP request's path.
    pub(crate) fn condition(&self, env: &Arc<CelEnv>, vars: &mut CelInputs<'_>) -> Cond {
        match &self.when {
            Some(when) => {
                if when.uses_params() {
                    let path = vars.http_path();
                    vars.set_params(
                        self.http
                            .as_ref()
                            .and_then(|h| path.and_then(|p| h.params(p)))
                            .unwrap_or_default(),
                    );
                }
                when.evaluate(env, vars)
            }
            None => Cond::True,
        }
    }

    /// Whether the rule can speak about this kind of operation at all (used to build the
    /// index).
    pub(crate) fn covers(&self, kind: OperationKind) -> bool {
        match kind {
            OperationKind::Sql => self.whole_target || self.sql.is_some(),
            OperationKind::Http => self.whole_target || self.http.is_some(),
            OperationKind::Mcp(kind) => self.whole_target || !self.globs[kind as usize].is_empty(),
        }
    }

    /// Everything but `when`, for any action: for an SQL statement, how it fits the rule's
    /// sub-table (all-covered for allow, any-matches for deny and hold).
    pub(crate) fn fit<'a>(&self, identity: &Identity, action: &Action<'a>) -> Fit<'a> {
        match action.operation {
            Operation::Sql(stmt) => {
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
            Operation::Mcp(op) if self.applies(identity, op.kind, op.name) => Fit::Yes,
            Operation::Mcp(_) => Fit::No,
            Operation::Http(req) => {
                let fits = self.who_matches(identity)
                    && (self.whole_target || self.http.as_ref().is_some_and(|h| h.matches(req)));
                if fits { Fit::Yes } else { Fit::No }
            }
        }
    }

    pub(crate) fn who_matches(&self, identity: &Identity) -> bool {
        // Nested loops over short lists: no set to build, nothing allocated.
        (self.groups.is_empty()
            || identity
                .groups
                .iter()
                .any(|g| self.groups.iter().any(|r| r == g)))
            && (self.subjects.is_empty() || self.subjects.contains(&identity.subject))
            && (self.kinds == 0 || self.kinds & kind_bit(identity.kind) != 0)
    }

    /// Everything but `when` for an MCP operation: caller, kind and name.
    pub(crate) fn applies(&self, identity: &Identity, kind: McpKind, name: Option<&str>) -> bool {
        if !self.who_matches(identity) {
            return false;
        }
        if self.whole_target {
            return true;
        }
        // A glob cannot match a name that is not there: fail closed for allows, and the
        // default deny covers the rest. `Protocol` has no globs, so only whole-target rules
        // cover it.
        name.is_some_and(|n| self.globs[kind as usize].matches(n))
    }

    pub(crate) fn reason(&self) -> &str {
        match &self.decision {
            Decision::Deny { reason } => reason,
            _ => "",
        }
    }
}
