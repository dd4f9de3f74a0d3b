//! The audit log under a running gateway: checkpoints published to a directory and cosigned
//! by a real witness process, a rollback exposed by that witness, `kill -9` under load, and a
//! full disk that makes the gateway refuse requests until space comes back.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn run_ok(args: &[&str]) -> String {
    let out = Command::new(binary()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "portcullis {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `portcullis audit verify`; (success, stdout + stderr).
fn verify(data_dir: &Path, pubkey: &Path, checkpoints: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new(binary());
    cmd.args([
        "audit",
        "verify",
        "--data-dir",
        path(data_dir),
        "--pubkey",
        path(pubkey),
    ]);
    if let Some(dir) = checkpoints {
        cmd.args(["--checkpoints", path(dir)]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A `portcullis witness` process; killed on drop.
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
    fn start(keys: &Path, state: &Path, log_key: &Path) -> Witness {
        let port = free_port();
        let mut cmd = Command::new(binary());
        cmd.args(["witness", "--key", path(keys), "--state", path(state)])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--log-key", path(log_key)])
            .stdout(Stdio::null());
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let (child, _) = start_and_wait(&mut cmd, addr, "witness");
        Witness {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

struct Keys {
    _dir: tempfile::TempDir,
    audit: PathBuf,
    witness: PathBuf,
    checkpoints: PathBuf,
    witness_state: PathBuf,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit-key");
        let witness = dir.path().join("witness-key");
        run_ok(&["keys", "audit-init", "--out", path(&audit)]);
        run_ok(&[
            "keys",
            "witness-init",
            "--out",
            path(&witness),
            "--name",
            "test-witness",
        ]);
        Keys {
            audit,
            witness,
            checkpoints: dir.path().join("published"),
            witness_state: dir.path().join("witness-state"),
            _dir: dir,
        }
    }

    fn pubkey(&self) -> PathBuf {
        self.audit.join("audit.pub")
    }

    fn audit_config(&self, witness: Option<&Witness>) -> String {
        let mut config = format!(
            "[audit]\nsigning_key = {:?}\ncheckpoint_interval = \"100ms\"\ncheckpoint_dir = {:?}\n",
            path(&self.audit),
            path(&self.checkpoints)
        );
        if let Some(witness) = witness {
            config.push_str(&format!(
                "\n[[audit.witnesses]]\nurl = {:?}\nkey = {:?}\n",
                witness.url,
                path(&self.witness.join("witness.pub"))
            ));
        }
        config
    }
}

fn billing(agent: &Key, audit: &str) -> String {
    format!(
        "{audit}\n{agent}\n[targets.billing]\nkind = \"mcp\"\n{cmd}\n\n[[rules]]\nname = \"agents look up customers\"\nwho.groups = [\"agents\"]\ntarget = \"billing\"\ntools = [\"lookup_customer\"]\n",
        agent = agent.config,
        cmd = demo_server_command()
    )
}

async fn lookup(
    client: &reqwest::Client,
    gw: &Gateway,
    key: &str,
    id: u64,
) -> (u16, serde_json::Value) {
    modern_call(
        client,
        &gw.url("billing"),
        key,
        id,
        "tools/call",
        json!({"name": "lookup_customer", "arguments": {"customer": "cus_1001"}}),
    )
    .await
}

/// Published checkpoint files, by name.
fn published(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn cosigned_sizes(data_dir: &Path) -> Vec<u64> {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("audit.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT size FROM cosignatures WHERE witness = 'test-witness' ORDER BY size")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|s| s.unwrap() as u64)
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_published_cosigned_and_a_rollback_is_exposed() {
    let keys = Keys::new();
    let witness = Witness::start(&keys.witness, &keys.witness_state, &keys.pubkey());
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let client = reqwest::Client::new();

    let mut gw = Gateway::start(&billing(&agent, &keys.audit_config(Some(&witness))));
    for id in 1..=5 {
        let (status, body) = lookup(&client, &gw, &agent.key, id).await;
        assert_eq!(status, 200, "{body}");
    }
    // Within a few intervals, a checkpoint covering the calls is in the directory and
    // cosigned by the witness.
    wait_for("a published, cosigned checkpoint", || {
        cosigned_sizes(&gw.data_dir())
            .last()
            .is_some_and(|&s| s >= 6)
    });
    assert!(gw.terminate(), "the gateway stops cleanly");
    let data = gw.data_dir();
    let files = published(&keys.checkpoints);
    assert!(!files.is_empty());
    assert!(
        files
            .iter()
            .all(|f| f.ends_with(".checkpoint") && f.len() == 31),
        "{files:?}"
    );
    // The checkpoint signed at close covers the stop event and reached both sinks.
    let events = gw.events();
    let final_size = events.len() as u64;
    assert_eq!(events.last().unwrap()["type"], "gateway.stop");
    assert_eq!(
        files.last().unwrap(),
        &format!("{final_size:020}.checkpoint")
    );
    assert_eq!(cosigned_sizes(&data).last(), Some(&final_size));

    let (ok, report) = verify(&data, &keys.pubkey(), Some(&keys.checkpoints));
    assert!(ok, "the pristine log verifies: {report}");

    // Keep a copy of the log as it is now, then let it grow.
    let saved = tempfile::tempdir().unwrap();
    copy_dir(&data, saved.path());
    gw.restart();
    for id in 10..=12 {
        let (status, body) = lookup(&client, &gw, &agent.key, id).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(gw.terminate());
    let grown = cosigned_sizes(&data).last().copied().unwrap();
    assert!(grown > final_size);

    // Roll the data directory back to the copy: the log itself is self-consistent...
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(saved.path(), &data);
    let (ok, _) = verify(&data, &keys.pubkey(), None);
    assert!(ok, "alone, an older copy of a log is a valid log");
    // ... but not against what was published outside the gateway,
    let (ok, report) = verify(&data, &keys.pubkey(), Some(&keys.checkpoints));
    assert!(
        !ok,
        "the rollback must be caught by the published checkpoints"
    );
    assert!(
        report.contains("rolled back") || report.contains("truncated"),
        "{report}"
    );
    // ... and the witness, on another machine, refuses to cosign the rolled-back log.
    gw.restart();
    let (status, _) = lookup(&client, &gw, &agent.key, 20).await;
    assert_eq!(status, 200);
    wait_for("the witness to refuse the rolled-back log", || {
        gw.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("rolled back or replaced") || l.contains("consistency"))
    });
    gw.kill();
    drop(witness);
}

/// Every request a client saw answered has its event, after `kill -9` in the middle of a
/// load, and the log the crash left behind verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_answered_request() {
    let keys = Keys::new();
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let mut gw = Gateway::start(&billing(&agent, &keys.audit_config(None)));
    let client = reqwest::Client::new();
    let answered = Arc::new(std::sync::Mutex::new(Vec::new()));
    let url = gw.url("billing");
    let mut clients = Vec::new();
    for worker in 0..8u64 {
        let (client, url, key, answered) = (
            client.clone(),
            url.clone(),
            agent.key.clone(),
            answered.clone(),
        );
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let id = worker * 1_000_000 + n;
                let request = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-protocol-version", MODERN)
                    .header("mcp-method", "tools/call")
                    .header("mcp-name", "lookup_customer")
                    .json(
                        &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
                        "name": "lookup_customer", "arguments": {"customer": "cus_1001"},
                        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}, "io.modelcontextprotocol/clientInfo": {"name": "portcullis-tests", "version": "1"}}}}),
                    );
                let Ok(response) = request.send().await else {
                    break;
                };
                let Ok(text) = response.text().await else {
                    break;
                };
                if last_message(&text)["result"].is_object() {
                    answered.lock().unwrap().push(id);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.kill(); // SIGKILL: no shutdown, no final checkpoint
    for client in clients {
        client.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() > 50,
        "the load was real: {} answers",
        answered.len()
    );

    // The log as the crash left it already holds every answered request.
    let recorded: std::collections::HashSet<String> = gw
        .events()
        .iter()
        .filter_map(|e| e["request_id"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<&u64> = answered
        .iter()
        .filter(|id| !recorded.contains(&id.to_string()))
        .collect();
    assert!(missing.is_empty(), "answered but not recorded: {missing:?}");

    // A restart continues the same log, and the whole of it verifies.
    gw.restart();
    let (status, _) = lookup(&client, &gw, &agent.key, 1).await;
    assert_eq!(status, 200);
    assert!(gw.terminate());
    let (ok, report) = verify(&gw.data_dir(), &keys.pubkey(), Some(&keys.checkpoints));
    assert!(ok, "the log verifies after the crash: {report}");
}

/// A tmpfs mount, unmounted on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Fills the file system holding `dir` to the last byte.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Then the last partial block, so not even a page is left.
    let byte = [0u8; 1];
    while file.write(&byte).is_ok_and(|n| n == 1) {}
    path
}

/// A full disk under a running gateway: requests are refused with an error that says why,
/// nothing is answered unrecorded, and service resumes by itself once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_closed_and_recovers() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs", path(&data)])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        // A container without CAP_SYS_ADMIN: the unit tests in the audit crate still cover
        // the full-store path (SQLITE_FULL through a page cap).
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    }
    let _mount = Mount(data.clone());

    let agent = api_key("billing-agent", "agent", &["agents"]);
    let keys = Keys::new();
    let gw = Gateway::start_in(dir, &billing(&agent, &keys.audit_config(None)), "", &[]);
    let client = reqwest::Client::new();
    let (status, body) = lookup(&client, &gw, &agent.key, 1).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"].is_object());

    let filler = fill(&data);
    // The gateway measures free space at most every 250 ms (audit's MEASURE_INTERVAL), so a
    // request right after the disk filled may still pass the check (and its event still be
    // written into the store's free pages). Past that interval every action is refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut refused = 0;
    for id in 100..110 {
        let (_, body) = lookup(&client, &gw, &agent.key, id).await;
        assert!(
            body["result"].is_null(),
            "no answer may leave unrecorded on a full disk: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("audit"), "the refusal says why: {body}");
        refused += 1;
    }
    assert_eq!(refused, 10);

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id = 200;
    loop {
        let (_, body) = lookup(&client, &gw, &agent.key, id).await;
        if body["result"].is_object() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not recover: {body}"
        );
        id += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The recovered log holds the first call and the one answered after recovery.
    let ids: Vec<String> = gw
        .events()
        .iter()
        .filter_map(|e| e["request_id"].as_str().map(str::to_string))
        .collect();
    assert!(ids.contains(&"1".to_string()));
    assert!(ids.contains(&id.to_string()));
    let (ok, report) = verify(&gw.data_dir(), &keys.pubkey(), None);
    assert!(ok, "{report}");
}
