//! The one place a refusal becomes a PostgreSQL error: its SQLSTATE, its text, its hint.
//!
//! The guard decides why a request is refused ([`RefusalKind`]) and words the message
//! without any protocol in it; this file alone adds what PostgreSQL clients see: the
//! `portcullis: ` prefix that tells a refusal from the server's own errors, the SQLSTATE a
//! driver can match on, and the rule that decided as the hint.

use portcullis_guard::{Refusal, RefusalKind};

use crate::wire;

/// An ErrorResponse to send: what a client sees of a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorReply {
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

impl ErrorReply {
    /// An error of the protocol's own (a portal that does not exist), not a decision.
    pub fn protocol(code: &'static str, message: impl std::fmt::Display) -> ErrorReply {
        ErrorReply {
            code,
            message: format!("portcullis: {message}"),
            hint: None,
        }
    }
}

/// The SQLSTATE of each kind of refusal.
fn sqlstate(kind: RefusalKind) -> &'static str {
    match kind {
        RefusalKind::Malformed => wire::SYNTAX_ERROR,
        RefusalKind::UnknownOperation => wire::FEATURE_NOT_SUPPORTED,
        RefusalKind::OutOfOrder => wire::PROTOCOL_VIOLATION,
        RefusalKind::Unauthenticated => wire::INVALID_PASSWORD,
        RefusalKind::Throttled | RefusalKind::OverLimit | RefusalKind::OverQuota => {
            wire::TOO_MANY_CONNECTIONS
        }
        RefusalKind::Denied
        | RefusalKind::Unsafe
        | RefusalKind::ToolChanged
        | RefusalKind::ReasonRequired
        | RefusalKind::HoldUnavailable
        | RefusalKind::HeldDenied
        | RefusalKind::HeldExpired => wire::INSUFFICIENT_PRIVILEGE,
        RefusalKind::HeldCancelled => wire::QUERY_CANCELED,
        RefusalKind::AuditUnavailable => wire::IO_ERROR,
        RefusalKind::UpstreamFailed => wire::CONNECTION_FAILURE,
        RefusalKind::Internal => wire::SYSTEM_ERROR,
    }
}

/// The ErrorResponse of `refusal`. A refusal that names the rule that decided gets it as
/// the hint, except a cancelled wait: the client ended it, no rule did.
pub(crate) fn render(refusal: &Refusal) -> ErrorReply {
    let mut message = format!("portcullis: {}", refusal.message);
    if refusal.kind == RefusalKind::ReasonRequired {
        // PostgreSQL has no field for it: the reason travels in the statement's text.
        message.push_str(": start the statement with a comment /* reason: why */");
    }
    let hint = match (&refusal.rule, &refusal.policy_version) {
        (Some(rule), Some(version)) if refusal.kind != RefusalKind::HeldCancelled => {
            Some(format!("rule \"{rule}\" of policy {version}"))
        }
        _ => None,
    };
    ErrorReply {
        code: sqlstate(refusal.kind),
        message,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_renders_to_a_sqlstate() {
        for kind in RefusalKind::ALL {
            let reply = render(&Refusal::new(kind, "no"));
            assert_eq!(reply.code.len(), 5, "{kind}");
            assert!(reply.message.starts_with("portcullis: no"), "{kind}");
        }
        let code = |kind| render(&Refusal::new(kind, "no")).code;
        assert_eq!(code(RefusalKind::Denied), "42501");
        assert_eq!(code(RefusalKind::Unsafe), "42501");
        assert_eq!(code(RefusalKind::HeldDenied), "42501");
        assert_eq!(code(RefusalKind::HeldExpired), "42501");
        assert_eq!(code(RefusalKind::ReasonRequired), "42501");
        assert_eq!(code(RefusalKind::HoldUnavailable), "42501");
        assert_eq!(code(RefusalKind::HeldCancelled), "57014");
        assert_eq!(code(RefusalKind::AuditUnavailable), "58030");
        assert_eq!(code(RefusalKind::Internal), "58000");
        assert_eq!(code(RefusalKind::Malformed), "42601");
        assert_eq!(code(RefusalKind::Unauthenticated), "28P01");
        assert_eq!(code(RefusalKind::Throttled), "53300");
    }

    #[test]
    fn the_rule_is_the_hint_and_a_reason_is_asked_for_in_a_comment() {
        let mut refusal = Refusal::new(RefusalKind::ReasonRequired, "UPDATE on t needs a reason");
        refusal.rule = Some("updates".into());
        refusal.policy_version = Some("v1".into());
        let reply = render(&refusal);
        assert_eq!(
            reply.message,
            "portcullis: UPDATE on t needs a reason: start the statement with a comment /* reason: why */"
        );
        assert_eq!(reply.hint.as_deref(), Some("rule \"updates\" of policy v1"));
        refusal.kind = RefusalKind::HeldCancelled;
        assert_eq!(render(&refusal).hint, None);
        assert_eq!(render(&Refusal::new(RefusalKind::Internal, "x")).hint, None);
    }
}
