//! The reference MCP server `@modelcontextprotocol/server-everything` (over stdio, started by
//! `npx`) as a real upstream of the real gateway binary, reached by a session-based client
//! and by a 2026-07-28 client written by hand with reqwest: filtered listing, `echo`, and a
//! long-running tool whose progress notifications arrive on the SSE response before the
//! result.
//!
//! The package is fetched by `npx -y` (cached after the first run). If it cannot be fetched
//! the tests fail, unless `PORTCULLIS_SKIP_NPX=1` is set, in which case they are skipped
//! with a message.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const PACKAGE: &str = EVERYTHING;

fn config(agent: &Key) -> String {
    format!(
        r#"{key}
[targets.everything]
kind = "mcp"
command = ["npx", "-y", "{PACKAGE}", "stdio"]

[[rules]]
name = "agents use the reference server"
who.groups = ["agents"]
target = "everything"
tools = ["*"]

[[rules]]
name = "no environment dumps"
who.groups = ["agents"]
target = "everything"
tools = ["get-env", "printEnv"]
decision = "deny"
reason = "the upstream's environment is not for agents"
"#,
        key = agent.config
    )
}

fn client() -> reqwest::Client {
    // The first call starts the upstream through npx: allow a generous start-up.
    reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap()
}

struct Answer {
    status: u16,
    content_type: String,
    session: Option<String>,
    messages: Vec<Value>,
}

impl Answer {
    fn last(&self) -> &Value {
        self.messages
            .last()
            .unwrap_or_else(|| panic!("empty answer (HTTP {})", self.status))
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req
        .header("accept", "application/json, text/event-stream")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let session = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    Answer {
        status,
        content_type,
        session,
        messages: messages(&text),
    }
}

async fn legacy(
    c: &reqwest::Client,
    url: &str,
    key: &str,
    session: Option<&str>,
    body: Value,
) -> Answer {
    let mut req = c.post(url).bearer_auth(key).json(&body);
    if let Some(s) = session {
        req = req
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", LEGACY);
    }
    send(req).await
}

async fn modern(
    c: &reqwest::Client,
    url: &str,
    key: &str,
    id: u64,
    method: &str,
    mut params: Value,
) -> Answer {
    add_modern_meta(&mut params);
    let mut req = c
        .post(url)
        .bearer_auth(key)
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method)
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
    if let Some(name) = params.get("name").and_then(Value::as_str) {
        req = req.header("mcp-name", name);
    }
    send(req).await
}

fn tool_names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn long_running(names: &[String]) -> String {
    names
        .iter()
        .find(|n| {
            n.as_str() == "trigger-long-running-operation" || n.as_str() == "longRunningOperation"
        })
        .cloned()
        .unwrap_or_else(|| panic!("no long-running tool in {names:?}"))
}

/// Checks an answer that carried progress: SSE, at least one `notifications/progress` with
/// our token, every one before the result, then the result with the caller's id.
fn assert_progress_then_result(answer: &Answer, token: &Value, id: &Value) {
    assert_eq!(answer.status, 200);
    assert!(
        answer.content_type.starts_with("text/event-stream"),
        "progress needs a stream, got {}",
        answer.content_type
    );
    let (result, before) = answer.messages.split_last().unwrap();
    assert_eq!(&result["id"], id, "{result}");
    assert!(
        result["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Long running operation completed"),
        "{result}"
    );
    let progress: Vec<&Value> = before
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert!(
        !progress.is_empty(),
        "no progress before the result: {:?}",
        answer.messages
    );
    assert!(
        progress
            .iter()
            .all(|p| &p["params"]["progressToken"] == token),
        "{progress:?}"
    );
    let steps: Vec<f64> = progress
        .iter()
        .map(|p| p["params"]["progress"].as_f64().unwrap())
        .collect();
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "progress goes forward: {steps:?}"
    );
    assert_eq!(progress.last().unwrap()["params"]["total"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_based_client_through_the_gateway_to_server_everything() {
    if !everything_available() {
        return;
    }
    let agent = api_key("everything-agent", "agent", &["agents"]);
    let gw = Gateway::start(&config(&agent));
    let c = client();
    let url = gw.url("everything");

    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "hand-client", "version": "1"}}});
    let a = legacy(&c, &url, &agent.key, None, init).await;
    assert_eq!(a.status, 200, "{:?}", a.messages);
    let sid = a.session.clone().expect("a session id");
    assert_eq!(a.last()["result"]["protocolVersion"], LEGACY);
    assert!(
        a.last()["result"]["serverInfo"]["name"]
            .as_str()
            .unwrap()
            .contains("everything"),
        "{}",
        a.last()
    );
    let a = legacy(
        &c,
        &url,
        &agent.key,
        Some(&sid),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(a.status, 202);

    let a = legacy(
        &c,
        &url,
        &agent.key,
        Some(&sid),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    let names = tool_names(a.last());
    assert!(names.iter().any(|n| n == "echo"), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "get-env" || n == "printEnv"),
        "the denied tool is hidden: {names:?}"
    );

    let a = legacy(&c, &url, &agent.key, Some(&sid), json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "hello through the gateway"}}})).await;
    assert_eq!(a.last()["id"], 3);
    assert_eq!(
        a.last()["result"]["content"][0]["text"],
        "Echo: hello through the gateway",
        "{}",
        a.last()
    );

    let denied = legacy(&c, &url, &agent.key, Some(&sid), json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "get-env", "arguments": {}}})).await;
    assert_eq!(denied.last()["error"]["code"], -32010);

    let long = long_running(&names);
    let token = json!("progress-session-1");
    let a = legacy(&c, &url, &agent.key, Some(&sid), json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": long, "arguments": {"duration": 2, "steps": 3}, "_meta": {"progressToken": token}}})).await;
    assert_progress_then_result(&a, &token, &json!(5));

    let r = c
        .delete(&url)
        .bearer_auth(&agent.key)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let events = gw.events();
    let echo = events
        .iter()
        .find(|e| e["type"] == "request" && e["resource"] == "echo")
        .unwrap();
    assert_eq!(echo["outcome"], "success");
    assert_eq!(echo["session"], sid.as_str());
    assert!(
        !echo.to_string().contains("hello through the gateway"),
        "arguments are digests in the log"
    );
    let env = events
        .iter()
        .find(|e| e["type"] == "request" && e["resource"] == "get-env")
        .unwrap();
    assert_eq!(env["outcome"], "denied");
    assert_eq!(env["rule"], "no environment dumps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modern_client_through_the_gateway_to_server_everything() {
    if !everything_available() {
        return;
    }
    let agent = api_key("everything-modern", "agent", &["agents"]);
    let gw = Gateway::start(&config(&agent));
    let c = client();
    let url = gw.url("everything");

    // The upstream is session-based; the gateway answers discovery for it.
    let a = modern(&c, &url, &agent.key, 1, "server/discover", json!({})).await;
    assert_eq!(a.status, 200, "{:?}", a.messages);
    assert!(
        a.last()["result"]["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!(MODERN)),
        "{}",
        a.last()
    );

    let a = modern(&c, &url, &agent.key, 2, "tools/list", json!({})).await;
    let list = a.last();
    assert_eq!(list["result"]["resultType"], "complete");
    assert_eq!(list["result"]["cacheScope"], "private");
    let names = tool_names(list);
    assert!(names.iter().any(|n| n == "echo"), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "get-env" || n == "printEnv"),
        "the denied tool is hidden: {names:?}"
    );

    let a = modern(
        &c,
        &url,
        &agent.key,
        3,
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "modern hello"}}),
    )
    .await;
    assert_eq!(
        a.last()["result"]["content"][0]["text"],
        "Echo: modern hello",
        "{}",
        a.last()
    );
    assert_eq!(a.last()["result"]["resultType"], "complete");

    let long = long_running(&names);
    let token = json!(77);
    let a = modern(&c, &url, &agent.key, 4, "tools/call", json!({"name": long, "arguments": {"duration": 2, "steps": 3}, "_meta": {"progressToken": token}})).await;
    assert_progress_then_result(&a, &token, &json!(4));

    // A denied call never reaches the upstream.
    let a = modern(
        &c,
        &url,
        &agent.key,
        5,
        "tools/call",
        json!({"name": "get-env", "arguments": {}}),
    )
    .await;
    assert_eq!(a.last()["error"]["code"], -32010);
    assert!(
        a.last()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the upstream's environment is not for agents")
    );
}
