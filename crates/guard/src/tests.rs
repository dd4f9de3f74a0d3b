//! The pipeline cores without a network: decisions, the one-event rule, and holds over a
//! channel the test drives, with a paused clock, against a real audit log and approvals
//! store in a temporary directory.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portcullis_config::Config;
use portcullis_model::{
    Action, AuthMethod, Decision, Identity, IdentityKind, McpKind, McpOperation, Operation,
    Outcome, TargetKind,
};
use serde_json::Value;
use tokio::sync::mpsc;

use super::*;

const CONFIG: &str = r#"
[targets.billing]
kind = "mcp"
command = ["true"]

[[rules]]
name = "agents read"
who.groups = ["agents"]
target = "billing"
tools = ["get_*"]

[[rules]]
name = "no deletes"
who.groups = ["agents"]
target = "billing"
tools = ["delete_*"]
decision = "deny"
reason = "deleting is not for agents"

[[rules]]
name = "refunds need a lead"
who.groups = ["agents"]
target = "billing"
tools = ["refund_*"]
decision = "hold"
approvers = ["leads"]
timeout = "1h"

[[rules]]
name = "reasons first"
who.groups = ["agents"]
target = "billing"
tools = ["close_*"]
decision = "hold"
approvers = ["leads"]
require_reason = true
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    guard: Arc<Guard>,
    approvals: Approvals,
}

async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let config = Config::parse(Path::new("/tmp/guard.toml"), CONFIG.to_string()).unwrap();
    let (guard, approvals) = testing::guard(&config, &dir).await;
    Fixture {
        _dir: tmp,
        dir,
        guard,
        approvals,
    }
}

fn person(subject: &str, groups: &[&str], kind: IdentityKind) -> Arc<Identity> {
    Arc::new(Identity {
        issuer: "portcullis:api-key".into(),
        subject: subject.into(),
        display_name: None,
        kind,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        auth_method: AuthMethod::ApiKey,
        credential_id: None,
        act: Vec::new(),
    })
}

fn origin() -> Origin {
    Origin {
        identity: person("billing-agent", &["agents"], IdentityKind::Agent),
        source: "127.0.0.1:4000".into(),
        target: Arc::from("billing"),
        kind: TargetKind::Mcp,
        session: None,
    }
}

fn call(tool: &str) -> Action<'_> {
    Action {
        target: "billing",
        target_kind: TargetKind::Mcp,
        operation: Operation::Mcp(McpOperation::named(McpKind::Tool, tool, None)),
        findings: &[],
        grants: &[],
    }
}

fn requests(dir: &Path) -> Vec<Value> {
    testing::events(dir, "request")
}

#[tokio::test]
async fn a_decision_and_its_outcome_make_one_event() {
    let f = fixture().await;
    let mut exchange = f.guard.exchange(&origin());
    exchange.event().action = Some("tools/call".into());
    let verdict = exchange.decide(&call("get_invoice"));
    assert!(verdict.is_allow());
    exchange.finish(Outcome::Success).record().await.unwrap();

    let mut exchange = f.guard.exchange(&origin());
    let verdict = exchange.decide(&call("delete_customer"));
    let Decision::Deny { reason } = &verdict.decision else {
        panic!("denied: {verdict:?}")
    };
    let refusal = Refusal::new(RefusalKind::Denied, format!("refused: {reason}")).by(&verdict);
    exchange.refuse(&refusal).record().await.unwrap();

    let events = requests(&f.dir);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["outcome"], "success");
    assert_eq!(events[0]["rule"], "agents read");
    assert_eq!(events[0]["decision"], "allow");
    assert_eq!(events[1]["outcome"], "denied");
    assert_eq!(events[1]["rule"], "no deletes");
    assert_eq!(events[1]["detail"], "refused: deleting is not for agents");
    assert_eq!(events[1]["identity"]["subject"], "billing-agent");
    assert!(events[1]["duration_ms"].is_number());
}

#[tokio::test]
async fn an_exchange_dropped_unfinished_is_recorded_as_failed() {
    let f = fixture().await;
    {
        let mut exchange = f.guard.exchange(&origin());
        exchange.decide(&call("get_invoice"));
        // The adapter's future is dropped here: the caller went away mid-request.
    }
    // The event is recorded by a task of its own.
    for _ in 0..100 {
        if !requests(&f.dir).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events = requests(&f.dir);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["outcome"], "failed");
    assert_eq!(events[0]["rule"], "agents read");
}

#[tokio::test]
async fn a_batch_of_finished_exchanges_is_recorded_together() {
    let f = fixture().await;
    let finished: Vec<Finished> = (0..3)
        .map(|_| {
            let mut exchange = f.guard.exchange(&origin());
            exchange.decide(&call("get_invoice"));
            exchange.finish(Outcome::Success)
        })
        .collect();
    f.guard.record_all(finished).await.unwrap();
    assert_eq!(requests(&f.dir).len(), 3);
}

/// Rules compiled from `text`, as a reload would put them in force.
fn rules_of(text: &str) -> Rules {
    let config = Config::parse(Path::new("/tmp/guard.toml"), text.to_string()).unwrap();
    let masks = Masks::compile(&config.masks).unwrap();
    let recorder = Recorder::from_config(&config.recording, &masks).unwrap();
    Rules::new(
        Arc::new(Authenticator::new(&config.identity).unwrap()),
        Arc::new(Policy::compile(&config).unwrap()),
        masks,
        recorder,
    )
}

#[tokio::test]
async fn a_reload_applies_to_exchanges_opened_after_it_and_not_before() {
    let f = fixture().await;
    let before = f.guard.policy_version();
    // Opened under the old rules: deletes denied.
    let mut under_way = f.guard.exchange(&origin());
    let new = rules_of(&CONFIG.replace(
        "tools = [\"delete_*\"]\ndecision = \"deny\"",
        "tools = [\"delete_*\"]\ndecision = \"allow\"",
    ));
    let after = new.policy.version().to_string();
    assert_ne!(before, after);
    let replaced = f.guard.reload(new);
    assert_eq!(replaced.policy.version(), before);
    assert_eq!(f.guard.policy_version(), after);
    // The exchange under way decides with the rules it opened with, and names them.
    let verdict = under_way.decide(&call("delete_customer"));
    assert!(!verdict.is_allow(), "{verdict:?}");
    assert_eq!(&*verdict.policy_version, before.as_str());
    under_way.finish(Outcome::Denied).record().await.unwrap();
    // One opened now uses the new rules.
    let mut fresh = f.guard.exchange(&origin());
    let verdict = fresh.decide(&call("delete_customer"));
    assert!(verdict.is_allow(), "{verdict:?}");
    fresh.finish(Outcome::Success).record().await.unwrap();
    let events = requests(&f.dir);
    assert_eq!(events[0]["policy_version"], before.as_str());
    assert_eq!(events[1]["policy_version"], after.as_str());
}

/// A caller as a test drives it: each message it is told, and an interruption to send.
struct TestChannel {
    told: mpsc::UnboundedSender<(String, u64)>,
    interrupt: mpsc::UnboundedReceiver<Interruption>,
    every: Option<Duration>,
}

impl HoldChannel for TestChannel {
    async fn tell(&mut self, approval: &Approval, round: u64) -> Result<(), Interruption> {
        self.told
            .send((approval.id.clone(), round))
            .map_err(|_| Interruption::CallerGone)
    }

    fn every(&self) -> Option<Duration> {
        self.every
    }

    async fn interrupted(&mut self) -> Interruption {
        match self.interrupt.recv().await {
            Some(interruption) => interruption,
            None => std::future::pending().await,
        }
    }
}

fn channel(
    every: Option<Duration>,
) -> (
    TestChannel,
    mpsc::UnboundedReceiver<(String, u64)>,
    mpsc::UnboundedSender<Interruption>,
) {
    let (told, told_rx) = mpsc::unbounded_channel();
    let (interrupt_tx, interrupt) = mpsc::unbounded_channel();
    (
        TestChannel {
            told,
            interrupt,
            every,
        },
        told_rx,
        interrupt_tx,
    )
}

fn ask(tool: &str, reason: Option<&str>) -> HoldAsk {
    HoldAsk {
        what: format!("tools/call {tool:?}"),
        action: "tools/call".into(),
        resource: Some(tool.into()),
        shown: Some(serde_json::json!({ "card": "4111 1111 1111 1111" })),
        digest: None,
        reason: reason.map(str::to_string),
    }
}

async fn held(
    f: &Fixture,
    tool: &str,
    channel: &mut TestChannel,
) -> (Exchange, Result<Released, Refusal>) {
    let mut exchange = f.guard.exchange(&origin());
    let verdict = exchange.decide(&call(tool));
    let Decision::Hold(requirement) = verdict.decision.clone() else {
        panic!("held: {verdict:?}")
    };
    let result = exchange
        .hold(
            &verdict,
            requirement,
            ask(tool, Some("customer called")),
            channel,
        )
        .await;
    (exchange, result)
}

#[tokio::test]
async fn an_approved_hold_is_released_and_approvers_see_masked_arguments() {
    let f = fixture().await;
    let (mut ch, mut told, _interrupt) = channel(None);
    let approvals = f.approvals.clone();
    let approver = tokio::spawn(async move {
        let (id, round) = told.recv().await.unwrap();
        assert_eq!(round, 0);
        let lead = person("lead", &["leads"], IdentityKind::Human);
        let approval = approvals.get(&lead, &id).await.unwrap();
        assert!(
            !approval
                .arguments
                .as_ref()
                .unwrap()
                .to_string()
                .contains("4111 1111 1111 1111"),
            "approvers see the card masked: {:?}",
            approval.arguments
        );
        approvals
            .decide(&lead, &id, true, "fine", &approval.digest)
            .await
            .unwrap();
    });
    let (exchange, result) = held(&f, "refund_payment", &mut ch).await;
    approver.await.unwrap();
    let released = result.expect("approved");
    exchange.finish(Outcome::Success).record().await.unwrap();
    let events = requests(&f.dir);
    assert_eq!(events[0]["approval"], released.approval.as_str());
    assert_eq!(events[0]["outcome"], "success");
}

#[tokio::test]
async fn a_denied_hold_is_refused_as_denied_naming_the_approver() {
    let f = fixture().await;
    let (mut ch, mut told, _interrupt) = channel(None);
    let approvals = f.approvals.clone();
    tokio::spawn(async move {
        let (id, _) = told.recv().await.unwrap();
        let lead = person("lead", &["leads"], IdentityKind::Human);
        let approval = approvals.get(&lead, &id).await.unwrap();
        approvals
            .decide(&lead, &id, false, "not today", &approval.digest)
            .await
            .unwrap();
    });
    let (exchange, result) = held(&f, "refund_payment", &mut ch).await;
    let refusal = result.expect_err("denied");
    assert_eq!(refusal.kind, RefusalKind::HeldDenied);
    assert_eq!(refusal.outcome(), Outcome::Denied);
    assert!(refusal.message.contains("not today"), "{}", refusal.message);
    exchange.refuse(&refusal).record().await.unwrap();
    let events = requests(&f.dir);
    assert_eq!(events[0]["outcome"], "denied");
    assert_eq!(events[0]["approval"], refusal.approval.unwrap().id.as_str());
}

#[tokio::test(start_paused = true)]
async fn a_hold_nobody_decides_expires_and_the_caller_hears_about_it_meanwhile() {
    let f = fixture().await;
    // One message every ten minutes over an hour's timeout, with the clock paused: the
    // test takes no hour, and the count shows the caller was kept informed.
    let (mut ch, mut told, _interrupt) = channel(Some(Duration::from_secs(600)));
    let (exchange, result) = held(&f, "refund_payment", &mut ch).await;
    let refusal = result.expect_err("expired");
    assert_eq!(refusal.kind, RefusalKind::HeldExpired);
    assert_eq!(refusal.outcome(), Outcome::Denied);
    let mut rounds = Vec::new();
    while let Ok((_, round)) = told.try_recv() {
        rounds.push(round);
    }
    // Told at 0, 10, ..., 50 minutes before the expiry; the paused clock may run on while
    // the expiry is written (real I/O), and the caller keeps hearing meanwhile.
    assert!(rounds.len() >= 6, "{rounds:?}");
    assert!(
        rounds.iter().enumerate().all(|(i, r)| *r == i as u64),
        "{rounds:?}"
    );
    exchange.refuse(&refusal).record().await.unwrap();
}

#[tokio::test]
async fn a_hold_whose_caller_goes_away_is_cancelled_and_recorded_as_failed() {
    let f = fixture().await;
    let (mut ch, mut told, interrupt) = channel(None);
    tokio::spawn(async move {
        told.recv().await.unwrap();
        interrupt.send(Interruption::CallerGone).unwrap();
    });
    let (exchange, result) = held(&f, "refund_payment", &mut ch).await;
    let refusal = result.expect_err("interrupted");
    assert_eq!(refusal.kind, RefusalKind::HeldCancelled);
    assert!(refusal.caller_gone());
    assert_eq!(refusal.outcome(), Outcome::Failed);
    let id = refusal.approval.as_ref().unwrap().id.clone();
    let lead = person("lead", &["leads"], IdentityKind::Human);
    let approval = f.approvals.get(&lead, &id).await.unwrap();
    assert_eq!(approval.status, ApprovalStatus::Cancelled);
    exchange.refuse(&refusal).record().await.unwrap();
    assert_eq!(requests(&f.dir)[0]["outcome"], "failed");
}

#[tokio::test]
async fn a_hold_that_needs_a_reason_is_refused_without_one_before_anyone_is_asked() {
    let f = fixture().await;
    let (mut ch, mut told, _interrupt) = channel(None);
    let mut exchange = f.guard.exchange(&origin());
    let verdict = exchange.decide(&call("close_account"));
    let Decision::Hold(requirement) = verdict.decision.clone() else {
        panic!("held")
    };
    let refusal = exchange
        .hold(&verdict, requirement, ask("close_account", None), &mut ch)
        .await
        .expect_err("no reason");
    assert_eq!(refusal.kind, RefusalKind::ReasonRequired);
    assert_eq!(refusal.outcome(), Outcome::Denied);
    assert_eq!(refusal.rule.as_deref(), Some("reasons first"));
    assert!(told.try_recv().is_err(), "nobody was asked");
    exchange.refuse(&refusal).record().await.unwrap();
}

#[tokio::test]
async fn identify_refuses_a_bad_key_and_records_the_failure() {
    let f = fixture().await;
    let source: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let refusal = f
        .guard
        .identify("pc_not_a_real_key", source, Some("billing"))
        .await
        .expect_err("unknown key");
    assert_eq!(refusal.kind, RefusalKind::Unauthenticated);
    assert_eq!(refusal.outcome(), Outcome::Rejected);
    let failures = testing::events(&f.dir, "auth.failure");
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["source"], "127.0.0.1:5000");
    assert_eq!(failures[0]["target"], "billing");
}

/// The guard of `CONFIG` with recording on and small caps.
async fn recording_fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let text = format!(
        "{CONFIG}\n[recording]\nmode = \"strict\"\nmax_rows_per_statement = 2\nmax_message_bytes = 1024\n"
    );
    let config = Config::parse(Path::new("/tmp/guard.toml"), text).unwrap();
    let (guard, approvals) = testing::guard(&config, &dir).await;
    Fixture {
        _dir: tmp,
        dir,
        guard,
        approvals,
    }
}

fn recorded(dir: &Path, event: &Value, side: &str) -> portcullis_recording::document::Record {
    let id =
        portcullis_recording::ChunkId::parse(event["recorded"][side].as_str().unwrap()).unwrap();
    let chunk = portcullis_audit::recordings::Recordings::open(dir)
        .unwrap()
        .get(&id)
        .unwrap();
    portcullis_recording::document::Record::parse(&chunk.content(1 << 20).unwrap()).unwrap()
}

#[tokio::test]
async fn a_recorded_exchange_keeps_the_masked_request_and_the_answer_named_by_its_event() {
    let f = recording_fixture().await;
    let mut exchange = f.guard.exchange(&origin());
    assert!(exchange.recording());
    let secret = "AKIAIOSFODNN7EXAMPLE";
    exchange.record_request(
        "request",
        serde_json::json!({"name": "get_invoice", "arguments": {"note": format!("key {secret}")}}),
    );
    exchange.record_answer("progress", serde_json::json!({"progress": 1}));
    for i in 0..5 {
        exchange.record_row(serde_json::json!([i]));
    }
    exchange.record_answer("complete", serde_json::json!("SELECT 5"));
    exchange.record_answer("result", serde_json::json!({"text": "x".repeat(3000)}));
    exchange.finish(Outcome::Success).record().await.unwrap();

    let events = requests(&f.dir);
    let request = recorded(&f.dir, &events[0], "request");
    let text = serde_json::to_string(&request).unwrap();
    assert!(!text.contains(secret), "{text}");
    assert_eq!(request.parts[0].body["name"], "get_invoice");
    let answer = recorded(&f.dir, &events[0], "answer");
    let kinds: Vec<&str> = answer.parts.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["progress", "row", "row", "complete", "result"]);
    assert!(answer.parts.windows(2).all(|w| w[0].ms <= w[1].ms));
    // Three rows past the cap, where the fourth part would have been; the long result cut.
    assert_eq!(answer.truncated.len(), 2, "{:?}", answer.truncated);
    assert_eq!(
        (answer.truncated[0].part, answer.truncated[0].unit.as_str()),
        (3, "rows")
    );
    assert_eq!(
        (answer.truncated[0].kept, answer.truncated[0].dropped),
        (2, 3)
    );
    assert_eq!(answer.truncated[1].unit, "bytes");
    assert_eq!(answer.truncated[1].kept, 1024);
}

#[tokio::test]
async fn a_refusal_is_recorded_as_the_caller_received_it_and_a_dropped_exchange_says_the_caller_left()
 {
    let f = recording_fixture().await;
    let mut exchange = f.guard.exchange(&origin());
    let verdict = exchange.decide(&call("delete_customer"));
    let refusal = Refusal::new(RefusalKind::Denied, "refused: no").by(&verdict);
    exchange.refuse(&refusal).record().await.unwrap();

    let mut exchange = f.guard.exchange(&origin());
    exchange.record_request("request", serde_json::json!({"name": "get_invoice"}));
    exchange.record_answer("progress", serde_json::json!({"progress": 1}));
    exchange.record_caller_left();
    drop(exchange);
    for _ in 0..100 {
        if requests(&f.dir).len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events = requests(&f.dir);
    assert_eq!(events.len(), 2);
    let refused = recorded(&f.dir, &events[0], "answer");
    assert_eq!(refused.parts[0].kind, "refusal");
    assert_eq!(refused.parts[0].body["refused"], "denied");
    assert!(events[0]["recorded"].get("request").is_none());
    assert_eq!(events[1]["outcome"], "failed");
    let left = recorded(&f.dir, &events[1], "answer");
    assert!(left.caller_left);
    assert_eq!(left.parts.len(), 1);
}

/// Recordings encrypted to auditors: sealed in segments the host cannot read back.
mod sealed {
    use portcullis_audit::checkpoint::{Ed25519Signer, Verifier, verifier_key};
    use portcullis_audit::recordings::{RecordingError, Recordings, segments_dir};
    use portcullis_audit::verify::{self, Location};
    use portcullis_audit::{AuditLog, CheckpointSettings};
    use portcullis_config::Durability;
    use portcullis_recording::ChunkId;
    use portcullis_recording::segment::Identities;

    use super::*;

    /// Planted in every recorded request: it must not be found in clear on disk.
    const PLANTED: &str = "zebra-crossing-4242-planted";

    struct Sealed {
        _dir: tempfile::TempDir,
        dir: std::path::PathBuf,
        guard: Arc<Guard>,
        audit: AuditLog,
        verifier: Verifier,
        auditor: Identities,
    }

    async fn sealed_fixture(mode: &str, interval: &str) -> Sealed {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let (auditor, recipient) = Identities::generate();
        let text = format!(
            "{CONFIG}\n[recording]\nmode = \"{mode}\"\nrecipients = [\"{recipient}\"]\nseal_interval = \"{interval}\"\n"
        );
        let config = Config::parse(Path::new("/tmp/guard.toml"), text).unwrap();
        let pkcs8 = Ed25519Signer::generate_pkcs8().unwrap();
        let signer = Ed25519Signer::from_pkcs8("test-log-key", &pkcs8).unwrap();
        let verifier = Verifier::parse(&verifier_key(&signer)).unwrap();
        let settings = CheckpointSettings {
            origin: "portcullis/test-gw".into(),
            signer: Arc::new(signer),
            interval: Duration::from_secs(3600),
            every: 1000,
        };
        let audit = AuditLog::open_signed(&dir, "test", Durability::Strict, settings).unwrap();
        let (guard, _) = testing::guard_over(&config, &dir, audit.clone()).await;
        Sealed {
            _dir: tmp,
            dir,
            guard,
            audit,
            verifier,
            auditor,
        }
    }

    async fn recorded_request(guard: &Arc<Guard>, n: usize) {
        let mut exchange = guard.exchange(&origin());
        exchange.record_request(
            "request",
            serde_json::json!({"name": "get_invoice", "arguments": {"note": format!("{PLANTED} {n}")}}),
        );
        exchange.record_answer(
            "result",
            serde_json::json!({"text": format!("{PLANTED} answer {n}")}),
        );
        exchange.finish(Outcome::Success).record().await.unwrap();
    }

    async fn wait_for(dir: &Path, ty: &str, count: usize) -> Vec<Value> {
        for _ in 0..500 {
            let events = testing::events(dir, ty);
            if events.len() >= count {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {count} {ty} event(s) within 5s");
    }

    /// Every file under `dir`, read whole.
    fn every_file(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(every_file(&path));
            } else {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
        files
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recordings_are_sealed_on_the_interval_verify_and_a_crash_leaves_an_unsealed_tail() {
        let s = sealed_fixture("strict", "200ms").await;
        for n in 0..3 {
            recorded_request(&s.guard, n).await;
        }
        let seals = wait_for(&s.dir, "recording.sealed", 1).await;
        let segment = &seals[0]["segment"];
        assert_eq!(segment["first_seq"], 1);
        assert_eq!(segment["last_seq"], 3);
        assert_eq!(segment["chunks"], 6);
        assert_eq!(segment["recipients"].as_array().unwrap().len(), 1);
        let file = segments_dir(&s.dir).join(segment["file"].as_str().unwrap());
        assert!(file.ends_with("1-3.age"), "{}", file.display());

        // The host keeps no plaintext: no chunk beside the events, nothing in clear anywhere.
        for (path, bytes) in every_file(&s.dir) {
            assert!(
                !bytes
                    .windows(PLANTED.len())
                    .any(|w| w == PLANTED.as_bytes()),
                "{} holds recorded content in clear",
                path.display()
            );
        }
        let events = requests(&s.dir);
        let id = ChunkId::parse(events[0]["recorded"]["request"].as_str().unwrap()).unwrap();
        let err = Recordings::open(&s.dir).unwrap().get(&id).unwrap_err();
        assert!(matches!(err, RecordingError::Encrypted(..)), "{err}");
        assert!(err.to_string().contains("pass --identity"), "{err}");
        // An auditor's key reads it back, checked against the id the event signs.
        let recordings = Recordings::open(&s.dir)
            .unwrap()
            .with_identities(s.auditor.clone());
        let chunk = recordings.get(&id).unwrap();
        let record =
            portcullis_recording::document::Record::parse(&chunk.content(1 << 20).unwrap())
                .unwrap();
        assert!(
            record.parts[0]
                .body
                .to_string()
                .contains(&format!("{PLANTED} 0"))
        );

        // Two more requests, then the process goes away without sealing them.
        for n in 3..5 {
            recorded_request(&s.guard, n).await;
        }
        let Sealed {
            guard,
            audit,
            dir,
            verifier,
            auditor,
            _dir,
        } = s;
        drop(guard);
        audit.close().await.unwrap();

        let summary = verify::verify(&dir, &verifier, &[], &[], &mut |_, _| {}).unwrap();
        assert_eq!(summary.segments, 1);
        assert_eq!(summary.chunks_sealed, 6);
        assert_eq!(summary.chunks_checked, 0);
        assert_eq!(summary.unsealed_requests, 2);
        assert!(
            summary
                .warnings
                .iter()
                .any(|w| w.contains("unsealed tail: 2 requests")),
            "{:?}",
            summary.warnings
        );
        let opened = verify::verify_with_identities(
            &dir,
            &verifier,
            &[],
            &[],
            Some(&auditor),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(opened.segments_opened, 1);
        assert_eq!(opened.chunks_checked, 6);

        // One byte of the segment altered: the seal event names it.
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        let failure = verify::verify(&dir, &verifier, &[], &[], &mut |_, _| {}).unwrap_err();
        let seal_seq = seals[0]["id"].as_str().map(str::to_string);
        assert!(
            matches!(&failure.at, Location::Event { id, .. } if *id == seal_seq),
            "{failure}"
        );
        assert!(
            failure.reason.contains("1-3.age") && failure.reason.contains("altered"),
            "{failure}"
        );
        // And a deleted one is missing.
        std::fs::remove_file(&file).unwrap();
        let failure = verify::verify(&dir, &verifier, &[], &[], &mut |_, _| {}).unwrap_err();
        assert!(failure.reason.contains("is missing"), "{failure}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_clean_stop_seals_everything_and_a_swapped_segment_fails_with_the_key() {
        let s = sealed_fixture("strict", "1h").await;
        for n in 0..2 {
            recorded_request(&s.guard, n).await;
        }
        s.guard.close_recording().await.unwrap();
        recorded_request(&s.guard, 2).await;
        s.guard.close_recording().await.unwrap();
        let seals = testing::events(&s.dir, "recording.sealed");
        assert_eq!(seals.len(), 2);
        let Sealed {
            guard,
            audit,
            dir,
            verifier,
            auditor,
            _dir,
        } = s;
        drop(guard);
        audit.close().await.unwrap();
        let summary = verify::verify_with_identities(
            &dir,
            &verifier,
            &[],
            &[],
            Some(&auditor),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(
            (
                summary.segments,
                summary.chunks_checked,
                summary.unsealed_requests
            ),
            (2, 6, 0)
        );
        assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);

        // The second segment replaced by a copy of the first (rewriting its seal event to
        // match would break the signed tree): caught without the key.
        let segments = segments_dir(&dir);
        let second = seals[1]["segment"]["file"].as_str().unwrap();
        assert_eq!(second, "4-4.age", "the seal of 1-2 is event 3");
        std::fs::copy(segments.join("1-2.age"), segments.join(second)).unwrap();
        let failure = verify::verify(&dir, &verifier, &[], &[], &mut |_, _| {}).unwrap_err();
        assert!(failure.reason.contains("4-4.age"), "{failure}");
        // A stranger's key opens nothing.
        let (stranger, _) = Identities::generate();
        std::fs::remove_file(segments.join(second)).unwrap();
        let failure = verify::verify_with_identities(
            &dir,
            &verifier,
            &[],
            &[],
            Some(&stranger),
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(failure.reason.contains("wrong key"), "{failure}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_seal_that_cannot_be_written_refuses_requests_in_strict_mode_until_it_can() {
        let s = sealed_fixture("strict", "1h").await;
        recorded_request(&s.guard, 0).await;
        // Where the segments go is a file: nothing can be written there.
        let segments = segments_dir(&s.dir);
        std::fs::write(&segments, b"in the way").unwrap();
        let err = s.guard.seal_recordings().await.unwrap_err();
        assert!(err.contains("cannot write the segment"), "{err}");
        let refusal = s.guard.exchange(&origin()).check_recordable().unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::AuditUnavailable);
        assert!(
            refusal
                .message
                .contains("recording of this request cannot be kept"),
            "{refusal}"
        );
        assert!(s.guard.audit_unavailable().is_some());
        // The space comes back: the segment kept in memory is sealed on the next attempt.
        std::fs::remove_file(&segments).unwrap();
        s.guard.seal_recordings().await.unwrap();
        assert!(s.guard.exchange(&origin()).check_recordable().is_ok());
        let seals = testing::events(&s.dir, "recording.sealed");
        assert_eq!(seals.len(), 1);
        assert_eq!(seals[0]["segment"]["chunks"], 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn best_effort_records_the_loss_and_goes_on() {
        let s = sealed_fixture("best-effort", "1h").await;
        recorded_request(&s.guard, 0).await;
        std::fs::write(segments_dir(&s.dir), b"in the way").unwrap();
        assert!(s.guard.seal_recordings().await.is_err());
        assert!(s.guard.exchange(&origin()).check_recordable().is_ok());
        let failed = testing::events(&s.dir, "recording.failed");
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0]["detail"]
                .as_str()
                .unwrap()
                .contains("recordings of events 1..1 (2 chunks) are lost"),
            "{}",
            failed[0]
        );
    }
}
