//! Compiling `[[rules]]`: globs, `who`, `when`, each rule's verdict built once, the index,
//! and the version (a hash of a canonical rendering of the rules).

use std::collections::HashMap;
use std::sync::Arc;

use cel::Program;
use portcullis_config::{Config, Rule, RuleDecision, SourceFile};
use portcullis_model::{ApprovalRequirement, Decision, McpKind};
use sha2::{Digest as _, Sha256};

use crate::condition::{CelEnv, Condition, VARIABLES};
use crate::globs::Globs;
use crate::http::HttpRule;
use crate::index::TargetIndex;
use crate::rule::{CompiledRule, kind_bit};
use crate::sql::SqlRule;
use crate::{Policy, PolicyError};

impl Policy {
    /// Compiles `config.rules`. The configuration has been validated (targets exist, globs
    /// parse); what is left to find here is bad CEL in `when`, reported at its line.
    pub fn compile(config: &Config) -> Result<Policy, PolicyError> {
        let targets: Vec<&str> = target_names(config).collect();
        Policy::compile_rules(&config.source, &config.rules, &targets)
    }

    /// Compiles validated `rules` read from `src` (which errors point into), for the
    /// configured `targets` (by name; a rule on another name than these or `*` is never
    /// consulted): what [`Policy::compile`] takes from a [`Config`].
    pub fn compile_rules(
        src: &SourceFile,
        config_rules: &[Rule],
        targets: &[&str],
    ) -> Result<Policy, PolicyError> {
        let mut rules = Vec::with_capacity(config_rules.len());
        for (i, rule) in config_rules.iter().enumerate() {
            let name = rule.name.get_ref();
            let globs = |list: &[String]| {
                Globs::build(list).map_err(|e| {
                    src.error_at(
                        rule.name.span(),
                        format!("rules[{i}] ({name}): bad glob: {e}"),
                    )
                })
            };
            let globs = [
                globs(patterns(rule, McpKind::Tool))?,
                globs(patterns(rule, McpKind::Resource))?,
                globs(patterns(rule, McpKind::Prompt))?,
                globs(patterns(rule, McpKind::Protocol))?,
            ];
            let sql = match rule.sql() {
                None => None,
                Some(m) => Some(SqlRule::compile(m).map_err(|e| {
                    src.error_at(
                        rule.name.span(),
                        format!("rules[{i}] ({name}): bad glob: {e}"),
                    )
                })?),
            };
            let http = match &rule.http {
                None => None,
                Some(m) => Some(HttpRule::compile(m).map_err(|e| {
                    src.error_at(
                        rule.name.span(),
                        format!("rules[{i}] ({name}).http.paths: {e}"),
                    )
                })?),
            };
            // The same as `rule.decision` after `Config::parse`; computed again so that a
            // configuration built another way cannot turn a `deny.*` rule into an allow.
            let kind = rule.effective_decision();
            let when = match &rule.when {
                None => None,
                Some(when) => {
                    let text = when.get_ref();
                    let program = Program::compile(text).map_err(|e| {
                        // The parser reports one error per line; a config error is one line.
                        let detail = e
                            .errors
                            .iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join("; ");
                        src.error_at(
                            when.span(),
                            format!("rules[{i}] ({name}).when: invalid CEL {text:?}: {detail}"),
                        )
                    })?;
                    let references = program.references();
                    let uses = VARIABLES.map(|name| references.has_variable(name));
                    Some(Condition { program, uses })
                }
            };
            let decision = match kind {
                RuleDecision::Allow => Decision::Allow {
                    mask: rule.mask.as_deref().map(Arc::from),
                },
                RuleDecision::Deny => Decision::Deny {
                    reason: match &rule.reason {
                        Some(reason) => Arc::from(reason.as_str()),
                        None => Arc::from(format!("denied by rule {name}")),
                    },
                },
                RuleDecision::Hold => Decision::Hold(Arc::new(requirement(rule))),
            };
            rules.push(CompiledRule {
                name: Arc::from(name.as_str()),
                kind,
                decision,
                groups: rule.who.groups.clone().into(),
                subjects: rule.who.subjects.clone().into(),
                kinds: rule.who.kinds.iter().fold(0, |bits, &k| bits | kind_bit(k)),
                // One definition of "names nothing", the configuration's: a rule field
                // added for a new kind of operation counts there, in one place.
                whole_target: rule.whole_target(),
                globs,
                sql,
                http,
                when,
                grant: rule.requires_grant.then(|| Arc::new(requirement(rule))),
            });
        }

        let by_target = targets
            .iter()
            .map(|&target| {
                let index = TargetIndex::build(rules.iter().enumerate().filter(|(i, _)| {
                    let t = config_rules[*i].target.get_ref();
                    t == "*" || t == target
                }));
                (Box::from(target), index)
            })
            .collect::<HashMap<_, _>>();
        let wildcard = TargetIndex::build(
            rules
                .iter()
                .enumerate()
                .filter(|(i, _)| config_rules[*i].target.get_ref() == "*"),
        );

        let digest = hex::encode(Sha256::digest(canonical_rules(config_rules).as_bytes()));
        Ok(Policy {
            rules,
            by_target,
            wildcard,
            version: Arc::from(&digest[..16]),
            env: Arc::new(CelEnv::stdlib()),
        })
    }
}

/// The names of the configured targets: the only place compiling reads `config.targets`.
fn target_names(config: &Config) -> impl Iterator<Item = &str> {
    config.targets.keys().map(String::as_str)
}

/// The rule's list of names for operations of `kind` (none for protocol methods).
fn patterns(rule: &Rule, kind: McpKind) -> &[String] {
    match kind {
        McpKind::Tool => &rule.tools,
        McpKind::Resource => &rule.resources,
        McpKind::Prompt => &rule.prompts,
        McpKind::Protocol => &[],
    }
}

fn requirement(rule: &Rule) -> ApprovalRequirement {
    ApprovalRequirement {
        approvers: rule.approvers.clone(),
        min_approvals: rule.min_approvals,
        timeout: rule.timeout,
        require_reason: rule.require_reason,
        max_grant: rule.max_grant,
    }
}

/// The text the policy version hashes: one JSON array per rule, fields in a fixed order, only
/// what decides (the description is for reviewers and is left out so that editing it does
/// not change the version). Arrays only, no objects, so the rendering cannot depend on
/// serde_json's map ordering features.
fn canonical_rules(rules: &[Rule]) -> String {
    let mut text = String::from("portcullis-policy/1\n");
    for rule in rules {
        let decision = rule.effective_decision().as_str();
        let kinds: Vec<&str> = rule.who.kinds.iter().map(|k| k.as_str()).collect();
        let line = serde_json::json!([
            rule.name.get_ref(),
            rule.target.get_ref(),
            decision,
            rule.who.groups,
            rule.who.subjects,
            kinds,
            rule.tools,
            rule.resources,
            rule.prompts,
            rule.when.as_ref().map(|w| w.get_ref()),
            rule.reason,
            rule.approvers,
            [
                rule.timeout.as_secs(),
                u64::from(rule.timeout.subsec_nanos())
            ],
            rule.mask,
            [
                u64::from(rule.min_approvals),
                u64::from(rule.require_reason),
                u64::from(rule.requires_grant),
                rule.max_grant.as_secs()
            ],
        ]);
        let mut line = line;
        // Only rules with an SQL sub-table get the extra element, so the versions of rule
        // sets without them stay what they were.
        if let (Some(sql), serde_json::Value::Array(items)) = (rule.sql(), &mut line) {
            items.push(serde_json::json!([
                sql.statements,
                sql.tables,
                sql.functions,
                sql.without_where
            ]));
        }
        if let (Some(http), serde_json::Value::Array(items)) = (&rule.http, &mut line) {
            items.push(serde_json::json!(["http", http.methods, http.paths]));
        }
        text.push_str(&line.to_string());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    #[test]
    fn bad_cel_is_reported_at_its_line() {
        let text = format!(
            "{TARGETS}\n[[rules]]\nname = \"r\"\ntarget = \"billing\"\ntools = [\"x\"]\nwhen = \"args.amount >\"\n"
        );
        let config = Config::parse(Path::new("test.toml"), text.clone()).unwrap();
        let err = Policy::compile(&config).unwrap_err().to_string();
        let line = text.lines().position(|l| l.starts_with("when")).unwrap() + 1;
        assert!(err.starts_with(&format!("test.toml:{line}:")), "{err}");
        assert!(err.contains("when") && err.contains("rules[0]"), "{err}");
    }

    #[test]
    fn version_ignores_layout_and_follows_rules() {
        let a = policy(AMOUNT);
        let b = Policy::compile(
            &Config::parse(
                Path::new("other.toml"),
                format!(
                    "# a comment\n{TARGETS}\n\n[[rules]]   # first\nname   =   \"big refunds\"\ntarget = 'billing'\ntools = [ \"refund\" , ]\ndecision = \"hold\"\napprovers = [\"leads\"]\nwhen = \"args.amount > 500\"\ndescription = \"reviewers' notes\"\n\n\
                     [[rules]]\ntools = [\"refund\"]\ntarget = \"billing\"\nname = \"refunds\"\n"
                ),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(a.version(), b.version());
        assert_eq!(a.version().len(), 16);
        assert_eq!(a.version(), policy(AMOUNT).version());
        let c = policy(&AMOUNT.replace("500", "501"));
        assert_ne!(a.version(), c.version());
        assert_ne!(a.version(), policy("").version());
    }

    #[test]
    fn sql_rules_change_the_version() {
        let a = pg_policy(READS);
        let b = pg_policy(&READS.replace("\"orders\"", "\"orders\", \"x\""));
        assert_ne!(a.version(), b.version());
        let allow = pg_policy("[[rules]]\nname = \"r\"\ntarget = \"db\"\nallow.tables = [\"t\"]\n");
        let deny = pg_policy("[[rules]]\nname = \"r\"\ntarget = \"db\"\ndeny.tables = [\"t\"]\n");
        assert_ne!(allow.version(), deny.version());
        assert_eq!(STATEMENT_KINDS.len(), 24);
    }
}
