//! Classify and decide: every MCP method has a decision ([`era::method_decision`]); named
//! actions go to policy through the guard, protocol methods are open to callers some rule
//! applies to, and the answer's masking profiles are chosen here.

use std::sync::Arc;

use portcullis_guard::{Exchange, Refusal, RefusalKind};
use portcullis_model::{
    Action, ApprovalRequirement, Decision, McpKind, McpOperation, Operation, TargetKind, Verdict,
};
use serde_json::Value;

use crate::era::{self, ClientEra, MethodDecision};
use crate::masking::MaskSet;

use super::*;

/// Which list a result carries and how its items are named for policy.
#[derive(Clone, Copy)]
pub(super) struct ListFilter {
    /// The result member holding the list.
    pub(super) key: &'static str,
    /// The item member policy matches on.
    pub(super) name: &'static str,
    /// The kind whose rules decide visibility.
    pub(super) kind: McpKind,
}

impl ListFilter {
    pub(super) fn of(method: &str) -> Option<ListFilter> {
        let (key, name, kind) = match method {
            "tools/list" => ("tools", "name", McpKind::Tool),
            "resources/list" => ("resources", "uri", McpKind::Resource),
            // A template is judged by its text against the resource rules (`*` spans an
            // expression such as `{id}`): one whose text no allowed glob matches, whose
            // expansions then lie outside what the caller may read, is hidden.
            "resources/templates/list" => ("resourceTemplates", "uriTemplate", McpKind::Resource),
            "prompts/list" => ("prompts", "name", McpKind::Prompt),
            _ => return None,
        };
        Some(ListFilter { key, name, kind })
    }
}

/// What the decision step found: the answer's masking profiles, or what a hold needs.
#[derive(Default)]
pub(super) struct Decided {
    pub(super) mask: MaskSet,
    /// A hold: the verdict that holds and what its approval needs.
    pub(super) hold: Option<(Verdict, Arc<ApprovalRequirement>)>,
}

/// The refusal of a verdict that does not allow or hold, or `None`.
pub(super) fn refusal_of(verdict: &Verdict, method: &str, name: &str) -> Option<Refusal> {
    match &verdict.decision {
        Decision::Allow { .. } | Decision::Hold(_) => None,
        Decision::Deny { reason } => Some(
            Refusal::new(
                RefusalKind::Denied,
                format!(
                    "{method} {name:?} denied by rule {:?}: {reason}",
                    verdict.rule_label()
                ),
            )
            .by(verdict),
        ),
    }
}

/// The refusal of a request whose decision is a hold where nobody can be asked: a
/// completion or a subscription is not worth a person's approval, so it is not offered.
pub(super) fn not_held(method: &str, verb: &str, name: &str, verdict: &Verdict) -> Refusal {
    Refusal::new(
        RefusalKind::Denied,
        format!(
            "{method} for {name:?} refused: {verb} {name:?} is held for approval by rule {:?}, and {method} is not held",
            verdict.rule_label()
        ),
    )
    .by(verdict)
}

/// Why a caller no rule on the target applies to gets nothing from it.
pub(super) fn no_rule_message(identity: &Identity, target: &str) -> String {
    format!(
        "no rule on target {target:?} applies to {}; nothing on it is open to this caller",
        identity.subject
    )
}

impl Gateway {
    /// Classify and decide. Every method has a decision ([`era::method_decision`]): an
    /// unknown one is refused; methods that act on something are decided by policy (and a
    /// tool call by its pin); protocol methods (lists, ping, discovery ...) are open to any
    /// caller some rule on the target applies to, and lists are filtered on the way back.
    /// Returns the masking profile the allowing rule names, or what a hold needs.
    pub(super) async fn decide(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
        incoming: &IncomingRequest<'_>,
        client_era: ClientEra,
        exchange: &mut Exchange,
    ) -> Result<Decided, Refusal> {
        let IncomingRequest { method, facts, .. } = incoming;
        let method = *method;
        let Some(how) = era::method_decision(client_era, method) else {
            return Err(Refusal::new(
                RefusalKind::UnknownOperation,
                format!(
                    "method {method:?} is not a {} MCP request method (names are case-sensitive); the gateway decides only methods it knows, so it is refused",
                    client_era.label()
                ),
            ));
        };
        match how {
            MethodDecision::Handshake => Err(Refusal::new(
                RefusalKind::OutOfOrder,
                "this session is initialized already; a session has one initialize (start a new session without Mcp-Session-Id)",
            )),
            MethodDecision::Protocol => {
                self.admit_protocol(caller, target)?;
                exchange.note_decision("allow", "protocol");
                // Lists, discovery and the rest answer for no one decided call: they are
                // masked with every profile of the caller's rules on the target.
                Ok(Decided {
                    mask: self.answer_masks(caller, target, None, Some(exchange))?,
                    hold: None,
                })
            }
            MethodDecision::Named { kind } => {
                let Some(name) = facts.name.as_deref() else {
                    let field = era::target_field(method).unwrap_or("name");
                    return Err(Refusal::new(
                        RefusalKind::Malformed,
                        format!("{method} needs params.{field}"),
                    ));
                };
                self.decide_named(
                    caller,
                    target,
                    kind,
                    name,
                    facts.arguments.as_ref(),
                    exchange,
                )
                .await
            }
            MethodDecision::Completion => {
                let Some(reference) = &facts.completion else {
                    return Err(Refusal::new(
                        RefusalKind::Malformed,
                        "completion/complete needs params.ref: {\"type\": \"ref/prompt\", \"name\": ...} or {\"type\": \"ref/resource\", \"uri\": ...}",
                    ));
                };
                exchange.event().resource = Some(reference.name.clone());
                let decided = self
                    .decide_named(
                        caller,
                        target,
                        reference.kind,
                        &reference.name,
                        None,
                        exchange,
                    )
                    .await?;
                if let Some((verdict, _)) = &decided.hold {
                    return Err(not_held(
                        "completion/complete",
                        reference.kind.method().unwrap_or_default(),
                        &reference.name,
                        verdict,
                    ));
                }
                Ok(decided)
            }
            MethodDecision::Listen => {
                self.admit_protocol(caller, target)?;
                for uri in &facts.subscriptions {
                    // The event names the URI a refusal is about.
                    exchange.event().resource = Some(uri.clone());
                    let decided = self
                        .decide_named(caller, target, McpKind::Resource, uri, None, exchange)
                        .await?;
                    if let Some((verdict, _)) = &decided.hold {
                        return Err(not_held(
                            "subscriptions/listen",
                            "resources/read",
                            uri,
                            verdict,
                        ));
                    }
                }
                let ev = exchange.event();
                ev.resource = None;
                ev.decision = Some("allow".into());
                if facts.subscriptions.is_empty() {
                    ev.rule = Some("protocol".into());
                }
                Ok(Decided {
                    mask: self.answer_masks(caller, target, None, Some(exchange))?,
                    hold: None,
                })
            }
        }
    }

    /// A protocol method acts on nothing named, but it still reaches the upstream (and may
    /// start it): only a caller some rule on the target applies to gets that far.
    pub(super) fn admit_protocol(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
    ) -> Result<(), Refusal> {
        if self.guard.any_rule_for(&caller.identity, &target.name) {
            return Ok(());
        }
        Err(Refusal::new(
            RefusalKind::Denied,
            no_rule_message(&caller.identity, &target.name),
        ))
    }

    /// Decides acting on the tool, resource (URI) or prompt `name`: policy, then the tool's
    /// pin. Returns the allowing rule's masking profile, or what a hold needs.
    pub(super) async fn decide_named(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
        kind: McpKind,
        name: &str,
        arguments: Option<&Value>,
        exchange: &mut Exchange,
    ) -> Result<Decided, Refusal> {
        // What the arguments carry (a card number, a secret) is an input of the decision.
        let findings = match arguments {
            Some(arguments) => {
                let report = exchange.masks().classify_arguments(arguments);
                exchange.event().findings = summary(&report);
                report.detectors()
            }
            None => Vec::new(),
        };
        let action = Action {
            target: &target.name,
            target_kind: TargetKind::Mcp,
            operation: Operation::Mcp(McpOperation::named(kind, name, arguments)),
            findings: &findings,
            grants: &[],
        };
        let verdict = exchange.decide(&action);
        if let Some(refusal) = refusal_of(&verdict, action.verb(), name) {
            return Err(refusal);
        }
        if kind == McpKind::Tool {
            match self.pins.is_withheld(&target.name, name).await {
                Ok(false) => {}
                Ok(true) => return Err(pin_withheld(&target.name, name)),
                Err(e) => return Err(pin_store_failed(e)),
            }
        }
        let rule_profile = match &verdict.decision {
            Decision::Allow { mask } => mask.as_deref(),
            _ => None,
        };
        let mask = self.answer_masks(caller, target, rule_profile, Some(exchange))?;
        let hold = match &verdict.decision {
            Decision::Hold(requirement) => Some(requirement.clone()),
            _ => None,
        };
        Ok(Decided {
            mask,
            hold: hold.map(|requirement| (verdict, requirement)),
        })
    }

    /// The masking profiles for what comes back to this caller from this target: the
    /// deciding rule's, if any, and those of every allow rule of the caller's there. In an
    /// exchange, from the rules it was decided under (a reload may have landed since).
    pub(super) fn answer_masks(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
        rule_profile: Option<&str>,
        exchange: Option<&Exchange>,
    ) -> Result<MaskSet, Refusal> {
        let (masks, named) = match exchange {
            Some(exchange) => (exchange.masks().clone(), exchange.masks_for(&target.name)),
            None => self.guard.masks_with_names(&caller.identity, &target.name),
        };
        MaskSet::for_caller(&masks, &named, rule_profile)
            // Configuration validation makes this unreachable; if it is reached anyway,
            // nothing unmasked may leave.
            .map_err(|why| Refusal::new(RefusalKind::Internal, why))
    }
}
