//! The one mapping from the guard's refusals to MCP's wire: a JSON-RPC error code, an HTTP
//! status for answers the front door sends itself, and the `data` a client can act on (the
//! rule, the policy version, the event, the approval and who decided it).

use portcullis_guard::{Refusal, RefusalKind};
use serde_json::{Value, json};

use crate::jsonrpc::{self, code};

/// The JSON-RPC code of a refusal kind.
pub fn error_code(kind: RefusalKind) -> i64 {
    match kind {
        RefusalKind::Malformed => code::INVALID_PARAMS,
        RefusalKind::UnknownOperation => code::METHOD_NOT_FOUND,
        RefusalKind::OutOfOrder | RefusalKind::Unauthenticated | RefusalKind::Throttled => {
            code::INVALID_REQUEST
        }
        RefusalKind::OverLimit | RefusalKind::Internal => code::INTERNAL_ERROR,
        RefusalKind::OverQuota | RefusalKind::UpstreamFailed => code::UPSTREAM_UNAVAILABLE,
        RefusalKind::Denied | RefusalKind::Unsafe => code::POLICY_DENIED,
        RefusalKind::ToolChanged => code::TOOL_PIN_MISMATCH,
        RefusalKind::ReasonRequired
        | RefusalKind::HoldUnavailable
        | RefusalKind::HeldDenied
        | RefusalKind::HeldExpired
        | RefusalKind::HeldCancelled => code::POLICY_HOLD,
        RefusalKind::AuditUnavailable => code::AUDIT_UNAVAILABLE,
    }
}

/// The HTTP status of an answer the front door sends instead of a stream (the refusal of
/// an `initialize`, a notification, a client's answer). Errors of requests that reach the
/// pipeline travel in a 200 like any answer.
pub fn status(kind: RefusalKind) -> http::StatusCode {
    use http::StatusCode as S;
    match kind {
        RefusalKind::Malformed | RefusalKind::UnknownOperation | RefusalKind::OutOfOrder => {
            S::BAD_REQUEST
        }
        RefusalKind::Unauthenticated => S::UNAUTHORIZED,
        RefusalKind::Throttled | RefusalKind::OverQuota => S::TOO_MANY_REQUESTS,
        RefusalKind::Denied
        | RefusalKind::Unsafe
        | RefusalKind::ToolChanged
        | RefusalKind::ReasonRequired
        | RefusalKind::HoldUnavailable
        | RefusalKind::HeldDenied
        | RefusalKind::HeldExpired => S::FORBIDDEN,
        RefusalKind::OverLimit | RefusalKind::AuditUnavailable => S::SERVICE_UNAVAILABLE,
        // The upstream's failures are answers like its errors.
        RefusalKind::HeldCancelled | RefusalKind::UpstreamFailed | RefusalKind::Internal => S::OK,
    }
}

/// The message as an MCP caller reads it: the guard's, plus how to do what was missing.
fn message(refusal: &Refusal) -> String {
    match refusal.kind {
        RefusalKind::ReasonRequired => format!(
            "{}: pass it as _meta[\"dev.portcullis/reason\"] (HTTP callers: the Portcullis-Reason header)",
            refusal.message
        ),
        _ => refusal.message.clone(),
    }
}

/// What a client can act on, and an operator can look up: the decision, the rule, the
/// policy version, the request's event, and for a held request its approval and who
/// decided it.
fn data(refusal: &Refusal, event: Option<&str>) -> Option<Value> {
    if let Some(approval) = &refusal.approval {
        let decided_by: Vec<Value> = approval
            .votes
            .iter()
            .map(|v| {
                json!({
                    "subject": &v.approver.subject,
                    "decision": if v.approve { "approve" } else { "deny" },
                    "reason": &v.reason,
                    "time": &v.time,
                })
            })
            .collect();
        return Some(json!({
            "approval": &approval.id,
            "status": approval.status.as_str(),
            "decided_by": decided_by,
            "rule": &refusal.rule,
            "event": event,
        }));
    }
    let mut data = serde_json::Map::new();
    if let Some(decision) = refusal.decision {
        data.insert("decision".into(), decision.into());
    }
    if let Some(rule) = &refusal.rule {
        data.insert("rule".into(), rule.as_str().into());
    }
    if let Some(version) = &refusal.policy_version {
        data.insert("policy_version".into(), version.as_str().into());
    }
    if data.is_empty() {
        return None;
    }
    if let Some(event) = event {
        data.insert("event".into(), event.into());
    }
    Some(Value::Object(data))
}

/// A refusal of message `id` as MCP answers it: the status for the front door and the
/// JSON-RPC error.
pub fn render(
    refusal: &Refusal,
    id: Option<&str>,
    event: Option<&str>,
) -> (http::StatusCode, String) {
    let body = jsonrpc::error(
        id,
        error_code(refusal.kind),
        &message(refusal),
        data(refusal, event),
    );
    (status(refusal.kind), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_kind_has_its_code() {
        for kind in RefusalKind::ALL {
            let (_, body) = render(&Refusal::new(kind, "no"), Some("1"), None);
            let answer: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(answer["error"]["code"], error_code(kind), "{kind}");
        }
        assert_eq!(error_code(RefusalKind::Denied), code::POLICY_DENIED);
        assert_eq!(error_code(RefusalKind::HeldDenied), code::POLICY_HOLD);
        assert_eq!(error_code(RefusalKind::HeldCancelled), code::POLICY_HOLD);
        assert_eq!(
            error_code(RefusalKind::AuditUnavailable),
            code::AUDIT_UNAVAILABLE
        );
        assert_eq!(
            error_code(RefusalKind::ToolChanged),
            code::TOOL_PIN_MISMATCH
        );
    }

    #[test]
    fn a_policy_refusal_names_its_rule_and_event() {
        let mut refusal = Refusal::new(RefusalKind::Denied, "tools/call \"x\" denied");
        refusal.decision = Some("deny");
        refusal.rule = Some("no x".into());
        refusal.policy_version = Some("v1".into());
        let (status, body) = render(&refusal, Some("7"), Some("ev1"));
        assert_eq!(status, http::StatusCode::FORBIDDEN);
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            answer["error"]["data"],
            json!({"decision": "deny", "rule": "no x", "policy_version": "v1", "event": "ev1"})
        );
    }
}
