//! The edges of the MCP front door, through the real gateway binary over real HTTP: bad
//! input, credentials, origins, sessions, the 2026-07-28 header rules, limits, and
//! upstreams that are dead or slow. Each refusal is checked for its exact HTTP status and
//! JSON-RPC code, and the audit log for the reason.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const LEGACY: &str = "2025-11-25";

// ---------------------------------------------------------------------------------------
// Helpers

/// A stdio MCP server in Python that logs every line it receives to `argv[1]`, answers
/// `initialize`, `tools/list` and `tools/call` (echoing the arguments), refuses
/// `server/discover` (so it is a session-era upstream) and never answers a call of `slow`.
const RECORDER: &str = r#"
import json, sys
log_path = sys.argv[1]
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
    with open(log_path, "a") as f:
        f.write(line + "\n")
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    i, m, p = msg["id"], msg["method"], msg.get("params") or {}
    if m == "initialize":
        send({"jsonrpc": "2.0", "id": i, "result": {"protocolVersion": p.get("protocolVersion", "2025-11-25"),
              "capabilities": {"tools": {}}, "serverInfo": {"name": "recorder", "version": "1"}}})
    elif m == "tools/list":
        send({"jsonrpc": "2.0", "id": i, "result": {"tools": [
            {"name": "echo", "description": "Echo the arguments.", "inputSchema": {"type": "object"}},
            {"name": "slow", "description": "Never answers.", "inputSchema": {"type": "object"}}]}})
    elif m == "tools/call":
        if p.get("name") == "slow":
            continue
        send({"jsonrpc": "2.0", "id": i, "result": {"content": [{"type": "text", "text": json.dumps(p.get("arguments"))}]}})
    elif m == "ping":
        send({"jsonrpc": "2.0", "id": i, "result": {}})
    else:
        send({"jsonrpc": "2.0", "id": i, "error": {"code": -32601, "message": "Method not found"}})
"#;

/// Writes the recorder script to `dir`; returns the `command = [...]` line and the log path.
fn recorder(dir: &Path) -> (String, PathBuf) {
    let script = dir.join("recorder.py");
    std::fs::write(&script, RECORDER).unwrap();
    let log = dir.join("recorder.log");
    let cmd = format!(
        "command = [{:?}, {:?}, {:?}]",
        python(),
        script.display().to_string(),
        log.display().to_string()
    );
    (cmd, log)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

/// POSTs raw bytes with the given headers (and a bearer key when given).
async fn post(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Resp {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    Resp {
        status,
        headers,
        body: last_message(&text),
    }
}

/// A 2026-07-28 body with `_meta` naming `version`.
fn modern_body(id: u64, method: &str, mut params: Value, version: &str) -> String {
    add_modern_meta(&mut params);
    params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!(version);
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// A session-based POST: the session header and the negotiated version when in a session.
async fn legacy(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    session: Option<&str>,
    body: Value,
) -> Resp {
    let mut headers = Vec::new();
    if let Some(s) = session {
        headers.push(("mcp-session-id", s));
        headers.push(("mcp-protocol-version", LEGACY));
    }
    post(client, url, Some(key), &headers, body.to_string()).await
}

fn initialize(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "edge-test", "version": "1"}}})
}

fn tool_names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn billing_config(keys: &[&Key], extra: &str) -> String {
    let keys: String = keys.iter().map(|k| k.config.as_str()).collect();
    format!(
        r#"{keys}
[targets.billing]
kind = "mcp"
{cmd}

{extra}

[[rules]]
name = "agents look up customers"
who.groups = ["agents"]
target = "billing"
tools = ["lookup_customer"]

[[rules]]
name = "agents never delete customers"
who.kinds = ["agent"]
target = "billing"
tools = ["delete_*"]
decision = "deny"
reason = "deleting customers is a human decision"
"#,
        cmd = demo_server_command()
    )
}

fn rejected_with<'a>(events: &'a [Value], needle: &str) -> Option<&'a Value> {
    events.iter().find(|e| {
        e["type"] == "request"
            && e["outcome"] == "rejected"
            && e["detail"].as_str().is_some_and(|d| d.contains(needle))
    })
}

// ---------------------------------------------------------------------------------------
// Bad input

#[tokio::test]
async fn malformed_ambiguous_and_oversized_messages_are_refused_and_audited() {
    let agent = api_key("edge-agent", "agent", &["agents"]);
    let scratch = tempfile::tempdir().unwrap();
    let (rec_cmd, rec_log) = recorder(scratch.path());
    let extra = format!(
        "[targets.rec]\nkind = \"mcp\"\n{rec_cmd}\n\n[[rules]]\nname = \"agents use the recorder\"\nwho.groups = [\"agents\"]\ntarget = \"rec\"\ntools = [\"*\"]\n"
    );
    let gw = Gateway::start_with(
        &billing_config(&[&agent], &extra),
        "max_message_bytes = 4096",
        &[],
    );
    let c = client();
    let url = gw.url("billing");
    let key = Some(agent.key.as_str());

    // Malformed JSON: 400, parse error.
    let r = post(
        &c,
        &url,
        key,
        &[],
        "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ",
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_i64()),
        (400, Some(-32700)),
        "{}",
        r.body
    );
    assert_eq!(r.body["id"], Value::Null);

    // Wrong JSON-RPC shape: 400, invalid request.
    for (what, body) in [
        ("missing jsonrpc", r#"{"id":1,"method":"tools/list"}"#),
        (
            "id as an object",
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"tools/list"}"#,
        ),
        (
            "params as a number",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":3}"#,
        ),
        (
            "a batch",
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#,
        ),
        ("not an object", r#""tools/list""#),
    ] {
        let r = post(&c, &url, key, &[], body).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_i64()),
            (400, Some(-32600)),
            "{what}: {}",
            r.body
        );
    }
    // The id is echoed when it could be read.
    let r = post(
        &c,
        &url,
        key,
        &[],
        r#"{"jsonrpc":"1.0","id":"x7","method":"tools/list"}"#,
    )
    .await;
    assert_eq!(r.body["id"], "x7");

    // Duplicate keys: the gateway would decide on one name and the upstream might run the
    // other. Refused as a parse error, and the upstream never sees the message.
    let rec = gw.url("rec");
    let smuggle = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","name":"delete_customer","arguments":{"marker":"smuggled"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let headers = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
    ];
    let r = post(&c, &rec, key, &headers, smuggle).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_i64()),
        (400, Some(-32700)),
        "{}",
        r.body
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("duplicate key \"name\""),
        "{}",
        r.body
    );
    // A real call afterwards goes through, so the recorder is up and logging...
    let (status, ok) = modern_call(
        &c,
        &rec,
        &agent.key,
        10,
        "tools/call",
        json!({"name": "echo", "arguments": {"marker": "honest"}}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        ok["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("honest"),
        "{ok}"
    );
    // ...and it received the honest call but never the smuggled one.
    let seen = std::fs::read_to_string(&rec_log).unwrap();
    assert!(seen.contains("honest"), "{seen}");
    assert!(
        !seen.contains("smuggled") && !seen.contains("delete_customer"),
        "the upstream saw the ambiguous message: {seen}"
    );

    // Over max_message_bytes: 413, nothing parsed.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"pad":"{}"}}}}"#,
        "x".repeat(5000)
    );
    let r = post(&c, &url, key, &[], big).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_i64()),
        (413, Some(-32600)),
        "{}",
        r.body
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4096"),
        "{}",
        r.body
    );

    // Every refusal is in the audit log with its reason and who sent it.
    let events = gw.events();
    for needle in [
        "invalid JSON",
        "\"jsonrpc\" must be \"2.0\"",
        "\"id\" must be a string or an integer",
        "\"params\" must be an object or an array",
        "batches are not supported",
        "duplicate key \"name\"",
        "exceeds the limit of 4096 bytes",
    ] {
        let ev = rejected_with(&events, needle)
            .unwrap_or_else(|| panic!("no rejected event with {needle:?} in {events:#?}"));
        assert_eq!(ev["identity"]["subject"], "edge-agent");
    }
    let dup = rejected_with(&events, "duplicate key").unwrap();
    assert_eq!(dup["target"], "rec");
    assert_eq!(
        dup["arguments"]["sha256"].as_str().unwrap().len(),
        64,
        "the refused bytes are kept as a digest"
    );
    assert!(
        !dup.to_string().contains("smuggled"),
        "raw arguments never reach the log"
    );
}

// ---------------------------------------------------------------------------------------
// Credentials, origins, targets

#[tokio::test]
async fn credentials_origins_and_targets_are_checked_at_the_door() {
    let agent = api_key("door-agent", "agent", &["agents"]);
    let gw = Gateway::start_with(
        &billing_config(&[&agent], ""),
        "allowed_origins = [\"http://localhost:*\"]",
        &[],
    );
    let c = client();
    let url = gw.url("billing");
    let list = modern_body(1, "tools/list", json!({}), MODERN);
    let modern = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/list"),
    ];

    // No credentials: 401 and where to get a token (RFC 9728).
    let r = post(&c, &url, None, &modern, list.clone()).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["error"]["code"], -32600);
    let metadata = format!(
        "http://{}/.well-known/oauth-protected-resource/mcp/billing",
        gw.addr
    );
    let challenge = r.headers["www-authenticate"].to_str().unwrap();
    assert_eq!(
        challenge,
        format!("Bearer resource_metadata=\"{metadata}\"")
    );
    // An empty bearer is no credential either.
    let r = post(
        &c,
        &url,
        None,
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/list"),
            ("authorization", "Bearer "),
        ],
        list.clone(),
    )
    .await;
    assert_eq!(r.status, 401);

    // The metadata document is served where the challenge points.
    let doc = c.get(&metadata).send().await.unwrap();
    assert_eq!(doc.status(), 200);
    assert!(
        doc.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: Value = doc.json().await.unwrap();
    assert_eq!(doc["resource"], format!("http://{}/mcp/billing", gw.addr));
    assert_eq!(
        doc["authorization_servers"],
        json!([]),
        "API keys only: no authorization server"
    );
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    // Any name gets the document: a 404 for unknown names would tell an unauthenticated
    // caller which targets exist (issue 13 re-check, M5).
    let none = c
        .get(format!(
            "http://{}/.well-known/oauth-protected-resource/mcp/nope",
            gw.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 200);

    // A wrong API key: 401 with error="invalid_token", and an auth.failure event.
    let wrong = format!("pcx_{}", "Z".repeat(43));
    let r = post(&c, &url, Some(&wrong), &modern, list.clone()).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["error"]["code"], -32600);
    let challenge = r.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with(&format!("Bearer resource_metadata=\"{metadata}\"")),
        "{challenge}"
    );
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(
        !r.body.to_string().contains(&wrong),
        "the refusal never echoes the credential"
    );

    // Origins: a page elsewhere is refused (DNS rebinding); the allowed pattern passes.
    let r = post(
        &c,
        &url,
        Some(&agent.key),
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/list"),
            ("origin", "http://evil.example"),
        ],
        list.clone(),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_i64()),
        (403, Some(-32600)),
        "{}",
        r.body
    );
    let r = post(
        &c,
        &url,
        Some(&agent.key),
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/list"),
            ("origin", "http://localhost.evil.example:3000"),
        ],
        list.clone(),
    )
    .await;
    assert_eq!(r.status, 403, "a look-alike origin is refused");
    let r = post(
        &c,
        &url,
        Some(&agent.key),
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/list"),
            ("origin", "http://localhost:3000"),
        ],
        list.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(tool_names(&r.body), ["lookup_customer"]);
    // The Origin check comes first: even without credentials a foreign page learns nothing.
    let r = post(
        &c,
        &url,
        None,
        &[("origin", "http://evil.example")],
        list.clone(),
    )
    .await;
    assert_eq!(r.status, 403);

    // An unknown target: 404 naming it, to an authenticated caller only; without
    // credentials it answers 401 like every target, so target names cannot be probed
    // (issue 13 re-check, M5).
    let r = post(
        &c,
        &gw.url("nope"),
        Some(agent.key.as_str()),
        &modern,
        list.clone(),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_i64()),
        (404, Some(-32600)),
        "{}",
        r.body
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    let r = post(&c, &gw.url("nope"), None, &modern, list.clone()).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(!r.body.to_string().contains("nope"), "{}", r.body);

    let events = gw.events();
    let failure = events
        .iter()
        .find(|e| e["type"] == "auth.failure")
        .unwrap_or_else(|| panic!("no auth.failure in {events:#?}"));
    assert_eq!(failure["outcome"], "rejected");
    assert_eq!(failure["target"], "billing");
    assert!(
        failure["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(
        failure["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{failure}"
    );
    assert!(
        !failure.to_string().contains(&wrong),
        "the audit log never holds a credential"
    );
}

// ---------------------------------------------------------------------------------------
// Sessions (2025-era)

#[tokio::test]
async fn a_session_based_client_by_hand() {
    let agent = api_key("session-agent", "agent", &["agents"]);
    let other = api_key("other-agent", "agent", &["agents"]);
    let gw = Gateway::start(&billing_config(&[&agent, &other], ""));
    let c = client();
    let url = gw.url("billing");

    // initialize: a session id comes back with the upstream's own answer.
    let r = legacy(&c, &url, &agent.key, None, initialize(1)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sid = r.headers["mcp-session-id"].to_str().unwrap().to_string();
    assert!(
        sid.len() >= 32 && sid.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sid}"
    );
    assert_eq!(r.body["id"], 1);
    assert_eq!(r.body["result"]["protocolVersion"], LEGACY);
    assert!(
        r.body["result"]["serverInfo"]["name"].is_string(),
        "{}",
        r.body
    );

    // notifications/initialized: 202, no body.
    let r = legacy(
        &c,
        &url,
        &agent.key,
        Some(&sid),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(r.status, 202);

    let r = legacy(
        &c,
        &url,
        &agent.key,
        Some(&sid),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], 2);
    assert_eq!(
        tool_names(&r.body),
        ["lookup_customer"],
        "tools/list is filtered by policy"
    );

    let r = legacy(&c, &url, &agent.key, Some(&sid), json!({"jsonrpc": "2.0", "id": "c-3", "method": "tools/call", "params": {"name": "lookup_customer", "arguments": {"customer": "cus_1002"}}})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["id"], "c-3",
        "the caller's id comes back, not the gateway's"
    );
    assert_eq!(
        r.body["result"]["structuredContent"]["name"],
        "Grace Hopper"
    );

    let r = legacy(&c, &url, &agent.key, Some(&sid), json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "delete_customer", "arguments": {"customer": "cus_1002"}}})).await;
    assert_eq!(r.body["error"]["code"], -32010);

    // Another identity cannot use (or even confirm) this session: 404.
    let r = legacy(
        &c,
        &url,
        &other.key,
        Some(&sid),
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_i64()),
        (404, Some(-32600)),
        "{}",
        r.body
    );
    let r = c
        .delete(&url)
        .bearer_auth(&other.key)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "another identity cannot end the session");

    // An unknown session: 404. No session at all on a session-era request: 400.
    let r = legacy(
        &c,
        &url,
        &agent.key,
        Some("00112233445566778899aabbccddeeff"),
        json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_i64()),
        (404, Some(-32600)),
        "{}",
        r.body
    );
    let r = post(
        &c,
        &url,
        Some(&agent.key),
        &[("mcp-protocol-version", LEGACY)],
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}).to_string(),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_i64()),
        (400, Some(-32600)),
        "{}",
        r.body
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Mcp-Session-Id"),
        "{}",
        r.body
    );

    // GET and DELETE without a session: 405 with Allow: POST.
    let r = c
        .get(&url)
        .bearer_auth(&agent.key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = c.delete(&url).bearer_auth(&agent.key).send().await.unwrap();
    assert_eq!(r.status(), 405);

    // DELETE ends the session: 204, then the id is gone.
    let r = c
        .delete(&url)
        .bearer_auth(&agent.key)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = legacy(
        &c,
        &url,
        &agent.key,
        Some(&sid),
        json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list"}),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = c
        .delete(&url)
        .bearer_auth(&agent.key)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let events = gw.events();
    let in_session: Vec<&Value> = events
        .iter()
        .filter(|e| e["session"] == sid.as_str())
        .collect();
    let types: Vec<&str> = in_session
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"session.start"), "{types:?}");
    assert_eq!(types.last(), Some(&"session.end"), "{types:?}");
    assert_eq!(in_session.last().unwrap()["detail"], "closed by the client");
    let denied = in_session
        .iter()
        .find(|e| e["resource"] == "delete_customer")
        .unwrap();
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["rule"], "agents never delete customers");
    assert!(
        denied["detail"]
            .as_str()
            .unwrap()
            .contains("deleting customers is a human decision"),
        "{denied}"
    );
    assert!(
        in_session
            .iter()
            .all(|e| e["identity"]["subject"] == "session-agent"),
        "only its owner acted in the session"
    );
}

#[tokio::test]
async fn the_session_cap_refuses_new_sessions_with_503() {
    let agent = api_key("cap-agent", "agent", &["agents"]);
    let gw = Gateway::start_with(&billing_config(&[&agent], ""), "max_sessions = 2", &[]);
    let c = client();
    let url = gw.url("billing");
    let mut sessions = Vec::new();
    for id in 1..=2 {
        let r = legacy(&c, &url, &agent.key, None, initialize(id)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        sessions.push(r.headers["mcp-session-id"].to_str().unwrap().to_string());
    }
    let r = legacy(&c, &url, &agent.key, None, initialize(3)).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["id"], 3);
    assert_eq!(r.body["error"]["code"], -32603);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 2 sessions"),
        "{}",
        r.body
    );
    assert!(r.headers.get("mcp-session-id").is_none());
    // Stateless callers are not sessions: they still get through.
    let (status, list) = modern_call(&c, &url, &agent.key, 4, "tools/list", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(tool_names(&list), ["lookup_customer"]);
    // Ending one session makes room for another.
    let r = c
        .delete(&url)
        .bearer_auth(&agent.key)
        .header("mcp-session-id", &sessions[0])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = legacy(&c, &url, &agent.key, None, initialize(5)).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

// ---------------------------------------------------------------------------------------
// 2026-07-28: headers must agree with the body

#[tokio::test]
async fn modern_headers_must_match_the_body_and_the_version_must_be_supported() {
    let agent = api_key("modern-agent", "agent", &["agents"]);
    let gw = Gateway::start(&billing_config(&[&agent], ""));
    let c = client();
    let url = gw.url("billing");
    let key = Some(agent.key.as_str());
    let call = |version: &str| {
        modern_body(
            1,
            "tools/call",
            json!({"name": "lookup_customer", "arguments": {"customer": "cus_1001"}}),
            version,
        )
    };

    // The baseline passes.
    let r = post(
        &c,
        &url,
        key,
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "lookup_customer"),
        ],
        call(MODERN),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["result"]["structuredContent"]["id"], "cus_1001");

    // Mcp-Name names another tool than the body: the smuggling case.
    let r = post(
        &c,
        &url,
        key,
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "refund_payment"),
        ],
        call(MODERN),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_i64()),
        (400, Some(-32020)),
        "{}",
        r.body
    );
    assert_eq!(r.body["id"], 1);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Mcp-Name"),
        "{}",
        r.body
    );
    // Mcp-Name missing on a named method.
    let r = post(
        &c,
        &url,
        key,
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
        ],
        call(MODERN),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_i64()),
        (400, Some(-32020)),
        "{}",
        r.body
    );
    // Mcp-Method differs; the MCP-Protocol-Version header differs from _meta. Each is
    // refused with HeaderMismatch and a message naming the header.
    let mismatches: [(&[(&str, &str)], &str); 2] = [
        (
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/list"),
                ("mcp-name", "lookup_customer"),
            ],
            "Mcp-Method",
        ),
        (
            &[
                ("mcp-protocol-version", LEGACY),
                ("mcp-method", "tools/call"),
                ("mcp-name", "lookup_customer"),
            ],
            "MCP-Protocol-Version",
        ),
    ];
    for (headers, named) in mismatches {
        let r = post(&c, &url, key, headers, call(MODERN)).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_i64()),
            (400, Some(-32020)),
            "{}",
            r.body
        );
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains(named),
            "{}",
            r.body
        );
    }
    // A 2026-07-28 header with no version in _meta: a malformed request, which the
    // specification answers with -32602 (the message names the missing keys).
    let bare = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    let r = post(
        &c,
        &url,
        key,
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/list"),
        ],
        bare,
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_i64()),
        (400, Some(-32602)),
        "{}",
        r.body
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("io.modelcontextprotocol/protocolVersion"),
        "{}",
        r.body
    );

    // A version the gateway does not speak: 400, UnsupportedProtocolVersion, with the list.
    let future = "2099-01-01";
    let r = post(
        &c,
        &url,
        key,
        &[
            ("mcp-protocol-version", future),
            ("mcp-method", "tools/call"),
            ("mcp-name", "lookup_customer"),
        ],
        call(future),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_i64()),
        (400, Some(-32022)),
        "{}",
        r.body
    );
    assert_eq!(r.body["id"], 1);
    assert_eq!(r.body["error"]["data"]["requested"], future);
    let supported = r.body["error"]["data"]["supported"].as_array().unwrap();
    assert!(supported.contains(&json!(MODERN)), "{}", r.body);
    // Also with a 2026-07-28 header and the unknown version in the body.
    let r = post(
        &c,
        &url,
        key,
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/list"),
        ],
        modern_body(2, "tools/list", json!({}), future),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        matches!(
            r.body["error"]["code"].as_i64(),
            Some(-32022) | Some(-32020)
        ),
        "{}",
        r.body
    );

    // A denial through the modern door, for the audit check below.
    let (_, denied) = modern_call(
        &c,
        &url,
        &agent.key,
        3,
        "tools/call",
        json!({"name": "delete_customer", "arguments": {"customer": "cus_1001"}}),
    )
    .await;
    assert_eq!(denied["error"]["code"], -32010);

    let events = gw.events();
    let smuggled = rejected_with(&events, "Mcp-Name header \"refund_payment\"")
        .unwrap_or_else(|| panic!("the header mismatch is not audited: {events:#?}"));
    assert_eq!(smuggled["action"], "tools/call");
    assert_eq!(smuggled["resource"], "lookup_customer");
    assert_eq!(smuggled["identity"]["subject"], "modern-agent");
    assert!(
        rejected_with(&events, "unsupported protocol version \"2099-01-01\"").is_some(),
        "{events:#?}"
    );
    let denied_ev = events
        .iter()
        .find(|e| e["type"] == "request" && e["resource"] == "delete_customer")
        .unwrap();
    assert_eq!(denied_ev["outcome"], "denied");
    assert_eq!(denied_ev["decision"], "deny");
    assert!(
        denied_ev["detail"]
            .as_str()
            .unwrap()
            .contains("deleting customers is a human decision")
    );
    // Only the baseline call was forwarded.
    let forwarded = events
        .iter()
        .filter(|e| {
            e["type"] == "request" && e["outcome"] == "success" && e["action"] == "tools/call"
        })
        .count();
    assert_eq!(forwarded, 1);
}

// ---------------------------------------------------------------------------------------
// Upstreams that are dead or slow

#[tokio::test]
async fn a_dead_upstream_fails_clearly_and_the_other_targets_keep_serving() {
    let agent = api_key("dead-agent", "agent", &["agents"]);
    let extra = r#"
[targets.dead]
kind = "mcp"
command = ["/bin/false"]

[targets.missing]
kind = "mcp"
command = ["/nonexistent/portcullis-test-no-such-program"]

[[rules]]
name = "agents may try the broken ones"
who.groups = ["agents"]
target = "*"
tools = ["lookup_customer", "anything"]
"#;
    let gw = Gateway::start(&billing_config(&[&agent], extra));
    let c = client();

    for target in ["dead", "missing"] {
        let started = Instant::now();
        let (status, r) = modern_call(
            &c,
            &gw.url(target),
            &agent.key,
            1,
            "tools/call",
            json!({"name": "anything", "arguments": {}}),
        )
        .await;
        assert_eq!(status, 200, "a JSON-RPC error, not an HTTP failure: {r}");
        assert_eq!(r["id"], 1);
        assert_eq!(r["error"]["code"], -32012, "{r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("upstream {target}:")),
            "{message}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{target} took {:?}",
            started.elapsed()
        );
        // A session-based client gets the same clear error on initialize, and no session.
        let r = legacy(&c, &gw.url(target), &agent.key, None, initialize(2)).await;
        assert_eq!(r.body["error"]["code"], -32012, "{}", r.body);
        assert!(r.headers.get("mcp-session-id").is_none());
    }
    let (_, r) = modern_call(
        &c,
        &gw.url("missing"),
        &agent.key,
        3,
        "tools/list",
        json!({}),
    )
    .await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot start the upstream process"),
        "{r}"
    );

    // The healthy target is unaffected.
    let (status, ok) = modern_call(
        &c,
        &gw.url("billing"),
        &agent.key,
        4,
        "tools/call",
        json!({"name": "lookup_customer", "arguments": {"customer": "cus_1003"}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ok["result"]["structuredContent"]["name"], "Alan Turing");

    let events = gw.events();
    for target in ["dead", "missing"] {
        let failed = events
            .iter()
            .find(|e| {
                e["type"] == "request" && e["target"] == target && e["resource"] == "anything"
            })
            .unwrap();
        assert_eq!(failed["outcome"], "failed", "{failed}");
        assert_eq!(failed["decision"], "allow");
        assert!(
            failed["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("upstream {target}")),
            "{failed}"
        );
        // The session that could not be opened is recorded too.
        let init = events
            .iter()
            .find(|e| {
                e["type"] == "request" && e["target"] == target && e["action"] == "initialize"
            })
            .unwrap_or_else(|| panic!("no failed initialize for {target}: {events:#?}"));
        assert_eq!(init["outcome"], "failed", "{init}");
        assert!(
            init["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("upstream {target}")),
            "{init}"
        );
    }
}

/// A gateway with a `[gateway]` table of the test's own (the shared harness fixes
/// `request_timeout`).
struct Custom {
    addr: SocketAddr,
    data: PathBuf,
    child: Child,
}

impl Drop for Custom {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Custom {
    fn start(dir: &Path, gateway: &str, rest: &str) -> Custom {
        let port = free_port();
        let path = dir.join("portcullis.toml");
        std::fs::write(
            &path,
            format!(
                "[gateway]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n{gateway}\n\n{rest}"
            ),
        )
        .unwrap();
        let mut child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(&path)
            .env("PORTCULLIS_LOG", "info,portcullis::upstream=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[gateway] {line}");
            }
        });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("gateway exited during start-up: {status}");
            }
            assert!(Instant::now() < deadline, "gateway did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Custom {
            addr,
            data: dir.join("data"),
            child,
        }
    }

    fn url(&self, target: &str) -> String {
        format!("http://{}/mcp/{target}", self.addr)
    }

    fn events(&self) -> Vec<Value> {
        let out = Command::new(binary())
            .args(["audit", "tail", "-n", "100000", "--data-dir"])
            .arg(&self.data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
async fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

#[tokio::test]
async fn a_slow_upstream_times_out_with_a_clear_error_and_is_told_to_stop() {
    let agent = api_key("slow-agent", "agent", &["agents"]);
    let dir = tempfile::tempdir().unwrap();
    let (rec_cmd, rec_log) = recorder(dir.path());
    let rest = format!(
        "{key}[targets.rec]\nkind = \"mcp\"\n{rec_cmd}\n\n[[rules]]\nname = \"agents use the recorder\"\nwho.groups = [\"agents\"]\ntarget = \"rec\"\ntools = [\"*\"]\n",
        key = agent.config
    );
    let gw = Custom::start(dir.path(), "request_timeout = \"1s\"", &rest);
    let c = client();
    let url = gw.url("rec");

    // The first request starts the upstream under the same 1 s limit; allow a slow machine
    // a few tries at that, so what is tested below is the timeout of the call itself.
    let mut listed = None;
    for id in 0..10 {
        let (_, list) = modern_call(&c, &url, &agent.key, id, "tools/list", json!({})).await;
        if list.get("result").is_some() {
            listed = Some(list);
            break;
        }
    }
    let list = listed.expect("the recorder never came up");
    assert_eq!(tool_names(&list), ["echo", "slow"]);

    let started = Instant::now();
    let (status, r) = modern_call(
        &c,
        &url,
        &agent.key,
        42,
        "tools/call",
        json!({"name": "slow", "arguments": {}}),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["id"], 42);
    assert_eq!(r["error"]["code"], -32012, "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("upstream rec") && message.contains("no answer within 1s"),
        "{message}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "took {took:?}"
    );

    // The upstream is told to stop working on the abandoned request...
    let cancelled = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&rec_log)
            .unwrap_or_default()
            .contains("notifications/cancelled")
    })
    .await;
    assert!(cancelled, "no notifications/cancelled reached the upstream");
    // ...and keeps serving.
    let (_, ok) = modern_call(
        &c,
        &url,
        &agent.key,
        43,
        "tools/call",
        json!({"name": "echo", "arguments": {"after": "timeout"}}),
    )
    .await;
    assert!(
        ok["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("timeout"),
        "{ok}"
    );

    let events = gw.events();
    let slow = events
        .iter()
        .find(|e| e["type"] == "request" && e["resource"] == "slow")
        .unwrap();
    assert_eq!(slow["outcome"], "failed");
    assert!(
        slow["detail"]
            .as_str()
            .unwrap()
            .contains("no answer within 1s"),
        "{slow}"
    );
    assert!(slow["duration_ms"].as_f64().unwrap() >= 900.0, "{slow}");
}
