//! Attacks on the audit trail: actions that reach a target without their event, and digests
//! that give back the values they summarise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

/// A stdio MCP server in Python (session era) with one tool, `lookup`, that appends every
/// `tools/call` it receives to `argv[1]`, and every message it receives to `argv[2]`: what
/// reached the target, counted on its side.
const COUNTING_SERVER: &str = r#"
import json, sys
calls_path, seen_path = sys.argv[1], sys.argv[2]
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
while True:
    line = sys.stdin.readline()
    if not line:
        break
    line = line.strip()
    if not line:
        continue
    with open(seen_path, "a") as f:
        f.write(line + "\n")
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    i, m, p = msg["id"], msg["method"], msg.get("params") or {}
    if m == "initialize":
        send({"jsonrpc": "2.0", "id": i, "result": {"protocolVersion": p.get("protocolVersion", "2025-11-25"),
              "capabilities": {"tools": {}}, "serverInfo": {"name": "counting", "version": "1"}}})
    elif m == "tools/list":
        send({"jsonrpc": "2.0", "id": i, "result": {"tools": [
            {"name": "lookup", "description": "Look something up.", "inputSchema": {"type": "object"}}]}})
    elif m == "tools/call":
        with open(calls_path, "a") as f:
            f.write(json.dumps(msg["id"]) + "\n")
        send({"jsonrpc": "2.0", "id": i, "result": {"content": [{"type": "text", "text": "found"}]}})
    elif m == "ping":
        send({"jsonrpc": "2.0", "id": i, "result": {}})
    else:
        send({"jsonrpc": "2.0", "id": i, "error": {"code": -32601, "message": "Method not found"}})
"#;

/// The file the counting server in `dir` writes every message it receives to.
fn seen_log(dir: &Path) -> PathBuf {
    dir.join("seen.log")
}

/// The configuration of a gateway in front of the counting server (written into `dir`);
/// returns it and the file the server counts its calls in.
fn counting_config(dir: &Path, agent: &Key) -> (String, PathBuf) {
    let script = dir.join("counting.py");
    std::fs::write(&script, COUNTING_SERVER).unwrap();
    let calls = dir.join("calls.log");
    let config = format!(
        r#"{agent}
[targets.counted]
kind = "mcp"
command = [{python:?}, {script:?}, {calls:?}, {seen:?}]

[[rules]]
name = "agents look up"
who.groups = ["agents"]
target = "counted"
tools = ["lookup"]
"#,
        agent = agent.config,
        python = python(),
        script = script.display().to_string(),
        calls = calls.display().to_string(),
        seen = seen_log(dir).display().to_string(),
    );
    (config, calls)
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` to the last byte.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write(&block).is_ok_and(|n| n > 0) {}
    while file.write(&[0u8]).is_ok_and(|n| n == 1) {}
    path
}

/// How many `tools/call` reached the counting server.
fn calls_upstream(calls: &Path) -> usize {
    std::fs::read_to_string(calls)
        .unwrap_or_default()
        .lines()
        .count()
}

/// Issue 13, item 11: when the audit store filled, one `tools/call` still ran upstream and
/// its event could not be written (8 forwarded, 7 recorded; the caller got -32013). The
/// gateway must stop forwarding while its events can still be written (the space reserve),
/// so every call that reaches the target has its event; and it serves again once space is
/// freed.
#[tokio::test(flavor = "multi_thread")]
async fn no_call_reaches_the_target_unrecorded_when_the_audit_store_fills() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        mounted,
        "this test needs to mount a small tmpfs (root, CAP_SYS_ADMIN)"
    );
    let _mount = Mount(data.clone());
    let agent = api_key("filling-agent", "agent", &["agents"]);
    let (config, calls) = counting_config(dir.path(), &agent);
    // The default reserve: 5% of this 8 MiB file system.
    let gw = Gateway::start_in(dir, &config, "", &[]);
    let client = reqwest::Client::new();
    let url = gw.url("counted");
    let call = |id: u64| {
        let client = client.clone();
        let (url, key) = (url.clone(), agent.key.clone());
        async move {
            modern_call(
                &client,
                &url,
                &key,
                id,
                "tools/call",
                json!({"name": "lookup", "arguments": {"q": id}}),
            )
            .await
        }
    };
    let (status, body) = call(1).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"].is_object(), "{body}");

    let filler = fill(&data);
    // The gateway measures the free space at most every 250 ms.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut answers = Vec::new();
    for id in 10..20 {
        answers.push(call(id).await.1);
    }
    let recorded = |gw: &Gateway| {
        gw.events()
            .into_iter()
            .filter(|e| e["action"] == "tools/call" && e["outcome"] == "success")
            .count()
    };
    assert_eq!(
        calls_upstream(&calls),
        recorded(&gw),
        "calls that reached the target vs their events, on a full store: {answers:#?}"
    );
    for body in &answers {
        assert!(body["result"].is_null(), "answered on a full store: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("audit"), "the refusal says why: {body}");
    }
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id = 100;
    loop {
        let (_, body) = call(id).await;
        if body["result"].is_object() {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {body}");
        id += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(
        calls_upstream(&calls),
        recorded(&gw),
        "calls that reached the target vs their events, after recovery"
    );
}

/// Mounts an 8 MiB tmpfs on `dir/data` (unmounted on drop); returns the mount point.
fn small_store(dir: &Path) -> (PathBuf, Mount) {
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        mounted,
        "this test needs to mount a small tmpfs (root, CAP_SYS_ADMIN)"
    );
    (data.clone(), Mount(data))
}

/// Issue 13 re-check, M4: the space reserve covered requests only. Below it, `initialize`
/// still spawned an upstream and handed it the handshake, and a session's notifications
/// (`notifications/initialized`, `roots/list_changed`, `progress`) and answers reached the
/// upstream. Below the reserve nothing reaches the upstream: each is refused with -32013,
/// saying why, and recorded.
#[tokio::test(flavor = "multi_thread")]
async fn no_handshake_or_notification_reaches_the_target_below_the_space_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _mount) = small_store(dir.path());
    let agent = api_key("reserve-agent", "agent", &["agents"]);
    let (config, _) = counting_config(dir.path(), &agent);
    // Half the store in reserve: below it with room left, so the refusals can be recorded.
    let config = format!("{config}\n[audit]\nspace_reserve = 4194304\n");
    let seen = seen_log(dir.path());
    let gw = Gateway::start_in(dir, &config, "", &[]);
    let client = reqwest::Client::new();
    let url = gw.url("counted");
    let post = |session: Option<String>, body: serde_json::Value| {
        let mut req = client
            .post(&url)
            .bearer_auth(&agent.key)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(session) = session {
            req = req
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let session = resp
                .headers()
                .get("mcp-session-id")
                .map(|v| v.to_str().unwrap().to_string());
            (status, session, last_message(&resp.text().await.unwrap()))
        }
    };
    let init = |name: &str| {
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": name, "version": "1"}}})
    };
    // A session opened while there is room; its client has not yet said `initialized`.
    let (status, session, body) = post(None, init("before-the-fill")).await;
    assert_eq!(status, 200, "{body}");
    let session = session.expect("a session id");
    let seen_before = std::fs::read_to_string(&seen).unwrap();
    assert!(seen_before.contains("before-the-fill"));

    let filler = fill(&data);
    let full = std::fs::metadata(&filler).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(full.saturating_sub(2 << 20))
        .unwrap();
    // The gateway measures the free space at most every 250 ms.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, new_session, body) = post(None, init("below-the-reserve")).await;
    assert_eq!(body["error"]["code"], -32013, "initialize: {status} {body}");
    assert!(new_session.is_none(), "a session was opened: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("audit"),
        "the refusal says why: {body}"
    );
    for (method, params) in [
        ("notifications/initialized", json!({})),
        ("notifications/roots/list_changed", json!({})),
        (
            "notifications/progress",
            json!({"progressToken": "below-the-reserve", "progress": 1}),
        ),
    ] {
        let note = json!({"jsonrpc": "2.0", "method": method, "params": params});
        let (status, _, body) = post(Some(session.clone()), note).await;
        assert_eq!(body["error"]["code"], -32013, "{method}: {status} {body}");
    }
    let seen_below = std::fs::read_to_string(&seen).unwrap();
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        seen_below.strip_prefix(&seen_before).unwrap_or(&seen_below),
        "",
        "reached the target below the reserve"
    );
    let events = gw.events();
    assert!(
        events.iter().any(|e| e["action"] == "initialize"
            && e["outcome"] == "failed"
            && e["detail"].as_str().unwrap_or_default().contains("audit")),
        "the refused initialize is recorded: {events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "notifications/roots/list_changed" && e["outcome"] == "failed"),
        "the withheld notification is recorded: {events:#?}"
    );
}

/// A plain connection to the PostgreSQL server (not through the gateway).
async fn postgres(
    dbname: &str,
    user: &str,
    password: Option<&str>,
    port: u16,
) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .dbname(dbname);
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Issue 13, item 11, on a PostgreSQL target: a statement must not reach the database while
/// its event cannot be written. Each allowed INSERT that reached the server leaves a row;
/// the rows must match the recorded statements when the audit store fills.
#[tokio::test(flavor = "multi_thread")]
async fn no_statement_reaches_the_database_unrecorded_when_the_audit_store_fills() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        mounted,
        "this test needs to mount a small tmpfs (root, CAP_SYS_ADMIN)"
    );
    let _mount = Mount(data.clone());

    let db = format!("door_reserve_{}", std::process::id());
    let admin = postgres("postgres", "postgres", None, 5432).await;
    for sql in [
        format!("DROP DATABASE IF EXISTS {db}"),
        format!("CREATE DATABASE {db}"),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    postgres(&db, "postgres", None, 5432)
        .await
        .batch_execute("CREATE TABLE hits (n int)")
        .await
        .unwrap();

    let agent = api_key("pg-filling-agent", "agent", &["agents"]);
    let port = free_port();
    let config = format!(
        "{}[targets.db]\nkind = \"postgres\"\nlisten = \"127.0.0.1:{port}\"\nupstream = \"postgres://127.0.0.1:5432/{db}\"\nuser = \"postgres\"\n\n[[rules]]\nname = \"agents insert\"\nwho.groups = [\"agents\"]\ntarget = \"db\"\nallow.statements = [\"insert\", \"select\"]\n",
        agent.config
    );
    let gw = Gateway::start_in(dir, &config, "", &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the PostgreSQL listener did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let through = postgres("db", "pg-filling-agent", Some(&agent.key), port).await;
    through
        .batch_execute("INSERT INTO hits VALUES (1)")
        .await
        .unwrap();

    let filler = fill(&data);
    // The gateway measures the free space at most every 250 ms.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut refusals = Vec::new();
    for n in 10..15 {
        if let Err(e) = through
            .batch_execute(&format!("INSERT INTO hits VALUES ({n})"))
            .await
        {
            refusals.push(
                e.as_db_error()
                    .map(|d| (d.code().code().to_string(), d.message().to_string())),
            );
        }
    }
    let reached: i64 = postgres(&db, "postgres", None, 5432)
        .await
        .query_one("SELECT count(*) FROM hits", &[])
        .await
        .unwrap()
        .get(0);
    let recorded = gw
        .events()
        .into_iter()
        .filter(|e| e["action"] == "insert" && e["outcome"] == "success")
        .count();
    std::fs::remove_file(&filler).unwrap();
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await;
    assert_eq!(
        reached as usize, recorded,
        "statements that reached the database vs their events: {refusals:?}"
    );
    assert_eq!(refusals.len(), 5, "{refusals:?}");
    for refusal in &refusals {
        let (code, message) = refusal.as_ref().expect("a server error");
        assert_eq!(code, "58030", "{message}");
        assert!(message.contains("audit"), "{message}");
    }
}

fn demo_config(agent: &Key) -> String {
    format!(
        r#"{agent}
[targets.billing]
kind = "mcp"
{cmd}

[[rules]]
name = "agents look up customers"
who.groups = ["agents"]
target = "billing"
tools = ["lookup_customer"]
"#,
        agent = agent.config,
        cmd = demo_server_command()
    )
}

/// Issue 13, item 14d: a tool name carrying U+202E (right-to-left override) and other bidi
/// or control characters is recorded as given; `audit tail` printed it raw, so the
/// operator's terminal showed the line reordered. The line must carry the characters as
/// JSON escapes (still the same JSON value), never raw.
#[tokio::test]
async fn a_bidi_override_in_a_tool_name_is_escaped_in_audit_tail() {
    let agent = api_key("bidi-agent", "agent", &["agents"]);
    let gw = Gateway::start(&demo_config(&agent));
    let client = reqwest::Client::new();
    // U+E0041 is a tag character (invisible, beyond the Basic Multilingual Plane), U+3164
    // a Hangul filler that shows as blank.
    let sneaky = "lookup\u{202e}remmoc\u{2066}x\u{200f}\u{85}\u{e0041}\u{3164}";
    let _ = modern_call(
        &client,
        &gw.url("billing"),
        &agent.key,
        1,
        "tools/call",
        json!({"name": sneaky, "arguments": {}}),
    )
    .await;
    let out = Command::new(binary())
        .args(["audit", "tail", "-n", "1000", "--data-dir"])
        .arg(gw.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for raw in [
        '\u{202e}',
        '\u{2066}',
        '\u{200f}',
        '\u{85}',
        '\u{e0041}',
        '\u{3164}',
    ] {
        assert!(
            !text.contains(raw),
            "audit tail printed U+{:04X} raw: {text}",
            raw as u32
        );
    }
    assert!(
        text.contains("\\u202e"),
        "the override is not escaped: {text}"
    );
    // The escaped line is the same JSON: the recorded name comes back whole.
    assert!(
        gw.events()
            .iter()
            .any(|e| e.to_string().contains(&json!(sneaky).to_string())),
        "no event carries the tool name as given"
    );
}

/// Runs the portcullis binary with `args`, `stdin` on its standard input; returns its exit
/// status success and standard output.
fn run_with_stdin(args: &[&str], stdin: &[u8]) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new(binary())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    use aws_lc_rs::digest::{SHA256, digest};
    digest(&SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The exact `params` of a 2026-07-28 `tools/call` carrying `pin` as an argument.
fn params_with_pin(pin: &str) -> String {
    format!(
        r#"{{"name":"lookup_customer","arguments":{{"customer":"cus_1001","pin":"{pin}"}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"{MODERN}","io.modelcontextprotocol/clientInfo":{{"name":"attacker","version":"1"}},"io.modelcontextprotocol/clientCapabilities":{{}}}}}}"#
    )
}

/// Issue 13, item 12: events held the plain SHA-256 of a request's arguments, so a short
/// secret in them (a 4-digit PIN) came back to anyone reading the log, by hashing the 10,000
/// candidates. Digests are now keyed (HMAC-SHA256 under a key derived from the audit signing
/// key, `alg` says so): no candidate matches, the operator can still check a known payload
/// (`portcullis audit digest`), and the log still verifies.
#[tokio::test(flavor = "multi_thread")]
async fn a_pin_in_the_arguments_cannot_be_recovered_from_the_logged_digest() {
    let keys = tempfile::tempdir().unwrap();
    let key_dir = keys.path().join("audit-key");
    let out = Command::new(binary())
        .args(["keys", "audit-init", "--out"])
        .arg(&key_dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let agent = api_key("pin-agent", "agent", &["agents"]);
    let config = format!(
        "{}\n[audit]\nsigning_key = {:?}\n",
        demo_config(&agent),
        key_dir.display().to_string()
    );
    let mut gw = Gateway::start(&config);
    let secret = "4821";
    let params = params_with_pin(secret);
    let body = format!(r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{params}}}"#);
    let response = reqwest::Client::new()
        .post(gw.url("billing"))
        .bearer_auth(&agent.key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "lookup_customer")
        .body(body)
        .send()
        .await
        .unwrap();
    let _ = response.text().await;

    let events = gw.events();
    let event = events
        .iter()
        .find(|e| e["action"] == "tools/call" && e["request_id"] == "7")
        .unwrap_or_else(|| panic!("no event for the call: {events:#?}"));
    let logged = event["arguments"]["sha256"].as_str().unwrap().to_string();
    // The attack: hash every candidate PIN in the payload's known shape.
    let recovered: Vec<String> = (0..10_000)
        .map(|n| format!("{n:04}"))
        .filter(|pin| sha256_hex(params_with_pin(pin).as_bytes()) == logged)
        .collect();
    assert!(
        recovered.is_empty(),
        "the PIN was recovered from the log: {recovered:?}"
    );
    assert_eq!(event["arguments"]["alg"], "hmac-sha256", "{event}");

    // The operator, holding the key, can check the payload against the event.
    let config_path = gw.dir.path().join("portcullis.toml");
    let (ok, digest) = run_with_stdin(
        &["audit", "digest", "--config", config_path.to_str().unwrap()],
        params.as_bytes(),
    );
    assert!(ok);
    let digest: serde_json::Value = serde_json::from_str(digest.trim()).unwrap();
    assert_eq!(
        digest, event["arguments"],
        "the operator's digest of the payload"
    );
    let (_, wrong) = run_with_stdin(
        &["audit", "digest", "--config", config_path.to_str().unwrap()],
        params_with_pin("4822").as_bytes(),
    );
    assert_ne!(
        serde_json::from_str::<serde_json::Value>(wrong.trim()).unwrap(),
        event["arguments"]
    );

    // The log with keyed digests verifies (after the stop's final checkpoint).
    assert!(gw.terminate());
    let out = Command::new(binary())
        .args(["audit", "verify", "--data-dir"])
        .arg(gw.data_dir())
        .arg("--pubkey")
        .arg(key_dir.join("audit.pub"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
