//! Deciding one action: the first matching deny, else hold, else allow, else deny with a
//! reason that says what was asked and, when an allow rule nearly applied, why it did not.

use std::sync::Arc;

use portcullis_model::{Action, Decision, Identity, Operation, Verdict};

use crate::Policy;
use crate::condition::{CelInputs, Cond};
use crate::grants::{covering_grant, grant_scope};
use crate::sql::Fit;

impl Policy {
    /// Decides one action: the first matching deny, else the first matching hold, else the
    /// first matching allow, else deny.
    pub fn decide(&self, identity: &Identity, action: &Action<'_>) -> Verdict {
        let bucket = self.index(action.target).bucket(action.operation.kind());
        let mut vars = CelInputs::new(identity, action);
        let applies = |i: &usize| self.rules[*i].fit(identity, action) == Fit::Yes;

        for rule in bucket
            .deny
            .iter()
            .filter(|i| applies(i))
            .map(|&i| &self.rules[i])
        {
            match rule.condition(&self.env, &mut vars) {
                Cond::True => return self.verdict(rule, rule.decision.clone(), action),
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
                        action,
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
            match rule.condition(&self.env, &mut vars) {
                // Fail closed: an unjudgeable hold still holds, a person decides.
                Cond::True | Cond::Error(_) => {
                    return self.verdict(rule, rule.decision.clone(), action);
                }
                Cond::False => {}
            }
        }
        let mut failed: Option<String> = None;
        // An allow rule that would apply but for a privileged function or a missing WHERE:
        // the refusal then says exactly that.
        let mut near_miss: Option<Fit<'_>> = None;
        for rule in bucket.allow.iter().map(|&i| &self.rules[i]) {
            match rule.fit(identity, action) {
                Fit::Yes => {}
                Fit::No => continue,
                miss => {
                    if near_miss.is_none()
                        && matches!(rule.condition(&self.env, &mut vars), Cond::True)
                    {
                        near_miss = Some(miss);
                    }
                    continue;
                }
            }
            match rule.condition(&self.env, &mut vars) {
                Cond::True if rule.grant.is_some() => match covering_grant(action) {
                    Some(grant) => {
                        let mut verdict = self.verdict(rule, rule.decision.clone(), action);
                        verdict.grant = Some(Arc::from(grant));
                        return verdict;
                    }
                    None => {
                        failed.get_or_insert_with(|| {
                            format!(
                                " (rule {} allows it only with an active grant: ask for one with `portcullis access request --target {}{}`)",
                                rule.name,
                                action.target,
                                grant_scope(action),
                            )
                        });
                    }
                },
                Cond::True => return self.verdict(rule, rule.decision.clone(), action),
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
        let subject = &identity.subject;
        let target = action.target;
        let reason = match action.operation {
            Operation::Sql(stmt) => {
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
            Operation::Mcp(op) => {
                let what = match op.name {
                    Some(name) => format!("{} {name}", op.method),
                    None => op.method.to_string(),
                };
                format!("no rule allows {what} on {target} for {subject}{failed}")
            }
            Operation::Http(req) => format!(
                "no rule allows {} {} on {target} for {subject}{failed}",
                req.method, req.path
            ),
        };
        Verdict {
            decision: Decision::Deny {
                reason: reason.into(),
            },
            rule: None,
            policy_version: self.version.clone(),
            grant: None,
            route: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

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
            label(&p.decide(&agent(), &act("docs", McpKind::Tool, "lookup", None))).0,
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
                label(&p.decide(&agent(), &act(target, McpKind::Tool, "read_doc", None))),
                ("allow", "any")
            );
            assert_eq!(
                label(&p.decide(&agent(), &act(target, McpKind::Tool, "read_secret", None))),
                ("deny", "no")
            );
        }
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
                p.decide(&agent(), &act("docs", McpKind::Tool, tool, None))
                    .is_allow()
            );
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
        let read = |uri| p.decide(&agent(), &act("billing", McpKind::Resource, uri, None));
        assert_eq!(label(&read("file:///docs/a")), ("allow", "res"));
        assert_eq!(label(&read("file:///etc/passwd")).0, "deny");
        let prompt = |name| p.decide(&agent(), &act("billing", McpKind::Prompt, name, None));
        assert_eq!(label(&prompt("greet")), ("allow", "prompts"));
        assert_eq!(label(&prompt("x")).0, "deny");
        // A verb no list speaks for is not covered by glob rules.
        assert!(
            !p.decide(
                &agent(),
                &protocol("billing", "completion/complete", Some("x"))
            )
            .is_allow()
        );
    }

    #[test]
    fn whole_target_rule_covers_every_verb() {
        let p =
            policy("[[rules]]\nname = \"all\"\ntarget = \"billing\"\nwho.groups = [\"agents\"]\n");
        for action in [
            act("billing", McpKind::Tool, "x", None),
            act("billing", McpKind::Resource, "x", None),
            act("billing", McpKind::Prompt, "x", None),
            protocol("billing", "completion/complete", Some("x")),
        ] {
            assert_eq!(
                label(&p.decide(&agent(), &action)),
                ("allow", "all"),
                "{}",
                action.verb()
            );
        }
        let no_resource = protocol("billing", "initialize", None);
        assert!(p.decide(&agent(), &no_resource).is_allow());
        assert!(
            !p.decide(&agent(), &act("docs", McpKind::Tool, "x", None))
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
}
