//! The approval workflow against a real SQLite store and a real audit log in a temporary
//! directory: decisions, separation of duties, races, expiry, restarts, grants.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portcullis_audit::{AuditLog, AuditReader};
use portcullis_config::{Config, Durability};
use portcullis_model::{ApprovalRequirement, AuthMethod, Identity, IdentityKind, McpKind};

use super::*;

fn person(subject: &str, groups: &[&str]) -> Identity {
    Identity {
        issuer: "portcullis:api-key".into(),
        subject: subject.into(),
        display_name: None,
        kind: IdentityKind::Human,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        auth_method: AuthMethod::ApiKey,
        credential_id: None,
        act: Vec::new(),
    }
}

fn agent() -> Identity {
    let mut id = person("billing-agent", &["agents", "finance-leads"]);
    id.kind = IdentityKind::Agent;
    id
}

fn settings(extra: &str) -> ApprovalSettings {
    let config = Config::parse(Path::new("/tmp/t.toml"), extra.to_string()).unwrap();
    ApprovalSettings {
        admin_url: config.admin_url(),
        console_url: config.console_url(),
        approvals: config.approvals,
    }
}

fn requirement(min: u32, timeout: Duration) -> Arc<ApprovalRequirement> {
    Arc::new(ApprovalRequirement {
        approvers: vec!["finance-leads".into()],
        min_approvals: min,
        timeout,
        require_reason: false,
        max_grant: Duration::from_secs(3600),
    })
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    audit: AuditLog,
    approvals: Approvals,
}

async fn fixture(extra: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let audit = AuditLog::open(&dir, "test", Durability::Strict).unwrap();
    let approvals = Approvals::open(&dir, audit.clone(), &settings(extra), None)
        .await
        .unwrap();
    Fixture {
        _dir: tmp,
        dir,
        audit,
        approvals,
    }
}

fn hold_request(requirement: Arc<ApprovalRequirement>) -> HoldRequest {
    HoldRequest {
        requester: agent(),
        source: Some("127.0.0.1:1".into()),
        target: "billing".into(),
        action: "tools/call".into(),
        resource: Some("refund_payment".into()),
        arguments: Some(serde_json::json!({"customer": "cus_1", "amount": 25})),
        arguments_digest: Some(PayloadDigest::of(b"{}")),
        reason: Some("customer called".into()),
        rule: "refunds need a finance lead".into(),
        policy_version: "v1".into(),
        requirement,
        request_event: "ev-1".into(),
    }
}

/// Event types in the log, in order.
fn types(dir: &Path) -> Vec<String> {
    let reader = AuditReader::open(dir).unwrap();
    reader
        .last(1000)
        .unwrap()
        .into_iter()
        .map(|(_, body)| {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["type"].as_str().unwrap().to_string()
        })
        .collect()
}

fn events(dir: &Path, ty: &str) -> Vec<serde_json::Value> {
    let reader = AuditReader::open(dir).unwrap();
    reader
        .last(1000)
        .unwrap()
        .into_iter()
        .map(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).unwrap())
        .filter(|v| v["type"] == ty)
        .collect()
}

#[tokio::test]
async fn approved_hold_is_released_with_its_trail() {
    let f = fixture("").await;
    let mut held = f
        .approvals
        .hold(hold_request(requirement(1, Duration::from_secs(60))))
        .await
        .unwrap();
    let dana = person("dana", &["finance-leads"]);
    let digest = held.approval.digest.clone();
    let id = held.id().to_string();
    let waiter = tokio::spawn(async move {
        let outcome = held.outcome().await;
        held.released("ev-1").await.unwrap();
        // An approval lets the request through once: a second release is refused.
        let again = held.released("ev-2").await.unwrap_err();
        assert_eq!(again.code(), "already_forwarded", "{again}");
        outcome
    });
    let decided = f
        .approvals
        .decide(&dana, &id, true, "refund agreed with the customer", &digest)
        .await
        .unwrap();
    assert_eq!(decided.status, Status::Approved);
    let outcome = waiter.await.unwrap();
    assert_eq!(outcome.status, Status::Approved);
    assert_eq!(outcome.votes[0].approver.subject, "dana");
    f.audit.close().await.unwrap();
    assert_eq!(
        types(&f.dir),
        [
            "approval.requested",
            "approval.approved",
            "approval.released"
        ]
    );
    let requested = &events(&f.dir, "approval.requested")[0];
    assert_eq!(requested["reason"], "customer called");
    assert_eq!(requested["identity"]["subject"], "billing-agent");
    assert_eq!(requested["approval"], id.as_str());
    let approved = &events(&f.dir, "approval.approved")[0];
    assert_eq!(approved["identity"]["subject"], "dana");
    assert_eq!(approved["reason"], "refund agreed with the customer");
    assert!(approved.get("break_glass").is_none());
}

#[tokio::test]
async fn the_requester_never_approves_their_own_request() {
    let f = fixture("").await;
    let held = f
        .approvals
        .hold(hold_request(requirement(1, Duration::from_secs(60))))
        .await
        .unwrap();
    // The agent is in finance-leads too: still refused.
    let err = f
        .approvals
        .decide(&agent(), held.id(), true, "mine", &held.approval.digest)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "self_approval", "{err}");
    assert!(err.to_string().contains("separation of duties"), "{err}");
    let outsider = person("eve", &["engineering"]);
    let err = f
        .approvals
        .decide(&outsider, held.id(), true, "why not", &held.approval.digest)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_approver", "{err}");
    assert!(err.to_string().contains("finance-leads"), "{err}");
    // Neither refusal changed anything.
    let dana = person("dana", &["finance-leads"]);
    let a = f.approvals.get(&dana, held.id()).await.unwrap();
    assert_eq!(a.status, Status::Pending);
    assert!(a.votes.is_empty());
    // The outsider cannot see it either.
    assert_eq!(
        f.approvals
            .get(&outsider, held.id())
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );
    assert!(
        f.approvals
            .list(&outsider, false, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(f.approvals.list(&dana, true, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn two_approvers_at_once_one_wins() {
    let f = fixture("").await;
    let held = f
        .approvals
        .hold(hold_request(requirement(1, Duration::from_secs(60))))
        .await
        .unwrap();
    let (a, b) = (
        person("dana", &["finance-leads"]),
        person("omar", &["finance-leads"]),
    );
    let digest = held.approval.digest.clone();
    let (ra, rb) = tokio::join!(
        f.approvals.decide(&a, held.id(), true, "ok", &digest),
        f.approvals.decide(&b, held.id(), false, "no", &digest),
    );
    let (won, lost) = match (ra, rb) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        other => panic!("exactly one decision must win: {other:?}"),
    };
    assert_eq!(won.votes.len(), 1);
    assert_eq!(lost.code(), "already_decided", "{lost}");
    assert!(lost.to_string().contains("already"), "{lost}");
}

#[tokio::test]
async fn several_approvals_from_distinct_people() {
    let f = fixture("").await;
    let held = f
        .approvals
        .hold(hold_request(requirement(2, Duration::from_secs(60))))
        .await
        .unwrap();
    let digest = held.approval.digest.clone();
    let dana = person("dana", &["finance-leads"]);
    let first = f
        .approvals
        .decide(&dana, held.id(), true, "ok", &digest)
        .await
        .unwrap();
    assert_eq!(first.status, Status::Pending);
    let again = f
        .approvals
        .decide(&dana, held.id(), true, "ok again", &digest)
        .await
        .unwrap_err();
    assert_eq!(again.code(), "already_voted", "{again}");
    let omar = person("omar", &["finance-leads"]);
    let second = f
        .approvals
        .decide(&omar, held.id(), true, "ok", &digest)
        .await
        .unwrap();
    assert_eq!(second.status, Status::Approved);
    assert_eq!(second.approvals(), 2);
}

#[tokio::test]
async fn a_decision_for_another_request_is_refused() {
    let f = fixture("").await;
    let one = f
        .approvals
        .hold(hold_request(requirement(1, Duration::from_secs(60))))
        .await
        .unwrap();
    let two = f
        .approvals
        .hold(hold_request(requirement(1, Duration::from_secs(60))))
        .await
        .unwrap();
    assert_ne!(one.approval.digest, two.approval.digest);
    let dana = person("dana", &["finance-leads"]);
    // Replaying the decision made on `one` (its digest) against `two`.
    let err = f
        .approvals
        .decide(&dana, two.id(), true, "ok", &one.approval.digest)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "digest_mismatch", "{err}");
    assert_eq!(
        f.approvals.get(&dana, two.id()).await.unwrap().status,
        Status::Pending
    );
    let err = f
        .approvals
        .decide(&dana, "apr_00000000000000000000", true, "ok", "x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
    let err = f
        .approvals
        .decide(&dana, one.id(), true, "  ", &one.approval.digest)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid");
}

#[tokio::test]
async fn denial_and_expiry_end_the_hold() {
    let f = fixture("").await;
    let mut denied = f
        .approvals
        .hold(hold_request(requirement(1, Duration::from_secs(60))))
        .await
        .unwrap();
    let dana = person("dana", &["finance-leads"]);
    f.approvals
        .decide(
            &dana,
            denied.id(),
            false,
            "amount too high",
            &denied.approval.digest,
        )
        .await
        .unwrap();
    let outcome = denied.outcome().await;
    assert_eq!(outcome.status, Status::Denied);
    assert_eq!(outcome.votes[0].reason, "amount too high");

    let mut expiring = f
        .approvals
        .hold(hold_request(requirement(1, Duration::from_millis(300))))
        .await
        .unwrap();
    let id = expiring.id().to_string();
    let digest = expiring.approval.digest.clone();
    let outcome = expiring.outcome().await;
    assert_eq!(outcome.status, Status::Expired);
    assert!(outcome.closed_because.unwrap().contains("no decision"));
    let late = f
        .approvals
        .decide(&dana, &id, true, "too late", &digest)
        .await
        .unwrap_err();
    assert_eq!(late.code(), "already_decided", "{late}");
    assert!(late.to_string().contains("expired"), "{late}");
    f.audit.close().await.unwrap();
    assert_eq!(events(&f.dir, "approval.expired").len(), 1);
    assert_eq!(events(&f.dir, "approval.denied").len(), 1);
}

#[tokio::test]
async fn a_decision_on_an_expired_request_that_nobody_waited_for() {
    let f = fixture("").await;
    let held = f
        .approvals
        .hold(hold_request(requirement(1, Duration::from_millis(50))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let dana = person("dana", &["finance-leads"]);
    let err = f
        .approvals
        .decide(&dana, held.id(), true, "ok", &held.approval.digest)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "expired", "{err}");
    assert_eq!(
        f.approvals.get(&dana, held.id()).await.unwrap().status,
        Status::Expired
    );
}

#[tokio::test]
async fn break_glass_may_self_approve_and_is_flagged() {
    let f = fixture("[approvals]\nbreak_glass_groups = [\"incident\"]\n").await;
    let mut req = hold_request(requirement(2, Duration::from_secs(60)));
    req.requester = person("sam", &["incident"]);
    let mut held = f.approvals.hold(req).await.unwrap();
    let sam = person("sam", &["incident"]);
    let approved = f
        .approvals
        .decide(
            &sam,
            held.id(),
            true,
            "outage: refund queue stuck",
            &held.approval.digest,
        )
        .await
        .unwrap();
    // One break-glass approval is enough, whatever min_approvals says.
    assert_eq!(approved.status, Status::Approved);
    assert!(approved.votes[0].break_glass);
    assert_eq!(held.outcome().await.status, Status::Approved);
    f.audit.close().await.unwrap();
    let ev = &events(&f.dir, "approval.approved")[0];
    assert_eq!(ev["break_glass"], true);
    assert!(
        ev["detail"]
            .as_str()
            .unwrap()
            .contains("BREAK-GLASS self-approval"),
        "{ev}"
    );
}

#[tokio::test]
async fn a_required_reason_must_be_given() {
    let f = fixture("").await;
    let mut req = hold_request(Arc::new(ApprovalRequirement {
        require_reason: true,
        ..(*requirement(1, Duration::from_secs(60))).clone()
    }));
    req.reason = None;
    let err = match f.approvals.hold(req).await {
        Err(e) => e,
        Ok(_) => panic!("held without the required reason"),
    };
    assert_eq!(err.code(), "invalid");
    assert!(err.to_string().contains("dev.portcullis/reason"), "{err}");
}

#[tokio::test]
async fn a_restart_cancels_held_requests_and_keeps_grant_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (held_id, grant_id) = {
        let audit = AuditLog::open(dir, "test", Durability::Strict).unwrap();
        let approvals = Approvals::open(dir, audit.clone(), &settings(""), None)
            .await
            .unwrap();
        let held = approvals
            .hold(hold_request(requirement(1, Duration::from_secs(60))))
            .await
            .unwrap();
        let grant = approvals.request_grant(grant_request(1800)).await.unwrap();
        let id = held.id().to_string();
        // The process dies: nothing runs the held request's drop.
        std::mem::forget(held);
        audit.close().await.unwrap();
        (id, grant.id)
    };
    let audit = AuditLog::open(dir, "test", Durability::Strict).unwrap();
    let approvals = Approvals::open(dir, audit.clone(), &settings(""), None)
        .await
        .unwrap();
    let dana = person("dana", &["finance-leads"]);
    let held = approvals.get(&dana, &held_id).await.unwrap();
    assert_eq!(held.status, Status::Cancelled);
    assert!(held.closed_because.unwrap().contains("restarted"));
    assert_eq!(
        approvals.get(&dana, &grant_id).await.unwrap().status,
        Status::Pending
    );
    audit.close().await.unwrap();
    let cancelled = events(dir, "approval.cancelled");
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0]["approval"], held_id.as_str());
}

fn grant_request(secs: u64) -> GrantRequest {
    GrantRequest {
        requester: agent(),
        source: None,
        target: "billing".into(),
        spec: GrantSpec {
            tools: vec!["refund_*".into()],
            tables: Vec::new(),
            duration_secs: secs,
        },
        reason: "month-end refunds".into(),
        rule: "jit refunds".into(),
        policy_version: "v1".into(),
        requirement: requirement(1, Duration::from_secs(60)),
    }
}

#[tokio::test]
async fn grants_are_issued_used_revoked_and_expire() {
    let f = fixture("").await;
    assert!(f.approvals.active_grants(&agent(), "billing").is_empty());
    let asked = f
        .approvals
        .request_grant(grant_request(1800))
        .await
        .unwrap();
    assert_eq!(asked.kind, ApprovalKind::Grant);
    assert!(f.approvals.active_grants(&agent(), "billing").is_empty());
    let dana = person("dana", &["finance-leads"]);
    f.approvals
        .decide(&dana, &asked.id, true, "ok for today", &asked.digest)
        .await
        .unwrap();
    let active = f.approvals.active_grants(&agent(), "billing");
    assert_eq!(active.len(), 1);
    assert!(active[0].covers("billing", McpKind::Tool, Some("refund_payment")));
    assert!(f.approvals.active_grants(&agent(), "docs").is_empty());
    assert!(
        f.approvals
            .active_grants(&person("other", &[]), "billing")
            .is_empty()
    );

    // Someone unrelated may not revoke; the holder may.
    let err = f
        .approvals
        .revoke(&person("eve", &[]), &asked.id, "no")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
    let revoked = f
        .approvals
        .revoke(&agent(), &asked.id, "done early")
        .await
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(f.approvals.active_grants(&agent(), "billing").is_empty());
    let again = f
        .approvals
        .revoke(&agent(), &asked.id, "again")
        .await
        .unwrap_err();
    assert_eq!(again.code(), "grant_ended");

    // Out-of-bounds durations and patterns are refused before anyone is asked.
    for (secs, tools) in [(30, "refund_*"), (7200, "refund_*"), (600, "re*fund")] {
        let mut r = grant_request(secs);
        r.spec.tools = vec![tools.into()];
        assert_eq!(
            f.approvals.request_grant(r).await.unwrap_err().code(),
            "invalid"
        );
    }
    f.audit.close().await.unwrap();
    assert_eq!(events(&f.dir, "grant.issued").len(), 1);
    assert_eq!(events(&f.dir, "grant.revoked").len(), 1);
}

#[tokio::test]
async fn an_expired_grant_stops_at_once_and_its_end_is_recorded() {
    let f = fixture("").await;
    let asked = f.approvals.request_grant(grant_request(60)).await.unwrap();
    let dana = person("dana", &["finance-leads"]);
    f.approvals
        .decide(&dana, &asked.id, true, "ok", &asked.digest)
        .await
        .unwrap();
    assert_eq!(f.approvals.active_grants(&agent(), "billing").len(), 1);
    // Move the grant's end into the past, as the clock would.
    {
        let store = f.approvals.inner.store.begin().await.unwrap();
        let (mut grant, _) = store.grant(&asked.id).await.unwrap().unwrap();
        grant.expires_at = stamp(now() - chrono::Duration::seconds(1));
        store.put_grant(&grant, false).await.unwrap();
        store.commit().await.unwrap();
        let mut cache = f.approvals.inner.grants.write().unwrap();
        for list in cache.values_mut() {
            for g in list.iter_mut() {
                g.expires_at = grant.expires_at.clone();
            }
        }
    }
    // Refused before any sweep has run: expiry is checked on use.
    assert!(f.approvals.active_grants(&agent(), "billing").is_empty());
    f.approvals.sweep().await.unwrap();
    f.approvals.sweep().await.unwrap();
    f.audit.close().await.unwrap();
    assert_eq!(events(&f.dir, "grant.expired").len(), 1);
}

/// Two approval services (two replicas) on one PostgreSQL database the test creates.
mod shared_state {
    use super::*;
    use portcullis_config::state::{State as StateConfig, StateBackend};

    struct Db {
        name: String,
    }

    impl Db {
        async fn create() -> Db {
            let name = format!(
                "portcullis_approvals_{}_{}",
                std::process::id(),
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
            );
            let (client, conn) = tokio_postgres::connect(
                "host=127.0.0.1 user=postgres dbname=postgres",
                tokio_postgres::NoTls,
            )
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (user postgres, trust) is needed");
            tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            Db { name }
        }

        fn settings(&self) -> StateConfig {
            StateConfig {
                backend: StateBackend::Postgres,
                url: Some(portcullis_config::Secret::Literal(format!(
                    "host=127.0.0.1 user=postgres dbname={} sslmode=disable",
                    self.name
                ))),
                heartbeat: Duration::from_millis(200),
                replica_timeout: Duration::from_millis(800),
                poll: Duration::from_millis(500),
                ..StateConfig::default()
            }
        }
    }

    impl Drop for Db {
        fn drop(&mut self) {
            let _ = std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
                .arg(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .output();
        }
    }

    async fn replica(db: &Db, name: &str) -> (tempfile::TempDir, Approvals) {
        let tmp = tempfile::tempdir().unwrap();
        let audit = AuditLog::open(tmp.path(), name, Durability::Strict).unwrap();
        let shared = Shared::connect(&db.settings(), name).await.unwrap();
        let approvals = Approvals::open(tmp.path(), audit, &settings(""), Some(shared))
            .await
            .unwrap();
        (tmp, approvals)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_decisions_on_two_replicas_end_one_way_and_the_holder_hears_it() {
        let db = Db::create().await;
        let (_a_dir, a) = replica(&db, "replica-a").await;
        let (_b_dir, b) = replica(&db, "replica-b").await;
        for round in 0..10 {
            let mut held = a
                .hold(hold_request(requirement(1, Duration::from_secs(60))))
                .await
                .unwrap();
            let (id, digest) = (held.id().to_string(), held.approval.digest.clone());
            let dana = person("dana", &["finance-leads"]);
            let erin = person("erin", &["finance-leads"]);
            // One approves through A while another denies through B, at the same moment.
            let (on_a, on_b) = tokio::join!(
                a.decide(&dana, &id, true, "fine", &digest),
                b.decide(&erin, &id, false, "not this one", &digest),
            );
            let winner = match (&on_a, &on_b) {
                (Ok(x), Err(e)) | (Err(e), Ok(x)) => {
                    assert_eq!(e.code(), "already_decided", "round {round}: {e}");
                    x.status
                }
                _ => panic!("round {round}: both or neither decided: {on_a:?} {on_b:?}"),
            };
            let outcome = tokio::time::timeout(Duration::from_secs(2), held.outcome())
                .await
                .expect("the holder never heard of the decision");
            assert_eq!(outcome.status, winner, "round {round}");
            if winner == Status::Approved {
                held.released("ev").await.unwrap();
                assert_eq!(
                    held.released("ev").await.unwrap_err().code(),
                    "already_forwarded"
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_that_stops_beating_has_its_holds_abandoned_by_the_others() {
        let db = Db::create().await;
        let (_a_dir, a) = replica(&db, "replica-a").await;
        let (_b_dir, b) = replica(&db, "replica-b").await;
        let held = b
            .hold(hold_request(requirement(1, Duration::from_secs(60))))
            .await
            .unwrap();
        let id = held.id().to_string();
        // B "dies": its tasks stop (heartbeat, listener) without leaving or cancelling.
        std::mem::forget(held);
        b.inner.store.shared().unwrap().halt();
        let dana = person("dana", &["finance-leads"]);
        let until = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            a.sweep().await.unwrap();
            let seen = a.get(&dana, &id).await.unwrap();
            if seen.status == Status::Abandoned {
                assert!(
                    seen.closed_because
                        .as_deref()
                        .unwrap()
                        .contains("replica-b"),
                    "{seen:?}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < until,
                "never abandoned: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let err = a
            .decide(
                &dana,
                &id,
                true,
                "late",
                &a.get(&dana, &id).await.unwrap().digest,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "already_decided", "{err}");
    }
}
