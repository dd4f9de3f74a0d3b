//! What a caller may see and what masks apply beyond one decided call: whether any rule
//! admits the caller to a target, which tools, resources and prompts a list shows them, and
//! every masking profile their allow rules name.

use std::sync::Arc;

use portcullis_model::{Decision, Identity, McpKind, OperationKind};

use crate::Policy;

impl Policy {
    /// Whether any allow or hold rule on `target` applies to this identity, whatever it names
    /// and whatever its `when` says. A caller for whom this is false can do nothing on the
    /// target, so the gateway spends nothing on it (no upstream session or process).
    pub fn any_rule_for(&self, identity: &Identity, target: &str) -> bool {
        let index = self.index(target);
        index.buckets().any(|bucket| {
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
        self.visible(identity, target, McpKind::Tool, tool)
    }

    /// The same question for any kind: may this caller see the tool, resource (by URI) or
    /// prompt named `name` in a list?
    pub fn visible(&self, identity: &Identity, target: &str, kind: McpKind, name: &str) -> bool {
        let bucket = self.index(target).bucket(OperationKind::Mcp(kind));
        let applies = |i: &usize| self.rules[*i].applies(identity, kind, Some(name));
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
            .buckets()
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
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

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
}
