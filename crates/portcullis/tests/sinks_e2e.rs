//! Audit sinks through the real binary: `serve` streams its log to a file sink (with the
//! signed checkpoints), `sinks status` reports delivery and lag, `audit verify-export`
//! proves the copy complete (and catches an edit), a clean stop delivers the stop event and
//! its checkpoint, `sinks replay` sends a range again, and a sink whose receiver is
//! unusable at start does not stop the gateway: it lags, and its status says why.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `portcullis audit verify-export FILE --pubkey KEY`: (exit code, output).
fn verify_export(file: &Path, pubkey: &Path) -> (i32, String) {
    run(&[
        "audit",
        "verify-export",
        path(file),
        "--pubkey",
        path(pubkey),
    ])
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn records(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Whether the file holds a checkpoint covering the whole log.
fn covers_log(file: &Path, gw: &Gateway) -> bool {
    let events = gw.events().len() as u64;
    records(file)
        .iter()
        .any(|r| r["record"] == "checkpoint" && r["size"].as_u64() == Some(events))
}

struct Setup {
    gw: Gateway,
    pubkey: PathBuf,
    lake: PathBuf,
    agent: Key,
    config: PathBuf,
    _keys: tempfile::TempDir,
}

fn setup() -> Setup {
    let keys = tempfile::tempdir().unwrap();
    let audit_key = keys.path().join("audit-key");
    let (code, out) = run(&["keys", "audit-init", "--out", path(&audit_key)]);
    assert_eq!(code, 0, "{out}");
    // A "directory" that is a file: the second sink cannot write, from the start.
    let blocked = keys.path().join("not-a-directory");
    std::fs::write(&blocked, b"").unwrap();
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake/audit.jsonl");
    let rest = format!(
        "[audit]\nsigning_key = {:?}\ncheckpoint_interval = \"100ms\"\n\n{}\n[targets.billing]\nkind = \"mcp\"\n{}\n\n\
         [[rules]]\nname = \"agents look up customers\"\nwho.groups = [\"agents\"]\ntarget = \"billing\"\ntools = [\"lookup_customer\"]\n\n\
         [[sinks]]\nname = \"lake\"\nkind = \"file\"\npath = \"lake/audit.jsonl\"\nbatch_max = 3\n\n\
         [[sinks]]\nname = \"broken\"\nkind = \"file\"\npath = {:?}\nretry_max = \"1s\"\n",
        path(&audit_key),
        agent.config,
        demo_server_command(),
        path(&blocked.join("audit.jsonl")),
    );
    let gw = Gateway::start_in(dir, &rest, "", &[]);
    let config = gw.data_dir().parent().unwrap().join("portcullis.toml");
    Setup {
        gw,
        pubkey: audit_key.join("audit.pub"),
        lake,
        agent,
        config,
        _keys: keys,
    }
}

fn status(config: &Path) -> Vec<Value> {
    let (code, out) = run(&["sinks", "status", "--json", "--config", path(config)]);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_reaches_a_file_sink_complete_and_provably_so() {
    let mut s = setup();
    let client = reqwest::Client::new();
    for id in 1..=5 {
        let (status, _) = modern_call(
            &client,
            &s.gw.url("billing"),
            &s.agent.key,
            id,
            "tools/call",
            json!({"name": "lookup_customer", "arguments": {"customer": "cus_1001"}}),
        )
        .await;
        assert_eq!(status, 200);
    }
    wait_for("the lake to hold a checkpoint of the whole log", || {
        covers_log(&s.lake, &s.gw)
    });

    // Status: the file sink is caught up; the broken one lags and says why. The cursor is
    // saved just after the file is written, so the file can hold the checkpoint a moment
    // before the status says so: wait for the cursor too.
    wait_for("the file sink's cursor to reach the head", || {
        status(&s.config)
            .iter()
            .any(|l| l["name"] == "lake" && l["delivered"] == l["head"])
    });
    let statuses = status(&s.config);
    let lake = statuses.iter().find(|s| s["name"] == "lake").unwrap();
    assert_eq!(lake["delivered"], lake["head"], "{lake}");
    assert_eq!(lake["lag_events"], 0);
    let broken = statuses.iter().find(|s| s["name"] == "broken").unwrap();
    assert_eq!(broken["delivered"], 0, "{broken}");
    assert!(broken["lag_events"].as_u64().unwrap() > 0, "{broken}");
    assert_eq!(broken["state"], "retrying", "{broken}");
    assert!(
        broken["last_error"]
            .as_str()
            .unwrap()
            .contains("not-a-directory"),
        "{broken}"
    );
    let (code, table) = run(&["sinks", "status", "--config", path(&s.config)]);
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains("lake  file ->") && table.contains("last error"),
        "{table}"
    );

    // Every event is in the file, once, in leaf order, and the copy verifies.
    let events: Vec<u64> = records(&s.lake)
        .iter()
        .filter(|r| r["record"] == "event")
        .map(|r| r["leaf_index"].as_u64().unwrap())
        .collect();
    assert_eq!(events, (0..events.len() as u64).collect::<Vec<_>>());
    let tools: Vec<Value> = records(&s.lake)
        .into_iter()
        .filter(|r| r["event"]["resource"] == "lookup_customer")
        .collect();
    assert!(tools.len() >= 5, "{tools:?}");
    let (code, out) = verify_export(&s.lake, &s.pubkey);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("valid: portcullis/"), "{out}");

    // An edited copy is refused, naming the leaf.
    let text = std::fs::read_to_string(&s.lake).unwrap();
    let edited_file = s.lake.with_extension("edited");
    std::fs::write(
        &edited_file,
        text.replacen(
            "\"resource\":\"lookup_customer\"",
            "\"resource\":\"lookup_invoice\"",
            1,
        ),
    )
    .unwrap();
    let (code, out) = verify_export(&edited_file, &s.pubkey);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("was edited"), "{out}");
    let (code, out) = verify_export(&s.lake, Path::new("/nonexistent.pub"));
    assert_eq!(code, 2, "{out}");

    // A clean stop delivers the stop event and the checkpoint covering it.
    assert!(s.gw.terminate());
    let last = records(&s.lake);
    let stop = last
        .iter()
        .find(|r| r["event"]["type"] == "gateway.stop")
        .expect("the stop event reached the sink");
    let stop_leaf = stop["leaf_index"].as_u64().unwrap();
    assert!(
        last.iter()
            .any(|r| r["record"] == "checkpoint" && r["size"].as_u64() == Some(stop_leaf + 1)),
        "the final checkpoint reached the sink"
    );

    // A replay sends a range again; the copy still verifies (duplicates are identical).
    let before = records(&s.lake).len();
    let (code, out) = run(&[
        "sinks",
        "replay",
        "lake",
        "--from",
        "2",
        "--config",
        path(&s.config),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("replayed to lake"), "{out}");
    assert!(records(&s.lake).len() > before);
    let (code, out) = verify_export(&s.lake, &s.pubkey);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("repeated records"), "{out}");
    let (code, out) = run(&[
        "sinks",
        "replay",
        "nope",
        "--from",
        "0",
        "--config",
        path(&s.config),
    ]);
    assert_ne!(code, 0);
    assert!(
        out.contains("no sink named \"nope\"") && out.contains("lake, broken"),
        "{out}"
    );
}

#[test]
fn check_config_names_a_misconfigured_sink_field_and_explains_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        "[[sinks]]\nname = \"siem\"\nkind = \"http\"\nurl = \"https://siem.internal/_bulk\"\npreset = \"elasticsearch\"\nsubject = \"audit\"\n",
    )
    .unwrap();
    let (code, out) = run(&["check-config", path(&config)]);
    assert_ne!(code, 0);
    assert!(
        out.contains("portcullis.toml:6")
            && out.contains("sinks[0].subject: a http sink does not take subject"),
        "{out}"
    );
    std::fs::write(
        &config,
        "[[sinks]]\nname = \"lake\"\nkind = \"file\"\npath = \"audit.jsonl\"\nevent_types = [\"approval.*\"]\n",
    )
    .unwrap();
    let (code, out) = run(&["check-config", path(&config)]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("sink lake (file -> ") && out.contains("events of types approval.*"),
        "{out}"
    );
    // Without a signing key the stream has no checkpoints to verify a copy against: said.
    assert!(
        out.contains("warning: audit.signing_key is not set")
            && !out.contains("checkpoints included"),
        "{out}"
    );
}
