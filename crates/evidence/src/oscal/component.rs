//! The `component-definition` of the running gateway: which SP 800-53 controls Portcullis
//! implements and how, stated from the configuration in force ("2 targets behind the
//! gateway: billing (mcp), billing-db (postgres)").
//!
//! The configuration reaches this module as a [`ComponentContext`] that the CLI fills from
//! `portcullis_config::Config`, so the evidence crate does not depend on the config crate.
//! A control the configuration does not implement is left out (AU-14 with recording off)
//! and the component's remarks say so, rather than claimed.

use serde::Serialize;

use portcullis_model::EventType;

use super::{
    CATALOG_HREF, Metadata, OSCAL_VERSION, Property, Uuids, event_name, gateway_component_uuid,
    label, one_line,
};

/// What the component definition states, from the running configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentContext {
    /// The Portcullis version (the CLI's `CARGO_PKG_VERSION`).
    pub tool_version: String,
    /// The log's origin (`audit.origin`, default `portcullis/<gateway.id>`): names the
    /// gateway and gives its component uuid, the same as in the assessment results.
    pub origin: String,
    /// When the configuration last changed (RFC 3339; the configuration file's modification
    /// time): `metadata.last-modified`. Never the wall clock, so that the same configuration
    /// gives the same document.
    pub last_modified: String,
    /// The policy version in force (as `gateway.start` events record it), when known.
    pub policy_version: Option<String>,
    /// The backends, in the configuration's (name) order.
    pub targets: Vec<TargetInfo>,
    /// The front door is served over TLS (`[gateway.tls]`).
    pub front_door_tls: bool,
    /// Failed authentications from one source, within `auth_failure_window_seconds`, after
    /// which the source is refused without its credential being checked.
    pub max_auth_failures: u32,
    pub auth_failure_window_seconds: u64,
    /// OIDC issuers whose tokens are accepted, by issuer URL.
    pub oidc_issuers: Vec<String>,
    /// API keys configured.
    pub api_keys: u64,
    pub rules: RuleCounts,
    /// Requests no rule allows are refused. Built in; the CLI sets it false only if a rule
    /// allows every caller everything on every target, which makes default deny moot.
    pub default_deny: bool,
    /// Masking profiles, by name (`default` included).
    pub masking_profiles: Vec<String>,
    pub recording: RecordingSetup,
    pub audit: AuditSetup,
    /// Groups whose members may approve their own held request in an emergency.
    pub break_glass_groups: Vec<String>,
    /// `[evidence] schedule` (`daily`, `weekly`, a cron line), when review reports are
    /// scheduled.
    pub review_schedule: Option<String>,
}

/// A backend behind the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetInfo {
    pub name: String,
    /// `mcp`, `postgres`, ...
    pub kind: String,
}

/// The policy rules, by decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RuleCounts {
    pub allow: u64,
    pub deny: u64,
    pub hold: u64,
}

impl RuleCounts {
    pub fn total(&self) -> u64 {
        self.allow + self.deny + self.hold
    }
}

/// `[recording]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingSetup {
    /// `off`, `strict` or `best-effort`.
    pub mode: String,
    /// The age recipients recordings are encrypted to (0: not encrypted).
    pub recipients: u64,
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditSetup {
    /// `strict` (an event is on disk before the response it describes is released) or
    /// `batched`.
    pub durability: String,
    /// A checkpoint signing key is configured.
    pub signed: bool,
    /// Sign a checkpoint at least this often (milliseconds) and after at most this many
    /// events.
    pub checkpoint_interval_ms: u64,
    pub checkpoint_every: u64,
    /// Checkpoints are published to a write-once directory (`checkpoint_dir`).
    pub published: bool,
    /// The witnesses that cosign checkpoints, by URL.
    pub witnesses: Vec<String>,
}

/// The whole file: `{"component-definition": ...}`.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentDefinitionDocument {
    #[serde(rename = "component-definition")]
    pub component_definition: ComponentDefinition,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ComponentDefinition {
    pub uuid: String,
    pub metadata: Metadata,
    pub components: Vec<DefinedComponent>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DefinedComponent {
    pub uuid: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub description: String,
    pub purpose: String,
    pub props: Vec<Property>,
    pub control_implementations: Vec<ControlImplementation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ControlImplementation {
    pub uuid: String,
    pub source: String,
    pub description: String,
    pub implemented_requirements: Vec<ImplementedRequirement>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImplementedRequirement {
    pub uuid: String,
    pub control_id: String,
    pub description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<Property>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
}

/// `a, b and c`; `none` for nothing.
fn listing(items: &[String]) -> String {
    match items {
        [] => "none".into(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// `1 s`, `1.5 s`, `250 ms`.
fn duration(ms: u64) -> String {
    match ms {
        ms if ms < 1000 => format!("{ms} ms"),
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => {
            let fraction = format!("{:03}", ms % 1000);
            format!("{}.{} s", ms / 1000, fraction.trim_end_matches('0'))
        }
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The component definition of the configuration `ctx` describes. Same configuration,
/// same bytes.
pub fn component_definition(ctx: &ComponentContext) -> ComponentDefinitionDocument {
    let ctx_json = serde_json::to_vec(ctx).expect("the context serializes");
    let ids = Uuids::new("component-definition", &[&ctx_json]);

    let targets = ctx
        .targets
        .iter()
        .map(|t| format!("{} ({})", t.name, t.kind))
        .collect::<Vec<_>>();
    let targets_line = format!(
        "{} behind the gateway: {}",
        plural(ctx.targets.len() as u64, "target", "targets"),
        listing(&targets)
    );
    let target_names = ctx
        .targets
        .iter()
        .map(|t| t.name.clone())
        .collect::<Vec<_>>();
    let postgres = ctx
        .targets
        .iter()
        .filter(|t| t.kind == "postgres")
        .map(|t| t.name.clone())
        .collect::<Vec<_>>();
    let r = ctx.rules;
    let rules_line = format!(
        "{} ({} allow, {} deny, {} hold)",
        plural(r.total(), "policy rule", "policy rules"),
        r.allow,
        r.deny,
        r.hold
    );
    let default_deny = if ctx.default_deny {
        "a request no rule allows is refused (default deny)"
    } else {
        "a rule allows every caller everything on every target, so default deny does not \
         restrict anything"
    };
    let issuers = listing(&ctx.oidc_issuers);
    // Event names as the log writes them, so a reader can search for them.
    let refused = event_name(EventType::ApprovalRefused);
    let auth_failure = event_name(EventType::AuthFailure);
    let gateway_start = event_name(EventType::GatewayStart);
    let config_reloaded = event_name(EventType::ConfigReloaded);
    let pin_mismatch = event_name(EventType::ToolPinMismatch);
    let pin_accepted = event_name(EventType::ToolPinAccepted);
    let reviewed = event_name(EventType::EvidenceReviewed);
    let recording_failed = event_name(EventType::RecordingFailed);
    let a = &ctx.audit;

    let mut requirements: Vec<(&str, String)> = vec![
        (
            "ac-3",
            format!(
                "{targets_line}. Every request is decided by policy before it reaches its \
                 target: {rules_line}; {default_deny}. MCP tool calls, resource reads and \
                 prompts are matched by name, SQL statements by kind, table and function. \
                 {}",
                if ctx.masking_profiles.is_empty() {
                    "No masking profile is configured.".to_string()
                } else {
                    format!(
                        "Answers are masked by profile ({}).",
                        listing(&ctx.masking_profiles)
                    )
                }
            ),
        ),
        (
            "ac-5",
            if r.hold == 0 {
                format!(
                    "No hold rule is configured, so no request waits for an approver in this \
                     configuration; were one added, the requester could not approve their own \
                     request (the attempt is refused and logged as {refused})."
                )
            } else {
                format!(
                    "{} for a named approver other than the requester: a \
                     decision on one's own request is refused and logged ({refused}). \
                     Break-glass: {}.",
                    plural(
                        r.hold,
                        "hold rule holds requests",
                        "hold rules hold requests"
                    ),
                    if ctx.break_glass_groups.is_empty() {
                        "no break-glass group is configured, so nobody may approve their own \
                         request"
                            .to_string()
                    } else {
                        format!(
                            "members of {} may approve their own request in an emergency, \
                             with a reason; the decision is flagged break_glass in the log \
                             and listed in every review report",
                            listing(&ctx.break_glass_groups)
                        )
                    }
                )
            },
        ),
        (
            "ac-6",
            format!(
                "Callers get only what a rule grants ({rules_line}); {default_deny}. {} \
                 Time-boxed grants, issued after approval, widen access for a bounded time \
                 and are logged when issued, revoked and expired.",
                if postgres.is_empty() {
                    "No database target is configured.".to_string()
                } else {
                    format!(
                        "On the database targets ({}), DDL, grants, destructive statements \
                         and privileged server functions are refused unless a rule names \
                         them.",
                        listing(&postgres)
                    )
                }
            ),
        ),
        (
            "ac-7",
            format!(
                "Missing, bad, forged or expired credentials are refused and logged with the \
                 source and the credential kind ({auth_failure}). After {} from one source \
                 within {} seconds, that source is refused without its credential being \
                 checked (HTTP 429, PostgreSQL 53300), logged in aggregate.",
                plural(u64::from(ctx.max_auth_failures), "failure", "failures"),
                ctx.auth_failure_window_seconds
            ),
        ),
        (
            "au-2",
            format!(
                "The gateway logs these event types: {}. Every request, allowed or not, is \
                 one event.",
                event_type_names().join(", ")
            ),
        ),
        (
            "au-3",
            "Each request event records what (event type, action, tool or statement), when \
             (time), where (gateway id, target), the source address, the decision with the \
             rule that made it, the outcome, and who (issuer, subject, how they \
             authenticated)."
                .to_string(),
        ),
        (
            "au-9",
            format!(
                "The audit log is a Merkle tree: any change to a past event changes every \
                 later root. {} {} {}",
                if a.signed {
                    format!(
                        "Checkpoints are signed with the audit key (Ed25519) at least every \
                         {} and after at most {} events.",
                        duration(a.checkpoint_interval_ms),
                        a.checkpoint_every
                    )
                } else {
                    "No signing key is configured: no checkpoint is signed, so the log's \
                     integrity can be checked but not attributed."
                        .to_string()
                },
                if a.published {
                    "Each checkpoint is also published to a write-once directory outside the \
                     gateway's data."
                } else {
                    "Checkpoints are not published outside the gateway."
                },
                if a.witnesses.is_empty() {
                    "No witness cosigns checkpoints.".to_string()
                } else {
                    format!(
                        "{} checkpoints: {}.",
                        plural(
                            a.witnesses.len() as u64,
                            "witness cosigns",
                            "witnesses cosign"
                        ),
                        listing(&a.witnesses)
                    )
                },
            ),
        ),
        (
            "au-12",
            format!(
                "The gateway itself writes the audit events for every request to every \
                 target ({}), not the targets. {}",
                listing(&target_names),
                if a.durability == "strict" {
                    "Durability strict: an event is on disk before the response it describes \
                     is released, so a request whose event cannot be written is refused."
                } else {
                    "Durability batched: events are committed in the background within \
                     milliseconds of the response, and a crash can lose the last ones."
                }
            ),
        ),
    ];
    if ctx.recording.mode != "off" {
        let recording_failed_text =
            format!(": a recording that cannot be kept is logged as {recording_failed}");
        requirements.push((
            "au-14",
            format!(
                "Session audit: each request and its answer are recorded ({} mode{}), bound \
                 to the audit log, {}; `portcullis sessions replay` plays a session back.",
                ctx.recording.mode,
                if ctx.recording.mode == "strict" {
                    ": a request whose recording cannot be kept is refused"
                } else {
                    &recording_failed_text
                },
                if ctx.recording.recipients == 0 {
                    "not encrypted".to_string()
                } else {
                    format!(
                        "encrypted to {} so that the gateway host cannot read them back",
                        plural(ctx.recording.recipients, "auditor key", "auditor keys")
                    )
                }
            ),
        ));
    }
    requirements.extend([
        (
            "ia-2",
            format!(
                "Every caller is identified and authenticated before any decision: OIDC \
                 bearer tokens from {} ({issuers}) and {}. An identity is its issuer and \
                 subject, unique across issuers.",
                plural(ctx.oidc_issuers.len() as u64, "issuer", "issuers"),
                plural(ctx.api_keys, "API key", "API keys")
            ),
        ),
        (
            "sc-7",
            format!(
                "The gateway is the boundary between the agents and their targets ({}): \
                 agents reach them only through it, and every crossing is decided and logged. \
                 The front door is served {}.",
                listing(&targets),
                if ctx.front_door_tls {
                    "over TLS"
                } else {
                    "over plain HTTP, on loopback or behind a TLS-terminating proxy"
                }
            ),
        ),
        (
            "cm-3",
            format!(
                "The policy version in force ({}) is recorded at each gateway start \
                 ({gateway_start}) and each configuration reload ({config_reloaded}, which \
                 also records a refused reload and why), so every change of configuration is \
                 in the log. Upstream \
                 tool definitions are pinned: a changed tool is withheld until an operator \
                 accepts it, and both are logged ({pin_mismatch}, {pin_accepted}).",
                ctx.policy_version
                    .as_deref()
                    .unwrap_or("unknown until the gateway starts")
            ),
        ),
        (
            "au-6",
            format!(
                "`portcullis evidence report` writes an audit review report of a period from \
                 the verified log{}; a named reviewer signs it off with `portcullis evidence \
                 sign-off`, which is recorded in the log ({reviewed}), so reviews and \
                 their frequency are evidence too.",
                match &ctx.review_schedule {
                    Some(schedule) => format!(", scheduled {}", one_line(schedule)),
                    None => String::new(),
                }
            ),
        ),
    ]);

    let controls_listed = listing(
        &requirements
            .iter()
            .map(|(control, _)| label(control))
            .collect::<Vec<_>>(),
    );
    let implemented_requirements = requirements
        .into_iter()
        .map(|(control, description)| {
            let check = crate::controls::CHECKS.iter().find(|c| c.id == control);
            ImplementedRequirement {
                uuid: ids.of(&format!("requirement/{control}")),
                control_id: control.into(),
                description,
                props: check
                    .map(|_| vec![Property::ours("automated-check", "true")])
                    .unwrap_or_default(),
                remarks: check.map(|c| {
                    format!(
                        "Checked for every period by `portcullis evidence oscal`, by this \
                         rule: {}",
                        c.rule
                    )
                }),
            }
        })
        .collect();

    let mut props = vec![
        Property::ours("version", &ctx.tool_version),
        Property::ours("log-origin", &ctx.origin),
    ];
    if let Some(version) = &ctx.policy_version {
        props.push(Property::ours("policy-version", version));
    }
    props.extend(
        ctx.targets
            .iter()
            .map(|t| Property::ours("target", &t.name).with_remarks(format!("kind: {}", t.kind))),
    );

    ComponentDefinitionDocument {
        component_definition: ComponentDefinition {
            uuid: ids.of("component-definition"),
            metadata: Metadata {
                title: format!("Portcullis access gateway: {}", one_line(&ctx.origin)),
                last_modified: ctx.last_modified.clone(),
                version: format!("{}+{}", ctx.tool_version, ids.digest()),
                oscal_version: OSCAL_VERSION.into(),
                props: vec![Property::ours("tool", "portcullis")],
                remarks: Some(
                    "Written by `portcullis evidence component` from the running \
                     configuration. last-modified is when the configuration last changed."
                        .into(),
                ),
            },
            components: vec![DefinedComponent {
                uuid: gateway_component_uuid(&ctx.origin),
                kind: "software".into(),
                title: format!("Portcullis access gateway ({})", one_line(&ctx.origin)),
                description: format!(
                    "The access gateway between AI agents and the tools and databases they \
                     use. {targets_line}."
                ),
                purpose: "Authenticate every agent, decide every request by policy, hold \
                          sensitive ones for a named approver, and log every decision \
                          tamper-evidently."
                    .into(),
                props,
                control_implementations: vec![ControlImplementation {
                    uuid: ids.of("control-implementation"),
                    source: CATALOG_HREF.into(),
                    description: format!(
                        "How this configuration of Portcullis implements NIST SP 800-53 rev. \
                         5 controls ({controls_listed})."
                    ),
                    implemented_requirements,
                }],
                remarks: (ctx.recording.mode == "off").then(|| {
                    "AU-14 (session audit) is not listed: recording is off in this \
                     configuration ([recording] mode)."
                        .to_string()
                }),
            }],
        },
    }
}

/// Every event type, as the log names them, in the table's order.
fn event_type_names() -> Vec<String> {
    crate::controls::EVENT_CONTROLS
        .iter()
        .map(|row| event_name(row.event))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written() {
        assert_eq!(duration(250), "250 ms");
        assert_eq!(duration(1000), "1 s");
        assert_eq!(duration(1500), "1.5 s");
        assert_eq!(duration(60_000), "60 s");
        assert_eq!(listing(&[]), "none");
        assert_eq!(listing(&["a".into(), "b".into(), "c".into()]), "a, b and c");
    }
}
