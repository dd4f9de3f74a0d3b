//! Why a request is refused, in one protocol-neutral form.
//!
//! Every refusal of every adapter is a [`Refusal`]: its [`RefusalKind`] alone decides the
//! audit outcome and the stable label that logs and metrics use, and each adapter has one
//! small `render()` from a kind to its wire form (a JSON-RPC error code, a SQLSTATE, an HTTP
//! status). Keeping that mapping in one place is what stops two adapters from recording the
//! same situation differently.

use std::fmt;
use std::time::Duration;

use portcullis_approvals::Approval;
use portcullis_model::{Outcome, Verdict};

/// The situation a refusal answers. The kind, not the message, is what adapters match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// The request is not one the gateway can read or act on: malformed, missing fields,
    /// unparseable statement.
    Malformed,
    /// An operation the gateway does not know (an unknown or mis-cased method): it decides
    /// only what it knows.
    UnknownOperation,
    /// A message out of the protocol's order (a second handshake, an answer to nothing).
    OutOfOrder,
    /// No credential, or one that does not verify.
    Unauthenticated,
    /// The source failed to authenticate too often; its credentials are not checked for a
    /// while.
    Throttled,
    /// A limit of the gateway's: too many sessions or connections in all.
    OverLimit,
    /// The caller's own share is used up (its sessions on a target).
    OverQuota,
    /// Policy refused: a deny rule, or no rule at all (default deny).
    Denied,
    /// The gateway's own protections refused, whatever the policy allows: a masked column
    /// used where masking cannot follow it, a server-side file, a setting the gateway
    /// relies on.
    Unsafe,
    /// A tool whose definition changed since it was pinned is withheld.
    ToolChanged,
    /// The rule holds the request for approval and needs a reason the caller did not give.
    ReasonRequired,
    /// The rule holds the request but nothing can be held now (the gateway is stopping, or
    /// the method is not one worth a person's approval).
    HoldUnavailable,
    /// An approver denied the held request.
    HeldDenied,
    /// Nobody decided the held request in time.
    HeldExpired,
    /// The held request ended without a decision: the caller went away or cancelled, the
    /// gateway stopped.
    HeldCancelled,
    /// The audit log cannot record the request, so it is not run (fail closed).
    AuditUnavailable,
    /// The upstream could not be reached or broke the exchange.
    UpstreamFailed,
    /// Something inside the gateway failed (a store, a lookup); fail closed.
    Internal,
}

impl RefusalKind {
    /// The outcome the request's audit event records. Refused by a decision (policy, an
    /// approver, the clock, the gateway's protections): `Denied`; refused before any decision
    /// could be made: `Rejected`; could not be completed: `Failed`.
    pub fn outcome(self) -> Outcome {
        match self {
            RefusalKind::Malformed
            | RefusalKind::UnknownOperation
            | RefusalKind::OutOfOrder
            | RefusalKind::Unauthenticated
            | RefusalKind::Throttled => Outcome::Rejected,
            RefusalKind::Denied
            | RefusalKind::Unsafe
            | RefusalKind::ToolChanged
            | RefusalKind::ReasonRequired
            | RefusalKind::HoldUnavailable
            | RefusalKind::HeldDenied
            | RefusalKind::HeldExpired => Outcome::Denied,
            // The gateway could not take the request on: it was not refused on its merits.
            RefusalKind::OverLimit
            | RefusalKind::OverQuota
            | RefusalKind::HeldCancelled
            | RefusalKind::AuditUnavailable
            | RefusalKind::UpstreamFailed
            | RefusalKind::Internal => Outcome::Failed,
        }
    }

    /// A stable name for logs and metrics (`refusal="held_denied"`).
    pub fn label(self) -> &'static str {
        match self {
            RefusalKind::Malformed => "malformed",
            RefusalKind::UnknownOperation => "unknown_operation",
            RefusalKind::OutOfOrder => "out_of_order",
            RefusalKind::Unauthenticated => "unauthenticated",
            RefusalKind::Throttled => "throttled",
            RefusalKind::OverLimit => "over_limit",
            RefusalKind::OverQuota => "over_quota",
            RefusalKind::Denied => "denied",
            RefusalKind::Unsafe => "unsafe",
            RefusalKind::ToolChanged => "tool_changed",
            RefusalKind::ReasonRequired => "reason_required",
            RefusalKind::HoldUnavailable => "hold_unavailable",
            RefusalKind::HeldDenied => "held_denied",
            RefusalKind::HeldExpired => "held_expired",
            RefusalKind::HeldCancelled => "held_cancelled",
            RefusalKind::AuditUnavailable => "audit_unavailable",
            RefusalKind::UpstreamFailed => "upstream_failed",
            RefusalKind::Internal => "internal",
        }
    }

    /// Every kind, for tests that check each adapter renders all of them.
    pub const ALL: [RefusalKind; 18] = [
        RefusalKind::Malformed,
        RefusalKind::UnknownOperation,
        RefusalKind::OutOfOrder,
        RefusalKind::Unauthenticated,
        RefusalKind::Throttled,
        RefusalKind::OverLimit,
        RefusalKind::OverQuota,
        RefusalKind::Denied,
        RefusalKind::Unsafe,
        RefusalKind::ToolChanged,
        RefusalKind::ReasonRequired,
        RefusalKind::HoldUnavailable,
        RefusalKind::HeldDenied,
        RefusalKind::HeldExpired,
        RefusalKind::HeldCancelled,
        RefusalKind::AuditUnavailable,
        RefusalKind::UpstreamFailed,
        RefusalKind::Internal,
    ];
}

impl fmt::Display for RefusalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How an upstream failed, for the `upstream_errors_total` metric: what an operator
/// looks at first when a target's requests fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamFault {
    /// It could not be reached: connection refused, no route, a process that would not
    /// start.
    Unreachable,
    /// It went away with a request or session in flight (a closed connection, an exited
    /// process).
    Closed,
    /// It did not answer in time.
    Timeout,
    /// It answered something the gateway cannot use: a broken frame, a failed handshake or
    /// login, an answer that cannot be read.
    Protocol,
}

impl UpstreamFault {
    /// The metric's label value.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamFault::Unreachable => "unreachable",
            UpstreamFault::Closed => "closed",
            UpstreamFault::Timeout => "timeout",
            UpstreamFault::Protocol => "protocol",
        }
    }
}

/// How a held request's wait ended early, as the adapter saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The caller's connection closed.
    CallerGone,
    /// The caller cancelled the request (a JSON-RPC cancellation, a PostgreSQL cancel
    /// request).
    CallerCancelled,
    /// The gateway is stopping.
    Stopping,
    /// The caller cannot wait any longer: the protocol's own bound on a held request's
    /// wait ran out (an HTTP target's `hold_wait`).
    WaitOver,
}

impl Interruption {
    pub fn why(self) -> &'static str {
        match self {
            Interruption::CallerGone => "the caller went away",
            Interruption::CallerCancelled => "the caller cancelled the request",
            Interruption::Stopping => "the gateway is stopping",
            Interruption::WaitOver => {
                "the caller's longest wait for a decision ran out (the target's hold_wait)"
            }
        }
    }
}

/// A refused request: what kind of refusal, a message for the caller (plain text, no
/// protocol prefix, never a secret or a masked value), and the decision facts an adapter may
/// add to its wire form.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
    /// The decision behind the refusal (`deny`, `hold`), when policy made one.
    pub decision: Option<&'static str>,
    /// The rule that decided, when a rule did.
    pub rule: Option<String>,
    pub policy_version: Option<String>,
    /// The approval a held request went through.
    pub approval: Option<Box<Approval>>,
    /// Set when a held request's wait was interrupted.
    pub interruption: Option<Interruption>,
    /// For [`RefusalKind::Throttled`]: when the caller may try again.
    pub retry_after: Option<Duration>,
    /// For [`RefusalKind::UpstreamFailed`]: how the upstream failed, counted when the
    /// exchange is refused. `None` for a refusal the upstream did not cause (the gateway
    /// cannot mask what it answered, its own connection slots are busy).
    pub upstream: Option<UpstreamFault>,
}

impl Refusal {
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
            decision: None,
            rule: None,
            policy_version: None,
            approval: None,
            interruption: None,
            retry_after: None,
            upstream: None,
        }
    }

    /// A request the upstream failed ([`RefusalKind::UpstreamFailed`]), counted by `fault`.
    pub fn upstream(fault: UpstreamFault, message: impl Into<String>) -> Refusal {
        Refusal {
            upstream: Some(fault),
            ..Refusal::new(RefusalKind::UpstreamFailed, message)
        }
    }

    /// The refusal names the rule and policy that decided.
    pub fn by(mut self, verdict: &Verdict) -> Refusal {
        self.decision = Some(verdict.decision.label());
        self.rule = Some(verdict.rule_label().to_string());
        self.policy_version = Some(verdict.policy_version.to_string());
        self
    }

    /// Names a rule that is not a policy rule (`protocol`, `tool-pin`, `function-catalog`).
    pub fn by_rule(mut self, rule: &str) -> Refusal {
        self.rule = Some(rule.to_string());
        self
    }

    pub fn outcome(&self) -> Outcome {
        self.kind.outcome()
    }

    /// Whether the caller is gone, so no answer can reach it.
    pub fn caller_gone(&self) -> bool {
        self.interruption == Some(Interruption::CallerGone)
    }

    /// The refusal of a request whose recording cannot be sealed (strict mode): refused
    /// like one whose event cannot be written, until a seal succeeds.
    pub fn recording_unavailable(cause: impl fmt::Display) -> Refusal {
        Refusal::new(
            RefusalKind::AuditUnavailable,
            format!("the recording of this request cannot be kept, so it is refused: {cause}"),
        )
    }

    /// The refusal of a request whose event the audit log cannot write.
    pub fn audit_unavailable(cause: impl fmt::Display) -> Refusal {
        Refusal::new(
            RefusalKind::AuditUnavailable,
            format!("the audit log cannot record this request, so it is refused: {cause}"),
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_every_kind_has_an_outcome() {
        let mut labels: Vec<&str> = RefusalKind::ALL.iter().map(|k| k.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), RefusalKind::ALL.len());
    }

    #[test]
    fn a_decision_refuses_as_denied_and_an_interrupted_wait_as_failed() {
        for kind in [
            RefusalKind::Denied,
            RefusalKind::HeldDenied,
            RefusalKind::HeldExpired,
            RefusalKind::ReasonRequired,
        ] {
            assert_eq!(kind.outcome(), Outcome::Denied, "{kind}");
        }
        for kind in [
            RefusalKind::HeldCancelled,
            RefusalKind::AuditUnavailable,
            RefusalKind::UpstreamFailed,
        ] {
            assert_eq!(kind.outcome(), Outcome::Failed, "{kind}");
        }
        assert_eq!(RefusalKind::Malformed.outcome(), Outcome::Rejected);
    }
}
