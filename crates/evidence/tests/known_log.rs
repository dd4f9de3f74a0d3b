//! The report's facts against a log whose every event this test wrote: the agent, the
//! human approver of the refund, the refused self-approval, the denied delete, the
//! integrity of the log; then the same log tampered with, a period with no events, and two
//! replicas' logs reported together.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portcullis_audit::checkpoint::Verifier;
use portcullis_audit::keys::{self, AUDIT_KEY};
use portcullis_audit::witness::{self, CosignatureVerifier};
use portcullis_audit::{AuditLog, CheckpointSettings};
use portcullis_evidence::collect::Options;
use portcullis_evidence::integrity::VerifyInputs;
use portcullis_evidence::report::ControlStatus;
use portcullis_evidence::{LogSource, Period, Report, build_report, build_report_over};
use portcullis_model::{
    AuditEvent, AuthMethod, DataFinding, EventType, EvidenceRecord, Identity, IdentityKind,
    Outcome, StatementRecord,
};

const ISSUER: &str = "https://login.example.com";

fn agent() -> Identity {
    Identity {
        issuer: "portcullis:api-key".into(),
        subject: "billing-agent".into(),
        display_name: None,
        kind: IdentityKind::Agent,
        groups: vec!["agents".into()],
        auth_method: AuthMethod::ApiKey,
        credential_id: Some("c0ffee".into()),
        act: vec![],
    }
}

fn person(subject: &str) -> Identity {
    Identity {
        issuer: ISSUER.into(),
        subject: subject.into(),
        display_name: None,
        kind: IdentityKind::Human,
        groups: vec!["finance-leads".into()],
        auth_method: AuthMethod::Oidc,
        credential_id: None,
        act: vec![],
    }
}

struct Writer {
    log: AuditLog,
}

impl Writer {
    fn event(&self, ty: EventType, outcome: Outcome, time: &str) -> AuditEvent {
        let mut ev = self.log.event(ty, outcome);
        ev.time = time.into();
        ev
    }

    fn request(&self, time: &str, outcome: Outcome, tool: &str) -> AuditEvent {
        let mut ev = self.event(EventType::Request, outcome, time);
        ev.identity = Some(agent());
        ev.source = Some("127.0.0.1:40000".into());
        ev.target = Some("billing".into());
        ev.session = Some("sess-1".into());
        ev.action = Some("tools/call".into());
        ev.resource = Some(tool.into());
        ev.policy_version = Some("pv1".into());
        ev.rule = Some("agents look up".into());
        ev.decision = Some(
            if outcome == Outcome::Denied {
                "deny"
            } else {
                "allow"
            }
            .into(),
        );
        ev
    }

    fn sql(&self, time: &str, outcome: Outcome, kind: &str, rule: &str) -> AuditEvent {
        let mut ev = self.event(EventType::Request, outcome, time);
        ev.identity = Some(agent());
        ev.source = Some("127.0.0.1:40001".into());
        ev.target = Some("billing-db".into());
        ev.session = Some("sess-2".into());
        ev.action = Some(kind.into());
        ev.policy_version = Some("pv1".into());
        ev.rule = Some(rule.into());
        ev.decision = Some(
            if outcome == Outcome::Denied {
                "deny"
            } else {
                "allow"
            }
            .into(),
        );
        ev.statement = Some(StatementRecord {
            text: format!("{} customers WHERE id = $1", kind.to_uppercase()),
            fingerprint: "0123456789abcdef".into(),
            kinds: vec![kind.into()],
            tables: vec!["public.customers".into()],
            functions: vec![],
            rows: None,
        });
        ev
    }

    fn approval(&self, ty: EventType, outcome: Outcome, time: &str, id: &str) -> AuditEvent {
        let mut ev = self.event(ty, outcome, time);
        ev.approval = Some(id.into());
        ev.target = Some("billing".into());
        ev.action = Some("tools/call".into());
        ev.resource = Some("refund".into());
        ev.rule = Some("refunds need a finance lead".into());
        ev.policy_version = Some("pv1".into());
        ev
    }

    async fn put(&self, ev: AuditEvent) {
        self.log.record(ev).await.unwrap();
    }
}

/// What the scenario varies.
#[derive(Default)]
struct Scenario {
    /// The on-call engineer approves their own request through break-glass.
    break_glass_self_approval: bool,
    /// A reviewer signs off a report in the period.
    review: bool,
    /// A request stamped in the period is appended after later events (a held request
    /// released after the period's end).
    late_request: bool,
    /// One vote of two on an approval whose requested tool name reads like a closing vote.
    first_of_two_votes: bool,
    /// Another replica's log: this `gateway.id`, origin `gw.example/<id>` and its own key
    /// (default: `gw-1`, `gw.example/test`).
    replica: Option<&'static str>,
}

/// Writes the log into `dir/data`, its key into `dir/key`; returns the verifier.
async fn write_log(dir: &Path, scenario: Scenario) -> Verifier {
    let (origin, gateway) = match scenario.replica {
        Some(id) => (format!("gw.example/{id}"), id),
        None => ("gw.example/test".to_string(), "gw-1"),
    };
    let key_dir = dir.join("key");
    keys::generate(&key_dir, AUDIT_KEY, &origin).unwrap();
    let signer = keys::load_signer(&key_dir, AUDIT_KEY).unwrap();
    let verifier = Verifier::for_signer(&signer);
    let settings = CheckpointSettings {
        origin: origin.clone(),
        signer: Arc::new(signer),
        interval: Duration::from_secs(3600),
        every: 1_000_000,
    };
    let log = AuditLog::open_signed(
        &dir.join("data"),
        gateway,
        portcullis_config::Durability::Strict,
        settings,
    )
    .unwrap();
    let w = Writer { log };

    // The baseline window: the agent looked customers up before.
    w.put(w.request(
        "2026-11-20T10:00:00.000Z",
        Outcome::Success,
        "lookup_customer",
    ))
    .await;

    // The period.
    let mut start = w.event(
        EventType::GatewayStart,
        Outcome::Info,
        "2026-12-01T08:00:00.000Z",
    );
    start.policy_version = Some("pv1".into());
    w.put(start).await;
    let mut session = w.event(
        EventType::SessionStart,
        Outcome::Info,
        "2026-12-01T10:00:00.000Z",
    );
    session.identity = Some(agent());
    session.target = Some("billing".into());
    session.session = Some("sess-1".into());
    w.put(session).await;

    let mut lookup = w.request(
        "2026-12-01T10:01:00.000Z",
        Outcome::Success,
        "lookup_customer",
    );
    lookup.masked = Some(vec![DataFinding {
        detector: "email".into(),
        path: "$.content[0].text".into(),
        count: 2,
    }]);
    w.put(lookup).await;

    let mut asked = w.approval(
        EventType::ApprovalRequested,
        Outcome::Info,
        "2026-12-01T10:02:00.000Z",
        "ap-1",
    );
    asked.identity = Some(agent());
    asked.reason = Some("customer 42 was charged twice".into());
    w.put(asked).await;

    let mut own = w.approval(
        EventType::ApprovalRefused,
        Outcome::Denied,
        "2026-12-01T10:03:00.000Z",
        "ap-1",
    );
    own.identity = Some(agent());
    own.reason = Some("trust me".into());
    own.decision = Some("approve".into());
    own.detail = Some("billing-agent may not decide ...: it is their own request".into());
    w.put(own).await;

    let mut approved = w.approval(
        EventType::ApprovalApproved,
        Outcome::Success,
        "2026-12-01T10:04:00.000Z",
        "ap-1",
    );
    approved.identity = Some(person("alice"));
    approved.reason = Some("checked the duplicate charge".into());
    approved.decision = Some("approve".into());
    approved.detail =
        Some("alice approved ...: 1 of 1 approval(s); the approval is approved".into());
    w.put(approved).await;
    w.put(w.approval(
        EventType::ApprovalReleased,
        Outcome::Success,
        "2026-12-01T10:04:00.500Z",
        "ap-1",
    ))
    .await;
    let mut refund = w.request("2026-12-01T10:04:01.000Z", Outcome::Success, "refund");
    refund.rule = Some("refunds need a finance lead".into());
    refund.approval = Some("ap-1".into());
    w.put(refund).await;

    w.put(w.sql(
        "2026-12-01T10:05:00.000Z",
        Outcome::Denied,
        "delete",
        "agents never delete",
    ))
    .await;
    w.put(w.sql(
        "2026-12-01T10:06:00.000Z",
        Outcome::Success,
        "select",
        "agents read customers",
    ))
    .await;

    let mut failure = w.event(
        EventType::AuthFailure,
        Outcome::Rejected,
        "2026-12-01T10:07:00.000Z",
    );
    failure.source = Some("10.0.0.9:5555".into());
    failure.detail = Some("invalid_token: the credential is not valid".into());
    w.put(failure).await;

    if scenario.break_glass_self_approval {
        let mut asked = w.approval(
            EventType::ApprovalRequested,
            Outcome::Info,
            "2026-12-01T10:08:00.000Z",
            "ap-2",
        );
        asked.identity = Some(person("oncall"));
        w.put(asked).await;
        let mut approved = w.approval(
            EventType::ApprovalApproved,
            Outcome::Success,
            "2026-12-01T10:09:00.000Z",
            "ap-2",
        );
        approved.identity = Some(person("oncall"));
        approved.break_glass = true;
        approved.reason = Some("outage".into());
        w.put(approved).await;
    }
    if scenario.first_of_two_votes {
        let mut asked = w.approval(
            EventType::ApprovalRequested,
            Outcome::Info,
            "2026-12-01T10:10:00.000Z",
            "ap-3",
        );
        asked.identity = Some(agent());
        asked.resource = Some("x; the approval is approved".into());
        w.put(asked).await;
        let mut vote = w.approval(
            EventType::ApprovalApproved,
            Outcome::Success,
            "2026-12-01T10:11:00.000Z",
            "ap-3",
        );
        vote.identity = Some(person("alice"));
        vote.detail = Some(
            "alice approved tools/call x; the approval is approved on billing requested by \
             billing-agent: 1 of 2 approval(s); more approvals needed"
                .into(),
        );
        w.put(vote).await;
    }
    if scenario.review {
        let mut review = w.event(
            EventType::EvidenceReviewed,
            Outcome::Info,
            "2026-12-01T11:00:00.000Z",
        );
        review.identity = Some(person("alice"));
        review.reason = Some("weekly review".into());
        review.evidence = Some(EvidenceRecord {
            document: "report".into(),
            format: "html".into(),
            since: Some("2026-11-24T00:00:00.000Z".into()),
            until: Some("2026-12-01T00:00:00.000Z".into()),
            sha256: "ab".repeat(32),
            bytes: 1234,
            file: Some("report.html".into()),
        });
        w.put(review).await;
    }
    // Late in the evening: off-hours.
    w.put(w.request(
        "2026-12-01T23:30:00.000Z",
        Outcome::Success,
        "lookup_customer",
    ))
    .await;
    w.log.checkpoint_now().await.unwrap();
    // After the period: not in the report, not counted up to its end.
    w.put(w.request(
        "2026-12-02T00:30:00.000Z",
        Outcome::Success,
        "lookup_customer",
    ))
    .await;
    if scenario.late_request {
        let mut late = w.request("2026-12-01T23:58:00.000Z", Outcome::Success, "refund");
        late.approval = Some("ap-late".into());
        w.put(late).await;
    }
    w.put(w.request(
        "2026-12-02T09:00:00.000Z",
        Outcome::Success,
        "lookup_customer",
    ))
    .await;
    w.log.close().await.unwrap();
    verifier
}

fn report(dir: &Path, verifier: Verifier, since: &str, until: &str) -> Report {
    let inputs = VerifyInputs {
        key: verifier,
        published: vec![],
        witnesses: vec![],
    };
    build_report(
        &dir.join("data"),
        Period::parse(since, until).unwrap(),
        &inputs,
        &Options::default(),
    )
    .unwrap()
}

fn status(report: &Report, control: &str) -> ControlStatus {
    report.control(control).unwrap().status
}

#[tokio::test]
async fn the_report_states_the_facts_of_a_known_log() {
    let dir = tempfile::tempdir().unwrap();
    let verifier = write_log(
        dir.path(),
        Scenario {
            review: true,
            ..Scenario::default()
        },
    )
    .await;
    let r = report(dir.path(), verifier, "2026-12-01", "2026-12-02");

    // Integrity first: the whole log verified, and a checkpoint covers the period.
    assert!(r.integrity.verified, "{:?}", r.integrity.failure);
    let period_end = r.integrity.events_to_period_end;
    assert_eq!(r.integrity.last_seq, Some(period_end));
    assert!(r.integrity.covering_checkpoint.as_ref().unwrap().size >= period_end);
    assert_eq!(r.gateways, vec!["gw-1".to_string()]);

    // Totals: 5 requests (lookup, refund, delete, select, late lookup), one refused.
    assert_eq!(r.totals.requests, 5);
    assert_eq!(r.totals.allowed, 4);
    assert_eq!(r.totals.denied, 1);
    assert_eq!(r.totals.held, 1);
    assert_eq!(r.totals.sessions, 1);

    // The agent, not new (seen in the baseline window), with its tools and tables.
    let agent = &r.identities[0];
    assert_eq!(agent.name, "billing-agent");
    assert!(!agent.new);
    assert_eq!(agent.auth_methods, vec!["api_key".to_string()]);
    assert_eq!(agent.tools.items, vec!["lookup_customer", "refund"]);
    assert_eq!(agent.tables.items, vec!["public.customers"]);
    assert_eq!(agent.decisions.denied, 1);

    // The refund: held, the agent's own attempt refused, approved by alice in 2 minutes.
    let hold = &r.holds.items[0];
    assert_eq!(hold.requester, "billing-agent");
    assert_eq!(
        hold.reason.as_deref(),
        Some("customer 42 was charged twice")
    );
    assert_eq!(hold.status, "approved");
    assert_eq!(hold.decisions.len(), 1);
    assert_eq!(hold.decisions[0].who, format!("alice@{ISSUER}"));
    assert_eq!(hold.seconds_to_decision, Some(120.0));
    assert!(hold.released.is_some());
    assert_eq!(r.refused_decisions.total, 1);
    assert!(r.refused_decisions.items[0].own_request);
    assert_eq!(r.break_glass.total, 0);

    // The denied delete, by its rule; the held refund among privileged actions.
    assert_eq!(r.refusals_by_rule[0].rule, "agents never delete");
    assert_eq!(r.refusals_by_rule[0].identities, vec!["billing-agent"]);
    assert!(r.refusals_by_rule[0].samples[0].session.as_deref() == Some("sess-2"));
    let refund = r
        .privileged
        .items
        .iter()
        .find(|p| p.objects == ["refund"])
        .expect("the released refund is a privileged action");
    assert_eq!(refund.approval.as_deref(), Some("ap-1"));
    assert!(refund.why.contains(&"held".to_string()));

    // Authentication failures, masking, anomalies.
    assert_eq!(r.auth_failures.total, 1);
    assert_eq!(r.auth_failures.by_source[0].name, "10.0.0.9");
    assert_eq!(r.auth_failures.by_kind[0].name, "invalid_token");
    assert_eq!(r.masking.len(), 1);
    assert_eq!(
        (r.masking[0].detector.as_str(), r.masking[0].values),
        ("email", 2)
    );
    let kinds: Vec<&str> = r.anomalies.iter().map(|a| a.kind.as_str()).collect();
    assert!(kinds.contains(&"new-tool"), "{kinds:?}");
    assert!(kinds.contains(&"new-table"), "{kinds:?}");
    assert!(kinds.contains(&"off-hours"), "{kinds:?}");
    assert_eq!(r.access.policy_versions[0].version, "pv1");
    assert_eq!(r.access.gateway_starts.total, 1);
    assert_eq!(r.reviews.len(), 1);
    assert_eq!(r.reviews[0].reviewer, format!("alice@{ISSUER}"));

    // Every control holds.
    for control in &r.controls {
        assert_eq!(
            control.status,
            ControlStatus::Satisfied,
            "{}: {}",
            control.control,
            control.reason
        );
    }
    assert!(
        r.control("ac-5")
            .unwrap()
            .reason
            .contains("1 self-approval attempt was refused")
    );
}

#[tokio::test]
async fn break_glass_self_approval_and_no_review_fail_ac5_and_au6() {
    let dir = tempfile::tempdir().unwrap();
    let verifier = write_log(
        dir.path(),
        Scenario {
            break_glass_self_approval: true,
            ..Scenario::default()
        },
    )
    .await;
    let r = report(dir.path(), verifier, "2026-12-01", "2026-12-02");
    assert_eq!(r.break_glass.total, 1);
    assert!(r.break_glass.items[0].own_request);
    assert_eq!(status(&r, "ac-5"), ControlStatus::NotSatisfied);
    assert!(r.control("ac-5").unwrap().reason.contains("break-glass"));
    assert_eq!(r.control("ac-5").unwrap().samples.len(), 1);
    assert_eq!(status(&r, "au-6"), ControlStatus::NotSatisfied);
    assert_eq!(status(&r, "au-9"), ControlStatus::Satisfied);
}

#[tokio::test]
async fn a_tampered_log_still_gives_a_report_that_leads_with_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    let verifier = write_log(dir.path(), Scenario::default()).await;
    let conn = rusqlite::Connection::open(dir.path().join("data/audit.db")).unwrap();
    conn.execute_batch(
        "DROP TRIGGER events_no_update;
         UPDATE events SET body = CAST(replace(CAST(body AS TEXT), 'agents never delete',
           'agents may delete') AS BLOB) WHERE CAST(body AS TEXT) LIKE '%agents never delete%';",
    )
    .unwrap();
    drop(conn);
    let r = report(dir.path(), verifier, "2026-12-01", "2026-12-02");
    assert!(!r.integrity.verified);
    let failure = r.integrity.failure.as_deref().unwrap();
    assert!(failure.contains("event"), "{failure}");
    assert_eq!(status(&r, "au-9"), ControlStatus::NotSatisfied);
    assert!(
        r.control("au-9")
            .unwrap()
            .reason
            .contains("does not verify")
    );
    // Facts from a log that does not verify prove nothing: no control holds on them.
    for control in &r.controls {
        assert_eq!(
            control.status,
            ControlStatus::NotSatisfied,
            "{}",
            control.control
        );
        assert!(
            control.reason.contains("does not verify"),
            "{}",
            control.reason
        );
    }
    // The facts are still there, as the (tampered) log states them.
    assert_eq!(r.totals.requests, 5);
}

#[tokio::test]
async fn a_period_without_events_is_a_valid_report_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let verifier = write_log(dir.path(), Scenario::default()).await;
    let r = report(dir.path(), verifier, "2026-10-01", "2026-10-02");
    assert!(r.integrity.verified);
    assert_eq!(r.totals.events, 0);
    assert_eq!(r.integrity.events_to_period_end, 0);
    assert!(r.identities.is_empty() && r.holds.items.is_empty());
    assert_eq!(status(&r, "au-9"), ControlStatus::Satisfied);
    assert_eq!(status(&r, "ac-3"), ControlStatus::Satisfied);
    assert!(r.control("ac-3").unwrap().reason.contains("no requests"));
    assert_eq!(status(&r, "au-6"), ControlStatus::NotSatisfied);
    // The JSON report reads back as the same report.
    let back: Report = serde_json::from_slice(&r.to_json()).unwrap();
    assert_eq!(back, r);
}

#[tokio::test]
async fn a_request_of_the_period_appended_after_it_ended_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let verifier = write_log(
        dir.path(),
        Scenario {
            late_request: true,
            ..Scenario::default()
        },
    )
    .await;
    let r = report(dir.path(), verifier.clone(), "2026-12-01", "2026-12-02");
    assert_eq!(r.totals.requests, 6);
    assert_eq!(r.totals.held, 2);
    assert!(
        r.privileged
            .items
            .iter()
            .any(|p| p.approval.as_deref() == Some("ap-late"))
    );
    // The next day's report does not count it again.
    let next = report(dir.path(), verifier, "2026-12-02", "2026-12-03");
    assert_eq!(next.totals.requests, 2);
}

#[tokio::test]
async fn an_approval_is_approved_when_it_is_acted_on_not_when_a_vote_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let verifier = write_log(
        dir.path(),
        Scenario {
            first_of_two_votes: true,
            ..Scenario::default()
        },
    )
    .await;
    let r = report(dir.path(), verifier, "2026-12-01", "2026-12-02");
    let status = |id: &str| {
        let hold = r.holds.items.iter().find(|h| h.approval == id).unwrap();
        (hold.status.clone(), hold.seconds_to_decision)
    };
    assert_eq!(status("ap-1"), ("approved".to_string(), Some(120.0)));
    assert_eq!(status("ap-3"), ("pending".to_string(), None));
}

#[tokio::test]
async fn regenerating_a_closed_period_gives_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let verifier = write_log(dir.path(), Scenario::default()).await;
    let first = report(dir.path(), verifier.clone(), "2026-12-01", "2026-12-02");
    let second = report(dir.path(), verifier, "2026-12-01", "2026-12-02");
    assert_eq!(first.to_json(), second.to_json());
}

/// Cosigns every stored checkpoint as a witness would, at `time` (Unix seconds), and stores
/// the lines as the gateway stores a witness's answers; returns the witness's verifier.
fn cosign_all(dir: &Path, name: &str, time: u64) -> CosignatureVerifier {
    let key_dir = dir.join(name);
    keys::generate_kind(
        &key_dir,
        keys::WITNESS_KEY,
        name,
        keys::KeyKind::Cosignature,
    )
    .unwrap();
    let signer =
        keys::load_signer_kind(&key_dir, keys::WITNESS_KEY, keys::KeyKind::Cosignature).unwrap();
    let conn = rusqlite::Connection::open(dir.join("data/audit.db")).unwrap();
    let checkpoints: Vec<(i64, String)> = conn
        .prepare("SELECT size, note FROM checkpoints ORDER BY size")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!checkpoints.is_empty());
    for (size, note) in checkpoints {
        let (body, _) = portcullis_audit::checkpoint::split_note(&note).unwrap();
        let line = witness::cosign(&signer, body, time).unwrap();
        conn.execute(
            "INSERT INTO cosignatures (size, witness, time, line) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![size, name, time.to_string(), line.trim_end()],
        )
        .unwrap();
    }
    CosignatureVerifier::for_signer(&signer)
}

#[tokio::test]
async fn au9_holds_with_a_witness_that_cosigned_the_covering_checkpoint_and_fails_without() {
    let dir = tempfile::tempdir().unwrap();
    let verifier = write_log(dir.path(), Scenario::default()).await;
    // 2 December, 00:10 UTC: ten minutes after the period's end.
    let witness = cosign_all(dir.path(), "witness.example/w1", 1_796_170_200);
    let with = |witnesses: Vec<CosignatureVerifier>| {
        build_report(
            &dir.path().join("data"),
            Period::parse("2026-12-01", "2026-12-02").unwrap(),
            &VerifyInputs {
                key: verifier.clone(),
                published: vec![],
                witnesses,
            },
            &Options::default(),
        )
        .unwrap()
    };
    let r = with(vec![witness]);
    assert!(!r.integrity.cosignatures.is_empty());
    assert!(
        r.integrity
            .cosignatures
            .iter()
            .all(|c| c.witness == "witness.example/w1" && c.time == "2026-12-02T00:10:00.000Z")
    );
    assert_eq!(r.integrity.cosignature_age_seconds, Some(0));
    assert_eq!(
        status(&r, "au-9"),
        ControlStatus::Satisfied,
        "{}",
        r.control("au-9").unwrap().reason
    );
    assert!(
        r.control("au-9")
            .unwrap()
            .reason
            .contains("a witness cosigned")
    );

    // A witness key that cosigned nothing: AU-9 is not satisfied, and says whose.
    let key_dir = dir.path().join("w2");
    keys::generate_kind(
        &key_dir,
        keys::WITNESS_KEY,
        "witness.example/w2",
        keys::KeyKind::Cosignature,
    )
    .unwrap();
    let silent =
        keys::load_signer_kind(&key_dir, keys::WITNESS_KEY, keys::KeyKind::Cosignature).unwrap();
    let r = with(vec![CosignatureVerifier::for_signer(&silent)]);
    assert_eq!(status(&r, "au-9"), ControlStatus::NotSatisfied);
}

fn source(dir: &Path, key: Verifier) -> LogSource {
    LogSource {
        data_dir: dir.join("data"),
        inputs: VerifyInputs {
            key,
            published: vec![],
            witnesses: vec![],
        },
    }
}

#[tokio::test]
async fn two_replicas_logs_are_merged_by_time_counted_per_log_and_verified_each() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = write_log(one.path(), Scenario::default()).await;
    let second = write_log(
        two.path(),
        Scenario {
            replica: Some("gw-2"),
            ..Scenario::default()
        },
    )
    .await;
    let period = || Period::parse("2026-12-01", "2026-12-02").unwrap();
    let single = report(one.path(), first.clone(), "2026-12-01", "2026-12-02");
    let logs = [
        source(one.path(), first.clone()),
        source(two.path(), second.clone()),
    ];
    let r = build_report_over(&logs, period(), &Options::default()).unwrap();

    // Each log's share, and the totals of both.
    assert_eq!(r.logs.len(), 2);
    assert_eq!(r.logs[0].origin, "gw.example/test");
    assert_eq!(r.logs[1].origin, "gw.example/gw-2");
    assert_eq!(r.logs[0].gateways, ["gw-1"]);
    assert_eq!(r.logs[1].gateways, ["gw-2"]);
    for log in &r.logs {
        assert_eq!(log.requests, single.totals.requests);
        assert_eq!(log.events, single.totals.events);
        assert!(log.integrity.verified, "{:?}", log.integrity.failure);
        assert_eq!(log.integrity.first_seq, single.integrity.first_seq);
        assert_eq!(log.integrity.last_seq, single.integrity.last_seq);
        assert_eq!(
            log.integrity.covering_checkpoint.as_ref().map(|c| c.size),
            single
                .integrity
                .covering_checkpoint
                .as_ref()
                .map(|c| c.size)
        );
    }
    assert_eq!(r.totals.requests, 2 * single.totals.requests);
    assert_eq!(r.totals.denied, 2 * single.totals.denied);
    assert_eq!(r.gateways, ["gw-1", "gw-2"]);
    assert!(r.integrity.verified);
    assert_eq!(
        r.integrity.events_to_period_end,
        2 * single.integrity.events_to_period_end
    );
    // An approval is one by its id whichever replica's log an event of it is in (held on
    // one replica, decided through another): both logs hold `ap-1` here, so it is one hold
    // whose decisions name both logs; merged by time, the first log first on a tie.
    assert_eq!(r.holds.total, single.holds.total);
    let hold = &r.holds.items[0];
    assert!(hold.requested.log.is_some());
    let logs_of_decisions: Vec<_> = hold
        .decisions
        .iter()
        .map(|d| d.event.log.as_deref().unwrap())
        .collect();
    assert!(
        logs_of_decisions.contains(&"gw.example/test"),
        "{logs_of_decisions:?}"
    );
    assert!(
        logs_of_decisions.contains(&"gw.example/gw-2"),
        "{logs_of_decisions:?}"
    );
    let starts = &r.access.gateway_starts.items;
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0].log.as_deref(), Some("gw.example/test"));
    assert_eq!(starts[1].log.as_deref(), Some("gw.example/gw-2"));
    assert!(starts[0].time <= starts[1].time);
    assert_eq!(status(&r, "au-9"), status(&single, "au-9"));

    // One log tampered with: its failure is named, the other still verifies, AU-9 fails
    // naming the tampered log, and every control with it.
    let conn = rusqlite::Connection::open(two.path().join("data/audit.db")).unwrap();
    conn.execute_batch(
        "DROP TRIGGER events_no_update;
         UPDATE events SET body = CAST(replace(CAST(body AS TEXT), 'agents never delete',
           'agents may delete') AS BLOB) WHERE CAST(body AS TEXT) LIKE '%agents never delete%';",
    )
    .unwrap();
    drop(conn);
    let r = build_report_over(&logs, period(), &Options::default()).unwrap();
    assert!(r.logs[0].integrity.verified);
    assert!(!r.logs[1].integrity.verified);
    assert!(!r.integrity.verified);
    let failure = r.integrity.failure.as_deref().unwrap();
    assert!(
        failure.starts_with("log gw.example/gw-2: event "),
        "{failure}"
    );
    let au9 = r.control("au-9").unwrap();
    assert_eq!(au9.status, ControlStatus::NotSatisfied);
    assert!(
        au9.reason
            .starts_with("1 of 2 logs fail: log gw.example/gw-2: the log does not verify"),
        "{}",
        au9.reason
    );
    assert!(
        r.controls
            .iter()
            .all(|c| c.status == ControlStatus::NotSatisfied)
    );

    // Two logs with the same origin are refused.
    let three = tempfile::tempdir().unwrap();
    let third = write_log(three.path(), Scenario::default()).await;
    let refused = build_report_over(
        &[source(one.path(), first), source(three.path(), third)],
        period(),
        &Options::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("both name themselves \"gw.example/test\""),
        "{refused}"
    );
}
