//! A fully populated report for tests of what reads reports (renderers, OSCAL, signing):
//! every section has items, and the strings carry what escaping must survive (`<script>`,
//! `|`, quotes, newlines, non-ASCII).

use crate::Period;
use crate::report::*;

fn event(n: u64, session: Option<&str>) -> EventRef {
    EventRef {
        id: format!("0193a0b2-0000-7000-8000-{n:012}"),
        seq: n,
        time: format!("2026-12-01T10:{:02}:00.000Z", n % 60),
        session: session.map(str::to_string),
        recorded: session.is_some(),
        log: None,
    }
}

/// A report of one day with an agent, a human approver, a refund held and approved, a
/// denied delete, a break-glass self-approval, and a log that verified.
pub fn sample_report() -> Report {
    let period = Period::parse("2026-12-01", "2026-12-02").expect("valid period");
    let tricky = "<script>alert(1)</script> | \"quoted\" & 'single'\nnewline é";
    let agent = "billing-agent".to_string();
    let human = "alice@https://login.example.com".to_string();
    Report {
        format: REPORT_FORMAT.into(),
        period,
        gateways: vec!["gw-1".into()],
        integrity: Integrity {
            verified: true,
            failure: None,
            checked_with: CheckedWith {
                key: "portcullis.example/audit+0a1b2c3d".into(),
                published_dirs: 1,
                witnesses: vec!["witness.example/w1".into()],
            },
            origin: Some("portcullis.example/audit".into()),
            events_to_period_end: 120,
            period_events: 100,
            first_seq: Some(21),
            last_seq: Some(120),
            covering_checkpoint: Some(CheckpointSeen {
                size: 128,
                root: "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=".into(),
                published: true,
            }),
            checkpoints_signed: 3,
            checkpoints_published: 3,
            cosignatures: vec![CosignatureSeen {
                witness: "witness.example/w1".into(),
                size: 128,
                time: "2026-12-01T23:00:00Z".into(),
            }],
            last_cosignature: Some("2026-12-01T23:00:00Z".into()),
            cosignature_age_seconds: Some(3600),
        },
        controls: crate::controls::CHECKS
            .iter()
            .enumerate()
            .map(|(i, check)| ControlResult {
                control: check.id.into(),
                title: check.title.into(),
                status: if check.id == "au-6" {
                    ControlStatus::NotSatisfied
                } else {
                    ControlStatus::Satisfied
                },
                rule: check.rule.into(),
                reason: format!("reason for {} with {tricky}", check.id),
                events: 10 + i as u64,
                samples: vec![event(30 + i as u64, Some("sess-1"))],
            })
            .collect(),
        totals: Totals {
            events: 100,
            requests: 60,
            allowed: 50,
            denied: 6,
            held: 2,
            rejected: 3,
            failed: 1,
            sessions: 4,
            identities: 2,
            targets: 2,
        },
        identities: vec![
            IdentityActivity {
                name: agent.clone(),
                issuer: "portcullis:api-key".into(),
                subject: agent.clone(),
                display_name: None,
                kind: "agent".into(),
                auth_methods: vec!["api_key".into()],
                decisions: Decisions {
                    requests: 55,
                    allowed: 47,
                    denied: 6,
                    held: 2,
                    failed: 1,
                },
                targets: vec!["billing".into(), "billing-db".into()],
                tools: Capped {
                    total: 3,
                    items: vec!["refund".into(), "lookup_customer".into()],
                },
                tables: Capped {
                    total: 1,
                    items: vec!["public.customers".into()],
                },
                first_seen: "2026-12-01T10:00:00.000Z".into(),
                last_seen: "2026-12-01T11:00:00.000Z".into(),
                new: true,
                first_event: event(21, Some("sess-1")),
            },
            IdentityActivity {
                name: human.clone(),
                issuer: "https://login.example.com".into(),
                subject: "alice".into(),
                display_name: Some(format!("Alice {tricky}")),
                kind: "human".into(),
                auth_methods: vec!["oidc".into()],
                decisions: Decisions {
                    requests: 5,
                    allowed: 3,
                    denied: 0,
                    held: 0,
                    failed: 0,
                },
                targets: vec!["billing".into()],
                tools: Capped::default(),
                tables: Capped::default(),
                first_seen: "2026-12-01T10:05:00.000Z".into(),
                last_seen: "2026-12-01T10:06:00.000Z".into(),
                new: false,
                first_event: event(25, None),
            },
        ],
        targets: vec![
            TargetActivity {
                name: "billing".into(),
                decisions: Decisions {
                    requests: 30,
                    allowed: 27,
                    denied: 1,
                    held: 2,
                    failed: 0,
                },
                identities: 2,
                tools: Capped {
                    total: 2,
                    items: vec!["refund".into(), "lookup_customer".into()],
                },
                tables: Capped::default(),
                sessions: 2,
                first_seen: "2026-12-01T10:00:00.000Z".into(),
                last_seen: "2026-12-01T11:00:00.000Z".into(),
            },
            TargetActivity {
                name: "billing-db".into(),
                decisions: Decisions {
                    requests: 30,
                    allowed: 23,
                    denied: 5,
                    held: 0,
                    failed: 1,
                },
                identities: 1,
                tools: Capped::default(),
                tables: Capped {
                    total: 1,
                    items: vec!["public.customers".into()],
                },
                sessions: 2,
                first_seen: "2026-12-01T10:00:00.000Z".into(),
                last_seen: "2026-12-01T11:00:00.000Z".into(),
            },
        ],
        privileged: Capped {
            total: 2,
            items: vec![PrivilegedAction {
                event: event(40, Some("sess-2")),
                identity: agent.clone(),
                target: "billing-db".into(),
                action: "update".into(),
                objects: vec!["public.invoices".into()],
                statement: Some(format!("UPDATE invoices SET note = $1 -- {tricky}")),
                why: vec!["write".into()],
                rule: "agents update invoices".into(),
                approval: None,
                outcome: "success".into(),
            }],
        },
        holds: Capped {
            total: 1,
            items: vec![Hold {
                approval: "ap-1".into(),
                kind: "request".into(),
                requester: agent.clone(),
                target: "billing".into(),
                action: "tools/call".into(),
                resource: Some("refund".into()),
                rule: "refunds need a finance lead".into(),
                reason: Some(format!("customer asked {tricky}")),
                requested: event(50, Some("sess-1")),
                status: "approved".into(),
                decisions: vec![Decision {
                    approval: "ap-1".into(),
                    who: human.clone(),
                    decision: "approve".into(),
                    reason: Some("verified the order".into()),
                    break_glass: false,
                    own_request: false,
                    event: event(52, None),
                    detail: None,
                }],
                seconds_to_decision: Some(42.5),
                released: Some(event(53, Some("sess-1"))),
            }],
        },
        break_glass: Capped {
            total: 1,
            items: vec![Decision {
                approval: "ap-2".into(),
                who: "oncall".into(),
                decision: "approve".into(),
                reason: Some("outage".into()),
                break_glass: true,
                own_request: true,
                event: event(60, None),
                detail: Some("BREAK-GLASS self-approval".into()),
            }],
        },
        refused_decisions: Capped {
            total: 1,
            items: vec![Decision {
                approval: "ap-1".into(),
                who: agent.clone(),
                decision: "approve".into(),
                reason: Some("let me".into()),
                break_glass: false,
                own_request: true,
                event: event(51, None),
                detail: Some("it is their own request".into()),
            }],
        },
        access: AccessChanges {
            grants: Capped {
                total: 1,
                items: vec![GrantChange {
                    grant: "gr-1".into(),
                    holder: agent.clone(),
                    target: "billing-db".into(),
                    scope: Some("tables: public.invoices".into()),
                    state: "expired".into(),
                    events: vec![event(70, None), event(71, None), event(90, None)],
                    uses: 4,
                }],
            },
            api_keys_first_used: Capped {
                total: 1,
                items: vec![FirstUse {
                    identity: agent.clone(),
                    event: event(21, Some("sess-1")),
                }],
            },
            policy_versions: vec![PolicyVersion {
                version: "3f2a9c".into(),
                first_seen: event(20, None),
                last_seen: "2026-12-01T11:00:00.000Z".into(),
                events: 99,
            }],
            gateway_starts: Capped {
                total: 1,
                items: vec![event(20, None)],
            },
            pins_accepted: Capped {
                total: 1,
                items: vec![PinChange {
                    target: "billing".into(),
                    tool: "refund".into(),
                    by: Some("ops".into()),
                    event: event(80, None),
                }],
            },
            pins_withheld: Capped::default(),
        },
        auth_failures: AuthFailures {
            total: 3,
            by_source: vec![Count {
                name: "127.0.0.1".into(),
                count: 3,
            }],
            by_kind: vec![
                Count {
                    name: "api-key".into(),
                    count: 2,
                },
                Count {
                    name: "none".into(),
                    count: 1,
                },
            ],
            samples: vec![event(22, None)],
        },
        refusals_by_rule: vec![RuleRefusals {
            rule: "agents never delete".into(),
            count: 5,
            identities: vec![agent.clone()],
            samples: vec![event(45, Some("sess-2"))],
        }],
        masking: vec![MaskingCount {
            identity: agent.clone(),
            detector: "email".into(),
            values: 12,
            answers: 4,
        }],
        anomalies: vec![Anomaly {
            kind: "new-tool".into(),
            identity: agent.clone(),
            rule: "a tool the identity did not call in the baseline window".into(),
            detail: format!("first call of refund {tricky}"),
            samples: vec![event(50, Some("sess-1"))],
        }],
        reviews: vec![Review {
            reviewer: human.clone(),
            reason: Some("weekly review".into()),
            sha256: "ab".repeat(32),
            reviewed_period: Some(Period::parse("2026-11-24", "2026-12-01").expect("valid")),
            event: event(95, None),
        }],
        documents: vec![DocumentWritten {
            document: "report".into(),
            format: "html".into(),
            sha256: "cd".repeat(32),
            file: Some("report-2026-11-30.html".into()),
            event: event(96, None),
        }],
        logs: Vec::new(),
    }
}

/// [`sample_report`] as a report over two logs (two replicas): the same events, split
/// between them (the identity's first event and the privileged action in the first, the
/// holds in the second, at the same seqs), with each log's share and verification.
pub fn sample_report_of_two_logs() -> Report {
    let mut report = sample_report();
    let (a, b) = (
        "portcullis/gw-a".to_string(),
        "portcullis/<gw-b>".to_string(),
    );
    for identity in &mut report.identities {
        identity.first_event.log = Some(a.clone());
    }
    for action in &mut report.privileged.items {
        action.event.log = Some(a.clone());
    }
    for hold in &mut report.holds.items {
        hold.requested.log = Some(b.clone());
        for decision in &mut hold.decisions {
            decision.event.log = Some(b.clone());
        }
    }
    for control in &mut report.controls {
        for sample in &mut control.samples {
            sample.log = Some(a.clone());
        }
    }
    let mut second = report.integrity.clone();
    second.origin = Some(b.clone());
    second.checked_with.key = "portcullis.example/gw-b+0e0f1011".into();
    report.integrity.origin = None;
    report.logs = vec![
        LogReport {
            origin: a.clone(),
            gateways: vec!["gw-a".into()],
            events: 60,
            requests: 40,
            integrity: Integrity {
                origin: Some(a),
                ..report.integrity.clone()
            },
        },
        LogReport {
            origin: b,
            gateways: vec!["gw-b".into()],
            events: 40,
            requests: 20,
            integrity: second,
        },
    ];
    report
}
