//! Several replicas of a gateway, each with its own audit log (its own data directory,
//! `gateway.id` and signing key), all publishing to the same real witness: `audit verify`
//! and `evidence report` over all their logs at once, run as the real binary.
//!
//! - Both logs verify and are reported one by one; a log tampered with is named with its
//!   first bad entry while the other is still reported OK, and the exit code fails.
//! - The review report merges both logs' events, attributes each to its log, counts per
//!   replica, and carries each log's verification; AU-9 fails naming the tampered log.
//! - Two replicas configured with the same `gateway.id` are refused: their checkpoints are
//!   indistinguishable to witnesses.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(args: &[&str]) -> Output {
    Command::new(binary()).args(args).output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `portcullis witness` process that knows every replica's key; killed on drop.
struct Witness {
    child: Child,
    url: String,
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Witness {
    fn start(keys: &Path, state: &Path, log_keys: &[PathBuf]) -> Witness {
        let port = free_port();
        let mut cmd = Command::new(binary());
        cmd.args(["witness", "--key", path(keys), "--state", path(state)])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null());
        for key in log_keys {
            cmd.args(["--log-key", path(key)]);
        }
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let (child, _) = start_and_wait(&mut cmd, addr, "witness");
        Witness {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

/// One replica: its key directory, its published-checkpoint directory, its gateway.
struct Replica {
    key: PathBuf,
    checkpoints: PathBuf,
    gw: Gateway,
}

impl Replica {
    fn pubkey(&self) -> PathBuf {
        self.key.join("audit.pub")
    }

    fn data_dir(&self) -> PathBuf {
        self.gw.data_dir()
    }
}

/// Makes an audit key for each of `ids` (under `root`), starts a witness that knows them
/// all, then one gateway per id with its own data directory, key and checkpoint directory.
fn replicas(root: &Path, ids: &[&str], agent: &Key) -> (Witness, PathBuf, Vec<Replica>) {
    let witness_key = root.join("witness-key");
    let out = run(&[
        "keys",
        "witness-init",
        "--out",
        path(&witness_key),
        "--name",
        "witness.test/w1",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let keys: Vec<PathBuf> = ids
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let dir = root.join(format!("audit-key-{i}"));
            let out = run(&["keys", "audit-init", "--out", path(&dir)]);
            assert!(out.status.success(), "{:?}", text(&out));
            dir
        })
        .collect();
    let pubkeys: Vec<PathBuf> = keys.iter().map(|k| k.join("audit.pub")).collect();
    let witness = Witness::start(&witness_key, &root.join("witness-state"), &pubkeys);
    let replicas = ids
        .iter()
        .zip(keys)
        .enumerate()
        .map(|(i, (id, key))| {
            let checkpoints = root.join(format!("published-{i}"));
            let rest = format!(
                "[audit]\nsigning_key = {:?}\ncheckpoint_interval = \"100ms\"\ncheckpoint_dir = {:?}\n\n\
                 [[audit.witnesses]]\nurl = {:?}\nkey = {:?}\n\n{agent}\n\
                 [targets.billing]\nkind = \"mcp\"\n{cmd}\n\n\
                 [[rules]]\nname = \"agents look up customers\"\nwho.groups = [\"agents\"]\n\
                 target = \"billing\"\ntools = [\"lookup_customer\"]\n",
                path(&key),
                path(&checkpoints),
                witness.url,
                path(&witness_key.join("witness.pub")),
                agent = agent.config,
                cmd = demo_server_command(),
            );
            let gw = Gateway::start_with(&rest, &format!("id = {id:?}"), &[]);
            Replica {
                key,
                checkpoints,
                gw,
            }
        })
        .collect();
    (witness, witness_key.join("witness.pub"), replicas)
}

async fn lookups(client: &reqwest::Client, gw: &Gateway, key: &str, n: u64) {
    for id in 1..=n {
        let (status, body) = modern_call(
            client,
            &gw.url("billing"),
            key,
            id,
            "tools/call",
            json!({"name": "lookup_customer", "arguments": {"customer": "cus_1001"}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// `audit verify` over every replica's log, each with its own key.
fn verify_all(replicas: &[Replica], witness_pub: &Path) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(["audit", "verify", "--witness-key", path(witness_pub)]);
    for r in replicas {
        cmd.args(["--data-dir", path(&r.data_dir())]);
        cmd.args(["--pubkey", path(&r.pubkey())]);
        cmd.args(["--checkpoints", path(&r.checkpoints)]);
    }
    cmd.output().unwrap()
}

/// `evidence report --format json` over every replica's log; the exit code and the report.
fn report_all(replicas: &[Replica], witness_pub: &Path, since: &str, out: &Path) -> (i32, Value) {
    let mut cmd = Command::new(binary());
    cmd.args(["evidence", "report", "--format", "json", "--since", since])
        .args(["--out", path(out), "--witness-key", path(witness_pub)]);
    for r in replicas {
        cmd.args(["--data-dir", path(&r.data_dir())]);
        cmd.args(["--pubkey", path(&r.pubkey())]);
        cmd.args(["--checkpoints", path(&r.checkpoints)]);
    }
    let output = cmd.output().unwrap();
    let code = output.status.code().unwrap();
    assert!(
        code == 0 || code == 1,
        "evidence report: {:?}",
        text(&output)
    );
    let report = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    (code, report)
}

/// The seq of the first request event in a log.
fn first_request(data_dir: &Path) -> (u64, String) {
    let db = rusqlite::Connection::open(data_dir.join("audit.db")).unwrap();
    db.query_row(
        "SELECT seq, id FROM events WHERE type = 'request' ORDER BY seq LIMIT 1",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
    )
    .unwrap()
}

/// Changes one byte of an event's body the way an attacker with the disk would: the JSON
/// stays valid (a tool name's first letter), the hash does not.
fn tamper(data_dir: &Path, seq: u64) {
    let db = rusqlite::Connection::open(data_dir.join("audit.db")).unwrap();
    db.execute_batch("DROP TRIGGER events_no_update").unwrap();
    let mut body: Vec<u8> = db
        .query_row(
            "SELECT body FROM events WHERE seq = ?1",
            [seq as i64],
            |r| r.get(0),
        )
        .unwrap();
    let at = body.windows(6).position(|w| w == b"lookup").unwrap();
    body[at] = b'L';
    db.execute(
        "UPDATE events SET body = ?1 WHERE seq = ?2",
        rusqlite::params![body, seq as i64],
    )
    .unwrap();
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cosigned(data_dir: &Path) -> bool {
    let db = rusqlite::Connection::open_with_flags(
        data_dir.join("audit.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row("SELECT COUNT(*) FROM cosignatures", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap_or(0)
        > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_are_verified_and_reported_log_by_log() {
    let root = tempfile::tempdir().unwrap();
    let since =
        portcullis_evidence::period::stamp(chrono::Utc::now() - chrono::Duration::minutes(5));
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let (_witness, witness_pub, mut replicas) =
        replicas(root.path(), &["replica-a", "replica-b"], &agent);
    let client = reqwest::Client::new();
    lookups(&client, &replicas[0].gw, &agent.key, 3).await;
    lookups(&client, &replicas[1].gw, &agent.key, 2).await;
    // The same witness cosigns both logs' checkpoints.
    for r in &replicas {
        wait_for("a cosigned checkpoint", || cosigned(&r.data_dir()));
    }
    for r in &mut replicas {
        assert!(r.gw.terminate(), "the replica stops cleanly");
    }
    let (a, b) = (&replicas[0], &replicas[1]);

    // Both logs verify, each reported with its origin.
    let out = verify_all(&replicas, &witness_pub);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    for (r, origin) in [(a, "portcullis/replica-a"), (b, "portcullis/replica-b")] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("audit log {} ", r.data_dir().display())))
            .unwrap_or_else(|| panic!("no line for {origin}: {stdout}"));
        assert!(line.contains(&format!("({origin}): OK: ")), "{line}");
        // The witness cosigned this log's checkpoints, and the cosignatures verified.
        assert!(
            !line.contains(" 0 cosigned"),
            "cosigned by the witness: {line}"
        );
        assert!(!line.ends_with("verified: 0"), "{line}");
        eprintln!("{line}");
    }
    assert!(stdout.contains("all 2 audit logs OK"), "{stdout}");

    // The single-log form is unchanged.
    let out = run(&[
        "audit",
        "verify",
        "--data-dir",
        path(&a.data_dir()),
        "--pubkey",
        path(&a.pubkey()),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("audit log OK: "), "{stdout}");

    // One key for both logs: the other replica's log does not verify with it.
    let out = run(&[
        "audit",
        "verify",
        "--data-dir",
        path(&a.data_dir()),
        "--data-dir",
        path(&b.data_dir()),
        "--pubkey",
        path(&a.pubkey()),
    ]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));

    // The review report merges both logs and counts per replica.
    let (code, report) = report_all(
        &replicas,
        &witness_pub,
        &since,
        &root.path().join("r1.json"),
    );
    assert_eq!(code, 0, "{report:#}");
    let logs = report["logs"].as_array().expect("one entry per log");
    assert_eq!(logs.len(), 2, "{report:#}");
    assert_eq!(logs[0]["origin"], "portcullis/replica-a");
    assert_eq!(logs[1]["origin"], "portcullis/replica-b");
    assert_eq!(logs[0]["requests"], 3, "{:#}", logs[0]);
    assert_eq!(logs[1]["requests"], 2, "{:#}", logs[1]);
    assert_eq!(logs[0]["gateways"], json!(["replica-a"]));
    assert_eq!(logs[1]["gateways"], json!(["replica-b"]));
    for log in logs {
        assert_eq!(log["integrity"]["verified"], true, "{log:#}");
        assert!(
            log["integrity"]["covering_checkpoint"].is_object(),
            "{log:#}"
        );
    }
    assert_eq!(report["totals"]["requests"], 5);
    assert_eq!(
        report["totals"]["events"],
        logs[0]["events"].as_u64().unwrap() + logs[1]["events"].as_u64().unwrap()
    );
    assert_eq!(report["gateways"], json!(["replica-a", "replica-b"]));
    assert_eq!(report["integrity"]["verified"], true);
    // Each event named is attributed to its log: the gateway starts of both.
    let starts = report["access"]["gateway_starts"]["items"]
        .as_array()
        .unwrap();
    let mut origins: Vec<&str> = starts.iter().map(|e| e["log"].as_str().unwrap()).collect();
    origins.sort_unstable();
    assert_eq!(origins, ["portcullis/replica-a", "portcullis/replica-b"]);
    // Merged by time.
    let times: Vec<&str> = starts.iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // The OSCAL assessment results carry each log's verification as AU-9's evidence.
    let oscal = root.path().join("ar.json");
    let mut cmd = Command::new(binary());
    cmd.args([
        "evidence",
        "oscal",
        "--since",
        &since,
        "--out",
        path(&oscal),
    ])
    .args(["--witness-key", path(&witness_pub)]);
    for r in &replicas {
        cmd.args(["--data-dir", path(&r.data_dir())]);
        cmd.args(["--pubkey", path(&r.pubkey())]);
        cmd.args(["--checkpoints", path(&r.checkpoints)]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    let results = std::fs::read_to_string(&oscal).unwrap();
    for origin in ["portcullis/replica-a", "portcullis/replica-b"] {
        assert!(results.contains(&format!("\"Log {origin}: ")), "{origin}");
    }

    // Replica b's log is tampered with: it is named, with its first bad entry; a is still OK.
    let (seq, id) = first_request(&b.data_dir());
    tamper(&b.data_dir(), seq);
    let out = verify_all(&replicas, &witness_pub);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "audit log {} (portcullis/replica-a): OK: ",
            a.data_dir().display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "audit log {} (portcullis/replica-b): INVALID: event {seq} (id {id}): its body does \
             not hash to its stored leaf hash",
            b.data_dir().display()
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "1 of 2 audit logs INVALID: {} (portcullis/replica-b)",
            b.data_dir().display()
        )),
        "{stderr}"
    );

    // The report says so too, log by log, and AU-9 fails naming the tampered log.
    let (code, report) = report_all(
        &replicas,
        &witness_pub,
        &since,
        &root.path().join("r2.json"),
    );
    assert_eq!(code, 1, "a report from a log that does not verify exits 1");
    let logs = report["logs"].as_array().unwrap();
    assert_eq!(logs[0]["integrity"]["verified"], true, "{:#}", logs[0]);
    assert_eq!(logs[1]["integrity"]["verified"], false, "{:#}", logs[1]);
    let failure = logs[1]["integrity"]["failure"].as_str().unwrap();
    assert!(
        failure.contains(&format!("event {seq} (id {id})")),
        "{failure}"
    );
    assert_eq!(report["integrity"]["verified"], false);
    let au9 = report["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["control"] == "au-9")
        .unwrap();
    assert_eq!(au9["status"], "not-satisfied", "{au9:#}");
    let reason = au9["reason"].as_str().unwrap();
    assert!(
        reason.contains("1 of 2 logs fail: log portcullis/replica-b"),
        "{reason}"
    );
    assert!(!reason.contains("replica-a"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_one_gateway_id_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let (_witness, witness_pub, mut replicas) = replicas(root.path(), &["same", "same"], &agent);
    for r in &mut replicas {
        assert!(r.gw.terminate(), "the replica stops cleanly");
    }
    let out = verify_all(&replicas, &witness_pub);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "the logs in {} and {} both name themselves \"portcullis/same\"",
            replicas[0].data_dir().display(),
            replicas[1].data_dir().display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("own gateway.id"), "{stderr}");
    assert!(stdout.is_empty(), "nothing is verified: {stdout}");

    let out = Command::new(binary())
        .args(["evidence", "report", "--format", "json"])
        .args(["--out", path(&root.path().join("r.json"))])
        .args(["--data-dir", path(&replicas[0].data_dir())])
        .args(["--data-dir", path(&replicas[1].data_dir())])
        .args(["--pubkey", path(&replicas[0].pubkey())])
        .args(["--pubkey", path(&replicas[1].pubkey())])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("both name themselves \"portcullis/same\""),
        "{stderr}"
    );
    assert!(!root.path().join("r.json").exists(), "nothing is written");

    // The same data directory given twice is refused too.
    let a = replicas[0].data_dir();
    let out = run(&[
        "audit",
        "verify",
        "--data-dir",
        path(&a),
        "--data-dir",
        &format!("{}/", a.display()),
        "--pubkey",
        path(&replicas[0].pubkey()),
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("are the same data directory"), "{stderr}");
}
