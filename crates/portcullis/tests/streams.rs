//! SSE streams of session-based clients: the standalone GET stream carries what the upstream
//! sends outside any request, and a response stream broken mid-request is resumed with
//! `Last-Event-ID` without losing the answer.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// A stdio MCP server that announces a tool-list change right after the handshake (an
/// unsolicited message) and answers `tools/call` slowly, with progress first.
const SLOW_SERVER: &str = r#"
import json, sys, time
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
for line in sys.stdin:
    m = json.loads(line)
    i, method = m.get("id"), m.get("method")
    if method == "server/discover":
        send({"jsonrpc": "2.0", "id": i, "error": {"code": -32601, "message": "Method not found"}})
    elif method == "initialize":
        send({"jsonrpc": "2.0", "id": i, "result": {"protocolVersion": "2025-11-25", "capabilities": {"tools": {"listChanged": True}}, "serverInfo": {"name": "slow", "version": "1"}}})
    elif method == "notifications/initialized":
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": i, "result": {"tools": [{"name": "slow", "inputSchema": {"type": "object"}}]}})
    elif method == "tools/call":
        token = m["params"].get("_meta", {}).get("progressToken")
        send({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1, "total": 2}})
        time.sleep(1.0)
        send({"jsonrpc": "2.0", "id": i, "result": {"content": [{"type": "text", "text": "done"}]}})
"#;

/// Reads SSE events from a response until `count` events have arrived; returns (id, data).
async fn read_events(resp: &mut reqwest::Response, count: usize) -> Vec<(Option<String>, Value)> {
    let mut buf = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("an SSE event within 10 s")
            .unwrap()
            .expect("the stream ended early");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !data.is_empty() {
                events.push((id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

#[tokio::test]
async fn standalone_stream_and_resumption_after_a_broken_response_stream() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("slow.py");
    std::fs::write(&script, SLOW_SERVER).unwrap();
    let agent = api_key("agent", "agent", &["agents"]);
    let other = api_key("other", "agent", &["agents"]);
    let gw = Gateway::start(&format!(
        "{}{}[targets.slow]\nkind = \"mcp\"\ncommand = [{:?}, {:?}]\n\n[[rules]]\nname = \"agents\"\nwho.groups = [\"agents\"]\ntarget = \"slow\"\n",
        agent.config,
        other.config,
        python(),
        script.display().to_string()
    ));
    let client = reqwest::Client::new();
    let url = gw.url("slow");
    let post = |body: Value, session: Option<&str>| {
        let mut req = client
            .post(&url)
            .bearer_auth(&agent.key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body);
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        req.send()
    };

    let init = post(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "by-hand", "version": "1"}}}), None)
        .await
        .unwrap();
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let initialized = post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some(&session),
    )
    .await
    .unwrap();
    assert_eq!(initialized.status(), 202);

    // The upstream's unsolicited list_changed reaches the standalone GET stream.
    let mut standalone = client
        .get(&url)
        .bearer_auth(&agent.key)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(standalone.status(), 200);
    let events = read_events(&mut standalone, 1).await;
    assert_eq!(events[0].1["method"], "notifications/tools/list_changed");
    assert!(
        events[0].0.as_deref().unwrap().starts_with("0-"),
        "{:?}",
        events[0].0
    );
    drop(standalone);

    // A slow call: take the progress event, then break the connection.
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "slow", "arguments": {}, "_meta": {"progressToken": "p-7"}}});
    let mut response = post(call, Some(&session)).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let first = read_events(&mut response, 1).await;
    assert_eq!(first[0].1["method"], "notifications/progress");
    assert_eq!(first[0].1["params"]["progressToken"], "p-7");
    let last_id = first[0].0.clone().expect("resumable events carry ids");
    drop(response);

    // Resume: the answer that arrived while no one was connected is delivered.
    let mut resumed = client
        .get(&url)
        .bearer_auth(&agent.key)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let rest = read_events(&mut resumed, 1).await;
    assert_eq!(rest[0].1["id"], 7);
    assert_eq!(rest[0].1["result"]["content"][0]["text"], "done");

    // Another identity cannot use or resume this session's streams, and a malformed
    // Last-Event-ID is refused clearly.
    let get = |key: &str, last: &str| {
        client
            .get(&url)
            .bearer_auth(key)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
            .header("last-event-id", last)
            .send()
    };
    assert_eq!(get(&other.key, &last_id).await.unwrap().status(), 404);
    assert_eq!(get(&agent.key, "not-an-id").await.unwrap().status(), 400);
    assert_eq!(get(&agent.key, "999-0").await.unwrap().status(), 404);
}

#[tokio::test]
async fn a_caller_that_hangs_up_mid_call_still_leaves_the_calls_event() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("slow.py");
    std::fs::write(&script, SLOW_SERVER).unwrap();
    let agent = api_key("agent", "agent", &["agents"]);
    let gw = Gateway::start(&format!(
        "{}[targets.slow]\nkind = \"mcp\"\ncommand = [{:?}, {:?}]\n\n[[rules]]\nname = \"agents\"\nwho.groups = [\"agents\"]\ntarget = \"slow\"\n",
        agent.config,
        python(),
        script.display().to_string()
    ));
    // A stateless caller that only accepts JSON (so no stream is opened) and gives up after
    // 300 ms, while the tool takes a second.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = impatient
        .post(gw.url("slow"))
        .bearer_auth(&agent.key)
        .header("accept", "application/json")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "slow")
        .json(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "slow", "arguments": {}, "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}, "io.modelcontextprotocol/clientInfo": {"name": "portcullis-tests", "version": "1"}}}}))
        .send()
        .await;
    assert!(gone.is_err(), "the caller hung up before the answer");
    // The call runs to its answer and is recorded with its real outcome.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events = gw.events();
        if let Some(call) = events
            .iter()
            .find(|e| e["type"] == "request" && e["action"] == "tools/call")
        {
            assert_eq!(call["outcome"], "success", "{call}");
            assert!(call["duration_ms"].as_f64().unwrap() >= 900.0, "{call}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no event for the abandoned call: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
