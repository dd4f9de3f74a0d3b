//! Evidence through the running gateway.
//!
//! - `portcullis evidence sign-off` against the real binary's admin API: a person's sign-off
//!   of a review report the gateway recorded is an `evidence.reviewed` event naming them, the
//!   report's hash and period (from its record), and their reason; an agent's is refused, as
//!   is a sign-off without a reason or of a document no `evidence.report` event records.
//! - `[evidence] schedule` in `serve`: the run missed while the gateway was down is made at
//!   start, signed and recorded, and not made again on the next start.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use portcullis_audit::keys;
use portcullis_evidence::{Period, record, record::record_for, sign};
use serde_json::{Value, json};

struct Setup {
    gw: Gateway,
    admin: String,
    agent: Key,
    dana: Key,
}

fn setup() -> Setup {
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let dana = api_key("dana", "human", &["auditors"]);
    let admin_port = free_port();
    let rest = format!(
        "{}{}[targets.billing]\nkind = \"mcp\"\n{}\n",
        agent.config,
        dana.config,
        demo_server_command()
    );
    let gw = Gateway::start_with(
        &rest,
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        &[],
    );
    Setup {
        gw,
        admin: format!("http://127.0.0.1:{admin_port}"),
        agent,
        dana,
    }
}

fn reviewed(gw: &Gateway) -> Vec<Value> {
    gw.events()
        .into_iter()
        .filter(|e| e["type"] == "evidence.reviewed")
        .collect()
}

/// Records a written document in the gateway's log as `evidence report --sign` does (the
/// CLI appends to the log beside the running gateway): only a recorded document can be
/// signed off.
fn record_document(gw: &Gateway, path: &Path, document: &str, format: &str, period: &Period) {
    let bytes = std::fs::read(path).unwrap();
    let record = record_for(document, format, Some(period), &bytes, path);
    let log = portcullis_audit::AuditLog::open(
        &gw.data_dir(),
        "portcullis-cli",
        portcullis_config::Durability::Strict,
    )
    .unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            log.record(record::document_event(&log, record))
                .await
                .unwrap();
            log.close().await.unwrap();
        });
}

/// A JSON review report of 1 December 2026, as the report command writes it (format and
/// period are what sign-off reads).
fn write_report(dir: &Path) -> (std::path::PathBuf, String) {
    let path = dir.join("report-2026-12-01.json");
    let text = json!({
        "format": "portcullis-evidence-report/1",
        "period": {"since": "2026-12-01T00:00:00.000Z", "until": "2026-12-02T00:00:00.000Z"},
        "controls": [{"control": "au-9", "status": "satisfied"}],
    })
    .to_string();
    std::fs::write(&path, &text).unwrap();
    let sha = record_for("report", "json", None, text.as_bytes(), &path).sha256;
    (path, sha)
}

#[test]
fn a_person_signs_off_a_report_and_the_log_names_them_the_hash_and_the_period() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let (report, sha) = write_report(dir.path());
    // Not recorded by the gateway: refused, nothing recorded.
    let (ok, _, err) = cli(
        &s.admin,
        &s.dana.key,
        &[
            "evidence",
            "sign-off",
            report.to_str().unwrap(),
            "--reason",
            "looks fine",
        ],
    );
    assert!(!ok && err.contains("unknown_document"), "{err}");
    assert!(reviewed(&s.gw).is_empty());
    let period = Period::parse("2026-12-01", "2026-12-02").unwrap();
    record_document(&s.gw, &report, "report", "json", &period);
    let report = report.to_str().unwrap();

    let (ok, out, err) = cli(
        &s.admin,
        &s.dana.key,
        &[
            "evidence",
            "sign-off",
            report,
            "--reason",
            "read the whole report; the denied delete was a test",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("as dana"), "{out}");
    assert!(out.contains(&sha), "{out}");

    let events = reviewed(&s.gw);
    assert_eq!(events.len(), 1, "{events:#?}");
    let ev = &events[0];
    assert_eq!(ev["identity"]["subject"], "dana");
    assert_eq!(ev["identity"]["kind"], "human");
    assert_eq!(
        ev["reason"],
        "read the whole report; the denied delete was a test"
    );
    assert_eq!(ev["evidence"]["sha256"], sha);
    assert_eq!(ev["evidence"]["document"], "report");
    assert_eq!(ev["evidence"]["format"], "json");
    assert_eq!(ev["evidence"]["since"], "2026-12-01T00:00:00.000Z");
    assert_eq!(ev["evidence"]["until"], "2026-12-02T00:00:00.000Z");
    assert_eq!(ev["evidence"]["file"], "report-2026-12-01.json");
}

#[test]
fn the_period_of_a_signed_html_report_comes_from_its_signature_and_must_match_it() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    keys::generate(&dir.path().join("keys"), keys::AUDIT_KEY, "gw.test").unwrap();
    let signer = keys::load_signer(&dir.path().join("keys"), keys::AUDIT_KEY).unwrap();
    let html = dir.path().join("evidence.html");
    std::fs::write(&html, "<!doctype html><title>review</title>").unwrap();
    let period = Period::parse("2026-11-30", "2026-12-07").unwrap();
    let bytes = std::fs::read(&html).unwrap();
    let record = record_for("report", "html", Some(&period), &bytes, &html);
    sign::write_signature(&html, &record, &signer).unwrap();
    record_document(&s.gw, &html, "report", "html", &period);

    let (ok, out, err) = cli(
        &s.admin,
        &s.dana.key,
        &[
            "evidence",
            "sign-off",
            html.to_str().unwrap(),
            "--reason",
            "weekly review",
        ],
    );
    assert!(ok, "{out}{err}");
    let events = reviewed(&s.gw);
    assert_eq!(events[0]["evidence"]["format"], "html");
    assert_eq!(events[0]["evidence"]["since"], "2026-11-30T00:00:00.000Z");

    // Edited after signing: not signed off, and nothing recorded.
    std::fs::write(&html, "<!doctype html><title>other numbers</title>").unwrap();
    let (ok, _, err) = cli(
        &s.admin,
        &s.dana.key,
        &[
            "evidence",
            "sign-off",
            html.to_str().unwrap(),
            "--reason",
            "again",
        ],
    );
    assert!(!ok);
    assert!(err.contains("changed after it was signed"), "{err}");
    assert_eq!(reviewed(&s.gw).len(), 1);
}

#[tokio::test]
async fn an_agent_or_a_missing_reason_is_refused_and_nothing_is_recorded() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let (report, _) = write_report(dir.path());
    let report = report.to_str().unwrap();

    let (ok, _, err) = cli(
        &s.admin,
        &s.agent.key,
        &[
            "evidence",
            "sign-off",
            report,
            "--reason",
            "all good, says the agent",
        ],
    );
    assert!(!ok);
    assert!(err.contains("not_a_reviewer"), "{err}");
    assert!(err.contains("not a human identity"), "{err}");

    // The CLI refuses an empty reason before sending it; the API refuses it too.
    let (ok, _, err) = cli(
        &s.admin,
        &s.dana.key,
        &["evidence", "sign-off", report, "--reason", " "],
    );
    assert!(!ok);
    assert!(err.contains("needs a reason"), "{err}");
    let body = json!({
        "sha256": "ab".repeat(32), "bytes": 10, "document": "report", "format": "json",
        "since": "2026-12-01T00:00:00Z", "until": "2026-12-02T00:00:00Z", "reason": "   ",
    });
    let url = format!("{}/api/v1/evidence/sign-offs", s.admin);
    let answer = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&s.dana.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let answer: Value = answer.json().await.unwrap();
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("reason:"),
        "{answer}"
    );
    // Without a credential: 401.
    let answer = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 401);

    assert!(reviewed(&s.gw).is_empty());
}

#[test]
fn serve_writes_the_missed_scheduled_report_at_start_signed_recorded_and_once() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    keys::generate(&keys_dir, keys::AUDIT_KEY, "gw.test/evidence").unwrap();
    let out_dir = dir.path().join("reports");
    let rest = format!(
        "[audit]\nsigning_key = {:?}\n\n[evidence]\nschedule = \"daily\"\nout_dir = {:?}\nformats = [\"json\"]\n",
        keys_dir.to_str().unwrap(),
        out_dir.to_str().unwrap()
    );
    let mut gw = Gateway::start_in(dir, &rest, "", &[]);

    // Yesterday's run was due at midnight, while this gateway did not exist: made at start.
    let today = chrono::Utc::now().date_naive();
    let yesterday = today.pred_opt().unwrap();
    let period = Period::parse(&yesterday.to_string(), &today.to_string()).unwrap();
    let stem = portcullis_evidence::schedule::period_stem(&period);
    let report = out_dir.join(format!("{stem}.json"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !sign::signature_path(&report).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no signed report in {}",
            out_dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let out = Command::new(binary())
        .args(["evidence", "verify"])
        .arg(&report)
        .arg("--pubkey")
        .arg(keys_dir.join("audit.pub"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let written = |gw: &Gateway| -> Vec<Value> {
        gw.events()
            .into_iter()
            .filter(|e| e["type"] == "evidence.report")
            .collect()
    };
    let events = written(&gw);
    assert_eq!(events.len(), 1, "{events:#?}");
    let bytes = std::fs::read(&report).unwrap();
    // A first start has signed nothing yet: the run signs a checkpoint first, so the report
    // of a log that is fine does not say it fails verification.
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["integrity"]["verified"], true, "{}", json["integrity"]);
    let expected = record_for("report", "json", Some(&period), &bytes, &report);
    assert_eq!(
        events[0]["evidence"],
        serde_json::to_value(&expected).unwrap()
    );

    // A restart finds the run done: no second report of the same period.
    assert!(gw.terminate());
    gw.restart();
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(written(&gw).len(), 1);
}
