//! Just-in-time grants: what a grant request needs (the `requires_grant` rule that would
//! cover it), and which of the caller's active grants covers an action.

use std::sync::Arc;

use portcullis_model::{Action, ApprovalRequirement, Identity, McpKind, Operation, OperationKind};

use crate::Policy;

impl Policy {
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
        let candidates = |kind: OperationKind| {
            index
                .bucket(kind)
                .allow
                .iter()
                .map(|&i| &self.rules[i])
                .filter(|r| r.grant.is_some() && r.who_matches(identity))
                .collect::<Vec<_>>()
        };
        let rules = if tools.is_empty() {
            let whole = candidates(OperationKind::Mcp(McpKind::Protocol));
            if !whole.is_empty() {
                whole
            } else {
                let sql = candidates(OperationKind::Sql);
                if sql.is_empty() {
                    candidates(OperationKind::Http)
                } else {
                    sql
                }
            }
        } else {
            candidates(OperationKind::Mcp(McpKind::Tool))
                .into_iter()
                .filter(|r| {
                    r.whole_target
                        || tools.iter().all(|t| {
                            // A pattern asked for must lie inside the rule's globs: check
                            // its literal part (a `prefix*` request needs the rule to cover
                            // the prefix as a name pattern, tested with the pattern itself).
                            r.globs[McpKind::Tool as usize].matches(t)
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
}

/// The id of the first of the caller's grants that covers the action.
pub(crate) fn covering_grant<'a>(action: &Action<'a>) -> Option<&'a str> {
    action
        .grants
        .iter()
        .find(|g| match action.operation {
            Operation::Sql(stmt) => g.covers_sql(action.target, stmt),
            Operation::Mcp(op) => g.covers(action.target, op.kind, op.name),
            Operation::Http(_) => g.covers_http(action.target),
        })
        .map(|g| g.id.as_str())
}

/// What a grant request for the action names, as `portcullis access request` options: the
/// statement's tables, or the tool called.
pub(crate) fn grant_scope(action: &Action<'_>) -> String {
    match action.operation {
        Operation::Sql(stmt) if !stmt.tables.is_empty() => {
            format!(" --tables {}", stmt.tables.join(","))
        }
        Operation::Mcp(op) => match (op.kind, op.name) {
            (McpKind::Tool, Some(tool)) => format!(" --tools {tool}"),
            _ => String::new(),
        },
        Operation::Sql(_) | Operation::Http(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

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
}
