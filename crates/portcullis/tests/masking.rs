//! Masking through the real gateway: what comes back is masked before the caller sees it
//! (text, structured content, interim messages), what was masked is in the audit event
//! without the values, and what the arguments carry is a fact policy decides on.

mod common;

use common::*;
use serde_json::{Value, json};

const PROFILE: &str = r#"
[masks.pii]
detectors = ["pii", "secrets"]
styles = { credit_card = "partial" }
"#;

fn config(agent: &Key, extra_rules: &str) -> String {
    format!(
        r#"{agent}
[targets.billing]
kind = "mcp"
{cmd}

{extra_rules}

[[rules]]
name = "agents look up customers"
who.groups = ["agents"]
target = "billing"
tools = ["lookup_customer", "refund_payment"]
mask = "pii"
{PROFILE}
"#,
        agent = agent.config,
        cmd = demo_server_command()
    )
}

fn request_event(gw: &Gateway, request_id: &str) -> Value {
    gw.events()
        .into_iter()
        .find(|e| e["type"] == "request" && e["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no event for request {request_id}"))
}

#[tokio::test]
async fn a_customer_record_comes_back_masked_and_the_event_says_what_was_masked() {
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let gw = Gateway::start(&config(&agent, ""));
    let client = reqwest::Client::new();
    let (status, body) = modern_call(
        &client,
        &gw.url("billing"),
        &agent.key,
        7,
        "tools/call",
        json!({"name": "lookup_customer", "arguments": {"customer": "cus_1001"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let result = &body["result"];
    let text = result["content"][0]["text"].as_str().unwrap();
    let whole = body.to_string();
    // Neither the email nor the full card number leaves the gateway, in any part.
    assert!(!whole.contains("ada@example.com"), "{whole}");
    assert!(!whole.contains("4111 1111 1111 1111"), "{whole}");
    assert!(text.contains("[EMAIL]"), "{text}");
    assert!(
        text.contains("1111"),
        "partial style keeps the last four: {text}"
    );
    assert_eq!(result["structuredContent"]["email"], "[EMAIL]");
    // The rest of the record is untouched.
    assert_eq!(result["structuredContent"]["name"], "Ada Lovelace");
    assert_eq!(result["structuredContent"]["balance_usd"], 42.5);

    let event = request_event(&gw, "7");
    let masked = event["masked"]
        .as_array()
        .expect("the event lists what was masked");
    let has = |detector: &str, path: &str| {
        masked
            .iter()
            .any(|m| m["detector"] == detector && m["path"] == path && m["count"] == 1)
    };
    assert!(has("email", "$.content[0].text"), "{masked:?}");
    assert!(has("credit_card", "$.content[0].text"), "{masked:?}");
    assert!(has("email", "$.structuredContent.email"), "{masked:?}");
    assert!(
        has("credit_card", "$.structuredContent.card_number"),
        "{masked:?}"
    );
    let recorded = event.to_string();
    assert!(!recorded.contains("ada@example.com") && !recorded.contains("4111"));
}

#[tokio::test]
async fn findings_in_the_arguments_are_facts_for_policy() {
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let deny_cards = r#"
[[rules]]
name = "no card numbers into tools"
target = "billing"
tools = ["*"]
decision = "deny"
when = "'credit_card' in findings"
reason = "card numbers are not sent to tools"
"#;
    let gw = Gateway::start(&config(&agent, deny_cards));
    let client = reqwest::Client::new();
    let (_, body) = modern_call(
        &client,
        &gw.url("billing"),
        &agent.key,
        8,
        "tools/call",
        json!({"name": "refund_payment", "arguments": {"customer": "cus_1001", "amount": 5,
            "reason": "customer asked; card 4111-1111-1111-1111"}}),
    )
    .await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no card numbers into tools"),
        "refused by the rule: {body}"
    );
    let event = request_event(&gw, "8");
    assert_eq!(event["decision"], "deny");
    assert_eq!(
        event["findings"],
        json!([{"detector": "credit_card", "path": "$.arguments.reason", "count": 1}])
    );
    assert!(!event.to_string().contains("4111"));

    // The same call without the card number goes through.
    let (_, body) = modern_call(
        &client,
        &gw.url("billing"),
        &agent.key,
        9,
        "tools/call",
        json!({"name": "refund_payment", "arguments": {"customer": "cus_1001", "amount": 5,
            "reason": "customer asked"}}),
    )
    .await;
    assert!(body["result"].is_object(), "{body}");
    assert!(request_event(&gw, "9")["findings"].is_null());
}

/// A stdio MCP server whose tool reports progress carrying personal data before its answer.
const CHATTY_SERVER: &str = r#"
import json, sys
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
for line in sys.stdin:
    m = json.loads(line)
    i, method = m.get("id"), m.get("method")
    if method == "server/discover":
        send({"jsonrpc": "2.0", "id": i, "error": {"code": -32601, "message": "Method not found"}})
    elif method == "initialize":
        send({"jsonrpc": "2.0", "id": i, "result": {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}, "logging": {}}, "serverInfo": {"name": "chatty", "version": "1"}}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": i, "result": {"tools": [{"name": "export", "inputSchema": {"type": "object"}}]}})
    elif method == "tools/call":
        token = m["params"].get("_meta", {}).get("progressToken")
        send({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1, "total": 2, "message": "exporting grace.hopper@example.org"}})
        send({"jsonrpc": "2.0", "id": i, "result": {"content": [{"type": "text", "text": "exported grace.hopper@example.org"}, {"type": "image", "data": "Z3JhY2UuaG9wcGVyQGV4YW1wbGUub3Jn", "mimeType": "image/png"}]}})
"#;

#[tokio::test]
async fn interim_messages_are_masked_one_by_one_and_text_sent_as_image_data_too() {
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("chatty.py");
    std::fs::write(&script, CHATTY_SERVER).unwrap();
    let gw = Gateway::start(&format!(
        r#"{agent}
[targets.chatty]
kind = "mcp"
command = [{python:?}, {script:?}]

[[rules]]
name = "agents export"
who.groups = ["agents"]
target = "chatty"
tools = ["export"]
mask = "default"
"#,
        agent = agent.config,
        python = python(),
        script = script.display().to_string(),
    ));
    let response = reqwest::Client::new()
        .post(gw.url("chatty"))
        .bearer_auth(&agent.key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "export")
        .json(
            &json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {
            "name": "export", "arguments": {},
            "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}, "io.modelcontextprotocol/clientInfo": {"name": "portcullis-tests", "version": "1"}, "progressToken": "p1"}}}),
        )
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(!text.contains("grace.hopper@example.org"), "{text}");
    assert!(
        text.contains("exporting [EMAIL]"),
        "the progress message, masked: {text}"
    );
    let answer = last_message(&text);
    assert_eq!(answer["result"]["content"][0]["text"], "exported [EMAIL]");
    // Base64 "image" data that decodes to UTF-8 text is text, whatever its declared type
    // (issue 13 re-check, M3): masked as text and encoded again. Real image bytes are not
    // UTF-8 and stay untouched (tests/attacks/mcp_masking.rs).
    assert_eq!(answer["result"]["content"][1]["data"], "W0VNQUlMXQ==");
    let event = request_event(&gw, "11");
    let paths: Vec<&str> = event["masked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"$.params.message"), "{paths:?}");
    assert!(paths.contains(&"$.content[0].text"), "{paths:?}");
    assert!(paths.contains(&"$.content[1].data"), "{paths:?}");
}

/// `check-config` compiles the masking profiles as `serve` would: a typo in a detector name
/// or a broken custom pattern is reported with where and why, not called valid.
#[test]
fn check_config_refuses_a_profile_that_would_not_compile() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "detectors = [\"emial\"]\n",
            "unknown detector or group \"emial\"",
        ),
        (
            "[[masks.pii.custom]]\nname = \"employee_id\"\npattern = \"EMP-((\"\n",
            "custom detector \"employee_id\": invalid pattern: regex parse error",
        ),
    ];
    for (profile, expected) in cases {
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, format!("[masks.pii]\n{profile}")).unwrap();
        let out = std::process::Command::new(binary())
            .arg("check-config")
            .arg(&path)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{profile}: {stderr}");
        assert!(
            stderr.contains("masks.pii") && stderr.contains(expected),
            "{stderr}"
        );
    }
}
