//! How an approval is shown: a row in the list, its full details, the preview an approver sees
//! before deciding, and the outcome of a decision. Pure functions of the record and the time,
//! so they are tested without a network.

use chrono::{DateTime, Utc};
use portcullis_approvals::humanize;
use serde_json::Value;

use super::records::{Approval, Grant, Person, Vote, scope};
use super::table::{REASON_COLUMN, labelled, table};
use super::terminal::{clean, clean_line, truncate};
use super::times::{parse_time, relative, when};

pub(super) fn approvals_table(list: &[Approval], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            let expires = if a.status == "pending" {
                parse_time(&a.expires_at)
                    .map_or_else(|| clean_line(&a.expires_at), |t| relative(t, now))
            } else {
                "-".to_string()
            };
            vec![
                clean(&a.id),
                clean(&a.status),
                a.requester.name().replace('\n', " "),
                a.what(),
                truncate(
                    &clean_line(a.reason.as_deref().unwrap_or("-")),
                    REASON_COLUMN,
                ),
                expires,
            ]
        })
        .collect();
    table(
        &["ID", "STATUS", "REQUESTER", "WHAT", "REASON", "EXPIRES"],
        &rows,
    )
}

pub(super) fn person_line(p: &Person) -> String {
    let mut line = p.name();
    let mut about = vec![clean(&p.kind)];
    if p.display_name.is_some() {
        about.push(format!("subject {}", clean(&p.subject)));
    }
    about.push(format!("issuer {}", clean(&p.issuer)));
    if !p.groups.is_empty() {
        about.push(format!("groups {}", clean(&p.groups.join(", "))));
    }
    line.push_str(&format!(" ({})", about.join("; ")));
    line.replace('\n', " ")
}

/// The masked arguments on one line: what the approver is approving, byte for byte as the
/// gateway shows it (JSON escapes any control character in it).
pub(super) fn arguments_line(args: &Value) -> String {
    clean_line(&args.to_string())
}

pub(super) fn vote_line(v: &Vote) -> String {
    format!(
        "{} {} at {}{}: {}",
        v.approver.name().replace('\n', " "),
        if v.approve { "approved" } else { "denied" },
        clean_line(&v.time),
        if v.break_glass { " [BREAK-GLASS]" } else { "" },
        clean(&v.reason)
    )
}

pub(super) fn approval_details(a: &Approval, now: DateTime<Utc>) -> String {
    let mut out = format!(
        "{} ({}, {})\n",
        clean(&a.id),
        clean(&a.kind),
        clean(&a.status)
    );
    let mut requester = person_line(&a.requester);
    if let Some(source) = &a.source {
        requester.push_str(&format!(" from {}", clean_line(source)));
    }
    let mut fields: Vec<(&str, String)> = vec![("requester", requester), ("what", a.what())];
    if let Some(args) = &a.arguments {
        fields.push(("arguments", arguments_line(args)));
    }
    fields.push(("reason", a.reason.as_deref().map_or("-".into(), clean)));
    fields.push((
        "rule",
        format!(
            "{} (policy {})",
            clean_line(&a.rule),
            clean_line(&a.policy_version)
        ),
    ));
    fields.push((
        "needs",
        format!("{}; {} so far", a.requirement(), a.approvals()),
    ));
    fields.push(("created", when(&a.created_at, now)));
    fields.push(("expires", when(&a.expires_at, now)));
    if !a.votes.is_empty() {
        let votes: Vec<String> = a.votes.iter().map(vote_line).collect();
        fields.push(("decisions", votes.join("\n")));
    }
    if let Some(closed) = &a.closed_at {
        let mut text = when(closed, now);
        if let Some(why) = &a.closed_because {
            text.push_str(&format!(": {}", clean_line(why)));
        }
        fields.push(("closed", text));
    }
    if let Some(ev) = &a.request_event {
        fields.push(("request event", clean_line(ev)));
    }
    fields.push(("digest", clean_line(&a.digest)));
    out.push_str(&labelled(&fields));
    out
}

/// What an approver is about to decide, shown before the decision is sent.
pub(super) fn decision_preview(a: &Approval, approve: bool, now: DateTime<Utc>) -> String {
    let mut out = format!(
        "{} {} ({}, {}):\n",
        if approve { "approving" } else { "denying" },
        clean(&a.id),
        clean(&a.kind),
        clean(&a.status)
    );
    let mut fields: Vec<(&str, String)> = vec![
        ("requested by", person_line(&a.requester)),
        ("what", a.what()),
    ];
    if let Some(args) = &a.arguments {
        fields.push(("arguments", arguments_line(args)));
    }
    fields.push((
        "their reason",
        a.reason.as_deref().map_or("-".into(), clean),
    ));
    fields.push(("rule", clean_line(&a.rule)));
    let mut so_far = format!(
        "{} of {} so far (from {})",
        a.approvals(),
        a.min_approvals,
        clean_line(&a.approvers.join(", "))
    );
    let voters: Vec<String> = a.votes.iter().map(|v| v.approver.name()).collect();
    if !voters.is_empty() {
        so_far.push_str(&format!("; decided by {}", voters.join(", ")));
    }
    fields.push(("approvals", so_far));
    fields.push(("expires", when(&a.expires_at, now)));
    out.push_str(&labelled(&fields));
    out
}

/// The outcome of a decision, as the gateway returned the approval after it.
pub(super) fn decision_result(a: &Approval, grant: Option<&Grant>, now: DateTime<Utc>) -> String {
    let id = clean(&a.id);
    let count = format!("{} of {} approvals", a.approvals(), a.min_approvals);
    let break_glass = if a.votes.last().is_some_and(|v| v.break_glass) {
        " (break-glass: flagged in the audit log)"
    } else {
        ""
    };
    match a.status.as_str() {
        "approved" if a.is_grant() => {
            let active = match grant {
                Some(g) => format!(
                    "the grant of {} on {} is active until {}",
                    scope(&g.tools, &g.tables),
                    clean(&g.target),
                    when(&g.expires_at, now)
                ),
                None => format!(
                    "the grant is issued: {}",
                    a.what().trim_start_matches("a grant of ")
                ),
            };
            format!("{id} approved: {count}; {active}{break_glass}")
        }
        "approved" => {
            format!("{id} approved: {count}; the held request is released{break_glass}")
        }
        "pending" => format!("{id}: approval recorded, {count}; more approvals needed"),
        "denied" if a.is_grant() => format!("{id} denied: the grant is not issued"),
        "denied" => format!("{id} denied: the held request is refused"),
        other => format!("{id} is {}", clean(other)),
    }
}

/// What `access request` prints once the gateway has the request.
pub(super) fn grant_request_message(a: &Approval) -> String {
    let (scope_text, duration) = match &a.grant {
        Some(g) => (scope(&g.tools, &g.tables), humanize(g.duration_secs)),
        None => ("everything".to_string(), "?".to_string()),
    };
    let id = clean(&a.id);
    format!(
        "asked for {scope_text} on {} for {duration}: approval {id}, waiting for {}; approvers run: portcullis approvals approve {id} --reason \"...\"",
        clean(&a.target),
        a.requirement()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_cli::times::at;
    use serde_json::json;

    fn held() -> Value {
        json!({
            "id": "apr_00112233445566778899",
            "kind": "request",
            "status": "pending",
            "requester": {"issuer": "portcullis:api-key", "subject": "billing-agent",
                          "kind": "agent", "groups": ["agents"]},
            "source": "127.0.0.1:50000",
            "target": "billing",
            "action": "tools/call",
            "resource": "refund_payment",
            "arguments": {"customer": "cus_1001", "amount": 25, "card": "[CREDIT_CARD]"},
            "arguments_digest": {"sha256": "ab", "size": 70},
            "reason": "duplicate charge on the March invoice, reported by the customer on the phone",
            "rule": "refunds need a finance lead",
            "policy_version": "0123456789abcdef",
            "approvers": ["finance-leads"],
            "min_approvals": 2,
            "created_at": "2025-03-01T12:00:00.000Z",
            "expires_at": "2025-03-01T12:15:00.000Z",
            "request_event": "0195b7a0-0000-7000-8000-000000000000",
            "votes": [{"approver": {"issuer": "portcullis:api-key", "subject": "omar",
                                     "display_name": "Omar K", "kind": "human",
                                     "groups": ["finance-leads"]},
                       "approve": true, "reason": "fine", "time": "2025-03-01T12:01:00.000Z"}],
            "digest": "d1e5",
            "some_future_field": {"ignored": true},
        })
    }

    fn grant_request() -> Value {
        json!({
            "id": "apr_aaaaaaaaaaaaaaaaaaaa",
            "kind": "grant",
            "status": "pending",
            "requester": {"issuer": "https://idp", "subject": "u-17", "display_name": "Dana",
                          "kind": "human", "groups": []},
            "target": "billing",
            "action": "grant",
            "grant": {"tools": ["refund_*"], "tables": [], "duration_secs": 1800},
            "reason": "reconcile March",
            "rule": "jit refunds",
            "policy_version": "0123456789abcdef",
            "approvers": ["finance-leads", "sre"],
            "min_approvals": 1,
            "created_at": "2025-03-01T12:00:00.000Z",
            "expires_at": "2025-03-01T12:15:00.000Z",
            "digest": "beef",
        })
    }

    #[test]
    fn approvals_table_renders() {
        let now = at("2025-03-01T12:01:00.000Z");
        let mut decided: Approval = serde_json::from_value(grant_request()).unwrap();
        decided.status = "denied".into();
        let list = vec![serde_json::from_value(held()).unwrap(), decided];
        let text = approvals_table(&list, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("ID  "), "{text}");
        for column in ["STATUS", "REQUESTER", "WHAT", "REASON", "EXPIRES"] {
            // Every row's cell starts where its header does (counted in characters: the
            // truncation mark is one character of three bytes).
            let col = lines[0].find(column).unwrap();
            for line in &lines[1..] {
                let chars: Vec<char> = line.chars().collect();
                assert!(
                    chars[col - 1] == ' ' && chars[col] != ' ',
                    "{column}: {text}"
                );
            }
        }
        assert!(
            lines[1].contains("apr_00112233445566778899  pending"),
            "{text}"
        );
        assert!(
            lines[1].contains("tools/call refund_payment on billing"),
            "{text}"
        );
        assert!(
            lines[1].contains("duplicate charge on the March invoice,…"),
            "{text}"
        );
        assert!(
            !lines[1].contains("on the phone"),
            "the reason is truncated: {text}"
        );
        assert!(lines[1].trim_end().ends_with("in 14m"), "{text}");
        assert!(lines[2].contains("Dana"), "{text}");
        assert!(
            lines[2].contains("a grant of refund_* on billing for 30m"),
            "{text}"
        );
        assert!(
            lines[2].trim_end().ends_with('-'),
            "decided: no expiry: {text}"
        );
    }

    #[test]
    fn preview_shows_what_is_decided() {
        let now = at("2025-03-01T12:05:00.000Z");
        let a: Approval = serde_json::from_value(held()).unwrap();
        let text = decision_preview(&a, true, now);
        assert!(
            text.starts_with("approving apr_00112233445566778899 (request, pending):"),
            "{text}"
        );
        assert!(
            text.contains("billing-agent (agent; issuer portcullis:api-key; groups agents)"),
            "{text}"
        );
        assert!(
            text.contains("tools/call refund_payment on billing"),
            "{text}"
        );
        assert!(
            text.contains(r#"{"amount":25,"card":"[CREDIT_CARD]","customer":"cus_1001"}"#),
            "{text}"
        );
        assert!(text.contains("duplicate charge"), "{text}");
        assert!(text.contains("refunds need a finance lead"), "{text}");
        assert!(
            text.contains("1 of 2 so far (from finance-leads); decided by Omar K"),
            "{text}"
        );
        assert!(text.contains("(in 10m)"), "{text}");

        let details = approval_details(&a, now);
        assert!(details.contains("from 127.0.0.1:50000"), "{details}");
        assert!(
            details.contains("Omar K approved at 2025-03-01T12:01:00.000Z: fine"),
            "{details}"
        );
        assert!(
            details.contains("2 approval(s) from finance-leads; 1 so far"),
            "{details}"
        );
        assert!(details.contains("policy 0123456789abcdef"), "{details}");
        assert!(details.contains("digest         d1e5"), "{details}");
    }

    #[test]
    fn decision_outcomes_are_worded() {
        let now = at("2025-03-01T12:05:00.000Z");
        let mut a: Approval = serde_json::from_value(held()).unwrap();
        assert_eq!(
            decision_result(&a, None, now),
            "apr_00112233445566778899: approval recorded, 1 of 2 approvals; more approvals needed"
        );
        a.status = "approved".into();
        a.min_approvals = 1;
        assert_eq!(
            decision_result(&a, None, now),
            "apr_00112233445566778899 approved: 1 of 1 approvals; the held request is released"
        );
        a.status = "denied".into();
        assert_eq!(
            decision_result(&a, None, now),
            "apr_00112233445566778899 denied: the held request is refused"
        );

        let mut g: Approval = serde_json::from_value(grant_request()).unwrap();
        assert_eq!(
            grant_request_message(&g),
            "asked for refund_* on billing for 30m: approval apr_aaaaaaaaaaaaaaaaaaaa, waiting for 1 approval(s) from finance-leads, sre; approvers run: portcullis approvals approve apr_aaaaaaaaaaaaaaaaaaaa --reason \"...\""
        );
        g.status = "approved".into();
        g.votes.push(Vote {
            approver: Person {
                subject: "pat".into(),
                ..Person::default()
            },
            approve: true,
            reason: "incident 42".into(),
            time: "2025-03-01T12:04:00.000Z".into(),
            break_glass: true,
        });
        let issued = Grant {
            id: g.id.clone(),
            target: "billing".into(),
            tools: vec!["refund_*".into()],
            expires_at: "2025-03-01T12:34:00.000Z".into(),
            ..Grant::default()
        };
        assert_eq!(
            decision_result(&g, Some(&issued), now),
            "apr_aaaaaaaaaaaaaaaaaaaa approved: 1 of 1 approvals; the grant of refund_* on billing is active until 2025-03-01 12:34:00 UTC (in 29m) (break-glass: flagged in the audit log)"
        );
        assert!(
            decision_result(&g, None, now)
                .contains("the grant is issued: refund_* on billing for 30m"),
        );
    }

    #[test]
    fn requester_text_cannot_repaint_the_screen() {
        let mut a: Approval = serde_json::from_value(held()).unwrap();
        a.resource = Some("refund\u{1b}[1A\u{202e}payment".into());
        a.reason = Some("line one\nline two\u{7}".into());
        let text = decision_preview(&a, true, at("2025-03-01T12:05:00Z"));
        assert!(!text.contains('\u{1b}') && !text.contains('\u{202e}') && !text.contains('\u{7}'));
        assert!(text.contains("refund\\u{1b}[1A\\u{202e}payment"), "{text}");
        // A multi-line reason stays readable, indented under its label.
        assert!(text.contains("line one\n      "), "{text}");
    }
}
