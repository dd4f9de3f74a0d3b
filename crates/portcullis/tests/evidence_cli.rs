//! `portcullis evidence verify` and `evidence evaluate`, run as the real binary: their exit
//! codes (0 valid, 1 invalid or worse, 2 unusable input) and what they say.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use portcullis_audit::keys;
use portcullis_evidence::{Period, record::record_for, sign};

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A signed report and the key files: (dir, report, audit.pub).
fn signed_report() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    keys::generate(&keys_dir, keys::AUDIT_KEY, "gw.test/eu-1").unwrap();
    let signer = keys::load_signer(&keys_dir, keys::AUDIT_KEY).unwrap();
    let report = dir.path().join("report.json");
    let bytes = br#"{"controls":[{"control":"au-9","status":"satisfied"}]}"#;
    std::fs::write(&report, bytes).unwrap();
    let period = Period::parse("2026-12-01", "2026-12-02").unwrap();
    let record = record_for("report", "json", Some(&period), bytes, &report);
    sign::write_signature(&report, &record, &signer).unwrap();
    (dir, report, keys_dir.join("audit.pub"))
}

#[test]
fn verify_exits_0_for_a_signed_document_1_for_an_edited_one_2_for_a_bad_key() {
    let (dir, report, pubkey) = signed_report();
    let out = portcullis(&["evidence", "verify", s(&report), "--pubkey", s(&pubkey)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("signature OK: report (json), period [2026-12-01T00:00:00.000Z"));

    let mut bytes = std::fs::read(&report).unwrap();
    *bytes.last_mut().unwrap() = b' ';
    std::fs::write(&report, &bytes).unwrap();
    let out = portcullis(&["evidence", "verify", s(&report), "--pubkey", s(&pubkey)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("signature INVALID: the document was edited"),
        "{}",
        text(&out)
    );

    let other = dir.path().join("other");
    keys::generate(&other, keys::AUDIT_KEY, "gw.test/eu-1").unwrap();
    let out = portcullis(&[
        "evidence",
        "verify",
        s(&report),
        "--pubkey",
        s(&other.join("audit.pub")),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not by the key given"),
        "{}",
        text(&out)
    );

    let out = portcullis(&["evidence", "verify", s(&report), "--pubkey", s(&report)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--pubkey"), "{}", text(&out));

    std::fs::remove_file(sign::signature_path(&report)).unwrap();
    let out = portcullis(&["evidence", "verify", s(&report), "--pubkey", s(&pubkey)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no signature"), "{}", text(&out));

    let missing = dir.path().join("missing.json");
    let out = portcullis(&["evidence", "verify", s(&missing), "--pubkey", s(&pubkey)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

const BASELINE: &str = r#"{
  "format": "portcullis-evidence-report/1",
  "controls": [
    {"control": "au-9", "status": "satisfied"},
    {"control": "ac-5", "status": "satisfied"},
    {"control": "ia-2", "status": "not-satisfied"}
  ]
}"#;

/// The same period as OSCAL: AU-9 failed, AC-5 no longer assessed, IA-2 now satisfied.
const CURRENT_OSCAL: &str = r#"{
  "assessment-results": {
    "uuid": "0b7d5f7c-1111-5222-8333-444455556666",
    "results": [{
      "uuid": "0b7d5f7c-1111-5222-8333-444455556667",
      "findings": [
        {"uuid": "0b7d5f7c-1111-5222-8333-444455556668",
         "target": {"type": "statement-id", "target-id": "au-9_smt",
                    "status": {"state": "not-satisfied"}}},
        {"uuid": "0b7d5f7c-1111-5222-8333-444455556669",
         "target": {"type": "statement-id", "target-id": "ia-2_smt",
                    "status": {"state": "satisfied"}}}
      ]
    }]
  }
}"#;

#[test]
fn evaluate_names_each_control_that_got_worse_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("baseline.json");
    let current = dir.path().join("ar.json");
    std::fs::write(&baseline, BASELINE).unwrap();
    std::fs::write(&current, CURRENT_OSCAL).unwrap();

    let out = portcullis(&[
        "evidence",
        "evaluate",
        "--baseline",
        s(&baseline),
        s(&current),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("worse: ac-5: satisfied in the baseline, not assessed now"),
        "{said}"
    );
    assert!(
        said.contains("worse: au-9: satisfied in the baseline, not-satisfied now"),
        "{said}"
    );
    assert!(
        !said.contains("ia-2"),
        "an improvement is not a regression: {said}"
    );

    let out = portcullis(&[
        "evidence",
        "evaluate",
        "--baseline",
        s(&baseline),
        s(&baseline),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("no control got worse"),
        "{}",
        text(&out)
    );
}

#[test]
fn evaluate_exits_2_for_a_document_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("baseline.json");
    std::fs::write(&baseline, BASELINE).unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{\"controls\": 3}").unwrap();
    let missing = dir.path().join("missing.json");

    for current in [&garbage, &missing] {
        let out = portcullis(&[
            "evidence",
            "evaluate",
            "--baseline",
            s(&baseline),
            s(current),
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains(s(current)),
            "names the file: {}",
            text(&out)
        );
    }
}

#[test]
fn sign_off_of_a_report_that_cannot_be_read_exits_2_before_asking_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-report.html");
    let out = portcullis(&[
        "evidence",
        "sign-off",
        s(&missing),
        "--reason",
        "reviewed",
        "--url",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cannot read"), "{}", text(&out));
}
