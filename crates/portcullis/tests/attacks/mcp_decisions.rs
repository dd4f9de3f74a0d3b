//! Attacks on what the MCP gateway decides: fields that disagree with what the upstream acts
//! on, methods without a decision, list and completion results that leak what policy denies,
//! upstream processes spawned for callers no rule allows, non-conformant stateless envelopes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Gateway, Key, MODERN, api_key, last_message, python};

/// A stdio MCP server in Python (session era: it refuses `server/discover`) that logs every
/// line it receives to `argv[1]` and answers `resources/read` with the URI it actually read
/// (`params.uri`, as the specification says a server does), and `resources/subscribe` with
/// an empty result.
const RESOURCE_SERVER: &str = r#"
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
              "capabilities": {"resources": {"subscribe": True}}, "serverInfo": {"name": "resources", "version": "1"}}})
    elif m == "resources/read":
        uri = p["uri"]
        send({"jsonrpc": "2.0", "id": i, "result": {"contents": [{"uri": uri, "mimeType": "text/plain", "text": "CONTENT OF " + uri}]}})
    elif m == "resources/subscribe":
        send({"jsonrpc": "2.0", "id": i, "result": {}})
    elif m == "ping":
        send({"jsonrpc": "2.0", "id": i, "result": {}})
    else:
        send({"jsonrpc": "2.0", "id": i, "error": {"code": -32601, "message": "Method not found"}})
"#;

const ALLOWED: &str = "docs://public/readme";
const FORBIDDEN: &str = "docs://secret/payroll";

/// Writes the resource server to `dir`; returns the `command = [...]` line and its log.
fn resource_server(dir: &Path) -> (String, PathBuf) {
    let script = dir.join("resources.py");
    std::fs::write(&script, RESOURCE_SERVER).unwrap();
    let log = dir.join("resources.log");
    let command = format!(
        "command = [{:?}, {:?}, {:?}]",
        python(),
        script.display().to_string(),
        log.display().to_string()
    );
    (command, log)
}

/// A gateway in front of the resource server where `agent` may read only `docs://public/*`.
fn resources_gateway(agent: &Key) -> (Gateway, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (command, log) = resource_server(dir.path());
    let rest = format!(
        r#"{key}
[targets.docs]
kind = "mcp"
{command}

[[rules]]
name = "agents read public docs"
who.groups = ["agents"]
target = "docs"
resources = ["docs://public/*"]
"#,
        key = agent.config
    );
    (Gateway::start_in(dir, &rest, "", &[]), log)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// POSTs `body` with the caller's key and `headers`; returns the status and the last message.
async fn post(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = client
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, last_message(&resp.text().await.unwrap()), headers)
}

/// Opens a session-era session; returns its id.
async fn open_session(client: &reqwest::Client, url: &str, key: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "attacker", "version": "1"}}});
    let (status, body, headers) = post(client, url, key, &[], &init).await;
    assert_eq!(status, 200, "initialize: {body}");
    let session = headers["mcp-session-id"].to_str().unwrap().to_string();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let h = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    post(client, url, key, &h, &initialized).await;
    session
}

/// The `_meta` a 2026-07-28 request carries.
fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "attacker", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

fn upstream_saw(log: &Path, needle: &str) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(needle))
}

/// Issue 13, item 1: `resources/read` was decided on `params.name` while the upstream reads
/// `params.uri`; an allowed `name` beside a forbidden `uri` read the forbidden resource in
/// both eras, and the audit event named the allowed one.
#[tokio::test(flavor = "multi_thread")]
async fn resources_read_with_an_allowed_name_and_a_forbidden_uri_is_refused() {
    let agent = api_key("agent", "agent", &["agents"]);
    let (gw, log) = resources_gateway(&agent);
    let client = client();
    let url = gw.url("docs");

    // The honest read works, so the refusals below are about the disagreement.
    let session = open_session(&client, &url, &agent.key).await;
    let h = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let read = |id: u64, params: Value| json!({"jsonrpc": "2.0", "id": id, "method": "resources/read", "params": params});
    let (_, ok, _) = post(
        &client,
        &url,
        &agent.key,
        &h,
        &read(1, json!({"uri": ALLOWED})),
    )
    .await;
    assert_eq!(
        ok["result"]["contents"][0]["text"],
        format!("CONTENT OF {ALLOWED}"),
        "{ok}"
    );

    // Session era.
    let smuggled = read(2, json!({"name": ALLOWED, "uri": FORBIDDEN}));
    let (status, body, _) = post(&client, &url, &agent.key, &h, &smuggled).await;
    assert_eq!(
        body["error"]["code"], -32602,
        "session era: {status} {body}"
    );
    assert!(!body.to_string().contains("CONTENT OF"), "{body}");

    // Stateless era, with Mcp-Name naming the allowed URI.
    let mut params = json!({"name": ALLOWED, "uri": FORBIDDEN});
    params["_meta"] = modern_meta();
    let h = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "resources/read"),
        ("mcp-name", ALLOWED),
    ];
    let (status, body, _) = post(&client, &url, &agent.key, &h, &read(3, params)).await;
    assert_eq!(
        body["error"]["code"], -32602,
        "stateless era: {status} {body}"
    );
    assert!(!body.to_string().contains("CONTENT OF"), "{body}");

    // A forbidden uri with an Mcp-Name header naming an allowed one is a header mismatch.
    let mut params = json!({"uri": FORBIDDEN});
    params["_meta"] = modern_meta();
    let (_, body, _) = post(&client, &url, &agent.key, &h, &read(4, params)).await;
    assert!(body.get("error").is_some(), "{body}");
    assert!(!body.to_string().contains("CONTENT OF"), "{body}");

    assert!(
        !upstream_saw(&log, FORBIDDEN),
        "the forbidden resource reached the upstream"
    );
    // The events name the real target of the refused requests.
    let events = gw.events();
    let refused: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "resources/read" && e["outcome"] != "success")
        .collect();
    assert!(refused.len() >= 3, "{events:#?}");
    for e in &refused {
        assert_eq!(e["resource"], FORBIDDEN, "{e}");
    }
}

/// Issue 13, item 6: `resources/subscribe` was not decided, so a caller could subscribe to
/// (and be told of every change to) a resource it may not read.
#[tokio::test(flavor = "multi_thread")]
async fn resources_subscribe_to_a_forbidden_uri_is_refused() {
    let agent = api_key("agent", "agent", &["agents"]);
    let (gw, log) = resources_gateway(&agent);
    let client = client();
    let url = gw.url("docs");
    let session = open_session(&client, &url, &agent.key).await;
    let h = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let subscribe = |id: u64, uri: &str| json!({"jsonrpc": "2.0", "id": id, "method": "resources/subscribe", "params": {"uri": uri}});
    let (_, ok, _) = post(&client, &url, &agent.key, &h, &subscribe(1, ALLOWED)).await;
    assert!(ok.get("result").is_some(), "{ok}");
    let (_, body, _) = post(&client, &url, &agent.key, &h, &subscribe(2, FORBIDDEN)).await;
    assert!(body.get("error").is_some(), "{body}");
    assert!(
        !upstream_saw(&log, FORBIDDEN),
        "the subscription reached the upstream"
    );
    let events = gw.events();
    assert!(
        events.iter().any(|e| e["action"] == "resources/subscribe"
            && e["resource"] == FORBIDDEN
            && e["decision"] == "deny"),
        "{events:#?}"
    );
}
