//! Which audit events are evidence for which SP 800-53 control, in one table.
//!
//! Adapters emit event types; they never name controls. This table is the only place that
//! maps one to the other, and `docs/evidence.md` prints it: an assessor reads the same
//! mapping the reports and OSCAL documents are built from. [`CHECKS`] lists the controls
//! assessed automatically, each with the rule it is judged by (implemented in `assess`).

use portcullis_model::EventType;

/// The controls an event type is evidence for, and why.
pub struct EventControls {
    pub event: EventType,
    /// Lower-case OSCAL control ids (`ac-5`), the most specific first.
    pub controls: &'static [&'static str],
    pub why: &'static str,
}

/// The map, one row per event type. A test checks that every event type has a row.
pub const EVENT_CONTROLS: &[EventControls] = &[
    EventControls {
        event: EventType::Request,
        controls: &["au-2", "au-3", "au-12", "ac-3", "ac-6", "ia-2", "sc-7"],
        why: "every request at the boundary, with who, what, the decision, the rule and the outcome",
    },
    EventControls {
        event: EventType::SessionStart,
        controls: &["au-12", "ac-2", "ia-2"],
        why: "an authenticated caller's session began: the account in use",
    },
    EventControls {
        event: EventType::SessionEnd,
        controls: &["au-12", "ac-12"],
        why: "the session ended, and how",
    },
    EventControls {
        event: EventType::Notification,
        controls: &["au-12"],
        why: "a notification relayed from the caller",
    },
    EventControls {
        event: EventType::AuthFailure,
        controls: &["ac-7", "ia-2"],
        why: "a caller presented no, bad, forged or expired credentials and was refused",
    },
    EventControls {
        event: EventType::ToolPinMismatch,
        controls: &["cm-3", "si-7"],
        why: "an upstream changed a pinned tool; it is withheld until accepted",
    },
    EventControls {
        event: EventType::ToolPinAccepted,
        controls: &["cm-3"],
        why: "an operator accepted a changed tool definition",
    },
    EventControls {
        event: EventType::GatewayStart,
        controls: &["au-12", "cm-3"],
        why: "the gateway started, with the policy version in force",
    },
    EventControls {
        event: EventType::GatewayStop,
        controls: &["au-12"],
        why: "the gateway stopped",
    },
    EventControls {
        event: EventType::ConfigReloaded,
        controls: &["cm-3", "au-12"],
        why: "the configuration was reloaded, with the new policy version in force, or the reload was refused and why",
    },
    EventControls {
        event: EventType::ApprovalRequested,
        controls: &["ac-5", "ac-3", "ac-2"],
        why: "a request was held, or a grant asked for, with the requester and the reason",
    },
    EventControls {
        event: EventType::ApprovalNotified,
        controls: &["ac-5"],
        why: "approvers were told of a pending approval",
    },
    EventControls {
        event: EventType::ApprovalApproved,
        controls: &["ac-5", "ac-2"],
        why: "a named approver, not the requester, approved (break-glass flagged)",
    },
    EventControls {
        event: EventType::ApprovalDenied,
        controls: &["ac-5"],
        why: "a named approver denied",
    },
    EventControls {
        event: EventType::ApprovalRefused,
        controls: &["ac-5"],
        why: "someone tried to decide their own request, or one not theirs to decide, and was refused",
    },
    EventControls {
        event: EventType::ApprovalReleased,
        controls: &["ac-5", "ac-3"],
        why: "an approved held request was forwarded",
    },
    EventControls {
        event: EventType::ApprovalExpired,
        controls: &["ac-5"],
        why: "nobody decided in time; the request was refused",
    },
    EventControls {
        event: EventType::ApprovalCancelled,
        controls: &["ac-5"],
        why: "a held request ended without a decision",
    },
    EventControls {
        event: EventType::GrantIssued,
        controls: &["ac-2", "ac-6"],
        why: "a time-boxed grant was issued after approval",
    },
    EventControls {
        event: EventType::GrantRevoked,
        controls: &["ac-2"],
        why: "a grant was revoked before its end",
    },
    EventControls {
        event: EventType::GrantExpired,
        controls: &["ac-2"],
        why: "a grant reached its end",
    },
    EventControls {
        event: EventType::ColumnsDiscovered,
        controls: &["ac-3", "ra-3"],
        why: "column discovery tagged sensitive columns that masking then covers",
    },
    EventControls {
        event: EventType::RecordingSealed,
        controls: &["au-14", "au-9"],
        why: "a segment of session recordings was encrypted to the auditors and bound to the log",
    },
    EventControls {
        event: EventType::RecordingRemoved,
        controls: &["au-11"],
        why: "retention deleted recordings, named in the event",
    },
    EventControls {
        event: EventType::RecordingAccessed,
        controls: &["au-9"],
        why: "someone read a recording back",
    },
    EventControls {
        event: EventType::RecordingFailed,
        controls: &["au-5"],
        why: "a recording could not be kept and the request went on (best-effort mode)",
    },
    EventControls {
        event: EventType::EvidenceReport,
        controls: &["au-6", "au-7"],
        why: "an evidence document was written; its hash binds it to the log",
    },
    EventControls {
        event: EventType::EvidenceReviewed,
        controls: &["au-6"],
        why: "a named reviewer signed off a review report",
    },
    EventControls {
        event: EventType::ConsoleSignIn,
        controls: &["ac-2", "ia-2", "ac-7"],
        why: "a named person signed in to the console through the IdP (or was refused)",
    },
    EventControls {
        event: EventType::ConsoleSignOut,
        controls: &["ac-12"],
        why: "a console session ended: signed out, idle or past its lifetime",
    },
    EventControls {
        event: EventType::ConsoleExport,
        controls: &["au-9"],
        why: "audit information (a proof, an evidence document) was taken out through the console",
    },
];

/// The controls an event type is evidence for.
pub fn controls_of(event: EventType) -> &'static [&'static str] {
    EVENT_CONTROLS
        .iter()
        .find(|row| row.event == event)
        .map(|row| row.controls)
        .unwrap_or(&[])
}

/// A control assessed automatically, and the rule it is judged by.
pub struct ControlCheck {
    /// Lower-case OSCAL control id.
    pub id: &'static str,
    pub title: &'static str,
    /// The rule, as the report and the OSCAL finding state it.
    pub rule: &'static str,
}

/// The automated checks, in the order reports list them. `assess` implements each rule.
pub const CHECKS: &[ControlCheck] = &[
    ControlCheck {
        id: "ac-3",
        title: "Access Enforcement",
        rule: "Default deny is in force: a request that no rule allowed was refused (every \
               request without a rule is denied, and no request was allowed without a rule).",
    },
    ControlCheck {
        id: "ac-5",
        title: "Separation of Duties",
        rule: "No request was approved by its own requester. A break-glass self-approval (an \
               emergency override) fails this check too, so that a person reviews it; attempts \
               to decide one's own request must have been refused.",
    },
    ControlCheck {
        id: "ac-6",
        title: "Least Privilege",
        rule: "Privileged statements (DDL, GRANT, TRUNCATE, DO, CALL, maintenance) were let \
               through only by a named rule that allows them, or refused.",
    },
    ControlCheck {
        id: "au-3",
        title: "Content of Audit Records",
        rule: "Every request event has what (type, action), when (time), where (gateway, \
               target), source, outcome and, when it was allowed, who (identity).",
    },
    ControlCheck {
        id: "au-6",
        title: "Audit Record Review, Analysis, and Reporting",
        rule: "A named reviewer signed off a review report (evidence.reviewed) within the \
               period.",
    },
    ControlCheck {
        id: "au-9",
        title: "Protection of Audit Information",
        rule: "The log verifies against the gateway's public key (Merkle tree, signed \
               checkpoints, published copies), a signed checkpoint covers the period, and a \
               witness cosigned a checkpoint within 24 hours of the period's end (when \
               witness keys are given).",
    },
    ControlCheck {
        id: "au-12",
        title: "Audit Record Generation",
        rule: "Every target that carried traffic in the period has request events, and every \
               session that started has its requests logged (no target is silent while its \
               sessions are open).",
    },
    ControlCheck {
        id: "ia-2",
        title: "Identification and Authentication (Organizational Users)",
        rule: "Every allowed request names an authenticated identity (issuer, subject, how it \
               authenticated).",
    },
];

/// The title of a control the table names (for reports), if it is one of [`CHECKS`] or a
/// control the table maps events to.
pub fn title_of(id: &str) -> &'static str {
    if let Some(check) = CHECKS.iter().find(|c| c.id == id) {
        return check.title;
    }
    match id {
        "ac-2" => "Account Management",
        "ac-7" => "Unsuccessful Logon Attempts",
        "ac-12" => "Session Termination",
        "au-2" => "Event Logging",
        "au-5" => "Response to Audit Logging Process Failures",
        "au-7" => "Audit Record Reduction and Report Generation",
        "au-11" => "Audit Record Retention",
        "au-14" => "Session Audit",
        "cm-3" => "Configuration Change Control",
        "ra-3" => "Risk Assessment",
        "sc-7" => "Boundary Protection",
        "si-7" => "Software, Firmware, and Information Integrity",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant, by an exhaustive match: a type added to the model without a row here
    /// stops this from compiling, and the test below then demands its row.
    fn every_event_type() -> Vec<EventType> {
        use EventType::*;
        let all = vec![
            SessionStart,
            SessionEnd,
            Request,
            Notification,
            AuthFailure,
            ToolPinMismatch,
            ToolPinAccepted,
            GatewayStart,
            GatewayStop,
            ConfigReloaded,
            ApprovalRequested,
            ApprovalNotified,
            ApprovalApproved,
            ApprovalDenied,
            ApprovalRefused,
            ApprovalReleased,
            ApprovalExpired,
            ApprovalCancelled,
            GrantIssued,
            GrantRevoked,
            GrantExpired,
            ColumnsDiscovered,
            RecordingSealed,
            RecordingRemoved,
            RecordingAccessed,
            RecordingFailed,
            EvidenceReport,
            EvidenceReviewed,
            ConsoleSignIn,
            ConsoleSignOut,
            ConsoleExport,
        ];
        for event in &all {
            match event {
                SessionStart | SessionEnd | Request | Notification | AuthFailure
                | ToolPinMismatch | ToolPinAccepted | GatewayStart | GatewayStop
                | ConfigReloaded | ApprovalRequested | ApprovalNotified | ApprovalApproved
                | ApprovalDenied | ApprovalRefused | ApprovalReleased | ApprovalExpired
                | ApprovalCancelled | GrantIssued | GrantRevoked | GrantExpired
                | ColumnsDiscovered | RecordingSealed | RecordingRemoved | RecordingAccessed
                | RecordingFailed | EvidenceReport | EvidenceReviewed | ConsoleSignIn
                | ConsoleSignOut | ConsoleExport => {}
            }
        }
        all
    }

    #[test]
    fn every_event_type_is_mapped_once_and_every_control_has_a_title() {
        let all = every_event_type();
        assert_eq!(all.len(), EVENT_CONTROLS.len());
        for event in all {
            let rows = EVENT_CONTROLS.iter().filter(|r| r.event == event).count();
            assert_eq!(rows, 1, "{event:?}");
            for control in controls_of(event) {
                assert!(!title_of(control).is_empty(), "{control}");
            }
        }
    }
}
