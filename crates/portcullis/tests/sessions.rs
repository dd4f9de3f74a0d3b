//! `portcullis sessions` and `portcullis recordings prune`, run as the real binary over a data
//! directory written by real recorded exchanges: the shared guard with its real policy,
//! approvals and signed audit log, an approver deciding a held refund, and a recorded answer
//! that carries terminal escape sequences, as a hostile upstream would send them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use portcullis_approvals::{ApprovalSettings, Approvals};
use portcullis_audit::keys;
use portcullis_audit::{AuditLog, CheckpointSettings};
use portcullis_config::{Config, Durability};
use portcullis_guard::{
    Approval, Guard, HoldAsk, HoldChannel, Interruption, Masks, Origin, Recorder, Refusal,
    RefusalKind,
};
use portcullis_identity::Authenticator;
use portcullis_model::{
    Action, AuthMethod, Decision, EventType, Identity, IdentityKind, McpKind, McpOperation,
    Operation, Outcome, TargetKind,
};
use portcullis_policy::Policy;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const CONFIG: &str = r#"
[targets.billing]
kind = "mcp"
command = ["true"]

[recording]
mode = "strict"

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
"#;

const SESSION: &str = "mcp-session-1";
/// What a hostile upstream put in its answer: clear the screen, retitle the window, recolour.
const HOSTILE: &str = "invoice 42 \u{1b}[2J\u{1b}]0;owned\u{7}\u{9b}31m paid";

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portcullis"))
}

/// A data directory with one recorded MCP session and one stateless request, and the
/// directory of the audit key that signed its checkpoints.
struct Recorded {
    tmp: tempfile::TempDir,
    data: PathBuf,
    pubkey: PathBuf,
    /// The event id of the request outside any session.
    stateless: String,
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

fn origin(session: Option<&str>) -> Origin {
    Origin {
        identity: person("billing-agent", &["agents"], IdentityKind::Agent),
        source: "127.0.0.1:4000".into(),
        target: Arc::from("billing"),
        kind: portcullis_model::TargetKind::Mcp,
        session: session.map(str::to_string),
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

/// A caller waiting on a held request: tells the test which approval it waits for.
struct Waiting(mpsc::UnboundedSender<String>);

impl HoldChannel for Waiting {
    async fn tell(&mut self, approval: &Approval, _round: u64) -> Result<(), Interruption> {
        self.0
            .send(approval.id.clone())
            .map_err(|_| Interruption::CallerGone)
    }

    fn every(&self) -> Option<Duration> {
        None
    }

    async fn interrupted(&mut self) -> Interruption {
        std::future::pending().await
    }
}
/// The log of the test's data directory, signing with the key in `keys_dir` (checkpoints
/// only when asked for).
fn signed_log(data: &Path, keys_dir: &Path) -> AuditLog {
    AuditLog::open_signed(
        data,
        "gw-sessions",
        Durability::Strict,
        CheckpointSettings {
            origin: "gw-sessions".into(),
            signer: Arc::new(keys::load_signer(keys_dir, keys::AUDIT_KEY).unwrap()),
            interval: Duration::from_secs(3600),
            every: 100_000,
        },
    )
    .unwrap()
}

fn recorded() -> Recorded {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(record_fixture())
}

async fn record_fixture() -> Recorded {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let keys_dir = tmp.path().join("keys");
    keys::generate(&keys_dir, keys::AUDIT_KEY, "sessions-test").unwrap();
    let config = Config::parse(Path::new("/tmp/sessions.toml"), CONFIG.to_string()).unwrap();
    let audit = signed_log(&data, &keys_dir);
    let approvals = Approvals::open(
        &data,
        audit.clone(),
        &ApprovalSettings {
            approvals: config.approvals.clone(),
            admin_url: config.admin_url(),
            console_url: config.console_url(),
        },
        None,
    )
    .await
    .unwrap();
    let masks = Masks::compile(&config.masks).unwrap();
    let recorder = Recorder::from_config(&config.recording, &masks).unwrap();
    let guard = Guard::new(
        Arc::new(Authenticator::new(&config.identity).unwrap()),
        Arc::new(Policy::compile(&config).unwrap()),
        approvals.clone(),
        audit.clone(),
        masks,
        recorder,
    );
    session(&guard, &approvals).await;

    // A stateless request: a session of its own.
    let mut exchange = guard.exchange(&origin(None));
    exchange.event().action = Some("tools/call".into());
    exchange.decide(&call("get_status"));
    exchange.record_request("request", json!({"name": "get_status", "arguments": {}}));
    exchange.record_answer(
        "result",
        json!({"content": [{"type": "text", "text": "all good\nsecond line"}], "isError": false}),
    );
    let stateless = exchange.id().to_string();
    exchange.finish(Outcome::Success).record().await.unwrap();

    audit.checkpoint_now().await.unwrap();
    audit.close().await.unwrap();
    Recorded {
        pubkey: keys_dir.join("audit.pub"),
        tmp,
        data,
        stateless,
    }
}

/// One MCP session: a read whose answer is hostile, a denied delete, a refund held and
/// approved by a lead, and a query answered with rows.
async fn session(guard: &Arc<Guard>, approvals: &Approvals) {
    let agent = origin(Some(SESSION));
    let mut start = guard.event(EventType::SessionStart, Outcome::Info);
    start.session = Some(SESSION.into());
    start.identity = Some((*agent.identity).clone());
    start.target = Some("billing".into());
    guard.record(start).await.unwrap();

    let mut exchange = guard.exchange(&agent);
    exchange.event().action = Some("tools/call".into());
    exchange.event().resource = Some("get_invoice".into());
    assert!(exchange.decide(&call("get_invoice")).is_allow());
    exchange.record_request(
        "request",
        json!({"name": "get_invoice", "arguments": {"id": 42}}),
    );
    exchange.record_answer("progress", json!({"progress": 1, "total": 2}));
    exchange.record_answer("result", json!({"text": HOSTILE}));
    exchange.finish(Outcome::Success).record().await.unwrap();

    let mut exchange = guard.exchange(&agent);
    exchange.event().action = Some("tools/call".into());
    exchange.event().resource = Some("delete_customer".into());
    exchange.record_request(
        "request",
        json!({"name": "delete_customer", "arguments": {"id": 7}}),
    );
    let verdict = exchange.decide(&call("delete_customer"));
    let Decision::Deny { reason } = &verdict.decision else {
        panic!("denied: {verdict:?}")
    };
    let refusal = Refusal::new(RefusalKind::Denied, format!("refused: {reason}")).by(&verdict);
    exchange.refuse(&refusal).record().await.unwrap();

    let mut exchange = guard.exchange(&agent);
    exchange.event().action = Some("tools/call".into());
    exchange.event().resource = Some("refund_payment".into());
    exchange.record_request(
        "request",
        json!({"method": "tools/call", "params": {"name": "refund_payment", "arguments": {"amount": 900}}}),
    );
    let verdict = exchange.decide(&call("refund_payment"));
    let Decision::Hold(requirement) = verdict.decision.clone() else {
        panic!("held: {verdict:?}")
    };
    let (told, mut waiting) = mpsc::unbounded_channel::<String>();
    let approver = {
        let approvals = approvals.clone();
        tokio::spawn(async move {
            let id = waiting.recv().await.unwrap();
            let lead = person("lead-1", &["leads"], IdentityKind::Human);
            let approval = approvals.get(&lead, &id).await.unwrap();
            approvals
                .decide(&lead, &id, true, "customer called, ok", &approval.digest)
                .await
                .unwrap();
        })
    };
    let ask = HoldAsk {
        what: "tools/call \"refund_payment\"".into(),
        action: "tools/call".into(),
        resource: Some("refund_payment".into()),
        shown: Some(json!({"amount": 900})),
        digest: None,
        reason: Some("refund the double charge".into()),
    };
    exchange
        .hold(&verdict, requirement, ask, &mut Waiting(told))
        .await
        .expect("approved");
    approver.await.unwrap();
    exchange.record_answer("result", json!({"text": "refunded 900"}));
    exchange.finish(Outcome::Success).record().await.unwrap();

    let mut exchange = guard.exchange(&agent);
    exchange.event().action = Some("tools/call".into());
    exchange.decide(&call("get_customers"));
    exchange.record_request("query", json!("SELECT id, name FROM customers"));
    exchange.record_answer("columns", json!(["id", "name"]));
    exchange.record_row(json!([1, "Ada"]));
    exchange.record_row(json!([2, "Grace\u{1b}[8m"]));
    exchange.record_answer("complete", json!("SELECT 2"));
    exchange.finish(Outcome::Success).record().await.unwrap();

    let mut end = guard.event(EventType::SessionEnd, Outcome::Info);
    end.session = Some(SESSION.into());
    end.identity = Some((*agent.identity).clone());
    end.target = Some("billing".into());
    guard.record(end).await.unwrap();
}

fn portcullis(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env("USER", "auditor-os")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn data_arg(r: &Recorded) -> String {
    r.data.to_str().unwrap().to_string()
}

fn events(data: &Path, ty: &str) -> Vec<Value> {
    portcullis_audit::AuditReader::open(data)
        .unwrap()
        .last(100_000)
        .unwrap()
        .into_iter()
        .map(|(_, body)| serde_json::from_str::<Value>(&body).unwrap())
        .filter(|v| v["type"] == ty)
        .collect()
}

#[test]
fn list_show_and_replay_a_recorded_session() {
    let r = recorded();
    let dir = data_arg(&r);

    let out = portcullis(&["sessions", "list", "--data-dir", &dir, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 2, "{list:#?}");
    let session = list
        .iter()
        .find(|s| s["id"] == SESSION)
        .expect("the session");
    assert_eq!(session["who"], "billing-agent");
    assert_eq!(session["target"], "billing");
    assert_eq!(session["requests"], 4);
    assert_eq!(session["denied"], 1);
    assert_eq!(session["held"], 1);
    assert_eq!(session["recorded"], true);
    assert_eq!(session["state"], "ended");
    let alone = list
        .iter()
        .find(|s| s["id"] == r.stateless.as_str())
        .unwrap();
    assert_eq!(
        (alone["requests"].as_u64(), alone["stateless"].as_bool()),
        (Some(1), Some(true))
    );

    let out = portcullis(&["sessions", "list", "--data-dir", &dir]);
    let table = text(&out.stdout);
    assert!(table.starts_with("SESSION"), "{table}");
    assert!(table.contains(SESSION) && table.contains("yes"), "{table}");
    let out = portcullis(&[
        "sessions",
        "list",
        "--data-dir",
        &dir,
        "--who",
        "someone-else",
    ]);
    assert_eq!(text(&out.stdout).trim(), "no sessions");
    let out = portcullis(&[
        "sessions",
        "list",
        "--data-dir",
        &dir,
        "--since",
        "2h",
        "--target",
        "billing",
    ]);
    assert!(text(&out.stdout).contains(SESSION));
    let out = portcullis(&[
        "sessions",
        "list",
        "--data-dir",
        &dir,
        "--until",
        "2000-01-01",
    ]);
    assert_eq!(text(&out.stdout).trim(), "no sessions");

    let out = portcullis(&["sessions", "show", SESSION, "--data-dir", &dir]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for expected in [
        "get_invoice {\"id\":42}",
        "decision deny by rule \"no deletes\"",
        "approval.requested",
        "approval.approved by lead-1",
        "customer called, ok",
        "SELECT id, name FROM customers",
        "2 rows",
        "session.end",
    ] {
        assert!(shown.contains(expected), "{expected:?} in\n{shown}");
    }
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{9b}'),
        "{shown}"
    );

    let out = portcullis(&[
        "sessions",
        "replay",
        SESSION,
        "--speed",
        "0",
        "--data-dir",
        &dir,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !out.stdout.contains(&0x1b) && !text(&out.stdout).contains('\u{9b}'),
        "no escape reaches the terminal"
    );
    let replayed = text(&out.stdout);
    for expected in [
        "\"name\": \"get_invoice\"",
        "invoice 42 \\u{1b}[2J",
        "ms progress\n",
        "decision: hold",
        "approval.approved by lead-1",
        "refunded 900",
        "SELECT id, name FROM customers",
        "id  name",
        "Grace\\u{1b}[8m",
        "outcome: denied",
    ] {
        assert!(replayed.contains(expected), "{expected:?} in\n{replayed}");
    }

    // Each read is in the log, with who read it.
    let accessed = events(&r.data, "recording.accessed");
    assert_eq!(accessed.len(), 2, "{accessed:#?}");
    assert_eq!(accessed[0]["identity"]["subject"], "auditor-os");
    assert_eq!(accessed[0]["identity"]["auth_method"], "local");
    assert_eq!(accessed[1]["action"], "sessions replay");
    assert_eq!(accessed[1]["resource"], SESSION);
    assert!(
        accessed[1].get("session").is_none(),
        "not part of the session it read"
    );
    let out = portcullis(&[
        "sessions",
        "show",
        &r.stateless,
        "--data-dir",
        &dir,
        "--as",
        "carol",
        "--json",
    ]);
    let timeline: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        timeline["entries"][0]["request"]["summary"],
        "get_status {}"
    );
    assert_eq!(
        events(&r.data, "recording.accessed")[2]["identity"]["subject"],
        "carol"
    );
    let out = portcullis(&[
        "sessions",
        "replay",
        &r.stateless,
        "--speed",
        "0",
        "--data-dir",
        &dir,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let replayed = text(&out.stdout);
    assert!(
        replayed.contains("      all good\n      second line\n")
            && replayed.contains("\"isError\": false"),
        "{replayed}"
    );
}

#[test]
fn an_unknown_session_is_a_clear_error() {
    let r = recorded();
    let dir = data_arg(&r);
    let out_file = r.data.join("x.json");
    for args in [
        vec!["sessions", "show", "no-such-session", "--data-dir", &dir],
        vec!["sessions", "replay", "no-such-session", "--data-dir", &dir],
        vec![
            "sessions",
            "export",
            "no-such-session",
            "--out",
            out_file.to_str().unwrap(),
            "--data-dir",
            &dir,
        ],
    ] {
        let out = portcullis(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains("no session no-such-session"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(
        events(&r.data, "recording.accessed").is_empty(),
        "nothing was read"
    );
}

#[test]
fn an_altered_chunk_is_shown_as_damage_and_the_replay_fails() {
    let r = recorded();
    let invoice = events(&r.data, "request")
        .into_iter()
        .find(|e| e["resource"] == "get_invoice")
        .unwrap();
    let answer = invoice["recorded"]["answer"].as_str().unwrap().to_string();
    let db = rusqlite::Connection::open(r.data.join("audit.db")).unwrap();
    let (seq, mut bytes): (i64, Vec<u8>) = db
        .query_row(
            "SELECT seq, bytes FROM chunks WHERE id = ?1",
            [&answer],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    // Chunks cannot be updated; a forger deletes and inserts.
    db.execute("DELETE FROM chunks WHERE id = ?1", [&answer])
        .unwrap();
    db.execute(
        "INSERT INTO chunks (id, seq, bytes) VALUES (?1, ?2, ?3)",
        rusqlite::params![answer, seq, bytes],
    )
    .unwrap();
    drop(db);
    let dir = data_arg(&r);
    let out = portcullis(&[
        "sessions",
        "replay",
        SESSION,
        "--speed",
        "0",
        "--data-dir",
        &dir,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let replayed = text(&out.stdout);
    assert!(
        replayed.contains(&format!(
            "[recording of the answer: chunk {answer} was altered]"
        )),
        "{replayed}"
    );
    // The rest of the session is still played.
    assert!(replayed.contains("refunded 900"), "{replayed}");
    let out = portcullis(&["sessions", "show", SESSION, "--data-dir", &dir]);
    assert!(text(&out.stdout).contains(&format!("came back: [chunk {answer} was altered]")));
}

fn export(r: &Recorded, name: &str) -> PathBuf {
    let file = r.data.parent().unwrap().join(name);
    let out = portcullis(&[
        "sessions",
        "export",
        SESSION,
        "--out",
        file.to_str().unwrap(),
        "--data-dir",
        &data_arg(r),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    file
}

fn verify_bundle(r: &Recorded, file: &Path) -> Output {
    portcullis(&[
        "sessions",
        "verify-bundle",
        file.to_str().unwrap(),
        "--pubkey",
        r.pubkey.to_str().unwrap(),
    ])
}

#[test]
fn an_exported_bundle_verifies_offline_and_any_tampering_is_named() {
    let r = recorded();
    let file = export(&r, "bundle.json");
    assert_eq!(
        events(&r.data, "recording.accessed")[0]["action"],
        "sessions export"
    );
    // Offline: the bundle alone, on a machine without the data directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("bundle.json");
    std::fs::copy(&file, &copy).unwrap();
    let out = verify_bundle(&r, &copy);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ok = text(&out.stdout);
    assert!(ok.starts_with("bundle OK: session mcp-session-1"), "{ok}");
    let bundle: Value = serde_json::from_slice(&std::fs::read(&copy).unwrap()).unwrap();
    assert_eq!(bundle["format"], "portcullis-session-bundle/1");
    let kinds: Vec<String> = bundle["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e["event"].as_str().unwrap()).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        kinds.contains(&"approval.approved".to_string()),
        "{kinds:?}"
    );
    assert_eq!(
        bundle["chunks"].as_array().unwrap().len(),
        8,
        "two sides of four requests"
    );

    let tamper = |name: &str, change: &dyn Fn(&mut Value)| -> String {
        let mut altered = bundle.clone();
        change(&mut altered);
        let path = elsewhere.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(&altered).unwrap()).unwrap();
        let out = verify_bundle(&r, &path);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out.stdout));
        text(&out.stderr)
    };
    let first_event =
        serde_json::from_str::<Value>(bundle["events"][1]["event"].as_str().unwrap()).unwrap();
    let id = first_event["id"].as_str().unwrap().to_string();
    let said = tamper("event.json", &|b| {
        let e = b["events"][1]["event"]
            .as_str()
            .unwrap()
            .replace("billing-agent", "billing-agenT");
        b["events"][1]["event"] = Value::String(e);
    });
    assert!(
        said.contains(&format!("event {id}"))
            && said.contains("does not match the signed checkpoint"),
        "{said}"
    );
    let said = tamper("proof.json", &|b| {
        b["events"][1]["inclusion_proof"][0] = Value::String(B64.encode([7u8; 32]));
    });
    assert!(said.contains(&format!("event {id}")), "{said}");
    let chunk_id = bundle["chunks"][0]["id"].as_str().unwrap().to_string();
    let said = tamper("chunk.json", &|b| {
        let mut bytes = B64
            .decode(b["chunks"][0]["bytes"].as_str().unwrap())
            .unwrap();
        bytes[20] ^= 0x40;
        b["chunks"][0]["bytes"] = Value::String(B64.encode(bytes));
    });
    assert!(
        said.contains(&format!("chunk {chunk_id} was altered")),
        "{said}"
    );
    let said = tamper("missing.json", &|b| {
        b["chunks"].as_array_mut().unwrap().remove(0);
    });
    assert!(
        said.contains(&format!("chunk {chunk_id} named by event")) && said.contains("missing"),
        "{said}"
    );
    let said = tamper("checkpoint.json", &|b| {
        let note = b["checkpoint"]
            .as_str()
            .unwrap()
            .replacen("gw-sessions", "gw-other", 1);
        b["checkpoint"] = Value::String(note);
    });
    assert!(said.contains("checkpoint"), "{said}");
    let said = tamper("format.json", &|b| b["format"] = json!("something/2"));
    assert!(said.contains("something/2"), "{said}");

    // Another key: the signature does not verify.
    let other = elsewhere.path().join("other");
    keys::generate(&other, keys::AUDIT_KEY, "sessions-test").unwrap();
    let out = portcullis(&[
        "sessions",
        "verify-bundle",
        copy.to_str().unwrap(),
        "--pubkey",
        other.join("audit.pub").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn pruning_logs_the_removal_then_removes_and_the_log_still_verifies() {
    let r = recorded();
    let dir = data_arg(&r);
    let all: Vec<String> = events(&r.data, "request")
        .iter()
        .flat_map(|e| {
            [&e["recorded"]["request"], &e["recorded"]["answer"]]
                .into_iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(all.len(), 10);
    let out = portcullis(&[
        "recordings",
        "prune",
        "--before",
        "2000-01-01",
        "--data-dir",
        &dir,
    ]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("no recordings"),
        "{}",
        text(&out.stdout)
    );

    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let out = portcullis(&[
        "recordings",
        "prune",
        "--before",
        &tomorrow,
        "--data-dir",
        &dir,
        "--dry-run",
    ]);
    assert!(
        text(&out.stdout).contains("would remove 10 recorded chunk(s)"),
        "{}",
        text(&out.stdout)
    );
    assert!(events(&r.data, "recording.removed").is_empty());
    let out = portcullis(&[
        "recordings",
        "prune",
        "--before",
        &tomorrow,
        "--data-dir",
        &dir,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("removed 10 recorded chunk(s)"),
        "{}",
        text(&out.stdout)
    );

    let removed = events(&r.data, "recording.removed");
    assert_eq!(removed.len(), 1);
    let named: Vec<String> = removed[0]["removed"]["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let mut expected = all.clone();
    expected.sort();
    let mut got = named.clone();
    got.sort();
    assert_eq!(got, expected, "the event names every chunk removed");
    assert_eq!(removed[0]["identity"]["subject"], "auditor-os");
    let db = rusqlite::Connection::open(r.data.join("audit.db")).unwrap();
    let left: i64 = db
        .query_row("SELECT COUNT(*) FROM chunks", [], |row| row.get(0))
        .unwrap();
    assert_eq!(left, 0);
    drop(db);

    let out = portcullis(&[
        "audit",
        "verify",
        "--data-dir",
        &dir,
        "--pubkey",
        r.pubkey.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{} {}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // The timeline says the recordings were removed on purpose, not lost.
    let out = portcullis(&["sessions", "show", SESSION, "--data-dir", &dir]);
    assert!(
        text(&out.stdout).contains("was removed by retention (event"),
        "{}",
        text(&out.stdout)
    );

    // Once a checkpoint covers the removal, a bundle carries the removal event in place of
    // the chunks, and verifies; taking the event out makes the chunks plain missing.
    let keys_dir = r.pubkey.parent().unwrap().to_path_buf();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let log = signed_log(&r.data, &keys_dir);
        log.checkpoint_now().await.unwrap();
        log.close().await.unwrap();
    });
    let file = export(&r, "after-prune.json");
    let out = verify_bundle(&r, &file);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("8 removed by retention as logged"),
        "{}",
        text(&out.stdout)
    );
    let mut bundle: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(bundle["chunks"].as_array().unwrap().is_empty());
    bundle["events"].as_array_mut().unwrap().retain(|e| {
        !e["event"]
            .as_str()
            .unwrap()
            .contains("\"type\":\"recording.removed\"")
    });
    std::fs::write(&file, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let out = verify_bundle(&r, &file);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no retention event in it removed it"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_admin_api_serves_sessions_to_approvers_only_and_logs_each_read() {
    let r = recorded();
    let (data, pubkey) = (r.data.clone(), r.pubkey.clone());
    let agent = common::api_key("billing-agent", "agent", &["agents"]);
    let lead = common::api_key("lead-1", "human", &["leads"]);
    let admin_port = common::free_port();
    let rest = format!(
        "{}{}[targets.billing]\nkind = \"mcp\"\n{}\n{}",
        agent.config,
        lead.config,
        common::demo_server_command(),
        CONFIG
            .split_once("[recording]")
            .unwrap()
            .1
            .split_once("\n\n")
            .unwrap()
            .1
    );
    let _gw = common::Gateway::start_in(
        r.tmp,
        &rest,
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        &[],
    );
    let admin = format!("http://127.0.0.1:{admin_port}/api/v1");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = reqwest::Client::new();
        let get = |path: String, key: Option<String>| {
            let request = client.get(format!("{admin}{path}"));
            let request = match key {
                Some(key) => request.bearer_auth(key),
                None => request,
            };
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap())
            }
        };
        let (status, _) = get("/sessions".into(), None).await;
        assert_eq!(status, 401);
        let (status, body) = get("/sessions".into(), Some(agent.key.clone())).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "not_a_reader");
        let (status, body) = get(format!("/sessions/{SESSION}"), Some(agent.key.clone())).await;
        assert_eq!(status, 403, "{body}");

        let (status, body) =
            get("/sessions?who=billing-agent".into(), Some(lead.key.clone())).await;
        assert_eq!(status, 200, "{body}");
        let ids: Vec<&str> = body["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&SESSION), "{body}");
        let (status, body) = get("/sessions?since=yesterday".into(), Some(lead.key.clone())).await;
        assert_eq!(status, 400, "{body}");

        let (status, timeline) = get(format!("/sessions/{SESSION}"), Some(lead.key.clone())).await;
        assert_eq!(status, 200, "{timeline}");
        assert_eq!(timeline["session"]["requests"], 4);
        let entries = timeline["entries"].as_array().unwrap();
        assert!(
            entries.iter().any(|e| e["request"]["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("refund_payment"))),
            "{timeline}"
        );
        let (status, _) = get("/sessions/no-such-session".into(), Some(lead.key.clone())).await;
        assert_eq!(status, 404);

        let (status, bundle) = get(
            format!("/sessions/{SESSION}/export"),
            Some(lead.key.clone()),
        )
        .await;
        assert_eq!(status, 200, "{bundle}");
        let file = pubkey.parent().unwrap().join("from-api.json");
        std::fs::write(&file, serde_json::to_vec(&bundle).unwrap()).unwrap();
        let out = portcullis(&[
            "sessions",
            "verify-bundle",
            file.to_str().unwrap(),
            "--pubkey",
            pubkey.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    });
    let accessed = events(&data, "recording.accessed");
    assert_eq!(
        accessed.len(),
        2,
        "the timeline and the export: {accessed:#?}"
    );
    assert!(
        accessed
            .iter()
            .all(|e| e["identity"]["subject"] == "lead-1")
    );
    assert_eq!(accessed[1]["action"], "GET /api/v1/sessions/{id}/export");

    // The command line appends beside the running gateway, which goes on after it.
    let dir = data.to_str().unwrap().to_string();
    let out = portcullis(&["sessions", "show", SESSION, "--data-dir", &dir]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::Client::new()
            .get(format!("{admin}/sessions/{SESSION}"))
            .bearer_auth(&lead.key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);
    let accessed = events(&data, "recording.accessed");
    assert_eq!(accessed.len(), 4, "{accessed:#?}");
    assert_eq!(accessed[2]["identity"]["auth_method"], "local");
    assert_eq!(accessed[3]["identity"]["subject"], "lead-1");
    let out = portcullis(&[
        "audit",
        "verify",
        "--data-dir",
        &dir,
        "--pubkey",
        pubkey.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
